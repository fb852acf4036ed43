"""Numba kernels over batches of trajectories of a deterministic token MDP.

A batch is three arrays: ``states`` (N, W) and ``actions`` (N, W), padded with ``-1``
after the end of each trajectory, and ``lengths`` (N,). For a per-state table f (S, A)
— rewards, log-probabilities — ``sum_along`` returns Σ_{h < len} f(s_h, a_h), e.g.
log π(τ) = Σ_h log π(a_h|s_h) and r(τ) = Σ_h r(s_h, a_h).

Sampling uses inverse-CDF draws from uniforms the caller generates with a
``numpy.random.Generator``, so results are reproducible and identical with and without
compilation.
"""

import numpy as np
from numba import njit

NEG_INF = -np.inf


@njit(cache=True)
def sample_paths(next_state, logp, start_states, uniforms, states_out, actions_out, lengths_out):
    """Roll out one trajectory per row from ``start_states[i]`` using ``uniforms[i, h]``
    for the step-h action draw. Rows of the outputs are filled with ``-1`` past the end."""
    n_rows, width = uniforms.shape
    n_actions = logp.shape[1]
    for i in range(n_rows):
        s = start_states[i]
        h = 0
        while True:
            total = 0.0
            for a in range(n_actions):
                if logp[s, a] > NEG_INF:
                    total += np.exp(logp[s, a])
            target = uniforms[i, h] * total
            cum = 0.0
            chosen = -1
            last = -1
            for a in range(n_actions):
                if logp[s, a] > NEG_INF:
                    cum += np.exp(logp[s, a])
                    last = a
                    if cum > target:
                        chosen = a
                        break
            if chosen < 0:
                chosen = last
            states_out[i, h] = s
            actions_out[i, h] = chosen
            h += 1
            nxt = next_state[s, chosen]
            if nxt < 0:
                break
            s = nxt
        lengths_out[i] = h
        for k in range(h, width):
            states_out[i, k] = -1
            actions_out[i, k] = -1


@njit(cache=True)
def enumerate_paths(next_state, allowed, start_states, states_out, actions_out, lengths_out):
    """Depth-first enumeration of every complete trajectory from each of ``start_states``
    that follows only ``allowed`` actions, in lexicographic order of actions. The outputs
    must have one row per trajectory (see ``count_paths``); returns the rows written."""
    n_actions = next_state.shape[1]
    width = states_out.shape[1]
    path_s = np.empty(width, dtype=np.int64)
    path_a = np.empty(width, dtype=np.int64)
    row = 0
    for j in range(start_states.shape[0]):
        depth = 0
        path_s[0] = start_states[j]
        path_a[0] = -1
        while depth >= 0:
            s = path_s[depth]
            a = path_a[depth] + 1
            while a < n_actions and not allowed[s, a]:
                a += 1
            if a == n_actions:
                depth -= 1
                continue
            path_a[depth] = a
            nxt = next_state[s, a]
            if nxt < 0:
                for k in range(width):
                    if k <= depth:
                        states_out[row, k] = path_s[k]
                        actions_out[row, k] = path_a[k]
                    else:
                        states_out[row, k] = -1
                        actions_out[row, k] = -1
                lengths_out[row] = depth + 1
                row += 1
            else:
                depth += 1
                path_s[depth] = nxt
                path_a[depth] = -1
    return row


@njit(cache=True)
def sum_along(table, states, actions, lengths, out):
    """out[i] = Σ_{h < lengths[i]} table[states[i, h], actions[i, h]]."""
    for i in range(lengths.shape[0]):
        acc = 0.0
        for h in range(lengths[i]):
            acc += table[states[i, h], actions[i, h]]
        out[i] = acc
