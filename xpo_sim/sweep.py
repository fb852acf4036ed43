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
import hashlib
import json
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

from xpo_sim import checks

__all__ = [
    "RunConfig",
    "run_config",
    "run_sweep",
    "load_results",
    "ShardError",
    "SerialExecutor",
    "make_executor",
    "SchedulerError",
    "check_scheduler_address",
    "parse_sweep_args",
    "run_experiment",
    "print_summary",
]

SHARD_DIR = "shards"

DEFAULT_CONNECT_TIMEOUT = 10.0
"""Seconds :func:`make_executor` gives a ``scheduler`` to answer (``--scheduler-timeout``)."""


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
    from xpo_sim.loop import run

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
        super().__init__(f"result shard {self.path} is unusable: {reason}; delete it (or rerun the sweep "
                         f"with --force) to recompute it")


_TEXT_COLUMNS = ("key", "group", "label", "instance", "policy", "algorithm")
_COUNT_COLUMNS = ("round", "pairs", "distinct_seen")  # finite integers >= 0


def _expected_columns() -> list[str]:
    from xpo_sim.analysis import RUN_KEYS
    from xpo_sim.recorder import COLUMNS

    return [*RUN_KEYS, *COLUMNS]


def _same_text(value, expected: str) -> bool:
    """A text cell as read back from CSV (an empty string reads as NaN) equals ``expected``."""
    return (expected == "" and pd.isna(value)) or (not pd.isna(value) and str(value) == expected)


def _shard_problem(df: pd.DataFrame, key: str, config: RunConfig | None) -> str | None:
    """What is wrong with the rows ``df`` read from the shard of ``key`` (None if nothing).

    Every shard: the columns of :func:`run_config` (identity columns and
    ``xpo_sim.recorder.COLUMNS``), at least one row, one value of each identity column,
    ``key`` equal to the file's name, whole numbers >= 0 in round, pairs and distinct_seen,
    a whole replicate, finite α and β, numbers in the metric columns, ``converged``
    True/False in every row (a row cut inside fails here), rounds strictly increasing from 0.
    With its ``config``: the identity matches the config, the last round is the run's final
    round (``total_rounds``: 1 for OfflineDPO(dataset_size=N)), and with the default
    recording (no ``record``/``eval_every`` in ``run_args``) every round 0…final is present.
    """
    missing = [c for c in _expected_columns() if c not in df.columns]
    if missing:
        return f"columns {missing} are missing (a truncated or foreign file?)"
    if df.empty:
        return "it holds a header but no rows"
    keys = df["key"].dropna().unique()
    if len(keys) != 1 or df["key"].isna().any() or str(keys[0]) != key:
        shown = [str(k) for k in keys[:3]]
        return f"its key column holds {shown} but the file is named {key}.csv (a shard of another run?)"
    for column in ("group", "label", "instance", "beta", "eps", "replicate", "policy", "algorithm"):
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
    if config is None:
        return None
    row = df.iloc[0]
    for column, expected in (("instance", config.instance), ("policy", config.policy),
                             ("label", config.display_label), ("group", config.group)):
        if not _same_text(row[column], expected):
            return f"its {column} is {row[column]!r}, not the run's {expected!r}"
    if int(row["replicate"]) != config.replicate or not math.isclose(float(row["beta"]), float(config.beta)):
        return f"its replicate/beta ({row['replicate']}, {row['beta']}) are not the run's"
    final = algorithm_class(config.algorithm)(**config.algorithm_args).total_rounds(config.rounds)
    if int(rounds[-1]) != final:
        return f"its last round is {int(rounds[-1])} but the run ends at round {final} (cut short?)"
    if "record" not in config.run_args and "eval_every" not in config.run_args and len(rounds) != final + 1:
        return f"it holds {len(rounds)} rounds, not every round 0…{final}"
    return None


def _read_shard(path: Path, config: RunConfig | None = None) -> pd.DataFrame:
    """The rows of the shard ``path`` (of ``config`` when known), checked by
    :func:`_shard_problem`; :class:`ShardError` if it is unusable."""
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
    cut short, another run's rows: see :class:`ShardError`) is recomputed like a missing
    one, with a ``RuntimeWarning`` naming the file. ``progress``: a tqdm bar over finished
    jobs; default on only when stderr is a terminal.
    """
    out = Path(out)
    configs = list(dict.fromkeys(configs))  # drop exact duplicates, keep order
    frames: dict[RunConfig, pd.DataFrame] = {}
    todo = []
    for config in configs:
        path = _shard_path(out, config)
        if force or not path.exists():
            todo.append(config)
            continue
        try:
            frames[config] = _read_shard(path, config)
        except ShardError as err:
            warnings.warn(f"result shard {err.path} is unusable ({err.reason}); recomputing it",
                          RuntimeWarning, stacklevel=2)
            todo.append(config)
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


def load_results(out: str | os.PathLike, configs: Iterable[RunConfig] | None = None) -> pd.DataFrame:
    """Concatenate the shards of ``configs`` (default: every shard in ``out``).

    Each shard is checked as it is read (see :class:`ShardError`): one that is unreadable
    (empty, binary, not a table), header-only, missing columns, with a row cut inside, rounds
    not strictly increasing from 0, or a ``key`` other than its file name raises
    :class:`ShardError` naming the file. With ``configs``, a shard must also match its
    config and end at the run's final round (a shard cut at a row boundary fails here;
    without the configs such a cut cannot be told from a shorter run). Missing shards of
    ``configs`` raise ``FileNotFoundError``.
    """
    shard_dir = Path(out) / SHARD_DIR
    if configs is None:
        pairs = [(p, None) for p in sorted(shard_dir.glob("*.csv"))]
    else:
        pairs = [(shard_dir / f"{c.key}.csv", c) for c in configs]
        missing = [p for p, _ in pairs if not p.exists()]
        if missing:
            raise FileNotFoundError(f"{len(missing)} shards are missing in {shard_dir}, e.g. {missing[0].name}")
    if not pairs:
        return pd.DataFrame()
    return pd.concat([_read_shard(p, c) for p, c in pairs], ignore_index=True)


# ----------------------------------------------------------------------------- executors


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


@contextlib.contextmanager
def make_executor(workers: int = 0, scheduler: str | None = None, dask_local: int = 0, *,
                  connect_timeout: float = DEFAULT_CONNECT_TIMEOUT) -> Iterator[Executor]:
    """The executor a sweep script runs on.

    ``scheduler``: address of a running dask.distributed scheduler (``Client(address)``),
    checked by :func:`check_scheduler_address` (``ValueError`` if malformed); before the
    client connects, the address must answer dask's identity request as a scheduler within
    ``connect_timeout`` seconds (plus one second of grace), else :class:`SchedulerError`
    (a ``RuntimeError``) says what answered, or that nothing did. ``dask_local``: start a
    local dask cluster with that many single-threaded worker processes; otherwise
    ``workers`` local processes (0 = one per core, 1 = serial, in this process), each of
    which exits by itself when this process dies (see :func:`_exit_with_parent`). The dask
    options need the ``dist`` extra.
    """
    if scheduler or dask_local:
        if scheduler:
            check_scheduler_address(scheduler)
            connect_timeout = checks.positive("connect_timeout", connect_timeout)
        try:
            from dask.distributed import Client, LocalCluster
        except ImportError:
            raise RuntimeError(
                "the dask options need dask.distributed: pip install 'xpo_sim[dist]'"
            ) from None
        if scheduler:
            _probe_scheduler(scheduler, connect_timeout)
            try:
                client = Client(scheduler, timeout=connect_timeout)
            except (OSError, TimeoutError, ValueError, MemoryError) as err:
                raise SchedulerError(f"could not connect a dask client to the scheduler at {scheduler!r}: "
                                     f"{type(err).__name__}: {err}") from None
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
    with ProcessPoolExecutor(max_workers=workers or os.cpu_count(), initializer=_exit_with_parent,
                             initargs=(os.getpid(),)) as pool:
        yield pool


# ----------------------------------------------------------------------------- command line


def sweep_cli_arguments(parser, default_out: str) -> None:
    """Add the flags every sweep script shares (see ``experiments/``)."""
    parser.add_argument("--quick", action="store_true", help="a small grid (seconds), for smoke tests")
    parser.add_argument("--out", default=default_out, help=f"folder for result shards and summary.csv (default {default_out})")
    parser.add_argument("--figures", default="figures", help="folder for the PNG figures (default figures/)")
    parser.add_argument("--workers", type=int, default=0, help="local worker processes (0 = one per core, 1 = serial)")
    parser.add_argument("--seeds", type=int, default=None, help="seeds (replicates) per grid point")
    parser.add_argument("--scheduler", default=None, metavar="ADDRESS", help="run on a dask.distributed scheduler at ADDRESS, [tcp://]host:port (needs the dist extra)")
    parser.add_argument("--scheduler-timeout", type=float, default=DEFAULT_CONNECT_TIMEOUT, metavar="SECONDS",
                        help=f"give up on --scheduler if it has not answered as a dask scheduler after SECONDS (default {DEFAULT_CONNECT_TIMEOUT:g})")
    parser.add_argument("--dask-local", type=int, default=0, metavar="N", help="run on a local dask cluster of N worker processes (needs the dist extra)")
    parser.add_argument("--force", action="store_true", help="recompute every run even if its shard exists")


def _folder_problem(path: Path) -> str | None:
    """Why ``path`` cannot be used (or created) as an output folder; None if it can. Creates
    nothing: an existing path must be a folder this user may write to, a missing one must
    have, as its nearest existing ancestor, such a folder."""
    try:
        if path.exists():
            if not path.is_dir():
                return "is an existing file, not a folder"
            if not os.access(path, os.W_OK | os.X_OK):
                return "is a folder this user cannot write to"
            return None
        ancestor = path.absolute().parent
        while not ancestor.exists():
            ancestor = ancestor.parent
    except OSError as err:
        return f"cannot be checked ({err.strerror or err})"
    if not ancestor.is_dir():
        return f"cannot be created: {ancestor} is a file, not a folder"
    if not os.access(ancestor, os.W_OK | os.X_OK):
        return f"cannot be created: {ancestor} is a folder this user cannot write to"
    return None


def check_sweep_arguments(parser, args) -> None:
    """Turn nonsense flags into a clean usage error (exit 2, no traceback), before any run:
    counts out of range, a malformed ``--scheduler`` address (see
    :func:`check_scheduler_address`), a ``--scheduler-timeout`` that is not a positive
    number, and an ``--out`` or ``--figures`` that is an existing file or cannot be written
    or created (``--out``'s ``shards`` folder too, if it exists)."""
    if args.seeds is not None and args.seeds < 1:
        parser.error(f"--seeds must be at least 1, got {args.seeds}")
    if args.workers < 0:
        parser.error(f"--workers must be >= 0, got {args.workers}")
    if args.dask_local < 0:
        parser.error(f"--dask-local must be >= 0, got {args.dask_local}")
    if args.scheduler is not None and args.dask_local:
        parser.error("give either --scheduler or --dask-local, not both")
    try:
        if args.scheduler is not None:
            check_scheduler_address(args.scheduler, "--scheduler")
        checks.positive("--scheduler-timeout", getattr(args, "scheduler_timeout", DEFAULT_CONNECT_TIMEOUT))
    except ValueError as err:
        parser.error(str(err))
    out, shards = Path(args.out), Path(args.out) / SHARD_DIR
    for flag, path in (("--out", out), ("--out", shards), ("--figures", Path(args.figures))):
        if path is shards and not (out.is_dir() and os.path.lexists(shards)):
            continue  # run_sweep creates it in a usable --out
        problem = _folder_problem(path)
        if problem is not None:
            parser.error(f"{flag} {path}: {problem}")


def execute_sweep(configs: list[RunConfig], args) -> pd.DataFrame:
    """Run ``configs`` with the executor the flags ask for; on a ``--scheduler`` that does
    not answer as a dask scheduler, or a missing extra, print the reason and exit 1 (no
    traceback)."""
    try:
        with make_executor(args.workers, args.scheduler, args.dask_local,
                           connect_timeout=getattr(args, "scheduler_timeout", DEFAULT_CONNECT_TIMEOUT)) as executor:
            return run_sweep(configs, args.out, executor, force=args.force)
    except SchedulerError as err:
        print(f"error: --scheduler: {err}", file=sys.stderr)
        raise SystemExit(1) from None
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
