"""Sweeps of a user's own code: ``"module:qualname"`` specs for the instance, algorithm,
policy class and oracle of a RunConfig (defined in ``tests/user_ext``, outside the package),
resolved in each worker so that serial, spawn-pool and dask runs agree; shards that record
the code that made them, so that editing a user module recomputes its shards with a
warning instead of reusing them; clear errors for bad specs; and unchanged keys for every
config of built-ins."""

from __future__ import annotations

import hashlib
import importlib.util
import multiprocessing
import sys
import uuid
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pandas as pd
import pytest

import xpo_sim
from xpo_sim import specs
from xpo_sim.sweep import (RunConfig, SerialExecutor, StaleShardWarning, load_results, run_config,
                           run_sweep)

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "tests") not in sys.path:  # user_ext, as a user's own importable package
    sys.path.insert(0, str(ROOT / "tests"))


def user_configs(instance="user_ext.family:staircase", n_seeds=2):
    out = []
    for r in range(n_seeds):
        out.append(RunConfig(instance=instance, instance_args=dict(n_responses=4, seed=r),
                             algorithm="user_ext.algos:HalvingXPO", algorithm_args=dict(alpha=0.2, decay=0.5),
                             beta=0.3, rounds=5, replicate=r, label="halving"))
        out.append(RunConfig(instance=instance, instance_args=dict(n_responses=4, seed=r), algorithm="OnlineDPO",
                             beta=0.3, rounds=5, replicate=r, policy="user_ext.policy:boxed_implicit",
                             policy_args=dict(bound=3.0), oracle="user_ext.oracle:ScaledBradleyTerry",
                             oracle_args=dict(scale=2.0)))
        out.append(RunConfig(instance="bandit_needle", instance_args=dict(n_responses=4, eps=0.1, seed=r),
                             algorithm="XPO", beta=0.3, rounds=5, replicate=r, oracle="Argmax"))
    return out


def canonical(df: pd.DataFrame) -> pd.DataFrame:
    return df.sort_values(["key", "round"]).reset_index(drop=True)


@pytest.fixture(scope="module")
def user_dir(tmp_path_factory):
    """A folder on sys.path for modules the tests write and edit (before any pool starts,
    so that spawned workers inherit it)."""
    folder = tmp_path_factory.mktemp("user_modules")
    sys.path.insert(0, str(folder))
    yield folder
    sys.path.remove(str(folder))


@pytest.fixture(scope="module")
def spawn_pool(user_dir):
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        yield pool


# ------------------------------------------------------------------------- keys of built-ins


def _experiment(name):
    spec = importlib.util.spec_from_file_location(f"_keys_{name}", ROOT / "experiments" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_keys_of_configs_of_built_ins_are_those_of_the_shards_already_written():
    """Keys (shard names and seeds) computed before specs, fingerprints and the new fields."""
    examples = [
        (RunConfig(instance="bandit_needle", instance_args=dict(n_responses=4, eps=0.05, seed=1), algorithm="XPO",
                   algorithm_args=dict(alpha=0.05), beta=0.2, rounds=6, replicate=1, group="test", label="XPO"),
         "c353c5796c5b6243fba6a43569296503857324652cc56d35ba48c12481ed4580"),
        (RunConfig(instance="two_arm_needle", instance_args=dict(beta=0.1), algorithm="OfflineDPO",
                   algorithm_args=dict(batch=8), beta=0.1, rounds=30),
         "958e14151d60b12de404150d9e27ba34b7669326703777d641495f4ec4ee5b6e"),
        (RunConfig(instance="combination_lock", instance_args=dict(horizon=3, vocab=3, p_correct=0.2, seed=0),
                   algorithm="HybridDPO", beta=0.1, rounds=6, policy="linear",
                   run_args=dict(support="all", record="geometric"), label="x"),
         "ff169840584beca3c3f344047a1094765562b10c442ccb6f6ada60b4a6aea82d"),
        (RunConfig(instance="token_needle", instance_args=dict(vocab=4, horizon=3, eps=1e-3, seed=0), algorithm="XPO",
                   algorithm_args=dict(alpha=0.01, schedule="inv_sqrt", batch=8), beta=0.1, rounds=125,
                   group="token_needle", label="XPO (α = 0.01/√t)"),
         "a33803e815d3c2d364213c5d6bb8f0dfb2ceb15dd8df45bd81438c711ce78448"),
    ]
    for config, key in examples:
        assert config.key == key
    grids = {("coverage_sweep", False): "f66cd07b8e6c9d6d0b82e339b583cfbbf38e42fb9148fd83f29fd0d684446d59",
             ("regret_curves", False): "971f6bb0145706cc80412da3efedcb1a26b6e1b4b0c58248942eeb956fd2cf81",
             ("structure_sweep", True): "da625fc6e243463cecad1a2036f47ea26d95dac668e6c5cb72ff12e41887b958",
             ("reward_scale", False): "311d7dcd21157e8e22f6fef314d872bdb9c854de51de1f3e5154923cd6d1b147"}
    for (name, quick), digest in grids.items():
        built = _experiment(name).build_configs(quick, 2)
        configs = built[0] if isinstance(built, tuple) else built
        assert hashlib.sha256("".join(c.key for c in configs).encode()).hexdigest() == digest, name


def test_new_fields_at_their_defaults_leave_the_key_alone_and_change_it_otherwise():
    base = dict(instance="bandit", instance_args=dict(n_responses=3), algorithm="XPO", beta=0.5, rounds=3)
    plain = RunConfig(**base)
    assert RunConfig(**base, policy_args={}, oracle=None, oracle_args={}).key == plain.key
    assert "oracle" not in plain.to_json() and "policy_args" not in plain.to_json()
    assert RunConfig(**base, oracle="BradleyTerry").key != plain.key
    assert RunConfig(**base, oracle="BradleyTerry", oracle_args=dict(reward_scale=2.0)).key != \
        RunConfig(**base, oracle="BradleyTerry").key


# ------------------------------------------------------------------------- specs on every executor


def test_user_specs_give_identical_tables_serially_and_in_a_spawn_pool(tmp_path, spawn_pool):
    configs = user_configs()
    serial = run_sweep(configs, tmp_path / "serial", SerialExecutor())
    assert set(serial.algorithm) == {"HalvingXPO", "OnlineDPO", "XPO"}
    assert set(serial.instance) == {"user_ext.family:staircase", "bandit_needle"}
    pooled = run_sweep(configs, tmp_path / "spawn", spawn_pool)
    pd.testing.assert_frame_equal(canonical(serial), canonical(pooled))


def test_user_specs_run_on_a_dask_cluster(tmp_path):
    distributed = pytest.importorskip("dask.distributed")
    configs = user_configs(n_seeds=1)
    serial = run_sweep(configs, tmp_path / "serial")
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        dask = run_sweep(configs, tmp_path / "dask", client.get_executor())
    pd.testing.assert_frame_equal(canonical(serial), canonical(dask))


def test_a_user_policy_class_and_oracle_reach_the_run(monkeypatch):
    config = user_configs(n_seeds=1)[1]
    df = run_config(config)
    mdp = specs.resolve(config.instance, "instance")(n_responses=4, seed=0)
    policy = specs.resolve(config.policy, "policy")(mdp, 0.3, bound=3.0)
    assert policy.box == (-3.0, 3.0)
    direct = xpo_sim.run(mdp, xpo_sim.OnlineDPO(), 0.3, 5, seed=config.seed, policy=policy,
                         oracle=specs.resolve(config.oracle)(scale=2.0))
    pd.testing.assert_series_equal(df.regret, direct.regret)
    oracle_class = specs.resolve(config.oracle)
    calls = []
    prefer = oracle_class.prefer
    monkeypatch.setattr(oracle_class, "prefer", lambda self, a, b, rng: calls.append(len(a)) or prefer(self, a, b, rng))
    run_config(config)
    assert sum(calls) == config.rounds  # one pair a round, every label from the user's oracle


# ------------------------------------------------------------------------- results know their code


STALE_MODULE = '''"""A user module the test edits."""
from user_ext.family import staircase

STEP = {step}


def family(n_responses, seed=0):
    return staircase(n_responses, step=STEP, seed=seed)
'''


def write_module(folder: Path, name: str, step) -> None:
    (folder / f"{name}.py").write_text(STALE_MODULE.format(step=step))


@pytest.mark.parametrize("executor", ["serial", "spawn"])
def test_editing_a_user_module_recomputes_its_shards_with_a_warning(executor, tmp_path, user_dir, spawn_pool):
    name = f"stale_family_{uuid.uuid4().hex[:8]}"
    write_module(user_dir, name, 0.25)
    run = SerialExecutor() if executor == "serial" else spawn_pool
    configs = [RunConfig(f"{name}:family", "XPO", 0.3, 5, instance_args=dict(n_responses=4, seed=r), replicate=r)
               for r in range(2)]
    first = run_sweep(configs, tmp_path / "out", run)
    assert first.code_fingerprint.str.startswith(f"{name}=").all()
    assert (first.xpo_sim_version == xpo_sim.__version__).all()
    with warnings.catch_warnings():  # an unchanged module: the shards are reused silently
        warnings.simplefilter("error")
        pd.testing.assert_frame_equal(run_sweep(configs, tmp_path / "out", run), first)

    write_module(user_dir, name, 0.5)  # the researcher edits the instance family
    with pytest.warns(StaleShardWarning, match=rf"{name}.*changed") as caught:
        second = run_sweep(configs, tmp_path / "out", run)
    assert len([w for w in caught if issubclass(w.category, StaleShardWarning)]) == len(configs)
    assert not second.regret.equals(first.regret)
    assert set(second.code_fingerprint) != set(first.code_fingerprint)
    fresh = run_sweep(configs, tmp_path / "fresh", SerialExecutor())  # the new code, from scratch
    pd.testing.assert_frame_equal(second, fresh)
    assert (second.key == first.key).all()  # same configs, so the same seeds: they derive from the config alone
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pd.testing.assert_frame_equal(load_results(tmp_path / "out", configs), second)


def test_a_shard_of_another_xpo_sim_version_is_recomputed_and_old_shards_of_built_ins_are_kept(tmp_path,
                                                                                                monkeypatch):
    config = RunConfig("bandit_needle", "XPO", 0.2, 3, instance_args=dict(n_responses=3, eps=0.1))
    df = run_sweep([config], tmp_path)
    path = tmp_path / "shards" / f"{config.key}.csv"
    assert (df.xpo_sim_version == xpo_sim.__version__).all() and df.code_fingerprint.isna().all()
    # a shard written before the provenance columns existed: fingerprint unknown, accepted for built-ins
    df.drop(columns=["xpo_sim_version", "code_fingerprint"]).to_csv(path, index=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        kept = run_sweep([config], tmp_path)
    assert "xpo_sim_version" not in kept
    monkeypatch.setattr(xpo_sim, "__version__", "99.0")
    run_sweep([config], tmp_path, force=True)
    monkeypatch.undo()
    with pytest.warns(StaleShardWarning, match=r"xpo_sim 99\.0, this is xpo_sim"):
        again = run_sweep([config], tmp_path)
    pd.testing.assert_frame_equal(again, df)


def test_an_old_shard_without_provenance_is_recomputed_for_a_user_config(tmp_path):
    config = user_configs(n_seeds=1)[0]
    df = run_sweep([config], tmp_path)
    path = tmp_path / "shards" / f"{config.key}.csv"
    df.drop(columns=["xpo_sim_version", "code_fingerprint"]).to_csv(path, index=False)
    with pytest.warns(StaleShardWarning, match="does not record the code"):
        again = run_sweep([config], tmp_path)
    pd.testing.assert_frame_equal(again, df)


# ------------------------------------------------------------------------- bad specs


@pytest.mark.parametrize("kwargs, message", [
    (dict(instance="user_ext/family:staircase"), "built-in name or a spec 'package.module:qualname'"),
    (dict(instance="user_ext.family:"), "built-in name or a spec"),
    (dict(instance="no_such_module_xyz.sub:f"), "no module named 'no_such_module_xyz'.*importable"),
    (dict(instance="user_ext.family:nope"), "'user_ext.family' has no attribute 'nope'"),
    (dict(instance="user_ext.family:staircase.x"), "has no attribute 'x'"),
    (dict(instance="__main__:family"), "__main__"),
    (dict(algorithm="user_ext.algos:NotAnAlgorithm"), "subclass of xpo_sim.algorithms.Algorithm"),
    (dict(algorithm="user_ext.algos:HalvingXPO", algorithm_args=dict(decay=2.0)), "decay"),
    (dict(algorithm="user_ext.algos"), "unknown algorithm"),
    (dict(policy="user_ext.policy:nope"), "has no attribute 'nope'"),
    (dict(policy="implicit", policy_args=dict(bound=1.0)), "policy_args are for a policy given as a spec"),
    (dict(policy="tabular"), "unknown policy class"),
    (dict(oracle="Nope"), "unknown oracle"),
    (dict(oracle="user_ext.family:STEP"), "has no attribute"),
    (dict(oracle="user_ext.oracle:ScaledBradleyTerry", oracle_args=dict(bogus=1)), "cannot be built"),
    (dict(oracle_args=dict(reward_scale=2.0)), "oracle_args need an oracle"),
])
def test_bad_specs_are_clear_value_errors(kwargs, message):
    base = dict(instance="user_ext.family:staircase", instance_args=dict(n_responses=3), algorithm="XPO",
                beta=0.2, rounds=2)
    with pytest.raises(ValueError, match=message):
        RunConfig(**{**base, **kwargs})


def test_a_module_that_fails_to_import_and_a_factory_of_the_wrong_kind(user_dir):
    name = f"broken_{uuid.uuid4().hex[:8]}"
    (user_dir / f"{name}.py").write_text("raise RuntimeError('the lab server is down')\n")
    with pytest.raises(ValueError, match=rf"importing module '{name}' failed: RuntimeError: the lab server"):
        RunConfig(f"{name}:f", "XPO", 0.2, 2)
    config = RunConfig("user_ext.family:not_an_mdp", "XPO", 0.2, 2)
    with pytest.raises(ValueError, match="must return a TokenMDP, got dict"):
        run_config(config)
