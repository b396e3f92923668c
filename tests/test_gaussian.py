"""Closed forms of Gaussian diffusion against independent references:
float64 recursions, products of Gaussians, quadrature, NumPyro's KL and Monte Carlo."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest
from helpers import EPS32, LOG_2PI, assert_within_se, mean_se, np_alpha_bar, np_log_normal
from numpyro.distributions.kl import kl_divergence

from dpm_ppl import GeometricSchedule, HarmonicSchedule
from dpm_ppl import _gaussian as gaussian


SCHEDULES = {
    "harmonic": HarmonicSchedule(8),
    "geometric": GeometricSchedule(8, 0.05, 0.5),
}
# Both schedules keep 1 − ᾱ_t ≥ 0.05, so float32 closed forms are accurate to a few eps per step;
# the small-β regime is tested separately (test_posterior_accurate_for_small_betas).


@pytest.mark.parametrize("name", SCHEDULES)
def test_alpha_bar_is_cumulative_product(name):
    """ᾱ_t = ∏_{s≤t}(1 − β_s) with ᾱ_0 = 1 (float64 cumprod reference)."""
    betas = SCHEDULES[name]()
    # float32: T = 8 log1p/exp roundings, each ≤ a few eps relative: 8·T·eps.
    np.testing.assert_allclose(gaussian.alpha_bar(betas), np_alpha_bar(betas), rtol=8 * 8 * EPS32, atol=0)


@pytest.mark.parametrize("name", SCHEDULES)
def test_marginal_equals_composed_forward_kernel(name):
    """q(xᵗ|x⁰) = N(√ᾱ_t x⁰, 1−ᾱ_t): composing the one-step kernel N(√(1−β)x, β) t times gives
    means m_t = √(1−β_t) m_{t−1} and variances v_t = (1−β_t) v_{t−1} + β_t from (x⁰, 0)."""
    betas = SCHEDULES[name]()
    b = np.asarray(betas, np.float64)
    x0 = jnp.array([1.7, -0.3, 0.0])
    m, v = np.asarray(x0, np.float64), np.zeros(3)
    m_lib, v_lib = x0, jnp.zeros(3)
    for t in range(1, len(b) + 1):
        m, v = math.sqrt(1.0 - b[t - 1]) * m, (1.0 - b[t - 1]) * v + b[t - 1]
        # the library's one-step kernel, composed: mean map x ↦ √(1−β)x, variance (1−β)v + β
        m_lib, kernel_var = gaussian.forward_kernel(m_lib, betas[t - 1])
        v_lib = (1.0 - betas[t - 1]) * v_lib + kernel_var
        mean, var = gaussian.marginal(x0, t, betas)
        # float32 over ≤ 8 steps of O(1) arithmetic: 16·t·eps relative (absolute near zero means).
        tol = 16 * t * EPS32
        np.testing.assert_allclose(mean, m, rtol=tol, atol=tol)
        np.testing.assert_allclose(var, v, rtol=tol)
        np.testing.assert_allclose(mean, m_lib, rtol=tol, atol=tol)
        np.testing.assert_allclose(var, v_lib, rtol=tol)


@pytest.mark.parametrize("name", SCHEDULES)
def test_posterior_equals_product_of_gaussians(name):
    """q(xᵗ⁻¹|xᵗ,x⁰) ∝ N(xᵗ⁻¹; √ᾱ_{t−1}x⁰, 1−ᾱ_{t−1})·N(xᵗ⁻¹; xᵗ/√α_t, β_t/α_t):
    precision 1/(1−ᾱ_{t−1}) + α_t/β_t, precision-weighted mean; float64 reference, t = 2…T."""
    betas = SCHEDULES[name]()
    b = np.asarray(betas, np.float64)
    abar = np_alpha_bar(b)
    x0 = jnp.array([[0.5, -1.2], [2.0, 0.1]])
    xt = jnp.array([[0.3, 0.9], [-1.1, 0.4]])
    for t in range(2, len(b) + 1):
        alpha = 1.0 - b[t - 1]
        p1, p2 = 1.0 / (1.0 - abar[t - 1]), alpha / b[t - 1]
        var_ref = 1.0 / (p1 + p2)
        mean_ref = var_ref * (p1 * math.sqrt(abar[t - 1]) * np.asarray(x0) + p2 * np.asarray(xt) / math.sqrt(alpha))
        mean, var = gaussian.posterior(x0, xt, t, betas)
        # float32 closed form vs float64: ≤ ~10 roundings of O(1) terms, each amplified at most
        # 1/(1−ᾱ) ≤ 20 by the division: 64·eps relative, and 64·eps·max|x| absolute on the mean.
        np.testing.assert_allclose(var, np.broadcast_to(var_ref, var.shape), rtol=64 * EPS32)
        np.testing.assert_allclose(mean, mean_ref, rtol=64 * EPS32, atol=64 * EPS32 * 2.0)
        np.testing.assert_allclose(gaussian.posterior_variance(t, betas), var_ref, rtol=64 * EPS32)


def test_posterior_accurate_for_small_betas():
    """With the Swiss-roll schedule GeometricSchedule(40, 1e-5, 0.5) the float32 posterior q(x¹|x²,x⁰)
    is still the exact one: KL(float32 ‖ float64 reference) < 1e-3 nats and mean error < 0.05 std.

    (A correctly rounded float32 implementation has relative errors ~1e-6 here; 1e-3 nats is a
    generous bound that still flags a perceptible error in the bound K.)"""
    betas = GeometricSchedule(40, 1e-5, 0.5)()
    b = np.asarray(betas, np.float64)
    abar = np_alpha_bar(b)
    x0, eps = 1.5, 0.3
    for t in (2, 3):
        xt = math.sqrt(abar[t]) * x0 + math.sqrt(1 - abar[t]) * eps
        var_ref = (1 - abar[t - 1]) * b[t - 1] / (1 - abar[t])
        mean_ref = (math.sqrt(abar[t - 1]) * b[t - 1] * x0 + math.sqrt(1 - b[t - 1]) * (1 - abar[t - 1]) * xt) / (
            1 - abar[t]
        )
        mean, var = gaussian.posterior(jnp.array([x0]), jnp.array([xt], jnp.float32), t, betas)
        m, v = float(mean[0]), float(var[0])
        kl = 0.5 * (math.log(var_ref / v) + (v + (m - mean_ref) ** 2) / var_ref - 1.0)
        assert abs(m - mean_ref) < 0.05 * math.sqrt(var_ref), (t, (m - mean_ref) / math.sqrt(var_ref))
        assert kl < 1e-3, (t, kl)


def test_posterior_is_bayes_rule_monte_carlo(key):
    """q(xᵗ⁻¹|xᵗ,x⁰) is the conditional of the joint forward process: regress xᵗ⁻¹ on xᵗ for fixed x⁰.

    For joint draws (xᵗ⁻¹, xᵗ) | x⁰, the residual xᵗ⁻¹ − μ̃_t(x⁰, xᵗ) has mean 0 and variance β̃_t
    and is uncorrelated with xᵗ (Monte Carlo, n = 200 000, 4-stderr tolerances)."""
    betas = SCHEDULES["harmonic"]()
    t, n = 4, 200_000
    x0 = jnp.array([1.5])
    k1, k2 = jax.random.split(key)
    m_prev, v_prev = gaussian.marginal(x0, t - 1, betas)
    x_prev = m_prev + jnp.sqrt(v_prev) * jax.random.normal(k1, (n, 1))
    x_t = jnp.sqrt(1 - betas[t - 1]) * x_prev + jnp.sqrt(betas[t - 1]) * jax.random.normal(k2, (n, 1))
    mean, var = gaussian.posterior(x0, x_t, t, betas)
    r = np.asarray(x_prev - mean)[:, 0]
    m, se = mean_se(r)
    assert_within_se(m, se, 0.0, "residual mean")
    m2, se2 = mean_se(r**2)
    assert_within_se(m2, se2, float(var[0, 0]), "residual variance β̃_t")
    xt = np.asarray(x_t)[:, 0]
    c, se_c = mean_se(r * (xt - xt.mean()))
    assert_within_se(c, se_c, 0.0, "residual is uncorrelated with xᵗ")


class TestKL:
    args = (
        jnp.array([0.3, -1.0, 2.0]),
        jnp.array([0.5, 2.0, 0.1]),
        jnp.array([0.0, 0.5, 1.0]),
        jnp.array([1.0, 0.7, 0.4]),
    )

    def test_matches_numpyro(self):
        """KL(N(μ̃,σ̃²)‖N(μ,σ²)) equals numpyro.distributions.kl.kl_divergence of two Normals."""
        mq, vq, mp, vp = self.args
        ref = kl_divergence(dist.Normal(mq, jnp.sqrt(vq)), dist.Normal(mp, jnp.sqrt(vp)))
        np.testing.assert_allclose(gaussian.kl_normal(mq, vq, mp, vp), ref, rtol=32 * EPS32, atol=32 * EPS32)

    def test_matches_monte_carlo(self, key):
        """KL = E_q[log q(x) − log p(x)] (Monte Carlo, n = 200 000, 4 stderr)."""
        mq, vq, mp, vp = self.args
        x = mq + jnp.sqrt(vq) * jax.random.normal(key, (200_000, 3))
        diff = gaussian.log_normal(x, mq, vq) - gaussian.log_normal(x, mp, vp)
        est, se = mean_se(diff)
        assert_within_se(est, se, gaussian.kl_normal(mq, vq, mp, vp), "KL by Monte Carlo")

    def test_nonnegative_and_zero_at_equality(self, key):
        """KL ≥ 0 for random parameters and KL = 0 exactly when the two Gaussians coincide."""
        k = jax.random.split(key, 4)
        mq, mp = jax.random.normal(k[0], (1000,)), jax.random.normal(k[1], (1000,))
        vq, vp = jnp.exp(jax.random.normal(k[2], (1000,))), jnp.exp(jax.random.normal(k[3], (1000,)))
        kl = gaussian.kl_normal(mq, vq, mp, vp)
        # float32 sums of O(1) terms can round a true KL of 0 to about −4 eps; anything below is an error.
        assert float(kl.min()) >= -4 * EPS32
        assert np.all(np.asarray(gaussian.kl_normal(mq, vq, mq, vq)) == 0.0)


@pytest.mark.parametrize("var", [1e-3, 0.4, 3.0])
def test_entropy_normal_matches_monte_carlo(key, var):
    """H(N(·, var·I_d)) = (d/2)·log(2πe·var) equals −E log N(x) (Monte Carlo, n = 100 000, d = 3)."""
    d = 3
    x = 0.7 + math.sqrt(var) * jax.random.normal(key, (100_000, d))
    neg_log = -gaussian.log_normal(x, 0.7, var).sum(-1)
    est, se = mean_se(neg_log)
    assert_within_se(est, se, gaussian.entropy_normal(var, d), "entropy")
    np.testing.assert_allclose(
        gaussian.entropy_normal(var, d), 0.5 * d * math.log(2 * math.pi * math.e * var), rtol=4 * EPS32
    )


def test_diffusion_entropies_match_monte_carlo(key):
    """H_q(X^T|x⁰) and H_q(X¹|x⁰) are −E log q(x^T|x⁰), −E log q(x¹|x⁰) under draws of the forward
    marginals; H_p(X^T) is −E log π (Monte Carlo, n = 100 000, d = 2)."""
    betas = SCHEDULES["geometric"]()
    T, d, n = 8, 2, 100_000
    x0 = jnp.array([1.0, -2.0])
    keys = jax.random.split(key, 3)
    for t, closed, k in [
        (T, gaussian.entropy_q_T_given_0(betas, d), keys[0]),
        (1, gaussian.entropy_q_1_given_0(betas, d), keys[1]),
    ]:
        mean, var = gaussian.marginal(x0, t, betas)
        x = mean + jnp.sqrt(var) * jax.random.normal(k, (n, d))
        est, se = mean_se(-gaussian.log_normal(x, mean, var).sum(-1))
        assert_within_se(est, se, closed, f"H_q(X^{t}|x0)")
    x = jax.random.normal(keys[2], (n, d))
    est, se = mean_se(-gaussian.log_prior(x, 1))
    assert_within_se(est, se, gaussian.entropy_prior(d), "H_p(X^T)")
    assert gaussian.entropy_prior(d) == pytest.approx(0.5 * d * (LOG_2PI + 1.0), rel=1e-15)


@pytest.mark.parametrize(("x1", "beta1"), [(0.0, 0.1), (1.3, 0.02), (-2.5, 0.5)])
def test_last_step_is_normalised_time_reversal(x1, beta1):
    """p(x⁰|x¹) = q(x¹|x⁰)π(x⁰)/π(x¹) as a function of x⁰ (paper Eq 44): evaluated on a fine 1-D grid
    in float64 it integrates to 1 (π-reversibility), and its mean, variance and pointwise values
    match `last_step`'s N(√(1−β₁)x¹, β₁)."""
    grid = np.linspace(-12.0, 12.0, 240_001)  # spacing 1e-4 ≪ √β₁ ≥ 0.14: trapezoid error negligible
    h = grid[1] - grid[0]
    log_dens = (
        np_log_normal(x1, math.sqrt(1 - beta1) * grid, beta1) + np_log_normal(grid, 0, 1) - np_log_normal(x1, 0, 1)
    )
    dens = np.exp(log_dens)
    mass = np.trapezoid(dens, dx=h)
    assert abs(mass - 1.0) < 1e-9  # quadrature of a smooth Gaussian with 1e-4 spacing: error ≪ 1e-9
    q_mean = np.trapezoid(grid * dens, dx=h) / mass
    q_var = np.trapezoid((grid - q_mean) ** 2 * dens, dx=h) / mass
    mean, var = gaussian.last_step(jnp.asarray(x1, jnp.float32), beta1)
    # The library's (mean, var) are float32: one rounding each, 2 eps relative (absolute near 0).
    np.testing.assert_allclose(float(mean), q_mean, rtol=2 * EPS32, atol=2 * EPS32)
    np.testing.assert_allclose(float(var), q_var, rtol=2 * EPS32)
    pointwise = np.exp(np_log_normal(grid, float(mean), float(var)))
    # density error from the float32 mean/var: |∂ log N/∂μ|·δμ + |∂ log N/∂v|·δv ≲ 1e-5
    # wherever the density is non-negligible
    assert np.max(np.abs(pointwise - dens)) <= 1e-5 * dens.max()


def test_bound_constant_matches_monte_carlo(key):
    """C(x⁰) = E[log π(x^T)] + log π(x⁰) − E[log π(x¹)] with x^T, x¹ from q(·|x⁰),
    by Monte Carlo (n = 200 000) for several x⁰ with ‖x⁰‖² ≠ d."""
    betas = SCHEDULES["harmonic"]()
    T, n = 8, 200_000
    x0 = jnp.array([[0.0, 0.0, 0.0], [3.0, -1.0, 0.5], [0.2, 0.1, -4.0]])
    closed = gaussian.bound_constant(x0, betas, 1)
    assert closed.shape == (3,)
    k_T, k_1 = jax.random.split(key)
    mT, vT = gaussian.marginal(x0, T, betas)
    m1, v1 = gaussian.marginal(x0, 1, betas)
    xT = mT + jnp.sqrt(vT) * jax.random.normal(k_T, (n, 3, 3))
    x1 = m1 + jnp.sqrt(v1) * jax.random.normal(k_1, (n, 3, 3))
    samples = gaussian.log_prior(xT, 1) + gaussian.log_prior(x0, 1) - gaussian.log_prior(x1, 1)
    est, se = mean_se(samples)
    assert_within_se(est, se, closed, "bound constant C(x0)")


def test_bound_constant_unit_norm_and_event_ndim():
    """C(x⁰) = −H_p(X^T) = −(d/2)·log(2πe) when ‖x⁰‖² = d (App. B.1); a 2-D event sums over both axes."""
    betas = SCHEDULES["geometric"]()
    x0 = jnp.full((1, 2, 3), 1.0)  # ‖x⁰‖² = 6 = d
    c = gaussian.bound_constant(x0, betas, 2)
    assert c.shape == (1,)
    np.testing.assert_allclose(c, -gaussian.entropy_prior(6), rtol=4 * EPS32)
    flat = gaussian.bound_constant(jnp.array([[0.3, -1.0, 2.0, 0.0, 0.5, 1.0]]), betas, 1)
    np.testing.assert_allclose(
        gaussian.bound_constant(jnp.array([[[0.3, -1.0, 2.0], [0.0, 0.5, 1.0]]]), betas, 2), flat, rtol=4 * EPS32
    )


def test_log_prior_and_log_normal():
    """log π(x) = Σ log N(x_i; 0, 1) over the event axes; log_normal is the elementwise Gaussian log density."""
    x = np.array([[0.3, -2.0], [1.0, 0.0]], np.float32)
    np.testing.assert_allclose(gaussian.log_prior(jnp.asarray(x), 1), np_log_normal(x, 0, 1).sum(-1), rtol=4 * EPS32)
    np.testing.assert_allclose(gaussian.log_prior(jnp.asarray(x), 2), np_log_normal(x, 0, 1).sum(), rtol=4 * EPS32)
    np.testing.assert_allclose(gaussian.log_prior(jnp.asarray(x), 0), np_log_normal(x, 0, 1), rtol=4 * EPS32)
    np.testing.assert_allclose(
        gaussian.log_normal(jnp.asarray(x), 0.5, 0.3), np_log_normal(x, 0.5, 0.3), rtol=4 * EPS32
    )
