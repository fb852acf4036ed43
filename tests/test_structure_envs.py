"""Structured instance families with features: the combination lock and the clustered
feature bandit (their masses, rewards, features and validation)."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import xpo_sim
from xpo_sim import envs

horizons = st.integers(1, 4)
vocabs = st.integers(2, 4)  # at most 4**4 = 256 trajectories
probabilities = st.floats(0.05, 0.95)
seeds = st.integers(0, 2**32 - 1)


def enumerate_responses(mdp):
    """Every response with its π_ref-probability and reward."""
    batch = mdp.trajectories()
    return batch, np.exp(xpo_sim.trajectory_logp(mdp, mdp.ref_logp, batch)), xpo_sim.trajectory_reward(mdp, batch)


def reward_from_features(mdp, theta):
    """θ·φ(s, a) as an (S, A) table (works for dense and sparse features)."""
    return np.asarray(mdp.feature_matrix() @ theta).reshape(mdp.n_states, mdp.n_actions)


# ---------------------------------------------------------------------- combination lock
@given(horizon=horizons, vocab=vocabs, p=probabilities, seed=seeds)
def test_lock_masses_rewards_and_optimal_path(horizon, vocab, p, seed):
    mdp = envs.combination_lock(horizon, vocab, p, seed=seed)
    assert mdp.n_states == 2 * horizon - 1 and mdp.n_actions == vocab
    assert mdp.n_trajectories == vocab**horizon and mdp.horizon == horizon
    batch, mass, reward = enumerate_responses(mdp)
    assert len(batch) == vocab**horizon and (batch.lengths == horizon).all()
    np.testing.assert_allclose(mass.sum(), 1.0, rtol=1e-12)

    best = np.flatnonzero(np.isclose(reward, 1.0))
    assert best.size == 1  # exactly one response of reward 1 ...
    assert reward.max() == pytest.approx(1.0)  # ... and it is the maximum
    others = np.delete(reward, best)
    assert others.size == 0 or others.max() <= 1.0 - 1.0 / horizon + 1e-12
    assert mass[best[0]] == pytest.approx(p**horizon, rel=1e-10)
    assert mdp.info["eps"] == pytest.approx(p**horizon, rel=1e-12)

    path = mdp.info["optimal_path"]
    assert path.shape == (1, horizon) and mdp.info["n_prompts"] == 1
    np.testing.assert_array_equal(batch.actions[best[0], :horizon], path[0])
    np.testing.assert_array_equal(batch.states[best[0], :horizon], mdp.info["optimal_path_states"][0])
    np.testing.assert_array_equal(mdp.info["optimal_path_states"][0], np.arange(horizon))
    assert mdp.start[0] == 1.0 and mdp.start.sum() == 1.0


@given(horizon=horizons, vocab=vocabs, p=probabilities, seed=seeds)
def test_lock_features_realize_the_reward(horizon, vocab, p, seed):
    mdp = envs.combination_lock(horizon, vocab, p, seed=seed)
    theta = mdp.info["theta_star"]
    assert mdp.n_features == horizon and mdp.features.shape == (mdp.n_states, vocab, horizon)
    np.testing.assert_allclose(theta, 1.0 / horizon)
    lo, hi = mdp.info["feature_box"]
    assert lo == 0.0 and hi == pytest.approx(1.0 / horizon) and ((theta >= lo) & (theta <= hi)).all()
    realized = reward_from_features(mdp, theta)
    np.testing.assert_allclose(realized[mdp.allowed], mdp.reward[mdp.allowed], atol=1e-15)
    # one indicator per level: each level's feature is on at exactly one state-action
    assert (mdp.features.sum(axis=(0, 1)) == 1.0).all()
    # trajectory features count the correct tokens before the first mistake
    batch, _, reward = enumerate_responses(mdp)
    phi = mdp.features[batch.states, batch.actions].sum(axis=1)
    np.testing.assert_allclose(phi @ theta, reward, atol=1e-12)


def test_lock_state_layout():
    mdp = envs.combination_lock(4, 3, 0.3, seed=1)
    c = mdp.info["optimal_path"][0]
    H = 4
    for h in range(H):
        row = mdp.next_state[h]
        if h == H - 1:
            assert (row == -1).all()
        else:
            assert row[c[h]] == h + 1
            assert (np.delete(row, c[h]) == H + h).all()  # off_{h+1}
    for h in range(1, H):
        expected = -1 if h == H - 1 else H + h
        assert (mdp.next_state[H + h - 1] == expected).all()
        np.testing.assert_allclose(np.exp(mdp.ref_logp[H + h - 1]), 1.0 / 3)
    assert mdp.n_states == 2 * H - 1
    one = envs.combination_lock(1, 2, 0.5)
    assert one.n_states == 1 and (one.next_state == -1).all() and one.n_trajectories == 2


def test_lock_soft_optimum_concentrates_on_the_optimal_path():
    mdp = envs.combination_lock(3, 3, 0.2, seed=0)
    batch, _, reward = enumerate_responses(mdp)
    best = int(np.argmax(reward))
    masses = []
    for beta in (1.0, 0.1, 0.02):
        pi_star = np.exp(xpo_sim.trajectory_logp(mdp, xpo_sim.solve_soft(mdp, beta).logp, batch))
        masses.append(pi_star[best])
    assert masses[0] < masses[1] < masses[2]
    pi_star = np.exp(xpo_sim.trajectory_logp(mdp, xpo_sim.solve_soft(mdp, 0.02).logp, batch))
    assert int(np.argmax(pi_star)) == best and pi_star[best] > 0.99
    assert xpo_sim.solve_soft(mdp, 0.02).value == pytest.approx(1.0, abs=0.1)


def test_lock_seeds():
    a, b = envs.combination_lock(5, 4, 0.3, seed=7), envs.combination_lock(5, 4, 0.3, seed=np.random.default_rng(7))
    for name in ("next_state", "reward", "ref_logp", "start", "features"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    paths = {tuple(envs.combination_lock(5, 4, 0.3, seed=s).info["optimal_path"][0]) for s in range(5)}
    assert len(paths) > 1


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(horizon=0, vocab=3, p_correct=0.5), "horizon"),
        (dict(horizon=2.0, vocab=3, p_correct=0.5), "horizon"),
        (dict(horizon=True, vocab=3, p_correct=0.5), "horizon"),
        (dict(horizon=2, vocab=1, p_correct=0.5), "vocab"),
        (dict(horizon=2, vocab=3, p_correct=0.0), "p_correct"),
        (dict(horizon=2, vocab=3, p_correct=1.0), "p_correct"),
        (dict(horizon=2, vocab=3, p_correct=math.nan), "p_correct"),
    ],
)
def test_lock_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        envs.combination_lock(**kwargs)


# ---------------------------------------------------------------------- feature bandit
@given(d=st.integers(2, 6), extra=st.integers(0, 20), eps=st.floats(1e-6, 0.9), seed=seeds)
def test_feature_bandit_masses_rewards_features(d, extra, eps, seed):
    n = d + extra
    mdp = envs.feature_bandit(n, d, eps, seed=seed)
    assert mdp.n_states == 1 and mdp.n_actions == n and (mdp.next_state == -1).all()
    assert mdp.n_features == d
    (good,) = mdp.info["optimal_actions"]
    assert math.exp(mdp.ref_logp[0, good]) == pytest.approx(eps, rel=1e-12)
    np.testing.assert_allclose(np.exp(np.delete(mdp.ref_logp[0], good)), (1 - eps) / (n - 1))
    assert mdp.reward[0, good] == 1.0
    assert (np.delete(mdp.reward[0], good) < 1.0).all()
    assert (np.delete(mdp.reward[0], good) <= 0.3 + 1e-12).all()

    theta = mdp.info["theta_star"]
    assert theta.shape == (d,) and theta[0] == 1.0
    np.testing.assert_allclose(np.sort(theta[1:]), np.linspace(0.0, 0.3, d - 1))
    lo, hi = mdp.info["feature_box"]
    assert ((theta >= lo) & (theta <= hi)).all()
    np.testing.assert_allclose(reward_from_features(mdp, theta), mdp.reward, atol=1e-15)

    clusters = mdp.info["clusters"]
    assert clusters.shape == (n,) and clusters[good] == 0
    assert (np.delete(clusters, good) >= 1).all()
    sizes = np.bincount(clusters, minlength=d)
    assert sizes[0] == 1 and (sizes[1:] >= 1).all() and sizes[1:].max() - sizes[1:].min() <= 1
    # φ(y) = e_{cluster(y)}: the likely responses have no e₀ component
    dense = mdp.feature_matrix().toarray()
    np.testing.assert_array_equal(dense, np.eye(d)[clusters])


def test_feature_bandit_coverability_at_most_d():
    """Σ_y sup_θ π_θ(y) ≤ d: within a cluster π_θ(y)/π_θ(cluster) = π_ref(y)/π_ref(cluster)
    for every θ; checked on random θ in a wide box (each term is bounded by its cluster's
    π_ref ratio, whose sum over the cluster is 1)."""
    mdp = envs.feature_bandit(50, 4, 1e-3, seed=3)
    clusters = mdp.info["clusters"]
    ref = np.exp(mdp.ref_logp[0])
    bound = ref / np.bincount(clusters, weights=ref)[clusters]
    np.testing.assert_allclose(bound.sum(), 4.0)
    rng = np.random.default_rng(0)
    phi = mdp.feature_matrix().toarray()
    for _ in range(20):
        logits = mdp.ref_logp[0] + phi @ rng.uniform(-30, 30, size=4)
        pi = np.exp(logits - logits.max())
        pi /= pi.sum()
        assert (pi <= bound + 1e-12).all()


def test_feature_bandit_large_builds():
    n, d = 10**5, 16
    mdp = envs.feature_bandit(n, d, 1e-6, seed=1)
    assert mdp.reward.shape == (1, n) and mdp.ref_logp.shape == (1, n)
    assert mdp.feature_matrix().shape == (n, d) and mdp.feature_matrix().nnz == n
    assert mdp.info["clusters"].shape == (n,)
    sizes = np.bincount(mdp.info["clusters"], minlength=d)
    assert sizes[0] == 1 and sizes[1:].min() >= (n - 1) // (d - 1)


def test_feature_bandit_seeds():
    a, b = envs.feature_bandit(30, 4, 0.01, seed=7), envs.feature_bandit(30, 4, 0.01, seed=np.random.default_rng(7))
    for name in ("reward", "ref_logp"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    np.testing.assert_array_equal(a.info["clusters"], b.info["clusters"])
    assert any(
        not np.array_equal(a.info["clusters"], envs.feature_bandit(30, 4, 0.01, seed=s).info["clusters"])
        for s in range(8, 12)
    )


@pytest.mark.parametrize(
    "args, name",
    [
        ((3, 4, 0.1), "n_responses"),  # too few responses for d - 1 = 3 clusters
        ((1, 2, 0.1), "n_responses"),
        ((5, 1, 0.1), "d"),
        ((5, 2.5, 0.1), "d"),
        ((5, 2, 0.0), "eps"),
        ((5, 2, 1.0), "eps"),
        ((5, 2, -0.1), "eps"),
    ],
)
def test_feature_bandit_bad_arguments(args, name):
    with pytest.raises(ValueError, match=name):
        envs.feature_bandit(*args)


def test_feature_bandit_smallest_instance():
    mdp = envs.feature_bandit(2, 2, 0.5, seed=0)
    (good,) = mdp.info["optimal_actions"]
    assert mdp.reward[0, good] == 1.0 and mdp.reward[0, 1 - good] == 0.0


# ---------------------------------------------------------------------- through run()
@pytest.mark.parametrize(
    "build",
    [lambda: envs.combination_lock(3, 3, 0.2, seed=0), lambda: envs.feature_bandit(20, 4, 1e-3, seed=0)],
    ids=["combination_lock", "feature_bandit"],
)
def test_instances_run_with_xpo(build):
    frame = xpo_sim.run(build(), xpo_sim.XPO(), 0.1, 3, seed=0)
    assert len(frame) > 0
    assert (frame["regret"] >= 0).all()
