r"""The round loop of :func:`xpo_sim.run` with a transformer policy.

Round t = 1, 2, …: draw ``batch`` prompts s₀ ∼ ρ (numpy Generator of the run); sample
y ∼ πᵗ (or π_ref for OfflineDPO) and ỹ from the algorithm's explore sampler — the frozen
reference transformer ("ref"), the current transformer ("current"), or a uniformly drawn
snapshot of π¹ … πᵗ ("history") — token by token on the device with a ``torch.Generator``
seeded from the run's seed; label each pair with the oracle on the true rewards and store it
(:func:`xpo_sim.algorithms.label_and_store`, into :class:`xpo_sim.PreferenceData`); then take
``steps`` Adam steps on the cumulative objective

    L(θ) = [ Σ_pairs ℓ_DPO(θ) + α_t Σ_explored log π_θ(ỹ) ] / (number of pairs so far),

built from :func:`xpo_sim.losses.dpo_loss` and :func:`xpo_sim.losses.xpo_bonus` — the same
functions as the tabular path — on float32 sequence log-probabilities of the transformer and
of the reference, both by teacher forcing on the stored paths (the reference's are computed
once per distinct path). When the data hold more than ``minibatch`` distinct pairs, each
step uses ``minibatch`` pairs and explored responses drawn in proportion to their counts (an
unbiased estimate of L).

Every ``eval_every`` rounds (and at rounds 0 and the last) the transformer's exact per-state
table is extracted and scored by :class:`xpo_sim.algorithms.RunRecorder`: the rows have the
columns of :func:`xpo_sim.run`, every number exact. ``best_regret`` is the best over the
*evaluated* iterates. ``log_concentrability`` is exact: when the instance is small enough to
enumerate (``max_enumerate``) the sampling distributions of every round are fed to the
tracker, which costs one table extraction per round; ``track_concentrability=False`` skips
that and leaves the column NaN.

Reproducibility: on CPU the same seed gives the same DataFrame (the initialization is seeded
by the policy's ``seed``; sampling, labels and minibatches by the run's ``seed``). On CUDA
runs are reproducible up to the nondeterminism of some GPU kernels.

Memory: the "history" sampler keeps one CPU copy of the parameters per round (about 1.4 MB
per round at the default size).
"""

from __future__ import annotations

import math
import time
from typing import Iterable

import numpy as np
import pandas as pd
import torch

from xpo_sim import losses
from xpo_sim.algorithms import Algorithm, RunRecorder, check_run_arguments, label_and_store
from xpo_sim.data import PreferenceData
from xpo_sim.mdp import TokenMDP, TrajectoryBatch
from xpo_sim.preferences import BradleyTerry
from xpo_sim.torch.policy import TinyTransformerPolicy, check_precision, resolve_device, training_precision
from xpo_sim.trajectories import as_generator

__all__ = ["train", "evaluation_rounds"]

PAIR_LOSSES = ("dpo", "ipo", "ln_dpo")
REFERENCE_TOL = 1e-6  # max |π_ref − π_reference| per token accepted as "the same reference"


def evaluation_rounds(rounds: int, eval_every: int) -> set[int]:
    """Rounds evaluated exactly: 0, every ``eval_every``-th, and the last."""
    return {0, rounds, *range(eval_every, rounds + 1, eval_every)}


def _positive_int(name, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    return int(value)


def _to_batch(sampled) -> TrajectoryBatch:
    states, actions, lengths = (x.cpu().numpy() for x in sampled)
    return TrajectoryBatch(states, actions, lengths)


def _check_reference(mdp: TokenMDP, reference: TinyTransformerPolicy) -> None:
    table = reference.logp_table()
    same_support = np.array_equal(table > -np.inf, mdp.allowed)
    gap = float(np.max(np.abs(np.exp(table) - np.exp(mdp.ref_logp)))) if same_support else math.inf
    if gap > REFERENCE_TOL:
        raise ValueError(
            f"the instance's π_ref is not the reference transformer's (largest probability gap "
            f"{gap:.3g} > {REFERENCE_TOL:g}): build the instance with "
            f"xpo_sim.torch.with_reference(mdp, reference) so that every regret is exact"
        )


class _History:
    """CPU copies of the parameters of π¹ … πᵗ and a scratch model to sample from them."""

    def __init__(self, policy: TinyTransformerPolicy):
        self.snapshots: list[dict[str, torch.Tensor]] = []
        self.scratch = policy.frozen_copy()

    def add(self, policy: TinyTransformerPolicy) -> None:
        self.snapshots.append({k: v.detach().to("cpu", copy=True) for k, v in policy.state_dict().items()})

    def sample(self, prompts: torch.Tensor, rng: np.random.Generator, generator) -> tuple:
        which = rng.integers(len(self.snapshots), size=prompts.shape[0])
        width = self.scratch.tree.max_len
        device = prompts.device
        states = torch.full((prompts.shape[0], width), -1, dtype=torch.long, device=device)
        actions = states.clone()
        lengths = torch.zeros(prompts.shape[0], dtype=torch.long, device=device)
        for k in np.unique(which):
            rows = torch.from_numpy(np.flatnonzero(which == k)).to(device)
            self.scratch.load_state_dict(self.snapshots[int(k)])
            s, a, n = self.scratch.sample(prompts[rows], generator)
            states[rows], actions[rows], lengths[rows] = s, a, n
        return states, actions, lengths


class _Objective:
    """Teacher-forced sequence log-probabilities of the stored paths and the round loss."""

    def __init__(self, policy, reference, beta: float, kind: str, minibatch: int, device, precision: str = "fp32"):
        self.policy, self.reference, self.beta, self.kind = policy, reference, beta, kind
        self.minibatch, self.device, self.precision = minibatch, device, precision
        self.ref_logp = torch.empty(0, device=device)

    def prepare(self, data: PreferenceData, alpha: float) -> None:
        """Tensors of the current data; reference log-probs for the new distinct paths."""
        arrays = data.arrays()
        self.paths = tuple(torch.as_tensor(np.ascontiguousarray(arrays[name]), dtype=torch.long, device=self.device)
                           for name in ("path_states", "path_actions", "path_lengths"))
        done = self.ref_logp.shape[0]
        if done < data.n_distinct:
            with torch.no_grad(), training_precision(self.device, self.precision):
                new = self.reference.sequence_logp(*(x[done:] for x in self.paths))
            self.ref_logp = torch.cat([self.ref_logp, new])
        self.chosen, self.rejected = arrays["pair_chosen"], arrays["pair_rejected"]
        self.pair_count = np.array(arrays["pair_count"])
        self.explore_path = arrays["explore_path"] if alpha > 0 else arrays["explore_path"][:0]
        self.explore_count = np.array(arrays["explore_count"][: self.explore_path.shape[0]])
        self.n_pairs = max(1, data.n_pairs)
        self.alpha = alpha

    def pair_loss(self, logp, ref, c, r, index) -> torch.Tensor:
        """Per-pair loss of the algorithm (``loss`` = "dpo", "ipo" or "ln_dpo") from
        :mod:`xpo_sim.losses`."""
        if self.kind == "dpo":
            return losses.dpo_loss(logp[c], logp[r], ref[c], ref[r], self.beta)
        if self.kind == "ipo":
            return losses.ipo_loss(logp[c], logp[r], ref[c], ref[r], self.beta)
        length = self.paths[2][index].to(logp.dtype)
        return losses.ln_dpo_loss(logp[c], logp[r], ref[c], ref[r], length[c], length[r], self.beta)

    def loss(self, rng: np.random.Generator) -> torch.Tensor:
        chosen, rejected, explore = self.chosen, self.rejected, self.explore_path
        if chosen.shape[0] > self.minibatch:  # unbiased minibatch estimate of L
            pick = rng.choice(chosen.shape[0], size=self.minibatch, p=self.pair_count / self.pair_count.sum())
            chosen, rejected = chosen[pick], rejected[pick]
            pair_weight = np.full(self.minibatch, 1.0 / self.minibatch)
            if explore.shape[0]:
                m = min(self.minibatch, explore.shape[0])
                pick = rng.choice(explore.shape[0], size=m, p=self.explore_count / self.explore_count.sum())
                explore = explore[pick]
                explore_weight = np.full(m, self.explore_count.sum() / (m * self.n_pairs))
            else:
                explore_weight = np.zeros(0)
        else:
            pair_weight = self.pair_count / self.n_pairs
            explore_weight = self.explore_count / self.n_pairs
        needed, inverse = np.unique(np.concatenate([chosen, rejected, explore]), return_inverse=True)
        index = torch.as_tensor(needed, device=self.device)
        with training_precision(self.device, self.precision):
            logp = self.policy.sequence_logp(*(x[index] for x in self.paths))
        ref = self.ref_logp[index]
        inv = torch.as_tensor(inverse, device=self.device)
        c, r, e = torch.split(inv, [chosen.shape[0], rejected.shape[0], explore.shape[0]])
        weight = lambda w: torch.as_tensor(w, dtype=torch.float32, device=self.device)  # noqa: E731
        total = (weight(pair_weight) * self.pair_loss(logp, ref, c, r, index)).sum()
        if e.shape[0]:
            total = total + (weight(explore_weight) * losses.xpo_bonus(logp[e], self.alpha)).sum()
        return total


def train(
    mdp: TokenMDP,
    algorithm: Algorithm,
    beta: float,
    rounds: int,
    policy: TinyTransformerPolicy,
    *,
    reference: TinyTransformerPolicy | None = None,
    seed=0,
    steps: int = 10,
    lr: float = 1e-3,
    eval_every: int = 1,
    minibatch: int = 256,
    oracle=None,
    device=None,
    max_enumerate: int = 100_000,
    track_concentrability: bool = True,
    precision: str = "fp32",
    progress: bool = False,
) -> pd.DataFrame:
    """Run ``algorithm`` for ``rounds`` rounds with the transformer ``policy`` (trained in
    place: pass ``copy.deepcopy(policy)`` to keep the original) and return exact metrics.

    Parameters
    ----------
    mdp
        A token tree whose π_ref is the reference transformer's (build it with
        :func:`~xpo_sim.torch.with_reference`); checked, ValueError otherwise.
    algorithm, beta, rounds, seed, oracle, max_enumerate
        As in :func:`xpo_sim.run` (same configs, samplers, α schedules, oracles).
    reference
        The frozen reference transformer; default a frozen copy of ``policy`` as passed.
    steps, lr
        Adam steps per round and learning rate (Adam's moments persist across rounds).
    eval_every
        Exact evaluation (a DataFrame row) every ``eval_every`` rounds, plus rounds 0 and last.
    minibatch
        Pairs per Adam step once the data hold more distinct pairs than this.
    device
        None (the policy's device), "cpu" or "cuda"; the policy and reference are moved there.
    track_concentrability
        Feed the exact sampling distributions to the concentrability tracker every round
        (one table extraction per round); False leaves ``log_concentrability`` NaN.
    precision
        "fp32" (default) or "bf16": the forward passes of the training loss (the policy's
        and the reference's teacher-forced sequence log-probabilities) under
        ``torch.autocast(dtype=torch.bfloat16)``, meant for CUDA; parameters, gradients and
        Adam stay float32. Sampling and the exact evaluation (the per-state table, float32
        forward passes renormalized in float64) are never autocast, so every reported
        number is exact for the policy that is reported.

    Returns a DataFrame with the columns of :func:`xpo_sim.run` (``xpo_sim.algorithms.COLUMNS``)
    and, in ``df.attrs``: ``seconds``, ``sampled_tokens``, ``rounds``, ``device``.
    """
    beta, rounds = check_run_arguments(mdp, algorithm, beta, rounds)
    custom = [hook for hook in ("collect", "update", "reported_logp")
              if getattr(type(algorithm), hook, None) is not getattr(Algorithm, hook, None)]
    if custom:
        raise ValueError(f"{algorithm.name} overrides the round hooks {custom}; the transformer backend runs "
                         f"the standard loop only (OnlineDPO, HybridDPO, OfflineDPO, XPO, and the loss "
                         f"variants IPO and LNDPO of xpo_sim.methods)")
    if getattr(algorithm, "loss", "dpo") not in PAIR_LOSSES:
        raise ValueError(f"unknown loss {algorithm.loss!r}: expected one of {PAIR_LOSSES}")
    if not isinstance(policy, TinyTransformerPolicy):
        raise TypeError(f"policy must be a TinyTransformerPolicy, got {type(policy).__name__}")
    steps = _positive_int("steps", steps)
    eval_every = _positive_int("eval_every", eval_every)
    minibatch = _positive_int("minibatch", minibatch)
    check_precision(precision)
    if not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be positive and finite, got {lr!r}")
    if not policy.tree.matches(mdp):
        raise ValueError("the policy was built for a different tree (next_state or allowed tokens differ)")
    device = policy.device if device is None else resolve_device(device)
    policy.to(device)
    reference = policy.frozen_copy() if reference is None else reference.to(device)
    if any(p.requires_grad for p in reference.parameters()):
        raise ValueError("reference must be frozen (use policy.frozen_copy())")
    _check_reference(mdp, reference)

    start_time = time.perf_counter()
    rng = as_generator(seed)
    generator = torch.Generator(device=device)
    generator.manual_seed(int(rng.integers(2**62)))
    oracle = BradleyTerry() if oracle is None else oracle
    rounds = algorithm.total_rounds(rounds)
    evaluated = evaluation_rounds(rounds, eval_every)
    recorder = RunRecorder(mdp, beta, algorithm.name, evaluated, max_enumerate)
    tracker = recorder.tracker
    track = tracker.enabled and track_concentrability
    data = PreferenceData(mdp)
    objective = _Objective(policy, reference, beta, getattr(algorithm, "loss", "dpo"), minibatch, device, precision)
    optimizer = torch.optim.Adam(policy.parameters(), lr=lr, foreach=True)
    history = _History(policy) if algorithm.explore_sampler == "history" else None
    history_log_sum = None
    sampled_tokens = 0

    policy.train()
    table = policy.logp_table()  # the table of the current policy, or None once stale
    recorder.record(0, table, data, 0.0)
    loop: Iterable[int] = range(1, rounds + 1)
    if progress:
        from tqdm.auto import tqdm

        loop = tqdm(loop, desc=f"{algorithm.name} (transformer)", leave=False)
    for t in loop:
        n = algorithm.pairs_in_round(t)
        prompts = torch.as_tensor(rng.choice(mdp.n_states, size=n, p=mdp.start), device=device)
        samplers = {"ref": reference, "current": policy}
        y = samplers[algorithm.policy_sampler].sample(prompts, generator)
        if history is not None:
            history.add(policy)
            y_tilde = history.sample(prompts, rng, generator)
        else:
            y_tilde = samplers[algorithm.explore_sampler].sample(prompts, generator)
        sampled_tokens += int(y[2].sum()) + int(y_tilde[2].sum())
        label_and_store(mdp, [data], oracle, _to_batch(y), _to_batch(y_tilde), rng,
                        "both" if algorithm.bonus_on_pair() else "second")

        if track:
            if table is None:
                table = policy.logp_table()
            tables = {"ref": mdp.ref_logp, "current": table}
            log_y = tracker.policy_logp(tables[algorithm.policy_sampler])
            if history is not None:
                log_current = tracker.policy_logp(table)
                history_log_sum = log_current if history_log_sum is None else np.logaddexp(history_log_sum, log_current)
                log_y_tilde = history_log_sum - math.log(t)
            else:
                log_y_tilde = tracker.policy_logp(tables[algorithm.explore_sampler])
            tracker.add(log_y)
            tracker.add(log_y_tilde)

        alpha_t = algorithm.bonus_weight(t, beta)
        objective.prepare(data, alpha_t)
        for _ in range(steps):
            loss = objective.loss(rng)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        table = None
        if t in evaluated:
            table = policy.logp_table()
            recorder.record(t, table, data, alpha_t)

    df = recorder.frame()
    if tracker.enabled and not track:
        df["log_concentrability"] = math.nan
    df.attrs.update(seconds=time.perf_counter() - start_time, sampled_tokens=sampled_tokens,
                    rounds=rounds, device=str(device), precision=precision)
    return df
