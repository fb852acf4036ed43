"""A user instance family: a one-prompt bandit whose rewards climb a staircase."""

from __future__ import annotations

import numpy as np

from xpo_sim import TokenMDP


def staircase(n_responses: int, step: float = 0.25, seed: int = 0) -> TokenMDP:
    """Responses 0…n−1 with reward k·step, and a random π_ref (seeded) that favours the low
    steps; ``info['eps']`` is π_ref's mass on the best response."""
    rng = np.random.default_rng(seed)
    logits = -np.arange(n_responses, dtype=float) + 0.3 * rng.standard_normal(n_responses)
    ref_logp = logits - np.logaddexp.reduce(logits)
    reward = step * np.arange(n_responses, dtype=float)
    return TokenMDP(np.full((1, n_responses), -1), reward[None, :], ref_logp[None, :], np.ones(1),
                    dict(family="staircase", eps=float(np.exp(ref_logp[-1]))))


def not_an_mdp(n_responses: int = 3):
    """A factory that returns the wrong kind of object."""
    return {"n_responses": n_responses}
