r"""Sweeps: a list of run configurations → any ``concurrent.futures.Executor`` → resumable shards.

A sweep is pure data: each :class:`RunConfig` names an instance family of
:mod:`xpo_sim.envs` with its arguments, an algorithm of :mod:`xpo_sim.algorithms` with its
arguments, β, the number of rounds and a replicate index. Its identity is the SHA-256 of
its canonical JSON; that hash names its result shard (``<out>/shards/<hash>.csv``) and
seeds its random stream, so a config gives the same numbers whether it runs serially, in a
process pool or on a dask cluster, and a rerun skips every config whose shard exists.

Shards are written by the coordinating process only, to a temporary file then renamed
atomically: an interrupted sweep (Ctrl-C, a killed worker) leaves only complete shards,
and the rerun computes exactly the missing ones. A shard gets the permissions of any new
file under the current umask (0666 & ~umask), so a shared results folder stays readable.

Shards are checked whenever they are read back (:func:`load_results`): a shard that is
unreadable, cut short, header-only, or holds another run's rows raises :class:`ShardError`
naming the file; :func:`run_sweep` instead warns and recomputes such a shard.

Local worker processes (:func:`make_executor`) exit by themselves when the coordinating
process dies, even by SIGKILL, and a ``--scheduler`` that does not answer as a dask
scheduler fails within ``--scheduler-timeout`` seconds with a one-line error.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import hashlib
import json
import logging
import math
import os
import re
import secrets
import sys
import threading
import time
import warnings
from concurrent.futures import Executor, Future, ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import pandas as pd

from xpo_sim import checks, specs

__all__ = [
    "RunConfig",
    "run_config",
    "run_sweep",
    "load_results",
    "ShardError",
    "ResultsNotFoundError",
    "StaleShardWarning",
    "make_instance",
    "make_oracle",
    "make_policy",
    "algorithm_class",
    "ORACLES",
    "SerialExecutor",
    "make_executor",
    "SchedulerError",
    "check_scheduler_address",
    "max_workers",
    "check_output_folder",
    "check_output_file",
    "parse_sweep_args",
    "run_experiment",
    "print_summary",
]

SHARD_DIR = "shards"

DEFAULT_CONNECT_TIMEOUT = 10.0
"""Seconds :func:`make_executor` gives a ``scheduler`` to answer (``--scheduler-timeout``)."""

DEFAULT_WORKER_TIMEOUT = 60.0
"""Seconds :func:`make_executor` gives a ``scheduler``'s first worker to join (``--worker-timeout``)."""


def _canonical(value):
    """JSON-ready, order-independent form (tuples → lists, numpy scalars → Python)."""
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in sorted(value.items())}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    return value


ORACLES = ("BradleyTerry", "Argmax", "SimulatedTeacher")
"""The built-in preference oracles a :class:`RunConfig` may name (``oracle``)."""

_RESERVED_RUN_ARGS = {
    "seed": "each run's seed is derived from its config (RunConfig.seed: the first 64 bits of its key), so that "
            "it gives the same numbers on every executor; vary replicate to get another seed",
    "policy": "give the policy class as RunConfig(policy=...)",
    "oracle": "give the oracle as RunConfig(oracle=..., oracle_args=...)",
    "mdp": "the instance is RunConfig(instance=..., instance_args=...)",
    "algorithm": "the algorithm is RunConfig(algorithm=..., algorithm_args=...)",
    "beta": "beta is a field of RunConfig",
    "rounds": "rounds is a field of RunConfig",
}

_NEW_FIELDS = {"policy_args": {}, "oracle": None, "oracle_args": {}}
"""Fields added after the first shards were written: left out of the canonical JSON when at
these defaults, so that every earlier config keeps its key (shard name and seed)."""


def _check_data(name: str, value) -> None:
    """``value`` is plain JSON data (what a config's identity can be made of), else a
    ``ValueError`` naming ``name`` (e.g. ``algorithm_args['schedule']``)."""
    if value is None or isinstance(value, (bool, int, float, str, np.bool_, np.integer, np.floating)):
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_data(f"{name}[{i}]", item)
        return
    if isinstance(value, dict):
        for k, item in value.items():
            if not isinstance(k, str):
                raise ValueError(f"{name} must have string keys, got the key {k!r}")
            _check_data(f"{name}[{k!r}]", item)
        return
    raise ValueError(f"{name} must be plain data (numbers, strings, bools, None, lists and dicts of them): a "
                     f"config is identified by its JSON form and sent to other processes; got {value!r}")


def _check_args(name: str, value) -> dict:
    if not isinstance(value, dict):
        raise ValueError(f"{name} must be a dict of keyword arguments, got {value!r}")
    _check_data(name, value)
    return value


def _text(name: str, value) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a string, got {value!r}")
    return value


@dataclass(frozen=True, eq=False)
class RunConfig:
    """One run: ``xpo_sim.run(<instance>(**instance_args), <algorithm>(**algorithm_args),
    beta, rounds, seed=<derived>, policy=<policy>, oracle=<oracle>, **run_args)``.

    ``instance``: a family of :mod:`xpo_sim.envs` by name, or a spec
    ``"package.module:qualname"`` (see :mod:`xpo_sim.specs`) naming a callable that returns
    a :class:`~xpo_sim.TokenMDP`, called with ``instance_args``. ``algorithm``: an
    :class:`~xpo_sim.Algorithm` config class of :mod:`xpo_sim.algorithms` or
    :mod:`xpo_sim.methods` by name, or a spec naming an ``Algorithm`` subclass; built with
    ``algorithm_args``. ``policy``: a name of :data:`xpo_sim.policies.POLICY_CLASSES`
    (its options go in ``run_args``), or a spec naming a callable
    ``f(mdp, beta, **policy_args)`` that returns a policy class object (one implementing
    :class:`~xpo_sim.PolicyClass`, or one with ``as_policy_class``). ``oracle``: None
    (Bradley–Terry labels, the default), ``"BradleyTerry"``, ``"Argmax"`` or ``"SimulatedTeacher"`` (built with
    ``oracle_args``), or a spec naming an oracle class or factory, called with
    ``oracle_args``. A spec's module must be importable by the coordinating process and by
    every worker (on ``PYTHONPATH``, or installed): specs are resolved by import wherever
    the config runs, so they work on every executor.

    ``run_args``: the other keyword arguments of :func:`xpo_sim.run` (``record``,
    ``max_enumerate``, the built-in policy classes' options…); not ``seed``, which is
    derived from the config. Every ``*_args`` value must be plain JSON data.

    ``group`` and ``label`` are free-form names for analysis (e.g. the panel and the legend
    entry); they are part of the identity. ``replicate`` distinguishes seeds. β is stored
    as a float, so ``beta=1`` and ``beta=1.0`` are one config. ``policy_args``, ``oracle``
    and ``oracle_args`` enter the identity only when not at their defaults, so configs
    written before they existed keep their keys.
    """

    instance: str
    algorithm: str
    beta: float
    rounds: int
    replicate: int = 0
    instance_args: dict = field(default_factory=dict)
    algorithm_args: dict = field(default_factory=dict)
    policy: str = "implicit"
    run_args: dict = field(default_factory=dict)
    group: str = ""
    label: str = ""
    policy_args: dict = field(default_factory=dict)
    oracle: str | None = None
    oracle_args: dict = field(default_factory=dict)

    def __post_init__(self):
        from xpo_sim import envs
        from xpo_sim.policies import POLICY_CLASSES

        set_ = object.__setattr__  # frozen: canonical forms are stored once, here
        for name in ("instance_args", "algorithm_args", "run_args", "policy_args", "oracle_args"):
            _check_args(name, getattr(self, name))
        _text("instance", self.instance)
        if specs.is_spec(self.instance):
            specs.resolve(self.instance, "instance")
        elif self.instance not in envs.__all__:
            raise ValueError(f"unknown instance family {self.instance!r}: expected one of {envs.__all__}, or a spec "
                             f"{specs.SPEC_FORM} naming a function that returns a TokenMDP")
        _text("algorithm", self.algorithm)
        set_(self, "beta", checks.beta(self.beta))
        set_(self, "rounds", checks.integer("rounds", self.rounds, minimum=1))
        set_(self, "replicate", checks.integer("replicate", self.replicate, minimum=0))
        _text("group", self.group)
        _text("label", self.label)
        _text("policy", self.policy)
        if specs.is_spec(self.policy):
            specs.resolve(self.policy, "policy")
        else:
            if self.policy not in POLICY_CLASSES:
                raise ValueError(f"unknown policy class {self.policy!r}: expected one of {sorted(POLICY_CLASSES)}, "
                                 f"or a spec {specs.SPEC_FORM} naming f(mdp, beta, **policy_args) that returns a "
                                 f"policy class object")
            if self.policy_args:
                raise ValueError(f"policy_args are for a policy given as a spec; the options of the built-in "
                                 f"{self.policy!r} class go in run_args, got policy_args={self.policy_args!r}")
        for key in self.run_args:
            if key in _RESERVED_RUN_ARGS:
                raise ValueError(f"run_args may not set {key!r}: {_RESERVED_RUN_ARGS[key]}")
        if self.oracle is None:
            if self.oracle_args:
                raise ValueError(f"oracle_args need an oracle (e.g. oracle='BradleyTerry'), got "
                                 f"oracle_args={self.oracle_args!r} with oracle=None")
        else:
            _text("oracle", self.oracle)
            if not specs.is_spec(self.oracle) and self.oracle not in ORACLES:
                raise ValueError(f"unknown oracle {self.oracle!r}: expected None, one of {ORACLES}, or a spec "
                                 f"{specs.SPEC_FORM} naming an oracle class")
            make_oracle(self.oracle, self.oracle_args)  # validate early
        algorithm_class(self.algorithm)(**self.algorithm_args)  # validate early

    def __eq__(self, other) -> bool:
        return isinstance(other, RunConfig) and self.key == other.key

    def __hash__(self) -> int:
        return hash(self.key)

    def to_json(self) -> str:
        data = asdict(self)
        for name, default in _NEW_FIELDS.items():
            if data[name] == default:
                del data[name]
        return json.dumps(_canonical(data), sort_keys=True, separators=(",", ":"))

    @property
    def key(self) -> str:
        """SHA-256 of the canonical JSON: the shard name and the seed's source."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()

    @property
    def seed(self) -> int:
        return int(self.key[:16], 16)

    @property
    def display_label(self) -> str:
        return self.label or self.algorithm

    @property
    def specs(self) -> list[str]:
        """The ``"module:qualname"`` specs this config names (instance, algorithm, policy, oracle)."""
        return [s for s in (self.instance, self.algorithm, self.policy, self.oracle) if specs.is_spec(s)]

    def code_fingerprint(self) -> str:
        """The fingerprint of the user code this config names, as this process would run it
        (:func:`xpo_sim.specs.fingerprint`; ``""`` for a config of built-ins only, whose
        code is identified by the xpo_sim version)."""
        return specs.fingerprint(self.specs)


def algorithm_class(name: str):
    """The algorithm config class ``name`` names: a class of xpo_sim.algorithms or
    xpo_sim.methods by name, or a spec ``"package.module:qualname"`` naming an
    :class:`~xpo_sim.Algorithm` subclass (resolved by :func:`xpo_sim.specs.resolve`)."""
    from xpo_sim import algorithms, methods

    if specs.is_spec(name):
        return specs.resolve(name, "algorithm", subclass_of=algorithms.Algorithm)
    known = {n: getattr(m, n) for m in (algorithms, methods) for n in m.__all__
             if isinstance(getattr(m, n), type) and issubclass(getattr(m, n), algorithms.Algorithm)}
    known.pop("Algorithm")
    if name not in known:
        raise ValueError(f"unknown algorithm {name!r}: expected one of {sorted(known)}, or a spec "
                         f"{specs.SPEC_FORM} naming an xpo_sim.Algorithm subclass")
    return known[name]


def make_oracle(oracle: str | None, oracle_args: dict | None = None):
    """The preference oracle a config names: None (the run's default, Bradley–Terry), a
    built-in name of :data:`ORACLES`, or a spec naming an oracle class or factory; built
    with ``oracle_args``. The object must have ``prefer(r_a, r_b, rng)``."""
    if oracle is None:
        return None
    args = oracle_args or {}
    if specs.is_spec(oracle):
        factory = specs.resolve(oracle, "oracle")
    else:
        from xpo_sim import preferences

        factory = getattr(preferences, checks.choice("oracle", oracle, ORACLES))
    try:
        built = factory(**args)
    except TypeError as err:
        raise ValueError(f"oracle {oracle!r} cannot be built with oracle_args={args!r}: {err}") from None
    if not callable(getattr(built, "prefer", None)):
        raise ValueError(f"oracle {oracle!r} built an object without prefer(r_a, r_b, rng): {built!r}")
    return built


def make_instance(config: RunConfig):
    """The TokenMDP of ``config``: its envs family, or its instance spec's callable,
    called with ``instance_args``."""
    from xpo_sim import envs
    from xpo_sim.mdp import TokenMDP

    if not specs.is_spec(config.instance):
        return getattr(envs, config.instance)(**config.instance_args)
    mdp = specs.resolve(config.instance, "instance")(**config.instance_args)
    if not isinstance(mdp, TokenMDP):
        raise ValueError(f"instance {config.instance!r} must return a TokenMDP, got {type(mdp).__name__}")
    return mdp


def make_policy(config: RunConfig, mdp, beta: float):
    """What ``config`` passes to ``run`` as ``policy``: a built-in name as is, or the
    object its policy spec's callable builds, ``f(mdp, beta, **policy_args)``."""
    if not specs.is_spec(config.policy):
        return config.policy
    return specs.resolve(config.policy, "policy")(mdp, beta, **config.policy_args)


def run_config(config: RunConfig) -> pd.DataFrame:
    """Run one config and return its rows with the config's identity columns added, and
    what made them: ``xpo_sim_version`` and ``code_fingerprint`` (see
    :meth:`RunConfig.code_fingerprint`). Specs are resolved here, in the process that
    runs the config."""
    from xpo_sim import __version__
    from xpo_sim.loop import run

    mdp = make_instance(config)
    algorithm = algorithm_class(config.algorithm)(**config.algorithm_args)
    policy = make_policy(config, mdp, config.beta)
    oracle = make_oracle(config.oracle, config.oracle_args)
    fingerprint = config.code_fingerprint()  # after the resolutions: the code that runs now
    df = run(mdp, algorithm, config.beta, config.rounds, seed=config.seed, policy=policy, oracle=oracle,
             **config.run_args)
    df.insert(0, "key", config.key)
    df.insert(1, "group", config.group)
    df.insert(2, "label", config.display_label)
    df.insert(3, "instance", config.instance)
    df.insert(4, "beta", config.beta)
    df.insert(5, "eps", float(mdp.info.get("eps", math.nan)))
    df.insert(6, "replicate", config.replicate)
    df.insert(7, "policy", config.policy)
    df["xpo_sim_version"] = __version__
    df["code_fingerprint"] = fingerprint
    return df


def _shard_path(out: Path, config: RunConfig) -> Path:
    return out / SHARD_DIR / f"{config.key}.csv"


def _write_atomic(df: pd.DataFrame, path: Path) -> None:
    """Write ``df`` as ``path`` through a temporary file in the same folder and an atomic
    rename. The file is created with mode 0666, so the kernel applies the umask (and any
    default ACL) exactly as for any other new file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        tmp = path.parent / f".tmp-{path.stem}-{secrets.token_hex(8)}.part"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            break
        except FileExistsError:  # pragma: no cover - a 64-bit random name taken
            continue
    try:
        with os.fdopen(fd, "w") as handle:
            df.to_csv(handle, index=False)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


# ----------------------------------------------------------------------------- shards on disk


class ShardError(ValueError):
    """A result shard on disk that cannot be used: unreadable, cut short, header-only, or
    holding rows that are not its run's. ``path`` is the file, ``reason`` says what is wrong."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path, self.reason = Path(path), reason
        advice = ("" if "remove it" in reason else
                  "; delete it (or rerun the sweep with --force) to recompute it")
        super().__init__(f"result shard {self.path} is unusable: {reason}{advice}")


_PROVENANCE_COLUMNS = ("xpo_sim_version", "code_fingerprint")
"""What made a shard (written since xpo_sim 0.1.0's fingerprinting; absent in older shards)."""
_TEXT_COLUMNS = ("key", "group", "label", "instance", "policy", "algorithm", *_PROVENANCE_COLUMNS)
_COUNT_COLUMNS = ("round", "pairs", "distinct_seen")  # finite integers >= 0
_RTOL = 1e-9  # two copies of one float (best_regret and regret) after a CSV round trip
_MASS_SLACK = 1e-9  # a probability mass summed in float64 may exceed 1 by rounding
_KL_SLACK = 1e-9  # KL(π‖π_ref) as a float64 sum of π·(log π − log π_ref) may be −1e-17 for π = π_ref


class StaleShardWarning(RuntimeWarning):
    """A result shard made by other code than the current one (another xpo_sim version, or
    a user module whose source changed): :func:`run_sweep` recomputes it."""


def _expected_columns() -> list[str]:
    from xpo_sim.analysis import RUN_KEYS
    from xpo_sim.recorder import COLUMNS

    return [*RUN_KEYS, *COLUMNS]


def _same_text(value, expected: str) -> bool:
    """A text cell as read back from CSV (an empty string reads as NaN) equals ``expected``."""
    return (expected == "" and pd.isna(value)) or (not pd.isna(value) and str(value) == expected)


def _text_value(value) -> str:
    return "" if pd.isna(value) else str(value)


def _first_bad(mask: np.ndarray, rounds: np.ndarray) -> str:
    return f"round {int(rounds[np.flatnonzero(mask)[0]])}"


def _values_problem(df: pd.DataFrame) -> str | None:
    """Range and identity checks of the metric columns (``xpo_sim.recorder``'s definitions):

    * ``regret`` = β E_{d^π} KL(π‖π*) and ``kl_ref`` = KL(π‖π_ref) are ≥ 0 and never NaN;
      either is +inf exactly when the other is (π leaves π_ref's support);
    * ``iterate_regret`` and ``avg_regret`` ≥ 0, never NaN; ``mixture_regret`` ≥ 0 or NaN
      (not a tree); ``reward_regret`` and ``alpha`` finite;
    * ``opt_mass`` and ``seen_star_mass`` in [0, 1];
    * ``log_concentrability`` NaN (not computed) or ≥ 0 (log of a max ratio of two
      distributions), +inf allowed (the data misses a π* response);
    * ``best_regret``: the best regret of every scored iterate so far, so ≥ 0, ≤ this row's
      regret, non-increasing, equal to the regret in round 0 and to the running minimum of
      ``regret`` when every round is a row; then also ``avg_regret`` is the running mean of
      ``regret`` over rounds 1…t (the regret itself in round 0);
    * the identity ``reward_regret − regret + β·kl_ref = β KL(π*‖π_ref)``: the same number in
      every row of a run (regret = J*(π*) − J(π) with J(π) = E_π r − β KL(π‖π_ref)), up to
      1e-4 of the row's magnitudes (float32 policy tables keep about that many digits) plus
      β·1e-12 (the rounding of a KL near 0, scaled by β).
    """
    rounds = df["round"].to_numpy()

    def col(name):
        return df[name].to_numpy(dtype=float)

    regret, best, kl, iterate = col("regret"), col("best_regret"), col("kl_ref"), col("iterate_regret")
    reward_regret, beta = col("reward_regret"), col("beta")
    for name in ("regret", "best_regret", "avg_regret", "reward_regret", "kl_ref", "opt_mass", "seen_star_mass",
                 "iterate_regret", "alpha"):
        values = col(name)
        if np.isnan(values).any():
            return f"column {name} is NaN in {_first_bad(np.isnan(values), rounds)}"
    for name, values, least in (("regret", regret, 0.0), ("kl_ref", kl, -_KL_SLACK), ("best_regret", best, 0.0),
                                ("iterate_regret", iterate, 0.0), ("avg_regret", col("avg_regret"), 0.0),
                                ("mixture_regret", col("mixture_regret"), 0.0)):
        if (values < least).any():
            return (f"column {name} must be >= 0, got {float(values[values < least][0])!r} in "
                    f"{_first_bad(values < least, rounds)}")
    for name in ("reward_regret", "alpha"):
        values = col(name)
        if not np.isfinite(values).all():
            return f"column {name} must be finite, got {float(values[~np.isfinite(values)][0])!r} in " \
                   f"{_first_bad(~np.isfinite(values), rounds)}"
    mismatch = np.isinf(regret) != np.isinf(kl)
    if mismatch.any():
        return (f"regret and kl_ref must be infinite together (a policy outside π_ref's support), but in "
                f"{_first_bad(mismatch, rounds)} regret is {float(regret[mismatch][0])!r} and kl_ref "
                f"{float(kl[mismatch][0])!r}")
    for name in ("opt_mass", "seen_star_mass"):
        values = col(name)
        bad = (values < 0) | (values > 1 + _MASS_SLACK)
        if bad.any():
            return f"column {name} must lie in [0, 1], got {float(values[bad][0])!r} in {_first_bad(bad, rounds)}"
    concentrability = col("log_concentrability")
    bad = concentrability < -_MASS_SLACK  # NaN compares False: not computed
    if bad.any():
        return (f"column log_concentrability must be >= 0 (or NaN when not computed), got "
                f"{float(concentrability[bad][0])!r} in {_first_bad(bad, rounds)}")
    slack = _RTOL * np.maximum(np.abs(regret), np.abs(best)) + 1e-300
    finite = np.isfinite(regret)
    bad = finite & (best > regret + slack)
    if bad.any():
        return f"best_regret exceeds regret in {_first_bad(bad, rounds)} (best_regret is the best so far)"
    if (np.diff(best) > slack[1:]).any():
        return f"best_regret increases in {_first_bad(np.diff(best) > slack[1:], rounds[1:])} (it is a running best)"
    if not abs(best[0] - regret[0]) <= slack[0]:
        return f"best_regret {float(best[0])!r} differs from regret {float(regret[0])!r} in round {int(rounds[0])}"
    if rounds[-1] == len(rounds) - 1:  # every round is a row: best_regret is the running minimum of regret
        running = np.minimum.accumulate(regret)
        bad = ~(np.abs(best - running) <= slack) & np.isfinite(running)
        if bad.any():
            return f"best_regret is not the running minimum of regret in {_first_bad(bad, rounds)}"
        with np.errstate(invalid="ignore"):
            mean = np.concatenate([regret[:1], np.cumsum(regret[1:]) / np.arange(1, len(regret))])
            average = col("avg_regret")
            bad = ~(np.abs(average - mean) <= _RTOL * np.maximum(np.abs(average), np.abs(mean)) + 1e-300) & \
                np.isfinite(mean)
        if bad.any():
            return f"avg_regret is not the running mean of regret in {_first_bad(bad, rounds)}"
    finite = np.isfinite(regret) & np.isfinite(kl)
    if finite.sum() >= 2:
        with np.errstate(over="ignore", invalid="ignore"):
            weighted = beta * kl
            offset = reward_regret - regret + weighted
            scale = np.abs(reward_regret) + np.abs(regret) + np.abs(weighted)
        offset, scale = offset[finite], scale[finite]
        ok = np.isfinite(offset)
        if ok.sum() >= 2:
            spread = np.abs(offset[ok] - offset[ok][0])
            # float64 KLs err by ~1e-13 absolute (cancellation), which β·kl_ref scales up at large β
            tolerance = 1e-4 * np.maximum(scale[ok], scale[ok][0]) + 1e-9 + 1e-12 * beta[finite][ok]
            bad = spread > tolerance
            if bad.any():
                return ("its values break the identity reward_regret − regret + β·kl_ref = β KL(π*‖π_ref) (the "
                        f"same in every row) in {_first_bad(bad, rounds[finite][ok])}: regret, reward_regret and "
                        f"kl_ref do not belong together (damaged or swapped columns?)")
    return None


def _expected_eps(config: RunConfig) -> float | None:
    """The ``eps`` column of ``config``'s rows (``mdp.info['eps']``, NaN when the family has
    none); None when it is not known without running user code (an instance spec)."""
    if specs.is_spec(config.instance):
        return None
    if "eps" in config.instance_args:
        eps = config.instance_args["eps"]
        return float(eps) if isinstance(eps, (int, float)) and not isinstance(eps, bool) else None
    return _built_in_eps(config.instance, json.dumps(_canonical(config.instance_args), sort_keys=True))


@functools.lru_cache(maxsize=256)
def _built_in_eps(instance: str, instance_json: str) -> float:
    from xpo_sim import envs

    mdp = getattr(envs, instance)(**json.loads(instance_json))
    return float(mdp.info.get("eps", math.nan))


def _shard_problem(df: pd.DataFrame, key: str, config: RunConfig | None) -> str | None:
    """What is wrong with the rows ``df`` read from the shard of ``key`` (None if nothing).

    Every shard: the columns of :func:`run_config` (identity columns and
    ``xpo_sim.recorder.COLUMNS``; the provenance columns are optional, for shards written
    before them), at least one row, one value of each identity column, ``key`` equal to the
    file's name, whole numbers >= 0 in round, pairs and distinct_seen, a whole replicate,
    finite α and β, numbers in the metric columns, ``converged`` True/False in every row (a
    row cut inside fails here), rounds strictly increasing from 0, and the ranges and
    identities of :func:`_values_problem`.
    With its ``config``: the identity matches the config (group, label, instance, policy,
    replicate, β, the algorithm's name, and the instance's ε), the last round is the run's
    final round (``total_rounds``: 1 for OfflineDPO(dataset_size=N)), and with the default
    recording (no ``record``/``eval_every`` in ``run_args``) every round 0…final is present.
    """
    missing = [c for c in _expected_columns() if c not in df.columns]
    if missing:
        return f"columns {missing} are missing (a truncated or foreign file, or one written before they existed?)"
    if df.empty:
        return "it holds a header but no rows"
    keys = df["key"].dropna().unique()
    if len(keys) != 1 or df["key"].isna().any() or str(keys[0]) != key:
        shown = [str(k) for k in keys[:3]]
        return f"its key column holds {shown} but the file is named {key}.csv (a shard of another run?)"
    for column in ("group", "label", "instance", "beta", "eps", "replicate", "policy", "algorithm",
                   *df.columns.intersection(_PROVENANCE_COLUMNS)):
        if df[column].nunique(dropna=False) != 1:
            return f"column {column} changes within the run"
    for column in df.columns.intersection(_expected_columns()):
        if column in _TEXT_COLUMNS or column == "converged":
            continue
        values = df[column]
        if pd.api.types.is_bool_dtype(values) or not pd.api.types.is_numeric_dtype(values):
            return f"column {column} holds values that are not numbers"
        if column in _COUNT_COLUMNS or column == "replicate":
            least = 0 if column in _COUNT_COLUMNS else -np.inf
            if not (np.isfinite(values).all() and (values == np.round(values)).all() and (values >= least).all()):
                what = "whole numbers >= 0" if column in _COUNT_COLUMNS else "whole numbers"
                return f"column {column} must hold {what} in every row (a row cut short?)"
        elif column in ("alpha", "beta") and not np.isfinite(values).all():
            return f"column {column} must be finite in every row (a row cut short?)"
    if not pd.api.types.is_bool_dtype(df["converged"]):
        return "column converged must be True or False in every row (a row cut short?)"
    rounds = df["round"].to_numpy()
    if rounds[0] != 0:
        return f"its rounds start at {int(rounds[0])}, not 0"
    if not (np.diff(rounds) > 0).all():
        return "its rounds are not strictly increasing"
    if not float(df["beta"].iloc[0]) > 0:
        return f"its beta {df['beta'].iloc[0]!r} is not positive"
    problem = _values_problem(df)
    if problem is not None or config is None:
        return problem
    row = df.iloc[0]
    for column, expected in (("instance", config.instance), ("policy", config.policy),
                             ("label", config.display_label), ("group", config.group)):
        if not _same_text(row[column], expected):
            return f"its {column} is {row[column]!r}, not the run's {expected!r}"
    if int(row["replicate"]) != config.replicate or not math.isclose(float(row["beta"]), config.beta,
                                                                     rel_tol=1e-12):
        return f"its replicate/beta ({row['replicate']}, {row['beta']}) are not the run's"
    eps = _expected_eps(config)
    if eps is not None and not (math.isnan(eps) and math.isnan(row["eps"])) and not math.isclose(
            float(row["eps"]), eps, rel_tol=1e-12):
        return f"its eps is {row['eps']!r}, not the instance's {eps!r}"
    algorithm = algorithm_class(config.algorithm)(**config.algorithm_args)
    if not _same_text(row["algorithm"], algorithm.name):
        return f"its algorithm is {row['algorithm']!r}, not the run's {algorithm.name!r}"
    final = algorithm.total_rounds(config.rounds)
    if int(rounds[-1]) != final:
        return f"its last round is {int(rounds[-1])} but the run ends at round {final} (cut short?)"
    if "record" not in config.run_args and "eval_every" not in config.run_args and len(rounds) != final + 1:
        return f"it holds {len(rounds)} rounds, not every round 0…{final}"
    return None


def _stale_reason(df: pd.DataFrame, config: RunConfig) -> str | None:
    """Why the checked rows ``df`` of ``config`` were made by other code than the current
    one (None if they were not, or cannot be told).

    The rule: a shard records ``xpo_sim_version`` and ``code_fingerprint`` (the SHA-256 of
    the source of every user module its config names). It is current when the version is
    this xpo_sim's and the fingerprint equals :meth:`RunConfig.code_fingerprint` now. A
    shard without these columns (written before they existed) is accepted for a config
    of built-ins only, whose code such a shard's version had; for a config naming user
    modules it is stale (nothing ties it to their code).
    """
    from xpo_sim import __version__

    current = config.code_fingerprint()
    if not set(_PROVENANCE_COLUMNS) <= set(df.columns):
        if current:
            return "it does not record the code that made it, and the run names user modules"
        return None
    row = df.iloc[0]
    version, recorded = _text_value(row["xpo_sim_version"]), _text_value(row["code_fingerprint"])
    if version != __version__:
        return f"it was made by xpo_sim {version or '(unknown)'}, this is xpo_sim {__version__}"
    if recorded != current:
        was, now = specs.parse_fingerprint(recorded), specs.parse_fingerprint(current)
        changed = [name for name in sorted(set(was) | set(now)) if was.get(name) != now.get(name)]
        details = ", ".join(f"{name} (sha256 {was.get(name, 'none')[:12]} → {now.get(name, 'none')[:12]})"
                            for name in changed)
        return f"the source of {details} changed since it was made"
    return None


def _read_shard(path: Path, config: RunConfig | None = None) -> pd.DataFrame:
    """The rows of the shard ``path`` (of ``config`` when known), checked by
    :func:`_shard_problem`; :class:`ShardError` if it is unusable."""
    if os.path.isdir(path):
        raise ShardError(path, "it is a directory, not a file")
    try:
        df = pd.read_csv(path, dtype={c: str for c in _TEXT_COLUMNS})
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as err:  # empty file, binary bytes, ragged rows (ValueError subclasses)
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ShardError(path, f"it cannot be read as a CSV table ({reason})") from None
    problem = _shard_problem(df, path.stem, config)
    if problem is not None:
        raise ShardError(path, problem)
    return df


class SerialExecutor(Executor):
    """Runs each submitted call at once, in this process (``--workers 1``)."""

    def submit(self, fn, /, *args, **kwargs):
        future: Future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as err:  # noqa: BLE001 - handed to the caller through the future
            future.set_exception(err)
        return future


def run_sweep(
    configs: Sequence[RunConfig],
    out: str | os.PathLike,
    executor: Executor | None = None,
    *,
    force: bool = False,
    progress: bool | None = None,
) -> pd.DataFrame:
    """Run every config whose shard is missing (all of them with ``force``) through
    ``executor`` (default: serial), write each result as its shard as it finishes, and
    return the tidy table of all configs' rows (as :func:`load_results` reads them).

    An existing shard is checked before the runs start; one that is unusable (unreadable,
    cut short, another run's rows, damaged values: see :class:`ShardError`) is recomputed
    like a missing one, with a ``RuntimeWarning`` naming the file, and so is one made by
    other code (another xpo_sim version, or a changed user module: a
    :class:`StaleShardWarning` saying which; see :func:`_stale_reason`). A shard path that
    is a directory is a :class:`ShardError` before anything runs. ``progress``: a tqdm bar
    over finished jobs; default on only when stderr is a terminal.

    ``configs`` must be :class:`RunConfig` objects, ``out`` a folder path, ``executor`` a
    ``concurrent.futures.Executor`` (e.g. :class:`SerialExecutor` or one of
    :func:`make_executor`), ``force`` a bool and ``progress`` a bool or None; anything else
    is a ``ValueError`` naming the argument.
    """
    out = _check_out(out)
    if isinstance(configs, (str, bytes, RunConfig)) or not isinstance(configs, Iterable):
        raise ValueError(f"configs must be a sequence of RunConfig objects, got {configs!r}")
    configs = list(configs)
    for i, config in enumerate(configs):
        if not isinstance(config, RunConfig):
            raise ValueError(f"configs must hold RunConfig objects, got {config!r} at position {i}")
    if executor is not None and not isinstance(executor, Executor):
        raise ValueError(f"executor must be a concurrent.futures.Executor (e.g. xpo_sim.sweep.SerialExecutor(), or "
                         f"the one make_executor(...) yields) or None, got {executor!r}")
    force = checks.boolean("force", force)
    if progress is not None:
        progress = checks.boolean("progress", progress)
    configs = list(dict.fromkeys(configs))  # drop exact duplicates, keep order
    frames: dict[RunConfig, pd.DataFrame] = {}
    todo = []
    for config in configs:
        path = _shard_path(out, config)
        if os.path.isdir(path):
            raise ShardError(path, "it is a directory, not a file, so no result can be written there; remove it")
        if force or not path.exists():
            todo.append(config)
            continue
        try:
            df = _read_shard(path, config)
        except ShardError as err:
            warnings.warn(f"result shard {err.path} is unusable ({err.reason}); recomputing it",
                          RuntimeWarning, stacklevel=2)
            todo.append(config)
            continue
        stale = _stale_reason(df, config)
        if stale is not None:
            warnings.warn(f"result shard {path} was made by other code than the current one ({stale}); "
                          f"recomputing it", StaleShardWarning, stacklevel=2)
            todo.append(config)
            continue
        frames[config] = df
    executor = executor or SerialExecutor()
    if todo:
        from tqdm.auto import tqdm

        show = sys.stderr.isatty() if progress is None else progress
        futures: dict[Future, RunConfig] = {}
        with tqdm(total=len(todo), desc="runs", disable=not show, unit="run") as bar:

            def save(finished) -> None:
                for future in finished:
                    _write_atomic(future.result(), _shard_path(out, futures.pop(future)))
                    bar.update(1)

            try:
                for config in todo:
                    futures[executor.submit(run_config, config)] = config
                    save([f for f in futures if f.done()])  # a serial executor finishes at once
                save(as_completed(list(futures)))
            except BaseException:
                for future in futures:
                    future.cancel()
                raise
        for config in todo:
            frames[config] = _read_shard(_shard_path(out, config), config)
    if not configs:
        return pd.DataFrame()
    return pd.concat([frames[c] for c in configs], ignore_index=True)


def _check_out(out, name: str = "out") -> Path:
    """``out`` as a Path: a non-empty path string or ``os.PathLike``, else a ``ValueError``."""
    if not isinstance(out, (str, os.PathLike)) or (isinstance(out, str) and not out):
        raise ValueError(f"{name} must be a folder path (a non-empty str or os.PathLike), got {out!r}")
    return Path(out)


class ResultsNotFoundError(FileNotFoundError, ValueError):
    """:func:`load_results` was pointed at a folder that does not exist or holds no shards
    (both a ``FileNotFoundError`` and a ``ValueError``)."""


def load_results(out: str | os.PathLike, configs: Iterable[RunConfig] | None = None) -> pd.DataFrame:
    """Concatenate the shards of ``configs`` (default: every shard in ``out``).

    Each shard is checked as it is read (see :class:`ShardError`): one that is unreadable
    (empty, binary, not a table), header-only, missing columns, with a row cut inside, rounds
    not strictly increasing from 0, values out of their range or breaking their identities,
    or a ``key`` other than its file name raises :class:`ShardError` naming the file. With
    ``configs``, a shard must also match its config and end at the run's final round (a
    shard cut at a row boundary fails here; without the configs such a cut cannot be told
    from a shorter run), and one made by other code than the current one is loaded with a
    :class:`StaleShardWarning` (:func:`run_sweep` would recompute it). Missing shards of
    ``configs`` raise ``FileNotFoundError``; an ``out`` that is not an existing folder, or
    has no ``shards`` folder, raises :class:`ResultsNotFoundError`.
    """
    out = _check_out(out)
    if not out.is_dir():
        raise ResultsNotFoundError(f"out {str(out)!r} is not an existing folder of sweep results")
    shard_dir = out / SHARD_DIR
    if not shard_dir.is_dir():
        raise ResultsNotFoundError(f"out {str(out)!r} holds no sweep results (no {SHARD_DIR}/ folder in it)")
    if configs is None:
        pairs = [(p, None) for p in sorted(shard_dir.glob("*.csv"))]
    else:
        if isinstance(configs, (str, bytes, RunConfig)) or not isinstance(configs, Iterable):
            raise ValueError(f"configs must be a sequence of RunConfig objects or None, got {configs!r}")
        configs = list(configs)
        for i, config in enumerate(configs):
            if not isinstance(config, RunConfig):
                raise ValueError(f"configs must hold RunConfig objects, got {config!r} at position {i}")
        pairs = [(shard_dir / f"{c.key}.csv", c) for c in configs]
        missing = [p for p, _ in pairs if not os.path.lexists(p)]
        if missing:
            raise FileNotFoundError(f"{len(missing)} shards are missing in {shard_dir}, e.g. {missing[0].name}")
    if not pairs:
        return pd.DataFrame()
    frames = []
    for path, config in pairs:
        df = _read_shard(path, config)
        stale = None if config is None else _stale_reason(df, config)
        if stale is not None:
            warnings.warn(f"result shard {path} was made by other code than the current one ({stale}); "
                          f"run_sweep would recompute it", StaleShardWarning, stacklevel=2)
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


# ----------------------------------------------------------------------------- executors


def _start_worker(parent: int) -> None:
    """Process-pool initializer: torch in a worker runs on one thread (the pool has a
    process per core already: a worker's default of one torch thread per core made 2
    workers on 2 cores run 4 threads, 2–3 times slower), unless ``OMP_NUM_THREADS`` says
    otherwise; then :func:`_exit_with_parent`."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # read by torch when a worker first imports it
    torch = sys.modules.get("torch")
    if torch is not None:  # imported already (a forked worker)
        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]) if os.environ["OMP_NUM_THREADS"].isdigit() else 1)
    _exit_with_parent(parent)


def _exit_with_parent(parent: int, interval: float = 0.25) -> None:
    """Process-pool initializer: a daemon thread that ends this worker (``os._exit``) once
    the process that made the pool is gone, so a SIGKILLed sweep leaves no workers behind.

    It polls every ``interval`` seconds whether this process was re-parented (its parent
    pid changed: the parent exited, however it died) or, on POSIX, whether ``parent`` no
    longer exists (covers a parent that died before this thread started). It needs the
    GIL, so a worker stuck in one long GIL-holding C call exits when that call returns;
    Linux's PR_SET_PDEATHSIG is not used because it fires when the *thread* that forked the
    worker ends, which would kill the workers of a pool started from a short-lived thread.
    """
    original = os.getppid()

    def parent_alive() -> bool:
        if os.getppid() != original:
            return False
        if os.name != "posix":  # os.kill(pid, 0) would terminate the process on Windows
            return True
        try:
            os.kill(parent, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
        return True

    def watch() -> None:
        while parent_alive():
            time.sleep(interval)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


class SchedulerError(RuntimeError):
    """The dask scheduler address given to :func:`make_executor` is unusable: nothing
    accepted a connection there, or what answered is not a dask scheduler."""


_SCHEDULER_SCHEMES = ("tcp", "tls", "ws", "wss", "ucx")
_SCHEDULER_ADDRESS = re.compile(
    r"(?:(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://)?"
    r"(?P<host>\[[0-9A-Fa-f:.]+(?:%[A-Za-z0-9_.-]+)?\]|[A-Za-z0-9_-][A-Za-z0-9_.-]*)"
    r":(?P<port>[0-9]{1,5})"
)


def check_scheduler_address(address, name: str = "scheduler address") -> str:
    """``address`` if it has the form of a dask scheduler address, else a ``ValueError``
    naming ``name`` and showing ``address``.

    The form is ``[scheme://]host:port``: scheme tcp (the default), tls, ws, wss or ucx;
    host a name or IPv4 address, or an IPv6 address in brackets (``[::1]:8786``); port in
    1…65535. Nothing is contacted.
    """
    form = "[tcp://]host:port, e.g. tcp://127.0.0.1:8786 (tls://, ws://, wss://, ucx:// also work)"
    match = _SCHEDULER_ADDRESS.fullmatch(address) if isinstance(address, str) else None
    if match is None:
        raise ValueError(f"{name} must be a dask scheduler address {form}, got {address!r}")
    scheme = match["scheme"]
    if scheme is not None and scheme.lower() not in _SCHEDULER_SCHEMES:
        hint = (" (a web address, e.g. the dashboard's; the scheduler itself listens on tcp://host:8786)"
                if scheme.lower() in ("http", "https") else "")
        raise ValueError(f"{name} must use a dask scheme {_SCHEDULER_SCHEMES}, got {address!r}{hint}")
    if not 1 <= int(match["port"]) <= 65535:
        raise ValueError(f"{name} must have a port in [1, 65535], got {address!r}")
    return address


def _probe_scheduler(address: str, timeout: float) -> None:
    """Return if a dask scheduler answers at ``address``; else raise :class:`SchedulerError`.

    Connects with dask's protocol (dask's connect timeout: ``timeout``) and asks for the
    server's identity; the whole exchange is cut off after ``timeout`` + 1 s (dask's own
    handshake read has no time limit, so a listener that never answers would hang it). It
    runs on its own event loop in a helper thread, so it works under a running loop too.
    """
    from distributed.comm import connect
    from distributed.comm.core import CommClosedError
    from distributed.security import Security

    async def ask():
        comm = await connect(address, timeout=timeout, **Security().get_connection_args("client"))
        try:
            await comm.write({"op": "identity", "reply": True})
            return await comm.read()
        finally:
            comm.abort()

    outcome: dict = {}

    def target() -> None:
        try:
            outcome["reply"] = asyncio.run(asyncio.wait_for(ask(), timeout + 1.0))
        except BaseException as err:  # noqa: BLE001 - classified below, in the caller's thread
            outcome["error"] = err

    thread = threading.Thread(target=target, name="dask-scheduler-probe", daemon=True)
    thread.start()
    thread.join(timeout + 5.0)
    silent = f"{address!r} did not answer as a dask scheduler within {timeout:g} s"
    error = outcome.get("error")
    if thread.is_alive() or isinstance(error, (asyncio.TimeoutError, TimeoutError)):
        raise SchedulerError(f"{silent} (it accepted a connection but sent nothing back)")
    if isinstance(error, CommClosedError):
        raise SchedulerError(f"{address!r} did not answer as a dask scheduler (it closed the connection)")
    if isinstance(error, OSError):  # dask's connect gave up: refused, unreachable, unknown host
        cause = error
        while cause.__cause__ is not None:
            cause = cause.__cause__
        reason = getattr(cause, "strerror", None) or str(cause).rsplit(": ", 1)[-1] or type(cause).__name__
        raise SchedulerError(f"could not reach the dask scheduler at {address!r} within {timeout:g} s "
                             f"(nothing accepted a connection there: {reason})")
    if isinstance(error, Exception):  # bytes that are not dask's protocol (HTTP: MemoryError, ValueError…)
        raise SchedulerError(f"{address!r} did not answer as a dask scheduler (what it sent is not dask's "
                             f"protocol; an HTTP server, such as the dashboard, answers like this)")
    if error is not None:
        raise error
    reply = outcome.get("reply")
    kind = reply.get("type") if isinstance(reply, dict) else None
    if not (isinstance(kind, str) and "Scheduler" in kind):
        raise SchedulerError(f"{address!r} did not answer as a dask scheduler (it is a {kind or 'server'} "
                             f"speaking dask's protocol, not a scheduler)")


def max_workers() -> int:
    """The most local worker processes :func:`make_executor` starts: 4 per CPU, at least 32.
    Each is a process of its own; a CPU-bound sweep gains nothing from many more than the
    cores, and a pool of thousands exhausts the machine's process table first."""
    return max(32, 4 * (os.cpu_count() or 1))


def _check_workers(name: str, value) -> int:
    count = checks.integer(name, value, minimum=0)
    if count > max_workers():
        raise ValueError(f"{name} must be at most {max_workers()} (4 per CPU of this machine's {os.cpu_count()}, "
                         f"at least 32): each worker is a process, and a CPU-bound sweep gains nothing from more "
                         f"processes than cores; got {value!r}")
    return count


@contextlib.contextmanager
def _quiet_dask_teardown():
    """Yield ``quiet``, a context manager to wrap the use of a dask client: when the work inside
    ends as a dead scheduler ends it (:func:`_dask_failure`), the ``distributed`` loggers are
    silenced until this context exits, so that closing the client does not print a page of
    CommClosedError/CancelledError tracebacks from its reconnect attempts before the sweep's
    one-line error (:func:`execute_sweep`). The loggers' levels are restored on exit."""
    saved: dict[str, int] = {}

    @contextlib.contextmanager
    def quiet():
        try:
            yield
        except BaseException as err:
            if _dask_failure(err) and not saved:
                names = ["distributed"] + [n for n in list(logging.root.manager.loggerDict) if n.startswith("distributed.")]
                for name in names:
                    logger = logging.getLogger(name)
                    saved[name] = logger.level
                    logger.setLevel(logging.CRITICAL + 1)
            raise

    try:
        yield quiet
    finally:
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


@contextlib.contextmanager
def make_executor(workers: int = 0, scheduler: str | None = None, dask_local: int = 0, *,
                  connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
                  worker_timeout: float = DEFAULT_WORKER_TIMEOUT) -> Iterator[Executor]:
    """The executor a sweep script runs on.

    ``scheduler``: address of a running dask.distributed scheduler (``Client(address)``),
    checked by :func:`check_scheduler_address` (``ValueError`` if malformed); before the
    client connects, the address must answer dask's identity request as a scheduler within
    ``connect_timeout`` seconds (plus one second of grace), else :class:`SchedulerError`
    (a ``RuntimeError``) says what answered, or that nothing did; and at least one worker
    must have joined it within ``worker_timeout`` seconds, else :class:`SchedulerError`
    says that none did (a scheduler without workers would otherwise wait forever).
    ``dask_local``: start a local dask cluster with that many single-threaded worker
    processes; otherwise ``workers`` local processes (0 = one per core, 1 = serial, in this
    process), each of which exits by itself when this process dies (see
    :func:`_exit_with_parent`). ``workers`` and ``dask_local`` are ints in
    [0, :func:`max_workers`] (``ValueError`` otherwise). The dask options need the ``dist``
    extra.
    """
    workers = _check_workers("workers", workers)
    dask_local = _check_workers("dask_local", dask_local)
    if scheduler is not None and dask_local:
        raise ValueError("give either scheduler or dask_local, not both")
    if scheduler is not None or dask_local:
        if scheduler is not None:
            check_scheduler_address(scheduler)
            connect_timeout = checks.positive("connect_timeout", connect_timeout)
            worker_timeout = checks.positive("worker_timeout", worker_timeout)
        try:
            from dask.distributed import Client, LocalCluster
        except ImportError:
            raise RuntimeError(
                "the dask options need dask.distributed: pip install 'xpo_sim[dist]'"
            ) from None
        if scheduler is not None:
            _probe_scheduler(scheduler, connect_timeout)
            try:
                client = Client(scheduler, timeout=connect_timeout)
            except (OSError, TimeoutError, ValueError, MemoryError) as err:
                raise SchedulerError(f"could not connect a dask client to the scheduler at {scheduler!r}: "
                                     f"{type(err).__name__}: {err}") from None
            with _quiet_dask_teardown() as quiet, client:
                try:
                    client.wait_for_workers(1, timeout=worker_timeout)
                except (TimeoutError, asyncio.TimeoutError):
                    raise SchedulerError(
                        f"no dask worker joined the scheduler at {scheduler!r} within {worker_timeout:g} s, so "
                        f"nothing could run: start workers (dask worker {scheduler}) or allow them more time "
                        f"(--worker-timeout)") from None
                with quiet():
                    yield client.get_executor()
        else:
            with _quiet_dask_teardown() as quiet, LocalCluster(n_workers=dask_local, threads_per_worker=1,
                                                               processes=True, dashboard_address=None) as cluster, \
                    Client(cluster) as client, quiet():
                yield client.get_executor()
        return
    if workers == 1:
        yield SerialExecutor()
        return
    with ProcessPoolExecutor(max_workers=workers or os.cpu_count(), mp_context=_pool_context(),
                             initializer=_start_worker, initargs=(os.getpid(),)) as pool:
        yield pool


def _pool_context():
    """The start method of a local pool: the platform's default (fork on Linux), except
    once this process has imported torch — a child forked from a process whose torch
    thread pools have started can hang forever in its first parallel torch call (seen: the
    scorecard's transformer experiment after the coordinating process distilled its
    references). The workers are then forked from a fresh forkserver process instead."""
    import multiprocessing

    if "torch" in sys.modules and "forkserver" in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("forkserver")
    return None


# ----------------------------------------------------------------------------- command line

MAX_SEEDS = checks.MAX_SEEDS
"""The most ``--seeds`` a sweep script accepts (each seed adds one run per grid point)."""

_IMAGE_SUFFIXES = (".png", ".pdf", ".svg", ".jpg", ".jpeg")


def sweep_cli_arguments(parser, default_out: str) -> None:
    """Add the flags every sweep script shares (see ``experiments/``)."""
    parser.add_argument("--quick", action="store_true", help="a small grid (seconds), for smoke tests")
    parser.add_argument("--out", default=default_out, help=f"folder for result shards and summary.csv (default {default_out})")
    parser.add_argument("--figures", default="figures", help="folder for the PNG figures (default figures/)")
    parser.add_argument("--workers", type=int, default=0,
                        help=f"local worker processes (0 = one per core, 1 = serial; at most {max_workers()})")
    parser.add_argument("--seeds", type=int, default=None, help=f"seeds (replicates) per grid point (at most {MAX_SEEDS})")
    parser.add_argument("--scheduler", default=None, metavar="ADDRESS", help="run on a dask.distributed scheduler at ADDRESS, [tcp://]host:port (needs the dist extra)")
    parser.add_argument("--scheduler-timeout", type=float, default=DEFAULT_CONNECT_TIMEOUT, metavar="SECONDS",
                        help=f"give up on --scheduler if it has not answered as a dask scheduler after SECONDS (default {DEFAULT_CONNECT_TIMEOUT:g})")
    parser.add_argument("--worker-timeout", type=float, default=DEFAULT_WORKER_TIMEOUT, metavar="SECONDS",
                        help=f"give up on --scheduler if no worker has joined it after SECONDS (default {DEFAULT_WORKER_TIMEOUT:g})")
    parser.add_argument("--dask-local", type=int, default=0, metavar="N", help="run on a local dask cluster of N worker processes (needs the dist extra)")
    parser.add_argument("--force", action="store_true", help="recompute every run even if its shard exists")


def _folder_problem(path: Path) -> str | None:
    """Why ``path`` cannot be used (or created) as an output folder; None if it can. Creates
    nothing: an existing path must be a folder this user may write to, a missing one must
    have, as its nearest existing ancestor, such a folder; a symbolic link must lead
    somewhere."""
    try:
        if os.path.islink(path) and not path.exists():
            return f"is a symbolic link to {os.readlink(path)}, which does not exist"
        if path.exists():
            if not path.is_dir():
                return "is an existing file, not a folder"
            if not os.access(path, os.W_OK | os.X_OK):
                return "is a folder this user cannot write to"
            return None
        ancestor = path.absolute().parent
        while not ancestor.exists():
            if os.path.islink(ancestor):
                return f"cannot be created: {ancestor} is a symbolic link to a missing target"
            ancestor = ancestor.parent
    except OSError as err:
        return f"cannot be checked ({err.strerror or err})"
    if not ancestor.is_dir():
        return f"cannot be created: {ancestor} is a file, not a folder"
    if not os.access(ancestor, os.W_OK | os.X_OK):
        return f"cannot be created: {ancestor} is a folder this user cannot write to"
    return None


def _file_problem(path: Path) -> str | None:
    """Why a file cannot be written at ``path`` (its folder created if need be); None if it can."""
    if os.path.islink(path) and not path.exists():
        return f"is a symbolic link to {os.readlink(path)}, which does not exist"
    if path.is_dir():
        return "is a folder, so the file cannot be written there"
    if path.exists() and not os.access(path, os.W_OK):
        return "is a file this user cannot write to"
    return _folder_problem(path.parent)


def _checked_output(parser, flag: str, value, kind: str, problem_of) -> Path:
    if value is None or str(value) == "":
        hint = f" (write {flag} . for the current folder)" if kind == "folder" else ""
        parser.error(f"{flag} must be a {kind} path, got an empty string{hint}")
    path = Path(value)
    problem = problem_of(path)
    if problem is not None:
        parser.error(f"{flag} {path}: {problem}")
    return path


def check_output_folder(parser, flag: str, value) -> Path:
    """``value`` of ``flag`` as a usable output folder (see :func:`_folder_problem`), else
    ``parser.error`` (exit 2): before any work, so that no run is lost to a bad path."""
    return _checked_output(parser, flag, value, "folder", _folder_problem)


def check_output_file(parser, flag: str, value) -> Path:
    """``value`` of ``flag`` as a path a file can be written to (see :func:`_file_problem`),
    else ``parser.error`` (exit 2)."""
    return _checked_output(parser, flag, value, "file", _file_problem)


def check_sweep_arguments(parser, args) -> None:
    """Turn nonsense flags into a clean usage error (exit 2, no traceback), before any run:
    counts out of range (``--seeds`` in [1, :data:`MAX_SEEDS`], ``--workers`` and
    ``--dask-local`` in [0, :func:`max_workers`]), a malformed ``--scheduler`` address (see
    :func:`check_scheduler_address`), a ``--scheduler-timeout`` or ``--worker-timeout`` that
    is not a positive number, and an ``--out`` or ``--figures`` that is empty, an existing
    file, a dangling symbolic link, or cannot be written or created (``--out``'s ``shards``
    folder too, if it exists; ``--out/summary.csv`` must not be a folder, nor any existing
    image name in ``--figures``, such as ``coverage_queries.png``)."""
    if args.seeds is not None:
        try:
            checks.seeds("--seeds", args.seeds)
        except ValueError as err:
            parser.error(str(err))
    if args.workers < 0:
        parser.error(f"--workers must be >= 0, got {args.workers}")
    if args.dask_local < 0:
        parser.error(f"--dask-local must be >= 0, got {args.dask_local}")
    if args.scheduler is not None and args.dask_local:
        parser.error("give either --scheduler or --dask-local, not both")
    try:
        _check_workers("--workers", args.workers)
        _check_workers("--dask-local", args.dask_local)
        if args.scheduler is not None:
            check_scheduler_address(args.scheduler, "--scheduler")
        checks.positive("--scheduler-timeout", getattr(args, "scheduler_timeout", DEFAULT_CONNECT_TIMEOUT))
        checks.positive("--worker-timeout", getattr(args, "worker_timeout", DEFAULT_WORKER_TIMEOUT))
    except ValueError as err:
        parser.error(str(err))
    out = check_output_folder(parser, "--out", args.out)
    figures = check_output_folder(parser, "--figures", args.figures)
    shards = out / SHARD_DIR
    if out.is_dir() and os.path.lexists(shards):  # run_sweep creates it in a usable --out
        problem = _folder_problem(shards)
        if problem is not None:
            parser.error(f"--out {shards}: {problem}")
    if out.is_dir():
        check_output_file(parser, "--out", out / "summary.csv")
    if figures.is_dir():
        for entry in sorted(figures.iterdir()):
            if entry.suffix.lower() in _IMAGE_SUFFIXES and entry.is_dir():
                parser.error(f"--figures {entry}: is a folder, so a figure cannot be written there")


_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO, errno.EFBIG,
                 errno.ENAMETOOLONG, errno.EISDIR, errno.ENOTDIR, errno.EEXIST, errno.EMFILE}
"""Errors of a file write (disk full, quota, read-only, permissions…) that end a sweep with one line."""


def _dask_failure(err: BaseException) -> bool:
    """Whether ``err`` is how a dask run ends when its scheduler goes away (futures cancelled)."""
    import concurrent.futures

    return isinstance(err, (concurrent.futures.CancelledError, asyncio.CancelledError)) or \
        type(err).__name__ in ("FutureCancelledError", "CommClosedError")


def execute_sweep(configs: list[RunConfig], args) -> pd.DataFrame:
    """Run ``configs`` with the executor the flags ask for. A one-line error and exit 1 (no
    traceback) for: a ``--scheduler`` that does not answer as a dask scheduler or has no
    worker, a missing extra, a dask scheduler that died mid-sweep, a shard path that is a
    folder, and a failed write (disk full, say). In each case the shards already written
    are complete, and rerunning the same command computes only the rest."""
    workers = args.workers
    if workers > 1 and len(configs) >= 2:
        workers = min(workers, len(configs))  # no idle processes: a pool forks all of them at once
    out = Path(args.out)
    dask = args.scheduler is not None or bool(args.dask_local)

    def written() -> int:
        return sum(1 for c in configs if (out / SHARD_DIR / f"{c.key}.csv").is_file())

    try:
        with make_executor(workers, args.scheduler, args.dask_local,
                           connect_timeout=getattr(args, "scheduler_timeout", DEFAULT_CONNECT_TIMEOUT),
                           worker_timeout=getattr(args, "worker_timeout", DEFAULT_WORKER_TIMEOUT)) as executor:
            return run_sweep(configs, args.out, executor, force=args.force)
    except SchedulerError as err:
        print(f"error: --scheduler: {err}", file=sys.stderr)
        raise SystemExit(1) from None
    except ShardError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(1) from None
    except RuntimeError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(1) from None
    except BaseException as err:
        if dask and _dask_failure(err):
            where = f"at {args.scheduler!r}" if args.scheduler is not None else "of --dask-local"
            print(f"error: the dask scheduler {where} went away mid-sweep (its runs were cancelled); {written()} "
                  f"of {len(configs)} runs' shards are complete on disk: restart the scheduler and rerun the same "
                  f"command to compute the rest", file=sys.stderr)
            raise SystemExit(1) from None
        if isinstance(err, OSError) and err.errno in _WRITE_ERRNOS:
            print(f"error: could not write the results to --out {out}: {err.strerror or err}"
                  f"{f' ({err.filename})' if err.filename else ''}; {written()} of {len(configs)} runs' shards are "
                  f"complete on disk: fix the cause and rerun the same command to compute the rest", file=sys.stderr)
            raise SystemExit(1) from None
        raise


def parse_sweep_args(doc: str, default_out: str, argv=None, switches=()):
    """The parsed, checked flags of a sweep script whose ``--help`` shows ``doc``;
    ``switches``: the script's own on/off flags, (flag, help) pairs (e.g.
    ``("--noise-control", "…")``), parsed and listed in ``--help`` like the shared ones."""
    import argparse

    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    sweep_cli_arguments(parser, default_out)
    for flag, text in switches:
        parser.add_argument(flag, action="store_true", help=text)
    args = parser.parse_args(argv)
    check_sweep_arguments(parser, args)
    return args


def run_experiment(name: str, configs: list[RunConfig], args, fraction: float = 0.1):
    """Run a sweep script's configs, write ``summary.csv`` and ``intervals.csv``
    (:func:`xpo_sim.analysis.interval_summary`: Wilson and bootstrap 95% intervals per
    group) to ``--out`` and create the
    ``--figures`` folder. Returns (rows, per-run table, summary, figures folder). A failed
    write of the summary or of the folder is a one-line error and exit 1."""
    from xpo_sim.analysis import interval_summary, queries_to_threshold, summarize_runs

    seeds = len({c.replicate for c in configs})
    print(f"{name}: {len(configs)} runs ({seeds} seeds) -> {args.out}", file=sys.stderr)
    df = execute_sweep(configs, args)
    per_run = queries_to_threshold(df, fraction=fraction)
    summary = summarize_runs(per_run)
    figures = Path(args.figures)
    try:
        summary.to_csv(Path(args.out) / "summary.csv", index=False)
        interval_summary(per_run).to_csv(Path(args.out) / "intervals.csv", index=False)
        figures.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        print(f"error: could not write {err.filename or args.out}: {err.strerror or err} (every run's shard is "
              f"complete in --out {args.out}: a rerun only rewrites the summary and the figures)", file=sys.stderr)
        raise SystemExit(1) from None
    return df, per_run, summary, figures


def print_summary(summary: pd.DataFrame, columns: list[str]) -> None:
    print(summary[columns].to_string(index=False, float_format=lambda x: f"{x:.3g}"))
