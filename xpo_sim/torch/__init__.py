r"""Optional torch backend: a small causal transformer as the policy on a token tree.

The transformer reads a prefix — the prompt as its first token, then the response tokens so
far — and outputs next-token log-probabilities, with the tokens the instance disallows
masked. Because the instance is a *token tree* (one state per prefix), the transformer is a
per-state policy: :meth:`TinyTransformerPolicy.logp_table` enumerates every prefix (in
batches) and returns the exact (S, A) table of log π(a|s), which :func:`xpo_sim.evaluate`
scores exactly. So J_β, π*, V* and every regret stay exact for the transformer:

* the reference is a frozen copy of the initial transformer, and the instance's π_ref is
  *set from it* (:func:`with_reference`); :func:`distill` first fits the transformer to a
  given instance's π_ref when that π_ref should keep its meaning (e.g. a needle's ε);
* :func:`xpo_sim.run` takes the transformer as its ``policy`` (``run(mdp, XPO(), beta,
  rounds, policy=transformer, reference=..., steps=..., eval_every=...)``) and runs every
  algorithm config through the one round loop: batched sampling from the transformer,
  labels from the instance's oracle, the losses of :mod:`xpo_sim.losses` (the same
  functions the tabular path uses) on torch tensors, Adam, and exact evaluation every k
  rounds with the same DataFrame columns (:mod:`xpo_sim.torch.train`); ``train`` is the
  former entry point, an alias;
* ``precision="bf16"`` (of :func:`train` and :func:`distill`) autocasts the training forward
  passes to bfloat16 (for a GPU); the exact table is always a float32 forward pass,
  renormalized in float64, so the evaluation is the same in either precision.

Typical use::

    import copy
    from xpo_sim import XPO, envs
    import xpo_sim
    from xpo_sim.torch import TinyTransformerPolicy, distill, with_reference

    mdp = envs.token_needle(4, 3, eps=1e-3)
    policy = TinyTransformerPolicy(mdp, seed=0)
    distill(policy, mdp)                       # optional: fit π_ref of the instance first
    reference = policy.frozen_copy()
    mdp = with_reference(mdp, reference)       # π_ref := the frozen transformer, exactly
    df = xpo_sim.run(mdp, XPO(batch=8), 0.1, 50, policy=copy.deepcopy(policy), reference=reference)

Needs the ``torch`` extra; ``import xpo_sim`` never imports torch.
"""

from __future__ import annotations

import importlib

try:
    importlib.import_module("torch")  # PyTorch itself (absolute), without binding a name here
except ImportError as error:  # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError(
        "xpo_sim.torch needs PyTorch, which could not be imported: pip install 'xpo_sim[torch]' "
        "(install the CPU build first: pip install torch==2.13.0)"
    ) from error

from xpo_sim.torch.policy import (  # noqa: E402
    PRECISIONS,
    DistillResult,
    PrefixTree,
    TinyTransformerPolicy,
    distill,
    resolve_device,
    training_precision,
    with_reference,
)
from xpo_sim.torch.train import TransformerClass, train  # noqa: E402

__all__ = [
    "PrefixTree",
    "TinyTransformerPolicy",
    "DistillResult",
    "distill",
    "with_reference",
    "resolve_device",
    "training_precision",
    "PRECISIONS",
    "TransformerClass",
    "train",
]
