r"""The transformer as a policy class of :func:`xpo_sim.run`.

``xpo_sim.run(mdp, algorithm, beta, rounds, policy=TinyTransformerPolicy(...), steps=…, lr=…,
minibatch=…, device=…, precision=…, reference=…)`` runs any algorithm config with the
transformer: :meth:`TinyTransformerPolicy.as_policy_class` builds a :class:`TransformerClass`
for the run, and the one round loop of :mod:`xpo_sim.loop` does the rest (sampling,
labelling, the data, the exact metrics, the concentrability tracker).

* **Parameters** are the transformer itself, trained in place (pass
  ``copy.deepcopy(policy)`` to keep the original); the reference is a frozen copy.
* **Update**: ``steps`` Adam steps (moments persist across rounds) on

      L(θ) = [ Σ_pairs ℓ(θ) + α_t Σ_explored log π_θ(ỹ) ] / (number of pairs so far),

  with ℓ the pair loss of :mod:`xpo_sim.losses` (``dpo_loss``, ``ipo_loss``,
  ``ln_dpo_loss``; the same functions as the tabular path) and the bonus
  :func:`xpo_sim.losses.xpo_bonus`, on float32 sequence log-probabilities of the
  transformer and of the reference by teacher forcing (the reference's are computed once
  per distinct path). With more than ``minibatch`` distinct pairs each step uses
  ``minibatch`` pairs and explored responses drawn in proportion to their counts (an
  unbiased estimate of L), with the run's random stream.
* **Sampling** (the samplers of :data:`xpo_sim.rounds.SAMPLERS`) happens token by token on
  the device from the networks — the frozen reference ("ref"), the current transformer
  ("current"), the parameters before the last update ("previous"), a uniformly drawn
  snapshot of π¹…πᵗ ("history") — with a ``torch.Generator`` seeded from the run's stream.
* **Scoring**: the exact per-state table (:meth:`TinyTransformerPolicy.logp_table`, float32
  forward passes renormalized in float64) is extracted only when needed — on the recorded
  rounds (``run(..., eval_every=k)``) and, when the instance is small enough to enumerate
  (``max_enumerate``), every round for the concentrability tracker (``max_enumerate=0``
  turns that off). So ``best_regret`` is the best over the recorded rounds.
* ``precision="bf16"`` autocasts the training forward passes to bfloat16 (for a GPU);
  parameters, gradients and Adam stay float32 and the exact table is never autocast.

Methods that need an explicit reward table (RLHF, count-based UCB, SE-POPO), an exact
per-state table as the iterate (Inverse-Q*) or aggregated data (exact VPO) do not run with
the transformer; :func:`xpo_sim.run` says what is missing. Reproducibility: on CPU the same seeds give the
same DataFrame; on CUDA up to the nondeterminism of some GPU kernels. Memory: the "history"
sampler keeps one CPU copy of the parameters per round (about 1.4 MB at the default size).

:func:`train` is the former entry point, kept as a thin alias of :func:`xpo_sim.run`.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch

from xpo_sim import checks, losses
from xpo_sim.data import PreferenceData
from xpo_sim.loop import run
from xpo_sim.mdp import TokenMDP, TrajectoryBatch
from xpo_sim.policies import LOSS_KINDS
from xpo_sim.torch.policy import TinyTransformerPolicy, check_precision, resolve_device, training_precision

__all__ = ["TransformerClass", "train"]

REFERENCE_TOL = 1e-6  # max |π_ref − π_reference| per token accepted as "the same reference"


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


def _snapshot(policy: TinyTransformerPolicy) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in policy.state_dict().items()}


class _TransformerSampler:
    """The built-in samplers of :data:`xpo_sim.rounds.SAMPLERS`, drawn from the networks on
    the device (any other sampler is drawn by the loop from its exact tables)."""

    names = ("ref", "current", "previous", "history")

    def __init__(self, cls: "TransformerClass", ctx, keep_history: bool):
        self.cls, self.ctx, self.keep_history = cls, ctx, keep_history
        self.snapshots: list[dict[str, torch.Tensor]] = []  # π¹…πᵗ (all, or the last two)
        self.scratch: TinyTransformerPolicy | None = None

    def begin_round(self) -> None:
        self.snapshots.append(_snapshot(self.cls.policy))
        if not self.keep_history:
            del self.snapshots[:-2]

    def _from_snapshots(self, which: np.ndarray, prompts: torch.Tensor) -> tuple:
        if self.scratch is None:
            self.scratch = self.cls.policy.frozen_copy()
        n, width = prompts.shape[0], self.scratch.tree.max_len
        device = prompts.device
        states = torch.full((n, width), -1, dtype=torch.long, device=device)
        actions = states.clone()
        lengths = torch.zeros(n, dtype=torch.long, device=device)
        for k in np.unique(which):
            rows = torch.from_numpy(np.flatnonzero(which == k)).to(device)
            self.scratch.load_state_dict(self.snapshots[int(k)])
            s, a, m = self.scratch.sample(prompts[rows], self.cls.generator)
            states[rows], actions[rows], lengths[rows] = s, a, m
        return states, actions, lengths

    def sample(self, name: str, prompts: np.ndarray) -> TrajectoryBatch:
        cls = self.cls
        tensor = torch.as_tensor(prompts, device=cls.device)
        if name == "history":
            sampled = self._from_snapshots(self.ctx.rng.integers(len(self.snapshots), size=len(prompts)), tensor)
        elif name == "previous":
            previous = len(self.snapshots) - 2 if len(self.snapshots) > 1 else len(self.snapshots) - 1
            sampled = self._from_snapshots(np.full(len(prompts), previous), tensor)
        else:
            network = cls.reference if name == "ref" else cls.policy
            sampled = network.sample(tensor, cls.generator)
        cls.sampled_tokens += int(sampled[2].sum())
        return _to_batch(sampled)


class TransformerClass:
    """A :class:`TinyTransformerPolicy` as the policy class of one run (module docstring).

    Built by :meth:`TinyTransformerPolicy.as_policy_class` (which :func:`xpo_sim.run`
    calls) with the run's options: ``reference`` (the frozen reference transformer; default
    a frozen copy of ``policy`` as passed), ``steps`` Adam steps per round with learning
    rate ``lr``, ``minibatch`` pairs per step, ``device`` (None: the policy's; "cpu",
    "cuda"), ``precision`` ("fp32" or "bf16").
    """

    name = "transformer"
    exact_every_round = False  # the exact table costs a forward pass over every prefix

    def __init__(self, policy: TinyTransformerPolicy, mdp: TokenMDP, beta: float, *,
                 reference: TinyTransformerPolicy | None = None, steps: int = 10, lr: float = 1e-3,
                 minibatch: int = 256, device=None, precision: str = "fp32"):
        self.steps = checks.integer("steps", steps, minimum=1)
        self.minibatch = checks.integer("minibatch", minibatch, minimum=1)
        self.lr = checks.positive("lr", lr)
        self.precision = check_precision(precision)
        if not policy.tree.matches(mdp):
            raise ValueError("the policy was built for a different tree (next_state or allowed tokens differ)")
        if reference is not None and not isinstance(reference, TinyTransformerPolicy):
            raise ValueError(f"reference must be a frozen TinyTransformerPolicy, got {type(reference).__name__}")
        self.device = policy.device if device is None else resolve_device(device)
        self.mdp, self.beta = mdp, beta
        self.policy = policy.to(self.device)
        self.reference = policy.frozen_copy() if reference is None else reference.to(self.device)
        if any(p.requires_grad for p in self.reference.parameters()):
            raise ValueError("reference must be frozen (use policy.frozen_copy())")
        _check_reference(mdp, self.reference)
        self.objective_terms = _Objective(self.policy, self.reference, beta, self.minibatch, self.device,
                                          self.precision)
        self.optimizer = torch.optim.Adam(self.policy.parameters(), lr=self.lr, foreach=True)
        self.generator = torch.Generator(device=self.device)
        self.rng: np.random.Generator | None = None
        self.sampled_tokens = 0

    # -------------------------------------------------------- the loop's hooks
    def start_run(self, rng: np.random.Generator) -> None:
        """Seed the sampling generator from the run's stream; minibatches use the stream."""
        self.generator.manual_seed(int(rng.integers(2**62)))
        self.rng = rng
        self.policy.train()

    def make_sampler(self, ctx, keep_history: bool) -> _TransformerSampler:
        return _TransformerSampler(self, ctx, keep_history)

    def run_attrs(self) -> dict:
        return dict(sampled_tokens=self.sampled_tokens, device=str(self.device), precision=self.precision)

    # ------------------------------------------------------- the policy class
    @property
    def n_params(self) -> int:
        return self.policy.n_params

    def initial_params(self) -> TinyTransformerPolicy:
        return self.policy

    def policy_logp(self, params: TinyTransformerPolicy) -> np.ndarray:
        return params.logp_table()

    def objective(self, params, data: PreferenceData, alpha: float, loss: str = "dpo") -> tuple[float, np.ndarray]:
        """(L / pairs, its gradient over the parameters, flattened) on all of ``data``."""
        self._check_loss(loss)
        self.objective_terms.prepare(data, alpha, loss)
        params.zero_grad(set_to_none=True)
        value = self.objective_terms.loss(None)
        value.backward()
        grad = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1)
                          for p in params.parameters()])
        params.zero_grad(set_to_none=True)
        return float(value.detach()), grad.detach().cpu().numpy().astype(np.float64)

    def update(self, params, data: PreferenceData, alpha: float, loss: str = "dpo"):
        """``steps`` Adam steps on L / (pairs so far); returns the (same, updated) network."""
        self._check_loss(loss)
        if params is not self.policy:
            raise ValueError("the transformer class updates its own network in place; params must be it")
        self.objective_terms.prepare(data, alpha, loss)
        for _ in range(self.steps):
            value = self.objective_terms.loss(self.rng)
            self.optimizer.zero_grad(set_to_none=True)
            value.backward()
            self.optimizer.step()
        return params

    @staticmethod
    def _check_loss(loss: str) -> None:
        checks.choice("loss", loss, tuple(LOSS_KINDS))


class _Objective:
    """Teacher-forced sequence log-probabilities of the stored paths and the round loss."""

    def __init__(self, policy, reference, beta: float, minibatch: int, device, precision: str = "fp32"):
        self.policy, self.reference, self.beta = policy, reference, beta
        self.minibatch, self.device, self.precision = minibatch, device, precision
        self.kind = "dpo"
        self.ref_logp = torch.empty(0, device=device)
        self._data = None  # the dataset whose paths ref_logp follows (paths are append-only)

    def prepare(self, data: PreferenceData, alpha: float, kind: str = "dpo") -> None:
        """Tensors of ``data``; reference log-probs for its distinct paths not seen before
        (all of them when ``data`` is another dataset than last time)."""
        if data is not self._data:
            self._data, self.ref_logp = data, torch.empty(0, device=self.device)
        self.kind = kind
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

    def loss(self, rng: np.random.Generator | None) -> torch.Tensor:
        """L / (pairs so far): on a minibatch drawn with ``rng`` (an unbiased estimate) when
        the data hold more than ``minibatch`` distinct pairs; exactly when ``rng`` is None."""
        chosen, rejected, explore = self.chosen, self.rejected, self.explore_path
        if rng is not None and chosen.shape[0] > self.minibatch:  # unbiased minibatch estimate of L
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
    algorithm,
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
    progress: bool | str = "auto",
) -> pd.DataFrame:
    """The former entry point: ``xpo_sim.run(mdp, algorithm, beta, rounds, seed,
    policy=policy, ...)`` with the same options (``track_concentrability=False`` is
    ``max_enumerate=0``). ``df.attrs`` holds ``seconds``, ``sampled_tokens``, ``rounds``,
    ``device`` and ``precision``."""
    if not isinstance(policy, TinyTransformerPolicy):
        raise ValueError(f"policy must be a TinyTransformerPolicy, got {type(policy).__name__}")
    track_concentrability = checks.boolean("track_concentrability", track_concentrability)
    df = run(mdp, algorithm, beta, rounds, seed, policy=policy, oracle=oracle, eval_every=eval_every,
             max_enumerate=max_enumerate if track_concentrability else 0, progress=progress,
             reference=reference, steps=steps, lr=lr, minibatch=minibatch, device=device, precision=precision)
    df.attrs["rounds"] = algorithm.total_rounds(rounds)
    return df
