r"""Box-constrained minimization for the per-round updates of the reward classes.

The round objective of a reward class (``xpo_sim.policies``) is smooth in θ ∈ [lo, hi]^d and,
without XPO's bonus, convex (logistic regression on feature differences). First-order
methods crawl on it: a response of tiny mass under π_θ has a gradient of the order of its
mass, so L-BFGS-B with an absolute gradient tolerance spends hundreds of iterations per round
pushing such coordinates to the box (docs/policy-classes.md, "Solvers"; issue 10 measured ~900 iterations a round).
Newton's method does not care: the curvature of those coordinates is of the order of their
mass too, and the Newton step divides one by the other.

:func:`projected_newton` is a projected Newton method with an ε-active set (Bertsekas 1982,
"Projected Newton methods for optimization problems with simple constraints"), the inner
system solved by truncated, Jacobi-preconditioned conjugate gradients on exact
Hessian-vector products (Nocedal & Wright, Numerical Optimization, §7.1 and §16.7):

1. g = ∇L(θ); projected gradient pg = θ − P(θ − g), P the projection onto the box.
2. Active set A: coordinates within ε = min(ε₀, ‖pg‖∞) of a bound whose gradient pushes
   outward; the others are free (F).
3. CG on H_FF p = −g_F, stopped at relative residual min(½, √‖g_F‖) (superlinear local
   convergence) or at a direction of non-positive curvature (with XPO's concave bonus the
   Hessian can be indefinite: the model then decreases without bound along that direction,
   so the step follows it out to the box's width, and the search below backtracks).
4. Projected Armijo search on θ(t) = P(θ + t d), d_F = p and d_A = −g_A / D_A, accepting the
   first t ∈ {1, ½, ¼, …} with L(θ(t)) ≤ L(θ) + 10⁻⁴ gᵀ(θ(t) − θ).

**Convergence, stated in the objective.** An iterate is accepted as the argmin when the
Newton model predicts less than ``ftol`` · max(1, |L|) further decrease,
½ g_Fᵀ H_FF⁻¹ g_F ≤ ftol · max(1, |L|), with the active set unchanged since the previous
iterate — for a convex objective that is (to second order) the gap L(θ) − L*, and it bounds
the H-norm distance to the argmin, ‖θ − θ*‖_H ≤ √(2 · ftol · max(1, |L|)) — or when
‖pg‖∞ ≤ ``gtol`` (the reference solver's rule). The predicted decrease is ½ g·p, not a
difference of two values of L, so it is not limited by the rounding of L and can be asked
far below ε_machine · |L|; Newton's quadratic local convergence makes the last factor of
10³ cost about one iteration. Defaults: ftol = 10⁻¹⁵, gtol = 10⁻⁹. One exception: when
the predicted decrease is already below what the rounding of L itself hides (10³ ε |L|,
L being a sum of up to thousands of terms) and no step can be measured to decrease L, or
the iteration cap is reached there, the point is accepted as converged *at the rounding
level of L* (the message says so). Why that is tight enough:
the log-ratio of any response the data constrains then sits within about
√(2·10⁻¹⁵·|L|)/β of its value at the argmin (|L| ≲ 10³ pairs·log 2 here: ≤ 1.5·10⁻⁶/β),
and regret moves with the policy's log-ratios weighted by π-mass (β·KL is smooth in them),
so its error is far below 10⁻⁶ of π_ref's regret; ``tests/test_solvers.py`` and
``benchmarks/bench_update.py`` check this against the reference solver where both
converge (measured: ≤ 3·10⁻⁷ of π_ref's regret). Directions the data does not constrain are
left at the warm start, as the reference solver does: with no bonus and a DPO or IPO pair
loss, parameters whose features vanish on every step of the data do not enter L at all and
are held fixed (``fixed``); the argmin is not unique there, and the warm start picks it.

**Which stationary point with α > 0.** The bonus makes the objective non-convex; the method
only ever accepts descent steps from the warm start (the previous round's iterate), so it
returns a local minimizer in the basin the previous iterate lies in (first- and, on the free
set, second-order stationary up to the tolerance), like the reference L-BFGS-B.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

__all__ = ["SolveResult", "ConvergenceWarning", "projected_newton", "lbfgsb"]


ROUNDING = 1000  # L is a sum of many terms: its computed value is trusted to about 10³ ε |L|


class ConvergenceWarning(UserWarning):
    """A per-round update stopped before meeting its tolerance."""


@dataclass
class SolveResult:
    """What one minimization did: the point, its value, whether the stopping rule was met
    (``converged``), the work (``iterations``, ``evaluations`` of L and ∇L,
    ``hessian_products``), the final ∞-norm of the projected gradient, the last predicted
    decrease ½ gᵀH⁻¹g, and a message."""

    x: np.ndarray
    value: float
    converged: bool
    iterations: int
    evaluations: int
    hessian_products: int
    projected_gradient: float
    predicted_decrease: float
    message: str


def _truncated_pcg(hvp: Callable[[np.ndarray], np.ndarray], b: np.ndarray, precond: np.ndarray, rtol: float,
                   max_iter: int, reach: float) -> tuple[np.ndarray, int, bool]:
    """Approximately solve H x = b (H given by ``hvp``) by preconditioned CG from x = 0.

    On a direction p of non-positive curvature (H indefinite: XPO's concave bonus) the
    model decreases without bound along ±p, so the iterate is extended along the descent
    sign of p until its largest step is ``reach`` (the box's width; the projected line
    search then backtracks). Returns (x, products, negative_curvature)."""
    x = np.zeros_like(b)
    r = b.copy()
    z = r / precond
    p = z.copy()
    rz = float(r @ z)
    target = rtol * math.sqrt(float(b @ b))
    for i in range(max_iter):
        hp = hvp(p)
        curvature = float(p @ hp)
        if curvature <= 1e-300 * float(p @ p) or not math.isfinite(curvature):
            direction = p if float(b @ p) >= 0.0 else -p  # b = −g: b·p > 0 is descent
            largest = float(np.abs(direction).max())
            if largest > 0.0:
                x = x + (reach / largest) * direction
            return x, i + 1, True
        step = rz / curvature
        x += step * p
        r -= step * hp
        if math.sqrt(float(r @ r)) <= target:
            return x, i + 1, False
        z = r / precond
        rz_next = float(r @ z)
        p = z + (rz_next / rz) * p
        rz = rz_next
    return x, max_iter, False


def projected_newton(fun: Callable[[np.ndarray], tuple[float, np.ndarray]],
                     hvp: Callable[[np.ndarray], np.ndarray],
                     x0: np.ndarray, lo: float, hi: float, *,
                     diagonal: Callable[[], np.ndarray] | None = None, fixed: np.ndarray | None = None,
                     ftol: float = 1e-15, gtol: float = 1e-9, max_iter: int = 200,
                     max_cg: int = 200) -> SolveResult:
    """Minimize a smooth L over the box [lo, hi]^n from ``x0`` (see the module docstring).

    ``fun(x)`` returns (L, ∇L) and makes ``hvp(v)`` (H v) and ``diagonal()`` (a positive
    estimate of diag H, for preconditioning) refer to that x. ``fixed`` marks coordinates L
    does not depend on (held at x0: their gradient is rounding noise, and dividing it by
    a zero curvature would move them arbitrarily). Returns a :class:`SolveResult`.
    """
    x = np.clip(np.asarray(x0, dtype=np.float64), lo, hi)
    fixed = np.zeros(x.size, dtype=bool) if fixed is None else np.asarray(fixed, dtype=bool)
    n = x.size
    f, g = fun(x)
    g = np.where(fixed, 0.0, g)
    evaluations, products = 1, 0
    previous_active = None
    decrease = math.inf
    pg_norm = math.inf
    for iteration in range(1, max_iter + 1):
        pg = x - np.clip(x - g, lo, hi)
        pg_norm = float(np.abs(pg).max()) if n else 0.0
        if pg_norm <= gtol:
            return SolveResult(x, f, True, iteration - 1, evaluations, products, pg_norm, decrease,
                               "projected gradient below gtol")
        eps = min(1e-6 * max(1.0, hi - lo), pg_norm)
        active = ((x <= lo + eps) & (g > 0)) | ((x >= hi - eps) & (g < 0)) | fixed
        free = ~active
        diag = diagonal() if diagonal is not None else np.ones(n)
        floor = 1e-12 * max(float(diag.max()) if n else 1.0, 1e-300)
        diag = np.maximum(diag, floor)
        g_free = g[free]
        direction = np.zeros(n)
        negative = False
        if g_free.size:
            full = np.zeros(n)

            def hvp_free(v):
                full[:] = 0.0
                full[free] = v
                return hvp(full)[free]

            rtol = min(0.5, math.sqrt(float(np.sqrt(g_free @ g_free))))
            step, used, negative = _truncated_pcg(hvp_free, -g_free, diag[free], rtol, max_cg,
                                                  reach=max(hi - lo, 1e-12))
            products += used
            direction[free] = step
            decrease = 0.5 * float(-g_free @ step)
        else:
            decrease = 0.0
        direction[active] = -g[active] / diag[active]
        same_active = previous_active is not None and np.array_equal(active, previous_active)
        previous_active = active
        if (not negative and same_active and decrease <= ftol * max(1.0, abs(f))):
            return SolveResult(x, f, True, iteration - 1, evaluations, products, pg_norm, decrease,
                               "predicted decrease below ftol")
        noise = ROUNDING * np.finfo(float).eps * max(1.0, abs(f))  # what L's own rounding hides
        # projected Armijo backtracking; if the (projected) Newton direction gives no descent
        # — clipping can bend it — fall back once to the scaled gradient, which always does
        slack = 8 * np.finfo(float).eps * max(1.0, abs(f))  # rounding of L itself
        found, moved = False, False
        for candidate in (direction, -g / diag):
            t = 1.0
            for _ in range(40):
                trial = np.clip(x + t * candidate, lo, hi)
                delta = trial - x
                if not np.any(delta):
                    break
                moved = True
                slope = float(g @ delta)
                if slope < 0.0:
                    f_trial, g_trial = fun(trial)
                    evaluations += 1
                    if math.isfinite(f_trial) and f_trial <= f + 1e-4 * slope + slack:
                        found = True
                        break
                t *= 0.5
            if found:
                break
        if not found:
            if decrease <= ftol * max(1.0, abs(f)) or (not negative and decrease <= noise):
                return SolveResult(x, f, True, iteration, evaluations, products, pg_norm, decrease,
                                   "predicted decrease at the rounding level of L")
            message = "line search failed" if moved else "no descent direction left"
            return SolveResult(x, f, False, iteration, evaluations, products, pg_norm, decrease, message)
        x, f, g = trial, f_trial, np.where(fixed, 0.0, g_trial)
    pg = x - np.clip(x - g, lo, hi)
    pg_norm = float(np.abs(pg).max()) if n else 0.0
    converged = pg_norm <= gtol or decrease <= ROUNDING * np.finfo(float).eps * max(1.0, abs(f))
    return SolveResult(x, f, converged, max_iter, evaluations, products, pg_norm, decrease,
                       f"stopped at max_iter={max_iter}" + (" at the rounding level of L" if converged else ""))


def lbfgsb(fun: Callable[[np.ndarray], tuple[float, np.ndarray]], x0: np.ndarray, lo: float, hi: float, *,
           gtol: float = 1e-9, max_iter: int = 2000) -> SolveResult:
    """The reference solver: SciPy's L-BFGS-B under the box with projected-gradient tolerance
    ``gtol`` (absolute) and an iteration cap; ``converged`` is SciPy's ``success``."""
    from scipy.optimize import Bounds, minimize

    n = np.size(x0)
    result = minimize(fun, x0, jac=True, method="L-BFGS-B", bounds=Bounds(np.full(n, lo), np.full(n, hi)),
                      options=dict(maxiter=max_iter, gtol=gtol, ftol=1e-15))
    pg = result.x - np.clip(result.x - result.jac, lo, hi)
    return SolveResult(result.x, float(result.fun), bool(result.success), int(result.nit), int(result.nfev), 0,
                       float(np.abs(pg).max()) if n else 0.0, math.nan, str(result.message))
