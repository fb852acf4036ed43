"""Simulated teachers after B-Pref (xpo_sim.SimulatedTeacher) and the oracle hooks behind them.

What is checked:

* the labels a teacher draws have the probabilities its ``prob`` states (a statistical test
  with fixed seeds: the frequency of a ≻ b among n answers lies within 5σ of the stated
  probability, σ = √(p(1−p)/n); a prob() that ignored the rationality, the mistakes or the
  equal band misses by many σ);
* an equal answer is stored as weight ½ each way, and the DPO objective of such data is the
  soft-label loss −[½ log σ(h) + ½ log σ(−h)];
* a skipped query stores nothing (no pair, no path, no explored response) but is counted
  (``n_skipped``, ``n_queries``, the ``pairs`` column of a run);
* the myopic score equals a slow loop over the tokens of every response of random trees;
* with its defaults the teacher is BradleyTerry draw for draw (labels, rankings, whole
  runs), and with rationality ∞ it is Argmax;
* bad arguments, and bad answers from a user's oracle, are ValueErrors that name them;
* every teacher runs end to end through xpo_sim.run with finite, non-negative regret;
* PreferenceData refuses path indices it does not hold (issue 20).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import xpo_sim
from xpo_sim import envs
from xpo_sim.data import PreferenceData
from xpo_sim.policies import LogitsClass
from xpo_sim.preferences import (EQUAL, NO_PAIR, SKIP, Argmax, BradleyTerry, PreferenceOracle, SimulatedTeacher,
                                 answers, best_and_worst, oracle_scores)
from xpo_sim.rounds import label_and_store

import strategies

SCORES = st.floats(-3.0, 3.0, allow_nan=False, allow_infinity=False)


def naive_sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    return math.exp(x) / (1.0 + math.exp(x))


def naive_expected_label(teacher: SimulatedTeacher, score_a: float, score_b: float) -> float:
    """The teacher's stated label distribution written out with Python floats."""
    diff = score_a - score_b
    if abs(diff) < teacher.equal_margin:
        return 0.5
    if teacher.rationality == math.inf:
        p = 1.0 if diff > 0 else 0.0 if diff < 0 else 0.5
    else:
        p = naive_sigmoid(teacher.rationality * diff)
    return (1 - teacher.mistake) * p + teacher.mistake * (1 - p)


def naive_myopic(mdp, batch, gamma: float) -> list[float]:
    """Σ_h γ^(n−1−h) r(s_h, a_h), one token at a time (Python floats)."""
    reward = [[float(x) for x in row] for row in mdp.reward]
    out = []
    for i in range(len(batch)):
        n = int(batch.lengths[i])
        total = 0.0
        for h in range(n):
            s, a = int(batch.states[i, h]), int(batch.actions[i, h])
            total += gamma ** (n - 1 - h) * reward[s][a]
        out.append(total)
    return out


teachers = st.builds(
    SimulatedTeacher,
    rationality=st.one_of(st.floats(0.2, 5.0), st.just(math.inf)),
    mistake=st.floats(0.0, 0.5),
    equal_margin=st.one_of(st.just(0.0), st.floats(0.0, 1.0)),
    skip_below=st.one_of(st.just(-math.inf), st.floats(-3.0, 3.0)),
    myopic_gamma=st.one_of(st.just(1.0), st.floats(0.0, 1.0)),
)


def sample_pairs(mdp, n, seed):
    """n queries: two responses of π_ref to each of n prompts."""
    rng = np.random.default_rng(seed)
    prompts = rng.choice(mdp.n_states, size=n, p=mdp.start)
    y = xpo_sim.sample_trajectories(mdp, mdp.ref_logp, n, rng, start_states=prompts)
    y_tilde = xpo_sim.sample_trajectories(mdp, mdp.ref_logp, n, rng, start_states=prompts)
    return y, y_tilde


# ------------------------------------------------------------------ label probabilities
@settings(max_examples=15)
@given(teachers, st.lists(SCORES, min_size=2, max_size=4), st.lists(SCORES, min_size=2, max_size=4))
def test_label_frequencies_match_prob(teacher, scores_a, scores_b):
    """Each of a few (S_a, S_b) pairs is asked n = 20000 times: the share of a ≻ b among the
    answers (an equal answer counting ½) is within 5σ of prob, equal answers are exactly ½,
    and exactly the queries of skips() are skipped."""
    m = min(len(scores_a), len(scores_b))
    n = 20_000
    a = np.repeat(np.array(scores_a[:m]), n)
    b = np.repeat(np.array(scores_b[:m]), n)
    labels = teacher.answer(a, b, np.random.default_rng(1234)).reshape(m, n)
    skipped = teacher.skips(a, b).reshape(m, n)
    p = teacher.prob(a, b).reshape(m, n)[:, 0]
    for g in range(m):
        expected = naive_expected_label(teacher, scores_a[g], scores_b[g])
        assert p[g] == pytest.approx(expected, rel=1e-12, abs=1e-15)
        if max(scores_a[g], scores_b[g]) < teacher.skip_below:
            assert skipped[g].all() and np.isnan(labels[g]).all()
            continue
        assert not skipped[g].any() and not np.isnan(labels[g]).any()
        if abs(scores_a[g] - scores_b[g]) < teacher.equal_margin:
            assert (labels[g] == EQUAL).all()
            continue
        assert set(np.unique(labels[g])) <= {0.0, 1.0}
        bound = 5.0 * math.sqrt(expected * (1.0 - expected) / n) + 1e-12
        assert abs(labels[g].mean() - expected) <= bound, (g, labels[g].mean(), expected, bound)


def test_the_frequency_test_catches_a_wrong_rationality():
    """The 5σ test has power: labels of rationality 1 do not pass for rationality 1.3."""
    a = np.full(20_000, 0.8)
    labels = SimulatedTeacher(rationality=1.0).answer(a, np.zeros_like(a), np.random.default_rng(1234))
    wrong = naive_sigmoid(1.3 * 0.8)
    assert abs(labels.mean() - wrong) > 5.0 * math.sqrt(wrong * (1 - wrong) / a.size)


def test_draws_depend_only_on_the_shape():
    """answer() draws the label block and the flip block for every comparison, skipped and
    equal ones included: the Generator ends where two blocks of the shape leave it."""
    a = np.linspace(-2, 2, 37)
    ends = []
    for teacher in (SimulatedTeacher(), SimulatedTeacher(equal_margin=10.0), SimulatedTeacher(skip_below=10.0),
                    SimulatedTeacher(rationality=math.inf, mistake=0.3, equal_margin=0.5, skip_below=0.0)):
        rng = np.random.default_rng(3)
        teacher.answer(a, a[::-1], rng)
        ends.append(rng.random())
    rng = np.random.default_rng(3)
    rng.random(a.shape)
    rng.random(a.shape)
    assert ends == [rng.random()] * 4


def test_skip_takes_precedence_over_equal_and_mistakes_do_not_touch_either():
    teacher = SimulatedTeacher(mistake=1.0, equal_margin=0.5, skip_below=0.0)
    a = np.array([-1.0, -1.0, 1.0, 1.0, 3.0])
    b = np.array([-1.2, -3.0, 1.2, -3.0, 0.0])
    labels = teacher.answer(a, b, 0)
    assert np.isnan(labels[:2]).all()  # both below 0: skipped, even within the margin
    assert labels[2] == EQUAL  # within the margin: equal, mistake = 1 does not flip it
    np.testing.assert_array_equal(labels[3:], [0.0, 0.0])  # strict and always flipped
    assert teacher.can_skip and not SimulatedTeacher().can_skip
    assert math.isnan(SKIP) and EQUAL == 0.5 and NO_PAIR == -1


# ------------------------------------------------------------------ storage
def test_equal_answers_store_half_each_way_and_give_the_soft_label_loss():
    mdp = envs.token_tree(3, 2, seed=4, rewards="dense")
    y, y_tilde = sample_pairs(mdp, 12, seed=0)
    data = PreferenceData(mdp)
    label_and_store(mdp, [data], SimulatedTeacher(equal_margin=math.inf), y, y_tilde, 0, explored="none")
    arrays = data.arrays()
    assert data.n_pairs == 12 and data.n_equal == 12 and data.n_skipped == 0 and data.n_queries == 12
    assert arrays["pair_count"].sum() == 12.0
    weights = {}
    for c, r, w in zip(arrays["pair_chosen"], arrays["pair_rejected"], arrays["pair_count"]):
        weights[(int(c), int(r))] = float(w)
    for (c, r), w in weights.items():
        assert weights[(r, c)] == w and (w * 2) % 1 == 0  # ½ per query, both directions
    # the DPO objective of these data: Σ_i −[½ log σ(h_i) + ½ log σ(−h_i)]
    beta = 0.7
    cls = LogitsClass(mdp, beta)
    theta = np.random.default_rng(1).normal(size=mdp.ref_logp.shape)
    value, _ = cls.objective(theta, data, 0.0, "dpo")
    logp = cls.policy_logp(theta)
    ratio_y = xpo_sim.trajectory_logp(mdp, logp, y) - xpo_sim.trajectory_logp(mdp, mdp.ref_logp, y)
    ratio_t = xpo_sim.trajectory_logp(mdp, logp, y_tilde) - xpo_sim.trajectory_logp(mdp, mdp.ref_logp, y_tilde)
    h = beta * (ratio_y - ratio_t)
    soft = sum(-(0.5 * math.log(naive_sigmoid(x)) + 0.5 * math.log(naive_sigmoid(-x))) for x in h)
    assert value == pytest.approx(soft, rel=1e-10)


def test_skipped_queries_store_nothing_but_are_counted():
    mdp = envs.token_tree(3, 2, seed=4)
    y, y_tilde = sample_pairs(mdp, 9, seed=1)
    data = PreferenceData(mdp)
    label_and_store(mdp, [data], SimulatedTeacher(skip_below=math.inf), y, y_tilde, 0, explored="both")
    assert (data.n_pairs, data.n_skipped, data.n_queries) == (0, 9, 9)
    assert data.n_distinct == 0 and data.n_explored == 0 and data.arrays()["pair_count"].size == 0


@settings(max_examples=25)
@given(strategies.token_trees(), teachers, st.integers(0, 2**32 - 1), st.sampled_from(["second", "both", "none"]))
def test_every_query_is_stored_by_its_answer(mdp, teacher, seed, explored):
    """On random trees and teachers: stored weight = answered queries, equal answers ½ each
    way, skipped ones only counted; explored responses come from answered queries only."""
    y, y_tilde = sample_pairs(mdp, 10, seed)
    data = PreferenceData(mdp)
    score_y, score_t = oracle_scores(teacher, mdp, y), oracle_scores(teacher, mdp, y_tilde)
    skipped = teacher.skips(score_y, score_t)
    equal = ~skipped & (np.abs(score_y - score_t) < teacher.equal_margin)
    label_and_store(mdp, [data], teacher, y, y_tilde, np.random.default_rng(seed), explored=explored)
    answered = int((~skipped).sum())
    assert data.n_skipped == int(skipped.sum()) and data.n_queries == 10
    assert data.n_pairs == answered and data.n_equal == int(equal.sum())
    assert data.arrays()["pair_count"].sum() == pytest.approx(answered, abs=1e-12)
    per_query = {"second": 1, "both": 2, "none": 0}[explored]
    assert data.n_explored == per_query * answered


# ------------------------------------------------------------------ the myopic score
@settings(max_examples=30)
@given(strategies.token_trees(), st.floats(0.0, 1.0), st.integers(0, 2**32 - 1))
def test_the_myopic_score_is_the_discounted_sum_over_tokens(mdp, gamma, seed):
    batch = xpo_sim.sample_trajectories(mdp, mdp.ref_logp, 12, seed)
    teacher = SimulatedTeacher(myopic_gamma=gamma)
    np.testing.assert_allclose(teacher.scores(mdp, batch), naive_myopic(mdp, batch, gamma), rtol=1e-12, atol=1e-12)
    assert np.array_equal(oracle_scores(teacher, mdp, batch), teacher.scores(mdp, batch))
    if gamma == 1.0:
        assert np.array_equal(teacher.scores(mdp, batch), xpo_sim.trajectory_reward(mdp, batch))


def test_the_myopic_score_weights_the_last_token_most():
    # one prompt, 2 tokens; r = 1 on the first token of path (0, 0), on the last of path (1, 0)
    next_state = np.array([[1, 2], [-1, -1], [-1, -1]])
    reward = np.array([[1.0, 0.0], [0.0, 0.0], [1.0, 0.0]])
    mdp = xpo_sim.TokenMDP(next_state, reward, np.log(np.full((3, 2), 0.5)), np.array([1.0, 0.0, 0.0]))
    batch = xpo_sim.TrajectoryBatch(np.array([[0, 1], [0, 2]]), np.array([[0, 0], [1, 0]]), np.array([2, 2]))
    np.testing.assert_array_equal(SimulatedTeacher().scores(mdp, batch), [1.0, 1.0])
    np.testing.assert_array_equal(SimulatedTeacher(myopic_gamma=0.5).scores(mdp, batch), [0.5, 1.0])
    np.testing.assert_array_equal(SimulatedTeacher(myopic_gamma=0.0).scores(mdp, batch), [0.0, 1.0])


# ------------------------------------------------------------------ defaults: BradleyTerry and Argmax
@settings(max_examples=30)
@given(st.lists(SCORES, min_size=1, max_size=20), st.floats(0.1, 5.0), st.floats(0.0, 1.0),
       st.integers(0, 2**32 - 1), st.integers(2, 5))
def test_defaults_are_bradley_terry_and_infinite_rationality_is_argmax(scores, scale, flip, seed, k):
    a = np.array(scores)
    b = np.roll(a, 1) if len(a) > 1 else a
    for teacher, oracle in ((SimulatedTeacher(rationality=scale, mistake=flip), BradleyTerry(scale, flip)),
                            (SimulatedTeacher(rationality=math.inf, mistake=flip), Argmax(flip))):
        assert isinstance(teacher, PreferenceOracle) and teacher.strict
        np.testing.assert_array_equal(teacher.prob(a, b), oracle.prob(a, b))
        np.testing.assert_array_equal(teacher.prefer(a, b, seed), oracle.prefer(a, b, seed))
        np.testing.assert_array_equal(teacher.answer(a, b, seed), oracle.prefer(a, b, seed).astype(float))
        np.testing.assert_array_equal(answers(teacher, a, b, seed), answers(oracle, a, b, seed))
        rows = np.resize(a, (3, k))
        for mine, theirs in zip(best_and_worst(teacher, rows, seed), best_and_worst(oracle, rows, seed)):
            np.testing.assert_array_equal(mine, theirs)
    assert SimulatedTeacher() == SimulatedTeacher(1.0, 0.0, 0.0, -math.inf, 1.0)


@pytest.mark.parametrize("algorithm", [xpo_sim.XPO(batch=2), xpo_sim.IterativeDPO(k=3, batch=2)], ids=repr)
def test_a_default_teacher_runs_exactly_as_bradley_terry(algorithm):
    mdp = envs.token_tree(3, 2, seed=2)
    mine = xpo_sim.run(mdp, algorithm, 0.5, 6, seed=11, oracle=SimulatedTeacher(rationality=2.0, mistake=0.1))
    theirs = xpo_sim.run(mdp, algorithm, 0.5, 6, seed=11, oracle=BradleyTerry(2.0, 0.1))
    assert mine.equals(theirs)


# ------------------------------------------------------------------ rankings of k responses
def test_a_row_whose_comparisons_are_all_skipped_gives_no_pair():
    teacher = SimulatedTeacher(rationality=math.inf, skip_below=0.0)
    rows = np.array([[-1.0, -2.0, -3.0], [-1.0, 2.0, -3.0], [1.0, 2.0, 3.0]])
    best, worst = best_and_worst(teacher, rows, 0)
    assert (best[0], worst[0]) == (NO_PAIR, NO_PAIR)
    assert best[1] == 1 and worst[1] in (0, 2)  # (0, 2) skipped: both lost their one answered comparison
    assert (best[2], worst[2]) == (2, 0)


def test_an_all_equal_row_gives_a_uniformly_random_pair():
    best, worst = best_and_worst(SimulatedTeacher(equal_margin=math.inf), np.zeros((6000, 3)), 0)
    assert (best != worst).all() and (best >= 0).all()
    assert np.all(np.abs(np.bincount(best, minlength=3) - 2000) < 200)


def test_iterative_dpo_counts_a_prompt_without_a_pair_as_a_skipped_query():
    mdp = envs.bandit(4, seed=1)
    df = xpo_sim.run(mdp, xpo_sim.IterativeDPO(k=3, batch=2), 0.5, 3, seed=0,
                     oracle=SimulatedTeacher(skip_below=math.inf))
    assert df.pairs.tolist() == [0, 2, 4, 6]
    assert np.allclose(df.regret, df.regret.iloc[0])  # nothing to learn from: the iterate stays π_ref
    assert df.distinct_seen.tolist() == [0, 0, 0, 0]


# ------------------------------------------------------------------ end to end
TEACHERS = {
    "bradley-terry": SimulatedTeacher(),
    "rational": SimulatedTeacher(rationality=math.inf),
    "mistakes": SimulatedTeacher(rationality=5.0, mistake=0.2),
    "equal": SimulatedTeacher(equal_margin=0.3),
    "skip": SimulatedTeacher(skip_below=0.5),
    "myopic": SimulatedTeacher(myopic_gamma=0.5),
    "all": SimulatedTeacher(rationality=3.0, mistake=0.1, equal_margin=0.1, skip_below=0.2, myopic_gamma=0.8),
}


@pytest.mark.parametrize("name", list(TEACHERS))
@pytest.mark.parametrize("algorithm", [xpo_sim.XPO(batch=2), xpo_sim.IterativeDPO(k=3, batch=2)], ids=repr)
def test_every_teacher_runs_end_to_end(name, algorithm):
    mdp = envs.token_tree(3, 2, seed=3, rewards="dense")
    df = xpo_sim.run(mdp, algorithm, 0.5, 8, seed=5, oracle=TEACHERS[name])
    assert np.isfinite(df.regret).all() and (df.regret >= 0).all()
    assert df.pairs.tolist() == [2 * t for t in range(9)]  # skipped queries count as asked


def test_skipping_teacher_on_a_needle_bandit():
    mdp = envs.bandit_needle(6, 0.2, bad_reward=(0.0, 0.4), seed=0)
    df = xpo_sim.run(mdp, xpo_sim.OnlineDPO(batch=4), 1.0, 10, seed=0, oracle=SimulatedTeacher(skip_below=0.3))
    assert np.isfinite(df.regret).all() and (df.regret >= 0).all() and df.pairs.iloc[-1] == 40


# ------------------------------------------------------------------ validation
@pytest.mark.parametrize("name, value", [
    ("rationality", 0.0), ("rationality", -1.0), ("rationality", math.nan), ("rationality", "1"),
    ("rationality", True), ("mistake", 1.5), ("mistake", -0.1), ("mistake", math.nan),
    ("equal_margin", -0.1), ("equal_margin", math.nan), ("equal_margin", None),
    ("skip_below", math.nan), ("skip_below", "low"), ("myopic_gamma", 1.5), ("myopic_gamma", -0.5),
    ("myopic_gamma", math.nan),
])
def test_bad_parameters_raise_naming_them(name, value):
    with pytest.raises(ValueError, match=name):
        SimulatedTeacher(**{name: value})


def test_bad_scores_raise_naming_them():
    teacher = SimulatedTeacher(equal_margin=0.1)
    with pytest.raises(ValueError, match="score_a must be finite"):
        teacher.answer(np.array([math.nan]), np.array([0.0]), 0)
    with pytest.raises(ValueError, match="score_b must be a real numeric array"):
        teacher.prob(np.array([0.0]), np.array(["x"]))
    with pytest.raises(ValueError, match="seed"):
        teacher.answer(np.array([0.0]), np.array([1.0]), -1)
    with pytest.raises(ValueError, match="mdp must be a TokenMDP"):
        SimulatedTeacher(myopic_gamma=0.5).scores("mdp", None)


def test_prefer_refuses_what_a_bool_cannot_say():
    teacher = SimulatedTeacher(equal_margin=0.5)
    teacher.prefer(np.array([2.0]), np.array([0.0]), 0)  # strict: fine
    with pytest.raises(ValueError, match="answer"):
        teacher.prefer(np.array([0.2]), np.array([0.0]), 0)


class _Answering:
    """A user's oracle with an answer hook returning what ``mode`` says."""

    def __init__(self, mode, can_skip=False):
        self.mode, self.can_skip = mode, can_skip

    def prefer(self, a, b, rng):
        return np.asarray(a) > np.asarray(b)

    def answer(self, a, b, rng):
        n = len(a)
        return {"nan": np.full(n, np.nan), "third": np.full(n, 1 / 3), "short": np.ones(n - 1),
                "text": np.array(["1"] * n), "bools": np.ones(n, dtype=bool)}[self.mode]

    def scores(self, mdp, batch):
        return {"inf": np.full(len(batch), np.inf), "short": np.zeros(1)}.get(
            self.mode, xpo_sim.trajectory_reward(mdp, batch))


@pytest.mark.parametrize("mode, message", [("nan", "does not declare can_skip"), ("third", r"\{0, 0.5, 1\}"),
                                           ("short", "shape"), ("text", "dtype")])
def test_a_user_oracles_answers_are_checked(mode, message):
    with pytest.raises(ValueError, match=f"oracle _Answering.answer .*{message}"):
        answers(_Answering(mode), np.zeros(3), np.ones(3), 0)


def test_a_user_oracle_that_declares_skipping_may_skip_and_bools_are_labels():
    assert np.isnan(answers(_Answering("nan", can_skip=True), np.zeros(3), np.ones(3), 0)).all()
    np.testing.assert_array_equal(answers(_Answering("bools"), np.zeros(3), np.ones(3), 0), [1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="does not declare can_skip"):  # a string is not True
        answers(_Answering("nan", can_skip="yes"), np.zeros(3), np.ones(3), 0)


@pytest.mark.parametrize("mode, message", [("inf", "non-finite"), ("short", "one real score per response")])
def test_a_user_oracles_scores_are_checked(mode, message):
    mdp = envs.bandit(3)
    batch = xpo_sim.sample_trajectories(mdp, mdp.ref_logp, 4, 0)
    with pytest.raises(ValueError, match=f"oracle _Answering.scores .*{message}"):
        oracle_scores(_Answering(mode), mdp, batch)


def test_no_pair_is_accepted_only_from_an_oracle_that_can_skip_and_only_for_both_ends():
    class Ranker:
        can_skip = False

        def __init__(self, best, worst):
            self.best, self.worst = np.array(best), np.array(worst)

        def prefer(self, a, b, rng):
            return np.asarray(a) > np.asarray(b)

        def best_and_worst(self, rewards, rng):
            return self.best, self.worst

    rows = np.zeros((2, 3))
    with pytest.raises(ValueError, match=r"expected 2 ints in \[0, 3\)$"):
        best_and_worst(Ranker([-1, 0], [-1, 1]), rows, 0)
    skipping = Ranker([-1, 0], [-1, 1])
    skipping.can_skip = True
    best, worst = best_and_worst(skipping, rows, 0)
    np.testing.assert_array_equal(best, [-1, 0])
    half = Ranker([-1, 0], [2, 1])
    half.can_skip = True
    with pytest.raises(ValueError, match="only one of best and worst"):
        best_and_worst(half, rows, 0)


def test_label_and_store_refuses_an_unknown_explored():
    mdp = envs.bandit(3)
    y, y_tilde = sample_pairs(mdp, 2, 0)
    with pytest.raises(ValueError, match="explored"):
        label_and_store(mdp, [PreferenceData(mdp)], SimulatedTeacher(), y, y_tilde, 0, explored="first")


# ------------------------------------------------------------------ issue 20: path indices
def test_path_indices_out_of_range_are_a_value_error_naming_the_argument():
    """add_pairs/add_explored/add_equal used to store any index: an index past the table was
    then read outside the padded arrays by the kernels (heap corruption, an abort)."""
    mdp = envs.token_tree(2, 2)
    data = PreferenceData(mdp)
    ids = data.path_ids(xpo_sim.sample_trajectories(mdp, mdp.ref_logp, 3, 0))
    assert data.n_distinct == ids.max() + 1
    with pytest.raises(ValueError, match=r"rejected\[0\] = 7 is not a path index"):
        data.add_pairs(np.array([0]), np.array([7]))
    with pytest.raises(ValueError, match=r"chosen\[1\] = -1 is not a path index"):
        data.add_pairs(np.array([0, -1]), np.array([0, 0]))
    with pytest.raises(ValueError, match="ids"):
        data.add_explored(np.array([data.n_distinct]))
    with pytest.raises(ValueError, match="second"):
        data.add_equal(np.array([0]), np.array([99]))
    with pytest.raises(ValueError, match="chosen must be a 1-d integer array"):
        data.add_pairs(np.array([0.0]), np.array([0]))
    with pytest.raises(ValueError, match="one length"):
        data.add_pairs(np.array([0, 0]), np.array([0]))
    with pytest.raises(ValueError, match="n must be an int"):
        data.add_skipped(-1)
    assert data.n_pairs == 0 and data.arrays()["pair_count"].size == 0  # nothing half-stored
    data.add_pairs([0], [ids.max()])  # lists of valid indices are fine
    assert data.n_pairs == 1
    with pytest.raises(ValueError, match=r"batch\.states\[0, 1\] = 9 is out of range"):
        data.path_ids(xpo_sim.TrajectoryBatch(np.array([[0, 9]]), np.array([[0, 0]]), np.array([2])))
    with pytest.raises(ValueError, match="mdp must be a TokenMDP"):
        PreferenceData("x")
