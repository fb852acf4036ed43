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

import sys
import time

import matplotlib

matplotlib.use("Agg")

from xpo_sim.plotting import plot_coverage, plot_regret_curves  # noqa: E402
from xpo_sim.sweep import RunConfig, parse_sweep_args, print_summary, run_experiment  # noqa: E402

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
    args = parse_sweep_args(__doc__, "results/regret_curves", argv)
    start = time.perf_counter()
    seeds = args.seeds or (2 if args.quick else 8)
    df, _, summary, figures = run_experiment("regret curves", build_configs(args.quick, seeds), args)
    title = {("token_needle", EPS): f"token_needle(4, 3, ε = {EPS:g}), β = {BETA}, {BATCH} pairs/round"}
    plot_regret_curves(df, [("token_needle", EPS)], title).savefig(figures / "regret_curves.png", dpi=120)
    plot_coverage(df, "token_needle", EPS).savefig(figures / "regret_curves_coverage.png", dpi=110)
    print_summary(summary, ["label", "policy", "runs", "queries_median", "reached", "final_regret_rel", "best_regret_rel"])
    print(f"{time.perf_counter() - start:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
