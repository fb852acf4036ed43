r"""Slow, obviously correct oracles for the tests (in the spirit of STUMPY's ``tests/naive.py``).

Everything here is plain Python: recursion, loops, ``math.log``/``math.exp`` on Python
floats. Nothing calls an ``xpo_sim`` kernel or wrapper; a :class:`~xpo_sim.TokenMDP` is
only read as a container of arrays, converted to nested lists first.

The central object is the list of every trajectory from a start state,
τ = ((s₀, a₀), (s₁, a₁), …), obtained by recursion over the actions a policy allows.
Trajectory-level quantities (π(τ), r(τ), the optimum π*(τ) ∝ π_ref(τ) e^{r(τ)/β}) are then
plain sums and products over that list — independent of any Bellman recursion.
"""

from __future__ import annotations

import math
from functools import lru_cache

NEG_INF = -math.inf


# --------------------------------------------------------------------------- helpers
def _lists(mdp):
    """The MDP's arrays as nested Python lists (ints and floats)."""
    next_state = [[int(x) for x in row] for row in mdp.next_state]
    reward = [[float(x) for x in row] for row in mdp.reward]
    ref_logp = [[float(x) for x in row] for row in mdp.ref_logp]
    start = [float(x) for x in mdp.start]
    return next_state, reward, ref_logp, start


def _table(table):
    return [[float(x) for x in row] for row in table]


def logsumexp(values):
    """log Σ exp(v) with a max shift; -inf for an empty list or all -inf."""
    values = list(values)
    if not values:
        return NEG_INF
    m = max(values)
    if m == NEG_INF:
        return NEG_INF
    return m + math.log(sum(math.exp(v - m) for v in values))


def support_of(table):
    """Boolean mask (nested lists) of the entries > -inf of a log-probability table."""
    return [[x > NEG_INF for x in row] for row in _table(table)]


# ---------------------------------------------------------------- enumeration
def enumerate_from(next_state, allowed, s0):
    """Every complete trajectory from ``s0`` following only ``allowed`` actions, as tuples
    of (state, action) steps, in lexicographic order of actions (depth first)."""
    out = []

    def rec(s, prefix):
        for a in range(len(next_state[s])):
            if not allowed[s][a]:
                continue
            step = prefix + ((s, a),)
            nxt = next_state[s][a]
            if nxt < 0:
                out.append(step)
            else:
                rec(nxt, step)

    rec(s0, ())
    return out


def start_states(mdp):
    """States with ρ(s) > 0, in increasing order."""
    return [s for s, p in enumerate(_lists(mdp)[3]) if p > 0]


def trajectories(mdp, allowed=None, starts=None):
    """Every trajectory from every start state (default: those with ρ > 0), grouped by start
    state in increasing order; ``allowed`` defaults to the actions π_ref allows."""
    next_state, _, ref_logp, _ = _lists(mdp)
    if allowed is None:
        allowed = [[x > NEG_INF for x in row] for row in ref_logp]
    if starts is None:
        starts = start_states(mdp)
    out = []
    for s0 in starts:
        out.extend(enumerate_from(next_state, allowed, s0))
    return out


def path_sum(table, tau):
    """Σ_h table[s_h][a_h] along the trajectory (plain left-to-right sum)."""
    total = 0.0
    for s, a in tau:
        total += table[s][a]
    return total


def count_paths(next_state, allowed):
    """Number of complete trajectories from every state, by memoized recursion."""
    next_state = [[int(x) for x in row] for row in next_state]
    allowed = [[bool(x) for x in row] for row in allowed]

    @lru_cache(maxsize=None)
    def count(s):
        total = 0
        for a, nxt in enumerate(next_state[s]):
            if allowed[s][a]:
                total += 1 if nxt < 0 else count(nxt)
        return total

    return [count(s) for s in range(len(next_state))]


def longest_paths(next_state, allowed):
    """Largest number of steps to the end from every state (0 where nothing is allowed)."""
    next_state = [[int(x) for x in row] for row in next_state]
    allowed = [[bool(x) for x in row] for row in allowed]

    @lru_cache(maxsize=None)
    def longest(s):
        best = 0
        for a, nxt in enumerate(next_state[s]):
            if allowed[s][a]:
                best = max(best, 1 + (0 if nxt < 0 else longest(nxt)))
        return best

    return [longest(s) for s in range(len(next_state))]


# --------------------------------------------------------- trajectory-level optimum
def optimum_by_enumeration(mdp, beta):
    """The KL-regularized optimum at trajectory level, by enumeration.

    Returns ``(v, logp)``: ``v[s0]`` = β log Σ_τ π_ref(τ) e^{r(τ)/β} for every state s0
    (every state may serve as a start), and ``logp[τ]`` = log π*(τ) = log π_ref(τ) + r(τ)/β
    − v[s0]/β for every trajectory τ from every state.
    """
    next_state, reward, ref_logp, _ = _lists(mdp)
    allowed = [[x > NEG_INF for x in row] for row in ref_logp]
    v = []
    logp = {}
    for s0 in range(len(next_state)):
        taus = enumerate_from(next_state, allowed, s0)
        terms = [path_sum(ref_logp, t) + path_sum(reward, t) / beta for t in taus]
        log_z = logsumexp(terms)
        v.append(beta * log_z)
        for t, x in zip(taus, terms):
            logp[t] = x - log_z
    return v, logp


def soft_bellman(mdp, beta):
    """Q*, V*, log π* by memoized recursion on the soft Bellman equations.

    Q*(s,a) = r(s,a) + V*(s') for every action (allowed or not), V*(end) = 0,
    V*(s) = β log Σ_{allowed a} π_ref(a|s) e^{Q*(s,a)/β},
    log π*(a|s) = log π_ref(a|s) + (Q*(s,a) − V*(s))/β on allowed actions, -inf elsewhere.
    """
    next_state, reward, ref_logp, _ = _lists(mdp)
    n_states, n_actions = len(next_state), len(next_state[0])

    @lru_cache(maxsize=None)
    def value(s):
        terms = [ref_logp[s][a] + q(s, a) / beta for a in range(n_actions) if ref_logp[s][a] > NEG_INF]
        return beta * logsumexp(terms)

    def q(s, a):
        nxt = next_state[s][a]
        return reward[s][a] + (0.0 if nxt < 0 else value(nxt))

    Q = [[q(s, a) for a in range(n_actions)] for s in range(n_states)]
    V = [value(s) for s in range(n_states)]
    logp = [
        [
            ref_logp[s][a] + (Q[s][a] - V[s]) / beta if ref_logp[s][a] > NEG_INF else NEG_INF
            for a in range(n_actions)
        ]
        for s in range(n_states)
    ]
    return Q, V, logp


# ----------------------------------------------------------- policy evaluation
def evaluate_from(mdp, logp, s0):
    """(E r(τ), KL(π(·|s0) ‖ π_ref(·|s0))) over the trajectories of π from ``s0``, by
    enumeration of π's support. KL is +inf when π reaches a token π_ref disallows."""
    next_state, reward, ref_logp, _ = _lists(mdp)
    logp = _table(logp)
    support = [[x > NEG_INF for x in row] for row in logp]
    exp_r = 0.0
    kl = 0.0
    for t in enumerate_from(next_state, support, s0):
        lp = path_sum(logp, t)
        p = math.exp(lp)
        exp_r += p * path_sum(reward, t)
        if any(ref_logp[s][a] == NEG_INF for s, a in t):
            if p > 0:
                kl = math.inf
            continue
        kl += p * (lp - path_sum(ref_logp, t))
    return exp_r, kl


def evaluate(mdp, logp, beta):
    """Naive J_β(π), E r, E KL, averaged over s₀ ∼ ρ, by enumeration.

    J_β(π) = Σ_{s0} ρ(s0) Σ_τ π(τ)[r(τ) − β log(π(τ)/π_ref(τ))].
    Returns a dict with keys ``value``, ``reward``, ``kl``.
    """
    start = _lists(mdp)[3]
    reward = 0.0
    kl = 0.0
    for s0, rho in enumerate(start):
        if rho == 0:
            continue
        r, k = evaluate_from(mdp, logp, s0)
        reward += rho * r
        kl += rho * k
    return {"value": reward - beta * kl, "reward": reward, "kl": kl}


def kl_to_optimum(mdp, logp, beta):
    """E_{s0∼ρ} KL(π(·|s0) ‖ π*(·|s0)) over trajectories, with π*(τ) from
    :func:`optimum_by_enumeration` (never from a Bellman recursion)."""
    next_state, _, _, start = _lists(mdp)
    logp = _table(logp)
    support = [[x > NEG_INF for x in row] for row in logp]
    _, log_opt = optimum_by_enumeration(mdp, beta)
    total = 0.0
    for s0, rho in enumerate(start):
        if rho == 0:
            continue
        kl = 0.0
        for t in enumerate_from(next_state, support, s0):
            lp = path_sum(logp, t)
            if t not in log_opt:  # π puts mass where π* (= π_ref's support) has none
                return math.inf
            kl += math.exp(lp) * (lp - log_opt[t])
        total += rho * kl
    return total


def occupancy(mdp, logp):
    """d(s) = Σ_{s0} ρ(s0) Σ_τ π(τ)·1[s ∈ τ], by enumeration (a state appears at most once
    in a trajectory, since transitions increase the state index)."""
    next_state, _, _, start = _lists(mdp)
    logp = _table(logp)
    support = [[x > NEG_INF for x in row] for row in logp]
    occ = [0.0] * len(next_state)
    for s0, rho in enumerate(start):
        if rho == 0:
            continue
        for t in enumerate_from(next_state, support, s0):
            p = rho * math.exp(path_sum(logp, t))
            for s, _ in t:
                occ[s] += p
    return occ


# ----------------------------------------------------------------- sampling
def inverse_cdf_action(logp_row, u):
    """The action an inverse-CDF draw with uniform ``u`` picks from one row of log-probs:
    the first action (in index order, among those with log-prob > -inf) whose cumulative
    mass exceeds u·(total mass); the last such action if rounding leaves none."""
    total = sum(math.exp(x) for x in logp_row if x > NEG_INF)
    target = u * total
    cum = 0.0
    last = -1
    for a, x in enumerate(logp_row):
        if x > NEG_INF:
            cum += math.exp(x)
            last = a
            if cum > target:
                return a
    return last


def sample_path(next_state, logp, s0, uniforms):
    """One trajectory from ``s0`` drawing the step-h action with ``uniforms[h]``."""
    s = s0
    steps = []
    h = 0
    while True:
        a = inverse_cdf_action(logp[s], uniforms[h])
        steps.append((s, a))
        h += 1
        nxt = next_state[s][a]
        if nxt < 0:
            return tuple(steps)
        s = nxt


# ---------------------------------------------------- stochastic negative control
class StochasticMDP:
    """A small MDP with *stochastic* transitions, for the negative control (identity 7).

    ``transitions[s][a]`` is a list of (probability, next state or -1); every next state
    is larger than ``s``. ``reward[s][a]``, ``ref_logp[s][a]`` (-inf = disallowed) and
    ``start[s]`` as for a TokenMDP.
    """

    def __init__(self, transitions, reward, ref_logp, start):
        self.transitions = transitions
        self.reward = reward
        self.ref_logp = ref_logp
        self.start = start
        self.n_states = len(transitions)
        self.n_actions = len(transitions[0])

    def solve(self, beta):
        """Soft Bellman with expectations over the successor:
        Q(s,a) = r(s,a) + Σ_{s'} P(s'|s,a) V(s'), V(s) = β log Σ_a π_ref e^{Q/β}."""

        @lru_cache(maxsize=None)
        def value(s):
            return beta * logsumexp(
                self.ref_logp[s][a] + q(s, a) / beta
                for a in range(self.n_actions)
                if self.ref_logp[s][a] > NEG_INF
            )

        def q(s, a):
            return self.reward[s][a] + sum(p * (0.0 if nxt < 0 else value(nxt)) for p, nxt in self.transitions[s][a])

        Q = [[q(s, a) for a in range(self.n_actions)] for s in range(self.n_states)]
        V = [value(s) for s in range(self.n_states)]
        logp = [
            [
                self.ref_logp[s][a] + (Q[s][a] - V[s]) / beta if self.ref_logp[s][a] > NEG_INF else NEG_INF
                for a in range(self.n_actions)
            ]
            for s in range(self.n_states)
        ]
        return Q, V, logp

    def expected_next_value(self, V, s, a):
        """E[V(s_{h+1}) | s_h = s, a_h = a] with V(end) = 0."""
        return sum(p * (0.0 if nxt < 0 else V[nxt]) for p, nxt in self.transitions[s][a])

    def trajectories(self, s0):
        """Every (trajectory, transition probability) from ``s0`` over allowed actions;
        a trajectory is a tuple of (s_h, a_h, s_{h+1}) with s_{h+1} = -1 at the end."""
        out = []

        def rec(s, prefix, prob):
            for a in range(self.n_actions):
                if self.ref_logp[s][a] == NEG_INF:
                    continue
                for p, nxt in self.transitions[s][a]:
                    if p == 0:
                        continue
                    step = prefix + ((s, a, nxt),)
                    if nxt < 0:
                        out.append((step, prob * p))
                    else:
                        rec(nxt, step, prob * p)

        rec(s0, (), 1.0)
        return out


# ---------------------------------------------------------------- coverability
def coverability_terminal_closed_form(mdp, beta, box):
    """C_cov of the implicit-reward class with one reward parameter in [lo, hi] per
    response (bandits and token trees with terminal parameters), maximized over prompts.

    C_cov = max_x Σ_τ sup_π π(τ|x) (the infimum over μ is attained at μ ∝ sup_π π), and
    since π_θ(τ|x) ∝ π_ref(τ|x) e^{θ_τ/β}, the supremum for τ puts θ_τ = hi and every other
    response of x at lo:
    sup π(τ|x) = π_ref(τ) e^{hi/β} / (π_ref(τ) e^{hi/β} + (1 − π_ref(τ)) e^{lo/β}),
    with 1 − π_ref(τ) summed over the other responses of x. Raises ValueError when two
    responses end with the same (state, token) — a DAG, whose terminal parameters are
    shared.
    """
    lo, hi = (float(b) for b in box)
    _, _, ref_logp, _ = _lists(mdp)
    taus = trajectories(mdp)
    if len({tau[-1] for tau in taus}) != len(taus):
        raise ValueError("the closed form needs one parameter per response: a tree or bandit, not a DAG")
    by_prompt = {}
    for tau in taus:
        by_prompt.setdefault(tau[0][0], []).append(path_sum(ref_logp, tau))
    gap = (hi - lo) / beta
    totals = []
    for logs in by_prompt.values():
        total = 0.0
        for i, log_ref in enumerate(logs):
            log_other = logsumexp(logs[:i] + logs[i + 1:])
            total += math.exp(log_ref + gap - logsumexp([log_ref + gap, log_other]))
        totals.append(total)
    return max(totals)


# ----------------------------------------------------------------- comparisons
def assert_close(actual, expected, scale=0.0, rtol=1e-9, err_msg=""):
    """Assert |actual − expected| ≤ rtol·(1 + |scale|) elementwise, after checking that both
    have the same non-finite entries (±inf in the same places, no NaN anywhere).

    ``scale`` is the magnitude of the terms the compared quantity was computed from (not
    of its result, which may be a cancellation), so the tolerance is relative to the
    problem's own size. Callers state why ``rtol`` is enough.
    """
    import numpy as np

    actual = np.asarray(actual, dtype=float)
    expected = np.asarray(expected, dtype=float)
    actual, expected, scale = np.broadcast_arrays(actual, expected, np.abs(np.asarray(scale, dtype=float)))
    assert not np.isnan(actual).any(), f"NaN in actual {actual} {err_msg}"
    assert not np.isnan(expected).any(), f"NaN in expected {expected} {err_msg}"
    finite = np.isfinite(expected)
    assert np.array_equal(np.isfinite(actual), finite), f"finite pattern differs: {actual} vs {expected} {err_msg}"
    assert np.array_equal(actual[~finite], expected[~finite]), f"infinite entries differ {err_msg}"
    err = np.abs(actual[finite] - expected[finite])
    tol = rtol * (1.0 + np.where(np.isfinite(scale[finite]), scale[finite], 0.0))
    bad = err > tol
    assert not bad.any(), (
        f"{err_msg}: max error {err.max()} exceeds tolerance; worst at flat index "
        f"{np.argmax(err - tol)}: actual {actual[finite][bad][:5]}, expected {expected[finite][bad][:5]}, "
        f"tol {tol[bad][:5]}"
    )


# ----------------------------------------------------------------- intervals
def bootstrap_slopes(x, curves, aggregate, idx):
    """For each resample (a row of seed indices ``idx``), the least-squares slope of
    log(aggregate of the resampled curves) against log x, one np.polyfit at a time."""
    import numpy as np

    x = np.asarray(x, dtype=float)
    curves = np.asarray(curves, dtype=float)
    out = []
    for rows in idx:
        sample = curves[rows]
        if aggregate == "median":
            agg = np.median(sample, axis=0)
        elif aggregate == "geomean":
            agg = np.exp(np.log(sample).mean(axis=0))
        else:
            agg = sample.mean(axis=0)
        out.append(np.polyfit(np.log(x), np.log(agg), 1)[0])
    return np.array(out)


# ----------------------------------------------------------------- mixtures of policies
def mixture_regret(mdp, logps, beta):
    """β KL(P̄ ‖ P*) over trajectories for the uniform mixture P̄ = (1/T) Σₜ Pᵗ of the
    trajectory distributions of the per-state policies ``logps`` (each within π_ref's
    support): every trajectory enumerated, Pᵗ(τ) = ρ(s₀) Π_h πᵗ(a_h|s_h) summed over t,
    P*(τ) from :func:`optimum_by_enumeration` (no Bellman recursion, no Markov mixture).
    With one policy it is that policy's regret."""
    next_state, _, ref_logp, start = _lists(mdp)
    allowed = [[x > NEG_INF for x in row] for row in ref_logp]
    tables = [_table(t) for t in logps]
    _, log_opt = optimum_by_enumeration(mdp, beta)
    total = 0.0
    for s0, rho in enumerate(start):
        if rho == 0:
            continue
        for tau in enumerate_from(next_state, allowed, s0):
            mass = sum(math.exp(path_sum(t, tau)) for t in tables) / len(tables)  # P̄(τ | s₀)
            if mass > 0:
                total += rho * mass * (math.log(mass) - log_opt[tau])
    return beta * total


# ------------------------------------------------------------- SE-POPO, the authors' code
def _sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


def soft_optimal_trajectory_logp(mdp, reward, beta):
    """{τ: log π(τ|s₀)} for the soft-optimal policy of the (S, A) ``reward`` table,
    π(τ|s₀) = π_ref(τ) e^{r(τ)/β} / Σ_τ' π_ref(τ') e^{r(τ')/β} over the trajectories of s₀,
    every start state with ρ > 0, by enumeration (no Bellman recursion)."""
    next_state, _, ref_logp, _ = _lists(mdp)
    reward = _table(reward)
    allowed = [[x > NEG_INF for x in row] for row in ref_logp]
    out = {}
    for s0 in start_states(mdp):
        taus = enumerate_from(next_state, allowed, s0)
        z = [path_sum(ref_logp, tau) + path_sum(reward, tau) / beta for tau in taus]
        total = logsumexp(z)
        for tau, value in zip(taus, z):
            out[tau] = value - total
    return out


def popo_code_objective(mdp, beta, reward, ref_reward, pairs, explored, alpha):
    """The SE-POPO objective of the authors' code, term by term in plain Python:
    Σ_pairs n·(−log σ(β(h(τ₊) − h(τ₋)))) + Σ_explored c·α(σ(β h(y)) − ½)/β, with
    h(τ) = log π(τ|s₀) − log π_prev(τ|s₀), π and π_prev the soft-optimal policies of the
    (S, A) tables ``reward`` and ``ref_reward`` (:func:`soft_optimal_trajectory_logp`).
    ``pairs``: (τ₊, τ₋, n) with τ tuples of (state, action) steps; ``explored``: (y, c)."""
    logp = soft_optimal_trajectory_logp(mdp, reward, beta)
    logp_prev = soft_optimal_trajectory_logp(mdp, ref_reward, beta)
    total = 0.0
    for chosen, rejected, n in pairs:
        margin = beta * ((logp[chosen] - logp_prev[chosen]) - (logp[rejected] - logp_prev[rejected]))
        total += n * -math.log(_sigmoid(margin))
    for y, c in explored:
        total += c * alpha * (_sigmoid(beta * (logp[y] - logp_prev[y])) - 0.5) / beta
    return total


# ------------------------------------------------------------ coverability, per prompt
def coverability_by_prompt_vertices(mdp, beta, box, parameters):
    """{s₀: Σ_τ sup_θ π_θ(τ|s₀)} for the implicit class with one reward parameter in
    [lo, hi] on each (state, action) of ``parameters`` (0 elsewhere), the supremum taken by
    brute force over all 2^d vertices of the box (for this one-hot class every coordinate
    of a maximizer sits at a bound, so the vertices attain each sup). Trajectories from
    :func:`trajectories`, π_θ(τ|s₀) ∝ π_ref(τ) e^{r_θ(τ)/β}. The maximum over prompts of the
    result is the coverability as a max; Σ ρ(s₀)·result is its ρ-average."""
    import itertools

    lo, hi = (float(b) for b in box)
    next_state, _, ref_logp, start = _lists(mdp)
    parameters = list(parameters)
    best = {}
    for vertex in itertools.product((lo, hi), repeat=len(parameters)):
        reward = [[0.0] * len(row) for row in ref_logp]
        for (s, a), value in zip(parameters, vertex):
            reward[s][a] = value
        for tau, lp in soft_optimal_trajectory_logp(mdp, reward, beta).items():
            best[tau] = max(best.get(tau, 0.0), math.exp(lp))
    out = {}
    for tau, p in best.items():
        out[tau[0][0]] = out.get(tau[0][0], 0.0) + p
    return out


# ----------------------------------------------------------------- global minimum
def grid_minimum(fun, lo, hi, dim, points=401):
    """The minimum of ``fun`` (θ ↦ value) over a uniform grid of ``points`` per coordinate on
    [lo, hi]^dim (dim = 1 or 2, by brute force), refined by a dense grid of the same size on
    the two cells around the best node; returns (value, θ). An upper bound on the box's
    minimum, within the grid's resolution of it."""
    import itertools

    import numpy as np

    def search(lows, highs):
        axes = [np.linspace(lows[k], highs[k], points) for k in range(dim)]
        best, best_theta = np.inf, None
        for theta in itertools.product(*axes):
            value = fun(np.array(theta))
            if value < best:
                best, best_theta = value, np.array(theta)
        return best, best_theta, [(highs[k] - lows[k]) / (points - 1) for k in range(dim)]

    best, theta, step = search([lo] * dim, [hi] * dim)
    lows = [max(lo, theta[k] - step[k]) for k in range(dim)]
    highs = [min(hi, theta[k] + step[k]) for k in range(dim)]
    fine, fine_theta, _ = search(lows, highs)
    return (fine, fine_theta) if fine < best else (best, theta)
