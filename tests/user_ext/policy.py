"""A user policy-class factory: f(mdp, beta, **policy_args) -> a policy class object."""

from __future__ import annotations

from xpo_sim import ImplicitRewardClass


def boxed_implicit(mdp, beta, bound: float = 2.0):
    """The implicit-reward class with every reward parameter in [−bound, bound]."""
    return ImplicitRewardClass(mdp, beta, box=(-bound, bound))
