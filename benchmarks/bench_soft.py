r"""Benchmark: ``xpo_sim.solve_soft`` and ``xpo_sim.evaluate`` against plain vectorized numpy.

What is compared
----------------
Both sides solve the same token trees (``xpo_sim.envs.token_tree`` with dense rewards,
β = 0.1) exactly:

* **solve** — the soft Bellman backward sweep. ``xpo_sim.solve_soft`` (numba kernel
  ``xpo_sim._kernels.soft.soft_backward``, one sweep over the states) against
  :func:`numpy_solve`, the per-layer backward induction a numpy user would write: for
  each layer from the last, Q = r + V[next] (V of the end = 0, via a padded V whose last
  entry, index −1, is 0), V = β·logsumexp(ref_logp + Q/β) with a max shift, and
  log π* = ref_logp + Q/β − V/β.
* **evaluate** — exact evaluation of a policy (π*, so J_β(π) must equal J_β(π*)).
  ``xpo_sim.evaluate`` (wrapper: validates and copies ``logp``, then the numba kernel
  ``evaluate_backward``) against :func:`numpy_evaluate`: per layer
  R = Σ_a p·(r + R[next]) and K = Σ_a p·(logp − ref_logp + K[next]).

Before timing, each size checks that the baseline agrees with xpo_sim to 1e-10 relative
(elementwise, with an absolute floor of 1e-14 × the largest magnitude for entries near 0)
(Q*, V*, log π*, J_β; reward-to-go and KL-to-go) and that J_β(π*) from ``evaluate``
equals ρ·V* from ``solve_soft``; the script aborts (AssertionError) otherwise.

Timing: numba is compiled (or loaded from its cache) on a tiny tree first; every timed
function is run once before timing; the reported time is the best of several repeats
(``time.perf_counter``), fewer repeats for larger trees. xpo_sim times include the
Python wrappers (allocation of the outputs — fresh arrays are first touched, i.e.
page-faulted, inside the call — and for ``evaluate`` the checks of ``logp``), i.e. what a
user pays per call. A second table shows the wrappers with caller-allocated ``out=``
arrays (what a solver loop pays: no allocation) and the bare kernels, to separate wrapper
overhead from kernel speed.

Memory-bandwidth bound
----------------------
The machine's copy bandwidth is measured in the same run: ``np.copyto`` of a 256 MiB
float64 array, best of several, counting read + write bytes (2 × 256 MiB per copy).
The byte model (the least traffic each call must make to main memory, P = S·A pairs,
S states, all arrays float64/int64, 8 bytes per entry):

* solve: read ``next_state``, ``reward``, ``ref_logp`` and write ``q``, ``logp`` →
  40·P bytes; write V once and read it once as V[next] (in a tree every non-root state
  has exactly one parent) → 16·S bytes. Total 40·P + 16·S.
* evaluate: read ``next_state``, ``reward``, ``ref_logp``, ``logp`` → 32·P bytes;
  write R and K once and read each once as R[next], K[next] → 32·S bytes.
  Total 32·P + 32·S (the wrapper's extra copy and checks of ``logp`` are not counted:
  they are overhead, not necessary traffic).

bandwidth fraction = (bytes / time) / copy bandwidth. Write-allocate traffic is not
counted, so a kernel with ordinary stores tops out somewhat below 1.

Peak memory is ``resource.getrusage(RUSAGE_SELF).ru_maxrss``, read after the xpo_sim
timings of each size (building the tree, solving, evaluating) and before the numpy
baseline for that size runs, so it shows what the xpo_sim path needs; the last line
reports the peak of the whole run (numpy baseline included).

Targets
-------
xpo_sim at least **10×** faster than the numpy baseline, for both solve and evaluate, at
10^6 state-action pairs and above. The verdict is printed at the end (it is only
judged when the run includes a size ≥ 10^6 pairs).

The bare kernels ``soft_backward`` and ``evaluate_backward`` at **≥ 50 %** of the measured
copy bandwidth at 10^7 pairs (byte model above); judged only when the run includes the
10^7-pair tree.

Sizes: trees with vocab 10, horizon 3…6 and 9 prompts, i.e. ≈ 10^4, 10^5, 10^6, 10^7
pairs (9 990 … 9 999 990). With the 10^7-pair tree the process peaks at about 0.8 GiB
RSS through the xpo_sim calls and about 1.3 GiB with the numpy baseline.

Usage::

    python benchmarks/bench_soft.py              # full run, up to 10^7 pairs
    python benchmarks/bench_soft.py --quick      # smoke test, up to 10^5 pairs
    python benchmarks/bench_soft.py --max-pairs 1e6 --repeats 5

The machine may be noisy (and have few cores); best-of-repeats reduces, but does not
remove, the noise. The script sets no environment variables (threads etc.).
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time

import numpy as np

import xpo_sim
from xpo_sim._kernels import soft as _kernels

BETA = 0.1
VOCAB = 10
N_PROMPTS = 9
HORIZONS = (3, 4, 5, 6)  # ≈ 1e4, 1e5, 1e6, 1e7 pairs with vocab 10, 9 prompts
QUICK_MAX_PAIRS = 1e5
TARGET_SPEEDUP = 10.0
TARGET_FROM_PAIRS = 1e6
TARGET_BW_FRACTION = 0.5
TARGET_BW_FROM_PAIRS = 1e7
RTOL = 1e-10
COPY_BYTES = 256 * 2**20


# --------------------------------------------------------------------------- baseline
def numpy_solve(next_state, reward, ref_logp, beta, layer_offsets):
    """Soft Bellman backward induction, vectorized per tree layer (plain numpy).

    Returns (q, v, logp) like ``xpo_sim.solve_soft``. Assumes every token is allowed
    (true of ``token_tree``), so no row's max is ``-inf``.
    """
    n_states, _ = reward.shape
    q = np.empty_like(reward)
    logp = np.empty_like(reward)
    v = np.zeros(n_states + 1)  # v[-1] = v[n_states] = 0 is V of the end
    for d in range(len(layer_offsets) - 2, -1, -1):
        lo, hi = layer_offsets[d], layer_offsets[d + 1]
        q_layer = reward[lo:hi] + v[next_state[lo:hi]]
        x = ref_logp[lo:hi] + q_layer / beta
        m = x.max(axis=1, keepdims=True)
        lse = m + np.log(np.exp(x - m).sum(axis=1, keepdims=True))
        v[lo:hi] = beta * lse[:, 0]
        logp[lo:hi] = x - lse
        q[lo:hi] = q_layer
    return q, v[:n_states], logp


def numpy_evaluate(next_state, reward, ref_logp, logp, layer_offsets):
    """Expected reward to go R and KL to π_ref to go K of the policy ``logp``, per tree
    layer (plain numpy). Assumes ``logp`` has no ``-inf`` entries."""
    n_states, _ = reward.shape
    r_to_go = np.zeros(n_states + 1)  # index -1 is the end: 0
    kl_to_go = np.zeros(n_states + 1)
    for d in range(len(layer_offsets) - 2, -1, -1):
        lo, hi = layer_offsets[d], layer_offsets[d + 1]
        nxt = next_state[lo:hi]
        lp = logp[lo:hi]
        p = np.exp(lp)
        r_to_go[lo:hi] = (p * (reward[lo:hi] + r_to_go[nxt])).sum(axis=1)
        kl_to_go[lo:hi] = (p * (lp - ref_logp[lo:hi] + kl_to_go[nxt])).sum(axis=1)
    return r_to_go[:n_states], kl_to_go[:n_states]


# --------------------------------------------------------------------------- helpers
def best_time(fn, repeats):
    """Best wall time of ``repeats`` calls of ``fn`` (seconds); ``fn`` is run once first."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def default_repeats(pairs):
    if pairs <= 2e4:
        return 50
    if pairs <= 2e5:
        return 20
    if pairs <= 2e6:
        return 7
    return 3


def copy_bandwidth(repeats=7):
    """Copy bandwidth in bytes/s (read + write) of np.copyto on a 256 MiB float64 array."""
    src = np.ones(COPY_BYTES // 8)
    dst = np.full_like(src, 2.0)  # written, so no page faults are timed
    seconds = best_time(lambda: np.copyto(dst, src), repeats)
    del src, dst
    return 2 * COPY_BYTES / seconds


def peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def assert_close(name, got, want, size):
    """Elementwise |got − want| ≤ 1e-10·|want| (+ a tiny absolute floor for entries near 0)."""
    scale = float(np.max(np.abs(want)))
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=1e-14 * max(scale, 1.0),
                               err_msg=f"{name} of the numpy baseline disagrees with xpo_sim ({size})")


def bench_size(horizon, repeats, kernel_rows):
    mdp = xpo_sim.envs.token_tree(VOCAB, horizon, N_PROMPTS, rewards="dense", seed=0)
    offsets = mdp.info["layer_offsets"]
    ns, r, ref = mdp.next_state, mdp.reward, mdp.ref_logp
    pairs, states = mdp.n_state_actions, mdp.n_states
    label = f"vocab={VOCAB}, horizon={horizon}, prompts={N_PROMPTS}, pairs={pairs}"
    reps = repeats or default_repeats(pairs)

    # xpo_sim first, so the peak RSS read below does not include the numpy baseline.
    sol = xpo_sim.solve_soft(mdp, BETA)
    t_solve = best_time(lambda: xpo_sim.solve_soft(mdp, BETA), reps)
    ev = xpo_sim.evaluate(mdp, sol.logp, BETA)
    t_eval = best_time(lambda: xpo_sim.evaluate(mdp, sol.logp, BETA), reps)
    # the wrappers on caller-allocated outputs (out=): no allocation, no first touch
    sol_out = tuple(np.empty_like(a) for a in (sol.q, sol.v, sol.logp))
    t_solve_out = best_time(lambda: xpo_sim.solve_soft(mdp, BETA, out=sol_out), reps)
    ev_out = tuple(np.empty(states) for _ in range(3))
    t_eval_out = best_time(lambda: xpo_sim.evaluate(mdp, sol.logp, BETA, out=ev_out), reps)
    del sol_out, ev_out
    # bare kernels on preallocated outputs (no wrapper)
    q_buf, v_buf, lp_buf = np.empty_like(r), np.empty(states), np.empty_like(r)
    t_ksolve = best_time(lambda: _kernels.soft_backward(ns, r, ref, BETA, q_buf, v_buf, lp_buf), reps)
    r_buf, k_buf = np.empty(states), np.empty(states)
    t_keval = best_time(lambda: _kernels.evaluate_backward(ns, r, ref, sol.logp, 1e-6, r_buf, k_buf), reps)
    rss = peak_rss_mib()

    # correctness of the baseline against xpo_sim (also warms the baseline up)
    q, v, logp = numpy_solve(ns, r, ref, BETA, offsets)
    assert_close("Q*", q, sol.q, label)
    assert_close("V*", v, sol.v, label)
    assert_close("log pi*", logp, sol.logp, label)
    assert_close("J_beta(pi*)", mdp.start @ v, sol.value, label)
    r_to_go, kl_to_go = numpy_evaluate(ns, r, ref, sol.logp, offsets)
    assert_close("reward to go", r_to_go, ev.reward_to_go, label)
    assert_close("KL to go", kl_to_go, ev.kl_to_go, label)
    assert_close("evaluate(pi*).value vs V*", ev.value, sol.value, label)
    del q, v, logp, r_to_go, kl_to_go

    t_np_solve = best_time(lambda: numpy_solve(ns, r, ref, BETA, offsets), reps)
    t_np_eval = best_time(lambda: numpy_evaluate(ns, r, ref, sol.logp, offsets), reps)
    kernel_rows.append((pairs, t_ksolve, t_keval, t_solve, t_eval, t_solve_out, t_eval_out))
    return dict(pairs=pairs, states=states, reps=reps, t_np_solve=t_np_solve, t_solve=t_solve,
                t_np_eval=t_np_eval, t_eval=t_eval, rss=rss)


def solve_bytes(pairs, states):
    return 40 * pairs + 16 * states


def eval_bytes(pairs, states):
    return 32 * pairs + 32 * states


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=(
            "Compare xpo_sim.solve_soft / xpo_sim.evaluate with a plain per-layer vectorized "
            "numpy implementation on token trees (dense rewards, beta=0.1) of ~1e4 to 1e7 "
            "state-action pairs. Checks agreement to 1e-10 relative first, then prints a "
            "markdown table of best-of-repeats times, speed ratios (numpy / xpo_sim), the "
            "fraction of the measured copy bandwidth xpo_sim reaches, and peak RSS. Target: "
            "xpo_sim >= 10x numpy at >= 1e6 pairs."
        ),
        epilog="See the module docstring for the byte model and the exact baseline.",
    )
    parser.add_argument("--max-pairs", type=float, default=1e7,
                        help="largest tree to run, in state-action pairs (default 1e7)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed repeats per function and size (default: 50 at 1e4 pairs, 20 at "
                             "1e5, 7 at 1e6, 3 at 1e7); the best is reported")
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke test: only trees up to {QUICK_MAX_PAIRS:.0e} pairs")
    args = parser.parse_args(argv)
    if args.repeats is not None and args.repeats < 1:
        parser.error("--repeats must be >= 1")
    max_pairs = min(args.max_pairs, QUICK_MAX_PAIRS) if args.quick else args.max_pairs

    t_start = time.perf_counter()
    load_start = os.getloadavg()[0]
    # compile (or load from numba's cache) on a tiny tree
    tiny = xpo_sim.envs.token_tree(3, 2, 2, rewards="dense", seed=0)
    xpo_sim.evaluate(tiny, xpo_sim.solve_soft(tiny, BETA).logp, BETA)

    horizons = [h for h in HORIZONS
                if N_PROMPTS * (VOCAB**h - 1) // (VOCAB - 1) * VOCAB <= max_pairs * 1.001]
    if not horizons:
        parser.error(f"--max-pairs {max_pairs:g} is below the smallest size (9990 pairs)")

    rows, kernel_rows = [], []
    for h in horizons:
        rows.append(bench_size(h, args.repeats, kernel_rows))
        row = rows[-1]
        print(f"  done: {row['pairs']:>9d} pairs ({row['reps']} repeats), "
              f"elapsed {time.perf_counter() - t_start:.1f} s", file=sys.stderr, flush=True)

    bandwidth = copy_bandwidth()

    print(f"\nxpo_sim {xpo_sim.__version__}, numpy {np.__version__}, beta={BETA}, token_tree("
          f"vocab={VOCAB}, horizon=3..6, n_prompts={N_PROMPTS}, rewards='dense')\n"
          f"copy bandwidth {bandwidth / 1e9:.2f} GB/s (read+write); {os.cpu_count()} CPUs, "
          f"1-min load average {load_start:.2f} at start, {os.getloadavg()[0]:.2f} at end\n"
          f"(the run itself adds about 1; more means other processes competed and the timings are noisy)\n")
    print("| pairs | states | numpy solve ms | xpo_sim solve ms | solve ratio "
          "| numpy evaluate ms | xpo_sim evaluate ms | evaluate ratio "
          "| solve BW fraction | evaluate BW fraction | peak RSS MiB |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        p, s = row["pairs"], row["states"]
        bw_solve = solve_bytes(p, s) / row["t_solve"] / bandwidth
        bw_eval = eval_bytes(p, s) / row["t_eval"] / bandwidth
        print(f"| {p:,} | {s:,} | {row['t_np_solve'] * 1e3:.3f} | {row['t_solve'] * 1e3:.3f} "
              f"| {row['t_np_solve'] / row['t_solve']:.1f}x "
              f"| {row['t_np_eval'] * 1e3:.3f} | {row['t_eval'] * 1e3:.3f} "
              f"| {row['t_np_eval'] / row['t_eval']:.1f}x "
              f"| {bw_solve:.2f} | {bw_eval:.2f} | {row['rss']:.0f} |")

    print("\nBare kernels (preallocated outputs, no wrapper) vs the public functions, without and "
          "with caller-allocated out= arrays:\n")
    print("| pairs | soft_backward ms | solve_soft ms | solve_soft out= ms | solve BW fraction (kernel) "
          "| evaluate_backward ms | evaluate ms | evaluate out= ms | evaluate BW fraction (kernel) |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    bw_rows = []
    for (p, tks, tke, ts, te, tso, teo), row in zip(kernel_rows, rows):
        s = row["states"]
        bw_rows.append((p, solve_bytes(p, s) / tks / bandwidth, eval_bytes(p, s) / tke / bandwidth))
        print(f"| {p:,} | {tks * 1e3:.3f} | {ts * 1e3:.3f} | {tso * 1e3:.3f} | {bw_rows[-1][1]:.2f} "
              f"| {tke * 1e3:.3f} | {te * 1e3:.3f} | {teo * 1e3:.3f} | {bw_rows[-1][2]:.2f} |")

    print(f"\npeak RSS of the whole run (numpy baseline and bandwidth probe included): "
          f"{peak_rss_mib():.0f} MiB")
    judged = [row for row in rows if row["pairs"] >= TARGET_FROM_PAIRS * 0.999]
    if judged:
        ok = all(row["t_np_solve"] / row["t_solve"] >= TARGET_SPEEDUP
                 and row["t_np_eval"] / row["t_eval"] >= TARGET_SPEEDUP for row in judged)
        worst_s = min(row["t_np_solve"] / row["t_solve"] for row in judged)
        worst_e = min(row["t_np_eval"] / row["t_eval"] for row in judged)
        print(f"target >= {TARGET_SPEEDUP:.0f}x at >= 1e6 pairs: {'MET' if ok else 'NOT MET'} "
              f"(lowest ratio: solve {worst_s:.1f}x, evaluate {worst_e:.1f}x)")
    else:
        print(f"target >= {TARGET_SPEEDUP:.0f}x at >= 1e6 pairs: not judged (no size >= 1e6 pairs run)")
    bw_judged = [r for r in bw_rows if r[0] >= TARGET_BW_FROM_PAIRS * 0.999]
    bw_target = f"bandwidth target: soft_backward and evaluate_backward >= {TARGET_BW_FRACTION:.0%} of copy bandwidth at 1e7 pairs"
    if bw_judged:
        _, f_solve, f_eval = bw_judged[-1]
        met = f_solve >= TARGET_BW_FRACTION and f_eval >= TARGET_BW_FRACTION
        print(f"{bw_target}: {'MET' if met else 'NOT MET'} (soft_backward {f_solve:.0%}, "
              f"evaluate_backward {f_eval:.0%} of {bandwidth / 1e9:.2f} GB/s)")
    else:
        print(f"{bw_target}: not judged (no 1e7-pair tree run)")
    print(f"total run time {time.perf_counter() - t_start:.1f} s")


if __name__ == "__main__":
    main()
