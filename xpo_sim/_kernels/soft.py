"""Numba kernels for exact computations on deterministic token MDPs.

Arrays in, arrays out; no validation here (the wrappers in ``xpo_sim.soft`` and
``xpo_sim.mdp`` coerce dtypes and check shapes). States are in topological order:
``next_state[s, a]`` is ``-1`` (the episode ends) or an index larger than ``s``, so one
backward sweep (s = S-1 … 0) solves any backward recursion and one forward sweep any
forward recursion.

Soft Bellman backup (``soft_backward``)::

    Q*(s,a) = r(s,a) + V*(s'),            V*(end) = 0
    V*(s)   = β log Σ_a π_ref(a|s) exp(Q*(s,a)/β)     (max-shifted log-sum-exp)
    log π*(a|s) = log π_ref(a|s) + Q*(s,a)/β − V*(s)/β

Policy evaluation (``evaluate_backward``), for any per-state policy π::

    R(s) = Σ_a π(a|s) [ r(s,a) + R(s') ]                          (expected reward to go)
    K(s) = Σ_a π(a|s) [ log π(a|s) − log π_ref(a|s) + K(s') ]     (KL to π_ref to go)

Occupancy (``occupancy_forward``): d(s) = ρ(s) + Σ_{(u,a): s'(u,a)=s} d(u) π(a|u).

The two backward sweeps that every objective evaluation runs (``soft_backward``,
``evaluate_backward``) take their exponentials from ``fast_exp`` (``_kernels/fast_exp.py``,
within 1 ulp of ``np.exp``) in a loop of its own, which LLVM vectorizes; libm's scalar
``exp`` would be called once per pair.
"""

import numpy as np
from numba import njit

from xpo_sim._kernels.fast_exp import fast_exp, mul_add

NEG_INF = -np.inf


# ``reassoc``/``contract`` only: lets LLVM reorder sums and fuse multiply-adds, but keeps
# IEEE infinities and NaNs (``fastmath=True`` would turn the −inf of a masked token into NaN).
FAST = {"reassoc", "contract"}


@njit(cache=True, fastmath=FAST)
def soft_backward(next_state, reward, ref_logp, beta, q_out, v_out, logp_out):
    """Fill ``q_out`` (S,A), ``v_out`` (S,), ``logp_out`` (S,A) with Q*, V*, log π*.

    A disallowed token (ref_logp = −inf) needs no branch: its x = −inf contributes
    exp(−inf) = 0 to the sum and gets log π* = −inf. Every row allows some token.
    Per state: one pass computes Q and x = log π_ref + Q/β (kept in ``logp_out``) and the
    row max; one vectorized pass sums exp(x − max); one subtracts the log-sum-exp.
    """
    n_states, n_actions = reward.shape
    inv_beta = 1.0 / beta
    for s in range(n_states - 1, -1, -1):
        m = NEG_INF
        for a in range(n_actions):
            nxt = next_state[s, a]
            q = reward[s, a]
            if nxt >= 0:
                q += v_out[nxt]
            q_out[s, a] = q
            x = mul_add(ref_logp[s, a], q, inv_beta)
            logp_out[s, a] = x
            m = max(m, x)
        total = 0.0
        for a in range(n_actions):
            total += fast_exp(logp_out[s, a] - m)
        lse = m + np.log(total)
        v_out[s] = beta * lse
        for a in range(n_actions):
            logp_out[s, a] -= lse


@njit(cache=True, fastmath=FAST)
def evaluate_backward(next_state, reward, ref_logp, logp, tol, reward_out, kl_out):
    """Fill ``reward_out`` (S,) with R(s) and ``kl_out`` (S,) with K(s) for policy ``logp``.

    Tokens with ``logp = -inf`` carry no mass and contribute nothing. A token with mass
    where ``ref_logp = -inf`` makes K infinite (π is not absolutely continuous).
    Validates as it goes: returns −1, or the first state whose row has a NaN/+inf entry
    or does not sum to 1 within ``tol`` (the caller then explains the error).
    Per state: one vectorized pass computes π(a|s) = exp(logp) into a row buffer (and
    counts NaN/+inf entries), a second accumulates R and K.
    """
    n_states, n_actions = reward.shape
    bad = -1
    p_row = np.empty(n_actions)
    for s in range(n_states - 1, -1, -1):
        mass = 0.0
        n_bad = 0
        for a in range(n_actions):
            lp = logp[s, a]
            n_bad += 0 if lp < np.inf else 1  # NaN or +inf
            p = fast_exp(lp)
            p_row[a] = p
            mass += p
        r_acc = 0.0
        kl_acc = 0.0
        for a in range(n_actions):
            p = p_row[a]
            nxt = next_state[s, a]
            j = max(nxt, 0)
            r_next = reward_out[j] if nxt >= 0 else 0.0
            kl_next = kl_out[j] if nxt >= 0 else 0.0
            r_acc += p * (reward[s, a] + r_next)
            term = p * (logp[s, a] - ref_logp[s, a] + kl_next)
            kl_acc += term if p > 0.0 else 0.0
        if n_bad > 0 or abs(mass - 1.0) > tol:
            bad = s
        reward_out[s] = r_acc
        kl_out[s] = kl_acc
    return bad


@njit(cache=True)
def occupancy_forward(next_state, logp, start, occ_out):
    """Fill ``occ_out`` (S,) with the probability that a trajectory of π visits each state."""
    n_states, n_actions = logp.shape
    for s in range(n_states):
        occ_out[s] = start[s]
    for s in range(n_states):
        d = occ_out[s]
        if d == 0.0:
            continue
        for a in range(n_actions):
            nxt = next_state[s, a]
            if nxt >= 0 and logp[s, a] > NEG_INF:
                occ_out[nxt] += d * np.exp(logp[s, a])


@njit(cache=True)
def longest_paths(next_state, allowed, length_out):
    """Fill ``length_out`` (S,) with the largest number of steps to the end from each
    state, following only actions with ``allowed[s, a]``; 0 where none is allowed."""
    n_states, n_actions = next_state.shape
    for s in range(n_states - 1, -1, -1):
        best = 0
        for a in range(n_actions):
            if not allowed[s, a]:
                continue
            nxt = next_state[s, a]
            steps = 1
            if nxt >= 0:
                steps += length_out[nxt]
            if steps > best:
                best = steps
        length_out[s] = best


@njit(cache=True)
def count_paths(next_state, allowed, count_out):
    """Fill ``count_out`` (S,) (float64) with the number of complete trajectories from
    each state that follow only ``allowed`` actions (exact below 2**53)."""
    n_states, n_actions = next_state.shape
    for s in range(n_states - 1, -1, -1):
        total = 0.0
        for a in range(n_actions):
            if not allowed[s, a]:
                continue
            nxt = next_state[s, a]
            if nxt >= 0:
                total += count_out[nxt]
            else:
                total += 1.0
        count_out[s] = total


@njit(cache=True)
def optimal_mass(next_state, reward, allowed, logp, tol, best_out, mass_out):
    """Fill ``best_out`` (S,) with the largest reward to go over allowed tokens and
    ``mass_out`` (S,) with the probability that policy ``logp`` completes a reward-maximizing
    trajectory from each state (an action counts as optimal when its value is within
    ``tol`` of the best)."""
    n_states, n_actions = reward.shape
    for s in range(n_states - 1, -1, -1):
        best = NEG_INF
        for a in range(n_actions):
            if allowed[s, a]:
                nxt = next_state[s, a]
                value = reward[s, a]
                if nxt >= 0:
                    value += best_out[nxt]
                if value > best:
                    best = value
        best_out[s] = best
        mass = 0.0
        for a in range(n_actions):
            if allowed[s, a] and logp[s, a] > NEG_INF:
                nxt = next_state[s, a]
                value = reward[s, a]
                follow = 1.0
                if nxt >= 0:
                    value += best_out[nxt]
                    follow = mass_out[nxt]
                if value >= best - tol:
                    mass += np.exp(logp[s, a]) * follow
        mass_out[s] = mass
