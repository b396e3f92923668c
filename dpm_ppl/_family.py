"""Kernel families: what the chains, the bound and the sampler need to know about a diffusion's kernels.

The paper's two families (Table App.1) differ only in their closed forms; everything built on
them — `ForwardChain`, `ReverseChain`, the bound K (Eq 14), ancestral sampling and importance
sampling (Eq 9) — is written once against `AbstractFamily`:

- `GaussianFamily`: π = N(0, I), q(xᵗ|xᵗ⁻¹) = N(√(1−β_t)xᵗ⁻¹, β_t I); a reverse kernel's
  parameters are ``(mean, variance)`` (`dpm_ppl.gaussian`).
- `BinomialFamily(p)`: π = ∏ B(p), q(xᵗ_i = 1|xᵗ⁻¹) = xᵗ⁻¹_i(1−β_t) + pβ_t; a reverse kernel's
  parameter is the logit of the Bernoulli rate f_b (`dpm_ppl.binomial`).

Randomness enters through `noise` (standard normal or uniform draws), and every sampler is a
deterministic function of it: the paper's frozen noise, which keeps Gaussian draws
reparameterised.
"""

from __future__ import annotations

import abc
import math
from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from jaxtyping import Array, ArrayLike, Int, PRNGKeyArray
from numpyro.distributions import constraints

from . import _binomial as binomial
from . import _gaussian as gaussian
from . import _perturb as perturb
from ._checks import check_binary, check_data


__all__ = ["AbstractFamily", "BinomialFamily", "GaussianFamily", "KernelParams"]

KernelParams = Any  # Gaussian: (mean, variance); binomial: the logit of the rate


class AbstractFamily(eqx.Module):
    """The closed forms of one kernel family. Elementwise methods return arrays of the data's shape;
    ``*_given_0`` and `bound_constant` sum over the last ``event_ndim`` axes (per example, nats)."""

    support: ClassVar[constraints.Constraint]
    standardise: ClassVar[bool]
    """Whether data are scaled to unit variance before training (Table 1 caption: all but binary data)."""
    modality: ClassVar[str]
    """How states are drawn (`dpm_ppl.plots`): ``"real"`` (scatter plots and columns) or ``"binary"`` (rasters)."""
    differentiable: ClassVar[bool]
    """Whether log densities have gradients in the state: the gradient-based samplers (NUTS, MALA
    rejuvenation, the tilted proposal's curvature) need it."""

    @abc.abstractmethod
    def noise(self, key: PRNGKeyArray, shape: tuple[int, ...], dtype: Any) -> Array:
        """The frozen noise that every sampler below transforms."""

    @abc.abstractmethod
    def forward_step(self, x_prev: Array, beta_t: ArrayLike, noise: Array) -> Array:
        """A draw of xᵗ ~ q(xᵗ | xᵗ⁻¹) (Table App.1)."""

    @abc.abstractmethod
    def forward_log_prob(self, x_t: Array, x_prev: Array, beta_t: ArrayLike) -> Array:
        """log q(xᵗ | xᵗ⁻¹), elementwise."""

    @abc.abstractmethod
    def marginal_sample(self, x0: Array, t: Int[ArrayLike, ""], betas: Array, noise: Array) -> Array:
        """A draw of xᵗ ~ q(xᵗ | x⁰)."""

    @abc.abstractmethod
    def marginal_log_prob(self, x_t: Array, x0: Array, t: Int[ArrayLike, ""], betas: Array) -> Array:
        """log q(xᵗ | x⁰), elementwise."""

    @abc.abstractmethod
    def posterior_log_prob(self, x_prev: Array, x_t: Array, x0: Array, t: Int[ArrayLike, ""], betas: Array) -> Array:
        """log q(xᵗ⁻¹ | xᵗ, x⁰) for t ≥ 2, elementwise."""

    @abc.abstractmethod
    def kl(self, x0: Array, x_t: Array, t: Int[ArrayLike, ""], betas: Array, params: KernelParams) -> Array:
        """KL(q(xᵗ⁻¹ | xᵗ, x⁰) ‖ p(xᵗ⁻¹ | xᵗ)), the terms of Eq 14, elementwise."""

    @abc.abstractmethod
    def reverse_step(self, params: KernelParams, noise: Array) -> Array:
        """A draw from a reverse kernel with parameters ``params``."""

    @abc.abstractmethod
    def reverse_log_prob(self, x: Array, params: KernelParams) -> Array:
        """log p(x | params) of a reverse kernel, elementwise."""

    @abc.abstractmethod
    def reverse_distribution(self, params: KernelParams) -> dist.Distribution:
        """The reverse kernel as a NumPyro distribution (batch shape = the data's shape)."""

    @abc.abstractmethod
    def last_step(self, x1: Array, beta1: ArrayLike) -> KernelParams:
        """The fixed last step p(x⁰|x¹) = q(x¹|x⁰)π(x⁰)/π(x¹) (App. B.2, Eq 44)."""

    @abc.abstractmethod
    def prior_sample(self, noise: Array) -> Array:
        """A draw of x^T ~ π."""

    @abc.abstractmethod
    def prior_params(self, shape: tuple[int, ...], dtype: Any) -> KernelParams:
        """π as a reverse kernel's parameters, every array of ``shape``."""

    @abc.abstractmethod
    def x0_estimate(self, params: KernelParams, x_t: Array, t: Int[ArrayLike, ""], betas: Array) -> tuple[Array, Array]:
        """What the reverse kernel at xᵗ says about x⁰: (x̂⁰, V), its mean and variance per coordinate.

        For t ≥ 2 the forward posterior q(xᵗ⁻¹ | xᵗ, x⁰) depends on x⁰ linearly in its mean (Gaussian) or
        rate (binomial), so a kernel ``params`` = p(xᵗ⁻¹ | xᵗ) is read as that posterior averaged over
        some p(x⁰ | xᵗ), whose mean and variance this inverts (exact for an exact time reversal). For
        t = 1 ``params`` is the fixed last step p(x⁰ | x¹), the model's own distribution of x⁰.
        """

    def tweedie_scale(self, t: Int[ArrayLike, ""], betas: Array) -> Array | None:
        """c_t with Cov[x⁰ | xᵗ] = c_t·∂E[x⁰ | xᵗ]/∂xᵗ for t ≥ 2, or None where no such identity holds.

        Gaussian: xᵗ = √ᾱ_t x⁰ + √(1−ᾱ_t) ε gives Tweedie's second-order formula with
        c_t = (1 − ᾱ_t)/√ᾱ_t, so the Jacobian of the denoiser x̂⁰ = `x0_estimate` is the model's full
        posterior covariance of x⁰ (the twisted sampler's ``covariance="jacobian"``).
        """
        del t, betas
        return None

    @abc.abstractmethod
    def tilt(self, params: KernelParams, grad: Array, curvature: Array) -> KernelParams:
        """The kernel multiplied by exp(g·x − ½·h·x²) per coordinate: the proposal of a twisted step."""

    @abc.abstractmethod
    def perturb(self, params: KernelParams, log_r: perturb.LogR, curvature: bool) -> KernelParams:
        """The paper's perturbed kernel p(x|params)·r(x) (Eq 22, App. C; `AbstractFamily.perturb`)."""

    @abc.abstractmethod
    def twist_exact(
        self, params: KernelParams, mask: Array, y: Array, t: Int[ArrayLike, ""], betas: Array
    ) -> KernelParams:
        """The kernel multiplied by q(xᵗ_S | x⁰_S = y_S)/π(xᵗ_S) on the coordinates S of ``mask`` (exactly)."""

    @abc.abstractmethod
    def log_prior(self, x: Array, event_ndim: int) -> Array:
        """log π(x) per example; its data mean is L_null (Table 1)."""

    @abc.abstractmethod
    def entropy_T(self, x0: Array, betas: Array, event_ndim: int) -> Array:
        """H_q(X^T | x⁰) per example (Eq 14)."""

    @abc.abstractmethod
    def entropy_1(self, x0: Array, betas: Array, event_ndim: int) -> Array:
        """H_q(X¹ | x⁰) per example (Eq 14)."""

    @abc.abstractmethod
    def bound_constant(self, x0: Array, betas: Array, event_ndim: int) -> Array:
        """C(x⁰) = E[log π(x^T)] + log π(x⁰) − E[log π(x¹)] per example."""

    def check_data(self, x: ArrayLike, event_shape: tuple[int, ...] | None = None, name: str = "data") -> np.ndarray:
        """Validate data at the door (shape, finiteness, and the family's support)."""
        return check_data(x, event_shape, name)


class GaussianFamily(AbstractFamily):
    """Gaussian diffusion toward π = N(0, I) (Table App.1; closed forms in `dpm_ppl.gaussian`)."""

    support: ClassVar[constraints.Constraint] = constraints.real
    standardise: ClassVar[bool] = True
    modality: ClassVar[str] = "real"
    differentiable: ClassVar[bool] = True

    def noise(self, key, shape, dtype):
        return jax.random.normal(key, shape, dtype)

    def forward_step(self, x_prev, beta_t, noise):
        return jnp.sqrt(1.0 - beta_t) * x_prev + jnp.sqrt(beta_t) * noise

    def forward_log_prob(self, x_t, x_prev, beta_t):
        return gaussian.log_normal(x_t, jnp.sqrt(1.0 - beta_t) * x_prev, beta_t)

    def marginal_sample(self, x0, t, betas, noise):
        mean, var = gaussian.marginal(x0, t, betas)
        return mean + jnp.sqrt(var) * noise

    def marginal_log_prob(self, x_t, x0, t, betas):
        return gaussian.log_normal(x_t, *gaussian.marginal(x0, t, betas))

    def posterior_log_prob(self, x_prev, x_t, x0, t, betas):
        return gaussian.log_normal(x_prev, *gaussian.posterior(x0, x_t, t, betas))

    def kl(self, x0, x_t, t, betas, params):
        return gaussian.kl_normal(*gaussian.posterior(x0, x_t, t, betas), *params)

    def reverse_step(self, params, noise):
        mean, var = params
        return mean + jnp.sqrt(var) * noise

    def reverse_log_prob(self, x, params):
        return gaussian.log_normal(x, *params)

    def reverse_distribution(self, params):
        mean, var = params
        return dist.Normal(mean, jnp.sqrt(var))

    def last_step(self, x1, beta1):
        return gaussian.last_step(x1, beta1)

    def prior_sample(self, noise):
        return noise

    def prior_params(self, shape, dtype):
        return jnp.zeros(shape, dtype), jnp.ones(shape, dtype)

    def x0_estimate(self, params, x_t, t, betas):
        mean, var = params
        t = jnp.asarray(t)
        tt = jnp.maximum(t, 2)  # t = 1: the last step is x⁰'s own distribution
        c0, ct = gaussian.posterior_coefficients(tt, betas)
        x0 = (mean - ct * x_t) / c0
        v0 = jnp.maximum(var - gaussian.posterior_variance(tt, betas), 0.0) / c0**2
        return jnp.where(t == 1, mean, x0), jnp.where(t == 1, var, v0)

    def tweedie_scale(self, t, betas):
        t = jnp.asarray(t)
        return gaussian.one_minus_alpha_bar(betas)[t] / jnp.sqrt(gaussian.alpha_bar(betas)[t])

    def tilt(self, params, grad, curvature):
        mean, var = params
        precision = 1.0 / var + curvature
        return mean + grad / precision, 1.0 / precision

    def perturb(self, params, log_r, curvature):
        return perturb.perturb_gaussian(params, log_r, curvature)

    def twist_exact(self, params, mask, y, t, betas):
        return perturb.twist_gaussian(params, mask, y, t, betas)

    def log_prior(self, x, event_ndim):
        return gaussian.log_prior(x, event_ndim)

    def entropy_T(self, x0, betas, event_ndim):
        dim = math.prod(x0.shape[x0.ndim - event_ndim :])
        return jnp.ones(x0.shape[: x0.ndim - event_ndim], x0.dtype) * gaussian.entropy_q_T_given_0(betas, dim)

    def entropy_1(self, x0, betas, event_ndim):
        dim = math.prod(x0.shape[x0.ndim - event_ndim :])
        return jnp.ones(x0.shape[: x0.ndim - event_ndim], x0.dtype) * gaussian.entropy_q_1_given_0(betas, dim)

    def bound_constant(self, x0, betas, event_ndim):
        return gaussian.bound_constant(x0, betas, event_ndim)


class BinomialFamily(AbstractFamily):
    """Binomial diffusion on {0, 1}ᵈ toward π = ∏ B(p) (Table App.1, §2.4.1; `dpm_ppl.binomial`).

    Reverse kernels are parameterised by the logit of their Bernoulli rate. Data are not
    rescaled (Table 1 caption), and must be 0 or 1.

    **Arguments:**

    - `p`: the base rate, in (0, 1). The paper prints 0.5; its heartbeat experiment used 0.2.
    """

    support: ClassVar[constraints.Constraint] = constraints.boolean
    standardise: ClassVar[bool] = False
    modality: ClassVar[str] = "binary"
    differentiable: ClassVar[bool] = False
    p: float = eqx.field(static=True, default=0.5)

    def __check_init__(self):
        if not (isinstance(self.p, (int, float)) and 0.0 < self.p < 1.0):
            raise ValueError(f"The base rate `p` must lie strictly inside (0, 1), got {self.p!r}.")

    def noise(self, key, shape, dtype):
        return jax.random.uniform(key, shape, dtype)

    def _draw(self, rate: Array, noise: Array) -> Array:
        return (noise < rate).astype(noise.dtype)

    def forward_step(self, x_prev, beta_t, noise):
        return self._draw(binomial.forward_kernel(x_prev, beta_t, self.p)[0], noise)

    def forward_log_prob(self, x_t, x_prev, beta_t):
        return binomial.log_bernoulli(x_t, binomial.rate_logit(*binomial.forward_kernel(x_prev, beta_t, self.p)))

    def marginal_sample(self, x0, t, betas, noise):
        return self._draw(binomial.marginal(x0, t, betas, self.p)[0], noise)

    def marginal_log_prob(self, x_t, x0, t, betas):
        return binomial.log_bernoulli(x_t, binomial.rate_logit(*binomial.marginal(x0, t, betas, self.p)))

    def posterior_log_prob(self, x_prev, x_t, x0, t, betas):
        return binomial.log_bernoulli(x_prev, binomial.posterior_logit(x0, x_t, t, betas, self.p))

    def kl(self, x0, x_t, t, betas, params):
        return binomial.kl_bernoulli(binomial.posterior_logit(x0, x_t, t, betas, self.p), params)

    def reverse_step(self, params, noise):
        return self._draw(jax.nn.sigmoid(params), noise)

    def reverse_log_prob(self, x, params):
        return binomial.log_bernoulli(x, params)

    def reverse_distribution(self, params):
        return dist.Bernoulli(logits=params)

    def last_step(self, x1, beta1):
        return binomial.rate_logit(*binomial.last_step(x1, beta1, self.p))

    def prior_sample(self, noise):
        return self._draw(jnp.asarray(self.p, noise.dtype), noise)

    def prior_params(self, shape, dtype):
        return jnp.full(shape, math.log(self.p) - math.log1p(-self.p), dtype)

    def x0_estimate(self, params, x_t, t, betas):
        t = jnp.asarray(t)
        tt = jnp.maximum(t, 2)
        q1, q0 = (
            jax.nn.sigmoid(binomial.posterior_logit(jnp.full_like(x_t, v), x_t, tt, betas, self.p)) for v in (1, 0)
        )
        gap = q1 - q0  # the rate is q0 + x̂·(q1 − q0) (`kernels.BinomialReverse`, rate="x0")
        safe = jnp.abs(gap) > 1e-6
        rate = jax.nn.sigmoid(params)
        x0 = jnp.where(safe, (rate - q0) / jnp.where(safe, gap, 1.0), 0.5)
        x0 = jnp.clip(jnp.where(t == 1, rate, x0), 0.0, 1.0)
        return x0, x0 * (1.0 - x0)

    def tilt(self, params, grad, curvature):
        del curvature  # first order in the log-odds of each bit
        return params + grad

    def perturb(self, params, log_r, curvature):
        del curvature
        return perturb.perturb_binomial(params, log_r)

    def twist_exact(self, params, mask, y, t, betas):
        return perturb.twist_binomial(params, mask, y, t, betas, self.p)

    def log_prior(self, x, event_ndim):
        return binomial.log_prior(x, self.p, event_ndim)

    def entropy_T(self, x0, betas, event_ndim):
        return binomial.entropy_q_T_given_0(x0, betas, self.p, event_ndim)

    def entropy_1(self, x0, betas, event_ndim):
        return binomial.entropy_q_1_given_0(x0, betas, self.p, event_ndim)

    def bound_constant(self, x0, betas, event_ndim):
        return binomial.bound_constant(x0, betas, self.p, event_ndim)

    def check_data(self, x, event_shape=None, name="data"):
        return check_binary(check_data(x, event_shape, name), name)
