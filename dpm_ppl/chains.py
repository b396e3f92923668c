"""The forward and reverse Markov chains as NumPyro distributions over whole trajectories.

Each chain is ONE sample site whose value is the trajectory x¹…x^T, shape ``(*batch, T, *event)``
with index ``k`` holding x^{k+1}. Log densities are computed by teacher forcing, in parallel over
t; only sampling runs a `lax.scan`. (A Python loop with one site per step takes minutes to
compile, and NumPyro's ``scan(reverse=True)`` misorders values under replay: ecosystem notes §1.)
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax import lax
from jaxtyping import Array, Float
from numpyro.distributions import Distribution, constraints

from . import gaussian
from .kernels import ReverseKernel


__all__ = ["LAST_STEP", "ForwardChain", "ReverseChain", "apply_kernel"]

LAST_STEP = "dpm_last_step"  # `infer` flag on the site of the fixed last step p(x⁰|x¹)


def _time_axis(event_ndim: int) -> int:
    return -(event_ndim + 1)


def _per_step(betas: Array, event_ndim: int) -> Array:
    """Reshape ``(T,)`` so that it broadcasts against ``(..., T, *event)``."""
    return betas.reshape(betas.shape + (1,) * event_ndim)


def apply_kernel(kernel: ReverseKernel, x: Array, t: Array, event_ndim: int) -> tuple[Array, Array]:
    """Evaluate a one-example kernel on ``x`` of shape ``(*batch, *event)`` at per-batch steps ``t``.

    ``t`` broadcasts against the batch shape; the kernel is vmapped over the flattened batch.
    """
    batch_shape = x.shape[: x.ndim - event_ndim]
    event_shape = x.shape[x.ndim - event_ndim :]
    n = math.prod(batch_shape)
    flat_x = x.reshape((n,) + event_shape)
    flat_t = jnp.broadcast_to(t, batch_shape).reshape((n,))
    mean, var = jax.vmap(kernel)(flat_x, flat_t)
    return mean.reshape(x.shape), jnp.broadcast_to(var, mean.shape).reshape(x.shape)


class ForwardChain(Distribution):
    """q(x¹…x^T | x⁰) = ∏_t N(xᵗ; √(1−β_t)·xᵗ⁻¹, β_t I), the guide (paper Eq 2, Table App.1).

    Sampling is reparameterised (xᵗ = √(1−β_t)·xᵗ⁻¹ + √β_t·ε_t), so SVI's gradients reach a learned
    schedule through it: the paper's frozen noise.

    **Arguments:**

    - `x0`: data, shape ``(*batch, *event)``.
    - `betas`: the schedule, shape ``(T,)``.
    - `event_ndim`: the number of event dimensions of ``x0``.
    """

    arg_constraints = {}
    pytree_data_fields = ("x0", "betas")
    pytree_aux_fields = ("event_ndim",)
    reparametrized_params = []

    def __init__(self, x0: Array, betas: Float[Array, " T"], event_ndim: int = 1, *, validate_args=None):
        self.x0, self.betas, self.event_ndim = x0, betas, event_ndim
        batch_shape = x0.shape[: x0.ndim - event_ndim]
        event_shape = (betas.shape[0],) + x0.shape[x0.ndim - event_ndim :]
        super().__init__(batch_shape, event_shape, validate_args=validate_args)

    @constraints.dependent_property(is_discrete=False, event_dim=1)
    def support(self):
        return constraints.independent(constraints.real, self.event_ndim + 1)

    def sample(self, key, sample_shape=()):
        ax = _time_axis(self.event_ndim)
        eps = jax.random.normal(key, sample_shape + self.batch_shape + self.event_shape, self.x0.dtype)
        x0 = jnp.broadcast_to(self.x0, sample_shape + self.x0.shape)

        def step(x, inputs):
            beta, e = inputs
            x = jnp.sqrt(1.0 - beta) * x + jnp.sqrt(beta) * e
            return x, x

        _, xs = lax.scan(step, x0, (self.betas, jnp.moveaxis(eps, ax, 0)))
        return jnp.moveaxis(xs, 0, ax)

    def log_prob(self, value):
        ax = _time_axis(self.event_ndim)
        x0 = jnp.broadcast_to(
            jnp.expand_dims(self.x0, ax), value.shape[:ax] + (1,) + value.shape[value.ndim + ax + 1 :]
        )
        prev = jnp.concatenate([x0, lax.slice_in_dim(value, 0, value.shape[ax] - 1, axis=ax)], axis=ax)
        beta = _per_step(self.betas, self.event_ndim)
        lp = gaussian.log_normal(value, jnp.sqrt(1.0 - beta) * prev, beta)
        return lp.sum(axis=tuple(range(ax, 0)))


class ReverseChain(Distribution):
    """p(x¹…x^T) = π(x^T)·∏_{t=2}^{T} p(xᵗ⁻¹ | xᵗ), the generative chain without its last step (Eq 5).

    The fixed last step p(x⁰|x¹) (App. B.2) is a separate site, see `dpm_ppl.GaussianDiffusion`.

    **Arguments:**

    - `kernel`: a reverse kernel ``(x_t, t) -> (mean, variance)`` on one example.
    - `betas`: the schedule (its length is T).
    - `batch_shape`, `event_shape`: the shape of one x⁰ draw is ``batch_shape + event_shape``.
    """

    arg_constraints = {}
    pytree_data_fields = ("kernel", "betas")
    pytree_aux_fields = ("data_shape",)
    reparametrized_params = []

    def __init__(
        self,
        kernel: ReverseKernel,
        betas: Float[Array, " T"],
        batch_shape: tuple[int, ...] = (),
        event_shape: tuple[int, ...] = (1,),
        *,
        validate_args=None,
    ):
        self.kernel, self.betas, self.data_shape = kernel, betas, tuple(event_shape)
        super().__init__(tuple(batch_shape), (betas.shape[0],) + tuple(event_shape), validate_args=validate_args)

    @property
    def event_ndim(self) -> int:
        return len(self.data_shape)

    @constraints.dependent_property(is_discrete=False, event_dim=1)
    def support(self):
        return constraints.independent(constraints.real, self.event_ndim + 1)

    def step_log_probs(self, value: Array) -> Array:
        """log p(xᵗ⁻¹ | xᵗ) for t = 2…T, summed over the event: shape ``(*batch, T−1)`` (teacher forcing)."""
        ax = _time_axis(self.event_ndim)
        T = value.shape[ax]
        x_next = jnp.moveaxis(lax.slice_in_dim(value, 1, T, axis=ax), ax, 0)  # x^2…x^T
        x_prev = jnp.moveaxis(lax.slice_in_dim(value, 0, T - 1, axis=ax), ax, 0)  # x^1…x^{T-1}
        ts = jnp.arange(2, T + 1).reshape((T - 1,) + (1,) * (x_next.ndim - 1 - self.event_ndim))
        mean, var = apply_kernel(self.kernel, x_next, ts, self.event_ndim)
        lp = gaussian.log_normal(x_prev, mean, var).sum(axis=tuple(range(-self.event_ndim, 0)))
        return jnp.moveaxis(lp, 0, -1)

    def log_prob(self, value):
        ax = _time_axis(self.event_ndim)
        x_T = lax.index_in_dim(value, value.shape[ax] - 1, axis=ax, keepdims=False)
        return gaussian.log_prior(x_T, self.event_ndim) + self.step_log_probs(value).sum(-1)

    def sample(self, key, sample_shape=()):
        ax = _time_axis(self.event_ndim)
        shape = sample_shape + self.batch_shape + self.data_shape
        T = self.betas.shape[0]
        key_T, key_steps = jax.random.split(key)
        x_T = jax.random.normal(key_T, shape)

        def step(x, inputs):
            t, k = inputs
            mean, var = apply_kernel(self.kernel, x, t, self.event_ndim)
            x = mean + jnp.sqrt(var) * jax.random.normal(k, shape)
            return x, x

        ts = jnp.arange(T, 1, -1)  # scan forward over reversed indices (never scan(reverse=True))
        _, xs = lax.scan(step, x_T, (ts, jax.random.split(key_steps, T - 1)))
        traj = jnp.concatenate([xs[::-1], x_T[None]], axis=0)  # x^1…x^T
        return jnp.moveaxis(traj, 0, ax)
