r"""A tiny causal transformer as a per-state policy on a token tree.

**Prefixes.** On a token tree every state s is a prefix: a root (the prompt) followed by the
tokens a₀ … a_{d−1} that lead to s. :class:`PrefixTree` builds that map from
``mdp.next_state`` by one forward pass from the roots; it raises ValueError when a state
has two parents (a DAG: prefixes merge, and one state would need two transformer inputs).
The transformer's vocabulary is ``n_prompts`` prompt tokens (one per root) followed by the
A action tokens: state s is the sequence (p, n_prompts + a₀, …, n_prompts + a_{d−1}).

**Policy.** :class:`TinyTransformerPolicy` is a decoder-only pre-LayerNorm transformer with
learned position embeddings (positions 0 … horizon − 1). Its output at the last position
of prefix s, with the tokens the instance disallows in s set to −inf, gives
log π(·|s) = log_softmax(logits) in float32. Causal attention makes the output at position h
depend on tokens 0 … h only, so one forward pass of a trajectory scores every step
(teacher forcing), and one pass over the *maximal* prefixes (states without children) gives
the distribution at every state (each state is read off at its depth in one of its
descendants).

**Exact table.** :meth:`TinyTransformerPolicy.logp_table` returns the (S, A) float64 table
of log π(a|s), renormalized in float64 (each row minus its log-sum-exp), so rows sum to 1
to about 1e-15 — within :class:`~xpo_sim.mdp.TokenMDP`'s 1e-9 check for a reference policy
and :func:`xpo_sim.evaluate`'s 1e-6 check for a policy. It enumerates the maximal prefixes
in chunks of ``chunk`` sequences (forward passes without autograd), writing each chunk's
states into the float64 table, so its memory is the table plus one chunk's activations
(about ``chunk · max_len · width · (4 + mlp_ratio)`` floats) whatever the number of states.
The forward passes of the table always run in float32: autocast is switched off inside
and float32 matmuls are forced to full precision (no TF32), so mixed-precision training
(``precision="bf16"`` of :func:`distill` and :func:`xpo_sim.torch.train`) never reaches the
evaluation.

**Mixed precision.** ``precision="bf16"`` runs the forward passes of the *training* losses
under ``torch.autocast(dtype=torch.bfloat16)`` (parameters, gradients and Adam stay float32,
and log-softmax is taken in float32); "fp32" (the default) runs them in float32.

**Reference.** :func:`with_reference` returns the instance with π_ref replaced by a (frozen)
transformer's table, so the instance's π*, V* and regret are the exact ones for training
that transformer against that reference. :func:`distill` first fits a transformer to an
instance's own π_ref (weighted per-state KL(π_ref ‖ π_θ), Adam), so that π_ref keeps its
meaning (e.g. a needle's ε) after the replacement.
"""

from __future__ import annotations

import contextlib
import copy
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from xpo_sim import checks
from xpo_sim.mdp import TokenMDP
from xpo_sim.soft import occupancy

__all__ = ["PrefixTree", "TinyTransformerPolicy", "DistillResult", "distill", "with_reference",
           "resolve_device", "training_precision", "PRECISIONS"]

PRECISIONS = ("fp32", "bf16")
TABLE_CHUNK = 8192  # maximal prefixes per forward pass of the exact table
# β range of the transformer's training losses, which run in float32 (max ≈ 3.4e38, smallest
# normal ≈ 1.2e-38): β·(log-ratio margin) must stay finite for margins up to ~1e8 nats, and β
# itself a normal float32. Outside it the loss is inf/NaN (β = 1e300 ended in
# "logp[0, 0] = nan") or β rounds to 0 and nothing is learned.
FLOAT32_BETA_RANGE = (1e-30, 1e30)


def resolve_device(device) -> torch.device:
    """``device`` as a torch.device; ValueError for CUDA when no GPU is usable."""
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}: {error}") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device={device!r} was asked for, but torch.cuda.is_available() is False (a CPU build "
            f"of torch, or no GPU visible); use device='cpu'"
        )
    if resolved.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
    return resolved


def check_precision(precision) -> str:
    """``precision`` if it is one of :data:`PRECISIONS`, else ValueError."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return precision


def training_precision(device: torch.device, precision: str = "fp32"):
    """The context of a training forward pass: ``torch.autocast`` to bfloat16 on ``device``
    for ``precision="bf16"``, nothing for "fp32". Run ``backward()`` outside of it."""
    if check_precision(precision) == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)


@contextlib.contextmanager
def _exact_float32(device: torch.device):
    """Float32 forward passes whatever the caller set: autocast off, full-precision float32
    matmuls (no TF32) for the duration, the previous setting restored afterwards."""
    before = torch.get_float32_matmul_precision()
    if before != "highest":
        torch.set_float32_matmul_precision("highest")
    try:
        with torch.autocast(device_type=torch.device(device).type, enabled=False):
            yield
    finally:
        if before != "highest":
            torch.set_float32_matmul_precision(before)


# ----------------------------------------------------------------------------- prefix tree
class PrefixTree:
    """The state ↔ prefix map of a token tree (see the module docstring).

    Attributes (numpy, over the S states): ``parent`` and ``parent_token`` (−1 at a root),
    ``depth``, ``root``, ``prompt`` (prompt index of the state's root), ``tokens`` (S, L)
    the transformer input of each prefix, padded with −1 (L = ``max_len`` = longest
    response), ``roots`` (prompt p is the tree rooted at ``roots[p]``), and the MDP's
    ``next_state`` and ``allowed`` arrays.

    Raises ValueError when a state has two parents or a start state (ρ > 0) has a parent.
    """

    def __init__(self, mdp: TokenMDP):
        if not isinstance(mdp, TokenMDP):
            raise ValueError(f"mdp must be a TokenMDP, got {type(mdp).__name__}")
        next_state = np.array(mdp.next_state)
        n_states, n_actions = next_state.shape
        src, token = np.nonzero(next_state >= 0)
        child = next_state[src, token]
        counts = np.bincount(child, minlength=n_states)
        merged = np.flatnonzero(counts > 1)
        if merged.size:
            c = int(merged[0])
            (first, second) = np.flatnonzero(child == c)[:2]
            raise ValueError(
                f"not a token tree: state {c} is reached from state {src[first]} by token "
                f"{token[first]} and from state {src[second]} by token {token[second]} (prefixes "
                f"merge, as in a DAG); the transformer backend needs one state per prefix"
            )
        parent = np.full(n_states, -1, dtype=np.int64)
        parent_token = np.full(n_states, -1, dtype=np.int64)
        parent[child] = src
        parent_token[child] = token
        inner_starts = np.flatnonzero((mdp.start > 0) & (parent >= 0))
        if inner_starts.size:
            s = int(inner_starts[0])
            raise ValueError(
                f"not a token tree of prompts: start state {s} (ρ > 0) is also reached from state "
                f"{parent[s]} by token {parent_token[s]}; every prompt must be a root"
            )
        roots = np.flatnonzero(parent < 0)
        n_prompts = int(roots.size)

        depth = np.full(n_states, -1, dtype=np.int64)
        root = np.full(n_states, -1, dtype=np.int64)
        depth[roots] = 0
        root[roots] = roots
        layers = [roots]
        frontier = roots
        while frontier.size:
            rows, tokens_taken = np.nonzero(next_state[frontier] >= 0)
            kids = next_state[frontier[rows], tokens_taken]
            depth[kids] = depth[frontier[rows]] + 1
            root[kids] = root[frontier[rows]]
            frontier = kids
            if kids.size:
                layers.append(kids)
        assert (depth >= 0).all()  # one parent each and topological order: every state is reached
        max_len = int(depth.max()) + 1

        prompt = np.full(n_states, -1, dtype=np.int64)
        prompt[roots] = np.arange(n_prompts)
        prompt = prompt[root]
        tokens = np.full((n_states, max_len), -1, dtype=np.int64)
        tokens[:, 0] = prompt
        for layer in layers[1:]:
            tokens[layer] = tokens[parent[layer]]
            tokens[layer, depth[layer]] = n_prompts + parent_token[layer]

        # one maximal descendant (a state without children) per state: the state's
        # distribution is the transformer's output at position depth[s] of that prefix
        has_child = (next_state >= 0).any(axis=1)
        first_child = next_state[np.arange(n_states), np.argmax(next_state >= 0, axis=1)]
        representative = np.arange(n_states, dtype=np.int64)
        for layer in reversed(layers):
            inner = layer[has_child[layer]]
            representative[inner] = representative[first_child[inner]]
        self.maximal = np.unique(representative)
        self.maximal_row = np.searchsorted(self.maximal, representative)

        self.n_states, self.n_actions, self.n_prompts = n_states, n_actions, n_prompts
        self.max_len = max_len
        self.next_state = next_state
        self.allowed = np.array(mdp.allowed)
        self.parent, self.parent_token = parent, parent_token
        self.depth, self.root, self.prompt, self.roots = depth, root, prompt, roots
        self.tokens = tokens

    @property
    def vocab_size(self) -> int:
        """Prompt tokens plus action tokens."""
        return self.n_prompts + self.n_actions

    def prefix(self, state: int) -> tuple[int, tuple[int, ...]]:
        """(prompt index, action tokens) of the prefix that ``state`` stands for."""
        row = self.tokens[int(state)]
        d = int(self.depth[int(state)])
        return int(row[0]), tuple(int(t) - self.n_prompts for t in row[1 : d + 1])

    def state(self, prompt: int, actions=()) -> int:
        """The state reached from prompt ``prompt`` by ``actions``; ValueError if the
        episode ends before the last token."""
        if not 0 <= int(prompt) < self.n_prompts:
            raise ValueError(f"prompt must lie in [0, {self.n_prompts}), got {prompt!r}")
        s = int(self.roots[int(prompt)])
        for h, a in enumerate(actions):
            if not 0 <= int(a) < self.n_actions:
                raise ValueError(f"token {a!r} at step {h} is not an action in [0, {self.n_actions})")
            s = int(self.next_state[s, int(a)])
            if s < 0:
                raise ValueError(f"the episode ends at step {h} (token {a}) before the prefix does")
        return s

    def matches(self, mdp: TokenMDP) -> bool:
        """Whether ``mdp`` has this tree's transitions and allowed tokens."""
        return (mdp.next_state.shape == self.next_state.shape
                and np.array_equal(mdp.next_state, self.next_state)
                and np.array_equal(mdp.allowed, self.allowed))


# ----------------------------------------------------------------------------- transformer
class _Block(nn.Module):
    """Pre-LayerNorm block: causal multi-head self-attention, then a GELU MLP."""

    def __init__(self, width: int, heads: int, mlp_ratio: int):
        super().__init__()
        self.heads = heads
        self.ln_attn = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.attn_out = nn.Linear(width, width)
        self.ln_mlp = nn.LayerNorm(width)
        self.mlp_in = nn.Linear(width, mlp_ratio * width)
        self.mlp_out = nn.Linear(mlp_ratio * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, width = x.shape
        qkv = self.qkv(self.ln_attn(x)).view(batch, length, 3, self.heads, width // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.attn_out(attended.transpose(1, 2).reshape(batch, length, width))
        return x + self.mlp_out(F.gelu(self.mlp_in(self.ln_mlp(x))))


class TinyTransformerPolicy(nn.Module):
    """A decoder-only causal transformer over the prefixes of a token tree, as a policy.

    Parameters
    ----------
    mdp : TokenMDP or PrefixTree
        The token tree (its transitions and allowed tokens; rewards and π_ref are not used).
    width, depth, heads, mlp_ratio
        Model width, number of blocks, attention heads (must divide ``width``), MLP
        expansion. The defaults (96, 3, 4, 4) give about 340 thousand parameters.
    init_std
        Standard deviation of the normal initialization (GPT-2 style; residual output
        projections scaled by 1/√(2·depth)); small values start close to uniform.
    seed
        Seed of the initialization (the global torch RNG is left untouched).
    device
        "cpu" (default) or "cuda".

    Methods return float32 tensors on the model's device unless they say otherwise.
    """

    def __init__(self, mdp, *, width: int = 96, depth: int = 3, heads: int = 4, mlp_ratio: int = 4,
                 init_std: float = 0.02, seed: int = 0, device="cpu"):
        super().__init__()
        for name, value in (("width", width), ("depth", depth), ("heads", heads), ("mlp_ratio", mlp_ratio)):
            checks.integer(name, value, minimum=1)
        if width % heads:
            raise ValueError(f"heads={heads} must divide width={width}")
        checks.positive("init_std", init_std)
        seed = checks.integer("seed", seed, minimum=0, maximum=2**64 - 1)  # torch.manual_seed's range
        tree = mdp if isinstance(mdp, PrefixTree) else PrefixTree(mdp)
        self.tree = tree
        self.config = dict(width=int(width), depth=int(depth), heads=int(heads),
                           mlp_ratio=int(mlp_ratio), init_std=float(init_std), seed=int(seed))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            self.token_embedding = nn.Embedding(tree.vocab_size, width)
            self.position_embedding = nn.Embedding(tree.max_len, width)
            self.blocks = nn.ModuleList(_Block(width, heads, mlp_ratio) for _ in range(depth))
            self.ln_final = nn.LayerNorm(width)
            self.head = nn.Linear(width, tree.n_actions)
            for name, param in self.named_parameters():
                if name.endswith("bias") or ".ln_" in name or name.startswith("ln_"):
                    continue
                residual = name.endswith(("attn_out.weight", "mlp_out.weight"))
                std = init_std / math.sqrt(2 * depth) if residual else init_std
                nn.init.normal_(param, 0.0, std)
            for module in self.modules():
                if isinstance(module, nn.Linear):
                    nn.init.zeros_(module.bias)
        # the tree as non-persistent buffers: they follow .to(device) but are not parameters
        # and not in the state_dict
        self.register_buffer("next_state", torch.from_numpy(tree.next_state.copy()), persistent=False)
        self.register_buffer("allowed", torch.from_numpy(tree.allowed.copy()), persistent=False)
        self.register_buffer("prompt_token", torch.from_numpy(tree.prompt.copy()), persistent=False)
        self.register_buffer("depth_of", torch.from_numpy(tree.depth.copy()), persistent=False)
        self.register_buffer("maximal_row", torch.from_numpy(tree.maximal_row.copy()), persistent=False)
        maximal_tokens = np.where(tree.tokens[tree.maximal] < 0, 0, tree.tokens[tree.maximal])
        self.register_buffer("maximal_tokens", torch.from_numpy(maximal_tokens), persistent=False)
        # the states sorted by their maximal prefix, for the chunked table
        by_row = np.argsort(tree.maximal_row, kind="stable")
        self._row_bounds = np.searchsorted(tree.maximal_row[by_row], np.arange(tree.maximal.size + 1))
        self.register_buffer("states_by_row", torch.from_numpy(by_row), persistent=False)
        self.to(resolve_device(device))

    # ------------------------------------------------------------------ basics
    @property
    def device(self) -> torch.device:
        return self.head.weight.device

    @property
    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def frozen_copy(self) -> "TinyTransformerPolicy":
        """A deep copy in eval mode with ``requires_grad=False`` everywhere (a reference)."""
        frozen = copy.deepcopy(self)
        frozen.eval()
        frozen.requires_grad_(False)
        return frozen

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Unmasked next-token logits (B, L, A) for token sequences (B, L), L ≤ max_len."""
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        x = self.token_embedding(tokens) + self.position_embedding(positions)
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_final(x))

    def _masked_logp(self, logits: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
        logits = logits.float().masked_fill(~self.allowed[states], -math.inf)
        return torch.log_softmax(logits, dim=-1)

    # ------------------------------------------------------------------ per-state policy
    def state_logp(self, states: torch.Tensor | None = None, chunk: int = 8192) -> torch.Tensor:
        """log π(·|s) (n, A), float32, −inf on disallowed tokens, for ``states`` (default:
        every state), differentiable. Runs the transformer once on the maximal prefixes
        that cover ``states``, ``chunk`` sequences at a time."""
        if states is None:
            states = torch.arange(self.tree.n_states, device=self.device)
        rows = self.maximal_row[states]
        unique_rows, inverse = torch.unique(rows, return_inverse=True)
        inputs = self.maximal_tokens[unique_rows]
        logits = torch.cat([self(inputs[i : i + chunk]) for i in range(0, inputs.shape[0], chunk)])
        return self._masked_logp(logits[inverse, self.depth_of[states]], states)

    @torch.no_grad()
    def logp_table(self, chunk: int = TABLE_CHUNK) -> np.ndarray:
        """The exact per-state table log π(a|s) (S, A), float64 numpy, −inf on disallowed
        tokens, each row renormalized in float64 (sums to 1 within ~1e-15).

        Batched prefix enumeration: one float32 forward pass (autocast off, no TF32) per
        ``chunk`` maximal prefixes, each chunk's states copied into the table before the
        next; memory is the table plus one chunk's activations."""
        checks.integer("chunk", chunk, minimum=1)
        n_maximal = self.maximal_tokens.shape[0]
        table = np.empty((self.tree.n_states, self.tree.n_actions), dtype=np.float64)
        with _exact_float32(self.device):
            for first in range(0, n_maximal, int(chunk)):
                last = min(first + int(chunk), n_maximal)
                states = self.states_by_row[self._row_bounds[first] : self._row_bounds[last]]
                logits = self(self.maximal_tokens[first:last])
                picked = logits[self.maximal_row[states] - first, self.depth_of[states]]
                table[states.cpu().numpy()] = self._masked_logp(picked, states).double().cpu().numpy()
        peak = table.max(axis=1, keepdims=True)
        return table - (peak + np.log(np.exp(table - peak).sum(axis=1, keepdims=True)))

    # ------------------------------------------------------------------ sequences
    def sequence_logp(self, states: torch.Tensor, actions: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """log π(τ) = Σ_{h < length} log π(a_h|s_h) (N,) for padded trajectories (states and
        actions (N, W), −1 beyond ``lengths``), by teacher forcing: one forward pass."""
        width = states.shape[1]
        inputs = torch.empty_like(states)
        inputs[:, 0] = self.prompt_token[states[:, 0]]
        if width > 1:
            previous = actions[:, :-1]
            inputs[:, 1:] = torch.where(previous >= 0, previous + self.tree.n_prompts, 0)
        logp = self._masked_logp(self(inputs), states.clamp(min=0))
        steps = logp.gather(2, actions.clamp(min=0).unsqueeze(2)).squeeze(2)
        valid = torch.arange(width, device=states.device) < lengths.unsqueeze(1)
        return torch.where(valid, steps, torch.zeros_like(steps)).sum(dim=1)

    def as_policy_class(self, mdp: TokenMDP, beta: float, **options):
        """This transformer as the policy class of one :func:`xpo_sim.run` on ``mdp`` (see
        :class:`xpo_sim.torch.train.TransformerClass` for ``options``). Raises ValueError
        for a β outside :data:`FLOAT32_BETA_RANGE` (the float32 losses cannot carry it)."""
        from xpo_sim.torch.train import TransformerClass

        return TransformerClass(self, mdp, check_float32_beta(beta), **options)

    @torch.no_grad()
    def sample(self, start_states: torch.Tensor, generator: torch.Generator | None = None):
        """One response per start state, sampled token by token from the transformer.

        Returns (states, actions, lengths) tensors on the model's device, (n, max_len) with
        −1 beyond each length, as in :class:`xpo_sim.TrajectoryBatch`.
        """
        n, width = start_states.shape[0], self.tree.max_len
        device = self.device
        states = torch.full((n, width), -1, dtype=torch.long, device=device)
        actions = torch.full((n, width), -1, dtype=torch.long, device=device)
        lengths = torch.zeros(n, dtype=torch.long, device=device)
        inputs = torch.zeros((n, width), dtype=torch.long, device=device)
        inputs[:, 0] = self.prompt_token[start_states]
        current = start_states.clone()
        for h in range(width):
            alive = current >= 0
            safe = current.clamp(min=0)
            probs = self._masked_logp(self(inputs[:, : h + 1])[:, h], safe).exp()
            token = torch.multinomial(probs, 1, generator=generator).squeeze(1)
            states[:, h] = torch.where(alive, current, -1)
            actions[:, h] = torch.where(alive, token, -1)
            lengths += alive.long()
            if h + 1 < width:
                inputs[:, h + 1] = torch.where(alive, token + self.tree.n_prompts, 0)
            current = torch.where(alive, self.next_state[safe, token], -1)
        return states, actions, lengths


# ----------------------------------------------------------------------------- reference
def check_float32_beta(beta, name: str = "beta") -> float:
    """β as a float inside :data:`FLOAT32_BETA_RANGE`, or a ValueError naming it."""
    beta = checks.beta(beta, name)
    low, high = FLOAT32_BETA_RANGE
    if not low <= beta <= high:
        raise ValueError(f"{name} must lie in [{low:g}, {high:g}] for the transformer, whose losses run in "
                         f"float32 (β·margin would overflow, or β round to 0), got {beta!r}")
    return beta


def _check_policy(policy) -> TinyTransformerPolicy:
    if not isinstance(policy, TinyTransformerPolicy):
        raise ValueError(f"policy must be a TinyTransformerPolicy, got {type(policy).__name__}")
    return policy


def with_reference(mdp: TokenMDP, reference: TinyTransformerPolicy) -> TokenMDP:
    """A copy of ``mdp`` whose π_ref is the transformer ``reference`` exactly (its per-state
    table, :meth:`TinyTransformerPolicy.logp_table`); same transitions, rewards and ρ.

    ``info`` is copied, with ``reference`` = "TinyTransformerPolicy", a ``reference_note``,
    and ``original_ref_logp`` (the replaced table), so that e.g. a needle's ``eps`` can be
    compared with the new π_ref.
    """
    _check_policy(reference)
    if not reference.tree.matches(mdp):
        raise ValueError("the reference transformer was built for a different tree (next_state or "
                         "allowed tokens differ)")
    info = dict(mdp.info)
    info.update(
        reference="TinyTransformerPolicy",
        reference_config=dict(reference.config),
        reference_note=("π_ref replaced by the per-state probabilities of a frozen transformer "
                        "(xpo_sim.torch.with_reference); π*, V* and regrets are exact for it"),
        original_ref_logp=np.array(mdp.ref_logp),
    )
    return TokenMDP(mdp.next_state, mdp.reward, reference.logp_table(), mdp.start, info)


@dataclass(frozen=True)
class DistillResult:
    """Outcome of :func:`distill`: per-state KL(π_ref ‖ π_θ) at the end (exact, float64),
    its maximum over states and its weighted mean, and the Adam steps taken."""

    max_kl: float
    mean_kl: float
    steps: int
    kl: np.ndarray


def _exact_kl(ref_logp: np.ndarray, logp: np.ndarray) -> np.ndarray:
    p = np.exp(ref_logp)
    with np.errstate(invalid="ignore"):
        terms = np.where(p > 0, p * (ref_logp - logp), 0.0)
    return terms.sum(axis=1)


def distill(policy: TinyTransformerPolicy, mdp: TokenMDP, *, steps: int = 3000, lr: float = 3e-3,
            tol: float = 1e-4, weights="uniform", check_every: int = 50, chunk: int = TABLE_CHUNK,
            precision: str = "fp32") -> DistillResult:
    r"""Fit ``policy`` (in place) to the instance's π_ref: minimize

        Σ_s w(s) KL(π_ref(·|s) ‖ π_θ(·|s)) / Σ_s w(s)

    over every prefix with Adam (full batch), stopping once the exact max_s KL ≤ ``tol``
    (checked every ``check_every`` steps) or after ``steps`` steps.

    ``weights``: "uniform" (every prefix counts the same, so rarely visited ones such as a
    needle's optimal path are fitted too), "occupancy" (π_ref's state-visit probability),
    or an array (S,) of non-negative weights. ``chunk``: maximal prefixes per forward pass
    (the full batch is still one Adam step; autograd keeps every chunk's activations).
    ``precision``: "fp32" or "bf16" (autocast for the fitting forward passes; the stopping
    check uses the exact float32 → float64 table). Returns a :class:`DistillResult`.
    """
    _check_policy(policy)
    check_precision(precision)
    checks.integer("steps", steps, minimum=0)
    checks.positive("lr", lr)
    checks.nonnegative("tol", tol)
    checks.integer("check_every", check_every, minimum=1)
    checks.integer("chunk", chunk, minimum=1)
    if not policy.tree.matches(mdp):
        raise ValueError("the policy was built for a different tree (next_state or allowed tokens differ)")
    if isinstance(weights, str):
        if weights == "uniform":
            w = np.ones(mdp.n_states)
        elif weights == "occupancy":
            w = occupancy(mdp, mdp.ref_logp)
        else:
            raise ValueError(f"weights must be 'uniform', 'occupancy' or an array (S,), got {weights!r}")
    else:
        w = np.asarray(weights, dtype=np.float64)
        if w.shape != (mdp.n_states,) or not np.all(np.isfinite(w)) or (w < 0).any() or w.sum() <= 0:
            raise ValueError(f"weights must be finite, non-negative, shape ({mdp.n_states},), not all 0")
    device = policy.device
    weight = torch.tensor(w / w.sum(), dtype=torch.float32, device=device)
    target = torch.tensor(mdp.ref_logp, dtype=torch.float32, device=device)
    allowed = policy.allowed
    p = torch.where(allowed, target.exp(), torch.zeros_like(target))
    target_safe = torch.where(allowed, target, torch.zeros_like(target))
    optimizer = torch.optim.Adam(policy.parameters(), lr=lr)
    policy.train()
    taken = 0
    kl = None  # the exact KL of the current parameters, None once an Adam step made it stale
    for step in range(1, int(steps) + 1):
        if (step - 1) % check_every == 0:
            kl = _exact_kl(mdp.ref_logp, policy.logp_table(chunk))
            if kl.max() <= tol:
                break
        with training_precision(device, precision):
            logq = policy.state_logp(chunk=chunk)
        logq_safe = torch.where(allowed, logq, torch.zeros_like(logq))
        per_state = (p * (target_safe - logq_safe)).sum(dim=1)
        loss = (weight * per_state).sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        taken = step
        kl = None
    if kl is None:
        kl = _exact_kl(mdp.ref_logp, policy.logp_table(chunk))
    return DistillResult(max_kl=float(kl.max()), mean_kl=float(np.average(kl, weights=w)), steps=taken, kl=kl)
