"""The exploration scorecard (xpo_sim.scorecard, experiments/scorecard.py): both calibration
ends on the quick suite, each score recomputed from independent exact runs, a user's
algorithm by spec through the command line and a process pool, and the checks on inputs
and on scores read back."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import xpo_sim
from xpo_sim import scorecard
from xpo_sim.sweep import make_executor

ROOT = Path(__file__).resolve().parents[1]
QUICK_SUBSET = ["two_arm_beta", "reward_scale", "token_needle_no_harm"]


@pytest.fixture(scope="module")
def calibration(tmp_path_factory):
    out = tmp_path_factory.mktemp("calibration")
    entries = [scorecard.entry("StayAtReference"), scorecard.entry("ReportOptimum")]
    scores, settings, runs = scorecard.score_entries(entries, quick=True, out=out)
    return scores, settings, runs


def test_calibration_ends(calibration):
    scores, _, runs = calibration
    assert set(scores.experiment) == {e.name for e in scorecard.suite()}
    ran = scores[scores.status == "ok"]
    runnable = [e for e in scorecard.suite() if scorecard.torch_available() or not e.requires_torch]
    assert len(ran) == 2 * len(runnable)
    stay = ran[ran.algorithm == "StayAtReference"]
    optimum = ran[ran.algorithm == "ReportOptimum"]
    assert (stay[stay.kind == "solved"].score == 0).all()  # never moves: solves nothing
    assert (stay[stay.kind == "no_harm"].score == 1).all()  # and harms nothing
    assert (optimum.score == 1).all()
    for prop in ("coverage", "width"):  # the ends: ~0 for do-nothing, 1 for π*
        assert stay[stay.property == prop].score.max() == 0
    assert (runs[runs.algorithm == "ReportOptimum"].final_regret <= 1e-12).all()
    assert np.allclose(runs[runs.algorithm == "StayAtReference"].final_relative, 1.0, rtol=1e-9)


def test_leaderboard_orders_and_averages(calibration):
    scores, _, _ = calibration
    table = scorecard.leaderboard(scores)
    assert list(table.index) == ["ReportOptimum", "StayAtReference"]
    props = [c for c in table.columns if c != "overall"]
    assert props == [p for p in scorecard.PROPERTIES if p in props]
    by_hand = scores[scores.algorithm == "StayAtReference"].groupby("property").score.mean()
    assert math.isclose(table.loc["StayAtReference", "overall"], by_hand.mean())
    text = scorecard.leaderboard_markdown(scores)
    assert f"suite version {scorecard.SUITE_VERSION}" in text and "| ReportOptimum | 1.00 |" in text


def _naive_score(exp, algorithm_factory, quick=True):
    """The experiment's score from direct xpo_sim.run calls: fraction of (setting, seed)
    runs whose last reported regret is ≤ 10% of π_ref's (exact, from the instance)."""
    from xpo_sim.metrics import regret

    hits = []
    seeds = exp.quick_seeds if quick else exp.seeds
    for index, setting in exp.chosen_settings(quick):
        per_seed = []
        for replicate in range(seeds):
            args = dict(setting.instance_args, **({"seed": replicate} if exp.seeded_instance else {}))
            mdp = getattr(xpo_sim.envs, exp.instance)(**args)
            ref = regret(mdp, mdp.ref_logp, setting.beta)
            configs = scorecard.configs_for(scorecard.entry("XPO"), exp, quick=quick, policy="implicit")
            config = [c for c in configs if c.replicate == replicate and c.instance_args == args][0]
            oracle = xpo_sim.sweep.make_oracle(setting.oracle, setting.oracle_args)
            df = xpo_sim.run(mdp, algorithm_factory(exp.batch), setting.beta, exp.quick_rounds, seed=config.seed,
                             policy="implicit", oracle=oracle)
            final = df.regret.iloc[-1]
            per_seed.append(final <= 0.1 * ref if exp.kind == "solved" else final <= ref * (1 + 1e-9))
        hits.append(np.mean(per_seed))
    return float(np.mean(hits))


@pytest.mark.parametrize("name", ["bandit_needle_eps", "teacher_mistakes", "token_needle_no_harm", "teacher_equal",
                                  "teacher_skip", "teacher_myopic"])
def test_score_matches_direct_runs(name):
    exp = scorecard.experiment(name)
    got = scorecard.score("XPO", quick=True, experiments=[name])
    expected = _naive_score(exp, lambda batch: xpo_sim.XPO(batch=batch))
    assert got.score.iloc[0] == pytest.approx(expected, abs=0)
    assert got.status.iloc[0] == "ok" and got.suite_version.iloc[0] == scorecard.SUITE_VERSION


def test_executors_agree(tmp_path):
    serial = scorecard.score("HybridDPO", quick=True, experiments=QUICK_SUBSET, out=tmp_path / "a")
    with make_executor(2) as pool:
        pooled = scorecard.score("HybridDPO", quick=True, experiments=QUICK_SUBSET, out=tmp_path / "b",
                                 executor=pool)
    pd.testing.assert_frame_equal(serial, pooled)
    pd.testing.assert_frame_equal(serial.attrs["runs"], pooled.attrs["runs"])


def test_transformer_is_not_run_without_torch(monkeypatch):
    monkeypatch.setattr(scorecard, "torch_available", lambda: False)
    scores = scorecard.score("XPO", quick=True, experiments=["transformer_needle", "two_arm_beta"])
    row = scores.set_index("experiment").loc["transformer_needle"]
    assert row.status.startswith("not run") and "torch" in row.status and math.isnan(row.score)
    table = scorecard.leaderboard(scores)
    assert math.isnan(table.loc["XPO", "transformer"])  # never a 0
    assert table.loc["XPO", "overall"] == table.loc["XPO", "coverage"]  # the mean over what ran


def test_transformer_score_matches_a_direct_run():
    pytest.importorskip("torch")
    from xpo_sim.metrics import regret
    from xpo_sim.torch import suite

    exp = scorecard.experiment("transformer_needle")
    got = scorecard.score("OnlineDPO", quick=True, experiments=[exp.name])
    assert got.status.iloc[0] == "ok"
    (config,) = scorecard.configs_for(scorecard.entry("OnlineDPO"), exp, quick=True, policy=exp.policy)
    mdp = suite.distilled_needle(**config.instance_args)
    policy = suite.transformer_policy(mdp, config.beta, **exp.policy_args)
    df = xpo_sim.run(mdp, xpo_sim.OnlineDPO(batch=exp.batch), config.beta, exp.quick_rounds, seed=config.seed,
                     policy=policy, **exp.run_args)
    ref = regret(mdp, mdp.ref_logp, config.beta)
    runs = got.attrs["runs"]
    assert runs.ref_regret.iloc[0] == pytest.approx(ref, rel=1e-12)
    assert runs.final_regret.iloc[0] == pytest.approx(df.regret.iloc[-1], rel=1e-9)
    assert got.score.iloc[0] == float(df.regret.iloc[-1] <= 0.1 * ref)


def test_transformer_policy_refuses_another_instance():
    pytest.importorskip("torch")
    from xpo_sim.torch import suite

    with pytest.raises(ValueError, match="distilled_needle"):
        suite.transformer_policy(xpo_sim.envs.token_needle(4, 3, 1e-2), 0.1)


def test_not_applicable_is_not_zero():
    scores = scorecard.score("InverseQStar", quick=True, experiments=["feature_bandit_width", "two_arm_beta"])
    width = scores.set_index("experiment").loc["feature_bandit_width"]
    assert width.status.startswith("not applicable") and math.isnan(width.score)
    tabular = scores.set_index("experiment").loc["two_arm_beta"]
    assert tabular.status == "ok" and (scores.attrs["runs"].policy == "logits").all()  # the first class it can run
    assert math.isnan(scorecard.leaderboard(scores).loc["InverseQStar", "width"])


def test_entry_from_instance_keeps_non_default_fields():
    made = scorecard.entry(xpo_sim.XPO(alpha=0.3, schedule="inv_sqrt", batch=4))
    assert made.algorithm == "XPO" and made.algorithm_args == {"alpha": 0.3, "schedule": "inv_sqrt"}
    assert scorecard.entry(scorecard.StayAtReference).algorithm == "StayAtReference"


@pytest.mark.parametrize("bad, match", [
    ("NoSuchMethod", "unknown algorithm"),
    ("user_ext.algos:NotAnAlgorithm", "Algorithm"),
    (3, "algorithm must be"),
])
def test_bad_algorithms_are_named(bad, match):
    sys.path.insert(0, str(ROOT / "tests"))
    try:
        with pytest.raises(ValueError, match=match):
            scorecard.entry(bad)
    finally:
        sys.path.remove(str(ROOT / "tests"))


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="experiment"):
        scorecard.score("XPO", quick=True, experiments=["no_such_experiment"])
    with pytest.raises(ValueError, match="seeds"):
        scorecard.score("XPO", quick=True, seeds=0)
    with pytest.raises(ValueError, match="distinct labels"):
        scorecard.plan([scorecard.entry("XPO"), scorecard.entry("XPO")])
    with pytest.raises(ValueError, match="label"):
        scorecard.entry("XPO", label="")


def test_score_intervals_are_wilson_on_all_runs(calibration):
    from xpo_sim.intervals import wilson_interval

    scores, _, runs = calibration
    for row in scores[scores.status == "ok"].itertuples():
        mine = runs[(runs.algorithm == row.algorithm) & (runs.experiment == row.experiment)]
        success = mine.solved if row.kind == "solved" else mine.no_harm
        assert (row.score_low, row.score_high) == pytest.approx(wilson_interval(int(success.sum()), len(mine))[1:])
        assert row.score_low <= row.score <= row.score_high
    text = scorecard.experiments_markdown(scores)
    assert "two arm beta" in text and "1.00 [" in text and "0.00 [0.00," in text


def test_suite_version_is_in_every_run_identity():
    exp = scorecard.experiment("two_arm_beta")
    config = scorecard.configs_for(scorecard.entry("XPO"), exp, quick=True, policy="implicit")[0]
    assert f"scorecard v{scorecard.SUITE_VERSION}" in config.group


def test_scores_read_back_are_checked(calibration, tmp_path):
    scores, _, _ = calibration
    path = tmp_path / "scores.csv"
    scores.to_csv(path, index=False)
    back = scorecard.load_scores(tmp_path)
    assert len(back) == len(scores) and back.suite_version.iloc[0] == scorecard.SUITE_VERSION
    for column, value, match in [("score", 1.5, "outside"), ("score", math.nan, "outside"),
                                 ("score_high", math.nan, "outside"),
                                 ("property", "charm", "unknown properties"), ("suite_version", "0", "versions")]:
        damaged = scores.copy()
        damaged.loc[0, column] = value
        damaged.to_csv(path, index=False)
        with pytest.raises(ValueError, match=match):
            scorecard.load_scores(path)
    damaged = scores.copy()
    positive = damaged.index[damaged.score > 0][0]
    damaged.loc[positive, "score_high"] = damaged.loc[positive, "score"] / 2  # an interval beside its score
    damaged.to_csv(path, index=False)
    with pytest.raises(ValueError, match="not around"):
        scorecard.load_scores(path)
    scores.drop(columns="status").to_csv(path, index=False)
    with pytest.raises(ValueError, match="missing columns"):
        scorecard.load_scores(path)
    with pytest.raises(ValueError, match="no scores"):
        scorecard.load_scores(tmp_path / "nowhere")


def test_cli_scores_a_user_algorithm_on_a_process_pool(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")]))
    out, figures = tmp_path / "out", tmp_path / "figures"
    cmd = [sys.executable, "experiments/scorecard.py", "--quick", "--algorithm", "user_ext.algos:HalvingXPO",
           "--algorithm", "OnlineDPO", "--workers", "2", "--out", str(out), "--figures", str(figures)]
    for name in QUICK_SUBSET:
        cmd += ["--experiment", name]
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    scores = scorecard.load_scores(out)
    assert set(scores.algorithm) == {"user_ext.algos:HalvingXPO", "OnlineDPO"}
    assert set(scores.experiment) == set(QUICK_SUBSET)
    for name in ("settings.csv", "runs.csv", "leaderboard.md"):
        assert (out / name).is_file()
    for name in ("scorecard_radar.png", "scorecard_bars.png", "scorecard_experiments.png"):
        assert (figures / name).stat().st_size > 5_000
    again = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0
    pd.testing.assert_frame_equal(scorecard.load_scores(out), scores)  # resumed from the shards


def test_cli_usage_errors(tmp_path):
    for args, match in [([], "--algorithm"), (["--algorithm", "Nope"], "unknown algorithm"),
                        (["--algorithm", "XPO", "--experiment", "nope"], "experiment")]:
        result = subprocess.run([sys.executable, "experiments/scorecard.py", "--out", str(tmp_path), *args],
                                cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert result.returncode == 2 and match in result.stderr, result.stderr


def test_an_algorithm_that_cannot_run_a_large_setting_is_not_applicable():
    # SE-POPO enumerates responses: the lock at H = 10 has 4^10 > max_enumerate of them. The
    # check covers every setting run, not only the smallest (a full --all run crashed on it).
    configs, skipped = scorecard.plan([scorecard.entry("SEPOPO")], experiments=["diabolical_lock_depth"])
    assert not configs
    assert len(skipped) == 1 and skipped[0][2].startswith("not applicable") and "max_enumerate" in skipped[0][2]
    quick_configs, quick_skipped = scorecard.plan([scorecard.entry("SEPOPO")], quick=True,
                                                  experiments=["diabolical_lock_depth"])
    assert quick_configs and not quick_skipped  # the quick settings (H = 2, 4) can be enumerated


def test_label_colors_never_repeat_for_a_full_leaderboard():
    from xpo_sim.plotting import label_colors

    labels = [e.label for e in scorecard.builtin_entries()] + ["StayAtReference", "ReportOptimum"]
    colors = label_colors(labels)
    assert len(set(colors.values())) == len(labels)  # 16 algorithms: the 8-colour palette repeated
    few = label_colors(["XPO", "OnlineDPO"])
    assert few == {"XPO": "#d62728", "OnlineDPO": "#1f77b4"}  # small figures keep their colours


HANG_SCRIPT = '''
import torch
from xpo_sim import scorecard
from xpo_sim.sweep import make_executor

def main():
    torch.set_num_threads(2)
    a = torch.randn(600, 600)
    (a @ a).sum()  # this process's torch thread pool has started
    with make_executor(2) as pool:
        got = scorecard.score("OnlineDPO", quick=True, experiments=["transformer_needle"], executor=pool)
    print("status", got.status.iloc[0])

if __name__ == "__main__":
    main()
'''


def test_a_pool_started_after_torch_ran_does_not_hang(tmp_path):
    # a child forked from a process whose torch threads had started hung forever in its first
    # transformer run; the pool now forks its workers from a fresh forkserver once torch is in
    pytest.importorskip("torch")
    script = tmp_path / "after_torch.py"
    script.write_text(HANG_SCRIPT)
    result = subprocess.run([sys.executable, str(script)], cwd=ROOT, capture_output=True, text=True, timeout=240,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "status ok" in result.stdout


THREADS_SCRIPT = '''
from xpo_sim.sweep import make_executor

def threads(_):
    import torch
    return torch.get_num_threads()

if __name__ == "__main__":
    import sys
    if sys.argv[1] == "torch-first":
        import torch  # noqa: F401  (the pool then forks from a forkserver)
    with make_executor(2) as pool:
        print("threads", sorted(pool.map(threads, range(4))))
'''


@pytest.mark.parametrize("mode", ["torch-first", "no-torch"])
def test_pool_workers_run_torch_on_one_thread(tmp_path, mode):
    # 2 workers on 2 cores each ran torch with one thread per core (4 threads), 2-3x slower
    pytest.importorskip("torch")
    script = tmp_path / "threads.py"
    script.write_text(THREADS_SCRIPT)
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    result = subprocess.run([sys.executable, str(script), mode], cwd=ROOT, capture_output=True, text=True,
                            timeout=240, env=dict(env, PYTHONPATH=str(ROOT)))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "threads [1, 1, 1, 1]" in result.stdout
