"""`DenoiserKernel`: a pretrained ε- or x⁰-predictor as a dpm_ppl reverse kernel (DDPM parameterisation).

References: the oracles of `dpm_ppl._kernels` (exact reversals) and the float64 algebra of `helpers`.
"""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import EPS32, assert_within_se, mean_se, np_alpha_bar, np_oracle_coefficients, var_se
from scipy.stats import norm

from dpm_ppl import (
    ArraySchedule,
    DenoiserKernel,
    GaussianDiffusion,
    GaussianMixtureOracle,
    GaussianOracle,
    GeometricSchedule,
    IsotropicOracle,
    log_likelihood,
    sample,
)
from dpm_ppl import _gaussian as gaussian


DDPM = np.linspace(1e-4, 0.02, 1000)
SHORT = np.asarray(GeometricSchedule(10, 0.01, 0.5)(), np.float64)
SCHEDULES = {"short": SHORT, "ddpm": DDPM}
MEAN, STD = np.array([0.5, -1.0, 2.0]), np.array([0.4, 0.7, 1.5])
X = jnp.array([0.3, -1.2, 2.0])

_jit_call = eqx.filter_jit(lambda kernel, x, t: kernel(x, t))


def _call(kernel, x, t):
    """kernel(x, t), compiled once per kernel structure (t traced, not a static Python int)."""
    return _jit_call(kernel, x, jnp.asarray(t))


def _steps(betas):
    T = len(betas)
    return sorted({2, 3, T // 2, T - 1, T})


def _gaussian_x0(betas):
    """E[x⁰ | xᵗ] for data N(MEAN, STD²) per coordinate: m + s²√ᾱ/(ᾱ s² + 1 − ᾱ)·(xᵗ − √ᾱ m)."""
    abar = jnp.asarray(np_alpha_bar(betas), jnp.float32)
    mean, var = jnp.asarray(MEAN, jnp.float32), jnp.asarray(STD**2, jnp.float32)

    def fn(x, t):
        r = jnp.sqrt(abar[t])
        return mean + var * r / (abar[t] * var + 1 - abar[t]) * (x - r * mean)

    return fn


def _log_variance_coefficient(betas, target):
    """v per step (row t − 1) with exp(v log β_t + (1 − v) log β̃_t) = target, float64; row 0 unused."""
    abar = np_alpha_bar(betas)
    beta_tilde = np.concatenate([[np.nan], (1 - abar[1:-1]) * betas[1:] / (1 - abar[2:])])
    with np.errstate(invalid="ignore", divide="ignore"):
        return (np.log(target) - np.log(beta_tilde)[:, None]) / (np.log(betas) - np.log(beta_tilde))[:, None]


@pytest.mark.parametrize("name", SCHEDULES)
def test_exact_eps_of_isotropic_data_is_the_forward_kernel(name):
    """Data N(0, I): E[ε | xᵗ] = √(1−ᾱ_t)·xᵗ, and with variance β_t the kernel is `IsotropicOracle`, N(√(1−β_t)xᵗ, β_t).

    Tolerance: x̂⁰ = (xᵗ − (1−ᾱ_t)xᵗ)/√ᾱ_t cancels to √ᾱ_t xᵗ with absolute error ~2ε₃₂|xᵗ|/√ᾱ_t, which the
    mean's coefficient c0_t = √ᾱ_{t−1}β_t/(1−ᾱ_t) scales by c0_t/√ᾱ_t = β_t/(√α_t(1−ᾱ_t)) ≤ 1: 16 ε₃₂·|xᵗ|.
    """
    betas = SCHEDULES[name]
    oma = jnp.asarray(1 - np_alpha_bar(betas), jnp.float32)
    kernel = DenoiserKernel(lambda x, t: jnp.sqrt(oma[t]) * x, betas, predicts="eps", variance="beta")
    oracle = IsotropicOracle(jnp.asarray(betas, jnp.float32))
    for t in _steps(betas):
        mean, var = _call(kernel, X, t)
        want_mean, want_var = _call(oracle, X, t)
        assert mean.shape == var.shape == X.shape
        np.testing.assert_allclose(mean, want_mean, atol=16 * EPS32 * float(jnp.abs(X).max()), rtol=0)
        np.testing.assert_allclose(var, want_var, rtol=EPS32)


@pytest.mark.parametrize("name", SCHEDULES)
def test_exact_x0_of_gaussian_data_is_the_gaussian_oracle(name):
    """Data N(m, s²): with the exact x̂⁰ = E[x⁰ | xᵗ] the mean is `GaussianOracle`'s, whatever the variance; the
    learned variance with v = log(w_t/β̃_t)/log(β_t/β̃_t) gives its variance w_t too; β̃_t and β_t are the bounds.

    Tolerance: float32 evaluations of O(1) coefficients on |xᵗ| + |m| ≤ 4.5: 16 ε₃₂ on that scale for the mean;
    the variance's exp/log round trip has relative error ~ε₃₂(1 + |log β̃_t|) ≤ 12 ε₃₂: 32 ε₃₂ relative.
    """
    betas = SCHEDULES[name]
    fn = _gaussian_x0(betas)
    oracle = GaussianOracle(betas, MEAN, STD)
    _, _, w, _ = np_oracle_coefficients(betas, MEAN, STD)
    v = jnp.asarray(np.nan_to_num(_log_variance_coefficient(betas, w)), jnp.float32)  # (T, d)
    learned = DenoiserKernel(lambda x, t: (fn(x, t), v[t - 1]), betas, predicts="x0", variance="learned")
    fixed = {name: DenoiserKernel(fn, betas, predicts="x0", variance=name) for name in ("beta_tilde", "beta")}
    scale = 1 + float(jnp.abs(X).max()) + np.abs(MEAN).max()
    for t in _steps(betas):
        want_mean, want_var = _call(oracle, X, t)
        mean, var = _call(learned, X, t)
        np.testing.assert_allclose(mean, want_mean, atol=16 * EPS32 * scale, rtol=0, err_msg=f"t={t}")
        np.testing.assert_allclose(var, want_var, rtol=32 * EPS32, err_msg=f"t={t}")
        lo, hi = (_call(k, X, t) for k in fixed.values())
        np.testing.assert_array_equal(lo[0], mean)  # the same x̂⁰, the same μ̃_t
        np.testing.assert_allclose(lo[1], gaussian.posterior_variance(t, jnp.asarray(betas, jnp.float32)), rtol=0)
        np.testing.assert_allclose(hi[1], np.float32(betas[t - 1]), rtol=0)


@pytest.mark.parametrize("variance", ["beta_tilde", "learned"])
@pytest.mark.parametrize("clip", [None, 1.0])
def test_eps_and_x0_parameterisations_agree(variance, clip):
    """A predictor g of x⁰ and the ε-predictor it implies, (xᵗ − √ᾱ_t g)/√(1−ᾱ_t), give the same kernel, clipped or not.

    Tolerance: the ε route reconstructs x̂⁰ with error ~2ε₃₂(|xᵗ| + |g|)/√ᾱ_t, scaled by c0_t/√ᾱ_t ≤ 1 in the
    mean (as above) and clipping only shrinks it: 16 ε₃₂·(1 + |xᵗ| + |g|). The variance does not involve x̂⁰.
    """
    betas = DDPM
    abar = jnp.asarray(np_alpha_bar(betas), jnp.float32)
    oma = jnp.asarray(1 - np_alpha_bar(betas), jnp.float32)  # 1 − ᾱ_t in float64 first: float32 1 − ᾱ_2 keeps 3 digits
    g = lambda x, t: 2.0 * jnp.tanh(x) + t / len(betas)  # |g| ≤ 3: clipping at 1 bites
    vfun = lambda x, t: jax.nn.sigmoid(x)
    wrap = (lambda f: lambda x, t: (f(x, t), vfun(x, t))) if variance == "learned" else (lambda f: f)
    eps = lambda x, t: (x - jnp.sqrt(abar[t]) * g(x, t)) / jnp.sqrt(oma[t])
    k_x0 = DenoiserKernel(wrap(g), betas, predicts="x0", variance=variance, clip_x0=clip)
    k_eps = DenoiserKernel(wrap(eps), betas, predicts="eps", variance=variance, clip_x0=clip)
    x = jnp.array([-2.5, -0.3, 0.0, 0.8, 3.0])
    for t in _steps(betas):
        m1, v1 = _call(k_x0, x, t)
        m2, v2 = _call(k_eps, x, t)
        np.testing.assert_allclose(m2, m1, atol=16 * EPS32 * 7.0, rtol=0, err_msg=f"t={t}")
        np.testing.assert_allclose(v2, v1, rtol=EPS32, err_msg=f"t={t}")
        x0_hat = g(x, t) if clip is None else jnp.clip(g(x, t), -clip, clip)
        want = gaussian.posterior(x0_hat, x, t, jnp.asarray(betas, jnp.float32))[0]
        np.testing.assert_allclose(m1, want, rtol=EPS32, atol=EPS32)


def test_exact_denoiser_of_a_mixture_is_the_mixture_oracle():
    """x̂⁰ = E[x⁰ | xᵗ] of a Gaussian mixture with the learned v that puts σ_t² at β̃_t + c0_t²·Var[x⁰ | xᵗ]
    is `GaussianMixtureOracle`: the kernel's mean/variance come from x̂⁰ and v exactly as the oracle's do.

    Tolerance: the variance's exp/log round trip, 32 ε₃₂ relative; the mean, 16 ε₃₂ on |xᵗ| + |μ| ≤ 4.
    """
    betas = SHORT
    mixture = GaussianMixtureOracle(betas, [[-1.0, 0.0], [1.0, 1.0], [0.0, -1.5]], [0.4, 0.4, 0.2], [0.3, 0.5, 0.2])
    sqrt_abar = jnp.asarray(np.sqrt(np_alpha_bar(betas)), jnp.float32)
    b = jnp.asarray(betas, jnp.float32)

    def fn(x, t):
        e, var = mixture.x0_moments(x, t)
        beta_tilde = gaussian.posterior_variance(t, b)
        c0 = sqrt_abar[t - 1] * b[t - 1] / (1 - sqrt_abar[t] ** 2)
        target = beta_tilde + c0**2 * var
        return e, (jnp.log(target) - jnp.log(beta_tilde)) / (jnp.log(b[t - 1]) - jnp.log(beta_tilde))

    kernel = DenoiserKernel(fn, betas, predicts="x0", variance="learned")
    for x in (jnp.array([0.0, 0.5]), jnp.array([-0.4, -0.7])):
        for t in (2, 5, 10):
            mean, var = _call(kernel, x, t)
            want_mean, want_var = _call(mixture, x, t)
            np.testing.assert_allclose(mean, want_mean, atol=16 * EPS32 * 4, rtol=0)
            np.testing.assert_allclose(var, want_var, rtol=32 * EPS32)


def test_plugs_into_the_model_sample_and_likelihood():
    """`GaussianDiffusion(kernel=DenoiserKernel(...))` samples and scores: with the exact denoiser and variance of
    N(m, s²) data the samples' moments and the importance-sampled log p(x⁰) match `GaussianOracle.marginal_x0`.

    Samples: 4000 draws, mean and variance within N_SE standard errors. Likelihood: M = 256 on 4 data; the
    kernel equals the oracle to float32 and the same key draws the same forward trajectories, so log p̂ equals
    the oracle model's to 10⁻⁴ (≈ 32 float32 log-density terms of size ≤ 10), and the closed form within N_SE
    delta-method standard errors.
    """
    betas = SHORT
    fn = _gaussian_x0(betas)
    _, _, w, _ = np_oracle_coefficients(betas, MEAN, STD)
    v = jnp.asarray(np.nan_to_num(_log_variance_coefficient(betas, w)), jnp.float32)
    kernel = DenoiserKernel(lambda x, t: (fn(x, t), v[t - 1]), betas, predicts="x0", variance="learned")
    model = GaussianDiffusion((3,), ArraySchedule(betas), kernel=kernel)
    mu, var = GaussianOracle(betas, MEAN, STD).marginal_x0()

    draws = np.asarray(sample(model, jax.random.key(0), 4000).x0, np.float64)
    assert draws.shape == (4000, 3) and np.isfinite(draws).all()
    est, se = mean_se(draws)
    assert_within_se(est, se, mu, "sample mean")
    est, se = var_se(draws)
    assert_within_se(est, se, var, "sample variance")

    x0 = np.array([[0.1, 0.2, -0.3], [1.0, -2.0, 3.0], [-0.5, 0.3, 1.0], [0.5, -1.0, 2.0]], np.float32)
    out = log_likelihood(model, x0, jax.random.key(1), num_trajectories=256, chunk_size=128)
    ref = log_likelihood(
        GaussianDiffusion((3,), ArraySchedule(betas), kernel=GaussianOracle(betas, MEAN, STD)),
        x0,
        jax.random.key(1),
        num_trajectories=256,
        chunk_size=128,
    )
    np.testing.assert_allclose(out.log_p_hat, ref.log_p_hat, atol=1e-4, rtol=0)  # the same trajectories
    exact = norm.logpdf(x0.astype(np.float64), mu, np.sqrt(var)).sum(-1)
    assert_within_se(out.log_p_hat, out.stderr, exact, "log p̂ against the closed form")

    # the ε-parameterised, fixed-variance kernel of an isotropic model runs through the same code paths
    oma = jnp.asarray(1 - np_alpha_bar(betas), jnp.float32)
    iso = GaussianDiffusion(
        (3,), ArraySchedule(betas), kernel=DenoiserKernel(lambda x, t: jnp.sqrt(oma[t]) * x, betas, variance="beta")
    )
    out = log_likelihood(iso, x0, jax.random.key(2), num_trajectories=8, chunk_size=8)
    np.testing.assert_allclose(out.log_p_hat, norm.logpdf(x0.astype(np.float64)).sum(-1), atol=1e-3, rtol=0)
    assert np.isfinite(np.asarray(sample(iso, jax.random.key(3), 16).x0)).all()


def test_grad_through_the_kernel():
    """Posterior inference differentiates the kernel with respect to xᵗ: finite, and equal to the analytic
    Jacobian of μ̃_t for the Gaussian x̂⁰ (linear in xᵗ: ∂μ̃/∂xᵗ = c0_t·s²√ᾱ_t/v_t + ct_t per coordinate)."""
    betas = SHORT
    kernel = DenoiserKernel(_gaussian_x0(betas), betas, predicts="x0")
    abar = np_alpha_bar(betas)
    for t in (2, 6, 10):
        grad = jax.jit(jax.grad(lambda x, t: kernel(x, t)[0].sum()))(X, jnp.asarray(t))
        c0 = math.sqrt(abar[t - 1]) * betas[t - 1] / (1 - abar[t])
        ct = math.sqrt(1 - betas[t - 1]) * (1 - abar[t - 1]) / (1 - abar[t])
        want = c0 * STD**2 * math.sqrt(abar[t]) / (abar[t] * STD**2 + 1 - abar[t]) + ct
        np.testing.assert_allclose(grad, want, rtol=16 * EPS32)


# -- validation ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(fn=3.0), "`fn` must be a callable"),
        (dict(predicts="score"), "`predicts` must be one of"),
        (dict(variance="fixed"), "`variance` must be one of"),
        (dict(clip_x0=0.0), "`clip_x0` must be None or a finite number > 0"),
        (dict(clip_x0=-1.0), "`clip_x0` must be None or a finite number > 0"),
        (dict(clip_x0=float("nan")), "`clip_x0` must be None or a finite number > 0"),
        (dict(clip_x0=True), "`clip_x0` must be None or a finite number > 0"),
        (dict(clip_x0="1"), "`clip_x0` must be None or a finite number > 0"),
        (dict(betas=[0.1, 1.0]), "`betas` must lie strictly inside"),
        (dict(betas=[[0.1, 0.2]]), "`betas` must be a non-empty 1-D array"),
    ],
)
def test_bad_arguments_raise_at_construction(kwargs, match):
    kwargs = dict(fn=lambda x, t: x, betas=SHORT) | kwargs
    with pytest.raises(ValueError, match=match):
        DenoiserKernel(**kwargs)


def test_traced_betas_are_refused():
    with pytest.raises(ValueError, match="`betas` must be concrete numbers"):
        jax.jit(lambda b: DenoiserKernel(lambda x, t: x, b).betas)(jnp.asarray(SHORT, jnp.float32))


@pytest.mark.parametrize(
    "variance, fn, match",
    [
        ("learned", lambda x, t: x, r"must return \(prediction, v\)"),
        ("beta", lambda x, t: (x, x), "expects one array"),
        ("beta_tilde", lambda x, t: x[:2], "must return a prediction of the example's shape"),
    ],
)
def test_wrong_network_outputs_are_explained(variance, fn, match):
    kernel = DenoiserKernel(fn, SHORT, variance=variance)
    with pytest.raises(ValueError, match=match):
        kernel(X, 3)
