"""Issue 20, probe 2: unchecked inputs. Each wrong argument is a ValueError that names it,
never a traceback from inside numpy, scipy or torch, and never a silently coerced value."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

import xpo_sim
from xpo_sim import envs


# -------------------------------------------------------------------- the logits class
BAD_ADAM_BETAS = [(1.0, 0.999), (0.9, 1.0), (-0.1, 0.999), (0.9, math.nan), (0.9, math.inf), "ab", (0.9,),
                  (0.9, 0.99, 0.999), None, 0.9, (0.9, "0.999"), (True, 0.999)]


@pytest.mark.parametrize("adam_betas", BAD_ADAM_BETAS, ids=repr)
def test_logits_class_refuses_bad_adam_betas(adam_betas):
    """adam_betas=(1.0, 0.999) ended in "logp[0, 0] = nan" (1 − β₁^t = 0)."""
    mdp = envs.bandit(4)
    with pytest.raises(ValueError, match="adam_betas"):
        xpo_sim.LogitsClass(mdp, 0.1, adam_betas=adam_betas)
    with pytest.raises(ValueError, match="adam_betas"):
        xpo_sim.run(mdp, xpo_sim.XPO(), 0.1, 2, policy="logits", adam_betas=adam_betas)


@pytest.mark.parametrize("adam_eps", [math.nan, -1e-8, 0.0, math.inf, "1e-8", None, True])
def test_logits_class_refuses_bad_adam_eps(adam_eps):
    mdp = envs.bandit(4)
    with pytest.raises(ValueError, match="adam_eps"):
        xpo_sim.LogitsClass(mdp, 0.1, adam_eps=adam_eps)


def test_logits_class_accepts_the_edges_of_adam_betas():
    cls = xpo_sim.LogitsClass(envs.bandit(4), 0.1, adam_betas=[0.0, 0.0], adam_eps=1e-300)
    assert cls.adam_betas == (0.0, 0.0)


def test_one_logits_class_object_serves_two_runs():
    """The Adam moments of the first run carried over into the second: the same object
    must give the same run as a fresh one."""
    mdp = envs.bandit_needle(8, 0.1)
    shared = xpo_sim.LogitsClass(mdp, 0.1, steps=5)
    first = xpo_sim.run(mdp, xpo_sim.XPO(), 0.1, 4, seed=1, policy=shared)
    second = xpo_sim.run(mdp, xpo_sim.XPO(), 0.1, 4, seed=1, policy=shared)
    fresh = xpo_sim.run(mdp, xpo_sim.XPO(), 0.1, 4, seed=1, policy=xpo_sim.LogitsClass(mdp, 0.1, steps=5))
    columns = ["regret", "opt_mass"]
    pd.testing.assert_frame_equal(second[columns], fresh[columns])
    pd.testing.assert_frame_equal(first[columns], fresh[columns])


# ------------------------------------------------------------------------ the transformer
torch = pytest.importorskip("torch")


def _tiny_transformer(mdp, **kwargs):
    from xpo_sim.torch import TinyTransformerPolicy

    return TinyTransformerPolicy(mdp, width=8, depth=1, heads=2, **kwargs)


@pytest.mark.parametrize("seed", [-1, 1.7, "x", True, None, 2**64])
def test_transformer_refuses_bad_seed(seed):
    with pytest.raises(ValueError, match="seed"):
        _tiny_transformer(envs.token_tree(2, 2), seed=seed)


@pytest.mark.parametrize("beta", [1e300, 1e38, 1e-300, 1e-40])
def test_transformer_refuses_a_beta_float32_cannot_carry(beta):
    """At β = 1e300 the float32 losses ended in "logp[0, 0] = nan"."""
    from xpo_sim.torch import with_reference

    base = envs.token_tree(2, 2)
    policy = _tiny_transformer(base)
    mdp = with_reference(base, policy.frozen_copy())
    with pytest.raises(ValueError, match="beta"):
        xpo_sim.run(mdp, xpo_sim.XPO(), beta, 2, policy=policy, steps=1)


# --------------------------------------------------------------- the lead's last fixes
def test_a_run_too_long_to_fit_is_refused_up_front():
    with pytest.raises(ValueError, match="rounds=10000000000 would need"):
        xpo_sim.run(envs.bandit(3), xpo_sim.XPO(), 0.5, 10**10)


def test_optimal_mass_refuses_a_bad_tol():
    mdp = envs.bandit(3)
    for tol in (-1.0, float("nan"), "0.1"):
        with pytest.raises(ValueError, match="tol must be"):
            xpo_sim.optimal_mass(mdp, mdp.ref_logp, tol=tol)


def test_regret_refuses_a_solution_of_another_instance():
    mdp, other = envs.bandit(4, seed=0), envs.bandit(4, seed=1)  # same shape, other rewards
    with pytest.raises(ValueError, match="solved for another instance"):
        xpo_sim.regret(mdp, mdp.ref_logp, 0.5, solution=xpo_sim.solve_soft(other, 0.5))
    with pytest.raises(ValueError, match="solution must be a SoftSolution"):
        xpo_sim.regret(mdp, mdp.ref_logp, 0.5, solution={})
    own = xpo_sim.solve_soft(mdp, 0.5)
    assert xpo_sim.regret(mdp, mdp.ref_logp, 0.5, solution=own) == xpo_sim.regret(mdp, mdp.ref_logp, 0.5)


def test_sample_trajectories_refuses_fractional_start_states():
    mdp = envs.token_tree(3, 2, n_prompts=2)
    with pytest.raises(ValueError, match="start_states must be an int array"):
        xpo_sim.sample_trajectories(mdp, mdp.ref_logp, 2, seed=0, start_states=[0.7, 0.2])
