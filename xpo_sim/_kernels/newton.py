r"""Second-order terms of the reward classes' round objective: exact Hessian-vector products.

The objective of ``xpo_sim._kernels.preference`` depends on the reward table r̂ through the
log-ratios h_k = (r̂(τ_k) − V̂(s₀ₖ))/β of the distinct data trajectories, and the pair term
is a sum over pairs j = (c, r) of ℓ_j(a_c h_c + a_r h_r): DPO has (a_c, a_r) = (β, −β) and
ℓ = n·softplus(−m); IPO (1, −1) and n(m − 1/(2β))²; LN-DPO (β/|τ_c|, −β/|τ_r|) and
n·softplus(−m). With κ_j = ℓ_j''(m_j) and g_k = ∂L/∂h_k (bonus included), the Hessian with
respect to r̂ applied to a tangent ṙ is

    H ṙ = J_hᵀ (Σ_j κ_j a_j a_jᵀ) J_h ṙ  −  (1/β) Σ_{s₀} c(s₀) ḋ_{s₀},    c(s₀) = Σ_{k: start s₀} g_k,

where J_h ṙ has entries (ṙ(τ_k) − V̇(s₀ₖ))/β, J_hᵀ u = (1/β)(Σ_k u_k 1_{τ_k} − Σ_k u_k d_{s₀ₖ})
with d_{s₀} the state-action occupancy of π from s₀ (∇V̂(s₀) = d_{s₀}), and ḋ is the
derivative of that occupancy along ṙ (∇²V̂(s₀) ṙ = ḋ_{s₀}). Forward-mode through the soft
Bellman sweep gives the tangents:

    V̇(s) = Σ_a π(a|s) (ṙ(s,a) + V̇(s')),           (one backward sweep)
    ḋ(s,a) = μ̇(s) π(a|s) + μ(s) π(a|s) (ṙ(s,a) + V̇(s') − V̇(s))/β,   μ̇(s') = Σ ḋ(s,a) → s'
                                                      (one forward sweep, fused with J_hᵀ's)

So one product costs one backward and one forward sweep plus the path sums. Every kernel
writes into caller-allocated arrays.
"""

import numpy as np
from numba import njit

from xpo_sim._kernels.preference import LOSS_IPO, LOSS_LN_DPO, _sigmoid
from xpo_sim._kernels.soft import NO_ORDER, occupancy_forward
from xpo_sim._kernels.trajectories import sum_along

@njit(cache=True)
def pair_curvatures(log_ratio, path_lengths, beta, loss_kind, pair_chosen, pair_rejected, pair_count,
                    coef_chosen_out, coef_rejected_out, curvature_out):
    """Per pair j: the margin's coefficients (a_c, a_r) on (h_c, h_r) and κ_j = ℓ_j''(m_j)
    (see the module docstring) at the log-ratios ``log_ratio``."""
    for j in range(pair_count.shape[0]):
        c = pair_chosen[j]
        r = pair_rejected[j]
        n = pair_count[j]
        if loss_kind == LOSS_IPO:
            coef_chosen_out[j] = 1.0
            coef_rejected_out[j] = -1.0
            curvature_out[j] = 2.0 * n
            continue
        if loss_kind == LOSS_LN_DPO:
            a_c = beta / path_lengths[c]
            a_r = -beta / path_lengths[r]
        else:
            a_c = beta
            a_r = -beta
        margin = a_c * log_ratio[c] + a_r * log_ratio[r]
        coef_chosen_out[j] = a_c
        coef_rejected_out[j] = a_r
        curvature_out[j] = n * _sigmoid(margin) * _sigmoid(-margin)


@njit(cache=True)
def reward_hvp(next_state, prob, beta, tangent, path_states, path_actions, path_lengths, pair_chosen,
               pair_rejected, coef_chosen, coef_rejected, curvature, dlog_ratio, vdot_work, occ_u_work,
               occ_c_work, occdot_work, hv_out):
    """H ṙ for the reward table ``tangent`` = ṙ (S, A) at the policy with probabilities
    ``prob`` = π (S, A) (the soft-optimal policy of the current r̂, ``policy_probs`` of its
    log π), given the pairs' curvatures and g = ∂L/∂h
    (``dlog_ratio``); writes (S, A) into ``hv_out``. Three steps: the tangent sweep
    (:func:`vdot_block` over every state), :func:`hvp_paths`, the fused forward sweep
    (:func:`hvp_forward`); a level-parallel caller (``xpo_sim.policies``) runs the same
    steps with the sweeps of ``_kernels.levels``."""
    vdot_block(NO_ORDER, 0, prob.shape[0], next_state, prob, tangent, vdot_work)
    hvp_paths(prob, beta, tangent, path_states, path_actions, path_lengths, pair_chosen, pair_rejected, coef_chosen,
              coef_rejected, curvature, dlog_ratio, vdot_work, occ_u_work, occ_c_work, occdot_work, hv_out)
    hvp_forward(next_state, prob, beta, tangent, vdot_work, occ_u_work, occ_c_work, occdot_work, hv_out)


@njit(cache=True)
def vdot_block(order, lo, hi, next_state, prob, tangent, vdot_out):
    """V̇(s) = Σ_a π(a|s) (ṙ(s,a) + V̇(s')) for a block of states (``order[lo:hi]``, or
    hi − 1 … lo when ``order`` is empty, as in ``_kernels.soft.soft_block``): the tangent
    sweep, shared by the serial and the level-parallel product."""
    for i in range(lo, hi):
        s = order[i] if order.shape[0] > 0 else hi - 1 - (i - lo)
        total = 0.0
        for a in range(prob.shape[1]):
            p = prob[s, a]
            if p == 0.0:
                continue
            nxt = next_state[s, a]
            q_dot = tangent[s, a]
            if nxt >= 0:
                q_dot += vdot_out[nxt]
            total += p * q_dot
        vdot_out[s] = total


@njit(cache=True)
def hvp_paths(prob, beta, tangent, path_states, path_actions, path_lengths, pair_chosen, pair_rejected, coef_chosen,
              coef_rejected, curvature, dlog_ratio, vdot_work, occ_u_work, occ_c_work, occdot_work, hv_out):
    """Given V̇: J_h ṙ, u = (Σ_j κ_j a_j a_jᵀ) J_h ṙ, and the path terms — ``hv_out`` =
    Σ_k (u_k/β) 1_{τ_k}, the start weights u and g of the forward sweep in ``occ_u_work`` and
    ``occ_c_work`` (``occdot_work`` zeroed)."""
    n_states, n_actions = prob.shape
    n_paths = path_lengths.shape[0]
    jv = np.empty(n_paths)
    sum_along(tangent, path_states, path_actions, path_lengths, jv)
    for k in range(n_paths):
        jv[k] = (jv[k] - vdot_work[path_states[k, 0]]) / beta
    u = np.zeros(n_paths)
    for j in range(curvature.shape[0]):
        c = pair_chosen[j]
        r = pair_rejected[j]
        w = curvature[j] * (coef_chosen[j] * jv[c] + coef_rejected[j] * jv[r])
        u[c] += coef_chosen[j] * w
        u[r] += coef_rejected[j] * w
    # J_hᵀ u and −(1/β) ḋ_c: scatter along the paths, then one fused forward sweep
    for s in range(n_states):
        occ_u_work[s] = 0.0
        occ_c_work[s] = 0.0
        occdot_work[s] = 0.0
        for a in range(n_actions):
            hv_out[s, a] = 0.0
    for k in range(n_paths):
        s0 = path_states[k, 0]
        occ_u_work[s0] += u[k]
        occ_c_work[s0] += dlog_ratio[k]
        w = u[k] / beta
        if w == 0.0:
            continue
        for h in range(path_lengths[k]):
            hv_out[path_states[k, h], path_actions[k, h]] += w


@njit(cache=True)
def hvp_forward(next_state, prob, beta, tangent, vdot_work, occ_u_work, occ_c_work, occdot_work, hv_out):
    """The fused forward sweep of the product (serial, pushing): occupancies μ_u, μ_c and
    the tangent μ̇ flow forward, and hv(s, a) −= (d_u + ḋ)/β (module docstring)."""
    for s in range(prob.shape[0]):
        hvp_row(s, True, next_state, prob, beta, tangent, vdot_work, occ_u_work, occ_c_work, occdot_work, hv_out)


@njit(cache=True)
def hvp_row(s, push, next_state, prob, beta, tangent, vdot, occ_u, occ_c, occdot, hv_out):
    """State s of the fused forward sweep, its occupancies (μ_u, μ_c, μ̇)(s) final: per token
    with p = π(a|s) > 0 (``prob``), q̇ = ṙ(s,a) + V̇(s'), d_u = μ_u p, d_c = μ_c p,
    ḋ = μ̇ p + d_c (q̇ − V̇(s))/β; hv(s, a) −= (d_u + ḋ)/β, and with ``push`` (the serial
    sweep) (d_u, d_c, ḋ) are added to the occupancies of s' (the level-parallel sweep pulls
    them instead, ``_kernels.levels.hvp_forward_pull``)."""
    mu_u = occ_u[s]
    mu_c = occ_c[s]
    mu_dot = occdot[s]
    if mu_u == 0.0 and mu_c == 0.0 and mu_dot == 0.0:
        return
    v_dot = vdot[s]
    for a in range(prob.shape[1]):
        p = prob[s, a]
        if p == 0.0:
            continue
        nxt = next_state[s, a]
        q_dot = tangent[s, a]
        if nxt >= 0:
            q_dot += vdot[nxt]
        d_u = mu_u * p
        d_c = mu_c * p
        d_dot = mu_dot * p + d_c * (q_dot - v_dot) / beta
        hv_out[s, a] -= (d_u + d_dot) / beta
        if push and nxt >= 0:
            occ_u[nxt] += d_u
            occ_c[nxt] += d_c
            occdot[nxt] += d_dot


@njit(cache=True)
def reward_hessian_diagonal(next_state, prob, beta, path_states, path_actions, path_lengths, pair_chosen,
                            pair_rejected, coef_chosen, coef_rejected, curvature, dlog_ratio, occ_work,
                            diag_out):
    """The diagonal estimate of :func:`hessian_diagonal_pairs` plus the occupancy of its
    |c|-weighted starts, d_c = Σ |c(s₀)| d_{s₀} ≥ Σ |c(s₀)| d_{s₀}(1 − d_{s₀}), times
    π/β² (:func:`add_occupancy_diagonal`); a level-parallel caller runs the occupancy
    sweep of ``_kernels.levels`` in between instead."""
    start = hessian_diagonal_pairs(beta, path_states, path_actions, path_lengths, pair_chosen, pair_rejected,
                                   coef_chosen, coef_rejected, curvature, dlog_ratio, diag_out)
    occupancy_forward(next_state, prob, start, occ_work)
    add_occupancy_diagonal(prob, beta, occ_work, diag_out)


@njit(cache=True)
def hessian_diagonal_pairs(beta, path_states, path_actions, path_lengths, pair_chosen, pair_rejected, coef_chosen,
                           coef_rejected, curvature, dlog_ratio, diag_out):
    """The pair part of a positive estimate of the Hessian's diagonal over r̂ (S, A), for
    preconditioning:
    Σ_j κ_j (a_c² 1_{τ_c} + a_r² 1_{τ_r})/β² (the Gauss–Newton part without the
    occupancy terms, which cancel between the two responses of a DPO pair) plus
    Σ_{s₀} |c(s₀)| d_{s₀}(s,a)/β², which bounds the log-partition part |c| d(1 − d)/β²
    (the variance of the step indicator) and matches it for responses of small mass — the
    coordinates whose tiny gradients make first-order methods crawl. Fills ``diag_out`` with
    the pair part and returns the start weights |c(s₀)| (S,)."""
    n_states, n_actions = diag_out.shape
    for s in range(n_states):
        for a in range(n_actions):
            diag_out[s, a] = 0.0
    # divide by β twice, never by β² (which underflows to 0 below β ≈ 1e-162; the DPO
    # coefficients are ±β, so (coef/β)² = 1 exactly)
    for j in range(curvature.shape[0]):
        for k, coef in ((pair_chosen[j], coef_chosen[j]), (pair_rejected[j], coef_rejected[j])):
            scaled = coef / beta
            w = curvature[j] * scaled * scaled
            for h in range(path_lengths[k]):
                diag_out[path_states[k, h], path_actions[k, h]] += w
    start = np.zeros(n_states)
    for k in range(path_lengths.shape[0]):
        start[path_states[k, 0]] += dlog_ratio[k]  # c(s₀)
    for s in range(n_states):
        start[s] = abs(start[s])
    return start


@njit(cache=True)
def add_occupancy_diagonal(prob, beta, occ_work, diag_out):
    """diag(s, a) += d_c(s) π(a|s)/β², d_c the occupancy of the |c|-weighted starts
    (``prob`` = π)."""
    n_states, n_actions = prob.shape
    for s in range(n_states):
        mu = occ_work[s]
        if mu == 0.0:
            continue
        for a in range(n_actions):
            p = prob[s, a]
            if p > 0.0:
                diag_out[s, a] += mu * p / beta / beta
