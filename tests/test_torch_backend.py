"""The optional torch backend: prefix map, transformer policy, exact reference, training loop.

(numpy ↔ torch agreement of the losses and their autograd gradients are in test_losses.py.)
"""

from __future__ import annotations

import copy
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

torch = pytest.importorskip("torch")

import xpo_sim  # noqa: E402
from xpo_sim import XPO, HybridDPO, OfflineDPO, OnlineDPO, TokenMDP, envs  # noqa: E402
from xpo_sim.recorder import COLUMNS  # noqa: E402
from xpo_sim.data import PreferenceData  # noqa: E402
from xpo_sim.policies import LogitsClass  # noqa: E402
from xpo_sim.torch import PrefixTree, TinyTransformerPolicy, distill, train, with_reference  # noqa: E402
from xpo_sim.torch.train import _Objective  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, PYTHONPATH=str(ROOT))
SMALL = dict(width=32, depth=2, heads=2)  # a small transformer where the size does not matter


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One torch thread: the models are tiny, and threads only add contention on a loaded
    machine (results do not depend on it: every test compares runs within one setting)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def ragged_tree(seed: int = 0) -> TokenMDP:
    """A token tree with two prompts, responses of 1 to 3 tokens (an EOS-like token ends the
    episode early) and disallowed tokens.

        prompt 0 = state 0: a0 → 2, a1 → end, a2 disallowed
        prompt 1 = state 1: a0 → 3, a1 → 4, a2 → end
        state 2: a0 → end, a1 → 5, a2 disallowed;  states 3, 4, 5 end on every token,
        with a1 disallowed in 3 and a0 disallowed in 5.
    """
    rng = np.random.default_rng(seed)
    next_state = np.array([[2, -1, -1], [3, 4, -1], [-1, 5, -1], [-1, -1, -1], [-1, -1, -1], [-1, -1, -1]])
    allowed = np.ones((6, 3), dtype=bool)
    allowed[0, 2] = allowed[2, 2] = allowed[3, 1] = allowed[5, 0] = False
    logits = np.where(allowed, rng.standard_normal((6, 3)), -np.inf)
    ref_logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    reward = rng.random((6, 3))
    start = np.array([0.3, 0.7, 0, 0, 0, 0])
    return TokenMDP(next_state, reward, ref_logp, start, dict(family="ragged_tree"))


def scaled_rewards(mdp: TokenMDP, scale: float) -> TokenMDP:
    return TokenMDP(mdp.next_state, scale * mdp.reward, mdp.ref_logp, mdp.start, mdp.info)


def transformer_instance(mdp: TokenMDP, seed: int = 0, **config):
    """(instance with π_ref := the frozen initial transformer, policy, reference)."""
    policy = TinyTransformerPolicy(mdp, seed=seed, **config)
    reference = policy.frozen_copy()
    return with_reference(mdp, reference), policy, reference


# ---------------------------------------------------------------- import and packaging
def test_import_xpo_sim_does_not_import_torch():
    code = "import sys, xpo_sim; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_without_torch_the_import_error_names_the_extra():
    code = "import sys; sys.modules['torch'] = None; import xpo_sim.torch"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "ImportError" in result.stderr
    assert "pip install 'xpo_sim[torch]'" in result.stderr
    assert "torch==2.13.0" in result.stderr


# ---------------------------------------------------------------- the state ↔ prefix map
@pytest.mark.parametrize("mdp", [envs.token_tree(3, 3, n_prompts=2, seed=1), ragged_tree()],
                         ids=["token_tree", "ragged_tree"])
def test_prefix_map_round_trips(mdp):
    tree = PrefixTree(mdp)
    assert tree.n_prompts == int((mdp.start > 0).sum())
    for s in range(mdp.n_states):
        prompt, actions = tree.prefix(s)
        assert len(actions) == tree.depth[s]
        assert tree.state(prompt, actions) == s
    # and from prefixes to states: every allowed token sequence of every trajectory
    for (prompt_state, *_), path in zip(mdp.trajectories().states, mdp.trajectories().as_tuples()):
        prompt = int(np.flatnonzero(tree.roots == prompt_state)[0])
        for h, (state, _) in enumerate(path):
            assert tree.state(prompt, [a for _, a in path[:h]]) == state


def test_token_tree_layers_match_layer_offsets():
    mdp = envs.token_tree(3, 3, n_prompts=2, seed=1)
    tree = PrefixTree(mdp)
    offsets = mdp.info["layer_offsets"]
    for d in range(3):
        assert (tree.depth[offsets[d] : offsets[d + 1]] == d).all()
    assert tree.max_len == 3 and tree.vocab_size == 2 + 3


def test_prefix_map_rejects_a_dag():
    mdp = envs.random_dag(12, 3, seed=0)
    counts = np.bincount(mdp.next_state[mdp.next_state >= 0], minlength=mdp.n_states)
    assert counts.max() > 1  # the DAG merges prefixes
    with pytest.raises(ValueError, match="not a token tree"):
        PrefixTree(mdp)
    with pytest.raises(ValueError, match="not a token tree"):
        TinyTransformerPolicy(mdp)


def test_prefix_map_rejects_a_prompt_inside_a_response():
    base = ragged_tree()
    start = np.array([0.3, 0.3, 0.4, 0, 0, 0])  # state 2 is reached from state 0
    mdp = TokenMDP(base.next_state, base.reward, base.ref_logp, start)
    with pytest.raises(ValueError, match="start state 2"):
        PrefixTree(mdp)


# ---------------------------------------------------------------- the exact table
def test_parameter_count_of_the_default_model():
    policy = TinyTransformerPolicy(envs.token_needle(4, 3, 1e-3))
    assert 200_000 <= policy.n_params <= 600_000


@pytest.mark.parametrize("mdp", [envs.token_tree(3, 3, n_prompts=2, seed=1), ragged_tree()],
                         ids=["token_tree", "ragged_tree"])
def test_table_rows_normalize_and_masked_tokens_get_minus_inf(mdp):
    policy = TinyTransformerPolicy(mdp, seed=3, init_std=0.5)
    table = policy.logp_table()
    assert table.dtype == np.float64 and table.shape == (mdp.n_states, mdp.n_actions)
    assert np.array_equal(table == -np.inf, ~mdp.allowed)
    assert np.isfinite(table[mdp.allowed]).all()
    assert np.abs(np.exp(table).sum(axis=1) - 1).max() <= 1e-12
    assert table[mdp.allowed].std() > 0.1  # not trivially uniform: the rows carry the model


def test_table_matches_teacher_forcing_and_a_direct_forward_pass():
    mdp = ragged_tree()
    policy = TinyTransformerPolicy(mdp, seed=1, init_std=0.5)
    table = policy.logp_table()
    batch = mdp.trajectories()
    as_tensor = lambda a: torch.as_tensor(np.ascontiguousarray(a))  # noqa: E731
    with torch.no_grad():
        forced = policy.sequence_logp(as_tensor(batch.states), as_tensor(batch.actions), as_tensor(batch.lengths))
    np.testing.assert_allclose(forced.numpy(), xpo_sim.trajectory_logp(mdp, table, batch), atol=1e-5)
    # one state read off directly: its own prefix as the input, last position
    tree = policy.tree
    s = 5
    tokens = torch.as_tensor(tree.tokens[s, : tree.depth[s] + 1])[None]
    with torch.no_grad():
        logits = policy(tokens)[0, -1].double().numpy()
    logits = np.where(mdp.allowed[s], logits, -np.inf)
    np.testing.assert_allclose(np.exp(table[s]), np.exp(logits - np.logaddexp.reduce(logits)), atol=1e-6)


@pytest.mark.parametrize("mdp", [envs.token_tree(3, 2, n_prompts=2, seed=4), ragged_tree(2)],
                         ids=["token_tree", "ragged_tree"])
def test_exact_objective_agrees_with_monte_carlo_of_own_samples(mdp):
    """J_β from xpo_sim.evaluate on the extracted table vs the sample mean of
    r(τ) − β log(π(τ)/π_ref(τ)) over trajectories the transformer samples itself, against
    the instance's own (random) π_ref so that both terms matter."""
    beta, n = 0.5, 20_000
    policy = TinyTransformerPolicy(mdp, seed=2, init_std=0.5)
    table = policy.logp_table()
    exact = xpo_sim.evaluate(mdp, table, beta)
    assert exact.kl > 0.05  # the KL term is not negligible
    rng = np.random.default_rng(0)
    prompts = torch.as_tensor(rng.choice(mdp.n_states, size=n, p=mdp.start))
    states, actions, lengths = (x.numpy() for x in policy.sample(prompts, torch.Generator().manual_seed(0)))
    batch = xpo_sim.TrajectoryBatch(states, actions, lengths)
    values = (xpo_sim.trajectory_reward(mdp, batch)
              - beta * (xpo_sim.trajectory_logp(mdp, table, batch) - xpo_sim.trajectory_logp(mdp, mdp.ref_logp, batch)))
    error = values.std(ddof=1) / math.sqrt(n)
    assert abs(values.mean() - exact.value) <= 4 * error
    assert error < 0.02  # the check is sharp enough to catch a wrong sampler
    # the samples stay on allowed tokens and stop exactly at the end of each response
    for i in range(200):
        path_states, path_actions = states[i, : lengths[i]], actions[i, : lengths[i]]
        assert mdp.allowed[path_states, path_actions].all()
        assert (mdp.next_state[path_states[:-1], path_actions[:-1]] == path_states[1:]).all()
        assert mdp.next_state[path_states[-1], path_actions[-1]] == -1


# ---------------------------------------------------------------- reference and distillation
def test_with_reference_sets_pi_ref_to_the_frozen_transformer():
    mdp = envs.token_tree(2, 3, seed=0)
    policy = TinyTransformerPolicy(mdp, seed=0, init_std=0.5)
    reference = policy.frozen_copy()
    replaced = with_reference(mdp, reference)
    np.testing.assert_array_equal(replaced.ref_logp, reference.logp_table())
    for name in ("next_state", "reward", "start"):
        np.testing.assert_array_equal(getattr(replaced, name), getattr(mdp, name))
    assert replaced.info["reference"] == "TinyTransformerPolicy"
    assert "reference_note" in replaced.info and replaced.info["family"] == "token_tree"
    np.testing.assert_array_equal(replaced.info["original_ref_logp"], mdp.ref_logp)
    assert not np.allclose(replaced.ref_logp, mdp.ref_logp)
    assert all(not p.requires_grad for p in reference.parameters())


def test_distill_fits_the_instance_reference():
    needle = envs.token_needle(3, 2, 0.02, seed=1)
    policy = TinyTransformerPolicy(needle, seed=0, **SMALL)
    before = distill(policy, needle, steps=0)
    result = distill(policy, needle, tol=1e-4, steps=3000)
    assert before.max_kl > 0.05
    assert result.max_kl <= 1e-4 < before.max_kl
    table = policy.logp_table()
    p = np.exp(needle.ref_logp)
    kl = np.where(p > 0, p * (needle.ref_logp - table), 0).sum(axis=1)
    np.testing.assert_allclose(result.max_kl, kl.max(), rtol=1e-9)
    replaced = with_reference(needle, policy.frozen_copy())
    # the needle's ε survives the replacement (KL ≤ 1e-4 per state bounds the change)
    assert xpo_sim.optimal_mass(replaced, replaced.ref_logp) == pytest.approx(0.02, rel=0.05)


# ---------------------------------------------------------------- training
def test_training_objective_equals_the_tabular_objective_at_the_reference():
    """At π = π_ref the transformer's objective (from xpo_sim.losses on torch tensors) equals
    the tabular kernels' objective divided by the number of pairs: the same pairs, weights,
    bonus sign and normalization, for every pair loss."""
    mdp, policy, reference = transformer_instance(ragged_tree(), seed=0, init_std=0.5)
    rng = np.random.default_rng(0)
    data = PreferenceData(mdp)
    generator = torch.Generator().manual_seed(0)
    for _ in range(3):
        prompts = torch.as_tensor(rng.choice(mdp.n_states, size=6, p=mdp.start))
        y = xpo_sim.TrajectoryBatch(*(x.numpy() for x in policy.sample(prompts, generator)))
        y_tilde = xpo_sim.TrajectoryBatch(*(x.numpy() for x in reference.sample(prompts, generator)))
        xpo_sim.rounds.label_and_store(mdp, [data], xpo_sim.BradleyTerry(), y, y_tilde, rng, "second")
    beta, alpha = 0.7, 0.3
    tabular = LogitsClass(mdp, beta)
    for loss in ("dpo", "ipo", "ln_dpo"):
        objective = _Objective(policy, reference, beta, minibatch=10_000, device=torch.device("cpu"))
        objective.prepare(data, alpha, loss)
        with torch.no_grad():
            value = float(objective.loss(rng))
        expected, _ = tabular.objective(np.zeros((mdp.n_states, mdp.n_actions)), data, alpha, loss)
        assert value == pytest.approx(expected / data.n_pairs, rel=1e-5), loss


def test_reference_never_changes_and_the_policy_does():
    mdp, policy, reference = transformer_instance(envs.token_tree(2, 2, seed=0), **SMALL)
    before = {k: v.clone() for k, v in reference.state_dict().items()}
    start = {k: v.clone() for k, v in policy.state_dict().items()}
    train(mdp, XPO(batch=4, alpha=0.1), 0.5, 4, policy, reference=reference, seed=0)
    for name, value in reference.state_dict().items():
        assert torch.equal(value, before[name]), name
    assert any(not torch.equal(v, start[k]) for k, v in policy.state_dict().items())
    np.testing.assert_array_equal(reference.logp_table(), mdp.ref_logp)


def test_train_rejects_an_instance_whose_reference_is_not_the_transformer():
    mdp = envs.token_tree(2, 2, seed=0)
    policy = TinyTransformerPolicy(mdp, **SMALL)
    with pytest.raises(ValueError, match="with_reference"):
        train(mdp, OnlineDPO(), 0.5, 2, policy)
    with pytest.raises(ValueError, match="different tree"):
        train(envs.token_tree(3, 2, seed=0), OnlineDPO(), 0.5, 2, policy)


METHOD_TABLE_ALGORITHMS = [
    XPO(batch=2), XPO(batch=2, sampler="current"), XPO(batch=2, sampler="history"), OnlineDPO(batch=2),
    xpo_sim.HybridDPO(batch=2), OfflineDPO(batch=2), xpo_sim.IterativeDPO(k=3, batch=2), xpo_sim.IPO(batch=2),
    xpo_sim.LNDPO(batch=2), xpo_sim.SELM(batch=2), xpo_sim.ExPO(gamma=0.5, batch=2),
    xpo_sim.VPO(batch=2, expectation="sampled"),
]


@pytest.mark.parametrize("algorithm", METHOD_TABLE_ALGORITHMS, ids=lambda a: f"{a.name}-{a.explore_sampler}")
def test_every_method_table_algorithm_runs_with_the_transformer_through_run(algorithm):
    """The one round loop runs the transformer with every algorithm whose update is a policy
    update (their own collect/update/report hooks included); rows are exact and complete."""
    mdp, policy, reference = transformer_instance(envs.token_tree(2, 2, seed=0), **SMALL)
    start = {k: v.clone() for k, v in policy.state_dict().items()}
    df = xpo_sim.run(mdp, algorithm, 0.5, 3, seed=0, policy=policy, reference=reference, steps=2, eval_every=2)
    assert df["round"].tolist() == [0, 2, 3]
    assert list(df.columns) == COLUMNS
    assert (df.regret >= 0).all() and np.isfinite(df.regret).all()
    assert df.pairs.iloc[-1] > 0 and df.attrs["policy"] == "transformer" and df.attrs["sampled_tokens"] > 0
    assert any(not torch.equal(v, start[k]) for k, v in policy.state_dict().items())
    # the recorded regret is that of the network's own exact table
    final = xpo_sim.regret(mdp, algorithm.reported_logp(_FakeContext(mdp, policy.logp_table())), 0.5)
    assert df.regret.iloc[-1] == pytest.approx(final, rel=1e-12, abs=1e-15)


class _FakeContext:
    def __init__(self, mdp, logp):
        self.mdp, self.logp = mdp, logp


@pytest.mark.parametrize("algorithm, reason", [
    (xpo_sim.RLHF(), "needs a reward class.*'transformer' class lacks.*transformer parametrize a policy"),
    (xpo_sim.CountUCB(), "needs a reward class.*'transformer' class lacks.*transformer parametrize a policy"),
    (xpo_sim.SEPOPO(), "needs a reward class.*'transformer' class lacks.*incentive"),
    (xpo_sim.InverseQStar(), "from_logp.*'transformer' class has none.*per-state table"),
    (xpo_sim.VPO(expectation="exact"), "aggregated_data.*'transformer' class does not.*exact calibration"),
], ids=lambda a: getattr(a, "name", ""))
def test_methods_that_cannot_use_the_transformer_say_why(algorithm, reason):
    mdp, policy, reference = transformer_instance(envs.token_tree(2, 2, seed=0), **SMALL)
    with pytest.raises(ValueError, match=reason):
        xpo_sim.run(mdp, algorithm, 0.5, 2, policy=policy, reference=reference)


def test_train_is_an_alias_of_run():
    mdp, policy, reference = transformer_instance(envs.token_tree(2, 2, seed=0), **SMALL)
    a = train(mdp, XPO(batch=3), 0.5, 3, copy.deepcopy(policy), reference=reference, seed=4, steps=2)
    b = xpo_sim.run(mdp, XPO(batch=3), 0.5, 3, seed=4, policy=copy.deepcopy(policy), reference=reference, steps=2)
    pd.testing.assert_frame_equal(a, b)


def test_transformer_options_are_checked_at_the_edge():
    mdp, policy, reference = transformer_instance(envs.token_tree(2, 2, seed=0), **SMALL)
    for options, name in ((dict(steps=0), "steps"), (dict(lr=-1.0), "lr"), (dict(minibatch=1.5), "minibatch"),
                          (dict(precision="fp16"), "precision"), (dict(reference="ref"), "reference"),
                          (dict(eval_every=0), "eval_every")):
        with pytest.raises(ValueError, match=name):
            xpo_sim.run(mdp, XPO(), 0.5, 2, policy=policy, **{"reference": reference, **options})


def test_short_cpu_run_lowers_regret_on_an_easy_instance():
    """token_tree(2, 2) with rewards ×4 (Bradley–Terry labels up to σ(4·gap), a clear
    signal), β = 0.5 (π* soft: 0.76 on the best response), XPO with ỹ ∼ π_ref: 20 rounds of
    8 pairs compare each of the 4 responses about 80 times. The DPO maximum-likelihood
    reward estimate then has a variance of about 1/(80 · 0.15) ≈ 0.08 per response (0.15: a
    typical Bradley–Terry Fisher information p(1 − p) here), hence a regret of about
    Var/(2β) ≈ 0.08, a quarter of π_ref's 0.35. Requiring half of π_ref's regret leaves
    twice that for optimization error."""
    beta = 0.5
    mdp, policy, reference = transformer_instance(scaled_rewards(envs.token_tree(2, 2, seed=0), 4.0))
    df = train(mdp, XPO(batch=8, alpha=0.01, schedule="inv_sqrt"), beta, 20, policy, reference=reference,
               seed=0, eval_every=5)
    initial, final = df.regret.iloc[0], df.regret.iloc[-1]
    assert initial == pytest.approx(0.35, abs=0.01)
    assert final < 0.5 * initial
    assert df.opt_mass.iloc[-1] > df.opt_mass.iloc[0]


@pytest.mark.parametrize("algorithm", [
    XPO(batch=3, alpha=0.05, sampler="history"),
    XPO(batch=3, alpha=0.05, sampler="current", loss="ln_dpo"),
    HybridDPO(batch=3, loss="ipo"),
], ids=["xpo_history_minibatch", "xpo_current_ln_dpo", "hybrid_ipo"])
def test_same_seed_same_frame_other_seed_other_frame(algorithm):
    mdp, policy, reference = transformer_instance(ragged_tree(), **SMALL)

    def once(seed):
        return train(mdp, algorithm, 0.5, 6, copy.deepcopy(policy), reference=reference, seed=seed,
                     eval_every=2, minibatch=4)

    first, second, other = once(7), once(7), once(8)
    pd.testing.assert_frame_equal(first, second, check_exact=True)
    assert not first.equals(other)
    assert list(first.columns) == COLUMNS
    assert first["round"].tolist() == [0, 2, 4, 6]
    assert first.pairs.tolist() == [0, 6, 12, 18]
    assert np.isfinite(first.log_concentrability.iloc[1:]).all()


def test_offline_dpo_and_the_untracked_concentrability():
    mdp, policy, reference = transformer_instance(envs.token_tree(2, 2, seed=0), **SMALL)
    df = train(mdp, OfflineDPO(batch=2, dataset_size=10), 0.5, 5, policy, reference=reference, seed=0,
               track_concentrability=False)
    assert df["round"].tolist() == [0, 1] and df.pairs.tolist() == [0, 10]
    assert df.log_concentrability.isna().all()
    assert df.attrs["sampled_tokens"] == 2 * 10 * 2 and df.attrs["device"] == "cpu"


def test_device_cuda_when_asked():
    mdp = envs.token_tree(2, 2, seed=0)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="cuda"):
            TinyTransformerPolicy(mdp, device="cuda", **SMALL)
        replaced, policy, reference = transformer_instance(mdp, **SMALL)
        with pytest.raises(ValueError, match="cuda"):
            train(replaced, OnlineDPO(), 0.5, 2, policy, device="cuda")
    else:
        replaced, policy, reference = transformer_instance(mdp, **SMALL)
        df = train(replaced, XPO(batch=4), 0.5, 3, policy, reference=reference, device="cuda")
        assert df.attrs["device"].startswith("cuda") and policy.device.type == "cuda"
        assert list(df.columns) == COLUMNS and np.isfinite(df.regret).all()


# ---------------------------------------------------------------- the experiment script
def test_experiment_script_smoke_run(tmp_path):
    out, figures = tmp_path / "out", tmp_path / "figures"
    result = subprocess.run(
        [sys.executable, "experiments/transformer_xpo.py", "--quick", "--seeds", "1", "--rounds", "4",
         "--out", str(out), "--figures", str(figures)],
        cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    df = pd.read_csv(out / "results.csv")
    assert set(COLUMNS) <= set(df.columns)
    assert set(df.group) == {"transformer", "logits", "implicit"}
    assert df.groupby(["group", "label"]).size().shape[0] == 6
    # the transformer and the tabular runs share one instance: the same π_ref regret
    assert df[df["round"] == 0].regret.nunique() == 1
    assert (figures / "transformer_xpo.png").stat().st_size > 10_000
    assert (out / "summary.csv").exists()


def test_experiment_script_bad_argument_is_a_clean_error(tmp_path):
    result = subprocess.run(
        [sys.executable, "experiments/transformer_xpo.py", "--eps", "2", "--out", str(tmp_path)],
        cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "--eps must lie in (0, 1)" in result.stderr and "Traceback" not in result.stderr


def test_transformer_class_objective_gradient_matches_finite_differences():
    """TransformerClass.objective (the protocol's full-data L / pairs and ∂L/∂θ, flattened)
    against a central difference along a random direction of the parameters."""
    mdp, policy, reference = transformer_instance(envs.token_tree(2, 2, seed=0), **SMALL)
    cls = policy.as_policy_class(mdp, 0.5, reference=reference)
    data = PreferenceData(mdp)
    rng = np.random.default_rng(0)
    a = xpo_sim.sample_trajectories(mdp, mdp.ref_logp, 6, rng)
    b = xpo_sim.sample_trajectories(mdp, mdp.ref_logp, 6, rng, start_states=a.start_states)
    data.add_pairs(data.path_ids(a), data.path_ids(b))
    data.add_explored(data.path_ids(b))
    value, grad = cls.objective(policy, data, 0.3, "dpo")
    direction = [torch.randn_like(p, generator=torch.Generator().manual_seed(i))
                 for i, p in enumerate(policy.parameters())]
    h = 1e-3

    def shifted(step):
        with torch.no_grad():
            for p, d in zip(policy.parameters(), direction):
                p.add_(step * d)
        return cls.objective(policy, data, 0.3, "dpo")[0]

    upper, lower = shifted(h), shifted(-2 * h)
    shifted(h)
    flat = torch.cat([d.reshape(-1) for d in direction]).numpy()
    assert np.isfinite(value)
    assert float(grad @ flat) == pytest.approx((upper - lower) / (2 * h), rel=2e-2, abs=1e-3)
