r"""The other methods of the XPO literature, as algorithm configs for the same round loop.

Each is an :class:`~xpo_sim.algorithms.Algorithm`: :func:`xpo_sim.run` runs it, with the
same columns and exact regret.

* :class:`IterativeDPO` (Xiong et al. 2023, "Iterative Preference Learning from Human
  Feedback"): each round draws ``k`` responses per prompt from πᵗ, ranks them by the
  oracle's reward, and trains DPO on (best ≻ worst) of this round's batch; π_ref fixed.
* :class:`IPO` (Azar et al. 2023): online pairs, pair loss (h₊ − h₋ − 1/(2β))².
* :class:`LNDPO`: online pairs, length-normalized DPO
  −log σ(β(h₊/|τ₊| − h₋/|τ₋|)), with h = log π(τ) − log π_ref(τ).
* :class:`SELM` (Zhang et al. 2024, "Self-Exploring Language Models"): online DPO pairs
  plus, per pair, one extra response ỹ from the previous iterate π^{t−1} entering the
  optimism term α β log(π(ỹ)/π_ref(ỹ)) of the minimized objective — XPO's bonus with
  α_TRL = α β, up to a constant.
* :class:`ExPO` (Zheng et al. 2024, "Weak-to-Strong Extrapolation Expedites Alignment"):
  trains a DPO variant and reports the extrapolated policy
  log π_γ(a|s) = log π_ref(a|s) + (1+γ)(log πᵗ(a|s) − log π_ref(a|s)) − log Z_γ(s)
  (renormalized per state); ``iterate_regret`` is the DPO iterate's own regret.
* :class:`RLHF`: the classical pipeline — fit a reward r̂ by Bradley–Terry maximum
  likelihood over the box-bounded class, then either the exact KL-regularized optimum
  π*(r̂) (``update="exact"``, the perfect optimizer), or a PPO-style clipped
  KL-regularized policy gradient on r̂ for the logits class (``update="ppo"``), with
  per-token reward r̂(s,a) − β log(π_old(a|s)/π_ref(a|s)) and the exact soft value of
  π_old under r̂ as critic: A_h = r̂_h − β log(π_old/π_ref)_h + V(s_{h+1}) − V(s_h).
* :class:`CountUCB` (a non-DPO exploration reference): the same reward fit, plus an
  optimism bonus c/√(1 + n(s,a)) on every reward parameter, where n counts the compared
  responses that used (s, a); clipped to the box; then exact soft planning π*(r̂ + bonus).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from xpo_sim import checks
from xpo_sim.algorithms import Algorithm, HybridDPO, OfflineDPO, OnlineDPO
from xpo_sim.rounds import RoundContext, label_and_store, store_pairs
from xpo_sim.mdp import TokenMDP
from xpo_sim.policies import LogitsClass, RewardClass
from xpo_sim.soft import evaluate
from xpo_sim.trajectories import sample_trajectories, trajectory_reward

__all__ = ["IterativeDPO", "IPO", "LNDPO", "SELM", "ExPO", "RLHF", "CountUCB", "extrapolate", "ppo_surrogate"]


@dataclass(frozen=True)
class IterativeDPO(Algorithm):
    """Xiong et al. (2023): ``k`` samples per prompt from πᵗ, ranked by the preference
    oracle (Bradley–Terry: a Plackett–Luce ranking, which for k = 2 is the BT label;
    Argmax: by reward, ties at random), DPO on (first ≻ last) of this round's batch only
    (``accumulate=True``: on all batches so far). One ranked prompt is one query."""

    k: int = 4
    accumulate: bool = False

    def __post_init__(self):
        super().__post_init__()
        checks.integer("k", self.k, minimum=2)  # best against worst

    def collect(self, ctx: RoundContext) -> None:
        n = self.pairs_in_round(ctx.t)
        prompts = ctx.prompts(n)
        samples = ctx.sample("current", prompts, per_prompt=self.k)
        reward = trajectory_reward(ctx.mdp, samples).reshape(n, self.k)
        best, worst = ctx.oracle.best_and_worst(reward, ctx.rng)
        rows = np.arange(n) * self.k
        store_pairs(ctx.datasets, samples.take(rows + best), samples.take(rows + worst))

    def update(self, ctx: RoundContext) -> None:
        data = ctx.data if self.accumulate else ctx.round_data
        if data.n_pairs:  # no informative pair this round: keep the iterate
            ctx.params = ctx.policy_class.update(ctx.params, data, 0.0, self.loss)


@dataclass(frozen=True)
class IPO(OnlineDPO):
    """Online IPO (Azar et al. 2023): both responses from πᵗ, loss (h₊ − h₋ − 1/(2β))²."""

    loss: str = "ipo"


@dataclass(frozen=True)
class LNDPO(OnlineDPO):
    """Online length-normalized DPO: margin β(h₊/|τ₊| − h₋/|τ₋|)."""

    loss: str = "ln_dpo"


@dataclass(frozen=True)
class SELM(OnlineDPO):
    """SELM (Zhang et al. 2024): online DPO pairs; per pair one extra response from the
    previous iterate π^{t−1} enters the minimized objective as α β log(π/π_ref)(ỹ).
    Implemented as XPO's bonus with weight α β (the same gradients; DESIGN.md)."""

    alpha: float = 0.1

    def __post_init__(self):
        super().__post_init__()
        checks.nonnegative("alpha", self.alpha)

    def alpha_at(self, t: int) -> float:
        return float(self.alpha)

    def bonus_weight(self, t: int, beta: float) -> float:
        return float(self.alpha) * beta

    def collect(self, ctx: RoundContext) -> None:
        prompts = ctx.prompts(self.pairs_in_round(ctx.t))
        y, y_other = ctx.sample("current", prompts), ctx.sample("current", prompts)
        extra = ctx.sample("previous", prompts)
        label_and_store(ctx.mdp, ctx.datasets, ctx.oracle, y, y_other, ctx.rng, explored="none")
        store_pairs(ctx.datasets, extra.take([]), extra.take([]), explored=extra)


def extrapolate(ref_logp: np.ndarray, logp: np.ndarray, gamma: float) -> np.ndarray:
    """ExPO: log π_γ = log π_ref + (1+γ)(log π − log π_ref), renormalized per state
    (tokens π_ref disallows stay at −inf)."""
    allowed = ref_logp > -np.inf
    with np.errstate(invalid="ignore"):
        logits = np.where(allowed, ref_logp + (1.0 + gamma) * (logp - ref_logp), -np.inf)
    top = logits.max(axis=1, keepdims=True)
    return logits - (top + np.log(np.exp(logits - top).sum(axis=1, keepdims=True)))


_EXPO_BASES = {"OnlineDPO": OnlineDPO, "HybridDPO": HybridDPO, "OfflineDPO": OfflineDPO}


@dataclass(frozen=True)
class ExPO(Algorithm):
    """ExPO (Zheng et al. 2024): train ``base`` (a DPO variant, by name) and report the
    extrapolation of each iterate with strength ``gamma`` (γ = 0 is the iterate itself)."""

    gamma: float = 0.5
    base: str = "HybridDPO"

    def __post_init__(self):
        super().__post_init__()
        checks.real("gamma", self.gamma, low=-1.0)
        checks.choice("base", self.base, sorted(_EXPO_BASES))

    @property
    def _base(self) -> Algorithm:
        return _EXPO_BASES[self.base](batch=self.batch, loss=self.loss)

    @property
    def policy_sampler(self) -> str:  # type: ignore[override]
        return self._base.policy_sampler

    @property
    def explore_sampler(self) -> str:  # type: ignore[override]
        return self._base.explore_sampler

    def reported_logp(self, ctx: RoundContext) -> np.ndarray:
        return extrapolate(ctx.mdp.ref_logp, ctx.logp, self.gamma)


_NEEDS_REWARD_TABLE = ("it fits an explicit reward model r̂ = Fθ (a reward class) and plans exactly on r̂; "
                       "the logits class and the transformer parametrize a policy, not a reward table")


class _RewardModel:
    """Bradley–Terry maximum likelihood over the run's box-bounded reward class (a reward
    class's objective with α = 0 is exactly the BT negative log-likelihood of r̂_θ)."""

    def __init__(self, cls: RewardClass, algorithm: str):
        if not isinstance(cls, RewardClass):
            raise ValueError(f"{algorithm} needs a reward class (implicit or linear) for its reward model, "
                             f"got the {cls.name!r} class")
        self.cls = cls
        self.params = self.cls.initial_params()

    def fit(self, data) -> np.ndarray:
        self.params = self.cls.update(self.params, data, 0.0)
        return self.params


def ppo_surrogate(logp_new: np.ndarray, logp_old: np.ndarray, advantage: np.ndarray, clip: float):
    """PPO's clipped surrogate, to be *maximized*, per sampled step h:
    min(ρ_h A_h, clip(ρ_h, 1−ε, 1+ε) A_h) with ρ_h = exp(log π_new − log π_old), and its
    derivative with respect to log π_new (ρ_h A_h where the unclipped term is the minimum,
    0 where clipping is active)."""
    ratio = np.exp(logp_new - logp_old)
    unclipped = ratio * advantage
    clipped = np.clip(ratio, 1.0 - clip, 1.0 + clip) * advantage
    value = np.minimum(unclipped, clipped)
    grad = np.where(unclipped <= clipped, unclipped, 0.0)
    return value, grad


@dataclass(frozen=True)
class RLHF(Algorithm):
    """RLHF with a reward model (see the module docstring). ``sampler``: pairs (πᵗ, πᵗ)
    ("current") or (πᵗ, π_ref) ("ref"). ``update``: "exact" or "ppo" (``ppo_samples``
    trajectories a round, ``ppo_epochs`` Adam steps on the clipped surrogate with clip ε =
    ``clip`` and learning rate ``lr``)."""

    sampler: str = "current"
    update_rule: str = "exact"
    ppo_samples: int = 64
    ppo_epochs: int = 8
    clip: float = 0.2
    lr: float = 0.1
    policy_classes: ClassVar[tuple[str, ...]] = ("implicit", "linear")
    policy_class_reason: ClassVar[str] = _NEEDS_REWARD_TABLE

    def __post_init__(self):
        super().__post_init__()
        checks.choice("sampler", self.sampler, ("current", "ref"))
        checks.choice("update_rule", self.update_rule, ("exact", "ppo"))
        checks.integer("ppo_samples", self.ppo_samples, minimum=1)
        checks.integer("ppo_epochs", self.ppo_epochs, minimum=1)
        checks.positive("clip", self.clip)
        checks.positive("lr", self.lr)

    @property
    def explore_sampler(self) -> str:  # type: ignore[override]
        return self.sampler

    def _reward_model(self, ctx: RoundContext) -> _RewardModel:
        if "reward_model" not in ctx.state:
            ctx.state["reward_model"] = _RewardModel(ctx.policy_class, self.name)
        return ctx.state["reward_model"]

    def update(self, ctx: RoundContext) -> None:
        model = self._reward_model(ctx)
        reward_hat = model.cls.reward_table(model.fit(ctx.data))
        if self.update_rule == "exact":
            ctx.params = model.params
            ctx.logp = model.cls.policy_logp(model.params)
            return
        ctx.logp = self._ppo(ctx, reward_hat)

    def _ppo(self, ctx: RoundContext, reward_hat: np.ndarray) -> np.ndarray:
        mdp, beta = ctx.mdp, ctx.beta
        if "policy" not in ctx.state:
            ctx.state["policy"] = LogitsClass(mdp, beta, steps=self.ppo_epochs, lr=self.lr)
            ctx.state["theta"] = np.zeros(mdp.ref_logp.shape)
        policy, theta = ctx.state["policy"], ctx.state["theta"]
        logp_old = policy.policy_logp(theta)
        fitted = TokenMDP(mdp.next_state, reward_hat, mdp.ref_logp, mdp.start)
        critic = evaluate(fitted, logp_old, beta).v  # exact soft value of π_old under r̂
        batch = sample_trajectories(mdp, logp_old, self.ppo_samples, ctx.rng)
        steps = np.concatenate([np.stack([batch.states[i, :n], batch.actions[i, :n]], axis=1)
                                for i, n in enumerate(batch.lengths)])
        s, a = steps[:, 0], steps[:, 1]
        nxt = mdp.next_state[s, a]
        next_value = np.where(nxt >= 0, critic[np.maximum(nxt, 0)], 0.0)
        advantage = (reward_hat[s, a] - beta * (logp_old[s, a] - mdp.ref_logp[s, a])
                     + next_value - critic[s])
        m, v = np.zeros_like(theta), np.zeros_like(theta)
        for epoch in range(1, self.ppo_epochs + 1):
            logp_new = policy.policy_logp(theta)
            _, dvalue = ppo_surrogate(logp_new[s, a], logp_old[s, a], advantage, self.clip)
            # ascend mean surrogate: ∂/∂θ(s,b) log π(a|s) = 1[b = a] − π(b|s)
            grad = np.zeros_like(theta)
            np.add.at(grad, (s, a), dvalue)
            state_weight = np.zeros(mdp.n_states)
            np.add.at(state_weight, s, dvalue)
            grad -= state_weight[:, None] * np.exp(logp_new)
            grad = np.where(mdp.allowed, -grad / len(s), 0.0)  # minimize the negative
            m = 0.9 * m + 0.1 * grad
            v = 0.999 * v + 0.001 * grad * grad
            theta = theta - self.lr * (m / (1 - 0.9**epoch)) / (np.sqrt(v / (1 - 0.999**epoch)) + 1e-8)
        ctx.state["theta"] = theta
        ctx.params = theta
        return policy.policy_logp(theta)


@dataclass(frozen=True)
class CountUCB(Algorithm):
    """Count-based optimism: BT reward fit + c/√(1 + n) on each reward parameter (clipped
    to the box), then the exact soft-optimal policy; pairs are (πᵗ, π_ref)."""

    c: float = 0.5
    policy_classes: ClassVar[tuple[str, ...]] = ("implicit", "linear")
    policy_class_reason: ClassVar[str] = _NEEDS_REWARD_TABLE

    def __post_init__(self):
        super().__post_init__()
        checks.nonnegative("c", self.c)

    def update(self, ctx: RoundContext) -> None:
        if "reward_model" not in ctx.state:
            ctx.state["reward_model"] = _RewardModel(ctx.policy_class, self.name)
        model = ctx.state["reward_model"]
        params = model.fit(ctx.data)
        optimistic = model.cls.project(params + self.c / np.sqrt(1.0 + self.visit_counts(ctx, model.cls)))
        ctx.params = optimistic
        ctx.logp = model.cls.policy_logp(optimistic)

    @staticmethod
    def visit_counts(ctx: RoundContext, cls: RewardClass) -> np.ndarray:
        """n per reward parameter: Σ_{s,a} (compared responses that took (s, a), both sides
        of every pair with multiplicity) · φ(s, a) — for a one-hot (implicit) class, the
        count of that parameter's (s, a)."""
        arrays = ctx.data.arrays()
        per_path = np.zeros(arrays["path_lengths"].shape[0])
        np.add.at(per_path, arrays["pair_chosen"], arrays["pair_count"])
        np.add.at(per_path, arrays["pair_rejected"], arrays["pair_count"])
        table = np.zeros(ctx.mdp.ref_logp.shape)
        for k, n in enumerate(arrays["path_lengths"]):
            np.add.at(table, (arrays["path_states"][k, :n], arrays["path_actions"][k, :n]), per_path[k])
        return cls.contract(table)

