"""Exploration with function approximation: does XPO's sample efficiency follow the
coverability of the policy *class* rather than π_ref's mass on the optimum or the number of
responses?

Three parts, every regret exact, β = 0.1, Bradley–Terry labels, the exact per-round argmin:
  (a) lock      combination_lock(H, vocab 4, p_correct 0.2), H = 2 … 10: π_ref's mass on the
                optimal response is 0.2^H (down to 1e-7). Queries to 10% of π_ref's regret
                against H for XPO (α = 0.01/√t), online, hybrid and offline DPO, in the
                linear class (one reward weight per level, box [0, 1/H], C_cov ≈ 3 whatever
                H) and in the tabular DAG class (a reward parameter on every state-action,
                support "all", box [0, 1/H]); 4 pairs a round, 100 rounds. p^{−H} drawn.
  (b) bandit    feature_bandit(n, d = 4, ε = 1e-3), n = 10² … 10⁵ responses in 3 clusters
                plus the needle: queries against n for XPO and hybrid DPO, linear class
                (C_cov ≤ d) against the tabular class (one parameter per response; run up
                to n = 10⁴ only — a tabular run at 10⁵ costs about 100 s on this code).
  (c) rate      XPO's measured best-iterate regret against T on the lock (H = 4) and the
                feature bandit (n = 100), one pair a round, 1,000 rounds, with boxes twice
                as wide as the instances' own (so θ* is inside), beside the theory's
                √(C_cov · log|Π| / T) with the exact C_cov of the linear class and the proxy
                log|Π| = d · log T (a grid of T values per parameter); fitted log-log slopes.

Outputs: shards, summary.csv (parts a and b) and rate.csv (part c) in --out; in --figures:
  structure_lock.png      queries to 10% against H (a)
  structure_bandit.png    queries to 10% against n (b)
  structure_rate.png      regret against T beside the theory (c)
A rerun skips finished runs (--force recomputes).

    python experiments/structure_sweep.py [--quick] [--seeds N] [--workers N] [--out DIR]
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from xpo_sim import envs  # noqa: E402
from xpo_sim.metrics import coverability  # noqa: E402
from xpo_sim.plotting import fit_loglog_slope, plot_queries_vs_size, plot_rate  # noqa: E402
from xpo_sim.sweep import RunConfig, parse_sweep_args, print_summary, run_experiment  # noqa: E402

BETA = 0.1
DEFAULT_SEEDS = 5
LOCK = dict(vocab=4, p_correct=0.2)
BANDIT = dict(d=4, eps=1e-3)
TABULAR_MAX_N = 10_000
# (c) uses boxes twice as wide as the instances' own: with the default box θ* is its upper
# corner, where XPO's optimism alone lands exactly (regret 0 to rounding), which says nothing
# about a rate; with θ* inside the box the data must pin it down.
RATE_INSTANCES = {  # group -> (family, arguments, box, title)
    "rate_lock": ("combination_lock", dict(horizon=4, **LOCK), (0.0, 0.5),
                  "combination_lock(H = 4, vocab 4, p = 0.2), box [0, 2/H]"),
    "rate_bandit": ("feature_bandit", dict(n_responses=100, **BANDIT), (0.0, 2.0),
                    "feature_bandit(n = 100, d = 4, ε = 1e-3), box [0, 2]"),
}
CLASSES = {  # label suffix -> (policy, run_args)
    "linear": ("linear", {}),
    "tabular": ("implicit", dict(support="all")),
}


def methods(batch: int, passive_all: bool = True) -> list[tuple[str, str, dict]]:
    chosen = [("XPO", "XPO", dict(alpha=0.01, schedule="inv_sqrt", batch=batch)),
              ("hybrid DPO", "HybridDPO", dict(batch=batch))]
    if passive_all:
        chosen += [("online DPO", "OnlineDPO", dict(batch=batch)), ("offline DPO", "OfflineDPO", dict(batch=batch))]
    return chosen


def build_configs(quick: bool, seeds: int) -> tuple[list[RunConfig], dict[str, float]]:
    """The configs of parts a–c and each config's instance size (H or n) by key."""
    horizons = [2, 3] if quick else list(range(2, 11))
    sizes_n = [100, 1000] if quick else [100, 1000, 10_000, 100_000]
    rounds, rate_rounds = (10, 30) if quick else (100, 1000)
    configs, size = [], {}

    def add(config, value):
        configs.append(config)
        size[config.key] = value

    for replicate in range(seeds):
        for horizon in horizons:
            for cls, (policy, run_args) in CLASSES.items():
                for name, algorithm, args in methods(batch=4):
                    add(RunConfig(instance="combination_lock", instance_args=dict(horizon=horizon, seed=replicate, **LOCK),
                                  algorithm=algorithm, algorithm_args=args, beta=BETA, rounds=rounds,
                                  replicate=replicate, policy=policy, run_args=dict(max_enumerate=0, **run_args),
                                  group="lock", label=f"{name} · {cls}"), horizon)
        for n in sizes_n:
            for cls, (policy, run_args) in CLASSES.items():
                if cls == "tabular" and n > TABULAR_MAX_N:
                    continue
                for name, algorithm, args in methods(batch=4, passive_all=False):
                    add(RunConfig(instance="feature_bandit", instance_args=dict(n_responses=n, seed=replicate, **BANDIT),
                                  algorithm=algorithm, algorithm_args=args, beta=BETA, rounds=rounds,
                                  replicate=replicate, policy=policy, run_args=dict(max_enumerate=0, **run_args),
                                  group="bandit", label=f"{name} · {cls}"), n)
        for group, (instance, instance_args, box, _) in RATE_INSTANCES.items():
            add(RunConfig(instance=instance, instance_args=dict(seed=replicate, **instance_args), algorithm="XPO",
                          algorithm_args=dict(alpha=0.01, schedule="inv_sqrt", batch=1), beta=BETA,
                          rounds=rate_rounds, replicate=replicate, policy="linear",
                          run_args=dict(max_enumerate=0, record="geometric", box=box), group=group,
                          label="XPO · linear"),
                math.nan)
    return configs, size


def rate_table(df: pd.DataFrame, seeds: int) -> tuple[pd.DataFrame, dict, dict]:
    """Mean best-iterate regret per T, the theory curve per rate instance (exact C_cov of
    the linear class, averaged over the seeds' instances) and a one-row-per-instance table."""
    curves = df[df.group.isin(list(RATE_INSTANCES))].groupby(["group", "pairs"], as_index=False).best_regret.mean()
    theory, rows = {}, []
    for group, (instance, instance_args, box, title) in RATE_INSTANCES.items():
        mdps = [getattr(envs, instance)(seed=s, **instance_args) for s in range(seeds)]
        c_cov = float(np.mean([coverability(m, BETA, policy="linear", box=box) for m in mdps]))
        d = mdps[0].n_features
        sub = curves[(curves.group == group) & (curves.pairs > 0)]
        ts = sub.pairs.to_numpy(dtype=float)
        ts = ts[ts >= 3]  # log T ≥ 1: below that the proxy log|Π| = d log T is meaningless
        bound = np.sqrt(c_cov * d * np.log(ts) / ts)
        theory[group] = (ts, bound)
        fit = sub[sub.pairs >= 10]
        rows.append(dict(group=group, instance=title, c_cov=c_cov, d=d, T_max=int(ts.max()),
                         final_best_regret=float(sub.best_regret.iloc[-1]),
                         measured_slope=fit_loglog_slope(fit.pairs, fit.best_regret),
                         theory_slope=fit_loglog_slope(ts[ts >= 10], bound[ts >= 10])))
    return curves, theory, pd.DataFrame(rows)


def main(argv=None) -> int:
    args = parse_sweep_args(__doc__, "results/structure_sweep", argv)
    start = time.perf_counter()
    seeds = args.seeds or (1 if args.quick else DEFAULT_SEEDS)
    configs, size = build_configs(args.quick, seeds)
    df, per_run, _, figures = run_experiment("structure sweep", configs, args)
    per_run = per_run.assign(size=per_run.key.map(size))
    sized = per_run[per_run.group.isin(["lock", "bandit"])]
    table = sized.assign(
        hit=~sized.censored.astype(bool), final_rel=sized.final_regret / sized.ref_regret,
        best_rel=sized.best_regret / sized.ref_regret,
    ).groupby(["group", "label", "size"]).agg(
        runs=("queries", "size"), queries_median=("queries", "median"), reached=("hit", "mean"),
        final_regret_rel=("final_rel", "mean"), best_regret_rel=("best_rel", "mean"),
    ).reset_index()
    table.to_csv(Path(args.out) / "summary.csv", index=False)

    horizons = np.array(sorted(per_run[per_run.group == "lock"]["size"].unique()), dtype=float)
    ns = np.array(sorted(per_run[per_run.group == "bandit"]["size"].unique()), dtype=float)
    budget = per_run[per_run.group == "lock"].budget.max()
    panels = [dict(group="lock", x="size", xlabel="levels H (π_ref(optimum) = 0.2^H)",
                   title=f"combination_lock(H, vocab 4, p 0.2), β = {BETA}, 4 pairs/round, {seeds} seeds",
                   references={"p^{-H}/2: passive prediction": (horizons, np.minimum(0.5 * 0.2 ** -horizons, 3 * budget))})]
    plot_queries_vs_size(per_run, panels).savefig(figures / "structure_lock.png", dpi=120)
    panels = [dict(group="bandit", x="size", xlabel="responses n", logx=True,
                   title=f"feature_bandit(n, d = 4, ε = 1e-3), β = {BETA}, 4 pairs/round, {seeds} seeds",
                   references={"1/(2ε)": (ns, np.full(ns.shape, 0.5 / BANDIT["eps"]))})]
    plot_queries_vs_size(per_run, panels).savefig(figures / "structure_bandit.png", dpi=120)

    curves, theory, rates = rate_table(df, seeds)
    rates.to_csv(Path(args.out) / "rate.csv", index=False)
    titles = {g: f"XPO (α = 0.01/√t), linear class,\n{t}, {seeds} seeds" for g, (*_, t) in RATE_INSTANCES.items()}
    plot_rate(curves, theory, titles).savefig(figures / "structure_rate.png", dpi=120)

    print_summary(table, ["group", "label", "size", "runs", "queries_median", "reached", "final_regret_rel",
                          "best_regret_rel"])
    print()
    print_summary(rates, ["instance", "c_cov", "d", "T_max", "final_best_regret", "measured_slope", "theory_slope"])
    print(f"\nsummary: {Path(args.out) / 'summary.csv'}, {Path(args.out) / 'rate.csv'}; "
          f"figures: {figures}/structure_*.png; {time.perf_counter() - start:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
