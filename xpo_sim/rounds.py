r"""What one round of the loop works with: the samplers, the labelling, the round context.

**Samplers.** A round draws responses from named sampling distributions. A
:class:`Sampler` says what a name draws from as exact per-state policy tables: one table
(each response drawn from it) or a sequence of tables (a uniform mixture: each response
from a component drawn uniformly at random). :data:`SAMPLERS` is the one registry of
names → samplers; the round context samples from what a sampler returns *and* hands the
very same tables to the concentrability tracker, so what is sampled and what is recorded
cannot disagree. The built-ins:

* ``"ref"`` — the reference policy π_ref;
* ``"current"`` — the current iterate πᵗ;
* ``"previous"`` — the iterate before the last update, π^{t−1} (π¹ in round 1);
* ``"history"`` — the uniform mixture (1/t) Σ_{i≤t} πⁱ of the iterates so far.

:func:`register_sampler` adds a name (a user's sampler, e.g. uniform over responses); an
algorithm may also name a sampler ``"package.module:qualname"`` (a :class:`Sampler`
object at module level), which any worker process resolves by import. An algorithm
declares the samplers it draws from (:attr:`xpo_sim.Algorithm.samplers`); a run keeps every
iterate's table exactly when a declared sampler needs the history, and drawing from an
undeclared sampler is a ValueError, never a silent fallback.

A policy class that cannot afford an exact table every round (the transformer) may draw
the built-in names itself (the ``make_sampler`` hook of :class:`xpo_sim.policies.PolicyHooks`),
with the same meaning; any other name is drawn from its sampler's tables.

**Labelling.** A pair (y, ỹ) is labelled by the preference oracle on the scores of the two
responses (by default the true rewards r(y), r(ỹ)); the preferred response is stored as
chosen, an "equal" answer as weight ½ each way, and a skipped query only as counted
(:func:`label_and_store`). The responses that enter the exploration bonus α Σ log π(ỹ) are
stored as "explored".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import numpy as np

from xpo_sim.data import PreferenceData
from xpo_sim.mdp import TokenMDP, TrajectoryBatch
from xpo_sim import checks
from xpo_sim.preferences import EQUAL, answers, oracle_scores
from xpo_sim.trajectories import _sample_paths, trajectory_reward

__all__ = ["Sampler", "SAMPLERS", "BUILTIN_SAMPLERS", "register_sampler", "get_sampler", "RoundContext",
           "label_and_store", "store_pairs"]


@dataclass(frozen=True, eq=False)
class Sampler:
    """A named sampling distribution of a round.

    ``tables(ctx)`` returns, for the :class:`RoundContext` ``ctx`` of the round, either one
    (S, A) table of log-probabilities (every response is drawn from it) or a sequence of
    such tables (a uniform mixture: each response is drawn from a component picked
    uniformly at random). Tables must be valid policies of ``ctx.mdp`` (rows normalized
    over π_ref's allowed tokens); tables that are not the loop's own are checked once per
    round. ``history``: the sampler reads ``ctx.iterates`` beyond the last two iterates,
    so a run that declares it keeps every iterate's table. ``description``: one line for
    error messages and the docs.
    """

    name: str
    tables: Callable[["RoundContext"], "np.ndarray | Sequence[np.ndarray]"]
    description: str = ""
    history: bool = False

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"a sampler's name must be a non-empty string, got {self.name!r}")
        if not callable(self.tables):
            raise ValueError(f"sampler {self.name!r}: tables must be a callable ctx -> table(s), got {self.tables!r}")
        if not isinstance(self.history, (bool, np.bool_)):
            raise ValueError(f"sampler {self.name!r}: history must be True or False, got {self.history!r}")


def _previous(ctx: "RoundContext") -> np.ndarray:
    iterates = ctx.iterates
    return iterates[-2] if len(iterates) > 1 else iterates[-1]


BUILTIN_SAMPLERS = ("ref", "current", "previous", "history")
SAMPLERS: dict[str, Sampler] = {
    "ref": Sampler("ref", lambda ctx: ctx.mdp.ref_logp, "the reference policy π_ref"),
    "current": Sampler("current", lambda ctx: ctx.logp, "the current iterate πᵗ"),
    "previous": Sampler("previous", _previous, "the iterate before the last update π^{t−1}"),
    "history": Sampler("history", lambda ctx: tuple(ctx.iterates), "the uniform mixture of the iterates π¹…πᵗ",
                       history=True),
}
"""The sampler registry: name → :class:`Sampler` (the four built-ins and every registered one)."""


def register_sampler(name: str, tables: Callable, *, description: str = "", history: bool = False) -> Sampler:
    """Add a sampler to :data:`SAMPLERS` under ``name`` and return it (see :class:`Sampler`
    for ``tables`` and ``history``). A built-in name cannot be replaced; registering a name
    again replaces the earlier sampler (a module reloaded). Algorithms refer to it by name
    (``XPO(sampler=name)``). Worker processes of a sweep see it when the module that
    registers it is imported there: register it in the module that defines your algorithm,
    or name it ``"package.module:qualname"`` instead."""
    if name in BUILTIN_SAMPLERS:
        raise ValueError(f"sampler name {name!r} is a built-in sampler and cannot be replaced; pick another name")
    if isinstance(name, str) and ":" in name:
        raise ValueError(f"sampler name {name!r} may not contain ':' (that form names a module attribute)")
    sampler = Sampler(name, tables, description, history)
    SAMPLERS[name] = sampler
    return sampler


def get_sampler(spec) -> Sampler:
    """The :class:`Sampler` a name of :data:`SAMPLERS` or a ``"package.module:qualname"``
    spec names; ValueError otherwise (an unknown name lists the registered ones)."""
    if isinstance(spec, Sampler):
        return spec
    if not isinstance(spec, str):
        raise ValueError(f"a sampler is named by a string (a name of xpo_sim.rounds.SAMPLERS or "
                         f"'package.module:qualname'), got {spec!r}")
    if spec in SAMPLERS:
        return SAMPLERS[spec]
    if ":" in spec:
        from xpo_sim.specs import resolve

        found = resolve(spec, "sampler", callable_=False)
        if not isinstance(found, Sampler):
            raise ValueError(f"sampler {spec!r} names a {type(found).__name__}, not a xpo_sim.rounds.Sampler")
        return found
    raise ValueError(f"unknown sampler {spec!r}: expected one of {tuple(SAMPLERS)}, a name registered with "
                     f"xpo_sim.register_sampler, or 'package.module:qualname' of a Sampler")


def store_pairs(datasets: list[PreferenceData], chosen: TrajectoryBatch, rejected: TrajectoryBatch,
                explored: TrajectoryBatch | None = None) -> None:
    """Add the pairs chosen_i ≻ rejected_i (and the explored responses) to every dataset."""
    for data in datasets:
        data.add_pairs(data.path_ids(chosen), data.path_ids(rejected))
        if explored is not None and len(explored):
            data.add_explored(data.path_ids(explored))


def label_and_store(mdp: TokenMDP, datasets: list[PreferenceData], oracle, y: TrajectoryBatch,
                    y_tilde: TrajectoryBatch, rng, explored: str = "second") -> None:
    r"""Label each query (y_i, ỹ_i) with the oracle and store the answers in every dataset.

    The oracle compares the scores S(y_i), S(ỹ_i) (:func:`~xpo_sim.preferences.oracle_scores`:
    its ``scores`` hook, by default the true rewards r(y_i), r(ỹ_i)) and answers with a label
    ℓ_i (:func:`~xpo_sim.preferences.answers`: its ``answer`` hook, by default the 0/1 labels
    of ``prefer``):

    * ℓ_i = 1 (y_i ≻ ỹ_i) or 0 (ỹ_i ≻ y_i): the preferred response is stored as chosen,
      weight 1 on (chosen, rejected) (:meth:`PreferenceData.add_pairs`);
    * ℓ_i = ½ (equal): weight ½ on (y_i ≻ ỹ_i) and ½ on (ỹ_i ≻ y_i)
      (:meth:`PreferenceData.add_equal`), so the pair's DPO term is
      −[½ log σ(h_i) + ½ log σ(−h_i)], h_i the DPO margin of y_i over ỹ_i;
    * ℓ_i = NaN (skipped): nothing is stored for the query — no pair, no explored response,
      no path — but it counts as asked (:meth:`PreferenceData.add_skipped`; the ``pairs``
      column of :func:`xpo_sim.run` is ``n_queries`` = answered + skipped).

    Parameters
    ----------
    mdp : TokenMDP
        The instance.
    datasets : list of PreferenceData
        Every dataset receives the same answers.
    oracle
        The preference oracle.
    y, y_tilde : TrajectoryBatch
        The two responses of each query (one length n).
    rng
        The Generator the labels are drawn from.
    explored : {"second", "both", "none"}
        Which responses of the answered queries enter the exploration bonus: ỹ, both, none.
    """
    explored = checks.choice("explored", explored, ("second", "both", "none"))
    labels = answers(oracle, oracle_scores(oracle, mdp, y), oracle_scores(oracle, mdp, y_tilde), rng)
    n = len(y)
    strict = (labels == 0.0) | (labels == 1.0)
    if strict.all():  # every query answered strictly (every oracle without answer(): as always)
        _store_strict(datasets, y, y_tilde, labels == 1.0, explored)
        return
    answered = ~np.isnan(labels)
    equal = labels == EQUAL
    keep = np.flatnonzero(strict)
    _store_strict(datasets, y.take(keep), y_tilde.take(keep), labels[keep] == 1.0, "none")
    ties = np.flatnonzero(equal)
    if ties.size:
        first, second = y.take(ties), y_tilde.take(ties)
        for data in datasets:
            data.add_equal(data.path_ids(first), data.path_ids(second))
    rows = np.flatnonzero(answered)
    bonus = {"second": y_tilde.take(rows), "both": TrajectoryBatch.concatenate([y.take(rows), y_tilde.take(rows)]),
             "none": None}[explored]
    for data in datasets:
        if bonus is not None and len(bonus):
            data.add_explored(data.path_ids(bonus))
        data.add_skipped(int(n - rows.size))


def _store_strict(datasets: list[PreferenceData], y: TrajectoryBatch, y_tilde: TrajectoryBatch,
                  prefer_y: np.ndarray, explored: str) -> None:
    """Store the strictly labelled pairs (y_i ≻ ỹ_i where ``prefer_y``, else ỹ_i ≻ y_i) and
    the explored responses (``explored``) in every dataset."""
    winner = np.where(prefer_y, 0, 1)
    both = TrajectoryBatch.concatenate([y, y_tilde])
    n = len(y)
    chosen = both.take(np.arange(n) + n * winner)
    rejected = both.take(np.arange(n) + n * (1 - winner))
    bonus = {"second": y_tilde, "both": both, "none": None}[explored]
    store_pairs(datasets, chosen, rejected, bonus)


def _draw(mdp: TokenMDP, tables, prompts: np.ndarray, rng) -> TrajectoryBatch:
    """One response to each prompt from ``tables``: one table, or a uniform mixture."""
    if isinstance(tables, np.ndarray):
        return _sample_paths(mdp, tables, prompts, rng)
    which = rng.integers(len(tables), size=len(prompts))
    parts = [_sample_paths(mdp, tables[i], prompts[j : j + 1], rng) for j, i in enumerate(which)]
    return TrajectoryBatch.concatenate(parts) if parts else _sample_paths(mdp, tables[0], prompts, rng)


class RoundContext:
    """What a round's hooks see: the instance, the data, the policy class and the current
    iterate (``params``; ``logp`` is its exact (S, A) table, computed when first read after
    ``params`` changes). ``data`` accumulates everything (the coverage metrics read it); an
    algorithm that trains on each round's data alone reads ``round_data``. ``state`` keeps
    an algorithm's per-run objects (a reward model, a second policy …). ``iterates`` are
    the tables of π¹…πᵗ the run keeps (all of them when a declared sampler needs the
    history, else the last two).

    ``samplers``: the sampler names (or specs) the algorithm declares; None allows every
    registered sampler and keeps every iterate. ``first_logp``: the exact table of the
    first iterate (default: computed from ``policy_class.initial_params()``).
    ``keep_tables``: whether ``iterates`` holds the tables (False for a class that samples
    the built-ins itself and is not scored every round).
    """

    def __init__(self, mdp: TokenMDP, beta: float, rng, oracle, policy_class,
                 samplers: Iterable[str] | None = None, *, first_logp: np.ndarray | None = None,
                 keep_tables: bool = True):
        self.mdp, self.beta, self.rng, self.oracle = mdp, beta, rng, oracle
        self.policy_class = policy_class
        self.data = PreferenceData(mdp)
        self.round_data = PreferenceData(mdp)
        self._params = policy_class.initial_params()
        self._logp: np.ndarray | None = first_logp
        self.state: dict = {}
        self.t = 0
        self.bonus = 0.0
        self.used: list = []  # this round's draws: sampler names, or the tables of sample_table
        self._drawn: list[tuple[Sampler | None, object]] = []  # (sampler, the tables drawn from, or None)
        if samplers is None:
            self.samplers = dict(SAMPLERS)
            self.keep_history = True
        else:
            self.samplers = {name: get_sampler(name) for name in samplers}
            self.keep_history = any(s.history for s in self.samplers.values())
        self.keep_tables = keep_tables
        self._iterates: list[np.ndarray | None] = []
        make_sampler = getattr(policy_class, "make_sampler", None)
        self.own_sampler = make_sampler(self, self.keep_history) if make_sampler is not None else None
        self._own_names = frozenset(getattr(self.own_sampler, "names", BUILTIN_SAMPLERS)
                                    if self.own_sampler is not None else ())

    @property
    def params(self):
        return self._params

    @params.setter
    def params(self, value) -> None:
        self._params = value
        self._logp = None

    @property
    def logp(self) -> np.ndarray:
        """The exact (S, A) table log πᵗ(a|s) of the current iterate."""
        if self._logp is None:
            self._logp = self.policy_class.policy_logp(self._params)
        return self._logp

    @logp.setter
    def logp(self, value: np.ndarray) -> None:
        self._logp = value

    @property
    def iterates(self) -> list[np.ndarray]:
        """The tables of the iterates kept, oldest first (πᵗ last)."""
        if any(table is None for table in self._iterates):
            raise ValueError(f"the {getattr(self.policy_class, 'name', 'policy')!r} class keeps no exact tables of "
                             f"past iterates in this run (it samples the built-in samplers itself and is scored "
                             f"only on recorded rounds); a sampler reading ctx.iterates cannot run with it")
        return self._iterates

    @property
    def datasets(self) -> list[PreferenceData]:
        return [self.data, self.round_data]

    def begin_round(self, t: int) -> None:
        """Start round t: πᵗ joins the iterates."""
        self.t = t
        self.used, self._drawn = [], []
        self.round_data = PreferenceData(self.mdp)
        self._iterates.append(self.logp if self.keep_tables else None)
        if not self.keep_history:
            del self._iterates[:-2]
        if self.own_sampler is not None:
            self.own_sampler.begin_round()

    def prompts(self, n: int) -> np.ndarray:
        """``n`` prompts s₀ ∼ ρ."""
        return self.rng.choice(self.mdp.n_states, size=n, p=self.mdp.start).astype(np.int64)

    def _sampler(self, name) -> Sampler:
        try:
            return self.samplers[name]
        except (KeyError, TypeError):
            pass
        get_sampler(name)  # an unknown name: the registry's error
        raise ValueError(f"the algorithm drew from sampler {name!r}, which it does not declare (its samplers are "
                         f"{tuple(self.samplers)}): list every sampler an algorithm draws from in its `samplers`, "
                         f"so that the run keeps what each needs (every iterate, for a mixture of the history)")

    def sample(self, name: str, prompts: np.ndarray, per_prompt: int = 1) -> TrajectoryBatch:
        """``per_prompt`` responses to each prompt from the sampler ``name`` (a declared
        sampler of the algorithm, :data:`SAMPLERS`); the concentrability tracker records
        exactly the tables drawn from."""
        sampler = self._sampler(name)
        prompts = np.repeat(np.asarray(prompts, dtype=np.int64), per_prompt)
        self.used.append(name)
        if name in self._own_names:
            self._drawn.append((sampler, None))  # the tracker reads the sampler's tables when it needs them
            return self.own_sampler.sample(name, prompts)
        tables = self._tables(sampler)
        self._drawn.append((sampler, tables))
        return _draw(self.mdp, tables, prompts, self.rng)

    def _tables(self, sampler: Sampler):
        """What ``sampler`` draws from this round, as one table or a tuple of tables; tables
        that are not the loop's own are checked."""
        tables = sampler.tables(self)
        if isinstance(tables, np.ndarray):
            return tables if self._own_table(tables) else self._checked(sampler, tables)
        try:
            tables = tuple(tables)
        except TypeError:
            raise ValueError(f"sampler {sampler.name!r} returned {type(tables).__name__}, not an (S, A) table or "
                             f"a sequence of tables") from None
        if not tables:
            raise ValueError(f"sampler {sampler.name!r} returned an empty mixture")
        return tuple(t if isinstance(t, np.ndarray) and self._own_table(t) else self._checked(sampler, t)
                     for t in tables)

    def _own_table(self, table: np.ndarray) -> bool:
        return table is self.mdp.ref_logp or table is self._logp or any(table is t for t in self._iterates)

    def _checked(self, sampler: Sampler, table) -> np.ndarray:
        try:
            return self.mdp.check_policy(table)
        except ValueError as err:
            raise ValueError(f"sampler {sampler.name!r} returned a table that is not a policy of this "
                             f"instance: {err}") from None

    def sample_table(self, logp: np.ndarray, prompts: np.ndarray) -> TrajectoryBatch:
        """One response to each prompt from a policy table the algorithm keeps itself (e.g.
        an earlier iterate, a fixed comparator); the table is reported to the
        concentrability tracker like a named sampler."""
        logp = self.mdp.check_policy(logp)
        self.used.append(logp)
        self._drawn.append((None, logp))
        return _sample_paths(self.mdp, logp, np.asarray(prompts, dtype=np.int64), self.rng)

    def drawn_tables(self) -> list:
        """The tables (one, or a tuple for a mixture) of every draw of this round, in order,
        for the concentrability tracker."""
        return [self._tables(sampler) if tables is None else tables for sampler, tables in self._drawn]
