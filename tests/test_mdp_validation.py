"""Every validation rule of TokenMDP, evaluate and solve_soft has a test with a clear error."""

import math

import numpy as np
import pytest

import xpo_sim
from xpo_sim import TokenMDP


def log(x):
    with np.errstate(divide="ignore"):
        return np.log(np.asarray(x, dtype=float))


def valid_arrays():
    """A 3-state DAG: state 0 -> {1, 2, end}, 1 -> {2, end}, 2 -> end."""
    next_state = np.array([[1, 2, -1], [2, -1, -1], [-1, -1, -1]])
    reward = np.array([[0.0, 0.5, 1.0], [0.2, 0.0, 0.3], [1.0, 0.0, 0.1]])
    ref_logp = log(np.array([[0.2, 0.3, 0.5], [0.5, 0.5, 0.0], [1 / 3, 1 / 3, 1 / 3]]))
    start = np.array([1.0, 0.0, 0.0])
    return dict(next_state=next_state, reward=reward, ref_logp=ref_logp, start=start)


def make(**changes):
    arrays = valid_arrays()
    arrays.update(changes)
    return TokenMDP(**arrays)


def test_valid_instance_is_stored_readonly_float64_int64():
    mdp = make()
    assert mdp.next_state.dtype == np.int64 and mdp.reward.dtype == np.float64
    assert mdp.ref_logp.flags.c_contiguous and not mdp.ref_logp.flags.writeable
    for array in (mdp.next_state, mdp.reward, mdp.ref_logp, mdp.start):
        with pytest.raises(ValueError):
            array.flat[0] = 0


def test_inputs_are_copied():
    arrays = valid_arrays()
    mdp = TokenMDP(**arrays)
    arrays["reward"][0, 0] = 99.0
    assert mdp.reward[0, 0] == 0.0


def test_sizes_and_structure_properties():
    mdp = make()
    assert (mdp.n_states, mdp.n_actions, mdp.n_state_actions) == (3, 3, 9)
    # longest allowed path: 0 -a0-> 1 -a0-> 2 -> end  (3 steps)
    assert mdp.horizon == 3
    # from 2: 3 ways; from 1: 1 (via 2) * 3 + 1 = 4 ... action 2 of state 1 is disallowed
    assert mdp.n_trajectories == 4 + 3 + 1
    assert len(mdp.trajectories()) == mdp.n_trajectories
    with pytest.raises(ValueError, match="max_count"):
        mdp.trajectories(max_count=3)


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(next_state=np.zeros((3, 3))), "integer"),
        (dict(next_state=np.array([[1, 2, -1], [2, -1, -1], [-1, -1, -1]], dtype=bool)), "integer"),
        (dict(next_state=np.array([1, 2, -1])), "2-D"),
        (dict(reward=np.zeros((3, 2))), "reward must have the shape"),
        (dict(ref_logp=np.zeros((2, 3))), "ref_logp must have the shape"),
        (dict(start=np.ones(2) / 2), r"start must have shape \(3,\)"),
        (dict(reward=np.array([["a"] * 3] * 3)), "real numeric"),
        (dict(start=np.array([1 + 0j, 0, 0])), "real numeric"),
    ],
)
def test_shapes_and_dtypes(changes, message):
    with pytest.raises(ValueError, match=message):
        make(**changes)


def test_next_state_out_of_range():
    ns = valid_arrays()["next_state"].copy()
    ns[0, 2] = 3
    with pytest.raises(ValueError, match=r"next_state\[0, 2\] = 3 is out of range"):
        make(next_state=ns)
    ns[0, 2] = -2
    with pytest.raises(ValueError, match="out of range"):
        make(next_state=ns)


def test_next_state_not_increasing_is_a_cycle():
    ns = valid_arrays()["next_state"].copy()
    ns[1, 1] = 1  # self-loop
    with pytest.raises(ValueError, match=r"next_state\[1, 1\] = 1 does not increase"):
        make(next_state=ns)
    ns[1, 1] = 0  # back edge
    with pytest.raises(ValueError, match="topological order"):
        make(next_state=ns)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_reward(bad):
    reward = valid_arrays()["reward"].copy()
    reward[2, 1] = bad
    with pytest.raises(ValueError, match=r"reward\[2, 1\] = .* is not finite"):
        make(reward=reward)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_ref_logp_nan_or_plus_inf(bad):
    ref = valid_arrays()["ref_logp"].copy()
    ref[0, 0] = bad
    with pytest.raises(ValueError, match=r"ref_logp\[0, 0\]"):
        make(ref_logp=ref)


def test_ref_logp_row_not_normalized():
    ref = valid_arrays()["ref_logp"].copy()
    ref[1, 0] = math.log(0.5 + 1e-6)
    with pytest.raises(ValueError, match="ref_logp row 1 does not normalize"):
        make(ref_logp=ref)
    ref[1, 0] = math.log(0.5 + 1e-12)  # within the 1e-9 tolerance
    make(ref_logp=ref)


def test_ref_logp_row_allowing_nothing():
    ref = valid_arrays()["ref_logp"].copy()
    ref[2] = -np.inf
    with pytest.raises(ValueError, match="ref_logp row 2 allows no action"):
        make(ref_logp=ref)


@pytest.mark.parametrize(
    "start, message",
    [
        (np.array([0.5, 0.6, -0.1]), r"start\[2\]"),
        (np.array([0.5, 0.4, 0.0]), "sums to"),
        (np.array([np.nan, 1.0, 0.0]), r"start\[0\]"),
    ],
)
def test_start_not_a_distribution(start, message):
    with pytest.raises(ValueError, match=message):
        make(start=start)


def test_state_reachable_only_through_disallowed_actions_is_fine():
    # state 1 is reached only by action 0 of state 0; disallow it
    ref = valid_arrays()["ref_logp"].copy()
    ref[0] = log([0.0, 0.5, 0.5])
    mdp = make(ref_logp=ref)
    sol = xpo_sim.solve_soft(mdp, 0.5)
    assert np.isfinite(sol.v).all()
    assert xpo_sim.occupancy(mdp, mdp.ref_logp)[1] == 0.0


@pytest.mark.parametrize("beta", [0.0, -1.0, np.inf, np.nan, "x", None, True])
def test_bad_beta(beta):
    mdp = make()
    with pytest.raises(ValueError, match="beta must be a positive finite number"):
        xpo_sim.solve_soft(mdp, beta)
    with pytest.raises(ValueError, match="beta must be a positive finite number"):
        xpo_sim.evaluate(mdp, mdp.ref_logp, beta)


def test_bad_policy_tables():
    mdp = make()
    with pytest.raises(ValueError, match=r"logp must have shape \(S, A\)"):
        xpo_sim.evaluate(mdp, np.zeros((3, 2)), 1.0)
    logp = mdp.ref_logp.copy()
    logp[0, 0] = np.nan
    with pytest.raises(ValueError, match=r"logp\[0, 0\]"):
        xpo_sim.occupancy(mdp, logp)
    logp = mdp.ref_logp.copy()
    logp[0, 0] += 0.1
    with pytest.raises(ValueError, match="logp row 0 is not a distribution"):
        xpo_sim.evaluate(mdp, logp, 1.0)


def test_solve_soft_rejects_non_mdp():
    with pytest.raises(ValueError, match="mdp must be a TokenMDP"):
        xpo_sim.solve_soft(valid_arrays(), 1.0)


def test_sampling_arguments():
    mdp = make()
    with pytest.raises(ValueError, match="n must be"):
        xpo_sim.sample_trajectories(mdp, mdp.ref_logp, -1)
    with pytest.raises(ValueError, match="start_states must have shape"):
        xpo_sim.sample_trajectories(mdp, mdp.ref_logp, 2, start_states=[0])
    with pytest.raises(ValueError, match="seed must be"):
        xpo_sim.sample_trajectories(mdp, mdp.ref_logp, 2, seed="abc")
