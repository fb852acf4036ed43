r"""Exact performance metrics of a policy on a :class:`~xpo_sim.mdp.TokenMDP`.

Regret is the gap in the KL-regularized objective to the optimum,

    regret(π) = J_β(π*) − J_β(π) = β · E_{s₀∼ρ} KL(π(·|s₀) ‖ π*(·|s₀))  ≥ 0,

computed exactly by backward induction (``xpo_sim.soft``), never by Monte Carlo.
"""

from __future__ import annotations

from xpo_sim.mdp import TokenMDP
from xpo_sim.soft import SoftSolution, evaluate, solve_soft

__all__ = ["regret"]


def regret(mdp: TokenMDP, logp, beta: float, solution: SoftSolution | None = None) -> float:
    """J_β(π*) − J_β(π) for the per-state policy ``logp``; pass ``solution`` (from
    :func:`~xpo_sim.soft.solve_soft` at the same β) to avoid solving again."""
    if solution is None:
        solution = solve_soft(mdp, beta)
    elif solution.beta != float(beta):
        raise ValueError(f"solution was computed at beta={solution.beta}, not beta={beta}")
    return solution.value - evaluate(mdp, logp, beta).value
