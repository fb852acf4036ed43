"""Regret curves of every algorithm on one instance over a long horizon.

Instance: token_needle(vocab=4, horizon=3, ε=1e-3), β = 0.1, eight pairs per round, 200
rounds (1,600 preference queries), Bradley–Terry labels. Algorithms: XPO with its three
samplers (ỹ from π_ref, from the current policy, from the mixture of past iterates; bonus
α_t = 0.01/√t), online, hybrid and offline DPO with the exact update in the implicit-reward
class, and XPO and online DPO in the logits class (20 Adam steps a round, lr 0.1) — the
practice-like path. Rows are recorded at about 60 geometrically spaced rounds, so "queries
to 10%" in summary.csv is the first *recorded* round below the threshold (an upper bound).

Outputs: shards and summary.csv in --out; figures/regret_curves.png (regret, mean and 95%
band over seeds) and figures/regret_curves_coverage.png.

    python experiments/regret_curves.py [--quick] [--seeds N] [--workers N]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

from xpo_sim.analysis import queries_to_threshold, summarize_runs  # noqa: E402
from xpo_sim.plotting import plot_coverage, plot_regret_curves  # noqa: E402
from xpo_sim.sweep import RunConfig, check_sweep_arguments, execute_sweep, sweep_cli_arguments  # noqa: E402

BETA, EPS, BATCH = 0.1, 1e-3, 8
ALGORITHMS = [
    ("XPO ref (α = 0.01/√t)", "XPO", dict(alpha=0.01, schedule="inv_sqrt"), "implicit"),
    ("XPO current", "XPO", dict(alpha=0.01, schedule="inv_sqrt", sampler="current"), "implicit"),
    ("XPO history", "XPO", dict(alpha=0.01, schedule="inv_sqrt", sampler="history"), "implicit"),
    ("online DPO", "OnlineDPO", {}, "implicit"),
    ("hybrid DPO", "HybridDPO", {}, "implicit"),
    ("offline DPO", "OfflineDPO", {}, "implicit"),
    ("XPO ref, logits+Adam", "XPO", dict(alpha=0.01, schedule="inv_sqrt"), "logits"),
    ("online DPO, logits+Adam", "OnlineDPO", {}, "logits"),
]


def build_configs(quick: bool, seeds: int) -> list[RunConfig]:
    rounds = 10 if quick else 200
    return [
        RunConfig(instance="token_needle", instance_args=dict(vocab=4, horizon=3, eps=EPS, seed=replicate),
                  algorithm=name, algorithm_args=dict(args, batch=BATCH), beta=BETA, rounds=rounds,
                  replicate=replicate, policy=policy, run_args=dict(record="geometric"),
                  group="token_needle", label=label)
        for replicate in range(seeds)
        for label, name, args, policy in ALGORITHMS
    ]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sweep_cli_arguments(parser, default_out="results/regret_curves")
    args = parser.parse_args(argv)
    check_sweep_arguments(parser, args)
    seeds = args.seeds or (2 if args.quick else 8)
    configs = build_configs(args.quick, seeds)
    start = time.perf_counter()
    print(f"regret curves: {len(configs)} runs ({seeds} seeds) -> {args.out}", file=sys.stderr)
    df = execute_sweep(configs, args)
    summary = summarize_runs(queries_to_threshold(df))
    summary.to_csv(Path(args.out) / "summary.csv", index=False)
    figures = Path(args.figures)
    figures.mkdir(parents=True, exist_ok=True)
    title = {("token_needle", EPS): f"token_needle(4, 3, ε = {EPS:g}), β = {BETA}, {BATCH} pairs/round"}
    plot_regret_curves(df, [("token_needle", EPS)], title).savefig(figures / "regret_curves.png", dpi=120)
    plot_coverage(df, "token_needle", EPS).savefig(figures / "regret_curves_coverage.png", dpi=110)
    print(summary[["label", "policy", "runs", "queries_median", "reached", "final_regret_rel", "best_regret_rel"]]
          .to_string(index=False, float_format=lambda x: f"{x:.3g}"))
    print(f"{time.perf_counter() - start:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
