r"""What one round of the loop works with: the samplers, the labelling, the round context.

**Samplers.** A round draws responses from named sampling distributions; :data:`SAMPLERS`
is the one registry of their names:

* ``"ref"`` — the reference policy π_ref;
* ``"current"`` — the current iterate πᵗ;
* ``"previous"`` — the iterate before the last update, π^{t−1} (π¹ = π_ref in round 1);
* ``"history"`` — the uniform mixture (1/t) Σ_{i≤t} πⁱ of the iterates so far (each
  response from an iterate drawn uniformly at random).

A policy class that cannot afford an exact (S, A) table every round (the transformer)
provides its own sampler (``make_sampler``), with the same names and meaning.

**Labelling.** A pair (y, ỹ) is labelled by the preference oracle on the true rewards
r(y), r(ỹ); the preferred response is stored as chosen. The responses that enter the
exploration bonus α Σ log π(ỹ) are stored as "explored".
"""

from __future__ import annotations

import numpy as np

from xpo_sim.data import PreferenceData
from xpo_sim.mdp import TokenMDP, TrajectoryBatch
from xpo_sim.trajectories import _sample_paths, trajectory_reward

__all__ = ["SAMPLERS", "RoundContext", "TableSampler", "label_and_store", "store_pairs"]

SAMPLERS: dict[str, str] = {
    "ref": "the reference policy π_ref",
    "current": "the current iterate πᵗ",
    "previous": "the iterate before the last update π^{t−1}",
    "history": "the uniform mixture of the iterates π¹…πᵗ",
}
"""The sampler names every round loop understands → what each draws from."""


def store_pairs(datasets: list[PreferenceData], chosen: TrajectoryBatch, rejected: TrajectoryBatch,
                explored: TrajectoryBatch | None = None) -> None:
    """Add the pairs chosen_i ≻ rejected_i (and the explored responses) to every dataset."""
    for data in datasets:
        data.add_pairs(data.path_ids(chosen), data.path_ids(rejected))
        if explored is not None and len(explored):
            data.add_explored(data.path_ids(explored))


def label_and_store(mdp: TokenMDP, datasets: list[PreferenceData], oracle, y: TrajectoryBatch,
                    y_tilde: TrajectoryBatch, rng, explored: str = "second") -> None:
    """Label each pair (y_i, ỹ_i) with the oracle on their true rewards and store it in every
    dataset. ``explored``: which responses enter the bonus — "second" (ỹ), "both" or "none"."""
    prefer_y = np.asarray(oracle.prefer(trajectory_reward(mdp, y), trajectory_reward(mdp, y_tilde), rng))
    winner = np.where(prefer_y, 0, 1)
    both = TrajectoryBatch.concatenate([y, y_tilde])
    n = len(y)
    chosen = both.take(np.arange(n) + n * winner)
    rejected = both.take(np.arange(n) + n * (1 - winner))
    bonus = {"second": y_tilde, "both": both, "none": None}[explored]
    store_pairs(datasets, chosen, rejected, bonus)


class TableSampler:
    """The samplers of :data:`SAMPLERS` for a policy given by its exact (S, A) table:
    every response is drawn from a table as :func:`~xpo_sim.sample_trajectories` draws
    (the tables are the loop's own, so they are not validated again)."""

    def __init__(self, ctx: "RoundContext", keep_history: bool):
        self.ctx = ctx
        self.keep_history = keep_history
        self.iterates: list[np.ndarray] = []  # π¹…πᵗ (all, or the last two)

    def begin_round(self) -> None:
        """Called at the start of round t, before any sampling: πᵗ joins the iterates."""
        self.iterates.append(self.ctx.logp)
        if not self.keep_history:
            del self.iterates[:-2]

    def sample(self, name: str, prompts: np.ndarray) -> TrajectoryBatch:
        ctx = self.ctx
        if name == "history":
            which = ctx.rng.integers(len(self.iterates), size=len(prompts))
            parts = [_sample_paths(ctx.mdp, self.iterates[i], prompts[j : j + 1], ctx.rng) for j, i in enumerate(which)]
            return TrajectoryBatch.concatenate(parts)
        if name == "previous":
            table = self.iterates[-2] if len(self.iterates) > 1 else self.iterates[-1]
        else:
            table = ctx.mdp.ref_logp if name == "ref" else ctx.logp
        return _sample_paths(ctx.mdp, table, prompts, ctx.rng)


class RoundContext:
    """What a round's hooks see: the instance, the data, the policy class and the current
    iterate (``params``; ``logp`` is its exact (S, A) table, computed when first read after
    ``params`` changes). ``data`` accumulates everything (the coverage metrics read it); an
    algorithm that trains on each round's data alone reads ``round_data``. ``state`` keeps
    an algorithm's per-run objects (a reward model, a second policy …)."""

    def __init__(self, mdp: TokenMDP, beta: float, rng, oracle, policy_class, keep_history: bool = False):
        self.mdp, self.beta, self.rng, self.oracle = mdp, beta, rng, oracle
        self.policy_class = policy_class
        self.data = PreferenceData(mdp)
        self.round_data = PreferenceData(mdp)
        self._params = policy_class.initial_params()
        # the first iterate is π_ref for the table classes; a class with ``starts_at_ref =
        # False`` (the transformer) has its own first table, computed when first read
        self._logp: np.ndarray | None = (np.array(mdp.ref_logp) if getattr(policy_class, "starts_at_ref", True)
                                         else None)
        self.state: dict = {}
        self.t = 0
        self.bonus = 0.0
        self.used: list = []  # the samplers drawn from this round: names, or tables (sample_table)
        make_sampler = getattr(policy_class, "make_sampler", None)
        self.sampler = make_sampler(self, keep_history) if make_sampler else TableSampler(self, keep_history)

    @property
    def params(self):
        return self._params

    @params.setter
    def params(self, value) -> None:
        self._params = value
        self._logp = None

    @property
    def logp(self) -> np.ndarray:
        """The exact (S, A) table log πᵗ(a|s) of the current iterate."""
        if self._logp is None:
            self._logp = self.policy_class.policy_logp(self._params)
        return self._logp

    @logp.setter
    def logp(self, value: np.ndarray) -> None:
        self._logp = value

    @property
    def datasets(self) -> list[PreferenceData]:
        return [self.data, self.round_data]

    def begin_round(self, t: int) -> None:
        self.t = t
        self.used = []
        self.round_data = PreferenceData(self.mdp)
        self.sampler.begin_round()

    def prompts(self, n: int) -> np.ndarray:
        """``n`` prompts s₀ ∼ ρ."""
        return self.rng.choice(self.mdp.n_states, size=n, p=self.mdp.start).astype(np.int64)

    def sample(self, name: str, prompts: np.ndarray, per_prompt: int = 1) -> TrajectoryBatch:
        """``per_prompt`` responses to each prompt from the sampler ``name`` (one of
        :data:`SAMPLERS`)."""
        if name not in SAMPLERS:
            raise ValueError(f"unknown sampler {name!r}: expected one of {tuple(SAMPLERS)}")
        self.used.append(name)
        return self.sampler.sample(name, np.repeat(prompts, per_prompt))

    def sample_table(self, logp: np.ndarray, prompts: np.ndarray) -> TrajectoryBatch:
        """One response to each prompt from a policy table the algorithm keeps itself (e.g.
        an earlier iterate, a fixed comparator); the table is reported to the
        concentrability tracker like a named sampler."""
        logp = self.mdp.check_policy(logp)
        self.used.append(logp)
        return _sample_paths(self.mdp, logp, np.asarray(prompts, dtype=np.int64), self.rng)
