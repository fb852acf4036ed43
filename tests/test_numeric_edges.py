r"""Numerical edge cases of the exact core: extreme β, extreme rewards, and a regret that can
never come out negative.

Reference values come from an oracle in this file that is independent of every kernel:
trajectory-level enumeration (``naive.trajectories``) evaluated in Python ``decimal``
arithmetic with enough digits that nothing cancels:

    J*      = Σ_{s0} ρ(s0) β ln Σ_τ π_ref(τ) e^{r(τ)/β}
    E_ref r = Σ_{s0} ρ(s0) Σ_τ π_ref(τ) r(τ)
    regret(π_ref) = J* − E_ref r            (computed in decimal, so no cancellation)

with π_ref(τ) the product of the per-state reference probabilities, each row normalized in
decimal (the float64 rows sum to 1 only to rounding; at β = 1e100 a row that sums to
1 + 1e-16 would add β·1e-16 = 1e84 to β ln Σ — the solver treats π_ref as the
distribution it stands for, and so does the oracle).

Precision: e^{r/β} = 1 + r/β + (r/β)²/2 + … ; to resolve the β⁻¹ term of the regret
(Var_ref r / (2β)) to 30 digits at β = 10^k we need about 2k + 40 significant digits.

Tolerances (derivations next to each test): the float64 results are sums of a few dozen
correctly rounded terms, so their rounding error is a few hundred ε ≈ 1e-13 relative to the
magnitudes involved; we allow 1e-12 (J*) and state the regret's separately.
"""

from __future__ import annotations

import math
import sys
from decimal import Decimal, localcontext

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import naive
import xpo_sim
from strategies import betas, mdps, policies
from xpo_sim import checks, envs
from xpo_sim.metrics import policy_regret

EPS = np.finfo(float).eps
LARGE_BETAS = [1e3, 1e8, 1e14, 1e16, 1e20, 1e100]


# --------------------------------------------------------------------------- oracle
def decimal_oracle(mdp, beta, digits=None):
    """(J*, E_ref r, regret(π_ref)) as Decimals, by enumeration in decimal arithmetic."""
    exponent = max(0, math.ceil(math.log10(beta))) if beta >= 1 else 0
    digits = digits or 2 * exponent + 60
    with localcontext() as ctx:
        ctx.prec = digits
        ref = [[Decimal(float(x)) for x in row] for row in mdp.ref_logp]
        probs = []
        for row in ref:
            weights = [x.exp() if x.is_finite() else Decimal(0) for x in row]
            total = sum(weights)
            probs.append([w / total for w in weights])
        reward = [[Decimal(float(x)) for x in row] for row in mdp.reward]
        b = Decimal(beta)
        j_star = Decimal(0)
        exp_r = Decimal(0)
        by_start = {}
        for tau in naive.trajectories(mdp):
            by_start.setdefault(tau[0][0], []).append(tau)
        for s0, taus in by_start.items():
            rho = Decimal(float(mdp.start[s0]))
            z = Decimal(0)
            mean = Decimal(0)
            # shift by the largest reward so e^{(r − r_max)/β} ≤ 1 (small β)
            rs = [sum((reward[s][a] for s, a in tau), Decimal(0)) for tau in taus]
            r_max = max(rs)
            for tau, r in zip(taus, rs):
                p = Decimal(1)
                for s, a in tau:
                    p *= probs[s][a]
                z += p * ((r - r_max) / b).exp()
                mean += p * r
            j_star += rho * (r_max + b * z.ln())
            exp_r += rho * mean
        return +j_star, +exp_r, +(j_star - exp_r)


def reward_scale(mdp):
    """The largest Σ_h |r(s_h, a_h)| over π_ref's trajectories (float)."""
    reward = np.abs(mdp.reward).tolist()
    return max(naive.path_sum(reward, tau) for tau in naive.trajectories(mdp))


# ----------------------------------------------------------- defect 3: large β
@pytest.mark.parametrize("beta", LARGE_BETAS)
def test_large_beta_value_and_reference_regret_token_tree(beta):
    """The probe's instance, envs.token_tree(3, 2): J* and regret(π_ref) against the decimal
    oracle. J* → E_ref r = 0.380 (not 0); regret(π_ref) ≈ Var_ref(r)/(2β) > 0 (it was
    −0.0028 at β = 1e14).

    Tolerance: J* to 1e-13 relative (a handful of roundings of terms of size ≤ 1). The
    regret is a sum of non-negative terms β·π·g(t), g(t) = t − 1 + e^{−t}, each with
    relative error ~ε·|Q|/|V − Q| (Q and V rounded to ε) — 1e-10 relative is a margin of
    ~10⁴ over that for this instance (gaps |V − Q| ≥ 0.01)."""
    mdp = envs.token_tree(3, 2)
    j_star, exp_r, ref_regret = decimal_oracle(mdp, beta)
    sol = xpo_sim.solve_soft(mdp, beta)
    assert abs(sol.value - float(j_star)) <= 1e-13 * abs(float(j_star)), (sol.value, j_star)
    got = xpo_sim.regret(mdp, mdp.ref_logp, beta)
    assert got >= 0.0
    assert abs(got - float(ref_regret)) <= 1e-10 * float(ref_regret), (got, ref_regret)
    assert policy_regret(mdp, mdp.ref_logp, sol) == got
    # the per-state values are exact too: V*(prompt) = J* here (one prompt)
    assert abs(sol.v[mdp.start_states[0]] - float(j_star)) <= 1e-13 * abs(float(j_star))
    # π* → π_ref and stays normalized
    np.testing.assert_allclose(np.exp(sol.logp).sum(axis=1), 1.0, rtol=0, atol=1e-14)


def test_large_beta_asymptotics_token_tree():
    """Cross-check of the oracle by the cumulant expansion J* = E r + Var r/(2β) + O(β⁻²):
    at β = 1e20 regret(π_ref)·2β equals Var_ref(r) to ~1e-18 relative."""
    mdp = envs.token_tree(3, 2)
    taus = naive.trajectories(mdp)
    ref_logp, reward = mdp.ref_logp, mdp.reward
    p = np.array([math.exp(naive.path_sum(ref_logp, t)) for t in taus])
    r = np.array([naive.path_sum(reward, t) for t in taus])
    mean = math.fsum(p * r) / math.fsum(p)
    var = math.fsum(p * (r - mean) ** 2) / math.fsum(p)
    beta = 1e20
    got = xpo_sim.regret(mdp, mdp.ref_logp, beta)
    assert abs(got * 2 * beta - var) <= 1e-10 * var, (got * 2 * beta, var)
    assert abs(xpo_sim.solve_soft(mdp, beta).value - mean) <= 1e-14


@settings(max_examples=30)
@given(mdp=mdps(), beta=st.sampled_from([1e3, 1e8, 1e14, 1e16, 1e20, 1e100, 1e300]))
def test_large_beta_random_instances(mdp, beta):
    """Random trees/DAGs at large β: J* to 1e-13 of the reward scale; regret(π_ref) ≥ 0 and
    equal to the oracle's to 1e-9 relative plus a floor 1e-13·S²·H/β (S = the largest
    Σ|r| of a trajectory, H the horizon): each t = (V* − Q*)/β carries an error δt ~ ε·S/β
    from the rounding of V* and Q*, and a term β·π·g(t) ≈ β·π·t²/2 then errs by
    ≲ β·π·(|t|·δt + δt²) ≤ 2ε·S²/β per step (|t| ≤ 2S/β). The 1e-40 absolute floor is
    the oracle's own rounding at 60+ digits (its row normalization)."""
    j_star, _, ref_regret = decimal_oracle(mdp, beta)
    scale = max(reward_scale(mdp), 1e-300)
    sol = xpo_sim.solve_soft(mdp, beta)
    assert abs(sol.value - float(j_star)) <= 1e-13 * scale + 1e-40
    got = policy_regret(mdp, mdp.ref_logp, sol)
    assert got >= 0.0
    floor = 1e-13 * scale**2 / beta * mdp.horizon + 1e-40
    assert abs(got - float(ref_regret)) <= 1e-9 * float(ref_regret) + floor, (got, ref_regret)


@settings(max_examples=40)
@given(mdp=mdps(), log_beta=st.floats(math.log(1e-3), math.log(1e300)))
def test_value_matches_decimal_oracle_at_every_beta(mdp, log_beta):
    """β log-uniform over [1e-3, 1e300] crosses all three per-state forms of the sweep
    (log-sum-exp for spread/β > 1, log1p/expm1 down to 2^-27, cumulant expansion below) and
    their switching points: J* within 1e-13 of the reward scale S (a few hundred ε; the
    forms themselves are within ~(|log π_ref| + log A)·ε), and π* normalized."""
    beta = math.exp(log_beta)
    j_star, _, _ = decimal_oracle(mdp, beta)
    scale = reward_scale(mdp)
    sol = xpo_sim.solve_soft(mdp, beta)
    assert abs(sol.value - float(j_star)) <= 1e-13 * scale + 1e-40, (sol.value, j_star)
    mass = np.exp(sol.logp).sum(axis=1)
    assert np.abs(mass - 1.0).max() <= 1e-13


def test_solve_demo_large_beta(capsys):
    """``experiments/solve_demo.py --beta 1e20`` printed regret 44408.9; the regret is
    ≈ Var/(2β) ~ 1e-24 and V* ≈ E_ref r = ε = 1e-3."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "experiments" / "solve_demo.py"
    spec = importlib.util.spec_from_file_location("solve_demo", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--beta", "1e20", "--vocab", "3", "--horizon", "2", "--eps", "0.01"]) == 0
    out = capsys.readouterr().out
    values = dict(line.split(None, 1) for line in out.splitlines() if line.strip())
    regret = float(values["regret"].split()[0])
    v_star = float(values["V*(prompt)"].split()[0])
    assert 0.0 <= regret <= 1e-20
    assert abs(v_star - 0.01) <= 1e-15


# ------------------------------------------------- defect 4: tiny β, huge rewards
def test_beta_bounds_both_sides():
    """checks.beta accepts exactly [BETA_MIN, BETA_MAX]: the bounds themselves pass, the
    next float outside raises a ValueError naming the argument; a subnormal β (1/β
    overflows) is rejected."""
    for ok in (checks.BETA_MIN, checks.BETA_MAX):
        assert checks.beta(ok) == ok
    for bad in (np.nextafter(checks.BETA_MIN, 0.0), np.nextafter(checks.BETA_MAX, np.inf), 1e-310, 5e-324):
        with pytest.raises(ValueError, match="beta"):
            checks.beta(float(bad))
    mdp = envs.token_tree(3, 2)
    with pytest.raises(ValueError, match="beta"):
        xpo_sim.solve_soft(mdp, 1e-310)
    with pytest.raises(ValueError, match="beta"):
        xpo_sim.regret(mdp, mdp.ref_logp, 1e-310)
    assert np.isfinite(1.0 / checks.BETA_MIN)


@pytest.mark.parametrize("reward_size", [1.0, 1e9, 1e100, 1e300])
def test_smallest_beta_is_exact(reward_size):
    """At β = BETA_MIN the optimum is the hard maximum: J* = E_ρ max_τ r(τ) exactly (V* =
    m + β·L with |β·L| ≤ β·(|log π_ref| + log A) far below an ulp of m) and π* puts all its
    mass on the argmax. Rewards up to 1e300 (r/β overflows float64: it must not matter)."""
    mdp0 = envs.token_tree(3, 2)
    rng = np.random.default_rng(1)
    reward = np.where(mdp0.next_state < 0, rng.uniform(-1, 1, mdp0.reward.shape), 0.0) * reward_size
    mdp = xpo_sim.TokenMDP(mdp0.next_state, reward, mdp0.ref_logp, mdp0.start)
    beta = checks.BETA_MIN
    sol = xpo_sim.solve_soft(mdp, beta)
    taus = naive.trajectories(mdp)
    best = max(naive.path_sum(mdp.reward.tolist(), t) for t in taus)
    assert sol.value == best
    assert not np.isnan(sol.logp).any() and not np.isnan(sol.q).any()
    assert xpo_sim.optimal_mass(mdp, sol.logp) == 1.0
    np.testing.assert_array_equal(np.exp(sol.logp).sum(axis=1), 1.0)
    # regret of π_ref is J* − E_ref r, finite and ≥ 0
    got = xpo_sim.regret(mdp, mdp.ref_logp, beta)
    exp_r = xpo_sim.evaluate(mdp, mdp.ref_logp, beta).reward
    assert got >= 0.0 and math.isfinite(got)
    assert abs(got - (best - exp_r)) <= 1e-14 * reward_size


def test_largest_beta_is_exact():
    """At β = BETA_MAX, J* = E_ref r and regret(π_ref) = Var/(2β) (decimal oracle)."""
    mdp = envs.token_tree(3, 2)
    j_star, _, ref_regret = decimal_oracle(mdp, checks.BETA_MAX)
    sol = xpo_sim.solve_soft(mdp, checks.BETA_MAX)
    assert abs(sol.value - float(j_star)) <= 1e-14
    got = policy_regret(mdp, mdp.ref_logp, sol)
    assert abs(got - float(ref_regret)) <= 1e-9 * float(ref_regret)


def two_step_chain(r0, r1):
    """s0 --(r0)--> s1 --(r1)--> end, one token each."""
    return dict(next_state=[[1], [-1]], reward=[[r0], [r1]], ref_logp=[[0.0], [0.0]], start=[1.0, 0.0])


def test_overflowing_path_sum_is_rejected():
    """Rewards 1e308 on a two-step chain: each is finite but the path sum is inf — the
    constructor raises a ValueError naming ``reward`` (before: J* = inf and NaNs)."""
    with pytest.raises(ValueError, match="reward"):
        xpo_sim.TokenMDP(**two_step_chain(1e308, 1e308))
    with pytest.raises(ValueError, match="reward"):
        xpo_sim.TokenMDP(**two_step_chain(-1e308, -1e308))
    # the bound counts |r| along every path, tokens π_ref disallows included (their Q is
    # computed too)
    with pytest.raises(ValueError, match="reward"):
        xpo_sim.TokenMDP([[1, -1], [-1, -1]], [[1e308, 0.0], [1e308, 0.0]],
                         [[-np.inf, 0.0], [0.0, -np.inf]], [1.0, 0.0])


def test_reward_bound_both_sides():
    """A path sum exactly at the bound (2^1022) is accepted and everything stays finite;
    the next float above is rejected."""
    limit = xpo_sim.mdp.MAX_ABS_PATH_REWARD
    assert limit == 2.0**1022
    ok = xpo_sim.TokenMDP(**two_step_chain(limit / 2, limit / 2))
    sol = xpo_sim.solve_soft(ok, 1.0)
    assert sol.value == limit
    assert xpo_sim.regret(ok, ok.ref_logp, 1.0) == 0.0
    ulp = np.nextafter(limit, np.inf) - limit  # 2^970
    with pytest.raises(ValueError, match="reward"):
        xpo_sim.TokenMDP(**two_step_chain(limit, ulp))  # path sum = the next float above
    assert xpo_sim.TokenMDP(**two_step_chain(limit - ulp, ulp)).reward.sum() == limit
    # mixed signs: |−limit/2| + |limit/2| counts, so differences V − Q stay finite
    bandit = xpo_sim.TokenMDP([[-1, -1]], [[limit, -limit]], np.log([[0.5, 0.5]]), [1.0])
    for beta in (1e-300, 1.0, 1e300):
        sol = xpo_sim.solve_soft(bandit, beta)
        assert np.isfinite(sol.value) and not np.isnan(sol.logp).any()
        assert xpo_sim.regret(bandit, bandit.ref_logp, beta) >= 0.0


# -------------------------------------------- defect 12: regret as a sum of KLs
@given(data=st.data())
def test_policy_regret_is_the_value_gap(data):
    """policy_regret(π) = β Σ_s d^π(s) KL(π(·|s) ‖ π*(·|s)) equals J*(π*) − J(π) (the
    performance-difference identity for deterministic MDPs) and the trajectory-level
    β·KL(π‖π*) by enumeration; it is ≥ 0, and ≈ 0 for π*.

    Tolerance: as in test_identities (rtol 1e-9 of the magnitudes involved)."""
    mdp = data.draw(mdps(), label="mdp")
    beta = data.draw(betas, label="beta")
    logp = data.draw(policies(mdp), label="logp")
    sol = xpo_sim.solve_soft(mdp, beta)
    got = policy_regret(mdp, logp, sol)
    ev = xpo_sim.evaluate(mdp, logp, beta)
    scale = abs(sol.value) + abs(ev.reward) + beta * ev.kl
    assert got >= 0.0
    assert abs(got - (sol.value - ev.value)) <= 1e-9 * (1 + scale)
    assert abs(got - beta * naive.kl_to_optimum(mdp, logp, beta)) <= 1e-9 * (1 + scale)
    assert got == xpo_sim.regret(mdp, logp, beta) == xpo_sim.regret(mdp, logp, beta, solution=sol)
    # π*: its stored log-probabilities are rounded, and so are V* and Q*, so t = log π − log π*
    # is a rounding error δt ~ ε·(|log π*| + |log π_ref| + (|V*| + |Q*|)/β) rather than 0,
    # and each state adds β·δt²/2: zero to ~ε² of the values
    a = mdp.allowed
    dt = EPS * (1 + np.abs(sol.logp[a]).max() + np.abs(mdp.ref_logp[a]).max()
                + (np.abs(sol.v).max() + np.abs(sol.q[a]).max()) / beta)
    star = policy_regret(mdp, sol.logp, sol)
    assert 0.0 <= star <= 100 * beta * dt**2 * mdp.horizon


def test_policy_regret_positive_where_the_difference_is_negative():
    """Large rewards (1e6) and policies a hair from π* (π* itself, and π* tilted by
    1e-7 … 3e-6 in one logit): J* − J(π) loses everything to the rounding of J* ≈ 1e6
    (ε·1e6 ≈ 1e-10, larger than the true regret ≤ 1e-12) and comes out negative for some of
    them; policy_regret stays ≥ 0 and matches a decimal computation of β·KL(π‖π*).

    Tolerance: V* is a float, rounded by η ≈ ε·|V*| ≈ 1e-10; the KL form is stationary in
    V* (first-order error 0), so the error is ≈ η²/(2β) ≈ 1e-20 — 10·η²/β plus 1e-6 of the
    regret covers it (the old difference errs by η itself)."""
    beta = 2.0
    rewards = 1e6 + np.array([0.0, 0.5, 1.0, 1.5])
    ref = np.log(np.full((1, 4), 0.25))
    mdp = xpo_sim.TokenMDP([[-1, -1, -1, -1]], rewards[None, :], ref, [1.0])
    sol = xpo_sim.solve_soft(mdp, beta)
    eta = EPS * abs(sol.value)
    olds = []
    for tilt in (0.0, 1e-7, 3e-7, 1e-6, 3e-6):
        logits = sol.logp[0] + np.array([tilt, 0.0, 0.0, 0.0])
        logp = (logits - np.log(np.exp(logits).sum()))[None, :]
        olds.append(sol.value - xpo_sim.evaluate(mdp, logp, beta).value)
        new = policy_regret(mdp, logp, sol)
        # decimal reference: β Σ_a π(a) (log π(a) − log π*(a)), π* the exact softmax, π the
        # float table normalized in decimal (it sums to 1 only within ~1e-16, and the plain
        # KL of an unnormalized row is off by that much: more than the regret here)
        with localcontext() as ctx:
            ctx.prec = 60
            w = [Decimal(float(x)).exp() * ((Decimal(float(r)) - Decimal(10**6)) / Decimal(beta)).exp()
                 for x, r in zip(ref[0], rewards)]
            z = sum(w)
            pi = [Decimal(float(lp)).exp() for lp in logp[0]]
            mass = sum(pi)
            pi = [x / mass for x in pi]
            kl = sum(x * (x.ln() - (wi / z).ln()) for x, wi in zip(pi, w))
            expected = float(Decimal(beta) * kl)
        assert new >= 0.0
        assert abs(new - expected) <= 1e-6 * expected + 10 * eta**2 / beta, (tilt, new, expected)
    assert min(olds) < 0, f"the value difference should have come out negative for some tilt: {olds}"


def test_policy_regret_checks_its_arguments():
    mdp = envs.token_tree(3, 2)
    sol = xpo_sim.solve_soft(mdp, 0.5)
    other = xpo_sim.solve_soft(envs.token_tree(2, 2), 0.5)
    with pytest.raises(ValueError, match="solution"):
        policy_regret(mdp, mdp.ref_logp, other)
    with pytest.raises(ValueError, match="logp"):
        policy_regret(mdp, mdp.ref_logp[:, :2], sol)
    bad = mdp.ref_logp.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="logp"):
        policy_regret(mdp, bad, sol)
    with pytest.raises(ValueError, match="beta"):
        xpo_sim.regret(mdp, mdp.ref_logp, 0.25, solution=sol)
    # mass on a token π_ref disallows: infinite regret, no NaN
    mdp2 = xpo_sim.TokenMDP([[1, -1], [-1, -1]], [[0.0, 0.0], [0.0, 0.0]],
                            [[math.log(0.5), math.log(0.5)], [0.0, -math.inf]], [1.0, 0.0])
    assert policy_regret(mdp2, np.log(np.full((2, 2), 0.5)), xpo_sim.solve_soft(mdp2, 1.0)) == math.inf


# ------------------------------------------------------------ the new kernels
def fast_expm1_array(x):
    from xpo_sim._kernels.fast_exp import expm1_into

    x = np.ascontiguousarray(x, dtype=np.float64)
    out = np.empty_like(x)
    expm1_into(x, out)
    return out


EXPM1_GRIDS = {
    "[-1, 1]": np.linspace(-1.0, 1.0, 400_001),
    "[-750, 0]": np.linspace(-750.0, 0.0, 400_001),
    "-logspace(-320, 3)": -np.logspace(-320, 3, 100_001),
    "logspace(-320, 2.85)": np.logspace(-320, np.log10(709.78), 100_001),
    "[-40, 40] random": np.random.default_rng(0).uniform(-40.0, 40.0, 200_000),
}


@pytest.mark.parametrize("name", list(EXPM1_GRIDS))
def test_fast_expm1_within_two_ulp(name):
    """fast_expm1 (used by the sweep where β is large) within 2 ulp of np.expm1, same sign;
    exact at the special values."""
    x = EXPM1_GRIDS[name]
    got, want = fast_expm1_array(x), np.expm1(x)
    assert np.array_equal(np.sign(got), np.sign(want))
    nonzero = want != 0
    assert np.array_equal(got[~nonzero], want[~nonzero])
    worst = np.abs(got[nonzero].view(np.int64) - want[nonzero].view(np.int64)).max()
    assert worst <= 2, f"{name}: {worst} ulp"


def test_fast_expm1_special_values():
    x = np.array([-np.inf, np.inf, np.nan, 0.0, -0.0, 5e-324, -5e-324, 1e-300, -1e-17, -37.5, -38.0,
                  -745.2, -1e308, 36.7, 709.782712893384, 709.7827128933841, 1e308])
    with np.errstate(over="ignore"):
        want = np.expm1(x)
    got = fast_expm1_array(x)
    np.testing.assert_array_equal(got, want)
    assert np.signbit(got[4]) and not np.signbit(got[3])


@given(mdp=mdps())
def test_max_abs_path_sum_kernel(mdp):
    """B(s) = max over paths from s through any tokens of Σ|r|, against a memoized recursion."""
    from functools import lru_cache

    ns, r = mdp.next_state.tolist(), np.abs(mdp.reward).tolist()

    @lru_cache(maxsize=None)
    def bound(s):
        return max(r[s][a] + (0.0 if ns[s][a] < 0 else bound(ns[s][a])) for a in range(len(ns[s])))

    out = np.empty(mdp.n_states)
    xpo_sim._kernels.soft.max_abs_path_sum(mdp.next_state, mdp.reward, out)
    np.testing.assert_allclose(out, [bound(s) for s in range(mdp.n_states)], rtol=1e-15, atol=0)


@given(data=st.data())
def test_regret_kernel_compiled_equals_py_func(data):
    """regret_backward compiled and as py_func agree (to the last few ulp: fastmath
    reassociation and fast_exp vs. its scalar twin), also with zero-mass and disallowed
    tokens."""
    from xpo_sim._kernels import soft as ksoft

    mdp = data.draw(mdps(), label="mdp")
    beta = data.draw(st.sampled_from([1e-3, 0.1, 1.0, 1e4, 1e20]), label="beta")
    logp = data.draw(policies(mdp, disallowed_mass=data.draw(st.booleans())), label="logp")
    sol = xpo_sim.solve_soft(mdp, beta)
    outs = []
    for fn in (ksoft.regret_backward, ksoft.regret_backward.py_func):
        out = np.empty(mdp.n_states)
        with np.errstate(all="ignore"):
            bad = fn(mdp.next_state, mdp.ref_logp, np.ascontiguousarray(logp), sol.q, sol.v, beta, 1e-6, out)
        assert bad == -1
        outs.append(out)
    assert not np.isnan(outs[0]).any() and (outs[0] >= 0).all()
    np.testing.assert_allclose(outs[0], outs[1], rtol=1e-12, atol=1e-300)


@settings(max_examples=40)
@given(mdp=mdps(), beta=betas, seed=st.integers(0, 2**32 - 1))
def test_rows_with_one_value_of_q_give_v_equal_to_it_and_pi_ref(mdp, beta, seed):
    """A reward table r(s, a) = c(s) − V*(s'(s, a)) makes Q* = c(s) on every token of s: the
    soft sweep's shortcut for rows whose Q* has a single value (width exactly 0) must give
    V* = c(s) and log π* = log π_ref to the bit, and agree with the recursive oracle."""
    rng = np.random.default_rng(seed)
    c = rng.uniform(-2.0, 2.0, mdp.n_states)
    # V* of this table is c itself (Q* is c(s) on every token, and Σ π_ref = 1), so the
    # reward that makes it so is c(s) − c(s'), with c(end) = 0
    following = np.where(mdp.next_state >= 0, c[np.maximum(mdp.next_state, 0)], 0.0)
    reward = c[:, None] - following
    flat = xpo_sim.TokenMDP(mdp.next_state, reward, mdp.ref_logp, mdp.start)
    sol = xpo_sim.solve_soft(flat, beta)
    constant_rows = [s for s in range(mdp.n_states)
                     if np.ptp(sol.q[s][mdp.ref_logp[s] > -np.inf]) == 0.0]
    assert constant_rows  # rounding of c(s) − c(s') + c(s') may break a few rows, not most
    for s in constant_rows:
        allowed = mdp.ref_logp[s] > -np.inf
        assert sol.v[s] == sol.q[s][allowed][0]
        np.testing.assert_array_equal(sol.logp[s][allowed], mdp.ref_logp[s][allowed])
    _, v_naive, _ = naive.soft_bellman(flat, beta)
    naive.assert_close(sol.v, v_naive, np.abs(c).max(), 1e-9, "V* of a table with constant rows")
