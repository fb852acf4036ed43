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
* :class:`InverseQStar` (Xia et al. 2024, "Inverse-Q*", arXiv 2408.14874): no pairwise
  preference loss; an estimate π̂* of the optimal policy (here: π_ref tilted toward the
  responses the oracle judged best among ``k`` of the policy's own samples) gives dense
  token rewards r̂(s,a) = β log(π̂*(a|s)/π_ref(a|s)), whose KL-regularized optimum (the
  policy the token-level reward imitation trains toward) is π̂* itself.
* :class:`SEPOPO` (Chen, Chen, Sun and Zhang 2025, arXiv 2502.00666): ``variant="theory"``,
  DPO plus a *preference-based* optimism term −α Σ_ỹ E_{y∼π}[σ(r_π(y) − r_π(ỹ))] against a
  sampler π_sam that is replaced by the learner's iterate after every epoch (π_sam = π_ref
  in the first epoch; the expectation exact over enumerated responses); ``variant="code"``,
  the authors' code (github.com/MYC000801/SE-POPO, ``dpo_iteration/wpo.py``): iterations
  whose pairs come from, and whose DPO loss is referenced to, the iterate they start from,
  plus α_i (σ(β h(y₂)) − ½)/β on the second response, α_i = 1e-2, 5e-3, 0.
* :class:`VPO` (Cen et al. 2024, arXiv 2405.19320), online: on-policy DPO pairs plus the
  value incentive −α[V_{r_π} − E_{π_cal} r_π], which in policy form is
  +αβ E_{x∼ρ, y∼π_cal} log(π(y|x)/π_ref(y|x)) — XPO's bonus with the sample average over
  ỹ ∼ π_ref replaced by the expectation over π_cal = π_ref (exact, or sampled).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import ClassVar

import numpy as np
from scipy.special import expit

from xpo_sim import checks
from xpo_sim.algorithms import Algorithm, HybridDPO, OfflineDPO, OnlineDPO
from xpo_sim.rounds import RoundContext, label_and_store, store_pairs
from xpo_sim.mdp import TokenMDP
from xpo_sim.policies import LogitsClass, RewardClass, class_name, hook, missing_reward_members
from xpo_sim.preferences import NO_PAIR, best_and_worst, oracle_scores
from xpo_sim.soft import evaluate
from xpo_sim.trajectories import sample_trajectories

__all__ = ["IterativeDPO", "IPO", "LNDPO", "SELM", "ExPO", "RLHF", "CountUCB", "InverseQStar", "SEPOPO", "VPO",
           "extrapolate", "ppo_surrogate", "conditioned_policy", "preference_incentive", "popo_code_objective"]


def _best_and_worst_of_k(ctx: RoundContext, n: int, k: int):
    """``n`` prompts s₀ ∼ ρ, ``k`` responses to each from πᵗ, ranked by the preference oracle
    on its scores (``oracle_scores``): the (best, worst) response of each prompt, as two
    batches. A prompt whose every comparison the oracle skipped (``NO_PAIR``) gives no pair
    and is counted as a skipped query in ``ctx.datasets``."""
    samples = ctx.sample("current", ctx.prompts(n), per_prompt=k)
    reward = oracle_scores(ctx.oracle, ctx.mdp, samples).reshape(n, k)
    best, worst = best_and_worst(ctx.oracle, reward, ctx.rng)
    rows = np.arange(n) * k
    ranked = np.flatnonzero(best != NO_PAIR)
    for data in ctx.datasets:
        data.add_skipped(int(n - ranked.size))
    return samples.take(rows[ranked] + best[ranked]), samples.take(rows[ranked] + worst[ranked])


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
        checks.responses_fit("k", self.k, self.batch * self.k)
        checks.boolean("accumulate", self.accumulate)

    def collect(self, ctx: RoundContext) -> None:
        best, worst = _best_and_worst_of_k(ctx, self.pairs_in_round(ctx.t), self.k)
        store_pairs(ctx.datasets, best, worst)

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
    Implemented as XPO's bonus with weight α β (the same gradients; docs/theory.md, "XPO, with its sign")."""

    alpha: float = 0.1

    def __post_init__(self):
        super().__post_init__()
        checks.nonnegative("alpha", self.alpha)

    @property
    def samplers(self) -> tuple[str, ...]:
        return ("current", "previous")

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


def _require_reward_class(algorithm: str, policy_class, why: str) -> None:
    """ValueError naming what ``policy_class`` lacks of :class:`RewardClass`, and why."""
    missing = missing_reward_members(policy_class)
    if missing:
        raise ValueError(f"{algorithm} needs a reward class (xpo_sim.policies.RewardClass, e.g. policy='implicit' "
                         f"or 'linear'), but the {class_name(policy_class)!r} class lacks {missing}: {why}")


def _require_enumerable(algorithm: str, mdp: TokenMDP, max_enumerate: int, why: str) -> None:
    if mdp.n_trajectories > max_enumerate:
        raise ValueError(f"{algorithm} needs an instance whose responses can be enumerated: this one has "
                         f"{mdp.n_trajectories} responses, more than max_enumerate={max_enumerate} ({why})")


class _RewardModel:
    """Bradley–Terry maximum likelihood over the run's box-bounded reward class (a reward
    class's objective with α = 0 is exactly the BT negative log-likelihood of r̂_θ)."""

    def __init__(self, cls: RewardClass, algorithm: str):
        _require_reward_class(algorithm, cls, _NEEDS_REWARD_TABLE)
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

    def check_compatible(self, policy_class, mdp) -> None:
        _require_reward_class(self.name, policy_class, _NEEDS_REWARD_TABLE)

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

    def __post_init__(self):
        super().__post_init__()
        checks.nonnegative("c", self.c)

    def check_compatible(self, policy_class, mdp) -> None:
        _require_reward_class(self.name, policy_class, _NEEDS_REWARD_TABLE)

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



# --------------------------------------------------------------------------- Inverse-Q*
def conditioned_policy(ref_logp: np.ndarray, good_counts: np.ndarray, tilt: float, beta: float) -> np.ndarray:
    r"""Inverse-Q*'s estimate of the optimal policy in this simulator (see :class:`InverseQStar`):

        π̂*(a|s) ∝ π_ref(a|s) · exp(c Ĝ(a|s) / β),   Ĝ(a|s) = G(s, a) / Σ_b G(s, b),

    where G(s, a) counts the judged-good responses that took token a in state s (Ĝ = 0 in
    states no judged-good response visits, so π̂* = π_ref there) and c = ``tilt``. Tokens
    π_ref disallows stay at −inf. Returns the (S, A) table log π̂*."""
    ref_logp = np.asarray(ref_logp, dtype=np.float64)
    counts = np.asarray(good_counts, dtype=np.float64)
    visits = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, visits, out=np.zeros_like(counts), where=visits > 0)
    allowed = ref_logp > -np.inf
    logits = np.where(allowed, ref_logp + (tilt / beta) * share, -np.inf)
    top = logits.max(axis=1, keepdims=True)
    return logits - (top + np.log(np.exp(logits - top).sum(axis=1, keepdims=True)))


@dataclass(frozen=True)
class InverseQStar(Algorithm):
    r"""Inverse-Q* (Xia, Gao, Ge, Xi, Zhang and Huang 2024, "Inverse-Q*: Token Level
    Reinforcement Learning for Aligning Large Language Models Without Preference Data",
    arXiv 2408.14874): token-level reward imitation with dense rewards read off an estimate
    π̂* of the optimal policy, without a pairwise preference loss.

    **The identity it inverts.** For the KL-regularized optimum, β log(π*(a|s)/π_ref(a|s))
    = Q*(s, a) − V*(s) = r(s, a) + V*(s') − V*(s) (docs/theory.md, "Implicit Q*"): the per-token
    log-ratio of π* is a potential-shaped reward with the same optimum (docs/theory.md, "The
    soft Bellman equations"). Given an
    estimate π̂*, Inverse-Q* therefore assigns every token the dense reward

        r̂(s, a) = β log(π̂*(a|s) / π_ref(a|s)),

    and trains the policy toward the KL-regularized optimum of r̂. That optimum is π̂*
    itself, exactly: with r̂ as reward, V̂ ≡ 0 solves the soft Bellman equations
    (β log Σ_a π_ref(a|s) e^{(r̂(s,a) + 0)/β} = β log Σ_a π̂*(a|s) = 0), so π*(r̂) = π̂*
    (a test checks this on random trees). The idealized update — the exact minimizer of the
    reward-imitation objective over all per-state policies — is πᵗ⁺¹ = π̂*ᵗ.

    **What plays the conditioned model.** The paper obtains π̂* from the model itself,
    conditioned on a better response (no reward model, no preference pairs). Here: each
    round draws ``k`` responses per prompt from πᵗ (``batch`` prompts), the oracle ranks them
    (:meth:`~xpo_sim.BradleyTerry.best_and_worst`: a Plackett–Luce draw under
    Bradley–Terry, the argmax under :class:`~xpo_sim.Argmax`) and the best one is the
    "better response" the model is conditioned on; π̂* is π_ref tilted toward the tokens of
    the judged-good responses (:func:`conditioned_policy`):

        π̂*(a|s) ∝ π_ref(a|s) exp(c Ĝ(a|s)/β),  Ĝ(a|s) = share of judged-good responses
        through s that take a there,

    i.e. the KL-regularized optimum of the dense pseudo-reward c·Ĝ, so that
    r̂(s, a) = c Ĝ(a|s) − β log Σ_b π_ref(b|s) e^{c Ĝ(b|s)/β}. With ``tilt`` c equal to the
    optimal reward and every judged-good response optimal, π̂* is π* on a needle bandit
    (tested). ``accumulate=False`` (default) conditions on this round's judgments only (the
    paper's estimate is per sampled response); ``True`` on all judgments so far.

    **Queries.** One ranked prompt is one query (as for :class:`IterativeDPO`); the
    (best ≻ worst) pair of each prompt is stored only so that the coverage columns and the
    query count see the judged responses — no loss is computed on it.

    **Policy class.** The iterate is the per-state table π̂* itself, which the logits class
    represents exactly (θ = log π̂* − log π_ref); it runs with ``policy="logits"`` only.

    **Inferred, not from the paper.** The paper's text (its equation numbers, how it prompts
    the model for the better response, its exact imitation loss and schedules) was not
    available to us; the dense reward is the paper's stated construction (token reward from
    the log-ratio of the estimated optimal policy to the reference), while the oracle-picked
    best-of-k conditioning and the tilt c are this simulator's stand-ins.
    """

    k: int = 4
    tilt: float = 1.0
    accumulate: bool = False

    def __post_init__(self):
        super().__post_init__()
        checks.integer("k", self.k, minimum=2)
        checks.responses_fit("k", self.k, self.batch * self.k)
        checks.positive("tilt", self.tilt)
        checks.boolean("accumulate", self.accumulate)

    def collect(self, ctx: RoundContext) -> None:
        good, worst = _best_and_worst_of_k(ctx, self.pairs_in_round(ctx.t), self.k)
        store_pairs(ctx.datasets, good, worst)
        counts = ctx.state.get("good_counts") if self.accumulate else None
        if counts is None:
            counts = np.zeros(ctx.mdp.ref_logp.shape)
        steps = np.arange(good.states.shape[1])[None, :] < good.lengths[:, None]
        np.add.at(counts, (good.states[steps], good.actions[steps]), 1.0)
        ctx.state["good_counts"] = counts

    def dense_reward(self, ctx: RoundContext) -> np.ndarray:
        """r̂(s, a) = β log(π̂*(a|s)/π_ref(a|s)) for the current judgments (0 on disallowed tokens)."""
        logp = conditioned_policy(ctx.mdp.ref_logp, ctx.state["good_counts"], self.tilt, ctx.beta)
        return np.where(ctx.mdp.allowed, ctx.beta * (logp - np.where(ctx.mdp.allowed, ctx.mdp.ref_logp, 0.0)), 0.0)

    def check_compatible(self, policy_class, mdp) -> None:
        if hook(policy_class, "from_logp") is None:
            raise ValueError(
                f"{self.name} needs a policy class that represents every per-state table exactly (a from_logp "
                f"hook, as policy='logits' has), but the {class_name(policy_class)!r} class has none: its "
                f"iterate is the per-state table π̂* (the exact optimum of its dense reward); a reward class with "
                f"shared or terminal-only parameters cannot represent it in general")

    def update(self, ctx: RoundContext) -> None:
        logp = conditioned_policy(ctx.mdp.ref_logp, ctx.state["good_counts"], self.tilt, ctx.beta)
        ctx.params = ctx.policy_class.from_logp(logp)


# ----------------------------------------------------------------------------- SE-POPO
class _Responses:
    """Every response of an enumerable instance, with its trajectory features Φ(τ) under a
    reward class's features and log π_ref(τ), grouped by prompt (exact expectations over
    π_θ(·|x), for :class:`SEPOPO` and :class:`VPO`)."""

    def __init__(self, mdp: TokenMDP, features, max_count: int):
        from xpo_sim.metrics import _trajectory_features
        from xpo_sim.trajectories import trajectory_logp

        if mdp.n_trajectories > max_count:
            raise ValueError(f"this instance has {mdp.n_trajectories} responses, more than max_enumerate={max_count}: "
                             f"the exact expectation over π_θ enumerates them")
        self.batch = mdp.trajectories(max_count)
        self.ref_logp = trajectory_logp(mdp, mdp.ref_logp, self.batch)
        self.phi = None if features is None else _trajectory_features(mdp, self.batch, features)
        starts = self.batch.start_states  # enumerated grouped by prompt, in state order
        bounds = np.flatnonzero(np.diff(starts)) + 1
        edges = np.concatenate([[0], bounds, [len(starts)]])
        self.groups = [slice(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]
        self._index = {(int(starts[i]), *self.batch.actions[i, :n].tolist()): i
                       for i, n in enumerate(self.batch.lengths)}

    def ids(self, batch) -> np.ndarray:
        """Index of each trajectory of ``batch`` among the enumerated responses."""
        return np.array([self._index[(int(batch.states[i, 0]), *batch.actions[i, :n].tolist())]
                         for i, n in enumerate(batch.lengths)], dtype=np.int64)


def preference_incentive(reward_hat: np.ndarray, ref_logp: np.ndarray, groups, explored: np.ndarray,
                         weights: np.ndarray, beta: float) -> tuple[float, np.ndarray]:
    r"""SE-POPO's preference incentive and its gradient with respect to the response rewards.

    Responses τ are enumerated and grouped by prompt (``groups``: one slice per prompt);
    ``reward_hat[τ]`` = r̂(τ), ``ref_logp[τ]`` = log π_ref(τ), and π(τ|x) ∝ π_ref(τ) e^{r̂(τ)/β}
    within its prompt's group (the soft-optimal policy of r̂; for the implicit class
    r̂(τ) − r̂(τ') = β log(π(τ)/π_ref(τ)) − β log(π(τ')/π_ref(τ')), the implicit reward
    difference). For explored responses ỹ_j (indices ``explored``, weights w_j):

        I = Σ_j w_j Σ_{τ of x_j} π(τ|x_j) σ(r̂(τ) − r̂(ỹ_j)),

    the weighted probability that a response of π beats the sampler's ỹ_j under the
    Bradley–Terry model of r̂. Returns (I, ∂I/∂r̂) where, with a_τ = Σ_j w_j σ_τj and
    b_τ = Σ_j w_j σ'_τj over the explored responses of τ's prompt,

        ∂I/∂r̂(τ) = π(τ)(a_τ − Σ_υ π(υ) a_υ)/β + π(τ) b_τ − Σ_{j: ỹ_j = τ} w_j Σ_υ π(υ) σ'_υj.
    """
    reward_hat = np.asarray(reward_hat, dtype=np.float64)
    grad = np.zeros_like(reward_hat)
    value = 0.0
    explored = np.asarray(explored, dtype=np.int64)
    weights = np.asarray(weights, dtype=np.float64)
    for group in groups:
        inside = (explored >= group.start) & (explored < group.stop)
        if not inside.any():
            continue
        e, w = explored[inside], weights[inside]
        r = reward_hat[group]
        z = ref_logp[group] + r / beta
        top = z.max()
        p = np.exp(z - top)
        p /= p.sum()
        sig = expit(r[:, None] - reward_hat[e][None, :])  # (responses, explored)
        slope = sig * (1.0 - sig)
        a, b = sig @ w, slope @ w
        value += float(p @ a)
        g = p * (a - p @ a) / beta + p * b
        np.add.at(g, e - group.start, -w * (p @ slope))
        grad[group] += g
    return value, grad


def popo_code_objective(reward_hat: np.ndarray, ref_reward_hat: np.ndarray, ref_logp: np.ndarray, groups,
                        chosen: np.ndarray, rejected: np.ndarray, pair_count: np.ndarray, explored: np.ndarray,
                        explored_count: np.ndarray, alpha: float, beta: float) -> tuple[float, np.ndarray]:
    r"""SE-POPO's objective as the authors' code minimizes it, and its gradient in the rewards.

    Responses τ are enumerated and grouped by prompt (``groups``: contiguous slices), with
    ``ref_logp[τ]`` = log π_ref(τ) under the *instance's* reference. ``reward_hat`` is r̂_θ(τ)
    of the policy being fitted, π_θ(τ|x) ∝ π_ref(τ) e^{r̂_θ(τ)/β}; ``ref_reward_hat`` is r̂ of
    the loss's reference π_prev, the iterate the iteration started from (the code's
    ``ref_model``). With h(τ) = log π_θ(τ|x) − log π_prev(τ|x) (:func:`~xpo_sim.losses.dpo_loss`
    and :func:`~xpo_sim.losses.popo_bonus` evaluate the terms),

        L = Σ_pairs n_p ℓ_DPO(h(τ₊) − h(τ₋))  +  Σ_j c_j α (σ(β h(y_j)) − ½)/β,

    the pairs (``chosen``, ``rejected``, ``pair_count``: response indices) being this
    iteration's and y_j (``explored``, ``explored_count``) the second response of each.
    Returns (L, ∂L/∂r̂). With G(τ) = ∂L/∂log π_θ(τ) — −n_p β σ(−m_p) on τ₊ and +n_p β σ(−m_p)
    on τ₋ (m_p = β(h(τ₊) − h(τ₋))), c_j α σ(βh)σ(−βh) on y_j — and ∂log π_θ(τ)/∂r̂(υ) =
    (1[τ = υ] − π_θ(υ|x))/β within a prompt,

        ∂L/∂r̂(υ) = (G(υ) − π_θ(υ|x) Σ_{τ of x} G(τ)) / β.
    """
    from xpo_sim.losses import dpo_loss, log_sigmoid, popo_bonus

    reward_hat = np.asarray(reward_hat, dtype=np.float64)
    starts = np.array([g.start for g in groups], dtype=np.int64)
    group_of = np.repeat(np.arange(len(groups)), [g.stop - g.start for g in groups])

    def log_policy(r):
        z = ref_logp + r / beta
        top = np.maximum.reduceat(z, starts)
        return z - (top + np.log(np.add.reduceat(np.exp(z - top[group_of]), starts)))[group_of]

    logp = log_policy(reward_hat)
    logp_prev = log_policy(np.asarray(ref_reward_hat, dtype=np.float64))
    w, l, e = chosen, rejected, explored
    value = float(pair_count @ dpo_loss(logp[w], logp[l], logp_prev[w], logp_prev[l], beta))
    value += float(explored_count @ popo_bonus(logp[e], logp_prev[e], alpha, beta))
    margin = beta * ((logp[w] - logp_prev[w]) - (logp[l] - logp_prev[l]))
    pull = pair_count * beta * np.exp(log_sigmoid(-margin))  # n_p β σ(−m_p)
    u = beta * (logp[e] - logp_prev[e])
    slope = explored_count * alpha * np.exp(log_sigmoid(u) + log_sigmoid(-u))  # c_j α σ(u)σ(−u)
    g = np.zeros_like(reward_hat)
    np.add.at(g, w, -pull)
    np.add.at(g, l, pull)
    np.add.at(g, e, slope)
    total = np.add.reduceat(g, starts)
    return value, (g - np.exp(logp) * total[group_of]) / beta


SEPOPO_SCHEDULES = ("constant", "inv_sqrt")
SEPOPO_VARIANTS = ("theory", "code")
SEPOPO_CODE_ALPHAS = (1e-2, 5e-3, 0.0)  # LLama_SFT_POPO.sh: α of iterations 1, 2, 3
ROUNDING_GTOL = 1e-7  # SE-POPO's update: projected gradient ≤ this × max(1, |L|) counts as converged


@dataclass(frozen=True)
class SEPOPO(Algorithm):
    r"""SE-POPO (Chen, Chen, Sun and Zhang 2025, "Avoiding exp(R_max) scaling in RLHF
    through Preference-based Exploration", arXiv 2502.00666): online preference
    optimization whose optimism is a *preference* (a probability in [0, 1]) instead of a
    reward. Two variants (``variant``):

    * ``"theory"`` (default): our reconstruction of the paper's algorithm — epochs whose
      sampler is the learner's own previous output, and a preference incentive
      −α Σ_ỹ E_{y∼π}[σ(r̂(y) − r̂(ỹ))] (below).
    * ``"code"``: the objective the authors ran, as their public code writes it
      (github.com/MYC000801/SE-POPO: ``dpo_iteration/wpo.py``, ``loss_type == "popo"``,
      driven by ``LLama_SFT_POPO.sh``; see *The "code" variant* below).

    **Rounds (theory).** Rounds are grouped in epochs of ``epoch_rounds`` rounds (the inner
    POPO run against a fixed sampler). The sampler π_sam is π_ref in the first epoch and, in every
    later epoch, the iterate the previous epoch ended with (self-exploration). Round t draws
    ``batch`` prompts, y ∼ πᵗ and ỹ ∼ π_sam, labels the pair and stores it; ỹ joins the
    epoch's explored responses. The update is the exact (local) minimizer over the reward
    class, warm-started at the current iterate,

        πᵗ⁺¹ = argmin_θ  Σ_{pairs so far} ℓ_DPO(π_θ)
                          − α_t Σ_{ỹ_i explored this epoch} E_{y∼π_θ(·|x_i)} σ(r_θ(y) − r_θ(ỹ_i)),

    with r_θ(y) − r_θ(ỹ) = β log(π_θ(y)/π_ref(y)) − β log(π_θ(ỹ)/π_ref(ỹ)) = r̂_θ(y) − r̂_θ(ỹ)
    (the implicit reward difference: V̂ cancels). The incentive is computed exactly by
    enumerating each explored prompt's responses (:func:`preference_incentive`), so the
    method needs an enumerable instance (at most ``max_enumerate`` responses) and a reward
    class (``policy="implicit"`` or ``"linear"``). The objective is non-convex; it is
    minimized by L-BFGS-B in the class's box, warm-started (``converged``: SciPy's success,
    or a projected gradient ≤ 10⁻⁷ max(1, |L|) when the line search stops at the rounding
    level of L).

    **Why it should not pay e^{R_max}** (the papers' argument as we understand it from their
    summaries). XPO's bonus α Σ log π(ỹ) is, through the implicit reward, a reward-scale
    quantity (β log π/π_ref ranges over an interval of width ~R_max), and turning the
    preference data's information about it into reward accuracy costs the inverse slope of
    σ on that range, up to e^{2R_max}. The incentive above is a win probability, bounded in
    [0, 1], so its estimation error against a fixed sampler carries no such factor;
    re-centring the sampler every epoch turns "beats the sampler" into "improves on it",
    and the paper bounds the number of epochs needed polynomially in R_max.

    **α (theory).** ``alpha`` is the weight per explored response; ``schedule`` "constant" or
    "inv_sqrt" (α_t = α/√t, as XPO's experiments use). The default α = 0.4 matches, at
    π_ref and β = 0.1, the initial pull of XPO's default α = 0.01: the gradient of XPO's term
    with respect to an unseen response's reward is α_XPO π(y)/β, that of the incentive at
    r̂ = 0 is α π(y) σ'(0) = α π(y)/4, equal when α = 4 α_XPO/β.

    **Inferred, not from the paper's box (theory).** The paper's algorithm boxes were not
    available to us; from its abstract and summaries we know the structure (POPO against a sampler
    with a preference-based exploration term; the sampler updated to the learner's output
    between runs; DPO-style implicit rewards). These details are our reconstruction: the
    incentive as E_{y∼π_θ} σ(r_θ(y) − r_θ(ỹ)) summed over the epoch's ỹ, the DPO data
    accumulated across epochs, the epoch's output being its last iterate (the theory may
    output a mixture), ``epoch_rounds`` = 25 and α = 0.4 (our defaults, not the paper's).

    **The "code" variant.** What ``wpo.py`` and ``LLama_SFT_POPO.sh`` do, read from the
    repository: three iterations; iteration i samples K = 2 responses per prompt from the
    model it starts from (``gen_hf2.py --K 2`` on ``model_path``, the previous iteration's
    output; the script's ``sam_model_path`` is passed but unused), scores them with a
    reward model (``run_wpo.py``'s ``prepare_data``, ``choose_type: max_random`` with K = 2:
    the higher score is chosen, a pair of equal scores is dropped), and trains from that
    model, with that model as ``ref_model``, on this iteration's pairs only, the loss per
    pair (``label_smoothing`` 0)

        −log σ(β(h(y₊) − h(y₋)))  +  α_i (σ(β h(y₂)) − ½)/β,   h = log π_θ − log π_ref,

    where y₂ is the *second* sampled response whichever won (``first_logratio`` selects
    ``chosen_logratios`` when ``chosen_index`` = 1, i.e. when the chosen response is the
    second one, and ``rejected_logratios`` otherwise), and α_i = 1e-2, 5e-3, 0 (the
    script's ``alpha``; β is TRL's default 0.1). The term is added to the minimized loss
    with a plus sign: it lowers σ(βh) on responses the iterate already produces — optimism,
    the sign of XPO's α·h(y) in the same file (``loss_type == "xpo"``).

    Here, with R = ``epoch_rounds``, iteration k (from 0) is rounds kR+1 … (k+1)R. At its
    first round π_prev, the loss's reference, becomes the current iterate (the iterate
    the previous iteration ended with; π_ref's class member θ₀ in iteration 0), and the
    iteration's data restart empty. Each round of the iteration draws ``batch`` prompts and
    both responses y, y₂ from π_prev — the current iterate at the time the code generates —;
    with ``drop_ties`` (default True) a query whose two responses the oracle scores equally
    (``oracle_scores``: by default the true rewards — two copies of one response, and
    distinct responses of equal reward) is counted as asked and dropped, as the code drops
    a tie; the others (with ``drop_ties=False``, all) are labelled by the run's oracle and
    added, with y₂ as the bonus's response, to the iteration's data;
    the update is the exact (local) minimizer over the reward class, warm-started at the
    current iterate, of :func:`popo_code_objective` on the iteration's data so far with
    α = ``iteration_alphas[k]`` (the last entry for every later iteration). So the iterate
    at the iteration's last round is the code's model of that iteration, fitted to all R·batch
    of its pairs; the rounds before it report the fit to part of them. The reference reset
    is in the loss only: π_θ stays parametrized by r̂_θ relative to the instance's π_ref, so
    h(y) = log π_θ(y) − log π_prev(y) = [(r̂_θ − r̂_prev)(y) − (V̂_θ − V̂_prev)(x)]/β, computed
    exactly over the enumerated responses; regret is, as for every method, measured on the
    instance's objective with its own π_ref and β. Requirements as for the theory: a reward
    class, an enumerable instance, and ``loss="dpo"``. ``alpha``/``schedule`` belong to the
    theory variant and ``iteration_alphas``/``drop_ties`` to the code variant (the other's
    are refused). On instances whose rewards tie exactly (the needles' equal "bad"
    responses) the tie rule decides how many pairs — and bonus terms — an iteration keeps,
    where a language reward model would rarely tie two distinct responses: ``drop_ties=False``
    keeps them, labelled by the oracle, as every other method does.

    **Concentrability column.** ỹ (theory) and both responses (code) are drawn with
    ``ctx.sample_table`` from the sampler's table, which reports them to the coverage
    tracker: ``log_concentrability`` counts every response drawn.
    """

    alpha: float = 0.4
    schedule: str = "constant"
    epoch_rounds: int = 25
    max_enumerate: int = 100_000
    variant: str = "theory"
    iteration_alphas: tuple = SEPOPO_CODE_ALPHAS
    drop_ties: bool = True

    def __post_init__(self):
        super().__post_init__()
        checks.nonnegative("alpha", self.alpha)
        checks.choice("schedule", self.schedule, SEPOPO_SCHEDULES)
        checks.integer("epoch_rounds", self.epoch_rounds, minimum=1)
        checks.integer("max_enumerate", self.max_enumerate, minimum=1)
        checks.choice("variant", self.variant, SEPOPO_VARIANTS)
        checks.boolean("drop_ties", self.drop_ties)
        alphas = self.iteration_alphas
        if isinstance(alphas, (str, bytes)) or not hasattr(alphas, "__len__") or len(alphas) == 0:
            raise ValueError(f"iteration_alphas must be a non-empty sequence of numbers >= 0 (α of each "
                             f"iteration of variant='code'), got {alphas!r}")
        object.__setattr__(self, "iteration_alphas", tuple(
            float(checks.nonnegative(f"iteration_alphas[{i}]", a)) for i, a in enumerate(alphas)))
        if self.variant == "code":
            if self.alpha != 0.4 or self.schedule != "constant":
                raise ValueError(f"alpha and schedule belong to variant='theory' (got alpha={self.alpha!r}, "
                                 f"schedule={self.schedule!r}); variant='code' takes iteration_alphas, its α per "
                                 f"iteration")
            if self.loss != "dpo":
                raise ValueError(f"loss={self.loss!r}: variant='code' runs the authors' DPO loss (loss='dpo')")
        elif self.iteration_alphas != SEPOPO_CODE_ALPHAS or not self.drop_ties:
            name = "iteration_alphas" if self.iteration_alphas != SEPOPO_CODE_ALPHAS else "drop_ties"
            raise ValueError(f"{name} belongs to variant='code' (got {getattr(self, name)!r} with "
                             f"variant='theory'); the theory variant takes alpha and schedule")

    def check_compatible(self, policy_class, mdp) -> None:
        if self.variant == "code":
            why = "its loss reads log π_θ(y) − log π_prev(y) exactly through the rewards r̂_θ, r̂_prev"
        else:
            why = "its incentive E_{y∼π_θ} σ(r̂_θ(y) − r̂_θ(ỹ)) is computed exactly through the reward r̂_θ"
        _require_reward_class(self.name, policy_class, why)
        _require_enumerable(self.name, mdp, self.max_enumerate, why)

    def alpha_at(self, t: int) -> float:
        if self.variant == "code":
            iteration = self.epoch(t)[0] if t >= 1 else 0
            return self.iteration_alphas[min(iteration, len(self.iteration_alphas) - 1)]
        if self.schedule == "inv_sqrt" and t >= 1:
            return float(self.alpha) / math.sqrt(t)
        return float(self.alpha)

    def epoch(self, t: int) -> tuple[int, int]:
        """(epoch — for variant="code", iteration — index from 0, position of round t in it from 0)."""
        return divmod(t - 1, self.epoch_rounds)

    def _responses(self, ctx: RoundContext) -> _Responses:
        if "responses" not in ctx.state:
            features = getattr(ctx.policy_class, "features", None)
            ctx.state["responses"] = _Responses(ctx.mdp, features, self.max_enumerate)
        return ctx.state["responses"]

    def collect(self, ctx: RoundContext) -> None:
        if self.variant == "code":
            self._collect_code(ctx)
            return
        responses = self._responses(ctx)
        prompts = ctx.prompts(self.pairs_in_round(ctx.t))
        y = ctx.sample("current", prompts)
        epoch, position = self.epoch(ctx.t)
        if epoch == 0:
            y_tilde = ctx.sample("ref", prompts)
        else:
            if position == 0:  # a new epoch: the sampler becomes the iterate the last one ended with
                ctx.state["sampler"] = ctx.logp
            y_tilde = ctx.sample_table(ctx.state["sampler"], prompts)
        label_and_store(ctx.mdp, ctx.datasets, ctx.oracle, y, y_tilde, ctx.rng, explored="none")
        if position == 0:
            ctx.state["explored"] = np.zeros(len(responses.batch))
        np.add.at(ctx.state["explored"], responses.ids(y_tilde), 1.0)

    def _collect_code(self, ctx: RoundContext) -> None:
        from xpo_sim.data import PreferenceData

        responses = self._responses(ctx)
        if self.epoch(ctx.t)[1] == 0:  # a new iteration: the loss's reference becomes the current iterate
            ctx.state["reference"] = ctx.logp
            ctx.state["reference_reward"] = responses.phi @ np.asarray(ctx.params, dtype=np.float64)
            ctx.state["iteration_data"] = PreferenceData(ctx.mdp)
        prompts = ctx.prompts(self.pairs_in_round(ctx.t))
        y = ctx.sample_table(ctx.state["reference"], prompts)
        y_second = ctx.sample_table(ctx.state["reference"], prompts)
        datasets = [*ctx.datasets, ctx.state["iteration_data"]]
        if self.drop_ties:  # run_wpo.py's prepare_data keeps a pair only when its two scores differ
            scores = oracle_scores(ctx.oracle, ctx.mdp, y), oracle_scores(ctx.oracle, ctx.mdp, y_second)
            keep = np.flatnonzero(scores[0] != scores[1])
            for data in datasets:
                data.add_skipped(int(len(y) - keep.size))  # asked, not stored
            y, y_second = y.take(keep), y_second.take(keep)
        label_and_store(ctx.mdp, datasets, ctx.oracle, y, y_second, ctx.rng, explored="second")

    def _minimize(self, cls, objective, params) -> np.ndarray:
        from xpo_sim.solvers import lbfgsb

        result = lbfgsb(objective, np.asarray(params, dtype=np.float64), *cls.box,
                        gtol=getattr(cls, "gtol", 1e-9), max_iter=2000)
        if not result.converged and result.projected_gradient <= ROUNDING_GTOL * max(1.0, abs(result.value)):
            # L-BFGS-B's line search fails once L changes at its rounding level; a projected
            # gradient this small relative to |L| is a stationary point to float64 precision
            result = replace(result, converged=True, message=result.message + " (projected gradient at the "
                             "rounding level of L: accepted)")
        results = getattr(cls, "solve_results", None)
        if results is not None:
            results.append(result)
        return result.x

    def code_objective(self, ctx: RoundContext):
        """The code variant's objective on this iteration's data, as a function θ ↦ (L, ∂L/∂θ)
        (:func:`popo_code_objective` chained through r̂_θ = Φθ over the enumerated responses,
        plus the class's λ‖θ‖² when it has one)."""
        cls = ctx.policy_class
        responses = self._responses(ctx)
        phi = responses.phi
        arrays = ctx.state["iteration_data"].arrays()
        ids = responses.ids(ctx.state["iteration_data"].batch())
        chosen, rejected = ids[arrays["pair_chosen"]], ids[arrays["pair_rejected"]]
        explored = ids[arrays["explore_path"]]
        counts, explored_counts = arrays["pair_count"].copy(), arrays["explore_count"].copy()
        reference_reward = ctx.state["reference_reward"]
        alpha, beta = self.alpha_at(ctx.t), ctx.beta
        l2 = float(getattr(cls, "l2", 0.0) or 0.0)

        def objective(theta):
            value, coef = popo_code_objective(phi @ theta, reference_reward, responses.ref_logp, responses.groups,
                                              chosen, rejected, counts, explored, explored_counts, alpha, beta)
            grad = phi.T @ coef
            if l2:
                value += l2 * float(theta @ theta)
                grad = grad + 2.0 * l2 * theta
            return value, grad

        return objective

    def update(self, ctx: RoundContext) -> None:
        cls = ctx.policy_class
        if self.variant == "code":
            data = ctx.state["iteration_data"]
            if data.n_pairs or data.n_explored:  # every query skipped: keep the iterate
                ctx.params = self._minimize(cls, self.code_objective(ctx), ctx.params)
            return
        responses = self._responses(ctx)
        phi = responses.phi
        counts = ctx.state["explored"]
        explored = np.flatnonzero(counts)
        weights = self.alpha_at(ctx.t) * counts[explored]
        data, beta, loss = ctx.data, ctx.beta, self.loss

        def objective(theta):
            value, grad = cls.objective(theta, data, 0.0, loss)
            incentive, coef = preference_incentive(phi @ theta, responses.ref_logp, responses.groups, explored,
                                                   weights, beta)
            return value - incentive, grad - phi.T @ coef

        ctx.params = self._minimize(cls, objective, ctx.params)


# --------------------------------------------------------------------------------- VPO
class _ExpectedExplored:
    """A :class:`~xpo_sim.PreferenceData` seen by a policy class with its explored responses
    replaced by fixed weighted ones: ``arrays()`` returns the wrapped data's paths and pairs,
    with ``explore_path`` = ``ids`` and ``explore_count`` = ``weights`` (the class multiplies
    them by the bonus weight)."""

    def __init__(self, data, ids: np.ndarray, weights: np.ndarray):
        self.data, self.ids, self.weights = data, ids, weights

    @property
    def n_pairs(self) -> int:
        return self.data.n_pairs

    def arrays(self) -> dict[str, np.ndarray]:
        arrays = dict(self.data.arrays())
        arrays["explore_path"] = self.ids
        arrays["explore_count"] = self.weights
        return arrays


VPO_EXPECTATIONS = ("exact", "sampled")
VPO_SCHEDULES = ("constant", "sqrt")


@dataclass(frozen=True)
class VPO(Algorithm):
    r"""Online VPO (Cen, Mei, Goshvadi, Dai, Yang, Yang, Schuurmans, Chi and Dai 2024,
    "Value-Incentivized Preference Optimization: A Unified Approach to Online and Offline
    RLHF", arXiv 2405.19320).

    **Objective, reward form.** VPO regularizes the Bradley–Terry maximum-likelihood reward
    with its own optimal KL-regularized value, with the sign of optimism online, calibrated
    by the reward's mean under a calibration policy π_cal (Bradley–Terry cannot see a
    reward's per-prompt shift, so V alone would be unbounded):

        r̂ᵗ⁺¹ = argmin_r  Σ_{pairs} −log σ(r(y₊) − r(y₋)) − α E_{x∼ρ}[ V_r(x) − E_{y∼π_cal} r(x, y) ],
        V_r(x) = max_π E_{y∼π}[r(x, y)] − β KL(π‖π_ref)(x) = β log Σ_y π_ref(y|x) e^{r(x,y)/β}.

    **Policy form (the algebra).** Reparametrize r by its optimal policy π = π*(r):
    r(x, y) = β log(π(y|x)/π_ref(y|x)) + V_r(x) (docs/theory.md, "Implicit Q*"). Then
    V_r(x) − E_{π_cal} r(x, y) = −β E_{y∼π_cal} log(π(y|x)/π_ref(y|x)), and the update is

        πᵗ⁺¹ = argmin_π  Σ_{pairs} ℓ_DPO(π) + αβ E_{x∼ρ, y∼π_cal} log π(y|x)  [− αβ E log π_ref, a constant].

    With π_cal = π_ref the added term is −αβ KL(π_ref‖π): minimizing it pushes π *away*
    from π_ref — optimism, the same sign as XPO's bonus. XPO's bonus α_X Σ_{i≤n} log π(ỹ_i),
    ỹ_i ∼ π_ref, is a sample of n·E_{π_ref} log π: **VPO with weight αβ is XPO with
    α_X = αβ/n** when the n explored responses have empirical distribution π_ref, and the two
    objectives then differ by the constant α_X Σ_i log π_ref(ỹ_i) (tested).

    **Here.** π_cal = π_ref. Pairs: both responses from πᵗ (the online algorithm samples its
    comparisons from the current policy). ``expectation="exact"`` computes
    E_{x∼ρ, y∼π_ref} log π(y|x) by enumerating the responses (weights ρ(x)π_ref(y|x), at
    most ``max_enumerate``); ``"sampled"`` draws one ỹ ∼ π_ref per pair and uses the running
    mean (bonus weight αβ/n on Σ_{i≤n} log π(ỹ_i)), as an LLM implementation would.
    ``schedule``: "constant" (α_t = α, the paper's fixed α) or "sqrt" (α_t = α√t, whose
    total weight grows like XPO's with α_X,t = α_X/√t: VPO(α, "sqrt") and XPO(αβ/batch,
    "inv_sqrt") put the same expected weight on E_{π_ref} log π in every round).
    Runs with the implicit, linear and logits classes (the exact expectation enters as
    aggregated data) — and, sampled, with any class.

    **Inferred.** The paper's text was not available to us beyond its abstract and
    summaries (regularize the MLE reward with its value, signed for optimism online, with
    reward calibration); the calibration form E_{π_cal} r, π_cal = π_ref, and on-policy pairs
    are our reading, and α's default (1.0) and the "sqrt" schedule are ours.
    """

    alpha: float = 1.0
    expectation: str = "exact"
    schedule: str = "constant"
    max_enumerate: int = 100_000
    policy_sampler: ClassVar[str] = "current"
    explore_sampler: ClassVar[str] = "current"

    def __post_init__(self):
        super().__post_init__()
        checks.nonnegative("alpha", self.alpha)
        checks.choice("expectation", self.expectation, VPO_EXPECTATIONS)
        checks.choice("schedule", self.schedule, VPO_SCHEDULES)
        checks.integer("max_enumerate", self.max_enumerate, minimum=1)

    @property
    def samplers(self) -> tuple[str, ...]:
        return ("current",) if self.expectation == "exact" else ("current", "ref")

    def check_compatible(self, policy_class, mdp) -> None:
        if self.expectation != "exact":
            return
        if not hook(policy_class, "aggregated_data"):
            raise ValueError(
                f"VPO(expectation='exact') needs a policy class that reads its data only through data.arrays() "
                f"(aggregated_data = True, as the implicit, linear and logits classes do), but the "
                f"{class_name(policy_class)!r} class does not: the exact calibration expectation enters the "
                f"class's objective as aggregated data; use expectation='sampled'")
        _require_enumerable(self.name, mdp, self.max_enumerate, "the exact calibration expectation enumerates them")

    def alpha_at(self, t: int) -> float:
        if self.schedule == "sqrt" and t >= 1:
            return float(self.alpha) * math.sqrt(t)
        return float(self.alpha)

    def bonus_weight(self, t: int, beta: float) -> float:
        """αβ on E_{π_cal} log π (exact), or αβ/n on Σ_{i≤n} log π(ỹ_i) (sampled, n = t·batch)."""
        weight = self.alpha_at(t) * beta
        return weight if self.expectation == "exact" else weight / max(1, t * self.batch)

    def collect(self, ctx: RoundContext) -> None:
        prompts = ctx.prompts(self.pairs_in_round(ctx.t))
        y, y_other = ctx.sample("current", prompts), ctx.sample("current", prompts)
        datasets = ctx.datasets
        if self.expectation == "exact":
            datasets = datasets + [self._calibrated(ctx).data]
        label_and_store(ctx.mdp, datasets, ctx.oracle, y, y_other, ctx.rng, explored="none")
        if self.expectation == "sampled":
            extra = ctx.sample("ref", prompts)
            store_pairs(ctx.datasets, extra.take([]), extra.take([]), explored=extra)

    def _calibrated(self, ctx: RoundContext) -> _ExpectedExplored:
        """The run's pairs (a private copy) with every response explored at weight ρ(x)π_ref(y|x)."""
        if "calibrated" not in ctx.state:
            from xpo_sim.data import PreferenceData

            responses = _Responses(ctx.mdp, None, self.max_enumerate)
            private = PreferenceData(ctx.mdp)
            ids = private.path_ids(responses.batch)
            weights = ctx.mdp.start[responses.batch.start_states] * np.exp(responses.ref_logp)
            ctx.state["calibrated"] = _ExpectedExplored(private, ids, weights)
        return ctx.state["calibrated"]

    def update(self, ctx: RoundContext) -> None:
        data = self._calibrated(ctx) if self.expectation == "exact" else ctx.data
        ctx.params = ctx.policy_class.update(ctx.params, data, ctx.bonus, self.loss)
