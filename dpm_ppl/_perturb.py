"""The perturbed reverse kernels p̃(xᵗ⁻¹|xᵗ) ∝ p(xᵗ⁻¹|xᵗ)·r(xᵗ⁻¹) (paper §2.5.2, Eq 22, App. C).

- Gaussian (Eq 61): expand log r about the kernel mean f_μ, log r(x) ≈ log r(f_μ) + g·(x − f_μ) −
  ½·h·(x − f_μ)², g = ∇log r(f_μ), h = −diag ∇²log r(f_μ) ≥ 0. The product with N(f_μ, f_Σ) is
  N(f_μ + g/(f_Σ⁻¹ + h), 1/(f_Σ⁻¹ + h)). With ``curvature=False`` (h = 0) this is the paper's
  Eq 61, mean shifted by f_Σ·g; with the curvature term it is exact whenever log r is quadratic
  and separable in x (Gaussian noise of any known diagonal scale: the reference code's denoising
  product), and close to Eq 61 where r is smooth relative to the step. h is one Hessian-vector
  product with a vector of ones, exact for separable log r (every observation model that acts
  coordinate-wise); for coupled r it is an approximation that `smc` corrects with its weights.
- Binomial (Table App.1, per bit): B(c·d / (c·d + (1−c)(1−d))), c the kernel's rate and
  d_i = r(x_i = 1) / (r(x_i = 0) + r(x_i = 1)) — in logits, logit c + logit d. For a general r the
  odds of bit i are taken at the kernel's mode with the other bits held there: exact for
  factorised r.

A delta on coordinates (`dpm_ppl.observe_exactly`) enters as the factor q(xᵗ_S|x⁰_S = y_S)/π(xᵗ_S)
on those coordinates (`twist_*`), multiplied exactly.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Int

from . import _binomial as binomial
from . import _gaussian as gaussian


__all__ = ["perturb_binomial", "perturb_gaussian", "twist_binomial", "twist_gaussian"]

LogR = Callable[[Array], Array]  # x of shape (B, *event) -> log r per datum, shape (B,)


def _finite(x: Array) -> Array:
    return jnp.where(jnp.isfinite(x), x, 0.0)


def perturb_gaussian(params: tuple[Array, Array], log_r: LogR, curvature: bool = True) -> tuple[Array, Array]:
    """N(f_μ, f_Σ)·r as a Gaussian (Eq 61, with the exact separable curvature term when asked)."""
    mean, var = params

    def grad(x):
        return jax.grad(lambda y: jnp.sum(log_r(y)))(x)

    if curvature:
        g, hv = jax.jvp(grad, (mean,), (jnp.ones_like(mean),))
        h = jnp.maximum(-_finite(hv), 0.0)
    else:
        g, h = grad(mean), jnp.zeros_like(mean)
    precision = 1.0 / var + h
    return mean + _finite(g) / precision, 1.0 / precision


def perturb_binomial(logit: Array, log_r: LogR) -> Array:
    """B(c)·r per bit (Table App.1): logit c + logit d, d from r's odds at the kernel's mode."""
    mode = (logit > 0).astype(logit.dtype)
    flat = mode.reshape(mode.shape[0], -1)

    def odds(i):
        one, zero = flat.at[:, i].set(1.0), flat.at[:, i].set(0.0)
        return log_r(one.reshape(mode.shape)) - log_r(zero.reshape(mode.shape))

    log_odds = jax.vmap(odds)(jnp.arange(flat.shape[1]))  # (d, B)
    return logit + _finite(log_odds.T.reshape(logit.shape))


def twist_gaussian(
    params: tuple[Array, Array], mask: Array, y: Array, t: Int[ArrayLike, ""], betas: Array
) -> tuple[Array, Array]:
    """Multiply by q(xᵗ_S | x⁰_S = y_S) / π(xᵗ_S) on the masked coordinates, exactly.

    q(xᵗ|y) = N(√ᾱ_t·y, 1 − ᾱ_t) over π = N(0, 1) is Gaussian in xᵗ with precision ᾱ_t/(1 − ᾱ_t) ≥ 0:
    flat at t = T, where xᵗ carries no information about y, and sharpening towards t = 1.
    """
    mean, var = params
    m, v = gaussian.marginal(y, t, betas)
    precision = 1.0 / var + jnp.where(mask, 1.0 / v - 1.0, 0.0)
    return (mean / var + jnp.where(mask, m / v, 0.0)) / precision, 1.0 / precision


def twist_binomial(logit: Array, mask: Array, y: Array, t: Int[ArrayLike, ""], betas: Array, p: float) -> Array:
    """Multiply by q(xᵗ_S | x⁰_S = y_S) / π(xᵗ_S) (Bernoulli odds) on the masked coordinates, exactly."""
    rate, one_minus = binomial.marginal(y, t, betas, p)
    return logit + jnp.where(mask, binomial.rate_logit(rate, one_minus) - binomial.rate_logit(p, 1.0 - p), 0.0)
