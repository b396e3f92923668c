"""The forward and reverse Markov chains as NumPyro distributions over whole trajectories.

Each chain is ONE sample site whose value is the trajectory x¹…x^T, shape ``(*batch, T, *event)``
with index ``k`` holding x^{k+1}. Log densities are computed by teacher forcing, in parallel over
t; only sampling runs a `lax.scan`. (A Python loop with one site per step takes minutes to
compile, and NumPyro's ``scan(reverse=True)`` misorders values under replay: ecosystem notes §1.)
Both chains are written once for every kernel family (`dpm_ppl.AbstractFamily`), which supplies the
closed forms; Gaussian by default.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax import lax
from jaxtyping import Array, Float
from numpyro.distributions import Distribution, constraints

from ._event import sum_event
from ._family import AbstractFamily, GaussianFamily, KernelParams
from ._kernels import ReverseKernel
from ._remat import map_over_time


__all__ = ["LAST_STEP", "ForwardChain", "ReverseChain", "apply_kernel"]

LAST_STEP = "dpm_last_step"  # `infer` flag on the site of the fixed last step p(x⁰|x¹)


def _time_axis(event_ndim: int) -> int:
    return -(event_ndim + 1)


def _per_step(betas: Array, event_ndim: int) -> Array:
    """Reshape ``(T,)`` so that it broadcasts against ``(..., T, *event)``."""
    return betas.reshape(betas.shape + (1,) * event_ndim)


def apply_kernel(kernel: ReverseKernel, x: Array, t: Array, event_ndim: int) -> KernelParams:
    """Evaluate a one-example kernel on ``x`` of shape ``(*batch, *event)`` at per-batch steps ``t``.

    ``t`` broadcasts against the batch shape; the kernel is vmapped over the flattened batch and
    every array it returns (a Gaussian ``(mean, variance)``, a binomial logit) gets ``x``'s shape.
    """
    batch_shape = x.shape[: x.ndim - event_ndim]
    event_shape = x.shape[x.ndim - event_ndim :]
    n = math.prod(batch_shape)
    flat_x = x.reshape((n,) + event_shape)
    flat_t = jnp.broadcast_to(t, batch_shape).reshape((n,))
    out = jax.vmap(kernel)(flat_x, flat_t)
    return jax.tree.map(lambda a: jnp.broadcast_to(a, (n,) + event_shape).reshape(x.shape), out)


class ForwardChain(Distribution):
    """q(x¹…x^T | x⁰) = ∏_t q(xᵗ | xᵗ⁻¹), the guide (paper Eq 2, Table App.1).

    Gaussian sampling is reparameterised (xᵗ = √(1−β_t)·xᵗ⁻¹ + √β_t·ε_t), so SVI's gradients reach
    a learned schedule through it: the paper's frozen noise. Binomial trajectories are discrete.

    **Arguments:**

    - `x0`: data, shape ``(*batch, *event)``.
    - `betas`: the schedule, shape ``(T,)``.
    - `event_ndim`: the number of event dimensions of ``x0``.
    - `family`: the kernel family (`GaussianFamily()` by default, or `BinomialFamily(p)`).
    """

    arg_constraints = {}
    pytree_data_fields = ("x0", "betas")
    pytree_aux_fields = ("event_ndim", "family")
    reparametrized_params = []

    def __init__(
        self,
        x0: Array,
        betas: Float[Array, " T"],
        event_ndim: int = 1,
        *,
        family: AbstractFamily = GaussianFamily(),
        validate_args=None,
    ):
        self.x0, self.betas, self.event_ndim, self.family = x0, betas, event_ndim, family
        batch_shape = x0.shape[: x0.ndim - event_ndim]
        event_shape = (betas.shape[0],) + x0.shape[x0.ndim - event_ndim :]
        super().__init__(batch_shape, event_shape, validate_args=validate_args)

    # numpyro leaves dependent_property's arguments unannotated (inferred NotImplementedType) and its
    # decorated result untyped, so the override of the `support` property is not recognised.
    @constraints.dependent_property(is_discrete=False, event_dim=1)  # pyright: ignore[reportArgumentType]
    def support(self):  # pyright: ignore[reportIncompatibleMethodOverride]
        return constraints.independent(self.family.support, self.event_ndim + 1)

    def sample(self, key, sample_shape=()):
        if key is None:  # numpyro's base hint allows None
            raise ValueError("ForwardChain.sample needs a PRNG key (`jax.random.key(0)`), got None.")
        ax = _time_axis(self.event_ndim)
        eps = self.family.noise(key, sample_shape + self.batch_shape + self.event_shape, self.x0.dtype)
        x0 = jnp.broadcast_to(self.x0, sample_shape + self.x0.shape)

        def step(x, inputs):
            beta, e = inputs
            x = self.family.forward_step(x, beta, e)
            return x, x

        _, xs = lax.scan(step, x0, (self.betas, jnp.moveaxis(eps, ax, 0)))
        return jnp.moveaxis(xs, 0, ax)

    # `log_prob(value)` as in numpyro's own distributions, without the base's optional `intermediates`
    def log_prob(self, value):  # pyright: ignore[reportIncompatibleMethodOverride]
        ax = _time_axis(self.event_ndim)
        x0 = jnp.broadcast_to(
            jnp.expand_dims(self.x0, ax), value.shape[:ax] + (1,) + value.shape[value.ndim + ax + 1 :]
        )
        prev = jnp.concatenate([x0, lax.slice_in_dim(value, 0, value.shape[ax] - 1, axis=ax)], axis=ax)
        lp = self.family.forward_log_prob(value, prev, _per_step(self.betas, self.event_ndim))
        return lp.sum(axis=tuple(range(ax, 0)))


class ReverseChain(Distribution):
    """p(x¹…x^T) = π(x^T)·∏_{t=2}^{T} p(xᵗ⁻¹ | xᵗ), the generative chain without its last step (Eq 5).

    The fixed last step p(x⁰|x¹) (App. B.2) is a separate site, see `dpm_ppl.GaussianDiffusion`.

    **Arguments:**

    - `kernel`: a reverse kernel ``(x_t, t) -> params`` on one example (the family's parameters:
      Gaussian ``(mean, variance)``, binomial the rate's logit).
    - `betas`: the schedule (its length is T).
    - `batch_shape`, `event_shape`: the shape of one x⁰ draw is ``batch_shape + event_shape``.
    - `family`: the kernel family (`GaussianFamily()` by default).
    """

    arg_constraints = {}
    pytree_data_fields = ("kernel", "betas")
    pytree_aux_fields = ("data_shape", "family")
    reparametrized_params = []

    def __init__(
        self,
        kernel: ReverseKernel,
        betas: Float[Array, " T"],
        batch_shape: tuple[int, ...] = (),
        event_shape: tuple[int, ...] = (1,),
        *,
        family: AbstractFamily = GaussianFamily(),
        validate_args=None,
    ):
        self.kernel, self.betas, self.data_shape, self.family = kernel, betas, tuple(event_shape), family
        super().__init__(tuple(batch_shape), (betas.shape[0],) + tuple(event_shape), validate_args=validate_args)

    @property
    def event_ndim(self) -> int:
        return len(self.data_shape)

    # numpyro leaves dependent_property's arguments unannotated (inferred NotImplementedType) and its
    # decorated result untyped, so the override of the `support` property is not recognised.
    @constraints.dependent_property(is_discrete=False, event_dim=1)  # pyright: ignore[reportArgumentType]
    def support(self):  # pyright: ignore[reportIncompatibleMethodOverride]
        return constraints.independent(self.family.support, self.event_ndim + 1)

    def step_log_probs(self, value: Array) -> Array:
        """log p(xᵗ⁻¹ | xᵗ) for t = 2…T, summed over the event: shape ``(*batch, T−1)`` (teacher forcing)."""
        ax = _time_axis(self.event_ndim)
        T = value.shape[ax]
        x_next = jnp.moveaxis(lax.slice_in_dim(value, 1, T, axis=ax), ax, 0)  # x^2…x^T
        x_prev = jnp.moveaxis(lax.slice_in_dim(value, 0, T - 1, axis=ax), ax, 0)  # x^1…x^{T-1}
        batch_shape = x_next.shape[1 : x_next.ndim - self.event_ndim]

        def at(inputs):  # one t: log p(xᵗ⁻¹ | xᵗ) for every trajectory
            x_prev_t, x_next_t, t = inputs
            params = apply_kernel(self.kernel, x_next_t, jnp.full(batch_shape, t), self.event_ndim)
            return sum_event(self.family.reverse_log_prob(x_prev_t, params), self.event_ndim)

        lp = map_over_time(at, (x_prev, x_next, jnp.arange(2, T + 1)))  # memory bounded in T
        return jnp.moveaxis(lp, 0, -1)

    # `log_prob(value)` as in numpyro's own distributions, without the base's optional `intermediates`
    def log_prob(self, value):  # pyright: ignore[reportIncompatibleMethodOverride]
        ax = _time_axis(self.event_ndim)
        x_T = lax.index_in_dim(value, value.shape[ax] - 1, axis=ax, keepdims=False)
        return self.family.log_prior(x_T, self.event_ndim) + self.step_log_probs(value).sum(-1)

    def sample(self, key, sample_shape=()):
        return self._ancestral(key, sample_shape, keep_trajectory=True)

    def sample_x1(self, key, sample_shape=()) -> Array:
        """x¹ alone, shape ``(*sample_shape, *batch, *event)``: the same draw as ``sample(key)`` at t = 1,
        without holding the trajectory (memory batch × d instead of T × batch × d)."""
        return self._ancestral(key, sample_shape, keep_trajectory=False)

    def _ancestral(self, key, sample_shape, keep_trajectory: bool) -> Array:
        ax = _time_axis(self.event_ndim)
        shape = sample_shape + self.batch_shape + self.data_shape
        T = self.betas.shape[0]
        dtype = jnp.result_type(float)
        key_T, key_steps = jax.random.split(key)
        x_T = self.family.prior_sample(self.family.noise(key_T, shape, dtype))

        def step(x, inputs):
            t, k = inputs
            params = apply_kernel(self.kernel, x, t, self.event_ndim)
            x = self.family.reverse_step(params, self.family.noise(k, shape, dtype))
            return x, x if keep_trajectory else None

        ts = jnp.arange(T, 1, -1)  # scan forward over reversed indices (never scan(reverse=True))
        x1, xs = lax.scan(step, x_T, (ts, jax.random.split(key_steps, T - 1)))
        if not keep_trajectory:
            return x1
        assert xs is not None  # the scan stacks each step's x when keeping the trajectory
        traj = jnp.concatenate([xs[::-1], x_T[None]], axis=0)  # x^1…x^T
        return jnp.moveaxis(traj, 0, ax)
