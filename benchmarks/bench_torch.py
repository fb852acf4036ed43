"""Speed of the torch backend: sampled tokens per second, exact-table extraction, and training
rounds per second of xpo_sim.run with the transformer, on CPU and (when torch sees one) on a GPU.

Instances (β = 0.1): the transformer_xpo experiment's token_needle(vocab 4, horizon 3,
ε = 0.01) — 21 prefixes, 64 responses — and a larger token_tree(vocab 8, horizon 4) — 585
prefixes, 4,096 responses. The policy is TinyTransformerPolicy at its default size.

* sampling: ``policy.sample`` of N responses (autoregressive, one forward pass per token,
  no KV cache), best of repeats; sampled tokens per second = Σ lengths / seconds.
* table: ``policy.logp_table()`` (the exact per-state table, float64), best of repeats.
* training: ``xpo_sim.run(..., policy=transformer)`` with XPO (ỹ ∼ π_ref, α = 0.01/√t) and online DPO, 8 pairs
  per round, 10 Adam steps per round (best of 2 runs after a warm-up run), exact evaluation
  only at the first and last rounds
  and the exact concentrability tracker off (``track_concentrability=False``), so rounds
  per second measure sampling + labelling + the Adam steps; a second XPO figure with the
  defaults (evaluation and tracker every round) shows their cost.

Every figure is printed with the device's name (CPU model and torch thread count, or
``torch.cuda.get_device_name()``). Timings on a small shared machine are noisy; the header
prints the load average.

``--quick`` runs the same code paths on tiny sizes, in seconds: a TinyTransformerPolicy of
width 32, depth 1, 2 heads, 16 and 64 sampled responses, token_tree(vocab 4, horizon 4) (85
prefixes, 256 responses) in place of token_tree(8, 4), 2 training rounds, one repeat.
Without torch the script prints that it was skipped and exits with status 0.

    python benchmarks/bench_torch.py [--quick] [--threads N] [--device cpu|cuda|all]
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import sys
import time

import numpy as np


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "CPU"


def device_label(torch, device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"cpu ({cpu_name()}, {torch.get_num_threads()} torch thread(s))"


def sync(torch, device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def best_time(torch, device, fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        sync(torch, device)
        start = time.perf_counter()
        fn()
        sync(torch, device)
        best = min(best, time.perf_counter() - start)
    return best


QUICK_POLICY = dict(width=32, depth=1, heads=2)  # --quick: a smaller TinyTransformerPolicy


def policy_options(args) -> dict:
    return QUICK_POLICY if args.quick else {}


def instances(envs, quick: bool = False):
    vocab, horizon = (4, 4) if quick else (8, 4)
    return [
        ("token_needle(4, 3, ε=0.01)", envs.token_needle(4, 3, 0.01, seed=0)),
        (f"token_tree({vocab}, {horizon})", envs.token_tree(vocab, horizon, seed=0)),
    ]


def bench_device(torch, device, args, rows: list) -> None:
    import xpo_sim
    from xpo_sim import XPO, OnlineDPO, envs
    from xpo_sim.torch import TinyTransformerPolicy, with_reference

    label = device_label(torch, device)
    sample_sizes = [16, 64] if args.quick else [64, 1024, 16384]
    rounds = 2 if args.quick else 50
    repeats = 1 if args.quick else 5
    train_repeats = 1 if args.quick else 2
    for name, mdp in instances(envs, args.quick):
        policy = TinyTransformerPolicy(mdp, seed=0, device=device, **policy_options(args))
        reference = policy.frozen_copy()
        instance = with_reference(mdp, reference)
        generator = torch.Generator(device=device).manual_seed(0)
        rng = np.random.default_rng(0)
        for n in sample_sizes:
            prompts = torch.as_tensor(rng.choice(mdp.n_states, size=n, p=mdp.start), device=device)
            policy.sample(prompts, generator)  # warm-up
            out = {}

            def draw():
                out["lengths"] = policy.sample(prompts, generator)[2]

            seconds = best_time(torch, device, draw, repeats)
            tokens = int(out["lengths"].sum())
            rows.append((label, name, f"sample {n:,} responses", f"{tokens / seconds:,.0f} tokens/s",
                         f"{seconds * 1e3:.2f} ms per call"))
        policy.logp_table()
        seconds = best_time(torch, device, policy.logp_table, repeats)
        rows.append((label, name, f"logp_table ({mdp.n_states:,} states)", f"{mdp.n_states / seconds:,.0f} states/s",
                     f"{seconds * 1e3:.2f} ms per call"))
        runs = [
            ("XPO", XPO(alpha=0.01, schedule="inv_sqrt", batch=8), dict(eval_every=rounds, max_enumerate=0)),
            ("online DPO", OnlineDPO(batch=8), dict(eval_every=rounds, max_enumerate=0)),
            ("XPO, exact eval + tracker every round", XPO(alpha=0.01, schedule="inv_sqrt", batch=8), dict(eval_every=1)),
        ]
        xpo_sim.run(instance, OnlineDPO(batch=8), 0.1, 1 if args.quick else 2, policy=copy.deepcopy(policy),
                    reference=reference, progress=False)  # warm-up
        for run_name, algorithm, options in runs:
            seconds = float("inf")
            for _ in range(train_repeats):
                sync(torch, device)
                df = xpo_sim.run(instance, algorithm, 0.1, rounds, seed=0, policy=copy.deepcopy(policy),
                                 reference=reference, steps=10, progress=False, **options)
                sync(torch, device)
                seconds = min(seconds, df.attrs["seconds"])
            rows.append((label, name, f"train {run_name}, {rounds} rounds × 8 pairs, 10 Adam steps",
                         f"{rounds / seconds:.2f} rounds/s",
                         f"{df.attrs['sampled_tokens'] / seconds:,.0f} sampled tokens/s over the run"))
        print(f"  {label}: {name} done", file=sys.stderr)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="smoke test of the same code paths on tiny sizes (seconds): a policy of "
                             "width 32, depth 1, 2 heads, 16 and 64 sampled responses, token_tree(4, 4) "
                             "instead of token_tree(8, 4), 2 training rounds, one repeat")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1, as the experiment uses; 0 = torch's default)")
    parser.add_argument("--device", choices=["all", "cpu", "cuda"], default="all",
                        help="all (default): CPU, and CUDA when torch.cuda.is_available(); or only one")
    args = parser.parse_args(argv)
    if args.threads < 0:
        parser.error("--threads must be >= 0")
    import xpo_sim

    try:
        import torch
    except ImportError as error:
        print(f"bench_torch: skipped: torch is not importable ({error}); pip install torch, CPU build")
        return 0
    import xpo_sim.torch  # torch is there: an ImportError here is a real failure

    if args.threads:
        torch.set_num_threads(args.threads)
    devices = []
    if args.device in ("all", "cpu"):
        devices.append(torch.device("cpu"))
    if args.device in ("all", "cuda"):
        if torch.cuda.is_available():
            devices.append(torch.device("cuda"))
        elif args.device == "cuda":
            parser.error("--device cuda: torch.cuda.is_available() is False")

    load = os.getloadavg()[0]
    start = time.perf_counter()
    rows: list[tuple] = []
    for device in devices:
        bench_device(torch, device, args, rows)
    options = policy_options(args)
    policy_size = xpo_sim.torch.TinyTransformerPolicy(xpo_sim.envs.token_needle(4, 3, 0.01), **options).n_params
    size = ", ".join(f"{k} {v}" for k, v in options.items()) if options else "default size"
    print(f"xpo_sim {xpo_sim.__version__}, torch {torch.__version__}; TinyTransformerPolicy {size} "
          f"({policy_size:,} parameters on token_needle(4, 3)); {os.cpu_count()} CPUs; "
          f"1-min load average {load:.2f} at start, "
          f"{os.getloadavg()[0]:.2f} at end; CUDA available: {torch.cuda.is_available()}"
          f"{'' if torch.cuda.is_available() else ' (no GPU figures)'}\n")
    print("| device | instance | measure | throughput | detail |")
    print("|---|---|---|---:|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print(f"\ntotal {time.perf_counter() - start:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
