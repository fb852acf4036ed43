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
that got there, final and best regret relative to π_ref's), and --figures/transformer_xpo.png
(regret against queries, mean and 95% band over seeds; one panel per policy class).

    python experiments/transformer_xpo.py [--quick] [--device cpu|cuda] [--out DIR] [--figures DIR]

Needs the torch extra (pip install 'xpo_sim[torch]'; install the CPU build first:
pip install torch==2.13.0).
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

import xpo_sim  # noqa: E402
from xpo_sim import XPO, OnlineDPO, envs  # noqa: E402
from xpo_sim.analysis import queries_to_threshold, summarize_runs  # noqa: E402
from xpo_sim.plotting import plot_regret_curves  # noqa: E402

BETA, BATCH, VOCAB, HORIZON = 0.1, 8, 4, 3
ALGORITHMS = [
    ("XPO (α = 0.01/√t)", XPO(alpha=0.01, schedule="inv_sqrt", batch=BATCH)),
    ("online DPO", OnlineDPO(batch=BATCH)),
]
TABULAR = ("logits", "implicit")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2 seeds, 12 rounds (a smoke run of seconds)")
    parser.add_argument("--device", default="cpu", help="torch device for the transformer: cpu (default) or cuda")
    parser.add_argument("--out", default="results/transformer_xpo", help="folder for results.csv and summary.csv")
    parser.add_argument("--figures", default="figures", help="folder for transformer_xpo.png (default figures/)")
    parser.add_argument("--seeds", type=int, default=None, help="seeds (instances and runs; default 6, quick 2)")
    parser.add_argument("--rounds", type=int, default=None, help="rounds of 8 pairs (default 100, quick 12)")
    parser.add_argument("--eps", type=float, default=1e-2, help="π_ref's mass on the optimal response (default 0.01)")
    parser.add_argument("--steps", type=int, default=10, help="transformer Adam steps per round (default 10)")
    parser.add_argument("--lr", type=float, default=1e-3, help="transformer Adam learning rate (default 1e-3)")
    parser.add_argument("--eval-every", type=int, default=None, help="exact evaluation every N rounds (default 5, quick 2)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: the model is too small to gain from more, "
                             "and multi-threaded torch slows down badly on a loaded machine)")
    args = parser.parse_args(argv)
    args.seeds = args.seeds or (2 if args.quick else 6)
    args.rounds = args.rounds or (12 if args.quick else 100)
    args.eval_every = args.eval_every or (2 if args.quick else 5)
    for name in ("seeds", "rounds", "steps", "eval_every", "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if not 0 < args.eps < 1:
        parser.error("--eps must lie in (0, 1)")
    if not args.lr > 0:
        parser.error("--lr must be positive")
    return parser, args


def run_seed(replicate: int, args, torch_backend) -> tuple[pd.DataFrame, dict]:
    """Every run of one seed (one instance), and facts about its reference."""
    needle = envs.token_needle(VOCAB, HORIZON, args.eps, seed=replicate)
    policy = torch_backend.TinyTransformerPolicy(needle, seed=replicate, device=args.device)
    start = time.perf_counter()
    fit = torch_backend.distill(policy, needle)
    distill_s = time.perf_counter() - start
    reference = policy.frozen_copy()
    instance = torch_backend.with_reference(needle, reference)
    facts = dict(replicate=replicate, distill_max_kl=fit.max_kl, distill_steps=fit.steps, distill_s=distill_s,
                 ref_opt_mass=xpo_sim.optimal_mass(instance, instance.ref_logp), n_params=policy.n_params)
    frames = []
    for label, algorithm in ALGORITHMS:
        start = time.perf_counter()
        df = torch_backend.train(instance, algorithm, BETA, args.rounds, copy.deepcopy(policy), reference=reference,
                                 seed=replicate, steps=args.steps, lr=args.lr, eval_every=args.eval_every)
        facts[f"seconds {label}"] = time.perf_counter() - start
        frames.append(df.assign(group="transformer", policy="transformer", label=label))
        for policy_class in TABULAR:
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
        torch_backend.resolve_device(args.device)
    except ValueError as error:
        parser.error(str(error))
    torch.set_num_threads(args.threads)
    device_name = torch.cuda.get_device_name(torch.device(args.device)) if args.device.startswith("cuda") else "CPU"

    start = time.perf_counter()
    print(f"transformer_xpo: {args.seeds} seeds, {args.rounds} rounds, ε = {args.eps:g}, device {args.device} "
          f"({device_name}), {args.threads} torch thread(s)", file=sys.stderr)
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
    summary = summarize_runs(queries_to_threshold(df, fraction=0.1))
    summary.to_csv(out / "summary.csv", index=False)

    figures = Path(args.figures)
    figures.mkdir(parents=True, exist_ok=True)
    n_params = int(facts.n_params.iloc[0])
    titles = {
        ("transformer", args.eps): f"transformer ({n_params / 1e3:.0f}k params, {args.steps} Adam steps/round)",
        ("logits", args.eps): "tabular logits + Adam (20 steps/round)",
        ("implicit", args.eps): "tabular implicit-reward class, exact argmin",
    }
    figure = plot_regret_curves(df, [("transformer", args.eps), *((g, args.eps) for g in TABULAR)], titles)
    top = max(ax.get_ylim()[1] for ax in figure.axes if ax.get_visible())
    for ax in figure.axes:
        ax.set_ylim(0, top)  # one scale for the three panels; regret is never negative
    figure.suptitle(f"token_needle({VOCAB}, {HORIZON}, ε = {args.eps:g}) with π_ref := the distilled transformer, "
                    f"β = {BETA}, {BATCH} pairs/round, {args.seeds} seeds", fontsize=10)
    figure.tight_layout()
    figure.savefig(figures / "transformer_xpo.png", dpi=110)

    print(f"reference: distilled to max per-state KL {facts.distill_max_kl.max():.2e} "
          f"({facts.distill_steps.mean():.0f} Adam steps, {facts.distill_s.mean():.1f} s per seed); "
          f"π_ref(optimal response) after replacement {facts.ref_opt_mass.min():.4g}–{facts.ref_opt_mass.max():.4g} "
          f"(ε = {args.eps:g}); transformer {n_params:,} parameters")
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
    print(f"\nresults: {out}/results.csv, summary.csv; figure: {figures}/transformer_xpo.png; "
          f"{time.perf_counter() - start:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
