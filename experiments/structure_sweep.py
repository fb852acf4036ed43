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
  (c) rate      the quantity XPO's Theorem 3.1 bounds: the average regret (1/T) Σₜ regret(πᵗ)
                of the iterates (``avg_regret``) and, on trees, the exact regret of their
                uniform mixture (``mixture_regret``), one pair a round, T = 1 … 1,000, boxes
                twice as wide as the instances' own (θ* inside the box).
                T axis: the lock (H = 4) and the feature bandit (n = 100), 30 seeds; log-log
                slopes in T fitted to the median and the geometric-mean curve over seeds
                (and to the arithmetic mean, which the slowest seeds dominate: fragile),
                bootstrap 95% intervals over seeds, beside the slope of the theory's
                √(C_cov · log|Π| / T) with the exact C_cov and the proxy log|Π| = d · log T
                (d = the class's number of parameters).
                C_cov axis: ten instances and classes with C_cov from 2 to 64 (the feature
                bandit with d = 2 … 32, the lock with H = 2, 3, 4 in the linear class, bandits
                with 4, 16, 64 responses and a 3 × 3 token tree in the tabular class), 10
                seeds: the measured average regret against √(C_cov · d · log T / T) (a
                collapse plot) and the constant regret / √(C_cov · d · log T / T) at T = 1,000
                per instance, with bootstrap intervals.

Outputs: shards, summary.csv and intervals.csv (parts a and b; 95% Wilson and bootstrap
intervals per grid point), rate.csv (slopes in T) and collapse.csv (the C_cov
axis) of part (c) in --out; in --figures:
  structure_lock.png            queries to 10% against H (a)
  structure_bandit.png          queries to 10% against n (b)
  structure_rate.png            average and mixture regret against T beside the theory (c)
  structure_rate_collapse.png   average regret against √(C_cov d log T / T), and the constants (c)
A rerun skips finished runs (--force recomputes).

    python experiments/structure_sweep.py [--quick] [--seeds N] [--workers N] [--out DIR]

--seeds sets parts a and b (default 5); part (c) uses at least 30 seeds on the T axis and 10
on the C_cov axis (--quick: 3 and 2, T up to 30, a few instances).
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
from xpo_sim.analysis import interval_summary  # noqa: E402
from xpo_sim.intervals import bootstrap_interval, format_interval, slope_interval  # noqa: E402
from xpo_sim.metrics import coverability  # noqa: E402
from xpo_sim.mixture import is_tree  # noqa: E402
from xpo_sim.plotting import fit_loglog_slope, plot_average_rate, plot_queries_vs_size, plot_rate_collapse  # noqa: E402
from xpo_sim.policies import make_policy_class  # noqa: E402
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
RATE_ROUNDS = 1000
RATE_SEEDS, COLLAPSE_SEEDS = 30, 10  # part (c): T axis, C_cov axis (at least; more with --seeds)
FIT_WINDOWS = (10, 100)  # slopes in T are fitted over T >= each of these
# The C_cov axis: the theory's rate √(C_cov · log|Π| / T) across instances and classes whose
# coverability spans 2 … 64 (plus the two T-axis instances). Boxes twice the instances' own
# for the linear class (θ* inside), [0, 2] for the tabular class (rewards in [0, 1)).
COLLAPSE_INSTANCES = {  # group -> (family, arguments, policy, class options, title)
    **{f"cov_fb_d{d}": ("feature_bandit", dict(n_responses=100, d=d, eps=1e-3), "linear", dict(box=(0.0, 2.0)),
                        f"feature_bandit(n = 100, d = {d}), linear") for d in (2, 8, 16, 32)},
    **{f"cov_lock{h}": ("combination_lock", dict(horizon=h, **LOCK), "linear", dict(box=(0.0, 2.0 / h)),
                        f"combination_lock(H = {h}), linear") for h in (2, 3)},
    **{f"cov_tab{n}": ("bandit", dict(n_responses=n), "implicit", dict(box=(0.0, 2.0)),
                       f"bandit({n} responses), tabular") for n in (4, 16, 64)},
    "cov_tree": ("token_tree", dict(vocab=3, horizon=2), "implicit", dict(box=(0.0, 2.0)),
                 "token_tree(vocab 3, H = 2), tabular"),
}
QUICK_COLLAPSE = ["cov_fb_d2", "cov_fb_d8", "cov_tab4", "cov_tab16"]
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
        for group in RATE_INSTANCES:
            add(rate_config(group, replicate, rate_rounds), math.nan)
    return configs, size


def rate_config(group: str, replicate: int, rounds: int) -> RunConfig:
    """Part (c)'s run of XPO (α = 0.01/√t, one pair a round) on the instance ``group`` of
    :data:`RATE_INSTANCES` or :data:`COLLAPSE_INSTANCES` (the instance drawn with seed
    ``replicate``), rows on the geometric grid of rounds."""
    if group in RATE_INSTANCES:
        instance, instance_args, box, _ = RATE_INSTANCES[group]
        policy, options, cls = "linear", dict(box=box), "linear"
    else:
        instance, instance_args, policy, options, _ = COLLAPSE_INSTANCES[group]
        cls = "linear" if policy == "linear" else "tabular"
    return RunConfig(instance=instance, instance_args=dict(seed=replicate, **instance_args), algorithm="XPO",
                     algorithm_args=dict(alpha=0.01, schedule="inv_sqrt", batch=1), beta=BETA, rounds=rounds,
                     replicate=replicate, policy=policy,
                     run_args=dict(max_enumerate=0, record="geometric", **options), group=group,
                     label=f"XPO · {cls}")


def rate_configs(quick: bool, rate_seeds: int, collapse_seeds: int) -> list[RunConfig]:
    """Part (c): the T axis (:data:`RATE_INSTANCES`, ``rate_seeds`` seeds) and the C_cov axis
    (:data:`COLLAPSE_INSTANCES`, ``collapse_seeds`` seeds; a few of them with ``quick``)."""
    rounds = 30 if quick else RATE_ROUNDS
    groups = QUICK_COLLAPSE if quick else list(COLLAPSE_INSTANCES)
    return ([rate_config(g, r, rounds) for r in range(rate_seeds) for g in RATE_INSTANCES]
            + [rate_config(g, r, rounds) for r in range(collapse_seeds) for g in groups])


def rate_table(df: pd.DataFrame, seeds: int) -> tuple[pd.DataFrame, dict, dict]:
    """The earlier best-iterate view of part (c) (the function approximation notebook draws
    it; the script reports :func:`rate_slopes` and :func:`collapse_table`): mean best-iterate
    regret per T, the theory curve per rate instance (exact C_cov of the linear class,
    averaged over the seeds' instances) and a one-row-per-instance table."""
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


QUANTITIES = {"avg_regret": "average regret (1/T) Σ regret(πᵗ)", "mixture_regret": "regret of unif(π¹…π^T)",
              "regret": "last iterate's regret", "best_regret": "best iterate's regret (oracle choice)"}
AGGREGATES = ("median", "geomean", "mean")


def _instance_of(group: str, seed: int):
    if group in RATE_INSTANCES:
        instance, instance_args, box, title = RATE_INSTANCES[group]
        return getattr(envs, instance)(seed=seed, **instance_args), "linear", dict(box=box), title
    instance, instance_args, policy, options, title = COLLAPSE_INSTANCES[group]
    return getattr(envs, instance)(seed=seed, **instance_args), policy, options, title


def class_constants(group: str, seeds) -> dict:
    """C_cov (exact, averaged over the seeds' instances) and d, the class's number of
    parameters (log|Π| ≈ d log T), of the class part (c) runs on ``group``."""
    values, d = [], 0
    for seed in seeds:
        mdp, policy, options, title = _instance_of(group, int(seed))
        values.append(coverability(mdp, BETA, policy=policy, **options))
        d = make_policy_class(mdp, BETA, policy, **options).n_params
    return dict(title=title, c_cov=float(np.mean(values)), c_cov_spread=float(np.ptp(values)), d=int(d),
                tree=is_tree(mdp), policy=policy)


def bound(c_cov: float, d: int, ts) -> np.ndarray:
    """The theory's rate without its constants, √(C_cov · log|Π| / T) with log|Π| = d · log T."""
    ts = np.asarray(ts, dtype=float)
    return np.sqrt(c_cov * d * np.log(ts) / ts)


def seed_curves(df: pd.DataFrame, group: str, column: str, seeds=None) -> tuple[np.ndarray, np.ndarray]:
    """(T, curves): the queries T ≥ 3 of the rows (log T ≥ 1, where the proxy d log T means
    something) and ``column`` per seed on them, an array (seeds, points); rows of ``seeds``
    only when given."""
    sub = df[(df.group == group) & (df.pairs >= 3)]
    if seeds is not None:
        sub = sub[sub.replicate.isin(list(seeds))]
    table = sub.pivot_table(index="replicate", columns="pairs", values=column, aggfunc="first").sort_index()
    return table.columns.to_numpy(dtype=float), table.to_numpy(dtype=float)


def rate_slopes(df: pd.DataFrame, constants: dict) -> pd.DataFrame:
    """Part (c), T axis: for each instance of :data:`RATE_INSTANCES`, quantity of
    :data:`QUANTITIES` (the mixture on trees only), fit window T ≥ t₀ of :data:`FIT_WINDOWS`
    and aggregate over seeds (median, geometric mean, arithmetic mean), the log-log slope in
    T with its bootstrap 95% interval over seeds, beside the slope of :func:`bound` over the
    same T."""
    rows = []
    for group in RATE_INSTANCES:
        c = constants[group]
        for quantity in QUANTITIES:
            ts, curves = seed_curves(df, group, quantity)
            if not np.isfinite(curves).all() or ts.size < 2:
                continue  # the mixture off trees (NaN)
            for start in FIT_WINDOWS:
                keep = ts >= start
                if keep.sum() < 3:
                    continue
                x, y = ts[keep], np.maximum(curves[:, keep], 1e-300)  # a regret of exactly 0 (never seen) has no log
                theory = float(np.polyfit(np.log(x), np.log(bound(c["c_cov"], c["d"], x)), 1)[0])
                for aggregate in AGGREGATES:
                    slope, low, high = slope_interval(x, y, aggregate=aggregate)
                    rows.append(dict(group=group, instance=c["title"], quantity=quantity, fit_from=start,
                                     T_max=int(ts.max()), seeds=curves.shape[0], aggregate=aggregate, slope=slope,
                                     low=low, high=high, theory_slope=theory))
    return pd.DataFrame(rows)


def collapse_table(df: pd.DataFrame, constants: dict, seeds: int) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Part (c), C_cov axis, over every rate and collapse instance run (seeds 0 … ``seeds``−1
    of each): per instance C_cov, d, the bound B(T) = √(C_cov · d · log T / T) at T_max,
    the median average regret there and the constant regret/B per seed (median, bootstrap
    95% interval), π_ref's regret (median) and the average regret relative to it, the
    mixture's regret where the instance is a tree, and the median curve's slope in T
    (T ≥ 10). Also the median curves for the collapse plot, and the across-instance fit
    regret(T_max) ∝ B(T_max)^γ (γ = 1 if the bound's dependence on C_cov · d holds; its
    interval resamples the seeds of every instance)."""
    rows, curves_out, finals, bounds = [], [], [], []
    for group, c in constants.items():
        ts, avg = seed_curves(df, group, "avg_regret", range(seeds))
        if avg.size == 0:
            continue
        _, mixture = seed_curves(df, group, "mixture_regret", range(seeds))
        b = bound(c["c_cov"], c["d"], ts)
        ratio = avg[:, -1] / b[-1]
        first = df[(df.group == group) & (df["round"] == 0) & df.replicate.isin(list(range(seeds)))]
        row = dict(group=group, instance=c["title"], policy=c["policy"], c_cov=c["c_cov"], d=c["d"], seeds=avg.shape[0],
                   T_max=int(ts[-1]), bound_T_max=float(b[-1]), ref_regret=float(first.regret.median()),
                   avg_over_ref=float(np.median(avg[:, -1] / first.sort_values("replicate").regret.to_numpy())))
        for name, values in (("avg_regret", avg[:, -1]), ("constant", ratio)):
            est, low, high = bootstrap_interval(values, "median")
            row.update({name: est, f"{name}_low": low, f"{name}_high": high})
        if c["tree"]:
            est, low, high = bootstrap_interval(mixture[:, -1], "median")
            row.update(mixture_regret=est, mixture_regret_low=low, mixture_regret_high=high)
        keep = ts >= FIT_WINDOWS[0]
        if keep.sum() >= 3:
            row.update(zip(("slope_T", "slope_T_low", "slope_T_high"),
                           slope_interval(ts[keep], np.maximum(avg[:, keep], 1e-300), aggregate="median")))
        rows.append(row)
        median = np.median(avg, axis=0)
        curves_out.append(pd.DataFrame(dict(group=group, instance=c["title"], policy=c["policy"], c_cov=c["c_cov"],
                                            pairs=ts, bound=b, median=median,
                                            q25=np.quantile(avg, 0.25, axis=0), q75=np.quantile(avg, 0.75, axis=0))))
        finals.append(avg[:, -1])
        bounds.append(b[-1])
    table = pd.DataFrame(rows)
    fit = {}
    n = min((len(f) for f in finals), default=0)
    if len(finals) >= 2 and n >= 1:
        order = np.argsort(bounds)
        x = np.array(bounds)[order]
        y = np.column_stack([finals[i][:n] for i in order])
        fit = dict(zip(("gamma", "gamma_low", "gamma_high"), slope_interval(x, y, aggregate="median")),
                   instances=len(finals), seeds=n)
    return table, pd.concat(curves_out, ignore_index=True) if curves_out else pd.DataFrame(), fit


def average_rate_curves(df: pd.DataFrame) -> pd.DataFrame:
    """Median and quartiles over seeds of the average and the mixture regret per T on the
    T-axis instances (the rows the T-axis figure draws)."""
    out = []
    for group in RATE_INSTANCES:
        for quantity in ("avg_regret", "mixture_regret", "regret"):
            ts, curves = seed_curves(df, group, quantity)
            if curves.size == 0 or not np.isfinite(curves).all():
                continue
            out.append(pd.DataFrame(dict(group=group, quantity=quantity, pairs=ts, median=np.median(curves, axis=0),
                                         q25=np.quantile(curves, 0.25, axis=0), q75=np.quantile(curves, 0.75, axis=0))))
    return pd.concat(out, ignore_index=True)


def main(argv=None) -> int:
    args = parse_sweep_args(__doc__, "results/structure_sweep", argv)
    start = time.perf_counter()
    seeds = args.seeds or (1 if args.quick else DEFAULT_SEEDS)
    rate_seeds = max(seeds, 3 if args.quick else RATE_SEEDS)
    collapse_seeds = max(seeds, 2 if args.quick else COLLAPSE_SEEDS)
    configs, size = build_configs(args.quick, seeds)
    configs += [c for c in rate_configs(args.quick, rate_seeds, collapse_seeds) if c.key not in size]
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

    def named(frame: pd.DataFrame) -> pd.DataFrame:
        family = {"lock": "combination_lock(H = {})", "bandit": "feature_bandit(n = {})"}
        return frame.assign(instance=[family[g].format(int(v)) for g, v in zip(frame.group, frame["size"])])

    table = named(table)
    table.to_csv(Path(args.out) / "summary.csv", index=False)
    # parts a and b's intervals per grid point (run_experiment's pool the sizes of the bandit, whose ε is one)
    named(interval_summary(sized, keys=["group", "label", "size"])).to_csv(Path(args.out) / "intervals.csv",
                                                                            index=False)

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

    out = Path(args.out)
    groups = [g for g in (*RATE_INSTANCES, *COLLAPSE_INSTANCES) if (df.group == g).any()]
    constants = {g: class_constants(g, sorted(df[df.group == g].replicate.unique())) for g in groups}
    rates = rate_slopes(df, constants)
    rates.to_csv(out / "rate.csv", index=False)
    collapse, collapse_curves, fit = collapse_table(df, constants, collapse_seeds)
    collapse.to_csv(out / "collapse.csv", index=False)
    pd.DataFrame([fit]).to_csv(out / "collapse_fit.csv", index=False)

    curves = average_rate_curves(df)
    theory, labels, titles = {}, {}, {}
    for group in RATE_INSTANCES:
        c = constants[group]
        ts = np.sort(curves[curves.group == group].pairs.unique())
        theory[group] = (ts, bound(c["c_cov"], c["d"], ts))
        window = FIT_WINDOWS[-1] if ts.max() >= 10 * FIT_WINDOWS[-1] else FIT_WINDOWS[0]
        titles[group] = (f"{RATE_INSTANCES[group][3]}\nXPO (α = 0.01/√t), linear class, {rate_seeds} seeds; "
                         f"slopes over T ≥ {window} [95% bootstrap]")
        fitted = rates[(rates.group == group) & (rates.fit_from == window)]
        for quantity in ("avg_regret", "mixture_regret", "regret"):
            one = fitted[fitted.quantity == quantity].set_index("aggregate")
            if one.empty:
                continue
            name = {"avg_regret": "average regret", "mixture_regret": "mixture's regret",
                    "regret": "last iterate"}[quantity]
            median = format_interval(tuple(one.loc["median", ["slope", "low", "high"]]))
            labels[(group, quantity)] = f"{name}: slope {median} (median), {one.loc['geomean', 'slope']:.2f} (geo. mean)"
        theory_slope = fitted.theory_slope.iloc[0] if len(fitted) else math.nan
        labels[(group, "bound")] = (f"√(C_cov·d·log T/T), C_cov = {c['c_cov']:.2f}, d = {c['d']} "
                                    f"(slope {theory_slope:.2f})")
    plot_average_rate(curves, theory, titles, labels, fit_from=window).savefig(figures / "structure_rate.png", dpi=120,
                                                                               bbox_inches="tight")
    collapse_title = (f"XPO (α = 0.01/√t), β = {BETA}, one pair a round, T ≤ {int(collapse.T_max.max())}, "
                      f"{collapse_seeds} seeds per instance")
    if fit:
        collapse_title += (f"; across instances regret(T_max) ∝ bound^γ, γ = "
                           f"{format_interval((fit['gamma'], fit['gamma_low'], fit['gamma_high']))} (theory: 1)")
    plot_rate_collapse(collapse_curves, collapse, collapse_title).savefig(figures / "structure_rate_collapse.png",
                                                                         dpi=120, bbox_inches="tight")

    print_summary(table, ["group", "label", "size", "runs", "queries_median", "reached", "final_regret_rel",
                          "best_regret_rel"])
    print("\n(c) slopes in T (bootstrap 95% intervals over seeds; the arithmetic mean is fragile):")
    shown = rates.assign(fit=[format_interval((a, b, c)) for a, b, c in zip(rates.slope, rates.low, rates.high)])
    wide = shown.pivot_table(index=["instance", "quantity", "fit_from", "theory_slope"], columns="aggregate",
                             values="fit", aggfunc="first").reset_index()
    print(wide.to_string(index=False))
    print("\n(c) the C_cov axis (medians over seeds at T_max, bootstrap 95% intervals):")
    shown = collapse.assign(
        avg=[format_interval((a, b, c)) for a, b, c in zip(collapse.avg_regret, collapse.avg_regret_low,
                                                           collapse.avg_regret_high)],
        const=[format_interval((a, b, c)) for a, b, c in zip(collapse.constant, collapse.constant_low,
                                                             collapse.constant_high)],
        slope=[format_interval((a, b, c)) if np.isfinite(a) else "" for a, b, c in
               zip(collapse.get("slope_T", np.nan), collapse.get("slope_T_low", np.nan),
                   collapse.get("slope_T_high", np.nan))])
    print_summary(shown, ["instance", "c_cov", "d", "bound_T_max", "ref_regret", "avg", "avg_over_ref", "const",
                          "slope"])
    if fit:
        print(f"across {fit['instances']} instances: regret(T_max) ∝ bound^γ, γ = "
              f"{format_interval((fit['gamma'], fit['gamma_low'], fit['gamma_high']))} "
              f"(1 if the bound's C_cov·d held)")
    print(f"\nsummary: {out / 'summary.csv'}, {out / 'rate.csv'}, {out / 'collapse.csv'}; "
          f"figures: {figures}/structure_*.png; {time.perf_counter() - start:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
