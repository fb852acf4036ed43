"""Inverse-Q*, SE-POPO and VPO (xpo_sim.methods): each defining formula on a hand-checkable
case, the identities they rest on (hypothesis, random instances), and their equivalences to
the core algorithms."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import expit

import xpo_sim
from strategies import mdps
from xpo_sim import envs
from xpo_sim.methods import (_ExpectedExplored, _Responses, conditioned_policy, preference_incentive)
from xpo_sim.policies import ImplicitRewardClass, LogitsClass
from xpo_sim.preferences import Argmax
from xpo_sim.rounds import RoundContext


def bandit(rewards, ref_probs):
    n = len(rewards)
    return xpo_sim.TokenMDP(np.full((1, n), -1), np.array([rewards], dtype=float),
                            np.log(np.array([ref_probs], dtype=float)), np.array([1.0]))


def one_token(*actions):
    n = len(actions)
    return xpo_sim.TrajectoryBatch(np.zeros((n, 1), int), np.array(actions, dtype=int)[:, None], np.ones(n, int))


def context(mdp, cls, beta, seed=0, oracle=None):
    return RoundContext(mdp, beta, np.random.default_rng(seed), oracle or xpo_sim.BradleyTerry(), cls)


# ------------------------------------------------------------------------- Inverse-Q*
def test_conditioned_policy_by_hand():
    """π_ref = (0.5, 0.3, 0.2), judged-good counts (0, 3, 1) so Ĝ = (0, 3/4, 1/4), β = 0.5,
    c = 1: π̂* ∝ (0.5, 0.3 e^{1.5}, 0.2 e^{0.5})."""
    weights = np.array([0.5, 0.3 * math.exp(1.5), 0.2 * math.exp(0.5)])
    out = conditioned_policy(np.log([[0.5, 0.3, 0.2]]), np.array([[0.0, 3.0, 1.0]]), 1.0, 0.5)
    np.testing.assert_allclose(np.exp(out[0]), weights / weights.sum(), rtol=1e-13)
    # a state no judged-good response visits keeps π_ref; a disallowed token stays at −inf
    with np.errstate(divide="ignore"):
        ref = np.log(np.array([[0.25, 0.75, 0.0], [0.5, 0.25, 0.25]]))
        out = conditioned_policy(ref, np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]]), 2.0, 1.0)
    np.testing.assert_allclose(out[0], ref[0])
    weights = np.array([0.5 * math.e**2, 0.25, 0.25])
    np.testing.assert_allclose(np.exp(out[1]), weights / weights.sum(), rtol=1e-13)


@settings(max_examples=30)
@given(mdps(), st.floats(0.05, 3.0), st.floats(0.1, 3.0), st.integers(0, 2**31 - 1))
def test_dense_reward_has_the_conditioned_policy_as_its_exact_optimum(mdp, beta, tilt, seed):
    """r̂ = β log(π̂*/π_ref) as the reward: V̂ ≡ 0 solves the soft Bellman equations and
    π*(r̂) = π̂* on every state, for any judged-good counts (Inverse-Q*'s identity)."""
    counts = np.where(mdp.allowed, np.random.default_rng(seed).integers(0, 3, mdp.reward.shape), 0)
    logp = conditioned_policy(mdp.ref_logp, counts, tilt, beta)
    allowed = mdp.allowed
    dense = np.where(allowed, beta * (logp - np.where(allowed, mdp.ref_logp, 0.0)), 0.0)
    solution = xpo_sim.solve_soft(xpo_sim.TokenMDP(mdp.next_state, dense, mdp.ref_logp, mdp.start), beta)
    np.testing.assert_allclose(solution.v, 0.0, atol=1e-10 * max(1.0, tilt))
    np.testing.assert_allclose(np.exp(solution.logp), np.exp(logp), atol=1e-12)


def test_inverse_q_star_conditions_on_the_best_of_k_and_lands_on_the_conditioned_policy():
    """Argmax judge, k = 40 draws from π_ref = (0.3, 0.4, 0.3): the best is response 2 in
    every prompt (missing it has probability 0.7⁴⁰), so Ĝ = e₂; the iterate is π̂*."""
    mdp = bandit([0.0, 0.5, 1.0], [0.3, 0.4, 0.3])
    beta = 0.5
    ctx = context(mdp, LogitsClass(mdp, beta), beta, oracle=Argmax())
    algorithm = xpo_sim.InverseQStar(k=40, batch=3, tilt=0.7)
    ctx.begin_round(1)
    algorithm.collect(ctx)
    np.testing.assert_array_equal(ctx.state["good_counts"], [[0.0, 0.0, 3.0]])
    assert ctx.data.n_pairs == 3  # one ranked prompt, one query
    algorithm.update(ctx)
    weights = np.array([0.3, 0.4, 0.3 * math.exp(0.7 / beta)])
    np.testing.assert_allclose(np.exp(ctx.logp[0]), weights / weights.sum(), rtol=1e-12)
    np.testing.assert_allclose(algorithm.dense_reward(ctx), beta * (ctx.logp - mdp.ref_logp), atol=1e-14)


def test_inverse_q_star_recovers_pi_star_when_the_judged_good_response_is_optimal():
    """On a needle bandit (reward R on the needle, 0 elsewhere) with tilt c = R and every
    judged-good response the needle, π̂* ∝ π_ref e^{R·1[needle]/β} is π* exactly."""
    beta, scale = 0.2, 2.0
    mdp = envs.bandit_needle(5, 0.05, reward_scale=scale, seed=3)
    needle = int(mdp.info["optimal_actions"][0])
    counts = np.zeros(mdp.reward.shape)
    counts[0, needle] = 7.0
    logp = conditioned_policy(mdp.ref_logp, counts, scale, beta)
    np.testing.assert_allclose(logp, xpo_sim.solve_soft(mdp, beta).logp, atol=1e-12)


def test_inverse_q_star_accumulates_only_on_request():
    mdp = bandit([0.0, 0.5, 1.0], [0.3, 0.4, 0.3])
    for accumulate, expected in ((False, 2.0), (True, 4.0)):
        ctx = context(mdp, LogitsClass(mdp, 0.5), 0.5, oracle=Argmax())
        algorithm = xpo_sim.InverseQStar(k=40, batch=2, accumulate=accumulate)
        for t in (1, 2):
            ctx.begin_round(t)
            algorithm.collect(ctx)
        assert ctx.state["good_counts"].sum() == expected


def test_inverse_q_star_runs_with_the_logits_class_only():
    mdp = envs.token_needle(3, 2, 0.1, seed=1)
    df = xpo_sim.run(mdp, xpo_sim.InverseQStar(batch=4), 0.2, 5, seed=0, policy="logits")
    assert np.isfinite(df.regret).all() and df.pairs.iloc[-1] == 20
    with pytest.raises(ValueError, match="logits"):
        xpo_sim.run(mdp, xpo_sim.InverseQStar(), 0.2, 2, seed=0)


# ---------------------------------------------------------------------------- SE-POPO
def test_preference_incentive_on_a_two_response_bandit_by_hand():
    """π_ref = (0.2, 0.8), β = 0.5, r̂ = (1, 0), one sampler response ỹ = 2 (weight α = 0.3):
    I = α[π(1) σ(r̂₁ − r̂₂) + π(2) σ(0)] with π(1) = 0.2e²/(0.2e² + 0.8)."""
    beta, alpha = 0.5, 0.3
    ref_logp = np.log([0.2, 0.8])
    pi1 = 0.2 * math.e**2 / (0.2 * math.e**2 + 0.8)
    expected = alpha * (pi1 * expit(1.0) + (1 - pi1) * 0.5)
    assert expected == pytest.approx(0.3 * 0.6499, abs=1e-4)  # 0.6488 · 0.7311 + 0.3512 · 0.5
    value, grad = preference_incentive(np.array([1.0, 0.0]), ref_logp, [slice(0, 2)], np.array([1]),
                                       np.array([alpha]), beta)
    assert value == pytest.approx(expected, rel=1e-14)
    # the gradient against central differences of the closed form
    def closed(r):
        p1 = 0.2 * math.exp(r[0] / beta) / (0.2 * math.exp(r[0] / beta) + 0.8 * math.exp(r[1] / beta))
        return alpha * (p1 * expit(r[0] - r[1]) + (1 - p1) * 0.5)
    h = 1e-6
    numeric = [(closed(np.array([1.0, 0.0]) + h * e) - closed(np.array([1.0, 0.0]) - h * e)) / (2 * h)
               for e in np.eye(2)]
    np.testing.assert_allclose(grad, numeric, rtol=1e-7)
    # at r̂ = 0 the pull on an unseen response is α π(y) σ'(0) = α π(y)/4
    _, grad0 = preference_incentive(np.zeros(2), ref_logp, [slice(0, 2)], np.array([1]), np.array([alpha]), beta)
    assert grad0[0] == pytest.approx(alpha * 0.2 / 4, rel=1e-12)


@settings(max_examples=25)
@given(st.integers(2, 5), st.integers(1, 4), st.floats(0.1, 2.0), st.integers(0, 2**31 - 1))
def test_preference_incentive_gradient_matches_finite_differences(n, m, beta, seed):
    rng = np.random.default_rng(seed)
    reward = rng.uniform(-1, 1, 2 * n)
    ref_logp = np.log(rng.dirichlet(np.ones(n), 2).ravel())
    groups = [slice(0, n), slice(n, 2 * n)]
    explored = rng.integers(0, 2 * n, m)
    weights = rng.uniform(0.1, 1.0, m)
    _, grad = preference_incentive(reward, ref_logp, groups, explored, weights, beta)
    h = 1e-6
    for i in range(2 * n):
        e = np.zeros(2 * n)
        e[i] = h
        up = preference_incentive(reward + e, ref_logp, groups, explored, weights, beta)[0]
        down = preference_incentive(reward - e, ref_logp, groups, explored, weights, beta)[0]
        assert grad[i] == pytest.approx((up - down) / (2 * h), abs=1e-7)


def test_sepopo_update_maximizes_the_incentive_when_there_are_no_pairs():
    """No pairs, one explored ỹ = response 2, box [0, 1]: the minimizer of
    −α[π(1)σ(r̂₁ − r̂₂) + π(2)/2] is the corner r̂ = (1, 0) (checked on a grid)."""
    mdp = bandit([1.0, 0.0], [0.2, 0.8])
    beta = 0.5
    cls = ImplicitRewardClass(mdp, beta, box=(0.0, 1.0))
    ctx = context(mdp, cls, beta)
    algorithm = xpo_sim.SEPOPO(alpha=0.3)
    responses = algorithm._responses(ctx)
    ctx.state["explored"] = np.array([0.0, 1.0])
    algorithm.update(ctx)
    grid = np.linspace(0, 1, 101)
    values = [[preference_incentive(np.array([a, b]), responses.ref_logp, responses.groups, np.array([1]),
                                    np.array([0.3]), beta)[0] for b in grid] for a in grid]
    best = np.unravel_index(np.argmax(values), (101, 101))
    np.testing.assert_allclose(ctx.params, [grid[best[0]], grid[best[1]]], atol=1e-8)
    np.testing.assert_allclose(ctx.params, [1.0, 0.0], atol=1e-8)


def test_sepopo_samplers_follow_the_epochs():
    """Epoch 1 compares πᵗ with π_ref; each later epoch's sampler is the iterate the previous
    epoch ended with, kept as a table and sampled with ctx.sample_table (which reports it to
    the concentrability tracker)."""
    mdp = envs.bandit_needle(4, 0.2, seed=0)
    beta = 0.3
    ctx = context(mdp, ImplicitRewardClass(mdp, beta), beta)
    algorithm = xpo_sim.SEPOPO(epoch_rounds=3, batch=2)
    used, explored = [], []
    for t in range(1, 8):
        ctx.begin_round(t)
        algorithm.collect(ctx)
        used.append(ctx.used)
        explored.append(ctx.state["explored"].sum())
        if t == 4:
            start_of_epoch = ctx.logp
        algorithm.update(ctx)
    assert used[:3] == [["current", "ref"]] * 3
    for t in (4, 5, 6):  # epoch 2: ỹ from the table the first epoch ended with
        assert used[t - 1][0] == "current"
        np.testing.assert_array_equal(used[t - 1][1], start_of_epoch)
    assert not np.array_equal(used[6][1], start_of_epoch)  # round 7: epoch 3, a new sampler
    assert explored == [2, 4, 6, 2, 4, 6, 2]  # the incentive uses this epoch's ỹ only
    assert ctx.data.n_pairs == 14  # the DPO term keeps every pair
    assert ctx.state["sampler"] is not start_of_epoch  # round 7 started a new epoch


def test_sepopo_without_incentive_is_hybrid_dpo_in_its_first_epoch():
    """α = 0 and one long epoch: pairs (πᵗ, π_ref) and the DPO argmin — hybrid DPO, run for
    run (the two exact solvers agree to their tolerance on this convex objective)."""
    mdp = envs.bandit_needle(4, 0.1, seed=2)
    sepopo = xpo_sim.run(mdp, xpo_sim.SEPOPO(alpha=0.0, epoch_rounds=100, batch=2), 0.3, 8, seed=5)
    hybrid = xpo_sim.run(mdp, xpo_sim.HybridDPO(batch=2), 0.3, 8, seed=5)
    np.testing.assert_allclose(sepopo.regret, hybrid.regret, atol=1e-6)


def test_sepopo_runs_on_a_tree_and_the_linear_class():
    tree = envs.token_needle(3, 2, 0.1, seed=1)
    df = xpo_sim.run(tree, xpo_sim.SEPOPO(batch=2, epoch_rounds=2), 0.2, 5, seed=0)
    assert np.isfinite(df.regret).all() and df.converged.all()
    lock = envs.combination_lock(3, 3, 0.3)
    df = xpo_sim.run(lock, xpo_sim.SEPOPO(batch=2), 0.2, 3, seed=0, policy="linear")
    assert np.isfinite(df.regret).all()
    with pytest.raises(ValueError, match="reward class|implicit"):
        xpo_sim.run(tree, xpo_sim.SEPOPO(), 0.2, 2, seed=0, policy="logits")
    with pytest.raises(ValueError, match="max_enumerate"):
        xpo_sim.run(tree, xpo_sim.SEPOPO(max_enumerate=4), 0.2, 2, seed=0)


# -------------------------------------------------------------------------------- VPO
@settings(max_examples=30)
@given(mdps(), st.floats(0.05, 3.0), st.integers(0, 2**31 - 1))
def test_vpo_value_incentive_equals_its_policy_form(mdp, beta, seed):
    """−α[E_ρ V_r̂ − E_{ρ, π_ref} r̂] = αβ E_{ρ, π_ref} log(π_r̂/π_ref) for every reward table r̂
    (π_r̂ its soft-optimal policy): VPO's optimism in reward form is the policy-form term
    VPO minimizes — with the plus sign, as XPO's bonus."""
    alpha = 0.7
    rng = np.random.default_rng(seed)
    reward = np.where(mdp.allowed, rng.uniform(-1, 1, mdp.reward.shape), 0.0)
    fitted = xpo_sim.TokenMDP(mdp.next_state, reward, mdp.ref_logp, mdp.start)
    solution = xpo_sim.solve_soft(fitted, beta)
    batch = mdp.trajectories()
    weight = mdp.start[batch.start_states] * np.exp(xpo_sim.trajectory_logp(mdp, mdp.ref_logp, batch))
    value_form = -alpha * (float(mdp.start @ solution.v) - weight @ xpo_sim.trajectory_reward(fitted, batch))
    log_ratio = (xpo_sim.trajectory_logp(mdp, solution.logp, batch) - xpo_sim.trajectory_logp(mdp, mdp.ref_logp, batch))
    assert value_form == pytest.approx(alpha * beta * float(weight @ log_ratio), abs=1e-9)


def test_vpo_is_xpo_with_alpha_beta_over_n_when_the_explored_responses_follow_pi_ref():
    """π_ref = (1/4, 1/4, 1/2) and four explored ỹ = (0, 1, 2, 2), whose empirical law is
    π_ref: XPO's objective with α_X = αβ/4 (α_X Σ log π(ỹ_i)) and VPO's exact objective
    (αβ E_{π_ref} log π) are equal for every θ — in general they differ by the constant
    α_X Σ log π_ref(ỹ_i) − αβ E_{π_ref} log π_ref plus the sampling error, both 0 when the
    explored responses have exactly π_ref's law — and the two updates coincide."""
    mdp = bandit([1.0, 0.0, 0.3], [0.25, 0.25, 0.5])
    beta, alpha = 0.4, 0.9
    cls = ImplicitRewardClass(mdp, beta, box=(-2.0, 2.0), gtol=1e-12)
    xpo_data = xpo_sim.PreferenceData(mdp)
    chosen, rejected = one_token(0, 2, 2), one_token(1, 1, 0)
    xpo_data.add_pairs(xpo_data.path_ids(chosen), xpo_data.path_ids(rejected))
    xpo_data.add_explored(xpo_data.path_ids(one_token(0, 1, 2, 2)))
    vpo_private = xpo_sim.PreferenceData(mdp)
    responses = _Responses(mdp, None, 100)
    ids = vpo_private.path_ids(responses.batch)
    vpo_private.add_pairs(vpo_private.path_ids(chosen), vpo_private.path_ids(rejected))
    vpo_data = _ExpectedExplored(vpo_private, ids, np.exp(responses.ref_logp))
    alpha_xpo = alpha * beta / 4
    constant = alpha_xpo * float(np.log([0.25, 0.25, 0.5, 0.5]).sum()) - alpha * beta * float(
        np.exp(responses.ref_logp) @ responses.ref_logp)
    assert constant == pytest.approx(0.0, abs=1e-15)
    for theta in np.random.default_rng(0).uniform(-2, 2, (4, 3)):
        xpo_value, xpo_grad = cls.objective(theta, xpo_data, alpha_xpo)
        vpo_value, vpo_grad = cls.objective(theta, vpo_data, alpha * beta)
        assert xpo_value - vpo_value == pytest.approx(constant, abs=1e-12)
        np.testing.assert_allclose(xpo_grad, vpo_grad, atol=1e-12)
    start = cls.initial_params()
    np.testing.assert_allclose(cls.update(start, xpo_data, alpha_xpo), cls.update(start, vpo_data, alpha * beta),
                               atol=1e-7)


def test_vpo_bonus_weights_and_sampling():
    exact, sampled = xpo_sim.VPO(alpha=2.0, batch=4), xpo_sim.VPO(alpha=2.0, batch=4, expectation="sampled")
    assert exact.bonus_weight(3, 0.1) == pytest.approx(0.2)
    assert sampled.bonus_weight(3, 0.1) == pytest.approx(0.2 / 12)  # running mean over 12 ỹ
    grow = xpo_sim.VPO(alpha=0.8, schedule="sqrt", batch=8, expectation="sampled")
    xpo = xpo_sim.XPO(alpha=0.8 * 0.1 / 8, schedule="inv_sqrt", batch=8)
    for t in (1, 4, 9):  # the same weight per explored response as XPO(αβ/batch, inv_sqrt)
        assert grow.bonus_weight(t, 0.1) == pytest.approx(xpo.bonus_weight(t, 0.1))
    mdp = envs.bandit_needle(4, 0.1, seed=0)
    ctx = context(mdp, ImplicitRewardClass(mdp, 0.3), 0.3)
    ctx.begin_round(1)
    sampled.collect(ctx)
    assert ctx.used == ["current", "current", "ref"] and ctx.data.n_explored == 4
    ctx = context(mdp, ImplicitRewardClass(mdp, 0.3), 0.3)
    ctx.begin_round(1)
    exact.collect(ctx)
    assert ctx.used == ["current", "current"] and ctx.data.n_explored == 0
    calibrated = ctx.state["calibrated"]
    assert calibrated.data.n_pairs == 4 and ctx.data.n_distinct <= 4
    # every response explored with weight ρ(x) π_ref(y|x), entering the objective with αβ
    tokens = calibrated.data.arrays()["path_actions"][calibrated.ids, 0]
    np.testing.assert_allclose(calibrated.weights, np.exp(mdp.ref_logp[0, tokens]), rtol=1e-14)
    assert calibrated.arrays()["explore_count"] is calibrated.weights


def test_vpo_runs_with_every_class_it_lists():
    mdp = envs.token_needle(3, 2, 0.1, seed=1)
    for policy in ("implicit", "logits"):
        df = xpo_sim.run(mdp, xpo_sim.VPO(batch=2), 0.2, 4, seed=0, policy=policy)
        assert np.isfinite(df.regret).all()
    lock = envs.combination_lock(3, 3, 0.3)
    assert np.isfinite(xpo_sim.run(lock, xpo_sim.VPO(), 0.2, 3, seed=0, policy="linear").regret).all()


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: xpo_sim.InverseQStar(k=1), "k must be an int >= 2"),
        (lambda: xpo_sim.InverseQStar(tilt=0.0), "tilt"),
        (lambda: xpo_sim.InverseQStar(accumulate="yes"), "accumulate"),
        (lambda: xpo_sim.SEPOPO(alpha=-1.0), "alpha"),
        (lambda: xpo_sim.SEPOPO(schedule="log"), "schedule"),
        (lambda: xpo_sim.SEPOPO(epoch_rounds=0), "epoch_rounds"),
        (lambda: xpo_sim.SEPOPO(max_enumerate=1.5), "max_enumerate"),
        (lambda: xpo_sim.VPO(alpha=float("nan")), "alpha"),
        (lambda: xpo_sim.VPO(expectation="mc"), "expectation"),
        (lambda: xpo_sim.VPO(schedule="inv_sqrt"), "schedule"),
        (lambda: xpo_sim.VPO(batch=0), "batch"),
    ],
)
def test_bad_arguments_name_themselves(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_the_sweeps_find_the_new_methods_by_name():
    from xpo_sim.sweep import algorithm_class

    for name in ("InverseQStar", "SEPOPO", "VPO"):
        assert algorithm_class(name) is getattr(xpo_sim, name)
