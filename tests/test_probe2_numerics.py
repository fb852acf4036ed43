"""Issue 20, probe 2: exact numbers at the edges of the documented β range (β ∈ [1e-300, 1e300])
and of ε.

Every expected value here comes from an independent computation in mpmath (arbitrary
precision and exponent range), never from the package's own output.
"""

from __future__ import annotations

import math

import mpmath
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import xpo_sim
from xpo_sim import envs


def _dps_for(beta: float) -> int:
    """Digits enough for β·log(1 + O(1/β)) − O(1) ~ 1/β² to keep 30 significant digits."""
    return int(40 + 3 * abs(math.log10(beta)))


def _two_arm_regret_of_ref(beta: float) -> mpmath.mpf:
    """J_β(π*) − J_β(π_ref) = β log(ε e^{1/β} + 1 − ε) − ε with ε = e^{−1/(2β)} (rewards 1, 0)."""
    with mpmath.workdps(_dps_for(beta)):
        b = mpmath.mpf(beta)
        eps = mpmath.exp(-1 / (2 * b))
        return +(b * mpmath.log(eps * mpmath.exp(1 / b) + 1 - eps) - eps)


# ------------------------------------------------------------------ two_arm_needle, large β
@pytest.mark.parametrize("beta", [0.1, 1.0, 1e3, 1e9, 1e12, 1e15, 1e16, 1e20, 1e100, 1e300])
def test_two_arm_needle_regret_of_ref_is_exact(beta):
    """regret(π_ref) was off by 8e-8 relative at β = 1e9 and 9e-5 at 1e12 (log1p(−exp(·))
    cancels), and β ≥ 1e16 raised "math domain error"."""
    mdp = envs.two_arm_needle(beta)
    exact = _two_arm_regret_of_ref(beta)
    got = xpo_sim.regret(mdp, mdp.ref_logp, beta)
    # at β = 1e300 the regret (1e-341) is below the smallest float: 0 is the right answer
    assert abs(mpmath.mpf(got) - exact) <= 1e-12 * max(exact, mpmath.mpf(2.2250738585072014e-308))


@settings(max_examples=40)
@given(st.floats(math.log(1e6), math.log(1e300)).map(math.exp))
def test_two_arm_needle_ref_policy_is_exact_at_large_beta(beta):
    """log π_ref(bad) = log(1 − e^{−1/(2β)}) to a few ulp, and the regret of π_ref exact."""
    mdp = envs.two_arm_needle(beta)
    with mpmath.workdps(_dps_for(beta)):
        exact_bad = mpmath.log(-mpmath.expm1(-1 / (2 * mpmath.mpf(beta))))
    assert abs(mpmath.mpf(mdp.ref_logp[0, 1]) - exact_bad) <= 4e-16 * abs(exact_bad)
    exact = _two_arm_regret_of_ref(beta)
    # relative precision down to the smallest normal float (below it the result is subnormal)
    error = abs(mpmath.mpf(xpo_sim.regret(mdp, mdp.ref_logp, beta)) - exact)
    assert error <= 1e-12 * max(exact, mpmath.mpf(2.2250738585072014e-308))


# ---------------------------------------------------------------- token_needle, ε near 1
@pytest.mark.parametrize("vocab, horizon", [(2, 16), (5, 3), (3, 8)])
@pytest.mark.parametrize("eps", [1 - 1e-12, 1 - 1e-15, 1 - 1e-9, 0.9, 0.5, 1e-3, 1e-200])
def test_token_needle_off_path_log_ref_is_exact(vocab, horizon, eps):
    """Off the path token, log π_ref = log((1 − ε^{1/H})/(V − 1)); with ε = 1 − 1e-12 it
    was wrong by 4e-6 relative (log1p(−exp(·)) cancels)."""
    mdp = envs.token_needle(vocab, horizon, eps=eps)
    state = mdp.info["optimal_path_states"][0, 0]
    token = (mdp.info["optimal_path"][0, 0] + 1) % vocab
    with mpmath.workdps(60):
        step = mpmath.log(mpmath.mpf(eps)) / horizon
        exact = mpmath.log(-mpmath.expm1(step)) - mpmath.log(vocab - 1)
    got = mdp.ref_logp[state, token]
    assert abs(mpmath.mpf(got) - exact) <= 1e-14 * abs(exact)


# ------------------------------------------------------------------- coverability, small β
def _exact_implicit_coverability(mdp, beta, lo, hi):
    """C_cov of the implicit class (one parameter per allowed terminal token, box [lo, hi]),
    by brute force in mpmath: for every response τ, the maximizer puts hi on τ's own
    parameters and lo on the others (dominance), and π_θ(τ|x) is the soft-optimal policy of
    that reward table, from the plain soft Bellman recursion."""
    S, A = mdp.n_states, mdp.n_actions
    terminal = (mdp.next_state < 0) & mdp.allowed
    with mpmath.workdps(50):
        b = mpmath.mpf(beta)

        def log_prob(path):
            on = {(s, a) for s, a in path}
            reward = [[(hi if (s, a) in on else lo) if terminal[s, a] else 0.0 for a in range(A)]
                      for s in range(S)]
            # V(s) = m + β log Σ_a π_ref(a|s) e^{(Q(s,a) − m)/β}, m = max_a Q(s, a); the Q are
            # sums of a few floats, exact at 50 digits, so (Q − m)/β is exact too
            v = [mpmath.mpf(0)] * S
            log_pi = {}
            for s in range(S - 1, -1, -1):
                q = {}
                for a in range(A):
                    if mdp.allowed[s, a]:
                        nxt = int(mdp.next_state[s, a])
                        q[a] = mpmath.mpf(reward[s][a]) + (v[nxt] if nxt >= 0 else 0)
                m = max(q.values())
                x = {a: mpmath.mpf(float(mdp.ref_logp[s, a])) + (q[a] - m) / b for a in q}
                top = max(x.values())
                lse = top + mpmath.log(mpmath.fsum(mpmath.exp(t - top) for t in x.values()))
                v[s] = m + b * lse
                for a in q:
                    log_pi[s, a] = x[a] - lse
            return mpmath.fsum(log_pi[s, a] for s, a in path)

        batch = mdp.trajectories()
        per_prompt = {}
        for i, n in enumerate(batch.lengths):
            path = [(int(s), int(a)) for s, a in zip(batch.states[i, :n], batch.actions[i, :n])]
            per_prompt[path[0][0]] = per_prompt.get(path[0][0], 0) + mpmath.exp(log_prob(path))
        return max(per_prompt.values())


@pytest.mark.parametrize("make", [lambda: envs.bandit(4), lambda: envs.token_tree(3, 2)], ids=["bandit4", "tree32"])
@pytest.mark.parametrize("beta", [1e300, 1e3, 1.0, 0.3, 1e-3, 1e-6, 1e-8, 1e-12, 1e-16, 1e-17, 1e-30, 1e-300])
def test_coverability_is_exact_across_beta(make, beta):
    """Raised "this is a bug" for β = 1e-8 … 1e-16 and returned 1.0 for β ≤ 1e-17 (the
    right value is 4 for bandit(4), 9 for token_tree(3, 2))."""
    mdp = make()
    exact = _exact_implicit_coverability(mdp, beta, 0.0, 1.0)
    got = xpo_sim.coverability(mdp, beta, box=(0.0, 1.0))
    assert abs(mpmath.mpf(got) - exact) <= 1e-12 * exact


def test_coverability_small_beta_counts_every_response():
    assert xpo_sim.coverability(envs.bandit(4), 1e-17) == 4.0
    assert xpo_sim.coverability(envs.token_tree(3, 2), 1e-300) == 9.0


@settings(max_examples=25)
@given(beta=st.floats(math.log(1e-300), math.log(1e3)).map(math.exp), seed=st.integers(0, 2**16))
def test_coverability_matches_brute_force_for_random_instances(beta, seed):
    mdp = envs.token_tree(2, 2, seed=seed)
    exact = _exact_implicit_coverability(mdp, beta, -0.5, 1.0)
    got = xpo_sim.coverability(mdp, beta, box=(-0.5, 1.0))
    assert abs(mpmath.mpf(got) - exact) <= 1e-12 * exact


# -------------------------------------------------------------- Newton solver, small β
@pytest.mark.parametrize("policy", ["implicit", "linear"])
def test_exact_update_runs_down_to_beta_min(policy):
    """run(bandit(4), HybridDPO(), 1e-200, 3) raised ZeroDivisionError in the Newton
    solver's Hessian diagonal (β² underflows below ~1e-162). Below that the run must give
    the same numbers up to the factor β: at small β every quantity of a run of DPO scales
    with β (π* is the arg max, the fit is scale-free in r̂/β·β), so regret/β agrees across
    β = 1e-100 … 1e-300."""
    mdp = envs.bandit(4) if policy == "implicit" else envs.feature_bandit(8, 3, 0.1)
    regrets = {}
    for beta in (1e-100, 1e-160, 1e-170, 1e-200, 1e-300):
        frame = xpo_sim.run(mdp, xpo_sim.HybridDPO(), beta, 3, seed=0, policy=policy)
        assert frame["converged"].all()
        regrets[beta] = frame["regret"].to_numpy()
        assert np.isfinite(regrets[beta]).all() and (regrets[beta] >= 0).all()
    # each round's regret is either a reward gap (π on a wrong response: the same at every
    # small β) or of order β (π at π*, β·KL): the same run up to that factor
    base = regrets[1e-100]
    for beta, regret in regrets.items():
        same = np.isclose(regret, base, rtol=1e-9, atol=0)
        scaled = np.isclose(regret / beta, base / 1e-100, rtol=1e-9, atol=0)
        assert (same | scaled).all(), (beta, regret, base)
