"""The implicit class's box: does the bound on the fitted rewards decide the results?

The implicit-reward class is Π = {π_θ ∝ π_ref exp(θ/β) : θ ∈ [lo, hi]^n}, one reward
parameter per response. Its default box is the true reward range, [min(0, r_min),
max(0, r_max)] = [0, 1] on the needles, so the optimum's θ* sits on the box's corner. This
sweep widens the box, B = [0, w] for w = 1, 2, 4, 8 (w = 1 is the default), and moves it,
[−1, 1] and [−0.5, 1.5] beside [0, 2] (on these one-prompt bandits with responses of equal
length a shift of every θ by c leaves π_θ unchanged, so only the width should matter — the
sweep checks it).

Instances: token_needle(vocab 4, horizon 3, ε = 1e-3) (64 responses, 63 equally bad) and
bandit_needle(8 responses, ε = 1e-3); β = 0.1, eight pairs a round, 200 rounds (1,600
queries), Bradley–Terry labels, the exact per-round argmin (Newton, a local minimizer for
XPO). Methods: XPO (α = 0.01/√t, ỹ ∼ π_ref), hybrid DPO, offline DPO, online DPO.

Read per method and box, with 95% intervals over seeds: the share of runs whose final regret
is below π_ref's and the share reaching 10% of it (Wilson), the median final and best
regret relative to π_ref's (bootstrap).

Outputs: shards, summary.csv and intervals.csv in --out; figures/box_sweep.png.

    python experiments/box_sweep.py [--quick] [--seeds N] [--workers N]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

from xpo_sim.analysis import interval_summary  # noqa: E402
from xpo_sim.plotting import plot_box_sweep  # noqa: E402
from xpo_sim.sweep import RunConfig, parse_sweep_args, run_experiment  # noqa: E402

BETA, BATCH, EPS = 0.1, 8, 1e-3
INSTANCES = {
    "token_needle": dict(vocab=4, horizon=3, eps=EPS),
    "bandit_needle": dict(n_responses=8, eps=EPS),
}
METHODS = [
    ("XPO", "XPO", dict(alpha=0.01, schedule="inv_sqrt")),
    ("hybrid DPO", "HybridDPO", {}),
    ("offline DPO", "OfflineDPO", {}),
    ("online DPO", "OnlineDPO", {}),
]
WIDTHS = (1.0, 2.0, 4.0, 8.0)
SHIFTED = ((-1.0, 1.0), (-0.5, 1.5))  # width 2, moved


def boxes(quick: bool) -> list[tuple[float, float]]:
    """The boxes swept: [0, w] for every width, then the moved width-2 boxes."""
    if quick:
        return [(0.0, 1.0), (0.0, 4.0), (-1.0, 1.0)]
    return [(0.0, w) for w in WIDTHS] + list(SHIFTED)


def box_label(box) -> str:
    return f"[{box[0]:g}, {box[1]:g}]"


def kinds(quick: bool) -> list[tuple[str, str, tuple[float, float]]]:
    """(run label, method label, box) of every method and box."""
    return [(f"{method} | {box_label(box)}", method, box) for method, _, _ in METHODS for box in boxes(quick)]


def build_configs(quick: bool, seeds: int) -> list[RunConfig]:
    rounds = 10 if quick else 200
    return [
        RunConfig(instance=instance, instance_args=dict(args, seed=replicate), algorithm=name,
                  algorithm_args=dict(method_args, batch=BATCH), beta=BETA, rounds=rounds, replicate=replicate,
                  group=instance, label=f"{label} | {box_label(box)}", run_args=dict(box=list(box), record="geometric"))
        for replicate in range(seeds)
        for instance, args in INSTANCES.items()
        for label, name, method_args in METHODS
        for box in boxes(quick)
    ]


def main(argv=None) -> int:
    args = parse_sweep_args(__doc__, "results/box_sweep", argv)
    start = time.perf_counter()
    seeds = args.seeds or (2 if args.quick else 16)
    configs = build_configs(args.quick, seeds)
    _, per_run, _, figures = run_experiment("box sweep", configs, args)
    parts = {label: (method, box) for label, method, box in kinds(args.quick)}
    per_run["method"] = per_run.label.map(lambda label: parts[label][0])
    per_run["box"] = per_run.label.map(lambda label: box_label(parts[label][1]))
    per_run["width"] = per_run.label.map(lambda label: parts[label][1][1] - parts[label][1][0])
    per_run["lo"] = per_run.label.map(lambda label: parts[label][1][0])
    table = interval_summary(per_run, ["group", "method", "box", "width", "lo"])
    table.to_csv(Path(args.out) / "intervals.csv", index=False)
    plot_box_sweep(table, f"β = {BETA}, {BATCH} pairs a round, ε = {EPS:g}; median and 95% interval over seeds"
                   ).savefig(figures / "box_sweep.png", dpi=120, bbox_inches="tight")
    show = table.assign(
        below=table.apply(lambda r: f"{r.below_ref:.2f} [{r.below_ref_low:.2f}, {r.below_ref_high:.2f}]", axis=1),
        final=table.apply(lambda r: f"{r.final_rel:.2f} [{r.final_rel_low:.2f}, {r.final_rel_high:.2f}]", axis=1),
        reached10=table.apply(lambda r: f"{r.reached:.2f} [{r.reached_low:.2f}, {r.reached_high:.2f}]", axis=1))
    print(show[["group", "method", "box", "runs", "below", "reached10", "final"]].to_string(index=False))
    print(f"{time.perf_counter() - start:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
