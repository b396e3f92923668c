"""Shared test helpers: Monte-Carlo statistics, float64 numpy references, small networks.

Every reference here is written from the paper's formulas (Eqs 12–14, App. A–B) and the
Gaussian oracle's algebra (`dpm_ppl.GaussianOracle`), in float64 numpy, independently of
the library's code paths.
"""

from __future__ import annotations

import functools
import math

import equinox as eqx
import jax
import numpy as np

from dpm_ppl.nn import _mlp as nn


EPS32 = float(np.finfo(np.float32).eps)
N_SE = 4.0  # Monte-Carlo tolerances: 4 standard errors (two-sided false-alarm rate 6e-5 per check)
LOG_2PI = math.log(2.0 * math.pi)


# -- Monte-Carlo statistics --------------------------------------------------------------------


def mean_se(x, axis=0):
    """Sample mean and its standard error sd/√n (ddof = 1) along ``axis``."""
    x = np.asarray(x, np.float64)
    n = x.shape[axis]
    return x.mean(axis), x.std(axis, ddof=1) / math.sqrt(n)


def var_se(x, axis=0):
    """Sample variance and its standard error √((m₄ − s⁴)/n), m₄ the 4th central sample moment."""
    x = np.asarray(x, np.float64)
    n = x.shape[axis]
    c = x - x.mean(axis, keepdims=True)
    s2 = (c**2).mean(axis)
    m4 = (c**4).mean(axis)
    return s2 * n / (n - 1), np.sqrt(np.maximum(m4 - s2**2, 0.0) / n)


def assert_within_se(estimate, stderr, expected, what: str, n_se: float = N_SE) -> None:
    """|estimate − expected| ≤ n_se · stderr elementwise, with a readable failure message."""
    estimate, stderr, expected = (np.asarray(a, np.float64) for a in (estimate, stderr, expected))
    err = np.abs(estimate - expected)
    ok = err <= n_se * stderr
    assert np.all(ok), (
        f"{what}: estimate {estimate} vs expected {expected}; |diff| {err} exceeds {n_se} stderr = {n_se * stderr}"
    )


def log_mean_exp_se(logw, axis=0):
    """log mean exp(logw) and its delta-method standard error sd(w)/(√n·mean(w)), computed stably."""
    logw = np.asarray(logw, np.float64)
    n = logw.shape[axis]
    m = logw.max(axis, keepdims=True)
    w = np.exp(logw - m)
    mean_w = w.mean(axis)
    est = np.log(mean_w) + np.squeeze(m, axis)
    return est, w.std(axis, ddof=1) / (math.sqrt(n) * mean_w)


# -- float64 references (DESIGN "Oracles") ---------------------------------------


def np_alpha_bar(betas):
    """ᾱ_0…ᾱ_T in float64 by a plain cumulative product."""
    betas = np.asarray(betas, np.float64)
    return np.concatenate([[1.0], np.cumprod(1.0 - betas)])


def np_log_normal(x, mean, var):
    return -0.5 * (LOG_2PI + np.log(var) + (np.asarray(x, np.float64) - mean) ** 2 / var)


def np_oracle_coefficients(betas, mean, std):
    """The exact reverse conditional q(xᵗ⁻¹|xᵗ) = N(a_t xᵗ + c_t, w_t) for data N(mean, std²) per coordinate.

    Returns (a, c, w), each (T, d), row t−1 for step t, and the forward marginals (m, v), (T+1, d).
    """
    betas = np.asarray(betas, np.float64)
    m = [np.atleast_1d(np.asarray(mean, np.float64))]
    v = [np.broadcast_to(np.asarray(std, np.float64) ** 2, m[0].shape)]
    for beta in betas:
        m.append(math.sqrt(1.0 - beta) * m[-1])
        v.append((1.0 - beta) * v[-1] + beta)
    m, v = np.stack(m), np.stack(v)
    cov = np.sqrt(1.0 - betas)[:, None] * v[:-1]
    a = cov / v[1:]
    return a, m[:-1] - a * m[1:], v[:-1] - cov**2 / v[1:], (m, v)


def np_exact_bound(x0, betas, a, c, w):
    """The exact E_q[K(x⁰)] (nats) per datum for linear-Gaussian reverse kernels N(a_t xᵗ + c_t, w_t).

    derived from Eq 12: K = −Σ_{t≥2} E KL_t + H_q(X^T|x⁰) − H_q(X¹|x⁰) − (d/2)log 2π
    − ½[(β₁+ᾱ_T)‖x⁰‖² + (1−β₁−ᾱ_T)d], with the KL of §3.2 and its expectation over
    xᵗ ~ N(√ᾱ_t x⁰, 1−ᾱ_t) done in closed form (the mean difference is linear in xᵗ).
    """
    x0 = np.asarray(x0, np.float64)
    betas = np.asarray(betas, np.float64)
    T, d = len(betas), x0.shape[-1]
    abar = np_alpha_bar(betas)
    kl = np.zeros(x0.shape[:-1])
    for t in range(2, T + 1):
        beta = betas[t - 1]
        A = math.sqrt(abar[t - 1]) * beta / (1.0 - abar[t])  # μ̃ = A x⁰ + B xᵗ
        B = math.sqrt(1.0 - beta) * (1.0 - abar[t - 1]) / (1.0 - abar[t])
        var_q = (1.0 - abar[t - 1]) * beta / (1.0 - abar[t])
        at, ct, wt = a[t - 1], c[t - 1], w[t - 1]
        diff_mean = A * x0 - ct + (B - at) * math.sqrt(abar[t]) * x0  # E[μ̃ − a xᵗ − c]
        diff_var = (B - at) ** 2 * (1.0 - abar[t])
        kl += (0.5 * (np.log(wt / var_q) + (var_q + diff_mean**2 + diff_var) / wt - 1.0)).sum(-1)
    h_T = 0.5 * d * math.log(2 * math.pi * math.e * (1.0 - abar[T]))
    h_1 = 0.5 * d * math.log(2 * math.pi * math.e * betas[0])
    cst = betas[0] + abar[T]
    prior = -0.5 * d * LOG_2PI - 0.5 * (cst * (x0**2).sum(-1) + (1.0 - cst) * d)
    return -kl + h_T - h_1 + prior


# -- networks ------------------------------------------------------------------------------------


@functools.cache
def perturbed_mlp(dim: int, num_steps: int, seed: int, *, width: int = 16, depth: int = 2, scale: float = 0.3):
    """A small `MLPNet` whose zero-initialised readout is replaced by N(0, scale²) weights and biases,
    so that the network output (and the reverse kernel's departure from the forward kernel) is non-zero.
    Cached: Equinox modules are immutable, and building one eagerly costs seconds on a busy CPU."""
    k_net, k_w, k_b = jax.random.split(jax.random.key(seed), 3)
    net = nn.MLPNet(dim, num_steps, width=width, depth=depth, key=k_net)
    weight = scale * jax.random.normal(k_w, net.readout.weight.shape)
    bias = scale * jax.random.normal(k_b, net.readout.bias.shape)
    return eqx.tree_at(lambda n: (n.readout.weight, n.readout.bias), net, (weight, bias))


# -- the 2-D linear-Gaussian oracle of the posterior-query tests -------------------------------


def query_oracle(T: int = 10):
    """(betas, oracle, model, y) of the query tests: the Gaussian oracle of N([0.5, −1], diag(0.7, 1.3)²) data
    under a geometric schedule, its fixed-kernel model, and two observations."""
    import dpm_ppl as dpm

    betas = dpm.GeometricSchedule(T, 1e-3, 0.5)()
    oracle = dpm.GaussianOracle(betas, np.array([0.5, -1.0]), np.array([0.7, 1.3]))
    model = dpm.GaussianDiffusion((2,), dpm.ArraySchedule(betas), kernel=oracle)
    return betas, oracle, model, np.array([[1.0, 0.0], [-0.5, 2.0]], np.float32)
