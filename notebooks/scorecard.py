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
# # The exploration scorecard
#
# Name the result folders of `python experiments/scorecard.py` runs (each holds a
# `scores.csv`, `settings.csv` and `runs.csv`), and this notebook draws the radar, the
# per-property bars and the per-experiment curves of every algorithm in them, as bsuite's
# results notebook does. When no folder is given, or with `XPO_SIM_QUICK=1` (as CI sets),
# it first scores three algorithms and the two calibration ends on the quick suite in a
# temporary folder. Every score comes from exact regrets.

# %%
import os
import tempfile
import warnings
from pathlib import Path

import matplotlib

warnings.filterwarnings("ignore", message="IProgress not found")
try:
    IPYTHON = get_ipython()  # defined only inside Jupyter/IPython
except NameError:
    IPYTHON = None
if IPYTHON is None:
    matplotlib.use("Agg")

import pandas as pd  # noqa: E402

from xpo_sim import scorecard  # noqa: E402
from xpo_sim.plotting import plot_scorecard_bars, plot_scorecard_experiments, plot_scorecard_radar  # noqa: E402

# the folders to compare: edit this list (each is an --out of experiments/scorecard.py)
RESULT_FOLDERS = [Path("results/scorecard"), Path("../results/scorecard")]
QUICK = os.environ.get("XPO_SIM_QUICK") == "1"

# %%
folders = [] if QUICK else [f for f in RESULT_FOLDERS if (f / "scores.csv").is_file()]
if folders:
    scores = pd.concat([scorecard.load_scores(f) for f in folders], ignore_index=True)
    settings = pd.concat([pd.read_csv(f / "settings.csv") for f in folders], ignore_index=True)
    source = ", ".join(map(str, folders))
else:
    tmp = tempfile.mkdtemp(prefix="scorecard_quick_")
    entries = [scorecard.entry(name) for name in ("XPO", "HybridDPO", "OnlineDPO", "StayAtReference",
                                                  "ReportOptimum")]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scores, settings, _ = scorecard.score_entries(entries, quick=True, out=tmp, progress=False)
    source = "the quick suite, computed now in a temporary folder"
print(f"suite version {scorecard.SUITE_VERSION}: {len(scores)} score rows from {source}")

# %% [markdown]
# ## The leaderboard
#
# One row per algorithm, one column per property (the mean of its experiments' scores), and
# the overall mean over the properties it ran. A score is the fraction of (setting, seed) runs
# whose final reported policy has at most 10% of π_ref's regret ("do no harm": no more than
# π_ref's). "—" marks an experiment the algorithm cannot run (its policy class lacks what it
# needs), which is not counted as 0.

# %%
table = scorecard.leaderboard(scores)
table.round(2)

# %% [markdown]
# ## The radar
#
# **Reading the plot.** Each polygon is one algorithm; a vertex's distance from the centre is
# its score on that property, from 0 (no setting solved) to 1 (every setting solved in every
# seed). `ReportOptimum` (which reports π\*) draws the outer ring and `StayAtReference` (which
# never moves) sits at the centre except on "do no harm": a method is useful where it leaves
# the centre without giving up "do no harm".

# %%
fig = plot_scorecard_radar(table, f"scorecard v{scorecard.SUITE_VERSION}")

# %% [markdown]
# ## Per property
#
# **Reading the plot.** The same scores as bars, one panel per property, so that close
# scores can be told apart; "not run" marks an experiment the algorithm could not run.

# %%
fig = plot_scorecard_bars(table)

# %% [markdown]
# ## Per experiment
#
# **Reading the plot.** Top: the share of seeds that solved each setting of the difficulty
# sweep (for "do no harm", the share no worse than π_ref); the score is the mean of this
# curve. Bottom: the median queries to 10% of π_ref's regret among the seeds that got there
# (a gap where none did). A method that explores keeps the top curve up as the setting gets
# harder (smaller ε or β, more responses, noisier teachers).

# %%
fig = plot_scorecard_experiments(settings)
