"""The implicit class's box (experiments/box_sweep.py): the identity that explains what the
box does on a needle, the invariance of the class under a shift of the box, and the
interval table the sweep reads."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, strategies as st

import xpo_sim
from xpo_sim import envs
from xpo_sim.analysis import interval_summary, queries_to_threshold
from xpo_sim.intervals import bootstrap_interval, wilson_interval


@given(st.integers(2, 12), st.floats(1e-4, 0.5), st.floats(0.02, 2.0), st.integers(0, 10**6))
def test_needle_regret_identity(n, eps, beta, seed):
    # every bad response has reward 0 and the good one 1: regret(π) − regret(π_ref) =
    # β KL(π‖π_ref) − (π(opt) − ε), the identity docs/experiments.md reads the box sweep by
    mdp = envs.bandit_needle(n, eps, seed=seed)
    rng = np.random.default_rng(seed)
    logits = rng.normal(scale=3.0, size=n)
    logp = (logits - np.logaddexp.reduce(logits))[None, :]
    good = int(mdp.info["optimal_actions"][0])
    kl = float(np.sum(np.exp(logp[0]) * (logp[0] - mdp.ref_logp[0])))
    lhs = xpo_sim.regret(mdp, logp, beta) - xpo_sim.regret(mdp, mdp.ref_logp, beta)
    rhs = beta * kl - (math.exp(logp[0, good]) - eps)
    assert lhs == pytest.approx(rhs, abs=1e-10 * (1 + beta * kl))


@given(st.integers(0, 10**6), st.floats(-3.0, 3.0))
def test_a_shifted_box_holds_the_same_policies(seed, shift):
    # one prompt, responses of one length: π_θ is unchanged when every θ moves by c, so a
    # box moved by c holds the same policies (the sweep's moved boxes differ from [0, 2]
    # only through the solver's warm start θ = clip(0), not through the class)
    from xpo_sim.policies import make_policy_class

    mdp = envs.token_needle(3, 2, 1e-2, seed=seed % 7)
    base = make_policy_class(mdp, 0.1, "implicit", box=(0.0, 2.0))
    moved = make_policy_class(mdp, 0.1, "implicit", box=(shift, 2.0 + shift))
    theta = np.random.default_rng(seed).uniform(0.0, 2.0, size=base.n_params)
    np.testing.assert_allclose(moved.policy_logp(theta + shift), base.policy_logp(theta), atol=1e-9)


def test_interval_summary_matches_its_definition():
    rng = np.random.default_rng(0)
    rows = []
    for label in ("a", "b"):
        for replicate in range(9):
            ref = 0.3
            final = float(rng.uniform(0, 0.6))
            rows.append(dict(label=label, replicate=replicate, queries=int(rng.integers(1, 100)),
                             censored=bool(rng.random() < 0.4), budget=100, ref_regret=ref, final_regret=final,
                             best_regret=min(final, float(rng.uniform(0, 0.3)))))
    per_run = pd.DataFrame(rows)
    table = interval_summary(per_run, ["label"], n_boot=500, seed=3).set_index("label")
    for label, runs in per_run.groupby("label"):
        got = table.loc[label]
        k = int((runs.final_regret < runs.ref_regret).sum())
        assert (got.below_ref, got.below_ref_low, got.below_ref_high) == pytest.approx(wilson_interval(k, len(runs)))
        k = int((~runs.censored).sum())
        assert (got.reached, got.reached_low, got.reached_high) == pytest.approx(wilson_interval(k, len(runs)))
        expected = bootstrap_interval((runs.final_regret / runs.ref_regret).to_numpy(), n_boot=500, seed=3)
        assert (got.final_rel, got.final_rel_low, got.final_rel_high) == pytest.approx(expected)
        assert got.runs == len(runs)


def test_interval_summary_from_a_run_table_and_bad_input():
    mdp = envs.bandit_needle(4, 0.05, seed=0)
    df = pd.concat([xpo_sim.run(mdp, xpo_sim.OnlineDPO(batch=2), 0.1, 5, seed=s, progress=False).assign(replicate=s,
                                                                                                      label="x")
                    for s in range(3)])
    table = interval_summary(queries_to_threshold(df))
    assert len(table) == 1 and table.runs.iloc[0] == 3
    assert (table.final_rel_low <= table.final_rel).all() and (table.final_rel <= table.final_rel_high).all()
    with pytest.raises(ValueError, match="missing"):
        interval_summary(pd.DataFrame(dict(label=["x"], queries=[1])))
