"""How many threads the exact sweeps use, and which sweep (serial or level-parallel) runs.

Every exact computation on a :class:`~xpo_sim.mdp.TokenMDP` is a backward or forward sweep
over its states (``xpo_sim._kernels``). On a large instance the states of one *level* (one
height above the end, see ``xpo_sim._kernels.levels``) are independent, and the sweep runs
them on several threads; the result is the same to the last bit at any thread count.

The policy:

* **A single run uses every core it may** (``len(os.sched_getaffinity(0))``, at most
  numba's ``NUMBA_NUM_THREADS``) — unless ``XPO_SIM_THREADS`` (environment) or
  :func:`set_threads` says otherwise.
* **A worker process uses one thread.** A process started by :mod:`multiprocessing` (a
  sweep's process pool, a dask worker under its nanny) defaults to 1: the sweep already runs
  one process per core, and two threads each would oversubscribe the machine.
  :func:`set_threads` applies to the process that calls it (a forked child starts from the
  default again); ``XPO_SIM_THREADS`` in the environment applies to every process that
  inherits it, workers included.
* **Small instances run serially**, whatever the thread count: below
  ``PARALLEL_MIN_PAIRS`` state-action pairs, or with levels narrower on average than
  ``PARALLEL_MIN_WIDTH`` states, starting the thread pool costs more than it saves. With one
  thread numba's thread pool is never started.

numba's thread pool, when it starts, uses a fork-safe threading layer (set when this module is
imported: TBB or numba's workqueue; not GNU OpenMP, after which a forked pool worker dies at once) unless
``NUMBA_THREADING_LAYER`` names another.

``set_threads(n)`` sets the count for this process (``None`` restores the default);
``get_threads()`` reads it.
"""

from __future__ import annotations

import multiprocessing
import os

import numpy as np

__all__ = ["set_threads", "get_threads", "max_threads", "ENV_VAR", "PARALLEL_MIN_PAIRS", "PARALLEL_MIN_WIDTH"]

ENV_VAR = "XPO_SIM_THREADS"
PARALLEL_MIN_PAIRS = 1 << 16  # 65,536 state-action pairs
PARALLEL_MIN_WIDTH = 256  # states per level, on average

_threads: int | None = None  # set_threads' value; None: the default


def max_threads() -> int:
    """The most threads a sweep can use: numba's ``NUMBA_NUM_THREADS`` (read from its
    configuration; this does not start numba's thread pool)."""
    from numba import config

    return int(config.NUMBA_NUM_THREADS)


def _available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _from_env() -> int | None:
    raw = os.environ.get(ENV_VAR, "").strip()
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{ENV_VAR}={raw!r} must be a positive integer (a thread count)") from None
    if value < 1:
        raise ValueError(f"{ENV_VAR}={raw!r} must be a positive integer (a thread count)")
    return min(value, max_threads())


def get_threads() -> int:
    """The thread count the sweeps of this process use (see the module docstring)."""
    if _threads is not None:
        return _threads
    env = _from_env()
    if env is not None:
        return env
    if multiprocessing.parent_process() is not None:  # a pool or dask worker
        return 1
    return max(1, min(_available_cores(), max_threads()))


def set_threads(n: int | None) -> int:
    """Use ``n`` threads in this process's sweeps (``None``: back to the default); returns
    the previous count. ``n`` must be an int in [1, :func:`max_threads`]."""
    global _threads
    previous = get_threads()
    if n is None:
        _threads = None
        return previous
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise ValueError(f"n (threads) must be an int in [1, {max_threads()}] or None, got {n!r}")
    if not 1 <= int(n) <= max_threads():
        raise ValueError(f"n (threads) must be in [1, {max_threads()}] (numba's NUMBA_NUM_THREADS), got {n}")
    _threads = int(n)
    return previous


def sweep_threads(mdp) -> int:
    """Threads for a sweep over ``mdp``: 1 (the serial kernels) for a small or narrow
    instance or when :func:`get_threads` is 1, else :func:`get_threads`."""
    n = get_threads()
    if n == 1 or mdp.n_state_actions < PARALLEL_MIN_PAIRS:
        return 1
    n_levels = mdp.levels[1].shape[0] - 1
    if mdp.n_states < PARALLEL_MIN_WIDTH * n_levels:
        return 1
    return n


def _choose_layer() -> None:
    """Before numba starts its thread pool: a fork-safe threading layer, unless the user
    chose one (``NUMBA_THREADING_LAYER``). numba's default prefers GNU OpenMP where it is
    installed, and a process that has run an OpenMP parallel region cannot fork: a sweep's
    process pool forked after one large solve died at once ("fork() called from a process
    already using GNU OpenMP"). ``forksafe`` takes TBB if installed, else numba's own
    workqueue; the workqueue is not safe for concurrent launches from several threads, which
    cannot happen here (the kernels hold the GIL)."""
    from numba import config
    from numba.np.ufunc import parallel

    if not parallel._is_initialized and config.THREADING_LAYER == "default" \
            and "NUMBA_THREADING_LAYER" not in os.environ:
        config.THREADING_LAYER = "forksafe"


def _reset_in_child() -> None:
    global _threads
    _threads = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_in_child)
_choose_layer()  # at import: before anything (xpo_sim or its tests) can start the pool


def parallel(mdp) -> bool:
    """Whether sweeps over ``mdp`` run level-parallel now (:func:`sweep_threads` > 1); when
    they do, numba's thread count is set to that many. The serial kernels contain no
    parallel code, so a process that only runs them never starts numba's thread pool
    (loading parallel code starts it)."""
    n = sweep_threads(mdp)
    if n == 1:
        return False
    import numba

    if numba.get_num_threads() != n:
        numba.set_num_threads(n)
    return True


# ----------------------------------------------------------------------------- the sweeps
# One entry per sweep: the serial kernel (``xpo_sim._kernels.soft``) or the level-parallel
# one (``xpo_sim._kernels.levels``), same arguments and the same numbers to the bit.


def soft_sweep(mdp, reward, beta: float, q_out, v_out, logp_out) -> None:
    """Q*, V*, log π* of ``mdp`` with the reward table ``reward`` into the outputs."""
    if parallel(mdp):
        from xpo_sim._kernels import levels

        levels.soft_levels(*mdp.levels, mdp.next_state, reward, mdp.ref_logp, beta, q_out, v_out, logp_out,
                           levels.CHUNK)
    else:
        from xpo_sim._kernels import soft

        soft.soft_by_levels(*mdp.levels, mdp.next_state, reward, mdp.ref_logp, beta, q_out, v_out, logp_out)


def evaluate_sweep(mdp, logp, tol: float, reward_out, kl_out) -> int:
    """Reward and KL to go of the policy ``logp``; −1 or the first bad state."""
    if parallel(mdp):
        from xpo_sim._kernels import levels

        return levels.evaluate_levels(*mdp.levels, mdp.next_state, mdp.reward, mdp.ref_logp, logp, tol, reward_out,
                                      kl_out, levels.CHUNK)
    from xpo_sim._kernels import soft

    return soft.evaluate_backward(mdp.next_state, mdp.reward, mdp.ref_logp, logp, tol, reward_out, kl_out)


def regret_sweep(mdp, logp, q, v, beta: float, tol: float, regret_out) -> int:
    """The regret to go G of the policy ``logp`` against (Q*, V*); −1 or the first bad state."""
    if parallel(mdp):
        from xpo_sim._kernels import levels

        return levels.regret_levels(*mdp.levels, mdp.next_state, mdp.ref_logp, logp, q, v, beta, tol, regret_out,
                                    levels.CHUNK)
    from xpo_sim._kernels import soft

    return soft.regret_backward(mdp.next_state, mdp.ref_logp, logp, q, v, beta, tol, regret_out)


def occupancy_sweep(mdp, prob, start, occ_out) -> None:
    """The probability that the policy with probabilities ``prob`` (S, A) = π(a|s) (see
    :func:`policy_probs`) visits each state, from ``start``."""
    if parallel(mdp):
        from xpo_sim._kernels import levels

        levels.occupancy_levels(*mdp.levels, *mdp.predecessors, prob, start, occ_out, levels.CHUNK)
    else:
        from xpo_sim._kernels import soft

        soft.occupancy_forward(mdp.next_state, prob, start, occ_out)


def policy_probs(logp, out=None) -> np.ndarray:
    """π = e^{log π} of a float64 C-contiguous (S, A) table, into ``out`` (a new array by
    default), by the vectorized exponential of ``_kernels.fast_exp`` (within 1 ulp of
    ``np.exp``): the table every occupancy sweep reads."""
    from xpo_sim._kernels import soft

    if out is None:
        out = np.empty(logp.shape)
    soft.policy_probs(logp, out)
    return out
