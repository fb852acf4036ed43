r"""Sampling trajectories and scoring them under per-state tables.

For a batch of trajectories τ_i = (s_0, a_0, …, s_{n-1}, a_{n-1}):

    log π(τ) = Σ_h log π(a_h | s_h),      r(τ) = Σ_h r(s_h, a_h).

Sampling draws s₀ ∼ ρ (or takes given prompts) and then a_h ∼ π(·|s_h) by inverse CDF
from uniforms of a ``numpy.random.Generator``: the same seed gives the same batch.
"""

from __future__ import annotations

import numpy as np

from xpo_sim import checks
from xpo_sim._kernels import trajectories as _kernels
from xpo_sim.mdp import TokenMDP, TrajectoryBatch, _mark_valid

__all__ = ["as_generator", "sample_trajectories", "trajectory_logp", "trajectory_reward"]


def as_generator(seed) -> np.random.Generator:
    """``seed`` as a Generator: an int or None seeds a new PCG64, a Generator passes through."""
    if isinstance(seed, np.random.Generator):
        return seed
    if seed is None or (isinstance(seed, (int, np.integer)) and not isinstance(seed, bool) and seed >= 0):
        return np.random.default_rng(seed)
    raise ValueError(f"seed must be an int >= 0, None or a numpy.random.Generator, got {seed!r}")


def sample_trajectories(mdp: TokenMDP, logp, n: int, seed=None, start_states=None) -> TrajectoryBatch:
    """Sample ``n`` trajectories of the policy ``logp`` (S, A).

    ``start_states``: optional int array (n,) of prompts to start from (e.g. two responses
    to the same prompt); by default s₀ ∼ ρ.
    """
    logp = mdp.check_policy(logp)
    checks.integer("n", n, minimum=0)
    rng = as_generator(seed)
    if start_states is None:
        starts = rng.choice(mdp.n_states, size=n, p=mdp.start).astype(np.int64)
    else:
        given = np.asarray(start_states)
        if given.dtype == np.bool_ or not np.issubdtype(given.dtype, np.integer):
            raise ValueError(f"start_states must be an int array of state indices, got dtype {given.dtype}")
        starts = np.ascontiguousarray(given, dtype=np.int64)
        if starts.shape != (n,):
            raise ValueError(f"start_states must have shape ({n},), got {starts.shape}")
        if n and (starts.min() < 0 or starts.max() >= mdp.n_states):
            raise ValueError(f"start_states must be state indices in [0, {mdp.n_states})")
    return _sample_paths(mdp, logp, starts, rng)


def _sample_paths(mdp: TokenMDP, logp: np.ndarray, starts: np.ndarray, rng: np.random.Generator) -> TrajectoryBatch:
    """One trajectory from each start state in ``starts`` (int64), unchecked: ``logp`` must
    be a valid float64 (S, A) policy table (the round loop's own tables are)."""
    n = starts.shape[0]
    remaining = mdp.remaining_steps(logp > -np.inf)
    width = int(remaining[starts].max()) if n else 1
    uniforms = rng.random((n, width))
    states = np.empty((n, width), dtype=np.int64)
    actions = np.empty((n, width), dtype=np.int64)
    lengths = np.empty(n, dtype=np.int64)
    _kernels.sample_paths(mdp.next_state, logp, starts, uniforms, states, actions, lengths)
    return _mark_valid(TrajectoryBatch(states, actions, lengths), mdp)


def _sum_along(table: np.ndarray, batch: TrajectoryBatch) -> np.ndarray:
    """Σ_h table[s_h, a_h] of each trajectory, unchecked: ``batch`` must be valid for the
    MDP of ``table`` (:meth:`TokenMDP.check_batch`, or built by the package itself)."""
    out = np.empty(batch.lengths.shape[0])
    _kernels.sum_along(table, batch.states, batch.actions, batch.lengths, out)
    return out


def trajectory_logp(mdp: TokenMDP, logp, batch: TrajectoryBatch) -> np.ndarray:
    """log π(τ_i) (N,) for every trajectory of ``batch`` under the per-state policy ``logp``.
    Raises ValueError when ``batch`` is not a batch of trajectories of ``mdp``
    (:meth:`~xpo_sim.mdp.TokenMDP.check_batch`)."""
    _check_mdp(mdp)
    return _sum_along(mdp.check_policy(logp), mdp.check_batch(batch))


def trajectory_reward(mdp: TokenMDP, batch: TrajectoryBatch) -> np.ndarray:
    """r(τ_i) (N,) for every trajectory of ``batch``. Raises ValueError when ``batch`` is not
    a batch of trajectories of ``mdp`` (:meth:`~xpo_sim.mdp.TokenMDP.check_batch`)."""
    _check_mdp(mdp)
    return _sum_along(mdp.reward, mdp.check_batch(batch))


def _check_mdp(mdp) -> None:
    if not isinstance(mdp, TokenMDP):
        raise ValueError(f"mdp must be a TokenMDP, got {type(mdp).__name__}")
