# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Regret plots from the coverage sweep
#
# This notebook loads the results of `python experiments/coverage_sweep.py` (the shards in
# `results/coverage_sweep`) and redraws its figures. When no results exist, or when the
# environment variable `XPO_SIM_QUICK=1` is set (as CI does), it first runs the sweep's
# quick grid into a temporary folder. Every regret below is exact: J_β(π*) − J_β(πᵗ)
# computed by backward induction, not estimated from samples.

# %%
import math
import os
import tempfile
import warnings
from pathlib import Path

import matplotlib

# tqdm would warn that ipywidgets is missing; the sweeps here run without a progress bar
warnings.filterwarnings("ignore", message="IProgress not found")

try:
    IPYTHON = get_ipython()  # defined only inside Jupyter/IPython
except NameError:
    IPYTHON = None
if IPYTHON is None:
    matplotlib.use("Agg")  # run as a plain script: no windows

import sys

# the sweep's grid lives in experiments/coverage_sweep.py; run from the repo root or notebooks/
for folder in (Path.cwd() / "experiments", Path.cwd().parent / "experiments"):
    sys.path.insert(0, str(folder))

import coverage_sweep  # noqa: E402
from xpo_sim.analysis import queries_to_threshold, summarize_runs  # noqa: E402
from xpo_sim.plotting import plot_coverage, plot_queries_vs_inverse_eps, plot_regret_curves  # noqa: E402
from xpo_sim.sweep import SerialExecutor, run_sweep  # noqa: E402

if IPYTHON is not None:
    # coverage_sweep selects the Agg backend for its own figures; the notebook shows them inline
    IPYTHON.run_line_magic("matplotlib", "inline")

QUICK = os.environ.get("XPO_SIM_QUICK") == "1"
results = Path(os.environ.get("XPO_SIM_RESULTS", "results/coverage_sweep"))
scratch = QUICK or not (results / "shards").exists()
if scratch:
    results = Path(tempfile.mkdtemp(prefix="coverage_sweep_"))
    configs = coverage_sweep.build_configs(quick=True, seeds=2)
else:
    configs = coverage_sweep.build_configs(quick=False, seeds=coverage_sweep.DEFAULT_SEEDS)
df = run_sweep(configs, results, SerialExecutor(), progress=False)
print(f"{len(df)} rows from {df.key.nunique()} runs in {'a temporary folder' if scratch else results}")

# %% [markdown]
# ## 1. Queries to reach 10% of π_ref's regret, against 1/ε
#
# Each line is the median over seeds, the band the interquartile range. Open markers are
# medians censored at the budget: most runs never got there. The dashed line is 1/(2ε), the
# expected number of π_ref-sampled pairs before the optimal response appears once — what a
# passive method must wait for. XPO's line stays flat where the passive methods follow (or
# exceed) the dashed line; where all methods sit at the budget, no method solved the instance.

# %%
per_run = queries_to_threshold(df, fraction=0.1)
summary = summarize_runs(per_run)
fig = plot_queries_vs_inverse_eps(per_run, ["two_arm", "bandit_needle", "token_needle"], coverage_sweep.TITLES)

# %% [markdown]
# ## 2. Regret curves
#
# Mean regret over seeds with a 95% band (±1.96 standard errors). The dotted line is π_ref's
# regret: a curve that ends above it means the method moved the policy to a *worse* place than
# where it started (an unlucky label fitted exactly, with nothing to undo it).

# %%
panels = [("two_arm", math.exp(-1 / (2 * 0.1))), ("bandit_needle", 1e-2), ("token_needle", 1e-2)]
fig = plot_regret_curves(df, panels)

# %% [markdown]
# ## 3. Coverage over rounds
#
# π*-mass on the responses present in the data, the data's log-concentrability
# log max_τ π*(τ)/μ̄ₜ(τ) (μ̄ₜ is the average of the sampling distributions so far), and the
# number of distinct responses seen.

# %%
fig = plot_coverage(df, "token_needle", 1e-2)

# %% [markdown]
# ## The summary table

# %%
summary[["group", "label", "eps", "runs", "queries_median", "reached", "final_regret_rel", "best_regret_rel"]]
