r"""The accumulated preference data of a run, aggregated by distinct trajectory.

XPO and the DPO baselines minimize a sum over *every* pair and explored response so far.
Stored as counts per distinct (chosen, rejected) pair and per distinct explored response,
one round of the exact update costs O(distinct pairs + S·A) instead of O(rounds so far).

A trajectory of a deterministic MDP is identified by its start state and its tokens; each
distinct one gets an index into padded arrays (``path_states``, ``path_actions``,
``path_lengths``) and its reference log-probability log π_ref(τ).
"""

from __future__ import annotations

import numpy as np

from xpo_sim.mdp import TokenMDP, TrajectoryBatch

__all__ = ["PreferenceData"]


class PreferenceData:
    """Counts of preference pairs and of explored responses over distinct trajectories."""

    def __init__(self, mdp: TokenMDP):
        self.mdp = mdp
        self._index: dict[tuple, int] = {}
        self._paths: list[tuple[np.ndarray, np.ndarray]] = []
        self._pairs: dict[tuple[int, int], int] = {}
        self._explored: dict[int, int] = {}
        self.n_pairs = 0
        self._arrays = None

    # ---------------------------------------------------------------- adding
    def path_ids(self, batch: TrajectoryBatch) -> np.ndarray:
        """Index of each trajectory of ``batch``, registering new ones."""
        ids = np.empty(len(batch), dtype=np.int64)
        for i, n in enumerate(batch.lengths):
            states = batch.states[i, :n]
            actions = batch.actions[i, :n]
            key = (int(states[0]), *actions.tolist())
            k = self._index.get(key)
            if k is None:
                k = len(self._paths)
                self._index[key] = k
                self._paths.append((states.copy(), actions.copy()))
                self._arrays = None
            ids[i] = k
        return ids

    def add_pairs(self, chosen: np.ndarray, rejected: np.ndarray) -> None:
        """Record preference pairs given as path indices (chosen ≻ rejected)."""
        for c, r in zip(chosen.tolist(), rejected.tolist()):
            self._pairs[(c, r)] = self._pairs.get((c, r), 0) + 1
        self.n_pairs += len(chosen)
        self._arrays = None

    def add_explored(self, ids: np.ndarray) -> None:
        """Record responses that enter the exploration bonus."""
        for k in ids.tolist():
            self._explored[k] = self._explored.get(k, 0) + 1
        self._arrays = None

    # ---------------------------------------------------------------- views
    @property
    def n_distinct(self) -> int:
        return len(self._paths)

    @property
    def n_explored(self) -> int:
        return int(sum(self._explored.values()))

    def arrays(self) -> dict[str, np.ndarray]:
        """Kernel-ready arrays (int64/float64, C-contiguous), cached until the next change."""
        if self._arrays is None:
            n = len(self._paths)
            width = max((len(a) for _, a in self._paths), default=1)
            states = np.full((n, width), -1, dtype=np.int64)
            actions = np.full((n, width), -1, dtype=np.int64)
            lengths = np.zeros(n, dtype=np.int64)
            ref_logp = np.zeros(n)
            for k, (s, a) in enumerate(self._paths):
                states[k, : len(s)] = s
                actions[k, : len(a)] = a
                lengths[k] = len(a)
                ref_logp[k] = self.mdp.ref_logp[s, a].sum()
            pairs = np.array(list(self._pairs.keys()), dtype=np.int64).reshape(-1, 2)
            explored = np.array(list(self._explored.keys()), dtype=np.int64)
            self._arrays = dict(
                path_states=states,
                path_actions=actions,
                path_lengths=lengths,
                path_ref_logp=ref_logp,
                pair_chosen=np.ascontiguousarray(pairs[:, 0]),
                pair_rejected=np.ascontiguousarray(pairs[:, 1]),
                pair_count=np.array(list(self._pairs.values()), dtype=np.float64),
                explore_path=explored,
                explore_count=np.array(list(self._explored.values()), dtype=np.float64),
            )
        return self._arrays

    def batch(self) -> TrajectoryBatch:
        """Every distinct trajectory seen so far."""
        a = self.arrays()
        return TrajectoryBatch(a["path_states"], a["path_actions"], a["path_lengths"])
