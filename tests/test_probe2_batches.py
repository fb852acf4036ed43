"""Issue 20, probe 2: a TrajectoryBatch is validated once where it enters a public function.

Out-of-range states or actions used to be read outside the arrays by the numba kernels
(garbage values, or a segmentation fault for large indices), and a batch that does not
follow ``next_state`` gave a plausible wrong reward. Now every public entry point
(``trajectory_reward``, ``trajectory_logp``, ``seen_mass``, ``PreferenceData.path_ids``)
refuses such a batch with a ValueError naming it, while the batches the package builds
itself (the round loop's sampling) are not checked again.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, strategies as st

import xpo_sim
from xpo_sim import envs
from xpo_sim.data import PreferenceData

import strategies


def _mdp():
    return envs.token_tree(3, 2)  # 1 + 3 states, 9 responses of 2 tokens


def _entries():
    """Every public function that takes a batch, as (name, call(mdp, batch))."""
    return {
        "trajectory_reward": lambda m, b: xpo_sim.trajectory_reward(m, b),
        "trajectory_logp": lambda m, b: xpo_sim.trajectory_logp(m, m.ref_logp, b),
        "seen_mass": lambda m, b: xpo_sim.seen_mass(m, m.ref_logp, b),
        "path_ids": lambda m, b: PreferenceData(m).path_ids(b),
    }


B = xpo_sim.TrajectoryBatch
BAD_BATCHES = {
    "state out of range": B(np.array([[0, 5]]), np.array([[0, 1]]), np.array([2])),
    "negative state": B(np.array([[-3, 1]]), np.array([[0, 1]]), np.array([2])),
    "action out of range": B(np.array([[0, 1]]), np.array([[0, 7]]), np.array([2])),
    "negative action": B(np.array([[0, 1]]), np.array([[-1, 1]]), np.array([2])),
    "uint64 2**64-1 action": B(np.array([[0, 1]], np.uint64), np.array([[0, 2**64 - 1]], np.uint64),
                               np.array([2], np.uint64)),
    "does not follow next_state": B(np.array([[0, 2]]), np.array([[0, 1]]), np.array([2])),
    "stops mid-episode": B(np.array([[0]]), np.array([[0]]), np.array([1])),
    "length 0": B(np.array([[0, 1]]), np.array([[0, 1]]), np.array([0])),
    "length above width": B(np.array([[0, 1]]), np.array([[0, 1]]), np.array([3])),
    "float states": B(np.array([[0.0, 1.0]]), np.array([[0, 1]]), np.array([2])),
    "ragged shapes": B(np.array([[0, 1]]), np.array([[0, 1, 2]]), np.array([2])),
    "lengths of another size": B(np.array([[0, 1]]), np.array([[0, 1]]), np.array([2, 2])),
}


@pytest.mark.parametrize("entry", list(_entries()))
@pytest.mark.parametrize("case", list(BAD_BATCHES))
def test_bad_batch_is_refused_naming_it(entry, case):
    with pytest.raises(ValueError, match="batch"):
        _entries()[entry](_mdp(), BAD_BATCHES[case])


@pytest.mark.parametrize("entry", list(_entries()))
def test_not_a_batch_is_refused(entry):
    with pytest.raises(ValueError, match="batch must be a TrajectoryBatch"):
        _entries()[entry](_mdp(), [[0, 1]])


@pytest.mark.parametrize("entry", list(_entries()))
def test_huge_indices_do_not_crash_the_process(entry):
    """State 10**6 or action 10**9 on token_tree(3, 2) killed the process (rc -11)."""
    code = f"""
import numpy as np, xpo_sim
from xpo_sim import envs
from xpo_sim.data import PreferenceData
m = envs.token_tree(3, 2)
entries = dict(
    trajectory_reward=lambda b: xpo_sim.trajectory_reward(m, b),
    trajectory_logp=lambda b: xpo_sim.trajectory_logp(m, m.ref_logp, b),
    seen_mass=lambda b: xpo_sim.seen_mass(m, m.ref_logp, b),
    path_ids=lambda b: PreferenceData(m).path_ids(b))
for states, actions in (([[0, 10**6]], [[0, 0]]), ([[0, 1]], [[0, 10**9]]), ([[10**6, 1]], [[10**9, 0]])):
    try:
        entries[{entry!r}](xpo_sim.TrajectoryBatch(np.array(states), np.array(actions), np.array([2])))
    except ValueError as error:
        assert "out of range" in str(error), error
    else:
        raise SystemExit("no error")
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", (done.returncode, done.stderr[-2000:])


def _naive_reward(mdp, states, actions, lengths):
    return [sum(float(mdp.reward[s, a]) for s, a in zip(states[i, :n], actions[i, :n]))
            for i, n in enumerate(lengths)]


@given(data=st.data())
def test_valid_user_batches_pass_and_corrupted_ones_are_refused(data):
    """A user's copy of a sampled batch gives the naive sums; changing one step's state or
    action to anything that is not the same trajectory of the MDP is refused."""
    mdp = data.draw(strategies.mdps())
    n = data.draw(st.integers(1, 5))
    sampled = xpo_sim.sample_trajectories(mdp, mdp.ref_logp, n, seed=data.draw(st.integers(0, 2**16)))
    states, actions, lengths = (np.array(x) for x in (sampled.states, sampled.actions, sampled.lengths))
    mine = xpo_sim.TrajectoryBatch(states.copy(), actions.copy(), lengths.copy())
    np.testing.assert_array_equal(xpo_sim.trajectory_reward(mdp, mine), _naive_reward(mdp, states, actions, lengths))
    assert mine.states.flags.writeable  # the user's arrays are left as they were

    i = data.draw(st.integers(0, n - 1))
    h = data.draw(st.integers(0, int(lengths[i]) - 1))
    which = data.draw(st.sampled_from(["states", "actions"]))
    value = data.draw(st.integers(-3, 12))
    bad_states, bad_actions = states.copy(), actions.copy()
    (bad_states if which == "states" else bad_actions)[i, h] = value
    # the changed trajectory is still valid exactly when it follows next_state and ends
    s_list, a_list = bad_states[i, : lengths[i]], bad_actions[i, : lengths[i]]
    ok = all(0 <= s < mdp.n_states for s in s_list) and all(0 <= a < mdp.n_actions for a in a_list)
    if ok:
        nxt = [int(mdp.next_state[s, a]) for s, a in zip(s_list, a_list)]
        ok = nxt[-1] == -1 and all(nxt[k] == s_list[k + 1] for k in range(len(s_list) - 1))
    corrupted = xpo_sim.TrajectoryBatch(bad_states, bad_actions, lengths.copy())
    if ok:
        np.testing.assert_array_equal(xpo_sim.trajectory_reward(mdp, corrupted),
                                      _naive_reward(mdp, bad_states, bad_actions, lengths))
    else:
        with pytest.raises(ValueError, match="batch"):
            xpo_sim.trajectory_reward(mdp, corrupted)


def test_a_batch_of_another_mdp_is_checked_again():
    small = envs.token_tree(2, 2)
    batch = envs.token_tree(3, 2).trajectories()
    with pytest.raises(ValueError, match="out of range"):
        xpo_sim.trajectory_reward(small, batch)


def test_package_batches_are_read_only_and_not_checked_again(monkeypatch):
    """The round loop pays nothing for validation: its sampled batches carry the mark."""
    import xpo_sim.mdp as mdp_module

    def refuse(*args, **kwargs):
        raise AssertionError("a batch built by the package was validated again")

    mdp = envs.bandit_needle(8, 0.1)
    monkeypatch.setattr(mdp_module, "_validate_batch", refuse)
    for policy in ("implicit", "logits"):
        for algorithm in (xpo_sim.XPO(), xpo_sim.OnlineDPO()):
            xpo_sim.run(mdp, algorithm, 0.1, 3, seed=0, policy=policy)
    batch = xpo_sim.sample_trajectories(mdp, mdp.ref_logp, 4, seed=0)
    assert not batch.states.flags.writeable
    xpo_sim.trajectory_reward(mdp, batch)
    xpo_sim.trajectory_reward(mdp, batch.take([0, 1]))
    xpo_sim.trajectory_reward(mdp, xpo_sim.TrajectoryBatch.concatenate([batch, batch]))
