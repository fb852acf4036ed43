r"""Every numba kernel of ``xpo_sim._kernels`` against its naive oracle and its own ``py_func``.

Each kernel is called twice on the same coerced arrays (float64 / int64 / bool,
C-contiguous, as the wrappers pass them): compiled, and as ``kernel.py_func`` (the same
source run by the Python interpreter).

Tolerances:
* integer kernels and ``sum_along`` (additions only, in a fixed order, no reassociation
  without fastmath) must agree *exactly* with ``py_func`` and with the naive loops, which
  add in the same left-to-right order;
* kernels with exp/log: compiled code calls libm through LLVM while ``py_func`` calls
  NumPy's own exp/log, which may differ in the last ulp; the operation order is the same,
  so results agree to a few ulp of the magnitudes involved — we require rtol 1e-12;
* against the naive oracles (different formulation and summation order) rtol 1e-9 of
  the magnitudes, as in ``test_identities``.
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
from strategies import betas, masks_for, mdps, policies
from xpo_sim._kernels import soft as ksoft
from xpo_sim._kernels import trajectories as ktraj

RTOL = 1e-9
RTOL_PY = 1e-12


def both(kernel, *args, out_shapes):
    """Run ``kernel`` compiled and as ``py_func`` on the same inputs; return both outputs
    (lists of arrays allocated from ``out_shapes`` = [(shape, dtype), …]) and return values."""
    results = []
    for fn in (kernel, kernel.py_func):
        outs = [np.full(shape, -7, dtype=dtype) for shape, dtype in out_shapes]
        ret = fn(*args, *outs)
        results.append((outs, ret))
    return results


# ------------------------------------------------------------------ soft_backward
@given(mdp=mdps(), beta=betas)
def test_soft_backward(mdp, beta):
    S, A = mdp.n_states, mdp.n_actions
    (jit, _), (py, _) = both(
        ksoft.soft_backward, mdp.next_state, mdp.reward, mdp.ref_logp, beta,
        out_shapes=[((S, A), np.float64), ((S,), np.float64), ((S, A), np.float64)],
    )
    q, v, logp = jit
    scale_q = np.abs(q) + np.abs(mdp.reward)
    scale_lp = np.abs(q) / beta + np.abs(v)[:, None] / beta + np.abs(mdp.ref_logp)
    assert_close(py[0], q, scale_q, RTOL_PY, "Q* py_func")
    assert_close(py[1], v, np.abs(v), RTOL_PY, "V* py_func")
    assert_close(py[2], logp, scale_lp, RTOL_PY, "log π* py_func")
    # Naive: V* at trajectory level (β log Σ_τ π_ref e^{r/β}, every state as a start) and
    # the memoized per-state recursion.
    v_traj, _ = naive.optimum_by_enumeration(mdp, beta)
    assert_close(v, v_traj, np.abs(v_traj), RTOL, "V* vs trajectory-level optimum")
    q_n, v_n, logp_n = naive.soft_bellman(mdp, beta)
    assert_close(q, q_n, np.abs(q_n), RTOL, "Q* vs naive")
    assert_close(v, v_n, np.abs(v_n), RTOL, "V* vs naive")
    assert_close(logp, logp_n, scale_lp, RTOL, "log π* vs naive")
    # solve_soft is this kernel plus ρ·V*.
    sol = xpo_sim.solve_soft(mdp, beta)
    assert np.array_equal(sol.q, q) and np.array_equal(sol.v, v) and np.array_equal(sol.logp, logp)
    assert sol.value == float(mdp.start @ v)


# -------------------------------------------------------------- evaluate_backward
def _naive_to_go(mdp, logp):
    rows = [naive.evaluate_from(mdp, logp, s) for s in range(mdp.n_states)]
    return np.array([r for r, _ in rows]), np.array([k for _, k in rows])


@given(data=st.data())
def test_evaluate_backward(data):
    """Per-state expected reward and KL to go, for policies inside π_ref's support (with
    zero-probability tokens) and policies with mass on disallowed tokens (KL = +inf)."""
    mdp = data.draw(mdps(), label="mdp")
    logp = data.draw(
        st.one_of(policies(mdp), policies(mdp, disallowed_mass=True)), label="logp"
    )
    S = mdp.n_states
    (jit, status_jit), (py, status_py) = both(
        ksoft.evaluate_backward, mdp.next_state, mdp.reward, mdp.ref_logp, logp, 1e-6,
        out_shapes=[((S,), np.float64), ((S,), np.float64)],
    )
    assert status_jit == status_py == -1  # every row is a distribution: nothing flagged
    r_naive, kl_naive = _naive_to_go(mdp, logp)
    horizon = max(int(naive.longest_paths(mdp.next_state, logp > -np.inf)[s]) for s in range(S))
    # reward to go: |r| ≤ 2 per step; KL to go: per-step terms |log π − log π_ref| ≤ ~20.
    r_scale = 2.0 * horizon
    a = np.isfinite(logp) & mdp.allowed
    kl_scale = horizon * (np.abs(logp[a]).max() + np.abs(mdp.ref_logp[a]).max()) if a.any() else 0.0
    assert_close(py[0], jit[0], r_scale, RTOL_PY, "reward to go py_func")
    assert_close(py[1], jit[1], kl_scale, RTOL_PY, "KL to go py_func")
    assert_close(jit[0], r_naive, r_scale, RTOL, "reward to go vs naive")
    assert_close(jit[1], kl_naive, kl_scale, RTOL, "KL to go vs naive")
    assert np.all(jit[1] >= -RTOL * (1 + kl_scale))  # a KL is non-negative


@given(mdp=mdps(), beta=betas)
def test_evaluate_of_optimum_is_its_value(mdp, beta):
    """evaluate(π*).value = solve_soft().value = ρ·V*, and per state v = V*."""
    sol = xpo_sim.solve_soft(mdp, beta)
    ev = xpo_sim.evaluate(mdp, sol.logp, beta)
    # J = E r − β KL: rounding is relative to E r and β·KL, not to their difference.
    scale = np.abs(ev.reward_to_go) + beta * np.abs(ev.kl_to_go)
    assert_close(ev.v, sol.v, scale, RTOL, "per-state value of π*")
    assert_close(ev.value, sol.value, abs(ev.reward) + beta * abs(ev.kl), RTOL, "J(π*)")
    assert_close(ev.value, ev.reward - beta * ev.kl, abs(ev.reward) + beta * abs(ev.kl), 1e-15, "J = R − βKL")
    assert ev.beta == beta


@given(data=st.data())
def test_evaluate_matches_naive_objective(data):
    mdp = data.draw(mdps(), label="mdp")
    beta = data.draw(betas, label="beta")
    logp = data.draw(policies(mdp), label="logp")
    ev = xpo_sim.evaluate(mdp, logp, beta)
    expected = naive.evaluate(mdp, logp, beta)
    scale = abs(expected["reward"]) + beta * expected["kl"] + abs(expected["value"])
    assert_close(ev.reward, expected["reward"], scale, RTOL, "E r")
    assert_close(ev.kl, expected["kl"], expected["kl"] + 1.0, RTOL, "E KL")
    assert_close(ev.value, expected["value"], scale, RTOL, "J_β")


def test_disallowed_mass_gives_infinite_kl_minimal():
    """Minimal case: two states, ρ = (1, 0); the policy puts mass 1/2 on token 1 of state 1,
    which π_ref disallows. State 1 is reached with probability 1/2, so
    KL(π‖π_ref) = +inf, J_β(π) = −inf, and regret = +inf."""
    mdp = xpo_sim.TokenMDP(
        [[1, -1], [-1, -1]], [[0.0, 0.0], [0.0, 0.0]],
        [[math.log(0.5), math.log(0.5)], [0.0, -math.inf]], [1.0, 0.0],
    )
    logp = np.log(np.full((2, 2), 0.5))
    ev = xpo_sim.evaluate(mdp, logp, 1.0)
    assert ev.kl_to_go[0] == math.inf and ev.kl_to_go[1] == math.inf
    assert ev.kl == math.inf, f"expected kl = inf, got {ev.kl}"
    assert ev.value == -math.inf, f"expected value = -inf, got {ev.value}"
    assert xpo_sim.regret(mdp, logp, 1.0) == math.inf


@given(data=st.data())
def test_disallowed_mass_gives_infinite_kl(data):
    """A policy with positive probability of reaching a token π_ref disallows has
    KL = +inf and J_β = −inf (through ``evaluate``), as the naive enumeration says."""
    mdp = data.draw(mdps(), label="mdp")
    logp = data.draw(policies(mdp, disallowed_mass=True), label="logp")
    expected = naive.evaluate(mdp, logp, 1.0)
    ev = xpo_sim.evaluate(mdp, logp, 1.0)
    if expected["kl"] == math.inf:
        assert ev.kl == math.inf, f"expected kl = inf, got {ev.kl}"
        assert ev.value == -math.inf, f"expected value = -inf, got {ev.value}"
    else:  # the disallowed tokens are never reached from a start state
        assert_close(ev.kl, expected["kl"], expected["kl"] + 1.0, RTOL, "E KL")


# -------------------------------------------------------------- occupancy_forward
@given(data=st.data())
def test_occupancy_forward(data):
    mdp = data.draw(mdps(), label="mdp")
    logp = data.draw(st.one_of(policies(mdp), policies(mdp, disallowed_mass=True)), label="logp")
    S = mdp.n_states
    prob = np.empty(logp.shape)
    ksoft.policy_probs(np.ascontiguousarray(logp, dtype=np.float64), prob)  # the kernel reads π = e^{log π}
    np.testing.assert_allclose(prob, np.exp(logp), rtol=4.5e-16, atol=1e-300)  # ≤ 2 ulp (subnormals: absolute)
    (jit, _), (py, _) = both(
        ksoft.occupancy_forward, mdp.next_state, prob, mdp.start, out_shapes=[((S,), np.float64)]
    )
    # Occupancies are probabilities (≤ 1): scale 1.
    assert_close(py[0], jit[0], 1.0, RTOL_PY, "occupancy py_func")
    assert_close(jit[0], naive.occupancy(mdp, logp), 1.0, RTOL, "occupancy vs naive")
    assert_close(xpo_sim.occupancy(mdp, logp), jit[0], 0.0, 0.0, "wrapper")
    assert np.all(jit[0] >= mdp.start) and np.all(jit[0] <= 1 + 1e-12)


# ------------------------------------------------- longest_paths and count_paths
@given(data=st.data())
def test_longest_and_count_paths(data):
    """On π_ref's mask and on arbitrary masks (one allowed token per row at least)."""
    mdp = data.draw(mdps(), label="mdp")
    allowed = data.draw(masks_for(mdp), label="allowed")
    S = mdp.n_states
    (jit_l, _), (py_l, _) = both(ksoft.longest_paths, mdp.next_state, allowed, out_shapes=[((S,), np.int64)])
    assert np.array_equal(jit_l[0], py_l[0])
    assert jit_l[0].tolist() == naive.longest_paths(mdp.next_state, allowed)
    (jit_c, _), (py_c, _) = both(ksoft.count_paths, mdp.next_state, allowed, out_shapes=[((S,), np.float64)])
    assert np.array_equal(jit_c[0], py_c[0])
    assert jit_c[0].tolist() == [float(c) for c in naive.count_paths(mdp.next_state, allowed)]
    assert np.array_equal(mdp.remaining_steps(allowed), jit_l[0])


@given(mdp=mdps())
def test_sizes_of_the_mdp(mdp):
    """n_trajectories and horizon from the start states agree with the enumeration."""
    taus = naive.trajectories(mdp)
    assert mdp.n_trajectories == len(taus)
    assert isinstance(mdp.n_trajectories, int)
    assert mdp.horizon == max(len(t) for t in taus)


# ------------------------------------------------------------------ enumerate_paths
@given(data=st.data())
def test_enumerate_paths(data):
    mdp = data.draw(mdps(), label="mdp")
    allowed = data.draw(masks_for(mdp), label="allowed")
    starts = np.array(
        data.draw(st.lists(st.integers(0, mdp.n_states - 1), min_size=1, max_size=3), label="starts"),
        dtype=np.int64,
    )
    expected = []
    ns_list = mdp.next_state.tolist()
    for s0 in starts:
        expected.extend(naive.enumerate_from(ns_list, allowed.tolist(), int(s0)))
    n = len(expected)
    width = max(len(t) for t in expected)
    (jit, rows_jit), (py, rows_py) = both(
        ktraj.enumerate_paths, mdp.next_state, allowed, starts,
        out_shapes=[((n, width), np.int64), ((n, width), np.int64), ((n,), np.int64)],
    )
    assert rows_jit == rows_py == n
    for a, b in zip(jit, py):
        assert np.array_equal(a, b)
    states, actions, lengths = jit
    got = [tuple(zip(states[i, :k].tolist(), actions[i, :k].tolist())) for i, k in enumerate(lengths)]
    assert got == expected  # same trajectories, same order (start by start, lexicographic)
    for i, k in enumerate(lengths):
        assert np.all(states[i, k:] == -1) and np.all(actions[i, k:] == -1)


@given(mdp=mdps())
def test_trajectories_wrapper(mdp):
    batch = mdp.trajectories()
    assert batch.as_tuples() == naive.trajectories(mdp)
    assert len(batch) == mdp.n_trajectories
    assert batch.states.shape == (mdp.n_trajectories, mdp.horizon)


# ------------------------------------------------------------------------ sum_along
@given(data=st.data())
def test_sum_along(data):
    mdp = data.draw(mdps(), label="mdp")
    table = data.draw(st.one_of(
        st.just(np.asarray(mdp.reward)),
        st.just(np.asarray(mdp.ref_logp)),
        policies(mdp),
    ), label="table")
    table = np.ascontiguousarray(table, dtype=np.float64)
    batch = mdp.trajectories()
    n = len(batch)
    (jit, _), (py, _) = both(
        ktraj.sum_along, table, batch.states, batch.actions, batch.lengths, out_shapes=[((n,), np.float64)]
    )
    assert np.array_equal(jit[0], py[0])
    expected = [naive.path_sum(table.tolist(), t) for t in batch.as_tuples()]
    assert np.array_equal(jit[0], np.array(expected))  # same additions in the same order


# ---------------------------------------------------------------------- sample_paths
@given(data=st.data())
def test_sample_paths(data):
    """Compiled and py_func give identical samples from the same uniforms, and each row is
    the inverse-CDF draw of the naive sampler."""
    mdp = data.draw(mdps(), label="mdp")
    logp = data.draw(policies(mdp), label="logp")
    n = data.draw(st.integers(1, 30), label="n")
    starts = np.array(data.draw(st.lists(st.integers(0, mdp.n_states - 1), min_size=n, max_size=n),
                                label="starts"), dtype=np.int64)
    width = int(mdp.remaining_steps(logp > -np.inf)[starts].max())
    seed = data.draw(st.integers(0, 2**32 - 1), label="seed")
    uniforms = np.random.default_rng(seed).random((n, width))
    # A few rows of hand-picked uniforms, including the end points of [0, 1).
    special = data.draw(st.lists(st.sampled_from([0.0, 0.5, 1.0 - 2**-53]), min_size=width, max_size=width))
    uniforms[0] = special
    (jit, _), (py, _) = both(
        ktraj.sample_paths, mdp.next_state, logp, starts, uniforms,
        out_shapes=[((n, width), np.int64), ((n, width), np.int64), ((n,), np.int64)],
    )
    for a, b in zip(jit, py):
        assert np.array_equal(a, b)
    states, actions, lengths = jit
    ns_list, lp_list = mdp.next_state.tolist(), logp.tolist()
    for i in range(n):
        expected = naive.sample_path(ns_list, lp_list, int(starts[i]), uniforms[i].tolist())
        k = lengths[i]
        assert tuple(zip(states[i, :k].tolist(), actions[i, :k].tolist())) == expected
        assert np.all(states[i, k:] == -1) and np.all(actions[i, k:] == -1)
        assert np.all(logp[states[i, :k], actions[i, :k]] > -np.inf)


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")  # NaN input, on purpose
def test_evaluate_kernel_flags_the_bad_row_and_wrapper_explains():
    """The fused validation in evaluate_backward returns the offending state; evaluate then
    raises the detailed ValueError of TokenMDP.check_policy."""
    mdp = xpo_sim.envs.random_dag(10, 3, seed=0)
    S = mdp.n_states
    for value, message in ((np.nan, "finite or -inf"), (np.inf, "finite or -inf"), (-0.1, "not a distribution")):
        logp = np.array(mdp.ref_logp)
        row = 4
        col = int(np.flatnonzero(mdp.allowed[row])[0])
        logp[row, col] = value if not value < 0 else logp[row, col] + value
        for fn in (ksoft.evaluate_backward, ksoft.evaluate_backward.py_func):
            status = fn(mdp.next_state, mdp.reward, mdp.ref_logp, logp, 1e-6, np.empty(S), np.empty(S))
            assert status == row
        with pytest.raises(ValueError, match=message):
            xpo_sim.evaluate(mdp, logp, 1.0)
