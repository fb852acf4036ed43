r"""Preference-learning algorithms as small config objects, all run by one round loop.

Round t = 1, 2, … (π¹ = π_ref): draw ``batch`` prompts s₀ ∼ ρ; for each draw a response
y ∼ πᵗ(·|s₀) and a second response ỹ ∼ π̃ᵗ(·|s₀); label the pair with the preference
oracle (Bradley–Terry by default); add it to the data. Then

    πᵗ⁺¹ = argmin_π  α_t Σ_{explored ỹ so far} log π(ỹ)  +  Σ_{pairs so far} ℓ_DPO(π)

(Xie et al. 2024, Algorithm 1; the bonus enters the *minimized* objective with a plus sign,
lowering the probability of what the sampler already produced). The algorithms differ in
their samplers and in α:

=============  =======================  ===================  =======================
algorithm      y from                   ỹ from               bonus
=============  =======================  ===================  =======================
OfflineDPO     π_ref                    π_ref                none
OnlineDPO      πᵗ                       πᵗ                   none
HybridDPO      πᵗ                       π_ref                none (XPO with α = 0)
XPO "ref"      πᵗ                       π_ref                α·log π(ỹ)
XPO "current"  πᵗ                       πᵗ                   α·log π on both responses
XPO "history"  πᵗ                       uniform mix of π¹…πᵗ α·log π(ỹ)
=============  =======================  ===================  =======================

:func:`run` returns one row per recorded round; the row with ``round`` = t describes the
policy after t rounds of data (round 0 is π_ref). Every number in it is exact.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Callable, ClassVar, Iterable

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from xpo_sim.data import PreferenceData
from xpo_sim import checks
from xpo_sim.mdp import TokenMDP, TrajectoryBatch
from xpo_sim.metrics import ConcentrabilityTracker, optimal_mass, seen_mass
from xpo_sim.policies import loss_kind, make_policy_class
from xpo_sim.preferences import BradleyTerry
from xpo_sim.soft import evaluate, solve_soft
from xpo_sim.solvers import ConvergenceWarning
from xpo_sim.trajectories import as_generator, sample_trajectories, trajectory_reward

__all__ = ["Algorithm", "OfflineDPO", "OnlineDPO", "HybridDPO", "XPO", "run", "COLUMNS", "RunRecorder",
           "RoundContext", "label_and_store", "store_pairs", "record_rounds", "check_run_arguments"]

SAMPLERS = ("ref", "current", "history")
SCHEDULES = ("constant", "inv_sqrt")

COLUMNS = [
    "algorithm", "round", "pairs", "alpha", "regret", "best_regret", "reward_regret", "kl_ref",
    "opt_mass", "seen_star_mass", "distinct_seen", "log_concentrability", "iterate_regret", "converged",
]


def _check_batch(batch) -> int:
    if isinstance(batch, bool) or not isinstance(batch, (int, np.integer)) or batch < 1:
        raise ValueError(f"batch must be an int >= 1, got {batch!r}")
    return int(batch)


@dataclass(frozen=True)
class Algorithm:
    """Base config: which samplers produce y and ỹ, the bonus weight α_t, pairs per round
    (``batch``) and the pair loss (``loss``: "dpo", "ipo" or "ln_dpo").

    The round loop of :func:`run` calls three hooks, which subclasses may override:
    :meth:`collect` (sample, label and store this round's data), :meth:`update` (the
    policy update) and :meth:`reported_logp` (the policy whose metrics are recorded).
    """

    batch: int = field(default=1, kw_only=True)
    loss: str = field(default="dpo", kw_only=True)
    policy_sampler: ClassVar[str] = "current"
    explore_sampler: ClassVar[str] = "ref"
    policy_classes: ClassVar[tuple[str, ...]] = ("implicit", "linear", "logits")

    def __post_init__(self):
        _check_batch(self.batch)
        loss_kind(self.loss)  # raises on an unknown loss

    @property
    def name(self) -> str:
        return type(self).__name__

    def alpha_at(self, t: int) -> float:
        """Bonus weight (TRL convention α·log π(ỹ)) used in the objective after t rounds."""
        return 0.0

    def bonus_weight(self, t: int, beta: float) -> float:
        """The weight of Σ log π(ỹ) in the minimized objective after t rounds."""
        return self.alpha_at(t)

    def bonus_on_pair(self) -> bool:
        """Whether both responses of each pair enter the bonus (else only ỹ)."""
        return False

    def pairs_in_round(self, t: int) -> int:
        return self.batch

    def total_rounds(self, rounds: int) -> int:
        return rounds

    # ----------------------------------------------------------------- hooks
    def collect(self, ctx: "RoundContext") -> list[str]:
        """Draw this round's prompts and pairs (y from ``policy_sampler``, ỹ from
        ``explore_sampler``), label and store them; return the samplers used."""
        prompts = ctx.prompts(self.pairs_in_round(ctx.t))
        y = ctx.sample(self.policy_sampler, prompts)
        y_tilde = ctx.sample(self.explore_sampler, prompts)
        label_and_store(ctx.mdp, ctx.datasets, ctx.oracle, y, y_tilde, ctx.rng,
                        "both" if self.bonus_on_pair() else "second")
        return [self.policy_sampler, self.explore_sampler]

    def update(self, ctx: "RoundContext") -> None:
        """Set ``ctx.params`` and ``ctx.logp`` to the next iterate."""
        ctx.params = ctx.policy_class.update(ctx.params, ctx.data, ctx.bonus, self.loss)
        ctx.logp = ctx.policy_class.policy_logp(ctx.params)

    def reported_logp(self, ctx: "RoundContext") -> np.ndarray:
        """The policy whose exact metrics make the round's row (the iterate itself)."""
        return ctx.logp


@dataclass(frozen=True)
class OnlineDPO(Algorithm):
    """Online DPO: both responses from the current policy πᵗ, no bonus."""

    policy_sampler: ClassVar[str] = "current"
    explore_sampler: ClassVar[str] = "current"


@dataclass(frozen=True)
class HybridDPO(Algorithm):
    """Hybrid (iterative) DPO: y ∼ πᵗ against ỹ ∼ π_ref, no bonus — XPO with α = 0."""

    policy_sampler: ClassVar[str] = "current"
    explore_sampler: ClassVar[str] = "ref"


@dataclass(frozen=True)
class OfflineDPO(Algorithm):
    """Offline DPO: every pair from π_ref.

    ``n_pairs=None`` (default): pairs arrive at the online methods' rate, ``batch`` a round,
    so round t is DPO on the first t·batch pairs of one π_ref dataset (same budget as the
    online methods at every round). ``n_pairs=N``: all N pairs in one round (one row).
    """

    n_pairs: int | None = None
    policy_sampler: ClassVar[str] = "ref"
    explore_sampler: ClassVar[str] = "ref"

    def __post_init__(self):
        super().__post_init__()
        if self.n_pairs is not None:
            _check_batch(self.n_pairs)

    def pairs_in_round(self, t: int) -> int:
        return self.batch if self.n_pairs is None else self.n_pairs

    def total_rounds(self, rounds: int) -> int:
        return rounds if self.n_pairs is None else 1


DEFAULT_ALPHA = 0.01


@dataclass(frozen=True)
class XPO(Algorithm):
    """Exploratory Preference Optimization (Xie et al. 2024, Algorithm 1).

    ``alpha``: bonus weight (default 0.01, TRL's convention α·log π(ỹ); SELM's α' relates by
    α = α'·β). ``schedule``: "constant" (α_t = α), "inv_sqrt" (α_t = α/√t, the decay the
    theory's α ∝ 1/√T suggests for an anytime run), or a callable t ↦ α_t.
    ``sampler``: π̃ = "ref" (Algorithm 1), "current" (both responses on-policy, bonus on
    both), "history" (uniform mixture of the iterates π¹…πᵗ).
    """

    alpha: float = DEFAULT_ALPHA
    sampler: str = "ref"
    schedule: str | Callable[[int], float] = "constant"

    def __post_init__(self):
        super().__post_init__()
        if isinstance(self.alpha, bool) or not (math.isfinite(float(self.alpha)) and self.alpha >= 0):
            raise ValueError(f"alpha must be a finite number >= 0, got {self.alpha!r}")
        if self.sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {self.sampler!r}: expected one of {SAMPLERS}")
        if not callable(self.schedule) and self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}: expected one of {SCHEDULES} or a callable")

    @property
    def explore_sampler(self) -> str:  # type: ignore[override]
        return self.sampler

    def alpha_at(self, t: int) -> float:
        if t < 1:
            return float(self.alpha)
        if callable(self.schedule):
            value = float(self.schedule(t))
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"alpha schedule gave {value!r} at round {t}; it must be finite and >= 0")
            return value
        if self.schedule == "inv_sqrt":
            return float(self.alpha) / math.sqrt(t)
        return float(self.alpha)

    def bonus_on_pair(self) -> bool:
        return self.sampler == "current"


def record_rounds(record, rounds: int) -> set[int]:
    if record == "all":
        return set(range(rounds + 1))
    if record == "geometric":
        grid = np.unique(np.round(np.geomspace(1, rounds, num=min(rounds, 60))).astype(int))
        return {0, *grid.tolist(), rounds}
    try:
        chosen = {int(t) for t in record}
    except TypeError:
        raise ValueError(f"record must be 'all', 'geometric' or an iterable of rounds, got {record!r}") from None
    return {t for t in chosen if 0 <= t <= rounds} | {0, rounds}


def _sample_mixture(mdp: TokenMDP, tables: list[np.ndarray], prompts: np.ndarray, rng) -> TrajectoryBatch:
    """One response per prompt from the uniform mixture of the policies ``tables``."""
    which = rng.integers(len(tables), size=len(prompts))
    parts = [sample_trajectories(mdp, tables[i], 1, rng, start_states=prompts[j : j + 1])
             for j, i in enumerate(which)]
    return TrajectoryBatch.concatenate(parts)


def store_pairs(datasets: list[PreferenceData], chosen: TrajectoryBatch, rejected: TrajectoryBatch,
                explored: TrajectoryBatch | None = None) -> None:
    """Add the pairs chosen_i ≻ rejected_i (and the explored responses) to every dataset."""
    for data in datasets:
        data.add_pairs(data.path_ids(chosen), data.path_ids(rejected))
        if explored is not None and len(explored):
            data.add_explored(data.path_ids(explored))


def label_and_store(mdp: TokenMDP, datasets: list[PreferenceData], oracle, y: TrajectoryBatch,
                    y_tilde: TrajectoryBatch, rng, explored: str = "second") -> None:
    """Label each pair (y_i, ỹ_i) with the oracle on their true rewards and store it in every
    dataset. ``explored``: which responses enter the bonus — "second" (ỹ), "both" or "none"."""
    prefer_y = np.asarray(oracle.prefer(trajectory_reward(mdp, y), trajectory_reward(mdp, y_tilde), rng))
    winner = np.where(prefer_y, 0, 1)
    both = TrajectoryBatch.concatenate([y, y_tilde])
    n = len(y)
    chosen = both.take(np.arange(n) + n * winner)
    rejected = both.take(np.arange(n) + n * (1 - winner))
    bonus = {"second": y_tilde, "both": both, "none": None}[explored]
    store_pairs(datasets, chosen, rejected, bonus)


class RoundContext:
    """What a round's hooks see: the instance, the data, the policy class and the current
    iterate. ``data`` accumulates everything (the coverage metrics read it); an algorithm
    that trains on each round's data alone reads ``round_data``."""

    def __init__(self, mdp: TokenMDP, beta: float, rng, oracle, policy_class, keep_iterates: bool):
        self.mdp, self.beta, self.rng, self.oracle = mdp, beta, rng, oracle
        self.policy_class = policy_class
        self.data = PreferenceData(mdp)
        self.round_data = PreferenceData(mdp)
        self.params = policy_class.initial_params()
        self.logp = np.array(mdp.ref_logp)
        self.previous_logp = self.logp
        self.iterates: list[np.ndarray] | None = [] if keep_iterates else None
        self.state: dict = {}  # per-run state of an algorithm (a reward model, a second policy …)
        self.t = 0
        self.bonus = 0.0

    @property
    def datasets(self) -> list[PreferenceData]:
        return [self.data, self.round_data]

    def prompts(self, n: int) -> np.ndarray:
        return self.rng.choice(self.mdp.n_states, size=n, p=self.mdp.start)

    def sampler_logp(self, name: str) -> np.ndarray:
        tables = {"ref": self.mdp.ref_logp, "current": self.logp, "previous": self.previous_logp}
        return tables[name]

    def sample(self, name: str, prompts: np.ndarray, per_prompt: int = 1) -> TrajectoryBatch:
        """``per_prompt`` responses to each prompt from the sampler ``name`` ("ref",
        "current", "previous" = the iterate before the last update, "history" = uniform
        mixture of the iterates so far)."""
        prompts = np.repeat(prompts, per_prompt)
        if name == "history":
            return _sample_mixture(self.mdp, self.iterates, prompts, self.rng)
        return sample_trajectories(self.mdp, self.sampler_logp(name), len(prompts), self.rng,
                                   start_states=prompts)


class RunRecorder:
    """Exact metrics of successive iterates (the rows of :func:`run`): one
    :meth:`record` call per iterate; only rounds in ``recorded`` become rows, but every
    call counts towards ``best_regret``. ``tracker`` must be fed the sampling
    distributions for ``log_concentrability``."""

    def __init__(self, mdp: TokenMDP, beta: float, algorithm_name: str, recorded, max_enumerate: int):
        self.mdp, self.beta, self.name = mdp, beta, algorithm_name
        self.recorded = recorded
        self.solution = solve_soft(mdp, beta)
        self.star = evaluate(mdp, self.solution.logp, beta)
        self.tracker = ConcentrabilityTracker(mdp, self.solution.logp, max_enumerate)
        self.best_regret = math.inf
        self.rows: list[dict] = []
        self._pending_converged = True  # updates of unrecorded rounds since the last row

    def record(self, t: int, logp: np.ndarray, data: PreferenceData, alpha_t: float,
               iterate_logp: np.ndarray | None = None, converged: bool = True) -> None:
        """Score ``logp`` (the reported policy); ``iterate_logp``, when the algorithm
        reports something other than its iterate (ExPO), gives ``iterate_regret``;
        ``converged``: whether every update since the previous row met its tolerance."""
        ev = evaluate(self.mdp, logp, self.beta)
        regret = self.solution.value - ev.value
        self.best_regret = min(self.best_regret, regret)
        if t in self.recorded:
            iterate_regret = regret
            if iterate_logp is not None and iterate_logp is not logp:
                iterate_regret = self.solution.value - evaluate(self.mdp, iterate_logp, self.beta).value
            self.rows.append(dict(
                algorithm=self.name, round=t, pairs=data.n_pairs, alpha=alpha_t,
                regret=regret, best_regret=self.best_regret, reward_regret=self.star.reward - ev.reward,
                kl_ref=ev.kl, opt_mass=optimal_mass(self.mdp, logp),
                seen_star_mass=seen_mass(self.mdp, self.solution.logp, data.batch()),
                distinct_seen=data.n_distinct, log_concentrability=self.tracker.value(),
                iterate_regret=iterate_regret, converged=bool(converged and self._pending_converged),
            ))
            self._pending_converged = True
        else:
            self._pending_converged = self._pending_converged and bool(converged)

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=COLUMNS)


def check_run_arguments(mdp, algorithm, beta, rounds) -> tuple[float, int]:
    """Validate what every round loop takes (an MDP, an algorithm config, β, rounds ≥ 1;
    an instance built for a β, like two_arm_needle, must be run at that β). Returns
    (β, rounds) as float and int."""
    if not isinstance(mdp, TokenMDP):
        raise TypeError(f"expected a TokenMDP, got {type(mdp).__name__}")
    if not isinstance(algorithm, Algorithm):
        raise TypeError(f"algorithm must be an Algorithm config (e.g. xpo_sim.XPO()), got {algorithm!r}")
    beta = checks.beta(beta)
    built_for = mdp.info.get("beta")
    if built_for is not None and not math.isclose(built_for, beta, rel_tol=1e-12):
        raise ValueError(
            f"this {mdp.info.get('family')} instance was built for beta={built_for}, but the run "
            f"was given beta={beta}; build it with the same beta"
        )
    if isinstance(rounds, bool) or not isinstance(rounds, (int, np.integer)) or rounds < 1:
        raise ValueError(f"rounds must be an int >= 1, got {rounds!r}")
    return beta, int(rounds)


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
    max_enumerate: int = 100_000,
    progress: bool = False,
    **policy_options,
) -> pd.DataFrame:
    """Run ``algorithm`` for ``rounds`` rounds on ``mdp`` and return the exact metrics.

    Parameters
    ----------
    policy : "implicit" | "linear" | "logits" | PolicyClass
        The policy class, by name from :data:`xpo_sim.policies.POLICY_CLASSES` or as an
        object implementing :class:`xpo_sim.policies.PolicyClass`: implicit-reward (one
        reward parameter per response or state-action) or linear-feature reward (θ·φ,
        ``features`` default ``mdp.features``), both with the exact per-round argmin, or
        logits with Adam steps (``steps``, ``lr``). ``policy_options`` go to the class
        (e.g. ``box``, ``support``, ``l2`` for the reward classes).
    oracle
        Preference oracle with ``prefer(r_a, r_b, rng)``; default Bradley–Terry labels.
    record
        "all" rounds, "geometric" (about 60 rows), or an iterable of rounds.
    max_enumerate
        ``log_concentrability`` is computed by enumerating trajectories when there are at
        most this many, and is NaN otherwise.

    Columns: ``algorithm``, ``round``, ``pairs`` (preference queries so far), ``alpha``
    (α_t used for this iterate), ``regret`` = J_β(π*) − J_β(πᵗ), ``best_regret`` (best
    iterate so far, every round counted), ``reward_regret`` = E_π* r − E_πᵗ r, ``kl_ref`` =
    KL(πᵗ ‖ π_ref), ``opt_mass`` (πᵗ's mass on reward-maximizing responses),
    ``seen_star_mass`` (π*-mass on responses in the data), ``distinct_seen``,
    ``log_concentrability`` (log max_τ π*(τ)/μ̄ₜ(τ); +inf while μ̄ₜ misses a π* response),
    ``converged`` (every exact update since the previous row met its tolerance; True for
    round 0 and for classes that take a fixed number of optimizer steps). An update that
    stops short also raises a :class:`xpo_sim.solvers.ConvergenceWarning` (the first at
    once, a count at the end).
    """
    beta, rounds = check_run_arguments(mdp, algorithm, beta, rounds)
    rng = as_generator(seed)
    oracle = BradleyTerry() if oracle is None else oracle
    policy_class = make_policy_class(mdp, beta, policy, **policy_options)
    rounds = algorithm.total_rounds(int(rounds))
    recorded = record_rounds(record, rounds)

    if policy_class.name not in algorithm.policy_classes:
        raise ValueError(f"{algorithm.name} runs with policy in {algorithm.policy_classes}, "
                         f"not {policy_class.name!r}")
    recorder = RunRecorder(mdp, beta, algorithm.name, recorded, max_enumerate)
    tracker = recorder.tracker
    ctx = RoundContext(mdp, beta, rng, oracle, policy_class, keep_iterates=algorithm.explore_sampler == "history")
    history_log_sum = None  # running log Σ_i πⁱ(τ) over the enumeration, for "history"
    solve_results = getattr(policy_class, "solve_results", None)  # exact classes report each solve
    stopped_short: list[int] = []

    recorder.record(0, algorithm.reported_logp(ctx), ctx.data, 0.0, iterate_logp=ctx.logp)
    steps = range(1, rounds + 1)
    if progress:
        from tqdm.auto import tqdm

        steps = tqdm(steps, desc=algorithm.name, leave=False)
    # L-BFGS-B's small dense algebra goes through BLAS; a multi-threaded OpenBLAS then spends
    # milliseconds per call synchronizing threads (30x slower runs on a loaded 2-core machine)
    with threadpool_limits(limits=1, user_api="blas"):
        for t in steps:
            ctx.t = t
            if ctx.iterates is not None:
                ctx.iterates.append(ctx.logp)
            ctx.round_data = PreferenceData(mdp)
            used = algorithm.collect(ctx)

            if tracker.enabled:
                log_current = tracker.policy_logp(ctx.logp)
                history_log_sum = (log_current if history_log_sum is None
                                   else np.logaddexp(history_log_sum, log_current))
                for name in used:
                    if name == "history":
                        tracker.add(history_log_sum - math.log(t))
                    elif name == "current":
                        tracker.add(log_current)
                    else:
                        tracker.add(tracker.policy_logp(ctx.sampler_logp(name)))

            ctx.bonus = algorithm.bonus_weight(t, beta)
            ctx.previous_logp = ctx.logp
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
                            f"{algorithm.name}, round {t}: the {policy_class.name} class's update stopped short of "
                            f"its tolerance ({r.message}; projected gradient {r.projected_gradient:.2e}, "
                            f"predicted decrease {r.predicted_decrease:.2e}); the 'converged' column marks "
                            f"such rounds", ConvergenceWarning, stacklevel=2)
            recorder.record(t, algorithm.reported_logp(ctx), ctx.data, ctx.bonus, iterate_logp=ctx.logp,
                            converged=converged)
    if len(stopped_short) > 1:
        warnings.warn(f"{algorithm.name}: {len(stopped_short)} of {rounds} rounds' updates stopped short of their "
                      f"tolerance (rounds {stopped_short[:10]}{' …' if len(stopped_short) > 10 else ''})",
                      ConvergenceWarning, stacklevel=2)

    return recorder.frame()
