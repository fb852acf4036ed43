"""Coverage metrics against brute-force enumeration (tests/naive.py)."""

import math

import numpy as np
import pytest
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

    def mass_within(tol):
        total = 0.0
        for s0 in naive.start_states(mdp):
            taus = [t for t in probs if t[0][0] == s0]
            best = max(naive.path_sum(reward, t) for t in taus)
            total += mdp.start[s0] * sum(probs[t] for t in taus if naive.path_sum(reward, t) >= best - tol)
        return total

    # The kernel counts a token as optimal when its reward-to-go is within 1e-12 of the best
    # at that state; a trajectory whose total falls short by about 1e-12 is a genuine tie-rule
    # boundary (hypothesis found one: rewards 1 vs 1 + 1e-12 with a -1e-213 absorbed into a
    # sum). Away from the boundary the answer is exact; at it, either side is correct.
    strict, loose = mass_within(0.5e-12), mass_within((mdp.horizon + 1) * 1e-12)
    got = xpo_sim.optimal_mass(mdp, logp)
    assert strict - 1e-10 <= got <= loose + 1e-10
    if math.isclose(strict, loose, rel_tol=1e-12, abs_tol=1e-15):
        assert_close(got, strict, rtol=1e-10, scale=1.0)


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


def test_coverability_matches_the_class_vertices():
    """C_cov = Σ_y sup_π π(y|x): each supremum is attained at the box vertex r̂(y) = hi,
    r̂(other) = lo, computed here with the policy class itself."""
    from xpo_sim.metrics import coverability, theory_alpha
    from xpo_sim.policies import ImplicitRewardClass

    for mdp in (xpo_sim.envs.bandit_needle(5, 1e-3, seed=1), xpo_sim.envs.token_needle(2, 2, 0.01, n_prompts=2)):
        beta, box = 0.2, (0.0, 1.0)
        cls = ImplicitRewardClass(mdp, beta, box=box, support="terminal")
        batch = mdp.trajectories()
        per_prompt = {}
        for i in range(cls.n_params):
            params = np.full(cls.n_params, box[0])
            params[i] = box[1]
            probs = np.exp(xpo_sim.trajectory_logp(mdp, cls.policy_logp(params), batch))
            s, a = cls.index[0][i], cls.index[1][i]
            last = [(st[n - 1], ac[n - 1]) for st, ac, n in zip(batch.states, batch.actions, batch.lengths)]
            k = last.index((s, a))
            s0 = int(batch.start_states[k])
            per_prompt[s0] = per_prompt.get(s0, 0.0) + probs[k]
        assert_close(coverability(mdp, beta, box=box, support="terminal"), max(per_prompt.values()),
                     rtol=1e-10, scale=1.0)
    # the theory's α shrinks like 1/√T
    assert theory_alpha(0.1, 8.0, 8, 400) > theory_alpha(0.1, 8.0, 8, 1600)
    # DAGs are covered too now (tests/test_coverability.py); the old positional box is refused clearly
    with pytest.raises(ValueError, match="keyword"):
        coverability(xpo_sim.envs.random_dag(12, 3, seed=0, p_disallowed=0.0), 0.1, (0, 1))


def test_optimal_mass_at_the_tie_rule_boundary():
    """The example hypothesis found: two responses of reward 1 (one with a -1e-213 absorbed
    into the sum) and one of reward 1 + 1e-12. With the tolerance 1e-12 either answer is a
    legitimate reading of "ties within tol", and the kernel's per-state rule gives 2/9 of the
    prompt's mass: the one tie broken is the -1e-213 reward-to-go, below 0 = best - tol."""
    third = math.log(1 / 3)
    next_state = np.full((8, 3), -1)
    next_state[6, 2] = 7
    reward = np.zeros((8, 3))
    reward[6, 2] = 1.0
    reward[7] = [-1.1735133496153282e-213, 0.0, 1e-12]
    ref_logp = np.full((8, 3), third)
    ref_logp[5] = [0.0, -np.inf, -np.inf]
    start = np.zeros(8)
    start[6] = 1.0
    mdp = xpo_sim.TokenMDP(next_state, reward, ref_logp, start)
    got = xpo_sim.optimal_mass(mdp, mdp.ref_logp)
    assert got == pytest.approx(2 / 9, rel=1e-12)
    assert 1 / 9 - 1e-12 <= got <= 1 / 3 + 1e-12  # between "strict" and "loose" readings
