"""Solve one instance exactly and print V*, J_β(π_ref) and the regret of π_ref.

The regret is β·E KL(π_ref ‖ π*), a sum of non-negative terms
(``xpo_sim.metrics.policy_regret``), exact at every β in [1e-300, 1e300]; at large β it is
≈ Var_ref(r)/(2β).

The instance is the token-needle tree: π_ref gives the single optimal response (reward 1)
probability ε; every other response has reward 0. Nothing is sampled: every number below
is exact (backward induction over the tree).

    python experiments/solve_demo.py [--vocab 8] [--horizon 4] [--eps 1e-3] [--beta 0.1]
"""

from __future__ import annotations

import argparse

import xpo_sim
from xpo_sim import envs
from xpo_sim.metrics import policy_regret


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vocab", type=int, default=8, help="tokens per step (default 8)")
    parser.add_argument("--horizon", type=int, default=4, help="tokens per response (default 4)")
    parser.add_argument("--eps", type=float, default=1e-3, help="π_ref's mass on the optimal response (default 1e-3)")
    parser.add_argument("--beta", type=float, default=0.1, help="KL-regularization strength β (default 0.1)")
    args = parser.parse_args(argv)
    try:
        mdp = envs.token_needle(args.vocab, args.horizon, args.eps)
        solution = xpo_sim.solve_soft(mdp, args.beta)
    except ValueError as err:
        parser.error(str(err))
    ref = xpo_sim.evaluate(mdp, mdp.ref_logp, args.beta)
    start = int(mdp.start_states[0])
    print(f"instance   {mdp!r}: {mdp.n_trajectories} responses, pi_ref(optimal) = {args.eps:g}")
    print(f"beta       {args.beta:g}")
    print(f"V*(prompt) {solution.v[start]:.6f}   = J_beta(pi*)")
    print(f"J(pi_ref)  {ref.value:.6f}   (E r = {ref.reward:.6f}, KL = 0)")
    # regret as beta * E KL(pi_ref || pi*) >= 0 (a sum of non-negative terms), not as the
    # difference of the two values above, which rounding can make negative
    regret = policy_regret(mdp, mdp.ref_logp, solution)
    print(f"regret     {regret:.6f}   = J_beta(pi*) - J_beta(pi_ref) = beta * KL(pi_ref || pi*) = {regret:.6g}")
    star = xpo_sim.evaluate(mdp, solution.logp, args.beta)
    print(f"pi*        E r = {star.reward:.6f}, KL(pi* || pi_ref) = {star.kl:.6g}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
