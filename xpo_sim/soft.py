r"""Exact KL-regularized optimum and exact policy evaluation on a :class:`TokenMDP`.

For β > 0 the objective of a policy π is

    J_β(π) = E_{s₀∼ρ, τ∼π}[ r(τ) − β log(π(τ)/π_ref(τ)) ].

Its maximizer π* follows from the soft Bellman equations, solved by one backward sweep
over the topological order (V* of the end is 0):

    Q*(s,a)     = r(s,a) + V*(s'(s,a))
    V*(s)       = β log Σ_a π_ref(a|s) exp(Q*(s,a)/β)
    π*(a|s)     = π_ref(a|s) exp((Q*(s,a) − V*(s))/β)
    J_β(π*)     = Σ_s ρ(s) V*(s).

The sweep evaluates V*(s) = m + β·L with m = max_a Q*(s,a) and
L = log Σ_a π_ref(a|s) e^{(Q*(s,a) − m)/β} ≤ 0, so nothing overflows at any β in
[``checks.BETA_MIN``, ``checks.BETA_MAX``] = [1e-300, 1e300] and any rewards the
:class:`TokenMDP` accepts (|path sums| ≤ 2^1022), and reference masses down to 1e-300 stay
finite. L is a max-shifted log-sum-exp where β is small against the spread of Q* over a
state's tokens, and log1p(Σ π_ref·expm1(…)) or the cumulant expansion
β·L = E_ref[Q* − m] + Var_ref[Q*]/(2β) where β is large — the plain log-sum-exp would cancel
there (β·log Σ π_ref e^{Q*/β} with Q*/β ~ 1e-14 loses every digit); see
``xpo_sim._kernels.soft``. V* is accurate to a few ulp of the magnitudes of Q* at every β:
as β → ∞, J_β(π*) → E_{π_ref} r(τ); as β → 0, J_β(π*) = E_ρ max_τ r(τ) exactly and π*
concentrates on the arg max. Where β is large, π_ref's rows are treated as the
distributions they stand for (normalized; they sum to 1 within 1e-9 in float64).

:func:`evaluate` scores any per-state policy exactly (no Monte Carlo):
J_β(π) = E r(τ) − β E KL(π(·|s₀) ‖ π_ref(·|s₀)), both terms by backward induction. It forms
no log-sum-exp, so the cancellation above does not arise in it; but J_β(π) is a difference,
and J_β(π*) − J_β(π) from two such values loses ~ε·|J| — the regret of a policy is computed
directly as a sum of non-negative KL terms by :func:`xpo_sim.metrics.policy_regret`.
:func:`occupancy` is the forward recursion for the probability of visiting each state.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from xpo_sim import checks, threads
from xpo_sim.mdp import POLICY_TOL, TokenMDP

__all__ = ["SoftSolution", "PolicyEvaluation", "solve_soft", "evaluate", "occupancy"]


@dataclass(frozen=True)
class SoftSolution:
    """The KL-regularized optimum of an MDP at temperature ``beta``.

    ``q`` (S, A) = Q*, ``v`` (S,) = V*, ``logp`` (S, A) = log π* (``-inf`` where
    π_ref is), ``value`` = J_β(π*) = ρ·V*.
    """

    beta: float
    q: np.ndarray
    v: np.ndarray
    logp: np.ndarray
    value: float


@dataclass(frozen=True)
class PolicyEvaluation:
    """Exact evaluation of a policy.

    ``value`` = J_β(π) = ``reward`` − β·``kl``; ``reward`` = E r(τ); ``kl`` =
    E_{s₀∼ρ} KL(π(·|s₀) ‖ π_ref(·|s₀)) over trajectories. Per-state versions (the same
    quantities for a trajectory started in each state) are ``v``, ``reward_to_go`` and
    ``kl_to_go``.
    """

    beta: float
    value: float
    reward: float
    kl: float
    v: np.ndarray
    reward_to_go: np.ndarray
    kl_to_go: np.ndarray


def _check_mdp(mdp) -> TokenMDP:
    return checks.token_mdp(mdp)


def _output_arrays(out, shapes, names, what, inputs=()):
    """The caller's output arrays for ``what``, checked: ``out`` is a tuple/list of arrays
    (or a previous result, whose arrays ``names`` are reused) matching ``shapes``, each a
    writable C-contiguous float64 array, none overlapping another or one of ``inputs``."""
    if isinstance(out, (SoftSolution, PolicyEvaluation)):
        out = tuple(getattr(out, name) for name in names)
    if not isinstance(out, (tuple, list)) or len(out) != len(shapes):
        raise ValueError(f"out= of {what} must be a tuple of {len(shapes)} arrays "
                         f"({', '.join(names)}), got {type(out).__name__}"
                         + (f" of length {len(out)}" if isinstance(out, (tuple, list)) else ""))
    for name, array, shape in zip(names, out, shapes):
        if not isinstance(array, np.ndarray):
            raise ValueError(f"out= of {what}: {name} must be a numpy array, got {type(array).__name__}")
        if array.shape != shape or array.dtype != np.float64:
            raise ValueError(f"out= of {what}: {name} must have shape {shape} and dtype float64, "
                             f"got shape {array.shape} and dtype {array.dtype}")
        if not (array.flags.c_contiguous and array.flags.writeable):
            raise ValueError(f"out= of {what}: {name} must be a writable C-contiguous array")
    for i, array in enumerate(out):
        for other in (*out[i + 1:], *inputs):
            if np.may_share_memory(array, other):
                raise ValueError(f"out= of {what}: {names[i]} overlaps another output or an input array")
    return tuple(out)


def solve_soft(mdp: TokenMDP, beta: float, out=None) -> SoftSolution:
    """Solve the soft Bellman equations of ``mdp`` at temperature ``beta`` exactly.

    ``out``: optional output arrays ``(q, v, logp)`` of shapes (S, A), (S,), (S, A), float64,
    C-contiguous, writable — or a previous :class:`SoftSolution` of the same MDP, whose
    arrays are then overwritten. They are filled and returned in the result, so a loop that
    solves repeatedly allocates nothing (``sol = solve_soft(mdp, b, out=sol)``).

    Raises ValueError when ``beta`` is not a positive finite number or ``out`` does not fit.
    """
    _check_mdp(mdp)
    return _solve_soft(mdp, checks.beta(beta), out)


def _solve_soft(mdp: TokenMDP, beta: float, out=None) -> SoftSolution:
    """:func:`solve_soft` for an already validated float β (the round loop's)."""
    S, A = mdp.n_states, mdp.n_actions
    if out is None:
        q = np.empty((S, A))
        v = np.empty(S)
        logp = np.empty((S, A))
    else:
        q, v, logp = _output_arrays(out, [(S, A), (S,), (S, A)], ("q", "v", "logp"), "solve_soft",
                                    (mdp.next_state, mdp.reward, mdp.ref_logp))
    threads.soft_sweep(mdp, mdp.reward, beta, q, v, logp)
    return SoftSolution(beta=beta, q=q, v=v, logp=logp, value=float(mdp.start @ v))


def evaluate(mdp: TokenMDP, logp, beta: float, out=None) -> PolicyEvaluation:
    """Exact J_β, expected reward and KL to π_ref of the policy with per-state
    log-probabilities ``logp`` (S, A).

    A policy that puts mass on a token π_ref disallows has infinite KL and J_β = −inf.

    ``out``: optional output arrays ``(v, reward_to_go, kl_to_go)``, each (S,) float64,
    C-contiguous, writable (or a previous :class:`PolicyEvaluation` of the same MDP, whose
    arrays are then overwritten); filled and returned in the result, so repeated calls
    allocate nothing when ``logp`` is already a C-contiguous float64 (S, A) array.
    """
    _check_mdp(mdp)
    return _evaluate(mdp, logp, checks.beta(beta), out)


def _evaluate(mdp: TokenMDP, logp, beta: float, out=None) -> PolicyEvaluation:
    """:func:`evaluate` for an already validated float β (the round loop's); the table is
    still checked, in the same pass, by the kernel."""
    table = np.asarray(logp)
    if table.shape != (mdp.n_states, mdp.n_actions) or table.dtype != np.float64:
        table = mdp.check_policy(table)  # raises on a wrong shape or dtype
    table = np.ascontiguousarray(table)
    S = mdp.n_states
    if out is None:
        v, reward_to_go, kl_to_go = np.empty(S), np.empty(S), np.empty(S)
    else:
        v, reward_to_go, kl_to_go = _output_arrays(
            out, [(S,), (S,), (S,)], ("v", "reward_to_go", "kl_to_go"), "evaluate",
            (table, mdp.next_state, mdp.reward, mdp.ref_logp))
    bad = threads.evaluate_sweep(mdp, table, POLICY_TOL, reward_to_go, kl_to_go)
    if bad >= 0:
        mdp.check_policy(table)  # the kernel found a bad row: raise the detailed error
    # sum over the prompts only: a state with ρ = 0 may have KL = inf (mass on a token π_ref
    # disallows) and must not turn 0·inf into NaN
    prompts = mdp.start_states
    reward = float(mdp.start[prompts] @ reward_to_go[prompts])
    kl = float(mdp.start[prompts] @ kl_to_go[prompts])
    with np.errstate(invalid="ignore"):
        np.multiply(kl_to_go, -beta, out=v)
        v += reward_to_go
    return PolicyEvaluation(
        beta=beta,
        value=reward - beta * kl,
        reward=reward,
        kl=kl,
        v=v,
        reward_to_go=reward_to_go,
        kl_to_go=kl_to_go,
    )


def occupancy(mdp: TokenMDP, logp) -> np.ndarray:
    """Probability (S,) that a trajectory of the policy ``logp`` (from s₀ ∼ ρ) visits
    each state."""
    _check_mdp(mdp)
    logp = np.ascontiguousarray(mdp.check_policy(logp), dtype=np.float64)
    out = np.empty(mdp.n_states)
    threads.occupancy_sweep(mdp, threads.policy_probs(logp), mdp.start, out)
    return out
