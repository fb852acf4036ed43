"""Coverage metrics against brute-force enumeration (tests/naive.py)."""

import math

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

import naive
import xpo_sim
from naive import assert_close
from strategies import mdps, policies
from xpo_sim.metrics import ConcentrabilityTracker


def naive_conditional_probs(mdp, logp):
    """{τ: π(τ|s₀)} over every π_ref trajectory, by products along each path."""
    table = naive._table(logp)
    return {tau: math.exp(naive.path_sum(table, tau)) for tau in naive.trajectories(mdp)}


@given(data=st.data())
def test_optimal_mass_is_the_mass_on_reward_maximizing_responses(data):
    mdp = data.draw(mdps())
    logp = data.draw(policies(mdp))
    probs = naive_conditional_probs(mdp, logp)
    reward = naive._table(mdp.reward)
    expected = 0.0
    for s0 in naive.start_states(mdp):
        taus = [t for t in probs if t[0][0] == s0]
        best = max(naive.path_sum(reward, t) for t in taus)
        expected += mdp.start[s0] * sum(probs[t] for t in taus if naive.path_sum(reward, t) >= best - 1e-12)
    assert_close(xpo_sim.optimal_mass(mdp, logp), expected, rtol=1e-10, scale=1.0)


@given(data=st.data())
def test_seen_mass_sums_rho_times_conditional_probability(data):
    mdp = data.draw(mdps())
    logp = data.draw(policies(mdp))
    batch = mdp.trajectories()
    chosen = np.array(data.draw(st.lists(st.integers(0, len(batch) - 1), unique=True, max_size=len(batch))), dtype=int)
    subset = xpo_sim.TrajectoryBatch(batch.states[chosen], batch.actions[chosen], batch.lengths[chosen])
    probs = naive_conditional_probs(mdp, logp)
    tuples = batch.as_tuples()
    expected = sum(mdp.start[tuples[i][0][0]] * probs[tuples[i]] for i in chosen)
    assert_close(xpo_sim.seen_mass(mdp, logp, subset), expected, rtol=1e-10, scale=1.0)


@given(data=st.data())
def test_concentrability_is_max_ratio_to_the_average_sampling_distribution(data):
    mdp = data.draw(mdps())
    star = xpo_sim.solve_soft(mdp, data.draw(st.floats(0.1, 5.0))).logp
    samplers = [data.draw(policies(mdp)) for _ in range(data.draw(st.integers(1, 3)))]
    tracker = ConcentrabilityTracker(mdp, star)
    assert tracker.value() == math.inf  # no data yet
    for logp in samplers:
        tracker.add(tracker.policy_logp(logp))
    star_probs = naive_conditional_probs(mdp, star)
    sampler_probs = [naive_conditional_probs(mdp, logp) for logp in samplers]
    ratios = []
    for tau, p_star in star_probs.items():
        mu = sum(p[tau] for p in sampler_probs) / len(samplers)
        ratios.append(math.inf if mu == 0 else p_star / mu)
    expected = math.log(max(ratios))
    if math.isinf(expected):
        assert tracker.value() == math.inf
    else:
        assert_close(tracker.value(), expected, rtol=1e-9, scale=1.0)


def test_concentrability_is_nan_when_too_many_trajectories():
    mdp = xpo_sim.envs.token_tree(4, 3)
    tracker = ConcentrabilityTracker(mdp, mdp.ref_logp, max_trajectories=10)
    tracker.add(np.zeros(1))
    assert math.isnan(tracker.value())
