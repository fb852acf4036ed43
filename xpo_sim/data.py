r"""The accumulated preference data of a run, aggregated by distinct trajectory.

XPO and the DPO baselines minimize a sum over *every* pair and explored response so far.
Stored as counts per distinct (chosen, rejected) pair and per distinct explored response,
one round of the exact update costs O(distinct pairs + S·A) instead of O(rounds so far).

A trajectory of a deterministic MDP is identified by its start state and its tokens; each
distinct one gets an index into padded arrays (``path_states``, ``path_actions``,
``path_lengths``) and its reference log-probability log π_ref(τ).

**Labels and counts.** A query (a, b) that the teacher answers adds weight 1 in total:

* a strict answer a ≻ b adds 1 to the pair (a, b) (:meth:`PreferenceData.add_pairs`);
* an "equal" answer (the soft label ½) adds ½ to (a, b) and ½ to (b, a)
  (:meth:`PreferenceData.add_equal`), so that its DPO term is the soft-label loss
  ½ ℓ(h) + ½ ℓ(−h) = −[½ log σ(h) + ½ log σ(−h)], h the margin of a over b;
* a skipped query adds nothing to the pairs (:meth:`PreferenceData.add_skipped` only counts it).

``n_pairs`` counts the answered queries (= the total pair weight Σ ``pair_count``, what
the losses are normalized by), ``n_skipped`` the skipped ones and ``n_queries`` =
``n_pairs + n_skipped`` every query asked (the ``pairs`` column of :func:`xpo_sim.run`).
"""

from __future__ import annotations

import numpy as np

from xpo_sim import checks
from xpo_sim.mdp import TokenMDP, TrajectoryBatch, _mark_valid

__all__ = ["PreferenceData"]


class _Growable:
    """A numpy array that grows along axis 0 by doubling (amortized O(1) appends)."""

    def __init__(self, shape_tail=(), dtype=np.float64, fill=0):
        self.data = np.full((8, *shape_tail), fill, dtype=dtype)
        self.fill = fill
        self.size = 0

    def append(self, row) -> int:
        if self.size == self.data.shape[0]:
            bigger = np.full((2 * self.size, *self.data.shape[1:]), self.fill, dtype=self.data.dtype)
            bigger[: self.size] = self.data
            self.data = bigger
        self.data[self.size] = row
        self.size += 1
        return self.size - 1

    def widen(self, width: int) -> None:
        """Pad axis 1 (with ``fill``) to at least ``width`` columns."""
        if self.data.shape[1] < width:
            wider = np.full((self.data.shape[0], width), self.fill, dtype=self.data.dtype)
            wider[:, : self.data.shape[1]] = self.data
            self.data = wider

    def view(self) -> np.ndarray:
        return self.data[: self.size]


class PreferenceData:
    """Counts of preference pairs and of explored responses over distinct trajectories.

    Stored in arrays that grow in place, so reading the kernel-ready arrays costs nothing
    per round beyond the new data.
    """

    def __init__(self, mdp: TokenMDP):
        if not isinstance(mdp, TokenMDP):
            raise ValueError(f"mdp must be a TokenMDP, got {type(mdp).__name__}")
        self.mdp = mdp
        self._index: dict[tuple, int] = {}
        self._states = _Growable((1,), np.int64, -1)
        self._actions = _Growable((1,), np.int64, -1)
        self._lengths = _Growable((), np.int64)
        self._ref_logp = _Growable((), np.float64)
        self._pair_row: dict[tuple[int, int], int] = {}
        self._pair_ends = _Growable((2,), np.int64)
        self._pair_count = _Growable((), np.float64)
        self._explore_row: dict[int, int] = {}
        self._explore_path = _Growable((), np.int64)
        self._explore_count = _Growable((), np.float64)
        self.n_pairs = 0
        self.n_equal = 0
        self.n_skipped = 0

    # ---------------------------------------------------------------- adding
    def path_ids(self, batch: TrajectoryBatch) -> np.ndarray:
        """Index of each trajectory of ``batch``, registering new ones. Raises ValueError when
        ``batch`` is not a batch of trajectories of this data's MDP
        (:meth:`~xpo_sim.mdp.TokenMDP.check_batch`; the round loop's own batches pass at once)."""
        batch = self.mdp.check_batch(batch)
        ids = np.empty(len(batch), dtype=np.int64)
        for i, n in enumerate(batch.lengths):
            states = batch.states[i, :n]
            actions = batch.actions[i, :n]
            key = (int(states[0]), *actions.tolist())
            k = self._index.get(key)
            if k is None:
                self._states.widen(n)
                self._actions.widen(n)
                row = np.full(self._states.data.shape[1], -1, dtype=np.int64)
                row[:n] = states
                k = self._states.append(row)
                row[:n] = actions
                self._actions.append(row)
                self._lengths.append(n)
                self._ref_logp.append(self.mdp.ref_logp[states, actions].sum())
                self._index[key] = k
            ids[i] = k
        return ids

    def _ids(self, name: str, ids) -> np.ndarray:
        """``ids`` as a 1-d int64 array of indices of registered paths, in [0, n_distinct);
        ValueError naming ``name`` otherwise (an index past the table would be read outside
        the padded arrays by the kernels)."""
        array = np.asarray(ids)
        if array.size == 0 and array.dtype == np.float64:  # np.asarray([]): an empty list
            array = array.astype(np.int64)
        if array.ndim != 1 or array.dtype == np.bool_ or not np.issubdtype(array.dtype, np.integer):
            raise ValueError(f"{name} must be a 1-d integer array of path indices (from path_ids), got "
                             f"shape {array.shape} and dtype {array.dtype}")
        bad = np.flatnonzero((array < 0) | (array >= self.n_distinct))
        if bad.size:
            raise ValueError(f"{name}[{bad[0]}] = {array[bad[0]]} is not a path index of this data: expected an "
                             f"index in [0, {self.n_distinct}) (register trajectories with path_ids first)")
        return array.astype(np.int64, copy=False)

    def _pair_ids(self, first, second, names: tuple[str, str]) -> tuple[np.ndarray, np.ndarray]:
        a, b = self._ids(names[0], first), self._ids(names[1], second)
        if a.shape != b.shape:
            raise ValueError(f"{names[0]} and {names[1]} must have one length, got {a.shape[0]} and {b.shape[0]}")
        return a, b

    def _add_weight(self, chosen: np.ndarray, rejected: np.ndarray, weight: float) -> None:
        counts = self._pair_count
        for c, r in zip(chosen.tolist(), rejected.tolist()):
            row = self._pair_row.get((c, r))
            if row is None:
                row = self._pair_ends.append((c, r))
                counts.append(0.0)
                self._pair_row[(c, r)] = row
            counts.data[row] += weight

    def add_pairs(self, chosen, rejected) -> None:
        """Record preference pairs given as path indices (chosen ≻ rejected): weight 1 on
        each (chosen_i, rejected_i); ``n_pairs`` grows by their number. ValueError naming
        ``chosen`` or ``rejected`` unless both are int arrays of one length holding indices
        of registered paths (:meth:`path_ids`)."""
        chosen, rejected = self._pair_ids(chosen, rejected, ("chosen", "rejected"))
        self._add_weight(chosen, rejected, 1.0)
        self.n_pairs += len(chosen)

    def add_equal(self, first, second) -> None:
        """Record "equal" answers (the soft label ½) for the queries (first_i, second_i),
        given as path indices: weight ½ on (first_i ≻ second_i) and ½ on (second_i ≻ first_i),
        so a DPO-type pair loss ℓ contributes ½ ℓ(h) + ½ ℓ(−h), for DPO
        −[½ log σ(h) + ½ log σ(−h)] with h = β[log(π/π_ref)(first_i) − log(π/π_ref)(second_i)].
        Each query adds 1 to ``n_pairs`` and to ``n_equal``. ValueError naming ``first`` or
        ``second`` as for :meth:`add_pairs`."""
        first, second = self._pair_ids(first, second, ("first", "second"))
        self._add_weight(first, second, 0.5)
        self._add_weight(second, first, 0.5)
        self.n_pairs += len(first)
        self.n_equal += len(first)

    def add_skipped(self, n: int) -> None:
        """Count ``n`` skipped queries: asked (they enter ``n_queries``, the query count) but
        unanswered, so nothing is stored for them. ValueError unless ``n`` is an int ≥ 0."""
        self.n_skipped += checks.integer("n", n, minimum=0)

    def add_explored(self, ids) -> None:
        """Record responses (path indices) that enter the exploration bonus; ValueError
        naming ``ids`` unless they are indices of registered paths."""
        ids = self._ids("ids", ids)
        counts = self._explore_count
        for k in ids.tolist():
            row = self._explore_row.get(k)
            if row is None:
                row = self._explore_path.append(k)
                counts.append(0.0)
                self._explore_row[k] = row
            counts.data[row] += 1.0

    # ---------------------------------------------------------------- views
    @property
    def n_distinct(self) -> int:
        """Number of distinct trajectories registered."""
        return self._lengths.size

    @property
    def n_queries(self) -> int:
        """Every query asked so far: ``n_pairs`` (answered, equal answers included) +
        ``n_skipped``."""
        return self.n_pairs + self.n_skipped

    @property
    def n_explored(self) -> int:
        return int(self._explore_count.view().sum())

    def arrays(self) -> dict[str, np.ndarray]:
        """Kernel-ready arrays (int64/float64, C-contiguous views of the stored data)."""
        ends = self._pair_ends.view()
        return dict(
            path_states=self._states.view(),
            path_actions=self._actions.view(),
            path_lengths=self._lengths.view(),
            path_ref_logp=self._ref_logp.view(),
            pair_chosen=np.ascontiguousarray(ends[:, 0]),
            pair_rejected=np.ascontiguousarray(ends[:, 1]),
            pair_count=self._pair_count.view(),
            explore_path=self._explore_path.view(),
            explore_count=self._explore_count.view(),
        )

    def batch(self) -> TrajectoryBatch:
        """Every distinct trajectory seen so far."""
        return _mark_valid(TrajectoryBatch(self._states.view(), self._actions.view(), self._lengths.view()), self.mdp)
