r"""Instance families of :class:`~xpo_sim.mdp.TokenMDP`.

Every random family takes ``seed`` (an int or a ``numpy.random.Generator``; default 0, so
an instance is reproducible unless asked otherwise) and records its parameters in
``mdp.info``.

* :func:`bandit` — one state per prompt, every token is a complete response.
* :func:`token_tree` — every state is a prefix; layer d holds ``n_prompts · vocab**d``
  states, stored layer after layer, so ``next_state`` increases.
* :func:`random_dag` — merged prefixes, variable-length episodes, disallowed tokens.
* :func:`two_arm_needle` — Proposition 2.1 of Xie et al. (2024): two responses,
  r(good) = 1, r(bad) = 0, π_ref(good) = exp(−1/(2β)).
* :func:`bandit_needle`, :func:`token_needle` — π_ref puts mass ε on the single optimal
  response (in the tree, the optimal path's per-token probabilities are ε^(1/H) each).
* :func:`combination_lock` — an H-level lock (a DAG of 2H − 1 states): one secret correct
  token per level, π_ref(optimal response) = p^H, with level-indicator features (d = H)
  that realize the reward. ``diabolical=True``: reward only for the complete combination
  plus a small anti-shaped distractor for leaving the path early (d = 2H features that
  still realize it).
* :func:`feature_bandit` — a bandit with clustered features: the optimum is π_ref-rare and
  orthogonal to every likely response, yet the linear class's coverability is at most d
  however many responses there are. ``n_prompts`` prompts share the features (and θ*), so
  a linear class can generalize across them; ``misspecification=δ`` adds a reward component
  of size δ that no feature sees.

The reference policy of the random families is π_ref(·|s) ∝ exp(g_s / T) with
g_s ∼ N(0, I) and a temperature T (``ref_temperature``; T → ∞ gives the uniform policy).

**Reward scale.** :func:`bandit_needle`, :func:`token_needle` and :func:`combination_lock`
take ``reward_scale`` = R_max > 0 (default 1): every reward is multiplied by R_max, so the
optimal response has reward R_max and the rewards span [0, R_max] (XPO's guarantee carries
a factor e^{2 R_max}; ``experiments/reward_scale.py``). π_ref, the random draws and the
layout do not depend on it, and R_max = 1 gives exactly the arrays of the unscaled family
(multiplying by 1.0 is exact). ``info["reward_scale"]`` records it; the lock's
``theta_star`` and ``feature_box`` scale with it. A scale (or a ``bad_reward``) whose rewards
would leave the range a :class:`~xpo_sim.mdp.TokenMDP` accepts (path sums of at most about
2^1022) is refused with a ValueError that names it.
"""

from __future__ import annotations

import math

import numpy as np

from xpo_sim import checks
from xpo_sim.mdp import MAX_ABS_PATH_REWARD, TokenMDP
from xpo_sim.trajectories import as_generator

__all__ = [
    "bandit",
    "token_tree",
    "random_dag",
    "two_arm_needle",
    "bandit_needle",
    "token_needle",
    "combination_lock",
    "feature_bandit",
]


def _positive_int(name: str, value, minimum: int = 1) -> int:
    return checks.integer(name, value, minimum=minimum)


def _probability(name: str, value, low_open: bool = False, high_open: bool = False) -> float:
    return checks.probability(name, value, low_open=low_open, high_open=high_open)


def _temperature(value) -> float:
    """``ref_temperature``: a number > 0, ``inf`` allowed (the uniform policy)."""
    return checks.real("ref_temperature", value, low=0.0, low_open=True, finite=False)


# Bytes an instance needs per state-action pair while it is built: next_state, reward and
# ref_logp (8 bytes each), the TokenMDP's validated copies of them, the random draws and
# the mask — a generous round figure.
BYTES_PER_STATE_ACTION = 64


def _check_size(name: str, value, n_states: int, n_actions: int, per_entry: int = BYTES_PER_STATE_ACTION) -> None:
    """Refuse, before anything is allocated, an instance whose (S, A) tables do not fit
    (:func:`xpo_sim.checks.memory`); ``n_states`` is an exact Python int."""
    checks.memory(name, value, int(n_states) * int(n_actions) * per_entry,
                  f"an instance of {int(n_states):,} states x {int(n_actions):,} tokens")


def _check_reward_range(names: str, values, largest: float) -> None:
    """Refuse, with a ValueError naming the arguments, parameters whose largest absolute
    path reward ``largest`` would exceed what a TokenMDP accepts
    (:data:`xpo_sim.mdp.MAX_ABS_PATH_REWARD` = 2^1022; a relative margin of 1e-9 covers the
    rounding of a path sum)."""
    if not largest * (1.0 + 1e-9) <= MAX_ABS_PATH_REWARD:
        raise ValueError(f"{names}={values!r} give rewards up to {largest!r} in absolute value, beyond the "
                         f"about 2**1022 = {MAX_ABS_PATH_REWARD:.4g} a TokenMDP accepts (values and their "
                         f"differences could overflow); choose a smaller {names}")


def _tree_states(n_prompts: int, vocab: int, horizon: int) -> int:
    """Number of states of a complete token tree, n_prompts · Σ_{d<H} vocab^d (exact)."""
    return n_prompts * sum(vocab**d for d in range(horizon))


def _log1m_exp(x: float) -> float:
    """log(1 − e^x) for x < 0 without cancellation: log(−expm1(x)) near 0 (where
    log1p(−e^x) loses the digits of 1 − e^x, and reaches log1p(−1) = a domain error once
    e^x rounds to 1), log1p(−e^x) far from it (Mächler 2012, "Accurately computing
    log(1 − exp(−|a|))")."""
    return math.log(-math.expm1(x)) if x > -math.log(2.0) else math.log1p(-math.exp(x))


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def _random_ref_logp(rng: np.random.Generator, shape, ref_temperature: float) -> np.ndarray:
    temperature = _temperature(ref_temperature)
    if math.isinf(temperature):
        return np.full(shape, -math.log(shape[1]))
    return _log_softmax(rng.standard_normal(shape) / temperature)


def _tree_layout(n_prompts: int, vocab: int, horizon: int):
    """``next_state`` of a complete token tree and the first state index of each layer."""
    layer_sizes = [n_prompts * vocab**d for d in range(horizon)]
    offsets = np.concatenate([[0], np.cumsum(layer_sizes)]).astype(np.int64)
    next_state = np.full((int(offsets[-1]), vocab), -1, dtype=np.int64)
    for d in range(horizon - 1):
        local = np.arange(layer_sizes[d], dtype=np.int64)[:, None] * vocab + np.arange(vocab)
        next_state[offsets[d] : offsets[d + 1]] = offsets[d + 1] + local
    return next_state, offsets


def _uniform_over_first(n_states: int, k: int) -> np.ndarray:
    start = np.zeros(n_states)
    start[:k] = 1.0 / k
    return start


def token_tree(
    vocab: int,
    horizon: int,
    n_prompts: int = 1,
    *,
    rewards: str = "terminal",
    ref_temperature: float = 1.0,
    seed=0,
) -> TokenMDP:
    """A complete token tree: ``n_prompts`` roots, ``vocab`` tokens, responses of exactly
    ``horizon`` tokens.

    ``rewards="terminal"``: r ∼ U[0, 1) on the last token only; ``"dense"``: r ∼
    U[0, 1/horizon) on every token (so r(τ) ∈ [0, 1) in both cases). States are stored
    layer by layer; ``info["layer_offsets"]`` gives the first state of each layer.
    """
    vocab = _positive_int("vocab", vocab)
    horizon = _positive_int("horizon", horizon)
    n_prompts = _positive_int("n_prompts", n_prompts)
    checks.choice("rewards", rewards, ("terminal", "dense"))
    ref_temperature = _temperature(ref_temperature)
    _check_size("(vocab, horizon, n_prompts)" if horizon > 1 else "(vocab, n_prompts)",
                (vocab, horizon, n_prompts) if horizon > 1 else (vocab, n_prompts),
                _tree_states(n_prompts, vocab, horizon), vocab)
    rng = as_generator(seed)
    next_state, offsets = _tree_layout(n_prompts, vocab, horizon)
    n_states = next_state.shape[0]
    ref_logp = _random_ref_logp(rng, next_state.shape, ref_temperature)
    if rewards == "dense":
        reward = rng.random(next_state.shape) / horizon
    else:
        reward = np.zeros(next_state.shape)
        reward[offsets[-2] :] = rng.random((n_states - offsets[-2], vocab))
    info = dict(
        family="token_tree", vocab=vocab, horizon=horizon, n_prompts=n_prompts,
        rewards=rewards, ref_temperature=ref_temperature, layer_offsets=offsets,
    )
    return TokenMDP(next_state, reward, ref_logp, _uniform_over_first(n_states, n_prompts), info)


def bandit(n_responses: int, n_prompts: int = 1, *, ref_temperature: float = 1.0, seed=0) -> TokenMDP:
    """A contextual bandit: ``n_prompts`` states, ``n_responses`` one-token responses each,
    r(x, y) ∼ U[0, 1), ρ uniform over prompts."""
    n_responses = _positive_int("n_responses", n_responses)
    n_prompts = _positive_int("n_prompts", n_prompts)
    _check_size("(n_responses, n_prompts)", (n_responses, n_prompts), n_prompts, n_responses)
    mdp = token_tree(n_responses, 1, n_prompts, ref_temperature=ref_temperature, seed=seed)
    mdp.info.update(family="bandit", n_responses=n_responses)
    return mdp


def random_dag(
    n_states: int,
    n_actions: int,
    *,
    n_prompts: int = 1,
    p_end: float = 0.2,
    p_disallowed: float = 0.2,
    ref_temperature: float = 1.0,
    seed=0,
) -> TokenMDP:
    """A random DAG: each token ends the episode with probability ``p_end`` (always in the
    last state), otherwise leads to a uniformly drawn later state, so prefixes merge and
    lengths vary. Each token is disallowed with probability ``p_disallowed`` (at least
    one stays allowed per state). Rewards r ∼ U[0, 1) on every token; ρ is uniform over
    the first ``n_prompts`` states.
    """
    n_states = _positive_int("n_states", n_states)
    n_actions = _positive_int("n_actions", n_actions)
    n_prompts = _positive_int("n_prompts", n_prompts)
    if n_prompts > n_states:
        raise ValueError(f"n_prompts={n_prompts} exceeds n_states={n_states}")
    p_end = _probability("p_end", p_end)
    p_disallowed = _probability("p_disallowed", p_disallowed, high_open=True)
    ref_temperature = _temperature(ref_temperature)
    _check_size("(n_states, n_actions)", (n_states, n_actions), n_states, n_actions)
    rng = as_generator(seed)
    shape = (n_states, n_actions)
    rows = np.arange(n_states)[:, None]
    jump = rng.random(shape)
    span = n_states - 1 - rows
    next_state = rows + 1 + np.floor(jump * span).astype(np.int64)
    ends = (rng.random(shape) < p_end) | (span == 0)
    next_state = np.where(ends, -1, next_state)
    disallowed = rng.random(shape) < p_disallowed
    keep = rng.integers(n_actions, size=n_states)
    disallowed[np.arange(n_states), keep] = False
    ref_logp = _random_ref_logp(rng, shape, ref_temperature)
    ref_logp = np.where(disallowed, -np.inf, ref_logp)
    ref_logp = _log_softmax(ref_logp)
    reward = rng.random(shape)
    info = dict(
        family="random_dag", n_prompts=n_prompts, p_end=p_end, p_disallowed=p_disallowed,
        ref_temperature=ref_temperature,
    )
    return TokenMDP(next_state, reward, ref_logp, _uniform_over_first(n_states, n_prompts), info)


def two_arm_needle(beta: float) -> TokenMDP:
    """Proposition 2.1 of Xie et al. (2024): one prompt, two responses, r(good) = 1,
    r(bad) = 0, π_ref(good) = ε = exp(−1/(2β)). Token 0 is the good response."""
    beta = checks.beta(beta)
    log_eps = -1.0 / (2.0 * beta)
    ref_logp = np.array([[log_eps, _log1m_exp(log_eps)]])
    info = dict(family="two_arm_needle", beta=beta, eps=math.exp(log_eps), log_eps=log_eps,
                optimal_actions=np.array([0]))
    return TokenMDP(np.array([[-1, -1]]), np.array([[1.0, 0.0]]), ref_logp, np.array([1.0]), info)


def _bad_rewards(rng: np.random.Generator, bad_reward, size: int) -> np.ndarray:
    """A constant, or for a pair (low, high) rewards spread evenly over [low, high] in a
    random order."""
    low, high = _check_bad_reward(bad_reward)
    if low == high and not isinstance(bad_reward, (tuple, list, np.ndarray)):
        return np.full(size, low)
    return rng.permutation(np.linspace(low, high, size))


def _check_bad_reward(bad_reward) -> tuple[float, float]:
    """``bad_reward`` as (low, high): a finite number (low = high) or a pair low <= high."""
    if isinstance(bad_reward, (tuple, list, np.ndarray)):
        return checks.box("bad_reward", bad_reward)
    try:
        value = checks.real("bad_reward", bad_reward)
    except ValueError:
        raise ValueError(f"bad_reward must be a finite number or a pair (low, high) of finite numbers with "
                         f"low <= high, got {bad_reward!r}") from None
    return value, value


def bandit_needle(n_responses: int, eps: float, *, n_prompts: int = 1, bad_reward=0.0, reward_scale: float = 1.0,
                  seed=0) -> TokenMDP:
    """A bandit where π_ref puts mass ``eps`` on one good response (reward 1, drawn at
    random per prompt) and spreads 1 − eps evenly over the others, whose reward is
    ``bad_reward`` (a number, or a pair (low, high) for graded rewards, which must stay
    below 1). ``info["optimal_actions"][p]`` is prompt p's good response.

    ``reward_scale`` = R_max multiplies every reward (good response R_max, bad ones
    R_max·bad_reward); π_ref and the random draws do not change."""
    n_responses = _positive_int("n_responses", n_responses, minimum=2)
    n_prompts = _positive_int("n_prompts", n_prompts)
    eps = _probability("eps", eps, low_open=True, high_open=True)
    scale = checks.positive("reward_scale", reward_scale)
    low, high = _check_bad_reward(bad_reward)
    _check_reward_range("(reward_scale, bad_reward)", (reward_scale, bad_reward), scale * max(1.0, -low, high))
    _check_size("(n_responses, n_prompts)", (n_responses, n_prompts), n_prompts, n_responses)
    rng = as_generator(seed)
    good = rng.integers(n_responses, size=n_prompts)
    reward = np.empty((n_prompts, n_responses))
    ref_logp = np.full((n_prompts, n_responses), math.log1p(-eps) - math.log(n_responses - 1))
    for p in range(n_prompts):
        bad = np.delete(np.arange(n_responses), good[p])
        reward[p, bad] = _bad_rewards(rng, bad_reward, n_responses - 1)
        reward[p, good[p]] = 1.0
        ref_logp[p, good[p]] = math.log(eps)
    mask = np.ones_like(reward, dtype=bool)
    mask[np.arange(n_prompts), good] = False
    if (reward[mask] >= 1.0).any():
        raise ValueError("bad_reward must stay below the good response's reward 1")
    reward *= scale
    info = dict(family="bandit_needle", n_responses=n_responses, eps=eps, n_prompts=n_prompts,
                bad_reward=bad_reward, optimal_actions=good, reward_scale=scale)
    return TokenMDP(np.full((n_prompts, n_responses), -1), reward, ref_logp,
                    np.full(n_prompts, 1.0 / n_prompts), info)


def token_needle(
    vocab: int,
    horizon: int,
    eps: float,
    *,
    n_prompts: int = 1,
    bad_reward=0.0,
    ref_temperature: float = math.inf,
    reward_scale: float = 1.0,
    seed=0,
) -> TokenMDP:
    """A token tree with one optimal response per prompt (a random token path, terminal
    reward 1); every other response gets ``bad_reward`` (a number, or a pair (low, high)
    drawn uniformly, below 1). Along the optimal path π_ref gives the path's token
    probability ε^(1/horizon) and spreads the rest evenly, so π_ref(optimal response) =
    ``eps``; off the path π_ref is random with ``ref_temperature`` (default uniform).
    ``info["optimal_path"]`` (n_prompts, horizon) lists the optimal tokens.
    ``reward_scale`` = R_max multiplies every reward (optimal response R_max)."""
    vocab = _positive_int("vocab", vocab, minimum=2)
    horizon = _positive_int("horizon", horizon)
    n_prompts = _positive_int("n_prompts", n_prompts)
    eps = _probability("eps", eps, low_open=True, high_open=True)
    scale = checks.positive("reward_scale", reward_scale)
    ref_temperature = _temperature(ref_temperature)
    low, high = _check_bad_reward(bad_reward)
    _check_reward_range("(reward_scale, bad_reward)", (reward_scale, bad_reward), scale * max(1.0, -low, high))
    _check_size("(vocab, horizon, n_prompts)", (vocab, horizon, n_prompts), _tree_states(n_prompts, vocab, horizon),
                vocab)
    rng = as_generator(seed)
    next_state, offsets = _tree_layout(n_prompts, vocab, horizon)
    n_states = next_state.shape[0]
    ref_logp = _random_ref_logp(rng, next_state.shape, ref_temperature)
    path = rng.integers(vocab, size=(n_prompts, horizon))
    log_step = math.log(eps) / horizon
    log_rest = _log1m_exp(log_step) - math.log(vocab - 1)
    on_path = np.arange(n_prompts, dtype=np.int64)  # local index within layer d
    path_states = np.empty((n_prompts, horizon), dtype=np.int64)
    for d in range(horizon):
        states = offsets[d] + on_path
        path_states[:, d] = states
        ref_logp[states] = log_rest
        ref_logp[states, path[:, d]] = log_step
        on_path = on_path * vocab + path[:, d]
    reward = np.zeros(next_state.shape)
    leaves = slice(offsets[-2], n_states)
    n_leaf = n_states - offsets[-2]
    reward[leaves] = _bad_rewards(rng, bad_reward, n_leaf * vocab).reshape(n_leaf, vocab)
    if (reward[leaves] >= 1.0).any():
        raise ValueError("bad_reward must stay below the optimal response's reward 1")
    reward[path_states[:, -1], path[:, -1]] = 1.0
    reward *= scale
    info = dict(family="token_needle", vocab=vocab, horizon=horizon, eps=eps, n_prompts=n_prompts,
                bad_reward=bad_reward, optimal_path=path, optimal_path_states=path_states,
                layer_offsets=offsets, reward_scale=scale)
    return TokenMDP(next_state, reward, ref_logp, _uniform_over_first(n_states, n_prompts), info)


DEFAULT_DISTRACTOR = 0.1
"""The diabolical lock's distractor δ when ``distractor`` is not given."""


def combination_lock(horizon: int, vocab: int, p_correct: float, seed=0, *, reward_scale: float = 1.0,
                     diabolical: bool = False, distractor: float | None = None) -> TokenMDP:
    r"""An H-level combination lock: a DAG whose unique optimal response is exponentially
    rare under π_ref, with level-indicator features that realize the reward.

    States (``S = 2H − 1``, every transition increases the index): the on-path state of
    level h is ``on_h = h`` (h = 0, …, H−1), the off-path state is ``off_h = H + h − 1``
    (h = 1, …, H−1). The prompt is ``on_0`` (ρ = e₀). Each level has one secret correct
    token c_h (``info["optimal_path"]``, drawn from ``seed``):

    * at ``on_h``, c_h leads to ``on_{h+1}`` and every other token to ``off_{h+1}``;
    * at ``off_h``, every token leads to ``off_{h+1}``;
    * at the last level (h = H−1) every token ends the episode.

    So every response has exactly H tokens and there are vocab^H of them. π_ref(c_h | on_h)
    = p, the other tokens (1 − p)/(vocab − 1) each; off the path π_ref is uniform. Hence
    π_ref(optimal response) = p^H = ``info["eps"]``. Layout, π_ref and the correct tokens do
    not depend on ``diabolical``: the same seed gives the same lock in both modes.

    **Dense lock** (``diabolical=False``, the default). r(on_h, c_h) = R/H and 0 everywhere
    else (R = ``reward_scale``), so r(τ) = R·(number of correct tokens before the first
    mistake)/H, and the single all-correct response is the unique optimum, r = R, with a gap
    of R/H to the next best. Features (d = H, a dense (S, vocab, H) array): φ(on_h, c_h) =
    e_h and φ = 0 elsewhere, so r = θ*·φ with θ* = (R/H, …, R/H) (``info["theta_star"]``),
    inside the box ``info["feature_box"]`` = [0, R/H]^H. The partial credit is a
    curriculum: each level learned makes the next one likelier.

    **Diabolical lock** (``diabolical=True``; after the diabolical combination lock of
    Misra et al. 2020, HOMER, and the Intrepid library). No partial credit: only the
    complete combination pays, and leaving the path pays a small distractor that is larger
    the earlier the mistake (anti-shaping). With δ = ``distractor`` ∈ [0, 1):

    * r(on_{H−1}, c_{H−1}) = R (the last correct token, reached only along the path);
    * r(on_h, a) = δ_h := δ·R·(H − h)/H for every wrong token a ≠ c_h (the first mistake,
      at level h; δ_0 = δR, δ_{H−1} = δR/H);
    * r = 0 everywhere else (correct tokens before the last level, every off-path token).

    So r(τ) = R for the all-correct response and r(τ) = δ·R·(H − k)/H when τ's first mistake
    is at level k = 0, …, H−1: the all-correct response is the unique optimum, with a gap
    of R(1 − δ) to the best other response (a mistake at level 0), and a policy that follows
    the local reward signal learns to leave the path as early as possible. Features (d = 2H,
    a dense (S, vocab, 2H) array): φ(on_h, c_h) = e_h (exactly the dense lock's level
    indicators in the first H coordinates) and φ(on_h, a) = e_{H+h} for a ≠ c_h (a "first
    mistake at level h" indicator); φ = 0 off the path. Then r = θ*·φ exactly with θ* =
    (0, …, 0, R, δ_0, …, δ_{H−1}) (``info["theta_star"]``), inside the box
    ``info["feature_box"]`` = [0, R]^{2H}: the linear class is well specified. A response's
    summed feature Φ(τ) takes H + 1 values (first mistake at k, or none), each a 0/1
    vector, so the linear class's coverability is at most H + 1 and
    :func:`xpo_sim.metrics.coverability` finds every supremum at a vertex (no numerical
    maximization).

    Parameters
    ----------
    horizon : int >= 1
        H, the number of levels (tokens per response).
    vocab : int >= 2
        Number of tokens per state.
    p_correct : float in (0, 1)
        π_ref's probability of the correct token at each on-path state.
    seed : int or numpy.random.Generator
        Draws the correct tokens, ``rng.integers(vocab, size=horizon)``.
    reward_scale : float > 0
        R: every reward is multiplied by it (optimum R), and so are ``theta_star`` and
        ``feature_box``. Scales beyond about 2^1022 are refused.
    diabolical : bool
        False (default): the dense lock, unchanged. True: the diabolical lock above.
    distractor : float in [0, 1), optional
        δ of the diabolical lock (default 0.1); δ = 0 gives the purely sparse lock (every
        response but the optimum has reward 0). Given with ``diabolical=False`` it is refused.

    Returns
    -------
    TokenMDP
        With ``features`` and ``info``: ``family`` "combination_lock", ``horizon``,
        ``vocab``, ``p_correct``, ``eps`` = p^H, ``n_prompts`` = 1, ``optimal_path`` (1, H),
        ``optimal_path_states`` (1, H), ``theta_star``, ``feature_box``, ``reward_scale``;
        with ``diabolical=True`` also ``diabolical`` = True and ``distractor`` = δ.
    """
    horizon = _positive_int("horizon", horizon)
    vocab = _positive_int("vocab", vocab, minimum=2)
    p_correct = _probability("p_correct", p_correct, low_open=True, high_open=True)
    scale = checks.positive("reward_scale", reward_scale)
    diabolical = checks.boolean("diabolical", diabolical)
    if not diabolical and distractor is not None:
        raise ValueError(f"distractor goes with diabolical=True (the dense lock has no distractor), got "
                         f"distractor={distractor!r} with diabolical=False")
    if diabolical:
        delta = checks.real("distractor", DEFAULT_DISTRACTOR if distractor is None else distractor,
                            low=0.0, high=1.0, high_open=True)
    _check_reward_range("reward_scale", reward_scale, scale)
    n_features = 2 * horizon if diabolical else horizon
    # the dense (S, vocab, d) features dominate: 8·d bytes per state-action, twice (built, then copied)
    _check_size("(horizon, vocab)", (horizon, vocab), 2 * horizon - 1, vocab,
                BYTES_PER_STATE_ACTION + 16 * n_features)
    rng = as_generator(seed)
    correct = rng.integers(vocab, size=horizon).astype(np.int64)

    n_states = 2 * horizon - 1
    levels = np.arange(horizon, dtype=np.int64)
    on = levels  # on_h = h
    off = horizon + levels[1:] - 1  # off_h = H + h − 1, h = 1, …, H−1
    next_state = np.full((n_states, vocab), -1, dtype=np.int64)
    if horizon > 1:
        inner = levels[:-1]  # levels whose tokens do not end the episode
        next_state[on[:-1]] = (horizon + inner)[:, None]  # → off_{h+1} = H + h
        next_state[on[:-1], correct[:-1]] = inner + 1  # → on_{h+1} = h + 1
        next_state[off[:-1]] = off[1:, None]  # off_h → off_{h+1}

    ref_logp = np.full((n_states, vocab), -math.log(vocab))
    ref_logp[on] = math.log1p(-p_correct) - math.log(vocab - 1)
    ref_logp[on, correct] = math.log(p_correct)

    start = np.zeros(n_states)
    start[0] = 1.0
    info = dict(
        family="combination_lock", horizon=horizon, vocab=vocab, p_correct=p_correct,
        eps=p_correct**horizon, n_prompts=1, optimal_path=correct[None, :],
        optimal_path_states=on[None, :].copy(),
    )
    if diabolical:
        reward, features, theta_star = _diabolical_tables(n_states, vocab, horizon, correct, delta, scale)
        info.update(theta_star=theta_star, feature_box=(0.0, scale), reward_scale=scale, diabolical=True,
                    distractor=delta)
        return TokenMDP(next_state, reward, ref_logp, start, info, features=features)

    reward = np.zeros((n_states, vocab))
    reward[on, correct] = 1.0 / horizon
    reward *= scale
    features = np.zeros((n_states, vocab, horizon))
    features[on, correct, levels] = 1.0
    theta_star = np.full(horizon, 1.0 / horizon) * scale
    info.update(theta_star=theta_star, feature_box=(0.0, scale / horizon), reward_scale=scale)
    return TokenMDP(next_state, reward, ref_logp, start, info, features=features)


def _diabolical_tables(n_states: int, vocab: int, horizon: int, correct: np.ndarray, delta: float, scale: float):
    """Reward (S, vocab), features (S, vocab, 2H) and θ* (2H,) of the diabolical lock; the
    on-path state of level h is h. Each reward entry is the very float of its θ* coordinate
    (one feature per entry, value 1), so θ*·φ reproduces the table exactly."""
    levels = np.arange(horizon, dtype=np.int64)
    pay = delta * (horizon - levels) / horizon * scale  # δ_h = δ·R·(H − h)/H, first mistake at level h
    reward = np.zeros((n_states, vocab))
    reward[levels] = pay[:, None]
    reward[levels, correct] = 0.0
    reward[horizon - 1, correct[-1]] = scale
    features = np.zeros((n_states, vocab, 2 * horizon))
    features[levels, :, horizon + levels] = 1.0
    features[levels, correct, horizon + levels] = 0.0
    features[levels, correct, levels] = 1.0
    theta_star = np.zeros(2 * horizon)
    theta_star[horizon - 1] = scale
    theta_star[horizon:] = pay
    return reward, features, theta_star


def _cluster_signs(clusters: np.ndarray) -> np.ndarray:
    """u (P, n) for cluster labels (P, n): within each prompt's cluster k ≥ 1, its members in
    increasing response index get +1, −1, +1, −1, …, and the last one 0 when the cluster
    has an odd size; u = 0 on cluster 0 (the needle). So u sums to zero over every cluster
    and |u| ≤ 1. Deterministic given the clusters (no random draws)."""
    signs = np.zeros(clusters.shape)
    for p in range(clusters.shape[0]):
        row = clusters[p]
        order = np.argsort(row, kind="stable")  # members of each cluster, in index order
        labels = row[order]
        first = np.searchsorted(labels, labels, side="left")
        rank = np.arange(row.size) - first  # position within the cluster
        size = np.bincount(labels)[labels]
        value = np.where(rank % 2 == 0, 1.0, -1.0)
        value[(size % 2 == 1) & (rank == size - 1)] = 0.0
        value[labels == 0] = 0.0
        signs[p, order] = value
    return signs


def feature_bandit(n_responses: int, d: int, eps: float, *, bad_reward=(0.0, 0.3), n_prompts: int = 1,
                   misspecification: float = 0.0, seed=0) -> TokenMDP:
    r"""A bandit with clustered linear features: the optimum is π_ref-rare and points in a
    direction no likely response reveals, but the feature class's coverability stays at
    most d however large ``n_responses`` is.

    ``n_prompts`` states (prompts, ρ uniform), each with ``n_responses`` one-token responses
    (``next_state`` all −1). Each prompt x has one optimal response y*_x (drawn from
    ``seed``; ``info["optimal_actions"][x]``) with φ(x, y*_x) = e₀ and π_ref(y*_x | x) = ε.
    Every other response y of x belongs to one of d − 1 clusters k = 1, …, d−1 (balanced
    within each prompt: sizes differ by at most one, assignment random; ``info["clusters"]``,
    0 for the needle) and has φ(x, y) = e_k; π_ref spreads 1 − ε evenly over them. The
    reward is linear, r(x, y) = θ*·φ(x, y), with θ*₀ = 1 and θ*_k (k ≥ 1) the values of
    linspace(low, high, d − 1) in a random order, (low, high) = ``bad_reward`` (default
    (0, 0.3)), so r(y*) = 1 > high ≥ r(y) for every y ≠ y*, and θ* ∈ [0, 1]^d
    (``info["feature_box"]``). The bad rewards stay well below 1 by default so that π*
    concentrates on y* at β = 0.1 for ε ≥ 1e-3 (π*(y*) ∝ ε e^{1/β} against
    Σ_k π_ref(k) e^{θ*_k/β}): the needle then carries most of π_ref's regret and finding it
    is the exploration problem. Features are a scipy.sparse CSR matrix (n_prompts ·
    n_responses, d) with one 1 per row.

    **Many prompts.** The features and θ* are shared by all prompts (only the needle's
    position and the cluster assignment differ from prompt to prompt), so what the linear
    class learns about θ₀ from one prompt's needle moves every prompt's policy towards its
    own needle: the class generalizes across prompts, the implicit (tabular) class cannot.
    With one prompt the instance is exactly the single-prompt family (the extra prompts'
    needles and clusters are drawn after everything else).

    **Misspecification** (δ = ``misspecification`` > 0). The reward becomes
    r(x, y) = θ*·φ(x, y) + δ·u(x, y), where u = ``info["residual"]``/δ is, within each
    cluster k ≥ 1 of each prompt, +1, −1, +1, −1, … over its members in increasing index
    (the last member 0 when the cluster's size is odd), and u = 0 on the needle. u sums to
    zero over every cluster, so δu is orthogonal to every feature column (in the plain
    inner product and in π_ref's, which is uniform on a cluster): θ* is the least-squares
    projection of r onto the feature span and also the best fit in sup norm,
    min_θ max_{x,y} |r(x, y) − θ·φ(x, y)| = δ, attained at θ = θ* (exactly, up to the
    rounding of r to float64). ``info["residual"]`` = δu, an (n_prompts, n_responses) table
    with entries in {−δ, 0, δ}, and the reward table is built as θ*·φ + ``residual``. A
    cluster's rewards θ*_k ± δ may dip below 0 (when low < δ). What the linear class
    Π = {π_θ ∝ π_ref e^{θ·φ/β}, θ ∈ ``feature_box``} can achieve: every π_θ is uniform
    within each cluster (π_θ(y)/π_θ(cluster) = π_ref(y)/π_ref(cluster)), where u averages
    to zero, so J_β(π_θ) is the same on this instance as on the realizable one (δ = 0, same
    seed: same π_ref, clusters and θ*). Hence the best policy in the class is π_{θ*} — the
    soft optimum π*₀ of the realizable instance (θ* lies in the box) — and its regret here
    is the class's floor, for every β and every algorithm

        min_{π∈Π} J_β(π*) − J_β(π) = E_ρ [V*_δ(x) − V*_0(x)]
            = β E_ρ log(Σ_k w_k(x) c_k(x) / Σ_k w_k(x)) ∈ (0, β log cosh(δ/β)] ⊂ (0, δ),

    with w_k(x) = π_ref(cluster k | x) e^{θ*_k/β}, c_0 = 1 and, for a cluster of m_k members
    of which 2q_k carry ±δ, c_k = (2q_k cosh(δ/β) + m_k − 2q_k)/m_k. Equivalently: floor =
    ``solve_soft(feature_bandit(..., misspecification=δ), β).value −
    solve_soft(feature_bandit(..., misspecification=0), β).value``. π* itself tilts every
    cluster towards its +δ members, which no π_θ can. The needle stays the unique optimum
    (r = 1 > high + δ), and the features, box and coverability (at most d) do not change.

    Why this separates exploration from passive sampling: the π_ref-likely responses all
    have φ₀ = 0, so data from π_ref says nothing about θ₀, the optimum's direction; seeing
    y* takes about 1/ε draws. Yet the class Π = {π_θ(y) ∝ π_ref(y) exp(θ·φ(y)/β)} has
    coverability C_cov = max_x Σ_y sup_θ π_θ(y|x) ≤ d: within cluster k every response
    carries the same factor exp(θ_k/β), so π_θ(y)/π_θ(cluster k) = π_ref(y)/π_ref(cluster
    k) is fixed, hence Σ_{y ∈ cluster k} sup_θ π_θ(y) ≤ Σ_{y ∈ cluster k}
    π_ref(y)/π_ref(cluster k) = 1; y* adds at most 1, so C_cov ≤ 1 + (d − 1) = d.

    Parameters
    ----------
    n_responses : int >= 2
        Number of responses n per prompt; must satisfy n − 1 >= d − 1 so that every cluster
        is non-empty, and n − 1 >= d when ``misspecification`` > 0 (so that some cluster has
        two members for u to separate).
    d : int >= 2
        Feature dimension (one optimal direction and d − 1 clusters).
    eps : float in (0, 1)
        π_ref(y*_x | x) for every prompt.
    bad_reward : (low, high)
        Range of the clusters' rewards θ*_k, 0 <= low <= high < 1 (and high + δ < 1).
    n_prompts : int >= 1
        Number of prompts, ρ uniform over them (default 1).
    misspecification : float >= 0
        δ, the size of the reward component outside the feature span (default 0: the
        features realize the reward, and the instance is bit for bit the one without this
        option).
    seed : int or numpy.random.Generator
        Draws, in this order, prompt 0's y* and cluster assignment, the order of θ*₁, …,
        θ*_{d−1}, then each further prompt's y* and clusters.

    Returns
    -------
    TokenMDP
        With sparse ``features`` and ``info``: ``family`` "feature_bandit", ``n_responses``,
        ``d``, ``eps``, ``n_prompts``, ``optimal_actions`` (n_prompts,), ``theta_star``,
        ``feature_box`` (0, 1), ``clusters`` ((n_responses,) for one prompt,
        (n_prompts, n_responses) for several), ``bad_reward``, ``misspecification`` = δ and
        ``residual`` (n_prompts, n_responses) = r − θ*·φ (zeros when δ = 0).
    """
    import scipy.sparse as sp

    n_responses = _positive_int("n_responses", n_responses, minimum=2)
    d = _positive_int("d", d, minimum=2)
    eps = _probability("eps", eps, low_open=True, high_open=True)
    n_prompts = _positive_int("n_prompts", n_prompts)
    delta = checks.real("misspecification", misspecification, low=0.0)
    if n_responses < d:
        raise ValueError(
            f"n_responses must be >= d so that each of the d - 1 = {d - 1} clusters gets at "
            f"least one of the n_responses - 1 non-optimal responses, got n_responses={n_responses}, d={d}"
        )
    try:
        low, high = checks.box("bad_reward", bad_reward)
    except ValueError:
        raise ValueError(f"bad_reward must be a pair (low, high) with 0 <= low <= high < 1, got {bad_reward!r}") from None
    if n_prompts == 1:
        _check_size("n_responses", n_responses, 1, n_responses, BYTES_PER_STATE_ACTION + 32)  # + sparse features
    else:
        _check_size("(n_responses, n_prompts)", (n_responses, n_prompts), n_prompts, n_responses,
                    BYTES_PER_STATE_ACTION + 48)  # + sparse features and the residual table
    if not (0.0 <= low <= high < 1.0):
        raise ValueError(f"bad_reward must be a pair (low, high) with 0 <= low <= high < 1, got {bad_reward!r}")
    if delta > 0 and n_responses < d + 1:
        raise ValueError(f"misspecification={misspecification!r} > 0 needs a cluster with two responses to tell "
                         f"apart: n_responses >= d + 1, got n_responses={n_responses}, d={d}")
    if not high + delta < 1.0:
        raise ValueError(f"misspecification={misspecification!r} must keep the bad rewards below the needle's "
                         f"reward 1: high + misspecification < 1 with bad_reward={bad_reward!r}")
    rng = as_generator(seed)
    goods = np.empty(n_prompts, dtype=np.int64)
    clusters = np.zeros((n_prompts, n_responses), dtype=np.int64)

    def draw_prompt(p: int) -> None:
        good = int(rng.integers(n_responses))
        others = np.concatenate([np.arange(good), np.arange(good + 1, n_responses)])
        clusters[p, others] = rng.permutation(np.arange(n_responses - 1, dtype=np.int64) % (d - 1) + 1)
        goods[p] = good

    draw_prompt(0)
    theta_star = np.concatenate([[1.0], rng.permutation(np.linspace(low, high, d - 1))])
    for p in range(1, n_prompts):
        draw_prompt(p)

    reward = theta_star[clusters]
    residual = np.zeros((n_prompts, n_responses))
    if delta > 0:
        residual = delta * _cluster_signs(clusters)
        reward = reward + residual
    ref_logp = np.full((n_prompts, n_responses), math.log1p(-eps) - math.log(n_responses - 1))
    ref_logp[np.arange(n_prompts), goods] = math.log(eps)
    n_rows = n_prompts * n_responses
    features = sp.csr_matrix((np.ones(n_rows), clusters.ravel(), np.arange(n_rows + 1)), shape=(n_rows, d))
    info = dict(
        family="feature_bandit", n_responses=n_responses, d=d, eps=eps, n_prompts=n_prompts,
        optimal_actions=goods if n_prompts > 1 else np.array([goods[0]]), theta_star=theta_star,
        feature_box=(0.0, 1.0), clusters=clusters[0].copy() if n_prompts == 1 else clusters, bad_reward=(low, high),
        misspecification=delta, residual=residual,
    )
    return TokenMDP(np.full((n_prompts, n_responses), -1), reward, ref_logp, np.full(n_prompts, 1.0 / n_prompts),
                    info, features=features)
