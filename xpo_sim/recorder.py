r"""The exact metrics of a run's iterates: the rows :func:`xpo_sim.run` returns.

For an iterate πᵗ (a per-state table) a row holds ``regret`` = J_β(π*) − J_β(πᵗ) =
β E_{s∼d^{πᵗ}} KL(πᵗ(·|s) ‖ π*(·|s)) ≥ 0, ``reward_regret`` = E_{π*} r − E_{πᵗ} r,
``kl_ref`` = KL(πᵗ ‖ π_ref), the optimal mass, the π*-mass of the data, the number of
distinct responses seen and the data's log-concentrability (see :mod:`xpo_sim.metrics`),
every number computed exactly.

Two columns average over the run's iterates rather than score one: ``avg_regret`` at row t
is (1/t) Σ_{i=1..t} regret(πⁱ), the average regret of the iterates rounds 1…t produced
(the quantity XPO's Theorem 3.1 bounds; row 0 holds π_ref's regret), and ``mixture_regret``
is the exact regret of their uniform mixture unif(π¹…πᵗ) on tree instances
(:mod:`xpo_sim.mixture`; NaN on other DAGs), at most ``avg_regret``. Both run over every
scored iterate, not only the rows: every round for the exact classes, only the rows' rounds
for a class scored on those alone (the transformer).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from xpo_sim.data import PreferenceData
from xpo_sim.mdp import TokenMDP
from xpo_sim.metrics import ConcentrabilityTracker, _optimal_mass, _seen_mass, policy_regret
from xpo_sim.mixture import RunningMixture, is_tree
from xpo_sim.soft import _evaluate, _solve_soft

__all__ = ["COLUMNS", "RunRecorder", "recorded_rounds"]

COLUMNS = [
    "algorithm", "round", "pairs", "alpha", "regret", "best_regret", "avg_regret", "mixture_regret",
    "reward_regret", "kl_ref",
    "opt_mass", "seen_star_mass", "distinct_seen", "log_concentrability", "iterate_regret", "converged",
]
"""The columns of :func:`xpo_sim.run`'s DataFrame, in order."""

RECORD_KEYWORDS = ("all", "geometric")


def recorded_rounds(record, rounds: int, eval_every: int = 1) -> set[int]:
    """The rounds that become rows: ``record`` = "all", "geometric" (about 60 rounds,
    geometrically spaced) or a collection of ints (rounds outside 0…rounds are dropped);
    then only multiples of ``eval_every``; rounds 0 and ``rounds`` always."""
    if isinstance(record, str):
        if record not in RECORD_KEYWORDS:
            raise ValueError(f"record must be 'all', 'geometric' or a collection of round numbers, got {record!r}")
        if record == "all":
            chosen = set(range(rounds + 1))
        else:
            grid = np.unique(np.round(np.geomspace(1, rounds, num=min(rounds, 60))).astype(int))
            chosen = set(grid.tolist())
    else:
        try:
            values = list(record)
        except TypeError:
            raise ValueError(f"record must be 'all', 'geometric' or a collection of round numbers, "
                             f"got {record!r}") from None
        bad = [v for v in values if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer))]
        if bad:
            raise ValueError(f"record must hold round numbers (ints), got {bad[0]!r}")
        chosen = {int(t) for t in values if 0 <= t <= rounds}
    return {t for t in chosen if t % eval_every == 0} | {0, rounds}


class RunRecorder:
    """Exact metrics of successive iterates (the rows of :func:`xpo_sim.run`): one
    :meth:`record` call per iterate; only rounds in ``recorded`` become rows, but every
    call counts towards ``best_regret``, ``avg_regret`` and ``mixture_regret`` (the last
    two over the calls of rounds ≥ 1). ``tracker`` must be fed the sampling distributions
    for ``log_concentrability``. β and the tables are the loop's own, validated at its
    edge: nothing here validates them again.

    ``regret`` is :func:`xpo_sim.metrics.policy_regret` (β Σ_s d^π(s) KL(π‖π*), a sum of
    non-negative terms), never the difference of two values, so it is never negative."""

    def __init__(self, mdp: TokenMDP, beta: float, algorithm_name: str, recorded, max_enumerate: int):
        self.mdp, self.beta, self.name = mdp, beta, algorithm_name
        self.recorded = recorded
        self.solution = _solve_soft(mdp, beta)
        self.star = _evaluate(mdp, self.solution.logp, beta)
        self.tracker = ConcentrabilityTracker(mdp, self.solution.logp, max_enumerate)
        self.best_regret = math.inf
        self.regret_sum, self.scored = 0.0, 0  # over the scored iterates of rounds >= 1
        # the uniform mixture of the scored iterates of rounds >= 1, on trees only (NaN otherwise)
        self.mixture = RunningMixture(mdp) if is_tree(mdp) else None
        self.rows: list[dict] = []
        self._pending_converged = True  # updates of unrecorded rounds since the last row

    def regret(self, logp: np.ndarray) -> float:
        return policy_regret(self.mdp, logp, self.solution)

    def record(self, t: int, logp: np.ndarray, data: PreferenceData, alpha_t: float,
               iterate_logp: np.ndarray | None = None, converged: bool = True) -> None:
        """Score ``logp`` (the reported policy); ``iterate_logp``, when the algorithm
        reports something other than its iterate (ExPO), gives ``iterate_regret``;
        ``converged``: whether every update since the previous row met its tolerance."""
        logp = np.ascontiguousarray(logp, dtype=np.float64)
        regret = self.regret(logp)  # also checks the table
        self.best_regret = min(self.best_regret, regret)
        if t > 0:
            self.regret_sum += regret
            self.scored += 1
            if self.mixture is not None:
                self.mixture._add(logp)
        if t in self.recorded:
            avg_regret = self.regret_sum / self.scored if self.scored else regret
            mixture_regret = math.nan
            if self.mixture is not None:
                mixture_regret = self.mixture.regret(self.solution) if self.mixture.count else regret
            ev = _evaluate(self.mdp, logp, self.beta)
            iterate_regret = regret
            if iterate_logp is not None and not np.may_share_memory(iterate_logp, logp):
                iterate_regret = self.regret(iterate_logp)
            self.rows.append(dict(
                algorithm=self.name, round=t, pairs=data.n_queries, alpha=alpha_t,
                regret=regret, best_regret=self.best_regret, avg_regret=avg_regret,
                mixture_regret=mixture_regret, reward_regret=self.star.reward - ev.reward,
                kl_ref=ev.kl, opt_mass=_optimal_mass(self.mdp, logp),
                seen_star_mass=_seen_mass(self.mdp, self.solution.logp, data.batch()),
                distinct_seen=data.n_distinct, log_concentrability=self.tracker.value(),
                iterate_regret=iterate_regret, converged=bool(converged and self._pending_converged),
            ))
            self._pending_converged = True
        else:
            self.skip(converged)

    def skip(self, converged: bool = True) -> None:
        """An iterate that is not scored (nor a row): its update's convergence still counts
        towards the next row's ``converged``."""
        self._pending_converged = self._pending_converged and bool(converged)

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=COLUMNS)
