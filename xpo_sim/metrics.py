r"""Exact performance metrics of a policy on a :class:`~xpo_sim.mdp.TokenMDP`.

Regret is the gap in the KL-regularized objective to the optimum,

    regret(π) = J_β(π*) − J_β(π) = β · E_{s₀∼ρ} KL(π(·|s₀) ‖ π*(·|s₀))  ≥ 0,

computed exactly by backward induction, never by Monte Carlo, as the sum of non-negative
per-state terms β Σ_s d^π(s) KL(π(·|s) ‖ π*(·|s)) (:func:`policy_regret`), not as the
difference of two values.

Coverage: the optimal mass π(arg max_τ r(τ) | s₀); the π*-mass on the responses present in
the data; and the data's concentrability max_τ π*(τ)/μ̄ₜ(τ), where μ̄ₜ averages the
sampling distributions of rounds 1…t (exact, by enumeration, on small instances); and the
coverability C_cov of a reward class (exact, by enumeration and one concave maximization per
distinct trajectory-feature vector).
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
from scipy.optimize import Bounds, minimize
from threadpoolctl import threadpool_limits

from xpo_sim import checks, threads
from xpo_sim._kernels import soft as _soft_kernels
from xpo_sim.mdp import POLICY_TOL, TokenMDP, TrajectoryBatch
from xpo_sim.policies import LogitsClass, RewardClass, make_policy_class
from xpo_sim.soft import SoftSolution, evaluate, solve_soft
from xpo_sim.trajectories import _sum_along, trajectory_logp

__all__ = ["regret", "policy_regret", "optimal_mass", "seen_mass", "ConcentrabilityTracker", "coverability", "CoverabilityDetails",
           "theory_alpha"]


def regret(mdp: TokenMDP, logp, beta: float, solution: SoftSolution | None = None) -> float:
    """J_β(π*) − J_β(π) for the per-state policy ``logp``; pass ``solution`` (from
    :func:`~xpo_sim.soft.solve_soft` at the same β) to avoid solving again.

    Computed by :func:`policy_regret` as β Σ_s d^π(s) KL(π(·|s) ‖ π*(·|s)) ≥ 0."""
    if solution is None:
        solution = solve_soft(mdp, beta)
    else:
        _check_solution_of(mdp, solution, beta)
    return policy_regret(mdp, logp, solution)


def _check_solution_of(mdp: TokenMDP, solution, beta) -> None:
    """ValueError unless ``solution`` is a SoftSolution of ``mdp`` at ``beta``: its β, its
    shapes, and the two O(S·A) identities that tie it to this instance's reward, next
    states and π_ref — Q*(s, a) = r(s, a) + V*(next) and log π* = log π_ref + (Q* − V*(s))/β
    on allowed tokens (another instance of the same shape fails them)."""
    if not isinstance(solution, SoftSolution):
        raise ValueError(f"solution must be a SoftSolution from xpo_sim.solve_soft(mdp, beta), got "
                         f"{type(solution).__name__}")
    if solution.beta != float(beta):
        raise ValueError(f"solution was computed at beta={solution.beta}, not beta={beta}")
    shape = (mdp.n_states, mdp.n_actions)
    if solution.q.shape != shape or solution.logp.shape != shape or solution.v.shape != (mdp.n_states,):
        raise ValueError(f"solution has tables of shape {solution.q.shape}, but this instance's are {shape}: it "
                         f"was solved for another instance")
    allowed = mdp.allowed
    nxt = mdp.next_state
    backup = mdp.reward + np.where(nxt >= 0, solution.v[np.maximum(nxt, 0)], 0.0)
    with np.errstate(invalid="ignore", over="ignore"):
        tilt = np.where(allowed, mdp.ref_logp, 0.0) + (solution.q - solution.v[:, None]) / solution.beta
    if not (np.all(np.abs(solution.q - backup)[allowed] <= 1e-9 * (1.0 + np.abs(backup[allowed])))
            and np.all(np.abs(solution.logp - tilt)[allowed] <= 1e-9 * (1.0 + np.abs(tilt[allowed])))):
        raise ValueError("solution does not satisfy this instance's soft Bellman equations (Q* = r + V*(next), "
                         "log π* = log π_ref + (Q* − V*)/β): it was solved for another instance; pass "
                         "xpo_sim.solve_soft(mdp, beta) of this one")


def policy_regret(mdp: TokenMDP, logp, solution: SoftSolution) -> float:
    r"""Regret J_β(π*) − J_β(π) of the per-state policy ``logp`` (S, A), given the optimum
    ``solution`` = :func:`~xpo_sim.soft.solve_soft` ``(mdp, β)`` (β is the solution's).

    Computed directly as the non-negative sum (performance difference in a deterministic
    MDP with KL regularization)

        regret(π) = β Σ_s d^π(s) KL(π(·|s) ‖ π*(·|s))
                  = Σ_s d^π(s) Σ_a π(a|s) β·g(t_{s,a}),   g(t) = t − 1 + e^{−t} ≥ 0,
        t_{s,a} = log π(a|s) − log π*(a|s) = log π(a|s) − log π_ref(a|s) + (V*(s) − Q*(s,a))/β,

    with d^π the state occupancy of π from s₀ ∼ ρ, in one backward sweep
    (``_kernels.soft.regret_backward``): G(s) = Σ_a [β·(π·t − π + π*) + π·G(s')], regret =
    Σ_{s₀} ρ(s₀) G(s₀); where π(a|s) = 0 the term is β·π*(a|s). Σ_a π g(t) equals the KL for normalized rows
    (Σ_a π g(t) = KL − Σ_a π + Σ_a π*); for rows that sum to 1 only within ``POLICY_TOL``
    (float32 tables) it is the generalized KL Σ π log(π/π*) − Σ π + Σ π* ≥ 0.

    Guarantees: the result is ≥ 0 (every term is; never NaN), +inf when π puts mass on a
    token π_ref disallows, and it equals J_β(π*) − J_β(π) up to the rounding of V* and Q*
    themselves (η ≈ ε·|V*|, so t errs by η/β): a term β·π·g(t) errs by ≈ π·|t|·η, relative
    ~2η/(β·|t|) (= 2ε·|V*|/|V* − Q*| for π_ref); a common shift of a state's V* enters only
    squared (the row sum is stationary in V*), ≈ η²/(2β). The difference of two values,
    J* − J(π), errs by η itself and goes negative once the regret is below ~ε·|J| (reported
    at −0.154, 1.6e-7 relative, for π* on a 3e7-pair DAG; negative for a bandit with rewards
    1e6 and π within 1e-6 of π*, ``tests/test_numeric_edges.py``).
    t is formed from Q* and V* rather than from the rounded log π*, so at large β the regret
    of π_ref (≈ Var_ref r/(2β), e.g. 1e-101 at β = 1e100) keeps its digits. For
    π = ``solution.logp`` the result is the regret of the stored, rounded log π*:
    β·KL(rounded ‖ exact) ≈ β·δt²/2 per step with δt ~ ε·(|log π*| + |V*|/β) — tiny, but not
    exactly 0 (exactly 0 for π* and full precision for π_ref at large β cannot both hold:
    at β = 1e100 the two tables are the same floats).

    Raises ValueError when ``solution`` does not fit ``mdp`` or ``logp`` is not a policy table
    (wrong shape, NaN/+inf entries, a row that does not sum to 1 within POLICY_TOL).
    """
    checks.token_mdp(mdp)
    shape = (mdp.n_states, mdp.n_actions)
    if not isinstance(solution, SoftSolution):
        raise ValueError(f"solution must be a SoftSolution (from solve_soft), got {type(solution).__name__}")
    if solution.q.shape != shape or solution.v.shape != (mdp.n_states,):
        raise ValueError(f"solution has Q* of shape {solution.q.shape}, but the MDP has (S, A) = {shape}: "
                         f"it was solved for another MDP")
    table = np.asarray(logp)
    if table.shape != shape or table.dtype != np.float64:
        table = mdp.check_policy(table)  # raises on a wrong shape or dtype
    table = np.ascontiguousarray(table)
    q = np.ascontiguousarray(solution.q, dtype=np.float64)
    v = np.ascontiguousarray(solution.v, dtype=np.float64)
    out = np.empty(mdp.n_states)
    bad = threads.regret_sweep(mdp, table, q, v, float(solution.beta), POLICY_TOL, out)
    if bad >= 0:
        mdp.check_policy(table)  # the kernel found a bad row: raise the detailed error
    # sum over the prompts only: a state with ρ = 0 may have regret inf (0·inf = NaN)
    prompts = mdp.start_states
    return float(mdp.start[prompts] @ out[prompts])


def optimal_mass(mdp: TokenMDP, logp, tol: float = 1e-12) -> float:
    """E_{s₀∼ρ} π(optimal responses | s₀): the probability that π completes a trajectory of
    maximal reward r(τ) (ties within ``tol`` count as optimal)."""
    return _optimal_mass(mdp, mdp.check_policy(logp), checks.nonnegative("tol", tol))


def _optimal_mass(mdp: TokenMDP, logp: np.ndarray, tol: float = 1e-12) -> float:
    """:func:`optimal_mass` of a table the caller vouches for (float64 C-contiguous (S, A))."""
    best = np.empty(mdp.n_states)
    mass = np.empty(mdp.n_states)
    _soft_kernels.optimal_mass(mdp.next_state, mdp.reward, mdp.allowed, logp, float(tol), best, mass)
    return float(mdp.start @ mass)


def seen_mass(mdp: TokenMDP, logp, batch: TrajectoryBatch) -> float:
    """E_{s₀∼ρ} π(responses in ``batch`` | s₀) for a batch of *distinct* trajectories, e.g.
    the π*-mass on the responses present in the data. Raises ValueError when ``batch`` is not
    a batch of trajectories of ``mdp`` (:meth:`~xpo_sim.mdp.TokenMDP.check_batch`)."""
    checks.token_mdp(mdp)
    return _seen_mass(mdp, mdp.check_policy(logp), mdp.check_batch(batch))


def _seen_mass(mdp: TokenMDP, logp: np.ndarray, batch: TrajectoryBatch) -> float:
    """:func:`seen_mass` of a table the caller vouches for."""
    if len(batch) == 0:
        return 0.0
    log_cond = _sum_along(logp, batch)
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
        return _sum_along(logp, self.batch)  # the loop's own tables: not validated again

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


@dataclass(frozen=True)
class CoverabilityDetails:
    """What :func:`coverability` computed (``return_details=True``).

    ``value``: C_cov over the prompts as ``over_prompts`` asked — the largest entry of
    ``per_prompt`` ("max") or ``rho_mean`` ("rho_mean") — where ``per_prompt`` is a dict
    prompt state x → Σ_τ sup_θ π_θ(τ|x). ``batch``: the enumerated trajectories (the order of
    :meth:`TokenMDP.trajectories`); ``sup_prob`` (N,): sup_θ π_θ(τ|x) of each;
    ``group`` (N,): the index of each trajectory's (prompt, Φ(τ)) group. ``n_groups``:
    the number of distinct (prompt, Φ(τ)) pairs, i.e. of maximizations solved;
    ``n_optimized``: how many of them needed the numerical optimizer (the others have
    every coordinate of the maximizer fixed at a box bound by dominance); ``max_gap``:
    the largest certified bound, in nats, on the optimality gap of a numerical
    maximization (each sup is exact up to a factor e^{−max_gap} ≥ 1 − max_gap; 0 when no
    group needed the optimizer, the vertex being optimal by the dominance argument).
    ``rho_mean``: Σ_x ρ(x) · per_prompt[x], the ρ-average instead of the maximum (both
    are computed whatever ``over_prompts`` is). ``over_prompts``: which of the two is
    ``value``.
    """

    value: float
    per_prompt: dict
    rho_mean: float
    batch: TrajectoryBatch = field(repr=False)
    sup_prob: np.ndarray = field(repr=False)
    group: np.ndarray = field(repr=False)
    n_groups: int
    n_optimized: int
    max_gap: float
    over_prompts: str = "max"


COVERABILITY_OVER_PROMPTS = ("max", "rho_mean")
"""How :func:`coverability` combines the prompts: the maximum, or the ρ-average."""


# Frank–Wolfe gap (nats) above which a maximization is retried, then reported by a warning.
_GAP_TOL = 1e-9


# coverability's time limit (max_seconds), the estimate above which progress="auto" shows a
# bar, and how long the first maximizations are timed before the estimate is made
COVERABILITY_MAX_SECONDS = 3600.0
COVERABILITY_PROGRESS_SECONDS = 10.0
COVERABILITY_SAMPLE_SECONDS = 2.0
_SAMPLE_SOLVES = 20


def coverability(mdp: TokenMDP, beta: float, policy="implicit", *, features=None, box=None,
                 support: str = "auto", max_trajectories: int = 1_000_000, return_details: bool = False,
                 progress: bool | str = "auto", max_seconds: float | None = COVERABILITY_MAX_SECONDS,
                 over_prompts: str = "max"):
    r"""Exact coverability C_cov(Π) of a reward class Π = {π_θ : θ ∈ [lo, hi]^d}, by
    enumerating every trajectory.

    **Definition, two ways over the prompts** (``over_prompts``). Per prompt x, with the
    responses τ that π_ref can produce from x,

        C_cov(Π; x) = inf_{μ∈Δ(Y)} sup_{τ, π∈Π} π(τ|x) / μ(τ).

    ``"max"`` (default): μ(·|x) is free per prompt and the supremum runs over prompts too,
    C_cov(Π) = max_x C_cov(Π; x) over the states with ρ(x) > 0. ``"rho_mean"``: one joint
    μ ∈ Δ(X × Y) against the trajectory law ρ(x)π(τ|x),

        C_cov(Π) = inf_{μ∈Δ(X×Y)} sup_{(x,τ), π∈Π} ρ(x)π(τ|x) / μ(x, τ) = Σ_x ρ(x) C_cov(Π; x)

    (by the closed form below applied to m(x, τ) = ρ(x) sup_π π(τ|x)), the form coverability
    takes for MDPs, where the occupancies d_h^π include the initial-state law (Xie et al.
    2023, "The Role of Coverage in Online Reinforcement Learning": inf over μ_h ∈ Δ(X × A)
    of sup_{π, h} ‖d_h^π/μ_h‖_∞), here with the prompt as the initial state. The ρ-average
    is at most the maximum, with equality on a single prompt.

    **Which one XPO's theorem uses is not settled here.** Xie et al. (2024, "Exploratory
    Preference Optimization", arXiv 2405.21046) state their guarantee (Theorem 3.1) in terms
    of a coverability coefficient C_cov(Π) of the policy class; we could not read the
    definition in the paper's text (only its abstract and secondary summaries were
    reachable), so the default stays the per-prompt maximum this function always returned,
    and ``"rho_mean"`` gives the joint, MDP-style form; if the paper's μ is joint over
    (x, τ) against ρ(x)π(τ|x), "rho_mean" is the theorem's quantity. The maximum bounds it
    from above, so a guarantee stated with either holds with "max".

    **Closed form.** Write m(τ) = sup_{π∈Π} π(τ|x) and M = Σ_τ m(τ). For any μ,
    Σ_τ μ(τ) = 1 forces some τ with μ(τ) ≤ m(τ)/M, so sup_τ m(τ)/μ(τ) ≥ M; and μ = m/M
    attains M. Hence the infimum is attained at μ ∝ sup_π π(·|x) and

        C_cov(Π; x) = Σ_τ sup_{θ∈Θ} π_θ(τ|x),   C_cov(Π) = max_x or Σ_x ρ(x) of it.

    **Each supremum.** For the soft-optimal policy of the reward r̂_θ = F θ (docs/theory.md, "Linear features"),

        log π_θ(τ|x) = log π_ref(τ|x) + (θ·Φ(τ) − V̂_θ(x)) / β,   Φ(τ) = Σ_h φ(s_h, a_h),

    with V̂_θ(x) the soft value of r̂_θ at x (``soft_backward``), convex in θ (a log-partition),
    so each supremum is a concave maximization over the box; its gradient is
    (Φ(τ) − E_{τ'∼π_θ(·|x)} Φ(τ'))/β, and E Φ = Fᵀ vec(d_θ(s, a | x)) with d_θ the
    state-action occupancy of π_θ started at x: one backward and one forward sweep.

    **Grouping.** The maximizer depends on τ only through (x, Φ(τ)) — π_ref(τ|x) is a
    constant factor — so trajectories are grouped by distinct (prompt, Φ(τ)) rows and one
    maximization is solved per group: g(x, Φ) = max_θ (θ·Φ − V̂_θ(x))/β, and
    sup_θ π_θ(τ|x) = π_ref(τ|x) e^{g(x, Φ(τ))}. (Hence also C_cov ≤ the number of distinct
    Φ(τ) of a prompt: Σ_{τ in a group} sup π_θ(τ|x) = sup_θ π_θ(Φ(τ') = Φ | x) ≤ 1.) The
    combination lock with level-indicator features has vocab^H trajectories but H + 1
    groups.

    **Dominance.** If Φ_k(τ) is the largest value of Φ_k over the prompt's trajectories,
    the k-th gradient coordinate Φ_k(τ) − E_θ Φ_k is ≥ 0 for every θ, so θ_k = hi is
    optimal whatever the other coordinates; the smallest value gives θ_k = lo (a constant
    coordinate does not matter). These coordinates are fixed and the rest (if any) are
    maximized by L-BFGS-B from the better of the free box's centre and the gradient-sign
    vertex; when that ends uncertified (L-BFGS-B stalls on the narrow ridges of a
    saturated softmax), projected Newton steps polish it with the exact Hessian
    −Cov_θ(Φ)/β² over the prompt's groups, and the other start is tried. With one-hot features (the implicit class, where each (s, a) occurs at most
    once per trajectory) every coordinate is fixed: the maximizer is the vertex
    θ = hi on τ's own parameters, lo elsewhere; so it is for the level indicators of the
    combination lock and the cluster indicators of the feature bandit. Each numerical
    maximization is certified by its Frank–Wolfe gap max_{θ'∈Θ} ∇g(θ)·(θ' − θ), which
    bounds g(θ*) − g(θ) by concavity; a gap above 1e-9 nats after retries raises a
    RuntimeWarning (``max_gap`` in the details).

    Parameters
    ----------
    mdp, beta
        The instance and the KL strength the class's policies are soft-optimal for.
    policy : "implicit", "linear" or a reward-class object
        The class, built by :func:`~xpo_sim.policies.make_policy_class` with the options
        given here (only those not None, so the class defaults apply: the implicit box
        spans the true reward and 0, the linear class takes ``mdp.features`` and
        ``mdp.info["feature_box"]``). A policy-class object is used as is (then give no
        options). The logits class is not a reward class: its parameters are unbounded, so
        sup π(τ|x) = 1 for every τ and C_cov would simply be the largest number of
        responses of a prompt — a ValueError says so.
    features, box
        φ and (lo, hi) of the linear class; ``box`` also bounds the implicit class.
        ``box`` is keyword-only (the old ``coverability(mdp, beta, box)`` is refused with a
        message that says so).
    support : {"auto", "terminal", "all"}
        Which tokens carry a parameter in the implicit class.
    max_trajectories : int
        Refuse (ValueError) to enumerate more trajectories than this.
    return_details : bool
        Return a :class:`CoverabilityDetails` instead of the float.
    over_prompts : {"max", "rho_mean"}
        How the prompts combine (see the definition): the largest per-prompt value
        (default), or their ρ-average Σ_x ρ(x) C_cov(Π; x). ValueError for anything else.
    progress : True, False or "auto"
        A bar over the numerical maximizations on stderr, headed by the time they are
        estimated to take; "auto" (default): when that estimate is at least
        :data:`COVERABILITY_PROGRESS_SECONDS`.
    max_seconds : float or None
        Refuse (ValueError, within seconds of the start) a computation estimated to take
        longer than this: each numerical maximization sweeps the whole MDP many times, so a
        large instance whose classes need them (e.g. random features: one per trajectory)
        can take hours though it fits ``max_trajectories``. The estimate times the first
        maximizations (:data:`COVERABILITY_SAMPLE_SECONDS`). None: no limit.

    Returns
    -------
    float
        C_cov(Π) ≥ 1 (1 exactly when the class is a single policy), at most the largest
        number of distinct Φ(τ) of a prompt (either way over the prompts); or the details.
    """
    checks.token_mdp(mdp)
    max_trajectories = checks.integer("max_trajectories", max_trajectories, minimum=1)
    return_details = checks.boolean("return_details", return_details)
    over_prompts = checks.choice("over_prompts", over_prompts, COVERABILITY_OVER_PROMPTS)
    progress = checks.auto_boolean("progress", progress)
    if max_seconds is not None:
        max_seconds = checks.positive("max_seconds", max_seconds)
    cls = _reward_class(mdp, beta, policy, features, box, support)
    beta = cls.beta
    lo, hi = (float(b) for b in cls.box)
    count = mdp.n_trajectories
    if count > max_trajectories:
        raise ValueError(
            f"coverability enumerates every trajectory, and this MDP has {count} (more than "
            f"max_trajectories={max_trajectories}); pass a larger max_trajectories= if they fit in memory"
        )
    batch = mdp.trajectories(max_count=max_trajectories)
    log_ref = trajectory_logp(mdp, mdp.ref_logp, batch)
    phi = _trajectory_features(mdp, batch, cls.features)
    starts = batch.start_states
    group, rep = _group_rows(starts, phi)
    n_groups = rep.size

    # log π_ref-mass of each group (max-shifted log-sum-exp)
    top = np.full(n_groups, -np.inf)
    np.maximum.at(top, group, log_ref)
    log_mass = top + np.log(np.bincount(group, weights=np.exp(log_ref - top[group]), minlength=n_groups))

    phi_rep = phi[rep]
    dense = phi_rep.toarray() if n_groups * phi_rep.shape[1] <= 20_000_000 else None
    group_start = starts[rep]
    solver = _SupSolver(cls, mdp)
    log_gain = np.empty(n_groups)
    gaps = np.empty(n_groups)
    n_optimized = 0
    prompts = np.unique(group_start)
    numeric = _needs_optimizer(group_start, phi_rep, prompts, lo, hi)
    clock = _CoverabilityClock(int(numeric.sum()), n_groups, cls, progress, max_seconds, max_trajectories)
    # L-BFGS-B's small dense algebra through a multi-threaded BLAS spends most of its time
    # synchronizing threads (12x slower on a 2-core machine), as in xpo_sim.run
    try:
        with threadpool_limits(limits=1, user_api="blas"):
            for x in prompts:
                members = np.flatnonzero(group_start == x)
                block = phi_rep[members]
                col_max = block.max(axis=0).toarray().ravel()
                col_min = block.min(axis=0).toarray().ravel()
                if dense is not None:
                    block = dense[members]
                for g in members:
                    row = dense[g] if dense is not None else phi_rep[g].toarray().ravel()
                    r = rep[g]
                    path = (batch.states[r, : batch.lengths[r]], batch.actions[r, : batch.lengths[r]])
                    log_gain[g], gaps[g], optimized = solver.solve(int(x), row, col_max, col_min, lo, hi, block,
                                                                   log_mass[members], path)
                    n_optimized += optimized
                    if optimized:
                        clock.advance()
    finally:
        clock.close()

    max_gap = float(gaps.max()) if n_groups else 0.0
    if max_gap > _GAP_TOL:
        warnings.warn(f"coverability: a maximization stopped with a certified optimality gap of {max_gap:.3g} "
                      f"nats (each sup π may be low by that relative amount)", RuntimeWarning, stacklevel=2)
    # Σ_{τ in a group} sup π_θ(τ|x) = sup_θ π_θ(Φ|x) ≤ 1: allow rounding only
    log_total = log_mass + log_gain
    worst = float(log_total.max()) if n_groups else 0.0
    if worst > 1e-9:
        raise RuntimeError(f"coverability: a supremum of a probability came out as e^{worst:.3g} > 1; "
                           f"this is a bug, please report it")
    log_total = np.minimum(log_total, 0.0)
    group_sup = np.exp(log_total)
    sup_prob = np.minimum(np.exp(log_ref + log_gain[group]), 1.0)

    per_prompt = {int(x): float(total) for x, total in zip(*_sum_by(group_start, group_sup))}
    rho_mean = float(sum(mdp.start[x] * total for x, total in per_prompt.items()))
    value = max(per_prompt.values()) if over_prompts == "max" else rho_mean
    if not return_details:
        return value
    return CoverabilityDetails(value=value, per_prompt=per_prompt, rho_mean=rho_mean, batch=batch,
                               sup_prob=sup_prob, group=group, n_groups=int(n_groups),
                               n_optimized=int(n_optimized), max_gap=max_gap, over_prompts=over_prompts)


def _needs_optimizer(group_start: np.ndarray, phi_rep: sp.csr_matrix, prompts: np.ndarray, lo: float,
                     hi: float) -> np.ndarray:
    """Which groups :meth:`_SupSolver.solve` maximizes numerically: those with a coordinate
    strictly inside its prompt's range of values (the others are fixed by dominance), found
    from the stored entries and the implicit zeros of each prompt's rows, without a solve."""
    numeric = np.zeros(group_start.size, dtype=bool)
    if not hi > lo:
        return numeric
    for x in prompts:
        members = np.flatnonzero(group_start == x)
        block = phi_rep[members].tocsr()
        col_max = block.max(axis=0).toarray().ravel()
        col_min = block.min(axis=0).toarray().ravel()
        rows = np.repeat(np.arange(members.size), np.diff(block.indptr))
        cols = block.indices
        inside = (block.data > col_min[cols]) & (block.data < col_max[cols])
        free = np.bincount(rows[inside], minlength=members.size) > 0
        # an implicit 0 is free in a column whose values straddle 0
        straddle = (col_min < 0) & (col_max > 0)
        n_straddle = int(straddle.sum())
        if n_straddle:
            stored = np.bincount(rows, weights=straddle[cols], minlength=members.size)
            free |= stored < n_straddle
        numeric[members] = free
    return numeric


class _CoverabilityClock:
    """Times :func:`coverability`'s numerical maximizations: after the first ones (up to
    :data:`COVERABILITY_SAMPLE_SECONDS` or a few solves) it estimates the total, refuses it
    above ``max_seconds`` and shows a bar (``xpo_sim.loop._Progress``) when asked to, or by
    default when the estimate is at least :data:`COVERABILITY_PROGRESS_SECONDS`."""

    def __init__(self, total: int, n_groups: int, cls, progress, max_seconds, max_trajectories: int):
        self.total, self.n_groups, self.done = total, n_groups, 0
        self.progress, self.max_seconds, self.max_trajectories = progress, max_seconds, max_trajectories
        self.name = f"coverability of the {getattr(cls, 'name', type(cls).__name__)} class"
        self.start = time.perf_counter()
        self.estimate = None  # seconds, once the first maximizations are timed
        self.bar = None
        if progress is True and total:
            self._show()

    def _show(self) -> None:
        from xpo_sim.loop import _Progress

        self.bar = _Progress(True, "xpo_sim.coverability", self.name,
                             f"{self.total:,} of {self.n_groups:,} groups maximized numerically", self.total,
                             initial=self.done)
        self.bar.start = self.start  # its lines count from the first maximization

    def advance(self) -> None:
        self.done += 1
        if self.bar is not None:
            self.bar.advance()
        if self.estimate is not None:
            return
        elapsed = time.perf_counter() - self.start
        if self.done < min(self.total, _SAMPLE_SOLVES) and elapsed < COVERABILITY_SAMPLE_SECONDS:
            return
        self.estimate = elapsed / self.done * self.total
        if self.max_seconds is not None and self.estimate > self.max_seconds:
            self.close()
            raise ValueError(
                f"coverability would take about {_duration(self.estimate)} on this machine: {self.total:,} of its "
                f"{self.n_groups:,} (prompt, feature) groups need a numerical maximization, each sweeping the whole "
                f"MDP many times ({elapsed / self.done:.3g} s each over the first {self.done}), more than "
                f"max_seconds={self.max_seconds:g}. Pass max_seconds=None (or a larger limit) to run it anyway, or "
                f"measure a smaller instance (max_trajectories={self.max_trajectories:,} bounds only the number of "
                f"trajectories enumerated)")
        if self.bar is None and self.progress == "auto" and self.estimate >= COVERABILITY_PROGRESS_SECONDS:
            self._show()
        if self.bar is not None:
            self.bar.stage(f"{self.total:,} numerical maximizations, about {_duration(self.estimate)} in all "
                           f"(estimated from the first {self.done})")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _sum_by(keys: np.ndarray, values: np.ndarray):
    unique, inverse = np.unique(keys, return_inverse=True)
    return unique, np.bincount(inverse, weights=values, minlength=unique.size)


def _reward_class(mdp, beta, policy, features, box, support):
    """The reward class :func:`coverability` measures, or a ValueError that says why not."""
    if isinstance(policy, (tuple, list, np.ndarray)):
        raise ValueError(
            f"coverability(mdp, beta, policy, ...): the third argument is the policy class, got {policy!r}; "
            f"the box is keyword-only: coverability(mdp, beta, box=(lo, hi))"
        )
    if (isinstance(policy, str) and policy == "logits") or isinstance(policy, LogitsClass):
        raise ValueError(
            "coverability needs a reward class ('implicit' or 'linear'), whose parameters lie in a box: the "
            "logits class has unbounded parameters, so sup_θ π_θ(τ|x) = 1 for every response τ and C_cov would "
            "just be the largest number of responses of a prompt"
        )
    if isinstance(policy, str):
        options = {}
        if features is not None:
            if policy != "linear":
                raise ValueError(f"features= goes with the linear class, not {policy!r}")
            options["features"] = features
        if box is not None:
            options["box"] = box
        if support != "auto":
            if policy != "implicit":
                raise ValueError(f"support= goes with the implicit class, not {policy!r}")
            options["support"] = support
        cls = make_policy_class(mdp, beta, policy, **options)
    else:
        if features is not None or box is not None or support != "auto":
            raise ValueError("features=, box= and support= go with a class name, not a policy-class object")
        cls = make_policy_class(mdp, beta, policy)
        if getattr(cls, "mdp", mdp) is not mdp:
            raise ValueError("the policy-class object was built for a different MDP")
        if float(getattr(cls, "beta", beta)) != float(beta):
            raise ValueError(f"the policy-class object was built for beta={cls.beta}, not beta={beta}")
    if not isinstance(cls, RewardClass):
        raise ValueError(
            f"coverability needs a reward class (soft-optimal policies of r̂ = Fθ, θ in a box); "
            f"{getattr(cls, 'name', type(cls).__name__)!r} is not one"
        )
    return cls


def _trajectory_features(mdp: TokenMDP, batch: TrajectoryBatch, features: sp.csr_matrix) -> sp.csr_matrix:
    """Φ(τ) = Σ_h φ(s_h, a_h) for every trajectory: the (N, d) CSR product of the
    trajectory–(s, a) incidence matrix with F, in canonical form (sorted indices, no
    explicit zeros) so that equal rows have equal stored entries."""
    n, width = batch.states.shape
    steps = np.arange(width)[None, :] < batch.lengths[:, None]  # row-major: trajectory after trajectory
    cols = batch.states[steps] * mdp.n_actions + batch.actions[steps]
    indptr = np.concatenate([[0], np.cumsum(batch.lengths)])
    incidence = sp.csr_matrix((np.ones(cols.size), cols, indptr), shape=(n, mdp.n_state_actions))
    phi = sp.csr_matrix(incidence @ sp.csr_matrix(features))
    phi.sum_duplicates()
    phi.eliminate_zeros()
    phi.sort_indices()
    return phi


def _group_rows(starts: np.ndarray, phi: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    """Group the rows by (start state, Φ row): returns ``group`` (N,), the group of each
    row, and ``rep`` (G,), one row of each group. Rows are compared exactly, as dense rows
    when d is small and as padded (column, value) lists otherwise."""
    n, d = phi.shape
    if n == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    nnz = np.diff(phi.indptr)
    width = int(nnz.max()) if n else 0
    if d <= 2 * width:
        key = np.hstack([starts[:, None].astype(np.float64), phi.toarray()])
    else:
        slot = np.arange(phi.nnz) - np.repeat(phi.indptr[:-1], nnz)
        row = np.repeat(np.arange(n), nnz)
        cols = np.full((n, width), -1.0)
        vals = np.zeros((n, width))
        cols[row, slot] = phi.indices
        vals[row, slot] = phi.data
        key = np.hstack([starts[:, None].astype(np.float64), cols, vals])
    # lexicographic sort of the rows (stable, so each group's first row is its earliest)
    order = np.lexsort(key.T[::-1])
    ordered = key[order]
    first = np.ones(n, dtype=bool)
    first[1:] = (ordered[1:] != ordered[:-1]).any(axis=1)
    group = np.empty(n, dtype=np.int64)
    group[order] = np.cumsum(first) - 1
    return group, order[first].astype(np.int64)


class _SupSolver:
    """g(x, Φ) = max_{θ∈[lo,hi]^d} (θ·Φ − V̂_θ(x))/β for one reward class, with value and
    gradient from one backward (``soft_backward``) and one forward (``occupancy_forward``)
    sweep per evaluation."""

    def __init__(self, cls, mdp: TokenMDP):
        self.cls = cls
        self.next_state = mdp.next_state
        self.ref_logp = mdp.ref_logp
        self.beta = float(cls.beta)
        n_states, n_actions = mdp.next_state.shape
        self.q = np.empty((n_states, n_actions))
        self.v = np.empty(n_states)
        self.logp = np.empty((n_states, n_actions))
        self.prob = np.empty((n_states, n_actions))
        self.occ = np.empty(n_states)
        self.start = np.zeros(n_states)
        self.mdp = mdp

    def value(self, x: int, theta: np.ndarray, phi: np.ndarray) -> float:
        """g = log π_θ(τ|x) − log π_ref(τ|x) for the group's representative path τ
        (``self.path``), summed step by step from the sweep's log π_θ: the same number as
        (θ·Φ − V̂_θ(x))/β, without the cancellation of two values of size |r̂| divided by a
        small β (which lost ε·|r̂|/β: every digit at β = 1e-16)."""
        table = np.ascontiguousarray(self.cls.reward_table(theta), dtype=np.float64)
        threads.soft_sweep(self.mdp, table, self.beta, self.q, self.v, self.logp)
        states, actions = self.path
        return float(np.sum(self.logp[states, actions] - self.ref_logp[states, actions]))

    def value_grad(self, x: int, theta: np.ndarray, phi: np.ndarray) -> tuple[float, np.ndarray]:
        value = self.value(x, theta, phi)
        self.start[x] = 1.0
        prob = threads.policy_probs(self.logp, out=self.prob)
        threads.occupancy_sweep(self.mdp, prob, self.start, self.occ)
        self.start[x] = 0.0
        mean = self.cls.contract(self.occ[:, None] * prob)  # E_{π_θ(·|x)} Φ
        return value, (phi - mean) / self.beta

    def solve(self, x: int, phi: np.ndarray, col_max: np.ndarray, col_min: np.ndarray, lo: float, hi: float,
              block, log_w: np.ndarray, path):
        """(g, certified gap, whether the optimizer ran) for the group (x, Φ); ``block``
        and ``log_w`` are the Φ rows and log π_ref-masses of all of x's groups (for the
        Newton polish); ``path`` = (states, actions) of one trajectory of the group."""
        self.path = path
        at_hi = phi >= col_max
        at_lo = ~at_hi & (phi <= col_min)
        free = ~(at_hi | at_lo) if hi > lo else np.zeros(phi.shape, dtype=bool)
        theta = np.where(at_hi, hi, lo)
        if not free.any():
            # every coordinate fixed by dominance: the vertex is a maximizer (gap 0 by the argument)
            return self.value(x, theta, phi), 0.0, False
        centre = theta.copy()
        centre[free] = 0.5 * (lo + hi)
        value, grad = self.value_grad(x, centre, phi)
        corner = centre.copy()
        corner[free] = np.where(grad[free] > 0, hi, lo)
        starts = [corner, centre] if self.value(x, corner, phi) > value else [centre, corner]
        k = int(free.sum())
        bounds = Bounds(np.full(k, lo), np.full(k, hi))
        work = theta.copy()

        def negative(z):
            work[free] = z
            val, g = self.value_grad(x, work, phi)
            return -val, -g[free]

        best = None
        for start in starts:  # the second start only when the first ends uncertified
            result = minimize(negative, start[free], jac=True, method="L-BFGS-B", bounds=bounds,
                              options=dict(maxiter=10_000, gtol=1e-13, ftol=1e-16, maxcor=20))
            theta = start.copy()
            theta[free] = np.clip(result.x, lo, hi)
            value, grad = self.value_grad(x, theta, phi)
            if _fw_gap(theta, grad, lo, hi) > _GAP_TOL:
                # L-BFGS-B stalls on the narrow ridges of a saturated softmax: polish by Newton
                theta = _newton_polish(theta, free, phi, block, log_w, self.beta, lo, hi)
                value, grad = self.value_grad(x, theta, phi)
            gap = _fw_gap(theta, grad, lo, hi)
            if best is None or value > best[0]:
                best = (value, gap)
            if gap <= _GAP_TOL:
                break
        return best[0], best[1], True


def _newton_polish(theta, free, phi, block, log_w, beta, lo, hi, max_iter: int = 200):
    """Projected Newton steps with backtracking on the free coordinates of
    g(θ) = θ·Φ/β − log Σ_j w_j e^{θ·Φ_j/β} — the same function as (θ·Φ − V̂_θ(x))/β,
    written over the prompt's groups j, whose Hessian is −Cov_θ(Φ)/β² — from the L-BFGS-B
    point, until the Frank–Wolfe gap is at rounding level."""
    dense = block.toarray() if sp.issparse(block) else np.asarray(block)

    offsets = dense - phi  # Φ_j − Φ: exact differences, so θ·(Φ_j − Φ)/β does not cancel at small β

    def evaluate(t):
        z = log_w + offsets @ t / beta
        top = z.max()
        p = np.exp(z - top)
        total = p.sum()
        p /= total
        mean = p @ dense
        return float(-top - math.log(total)), (phi - mean) / beta, p, mean

    theta = theta.copy()
    val, grad, p, mean = evaluate(theta)
    gap = _fw_gap(theta, grad, lo, hi)
    for _ in range(max_iter):
        if gap <= 1e-3 * _GAP_TOL:
            break
        outward = ((theta <= lo) & (grad <= 0)) | ((theta >= hi) & (grad >= 0))
        inactive = free & ~outward
        if not inactive.any():
            break
        centred = dense[:, inactive] - mean[inactive]
        cov = (centred / beta).T @ (centred * p[:, None] / beta)  # −Hessian on the inactive coordinates (β² underflows)
        step = np.linalg.lstsq(cov, grad[inactive], rcond=1e-15)[0]
        size, moved = 1.0, False
        while size > 1e-14:
            candidate = theta.copy()
            candidate[inactive] = np.clip(theta[inactive] + size * step, lo, hi)
            c_val, c_grad, c_p, c_mean = evaluate(candidate)
            c_gap = _fw_gap(candidate, c_grad, lo, hi)
            # an ascent step, or one that shrinks the certified gap (near the optimum g is
            # flat to rounding, and g* − g(θ) ≤ gap(θ) whatever the value says)
            if c_val > val or c_gap < gap:
                theta, val, grad, p, mean, gap = candidate, c_val, c_grad, c_p, c_mean, c_gap
                moved = True
                break
            size *= 0.5
        if not moved:
            break
    return theta


def _fw_gap(theta: np.ndarray, grad: np.ndarray, lo: float, hi: float) -> float:
    """max_{θ'∈[lo,hi]^d} ∇g(θ)·(θ' − θ), an upper bound on max g − g(θ) for concave g."""
    return float(np.maximum(grad * (hi - theta), grad * (lo - theta)).sum())


def theory_alpha(beta: float, c_cov: float, n_params: int, total_queries: int, scale: float = 1.0) -> float:
    r"""The theory's scaling of XPO's bonus weight, α = scale · β · √(log(|Π| T) / (C_cov T))
    (Xie et al. 2024, in the form docs/theory.md ("Coverability") gives; the paper's constant factors are not
    included), with T preference queries and the proxy log|Π| = n_params · log T for a
    tabular class (a grid of T values per parameter). ``beta`` in the exact range
    (:func:`xpo_sim.checks.beta`), ``c_cov`` and ``scale`` positive numbers (C_cov ≥ 1 up to
    rounding), ``n_params`` and ``total_queries`` ints ≥ 1; anything else is a ValueError
    naming it."""
    beta = checks.beta(beta)
    c_cov = checks.positive("c_cov", c_cov)
    n_params = checks.integer("n_params", n_params, minimum=1)
    t = float(checks.integer("total_queries", total_queries, minimum=1))
    scale = checks.positive("scale", scale)
    log_class = n_params * math.log(t)
    return float(scale * beta * math.sqrt((log_class + math.log(t)) / (c_cov * t)))
