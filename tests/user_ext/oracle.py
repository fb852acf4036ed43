"""A user preference oracle: Bradley–Terry labels on rewards multiplied by ``scale``."""

from __future__ import annotations

from xpo_sim import BradleyTerry


class ScaledBradleyTerry:
    """Bradley–Terry with reward scale ``scale``, written as a user's own oracle class."""

    def __init__(self, scale: float = 2.0):
        self.inner = BradleyTerry(reward_scale=scale)

    def prob(self, reward_a, reward_b):
        return self.inner.prob(reward_a, reward_b)

    def prefer(self, reward_a, reward_b, rng):
        return self.inner.prefer(reward_a, reward_b, rng)

    def best_and_worst(self, rewards, rng):  # used by IterativeDPO
        return self.inner.best_and_worst(rewards, rng)
