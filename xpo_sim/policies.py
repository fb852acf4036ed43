r"""Policy classes and their per-round updates, behind one interface.

Every class maps a parameter vector to per-state log-probabilities (S, A) that
:func:`xpo_sim.evaluate` scores exactly, and minimizes the round's cumulative objective

    L(π) = Σ_pairs ℓ_DPO(π)  +  α Σ_explored log π(ỹ)  [+ λ ‖θ‖²]       (docs/theory.md, XPO)

over aggregated data (:class:`xpo_sim.data.PreferenceData`) with value and gradient from the
numba kernels of ``xpo_sim._kernels.preference``. The interface is the
:class:`PolicyClass` protocol; the round loop of :func:`xpo_sim.run` finds a class by name in
:data:`POLICY_CLASSES` (or takes an object that implements the protocol). Algorithms that
need a reward model (RLHF, count-based UCB) use the :class:`RewardClass` protocol.

**Reward classes** (theory-faithful, exact update). π_θ is the KL-regularized optimum for
a reward estimate r̂_θ(s, a) = θ·φ(s, a), θ in a box [lo, hi]^d: π_θ = π*(r̂_θ). By the
implicit-Q* identity, β log(π_θ(τ)/π_ref(τ)) = θ·Φ(τ) − V̂_θ(s₀) with Φ(τ) = Σ_h φ(s_h, a_h),
so the DPO margin of two responses to one prompt is θ·(Φ(τ₊) − Φ(τ₋)) (V̂ cancels): DPO is
logistic regression on feature differences, convex in θ. XPO's bonus
α Σᵢ log π_θ(ỹᵢ) = (α/β) Σᵢ [θ·Φ(ỹᵢ) − V̂_θ(s₀ᵢ)] + const is concave (V̂ is a
log-partition, convex in θ), so with α > 0 the objective is not convex. Which minimizer an
update returns depends on ``solver`` (:mod:`xpo_sim.solvers`; each update's
:class:`~xpo_sim.solvers.SolveResult` and convergence is recorded):

* ``"newton"`` (default; projected Newton-CG on exact Hessian-vector products) and
  ``"lbfgsb"`` (SciPy's L-BFGS-B, the reference) return the *local* minimizer reached by
  descent from the previous iterate — with α > 0 XPO results from them are local
  minimizers, and two solvers can settle in different ones;
* ``"global"`` returns the certified global argmin, the update of the theory's XPO
  (branch and bound, :func:`xpo_sim.solvers.global_minimize`; the result's ``gap`` is at
  most ``gap_tol``, or the round is marked not converged), for classes with at most
  :data:`xpo_sim.solvers.GLOBAL_MAX_PARAMS` parameters. The gradient: the kernel returns ∂L/∂r̂(s, a) as an (S, A) table G
(one backward and one forward sweep); ∂L/∂θ = Σ_{s,a} G(s, a) φ(s, a) = Fᵀ vec(G) with the
feature matrix F (S·A, d), so one kernel serves every reward class.

* :class:`ImplicitRewardClass` — one parameter per (s, a) of a support (the terminal
  tokens of a tree, or every allowed token): F is one-hot. On a tree with terminal rewards
  π_θ(y|x) ∝ π_ref(y|x) exp(r̂_θ(x, y)/β). Contains π* when the box contains the true reward.
* :class:`LinearRewardClass` — shared parameters through features φ (dense or sparse,
  usually ``mdp.features``). Contains π* when r = θ*·φ with θ* in the box (realizability).
  With one-hot features it is the implicit class, run for run.

An optional ℓ2 penalty λ‖θ‖² (``l2``, default 0) makes the exact argmin of coin-flip labels
between equally good responses finite-sized instead of running to the box.

**Logits class** (practice-like, gradient update). log π(a|s) = log_softmax(log π_ref(·|s)
+ θ(s,·))_a, trained by ``steps`` Adam steps per round on the objective divided by the
number of pairs, as a language model would be; θ = 0 is π_ref.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
import scipy.sparse as sp

from xpo_sim import solvers as _solvers
from xpo_sim._kernels import newton as _newton
from xpo_sim._kernels import preference as _kernels
from xpo_sim._kernels import levels as _level_kernels
from xpo_sim.data import PreferenceData
from xpo_sim import checks, threads
from xpo_sim.mdp import TokenMDP, as_feature_matrix

__all__ = ["PolicyClass", "PolicyHooks", "RewardClass", "ImplicitRewardClass", "LinearRewardClass", "LogitsClass",
           "POLICY_CLASSES", "HOOK_DEFAULTS", "make_policy_class", "check_policy_class", "hook", "missing_reward_members"]


LOSS_KINDS = {"dpo": _kernels.LOSS_DPO, "ipo": _kernels.LOSS_IPO, "ln_dpo": _kernels.LOSS_LN_DPO}


def loss_kind(loss: str) -> int:
    try:
        return LOSS_KINDS[loss]
    except KeyError:
        raise ValueError(f"unknown loss {loss!r}: expected one of {sorted(LOSS_KINDS)}") from None


def _objective_data(data: PreferenceData, alpha: float) -> dict[str, np.ndarray]:
    arrays = dict(data.arrays())
    count = arrays.pop("explore_count")
    if alpha == 0.0:
        arrays["explore_path"] = arrays["explore_path"][:0]
        arrays["explore_weight"] = count[:0]
    else:
        arrays["explore_weight"] = alpha * count
    return arrays


@runtime_checkable
class PolicyClass(Protocol):
    """What the round loop needs of a policy class: three methods (and, optionally, more).

    Required:

    * ``initial_params()`` — the first iterate's parameters (π_ref where the class contains
      it; the loop computes whether it is π_ref, it does not assume it);
    * ``policy_logp(params)`` — the exact (S, A) table of log π(a|s) (−inf on tokens π_ref
      disallows), which every metric scores;
    * ``update(params, data, alpha, loss)`` — the next parameters given all the data so far
      (an exact argmin or a few optimizer steps), minimizing
      Σ_pairs ℓ(π) + α Σ_explored log π(ỹ) with the pair loss ``loss`` ("dpo", "ipo",
      "ln_dpo").

    Expected by some algorithms: ``objective(params, data, alpha, loss)`` → (L, ∂L/∂params)
    (SE-POPO adds its incentive to it); ``n_params``; ``name`` (defaults to the type's
    name in messages and ``df.attrs["policy"]``). A class that fits a reward model
    implements :class:`RewardClass`. Optional hooks, each with its default, are listed on
    :class:`PolicyHooks`; :func:`check_policy_class` says what an object lacks.
    """

    name: str

    @property
    def n_params(self) -> int: ...

    def initial_params(self) -> np.ndarray: ...

    def policy_logp(self, params: np.ndarray) -> np.ndarray: ...

    def objective(self, params: np.ndarray, data: PreferenceData, alpha: float,
                  loss: str = "dpo") -> tuple[float, np.ndarray]: ...

    def update(self, params: np.ndarray, data: PreferenceData, alpha: float,
               loss: str = "dpo") -> np.ndarray: ...


class PolicyHooks(Protocol):
    """The optional hooks of a policy class, read by :func:`xpo_sim.run` through
    :func:`hook`; each is looked up on the class and, when absent, takes the default of
    :data:`HOOK_DEFAULTS`.

    ``exact_every_round`` (default True)
        Whether the exact table is cheap enough to score every round. False (the
        transformer): only the recorded rounds are scored, so ``best_regret`` is the best
        over the rows.
    ``aggregated_data`` (default False)
        Whether ``update`` and ``objective`` read the data only through
        ``data.arrays()`` and ``data.n_pairs`` (pairs and explored responses as weighted
        counts), so that an algorithm may hand them a weighted view of the data (VPO's
        exact expectation). True for the built-in table classes.
    ``solve_results`` (default None)
        A list the class appends one :class:`xpo_sim.solvers.SolveResult` to per exact
        update; the loop clears it each round and fills the ``converged`` column from it.
    ``start_run(rng)`` (default: nothing)
        Called once before round 1 with the run's ``numpy.random.Generator`` (e.g. to seed
        a torch generator from it).
    ``make_sampler(ctx, keep_history)`` (default: sample from exact tables)
        An object drawing the built-in samplers itself (``names``: the sampler names it
        draws, default the four built-ins; ``begin_round()`` at the start of each round;
        ``sample(name, prompts)`` → a :class:`xpo_sim.TrajectoryBatch`, one response per
        prompt, from the same distribution as the sampler's tables). ``keep_history``: a
        declared sampler needs every iterate.
    ``run_attrs()`` (default: nothing)
        A dict merged into the returned DataFrame's ``attrs``.
    ``from_logp(logp)`` (default: absent)
        The parameters of an arbitrary per-state policy table: a class that can represent
        every policy exactly (the logits class) provides it; Inverse-Q* needs it.
    """

    exact_every_round: bool
    aggregated_data: bool
    solve_results: list | None

    def start_run(self, rng: np.random.Generator) -> None: ...

    def make_sampler(self, ctx, keep_history: bool): ...

    def run_attrs(self) -> dict: ...

    def from_logp(self, logp: np.ndarray): ...


HOOK_DEFAULTS: dict = dict(exact_every_round=True, aggregated_data=False, solve_results=None, start_run=None,
                           make_sampler=None, run_attrs=None, from_logp=None)
"""The value of each optional hook of :class:`PolicyHooks` for a class that lacks it."""

REQUIRED_METHODS = ("initial_params", "policy_logp", "update")


def hook(policy_class, name: str):
    """The optional hook ``name`` of ``policy_class`` (:class:`PolicyHooks`), or its default."""
    return getattr(policy_class, name, HOOK_DEFAULTS[name])


def class_name(policy_class) -> str:
    """The policy class's ``name``, or its type's name when it has none."""
    name = getattr(policy_class, "name", None)
    return name if isinstance(name, str) and name else type(policy_class).__name__


def check_policy_class(policy) -> None:
    """ValueError unless ``policy`` is an object with the required methods of
    :class:`PolicyClass` (a class itself, rather than an instance, is refused with a hint)."""
    if isinstance(policy, type):
        raise ValueError(f"policy is the class {policy.__name__} itself; pass an instance built for the run's "
                         f"instance and β (e.g. {policy.__name__}(mdp, beta, ...)) or a class name such as "
                         f"'implicit'")
    missing = [m for m in REQUIRED_METHODS if not callable(getattr(policy, m, None))]
    if missing:
        raise ValueError(f"policy {policy!r} is not a policy class: it lacks {missing} (see "
                         f"xpo_sim.policies.PolicyClass)")


@runtime_checkable
class RewardClass(PolicyClass, Protocol):
    """A policy class whose policies are soft-optimal for a reward r̂_θ = F θ in a box.

    ``box`` = (lo, hi) bounds every parameter; ``features`` is F, a CSR matrix (S·A, d);
    ``reward_table(params)`` is r̂_θ as an (S, A) table; ``contract(table)`` maps an (S, A)
    table g to Fᵀ vec(g) (gradients, visit counts per parameter); ``project(params)`` clips
    into the box. ``update(params, data, 0.0)`` is the Bradley–Terry maximum-likelihood
    reward fit (the DPO objective of the class).
    """

    box: tuple[float, float]
    features: sp.csr_matrix

    def reward_table(self, params: np.ndarray) -> np.ndarray: ...

    def contract(self, table: np.ndarray) -> np.ndarray: ...

    def project(self, params: np.ndarray) -> np.ndarray: ...


REWARD_MEMBERS = ("box", "features", "reward_table", "contract", "project", "objective", "initial_params", "update")


def missing_reward_members(policy) -> list[str]:
    """The members of :class:`RewardClass` that ``policy`` lacks (empty: it is a reward class)."""
    return [m for m in REWARD_MEMBERS if getattr(policy, m, None) is None]


SOLVERS = ("newton", "lbfgsb", "global")


class _LinearRewardBase:
    """Shared machinery of the reward classes: r̂_θ = F θ, θ ∈ [lo, hi]^d, exact per-round
    argmin (see the module docstring). ``solver``: "newton" (projected Newton-CG on exact
    Hessian-vector products, :func:`xpo_sim.solvers.projected_newton`), "lbfgsb" (SciPy's
    L-BFGS-B, the reference) — with α > 0 both return a *local* minimizer, the one reached by
    descent from the previous iterate — or "global" (the certified global argmin by branch
    and bound, :func:`xpo_sim.solvers.global_minimize`, for at most
    :data:`xpo_sim.solvers.GLOBAL_MAX_PARAMS` parameters; ``gap_tol`` and ``max_nodes`` are
    its tolerance and node cap). Every update appends its :class:`xpo_sim.solvers.SolveResult`
    to ``solve_results`` (the round loop reads and clears it); a global solve's result
    carries its ``lower_bound`` and ``gap``."""

    def __init__(self, mdp: TokenMDP, beta: float, features: sp.csr_matrix, box, *, l2: float = 0.0,
                 solver: str = "newton", gtol: float = 1e-9, ftol: float = 1e-15, max_iter: int | None = None,
                 gap_tol: float = 1e-6, max_nodes: int = 20_000):
        self.mdp = mdp
        self.beta = checks.beta(beta)
        self.features = features
        self._features_t = features.T.tocsr()  # Fᵀ as CSR: the contraction is a row-wise matvec
        self._features_sq_t = None  # (F∘F)ᵀ, built on first use (diagonal estimates of a general F)
        self.box = checks.box("box", box)
        self.l2 = checks.nonnegative("l2", l2)
        self.solver = checks.choice("solver", solver, SOLVERS)
        self.gtol = checks.positive("gtol", gtol)
        self.ftol = checks.positive("ftol", ftol)
        self.max_iter = (checks.integer("max_iter", max_iter, minimum=1) if max_iter is not None
                         else (2000 if solver == "lbfgsb" else 200))
        self.gap_tol = checks.positive("gap_tol", gap_tol)
        self.max_nodes = checks.integer("max_nodes", max_nodes, minimum=1)
        self._curvature = None
        if solver == "global":
            n_params = int(features.shape[1])
            if n_params > _solvers.GLOBAL_MAX_PARAMS:
                raise ValueError(f"solver='global' certifies the global argmin by branch and bound for at most "
                                 f"{_solvers.GLOBAL_MAX_PARAMS} parameters; this class has {n_params} (use "
                                 f"solver='newton', a local minimizer, or a smaller support/feature set)")
            self._curvature = _solvers.SoftValueCurvature(mdp.next_state, mdp.ref_logp, features, mdp.start_states)
        self.solve_results: list = []
        self.aggregated_data = True  # update/objective read data.arrays() only
        shape = (mdp.n_states, mdp.n_actions)
        self._work = dict(
            q_work=np.empty(shape), v_work=np.empty(mdp.n_states), logp_work=np.empty(shape),
            prob_work=np.empty(shape), occ_work=np.empty(mdp.n_states), start_work=np.empty(mdp.n_states),
        )
        self._hvp_work = [np.empty(mdp.n_states) for _ in range(4)]
        self._grad = np.empty(shape)
        self._hv = np.empty(shape)
        self._state: dict = {}

    @property
    def n_params(self) -> int:
        return int(self.features.shape[1])

    def initial_params(self) -> np.ndarray:
        """θ = 0 clipped to the box (π_ref itself when 0 is in the box)."""
        return np.full(self.n_params, min(max(0.0, self.box[0]), self.box[1]))

    def project(self, params: np.ndarray) -> np.ndarray:
        return np.clip(params, *self.box)

    def reward_table(self, params: np.ndarray) -> np.ndarray:
        """r̂_θ(s, a) = θ·φ(s, a) as an (S, A) table."""
        return (self.features @ np.asarray(params, dtype=np.float64)).reshape(self.mdp.n_states, self.mdp.n_actions)

    def contract(self, table: np.ndarray) -> np.ndarray:
        """Σ_{s,a} table(s, a) φ(s, a) = Fᵀ vec(table), a vector of length d."""
        return self._features_t @ np.ascontiguousarray(table, dtype=np.float64).ravel()

    def policy_logp(self, params: np.ndarray) -> np.ndarray:
        shape = (self.mdp.n_states, self.mdp.n_actions)
        q, v, logp = np.empty(shape), np.empty(self.mdp.n_states), np.empty(shape)
        threads.soft_sweep(self.mdp, self.reward_table(params), self.beta, q, v, logp)
        return logp

    def _objective_arrays(self, data: PreferenceData, alpha: float, loss: str):
        arrays = _objective_data(data, alpha)
        n_paths = arrays["path_lengths"].shape[0]
        n_pairs = arrays["pair_count"].shape[0]
        return dict(arrays=arrays, kind=loss_kind(loss), log_ratio=np.empty(n_paths), dlog_ratio=np.empty(n_paths),
                    coef_chosen=np.empty(n_pairs), coef_rejected=np.empty(n_pairs), curvature=np.empty(n_pairs))

    def _value_and_grad(self, params: np.ndarray, state: dict):
        arrays = state["arrays"]
        data = (arrays["path_states"], arrays["path_actions"], arrays["path_lengths"], arrays["path_ref_logp"],
                arrays["pair_chosen"], arrays["pair_rejected"], arrays["pair_count"], arrays["explore_path"],
                arrays["explore_weight"])
        table = self.reward_table(params)
        work = self._work
        if threads.parallel(self.mdp):  # the same steps, with the level-parallel sweeps
            threads.soft_sweep(self.mdp, table, self.beta, work["q_work"], work["v_work"], work["logp_work"])
            threads.policy_probs(work["logp_work"], out=work["prob_work"])
            value = _kernels.objective_from_values(self.beta, state["kind"], table, work["v_work"], *data,
                                                   work["start_work"], state["log_ratio"], state["dlog_ratio"],
                                                   self._grad)
            threads.occupancy_sweep(self.mdp, work["prob_work"], work["start_work"], work["occ_work"])
            _kernels.subtract_occupancy(work["prob_work"], work["occ_work"], self._grad)
        else:
            value = _kernels.implicit_reward_objective(
                *self.mdp.levels, self.mdp.next_state, self.mdp.ref_logp, self.beta, state["kind"], table, *data,
                log_ratio=state["log_ratio"], dlog_ratio=state["dlog_ratio"], grad_out=self._grad, **work)
        grad = self.contract(self._grad)
        if self.l2:
            value += self.l2 * float(params @ params)
            grad += 2.0 * self.l2 * params
        return value, grad

    def objective(self, params: np.ndarray, data: PreferenceData, alpha: float, loss: str = "dpo"):
        """(L, ∂L/∂θ) of the round objective at ``params``; ``loss`` is the pair term
        ("dpo", "ipo" or "ln_dpo"); L includes λ‖θ‖² when ``l2`` = λ > 0."""
        return self._value_and_grad(np.asarray(params, dtype=np.float64), self._objective_arrays(data, alpha, loss))

    def _second_order(self, state: dict) -> None:
        """Pair curvatures at the log-ratios of the last evaluation (for H v and diag H)."""
        arrays = state["arrays"]
        _newton.pair_curvatures(state["log_ratio"], arrays["path_lengths"], self.beta, state["kind"],
                                arrays["pair_chosen"], arrays["pair_rejected"], arrays["pair_count"],
                                state["coef_chosen"], state["coef_rejected"], state["curvature"])

    @staticmethod
    def _pair_arrays(state: dict) -> tuple:
        """The data and pair-curvature arrays the second-order kernels take, in their order."""
        arrays = state["arrays"]
        return (arrays["path_states"], arrays["path_actions"], arrays["path_lengths"], arrays["pair_chosen"],
                arrays["pair_rejected"], state["coef_chosen"], state["coef_rejected"], state["curvature"],
                state["dlog_ratio"])

    def _hessian_vector(self, vector: np.ndarray, state: dict) -> np.ndarray:
        prob, tangent = self._work["prob_work"], self.reward_table(vector)
        pairs = self._pair_arrays(state)
        if threads.parallel(self.mdp):  # the same steps, with the level-parallel sweeps
            _level_kernels.vdot_levels(*self.mdp.levels, self.mdp.next_state, prob, tangent, self._hvp_work[0],
                                       _level_kernels.CHUNK)
            _newton.hvp_paths(prob, self.beta, tangent, *pairs, *self._hvp_work, self._hv)
            _level_kernels.hvp_forward_levels(*self.mdp.levels, *self.mdp.predecessors, self.mdp.next_state, prob,
                                              self.beta, tangent, *self._hvp_work, self._hv, _level_kernels.CHUNK)
        else:
            _newton.reward_hvp(self.mdp.next_state, prob, self.beta, tangent, *pairs, *self._hvp_work, self._hv)
        out = self.contract(self._hv)
        if self.l2:
            out += 2.0 * self.l2 * vector
        return out

    def _hessian_diagonal_table(self, state: dict) -> np.ndarray:
        """The (S, A) estimate of the Hessian's diagonal over r̂ (into ``self._hv``)."""
        pairs = self._pair_arrays(state)
        prob = self._work["prob_work"]
        if threads.parallel(self.mdp):  # the same steps, with the level-parallel occupancy sweep
            start = _newton.hessian_diagonal_pairs(self.beta, *pairs, self._hv)
            threads.occupancy_sweep(self.mdp, prob, start, self._hvp_work[0])
            _newton.add_occupancy_diagonal(prob, self.beta, self._hvp_work[0], self._hv)
        else:
            _newton.reward_hessian_diagonal(self.mdp.next_state, prob, self.beta, *pairs, self._hvp_work[0], self._hv)
        return self._hv

    def _hessian_diagonal(self, state: dict) -> np.ndarray:
        """diag(Fᵀ H F) estimated as (F∘F)ᵀ diag H (exact for one-hot features)."""
        if self._features_sq_t is None:
            self._features_sq_t = self.features.multiply(self.features).T.tocsr()
        return self._features_sq_t @ self._hessian_diagonal_table(state).ravel() + 2.0 * self.l2

    def _untouched(self, state: dict) -> np.ndarray | None:
        """Parameters the objective does not depend on: with no bonus weight and a pair loss
        whose margin is a difference of same-prompt log-ratios (DPO, IPO: V̂(s₀) cancels),
        L depends on θ only through θ·φ(s, a) on the data's steps; parameters whose features
        vanish on every such step are exactly flat (LN-DPO's length weights keep V̂)."""
        arrays = state["arrays"]
        if arrays["explore_weight"].size and arrays["explore_weight"].any() or state["kind"] == _kernels.LOSS_LN_DPO:
            return None
        states, actions = arrays["path_states"], arrays["path_actions"]
        on_path = np.arange(states.shape[1]) < arrays["path_lengths"][:, None]
        steps = np.zeros(self.mdp.n_state_actions)
        steps[states[on_path] * self.mdp.n_actions + actions[on_path]] = 1.0
        return (abs(self._features_t) @ steps) == 0.0

    def hessian_vector(self, params: np.ndarray, vector: np.ndarray, data: PreferenceData, alpha: float,
                       loss: str = "dpo") -> np.ndarray:
        """∇²L(θ) v, exact (forward-mode through the soft Bellman sweep,
        ``xpo_sim._kernels.newton``)."""
        state = self._objective_arrays(data, alpha, loss)
        self._value_and_grad(np.asarray(params, dtype=np.float64), state)
        self._second_order(state)
        return self._hessian_vector(np.asarray(vector, dtype=np.float64), state)

    def _global_parts(self, state: dict) -> dict:
        """What :func:`xpo_sim.solvers.global_minimize` needs for the objective ``state``: L
        and ∇L (pointing H v and diag H at that point), H v, diag H, the untouched parameters
        and the box bounds of :class:`xpo_sim.solvers.RoundBounds` (αBB shift and
        chord relaxation)."""
        if self._curvature is None:
            self._curvature = _solvers.SoftValueCurvature(self.mdp.next_state, self.mdp.ref_logp, self.features,
                                                          self.mdp.start_states)
        bounds = self._curvature.round_bounds(state["arrays"], self.beta, state["kind"], self.l2)

        def fun(x):
            value_grad = self._value_and_grad(x, state)
            self._second_order(state)
            return value_grad

        return dict(fun=fun, hvp=lambda v: self._hessian_vector(v, state),
                    diagonal=lambda: self._hessian_diagonal(state), fixed=self._untouched(state),
                    shift=bounds.shift, relaxations=bounds.relaxations)

    def update(self, params: np.ndarray, data: PreferenceData, alpha: float, loss: str = "dpo") -> np.ndarray:
        """Minimize the objective over the box, warm-started at ``params`` (``solver``: a
        local minimizer by descent, or the certified global one); the
        :class:`~xpo_sim.solvers.SolveResult` is appended to ``solve_results``."""
        if self.n_params == 0:
            return params
        state = self._objective_arrays(data, alpha, loss)
        lo, hi = self.box
        if self.solver == "lbfgsb":
            result = _solvers.lbfgsb(lambda x: self._value_and_grad(x, state), params, lo, hi,
                                     gtol=self.gtol, max_iter=self.max_iter)
        elif self.solver == "global":
            parts = self._global_parts(state)
            result = _solvers.global_minimize(
                parts["fun"], parts["hvp"], parts["shift"], params, lo, hi, diagonal=parts["diagonal"],
                fixed=parts["fixed"], relaxations=parts["relaxations"],
                gap_tol=self.gap_tol, max_nodes=self.max_nodes, ftol=self.ftol, gtol=self.gtol, max_iter=self.max_iter,
            )
        else:
            def fun(x):
                value_grad = self._value_and_grad(x, state)
                self._second_order(state)
                return value_grad

            result = _solvers.projected_newton(
                fun, lambda v: self._hessian_vector(v, state), params, lo, hi,
                diagonal=lambda: self._hessian_diagonal(state), fixed=self._untouched(state),
                ftol=self.ftol, gtol=self.gtol, max_iter=self.max_iter,
            )
        self.solve_results.append(result)
        return result.x


class ImplicitRewardClass(_LinearRewardBase):
    """Soft-optimal policies of box-bounded reward tables; exact per-round argmin.

    Parameters
    ----------
    mdp, beta
        The instance and the KL strength the policies are soft-optimal for.
    box : (lo, hi), optional
        Bounds on every reward parameter. Default: the range of the true reward over the
        parametrized entries, widened to include 0 (so r̂ = 0, i.e. π_ref, is in the class
        and so is π*).
    support : {"auto", "terminal", "all"}
        Which allowed (s, a) entries carry a parameter: tokens that end the episode, or
        every allowed token. "auto" picks "terminal" when the true reward is zero on every
        other token.
    l2 : float
        λ of the penalty λ‖r̂‖² over the parameters (default 0).
    solver : {"newton", "lbfgsb", "global"}
        The per-round argmin: projected Newton-CG (default) or the reference L-BFGS-B, both
        local minimizers by descent from the previous iterate, or "global", the certified
        global argmin (at most :data:`xpo_sim.solvers.GLOBAL_MAX_PARAMS` parameters, else a
        ValueError here).
    gtol, ftol, max_iter
        Stopping rule: projected-gradient ∞-norm ≤ gtol, or (Newton) predicted decrease
        ≤ ftol · max(1, |L|) (see :mod:`xpo_sim.solvers`); iteration cap per round
        (default 200 Newton / 2000 L-BFGS-B iterations; for "global", of its local solves).
    gap_tol, max_nodes
        ``solver="global"`` only: the certificate's tolerance (upper − lower bound ≤
        gap_tol, absolute, in units of L; default 1e-6) and the most boxes its branch and
        bound may bound per round (default 20,000; reached: the round is not converged).

    Parameter j is the reward of the j-th support entry in row-major order, ``index`` =
    ``np.nonzero(mask)``; ``features`` is the matching one-hot matrix.
    """

    name = "implicit"

    def __init__(self, mdp: TokenMDP, beta: float, *, box=None, support: str = "auto", l2: float = 0.0,
                 solver: str = "newton", gtol: float = 1e-9, ftol: float = 1e-15, max_iter: int | None = None,
                 gap_tol: float = 1e-6, max_nodes: int = 20_000):
        terminal = mdp.allowed & (mdp.next_state == -1)
        checks.choice("support", support, ("auto", "terminal", "all"))
        if support == "auto":
            support = "terminal" if not mdp.reward[mdp.allowed & ~terminal].any() else "all"
        mask = terminal if support == "terminal" else mdp.allowed
        self.support = support
        self.mask = mask
        self.index = np.nonzero(mask)
        if box is None:
            true = mdp.reward[mask]
            box = (min(0.0, float(true.min())), max(0.0, float(true.max())))
        super().__init__(mdp, beta, one_hot_features(mask), box, l2=l2, solver=solver, gtol=gtol, ftol=ftol,
                         max_iter=max_iter, gap_tol=gap_tol, max_nodes=max_nodes)
        self._flat_index = np.flatnonzero(mask.ravel())
        self._full_support = self._flat_index.size == mdp.n_state_actions  # every (s, a) a parameter

    # one-hot features: F θ is a scatter and Fᵀ g a gather (same numbers as the sparse
    # products, without their per-call overhead, which dominates on small instances); with
    # every (s, a) a parameter, F is the identity and both are copies
    def reward_table(self, params: np.ndarray) -> np.ndarray:
        shape = (self.mdp.n_states, self.mdp.n_actions)
        if self._full_support:
            return np.array(params, dtype=np.float64).reshape(shape)
        table = np.zeros(self.mdp.n_state_actions)
        table[self._flat_index] = params
        return table.reshape(shape)

    def contract(self, table: np.ndarray) -> np.ndarray:
        if self._full_support:
            return np.array(table, dtype=np.float64).ravel()
        return np.ascontiguousarray(table, dtype=np.float64).ravel()[self._flat_index]

    def _hessian_diagonal(self, state: dict) -> np.ndarray:
        return self.contract(self._hessian_diagonal_table(state)) + 2.0 * self.l2


def one_hot_features(mask: np.ndarray) -> sp.csr_matrix:
    """The (S·A, n) CSR matrix with a single 1 in row s·A + a, column j, for the j-th True
    entry (s, a) of ``mask`` in row-major order: the implicit class as a linear class."""
    rows = np.flatnonzero(np.asarray(mask).ravel())
    n = rows.size
    return sp.csr_matrix((np.ones(n), (rows, np.arange(n))), shape=(mask.size, n))


class LinearRewardClass(_LinearRewardBase):
    """Soft-optimal policies of linear rewards r̂_θ(s, a) = θ·φ(s, a), θ ∈ [lo, hi]^d.

    Parameters
    ----------
    mdp, beta
        The instance and the KL strength the policies are soft-optimal for.
    features : array (S, A, d) or scipy.sparse (S·A, d), optional
        φ; default ``mdp.features``. Sparse features keep memory at O(nonzeros) for large
        S·A (the sweeps need one matrix-vector product each way per objective evaluation).
    box : (lo, hi), optional
        Bounds on every θ_k. Default ``mdp.info["feature_box"]`` (the instance families
        with natural features record one that contains the true θ*); required otherwise.
    l2, solver, gtol, ftol, max_iter, gap_tol, max_nodes
        As for :class:`ImplicitRewardClass` (``solver="global"``: at most
        :data:`xpo_sim.solvers.GLOBAL_MAX_PARAMS` features).
    """

    name = "linear"

    def __init__(self, mdp: TokenMDP, beta: float, *, features=None, box=None, l2: float = 0.0,
                 solver: str = "newton", gtol: float = 1e-9, ftol: float = 1e-15, max_iter: int | None = None,
                 gap_tol: float = 1e-6, max_nodes: int = 20_000):
        if features is None:
            if mdp.features is None:
                raise ValueError("the linear class needs features: pass features=... (S, A, d) or build the "
                                 "instance with features")
            matrix = mdp.feature_matrix()
        else:
            matrix = as_feature_matrix(features, mdp.n_states, mdp.n_actions)
        if box is None:
            box = mdp.info.get("feature_box")
            if box is None:
                raise ValueError("the linear class needs box=(lo, hi): this instance records no feature_box")
        super().__init__(mdp, beta, matrix, box, l2=l2, solver=solver, gtol=gtol, ftol=ftol, max_iter=max_iter,
                         gap_tol=gap_tol, max_nodes=max_nodes)


class LogitsClass:
    """Per-state logits added to log π_ref, trained by Adam steps (see module docstring).

    ``steps`` Adam steps per round with learning rate ``lr`` on L / (number of pairs),
    ``adam_betas`` = (β₁, β₂) in [0, 1) (β = 1 divides by 1 − β^t = 0) and ``adam_eps`` > 0.
    The Adam moments persist across the rounds of a run and are reset by
    :meth:`initial_params` (called once at the start of every run), so one object can serve
    run after run and each starts from fresh moments.
    """

    name = "logits"
    aggregated_data = True  # update/objective read data.arrays() only

    def __init__(self, mdp: TokenMDP, beta: float, *, steps: int = 20, lr: float = 0.1,
                 adam_betas=(0.9, 0.999), adam_eps: float = 1e-8):
        checks.integer("steps", steps, minimum=1)
        checks.positive("lr", lr)
        self.mdp = mdp
        self.beta = checks.beta(beta)
        self.steps = int(steps)
        self.lr = float(lr)
        self.adam_betas = checks.real_pair("adam_betas", adam_betas, low=0.0, high=1.0, high_open=True)
        self.adam_eps = checks.real("adam_eps", adam_eps, low=0.0, low_open=True)
        shape = (mdp.n_states, mdp.n_actions)
        self._logp = np.empty(shape)
        self._state_weight = np.empty(mdp.n_states)
        self._grad = np.empty(shape)
        self._reset_adam()

    def _reset_adam(self) -> None:
        shape = (self.mdp.n_states, self.mdp.n_actions)
        self._m = np.zeros(shape)
        self._v = np.zeros(shape)
        self._t = 0

    @property
    def n_params(self) -> int:
        return int(self.mdp.allowed.sum())

    def initial_params(self) -> np.ndarray:
        """θ = 0 (π = π_ref), the first iterate of a run; also resets the Adam moments, so a
        run never inherits the moments of an earlier run with the same object."""
        self._reset_adam()
        return np.zeros((self.mdp.n_states, self.mdp.n_actions))

    def from_logp(self, logp: np.ndarray) -> np.ndarray:
        """θ = log π − log π_ref on allowed tokens (0 elsewhere): the class holds every
        per-state policy exactly (``policy_logp(from_logp(logp))`` is ``logp``)."""
        allowed = self.mdp.allowed
        return np.where(allowed, np.asarray(logp, dtype=np.float64) - np.where(allowed, self.mdp.ref_logp, 0.0), 0.0)

    def policy_logp(self, params: np.ndarray) -> np.ndarray:
        out = np.empty((self.mdp.n_states, self.mdp.n_actions))
        _kernels.logits_policy(self.mdp.ref_logp, params, out)
        return out

    def objective(self, params: np.ndarray, data: PreferenceData, alpha: float, loss: str = "dpo"):
        """(L, ∂L/∂θ) of the round objective (not divided by the number of pairs)."""
        arrays = _objective_data(data, alpha)
        value = _kernels.logits_objective(
            self.mdp.ref_logp, self.beta, loss_kind(loss), np.ascontiguousarray(params, dtype=np.float64),
            arrays["path_states"], arrays["path_actions"], arrays["path_lengths"],
            arrays["path_ref_logp"], arrays["pair_chosen"], arrays["pair_rejected"],
            arrays["pair_count"], arrays["explore_path"], arrays["explore_weight"],
            self._logp, self._state_weight, self._grad,
        )
        return value, self._grad.copy()

    def update(self, params: np.ndarray, data: PreferenceData, alpha: float, loss: str = "dpo") -> np.ndarray:
        """``steps`` Adam steps on L / max(1, pairs) from ``params``."""
        params = params.copy()
        scale = 1.0 / max(1, data.n_pairs)
        b1, b2 = self.adam_betas
        for _ in range(self.steps):
            _, grad = self.objective(params, data, alpha, loss)
            grad *= scale
            self._t += 1
            self._m = b1 * self._m + (1 - b1) * grad
            self._v = b2 * self._v + (1 - b2) * grad * grad
            m_hat = self._m / (1 - b1**self._t)
            v_hat = self._v / (1 - b2**self._t)
            params -= self.lr * m_hat / (np.sqrt(v_hat) + self.adam_eps)
        return params


POLICY_CLASSES: dict[str, type] = {
    ImplicitRewardClass.name: ImplicitRewardClass,
    LinearRewardClass.name: LinearRewardClass,
    LogitsClass.name: LogitsClass,
}
"""The registry: a policy class name → the class, built as ``cls(mdp, beta, **options)``."""


def make_policy_class(mdp: TokenMDP, beta: float, policy="implicit", **options) -> PolicyClass:
    """The policy class ``policy`` names in :data:`POLICY_CLASSES`, built for ``mdp`` and
    ``beta`` with ``options``; or ``policy`` itself when it is an object implementing
    :class:`PolicyClass` (then ``options`` must be empty)."""
    if isinstance(policy, str):
        try:
            cls = POLICY_CLASSES[policy]
        except KeyError:
            raise ValueError(f"unknown policy class {policy!r}: expected one of {sorted(POLICY_CLASSES)} "
                             f"or a PolicyClass object") from None
        return cls(mdp, beta, **options)
    check_policy_class(policy)
    if options:
        raise ValueError(f"policy options {sorted(options)} go with a class name, not a policy object")
    return policy
