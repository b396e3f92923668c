"""Property tests (hypothesis) on the closed forms of both kernel families, and float32 stability at T = 4000.

For arbitrary schedules, data and steps drawn by hypothesis:

- every KL is ≥ 0 (and 0 between equal distributions);
- composing one-step forward kernels gives the closed-form marginal q(xᵗ|x⁰);
- the posterior q(xᵗ⁻¹|xᵗ,x⁰) obeys Bayes' rule against the forward kernel and the marginals
  (which also makes it normalised);
- the entropies H_q(X¹|x⁰) and H_q(X^T|x⁰) of Eq 14 match Monte Carlo within 5 standard errors
  computed from the exact variance of −log q and the sample size.

Runs are derandomised (a fixed sequence of examples), so a statistical check cannot flake.
Tolerances for float32: a sum of terms of size ≤ M carries rounding ≲ k·eps32·M.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import EPS32
from hypothesis import given, settings
from hypothesis import strategies as st

from dpm_ppl import binomial, gaussian, nn, train
from dpm_ppl.kernels import GaussianOracle, IsotropicOracle
from dpm_ppl.model import BinomialDiffusion, GaussianDiffusion
from dpm_ppl.sample import sample
from dpm_ppl.schedules import HarmonicSchedule


PROPERTY = settings(max_examples=50, deadline=None, derandomize=True, database=None)  # no example database
D = 3  # coordinates per example (a fixed shape: one compilation per schedule length)
N_MC = 20_000  # Monte-Carlo draws per entropy check
N_SE = 5.0

betas_st = st.lists(st.floats(1e-3, 0.99), min_size=2, max_size=12).map(lambda b: np.asarray(b, np.float32))
coords = st.lists(st.floats(-5.0, 5.0), min_size=D, max_size=D).map(lambda x: np.asarray(x, np.float32))
bits = st.lists(st.sampled_from([0.0, 1.0]), min_size=D, max_size=D).map(lambda x: np.asarray(x, np.float32))
rates = st.floats(0.1, 0.9)


def _np(x):
    return np.asarray(x, np.float64)


# -- KL ≥ 0 -------------------------------------------------------------------------------------------


@PROPERTY
@given(
    st.floats(-10, 10), st.floats(1e-3, 10), st.floats(-10, 10), st.floats(1e-3, 10)
)  # fmt: skip
def test_gaussian_kl_non_negative(mean_q, var_q, mean_p, var_p):
    """KL(N(μ̃, σ̃²) ‖ N(μ, σ²)) ≥ 0, up to float32 rounding of its terms; = 0 for equal arguments; equal to
    the float64 closed form."""
    kl = float(gaussian.kl_normal(jnp.float32(mean_q), jnp.float32(var_q), jnp.float32(mean_p), jnp.float32(var_p)))
    size = abs(math.log(var_p)) + abs(math.log(var_q)) + (var_q + (mean_q - mean_p) ** 2) / var_p + 1.0
    assert kl >= -8 * EPS32 * size
    ref = 0.5 * (math.log(var_p / var_q) + (var_q + (mean_q - mean_p) ** 2) / var_p - 1.0)
    assert abs(kl - ref) <= 16 * EPS32 * size
    same = float(gaussian.kl_normal(jnp.float32(mean_q), jnp.float32(var_q), jnp.float32(mean_q), jnp.float32(var_q)))
    assert abs(same) <= 8 * EPS32 * size


@PROPERTY
@given(st.floats(-15, 15), st.floats(-15, 15))
def test_bernoulli_kl_non_negative(logit_q, logit_r):
    """KL(B(q) ‖ B(r)) ≥ 0 from logits, up to float32 rounding; = 0 for equal arguments."""
    kl = float(binomial.kl_bernoulli(jnp.float32(logit_q), jnp.float32(logit_r)))
    size = abs(logit_q) + abs(logit_r) + 1.0
    assert kl >= -8 * EPS32 * size
    assert abs(float(binomial.kl_bernoulli(jnp.float32(logit_q), jnp.float32(logit_q)))) <= 8 * EPS32 * size


# -- composed one-step kernels = the marginal --------------------------------------------------------


@PROPERTY
@given(betas_st, coords)
def test_gaussian_composed_kernels_equal_marginal(betas, x0):
    """Pushing N(x⁰, 0) through the one-step kernels q(xᵗ|xᵗ⁻¹) = N(√(1−β_t)xᵗ⁻¹, β_t) (mean through the
    kernel's map, variance a·v + β_t with a the map's slope squared) gives the closed-form q(xᵗ|x⁰) at every t."""
    mean, var = _np(x0), np.zeros(D)
    for t in range(1, len(betas) + 1):
        k_mean, k_var = gaussian.forward_kernel(jnp.asarray(mean, jnp.float32), betas[t - 1])
        slope = float(gaussian.forward_kernel(jnp.ones(()), betas[t - 1])[0])
        mean, var = _np(k_mean), slope**2 * var + _np(k_var)
        m_t, v_t = gaussian.marginal(jnp.asarray(x0), t, jnp.asarray(betas))
        # float32 rounding compounds once per step
        np.testing.assert_allclose(_np(m_t), mean, rtol=0, atol=8 * t * EPS32 * (1 + np.abs(x0).max()))
        np.testing.assert_allclose(_np(v_t), var, rtol=8 * t * EPS32, atol=8 * t * EPS32)


@PROPERTY
@given(betas_st, bits, rates)
def test_binomial_composed_kernels_equal_marginal(betas, x0, p):
    """The binomial kernel is linear in xᵗ⁻¹, so pushing the rate of x⁰ through the one-step kernels gives the
    closed-form q(xᵗ = 1|x⁰) and q(xᵗ = 0|x⁰) at every t."""
    rate = jnp.asarray(x0)
    for t in range(1, len(betas) + 1):
        rate = binomial.forward_kernel(rate, betas[t - 1], p)[0]
        m1, m0 = binomial.marginal(jnp.asarray(x0), t, jnp.asarray(betas), p)
        np.testing.assert_allclose(_np(m1), _np(rate), rtol=0, atol=8 * t * EPS32)
        np.testing.assert_allclose(_np(m0), 1 - _np(rate), rtol=0, atol=8 * t * EPS32)


# -- posteriors: Bayes' rule and normalisation --------------------------------------------------------


@PROPERTY
@given(betas_st, coords, st.data())
def test_gaussian_posterior_is_bayes(betas, x0, data):
    """log q(xᵗ⁻¹|xᵗ,x⁰) = log q(xᵗ|xᵗ⁻¹) + log q(xᵗ⁻¹|x⁰) − log q(xᵗ|x⁰) at a joint draw of (xᵗ⁻¹, xᵗ), for every
    t ≥ 2; the posterior's variance lies in (0, β_t] (β̃_t ≤ β_t, Eq 24)."""
    t = data.draw(st.integers(2, len(betas)))
    z = np.asarray(data.draw(st.lists(st.floats(-3, 3), min_size=2 * D, max_size=2 * D)), np.float32)
    b = jnp.asarray(betas)
    m_prev, v_prev = gaussian.marginal(jnp.asarray(x0), t - 1, b)
    x_prev = m_prev + jnp.sqrt(v_prev) * z[:D]
    k_mean, k_var = gaussian.forward_kernel(x_prev, b[t - 1])
    x_t = k_mean + jnp.sqrt(k_var) * z[D:]
    post_mean, post_var = gaussian.posterior(jnp.asarray(x0), x_t, t, b)
    lhs = gaussian.log_normal(x_prev, post_mean, post_var)
    parts = (
        gaussian.log_normal(x_t, k_mean, k_var),
        gaussian.log_normal(x_prev, m_prev, v_prev),
        -gaussian.log_normal(x_t, *gaussian.marginal(jnp.asarray(x0), t, b)),
    )
    # float32: each term rounds to ~eps·|term|; a mean off by δ ≈ 8·eps·|x| moves a quadratic ½(x−μ)²/σ² by
    # ≈ |z|·δ/σ ≤ 4·δ/σ per coordinate
    size = float(np.abs(_np(lhs)).sum() + sum(np.abs(_np(q)).sum() for q in parts) + 1.0)
    x_scale = 1.0 + max(float(jnp.abs(v).max()) for v in (jnp.asarray(x0), x_prev, x_t))
    sd_min = math.sqrt(min(float(v.min()) for v in (post_var, k_var, v_prev)))
    tol = 16 * EPS32 * size + 3 * D * 4 * 8 * EPS32 * x_scale / sd_min
    np.testing.assert_allclose(_np(lhs).sum(), sum(_np(q).sum() for q in parts), rtol=0, atol=tol)
    assert np.all(_np(post_var) > 0) and np.all(_np(post_var) <= float(betas[t - 1]) * (1 + 4 * EPS32))


@PROPERTY
@given(betas_st, bits, rates, st.data())
def test_binomial_posterior_is_bayes_and_normalised(betas, x0, p, data):
    """For every xᵗ ∈ {0,1} and xᵗ⁻¹ ∈ {0,1}: log q(xᵗ⁻¹|xᵗ,x⁰) = log q(xᵗ|xᵗ⁻¹) + log q(xᵗ⁻¹|x⁰) − log q(xᵗ|x⁰),
    and the posterior's two probabilities sum to 1."""
    t = data.draw(st.integers(2, len(betas)))
    b = jnp.asarray(betas)
    x0 = jnp.asarray(x0)

    def log_bern(x, rate_pair):
        rate, one_minus = rate_pair
        return x * jnp.log(rate) + (1 - x) * jnp.log(one_minus)

    for xt_value in (0.0, 1.0):
        x_t = jnp.full((D,), xt_value)
        logit = binomial.posterior_logit(x0, x_t, t, b, p)
        log_post = {v: binomial.log_bernoulli(jnp.full((D,), v), logit) for v in (0.0, 1.0)}
        np.testing.assert_allclose(_np(jnp.logaddexp(log_post[0.0], log_post[1.0])), 0.0, atol=8 * EPS32)
        log_evidence = log_bern(x_t, binomial.marginal(x0, t, b, p))
        for v in (0.0, 1.0):
            x_prev = jnp.full((D,), v)
            rhs = (
                log_bern(x_t, binomial.forward_kernel(x_prev, b[t - 1], p))
                + log_bern(x_prev, binomial.marginal(x0, t - 1, b, p))
                - log_evidence
            )
            # log-probabilities of rates ≥ ~1e-3·0.1: |terms| ≤ ~12, float32 rounding of each
            np.testing.assert_allclose(_np(log_post[v]), _np(rhs), rtol=0, atol=1e-5 * (1 + np.abs(_np(rhs)).max()))


# -- entropies against Monte Carlo --------------------------------------------------------------------


@PROPERTY
@given(betas_st, coords, st.integers(0, 2**31 - 1))
def test_gaussian_entropies_match_monte_carlo(betas, x0, seed):
    """H_q(X¹|x⁰) and H_q(X^T|x⁰) (Eq 14) equal −E log q(xᵗ|x⁰) estimated from N_MC draws, within N_SE standard
    errors; the standard error is exact: −log q = const + ½‖z‖², variance d/2."""
    b = jnp.asarray(betas)
    se = math.sqrt(D / 2 / N_MC)
    for t, closed in ((1, gaussian.entropy_q_1_given_0(b, D)), (len(betas), gaussian.entropy_q_T_given_0(b, D))):
        mean, var = gaussian.marginal(jnp.asarray(x0), t, b)
        xs = mean + jnp.sqrt(var) * jax.random.normal(jax.random.fold_in(jax.random.key(seed), t), (N_MC, D))
        estimate = -_np(gaussian.log_normal(xs, mean, var).sum(-1)).mean()
        assert abs(estimate - float(closed)) <= N_SE * se + 1e-4 * abs(float(closed)), (t, estimate, float(closed))


@PROPERTY
@given(betas_st, bits, rates, st.integers(0, 2**31 - 1))
def test_binomial_entropies_match_monte_carlo(betas, x0, p, seed):
    """H_q(X¹|x⁰) and H_q(X^T|x⁰) (Eq 14) equal −E log q(xᵗ|x⁰) from N_MC Bernoulli draws, within N_SE standard
    errors from the exact variance Σ_i r_i(1−r_i)·logit(r_i)² of −log q."""
    b = jnp.asarray(betas)
    x0 = jnp.asarray(x0)
    for t, closed in (
        (1, binomial.entropy_q_1_given_0(x0[None], b, p, 1)[0]),
        (len(betas), binomial.entropy_q_T_given_0(x0[None], b, p, 1)[0]),
    ):
        rate, one_minus = (_np(r) for r in binomial.marginal(x0, t, b, p))
        u = np.asarray(jax.random.uniform(jax.random.fold_in(jax.random.key(seed), t), (N_MC, D)), np.float64)
        xs = (u < rate).astype(np.float64)
        estimate = -(xs * np.log(rate) + (1 - xs) * np.log(one_minus)).sum(-1).mean()
        se = math.sqrt(float((rate * one_minus * (np.log(rate) - np.log(one_minus)) ** 2).sum()) / N_MC)
        assert abs(estimate - float(closed)) <= N_SE * se + 1e-5, (t, estimate, float(closed), se)


# -- float32 stability at T = 4000 --------------------------------------------------------------------

T_LONG = 4000


def _finite(terms):
    return {name: bool(np.all(np.isfinite(np.asarray(getattr(terms, name))))) for name in terms._fields[:-1]}


@pytest.mark.parametrize("kernel", ["isotropic", "gaussian_oracle", "mlp"])
def test_gaussian_float32_stable_at_T_4000(kernel):
    """Harmonic schedule, T = 4000, float32: every bound term (estimators "all" and "trajectory") and every
    sample is finite, for both oracles and an untrained MLPNet. The isotropic oracle is the exact reversal
    of x⁰ ~ N(0, I), so its per-datum "trajectory" K − L_null is 0 in exact arithmetic (and to 1e-12 in
    float64). In float32 the error grows about as T²·eps (measured on 8 data: ≤ 3e-5 nats at T = 100,
    ≤ 2e-3 at T = 1000, ≤ 0.022 at T = 4000): allow 0.05 nats, 2% of |L_null| for d = 2."""
    schedule = HarmonicSchedule(T_LONG)
    betas = schedule()
    if kernel == "isotropic":
        diffusion = GaussianDiffusion((2,), schedule, kernel=IsotropicOracle(betas))
    elif kernel == "gaussian_oracle":
        diffusion = GaussianDiffusion((2,), schedule, kernel=GaussianOracle(betas, [0.5, -1.0], [0.3, 2.0]))
    else:
        net = nn.MLPNet(2, T_LONG, width=16, depth=2, key=jax.random.key(0))
        diffusion = GaussianDiffusion((2,), schedule, network=net, trainable=False)  # as `bind` leaves it
    x0 = np.asarray(jax.random.normal(jax.random.key(1), (8, 2)))
    # "trajectory" (the per-datum log weight of importance sampling) only where it has an exact answer
    for estimator in ("all", "trajectory") if kernel == "isotropic" else ("all",):
        terms = train.bound_terms(diffusion, {}, x0, jax.random.key(2), estimator=estimator, batch_size=8)
        assert all(_finite(terms).values()), (estimator, _finite(terms))
        if estimator == "trajectory":
            np.testing.assert_allclose(_np(terms.K - terms.log_null), 0.0, atol=0.05)
    drawn = sample(diffusion, jax.random.key(3), 128, trajectory=True)
    assert np.all(np.isfinite(np.asarray(drawn.x0))) and np.all(np.isfinite(np.asarray(drawn.trajectory)))


def test_binomial_float32_stable_at_T_4000():
    """The same for binomial diffusion with an untrained MLPNet (harmonic schedule, T = 4000, rates within
    ~1/T of 0 and 1): finite bound terms, binary samples."""
    schedule = HarmonicSchedule(T_LONG)
    basis = nn.TemporalBasis(T_LONG, num_basis=20)
    net = nn.MLPNet(4, T_LONG, width=16, depth=2, basis=basis, heads=1, key=jax.random.key(0))
    diffusion = BinomialDiffusion((4,), schedule, network=net, base_rate=0.2, trainable=False)
    x0 = (np.asarray(jax.random.uniform(jax.random.key(1), (8, 4))) < 0.4).astype(np.float32)
    terms = train.bound_terms(diffusion, {}, x0, jax.random.key(2), estimator="all", batch_size=8)
    assert all(_finite(terms).values()), _finite(terms)
    drawn = sample(diffusion, jax.random.key(3), 128)
    assert np.all(np.isin(np.asarray(drawn.x0), (0.0, 1.0)))
