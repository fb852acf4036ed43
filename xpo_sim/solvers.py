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

**The global argmin** (``solver="global"``, docs/policy-classes.md, "The global argmin").
:func:`global_minimize` returns the certified global minimum over the box, for problems of
at most :data:`GLOBAL_MAX_PARAMS` parameters, by branch and bound: on each box a convex
underestimator of L is minimized and its Frank–Wolfe gap gives a rigorous lower bound;
the result carries it (``SolveResult.lower_bound``) and the certified ``gap`` = value −
lower bound, and it is ``converged`` only when gap ≤ ``gap_tol``. For the reward classes
the underestimators come from the structure of the objective (:class:`SoftValueCurvature`,
:class:`RoundBounds`): the non-convexity is that of −α Σ V̂_θ(s₀)/β, minus a log-partition,
which is bounded on a box by the chords of its exponentials (a first-order gap, tight on
wide boxes) and by αBB with a rigorous lower bound on the Hessian (exact on boxes where the
pair terms' curvature dominates).
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

__all__ = ["SolveResult", "ConvergenceWarning", "projected_newton", "lbfgsb", "global_minimize", "Relaxation",
           "SoftValueCurvature", "RoundBounds", "GLOBAL_MAX_PARAMS", "MAX_ATOMS"]


ROUNDING = 1000  # L is a sum of many terms: its computed value is trusted to about 10³ ε |L|


class ConvergenceWarning(UserWarning):
    """A per-round update stopped before meeting its tolerance."""


@dataclass
class SolveResult:
    """What one minimization did: the point, its value, whether the stopping rule was met
    (``converged``), the work (``iterations``, ``evaluations`` of L and ∇L,
    ``hessian_products``), the final ∞-norm of the projected gradient, the last predicted
    decrease ½ gᵀH⁻¹g, and a message. :func:`global_minimize` also certifies the value:
    ``lower_bound`` ≤ min L over the box, ``gap`` = ``value`` − ``lower_bound`` and the number
    of boxes it bounded (``nodes``); the local solvers leave them NaN, NaN and 0 (they certify
    nothing beyond a stationary point)."""

    x: np.ndarray
    value: float
    converged: bool
    iterations: int
    evaluations: int
    hessian_products: int
    projected_gradient: float
    predicted_decrease: float
    message: str
    lower_bound: float = math.nan
    gap: float = math.nan
    nodes: int = 0


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
    if np.ndim(lo) or np.ndim(hi):  # per-coordinate bounds (the boxes of global_minimize)
        width = float(np.max(np.subtract(hi, lo))) if n else 0.0
    else:
        width = hi - lo
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
        eps = min(1e-6 * max(1.0, width), pg_norm)
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
                                                  reach=max(width, 1e-12))
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


# ----------------------------------------------------------------------------- global argmin
GLOBAL_MAX_PARAMS = 16
"""The most parameters ``solver="global"`` accepts: branch and bound splits boxes, and the
number of boxes it may need grows exponentially with the dimension."""

MAX_ATOMS = 4096
"""The most distinct feature sums Φ(τ) per prompt :class:`SoftValueCurvature` enumerates."""

_SAFETY = 1e-9  # relative inflation of every curvature bound (covers the rounding of its own arithmetic)


def _check_gap_tol(gap_tol) -> float:
    from xpo_sim import checks

    return checks.positive("gap_tol", gap_tol)


def _check_max_nodes(max_nodes) -> int:
    from xpo_sim import checks

    return checks.integer("max_nodes", max_nodes, minimum=1)


class _Counted:
    """``fun`` with a count of its calls and a copy of its last point and values."""

    def __init__(self, fun):
        self.fun = fun
        self.calls = 0
        self.last = None

    def __call__(self, x):
        self.calls += 1
        f, g = self.fun(x)
        self.last = (x.copy(), f, g)
        return f, g

    def at(self, x):
        """(f, g) at ``x``: the stored values when ``x`` was the last point, else a new call
        (which also points the Hessian-vector product at ``x``)."""
        if self.last is not None and np.array_equal(self.last[0], x):
            return self.last[1], self.last[2]
        return self(x)


@dataclass
class Relaxation:
    """A convex underestimator of L on one box, for :func:`global_minimize`: ``fun(x)`` →
    (value, gradient) (and points ``hvp``/``diagonal`` at x), ``hvp(v)``, ``diagonal()`` (or
    None), ``scale``, the size of the terms its value adds to L (for the rounding margin), and
    optionally ``split_score(x)``: how much of the gap L − U at x each coordinate's width
    causes (the coordinate to bisect)."""

    fun: Callable[[np.ndarray], tuple[float, np.ndarray]]
    hvp: Callable[[np.ndarray], np.ndarray]
    diagonal: Callable[[], np.ndarray] | None
    scale: float = 0.0
    split_score: Callable[[np.ndarray], np.ndarray] | None = None


def _alpha_bb(fun, hvp, diagonal, d, lower, upper) -> Relaxation:
    """U(θ) = L(θ) − ½ Σ_i d_i (θ_i − l_i)(u_i − θ_i) (αBB; convex when ∇²L + diag(d) ⪰ 0)."""
    mid = 0.5 * (lower + upper)

    def relaxed(y):
        f, g = fun(y)
        return f - 0.5 * float(d @ ((y - lower) * (upper - y))), g + d * (y - mid)

    scale = 0.125 * float(d @ ((upper - lower) ** 2))
    return Relaxation(relaxed, lambda v: hvp(v) + d * v, None if diagonal is None else (lambda: diagonal() + d), scale)


def global_minimize(fun: Callable[[np.ndarray], tuple[float, np.ndarray]],
                    hvp: Callable[[np.ndarray], np.ndarray],
                    shift: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray] | None,
                    x0: np.ndarray, lo, hi, *,
                    diagonal: Callable[[], np.ndarray] | None = None, fixed: np.ndarray | None = None,
                    relaxations=None, gap_tol: float = 1e-6, max_nodes: int = 20_000,
                    max_params: int = GLOBAL_MAX_PARAMS, ftol: float = 1e-15, gtol: float = 1e-9,
                    max_iter: int = 200) -> SolveResult:
    r"""The certified global minimum of a smooth, possibly non-convex L over the box [lo, hi]^n
    (``lo``, ``hi``: numbers or per-coordinate arrays).

    Branch and bound over boxes (best-first: the box of lowest bound is split next). On each
    box [l, u] a *convex* underestimator U ≤ L is minimized by :func:`projected_newton`, and
    at its approximate minimizer x convexity gives the rigorous bound

        min_{[l,u]} L ≥ min_{[l,u]} U ≥ U(x) + Σ_i min(g_i (l_i − x_i), g_i (u_i − x_i)),  g = ∇U(x)

    (the Frank–Wolfe gap; ≈ 0 at the minimizer of U), less a rounding margin
    10³ ε (max(1, |U(x)|) + scale + Σ_i (u_i − l_i) max(1, |g_i|)). The underestimators:

    * αBB (Androulakis, Maranas & Floudas 1995; Adjiman, Dallwig, Floudas & Neumaier 1998):
      ``shift(l, u, hint)`` returns D ≥ 0 with ∇²L(θ) + diag(D) ⪰ 0 for every θ of the box,
      and U = L − ½ Σ_i D_i (θ_i − l_i)(u_i − θ_i). With D = 0 (L convex on the box) U = L
      and the box is settled by one convex solve.
    * ``relaxations(fun, hvp, l, u, hint)`` → a list of :class:`Relaxation` (for the reward
      classes: the chord relaxation of :meth:`RoundBounds.relaxations`, far tighter than
      αBB on wide boxes); αBB is then also solved only where it may do better (its
      separation at the relaxation's minimizer below the relaxation's gap there).

    Upper bounds: the local minimum reached by :func:`projected_newton` from ``x0`` (so the
    result is never worse than the warm-started local solve), L at every relaxation's
    minimizer, and a local solve from there whenever that point beats the incumbent by more
    than ``gap_tol``. A box whose bound is within ``gap_tol`` of the incumbent is
    discarded; an open box is first reduced (reduced-cost bound tightening, Ryoo & Sahinidis
    1996: where x sits on a face of the box with g_i pushing outward, every θ more than
    (incumbent − gap_tol − bound)/|g_i| inside that face has U ≥ incumbent − gap_tol) and
    bounded again, then bisected along the coordinate the relaxation's ``split_score`` (or
    αBB's D_i (u_i − l_i)²) names.

    ``fun``, ``hvp``, ``diagonal``, ``fixed``, ``ftol``, ``gtol``, ``max_iter`` are as for
    :func:`projected_newton` (used for the local solves). ``gap_tol`` (> 0, absolute, in
    units of L): converged means upper − lower ≤ gap_tol. ``max_nodes``: the most boxes
    bounded; when it is reached the result is the best point found, ``converged`` is False
    and ``gap`` says how far from certified it is. ``max_params``: larger problems are
    refused (ValueError naming ``solver``). Returns a :class:`SolveResult` with
    ``lower_bound``, ``gap`` and ``nodes``; ``iterations`` counts the local solves.
    """
    gap_tol = _check_gap_tol(gap_tol)
    max_nodes = _check_max_nodes(max_nodes)
    x0 = np.asarray(x0, dtype=np.float64)
    n = x0.size
    lo = np.broadcast_to(np.asarray(lo, dtype=np.float64), (n,)).copy()  # scalars or per-coordinate bounds
    hi = np.broadcast_to(np.asarray(hi, dtype=np.float64), (n,)).copy()
    if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi)) and np.all(lo <= hi)):
        raise ValueError("lo and hi must be finite with lo <= hi")
    x0 = np.clip(x0, lo, hi)
    if n > max_params:
        raise ValueError(f"solver='global' certifies the global argmin by branch and bound for at most "
                         f"{max_params} parameters; this problem has {n} (use solver='newton' for a local minimum)")
    fixed = np.zeros(n, dtype=bool) if fixed is None else np.asarray(fixed, dtype=bool)
    counted = _Counted(fun)
    stats = dict(products=0, local=0)
    local_kw = dict(diagonal=diagonal, fixed=fixed, ftol=ftol, gtol=gtol, max_iter=max_iter)

    def local_solve(start):
        result = projected_newton(counted, hvp, start, lo, hi, **local_kw)
        stats["products"] += result.hessian_products
        stats["local"] += 1
        return result

    warm = local_solve(x0)
    best = dict(x=warm.x, f=warm.value, result=warm)

    def consider(x, f, polish):
        """Offer a feasible point: it becomes the incumbent if lower; polished by a local
        solve from it when it beats the incumbent by more than gap_tol."""
        if not f < best["f"]:
            return
        if polish and f < best["f"] - gap_tol:
            result = local_solve(x)
            if result.value <= f:
                best.update(x=result.x, f=result.value, result=result)
                return
        best.update(x=x.copy(), f=f, result=None)

    def certified(relaxed, relaxation, lower, upper, x):
        """The Frank–Wolfe bound of a convex relaxation at x: U(x) + Σ min(g (l − x), g (u − x))
        less the rounding margin."""
        u_value, u_grad = relaxed.at(x)
        u_grad = np.where(fixed, 0.0, u_grad)
        if not (math.isfinite(u_value) and np.all(np.isfinite(u_grad))):
            return -math.inf, None
        width = upper - lower
        linear = float(np.minimum(u_grad * (lower - x), u_grad * (upper - x)).sum())
        margin = ROUNDING * np.finfo(float).eps * (max(1.0, abs(u_value)) + relaxation.scale
                                                  + float(width @ np.maximum(1.0, np.abs(u_grad))))
        return u_value + linear - margin, u_grad

    def solve_relaxation(relaxation, lower, upper, start):
        """(rigorous lower bound of the relaxation on [lower, upper], its approximate minimizer).
        The bound at the start point (the parent's minimizer) comes first: when it already
        closes the box, no solve is needed."""
        relaxed = _Counted(relaxation.fun)
        x = np.clip(start, lower, upper)
        quick, quick_grad = certified(relaxed, relaxation, lower, upper, x)
        if quick >= best["f"] - gap_tol:
            return quick, x, quick_grad
        result = projected_newton(relaxed, relaxation.hvp, x, lower, upper,
                                  diagonal=relaxation.diagonal, fixed=fixed, ftol=1e-12, gtol=gtol, max_iter=50)
        stats["products"] += result.hessian_products
        value, grad = certified(relaxed, relaxation, lower, upper, result.x)
        if quick > value:
            return quick, x, quick_grad
        return value, result.x, grad

    def bound(lower, upper, start):
        """(lower bound of L on [lower, upper], the minimizer of the best relaxation, split
        scores per coordinate, the best relaxation's gradient there): the best of the
        ``relaxations`` of the box and αBB (from ``shift``), each started at the previous
        one's minimizer; L at every minimizer is offered as an upper bound."""
        best_bound, best_x, best_score, best_grad = -math.inf, np.clip(start, lower, upper), None, None
        seen_gap = math.inf  # L − bound at the last relaxation's minimizer

        def solve(relaxation):
            nonlocal best_bound, best_x, best_score, best_grad, seen_gap
            value, x, grad = solve_relaxation(relaxation, lower, upper, best_x)
            f, _ = counted.at(x)
            if math.isfinite(f):
                consider(x, f, polish=True)
                seen_gap = f - value
            if relaxation.split_score is not None and best_score is None:
                best_score = relaxation.split_score(x)
            if value > best_bound or not math.isfinite(best_bound):
                best_bound, best_x, best_grad = value, x, grad

        def get_shift():
            if shift is None:
                return None
            d = np.asarray(shift(lower, upper, best_x), dtype=np.float64)
            return d if d.shape == (n,) and np.all(np.isfinite(d)) and np.all(d >= 0) else None

        d = get_shift()
        separation = math.inf if d is None else 0.125 * float(d @ ((upper - lower) ** 2))
        if separation == 0.0:  # L is convex on the box: its own minimum, certified
            solve(_alpha_bb(counted, hvp, diagonal, d, lower, upper))
        else:
            others = list(relaxations(counted, hvp, lower, upper, best_x)) if relaxations is not None else []
            for relaxation in others:
                solve(relaxation)
            # αBB once the chord leaves the box open and αBB's separation where the chord's
            # minimizer lies is below the chord's gap there (on boxes where L is nearly convex)
            if d is not None and (not others or (best_bound < best["f"] - gap_tol and
                                                 0.5 * float(d @ ((best_x - lower) * (upper - best_x))) < seen_gap)):
                solve(_alpha_bb(counted, hvp, diagonal, d, lower, upper))
        if best_score is None and d is not None:
            best_score = d * (upper - lower) ** 2  # αBB's separation, coordinate by coordinate
        return best_bound, best_x, best_score, best_grad

    root_bound, root_x, root_score, root_grad = bound(lo.copy(), hi.copy(), best["x"])
    heap: list = [(root_bound, 0, lo.copy(), hi.copy(), root_x, root_score, root_grad, root_bound)]
    nodes, counter = 1, 1
    closed = math.inf  # the lowest bound of a discarded box
    finest = 1e-12 * max(1.0, float(np.max(hi - lo)) if n else 1.0)
    stopped = False
    while heap:
        node_bound = heap[0][0]
        if node_bound >= best["f"] - gap_tol:
            break  # every open box is within gap_tol of the incumbent
        if nodes >= max_nodes:
            stopped = True
            break
        _, _, lower, upper, x, scores, grad, relaxed_bound = heapq.heappop(heap)
        if grad is not None and math.isfinite(relaxed_bound):
            # reduced-cost bound tightening (Ryoo & Sahinidis 1996): where the relaxation's
            # minimizer x sits on a face with the gradient g_i pushing out of the box, every θ
            # at least δ = (incumbent − gap_tol − bound)/|g_i| inside that face has relaxation
            # value ≥ incumbent − gap_tol, by the same linearization that gave the bound
            room = (best["f"] - gap_tol - relaxed_bound) * (1.0 + 1e-9)
            width = upper - lower
            top = (x >= upper) & (grad < 0) & (width > 0)
            bottom = (x <= lower) & (grad > 0) & (width > 0)
            with np.errstate(divide="ignore"):
                reach = room / np.abs(grad)
            top &= reach < width
            bottom &= reach < width
            if top.any() or bottom.any():
                lower, upper = lower.copy(), upper.copy()
                lower[top] = upper[top] - reach[top]
                upper[bottom] = lower[bottom] + reach[bottom]
                closed = min(closed, best["f"] - gap_tol)  # what was cut off cannot improve by gap_tol
                relaxed_bound, x, scores, grad = bound(lower, upper, x)  # the reduced box, bounded afresh
                nodes += 1
                node_bound = max(node_bound, relaxed_bound)
                if node_bound >= best["f"] - gap_tol:
                    closed = min(closed, node_bound)
                    continue
        width = upper - lower
        splittable = (width > finest) & ~fixed
        if not splittable.any():
            closed = min(closed, node_bound)  # a box too small to split: keep its bound
            continue
        score = np.where(splittable, scores if scores is not None else width, -1.0)
        i = int(np.argmax(score)) if score.max() > 0 else int(np.argmax(np.where(splittable, width, -1.0)))
        middle = 0.5 * (lower[i] + upper[i])
        for side in (0, 1):
            child_lower, child_upper = lower.copy(), upper.copy()
            if side == 0:
                child_upper[i] = middle
            else:
                child_lower[i] = middle
            relaxed_bound, child_x, child_score, child_grad = bound(child_lower, child_upper, x)
            nodes += 1
            child_bound = max(relaxed_bound, node_bound)  # a sub-box's minimum is ≥ its parent's bound
            if child_bound < best["f"] - gap_tol:
                heapq.heappush(heap, (child_bound, counter, child_lower, child_upper, child_x, child_score,
                                      child_grad, relaxed_bound))
                counter += 1
            else:
                closed = min(closed, child_bound)
    lower_bound = min(closed, heap[0][0] if heap else math.inf, best["f"])
    if best["result"] is None:  # the incumbent came from a relaxation: polish it
        polished = local_solve(best["x"])
        if polished.value <= best["f"]:
            best.update(x=polished.x, f=polished.value, result=polished)
    final = best["result"]
    x, value = best["x"], best["f"]
    gap = value - lower_bound
    # boxes cut off are recorded at exactly incumbent − gap_tol: allow the rounding of that difference
    converged = gap <= gap_tol + 1e-12 * max(1.0, abs(value)) and not stopped
    if final is not None:
        pg_norm, decrease = final.projected_gradient, final.predicted_decrease
    else:
        f, g = counted.at(x)
        g = np.where(fixed, 0.0, g)
        pg_norm, decrease = float(np.abs(x - np.clip(x - g, lo, hi)).max()), math.nan
    if converged:
        message = f"certified global minimum: gap {gap:.2e} <= gap_tol {gap_tol:.1e} after {nodes} nodes"
    else:
        message = (f"stopped at max_nodes={max_nodes}" if stopped else "boxes too small to split") + \
                  f" with gap {gap:.2e} > gap_tol {gap_tol:.1e} (lower bound {lower_bound:.10g})"
    return SolveResult(x, value, converged, stats["local"], counted.calls, stats["products"], pg_norm, decrease,
                       message, lower_bound=lower_bound, gap=gap, nodes=nodes)


def _others(values: np.ndarray) -> np.ndarray:
    """log Σ_{j≠i} exp(values_j) for every i (prefix and suffix log-sum-exps: no cancellation)."""
    before = np.concatenate(([-np.inf], np.logaddexp.accumulate(values)[:-1]))
    after = np.concatenate((np.logaddexp.accumulate(values[::-1])[::-1][1:], [-np.inf]))
    return np.logaddexp(before, after)


class SoftValueCurvature:
    r"""The structure of the reward classes' round objective that :func:`global_minimize`
    exploits, for an instance (token MDP) and a feature matrix F.

    **Where the non-convexity is.** With r̂_θ = F θ and log π_θ(τ) = log π_ref(τ) +
    (θ·Φ(τ) − V̂_θ(s₀))/β, the soft value of a prompt is a log-partition over the distinct
    feature sums φ of its responses ("atoms", π_ref-mass m_φ),

        V̂_θ(s₀) = β log Σ_φ m_φ exp(θ·φ/β),    ∇²V̂_θ(s₀) = Cov_{π_θ}(Φ)/β  ⪰ 0.

    The pair terms of DPO and IPO depend on θ only through same-prompt margins θ·(Φ₊ − Φ₋)
    (V̂ cancels) and are convex, so the only negative curvature is that of the bonus
    Σ w (θ·Φ(ỹ) − V̂(s₀))/β, −(w/β²) Cov, and — where V̂ does not cancel — of the pair terms
    (LN-DPO: n σ(−m)(1/|τ₊| − 1/|τ₋|) ∇²V̂ ⪰ −n max(0, 1/|τ₋| − 1/|τ₊|) Cov/β; a DPO pair
    across prompts: ⪰ −n Cov_{s₋}/β). Hence ∇²L ⪰ P − Σ_s ω_s Cov_s(θ) + 2λI, with P the
    same-prompt pair terms' Hessian and weights ω_s from the data (:class:`RoundBounds`).

    **Covariance on a box.** For θ in [l, u] each atom's probability is at most
    p̄_φ = a_φ / (a_φ + Σ_{ψ≠φ} b_ψ) with a_φ = m_φ exp(max_θ θ·φ/β) and b_ψ = m_ψ exp(min_θ θ·ψ/β)
    (:meth:`max_probabilities`; exact for atoms of disjoint support, e.g. the one-hot
    rewards of a bandit), and for any centre c, Cov ⪯ E[(Φ − c)(Φ − c)ᵀ] ⪯ Σ_φ p̄_φ (φ − c)(φ − c)ᵀ
    (:meth:`covariance_bound`). As the box shrinks p̄ tends to π_θ, so the bound of a flat
    direction (a response of tiny mass) is tiny.

    The atoms are enumerated once per prompt by a backward pass over the DAG (states are in
    topological order), merging equal sums; more than ``max_atoms`` at a state is refused
    (ValueError naming ``solver``).
    """

    def __init__(self, next_state: np.ndarray, ref_logp: np.ndarray, features, starts, *, max_atoms: int = MAX_ATOMS):
        import scipy.sparse as sp

        self.next_state = np.asarray(next_state)
        self.ref_logp = np.asarray(ref_logp)
        self.features = sp.csr_matrix(features)
        self.n_params = int(self.features.shape[1])
        self.max_atoms = int(max_atoms)
        self._atoms: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        for s in np.asarray(starts).tolist():
            self.atoms(int(s))

    def _phi(self, s: int) -> np.ndarray:
        n_actions = self.next_state.shape[1]
        return self.features[s * n_actions:(s + 1) * n_actions].toarray()

    def atoms(self, state: int) -> tuple[np.ndarray, np.ndarray]:
        """(the distinct Φ(τ) (n, d), their log π_ref-masses (n,)) of the responses from
        ``state``."""
        if state in self._atoms:
            return self._atoms[state]
        next_state, allowed = self.next_state, self.ref_logp > -np.inf
        reach, stack = {state}, [state]
        while stack:  # the states below ``state`` whose atoms are not known yet
            s = stack.pop()
            for t in next_state[s][allowed[s]].tolist():
                if t >= 0 and t not in reach and t not in self._atoms:
                    reach.add(t)
                    stack.append(t)
        end = (np.zeros((1, self.n_params)), np.zeros(1))
        for s in sorted(reach, reverse=True):
            if s in self._atoms:
                continue
            phi = self._phi(s)
            points, masses = [], []
            for a in np.flatnonzero(allowed[s]).tolist():
                t = int(next_state[s, a])
                child = end if t < 0 else self._atoms[t]
                points.append(child[0] + phi[a])
                masses.append(child[1] + self.ref_logp[s, a])
            points, masses = np.concatenate(points), np.concatenate(masses)
            unique, inverse = np.unique(points, axis=0, return_inverse=True)
            merged = np.full(unique.shape[0], -np.inf)
            np.logaddexp.at(merged, inverse.ravel(), masses)
            if unique.shape[0] > self.max_atoms:
                raise ValueError(f"solver='global' enumerates the distinct feature sums Φ(τ) of the responses from "
                                 f"each prompt; state {s} has {unique.shape[0]}, more than {self.max_atoms}")
            self._atoms[s] = (unique, merged)
        return self._atoms[state]

    def round_bounds(self, arrays: dict, beta: float, kind: int, l2: float = 0.0) -> "RoundBounds":
        """The bounds of one round's objective, given its kernel-ready arrays
        (``explore_weight`` = α · count) and pair loss ``kind``."""
        return RoundBounds(self, arrays, beta, kind, l2)

    def path_features(self, arrays: dict) -> np.ndarray:
        """Φ(τ_k) = Σ_h φ(s_h, a_h) of every path of the data, (n_paths, d)."""
        import scipy.sparse as sp

        states, actions, lengths = arrays["path_states"], arrays["path_actions"], arrays["path_lengths"]
        on_path = np.arange(states.shape[1])[None, :] < lengths[:, None]
        rows = np.nonzero(on_path)[0]
        columns = states[on_path] * self.next_state.shape[1] + actions[on_path]
        incidence = sp.csr_matrix((np.ones(rows.size), (rows, columns)),
                                  shape=(lengths.size, self.features.shape[0]))
        return np.asarray((incidence @ self.features).todense())

    def max_probabilities(self, state: int, lower: np.ndarray, upper: np.ndarray, beta: float) -> np.ndarray:
        """p̄: an upper bound on each atom's probability π_θ(φ) over the box (see the class
        docstring)."""
        points, log_mass = self.atoms(state)
        at_upper, at_lower = points * upper, points * lower
        top = log_mass + np.maximum(at_upper, at_lower).sum(axis=1) / beta
        bottom = log_mass + np.minimum(at_upper, at_lower).sum(axis=1) / beta
        with np.errstate(over="ignore", invalid="ignore"):
            p_max = np.exp(top - np.logaddexp(top, _others(bottom))) * (1.0 + _SAFETY)
        return np.where(np.isnan(p_max), 1.0, np.minimum(p_max, 1.0))

    def covariance_bound(self, state: int, lower: np.ndarray, upper: np.ndarray, beta: float) -> np.ndarray:
        """M ⪰ Cov_{π_θ}(Φ) for every θ of the box: Σ_φ p̄_φ (φ − c)(φ − c)ᵀ with c the
        p̄-weighted mean of the atoms (Cov ⪯ E[(Φ − c)(Φ − c)ᵀ] for any c)."""
        points = self.atoms(state)[0]
        if points.shape[0] == 1:
            return np.zeros((self.n_params, self.n_params))
        p_max = self.max_probabilities(state, lower, upper, beta)
        centred = points - (p_max @ points) / p_max.sum()
        return (centred * p_max[:, None]).T @ centred


class RoundBounds:
    r"""Lower-bounding machinery for one round's objective of a reward class: the weights
    ω_s of the negative curvature, a rigorous lower bound on the Hessian over a box
    (:meth:`shift`, αBB) and the chord relaxation (:meth:`relaxations`). See
    :class:`SoftValueCurvature`."""

    def __init__(self, curvature: SoftValueCurvature, arrays: dict, beta: float, kind: int, l2: float = 0.0):
        from xpo_sim._kernels.preference import LOSS_IPO, LOSS_LN_DPO

        self.curvature, self.beta, self.kind, self.l2 = curvature, float(beta), int(kind), float(l2)
        self.n_params = curvature.n_params
        start = arrays["path_states"][:, 0] if arrays["path_states"].size else np.zeros(0, dtype=np.int64)
        omega: dict[int, float] = {}

        def add(s, w):
            if w > 0:
                omega[int(s)] = omega.get(int(s), 0.0) + float(w)

        for k, w in zip(arrays["explore_path"].tolist(), arrays["explore_weight"].tolist()):
            add(start[k], w / (beta * beta))
        lengths = arrays["path_lengths"]
        convex_pairs = []
        for j, (c, r, n) in enumerate(zip(arrays["pair_chosen"].tolist(), arrays["pair_rejected"].tolist(),
                                          arrays["pair_count"].tolist())):
            same = start[c] == start[r]
            if kind == LOSS_LN_DPO:
                if same:
                    add(start[c], n * max(0.0, 1.0 / lengths[r] - 1.0 / lengths[c]) / beta)
                else:
                    add(start[r], n / (lengths[r] * beta))
            elif same:
                convex_pairs.append(j)
            else:
                if kind == LOSS_IPO:
                    raise ValueError("solver='global' with loss='ipo' needs both responses of every pair to share "
                                     f"a prompt; a pair compares responses to prompts {start[c]} and {start[r]}")
                add(start[r], n / beta)
        self.states = np.array(sorted(omega), dtype=np.int64)
        self.omega = np.array([omega[s] for s in self.states.tolist()])
        # same-prompt DPO/IPO pairs: L's pair term n ℓ(θ·δ), δ = Φ₊ − Φ₋, Hessian n ℓ''(θ·δ) δδᵀ
        chosen = arrays["pair_chosen"][convex_pairs]
        rejected = arrays["pair_rejected"][convex_pairs]
        if convex_pairs:
            features = curvature.path_features(arrays)
            self.delta = features[chosen] - features[rejected]
        else:
            self.delta = np.zeros((0, self.n_params))
        self.count = np.asarray(arrays["pair_count"])[convex_pairs].astype(np.float64)

    def _pair_hessian_lower(self, lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
        """P ⪯ the pair terms' Hessian everywhere in the box: DPO's ℓ'' = σ(m)σ(−m) is even
        and decreasing in |m|, so on the margin's range [m̲, m̄] it is ≥ its value at
        max(|m̲|, |m̄|); IPO's is the constant 2/β²."""
        from xpo_sim._kernels.preference import LOSS_IPO

        if not self.count.size:
            return np.zeros((self.n_params, self.n_params))
        if self.kind == LOSS_IPO:
            weight = self.count * (2.0 / self.beta ** 2)
        else:
            at_upper, at_lower = self.delta * upper, self.delta * lower
            low = np.minimum(at_upper, at_lower).sum(axis=1)
            high = np.maximum(at_upper, at_lower).sum(axis=1)
            far = np.maximum(np.abs(low), np.abs(high)) * (1.0 + 1e-12) + 1e-300
            weight = self.count * np.exp(-far) / (1.0 + np.exp(-far)) ** 2 * (1.0 - _SAFETY)
        return (self.delta * weight[:, None]).T @ self.delta

    def hessian_lower(self, lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
        """A with ∇²L(θ) ⪰ A for every θ in the box: the pair terms' P (same-prompt DPO/IPO
        pairs), plus 2λI, minus Σ_s ω_s M_s (:meth:`SoftValueCurvature.covariance_bound`)."""
        a = self._pair_hessian_lower(lower, upper)
        for s, w in zip(self.states.tolist(), self.omega.tolist()):
            a = a - (w * (1.0 + _SAFETY)) * self.curvature.covariance_bound(s, lower, upper, self.beta)
        if self.l2:
            a = a + 2.0 * self.l2 * (1.0 - _SAFETY) * np.eye(self.n_params)
        return a

    def shift(self, lower: np.ndarray, upper: np.ndarray, hint: np.ndarray | None = None) -> np.ndarray:
        r"""D ≥ 0 with ∇²L(θ) + diag(D) ⪰ 0 on the box, from A = :meth:`hessian_lower`
        restricted to the coordinates of positive width w (a coordinate of zero width takes no
        shift: its product (θ_i − l_i)(u_i − θ_i) vanishes). Candidates, all valid, of which the
        smallest separation Σ_i D_i w_i² is taken (Adjiman et al. 1998, uniform and scaled
        shifts): the uniform max(0, −λ_min(A)); the scaled D_i = max(0, −λ_min(W A W))/w_i²
        (W = diag(w)); Gerschgorin's D_i = max(0, Σ_{j≠i} |A_ij| − A_ii); and its scaled form
        max(0, Σ_{j≠i} |A_ij| w_j/w_i − A_ii); each eigenvalue less its rounding; and, for the
        coordinates B where ``hint`` lies on a face of the box (F the others), the shift on B
        alone: with A_FF ≻ 0, A + diag(D) ⪰ 0 ⟺ A_BB + D_B − A_BF A_FF⁻¹ A_FB ⪰ 0 (Schur
        complement; A_FF⁻¹ taken with A_FF − εI, ε = 10⁻³ λ_min(A_FF), which only enlarges
        D_B). A shift on a coordinate whose relaxation minimizer sits on a face costs the bound
        nothing there. D = 0 when the
        pair terms' curvature dominates the bonus's on the box: L is convex there and the box
        closes at once."""
        width = upper - lower
        shift = np.zeros(self.n_params)
        wide = np.flatnonzero(width > 0)
        if not wide.size:
            return shift
        a = self.hessian_lower(lower, upper)[np.ix_(wide, wide)]
        w = width[wide]
        size = float(np.abs(a).sum()) + 1e-300
        slack = 1e-12 * size  # the rounding of eigvalsh and of the sums

        def eigen_shift(matrix, scale):
            smallest = float(np.linalg.eigvalsh(matrix)[0])
            tolerance = 1e-12 * (float(np.abs(matrix).sum()) + 1e-300)
            return np.full(w.size, 0.0 if smallest >= tolerance else tolerance - smallest) / scale

        candidates = [eigen_shift(a, np.ones(w.size)), eigen_shift(a * np.outer(w, w), w * w)]
        magnitude = np.abs(a)
        diagonal = np.diag(a)
        for off in (magnitude.sum(axis=1) - np.abs(diagonal), (magnitude @ w - np.abs(diagonal) * w) / w):
            gerschgorin = np.maximum(off - diagonal, 0.0)
            candidates.append(np.where(gerschgorin > 0, gerschgorin + slack, 0.0))
        if hint is not None:
            x = hint[wide]
            face = np.minimum(x - lower[wide], upper[wide] - x) <= 1e-3 * w
            inner = ~face
            if face.any() and inner.any():
                a_ff = a[np.ix_(inner, inner)]
                smallest = float(np.linalg.eigvalsh(a_ff)[0])
                if smallest > 1e3 * slack:
                    eps = 1e-3 * smallest
                    coupling = a[np.ix_(face, inner)]
                    schur = a[np.ix_(face, face)] - coupling @ np.linalg.solve(a_ff - eps * np.eye(a_ff.shape[0]),
                                                                               coupling.T)
                    schur = 0.5 * (schur + schur.T)
                    low = float(np.linalg.eigvalsh(schur)[0])
                    need = 0.0 if low >= slack else slack - low
                    d = np.zeros(w.size)
                    d[face] = need
                    candidates.append(d)
        if hint is None:
            cost = 0.25 * w * w
        else:  # the separation at the hint, where the relaxation's minimizer is expected
            cost = (hint[wide] - lower[wide]) * (upper[wide] - hint[wide]) + 1e-3 * w * w
        shift[wide] = min(candidates, key=lambda d: float(d @ cost))
        return shift

    def soft_values(self, theta: np.ndarray):
        """(S, ∇S, probabilities per prompt) of S(θ) = Σ_s ω_s β V̂_s(θ), from the atoms."""
        beta = self.beta
        total, grad, probs = 0.0, np.zeros(self.n_params), []
        for s, w in zip(self.states.tolist(), self.omega.tolist()):
            points, log_mass = self.curvature.atoms(s)
            z = log_mass + points @ theta / beta
            top = z.max()
            e = np.exp(z - top)
            mass = e.sum()
            p = e / mass
            total += w * beta * beta * (top + math.log(mass))
            grad += w * beta * (points.T @ p)
            probs.append(p)
        return total, grad, probs

    def relaxations(self, fun, hvp, lower: np.ndarray, upper: np.ndarray, hint: np.ndarray) -> list[Relaxation]:
        r"""The chord relaxation of the box [lower, upper].

        With κ_s = ω_s β, L + Σ_s κ_s V̂_s is convex (its Hessian is ∇²L + Σ_s ω_s Cov_s ⪰ 0).
        Each partition function Z_s(θ) = Σ_φ m_φ e^{θ·φ/β} is a sum of exponentials of
        y = θ·φ ∈ [a_φ, b_φ] (its range over the box), each below its chord (the concave
        envelope of a convex function of one variable): so Z_s ≤ C_s on the box, with C_s(θ) =
        Σ_φ m_φ [e^{a_φ/β} + (θ·φ − a_φ)(e^{b_φ/β} − e^{a_φ/β})/(b_φ − a_φ)] affine and > 0. Then
        −κ_s V̂_s = −κ_s β log Z_s ≥ −κ_s β log C_s, and

            R(θ) = L(θ) + Σ_s κ_s β [log Z_s(θ) − log C_s(θ)]  ≤ L(θ)  on the box,

        convex (L + Σ κ_s V̂_s convex, −log of a positive affine function convex). Its gap,
        κ_s β log(C_s/Z_s), is at most κ_s β times the chords' relative excess — bounded by
        the mass the box lets the atoms take, however wide the box (αBB's grows like
        κ p̄ w²/(8β)) — and of second order, ≈ κ_s Σ_φ p_φ (b_φ − a_φ)²/(8β), on small boxes.
        ``hint`` is not used (the bound needs no expansion point)."""
        states, omega, beta = self.states, self.omega, self.beta
        if not states.size:
            return []
        pieces = []
        for s, w in zip(states.tolist(), omega.tolist()):
            points, log_mass = self.curvature.atoms(s)
            at_upper, at_lower = points * upper, points * lower
            a = np.minimum(at_upper, at_lower).sum(axis=1)
            b = np.maximum(at_upper, at_lower).sum(axis=1)
            pad = 1e-12 * (np.abs(a) + np.abs(b) + 1.0)  # the rounding of the ranges themselves
            a, b = a - pad, b + pad
            ref = float(np.max(log_mass + b / beta))  # C_s = e^{ref} (start + rise·(θ·φ − a))
            with np.errstate(over="ignore", invalid="ignore"):
                start = np.exp(log_mass + a / beta - ref)
                rise = start * np.expm1((b - a) / beta) / (b - a)
            if not (np.all(np.isfinite(start)) and np.all(np.isfinite(rise))):
                return []
            constant = float(start.sum() - rise @ a)
            pieces.append((points, w * beta, ref, constant, points.T @ rise, (log_mass, a, start, rise)))
        probs_now: list = []
        chord_now: list = []

        def relaxed(y):
            f, g = fun(y)
            value, grad, probs = self.soft_values(y)
            probs_now[:] = probs
            chord_now.clear()
            for points, kappa, ref, constant, slope, _ in pieces:
                c = constant + float(slope @ y)  # C_s / e^{ref}
                if not c > 0.0:
                    return -math.inf, g
                chord_now.append(c)
                value -= kappa * beta * (ref + math.log(c))
                grad = grad - (kappa * beta / c) * slope
            return f + value, g + grad

        def hessian(v):
            out = hvp(v)
            for (points, kappa, _, _, slope, _), p, c, w in zip(pieces, probs_now, chord_now, omega.tolist()):
                mean = points.T @ p
                out = out + w * (points.T @ (p * (points @ v)) - mean * float(mean @ v))
                out = out + (kappa * beta * float(slope @ v) / (c * c)) * slope
            return out

        def split_score(x):
            """Each atom's chord excess at x, κβ (C_φ − e^{x·φ/β}) m_φ / C_s (its share of the
            gap log C_s − log Z_s), shared among the coordinates by their part of the atom's range."""
            width = upper - lower
            score = np.zeros(self.n_params)
            for points, kappa, ref, constant, slope, (log_mass, a, start, rise) in pieces:
                y = points @ x
                c = constant + float(slope @ x)
                with np.errstate(over="ignore"):
                    excess = np.maximum(start + rise * (y - a) - np.exp(log_mass + y / beta - ref), 0.0)
                share = np.abs(points) * width
                total = share.sum(axis=1)
                share = np.divide(share, total[:, None], out=np.zeros_like(share), where=total[:, None] > 0)
                score += (kappa * beta / max(c, 1e-300)) * (excess @ share)
            return score

        scale = sum(kappa * beta * (abs(ref) + 1.0) for _, kappa, ref, _, _, _ in pieces)
        return [Relaxation(relaxed, hessian, None, scale, split_score)]
