"""Coverability over several prompts (xpo_sim.metrics.coverability, ``over_prompts``): the
per-prompt maximum ("max", the default) and the ρ-average ("rho_mean", a joint μ over
(x, τ) against ρ(x)π(τ|x)), each against brute force over the box's vertices on
multi-prompt instances with unequal ρ."""

import numpy as np
import pytest

import naive
import xpo_sim
from xpo_sim import envs
from xpo_sim.metrics import coverability
from xpo_sim.policies import ImplicitRewardClass


def with_start(mdp, start):
    """The instance with prompt distribution ``start`` (zero on the other states)."""
    rho = np.zeros(mdp.n_states)
    rho[: len(start)] = start
    return xpo_sim.TokenMDP(mdp.next_state, mdp.reward, mdp.ref_logp, rho)


def parameters(mdp, beta, box, support):
    """The (state, token) of each parameter of the implicit class (one-hot features)."""
    features = ImplicitRewardClass(mdp, beta, box=box, support=support).features.tocsc()
    rows = [int(features.indices[features.indptr[k]]) for k in range(features.shape[1])]
    return [divmod(r, mdp.n_actions) for r in rows]


CASES = [
    ("bandit, 3 prompts", lambda: with_start(envs.bandit(3, n_prompts=3, seed=4), [0.5, 0.3, 0.2]), 0.5,
     (0.0, 1.0), "auto"),
    ("token tree, 2 prompts, terminal", lambda: with_start(envs.token_tree(2, 2, 2, seed=2), [0.8, 0.2]), 0.4,
     (-0.5, 1.0), "terminal"),
    ("token tree, 2 prompts, every token", lambda: with_start(envs.token_tree(2, 2, 2, seed=5), [0.35, 0.65]), 0.7,
     (0.0, 1.5), "all"),
]


@pytest.mark.parametrize("name, build, beta, box, support", CASES, ids=[c[0] for c in CASES])
def test_both_definitions_match_brute_force(name, build, beta, box, support):
    mdp = build()
    brute = naive.coverability_by_prompt_vertices(mdp, beta, box, parameters(mdp, beta, box, support))
    rho = {x: float(mdp.start[x]) for x in brute}
    assert len(brute) >= 2 and len(set(brute.values())) > 1  # the two definitions differ here
    expected_max = max(brute.values())
    expected_mean = sum(rho[x] * v for x, v in brute.items())
    assert expected_mean < expected_max - 1e-6
    assert coverability(mdp, beta, box=box, support=support) == pytest.approx(expected_max, rel=1e-12)
    assert coverability(mdp, beta, box=box, support=support, over_prompts="max") == pytest.approx(expected_max,
                                                                                                rel=1e-12)
    assert coverability(mdp, beta, box=box, support=support, over_prompts="rho_mean") == pytest.approx(
        expected_mean, rel=1e-12)
    for mode, expected in (("max", expected_max), ("rho_mean", expected_mean)):
        details = coverability(mdp, beta, box=box, support=support, over_prompts=mode, return_details=True)
        assert details.over_prompts == mode
        assert details.value == pytest.approx(expected, rel=1e-12)
        assert details.rho_mean == pytest.approx(expected_mean, rel=1e-12)
        assert set(details.per_prompt) == set(brute)
        for x, value in brute.items():
            assert details.per_prompt[x] == pytest.approx(value, rel=1e-12)


def test_one_prompt_gives_one_value():
    mdp = envs.token_tree(3, 2, seed=1)
    assert coverability(mdp, 0.5, over_prompts="rho_mean") == pytest.approx(coverability(mdp, 0.5), rel=1e-14)


def test_rho_mean_of_a_linear_class_is_the_rho_average_of_its_prompts():
    mdp = envs.feature_bandit(6, 2, 0.1, n_prompts=3, seed=0)
    details = coverability(mdp, 0.3, "linear", return_details=True)
    assert details.over_prompts == "max" and details.value == max(details.per_prompt.values())
    mean = coverability(mdp, 0.3, "linear", over_prompts="rho_mean")
    assert mean == pytest.approx(sum(mdp.start[x] * v for x, v in details.per_prompt.items()), rel=1e-12)
    assert 1.0 - 1e-12 <= mean <= details.value + 1e-12


@pytest.mark.parametrize("bad", ["mean", "MAX", "", None, 1, ("max",)])
def test_bad_over_prompts_raises_naming_it(bad):
    with pytest.raises(ValueError, match="over_prompts"):
        coverability(envs.bandit(3, n_prompts=2), 0.5, over_prompts=bad)
