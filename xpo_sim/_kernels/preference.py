"""Numba kernels for the cumulative preference objective of one round, value and gradient.

Data are aggregated: D distinct trajectories (padded ``path_states``/``path_actions``,
``path_lengths``, their reference log-probabilities ``path_ref_logp``), distinct ordered
pairs (``pair_chosen``, ``pair_rejected`` path indices, ``pair_count``) and explored
responses (``explore_path``, ``explore_weight`` = α · count). With the log-ratio
h_k = log π(τ_k) − log π_ref(τ_k) of every distinct trajectory, the objective is

    L = Σ_pairs n · softplus(−β (h_chosen − h_rejected))  +  Σ_explored w · (log π_ref(τ_k) + h_k)

(DPO loss plus XPO's bonus α·log π(ỹ), docs/theory.md; the reference implementation of both
terms is ``xpo_sim.losses``). The pair term may instead be IPO's (h₊ − h₋ − 1/(2β))² or
length-normalized DPO's softplus(−β(h₊/|τ₊| − h₋/|τ₋|)) (``loss_kind``). ``preference_terms`` returns L and ∂L/∂h_k; the two policy
classes then chain through h:

* implicit-reward class, π = soft-optimal policy for a reward table r̂ (S, A):
  h_k = (r̂(τ_k) − V̂(s₀))/β, so ∂h_k/∂r̂(s,a) = (1[(s,a) ∈ τ_k] − d̂(s,a | s₀))/β with
  d̂ the state-action occupancy of π from s₀ — one backward and one forward sweep;
* logits class, log π(a|s) = log_softmax(log π_ref(·|s) + θ(s,·))_a:
  ∂h_k/∂θ(s,a) = Σ_h 1[s_h = s] (1[a_h = a] − π(a|s)).
"""

import numpy as np
from numba import njit

from xpo_sim._kernels.soft import occupancy_forward, policy_probs, soft_by_levels
from xpo_sim._kernels.trajectories import sum_along

NEG_INF = -np.inf


@njit(cache=True)
def _softplus(x):
    if x > 0.0:
        return x + np.log1p(np.exp(-x))
    return np.log1p(np.exp(x))


@njit(cache=True)
def _sigmoid(x):
    if x >= 0.0:
        return 1.0 / (1.0 + np.exp(-x))
    z = np.exp(x)
    return z / (1.0 + z)


LOSS_DPO = 0
LOSS_IPO = 1
LOSS_LN_DPO = 2


@njit(cache=True)
def preference_terms(log_ratio, path_ref_logp, path_lengths, beta, loss_kind, pair_chosen, pair_rejected,
                     pair_count, explore_path, explore_weight, dlog_ratio_out):
    """Return L (see the module docstring) and fill ``dlog_ratio_out`` with ∂L/∂h_k.

    ``loss_kind``: LOSS_DPO, softplus(−β(h₊ − h₋)); LOSS_IPO, (h₊ − h₋ − 1/(2β))²;
    LOSS_LN_DPO, softplus(−β(h₊/|τ₊| − h₋/|τ₋|)). Reference definitions: ``xpo_sim.losses``.
    """
    for k in range(dlog_ratio_out.shape[0]):
        dlog_ratio_out[k] = 0.0
    loss = 0.0
    for j in range(pair_count.shape[0]):
        c = pair_chosen[j]
        r = pair_rejected[j]
        n = pair_count[j]
        if loss_kind == LOSS_IPO:
            gap = log_ratio[c] - log_ratio[r] - 0.5 / beta
            loss += n * gap * gap
            dlog_ratio_out[c] += 2.0 * n * gap
            dlog_ratio_out[r] -= 2.0 * n * gap
        elif loss_kind == LOSS_LN_DPO:
            scale_c = beta / path_lengths[c]
            scale_r = beta / path_lengths[r]
            margin = scale_c * log_ratio[c] - scale_r * log_ratio[r]
            loss += n * _softplus(-margin)
            g = n * _sigmoid(-margin)
            dlog_ratio_out[c] -= g * scale_c
            dlog_ratio_out[r] += g * scale_r
        else:
            margin = beta * (log_ratio[c] - log_ratio[r])
            loss += n * _softplus(-margin)
            g = n * beta * _sigmoid(-margin)
            dlog_ratio_out[c] -= g
            dlog_ratio_out[r] += g
    for e in range(explore_weight.shape[0]):
        k = explore_path[e]
        w = explore_weight[e]
        loss += w * (path_ref_logp[k] + log_ratio[k])
        dlog_ratio_out[k] += w
    return loss


@njit(cache=True)
def implicit_reward_objective(level_order, level_offsets, next_state, ref_logp, beta, loss_kind, reward_hat,
                              path_states, path_actions, path_lengths, path_ref_logp, pair_chosen, pair_rejected,
                              pair_count, explore_path, explore_weight, q_work, v_work, logp_work, prob_work,
                              occ_work, start_work, log_ratio, dlog_ratio, grad_out):
    """Objective L and ∂L/∂r̂ (S, A) for the policy that is soft-optimal for ``reward_hat``.
    On return ``logp_work`` holds that policy's log-probabilities and ``prob_work`` its
    probabilities, ``log_ratio`` and ``dlog_ratio`` (length D) h_k and ∂L/∂h_k (the
    Hessian-vector products of ``xpo_sim._kernels.newton`` start from them).
    ``level_order``/``level_offsets``: ``TokenMDP.levels``. Five steps: the soft sweep,
    π = e^{log π}, :func:`objective_from_values`, the occupancy sweep,
    :func:`subtract_occupancy`; a level-parallel caller (``xpo_sim.policies``) runs the same
    steps with the sweeps of ``_kernels.levels``."""
    soft_by_levels(level_order, level_offsets, next_state, reward_hat, ref_logp, beta, q_work, v_work, logp_work)
    policy_probs(logp_work, prob_work)
    loss = objective_from_values(beta, loss_kind, reward_hat, v_work, path_states, path_actions, path_lengths,
                                 path_ref_logp, pair_chosen, pair_rejected, pair_count, explore_path, explore_weight,
                                 start_work, log_ratio, dlog_ratio, grad_out)
    occupancy_forward(next_state, prob_work, start_work, occ_work)
    subtract_occupancy(prob_work, occ_work, grad_out)
    return loss


@njit(cache=True)
def objective_from_values(beta, loss_kind, reward_hat, v_work, path_states, path_actions, path_lengths,
                          path_ref_logp, pair_chosen, pair_rejected, pair_count, explore_path, explore_weight,
                          start_work, log_ratio, dlog_ratio, grad_out):
    """Given V̂ (``v_work``): h_k = (r̂(τ_k) − V̂(s₀))/β, L and g = ∂L/∂h; then ``grad_out``
    = Σ_k (g_k/β) 1_{τ_k} and ``start_work`` = Σ_k (g_k/β) at each start s₀ (the weights whose
    occupancy :func:`subtract_occupancy` removes). Returns L."""
    n_paths = path_lengths.shape[0]
    sum_along(reward_hat, path_states, path_actions, path_lengths, log_ratio)  # r̂(τ_k)
    for k in range(n_paths):
        log_ratio[k] = (log_ratio[k] - v_work[path_states[k, 0]]) / beta
    loss = preference_terms(log_ratio, path_ref_logp, path_lengths, beta, loss_kind, pair_chosen,
                            pair_rejected, pair_count, explore_path, explore_weight, dlog_ratio)
    n_states, n_actions = reward_hat.shape
    for s in range(n_states):
        start_work[s] = 0.0
        for a in range(n_actions):
            grad_out[s, a] = 0.0
    for k in range(n_paths):
        w = dlog_ratio[k] / beta
        if w == 0.0:
            continue
        start_work[path_states[k, 0]] += w
        for h in range(path_lengths[k]):
            grad_out[path_states[k, h], path_actions[k, h]] += w
    return loss


@njit(cache=True)
def subtract_occupancy(prob_work, occ_work, grad_out):
    """grad(s, a) −= d(s)·π(a|s) (``prob_work`` = π): the −(1/β) Σ g_k d_{s₀ₖ} part of ∂L/∂r̂."""
    n_states, n_actions = prob_work.shape
    for s in range(n_states):
        d = occ_work[s]
        if d == 0.0:
            continue
        for a in range(n_actions):
            grad_out[s, a] -= d * prob_work[s, a]


@njit(cache=True)
def logits_policy(ref_logp, theta, logp_out):
    """log π(a|s) = log_softmax(ref_logp(s,·) + θ(s,·))_a over the allowed tokens."""
    n_states, n_actions = ref_logp.shape
    for s in range(n_states):
        m = NEG_INF
        for a in range(n_actions):
            if ref_logp[s, a] > NEG_INF:
                x = ref_logp[s, a] + theta[s, a]
                if x > m:
                    m = x
        total = 0.0
        for a in range(n_actions):
            if ref_logp[s, a] > NEG_INF:
                total += np.exp(ref_logp[s, a] + theta[s, a] - m)
        lse = m + np.log(total)
        for a in range(n_actions):
            if ref_logp[s, a] > NEG_INF:
                logp_out[s, a] = ref_logp[s, a] + theta[s, a] - lse
            else:
                logp_out[s, a] = NEG_INF


@njit(cache=True)
def logits_objective(ref_logp, beta, loss_kind, theta, path_states, path_actions, path_lengths, path_ref_logp,
                     pair_chosen, pair_rejected, pair_count, explore_path, explore_weight,
                     logp_work, state_weight_work, grad_out):
    """Objective L and ∂L/∂θ (S, A) for the logits-class policy; ``logp_work`` holds it."""
    logits_policy(ref_logp, theta, logp_work)
    n_paths = path_lengths.shape[0]
    log_ratio = np.empty(n_paths)
    sum_along(logp_work, path_states, path_actions, path_lengths, log_ratio)  # log π(τ_k)
    for k in range(n_paths):
        log_ratio[k] -= path_ref_logp[k]
    dlog_ratio = np.empty(n_paths)
    loss = preference_terms(log_ratio, path_ref_logp, path_lengths, beta, loss_kind, pair_chosen,
                            pair_rejected, pair_count, explore_path, explore_weight, dlog_ratio)
    n_states, n_actions = ref_logp.shape
    for s in range(n_states):
        state_weight_work[s] = 0.0
        for a in range(n_actions):
            grad_out[s, a] = 0.0
    for k in range(n_paths):
        w = dlog_ratio[k]
        if w == 0.0:
            continue
        for h in range(path_lengths[k]):
            grad_out[path_states[k, h], path_actions[k, h]] += w
            state_weight_work[path_states[k, h]] += w
    for s in range(n_states):
        c = state_weight_work[s]
        if c == 0.0:
            continue
        for a in range(n_actions):
            if logp_work[s, a] > NEG_INF:
                grad_out[s, a] -= c * np.exp(logp_work[s, a])
    return loss
