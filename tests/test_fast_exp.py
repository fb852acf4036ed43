r"""The vectorizable ``fast_exp`` of ``xpo_sim._kernels.fast_exp`` against ``np.exp``, the
sweeps that use it, and the ``out=`` arrays of ``solve_soft`` / ``evaluate``.

Accuracy: within 2 ulp of ``np.exp`` (1 ulp is what it reaches) on dense grids covering
every range the sweeps use (x ≤ 0 after the max shift, log-probabilities) and the rest of
the float64 range, and exactly ``np.exp``'s value at −inf, +inf, nan, ±0, underflow,
subnormal results and overflow.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given

import xpo_sim
from strategies import betas, mdps
from xpo_sim._kernels import soft as ksoft
from xpo_sim._kernels.fast_exp import exp_into, fast_exp

MAX_ULP = 2


def ulp_distance(got, want):
    """|got − want| in units in the last place (both finite and > 0, same sign)."""
    return np.abs(got.view(np.int64) - want.view(np.int64))


def fast(x):
    x = np.ascontiguousarray(x, dtype=np.float64)
    out = np.empty_like(x)
    exp_into(x, out)
    return out


GRIDS = {
    "[-750, 0] (after the max shift)": np.linspace(-750.0, 0.0, 4_000_001),
    "[-1, 0]": np.linspace(-1.0, 0.0, 1_000_001),
    "-logspace(-320, 3)": -np.logspace(-320, 3, 400_001),
    "[-40, 0] random": np.random.default_rng(0).uniform(-40.0, 0.0, 1_000_000),
    "[0, 709.78]": np.linspace(0.0, 709.78, 1_000_001),
    "logspace(-320, 2.85)": np.logspace(-320, np.log10(709.78), 400_001),
}


@pytest.mark.parametrize("name", list(GRIDS))
def test_fast_exp_within_two_ulp(name):
    x = GRIDS[name]
    got, want = fast(x), np.exp(x)
    normal = want > 0  # zeros (underflow) are compared exactly below
    assert np.array_equal(got[~normal], want[~normal])
    worst = ulp_distance(got[normal], want[normal]).max()
    assert worst <= MAX_ULP, f"{name}: {worst} ulp"


def test_fast_exp_edge_cases_exact():
    x = np.array([-np.inf, np.inf, np.nan, 0.0, -0.0, 5e-324, -5e-324, -1e-300, 1e-17,
                  -708.3964185322641, -708.4, -720.0, -745.0, -745.1332191019411,
                  -745.1332191019412, -745.2, -746.0, -1e4, -1e308, -np.finfo(float).max,
                  709.782712893384, 709.7827128933841, 709.5, 710.0, 1e308])
    with np.errstate(over="ignore"):
        want = np.exp(x)
    got = fast(x)
    assert np.array_equal(np.isnan(got), np.isnan(want))
    finite = np.isfinite(want) & (want > 0)
    assert np.array_equal(got[~finite & ~np.isnan(want)], want[~finite & ~np.isnan(want)])
    assert ulp_distance(got[finite], want[finite]).max() <= MAX_ULP
    assert fast(np.array([-np.inf]))[0] == 0.0 and fast(np.array([0.0]))[0] == 1.0
    # subnormal results round once (no double rounding through a normal intermediate)
    sub = np.linspace(-745.13, -708.4, 100_001)
    assert ulp_distance(fast(sub), np.exp(sub)).max() <= MAX_ULP


def test_fast_exp_scalar_and_py_func():
    for x in (-np.inf, -700.0, -3.5, -1e-9, 0.0, 1.0, 700.0):
        with np.errstate(over="ignore"):
            want = np.exp(x)
        assert abs(fast_exp(x) - want) <= 2 * np.spacing(want) or fast_exp(x) == want
        assert abs(fast_exp.py_func(x) - want) <= 2 * np.spacing(want) or fast_exp.py_func(x) == want
    assert np.isnan(fast_exp(np.nan)) and fast_exp(np.inf) == np.inf


# ---------------------------------------------------------------- the sweeps
def _sweeps(mdp, beta):
    S, A = mdp.n_states, mdp.n_actions
    q, v, lp = np.empty((S, A)), np.empty(S), np.empty((S, A))
    ksoft.soft_backward(mdp.next_state, mdp.reward, mdp.ref_logp, beta, q, v, lp)
    r, k = np.empty(S), np.empty(S)
    bad = ksoft.evaluate_backward(mdp.next_state, mdp.reward, mdp.ref_logp, lp, 1e-9, r, k)
    return q, v, lp, r, k, bad


@given(mdp=mdps(), beta=betas)
def test_sweeps_deterministic(mdp, beta):
    """Bit-identical results from repeated calls (fresh and reused output arrays)."""
    first, second = _sweeps(mdp, beta), _sweeps(mdp, beta)
    for a, b in zip(first[:5], second[:5]):
        assert np.array_equal(a, b, equal_nan=True)
    assert first[5] == second[5] == -1


def test_sweeps_disallowed_tokens():
    """−inf of a disallowed token: exp gives 0 exactly, log π* stays −inf, K finite."""
    next_state = np.array([[1, 2, -1], [-1, -1, -1], [-1, -1, -1]])
    reward = np.array([[0.0, 1.0, 2.0], [1.0, 0.0, 3.0], [0.5, 0.5, 0.5]])
    with np.errstate(divide="ignore"):
        ref_logp = np.log(np.array([[0.5, 0.5, 0.0], [1 / 3, 1 / 3, 1 / 3], [1.0, 0.0, 0.0]]))
    mdp = xpo_sim.TokenMDP(next_state, reward, ref_logp, np.array([1.0, 0.0, 0.0]))
    q, v, lp, r, k, bad = _sweeps(mdp, 0.5)
    assert bad == -1
    assert np.array_equal(np.isneginf(lp), np.isneginf(ref_logp))
    assert np.all(np.isfinite(v)) and np.all(np.isfinite(r)) and np.all(np.isfinite(k))
    np.testing.assert_allclose(np.exp(lp).sum(axis=1), 1.0, rtol=1e-15)
    assert v[2] == 0.5  # one allowed token: V = r exactly


# ---------------------------------------------------------------- out= arrays
@given(mdp=mdps(), beta=betas)
def test_out_arrays_give_the_same_results(mdp, beta):
    sol = xpo_sim.solve_soft(mdp, beta)
    buffers = (np.full_like(sol.q, np.nan), np.full_like(sol.v, np.nan), np.full_like(sol.logp, np.nan))
    again = xpo_sim.solve_soft(mdp, beta, out=buffers)
    assert again.q is buffers[0] and again.v is buffers[1] and again.logp is buffers[2]
    assert np.array_equal(again.q, sol.q) and np.array_equal(again.v, sol.v)
    assert np.array_equal(again.logp, sol.logp) and again.value == sol.value
    reused = xpo_sim.solve_soft(mdp, beta, out=again)  # a previous solution works too
    assert reused.q is again.q and np.array_equal(reused.logp, sol.logp)

    ev = xpo_sim.evaluate(mdp, sol.logp, beta)
    out = tuple(np.full(mdp.n_states, np.nan) for _ in range(3))
    ev2 = xpo_sim.evaluate(mdp, sol.logp, beta, out=out)
    assert ev2.v is out[0] and ev2.reward_to_go is out[1] and ev2.kl_to_go is out[2]
    for name in ("v", "reward_to_go", "kl_to_go"):
        assert np.array_equal(getattr(ev2, name), getattr(ev, name), equal_nan=True)
    assert ev2.value == ev.value and ev2.kl == ev.kl
    ev3 = xpo_sim.evaluate(mdp, sol.logp, beta, out=ev2)
    assert ev3.v is ev2.v and ev3.value == ev.value


def test_out_arrays_are_validated():
    mdp = xpo_sim.envs.token_tree(3, 2, 2, rewards="dense", seed=0)
    S, A = mdp.n_states, mdp.n_actions
    good = (np.empty((S, A)), np.empty(S), np.empty((S, A)))
    sol = xpo_sim.solve_soft(mdp, 0.5)
    bad_outs = {
        "tuple of 3 arrays": good[:2],
        "must be a tuple": np.empty((S, A)),
        "must have shape": (np.empty((S, A + 1)), good[1], good[2]),
        "dtype float64": (good[0], np.empty(S, dtype=np.float32), good[2]),
        "C-contiguous": (np.empty((A, S)).T, good[1], good[2]),
        "overlaps": (good[0], good[1], good[0]),
        "numpy array": (good[0], list(range(S)), good[2]),
    }
    for message, out in bad_outs.items():
        with pytest.raises(ValueError, match=message):
            xpo_sim.solve_soft(mdp, 0.5, out=out)
    with pytest.raises(ValueError, match="overlaps"):  # output on top of the policy read
        xpo_sim.evaluate(mdp, sol.logp, 0.5, out=(sol.logp[:, 0].copy(), np.empty(S), sol.logp.reshape(-1)[:S]))
    with pytest.raises(ValueError, match="must have shape"):
        xpo_sim.evaluate(mdp, sol.logp, 0.5, out=(np.empty(S), np.empty(S), np.empty(S + 1)))
    readonly = np.empty(S)
    readonly.flags.writeable = False
    with pytest.raises(ValueError, match="writable"):
        xpo_sim.evaluate(mdp, sol.logp, 0.5, out=(np.empty(S), readonly, np.empty(S)))
