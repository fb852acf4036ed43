"""The exploration scorecard: score preference-learning algorithms on a fixed, versioned suite
of exact-regret experiments (xpo_sim.scorecard), one score in [0, 1] per experiment.

Each experiment sweeps one difficulty setting of an instance family with a fixed query
budget and seeds; a run *solves* a setting when the regret of the policy it reports after the
last round is at most 10% of π_ref's, and an experiment's score is the fraction of
(setting, seed) runs that solved it ("do no harm": the fraction whose final policy is no
worse than π_ref). Properties: coverage, depth, width, noise, scale, do no harm,
misspecification, prompts and the transformer (with the torch extra; "not run" without it). The suite's version is
written beside every score; results of another version are never mixed in.

Algorithms (--algorithm, repeatable): a built-in name (XPO, OnlineDPO, HybridDPO, …; the
calibration ends StayAtReference and ReportOptimum), or "package.module:qualname" naming an
xpo_sim.Algorithm subclass of your own, built with its defaults (its module must be
importable: on PYTHONPATH or installed). --all scores every built-in method. The suite sets
each experiment's pairs per round (the algorithm's batch).

Outputs in --out: shards/ (resumable: a rerun computes only what is missing), scores.csv
(suite_version, algorithm, experiment, property, score, status, runs, kind), settings.csv
(per setting: share solved, median final and best regret relative to π_ref's, median queries
to 10%), runs.csv (per run), leaderboard.md, experiments.md (every score with its 95% Wilson
interval). In --figures: scorecard_radar.png (one polygon
per algorithm), scorecard_bars.png (per property), scorecard_experiments.png (per experiment:
share solved and queries against the setting).

    python experiments/scorecard.py --algorithm XPO --algorithm mypkg.mymod:MyAlgorithm
    python experiments/scorecard.py --all [--quick] [--seeds N] [--workers N] [--dask-local N]
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

from xpo_sim import scorecard  # noqa: E402
from xpo_sim.plotting import plot_scorecard_bars, plot_scorecard_experiments, plot_scorecard_radar  # noqa: E402
from xpo_sim.solvers import ConvergenceWarning  # noqa: E402
from xpo_sim.sweep import check_sweep_arguments, execute_sweep, sweep_cli_arguments  # noqa: E402

DEFAULT_OUT = "results/scorecard"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algorithm", action="append", default=[], metavar="SPEC",
                        help="an algorithm to score: a built-in name or 'package.module:qualname' (repeatable)")
    parser.add_argument("--all", action="store_true", help="score every built-in method (and the two calibration ends)")
    parser.add_argument("--experiment", action="append", default=None, metavar="NAME",
                        help=f"run only this experiment (repeatable; default all: "
                             f"{', '.join(e.name for e in scorecard.suite())})")
    sweep_cli_arguments(parser, DEFAULT_OUT)
    args = parser.parse_args(argv)
    check_sweep_arguments(parser, args)
    if not args.algorithm and not args.all:
        parser.error("name at least one --algorithm SPEC, or give --all")
    entries = []
    try:
        if args.all:
            entries += scorecard.builtin_entries()
            entries += [scorecard.entry("StayAtReference"), scorecard.entry("ReportOptimum")]
        for spec in args.algorithm:
            if spec not in {e.label for e in entries}:
                entries.append(scorecard.entry(spec))
        for name in args.experiment or ():
            scorecard.experiment(name)
    except ValueError as err:
        parser.error(str(err))
    return args, entries


def main(argv=None) -> int:
    args, entries = parse_args(argv)
    start = time.perf_counter()
    configs, skipped = scorecard.plan(entries, quick=args.quick, seeds=args.seeds, experiments=args.experiment)
    print(f"scorecard v{scorecard.SUITE_VERSION}: {len(entries)} algorithm(s), {len(configs)} runs -> {args.out}",
          file=sys.stderr)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # the 'converged' column keeps them
        df = execute_sweep(configs, args)
    scores, settings = scorecard.score_results(df, configs, skipped)
    runs = scorecard.run_outcomes(df, configs)
    out, figures = Path(args.out), Path(args.figures)
    try:
        figures.mkdir(parents=True, exist_ok=True)
        scores.to_csv(out / "scores.csv", index=False)
        settings.to_csv(out / "settings.csv", index=False)
        runs.to_csv(out / "runs.csv", index=False)
        (out / "leaderboard.md").write_text(scorecard.leaderboard_markdown(scores), encoding="utf-8")
        (out / "experiments.md").write_text(scorecard.experiments_markdown(scores), encoding="utf-8")
        table = scorecard.leaderboard(scores)
        title = f"exploration scorecard v{scorecard.SUITE_VERSION}{' (quick)' if args.quick else ''}"
        if table.shape[1] - 1 >= 3:
            plot_scorecard_radar(table, title).savefig(figures / "scorecard_radar.png", dpi=120, bbox_inches="tight")
        plot_scorecard_bars(table, title).savefig(figures / "scorecard_bars.png", dpi=120, bbox_inches="tight")
        if len(settings):
            order = [e.name for e in scorecard.suite() if e.name in set(settings.experiment)]
            plot_scorecard_experiments(settings, order).savefig(figures / "scorecard_experiments.png", dpi=110,
                                                                bbox_inches="tight")
    except OSError as err:
        print(f"error: could not write {err.filename or args.out}: {err.strerror or err} (every run's shard is "
              f"complete in --out {args.out}: a rerun only rewrites the tables and figures)", file=sys.stderr)
        return 1
    print(scorecard.leaderboard_markdown(scores))
    for label, name, status in skipped:
        print(f"{label} / {name}: {status}", file=sys.stderr)
    print(f"{time.perf_counter() - start:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
