r"""Property tests for the identities of the theory page (docs/theory.md), plus extreme numerics.

Tolerances. Every quantity below is a short sum (≤ 8 steps, ≤ 4 actions per state) of
terms each computed with a handful of correctly rounded operations, so its absolute
rounding error is at most ~100·ε_mach ≈ 2e-14 times the magnitude of the terms involved
("scale": rewards, values, β·|log-probabilities|). We allow rtol = 1e-9 of that scale
(``naive.assert_close``): a margin of ~10⁴ over rounding, while a wrong sign, a missing
β, or a wrong successor changes the result by O(1)·scale and fails.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import naive
import xpo_sim
from naive import assert_close
from strategies import betas, mdps, policies, potentials, stochastic_mdps
from xpo_sim import envs

RTOL = 1e-9
NEG_INF = -np.inf


def successor_values(mdp, v):
    """V*(s'(s, a)) (S, A), with V* of the end = 0."""
    ns = mdp.next_state
    return np.where(ns >= 0, v[np.maximum(ns, 0)], 0.0)


# ------------------------------------------------------------------ identity 1
@given(mdp=mdps(), beta=betas)
def test_implicit_q_per_token(mdp, beta):
    """β log(π*(a|s)/π_ref(a|s)) = Q*(s,a) − V*(s) = r(s,a) + V*(s') − V*(s) on allowed tokens."""
    sol = xpo_sim.solve_soft(mdp, beta)
    allowed = mdp.allowed
    v_next = successor_values(mdp, sol.v)
    scale = (np.abs(sol.q) + np.abs(sol.v)[:, None] + np.abs(v_next) + np.abs(mdp.reward)
             + beta * np.abs(mdp.ref_logp))[allowed]
    lhs = beta * (sol.logp[allowed] - mdp.ref_logp[allowed])
    assert_close(lhs, (sol.q - sol.v[:, None])[allowed], scale, RTOL, "β log π*/π_ref vs Q* − V*")
    assert_close(lhs, (mdp.reward + v_next - sol.v[:, None])[allowed], scale, RTOL,
                 "β log π*/π_ref vs r + V*(s') − V*(s)")
    # Q* is the Bellman backup for every token (allowed or not) and π* keeps π_ref's support.
    assert_close(sol.q, mdp.reward + v_next, np.abs(mdp.reward) + np.abs(v_next), RTOL, "Q* = r + V*(s')")
    assert np.all(sol.logp[~allowed] == NEG_INF)
    assert np.all(np.isfinite(sol.logp[allowed]))
    # The same three tables from an independent memoized recursion.
    q, v, logp = naive.soft_bellman(mdp, beta)
    assert_close(sol.q, q, np.abs(q), RTOL, "Q* vs naive")
    assert_close(sol.v, v, np.abs(v), RTOL, "V* vs naive")
    assert_close(beta * sol.logp, beta * np.array(logp), scale=np.abs(q) + np.abs(v)[:, None]
                 + beta * np.abs(mdp.ref_logp), rtol=RTOL, err_msg="log π* vs naive")


# ------------------------------------------------------------------ identity 2
@given(mdp=mdps(), beta=betas)
def test_telescoped_identity_along_every_trajectory(mdp, beta):
    """β log(π*(τ)/π_ref(τ)) = r(τ) − V*(s₀) for every trajectory, and the V*(s₀) cancels in
    the difference between two responses to the same prompt."""
    sol = xpo_sim.solve_soft(mdp, beta)
    batch = mdp.trajectories()
    taus = batch.as_tuples()
    assert taus == naive.trajectories(mdp)
    logp_opt = xpo_sim.trajectory_logp(mdp, sol.logp, batch)
    logp_ref = xpo_sim.trajectory_logp(mdp, mdp.ref_logp, batch)
    r = xpo_sim.trajectory_reward(mdp, batch)
    v0 = sol.v[batch.start_states]
    lhs = beta * (logp_opt - logp_ref)
    scale = np.abs(r) + np.abs(v0) + beta * (np.abs(logp_opt) + np.abs(logp_ref))
    assert_close(lhs, r - v0, scale, RTOL, "β log π*(τ)/π_ref(τ) vs r(τ) − V*(s0)")

    # log π*(τ) from the trajectory-level optimum π*(τ) ∝ π_ref(τ) e^{r(τ)/β}, no Bellman.
    _, naive_logp = naive.optimum_by_enumeration(mdp, beta)
    assert_close(beta * logp_opt, [beta * naive_logp[t] for t in taus], scale, RTOL,
                 "log π*(τ) vs trajectory-level optimum")
    # Probabilities of the responses to each prompt sum to one.
    for s0 in np.unique(batch.start_states):
        mass = np.exp(logp_opt[batch.start_states == s0]).sum()
        assert abs(mass - 1.0) <= 1e-12 * len(taus)

    # Two responses to the same prompt: the differences match r(τ) − r(τ').
    same = batch.start_states[:, None] == batch.start_states[None, :]
    pair_scale = scale[:, None] + scale[None, :]
    assert_close((lhs[:, None] - lhs[None, :])[same], (r[:, None] - r[None, :])[same],
                 pair_scale[same], RTOL, "DPO pair identity")


# ------------------------------------------------------------------ identity 3
@given(data=st.data())
def test_regret_is_beta_times_trajectory_kl(data):
    """J_β(π*) − J_β(π) = β E_{s0∼ρ} KL(π(·|s0) ‖ π*(·|s0)) ≥ 0, the KL by enumeration."""
    mdp = data.draw(mdps(), label="mdp")
    beta = data.draw(betas, label="beta")
    logp = data.draw(policies(mdp), label="logp")
    sol = xpo_sim.solve_soft(mdp, beta)
    regret = xpo_sim.regret(mdp, logp, beta, solution=sol)
    assert regret == xpo_sim.regret(mdp, logp, beta)  # same computation with or without a solution
    kl = naive.kl_to_optimum(mdp, logp, beta)
    j_pi = naive.evaluate(mdp, logp, beta)
    # J_β(π*) by enumeration: Σ ρ(s0) V*(s0), V* at trajectory level.
    v_naive, _ = naive.optimum_by_enumeration(mdp, beta)
    j_star = float(np.dot(mdp.start, v_naive))
    scale = abs(j_star) + abs(j_pi["reward"]) + beta * j_pi["kl"] + beta * kl
    assert_close(sol.value, j_star, scale, RTOL, "J(π*) = ρ·V*")
    assert_close(xpo_sim.evaluate(mdp, logp, beta).value, j_pi["value"], scale, RTOL, "J(π)")
    assert_close(regret, beta * kl, scale, RTOL, "regret vs β·KL(π‖π*)")
    assert regret >= -RTOL * (1 + scale)


@given(mdp=mdps(), beta=betas)
def test_regret_of_optimum_and_reference(mdp, beta):
    """regret(π*) = 0; regret(π_ref) = β E KL(π_ref‖π*) = J(π*) − E_ref r(τ)."""
    sol = xpo_sim.solve_soft(mdp, beta)
    # J(π*) via evaluate is E r − β·KL with per-token terms β|log π* − log π_ref|.
    a = mdp.allowed
    scale = np.abs(sol.v).max() + beta * (np.abs(sol.logp[a]) + np.abs(mdp.ref_logp[a])).max() * mdp.horizon
    assert_close(xpo_sim.regret(mdp, sol.logp, beta, solution=sol), 0.0, scale, RTOL, "regret(π*)")
    ref_regret = xpo_sim.regret(mdp, mdp.ref_logp, beta, solution=sol)
    exp_r = naive.evaluate(mdp, mdp.ref_logp, beta)["reward"]
    assert_close(ref_regret, sol.value - exp_r, scale, RTOL, "regret(π_ref)")
    assert_close(ref_regret, beta * naive.kl_to_optimum(mdp, mdp.ref_logp, beta), scale, RTOL,
                 "regret(π_ref) vs β·KL(π_ref‖π*)")


def test_regret_is_strictly_positive_off_the_optimum():
    """A policy that differs from π* on a reachable state has positive regret, equal to
    β·KL computed by hand on a one-state bandit."""
    mdp = xpo_sim.TokenMDP([[-1, -1]], [[1.0, 0.0]], np.log([[0.5, 0.5]]), [1.0])
    beta = 0.5
    # π*(0) = e^{2}/(e^{2}+1); π = (1/2, 1/2) = π_ref.
    p_star = math.exp(2.0) / (math.exp(2.0) + 1.0)
    expected = beta * (0.5 * math.log(0.5 / p_star) + 0.5 * math.log(0.5 / (1 - p_star)))
    assert expected > 0.1
    assert_close(xpo_sim.regret(mdp, mdp.ref_logp, beta), expected, 1.0, RTOL, "bandit regret")


# ------------------------------------------------------------------ identity 4
@given(data=st.data())
def test_potential_shaping(data):
    """r'(s,a) = r(s,a) + Φ(s') − Φ(s) (Φ(end) = 0) leaves π* unchanged, V' = V − Φ and
    Q'(s,a) = Q(s,a) − Φ(s)."""
    mdp = data.draw(mdps(), label="mdp")
    beta = data.draw(betas, label="beta")
    phi = data.draw(potentials(mdp.n_states), label="phi")
    phi_next = np.where(mdp.next_state >= 0, phi[np.maximum(mdp.next_state, 0)], 0.0)
    shaped = xpo_sim.TokenMDP(mdp.next_state, mdp.reward + phi_next - phi[:, None], mdp.ref_logp, mdp.start)
    sol = xpo_sim.solve_soft(mdp, beta)
    sol2 = xpo_sim.solve_soft(shaped, beta)
    scale = (np.abs(sol.q) + np.abs(sol2.q) + np.abs(sol.v)[:, None] + np.abs(sol2.v)[:, None]
             + np.abs(phi_next) + np.abs(phi)[:, None] + beta * np.abs(mdp.ref_logp))
    allowed = mdp.allowed
    assert np.all(sol2.logp[~allowed] == NEG_INF)
    assert_close(beta * sol2.logp[allowed], beta * sol.logp[allowed], scale[allowed], RTOL, "π* shaped")
    assert_close(sol2.v, sol.v - phi, np.abs(sol.v) + np.abs(phi), RTOL, "V' = V − Φ")
    assert_close(sol2.q, sol.q - phi[:, None], scale, RTOL, "Q' = Q − Φ(s)")


# ------------------------------------------------------------------ identity 5
@given(mdp=mdps())
def test_large_beta_limit_is_reference(mdp):
    """β = 1e4: π* ≈ π_ref, with bounds derived from the reward range.

    Let R(s) = max_τ r(τ) − min_τ r(τ) over the trajectories from s. Q*(s,a) and V*(s) are
    soft maxima of r(τ) over trajectories from (s,a) and s, so both lie in [min, max] and
    |log π*(a|s) − log π_ref(a|s)| = |Q* − V*|/β ≤ R(s)/β (≤ 32/1e4 here).

    First order: by Jensen and Hoeffding's lemma, with V^ref(s) = E_{π_ref} r(τ) from s,
    0 ≤ V*(s) − V^ref(s) ≤ R(s)²/(8β); the same for Q* − Q^ref with R(s'). Hence
    β(log π* − log π_ref) − (Q^ref − V^ref) ∈ [−R(s)²/(8β), R(s')²/(8β)].
    Rounding of log π* is ~ε_mach·|log π_ref| ≈ 1e-15·10; we add 1e-12·(1 + |log π_ref|).
    """
    beta = 1e4
    sol = xpo_sim.solve_soft(mdp, beta)
    next_state, reward, ref_logp, _ = naive._lists(mdp)
    allowed = [[x > -math.inf for x in row] for row in ref_logp]
    spread, v_ref = [], []
    for s in range(mdp.n_states):
        returns = [naive.path_sum(reward, t) for t in naive.enumerate_from(next_state, allowed, s)]
        spread.append(max(returns) - min(returns))
        v_ref.append(naive.evaluate_from(mdp, mdp.ref_logp, s)[0])
    spread, v_ref = np.array(spread), np.array(v_ref)
    ns = mdp.next_state
    spread_next = np.where(ns >= 0, spread[np.maximum(ns, 0)], 0.0)
    v_ref_next = np.where(ns >= 0, v_ref[np.maximum(ns, 0)], 0.0)
    q_ref = mdp.reward + v_ref_next
    a = mdp.allowed
    rounding = 1e-12 * (1 + np.abs(mdp.ref_logp[a]))
    diff = sol.logp[a] - mdp.ref_logp[a]
    assert np.all(np.abs(diff) <= (np.broadcast_to(spread[:, None], ns.shape)[a]) / beta + rounding)
    first_order = ((q_ref - v_ref[:, None]) / beta)[a]
    low = -(np.broadcast_to(spread[:, None], ns.shape)[a]) ** 2 / (8 * beta**2) - rounding
    high = spread_next[a] ** 2 / (8 * beta**2) + rounding
    assert np.all(diff - first_order >= low)
    assert np.all(diff - first_order <= high)


@given(mdp=mdps())
def test_small_beta_limit_is_max_reward(mdp):
    """β = 1e-3: for each start state s0,
        max_τ [r(τ) + β log π_ref(τ)] ≤ V*(s0) ≤ max_τ r(τ),
    since V* = β log Σ_τ π_ref(τ) e^{r(τ)/β} is at least one term of the sum and at most
    max e^{r/β} times Σ π_ref = 1. So V*(s0) → max r as β → 0, within β·|log π_ref(τ_max)|.
    Rewards are O(1) and r/β up to 1.6e4: this is also the small-β numerics test; the
    values must match the trajectory-level oracle (rtol 1e-9 of max |r(τ)|)."""
    beta = 1e-3
    sol = xpo_sim.solve_soft(mdp, beta)
    assert np.all(np.isfinite(sol.v)) and np.all(np.isfinite(sol.q))
    assert np.all(np.isfinite(sol.logp[mdp.allowed]))
    _, reward, ref_logp, _ = naive._lists(mdp)
    v_naive, _ = naive.optimum_by_enumeration(mdp, beta)
    for s0 in naive.start_states(mdp):
        taus = naive.trajectories(mdp, starts=[s0])
        r = np.array([naive.path_sum(reward, t) for t in taus])
        lref = np.array([naive.path_sum(ref_logp, t) for t in taus])
        tol = RTOL * (1 + np.abs(r).max())
        assert sol.v[s0] <= r.max() + tol
        assert sol.v[s0] >= (r + beta * lref).max() - tol
        assert_close(sol.v[s0], v_naive[s0], np.abs(r).max(), RTOL, "V*(s0) at β = 1e-3")


# ------------------------------------------------------------------ identity 6
@given(
    n_responses=st.integers(1, 6),
    n_prompts=st.integers(1, 3),
    seed=st.integers(0, 2**32 - 1),
    ref_temperature=st.sampled_from([0.25, 1.0, 4.0, math.inf]),
    beta=betas,
)
def test_bandit_closed_form(n_responses, n_prompts, seed, ref_temperature, beta):
    """V*(x) = β log Σ_y π_ref(y|x) e^{r(x,y)/β}, π*(y|x) ∝ π_ref(y|x) e^{r(x,y)/β}."""
    mdp = envs.bandit(n_responses, n_prompts, ref_temperature=ref_temperature, seed=seed)
    sol = xpo_sim.solve_soft(mdp, beta)
    logits = mdp.ref_logp + mdp.reward / beta
    log_z = np.logaddexp.reduce(logits, axis=1)
    scale = np.abs(mdp.reward).max() + beta * np.abs(mdp.ref_logp).max()
    assert_close(sol.v, beta * log_z, scale, RTOL, "bandit V*")
    assert_close(beta * sol.logp, beta * (logits - log_z[:, None]), scale, RTOL, "bandit π*")
    assert_close(sol.value, np.mean(beta * log_z), scale, RTOL, "bandit J(π*)")


# ------------------------------------------------------------------ identity 7
def _control_failures(smdp, beta):
    """For each trajectory from s0 = 0: (probability under π* and the transitions, the
    failure of identity 2, the martingale term Σ_h (E[V*(s_{h+1})|s_h,a_h] − V*(s_{h+1})),
    and the magnitude of the terms involved)."""
    q, v, logp = smdp.solve(beta)
    rows = []
    for tau, p_transitions in smdp.trajectories(0):
        log_ratio = sum(logp[s][a] - smdp.ref_logp[s][a] for s, a, _ in tau)
        r = sum(smdp.reward[s][a] for s, a, _ in tau)
        failure = beta * log_ratio - (r - v[0])
        martingale = sum(smdp.expected_next_value(v, s, a) - (0.0 if nxt < 0 else v[nxt]) for s, a, nxt in tau)
        prob = p_transitions * math.exp(sum(logp[s][a] for s, a, _ in tau))
        scale = abs(r) + abs(v[0]) + sum(abs(q[s][a]) + abs(v[s]) for s, a, _ in tau)
        rows.append((prob, failure, martingale, scale))
    return rows


def _fixed_stochastic_control():
    """s0 --a0--> s1 or s2 (1/2 each); a1 ends with reward 0.3. In s1 tokens end with
    rewards 1 and 0; in s2 both end with reward 0. π_ref uniform."""
    half = math.log(0.5)
    return naive.StochasticMDP(
        transitions=[[[(0.5, 1), (0.5, 2)], [(1.0, -1)]], [[(1.0, -1)], [(1.0, -1)]], [[(1.0, -1)], [(1.0, -1)]]],
        reward=[[0.0, 0.3], [1.0, 0.0], [0.0, 0.0]],
        ref_logp=[[half, half]] * 3,
        start=[1.0, 0.0, 0.0],
    )


def test_negative_control_fixed_instance():
    """With stochastic transitions identity 2 fails: on the instance above, by
    ±(V*(s1) − V*(s2))/2 on the trajectories through a0."""
    beta = 0.5
    smdp = _fixed_stochastic_control()
    _, v, _ = smdp.solve(beta)
    gap = 0.5 * (v[1] - v[2])
    assert gap > 0.1  # V*(s1) = β log((e^{2}+1)/2) ≈ 0.72, V*(s2) = 0
    rows = _control_failures(smdp, beta)
    failures = sorted(round(f, 9) for _, f, _, _ in rows)
    # two trajectories via s1 (fail by −gap), two via s2 (fail by +gap), one via a1 (no failure)
    assert failures == sorted([round(-gap, 9)] * 2 + [round(gap, 9)] * 2 + [0.0])
    for prob, failure, martingale, scale in rows:
        assert_close(failure, martingale, scale, RTOL, "failure = martingale term")
    mean = sum(prob * failure for prob, failure, _, _ in rows)
    assert_close(mean, 0.0, sum(prob * s for prob, _, _, s in rows), RTOL, "mean under π*")


@given(smdp=stochastic_mdps(), beta=betas)
def test_negative_control_stochastic_transitions(smdp, beta):
    """For random stochastic MDPs: β log(π*(τ)/π_ref(τ)) − (r(τ) − V*(s0)) equals
    Σ_h (E[V*(s_{h+1})|s_h,a_h] − V*(s_{h+1})) for every trajectory, and this term has mean
    zero under π* (and the transition law)."""
    rows = _control_failures(smdp, beta)
    total = sum(prob for prob, _, _, _ in rows)
    assert abs(total - 1.0) <= 1e-12 * len(rows)
    for prob, failure, martingale, scale in rows:
        assert_close(failure, martingale, scale, RTOL, "failure = martingale term")
    mean = sum(prob * martingale for prob, _, martingale, _ in rows)
    assert_close(mean, 0.0, sum(prob * s for prob, _, _, s in rows), RTOL, "mean under π*")


@given(mdp=mdps(), beta=betas)
def test_negative_control_solver_matches_library_on_deterministic_transitions(mdp, beta):
    """The stochastic oracle, given a deterministic MDP (one outcome with probability 1),
    reproduces solve_soft and then identity 2 holds with a zero martingale term — so the
    failure above is due to the stochastic transitions, not to the oracle."""
    next_state, reward, ref_logp, start = naive._lists(mdp)
    smdp = naive.StochasticMDP([[[(1.0, nxt)] for nxt in row] for row in next_state], reward, ref_logp, start)
    q, v, logp = smdp.solve(beta)
    sol = xpo_sim.solve_soft(mdp, beta)
    assert_close(sol.v, v, np.abs(v), RTOL, "V*")
    assert_close(sol.q, q, np.abs(q), RTOL, "Q*")
    if start[0] > 0:
        for _, failure, martingale, scale in _control_failures(smdp, beta):
            assert martingale == 0.0
            assert_close(failure, 0.0, scale, RTOL, "deterministic identity 2")


# ------------------------------------------------------------ extreme numerics
def _needle_closed_form(log_eps, beta, bad_log_masses=None, bad_rewards=None):
    """V* and log π*(optimal response) when π_ref(optimal) = ε (reward 1) and the rest of
    the mass (1 − ε) sits on responses with reward 0 (default) or the given rewards."""
    if bad_log_masses is None:
        terms = [log_eps + 1.0 / beta, math.log1p(-math.exp(log_eps))]
    else:
        terms = [log_eps + 1.0 / beta] + [m + r / beta for m, r in zip(bad_log_masses, bad_rewards)]
    log_z = np.logaddexp.reduce(terms)
    return beta * log_z, log_eps + 1.0 / beta - log_z


@pytest.mark.parametrize("beta", [1e-3, 1e-2, 0.1, 1.0])
def test_two_arm_needle_closed_form(beta):
    """ε = e^{−1/(2β)} (e^{−500} at β = 1e-3): V* = β logaddexp(1/(2β), log(1 − ε));
    π_ref has E r = ε, so regret(π_ref) = V* − ε."""
    mdp = envs.two_arm_needle(beta)
    log_eps = -1.0 / (2.0 * beta)
    v, logp_good = _needle_closed_form(log_eps, beta)
    sol = xpo_sim.solve_soft(mdp, beta)
    assert np.all(np.isfinite(sol.logp)) and np.isfinite(sol.value)
    assert_close(sol.v[0], v, 1.0, RTOL, "V*")
    # log π* is compared at scale β·|log π|: rounding of log π*(bad) ≈ −1/(2β) is relative.
    assert_close(beta * sol.logp[0, 0], beta * logp_good, 1.0, RTOL, "log π*(good)")
    logp_bad = math.log1p(-math.exp(log_eps)) - v / beta
    assert_close(beta * sol.logp[0, 1], beta * logp_bad, 1.0, RTOL, "log π*(bad)")
    evaluation = xpo_sim.evaluate(mdp, sol.logp, beta)
    assert_close(evaluation.value, v, 1.0, RTOL, "J(π*)")
    assert_close(xpo_sim.regret(mdp, mdp.ref_logp, beta, solution=sol), v - math.exp(log_eps), 1.0, RTOL,
                 "regret(π_ref)")


@pytest.mark.parametrize("beta", [1e-3, 1e-2, 0.1, 1.0])
@pytest.mark.parametrize("n_responses,n_prompts,bad_reward", [(2, 1, 0.0), (5, 3, 0.0), (4, 2, (-0.5, 0.75))])
def test_bandit_needle_eps_1e_300(beta, n_responses, n_prompts, bad_reward):
    """π_ref(good) = 1e-300: at β = 1e-3 the good response dominates (log ε + 1/β ≈ 309),
    at β = 1e-2 it stays invisible (≈ −591); both must be finite and exact."""
    eps = 1e-300
    mdp = envs.bandit_needle(n_responses, eps, n_prompts=n_prompts, bad_reward=bad_reward, seed=7)
    sol = xpo_sim.solve_soft(mdp, beta)
    assert np.all(np.isfinite(sol.logp)) and np.all(np.isfinite(sol.v))
    log_bad = math.log1p(-eps) - math.log(n_responses - 1)
    for x, good in enumerate(mdp.info["optimal_actions"]):
        bad = [a for a in range(n_responses) if a != good]
        assert mdp.reward[x, good] == 1.0
        if np.ndim(bad_reward) == 0:
            bad_r = [float(bad_reward)] * len(bad)
        else:  # graded rewards: the values linspace(low, high) in a random order
            assert np.array_equal(np.sort(mdp.reward[x, bad]), np.linspace(*bad_reward, len(bad)))
            bad_r = [float(r) for r in mdp.reward[x, bad]]
        v, logp_good = _needle_closed_form(math.log(eps), beta, [log_bad] * len(bad), bad_r)
        assert_close(sol.v[x], v, 1.0, RTOL, "V*")
        assert_close(beta * sol.logp[x, good], beta * logp_good, 1.0, RTOL, "log π*(good)")
        assert_close(beta * sol.logp[x, bad], [beta * (log_bad + r / beta) - v for r in bad_r], 1.0, RTOL,
                     "log π*(bad)")


@pytest.mark.parametrize("beta", [1e-3, 1e-2, 0.1])
@pytest.mark.parametrize("vocab,horizon,n_prompts", [(2, 1, 1), (2, 3, 2), (3, 2, 1), (2, 4, 1)])
def test_token_needle_eps_1e_300(beta, vocab, horizon, n_prompts):
    """Token tree with π_ref(optimal response) = 1e-300 (ε^{1/H} per token) and every other
    response rewarded 0: the state at depth d on the optimal path sees the needle with mass
    ε^{(H−d)/H}, so V*(path_d) = β logaddexp(log ε·(H−d)/H + 1/β, log(1 − ε^{(H−d)/H})); off
    the path V* = 0; log π*(optimal response) = log ε + 1/β − V*(root)/β."""
    eps = 1e-300
    mdp = envs.token_needle(vocab, horizon, eps, n_prompts=n_prompts, seed=3)
    sol = xpo_sim.solve_soft(mdp, beta)
    assert np.all(np.isfinite(sol.v)) and np.all(np.isfinite(sol.logp[mdp.allowed]))
    path_states = mdp.info["optimal_path_states"]
    path = mdp.info["optimal_path"]
    on_path = np.zeros(mdp.n_states, dtype=bool)
    on_path[path_states.ravel()] = True
    # Off-path subtrees: all rewards 0, so V* = β log Σ π_ref = 0 up to rounding of Σ π_ref.
    assert_close(sol.v[~on_path], 0.0, 1.0, RTOL, "V* off path")
    for p in range(n_prompts):
        for d in range(horizon):
            log_mass = math.log(eps) * (horizon - d) / horizon
            v, _ = _needle_closed_form(log_mass, beta)
            assert_close(sol.v[path_states[p, d]], v, 1.0, RTOL, f"V* at depth {d}")
        _, logp_opt = _needle_closed_form(math.log(eps), beta)
        total = sum(sol.logp[path_states[p, d], path[p, d]] for d in range(horizon))
        assert_close(beta * total, beta * logp_opt, 1.0, RTOL, "log π*(optimal response)")
    assert_close(sol.value, float(np.mean([sol.v[path_states[p, 0]] for p in range(n_prompts)])), 1.0, RTOL,
                 "J(π*)")
