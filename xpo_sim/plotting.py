r"""Figures from tidy result tables (matplotlib; each function returns a Figure).

* :func:`plot_queries_vs_inverse_eps` — preference queries needed to reach a regret of at
  most 10% of π_ref's against 1/ε on log-log axes: median and interquartile band per
  algorithm, medians that are censored at the budget drawn as open markers on the budget
  line, and the passive-exploration prediction 1/(2ε) (expected queries until one of the two
  responses of a π_ref-sampled pair is the optimal one) as a dashed slope-1 line.
* :func:`plot_regret_curves` — regret against queries, mean and 95% band (±1.96 standard
  errors) over seeds.
* :func:`plot_method_table` — per method and instance, the mean final regret relative to
  π_ref's (bars) and the fraction of runs that reached 10% of π_ref's regret (labels).
* :func:`plot_alpha_sweep` — final regret (relative to π_ref's) and the fraction of runs
  reaching 10% of π_ref's regret against XPO's α, one line per schedule, single points for
  other variants, a dotted line for α = 0.
* :func:`plot_queries_vs_size` — queries to 10% of π_ref's regret against an instance-size
  column (levels H of a lock, responses n of a bandit), one line per label, censored medians
  open, with optional reference curves (e.g. p^{−H}).
* :func:`plot_rate` — best-iterate regret against queries T on log-log axes beside the
  theory's √(C_cov · log|Π| / T), with the fitted slopes in the legend.
* :func:`plot_reward_scale` — queries to 10% of π_ref's regret against the reward range
  R_max (median and interquartile band per method, censored medians open, an e^{2 R_max}
  reference line through one method's first median) and the fraction of runs that get there.
* :func:`plot_scorecard_radar`, :func:`plot_scorecard_bars`, :func:`plot_scorecard_experiments`
  — the exploration scorecard (:mod:`xpo_sim.scorecard`): one polygon per algorithm over the
  properties, the same scores as bars, and per experiment the share of seeds that solved
  each setting and the queries it took.
* :func:`plot_coverage` — coverage over queries: π*-mass on responses in the data, the data's
  log-concentrability log max_τ π*(τ)/μ̄ₜ(τ) (median over seeds; +inf not drawn), and the
  number of distinct responses seen.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

__all__ = ["plot_queries_vs_inverse_eps", "plot_regret_curves", "plot_coverage", "plot_method_table",
           "plot_alpha_sweep", "plot_queries_vs_size", "plot_rate", "plot_reward_scale", "fit_loglog_slope",
           "label_colors", "plot_scorecard_radar", "plot_scorecard_bars", "plot_scorecard_experiments", "plot_box_sweep"]

_PALETTE = ["#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#7f7f7f"]



def _query_stats(per_run, x: str):
    """Per value of the column ``x``: median and quartiles of the queries to the threshold,
    and the fraction of runs that reached it (not censored)."""
    return per_run.groupby(x).agg(
        median=("queries", "median"),
        q25=("queries", lambda q: np.quantile(q, 0.25)),
        q75=("queries", lambda q: np.quantile(q, 0.75)),
        reached=("censored", lambda c: np.mean(~c.astype(bool))),
    ).sort_index()

def label_colors(labels) -> dict[str, str]:
    """A stable colour per algorithm label (XPO variants first, in red tones)."""
    ordered = sorted(dict.fromkeys(labels), key=lambda s: (not s.startswith("XPO"), s))
    palette = _PALETTE
    if len(ordered) > len(_PALETTE):  # no colour twice: matplotlib's 20 categorical colours
        from matplotlib import colormaps

        palette = [_hex(c) for c in colormaps["tab20"].colors]
    return {label: palette[i % len(palette)] for i, label in enumerate(ordered)}


def _hex(rgb) -> str:
    """An (r, g, b) triple in [0, 1] as a hex colour string."""
    return "#" + "".join(f"{round(255 * c):02x}" for c in rgb[:3])


def _pyplot():
    import matplotlib.pyplot as plt

    return plt


def plot_queries_vs_inverse_eps(per_run: pd.DataFrame, groups=None, titles=None, fraction: float = 0.1):
    """One panel per group; ``per_run`` from :func:`xpo_sim.analysis.queries_to_threshold`."""
    plt = _pyplot()
    groups = list(dict.fromkeys(per_run.group)) if groups is None else list(groups)
    colors = label_colors(per_run.label)
    fig, axes = plt.subplots(1, len(groups), figsize=(5.2 * len(groups), 4.4), squeeze=False)
    for ax, group in zip(axes[0], groups):
        runs = per_run[per_run.group == group]
        budget = runs.budget.max()
        for label, sub in runs.groupby("label", sort=False):
            stats = sub.groupby("eps").agg(
                median=("queries", "median"),
                q25=("queries", lambda q: np.quantile(q, 0.25)),
                q75=("queries", lambda q: np.quantile(q, 0.75)),
                reached=("censored", lambda c: np.mean(~c.astype(bool))),
            ).sort_index(ascending=False)
            x = 1.0 / stats.index.to_numpy()
            color = colors[label]
            ax.plot(x, stats["median"], "-", color=color, label=label, lw=1.8)
            ax.fill_between(x, stats.q25, stats.q75, color=color, alpha=0.15, lw=0)
            censored = stats.reached < 0.5
            ax.plot(x[~censored], stats["median"][~censored], "o", color=color, ms=5)
            ax.plot(x[censored], stats["median"][censored], "o", mfc="white", color=color, ms=6)
        inv_eps = np.geomspace((1 / runs.eps).min(), (1 / runs.eps).max(), 50)
        ax.plot(inv_eps, inv_eps / 2, "k--", lw=1, label="1/(2ε): passive prediction")
        ax.axhline(budget, color="0.5", ls=":", lw=1)
        ax.text(inv_eps[0], budget * 1.08, f"budget {budget} (open marker: median censored)", fontsize=7, color="0.35")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("1/ε  (ε = π_ref's mass on the optimal response)")
        ax.set_ylabel(f"queries to regret ≤ {fraction:.0%} of π_ref's")
        ax.set_title((titles or {}).get(group, group), fontsize=10)
        ax.set_ylim(top=budget * 2)
        ax.grid(alpha=0.3, which="both", lw=0.5)
    axes[0][0].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


def plot_regret_curves(df: pd.DataFrame, panels, titles=None):
    """``panels``: list of (group, eps) pairs; regret vs queries, mean ± 95% band."""
    plt = _pyplot()
    colors = label_colors(df.label)
    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.2 * ncols, 3.9 * nrows), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for ax, (group, eps) in zip(axes.flat, panels):
        sub = df[(df.group == group) & np.isclose(df.eps, eps, rtol=1e-9)]
        for label, runs in sub.groupby("label", sort=False):
            stats = runs.groupby("pairs").regret.agg(["mean", "std", "count"])
            half = 1.96 * stats["std"].fillna(0) / np.sqrt(stats["count"])
            x = stats.index.to_numpy()
            ax.plot(x, stats["mean"], color=colors[label], label=label, lw=1.6)
            ax.fill_between(x, stats["mean"] - half, stats["mean"] + half, color=colors[label], alpha=0.15, lw=0)
        if len(sub):
            ref = sub[sub["round"] == 0].regret.mean()
            ax.axhline(ref, color="0.4", ls=":", lw=1, label="π_ref")
            ax.axhline(0.1 * ref, color="0.6", ls="--", lw=0.8, label="10% of π_ref")
        ax.set_xscale("symlog", linthresh=10)
        ax.set_xlim(left=0)
        ax.set_xlabel("preference queries")
        ax.set_ylabel("regret  J(π*) − J(πᵗ)")
        ax.set_title((titles or {}).get((group, eps), f"{group}, ε = {eps:.0e}"), fontsize=10)
        ax.grid(alpha=0.3, lw=0.5)
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_coverage(df: pd.DataFrame, group: str, eps: float, title: str | None = None):
    """Coverage metrics over queries for one instance (median over seeds)."""
    plt = _pyplot()
    colors = label_colors(df.label)
    sub = df[(df.group == group) & np.isclose(df.eps, eps, rtol=1e-9)]
    metrics = [
        ("seen_star_mass", "π*-mass on responses in the data"),
        ("log_concentrability", "log max_τ π*(τ)/μ̄ₜ(τ)"),
        ("distinct_seen", "distinct responses seen"),
    ]
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.9))
    for ax, (column, name) in zip(axes, metrics):
        for label, runs in sub.groupby("label", sort=False):
            med = runs.groupby("pairs")[column].median()
            y = np.array(med.to_numpy(dtype=float))
            y[~np.isfinite(y)] = math.nan
            ax.plot(med.index, y, color=colors[label], label=label, lw=1.6)
        ax.set_xscale("symlog", linthresh=10)
        ax.set_xlim(left=0)
        ax.set_xlabel("preference queries")
        ax.set_title(name, fontsize=10)
        ax.grid(alpha=0.3, lw=0.5)
    axes[0].legend(fontsize=7)
    fig.suptitle(title or f"coverage, {group}, ε = {eps:.0e} (median over seeds; +inf not drawn)", fontsize=10)
    fig.tight_layout()
    return fig


def plot_method_table(summary: pd.DataFrame, panels, titles=None):
    """``panels``: list of (group, eps); one horizontal bar chart each, methods in the order
    they first appear in ``summary``."""
    plt = _pyplot()
    labels = list(dict.fromkeys(summary.label))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.3 * len(panels), 0.36 * len(labels) + 1.6),
                             sharey=True, squeeze=False)
    for ax, (group, eps) in zip(axes[0], panels):
        sub = summary[(summary.group == group) & np.isclose(summary.eps, eps, rtol=1e-9)].set_index("label")
        y = np.arange(len(labels))
        values = [float(sub.final_regret_rel.get(label, math.nan)) for label in labels]
        colors = ["#d62728" if label.startswith("XPO") else "#1f77b4" for label in labels]
        ax.barh(y, values, color=colors, alpha=0.75)
        for yi, label, value in zip(y, labels, values):
            if label in sub.index and math.isfinite(value):
                ax.text(value, yi, f" {sub.reached[label]:.0%}", va="center", fontsize=7)
        ax.axvline(1.0, color="0.3", ls=":", lw=1)
        ax.set_yticks(y, labels, fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel("final regret / π_ref's regret (label: runs reaching 10%)", fontsize=8)
        ax.set_title((titles or {}).get((group, eps), f"{group}, ε = {eps:.2g}"), fontsize=9)
        ax.grid(alpha=0.3, axis="x", lw=0.5)
    fig.tight_layout()
    return fig


def plot_alpha_sweep(points: pd.DataFrame, title: str = ""):
    """``points``: summary rows with columns ``alpha``, ``series``, ``final_regret_rel`` and
    ``reached``. Series with several α are lines; an α = 0 series is a dotted reference
    line; other single-α series are markers."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for column, ax, name in (("final_regret_rel", axes[0], "final regret / regret of π_ref"),
                             ("reached", axes[1], "fraction of runs reaching 10% of π_ref's regret")):
        markers = iter(["*", "^", "v", "D", "P"])
        for series, rows in points.groupby("series", sort=False):
            rows = rows.sort_values("alpha")
            if len(rows) > 1:
                ax.plot(rows.alpha, rows[column], "o-", label=series)
            elif float(rows.alpha.iloc[0]) == 0.0:
                ax.axhline(float(rows[column].iloc[0]), color="0.4", ls=":", label=series)
            else:
                ax.plot(rows.alpha, rows[column], next(markers), ms=10, label=series)
        ax.set_xscale("log")
        ax.set_xlabel("α (bonus weight, TRL convention α·log π(ỹ))")
        ax.set_title(name, fontsize=10)
        ax.grid(alpha=0.3, lw=0.5)
    axes[0].axhline(1.0, color="r", lw=0.6, alpha=0.5)
    axes[1].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_queries_vs_size(per_run: pd.DataFrame, panels, fraction: float = 0.1):
    """``panels``: list of dicts with keys ``group``, ``x`` (a column of ``per_run``: the
    instance size), ``xlabel``, ``title`` and optionally ``references`` = {legend: (xs, ys)}
    drawn dashed, and ``logx``. Median and interquartile band of the queries to the
    threshold per label; medians censored at the budget are open markers."""
    plt = _pyplot()
    colors = label_colors(per_run.label)
    styles = {}
    fig, axes = plt.subplots(1, len(panels), figsize=(5.8 * len(panels), 4.6), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        runs = per_run[per_run.group == panel["group"]]
        budget = runs.budget.max()
        for label, sub in runs.groupby("label", sort=False):
            stats = _query_stats(sub, panel["x"])
            x = stats.index.to_numpy(dtype=float)
            color = colors[label]
            ls = styles.setdefault(label, ":" if "tabular" in label else "-")
            ax.plot(x, stats["median"], ls, color=color, label=label, lw=1.7)
            ax.fill_between(x, stats.q25, stats.q75, color=color, alpha=0.1, lw=0)
            censored = (stats.reached < 0.5).to_numpy()
            ax.plot(x[~censored], stats["median"][~censored], "o", color=color, ms=5)
            ax.plot(x[censored], stats["median"][censored], "o", mfc="white", color=color, ms=6)
        for name, (xs, ys) in panel.get("references", {}).items():
            ax.plot(xs, ys, "k--", lw=1, label=name)
        ax.axhline(budget, color="0.5", ls=":", lw=1)
        ax.set_yscale("log")
        if panel.get("logx"):
            ax.set_xscale("log")
        ax.set_ylim(bottom=0.8, top=budget * 3)
        ax.set_xlabel(panel["xlabel"])
        ax.set_ylabel(f"queries to regret ≤ {fraction:.0%} of π_ref's (budget {budget}, dotted)")
        ax.set_title(panel["title"], fontsize=10)
        ax.grid(alpha=0.3, which="both", lw=0.5)
        ax.legend(fontsize=6.5, loc="lower right")
    fig.tight_layout()
    return fig


def fit_loglog_slope(x, y) -> float:
    """Least-squares slope of log y against log x (positive, finite points only)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = (x > 0) & (y > 0) & np.isfinite(x) & np.isfinite(y)
    if keep.sum() < 2:
        return math.nan
    return float(np.polyfit(np.log(x[keep]), np.log(y[keep]), 1)[0])


def plot_rate(curves: pd.DataFrame, theory: dict, titles: dict, fit_from: int = 10):
    """``curves``: rows with ``group``, ``pairs`` (queries T) and ``best_regret`` (mean over
    seeds); ``theory[group]`` = (Ts, bound) for √(C_cov log|Π| / T). One log-log panel per
    group; slopes fitted over T ≥ ``fit_from``."""
    plt = _pyplot()
    groups = list(dict.fromkeys(curves.group))
    fig, axes = plt.subplots(1, len(groups), figsize=(5.4 * len(groups), 4.3), squeeze=False)
    for ax, group in zip(axes[0], groups):
        sub = curves[(curves.group == group) & (curves.pairs > 0)].sort_values("pairs")
        fit = sub[sub.pairs >= fit_from]
        slope = fit_loglog_slope(fit.pairs, fit.best_regret)
        ax.plot(sub.pairs, sub.best_regret, "o-", color="#d62728", ms=3,
                label=f"measured best-iterate regret (slope {slope:.2f})")
        ts, bound = theory[group]
        ax.plot(ts, bound, "k--", lw=1.2,
                label=f"√(C_cov·log|Π|/T) (slope {fit_loglog_slope(ts[ts >= fit_from], bound[ts >= fit_from]):.2f})")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("preference queries T")
        ax.set_ylabel("regret")
        ax.set_title(titles.get(group, group), fontsize=9)
        ax.grid(alpha=0.3, which="both", lw=0.5)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_reward_scale(per_run: pd.DataFrame, anchor: str | None = None, title: str = "", fraction: float = 0.1):
    """``per_run`` from :func:`xpo_sim.analysis.queries_to_threshold` with a ``reward_scale``
    column (R_max). Left: median queries to the threshold against R_max (log y), interquartile
    band, medians censored at the budget as open markers, the budget dotted, and the dashed
    reference c·e^{2 R_max} through the median of label ``anchor`` (default: the first label)
    at the smallest R_max. Right: the fraction of runs that reach the threshold."""
    plt = _pyplot()
    colors = label_colors(per_run.label)
    budget = per_run.budget.max()
    fig, (ax, ax_reach) = plt.subplots(1, 2, figsize=(11.5, 4.4))
    anchor = anchor if anchor is not None else next(iter(dict.fromkeys(per_run.label)))
    for label, sub in per_run.groupby("label", sort=False):
        stats = _query_stats(sub, "reward_scale")
        x = stats.index.to_numpy(dtype=float)
        color = colors[label]
        ax.plot(x, stats["median"], "-", color=color, label=label, lw=1.7)
        ax.fill_between(x, stats.q25, stats.q75, color=color, alpha=0.12, lw=0)
        censored = (stats.reached < 0.5).to_numpy()
        ax.plot(x[~censored], stats["median"][~censored], "o", color=color, ms=5)
        ax.plot(x[censored], stats["median"][censored], "o", mfc="white", color=color, ms=6)
        ax_reach.plot(x, stats.reached, "o-", color=color, label=label, lw=1.5, ms=4)
    first = per_run[per_run.label == anchor]
    if len(first):
        r0 = float(first.reward_scale.min())
        q0 = float(first[first.reward_scale == r0].queries.median())
        xs = np.linspace(r0, float(per_run.reward_scale.max()), 100)
        ax.plot(xs, q0 * np.exp(2.0 * (xs - r0)), "k--", lw=1,
                label=f"e^(2 R_max), through {anchor} at R_max = {r0:g}")
    ax.axhline(budget, color="0.5", ls=":", lw=1)
    ax.set_yscale("log")
    ax.set_ylim(bottom=0.8, top=budget * 3)
    for axis in (ax, ax_reach):
        axis.set_xlabel("R_max (reward of the optimal response; the others 0)")
        axis.set_xticks(sorted(per_run.reward_scale.unique()))
        axis.grid(alpha=0.3, which="both", lw=0.5)
    ax.set_ylabel(f"queries to regret ≤ {fraction:.0%} of π_ref's (budget {budget}, dotted)")
    ax.set_title("median queries (open: censored at the budget)", fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    ax_reach.set_ylim(-0.03, 1.03)
    ax_reach.set_ylabel(f"fraction of runs reaching {fraction:.0%} of π_ref's regret")
    ax_reach.set_title("runs that get there", fontsize=10)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_box_sweep(table: pd.DataFrame, title: str = ""):
    """``table``: :func:`xpo_sim.analysis.interval_summary` rows with columns ``group``
    (instance), ``method``, ``width`` and ``lo`` of the box. One row of panels per
    instance: the share of runs ending below π_ref's regret (Wilson interval) and the
    median final regret relative to π_ref's (bootstrap interval), against the box's width;
    boxes anchored at 0 are lines, moved boxes (lo ≠ 0) open markers beside them."""
    plt = _pyplot()
    groups = list(dict.fromkeys(table.group))
    colors = label_colors(table.method)
    fig, axes = plt.subplots(len(groups), 2, figsize=(11, 3.8 * len(groups)), squeeze=False)
    for row, group in zip(axes, groups):
        sub = table[table.group == group]
        for ax, (column, name) in zip(row, (("below_ref", "share of runs ending below π_ref's regret"),
                                             ("final_rel", "median final regret / π_ref's"))):
            for k, (method, runs) in enumerate(sub.groupby("method", sort=False)):
                offset = 1.0 + 0.03 * (k - 1.5)  # methods side by side on the log axis
                for anchored, style in ((True, "o-"), (False, "s")):
                    pts = runs[(runs.lo == 0) == anchored].sort_values("width")
                    if not len(pts):
                        continue
                    err = [pts[column] - pts[f"{column}_low"], pts[f"{column}_high"] - pts[column]]
                    ax.errorbar(pts.width * offset * (1.0 if anchored else 1.08), pts[column], yerr=err, fmt=style,
                                color=colors[method], mfc="none" if not anchored else colors[method], ms=5,
                                capsize=2, lw=1.2, label=method if anchored else None)
            ax.set_xscale("log", base=2)
            ax.set_xlabel("box width (true reward range = 1; open squares: moved boxes of width 2)")
            ax.set_title(f"{group}: {name}", fontsize=10)
            ax.grid(alpha=0.3, lw=0.5)
            if column == "final_rel":
                ax.axhline(1.0, color="r", lw=0.6, alpha=0.5)
                ax.set_yscale("log")
            else:
                ax.set_ylim(-0.03, 1.03)
        row[0].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_scorecard_radar(table: pd.DataFrame, title: str = ""):
    """The scorecard's radar plot (as bsuite draws it): one axis per property (the columns
    of ``table``, a :func:`xpo_sim.scorecard.property_scores` table without ``overall``),
    one closed polygon per algorithm (its rows), scores on a radius from 0 to 1. A property
    an algorithm did not run (NaN) is drawn at the centre and marked with an open circle."""
    plt = _pyplot()
    properties = [c for c in table.columns if c != "overall"]
    if len(properties) < 3:
        raise ValueError(f"a radar plot needs at least 3 properties, got {properties}")
    angles = np.linspace(0, 2 * np.pi, len(properties), endpoint=False)
    fig, ax = plt.subplots(figsize=(6.8, 6.2), subplot_kw=dict(polar=True))
    colors = label_colors(table.index)
    for name, row in table.iterrows():
        values = row[properties].to_numpy(dtype=float)
        missing = ~np.isfinite(values)
        drawn = np.where(missing, 0.0, values)
        ax.plot(np.append(angles, angles[0]), np.append(drawn, drawn[0]), color=colors[name], lw=1.6, label=name)
        ax.fill(np.append(angles, angles[0]), np.append(drawn, drawn[0]), color=colors[name], alpha=0.06)
        if missing.any():
            ax.scatter(angles[missing], drawn[missing], facecolors="none", edgecolors=colors[name], s=30)
    ax.set_xticks(angles, [p.replace("_", " ") for p in properties], fontsize=9)
    ax.set_ylim(0, 1)
    ax.set_yticks([0.25, 0.5, 0.75, 1.0], ["0.25", "0.5", "0.75", "1"], fontsize=7, color="0.4")
    ax.legend(loc="upper left", bbox_to_anchor=(1.05, 1.0), fontsize=8, frameon=False)
    if title:
        ax.set_title(title, fontsize=10, pad=18)
    fig.tight_layout()
    return fig


def plot_scorecard_bars(table: pd.DataFrame, title: str = ""):
    """Per property, one horizontal bar per algorithm (the rows of ``table``, a
    :func:`xpo_sim.scorecard.property_scores` table): the score in [0, 1]; "not run" where
    NaN."""
    plt = _pyplot()
    properties = [c for c in table.columns if c != "overall"]
    names = list(table.index)
    colors = label_colors(names)
    cols = min(len(properties), 4)
    rows = -(-len(properties) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 0.22 * len(names) * rows + 1.2 * rows),
                             sharex=True, squeeze=False)
    for ax, prop in zip(axes.flat, properties):
        values = table[prop].to_numpy(dtype=float)
        y = np.arange(len(names))
        ax.barh(y, np.nan_to_num(values), color=[colors[n] for n in names], alpha=0.8)
        for yi, v in zip(y, values):
            if not np.isfinite(v):
                ax.text(0.02, yi, "not run", va="center", fontsize=6, color="0.4")
        ax.set_yticks(y, names, fontsize=7)
        ax.invert_yaxis()
        ax.set_xlim(0, 1)
        ax.set_title(prop.replace("_", " "), fontsize=9)
        ax.grid(alpha=0.3, axis="x", lw=0.5)
    for ax in list(axes.flat)[len(properties):]:
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_scorecard_experiments(settings: pd.DataFrame, experiments=None):
    """Per experiment (a column of panels each), against its difficulty setting: the
    fraction of seeds that solved it (or did no harm) on top, and below it the median
    queries to 10% of π_ref's regret among the seeds that got there; one line per algorithm.
    ``settings`` is the per-setting table of :func:`xpo_sim.scorecard.score_results`."""
    plt = _pyplot()
    names = list(dict.fromkeys(experiments if experiments is not None else settings.experiment))
    colors = label_colors(settings.algorithm)
    cols = min(len(names), 5)
    blocks = -(-len(names) // cols)  # rows of experiments, each a pair of panel rows
    fig, axes = plt.subplots(2 * blocks, cols, figsize=(3.1 * cols, 5.0 * blocks), squeeze=False)
    for i, name in enumerate(names):
        sub = settings[settings.experiment == name]
        block, col = divmod(i, cols)
        top, bottom = axes[2 * block, col], axes[2 * block + 1, col]
        no_harm = sub.no_harm.notna().all() and (sub.get("kind", pd.Series(["solved"])) == "no_harm").all()
        for label, group in sub.groupby("algorithm", sort=False):
            group = group.sort_values("value")
            success = group.no_harm if no_harm else group.solved
            top.plot(group.value, success, "o-", color=colors[label], lw=1.2, ms=3, label=label)
            bottom.plot(group.value, group.queries_to_solve, "o-", color=colors[label], lw=1.2, ms=3)
        setting = sub.setting.iloc[0] if len(sub) else ""
        values = sub.value[sub.value > 0]
        if len(values) and values.max() / values.min() >= 50:
            top.set_xscale("log")
            bottom.set_xscale("log")
        top.set_ylim(-0.05, 1.05)
        top.set_title(name, fontsize=9)
        top.set_ylabel("share no worse than π_ref" if no_harm else "share of seeds solved", fontsize=8)
        bottom.set_ylabel("median queries to 10%", fontsize=8)
        bottom.set_xlabel(setting, fontsize=8)
        for ax in (top, bottom):
            ax.grid(alpha=0.3, lw=0.5)
            ax.tick_params(labelsize=7)
    for i in range(len(names), blocks * cols):
        block, col = divmod(i, cols)
        axes[2 * block, col].axis("off")
        axes[2 * block + 1, col].axis("off")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=min(len(labels), 8), fontsize=7, frameon=False,
               bbox_to_anchor=(0.5, 1.0))
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / (5.0 * blocks)))
    return fig


def plot_average_rate(curves: pd.DataFrame, theory: dict, titles: dict, labels: dict | None = None,
                      fit_from: float | None = None):
    """The regret XPO's theorem bounds against queries T, one log-log panel per group.

    ``curves``: rows with ``group``, ``quantity`` ("avg_regret", "mixture_regret" or
    "regret"), ``pairs`` (T) and ``median``, ``q25``, ``q75`` over seeds; drawn as the median
    line and the interquartile band. ``theory[group]`` = (Ts, bound) for √(C_cov · log|Π| / T),
    drawn dashed. ``labels[(group, quantity)]``: legend text (e.g. with fitted slopes);
    ``fit_from``: where the fits start, a dotted vertical line."""
    plt = _pyplot()
    styles = {"avg_regret": ("#d62728", "-", "average regret (1/T) Σₜ regret(πᵗ)"),
              "mixture_regret": ("#1f77b4", "-", "regret of the mixture unif(π¹…π^T)"),
              "regret": ("#7f7f7f", ":", "last iterate's regret")}
    labels = labels or {}
    groups = list(dict.fromkeys(curves.group))
    fig, axes = plt.subplots(1, len(groups), figsize=(5.8 * len(groups), 5.6), squeeze=False)
    for ax, group in zip(axes[0], groups):
        sub = curves[curves.group == group]
        for quantity, (color, style, name) in styles.items():
            part = sub[sub.quantity == quantity].sort_values("pairs")
            if part.empty:
                continue
            ax.plot(part.pairs, part["median"], style, color=color, lw=1.6 if style == "-" else 1.0,
                    label=labels.get((group, quantity), name))
            if style == "-":
                ax.fill_between(part.pairs, part.q25, part.q75, color=color, alpha=0.15, lw=0)
        if group in theory:
            ts, bound = theory[group]
            ax.plot(ts, bound, "k--", lw=1.2, label=labels.get((group, "bound"), "√(C_cov · log|Π| / T)"))
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("preference queries T (one pair a round)")
        ax.set_ylabel("regret (median over seeds, interquartile band)")
        if fit_from is not None:
            ax.axvline(fit_from, color="#999999", ls=":", lw=0.9)
        ax.set_title(titles.get(group, group), fontsize=9)
        ax.grid(alpha=0.3, which="both", lw=0.5)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.15), frameon=False)
    fig.tight_layout()
    return fig


def plot_rate_collapse(curves: pd.DataFrame, table: pd.DataFrame, title: str = ""):
    """Whether regret follows √(C_cov · log|Π| / T) across instances and classes.

    Left: per instance (``curves``: ``group``, ``instance``, ``policy``, ``c_cov``,
    ``bound`` = √(C_cov · log|Π| / T) over the T grid, ``median`` regret), the median
    regret against the bound on log-log axes, coloured by log C_cov, solid for the linear
    class and dashed otherwise, a dot at the largest T; the line regret = bound dashed and
    regret = c̄ · bound dotted (c̄ the median of the constants). If the bound's dependence
    held with one constant the curves would lie on one slope-1 line. Right: the constant
    regret / bound at the largest T per instance (``table``: ``c_cov``, ``constant``,
    ``constant_low``, ``constant_high``, ``policy``, ``d``) against C_cov, with its
    interval."""
    plt = _pyplot()
    from matplotlib import cm, colors as mcolors

    fig, (ax, ax_c) = plt.subplots(1, 2, figsize=(12.5, 6.4), gridspec_kw=dict(width_ratios=[1.35, 1]))
    c_values = table.c_cov.to_numpy(dtype=float)
    norm = mcolors.LogNorm(vmin=max(c_values.min(), 1e-3), vmax=max(c_values.max(), c_values.min() * 1.01))
    cmap = cm.get_cmap("viridis") if hasattr(cm, "get_cmap") else plt.colormaps["viridis"]
    for group, sub in curves.groupby("group", sort=False):
        sub = sub.sort_values("pairs")
        color = cmap(norm(float(sub.c_cov.iloc[0])))
        style = "-" if sub.policy.iloc[0] == "linear" else "--"
        ax.plot(sub.bound, sub["median"], style, color=color, lw=1.4, label=sub.instance.iloc[0])
        ax.plot(sub.bound.iloc[-1], sub["median"].iloc[-1], "o", color=color, ms=5)
    lo = min(curves.bound.min(), curves["median"].min())
    hi = max(curves.bound.max(), curves["median"].max())
    line = np.geomspace(lo, hi, 50)
    ax.plot(line, line, "k--", lw=0.9, label="regret = bound (constant 1)")
    constant = float(np.median(table.constant))
    ax.plot(line, constant * line, "k:", lw=1.1, label=f"regret = {constant:.2g} · bound (median constant)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("√(C_cov · d · log T / T)   (d log T: the proxy for log|Π|)")
    ax.set_ylabel("average regret (median over seeds)")
    ax.grid(alpha=0.3, which="both", lw=0.5)
    ax.legend(fontsize=6.5, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2, frameon=False)
    from matplotlib.ticker import FuncFormatter

    plain = FuncFormatter(lambda v, _: f"{v:g}")
    bar = fig.colorbar(cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, label="C_cov", pad=0.01)
    from matplotlib.ticker import NullFormatter

    ticks = [v for v in (1, 2, 4, 8, 16, 32, 64, 128, 256) if norm.vmin <= v <= norm.vmax]
    bar.set_ticks(ticks)
    bar.ax.yaxis.set_major_formatter(plain)
    bar.ax.yaxis.set_minor_formatter(NullFormatter())
    for policy, marker, color in (("linear", "o", "#d62728"), ("implicit", "s", "#1f77b4")):
        part = table[table.policy == policy]
        if part.empty:
            continue
        err = np.vstack([part.constant - part.constant_low, part.constant_high - part.constant])
        ax_c.errorbar(part.c_cov, part.constant, yerr=err, fmt=marker, color=color, ms=5, capsize=2, lw=0.9,
                      label="linear class" if policy == "linear" else "tabular class")
        for _, row in part.iterrows():
            ax_c.annotate(f"d={int(row.d)}", (row.c_cov, row.constant), textcoords="offset points", xytext=(4, 3),
                          fontsize=6.5)
    ax_c.set_xscale("log")
    ax_c.set_yscale("log")
    ax_c.set_xticks(ticks)
    ax_c.xaxis.set_major_formatter(plain)
    ax_c.xaxis.set_minor_formatter(NullFormatter())
    ax_c.set_xlabel("C_cov (exact, of the class run)")
    ax_c.set_ylabel("constant = regret / √(C_cov · d · log T / T) at T_max")
    ax_c.grid(alpha=0.3, which="both", lw=0.5)
    ax_c.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


__all__ += ["plot_average_rate", "plot_rate_collapse"]
