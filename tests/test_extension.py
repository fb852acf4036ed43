"""Extension points, tried as a researcher would from their own module (``tests/user_ext``):
samplers, policy classes, oracles, algorithms and instances in ``xpo_sim.run`` — and the
four places where a user's code used to give wrong numbers with no error."""

from __future__ import annotations

import math
import multiprocessing
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import xpo_sim
from xpo_sim import envs
from xpo_sim.preferences import best_and_worst
from xpo_sim.rounds import SAMPLERS, get_sampler

sys.path.insert(0, str(Path(__file__).parent))
from user_ext import research  # noqa: E402  (a user module outside the package)
from user_ext.research import GradientSoftmaxClass, HistoryProbe, NoisyThreshold, UniformDuel  # noqa: E402


def star_logp_of_responses(mdp, beta):
    batch = mdp.trajectories()
    return batch, xpo_sim.trajectory_logp(mdp, xpo_sim.solve_soft(mdp, beta).logp, batch)


# ------------------------------------------------------------------ trap 1: samplers
def test_a_registered_sampler_is_sampled_and_tracked_as_itself():
    """Both responses uniform over the 9 responses of a tree: the tracker's μ̄ is the
    uniform distribution, so log C = max_τ log(9 π*(τ|s₀)) exactly, in every round."""
    mdp = envs.token_tree(3, 2, seed=3)
    df = xpo_sim.run(mdp, UniformDuel(batch=4), 0.4, 3, seed=0)
    batch, log_star = star_logp_of_responses(mdp, 0.4)
    expected = float(np.max(log_star + math.log(9)))
    np.testing.assert_allclose(df.log_concentrability.iloc[1:], expected, rtol=1e-12)


def test_a_registered_sampler_draws_from_its_own_table():
    """π_ref puts 0.97 on one response; the uniform sampler must not follow it."""
    mdp = envs.bandit_needle(4, 0.01, seed=0)
    ctx = xpo_sim.RoundContext(mdp, 0.5, np.random.default_rng(0), xpo_sim.BradleyTerry(),
                               xpo_sim.ImplicitRewardClass(mdp, 0.5), ("uniform",))
    ctx.begin_round(1)
    drawn = ctx.sample("uniform", ctx.prompts(4000))
    counts = np.bincount(drawn.actions[:, 0], minlength=4)
    assert np.all(np.abs(counts - 1000) < 150), counts  # 4.7 standard deviations
    np.testing.assert_allclose(np.exp(ctx.drawn_tables()[0][0]), 0.25)


def test_xpo_accepts_a_registered_sampler_and_a_spec_and_refuses_an_unknown_one():
    assert xpo_sim.XPO(sampler="uniform").samplers == ("current", "uniform")
    spec = "user_ext.research:UNIFORM"
    assert get_sampler(spec) is research.UNIFORM
    a = xpo_sim.run(envs.bandit(4, seed=1), xpo_sim.XPO(sampler="uniform", batch=2), 0.3, 4, seed=5)
    b = xpo_sim.run(envs.bandit(4, seed=1), xpo_sim.XPO(sampler=spec, batch=2), 0.3, 4, seed=5)
    pd.testing.assert_frame_equal(a, b)
    online = xpo_sim.run(envs.bandit(4, seed=1), xpo_sim.OnlineDPO(batch=2), 0.3, 4, seed=5)
    assert not np.array_equal(a.regret.to_numpy(), online.regret.to_numpy())
    with pytest.raises(ValueError, match="sampler: unknown sampler 'uniformm'"):
        xpo_sim.XPO(sampler="uniformm")
    with pytest.raises(ValueError, match="has no attribute"):
        xpo_sim.XPO(sampler="user_ext.research:NOPE")
    with pytest.raises(ValueError, match="not a xpo_sim.rounds.Sampler"):
        xpo_sim.XPO(sampler="user_ext.research:uniform_response_table")


def test_built_in_sampler_names_cannot_be_replaced():
    before = dict(SAMPLERS)
    for name in ("ref", "current", "previous", "history"):
        with pytest.raises(ValueError, match="built-in"):
            xpo_sim.register_sampler(name, lambda ctx: ctx.logp)
    with pytest.raises(ValueError, match="callable"):
        xpo_sim.register_sampler("bad", "not callable")
    assert SAMPLERS == before


def test_a_sampler_returning_a_non_policy_is_refused():
    xpo_sim.register_sampler("half_mass", lambda ctx: ctx.mdp.ref_logp + math.log(0.5))

    class HalfMass(xpo_sim.OnlineDPO):
        explore_sampler = "half_mass"

    with pytest.raises(ValueError, match="sampler 'half_mass' returned a table that is not a policy"):
        xpo_sim.run(envs.bandit(3), HalfMass(), 0.5, 2)


# ------------------------------------------------------------------ trap 2: history
def test_the_history_is_kept_whenever_a_declared_sampler_needs_it():
    df = xpo_sim.run(envs.bandit(3, seed=0), HistoryProbe(), 0.5, 6, seed=0, policy="logits")
    assert len(df) == 7
    ctx_kept = _kept(HistoryProbe(), 6)
    assert ctx_kept == [1, 2, 3, 4, 5, 6]
    assert _kept(xpo_sim.OnlineDPO(), 6) == [1, 2, 2, 2, 2, 2]  # no history needed: the last two


def test_a_registered_history_sampler_keeps_every_iterate():
    class LastThree(xpo_sim.OnlineDPO):
        explore_sampler = "last_three"

    assert _kept(LastThree(), 5) == [1, 2, 3, 4, 5]


def _kept(algorithm, rounds):
    mdp = envs.bandit(3, seed=0)
    cls = xpo_sim.ImplicitRewardClass(mdp, 0.5)
    ctx = xpo_sim.RoundContext(mdp, 0.5, np.random.default_rng(0), xpo_sim.BradleyTerry(), cls, algorithm.samplers)
    kept = []
    for t in range(1, rounds + 1):
        ctx.begin_round(t)
        kept.append(len(ctx.iterates))
        algorithm.collect(ctx)
        algorithm.update(ctx)
    return kept


def test_drawing_from_an_undeclared_sampler_is_an_error():
    with pytest.raises(ValueError, match="'history', which it does not declare"):
        xpo_sim.run(envs.bandit(3, seed=0), HistoryProbe(declare=False), 0.5, 3)


def test_the_tracker_records_the_history_mixture_over_every_iterate():
    """log C after round t for an algorithm drawing (current, history): μ̄ averages the 2t
    drawn distributions, the history term of round i being (1/i) Σ_{j≤i} πʲ."""
    mdp = envs.token_tree(2, 3, seed=1)
    beta = 0.5
    algorithm = xpo_sim.XPO(sampler="history", batch=2)
    df = xpo_sim.run(mdp, algorithm, beta, 5, seed=2, policy="logits", steps=3)
    # recompute the iterates by rerunning the same rounds with the same seed, tables kept
    cls = xpo_sim.LogitsClass(mdp, beta, steps=3)
    ctx = xpo_sim.RoundContext(mdp, beta, xpo_sim.trajectories.as_generator(2), xpo_sim.BradleyTerry(), cls,
                               algorithm.samplers, first_logp=np.array(mdp.ref_logp))
    batch, log_star = star_logp_of_responses(mdp, beta)
    draws, iterates = [], []
    for t in range(1, 6):
        ctx.begin_round(t)
        iterates.append(np.exp(xpo_sim.trajectory_logp(mdp, ctx.logp, batch)))
        algorithm.collect(ctx)
        ctx.bonus = algorithm.bonus_weight(t, beta)
        algorithm.update(ctx)
        draws += [iterates[-1], np.mean(iterates, axis=0)]
        mu = np.mean(draws, axis=0)
        expected = float(np.max(log_star - np.log(mu)))
        assert df.log_concentrability.iloc[t] == pytest.approx(expected, rel=1e-10)


# ------------------------------------------------------------------ trap 3: the start
def test_a_class_that_does_not_start_at_ref_is_scored_and_sampled_as_itself():
    mdp = envs.token_tree(3, 2, seed=4)
    beta = 0.3
    cls = GradientSoftmaxClass(mdp, beta, start="uniform")
    uniform = cls.policy_logp(cls.initial_params())
    df = xpo_sim.run(mdp, xpo_sim.OnlineDPO(batch=2), beta, 1, seed=0, policy=cls)
    assert df.regret.iloc[0] == pytest.approx(xpo_sim.regret(mdp, uniform, beta), rel=1e-12)
    assert df.kl_ref.iloc[0] > 0.01
    # round 1 drew both responses from π¹ (per-token uniform), not from π_ref
    batch, log_star = star_logp_of_responses(mdp, beta)
    expected = float(np.max(log_star - xpo_sim.trajectory_logp(mdp, uniform, batch)))
    assert df.log_concentrability.iloc[1] == pytest.approx(expected, rel=1e-12)


def test_a_class_that_starts_at_ref_gives_round_zero_exactly_pi_ref():
    mdp = envs.token_tree(3, 2, seed=4)
    cls = GradientSoftmaxClass(mdp, 0.3, start="ref")
    df = xpo_sim.run(mdp, xpo_sim.OnlineDPO(), 0.3, 1, seed=0, policy=cls)
    assert df.kl_ref.iloc[0] == 0.0
    assert df.regret.iloc[0] == xpo_sim.regret(mdp, mdp.ref_logp, 0.3)


def test_a_first_iterate_that_is_not_a_policy_is_refused():
    mdp = envs.bandit(3)

    class Broken(GradientSoftmaxClass):
        def policy_logp(self, params):
            return np.zeros(self.mdp.ref_logp.shape)  # every token probability 1

    with pytest.raises(ValueError, match="first iterate .* is not a policy"):
        xpo_sim.run(mdp, xpo_sim.OnlineDPO(), 0.3, 1, policy=Broken(mdp, 0.3))


# ------------------------------------------------------------------ capabilities
COMPATIBLE = [xpo_sim.XPO(batch=2), xpo_sim.XPO(sampler="history", batch=2), xpo_sim.XPO(sampler="current"),
              xpo_sim.OnlineDPO(), xpo_sim.HybridDPO(), xpo_sim.OfflineDPO(), xpo_sim.IterativeDPO(k=3),
              xpo_sim.SELM(), xpo_sim.ExPO(), xpo_sim.VPO(), xpo_sim.VPO(expectation="sampled"),
              xpo_sim.InverseQStar(), UniformDuel()]


@pytest.mark.parametrize("algorithm", COMPATIBLE, ids=lambda a: a.name)
def test_a_user_policy_class_runs_with_every_algorithm_whose_needs_it_meets(algorithm):
    mdp = envs.token_tree(2, 3, seed=0)
    df = xpo_sim.run(mdp, algorithm, 0.5, 3, seed=1, policy=GradientSoftmaxClass(mdp, 0.5))
    assert df.attrs["policy"] == "gradient_softmax"
    assert np.isfinite(df.regret).all() and (df.regret >= 0).all()


@pytest.mark.parametrize("algorithm, missing", [
    (xpo_sim.RLHF(), r"RLHF needs a reward class .* lacks \['box', 'features', 'reward_table'"),
    (xpo_sim.CountUCB(), "CountUCB needs a reward class"),
    (xpo_sim.SEPOPO(), "SEPOPO needs a reward class"),
], ids=lambda a: getattr(a, "name", ""))
def test_a_user_policy_class_is_refused_by_what_it_lacks(algorithm, missing):
    mdp = envs.token_tree(2, 2, seed=0)
    with pytest.raises(ValueError, match=missing):
        xpo_sim.run(mdp, algorithm, 0.5, 2, policy=GradientSoftmaxClass(mdp, 0.5))


def test_capabilities_are_hooks_not_names():
    """The same class without from_logp / aggregated_data is refused by Inverse-Q* and exact
    VPO, saying what is missing; a class named like a built-in gains nothing from its name."""
    mdp = envs.token_tree(2, 2, seed=0)

    class Plain(GradientSoftmaxClass):
        name = "logits"
        from_logp = None
        aggregated_data = False

    with pytest.raises(ValueError, match="from_logp"):
        xpo_sim.run(mdp, xpo_sim.InverseQStar(), 0.5, 2, policy=Plain(mdp, 0.5))
    with pytest.raises(ValueError, match="aggregated_data"):
        xpo_sim.run(mdp, xpo_sim.VPO(), 0.5, 2, policy=Plain(mdp, 0.5))
    xpo_sim.run(mdp, xpo_sim.VPO(expectation="sampled"), 0.5, 2, policy=Plain(mdp, 0.5))


def test_the_objects_given_as_policy_are_checked():
    mdp = envs.bandit(3)
    with pytest.raises(ValueError, match="class ImplicitRewardClass itself; pass an instance"):
        xpo_sim.run(mdp, xpo_sim.XPO(), 0.5, 2, policy=xpo_sim.ImplicitRewardClass)
    with pytest.raises(ValueError, match=r"lacks \['update'\]"):
        class NoUpdate:
            def initial_params(self):
                return np.zeros(1)

            def policy_logp(self, params):
                return mdp.ref_logp

        xpo_sim.run(mdp, xpo_sim.XPO(), 0.5, 2, policy=NoUpdate())


def test_a_nameless_class_is_named_by_its_type():
    mdp = envs.bandit(3)

    class Anonymous(GradientSoftmaxClass):
        name = None

    df = xpo_sim.run(mdp, xpo_sim.XPO(), 0.5, 2, policy=Anonymous(mdp, 0.5))
    assert df.attrs["policy"] == "Anonymous"


# ------------------------------------------------------------------ oracles
def test_an_oracle_with_only_prefer_runs_iterative_dpo():
    mdp = envs.bandit(4, seed=2)
    df = xpo_sim.run(mdp, xpo_sim.IterativeDPO(k=3, batch=2), 0.5, 3, seed=0, oracle=NoisyThreshold())
    assert df.pairs.tolist() == [0, 2, 4, 6]


@settings(max_examples=30)
@given(st.lists(st.lists(st.floats(-3, 3), min_size=2, max_size=6, unique=True), min_size=1, max_size=5)
       .filter(lambda rows: len({len(r) for r in rows}) == 1), st.integers(0, 2**32 - 1))
def test_the_round_robin_ranks_a_deterministic_oracle_by_reward(rows, seed):
    """With distinct rewards and a noiseless prefer, the round robin's best is the argmax
    and its worst the argmin (a transitive tournament ranks by reward)."""
    rewards = np.array(rows)
    best, worst = best_and_worst(NoisyThreshold(), rewards, np.random.default_rng(seed))
    np.testing.assert_array_equal(best, rewards.argmax(axis=1))
    np.testing.assert_array_equal(worst, rewards.argmin(axis=1))


def test_the_round_robin_breaks_a_full_tie_uniformly():
    rewards = np.zeros((6000, 3))  # every comparison a coin: wins tie often
    best, worst = best_and_worst(NoisyThreshold(margin=1.0), rewards, np.random.default_rng(0))
    assert (best != worst).all()
    assert np.all(np.abs(np.bincount(best, minlength=3) - 2000) < 200)


@pytest.mark.parametrize("mode, message", [("short", "shape"), ("half", "bools or 0/1"), ("nan", "bools or 0/1")])
def test_labels_a_user_oracle_returns_are_checked(mode, message):
    with pytest.raises(ValueError, match=f"oracle BrokenOracle.prefer .*{message}"):
        xpo_sim.run(envs.bandit(3), xpo_sim.XPO(batch=3), 0.5, 2, oracle=research.BrokenOracle(mode))


def test_best_and_worst_a_user_oracle_returns_is_checked():
    class OutOfRange:
        def prefer(self, a, b, rng):
            return np.asarray(a) > np.asarray(b)

        def best_and_worst(self, rewards, rng):
            n = len(rewards)
            return np.full(n, 7), np.zeros(n, dtype=int)

    with pytest.raises(ValueError, match=r"best indices .* expected 2 ints in \[0, 3\)"):
        xpo_sim.run(envs.bandit(3), xpo_sim.IterativeDPO(k=3, batch=2), 0.5, 1, oracle=OutOfRange())
    with pytest.raises(ValueError, match="oracle must be a preference oracle object"):
        xpo_sim.run(envs.bandit(3), xpo_sim.XPO(), 0.5, 1, oracle=xpo_sim.BradleyTerry)


# ------------------------------------------------------------------ sweeps, spawned
def test_user_sampler_policy_and_oracle_sweep_identically_serial_and_spawned(tmp_path):
    """A sweep naming the user's sampler, policy factory and oracle by spec gives the same
    shards serially and under a spawn pool (workers import tests/user_ext themselves)."""
    from xpo_sim.sweep import RunConfig, run_sweep

    def configs():
        return [RunConfig(instance="token_tree", instance_args=dict(vocab=3, horizon=2, seed=0),
                          algorithm="XPO", algorithm_args=dict(sampler="user_ext.research:UNIFORM", batch=2),
                          beta=0.5, rounds=3, replicate=r, policy="user_ext.research:gradient_softmax",
                          policy_args=dict(steps=4), oracle="user_ext.research:NoisyThreshold")
                for r in range(2)]

    serial = run_sweep(configs(), tmp_path / "serial")
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        spawned = run_sweep(configs(), tmp_path / "spawned", executor=pool)
    pd.testing.assert_frame_equal(serial, spawned)
    assert (serial.policy == "user_ext.research:gradient_softmax").all()
