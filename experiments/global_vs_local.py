"""How far XPO's local per-round updates are from the certified global argmin.

With α > 0 the round objective α Σ log π(ỹ) + Σ ℓ_DPO is not convex, and solver="newton"
returns the local minimizer reached by descent from the previous iterate; solver="global"
(xpo_sim.solvers.global_minimize) returns the global one, certified to gap_tol = 1e-6. XPO
(α_t = 0.01/√t, ỹ ∼ π_ref, implicit-reward class with the coverage sweep's box unless
stated) on:

  two_arm        two_arm_needle(β), β ∈ {0.25, 0.1}, one pair a round, 200 rounds
  bandit_needle  bandit_needle(8, ε), ε ∈ {1e-1, 1e-2}, β = 0.1, eight pairs a round,
                 30 rounds (the coverage sweep runs 125; the global solve of a round costs
                 up to seconds here, so the run is shortened)
  lock           combination_lock(3, 3, 0.3), linear class (level-indicator features,
                 d = 3), β = 0.1, four pairs a round, 60 rounds

Two measurements per instance and seed:

* same data: in the global run, each round's data also go to a Newton update from the same
  warm start; objective gap = L(local) − L(global) ≥ −gap_tol, and the regret of the local
  update minus the regret of the global one, on the same data;
* two runs: a Newton run and a global run with one seed (the data streams part once the
  iterates differ); the difference of their final regrets.

Writes rounds.csv (one row per round and run) and table.md to --out and prints the table.

    python experiments/global_vs_local.py [--quick] [--seeds N] [--out DIR]
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

import xpo_sim
from xpo_sim import checks, envs
from xpo_sim.policies import make_policy_class

BETA = 0.1
GAP_TOL = 1e-6


def instances(quick: bool, seed: int):
    """(group, label, mdp, β, batch, rounds, policy) of the runs of one seed."""
    two_arm_betas = [0.1] if quick else [0.25, 0.1]
    epsilons = [1e-1] if quick else [1e-1, 1e-2]
    rounds = dict(two_arm=10, bandit_needle=3, lock=4) if quick else dict(two_arm=200, bandit_needle=30, lock=60)
    out = [("two_arm", f"two_arm_needle(β = {beta})", envs.two_arm_needle(beta), beta, 1, rounds["two_arm"],
            "implicit") for beta in two_arm_betas]
    out += [("bandit_needle", f"bandit_needle(8, ε = {eps:g})", envs.bandit_needle(8, eps, seed=seed), BETA, 8,
             rounds["bandit_needle"], "implicit") for eps in epsilons]
    out.append(("lock", "combination_lock(3, 3, 0.3), linear", envs.combination_lock(3, 3, 0.3, seed=seed), BETA, 4,
                rounds["lock"], "linear"))
    return out


def compare(mdp, beta: float, batch: int, rounds: int, seed: int, policy: str) -> tuple[pd.DataFrame, dict]:
    """One instance and seed: the global run with, every round, the Newton update on the
    same data from the same warm start (per-round rows), and a separate Newton run."""
    algorithm = xpo_sim.XPO(alpha=0.01, schedule="inv_sqrt", batch=batch)
    solution = xpo_sim.solve_soft(mdp, beta)
    exact = make_policy_class(mdp, beta, policy, solver="global", gap_tol=GAP_TOL)
    local = make_policy_class(mdp, beta, policy, solver="newton")
    rows = []
    update = exact.update

    def both(params, data, alpha, loss="dpo"):
        started = time.perf_counter()
        theta = update(params, data, alpha, loss)
        result = exact.solve_results[-1]
        seconds = time.perf_counter() - started
        local_theta = local.update(params, data, alpha, loss)
        local_value = local.solve_results[-1].value
        rows.append(dict(
            round=len(rows) + 1, alpha=alpha, objective_local=local_value, objective_global=result.value,
            objective_gap=local_value - result.value, certified_gap=result.gap, converged=result.converged,
            nodes=result.nodes, seconds=seconds,
            regret_local=xpo_sim.regret(mdp, local.policy_logp(local_theta), beta, solution),
            regret_global=xpo_sim.regret(mdp, exact.policy_logp(theta), beta, solution)))
        return theta

    exact.update = both
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", xpo_sim.solvers.ConvergenceWarning)  # counted in the table instead
        global_run = xpo_sim.run(mdp, algorithm, beta, rounds, seed=seed, policy=exact, max_enumerate=0)
    newton_run = xpo_sim.run(mdp, algorithm, beta, rounds, seed=seed, policy=policy, solver="newton", max_enumerate=0)
    per_round = pd.DataFrame(rows)
    per_round["regret_diff"] = per_round["regret_local"] - per_round["regret_global"]
    return per_round, dict(ref_regret=float(global_run.regret.iloc[0]), final_global=float(global_run.regret.iloc[-1]),
                           final_newton=float(newton_run.regret.iloc[-1]))


def summarize(per_round: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """One row per instance: how often and by how much the local update misses the global."""
    out = []
    for label, group in per_round.groupby("instance", sort=False):
        run = runs[runs["instance"] == label]
        beyond = group["objective_gap"] > GAP_TOL
        out.append({
            "instance": label, "seeds": run.shape[0], "rounds": group.shape[0],
            "local > global + tol": f"{beyond.mean():.1%}",
            "objective gap max": group["objective_gap"].max(),
            "objective gap mean": group["objective_gap"].clip(lower=0).mean(),
            "same-data regret diff max |·|": group["regret_diff"].abs().max(),
            "same-data regret diff mean": group["regret_diff"].mean(),
            "π_ref regret": run["ref_regret"].iloc[0],
            "final regret newton": run["final_newton"].mean(),
            "final regret global": run["final_global"].mean(),
            "final regret diff max |·|": (run["final_newton"] - run["final_global"]).abs().max(),
            "not certified": int((~group["converged"]).sum()),
            "nodes mean": group["nodes"].mean(), "seconds/round": group["seconds"].mean(),
        })
    return pd.DataFrame(out)


def markdown(table: pd.DataFrame) -> str:
    def cell(value):
        if isinstance(value, str):
            return value
        if isinstance(value, (int, np.integer)):
            return str(value)
        return f"{value:.3g}"

    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * table.shape[1]]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a smoke-test size (seconds)")
    parser.add_argument("--seeds", type=int, default=None, help="seeds per instance (default 3; --quick: 1)")
    parser.add_argument("--out", default="results/global_vs_local", help="output folder (default %(default)s)")
    args = parser.parse_args(argv)
    seeds = args.seeds if args.seeds is not None else (1 if args.quick else 3)
    try:
        checks.seeds("--seeds", seeds)
    except ValueError as err:
        parser.error(str(err))
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        print(f"error: cannot create --out {out}: {err.strerror or err}", file=sys.stderr)
        return 1
    started = time.perf_counter()
    frames, runs = [], []
    for seed in range(seeds):
        for group, label, mdp, beta, batch, rounds, policy in instances(args.quick, seed):
            per_round, run = compare(mdp, beta, batch, rounds, seed, policy)
            per_round.insert(0, "seed", seed)
            per_round.insert(0, "instance", label)
            per_round.insert(0, "group", group)
            frames.append(per_round)
            runs.append(dict(instance=label, seed=seed, **run))
            print(f"{label}, seed {seed}: {per_round['seconds'].sum():.1f} s", file=sys.stderr)
    per_round = pd.concat(frames, ignore_index=True)
    table = markdown(summarize(per_round, pd.DataFrame(runs)))
    per_round.to_csv(out / "rounds.csv", index=False)
    (out / "table.md").write_text(table)
    print(table)
    print(f"{out / 'rounds.csv'}, {out / 'table.md'}; {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
