"""`GaussianMixtureOracle`: the exact first two moments of q(xᵗ⁻¹ | xᵗ) for Gaussian-mixture data.

References are independent float64 numpy: the single-Gaussian algebra of `np_oracle_coefficients`,
grid quadrature of q(xᵗ | xᵗ⁻¹)·q(xᵗ⁻¹) over xᵗ⁻¹, and Bayes' rule per component for q(x⁰ | xᵗ).
"""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import EPS32, N_SE, assert_within_se, mean_se, np_alpha_bar, np_oracle_coefficients
from scipy.special import logsumexp
from scipy.stats import norm

from dpm_ppl import (
    ArraySchedule,
    GaussianDiffusion,
    GaussianMixtureOracle,
    GaussianOracle,
    GeometricSchedule,
    log_likelihood,
)


_jit_call = eqx.filter_jit(lambda kernel, x, t: kernel(x, t))
_jit_x0_moments = eqx.filter_jit(lambda oracle, x, t: oracle.x0_moments(x, t))


def _call(kernel, x, t):
    """kernel(x, t), compiled once per shape (t traced: a Python int would be a static argument)."""
    return _jit_call(kernel, x, jnp.asarray(t))


def _x0_moments(oracle, x, t):
    return _jit_x0_moments(oracle, x, jnp.asarray(t))


def np_log_normal(x, mean, var):
    """Elementwise log N(x; mean, var), float64 (scipy's norm.logpdf is slow on big grids)."""
    return -0.5 * (math.log(2 * math.pi) + np.log(var) + (x - mean) ** 2 / var)


DDPM = np.linspace(1e-4, 0.02, 1000)  # Ho et al. 2020's linear schedule
SHORT = np.asarray(GeometricSchedule(10, 0.01, 0.5)(), np.float64)  # big steps: strongly non-Gaussian reversals


def np_mixture_x0_moments(x_t, t, betas, means, weights, std):
    """E[x⁰ | xᵗ], Var[x⁰ | xᵗ] and q(k | xᵗ) in float64 by Bayes' rule per component (diagonal s_k)."""
    abar = np_alpha_bar(betas)[t]
    means = np.asarray(means, np.float64)
    s2 = np.broadcast_to(np.asarray(std, np.float64).reshape(len(means), -1) ** 2, means.shape)
    v = abar * s2 + 1 - abar
    log_joint = np.log(weights) + np_log_normal(x_t, math.sqrt(abar) * means, v).sum(-1)
    resp = np.exp(log_joint - logsumexp(log_joint))
    e = means + math.sqrt(abar) * s2 / v * (x_t - math.sqrt(abar) * means)
    var = s2 * (1 - abar) / v
    mean = resp @ e
    return mean, resp @ (var + (e - mean) ** 2), resp


def np_posterior_coefficients(betas, t):
    """μ̃_t = c0·x⁰ + ct·xᵗ and β̃_t, float64."""
    abar = np_alpha_bar(betas)
    beta = betas[t - 1]
    c0 = math.sqrt(abar[t - 1]) * beta / (1 - abar[t])
    ct = math.sqrt(1 - beta) * (1 - abar[t - 1]) / (1 - abar[t])
    return c0, ct, (1 - abar[t - 1]) * beta / (1 - abar[t])


def np_reverse_moments_quadrature(x_t, t, betas, means, weights, std, n_grid):
    """E[xᵗ⁻¹ | xᵗ], Var[xᵗ⁻¹ | xᵗ] by a Riemann sum over a grid of xᵗ⁻¹ (d = 1 or 2), float64.

    q(xᵗ⁻¹ | xᵗ) ∝ N(xᵗ; √α_t xᵗ⁻¹, β_t)·Σ_k w_k N(xᵗ⁻¹; √ᾱ_{t−1} μ_k, ᾱ_{t−1} s_k² + 1 − ᾱ_{t−1}). The grid
    spans ±12 likelihood widths √(β_t/α_t) around xᵗ/√α_t (the posterior is narrower than the likelihood)
    with ≥ 5 points per posterior sd ≥ √β̃_t (the tests' grids); the sum of a smooth, rapidly decaying
    integrand on such a grid converges spectrally, far below float32.
    """
    betas = np.asarray(betas, np.float64)
    abar = np_alpha_bar(betas)[t - 1]
    beta = betas[t - 1]
    means = np.asarray(means, np.float64)
    d = means.shape[1]
    s2 = np.broadcast_to(np.asarray(std, np.float64).reshape(len(means), -1) ** 2, means.shape)
    centre, half = np.asarray(x_t) / math.sqrt(1 - beta), 12 * math.sqrt(beta / (1 - beta))
    axes = [np.linspace(c - half, c + half, n_grid) for c in centre]
    y = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, d)
    log_lik = np_log_normal(x_t, math.sqrt(1 - beta) * y, beta).sum(-1)
    comp = np_log_normal(y[:, None], math.sqrt(abar) * means, abar * s2 + 1 - abar).sum(-1)
    log_p = log_lik + logsumexp(comp + np.log(weights), axis=1)
    p = np.exp(log_p - log_p.max())
    p /= p.sum()
    mean = p @ y
    return mean, p @ (y - mean) ** 2


# -- one component: the Gaussian oracle -------------------------------------------------------------


@pytest.mark.parametrize("std", [0.4, "diagonal"])
@pytest.mark.parametrize("betas", [SHORT, DDPM], ids=["short", "ddpm"])
def test_one_component_is_the_gaussian_oracle(std, betas):
    """K = 1: the moment-matched kernel is the exact linear-Gaussian reversal of `GaussianOracle`.

    Tolerance: both are float32 evaluations of float64-derived coefficients, a few roundings of terms of
    size ≤ |xᵗ| + |μ|; 16 ε₃₂ on that scale for the mean, 16 ε₃₂ relative for the variance (a sum of
    positive terms here, a float64 difference cast once in the oracle).
    """
    mean = np.array([0.5, -1.0, 2.0])
    s = np.full(3, 0.4) if std == 0.4 else np.array([0.4, 0.7, 1.5])
    mixture = GaussianMixtureOracle(betas, mean[None], std=std if std == 0.4 else s[None])
    assert mixture.isotropic == (std == 0.4)
    oracle = GaussianOracle(betas, mean, s)
    x = jnp.array([0.3, -1.2, 2.0])
    T = len(betas)
    scale = 1 + float(jnp.max(jnp.abs(x))) + np.abs(mean).max()
    for t in sorted({2, 3, 5, T // 2, T - 1, T}):
        m1, v1 = _call(mixture, x, t)
        m2, v2 = _call(oracle, x, t)
        np.testing.assert_allclose(m1, m2, atol=16 * EPS32 * scale, rtol=0, err_msg=f"t={t}")
        np.testing.assert_allclose(v1, v2, rtol=16 * EPS32, err_msg=f"t={t}")


# -- the moments against quadrature -----------------------------------------------------------------

MIXTURES = {
    "1d": dict(means=[[-2.0], [0.5], [3.0]], weights=[0.3, 0.5, 0.2], std=[0.3, 1.0, 0.1]),
    "2d-isotropic": dict(means=[[-1.0, 0.0], [1.0, 1.0], [0.0, -1.5]], weights=[0.4, 0.4, 0.2], std=[0.3, 0.5, 0.2]),
    "2d-diagonal": dict(
        means=[[-1.0, 0.0], [1.0, 1.0], [0.0, -1.5]],
        weights=[0.4, 0.4, 0.2],
        std=[[0.2, 0.6], [0.5, 0.1], [0.3, 0.3]],
    ),
}


@pytest.mark.parametrize("name", MIXTURES)
def test_moments_equal_quadrature_of_the_exact_reversal(name):
    """mean and variance equal E[xᵗ⁻¹ | xᵗ] and Var[xᵗ⁻¹ | xᵗ] by quadrature of the exact (multimodal) reversal.

    Points between components, where q(xᵗ⁻¹ | xᵗ) is far from Gaussian, on a schedule with big steps. Tolerance:
    float32 with terms of size ≤ 1 + |xᵗ| + max|μ| (the responsibilities' log densities, O(10), lose
    ~10 ε₃₂ each); 64 ε₃₂ on that scale for the mean, and for the variance relative to itself.
    """
    spec = MIXTURES[name]
    means = np.asarray(spec["means"], np.float64)
    d = means.shape[1]
    oracle = GaussianMixtureOracle(SHORT, means, spec["weights"], np.asarray(spec["std"]))
    assert oracle.isotropic == (name != "2d-diagonal")
    points = [means.mean(0), 0.5 * (means[0] + means[1]), means[2] + 0.3, 0.6 * means[1], -means[0]]
    n_grid = 2001 if d == 1 else 201
    mixed = 0.0
    for t in (2, 4, 7, 10):
        abar = np_alpha_bar(SHORT)[t]
        for p in points:
            x_t = math.sqrt(abar) * p
            want_mean, want_var = np_reverse_moments_quadrature(
                x_t, t, SHORT, means, spec["weights"], spec["std"], n_grid
            )
            mean, var = _call(oracle, jnp.asarray(x_t, jnp.float32), t)
            scale = 1 + np.abs(x_t).max() + np.abs(means).max()
            np.testing.assert_allclose(mean, want_mean, atol=64 * EPS32 * scale, rtol=0, err_msg=f"t={t}, x={x_t}")
            np.testing.assert_allclose(var, want_var, rtol=64 * EPS32 * scale, err_msg=f"t={t}, x={x_t}")
            resp = np_mixture_x0_moments(x_t, t, SHORT, means, spec["weights"], spec["std"])[2]
            mixed = max(mixed, 1 - resp.max())
    assert mixed > 0.3, "no test point has a genuinely multimodal reversal"


@pytest.mark.parametrize("diagonal", [False, True], ids=["isotropic", "diagonal"])
def test_inverting_the_kernel_gives_the_exact_denoiser_at_d_800(diagonal):
    """μ̃_t is linear in x⁰, so (mean − ct·xᵗ)/c0 = E[x⁰ | xᵗ] and (variance − β̃_t)/c0² = Var[x⁰ | xᵗ].

    d = 800, K = 25, DDPM schedule, in float64 (the inversion multiplies errors by 1/c0 ~ 10⁴ at t = T):
    against Bayes' rule per component, to 10⁻⁸ relative (measured ≤ 3·10⁻¹⁰: the responsibilities' log
    densities are O(10³) at d = 800, exact to ~10⁻¹⁶ relative, and the inversion costs 10⁴). `x0_moments`
    gives the same numbers. Then the float32 kernel at the same points matches the float64 one within
    2·10⁻⁴ of its standard deviation (mean; measured ≤ 3·10⁻⁵) and 10⁻⁵ relatively (variance; ≤ 3·10⁻⁷).
    """
    d, K = 800, 25
    rng = np.random.default_rng(0)
    means = 0.1 * rng.standard_normal((K, d))
    std = rng.uniform(0.3, 1.0, (K, d)) if diagonal else rng.uniform(0.3, 1.0, K)
    weights = rng.uniform(0.5, 1.5, K)
    weights /= weights.sum()
    x0 = means[rng.integers(K, size=3)] + 0.5 * rng.standard_normal((3, d))
    mixed = 0.0
    with jax.enable_x64(True):
        oracle = GaussianMixtureOracle(DDPM, means, weights, std)
        results = {}
        for t in (2, 50, 300, 1000):
            abar = np_alpha_bar(DDPM)[t]
            c0, ct, beta_tilde = np_posterior_coefficients(DDPM, t)
            for i, x in enumerate(x0):
                x_t = math.sqrt(abar) * x + math.sqrt(1 - abar) * rng.standard_normal(d)
                want_e, want_v, resp = np_mixture_x0_moments(x_t, t, DDPM, means, weights, std)
                mixed = max(mixed, 1 - resp.max())
                mean, var = (np.asarray(a) for a in _call(oracle, jnp.asarray(x_t), t))
                assert mean.dtype == np.float64
                np.testing.assert_allclose((mean - ct * x_t) / c0, want_e, rtol=1e-8, atol=1e-8, err_msg=f"t={t}")
                np.testing.assert_allclose((var - beta_tilde) / c0**2, want_v, rtol=1e-8, err_msg=f"t={t}")
                e, v = _x0_moments(oracle, jnp.asarray(x_t), t)
                np.testing.assert_allclose(e, want_e, rtol=1e-10, atol=1e-10)
                np.testing.assert_allclose(v, want_v, rtol=1e-10)
                results[t, i] = x_t, mean, var
    assert mixed > 0.3, "every responsibility is one-hot: the test does not exercise the mixture"
    oracle32 = GaussianMixtureOracle(DDPM, means, weights, std)
    for (t, _), (x_t, mean, var) in results.items():
        mean32, var32 = (np.asarray(a, np.float64) for a in _call(oracle32, jnp.asarray(x_t, jnp.float32), t))
        assert np.all(np.abs(mean32 - mean) <= 2e-4 * np.sqrt(var)), (t, np.max(np.abs(mean32 - mean) / np.sqrt(var)))
        np.testing.assert_allclose(var32, var, rtol=1e-5, err_msg=f"t={t}")


def test_tweedie_covariance_of_the_denoiser_is_the_exact_posterior_covariance():
    """c_t·∂x̂⁰/∂xᵗ (`GaussianFamily.tweedie_scale`, x̂⁰ = `x0_estimate` of the kernel) is the full
    Cov[x⁰ | xᵗ] of the mixture, off-diagonal terms included, where the kernel's own V is only its diagonal.

    Isotropic components in d = 4 with means along two shared directions (as in the MCGdiff benchmark), so
    the covariance is far from diagonal; float64, against Bayes' rule per component, to 10⁻⁶ relative.
    """
    from dpm_ppl._chains import apply_kernel
    from dpm_ppl._family import GaussianFamily

    u = np.array([[1.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, 1.0]])
    means = np.array([[-4.0, 0.0], [4.0, 1.0], [0.5, -4.0]]) @ u
    weights, std = np.array([0.5, 0.3, 0.2]), np.array([1.0, 0.7, 1.2])
    family = GaussianFamily()
    rng = np.random.default_rng(1)
    off_diagonal = 0.0
    with jax.enable_x64(True):
        oracle = GaussianMixtureOracle(DDPM, means, weights, std)
        betas = jnp.asarray(DDPM)

        def x0_hat(x, t):
            return family.x0_estimate(apply_kernel(oracle, x, t, 1), x, t, betas)[0]

        jac = jax.jit(jax.jacfwd(x0_hat), static_argnums=1)
        for t in (30, 200, 600, 1000):
            abar = np_alpha_bar(DDPM)[t]
            x_t = math.sqrt(abar) * means[rng.integers(3)] + rng.standard_normal(4)
            got = float(family.tweedie_scale(t, betas)) * np.asarray(jac(jnp.asarray(x_t), t))
            e, _, resp = np_mixture_x0_moments(x_t, t, DDPM, means, weights, std)
            s2 = std[:, None] ** 2
            v = abar * s2 + 1 - abar
            ek = means + math.sqrt(abar) * s2 / v * (x_t - math.sqrt(abar) * means)  # E[x⁰ | xᵗ, k]
            want = np.einsum("k,kd,de->de", resp, s2 * (1 - abar) / v, np.eye(4)) + np.einsum(
                "k,kd,ke->de", resp, ek - e, ek - e
            )
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-9 * np.abs(want).max(), err_msg=f"t={t}")
            off_diagonal = max(off_diagonal, np.abs(want - np.diag(np.diag(want))).max() / np.diag(want).max())
    assert off_diagonal > 0.3, "the test points do not exercise the off-diagonal covariance"


@eqx.filter_jit
def _grad_fd_and_batch(oracle, x, t, xs, ts, h):
    """∇_x f, central differences of f (f = u·mean + w·variance) and the kernel vmapped over (xs, ts)."""
    u, w = jnp.array([0.7, -1.3]), jnp.array([2.0, 0.5])
    f = lambda x: jnp.sum(u * oracle(x, t)[0] + w * oracle(x, t)[1])
    steps = h * jnp.eye(2)
    fd = (jax.vmap(f)(x + steps) - jax.vmap(f)(x - steps)) / (2 * h)
    return jax.grad(f)(x), fd, jax.vmap(oracle)(xs, ts)


def test_jit_vmap_and_grad():
    """jit(vmap) over particles with per-particle t equals one-at-a-time calls, and the x_t-gradient equals
    central differences (float64, h = 1e-6: truncation ~h², rounding ~1e-16/h, both far below 1e-6 relative)."""
    means = np.array([[-1.0, 0.0], [1.0, 1.0], [0.0, -1.5]])
    with jax.enable_x64(True):
        for std in ([0.3, 0.5, 0.2], [[0.2, 0.6], [0.5, 0.1], [0.3, 0.3]]):
            oracle = GaussianMixtureOracle(SHORT, means, [0.4, 0.4, 0.2], np.asarray(std))
            x = jnp.array([0.1, 0.4])
            xs, ts = jnp.stack([x, 2 * x, -x]), jnp.array([2, 5, 10])
            for t in ts:
                grad, fd, batched = _grad_fd_and_batch(oracle, x, t, xs, ts, 1e-6)
                np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-8)
            for i in range(3):
                one = _call(oracle, xs[i], ts[i])
                np.testing.assert_allclose(batched[0][i], one[0], rtol=1e-12)
                np.testing.assert_allclose(batched[1][i], one[1], rtol=1e-12)


# -- the data distribution ----------------------------------------------------------------------------


def test_log_prob_and_samples_are_the_mixture():
    """log_prob_x0 = log Σ_k w_k N(x; μ_k, diag s_k²) (scipy, float64) on any leading shape and under jit;
    sample_x0's mean and per-coordinate variance match the mixture's within N_SE standard errors."""
    spec = MIXTURES["2d-diagonal"]
    means, weights, std = (np.asarray(spec[k], np.float64) for k in ("means", "weights", "std"))
    oracle = GaussianMixtureOracle(SHORT, means, weights * 3.0, std)  # weights are normalised
    x = np.random.default_rng(1).normal(0, 1.5, (4, 5, 2))
    want = logsumexp(norm.logpdf(x[..., None, :], means, std).sum(-1) + np.log(weights), axis=-1)
    got = oracle.log_prob_x0(x)
    assert got.shape == (4, 5)
    np.testing.assert_allclose(got, want, rtol=8 * EPS32, atol=8 * EPS32)
    np.testing.assert_allclose(
        jax.jit(lambda x: oracle.log_prob_x0(x))(jnp.asarray(x[0, 0])), want[0, 0], rtol=8 * EPS32
    )

    draws = np.asarray(oracle.sample_x0(jax.random.key(3), 20_000), np.float64)
    assert draws.shape == (20_000, 2)
    mix_mean = weights @ means
    mix_var = weights @ (std**2 + means**2) - mix_mean**2
    est, se = mean_se(draws)
    assert_within_se(est, se, mix_mean, "sample mean")
    c = draws - mix_mean
    est, se = mean_se(c**2)
    assert_within_se(est, se, mix_var, "sample variance")


# -- how close the model is to the mixture ---------------------------------------------------------------

GAP_MIXTURE = dict(
    means=[[-1.5, 0.0], [1.5, 0.5], [0.0, 1.8]],
    weights=[0.5, 0.3, 0.2],
    std=[[0.3, 0.3], [0.5, 0.5], [0.2, 0.6]],
)
GAP_TOLERANCE = 0.01  # nats per example


def test_model_density_is_close_to_the_mixture():
    """The diffusion with this moment-matched kernel has p(x⁰) within 0.01 nats of the mixture, on average.

    d = 2, three components, DDPM linear β (10⁻⁴ → 0.02, T = 1000): log p̂_model(x⁰) (importance sampling,
    M = 32) − log p_mixture(x⁰) on 256 exact mixture draws. Its expectation is −KL(p_mixture ‖ p_model) plus
    the IS bias (≈ −½ se², negative), so ≤ 0. Measured: −0.0011 ± 0.0007 at M = 32 and −0.0004 ± 0.0004
    at M = 128 (K, the bound, is −0.0024 below). The assertion: the mean is above −0.01 nats and not
    above 0 by more than N_SE standard errors. For scale, the best single Gaussian (`GaussianOracle`
    with the mixture's mean and variance, exact p(x⁰)) is 1.01 nats below (asserted < −0.3): the check
    resolves the kernel.
    """
    T = len(DDPM)
    means, weights, std = (np.asarray(GAP_MIXTURE[k], np.float64) for k in ("means", "weights", "std"))
    oracle = GaussianMixtureOracle(DDPM, means, weights, std)
    model = GaussianDiffusion((2,), ArraySchedule(DDPM), kernel=oracle)
    x0 = oracle.sample_x0(jax.random.key(0), 256)
    est = log_likelihood(model, x0, jax.random.key(1), num_trajectories=32, chunk_size=32, batch_size=64)
    log_mix = np.asarray(oracle.log_prob_x0(x0), np.float64)
    gap, gap_se = mean_se(np.asarray(est.log_p_hat, np.float64) - log_mix)
    print(f"\nmean log p_model - log p_mixture = {gap:.4f} ± {gap_se:.4f} nats (T = {T}, M = 32, n = 256)")
    assert gap > -GAP_TOLERANCE, (gap, gap_se)
    assert gap < N_SE * gap_se, (gap, gap_se)
    assert gap_se < GAP_TOLERANCE / N_SE, gap_se  # the check is resolved

    mix_mean = weights @ means
    single = GaussianOracle(DDPM, mix_mean, np.sqrt(weights @ (std**2 + means**2) - mix_mean**2))
    mu, var = single.marginal_x0()
    single_gap = (norm.logpdf(np.asarray(x0, np.float64), mu, np.sqrt(var)).sum(-1) - log_mix).mean()
    assert single_gap < -0.3, single_gap


# -- validation -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(means=[1.0, 2.0]), "`means` must be a finite array of shape"),
        (dict(means=[[np.nan, 0.0]]), "`means` must be a finite array of shape"),
        (dict(means=[[0.0], [1.0]], weights=[1.0]), "`weights` must be 2 finite non-negative"),
        (dict(means=[[0.0], [1.0]], weights=[1.0, -0.5]), "`weights` must be 2 finite non-negative"),
        (dict(means=[[0.0], [1.0]], weights=[0.0, 0.0]), "`weights` must be 2 finite non-negative"),
        (dict(means=[[0.0, 0.0], [1.0, 1.0]], std=[0.1, 0.2, 0.3]), r"`std` must be a scalar, shape \(2,\)"),
        (dict(means=[[0.0], [1.0]], std=[0.1, 0.0]), "`std` must be finite and > 0"),
        (dict(means=[[0.0]], betas=[0.1, 1.0]), "`betas` must lie strictly inside"),
    ],
)
def test_bad_arguments_raise_at_construction(kwargs, match):
    kwargs = dict(betas=SHORT) | kwargs
    with pytest.raises(ValueError, match=match):
        GaussianMixtureOracle(**kwargs)


def test_np_reference_matches_the_single_gaussian_algebra():
    """The quadrature reference itself: for K = 1 it reproduces np_oracle_coefficients (float64)."""
    a, c, w, _ = np_oracle_coefficients(SHORT, [0.5], [0.4])
    for t in (2, 6, 10):
        x_t = np.array([0.7])
        mean, var = np_reverse_moments_quadrature(x_t, t, SHORT, [[0.5]], [1.0], [0.4], 4001)
        np.testing.assert_allclose(mean, a[t - 1] * x_t + c[t - 1], rtol=1e-10)
        np.testing.assert_allclose(var, w[t - 1], rtol=1e-9)
