r"""Preference oracles: labels for pairs of responses from their scores (by default the true rewards).

Every oracle answers two questions about responses a and b with scores r_a, r_b (arrays
that broadcast together, one entry per comparison):

* ``oracle.prob(reward_a, reward_b)`` — P(a ≻ b), a float64 array;
* ``oracle.prefer(reward_a, reward_b, rng)`` — a bool array, True where a is preferred,
  drawn from that probability with a ``numpy.random.Generator`` (or an int seed), so the
  same seed gives the same labels;
* ``oracle.best_and_worst(rewards, rng)`` — for k responses per prompt (rows of an (n, k)
  array), the indices of the top- and bottom-ranked response (iterative DPO, Inverse-Q*).
  Optional: for an oracle without it, :func:`best_and_worst` ranks the k responses by a
  round robin of the oracle's labels (each of the k(k−1)/2 pairs labelled once; most wins
  first, ties in wins broken uniformly at random).

A user's oracle needs only ``prefer`` (and ``prob`` where the exact label probability is
wanted); what it returns is checked where the loop reads it (:func:`preferred`,
:func:`answers`, :func:`best_and_worst`): one 0/1 (or bool) label per comparison, indices
in [0, k).

**Optional hooks** (simulated teachers beyond Bradley–Terry, as in B-Pref, Lee et al. 2021,
"B-Pref: Benchmarking Preference-Based Reinforcement Learning"):

* ``oracle.scores(mdp, batch)`` — the score of each response the oracle compares, a
  float64 array (N,). Default (an oracle without it): the true reward
  r(τ) = Σ_h r(s_h, a_h) (:func:`xpo_sim.trajectories.trajectory_reward`). The round loop
  reads scores through :func:`oracle_scores` (``label_and_store`` and the best-of-k
  ranking of :class:`~xpo_sim.IterativeDPO`/:class:`~xpo_sim.InverseQStar`), so an oracle
  may judge something other than the summed reward (the myopic teacher's discounted sum).
* ``oracle.answer(score_a, score_b, rng)`` — labels that need not be strict: a float64
  array with entries 1.0 (a ≻ b), 0.0 (b ≻ a), :data:`EQUAL` = 0.5 ("equally preferable",
  the soft label ½) or :data:`SKIP` = NaN (the query is skipped: no label). Where an
  oracle has it, the loop reads labels through :func:`answers` instead of ``prefer``.
  NaN is accepted as "skipped" only from an oracle that declares
  ``can_skip = True``; any other NaN, and any value outside {0, ½, 1}, is a ValueError
  naming the oracle — a NaN never reaches the data or the loss.
* ``oracle.can_skip`` — a bool attribute (default False): whether ``answer`` may return
  :data:`SKIP` and ``best_and_worst`` :data:`NO_PAIR`.

How answers are stored (:func:`xpo_sim.rounds.label_and_store`,
:class:`xpo_sim.PreferenceData`): a strict label stores chosen ≻ rejected with weight 1;
an equal answer stores weight ½ on (a ≻ b) and ½ on (b ≻ a), so its DPO term is the
soft-label loss −[½ log σ(h) + ½ log σ(−h)] (h the DPO margin of a over b); a skipped
query stores nothing (no pair, no explored response) but counts as asked
(``PreferenceData.n_skipped``, part of the ``pairs`` column = queries asked).

Oracles:

* :class:`BradleyTerry` (the default): p = σ(c (r_a − r_b)) with a reward scale c (an
  inverse temperature); the label is a draw a ≻ b with probability p.
* :class:`Argmax`: a ≻ b iff r_a > r_b; an exact tie r_a == r_b is broken by a fair coin.
* :class:`SimulatedTeacher`: B-Pref's configurable teacher — Bradley–Terry (or, with
  rationality ∞, Argmax) labels with mistakes, plus "equal" answers within a margin,
  skipped queries below a threshold and a myopic (discounted) score. With its defaults it
  is :class:`BradleyTerry` draw for draw.

All three flip each strict label independently with probability ``flip`` (``mistake``)
(label noise), so off the equal band

    P(a ≻ b) = (1 − flip) p + flip (1 − p).

Random draws: each call to ``prefer`` (or ``answer``) draws exactly one block of uniforms
of the broadcast shape for the label and one for the flip noise, whatever the rewards and
parameters, in that order (one definition of the draw for every oracle here).
Hence with the same seed ``flip = 1`` gives exactly the negation of ``flip = 0``, and the
stream a caller's Generator is left in depends only on the shape.

**Ranking k responses** (:func:`best_and_worst`): a :class:`SimulatedTeacher` that neither
skips nor answers "equal" ranks as :class:`BradleyTerry` (Plackett–Luce) or :class:`Argmax`
do; with equal answers or skips it uses the round robin of its answers, where a strict answer gives its winner one win, an equal
answer half a win to each, a skipped comparison nothing; most wins ranks first, fewest last,
ties uniformly at random (so a row whose answers were all "equal" yields a uniformly random
ordered pair: in expectation the ½/½ soft label). A row in which every comparison was
skipped yields no pair: both indices are :data:`NO_PAIR` = −1, and the round counts that
prompt as a skipped query.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
from scipy.special import expit

from xpo_sim import checks
from xpo_sim.mdp import TokenMDP
from xpo_sim.trajectories import as_generator, trajectory_reward

__all__ = ["PreferenceOracle", "BradleyTerry", "Argmax", "SimulatedTeacher", "preferred", "answers",
           "oracle_scores", "best_and_worst", "EQUAL", "SKIP", "NO_PAIR"]

EQUAL = 0.5
"""The label of an "equal" answer: the soft label ½ (stored as ½ on a ≻ b and ½ on b ≻ a)."""

SKIP = math.nan
"""The label of a skipped query (NaN), accepted only from an oracle with ``can_skip = True``."""

NO_PAIR = -1
"""The (best, worst) index :func:`best_and_worst` gives a row whose every comparison was
skipped (both indices, and only from an oracle with ``can_skip = True``)."""


@runtime_checkable
class PreferenceOracle(Protocol):
    """What the learning algorithms need from an oracle."""

    def prob(self, reward_a, reward_b) -> np.ndarray:
        """P(a ≻ b) for each comparison."""
        ...

    def prefer(self, reward_a, reward_b, rng) -> np.ndarray:
        """Bool labels, True where a is preferred, drawn with ``rng``."""
        ...

    # Optional members (looked up with getattr; see the module docstring):
    #
    # best_and_worst(rewards, rng) -> (best, worst) index arrays (n,); default
    #     :func:`best_and_worst`'s round robin of the oracle's labels.
    # scores(mdp, batch) -> float64 array (N,): what the oracle compares for each response
    #     of ``batch``; default the true reward trajectory_reward(mdp, batch) = Σ_h r(s_h, a_h).
    #     Read through :func:`oracle_scores` by label_and_store and the best-of-k ranking.
    # answer(score_a, score_b, rng) -> float64 labels (n,) in {1.0 (a ≻ b), 0.0 (b ≻ a),
    #     EQUAL = 0.5, SKIP = NaN}; default the 0/1 labels of ``prefer``. Read through
    #     :func:`answers` (validated: any other value is a ValueError).
    # can_skip: bool (default False) — whether answer may give SKIP and best_and_worst NO_PAIR;
    #     a NaN from an oracle without it is a ValueError, never a skip.


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


def _can_skip(oracle) -> bool:
    """Whether ``oracle`` declares ``can_skip = True`` (a bool; anything else counts as False)."""
    value = getattr(oracle, "can_skip", False)
    return isinstance(value, (bool, np.bool_)) and bool(value)


def answers(oracle, score_a: np.ndarray, score_b: np.ndarray, rng) -> np.ndarray:
    r"""The oracle's answer to each query (a_i, b_i), as float64 labels.

    ``oracle.answer(score_a, score_b, rng)`` where the oracle has it, else the labels of
    :func:`preferred` as 1.0/0.0 (the same draws, so an oracle with only ``prefer`` labels
    exactly as before). Label y_i means

    * y = 1.0: a_i ≻ b_i; y = 0.0: b_i ≻ a_i;
    * y = :data:`EQUAL` = ½: equally preferable (stored as the soft label ½);
    * y = :data:`SKIP` = NaN: skipped (nothing stored; the query still counts as asked).

    Parameters
    ----------
    oracle
        A preference oracle (``prefer``, optionally ``answer`` and ``can_skip``).
    score_a, score_b : numpy.ndarray
        1-d scores of one length n (:func:`oracle_scores` of the two responses).
    rng
        A ``numpy.random.Generator`` or an int seed.

    Returns
    -------
    numpy.ndarray
        float64 (n,) with entries in {0, ½, 1} ∪ {NaN}.

    Raises
    ------
    ValueError
        Naming the oracle, when ``answer`` returns another shape, a value outside
        {0, ½, 1, NaN}, or NaN from an oracle that does not declare ``can_skip = True``.
    """
    own = getattr(oracle, "answer", None)
    if own is None:
        return preferred(oracle, score_a, score_b, rng).astype(np.float64)
    labels = np.asarray(own(score_a, score_b, rng))
    n = np.shape(score_a)[0]
    name = type(oracle).__name__
    if labels.shape != (n,):
        raise ValueError(f"oracle {name}.answer returned shape {labels.shape} for {n} comparisons; it must "
                         f"return one label per comparison")
    if labels.dtype != np.bool_ and not (np.issubdtype(labels.dtype, np.integer)
                                         or np.issubdtype(labels.dtype, np.floating)):
        raise ValueError(f"oracle {name}.answer must return float labels in {{0, 0.5, 1}} or SKIP (NaN), got "
                         f"dtype {labels.dtype}")
    labels = labels.astype(np.float64)
    skipped = np.isnan(labels)
    valid = skipped | (labels == 0.0) | (labels == EQUAL) | (labels == 1.0)
    if not valid.all():
        raise ValueError(f"oracle {name}.answer must return labels in {{0, 0.5, 1}} or SKIP (NaN), got "
                         f"{labels[~valid][:3]}")
    if skipped.any() and not _can_skip(oracle):
        raise ValueError(f"oracle {name}.answer returned NaN for {int(skipped.sum())} of {n} comparisons, but "
                         f"the oracle does not declare can_skip = True: a NaN label from an oracle that cannot "
                         f"skip is a bug, not a skipped query")
    return labels


def oracle_scores(oracle, mdp: TokenMDP, batch) -> np.ndarray:
    r"""What ``oracle`` compares for each response of ``batch``: ``oracle.scores(mdp, batch)``
    where the oracle has it, else the true reward r(τ) = Σ_h r(s_h, a_h)
    (:func:`~xpo_sim.trajectories.trajectory_reward`).

    Parameters
    ----------
    oracle
        A preference oracle, optionally with ``scores(mdp, batch)``.
    mdp : TokenMDP
        The instance the responses come from.
    batch : TrajectoryBatch
        The responses (checked with :meth:`TokenMDP.check_batch`).

    Returns
    -------
    numpy.ndarray
        float64 (N,), finite.

    Raises
    ------
    ValueError
        When ``mdp`` is not a TokenMDP, ``batch`` not a batch of it, or ``scores`` returns
        another shape, a non-real dtype or a non-finite score (naming the oracle).
    """
    own = getattr(oracle, "scores", None)
    if own is None:
        return trajectory_reward(mdp, batch)
    if not isinstance(mdp, TokenMDP):
        raise ValueError(f"mdp must be a TokenMDP, got {type(mdp).__name__}")
    batch = mdp.check_batch(batch)
    values = np.asarray(own(mdp, batch))
    name = type(oracle).__name__
    if values.shape != (len(batch),) or values.dtype == np.bool_ or not (
            np.issubdtype(values.dtype, np.floating) or np.issubdtype(values.dtype, np.integer)):
        raise ValueError(f"oracle {name}.scores must return one real score per response: shape ({len(batch)},), "
                         f"got shape {values.shape} and dtype {values.dtype}")
    values = values.astype(np.float64, copy=False)
    if not np.isfinite(values).all():
        raise ValueError(f"oracle {name}.scores returned a non-finite score: {values[~np.isfinite(values)][:3]}")
    return values


def _round_robin(oracle, rows: np.ndarray, rng) -> tuple[np.ndarray, np.ndarray]:
    """Rank each row of k scores by a round robin of :func:`answers`: a strict answer is a
    win for its winner, an equal answer half a win for each, a skipped one nothing; most
    wins first. A row with no answered comparison gives :data:`NO_PAIR` for both."""
    n, k = rows.shape
    first, second = np.triu_indices(k, 1)
    a = rows[:, first].ravel()
    b = rows[:, second].ravel()
    labels = answers(oracle, a, b, rng).reshape(n, -1)
    answered = ~np.isnan(labels)
    wins = np.zeros((n, k))
    np.add.at(wins, (slice(None), first), np.where(answered, labels, 0.0))
    np.add.at(wins, (slice(None), second), np.where(answered, 1.0 - labels, 0.0))
    keys = as_generator(rng).random(rows.shape)  # ties in wins: a uniformly random order
    order = np.lexsort((keys, wins), axis=1)
    best, worst = order[:, -1], order[:, 0]
    unranked = ~answered.any(axis=1)
    if unranked.any():
        best, worst = np.where(unranked, NO_PAIR, best), np.where(unranked, NO_PAIR, worst)
    return best, worst


def best_and_worst(oracle, rewards, rng) -> tuple[np.ndarray, np.ndarray]:
    """The indices (best, worst) of the top- and bottom-ranked response in each row of
    ``rewards`` (n, k) (the oracle's scores of k responses to each prompt).

    ``oracle.best_and_worst`` where the oracle has it, else a round robin of the oracle's
    labels (:func:`answers`: every pair of a row labelled once; a strict answer is one win
    for its winner, an equal answer half a win for each, a skipped one nothing; the most
    wins ranks first, the fewest last, ties broken uniformly at random). What the oracle
    returns is checked: two int arrays of shape (n,) with entries in [0, k), best ≠ worst —
    except that an oracle with ``can_skip = True`` may give :data:`NO_PAIR` (−1) as both
    indices of a row, meaning "every comparison of this row was skipped: no pair". Callers
    must drop such rows (``best != NO_PAIR``) before indexing with them.

    Returns
    -------
    tuple of numpy.ndarray
        (best, worst), int64 (n,) each.
    """
    rows = _reward_rows(rewards)
    own = getattr(oracle, "best_and_worst", None)
    if own is None:
        return _round_robin(oracle, rows, rng)
    n, k = rows.shape
    name = type(oracle).__name__
    allow_none = _can_skip(oracle)
    allowed = f"{n} ints in [0, {k})" + (f" or NO_PAIR = {NO_PAIR}" if allow_none else "")
    try:
        best, worst = own(rows, rng)
    except (TypeError, ValueError) as err:
        if isinstance(err, ValueError) and "unpack" not in str(err):
            raise
        raise ValueError(f"oracle {name}.best_and_worst must return two index arrays (best, worst)") from None
    out = []
    for what, index in (("best", best), ("worst", worst)):
        index = np.asarray(index)
        ok = index.shape == (n,) and np.issubdtype(index.dtype, np.integer)
        if ok and index.size:
            inside = (index >= 0) & (index < k)
            ok = bool((inside | (index == NO_PAIR) if allow_none else inside).all())
        if not ok:
            raise ValueError(f"oracle {name}.best_and_worst returned {what} indices of shape {index.shape} and "
                             f"dtype {index.dtype}; expected {allowed}")
        out.append(index.astype(np.int64, copy=False))
    unranked = out[0] == NO_PAIR
    if (unranked != (out[1] == NO_PAIR)).any():
        raise ValueError(f"oracle {name}.best_and_worst returned NO_PAIR ({NO_PAIR}) as only one of best and worst; "
                         f"a row without a pair has NO_PAIR for both")
    if ((out[0] == out[1]) & ~unranked).any():
        raise ValueError(f"oracle {name}.best_and_worst returned the same response as best and worst")
    return out[0], out[1]


# --------------------------------------------------------------------------- helpers
def _rewards(reward_a, reward_b, names=("reward_a", "reward_b")) -> tuple[np.ndarray, np.ndarray]:
    """Both reward arrays as float64, broadcast to one shape; ValueError unless finite."""
    arrays = []
    for name, value in zip(names, (reward_a, reward_b)):
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
            f"{names[0]} and {names[1]} must broadcast together, got shapes "
            f"{arrays[0].shape} and {arrays[1].shape}"
        ) from None
    return a, b


def _with_flip(p: np.ndarray, flip: float) -> np.ndarray:
    return (1.0 - flip) * p + flip * (1.0 - p)


def _apply_flip(labels: np.ndarray, flip: float, rng: np.random.Generator) -> np.ndarray:
    flips = rng.random(labels.shape) < flip
    return np.asarray(labels ^ flips)


def _clean_prob(a: np.ndarray, b: np.ndarray, scale: float) -> np.ndarray:
    """P(a ≻ b) before flip noise: σ(scale·(a − b)) for a finite scale; for scale = ∞ the
    argmax rule (1 where a > b, 0 where a < b, ½ on exact ties)."""
    if scale == math.inf:
        return np.where(a > b, 1.0, np.where(a < b, 0.0, 0.5))
    return expit(scale * (a - b))


def _draw_labels(a: np.ndarray, b: np.ndarray, scale: float, flip: float, rng: np.random.Generator) -> np.ndarray:
    """The one label draw of every oracle here: u < P_clean(a ≻ b) with one block of
    uniforms u, then flip noise from a second block. For scale = ∞ this is the argmax
    label with a fair coin on exact ties (u < 1 always, u < 0 never, u < ½ a coin)."""
    labels = rng.random(a.shape) < _clean_prob(a, b, scale)
    return _apply_flip(labels, flip, rng)


def _reward_rows(rewards) -> np.ndarray:
    rows = np.asarray(rewards, dtype=np.float64)
    if rows.ndim != 2 or rows.shape[1] < 2 or not np.isfinite(rows).all():
        raise ValueError(f"rewards must be a finite (n, k) array with k >= 2, got shape {rows.shape}")
    return rows


def _rank_ends(rows: np.ndarray, scale: float, flip: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(best, worst) of each row: for a finite scale the ends of a Plackett–Luce draw (the
    ranking of scale·r + Gumbel noise); for scale = ∞ the highest and lowest r, exact ties
    in a uniformly random order; then, with probability ``flip``, the two swap."""
    if scale == math.inf:
        keys = rng.random(rows.shape)  # a uniformly random order among equal rewards
        order = np.lexsort((keys, rows), axis=1)
        best, worst = order[:, -1], order[:, 0]
    else:
        scores = scale * rows
        perturbed = scores + rng.gumbel(size=scores.shape)
        best, worst = perturbed.argmax(axis=1), perturbed.argmin(axis=1)
    swap = rng.random(len(rows)) < flip
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

    def prob(self, reward_a, reward_b) -> np.ndarray:
        """P(a ≻ b) = (1 − flip) σ(c Δr) + flip (1 − σ(c Δr)), float64."""
        a, b = _rewards(reward_a, reward_b)
        return np.asarray(_with_flip(_clean_prob(a, b, self.reward_scale), self.flip))

    def prefer(self, reward_a, reward_b, rng) -> np.ndarray:
        """Bool labels, True where a ≻ b: Bernoulli(σ(c Δr)), then flip noise."""
        a, b = _rewards(reward_a, reward_b)
        return _draw_labels(a, b, self.reward_scale, self.flip, as_generator(rng))

    def best_and_worst(self, rewards, rng) -> tuple[np.ndarray, np.ndarray]:
        """Rank each row of ``rewards`` (n, k) by a Plackett–Luce draw — the ranking of
        c·r + Gumbel noise, which for k = 2 is exactly the Bradley–Terry label — and return
        the indices of the first and the last; with probability ``flip`` the two swap."""
        return _rank_ends(_reward_rows(rewards), self.reward_scale, self.flip, as_generator(rng))


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
        return np.asarray(_with_flip(_clean_prob(a, b, math.inf), self.flip))

    def prefer(self, reward_a, reward_b, rng) -> np.ndarray:
        """Bool labels, True where r_a > r_b, a fair coin on exact ties, then flip noise."""
        a, b = _rewards(reward_a, reward_b)
        return _draw_labels(a, b, math.inf, self.flip, as_generator(rng))

    def best_and_worst(self, rewards, rng) -> tuple[np.ndarray, np.ndarray]:
        """Indices of the highest and the lowest reward of each row of ``rewards`` (n, k),
        exact ties broken uniformly at random; with probability ``flip`` the two swap."""
        return _rank_ends(_reward_rows(rewards), math.inf, self.flip, as_generator(rng))



@dataclass(frozen=True)
class SimulatedTeacher:
    r"""A simulated teacher after B-Pref (Lee, Smith, Dragan and Abbeel 2021, "B-Pref:
    Benchmarking Preference-Based Reinforcement Learning"): Bradley–Terry labels with
    mistakes, "equal" answers, skipped queries and a myopic score, each a parameter.

    For responses a, b with scores S_a, S_b (:meth:`scores`) and Δ = S_a − S_b, the answer
    to the query (a, b) is, in this order of precedence:

    * **skipped** (:data:`SKIP`) where max(S_a, S_b) < ``skip_below`` (B-Pref's "skip"
      teacher: neither response is good enough to judge);
    * **equal** (:data:`EQUAL` = ½) where |Δ| < ``equal_margin`` (B-Pref's "equal" teacher);
    * otherwise a strict label: a ≻ b with probability p = σ(c Δ), c = ``rationality``
      (B-Pref's β; c = ∞ is the perfectly rational teacher: p = 1, 0 or ½ on an exact tie,
      as :class:`Argmax`), then flipped with probability ε = ``mistake``, so

          P(a ≻ b) = (1 − ε) σ(c Δ) + ε (1 − σ(c Δ)).

    The score is the **myopic** discounted sum that weights later tokens more (B-Pref's
    myopic teacher), for a response of n tokens with per-token rewards r(s_h, a_h):

        S(τ) = Σ_{h=0}^{n−1} γ^{n−1−h} r(s_h, a_h),    γ = ``myopic_gamma`` ∈ [0, 1];

    the last token has weight 1 and each earlier one γ times the next (the horizon H of
    B-Pref's fixed-length segments is here each response's own length n). γ = 1 (default)
    is the true reward r(τ) exactly (:func:`~xpo_sim.trajectories.trajectory_reward`);
    γ = 0 judges the last token alone. The skip and equal rules read the same score.

    With the defaults (c = 1, ε = 0, no equal band, no skipping, γ = 1) the teacher is
    :class:`BradleyTerry` ``(reward_scale=c, flip=ε)`` draw for draw (the same uniforms,
    the same labels, the same rankings for a seed), and with c = ∞ it is :class:`Argmax`
    ``(flip=ε)``.

    Parameters
    ----------
    rationality : float in (0, ∞]
        c, the inverse temperature of the Bradley–Terry label (B-Pref's β); ``math.inf``
        for the deterministic (argmax) teacher.
    mistake : float in [0, 1]
        ε, the probability of flipping each strict label (B-Pref's ε).
    equal_margin : float ≥ 0 (∞ allowed)
        Answer "equal" when |S_a − S_b| < equal_margin; 0 (default) never.
    skip_below : float (±∞ allowed)
        Skip the query when both scores are below it: max(S_a, S_b) < skip_below;
        −∞ (default) never.
    myopic_gamma : float in [0, 1]
        γ of the myopic score; 1 (default) the undiscounted true reward.

    Notes
    -----
    Random draws: :meth:`answer` and :meth:`prefer` draw the label block and the flip block
    for every comparison, skipped and equal ones included, so the stream depends only on the
    shape. :meth:`best_and_worst` ranks k responses as :class:`BradleyTerry`/:class:`Argmax`
    do (Plackett–Luce / argmax of the scores, with the swap of probability ε) when the
    teacher neither skips nor answers "equal"; otherwise by the round robin of its answers
    (:func:`best_and_worst`), a row whose comparisons were all skipped giving
    :data:`NO_PAIR`. Where answers are stored: see :func:`xpo_sim.rounds.label_and_store`.
    """

    rationality: float = 1.0
    mistake: float = 0.0
    equal_margin: float = 0.0
    skip_below: float = -math.inf
    myopic_gamma: float = 1.0

    def __post_init__(self):
        object.__setattr__(self, "rationality", checks.real("rationality", self.rationality, low=0.0,
                                                            low_open=True, finite=False))
        object.__setattr__(self, "mistake", checks.probability("mistake", self.mistake))
        object.__setattr__(self, "equal_margin", checks.real("equal_margin", self.equal_margin, low=0.0,
                                                             finite=False))
        object.__setattr__(self, "skip_below", checks.real("skip_below", self.skip_below, finite=False))
        object.__setattr__(self, "myopic_gamma", checks.probability("myopic_gamma", self.myopic_gamma))

    @property
    def can_skip(self) -> bool:
        """Whether the teacher may skip a query: ``skip_below > −∞``."""
        return self.skip_below > -math.inf

    @property
    def strict(self) -> bool:
        """Whether every answer is a strict label (no equal band, no skipping):
        ``equal_margin == 0`` and ``skip_below == −∞``."""
        return self.equal_margin == 0.0 and not self.can_skip

    def _equal(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.abs(a - b) < self.equal_margin

    def skips(self, score_a, score_b) -> np.ndarray:
        """Bool mask of the skipped queries: max(S_a, S_b) < ``skip_below``."""
        a, b = _rewards(score_a, score_b, ("score_a", "score_b"))
        return np.asarray(np.maximum(a, b) < self.skip_below)

    def prob(self, score_a, score_b) -> np.ndarray:
        r"""The expected label of an answered query, E[y] with y ∈ {0, ½, 1}: ½ where
        |Δ| < ``equal_margin``, else P(a ≻ b) = (1 − ε) p + ε (1 − p), p = σ(c Δ) (the argmax
        rule for c = ∞), float64. Whether the query is answered at all is :meth:`skips`."""
        a, b = _rewards(score_a, score_b, ("score_a", "score_b"))
        strict = _with_flip(_clean_prob(a, b, self.rationality), self.mistake)
        return np.asarray(np.where(self._equal(a, b), EQUAL, strict) if self.equal_margin > 0 else strict)

    def answer(self, score_a, score_b, rng) -> np.ndarray:
        r"""Float labels y per comparison: :data:`SKIP` (NaN) where max(S_a, S_b) <
        ``skip_below``; else :data:`EQUAL` (½) where |Δ| < ``equal_margin``; else 1.0 (a ≻ b)
        with probability (1 − ε) σ(c Δ) + ε (1 − σ(c Δ)), 0.0 otherwise."""
        a, b = _rewards(score_a, score_b, ("score_a", "score_b"))
        labels = _draw_labels(a, b, self.rationality, self.mistake, as_generator(rng)).astype(np.float64)
        if self.equal_margin > 0:
            labels = np.where(self._equal(a, b), EQUAL, labels)
        if self.can_skip:
            labels = np.where(np.maximum(a, b) < self.skip_below, SKIP, labels)
        return np.asarray(labels)

    def prefer(self, score_a, score_b, rng) -> np.ndarray:
        """Bool labels, True where a ≻ b (the strict labels of :meth:`answer`). ValueError
        when a comparison would get an equal answer or be skipped, which a bool cannot say:
        read such a teacher through :meth:`answer` (:func:`answers`), as the round loop does."""
        a, b = _rewards(score_a, score_b, ("score_a", "score_b"))
        if not self.strict:
            soft = self._equal(a, b) | (np.maximum(a, b) < self.skip_below)
            if soft.any():
                raise ValueError(f"SimulatedTeacher.prefer: {int(soft.sum())} of {soft.size} comparisons get an "
                                 f"'equal' answer or are skipped, which a bool label cannot express; read the "
                                 f"teacher's labels with answer() (xpo_sim.preferences.answers)")
        return _draw_labels(a, b, self.rationality, self.mistake, as_generator(rng))

    def scores(self, mdp: TokenMDP, batch) -> np.ndarray:
        r"""The myopic score S(τ) = Σ_{h<n} γ^{n−1−h} r(s_h, a_h) of each response of
        ``batch`` (n its length, γ = ``myopic_gamma``), float64 (N,); for γ = 1 exactly
        :func:`~xpo_sim.trajectories.trajectory_reward`. ValueError when ``mdp`` is not a
        TokenMDP or ``batch`` not a batch of it."""
        if self.myopic_gamma == 1.0:
            return trajectory_reward(mdp, batch)
        if not isinstance(mdp, TokenMDP):
            raise ValueError(f"mdp must be a TokenMDP, got {type(mdp).__name__}")
        batch = mdp.check_batch(batch)
        lengths = batch.lengths[:, None]
        steps = np.arange(batch.states.shape[1])[None, :]
        inside = steps < lengths
        reward = mdp.reward[np.where(inside, batch.states, 0), np.where(inside, batch.actions, 0)]
        weight = self.myopic_gamma ** np.where(inside, lengths - 1 - steps, 0).astype(np.float64)
        return np.where(inside, weight * reward, 0.0).sum(axis=1)

    def best_and_worst(self, rewards, rng) -> tuple[np.ndarray, np.ndarray]:
        """(best, worst) of each row of scores ``rewards`` (n, k): for a :attr:`strict`
        teacher the ranking of :class:`BradleyTerry` (c finite: the ends of a Plackett–Luce
        draw of c·S + Gumbel noise) or of :class:`Argmax` (c = ∞), swapped with probability
        ε; otherwise the round robin of :meth:`answer` (strict win 1, equal ½ each, skipped
        nothing; ties at random), with :data:`NO_PAIR` for a row whose every comparison
        was skipped."""
        rows = _reward_rows(rewards)
        if self.strict:
            return _rank_ends(rows, self.rationality, self.mistake, as_generator(rng))
        return _round_robin(self, rows, rng)
