"""The second reliability probe's sweep cases (issue 20): shards with damaged *values*
detected when read back (and recomputed by run_sweep), a shard path that is a folder,
unusable --out/summary.csv/figure paths refused before any run, a full disk and a dead
dask scheduler ending in one line, a scheduler without workers, caps on --workers and
--seeds, and the unchecked arguments of RunConfig, run_sweep, load_results and
make_executor. Every test is in-process and takes well under a few seconds."""

from __future__ import annotations

import contextlib
import errno
import importlib.util
import math
import os
import sys
import time
from concurrent.futures import Executor, Future
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import xpo_sim.sweep as sweep
from xpo_sim.sweep import (ResultsNotFoundError, RunConfig, SchedulerError, ShardError, execute_sweep,
                           load_results, make_executor, max_workers, parse_sweep_args, run_sweep)

ROOT = Path(__file__).resolve().parents[1]


def tiny(rounds=6, replicate=0, **kwargs) -> RunConfig:
    return RunConfig("bandit_needle", kwargs.pop("algorithm", "XPO"), kwargs.pop("beta", 0.1), rounds,
                     replicate=replicate, instance_args=dict(n_responses=3, eps=0.1, seed=replicate), **kwargs)


@pytest.fixture
def one_shard(tmp_path):
    config = tiny()
    df = run_sweep([config], tmp_path)
    return config, tmp_path, tmp_path / "shards" / f"{config.key}.csv", df


# ------------------------------------------------------------------ damaged values


def _swap(df):
    return df.assign(regret=df.kl_ref, kl_ref=df.regret)


def _set(column, value, rows=slice(2, 3)):
    def damage(df):
        df = df.copy()
        df[column] = df[column].astype(object) if isinstance(value, str) else df[column]
        df.loc[df.index[rows], column] = value
        return df
    return damage


DAMAGES = {
    "regret NaN": (_set("regret", math.nan), "regret is NaN", True),
    "regret inf": (_set("regret", math.inf), "infinite together", True),
    "regret empty": (_set("regret", ""), "regret is NaN", True),
    "regret negative": (_set("regret", -0.5), "regret must be >= 0", True),
    "best_regret NaN": (_set("best_regret", math.nan), "best_regret is NaN", True),
    "best_regret above regret": (lambda df: df.assign(best_regret=df.regret * 1.5), "best_regret", True),
    "best_regret not the running minimum": (lambda df: df.assign(best_regret=df.regret.min()), "best_regret", True),
    "kl_ref negative": (_set("kl_ref", -1.0), "kl_ref must be >= 0", True),
    "opt_mass 2": (_set("opt_mass", 2.0), r"opt_mass must lie in \[0, 1\]", True),
    "seen_star_mass negative": (_set("seen_star_mass", -0.1), "seen_star_mass", True),
    "log_concentrability negative": (_set("log_concentrability", -1.0), "log_concentrability", True),
    "reward_regret inf": (_set("reward_regret", math.inf), "reward_regret must be finite", True),
    "iterate_regret negative": (_set("iterate_regret", -1.0), "iterate_regret", True),
    "regret and kl_ref swapped": (_swap, "identity|best_regret exceeds regret", True),
    "reward_regret shifted in one row": (_set("reward_regret", 0.7), "identity", True),
    "eps changed in every row": (lambda df: df.assign(eps=0.5), "eps", False),
    "beta changed in every row": (lambda df: df.assign(beta=0.2), "beta|identity", True),
    "algorithm renamed": (lambda df: df.assign(algorithm="OnlineDPO"), "algorithm", False),
}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_a_shard_with_damaged_values_is_rejected_on_load_and_recomputed_by_run_sweep(one_shard, damage):
    config, out, path, df = one_shard
    change, message, without_config = DAMAGES[damage]
    change(df).to_csv(path, index=False)
    with pytest.raises(ShardError, match=message) as err:
        load_results(out, [config])
    assert path.name in str(err.value) and "--force" in str(err.value)
    if without_config:
        with pytest.raises(ShardError, match=message):
            load_results(out)
    with pytest.warns(RuntimeWarning, match=path.name):
        again = run_sweep([config], out)
    pd.testing.assert_frame_equal(again, df)
    pd.testing.assert_frame_equal(load_results(out, [config]), df)


def test_legitimate_nan_and_inf_values_are_accepted(tmp_path):
    """log_concentrability is +inf while the data misses a π* response and NaN when not
    computed; a kl_ref of −5e-17 (π = π_ref rounded) is a zero; subset recordings."""
    configs = [tiny(rounds=4, run_args=dict(max_enumerate=0)), tiny(rounds=9, run_args=dict(record=[3])),
               RunConfig("two_arm_needle", "OnlineDPO", 0.1, 3, instance_args=dict(beta=0.1), policy="logits"),
               tiny(rounds=3, algorithm="ExPO"), tiny(rounds=3, beta=1e8), tiny(rounds=3, beta=1e-8)]
    df = run_sweep(configs, tmp_path)
    assert df.log_concentrability.isna().any() and np.isposinf(df.log_concentrability).any()
    pd.testing.assert_frame_equal(load_results(tmp_path, configs), df)


# ------------------------------------------------------------------ paths on disk


def test_a_shard_path_that_is_a_folder_is_refused_before_any_run(tmp_path, capsys):
    first, second = tiny(), tiny(replicate=1)
    (tmp_path / "shards" / f"{second.key}.csv").mkdir(parents=True)
    with pytest.raises(ShardError, match="is a directory") as err:
        run_sweep([first, second], tmp_path)
    assert "--force" not in str(err.value) and "remove it" in str(err.value)
    assert not (tmp_path / "shards" / f"{first.key}.csv").exists()  # refused before running anything
    with pytest.raises(ShardError, match="directory"):
        load_results(tmp_path)
    args = parse_sweep_args("probe", str(tmp_path), ["--workers", "1"])
    with pytest.raises(SystemExit) as exit_:
        execute_sweep([first, second], args)
    assert exit_.value.code == 1 and "is a directory" in capsys.readouterr().err


def test_load_results_of_a_folder_that_does_not_exist_or_holds_no_shards_is_an_error(tmp_path):
    for out in (tmp_path / "nope", tmp_path):
        with pytest.raises(ResultsNotFoundError, match="out") as err:
            load_results(out)
        assert isinstance(err.value, ValueError) and isinstance(err.value, FileNotFoundError)
    (tmp_path / "shards").mkdir()
    assert load_results(tmp_path).empty  # an empty sweep's folder
    for bad in ("", None, 3):
        with pytest.raises(ValueError, match="out must be a folder path"):
            load_results(bad)


def usage_error(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exit_:
        parse_sweep_args("probe", "results/probe", argv)
    assert exit_.value.code == 2
    return capsys.readouterr().err


def test_summary_csv_or_a_figure_that_is_a_folder_is_a_usage_error(tmp_path, capsys):
    out, figures = tmp_path / "out", tmp_path / "figures"
    (out / "summary.csv").mkdir(parents=True)
    assert "summary.csv: is a folder" in usage_error(["--out", str(out), "--figures", str(figures)], capsys)
    (out / "summary.csv").rmdir()
    (figures / "coverage_queries.png").mkdir(parents=True)
    assert "coverage_queries.png: is a folder" in usage_error(["--out", str(out), "--figures", str(figures)], capsys)


def test_an_empty_or_dangling_out_or_figures_is_a_usage_error(tmp_path, capsys):
    assert "--out must be a folder path, got an empty string" in usage_error(["--out", ""], capsys)
    assert "--figures must be a folder path" in usage_error(["--out", str(tmp_path), "--figures", ""], capsys)
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "missing")
    assert "symbolic link" in usage_error(["--out", str(link)], capsys)
    assert "symbolic link" in usage_error(["--out", str(tmp_path), "--figures", str(link)], capsys)


def test_a_full_disk_ends_the_sweep_with_one_line_and_keeps_the_shards_written(tmp_path, capsys, monkeypatch):
    configs = [tiny(replicate=r) for r in range(3)]
    write = sweep._write_atomic
    calls = []

    def full_after_one(df, path):
        calls.append(path)
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        write(df, path)

    monkeypatch.setattr(sweep, "_write_atomic", full_after_one)
    args = parse_sweep_args("probe", str(tmp_path), ["--workers", "1"])
    with pytest.raises(SystemExit) as exit_:
        execute_sweep(configs, args)
    err = capsys.readouterr().err
    assert exit_.value.code == 1 and "No space left on device" in err and "1 of 3" in err and "rerun" in err
    assert "Traceback" not in err
    monkeypatch.undo()
    load_results(tmp_path, configs[:1])  # the shard written before the disk filled is intact
    assert len(list((tmp_path / "shards").iterdir())) == 1  # and no temporary file is left


def test_a_failed_summary_write_is_one_line(tmp_path, capsys, monkeypatch):
    args = parse_sweep_args("probe", str(tmp_path / "out"), ["--workers", "1", "--figures", str(tmp_path / "f")])

    def no_space(self, *a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "summary.csv")

    monkeypatch.setattr(pd.DataFrame, "to_csv", no_space, raising=True)
    monkeypatch.setattr(sweep, "execute_sweep", lambda configs, args: run_sweep_plain(configs, args))
    with pytest.raises(SystemExit) as exit_:
        sweep.run_experiment("probe", [tiny(rounds=2)], args)
    assert exit_.value.code == 1 and "No space left" in capsys.readouterr().err


def run_sweep_plain(configs, args):
    return pd.concat([sweep.run_config(c) for c in configs], ignore_index=True)


# ------------------------------------------------------------------ hangs and sizes


def test_workers_and_seeds_are_capped_with_a_usage_error(capsys):
    assert f"at most {max_workers()}" in usage_error(["--workers", "100000"], capsys)
    assert "--seeds must be at most" in usage_error(["--seeds", "1000000000"], capsys)
    assert "--dask-local must be at most" in usage_error(["--dask-local", "100000"], capsys)
    assert "--worker-timeout" in usage_error(["--worker-timeout", "0"], capsys)


@pytest.mark.parametrize("kwargs, message", [
    (dict(workers=1.5), "workers must be an int"), (dict(workers="2"), "workers must be an int"),
    (dict(workers=True), "workers must be an int"), (dict(workers=-1), "workers must be an int"),
    (dict(workers=10**6), "at most"), (dict(dask_local=-1), "dask_local must be an int"),
    (dict(dask_local=2.0), "dask_local"), (dict(scheduler="tcp://127.0.0.1:8786", dask_local=1), "not both"),
])
def test_make_executor_refuses_bad_counts(kwargs, message):
    with pytest.raises(ValueError, match=message):
        with make_executor(**kwargs):
            pass


def test_a_pool_is_never_larger_than_the_sweep(tmp_path, monkeypatch):
    asked = []

    @contextlib.contextmanager
    def record(workers, *a, **k):
        asked.append(workers)
        yield sweep.SerialExecutor()

    monkeypatch.setattr(sweep, "make_executor", record)
    configs = [tiny(rounds=2, replicate=r) for r in range(3)]
    execute_sweep(configs, parse_sweep_args("probe", str(tmp_path), ["--workers", str(max_workers())]))
    assert asked == [3]


def test_a_scheduler_without_workers_is_an_error_within_the_worker_timeout():
    distributed = pytest.importorskip("dask.distributed")
    with distributed.LocalCluster(n_workers=0, processes=True, dashboard_address=None) as cluster:  # no worker
        start = time.monotonic()
        with pytest.raises(SchedulerError, match="no dask worker joined the scheduler .* within 1 s"):
            with make_executor(scheduler=cluster.scheduler_address, worker_timeout=1):
                pass
        assert time.monotonic() - start < 15


class _CancellingExecutor(Executor):
    """Finishes the first job, then behaves as a dask client whose scheduler died: every
    later future comes back cancelled."""

    def __init__(self):
        self.jobs = 0

    def submit(self, fn, /, *args, **kwargs):
        self.jobs += 1
        future = Future()
        if self.jobs == 1:
            future.set_result(fn(*args, **kwargs))
        else:
            future.cancel()
            future.set_running_or_notify_cancel()
        return future


def test_a_scheduler_that_dies_mid_sweep_is_one_line_saying_how_to_resume(tmp_path, capsys, monkeypatch):
    @contextlib.contextmanager
    def dying(*a, **k):
        yield _CancellingExecutor()

    monkeypatch.setattr(sweep, "make_executor", dying)
    configs = [tiny(rounds=2, replicate=r) for r in range(3)]
    args = parse_sweep_args("probe", str(tmp_path), ["--scheduler", "tcp://127.0.0.1:8786"])
    with pytest.raises(SystemExit) as exit_:
        execute_sweep(configs, args)
    err = capsys.readouterr().err
    assert exit_.value.code == 1 and "went away mid-sweep" in err and "1 of 3" in err
    assert "rerun the same command" in err and "Traceback" not in err


# ------------------------------------------------------------------ unchecked inputs


@pytest.mark.parametrize("kwargs, message", [
    (dict(rounds=True), "rounds must be an int"),
    (dict(rounds=2.0), "rounds must be an int"),
    (dict(beta=True), "beta"), (dict(beta="0.1"), "beta"), (dict(beta=0.0), "beta"),
    (dict(replicate=-1), "replicate"), (dict(replicate=1.5), "replicate"),
    (dict(run_args={"seed": 1}), "seed is derived from its config"),
    (dict(run_args={"policy": "logits"}), "RunConfig\\(policy="),
    (dict(algorithm_args={"schedule": lambda t: 0.1}), r"algorithm_args\['schedule'\] must be plain data"),
    (dict(instance_args={"seed": np.arange(3)}), r"instance_args\['seed'\] must be plain data"),
    (dict(run_args=[("record", "all")]), "run_args must be a dict"),
    (dict(group=3), "group must be a string"),
    (dict(label=None), "label must be a string"),
])
def test_run_config_arguments_are_checked(kwargs, message):
    base = dict(instance="bandit", algorithm="XPO", beta=0.1, rounds=2, instance_args=dict(n_responses=3))
    with pytest.raises(ValueError, match=message):
        RunConfig(**{**base, **kwargs})


def test_an_int_beta_is_the_same_config_as_its_float():
    a = RunConfig("bandit", "XPO", 1, 2, instance_args=dict(n_responses=3))
    b = RunConfig("bandit", "XPO", 1.0, 2, instance_args=dict(n_responses=3))
    c = RunConfig("bandit", "XPO", np.float64(1.0), 2, instance_args=dict(n_responses=3))
    assert a.key == b.key == c.key and a.seed == b.seed and isinstance(a.beta, float)
    assert len({a, b, c}) == 1


@pytest.mark.parametrize("call, message", [
    (lambda out: run_sweep([tiny()], out, force="False"), "force must be True or False"),
    (lambda out: run_sweep([tiny()], out, progress="yes"), "progress must be True or False"),
    (lambda out: run_sweep([tiny()], out, executor="serial"), "executor must be a concurrent.futures.Executor"),
    (lambda out: run_sweep(["x"], out), "configs must hold RunConfig objects, got 'x'"),
    (lambda out: run_sweep("abc", out), "configs must be a sequence of RunConfig"),
    (lambda out: run_sweep(tiny(), out), "configs must be a sequence of RunConfig"),
    (lambda out: run_sweep([tiny()], ""), "out must be a folder path"),
    (lambda out: load_results(out, ["x"]), "configs must hold RunConfig objects"),
])
def test_run_sweep_arguments_are_checked(tmp_path, call, message):
    (tmp_path / "shards").mkdir()
    with pytest.raises(ValueError, match=message):
        call(tmp_path)
    assert not list((tmp_path / "shards").iterdir())  # nothing ran


# ------------------------------------------------------------------ the two long scripts


def _script(path: str):
    spec = importlib.util.spec_from_file_location(f"_probe_{Path(path).stem}", ROOT / path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("argv, message", [
    (["--lr", "inf"], "--lr must be a positive finite number"),
    (["--lr", "nan"], "--lr must be a positive finite number"),
    (["--out", "FILE"], "--out FILE: is an existing file"),
    (["--figures", "FILE"], "--figures FILE: is an existing file"),
    (["--out", ""], "--out must be a folder path"),
    (["--out", "DIR", "--figures", "DIR"], "transformer_xpo.png: is a folder"),
])
def test_transformer_xpo_checks_its_arguments_before_running(argv, message, tmp_path, capsys):
    module = _script("experiments/transformer_xpo.py")
    (tmp_path / "FILE").write_text("x")
    (tmp_path / "DIR" / "transformer_xpo.png").mkdir(parents=True)
    argv = [str(tmp_path / a) if a in ("FILE", "DIR") else a for a in argv]
    with pytest.raises(SystemExit) as exit_:
        module.parse_args(argv)
    assert exit_.value.code == 2
    assert message.replace("FILE", str(tmp_path / "FILE")).replace("DIR", str(tmp_path / "DIR")) in \
        capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--seed", "-1"], "--seed must be >= 0"),
    (["--out", "FILE/x"], "--out"),
    (["--figures", "FILE"], "--figures"),
    (["--out", ""], "--out must be a path stem"),
    (["--figures", ""], "--figures must be a folder path"),
    (["--figures", "DIR"], "update_scaling.png: is a folder"),
])
def test_bench_update_checks_its_arguments_before_running(argv, message, tmp_path, capsys, monkeypatch):
    module = _script("benchmarks/bench_update.py")
    monkeypatch.setattr(module, "import_torch", lambda: pytest.fail("the benchmark started"))
    (tmp_path / "FILE").write_text("x")
    (tmp_path / "DIR" / "update_scaling.png").mkdir(parents=True)
    argv = [a.replace("FILE", str(tmp_path / "FILE")).replace("DIR", str(tmp_path / "DIR")) for a in argv]
    with pytest.raises(SystemExit) as exit_:
        module.main(["--quick", *argv])
    assert exit_.value.code == 2 and message in capsys.readouterr().err
