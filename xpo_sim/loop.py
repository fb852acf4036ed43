r"""The one round loop, :func:`run`, for every algorithm and every policy class.

Round t = 1, 2, … (π¹ = π_ref):

1. ``algorithm.collect(ctx)`` draws prompts s₀ ∼ ρ and responses from the samplers of
   :data:`xpo_sim.rounds.SAMPLERS`, labels the pairs with the preference oracle and stores
   them (every algorithm of :mod:`xpo_sim.algorithms` and :mod:`xpo_sim.methods`);
2. the exact tables every response of the round was drawn from (``ctx.drawn_tables()``:
   the same tables the samplers returned) are fed to the concentrability tracker;
3. ``algorithm.update(ctx)`` sets the next iterate: for the standard configs
   πᵗ⁺¹ = argmin_π α_t Σ_{explored ỹ} log π(ỹ) + Σ_{pairs} ℓ(π) in the policy class (an exact
   argmin for the reward classes, ``steps`` optimizer steps for the logits class and the
   transformer);
4. the policy ``algorithm.reported_logp(ctx)`` is scored exactly (:mod:`xpo_sim.recorder`).

The policy class is a name of :data:`xpo_sim.policies.POLICY_CLASSES` or an object: one
implementing :class:`xpo_sim.policies.PolicyClass`, or one that builds such a class for the
run (``as_policy_class(mdp, beta, **options)``, e.g. :class:`xpo_sim.torch.TinyTransformerPolicy`).
Whether it runs with the algorithm is decided by what the algorithm needs
(:meth:`xpo_sim.Algorithm.check_compatible`), never by the class's name; its optional hooks
(:class:`xpo_sim.policies.PolicyHooks`) take their documented defaults. The first iterate
is ``policy_logp(initial_params())``, compared once with π_ref: when the two agree to
1e-12 in every log-probability, π_ref's own table is used (so round 0 is π_ref exactly).
Arguments are validated here, once; nothing inside the rounds validates them again.
"""

from __future__ import annotations

import math
import sys
import time
import warnings
from typing import Iterable

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from xpo_sim import checks
from xpo_sim.algorithms import Algorithm
from xpo_sim.mdp import TokenMDP
from xpo_sim.policies import POLICY_CLASSES, check_policy_class, class_name, hook, make_policy_class
from xpo_sim.preferences import BradleyTerry
from xpo_sim.recorder import RunRecorder, recorded_rounds
from xpo_sim.rounds import RoundContext, get_sampler
from xpo_sim.solvers import ConvergenceWarning
from xpo_sim.trajectories import as_generator

__all__ = ["run", "LARGE_INSTANCE", "SAME_AS_REF_TOL"]

LARGE_INSTANCE = 1_000_000
"""State-action count from which ``progress="auto"`` reports each stage of a run."""

ROUND_BYTES = checks.ROUND_BYTES
"""A lower bound on the memory one round's row and bookkeeping take (rounds that cannot fit are refused)."""

SAME_AS_REF_TOL = 1e-12
"""Largest |log π¹ − log π_ref| on allowed tokens for which the first iterate is π_ref."""


def _check_types(mdp, algorithm) -> None:
    if not isinstance(mdp, TokenMDP):
        raise ValueError(f"mdp must be a TokenMDP (e.g. xpo_sim.envs.token_tree(4, 3)), got {type(mdp).__name__}")
    if not isinstance(algorithm, Algorithm):
        raise ValueError(f"algorithm must be an Algorithm config (e.g. xpo_sim.XPO()), got {algorithm!r}")


def _check_built_for(mdp: TokenMDP, beta: float) -> None:
    """An instance built for a β (two_arm_needle) must be run at that β."""
    built_for = mdp.info.get("beta")
    if built_for is not None and not math.isclose(built_for, beta, rel_tol=1e-12):
        raise ValueError(
            f"this {mdp.info.get('family')} instance was built for beta={built_for}, but the run "
            f"was given beta={beta}; build it with the same beta"
        )


def _build_policy_class(mdp: TokenMDP, beta, policy, options: dict):
    """(policy class, β as a float): β is validated exactly once, by whichever builds the class."""
    if isinstance(policy, str):
        if policy not in POLICY_CLASSES:
            raise ValueError(f"unknown policy class {policy!r}: expected one of {sorted(POLICY_CLASSES)}, an object "
                             f"implementing xpo_sim.policies.PolicyClass, or a xpo_sim.torch.TinyTransformerPolicy")
        policy_class = make_policy_class(mdp, beta, policy, **options)  # the class validates β
        return policy_class, policy_class.beta
    beta = checks.beta(beta)
    builder = None if isinstance(policy, type) else getattr(policy, "as_policy_class", None)
    if builder is not None:
        policy_class = builder(mdp, beta, **options)
        check_policy_class(policy_class)
    else:
        policy_class = make_policy_class(mdp, beta, policy, **options)
    own_beta = getattr(policy_class, "beta", None)
    if own_beta is not None and not math.isclose(own_beta, beta, rel_tol=1e-12):
        raise ValueError(f"the policy object was built for beta={own_beta}, but the run was given beta={beta}")
    own_mdp = getattr(policy_class, "mdp", None)
    if own_mdp is not None and own_mdp is not mdp:
        raise ValueError("the policy object was built for another TokenMDP than the one given to run")
    return policy_class, beta


def _first_table(mdp: TokenMDP, policy_class) -> np.ndarray:
    """The exact table of the first iterate, checked once; π_ref's own table when it is π_ref."""
    try:
        first = mdp.check_policy(policy_class.policy_logp(policy_class.initial_params()))
    except ValueError as err:
        raise ValueError(f"the {class_name(policy_class)!r} class's first iterate policy_logp(initial_params()) "
                         f"is not a policy of this instance: {err}") from None
    allowed = mdp.allowed
    if np.array_equal(first > -np.inf, allowed) and (
            not allowed.any() or float(np.max(np.abs(first[allowed] - mdp.ref_logp[allowed]))) <= SAME_AS_REF_TOL):
        return np.array(mdp.ref_logp)
    return first


class _DrawLogProbs:
    """log μ(τ|s₀) over the tracker's enumerated trajectories of what a round drew from:
    one table, or a uniform mixture (the history), whose running log-sum is extended when
    the mixture grows by new components (so the history costs one table per round)."""

    def __init__(self, tracker):
        self.tracker = tracker
        self._round: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # id(table) → (table, log-probs)
        self._mixture: tuple[tuple, np.ndarray | None] = ((), None)  # (components, Σ exp log-probs, as a log)

    def new_round(self) -> None:
        self._round = {}

    def _single(self, table: np.ndarray) -> np.ndarray:
        hit = self._round.get(id(table))
        if hit is None or hit[0] is not table:
            hit = (table, self.tracker.policy_logp(table))
            self._round[id(table)] = hit
        return hit[1]

    def __call__(self, tables) -> np.ndarray:
        if isinstance(tables, np.ndarray):
            return self._single(tables)
        known, total = self._mixture
        start = len(known) if total is not None and len(tables) >= len(known) and all(
            a is b for a, b in zip(tables, known)) else 0
        if start == 0:
            total = None
        for table in tables[start:]:
            logp = self._single(table)
            total = logp if total is None else np.logaddexp(total, logp)
        self._mixture = (tuple(tables), total)
        return total - math.log(len(tables))


class _Progress:
    """Progress on stderr: a tqdm bar over the steps of a long computation (the rounds of a
    run, the maximizations of :func:`xpo_sim.coverability`), and a line per stage, headed
    ``<caller> [<name>, <size>, <elapsed> s]``; silent unless ``show``."""

    def __init__(self, show: bool, caller: str, name: str, size: str, total: int, initial: int = 0):
        self.caller, self.name, self.size = caller, name, size
        self.start = time.perf_counter()
        self.bar = None  # a tqdm bar while progress is shown
        if show:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=initial, desc=name, leave=False, file=sys.stderr, mininterval=1.0)

    @classmethod
    def of_run(cls, progress, mdp: TokenMDP, algorithm: Algorithm, rounds: int) -> "_Progress":
        """The progress of :func:`run` (``progress``: True, False or "auto" = large instances)."""
        progress = checks.auto_boolean("progress", progress)
        if progress == "auto":
            progress = mdp.n_state_actions >= LARGE_INSTANCE
        return cls(progress, "xpo_sim.run", algorithm.name, f"{mdp.n_state_actions:.3g} state-actions", rounds)

    def stage(self, text: str) -> None:
        if self.bar is not None:
            elapsed = time.perf_counter() - self.start
            self.bar.write(f"{self.caller} [{self.name}, {self.size}, {elapsed:.1f} s]: {text}", file=sys.stderr)

    def advance(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def run(
    mdp: TokenMDP,
    algorithm: Algorithm,
    beta: float,
    rounds: int,
    seed=0,
    *,
    policy="implicit",
    oracle=None,
    record: str | Iterable[int] = "all",
    eval_every: int = 1,
    max_enumerate: int = 100_000,
    progress: bool | str = "auto",
    **policy_options,
) -> pd.DataFrame:
    """Run ``algorithm`` for ``rounds`` rounds on ``mdp`` and return the exact metrics.

    Parameters
    ----------
    seed
        An int, None or a ``numpy.random.Generator`` (prompts, samples, labels).
    policy : "implicit" | "linear" | "logits" | object
        The policy class, by name from :data:`xpo_sim.policies.POLICY_CLASSES` or as an
        object: one implementing :class:`xpo_sim.policies.PolicyClass`, or a
        :class:`xpo_sim.torch.TinyTransformerPolicy` (the instance's π_ref must be its
        reference's: build the instance with :func:`xpo_sim.torch.with_reference`).
        Implicit-reward (one reward parameter per response or state-action) and
        linear-feature reward (θ·φ) classes take the exact per-round argmin; logits and the
        transformer take Adam steps.
    policy_options
        Options of the policy class: ``box``, ``support``, ``l2``, ``solver`` for the reward
        classes; ``steps``, ``lr`` for the logits class; ``steps``, ``lr``, ``minibatch``,
        ``device``, ``precision``, ``reference`` for the transformer.
    oracle
        Preference oracle with ``prefer(r_a, r_b, rng)``; default Bradley–Terry labels.
    record
        "all" rounds, "geometric" (about 60 rows) or a collection of round numbers.
    eval_every
        Only every ``eval_every``-th round of ``record`` becomes a row (and rounds 0 and
        the last). A policy whose exact table is costly (the transformer) is scored on those
        rounds only, so its ``best_regret`` is the best over the rows, and ``avg_regret``
        and ``mixture_regret`` run over the rows' iterates.
    max_enumerate
        ``log_concentrability`` is computed by enumerating trajectories when there are at
        most this many, and is NaN otherwise (0 turns it off).
    progress
        "auto" (default): a bar and a line per stage on stderr for instances of at least
        :data:`LARGE_INSTANCE` state-actions; True: always; False: never.

    Columns: ``algorithm``, ``round``, ``pairs`` (preference queries so far), ``alpha``
    (α_t used for this iterate), ``regret`` = J_β(π*) − J_β(πᵗ), ``best_regret`` (best
    scored iterate so far), ``avg_regret`` = (1/t) Σ_{i=1..t} regret(πⁱ), the average
    regret of the iterates rounds 1…t produced (π_ref's regret in row 0), over every scored
    iterate whatever ``record`` keeps as rows (for a class scored only on the rows' rounds,
    the transformer, the average over those), ``mixture_regret`` = J_β(π*) − J_β(π̂ₜ) for
    the uniform mixture π̂ₜ = unif(π¹…πᵗ) of the same iterates, exact on tree instances
    and NaN on other DAGs (:mod:`xpo_sim.mixture`; ≤ ``avg_regret`` by convexity; the
    policy XPO's Theorem 3.1 bounds), ``reward_regret`` = E_π* r − E_πᵗ r, ``kl_ref`` =
    KL(πᵗ ‖ π_ref), ``opt_mass`` (πᵗ's mass on reward-maximizing responses),
    ``seen_star_mass`` (π*-mass on responses in the data), ``distinct_seen``,
    ``log_concentrability`` (log max_τ π*(τ)/μ̄ₜ(τ); +inf while μ̄ₜ misses a π* response),
    ``iterate_regret`` (the regret of the trained iterate when the algorithm reports
    another policy, as ExPO does), ``converged`` (every exact update since the previous
    row met its tolerance; True for classes that take a fixed number of optimizer steps).
    An update that stops short also raises a :class:`xpo_sim.solvers.ConvergenceWarning`
    (the first at once, a count at the end). ``df.attrs`` holds ``seconds`` and ``policy``.
    """
    _check_types(mdp, algorithm)
    policy_class, beta = _build_policy_class(mdp, beta, policy, policy_options)
    _check_built_for(mdp, beta)
    rounds = algorithm.total_rounds(checks.integer("rounds", rounds, minimum=1))
    checks.rounds_fit("rounds", rounds)
    eval_every = checks.integer("eval_every", eval_every, minimum=1)
    max_enumerate = checks.integer("max_enumerate", max_enumerate, minimum=0)
    for name in algorithm.samplers:  # every declared sampler exists (ValueError naming an unknown one)
        get_sampler(name)
    algorithm.check_compatible(policy_class, mdp)
    recorded = recorded_rounds(record, rounds, eval_every)
    rng = as_generator(seed)
    oracle = BradleyTerry() if oracle is None else oracle
    if isinstance(oracle, type) or not callable(getattr(oracle, "prefer", None)):
        raise ValueError(f"oracle must be a preference oracle object with prefer(r_a, r_b, rng) "
                         f"(e.g. xpo_sim.BradleyTerry()), got {oracle!r}")
    first_logp = _first_table(mdp, policy_class)
    start_run = hook(policy_class, "start_run")
    if start_run is not None:
        start_run(rng)  # e.g. the transformer seeds its torch generator from the run's stream

    started = time.perf_counter()
    progress = _Progress.of_run(progress, mdp, algorithm, rounds)
    progress.stage("solving the optimum π* exactly")
    recorder = RunRecorder(mdp, beta, algorithm.name, recorded, max_enumerate)
    tracker = recorder.tracker
    every_round = hook(policy_class, "exact_every_round")
    ctx = RoundContext(mdp, beta, rng, oracle, policy_class, algorithm.samplers, first_logp=first_logp,
                       keep_tables=every_round or tracker.enabled)
    draw_logp = _DrawLogProbs(tracker)
    solve_results = hook(policy_class, "solve_results")  # exact classes report each solve
    stopped_short: list[int] = []

    progress.stage("round 0 (π_ref) scored; running the rounds")
    recorder.record(0, algorithm.reported_logp(ctx), ctx.data, 0.0, iterate_logp=ctx.logp)
    # L-BFGS-B's small dense algebra goes through BLAS; a multi-threaded OpenBLAS then spends
    # milliseconds per call synchronizing threads (30x slower runs on a loaded 2-core machine)
    try:
        with threadpool_limits(limits=1, user_api="blas"):
            for t in range(1, rounds + 1):
                ctx.begin_round(t)
                algorithm.collect(ctx)

                if tracker.enabled:
                    draw_logp.new_round()
                    for tables in ctx.drawn_tables():
                        tracker.add(draw_logp(tables))

                ctx.bonus = algorithm.bonus_weight(t, beta)
                if solve_results is not None:
                    solve_results.clear()
                algorithm.update(ctx)
                converged = True
                if solve_results:
                    short = [r for r in solve_results if not r.converged]
                    if short:
                        converged = False
                        stopped_short.append(t)
                        if len(stopped_short) == 1:
                            r = short[0]
                            warnings.warn(
                                f"{algorithm.name}, round {t}: the {class_name(policy_class)} class's update stopped short "
                                f"of its tolerance ({r.message}; projected gradient {r.projected_gradient:.2e}, "
                                f"predicted decrease {r.predicted_decrease:.2e}); the 'converged' column marks "
                                f"such rounds", ConvergenceWarning, stacklevel=2)
                if every_round or t in recorded:
                    recorder.record(t, algorithm.reported_logp(ctx), ctx.data, ctx.bonus, iterate_logp=ctx.logp,
                                    converged=converged)
                else:
                    recorder.skip(converged)
                progress.advance()
    finally:
        progress.close()
    if len(stopped_short) > 1:
        warnings.warn(f"{algorithm.name}: {len(stopped_short)} of {rounds} rounds' updates stopped short of their "
                      f"tolerance (rounds {stopped_short[:10]}{' …' if len(stopped_short) > 10 else ''})",
                      ConvergenceWarning, stacklevel=2)

    df = recorder.frame()
    df.attrs.update(seconds=time.perf_counter() - started, policy=class_name(policy_class))
    extra = hook(policy_class, "run_attrs")
    if extra is not None:
        df.attrs.update(extra())
    return df
