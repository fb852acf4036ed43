r"""The exact regret of the uniform mixture of a run's iterates, the policy XPO's guarantee
is stated for.

Theorem 3.1 of Xie et al. (2024) bounds the regret of π̂ = unif(π¹, …, π^T): draw t
uniformly, then a whole response from πᵗ. Its trajectory distribution is the average

    P̂(τ) = (1/T) Σₜ Pᵗ(τ),   Pᵗ(τ) = ρ(s₀) Π_h πᵗ(a_h | s_h),

and its objective J_β(P) = E_P r(τ) − β KL(P ‖ P_ref) is defined for any distribution over
trajectories, Markov or not. On a general DAG P̂ is not the distribution of any per-state
policy (two prefixes that meet in one state have different posteriors over t). **On a tree
it is.** Call a TokenMDP a tree when every state is entered by at most one (state, token)
pair and no start state (ρ > 0) is entered at all, counting every token, allowed or not
(:func:`is_tree`). Then each state s is reached along exactly one path, and a trajectory
reaches s exactly when its prefix is that path, so with dᵗ(s) the probability that πᵗ
reaches s (:func:`xpo_sim.occupancy`)

    P̂(reach s) = (1/T) Σₜ dᵗ(s),   P̂(reach s, then a) = (1/T) Σₜ dᵗ(s) πᵗ(a|s).

Because the state at step h determines the whole history, the chain rule factors P̂ over
the states of τ with the conditionals

    π̂(a|s) = P̂(a | reach s) = Σₜ wₜ(s) πᵗ(a|s),   wₜ(s) = dᵗ(s) / Σ_u d^u(s),

so P̂(τ) = ρ(s₀) Π_h π̂(a_h|s_h): the mixture *is* the Markov policy π̂, whose weights favour
the iterates that reach s. (A state no iterate reaches gets π_ref's row; it carries no mass,
so its row changes nothing.) Its regret J_β(π*) − J_β(π̂) is then
:func:`xpo_sim.metrics.policy_regret` of π̂'s table, exact like every other regret here.

**Convexity.** regret(P) = β KL(P ‖ P*) over trajectories (P* ∝ P_ref e^{r/β}), which is
convex in P, so regret(π̂) ≤ (1/T) Σₜ regret(πᵗ): the average regret, the quantity the
theorem's proof bounds, bounds the mixture's; equality when every iterate is the same.

:class:`RunningMixture` keeps Σₜ dᵗ(s) πᵗ(a|s) and Σₜ dᵗ(s) (O(S·A) memory, one forward
sweep and one pass over the table per iterate), so a run can report the mixture after every
round; :func:`xpo_sim.run` does so in its ``mixture_regret`` column on tree instances.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

from xpo_sim import checks, threads
from xpo_sim.mdp import TokenMDP
from xpo_sim.metrics import policy_regret
from xpo_sim.soft import SoftSolution, _solve_soft

__all__ = ["is_tree", "RunningMixture", "mixture_logp", "mixture_regret"]


def _entries(mdp: TokenMDP) -> np.ndarray:
    """How many (state, token) pairs lead into each state (every token, allowed or not)."""
    successors = mdp.next_state[mdp.next_state >= 0]
    return np.bincount(successors, minlength=mdp.n_states)


def is_tree(mdp: TokenMDP) -> bool:
    """Whether every state of ``mdp`` is entered by at most one (state, token) pair and no
    start state (ρ > 0) is entered at all, counting disallowed tokens too: then every state
    has one path from its prompt, and the mixture of per-state policies is itself a
    per-state policy (module docstring). Bandits, token trees and the needle families are
    trees; ``random_dag`` and ``combination_lock`` are not."""
    checks.token_mdp(mdp)
    entries = _entries(mdp)
    return bool(entries.max(initial=0) <= 1 and not entries[mdp.start > 0].any())


def _check_tree(mdp: TokenMDP, name: str = "mdp") -> None:
    checks.token_mdp(mdp, name)
    entries = _entries(mdp)
    merged = np.flatnonzero(entries > 1)
    if merged.size:
        s = int(merged[0])
        raise ValueError(f"{name} is not a tree: state {s} is entered by {int(entries[s])} (state, token) pairs, "
                         f"so the uniform mixture of policies is not a per-state policy there (it depends on the "
                         f"path taken); the mixture's exact regret is computed on trees only (e.g. bandits, "
                         f"token_tree, token_needle, feature_bandit), not on {mdp!r}")
    entered = np.flatnonzero((entries > 0) & (mdp.start > 0))
    if entered.size:
        raise ValueError(f"{name} is not a tree: start state {int(entered[0])} (ρ > 0) is also entered from another "
                         f"state, so it is reached along more than one path")


class RunningMixture:
    r"""The uniform mixture of the per-state policies added so far, on a tree: it keeps
    N(s, a) = Σₜ dᵗ(s) πᵗ(a|s) and D(s) = Σₜ dᵗ(s), and π̂(a|s) = N(s, a)/D(s) (π_ref's
    row where D(s) = 0). ``mdp`` must be a tree (:func:`is_tree`; ValueError otherwise).

    :meth:`add` validates each table; :meth:`logp` is the mixture's table, :meth:`regret`
    its exact regret. ``count``: the number of policies added."""

    def __init__(self, mdp: TokenMDP):
        _check_tree(mdp)
        self.mdp = mdp
        self.count = 0
        self._weighted = np.zeros((mdp.n_states, mdp.n_actions))
        self._reach = np.zeros(mdp.n_states)
        self._occupancy = np.empty(mdp.n_states)
        self._scratch = np.empty((mdp.n_states, mdp.n_actions))

    def add(self, logp) -> None:
        """Add the policy with per-state log-probabilities ``logp`` (S, A) as one more
        component (ValueError naming ``logp`` if it is not a policy table of this MDP)."""
        self._add(self.mdp.check_policy(logp))

    def _add(self, table: np.ndarray) -> None:
        """:meth:`add` for a float64 (S, A) table already checked (the run's recorder)."""
        table = np.ascontiguousarray(table, dtype=np.float64)
        threads.policy_probs(table, out=self._scratch)  # π
        threads.occupancy_sweep(self.mdp, self._scratch, self.mdp.start, self._occupancy)
        self._scratch *= self._occupancy[:, None]
        self._weighted += self._scratch
        self._reach += self._occupancy
        self.count += 1

    def logp(self) -> np.ndarray:
        """log π̂ (S, A), a new array; ValueError before any policy is added."""
        if self.count == 0:
            raise ValueError("the mixture has no components yet: add() a policy first")
        with np.errstate(divide="ignore", invalid="ignore"):
            table = np.log(self._weighted)  # -inf where no iterate reaches (s, a)
            table -= np.log(self._reach)[:, None]  # NaN on the rows no iterate reaches
        unreached = ~(self._reach > 0)
        if unreached.any():
            np.copyto(table, self.mdp.ref_logp, where=unreached[:, None])
        return table

    def regret(self, solution: SoftSolution) -> float:
        """J_β(π*) − J_β(π̂) for ``solution`` = :func:`xpo_sim.solve_soft` ``(mdp, β)``
        (:func:`xpo_sim.metrics.policy_regret` of :meth:`logp`)."""
        return policy_regret(self.mdp, self.logp(), solution)


def mixture_logp(mdp: TokenMDP, logps: Iterable) -> np.ndarray:
    """log π̂ (S, A) of the uniform mixture of the per-state policies ``logps`` (each an
    (S, A) table of log-probabilities) on the tree ``mdp``: π̂(a|s) = Σₜ dᵗ(s) πᵗ(a|s) /
    Σₜ dᵗ(s) (module docstring). ValueError if ``mdp`` is not a tree, ``logps`` is empty, or
    a table is not a policy of ``mdp``."""
    mixture = RunningMixture(mdp)
    if isinstance(logps, np.ndarray) and logps.ndim == 2:
        logps = [logps]
    try:
        tables = iter(logps)
    except TypeError:
        raise ValueError(f"logps must be a sequence of (S, A) policy tables, got {type(logps).__name__}") from None
    for i, logp in enumerate(tables):
        mixture._add(mdp.check_policy(logp, name=f"logps[{i}]"))
    if mixture.count == 0:
        raise ValueError("logps is empty: the mixture needs at least one policy")
    return mixture.logp()


def mixture_regret(mdp: TokenMDP, beta: float, logps: Iterable) -> float:
    """J_β(π*) − J_β(π̂), exact, for the uniform mixture π̂ = unif(π¹, …, π^T) of the
    per-state policies ``logps`` on the tree ``mdp`` (:func:`mixture_logp`); at most the
    average of their regrets (convexity). ValueError as :func:`mixture_logp`, or when
    ``beta`` is not a positive finite number."""
    beta = checks.beta(beta)
    table = mixture_logp(mdp, logps)
    return policy_regret(mdp, table, _solve_soft(mdp, beta))
