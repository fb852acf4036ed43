"""The one-command GPU check (benchmarks/gpu_check.py), the gpu size preset of the transformer
experiment, the chunked exact table and bfloat16 training.

Tests whose name contains "cuda" are the ones ``gpu_check.py`` runs on a GPU (``-k cuda``);
they skip where CUDA is unavailable. The others run on any machine, the check script itself
with ``CUDA_VISIBLE_DEVICES=""`` so that it takes its no-CUDA path everywhere.
"""

from __future__ import annotations

import copy
import importlib.util
import os
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, PYTHONPATH=str(ROOT))
needs_cuda = pytest.mark.skipif(
    importlib.util.find_spec("torch") is None or not __import__("torch").cuda.is_available(),
    reason="needs torch with CUDA and a GPU")


def load_script(relative: str, name: str):
    """Import a script of experiments/ or benchmarks/ as a module."""
    spec = importlib.util.spec_from_file_location(name, ROOT / relative)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def torch():
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield torch
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def experiment():
    pytest.importorskip("torch")
    return load_script("experiments/transformer_xpo.py", "_transformer_xpo_script")


@pytest.fixture(scope="module")
def gpu_check():
    return load_script("benchmarks/gpu_check.py", "_gpu_check_script")


# ---------------------------------------------------------------- the check script
def test_check_script_on_a_machine_without_a_gpu(tmp_path):
    out = tmp_path / "check"
    result = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--quick", "--out", str(out)],
                            cwd=ROOT, env=dict(ENV, CUDA_VISIBLE_DEVICES=""), capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "CUDA is not available" in result.stdout
    report = out / "gpu_check.md"
    assert str(report) in result.stdout
    text = report.read_text()
    assert "CUDA unavailable" in text and "CUDA is not available" in text and "Nothing was run" in text
    # it lists what would have run
    for command in ("-k cuda", "bench_torch.py --device cuda", "transformer_xpo.py --quick --device cuda",
                    "--preset gpu --device cuda"):
        assert command in text
    assert not (out / "logs").exists()


def test_check_script_help():
    result = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--help"], cwd=ROOT, env=ENV,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert "--out" in result.stdout and "--quick" in result.stdout and "CUDA" in result.stdout


def fake_torch():
    """Just what the report's environment table reads from torch."""
    props = types.SimpleNamespace(total_memory=141 * 2**30, major=9, minor=0)
    cuda = types.SimpleNamespace(get_device_name=lambda i=0: "Fake GPU", get_device_properties=lambda i: props,
                                 device_count=lambda: 1, is_bf16_supported=lambda: True)
    return types.SimpleNamespace(__version__="0.0", version=types.SimpleNamespace(cuda="12.x"), cuda=cuda,
                                 backends=types.SimpleNamespace(cudnn=types.SimpleNamespace(version=lambda: 90000)),
                                 get_float32_matmul_precision=lambda: "highest")


def test_report_records_passed_failed_timed_out_and_skipped_steps(gpu_check, tmp_path):
    """The runner and the report, with cheap stand-in steps: a failing or hanging step is
    recorded (the hanging one killed at its timeout) and the report is still written."""
    out = tmp_path / "check"
    out.mkdir()
    (out / "logs").mkdir()
    (out / "exp").mkdir()
    (out / "exp" / "summary.csv").write_text(
        "group,label,runs,queries_median,reached,final_regret_rel,best_regret_rel\n"
        "transformer,XPO,1,,0.0,0.7512345,0.5\n")
    Step = gpu_check.Step
    steps = [
        Step("bench", "bench", ["-c", "print('| device | measure |'); print('|---|---|'); print('| cuda | 1 |')"], 30),
        Step("exp", "experiment", ["-c", "print('final regret per seed')"], 30, out_dir="exp"),
        Step("broken", "broken", ["-c", "import sys; print('boom', file=sys.stderr); sys.exit(3)"], 30),
        Step("hang", "hang", ["-c", "import time; time.sleep(60)"], 30),  # killed when the budget runs out
        Step("late", "late", ["-c", "pass"], 30),
    ]
    start = time.perf_counter()
    gpu_check.run_all(steps, out / "logs", budget_s=6, min_step_s=2)
    assert time.perf_counter() - start < 20
    assert [s.result.split(" (")[0].split(" after")[0] for s in steps] == [
        "passed", "passed", "failed", "timed out", "not run"]
    assert "exit status 3" in steps[2].result and "boom" in steps[2].stderr
    args = types.SimpleNamespace(quick=True, out=str(out))
    report = gpu_check.write_report(out, steps, fake_torch(), args, 12.0)
    text = report.read_text()
    assert "3 of 5 steps failed" in text and "Fake GPU" in text and "12.x" in text
    assert "| cuda | 1 |" in text  # the bench's table, verbatim
    assert "| transformer | XPO | 1 | – | 0 | 0.751 | 0.5 |" in text  # the regret table from summary.csv
    assert "boom" in text
    assert (out / "logs" / "broken.err").read_text().strip() == "boom"


# ---------------------------------------------------------------- the gpu preset
def test_gpu_preset_sizes_and_exact_table_on_a_slice(torch, experiment):
    """The gpu preset's instance and model at full size (32,768 responses, ~10⁷ parameters),
    and its exact table path on a few states; the full table is left to the GPU."""
    from xpo_sim import torch as torch_backend

    preset = experiment.PRESETS["gpu"]
    needle, policy = experiment.build(preset, 0, 0.01, torch_backend)
    assert 10**4 <= needle.n_trajectories <= 10**5
    assert needle.n_trajectories == 8**5 and needle.n_states == 4681
    assert 5e6 <= policy.n_params <= 2e7
    assert preset.precision == "bf16"
    # the optimal path, the first and last prefixes: state_logp (the table's batched forward pass)
    # against a direct forward pass of each state's own prefix
    states = np.unique(np.concatenate([needle.info["optimal_path_states"][0], [1, 2, needle.n_states - 1]]))
    tree = policy.tree
    with torch.no_grad():
        batched = policy.state_logp(torch.as_tensor(states)).double().numpy()
        for row, s in zip(batched, states):
            logits = policy(torch.as_tensor(tree.tokens[s, : tree.depth[s] + 1])[None])[0, -1].double().numpy()
            np.testing.assert_allclose(row, logits - np.logaddexp.reduce(logits), atol=1e-5)
    assert np.abs(np.exp(batched).sum(axis=1) - 1).max() < 1e-5
    assert set(tree.depth[states]) == set(range(preset.horizon))  # the root, inner and maximal prefixes


def test_gpu_preset_code_path_on_a_shrunken_preset(torch, experiment, tmp_path, monkeypatch, capsys):
    """The experiment's gpu-preset path (bf16 training, its own outputs and printed sizes) end
    to end on the CPU, with the preset shrunk to seconds."""
    import dataclasses

    import pandas as pd

    small = dataclasses.replace(experiment.PRESETS["gpu"], vocab=3, horizon=3, width=32, depth=1, heads=2,
                                distill_steps=20)
    monkeypatch.setitem(experiment.PRESETS, "gpu", small)
    out, figures = tmp_path / "out", tmp_path / "figures"
    code = experiment.main(["--preset", "gpu", "--allow-cpu", "--precision", "bf16", "--seeds", "1", "--rounds", "2",
                            "--eval-every", "1", "--tabular", "logits", "--out", str(out), "--figures", str(figures)])
    assert code == 0
    captured = capsys.readouterr()
    assert "warning: --preset gpu is sized for a GPU" in captured.err
    assert "preset gpu: token_needle(3, 3), 27 responses, 13 prefixes" in captured.out
    assert "training precision bf16" in captured.out
    df = pd.read_csv(out / "results.csv")
    assert set(df.group) == {"transformer", "logits"} and np.isfinite(df.regret).all()
    assert df[df["round"] == 0].regret.nunique() == 1
    assert (figures / "transformer_xpo_gpu.png").exists() and not (figures / "transformer_xpo.png").exists()


def test_gpu_preset_is_refused_on_the_cpu_without_allow_cpu(tmp_path):
    pytest.importorskip("torch")
    result = subprocess.run([sys.executable, "experiments/transformer_xpo.py", "--preset", "gpu", "--device", "cpu",
                             "--out", str(tmp_path)], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "sized for a GPU" in result.stderr and "--allow-cpu" in result.stderr
    assert "Traceback" not in result.stderr


# ---------------------------------------------------------------- chunked table, bf16 training
def test_chunked_table_equals_the_unchunked_one(torch):
    from xpo_sim import envs
    from xpo_sim.torch import TinyTransformerPolicy

    mdp = envs.token_tree(3, 3, n_prompts=2, seed=1)  # 26 states, 18 maximal prefixes
    policy = TinyTransformerPolicy(mdp, seed=3, init_std=0.5, width=32, depth=2, heads=2)
    whole = policy.logp_table(chunk=10_000)
    with torch.no_grad():  # the table before chunking: one pass over every maximal prefix
        reference = policy.state_logp().double().numpy()
    allowed = mdp.allowed
    np.testing.assert_allclose(whole[allowed], reference[allowed], atol=1e-6)
    for chunk in (1, 2, 5, 17, 18):
        table = policy.logp_table(chunk=chunk)
        assert np.array_equal(table == -np.inf, ~allowed)
        # float32 rounding only (a batch of one sequence may take another matmul kernel)
        np.testing.assert_allclose(table[allowed], whole[allowed], atol=2e-5)
        assert np.abs(np.exp(table).sum(axis=1) - 1).max() <= 1e-12
    with pytest.raises(ValueError, match="chunk"):
        policy.logp_table(chunk=0)


def test_bf16_training_leaves_the_exact_evaluation_in_float64(torch):
    """precision="bf16" changes the training forward passes only: the table under an active
    autocast is bit-identical to the float32 one, and the reported regrets are the exact
    evaluation of that table."""
    import xpo_sim
    from xpo_sim import XPO, envs
    from xpo_sim.torch import TinyTransformerPolicy, distill, train, with_reference

    mdp = envs.token_tree(2, 2, seed=0)
    policy = TinyTransformerPolicy(mdp, seed=0, init_std=0.5, width=32, depth=2, heads=2)
    table = policy.logp_table()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert np.array_equal(policy.logp_table(), table)
        assert not np.allclose(policy.state_logp().detach().double().numpy(), table, atol=1e-4)  # autocast is on
    reference = policy.frozen_copy()
    instance = with_reference(mdp, reference)
    trained = copy.deepcopy(policy)
    df = train(instance, XPO(batch=4, alpha=0.1), 0.5, 3, trained, reference=reference, seed=0, precision="bf16")
    assert df.attrs["precision"] == "bf16" and np.isfinite(df.regret).all()
    final = trained.logp_table()
    assert final.dtype == np.float64 and np.abs(np.exp(final).sum(axis=1) - 1).max() <= 1e-12
    exact = xpo_sim.regret(instance, final, 0.5)  # β E KL(π ‖ π*), the form the run reports
    assert df.regret.iloc[-1] == exact
    assert exact == pytest.approx(xpo_sim.solve_soft(instance, 0.5).value - xpo_sim.evaluate(instance, final, 0.5).value,
                                  rel=1e-12, abs=1e-15)
    fp32 = train(instance, XPO(batch=4, alpha=0.1), 0.5, 3, copy.deepcopy(policy), reference=reference, seed=0)
    assert fp32.attrs["precision"] == "fp32"
    assert abs(fp32.regret.iloc[-1] - exact) < 0.05  # the same run up to bfloat16 rounding of the gradients
    fit = distill(copy.deepcopy(policy), mdp, steps=5, precision="bf16")
    assert np.isfinite(fit.max_kl)
    with pytest.raises(ValueError, match="precision"):
        train(instance, XPO(), 0.5, 1, copy.deepcopy(policy), reference=reference, precision="fp16")


# ---------------------------------------------------------------- on a GPU only
@needs_cuda
def test_table_on_cuda_matches_the_cpu_table(torch):
    from xpo_sim import envs
    from xpo_sim.torch import TinyTransformerPolicy

    mdp = envs.token_tree(4, 3, n_prompts=2, seed=0)
    policy = TinyTransformerPolicy(mdp, seed=1, init_std=0.2)
    on_cpu = policy.logp_table()
    on_gpu = copy.deepcopy(policy).to("cuda").logp_table()
    assert on_gpu.dtype == np.float64 and np.array_equal(on_gpu == -np.inf, ~mdp.allowed)
    np.testing.assert_allclose(on_gpu[mdp.allowed], on_cpu[mdp.allowed], atol=1e-5)
    assert np.abs(np.exp(on_gpu).sum(axis=1) - 1).max() <= 1e-12


@needs_cuda
def test_bf16_training_on_cuda_keeps_the_exact_evaluation(torch):
    import xpo_sim
    from xpo_sim import XPO, envs
    from xpo_sim.torch import TinyTransformerPolicy, train, with_reference

    mdp = envs.token_tree(3, 3, seed=0)
    policy = TinyTransformerPolicy(mdp, seed=0, device="cuda")
    reference = policy.frozen_copy()
    instance = with_reference(mdp, reference)
    with torch.autocast("cuda", dtype=torch.bfloat16):  # bf16 would move log-probabilities by ~1e-3
        np.testing.assert_allclose(reference.logp_table(), instance.ref_logp, rtol=0, atol=1e-9)
    df = train(instance, XPO(batch=8), 0.5, 4, policy, reference=reference, seed=0, precision="bf16")
    assert df.attrs["device"].startswith("cuda") and np.isfinite(df.regret).all()
    exact = xpo_sim.solve_soft(instance, 0.5).value - xpo_sim.evaluate(instance, policy.logp_table(), 0.5).value
    assert df.regret.iloc[-1] == pytest.approx(exact, rel=0, abs=1e-9)


@needs_cuda
def test_gpu_preset_full_table_on_cuda(torch, experiment):
    from xpo_sim import torch as torch_backend

    preset = experiment.PRESETS["gpu"]
    needle, policy = experiment.build(preset, 0, 0.01, torch_backend, device="cuda")
    policy.logp_table()  # warm-up
    torch.cuda.synchronize()
    start = time.perf_counter()
    table = policy.logp_table()
    seconds = time.perf_counter() - start
    chunked = policy.logp_table(chunk=1000)
    assert table.shape == (needle.n_states, preset.vocab) and np.isfinite(table).all()
    np.testing.assert_allclose(chunked, table, atol=1e-5)
    print(f"gpu preset: one exact table of {needle.n_states} states on {torch.cuda.get_device_name()}: "
          f"{seconds * 1e3:.1f} ms")
