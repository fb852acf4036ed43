"""The other methods of the literature (xpo_sim.methods): each defining formula on a
hand-checkable case, and the equivalences that pin them to the core algorithms."""

import math

import numpy as np
import pytest

import xpo_sim
from xpo_sim import envs, losses
from xpo_sim.rounds import RoundContext
from xpo_sim.methods import CountUCB, extrapolate, ppo_surrogate
from xpo_sim.policies import ImplicitRewardClass
from xpo_sim.preferences import Argmax, BradleyTerry


def bandit(rewards, ref_probs):
    n = len(rewards)
    return xpo_sim.TokenMDP(np.full((1, n), -1), np.array([rewards], dtype=float),
                            np.log(np.array([ref_probs], dtype=float)), np.array([1.0]))


def context(mdp, beta=0.5, seed=0, oracle=None):
    cls = ImplicitRewardClass(mdp, beta, box=(-5.0, 5.0))
    return RoundContext(mdp, beta, np.random.default_rng(seed), oracle or BradleyTerry(), cls)


def test_iterative_dpo_pairs_best_against_worst_of_k_samples():
    mdp = bandit([0.0, 0.5, 1.0], [0.3, 0.4, 0.3])
    ctx = context(mdp, oracle=Argmax())
    ctx.t = 1
    algorithm = xpo_sim.IterativeDPO(k=40, batch=2)
    algorithm.collect(ctx)
    # with 40 draws each response appears (probability of missing one < 3·0.7⁴⁰ ≈ 2e-6):
    # every pair is response 2 ≻ response 0
    a = ctx.round_data.arrays()
    tokens = a["path_actions"][:, 0]
    assert ctx.round_data.n_pairs == 2
    assert [(tokens[c], tokens[r]) for c, r in zip(a["pair_chosen"], a["pair_rejected"])] == [(2, 0)]
    assert a["pair_count"].tolist() == [2.0]


def test_iterative_dpo_trains_on_this_round_only_unless_accumulating():
    mdp = bandit([0.0, 0.5, 1.0], [0.3, 0.4, 0.3])
    for accumulate in (False, True):
        ctx = context(mdp, oracle=Argmax())
        algorithm = xpo_sim.IterativeDPO(k=40, accumulate=accumulate)
        seen = []
        for t in (1, 2):
            ctx.t = t
            ctx.round_data = xpo_sim.PreferenceData(mdp)
            algorithm.collect(ctx)
            seen.append((ctx.round_data.n_pairs, ctx.data.n_pairs))
        assert seen == [(1, 1), (1, 2)]
        data = ctx.data if accumulate else ctx.round_data
        expected = ctx.policy_class.update(ctx.params, data, 0.0)
        algorithm.update(ctx)
        np.testing.assert_array_equal(ctx.params, expected)


def test_ipo_fixed_point_is_a_reward_gap_of_one_half():
    """IPO's loss (h₊ − h₋ − 1/(2β))² is zero at h₊ − h₋ = 1/(2β); in the implicit-reward
    class h = r̂/β − V̂/β, so the minimizer has r̂(good) − r̂(bad) = 1/2, whatever β."""
    for beta in (0.1, 0.5, 2.0):
        mdp = bandit([1.0, 0.0], [0.5, 0.5])
        data = xpo_sim.PreferenceData(mdp)
        good, bad = (data.path_ids(xpo_sim.TrajectoryBatch(np.array([[0]]), np.array([[a]]), np.array([1])))
                     for a in (0, 1))
        data.add_pairs(good, bad)
        cls = ImplicitRewardClass(mdp, beta, box=(-5.0, 5.0), gtol=1e-12)
        params = cls.update(cls.initial_params(), data, 0.0, "ipo")
        assert params[0] - params[1] == pytest.approx(0.5, abs=1e-6)
        # DPO on the same single pair runs to the box instead
        params = cls.update(cls.initial_params(), data, 0.0, "dpo")
        assert params[0] - params[1] == pytest.approx(10.0, abs=1e-6)


def test_ln_dpo_divides_each_implicit_reward_by_its_length():
    """Hand case: h₊ = 0.6 over 3 tokens, h₋ = −0.2 over 1 token, β = 0.5:
    m = 0.5 (0.2 + 0.2) = 0.2, loss = log(1 + e^{−0.2})."""
    value = losses.ln_dpo_loss(np.array([0.6]), np.array([-0.2]), np.array([0.0]), np.array([0.0]),
                               np.array([3.0]), np.array([1.0]), 0.5)
    assert value[0] == pytest.approx(math.log1p(math.exp(-0.2)), rel=1e-14)
    # equal lengths L: LN-DPO with β is DPO with β/L
    rng = np.random.default_rng(0)
    lp = rng.normal(size=(4, 6))
    ln = losses.ln_dpo_loss(*lp, np.full(6, 4.0), np.full(6, 4.0), 0.8)
    np.testing.assert_allclose(ln, losses.dpo_loss(*lp, 0.2), rtol=1e-14)


def test_ln_dpo_runs_where_lengths_differ():
    mdp = envs.random_dag(20, 3, n_prompts=2, seed=3)
    assert len(set(mdp.trajectories().lengths.tolist())) > 1
    df = xpo_sim.run(mdp, xpo_sim.LNDPO(), 0.5, 10, seed=1)
    assert np.isfinite(df.regret).all() and len(df) == 11


def test_selm_bonus_is_alpha_beta_on_an_extra_response_from_the_previous_iterate():
    mdp = bandit([1.0, 0.0, 0.2], [0.2, 0.5, 0.3])
    algorithm = xpo_sim.SELM(alpha=0.3, batch=3)
    assert algorithm.bonus_weight(1, beta=0.5) == pytest.approx(0.15)
    ctx = context(mdp)
    ctx.begin_round(2)
    ctx.iterates.insert(0, np.log(np.array([[1e-12, 1 - 2e-12, 1e-12]])))  # π^{t−1}: token 1
    algorithm.collect(ctx)
    assert ctx.used == ["current", "current", "previous"]
    a = ctx.data.arrays()
    assert ctx.data.n_pairs == 3 and ctx.data.n_explored == 3
    assert a["path_actions"][a["explore_path"], 0].tolist() == [1]  # every extra from π^{t−1}


def test_selm_and_xpo_bonus_forms_have_the_same_gradient():
    """α_TRL log π(ỹ) − α_SELM β log(π/π_ref)(ỹ) = α_TRL log π_ref(ỹ) (a constant) when
    α_TRL = α_SELM β: the kernel's objective with weight αβ minus SELM's form is constant."""
    mdp = envs.bandit(4, seed=2)
    data = xpo_sim.PreferenceData(mdp)
    explored = xpo_sim.sample_trajectories(mdp, mdp.ref_logp, 5, seed=1)
    data.add_explored(data.path_ids(explored))
    beta, alpha = 0.4, 0.3
    cls = ImplicitRewardClass(mdp, beta, box=(-3, 3))
    arrays = data.arrays()
    differences = []
    for params in np.random.default_rng(0).uniform(-1, 1, (3, cls.n_params)):
        logp = xpo_sim.trajectory_logp(mdp, cls.policy_logp(params), data.batch())[arrays["explore_path"]]
        selm = np.sum(arrays["explore_count"] * losses.selm_bonus(logp, arrays["path_ref_logp"][arrays["explore_path"]], alpha, beta))
        differences.append(cls.objective(params, data, alpha * beta)[0] - selm)
    np.testing.assert_allclose(differences, differences[0], rtol=1e-12)


@pytest.mark.filterwarnings("ignore:divide by zero:RuntimeWarning")  # log(0) = -inf, on purpose
def test_expo_extrapolation_formula():
    ref = np.log(np.array([[0.5, 0.5, 1e-300], [0.25, 0.75, 0.0]]))
    pi = np.log(np.array([[0.8, 0.2, 1e-300], [0.5, 0.5, 0.0]]))
    out = np.exp(extrapolate(ref, pi, 1.0))
    # state 0: 0.5·1.6² : 0.5·0.4² (: tiny) = 1.28 : 0.08; state 1: 0.25·2² : 0.75·(2/3)² = 1 : 1/3
    np.testing.assert_allclose(out[0, :2], [1.28 / 1.36, 0.08 / 1.36], rtol=1e-12)
    np.testing.assert_allclose(out[1], [0.75, 0.25, 0.0], rtol=1e-12)
    np.testing.assert_allclose(extrapolate(ref, pi, 0.0), pi, atol=1e-12)


def test_expo_reports_the_extrapolation_of_the_hybrid_dpo_iterates():
    """ExPO trains exactly hybrid DPO (same data, same iterates): its iterate_regret is hybrid
    DPO's regret, and its reported regret is that of the extrapolated policy."""
    mdp = envs.bandit_needle(4, 0.1, seed=0)
    expo = xpo_sim.run(mdp, xpo_sim.ExPO(gamma=0.5), 0.3, 8, seed=4)
    hybrid = xpo_sim.run(mdp, xpo_sim.HybridDPO(), 0.3, 8, seed=4)
    np.testing.assert_allclose(expo.iterate_regret, hybrid.regret, rtol=0, atol=0)
    assert not np.allclose(expo.regret[1:], hybrid.regret[1:])


def test_rlhf_exact_is_dpo_in_the_implicit_reward_class():
    """Fitting r̂ by maximum likelihood then solving for π*(r̂) is DPO's argmin in the
    implicit-reward class (the margin is r̂₊ − r̂₋): identical runs."""
    mdp = envs.token_tree(3, 2, seed=1)
    for sampler, dpo in (("current", xpo_sim.OnlineDPO()), ("ref", xpo_sim.HybridDPO())):
        rlhf = xpo_sim.run(mdp, xpo_sim.RLHF(sampler=sampler), 0.3, 10, seed=2)
        other = xpo_sim.run(mdp, dpo, 0.3, 10, seed=2)
        np.testing.assert_allclose(rlhf.regret, other.regret, rtol=1e-12, atol=1e-12)


def test_ppo_clipped_surrogate_by_hand():
    value, grad = ppo_surrogate(np.log([1.5, 0.5, 1.5, 0.5]), np.zeros(4), np.array([1.0, 1.0, -1.0, -1.0]), 0.2)
    # ρ=1.5, A=+1: clipped to 1.2 (no gradient); ρ=0.5, A=+1: 0.5 (gradient 0.5);
    # ρ=1.5, A=−1: min(−1.5, −1.2) = −1.5 (gradient −1.5); ρ=0.5, A=−1: min(−0.5, −0.8) = −0.8 (clipped)
    np.testing.assert_allclose(value, [1.2, 0.5, -1.5, -0.8])
    np.testing.assert_allclose(grad, [0.0, 0.5, -1.5, 0.0])


def test_rlhf_ppo_lowers_regret_on_an_easy_bandit():
    """Rewards 1 vs 0 on three responses with π_ref uniform, β = 0.5: the fitted reward
    soon ranks the good response first and PPO moves toward it. Over 5 seeds the mean
    final regret must fall below π_ref's (a 10% margin: regret 0.37 at π_ref)."""
    mdp = bandit([1.0, 0.0, 0.0], [1 / 3, 1 / 3, 1 / 3])
    finals = [xpo_sim.run(mdp, xpo_sim.RLHF(update_rule="ppo", batch=4), 0.5, 15, seed=s).regret
              for s in range(5)]
    ref = finals[0].iloc[0]
    assert np.mean([f.iloc[-1] for f in finals]) < 0.9 * ref


def test_count_ucb_bonus_and_its_zero_limit():
    mdp = bandit([1.0, 0.0, 0.3], [0.2, 0.5, 0.3])
    ctx = context(mdp)
    batch = xpo_sim.TrajectoryBatch(np.zeros((3, 1), int), np.array([[0], [1], [1]]), np.ones(3, int))
    ids = ctx.data.path_ids(batch)
    ctx.data.add_pairs(ids[[0, 1]], ids[[1, 2]])  # 0 ≻ 1 and 1 ≻ 1 (a tie pair, counted twice)
    counts = CountUCB.visit_counts(ctx, ctx.policy_class)
    np.testing.assert_array_equal(counts, [1, 3, 0])
    # c = 0 is RLHF's exact pipeline with (πᵗ, π_ref) pairs
    tree = envs.token_tree(3, 2, seed=1)
    ucb = xpo_sim.run(tree, xpo_sim.CountUCB(c=0.0), 0.3, 8, seed=3)
    rlhf = xpo_sim.run(tree, xpo_sim.RLHF(sampler="ref"), 0.3, 8, seed=3)
    np.testing.assert_allclose(ucb.regret, rlhf.regret, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: xpo_sim.IterativeDPO(k=1), "k must be an int >= 2"),
        (lambda: xpo_sim.SELM(alpha=-1), "alpha"),
        (lambda: xpo_sim.ExPO(base="PPO"), "base"),
        (lambda: xpo_sim.ExPO(gamma=math.inf), "gamma"),
        (lambda: xpo_sim.RLHF(update_rule="sgd"), "update_rule"),
        (lambda: xpo_sim.RLHF(clip=0), "clip"),
        (lambda: xpo_sim.CountUCB(c=-1), "c must"),
        (lambda: xpo_sim.OnlineDPO(loss="hinge"), "unknown loss"),
    ],
)
def test_bad_method_options(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_reward_model_methods_refuse_the_logits_class():
    with pytest.raises(ValueError, match="CountUCB needs a reward class.*'logits' class lacks"):
        xpo_sim.run(envs.bandit(3), xpo_sim.CountUCB(), 0.5, 2, policy="logits")


def test_iterative_dpo_counts_one_query_per_ranked_prompt():
    """Every ranked prompt is one query, also when all k rewards are equal."""
    mdp = envs.bandit_needle(6, 0.01, seed=0)  # mostly equal (zero) rewards: few informative pairs
    df = xpo_sim.run(mdp, xpo_sim.IterativeDPO(k=3, batch=2), 0.3, 5, seed=0)
    assert df.pairs.tolist() == [0, 2, 4, 6, 8, 10]
