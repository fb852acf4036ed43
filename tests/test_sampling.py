"""Sampling trajectories and scoring them: reproducibility, validity, exact frequencies."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats

import naive
import xpo_sim
from naive import assert_close
from strategies import log_softmax_masked, mdps, policies
from xpo_sim import envs


def assert_valid_batch(mdp, logp, batch):
    """Every row is a complete trajectory of ``mdp`` that follows tokens ``logp`` gives mass,
    padded with -1."""
    n, width = batch.states.shape
    assert batch.actions.shape == (n, width) and batch.lengths.shape == (n,)
    for i in range(n):
        k = int(batch.lengths[i])
        assert 1 <= k <= width
        s, a = batch.states[i, :k], batch.actions[i, :k]
        assert np.all(logp[s, a] > -np.inf), "sampled a token of probability zero"
        nxt = mdp.next_state[s, a]
        assert np.array_equal(nxt[:-1], s[1:]), "states do not follow next_state"
        assert nxt[-1] == -1, "trajectory stops before the end"
        assert np.all(batch.states[i, k:] == -1) and np.all(batch.actions[i, k:] == -1)


@given(data=st.data())
def test_sampling_is_reproducible_and_valid(data):
    mdp = data.draw(mdps(), label="mdp")
    logp = data.draw(policies(mdp), label="logp")
    n = data.draw(st.integers(0, 40), label="n")
    seed = data.draw(st.integers(0, 2**63 - 1), label="seed")
    a = xpo_sim.sample_trajectories(mdp, logp, n, seed=seed)
    b = xpo_sim.sample_trajectories(mdp, logp, n, seed=seed)
    c = xpo_sim.sample_trajectories(mdp, logp, n, seed=np.random.default_rng(seed))
    for x, y in ((a, b), (a, c)):
        assert np.array_equal(x.states, y.states)
        assert np.array_equal(x.actions, y.actions)
        assert np.array_equal(x.lengths, y.lengths)
    assert len(a) == n
    assert_valid_batch(mdp, logp, a)
    # Policies here live inside π_ref's support: every sampled token is one π_ref allows.
    for i, k in enumerate(a.lengths):
        assert np.all(mdp.allowed[a.states[i, :k], a.actions[i, :k]])
    # Start states are drawn from ρ: never a state with ρ = 0.
    if n:
        assert np.all(mdp.start[a.start_states] > 0)


def test_generator_advances_and_int_seed_is_default_rng():
    mdp = envs.random_dag(6, 3, n_prompts=2, seed=1)
    rng = np.random.default_rng(123)
    first = xpo_sim.sample_trajectories(mdp, mdp.ref_logp, 500, seed=rng)
    second = xpo_sim.sample_trajectories(mdp, mdp.ref_logp, 500, seed=rng)
    # The same Generator continues its stream: a second batch of 500 differs from the first
    # (both equal would have probability far below 1e-100 on this instance).
    assert not (np.array_equal(first.states, second.states) and np.array_equal(first.actions, second.actions))
    replay = np.random.default_rng(123)
    again = xpo_sim.sample_trajectories(mdp, mdp.ref_logp, 500, seed=replay)
    assert np.array_equal(again.actions, first.actions) and np.array_equal(again.states, first.states)
    from_int = xpo_sim.sample_trajectories(mdp, mdp.ref_logp, 500, seed=123)
    assert np.array_equal(from_int.actions, first.actions)


@given(data=st.data())
def test_sampling_respects_start_states(data):
    mdp = data.draw(mdps(), label="mdp")
    logp = data.draw(policies(mdp), label="logp")
    n = data.draw(st.integers(1, 30), label="n")
    # Any states, including ones with ρ = 0 and non-prompt states.
    starts = np.array(data.draw(st.lists(st.integers(0, mdp.n_states - 1), min_size=n, max_size=n)))
    batch = xpo_sim.sample_trajectories(mdp, logp, n, seed=data.draw(st.integers(0, 1000)), start_states=starts)
    assert np.array_equal(batch.start_states, starts)
    assert_valid_batch(mdp, logp, batch)


@given(data=st.data())
def test_trajectory_logp_and_reward_match_naive_sums(data):
    mdp = data.draw(mdps(), label="mdp")
    logp = data.draw(policies(mdp), label="logp")
    batch = data.draw(st.one_of(
        st.just(mdp.trajectories()),
        st.integers(0, 2**32 - 1).map(lambda seed: xpo_sim.sample_trajectories(mdp, logp, 25, seed=seed)),
    ), label="batch")
    taus = batch.as_tuples()
    lp_table, r_table, ref_table = logp.tolist(), mdp.reward.tolist(), mdp.ref_logp.tolist()
    # Same additions in the same order as the naive loop: exact equality.
    got_lp = xpo_sim.trajectory_logp(mdp, logp, batch)
    got_r = xpo_sim.trajectory_reward(mdp, batch)
    got_ref = xpo_sim.trajectory_logp(mdp, mdp.ref_logp, batch)
    assert np.array_equal(got_lp, [naive.path_sum(lp_table, t) for t in taus])
    assert np.array_equal(got_r, [naive.path_sum(r_table, t) for t in taus])
    assert np.array_equal(got_ref, [naive.path_sum(ref_table, t) for t in taus])


CASES = [
    # (instance, policy name)
    ("dag", "ref"),
    ("dag", "policy_with_zeros"),
    ("tree", "ref"),
]


def _instance(name):
    if name == "dag":
        # 8 states, 3 tokens, two prompts with ρ = 1/2 each, variable lengths, disallowed tokens.
        return envs.random_dag(8, 3, n_prompts=2, p_end=0.3, seed=1)
    return envs.token_tree(3, 3, n_prompts=1, ref_temperature=2.0, seed=5)


@pytest.mark.parametrize("instance,policy", CASES)
def test_empirical_frequencies_match_enumeration(instance, policy):
    """Empirical frequencies of n = 200 000 samples (fixed seed) match
    P(τ) = ρ(s0)·π(τ) from the enumeration.

    Statistical bounds (both would fail for a sampler off by even 1% on a trajectory of
    probability ≥ 0.05, whose standard error here is ≤ 0.0011·n):
    * per trajectory: |count − nP| ≤ 5·sqrt(nP(1−P)) + 1 (5 sigma; with ≤ 30 trajectories
      the chance that a correct sampler breaks it is about 30·6e-7 < 1e-4; the smallest
      expected count here is nP ≈ 29, where the normal approximation is adequate);
    * chi-square over the support: the statistic must stay below the 1 − 1e-6 quantile of
      χ² with (K − 1) degrees of freedom;
    * no sampled trajectory lies outside π's support (probability exactly zero).
    """
    mdp = _instance(instance)
    if policy == "ref":
        logp = np.array(mdp.ref_logp)
    else:
        rng = np.random.default_rng(2)
        logits = np.where(mdp.allowed, rng.standard_normal(mdp.ref_logp.shape), -np.inf)
        # Zero out one allowed token in every even state that has two or more.
        for s in range(0, mdp.n_states, 2):
            allowed = np.flatnonzero(mdp.allowed[s])
            if allowed.size >= 2:
                logits[s, allowed[0]] = -np.inf
        logp = log_softmax_masked(logits, np.isfinite(logits))
    n = 200_000
    batch = xpo_sim.sample_trajectories(mdp, logp, n, seed=20240601)
    support = (logp > -np.inf).tolist()
    ns_list = mdp.next_state.tolist()
    lp_list = logp.tolist()
    prob = {}
    for s0 in naive.start_states(mdp):
        for t in naive.enumerate_from(ns_list, support, s0):
            prob[t] = float(mdp.start[s0]) * math.exp(naive.path_sum(lp_list, t))
    assert 5 <= len(prob) <= 100
    assert abs(sum(prob.values()) - 1.0) <= 1e-12
    counts = {}
    for t in batch.as_tuples():
        counts[t] = counts.get(t, 0) + 1
    assert set(counts) <= set(prob), "sampled a trajectory of probability zero"
    keys = sorted(prob)
    p = np.array([prob[t] for t in keys])
    c = np.array([counts.get(t, 0) for t in keys])
    sigma = np.sqrt(n * p * (1 - p))
    assert np.all(np.abs(c - n * p) <= 5 * sigma + 1), np.max(np.abs(c - n * p) / (sigma + 1e-300))
    chi2 = float(np.sum((c - n * p) ** 2 / (n * p)))
    assert chi2 <= stats.chi2.isf(1e-6, len(keys) - 1)
    # Start states are drawn from ρ: empirical prompt frequencies within 5 sigma.
    for s0 in naive.start_states(mdp):
        rho = float(mdp.start[s0])
        k = int(np.sum(batch.start_states == s0))
        assert abs(k - n * rho) <= 5 * math.sqrt(n * rho * (1 - rho)) + 1


def test_frequency_test_detects_a_wrong_policy():
    """Sanity check of the statistical bound above: samples of π_ref scored against a policy
    that moves 5% of the mass of one token fail the chi-square bound."""
    mdp = envs.bandit(3, 1, seed=0)
    n = 200_000
    batch = xpo_sim.sample_trajectories(mdp, mdp.ref_logp, n, seed=1)
    p = np.exp(mdp.ref_logp[0]).copy()
    shifted = p.copy()
    shifted[0] += 0.05 * p[0]
    shifted[1] -= 0.05 * p[0]
    c = np.bincount(batch.actions[:, 0], minlength=3)
    chi2_true = float(np.sum((c - n * p) ** 2 / (n * p)))
    chi2_wrong = float(np.sum((c - n * shifted) ** 2 / (n * shifted)))
    bound = stats.chi2.isf(1e-6, 2)
    assert chi2_true <= bound < chi2_wrong


def test_sample_size_zero_and_bad_arguments():
    mdp = envs.bandit(2, 2, seed=0)
    empty = xpo_sim.sample_trajectories(mdp, mdp.ref_logp, 0, seed=0)
    assert len(empty) == 0
    with pytest.raises(ValueError):
        xpo_sim.sample_trajectories(mdp, mdp.ref_logp, 3, seed=0, start_states=[0, 1])
    with pytest.raises(ValueError):
        xpo_sim.sample_trajectories(mdp, mdp.ref_logp, 2, seed=0, start_states=[0, 2])
    with pytest.raises(ValueError):
        xpo_sim.sample_trajectories(mdp, mdp.ref_logp, -1, seed=0)
    with pytest.raises(ValueError):
        xpo_sim.sample_trajectories(mdp, mdp.ref_logp, 2, seed="0")


@pytest.mark.parametrize("eps", [1e-300, 1e-12])
def test_needle_sampling_never_fabricates_tiny_mass(eps):
    """With π_ref(good) = ε the good response appears at most O(nε) times; at ε = 1e-300 a
    single appearance among 10⁵ samples would have probability ≈ 1e-295."""
    mdp = envs.bandit_needle(4, eps, seed=0)
    good = int(mdp.info["optimal_actions"][0])
    batch = xpo_sim.sample_trajectories(mdp, mdp.ref_logp, 100_000, seed=0)
    assert np.sum(batch.actions[:, 0] == good) == 0
    assert_close(np.exp(xpo_sim.trajectory_logp(mdp, mdp.ref_logp, batch)), (1 - eps) / 3, 1.0, 1e-12, "π_ref(bad)")
