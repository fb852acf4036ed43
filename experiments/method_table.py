"""Every method of the XPO literature in this package, side by side on the coverage sweep's
instances, with exact regret.

Instances (as in coverage_sweep.py): two_arm_needle(β = 0.1) (ε = 0.0067, one pair a round,
200 rounds); bandit_needle(8 responses, ε = 1e-2 and 1e-3) and token_needle(vocab 4,
horizon 3, ε = 1e-2), β = 0.1, eight pairs a round, 125 rounds (1,000 queries).
Methods (implicit-reward class, exact updates, Bradley–Terry labels unless stated):
XPO (ỹ ∼ π_ref, α_t = 0.01/√t); online, hybrid and offline DPO; iterative DPO (Xiong et
al. 2023: 4 samples per prompt, best vs worst, this round's batch; it makes `batch` prompts
a round, so its query count is the number of informative prompts); online IPO; online
length-normalized DPO; SELM (α = 0.1, i.e. α·β = 0.01 on an extra response from the
previous iterate); ExPO on hybrid DPO with γ = 0.5 and 1 (iterate_regret is the hybrid
iterate's own regret); RLHF with the exact optimum of the fitted reward, and with PPO
(64 samples, 8 clipped epochs a round, logits policy); count-based optimism (c = 0.5);
Inverse-Q* (4 samples per prompt from πᵗ, the oracle's best one conditions π̂* = π_ref tilted
by exp(Ĝ/β); the iterate is π̂*, a per-state table, so it runs in the logits class); SE-POPO
(epochs of 25 rounds, preference incentive α_t = 0.4/√t) and SE-POPO as the authors' code runs it
(variant="code": three iterations of ⌈rounds/3⌉ rounds, α = 1e-2, 5e-3, 0 on
(σ(β h(y₂)) − ½)/β, github.com/MYC000801/SE-POPO; pairs of equal reward dropped as the code
drops ties, or kept: "ties kept"); VPO (on-policy pairs, exact
E_{π_ref} log π with α_t = 0.1·B·√t for B pairs a round, i.e. XPO's expected bonus weight).

Outputs: shards and summary.csv (queries to 10% of π_ref's regret, fraction reaching it,
final regret relative to π_ref's, best iterate, final KL to π_ref) in --out;
figures/method_table.png.

    python experiments/method_table.py [--quick] [--seeds N] [--workers N]
"""

from __future__ import annotations

import sys
import time

import matplotlib

matplotlib.use("Agg")

from xpo_sim.plotting import plot_method_table  # noqa: E402
from xpo_sim.sweep import RunConfig, parse_sweep_args, print_summary, run_experiment  # noqa: E402

BETA = 0.1
METHODS = [
    ("XPO (α = 0.01/√t)", "XPO", dict(alpha=0.01, schedule="inv_sqrt")),
    ("online DPO", "OnlineDPO", {}),
    ("hybrid DPO", "HybridDPO", {}),
    ("offline DPO", "OfflineDPO", {}),
    ("iterative DPO (k=4)", "IterativeDPO", dict(k=4)),
    ("online IPO", "IPO", {}),
    ("online LN-DPO", "LNDPO", {}),
    ("SELM (α = 0.1)", "SELM", dict(alpha=0.1)),
    ("ExPO γ=0.5 on hybrid", "ExPO", dict(gamma=0.5)),
    ("ExPO γ=1 on hybrid", "ExPO", dict(gamma=1.0)),
    ("RLHF, exact optimum", "RLHF", {}),
    ("RLHF, PPO", "RLHF", dict(update_rule="ppo")),
    ("count-based UCB (c = 0.5)", "CountUCB", dict(c=0.5)),
    ("Inverse-Q* (k = 4)", "InverseQStar", dict(k=4), "logits"),
    ("SE-POPO (α = 0.4/√t)", "SEPOPO", dict(alpha=0.4, schedule="inv_sqrt", epoch_rounds=25)),
    ("SE-POPO, authors' code", "SEPOPO", dict(variant="code")),  # three iterations over the run
    ("SE-POPO, authors' code, ties kept", "SEPOPO", dict(variant="code", drop_ties=False)),
    ("VPO (α = 0.1·B·√t)", "VPO", dict(schedule="sqrt")),  # α set per instance: 0.01·B/β
]


def method_arguments(name: str, args: dict, batch: int, rounds: int) -> dict:
    """The method's arguments for an instance with ``batch`` pairs a round (VPO's α matches
    XPO's expected bonus weight: αβ√t = 0.01·batch·√t) and ``rounds`` rounds (SE-POPO's code
    variant runs the authors' three iterations over them: epoch_rounds = ⌈rounds/3⌉)."""
    if name == "VPO":
        args = dict(args, alpha=0.01 * batch / BETA)
    if name == "SEPOPO" and args.get("variant") == "code":
        args = dict(args, epoch_rounds=-(-rounds // 3))
    return dict(args, batch=batch)


def instances(quick: bool):
    """(group, instance family, arguments, β, pairs a round, rounds)."""
    rounds = 8 if quick else 125
    out = [("two_arm", "two_arm_needle", dict(beta=0.1), 0.1, 1, 30 if quick else 200)]
    for eps in ([1e-2] if quick else [1e-2, 1e-3]):
        out.append(("bandit_needle", "bandit_needle", dict(n_responses=8, eps=eps), BETA, 8, rounds))
    out.append(("token_needle", "token_needle", dict(vocab=4, horizon=3, eps=1e-2), BETA, 8, rounds))
    return out


def build_configs(quick: bool, seeds: int) -> list[RunConfig]:
    configs = []
    for replicate in range(seeds):
        for group, family, args, beta, batch, rounds in instances(quick):
            instance_args = dict(args, seed=replicate) if family != "two_arm_needle" else args
            for label, name, method_args, *policy in METHODS:
                configs.append(RunConfig(
                    instance=family, instance_args=instance_args, algorithm=name,
                    algorithm_args=method_arguments(name, method_args, batch, rounds), beta=beta, rounds=rounds,
                    replicate=replicate, group=group, label=label, policy=policy[0] if policy else "implicit",
                ))
    return configs


def main(argv=None) -> int:
    args = parse_sweep_args(__doc__, "results/method_table", argv)
    start = time.perf_counter()
    seeds = args.seeds or (2 if args.quick else 8)
    _, _, summary, figures = run_experiment("method table", build_configs(args.quick, seeds), args)
    panels = sorted({(g, e) for g, e in zip(summary.group, summary.eps)}, key=lambda p: (p[0] != "two_arm", p[0], -p[1]))
    titles = {p: ("two_arm_needle(0.1), ε = 0.0067" if p[0] == "two_arm" else f"{p[0]}, ε = {p[1]:g}") for p in panels}
    plot_method_table(summary, panels, titles).savefig(figures / "method_table.png", dpi=120)
    print_summary(summary, ["group", "eps", "label", "queries_median", "reached", "final_regret_rel",
                            "best_regret_rel", "final_kl", "final_iterate_regret_rel"])
    print(f"{time.perf_counter() - start:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
