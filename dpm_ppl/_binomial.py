"""Closed forms of binomial diffusion on {0, 1}ᵈ (paper Table App.1, §2.4.1, App. B).

Conventions as in `dpm_ppl.gaussian`: ``betas[t - 1] = β_t``, ᾱ_t = ∏_{s≤t}(1 − β_s), the paper's
t = 1…T. ``p`` is the base rate of π = ∏ Bernoulli(p): the paper prints p = 0.5 (Table App.1)
but the heartbeat experiment used p = 0.2 (App. D.1.2). Every function is elementwise over
coordinates unless it takes ``event_ndim``. Bernoulli parameters are passed as logits where
precision matters (rates within 10⁻⁴ of 0 or 1 are routine at T = 2000); everything is in nats.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.scipy.special import xlogy
from jaxtyping import Array, ArrayLike, Float, Int

from ._event import sum_event
from ._schedules import alpha_bar, one_minus_alpha_bar


__all__ = [
    "bound_constant",
    "entropy_bernoulli",
    "entropy_q_1_given_0",
    "entropy_q_T_given_0",
    "forward_kernel",
    "kl_bernoulli",
    "last_step",
    "log_bernoulli",
    "log_prior",
    "marginal",
    "posterior_logit",
    "rate_logit",
]


def rate_logit(rate: ArrayLike, one_minus_rate: ArrayLike) -> Array:
    """logit(r) from r and 1 − r, each computed without cancellation."""
    return jnp.log(rate) - jnp.log(one_minus_rate)


def forward_kernel(x_prev: Array, beta_t: ArrayLike, p: float) -> tuple[Array, Array]:
    """q(xᵗ_i = 1 | xᵗ⁻¹) = xᵗ⁻¹_i(1−β_t) + p·β_t (Table App.1 with base rate p): returns (rate, 1 − rate).

    With probability β_t the bit is redrawn from π = B(p), otherwise kept; the kernel is
    π-reversible, which App. B.2 needs.
    """
    beta_t = jnp.asarray(beta_t)
    rate = x_prev * (1.0 - beta_t) + p * beta_t
    return rate, (1.0 - x_prev) * (1.0 - beta_t) + (1.0 - p) * beta_t


def marginal(x0: Array, t: Int[ArrayLike, ""], betas: Float[Array, " T"], p: float) -> tuple[Array, Array]:
    """q(xᵗ_i = 1 | x⁰) = ᾱ_t·x⁰_i + p·(1−ᾱ_t): returns (rate, 1 − rate).

    Linear in x⁰, so a fractional ``x0`` (a data rate) gives the marginal of independent-bits data.
    """
    abar, oma = alpha_bar(betas)[t], one_minus_alpha_bar(betas)[t]
    return abar * x0 + p * oma, abar * (1.0 - x0) + (1.0 - p) * oma


def _log_k(x_t: Array, beta_t: Array, p: float, source: int) -> Array:
    """log k(xᵗ | xᵗ⁻¹ = source), the forward kernel's log probability of ``x_t`` from a 0 or a 1."""
    rate, one_minus = forward_kernel(jnp.asarray(float(source)), beta_t, p)
    return xlogy(x_t, rate) + xlogy(1.0 - x_t, one_minus)


def posterior_logit(x0: Array, x_t: Array, t: Int[ArrayLike, ""], betas: Float[Array, " T"], p: float) -> Array:
    """logit q(xᵗ⁻¹_i = 1 | xᵗ, x⁰) for t ≥ 2 (Bayes' rule per bit):

    q = a·k(xᵗ|1) / [a·k(xᵗ|1) + (1−a)·k(xᵗ|0)],  a = q(xᵗ⁻¹_i = 1 | x⁰) = ᾱ_{t−1}x⁰_i + p(1−ᾱ_{t−1}).

    With a fractional ``x0`` = q_i, the data rate of independent bits, it is the exact time
    reversal q(xᵗ⁻¹_i = 1 | xᵗ_i) of that data (`dpm_ppl.BernoulliOracle`).
    """
    t = jnp.asarray(t)
    a, one_minus_a = marginal(x0, t - 1, betas, p)
    beta_t = betas[t - 1]
    return rate_logit(a, one_minus_a) + _log_k(x_t, beta_t, p, 1) - _log_k(x_t, beta_t, p, 0)


def last_step(x1: Array, beta1: ArrayLike, p: float) -> tuple[Array, Array]:
    """The fixed last reverse step p(x⁰_i = 1 | x¹) = q(x¹|x⁰)π(x⁰)/π(x¹) (App. B.2, Eq 44): (rate, 1 − rate).

    The binomial kernel is π-reversible, so this is the forward kernel's own form,
    x¹_i(1−β₁) + p·β₁. It is not learned.
    """
    return forward_kernel(x1, beta1, p)


def log_bernoulli(x: Array, logit: Array) -> Array:
    """Elementwise log B(x; σ(logit)) = x·log σ(l) + (1−x)·log σ(−l)."""
    return x * jax.nn.log_sigmoid(logit) + (1.0 - x) * jax.nn.log_sigmoid(-logit)


def kl_bernoulli(logit_q: Array, logit_r: Array) -> Array:
    """KL(B(q) ‖ B(r)) = q·log(q/r) + (1−q)·log((1−q)/(1−r)), from logits, elementwise."""
    q = jax.nn.sigmoid(logit_q)
    return q * (jax.nn.log_sigmoid(logit_q) - jax.nn.log_sigmoid(logit_r)) + (1.0 - q) * (
        jax.nn.log_sigmoid(-logit_q) - jax.nn.log_sigmoid(-logit_r)
    )


def entropy_bernoulli(rate: ArrayLike, one_minus_rate: ArrayLike) -> Array:
    """H₂(r) = −r·log r − (1−r)·log(1−r), elementwise (nats)."""
    return -xlogy(rate, rate) - xlogy(one_minus_rate, one_minus_rate)


def _entropy_marginal(x0: Array, t: Int[ArrayLike, ""], betas: Array, p: float, event_ndim: int) -> Array:
    return sum_event(entropy_bernoulli(*marginal(x0, t, betas, p)), event_ndim)


def entropy_q_T_given_0(x0: Array, betas: Float[Array, " T"], p: float, event_ndim: int) -> Array:
    """H_q(X^T | x⁰) = Σ_i H₂(ᾱ_T·x⁰_i + p(1−ᾱ_T)) per example (paper Eq 14; = d·H₂(p) when ᾱ_T = 0)."""
    return _entropy_marginal(x0, betas.shape[0], betas, p, event_ndim)


def entropy_q_1_given_0(x0: Array, betas: Float[Array, " T"], p: float, event_ndim: int) -> Array:
    """H_q(X¹ | x⁰) = Σ_i H₂(x⁰_i(1−β₁) + p·β₁) per example (paper Eq 14)."""
    return _entropy_marginal(x0, 1, betas, p, event_ndim)


def log_prior(x: Array, p: float, event_ndim: int) -> Array:
    """log π(x) = Σ_i log B(x_i; p) per example; its mean over data is L_null (Table 1 caption)."""
    return sum_event(xlogy(x, p) + xlogy(1.0 - x, 1.0 - p), event_ndim)


def _expected_log_prior(x0: Array, t: Int[ArrayLike, ""], betas: Array, p: float, event_ndim: int) -> Array:
    """E_{q(xᵗ|x⁰)} log π(xᵗ): log π is linear in the bits, so it is log π at the marginal rates."""
    rate, one_minus = marginal(x0, t, betas, p)
    return sum_event(rate * jnp.log(p) + one_minus * jnp.log1p(-p), event_ndim)


def bound_constant(x0: Array, betas: Float[Array, " T"], p: float, event_ndim: int) -> Array:
    """C(x⁰) = E_q[log π(x^T)] + log π(x⁰) − E_q[log π(x¹)], the prior and last-step terms of K(x⁰).

    Derived from Eq 12 as for the Gaussian (`dpm_ppl.gaussian.bound_constant`); it equals the
    paper's −H_p(X^T) = −d·H₂(p) when ᾱ_T = 0 and the data's mean activity is p (App. B.1).
    """
    T = betas.shape[0]
    return (
        _expected_log_prior(x0, T, betas, p, event_ndim)
        + log_prior(x0, p, event_ndim)
        - _expected_log_prior(x0, 1, betas, p, event_ndim)
    )
