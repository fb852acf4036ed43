"""The headline experiment: how many preference queries each method needs as the reference
policy's mass ε on the optimal response shrinks.

Proposition 2.1 of Xie et al. (2024): when π_ref gives the optimal response mass ε, passive
methods (online, hybrid and offline DPO) need on the order of 1/ε queries just to *see* it,
while XPO's optimism does not depend on ε. Every regret here is exact.

Instances (β = 0.1 unless stated; every response's reward is 1 for the optimal one, 0 else):
  two_arm        two_arm_needle(β): two responses, ε = exp(−1/(2β)); β swept from 0.5 to 0.1
                 (1/ε from 2.7 to 148), one pair per round, 200 rounds. 12 seeds per point.
  bandit_needle  bandit_needle(8, ε): eight responses, ε from 1e-1 to 1e-4, eight pairs a round,
                 125 rounds (1,000 queries).
  token_needle   token_needle(vocab=4, horizon=3, ε): 64 three-token responses, the optimal
                 path's per-token reference probabilities multiply to ε; eight pairs a round,
                 125 rounds.
Algorithms: XPO (Algorithm 1, ỹ ∼ π_ref, bonus α_t = 0.01/√t), online DPO (both responses
from πᵗ), hybrid DPO (πᵗ against π_ref, XPO with α = 0) and offline DPO (every pair from
π_ref, the same number of queries at every round), all with the implicit-reward policy class
(box [0, 1]) and the exact per-round update, Bradley–Terry labels.

Why these instances: the bandits isolate the coverage question (one decision), the tree adds
credit assignment over tokens, and two_arm is the paper's own instance. The decaying α
follows the α sweep (docs/experiments.md): a constant bonus large enough to explore early drives the policy to
arbitrary bad responses later on many-response instances.

Outputs: result shards and summary.csv in --out; in --figures:
  coverage_queries.png    queries to regret ≤ 10% of π_ref's against 1/ε (log-log)
  coverage_regret.png     regret curves at two ε per family (mean and 95% band over seeds)
  coverage_metrics.png    coverage over rounds on token_needle at ε = 1e-3
A rerun skips finished runs (delete --out or pass --force to recompute).

    python experiments/coverage_sweep.py [--quick] [--seeds N] [--workers N] [--out DIR]
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

from xpo_sim.plotting import plot_coverage, plot_queries_vs_inverse_eps, plot_regret_curves  # noqa: E402
from xpo_sim.sweep import RunConfig, parse_sweep_args, print_summary, run_experiment  # noqa: E402

BETA = 0.1
DEFAULT_SEEDS = 12
TITLES = {
    "two_arm": "two_arm_needle(β), β = 0.5 … 0.1, 1 pair/round",
    "bandit_needle": "bandit_needle(8 responses, ε), β = 0.1, 8 pairs/round",
    "token_needle": "token_needle(vocab 4, horizon 3, ε), β = 0.1, 8 pairs/round",
}


def algorithms(batch: int) -> list[tuple[str, str, dict]]:
    """(label, algorithm, arguments) for the four methods compared."""
    return [
        ("XPO (α = 0.01/√t)", "XPO", dict(alpha=0.01, schedule="inv_sqrt", batch=batch)),
        ("online DPO", "OnlineDPO", dict(batch=batch)),
        ("hybrid DPO", "HybridDPO", dict(batch=batch)),
        ("offline DPO", "OfflineDPO", dict(batch=batch)),
    ]


def build_configs(quick: bool, seeds: int) -> list[RunConfig]:
    betas = [0.25, 0.1] if quick else [0.5, 0.33, 0.25, 0.2, 0.15, 0.125, 0.1]
    epsilons = [1e-1, 1e-2] if quick else [1e-1, 1e-2, 1e-3, 1e-4]
    two_arm_rounds, needle_rounds = (30, 8) if quick else (200, 125)
    configs = []
    for replicate in range(seeds):
        for beta in betas:
            for label, name, args in algorithms(batch=1):
                configs.append(RunConfig(
                    instance="two_arm_needle", instance_args=dict(beta=beta), algorithm=name,
                    algorithm_args=args, beta=beta, rounds=two_arm_rounds, replicate=replicate,
                    group="two_arm", label=label,
                ))
        for eps in epsilons:
            for group, instance_args in (
                ("bandit_needle", dict(n_responses=8, eps=eps, seed=replicate)),
                ("token_needle", dict(vocab=4, horizon=3, eps=eps, seed=replicate)),
            ):
                for label, name, args in algorithms(batch=8):
                    configs.append(RunConfig(
                        instance=group, instance_args=instance_args, algorithm=name,
                        algorithm_args=args, beta=BETA, rounds=needle_rounds, replicate=replicate,
                        group=group, label=label,
                    ))
    return configs


def main(argv=None) -> int:
    args = parse_sweep_args(__doc__, "results/coverage_sweep", argv)
    start = time.perf_counter()
    seeds = args.seeds or (2 if args.quick else DEFAULT_SEEDS)
    df, per_run, summary, figures = run_experiment("coverage sweep", build_configs(args.quick, seeds), args)

    groups = ["two_arm", "bandit_needle", "token_needle"]
    plot_queries_vs_inverse_eps(per_run, groups, TITLES).savefig(figures / "coverage_queries.png", dpi=120)
    eps_shown = [1e-2] if args.quick else [1e-2, 1e-3]
    two_arm_betas = [0.1] if args.quick else [0.15, 0.1]
    panels, titles = [], {}
    for beta, eps in zip(two_arm_betas, eps_shown):
        two_arm_eps = math.exp(-1 / (2 * beta))
        titles[("two_arm", two_arm_eps)] = f"two_arm_needle({beta}), ε = {two_arm_eps:.2g}"
        panels += [("two_arm", two_arm_eps), ("bandit_needle", eps), ("token_needle", eps)]
    plot_regret_curves(df, panels, titles).savefig(figures / "coverage_regret.png", dpi=110)
    coverage_eps = 1e-2 if args.quick else 1e-3
    plot_coverage(df, "token_needle", coverage_eps).savefig(figures / "coverage_metrics.png", dpi=110)

    print_summary(summary, ["group", "label", "eps", "runs", "queries_median", "reached", "final_regret_rel"])
    print(f"\nsummary: {Path(args.out) / 'summary.csv'}; figures: {figures}/coverage_*.png; "
          f"{time.perf_counter() - start:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
