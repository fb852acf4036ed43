"""Last iterate against best iterate on Proposition 2.1's instance, over many seeds.

two_arm_needle(β) for β in {0.2, 0.1}: XPO (α = 0.01 constant — the default —, 0.1, and
0.1/√t), online DPO and hybrid DPO, one pair a round, implicit-reward class with the exact
update. For each algorithm prints the fraction of seeds whose final iterate, and whose best
iterate, has regret at most 10% of π_ref's, and the fraction whose final iterate is worse
than π_ref. This is the table in the README's ten-line example.

    python experiments/two_arm_seeds.py [--seeds 100] [--rounds 50]
"""

from __future__ import annotations

import argparse

import numpy as np

import xpo_sim
from xpo_sim import checks, envs

ALGORITHMS = [
    ("XPO, α = 0.01 (default)", xpo_sim.XPO()),
    ("XPO, α = 0.1", xpo_sim.XPO(alpha=0.1)),
    ("XPO, α = 0.1/√t", xpo_sim.XPO(alpha=0.1, schedule="inv_sqrt")),
    ("online DPO", xpo_sim.OnlineDPO()),
    ("hybrid DPO", xpo_sim.HybridDPO()),
]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=100, help="seeds per algorithm and β (default 100)")
    parser.add_argument("--rounds", type=int, default=50, help="rounds (= preference queries) per run (default 50)")
    args = parser.parse_args(argv)
    try:
        checks.seeds("--seeds", args.seeds)
        checks.rounds_fit("--rounds", args.rounds)
    except ValueError as err:
        parser.error(str(err))
    print("| β | algorithm | final regret ≤ 10% of π_ref's | best iterate ≤ 10% | final regret > π_ref's |")
    print("|---|---|---|---|---|")
    for beta in (0.2, 0.1):
        mdp = envs.two_arm_needle(beta)
        for label, algorithm in ALGORITHMS:
            final, best = [], []
            for seed in range(args.seeds):
                df = xpo_sim.run(mdp, algorithm, beta, args.rounds, seed=seed, record=[args.rounds], max_enumerate=0)
                ref = df.regret.iloc[0]
                final.append(df.regret.iloc[-1] / ref)
                best.append(df.best_regret.iloc[-1] / ref)
            final, best = np.array(final), np.array(best)
            print(f"| {beta} | {label} | {np.mean(final <= 0.1):.2f} | {np.mean(best <= 0.1):.2f} | {np.mean(final > 1):.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
