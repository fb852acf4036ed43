"""Coverability C_cov(Π) = max_x Σ_τ sup_{θ∈Θ} π_θ(τ|x) of the reward classes
(``xpo_sim.metrics.coverability``) against a closed form, brute-force maximization by
enumeration, identities of the definition, and the structured instance families."""

import math
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy.optimize import minimize

import naive
import xpo_sim
from naive import assert_close
from strategies import betas, mdps, random_dags, token_trees
from xpo_sim import envs
from xpo_sim.metrics import coverability
from xpo_sim.policies import make_policy_class

# boxes lo ≤ hi with lo in [-2, 1] and width in [0, 2] (width 0: a single policy)
boxes = st.tuples(st.floats(-2.0, 1.0), st.floats(0.0, 2.0)).map(lambda t: (t[0], t[0] + t[1]))
moderate_betas = st.floats(math.log(0.2), math.log(2.0)).map(math.exp)


@st.composite
def dense_features(draw, mdp, max_dim: int = 3):
    d = draw(st.integers(1, max_dim))
    return draw(hnp.arrays(np.float64, (mdp.n_states, mdp.n_actions, d), elements=st.floats(-1.0, 1.0)))


@st.composite
def small_dags(draw):
    """A small random DAG: the hypothesis strategy or the ``random_dag`` family."""
    if draw(st.booleans()):
        return draw(random_dags(max_states=5, max_actions=3))
    n_states, n_actions = draw(st.integers(1, 5)), draw(st.integers(1, 3))
    return envs.random_dag(n_states, n_actions, n_prompts=draw(st.integers(1, n_states)),
                           p_end=draw(st.sampled_from([0.0, 0.2, 0.5])), seed=draw(st.integers(0, 2**16)))


def per_prompt_counts(details):
    """Number of trajectories and of distinct groups (prompt, Φ) of each prompt."""
    starts = details.batch.start_states
    counts = {int(x): int((starts == x).sum()) for x in np.unique(starts)}
    groups = {int(x): np.unique(details.group[starts == x]).size for x in np.unique(starts)}
    return counts, groups


# ----------------------------------------------------------------- the closed form
@given(mdp=token_trees(), beta=betas, box=boxes)
def test_terminal_class_matches_closed_form_on_trees(mdp, beta, box):
    """One parameter per response: the supremum for τ is the vertex θ_τ = hi, lo elsewhere."""
    details = coverability(mdp, beta, box=box, support="terminal", return_details=True)
    expected = naive.coverability_terminal_closed_form(mdp, beta, box)
    # the log-space terms are of size (hi − lo)/β + |log π_ref|
    assert_close(details.value, expected, rtol=1e-10, scale=expected)
    assert details.n_optimized == 0 and details.max_gap == 0.0


@given(n_responses=st.integers(1, 12), n_prompts=st.integers(1, 3), seed=st.integers(0, 2**16),
       temperature=st.floats(0.2, 3.0), beta=betas, box=boxes)
def test_terminal_class_matches_closed_form_on_bandits(n_responses, n_prompts, seed, temperature, beta, box):
    mdp = envs.bandit(n_responses, n_prompts, ref_temperature=temperature, seed=seed)
    expected = naive.coverability_terminal_closed_form(mdp, beta, box)
    assert_close(coverability(mdp, beta, box=box), expected, rtol=1e-10, scale=expected)  # "auto" = terminal


# -------------------------------------------------------------- brute force
def brute_force_sup_logp(mdp, cls, batch, seed=0):
    """max_θ log π_θ(τ|x) for every enumerated τ, by a generic search: the log-probability
    of every τ from ``cls.policy_logp(θ)`` and ``trajectory_logp`` at many θ (a grid for
    d ≤ 2, every vertex for d ≤ 12, random points), then, per τ, a bounded quasi-Newton
    search with finite-difference gradients from its best point."""
    lo, hi = cls.box
    d = cls.n_params
    rng = np.random.default_rng(seed)
    candidates = [rng.uniform(lo, hi, size=(64, d))]
    if d <= 2:
        axis = np.linspace(lo, hi, 41)
        candidates.append(np.stack(np.meshgrid(*[axis] * d), -1).reshape(-1, d))
    if d <= 12:
        candidates.append(lo + (hi - lo) * ((np.arange(2**d)[:, None] >> np.arange(d)) & 1))
    candidates = np.vstack(candidates)

    def logp_all(theta):
        return xpo_sim.trajectory_logp(mdp, cls.policy_logp(theta), batch)

    values = np.array([logp_all(theta) for theta in candidates])  # (K, N)
    best = values.max(axis=0)
    if hi > lo:
        for i, k in enumerate(values.argmax(axis=0)):
            result = minimize(lambda t: -logp_all(t)[i], candidates[k], method="L-BFGS-B",
                              bounds=[(lo, hi)] * d, options=dict(ftol=1e-14, gtol=1e-10))
            best[i] = max(best[i], -result.fun)
    return best


def check_against_brute_force(mdp, beta, policy, **options):
    details = coverability(mdp, beta, policy, return_details=True, **options)
    cls = make_policy_class(mdp, beta, policy, **options)
    best = brute_force_sup_logp(mdp, cls, details.batch)
    ours = np.log(details.sup_prob)
    # ours is a supremum: never below a feasible point (up to rounding of the two routes) …
    assert (ours >= best - 1e-9 * (1 + np.abs(best))).all(), (ours - best).min()
    # … and the generic search reaches it (finite-difference accuracy)
    assert_close(ours, best, rtol=1e-6, scale=np.abs(best))
    starts = details.batch.start_states
    brute = max(np.exp(best[starts == x]).sum() for x in np.unique(starts))
    assert_close(details.value, brute, rtol=1e-6, scale=brute)
    return details


@settings(max_examples=12)
@given(data=st.data(), beta=moderate_betas, box=boxes)
def test_linear_class_against_brute_force(data, beta, box):
    mdp = data.draw(small_dags())
    features = data.draw(dense_features(mdp))
    details = check_against_brute_force(mdp, beta, "linear", features=features, box=box)
    assert details.max_gap <= 1e-9


@settings(max_examples=8)
@given(mdp=small_dags(), beta=moderate_betas, box=boxes)
def test_implicit_class_on_every_token_against_brute_force(mdp, beta, box):
    details = check_against_brute_force(mdp, beta, "implicit", support="all", box=box)
    assert details.n_optimized == 0  # one-hot features: every maximizer is a vertex


def test_interior_maximizers_are_found():
    """A fixed instance whose maximizers are interior points of a wide box (Φ(τ) inside the
    convex hull of the other Φ): the optimizer runs and its certified gap is tiny."""
    mdp = envs.random_dag(5, 3, seed=3, p_end=0.3)
    rng = np.random.default_rng(0)
    features = rng.uniform(-1, 1, size=(mdp.n_states, mdp.n_actions, 2))
    details = check_against_brute_force(mdp, 0.5, "linear", features=features, box=(-20.0, 20.0))
    assert details.n_optimized > 0 and details.max_gap <= 1e-9


# -------------------------------------------------------------------- identities
@given(data=st.data(), beta=betas, box=boxes)
def test_bounds_and_lower_bound_by_any_policy(data, beta, box):
    """1 ≤ C_cov ≤ (distinct Φ of a prompt) ≤ (trajectories of a prompt); every sup is at
    least π_θ(τ|x) for any θ in the box; per-prompt totals add up."""
    mdp = data.draw(mdps())
    if data.draw(st.booleans()):
        policy, options = "linear", dict(features=data.draw(dense_features(mdp)), box=box)
    else:
        policy, options = "implicit", dict(support=data.draw(st.sampled_from(["terminal", "all"])), box=box)
    details = coverability(mdp, beta, policy, return_details=True, **options)
    counts, groups = per_prompt_counts(details)
    for x, total in details.per_prompt.items():
        assert 1.0 - 1e-9 <= total <= groups[x] + 1e-9 and groups[x] <= counts[x]
    assert details.value == max(details.per_prompt.values())
    starts = details.batch.start_states
    for x, total in details.per_prompt.items():
        assert_close(details.sup_prob[starts == x].sum(), total, rtol=1e-12, scale=total)
    assert ((details.sup_prob > 0) & (details.sup_prob <= 1)).all()
    cls = make_policy_class(mdp, beta, policy, **options)
    rng = np.random.default_rng(0)
    for theta in rng.uniform(*box, size=(5, cls.n_params)):
        probs = np.exp(xpo_sim.trajectory_logp(mdp, cls.policy_logp(theta), details.batch))
        assert (probs <= details.sup_prob * (1 + 1e-9) + 1e-300).all()


@given(mdp=mdps(), beta=betas, c=st.floats(-2.0, 2.0), policy=st.sampled_from(["implicit", "linear"]))
def test_a_single_policy_has_coverability_one(mdp, beta, c, policy):
    """Box (c, c): the class is one policy (π_ref when c = 0), so μ = π gives C_cov = 1."""
    options = dict(features=np.ones((mdp.n_states, mdp.n_actions, 2))) if policy == "linear" else {}
    assert_close(coverability(mdp, beta, policy, box=(c, c), **options), 1.0, rtol=1e-12, scale=abs(c) / beta)


@given(data=st.data(), beta=betas, box=boxes)
def test_constant_features(data, beta, box):
    """φ ≡ v: Φ(τ) = len(τ)·v, so C_cov ≤ the number of distinct lengths, and exactly 1
    when every response has the same length (bandits, complete trees)."""
    mdp = data.draw(mdps())
    v = np.array(data.draw(st.lists(st.floats(-1.0, 1.0), min_size=1, max_size=3)))
    features = np.broadcast_to(v, (mdp.n_states, mdp.n_actions, v.size)).copy()
    details = coverability(mdp, beta, "linear", features=features, box=box, return_details=True)
    starts, lengths = details.batch.start_states, details.batch.lengths
    for x, total in details.per_prompt.items():
        assert total <= np.unique(lengths[starts == x]).size + 1e-9
    tree = envs.token_tree(data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3)), seed=data.draw(st.integers(0, 99)))
    features = np.broadcast_to(v, (tree.n_states, tree.n_actions, v.size)).copy()
    assert_close(coverability(tree, beta, "linear", features=features, box=box), 1.0, rtol=1e-12,
                 scale=(box[1] - box[0]) * np.abs(v).sum() * tree.horizon / beta)


@settings(max_examples=25)
@given(data=st.data(), beta=moderate_betas, box=boxes, c=st.floats(0.25, 4.0))
def test_reparametrizations_leave_the_class_unchanged(data, beta, box, c):
    """The class depends on (φ, box, β) only through the set of rewards θ·φ/β:
    φ → cφ with box/c; φ → −φ with −box; β → cβ with c·box; a duplicated column [φ, φ]
    with box (lo, hi) is 2φ with the same box (a flat direction for the optimizer)."""
    mdp = data.draw(small_dags())
    phi = data.draw(dense_features(mdp, max_dim=2))
    lo, hi = box
    base = coverability(mdp, beta, "linear", features=phi, box=box)
    tol = dict(rtol=1e-7, scale=base)
    assert_close(coverability(mdp, beta, "linear", features=c * phi, box=(lo / c, hi / c)), base, **tol)
    assert_close(coverability(mdp, beta, "linear", features=-phi, box=(-hi, -lo)), base, **tol)
    assert_close(coverability(mdp, c * beta, "linear", features=phi, box=(c * lo, c * hi)), base, **tol)
    twice = coverability(mdp, beta, "linear", features=2 * phi, box=box)
    assert_close(coverability(mdp, beta, "linear", features=np.concatenate([phi, phi], -1), box=box), twice,
                 rtol=1e-7, scale=twice)


@given(mdp=mdps(), beta=betas, box=boxes, support=st.sampled_from(["terminal", "all"]))
def test_one_hot_linear_class_is_the_implicit_class(mdp, beta, box, support):
    implicit = make_policy_class(mdp, beta, "implicit", box=box, support=support)
    expected = coverability(mdp, beta, implicit)
    assert_close(coverability(mdp, beta, "linear", features=implicit.features, box=box), expected, rtol=1e-12,
                 scale=expected)
    assert_close(coverability(mdp, beta, "implicit", box=box, support=support), expected, rtol=0.0)


@given(data=st.data(), beta=betas, box=boxes, grow=st.tuples(st.floats(0.0, 1.0), st.floats(0.0, 1.0)))
def test_monotone_in_the_box(data, beta, box, grow):
    """A larger box is a larger class, so a larger coverability."""
    mdp = data.draw(mdps())
    features = data.draw(dense_features(mdp))
    small = coverability(mdp, beta, "linear", features=features, box=box)
    large = coverability(mdp, beta, "linear", features=features, box=(box[0] - grow[0], box[1] + grow[1]))
    assert large >= small * (1 - 1e-9)


def test_rho_mean_and_defaults():
    """The ρ-average of the per-prompt values is at most C_cov; the implicit default box
    spans the true reward and 0."""
    mdp = envs.bandit(6, n_prompts=3, seed=2)
    details = coverability(mdp, 0.3, return_details=True)
    assert details.rho_mean <= details.value
    assert_close(details.rho_mean, np.mean(list(details.per_prompt.values())), rtol=1e-12, scale=details.value)
    lo, hi = min(0.0, mdp.reward.min()), max(0.0, mdp.reward.max())
    assert details.value == coverability(mdp, 0.3, box=(lo, hi))


# -------------------------------------------------------------------- validation
def test_clear_errors():
    mdp = envs.token_tree(4, 3)  # 64 trajectories
    with pytest.raises(ValueError, match="logits.*unbounded"):
        coverability(mdp, 0.1, "logits")
    with pytest.raises(ValueError, match="logits.*unbounded"):
        coverability(mdp, 0.1, make_policy_class(mdp, 0.1, "logits"))
    with pytest.raises(ValueError, match=r"64 .*max_trajectories=10"):
        coverability(mdp, 0.1, max_trajectories=10)
    for bad in [(1.0, 0.0), (0.0, math.inf), (math.nan, 1.0), (0.0,), "ab"]:
        with pytest.raises(ValueError, match="box"):
            coverability(mdp, 0.1, box=bad)
    with pytest.raises(ValueError, match="keyword"):
        coverability(mdp, 0.1, (0.0, 1.0))  # the old positional box
    with pytest.raises(ValueError, match="features= goes with the linear class"):
        coverability(mdp, 0.1, "implicit", features=np.ones((mdp.n_states, mdp.n_actions, 1)))
    with pytest.raises(ValueError, match="support= goes with the implicit class"):
        coverability(mdp, 0.1, "linear", features=np.ones((mdp.n_states, mdp.n_actions, 1)), box=(0, 1),
                     support="all")
    with pytest.raises(ValueError, match="needs features"):
        coverability(mdp, 0.1, "linear")
    with pytest.raises(ValueError, match="beta"):
        coverability(mdp, 0.0)
    cls = make_policy_class(mdp, 0.1, "implicit", box=(0.0, 1.0))
    with pytest.raises(ValueError, match="class name"):
        coverability(mdp, 0.1, cls, box=(0.0, 1.0))
    with pytest.raises(ValueError, match="beta=0.1"):
        coverability(mdp, 0.2, cls)
    assert coverability(mdp, 0.1, cls) == coverability(mdp, 0.1, box=(0.0, 1.0))


# ----------------------------------------------------------- structured instances
def lock_closed_form(horizon, p, beta, hi):
    """The lock's level-indicator class with box [0, hi]: Φ(τ) = (1,…,1,0,…,0) with k
    leading ones (k correct tokens before the first mistake), π_ref-mass w_k = p^k (1 − p)
    (k < H) and p^H; the maximizer for group k is θ = hi on the first k levels, 0 after, so
    sup π(group k) = w_k e^{k·hi/β} / Σ_j w_j e^{min(j, k)·hi/β}."""
    w = [p**k * (1 - p) for k in range(horizon)] + [p**horizon]
    total = 0.0
    for k in range(horizon + 1):
        total += w[k] * math.exp(k * hi / beta) / sum(w[j] * math.exp(min(j, k) * hi / beta)
                                                      for j in range(horizon + 1))
    return total


def test_combination_lock_linear_class_has_small_coverability(capsys):
    """Level indicators: vocab^H responses but H + 1 feature groups, so C_cov ≤ H + 1; the
    value equals the lock's own closed form. The tabular class on every token of the same
    DAG grows much faster with H."""
    beta, vocab, p = 0.1, 3, 0.2
    rows = []
    for horizon in range(2, 7):
        mdp = envs.combination_lock(horizon, vocab, p, seed=horizon)
        details = coverability(mdp, beta, "linear", return_details=True)
        assert details.n_groups == horizon + 1 and details.n_optimized == 0
        assert 1.0 <= details.value <= horizon + 1
        assert_close(details.value, lock_closed_form(horizon, p, beta, 1.0 / horizon), rtol=1e-10,
                     scale=details.value)
        tabular = coverability(mdp, beta, "implicit", support="all", box=mdp.info["feature_box"])
        assert tabular >= details.value * (1 - 1e-12)
        rows.append((horizon, details.value, tabular))
    with capsys.disabled():
        print("\ncombination lock (vocab 3, p 0.2, β 0.1, box [0, 1/H]): H, C_cov linear, C_cov tabular")
        for row in rows:
            print("  H=%d  linear %.4f  tabular(all tokens) %.4f" % row)


def test_feature_bandit_coverability():
    """The clustered feature bandit: the linear class has d groups, C_cov ≤ d (equal to the
    d-cluster bandit's closed form), whatever n; the implicit class grows with n."""
    beta, d = 0.1, 6
    values = []
    for n in (10, 100, 10_000):
        mdp = envs.feature_bandit(n, d, 1e-3, seed=1)
        details = coverability(mdp, beta, "linear", return_details=True)
        assert details.n_groups == d and details.value <= d
        lo, hi = mdp.info["feature_box"]
        ref = np.exp(mdp.ref_logp[0])
        w = np.bincount(mdp.info["clusters"], weights=ref, minlength=d)
        expected = np.sum(w * math.exp(hi / beta) / (w * math.exp(hi / beta) + (1 - w) * math.exp(lo / beta)))
        assert_close(details.value, expected, rtol=1e-10, scale=expected)
        if n <= 100:
            values.append(coverability(mdp, beta, "implicit"))
    assert values[0] < values[1] and values[1] > d
