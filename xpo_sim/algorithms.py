r"""Preference-learning algorithms as small config objects, all run by one round loop
(:func:`xpo_sim.run`, in :mod:`xpo_sim.loop`).

Round t = 1, 2, … (π¹ = π_ref): draw ``batch`` prompts s₀ ∼ ρ; for each draw a response
y ∼ πᵗ(·|s₀) and a second response ỹ ∼ π̃ᵗ(·|s₀); label the pair with the preference
oracle (Bradley–Terry by default); add it to the data. Then

    πᵗ⁺¹ = argmin_π  α_t Σ_{explored ỹ so far} log π(ỹ)  +  Σ_{pairs so far} ℓ_DPO(π)

(Xie et al. 2024, Algorithm 1; the bonus enters the *minimized* objective with a plus sign,
lowering the probability of what the sampler already produced). The algorithms differ in
their samplers and in α:

=============  =======================  ===================  =======================
algorithm      y from                   ỹ from               bonus
=============  =======================  ===================  =======================
OfflineDPO     π_ref                    π_ref                none
OnlineDPO      πᵗ                       πᵗ                   none
HybridDPO      πᵗ                       π_ref                none (XPO with α = 0)
XPO "ref"      πᵗ                       π_ref                α·log π(ỹ)
XPO "current"  πᵗ                       πᵗ                   α·log π on both responses
XPO "history"  πᵗ                       uniform mix of π¹…πᵗ α·log π(ỹ)
=============  =======================  ===================  =======================

An algorithm config is three hooks — :meth:`Algorithm.collect` (sample, label and store a
round's data through :class:`xpo_sim.rounds.RoundContext`), :meth:`Algorithm.update` (the
policy update) and :meth:`Algorithm.reported_logp` (the policy scored) — plus α_t, the
pair loss, the samplers it draws from (:attr:`Algorithm.samplers`) and what it needs of a
policy class (:meth:`Algorithm.check_compatible`: capabilities, never class names, so any
object implementing :class:`xpo_sim.PolicyClass` runs with every algorithm whose needs it
meets). :mod:`xpo_sim.methods` adds the other methods of the literature the same way; a
user's algorithm is a subclass defined anywhere.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, ClassVar

import numpy as np

from xpo_sim import checks
from xpo_sim.policies import loss_kind
from xpo_sim.rounds import RoundContext, get_sampler, label_and_store

__all__ = ["Algorithm", "OfflineDPO", "OnlineDPO", "HybridDPO", "XPO", "DEFAULT_ALPHA", "SCHEDULES"]

SCHEDULES = ("constant", "inv_sqrt")


@dataclass(frozen=True)
class Algorithm:
    """Base config: which samplers produce y and ỹ, the bonus weight α_t, pairs per round
    (``batch``) and the pair loss (``loss``: "dpo", "ipo" or "ln_dpo").

    The round loop of :func:`run` calls three hooks, which subclasses may override:
    :meth:`collect` (sample, label and store this round's data), :meth:`update` (the
    policy update) and :meth:`reported_logp` (the policy whose metrics are recorded).
    Before round 1 it checks :attr:`samplers` (every name registered) and calls
    :meth:`check_compatible`.
    """

    batch: int = field(default=1, kw_only=True)
    loss: str = field(default="dpo", kw_only=True)
    policy_sampler: ClassVar[str] = "current"
    explore_sampler: ClassVar[str] = "ref"

    def __post_init__(self):
        checks.integer("batch", self.batch, minimum=1)
        checks.responses_fit("batch", self.batch, 2 * self.batch)  # y and ỹ of every pair
        loss_kind(self.loss)  # raises on an unknown loss

    @property
    def samplers(self) -> tuple[str, ...]:
        """Every sampler the algorithm draws from (names of :data:`xpo_sim.rounds.SAMPLERS`
        or ``"package.module:qualname"`` specs); default the ``policy_sampler`` and the
        ``explore_sampler``. Override it when :meth:`collect` draws from others: drawing
        from an undeclared sampler is a ValueError, and a run keeps every iterate only
        when a declared sampler needs the history."""
        return tuple(dict.fromkeys((self.policy_sampler, self.explore_sampler)))

    def check_compatible(self, policy_class, mdp) -> None:
        """Raise a ValueError saying what is missing when ``policy_class`` (or ``mdp``)
        lacks something this algorithm needs. The base algorithms need only the
        :class:`xpo_sim.PolicyClass` protocol, which :func:`xpo_sim.run` checks itself."""

    @property
    def name(self) -> str:
        return type(self).__name__

    def alpha_at(self, t: int) -> float:
        """Bonus weight (TRL convention α·log π(ỹ)) used in the objective after t rounds."""
        return 0.0

    def bonus_weight(self, t: int, beta: float) -> float:
        """The weight of Σ log π(ỹ) in the minimized objective after t rounds."""
        return self.alpha_at(t)

    def bonus_on_pair(self) -> bool:
        """Whether both responses of each pair enter the bonus (else only ỹ)."""
        return False

    def pairs_in_round(self, t: int) -> int:
        return self.batch

    def total_rounds(self, rounds: int) -> int:
        return rounds

    # ----------------------------------------------------------------- hooks
    def collect(self, ctx: RoundContext) -> None:
        """Draw this round's prompts and pairs (y from ``policy_sampler``, ỹ from
        ``explore_sampler``), label and store them (``ctx.sample`` notes the samplers used,
        for the concentrability tracker)."""
        prompts = ctx.prompts(self.pairs_in_round(ctx.t))
        y = ctx.sample(self.policy_sampler, prompts)
        y_tilde = ctx.sample(self.explore_sampler, prompts)
        label_and_store(ctx.mdp, ctx.datasets, ctx.oracle, y, y_tilde, ctx.rng,
                        "both" if self.bonus_on_pair() else "second")

    def update(self, ctx: RoundContext) -> None:
        """Set ``ctx.params`` to the next iterate (``ctx.logp``, its table, follows)."""
        ctx.params = ctx.policy_class.update(ctx.params, ctx.data, ctx.bonus, self.loss)

    def reported_logp(self, ctx: RoundContext) -> np.ndarray:
        """The policy whose exact metrics make the round's row (the iterate itself)."""
        return ctx.logp


@dataclass(frozen=True)
class OnlineDPO(Algorithm):
    """Online DPO: both responses from the current policy πᵗ, no bonus."""

    policy_sampler: ClassVar[str] = "current"
    explore_sampler: ClassVar[str] = "current"


@dataclass(frozen=True)
class HybridDPO(Algorithm):
    """Hybrid (iterative) DPO: y ∼ πᵗ against ỹ ∼ π_ref, no bonus — XPO with α = 0."""

    policy_sampler: ClassVar[str] = "current"
    explore_sampler: ClassVar[str] = "ref"


@dataclass(frozen=True)
class OfflineDPO(Algorithm):
    """Offline DPO: every pair from π_ref.

    ``dataset_size=None`` (default): pairs arrive at the online methods' rate, ``batch`` a
    round, so round t is DPO on the first t·batch pairs of one π_ref dataset (same budget as
    the online methods at every round). ``dataset_size=N``: one dataset of N pairs, all in
    one round (one row after round 0).
    """

    dataset_size: int | None = None
    policy_sampler: ClassVar[str] = "ref"
    explore_sampler: ClassVar[str] = "ref"

    def __post_init__(self):
        super().__post_init__()
        if self.dataset_size is not None:
            checks.integer("dataset_size", self.dataset_size, minimum=1)
            checks.responses_fit("dataset_size", self.dataset_size, 2 * self.dataset_size, "the dataset's responses")

    def pairs_in_round(self, t: int) -> int:
        return self.batch if self.dataset_size is None else self.dataset_size

    def total_rounds(self, rounds: int) -> int:
        return rounds if self.dataset_size is None else 1


DEFAULT_ALPHA = 0.01


@dataclass(frozen=True)
class XPO(Algorithm):
    """Exploratory Preference Optimization (Xie et al. 2024, Algorithm 1).

    ``alpha``: bonus weight (default 0.01, TRL's convention α·log π(ỹ); SELM's α' relates by
    α = α'·β). ``schedule``: "constant" (α_t = α), "inv_sqrt" (α_t = α/√t, the decay the
    theory's α ∝ 1/√T suggests for an anytime run), or a callable t ↦ α_t.
    ``sampler``: π̃ = "ref" (Algorithm 1), "current" (both responses on-policy, bonus on
    both), "history" (uniform mixture of the iterates π¹…πᵗ), "previous", or any sampler
    registered with :func:`xpo_sim.register_sampler` (or named ``"package.module:qualname"``).
    """

    alpha: float = DEFAULT_ALPHA
    sampler: str = "ref"
    schedule: str | Callable[[int], float] = "constant"

    def __post_init__(self):
        super().__post_init__()
        checks.nonnegative("alpha", self.alpha)
        try:
            get_sampler(self.sampler)
        except ValueError as err:
            raise ValueError(f"sampler: {err}") from None
        if not callable(self.schedule):
            checks.choice("schedule", self.schedule, SCHEDULES)

    @property
    def explore_sampler(self) -> str:  # type: ignore[override]
        return self.sampler

    def alpha_at(self, t: int) -> float:
        if t < 1:
            return float(self.alpha)
        if callable(self.schedule):
            value = self.schedule(t)
            try:  # a number, not a string float() would coerce
                return checks.nonnegative(f"schedule({t})", value)
            except ValueError:
                raise ValueError(f"schedule gave {value!r} at round {t}: the alpha schedule must return a finite "
                                 f"number >= 0") from None
        if self.schedule == "inv_sqrt":
            return float(self.alpha) / math.sqrt(t)
        return float(self.alpha)

    def bonus_on_pair(self) -> bool:
        return self.sampler == "current"
