r"""Tabular policy classes and their per-round updates.

Both classes map parameters to per-state log-probabilities (S, A) that
:func:`xpo_sim.evaluate` scores exactly, and minimize the round's cumulative objective

    L(π) = Σ_pairs ℓ_DPO(π)  +  α Σ_explored log π(ỹ)          (DESIGN.md, XPO)

over aggregated data (:class:`xpo_sim.data.PreferenceData`) with value and gradient from the
numba kernels of ``xpo_sim._kernels.preference``.

**Implicit-reward class** (theory-faithful, exact update). π_θ is the KL-regularized optimum
for a reward estimate r̂_θ whose entries lie in a box [lo, hi]: π_θ = π*(r̂_θ). By the
implicit-Q* identity, β log(π_θ(τ)/π_ref(τ)) = r̂_θ(τ) − V̂_θ(s₀), so the DPO margin of two
responses to one prompt is r̂_θ(τ₊) − r̂_θ(τ₋) (V̂ cancels) and DPO is logistic regression on
r̂. The class contains π* when the box contains the true reward. On a tree with terminal
rewards only the last token of each response carries a parameter, so
π_θ(y|x) ∝ π_ref(y|x) exp(r̂_θ(x, y)/β). The update solves the objective to tolerance with
L-BFGS-B under the box, warm-started at the previous iterate (the objective is convex in r̂
for DPO; XPO's bonus adds a concave term, so with α > 0 the solution is a local optimum
found from the previous iterate).

**Logits class** (practice-like, gradient update). log π(a|s) = log_softmax(log π_ref(·|s)
+ θ(s,·))_a, trained by ``steps`` Adam steps per round on the objective divided by the
number of pairs, as a language model would be; θ = 0 is π_ref.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.optimize import Bounds, minimize

from xpo_sim._kernels import preference as _kernels
from xpo_sim._kernels import soft as _soft_kernels
from xpo_sim.data import PreferenceData
from xpo_sim.mdp import TokenMDP, check_beta

__all__ = ["ImplicitRewardClass", "LogitsClass"]


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


class ImplicitRewardClass:
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
    gtol, max_iter
        L-BFGS-B stopping rule (projected-gradient tolerance) and iteration cap per round.
    """

    name = "implicit"

    def __init__(self, mdp: TokenMDP, beta: float, *, box=None, support: str = "auto",
                 gtol: float = 1e-9, max_iter: int = 2000):
        self.mdp = mdp
        self.beta = check_beta(beta)
        terminal = mdp.allowed & (mdp.next_state == -1)
        if support == "auto":
            support = "terminal" if not mdp.reward[mdp.allowed & ~terminal].any() else "all"
        if support == "terminal":
            mask = terminal
        elif support == "all":
            mask = mdp.allowed
        else:
            raise ValueError(f"support must be 'auto', 'terminal' or 'all', got {support!r}")
        self.support = support
        self.mask = mask
        self.index = np.nonzero(mask)
        if box is None:
            true = mdp.reward[mask]
            box = (min(0.0, float(true.min())), max(0.0, float(true.max())))
        lo, hi = (float(x) for x in box)
        if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
            raise ValueError(f"box must be a pair of finite numbers lo <= hi, got {box!r}")
        self.box = (lo, hi)
        n = int(mask.sum())
        self._bounds = Bounds(np.full(n, lo), np.full(n, hi))  # built once, not every round
        self.gtol = float(gtol)
        self.max_iter = int(max_iter)
        shape = (mdp.n_states, mdp.n_actions)
        self._work = dict(
            q_work=np.empty(shape), v_work=np.empty(mdp.n_states), logp_work=np.empty(shape),
            occ_work=np.empty(mdp.n_states), start_work=np.empty(mdp.n_states),
        )
        self._grad = np.empty(shape)

    @property
    def n_params(self) -> int:
        return int(self.index[0].size)

    def initial_params(self) -> np.ndarray:
        """r̂ = 0 clipped to the box (π_ref itself when 0 is in the box)."""
        return np.full(self.n_params, min(max(0.0, self.box[0]), self.box[1]))

    def reward_table(self, params: np.ndarray) -> np.ndarray:
        table = np.zeros((self.mdp.n_states, self.mdp.n_actions))
        table[self.index] = params
        return table

    def policy_logp(self, params: np.ndarray) -> np.ndarray:
        shape = (self.mdp.n_states, self.mdp.n_actions)
        q, v, logp = np.empty(shape), np.empty(self.mdp.n_states), np.empty(shape)
        _soft_kernels.soft_backward(self.mdp.next_state, self.reward_table(params), self.mdp.ref_logp,
                                    self.beta, q, v, logp)
        return logp

    def objective(self, params: np.ndarray, data: PreferenceData, alpha: float, loss: str = "dpo"):
        """(L, ∂L/∂params) of the round objective at ``params``; ``loss`` is the pair term
        ("dpo", "ipo" or "ln_dpo")."""
        arrays = _objective_data(data, alpha)
        value = _kernels.implicit_reward_objective(
            self.mdp.next_state, self.mdp.ref_logp, self.beta, loss_kind(loss), self.reward_table(params),
            arrays["path_states"], arrays["path_actions"], arrays["path_lengths"],
            arrays["path_ref_logp"], arrays["pair_chosen"], arrays["pair_rejected"],
            arrays["pair_count"], arrays["explore_path"], arrays["explore_weight"],
            grad_out=self._grad, **self._work,
        )
        return value, self._grad[self.index].copy()

    def update(self, params: np.ndarray, data: PreferenceData, alpha: float, loss: str = "dpo") -> np.ndarray:
        """Minimize the objective over the box, warm-started at ``params``."""
        if self.n_params == 0:
            return params
        result = minimize(
            self.objective, params, args=(data, alpha, loss), jac=True, method="L-BFGS-B",
            bounds=self._bounds,
            options=dict(maxiter=self.max_iter, gtol=self.gtol, ftol=1e-15),
        )
        return result.x


class LogitsClass:
    """Per-state logits added to log π_ref, trained by Adam steps (see module docstring).

    ``steps`` Adam steps per round with learning rate ``lr`` on L / (number of pairs).
    The Adam moments persist across rounds; use one instance per run.
    """

    name = "logits"

    def __init__(self, mdp: TokenMDP, beta: float, *, steps: int = 20, lr: float = 0.1,
                 adam_betas=(0.9, 0.999), adam_eps: float = 1e-8):
        if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
            raise ValueError(f"steps must be an int >= 1, got {steps!r}")
        if not (math.isfinite(lr) and lr > 0):
            raise ValueError(f"lr must be positive and finite, got {lr!r}")
        self.mdp = mdp
        self.beta = check_beta(beta)
        self.steps = int(steps)
        self.lr = float(lr)
        self.adam_betas = tuple(float(b) for b in adam_betas)
        self.adam_eps = float(adam_eps)
        shape = (mdp.n_states, mdp.n_actions)
        self._m = np.zeros(shape)
        self._v = np.zeros(shape)
        self._t = 0
        self._logp = np.empty(shape)
        self._state_weight = np.empty(mdp.n_states)
        self._grad = np.empty(shape)

    @property
    def n_params(self) -> int:
        return int(self.mdp.allowed.sum())

    def initial_params(self) -> np.ndarray:
        return np.zeros((self.mdp.n_states, self.mdp.n_actions))

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
