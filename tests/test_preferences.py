"""xpo_sim.preferences: reproducibility, empirical frequencies against prob(), the Argmax tie
rule, flip noise, stability and validation.

Statistical bound used throughout: with n independent labels of probability p, the
frequency f has standard deviation σ = √(p(1−p)/n); we assert |f − p| ≤ 5σ (+1e-12 for
p ∈ {0, 1}). With fresh seeds such a check would fail with probability about 6e-7 per
group; the seeds here are fixed, so the outcome is deterministic, and a wrong prob()
(e.g. one that ignores reward_scale or flip) misses by tens of σ at these n.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from xpo_sim.preferences import Argmax, BradleyTerry, PreferenceOracle

N = 200_000
DIFFS = np.array([-3.0, -1.0, -0.2, 0.0, 0.5, 2.0])


def naive_sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    return math.exp(x) / (1.0 + math.exp(x))


def grouped_rewards(diffs, n=N):
    """reward_a, reward_b of shape (len(diffs), n): row g compares a pair with r_a − r_b =
    diffs[g] (on a non-zero baseline, so only the difference can matter)."""
    base = np.linspace(-1.0, 1.0, n)
    reward_b = np.broadcast_to(base, (len(diffs), n))
    reward_a = reward_b + np.asarray(diffs)[:, None]
    return reward_a, reward_b


def assert_frequencies_match(labels, p):
    """labels (G, n) bool, p (G,) — each row's frequency within 5σ of its probability."""
    n = labels.shape[1]
    freq = labels.mean(axis=1)
    bound = 5.0 * np.sqrt(p * (1.0 - p) / n) + 1e-12
    assert np.all(np.abs(freq - p) <= bound), (freq, p, bound)


ORACLES = [
    BradleyTerry(),
    BradleyTerry(reward_scale=2.5, flip=0.1),
    Argmax(),
    Argmax(flip=0.3),
]


# ------------------------------------------------------------------ interface
@pytest.mark.parametrize("oracle", ORACLES, ids=repr)
def test_interface_shapes_and_dtypes(oracle):
    assert isinstance(oracle, PreferenceOracle)
    a = np.array([[0.0, 1.0, 2.0]])
    b = np.array([[1.0], [0.5]])  # broadcasts to (2, 3)
    labels = oracle.prefer(a, b, 0)
    p = oracle.prob(a, b)
    assert isinstance(labels, np.ndarray) and labels.dtype == np.bool_ and labels.shape == (2, 3)
    assert isinstance(p, np.ndarray) and p.dtype == np.float64 and p.shape == (2, 3)
    assert np.all((p >= 0.0) & (p <= 1.0))
    scalar = oracle.prefer(1.0, 0.0, 0)
    assert isinstance(scalar, np.ndarray) and scalar.shape == () and scalar.dtype == np.bool_


# ------------------------------------------------------------------ reproducibility
@pytest.mark.parametrize("oracle", ORACLES, ids=repr)
def test_same_seed_same_labels_and_generator_equals_int_seed(oracle):
    a, b = grouped_rewards([0.3, 0.0, -0.4], n=1000)
    first = oracle.prefer(a, b, 123)
    np.testing.assert_array_equal(oracle.prefer(a, b, 123), first)
    np.testing.assert_array_equal(oracle.prefer(a, b, np.random.default_rng(123)), first)
    # labels are random wherever P(a ≻ b) ∉ {0, 1}: another seed gives other labels
    assert not np.array_equal(oracle.prefer(a, b, 124), first)


def test_generator_is_advanced_so_consecutive_calls_differ():
    rng = np.random.default_rng(7)
    a, b = grouped_rewards([0.0], n=1000)
    assert not np.array_equal(BradleyTerry().prefer(a, b, rng), BradleyTerry().prefer(a, b, rng))


def test_draws_consumed_depend_only_on_shape():
    """Each call draws two blocks of uniforms of the broadcast shape, whatever the rewards
    and parameters, so a shared Generator ends in the same state."""
    a, b = grouped_rewards([0.0, 3.0], n=50)
    states = []
    for oracle, ra in [(BradleyTerry(), a), (BradleyTerry(2.0, 0.5), b), (Argmax(), a), (Argmax(1.0), a + 9)]:
        rng = np.random.default_rng(5)
        oracle.prefer(ra, b, rng)
        states.append(rng.random())
    assert len(set(states)) == 1
    rng = np.random.default_rng(5)
    rng.random(a.shape)
    rng.random(a.shape)
    assert rng.random() == states[0]


# ------------------------------------------------------------------ frequencies vs prob
@pytest.mark.parametrize(
    "oracle",
    [BradleyTerry(), BradleyTerry(reward_scale=0.5), BradleyTerry(reward_scale=3.0, flip=0.2)],
    ids=repr,
)
def test_bradley_terry_frequencies_match_prob(oracle):
    a, b = grouped_rewards(DIFFS)
    p = oracle.prob(a, b)
    # prob is the closed form, the same for every comparison in a group
    expected = np.array(
        [
            (1 - oracle.flip) * naive_sigmoid(oracle.reward_scale * d)
            + oracle.flip * (1 - naive_sigmoid(oracle.reward_scale * d))
            for d in DIFFS
        ]
    )
    np.testing.assert_allclose(p, np.broadcast_to(expected[:, None], p.shape), rtol=1e-12, atol=1e-15)
    assert_frequencies_match(oracle.prefer(a, b, 2024), expected)


@pytest.mark.parametrize("flip", [0.0, 0.25])
def test_argmax_frequencies_match_prob(flip):
    oracle = Argmax(flip=flip)
    a, b = grouped_rewards(DIFFS)
    p = oracle.prob(a, b)
    clean = np.where(DIFFS > 0, 1.0, np.where(DIFFS < 0, 0.0, 0.5))
    expected = (1 - flip) * clean + flip * (1 - clean)
    np.testing.assert_array_equal(p, np.broadcast_to(expected[:, None], p.shape))
    assert_frequencies_match(oracle.prefer(a, b, 99), expected)


def test_argmax_without_noise_is_deterministic_off_ties():
    a = np.array([1.0, 0.0, 5.0, -2.0])
    b = np.array([0.0, 1.0, 4.999999, -1.0])
    for seed in range(5):
        np.testing.assert_array_equal(Argmax().prefer(a, b, seed), [True, False, True, False])


def test_argmax_tie_rule_is_a_fair_coin():
    """Exact ties are broken by a fair coin, independently per comparison."""
    r = np.full(N, 0.7)
    labels = Argmax().prefer(r, r.copy(), 11)
    assert abs(labels.mean() - 0.5) <= 5.0 * math.sqrt(0.25 / N)
    # independent, not one coin for the whole batch: successive labels agree half the time
    agree = np.mean(labels[1:] == labels[:-1])
    assert abs(agree - 0.5) <= 5.0 * math.sqrt(0.25 / N)
    np.testing.assert_array_equal(Argmax().prob(r, r), 0.5)


def test_argmax_ties_are_exact_equality():
    """A difference of one ulp is not a tie: the larger reward always wins."""
    a = np.full(1000, 1.0)
    b = np.full(1000, np.nextafter(1.0, 0.0))
    assert Argmax().prefer(a, b, 0).all()
    assert not Argmax().prefer(b, a, 0).any()


# ------------------------------------------------------------------ flip noise
@pytest.mark.parametrize("oracle_type", [Argmax, lambda flip: BradleyTerry(1.0, flip)])
def test_flip_one_inverts_the_clean_labels_with_the_same_seed(oracle_type):
    a, b = grouped_rewards([-1.0, 0.0, 0.0, 2.0], n=500)  # includes ties
    clean = oracle_type(flip=0.0).prefer(a, b, 42)
    flipped = oracle_type(flip=1.0).prefer(a, b, 42)
    np.testing.assert_array_equal(flipped, ~clean)


def test_flip_one_inverts_argmax_everywhere_off_ties():
    a = np.array([1.0, 0.0, 3.0])
    b = np.array([0.0, 1.0, -3.0])
    for seed in range(5):
        np.testing.assert_array_equal(Argmax(flip=1.0).prefer(a, b, seed), [False, True, False])
    np.testing.assert_array_equal(Argmax(flip=1.0).prob(a, b), [0.0, 1.0, 0.0])


def test_flip_half_is_pure_noise():
    a, b = grouped_rewards([-5.0, 5.0])
    for oracle in (Argmax(flip=0.5), BradleyTerry(4.0, flip=0.5)):
        np.testing.assert_array_equal(oracle.prob(a, b), 0.5)
        assert_frequencies_match(oracle.prefer(a, b, 8), np.array([0.5, 0.5]))


# ------------------------------------------------------------------ stability
def test_bradley_terry_is_stable_for_huge_differences():
    a = np.array([1e4, -1e4, 0.0, 5e3])
    b = np.array([-0.0, 0.0, 1e4, -5e3])
    with np.errstate(over="raise", invalid="raise", divide="raise"), warnings.catch_warnings():
        warnings.simplefilter("error")
        p = BradleyTerry().prob(a, b)
        labels = BradleyTerry().prefer(a, b, 0)
        p_noisy = BradleyTerry(reward_scale=10.0, flip=0.1).prob(a, b)
    np.testing.assert_array_equal(p, [1.0, 0.0, 0.0, 1.0])
    np.testing.assert_array_equal(labels, [True, False, False, True])
    np.testing.assert_allclose(p_noisy, [0.9, 0.1, 0.1, 0.9], rtol=1e-15)


def test_prob_is_antisymmetric():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=50), rng.normal(size=50)
    for oracle in (BradleyTerry(1.7, 0.15), Argmax(0.2)):
        np.testing.assert_allclose(oracle.prob(a, b) + oracle.prob(b, a), 1.0, rtol=1e-15)


# ------------------------------------------------------------------ validation
@pytest.mark.parametrize("flip", [-0.01, 1.01, math.nan, math.inf, True, "0.1", None])
def test_bad_flip_raises(flip):
    with pytest.raises(ValueError, match="flip"):
        BradleyTerry(flip=flip)
    with pytest.raises(ValueError, match="flip"):
        Argmax(flip=flip)


@pytest.mark.parametrize("scale", [0.0, -1.0, math.inf, -math.inf, math.nan, False, "1"])
def test_bad_reward_scale_raises(scale):
    with pytest.raises(ValueError, match="reward_scale"):
        BradleyTerry(reward_scale=scale)


def test_valid_parameters_are_stored_as_floats_and_frozen():
    oracle = BradleyTerry(reward_scale=2, flip=np.float32(0.5))
    assert type(oracle.reward_scale) is float and oracle.reward_scale == 2.0
    assert type(oracle.flip) is float and oracle.flip == 0.5
    assert Argmax(flip=1).flip == 1.0
    with pytest.raises(AttributeError):
        oracle.flip = 0.1  # frozen


@pytest.mark.parametrize("oracle", [BradleyTerry(), Argmax()], ids=repr)
def test_bad_rewards_or_seed_raise(oracle):
    with pytest.raises(ValueError, match="reward_a"):
        oracle.prob(np.array([math.nan]), np.array([0.0]))
    with pytest.raises(ValueError, match="reward_b"):
        oracle.prefer(np.array([0.0]), np.array([math.inf]), 0)
    with pytest.raises(ValueError, match="broadcast"):
        oracle.prob(np.zeros(3), np.zeros(2))
    with pytest.raises(ValueError, match="real numeric"):
        oracle.prob(np.array([True]), np.array([False]))
    with pytest.raises(ValueError, match="seed"):
        oracle.prefer(np.zeros(2), np.zeros(2), 1.5)



def test_bradley_terry_ranking_of_two_is_the_bt_label():
    """Plackett–Luce through Gumbel noise: for k = 2 the first-ranked response is a with
    probability σ(c(r_a − r_b)). n = 100,000 draws: 5σ ≈ 0.007."""
    oracle = BradleyTerry(reward_scale=2.0)
    rewards = np.tile([[0.3, -0.2]], (100_000, 1))
    best, worst = oracle.best_and_worst(rewards, np.random.default_rng(3))
    assert (best != worst).all()
    p = 1 / (1 + math.exp(-2.0 * 0.5))
    assert abs(np.mean(best == 0) - p) < 5 * math.sqrt(p * (1 - p) / 100_000)


def test_argmax_ranking_picks_extremes_breaks_ties_at_random_and_flips():
    rewards = np.array([[0.1, 0.9, 0.5], [0.2, 0.2, 0.2]])
    best, worst = Argmax().best_and_worst(rewards, 0)
    assert (best[0], worst[0]) == (1, 0) and best[1] != worst[1]
    ties = np.tile([[0.0, 0.0, 0.0]], (30_000, 1))
    best, _ = Argmax().best_and_worst(ties, 1)
    assert np.all(np.abs(np.bincount(best, minlength=3) / 30_000 - 1 / 3) < 0.015)
    best, worst = Argmax(flip=1.0).best_and_worst(rewards[:1], 0)
    assert (best[0], worst[0]) == (0, 1)
    with pytest.raises(ValueError, match="k >= 2"):
        Argmax().best_and_worst(np.zeros((3, 1)), 0)
