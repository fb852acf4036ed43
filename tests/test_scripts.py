"""Smoke tests of the command-line scripts with their default and bad arguments."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_script(*args):
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=300
    )


def test_solve_demo_prints_exact_values():
    result = run_script("experiments/solve_demo.py", "--vocab", "2", "--horizon", "1", "--eps", "0.5", "--beta", "1")
    assert result.returncode == 0, result.stderr
    # two responses, rewards 1 and 0, π_ref uniform: V* = log((e + 1)/2)
    import math

    v_star = math.log((math.e + 1) / 2)
    assert f"{v_star:.6f}" in result.stdout
    assert f"regret     {v_star - 0.5:.6f}" in result.stdout


def test_solve_demo_bad_argument_is_a_clean_error():
    result = run_script("experiments/solve_demo.py", "--beta", "-1")
    assert result.returncode == 2
    assert "beta must be a positive finite number" in result.stderr
    assert "Traceback" not in result.stderr


def test_two_arm_seeds_prints_its_table():
    result = run_script("experiments/two_arm_seeds.py", "--seeds", "2", "--rounds", "3")
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith("| 0.")]
    assert len(rows) == 10
    bad = run_script("experiments/two_arm_seeds.py", "--seeds", "0")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
