r"""Uncertainty for the claims read off a few seeds: percentile-bootstrap intervals for a
statistic over seeds, Wilson intervals for "k of n runs", and bootstrap intervals on a
fitted log–log slope.

**Percentile bootstrap** (Efron & Tibshirani 1993, ch. 13). For values x₁…x_n (one per
seed) and a statistic s (the median by default), draw B resamples x*_b of size n with
replacement and report the (1−level)/2 and (1+level)/2 quantiles of s(x*_b). Resampling
is over *seeds*, the independent unit of the simulator.

**Wilson score interval** (Wilson 1927) for a proportion k/n at z = Φ⁻¹((1+level)/2):

    centre = (k + z²/2) / (n + z²),   half-width = z √(k(n−k)/n + z²/4) / (n + z²).

It stays inside [0, 1] and is not degenerate at k = 0 or k = n, unlike the normal one.

**Slope of a rate.** For curves y_s(T) (one per seed) on a common grid of T, the slope b of
log y = a + b log T fitted by least squares to an aggregate curve (the median or the
geometric mean over seeds, or their arithmetic mean); the interval resamples seeds,
recomputes the aggregate curve and refits.

**Separation.** :func:`separated` says whether two intervals do not overlap; a claim that
one method beats another is made only then.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
from scipy import special

__all__ = ["bootstrap_interval", "wilson_interval", "slope_interval", "fit_slope", "separated", "format_interval"]

AGGREGATES = ("median", "geomean", "mean")


def _level(level) -> float:
    if isinstance(level, bool) or not isinstance(level, (int, float, np.floating)) or not 0 < level < 1:
        raise ValueError(f"level must be a number in (0, 1), got {level!r}")
    return float(level)


def _resamples(n_boot) -> int:
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 100:
        raise ValueError(f"n_boot must be an int of at least 100, got {n_boot!r}")
    return int(n_boot)


def _values(name: str, values) -> np.ndarray:
    try:
        x = np.asarray(values, dtype=np.float64).ravel()
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a sequence of numbers, got {values!r}") from None
    if x.size == 0:
        raise ValueError(f"{name} is empty: an interval needs at least one value")
    if np.isnan(x).any():
        raise ValueError(f"{name} holds NaN ({int(np.isnan(x).sum())} of {x.size} values)")
    return x


def bootstrap_interval(values, statistic: Callable | str = "median", *, level: float = 0.95, n_boot: int = 2000,
                       seed: int = 0) -> tuple[float, float, float]:
    """(estimate, low, high): the statistic of ``values`` (one per seed) and its percentile
    bootstrap interval at ``level`` from ``n_boot`` resamples (deterministic in ``seed``).
    ``statistic``: "median", "mean" or a function of a 1-D array. One value gives a
    zero-width interval (nothing to resample)."""
    x = _values("values", values)
    level, n_boot = _level(level), _resamples(n_boot)
    if isinstance(statistic, str):
        if statistic not in ("median", "mean"):
            raise ValueError(f"statistic must be 'median', 'mean' or a function, got {statistic!r}")
        stat = np.median if statistic == "median" else np.mean
        vectorized = True
    elif callable(statistic):
        stat, vectorized = statistic, False
    else:
        raise ValueError(f"statistic must be 'median', 'mean' or a function, got {statistic!r}")
    estimate = float(stat(x))
    if x.size == 1:
        return estimate, estimate, estimate
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, x.size, size=(n_boot, x.size))
    draws = stat(x[idx], axis=1) if vectorized else np.array([stat(x[i]) for i in idx], dtype=np.float64)
    low, high = np.quantile(draws, [(1 - level) / 2, (1 + level) / 2])
    return estimate, float(low), float(high)


def wilson_interval(k, n, *, level: float = 0.95) -> tuple[float, float, float]:
    """(k/n, low, high): the Wilson score interval for k successes in n runs (formula in
    the module docstring)."""
    for name, v in (("k", k), ("n", n)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise ValueError(f"{name} must be an int, got {v!r}")
    if n < 1 or not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n and n >= 1, got k={k!r}, n={n!r}")
    z = math.sqrt(2.0) * float(special.erfinv(_level(level)))
    p = k / n
    denom = n + z * z
    centre = (k + z * z / 2) / denom
    half = z * math.sqrt(k * (n - k) / n + z * z / 4) / denom
    # exact ends at k = 0 and k = n (the formula gives them up to rounding)
    low = 0.0 if k == 0 else min(p, max(0.0, centre - half))
    high = 1.0 if k == n else max(p, min(1.0, centre + half))
    return p, low, high


def _aggregate(curves: np.ndarray, how: str) -> np.ndarray:
    if how == "median":
        return np.median(curves, axis=-2)
    if how == "geomean":
        return np.exp(np.mean(np.log(curves), axis=-2))
    return np.mean(curves, axis=-2)


def _check_curves(x, curves, aggregate: str) -> tuple[np.ndarray, np.ndarray]:
    if aggregate not in AGGREGATES:
        raise ValueError(f"aggregate must be one of {AGGREGATES}, got {aggregate!r}")
    x = _values("x", x)
    try:
        y = np.asarray(curves, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError("curves must be a (seeds, points) array of numbers") from None
    if y.ndim == 1:
        y = y[None, :]
    if y.ndim != 2 or y.shape[1] != x.size:
        raise ValueError(f"curves must have shape (seeds, {x.size}) to match x, got {y.shape}")
    if x.size < 2:
        raise ValueError("a slope needs at least two points of x")
    if (x <= 0).any() or not np.isfinite(y).all() or (y <= 0).any():
        raise ValueError("a log–log slope needs x > 0 and finite curves > 0 (a zero regret has no logarithm)")
    return x, y


def fit_slope(x, curves, *, aggregate: str = "median") -> float:
    """Least-squares slope b of log(agg_s y_s(x)) = a + b log x, agg over the rows (seeds)
    of ``curves``: "median", "geomean" (geometric mean) or "mean" (arithmetic mean, which
    the slowest seeds dominate)."""
    x, y = _check_curves(x, curves, aggregate)
    return float(np.polyfit(np.log(x), np.log(_aggregate(y, aggregate)), 1)[0])


def slope_interval(x, curves, *, aggregate: str = "median", level: float = 0.95, n_boot: int = 2000,
                   seed: int = 0) -> tuple[float, float, float]:
    """(slope, low, high): :func:`fit_slope` and its bootstrap interval over seeds (rows of
    ``curves`` resampled with replacement, the aggregate curve recomputed and refitted)."""
    x, y = _check_curves(x, curves, aggregate)
    level, n_boot = _level(level), _resamples(n_boot)
    estimate = fit_slope(x, y, aggregate=aggregate)
    if y.shape[0] == 1:
        return estimate, estimate, estimate
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, y.shape[0], size=(n_boot, y.shape[0]))
    agg = _aggregate(y[idx], aggregate)  # (n_boot, points)
    logx = np.log(x)
    centred = logx - logx.mean()
    logy = np.log(agg)
    slopes = (logy - logy.mean(axis=1, keepdims=True)) @ centred / (centred @ centred)
    low, high = np.quantile(slopes, [(1 - level) / 2, (1 + level) / 2])
    return estimate, float(low), float(high)


def separated(a: tuple, b: tuple) -> bool:
    """Whether the intervals of ``a`` and ``b`` (each (estimate, low, high)) do not overlap."""
    return a[2] < b[1] or b[2] < a[1]


def format_interval(interval: tuple, digits: int = 2, *, fmt: str | None = None) -> str:
    """'est [low, high]' with ``digits`` significant digits (or a format spec ``fmt``)."""
    est, low, high = interval
    spec = fmt if fmt is not None else f".{digits}g"
    return f"{est:{spec}} [{low:{spec}}, {high:{spec}}]"
