"""Numba kernels for exact computations on deterministic token MDPs.

Arrays in, arrays out; no validation here (the wrappers in ``xpo_sim.soft`` and
``xpo_sim.mdp`` coerce dtypes and check shapes). States are in topological order:
``next_state[s, a]`` is ``-1`` (the episode ends) or an index larger than ``s``, so one
backward sweep (s = S-1 … 0) solves any backward recursion and one forward sweep any
forward recursion.

Soft Bellman backup (``soft_backward``)::

    Q*(s,a) = r(s,a) + V*(s'),            V*(end) = 0
    V*(s)   = β log Σ_a π_ref(a|s) exp(Q*(s,a)/β)
    log π*(a|s) = log π_ref(a|s) + (Q*(s,a) − V*(s))/β

evaluated per state, with m = max_a Q*(s,a) and d_a = (Q*(s,a) − m)/β ≤ 0 over the allowed
tokens (π_ref(a|s) > 0), as

    V*(s) = m + β·L,   L = log Σ_a π_ref(a|s) e^{d_a},   log π*(a|s) = log π_ref(a|s) + d_a − L,

where L is computed in one of three ways, chosen per state by the spread
δ = (max_a Q* − min_a Q*)/β over the allowed tokens:

* δ > 1 (the common case: β small against the reward differences) — max-shifted
  log-sum-exp, x_a = log π_ref + d_a, M = max_a x_a, L = M + log Σ_a e^{x_a − M}. Its
  absolute error is ~ε·(|M| + log A), so V* has error ~ε·β·(|log π_ref| + log A) ≤
  ε·spread·(…): relative precision.
* 2⁻²⁷ < δ ≤ 1 — L = log1p(Σ_a π_ref(a|s)·expm1(d_a)) (π_ref normalized to sum 1). The
  log-sum-exp form would cancel here: L is of size δ while M and log Σ are of size
  |log π_ref|, so β·L lost log π_ref/δ of its digits (at β = 1e14 and rewards ~1 every digit:
  J* came out 0). The expm1 terms all have the sign of d_a ≤ 0, 1 + Σ ≥ e^{−1}, so the sum
  and log1p keep relative precision.
* δ ≤ 2⁻²⁷ (β enormous against the spread; also every state with a single allowed token or
  equal Q*) — the cumulant expansion β·L = μ + σ²/(2β) with μ = E_ref[Q* − m] and
  σ² = Var_ref[Q*]: the next term, κ₃/(6β²), is below δ²/6 ≤ 2⁻⁵⁶ of the spread. No
  exponential, and no subnormal (Q* − m)/β enters V*.

V*(s) = m + β·L never overflows: d_a ≤ 0, e^{d_a} underflows to 0 at worst, and
0 ≥ β·L ≥ −min(spread, β·|log π_ref(a*|s)|) (Jensen; a* the arg max). (The common case
forms Q*/β once, for speed, and falls back to d where that overflows.) As β → 0 (β ≥ ``checks.BETA_MIN``),
V* = m to the last bit and π* puts all its mass on the arg max (ties: in proportion to π_ref).

Policy evaluation (``evaluate_backward``), for any per-state policy π::

    R(s) = Σ_a π(a|s) [ r(s,a) + R(s') ]                          (expected reward to go)
    K(s) = Σ_a π(a|s) [ log π(a|s) − log π_ref(a|s) + K(s') ]     (KL to π_ref to go)

Occupancy (``occupancy_forward``): d(s) = ρ(s) + Σ_{(u,a): s'(u,a)=s} d(u) π(a|u).

Regret (``regret_backward``), for any per-state policy π against the solution (Q*, V*)::

    G(s) = Σ_a [ β·(π(a|s)·t_a − π(a|s) + π*(a|s)) + π(a|s)·G(s') ],
    t_a = log π(a|s) − log π*(a|s) = (log π(a|s) − log π_ref(a|s)) + (V*(s) − Q*(s,a))/β,

where π·t − π + π* = π·g(t) with g(t) = t − 1 + e^{−t} ≥ 0 where π > 0, and = π* ≥ 0 where
π = 0; the row sums to KL(π(·|s) ‖ π*(·|s)) − Σ_a π + Σ_a π* = KL for normalized rows, and
G(s₀) = β Σ_s d^π_{s₀}(s) KL(π(·|s) ‖ π*(·|s)) = V*(s₀) − J^π(s₀) (performance difference in a
deterministic MDP). Every term is ≥ 0. t_a is formed from Q* and V*, not from the rounded
log π*, so tiny t (large β, π ≈ π_ref) keeps its relative precision; and the sum is
stationary in V* (∂/∂V* Σ π g = (Σπ − Σπ*)/β = 0), so an error in V* enters only squared.

The two backward sweeps that every objective evaluation runs (``soft_backward``,
``evaluate_backward``) take their exponentials from ``fast_exp`` (``_kernels/fast_exp.py``,
within 1 ulp of ``np.exp``) in a loop of its own, which LLVM vectorizes; libm's scalar
``exp`` would be called once per pair.
"""

import math

import numpy as np
from numba import njit

from xpo_sim._kernels.fast_exp import fast_exp, fast_expm1, mul, mul_add, scaled_gap

NEG_INF = -np.inf
NO_ORDER = np.zeros(0, dtype=np.int64)  # a block without an order: states hi − 1 … lo


# ``reassoc``/``contract`` only: lets LLVM reorder sums and fuse multiply-adds, but keeps
# IEEE infinities and NaNs (``fastmath=True`` would turn the −inf of a masked token into NaN).
FAST = {"reassoc", "contract"}
# ``contract`` only, for the block functions that both the serial and the level-parallel
# sweeps run: without ``reassoc`` LLVM keeps every sum in source order wherever the function is
# inlined and however it is vectorized, which is what makes the two sweeps agree to the bit.
ORDERED = {"contract"}


# Per-state switches of ``soft_backward`` on the spread δ = (max Q* − min Q*)/β.
EXPM1_SPREAD = 1.0  # δ ≤ this: log1p/expm1 form (1 + Σ π_ref expm1(d) ≥ e^{-1}: no cancellation)
TAYLOR_SPREAD = 2.0**-27  # δ ≤ this: β·L = μ + σ²/(2β) (next term ≤ δ²/6 ≤ 2^-56 relative)
TINY = 2.2250738585072014e-308  # smallest normal float64
# |Q*|/β above which the common case recomputes x = log π_ref + (Q* − m)/β instead of
# log π_ref + Q*/β (whose rounding, ε·|Q*|/β ≤ 2^12·2^-53 ≈ 5e-13 below it, enters log π*)
DIRECT_SCALE = 4096.0


@njit(cache=True, fastmath=FAST)
def soft_backward(next_state, reward, ref_logp, beta, q_out, v_out, logp_out):
    """Fill ``q_out`` (S,A), ``v_out`` (S,), ``logp_out`` (S,A) with Q*, V*, log π*.

    V*(s) = m + β·L and log π* = log π_ref + d − L with m = max Q*, d = (Q* − m)/β over the
    allowed tokens; L by one of the three forms of the module docstring, chosen by the
    spread δ = (max Q* − min Q*)/β. A disallowed token (ref_logp = −inf) gets
    x = −inf + min(d, 0) = −inf, log π* = −inf, weight e^{−inf} = 0, and is left out of m,
    the spread and the moments by a select. Every row allows some token.
    Per state: one pass computes Q, its max/min and x = log π_ref + Q/β (kept in
    ``logp_out``) with its max M; in the common case δ > 1 one vectorized pass sums
    exp(x − M) and one subtracts M + log Σ (the same three passes as a plain log-sum-exp);
    where Q/β overflowed, x is first recomputed from d. The other two forms recompute
    ``logp_out`` = log π_ref + d in their own (vectorized) pass.
    """
    n_states, n_actions = reward.shape
    states = np.empty(BLOCK, dtype=np.int64)
    work = np.empty(soft_work_size(n_actions))
    count = 0  # the pending block is the states s + 1 … s + count
    for s in range(n_states - 1, -1, -1):
        depends = False
        for a in range(n_actions):
            nxt = next_state[s, a]
            depends |= (nxt >= 0) & (nxt <= s + count)
        if depends or count == BLOCK:
            soft_block(states, 0, count, next_state, reward, ref_logp, beta, q_out, v_out, logp_out, work)
            count = 0
        states[count] = s
        count += 1
    soft_block(states, 0, count, next_state, reward, ref_logp, beta, q_out, v_out, logp_out, work)


BLOCK = 64  # states per block of ``soft_block``


@njit(cache=True)
def soft_work_size(n_actions):
    """Floats of scratch :func:`soft_block` needs: two (BLOCK, A) tables and four per-row values."""
    return BLOCK * (2 * n_actions + 4)


@njit(cache=True)
def soft_by_levels(level_order, level_offsets, next_state, reward, ref_logp, beta, q_out, v_out, logp_out):
    """``soft_backward`` in level order (``TokenMDP.levels``: the states by height, lowest
    first), on the calling thread: the serial sweep the library runs. Every level is cut into
    blocks of ``BLOCK`` consecutive entries of ``level_order`` (:func:`soft_level`), which are
    independent states, so each state's numbers are those of ``soft_backward`` to the bit.
    On a tree built breadth-first a level is a contiguous range of states visited in
    increasing order, and the sweep runs 10–17 % faster than the greedy blocks of
    ``soft_backward`` (measured, 10⁶ and 10⁷ pairs; the rows are read forward and no
    dependency test runs per state)."""
    work = np.empty(soft_work_size(reward.shape[1]))
    for level in range(level_offsets.shape[0] - 1):
        soft_level(level_order, level_offsets[level], level_offsets[level + 1], next_state, reward, ref_logp, beta,
                   q_out, v_out, logp_out, work)


@njit(cache=True)
def soft_level(order, lo, hi, next_state, reward, ref_logp, beta, q_out, v_out, logp_out, work):
    """:func:`soft_block` over the states ``order[lo:hi]`` (independent, their successors
    solved), ``BLOCK`` at a time: one level, or one thread's chunk of a level."""
    for first in range(lo, hi, BLOCK):
        soft_block(order, first, min(first + BLOCK, hi), next_state, reward, ref_logp, beta, q_out, v_out, logp_out,
                   work)


@njit(cache=True, fastmath=ORDERED)
def soft_block(order, lo, hi, next_state, reward, ref_logp, beta, q_out, v_out, logp_out, work):
    """``soft_backward`` for the states ``order[lo:hi]`` (at most ``BLOCK``), none of which
    may be a successor of another, all of whose successors are solved already: the serial
    sweep cuts the states into such blocks as it goes (a state joins the pending block
    unless one of its tokens leads into it), the level-parallel one (``_kernels.levels``)
    hands out chunks of a level. Both run this, so their results are the same to the bit.
    ``work``: scratch of at least :func:`soft_work_size` floats.

    Three phases, so that the exponentials run in flat, vectorized loops over the whole
    block rather than rows of A (whose remainders ran scalar): (1) per row, Q, x = log π_ref
    + Q/β, their extremes, x − max x into the scratch, and whether the row is in the common
    case; (2) e^{…} over the scratch, and, when some row is not, π_ref = e^{log π_ref} of the
    block's rows in a second flat loop; (3) per row, V* and log π* from the row sum — or, for
    a row outside the common case, :func:`soft_row_special` (the other forms of the module
    docstring) with that row's π_ref. (A reward table that is mostly flat — the parameters a
    round's data leave at 0 — makes most rows such rows.)"""
    n_actions = reward.shape[1]
    inv_beta = 1.0 / beta
    n = hi - lo
    table = BLOCK * n_actions
    exps = work[: n * n_actions]
    ref_probs = work[table: table + n * n_actions]
    row_qmax = work[2 * table: 2 * table + BLOCK]
    row_qmin = work[2 * table + BLOCK: 2 * table + 2 * BLOCK]
    row_xmax = work[2 * table + 2 * BLOCK: 2 * table + 3 * BLOCK]
    row_spread = work[2 * table + 3 * BLOCK: 2 * table + 4 * BLOCK]  # δ, or −1 in the common case
    n_special = 0
    for j in range(n):
        s = order[lo + j]
        q_max = NEG_INF
        q_min = np.inf
        x_max = NEG_INF
        for a in range(n_actions):
            nxt = next_state[s, a]
            q = reward[s, a]
            if nxt >= 0:
                q += v_out[nxt]
            q_out[s, a] = q
            lr = ref_logp[s, a]
            allowed = lr > NEG_INF
            x = mul_add(lr, q, inv_beta)  # log π_ref + Q*/β, unshifted (see below)
            x = x if allowed else NEG_INF  # −inf + inf would be NaN
            logp_out[s, a] = x
            x_max = max(x_max, x)
            q_max = max(q_max, q if allowed else NEG_INF)
            q_min = min(q_min, q if allowed else np.inf)
        row_qmax[j] = q_max
        row_qmin[j] = q_min
        row_xmax[j] = x_max
        # the common case: δ > 1 and x = log π_ref + Q*/β finite and of moderate size (module
        # docstring): L = (M − m/β) + log Σ e^{x − M}, M = max x (M − m/β errs by ~ε·|m|/β,
        # i.e. ~ε·|m| in V*, and x itself by ~ε·|Q*|/β, which enters log π*)
        spread = mul(q_max - q_min, inv_beta)
        magnitude = mul(max(abs(q_max), abs(q_min)), inv_beta)
        common = spread > EXPM1_SPREAD and x_max < np.inf and x_max > NEG_INF and magnitude <= DIRECT_SCALE
        row_spread[j] = -1.0 if common else spread
        n_special += 0 if common else 1
        for a in range(n_actions):
            exps[j * n_actions + a] = logp_out[s, a] - x_max
    for i in range(n * n_actions):
        exps[i] = fast_exp(exps[i])
    if n_special > 0:
        for j in range(n):
            s = order[lo + j]
            for a in range(n_actions):
                ref_probs[j * n_actions + a] = ref_logp[s, a]
        for i in range(n * n_actions):
            ref_probs[i] = fast_exp(ref_probs[i])
    for j in range(n):
        s = order[lo + j]
        q_max = row_qmax[j]
        x_max = row_xmax[j]
        if row_spread[j] < 0.0:
            total = 0.0
            for a in range(n_actions):
                total += exps[j * n_actions + a]
            log_total = np.log(total)
            v_out[s] = q_max + beta * ((x_max - mul(q_max, inv_beta)) + log_total)  # m + β·L
            lse = x_max + log_total  # log π* = x − lse
            for a in range(n_actions):
                logp_out[s, a] -= lse
        else:
            soft_row_special(s, row_spread[j], q_max, row_qmin[j], ref_logp, ref_probs[j * n_actions:], beta,
                             inv_beta, q_out, v_out, logp_out)


# inlined into soft_block by numba: as a call, with its five array arguments, a row outside the
# common case cost about twice a common one (a flat reward table: 7.4 → 5.6 ms at 3·10⁵ pairs)
@njit(cache=True, fastmath=ORDERED, inline="always")
def soft_row_special(s, spread, q_max, q_min, ref_logp, ref_probs, beta, inv_beta, q_out, v_out, logp_out):
    """V*(s) and log π*(·|s) from the row's Q* (``q_out``) and π_ref(·|s) (``ref_probs[:A]``,
    e^{log π_ref} by ``fast_exp``) outside the common case of :func:`soft_block`: δ > 1 with
    |Q*|/β above DIRECT_SCALE or overflowed (tiny β: x would
    lose ε·|Q*|/β absolute, a whole nat at β = 1e-16 and |Q*| = 1), where x = log π_ref + d
    is recomputed from d = (Q* − m)/β ≤ 0, exact to a few ulp of d; the log1p/expm1 form; the
    cumulant expansion."""
    n_actions = ref_logp.shape[1]
    if spread > EXPM1_SPREAD:
        x_max = NEG_INF
        for a in range(n_actions):
            x = ref_logp[s, a] + scaled_gap(q_out[s, a], q_max, inv_beta)
            logp_out[s, a] = x
            x_max = max(x_max, x)
        total = 0.0
        for a in range(n_actions):
            total += fast_exp(logp_out[s, a] - x_max)
        log_total = np.log(total)
        v_out[s] = q_max + beta * (x_max + log_total)  # m + β·L
        lse = x_max + log_total  # log π* = x − lse
    elif spread > TAYLOR_SPREAD:
        # L = log1p(Σ π_ref expm1(d) / Σ π_ref): every term ≤ 0, 1 + Σ ≥ e^{-1}
        mass = 0.0
        total = 0.0
        for a in range(n_actions):
            lr = ref_logp[s, a]
            d = scaled_gap(q_out[s, a], q_max, inv_beta)
            logp_out[s, a] = lr + d
            p = ref_probs[a]
            mass += p
            total += p * fast_expm1(d)
        lse = np.log1p(total / mass)
        v_out[s] = q_max + beta * lse
    else:
        # β·L = μ + σ²/(2β) with the moments of Q* − m under π_ref (normalized), taken
        # of y = (Q* − m)/c ∈ [−1, 0], c = max Q* − min Q*, so no square overflows
        width = q_max - q_min
        if width == 0.0:
            # one value of Q* over the allowed tokens (a flat reward table, as the parameters a
            # round's data leave untouched): μ = σ² = 0, so V* = m and log π* = log π_ref — the
            # numbers the moments below give at c = 0 (m + 0·(0 + 0), log π_ref + 0 − 0)
            v_out[s] = q_max + 0.0
            for a in range(n_actions):
                logp_out[s, a] = ref_logp[s, a] + scaled_gap(q_out[s, a] - q_max, 0.0, inv_beta)
            return
        inv_width = 1.0 / width if width >= TINY else 0.0  # subnormal width: V* = m to 1e-308
        mass = 0.0
        mean = 0.0
        second = 0.0
        for a in range(n_actions):
            lr = ref_logp[s, a]
            gap = q_out[s, a] - q_max
            logp_out[s, a] = lr + scaled_gap(gap, 0.0, inv_beta)
            y = mul(gap, inv_width) if lr > NEG_INF else 0.0
            p = ref_probs[a]
            mass += p
            mean += p * y
            second += p * y * y
        mean /= mass
        var = max(second / mass - mean * mean, 0.0)
        excess = width * (mean + var * (0.5 * spread))  # β·L = V* − m = μ + σ²/(2β)
        v_out[s] = q_max + excess
        lse = mul(excess, inv_beta)
    for a in range(n_actions):
        logp_out[s, a] -= lse


@njit(cache=True, fastmath=FAST)
def evaluate_backward(next_state, reward, ref_logp, logp, tol, reward_out, kl_out):
    """Fill ``reward_out`` (S,) with R(s) and ``kl_out`` (S,) with K(s) for policy ``logp``.

    Tokens with ``logp = -inf`` carry no mass and contribute nothing. A token with mass
    where ``ref_logp = -inf`` makes K infinite (π is not absolutely continuous).
    Validates as it goes: returns −1, or the first state whose row has a NaN/+inf entry
    or does not sum to 1 within ``tol`` (the caller then explains the error).
    The exponentials run in flat loops over blocks of states (:func:`evaluate_block`).
    """
    return evaluate_block(NO_ORDER, 0, reward.shape[0], next_state, reward, ref_logp, logp, tol, reward_out, kl_out)


@njit(cache=True, fastmath=ORDERED)
def evaluate_block(order, lo, hi, next_state, reward, ref_logp, logp, tol, reward_out, kl_out):
    """``evaluate_backward`` for a block of states: ``order[lo:hi]`` (independent states of
    one level, the level-parallel sweep's chunks) or, when ``order`` is empty, the states
    hi − 1, hi − 2, …, lo in turn (the serial sweep is one such block). Returns −1 or the
    smallest bad state of the block; the serial and the parallel sweep share it.

    In groups of ``BLOCK`` states: the rows' π = e^{log π} in one flat, vectorized loop
    (they do not depend on the recursion), then per state, in the order given, the mass,
    the bad-entry count and the sums R and K."""
    n_actions = reward.shape[1]
    probs = np.empty(BLOCK * n_actions)
    bad = -1
    for first in range(lo, hi, BLOCK):
        n = min(BLOCK, hi - first)
        for j in range(n):
            i = first + j
            s = order[i] if order.shape[0] > 0 else hi - 1 - (i - lo)
            for a in range(n_actions):
                probs[j * n_actions + a] = logp[s, a]
        for k in range(n * n_actions):
            probs[k] = fast_exp(probs[k])
        for j in range(n):
            i = first + j
            s = order[i] if order.shape[0] > 0 else hi - 1 - (i - lo)
            mass = 0.0
            n_bad = 0
            r_acc = 0.0
            kl_acc = 0.0
            for a in range(n_actions):
                p = probs[j * n_actions + a]
                lp = logp[s, a]
                n_bad += 0 if lp < np.inf else 1  # NaN or +inf
                mass += p
                nxt = next_state[s, a]
                k = max(nxt, 0)
                r_next = reward_out[k] if nxt >= 0 else 0.0
                kl_next = kl_out[k] if nxt >= 0 else 0.0
                r_acc += p * (reward[s, a] + r_next)
                term = p * (lp - ref_logp[s, a] + kl_next)
                kl_acc += term if p > 0.0 else 0.0
            reward_out[s] = r_acc
            kl_out[s] = kl_acc
            if n_bad > 0 or abs(mass - 1.0) > tol:
                bad = s if bad < 0 else min(bad, s)
    return bad


# Coefficients of h(t) = g(t)/t² = Σ_{k≥2} (−t)^{k−2}/k!, g(t) = t − 1 + e^{−t}; through
# k = 20 the truncation is below 1/21! < 2e-20 of h ≥ e^{−1} on |t| ≤ 1.
_H = tuple((-1.0) ** j / math.factorial(j + 2) for j in range(19))


@njit(cache=True, fastmath={"contract"})
def kl_excess_over_t2(t):
    """h(t) = (t − 1 + e^{−t}) / t² for |t| ≤ 1 by its series in Horner form; h decreases
    from h(−1) = e − 2 to h(1) = e^{−1}, so it is positive."""
    h = _H[18]
    h = h * t + _H[17]
    h = h * t + _H[16]
    h = h * t + _H[15]
    h = h * t + _H[14]
    h = h * t + _H[13]
    h = h * t + _H[12]
    h = h * t + _H[11]
    h = h * t + _H[10]
    h = h * t + _H[9]
    h = h * t + _H[8]
    h = h * t + _H[7]
    h = h * t + _H[6]
    h = h * t + _H[5]
    h = h * t + _H[4]
    h = h * t + _H[3]
    h = h * t + _H[2]
    h = h * t + _H[1]
    h = h * t + _H[0]
    return h


@njit(cache=True, fastmath=FAST)
def regret_backward(next_state, ref_logp, logp, q, v, beta, tol, regret_out):
    """Fill ``regret_out`` (S,) with G(s) = β Σ_{s'} d^π_s(s') KL(π(·|s') ‖ π*(·|s')), the
    regret V*(s) − J^π(s) of the policy ``logp`` from each state, given the solution's
    ``q`` = Q* and ``v`` = V*.

    Per token with π(a|s) = p > 0, u = log π − log π_ref, w = V*(s) − Q*(s,a),
    t = u + w/β = log π − log π*, the term β·p·g(t), g(t) = t − 1 + e^{−t} ≥ 0, is

    * |t| ≤ 1: p·(β·t)·t·h(t) with h = g/t² by its series — no cancellation, no
      underflow of t² at huge β (β·t is formed first);
    * |t| > 1: p·((β·u + w) − β) + β·π*(a|s), π*(a|s) = exp(log π_ref − w/β) — β·t is
      formed as β·u + w, so w/β may overflow (tiny β) without harm; the cancellation is
      at most a factor 1/g(±1) ≈ 3;
    * p = 0: β·π*(a|s) (the limit of β·p·g(t) = β·(p·t − p + π*)): the mass π* puts where
      π puts none.

    Each token's term (with p·G(s') added) is clamped at 0: only rounding could push the
    |t| > 1 form below. The products β·t·t are formed left to right outside ``reassoc``
    (t² would underflow at β = 1e300). Mass on a token π_ref disallows gives u = t = +inf and
    the term +inf.
    Validates like ``evaluate_backward``: returns −1 or the first bad state.
    """
    return regret_block(NO_ORDER, 0, logp.shape[0], next_state, ref_logp, logp, q, v, beta, tol, regret_out)


@njit(cache=True, fastmath=ORDERED)
def regret_block(order, lo, hi, next_state, ref_logp, logp, q, v, beta, tol, regret_out):
    """``regret_backward`` for a block of states (as in ``soft_block``); returns −1 or the
    smallest bad state of the block. Shared with the level-parallel sweep."""
    n_actions = logp.shape[1]
    inv_beta = 1.0 / beta
    p_row = np.empty(n_actions)
    bad = -1
    for i in range(lo, hi):
        s = order[i] if order.shape[0] > 0 else hi - 1 - (i - lo)
        mass = 0.0
        n_bad = 0
        for a in range(n_actions):
            lp = logp[s, a]
            n_bad += 0 if lp < np.inf else 1  # NaN or +inf
            p = fast_exp(lp)
            p_row[a] = p
            mass += p
        v_s = v[s]
        acc = 0.0
        for a in range(n_actions):
            p = p_row[a]
            lr = ref_logp[s, a]
            u = logp[s, a] - lr  # +inf when π_ref disallows a token π uses
            w = v_s - q[s, a]
            t = u + mul(w, inv_beta)
            log_star = min(lr - mul(w, inv_beta), 0.0) if lr > NEG_INF else NEG_INF  # log π*(a|s)
            if p > 0.0:
                if abs(t) <= 1.0:
                    term = p * mul(mul(beta, t), t) * kl_excess_over_t2(t)
                else:
                    term = p * ((beta * u + w) - beta) + beta * fast_exp(log_star)
            else:
                term = beta * fast_exp(log_star)  # β·(p·t − p + π*) at p = 0
            nxt = next_state[s, a]
            g_next = regret_out[max(nxt, 0)] if nxt >= 0 else 0.0
            term += p * g_next if p > 0.0 else 0.0
            acc += term if term > 0.0 else 0.0
        regret_out[s] = acc
        if n_bad > 0 or abs(mass - 1.0) > tol:
            bad = s if bad < 0 else min(bad, s)
    return bad


@njit(cache=True)
def max_abs_path_sum(next_state, reward, out):
    """Fill ``out`` (S,) with B(s) = max over every path from s (every token, allowed or
    not) of Σ_h |r(s_h, a_h)|: B(s) = max_a (|r(s,a)| + B(s')), B(end) = 0. It bounds
    |Q*|, |V*|, |J| and the reward to go of every policy from s; inf when it overflows."""
    n_states, n_actions = reward.shape
    for s in range(n_states - 1, -1, -1):
        best = 0.0
        for a in range(n_actions):
            nxt = next_state[s, a]
            total = abs(reward[s, a])
            if nxt >= 0:
                total += out[nxt]
            best = max(best, total)
        out[s] = best


@njit(cache=True)
def occupancy_forward(next_state, prob, start, occ_out):
    """Fill ``occ_out`` (S,) with the probability that a trajectory of π visits each state,
    from ``start`` (S,) and the policy's probabilities ``prob`` (S, A) = π(a|s) (the table
    of :func:`policy_probs`). A state u with d(u) = 0 and a token with π = 0 add nothing
    (and are skipped, as the level-parallel pull sweep skips them)."""
    n_states, n_actions = prob.shape
    for s in range(n_states):
        occ_out[s] = start[s]
    for s in range(n_states):
        d = occ_out[s]
        if d == 0.0:
            continue
        for a in range(n_actions):
            nxt = next_state[s, a]
            p = prob[s, a]
            if nxt >= 0 and p > 0.0:
                occ_out[nxt] += d * p


@njit(cache=True, fastmath={"contract"})
def policy_probs(logp, prob_out):
    """``prob_out`` = e^{logp} elementwise (same shape, C-contiguous), by :func:`fast_exp` in
    one flat vectorized loop (within 1 ulp of ``np.exp``; e^{−inf} = 0). The sweeps that
    need π(a|s) — occupancy, the Newton products — read this table instead of calling
    libm's scalar ``exp`` per token and per sweep."""
    flat_in = logp.reshape(logp.size)
    flat_out = prob_out.reshape(prob_out.size)
    for i in range(flat_in.shape[0]):
        flat_out[i] = fast_exp(flat_in[i])


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
