r"""Benchmark: the exact per-round update at scale (issue 10) — the projected Newton solver
(``solver="newton"``, the default) against the reference L-BFGS-B (``solver="lbfgsb"``) and
against the torch autograd + Adam baseline a researcher would write.

Setting
-------
β = 0.1, ``policy="implicit"``: π_θ is soft-optimal for a box-bounded reward table r̂_θ, and
each round solves (docs/theory.md, "XPO, with its sign")

    min_θ  L(θ) = Σ_distinct pairs n·ℓ_DPO(π_θ)  +  α_t Σ_distinct explored n·log π_θ(ỹ)

over the aggregated data (``xpo_sim.PreferenceData``) under the box, warm-started at the
previous iterate (``ImplicitRewardClass.update``; the solvers are in ``xpo_sim.solvers``).
Unless a part says otherwise the algorithm is XPO at the issue's setting,
``xpo_sim.XPO(alpha=0.01, schedule="inv_sqrt", batch=8)`` (α_t = 0.01/√t, 8 pairs a
round), run with ``max_enumerate=0`` (no concentrability enumeration) and ``record="all"``
(the exact metrics of every iterate: a round includes them).

Instrumentation. ``ImplicitRewardClass`` is replaced, for the runs here, by a subclass that
stamps ``time.perf_counter()`` on entry to each ``update`` and records its
``SolveResult`` (iterations, objective evaluations, Hessian-vector products, converged);
the registry entry ``xpo_sim.policies.POLICY_CLASSES["implicit"]`` from which ``run`` builds
``policy="implicit"`` is patched and restored. A *round* is the interval from one ``update``
entry to the next (the update, the exact metrics of the new iterate, the next round's
sampling, labelling and bookkeeping; the last round ends when ``run`` returns), so
"ms/round" excludes ``run``'s setup (solving π*, scoring π_ref). ``converged`` is ``run``'s
column (every update met its tolerance). ``ConvergenceWarning`` is silenced: the column and
the tables report it.

What is measured (each target is a ratio or a count from this one run; none is a timed test)
-------------------------------------------------------------------------------------------
1. **A round in solve_soft calls**, ``token_tree(8, 5)`` (32,768 responses, 4,681 states):
   the time of one ``xpo_sim.solve_soft(mdp, β)`` on the same tree (median and best of 21
   calls, before and after the runs), and ms per round of XPO over 20 rounds with the Newton
   solver and over 2 rounds with L-BFGS-B (≈ 12 s a round on an idle core). **Target**:
   Newton round ≤ 100 solve_soft calls (mean round / median solve; the old L-BFGS-B update
   cost ≈ 38,000).
2. **token_tree(8, 6)** (262,144 responses): 100 rounds with the Newton solver; ms per round
   (mean, last decile), Newton iterations and Hessian-vector products per update, and the
   number of rounds that converged. **Target**: every round converged.
3. **10⁴ rounds on token_tree(8, 4)** (4,096 responses), Newton solver, XPO with α_t =
   0.01/√t at ``batch=1`` (one pair a round; 10⁴ rounds at batch 8 would make 8·10⁴ distinct
   pairs and take most of an hour on a shared 2-core machine) and ``record=[rounds]`` (the
   iterate is still scored every round for ``best_regret``): ms per round per decile with the
   distinct pairs at the end of the decile, and a least-squares fit ms/round ≈ a + b·(distinct
   pairs / 1000). Reported: whether the per-round cost is flat (last decile within 1.5× of
   the first) or grows (on a tree this large almost every pair is new, so the data, and the
   cost of one evaluation, grow linearly with the rounds).
4. **Exact update vs torch autograd + projected Adam** on the data state after 1000 rounds
   of XPO (α = 0.01 constant, batch 1) on the 256-response ``token_tree(4, 4)`` (``--quick``:
   100 rounds) and after 100 rounds on the 16-response ``token_tree(4, 2)`` — the earlier
   benchmark's states: the runs that make them use L-BFGS-B updates, as it did. (With the
   Newton solver's own iterates the 256-response state is degenerate: its warm start is
   already within 1e-6·|f*| of the optimum, so every method "reaches" the primary tolerance
   at its first evaluation; the table flags such a state.) All three
   methods start from the same warm start (the iterate the run's last update was
   warm-started at) and minimize the same L over the same box on the same aggregated data.
   f* = the lower of the two exact solvers' results, θ* its argmin (with α > 0 the objective
   is not convex: they may stop at different local minima). The baseline computes
   log π_θ(τ) of every distinct trajectory in torch, float64, in one of two ways, and the
   faster one is used for Adam:

   * *layer*: a per-layer soft Bellman backward pass over the tree
     (Q = r̂ + V[next], V = β·torch.logsumexp(log π_ref + Q/β), log π = log π_ref + Q/β − V/β),
     then log π(τ) = Σ_h log π(a_h|s_h) gathered along each trajectory;
   * *leaves* (terminal rewards on a tree): π(y|x) ∝ π_ref(y|x)·exp(r̂(x,y)/β) over every
     response y of the prompt, one torch.logsumexp per prompt;

   then L = Σ n·``xpo_sim.losses.dpo_loss`` + Σ n·``xpo_sim.losses.xpo_bonus``, θ ← Adam
   step, θ ← clamp(θ, lo, hi). Before timing, the script asserts that both torch
   objectives equal ``ImplicitRewardClass.objective`` to 1e-10 relative (and their autograd
   gradients the kernel's gradient to 1e-8 of its scale), at the warm start and at θ*.

   A method reaches a criterion at its first objective evaluation that meets it:
   *primary*: L(θ) − f* ≤ 1e-6·|f*|, or pg ≤ gtol = 1e-9 (pg = max_i |clip(θ_i − ∂L/∂θ_i,
   lo, hi) − θ_i|); *stationarity*: pg ≤ 1e-3, pg ≤ 1e-6; *same solution*: ‖θ − θ*‖∞ ≤ 1e-4.
   The exact solvers' time to tolerance is measured inside ``update`` by a subclass whose
   value-and-gradient stamps the time and checks the criteria (a few µs, counted); their
   full ``update`` call (plain class, no probe) is reported too. Adam runs with each
   learning rate of a grid (full: 0.3, 0.1, 0.03, 0.01, 0.003; quick: 0.1, 0.03, 0.01), up
   to ``--adam-steps`` steps or ``--adam-seconds`` per rate; every (criterion, rate) met
   within 1000 steps (quick: 50) is rerun up to that step ``--repeats`` times and the best
   time kept. Setup (tensors built from the aggregated arrays) is excluded on both sides;
   the exact side runs with BLAS limited to one thread, as inside ``xpo_sim.run``.
   **Target**: the Newton update ≥ 20× faster to the primary tolerance (ratio = Adam time
   to tolerance / Newton time to tolerance; the ratio against Newton's full ``update``
   call and the L-BFGS-B column are printed as well).
5. **Regret curves against the reference solver**: HybridDPO (``batch=4``, no bonus: the
   objective is convex) and XPO (α_t = 0.01/√t, ``batch=4``) with both solvers, same seed,
   on a few small instances where L-BFGS-B converges; the largest |Δregret| / regret(π_ref)
   over the rounds where both runs' ``converged`` is True. **Target** (HybridDPO): ≤ 1e-6.
   For XPO the number is printed but not judged: the objective is not convex, and the two
   solvers may stop at different local minima, after which the runs sample different data.
6. **Scaling**: ms per round against the number of responses, token_tree(8, H) for
   H = 2…6 (64 … 262,144 responses), Newton over its first 20 rounds (H = 5, 6: the runs of
   parts 1 and 2), L-BFGS-B over 20, 10, 2 rounds at H = 2, 3, 4 and part 1's 2 rounds at
   H = 5; not run at H = 6 (minutes a round). Both solvers' ms/round over the same first
   rounds give the speedup column; one solve_soft per size is shown for scale. Figure
   ``update_scaling.png`` in ``--figures``: (a) ms per round against responses, log-log;
   (b) ms per round against rounds for part 3's run, with the distinct pairs.

At the end a markdown summary table of the measured numbers is printed and written to
``--out`` + ".md".

``--quick`` runs every part on tiny sizes (vocab-4 trees of 16 to 256 responses, a few
rounds, 200 rounds in part 3, 80 Adam steps per rate) through the same code paths; the
targets that need the full sizes print "not judged", except part 5's HybridDPO agreement,
which is judged on its small instances in both modes.

Timing: numba is warmed (compiled or loaded from its cache) on a tiny tree first, torch by
the correctness checks and an untimed first call. The machine may be shared and noisy; the
header prints the load average, and ratios are taken within one run.

Usage::

    python benchmarks/bench_update.py                 # full run (about 10 minutes on 2 busy cores)
    python benchmarks/bench_update.py --quick         # smoke test, same code paths (~20 s)
    python benchmarks/bench_update.py --figures /tmp/figs --out /tmp/bench_update

Part 4 needs torch (``pip install torch``, CPU build); without it, part 4 prints that it
was skipped and the rest runs.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

import xpo_sim
from xpo_sim import checks, losses
from xpo_sim.policies import POLICY_CLASSES, ImplicitRewardClass
from xpo_sim.solvers import ConvergenceWarning

torch = None     # imported by main() after the arguments are parsed (--help stays quick)
TORCH_ERROR = ""  # why torch is not importable: part 4 is then skipped

BETA = 0.1
SCALE_ALPHA = 0.01          # XPO at scale: α_t = SCALE_ALPHA/√t, SCALE_BATCH pairs a round
SCALE_BATCH = 8
SOLVERS = ("newton", "lbfgsb")
SOLVER_NAMES = {"newton": "Newton", "lbfgsb": "L-BFGS-B"}

# part 1: a round in solve_soft calls
SOLVE_TREE, QUICK_SOLVE_TREE = dict(vocab=8, horizon=5), dict(vocab=4, horizon=3)
SOLVE_NEWTON_ROUNDS, QUICK_SOLVE_NEWTON_ROUNDS = 20, 5
SOLVE_LBFGSB_ROUNDS = 2
SOLVE_REPEATS = 21
SOLVE_COUNT_TARGET = 100.0
# part 2: the 262k-response tree
BIG_TREE, QUICK_BIG_TREE = dict(vocab=8, horizon=6), dict(vocab=4, horizon=4)
BIG_ROUNDS, QUICK_BIG_ROUNDS = 100, 10
# part 3: a long run
LONG_TREE, QUICK_LONG_TREE = dict(vocab=8, horizon=4), dict(vocab=4, horizon=3)
LONG_ROUNDS, QUICK_LONG_ROUNDS = 10_000, 200
LONG_BATCH = 1
FLAT_TARGET = 1.5
# part 4: exact vs torch + Adam (the instances and data states of the earlier benchmark)
SMALL = dict(vocab=4, horizon=2)   # 16 responses
LARGE = dict(vocab=4, horizon=4)   # 256 responses
STATE_ALPHA = 0.01                 # XPO(alpha=0.01), constant, batch 1
STATE_SOLVER = "lbfgsb"            # the solver of the runs that make the data states (see part 4)
STATE_ROUNDS, QUICK_STATE_ROUNDS = 1_000, 100
SMALL_STATE_ROUNDS = 100
SPEEDUP_TARGET = 20.0
REL_GAP = 1e-6
CHECK_RTOL = 1e-10
CRITERIA = ("primary", "pg<=1e-3", "pg<=1e-6", "‖θ−θ*‖∞<=1e-4")
ADAM_LRS = (0.3, 0.1, 0.03, 0.01, 0.003)
QUICK_ADAM_LRS = (0.1, 0.03, 0.01)
# part 5: regret curves against the reference solver
AGREEMENT_BATCH = 4
AGREEMENT_ROUNDS, QUICK_AGREEMENT_ROUNDS = 30, 10
AGREEMENT_SEED = 5
AGREEMENT_TARGET = 1e-6
# part 6: scaling (vocab 8, horizons 2..6); L-BFGS-B rounds per horizon (None: not run)
SCALING_VOCAB, QUICK_SCALING_VOCAB = 8, 4
SCALING_HORIZONS, QUICK_SCALING_HORIZONS = (2, 3, 4, 5, 6), (2, 3, 4)
SCALING_NEWTON_ROUNDS, QUICK_SCALING_NEWTON_ROUNDS = 20, 5
SCALING_LBFGSB_ROUNDS = {2: 20, 3: 10, 4: 2, 5: SOLVE_LBFGSB_ROUNDS, 6: None}
QUICK_SCALING_LBFGSB_ROUNDS = {2: 5, 3: 3, 4: 2}
LBFGSB_ROUND_LIMIT_S = 20.0


T0 = time.perf_counter()


def log(message):
    print(f"[{time.perf_counter() - T0:6.1f} s] {message}", file=sys.stderr, flush=True)


def tree(spec, seed):
    return xpo_sim.envs.token_tree(spec["vocab"], spec["horizon"], seed=seed)


def responses(spec):
    return spec["vocab"] ** spec["horizon"]


def label(spec):
    return f"token_tree({spec['vocab']},{spec['horizon']}) [{responses(spec):,} responses]"


def scale_xpo(batch=SCALE_BATCH):
    return xpo_sim.XPO(alpha=SCALE_ALPHA, schedule="inv_sqrt", batch=batch)


def import_torch():
    """Import torch into this module's ``torch``, or record why it is not importable."""
    global torch, TORCH_ERROR
    try:
        import torch as module
    except ImportError as error:
        TORCH_ERROR = str(error)
    else:
        torch = module


def fmt_ms(seconds):
    ms = seconds * 1e3
    return f"{ms:,.0f}" if ms >= 100 else f"{ms:.2f}" if ms >= 1 else f"{ms:.3f}"


def fmt_ratio(value):
    return f"{value:.1f}x" if value < 100 else f"{value:.0f}x"


def fmt_count(value):
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


# --------------------------------------------------------------------- instrumentation
class TimedImplicit(ImplicitRewardClass):
    """ImplicitRewardClass that stamps each ``update`` and keeps what its solve did."""

    created: list["TimedImplicit"] = []

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.starts, self.durations, self.evals, self.distinct_pairs = [], [], [], []
        self.iterations, self.products, self.converged = [], [], []
        self._evals = 0
        self.last = None
        TimedImplicit.created.append(self)

    def _value_and_grad(self, params, state):
        self._evals += 1
        return super()._value_and_grad(params, state)

    def update(self, params, data, alpha, loss="dpo"):
        self._evals = 0
        t0 = time.perf_counter()
        out = super().update(params, data, alpha, loss)
        self.durations.append(time.perf_counter() - t0)
        self.starts.append(t0)
        result = self.solve_results[-1]
        self.evals.append(self._evals)
        self.iterations.append(result.iterations)
        self.products.append(result.hessian_products)
        self.converged.append(result.converged)
        self.distinct_pairs.append(int(data.arrays()["pair_count"].size))  # cached by update
        self.last = (np.array(params, copy=True), data, float(alpha))
        return out


@contextlib.contextmanager
def instrumented():
    """Make ``xpo_sim.run`` build a TimedImplicit for policy="implicit"; yields the list
    of instances created."""
    original = POLICY_CLASSES[ImplicitRewardClass.name]
    TimedImplicit.created = []
    POLICY_CLASSES[ImplicitRewardClass.name] = TimedImplicit
    try:
        yield TimedImplicit.created
    finally:
        POLICY_CLASSES[ImplicitRewardClass.name] = original


def timed_run(mdp, algorithm, rounds, seed, solver, record="all", max_enumerate=0):
    """One instrumented ``xpo_sim.run``: a dict with the frame, the class, run() seconds,
    setup seconds (to the first update) and the seconds of every round."""
    with instrumented() as created, warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # the converged column reports it
        t0 = time.perf_counter()
        frame = xpo_sim.run(mdp, algorithm, BETA, rounds, seed=seed, record=record,
                            max_enumerate=max_enumerate, solver=solver)
        t_end = time.perf_counter()
    pc = created[-1]
    starts = np.asarray(pc.starts)
    return dict(frame=frame, pc=pc, solver=solver, rounds=rounds, run_s=t_end - t0,
                setup_s=starts[0] - t0, round_s=np.diff(np.append(starts, t_end)),
                update_s=np.asarray(pc.durations), iterations=np.asarray(pc.iterations),
                products=np.asarray(pc.products), evals=np.asarray(pc.evals),
                converged=np.asarray(pc.converged), distinct_pairs=np.asarray(pc.distinct_pairs))


def solve_times(mdp, repeats):
    """Seconds of ``repeats`` calls of xpo_sim.solve_soft(mdp, β) (after one untimed call)."""
    xpo_sim.solve_soft(mdp, BETA)
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        xpo_sim.solve_soft(mdp, BETA)
        out.append(time.perf_counter() - t0)
    return np.asarray(out)


def warm_up(seed):
    tiny = xpo_sim.envs.token_tree(2, 2, seed=seed)
    for solver in SOLVERS:
        timed_run(tiny, scale_xpo(), 3, seed, solver)
        timed_run(tiny, xpo_sim.HybridDPO(batch=2), 2, seed, solver)
    xpo_sim.run(tiny, xpo_sim.XPO(alpha=STATE_ALPHA), BETA, 3, seed=seed, record=[3])
    solve_times(tiny, 3)


def run_summary(r, first=None):
    """Means over the rounds of a timed run (or its first ``first`` rounds)."""
    k = r["rounds"] if first is None else min(first, r["rounds"])
    return dict(rounds=k, ms=r["round_s"][:k].mean() * 1e3, update_ms=r["update_s"][:k].mean() * 1e3,
                iterations=r["iterations"][:k].mean(), products=r["products"][:k].mean(),
                evals=r["evals"][:k].mean(), converged=int(r["converged"][:k].sum()))


def converged_rounds(r):
    """Rounds 1.. whose row says converged (record="all"), or the updates' own flags."""
    frame = r["frame"]
    rows = frame[frame["round"] >= 1]
    if len(rows) == r["rounds"]:
        return int(rows["converged"].sum())
    return int(r["converged"].sum())


# --------------------------------------------------------------------------- part 1
def part1(spec, newton_rounds, seed):
    mdp = tree(spec, seed)
    before = solve_times(mdp, SOLVE_REPEATS)
    runs = {}
    runs["newton"] = timed_run(mdp, scale_xpo(), newton_rounds, seed, "newton")
    log(f"  part 1: {label(spec)}: Newton {newton_rounds} rounds: {runs['newton']['run_s']:.1f} s")
    runs["lbfgsb"] = timed_run(mdp, scale_xpo(), SOLVE_LBFGSB_ROUNDS, seed, "lbfgsb")
    log(f"  part 1: {label(spec)}: L-BFGS-B {SOLVE_LBFGSB_ROUNDS} rounds: {runs['lbfgsb']['run_s']:.1f} s")
    after = solve_times(mdp, SOLVE_REPEATS)
    solves = np.concatenate([before, after])
    return dict(spec=spec, states=mdp.n_states, runs=runs, solve_median=float(np.median(solves)),
                solve_best=float(solves.min()), solve_n=solves.size)


def print_part1(p1, quick):
    spec, med, best = p1["spec"], p1["solve_median"], p1["solve_best"]
    print(f"\n## 1. A round of XPO in solve_soft calls, {label(spec)}\n")
    print(f"XPO(alpha={SCALE_ALPHA}, schedule='inv_sqrt', batch={SCALE_BATCH}), policy='implicit', "
          f"max_enumerate=0, record='all' (metrics included); {p1['states']:,} states. One "
          f"xpo_sim.solve_soft(mdp, {BETA}) on the same tree: median {fmt_ms(med)} ms, best {fmt_ms(best)} ms "
          f"({p1['solve_n']} calls, before and after the runs).\n")
    print("| solver | rounds | ms/round | update ms | iterations/update | Hessian-vector products/update "
          "| objective evals/update | rounds converged | round / solve_soft (median) "
          "| round / solve_soft (best) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    newton, lbfgsb = p1["runs"]["newton"], p1["runs"]["lbfgsb"]
    rows = [("Newton", run_summary(newton)), ("L-BFGS-B", run_summary(lbfgsb)),
            (f"Newton, rounds 1–{lbfgsb['rounds']}", run_summary(newton, lbfgsb["rounds"]))]
    for name, s in rows:
        print(f"| {name} | {s['rounds']} | {fmt_ms(s['ms'] / 1e3)} | {fmt_ms(s['update_ms'] / 1e3)} "
              f"| {s['iterations']:.1f} | {s['products']:.1f} | {s['evals']:.1f} | {s['converged']}/{s['rounds']} "
              f"| {fmt_count(s['ms'] / 1e3 / med)} | {fmt_count(s['ms'] / 1e3 / best)} |")
    n, l, nk = rows[0][1], rows[1][1], rows[2][1]
    ratio = n["ms"] / 1e3 / med
    speed = l["ms"] / nk["ms"]
    print(f"\nNewton vs L-BFGS-B over the same rounds 1–{l['rounds']}: {fmt_ratio(speed)} faster per round")
    verdict = ("not judged (--quick: the target is for token_tree(8,5))" if quick
               else "MET" if ratio <= SOLVE_COUNT_TARGET else "NOT MET")
    print(f"\ntarget a round of XPO <= {SOLVE_COUNT_TARGET:.0f} solve_soft calls, {label(spec)}: {verdict} "
          f"(Newton {ratio:.1f} solves per round; L-BFGS-B {l['ms'] / 1e3 / med:,.0f} solves per round "
          f"over {l['rounds']} rounds)")
    return dict(ratio=ratio, lbfgsb_ratio=l["ms"] / 1e3 / med, verdict=verdict, speed=speed)


# --------------------------------------------------------------------------- part 2
def part2(spec, rounds, seed):
    mdp = tree(spec, seed)
    solves = solve_times(mdp, 5)
    r = timed_run(mdp, scale_xpo(), rounds, seed, "newton")
    log(f"  part 2: {label(spec)}: {rounds} rounds: {r['run_s']:.1f} s")
    return dict(spec=spec, states=mdp.n_states, run=r, solve_median=float(np.median(solves)))


def print_part2(p2, quick):
    spec, r = p2["spec"], p2["run"]
    s = run_summary(r)
    tail = max(1, r["rounds"] // 10)
    conv = converged_rounds(r)
    print(f"\n## 2. {r['rounds']} rounds of XPO on {label(spec)}, Newton solver\n")
    print(f"Same setting as part 1; {p2['states']:,} states; one solve_soft: {fmt_ms(p2['solve_median'])} ms "
          f"(median of 5).\n")
    print("| rounds | run() s | setup s | ms/round (mean) | ms/round (last decile) | max ms/round | update ms "
          "| iterations/update (max) | Hessian-vector products/update | distinct pairs | rounds converged "
          "| round / solve_soft | regret at the end / regret(π_ref) |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    frame = r["frame"]
    rel = frame["regret"].iloc[-1] / frame["regret"].iloc[0]
    print(f"| {r['rounds']} | {r['run_s']:.1f} | {r['setup_s']:.2f} | {fmt_ms(s['ms'] / 1e3)} "
          f"| {fmt_ms(r['round_s'][-tail:].mean())} | {fmt_ms(r['round_s'].max())} | {fmt_ms(s['update_ms'] / 1e3)} "
          f"| {s['iterations']:.1f} ({r['iterations'].max()}) | {s['products']:.1f} "
          f"| {r['distinct_pairs'][-1]:,} | {conv}/{r['rounds']} | {fmt_count(s['ms'] / 1e3 / p2['solve_median'])} "
          f"| {rel:.3f} |")
    ok = conv == r["rounds"]
    verdict = ("not judged (--quick: the target is 100 rounds on token_tree(8,6))" if quick
               else "MET" if ok else "NOT MET")
    print(f"\ntarget {BIG_ROUNDS} rounds on token_tree(8,6), every round converged: {verdict} "
          f"({conv}/{r['rounds']} rounds converged, {fmt_ms(s['ms'] / 1e3)} ms per round)")
    return dict(ms=s["ms"], converged=conv, rounds=r["rounds"], verdict=verdict, ok=ok,
                tail_ms=r["round_s"][-tail:].mean() * 1e3)


# --------------------------------------------------------------------------- part 3
def part3(spec, rounds, seed):
    mdp = tree(spec, seed)
    r = timed_run(mdp, scale_xpo(LONG_BATCH), rounds, seed, "newton", record=[rounds])
    log(f"  part 3: {label(spec)}: {rounds:,} rounds: {r['run_s']:.1f} s")
    return dict(spec=spec, run=r)


def print_part3(p3, quick):
    spec, r = p3["spec"], p3["run"]
    rounds = r["rounds"]
    print(f"\n## 3. {rounds:,} rounds of XPO on {label(spec)}, Newton solver\n")
    print(f"XPO(alpha={SCALE_ALPHA}, schedule='inv_sqrt', batch={LONG_BATCH}), record=[{rounds}] (every iterate "
          f"still scored for best_regret), max_enumerate=0. run() {r['run_s']:.1f} s, setup {r['setup_s']:.2f} s; "
          f"{converged_rounds(r):,}/{rounds:,} updates converged.\n")
    print("| decile | rounds | distinct pairs at the end | ms/round | update ms | iterations/update "
          "| Hessian-vector products/update | updates converged |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|")
    edges = np.linspace(0, rounds, 11).astype(int)
    deciles = []
    for d in range(10):
        lo, hi = edges[d], edges[d + 1]
        sl = slice(lo, hi)
        ms = r["round_s"][sl].mean() * 1e3
        deciles.append(ms)
        print(f"| {d + 1} | {lo + 1}–{hi} | {r['distinct_pairs'][hi - 1]:,} | {ms:.2f} "
              f"| {r['update_s'][sl].mean() * 1e3:.2f} | {r['iterations'][sl].mean():.2f} "
              f"| {r['products'][sl].mean():.1f} | {int(r['converged'][sl].sum())}/{hi - lo} |")
    ratio = deciles[-1] / deciles[0]
    x = r["distinct_pairs"] / 1000.0
    b, a = np.polyfit(x, r["round_s"] * 1e3, 1)
    shape = "flat" if ratio <= FLAT_TARGET else "not flat: grows with the distinct pairs"
    print(f"\nper-round cost over the run: last decile / first decile = {ratio:.2f} ({shape}; flat means "
          f"<= {FLAT_TARGET}); least squares ms/round ≈ {a:.2f} + {b:.2f}·(distinct pairs / 1000); "
          f"{rounds:,} rounds in {r['run_s']:.1f} s")
    if quick:
        print(f"\ntarget {LONG_ROUNDS:,} rounds on token_tree(8,4): not judged (--quick: {rounds:,} rounds on "
              f"{label(spec)})")
    else:
        print(f"\ntarget {LONG_ROUNDS:,} rounds on token_tree(8,4), per-round cost reported: done "
              f"({rounds:,} rounds, {converged_rounds(r):,} converged; {shape})")
    return dict(ratio=ratio, first=deciles[0], last=deciles[-1], a=a, b=b, shape=shape, run_s=r["run_s"])


# --------------------------------------------------------------------------- part 4
class ProbeImplicit(ImplicitRewardClass):
    """ImplicitRewardClass whose value-and-gradient records when each criterion is first met."""

    def arm(self, f_star, x_star, rel_gap):
        self.f_star, self.x_star, self.rel_gap = f_star, x_star, rel_gap
        self.hits = {}
        self.t0 = time.perf_counter()
        self.evals = 0

    def _value_and_grad(self, params, state):
        value, grad = super()._value_and_grad(params, state)
        self.evals += 1
        now = time.perf_counter() - self.t0
        lo, hi = self.box
        pg = float(np.max(np.abs(np.clip(params - grad, lo, hi) - params))) if grad.size else 0.0
        dist = float(np.max(np.abs(params - self.x_star))) if grad.size else 0.0
        for name, met in criteria_met(value, pg, dist, self.f_star, self.rel_gap, self.gtol).items():
            if met and name not in self.hits:
                self.hits[name] = (now, self.evals)
        return value, grad


def criteria_met(loss, pg, dist, f_star, rel_gap, gtol):
    """``dist`` = max_i |θ_i − θ*_i| to the reference solution θ*."""
    return {
        "primary": (loss - f_star <= rel_gap * abs(f_star)) or pg <= gtol,
        "pg<=1e-3": pg <= 1e-3,
        "pg<=1e-6": pg <= 1e-6,
        "‖θ−θ*‖∞<=1e-4": dist <= 1e-4,
    }


class TorchObjective:
    """The round objective L(θ) of the implicit-reward class in torch (float64)."""

    def __init__(self, mdp, pc, data, alpha, form):
        arrays = data.arrays()
        t = lambda a, dtype=torch.float64: torch.as_tensor(np.array(a), dtype=dtype)  # noqa: E731
        self.beta, self.alpha, self.form = pc.beta, alpha, form
        n_states, n_actions = mdp.n_states, mdp.n_actions
        self.n_states, self.n_actions = n_states, n_actions
        self.flat_index = t(pc.index[0] * n_actions + pc.index[1], torch.int64)
        self.ref = t(mdp.ref_logp)
        self.pair_c = t(arrays["pair_chosen"], torch.int64)
        self.pair_r = t(arrays["pair_rejected"], torch.int64)
        self.pair_n = t(arrays["pair_count"])
        self.expl = t(arrays["explore_path"], torch.int64)
        self.expl_n = t(arrays["explore_count"])
        self.path_ref = t(arrays["path_ref_logp"])
        if form == "layer":
            offsets = [int(o) for o in mdp.info["layer_offsets"]]
            self.layers = []
            for d in range(len(offsets) - 1):
                lo, hi = offsets[d], offsets[d + 1]
                nxt = np.array(mdp.next_state[lo:hi])
                local = nxt - offsets[d + 1] if d + 2 < len(offsets) else None
                self.layers.append((lo, hi, None if local is None else t(local, torch.int64)))
            states, actions = arrays["path_states"], arrays["path_actions"]
            width = states.shape[1]
            self.valid = t(np.arange(width)[None, :] < arrays["path_lengths"][:, None], torch.bool)
            self.path_s = t(np.maximum(states, 0), torch.int64)
            self.path_a = t(np.maximum(actions, 0), torch.int64)
        elif form == "leaves":
            if pc.support != "terminal":
                raise ValueError("the 'leaves' form needs terminal-only reward parameters")
            batch = mdp.trajectories()
            n_prompts = int(mdp.start_states.size)
            n_traj = len(batch)
            if n_traj % n_prompts:
                raise ValueError("the 'leaves' form needs the same number of responses per prompt")
            last = batch.lengths - 1
            rows = np.arange(n_traj)
            leaf_s, leaf_a = batch.states[rows, last], batch.actions[rows, last]
            self.traj_leaf = t(leaf_s * n_actions + leaf_a, torch.int64)
            ref_traj = np.array([mdp.ref_logp[batch.states[i, :n], batch.actions[i, :n]].sum()
                                 for i, n in enumerate(batch.lengths)])
            self.traj_ref = t(ref_traj).reshape(n_prompts, n_traj // n_prompts)
            key = {(int(batch.states[i, 0]), *batch.actions[i, :n].tolist()): i
                   for i, n in enumerate(batch.lengths)}
            self.path_traj = t([key[(int(s[0]), *a[:n].tolist())] for s, a, n in
                                zip(arrays["path_states"], arrays["path_actions"],
                                    arrays["path_lengths"])], torch.int64)
        else:
            raise ValueError(form)

    def path_logp(self, theta):
        """log π_θ(τ_k) for every distinct trajectory of the data."""
        size = self.n_states * self.n_actions
        r_hat = torch.zeros(size, dtype=theta.dtype).index_copy(0, self.flat_index, theta)
        beta = self.beta
        if self.form == "leaves":
            x = self.traj_ref + (r_hat[self.traj_leaf] / beta).reshape(self.traj_ref.shape)
            logp = (x - torch.logsumexp(x, dim=1, keepdim=True)).reshape(-1)
            return logp[self.path_traj]
        r_hat = r_hat.reshape(self.n_states, self.n_actions)
        per_layer, v_next = [], None
        for lo, hi, local_next in reversed(self.layers):
            q = r_hat[lo:hi]
            if local_next is not None:
                q = q + v_next[local_next]
            x = self.ref[lo:hi] + q / beta
            lse = torch.logsumexp(x, dim=1, keepdim=True)
            per_layer.append(x - lse)
            v_next = beta * lse[:, 0]
        logp_table = torch.cat(per_layer[::-1])
        steps = logp_table[self.path_s, self.path_a]
        return torch.where(self.valid, steps, torch.zeros_like(steps)).sum(dim=1)

    def __call__(self, theta):
        lp = self.path_logp(theta)
        dpo = losses.dpo_loss(lp[self.pair_c], lp[self.pair_r], self.path_ref[self.pair_c],
                              self.path_ref[self.pair_r], self.beta)
        bonus = losses.xpo_bonus(lp[self.expl], self.alpha)
        return (self.pair_n * dpo).sum() + (self.expl_n * bonus).sum()

    def value_and_grad(self, params):
        theta = torch.tensor(params, dtype=torch.float64, requires_grad=True)
        loss = self(theta)
        loss.backward()
        return loss.item(), theta.grad.numpy().copy()


def best_time(fn, repeats):
    fn()
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def adam(objective, p0, box, lr, f_star, x_star, gtol, max_steps, max_seconds, stop_after=None):
    """Projected Adam from p0; returns first (time, step) per criterion and the best point."""
    lo, hi = box
    theta = torch.tensor(p0, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([theta], lr=lr)
    target = torch.as_tensor(x_star, dtype=torch.float64)
    hits, best_f, min_pg, steps = {}, math.inf, math.inf, 0
    targets = CRITERIA if stop_after is None else (stop_after,)
    t0 = time.perf_counter()
    for step in range(max_steps):
        opt.zero_grad()
        loss = objective(theta)
        loss.backward()
        with torch.no_grad():
            pg = (torch.clamp(theta - theta.grad, lo, hi) - theta).abs().max().item()
            dist = (theta - target).abs().max().item()
        f = loss.item()
        now = time.perf_counter() - t0
        best_f, min_pg, steps = min(best_f, f), min(min_pg, pg), step + 1
        for name, met in criteria_met(f, pg, dist, f_star, REL_GAP, gtol).items():
            if met and name not in hits:
                hits[name] = (now, step)
        if all(name in hits for name in targets) or now > max_seconds:
            break
        opt.step()
        with torch.no_grad():
            theta.clamp_(lo, hi)
    return dict(hits=hits, best_f=best_f, min_pg=min_pg, steps=steps, seconds=time.perf_counter() - t0)


def part4_state(spec, rounds, seed, args, lrs):
    """The data state after ``rounds`` rounds of XPO(alpha=0.01) with L-BFGS-B updates (the
    earlier benchmark's states), and every method's time to each tolerance from its warm start."""
    mdp = tree(spec, seed)
    r = timed_run(mdp, xpo_sim.XPO(alpha=STATE_ALPHA), rounds, seed, STATE_SOLVER, record=[rounds])
    pc = r["pc"]
    p0, data, alpha = pc.last
    options = dict(box=pc.box, support=pc.support, gtol=pc.gtol)
    plain = {solver: ImplicitRewardClass(mdp, BETA, solver=solver, **options) for solver in SOLVERS}
    probe = {solver: ProbeImplicit(mdp, BETA, solver=solver, **options) for solver in SOLVERS}
    results = {}
    for solver in SOLVERS:
        x = plain[solver].update(p0, data, alpha)
        f, g = plain[solver].objective(x, data, alpha)
        lo, hi = plain[solver].box
        results[solver] = dict(x=x, f=f, pg=float(np.max(np.abs(np.clip(x - g, lo, hi) - x))),
                               converged=plain[solver].solve_results[-1].converged,
                               iterations=plain[solver].solve_results[-1].iterations)
    reference = min(SOLVERS, key=lambda s: results[s]["f"])
    f_star, x_star = results[reference]["f"], results[reference]["x"]
    cls = plain["newton"]
    f0, _ = cls.objective(p0, data, alpha)
    arrays = data.arrays()
    info = dict(name=f"{label(spec)} after {rounds:,} rounds", params=cls.n_params, rounds=rounds,
                pairs=data.n_pairs, distinct_pairs=int(arrays["pair_count"].size),
                paths=data.n_distinct, explored=int(arrays["explore_path"].size), alpha=alpha,
                f0=f0, f_star=f_star, reference=reference, results=results, box=cls.box,
                solver_gap=float(np.max(np.abs(results["newton"]["x"] - results["lbfgsb"]["x"]))))

    # correctness of the baseline against the kernel
    forms = {}
    for form in ("layer", "leaves"):
        try:
            obj = TorchObjective(mdp, cls, data, alpha, form)
        except ValueError:
            continue
        for where, x in (("warm start", p0), ("optimum", x_star)):
            f_k, g_k = cls.objective(x, data, alpha)
            f_t, g_t = obj.value_and_grad(x)
            rel = abs(f_t - f_k) / abs(f_k)
            assert rel <= CHECK_RTOL, (
                f"torch '{form}' objective {f_t!r} != kernel {f_k!r} at the {where} "
                f"(relative {rel:.2e}) on {info['name']}")
            scale = max(1.0, float(np.max(np.abs(g_k))))
            err = float(np.max(np.abs(g_t - g_k)))
            assert err <= 1e-8 * scale, (
                f"torch '{form}' gradient differs from the kernel's by {err:.2e} at the {where} "
                f"on {info['name']}")
            info.setdefault("check", []).append(f"{form}@{where}: rel {rel:.1e}")
        forms[form] = obj

    # per-evaluation cost
    reps = args.repeats * 60
    t_kernel = best_time(lambda: cls.objective(p0, data, alpha), reps)
    t_forms = {form: best_time(lambda o=obj: o.value_and_grad(p0), max(5, reps // 4))
               for form, obj in forms.items()}
    form = min(t_forms, key=t_forms.get)
    objective = forms[form]

    # exact updates: full call, then time to each tolerance (probe); BLAS limited to one
    # thread as inside xpo_sim.run
    upd_reps = args.repeats * 5
    exact = {}
    with threadpool_limits(limits=1, user_api="blas"):
        for solver in SOLVERS:
            t_update = best_time(lambda s=solver: plain[s].update(p0, data, alpha), upd_reps)
            hits, evals = {}, 0
            for _ in range(upd_reps):
                probe[solver].arm(f_star, x_star, REL_GAP)
                probe[solver].update(p0, data, alpha)
                evals = probe[solver].evals
                for name, (sec, k) in probe[solver].hits.items():
                    if name not in hits or sec < hits[name][0]:
                        hits[name] = (sec, k)
            exact[solver] = dict(t_update=t_update, hits=hits, evals=evals)

    # Adam over the learning-rate grid
    runs = {}
    for lr in lrs:
        runs[lr] = adam(objective, p0, cls.box, lr, f_star, x_star, cls.gtol, args.adam_steps,
                        args.adam_seconds)
        log(f"  part 4: {info['name']}: Adam lr={lr}: {runs[lr]['steps']} steps, "
            f"{runs[lr]['seconds']:.2f} s, reached {sorted(runs[lr]['hits'])}")
    # best of repeats: rerun each (criterion, lr) that got there in few steps, up to that step
    rerun_cap = 50 if args.quick else 1_000
    adam_best = {}
    for name in CRITERIA:
        for lr, run in runs.items():
            if name not in run["hits"]:
                continue
            seconds, step = run["hits"][name]
            if step <= rerun_cap:
                for _ in range(args.repeats):
                    again = adam(objective, p0, cls.box, lr, f_star, x_star, cls.gtol, step + 1,
                                 args.adam_seconds, stop_after=name)
                    if name in again["hits"]:
                        seconds = min(seconds, again["hits"][name][0])
            if name not in adam_best or seconds < adam_best[name]["seconds"]:
                adam_best[name] = dict(seconds=seconds, lr=lr, step=step)
    info.update(t_kernel=t_kernel, t_forms=t_forms, form=form, exact=exact, adam_best=adam_best, runs=runs)
    return info


def print_part4(states, lrs, args):
    print("\n## 4. Exact update (Newton; L-BFGS-B) vs torch autograd + projected Adam\n")
    for s in states:
        res = s["results"]
        print(f"- {s['name']} (of XPO(alpha={STATE_ALPHA}), {SOLVER_NAMES[STATE_SOLVER]} updates): "
              f"{s['params']} params, box {s['box']}, {s['pairs']:,} pairs, "
              f"{s['distinct_pairs']:,} distinct pairs, {s['paths']:,} distinct trajectories, "
              f"{s['explored']} distinct explored, α = {s['alpha']}; L(warm start) = {s['f0']:.10g}, "
              f"f* = {s['f_star']:.10g} ({SOLVER_NAMES[s['reference']]}); "
              + "; ".join(f"{SOLVER_NAMES[k]}: L − f* = {v['f'] - s['f_star']:.1e}, pg {v['pg']:.1e}, "
                          f"{v['iterations']} iterations, converged {v['converged']}" for k, v in res.items())
              + f"; ‖θ_Newton − θ_L-BFGS-B‖∞ = {s['solver_gap']:.1e}; "
              f"torch == kernel checks: {'; '.join(s['check'])}")
        if s["f0"] - s["f_star"] <= REL_GAP * abs(s["f_star"]):
            print("  (degenerate: the warm start already meets the primary tolerance, so its "
                  "times measure one evaluation)")
    print("\nCost of one objective + gradient evaluation (best of repeats):\n")
    print("| data state | numba kernel via ImplicitRewardClass.objective µs | torch 'layer' fwd+bwd µs "
          "| torch 'leaves' fwd+bwd µs | ratio (best torch / numba) |")
    print("|---|---:|---:|---:|---:|")
    for s in states:
        tl = s["t_forms"].get("layer")
        tv = s["t_forms"].get("leaves")
        fmt = lambda v: "n/a" if v is None else f"{v * 1e6:.1f}"  # noqa: E731
        print(f"| {s['name']} | {s['t_kernel'] * 1e6:.1f} | {fmt(tl)} | {fmt(tv)} "
              f"| {s['t_forms'][s['form']] / s['t_kernel']:.1f}x |")
    print(f"\nTime to tolerance from the same warm start (primary: L − f* <= {REL_GAP:g}·|f*| or "
          f"pg <= gtol; Adam: best of lr {list(lrs)}, at most {args.adam_steps} steps / "
          f"{args.adam_seconds:g} s per lr):\n")
    print("| data state | criterion | Newton: time to tol ms (evals) | Newton: full update() ms "
          "| L-BFGS-B: time to tol ms (evals) | L-BFGS-B: full update() ms | Adam: time to tol ms | Adam lr, step "
          "| ratio Adam / Newton (time to tol) | ratio Adam / Newton full update() "
          "| ratio Adam / L-BFGS-B (time to tol) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    verdicts = []
    for s in states:
        longest = max(r["seconds"] for r in s["runs"].values())
        for name in CRITERIA:
            ad = s["adam_best"].get(name)
            cells, ratios = [], []
            for solver in SOLVERS:
                ex = s["exact"][solver]
                hit = ex["hits"].get(name)
                cells.append(f"{hit[0] * 1e3:.3f} ({hit[1]})" if hit else f"not reached ({ex['evals']} evals)")
                cells.append(f"{ex['t_update'] * 1e3:.3f}")
                for base in ((hit[0] if hit else None), ex["t_update"]):
                    if base is None:
                        ratios.append("n/a")
                    elif ad:
                        ratios.append(f"{ad['seconds'] / base:.1f}x")
                    else:
                        ratios.append(f"> {longest / base:.0f}x")
            ad_txt = f"{ad['seconds'] * 1e3:.2f}" if ad else f"not reached (> {longest * 1e3:.0f})"
            lr_txt = f"{ad['lr']:g}, {ad['step']}" if ad else "—"
            print(f"| {s['name']} | {name} | {' | '.join(cells)} | {ad_txt} | {lr_txt} "
                  f"| {ratios[0]} | {ratios[1]} | {ratios[2]} |")
            if name == "primary":
                hit = s["exact"]["newton"]["hits"].get(name)
                lb = s["exact"]["lbfgsb"]["hits"].get(name)
                adam_s = ad["seconds"] if ad else longest
                if hit:
                    verdicts.append(dict(name=s["name"], ratio=adam_s / hit[0],
                                         full=adam_s / s["exact"]["newton"]["t_update"],
                                         lbfgsb=(adam_s / lb[0]) if lb else math.nan, reached=bool(ad)))
    print("\nAdam per learning rate (steps run, L at its best point − f*, smallest pg seen; a "
          "negative L − f* means Adam went to a different, lower local minimum: with α > 0 "
          "the objective is not convex):\n")
    print("| data state | lr | steps | seconds | best L − f* | min pg | criteria reached |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for s in states:
        for lr, r in s["runs"].items():
            print(f"| {s['name']} | {lr:g} | {r['steps']} | {r['seconds']:.2f} | {r['best_f'] - s['f_star']:.3e} "
                  f"| {r['min_pg']:.1e} | {', '.join(n for n in CRITERIA if n in r['hits']) or 'none'} |")
    for v in verdicts:
        bound = "" if v["reached"] else ">= "
        v["verdict"] = "MET" if v["ratio"] >= SPEEDUP_TARGET else "NOT MET"
        print(f"\ntarget exact (Newton) >= {SPEEDUP_TARGET:.0f}x faster to the primary tolerance, {v['name']}: "
              f"{v['verdict']} (time to tol {bound}{v['ratio']:.1f}x; against the full update() call "
              f"{bound}{v['full']:.1f}x; L-BFGS-B time to tol {bound}{v['lbfgsb']:.1f}x)")
    return verdicts


# --------------------------------------------------------------------------- part 5
def agreement_cases(quick):
    envs = xpo_sim.envs
    cases = [
        ("token_tree(4,2) [16 responses]", lambda: envs.token_tree(4, 2, seed=1)),
        ("token_tree(4,3) [64 responses]", lambda: envs.token_tree(4, 3, seed=2)),
    ]
    if not quick:
        cases += [
            ("token_tree(8,2) [64 responses]", lambda: envs.token_tree(8, 2, seed=3)),
            ("token_needle(4,3,ε=1e-2) [64 responses]",
             lambda: envs.token_needle(4, 3, 1e-2, bad_reward=(0.0, 0.5), seed=1)),
        ]
    return cases


def part5(quick):
    rounds = QUICK_AGREEMENT_ROUNDS if quick else AGREEMENT_ROUNDS
    algorithms = [("HybridDPO", xpo_sim.HybridDPO(batch=AGREEMENT_BATCH)),
                  ("XPO", scale_xpo(AGREEMENT_BATCH))]
    rows = []
    for name, make in agreement_cases(quick):
        mdp = make()
        for algo_name, algorithm in algorithms:
            runs = {solver: timed_run(mdp, algorithm, rounds, AGREEMENT_SEED, solver, max_enumerate=0)
                    for solver in SOLVERS}
            a, b = runs["newton"]["frame"], runs["lbfgsb"]["frame"]
            assert (a["round"].to_numpy() == b["round"].to_numpy()).all()
            later = a["round"].to_numpy() >= 1
            both = later & a["converged"].to_numpy() & b["converged"].to_numpy()
            ref = float(a["regret"].iloc[0])
            delta = np.abs(a["regret"].to_numpy() - b["regret"].to_numpy())[both]
            rows.append(dict(instance=name, algorithm=algo_name, rounds=rounds, both=int(both.sum()),
                             newton_conv=int(a["converged"].to_numpy()[later].sum()),
                             lbfgsb_conv=int(b["converged"].to_numpy()[later].sum()),
                             delta=float(delta.max() / ref) if delta.size else math.nan,
                             final=float(a["regret"].iloc[-1] / ref),
                             newton_ms=runs["newton"]["round_s"].mean() * 1e3,
                             lbfgsb_ms=runs["lbfgsb"]["round_s"].mean() * 1e3))
            log(f"  part 5: {name} {algo_name}: max |Δregret|/regret(π_ref) = {rows[-1]['delta']:.2e}")
    return rows


def print_part5(rows):
    print("\n## 5. Regret curves: Newton against the reference L-BFGS-B (same seed, same instance)\n")
    print(f"batch={AGREEMENT_BATCH}, seed={AGREEMENT_SEED}, record='all'; HybridDPO has no bonus (convex "
          "objective), XPO uses α_t = 0.01/√t (non-convex). Δ is taken over rounds >= 1 where both runs' "
          "converged is True.\n")
    print("| instance | algorithm | rounds | Newton converged | L-BFGS-B converged | compared rounds "
          "| max abs(Δregret) / regret(π_ref) | Newton final regret / regret(π_ref) | Newton ms/round "
          "| L-BFGS-B ms/round |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['instance']} | {r['algorithm']} | {r['rounds']} | {r['newton_conv']} | {r['lbfgsb_conv']} "
              f"| {r['both']} | {r['delta']:.2e} | {r['final']:.3f} | {r['newton_ms']:.2f} | {r['lbfgsb_ms']:.2f} |")
    out = {}
    for algo in ("HybridDPO", "XPO"):
        sel = [r for r in rows if r["algorithm"] == algo]
        values = [r["delta"] for r in sel if r["both"] > 0]
        worst = max(values) if values else math.nan
        compared = sum(r["both"] for r in sel)
        out[algo] = worst
        if algo == "HybridDPO":
            ok = math.isfinite(worst) and worst <= AGREEMENT_TARGET
            out["verdict"] = "MET" if ok else "NOT MET"
            print(f"\nregret agreement, HybridDPO (convex): max |Δregret| / regret(π_ref) = {worst:.2e} over "
                  f"{compared} rounds where both converged, {len(sel)} instances (target <= {AGREEMENT_TARGET:g}): "
                  f"{out['verdict']}")
        else:
            print(f"\nregret agreement, XPO (may differ: non-convex, different local minima possible): "
                  f"max |Δregret| / regret(π_ref) = {worst:.2e} over {compared} rounds where both converged, "
                  f"{len(sel)} instances (not judged)")
    return out


# --------------------------------------------------------------------------- part 6
def part6(vocab, horizons, newton_rounds, lbfgsb_rounds, seed, reuse):
    """ms/round per size for both solvers; ``reuse`` maps a spec key to earlier timed runs."""
    rows = []
    for h in horizons:
        spec = dict(vocab=vocab, horizon=h)
        key = (vocab, h)
        mdp = tree(spec, seed)
        solve = float(np.median(solve_times(mdp, 5)))
        runs = dict(reuse.get(key, {}))
        if "newton" not in runs:
            runs["newton"] = timed_run(mdp, scale_xpo(), newton_rounds, seed, "newton")
        k = lbfgsb_rounds.get(h)
        if "lbfgsb" not in runs and k:
            runs["lbfgsb"] = timed_run(mdp, scale_xpo(), k, seed, "lbfgsb")
        n = run_summary(runs["newton"], newton_rounds)
        row = dict(spec=spec, responses=responses(spec), solve_ms=solve * 1e3, newton=n, lbfgsb=None)
        if "lbfgsb" in runs:
            lb = run_summary(runs["lbfgsb"])
            row.update(lbfgsb=lb, newton_same=run_summary(runs["newton"], lb["rounds"]))
        rows.append(row)
        log(f"  part 6: {label(spec)}: Newton {n['ms']:.1f} ms/round"
            + (f", L-BFGS-B {row['lbfgsb']['ms']:.0f} ms/round" if row["lbfgsb"] else ", L-BFGS-B not run"))
    return rows


def print_part6(rows):
    print("\n## 6. Scaling: ms per round against the number of responses\n")
    print("XPO as in part 1 on token trees; Newton over its first rounds (as many as the column says), "
          f"L-BFGS-B only where a round takes < ~{LBFGSB_ROUND_LIMIT_S:.0f} s on an idle core (and part 1's "
          "token_tree(8,5)); speedup over the same first rounds.\n")
    print("| instance | responses | solve_soft ms | Newton rounds | Newton ms/round | Newton round / solve_soft "
          "| L-BFGS-B rounds | L-BFGS-B ms/round | L-BFGS-B converged | speedup (same rounds) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        n, lb = r["newton"], r["lbfgsb"]
        if lb:
            same = r["newton_same"]
            lb_cells = (f"{lb['rounds']} | {fmt_ms(lb['ms'] / 1e3)} | {lb['converged']}/{lb['rounds']} "
                        f"| {fmt_ratio(lb['ms'] / same['ms'])}")
        else:
            lb_cells = "— | not run | — | —"
        print(f"| {label(r['spec'])} | {r['responses']:,} | {fmt_ms(r['solve_ms'] / 1e3)} | {n['rounds']} "
              f"| {fmt_ms(n['ms'] / 1e3)} | {fmt_count(n['ms'] / r['solve_ms'])} | {lb_cells} |")


def plot_scaling(rows, long_run, path, quick):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4.6))
    x = np.array([r["responses"] for r in rows])
    newton = np.array([r["newton"]["ms"] for r in rows])
    ax.loglog(x, newton, "o-", color="#d62728", label=f"Newton (first {rows[0]['newton']['rounds']} rounds)")
    done = [r for r in rows if r["lbfgsb"]]
    if done:
        ax.loglog([r["responses"] for r in done], [r["lbfgsb"]["ms"] for r in done], "-", color="#1f77b4")
        full = [r for r in done if r["lbfgsb"]["converged"] == r["lbfgsb"]["rounds"]]
        short = [r for r in done if r["lbfgsb"]["converged"] < r["lbfgsb"]["rounds"]]
        ax.loglog([r["responses"] for r in full], [r["lbfgsb"]["ms"] for r in full], "s", color="#1f77b4",
                  label="L-BFGS-B (reference)")
        if short:
            ax.loglog([r["responses"] for r in short], [r["lbfgsb"]["ms"] for r in short], "s", color="#1f77b4",
                      markerfacecolor="white", label="L-BFGS-B, some rounds stopped short")
        for r in done:
            ax.annotate(f"{r['lbfgsb']['rounds']} rds", (r["responses"], r["lbfgsb"]["ms"]),
                        textcoords="offset points", xytext=(5, -12), fontsize=7, color="#1f77b4")
    ax.loglog(x, [r["solve_ms"] for r in rows], "^--", color="#7f7f7f", label="one solve_soft (scale)")
    top = max([r["lbfgsb"]["ms"] for r in done] + list(newton)) * 3
    for r in rows:
        if not r["lbfgsb"]:
            ax.scatter([r["responses"]], [top], marker="x", color="#1f77b4")
            ax.annotate("L-BFGS-B\nnot run", (r["responses"], top), textcoords="offset points", xytext=(-20, -28),
                        fontsize=7, color="#1f77b4")
    ax.set_xticks(x)
    ax.set_xticklabels([f"{v:,}" for v in x], fontsize=8)
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("responses (token_tree, vocab {}, horizon {}…{})".format(
        rows[0]["spec"]["vocab"], rows[0]["spec"]["horizon"], rows[-1]["spec"]["horizon"]))
    ax.set_ylabel("ms per round")
    ax.set_title("(a) XPO round (batch 8, α=0.01/√t, metrics included)", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")

    r = long_run["run"]
    rounds = np.arange(1, r["rounds"] + 1)
    ms = r["round_s"] * 1e3
    bx.plot(rounds, ms, ".", color="#d62728", alpha=0.15, markersize=2, label="each round")
    window = max(10, r["rounds"] // 100)
    smooth = np.convolve(ms, np.ones(window) / window, mode="valid")
    bx.plot(rounds[window - 1:], smooth, "-", color="#d62728", label=f"mean of {window} rounds")
    bx.set_ylim(0, np.percentile(ms, 99.5) * 1.2)
    bx.set_xlabel("round")
    bx.set_ylabel("ms per round (Newton)")
    bx.set_title(f"(b) {label(long_run['spec'])}, batch {LONG_BATCH}", fontsize=10)
    cx = bx.twinx()
    cx.plot(rounds, r["distinct_pairs"], "--", color="#7f7f7f", label="distinct pairs")
    cx.set_ylabel("distinct pairs")
    lines = bx.get_legend_handles_labels()
    more = cx.get_legend_handles_labels()
    bx.legend(lines[0] + more[0], lines[1] + more[1], fontsize=8, loc="upper left")
    bx.grid(True, alpha=0.3)
    fig.suptitle("Exact per-round update: projected Newton vs L-BFGS-B" + (" (--quick: tiny sizes)" if quick else ""))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130)
    plt.close(fig)


# --------------------------------------------------------------------------- summary
def summary_table(p1, s1, p2, s2, p3, s3, verdicts, s5, rows6, torch_skipped):
    lines = ["| part | measure | instance | value | target | verdict |", "|---|---|---|---:|---|---|"]
    add = lambda *cells: lines.append("| " + " | ".join(str(c) for c in cells) + " |")  # noqa: E731
    short = lambda v: v.split(" (")[0]  # noqa: E731
    inst1 = label(p1["spec"])
    n1, l1 = run_summary(p1["runs"]["newton"]), run_summary(p1["runs"]["lbfgsb"])
    add(1, "one solve_soft, ms (median)", inst1, fmt_ms(p1["solve_median"]), "", "")
    add(1, f"Newton ms/round ({n1['rounds']} rounds)", inst1, fmt_ms(n1["ms"] / 1e3), "", "")
    add(1, f"L-BFGS-B ms/round ({l1['rounds']} rounds)", inst1, fmt_ms(l1["ms"] / 1e3), "", "")
    add(1, "Newton round / solve_soft", inst1, f"{s1['ratio']:.1f}", f"≤ {SOLVE_COUNT_TARGET:.0f}", short(s1["verdict"]))
    add(1, "L-BFGS-B round / solve_soft", inst1,
        f"{s1['lbfgsb_ratio']:,.0f} ({l1['converged']}/{l1['rounds']} rounds converged)", "(was ~38,000)", "")
    add(1, "Newton vs L-BFGS-B, same rounds", inst1, f"{fmt_ratio(s1['speed'])} faster", "", "")
    add(2, "Newton ms/round (mean; last decile)", label(p2["spec"]), f"{s2['ms']:.1f}; {s2['tail_ms']:.1f}", "", "")
    add(2, "rounds converged", label(p2["spec"]), f"{s2['converged']}/{s2['rounds']}", "all", short(s2["verdict"]))
    inst3 = label(p3["spec"])
    add(3, f"ms/round, first decile → last decile ({p3['run']['rounds']:,} rounds, batch {LONG_BATCH})", inst3,
        f"{s3['first']:.2f} → {s3['last']:.2f} ({s3['ratio']:.2f}x)", f"flat ≤ {FLAT_TARGET}x", s3["shape"])
    add(3, "run() s", inst3, f"{s3['run_s']:.1f}", "", "")
    if torch_skipped:
        add(4, "Adam / Newton, time to tol", "—", "skipped (no torch)", f"≥ {SPEEDUP_TARGET:.0f}x", "")
    for v in verdicts:
        add(4, "Adam / Newton time to tol (full update; L-BFGS-B)", v["name"],
            f"{v['ratio']:.1f}x ({v['full']:.1f}x; {v['lbfgsb']:.1f}x)", f"≥ {SPEEDUP_TARGET:.0f}x", v["verdict"])
    add(5, "HybridDPO max abs(Δregret)/regret(π_ref)", "small trees", f"{s5['HybridDPO']:.1e}",
        f"≤ {AGREEMENT_TARGET:g}", s5["verdict"])
    add(5, "XPO max abs(Δregret)/regret(π_ref)", "small trees", f"{s5['XPO']:.1e}", "may differ (non-convex)", "")
    for r in rows6:
        lb = r["lbfgsb"]
        value = f"Newton {fmt_ms(r['newton']['ms'] / 1e3)}; L-BFGS-B " + (
            f"{fmt_ms(lb['ms'] / 1e3)} ({lb['rounds']} rounds)" if lb else "not run")
        if lb:
            value += f", {lb['converged']}/{lb['rounds']} converged; speedup {fmt_ratio(lb['ms'] / r['newton_same']['ms'])}"
        add(6, "ms/round", label(r["spec"]), value, "", "")
    return "\n".join(lines)


# --------------------------------------------------------------------------- main
def main(argv=None):
    parser = argparse.ArgumentParser(
        description=(
            "Time the exact per-round update (xpo_sim ImplicitRewardClass) at scale, Newton solver "
            "against the reference L-BFGS-B: (1) a round of XPO on token_tree(8,5) in solve_soft "
            "calls (target <= 100); (2) 100 rounds on token_tree(8,6), every round converged; (3) "
            "10^4 rounds on token_tree(8,4), per-round cost over the run; (4) the exact update against "
            "torch autograd + projected Adam (target >= 20x); (5) regret curves equal to the reference "
            "solver's (HybridDPO, <= 1e-6 of regret(pi_ref)); (6) ms per round against responses, "
            "figure update_scaling.png. Prints markdown tables and a summary table."
        ),
        epilog="BLAS threads: run() limits BLAS to one thread; part 4 applies the same limit "
               "to the exact updates it times outside run(). Part 4 needs torch; without it part 4 is skipped.",
    )
    parser.add_argument("--quick", action="store_true",
                        help="smoke test of the same code paths on tiny sizes (~20 s): vocab-4 trees, a few "
                             f"rounds, {QUICK_LONG_ROUNDS} rounds in part 3, 80 Adam steps per rate; the targets "
                             "that need the full sizes are printed as not judged")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the instances and of the runs (default 0)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="scale of the best-of repeats in part 4 (default 2; quick: 1); at least 1")
    parser.add_argument("--long-rounds", type=int, default=None,
                        help=f"rounds of part 3's long run (default {LONG_ROUNDS}; quick: {QUICK_LONG_ROUNDS}); "
                             "at least 10")
    parser.add_argument("--adam-steps", type=int, default=None,
                        help="Adam step cap per learning rate in part 4 (default 5000; quick: 80)")
    parser.add_argument("--adam-seconds", type=float, default=None,
                        help="Adam time cap per learning rate in part 4, in seconds (default 5; "
                             "quick: 2, so that on a loaded machine the step cap still binds)")
    parser.add_argument("--figures", default=None,
                        help="folder for update_scaling.png (default figures/; with --quick the folder "
                             "of --out, so that a smoke run leaves the committed figure alone)")
    parser.add_argument("--out", default=None,
                        help="path stem of the summary table, written as OUT.md (default "
                             "results/bench_update; quick: results/bench_update_quick)")
    args = parser.parse_args(argv)
    quick = args.quick
    if args.repeats is None:
        args.repeats = 1 if quick else 2
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    if args.long_rounds is None:
        args.long_rounds = QUICK_LONG_ROUNDS if quick else LONG_ROUNDS
    if args.long_rounds < 10:
        parser.error("--long-rounds must be >= 10")
    try:  # a length whose rows cannot fit, before minutes of the other parts
        checks.rounds_fit("--long-rounds", args.long_rounds)
    except ValueError as err:
        parser.error(str(err))
    if args.adam_steps is None:
        args.adam_steps = 80 if quick else 5_000
    if args.adam_seconds is None:
        args.adam_seconds = 2.0 if quick else 5.0
    if args.adam_steps < 1:
        parser.error("--adam-steps must be >= 1")
    if not args.adam_seconds > 0:
        parser.error("--adam-seconds must be > 0")
    if args.seed < 0:
        parser.error(f"--seed must be >= 0 (numpy and torch seeds are non-negative), got {args.seed}")
    if args.out is None:
        args.out = "results/bench_update_quick" if quick else "results/bench_update"
    if args.out == "":
        parser.error("--out must be a path stem (OUT.md is written), got an empty string")
    out_md = Path(str(args.out) + ".md")
    figures = Path(args.figures) if args.figures is not None else (out_md.parent if quick else Path("figures"))
    # the output paths, before any part runs (a bad one would otherwise fail after minutes of timing)
    from xpo_sim.sweep import check_output_file, check_output_folder

    check_output_file(parser, "--out", out_md)
    figures = check_output_folder(parser, "--figures", args.figures if args.figures is not None else figures)
    check_output_file(parser, "--figures", figures / "update_scaling.png")

    import_torch()
    t_start = time.perf_counter()
    load_start = os.getloadavg()[0]
    warm_up(args.seed)
    log(f"  warm-up done, {time.perf_counter() - t_start:.1f} s")

    p1 = part1(QUICK_SOLVE_TREE if quick else SOLVE_TREE,
               QUICK_SOLVE_NEWTON_ROUNDS if quick else SOLVE_NEWTON_ROUNDS, args.seed)
    p2 = part2(QUICK_BIG_TREE if quick else BIG_TREE, QUICK_BIG_ROUNDS if quick else BIG_ROUNDS, args.seed)
    p3 = part3(QUICK_LONG_TREE if quick else LONG_TREE, args.long_rounds, args.seed)
    states, lrs = [], (QUICK_ADAM_LRS if quick else ADAM_LRS)
    if torch is not None:
        torch.manual_seed(args.seed)
        large_rounds = QUICK_STATE_ROUNDS if quick else STATE_ROUNDS
        for spec, rounds in ((LARGE, large_rounds), (SMALL, SMALL_STATE_ROUNDS)):
            states.append(part4_state(spec, rounds, args.seed, args, lrs))
    rows5 = part5(quick)
    vocab = QUICK_SCALING_VOCAB if quick else SCALING_VOCAB
    reuse = {}
    for p in (p1, p2):
        key = (p["spec"]["vocab"], p["spec"]["horizon"])
        reuse[key] = p["runs"] if "runs" in p else {"newton": p["run"]}
    rows6 = part6(vocab, QUICK_SCALING_HORIZONS if quick else SCALING_HORIZONS,
                  QUICK_SCALING_NEWTON_ROUNDS if quick else SCALING_NEWTON_ROUNDS,
                  QUICK_SCALING_LBFGSB_ROUNDS if quick else SCALING_LBFGSB_ROUNDS, args.seed, reuse)
    log(f"  parts done, elapsed {time.perf_counter() - t_start:.1f} s")

    blas = {k: os.environ.get(k, "unset") for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")}
    import scipy

    print(f"\nxpo_sim {xpo_sim.__version__}, numpy {np.__version__}, scipy {scipy.__version__}, "
          f"torch {torch.__version__ if torch is not None else 'not installed'}"
          f"{f' ({torch.get_num_threads()} threads)' if torch is not None else ''}; "
          f"beta={BETA}, seed={args.seed}{', --quick' if quick else ''}; "
          f"{os.cpu_count()} CPUs, {', '.join(f'{k}={v}' for k, v in blas.items())}; "
          f"1-min load average {load_start:.2f} at start, {os.getloadavg()[0]:.2f} at end "
          f"(the run itself adds about 1)")
    s1 = print_part1(p1, quick)
    s2 = print_part2(p2, quick)
    s3 = print_part3(p3, quick)
    verdicts = []
    if torch is None:
        print("\n## 4. Exact update vs torch autograd + Adam\n\n"
              f"skipped: torch is not importable ({TORCH_ERROR}); pip install torch, CPU build")
    else:
        verdicts = print_part4(states, lrs, args)
    s5 = print_part5(rows5)
    print_part6(rows6)
    figure = figures / "update_scaling.png"
    plot_scaling(rows6, p3, figure, quick)
    total = time.perf_counter() - t_start
    print(f"\nfigure: {figure}")
    summary = summary_table(p1, s1, p2, s2, p3, s3, verdicts, s5, rows6, torch is None)
    header = (f"bench_update{' --quick' if quick else ''}: seed {args.seed}, {os.cpu_count()} CPUs, "
              f"load average {load_start:.2f} at start; total run time {total:.0f} s")
    print(f"\n## Summary\n\n{header}\n\n{summary}")
    out_md.parent.mkdir(parents=True, exist_ok=True)
    out_md.write_text(f"# bench_update summary\n\n{header}\n\n{summary}\n")
    print(f"\nsummary table: {out_md}")
    print(f"\ntotal run time {total:.1f} s")


if __name__ == "__main__":
    main()
