r"""Benchmark: the exact per-round update of XPO (implicit-reward class, L-BFGS-B) and the
round loop around it, against the torch autograd + Adam baseline a researcher would write.

Setting
-------
XPO (``xpo_sim.XPO()``: α = 0.01 constant, ỹ ∼ π_ref, one pair per round), β = 0.1,
``policy="implicit"``: π_θ is soft-optimal for a box-bounded reward table r̂_θ, and each
round solves (DESIGN.md §2)

    min_θ  L(θ) = Σ_distinct pairs n·ℓ_DPO(π_θ)  +  α Σ_distinct explored n·log π_θ(ỹ)

over the aggregated data (``xpo_sim.PreferenceData``) with L-BFGS-B under the box,
warm-started at the previous iterate (``ImplicitRewardClass.update``; value and gradient
from the numba kernel ``implicit_reward_objective``). ``run`` is called with
``record=[rounds]``, so only rounds 0 and ``rounds`` build a result row (the exact
``evaluate`` of every iterate, needed for ``best_regret``, still runs every round).

What is measured
----------------
1. **Time per exact round** at 10^2, 10^3, 10^4 rounds (``--max-rounds`` caps) on a small
   instance, ``token_tree(vocab=4, horizon=2)`` (16 responses, 16 parameters, at most 256
   ordered distinct pairs), and on the 256-response ``token_tree(vocab=4, horizon=4)``.
   ``ImplicitRewardClass`` is replaced, for these runs only, by a subclass defined here
   that stamps ``time.perf_counter()`` on entry to each ``update`` and counts objective
   evaluations (the registry entry ``xpo_sim.policies.POLICY_CLASSES["implicit"]``, from
   which ``run`` builds ``policy="implicit"``, is patched and restored). A *round* is the
   interval between two consecutive ``update`` entries (the update, the exact evaluation of
   the new iterate, the next round's sampling, labelling and bookkeeping). Reported:
   ``run()`` seconds, mean ms per round over all rounds (``run()`` time / rounds, setup
   included) and over the last decile, the same for ``update`` alone, objective evaluations
   per update, and the data's size at the end: total pairs, distinct ordered pairs,
   distinct trajectories (PreferenceData counts). A per-decile table of the longest run
   shows whether the per-round cost stays flat once the distinct pairs saturate (the update
   costs O(distinct pairs + S·A), not O(rounds)). **Target**: last-decile ms/round at the
   longest run within 1.5× of the last decile at 10^3 rounds on the small instance (not
   judged by ``--quick``, which runs 10^2 rounds on each instance).

2. **Exact update vs torch baseline**, on the data state after 1000 rounds of XPO on the
   256-response tree (``--quick``: 100 rounds) and after 100 rounds on the 16-response
   tree (by 1000 rounds that small instance's warm start already meets every tolerance,
   which would time a single evaluation). Both start from the same warm start (the iterate
   the run's last update was warm-started at) and minimize the same L over the same box on
   the same aggregated data. (Runs are deterministic given the seed: where part 1 made a
   run of that length on that tree, its data state is used instead of a second run.)
   The baseline computes log π_θ(τ) of every distinct trajectory in torch, float64, in one
   of two ways, and the faster one is used for Adam:

   * *layer*: a per-layer soft Bellman backward pass over the tree
     (Q = r̂ + V[next], V = β·torch.logsumexp(log π_ref + Q/β), log π = log π_ref + Q/β − V/β),
     then log π(τ) = Σ_h log π(a_h|s_h) gathered along each trajectory;
   * *leaves* (terminal rewards on a tree): π(y|x) ∝ π_ref(y|x)·exp(r̂(x,y)/β) over every
     response y of the prompt, one torch.logsumexp per prompt;

   then L = Σ n·``xpo_sim.losses.dpo_loss`` + Σ n·``xpo_sim.losses.xpo_bonus`` on those
   torch tensors, θ ← Adam step, θ ← clamp(θ, lo, hi) (projection onto the box). Before
   timing, the script asserts that both torch objectives equal
   ``ImplicitRewardClass.objective`` to 1e-10 relative (and their autograd gradients the
   kernel's gradient to 1e-8 of its scale), at the warm start and at the optimum.

   *Tolerance.* f* = L at the result of ``ImplicitRewardClass.update`` (L-BFGS-B, its own
   stopping rule: projected-gradient tolerance ``gtol`` = 1e-9, ftol = 1e-15). The
   projected gradient is pg = max_i |clip(θ_i − ∂L/∂θ_i, lo, hi) − θ_i| (L-BFGS-B's own
   measure). A method reaches a criterion at its first objective evaluation that meets it:

   * *primary*: L(θ) − f* ≤ 1e-6·|f*|, or pg ≤ gtol;
   * *stationarity*: pg ≤ 1e-3 and pg ≤ 1e-6 (how close to a KKT point the iterate is);
   * *same solution*: max_i |θ_i − θ*_i| ≤ 1e-4, θ* the L-BFGS-B result (the objective is
     not convex, see below, so reaching f* does not imply reaching θ*).

   The exact side's time to tolerance is measured inside ``update`` by a subclass whose
   ``objective`` stamps the time and checks the criteria (the check, a few µs, is counted);
   its full ``update`` call (plain class, no probe) is reported too. Adam runs with each
   learning rate of a grid (full: 0.3, 0.1, 0.03, 0.01, 0.003; quick: 0.1, 0.03, 0.01), up
   to ``--adam-steps`` steps or ``--adam-seconds`` per rate; every (criterion, rate) met
   within 1000 steps (quick: 50) is rerun up to that step ``--repeats`` times and the best
   time kept; each criterion reports the best rate. Setup (tensors built from the
   aggregated arrays) is excluded on both sides.
   **Target**: exact update ≥ 20× faster to the primary tolerance (ratio = Adam time to
   tolerance / exact time to tolerance; the ratio against the exact side's full ``update``
   call is printed as well).

   With α > 0 the objective is not convex (the bonus adds −α·n·V̂(s₀)/β, concave in r̂), so
   Adam may end in a *different* local minimum, even a lower one; the table shows
   L_Adam − f* at Adam's best point.

3. **1,000 rounds of exact XPO** on the 256-response tree: total ``run()`` seconds (plain
   class, best of 3), and from an instrumented run the seconds spent in ``update``.
   **Target**: under 10 s. ``--quick`` times 50 rounds once and does not judge the target.

Timing: numba is warmed (compiled or loaded from its cache) on a tiny tree first, torch
by the correctness checks and an untimed first call. The machine may be shared and
noisy: every timing is the best of a few repeats where that is cheap (``--repeats``
scales them), and the load average is printed.

BLAS threads. scipy's L-BFGS-B (C since scipy 1.15) calls BLAS/LAPACK on tiny vectors; with
OpenBLAS's default thread pool on a loaded 2-core machine whole runs were 10–50× slower
(``setulb`` 0.24 ms instead of 6 µs a call). ``xpo_sim.run`` therefore limits BLAS to one
thread (``threadpoolctl.threadpool_limits(1, "blas")``) for the whole loop. Part 2 calls
``ImplicitRewardClass.update`` outside ``run``, so it applies the same limit to the exact
side's timings (the torch baseline keeps torch's own threads). The header prints
``OPENBLAS_NUM_THREADS`` and torch's thread count.

Usage::

    python benchmarks/bench_update.py                 # full run (a few minutes)
    python benchmarks/bench_update.py --quick         # smoke test, same code paths (~12 s of CPU)
    python benchmarks/bench_update.py --max-rounds 1000 --seed 3

Part 2 needs torch (``pip install torch``, CPU build); without it, part 2 prints that it
was skipped and the rest runs.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
import time

import numpy as np
from threadpoolctl import threadpool_limits

import xpo_sim
from xpo_sim import losses
from xpo_sim.policies import POLICY_CLASSES, ImplicitRewardClass

torch = None     # imported by main() after the arguments are parsed (--help stays quick)
TORCH_ERROR = ""  # why torch is not importable: part 2 is then skipped

BETA = 0.1
ALPHA = 0.01
SMALL = dict(vocab=4, horizon=2)   # 16 responses
LARGE = dict(vocab=4, horizon=4)   # 256 responses
ROUND_GRID = (100, 1_000, 10_000)
STATE_ROUNDS = 1_000        # part 2, 256-response tree
QUICK_STATE_ROUNDS = 100
SMALL_STATE_ROUNDS = 100    # part 2, 16-response tree (by 1,000 rounds its warm start is already optimal)
PART3_ROUNDS = 1_000
QUICK_PART3_ROUNDS = 50     # --quick: part 3's run length (the target is not judged)
QUICK_MAX_ROUNDS = 100      # --quick: part 1's grid and the cap on part 2's data states
PART3_TARGET_S = 10.0
FLAT_TARGET = 1.5
SPEEDUP_TARGET = 20.0
REL_GAP = 1e-6
CHECK_RTOL = 1e-10
CRITERIA = ("primary", "pg<=1e-3", "pg<=1e-6", "‖θ−θ*‖∞<=1e-4")
ADAM_LRS = (0.3, 0.1, 0.03, 0.01, 0.003)
QUICK_ADAM_LRS = (0.1, 0.03, 0.01)


def log(message):
    print(message, file=sys.stderr, flush=True)


def instance(spec, seed):
    return xpo_sim.envs.token_tree(spec["vocab"], spec["horizon"], seed=seed)


def label(spec):
    return f"token_tree({spec['vocab']},{spec['horizon']}) [{spec['vocab'] ** spec['horizon']} responses]"


def import_torch():
    """Import torch into this module's ``torch``, or record why it is not importable."""
    global torch, TORCH_ERROR
    try:
        import torch as module
    except ImportError as error:
        TORCH_ERROR = str(error)
    else:
        torch = module


# --------------------------------------------------------------------- instrumentation
class TimedImplicit(ImplicitRewardClass):
    """ImplicitRewardClass that stamps each ``update`` and counts objective evaluations."""

    created: list["TimedImplicit"] = []

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.starts, self.durations, self.nfev, self.distinct_pairs = [], [], [], []
        self._nfev = 0
        self.last = None
        TimedImplicit.created.append(self)

    def objective(self, params, data, alpha, loss="dpo"):
        self._nfev += 1
        return super().objective(params, data, alpha, loss)

    def update(self, params, data, alpha, loss="dpo"):
        self._nfev = 0
        t0 = time.perf_counter()
        out = super().update(params, data, alpha, loss)
        self.durations.append(time.perf_counter() - t0)
        self.starts.append(t0)
        self.nfev.append(self._nfev)
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


def run_xpo(mdp, rounds, seed):
    return xpo_sim.run(mdp, xpo_sim.XPO(alpha=ALPHA), BETA, rounds, seed=seed, record=[rounds])


def run_instrumented(mdp, rounds, seed):
    """One instrumented run: (seconds, TimedImplicit instance, result frame)."""
    with instrumented() as created:
        t0 = time.perf_counter()
        frame = run_xpo(mdp, rounds, seed)
        seconds = time.perf_counter() - t0
    return seconds, created[-1], frame


def warm_up(seed):
    tiny = xpo_sim.envs.token_tree(2, 2, seed=seed)
    run_xpo(tiny, 3, seed)
    with instrumented():
        run_xpo(tiny, 3, seed)


# --------------------------------------------------------------------------- part 1
def round_stats(seconds, pc, rounds):
    starts = np.asarray(pc.starts)
    gaps = np.diff(starts)              # gaps[i]: from update i+1's start to update i+2's
    upd = np.asarray(pc.durations)
    nfev = np.asarray(pc.nfev)
    tail = max(1, rounds // 10)
    data = pc.last[1]
    return dict(
        rounds=rounds, run_s=seconds, ms_all=seconds / rounds * 1e3,
        ms_tail=gaps[-(tail - 1):].mean() * 1e3 if tail > 1 else gaps[-1:].mean() * 1e3,
        upd_all=upd.mean() * 1e3, upd_tail=upd[-tail:].mean() * 1e3,
        nfev_tail=nfev[-tail:].mean(), pairs=data.n_pairs,
        distinct_pairs=pc.distinct_pairs[-1], distinct_paths=data.n_distinct,
        n_params=pc.n_params, pc=pc,
    )


def part1_repeats(spec, rounds, repeats):
    """Best-of count: more repeats for short runs, one for the long 256-response run."""
    base = 3 if rounds <= 100 else 2 if rounds <= 1_000 else 1
    if spec is LARGE and rounds >= 1_000:
        base = 1
    return max(1, base * repeats // 2)


def part1(spec, grid, seed, repeats):
    mdp = instance(spec, seed)
    rows = []
    for rounds in grid:
        reps = part1_repeats(spec, rounds, repeats)
        best = None
        for _ in range(reps):
            seconds, pc, _ = run_instrumented(mdp, rounds, seed)
            if best is None or seconds < best[0]:
                best = (seconds, pc)
        rows.append(round_stats(best[0], best[1], rounds))
        log(f"  part 1: {label(spec)} {rounds} rounds: best of {reps}: {best[0]:.2f} s")
    return rows


def print_part1(results):
    print("\n## 1. Time per exact round of XPO (policy='implicit', L-BFGS-B update)\n")
    print("| instance | params | rounds | run() s | ms/round (all) | ms/round (last decile) "
          "| update ms (all) | update ms (last decile) | objective evals/update (last decile) "
          "| pairs | distinct pairs | distinct trajectories |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, rows in results.items():
        for r in rows:
            print(f"| {name} | {r['n_params']} | {r['rounds']:,} | {r['run_s']:.2f} | {r['ms_all']:.3f} "
                  f"| {r['ms_tail']:.3f} | {r['upd_all']:.3f} | {r['upd_tail']:.3f} "
                  f"| {r['nfev_tail']:.1f} | {r['pairs']:,} | {r['distinct_pairs']:,} "
                  f"| {r['distinct_paths']:,} |")
    for name, rows in results.items():
        r = rows[-1]
        pc, rounds = r["pc"], r["rounds"]
        if rounds < 100:
            continue
        print(f"\nPer decile, {name}, {rounds:,} rounds (distinct pairs at the end of the decile):\n")
        print("| decile | rounds | distinct pairs | ms/round | update ms | objective evals/update |")
        print("|---:|---|---:|---:|---:|---:|")
        starts = np.asarray(pc.starts)
        gaps = np.diff(starts)
        upd, nfev = np.asarray(pc.durations), np.asarray(pc.nfev)
        edges = np.linspace(0, rounds, 11).astype(int)
        for d in range(10):
            lo, hi = edges[d], edges[d + 1]
            g = gaps[lo:min(hi, rounds - 1)]
            print(f"| {d + 1} | {lo + 1}–{hi} | {pc.distinct_pairs[hi - 1]:,} | {g.mean() * 1e3:.3f} "
                  f"| {upd[lo:hi].mean() * 1e3:.3f} | {nfev[lo:hi].mean():.1f} |")
    small = results.get(label(SMALL))
    if small:
        by_rounds = {r["rounds"]: r for r in small}
        longest = small[-1]
        if 1000 in by_rounds and longest["rounds"] > 1000:
            ratio = longest["ms_tail"] / by_rounds[1000]["ms_tail"]
            ok = ratio <= FLAT_TARGET
            print(f"\nflat once distinct pairs saturate ({label(SMALL)}): last-decile ms/round at "
                  f"{longest['rounds']:,} rounds / at 1,000 rounds = {ratio:.2f} "
                  f"(target <= {FLAT_TARGET}): {'MET' if ok else 'NOT MET'}")
        else:
            print("\nflat once distinct pairs saturate: not judged (needs a run longer than 1,000 rounds)")


# --------------------------------------------------------------------------- part 2
class ProbeImplicit(ImplicitRewardClass):
    """ImplicitRewardClass whose ``objective`` records when each criterion is first met."""

    def arm(self, f_star, x_star, rel_gap):
        self.f_star, self.x_star, self.rel_gap = f_star, x_star, rel_gap
        self.hits = {}
        self.t0 = time.perf_counter()
        self.evals = 0

    def objective(self, params, data, alpha, loss="dpo"):
        value, grad = super().objective(params, data, alpha, loss)
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
    """``dist`` = max_i |θ_i − θ*_i| to the L-BFGS-B solution θ*."""
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


def part2_state(spec, rounds, seed, args, lrs, pc=None):
    """``pc``: the instrumented class of a part-1 run of ``rounds`` rounds on the same
    instance and seed, whose data state is the same (runs are deterministic given the seed);
    without it, the run is made here."""
    mdp = instance(spec, seed)
    if pc is None:
        _, pc, _ = run_instrumented(mdp, rounds, seed)
    p0, data, alpha = pc.last
    plain = ImplicitRewardClass(mdp, BETA, box=pc.box, support=pc.support, gtol=pc.gtol,
                                max_iter=pc.max_iter)
    probe = ProbeImplicit(mdp, BETA, box=pc.box, support=pc.support, gtol=pc.gtol,
                          max_iter=pc.max_iter)
    x_star = plain.update(p0, data, alpha)
    f_star, g_star = plain.objective(x_star, data, alpha)
    f0, _ = plain.objective(p0, data, alpha)
    lo, hi = plain.box
    pg_star = float(np.max(np.abs(np.clip(x_star - g_star, lo, hi) - x_star)))
    arrays = data.arrays()
    info = dict(name=f"{label(spec)} after {rounds:,} rounds", params=plain.n_params,
                pairs=data.n_pairs, distinct_pairs=int(arrays["pair_count"].size),
                paths=data.n_distinct, explored=int(arrays["explore_path"].size), alpha=alpha,
                f0=f0, f_star=f_star, pg_star=pg_star, box=plain.box)

    # correctness of the baseline against the kernel
    forms = {}
    for form in ("layer", "leaves"):
        try:
            obj = TorchObjective(mdp, plain, data, alpha, form)
        except ValueError:
            continue
        for where, x in (("warm start", p0), ("optimum", x_star)):
            f_k, g_k = plain.objective(x, data, alpha)
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
    t_kernel = best_time(lambda: plain.objective(p0, data, alpha), reps)
    t_forms = {form: best_time(lambda o=obj: o.value_and_grad(p0), max(5, reps // 4))
               for form, obj in forms.items()}
    form = min(t_forms, key=t_forms.get)
    objective = forms[form]

    # exact update: full call, then time to each tolerance (probe); BLAS limited to one
    # thread as inside xpo_sim.run
    upd_reps = args.repeats * 5
    exact_hits = {}
    evals = 0
    with threadpool_limits(limits=1, user_api="blas"):
        t_update = best_time(lambda: plain.update(p0, data, alpha), upd_reps)
        for _ in range(upd_reps):
            probe.arm(f_star, x_star, REL_GAP)
            probe.update(p0, data, alpha)
            evals = probe.evals
            for name, (sec, k) in probe.hits.items():
                if name not in exact_hits or sec < exact_hits[name][0]:
                    exact_hits[name] = (sec, k)

    # Adam over the learning-rate grid
    runs = {}
    for lr in lrs:
        runs[lr] = adam(objective, p0, plain.box, lr, f_star, x_star, plain.gtol, args.adam_steps,
                        args.adam_seconds)
        log(f"  part 2: {info['name']}: Adam lr={lr}: {runs[lr]['steps']} steps, "
            f"{runs[lr]['seconds']:.2f} s, reached {sorted(runs[lr]['hits'])}")
    # best of repeats: rerun each (criterion, lr) that got there in few steps, up to that step
    rerun_cap = 50 if args.quick else 1_000
    adam_best = {}
    for name in CRITERIA:
        for lr, r in runs.items():
            if name not in r["hits"]:
                continue
            seconds, step = r["hits"][name]
            if step <= rerun_cap:
                for _ in range(args.repeats):
                    again = adam(objective, p0, plain.box, lr, f_star, x_star, plain.gtol, step + 1,
                                 args.adam_seconds, stop_after=name)
                    if name in again["hits"]:
                        seconds = min(seconds, again["hits"][name][0])
            if name not in adam_best or seconds < adam_best[name]["seconds"]:
                adam_best[name] = dict(seconds=seconds, lr=lr, step=step)
    info.update(t_kernel=t_kernel, t_forms=t_forms, form=form, t_update=t_update,
                exact_hits=exact_hits, exact_evals=evals, adam_best=adam_best, runs=runs)
    return info


def print_part2(states, lrs, args):
    print("\n## 2. Exact update (numba + L-BFGS-B) vs torch autograd + projected Adam\n")
    for s in states:
        print(f"- {s['name']}: {s['params']} params, box {s['box']}, {s['pairs']:,} pairs, "
              f"{s['distinct_pairs']:,} distinct pairs, {s['paths']:,} distinct trajectories, "
              f"{s['explored']} distinct explored, α = {s['alpha']}; L(warm start) = {s['f0']:.10g}, "
              f"f* = {s['f_star']:.10g}, pg at the L-BFGS-B result = {s['pg_star']:.1e}; "
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
    print("| data state | criterion | exact: time to tol ms (evals) | exact: full update() ms "
          "| Adam: time to tol ms | Adam lr, step | ratio Adam / exact (time to tol) "
          "| ratio Adam / exact full update() |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    verdicts = []
    for s in states:
        for name in CRITERIA:
            ex = s["exact_hits"].get(name)
            ad = s["adam_best"].get(name)
            ex_txt = f"{ex[0] * 1e3:.3f} ({ex[1]})" if ex else f"not reached ({s['exact_evals']} evals)"
            full = s["t_update"]
            if ad:
                ad_txt = f"{ad['seconds'] * 1e3:.2f}"
                lr_txt = f"{ad['lr']:g}, {ad['step']}"
                r1 = f"{ad['seconds'] / ex[0]:.1f}x" if ex else "n/a"
                r2 = f"{ad['seconds'] / full:.1f}x"
            else:
                longest = max(r["seconds"] for r in s["runs"].values())
                ad_txt = f"not reached (> {longest * 1e3:.0f})"
                lr_txt = "—"
                r1 = f"> {longest / ex[0]:.0f}x" if ex else "n/a"
                r2 = f"> {longest / full:.0f}x"
            print(f"| {s['name']} | {name} | {ex_txt} | {full * 1e3:.3f} | {ad_txt} | {lr_txt} | {r1} | {r2} |")
            if name == "primary":
                if ad and ex:
                    verdicts.append((s["name"], ad["seconds"] / ex[0], ad["seconds"] / full, True))
                elif ex:
                    longest = max(r["seconds"] for r in s["runs"].values())
                    verdicts.append((s["name"], longest / ex[0], longest / full, False))
    print("\nAdam per learning rate (steps run, L at its best point − f*, smallest pg seen; a "
          "negative L − f* means Adam went to a different, lower local minimum: with α > 0 "
          "the objective is not convex):\n")
    print("| data state | lr | steps | seconds | best L − f* | min pg | criteria reached |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for s in states:
        for lr, r in s["runs"].items():
            print(f"| {s['name']} | {lr:g} | {r['steps']} | {r['seconds']:.2f} | {r['best_f'] - s['f_star']:.3e} "
                  f"| {r['min_pg']:.1e} | {', '.join(n for n in CRITERIA if n in r['hits']) or 'none'} |")
    for name, ratio, ratio_full, reached in verdicts:
        bound = "" if reached else ">= "
        print(f"\ntarget exact >= {SPEEDUP_TARGET:.0f}x faster to the primary tolerance, {name}: "
              f"{'MET' if ratio >= SPEEDUP_TARGET else 'NOT MET'} (time to tol {bound}{ratio:.1f}x; "
              f"against the full update() call {bound}{ratio_full:.1f}x)")


# --------------------------------------------------------------------------- part 3
def part3(seed, repeats, rounds=PART3_ROUNDS):
    mdp = instance(LARGE, seed)
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        run_xpo(mdp, rounds, seed)
        best = min(best, time.perf_counter() - t0)
    seconds, pc, frame = run_instrumented(mdp, rounds, seed)
    return dict(rounds=rounds, best=best, repeats=repeats, instrumented=seconds,
                update=float(np.sum(pc.durations)), nfev=int(np.sum(pc.nfev)), distinct_pairs=pc.distinct_pairs[-1],
                paths=pc.last[1].n_distinct, regret=float(frame["regret"].iloc[-1]))


def print_part3(r):
    print(f"\n## 3. {r['rounds']:,} rounds of exact XPO on {label(LARGE)}\n")
    print(f"| rounds | run() s (best of {r['repeats']}) | instrumented run s | of which update() s | objective evals "
          "| distinct pairs | distinct trajectories | regret at the end |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    print(f"| {r['rounds']:,} | {r['best']:.2f} | {r['instrumented']:.2f} | {r['update']:.2f} "
          f"| {r['nfev']:,} | {r['distinct_pairs']:,} | {r['paths']:,} | {r['regret']:.4f} |")
    if r["rounds"] != PART3_ROUNDS:
        print(f"\ntarget {PART3_ROUNDS:,} rounds in < {PART3_TARGET_S:.0f} s: not judged "
              f"({r['rounds']:,} rounds run, --quick)")
        return
    print(f"\ntarget {PART3_ROUNDS:,} rounds in < {PART3_TARGET_S:.0f} s: "
          f"{'MET' if r['best'] < PART3_TARGET_S else 'NOT MET'} ({r['best']:.2f} s)")


# --------------------------------------------------------------------------- main
def main(argv=None):
    parser = argparse.ArgumentParser(
        description=(
            "Time the exact per-round update of XPO (xpo_sim ImplicitRewardClass: numba "
            "objective + scipy L-BFGS-B under a box, warm-started) and the round loop: "
            "(1) ms per round at 1e2, 1e3, 1e4 rounds on 16- and 256-response token trees, "
            "flat once distinct pairs saturate; (2) the exact update against torch autograd + "
            "projected Adam on the same objective, data and warm start, time to the same "
            "tolerance (target >= 20x); (3) 1,000 rounds on the 256-response tree (target "
            "< 10 s). Prints markdown tables."
        ),
        epilog="BLAS threads: run() limits BLAS to one thread; part 2 applies the same limit "
               "to the exact update it times outside run() (see the module docstring). Part 2 needs torch; without it part 2 is skipped.",
    )
    parser.add_argument("--quick", action="store_true",
                        help="smoke test of the same code paths on tiny sizes (~12 s of CPU): part 1 "
                             f"runs {QUICK_MAX_ROUNDS} rounds on each tree; part 2 uses the states "
                             f"after {QUICK_STATE_ROUNDS} rounds, 3 learning rates and fewer Adam "
                             f"steps; part 3 times {QUICK_PART3_ROUNDS} rounds once; the targets "
                             "that need the full sizes are printed as not judged")
    parser.add_argument("--max-rounds", type=int, default=None,
                        help="largest run length in part 1 (default 10000; quick: "
                             f"{QUICK_MAX_ROUNDS}) and cap on the rounds of part 2's data states "
                             f"(default {STATE_ROUNDS} and {SMALL_STATE_ROUNDS}); at least 10")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the instances and of the runs (default 0)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="scale of the best-of repeats (default 2; quick: 1); at least 1")
    parser.add_argument("--adam-steps", type=int, default=None,
                        help="Adam step cap per learning rate in part 2 (default 5000; quick: 80)")
    parser.add_argument("--adam-seconds", type=float, default=None,
                        help="Adam time cap per learning rate in part 2, in seconds (default 5; "
                             "quick: 2, so that on a loaded machine the step cap still binds)")
    args = parser.parse_args(argv)
    quick = args.quick
    if args.max_rounds is None:
        args.max_rounds = QUICK_MAX_ROUNDS if quick else 10_000
    if args.max_rounds < 10:
        parser.error("--max-rounds must be >= 10")
    if args.repeats is None:
        args.repeats = 1 if quick else 2
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    if args.adam_steps is None:
        args.adam_steps = 80 if quick else 5_000
    if args.adam_seconds is None:
        args.adam_seconds = 2.0 if quick else 5.0
    if args.adam_steps < 1:
        parser.error("--adam-steps must be >= 1")
    if not args.adam_seconds > 0:
        parser.error("--adam-seconds must be > 0")

    import_torch()
    t_start = time.perf_counter()
    load_start = os.getloadavg()[0]
    warm_up(args.seed)

    grid = [r for r in ROUND_GRID if r <= args.max_rounds] or [args.max_rounds]
    grid_large = grid[:1] if quick else grid
    res1 = {label(SMALL): part1(SMALL, grid, args.seed, args.repeats),
            label(LARGE): part1(LARGE, grid_large, args.seed, args.repeats)}

    states, lrs = [], (QUICK_ADAM_LRS if quick else ADAM_LRS)
    if torch is not None:
        torch.manual_seed(args.seed)
        large_rounds = min(QUICK_STATE_ROUNDS if quick else STATE_ROUNDS, args.max_rounds)
        done = {(name, r["rounds"]): r["pc"] for name, rows in res1.items() for r in rows}
        for spec, rounds in ((LARGE, large_rounds), (SMALL, min(SMALL_STATE_ROUNDS, args.max_rounds))):
            states.append(part2_state(spec, rounds, args.seed, args, lrs, pc=done.get((label(spec), rounds))))
    res3 = part3(args.seed, 1 if quick else 3, QUICK_PART3_ROUNDS if quick else PART3_ROUNDS)
    log(f"  part 3 done, elapsed {time.perf_counter() - t_start:.1f} s")

    blas = {k: os.environ.get(k, "unset") for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")}
    import scipy

    print(f"\nxpo_sim {xpo_sim.__version__}, numpy {np.__version__}, scipy {scipy.__version__}, "
          f"torch {torch.__version__ if torch is not None else 'not installed'}"
          f"{f' ({torch.get_num_threads()} threads)' if torch is not None else ''}; "
          f"XPO(alpha={ALPHA}), beta={BETA}, seed={args.seed}, record=[rounds]; "
          f"{os.cpu_count()} CPUs, {', '.join(f'{k}={v}' for k, v in blas.items())}; "
          f"1-min load average {load_start:.2f} at start, {os.getloadavg()[0]:.2f} at end "
          f"(the run itself adds about 1)")
    print_part1(res1)
    if torch is None:
        print("\n## 2. Exact update vs torch autograd + Adam\n\n"
              f"skipped: torch is not importable ({TORCH_ERROR}); pip install torch, CPU build")
    else:
        print_part2(states, lrs, args)
    print_part3(res3)
    print(f"\ntotal run time {time.perf_counter() - t_start:.1f} s")


if __name__ == "__main__":
    main()
