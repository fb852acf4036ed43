r"""Deterministic token MDPs with a reference policy.

A :class:`TokenMDP` is four arrays over S states (in topological order) and A actions
(tokens):

* ``next_state[s, a]`` — the state reached by taking token ``a`` in state ``s``, or
  ``-1`` when the episode ends after that token. Every other entry is larger than ``s``,
  so there are no cycles and one backward sweep over ``s = S-1, …, 0`` solves any
  Bellman recursion. Responses may have different lengths.
* ``reward[s, a]`` — the reward r(s, a) collected on taking ``a`` in ``s``.
* ``ref_logp[s, a]`` — log π_ref(a|s); ``-inf`` marks a disallowed token. Each row
  normalizes: Σ_a π_ref(a|s) = 1 (to 1e-9).
* ``start[s]`` — ρ(s), the distribution over start states (prompts).
* ``features`` (optional) — φ(s, a) ∈ R^d, the features of a linear reward class
  r̂_θ(s, a) = θ·φ(s, a) (docs/theory.md, "Linear features"): a dense (S, A, d) array, or for large instances a
  scipy.sparse matrix of shape (S·A, d) whose row ``s·A + a`` is φ(s, a). Trajectory
  features are Φ(τ) = Σ_h φ(s_h, a_h).

A trajectory τ = (s₀, a₀, s₁, a₁, …) runs until ``next_state = -1``;
r(τ) = Σ_h r(s_h, a_h) and π(τ) = Π_h π(a_h | s_h). A token tree (one state per prefix),
a DAG (merged prefixes) and a bandit (one state per prompt, every token ends the
episode) are all special cases.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from xpo_sim._kernels import levels as _level_kernels
from xpo_sim._kernels import soft as _soft_kernels
from xpo_sim._kernels import trajectories as _traj_kernels

NORMALIZATION_TOL = 1e-9
POLICY_TOL = 1e-6  # how far a policy row's mass may stray from 1 (float32 policies)
# Largest allowed Σ_h |r(s_h, a_h)| along any path: a quarter of the float64 maximum, so that
# values (|Q*|, |V*|, |J| ≤ this) and their differences (V* − Q*, J* − J ≤ twice this) are finite.
MAX_ABS_PATH_REWARD = 2.0**1022

__all__ = ["TokenMDP", "TrajectoryBatch", "as_feature_matrix"]


@dataclass(frozen=True)
class TrajectoryBatch:
    """N trajectories as padded arrays.

    ``states[i, h]`` and ``actions[i, h]`` for ``h < lengths[i]``, ``-1`` beyond.
    ``states[i, 0]`` is the start state (the prompt).

    A batch built by hand is validated against its MDP (:meth:`TokenMDP.check_batch`) where
    it enters a public function; the batches the package produces itself (sampling,
    enumeration, the round loop's data) carry a mark saying for which MDP they are valid,
    hold read-only arrays, and are not checked again.
    """

    states: np.ndarray
    actions: np.ndarray
    lengths: np.ndarray

    def __len__(self) -> int:
        return int(self.lengths.shape[0])

    def __getstate__(self):
        # the validity mark is a weak reference: not pickled (an unpickled batch is checked again)
        state = dict(self.__dict__)
        state.pop("_valid_for", None)
        return state

    @property
    def start_states(self) -> np.ndarray:
        return self.states[:, 0]

    @staticmethod
    def concatenate(batches: "list[TrajectoryBatch]") -> "TrajectoryBatch":
        """One batch holding the trajectories of ``batches`` in order."""
        width = max(b.states.shape[1] for b in batches)

        def pad(array):
            return np.pad(array, ((0, 0), (0, width - array.shape[1])), constant_values=-1)

        joined = TrajectoryBatch(
            np.concatenate([pad(b.states) for b in batches]),
            np.concatenate([pad(b.actions) for b in batches]),
            np.concatenate([b.lengths for b in batches]),
        )
        owners = {id(_valid_mdp(b)) for b in batches}
        owner = _valid_mdp(batches[0]) if batches else None
        if owner is not None and len(owners) == 1:
            _mark_valid(joined, owner)
        return joined

    def take(self, indices) -> "TrajectoryBatch":
        """The trajectories at ``indices``, in that order."""
        indices = np.asarray(indices, dtype=np.int64)
        taken = TrajectoryBatch(self.states[indices], self.actions[indices], self.lengths[indices])
        owner = _valid_mdp(self)
        if owner is not None:
            _mark_valid(taken, owner)
        return taken

    def as_tuples(self) -> list[tuple[tuple[int, int], ...]]:
        """Each trajectory as a tuple of (state, action) steps (for small batches)."""
        return [
            tuple((int(s), int(a)) for s, a in zip(self.states[i, :n], self.actions[i, :n]))
            for i, n in enumerate(self.lengths)
        ]


def _valid_mdp(batch: TrajectoryBatch):
    """The MDP ``batch`` is known to be valid for (see :func:`_mark_valid`), or None."""
    ref = batch.__dict__.get("_valid_for")
    return None if ref is None else ref()


def _mark_valid(batch: TrajectoryBatch, mdp: "TokenMDP") -> TrajectoryBatch:
    """Mark a batch the package built itself (or has just checked) as valid for ``mdp``:
    its arrays become read-only (so the mark cannot go stale by writing into them) and
    :meth:`TokenMDP.check_batch` returns it without checking again."""
    for array in (batch.states, batch.actions, batch.lengths):
        array.setflags(write=False)
    object.__setattr__(batch, "_valid_for", weakref.ref(mdp))
    return batch


def _readonly(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)
    return array


def _as_real(name: str, value, dtype) -> np.ndarray:
    try:
        array = np.asarray(value)
    except (ValueError, TypeError):  # e.g. ragged nested lists
        raise ValueError(f"{name} must be a real numeric array (a rectangular table of numbers), got "
                         f"{type(value).__name__} that is not one") from None
    if array.dtype == object or not (
        np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)
    ) or array.dtype == np.bool_:
        raise ValueError(f"{name} must be a real numeric array, got dtype {array.dtype}")
    return np.array(array, dtype=dtype, order="C", copy=True)


def _check_features(features, n_states: int, n_actions: int):
    """Validated features: a read-only float64 (S, A, d) array or a float64 CSR (S·A, d)."""
    import scipy.sparse as sp

    if sp.issparse(features):
        kind = features.dtype
        if kind == np.bool_ or not (np.issubdtype(kind, np.floating) or np.issubdtype(kind, np.integer)):
            # a complex matrix would lose its imaginary part in the float64 copy
            raise ValueError(f"sparse features must be a real numeric matrix, got dtype {kind}")
        matrix = sp.csr_matrix(features, dtype=np.float64, copy=True)
        if matrix.ndim != 2 or matrix.shape[0] != n_states * n_actions or matrix.shape[1] < 1:
            raise ValueError(
                f"sparse features must have shape (S·A, d) = ({n_states * n_actions}, d >= 1), got {matrix.shape}"
            )
        bad = np.flatnonzero(~np.isfinite(matrix.data))
        if bad.size:
            row = int(np.searchsorted(matrix.indptr, bad[0], side="right") - 1)
            raise ValueError(
                f"features[{row // n_actions}, {row % n_actions}, {matrix.indices[bad[0]]}] = "
                f"{matrix.data[bad[0]]} is not finite"
            )
        matrix.sum_duplicates()
        return matrix
    array = _as_real("features", features, np.float64)
    if array.ndim != 3 or array.shape[:2] != (n_states, n_actions) or array.shape[2] < 1:
        raise ValueError(
            f"features must have shape (S, A, d) = ({n_states}, {n_actions}, d >= 1), got {array.shape}"
        )
    bad = np.argwhere(~np.isfinite(array))
    if bad.size:
        s, a, k = bad[0]
        raise ValueError(f"features[{s}, {a}, {k}] = {array[s, a, k]} is not finite")
    return _readonly(array)


def as_feature_matrix(features, n_states: int, n_actions: int):
    """Validated features (dense (S, A, d) or sparse (S·A, d)) as a CSR matrix (S·A, d)."""
    import scipy.sparse as sp

    checked = _check_features(features, n_states, n_actions)
    if sp.issparse(checked):
        return checked
    return sp.csr_matrix(checked.reshape(n_states * n_actions, -1))


class TokenMDP:
    """A deterministic token MDP with a reference policy (see the module docstring).

    Parameters
    ----------
    next_state : int array (S, A)
        Successor state, or ``-1`` for end of episode; otherwise larger than the row index.
    reward : float array (S, A)
        Finite rewards r(s, a), with Σ_h |r(s_h, a_h)| ≤ ``MAX_ABS_PATH_REWARD`` = 2^1022
        (≈ 4.5e307) along every path (through any tokens, allowed or not): then no value or
        difference of values overflows float64. Larger rewards are rejected, not clipped.
    ref_logp : float array (S, A)
        log π_ref(a|s); ``-inf`` for disallowed tokens; each row must normalize to 1e-9
        and allow at least one token.
    start : float array (S,)
        Distribution ρ over start states: non-negative, sums to 1 (to 1e-9).
    features : array (S, A, d) or scipy.sparse matrix (S·A, d), optional
        Features φ(s, a) for the linear reward class; finite. Stored as given (dense arrays
        read-only float64, sparse ones as a float64 CSR copy); :meth:`feature_matrix`
        returns the CSR form either way. Entries of disallowed tokens are never used.
    info : mapping, optional
        Free-form description of the instance (family, parameters, optimal response …).

    Raises
    ------
    ValueError
        naming the array, the rule it breaks and the first offending index.
    """

    def __init__(self, next_state, reward, ref_logp, start, info: Mapping[str, Any] | None = None,
                 features=None):
        ns = np.asarray(next_state)
        if ns.dtype == np.bool_ or not np.issubdtype(ns.dtype, np.integer):
            raise ValueError(
                f"next_state must be an integer array (S, A), got dtype {ns.dtype}"
            )
        if ns.ndim != 2:
            raise ValueError(f"next_state must be 2-D (S, A), got shape {ns.shape}")
        n_states, n_actions = ns.shape
        if n_states < 1 or n_actions < 1:
            raise ValueError(f"next_state must have at least one state and one action, got shape {ns.shape}")
        bad = np.argwhere((ns < -1) | (ns >= n_states))  # in the given dtype: a uint64 2**64-1 must not wrap to -1
        if bad.size:
            s, a = bad[0]
            raise ValueError(
                f"next_state[{s}, {a}] = {ns[s, a]} is out of range: expected -1 (end) or a "
                f"state index in [0, {n_states})"
            )
        ns = np.array(ns, dtype=np.int64, order="C", copy=True)
        reward = _as_real("reward", reward, np.float64)
        ref_logp = _as_real("ref_logp", ref_logp, np.float64)
        start = _as_real("start", start, np.float64)
        for name, arr in (("reward", reward), ("ref_logp", ref_logp)):
            if arr.shape != ns.shape:
                raise ValueError(
                    f"{name} must have the shape of next_state {ns.shape} (S, A), got {arr.shape}"
                )
        if start.shape != (n_states,):
            raise ValueError(f"start must have shape ({n_states},) (S,), got {start.shape}")

        bad = np.argwhere((ns < -1) | (ns >= n_states))
        if bad.size:
            s, a = bad[0]
            raise ValueError(
                f"next_state[{s}, {a}] = {ns[s, a]} is out of range: expected -1 (end) or a "
                f"state index in [0, {n_states})"
            )
        rows = np.arange(n_states)[:, None]
        bad = np.argwhere((ns >= 0) & (ns <= rows))
        if bad.size:
            s, a = bad[0]
            raise ValueError(
                f"next_state[{s}, {a}] = {ns[s, a]} does not increase the state index: states "
                f"must be in topological order (every transition goes to a larger index; a "
                f"non-increasing transition could form a cycle)"
            )

        bad = np.argwhere(~np.isfinite(reward))
        if bad.size:
            s, a = bad[0]
            raise ValueError(f"reward[{s}, {a}] = {reward[s, a]} is not finite")
        bound = np.empty(n_states)
        _soft_kernels.max_abs_path_sum(ns, reward, bound)
        worst = int(np.argmax(bound))  # nan-free: rewards are finite, inf compares
        if not bound[worst] <= MAX_ABS_PATH_REWARD:
            raise ValueError(
                f"reward is too large: the absolute rewards along a path from state {worst} sum to "
                f"{bound[worst]!r}, more than 2**1022 = {MAX_ABS_PATH_REWARD:.4g} (a quarter of the "
                f"float64 maximum), so values and their differences could overflow; rescale the rewards"
            )

        bad = np.argwhere(np.isnan(ref_logp) | (ref_logp == np.inf))
        if bad.size:
            s, a = bad[0]
            raise ValueError(
                f"ref_logp[{s}, {a}] = {ref_logp[s, a]}: log-probabilities must be finite or -inf"
            )
        allowed = ref_logp > -np.inf
        empty = np.flatnonzero(~allowed.any(axis=1))
        if empty.size:
            raise ValueError(
                f"ref_logp row {empty[0]} allows no action (all -inf): every state needs at least "
                f"one allowed token"
            )
        with np.errstate(over="ignore"):
            row_mass = np.exp(ref_logp).sum(axis=1)
        bad = np.flatnonzero(np.abs(row_mass - 1.0) > NORMALIZATION_TOL)
        if bad.size:
            s = bad[0]
            raise ValueError(
                f"ref_logp row {s} does not normalize: sum of exp = {row_mass[s]!r}, expected 1 "
                f"within {NORMALIZATION_TOL}"
            )

        bad = np.flatnonzero(~np.isfinite(start) | (start < 0))
        if bad.size:
            raise ValueError(
                f"start[{bad[0]}] = {start[bad[0]]}: start must be a probability distribution "
                f"(finite, non-negative)"
            )
        if abs(start.sum() - 1.0) > NORMALIZATION_TOL:
            raise ValueError(
                f"start must be a probability distribution: it sums to {start.sum()!r}, expected 1 "
                f"within {NORMALIZATION_TOL}"
            )

        self.next_state = _readonly(ns)
        self.reward = _readonly(reward)
        self.ref_logp = _readonly(ref_logp)
        self.start = _readonly(start)
        self.allowed = _readonly(np.ascontiguousarray(allowed))
        if info is not None and not isinstance(info, Mapping):
            raise ValueError(f"info must be a mapping (a dict) or None, got {type(info).__name__}")
        self.info = dict(info or {})
        self.features = None if features is None else _check_features(features, n_states, n_actions)
        self._feature_csr = None
        height = np.empty(n_states, dtype=np.int64)
        _level_kernels.state_heights(ns, height)
        order = np.argsort(height, kind="stable")  # by height, index order within a height
        offsets = np.searchsorted(height[order], np.arange(int(height[order[-1]]) + 2))
        self.levels = (_readonly(order.astype(np.int64)), _readonly(offsets.astype(np.int64)))
        self._predecessors = None

    # ------------------------------------------------------------ sweep layout
    levels: tuple[np.ndarray, np.ndarray]
    """``(level_order, level_offsets)``: the states sorted by height (the longest number
    of steps to the end over every token; index order within a height), and the position in
    ``level_order`` where each height starts (length = number of heights + 1). Every
    successor of a state has a smaller height, so the states of one level depend only on
    the levels before it (``xpo_sim._kernels.levels``). Computed once, with the MDP."""

    @property
    def predecessors(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(offsets, states, actions)``: the in-edges of every state as CSR lists, those
        of state t at positions ``offsets[t] … offsets[t+1]``, sorted by ``u·A + a`` (the
        forward sweeps pull along them, ``xpo_sim._kernels.levels``). Built on first use
        (16 bytes per transition) and kept."""
        if self._predecessors is None:
            n_edges = int(np.count_nonzero(self.next_state >= 0))
            offsets = np.empty(self.n_states + 1, dtype=np.int64)
            states = np.empty(n_edges, dtype=np.int64)
            actions = np.empty(n_edges, dtype=np.int64)
            _level_kernels.in_edges(self.next_state, offsets, states, actions)
            self._predecessors = (_readonly(offsets), _readonly(states), _readonly(actions))
        return self._predecessors

    # --------------------------------------------------------------- features
    @property
    def n_features(self) -> int:
        """d, the feature dimension (0 when the instance has no features)."""
        if self.features is None:
            return 0
        return int(self.features.shape[-1])

    def feature_matrix(self):
        """φ as a scipy.sparse CSR matrix of shape (S·A, d), row ``s·A + a`` = φ(s, a).
        Raises ValueError when the instance has no features."""
        if self.features is None:
            raise ValueError("this TokenMDP has no features: pass features=... (S, A, d) when building it")
        if self._feature_csr is None:
            import scipy.sparse as sp

            self._feature_csr = (self.features if sp.issparse(self.features)
                                 else sp.csr_matrix(self.features.reshape(self.n_state_actions, -1)))
        return self._feature_csr

    # ------------------------------------------------------------------ sizes
    @property
    def n_states(self) -> int:
        return int(self.next_state.shape[0])

    @property
    def n_actions(self) -> int:
        return int(self.next_state.shape[1])

    @property
    def n_state_actions(self) -> int:
        """Number of state-action pairs S·A (`n_pairs` elsewhere means preference pairs)."""
        return int(self.next_state.size)

    @property
    def start_states(self) -> np.ndarray:
        """Indices of the states with ρ(s) > 0 (the prompts)."""
        return np.flatnonzero(self.start > 0)

    def remaining_steps(self, allowed: np.ndarray | None = None) -> np.ndarray:
        """Longest number of steps to the end from each state, over ``allowed`` tokens
        (default: those π_ref allows)."""
        allowed = self.allowed if allowed is None else np.ascontiguousarray(allowed, dtype=np.bool_)
        out = np.empty(self.n_states, dtype=np.int64)
        _soft_kernels.longest_paths(self.next_state, allowed, out)
        return out

    @property
    def horizon(self) -> int:
        """Length of the longest trajectory π_ref can produce from a start state."""
        return int(self.remaining_steps()[self.start_states].max())

    @property
    def n_trajectories(self) -> int | float:
        """Number of trajectories π_ref can produce from the start states (an exact int
        below 2**53; a float approximation above)."""
        counts = np.empty(self.n_states, dtype=np.float64)
        _soft_kernels.count_paths(self.next_state, self.allowed, counts)
        total = float(counts[self.start_states].sum())
        return int(total) if total < 2.0**53 else total

    def trajectories(self, max_count: int = 1_000_000) -> TrajectoryBatch:
        """Every trajectory π_ref can produce, grouped by start state in order of state
        index, then in lexicographic order of tokens.

        Raises ValueError when there are more than ``max_count``.
        """
        count = self.n_trajectories
        if count > max_count:
            raise ValueError(
                f"this MDP has {count} trajectories, more than max_count={max_count}; "
                f"enumeration is meant for small instances"
            )
        width = max(self.horizon, 1)
        states = np.empty((count, width), dtype=np.int64)
        actions = np.empty((count, width), dtype=np.int64)
        lengths = np.empty(count, dtype=np.int64)
        written = _traj_kernels.enumerate_paths(
            self.next_state, self.allowed, self.start_states.astype(np.int64), states, actions, lengths
        )
        assert written == count
        return _mark_valid(TrajectoryBatch(states, actions, lengths), self)

    # -------------------------------------------------------------- policies
    def check_policy(self, logp, name: str = "logp", tol: float = POLICY_TOL) -> np.ndarray:
        """Return a per-state policy table as float64 C-contiguous (S, A), or raise
        ValueError if its shape is wrong, it has NaN/+inf entries, or a row does not
        normalize within ``tol``."""
        array = np.asarray(logp)
        if array.shape != (self.n_states, self.n_actions):
            raise ValueError(
                f"{name} must have shape (S, A) = {(self.n_states, self.n_actions)}, got {array.shape}"
            )
        array = _as_real(name, array, np.float64)
        bad = np.argwhere(np.isnan(array) | (array == np.inf))
        if bad.size:
            s, a = bad[0]
            raise ValueError(f"{name}[{s}, {a}] = {array[s, a]}: log-probabilities must be finite or -inf")
        row_mass = np.exp(array).sum(axis=1)
        bad = np.flatnonzero(np.abs(row_mass - 1.0) > tol)
        if bad.size:
            s = bad[0]
            raise ValueError(
                f"{name} row {s} is not a distribution: sum of exp = {row_mass[s]!r}, expected 1 within {tol}"
            )
        return array

    def check_batch(self, batch, name: str = "batch") -> TrajectoryBatch:
        """Return ``batch`` as a :class:`TrajectoryBatch` of this MDP (int64 C-contiguous
        read-only copies of its arrays), or raise ValueError naming ``name``, the rule it
        breaks and the first offending trajectory: the arrays must be integer, states (N, W)
        and actions (N, W) with lengths (N,) in [1, W]; every step's state and action must be
        an index of this MDP; each next state must be ``next_state`` of the step before, and
        the last step must end the episode (``next_state = -1``).

        This is the one check of a batch, done where a batch enters a public function; the
        numba kernels behind it read the arrays unchecked. Batches the package built for
        this MDP (sampling, enumeration, the data of a run) are returned at once."""
        if isinstance(batch, TrajectoryBatch) and _valid_mdp(batch) is self:
            return batch
        return _validate_batch(self, batch, name)

    def __repr__(self) -> str:
        family = self.info.get("family", "custom")
        return (
            f"TokenMDP({family}: S={self.n_states}, A={self.n_actions}, "
            f"prompts={self.start_states.size}, horizon={self.horizon})"
        )


def _validate_batch(mdp: TokenMDP, batch, name: str) -> TrajectoryBatch:
    """The full check of :meth:`TokenMDP.check_batch` (a batch not known to be valid)."""
    if not isinstance(batch, TrajectoryBatch):
        raise ValueError(f"{name} must be a TrajectoryBatch, got {type(batch).__name__}")
    arrays = {}
    for field_name in ("states", "actions", "lengths"):
        array = np.asarray(getattr(batch, field_name))
        if array.dtype == np.bool_ or not np.issubdtype(array.dtype, np.integer):
            raise ValueError(f"{name}.{field_name} must be an integer array, got dtype {array.dtype}")
        arrays[field_name] = array
    states, actions, lengths = arrays["states"], arrays["actions"], arrays["lengths"]
    if states.ndim != 2 or actions.shape != states.shape or lengths.shape != states.shape[:1]:
        raise ValueError(f"{name} must hold states (N, W), actions (N, W) and lengths (N,), got shapes "
                         f"{states.shape}, {actions.shape} and {lengths.shape}")
    n, width = states.shape
    # compare in the arrays' own dtype (a uint64 2**64-1 must not wrap to -1)
    bad = np.flatnonzero((lengths < 1) | (lengths > width))
    if bad.size:
        raise ValueError(f"{name}.lengths[{bad[0]}] = {lengths[bad[0]]} is outside [1, W = {width}]")
    steps = np.arange(width)[None, :] < lengths[:, None]
    for field_name, array, size in (("states", states, mdp.n_states), ("actions", actions, mdp.n_actions)):
        bad = np.argwhere(steps & ((array < 0) | (array >= size)))
        if bad.size:
            i, h = bad[0]
            raise ValueError(f"{name}.{field_name}[{i}, {h}] = {array[i, h]} is out of range: expected an "
                             f"index in [0, {size}) (this MDP has {size} {field_name})")
    states = np.array(states, dtype=np.int64, order="C", copy=True)
    actions = np.array(actions, dtype=np.int64, order="C", copy=True)
    lengths = np.array(lengths, dtype=np.int64, order="C", copy=True)
    if n == 0:
        return _mark_valid(TrajectoryBatch(states, actions, lengths), mdp)
    following = np.where(steps, mdp.next_state[np.where(steps, states, 0), np.where(steps, actions, 0)], -2)
    # step h + 1 must be the successor of step h, and the last step must end the episode
    wrong = np.argwhere(steps[:, 1:] & (following[:, :-1] != states[:, 1:]))
    last = following[np.arange(n), lengths - 1]
    unfinished = np.flatnonzero(last != -1)
    if wrong.size:
        i, h = wrong[0]
        reached = following[i, h]
        raise ValueError(
            f"{name}: trajectory {i} does not follow next_state: step {h} takes action {actions[i, h]} in "
            f"state {states[i, h]}, which leads to "
            + ("the end of the episode" if reached == -1 else f"state {reached}")
            + f", but step {h + 1} is in state {states[i, h + 1]}")
    if unfinished.size:
        i = unfinished[0]
        h = lengths[i] - 1
        raise ValueError(
            f"{name}: trajectory {i} stops after {lengths[i]} steps in the middle of the episode: action "
            f"{actions[i, h]} in state {states[i, h]} leads to state {last[i]}, not to the end "
            f"(next_state = -1)")
    return _mark_valid(TrajectoryBatch(states, actions, lengths), mdp)
