r"""Preference losses over per-sequence log-probabilities, for numpy and torch alike.

Every function takes arrays of *sequence* log-probabilities — log π(τ) = Σ_h log π(a_h|s_h)
of whole responses, one entry per pair or sample — and returns per-pair (or per-sample)
values, except :func:`xpo_objective`, which sums them. Nothing is averaged behind the
caller's back: each reduction is explicit.

For a pair (τ₊, τ₋) of responses to the same prompt, τ₊ preferred, write the implicit
reward differences

    h = (log π(τ₊) − log π_ref(τ₊)) − (log π(τ₋) − log π_ref(τ₋)),      m = β h.

* DPO (Rafailov et al. 2023, "Direct Preference Optimization"):
  ℓ_DPO = −log σ(m) = logaddexp(0, −m). At π = π_ref, m = 0 and ℓ_DPO = log 2.
  ∂ℓ_DPO/∂ log π(τ₊) = −β σ(−m),  ∂ℓ_DPO/∂ log π(τ₋) = +β σ(−m).
* IPO (Azar et al. 2023, "A General Theoretical Paradigm to Understand Learning from Human
  Preferences"): ℓ_IPO = (h − 1/(2τ))², with the paper's regularization τ played by β here.
  At π = π_ref it equals 1/(4β²).
* LN-DPO (length-normalized DPO, as in SimPO's length normalization, Meng et al. 2024,
  here with the reference kept): the implicit rewards are divided by the response lengths,
  m_LN = β[(log π(τ₊) − log π_ref(τ₊))/|τ₊| − (log π(τ₋) − log π_ref(τ₋))/|τ₋|],
  ℓ_LN-DPO = −log σ(m_LN). Equal to DPO with β/|τ| when both lengths are equal.
* XPO bonus (Xie et al. 2024, "Exploratory Preference Optimization", Algorithm 1; the form
  TRL used): for an exploration sample ỹ the term α log π(ỹ) is **added** to the
  *minimized* objective, so minimizing lowers the probability of responses the sampling
  policy already produced (optimism). One round of XPO minimizes

      α Σ_i log π(ỹ_i)  +  Σ_pairs ℓ_DPO(π).

* SELM bonus (Zhang et al. 2024, "Self-Exploring Language Models"): α β log(π(ỹ)/π_ref(ỹ)),
  in the same minimized-objective convention. With α_TRL = α_SELM · β,

      α_TRL log π(ỹ) − α_SELM β log(π(ỹ)/π_ref(ỹ)) = α_TRL log π_ref(ỹ),

  a constant independent of π: the two bonuses have the same minimizers and gradients.
* SE-POPO bonus as its authors' code adds it (``dpo_iteration/wpo.py`` of
  github.com/MYC000801/SE-POPO, ``loss_type == "popo"``; Chen, Chen, Sun and Zhang 2025,
  arXiv 2502.00666): with h(y) = log π(y) − log π_ref(y) for a sampled response y, the
  term α (σ(β h(y)) − ½)/β is **added** to the minimized DPO objective, so minimizing
  lowers the (bounded) implicit-reward preference σ(β h) of what was sampled. Zero at
  π = π_ref; its slope in β h is α σ'(β h)/β ≤ α/(4β).

Backends: every function finds its array namespace with ``array_api_compat`` and uses only
array-API operations, so the same code runs on numpy arrays and torch tensors (gradients flow
through autograd). Inputs must be floating-point arrays of one backend; any float dtype
works and the result keeps the promoted dtype. ``beta`` and ``alpha`` are validated when
they are Python (or numpy) scalars — checking a tensor would cost a device sync, so a tensor
is passed through unchecked.
"""

from __future__ import annotations

import math
import numbers

import array_api_compat

from xpo_sim import checks

__all__ = [
    "log_sigmoid",
    "logsumexp",
    "dpo_margin",
    "dpo_loss",
    "ipo_loss",
    "ln_dpo_loss",
    "xpo_bonus",
    "selm_bonus",
    "popo_bonus",
    "xpo_objective",
]


# --------------------------------------------------------------------------- helpers
def _namespace(**arrays):
    """The array namespace shared by ``arrays``; ValueError unless they are float arrays
    of one backend."""
    try:
        xp = array_api_compat.array_namespace(*arrays.values())
    except TypeError as error:
        raise ValueError(
            f"{', '.join(arrays)} must be arrays of one backend (numpy or torch): {error}"
        ) from None
    for name, array in arrays.items():
        if not xp.isdtype(array.dtype, "real floating"):
            raise ValueError(f"{name} must be a real floating-point array, got dtype {array.dtype}")
    return xp


def _is_scalar(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _check_beta(beta):
    """ValueError unless a scalar ``beta`` is finite and > 0 (tensors pass unchecked)."""
    if isinstance(beta, bool) or _is_scalar(beta):
        checks.positive("beta", beta)
    return beta


def _check_alpha(alpha):
    """ValueError unless a scalar ``alpha`` is finite and ≥ 0 (tensors pass unchecked)."""
    if isinstance(alpha, bool) or _is_scalar(alpha):
        checks.nonnegative("alpha", alpha)
    return alpha


def log_sigmoid(x):
    r"""log σ(x) = −logaddexp(0, −x), elementwise.

    Exact to rounding for every finite x: log_sigmoid(1e3) = 0 (well, −e^{−1000}) and
    log_sigmoid(−1e3) = −1e3, with no overflow. Its derivative is σ(−x).
    """
    xp = _namespace(x=x)
    return -xp.logaddexp(xp.zeros_like(x), -x)


def logsumexp(x, axis: int = -1, keepdims: bool = False):
    r"""log Σ_i exp(x_i) along ``axis``, with a max shift.

    log Σ exp(x) = M + log Σ exp(x − M) with M = max x. A row that is all −inf (or empty)
    gives −inf, not nan, and no warnings; its gradient is 0 (torch's own ``logsumexp``
    gives nan there). A +inf entry gives +inf; a nan entry gives nan.
    """
    xp = _namespace(x=x)
    if x.shape[axis] == 0:
        shift = xp.sum(x, axis=axis, keepdims=True)  # zeros of the reduced shape
    else:
        peak = xp.max(x, axis=axis, keepdims=True)
        shift = xp.where(xp.isfinite(peak), peak, xp.zeros_like(peak))
    total = xp.sum(xp.exp(x - shift), axis=axis, keepdims=True)
    positive = total > 0
    # log only where the sum is positive, so numpy warns of no log(0) and torch's
    # gradient of the masked branch is 0 rather than 0·inf = nan.
    safe_log = xp.log(xp.where(positive, total, xp.ones_like(total)))
    out = xp.where(positive, shift + safe_log, xp.full_like(total, -math.inf))
    if not keepdims:
        out = xp.squeeze(out, axis=axis)
    return out


# ------------------------------------------------------------------------ pair losses
def dpo_margin(logp_chosen, logp_rejected, ref_logp_chosen, ref_logp_rejected, beta):
    r"""The DPO margin m = β[(log π(τ₊) − log π_ref(τ₊)) − (log π(τ₋) − log π_ref(τ₋))].

    β times the difference of implicit rewards of the chosen and the rejected response
    (Rafailov et al. 2023); ℓ_DPO = −log σ(m). Per pair, no reduction.
    """
    _namespace(
        logp_chosen=logp_chosen,
        logp_rejected=logp_rejected,
        ref_logp_chosen=ref_logp_chosen,
        ref_logp_rejected=ref_logp_rejected,
    )
    _check_beta(beta)
    return beta * ((logp_chosen - ref_logp_chosen) - (logp_rejected - ref_logp_rejected))


def dpo_loss(logp_chosen, logp_rejected, ref_logp_chosen, ref_logp_rejected, beta):
    r"""Per-pair DPO loss ℓ = −log σ(m) = logaddexp(0, −m) (Rafailov et al. 2023).

    m = β[(log π(τ₊) − log π_ref(τ₊)) − (log π(τ₋) − log π_ref(τ₋))] is
    :func:`dpo_margin`. ℓ = log 2 at π = π_ref; ∂ℓ/∂ log π(τ₊) = −β σ(−m). Stable for any
    finite m. No reduction.
    """
    margin = dpo_margin(logp_chosen, logp_rejected, ref_logp_chosen, ref_logp_rejected, beta)
    return -log_sigmoid(margin)


def ipo_loss(logp_chosen, logp_rejected, ref_logp_chosen, ref_logp_rejected, beta):
    r"""Per-pair IPO loss (h − 1/(2β))² (Azar et al. 2023, "A General Theoretical Paradigm
    to Understand Learning from Human Preferences").

    h = (log π(τ₊) − log π_ref(τ₊)) − (log π(τ₋) − log π_ref(τ₋)). The paper writes the
    target as τ⁻¹/2 for its regularization strength τ; here τ = β. At π = π_ref it equals
    1/(4β²). No reduction.
    """
    h = dpo_margin(logp_chosen, logp_rejected, ref_logp_chosen, ref_logp_rejected, beta) / beta
    gap = h - 1 / (2 * beta)
    return gap * gap


# ---------------------------------------------------------------------- exploration
def ln_dpo_loss(logp_chosen, logp_rejected, ref_logp_chosen, ref_logp_rejected,
                length_chosen, length_rejected, beta):
    r"""Per-pair length-normalized DPO loss −log σ(m_LN) with
    m_LN = β[(log π(τ₊) − log π_ref(τ₊))/|τ₊| − (log π(τ₋) − log π_ref(τ₋))/|τ₋|]
    (length normalization of the implicit reward, Meng et al. 2024, "SimPO", kept here
    with the reference policy). ``length_*``: number of tokens of each response (≥ 1; any
    array or sequence, converted to the log-probabilities' backend). No reduction.
    """
    xp = _namespace(
        logp_chosen=logp_chosen,
        logp_rejected=logp_rejected,
        ref_logp_chosen=ref_logp_chosen,
        ref_logp_rejected=ref_logp_rejected,
    )
    _check_beta(beta)
    device = array_api_compat.device(logp_chosen)
    # lengths are data, not parameters: bring them to the log-probabilities' backend and dtype
    length_chosen = xp.asarray(length_chosen, dtype=logp_chosen.dtype, device=device)
    length_rejected = xp.asarray(length_rejected, dtype=logp_chosen.dtype, device=device)
    margin = beta * ((logp_chosen - ref_logp_chosen) / length_chosen
                     - (logp_rejected - ref_logp_rejected) / length_rejected)
    return -log_sigmoid(margin)


def xpo_bonus(logp_explore, alpha):
    r"""Per-sample XPO bonus α log π(ỹ), the term **added** to the minimized objective.

    Xie et al. 2024, "Exploratory Preference Optimization", Algorithm 1 (the form TRL
    implemented): with α > 0 minimizing it lowers π on the exploration samples ỹ already
    drawn, i.e. moves mass to responses not yet seen. α = 0 recovers DPO. No reduction.
    """
    _namespace(logp_explore=logp_explore)
    _check_alpha(alpha)
    return alpha * logp_explore


def selm_bonus(logp_explore, ref_logp_explore, alpha, beta):
    r"""Per-sample SELM bonus α β (log π(ỹ) − log π_ref(ỹ)), added to the minimized
    objective (Zhang et al. 2024, "Self-Exploring Language Models").

    With α_TRL = α_SELM β, :func:`xpo_bonus` minus this equals α_TRL log π_ref(ỹ), a
    constant independent of π, so the two forms have the same minimizers and gradients in π.
    No reduction.
    """
    _namespace(logp_explore=logp_explore, ref_logp_explore=ref_logp_explore)
    _check_alpha(alpha)
    _check_beta(beta)
    return alpha * beta * (logp_explore - ref_logp_explore)


def popo_bonus(logp_explore, ref_logp_explore, alpha, beta):
    r"""Per-sample SE-POPO bonus of the authors' code, α (σ(β(log π(y) − log π_ref(y))) − ½)/β,
    the term **added** to the minimized objective.

    From ``dpo_iteration/wpo.py`` (``loss_type == "popo"``) of github.com/MYC000801/SE-POPO,
    the code of Chen, Chen, Sun and Zhang 2025 (arXiv 2502.00666), where y is the second
    of the two responses sampled for the pair and π_ref the model the iteration started
    from. Zero at π = π_ref; bounded in (−α/(2β), α/(2β)). No reduction.
    """
    xp = _namespace(logp_explore=logp_explore, ref_logp_explore=ref_logp_explore)
    _check_alpha(alpha)
    _check_beta(beta)
    preference = xp.exp(log_sigmoid(beta * (logp_explore - ref_logp_explore)))
    return alpha * (preference - 0.5) / beta


def xpo_objective(
    logp_chosen, logp_rejected, ref_logp_chosen, ref_logp_rejected, logp_explore, beta, alpha
):
    r"""One XPO round's objective, a scalar: Σ_pairs ℓ_DPO + α Σ_i log π(ỹ_i).

    Xie et al. 2024, Algorithm 1: the DPO term runs over every preference pair so far and
    the bonus over every exploration sample ỹ so far (the two arrays may differ in length).
    Sums, not means, as the paper writes it. Returns a 0-d value of the inputs' backend (a
    0-d tensor for torch, a numpy scalar for numpy).
    """
    xp = _namespace(
        logp_chosen=logp_chosen,
        logp_rejected=logp_rejected,
        ref_logp_chosen=ref_logp_chosen,
        ref_logp_rejected=ref_logp_rejected,
        logp_explore=logp_explore,
    )
    pairs = dpo_loss(logp_chosen, logp_rejected, ref_logp_chosen, ref_logp_rejected, beta)
    bonus = xpo_bonus(logp_explore, alpha)
    return xp.sum(pairs) + xp.sum(bonus)
