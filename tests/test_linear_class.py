"""The linear-feature reward class and the one policy-class interface: one-hot features
reproduce the implicit class run for run, the gradient is the implicit gradient contracted
with φ (and matches finite differences), the ℓ2 penalty, realizability, and clear errors."""

import math

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

import xpo_sim
from xpo_sim import envs
from xpo_sim.policies import (
    POLICY_CLASSES, ImplicitRewardClass, LinearRewardClass, LogitsClass, PolicyClass, RewardClass,
    make_policy_class, one_hot_features,
)

from strategies import mdps
from test_algorithms import central_difference, objective_from_losses, random_data

beta_values = st.floats(0.05, 5.0)
alpha_values = st.sampled_from([0.0, 0.03, 1.0])
loss_names = st.sampled_from(["dpo", "ipo", "ln_dpo"])


def dense_features(mdp, d, rng):
    return rng.normal(size=(mdp.n_states, mdp.n_actions, d))


@settings(max_examples=30)
@given(mdp=mdps(), beta=beta_values, alpha=alpha_values, loss=loss_names, l2=st.sampled_from([0.0, 0.7]),
       d=st.integers(1, 4), seed=st.integers(0, 2**32 - 1))
def test_linear_objective_value_gradient_and_contraction(mdp, beta, alpha, loss, l2, d, seed):
    """L(θ) equals the losses.py objective at π_θ (+ λ‖θ‖²); ∇L = finite differences =
    Σ_{s,a} (∂L/∂r̂)(s, a) φ(s, a), the implicit class's gradient contracted with φ."""
    rng = np.random.default_rng(seed)
    data = random_data(mdp, rng)
    phi = dense_features(mdp, d, rng)
    linear = LinearRewardClass(mdp, beta, features=phi, box=(-2, 2), l2=l2)
    theta = rng.uniform(-1, 1, d)
    value, grad = linear.objective(theta, data, alpha, loss)
    expected = objective_from_losses(mdp, linear.policy_logp(theta), data, beta, alpha, loss) + l2 * theta @ theta
    assert value == pytest.approx(expected, rel=1e-9, abs=1e-9)
    numeric = central_difference(lambda p: linear.objective(p, data, alpha, loss)[0], theta)
    np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-6 * (1 + np.abs(numeric).max()))
    # the implicit class on every allowed entry, at r̂ = φθ, gives ∂L/∂r̂; contract it with φ
    table = ImplicitRewardClass(mdp, beta, support="all", box=(-1e3, 1e3))
    reward_hat = phi @ theta
    _, grad_table = table.objective(reward_hat[table.index], data, alpha, loss)
    contracted = np.einsum("k,kd->d", grad_table, phi[table.index]) + 2 * l2 * theta
    np.testing.assert_allclose(grad, contracted, rtol=1e-9, atol=1e-10 * (1 + np.abs(contracted).max()))


INSTANCES = {
    "bandit": lambda: envs.bandit_needle(6, 0.05, seed=2),
    "token_tree": lambda: envs.token_needle(3, 3, 0.02, bad_reward=(0.0, 0.5), seed=1),
    "dag": lambda: envs.random_dag(10, 3, n_prompts=2, seed=5),
}


@pytest.mark.parametrize("instance", sorted(INSTANCES))
@pytest.mark.parametrize("algorithm", [
    xpo_sim.XPO(alpha=0.05, schedule="inv_sqrt", batch=3), xpo_sim.OnlineDPO(batch=2),
    xpo_sim.OfflineDPO(batch=2), xpo_sim.CountUCB(batch=2), xpo_sim.RLHF(batch=2),
    xpo_sim.XPO(alpha=0.05, sampler="history", loss="ipo"),
])
def test_one_hot_linear_class_is_the_implicit_class_run_for_run(instance, algorithm):
    mdp = INSTANCES[instance]()
    implicit = ImplicitRewardClass(mdp, 0.2)
    a = xpo_sim.run(mdp, algorithm, 0.2, 8, seed=11)
    b = xpo_sim.run(mdp, algorithm, 0.2, 8, seed=11, policy="linear",
                    features=one_hot_features(implicit.mask), box=implicit.box)
    pd_equal = a.columns.equals(b.columns) and all(
        np.array_equal(a[c].to_numpy(), b[c].to_numpy(), equal_nan=a[c].dtype.kind == "f") for c in a.columns)
    assert pd_equal, (a.regret.to_numpy(), b.regret.to_numpy())
    assert a.regret.iloc[-1] != a.regret.iloc[0]  # something was learned: the equality is not vacuous


def test_one_hot_dense_and_sparse_features_agree():
    mdp = envs.token_needle(3, 2, 0.05, seed=3)
    implicit = ImplicitRewardClass(mdp, 0.3)
    sparse = one_hot_features(implicit.mask)
    dense = sparse.toarray().reshape(mdp.n_states, mdp.n_actions, -1)
    runs = [xpo_sim.run(mdp, xpo_sim.XPO(batch=2), 0.3, 6, seed=4, policy="linear", features=f, box=implicit.box)
            for f in (sparse, dense)]
    np.testing.assert_array_equal(runs[0].regret, runs[1].regret)


@settings(max_examples=20)
@given(mdp=mdps(), beta=beta_values, d=st.integers(1, 3), seed=st.integers(0, 2**32 - 1))
def test_realizable_class_contains_the_optimum(mdp, beta, d, seed):
    """With r = φθ* and θ* in the box, π_θ* is π* (solve_soft of the true reward)."""
    rng = np.random.default_rng(seed)
    phi = dense_features(mdp, d, rng)
    theta_star = rng.uniform(-1, 1, d)
    reward = np.where(mdp.allowed, phi @ theta_star, 0.0)
    realizable = xpo_sim.TokenMDP(mdp.next_state, reward, mdp.ref_logp, mdp.start, features=phi)
    cls = LinearRewardClass(realizable, beta, box=(-1, 1))
    star = xpo_sim.solve_soft(realizable, beta).logp
    got = cls.policy_logp(theta_star)
    np.testing.assert_allclose(np.where(mdp.allowed, got, 0), np.where(mdp.allowed, star, 0), atol=1e-10)


def test_l2_penalty_shrinks_the_argmin_and_stays_stationary():
    """On coin-flip labels between two equally good responses the unpenalized exact MLE
    runs to the box; λ‖θ‖² keeps it inside, at a point where the projected gradient is 0."""
    mdp = envs.bandit_needle(3, 0.2, seed=0)  # two bad responses with equal reward 0
    data = xpo_sim.PreferenceData(mdp)
    bad = [a for a in range(3) if a != mdp.info["optimal_actions"][0]]
    one = lambda a: xpo_sim.TrajectoryBatch(np.array([[0]]), np.array([[a]]), np.array([1]))  # noqa: E731
    x, y = data.path_ids(one(bad[0])), data.path_ids(one(bad[1]))
    data.add_pairs(np.repeat(x, 3), np.repeat(y, 3))  # 3 labels one way, 1 the other
    data.add_pairs(y, x)
    free = ImplicitRewardClass(mdp, 0.1, box=(-5, 5))
    penalized = ImplicitRewardClass(mdp, 0.1, box=(-5, 5), l2=1.0)
    theta_free = free.update(free.initial_params(), data, 0.0)
    theta_l2 = penalized.update(penalized.initial_params(), data, 0.0)
    gap = lambda t: abs(t[bad[0]] - t[bad[1]])  # noqa: E731  (support order = action order here)
    # MLE of a 3:1 split: the reward gap log 3 ≈ 1.1 (between the two bad responses)
    assert gap(theta_free) == pytest.approx(math.log(3), abs=1e-4)
    assert gap(theta_l2) < 0.9 * gap(theta_free)
    _, grad = penalized.objective(theta_l2, data, 0.0)
    assert np.abs(grad).max() < 1e-5  # interior stationary point


def test_every_class_implements_the_protocol_and_the_registry_builds_it():
    mdp = envs.combination_lock(3, 3, 0.3) if hasattr(envs, "combination_lock") else None
    base = envs.token_needle(3, 2, 0.05, seed=0)
    phi = np.ones((base.n_states, base.n_actions, 2))
    for name, cls in POLICY_CLASSES.items():
        options = dict(features=phi, box=(0, 1)) if name == "linear" else {}
        built = make_policy_class(base, 0.5, name, **options)
        assert isinstance(built, cls) and isinstance(built, PolicyClass) and built.name == name
    assert isinstance(ImplicitRewardClass(base, 0.5), RewardClass)
    assert not isinstance(LogitsClass(base, 0.5), RewardClass)
    if mdp is not None:
        assert isinstance(make_policy_class(mdp, 0.1, "linear"), LinearRewardClass)


def test_run_accepts_a_policy_object():
    mdp = envs.token_needle(3, 2, 0.05, seed=0)
    obj = ImplicitRewardClass(mdp, 0.3, box=(0, 1))
    a = xpo_sim.run(mdp, xpo_sim.XPO(batch=2), 0.3, 5, seed=2, policy=obj)
    b = xpo_sim.run(mdp, xpo_sim.XPO(batch=2), 0.3, 5, seed=2, box=(0, 1))
    np.testing.assert_array_equal(a.regret, b.regret)


def test_reward_models_use_the_runs_class():
    """RLHF's exact update is the soft optimum of the BT reward fit in the run's class: with
    a box that excludes the true reward it cannot reach π*; and the logits class is refused."""
    mdp = envs.bandit_needle(4, 0.3, seed=1)
    wide = xpo_sim.run(mdp, xpo_sim.RLHF(batch=8), 0.2, 30, seed=0)
    narrow = xpo_sim.run(mdp, xpo_sim.RLHF(batch=8), 0.2, 30, seed=0, box=(0.0, 0.05))
    assert narrow.regret.iloc[-1] > wide.regret.iloc[-1]
    with pytest.raises(ValueError, match="needs a reward class.*lacks"):
        xpo_sim.run(mdp, xpo_sim.CountUCB(), 0.2, 2, policy="logits")


@pytest.mark.parametrize("make, message", [
    (lambda m: LinearRewardClass(m, 0.1, box=(0, 1)), "needs features"),
    (lambda m: LinearRewardClass(m, 0.1, features=np.ones((m.n_states, m.n_actions, 2))), "box"),
    (lambda m: LinearRewardClass(m, 0.1, features=np.ones((m.n_states, 2)), box=(0, 1)), "features must have shape"),
    (lambda m: LinearRewardClass(m, 0.1, features=np.full((m.n_states, m.n_actions, 1), np.nan), box=(0, 1)),
     "not finite"),
    (lambda m: LinearRewardClass(m, 0.1, features=sp.csr_matrix(np.ones((3, 2))), box=(0, 1)), "sparse features"),
    (lambda m: ImplicitRewardClass(m, 0.1, l2=-1.0), "l2"),
    (lambda m: ImplicitRewardClass(m, 0.1, l2="x"), "l2"),
    (lambda m: ImplicitRewardClass(m, 0.1, box=(0, math.inf)), "box"),
    (lambda m: make_policy_class(m, 0.1, "neural"), "unknown policy class"),
    (lambda m: make_policy_class(m, 0.1, object()), "PolicyClass"),
    (lambda m: make_policy_class(m, 0.1, ImplicitRewardClass(m, 0.1), box=(0, 1)), "policy object"),
])
def test_bad_policy_class_arguments(make, message):
    mdp = envs.token_needle(3, 2, 0.05, seed=0)
    with pytest.raises(ValueError, match=message):
        make(mdp)
