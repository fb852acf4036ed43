r"""The exact metrics of a run's iterates: the rows :func:`xpo_sim.run` returns.

For an iterate πᵗ (a per-state table) a row holds ``regret`` = J_β(π*) − J_β(πᵗ) =
β E_{s∼d^{πᵗ}} KL(πᵗ(·|s) ‖ π*(·|s)) ≥ 0, ``reward_regret`` = E_{π*} r − E_{πᵗ} r,
``kl_ref`` = KL(πᵗ ‖ π_ref), the optimal mass, the π*-mass of the data, the number of
distinct responses seen and the data's log-concentrability (see :mod:`xpo_sim.metrics`),
every number computed exactly.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from xpo_sim.data import PreferenceData
from xpo_sim.mdp import TokenMDP
from xpo_sim.metrics import ConcentrabilityTracker, _optimal_mass, _seen_mass, policy_regret
from xpo_sim.soft import _evaluate, _solve_soft

__all__ = ["COLUMNS", "RunRecorder", "recorded_rounds"]

COLUMNS = [
    "algorithm", "round", "pairs", "alpha", "regret", "best_regret", "reward_regret", "kl_ref",
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
    call counts towards ``best_regret``. ``tracker`` must be fed the sampling
    distributions for ``log_concentrability``. β and the tables are the loop's own,
    validated at its edge: nothing here validates them again.

    ``regret`` is :func:`xpo_sim.metrics.policy_regret` (β Σ_s d^π(s) KL(π‖π*), a sum of
    non-negative terms), never the difference of two values, so it is never negative."""

    def __init__(self, mdp: TokenMDP, beta: float, algorithm_name: str, recorded, max_enumerate: int):
        self.mdp, self.beta, self.name = mdp, beta, algorithm_name
        self.recorded = recorded
        self.solution = _solve_soft(mdp, beta)
        self.star = _evaluate(mdp, self.solution.logp, beta)
        self.tracker = ConcentrabilityTracker(mdp, self.solution.logp, max_enumerate)
        self.best_regret = math.inf
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
        regret = self.regret(logp)
        self.best_regret = min(self.best_regret, regret)
        if t in self.recorded:
            ev = _evaluate(self.mdp, logp, self.beta)
            iterate_regret = regret
            if iterate_logp is not None and not np.may_share_memory(iterate_logp, logp):
                iterate_regret = self.regret(iterate_logp)
            self.rows.append(dict(
                algorithm=self.name, round=t, pairs=data.n_queries, alpha=alpha_t,
                regret=regret, best_regret=self.best_regret, reward_regret=self.star.reward - ev.reward,
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
