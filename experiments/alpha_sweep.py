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
import pandas as pd

matplotlib.use("Agg")

from xpo_sim import envs  # noqa: E402
from xpo_sim.metrics import coverability, theory_alpha  # noqa: E402
from xpo_sim.plotting import plot_alpha_sweep  # noqa: E402
from xpo_sim.sweep import RunConfig, parse_sweep_args, print_summary, run_experiment  # noqa: E402

BETA, EPS, BATCH, N_RESPONSES = 0.1, 1e-3, 8, 8


def variants(quick: bool, alpha_theory: float) -> list[tuple[str, str, dict, dict]]:
    """(label, algorithm, arguments, how to draw it: alpha and series) of every run kind."""
    alphas = [1e-2, 1.0] if quick else [1e-3, 1e-2, 1e-1, 1.0]
    out = [(f"constant α={a:g}", "XPO", dict(alpha=a), dict(alpha=a, series="constant α")) for a in alphas]
    out += [(f"α={a:g}/√t", "XPO", dict(alpha=a, schedule="inv_sqrt"), dict(alpha=a, series="α_t = α/√t"))
            for a in alphas]
    out += [(f"theory α={alpha_theory:.3g}", "XPO", dict(alpha=alpha_theory),
             dict(alpha=alpha_theory, series="theory's α (constant)"))]
    out += [("hybrid DPO (α=0)", "HybridDPO", {}, dict(alpha=0.0, series="hybrid DPO (α = 0)"))]
    out += [(f"sampler {s}, α=0.01/√t", "XPO", dict(alpha=0.01, schedule="inv_sqrt", sampler=s),
             dict(alpha=0.01, series=f"sampler {s}, 0.01/√t")) for s in ("current", "history")]
    return out


def build_configs(quick: bool, seeds: int) -> tuple[list[RunConfig], list]:
    rounds = 8 if quick else 100
    c_cov = coverability(envs.bandit_needle(N_RESPONSES, EPS), BETA, box=(0.0, 1.0))
    kinds = variants(quick, theory_alpha(BETA, c_cov, N_RESPONSES, rounds * BATCH))
    configs = [
        RunConfig(instance="bandit_needle", instance_args=dict(n_responses=N_RESPONSES, eps=EPS, seed=replicate),
                  algorithm=name, algorithm_args=dict(args, batch=BATCH), beta=BETA, rounds=rounds,
                  replicate=replicate, group="bandit_needle", label=label)
        for replicate in range(seeds)
        for label, name, args, _ in kinds
    ]
    return configs, kinds


def main(argv=None) -> int:
    args = parse_sweep_args(__doc__, "results/alpha_sweep", argv)
    start = time.perf_counter()
    seeds = args.seeds or (2 if args.quick else 8)
    configs, kinds = build_configs(args.quick, seeds)
    _, _, summary, figures = run_experiment("alpha sweep", configs, args)
    drawn = pd.DataFrame([dict(label=label, **how) for label, _, _, how in kinds]).merge(summary, on="label")
    title = f"XPO on bandit_needle(8, ε={EPS:g}), β={BETA}, {BATCH} pairs/round (mean over seeds)"
    plot_alpha_sweep(drawn, title).savefig(figures / "alpha_sweep.png", dpi=120)
    print_summary(summary, ["label", "runs", "queries_median", "reached", "final_regret_rel", "best_regret_rel"])
    print(f"{time.perf_counter() - start:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
