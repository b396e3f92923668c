"""The kernel-family contract: every generic property of `AbstractFamily`, run over every family in `FAMILIES`.

In the style of numpyro's ``test_distributions.py``: one table, one test per property, each written against the
family's interface alone, never its closed forms. Adding a family means adding its row here; the properties are:

- Bayes' rule: log q(xᵗ⁻¹|xᵗ,x⁰) = log q(xᵗ|xᵗ⁻¹) + log q(xᵗ⁻¹|x⁰) − log q(xᵗ|x⁰) at a joint draw, every t ≥ 2;
- composed one-step forward draws have the marginal q(xᵗ|x⁰)'s mean and variance (Monte Carlo);
- the entropies H_q(X¹|x⁰), H_q(X^T|x⁰) and the bound constant C(x⁰) of Eq 14 match Monte Carlo;
- the fixed last step p(x⁰|x¹) is the time reversal q(x¹|x⁰)π(x⁰)/π(x¹) (π is the forward kernel's
  stationary law, so no normaliser);
- π three ways agree: `log_prior`, `prior_params` read by `reverse_log_prob`, and `prior_sample`'s draws;
- a reverse kernel's draws (`reverse_step`) have its distribution's mean, and `reverse_distribution` scores as
  `reverse_log_prob`;
- KL(q(xᵗ⁻¹|xᵗ,x⁰) ‖ p) ≥ 0, and its Monte-Carlo value E_q[log q − log p] agrees;
- `tilt` by zero and `twist_exact` on no coordinates leave a kernel as it is;
- the support: draws lie in `support`, `check_data` refuses data outside it; `differentiable` families have
  finite gradients of their log densities.

Monte-Carlo checks use N_MC draws and N_SE standard errors estimated from the same draws; the runs are seeded.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import EPS32, N_SE
from hypothesis import given, settings
from hypothesis import strategies as st

from dpm_ppl import BinomialFamily, GaussianFamily


N_MC = 40_000
D = 3
BETAS = {
    "short": np.array([0.05, 0.3, 0.6], np.float32),
    "long": np.linspace(1e-3, 0.2, 12, dtype=np.float32),
}


def _real(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.normal(0.0, 1.5, (n, D)).astype(np.float32)


def _bits(rng: np.random.Generator, n: int) -> np.ndarray:
    return (rng.uniform(size=(n, D)) < 0.4).astype(np.float32)


#: (family, draws of x⁰ in its support, a value outside its support)
FAMILIES = [
    pytest.param(GaussianFamily(), _real, np.nan, id="gaussian"),
    pytest.param(BinomialFamily(0.5), _bits, 0.5, id="binomial-p0.5"),
    pytest.param(BinomialFamily(0.15), _bits, 2.0, id="binomial-p0.15"),
]
family_rows = pytest.mark.parametrize(("family", "draw_x0", "outside"), FAMILIES)
schedules = pytest.mark.parametrize("schedule", sorted(BETAS))


def _key(*ints: int) -> jax.Array:
    key = jax.random.key(0)
    for i in ints:
        key = jax.random.fold_in(key, i)
    return key


def _within(estimate: np.ndarray, se: np.ndarray, exact: np.ndarray, slack: float = 1e-4) -> None:
    """|estimate − exact| ≤ N_SE·se + slack·(1 + |exact|), elementwise."""
    estimate, se, exact = (np.asarray(a, np.float64) for a in (estimate, se, exact))
    bound = N_SE * se + slack * (1.0 + np.abs(exact))
    assert np.all(np.abs(estimate - exact) <= bound), (estimate, exact, se)


def _mean_se(x: np.ndarray, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, np.float64)
    return x.mean(axis), x.std(axis, ddof=1) / math.sqrt(x.shape[axis])


def _forward_path(family, x0, betas, key, upto: int):
    """x¹ … x^upto by one-step forward draws from x⁰ (N_MC paths)."""
    xs, x = [], jnp.broadcast_to(x0, (N_MC, D))
    for t in range(1, upto + 1):
        x = family.forward_step(x, betas[t - 1], family.noise(jax.random.fold_in(key, t), (N_MC, D), jnp.float32))
        xs.append(x)
    return xs


@family_rows
@settings(max_examples=25, deadline=None, derandomize=True, database=None)
@given(st.lists(st.floats(1e-3, 0.99), min_size=2, max_size=12), st.integers(0, 2**31 - 1))
def test_posterior_is_bayes_rule(family, draw_x0, outside, betas, seed):
    """At every t ≥ 2 of schedules drawn by hypothesis (β up to 0.99)."""
    betas = jnp.asarray(betas, jnp.float32)
    x0 = jnp.asarray(draw_x0(np.random.default_rng(seed), 64))
    for t in range(2, len(betas) + 1):
        k1, k2 = jax.random.split(_key(seed % 1000, t))
        x_prev = family.marginal_sample(x0, t - 1, betas, family.noise(k1, x0.shape, jnp.float32))
        x_t = family.forward_step(x_prev, betas[t - 1], family.noise(k2, x0.shape, jnp.float32))
        lhs = family.posterior_log_prob(x_prev, x_t, x0, t, betas)
        terms = [
            family.forward_log_prob(x_t, x_prev, betas[t - 1]),
            family.marginal_log_prob(x_prev, x0, t - 1, betas),
            -family.marginal_log_prob(x_t, x0, t, betas),
        ]
        rhs = np.asarray(sum(terms))
        scale = 1.0 + sum(np.abs(np.asarray(a)) for a in terms)  # float32 rounding of each term carries into the sum
        assert np.all(np.abs(np.asarray(lhs) - rhs) <= 64 * EPS32 * scale)


@family_rows
@schedules
def test_composed_forward_steps_have_the_marginal(family, draw_x0, outside, schedule):
    betas = jnp.asarray(BETAS[schedule])
    x0 = jnp.asarray(draw_x0(np.random.default_rng(2), 1)[0])
    path = _forward_path(family, x0, betas, _key(2), len(betas))
    for t in (1, len(betas) // 2 + 1, len(betas)):
        composed = np.asarray(path[t - 1])
        noise = family.noise(_key(3, t), (N_MC, D), jnp.float32)
        direct = np.asarray(family.marginal_sample(jnp.broadcast_to(x0, (N_MC, D)), t, betas, noise))
        (m1, s1), (m2, s2) = _mean_se(composed), _mean_se(direct)
        _within(m1 - m2, np.hypot(s1, s2), 0.0)
        (v1, w1), (v2, w2) = _mean_se((composed - m1) ** 2), _mean_se((direct - m2) ** 2)
        _within(v1 - v2, np.hypot(w1, w2), 0.0)


@family_rows
@schedules
def test_entropies_and_bound_constant_match_monte_carlo(family, draw_x0, outside, schedule):
    betas = jnp.asarray(BETAS[schedule])
    T = len(betas)
    x0 = jnp.asarray(draw_x0(np.random.default_rng(3), 2))
    for i in range(len(x0)):
        x0_i = jnp.broadcast_to(x0[i], (N_MC, D))
        draws = {
            t: family.marginal_sample(x0_i, t, betas, family.noise(_key(4, i, t), (N_MC, D), jnp.float32))
            for t in (1, T)
        }
        for t, closed in ((1, family.entropy_1), (T, family.entropy_T)):
            neg_log_q = -np.asarray(family.marginal_log_prob(draws[t], x0_i, t, betas).sum(-1))
            _within(*_mean_se(neg_log_q), np.asarray(closed(x0[i : i + 1], betas, 1))[0])
        terms = np.asarray(family.log_prior(draws[T], 1) - family.log_prior(draws[1], 1))
        estimate, se = _mean_se(terms + float(family.log_prior(x0[i : i + 1], 1)[0]))
        _within(estimate, se, np.asarray(family.bound_constant(x0[i : i + 1], betas, 1))[0])


@family_rows
@pytest.mark.parametrize("beta1", [1e-3, 0.1, 0.6])
def test_last_step_is_the_time_reversal_of_the_first(family, draw_x0, outside, beta1):
    rng = np.random.default_rng(4)
    x0, x1 = jnp.asarray(draw_x0(rng, 200)), jnp.asarray(draw_x0(rng, 200))
    beta1 = jnp.float32(beta1)
    lhs = family.reverse_log_prob(x0, family.last_step(x1, beta1))
    rhs = family.forward_log_prob(x1, x0, beta1) + family.log_prior(x0, 0) - family.log_prior(x1, 0)
    finite = np.isfinite(np.asarray(rhs))
    np.testing.assert_allclose(np.asarray(lhs)[finite], np.asarray(rhs)[finite], rtol=64 * EPS32, atol=1e-5)


@family_rows
def test_prior_three_ways(family, draw_x0, outside):
    x = family.prior_sample(family.noise(_key(5), (N_MC, D), jnp.float32))
    params = family.prior_params((N_MC, D), jnp.float32)
    by_params = np.asarray(family.reverse_log_prob(x, params).sum(-1))
    np.testing.assert_allclose(by_params, np.asarray(family.log_prior(x, 1)), rtol=0, atol=1e-5 * D)
    # the draws have π's mean: the mean of π's own kernel distribution
    _within(*_mean_se(np.asarray(x)), np.asarray(family.reverse_distribution(params).mean)[0], slack=0.0)


@family_rows
def test_reverse_kernel_draws_and_distribution_agree(family, draw_x0, outside):
    """A kernel with other parameters than π's: the last step at some x¹ (a proper reverse kernel of each family)."""
    x1 = jnp.asarray(draw_x0(np.random.default_rng(6), 1))
    params = family.last_step(jnp.broadcast_to(x1, (N_MC, D)), jnp.float32(0.3))
    x = family.reverse_step(params, family.noise(_key(6), (N_MC, D), jnp.float32))
    d = family.reverse_distribution(params)
    np.testing.assert_allclose(np.asarray(d.log_prob(x)), np.asarray(family.reverse_log_prob(x, params)), atol=1e-5)
    _within(*_mean_se(np.asarray(x)), np.asarray(d.mean)[0], slack=0.0)


@family_rows
def test_kl_is_non_negative_and_matches_monte_carlo(family, draw_x0, outside):
    betas = jnp.asarray(BETAS["long"])
    t = 5
    x0 = jnp.asarray(draw_x0(np.random.default_rng(7), 1)[0])
    x_t = family.marginal_sample(x0, t, betas, family.noise(_key(7), (D,), jnp.float32))
    other = family.last_step(jnp.asarray(draw_x0(np.random.default_rng(8), 1)[0]), jnp.float32(0.4))
    kl = np.asarray(family.kl(x0, x_t, t, betas, other))
    assert np.all(kl >= -64 * EPS32), kl
    # E_{x ~ q(xᵗ⁻¹|xᵗ,x⁰)}[log q − log p] by self-normalised importance sampling from the marginal q(xᵗ⁻¹|x⁰)
    x0_n, x_t_n = jnp.broadcast_to(x0, (N_MC, D)), jnp.broadcast_to(x_t, (N_MC, D))
    prev = family.marginal_sample(x0_n, t - 1, betas, family.noise(_key(8), (N_MC, D), jnp.float32))
    log_w = np.asarray(family.forward_log_prob(x_t_n, prev, betas[t - 1]), np.float64)
    w = np.exp(log_w - log_w.max(0))
    w /= w.sum(0)
    f = np.asarray(
        family.posterior_log_prob(prev, x_t, x0, t, betas) - family.reverse_log_prob(prev, other), np.float64
    )
    estimate = (w * f).sum(0)
    se = np.sqrt((w**2 * (f - estimate) ** 2).sum(0))  # delta-method standard error of the ratio estimate
    _within(estimate, se, kl, slack=2e-3)


@family_rows
def test_neutral_tilt_and_twist_leave_the_kernel(family, draw_x0, outside):
    params = family.last_step(jnp.asarray(draw_x0(np.random.default_rng(9), 5)), jnp.float32(0.2))
    zero = jnp.zeros((5, D))
    same = [family.tilt(params, zero, zero), family.twist_exact(params, jnp.zeros((5, D), bool), zero, 3,
                                                                  jnp.asarray(BETAS["long"]))]  # fmt: skip
    for out in same:
        for a, b in zip(jax.tree.leaves(out), jax.tree.leaves(params)):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-6)


@family_rows
def test_support_and_gradients(family, draw_x0, outside):
    x = family.prior_sample(family.noise(_key(10), (500, D), jnp.float32))
    assert bool(jnp.all(family.support(x)))
    family.check_data(np.asarray(draw_x0(np.random.default_rng(10), 4)))
    bad = np.asarray(draw_x0(np.random.default_rng(11), 4))
    bad[2, 1] = outside
    with pytest.raises(ValueError, match=r"index \(2, 1\)"):
        family.check_data(bad)
    if family.differentiable:
        params = family.prior_params((4, D), jnp.float32)
        g = jax.grad(lambda z: family.reverse_log_prob(z, params).sum())(
            jnp.asarray(draw_x0(np.random.default_rng(12), 4))
        )
        assert bool(jnp.all(jnp.isfinite(g)))
    assert family.modality in ("real", "binary")
