"""Shared test configuration: hypothesis profiles and a one-time numba warm-up.

Profiles: ``ci`` (derandomized, so CI runs are reproducible) is loaded when the ``CI``
environment variable is set, ``dev`` otherwise. Both disable hypothesis deadlines: timing
of a pure-Python oracle is not what these tests check.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import settings

import xpo_sim

settings.register_profile("ci", derandomize=True, deadline=None, max_examples=50, print_blob=True)
settings.register_profile("dev", deadline=None, max_examples=50)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


@pytest.fixture(scope="session", autouse=True)
def _compile_kernels():
    """Compile (or load from cache) every numba kernel once, before any test runs, by
    calling each public entry point on a tiny DAG with an early end and a disallowed token."""
    next_state = np.array([[1, -1], [-1, -1]])
    reward = np.array([[0.5, 1.0], [0.0, 0.25]])
    ref_logp = np.array([[np.log(0.5), np.log(0.5)], [0.0, -np.inf]])
    mdp = xpo_sim.TokenMDP(next_state, reward, ref_logp, np.array([1.0, 0.0]))
    solution = xpo_sim.solve_soft(mdp, 1.0)
    xpo_sim.evaluate(mdp, solution.logp, 1.0)
    xpo_sim.occupancy(mdp, solution.logp)
    batch = xpo_sim.sample_trajectories(mdp, solution.logp, 4, seed=0)
    xpo_sim.trajectory_logp(mdp, solution.logp, batch)
    xpo_sim.trajectory_reward(mdp, batch)
    mdp.trajectories()
    assert mdp.n_trajectories == 2 and mdp.horizon == 2
    for policy in ("implicit", "logits"):  # the preference-objective kernels
        xpo_sim.run(mdp, xpo_sim.XPO(), 1.0, 2, seed=0, policy=policy)
    xpo_sim.optimal_mass(mdp, solution.logp)
    yield
