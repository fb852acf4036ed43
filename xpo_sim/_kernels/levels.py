r"""Level-parallel sweeps: the backward and forward recursions of ``_kernels.soft`` and
``_kernels.newton``, run over one level of states at a time with numba's ``prange``.

Levels. The height of a state is the longest number of steps from it to the end, over every
token (allowed or not, since every sweep reads every successor):

    height(s) = 0 if no token of s leads to a state,  else  1 + max_{a: s'(s,a) ≥ 0} height(s'(s,a)).

Every successor of s has a smaller height, so a backward recursion (V*, R, K, the regret G,
the tangent V̇) can compute all states of one height at once from the heights below, and a
forward recursion (the occupancy d, and the occupancy tangents of the Hessian-vector
product) all states of one height from the heights above. ``TokenMDP.levels`` holds the
states sorted by height (``level_order``, index order within a height) and the first
position of each height (``level_offsets``). A token tree whose responses all have the
same length has its depths as levels, each a contiguous range of state indices whose
successors are contiguous too, so the gathers V*[s'] read memory in order.

Bit-identical at any thread count. Each state's value is computed by one thread with the
same block function as the serial sweeps (``soft_block``, ``evaluate_block``,
``regret_block``, ``vdot_block``; the serial solve runs ``soft_by_levels``, the others one
block of every state), from successors that are final; no sum is split between threads.
The forward sweeps and the Newton products read the policy's probabilities π (S, A),
formed once per objective evaluation by ``_kernels.soft.policy_probs``, not log π. A forward sweep *pulls* instead of pushing: the serial occupancy sweep
adds d(u)·π(a|u) into d(s'(u,a)) for u = 0, 1, … in turn, so d(s) = ρ(s) + Σ over the
in-edges (u, a) of s in increasing (u, a) order; the parallel sweep forms exactly that sum,
in that order, from the in-edge lists ``TokenMDP.predecessors`` (sorted by u·A + a). The
results are therefore equal to the serial kernels' to the last bit, whatever the number
of threads (``tests/test_parallel_sweeps.py``).

Work is handed out in chunks of ``chunk`` states of a level (``CHUNK`` = 64 in the library; the
tests use 1 so that small random instances run every level on several threads); a level of fewer than
``MIN_PARALLEL_CHUNKS`` chunks runs on the calling thread (starting the pool costs more
than it saves). The chunking never changes a result, only who computes it.
"""

import numpy as np
from numba import njit, prange

from xpo_sim._kernels.fast_exp import fast_exp
from xpo_sim._kernels.newton import hvp_row, vdot_block
from xpo_sim._kernels.soft import evaluate_block, regret_block, soft_level, soft_work_size

NEG_INF = -np.inf
CHUNK = 64  # states per task
MIN_PARALLEL_CHUNKS = 4  # a level with fewer chunks runs serially


@njit(cache=True)
def state_heights(next_state, height_out):
    """Fill ``height_out`` (S,) with height(s) (module docstring); states are in
    topological order, so one backward sweep suffices."""
    n_states, n_actions = next_state.shape
    for s in range(n_states - 1, -1, -1):
        best = 0
        for a in range(n_actions):
            nxt = next_state[s, a]
            if nxt >= 0 and height_out[nxt] + 1 > best:
                best = height_out[nxt] + 1
        height_out[s] = best


@njit(cache=True)
def in_edges(next_state, offsets_out, state_out, action_out):
    """The in-edges of every state as CSR lists: for state t, positions
    ``offsets_out[t] … offsets_out[t+1]`` of ``state_out``/``action_out`` hold the (u, a)
    with s'(u, a) = t, in increasing order of u·A + a. ``offsets_out`` has length S + 1; the
    two lists have one entry per transition that does not end the episode."""
    n_states, n_actions = next_state.shape
    for t in range(n_states + 1):
        offsets_out[t] = 0
    for u in range(n_states):
        for a in range(n_actions):
            nxt = next_state[u, a]
            if nxt >= 0:
                offsets_out[nxt + 1] += 1
    for t in range(n_states):
        offsets_out[t + 1] += offsets_out[t]
    fill = offsets_out[:n_states].copy()
    for u in range(n_states):  # increasing u, then a: each list comes out sorted
        for a in range(n_actions):
            nxt = next_state[u, a]
            if nxt >= 0:
                k = fill[nxt]
                state_out[k] = u
                action_out[k] = a
                fill[nxt] = k + 1


# ----------------------------------------------------------------------------- backward sweeps


@njit(cache=True, parallel=True)
def soft_levels(level_order, level_offsets, next_state, reward, ref_logp, beta, q_out, v_out, logp_out, chunk):
    """``soft_backward`` level by level (heights 0, 1, …), each level's states in parallel."""
    width = soft_work_size(reward.shape[1])
    for level in range(level_offsets.shape[0] - 1):
        lo = level_offsets[level]
        hi = level_offsets[level + 1]
        n_chunks = (hi - lo + chunk - 1) // chunk
        if n_chunks < MIN_PARALLEL_CHUNKS:
            soft_level(level_order, lo, hi, next_state, reward, ref_logp, beta, q_out, v_out, logp_out,
                       np.empty(width))
        else:
            for c in prange(n_chunks):
                work = np.empty(width)
                soft_level(level_order, lo + c * chunk, min(lo + (c + 1) * chunk, hi), next_state, reward, ref_logp,
                           beta, q_out, v_out, logp_out, work)


@njit(cache=True)
def _smallest_bad(chunk_bad, bad):
    """min(bad, the chunks' bad states), −1 meaning none."""
    for c in range(chunk_bad.shape[0]):
        if chunk_bad[c] >= 0 and (bad < 0 or chunk_bad[c] < bad):
            bad = chunk_bad[c]
    return bad


@njit(cache=True, parallel=True)
def evaluate_levels(level_order, level_offsets, next_state, reward, ref_logp, logp, tol, reward_out, kl_out, chunk):
    """``evaluate_backward`` level by level; returns −1 or the smallest bad state (the
    serial sweep's answer)."""
    bad = -1
    for level in range(level_offsets.shape[0] - 1):
        lo = level_offsets[level]
        hi = level_offsets[level + 1]
        n_chunks = (hi - lo + chunk - 1) // chunk
        chunk_bad = np.full(n_chunks, -1, dtype=np.int64)
        if n_chunks < MIN_PARALLEL_CHUNKS:
            chunk_bad[0] = evaluate_block(level_order, lo, hi, next_state, reward, ref_logp, logp, tol, reward_out,
                                          kl_out)
        else:
            for c in prange(n_chunks):
                chunk_bad[c] = evaluate_block(level_order, lo + c * chunk, min(lo + (c + 1) * chunk, hi), next_state,
                                              reward, ref_logp, logp, tol, reward_out, kl_out)
        bad = _smallest_bad(chunk_bad, bad)
    return bad


@njit(cache=True, parallel=True)
def regret_levels(level_order, level_offsets, next_state, ref_logp, logp, q, v, beta, tol, regret_out, chunk):
    """``regret_backward`` level by level; returns −1 or the smallest bad state."""
    bad = -1
    for level in range(level_offsets.shape[0] - 1):
        lo = level_offsets[level]
        hi = level_offsets[level + 1]
        n_chunks = (hi - lo + chunk - 1) // chunk
        chunk_bad = np.full(n_chunks, -1, dtype=np.int64)
        if n_chunks < MIN_PARALLEL_CHUNKS:
            chunk_bad[0] = regret_block(level_order, lo, hi, next_state, ref_logp, logp, q, v, beta, tol, regret_out)
        else:
            for c in prange(n_chunks):
                chunk_bad[c] = regret_block(level_order, lo + c * chunk, min(lo + (c + 1) * chunk, hi), next_state,
                                            ref_logp, logp, q, v, beta, tol, regret_out)
        bad = _smallest_bad(chunk_bad, bad)
    return bad


@njit(cache=True, parallel=True)
def vdot_levels(level_order, level_offsets, next_state, prob, tangent, vdot_out, chunk):
    """The tangent sweep V̇ level by level."""
    for level in range(level_offsets.shape[0] - 1):
        lo = level_offsets[level]
        hi = level_offsets[level + 1]
        n_chunks = (hi - lo + chunk - 1) // chunk
        if n_chunks < MIN_PARALLEL_CHUNKS:
            vdot_block(level_order, lo, hi, next_state, prob, tangent, vdot_out)
        else:
            for c in prange(n_chunks):
                vdot_block(level_order, lo + c * chunk, min(lo + (c + 1) * chunk, hi), next_state, prob, tangent,
                           vdot_out)


# ----------------------------------------------------------------------------- forward sweeps


@njit(cache=True)
def occupancy_pull(order, lo, hi, pred_offsets, pred_state, pred_action, prob, start, occ_out):
    """For the states order[lo:hi]: d(s) = ρ(s) + Σ_{(u,a) → s} d(u)·π(a|u), the in-edges in
    increasing (u, a) order — the serial push sweep's sum, term by term (it skips a state u
    with d(u) = 0 and a token with π = 0, and so does this). ``prob``: π (S, A)."""
    for i in range(lo, hi):
        s = order[i]
        acc = start[s]
        for e in range(pred_offsets[s], pred_offsets[s + 1]):
            u = pred_state[e]
            d = occ_out[u]
            if d == 0.0:
                continue
            p = prob[u, pred_action[e]]
            if p > 0.0:
                acc += d * p
        occ_out[s] = acc


@njit(cache=True, parallel=True)
def occupancy_levels(level_order, level_offsets, pred_offsets, pred_state, pred_action, prob, start, occ_out, chunk):
    """``occupancy_forward`` level by level, from the highest level down, by pulling."""
    for level in range(level_offsets.shape[0] - 2, -1, -1):
        lo = level_offsets[level]
        hi = level_offsets[level + 1]
        n_chunks = (hi - lo + chunk - 1) // chunk
        if n_chunks < MIN_PARALLEL_CHUNKS:
            occupancy_pull(level_order, lo, hi, pred_offsets, pred_state, pred_action, prob, start, occ_out)
        else:
            for c in prange(n_chunks):
                occupancy_pull(level_order, lo + c * chunk, min(lo + (c + 1) * chunk, hi), pred_offsets, pred_state,
                               pred_action, prob, start, occ_out)


@njit(cache=True)
def hvp_forward_pull(order, lo, hi, pred_offsets, pred_state, pred_action, next_state, prob, beta, tangent, vdot,
                     occ_u, occ_c, occdot, hv_out):
    """The fused forward sweep of ``_kernels.newton.reward_hvp`` in pull form, for the
    states order[lo:hi].

    The serial sweep, at state u with occupancies (μ_u, μ_c, μ̇)(u) not all 0, takes each
    token a with p = π(a|u) > 0 (``prob``), q̇ = ṙ(u,a) + V̇(s'), and forms d_u = μ_u p,
    d_c = μ_c p, ḋ = μ̇ p + d_c (q̇ − V̇(u))/β; it subtracts (d_u + ḋ)/β from hv(u,a) and
    adds (d_u, d_c, ḋ) to the occupancies of s'. Here a state first adds the terms of its
    in-edges, recomputed by the same expressions from the predecessors' final occupancies,
    in the serial order, then does its own row."""
    for i in range(lo, hi):
        s = order[i]
        mu_u = occ_u[s]
        mu_c = occ_c[s]
        mu_dot = occdot[s]
        for e in range(pred_offsets[s], pred_offsets[s + 1]):
            u = pred_state[e]
            pu = occ_u[u]
            pc = occ_c[u]
            pdot = occdot[u]
            if pu == 0.0 and pc == 0.0 and pdot == 0.0:
                continue
            p = prob[u, pred_action[e]]
            if p == 0.0:
                continue
            q_dot = tangent[u, pred_action[e]] + vdot[s]
            d_c = pc * p
            mu_u += pu * p
            mu_c += d_c
            mu_dot += pdot * p + d_c * (q_dot - vdot[u]) / beta
        occ_u[s] = mu_u
        occ_c[s] = mu_c
        occdot[s] = mu_dot
        hvp_row(s, False, next_state, prob, beta, tangent, vdot, occ_u, occ_c, occdot, hv_out)


@njit(cache=True, parallel=True)
def hvp_forward_levels(level_order, level_offsets, pred_offsets, pred_state, pred_action, next_state, prob, beta,
                       tangent, vdot, occ_u, occ_c, occdot, hv_out, chunk):
    """The fused forward sweep of ``reward_hvp`` level by level, from the highest down."""
    for level in range(level_offsets.shape[0] - 2, -1, -1):
        lo = level_offsets[level]
        hi = level_offsets[level + 1]
        n_chunks = (hi - lo + chunk - 1) // chunk
        if n_chunks < MIN_PARALLEL_CHUNKS:
            hvp_forward_pull(level_order, lo, hi, pred_offsets, pred_state, pred_action, next_state, prob, beta,
                             tangent, vdot, occ_u, occ_c, occdot, hv_out)
        else:
            for c in prange(n_chunks):
                hvp_forward_pull(level_order, lo + c * chunk, min(lo + (c + 1) * chunk, hi), pred_offsets,
                                 pred_state, pred_action, next_state, prob, beta, tangent, vdot, occ_u, occ_c,
                                 occdot, hv_out)


FILL_CHUNK = 1 << 16  # entries per task of fill_tasks


@njit(cache=True, parallel=True)
def fill_tasks(out, value):
    """A control for the benchmarks: ``out`` (C-contiguous) = ``value``, in parallel chunks of
    ``FILL_CHUNK`` entries — on fresh memory, the page faults of a first touch shared among
    the threads."""
    flat = out.reshape(out.size)
    size = flat.shape[0]
    n_chunks = (size + FILL_CHUNK - 1) // FILL_CHUNK
    for c in prange(n_chunks):
        for i in range(c * FILL_CHUNK, min((c + 1) * FILL_CHUNK, size)):
            flat[i] = value


@njit(cache=True, parallel=True, fastmath={"contract"})
def exp_sum_tasks(x, n_tasks, repeats, out):
    """A control for the benchmarks: ``n_tasks`` independent tasks, each summing
    ``fast_exp`` over the (cache-resident) ``x`` ``repeats`` times, in parallel. It touches no
    main memory, so its speed-up from 1 to n threads is what the cores themselves give."""
    for task in prange(n_tasks):
        acc = 0.0
        for r in range(repeats):
            shift = r * 1e-9
            for i in range(x.shape[0]):
                acc += fast_exp(x[i] - shift)
        out[task] = acc
