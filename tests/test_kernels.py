"""Reverse kernels (paper App. D.2, §2.6 Eq 24) and the exact oracles."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import EPS32, assert_within_se, mean_se, np_alpha_bar, np_oracle_coefficients, var_se

from dpm_ppl import GaussianOracle, GaussianReverse, GeometricSchedule, HarmonicSchedule, IsotropicOracle, ReverseChain
from dpm_ppl import _gaussian as gaussian


T = 8
SCHEDULES = {"harmonic": HarmonicSchedule(T), "geometric": GeometricSchedule(T, 0.01, 0.5)}


def _posterior_variance64(b, t):
    abar = np_alpha_bar(b)
    return (1 - abar[t - 1]) * b[t - 1] / (1 - abar[t])


def _constant_network(z_mu, z_sigma):
    return lambda x, t: (jnp.full_like(x, z_mu), jnp.full_like(x, z_sigma))


@pytest.mark.parametrize("name", SCHEDULES)
@pytest.mark.parametrize("z", [-50.0, 0.0, 50.0, "random"])
def test_reverse_variance_within_entropy_bounds(name, z):
    """β̃_t ≤ f_Σ ≤ β_t (Eq 24 for Gaussian diffusion) for ANY network output:
    huge ±50, zero, and random N(0, 10²) outputs, at every t = 2…T. At ±50 the variance sits on
    the corresponding bound, at 0 on their geometric mean √(β̃_t β_t)."""
    betas = SCHEDULES[name]()
    b = np.asarray(betas, np.float64)
    x = jnp.linspace(-3.0, 3.0, 7)
    if z == "random":
        noise = 10.0 * jax.random.normal(jax.random.key(1), (T + 1, 2, 7))
        network = lambda x, t: (noise[t, 0], noise[t, 1])
    else:
        network = _constant_network(3.0, z)
    kernel = GaussianReverse(network, betas)
    # exp/log round trip in float32: a few ulps of relative error around each bound.
    slack = 8 * EPS32
    abar = np_alpha_bar(b)
    for t in range(2, T + 1):
        _, var = kernel(x, t)
        var = np.asarray(var, np.float64)
        lo = float(gaussian.posterior_variance(t, betas))
        hi = float(betas[t - 1])
        assert lo < hi
        assert np.all(var >= lo * (1 - slack)) and np.all(var <= hi * (1 + slack)), (t, var.min(), var.max(), lo, hi)
        if z == 50.0:
            np.testing.assert_allclose(var, hi, rtol=slack)
        elif z == -50.0:
            np.testing.assert_allclose(var, lo, rtol=slack)
        elif z == 0.0:
            np.testing.assert_allclose(var, math.sqrt(lo * hi), rtol=slack)
        # the bounds themselves against float64: 1 − ᾱ_{t−1} is formed by a float32 subtraction whose
        # relative error is ≈ eps/(1 − ᾱ_{t−1}); allow 8× that on top of 8 eps.
        lower, upper = kernel.variance_bounds(t)
        rtol_lo = 8 * EPS32 * (1 + 1 / (1 - abar[t - 1]))
        np.testing.assert_allclose(float(lower), _posterior_variance64(b, t), rtol=rtol_lo)
        np.testing.assert_allclose(float(upper), b[t - 1], rtol=EPS32)


@pytest.mark.parametrize("name", SCHEDULES)
def test_reverse_mean_parameterisations(name):
    """Zero network output: mean="reference" gives √(1−β_t)·x (the forward kernel's time reversal
    for isotropic data); z_mu shifts it by √β_t·z_mu; mean="paper" gives (x − z)√(1−f_Σ) + z."""
    betas = SCHEDULES[name]()
    b = np.asarray(betas, np.float64)
    x = jnp.array([-1.5, 0.0, 0.7, 2.0])
    for t in range(2, T + 1):
        mean, _ = GaussianReverse(_constant_network(0.0, 0.0), betas)(x, t)
        np.testing.assert_allclose(mean, math.sqrt(1 - b[t - 1]) * np.asarray(x), rtol=4 * EPS32)
        mean, _ = GaussianReverse(_constant_network(0.8, 0.0), betas)(x, t)
        expected = math.sqrt(1 - b[t - 1]) * np.asarray(x) + math.sqrt(b[t - 1]) * 0.8
        np.testing.assert_allclose(mean, expected, rtol=8 * EPS32, atol=8 * EPS32)
        mean, var = GaussianReverse(_constant_network(0.8, 1.5), betas, mean="paper")(x, t)
        expected = (np.asarray(x) - 0.8) * np.sqrt(1 - np.asarray(var, np.float64)) + 0.8
        np.testing.assert_allclose(mean, expected, rtol=8 * EPS32, atol=8 * EPS32)


def test_reverse_rejects_unknown_mean():
    """An unknown mean parameterisation is rejected by name and value."""
    with pytest.raises(ValueError, match=r"`mean` must be one of \['paper', 'reference'\], got 'bogus'"):
        GaussianReverse(_constant_network(0.0, 0.0), HarmonicSchedule(3)(), mean="bogus")


@pytest.mark.parametrize("name", SCHEDULES)
def test_isotropic_oracle_is_forward_kernel(name):
    """IsotropicOracle(x, t) = N(√(1−β_t)·x, β_t), the forward kernel, at every t (2-D event too)."""
    betas = SCHEDULES[name]()
    b = np.asarray(betas, np.float64)
    oracle = IsotropicOracle(betas)
    x = jax.random.normal(jax.random.key(2), (3, 2))
    for t in range(1, T + 1):
        mean, var = oracle(x, t)
        np.testing.assert_allclose(mean, math.sqrt(1 - b[t - 1]) * np.asarray(x), rtol=4 * EPS32)
        np.testing.assert_allclose(var, np.full((3, 2), b[t - 1]), rtol=EPS32)
        fk_mean, fk_var = gaussian.forward_kernel(x, betas[t - 1])
        np.testing.assert_array_equal(mean, fk_mean)
        np.testing.assert_array_equal(var, fk_var)


def test_gaussian_oracle_coefficients():
    """GaussianOracle's kernel is N(a_t x + c_t, w_t) with the oracle's closed-form coefficients (float64 reference);
    for standard-normal data it reduces to the isotropic oracle (a_t = √(1−β_t), c_t = 0, w_t = β_t)."""
    betas = SCHEDULES["geometric"]()
    mean, std = np.array([0.8, -1.5]), np.array([0.3, 2.0])
    a, c, w, _ = np_oracle_coefficients(betas, mean, std)
    oracle = GaussianOracle(betas, mean, std)
    x = jnp.array([0.4, -0.9])
    for t in range(2, T + 1):
        m, v = oracle(x, t)
        # float32 storage of float64 coefficients: a few roundings, 8 eps relative (absolute near 0).
        np.testing.assert_allclose(m, a[t - 1] * np.asarray(x) + c[t - 1], rtol=8 * EPS32, atol=8 * EPS32)
        np.testing.assert_allclose(v, w[t - 1], rtol=8 * EPS32)
    iso, std_normal = IsotropicOracle(betas), GaussianOracle(betas, np.zeros(2), 1.0)
    for t in range(2, T + 1):
        np.testing.assert_allclose(std_normal(x, t)[0], iso(x, t)[0], rtol=8 * EPS32, atol=8 * EPS32)
        np.testing.assert_allclose(std_normal(x, t)[1], iso(x, t)[1], rtol=8 * EPS32)
    np.testing.assert_allclose(std_normal.marginal_x0()[0], 0.0, atol=1e-12)  # p(x⁰) = N(0, 1) exactly
    np.testing.assert_allclose(std_normal.marginal_x0()[1], 1.0, rtol=1e-6)  # float32-stored coefficients


def test_gaussian_oracle_marginal_matches_ancestral_samples():
    """marginal_x0() = N(μ₀, σ₀²) equals the law of x⁰ drawn ancestrally: x^T ~ π, the ReverseChain
    with the oracle kernel, then the fixed last step N(√(1−β₁)x¹, β₁) (n = 40 000; 4-stderr
    tolerances on the mean and on the variance)."""
    betas = GeometricSchedule(6, 0.05, 0.6)()
    oracle = GaussianOracle(betas, mean=[1.5, -0.5], std=[0.5, 2.0])
    n = 40_000
    k_chain, k_last = jax.random.split(jax.random.key(3))
    traj = jax.jit(lambda k: ReverseChain(oracle, betas, (n,), (2,)).sample(k))(k_chain)
    assert traj.shape == (n, 6, 2)
    mean1, var1 = gaussian.last_step(traj[:, 0], betas[0])
    x0 = np.asarray(mean1 + jnp.sqrt(var1) * jax.random.normal(k_last, (n, 2)))
    mu0, s20 = oracle.marginal_x0()
    m, se = mean_se(x0)
    assert_within_se(m, se, mu0, "mean of p(x0)")
    v, se_v = var_se(x0)
    assert_within_se(v, se_v, s20, "variance of p(x0)")
    # the marginal is not trivially the data distribution (π ≠ q(x^T)), nor N(0, 1):
    assert np.all(np.abs(mu0 - np.array([1.5, -0.5])) > 1e-3) and np.all(np.abs(s20 - 1.0) > 0.05)
