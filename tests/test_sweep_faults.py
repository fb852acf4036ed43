"""Faults around the sweep engine: schedulers that are not dask schedulers, bad scheduler
addresses, damaged result shards, a killed coordinator's workers, shard permissions, and
unusable --out / --figures folders. Every test here is bounded in time (subprocess timeouts,
servers in daemon threads)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

import xpo_sim.sweep as sweep
from xpo_sim.sweep import RunConfig, ShardError, load_results, make_executor, parse_sweep_args, run_sweep

ROOT = Path(__file__).resolve().parents[1]


def tiny(rounds=4, replicate=0, **kwargs) -> RunConfig:
    return RunConfig("bandit_needle", kwargs.pop("algorithm", "XPO"), 0.1, rounds, replicate=replicate,
                     instance_args=dict(n_responses=3, eps=0.1, seed=replicate), **kwargs)


def python(code: str, *args, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env=dict(os.environ, PYTHONPATH=str(ROOT)))


# ------------------------------------------------------------------ servers that are not dask


@contextlib.contextmanager
def _tcp_server(on_connect=None):
    """A local TCP server; each accepted connection is handed to ``on_connect`` in a thread
    (None: held open and never answered). Yields its tcp:// address."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held = []

    def serve():
        with contextlib.suppress(OSError):
            while True:
                conn = server.accept()[0]
                held.append(conn)
                if on_connect is not None:
                    threading.Thread(target=on_connect, args=(conn,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield f"tcp://127.0.0.1:{server.getsockname()[1]}"
    finally:
        server.close()
        for conn in held:
            conn.close()


def silent_listener():
    """A TCP listener that accepts connections and never sends a byte."""
    return _tcp_server()


def _answer_bad_request(conn):
    with contextlib.suppress(OSError):
        while conn.recv(65536):
            conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\n"
                         b"Content-Length: 11\r\nConnection: close\r\n\r\nBad Request")


def http_server():
    """A server that answers whatever it is sent with an HTTP error page, as a web server
    (the dask dashboard, say) does with bytes that are not an HTTP request."""
    return _tcp_server(_answer_bad_request)


SCHEDULER_SCRIPT = """
import sys
from xpo_sim.sweep import RunConfig, execute_sweep, parse_sweep_args
args = parse_sweep_args("probe", sys.argv[1], sys.argv[2:])
config = RunConfig("bandit_needle", "XPO", 0.1, 2, instance_args=dict(n_responses=3, eps=0.1, seed=0))
execute_sweep([config], args)
print("the sweep ran", file=sys.stderr)
"""


def run_against(address: str, tmp_path, *flags):
    start = time.monotonic()
    result = python(SCHEDULER_SCRIPT, tmp_path / "out", "--scheduler", address, *flags, timeout=90)
    return result, time.monotonic() - start


# 1 -------------------------------------------------------------------------------------------


def test_a_listener_that_never_answers_fails_within_the_scheduler_timeout(tmp_path):
    pytest.importorskip("dask.distributed")
    with silent_listener() as address:
        result, elapsed = run_against(address, tmp_path, "--scheduler-timeout", "2")
    assert result.returncode == 1, result.stderr[-3000:]
    assert "did not answer as a dask scheduler" in result.stderr
    assert "--scheduler" in result.stderr and address in result.stderr
    assert "Traceback" not in result.stderr
    assert elapsed < 30


def test_the_default_scheduler_timeout_is_bounded():
    args = parse_sweep_args("probe", "out", ["--scheduler", "tcp://127.0.0.1:8786"])
    assert 0 < args.scheduler_timeout <= 30


def test_a_nonpositive_scheduler_timeout_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_sweep_args("probe", "out", ["--scheduler", "tcp://127.0.0.1:8786", "--scheduler-timeout", "0"])
    assert exit_info.value.code == 2
    assert "--scheduler-timeout" in capsys.readouterr().err


# 9 -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("address", ["foo", "tcp://", "tcp://host", "host:", "host:port", "host:0",
                                     "host:65536", "http://127.0.0.1:8787", "tcp://a b:8786", "[::1:8786"])
def test_a_malformed_scheduler_address_is_a_usage_error(address, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_sweep_args("probe", "out", ["--scheduler", address])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--scheduler" in err and repr(address) in err
    assert "Traceback" not in err


@pytest.mark.parametrize("address", ["tcp://127.0.0.1:8786", "127.0.0.1:8786", "localhost:8786",
                                     "tls://scheduler.example.org:8786", "tcp://[::1]:8786", "[::1]:8786",
                                     "ws://node-1.cluster:8786"])
def test_well_formed_scheduler_addresses_are_accepted(address):
    assert parse_sweep_args("probe", "out", ["--scheduler", address]).scheduler == address


def test_make_executor_rejects_a_malformed_address_cleanly():
    with pytest.raises(ValueError, match=r"scheduler address .*'foo'"):
        with make_executor(scheduler="foo"):
            pass


def test_an_http_server_as_scheduler_gives_a_clean_error(tmp_path):
    pytest.importorskip("dask.distributed")
    with http_server() as address:
        result, elapsed = run_against(address, tmp_path, "--scheduler-timeout", "5")
    assert result.returncode == 1, result.stderr[-3000:]
    assert "did not answer as a dask scheduler" in result.stderr
    assert "--scheduler" in result.stderr and address in result.stderr
    assert "Traceback" not in result.stderr and "EiB" not in result.stderr
    assert elapsed < 30


def test_an_http_server_gives_a_clean_error_from_make_executor():
    pytest.importorskip("dask.distributed")
    with http_server() as address:
        with pytest.raises(RuntimeError, match="did not answer as a dask scheduler"):
            with make_executor(scheduler=address, connect_timeout=5):
                pass


def test_a_real_scheduler_passes_the_check_and_one_of_its_workers_does_not(tmp_path):
    distributed = pytest.importorskip("dask.distributed")
    config = tiny(rounds=2)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False, protocol="tcp",
                                  dashboard_address=None) as cluster:
        with make_executor(scheduler=cluster.scheduler_address, connect_timeout=10) as executor:
            df = run_sweep([config], tmp_path, executor)
        worker = next(iter(cluster.scheduler_info["workers"]))
        with pytest.raises(RuntimeError, match="did not answer as a dask scheduler"):
            with make_executor(scheduler=worker, connect_timeout=5):
                pass
    assert list(df["round"]) == [0, 1, 2]


# 2 -------------------------------------------------------------------------------------------


@pytest.fixture
def one_shard(tmp_path):
    """A finished one-config sweep: (config, out folder, shard path, its rows)."""
    config = tiny(rounds=4)
    df = run_sweep([config], tmp_path)
    path = tmp_path / "shards" / f"{config.key}.csv"
    assert path.exists() and len(df) == 5
    return config, tmp_path, path, df


def assert_names_the_shard(err: Exception, path: Path):
    message = str(err)
    assert path.name in message and "--force" in message


def test_a_shard_cut_at_a_row_boundary_is_rejected(one_shard):
    config, out, path, _ = one_shard
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:-2]))  # rounds 0..2 of 0..4: every kept row is complete
    with pytest.raises(ShardError) as err:
        load_results(out, [config])
    assert_names_the_shard(err.value, path)
    assert "round" in str(err.value)


def test_a_shard_cut_inside_a_row_is_rejected_even_without_its_config(one_shard):
    config, out, path, _ = one_shard
    text = path.read_text()
    path.write_text(text[: len(text) - 30])
    for configs in ([config], None):
        with pytest.raises(ShardError) as err:
            load_results(out, configs)
        assert_names_the_shard(err.value, path)


@pytest.mark.parametrize("content", [b"", b"header-only", b"\x00\x9f\x92\x96\xff\xfe binary \x00\x01" * 40,
                                     b"this is not,a csv\nat all\n,,,\n\"unterminated"])
def test_empty_header_only_binary_and_garbage_shards_are_rejected(one_shard, content):
    config, out, path, _ = one_shard
    if content == b"header-only":
        content = path.read_text().splitlines(keepends=True)[0].encode()
    path.write_bytes(content)
    for configs in ([config], None):
        with pytest.raises(ShardError) as err:
            load_results(out, configs)
        assert_names_the_shard(err.value, path)


def test_a_shard_under_another_configs_name_is_rejected(one_shard):
    config, out, path, _ = one_shard
    other = tiny(rounds=4, replicate=1)
    (out / "shards" / f"{other.key}.csv").write_text(path.read_text())
    with pytest.raises(ShardError, match="key"):
        load_results(out, [config, other])
    with pytest.raises(ShardError, match="key"):
        load_results(out)


def test_a_shard_missing_a_column_or_with_a_non_numeric_round_is_rejected(one_shard):
    config, out, path, df = one_shard
    df.drop(columns=["regret"]).to_csv(path, index=False)
    with pytest.raises(ShardError, match="regret"):
        load_results(out, [config])
    df.assign(round=["0", "1", "x", "3", "4"]).to_csv(path, index=False)
    with pytest.raises(ShardError, match="round"):
        load_results(out, [config])
    df.iloc[[0, 2, 1, 3, 4]].to_csv(path, index=False)
    with pytest.raises(ShardError, match="increasing"):
        load_results(out)


def test_run_sweep_recomputes_a_damaged_shard_with_a_warning(one_shard):
    config, out, path, df = one_shard
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:-1]))
    with pytest.warns(RuntimeWarning, match=path.name):
        again = run_sweep([config], out)
    pd.testing.assert_frame_equal(again, df)
    pd.testing.assert_frame_equal(load_results(out, [config]), df)


def test_valid_shards_of_single_round_and_subset_recording_runs_load(tmp_path):
    configs = [tiny(rounds=5, algorithm="OfflineDPO", algorithm_args=dict(dataset_size=4)),
               tiny(rounds=9, run_args=dict(record="geometric", max_enumerate=0)),
               tiny(rounds=9, run_args=dict(record=[3])),
               tiny(rounds=3, group="")]
    df = run_sweep(configs, tmp_path)
    rounds = {key: list(run["round"]) for key, run in df.groupby("key", sort=False)}
    assert rounds[configs[0].key] == [0, 1]
    assert rounds[configs[2].key] == [0, 3, 9]
    pd.testing.assert_frame_equal(load_results(tmp_path).sort_values(["key", "round"]).reset_index(drop=True),
                                  df.sort_values(["key", "round"]).reset_index(drop=True))


def test_a_subset_recording_shard_without_its_final_round_is_rejected(tmp_path):
    config = tiny(rounds=9, run_args=dict(record=[3]))
    run_sweep([config], tmp_path)
    path = tmp_path / "shards" / f"{config.key}.csv"
    path.write_text("".join(path.read_text().splitlines(keepends=True)[:-1]))  # rounds 0, 3 of 0, 3, 9
    with pytest.raises(ShardError, match="round"):
        load_results(tmp_path, [config])


# 5 -------------------------------------------------------------------------------------------


WORKERS_SCRIPT = """
import sys, threading, time
from xpo_sim.sweep import RunConfig, make_executor, run_sweep
configs = [RunConfig(instance="token_needle", instance_args=dict(vocab=3, horizon=2, eps=0.05, seed=r),
                     algorithm="XPO", beta=0.2, rounds=60, replicate=r) for r in range(200)]
with make_executor(workers=2) as executor:
    def report():  # the pool's worker pids, once both run (whatever the start method)
        while True:
            pids = list(getattr(executor, "_processes", None) or {})
            if len(pids) == 2:
                print(*pids, flush=True)
                return
            time.sleep(0.05)
    threading.Thread(target=report, daemon=True).start()
    run_sweep(configs, sys.argv[1], executor, progress=False)
"""


def _proc_state(pid: int) -> str | None:
    """The state letter of a process, None once it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return text[text.rindex(")") + 2:].split()[0]


def _alive(pid: int) -> bool:
    return _proc_state(pid) not in (None, "Z")  # an unreaped orphan (zombie) has exited


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_sigkill_of_the_sweep_takes_its_pool_workers_with_it(tmp_path):
    parent = subprocess.Popen([sys.executable, "-c", WORKERS_SCRIPT, str(tmp_path / "out")], cwd=ROOT,
                              env=dict(os.environ, PYTHONPATH=str(ROOT)), text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    workers: list[int] = []
    try:
        line: list[str] = []
        reader = threading.Thread(target=lambda: line.append(parent.stdout.readline()), daemon=True)
        reader.start()
        reader.join(60)
        workers = [int(pid) for pid in (line[0].split() if line else [])]
        assert len(workers) == 2 and parent.poll() is None, "the sweep's two workers never started"
        assert all(_alive(pid) for pid in workers)
        time.sleep(0.5)  # let them get into a run
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(_alive(p) for p in workers):
            time.sleep(0.1)
        assert not [p for p in workers if _alive(p)], "pool workers outlived the killed sweep"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        parent.stdout.close()
        for pid in workers:  # on failure, do not leave them running
            if _alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


# 6 -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mask", [0o022, 0o002])
def test_shards_get_the_permissions_of_the_umask(tmp_path, mask):
    old = os.umask(mask)
    try:
        config = tiny(rounds=2)
        run_sweep([config], tmp_path)
        mode = stat.S_IMODE((tmp_path / "shards" / f"{config.key}.csv").stat().st_mode)
    finally:
        os.umask(old)
    assert mode == 0o666 & ~mask
    assert not list((tmp_path / "shards").glob(".tmp-*"))


# 7 -------------------------------------------------------------------------------------------


def usage_error(capsys, argv) -> str:
    with pytest.raises(SystemExit) as exit_info:
        parse_sweep_args("probe", "out", argv)
    assert exit_info.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize("flag", ["--out", "--figures"])
def test_out_or_figures_that_is_a_file_is_a_usage_error(flag, tmp_path, capsys):
    existing = tmp_path / "a-file"
    existing.write_text("x")
    for path in (existing, existing / "below"):
        err = usage_error(capsys, [flag, str(path)])
        assert flag in err and str(path) in err and "Traceback" not in err
    if flag == "--out":  # an --out whose shards folder is a file
        (tmp_path / "out").mkdir()
        (tmp_path / "out" / "shards").write_text("x")
        err = usage_error(capsys, [flag, str(tmp_path / "out")])
        assert flag in err and str(tmp_path / "out" / "shards") in err


@pytest.mark.parametrize("flag", ["--out", "--figures"])
def test_out_or_figures_in_a_read_only_folder_is_a_usage_error(flag, tmp_path, capsys, monkeypatch):
    read_only = tmp_path / "read-only"
    read_only.mkdir()
    read_only.chmod(0o555)
    try:
        if os.geteuid() == 0:  # root writes anywhere: make the folder look read-only to the check
            real_access = os.access
            monkeypatch.setattr(sweep.os, "access", lambda path, mode, *a, **k: (
                False if mode & os.W_OK and Path(path) == read_only else real_access(path, mode, *a, **k)))
        for path in (read_only, read_only / "new"):
            err = usage_error(capsys, [flag, str(path)])
            assert flag in err and str(path) in err and "Traceback" not in err
    finally:
        read_only.chmod(0o755)


def test_usable_out_and_figures_folders_pass(tmp_path):
    (tmp_path / "exists").mkdir()
    args = parse_sweep_args("probe", "out", ["--out", str(tmp_path / "exists"),
                                             "--figures", str(tmp_path / "new" / "deeper")])
    assert args.out == str(tmp_path / "exists")
    assert not (tmp_path / "new").exists()  # checked, not created
