r"""The exploration scorecard: a fixed, versioned suite of experiments that scores any
preference-learning algorithm on exact regret, one number in [0, 1] per experiment.

Modelled on bsuite (Osband et al. 2020): each **experiment** is an instance family, a
policy class, a sweep of one difficulty *setting*, a number of seeds and a query budget
(``rounds`` × ``batch`` pairs), and is tagged with the **property** it probes (coverage,
depth, width, noise, scale, do no harm, misspecification, prompts, transformer). Scores
are averaged per property and drawn as a radar plot.

Scores. Let R_ref(s) = J_β(π*) − J_β(π_ref) be the exact regret of the reference policy
at setting s (computed from the instance, not from the run), and R_T(s, i) the exact regret
of the policy the algorithm *reports* after its last round in seed i. With n settings and m
seeds:

* ``"solved"`` experiments (bsuite's "fraction solved within budget"):

  .. math:: \mathrm{score} = \frac{1}{nm}\sum_{s,i} \mathbf 1\{R_T(s,i) \le 0.1\,R_{\mathrm{ref}}(s)\}

* ``"no_harm"`` experiments: the share of runs whose final policy is no worse than π_ref,
  :math:`\frac{1}{nm}\sum_{s,i}\mathbf 1\{R_T(s,i)\le R_{\mathrm{ref}}(s)(1+10^{-9})\}`.

So a method that never moves off π_ref scores 0 on every "solved" experiment and 1 on
"do no harm"; one that reports π* scores 1 everywhere (:class:`StayAtReference` and
:class:`ReportOptimum` are those two ends; the tests pin both). A property's score is the
mean of its experiments' scores. An experiment an algorithm cannot run (its policy class
or one of the experiment's instances lacks what the algorithm needs) is reported with
``status`` "not applicable: …" and a NaN score — never as 0; the transformer experiment,
without the torch extra installed, is reported as "not run: …" with a NaN score.

Versions: 1 had eight properties (no equal, skip or myopic teacher, no transformer); 2 adds
the teacher_equal, teacher_skip and teacher_myopic noise experiments and the transformer
experiment.

Changing any experiment (its instances, settings, budget, seeds or score) means bumping
:data:`SUITE_VERSION`: the version is part of every run's identity, so results of another
version are never mixed in, and it is written beside every score.

Running: :func:`score` (Python) and ``experiments/scorecard.py`` (the command line) build
one :class:`~xpo_sim.sweep.RunConfig` per (algorithm, experiment, setting, seed) and run
them through :func:`~xpo_sim.sweep.run_sweep`, so results are resumable shards, identical on
every executor (serial, process pool, dask), and a user's algorithm given as
``"package.module:qualname"`` runs wherever the sweep does. The suite sets each
experiment's pairs per round: an algorithm's ``batch`` argument is replaced by it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from xpo_sim import checks, specs
from xpo_sim.algorithms import Algorithm

__all__ = ["SUITE_VERSION", "SOLVED_FRACTION", "PROPERTIES", "Setting", "Experiment", "Entry", "suite",
           "experiment", "entry", "builtin_entries", "torch_available", "StayAtReference", "ReportOptimum", "configs_for",
           "plan", "score", "score_entries", "run_outcomes", "score_results", "property_scores", "leaderboard", "leaderboard_markdown", "experiments_markdown",
           "load_scores", "SCORE_COLUMNS"]

SUITE_VERSION = "2"
"""The suite's version: bump it whenever an experiment changes (it enters every run's identity)."""

SOLVED_FRACTION = 0.1
"""A run solves a setting when its final reported regret is at most this fraction of π_ref's."""

NO_HARM_TOLERANCE = 1e-9
"""Relative slack of "no worse than π_ref" (a policy that stays at π_ref has exactly its regret)."""

PROPERTIES = ("coverage", "depth", "width", "noise", "scale", "do_no_harm", "misspecification", "prompts",
              "transformer")
"""The properties, in the order of the radar plot."""

SCORE_KINDS = ("solved", "no_harm")

SCORE_COLUMNS = ["suite_version", "algorithm", "experiment", "property", "score", "score_low", "score_high", "status",
                 "runs", "kind"]
"""The columns of ``scores.csv`` (one row per algorithm and experiment); ``score_low`` and
``score_high`` bound the 95% Wilson interval of the score."""

TABULAR_CLASSES = ("implicit", "logits")
"""Tried in this order for the tabular experiments: the first the algorithm can run with."""


@dataclass(frozen=True)
class Setting:
    """One value of an experiment's difficulty setting: the instance's arguments (besides
    ``seed``, which is the replicate), β, and the oracle (None: Bradley–Terry)."""

    value: float
    instance_args: dict
    beta: float
    oracle: str | None = None
    oracle_args: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Experiment:
    """An instance family swept over one difficulty setting, with its policy class
    (``"tabular"``: :data:`TABULAR_CLASSES`; or a class name such as ``"linear"``), pairs
    per round, rounds, seeds, and its score kind (:data:`SCORE_KINDS`). ``quick`` holds the
    smoke-test variant: the indices of the settings kept, its rounds and its seeds."""

    name: str
    property: str
    description: str
    instance: str
    setting: str
    settings: tuple[Setting, ...]
    policy: str = "tabular"
    batch: int = 8
    rounds: int = 100
    seeds: int = 8
    kind: str = "solved"
    seeded_instance: bool = True
    quick_settings: tuple[int, ...] = (0,)
    quick_rounds: int = 10
    quick_seeds: int = 2
    run_args: dict = field(default_factory=dict)
    policy_args: dict = field(default_factory=dict)
    requires_torch: bool = False

    def __post_init__(self):
        checks.choice("property", self.property, PROPERTIES)
        checks.choice("kind", self.kind, SCORE_KINDS)
        if not self.settings:
            raise ValueError(f"experiment {self.name!r} needs at least one setting")
        bad = [i for i in self.quick_settings if not 0 <= i < len(self.settings)]
        if bad:
            raise ValueError(f"experiment {self.name!r}: quick_settings {bad} are not indices of its settings")

    def chosen_settings(self, quick: bool) -> list[tuple[int, Setting]]:
        """(index, setting) pairs run in full or quick mode."""
        indices = self.quick_settings if quick else range(len(self.settings))
        return [(i, self.settings[i]) for i in indices]


def _needle_settings(n_responses: int, eps_values, beta: float = 0.1, **extra) -> tuple[Setting, ...]:
    return tuple(Setting(eps, dict(n_responses=n_responses, eps=eps, **extra), beta) for eps in eps_values)


def _teacher_settings(values, oracle: str, arg: str, base: dict | None = None, **fixed) -> tuple[Setting, ...]:
    base = dict(n_responses=8, eps=1e-2) if base is None else base
    return tuple(Setting(v, base, 0.1, oracle, dict(fixed, **{arg: v})) for v in values)


GRADED_NEEDLE = dict(n_responses=8, eps=1e-2, bad_reward=[0.0, 0.9])
"""bandit_needle with bad rewards drawn uniformly in [0, 0.9]: the equal and skip teachers
need scores that differ by less than the whole gap."""

TRANSFORMER_POLICY = "xpo_sim.torch.suite:transformer_policy"
TRANSFORMER_INSTANCE = "xpo_sim.torch.suite:distilled_needle"


@functools.lru_cache(maxsize=2)
def suite(quick: bool = False) -> tuple[Experiment, ...]:
    """The experiments of suite :data:`SUITE_VERSION` (the same list in quick mode: each
    experiment then runs its ``quick`` variant)."""
    del quick  # one list; the mode picks each experiment's variant
    return (
        Experiment(
            "two_arm_beta", "coverage",
            "two_arm_needle(β): two responses, π_ref's mass on the good one ε = σ(−1/β)·… shrinks with β "
            "(Proposition 2.1 of Xie et al.); one pair a round",
            "two_arm_needle", "beta",
            tuple(Setting(b, dict(beta=b), b) for b in (0.3, 0.2, 0.1, 0.07)),
            batch=1, rounds=200, seeded_instance=False, quick_settings=(2,), quick_rounds=30),
        Experiment(
            "bandit_needle_eps", "coverage",
            "bandit_needle(8 responses, ε): π_ref's mass ε on the one good response, 10⁻¹ … 10⁻⁴",
            "bandit_needle", "eps", _needle_settings(8, (1e-1, 1e-2, 1e-3, 1e-4)),
            rounds=125, quick_settings=(0, 1), quick_rounds=10),
        Experiment(
            "feature_bandit_width", "width",
            "feature_bandit(n responses, d = 8, ε = 10⁻²), linear class: n = 10² … 10⁵",
            "feature_bandit", "n_responses",
            tuple(Setting(n, dict(n_responses=n, d=8, eps=1e-2), 0.1) for n in (100, 1_000, 10_000, 100_000)),
            policy="linear", rounds=32, seeds=6, quick_settings=(0, 1), quick_rounds=6),
        Experiment(
            "teacher_mistakes", "noise",
            "bandit_needle(8, ε = 10⁻²) labelled by a teacher that flips each Bradley–Terry label with "
            "probability p = 0 … 0.3",
            "bandit_needle", "flip", _teacher_settings((0.0, 0.1, 0.2, 0.3), "BradleyTerry", "flip"),
            rounds=100, quick_settings=(1,), quick_rounds=10),
        Experiment(
            "teacher_rationality", "noise",
            "bandit_needle(8, ε = 10⁻²) labelled by Bradley–Terry with rationality (reward scale) "
            "c = 4 … 0.25: P(a ≻ b) = σ(c (r_a − r_b)); small c, near coin flips",
            "bandit_needle", "rationality", _teacher_settings((4.0, 1.0, 0.5, 0.25), "BradleyTerry", "reward_scale"),
            rounds=100, quick_settings=(1,), quick_rounds=10),
        Experiment(
            "teacher_equal", "noise",
            "bandit_needle(8, ε = 10⁻², bad rewards uniform in [0, 0.9]) labelled by a teacher that answers "
            "\"equal\" (label ½) when the rewards differ by less than m = 0 … 0.6 (B-Pref's equal teacher)",
            "bandit_needle", "equal_margin",
            _teacher_settings((0.0, 0.2, 0.4, 0.6), "SimulatedTeacher", "equal_margin", GRADED_NEEDLE),
            rounds=100, quick_settings=(2,), quick_rounds=10),
        Experiment(
            "teacher_skip", "noise",
            "bandit_needle(8, ε = 10⁻², bad rewards uniform in [0, 0.9]) labelled by a teacher that skips a "
            "query (no label; the query still counts) when both rewards are below t = 0 … 0.9 (B-Pref's skip "
            "teacher)",
            "bandit_needle", "skip_below",
            _teacher_settings((0.0, 0.3, 0.6, 0.9), "SimulatedTeacher", "skip_below", GRADED_NEEDLE),
            rounds=100, quick_settings=(3,), quick_rounds=10),
        Experiment(
            "teacher_myopic", "noise",
            "combination_lock(H = 4, vocab 4, p_correct = 0.5), dense reward (1/H per correct token before "
            "the first mistake), labelled on the myopic score Σ_h γ^(H−1−h) r_h that discounts earlier tokens, "
            "γ = 1 … 0.1 (B-Pref's myopic teacher)",
            "combination_lock", "myopic_gamma",
            _teacher_settings((1.0, 0.7, 0.4, 0.1), "SimulatedTeacher", "myopic_gamma",
                              dict(horizon=4, vocab=4, p_correct=0.5)),
            rounds=100, quick_settings=(3,), quick_rounds=10),
        Experiment(
            "reward_scale", "scale",
            "bandit_needle(8, ε = 10⁻², reward_scale R_max): rewards in [0, R_max], R_max = 1, 2, 4, 8",
            "bandit_needle", "reward_scale",
            tuple(Setting(r, dict(n_responses=8, eps=1e-2, reward_scale=r), 0.1) for r in (1.0, 2.0, 4.0, 8.0)),
            rounds=100, quick_settings=(0, 3), quick_rounds=10),
        Experiment(
            "token_needle_no_harm", "do_no_harm",
            "token_needle(vocab 4, horizon 3, ε): 63 equally bad responses; the share of runs whose final "
            "policy is no worse than π_ref",
            "token_needle", "eps",
            tuple(Setting(e, dict(vocab=4, horizon=3, eps=e), 0.1) for e in (1e-2, 1e-3)),
            kind="no_harm", rounds=100, quick_settings=(1,), quick_rounds=10),
        Experiment(
            "many_prompts", "prompts",
            "bandit_needle(8, ε = 10⁻², n_prompts): one good response per prompt, the same query budget "
            "spread over 1 … 64 prompts",
            "bandit_needle", "n_prompts",
            tuple(Setting(k, dict(n_responses=8, eps=1e-2, n_prompts=k), 0.1) for k in (1, 4, 16, 64)),
            rounds=100, quick_settings=(0, 1), quick_rounds=10),
        Experiment(
            "diabolical_lock_depth", "depth",
            "combination_lock(H, vocab 4, p_correct = 0.5, diabolical): reward only for the full correct "
            "sequence, a small distractor reward (δ = 0.1, more for an earlier exit) for leaving the path; "
            "π_ref's mass on the optimum is 2^−H, H = 2 … 10; linear class (realizable)",
            "combination_lock", "horizon",
            tuple(Setting(h, dict(horizon=h, vocab=4, p_correct=0.5, diabolical=True), 0.1) for h in (2, 4, 6, 8, 10)),
            policy="linear", rounds=64, quick_settings=(0, 1), quick_rounds=8),
        Experiment(
            "misspecified_features", "misspecification",
            "feature_bandit(100, d = 8, ε = 10⁻², misspecification δ): a reward component of size δ orthogonal "
            "to the features, δ = 0 … 0.3 (the best policy of the class keeps a regret below 6% of π_ref's); "
            "linear class",
            "feature_bandit", "misspecification",
            tuple(Setting(m, dict(n_responses=100, d=8, eps=1e-2, misspecification=m), 0.1)
                  for m in (0.0, 0.1, 0.2, 0.3)),
            policy="linear", rounds=32, seeds=6, quick_settings=(0, 3), quick_rounds=6),
        Experiment(
            "transformer_needle", "transformer",
            "token_needle(vocab 4, horizon 3, ε) with π_ref a small transformer distilled to the needle's "
            "(xpo_sim.torch.suite), trained by 10 Adam steps a round (lr 10⁻³) against it, ε = 10⁻¹, 10⁻²; "
            "scored every 5 rounds; needs the torch extra",
            TRANSFORMER_INSTANCE, "eps",
            tuple(Setting(e, dict(vocab=4, horizon=3, eps=e), 0.1) for e in (1e-1, 1e-2)),
            policy=TRANSFORMER_POLICY, policy_args=dict(steps=10, lr=1e-3), rounds=60, seeds=3,
            run_args=dict(eval_every=5), quick_settings=(0,), quick_rounds=4, quick_seeds=1, requires_torch=True),
    )


def torch_available() -> bool:
    """Whether PyTorch can be imported (the transformer experiment runs only then)."""
    import importlib.util

    return importlib.util.find_spec("torch") is not None


def experiment(name: str) -> Experiment:
    """The suite's experiment called ``name``."""
    by_name = {e.name: e for e in suite()}
    return by_name[checks.choice("experiment", name, tuple(by_name))]


# ----------------------------------------------------------------- calibration algorithms
@dataclass(frozen=True)
class StayAtReference(Algorithm):
    """Calibration: asks for pairs from π_ref and never updates, so it reports π_ref
    throughout (scores 0 on every "solved" experiment, 1 on "do no harm")."""

    policy_sampler = "ref"
    explore_sampler = "ref"

    def update(self, ctx) -> None:
        """No update: the iterate stays the policy class's initial one (π_ref)."""


@dataclass(frozen=True)
class ReportOptimum(Algorithm):
    """Calibration: asks for pairs from π_ref, never updates, and reports the exact optimum
    π* (solved once per run), so its regret is 0 and it scores 1 everywhere."""

    policy_sampler = "ref"
    explore_sampler = "ref"

    def update(self, ctx) -> None:
        """No update (the reported policy is π*, not the iterate)."""

    def reported_logp(self, ctx) -> np.ndarray:
        """log π* of the run's instance at the run's β."""
        cached = getattr(ctx, "_scorecard_optimum", None)
        if cached is None:
            from xpo_sim.soft import solve_soft

            cached = solve_soft(ctx.mdp, ctx.beta).logp
            ctx._scorecard_optimum = cached
        return cached


# ----------------------------------------------------------------- what is scored
@dataclass(frozen=True)
class Entry:
    """An algorithm to score: ``algorithm`` is a built-in name (``"XPO"``) or a spec
    ``"package.module:qualname"`` of an :class:`~xpo_sim.Algorithm` subclass, built with
    ``algorithm_args`` (plain JSON data; ``batch`` is set by each experiment); ``label``
    names it in the tables; ``policy`` replaces :data:`TABULAR_CLASSES` for the tabular
    experiments when given (a class name or a policy spec)."""

    label: str
    algorithm: str
    algorithm_args: dict = field(default_factory=dict)
    policy: str | None = None


_CALIBRATION = {"StayAtReference": StayAtReference, "ReportOptimum": ReportOptimum}


def _algorithm_spec(name: str) -> str:
    """A calibration algorithm's spec; any other name as given."""
    return f"{__name__}:{name}" if name in _CALIBRATION else name


def entry(algorithm, *, label: str | None = None, policy: str | None = None, **algorithm_args) -> Entry:
    """An :class:`Entry` from a built-in name, a ``"module:qualname"`` spec, an Algorithm
    subclass (by its import path) or an Algorithm instance (its fields that differ from the
    class's defaults become ``algorithm_args``). ``batch`` is dropped: the suite sets it."""
    from xpo_sim.sweep import algorithm_class

    if isinstance(algorithm, Algorithm):
        cls = type(algorithm)
        defaults = cls()
        algorithm_args = {**{f.name: getattr(algorithm, f.name) for f in dataclasses.fields(cls)
                             if f.init and getattr(algorithm, f.name) != getattr(defaults, f.name)},
                          **algorithm_args}
        algorithm = cls
    if isinstance(algorithm, type):
        if not issubclass(algorithm, Algorithm):
            raise ValueError(f"algorithm must be an xpo_sim.Algorithm subclass, got {algorithm!r}")
        algorithm = (algorithm.__name__ if _builtin(algorithm) else f"{algorithm.__module__}:{algorithm.__qualname__}")
    if not isinstance(algorithm, str) or not algorithm:
        raise ValueError(f"algorithm must be a built-in name, a 'package.module:qualname' spec, an Algorithm "
                         f"subclass or instance, got {algorithm!r}")
    algorithm_args = {k: v for k, v in algorithm_args.items() if k != "batch"}
    algorithm_class(_algorithm_spec(algorithm))(**algorithm_args)  # a bad name or argument fails here
    if label is not None and (not isinstance(label, str) or not label.strip()):
        raise ValueError(f"label must be a non-empty string, got {label!r}")
    return Entry(label or algorithm, algorithm, dict(algorithm_args), policy)


def _builtin(cls: type) -> bool:
    from xpo_sim import algorithms, methods

    return any(getattr(m, cls.__name__, None) is cls for m in (algorithms, methods)) or \
        _CALIBRATION.get(cls.__name__) is cls


def builtin_entries() -> list[Entry]:
    """Every built-in algorithm of :mod:`xpo_sim.algorithms` and :mod:`xpo_sim.methods`
    with its defaults, in the order they are exported."""
    from xpo_sim import algorithms, methods

    out = []
    for module in (algorithms, methods):
        for name in module.__all__:
            obj = getattr(module, name)
            if isinstance(obj, type) and issubclass(obj, Algorithm) and obj is not Algorithm:
                out.append(Entry(name, name))
    return out


# ----------------------------------------------------------------- configs
def _group(exp: Experiment, index: int) -> str:
    return f"scorecard v{SUITE_VERSION}|{exp.name}|{index}"


def _parse_group(group: str) -> tuple[str, int]:
    head, name, index = group.split("|")
    if head != f"scorecard v{SUITE_VERSION}":
        raise ValueError(f"run group {group!r} is not of scorecard version {SUITE_VERSION}")
    return name, int(index)


def _policy_for(entry_: Entry, exp: Experiment, quick: bool) -> tuple[str | None, str]:
    """The policy class ``entry_`` runs ``exp`` with — the first candidate the algorithm
    accepts (:meth:`~xpo_sim.Algorithm.check_compatible`) on every setting run — or
    (None, why not)."""
    from xpo_sim.loop import _build_policy_class
    from xpo_sim.policies import make_policy_class
    from xpo_sim.sweep import RunConfig, algorithm_class, make_instance, make_policy

    if exp.policy == "tabular":
        candidates = (entry_.policy,) if entry_.policy else TABULAR_CLASSES
    else:
        candidates = (exp.policy,)
    algorithm_args = dict(entry_.algorithm_args, batch=exp.batch)
    algorithm = algorithm_class(_algorithm_spec(entry_.algorithm))(**algorithm_args)
    reasons = []
    for policy in candidates:
        policy_args = _policy_args(exp, policy)
        try:
            for _, setting in exp.chosen_settings(quick):
                probe = RunConfig(instance=exp.instance, algorithm=_algorithm_spec(entry_.algorithm),
                                  beta=setting.beta, rounds=1, instance_args=_instance_args(exp, setting, 0),
                                  algorithm_args=algorithm_args, policy=policy, policy_args=policy_args)
                mdp = make_instance(probe)
                if specs.is_spec(policy):
                    built, _ = _build_policy_class(mdp, setting.beta, make_policy(probe, mdp, setting.beta), {})
                else:
                    built = make_policy_class(mdp, setting.beta, policy, **exp.run_args)
                algorithm.check_compatible(built, mdp)
        except ValueError as err:
            reasons.append(f"{policy}: {err}")
            continue
        return policy, ""
    return None, "; ".join(reasons)


def _policy_args(exp: Experiment, policy: str) -> dict:
    """The experiment's own policy options, for its own policy spec only."""
    return dict(exp.policy_args) if policy == exp.policy and specs.is_spec(policy) else {}


def _instance_args(exp: Experiment, setting: Setting, replicate: int) -> dict:
    return dict(setting.instance_args, seed=replicate) if exp.seeded_instance else dict(setting.instance_args)


def configs_for(entry_: Entry, exp: Experiment, *, quick: bool = False, seeds: int | None = None,
                policy: str | None = None):
    """The :class:`~xpo_sim.sweep.RunConfig` of every (setting, seed) of ``exp`` for
    ``entry_``, run with ``policy`` (see :func:`_policy_for`)."""
    from xpo_sim.sweep import RunConfig

    n_seeds = seeds if seeds is not None else (exp.quick_seeds if quick else exp.seeds)
    rounds = exp.quick_rounds if quick else exp.rounds
    out = []
    for replicate in range(n_seeds):
        for index, setting in exp.chosen_settings(quick):
            out.append(RunConfig(
                instance=exp.instance, instance_args=_instance_args(exp, setting, replicate),
                algorithm=_algorithm_spec(entry_.algorithm),
                algorithm_args=dict(entry_.algorithm_args, batch=exp.batch), beta=setting.beta, rounds=rounds,
                replicate=replicate, group=_group(exp, index), label=entry_.label, policy=policy,
                policy_args=_policy_args(exp, policy), oracle=setting.oracle, oracle_args=dict(setting.oracle_args), run_args=dict(exp.run_args)))
    return out


# ----------------------------------------------------------------- scoring
@functools.lru_cache(maxsize=256)
def _ref_regret(instance: str, instance_json: str, beta: float) -> float:
    """R_ref = J_β(π*) − J_β(π_ref) of one instance (exact)."""
    from xpo_sim.metrics import regret
    from xpo_sim.sweep import RunConfig, make_instance

    config = RunConfig(instance=instance, algorithm="OnlineDPO", beta=beta, rounds=1,
                       instance_args=json.loads(instance_json))
    mdp = make_instance(config)
    return regret(mdp, mdp.ref_logp, beta)


def _config_ref_regret(config) -> float:
    return _ref_regret(config.instance, json.dumps(config.instance_args, sort_keys=True), config.beta)


def run_outcomes(df: pd.DataFrame, configs) -> pd.DataFrame:
    """One row per run: its experiment, setting, seed, final and best regret, π_ref's
    regret, whether it solved the setting and whether it did no harm, and the queries at
    which its reported regret first reached 10% of π_ref's (NaN if never)."""
    by_key = {c.key: c for c in configs}
    rows = []
    for key, run in df.sort_values("round").groupby("key", sort=False):
        config = by_key[key]
        name, index = _parse_group(config.group)
        exp = experiment(name)
        ref = _config_ref_regret(config)
        final = float(run.regret.iloc[-1])
        threshold = SOLVED_FRACTION * ref
        hit = run.pairs[run.regret <= threshold]
        rows.append(dict(
            algorithm=config.label, experiment=name, property=exp.property, setting=exp.setting,
            value=exp.settings[index].value, replicate=config.replicate, policy=config.policy,
            ref_regret=ref, final_regret=final, best_regret=float(run.best_regret.iloc[-1]),
            final_relative=final / ref, best_relative=float(run.best_regret.iloc[-1]) / ref,
            solved=bool(final <= threshold), no_harm=bool(final <= ref * (1 + NO_HARM_TOLERANCE)),
            queries_to_solve=float(hit.iloc[0]) if len(hit) else math.nan, budget=int(run.pairs.iloc[-1])))
    return pd.DataFrame(rows)


def _score_interval(success: pd.Series, settings: pd.Series) -> tuple[float, float, float]:
    """The 95% Wilson interval of a score. With the same number of seeds at every setting
    (the suite's design) the score is k/N for the k successes of all N runs, and the
    interval is Wilson's for k of N; with unequal counts, the Wilson interval of the
    per-setting-weighted share at the total count (an approximation)."""
    from xpo_sim.intervals import wilson_interval

    n = len(success)
    share = float(success.groupby(settings).mean().mean())
    return wilson_interval(int(round(share * n)), n)


def score_results(df: pd.DataFrame, configs, skipped: Sequence[tuple[str, str, str]] = ()):
    """(scores, settings) from a sweep's rows ``df`` and its ``configs``; ``skipped`` lists
    (algorithm label, experiment, status) for experiments that were not run.

    ``scores``: :data:`SCORE_COLUMNS`, one row per algorithm and experiment. ``settings``:
    one row per algorithm, experiment and setting value: the fraction of seeds that solved
    it / did no harm, the median final and best regret relative to π_ref's, the median
    queries to 10% among the seeds that got there, and the budget."""
    runs = run_outcomes(df, configs)
    score_rows = []
    for (label, name), group in runs.groupby(["algorithm", "experiment"], sort=False):
        exp = experiment(name)
        success = group.solved if exp.kind == "solved" else group.no_harm
        per_setting = success.groupby(group.value).mean()
        _, low, high = _score_interval(success, group.value)
        score_rows.append(dict(suite_version=SUITE_VERSION, algorithm=label, experiment=name,
                               property=exp.property, score=float(per_setting.mean()), score_low=low,
                               score_high=high, status="ok", runs=len(group), kind=exp.kind))
    for label, name, status in skipped:
        exp = experiment(name)
        score_rows.append(dict(suite_version=SUITE_VERSION, algorithm=label, experiment=name, property=exp.property,
                               score=math.nan, score_low=math.nan, score_high=math.nan, status=status, runs=0,
                               kind=exp.kind))
    scores = pd.DataFrame(score_rows, columns=SCORE_COLUMNS)
    order = {e.name: i for i, e in enumerate(suite())}
    scores = scores.sort_values(["algorithm", "experiment"], key=lambda c: c.map(order) if c.name == "experiment"
                                else c.map({a: i for i, a in enumerate(dict.fromkeys(scores.algorithm))}))
    settings = (runs.groupby(["algorithm", "experiment", "property", "setting", "value"], sort=False)
                .agg(runs=("solved", "size"), solved=("solved", "mean"), no_harm=("no_harm", "mean"),
                     final_relative=("final_relative", "median"), best_relative=("best_relative", "median"),
                     queries_to_solve=("queries_to_solve", "median"), budget=("budget", "max"))
                .reset_index()) if len(runs) else pd.DataFrame()
    if len(settings):
        settings.insert(0, "suite_version", SUITE_VERSION)
        settings["kind"] = settings.experiment.map(lambda n: experiment(n).kind)
    return scores.reset_index(drop=True), settings


def plan(entries: Sequence[Entry], *, quick: bool = False, seeds: int | None = None,
         experiments: Sequence[str] | None = None):
    """(configs, skipped): the run configs of every applicable (entry, experiment), and
    (label, experiment, status) for the experiments an entry cannot run."""
    if isinstance(entries, Entry) or not entries:
        raise ValueError(f"entries must be a non-empty sequence of scorecard Entry objects, got {entries!r}")
    labels = [e.label for e in entries]
    if len(set(labels)) != len(labels):
        raise ValueError(f"entries need distinct labels, got {labels}")
    if seeds is not None:
        seeds = checks.integer("seeds", seeds, minimum=1)
    chosen = suite() if experiments is None else tuple(experiment(n) for n in experiments)
    configs, skipped = [], []
    for entry_ in entries:
        for exp in chosen:
            if exp.requires_torch and not torch_available():
                skipped.append((entry_.label, exp.name, "not run: needs PyTorch (pip install torch==2.13.0, then "
                                                        "pip install -e '.[torch]')"))
                continue
            policy, why = _policy_for(entry_, exp, quick)
            if policy is None:
                skipped.append((entry_.label, exp.name, f"not applicable: {why}"))
                continue
            configs.extend(configs_for(entry_, exp, quick=quick, seeds=seeds, policy=policy))
    return configs, skipped


def score_entries(entries: Sequence[Entry], *, quick: bool = False, seeds: int | None = None, out=None,
                  executor=None, force: bool = False, experiments: Sequence[str] | None = None,
                  progress: bool | None = None):
    """Score several :class:`Entry` objects on the suite (one sweep for all of them).
    Returns (scores, settings, per-run outcomes): see :func:`score_results`."""
    from xpo_sim.sweep import load_results, run_sweep

    configs, skipped = plan(entries, quick=quick, seeds=seeds, experiments=experiments)
    with _results_folder(out) as folder:
        if configs:
            run_sweep(configs, folder, executor, force=force, progress=progress)
            df = load_results(folder, configs)
        else:
            df = pd.DataFrame(columns=["key", "round", "pairs", "regret", "best_regret"])
    scores, settings = score_results(df, configs, skipped)
    runs = run_outcomes(df, configs) if configs else pd.DataFrame()
    return scores, settings, runs


@contextlib.contextmanager
def _results_folder(out):
    """``out`` as a Path, or a temporary folder removed afterwards when ``out`` is None."""
    if out is not None:
        yield Path(out)
        return
    with tempfile.TemporaryDirectory(prefix="xpo_sim_scorecard_") as folder:
        yield Path(folder)


def score(algorithm, *, quick: bool = False, seeds: int | None = None, out=None, executor=None, policy=None,
          label: str | None = None, force: bool = False, experiments: Sequence[str] | None = None) -> pd.DataFrame:
    r"""Score one algorithm on the suite: a tidy DataFrame with :data:`SCORE_COLUMNS`, one
    row per experiment (``attrs["settings"]`` holds the per-setting detail,
    ``attrs["runs"]`` the per-run outcomes).

    Parameters
    ----------
    algorithm
        A built-in name (``"XPO"``), a spec ``"package.module:qualname"`` of an
        :class:`~xpo_sim.Algorithm` subclass (built with its defaults), an Algorithm
        subclass, or an Algorithm instance (its non-default fields are kept; ``batch`` is
        set by each experiment).
    quick
        Each experiment's quick variant (fewer settings, rounds and seeds): a smoke test.
    seeds
        Seeds per setting (default: each experiment's own).
    out
        Folder for the run shards (resumable); None: a temporary folder.
    executor
        A ``concurrent.futures.Executor`` (process pool, dask client…); None: serial.
    policy
        Replaces the tabular experiments' policy class (default: the first of
        :data:`TABULAR_CLASSES` the algorithm can run with).
    experiments
        Names of the experiments to run (default: all of :func:`suite`).
    """
    chosen = entry(algorithm, label=label, policy=policy)
    scores, settings, runs = score_entries([chosen], quick=quick, seeds=seeds, out=out, executor=executor,
                                           force=force, experiments=experiments)
    scores.attrs["settings"] = settings
    scores.attrs["runs"] = runs
    return scores


def property_scores(scores: pd.DataFrame) -> pd.DataFrame:
    """Mean score per algorithm and property (NaN where no experiment of it ran), with
    the properties as columns in :data:`PROPERTIES` order and an ``overall`` column: the
    mean over the properties that ran."""
    table = scores.pivot_table(index="algorithm", columns="property", values="score", aggfunc="mean",
                               dropna=False, sort=False)
    table = table.reindex(columns=[p for p in PROPERTIES if p in set(scores.property)])
    table = table.reindex(list(dict.fromkeys(scores.algorithm)))
    table["overall"] = table.mean(axis=1, skipna=True)
    return table


def leaderboard(scores: pd.DataFrame) -> pd.DataFrame:
    """:func:`property_scores` sorted by ``overall``, best first."""
    return property_scores(scores).sort_values("overall", ascending=False, kind="stable")


def leaderboard_markdown(scores: pd.DataFrame) -> str:
    """The leaderboard as a Markdown table (scores to two decimals, "—" for not run)."""
    table = leaderboard(scores)
    header = ["algorithm", *[c.replace("_", " ") for c in table.columns]]
    lines = [f"Exploration scorecard, suite version {SUITE_VERSION}", "",
             "| " + " | ".join(header) + " |", "|" + "|".join(["---"] + [":-:"] * len(table.columns)) + "|"]
    for name, row in table.iterrows():
        cells = ["—" if not np.isfinite(v) else f"{v:.2f}" for v in row.to_numpy(dtype=float)]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def experiments_markdown(scores: pd.DataFrame) -> str:
    """Every experiment's score per algorithm with its 95% Wilson interval, as a Markdown
    table (one row per algorithm, leaderboard order; "—" for not run): the numbers a claim
    that one method beats another on an experiment is read from."""
    order = list(leaderboard(scores).index)
    names = [e.name for e in suite() if e.name in set(scores.experiment)]
    lines = [f"Exploration scorecard, suite version {SUITE_VERSION}: score [95% interval] per experiment", "",
             "| algorithm | " + " | ".join(n.replace("_", " ") for n in names) + " |",
             "|" + "|".join(["---"] + [":-:"] * len(names)) + "|"]
    by = scores.set_index(["algorithm", "experiment"])
    for label in order:
        cells = []
        for name in names:
            row = by.loc[(label, name)] if (label, name) in by.index else None
            if row is None or not np.isfinite(row.score):
                cells.append("—")
            else:
                cells.append(f"{row.score:.2f} [{row.score_low:.2f}, {row.score_high:.2f}]")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def load_scores(path) -> pd.DataFrame:
    """Read a ``scores.csv`` (or the folder holding one) and check it: the columns of
    :data:`SCORE_COLUMNS`, scores in [0, 1] where the status is "ok" and NaN otherwise,
    one suite version. ValueError naming the file otherwise."""
    path = Path(path)
    if path.is_dir():
        path = path / "scores.csv"
    if not path.is_file():
        raise ValueError(f"no scores at {path}: run experiments/scorecard.py with --out {path.parent}")
    try:
        df = pd.read_csv(path, dtype={"suite_version": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not a readable scores table ({err})") from None
    missing = [c for c in SCORE_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: missing columns {missing}")
    ok = df.status == "ok"
    bad = df[ok & ~(df.score.between(0.0, 1.0) & (df.score_low <= df.score + 1e-12) & (df.score <= df.score_high + 1e-12)
                    & df.score_low.between(0.0, 1.0) & df.score_high.between(0.0, 1.0))]
    if len(bad):
        raise ValueError(f"{path}: scores or their intervals outside [0, 1], missing, or not around the score, for "
                         f"{bad[['algorithm', 'experiment']].values.tolist()[:3]}")
    if df.loc[~ok, ["score", "score_low", "score_high"]].notna().any(axis=None):
        raise ValueError(f"{path}: an experiment that did not run carries a score")
    unknown = sorted(set(df.property) - set(PROPERTIES))
    if unknown:
        raise ValueError(f"{path}: unknown properties {unknown}")
    versions = sorted(set(df.suite_version))
    if len(versions) != 1:
        raise ValueError(f"{path}: scores of several suite versions {versions}")
    return df
