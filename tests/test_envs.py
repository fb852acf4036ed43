"""Instance families: shapes, reproducibility, and the masses and rewards they promise."""

import math

import numpy as np
import pytest

import xpo_sim
from xpo_sim import envs


def ref_mass_of_optimal_responses(mdp):
    """π_ref-mass and reward of every response, by enumeration."""
    batch = mdp.trajectories()
    return batch, np.exp(xpo_sim.trajectory_logp(mdp, mdp.ref_logp, batch)), xpo_sim.trajectory_reward(mdp, batch)


@pytest.mark.parametrize(
    "build",
    [
        lambda seed: envs.bandit(5, 3, seed=seed),
        lambda seed: envs.token_tree(3, 3, 2, seed=seed),
        lambda seed: envs.token_tree(3, 2, rewards="dense", ref_temperature=0.3, seed=seed),
        lambda seed: envs.random_dag(20, 4, n_prompts=2, seed=seed),
        lambda seed: envs.bandit_needle(6, 1e-3, n_prompts=2, bad_reward=(0.0, 0.6), seed=seed),
        lambda seed: envs.token_needle(3, 3, 1e-4, n_prompts=2, bad_reward=(0.0, 0.5), seed=seed),
    ],
)
def test_same_seed_same_instance_other_seed_other_instance(build):
    a, b, c = build(7), build(np.random.default_rng(7)), build(8)
    for name in ("next_state", "reward", "ref_logp", "start"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert not np.array_equal(a.reward, c.reward) or not np.array_equal(a.ref_logp, c.ref_logp)


def test_token_tree_shape_and_layers():
    mdp = envs.token_tree(4, 3, n_prompts=2)
    assert mdp.n_states == 2 * (1 + 4 + 16) and mdp.n_actions == 4
    assert mdp.horizon == 3 and mdp.n_trajectories == 2 * 4**3
    assert (mdp.trajectories().lengths == 3).all()
    offsets = mdp.info["layer_offsets"]
    assert list(offsets) == [0, 2, 10, 42]
    assert (mdp.next_state[offsets[-2]:] == -1).all()
    assert (mdp.reward[: offsets[-2]] == 0).all()  # terminal rewards only
    # every non-root state has exactly one parent: it is a tree
    children = mdp.next_state[mdp.next_state >= 0]
    assert np.array_equal(np.sort(children), np.arange(2, mdp.n_states))


def test_token_tree_dense_rewards_bound_and_temperature():
    dense = envs.token_tree(3, 4, rewards="dense")
    _, _, r = ref_mass_of_optimal_responses(dense)
    assert (r >= 0).all() and (r < 1).all() and (dense.reward[:-27] > 0).any()
    flat = envs.token_tree(3, 2, ref_temperature=math.inf)
    np.testing.assert_allclose(flat.ref_logp, -math.log(3))
    sharp = envs.token_tree(3, 2, ref_temperature=0.05)
    assert np.exp(sharp.ref_logp).max(axis=1).min() > 0.9
    with pytest.raises(ValueError, match="ref_temperature"):
        envs.token_tree(3, 2, ref_temperature=0.0)
    with pytest.raises(ValueError, match="rewards"):
        envs.token_tree(3, 2, rewards="sparse")


def test_bandit_is_depth_one():
    mdp = envs.bandit(7, n_prompts=3)
    assert (mdp.n_states, mdp.n_actions, mdp.horizon) == (3, 7, 1)
    assert (mdp.next_state == -1).all()
    np.testing.assert_allclose(mdp.start, 1 / 3)


def test_random_dag_has_merges_variable_lengths_and_disallowed_tokens():
    mdp = envs.random_dag(40, 4, n_prompts=3, p_end=0.2, p_disallowed=0.3, seed=1)
    batch = mdp.trajectories()
    assert len(np.unique(batch.lengths)) > 2
    targets = mdp.next_state[mdp.allowed & (mdp.next_state >= 0)]
    assert len(targets) > len(np.unique(targets))  # some state has two parents
    assert (~mdp.allowed).any() and mdp.allowed.any(axis=1).all()
    assert set(mdp.start_states) == {0, 1, 2}
    with pytest.raises(ValueError, match="n_prompts"):
        envs.random_dag(3, 2, n_prompts=4)
    with pytest.raises(ValueError, match="p_disallowed"):
        envs.random_dag(3, 2, p_disallowed=1.0)


@pytest.mark.parametrize("beta", [0.5, 0.1, 0.01, 1e-3])
def test_two_arm_needle_matches_proposition_2_1(beta):
    mdp = envs.two_arm_needle(beta)
    eps = math.exp(-1 / (2 * beta))
    assert mdp.reward.tolist() == [[1.0, 0.0]]
    assert mdp.ref_logp[0, 0] == pytest.approx(-1 / (2 * beta), rel=1e-15)
    assert mdp.info["eps"] == pytest.approx(eps, rel=1e-12)
    sol = xpo_sim.solve_soft(mdp, beta)
    # closed form: V* = β log(ε e^{1/β} + 1 − ε) = β logaddexp(1/(2β), log(1-ε))
    expected = beta * np.logaddexp(1 / (2 * beta), math.log1p(-eps))
    assert sol.value == pytest.approx(expected, rel=1e-12)
    assert np.isfinite(sol.logp).all()


@pytest.mark.parametrize("eps", [0.3, 1e-3, 1e-12, 1e-300])
def test_bandit_needle_puts_eps_on_the_good_response(eps):
    mdp = envs.bandit_needle(5, eps, n_prompts=3, seed=2)
    good = mdp.info["optimal_actions"]
    rows = np.arange(3)
    np.testing.assert_allclose(mdp.ref_logp[rows, good], math.log(eps), rtol=1e-14)
    assert (mdp.reward[rows, good] == 1.0).all()
    others = np.ones_like(mdp.reward, dtype=bool)
    others[rows, good] = False
    assert (mdp.reward[others] == 0.0).all()
    np.testing.assert_allclose(np.exp(mdp.ref_logp[others]), (1 - eps) / 4, rtol=1e-12)


def test_bandit_needle_graded_bad_rewards_and_errors():
    mdp = envs.bandit_needle(7, 1e-2, bad_reward=(0.0, 0.6), seed=3)
    good = mdp.info["optimal_actions"][0]
    bad = np.sort(np.delete(mdp.reward[0], good))
    np.testing.assert_allclose(bad, np.linspace(0, 0.6, 6))
    with pytest.raises(ValueError, match="below"):
        envs.bandit_needle(3, 1e-2, bad_reward=1.0)
    for eps in (0.0, 1.0, -0.1, np.nan):
        with pytest.raises(ValueError, match="eps"):
            envs.bandit_needle(3, eps)
    with pytest.raises(ValueError, match="n_responses"):
        envs.bandit_needle(1, 0.1)


@pytest.mark.parametrize("eps", [0.2, 1e-6, 1e-300])
def test_token_needle_optimal_path_has_mass_eps_and_is_the_unique_best(eps):
    mdp = envs.token_needle(3, 4, eps, n_prompts=2, bad_reward=(0.0, 0.5), seed=5)
    batch = mdp.trajectories()
    logp_ref = xpo_sim.trajectory_logp(mdp, mdp.ref_logp, batch)
    reward = xpo_sim.trajectory_reward(mdp, batch)
    for p, path in enumerate(mdp.info["optimal_path"]):
        rows = np.flatnonzero(batch.start_states == p)
        best = rows[np.argmax(reward[rows])]
        assert reward[best] == 1.0 and (np.delete(reward[rows], np.argmax(reward[rows])) < 1).all()
        assert batch.actions[best].tolist() == path.tolist()
        assert logp_ref[best] == pytest.approx(math.log(eps), rel=1e-12)
        # π_ref still sums to one over this prompt's responses
        assert np.logaddexp.reduce(logp_ref[rows]) == pytest.approx(0.0, abs=1e-12)
