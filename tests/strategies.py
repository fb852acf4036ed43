"""Hypothesis strategies for small random token MDPs and policies.

Every structural choice (successors, disallowed tokens, logits, rewards, start weights) is
drawn from hypothesis, so failing examples shrink to small instances. Sizes stay small
(S ≤ 8 states, A ≤ 4 actions, at most a few hundred trajectories) so that the naive
oracles of ``tests/naive.py`` enumerate every trajectory quickly.
"""

from __future__ import annotations

import math

import numpy as np
from hypothesis import strategies as st

import xpo_sim
from naive import StochasticMDP

MAX_STATES = 8
MAX_ACTIONS = 4
# Cap on the number of trajectories from any single state; with at most 8 start states
# (and at most MAX_ACTIONS extra one-step endings per state) an MDP has < 8·(40+4) = 352.
MAX_PATHS_PER_STATE = 40

LOGIT = st.floats(-4.0, 4.0, allow_nan=False, allow_infinity=False)
REWARD = st.floats(-2.0, 2.0, allow_nan=False, allow_infinity=False)

# β log-uniform over [1e-2, 1e1].
betas = st.floats(math.log(1e-2), math.log(1e1)).map(math.exp)


def log_softmax_masked(logits: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax of ``logits`` over ``mask`` (True = kept), -inf elsewhere."""
    x = np.where(mask, logits, -np.inf)
    x = x - x.max(axis=1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=1, keepdims=True))


@st.composite
def masks(draw, n_states: int, n_actions: int, p_off: float = 0.3, within=None):
    """Boolean (S, A) mask with at least one True per row (inside ``within`` when given).

    Each candidate other than one kept per row is switched off with probability about
    ``p_off`` (an integer draw in 0..9, which shrinks towards "on").
    """
    base = np.ones((n_states, n_actions), dtype=bool) if within is None else np.asarray(within)
    threshold = 10 - round(10 * p_off)
    mask = np.zeros((n_states, n_actions), dtype=bool)
    for s in range(n_states):
        candidates = [int(a) for a in np.flatnonzero(base[s])]
        keep = draw(st.sampled_from(candidates))
        for a in candidates:
            mask[s, a] = a == keep or draw(st.integers(0, 9)) < threshold
    return mask


def masks_for(mdp):
    """π_ref's own mask of ``mdp`` or an arbitrary one (at least one token per row), as a
    C-contiguous bool array."""
    return st.one_of(st.just(np.asarray(mdp.allowed)), masks(mdp.n_states, mdp.n_actions)).map(
        lambda m: np.ascontiguousarray(m, dtype=np.bool_)
    )


@st.composite
def start_distributions(draw, n_states: int):
    """A distribution over states with some zeros (at least one positive entry)."""
    weights = np.array(
        [draw(st.one_of(st.just(0.0), st.floats(0.05, 1.0))) for _ in range(n_states)]
    )
    if weights.sum() == 0:
        weights[draw(st.integers(0, n_states - 1))] = 1.0
    return weights / weights.sum()


def _cap_paths(next_state: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """End the episode early (next_state = -1) where following a transition would give a
    state more than MAX_PATHS_PER_STATE trajectories; keeps instances enumerable."""
    next_state = next_state.copy()
    n_states, n_actions = next_state.shape
    counts = np.zeros(n_states, dtype=np.int64)
    for s in range(n_states - 1, -1, -1):
        total = 0
        for a in range(n_actions):
            if not allowed[s, a]:
                continue
            nxt = next_state[s, a]
            if nxt >= 0 and total + counts[nxt] > MAX_PATHS_PER_STATE:
                next_state[s, a] = -1
                nxt = -1
            total += 1 if nxt < 0 else counts[nxt]
        counts[s] = total
    return next_state


@st.composite
def rewards(draw, n_states: int, n_actions: int, terminal_only=None, next_state=None):
    """Rewards in [-2, 2]; with ``terminal_only`` only ending tokens are rewarded."""
    r = np.array([[draw(REWARD) for _ in range(n_actions)] for _ in range(n_states)])
    if terminal_only is None:
        terminal_only = draw(st.booleans())
    if terminal_only and next_state is not None:
        r = np.where(next_state < 0, r, 0.0)
    return r


@st.composite
def random_dags(draw, max_states: int = MAX_STATES, max_actions: int = MAX_ACTIONS, min_states: int = 1):
    """A random DAG TokenMDP: merged prefixes, early ends, disallowed tokens, a start
    distribution with zeros, rewards in [-2, 2]."""
    n_states = draw(st.integers(min_states, max_states))
    n_actions = draw(st.integers(1, max_actions))
    next_state = np.full((n_states, n_actions), -1, dtype=np.int64)
    for s in range(n_states - 1):
        for a in range(n_actions):
            # End early with probability 1/4 (the draw shrinks towards ending).
            if draw(st.integers(0, 3)) > 0:
                next_state[s, a] = draw(st.integers(s + 1, n_states - 1))
    allowed = draw(masks(n_states, n_actions))
    next_state = _cap_paths(next_state, allowed)
    logits = np.array([[draw(LOGIT) for _ in range(n_actions)] for _ in range(n_states)])
    ref_logp = log_softmax_masked(logits, allowed)
    reward = draw(rewards(n_states, n_actions, next_state=next_state))
    start = draw(start_distributions(n_states))
    return xpo_sim.TokenMDP(next_state, reward, ref_logp, start, info={"family": "hypothesis_dag"})


@st.composite
def token_trees(draw, max_states: int = MAX_STATES, max_actions: int = MAX_ACTIONS):
    """A random token tree: every state is a prefix reached by exactly one path; each token
    either ends the response or opens a new child state (numbered in creation order, so
    transitions increase the index). Roots are the prompts."""
    n_actions = draw(st.integers(1, max_actions))
    n_prompts = draw(st.integers(1, 2))
    rows: list[list[int]] = []
    n_states = n_prompts
    s = 0
    while s < n_states:
        row = []
        for _ in range(n_actions):
            if n_states < max_states and draw(st.booleans()):
                row.append(n_states)
                n_states += 1
            else:
                row.append(-1)
        rows.append(row)
        s += 1
    next_state = np.array(rows, dtype=np.int64)
    allowed = draw(masks(n_states, n_actions, p_off=0.2))
    logits = np.array([[draw(LOGIT) for _ in range(n_actions)] for _ in range(n_states)])
    ref_logp = log_softmax_masked(logits, allowed)
    reward = draw(rewards(n_states, n_actions, next_state=next_state))
    start = np.zeros(n_states)
    weights = [draw(st.floats(0.1, 1.0)) for _ in range(n_prompts)]
    start[:n_prompts] = np.array(weights) / sum(weights)
    return xpo_sim.TokenMDP(next_state, reward, ref_logp, start, info={"family": "hypothesis_tree"})


def mdps(**kwargs):
    """A random tree or DAG."""
    return st.one_of(token_trees(**kwargs), random_dags(**kwargs))


@st.composite
def policies(draw, mdp, zeros: bool = True, disallowed_mass: bool = False):
    """A per-state log-probability table (S, A).

    Its support lies inside π_ref's; with ``zeros`` some allowed tokens also get
    probability zero (-inf), at least one per row keeps mass. With ``disallowed_mass``
    the support may also include tokens π_ref disallows (at least one row does, when any
    token is disallowed).
    """
    n_states, n_actions = mdp.n_states, mdp.n_actions
    allowed = np.asarray(mdp.allowed)
    if disallowed_mass:
        support = draw(masks(n_states, n_actions, p_off=0.3))
        off = np.argwhere(~allowed)
        if off.size:
            s, a = off[draw(st.integers(0, len(off) - 1))]
            support[s, a] = True
    elif zeros:
        support = draw(masks(n_states, n_actions, p_off=0.3, within=allowed))
    else:
        support = allowed
    logits = np.array([[draw(LOGIT) for _ in range(n_actions)] for _ in range(n_states)])
    return log_softmax_masked(logits, support)


@st.composite
def mdp_and_policy(draw, zeros: bool = True):
    mdp = draw(mdps())
    return mdp, draw(policies(mdp, zeros=zeros))


@st.composite
def potentials(draw, n_states: int):
    """A potential Φ over states, values in [-3, 3] (Φ of the end is 0 by convention)."""
    return np.array([draw(st.floats(-3.0, 3.0)) for _ in range(n_states)])


@st.composite
def stochastic_mdps(draw, max_states: int = 5, max_actions: int = 2):
    """A small MDP with stochastic transitions (for the negative control, identity 7):
    each token leads to one or two outcomes (later states or the end). With S ≤ 5 and
    A ≤ 2 there are at most 4**4 · 4 = 1024 trajectories."""
    n_states = draw(st.integers(2, max_states))
    n_actions = draw(st.integers(1, max_actions))
    transitions = []
    for s in range(n_states):
        row = []
        for _ in range(n_actions):
            outcomes = [-1] + list(range(s + 1, n_states))
            k = draw(st.integers(1, min(2, len(outcomes))))
            chosen = draw(st.lists(st.sampled_from(outcomes), min_size=k, max_size=k, unique=True))
            weights = [draw(st.floats(0.1, 1.0)) for _ in chosen]
            total = sum(weights)
            row.append([(w / total, nxt) for w, nxt in zip(weights, chosen)])
        transitions.append(row)
    allowed = draw(masks(n_states, n_actions))
    logits = np.array([[draw(LOGIT) for _ in range(n_actions)] for _ in range(n_states)])
    ref_logp = log_softmax_masked(logits, allowed).tolist()
    reward = [[draw(REWARD) for _ in range(n_actions)] for _ in range(n_states)]
    start = [0.0] * n_states
    start[0] = 1.0
    return StochasticMDP(transitions, reward, ref_logp, start)
