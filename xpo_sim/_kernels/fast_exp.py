"""A vectorizable ``exp`` for the sweeps of ``xpo_sim._kernels.soft``.

numba lowers ``np.exp`` to a call of the scalar libm ``exp`` (there is no SVML here), and
a loop that contains a call is not vectorized. :func:`fast_exp` is branch-free arithmetic
that LLVM inlines and vectorizes (4 lanes with AVX2) when it sits in a simple loop:

* range reduction (Cody–Waite): k = round(x / ln 2) by the 1.5·2^52 shifter trick,
  r = x − k·ln2_hi − k·ln2_lo with ln2_hi holding 32 significant bits (k·ln2_hi is exact),
  so |r| ≤ ln2/2 + tiny;
* exp(r) by its Taylor polynomial of degree 13 in Horner form (truncation error below
  4e-18 relative on |r| ≤ 0.347);
* scaling by 2^k built from the exponent bits; |k| > 1000 is split into 2^(k∓1000)·2^(±1000),
  so gradual underflow (subnormal results) and overflow to +inf round once, like libm.

Accuracy (``tests/test_fast_exp.py``): within 1 ulp of ``np.exp`` on dense grids over
[−750, 710]; exp(−inf) = 0, exp(+inf) = +inf, exp(nan) = nan, exp(x) = 0 for
x < −745.14 and +inf for x > 709.79, exactly as ``np.exp``.

:func:`fast_expm1` is exp(x) − 1 from the same reduction: expm1(r) = r + r²·(1/2! + r/3! + …)
(no cancellation for small r) and expm1(x) = 2^k·expm1(r) + (2^k − 1), where 2^k − 1 is exact
for |k| ≤ 53; beyond that exp(x) − 1 is computed as for ``fast_exp`` (the −1 is then either
below an ulp or the whole result). Within 2 ulp of ``np.expm1`` (``tests/test_numeric_edges.py``).
The soft Bellman sweep uses it where β is large compared with the spread of Q*, so that
Q*/β is tiny and exp(Q*/β) would round to 1.

Compiled with ``fastmath={"contract"}`` only: ``reassoc`` would let LLVM fold
(x·log2e + S) − S into x·log2e and break the rounding. The flags are per instruction and
survive inlining into kernels compiled with other flags.
"""

import math

import numpy as np
from numba import njit

LOG2E = 1.4426950408889634
LN2_HI = 6.93147180369123816490e-01  # 0x3fe62e42fee00000
LN2_LO = 1.90821492927058770002e-10
SHIFTER = 6755399441055744.0  # 1.5 * 2**52: x + SHIFTER rounds x to an integer
SHIFTER_BITS = int(np.float64(SHIFTER).view(np.int64))
X_MIN = -746.0  # exp(X_MIN) rounds to 0; also where -inf is clamped to
X_MAX = 710.0  # exp(X_MAX) overflows to +inf; also where +inf is clamped to
TWO_P1000 = 2.0**1000
TWO_M1000 = 2.0**-1000
(C2, C3, C4, C5, C6, C7, C8, C9, C10, C11, C12, C13) = (1.0 / math.factorial(n) for n in range(2, 14))


@njit(cache=True, fastmath={"contract"})
def _reduce(x):
    """Range reduction and polynomial shared by ``fast_exp`` and ``fast_expm1``: with x
    clamped to [X_MIN, X_MAX], x = k·ln2 + r (|r| ≤ ln2/2, ln2 in two parts), returns
    (k, r, q, scale, tail) with e^r − 1 = r + r²·q, q = 1/2! + r/3! + … + r^11/13!
    (Horner), and 2^k = scale·tail (tail ≠ 1 only when |k| > 1000, so that scale stays a
    normal number)."""
    xc = min(max(x, X_MIN), X_MAX)  # NaN becomes X_MIN here and is restored by the callers
    t = xc * LOG2E + SHIFTER
    kf = t - SHIFTER
    k = np.float64(t).view(np.int64) - SHIFTER_BITS
    r = xc - kf * LN2_HI
    r = r - kf * LN2_LO
    q = C13
    q = q * r + C12
    q = q * r + C11
    q = q * r + C10
    q = q * r + C9
    q = q * r + C8
    q = q * r + C7
    q = q * r + C6
    q = q * r + C5
    q = q * r + C4
    q = q * r + C3
    q = q * r + C2
    small = k < -1000
    big = k > 1000
    kk = k + 1000 if small else (k - 1000 if big else k)
    tail = TWO_M1000 if small else (TWO_P1000 if big else 1.0)
    scale = np.int64((kk + 1023) << 52).view(np.float64)
    return k, r, q, scale, tail


@njit(cache=True, fastmath={"contract"})
def fast_exp(x):
    """exp(x) for a float64 scalar, within 1 ulp of ``np.exp``; vectorizable in a loop."""
    k, r, q, scale, tail = _reduce(x)
    p = q * r + 1.0
    p = p * r + 1.0
    y = p * scale * tail
    return y if x == x else x


@njit(cache=True, fastmath={"contract"})
def fast_expm1(x):
    """exp(x) − 1 for a float64 scalar, within 2 ulp of ``np.expm1``; vectorizable in a loop.

    With x = k·ln2 + r (|r| ≤ ln2/2): e^x − 1 = 2^k·(e^r − 1) + (2^k − 1), e^r − 1 by its
    Taylor polynomial r + r²·(1/2! + r/3! + … + r^11/13!); 2^k − 1 is exact for |k| ≤ 53, so
    the sum has no cancellation (|k| = 1: 2^k − 1 and the result have the same sign and
    size). For |k| > 53 it is (1 + (e^r − 1))·2^k − 1, the ``fast_exp`` value minus one.
    expm1(−inf) = −1, expm1(+inf) = +inf, expm1(nan) = nan, expm1(±0) = ±0.
    """
    k, r, q, scale, tail = _reduce(x)
    em1 = (q * r) * r + r  # e^r − 1
    two_k = scale * tail  # 2^k exactly for |k| ≤ 53 (the only case where it is used)
    near = em1 * two_k + (two_k - 1.0)
    far = (em1 + 1.0) * scale * tail - 1.0
    y = near if ((k > -54) & (k < 54)) else far  # & (not `and`): a select, no branch
    return y if ((x == x) & (x != 0.0)) else x  # nan stays nan, ±0 stays ±0


@njit(cache=True, fastmath={"contract"})
def expm1_into(x, out):
    """out[i] = fast_expm1(x[i]) for 1-D arrays (used by the tests)."""
    for i in range(x.shape[0]):
        out[i] = fast_expm1(x[i])


@njit(cache=True, fastmath={"contract"})
def mul_add(a, b, c):
    """a + b·c. A separate function so the multiply carries no ``reassoc`` flag: inside a
    kernel compiled with ``reassoc``, LLVM rewrites q·(1/β) into q/β, a division per pair."""
    return a + b * c


@njit(cache=True, fastmath={"contract"})
def scaled_gap(q, m, inv_beta):
    """min((q − m)·(1/β), 0): the scaled gap d ≤ 0 of ``soft_backward``. A separate function
    for the reason given at :func:`mul_add` (no ``reassoc`` on the multiply)."""
    return min((q - m) * inv_beta, 0.0)


@njit(cache=True, fastmath={"contract"})
def mul(a, b):
    """a·b without the ``reassoc`` flag (see :func:`mul_add`)."""
    return a * b


@njit(cache=True, fastmath={"contract"})
def exp_into(x, out):
    """out[i] = fast_exp(x[i]) for 1-D arrays (used by the tests and benchmarks)."""
    for i in range(x.shape[0]):
        out[i] = fast_exp(x[i])
