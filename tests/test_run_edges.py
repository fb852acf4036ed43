"""The round loop's edges: arguments checked once and clearly, progress on long runs, and
the defects a probe found in them (issue 11: 8, 10, 11, 13). Each defect test failed before
its fix."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

import xpo_sim
from xpo_sim import checks, envs

ROOT = Path(__file__).resolve().parents[1]


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "experiments" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


# ------------------------------------------------------------------ defect 8
@pytest.mark.parametrize("flag", ["--seeds", "--rounds", "--eval-every"])
def test_transformer_script_refuses_zero_instead_of_running_the_default(flag, capsys):
    script = load_script("transformer_xpo")
    with pytest.raises(SystemExit) as exit_info:
        script.parse_args([flag, "0"])
    assert exit_info.value.code == 2
    assert f"{flag} must be >= 1, got 0" in capsys.readouterr().err


# ----------------------------------------------------------------- defect 10
@pytest.mark.parametrize("record", ["10", [1.7], [True], 5, "often"])
def test_record_must_be_a_keyword_or_round_numbers(record):
    with pytest.raises(ValueError, match="record"):
        xpo_sim.run(envs.bandit(3), xpo_sim.XPO(), 0.5, 20, record=record)


def test_record_keeps_the_rounds_asked_for():
    df = xpo_sim.run(envs.bandit(3), xpo_sim.XPO(), 0.5, 20, record=[10, 3, 99, np.int64(7)])
    assert df["round"].tolist() == [0, 3, 7, 10, 20]
    df = xpo_sim.run(envs.bandit(3), xpo_sim.XPO(), 0.5, 20, record=range(0, 21, 4), eval_every=8)
    assert df["round"].tolist() == [0, 8, 16, 20]


# ----------------------------------------------------------------- defect 11
@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: xpo_sim.XPO(alpha="0.1"), r"alpha must be a finite number >= 0, got '0.1'"),
        (lambda: xpo_sim.XPO(batch=2.0), r"batch must be an int >= 1, got 2.0"),
        (lambda: xpo_sim.run(envs.bandit(3), xpo_sim.XPO(), 0.5, 3, seed=-1), r"seed must be .*got -1"),
        (lambda: xpo_sim.run(envs.bandit(3), xpo_sim.XPO(), 0.5, 3, oracle="bt"), r"oracle must be .*'bt'"),
        (lambda: xpo_sim.OfflineDPO(dataset_size=0), r"dataset_size must be an int >= 1, got 0"),
        (lambda: xpo_sim.run(envs.bandit(3), "XPO", 0.5, 3), r"algorithm must be an Algorithm config"),
        (lambda: xpo_sim.run(envs.bandit(3), xpo_sim.XPO(), 0.5, 3, max_enumerate=-1), r"max_enumerate"),
        (lambda: xpo_sim.run(envs.bandit(3), xpo_sim.XPO(), 0.5, 3, progress="yes"), r"progress"),
    ],
)
def test_bad_arguments_get_messages_that_name_them(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_a_policy_object_built_for_another_beta_or_instance_is_refused():
    mdp = envs.bandit(3)
    with pytest.raises(ValueError, match="built for beta=0.3"):
        xpo_sim.run(mdp, xpo_sim.XPO(), 0.5, 2, policy=xpo_sim.ImplicitRewardClass(mdp, 0.3))
    with pytest.raises(ValueError, match="another TokenMDP"):
        xpo_sim.run(mdp, xpo_sim.XPO(), 0.5, 2, policy=xpo_sim.ImplicitRewardClass(envs.bandit(3), 0.5))


# ----------------------------------------------------------------- defect 13
def test_large_runs_report_each_stage_and_small_ones_stay_quiet(capsys, monkeypatch):
    from xpo_sim import loop

    mdp = envs.token_tree(3, 2, seed=0)
    xpo_sim.run(mdp, xpo_sim.XPO(), 0.5, 2)
    assert capsys.readouterr().err == ""
    monkeypatch.setattr(loop, "LARGE_INSTANCE", 10)  # this instance counts as large
    xpo_sim.run(mdp, xpo_sim.XPO(), 0.5, 2)
    err = capsys.readouterr().err
    assert "solving the optimum" in err and "running the rounds" in err
    xpo_sim.run(mdp, xpo_sim.XPO(), 0.5, 2, progress=False)
    assert capsys.readouterr().err == ""


# ------------------------------------------------- validation once per run
def counting(monkeypatch, name: str) -> list:
    calls = []
    original = getattr(checks, name)

    def counted(*args, **kwargs):
        calls.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(checks, name, counted)
    return calls


@pytest.mark.parametrize("policy", ["implicit", "linear", "logits"])
def test_beta_is_validated_once_per_run_whatever_the_rounds(policy, monkeypatch):
    mdp = envs.combination_lock(3, 3, 0.3)
    calls = counting(monkeypatch, "beta")
    xpo_sim.run(mdp, xpo_sim.XPO(batch=2), 0.1, 1, policy=policy)
    assert len(calls) == 1
    calls.clear()
    xpo_sim.run(mdp, xpo_sim.XPO(batch=2), 0.1, 12, policy=policy)
    assert len(calls) == 1


def test_beta_is_validated_once_with_a_policy_object(monkeypatch):
    mdp = envs.bandit(4)
    cls = xpo_sim.ImplicitRewardClass(mdp, 0.5)
    calls = counting(monkeypatch, "beta")
    xpo_sim.run(mdp, xpo_sim.HybridDPO(), 0.5, 6, policy=cls)
    assert len(calls) == 1


@pytest.mark.parametrize("algorithm", [xpo_sim.XPO(batch=2, sampler="history"), xpo_sim.SELM(batch=2),
                                       xpo_sim.ExPO(batch=2)], ids=lambda a: a.name)
def test_the_rounds_do_not_validate_the_loops_own_tables(algorithm, monkeypatch):
    """Policy tables the loop made itself are not checked again inside the rounds: the
    number of TokenMDP.check_policy calls does not grow with the rounds."""
    mdp = envs.token_tree(3, 2, seed=0)
    counts = []
    for rounds in (1, 10):
        calls = []
        original = xpo_sim.TokenMDP.check_policy
        monkeypatch.setattr(xpo_sim.TokenMDP, "check_policy",
                            lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
        xpo_sim.run(mdp, algorithm, 0.5, rounds)
        monkeypatch.undo()
        counts.append(len(calls))
    assert counts[0] == counts[1]


def test_a_wrong_instance_is_named_before_any_class_is_built():
    with pytest.raises(ValueError, match="mdp must be a TokenMDP"):
        xpo_sim.run("token_tree", xpo_sim.XPO(), 0.1, 3)
