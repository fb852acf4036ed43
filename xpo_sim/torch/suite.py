r"""The scorecard's transformer experiment: a needle instance whose π_ref is a distilled
transformer, and the transformer policy class that trains against it, both as plain
functions that a :class:`~xpo_sim.sweep.RunConfig` names by spec
(``"xpo_sim.torch.suite:distilled_needle"``, ``"xpo_sim.torch.suite:transformer_policy"``),
so the experiment runs through the same resumable sweep as every other one.

For a seed s the instance is ``token_needle(vocab, horizon, ε, seed=s)``; a
:class:`~xpo_sim.torch.TinyTransformerPolicy` (seed s) is distilled to its π_ref
(:func:`~xpo_sim.torch.distill`, uniform prefix weights, stop at max per-state KL ≤ 10⁻⁴),
and the instance's π_ref is then *replaced* by the frozen transformer's exact table
(:func:`~xpo_sim.torch.with_reference`), so π*, V* and every regret are exact for training
that transformer against that reference. The needle's ε is then π_ref's mass on the
optimum up to the distillation error (``info["original_ref_logp"]`` keeps the old table).

Distillation runs with one torch thread (a deterministic result for a seed, whichever
process builds it) and is cached per process: the policy builder, called in the process
that built the instance, trains a deep copy of the distilled transformer.
"""

from __future__ import annotations

import contextlib
import copy

import torch

from xpo_sim import checks, envs
from xpo_sim.mdp import TokenMDP
from xpo_sim.torch.policy import TinyTransformerPolicy, distill, with_reference

__all__ = ["distilled_needle", "transformer_policy"]

_DISTILLED: dict[tuple, tuple[TinyTransformerPolicy, TinyTransformerPolicy]] = {}  # key → (trainable, frozen)
_CACHE_SIZE = 16


@contextlib.contextmanager
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def distilled_needle(vocab: int = 4, horizon: int = 3, eps: float = 1e-2, seed: int = 0,
                     distill_steps: int = 3000) -> TokenMDP:
    """``token_needle(vocab, horizon, eps, seed=seed)`` with π_ref replaced by a
    TinyTransformerPolicy (seed ``seed``) distilled to it for at most ``distill_steps``
    Adam steps; ``info["transformer_key"]`` names the cached transformer for
    :func:`transformer_policy`."""
    distill_steps = checks.integer("distill_steps", distill_steps, minimum=0)
    needle = envs.token_needle(vocab, horizon, eps, seed=seed)
    key = (int(vocab), int(horizon), float(eps), int(seed), distill_steps)
    if key not in _DISTILLED:
        with _one_thread():
            policy = TinyTransformerPolicy(needle, seed=int(seed))
            distill(policy, needle, steps=distill_steps)
        if len(_DISTILLED) >= _CACHE_SIZE:
            _DISTILLED.pop(next(iter(_DISTILLED)))
        _DISTILLED[key] = (policy, policy.frozen_copy())
    policy, reference = _DISTILLED[key]
    mdp = with_reference(needle, reference)
    mdp.info["transformer_key"] = key
    return mdp


def transformer_policy(mdp: TokenMDP, beta: float, *, steps: int = 10, lr: float = 1e-3, minibatch: int = 256):
    """The transformer policy class of one run on an instance of :func:`distilled_needle`:
    a fresh copy of the distilled transformer, trained with ``steps`` Adam steps of
    learning rate ``lr`` per round against the frozen reference."""
    key = mdp.info.get("transformer_key") if isinstance(mdp, TokenMDP) else None
    if key is None:
        raise ValueError("transformer_policy needs an instance built by xpo_sim.torch.suite.distilled_needle "
                         "(its π_ref is the distilled transformer's), got one without info['transformer_key']")
    if key not in _DISTILLED:  # built elsewhere: rebuild (deterministic for the key)
        distilled_needle(*key)
    policy, reference = _DISTILLED[key]
    return copy.deepcopy(policy).as_policy_class(mdp, beta, reference=reference, steps=steps, lr=lr,
                                                 minibatch=minibatch)
