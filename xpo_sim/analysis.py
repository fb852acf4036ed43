r"""Tidy summaries of sweep results (one row per run and round, as :func:`xpo_sim.run` and
:func:`xpo_sim.sweep.run_sweep` return them).

*Queries to a regret threshold*: for one run, the number of preference queries (``pairs``)
at the first recorded round whose regret is at most ``fraction`` × the regret of π_ref
(round 0). A run that never gets there is *censored* at its budget (its last ``pairs``).

*Intervals* (:func:`interval_summary`): per group, Wilson intervals for the shares of runs
("k of n runs reached 10%", "k of n ended below π_ref's regret") and percentile-bootstrap
intervals over seeds for the medians (:mod:`xpo_sim.intervals`), so that a comparison is
read only where the intervals separate.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

__all__ = ["RUN_KEYS", "queries_to_threshold", "summarize_runs", "interval_summary"]

RUN_KEYS = ["key", "group", "label", "instance", "beta", "eps", "replicate", "policy"]


def _run_keys(df: pd.DataFrame) -> list[str]:
    keys = [k for k in RUN_KEYS if k in df.columns]
    if not keys:
        raise ValueError(f"results need run identity columns, one of {RUN_KEYS}")
    return keys


def queries_to_threshold(df: pd.DataFrame, fraction: float = 0.1) -> pd.DataFrame:
    """One row per run: ``queries`` to reach regret ≤ ``fraction``·regret(π_ref),
    ``censored`` (never reached; ``queries`` is then the budget), ``budget``,
    ``final_regret``, ``ref_regret``, ``best_regret``, ``final_kl`` (KL to π_ref) and
    ``final_iterate_regret`` (differs from ``final_regret`` only for ExPO)."""
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must lie in (0, 1), got {fraction!r}")
    keys = _run_keys(df)
    rows = []
    for ident, run in df.sort_values("round").groupby(keys, sort=False, dropna=False):
        ref_regret = float(run.regret.iloc[0])
        hit = run.pairs[run.regret <= fraction * ref_regret]
        budget = int(run.pairs.iloc[-1])
        rows.append(dict(
            zip(keys, ident if isinstance(ident, tuple) else (ident,)),
            queries=int(hit.iloc[0]) if len(hit) else budget,
            censored=not len(hit),
            budget=budget,
            ref_regret=ref_regret,
            final_regret=float(run.regret.iloc[-1]),
            best_regret=float(run.best_regret.iloc[-1]),
            final_kl=float(run.kl_ref.iloc[-1]),
            final_iterate_regret=float(run.iterate_regret.iloc[-1]) if "iterate_regret" in run else math.nan,
        ))
    return pd.DataFrame(rows)


def summarize_runs(per_run: pd.DataFrame) -> pd.DataFrame:
    """Per (group, label, β, ε): number of runs, median and quartiles of queries to the
    threshold (censored runs counted at the budget, so a censored median is a lower
    bound), fraction reaching it, the mean final and best regret relative to π_ref's, the
    mean final iterate regret relative to π_ref's, and the mean final KL to π_ref."""
    keys = [k for k in ("group", "label", "instance", "beta", "eps", "policy") if k in per_run.columns]
    grouped = per_run.groupby(keys, sort=True, dropna=False)
    out = grouped.agg(
        runs=("queries", "size"),
        queries_median=("queries", "median"),
        queries_q25=("queries", lambda q: float(np.quantile(q, 0.25))),
        queries_q75=("queries", lambda q: float(np.quantile(q, 0.75))),
        reached=("censored", lambda c: float(np.mean(~c.astype(bool)))),
        budget=("budget", "max"),
    ).reset_index()
    relative = per_run.assign(
        final_rel=per_run.final_regret / per_run.ref_regret,
        best_rel=per_run.best_regret / per_run.ref_regret,
        iterate_rel=per_run.get("final_iterate_regret", math.nan) / per_run.ref_regret,
        final_kl=per_run.get("final_kl", math.nan),
    ).groupby(keys, sort=True, dropna=False)[["final_rel", "best_rel", "iterate_rel", "final_kl"]].mean().reset_index()
    out = out.merge(relative, on=keys)
    out["median_censored"] = out.reached < 0.5
    return out.rename(columns={"final_rel": "final_regret_rel", "best_rel": "best_regret_rel",
                               "iterate_rel": "final_iterate_regret_rel"})


def interval_summary(per_run: pd.DataFrame, keys=None, *, level: float = 0.95, n_boot: int = 2000,
                     seed: int = 0) -> pd.DataFrame:
    """Per group of ``keys`` (default: those of group, label, instance, β, ε, policy
    present) of a :func:`queries_to_threshold` table: ``runs``; ``reached`` (share of runs
    reaching the threshold) and ``below_ref`` (share whose final regret is below π_ref's),
    each with its Wilson interval (``*_low``, ``*_high``); the medians over seeds of
    ``final_rel`` (final regret / π_ref's), ``best_rel`` and ``queries`` (censored runs at
    their budget, so a median with ``reached`` < ½ is a lower bound), each with its
    percentile-bootstrap interval."""
    from xpo_sim.intervals import bootstrap_interval, wilson_interval

    need = ["queries", "censored", "final_regret", "ref_regret", "best_regret"]
    missing = [c for c in need if c not in per_run.columns]
    if missing:
        raise ValueError(f"per_run needs the columns of queries_to_threshold, missing {missing}")
    if keys is None:
        keys = [k for k in ("group", "label", "instance", "beta", "eps", "policy") if k in per_run.columns]
    rows = []
    for ident, runs in per_run.groupby(list(keys), sort=True, dropna=False):
        row = dict(zip(keys, ident if isinstance(ident, tuple) else (ident,)), runs=len(runs))
        for name, hits in (("reached", ~runs.censored.astype(bool)),
                           ("below_ref", runs.final_regret < runs.ref_regret)):
            row[name], row[f"{name}_low"], row[f"{name}_high"] = wilson_interval(int(hits.sum()), len(runs),
                                                                                 level=level)
        for name, values in (("final_rel", runs.final_regret / runs.ref_regret),
                             ("best_rel", runs.best_regret / runs.ref_regret), ("queries", runs.queries)):
            row[name], row[f"{name}_low"], row[f"{name}_high"] = bootstrap_interval(
                values.to_numpy(dtype=float), level=level, n_boot=n_boot, seed=seed)
        rows.append(row)
    return pd.DataFrame(rows)
