"""XPO against online DPO with a small transformer policy, next to the tabular policies on the
same instance, every regret exact.

Instance: token_needle(vocab=4, horizon=3, ε), β = 0.1, eight pairs per round, Bradley–Terry
labels: 64 three-token responses, reward 1 for one of them, 0 for the rest. For each seed:

1. build the instance (seed = replicate) and a TinyTransformerPolicy (default size, seed =
   replicate); distil the transformer to the instance's π_ref (per-state KL, Adam), so that
   ε keeps its meaning;
2. set the instance's π_ref to the distilled, frozen transformer's exact per-state
   probabilities (xpo_sim.torch.with_reference): π*, V* and every regret are then exact for
   training that transformer against that reference;
3. run XPO (ỹ ∼ π_ref, α_t = 0.01/√t) and online DPO with the transformer (10 Adam steps of
   lr 1e-3 per round on the cumulative objective, exact evaluation every --eval-every
   rounds), and with the two tabular classes on the same reference-replaced instance: logits
   + Adam (20 steps, lr 0.1) and the implicit-reward class with the exact per-round argmin.

Outputs: --out/results.csv (every evaluated row; columns of xpo_sim.run plus group, label,
policy, eps, replicate), --out/summary.csv (per group and label: queries to regret ≤ 10% of
π_ref's — the first *evaluated* round, an upper bound for the transformer — fraction of runs
that got there, final and best regret relative to π_ref's), --out/intervals.csv (the same per
group and label with 95% intervals over seeds: Wilson for the shares of runs reaching 10% and
ending below π_ref, percentile bootstrap for the medians; xpo_sim.analysis.interval_summary),
and --figures/transformer_xpo.png
(regret against queries, mean and 95% band over seeds; one panel per policy class).

Size presets (--preset):

* cpu (default): the above — token_needle(4, 3): 64 responses, 21 prefixes; the default
  TinyTransformerPolicy (width 96, 3 blocks, 337k parameters); float32 throughout.
* gpu: token_needle(8, 5): 32,768 five-token responses, 4,681 prefixes (4,096 maximal ones);
  a transformer of width 512, 3 blocks, 8 heads: 9.47 million parameters. Distillation
  (lr 1e-3, at most 3,000 full-batch Adam steps over every prefix) and training (lr 2e-4)
  run their forward passes under bfloat16 autocast on CUDA (--precision bf16); the exact
  per-state table is a float32 forward pass over the 4,096 maximal prefixes, renormalized in
  float64, as for the cpu preset, so every regret stays exact. The learning rates are the cpu
  preset's divided by 3–5 (the width ratio is 5.3) and untuned. Outputs go to
  results/transformer_xpo_gpu and figures/transformer_xpo_gpu.png.
  Measured on the CPU (2 shared cores, 2 torch threads, load average 4–6): one exact table
  (4,096 maximal prefixes in one chunk) takes 15–24 s and raises the peak resident memory by
  0.57 GB (0.14 GB with chunks of 512 prefixes); the table itself is 4,681 × 8 float64 =
  0.3 MB. Distillation costs about three tables per Adam step, so the preset is refused on
  the CPU unless --allow-cpu is given (hours). bf16 autocast is for the GPU: on this CPU it
  made a small Adam step 3–14 times slower than float32.
  Estimates for one GPU of the H100/H200 class (not measured: the CUDA path has not run on a
  card yet): a table is 0.39 TFLOP of float32 work (2 FLOPs × 9.4M weights × 20,480 tokens),
  tens of milliseconds; a full-batch bf16 distillation step about 1.2 TFLOP, milliseconds to
  tens of milliseconds, with about 2 GB of saved activations; parameters, gradients and Adam
  state 4 × 38 MB; so a seed takes about a minute of GPU time (≤ 3,000 distillation steps,
  then 2 × 100 rounds) and well under 5 GB. The tabular runs stay on the CPU (about 0.05 s a
  round each at this size, measured).

    python experiments/transformer_xpo.py [--quick] [--preset cpu|gpu] [--device cpu|cuda] [--out DIR]
        [--figures DIR]

Needs the torch extra (pip install 'xpo_sim[torch]'; install the CPU build first:
pip install torch==2.13.0).
"""

from __future__ import annotations

import argparse
import copy
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

import xpo_sim  # noqa: E402
from xpo_sim import XPO, OnlineDPO, checks, envs  # noqa: E402
from xpo_sim.analysis import interval_summary, queries_to_threshold, summarize_runs  # noqa: E402
from xpo_sim.plotting import plot_regret_curves  # noqa: E402
from xpo_sim.sweep import check_output_file, check_output_folder  # noqa: E402

BETA, BATCH = 0.1, 8
ALGORITHMS = [
    ("XPO (α = 0.01/√t)", XPO(alpha=0.01, schedule="inv_sqrt", batch=BATCH)),
    ("online DPO", OnlineDPO(batch=BATCH)),
]
TABULAR = ("logits", "implicit")


@dataclass(frozen=True)
class Preset:
    """Instance and transformer sizes, and the optimizer settings that go with them."""

    name: str
    vocab: int
    horizon: int
    width: int
    depth: int
    heads: int
    lr: float  # Adam learning rate of the training rounds
    distill_lr: float
    distill_steps: int  # at most; distillation stops at max per-state KL ≤ 1e-4
    precision: str  # of the training forward passes; the exact table is always float32 → float64
    out: str
    figure: str


PRESETS = {
    "cpu": Preset("cpu", vocab=4, horizon=3, width=96, depth=3, heads=4, lr=1e-3, distill_lr=3e-3,
                  distill_steps=3000, precision="fp32", out="results/transformer_xpo", figure="transformer_xpo.png"),
    "gpu": Preset("gpu", vocab=8, horizon=5, width=512, depth=3, heads=8, lr=2e-4, distill_lr=1e-3,
                  distill_steps=3000, precision="bf16", out="results/transformer_xpo_gpu",
                  figure="transformer_xpo_gpu.png"),
}
CPU_TABLE_SECONDS = {"gpu": 20.0}  # one exact table on 2 shared CPU cores (measured: 15–24 s), for the refusal


def build(preset: Preset, replicate: int, eps: float, torch_backend, device="cpu"):
    """The needle instance of one seed and the (undistilled) transformer of ``preset``."""
    needle = envs.token_needle(preset.vocab, preset.horizon, eps, seed=replicate)
    policy = torch_backend.TinyTransformerPolicy(needle, width=preset.width, depth=preset.depth, heads=preset.heads,
                                                 seed=replicate, device=device)
    return needle, policy


def format_count(n: int) -> str:
    return f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.0f}k"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2 seeds, 12 rounds (a smoke run of seconds)")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu",
                        help="instance and model size: cpu (default; token_needle(4, 3), 337k parameters) or gpu "
                             "(token_needle(8, 5), 32,768 responses, 9.5M parameters, bf16 training; needs a GPU)")
    parser.add_argument("--device", default="cpu", help="torch device for the transformer: cpu (default) or cuda")
    parser.add_argument("--allow-cpu", action="store_true",
                        help="run --preset gpu on the CPU anyway (hours: refused without this flag)")
    parser.add_argument("--out", default=None,
                        help="folder for results.csv and summary.csv (default results/transformer_xpo, "
                             "results/transformer_xpo_gpu for --preset gpu)")
    parser.add_argument("--figures", default="figures",
                        help="folder for transformer_xpo.png (transformer_xpo_gpu.png for --preset gpu; "
                             "default figures/)")
    parser.add_argument("--seeds", type=int, default=None, help="seeds (instances and runs; default 6, quick 2)")
    parser.add_argument("--rounds", type=int, default=None, help="rounds of 8 pairs (default 100, quick 12)")
    parser.add_argument("--eps", type=float, default=1e-2, help="π_ref's mass on the optimal response (default 0.01)")
    parser.add_argument("--steps", type=int, default=10, help="transformer Adam steps per round (default 10)")
    parser.add_argument("--lr", type=float, default=None,
                        help="transformer Adam learning rate (default 1e-3; 2e-4 for --preset gpu)")
    parser.add_argument("--distill-steps", type=int, default=None,
                        help="at most this many distillation steps (default 3000; 0 keeps the initial transformer)")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default=None,
                        help="precision of the training forward passes (default fp32; bf16 autocast for --preset "
                             "gpu on CUDA); the exact evaluation is float32 → float64 either way")
    parser.add_argument("--tabular", choices=["both", "logits", "implicit", "none"], default="both",
                        help="tabular policy classes run next to the transformer (default both)")
    parser.add_argument("--eval-every", type=int, default=None, help="exact evaluation every N rounds (default 5, quick 2)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: the model is too small to gain from more, "
                             "and multi-threaded torch slows down badly on a loaded machine)")
    args = parser.parse_args(argv)
    preset = args.preset = PRESETS[args.preset]
    # defaults only where the flag was not given: an explicit 0 is an error below, not a default
    args.seeds = (2 if args.quick else 6) if args.seeds is None else args.seeds
    args.rounds = (12 if args.quick else 100) if args.rounds is None else args.rounds
    args.eval_every = (2 if args.quick else 5) if args.eval_every is None else args.eval_every
    args.out = preset.out if args.out is None else args.out
    args.lr = preset.lr if args.lr is None else args.lr
    args.distill_steps = preset.distill_steps if args.distill_steps is None else args.distill_steps
    args.precision_given = args.precision is not None
    args.precision = args.precision or preset.precision
    args.tabular = {"both": TABULAR, "none": ()}.get(args.tabular, (args.tabular,))
    for name in ("seeds", "rounds", "steps", "eval_every", "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    try:  # sizes that cannot be waited for or cannot fit, before minutes of distillation
        checks.seeds("--seeds", args.seeds)
        checks.rounds_fit("--rounds", args.rounds)
    except ValueError as err:
        parser.error(str(err))
    if args.distill_steps < 0:
        parser.error("--distill-steps must be >= 0")
    if not 0 < args.eps < 1:
        parser.error("--eps must lie in (0, 1)")
    if not (math.isfinite(args.lr) and args.lr > 0):
        parser.error(f"--lr must be a positive finite number, got {args.lr:g}")
    # the output paths, before any run (a bad one would otherwise fail after minutes of training)
    out = check_output_folder(parser, "--out", args.out)
    figures = check_output_folder(parser, "--figures", args.figures)
    for name in ("results.csv", "summary.csv", "intervals.csv"):
        check_output_file(parser, "--out", out / name)
    check_output_file(parser, "--figures", figures / preset.figure)
    if preset.name in CPU_TABLE_SECONDS and args.device.split(":")[0] == "cpu" and not args.allow_cpu:
        parser.error(cpu_warning(args) + "; use --device cuda, or pass --allow-cpu to run it anyway")
    return parser, args


def cpu_warning(args) -> str:
    return (f"--preset {args.preset.name} is sized for a GPU: on the CPU one exact table of its model took about "
            f"{CPU_TABLE_SECONDS[args.preset.name]:.0f} s (2 shared cores, measured) and distillation costs about "
            f"three tables per Adam step (up to {args.distill_steps} steps), so a run takes hours")


def synchronize(torch, device) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def run_seed(replicate: int, args, torch_backend) -> tuple[pd.DataFrame, dict]:
    """Every run of one seed (one instance), and facts about its reference."""
    import torch

    preset = args.preset
    needle, policy = build(preset, replicate, args.eps, torch_backend, device=args.device)
    start = time.perf_counter()
    fit = torch_backend.distill(policy, needle, steps=args.distill_steps, lr=preset.distill_lr,
                                precision=args.precision)
    synchronize(torch, args.device)
    distill_s = time.perf_counter() - start
    reference = policy.frozen_copy()
    start = time.perf_counter()
    instance = torch_backend.with_reference(needle, reference)  # one exact table of the reference
    table_s = time.perf_counter() - start
    facts = dict(replicate=replicate, distill_max_kl=fit.max_kl, distill_steps=fit.steps, distill_s=distill_s,
                 table_s=table_s, ref_opt_mass=xpo_sim.optimal_mass(instance, instance.ref_logp),
                 n_params=policy.n_params, n_states=needle.n_states, n_responses=needle.n_trajectories)
    frames = []
    for label, algorithm in ALGORITHMS:
        start = time.perf_counter()
        df = xpo_sim.run(instance, algorithm, BETA, args.rounds, seed=replicate, policy=copy.deepcopy(policy),
                         reference=reference, steps=args.steps, lr=args.lr, eval_every=args.eval_every,
                         precision=args.precision, progress=False)
        facts[f"seconds {label}"] = time.perf_counter() - start
        frames.append(df.assign(group="transformer", policy="transformer", label=label))
        for policy_class in args.tabular:
            df = xpo_sim.run(instance, algorithm, BETA, args.rounds, seed=replicate, policy=policy_class)
            frames.append(df.assign(group=policy_class, policy=policy_class, label=label))
    return pd.concat(frames, ignore_index=True).assign(eps=args.eps, replicate=replicate), facts


def main(argv=None) -> int:
    parser, args = parse_args(argv)
    try:
        import torch

        from xpo_sim import torch as torch_backend
    except ImportError as error:
        parser.error(str(error))
    try:
        device = torch_backend.resolve_device(args.device)
    except ValueError as error:
        parser.error(str(error))
    preset = args.preset
    if device.type == "cpu" and preset.name in CPU_TABLE_SECONDS:
        print(f"warning: {cpu_warning(args)} (--allow-cpu given: running anyway)", file=sys.stderr)
    if device.type == "cpu" and args.precision == "bf16" and not args.precision_given:
        args.precision = "fp32"  # bf16 autocast is slower than float32 on a CPU; --precision bf16 forces it
    torch.set_num_threads(args.threads)
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    start = time.perf_counter()
    print(f"transformer_xpo: preset {preset.name}, {args.seeds} seeds, {args.rounds} rounds, ε = {args.eps:g}, "
          f"device {args.device} ({device_name}), {args.threads} torch thread(s), training precision "
          f"{args.precision}", file=sys.stderr)
    frames, facts = [], []
    for replicate in range(args.seeds):
        df, fact = run_seed(replicate, args, torch_backend)
        frames.append(df)
        facts.append(fact)
        print(f"  seed {replicate} done, {time.perf_counter() - start:.1f} s", file=sys.stderr)
    df = pd.concat(frames, ignore_index=True)
    facts = pd.DataFrame(facts)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    df.to_csv(out / "results.csv", index=False)
    per_run = queries_to_threshold(df, fraction=0.1)
    summary = summarize_runs(per_run)
    summary.to_csv(out / "summary.csv", index=False)
    interval_summary(per_run).to_csv(out / "intervals.csv", index=False)

    figures = Path(args.figures)
    figures.mkdir(parents=True, exist_ok=True)
    n_params = int(facts.n_params.iloc[0])
    titles = {
        ("transformer", args.eps): f"transformer ({format_count(n_params)} params, {args.steps} Adam steps/round)",
        ("logits", args.eps): "tabular logits + Adam (20 steps/round)",
        ("implicit", args.eps): "tabular implicit-reward class, exact argmin",
    }
    figure = plot_regret_curves(df, [("transformer", args.eps), *((g, args.eps) for g in args.tabular)], titles)
    top = max(ax.get_ylim()[1] for ax in figure.axes if ax.get_visible())
    for ax in figure.axes:
        ax.set_ylim(0, top)  # one scale for the panels; regret is never negative
    figure.suptitle(f"token_needle({preset.vocab}, {preset.horizon}, ε = {args.eps:g}) with π_ref := the distilled "
                    f"transformer, β = {BETA}, {BATCH} pairs/round, {args.seeds} seeds", fontsize=10)
    figure.tight_layout()
    figure.savefig(figures / preset.figure, dpi=110)

    print(f"reference: distilled to max per-state KL {facts.distill_max_kl.max():.2e} "
          f"({facts.distill_steps.mean():.0f} Adam steps, {facts.distill_s.mean():.1f} s per seed); "
          f"π_ref(optimal response) after replacement {facts.ref_opt_mass.min():.4g}–{facts.ref_opt_mass.max():.4g} "
          f"(ε = {args.eps:g}); transformer {n_params:,} parameters")
    if preset.name != "cpu":
        n_states, n_actions = int(facts.n_states.iloc[0]), preset.vocab
        memory = (f"; peak CUDA memory {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB"
                  if device.type == "cuda" else "")
        print(f"preset {preset.name}: token_needle({preset.vocab}, {preset.horizon}), "
              f"{int(facts.n_responses.iloc[0]):,} responses, {n_states:,} prefixes; exact table "
              f"{n_states:,} × {n_actions} float64 = {n_states * n_actions * 8 / 1e6:.2f} MB, "
              f"{facts.table_s.median():.3f} s per table (median over seeds); training precision "
              f"{args.precision}{memory}")
    for label, _ in ALGORITHMS:
        seconds = facts[f"seconds {label}"]
        print(f"transformer {label}: {seconds.mean():.1f} s per run ({args.rounds / seconds.mean():.1f} rounds/s)")
    columns = ["group", "label", "runs", "queries_median", "reached", "final_regret_rel", "best_regret_rel"]
    print(summary[columns].to_string(index=False, float_format=lambda x: f"{x:.3g}"))
    final = df.sort_values("round").groupby(["group", "label", "replicate"]).tail(1)
    print("\nfinal regret per seed (π_ref's regret: "
          f"{np.round(df[df['round'] == 0].groupby('replicate').regret.first().to_numpy(), 3).tolist()})")
    print(final.pivot_table(index=["group", "label"], columns="replicate", values="regret")
          .to_string(float_format=lambda x: f"{x:.3f}"))
    print(f"\nresults: {out}/results.csv, summary.csv, intervals.csv; figure: {figures}/{preset.figure}; "
          f"{time.perf_counter() - start:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
