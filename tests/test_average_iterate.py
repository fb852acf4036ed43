"""The ``avg_regret`` column of :func:`xpo_sim.run`: (1/t) Σ_{i=1..t} regret(πⁱ) over every
scored iterate (row 0: π_ref's regret), the same whatever ``record`` keeps as rows, never
negative; for a class scored on the rows' rounds only, the average over those."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import xpo_sim
from xpo_sim import envs
from xpo_sim.policies import LogitsClass
from xpo_sim.recorder import COLUMNS


def running_mean(regret: np.ndarray) -> np.ndarray:
    """Row 0's regret, then the mean of rows 1…t."""
    return np.concatenate([regret[:1], np.cumsum(regret[1:]) / np.arange(1, regret.size)])


CASES = [
    (envs.token_tree(3, 2, 2, seed=3), xpo_sim.XPO(), "implicit", {}),
    (envs.random_dag(15, 3, n_prompts=2, seed=1), xpo_sim.OnlineDPO(batch=2), "implicit", {}),
    (envs.combination_lock(3, 3, 0.3, seed=2), xpo_sim.XPO(alpha=0.05), "linear", {}),
    (envs.bandit_needle(6, 0.05, seed=4), xpo_sim.ExPO(), "implicit", {}),  # reports another policy
]


@pytest.mark.parametrize("mdp, algorithm, policy, options", CASES, ids=["tree", "dag", "lock", "expo"])
def test_avg_regret_is_the_running_mean_of_regret_and_nonnegative(mdp, algorithm, policy, options):
    df = xpo_sim.run(mdp, algorithm, 0.3, 25, seed=5, policy=policy, **options)
    assert COLUMNS.index("avg_regret") == COLUMNS.index("best_regret") + 1
    regret = df.regret.to_numpy()
    np.testing.assert_allclose(df.avg_regret.to_numpy(), running_mean(regret), rtol=1e-12, atol=0)
    assert df.avg_regret.iloc[0] == df.regret.iloc[0] == pytest.approx(xpo_sim.regret(mdp, mdp.ref_logp, 0.3))
    assert (df.avg_regret >= 0).all()
    assert (df.avg_regret >= df.best_regret - 1e-15).all()  # a mean of values ≥ their minimum


@pytest.mark.parametrize("record", ["geometric", [0, 3, 7, 19, 40], range(0, 61, 6)])
def test_thinned_rows_give_the_same_average_over_every_iterate(record):
    mdp = envs.token_tree(3, 2, 2, seed=8)
    full = xpo_sim.run(mdp, xpo_sim.XPO(batch=2), 0.2, 60, seed=1)
    thin = xpo_sim.run(mdp, xpo_sim.XPO(batch=2), 0.2, 60, seed=1, record=record)
    assert len(thin) < len(full)
    same = full.set_index("round").loc[thin["round"]].reset_index()[COLUMNS]
    pd.testing.assert_frame_equal(thin, same, check_exact=True)  # every column, avg_regret included
    # the last row's average runs over all 60 iterates, not over the rows kept
    assert thin.avg_regret.iloc[-1] == pytest.approx(full.regret.iloc[1:].mean(), rel=1e-12)
    assert thin.avg_regret.iloc[-1] != pytest.approx(thin.regret.iloc[1:].mean(), rel=1e-6)


class RowsOnlyLogits(LogitsClass):
    """The logits class scored on the rows' rounds only, as the transformer is."""

    exact_every_round = False


def test_a_class_scored_on_the_rows_only_averages_over_the_rows():
    mdp = envs.token_tree(2, 2, 1, seed=2)
    rows = [0, 2, 5, 9, 14, 20]
    df = xpo_sim.run(mdp, xpo_sim.XPO(), 0.5, 20, seed=3, policy=RowsOnlyLogits(mdp, 0.5, steps=3), record=rows)
    assert list(df["round"]) == rows
    np.testing.assert_allclose(df.avg_regret.to_numpy(), running_mean(df.regret.to_numpy()), rtol=1e-12)

