"""XPO's bonus weight α across decades, its schedules, and its samplers.

Instance: bandit_needle(8 responses, ε = 1e-3), β = 0.1, eight pairs per round, 100 rounds
(T = 800 preference queries), Bradley–Terry labels, implicit-reward class with the exact
update. XPO is run with α ∈ {1e-3, 1e-2, 1e-1, 1} under a constant schedule and under
α_t = α/√t, and with the theory's scaling α = β √(log(|Π| T)/(C_cov T)) (C_cov of the class
computed exactly, log|Π| ≈ n_params · log T; xpo_sim.metrics.theory_alpha), which is ≈ 0.01
here. α = 0 is hybrid DPO, drawn as the reference. The sampler variants (ỹ from the current
policy, from the mixture of past iterates) run at α = 0.01/√t.

Outputs: shards and summary.csv in --out; figures/alpha_sweep.png: final regret (relative to
π_ref's) and the fraction of runs reaching 10% of π_ref's regret, against α.

    python experiments/alpha_sweep.py [--quick] [--seeds N] [--workers N]
"""

from __future__ import annotations

import sys
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from xpo_sim import envs  # noqa: E402
from xpo_sim.metrics import coverability, theory_alpha  # noqa: E402
from xpo_sim.sweep import RunConfig, parse_sweep_args, print_summary, run_experiment  # noqa: E402

BETA, EPS, BATCH, N_RESPONSES = 0.1, 1e-3, 8, 8


def build_configs(quick: bool, seeds: int) -> tuple[list[RunConfig], float]:
    rounds = 8 if quick else 100
    alphas = [1e-2, 1.0] if quick else [1e-3, 1e-2, 1e-1, 1.0]
    c_cov = coverability(envs.bandit_needle(N_RESPONSES, EPS), BETA, (0.0, 1.0))
    alpha_theory = theory_alpha(BETA, c_cov, N_RESPONSES, rounds * BATCH)
    variants = [(f"constant α={a:g}", "XPO", dict(alpha=a)) for a in alphas]
    variants += [(f"α={a:g}/√t", "XPO", dict(alpha=a, schedule="inv_sqrt")) for a in alphas]
    variants += [(f"theory α={alpha_theory:.3g}", "XPO", dict(alpha=alpha_theory))]
    variants += [("hybrid DPO (α=0)", "HybridDPO", {})]
    variants += [(f"sampler {s}, α=0.01/√t", "XPO", dict(alpha=0.01, schedule="inv_sqrt", sampler=s))
                 for s in ("current", "history")]
    configs = [
        RunConfig(instance="bandit_needle", instance_args=dict(n_responses=N_RESPONSES, eps=EPS, seed=replicate),
                  algorithm=name, algorithm_args=dict(args, batch=BATCH), beta=BETA, rounds=rounds,
                  replicate=replicate, group="bandit_needle", label=label)
        for replicate in range(seeds)
        for label, name, args in variants
    ]
    return configs, alpha_theory


def alpha_of(label: str) -> float | None:
    for prefix in ("constant α=", "α=", "theory α="):
        if label.startswith(prefix):
            return float(label[len(prefix):].split("/")[0])
    return None


def plot(summary, alpha_theory):
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for column, ax, name in (("final_regret_rel", axes[0], "final regret / regret of π_ref"),
                             ("reached", axes[1], "fraction of runs reaching 10% of π_ref's regret")):
        for prefix, style in (("constant α=", "o-"), ("α=", "s-")):
            rows = summary[summary.label.str.startswith(prefix) & summary.label.str.contains("/√t" if prefix == "α=" else "constant")]
            rows = rows.assign(alpha=rows.label.map(alpha_of)).sort_values("alpha")
            ax.plot(rows.alpha, rows[column], style, label="α_t = α/√t" if prefix == "α=" else "constant α")
        theory = summary[summary.label.str.startswith("theory")]
        ax.plot([alpha_theory], theory[column], "k*", ms=12, label="theory's α (constant)")
        hybrid = summary[summary.label.str.startswith("hybrid")]
        ax.axhline(float(hybrid[column].iloc[0]), color="0.4", ls=":", label="hybrid DPO (α = 0)")
        for label, marker in (("sampler current", "^"), ("sampler history", "v")):
            rows = summary[summary.label.str.startswith(label)]
            ax.plot([0.01], rows[column], marker, ms=9, label=f"{label}, 0.01/√t")
        ax.set_xscale("log")
        ax.set_xlabel("α (bonus weight, TRL convention α·log π(ỹ))")
        ax.set_title(name, fontsize=10)
        ax.grid(alpha=0.3, lw=0.5)
    axes[0].axhline(1.0, color="r", lw=0.6, alpha=0.5)
    axes[1].legend(fontsize=7)
    fig.suptitle(f"XPO on bandit_needle(8, ε={EPS:g}), β={BETA}, {BATCH} pairs/round (mean over seeds)", fontsize=10)
    fig.tight_layout()
    return fig


def main(argv=None) -> int:
    args = parse_sweep_args(__doc__, "results/alpha_sweep", argv)
    start = time.perf_counter()
    seeds = args.seeds or (2 if args.quick else 8)
    configs, alpha_theory = build_configs(args.quick, seeds)
    _, _, summary, figures = run_experiment("alpha sweep", configs, args)
    plot(summary, alpha_theory).savefig(figures / "alpha_sweep.png", dpi=120)
    print_summary(summary, ["label", "runs", "queries_median", "reached", "final_regret_rel", "best_regret_rel"])
    print(f"{time.perf_counter() - start:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
