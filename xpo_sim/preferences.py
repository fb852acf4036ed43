r"""Preference oracles: labels for pairs of responses from their true rewards.

Every oracle answers two questions about responses a and b with rewards r_a, r_b (arrays
that broadcast together, one entry per comparison):

* ``oracle.prob(reward_a, reward_b)`` — P(a ≻ b), a float64 array;
* ``oracle.prefer(reward_a, reward_b, rng)`` — a bool array, True where a is preferred,
  drawn from that probability with a ``numpy.random.Generator`` (or an int seed), so the
  same seed gives the same labels;
* ``oracle.best_and_worst(rewards, rng)`` — for k responses per prompt (rows of an (n, k)
  array), the indices of the top- and bottom-ranked response (iterative DPO, Inverse-Q*).
  Optional: for an oracle without it, :func:`best_and_worst` ranks the k responses by a
  round robin of ``prefer`` (each of the k(k−1)/2 pairs labelled once; most wins first,
  ties in wins broken uniformly at random).

A user's oracle needs only ``prefer`` (and ``prob`` where the exact label probability is
wanted); what it returns is checked where the loop reads it (:func:`preferred`,
:func:`best_and_worst`): one 0/1 (or bool) label per comparison, indices in [0, k).

Oracles:

* :class:`BradleyTerry` (the default): p = σ(c (r_a − r_b)) with a reward scale c (an
  inverse temperature); the label is a draw a ≻ b with probability p.
* :class:`Argmax`: a ≻ b iff r_a > r_b; an exact tie r_a == r_b is broken by a fair coin.

Both then flip each label independently with probability ``flip`` (label noise), so

    P(a ≻ b) = (1 − flip) p + flip (1 − p).

Random draws: each call to ``prefer`` draws exactly one block of uniforms of the broadcast
shape for the label and one for the flip noise, whatever the rewards and parameters, in
that order. Hence with the same seed ``flip = 1`` gives exactly the negation of
``flip = 0``, and the stream a caller's Generator is left in depends only on the shape.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
from scipy.special import expit

from xpo_sim import checks
from xpo_sim.trajectories import as_generator

__all__ = ["PreferenceOracle", "BradleyTerry", "Argmax", "preferred", "best_and_worst"]


@runtime_checkable
class PreferenceOracle(Protocol):
    """What the learning algorithms need from an oracle."""

    def prob(self, reward_a, reward_b) -> np.ndarray:
        """P(a ≻ b) for each comparison."""
        ...

    def prefer(self, reward_a, reward_b, rng) -> np.ndarray:
        """Bool labels, True where a is preferred, drawn with ``rng``."""
        ...

    # optional: best_and_worst(rewards, rng) -> (best, worst) index arrays; default
    # :func:`best_and_worst`'s round robin of ``prefer``


def preferred(oracle, reward_a: np.ndarray, reward_b: np.ndarray, rng) -> np.ndarray:
    """``oracle.prefer(reward_a, reward_b, rng)`` for 1-d reward arrays of one length n, as
    a bool array of shape (n,); ValueError naming the oracle when it returns anything else
    (another shape, NaN, values other than 0/1)."""
    labels = np.asarray(oracle.prefer(reward_a, reward_b, rng))
    n = np.shape(reward_a)[0]
    name = type(oracle).__name__
    if labels.shape != (n,):
        raise ValueError(f"oracle {name}.prefer returned shape {labels.shape} for {n} comparisons; it must "
                         f"return one label per comparison")
    if labels.dtype != np.bool_:
        numeric = np.issubdtype(labels.dtype, np.number) and not np.issubdtype(labels.dtype, np.complexfloating)
        if not numeric or not np.isin(labels, (0, 1)).all():
            shown = labels[~np.isin(labels, (0, 1))][:3] if numeric else labels.dtype
            raise ValueError(f"oracle {name}.prefer must return bools or 0/1 (True where a is preferred), got "
                             f"{shown}")
        labels = labels == 1
    return labels


def _round_robin(oracle, rows: np.ndarray, rng) -> tuple[np.ndarray, np.ndarray]:
    """Rank each row of k rewards by a round robin of ``preferred``: most wins first."""
    n, k = rows.shape
    first, second = np.triu_indices(k, 1)
    a = rows[:, first].ravel()
    b = rows[:, second].ravel()
    a_wins = preferred(oracle, a, b, rng).reshape(n, -1)
    wins = np.zeros((n, k))
    np.add.at(wins, (slice(None), first), a_wins)
    np.add.at(wins, (slice(None), second), ~a_wins)
    keys = as_generator(rng).random(rows.shape)  # ties in wins: a uniformly random order
    order = np.lexsort((keys, wins), axis=1)
    return order[:, -1], order[:, 0]


def best_and_worst(oracle, rewards, rng) -> tuple[np.ndarray, np.ndarray]:
    """The indices (best, worst) of the top- and bottom-ranked response in each row of
    ``rewards`` (n, k): ``oracle.best_and_worst`` where the oracle has it, else a round
    robin of ``oracle.prefer`` (every pair of a row labelled once; the most wins ranks
    first, the fewest last, ties broken uniformly at random). What the oracle returns is
    checked: two int arrays of shape (n,) with entries in [0, k), best ≠ worst."""
    rows = _reward_rows(rewards)
    own = getattr(oracle, "best_and_worst", None)
    if own is None:
        return _round_robin(oracle, rows, rng)
    n, k = rows.shape
    name = type(oracle).__name__
    try:
        best, worst = own(rows, rng)
    except (TypeError, ValueError) as err:
        if isinstance(err, ValueError) and "unpack" not in str(err):
            raise
        raise ValueError(f"oracle {name}.best_and_worst must return two index arrays (best, worst)") from None
    out = []
    for what, index in (("best", best), ("worst", worst)):
        index = np.asarray(index)
        if (index.shape != (n,) or not np.issubdtype(index.dtype, np.integer) or index.size
                and (index.min() < 0 or index.max() >= k)):
            raise ValueError(f"oracle {name}.best_and_worst returned {what} indices of shape {index.shape} and "
                             f"dtype {index.dtype}; expected {n} ints in [0, {k})")
        out.append(index.astype(np.int64, copy=False))
    if (out[0] == out[1]).any():
        raise ValueError(f"oracle {name}.best_and_worst returned the same response as best and worst")
    return out[0], out[1]


# --------------------------------------------------------------------------- helpers
def _rewards(reward_a, reward_b) -> tuple[np.ndarray, np.ndarray]:
    """Both reward arrays as float64, broadcast to one shape; ValueError unless finite."""
    arrays = []
    for name, value in (("reward_a", reward_a), ("reward_b", reward_b)):
        array = np.asarray(value)
        if array.dtype == np.bool_ or not (
            np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)
        ):
            raise ValueError(f"{name} must be a real numeric array, got dtype {array.dtype}")
        array = array.astype(np.float64, copy=False)
        if not np.all(np.isfinite(array)):
            raise ValueError(f"{name} must be finite")
        arrays.append(array)
    try:
        a, b = np.broadcast_arrays(*arrays)
    except ValueError:
        raise ValueError(
            f"reward_a and reward_b must broadcast together, got shapes "
            f"{arrays[0].shape} and {arrays[1].shape}"
        ) from None
    return a, b


def _with_flip(p: np.ndarray, flip: float) -> np.ndarray:
    return (1.0 - flip) * p + flip * (1.0 - p)


def _apply_flip(labels: np.ndarray, flip: float, rng: np.random.Generator) -> np.ndarray:
    flips = rng.random(labels.shape) < flip
    return np.asarray(labels ^ flips)


def _reward_rows(rewards) -> np.ndarray:
    rows = np.asarray(rewards, dtype=np.float64)
    if rows.ndim != 2 or rows.shape[1] < 2 or not np.isfinite(rows).all():
        raise ValueError(f"rewards must be a finite (n, k) array with k >= 2, got shape {rows.shape}")
    return rows


def _rank_ends(scores: np.ndarray, rng: np.random.Generator, flip: float) -> tuple[np.ndarray, np.ndarray]:
    perturbed = scores + rng.gumbel(size=scores.shape)
    best, worst = perturbed.argmax(axis=1), perturbed.argmin(axis=1)
    swap = rng.random(len(scores)) < flip
    return np.where(swap, worst, best), np.where(swap, best, worst)


# --------------------------------------------------------------------------- oracles
@dataclass(frozen=True)
class BradleyTerry:
    r"""Bradley–Terry labels: P(a ≻ b) = σ(reward_scale · (r_a − r_b)), sampled, then
    flipped with probability ``flip``.

    Parameters
    ----------
    reward_scale : float > 0, finite
        Multiplies the reward difference (an inverse temperature; large means nearly
        deterministic).
    flip : float in [0, 1]
        Probability of flipping each sampled label.

    σ is computed stably: differences of ±1e4 give probabilities 1 and 0 with no overflow.
    """

    reward_scale: float = 1.0
    flip: float = 0.0

    def __post_init__(self):
        object.__setattr__(self, "reward_scale", checks.positive("reward_scale", self.reward_scale))
        object.__setattr__(self, "flip", checks.probability("flip", self.flip))

    def _clean_prob(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return expit(self.reward_scale * (a - b))

    def prob(self, reward_a, reward_b) -> np.ndarray:
        """P(a ≻ b) = (1 − flip) σ(c Δr) + flip (1 − σ(c Δr)), float64."""
        a, b = _rewards(reward_a, reward_b)
        return np.asarray(_with_flip(self._clean_prob(a, b), self.flip))

    def prefer(self, reward_a, reward_b, rng) -> np.ndarray:
        """Bool labels, True where a ≻ b: Bernoulli(σ(c Δr)), then flip noise."""
        a, b = _rewards(reward_a, reward_b)
        rng = as_generator(rng)
        labels = rng.random(a.shape) < self._clean_prob(a, b)
        return _apply_flip(labels, self.flip, rng)

    def best_and_worst(self, rewards, rng) -> tuple[np.ndarray, np.ndarray]:
        """Rank each row of ``rewards`` (n, k) by a Plackett–Luce draw — the ranking of
        c·r + Gumbel noise, which for k = 2 is exactly the Bradley–Terry label — and return
        the indices of the first and the last; with probability ``flip`` the two swap."""
        return _rank_ends(self.reward_scale * _reward_rows(rewards), as_generator(rng), self.flip)


@dataclass(frozen=True)
class Argmax:
    r"""Deterministic labels: a ≻ b iff r_a > r_b, then flipped with probability ``flip``.

    **Tie rule:** where r_a == r_b exactly (no tolerance), the label is a fair coin drawn
    from ``rng``, independently per comparison; so P(a ≻ b) = 1/2 there.

    Parameters
    ----------
    flip : float in [0, 1]
        Probability of flipping each label; ``flip = 1`` inverts every label.
    """

    flip: float = 0.0

    def __post_init__(self):
        object.__setattr__(self, "flip", checks.probability("flip", self.flip))

    def prob(self, reward_a, reward_b) -> np.ndarray:
        """P(a ≻ b): 1, 0 or 1/2 (tie) before flip noise; then mixed with its complement."""
        a, b = _rewards(reward_a, reward_b)
        clean = np.where(a > b, 1.0, np.where(a < b, 0.0, 0.5))
        return np.asarray(_with_flip(clean, self.flip))

    def prefer(self, reward_a, reward_b, rng) -> np.ndarray:
        """Bool labels, True where r_a > r_b, a fair coin on exact ties, then flip noise."""
        a, b = _rewards(reward_a, reward_b)
        rng = as_generator(rng)
        coins = rng.random(a.shape) < 0.5
        labels = np.where(a == b, coins, a > b)
        return _apply_flip(labels, self.flip, rng)

    def best_and_worst(self, rewards, rng) -> tuple[np.ndarray, np.ndarray]:
        """Indices of the highest and the lowest reward of each row of ``rewards`` (n, k),
        exact ties broken uniformly at random; with probability ``flip`` the two swap."""
        rows = _reward_rows(rewards)
        rng = as_generator(rng)
        # a uniformly random order among equal rewards: rank by (reward, random key)
        keys = rng.random(rows.shape)
        order = np.lexsort((keys, rows), axis=1)
        best, worst = order[:, -1], order[:, 0]
        swap = rng.random(len(rows)) < self.flip
        return np.where(swap, worst, best), np.where(swap, best, worst)
