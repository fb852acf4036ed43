"""SE-POPO's two variants (xpo_sim.methods.SEPOPO): "theory" (our reconstruction of the
paper, unchanged) and "code" (the objective of the authors' public code,
github.com/MYC000801/SE-POPO, dpo_iteration/wpo.py with loss_type "popo"): the code
variant's objective against a plain-Python oracle and finite differences, the reference
reset at iteration boundaries, the α schedule, its exact update, and the argument checks."""

import math

import numpy as np
import pytest
from scipy.special import expit

import naive
import xpo_sim
from xpo_sim import envs
from xpo_sim.losses import popo_bonus
from xpo_sim.methods import SEPOPO_CODE_ALPHAS, popo_code_objective
from xpo_sim.policies import ImplicitRewardClass, LinearRewardClass
from xpo_sim.rounds import RoundContext


def context(mdp, cls, beta, seed=0):
    return RoundContext(mdp, beta, np.random.default_rng(seed), xpo_sim.BradleyTerry(), cls)


def steps(batch, i):
    """Trajectory i of a batch as the oracle's tuple of (state, action) steps."""
    n = int(batch.lengths[i])
    return tuple((int(s), int(a)) for s, a in zip(batch.states[i, :n], batch.actions[i, :n]))


def oracle_terms(data):
    """The iteration data's pairs and explored responses in the oracle's form."""
    arrays, batch = data.arrays(), data.batch()
    pairs = [(steps(batch, c), steps(batch, r), float(n))
             for c, r, n in zip(arrays["pair_chosen"], arrays["pair_rejected"], arrays["pair_count"])]
    explored = [(steps(batch, k), float(n)) for k, n in zip(arrays["explore_path"], arrays["explore_count"])]
    return pairs, explored


# ----------------------------------------------------------------------- the new term
def test_popo_bonus_by_hand():
    """α(σ(β h) − ½)/β: 0 at h = 0; at β = 0.1, h = log 3 / 0.1 (σ = 3/4) it is α·(1/4)/0.1."""
    beta, alpha = 0.1, 0.01
    h = np.array([0.0, math.log(3.0) / beta, -math.log(3.0) / beta])
    out = popo_bonus(h, np.zeros(3), alpha, beta)
    np.testing.assert_allclose(out, [0.0, alpha * 0.25 / beta, -alpha * 0.25 / beta], rtol=1e-13, atol=1e-18)
    # it reads the log-ratio, not the two log-probabilities apart
    np.testing.assert_allclose(popo_bonus(h - 5.0, np.full(3, -5.0), alpha, beta), out, rtol=1e-12, atol=1e-15)
    with pytest.raises(ValueError, match="alpha"):
        popo_bonus(h, np.zeros(3), -1.0, beta)
    with pytest.raises(ValueError, match="beta"):
        popo_bonus(h, np.zeros(3), alpha, 0.0)


# ---------------------------------------------------------- objective vs the oracle
INSTANCES = [
    ("bandit, 2 prompts", lambda: envs.bandit(4, n_prompts=2, seed=3), "implicit", 0.5),
    ("token tree", lambda: envs.token_tree(2, 2, 2, seed=1), "implicit", 0.3),
    ("combination lock, linear", lambda: envs.combination_lock(3, 2, 0.4, seed=0), "linear", 0.4),
]


def make_class(mdp, kind, beta):
    return ImplicitRewardClass(mdp, beta) if kind == "implicit" else LinearRewardClass(mdp, beta)


@pytest.mark.parametrize("name, build, kind, beta", INSTANCES, ids=[i[0] for i in INSTANCES])
def test_code_objective_matches_the_oracle_and_finite_differences(name, build, kind, beta):
    """A run's iteration data, a reference θ_prev inside the box that is not π_ref, and
    random θ: the objective equals the plain-Python oracle (h relative to π_prev, the
    iteration's α), and its θ-gradient matches central differences."""
    mdp = build()
    cls = make_class(mdp, kind, beta)
    rng = np.random.default_rng(7)
    lo, hi = cls.box
    algorithm = xpo_sim.SEPOPO(variant="code", batch=4, epoch_rounds=2, iteration_alphas=(0.3, 0.7))
    ctx = context(mdp, cls, beta, seed=1)
    theta_prev = rng.uniform(lo, hi, cls.n_params)
    ctx.params = theta_prev
    for t in (1, 2, 3):  # rounds 1-2: iteration 0; round 3 starts iteration 1 (reference = its iterate)
        ctx.begin_round(t)
        algorithm.collect(ctx)
        if t == 3:
            theta_prev = np.asarray(ctx.params, dtype=float).copy()
        if t < 3:
            ctx.params = rng.uniform(lo, hi, cls.n_params)  # any iterate will do for the check
    assert algorithm.alpha_at(3) == 0.7
    objective = algorithm.code_objective(ctx)
    pairs, explored = oracle_terms(ctx.state["iteration_data"])
    assert pairs and explored
    for _ in range(3):
        theta = rng.uniform(lo, hi, cls.n_params)
        value, grad = objective(theta)
        expected = naive.popo_code_objective(mdp, beta, cls.reward_table(theta), cls.reward_table(theta_prev),
                                             pairs, explored, 0.7)
        assert value == pytest.approx(expected, rel=1e-11)
        step = 1e-6
        numeric = np.array([(objective(theta + step * e)[0] - objective(theta - step * e)[0]) / (2 * step)
                            for e in np.eye(cls.n_params)])
        np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-7)
    # at θ = θ_prev every h is 0: each pair costs log 2 and the bonus vanishes
    assert objective(theta_prev)[0] == pytest.approx(ctx.state["iteration_data"].n_pairs * math.log(2), rel=1e-12)


def test_popo_code_objective_on_a_two_response_bandit_by_hand():
    """One prompt, π_ref = (0.2, 0.8), β = 0.5, r̂ = (1, 0) against r̂_prev = 0 (π_prev = π_ref):
    one pair 1 ≻ 2 and the second response 2 explored with α = 0.3. h(1) = 2 − log Z,
    h(2) = −log Z with Z = 0.2e² + 0.8: L = −log σ(β·2) + α(σ(−β log Z) − ½)/β."""
    beta, alpha = 0.5, 0.3
    log_z = math.log(0.2 * math.e**2 + 0.8)
    expected = -math.log(expit(beta * 2.0)) + alpha * (expit(-beta * log_z) - 0.5) / beta
    value, grad = popo_code_objective(np.array([1.0, 0.0]), np.zeros(2), np.log([0.2, 0.8]), [slice(0, 2)],
                                      np.array([0]), np.array([1]), np.array([1.0]), np.array([1]),
                                      np.array([1.0]), alpha, beta)
    assert value == pytest.approx(expected, rel=1e-13)
    assert grad.sum() == pytest.approx(0.0, abs=1e-14)  # a common shift of r̂ changes no policy


# ------------------------------------------------------------------ iteration structure
def test_code_variant_resets_the_reference_at_iteration_boundaries():
    """epoch_rounds = 3: rounds 1-3, 4-6, 7-9 are iterations. At each iteration's first round
    the loss's reference (and the sampler of both responses) becomes the current iterate and
    stays fixed through the iteration; the iteration's data restart; ctx.data keeps all."""
    mdp = envs.bandit_needle(4, 0.2, seed=0)
    beta = 0.3
    ctx = context(mdp, ImplicitRewardClass(mdp, beta), beta)
    algorithm = xpo_sim.SEPOPO(variant="code", epoch_rounds=3, batch=2)
    starts, references, used, n_iteration, at_reference = {}, [], [], [], []
    for t in range(1, 9):
        ctx.begin_round(t)
        if t in (1, 4, 7):
            starts[t] = ctx.logp
        algorithm.collect(ctx)
        references.append(ctx.state["reference"])
        used.append(ctx.used)
        n_iteration.append(ctx.state["iteration_data"].n_queries)
        if t in (1, 4, 7):  # the reference is the iterate itself: h ≡ 0 there
            value = algorithm.code_objective(ctx)(ctx.params)[0]
            at_reference.append((value, ctx.state["iteration_data"].n_pairs * math.log(2)))
        algorithm.update(ctx)
    for t in range(1, 9):
        first = 1 + 3 * ((t - 1) // 3)
        assert references[t - 1] is starts[first]
        assert len(used[t - 1]) == 2 and all(np.array_equal(table, starts[first]) for table in used[t - 1])
    assert not np.array_equal(starts[1], starts[4]) and not np.array_equal(starts[4], starts[7])
    assert n_iteration == [2, 4, 6, 2, 4, 6, 2, 4]  # queries asked this iteration (ties included)
    assert ctx.data.n_queries == 16
    for value, expected in at_reference:
        assert value == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_code_variant_alpha_schedule():
    """α is the iteration's entry of iteration_alphas (the last one for every later
    iteration), in the update and in the run's alpha column."""
    algorithm = xpo_sim.SEPOPO(variant="code", epoch_rounds=3)
    assert algorithm.iteration_alphas == SEPOPO_CODE_ALPHAS == (1e-2, 5e-3, 0.0)
    assert [algorithm.alpha_at(t) for t in range(1, 12)] == [1e-2] * 3 + [5e-3] * 3 + [0.0] * 5
    custom = xpo_sim.SEPOPO(variant="code", epoch_rounds=2, iteration_alphas=[0.2, 0.1])
    assert custom.iteration_alphas == (0.2, 0.1)
    assert [custom.alpha_at(t) for t in range(1, 7)] == [0.2, 0.2, 0.1, 0.1, 0.1, 0.1]
    mdp = envs.bandit_needle(4, 0.1, seed=2)
    df = xpo_sim.run(mdp, xpo_sim.SEPOPO(variant="code", epoch_rounds=2, batch=2), 0.3, 7, seed=0)
    assert df.alpha.tolist() == [0.0, 1e-2, 1e-2, 5e-3, 5e-3, 0.0, 0.0, 0.0]
    assert df.converged.all() and np.isfinite(df.regret).all()


def test_code_variant_dpo_term_is_the_classs_dpo_when_the_reference_is_pi_ref():
    """In iteration 0 the reference is the first iterate, π_ref itself: with α = 0 the code
    variant's objective is the class's own DPO objective (its kernels, another code path) on
    the iteration's data, value and gradient."""
    mdp = envs.token_tree(2, 2, 2, seed=4)
    beta = 0.4
    cls = ImplicitRewardClass(mdp, beta)
    ctx = context(mdp, cls, beta, seed=2)
    algorithm = xpo_sim.SEPOPO(variant="code", batch=5, epoch_rounds=10, iteration_alphas=(0.0,))
    for t in (1, 2):
        ctx.begin_round(t)
        algorithm.collect(ctx)
    data = ctx.state["iteration_data"]
    assert data.n_pairs > 0
    objective = algorithm.code_objective(ctx)
    rng = np.random.default_rng(0)
    for _ in range(3):
        theta = rng.uniform(*cls.box, cls.n_params)
        value, grad = objective(theta)
        expected_value, expected_grad = cls.objective(theta, data, 0.0, "dpo")
        assert value == pytest.approx(expected_value, rel=1e-11)
        np.testing.assert_allclose(grad, expected_grad, rtol=1e-9, atol=1e-12)


def test_code_variant_drops_ties_as_the_code_does():
    """run_wpo.py keeps a pair only when the two scores differ. On a needle bandit whose
    other responses all have reward 0, only (needle, other) pairs are stored; the ties are
    asked (they count in n_queries) but neither compared nor explored."""
    mdp = envs.bandit_needle(4, 0.3, seed=0)
    beta = 0.3
    ctx = context(mdp, ImplicitRewardClass(mdp, beta), beta, seed=4)
    algorithm = xpo_sim.SEPOPO(variant="code", batch=16, epoch_rounds=5)
    ctx.begin_round(1)
    algorithm.collect(ctx)
    data = ctx.state["iteration_data"]
    rewards = mdp.reward[0]
    arrays, batch = data.arrays(), data.batch()
    last = batch.actions[np.arange(len(batch)), batch.lengths - 1]
    assert data.n_queries == 16 and 0 < data.n_pairs < 16 and data.n_skipped == 16 - data.n_pairs
    for c, r in zip(arrays["pair_chosen"], arrays["pair_rejected"]):
        assert rewards[last[c]] != rewards[last[r]]
    assert data.n_explored == data.n_pairs  # one bonus response per stored pair
    assert ctx.data.n_queries == 16 and ctx.data.n_pairs == data.n_pairs
    # drop_ties=False keeps every query (labelled by the oracle), each with its bonus response
    ctx = context(mdp, ImplicitRewardClass(mdp, beta), beta, seed=4)
    keep_all = xpo_sim.SEPOPO(variant="code", batch=16, epoch_rounds=5, drop_ties=False)
    ctx.begin_round(1)
    keep_all.collect(ctx)
    data = ctx.state["iteration_data"]
    assert data.n_pairs == data.n_queries == data.n_explored == 16 and data.n_skipped == 0


def test_code_variant_update_is_the_minimizer_over_the_box():
    """Two responses, box [0, 1]²: the update's objective value is the grid minimum of the
    oracle's objective (to the grid's resolution) and no grid point is lower."""
    mdp = xpo_sim.TokenMDP(np.full((1, 2), -1), np.array([[1.0, 0.0]]), np.log([[0.4, 0.6]]), np.array([1.0]))
    beta = 0.5
    cls = ImplicitRewardClass(mdp, beta, box=(0.0, 1.0))
    ctx = context(mdp, cls, beta, seed=3)
    algorithm = xpo_sim.SEPOPO(variant="code", batch=6, epoch_rounds=5, iteration_alphas=(2.0,))
    for t in (1, 2):
        ctx.begin_round(t)
        algorithm.collect(ctx)
        algorithm.update(ctx)
    pairs, explored = oracle_terms(ctx.state["iteration_data"])
    assert pairs and explored
    zero = np.zeros((1, 2))
    found = naive.popo_code_objective(mdp, beta, cls.reward_table(ctx.params), zero, pairs, explored, 2.0)
    grid = np.linspace(0.0, 1.0, 101)
    values = [naive.popo_code_objective(mdp, beta, np.array([[a, b]]), zero, pairs, explored, 2.0)
              for a in grid for b in grid]
    assert found <= min(values) + 1e-10
    assert found == pytest.approx(min(values), abs=1e-3)


def test_code_variant_runs_on_a_tree_and_the_linear_class_and_refuses_what_it_cannot_run():
    tree = envs.token_needle(3, 2, 0.1, seed=1)
    df = xpo_sim.run(tree, xpo_sim.SEPOPO(variant="code", batch=2, epoch_rounds=2), 0.2, 5, seed=0)
    assert np.isfinite(df.regret).all() and df.converged.all()
    lock = envs.combination_lock(3, 3, 0.3)
    df = xpo_sim.run(lock, xpo_sim.SEPOPO(variant="code", batch=2), 0.2, 3, seed=0, policy="linear")
    assert np.isfinite(df.regret).all()
    with pytest.raises(ValueError, match="reward class|implicit"):
        xpo_sim.run(tree, xpo_sim.SEPOPO(variant="code"), 0.2, 2, seed=0, policy="logits")
    with pytest.raises(ValueError, match="max_enumerate"):
        xpo_sim.run(tree, xpo_sim.SEPOPO(variant="code", max_enumerate=4), 0.2, 2, seed=0)


# -------------------------------------------------------------- theory, as it was
# Regrets of SEPOPO() before the code variant existed: the two runs below, computed with
# xpo_sim at commit 3cfc661 (xpo_sim/methods.py as last changed in 081aa2b) and printed
# with full precision (repr of float).
THEORY_BEFORE = {
    "tree": [0.45125776848671734, 0.8172875353139923, 0.7901019588356717, 0.8132984685268048,
             0.7797665368014364, 0.8608489325792384, 0.8882463878661195],
    "bandit": [0.6505129953287075, 0.756683232085278, 0.8663613085229772, 0.8663613085229772,
               0.8663613085229772, 0.8663613085229772, 0.8663613085229772, 0.8663613085229772],
}


@pytest.mark.parametrize("variant", [None, "theory"])
def test_theory_variant_is_unchanged(variant):
    extra = {} if variant is None else dict(variant=variant)
    tree = envs.token_needle(3, 2, 0.1, seed=1)
    df = xpo_sim.run(tree, xpo_sim.SEPOPO(batch=2, epoch_rounds=2, **extra), 0.2, 6, seed=3)
    np.testing.assert_allclose(df.regret, THEORY_BEFORE["tree"], rtol=1e-7, atol=1e-10)
    bandit = envs.bandit_needle(6, 0.05, seed=0)
    df = xpo_sim.run(bandit, xpo_sim.SEPOPO(batch=3, epoch_rounds=3, schedule="inv_sqrt", **extra), 0.1, 7, seed=11)
    np.testing.assert_allclose(df.regret, THEORY_BEFORE["bandit"], rtol=1e-7, atol=1e-10)


def test_default_is_the_theory_variant():
    assert xpo_sim.SEPOPO().variant == "theory"
    assert xpo_sim.SEPOPO() == xpo_sim.SEPOPO(variant="theory")


# ---------------------------------------------------------------------- bad arguments
@pytest.mark.parametrize("make, name", [
    (lambda: xpo_sim.SEPOPO(variant="paper"), "variant"),
    (lambda: xpo_sim.SEPOPO(variant=None), "variant"),
    (lambda: xpo_sim.SEPOPO(variant="code", iteration_alphas=()), "iteration_alphas"),
    (lambda: xpo_sim.SEPOPO(variant="code", iteration_alphas=(-0.1,)), "iteration_alphas"),
    (lambda: xpo_sim.SEPOPO(variant="code", iteration_alphas="0.1"), "iteration_alphas"),
    (lambda: xpo_sim.SEPOPO(variant="code", iteration_alphas=0.1), "iteration_alphas"),
    (lambda: xpo_sim.SEPOPO(variant="code", iteration_alphas=(0.1, float("nan"))), "iteration_alphas"),
    (lambda: xpo_sim.SEPOPO(variant="code", iteration_alphas=(0.1, "a")), "iteration_alphas"),
    (lambda: xpo_sim.SEPOPO(variant="code", alpha=0.1), "alpha"),
    (lambda: xpo_sim.SEPOPO(variant="code", schedule="inv_sqrt"), "schedule"),
    (lambda: xpo_sim.SEPOPO(variant="code", loss="ipo"), "loss"),
    (lambda: xpo_sim.SEPOPO(iteration_alphas=(0.1,)), "iteration_alphas"),
    (lambda: xpo_sim.SEPOPO(drop_ties=False), "drop_ties"),
    (lambda: xpo_sim.SEPOPO(variant="code", drop_ties="yes"), "drop_ties"),
    (lambda: xpo_sim.SEPOPO(variant="code", drop_ties=0), "drop_ties"),
])
def test_bad_arguments_raise_naming_them(make, name):
    with pytest.raises(ValueError, match=name):
        make()
