"""Algorithms: signs, equivalences, the exact update against an independent oracle, value
and gradient of the numba objective against ``xpo_sim.losses``, and Proposition 2.1."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import minimize

import xpo_sim
from xpo_sim import envs, losses
from xpo_sim._kernels import preference as pref_kernels
from xpo_sim.recorder import COLUMNS
from xpo_sim.data import PreferenceData
from xpo_sim.policies import ImplicitRewardClass, LogitsClass

import naive
from strategies import mdps


def random_data(mdp, rng, n_pairs=12, n_explore=6):
    """Pairs and explored responses sampled from π_ref, with random labels."""
    data = PreferenceData(mdp)
    prompts = rng.choice(mdp.n_states, size=n_pairs, p=mdp.start)
    a = data.path_ids(xpo_sim.sample_trajectories(mdp, mdp.ref_logp, n_pairs, rng, start_states=prompts))
    b = data.path_ids(xpo_sim.sample_trajectories(mdp, mdp.ref_logp, n_pairs, rng, start_states=prompts))
    flip = rng.random(n_pairs) < 0.5
    data.add_pairs(np.where(flip, a, b), np.where(flip, b, a))
    data.add_explored(b[:n_explore])
    return data


def objective_from_losses(mdp, logp, data, beta, alpha, loss="dpo"):
    """The round objective written with the reference loss functions of ``xpo_sim.losses``:
    Σ_pairs count · ℓ(pair) + Σ_explored count · α log π(ỹ), ℓ = DPO, IPO or LN-DPO."""
    arrays = data.arrays()
    path_logp = xpo_sim.trajectory_logp(mdp, logp, data.batch())
    ref = arrays["path_ref_logp"]
    c, r = arrays["pair_chosen"], arrays["pair_rejected"]
    if loss == "dpo":
        dpo = losses.dpo_loss(path_logp[c], path_logp[r], ref[c], ref[r], beta)
    elif loss == "ipo":
        dpo = losses.ipo_loss(path_logp[c], path_logp[r], ref[c], ref[r], beta)
    else:
        lengths = arrays["path_lengths"].astype(float)
        dpo = losses.ln_dpo_loss(path_logp[c], path_logp[r], ref[c], ref[r], lengths[c], lengths[r], beta)
    bonus = losses.xpo_bonus(path_logp[arrays["explore_path"]], alpha)
    return float(np.sum(arrays["pair_count"] * dpo) + np.sum(arrays["explore_count"] * bonus))


def central_difference(f, x, h=1e-6):
    grad = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        up, down = x.copy(), x.copy()
        up[i] += h
        down[i] -= h
        grad[i] = (f(up) - f(down)) / (2 * h)
    return grad


beta_values = st.floats(0.05, 5.0)
alpha_values = st.sampled_from([0.0, 0.03, 1.0])
loss_names = st.sampled_from(["dpo", "ipo", "ln_dpo"])


@settings(max_examples=30)
@given(mdp=mdps(), beta=beta_values, alpha=alpha_values, loss=loss_names, seed=st.integers(0, 2**32 - 1))
def test_implicit_objective_value_and_gradient(mdp, beta, alpha, loss, seed):
    rng = np.random.default_rng(seed)
    data = random_data(mdp, rng)
    cls = ImplicitRewardClass(mdp, beta, support="all", box=(-2, 2))
    params = rng.uniform(-1, 1, cls.n_params)
    value, grad = cls.objective(params, data, alpha, loss)
    # value: the numba kernel equals the losses.py definition at the implied policy
    expected = objective_from_losses(mdp, cls.policy_logp(params), data, beta, alpha, loss)
    assert value == pytest.approx(expected, rel=1e-9, abs=1e-9)
    # gradient: central differences (error O(h²·f''') ≈ 1e-10 here; tolerance 1e-5 relative)
    numeric = central_difference(lambda p: cls.objective(p, data, alpha, loss)[0], params)
    np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-6 * (1 + np.abs(numeric).max()))


@settings(max_examples=30)
@given(mdp=mdps(), beta=beta_values, alpha=alpha_values, loss=loss_names, seed=st.integers(0, 2**32 - 1))
def test_logits_objective_value_and_gradient(mdp, beta, alpha, loss, seed):
    rng = np.random.default_rng(seed)
    data = random_data(mdp, rng)
    cls = LogitsClass(mdp, beta)
    theta = np.where(mdp.allowed, rng.normal(size=mdp.ref_logp.shape), 0.0)
    value, grad = cls.objective(theta, data, alpha, loss)
    expected = objective_from_losses(mdp, cls.policy_logp(theta), data, beta, alpha, loss)
    assert value == pytest.approx(expected, rel=1e-9, abs=1e-9)
    numeric = central_difference(lambda p: cls.objective(p, data, alpha, loss)[0], theta)
    np.testing.assert_allclose(grad[mdp.allowed], numeric[mdp.allowed], rtol=1e-5,
                               atol=1e-6 * (1 + np.abs(numeric).max()))


def test_preference_kernels_equal_their_py_func():
    mdp = envs.random_dag(12, 3, n_prompts=2, seed=4)
    rng = np.random.default_rng(0)
    data = random_data(mdp, rng)
    a = data.arrays()
    shape = mdp.ref_logp.shape
    reward_hat = rng.uniform(-1, 1, shape)
    outputs = []
    for kernel in (pref_kernels.implicit_reward_objective, pref_kernels.implicit_reward_objective.py_func):
        n_paths = a["path_lengths"].shape[0]
        work = [np.empty(shape), np.empty(mdp.n_states), np.empty(shape), np.empty(shape), np.empty(mdp.n_states),
                np.empty(mdp.n_states), np.empty(n_paths), np.empty(n_paths), np.empty(shape)]
        loss = kernel(*mdp.levels, mdp.next_state, mdp.ref_logp, 0.3, 0, reward_hat, a["path_states"], a["path_actions"],
                      a["path_lengths"], a["path_ref_logp"], a["pair_chosen"], a["pair_rejected"],
                      a["pair_count"], a["explore_path"], 0.5 * a["explore_count"], *work)
        outputs.append((loss, work[-1]))
    assert outputs[0][0] == pytest.approx(outputs[1][0], rel=1e-12)
    np.testing.assert_allclose(outputs[0][1], outputs[1][1], rtol=1e-12, atol=1e-12)
    theta = np.where(mdp.allowed, rng.normal(size=shape), 0.0)
    results = []
    for kernel in (pref_kernels.logits_objective, pref_kernels.logits_objective.py_func):
        logp, weight, grad = np.empty(shape), np.empty(mdp.n_states), np.empty(shape)
        loss = kernel(mdp.ref_logp, 0.3, 0, theta, a["path_states"], a["path_actions"], a["path_lengths"],
                      a["path_ref_logp"], a["pair_chosen"], a["pair_rejected"], a["pair_count"],
                      a["explore_path"], 0.5 * a["explore_count"], logp, weight, grad)
        results.append((loss, grad))
    assert results[0][0] == pytest.approx(results[1][0], rel=1e-12)
    np.testing.assert_allclose(results[0][1], results[1][1], rtol=1e-12, atol=1e-12)


def test_bonus_sign_objective_falls_when_mass_leaves_explored_response():
    """XPO's bonus α·log π(ỹ) is *added* to the minimized objective: moving mass away from
    the sampler's responses lowers it (docs/theory.md, "XPO, with its sign"; a flipped sign would raise it)."""
    mdp = envs.bandit(4, seed=1)
    data = PreferenceData(mdp)
    explored = xpo_sim.sample_trajectories(mdp, mdp.ref_logp, 1, seed=2)
    data.add_explored(data.path_ids(explored))
    k = int(explored.actions[0, 0])
    cls = ImplicitRewardClass(mdp, 0.5, box=(0.0, 1.0))
    base = cls.initial_params()
    away = base.copy()
    away[np.arange(4) != k] = 0.5  # raise the other responses' reward: π(ỹ) falls
    towards = base.copy()
    towards[k] = 0.5  # raise ỹ's reward: π(ỹ) rises
    value = lambda p: cls.objective(p, data, alpha=0.1)[0]  # noqa: E731
    assert value(away) < value(base) < value(towards)
    # the exact update with only the bonus moves all mass it can away from ỹ
    new = cls.update(base, data, alpha=0.1)
    assert new[k] == pytest.approx(0.0) and np.allclose(np.delete(new, k), 1.0)


def test_alpha_zero_is_exactly_hybrid_dpo():
    mdp = envs.token_tree(3, 2, 2, seed=3)
    xpo = xpo_sim.run(mdp, xpo_sim.XPO(alpha=0.0), 0.3, 15, seed=11)
    hybrid = xpo_sim.run(mdp, xpo_sim.HybridDPO(), 0.3, 15, seed=11)
    cols = [c for c in COLUMNS if c != "algorithm"]
    assert (xpo[cols].to_numpy() == hybrid[cols].to_numpy()).all()


def test_dpo_exact_update_equals_reward_mle_then_soft_optimum():
    """With data on every ordered pair, DPO's argmin in the implicit-reward class is the
    RLHF pipeline: Bradley–Terry maximum likelihood for the reward of each response,
    then π(y|x) ∝ π_ref(y|x) exp(r̂(x,y)/β). The oracle below works on whole responses."""
    beta = 0.4
    mdp = envs.token_tree(2, 2, n_prompts=2, seed=5)
    batch = mdp.trajectories()
    rng = np.random.default_rng(7)
    data = PreferenceData(mdp)
    ids = data.path_ids(batch)
    counts = {}
    for p in range(2):
        rows = np.flatnonzero(batch.start_states == p)
        for i in rows:
            for j in rows:
                if i != j:
                    counts[(i, j)] = int(rng.integers(1, 6))
                    for _ in range(counts[(i, j)]):
                        data.add_pairs(ids[[i]], ids[[j]])
    ref_tau = xpo_sim.trajectory_logp(mdp, mdp.ref_logp, batch)
    for support in ("terminal", "all"):
        cls = ImplicitRewardClass(mdp, beta, box=(-30, 30), support=support, gtol=1e-11)
        logp = cls.policy_logp(cls.update(cls.initial_params(), data, 0.0))
        ours = xpo_sim.trajectory_logp(mdp, logp, batch)
        for p in range(2):
            rows = list(np.flatnonzero(batch.start_states == p))

            def nll(u):
                return sum(n * math.log1p(math.exp(-(u[rows.index(i)] - u[rows.index(j)])))
                           for (i, j), n in counts.items() if i in rows)

            u = minimize(nll, np.zeros(len(rows)), method="BFGS", options=dict(gtol=1e-12)).x
            log_unnorm = ref_tau[rows] + u / beta
            expected = log_unnorm - naive.logsumexp(log_unnorm.tolist())
            np.testing.assert_allclose(ours[rows], expected, atol=1e-6)


def test_run_columns_determinism_and_round_zero():
    mdp = envs.random_dag(15, 3, n_prompts=2, seed=1)
    a = xpo_sim.run(mdp, xpo_sim.XPO(), 0.5, 6, seed=3)
    b = xpo_sim.run(mdp, xpo_sim.XPO(), 0.5, 6, seed=3)
    c = xpo_sim.run(mdp, xpo_sim.XPO(), 0.5, 6, seed=4)
    assert list(a.columns) == COLUMNS and list(a["round"]) == list(range(7))
    assert a.equals(b) and not a.equals(c)
    ref_regret = xpo_sim.regret(mdp, mdp.ref_logp, 0.5)
    assert a.regret[0] == pytest.approx(ref_regret, rel=1e-12)
    assert a.kl_ref[0] == 0.0 and a.pairs[0] == 0 and a.distinct_seen[0] == 0
    assert a.log_concentrability[0] == math.inf
    assert (a.regret >= -1e-12).all() and (np.diff(a.best_regret) <= 0).all()
    assert (a.pairs == a["round"]).all()


@pytest.mark.parametrize(
    "algorithm",
    [xpo_sim.OfflineDPO(), xpo_sim.OnlineDPO(), xpo_sim.HybridDPO(), xpo_sim.XPO(),
     xpo_sim.XPO(sampler="current", batch=2), xpo_sim.XPO(sampler="history", schedule="inv_sqrt"),
     xpo_sim.XPO(schedule=lambda t: 0.1 / t)],
)
@pytest.mark.parametrize("policy", ["implicit", "logits"])
def test_every_algorithm_runs_on_bandits_trees_and_dags(algorithm, policy):
    for mdp in (envs.bandit(5, 2, seed=1), envs.token_tree(3, 2, seed=2),
                envs.random_dag(12, 3, n_prompts=2, seed=3)):
        df = xpo_sim.run(mdp, algorithm, 0.5, 5, seed=0, policy=policy)
        assert len(df) == 6 and np.isfinite(df.regret).all()
        assert df.pairs.iloc[-1] == 5 * algorithm.batch


def test_offline_dpo_with_a_fixed_budget_is_one_round():
    df = xpo_sim.run(envs.bandit(4), xpo_sim.OfflineDPO(dataset_size=30), 0.5, 100, seed=0)
    assert list(df["round"]) == [0, 1] and df.pairs.iloc[-1] == 30


def test_history_sampler_uses_past_iterates():
    """With a strong bonus the current policy leaves π_ref at once; the history sampler's
    mixture still contains π¹ = π_ref, so its samples differ from the current sampler's."""
    mdp = envs.bandit_needle(4, 0.05, seed=1)
    hist = xpo_sim.run(mdp, xpo_sim.XPO(alpha=1.0, sampler="history"), 0.2, 20, seed=5)
    assert hist.distinct_seen.iloc[-1] >= 2


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: xpo_sim.XPO(alpha=-0.1), "alpha"),
        (lambda: xpo_sim.XPO(alpha=math.nan), "alpha"),
        (lambda: xpo_sim.XPO(sampler="prior"), "unknown sampler"),
        (lambda: xpo_sim.XPO(schedule="cosine"), "unknown schedule"),
        (lambda: xpo_sim.OnlineDPO(batch=0), "batch"),
        (lambda: xpo_sim.OfflineDPO(dataset_size=0), "dataset_size"),
    ],
)
def test_bad_algorithm_options(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_bad_run_options():
    mdp = envs.two_arm_needle(0.2)
    with pytest.raises(ValueError, match="rounds"):
        xpo_sim.run(mdp, xpo_sim.XPO(), 0.2, 0)
    with pytest.raises(ValueError, match="built for beta=0.2"):
        xpo_sim.run(mdp, xpo_sim.XPO(), 0.1, 5)
    with pytest.raises(ValueError, match="policy class"):
        xpo_sim.run(mdp, xpo_sim.XPO(), 0.2, 5, policy="neural")
    with pytest.raises(ValueError, match="Algorithm"):
        xpo_sim.run(mdp, "XPO", 0.2, 5)
    with pytest.raises(ValueError, match="schedule gave"):
        xpo_sim.run(mdp, xpo_sim.XPO(schedule=lambda t: -1.0), 0.2, 2)
    with pytest.raises(ValueError, match="box"):
        xpo_sim.run(mdp, xpo_sim.XPO(), 0.2, 2, box=(1.0, 0.0))


# ------------------------------------------------------------- Proposition 2.1
SEEDS = range(20)


def rounds_to_low_regret(df, fraction=0.1):
    """First round whose regret is at most ``fraction`` of π_ref's (inf if never)."""
    hit = df["round"][df.regret <= fraction * df.regret[0]]
    return hit.min() if len(hit) else math.inf


@pytest.mark.parametrize("beta", [0.2, 0.1])
def test_proposition_2_1_xpo_explores_passive_methods_wait(beta):
    """On two_arm_needle(β), π_ref gives the good response mass ε = e^{−1/(2β)} (0.082 at
    β = 0.2, 0.0067 at β = 0.1). Passive methods cannot move before a pair contains the good
    response: a (bad, bad) pair has zero DPO margin and zero gradient, so until then their
    regret is *exactly* π_ref's. XPO's bonus pushes mass off the sampled bad response at
    once. Margins are generous: over 20 seeds and 20 rounds."""
    mdp = envs.two_arm_needle(beta)
    eps = mdp.info["eps"]
    xpo_hits, passive_hits = [], []
    for seed in SEEDS:
        xpo = xpo_sim.run(mdp, xpo_sim.XPO(), beta, 20, seed=seed)
        xpo_hits.append(rounds_to_low_regret(xpo))
        for algorithm in (xpo_sim.OnlineDPO(), xpo_sim.HybridDPO()):
            df = xpo_sim.run(mdp, algorithm, beta, 20, seed=seed)
            unseen = df.seen_star_mass < 0.5  # the good response (π*-mass > 0.9) not yet in the data
            np.testing.assert_array_equal(df.regret[unseen], df.regret[0])
            passive_hits.append(rounds_to_low_regret(df))
    # XPO: low regret within 3 rounds in at least 80% of seeds
    assert np.mean(np.array(xpo_hits) <= 3) >= 0.8
    # passive: within 3 rounds only if the good response was drawn in 3 rounds; for online DPO
    # that takes ≤ 6 draws from π_ref: probability 1 − (1 − ε)^6 (0.40 at β = 0.2, 0.04 at 0.1)
    p_seen = 1 - (1 - eps) ** 6
    assert np.mean(np.array(passive_hits) <= 3) <= p_seen + 0.25
    assert np.mean(np.array(xpo_hits) <= 3) > np.mean(np.array(passive_hits) <= 3) + 0.3
