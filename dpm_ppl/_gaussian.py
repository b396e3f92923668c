"""Closed forms of Gaussian diffusion (paper Table App.1, §2.4, App. A–B).

Conventions: ``betas`` has shape ``(T,)`` with ``betas[t - 1] = β_t``; the time index ``t`` is the
paper's, 1…T. α_t = 1 − β_t and ᾱ_t = ∏_{s≤t} α_s, with ᾱ_0 = 1. Variances are per dimension
(every kernel is isotropic or diagonal). Entropies and log densities are in nats.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, Int

from ._event import sum_event
from ._schedules import alpha_bar, one_minus_alpha_bar


__all__ = [
    "alpha_bar",
    "one_minus_alpha_bar",
    "bound_constant",
    "entropy_normal",
    "entropy_prior",
    "entropy_q_T_given_0",
    "entropy_q_1_given_0",
    "forward_kernel",
    "kl_normal",
    "last_step",
    "log_normal",
    "log_prior",
    "marginal",
    "posterior",
    "posterior_coefficients",
    "interpolate_variance",
    "posterior_variance",
]

_LOG_2PI = math.log(2.0 * math.pi)


def forward_kernel(x_prev: Array, beta_t: ArrayLike) -> tuple[Array, Array]:
    """q(xᵗ | xᵗ⁻¹) = N(√(1−β_t)·xᵗ⁻¹, β_t I) (Table App.1): returns (mean, variance)."""
    beta_t = jnp.asarray(beta_t)
    return jnp.sqrt(1.0 - beta_t) * x_prev, jnp.broadcast_to(beta_t, jnp.shape(x_prev))


def marginal(x0: Array, t: Int[ArrayLike, ""], betas: Float[Array, " T"]) -> tuple[Array, Array]:
    """q(xᵗ | x⁰) = N(√ᾱ_t·x⁰, (1−ᾱ_t) I) (the frozen-noise route): (mean, variance)."""
    return jnp.sqrt(alpha_bar(betas)[t]) * x0, jnp.broadcast_to(one_minus_alpha_bar(betas)[t], jnp.shape(x0))


def posterior_variance(t: Int[ArrayLike, ""], betas: Float[Array, " T"]) -> Array:
    """β̃_t = (1−ᾱ_{t−1})·β_t / (1−ᾱ_t), the variance of q(xᵗ⁻¹ | xᵗ, x⁰); the lower entropy bound (Eq 24)."""
    oma = one_minus_alpha_bar(betas)
    return oma[t - 1] * betas[t - 1] / oma[t]


def posterior_coefficients(t: Int[ArrayLike, ""], betas: Float[Array, " T"]) -> tuple[Array, Array]:
    """(c0, ct) of the forward posterior mean μ̃_t = c0·x⁰ + ct·xᵗ, for t ≥ 2:
    c0 = √ᾱ_{t−1}·β_t/(1−ᾱ_t), ct = √α_t·(1−ᾱ_{t−1})/(1−ᾱ_t)."""
    abar, oma = alpha_bar(betas), one_minus_alpha_bar(betas)
    beta_t = betas[t - 1]
    return jnp.sqrt(abar[t - 1]) * beta_t / oma[t], jnp.sqrt(1.0 - beta_t) * oma[t - 1] / oma[t]


def posterior(x0: Array, xt: Array, t: Int[ArrayLike, ""], betas: Float[Array, " T"]) -> tuple[Array, Array]:
    """q(xᵗ⁻¹ | xᵗ, x⁰) = N(μ̃_t, β̃_t I), for t ≥ 2: returns (mean, variance).

    μ̃_t = √ᾱ_{t−1}·β_t/(1−ᾱ_t)·x⁰ + √α_t·(1−ᾱ_{t−1})/(1−ᾱ_t)·xᵗ (`posterior_coefficients`).
    """
    c0, ct = posterior_coefficients(t, betas)
    mean = c0 * x0 + ct * xt
    return mean, jnp.broadcast_to(posterior_variance(t, betas), jnp.shape(mean))


def interpolate_variance(v: ArrayLike, lower: ArrayLike, upper: ArrayLike) -> Array:
    """exp(v·log upper + (1−v)·log lower): a variance between the entropy bounds β̃_t ≤ · ≤ β_t (Eq 24) for v
    in [0, 1] (the learned variance of improved DDPM, Nichol & Dhariwal 2021, Eq 15)."""
    return jnp.exp(v * jnp.log(upper) + (1.0 - v) * jnp.log(lower))


def last_step(x1: Array, beta1: ArrayLike) -> tuple[Array, Array]:
    """The fixed last reverse step p(x⁰ | x¹) = q(x¹|x⁰)·π(x⁰)/π(x¹) = N(√(1−β₁)·x¹, β₁ I) (App. B.2, Eq 44).

    π = N(0, I) is stationary for the forward kernel, so the time reversal of the first step is
    the forward kernel itself. It is not learned.
    """
    return forward_kernel(x1, beta1)


def log_normal(x: Array, mean: ArrayLike, var: ArrayLike) -> Array:
    """Elementwise log N(x; mean, var)."""
    return -0.5 * (_LOG_2PI + jnp.log(var) + (x - mean) ** 2 / var)


def kl_normal(mean_q: Array, var_q: Array, mean_p: Array, var_p: Array) -> Array:
    """Per-dimension KL(N(μ̃, σ̃²) ‖ N(μ, σ²)) = log(σ/σ̃) + (σ̃² + (μ̃−μ)²)/(2σ²) − ½ (paper Eq 14 terms)."""
    return 0.5 * (jnp.log(var_p) - jnp.log(var_q) + (var_q + (mean_q - mean_p) ** 2) / var_p - 1.0)


def entropy_normal(var: ArrayLike, dim: int) -> Array:
    """Entropy of N(·, var·I) in d dimensions: (d/2)·log(2πe·var)."""
    return 0.5 * dim * (_LOG_2PI + 1.0 + jnp.log(var))


def entropy_q_T_given_0(betas: Float[Array, " T"], dim: int) -> Array:
    """H_q(X^T | X⁰) = (d/2)·log(2πe(1−ᾱ_T)) (paper Eq 14; App. B)."""
    return entropy_normal(one_minus_alpha_bar(betas)[-1], dim)


def entropy_q_1_given_0(betas: Float[Array, " T"], dim: int) -> Array:
    """H_q(X¹ | X⁰) = (d/2)·log(2πe·β₁) (paper Eq 14; App. B)."""
    return entropy_normal(betas[0], dim)


def entropy_prior(dim: int) -> float:
    """H_p(X^T) = (d/2)·log(2πe), the entropy of π = N(0, I) (paper Eq 14)."""
    return 0.5 * dim * (_LOG_2PI + 1.0)


def log_prior(x: Array, event_ndim: int) -> Array:
    """log π(x) = log N(x; 0, I), summed over the event dimensions.

    Averaged over data this is L_null, the log likelihood of the null model (Table 1); on
    unit-variance data it is −(d/2)·log(2πe) nats.
    """
    return sum_event(-0.5 * (_LOG_2PI + x**2), event_ndim)


def bound_constant(x0: Array, betas: Float[Array, " T"], event_ndim: int) -> Array:
    """E_q[log π(x^T)] + log π(x⁰) − E_q[log π(x¹)], the prior and last-step terms of K(x⁰).

    = −(d/2)·log 2π − ½[(β₁ + ᾱ_T)·‖x⁰‖² + (1 − β₁ − ᾱ_T)·d] (derived from Eq 12).
    It equals the paper's −H_p(X^T) when ‖x⁰‖² = d, the unit-variance condition of App. B.1.
    """
    dim = math.prod(x0.shape[x0.ndim - event_ndim :])
    sq = sum_event(x0**2, event_ndim)
    c = betas[0] + alpha_bar(betas)[-1]
    return -0.5 * dim * _LOG_2PI - 0.5 * (c * sq + (1.0 - c) * dim)
