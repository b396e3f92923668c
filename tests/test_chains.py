"""The forward and reverse chains as whole-trajectory NumPyro distributions (paper Eqs 2, 5)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import EPS32, assert_within_se, mean_se, np_alpha_bar, var_se

from dpm_ppl import ForwardChain, GaussianOracle, GeometricSchedule, HarmonicSchedule, IsotropicOracle, ReverseChain
from dpm_ppl import _gaussian as gaussian


T = 6
BETAS = GeometricSchedule(T, 0.05, 0.6)()


def toy_kernel(x, t):
    """A nonlinear, x- and t-dependent reverse kernel: a wrong time index or order changes its values."""
    return 0.9 * jnp.tanh(x) + 0.1 * t, 0.1 + 0.05 * t + 0.01 * x**2


def test_forward_sample_marginals_and_transitions():
    """ForwardChain.sample: per-step marginals are q(xᵗ|x⁰) = N(√ᾱ_t x⁰, 1−ᾱ_t) (`gaussian.marginal`),
    and each step's innovation xᵗ − √(1−β_t)xᵗ⁻¹ has mean 0 and variance β_t (n = 20 000, 4 stderr)."""
    n = 20_000
    x0 = jnp.array([2.0, -1.0])
    traj = np.asarray(jax.jit(lambda k: ForwardChain(x0, BETAS).sample(k, (n,)))(jax.random.key(0)), np.float64)
    assert traj.shape == (n, T, 2)
    b = np.asarray(BETAS, np.float64)
    prev = np.broadcast_to(np.asarray(x0, np.float64), (n, 2))
    for t in range(1, T + 1):
        x_t = traj[:, t - 1]
        mean, var = gaussian.marginal(x0, t, BETAS)
        m, se = mean_se(x_t)
        assert_within_se(m, se, mean, f"mean of x^{t}")
        v, se_v = var_se(x_t)
        assert_within_se(v, se_v, var, f"variance of x^{t}")
        innovation = x_t - math.sqrt(1 - b[t - 1]) * prev
        m, se = mean_se(innovation)
        assert_within_se(m, se, 0.0, f"innovation mean at t={t}")
        m2, se2 = mean_se(innovation**2)
        assert_within_se(m2, se2, b[t - 1], f"innovation variance at t={t}")
        prev = x_t


def _forward_log_prob_loop(x0, traj, betas, event_axes):
    lp, prev = 0.0, x0
    for t in range(1, len(betas) + 1):
        x_t = traj[..., t - 1, :, :] if len(event_axes) == 2 else traj[..., t - 1, :]
        lp = lp + gaussian.log_normal(x_t, jnp.sqrt(1 - betas[t - 1]) * prev, betas[t - 1]).sum(event_axes)
        prev = x_t
    return lp


def _reverse_log_prob_loop(traj, kernel, event_ndim):
    """log π(x^T) + Σ_{t=2}^{T} log N(xᵗ⁻¹; kernel(xᵗ, t)) for ONE example, one step at a time."""
    event_axes = tuple(range(-event_ndim, 0))
    lp = gaussian.log_prior(traj[-1], event_ndim)
    for t in range(2, traj.shape[0] + 1):
        mean, var = kernel(traj[t - 1], t)
        lp = lp + gaussian.log_normal(traj[t - 2], mean, var).sum(event_axes)
    return lp


@pytest.mark.parametrize("event_shape", [(3,), (2, 3)])
def test_forward_log_prob_equals_per_step_loop(event_shape):
    """ForwardChain.log_prob = Σ_t log N(xᵗ; √(1−β_t)xᵗ⁻¹, β_t) summed over the event (explicit loop)."""
    B = 4
    event_ndim = len(event_shape)
    k1, k2, k3 = jax.random.split(jax.random.key(1), 3)
    x0 = jax.random.normal(k1, (B,) + event_shape)
    chain = ForwardChain(x0, BETAS, event_ndim)
    assert chain.batch_shape == (B,) and chain.event_shape == (T,) + event_shape
    traj = jax.jit(chain.sample)(k2)
    assert traj.shape == (B, T) + event_shape
    other = jax.random.normal(k3, traj.shape)  # an arbitrary value, not a draw of the chain
    event_axes = tuple(range(-event_ndim, 0))
    log_prob = jax.jit(chain.log_prob)
    loop = jax.jit(lambda v: _forward_log_prob_loop(x0, v, BETAS, event_axes))
    for value in (traj, other):
        lp = log_prob(value)
        assert lp.shape == (B,)
        ref = loop(value)
        # float32 sums of T·d terms of O(1–100): 8·T·d eps relative to Σ|terms|, bounded by |ref| + 1e3 eps
        np.testing.assert_allclose(lp, ref, rtol=8 * T * math.prod(event_shape) * EPS32, atol=1e-3)
    samples = jax.eval_shape(lambda k: chain.sample(k, (5,)), k2)
    assert samples.shape == (5, B, T) + event_shape
    assert jax.eval_shape(chain.log_prob, samples).shape == (5, B)


@pytest.mark.parametrize("event_shape", [(3,), (2, 3)])
def test_reverse_log_prob_equals_per_step_loop(event_shape):
    """ReverseChain.log_prob = log π(x^T) + Σ_{t=2}^{T} log N(xᵗ⁻¹; f_μ(xᵗ, t), f_Σ(xᵗ, t)) for a
    nonlinear t-dependent kernel (explicit loop over t, one example at a time)."""
    B = 4
    event_ndim = len(event_shape)
    chain = ReverseChain(toy_kernel, BETAS, (B,), event_shape)
    assert chain.batch_shape == (B,) and chain.event_shape == (T,) + event_shape
    traj = jax.jit(chain.sample)(jax.random.key(2))
    assert traj.shape == (B, T) + event_shape
    lp = jax.jit(chain.log_prob)(traj)
    assert lp.shape == (B,)
    loop = jax.jit(lambda traj: jnp.stack([_reverse_log_prob_loop(traj[i], toy_kernel, event_ndim) for i in range(B)]))
    np.testing.assert_allclose(lp, loop(traj), rtol=8 * T * math.prod(event_shape) * EPS32, atol=1e-3)
    steps = jax.jit(chain.step_log_probs)(traj)
    assert steps.shape == (B, T - 1)
    np.testing.assert_allclose(lp, gaussian.log_prior(traj[:, -1], event_ndim) + steps.sum(-1), rtol=1e-6)
    samples = jax.eval_shape(lambda k: chain.sample(k, (5,)), jax.random.key(3))
    assert samples.shape == (5, B, T) + event_shape
    assert jax.eval_shape(chain.log_prob, samples).shape == (5, B)


def test_two_dim_event_equals_flattened():
    """Elementwise kernels: a (2, 3) event has the same log densities as the flattened (6,) event."""
    B = 3
    x0 = jax.random.normal(jax.random.key(4), (B, 2, 3))

    @jax.jit
    def log_probs(key):
        traj = ForwardChain(x0, BETAS, 2).sample(key)
        flat = traj.reshape(B, T, 6)
        return (
            ForwardChain(x0, BETAS, 2).log_prob(traj),
            ForwardChain(x0.reshape(B, 6), BETAS, 1).log_prob(flat),
            ReverseChain(toy_kernel, BETAS, (B,), (2, 3)).log_prob(traj),
            ReverseChain(toy_kernel, BETAS, (B,), (6,)).log_prob(flat),
        )

    fwd_2d, fwd_flat, rev_2d, rev_flat = log_probs(jax.random.key(5))
    np.testing.assert_allclose(fwd_2d, fwd_flat, rtol=1e-6)  # the same float32 terms summed in another order
    np.testing.assert_allclose(rev_2d, rev_flat, rtol=1e-6)


def test_reverse_sample_marginals_follow_the_oracle():
    """ReverseChain.sample with the Gaussian oracle: x^T ~ N(0, 1) and, going down, xᵗ⁻¹ | xᵗ ~
    N(a_t xᵗ + c_t, w_t), so the per-step marginals are N(M_t, S_t) with M_{t−1} = a_t M_t + c_t,
    S_{t−1} = a_t² S_t + w_t (a linear-Gaussian recursion); index k of the value holds x^{k+1}
    (n = 20 000, 4 stderr)."""
    oracle = GaussianOracle(BETAS, mean=[1.5], std=[0.4])
    n = 20_000
    sample = jax.jit(lambda k: ReverseChain(oracle, BETAS, (n,), (1,)).sample(k))
    traj = np.asarray(sample(jax.random.key(6)), np.float64)[..., 0]
    a, c, w = (np.asarray(z, np.float64)[:, 0] for z in (oracle.slope, oracle.offset, oracle.variance))
    M, S = 0.0, 1.0
    for t in range(T, 0, -1):
        m, se = mean_se(traj[:, t - 1])
        assert_within_se(m, se, M, f"reverse-chain mean of x^{t}")
        v, se_v = var_se(traj[:, t - 1])
        assert_within_se(v, se_v, S, f"reverse-chain variance of x^{t}")
        if t > 1:
            M, S = a[t - 1] * M + c[t - 1], a[t - 1] ** 2 * S + w[t - 1]


def test_isotropic_reverse_chain_is_the_forward_chain_reversed():
    """With the isotropic oracle the reverse chain is stationary N(0, 1) at every step with
    lag-one covariance Cov(xᵗ⁻¹, xᵗ) = √(1−β_t), as for the forward chain started at π (n = 20 000)."""
    betas = HarmonicSchedule(5)()
    n = 20_000
    sample = jax.jit(lambda k: ReverseChain(IsotropicOracle(betas), betas, (n,), (1,)).sample(k))
    traj = np.asarray(sample(jax.random.key(7)), np.float64)[..., 0]
    b = np.asarray(betas, np.float64)
    for t in range(1, 6):
        v, se_v = var_se(traj[:, t - 1])
        assert_within_se(v, se_v, 1.0, f"variance of x^{t}")
        if t > 1:
            cov, se_c = mean_se(traj[:, t - 2] * traj[:, t - 1])
            assert_within_se(cov, se_c, math.sqrt(1 - b[t - 1]), f"Cov(x^{t - 1}, x^{t})")
    abar = np_alpha_bar(b)
    assert abar[-1] < 1e-5  # the harmonic schedule erases x⁰ (sanity check of the set-up)


def test_forward_chain_scalar_events():
    """ForwardChain with event_ndim = 0 (scalar data, batch (B,)): log_prob equals the per-step loop."""
    x0 = jnp.array([0.5, -1.0, 2.0])
    chain = ForwardChain(x0, BETAS, event_ndim=0)
    traj = chain.sample(jax.random.key(8))
    assert traj.shape == (3, T)
    ref = _forward_log_prob_loop(x0[:, None], traj[..., None], BETAS, (-1,))
    np.testing.assert_allclose(chain.log_prob(traj), ref, rtol=1e-5)
