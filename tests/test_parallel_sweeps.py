"""The level-parallel sweeps (``xpo_sim._kernels.levels``) and the thread policy
(``xpo_sim.threads``).

Oracles: the serial kernels of ``xpo_sim._kernels.soft`` / ``newton`` (results must be equal
to the bit, at every thread count), brute force for the level structure and the in-edge
lists, and ``/proc/self/task`` for the threads a worker process starts.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import xpo_sim
from xpo_sim import envs, threads
from xpo_sim._kernels import levels as L
from xpo_sim._kernels import soft as K

from strategies import betas, mdps, policies

THREAD_COUNTS = sorted({1, min(2, numba.config.NUMBA_NUM_THREADS)})


@pytest.fixture(scope="module", autouse=True)
def restore_threads():
    """Each test sets the thread counts it needs; the module leaves them as it found them."""
    before = numba.get_num_threads()
    yield
    numba.set_num_threads(before)
    threads.set_threads(None)


def _heights_brute(mdp):
    """height(s) by recursion on the definition."""
    memo = {}

    def height(s):
        if s not in memo:
            nxt = [int(t) for t in mdp.next_state[s] if t >= 0]
            memo[s] = 0 if not nxt else 1 + max(height(t) for t in nxt)
        return memo[s]

    return np.array([height(s) for s in range(mdp.n_states)])


@settings(max_examples=40)
@given(mdp=mdps())
def test_levels_group_states_by_height_and_successors_lie_below(mdp):
    order, offsets = mdp.levels
    heights = _heights_brute(mdp)
    assert sorted(order.tolist()) == list(range(mdp.n_states))  # a permutation
    assert offsets[0] == 0 and offsets[-1] == mdp.n_states and (np.diff(offsets) > 0).all()
    for level in range(len(offsets) - 1):
        block = order[offsets[level]:offsets[level + 1]]
        assert (heights[block] == level).all()
        assert (np.diff(block) > 0).all()  # index order within a level
    for s in range(mdp.n_states):
        for t in mdp.next_state[s]:
            if t >= 0:
                assert heights[t] < heights[s]
    assert not order.flags.writeable and not offsets.flags.writeable


@settings(max_examples=40)
@given(mdp=mdps())
def test_predecessor_lists_are_the_in_edges_in_pair_order(mdp):
    offsets, states, actions = mdp.predecessors
    for t in range(mdp.n_states):
        want = [(u, a) for u in range(mdp.n_states) for a in range(mdp.n_actions) if mdp.next_state[u, a] == t]
        got = list(zip(states[offsets[t]:offsets[t + 1]].tolist(), actions[offsets[t]:offsets[t + 1]].tolist()))
        assert got == want
    assert mdp.predecessors is mdp.predecessors  # built once


def _serial_and_levels(mdp, logp, beta, chunk=1):
    """Every sweep, serial and level-parallel (``chunk`` = 1: every level of ≥ 4 states on
    the thread pool), at each thread count; returns {name: [serial, parallel@1, parallel@2…]}."""
    ns, r, ref = mdp.next_state, mdp.reward, mdp.ref_logp
    S, A = mdp.n_states, mdp.n_actions
    order, offsets = mdp.levels
    pred = mdp.predecessors
    out = {}

    def solve(kernel):
        q, v, lp = np.empty((S, A)), np.empty(S), np.empty((S, A))
        kernel(q, v, lp)
        return q, v, lp

    def evaluate(kernel):
        rr, kk = np.empty(S), np.empty(S)
        bad = kernel(rr, kk)
        return rr, kk, np.array([bad])

    out["solve"] = [solve(lambda q, v, lp: K.soft_backward(ns, r, ref, beta, q, v, lp)),
                    solve(lambda q, v, lp: K.soft_by_levels(order, offsets, ns, r, ref, beta, q, v, lp))]
    out["evaluate"] = [evaluate(lambda rr, kk: K.evaluate_backward(ns, r, ref, logp, 1e-6, rr, kk))]
    sol_q, sol_v, _ = out["solve"][0]

    def regret(kernel):
        g = np.empty(S)
        bad = kernel(g)
        return g, np.array([bad])

    out["regret"] = [regret(lambda g: K.regret_backward(ns, ref, logp, sol_q, sol_v, beta, 1e-6, g))]
    start = np.asarray(mdp.start)
    prob = np.empty((S, A))
    K.policy_probs(np.ascontiguousarray(logp, dtype=np.float64), prob)

    def occupancy(kernel):
        d = np.empty(S)
        kernel(d)
        return (d,)

    out["occupancy"] = [occupancy(lambda d: K.occupancy_forward(ns, prob, start, d))]
    for n in THREAD_COUNTS:
        numba.set_num_threads(n)
        out["solve"].append(solve(lambda q, v, lp: L.soft_levels(order, offsets, ns, r, ref, beta, q, v, lp, chunk)))
        out["evaluate"].append(evaluate(
            lambda rr, kk: L.evaluate_levels(order, offsets, ns, r, ref, logp, 1e-6, rr, kk, chunk)))
        out["regret"].append(regret(
            lambda g: L.regret_levels(order, offsets, ns, ref, logp, sol_q, sol_v, beta, 1e-6, g, chunk)))
        out["occupancy"].append(occupancy(
            lambda d: L.occupancy_levels(order, offsets, *pred, prob, start, d, chunk)))
    return out


def _assert_all_identical(results):
    for name, runs in results.items():
        for run in runs[1:]:
            for got, want in zip(run, runs[0]):
                np.testing.assert_array_equal(got, want, err_msg=name)


@settings(max_examples=60)
@given(data=st.data(), beta=betas)
def test_level_sweeps_equal_serial_sweeps_to_the_bit(data, beta):
    mdp = data.draw(mdps())
    logp = data.draw(policies(mdp))
    _assert_all_identical(_serial_and_levels(mdp, logp, beta))


@settings(max_examples=30)
@given(data=st.data())
def test_level_sweeps_report_the_serial_sweeps_bad_state(data):
    """A policy table with bad rows (NaN, or not normalized): the level sweeps return the
    same first bad state as the serial ones."""
    mdp = data.draw(mdps())
    logp = data.draw(policies(mdp)).copy()
    bad_rows = data.draw(st.lists(st.integers(0, mdp.n_states - 1), min_size=1, max_size=3))
    for s in bad_rows:
        logp[s, 0] = data.draw(st.sampled_from([np.nan, np.inf, 0.5]))
    results = _serial_and_levels(mdp, logp, 0.5)
    assert results["evaluate"][0][2][0] == min(bad_rows)
    for name in ("evaluate", "regret"):
        for run in results[name][1:]:
            assert run[-1][0] == results[name][0][-1][0]


@pytest.mark.parametrize("make", [
    lambda: envs.token_tree(10, 4, 3, rewards="dense", seed=1),  # levels of 30 … 30,000 states
    lambda: envs.random_dag(20000, 6, n_prompts=3, seed=2),  # merged prefixes: states with several parents
])
def test_library_chunking_on_large_instances_is_bit_identical(make):
    """The library's own chunk size (64 states) and thresholds, on instances large enough
    that levels run on the pool."""
    mdp = make()
    assert np.diff(mdp.levels[1]).max() >= L.MIN_PARALLEL_CHUNKS * L.CHUNK  # some level runs on the pool
    logp = xpo_sim.solve_soft(mdp, 0.3).logp
    mixed = np.logaddexp(logp, mdp.ref_logp) - np.log(2.0)  # a policy that is not π*
    _assert_all_identical(_serial_and_levels(mdp, mixed, 0.3, chunk=L.CHUNK))


def test_public_functions_are_bit_identical_at_every_thread_count():
    mdp = envs.token_tree(8, 5, 4, rewards="dense", seed=3)  # 149,792 pairs: above the threshold
    assert mdp.n_state_actions >= threads.PARALLEL_MIN_PAIRS
    results = []
    for n in THREAD_COUNTS:
        threads.set_threads(n)
        assert threads.sweep_threads(mdp) == n
        sol = xpo_sim.solve_soft(mdp, 0.2)
        policy = np.logaddexp(sol.logp + np.log(0.3), mdp.ref_logp + np.log(0.7))
        ev = xpo_sim.evaluate(mdp, policy, 0.2)
        results.append((sol.q, sol.v, sol.logp, ev.reward_to_go, ev.kl_to_go, xpo_sim.occupancy(mdp, policy),
                        np.array([xpo_sim.regret(mdp, policy, 0.2, sol)])))
    for run in results[1:]:
        for got, want in zip(run, results[0]):
            np.testing.assert_array_equal(got, want)


def test_more_threads_than_cores_still_bit_identical(tmp_path):
    """In a fresh process with NUMBA_NUM_THREADS=4 (more threads than this machine may have
    cores): 1, 2, 3 and 4 threads give the same bytes, for the sweeps and a round of XPO
    with the implicit class (the Newton solver's objective, gradient and Hessian products)."""
    script = textwrap.dedent("""
        import hashlib, numpy as np, xpo_sim
        from xpo_sim import envs, threads
        mdp = envs.token_tree(8, 5, 2, rewards="dense", seed=4)  # 74,896 pairs
        digests = []
        for n in (1, 2, 3, 4):
            threads.set_threads(n)
            h = hashlib.sha256()
            sol = xpo_sim.solve_soft(mdp, 0.1)
            policy = np.logaddexp(sol.logp, mdp.ref_logp) - np.log(2.0)
            ev = xpo_sim.evaluate(mdp, policy, 0.1)
            for array in (sol.q, sol.v, sol.logp, ev.reward_to_go, ev.kl_to_go, xpo_sim.occupancy(mdp, policy)):
                h.update(array.tobytes())
            h.update(np.float64(xpo_sim.regret(mdp, policy, 0.1, sol)).tobytes())
            df = xpo_sim.run(mdp, xpo_sim.XPO(), 0.1, 2, seed=0, policy="implicit")
            h.update(df["regret"].to_numpy().tobytes())
            digests.append(h.hexdigest())
        print(len(set(digests)), threads.sweep_threads(mdp))
    """)
    env = dict(os.environ, NUMBA_NUM_THREADS="4")
    env.pop(threads.ENV_VAR, None)
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    distinct, used = done.stdout.split()
    assert used == "4" and distinct == "1", done.stdout


# ----------------------------------------------------------------------------- the thread policy


def test_set_threads_validates_and_restores():
    with pytest.raises(ValueError, match="threads"):
        threads.set_threads(0)
    with pytest.raises(ValueError, match="threads"):
        threads.set_threads(threads.max_threads() + 1)
    with pytest.raises(ValueError, match="threads"):
        threads.set_threads(1.5)
    with pytest.raises(ValueError, match="threads"):
        threads.set_threads(True)
    default = threads.get_threads()
    assert threads.set_threads(1) == default and threads.get_threads() == 1
    threads.set_threads(None)
    assert threads.get_threads() == default


def test_environment_variable_sets_the_default(monkeypatch):
    monkeypatch.setenv(threads.ENV_VAR, "1")
    assert threads.get_threads() == 1
    monkeypatch.setenv(threads.ENV_VAR, "many")
    with pytest.raises(ValueError, match=threads.ENV_VAR):
        threads.get_threads()
    monkeypatch.setenv(threads.ENV_VAR, "-2")
    with pytest.raises(ValueError, match=threads.ENV_VAR):
        threads.get_threads()


def test_small_and_narrow_instances_run_serially():
    threads.set_threads(threads.max_threads())
    assert threads.sweep_threads(envs.token_tree(4, 3, 1)) == 1  # 340 pairs
    # a long chain: many pairs, but two states per level
    n = 40_000
    next_state = np.full((n, 2), -1)
    next_state[:-2, 0] = np.arange(2, n)
    next_state[:-2, 1] = np.arange(2, n)
    ref = np.full((n, 2), np.log(0.5))
    chain = xpo_sim.TokenMDP(next_state, np.zeros((n, 2)), ref, np.eye(1, n, 0)[0])
    assert chain.n_state_actions >= threads.PARALLEL_MIN_PAIRS
    assert threads.sweep_threads(chain) == 1
    threads.set_threads(1)
    assert threads.sweep_threads(envs.token_tree(8, 5, 4)) == 1


def _worker_threads(_):
    """In a pool worker: its thread count, and whether a large solve started threads (numpy's
    BLAS starts its own pool at its first call in a forked child: that call is made first)."""
    mdp = envs.token_tree(8, 5, 4, rewards="dense", seed=0)
    float(mdp.start @ mdp.reward[:, 0])
    before = len(os.listdir("/proc/self/task"))
    xpo_sim.solve_soft(mdp, 0.2)
    after = len(os.listdir("/proc/self/task"))
    return threads.get_threads(), threads.sweep_threads(mdp), before, after


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs Linux /proc to count threads")
def test_pool_workers_use_one_thread_and_start_no_numba_pool():
    """A sweep's pool of 2 workers on 2 cores must not run 4 threads: each worker's sweeps
    are serial and a large solve starts no thread in it."""
    from xpo_sim.sweep import make_executor

    threads.set_threads(threads.max_threads())
    xpo_sim.solve_soft(envs.token_tree(8, 5, 4, rewards="dense", seed=0), 0.2)  # the parent's pool may run
    with make_executor(workers=2) as pool:
        results = list(pool.map(_worker_threads, range(4)))
    for n, used, before, after in results:
        assert n == 1 and used == 1
        assert after == before
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        n, used, before, after = pool.submit(_worker_threads, 0).result()  # any multiprocessing child
    assert n == 1 and after == before
