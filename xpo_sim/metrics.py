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

__all__ = ["regret", "optimal_mass", "seen_mass", "ConcentrabilityTracker", "coverability", "theory_alpha"]


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


def coverability(mdp: TokenMDP, beta: float, box: tuple[float, float]) -> float:
    r"""C_cov(Π) = inf_μ sup_{τ, π∈Π} π(τ|x)/μ(τ|x) of the implicit-reward class with one
    reward parameter per response in [lo, hi] (bandits and token trees with terminal
    parameters), maximized over prompts.

    The infimum is attained by μ ∝ sup_π π(τ|x), so C_cov = Σ_τ sup_π π(τ|x), and the
    supremum for τ puts r̂(τ) = hi and every other response at lo:
    sup_π π(τ|x) = π_ref(τ) e^{hi/β} / (π_ref(τ) e^{hi/β} + (1 − π_ref(τ)) e^{lo/β}).
    """
    beta = float(beta)
    lo, hi = (float(b) for b in box)
    batch = mdp.trajectories()
    last = batch.states[np.arange(len(batch)), batch.lengths - 1], batch.actions[np.arange(len(batch)), batch.lengths - 1]
    if len(set(zip(*(x.tolist() for x in last)))) != len(batch):
        raise ValueError("coverability needs one parameter per response: a tree or bandit, not a DAG")
    log_ref = trajectory_logp(mdp, mdp.ref_logp, batch)
    gap = (hi - lo) / beta
    # log sup π(τ) = log π_ref + gap − log(π_ref e^{gap} + 1 − π_ref), in log space
    log_sup = log_ref + gap - np.logaddexp(log_ref + gap, np.log1p(-np.minimum(np.exp(log_ref), 1.0)))
    totals = {}
    for s0, value in zip(batch.start_states.tolist(), np.exp(log_sup)):
        totals[s0] = totals.get(s0, 0.0) + value
    return float(max(totals.values()))


def theory_alpha(beta: float, c_cov: float, n_params: int, total_queries: int, scale: float = 1.0) -> float:
    r"""The theory's scaling of XPO's bonus weight, α = scale · β · √(log(|Π| T) / (C_cov T))
    (Xie et al. 2024, as summarized in DESIGN.md; the paper's constant factors are not
    included), with T preference queries and the proxy log|Π| = n_params · log T for a
    tabular class (a grid of T values per parameter)."""
    t = float(total_queries)
    log_class = n_params * math.log(t)
    return float(scale * beta * math.sqrt((log_class + math.log(t)) / (c_cov * t)))
