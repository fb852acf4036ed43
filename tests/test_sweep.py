"""The sweep engine: identities and seeds, resumability after a kill, identical numbers on
every executor, and clean errors from the experiment scripts."""

import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pandas as pd
import pytest

from xpo_sim.sweep import RunConfig, SerialExecutor, load_results, run_config, run_sweep

ROOT = Path(__file__).resolve().parents[1]


def small_configs(n_seeds=3):
    configs = []
    for replicate in range(n_seeds):
        for name, args in (("XPO", dict(alpha=0.05)), ("OnlineDPO", {}), ("HybridDPO", dict(batch=2))):
            configs.append(RunConfig(
                instance="bandit_needle", instance_args=dict(n_responses=4, eps=0.05, seed=replicate),
                algorithm=name, algorithm_args=args, beta=0.2, rounds=6, replicate=replicate,
                group="test", label=name,
            ))
    return configs


def canonical(df: pd.DataFrame) -> pd.DataFrame:
    return df.sort_values(["key", "round"]).reset_index(drop=True)


def test_config_identity_is_stable_and_order_independent():
    a = RunConfig(instance="bandit", instance_args=dict(n_responses=3, seed=1), algorithm="XPO",
                  algorithm_args=dict(alpha=0.1, sampler="ref"), beta=0.5, rounds=3)
    b = RunConfig(instance="bandit", instance_args=dict(seed=1, n_responses=3), algorithm="XPO",
                  algorithm_args=dict(sampler="ref", alpha=0.1), beta=0.5, rounds=3)
    c = RunConfig(instance="bandit", instance_args=dict(n_responses=3, seed=1), algorithm="XPO",
                  algorithm_args=dict(alpha=0.1, sampler="ref"), beta=0.5, rounds=3, replicate=1)
    assert a.key == b.key and a == b and hash(a) == hash(b)
    assert a.key != c.key and a.seed != c.seed
    pd.testing.assert_frame_equal(run_config(a), run_config(b))


def test_bad_configs_are_rejected_early():
    with pytest.raises(ValueError, match="unknown instance"):
        RunConfig(instance="maze", algorithm="XPO", beta=0.1, rounds=2)
    with pytest.raises(ValueError, match="unknown algorithm"):
        RunConfig(instance="bandit", algorithm="PPO", beta=0.1, rounds=2)
    with pytest.raises(ValueError, match="alpha"):
        RunConfig(instance="bandit", algorithm="XPO", algorithm_args=dict(alpha=-1), beta=0.1, rounds=2)


def test_rerun_skips_finished_shards_and_force_recomputes(tmp_path):
    configs = small_configs(1)
    first = run_sweep(configs, tmp_path)
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "shards").glob("*.csv")}
    assert len(stamps) == len(configs)
    again = run_sweep(configs, tmp_path)
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    pd.testing.assert_frame_equal(canonical(first), canonical(again))
    time.sleep(0.01)
    run_sweep(configs[:1], tmp_path, force=True)
    changed = [p for p in stamps if p.stat().st_mtime_ns != stamps[p]]
    assert len(changed) == 1


def test_serial_process_pool_and_dask_give_identical_tables(tmp_path):
    configs = small_configs(2)
    serial = run_sweep(configs, tmp_path / "serial", SerialExecutor())
    with ProcessPoolExecutor(max_workers=2) as pool:
        pooled = run_sweep(configs, tmp_path / "pool", pool)
    pd.testing.assert_frame_equal(canonical(serial), canonical(pooled))
    distributed = pytest.importorskip("dask.distributed")  # the dist extra, installed in CI
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        dask = run_sweep(configs, tmp_path / "dask", client.get_executor())
    pd.testing.assert_frame_equal(canonical(serial), canonical(dask))


def test_structured_instances_and_the_linear_class_give_identical_tables_on_every_executor(tmp_path):
    configs = [RunConfig(instance=instance, instance_args=dict(seed=r, **args), algorithm=a, beta=0.1, rounds=6,
                         replicate=r, policy=policy, run_args=run_args, label=a)
               for r in range(2) for a in ("XPO", "HybridDPO")
               for instance, args in (("combination_lock", dict(horizon=3, vocab=3, p_correct=0.2)),
                                      ("feature_bandit", dict(n_responses=50, d=3, eps=0.01)))
               for policy, run_args in (("linear", {}), ("implicit", dict(support="all")))]
    serial = run_sweep(configs, tmp_path / "serial", SerialExecutor())
    assert set(serial.policy) == {"linear", "implicit"} and len(serial) == len(configs) * 7
    with ProcessPoolExecutor(max_workers=2) as pool:
        pooled = run_sweep(configs, tmp_path / "pool", pool)
    pd.testing.assert_frame_equal(canonical(serial), canonical(pooled))
    distributed = pytest.importorskip("dask.distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        dask = run_sweep(configs, tmp_path / "dask", client.get_executor())
    pd.testing.assert_frame_equal(canonical(serial), canonical(dask))


SWEEP_SCRIPT = """
import os, signal, sys
import xpo_sim.sweep as sweep
configs = [sweep.RunConfig(instance="token_needle", instance_args=dict(vocab=3, horizon=2, eps=0.05, seed=r),
                           algorithm=a, beta=0.2, rounds=25, replicate=r, label=a)
           for r in range(6) for a in ("XPO", "OnlineDPO", "HybridDPO")]
kill_at = int(sys.argv[2])
if kill_at:  # SIGKILL this process (no cleanup, like a killed job) when config kill_at starts
    calls = []
    run_one = sweep.run_config
    def run_config(config):
        calls.append(config)
        if len(calls) == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return run_one(config)
    sweep.run_config = run_config
sweep.run_sweep(configs, sys.argv[1], sweep.SerialExecutor())
"""


def test_killed_sweep_resumes_with_exactly_the_rows_of_an_uninterrupted_run(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    complete = subprocess.run([sys.executable, "-c", SWEEP_SCRIPT, str(tmp_path / "complete"), "0"],
                              env=env, capture_output=True, text=True, timeout=600)
    assert complete.returncode == 0, complete.stderr
    interrupted_dir = tmp_path / "interrupted"
    killed = subprocess.run([sys.executable, "-c", SWEEP_SCRIPT, str(interrupted_dir), "8"],
                            env=env, capture_output=True, text=True, timeout=600)
    assert killed.returncode == -signal.SIGKILL
    assert len(list((interrupted_dir / "shards").glob("*.csv"))) == 7  # the 8th never finished
    resumed = subprocess.run([sys.executable, "-c", SWEEP_SCRIPT, str(interrupted_dir), "0"],
                             env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    pd.testing.assert_frame_equal(canonical(load_results(tmp_path / "complete")),
                                  canonical(load_results(interrupted_dir)))


def run_script(*args, timeout=600):
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=dict(os.environ, PYTHONPATH=str(ROOT)))


@pytest.mark.parametrize(
    "script",
    ["experiments/coverage_sweep.py", "experiments/regret_curves.py", "experiments/alpha_sweep.py",
     "experiments/method_table.py", "experiments/structure_sweep.py", "experiments/reward_scale.py",
     "experiments/box_sweep.py"],
)
def test_experiment_script_quick_run(script, tmp_path):
    out, figures = tmp_path / "out", tmp_path / "figures"
    result = run_script(script, "--quick", "--workers", "2", "--out", str(out), "--figures", str(figures))
    assert result.returncode == 0, result.stderr[-3000:]
    summary = pd.read_csv(out / "summary.csv")
    assert len(summary) > 0
    intervals = pd.read_csv(out / "intervals.csv")  # the 95% intervals every claim is read with
    assert len(intervals) == len(summary.drop_duplicates([c for c in ("group", "label", "instance", "beta", "eps",
                                                                      "policy") if c in summary.columns]))
    assert ((intervals.reached_low <= intervals.reached) & (intervals.reached <= intervals.reached_high)).all()
    pngs = list(figures.glob("*.png"))
    assert pngs and all(p.stat().st_size > 10_000 for p in pngs)
    # a rerun finds every shard and recomputes nothing
    again = run_script(script, "--quick", "--workers", "1", "--out", str(out), "--figures", str(figures))
    assert again.returncode == 0, again.stderr[-3000:]
    pd.testing.assert_frame_equal(summary, pd.read_csv(out / "summary.csv"))


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["--seeds", "0"], 2, "--seeds must be at least 1"),
        (["--workers", "-1"], 2, "--workers must be >= 0"),
        (["--scheduler", "tcp://127.0.0.1:9", "--quick"], 1, "could not reach the dask scheduler"),
    ],
)
def test_bad_arguments_give_a_clean_error(args, code, message, tmp_path):
    result = run_script("experiments/coverage_sweep.py", *args, "--out", str(tmp_path), timeout=120)
    assert result.returncode == code
    assert message in result.stderr
    assert "Traceback" not in result.stderr
