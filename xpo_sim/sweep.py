r"""Sweeps: a list of run configurations → any ``concurrent.futures.Executor`` → resumable shards.

A sweep is pure data: each :class:`RunConfig` names an instance family of
:mod:`xpo_sim.envs` with its arguments, an algorithm of :mod:`xpo_sim.algorithms` with its
arguments, β, the number of rounds and a replicate index. Its identity is the SHA-256 of
its canonical JSON; that hash names its result shard (``<out>/shards/<hash>.csv``) and
seeds its random stream, so a config gives the same numbers whether it runs serially, in a
process pool or on a dask cluster, and a rerun skips every config whose shard exists.

Shards are written by the coordinating process only, to a temporary file then renamed
atomically: an interrupted sweep (Ctrl-C, a killed worker) leaves only complete shards,
and the rerun computes exactly the missing ones.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import sys
import tempfile
from concurrent.futures import Executor, Future, ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import pandas as pd

__all__ = [
    "RunConfig",
    "run_config",
    "run_sweep",
    "load_results",
    "SerialExecutor",
    "make_executor",
    "parse_sweep_args",
    "run_experiment",
    "print_summary",
]

SHARD_DIR = "shards"


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


@dataclass(frozen=True, eq=False)
class RunConfig:
    """One run: ``xpo_sim.run(envs.<instance>(**instance_args), <algorithm>(**algorithm_args),
    beta, rounds, seed=<derived>, policy=policy, **run_args)``.

    ``group`` and ``label`` are free-form names for analysis (e.g. the panel and the legend
    entry); they are part of the identity. ``replicate`` distinguishes seeds.
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

    def __post_init__(self):
        from xpo_sim import envs

        if self.instance not in envs.__all__:
            raise ValueError(f"unknown instance family {self.instance!r}: expected one of {envs.__all__}")
        if not (isinstance(self.rounds, int) and self.rounds >= 1):
            raise ValueError(f"rounds must be an int >= 1, got {self.rounds!r}")
        algorithm_class(self.algorithm)(**self.algorithm_args)  # validate early

    def __eq__(self, other) -> bool:
        return isinstance(other, RunConfig) and self.key == other.key

    def __hash__(self) -> int:
        return hash(self.key)

    def to_json(self) -> str:
        return json.dumps(_canonical(asdict(self)), sort_keys=True, separators=(",", ":"))

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


def algorithm_class(name: str):
    """The algorithm config class called ``name`` (xpo_sim.algorithms or xpo_sim.methods)."""
    from xpo_sim import algorithms, methods

    known = {n: getattr(m, n) for m in (algorithms, methods) for n in m.__all__
             if isinstance(getattr(m, n), type) and issubclass(getattr(m, n), algorithms.Algorithm)}
    known.pop("Algorithm")
    if name not in known:
        raise ValueError(f"unknown algorithm {name!r}: expected one of {sorted(known)}")
    return known[name]


def run_config(config: RunConfig) -> pd.DataFrame:
    """Run one config and return its rows with the config's identity columns added."""
    from xpo_sim import envs
    from xpo_sim.algorithms import run

    mdp = getattr(envs, config.instance)(**config.instance_args)
    algorithm = algorithm_class(config.algorithm)(**config.algorithm_args)
    df = run(mdp, algorithm, config.beta, config.rounds, seed=config.seed, policy=config.policy,
             **config.run_args)
    df.insert(0, "key", config.key)
    df.insert(1, "group", config.group)
    df.insert(2, "label", config.display_label)
    df.insert(3, "instance", config.instance)
    df.insert(4, "beta", config.beta)
    df.insert(5, "eps", float(mdp.info.get("eps", math.nan)))
    df.insert(6, "replicate", config.replicate)
    df.insert(7, "policy", config.policy)
    return df


def _shard_path(out: Path, config: RunConfig) -> Path:
    return out / SHARD_DIR / f"{config.key}.csv"


def _write_atomic(df: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".part")
    try:
        with os.fdopen(fd, "w") as handle:
            df.to_csv(handle, index=False)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


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
    return the tidy table of all configs' rows.

    ``progress``: a tqdm bar over finished jobs; default on only when stderr is a terminal.
    """
    out = Path(out)
    configs = list(dict.fromkeys(configs))  # drop exact duplicates, keep order
    todo = [c for c in configs if force or not _shard_path(out, c).exists()]
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
    return load_results(out, configs)


def load_results(out: str | os.PathLike, configs: Iterable[RunConfig] | None = None) -> pd.DataFrame:
    """Concatenate the shards of ``configs`` (default: every shard in ``out``)."""
    shard_dir = Path(out) / SHARD_DIR
    if configs is None:
        paths = sorted(shard_dir.glob("*.csv"))
    else:
        paths = [shard_dir / f"{c.key}.csv" for c in configs]
        missing = [p for p in paths if not p.exists()]
        if missing:
            raise FileNotFoundError(f"{len(missing)} shards are missing in {shard_dir}, e.g. {missing[0].name}")
    if not paths:
        return pd.DataFrame()
    return pd.concat([pd.read_csv(p) for p in paths], ignore_index=True)


@contextlib.contextmanager
def make_executor(workers: int = 0, scheduler: str | None = None, dask_local: int = 0) -> Iterator[Executor]:
    """The executor a sweep script runs on.

    ``scheduler``: address of a running dask.distributed scheduler (``Client(address)``);
    ``dask_local``: start a local dask cluster with that many single-threaded worker
    processes; otherwise ``workers`` local processes (0 = one per core, 1 = serial, in
    this process). The dask options need the ``dist`` extra.
    """
    if scheduler or dask_local:
        try:
            from dask.distributed import Client, LocalCluster
        except ImportError:
            raise RuntimeError(
                "the dask options need dask.distributed: pip install 'xpo_sim[dist]'"
            ) from None
        if scheduler:
            try:
                client = Client(scheduler, timeout="5s")
            except (OSError, TimeoutError) as err:
                raise RuntimeError(f"could not reach the dask scheduler at {scheduler!r}: {err}") from None
            with client:
                yield client.get_executor()
        else:
            with LocalCluster(n_workers=dask_local, threads_per_worker=1, processes=True,
                              dashboard_address=None) as cluster, Client(cluster) as client:
                yield client.get_executor()
        return
    if workers == 1:
        yield SerialExecutor()
        return
    with ProcessPoolExecutor(max_workers=workers or os.cpu_count()) as pool:
        yield pool


def sweep_cli_arguments(parser, default_out: str) -> None:
    """Add the flags every sweep script shares (see ``experiments/``)."""
    parser.add_argument("--quick", action="store_true", help="a small grid (seconds), for smoke tests")
    parser.add_argument("--out", default=default_out, help=f"folder for result shards and summary.csv (default {default_out})")
    parser.add_argument("--figures", default="figures", help="folder for the PNG figures (default figures/)")
    parser.add_argument("--workers", type=int, default=0, help="local worker processes (0 = one per core, 1 = serial)")
    parser.add_argument("--seeds", type=int, default=None, help="seeds (replicates) per grid point")
    parser.add_argument("--scheduler", default=None, metavar="ADDRESS", help="run on a dask.distributed scheduler at ADDRESS (needs the dist extra)")
    parser.add_argument("--dask-local", type=int, default=0, metavar="N", help="run on a local dask cluster of N worker processes (needs the dist extra)")
    parser.add_argument("--force", action="store_true", help="recompute every run even if its shard exists")


def check_sweep_arguments(parser, args) -> None:
    """Turn nonsense flags into a clean usage error (exit 2, no traceback)."""
    if args.seeds is not None and args.seeds < 1:
        parser.error(f"--seeds must be at least 1, got {args.seeds}")
    if args.workers < 0:
        parser.error(f"--workers must be >= 0, got {args.workers}")
    if args.dask_local < 0:
        parser.error(f"--dask-local must be >= 0, got {args.dask_local}")
    if args.scheduler and args.dask_local:
        parser.error("give either --scheduler or --dask-local, not both")


def execute_sweep(configs: list[RunConfig], args) -> pd.DataFrame:
    """Run ``configs`` with the executor the flags ask for; on an unreachable scheduler or
    a missing extra, print the reason and exit 1 (no traceback)."""
    try:
        with make_executor(args.workers, args.scheduler, args.dask_local) as executor:
            return run_sweep(configs, args.out, executor, force=args.force)
    except RuntimeError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(1) from None


def parse_sweep_args(doc: str, default_out: str, argv=None):
    """The parsed, checked flags of a sweep script whose ``--help`` shows ``doc``."""
    import argparse

    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    sweep_cli_arguments(parser, default_out)
    args = parser.parse_args(argv)
    check_sweep_arguments(parser, args)
    return args


def run_experiment(name: str, configs: list[RunConfig], args, fraction: float = 0.1):
    """Run a sweep script's configs, write ``summary.csv`` to ``--out`` and create the
    ``--figures`` folder. Returns (rows, per-run table, summary, figures folder)."""
    from xpo_sim.analysis import queries_to_threshold, summarize_runs

    seeds = len({c.replicate for c in configs})
    print(f"{name}: {len(configs)} runs ({seeds} seeds) -> {args.out}", file=sys.stderr)
    df = execute_sweep(configs, args)
    per_run = queries_to_threshold(df, fraction=fraction)
    summary = summarize_runs(per_run)
    summary.to_csv(Path(args.out) / "summary.csv", index=False)
    figures = Path(args.figures)
    figures.mkdir(parents=True, exist_ok=True)
    return df, per_run, summary, figures


def print_summary(summary: pd.DataFrame, columns: list[str]) -> None:
    print(summary[columns].to_string(index=False, float_format=lambda x: f"{x:.3g}"))
