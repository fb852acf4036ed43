"""Instances of the exploration scorecard: the diabolical combination lock, the misspecified
feature bandit, the many-prompt feature bandit, and the argument checks of every family.

Each new instance is checked on random parameters against a slow, explicit enumeration of
all its responses (``tests/naive.py``): the reward formula of its docstring, the unique
optimum and its gap, what the features realize (exactly, or up to the documented residual),
the soft optimum, coverability, the defaults' bit-identity with the instances built before
the options existed, and three rounds of XPO with the linear class.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import naive
import xpo_sim
from naive import assert_close
from xpo_sim import envs
from xpo_sim.policies import LinearRewardClass

RTOL = 1e-10
seeds = st.integers(0, 2**32 - 1)
lock_betas = st.floats(math.log(0.05), math.log(2.0)).map(math.exp)


def digest(mdp, keys) -> str:
    """sha256 of the arrays, the features and the ``info`` entries ``keys``."""
    h = hashlib.sha256()
    for array in (mdp.next_state, mdp.reward, mdp.ref_logp, mdp.start):
        h.update(np.ascontiguousarray(array).tobytes())
    f = mdp.features
    if f is not None:
        h.update(np.ascontiguousarray(f if isinstance(f, np.ndarray) else f.toarray()).tobytes())
    for key in keys:
        value = mdp.info[key]
        h.update(key.encode())
        h.update(value.encode() if isinstance(value, str) else np.ascontiguousarray(np.asarray(value)).tobytes())
    return h.hexdigest()[:16]


LOCK_KEYS = ["eps", "family", "feature_box", "horizon", "n_prompts", "optimal_path", "optimal_path_states",
             "p_correct", "reward_scale", "theta_star", "vocab"]
BANDIT_KEYS = ["bad_reward", "clusters", "d", "eps", "family", "feature_box", "n_prompts", "n_responses",
               "optimal_actions", "theta_star"]
# digests of the arrays and info entries these calls built before diabolical, misspecification
# and n_prompts existed
BEFORE = [
    (envs.combination_lock, (4, 3, 0.2), dict(seed=1), dict(diabolical=False), LOCK_KEYS, "a6c3748fabc683a3"),
    (envs.combination_lock, (1, 2, 0.5), {}, dict(diabolical=False), LOCK_KEYS, "e6d44b1a05fdf1c7"),
    (envs.combination_lock, (6, 5, 0.05), dict(seed=9, reward_scale=2.5), dict(diabolical=False), LOCK_KEYS,
     "05d2c6b79001b3ab"),
    (envs.feature_bandit, (20, 4, 1e-3), dict(seed=0), dict(misspecification=0.0, n_prompts=1), BANDIT_KEYS,
     "ba3a610a4b405a3b"),
    (envs.feature_bandit, (7, 3, 0.2), dict(bad_reward=(0.1, 0.5), seed=11), dict(misspecification=0, n_prompts=1),
     BANDIT_KEYS, "59f03735cbfcaa21"),
    (envs.feature_bandit, (2, 2, 0.5), {}, dict(misspecification=0.0), BANDIT_KEYS, "e39bd54090b993d5"),
]


@pytest.mark.parametrize("build, args, kwargs, explicit_default, keys, expected", BEFORE)
def test_defaults_are_the_instances_of_before_bit_for_bit(build, args, kwargs, explicit_default, keys, expected):
    assert digest(build(*args, **kwargs), keys) == expected
    assert digest(build(*args, **kwargs, **explicit_default), keys) == expected


def soft_optimum_matches_enumeration(mdp, beta):
    """solve_soft's V* at the prompts and log π*(τ) of every response against the
    trajectory-level optimum by enumeration (naive.optimum_by_enumeration)."""
    sol = xpo_sim.solve_soft(mdp, beta)
    v_naive, logp_naive = naive.optimum_by_enumeration(mdp, beta)
    taus = naive.trajectories(mdp)
    batch = mdp.trajectories()
    assert len(taus) == len(batch)
    reward = naive._lists(mdp)[1]
    scale = max(abs(naive.path_sum(reward, t)) for t in taus)
    for s0 in naive.start_states(mdp):
        assert_close(sol.v[s0], v_naive[s0], scale, RTOL, f"V*({s0})")
    assert_close(sol.value, sum(mdp.start[s] * v_naive[s] for s in naive.start_states(mdp)), scale, RTOL, "J*")
    # batch order: by start state, then depth-first in token order, as naive.trajectories
    ours = xpo_sim.trajectory_logp(mdp, sol.logp, batch)
    for i, tau in enumerate(taus):
        assert tuple(zip(batch.states[i, : batch.lengths[i]], batch.actions[i, : batch.lengths[i]])) == tau
    expected = np.array([logp_naive[t] for t in taus])
    assert_close(beta * ours, beta * expected, scale + beta * np.abs(expected), RTOL, "log π*(τ)")


def features_of(mdp):
    """φ as a dense (S, A, d) array (dense or sparse features)."""
    f = mdp.features
    if isinstance(f, np.ndarray):
        return f
    return np.asarray(f.toarray()).reshape(mdp.n_states, mdp.n_actions, -1)


# ====================================================================== diabolical lock
def diabolical_reward_formula(tau, correct, horizon, distractor, scale):
    """The docstring's r(τ): R if every token is correct, else δ·R·(H − k)/H for the first
    mistake at level k (tokens of τ read one by one; nothing from the instance's tables)."""
    for k, (_, a) in enumerate(tau):
        if a != correct[k]:
            return distractor * (horizon - k) / horizon * scale
    return scale


@given(horizon=st.integers(1, 4), vocab=st.integers(2, 3), p=st.floats(0.05, 0.95),
       distractor=st.one_of(st.just(0.0), st.floats(0.0, 0.95)), scale=st.sampled_from([1.0, 0.5, 3.0]), seed=seeds)
@settings(max_examples=30)
def test_diabolical_lock_rewards_optimum_and_features(horizon, vocab, p, distractor, scale, seed):
    mdp = envs.combination_lock(horizon, vocab, p, seed=seed, reward_scale=scale, diabolical=True,
                                distractor=distractor)
    correct = [int(c) for c in mdp.info["optimal_path"][0]]
    next_state, reward, ref_logp, _ = naive._lists(mdp)
    taus = naive.trajectories(mdp)
    assert len(taus) == vocab**horizon and all(len(t) == horizon for t in taus)
    rewards = [naive.path_sum(reward, t) for t in taus]
    formula = [diabolical_reward_formula(t, correct, horizon, distractor, scale) for t in taus]
    assert_close(rewards, formula, scale, 1e-14, "r(τ) against the formula")

    # the unique optimum: the all-correct response, reward R, gap R(1 − δ), π_ref mass p^H
    best = [i for i, t in enumerate(taus) if [a for _, a in t] == correct]
    assert len(best) == 1
    assert rewards[best[0]] == scale
    others = rewards[: best[0]] + rewards[best[0] + 1:]
    if others:
        assert max(others) == pytest.approx(distractor * scale, rel=1e-14)
        assert scale - max(others) == pytest.approx(scale * (1 - distractor), rel=1e-12)
    assert math.exp(naive.path_sum(ref_logp, taus[best[0]])) == pytest.approx(p**horizon, rel=1e-10)
    # the earlier the mistake, the larger the distractor (strictly when δ > 0)
    first_mistake = {}
    for t, r in zip(taus, rewards):
        k = next((h for h, (_, a) in enumerate(t) if a != correct[h]), None)
        if k is not None:
            first_mistake.setdefault(k, set()).add(r)
    paid = [first_mistake[k].pop() for k in sorted(first_mistake)]
    assert all(len(first_mistake[k]) == 0 for k in first_mistake)  # one value per level
    assert all(a > b for a, b in zip(paid, paid[1:])) or distractor == 0.0

    # the features realize the reward exactly, entry by entry and response by response
    theta = mdp.info["theta_star"]
    phi = features_of(mdp)
    assert phi.shape == (mdp.n_states, vocab, 2 * horizon) and mdp.n_features == 2 * horizon
    np.testing.assert_array_equal(phi @ theta, mdp.reward)
    lo, hi = mdp.info["feature_box"]
    assert (lo, hi) == (0.0, scale) and ((theta >= lo) & (theta <= hi)).all()
    expected_theta = np.zeros(2 * horizon)
    expected_theta[horizon - 1] = scale
    expected_theta[horizon:] = [distractor * (horizon - h) / horizon * scale for h in range(horizon)]
    np.testing.assert_allclose(theta, expected_theta, rtol=1e-15, atol=0)
    for t, r in zip(taus, rewards):
        assert sum(float(phi[s, a] @ theta) for s, a in t) == pytest.approx(r, rel=1e-14, abs=1e-300)
    # the first H coordinates are the dense lock's level indicators; π_ref and the layout are the dense lock's
    dense = envs.combination_lock(horizon, vocab, p, seed=seed, reward_scale=scale)
    np.testing.assert_array_equal(phi[:, :, :horizon], dense.features)
    for name in ("next_state", "ref_logp", "start"):
        np.testing.assert_array_equal(getattr(mdp, name), getattr(dense, name))
    assert mdp.info["diabolical"] is True and mdp.info["distractor"] == distractor
    assert mdp.info["eps"] == dense.info["eps"]


@given(horizon=st.integers(1, 4), vocab=st.integers(2, 3), p=st.floats(0.05, 0.95),
       distractor=st.floats(0.0, 0.9), beta=lock_betas, seed=seeds)
@settings(max_examples=25)
def test_diabolical_lock_soft_optimum_matches_enumeration(horizon, vocab, p, distractor, beta, seed):
    mdp = envs.combination_lock(horizon, vocab, p, seed=seed, diabolical=True, distractor=distractor)
    soft_optimum_matches_enumeration(mdp, beta)


def lock_vertex_coverability(mdp, beta, lo, hi):
    """C_cov of the diabolical lock's linear class by enumeration: group the responses by
    Φ(τ) (each a 0/1 vector); the supremum of a group's mass puts θ_j = hi on the group's own
    coordinates and lo on the others (every coordinate of Φ is 0 or 1, so that vertex
    maximizes θ·Φ_g − log Σ_j w_j e^{θ·Φ_j/β} coordinate by coordinate)."""
    _, _, ref_logp, _ = naive._lists(mdp)
    phi = features_of(mdp)
    groups = {}
    for t in naive.trajectories(mdp):
        key = tuple(int(round(sum(phi[s, a, j] for s, a in t))) for j in range(phi.shape[2]))
        groups[key] = groups.get(key, 0.0) + math.exp(naive.path_sum(ref_logp, t))
    keys = list(groups)
    assert all(set(k) <= {0, 1} for k in keys)
    total = 0.0
    for g in keys:
        theta = [hi if x else lo for x in g]
        logs = [math.log(groups[j]) + sum(t * x for t, x in zip(theta, j)) / beta for j in keys]
        total += math.exp(logs[keys.index(g)] - naive.logsumexp(logs))
    return total, len(keys)


@given(horizon=st.integers(1, 4), vocab=st.integers(2, 3), p=st.floats(0.05, 0.9),
       distractor=st.floats(0.0, 0.9), beta=lock_betas, seed=seeds)
@settings(max_examples=20)
def test_diabolical_lock_coverability_is_exact_and_small(horizon, vocab, p, distractor, beta, seed):
    mdp = envs.combination_lock(horizon, vocab, p, seed=seed, diabolical=True, distractor=distractor)
    details = xpo_sim.coverability(mdp, beta, "linear", return_details=True)
    expected, n_groups = lock_vertex_coverability(mdp, beta, *mdp.info["feature_box"])
    assert details.n_groups == n_groups == horizon + 1
    assert details.n_optimized == 0 and details.max_gap == 0.0  # every supremum at a vertex
    assert_close(details.value, expected, expected, RTOL, "C_cov")
    assert 1.0 <= details.value <= horizon + 1 + 1e-12


def test_diabolical_lock_vertex_is_the_supremum():
    """No θ in the box gives a response more mass than the vertex of its group."""
    mdp = envs.combination_lock(3, 2, 0.3, seed=4, diabolical=True)
    beta = 0.2
    details = xpo_sim.coverability(mdp, beta, "linear", return_details=True)
    cls = LinearRewardClass(mdp, beta)
    lo, hi = cls.box
    rng = np.random.default_rng(0)
    for _ in range(200):
        theta = rng.uniform(lo, hi, size=cls.n_params)
        logp = xpo_sim.trajectory_logp(mdp, cls.policy_logp(theta), details.batch)
        assert (np.exp(logp) <= details.sup_prob * (1 + 1e-9)).all()


def test_diabolical_lock_is_diabolical_for_passive_learning():
    """π_ref's likely responses all leave the path, and among them the earliest mistake pays
    most: the soft optimum at a large β moves mass *off* the path (towards the distractor),
    while at a small β π* is the combination."""
    mdp = envs.combination_lock(4, 3, 0.3, seed=2, diabolical=True, distractor=0.2)
    c = mdp.info["optimal_path"][0]
    ref_stay = math.exp(mdp.ref_logp[0, c[0]])
    loose = xpo_sim.solve_soft(mdp, 2.0)
    assert math.exp(loose.logp[0, c[0]]) < ref_stay  # a mistake at level 0 is tilted up
    sharp = xpo_sim.solve_soft(mdp, 0.02)
    assert xpo_sim.optimal_mass(mdp, sharp.logp) > 0.99
    dense = envs.combination_lock(4, 3, 0.3, seed=2)
    assert math.exp(xpo_sim.solve_soft(dense, 2.0).logp[0, c[0]]) > ref_stay  # the dense lock's curriculum


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(diabolical=True, distractor=1.0), "distractor"),
        (dict(diabolical=True, distractor=-0.1), "distractor"),
        (dict(diabolical=True, distractor=math.nan), "distractor"),
        (dict(diabolical=True, distractor="0.1"), "distractor"),
        (dict(diabolical=True, distractor=True), "distractor"),
        (dict(diabolical=True, distractor=[0.1]), "distractor"),
        (dict(diabolical=True, distractor=(0.1, 0.2)), "distractor"),
        (dict(diabolical=False, distractor=0.1), "distractor"),
        (dict(distractor=0.0), "distractor"),
        (dict(diabolical="True"), "diabolical"),
        (dict(diabolical=1), "diabolical"),
        (dict(diabolical=None), "diabolical"),
        (dict(diabolical=True, reward_scale=1e308), "reward_scale"),
    ],
)
def test_diabolical_lock_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        envs.combination_lock(3, 2, 0.3, **kwargs)


def test_diabolical_lock_default_distractor_and_seeds():
    mdp = envs.combination_lock(3, 3, 0.3, seed=5, diabolical=True)
    assert mdp.info["distractor"] == envs.DEFAULT_DISTRACTOR == 0.1
    again = envs.combination_lock(3, 3, 0.3, seed=np.random.default_rng(5), diabolical=True)
    for name in ("next_state", "reward", "ref_logp", "start", "features"):
        np.testing.assert_array_equal(getattr(mdp, name), getattr(again, name))
    assert "diabolical" not in envs.combination_lock(3, 3, 0.3).info  # the dense lock's info is as before


# ================================================================ misspecified feature bandit
def slow_residual_signs(clusters_row):
    """u of the docstring for one prompt, by a plain loop: within each cluster k >= 1, its
    members in increasing index get +1, -1, +1, ...; the last member 0 if the size is odd."""
    u = [0.0] * len(clusters_row)
    for k in sorted(set(int(c) for c in clusters_row)):
        if k == 0:
            continue
        members = [y for y, c in enumerate(clusters_row) if c == k]
        for i, y in enumerate(members):
            u[y] = 1.0 if i % 2 == 0 else -1.0
        if len(members) % 2 == 1:
            u[members[-1]] = 0.0
    return u


def class_floor_formula(mdp, beta):
    """β E_ρ log(Σ_k w_k c_k / Σ_k w_k) of the docstring, in plain Python."""
    delta = mdp.info["misspecification"]
    theta = [float(t) for t in mdp.info["theta_star"]]
    clusters = np.atleast_2d(mdp.info["clusters"])
    total = 0.0
    for x in range(mdp.n_states):
        row = [int(c) for c in clusters[x]]
        u = slow_residual_signs(row)
        num, den = [], []
        for k in range(len(theta)):
            members = [y for y, c in enumerate(row) if c == k]
            mass = sum(math.exp(mdp.ref_logp[x, y]) for y in members)
            pairs = sum(1 for y in members if u[y] != 0.0) // 2
            c_k = (2 * pairs * math.cosh(delta / beta) + len(members) - 2 * pairs) / len(members)
            den.append(math.log(mass) + theta[k] / beta)
            num.append(den[-1] + math.log(c_k))
        total += mdp.start[x] * beta * (naive.logsumexp(num) - naive.logsumexp(den))
    return total


bandit_sizes = st.tuples(st.integers(2, 5), st.integers(1, 8)).map(lambda t: (t[0] + t[1], t[0]))  # (n >= d + 1, d)


@given(size=bandit_sizes, eps=st.floats(1e-4, 0.5), delta=st.floats(0.0, 0.6), n_prompts=st.integers(1, 3),
       seed=seeds)
@settings(max_examples=30)
def test_misspecified_bandit_rewards_optimum_and_residual(size, eps, delta, n_prompts, seed):
    n, d = size
    mdp = envs.feature_bandit(n, d, eps, misspecification=delta, n_prompts=n_prompts, seed=seed)
    theta = mdp.info["theta_star"]
    clusters = np.atleast_2d(mdp.info["clusters"])
    goods = mdp.info["optimal_actions"]
    _, reward, ref_logp, _ = naive._lists(mdp)
    for x in range(n_prompts):
        u = slow_residual_signs(clusters[x])
        formula = [float(theta[clusters[x][y]]) + delta * u[y] for y in range(n)]
        assert reward[x] == pytest.approx(formula, rel=1e-15, abs=1e-15)
        # the needle is the unique optimum, reward 1, π_ref mass ε, gap 1 − (high + δ) at least
        assert reward[x][goods[x]] == 1.0 and clusters[x][goods[x]] == 0
        others = reward[x][: goods[x]] + reward[x][goods[x] + 1:]
        assert max(others) <= 0.3 + delta + 1e-15 < 1.0
        assert math.exp(ref_logp[x][goods[x]]) == pytest.approx(eps, rel=1e-12)
    # the features do not realize the reward: the residual is ±δ on the paired responses
    fit = np.asarray(mdp.feature_matrix() @ theta).reshape(mdp.n_states, mdp.n_actions)
    residual = mdp.reward - fit
    np.testing.assert_allclose(residual, mdp.info["residual"], atol=1e-15)
    np.testing.assert_allclose(residual, [[delta * s for s in slow_residual_signs(row)] for row in clusters],
                               atol=1e-15)
    np.testing.assert_array_equal(mdp.reward, theta[clusters] + mdp.info["residual"])  # how it is built
    assert np.abs(residual).max() == pytest.approx(delta, rel=1e-12, abs=1e-15)  # δ up to rounding
    if delta > 0:
        signs = mdp.info["residual"] / delta
        assert (signs != 0).any() and set(np.unique(signs)) <= {-1.0, 0.0, 1.0}
    # θ* is the least-squares fit: the residual is orthogonal to every feature column
    F = mdp.feature_matrix().toarray()
    np.testing.assert_allclose(F.T @ residual.ravel(), 0.0, atol=1e-12)
    lstsq = np.linalg.lstsq(F, mdp.reward.ravel(), rcond=None)[0]
    np.testing.assert_allclose(lstsq, theta, atol=1e-12)
    # ... and the sup-norm fit: moving any θ_k leaves a residual above δ on its cluster
    for k in range(d):
        for step in (-1e-3, 1e-3):
            moved = theta.copy()
            moved[k] += step
            worst = np.abs(mdp.reward.ravel() - F @ moved).max()
            assert worst >= delta - 1e-12
    assert mdp.info["misspecification"] == delta
    # δ changes the reward only: the same seed at δ = 0 gives the same everything else
    real = envs.feature_bandit(n, d, eps, n_prompts=n_prompts, seed=seed)
    for name in ("next_state", "ref_logp", "start"):
        np.testing.assert_array_equal(getattr(mdp, name), getattr(real, name))
    np.testing.assert_array_equal(mdp.feature_matrix().toarray(), real.feature_matrix().toarray())
    np.testing.assert_array_equal(theta, real.info["theta_star"])
    np.testing.assert_allclose(mdp.reward - mdp.info["residual"], real.reward, rtol=0, atol=1e-15)


@given(size=bandit_sizes, eps=st.floats(1e-3, 0.5), delta=st.floats(0.01, 0.6), n_prompts=st.integers(1, 2),
       beta=lock_betas, seed=seeds)
@settings(max_examples=25)
def test_misspecified_bandit_best_policy_in_the_class(size, eps, delta, n_prompts, beta, seed):
    """The best policy of the linear class is π_{θ*} = the soft optimum of the realizable
    instance; its regret here is the documented floor, in (0, β log cosh(δ/β)]; no θ in the
    box does better, and π* itself has regret 0."""
    n, d = size
    mdp = envs.feature_bandit(n, d, eps, misspecification=delta, n_prompts=n_prompts, seed=seed)
    real = envs.feature_bandit(n, d, eps, n_prompts=n_prompts, seed=seed)
    sol, sol_real = xpo_sim.solve_soft(mdp, beta), xpo_sim.solve_soft(real, beta)
    cls = LinearRewardClass(mdp, beta)
    best = cls.policy_logp(mdp.info["theta_star"])
    np.testing.assert_allclose(np.exp(best), np.exp(sol_real.logp), atol=1e-12)  # π_θ* = π*₀
    floor = xpo_sim.regret(mdp, best, beta, solution=sol)
    scale = 1.0 + abs(sol.value)
    assert_close(floor, sol.value - sol_real.value, scale, 1e-9, "floor = V*_δ − V*_0")
    assert_close(floor, class_floor_formula(mdp, beta), scale, 1e-9, "floor formula")
    assert_close(xpo_sim.evaluate(mdp, best, beta).value, sol_real.value, scale, 1e-9, "J_δ(π_θ*) = V*_0")
    bound = beta * math.log(math.cosh(delta / beta))
    assert 0.0 < floor <= bound * (1 + 1e-9) + 1e-12 and bound < delta
    lo, hi = cls.box
    rng = np.random.default_rng(seed % 2**16)
    for theta in rng.uniform(lo, hi, size=(30, d)):
        assert xpo_sim.regret(mdp, cls.policy_logp(theta), beta, solution=sol) >= floor - 1e-12 * scale


@given(size=bandit_sizes, eps=st.floats(1e-3, 0.5), delta=st.floats(0.0, 0.6), n_prompts=st.integers(1, 2),
       beta=lock_betas, seed=seeds)
@settings(max_examples=20)
def test_misspecified_bandit_soft_optimum_matches_enumeration(size, eps, delta, n_prompts, beta, seed):
    n, d = size
    soft_optimum_matches_enumeration(
        envs.feature_bandit(n, d, eps, misspecification=delta, n_prompts=n_prompts, seed=seed), beta)


def test_misspecification_leaves_coverability_unchanged():
    mis = envs.feature_bandit(30, 4, 1e-3, misspecification=0.3, seed=2)
    real = envs.feature_bandit(30, 4, 1e-3, seed=2)
    c_mis, c_real = (xpo_sim.coverability(m, 0.1, "linear") for m in (mis, real))
    assert c_mis == c_real <= 4


@pytest.mark.parametrize(
    "args, kwargs, name",
    [
        ((5, 2, 0.1), dict(misspecification=-0.1), "misspecification"),
        ((5, 2, 0.1), dict(misspecification=math.nan), "misspecification"),
        ((5, 2, 0.1), dict(misspecification=math.inf), "misspecification"),
        ((5, 2, 0.1), dict(misspecification="0.1"), "misspecification"),
        ((5, 2, 0.1), dict(misspecification=True), "misspecification"),
        ((5, 2, 0.1), dict(misspecification=None), "misspecification"),
        ((5, 2, 0.1), dict(misspecification=[0.1]), "misspecification"),
        ((5, 2, 0.1), dict(misspecification=0.7), "misspecification"),  # 0.3 + 0.7 reaches the needle's 1
        ((4, 4, 0.1), dict(misspecification=0.1), "misspecification"),  # every cluster has one member
        ((5, 2, 0.1), dict(n_prompts=0), "n_prompts"),
        ((5, 2, 0.1), dict(n_prompts=2.0), "n_prompts"),
        ((5, 2, 0.1), dict(n_prompts=None), "n_prompts"),
        ((5, 2, 0.1), dict(n_prompts=True), "n_prompts"),
        ((5, 2, 0.1), dict(n_prompts=(2,)), "n_prompts"),
    ],
)
def test_feature_bandit_new_arguments_are_checked(args, kwargs, name):
    with pytest.raises(ValueError, match=name):
        envs.feature_bandit(*args, **kwargs)


# ==================================================================== many prompts
@given(size=bandit_sizes, eps=st.floats(1e-4, 0.5), n_prompts=st.integers(2, 5), seed=seeds)
@settings(max_examples=25)
def test_many_prompt_bandit_shares_features_and_theta(size, eps, n_prompts, seed):
    n, d = size
    mdp = envs.feature_bandit(n, d, eps, n_prompts=n_prompts, seed=seed)
    assert (mdp.n_states, mdp.n_actions) == (n_prompts, n) and (mdp.next_state == -1).all()
    np.testing.assert_array_equal(mdp.start, np.full(n_prompts, 1.0 / n_prompts))
    assert list(mdp.start_states) == list(range(n_prompts))
    clusters, goods, theta = mdp.info["clusters"], mdp.info["optimal_actions"], mdp.info["theta_star"]
    assert clusters.shape == (n_prompts, n) and goods.shape == (n_prompts,)
    phi = features_of(mdp)
    for x in range(n_prompts):
        np.testing.assert_array_equal(phi[x], np.eye(d)[clusters[x]])  # the same d features on every prompt
        sizes = np.bincount(clusters[x], minlength=d)
        assert sizes[0] == 1 and clusters[x][goods[x]] == 0 and sizes[1:].max() - sizes[1:].min() <= 1
        assert math.exp(mdp.ref_logp[x, goods[x]]) == pytest.approx(eps, rel=1e-12)
        rewards = [naive.path_sum(mdp.reward.tolist(), t) for t in naive.trajectories(mdp, starts=[x])]
        assert rewards[goods[x]] == 1.0 and sorted(rewards)[-2] < 1.0
    np.testing.assert_array_equal(phi @ theta, mdp.reward)  # one θ* realizes every prompt's reward
    # prompt 0 is the one-prompt instance of the same seed
    one = envs.feature_bandit(n, d, eps, seed=seed)
    np.testing.assert_array_equal(mdp.reward[0], one.reward[0])
    np.testing.assert_array_equal(mdp.ref_logp[0], one.ref_logp[0])
    np.testing.assert_array_equal(clusters[0], one.info["clusters"])
    np.testing.assert_array_equal(theta, one.info["theta_star"])
    # raising θ₀ raises every prompt's needle together: the class generalizes across prompts
    cls = LinearRewardClass(mdp, 0.1)
    low, high = np.zeros(d), np.zeros(d)
    high[0] = 1.0
    gain = np.exp(cls.policy_logp(high)[np.arange(n_prompts), goods]) / np.exp(
        cls.policy_logp(low)[np.arange(n_prompts), goods])
    assert (gain > 1.0).all()


def test_many_prompt_bandit_coverability_per_prompt_at_most_d():
    mdp = envs.feature_bandit(12, 3, 1e-2, n_prompts=4, seed=1)
    details = xpo_sim.coverability(mdp, 0.1, "linear", return_details=True)
    assert set(details.per_prompt) == {0, 1, 2, 3}
    assert all(v <= 3 + 1e-12 for v in details.per_prompt.values())
    assert details.n_optimized == 0


# ==================================================================== through run()
@pytest.mark.parametrize(
    "build",
    [
        lambda: envs.combination_lock(3, 3, 0.2, seed=0, diabolical=True),
        lambda: envs.combination_lock(2, 2, 0.4, seed=1, diabolical=True, distractor=0.0, reward_scale=2.0),
        lambda: envs.feature_bandit(20, 4, 1e-2, misspecification=0.2, seed=0),
        lambda: envs.feature_bandit(10, 3, 1e-2, n_prompts=3, seed=0),
        lambda: envs.feature_bandit(10, 3, 1e-2, n_prompts=3, misspecification=0.1, seed=0),
    ],
    ids=["diabolical_lock", "sparse_lock", "misspecified_bandit", "many_prompts", "many_prompts_misspecified"],
)
def test_new_instances_run_xpo_with_the_linear_class(build):
    frame = xpo_sim.run(build(), xpo_sim.XPO(), 0.1, 3, policy="linear", seed=0)
    assert len(frame) > 0
    regret = frame["regret"].to_numpy()
    assert np.isfinite(regret).all() and (regret >= 0).all()


# ================================================================== argument checks (issue 20)
BAD_NUMBERS = [None, [2], (2, 3), "2", True, np.array([2])]
FAMILIES = {
    "bandit": (envs.bandit, dict(n_responses=3, n_prompts=1, ref_temperature=1.0)),
    "token_tree": (envs.token_tree, dict(vocab=2, horizon=2, n_prompts=1, ref_temperature=1.0)),
    "random_dag": (envs.random_dag, dict(n_states=4, n_actions=2, n_prompts=1, p_end=0.2, p_disallowed=0.2,
                                         ref_temperature=1.0)),
    "two_arm_needle": (envs.two_arm_needle, dict(beta=0.1)),
    "bandit_needle": (envs.bandit_needle, dict(n_responses=3, eps=0.1, n_prompts=1, bad_reward=0.0,
                                               reward_scale=1.0)),
    "token_needle": (envs.token_needle, dict(vocab=2, horizon=2, eps=0.1, n_prompts=1, bad_reward=0.0,
                                             ref_temperature=math.inf, reward_scale=1.0)),
    "combination_lock": (envs.combination_lock, dict(horizon=2, vocab=2, p_correct=0.3, reward_scale=1.0)),
    "feature_bandit": (envs.feature_bandit, dict(n_responses=4, d=2, eps=0.1, n_prompts=1,
                                                 misspecification=0.1)),
}
NUMERIC_ARGUMENTS = [(family, name) for family, (_, kwargs) in FAMILIES.items() for name in kwargs
                     if name != "bad_reward"]


@pytest.mark.parametrize("family, name", NUMERIC_ARGUMENTS, ids=lambda x: x)
def test_numeric_arguments_refuse_none_lists_tuples_strings_and_bools(family, name):
    build, kwargs = FAMILIES[family]
    build(**kwargs)
    for bad in BAD_NUMBERS:
        with pytest.raises(ValueError, match=name):
            build(**{**kwargs, name: bad})


@pytest.mark.parametrize("family", ["bandit_needle", "token_needle", "feature_bandit"])
@pytest.mark.parametrize("bad", [None, "0", (0.1,), (0.0, 0.1, 0.2), ("0", "0.1"), (True, False), [[0.0, 0.1]],
                                 (0.2, 0.1), (math.nan, 0.1), {0: 0.1}])
def test_bad_reward_refuses_what_is_not_a_number_or_a_pair(family, bad):
    build, kwargs = FAMILIES[family]
    with pytest.raises(ValueError, match="bad_reward"):
        build(**{**kwargs, "bad_reward": bad})


@pytest.mark.parametrize(
    "build, kwargs, name",
    [
        (envs.bandit_needle, dict(n_responses=3, eps=0.1, reward_scale=1e308), "reward_scale"),
        (envs.bandit_needle, dict(n_responses=3, eps=0.1, bad_reward=-1e308), "bad_reward"),
        (envs.bandit_needle, dict(n_responses=3, eps=0.1, bad_reward=-10.0, reward_scale=1e307), "reward_scale"),
        (envs.token_needle, dict(vocab=2, horizon=2, eps=0.1, reward_scale=1e308), "reward_scale"),
        (envs.token_needle, dict(vocab=2, horizon=2, eps=0.1, bad_reward=(-1e308, 0.5)), "bad_reward"),
        (envs.combination_lock, dict(horizon=3, vocab=2, p_correct=0.5, reward_scale=1e308), "reward_scale"),
    ],
)
def test_rewards_beyond_the_range_name_the_argument(build, kwargs, name):
    """These were refused by TokenMDP as "reward is too large" (or "not finite"), naming
    no argument of the family."""
    with pytest.raises(ValueError, match=name):
        build(**kwargs)


def test_reward_range_edges_still_build():
    assert envs.bandit_needle(3, 0.1, reward_scale=2.0**1021).reward.max() == 2.0**1021
    assert envs.combination_lock(3, 2, 0.5, reward_scale=2.0**1021, diabolical=True).reward.max() == 2.0**1021


@pytest.mark.parametrize("family", [f for f in FAMILIES if f != "two_arm_needle"])
@pytest.mark.parametrize("seed", [[2], (2, 3), "2", True, 2.5, -1, np.random.RandomState(0)], ids=repr)
def test_seed_refuses_what_is_not_an_int_none_or_a_generator(family, seed):
    build, kwargs = FAMILIES[family]
    with pytest.raises(ValueError, match="seed"):
        build(**kwargs, seed=seed)
