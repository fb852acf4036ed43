"""xpo_sim.intervals against oracles: Wilson against SciPy's binomtest, the vectorized
bootstrap slope against one polyfit per resample (tests/naive.py), and coverage of the
bootstrap on data whose truth is known."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, strategies as st
from scipy import stats

import naive
from xpo_sim import intervals


@given(st.integers(1, 200).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))),
       st.sampled_from([0.8, 0.9, 0.95, 0.99]))
def test_wilson_matches_scipy(kn, level):
    k, n = kn
    p, low, high = intervals.wilson_interval(k, n, level=level)
    ci = stats.binomtest(k, n).proportion_ci(confidence_level=level, method="wilson")
    assert p == k / n
    assert low == pytest.approx(ci.low, abs=1e-12) and high == pytest.approx(ci.high, abs=1e-12)
    assert 0 <= low <= p <= high <= 1


@given(st.integers(2, 12), st.integers(2, 8), st.sampled_from(intervals.AGGREGATES), st.integers(0, 10**6))
def test_slope_interval_matches_one_fit_per_resample(seeds, points, aggregate, seed):
    rng = np.random.default_rng(seed)
    x = np.sort(rng.uniform(1, 1000, size=points)) + np.arange(points)  # distinct
    curves = np.exp(rng.normal(size=(seeds, points))) * x ** -0.5
    est, low, high = intervals.slope_interval(x, curves, aggregate=aggregate, n_boot=200, seed=seed)
    idx = np.random.default_rng(seed).integers(0, seeds, size=(200, seeds))
    slopes = naive.bootstrap_slopes(x, curves, aggregate, idx)
    q = np.quantile(slopes, [0.025, 0.975])
    assert low == pytest.approx(q[0], rel=1e-9, abs=1e-9) and high == pytest.approx(q[1], rel=1e-9, abs=1e-9)
    assert est == pytest.approx(naive.bootstrap_slopes(x, curves, aggregate, [np.arange(seeds)])[0], rel=1e-9, abs=1e-12)


def test_slope_recovers_a_power_law():
    x = np.geomspace(10, 10_000, 12)
    rng = np.random.default_rng(1)
    curves = 3.0 * x ** -0.4 * np.exp(0.3 * rng.normal(size=(40, x.size)))
    for aggregate in intervals.AGGREGATES:
        est, low, high = intervals.slope_interval(x, curves, aggregate=aggregate)
        assert low < -0.4 < high, aggregate
        assert high - low < 0.1


def test_bootstrap_median_covers_the_truth_most_of_the_time():
    # 200 independent experiments of 30 exponential draws (median log 2): a 90% interval
    # should miss the truth in roughly 10% of them; we allow a wide band around it
    rng = np.random.default_rng(2)
    misses = 0
    for i in range(200):
        x = rng.exponential(size=30)
        _, low, high = intervals.bootstrap_interval(x, level=0.9, n_boot=500, seed=i)
        misses += not (low <= np.log(2) <= high)
    assert 5 <= misses <= 40


def test_bootstrap_callable_and_mean_agree():
    x = np.arange(10.0)
    a = intervals.bootstrap_interval(x, "mean", seed=3)
    b = intervals.bootstrap_interval(x, np.mean, seed=3)
    assert a == pytest.approx(b)
    assert intervals.bootstrap_interval([4.0]) == (4.0, 4.0, 4.0)


def test_separated_and_format():
    assert intervals.separated((1, 0.5, 1.5), (3, 2, 4))
    assert not intervals.separated((1, 0.5, 2.5), (3, 2, 4))
    assert intervals.format_interval((0.5, 0.25, 0.75)) == "0.5 [0.25, 0.75]"


@pytest.mark.parametrize("call, name", [
    (lambda: intervals.bootstrap_interval([]), "values"),
    (lambda: intervals.bootstrap_interval([1.0, np.nan]), "values"),
    (lambda: intervals.bootstrap_interval([1.0], level=1.5), "level"),
    (lambda: intervals.bootstrap_interval([1.0], n_boot=10), "n_boot"),
    (lambda: intervals.bootstrap_interval([1.0], statistic="mode"), "statistic"),
    (lambda: intervals.wilson_interval(3, 2), "k <= n"),
    (lambda: intervals.wilson_interval(1.5, 2), "k"),
    (lambda: intervals.fit_slope([1, 2], [[1.0, 0.0]]), "x > 0"),
    (lambda: intervals.fit_slope([1, 2], [[1.0, 2.0, 3.0]]), "shape"),
    (lambda: intervals.fit_slope([1, 2], [[1.0, 2.0]], aggregate="max"), "aggregate"),
    (lambda: intervals.fit_slope([1], [[1.0]]), "two points"),
])
def test_bad_input_names_the_argument(call, name):
    with pytest.raises(ValueError, match=name):
        call()
