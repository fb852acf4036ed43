"""xpo_sim.mixture: the uniform mixture of per-state policies on a tree is the Markov policy
π̂(a|s) = Σₜ dᵗ(s)πᵗ(a|s) / Σₜ dᵗ(s); its exact regret against enumerating every trajectory
of the mixture of trajectory distributions (tests/naive.py), convexity (≤ the average
regret, = it when the iterates agree), refusal of non-trees, and the run's column."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import naive
import xpo_sim
from strategies import betas, policies, random_dags, token_trees
from xpo_sim import envs
from xpo_sim.metrics import regret
from xpo_sim.mixture import RunningMixture, is_tree, mixture_logp, mixture_regret
from xpo_sim.recorder import RunRecorder


@st.composite
def tree_and_policies(draw, most: int = 4):
    mdp = draw(token_trees())
    k = draw(st.integers(1, most))
    return mdp, [draw(policies(mdp)) for _ in range(k)]


@settings(max_examples=60, deadline=None)
@given(tree_and_policies(), betas)
def test_mixture_regret_equals_the_enumerated_mixture_of_trajectory_distributions(case, beta):
    mdp, logps = case
    ours = mixture_regret(mdp, beta, logps)
    expected = naive.mixture_regret(mdp, logps, beta)
    assert ours >= 0
    scale = beta * (1 + sum(abs(r) for r in mdp.reward.ravel()) / beta)
    assert ours == pytest.approx(expected, rel=1e-7, abs=1e-10 * scale)


@settings(max_examples=60, deadline=None)
@given(tree_and_policies(), betas)
def test_the_mixture_is_markov_its_occupancy_is_the_mean_occupancy(case, beta):
    mdp, logps = case
    table = mixture_logp(mdp, logps)
    np.testing.assert_allclose(np.exp(table).sum(axis=1), 1.0, atol=1e-12)
    mean_occupancy = np.mean([xpo_sim.occupancy(mdp, t) for t in logps], axis=0)
    np.testing.assert_allclose(xpo_sim.occupancy(mdp, table), mean_occupancy, rtol=1e-9, atol=1e-15)


@settings(max_examples=60, deadline=None)
@given(tree_and_policies(most=5), betas)
def test_mixture_regret_is_at_most_the_average_regret(case, beta):
    mdp, logps = case
    average = np.mean([regret(mdp, t, beta) for t in logps])
    assert mixture_regret(mdp, beta, logps) <= average * (1 + 1e-9) + 1e-14


@settings(max_examples=40, deadline=None)
@given(tree_and_policies(most=1), st.integers(1, 5), betas)
def test_copies_of_one_policy_mix_to_that_policy(case, copies, beta):
    mdp, (logp,) = case
    value = regret(mdp, logp, beta)
    assert mixture_regret(mdp, beta, [logp] * copies) == pytest.approx(value, rel=1e-9, abs=1e-15)
    occupancy = xpo_sim.occupancy(mdp, logp)
    reached = occupancy > 0
    np.testing.assert_allclose(mixture_logp(mdp, [logp] * copies)[reached], logp[reached], atol=1e-12)


def test_a_known_two_arm_mixture():
    """One state, two responses: the mixture of two policies is their average row."""
    mdp = envs.bandit(2, seed=0)
    a = np.log(np.array([[0.9, 0.1]]))
    b = np.log(np.array([[0.3, 0.7]]))
    np.testing.assert_allclose(np.exp(mixture_logp(mdp, [a, b])), [[0.6, 0.4]], rtol=1e-14)
    assert mixture_regret(mdp, 0.5, [a, b]) == pytest.approx(regret(mdp, np.log([[0.6, 0.4]]), 0.5), rel=1e-12)


def test_reach_weights_on_a_two_level_tree():
    """At a deep state the iterates are weighted by how often each reaches it."""
    mdp = envs.token_tree(2, 2, 1, seed=1)  # root 0, children 1 and 2
    p = np.full((3, 2), np.log(0.5))
    q = p.copy()
    p[0] = np.log([0.8, 0.2])
    q[0] = np.log([0.2, 0.8])
    p[1] = np.log([1.0 - 1e-3, 1e-3])
    q[1] = np.log([1e-3, 1.0 - 1e-3])
    child = mdp.next_state[0, 0]
    w = np.array([0.8, 0.2]) / 1.0  # reach of the child under p and q
    expected = (w[0] * np.exp(p[child]) + w[1] * np.exp(q[child])) / w.sum()
    np.testing.assert_allclose(np.exp(mixture_logp(mdp, [p, q])[child]), expected, rtol=1e-12)


def test_running_mixture_is_the_batch_mixture_after_each_addition():
    mdp = envs.token_tree(3, 3, 2, seed=4)
    rng = np.random.default_rng(0)
    tables = []
    mixture = RunningMixture(mdp)
    solution = xpo_sim.solve_soft(mdp, 0.3)
    for _ in range(5):
        logits = rng.normal(size=(mdp.n_states, mdp.n_actions))
        tables.append(logits - np.log(np.exp(logits).sum(axis=1, keepdims=True)))
        mixture.add(tables[-1])
        np.testing.assert_array_equal(mixture.logp(), mixture_logp(mdp, tables))
        assert mixture.regret(solution) == mixture_regret(mdp, 0.3, tables)
    assert mixture.count == 5


def test_tree_detection():
    assert is_tree(envs.bandit(5, n_prompts=2))
    assert is_tree(envs.token_tree(3, 3, 2))
    assert is_tree(envs.token_needle(3, 3, 1e-2))
    assert is_tree(envs.feature_bandit(20, 4, 1e-3))
    assert is_tree(envs.two_arm_needle(0.1))
    assert not is_tree(envs.combination_lock(3, 3, 0.2))
    # a start state that is also entered from another state
    entered = xpo_sim.TokenMDP([[1], [-1]], [[0.0], [1.0]], [[0.0], [0.0]], [0.5, 0.5])
    assert not is_tree(entered)


@given(random_dags())
@settings(max_examples=40, deadline=None)
def test_non_trees_are_refused_with_a_clear_error(mdp):
    if is_tree(mdp):
        mixture_regret(mdp, 1.0, [mdp.ref_logp])
        return
    with pytest.raises(ValueError, match="is not a tree"):
        mixture_regret(mdp, 1.0, [mdp.ref_logp])
    with pytest.raises(ValueError, match="mdp is not a tree"):
        RunningMixture(mdp)


def test_bad_arguments_are_value_errors_naming_them():
    mdp = envs.token_tree(2, 2, 1)
    with pytest.raises(ValueError, match="combination_lock"):
        mixture_regret(envs.combination_lock(3, 2, 0.5), 0.1, [])
    with pytest.raises(ValueError, match="logps is empty"):
        mixture_regret(mdp, 0.1, [])
    with pytest.raises(ValueError, match="logps must be a sequence"):
        mixture_regret(mdp, 0.1, 3)
    with pytest.raises(ValueError, match=r"logps\[1\]"):
        mixture_regret(mdp, 0.1, [mdp.ref_logp, np.zeros((2, 2))])
    with pytest.raises(ValueError, match="beta"):
        mixture_regret(mdp, -1.0, [mdp.ref_logp])
    with pytest.raises(ValueError, match="mdp must be a TokenMDP"):
        mixture_regret("tree", 0.1, [mdp.ref_logp])
    with pytest.raises(ValueError, match="add"):
        RunningMixture(mdp).logp()
    with pytest.raises(ValueError, match="logp"):
        RunningMixture(mdp).add(np.zeros((3, 3)))
    single = mixture_logp(mdp, mdp.ref_logp)  # one (S, A) table is one component
    np.testing.assert_allclose(single, mdp.ref_logp, rtol=1e-14)


# ------------------------------------------------------------------------------ the run's column
def test_the_recorder_reports_the_mixture_of_the_iterates_of_rounds_one_on():
    mdp = envs.token_tree(3, 2, 2, seed=6)
    rng = np.random.default_rng(1)
    tables = [np.array(mdp.ref_logp)]
    for _ in range(6):
        logits = rng.normal(size=(mdp.n_states, mdp.n_actions))
        tables.append(logits - np.log(np.exp(logits).sum(axis=1, keepdims=True)))
    recorder = RunRecorder(mdp, 0.4, "x", {0, 1, 3, 6}, 0)
    data = xpo_sim.PreferenceData(mdp)
    for t, table in enumerate(tables):
        recorder.record(t, table, data, 0.0)
    rows = {row["round"]: row for row in recorder.rows}
    assert rows[0]["mixture_regret"] == rows[0]["regret"] == rows[0]["avg_regret"]
    assert rows[1]["mixture_regret"] == pytest.approx(rows[1]["regret"], rel=1e-12)
    for t in (3, 6):
        assert rows[t]["mixture_regret"] == pytest.approx(mixture_regret(mdp, 0.4, tables[1:t + 1]), rel=1e-12)
        assert rows[t]["avg_regret"] == pytest.approx(np.mean([regret(mdp, x, 0.4) for x in tables[1:t + 1]]),
                                                      rel=1e-12)
        assert rows[t]["mixture_regret"] <= rows[t]["avg_regret"]


def test_run_reports_the_mixture_on_trees_and_nan_on_other_dags():
    tree = xpo_sim.run(envs.token_tree(3, 2, 2, seed=3), xpo_sim.XPO(), 0.3, 30, seed=2, record="geometric")
    assert np.isfinite(tree.mixture_regret).all()
    assert (tree.mixture_regret >= 0).all()
    assert (tree.mixture_regret <= tree.avg_regret * (1 + 1e-9)).all()
    assert tree.mixture_regret.iloc[0] == tree.regret.iloc[0]
    assert tree.mixture_regret.iloc[1] == pytest.approx(tree.regret.iloc[1], rel=1e-12)
    lock = xpo_sim.run(envs.combination_lock(3, 3, 0.2), xpo_sim.XPO(), 0.3, 5, seed=2, policy="linear")
    assert lock.mixture_regret.isna().all() and np.isfinite(lock.avg_regret).all()
    assert math.isnan(lock.mixture_regret.iloc[0])
