"""xpo_sim.losses: closed forms, a naive float64 oracle, stability at extremes, gradients
(autograd and finite differences), and numpy ↔ torch agreement for every function."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from xpo_sim import losses

LOGP = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False)
BETA = st.floats(math.log(1e-3), math.log(1e1)).map(math.exp)


def naive_sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    return math.exp(x) / (1.0 + math.exp(x))


def random_inputs(n=7, seed=0, scale=3.0):
    """Four per-pair log-probability arrays (float64) with margins of order one."""
    rng = np.random.default_rng(seed)
    return tuple(-np.abs(rng.normal(0.0, scale, size=n)) - 0.5 for _ in range(4))


@pytest.fixture(autouse=True)
def _floating_point_errors_raise():
    """No test here may pass while numpy overflows, divides by zero or makes a nan."""
    with np.errstate(over="raise", divide="raise", invalid="raise"), warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


# ------------------------------------------------------------------ closed forms
@pytest.mark.parametrize("beta", [1e-3, 0.1, 1.0, 7.0])
def test_dpo_loss_at_reference_is_log_2(beta):
    lc, lr, _, _ = random_inputs()
    loss = losses.dpo_loss(lc, lr, lc.copy(), lr.copy(), beta)
    assert loss.shape == lc.shape
    np.testing.assert_allclose(loss, math.log(2.0), rtol=1e-15)
    np.testing.assert_array_equal(losses.dpo_margin(lc, lr, lc.copy(), lr.copy(), beta), 0.0)


@pytest.mark.parametrize("beta", [1e-3, 0.1, 1.0, 7.0])
def test_ipo_loss_at_reference_is_quarter_inverse_beta_squared(beta):
    lc, lr, _, _ = random_inputs()
    loss = losses.ipo_loss(lc, lr, lc.copy(), lr.copy(), beta)
    np.testing.assert_allclose(loss, 1.0 / (4.0 * beta**2), rtol=1e-14)


def test_ipo_loss_is_zero_at_its_target_margin():
    beta = 0.25
    ref = np.array([-1.0, -2.0])
    # h = (lc - ref_c) - (lr - ref_r) = 1 / (2β) = 2 exactly
    loss = losses.ipo_loss(np.array([-1.0, 0.0]), np.array([-3.0, -2.0]), ref, ref, beta)
    np.testing.assert_array_equal(loss, 0.0)


def test_dpo_margin_signs():
    """m = β[(lc − rc) − (lr − rr)]: raising the chosen response's log-prob raises m."""
    lc, lr, rc, rr = (np.array([x]) for x in (-1.0, -2.0, -1.5, -1.25))
    m = losses.dpo_margin(lc, lr, rc, rr, 2.0)
    np.testing.assert_array_equal(m, 2.0 * ((-1.0 + 1.5) - (-2.0 + 1.25)))
    assert m[0] == 2.5
    assert losses.dpo_loss(lc, lr, rc, rr, 2.0)[0] < math.log(2.0)
    assert losses.dpo_loss(lr, lc, rc, rr, 2.0)[0] > math.log(2.0)


@given(
    rows=st.lists(st.tuples(LOGP, LOGP, LOGP, LOGP), min_size=1, max_size=20),
    beta=BETA,
)
def test_dpo_loss_matches_naive_float64_formula(rows, beta):
    lc, lr, rc, rr = (np.array(col, dtype=np.float64) for col in zip(*rows))
    loss = losses.dpo_loss(lc, lr, rc, rr, beta)
    assert loss.dtype == np.float64 and loss.shape == lc.shape
    for i, (a, b, c, d) in enumerate(rows):
        m = beta * ((a - c) - (b - d))
        if -m <= 700.0:  # exp(-m) is finite: the textbook formula is safe
            expected = math.log(1.0 + math.exp(-m))
            # log(1 + x) loses x below the rounding of 1 + x: about 2.2e-16 absolute.
            tolerance = 1e-13 * expected + 4.5e-16
        else:  # log(1 + e^{-m}) = -m + log(1 + e^{m}), with e^{m} < e^{-700}
            expected = -m + math.log(1.0 + math.exp(m))
            tolerance = 1e-13 * expected
        assert abs(loss[i] - expected) <= tolerance, (m, loss[i], expected)


# ------------------------------------------------------------------ stable helpers
def test_log_sigmoid_exact_at_extremes():
    x = np.array([-1e4, -1e3, -40.0, 0.0, 40.0, 1e3, 1e4])
    out = losses.log_sigmoid(x)
    np.testing.assert_array_equal(out[[0, 1]], [-1e4, -1e3])
    np.testing.assert_array_equal(out[[5, 6]], [0.0, 0.0])
    assert out[3] == -math.log(2.0)
    np.testing.assert_allclose(out[2], -40.0 - math.exp(-40.0), rtol=1e-15)
    np.testing.assert_allclose(out[4], -math.exp(-40.0), rtol=1e-12)  # not 0: no 1+x loss


def test_log_sigmoid_matches_naive_on_moderate_values():
    x = np.linspace(-30.0, 30.0, 121)
    expected = np.array([math.log(naive_sigmoid(v)) for v in x])
    np.testing.assert_allclose(losses.log_sigmoid(x), expected, rtol=1e-12, atol=1e-15)


def test_logsumexp_stable_at_extremes_and_all_neg_inf_rows():
    inf = math.inf
    x = np.array(
        [
            [1e3, 1e3, -inf],
            [-1e3, -1e3, -1e3],
            [-inf, -inf, -inf],
            [-inf, 0.0, -inf],
            [1e4, 0.0, -1e4],
        ]
    )
    out = losses.logsumexp(x)
    assert out.shape == (5,)
    np.testing.assert_allclose(out[0], 1e3 + math.log(2.0), rtol=1e-15)
    np.testing.assert_allclose(out[1], -1e3 + math.log(3.0), rtol=1e-15)
    assert out[2] == -inf
    assert out[3] == 0.0
    assert out[4] == 1e4
    np.testing.assert_array_equal(losses.logsumexp(np.full((2, 0), 1.0)), [-inf, -inf])


def test_logsumexp_matches_naive_along_each_axis():
    x = np.random.default_rng(1).normal(0.0, 5.0, size=(4, 6))
    for axis in (0, 1, -1):
        expected = np.log(np.sum(np.exp(x), axis=axis))
        np.testing.assert_allclose(losses.logsumexp(x, axis=axis), expected, rtol=1e-13)
    kept = losses.logsumexp(x, axis=0, keepdims=True)
    assert kept.shape == (1, 6)
    np.testing.assert_allclose(kept[0], np.log(np.sum(np.exp(x), axis=0)), rtol=1e-13)


# ------------------------------------------------------------------ gradients
def test_dpo_gradient_by_central_finite_differences():
    """∂ℓ/∂ log π(τ₊) = −β σ(−m) and ∂ℓ/∂ log π(τ₋) = +β σ(−m), per pair.

    The loss is elementwise, so perturbing the whole vector by ±h differentiates each pair.
    With h = 1e-5 the truncation error is ≲ h² β³ and the rounding error ≲ 1e-16/h.
    """
    beta = 0.7
    lc, lr, rc, rr = random_inputs(n=11, seed=3)
    m = losses.dpo_margin(lc, lr, rc, rr, beta)
    assert np.ptp(m) > 1.0  # a spread of margins, not one point
    expected = np.array([-beta * naive_sigmoid(-v) for v in m])
    h = 1e-5
    d_chosen = (
        losses.dpo_loss(lc + h, lr, rc, rr, beta) - losses.dpo_loss(lc - h, lr, rc, rr, beta)
    ) / (2 * h)
    d_rejected = (
        losses.dpo_loss(lc, lr + h, rc, rr, beta) - losses.dpo_loss(lc, lr - h, rc, rr, beta)
    ) / (2 * h)
    np.testing.assert_allclose(d_chosen, expected, rtol=0, atol=1e-9)
    np.testing.assert_allclose(d_rejected, -expected, rtol=0, atol=1e-9)


def test_dpo_gradient_by_autograd():
    torch = pytest.importorskip("torch")
    beta = 0.7
    arrays = [torch.tensor(a, requires_grad=True) for a in random_inputs(n=11, seed=3)]
    lc, lr, rc, rr = arrays
    loss = losses.dpo_loss(lc, lr, rc, rr, beta)
    loss.sum().backward()
    m = beta * ((lc - rc) - (lr - rr)).detach().numpy()
    expected = np.array([-beta * naive_sigmoid(-v) for v in m])
    np.testing.assert_allclose(lc.grad.numpy(), expected, rtol=1e-14, atol=1e-16)
    np.testing.assert_allclose(lr.grad.numpy(), -expected, rtol=1e-14, atol=1e-16)
    np.testing.assert_allclose(rc.grad.numpy(), -expected, rtol=1e-14, atol=1e-16)
    np.testing.assert_allclose(rr.grad.numpy(), expected, rtol=1e-14, atol=1e-16)


# ------------------------------------------------------------------ numpy ↔ torch
def _cases(seed):
    """(name, function of arrays, numpy inputs, analytic gradients wrt each input)."""
    rng = np.random.default_rng(seed)
    lc, lr, rc, rr = random_inputs(n=9, seed=seed)
    explore = -np.abs(rng.normal(0.0, 3.0, size=5)) - 0.1
    ref_explore = -np.abs(rng.normal(0.0, 3.0, size=5)) - 0.1
    beta, alpha = 0.3, 0.05
    m = beta * ((lc - rc) - (lr - rr))
    s = np.array([naive_sigmoid(-v) for v in m])  # σ(−m)
    h = (lc - rc) - (lr - rr)
    ipo = 2.0 * (h - 1.0 / (2.0 * beta))
    wide = rng.normal(0.0, 4.0, size=(3, 6))
    wide[1, :] = -np.inf
    wide[2, [0, 4]] = -np.inf
    softmax = np.zeros_like(wide)  # ∂ logsumexp / ∂x; 0 on the all −inf row
    for i, row in enumerate(wide):
        if np.isfinite(row).any():
            lse = math.log(sum(math.exp(v) for v in row if v > -math.inf))
            softmax[i] = [math.exp(v - lse) if v > -math.inf else 0.0 for v in row]
    x = np.array([-50.0, -3.0, 0.0, 2.5, 50.0])
    sig_neg_x = np.array([naive_sigmoid(-v) for v in x])
    one = np.ones_like(lc)
    len_c, len_r = rng.integers(1, 6, size=9).astype(float), rng.integers(1, 6, size=9).astype(float)
    m_ln = beta * ((lc - rc) / len_c - (lr - rr) / len_r)
    s_ln = np.array([naive_sigmoid(-v) for v in m_ln])
    return [
        (
            "ln_dpo_loss",
            lambda a, b, c, d: losses.ln_dpo_loss(a, b, c, d, len_c, len_r, beta),
            [lc, lr, rc, rr],
            [-beta * s_ln / len_c, beta * s_ln / len_r, beta * s_ln / len_c, -beta * s_ln / len_r],
        ),
        ("log_sigmoid", lambda x: losses.log_sigmoid(x), [x], [sig_neg_x]),
        ("logsumexp", lambda w: losses.logsumexp(w, axis=-1), [wide], [softmax]),
        (
            "dpo_margin",
            lambda a, b, c, d: losses.dpo_margin(a, b, c, d, beta),
            [lc, lr, rc, rr],
            [beta * one, -beta * one, -beta * one, beta * one],
        ),
        (
            "dpo_loss",
            lambda a, b, c, d: losses.dpo_loss(a, b, c, d, beta),
            [lc, lr, rc, rr],
            [-beta * s, beta * s, beta * s, -beta * s],
        ),
        (
            "ipo_loss",
            lambda a, b, c, d: losses.ipo_loss(a, b, c, d, beta),
            [lc, lr, rc, rr],
            [ipo, -ipo, -ipo, ipo],
        ),
        ("xpo_bonus", lambda e: losses.xpo_bonus(e, alpha), [explore], [alpha * np.ones(5)]),
        (
            "selm_bonus",
            lambda e, r: losses.selm_bonus(e, r, alpha, beta),
            [explore, ref_explore],
            [alpha * beta * np.ones(5), -alpha * beta * np.ones(5)],
        ),
        (
            "xpo_objective",
            lambda a, b, c, d, e: losses.xpo_objective(a, b, c, d, e, beta, alpha),
            [lc, lr, rc, rr, explore],
            [-beta * s, beta * s, beta * s, -beta * s, alpha * np.ones(5)],
        ),
    ]


CASE_NAMES = [name for name, *_ in _cases(0)]


def _case(name, seed=0):
    return next(case for case in _cases(seed) if case[0] == name)


@pytest.mark.parametrize("name", CASE_NAMES)
@pytest.mark.parametrize(
    "dtype, rtol, atol", [("float64", 1e-12, 1e-12), ("float32", 1e-6, 1e-6)]
)
def test_numpy_and_torch_agree(name, dtype, rtol, atol):
    torch = pytest.importorskip("torch")
    _, function, inputs, _ = _case(name)
    np_inputs = [a.astype(dtype) for a in inputs]
    torch_inputs = [torch.from_numpy(a.copy()) for a in np_inputs]
    np_out = function(*np_inputs)
    torch_out = function(*torch_inputs)
    assert isinstance(np_out, (np.ndarray, np.floating)) and isinstance(torch_out, torch.Tensor)
    assert np_out.dtype == np.dtype(dtype)
    assert torch_out.dtype == getattr(torch, dtype)
    assert tuple(torch_out.shape) == np_out.shape
    np.testing.assert_allclose(torch_out.numpy(), np_out, rtol=rtol, atol=atol)


@pytest.mark.parametrize("name", CASE_NAMES)
def test_torch_gradients_match_analytic(name):
    torch = pytest.importorskip("torch")
    _, function, inputs, gradients = _case(name)
    tensors = [torch.tensor(a, requires_grad=True) for a in inputs]
    out = function(*tensors)
    finite = torch.isfinite(out)
    out[finite].sum().backward()
    for tensor, expected in zip(tensors, gradients):
        assert tensor.grad is not None
        assert torch.isfinite(tensor.grad).all()
        np.testing.assert_allclose(tensor.grad.numpy(), expected, rtol=1e-12, atol=1e-14)


def test_logsumexp_all_neg_inf_row_in_torch_is_neg_inf_with_zero_gradient():
    torch = pytest.importorskip("torch")
    x = torch.full((2, 3), -math.inf, dtype=torch.float64)
    with torch.no_grad():
        x[1, 2] = 1.5
    x.requires_grad_(True)
    out = losses.logsumexp(x)
    assert out[0].item() == -math.inf and out[1].item() == 1.5
    out[1].backward()
    np.testing.assert_array_equal(x.grad.numpy(), [[0.0, 0.0, 0.0], [0.0, 0.0, 1.0]])


def test_losses_module_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, xpo_sim.losses; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


# ------------------------------------------------------------------ XPO and SELM
def test_xpo_objective_decreases_when_mass_moves_away_from_explored_response():
    """Three responses to one prompt; the pair is (0 ≻ 1) and ỹ = 2 was explored.
    Scaling π(0) and π(1) by one factor c > 1 and taking the mass from π(2) leaves the DPO
    margin unchanged, so only the bonus moves: down for α > 0, not at all for α = 0."""
    beta = 0.5
    ref = np.log(np.array([0.2, 0.3, 0.5]))

    def objective(pi, alpha):
        logp = np.log(pi)
        return losses.xpo_objective(
            logp[[0]], logp[[1]], ref[[0]], ref[[1]], logp[[2]], beta, alpha
        )

    before = np.array([0.2, 0.3, 0.5])
    after = np.array([0.2 * 1.5, 0.3 * 1.5, 1.0 - 0.5 * 1.5])
    for alpha in (0.01, 1.0):
        assert objective(after, alpha) < objective(before, alpha)
        np.testing.assert_allclose(
            objective(before, alpha) - objective(after, alpha),
            alpha * (math.log(0.5) - math.log(0.25)),
            rtol=1e-12,
        )
    np.testing.assert_allclose(objective(after, 0.0), objective(before, 0.0), rtol=1e-14)
    # α = 0 is exactly DPO
    dpo = losses.dpo_loss(np.log(before[[0]]), np.log(before[[1]]), ref[[0]], ref[[1]], beta)
    assert objective(before, 0.0) == dpo.sum()


def test_xpo_objective_is_sum_of_dpo_and_bonus():
    lc, lr, rc, rr = random_inputs(n=6, seed=5)
    explore = np.array([-1.0, -2.5, -0.25])
    beta, alpha = 0.2, 0.3
    total = losses.xpo_objective(lc, lr, rc, rr, explore, beta, alpha)
    assert np.ndim(total) == 0
    expected = losses.dpo_loss(lc, lr, rc, rr, beta).sum() + alpha * explore.sum()
    np.testing.assert_allclose(total, expected, rtol=1e-15)


@given(
    rows=st.lists(st.tuples(LOGP, LOGP), min_size=1, max_size=10),
    alpha_selm=st.floats(0.0, 10.0),
    beta=BETA,
)
def test_trl_and_selm_bonus_differ_by_alpha_ref_logp(rows, alpha_selm, beta):
    """α_TRL log π(ỹ) − α_SELM β log(π/π_ref)(ỹ) = α_TRL log π_ref(ỹ) with α_TRL = α_SELM β:
    independent of π, so shifting log π leaves the difference unchanged."""
    logp, ref = (np.array(col) for col in zip(*rows))
    alpha_trl = alpha_selm * beta
    diff = losses.xpo_bonus(logp, alpha_trl) - losses.selm_bonus(logp, ref, alpha_selm, beta)
    scale = alpha_trl * (np.abs(logp) + np.abs(ref))
    np.testing.assert_allclose(diff, alpha_trl * ref, rtol=0, atol=1e-14 * scale.max() + 1e-300)
    moved = losses.xpo_bonus(logp - 3.0, alpha_trl) - losses.selm_bonus(
        logp - 3.0, ref, alpha_selm, beta
    )
    np.testing.assert_allclose(moved, diff, rtol=0, atol=1e-14 * (scale.max() + 3 * alpha_trl) + 1e-300)


def test_xpo_bonus_sign_is_plus():
    explore = np.array([-1.0, -4.0])
    np.testing.assert_array_equal(losses.xpo_bonus(explore, 0.5), [-0.5, -2.0])
    np.testing.assert_array_equal(
        losses.selm_bonus(explore, np.array([-2.0, -2.0]), 0.5, 0.25), [0.125, -0.25]
    )


# ------------------------------------------------------------------ validation
BAD_BETAS = [0.0, -1.0, math.inf, math.nan, True]
BAD_ALPHAS = [-1e-9, math.inf, math.nan, False]


@pytest.mark.parametrize("beta", BAD_BETAS)
def test_bad_beta_raises(beta):
    x = np.zeros(2)
    for call in (
        lambda: losses.dpo_loss(x, x, x, x, beta),
        lambda: losses.dpo_margin(x, x, x, x, beta),
        lambda: losses.ipo_loss(x, x, x, x, beta),
        lambda: losses.selm_bonus(x, x, 0.1, beta),
        lambda: losses.xpo_objective(x, x, x, x, x, beta, 0.1),
    ):
        with pytest.raises(ValueError, match="beta"):
            call()


@pytest.mark.parametrize("alpha", BAD_ALPHAS)
def test_bad_alpha_raises(alpha):
    x = np.zeros(2)
    for call in (
        lambda: losses.xpo_bonus(x, alpha),
        lambda: losses.selm_bonus(x, x, alpha, 0.1),
        lambda: losses.xpo_objective(x, x, x, x, x, 0.1, alpha),
    ):
        with pytest.raises(ValueError, match="alpha"):
            call()


def test_non_float_or_non_array_inputs_raise():
    x = np.zeros(2)
    with pytest.raises(ValueError, match="floating"):
        losses.dpo_loss(np.zeros(2, dtype=np.int64), x, x, x, 0.1)
    with pytest.raises(ValueError, match="logp_explore"):
        losses.xpo_bonus([-1.0, -2.0], 0.1)


def test_mixed_backends_raise():
    torch = pytest.importorskip("torch")
    x = np.zeros(2)
    with pytest.raises(ValueError, match="one backend"):
        losses.dpo_loss(torch.zeros(2, dtype=torch.float64), x, x, x, 0.1)
