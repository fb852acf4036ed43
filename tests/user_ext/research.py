"""A researcher's exploration idea, written outside xpo_sim with its public API only: a
sampler (uniform over responses), a policy class written from scratch (per-state logits
trained by plain gradient descent, which may start away from π_ref), an oracle that only
knows ``prefer``, and algorithms that use them. ``tests/test_extension.py`` runs them
through ``xpo_sim.run`` and ``xpo_sim.sweep.run_sweep``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

import xpo_sim
from xpo_sim import Sampler, TokenMDP


# ---------------------------------------------------------------- a sampler
def uniform_response_table(mdp: TokenMDP) -> np.ndarray:
    """The per-state table under which every complete response of ``mdp`` from a prompt is
    equally likely: π(a|s) ∝ the number of responses that continue through (s, a)."""
    allowed = mdp.allowed
    completions = np.zeros(mdp.n_states)
    for _ in range(mdp.horizon):  # completions(s) = Σ_a [next = end] + completions(next)
        through = np.where(mdp.next_state < 0, 1.0, completions[np.maximum(mdp.next_state, 0)])
        completions = np.where(allowed, through, 0.0).sum(axis=1)
    through = np.where(allowed, np.where(mdp.next_state < 0, 1.0, completions[np.maximum(mdp.next_state, 0)]), 0.0)
    with np.errstate(divide="ignore"):
        return np.log(through) - np.log(through.sum(axis=1, keepdims=True).clip(min=1.0))


def _uniform(ctx) -> np.ndarray:
    table = ctx.state.get("uniform_table")
    if table is None:
        table = ctx.state["uniform_table"] = uniform_response_table(ctx.mdp)
    return table


UNIFORM = Sampler("uniform", _uniform, "every response equally likely")
"""Named by spec ``"user_ext.research:UNIFORM"`` (any worker resolves it by import)."""

xpo_sim.register_sampler("uniform", _uniform, description="every response equally likely")


def _last_three(ctx):
    return tuple(ctx.iterates[-3:])


LAST_THREE = xpo_sim.register_sampler("last_three", _last_three, description="the last three iterates, mixed",
                                      history=True)


# ---------------------------------------------------------------- algorithms
@dataclass(frozen=True)
class UniformDuel(xpo_sim.Algorithm):
    """Both responses of every pair uniform over responses, no bonus: passive exploration."""

    policy_sampler: ClassVar[str] = "uniform"
    explore_sampler: ClassVar[str] = "uniform"


@dataclass(frozen=True)
class HistoryProbe(xpo_sim.OnlineDPO):
    """Online DPO that also draws one response a round from the history mixture, and notes
    how many iterates the run kept. ``declare``: whether it lists "history" in its samplers."""

    declare: bool = True

    @property
    def samplers(self):
        return ("current", "history") if self.declare else ("current",)

    def collect(self, ctx) -> None:
        super().collect(ctx)
        ctx.sample("history", ctx.prompts(1))
        ctx.state.setdefault("kept", []).append(len(ctx.iterates))


# ---------------------------------------------------------------- a policy class
class GradientSoftmaxClass:
    """log π_θ(a|s) = log_softmax(θ(s, ·)) over π_ref's allowed tokens; ``update`` takes
    ``steps`` plain gradient steps of size ``lr`` on the round objective divided by the
    number of pairs. ``start``: "ref" (θ = log π_ref) or "uniform" (θ = 0, uniform tokens)."""

    name = "gradient_softmax"
    aggregated_data = True  # reads data.arrays() only

    def __init__(self, mdp: TokenMDP, beta: float, steps: int = 10, lr: float = 0.5, start: str = "ref"):
        self.mdp, self.beta, self.steps, self.lr, self.start = mdp, beta, steps, lr, start

    @property
    def n_params(self) -> int:
        return int(self.mdp.allowed.sum())

    def initial_params(self) -> np.ndarray:
        if self.start == "ref":
            return np.where(self.mdp.allowed, self.mdp.ref_logp, 0.0)
        return np.zeros(self.mdp.ref_logp.shape)

    def policy_logp(self, params) -> np.ndarray:
        logits = np.where(self.mdp.allowed, params, -np.inf)
        top = logits.max(axis=1, keepdims=True)
        return logits - top - np.log(np.exp(logits - top).sum(axis=1, keepdims=True))

    def from_logp(self, logp) -> np.ndarray:
        return np.where(self.mdp.allowed, logp, 0.0)

    def objective(self, params, data, alpha, loss="dpo"):
        """DPO on the pairs plus α Σ log π(explored), and the gradient over θ."""
        assert loss == "dpo"
        a = data.arrays()
        logp = self.policy_logp(params)
        steps = np.arange(a["path_states"].shape[1])[None, :] < a["path_lengths"][:, None]
        s, t = np.where(steps, a["path_states"], 0), np.where(steps, a["path_actions"], 0)
        path_logp = np.where(steps, logp[s, t], 0.0).sum(axis=1)
        h = path_logp - a["path_ref_logp"]
        margin = self.beta * (h[a["pair_chosen"]] - h[a["pair_rejected"]])
        count = a["pair_count"]
        value = float((count * np.logaddexp(0.0, -margin)).sum())
        dpath = np.zeros(len(h))
        coef = -count * self.beta / (1.0 + np.exp(margin))  # ∂/∂margin of −log σ(margin), times β
        np.add.at(dpath, a["pair_chosen"], coef)
        np.add.at(dpath, a["pair_rejected"], -coef)
        if alpha and len(a["explore_path"]):
            weight = alpha * a["explore_count"]
            value += float((weight * path_logp[a["explore_path"]]).sum())
            np.add.at(dpath, a["explore_path"], weight)
        grad = np.zeros(params.shape)  # ∂ log π(a_h|s_h)/∂θ(s, b) = 1[s = s_h](1[b = a_h] − π(b|s_h))
        weights = np.where(steps, dpath[:, None], 0.0)
        np.add.at(grad, (s[steps], t[steps]), weights[steps])
        state_weight = np.zeros(self.mdp.n_states)
        np.add.at(state_weight, s[steps], weights[steps])
        grad -= state_weight[:, None] * np.exp(logp)
        return value, np.where(self.mdp.allowed, grad, 0.0)

    def update(self, params, data, alpha, loss="dpo"):
        params = np.array(params, dtype=float)
        scale = 1.0 / max(1, data.n_pairs)
        for _ in range(self.steps):
            params -= self.lr * scale * self.objective(params, data, alpha, loss)[1]
        return params


def gradient_softmax(mdp, beta, **options) -> GradientSoftmaxClass:
    """A factory ``f(mdp, beta, **policy_args)`` for sweeps."""
    return GradientSoftmaxClass(mdp, beta, **options)


# ---------------------------------------------------------------- an oracle
class NoisyThreshold:
    """Prefers the higher reward when the gap exceeds ``margin``, else a fair coin; knows
    only ``prefer`` (no ``prob``, no ``best_and_worst``)."""

    def __init__(self, margin: float = 0.0):
        self.margin = margin

    def prefer(self, reward_a, reward_b, rng):
        reward_a, reward_b = np.asarray(reward_a, float), np.asarray(reward_b, float)
        coin = rng.random(reward_a.shape) < 0.5
        gap = reward_a - reward_b
        return np.where(np.abs(gap) > self.margin, gap > 0, coin)


class BrokenOracle:
    """Returns what a buggy oracle might: ``mode`` "short" (one label too few), "half" (0.5
    labels), "nan"."""

    def __init__(self, mode: str):
        self.mode = mode

    def prefer(self, reward_a, reward_b, rng):
        n = len(reward_a)
        if self.mode == "short":
            return np.ones(n - 1, dtype=bool)
        return np.full(n, 0.5 if self.mode == "half" else np.nan)
