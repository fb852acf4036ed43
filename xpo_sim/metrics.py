r"""Exact performance metrics of a policy on a :class:`~xpo_sim.mdp.TokenMDP`.

Regret is the gap in the KL-regularized objective to the optimum,

    regret(π) = J_β(π*) − J_β(π) = β · E_{s₀∼ρ} KL(π(·|s₀) ‖ π*(·|s₀))  ≥ 0,

computed exactly by backward induction (``xpo_sim.soft``), never by Monte Carlo.

Coverage: the optimal mass π(arg max_τ r(τ) | s₀); the π*-mass on the responses present in
the data; and the data's concentrability max_τ π*(τ)/μ̄ₜ(τ), where μ̄ₜ averages the
sampling distributions of rounds 1…t (exact, by enumeration, on small instances).
"""

from __future__ import annotations

import math

import numpy as np

from xpo_sim._kernels import soft as _soft_kernels
from xpo_sim.mdp import TokenMDP, TrajectoryBatch
from xpo_sim.soft import SoftSolution, evaluate, solve_soft
from xpo_sim.trajectories import trajectory_logp

__all__ = ["regret", "optimal_mass", "seen_mass", "ConcentrabilityTracker"]


def regret(mdp: TokenMDP, logp, beta: float, solution: SoftSolution | None = None) -> float:
    """J_β(π*) − J_β(π) for the per-state policy ``logp``; pass ``solution`` (from
    :func:`~xpo_sim.soft.solve_soft` at the same β) to avoid solving again."""
    if solution is None:
        solution = solve_soft(mdp, beta)
    elif solution.beta != float(beta):
        raise ValueError(f"solution was computed at beta={solution.beta}, not beta={beta}")
    return solution.value - evaluate(mdp, logp, beta).value


def optimal_mass(mdp: TokenMDP, logp, tol: float = 1e-12) -> float:
    """E_{s₀∼ρ} π(optimal responses | s₀): the probability that π completes a trajectory of
    maximal reward r(τ) (ties within ``tol`` count as optimal)."""
    logp = mdp.check_policy(logp)
    best = np.empty(mdp.n_states)
    mass = np.empty(mdp.n_states)
    _soft_kernels.optimal_mass(mdp.next_state, mdp.reward, mdp.allowed, logp, float(tol), best, mass)
    return float(mdp.start @ mass)


def seen_mass(mdp: TokenMDP, logp, batch: TrajectoryBatch) -> float:
    """E_{s₀∼ρ} π(responses in ``batch`` | s₀) for a batch of *distinct* trajectories, e.g.
    the π*-mass on the responses present in the data."""
    if len(batch) == 0:
        return 0.0
    log_cond = trajectory_logp(mdp, logp, batch)
    return float(np.sum(mdp.start[batch.start_states] * np.exp(log_cond)))


class ConcentrabilityTracker:
    r"""log max_τ π*(τ)/μ̄ₜ(τ), with μ̄ₜ the average of the sampling distributions used in
    rounds 1…t, by enumerating every trajectory (small instances only).

    ρ(s₀) cancels in the ratio, so both are conditional on the prompt. Call
    :meth:`add` with each round's sampling distributions, as log-probabilities of the
    enumerated trajectories (:meth:`policy_logp` gives them for a per-state policy).
    """

    def __init__(self, mdp: TokenMDP, star_logp, max_trajectories: int = 100_000):
        self.enabled = mdp.n_trajectories <= max_trajectories
        self.mdp = mdp
        if self.enabled:
            self.batch = mdp.trajectories(max_count=max_trajectories)
            self.log_star = trajectory_logp(mdp, star_logp, self.batch)
            self.log_mu_sum = np.full(len(self.batch), -np.inf)
        self.count = 0

    def policy_logp(self, logp) -> np.ndarray:
        """log π(τ|s₀) of every enumerated trajectory under the per-state policy ``logp``."""
        return trajectory_logp(self.mdp, logp, self.batch)

    def add(self, log_probs: np.ndarray) -> None:
        """Add one sampling distribution, given as log π(τ|s₀) over the enumeration."""
        if self.enabled:
            self.log_mu_sum = np.logaddexp(self.log_mu_sum, log_probs)
        self.count += 1

    def value(self) -> float:
        if not self.enabled:
            return math.nan
        if self.count == 0:
            return math.inf
        log_mu = self.log_mu_sum - math.log(self.count)
        with np.errstate(invalid="ignore"):
            ratio = np.where(self.log_star > -np.inf, self.log_star - log_mu, -np.inf)
        return float(ratio.max())
