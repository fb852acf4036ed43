"""Preference queries against the reward range R_max: does XPO pay the e^{2 R_max} of its
guarantee, and does SE-POPO avoid it?

XPO's regret bound carries a factor e^{2 R_max} (Xie et al. 2024); SE-POPO (Chen, Chen, Sun
and Zhang 2025) claims a sample complexity polynomial in R_max. Here both, VPO and online
DPO run on the same needle bandit at reward scales R_max = 1, 2, 4, 8, with exact regret.

Instance: bandit_needle(8 responses, ε = 1e-2, reward_scale = R_max): π_ref puts mass ε on
the optimal response, whose reward is R_max; the other seven have reward 0. β = 0.1 and ε
are fixed, so a larger R_max makes Bradley–Terry labels between the needle and the rest
nearly deterministic (P = σ(R_max)) and π* sharper. Eight pairs a round, 125 rounds (1,000
queries), Bradley–Terry labels, implicit-reward class (box [0, R_max]) with the exact
per-round update, 12 seeds.
Methods:
  XPO         ỹ ∼ π_ref, α_t = 0.01/√t (the other experiments' setting);
  SE-POPO     epochs of 25 rounds (sampler π_ref, then the previous epoch's last iterate),
              preference incentive with α_t = 0.4/√t (0.4 = 4·0.01/β: XPO's initial pull);
  SE-POPO, authors' code   (with --sepopo-code only) variant="code" (github.com/MYC000801/SE-POPO,
              dpo_iteration/wpo.py): three iterations of ⌈rounds/3⌉ rounds, pairs from and DPO
              referenced to the iterate each starts from, α (σ(β h(y₂)) − ½)/β, α = 1e-2, 5e-3, 0;
              pairs of equal reward dropped as the code drops ties, or kept ("ties kept");
  VPO         on-policy pairs, exact E_{π_ref} log π with α_t = 0.8·√t (0.8 = 0.01·8/β: the
              same expected bonus weight per round as XPO's, so VPO differs from XPO by its
              pairs and by the exact expectation);
  online DPO  both responses from πᵗ, no bonus;
  XPO, box [0, 8]   a control: XPO as above, with the class's box fixed at [0, 8] for every
              R_max instead of the default [0, R_max] (the default box is the theory's class,
              |r̂| ≤ R_max, so it tells the learner the reward range).
  XPO, label noise of R_max = 1   (with --noise-control only) a control: XPO as above, labelled
              by Bradley–Terry with rationality 1/R_max, so that the needle beats a bad response
              with probability σ(1) at every R_max (the label noise of R_max = 1).
The α's are held fixed across R_max.

Outputs: shards and summary.csv (one group per R_max: queries to 10% of π_ref's regret,
fraction reaching it, final regret relative to π_ref's) in --out;
figures/reward_scale.png: median queries against R_max with an e^{2 R_max} reference line
through XPO's median at R_max = 1, and the fraction of runs that get there.

    python experiments/reward_scale.py [--quick] [--seeds N] [--workers N] [--sepopo-code] [--noise-control]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

from xpo_sim.plotting import plot_reward_scale  # noqa: E402
from xpo_sim.sweep import RunConfig, parse_sweep_args, print_summary, run_experiment  # noqa: E402

BETA, EPS, N_RESPONSES, BATCH = 0.1, 1e-2, 8, 8
SCALES = [1, 2, 4, 8]
METHODS = [
    ("XPO (α = 0.01/√t)", "XPO", dict(alpha=0.01, schedule="inv_sqrt")),
    ("SE-POPO (α = 0.4/√t)", "SEPOPO", dict(alpha=0.4, schedule="inv_sqrt", epoch_rounds=25)),
    ("VPO (α = 0.8√t)", "VPO", dict(alpha=0.8, schedule="sqrt")),
    ("online DPO", "OnlineDPO", {}),
    ("XPO, box [0, 8] at every R_max", "XPO", dict(alpha=0.01, schedule="inv_sqrt"), dict(box=(0.0, 8.0))),
]
SEPOPO_CODE = [  # --sepopo-code; epoch_rounds set per run (code_iterations)
    ("SE-POPO, authors' code", "SEPOPO", dict(variant="code")),
    ("SE-POPO, authors' code, ties kept", "SEPOPO", dict(variant="code", drop_ties=False)),
]


NOISE_CONTROL = "XPO, label noise of R_max = 1"  # --noise-control


def noise_control(scale: float) -> dict:
    """The control's oracle: Bradley–Terry with rationality 1/R_max, so that
    P(needle ≻ bad) = σ(R_max / R_max) = σ(1) at every R_max — the labels of R_max = 1."""
    return dict(oracle="BradleyTerry", oracle_args=dict(reward_scale=1.0 / scale))


def code_iterations(args: dict, rounds: int) -> dict:
    """SE-POPO's code variant runs the authors' three iterations over the run:
    epoch_rounds = ⌈rounds/3⌉ (their α has three entries, 1e-2, 5e-3, 0)."""
    return dict(args, epoch_rounds=-(-rounds // 3)) if args.get("variant") == "code" else args


def build_configs(quick: bool, seeds: int, sepopo_code: bool = False, noise: bool = False) -> list[RunConfig]:
    methods = METHODS + SEPOPO_CODE if sepopo_code else METHODS
    scales = [1, 4] if quick else SCALES
    rounds = 8 if quick else 125
    controls = [
        RunConfig(instance="bandit_needle",
                  instance_args=dict(n_responses=N_RESPONSES, eps=EPS, reward_scale=scale, seed=replicate),
                  algorithm="XPO", algorithm_args=dict(alpha=0.01, schedule="inv_sqrt", batch=BATCH), beta=BETA,
                  rounds=rounds, replicate=replicate, group=f"R_max={scale}", label=NOISE_CONTROL,
                  **noise_control(scale))
        for replicate in range(seeds) for scale in scales
    ] if noise else []
    return controls + [
        RunConfig(instance="bandit_needle",
                  instance_args=dict(n_responses=N_RESPONSES, eps=EPS, reward_scale=scale, seed=replicate),
                  algorithm=name, algorithm_args=dict(code_iterations(args, rounds), batch=BATCH), beta=BETA,
                  rounds=rounds,
                  replicate=replicate, group=f"R_max={scale}", label=label,
                  run_args=run_args[0] if run_args else {})
        for replicate in range(seeds)
        for scale in scales
        for label, name, args, *run_args in methods
    ]


def main(argv=None) -> int:
    args = parse_sweep_args(__doc__, "results/reward_scale", argv, switches=[
        ("--sepopo-code", "also run SE-POPO as its authors' code runs it (two more rows)"),
        ("--noise-control", "also run XPO with the label noise of R_max = 1 at every R_max (a control)")])
    sepopo_code, noise = args.sepopo_code, args.noise_control
    start = time.perf_counter()
    seeds = args.seeds or (2 if args.quick else 12)
    configs = build_configs(args.quick, seeds, sepopo_code, noise)
    _, per_run, summary, figures = run_experiment("reward scale", configs, args)
    scale_of = {c.group: c.instance_args["reward_scale"] for c in configs}
    per_run["reward_scale"] = per_run.group.map(scale_of)
    summary.insert(1, "reward_scale", summary.group.map(scale_of))
    summary = summary.sort_values(["label", "reward_scale"])
    summary.to_csv(Path(args.out) / "summary.csv", index=False)
    title = (f"bandit_needle({N_RESPONSES}, ε = {EPS:g}) with the optimal reward R_max, β = {BETA}, "
             f"{BATCH} pairs/round, {seeds} seeds")
    plot_reward_scale(per_run, anchor=METHODS[0][0], title=title).savefig(figures / "reward_scale.png", dpi=120)
    print_summary(summary, ["reward_scale", "label", "queries_median", "queries_q25", "queries_q75", "reached",
                            "final_regret_rel", "best_regret_rel"])
    print(f"{time.perf_counter() - start:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
