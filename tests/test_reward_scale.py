"""The reward scale R_max of the needle and lock families: R_max = 1 reproduces today's
instances bit for bit, R_max scales every reward (and the lock's θ* and feature box) and
nothing else; the reward-scale experiment builds the grid it documents."""

import hashlib
import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest

import xpo_sim
from xpo_sim import envs

ROOT = Path(__file__).resolve().parents[1]


def digest(mdp) -> str:
    h = hashlib.sha256()
    for array in (mdp.next_state, mdp.reward, mdp.ref_logp, mdp.start):
        h.update(np.ascontiguousarray(array).tobytes())
    if mdp.features is not None:
        f = mdp.features
        h.update(np.ascontiguousarray(f if isinstance(f, np.ndarray) else f.toarray()).tobytes())
    return h.hexdigest()[:16]


# digests of the arrays these calls built before reward_scale existed
TODAY = [
    (envs.bandit_needle, (8, 1e-2), dict(seed=3), "b3da738ebbfcf534"),
    (envs.bandit_needle, (5, 0.1), dict(n_prompts=3, bad_reward=(0, 0.6), seed=1), "c2593144fade6849"),
    (envs.token_needle, (4, 3, 1e-2), dict(seed=2), "86c19554974b1eb1"),
    (envs.token_needle, (3, 2, 0.1), dict(n_prompts=2, bad_reward=(0, 0.5), ref_temperature=1.0, seed=5),
     "d39cbbf692de80f1"),
    (envs.combination_lock, (4, 3, 0.2), dict(seed=1), "150c49b6d471e5ad"),
]


@pytest.mark.parametrize("build, args, kwargs, expected", TODAY)
def test_reward_scale_one_is_todays_instance_bit_for_bit(build, args, kwargs, expected):
    assert digest(build(*args, **kwargs)) == expected
    assert digest(build(*args, **kwargs, reward_scale=1.0)) == expected
    assert build(*args, **kwargs).info["reward_scale"] == 1.0


@pytest.mark.parametrize("build, args, kwargs, expected", TODAY)
@pytest.mark.parametrize("scale", [0.5, 2.0, 8])
def test_reward_scale_multiplies_the_rewards_only(build, args, kwargs, expected, scale):
    base, scaled = build(*args, **kwargs), build(*args, **kwargs, reward_scale=scale)
    np.testing.assert_array_equal(scaled.reward, base.reward * scale)
    for name in ("next_state", "ref_logp", "start"):
        np.testing.assert_array_equal(getattr(scaled, name), getattr(base, name))
    assert scaled.info["reward_scale"] == scale
    best = xpo_sim.trajectory_reward(scaled, scaled.trajectories()).max()
    assert best == pytest.approx(scale, rel=1e-14)  # the optimal response's reward is R_max


@pytest.mark.parametrize("scale", [0.3, 4.0])
def test_lock_theta_star_and_feature_box_scale(scale):
    lock = envs.combination_lock(5, 3, 0.3, seed=2, reward_scale=scale)
    theta = lock.info["theta_star"]
    np.testing.assert_allclose(theta, scale / 5)
    assert lock.info["feature_box"] == (0.0, scale / 5)
    np.testing.assert_allclose(np.einsum("sad,d->sa", lock.features, theta), lock.reward, atol=1e-15)
    # π* of the scaled lock is in the linear class with its default box
    cls = xpo_sim.LinearRewardClass(lock, 0.2)
    np.testing.assert_allclose(cls.policy_logp(theta), xpo_sim.solve_soft(lock, 0.2).logp, atol=1e-12)


def test_scaling_the_reward_is_scaling_beta():
    """r → R r and β → R β give the same π* (and R times the value): the knob is the
    reward-to-temperature ratio, so at fixed β a larger R_max means a sharper π*."""
    base = envs.token_needle(3, 2, 0.05, seed=4)
    scaled = envs.token_needle(3, 2, 0.05, seed=4, reward_scale=3.0)
    one, three = xpo_sim.solve_soft(base, 0.2), xpo_sim.solve_soft(scaled, 0.6)
    np.testing.assert_allclose(three.logp, one.logp, atol=1e-12)
    np.testing.assert_allclose(three.v, 3.0 * one.v, atol=1e-12)


@pytest.mark.parametrize("bad", [0, -1.0, math.nan, math.inf, "2", True, None])
@pytest.mark.parametrize("build, args", [(envs.bandit_needle, (4, 0.1)), (envs.token_needle, (2, 2, 0.1)),
                                         (envs.combination_lock, (2, 2, 0.5))])
def test_bad_reward_scale_is_a_value_error_naming_it(build, args, bad):
    with pytest.raises(ValueError, match="reward_scale"):
        build(*args, reward_scale=bad)


def test_the_experiment_grid():
    spec = importlib.util.spec_from_file_location("_reward_scale_script", ROOT / "experiments" / "reward_scale.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    configs = script.build_configs(quick=False, seeds=2)
    scales = sorted({c.instance_args["reward_scale"] for c in configs})
    assert scales == [1, 2, 4, 8]
    assert {c.algorithm for c in configs} == {"XPO", "SEPOPO", "VPO", "OnlineDPO"}
    assert len({c.beta for c in configs}) == 1 and len({c.instance_args["eps"] for c in configs}) == 1
    assert len(configs) == 2 * 4 * 5
    controls = [c for c in configs if c.run_args]
    assert {c.run_args["box"] for c in controls} == {(0.0, 8.0)} and {c.algorithm for c in controls} == {"XPO"}
    assert len(script.build_configs(quick=True, seeds=1)) < len(configs)


def test_the_noise_control_holds_the_label_noise_of_reward_scale_one():
    # the control's oracle labels the needle against a bad response with probability σ(1) at
    # every R_max: the reward gap R_max times the rationality 1/R_max
    spec = importlib.util.spec_from_file_location("_reward_scale_script", ROOT / "experiments" / "reward_scale.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    plain = script.build_configs(quick=False, seeds=2)
    controls = [c for c in script.build_configs(quick=False, seeds=2, noise=True) if c.label == script.NOISE_CONTROL]
    assert len(controls) == 2 * len(script.SCALES) and not any(c.label == script.NOISE_CONTROL for c in plain)
    rng = np.random.default_rng(0)
    for config in controls:
        scale = config.instance_args["reward_scale"]
        oracle = xpo_sim.sweep.make_oracle(config.oracle, config.oracle_args)
        wins = oracle.prefer(np.full(200_000, scale), np.zeros(200_000), rng)
        assert np.mean(wins) == pytest.approx(1 / (1 + math.exp(-1.0)), abs=0.005)
