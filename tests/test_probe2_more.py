"""Issue 20, probe 2, the cases still open after the first fixes: coverability's unchecked
arguments, its silent hours of work (a time estimate, a refusal above ``max_seconds``, a
progress bar, and BLAS kept to one thread), ``theory_alpha`` with zero or negative
arguments, ``train(track_concentrability='no')``, and the size flags of the scripts that do
not go through the sweep's checks (``two_arm_seeds``, ``transformer_xpo``, ``bench_update``).
Every test is in-process and takes at most a few seconds."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest

import xpo_sim
from xpo_sim import checks, envs, metrics
from xpo_sim.metrics import theory_alpha

ROOT = Path(__file__).resolve().parents[1]


def random_feature_bandit(n: int, d: int = 3, seed: int = 0):
    """A bandit whose linear class has random features: no coordinate is fixed by
    dominance, so every response needs a numerical maximization."""
    mdp = envs.bandit(n)
    features = np.random.default_rng(seed).normal(size=(mdp.n_states, mdp.n_actions, d))
    return mdp, features


# ------------------------------------------------------------- coverability's arguments
@pytest.mark.parametrize("kwargs, message", [
    (dict(max_trajectories="10"), "max_trajectories must be an int"),
    (dict(max_trajectories=True), "max_trajectories must be an int"),
    (dict(max_trajectories=0), "max_trajectories must be an int >= 1"),
    (dict(max_trajectories=10.0), "max_trajectories must be an int"),
    (dict(return_details="no"), "return_details must be True or False"),
    (dict(return_details=1), "return_details must be True or False"),
    (dict(progress="yes"), "progress must be True, False or 'auto'"),
    (dict(max_seconds=0), "max_seconds must be a positive"),
    (dict(max_seconds="60"), "max_seconds must be a positive"),
    (dict(max_seconds=math.nan), "max_seconds must be a positive"),
])
def test_coverability_refuses_bad_options(kwargs, message):
    """A string max_trajectories was a TypeError from a comparison; a string return_details
    ('no' is truthy) returned the details."""
    with pytest.raises(ValueError, match=message):
        xpo_sim.coverability(envs.bandit(4), 0.1, **kwargs)


@pytest.mark.parametrize("mdp", ["x", None, 3, envs.bandit(4).next_state])
def test_coverability_refuses_a_non_mdp(mdp):
    """Was an AttributeError ('str' object has no attribute 'allowed')."""
    with pytest.raises(ValueError, match="mdp must be a TokenMDP"):
        xpo_sim.coverability(mdp, 0.1)


# ------------------------------------------------------- coverability's long computations
def test_coverability_refuses_within_seconds_a_computation_above_max_seconds(monkeypatch):
    """16,384 responses with 6 random features ran for 471 s and more without a word. Now the
    first maximizations are timed and a computation estimated above max_seconds is refused,
    naming max_seconds and max_trajectories, before the rest is solved."""
    mdp, features = random_feature_bandit(64)
    solved = []
    solve = metrics._SupSolver.solve
    monkeypatch.setattr(metrics._SupSolver, "solve", lambda self, *a: solved.append(1) or solve(self, *a))
    with pytest.raises(ValueError) as err:
        xpo_sim.coverability(mdp, 0.1, "linear", features=features, box=(-1, 1), max_seconds=1e-9)
    text = str(err.value)
    assert "coverability would take about" in text and "max_seconds=1e-09" in text
    assert "64 of its 64" in text and "max_trajectories=" in text and "max_seconds=None" in text
    assert len(solved) <= 20  # refused after the sample, not after the work


def test_coverability_without_a_limit_runs_to_the_end():
    mdp, features = random_feature_bandit(16)
    limited = xpo_sim.coverability(mdp, 0.1, "linear", features=features, box=(-1, 1))
    assert xpo_sim.coverability(mdp, 0.1, "linear", features=features, box=(-1, 1), max_seconds=None) == limited


def test_coverability_shows_its_progress_and_estimate_on_long_work(capsys, monkeypatch):
    mdp, features = random_feature_bandit(40)
    xpo_sim.coverability(mdp, 0.1, "linear", features=features, box=(-1, 1))
    assert capsys.readouterr().err == ""  # short work: quiet by default
    xpo_sim.coverability(mdp, 0.1, "linear", features=features, box=(-1, 1), progress=True)
    err = capsys.readouterr().err
    assert "xpo_sim.coverability" in err and "40 numerical maximizations, about" in err and "/40 [" in err
    monkeypatch.setattr(metrics, "COVERABILITY_PROGRESS_SECONDS", 0.0)  # every estimate counts as long
    xpo_sim.coverability(mdp, 0.1, "linear", features=features, box=(-1, 1))
    assert "numerical maximizations, about" in capsys.readouterr().err
    xpo_sim.coverability(mdp, 0.1, "linear", features=features, box=(-1, 1), progress=False)
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("case", ["implicit tree", "implicit terminal", "feature bandit", "lock", "random",
                                  "sparse random", "two prompts", "flat box"])
def test_the_count_of_numerical_maximizations_is_known_before_solving(case):
    """The estimate divides by the number of groups the optimizer will see; that count,
    found from the features alone, equals the solver's own."""
    rng = np.random.default_rng(3)
    kwargs = {}
    if case == "implicit tree":
        mdp = envs.token_tree(3, 2, seed=0)
    elif case == "implicit terminal":
        mdp, kwargs = envs.token_tree(3, 2, seed=0), dict(support="terminal")
    elif case == "feature bandit":
        mdp, kwargs = envs.feature_bandit(12, 3, 0.1), dict(policy="linear")
    elif case == "lock":
        mdp, kwargs = envs.combination_lock(3, 3, 0.3), dict(policy="linear")
    elif case in ("random", "sparse random", "flat box"):
        mdp = envs.token_tree(3, 2, seed=1)
        features = rng.normal(size=(mdp.n_states, mdp.n_actions, 4))
        if case == "sparse random":  # implicit zeros inside a column's range, and constant columns
            features *= rng.random(features.shape) < 0.4
            features[..., 3] = 0.0
        box = (0.5, 0.5) if case == "flat box" else (-1.0, 2.0)
        kwargs = dict(policy="linear", features=features, box=box)
    else:
        mdp = envs.token_tree(2, 2, n_prompts=2, seed=2)
        kwargs = dict(policy="linear", features=rng.normal(size=(mdp.n_states, mdp.n_actions, 2)), box=(-1.0, 1.0))
    counted = []
    original = metrics._needs_optimizer
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(metrics, "_needs_optimizer", lambda *a: counted.append(original(*a)) or counted[-1])
        details = xpo_sim.coverability(mdp, 0.5, return_details=True, **kwargs)
    assert int(counted[0].sum()) == details.n_optimized


def test_coverability_keeps_blas_to_one_thread(monkeypatch):
    """L-BFGS-B's small dense algebra on a 2-thread OpenBLAS took 12x longer (49 s against 4 s
    for 1,024 responses with random features); xpo_sim.run already limits it."""
    limits = []
    real = metrics.threadpool_limits

    def recording(*args, **kwargs):
        limits.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(metrics, "threadpool_limits", recording)
    mdp, features = random_feature_bandit(8)
    xpo_sim.coverability(mdp, 0.1, "linear", features=features, box=(-1, 1))
    assert limits == [dict(limits=1, user_api="blas")]


# ------------------------------------------------------------------------ theory_alpha
@pytest.mark.parametrize("args, name", [
    ((0, 1, 1, 10), "beta"), ((-1, 1, 1, 10), "beta"), (("0.1", 1, 1, 10), "beta"),
    ((0.1, 0, 1, 10), "c_cov"), ((0.1, -1, 1, 10), "c_cov"), ((0.1, math.nan, 1, 10), "c_cov"),
    ((0.1, 1, 0, 10), "n_params"), ((0.1, 1, -1, 10), "n_params"), ((0.1, 1, 1.5, 10), "n_params"),
    ((0.1, 1, 1, 0), "total_queries"), ((0.1, 1, 1, -5), "total_queries"), ((0.1, 1, 1, 10.5), "total_queries"),
    ((0.1, 1, 1, 10, 0), "scale"), ((0.1, 1, 1, 10, -1), "scale"), ((0.1, 1, 1, 10, True), "scale"),
])
def test_theory_alpha_refuses_zero_negative_and_non_numbers(args, name):
    """theory_alpha(0.1, 0, 1, 10) was a ZeroDivisionError; a negative β or scale returned a
    negative α, n_params = -1 returned 0."""
    with pytest.raises(ValueError, match=f"^{name} must"):
        theory_alpha(*args)


def test_theory_alpha_keeps_its_values():
    assert theory_alpha(0.1, 2, 3, 100) == pytest.approx(0.1 * math.sqrt(4 * math.log(100) / 200), rel=1e-15)
    assert theory_alpha(0.1, 1, 1, 1) == 0.0  # one query: log T = 0
    assert theory_alpha(0.1, 0.9999999999999998, 1, 10) > 0  # a C_cov of 1 up to rounding


# ------------------------------------------------------------------ the transformer's train
def test_train_refuses_a_non_bool_track_concentrability():
    """'no' is truthy: the concentrability was tracked; 0 turned it off silently."""
    pytest.importorskip("torch")
    from xpo_sim.torch import TinyTransformerPolicy, train, with_reference

    base = envs.token_tree(2, 2)
    policy = TinyTransformerPolicy(base, width=8, depth=1, heads=2)
    mdp = with_reference(base, policy.frozen_copy())
    for value in ("no", 0, None):
        with pytest.raises(ValueError, match="track_concentrability must be True or False"):
            train(mdp, xpo_sim.XPO(), 0.1, 1, policy, steps=1, track_concentrability=value)


# ------------------------------------------------------------------------- the scripts
def _script(path: str):
    spec = importlib.util.spec_from_file_location(Path(path).stem + "_probe2_more", ROOT / path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _usage_error(call, capsys) -> str:
    with pytest.raises(SystemExit) as exit_:
        call()
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def test_two_arm_seeds_refuses_sizes_it_cannot_run(capsys, monkeypatch):
    """--seeds 1000000000 ran (for days) instead of refusing; --rounds 10000000000 ended in a
    ValueError traceback from the first run."""
    module = _script("experiments/two_arm_seeds.py")
    monkeypatch.setattr(module.xpo_sim, "run", lambda *a, **k: pytest.fail("a run started"))
    assert f"--seeds must be at most {checks.MAX_SEEDS}" in _usage_error(
        lambda: module.main(["--seeds", "1000000000"]), capsys)
    err = _usage_error(lambda: module.main(["--seeds", "1", "--rounds", "10000000000"]), capsys)
    assert "--rounds=10000000000 would need" in err and "of memory" in err
    assert "--seeds must be at least 1" in _usage_error(lambda: module.main(["--seeds", "0"]), capsys)


def test_transformer_xpo_refuses_sizes_before_distilling(capsys):
    """--seeds 1000000000 started training seed after seed; --rounds 10000000000 was a
    traceback after 30 s of distillation."""
    module = _script("experiments/transformer_xpo.py")
    assert f"--seeds must be at most {checks.MAX_SEEDS}" in _usage_error(
        lambda: module.parse_args(["--quick", "--seeds", "1000000000"]), capsys)
    assert "--rounds=10000000000 would need" in _usage_error(
        lambda: module.parse_args(["--quick", "--rounds", "10000000000"]), capsys)


def test_bench_update_refuses_a_long_run_that_cannot_fit(capsys, monkeypatch):
    """--long-rounds 10000000000 was a traceback after the first parts had run."""
    module = _script("benchmarks/bench_update.py")
    monkeypatch.setattr(module, "import_torch", lambda: pytest.fail("the benchmark started"))
    assert "--long-rounds=10000000000 would need" in _usage_error(
        lambda: module.main(["--quick", "--long-rounds", "10000000000"]), capsys)


def test_seeds_is_one_check_for_every_script():
    assert checks.seeds("--seeds", np.int64(3)) == 3
    for value, message in ((0, "at least 1"), (checks.MAX_SEEDS + 1, "at most"), (True, "an int"), (2.0, "an int")):
        with pytest.raises(ValueError, match=message):
            checks.seeds("--seeds", value)


# ------------------------------------------------------------- a dask scheduler that dies
def test_a_dead_scheduler_leaves_one_line_not_distributed_s_tracebacks(tmp_path, capsys, monkeypatch):
    """With a real scheduler killed mid-sweep the one-line error came after a page of
    CommClosedError/CancelledError tracebacks that distributed.client logs while the client
    is closed (its reconnect attempts). The distributed loggers are quiet during that
    teardown, and get their levels back after."""
    import contextlib
    import logging
    from concurrent.futures import Executor, Future

    distributed = pytest.importorskip("dask.distributed")
    from xpo_sim import sweep

    class Cancelling(Executor):  # the first run finishes, then the scheduler is gone
        jobs = 0

        def submit(self, fn, /, *args, **kwargs):
            self.jobs += 1
            future = Future()
            if self.jobs == 1:
                future.set_result(fn(*args, **kwargs))
            else:
                future.cancel()
                future.set_running_or_notify_cancel()
            return future

    class DyingClient(contextlib.AbstractContextManager):
        def __init__(self, *args, **kwargs):
            pass

        def wait_for_workers(self, n, timeout):
            pass

        def get_executor(self):
            return Cancelling()

        def __exit__(self, *exc):  # closing: the reconnect attempts fail, and distributed says so
            logging.getLogger("distributed.client").error("Traceback (most recent call last): CommClosedError")
            return False

    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("distributed.client")
    level = logger.level
    logger.addHandler(handler)
    try:
        monkeypatch.setattr(distributed, "Client", DyingClient)
        monkeypatch.setattr(sweep, "_probe_scheduler", lambda address, timeout: None)
        configs = [sweep.RunConfig("bandit_needle", "XPO", 0.1, 2, replicate=r,
                                   instance_args=dict(n_responses=3, eps=0.1, seed=r)) for r in range(3)]
        args = sweep.parse_sweep_args("probe", str(tmp_path), ["--scheduler", "tcp://127.0.0.1:8786"])
        with pytest.raises(SystemExit) as exit_:
            sweep.execute_sweep(configs, args)
    finally:
        logger.removeHandler(handler)
    err = capsys.readouterr().err
    assert exit_.value.code == 1 and "went away mid-sweep" in err and "1 of 3" in err
    assert [r.getMessage() for r in records] == []
    assert logger.level == level
    logger.error("after the sweep")  # the logger works again
