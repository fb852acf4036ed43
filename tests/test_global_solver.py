"""solver="global": the certified global argmin of a round's objective.

The lower bounds are checked against dense samples of random boxes (they must never exceed
the minimum of L there: αBB's shift must make the Hessian positive semidefinite, the chord
relaxation must stay below L), the certified minimum against many random-start local solves
and a brute-force grid, the convex case against Newton, and the refusals and the honest
report of a search cut short."""

import math
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import xpo_sim
from xpo_sim import envs
from xpo_sim.data import PreferenceData
from xpo_sim.policies import ImplicitRewardClass, LinearRewardClass
from xpo_sim.solvers import GLOBAL_MAX_PARAMS, ConvergenceWarning, global_minimize, projected_newton

from naive import grid_minimum
from strategies import mdps
from test_algorithms import random_data

ROOT = Path(__file__).resolve().parents[1]


def problem(cls, data, alpha, loss="dpo"):
    """The pieces of ``cls``'s global solve for one round's data."""
    state = cls._objective_arrays(data, alpha, loss)
    return cls._global_parts(state)


def solve(cls, parts, x0, lo, hi, **options):
    return global_minimize(parts["fun"], parts["hvp"], parts["shift"], x0, lo, hi, diagonal=parts["diagonal"],
                           fixed=parts["fixed"], relaxations=parts["relaxations"], **options)


def full_hessian(parts, theta):
    parts["fun"](theta)
    n = theta.size
    h = np.array([parts["hvp"](e) for e in np.eye(n)])
    return 0.5 * (h + h.T)


def random_class(mdp, beta, rng, linear, l2):
    if linear:
        d = int(rng.integers(1, 4))
        return LinearRewardClass(mdp, beta, features=rng.normal(size=(mdp.n_states, mdp.n_actions, d)),
                                 box=(-1.0, 1.5), l2=l2, solver="global")
    assume(int(mdp.allowed.sum()) <= GLOBAL_MAX_PARAMS)
    return ImplicitRewardClass(mdp, beta, support="all", box=(-1.0, 1.5), l2=l2, solver="global")


@settings(max_examples=40)
@given(mdp=mdps(max_states=5, max_actions=3), beta=st.floats(0.1, 2.0), alpha=st.sampled_from([0.05, 0.5, 2.0]),
       loss=st.sampled_from(["dpo", "ipo", "ln_dpo"]), linear=st.booleans(), l2=st.sampled_from([0.0, 0.3]),
       seed=st.integers(0, 2**32 - 1))
def test_lower_bounds_are_valid_on_random_boxes(mdp, beta, alpha, loss, linear, l2, seed):
    """On a random sub-box: ∇²L + diag(D) ⪰ 0 at sampled points (αBB's shift), the chord
    relaxation ≤ L at sampled points, and the bound of the box (one node) ≤ the minimum of
    L over dense samples and over local solves from them."""
    rng = np.random.default_rng(seed)
    cls = random_class(mdp, beta, rng, linear, l2)
    data = random_data(mdp, rng, n_pairs=int(rng.integers(1, 10)), n_explore=int(rng.integers(1, 6)))
    parts = problem(cls, data, alpha, loss)
    n = cls.n_params
    a, b = rng.uniform(-1.0, 1.5, (2, n))
    lower, upper = np.minimum(a, b), np.maximum(a, b)
    flat = rng.random(n) < 0.2  # some coordinates of zero width
    lower[flat] = upper[flat]
    samples = rng.uniform(lower, upper, (200, n))
    values = np.array([parts["fun"](theta)[0] for theta in samples])
    scale = 1.0 + np.abs(values).max()
    hint = samples[0]
    shift = parts["shift"](lower, upper, hint)
    assert shift.shape == (n,) and np.all(shift >= 0)
    wide = np.flatnonzero(upper > lower)  # the box's own directions (the others are pinned)
    for theta in samples[:8]:
        shifted = (full_hessian(parts, theta) + np.diag(shift))[np.ix_(wide, wide)]
        if wide.size:
            assert np.linalg.eigvalsh(shifted)[0] >= -1e-7 * (1.0 + np.abs(shift).max() + scale)
    for relaxation in parts["relaxations"](parts["fun"], parts["hvp"], lower, upper, hint):
        for theta, value in zip(samples[:50], values[:50]):
            assert relaxation.fun(theta)[0] <= value + 1e-9 * scale
    local = min(projected_newton(parts["fun"], parts["hvp"], theta, lower, upper).value for theta in samples[:5])
    root = solve(cls, parts, samples[0], lower, upper, max_nodes=1)
    assert root.lower_bound <= min(values.min(), local) + 1e-9 * scale
    deeper = solve(cls, parts, samples[0], lower, upper, max_nodes=40)
    assert deeper.lower_bound <= min(values.min(), local) + 1e-9 * scale
    assert deeper.lower_bound <= deeper.value
    if deeper.converged:
        assert deeper.value <= min(values.min(), local) + deeper.gap + 1e-9 * scale


def random_bandit_round(seed):
    """A small bandit (3–5 responses, 2–7 pairs with random labels, every compared response
    explored), its α and β."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(3, 6))
    mdp = envs.bandit(n, seed=int(rng.integers(1000)))
    data = PreferenceData(mdp)
    ids = data.path_ids(xpo_sim.sample_trajectories(mdp, mdp.ref_logp, 2 * 7, rng))
    n_pairs = int(rng.integers(2, 8))
    data.add_pairs(ids[:n_pairs], ids[n_pairs:2 * n_pairs])
    data.add_explored(ids[:2 * n_pairs])
    alpha = float(rng.choice([0.01, 0.1, 0.5]))
    beta = float(rng.choice([0.1, 0.3, 1.0]))
    return mdp, data, alpha, beta, rng


@pytest.mark.parametrize("seed", range(12))
def test_global_beats_random_restarts_and_the_warm_start(seed):
    """The certified minimum is ≤ the best of 60 random-start local solves and ≤ the
    warm-started local update, within the gap tolerance; its lower bound is ≤ both."""
    mdp, data, alpha, beta, rng = random_bandit_round(seed)
    local_cls = ImplicitRewardClass(mdp, beta, box=(0.0, 1.0))
    global_cls = ImplicitRewardClass(mdp, beta, box=(0.0, 1.0), solver="global")
    warm = rng.uniform(0.0, 1.0, local_cls.n_params)
    local_cls.update(warm, data, alpha)
    local = local_cls.solve_results[-1]
    global_cls.update(warm, data, alpha)
    result = global_cls.solve_results[-1]
    assert result.converged, result.message
    assert result.gap <= global_cls.gap_tol * (1 + 1e-9) + 1e-12 * abs(result.value)
    restarts = []
    for _ in range(60):
        local_cls.update(rng.uniform(0.0, 1.0, local_cls.n_params), data, alpha)
        restarts.append(local_cls.solve_results[-1].value)
    assert result.value <= min(restarts) + 1e-9
    assert result.value <= local.value + 1e-12 * abs(local.value)
    assert result.lower_bound <= min(min(restarts), local.value) + 1e-9
    assert np.isclose(global_cls.objective(result.x, data, alpha)[0], result.value, rtol=1e-12)


def test_the_warm_start_misses_the_global_minimum_on_some_bandits():
    """The comparison above is not vacuous: on these 12 bandits the warm-started Newton
    update ends above the certified minimum in several (measured: 3, by up to 5.5)."""
    misses = 0
    for seed in range(12):
        mdp, data, alpha, beta, rng = random_bandit_round(seed)
        local = ImplicitRewardClass(mdp, beta, box=(0.0, 1.0))
        exact = ImplicitRewardClass(mdp, beta, box=(0.0, 1.0), solver="global")
        warm = rng.uniform(0.0, 1.0, local.n_params)
        local.update(warm, data, alpha)
        exact.update(warm, data, alpha)
        misses += local.solve_results[-1].value > exact.solve_results[-1].value + 1e-3
    assert misses >= 2


@pytest.mark.parametrize("name, make, options, loss", [
    ("bandit", lambda: envs.bandit_needle(6, 1e-2, seed=0), {}, "dpo"),
    ("tree", lambda: envs.token_needle(2, 2, 1e-1, seed=1), {}, "dpo"),
    ("lock_linear", lambda: envs.combination_lock(3, 3, 0.3, seed=2), dict(policy="linear"), "ipo"),
])
def test_convex_objective_agrees_with_newton(name, make, options, loss):
    """With α = 0 (a DPO or IPO fit) L is convex: the global solve certifies the Newton
    minimum at once (one box per gauge face) and returns the same point."""
    mdp = make()
    beta = 0.1
    policy = options.get("policy", "implicit")
    rng = np.random.default_rng(3)
    data = random_data(mdp, rng, n_pairs=20, n_explore=0)
    newton = xpo_sim.policies.make_policy_class(mdp, beta, policy)
    exact = xpo_sim.policies.make_policy_class(mdp, beta, policy, solver="global")
    start = newton.initial_params()
    x_newton = newton.update(start, data, 0.0, loss)
    x_global = exact.update(start, data, 0.0, loss)
    result = exact.solve_results[-1]
    assert result.converged and result.nodes <= 2 * exact.n_params
    value = newton.solve_results[-1].value
    assert abs(result.value - value) <= 1e-12 * (1 + abs(value))
    np.testing.assert_allclose(x_global, x_newton, atol=1e-9)


@pytest.mark.parametrize("dim, alpha, seed", [(1, 0.5, 0), (1, 2.0, 1), (2, 0.5, 2), (2, 3.0, 3)])
def test_matches_a_brute_force_grid(dim, alpha, seed):
    """Linear class with d = 1 or 2 features on a small tree: the certified minimum equals the
    minimum of a dense grid (refined around its best node), within the grid's resolution,
    and is never above it."""
    rng = np.random.default_rng(seed)
    mdp = envs.token_tree(3, 2, seed=seed)
    beta = 0.2
    features = rng.normal(size=(mdp.n_states, mdp.n_actions, dim))
    cls = LinearRewardClass(mdp, beta, features=features, box=(-2.0, 2.0), solver="global")
    data = random_data(mdp, rng, n_pairs=6, n_explore=6)
    cls.update(np.zeros(dim), data, alpha)
    result = cls.solve_results[-1]
    assert result.converged, result.message
    grid, theta = grid_minimum(lambda t: cls.objective(t, data, alpha)[0], -2.0, 2.0, dim,
                               points=1001 if dim == 1 else 81)
    assert result.value <= grid + 1e-9
    refined = projected_newton(*_fun_hvp(cls, data, alpha), theta, -2.0, 2.0).value
    assert refined >= result.lower_bound - 1e-9
    assert abs(result.value - min(grid, refined)) <= 1e-6


def _fun_hvp(cls, data, alpha):
    parts = problem(cls, data, alpha)
    return parts["fun"], parts["hvp"]


def test_run_with_the_global_solver():
    """run(..., solver="global") through the round loop: every round certified."""
    mdp = envs.bandit_needle(4, 1e-2, seed=1)
    df = xpo_sim.run(mdp, xpo_sim.XPO(alpha=0.5, batch=2), 0.1, 6, seed=4, policy="implicit", solver="global")
    assert df["converged"].all() and np.isfinite(df["regret"]).all()


def test_refuses_too_many_parameters_and_bad_tolerances():
    mdp = envs.bandit(GLOBAL_MAX_PARAMS + 1, seed=0)
    with pytest.raises(ValueError, match=rf"solver='global'.*{GLOBAL_MAX_PARAMS}.*{GLOBAL_MAX_PARAMS + 1}"):
        ImplicitRewardClass(mdp, 0.5, solver="global")
    with pytest.raises(ValueError, match="solver='global'.*17"):
        xpo_sim.run(mdp, xpo_sim.XPO(), 0.5, 1, policy="implicit", solver="global")
    small = envs.bandit(3, seed=0)
    for bad in (0.0, -1e-3, math.nan, math.inf, "1e-6", True):
        with pytest.raises(ValueError, match="gap_tol"):
            ImplicitRewardClass(small, 0.5, solver="global", gap_tol=bad)
    for bad in (0, -2, 1.5, "10"):
        with pytest.raises(ValueError, match="max_nodes"):
            ImplicitRewardClass(small, 0.5, solver="global", max_nodes=bad)
    fun = lambda x: (float(x @ x), 2 * x)  # noqa: E731
    with pytest.raises(ValueError, match="solver='global'.*20"):
        global_minimize(fun, lambda v: 2 * v, None, np.zeros(20), -1.0, 1.0)
    with pytest.raises(ValueError, match="gap_tol"):
        global_minimize(fun, lambda v: 2 * v, None, np.zeros(2), -1.0, 1.0, gap_tol=0.0)
    with pytest.raises(ValueError, match="solver"):
        ImplicitRewardClass(small, 0.5, solver="globl")


def test_ipo_pairs_across_prompts_are_refused_and_dpo_ones_bounded():
    """A pair whose responses answer different prompts keeps V̂ in its margin: DPO's and
    LN-DPO's negative curvature is covered (the bound stays valid), IPO's is refused."""
    mdp = envs.bandit(3, n_prompts=2, seed=0)
    rng = np.random.default_rng(0)
    data = PreferenceData(mdp)
    a = data.path_ids(xpo_sim.sample_trajectories(mdp, mdp.ref_logp, 6, rng, start_states=np.zeros(6, int)))
    b = data.path_ids(xpo_sim.sample_trajectories(mdp, mdp.ref_logp, 6, rng, start_states=np.ones(6, int)))
    data.add_pairs(a, b)
    data.add_explored(a[:2])
    cls = ImplicitRewardClass(mdp, 0.3, box=(0.0, 1.0), solver="global")
    with pytest.raises(ValueError, match="loss='ipo'"):
        cls.update(cls.initial_params(), data, 0.2, "ipo")
    for loss in ("dpo", "ln_dpo"):
        parts = problem(cls, data, 0.2, loss)
        samples = rng.uniform(0.0, 1.0, (100, cls.n_params))
        values = np.array([parts["fun"](t)[0] for t in samples])
        root = solve(cls, parts, samples[0], 0.0, 1.0, max_nodes=1)
        assert root.lower_bound <= values.min() + 1e-9
        shift = parts["shift"](np.zeros(cls.n_params), np.ones(cls.n_params), samples[0])
        for theta in samples[:5]:
            assert np.linalg.eigvalsh(full_hessian(parts, theta) + np.diag(shift))[0] >= -1e-7
        full = solve(cls, parts, samples[0], 0.0, 1.0)
        assert full.converged and full.value <= values.min() + 1e-9


def test_a_search_cut_short_is_reported():
    """max_nodes reached: converged False, the gap above gap_tol, the lower bound still ≤
    the value, and run() raises a ConvergenceWarning and marks the round."""
    mdp = envs.bandit_needle(8, 1e-2, seed=0)
    rng = np.random.default_rng(5)
    data = random_data(mdp, rng, n_pairs=40, n_explore=40)
    cls = ImplicitRewardClass(mdp, 0.1, solver="global", max_nodes=3)
    cls.update(cls.initial_params(), data, 0.05)
    result = cls.solve_results[-1]
    assert not result.converged and result.gap > cls.gap_tol and result.lower_bound <= result.value
    assert "max_nodes=3" in result.message
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        df = xpo_sim.run(mdp, xpo_sim.XPO(alpha=0.05, batch=8), 0.1, 2, seed=5, policy="implicit",
                         solver="global", max_nodes=3)
    assert not df["converged"].iloc[1:].all()
    assert any(issubclass(w.category, ConvergenceWarning) and "gap" in str(w.message) for w in caught)


def test_measurement_script_quick(tmp_path):
    out = tmp_path / "global_vs_local"
    result = subprocess.run([sys.executable, "experiments/global_vs_local.py", "--quick", "--seeds", "1",
                             "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "| instance" in result.stdout
    assert (out / "rounds.csv").exists() and (out / "table.md").exists()
    bad = subprocess.run([sys.executable, "experiments/global_vs_local.py", "--seeds", "0"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
