"""A user algorithm: XPO whose bonus weight halves every round."""

from __future__ import annotations

from dataclasses import dataclass

from xpo_sim import XPO, checks


@dataclass(frozen=True)
class HalvingXPO(XPO):
    """XPO with α_t = alpha · decay^(t−1)."""

    decay: float = 0.5

    def __post_init__(self):
        super().__post_init__()
        checks.probability("decay", self.decay)

    def alpha_at(self, t: int) -> float:
        return float(self.alpha) * self.decay ** max(t - 1, 0)


class NotAnAlgorithm:
    """A class that is not an xpo_sim.Algorithm."""
