"""Sequential Monte Carlo through the reverse chain for p̃(x⁰) ∝ p(x⁰)·r(x⁰) (paper §2.5, Eq 16).

Particles run x^T → x⁰ through the trained reverse kernels. The intermediate targets are

    γ_t(xᵗ…x^T) = π(x^T)·∏_{s>t} p(xˢ⁻¹|xˢ)·r_t(xᵗ),   r_t = r^{λ_t},  r_0 = r,

with λ_t = 1 (``intermediate="constant"``: the paper's r(xᵗ) = r(x⁰), Eq 16) or λ_t = (T−t)/T
(``"annealed"``, Eq 23, which leaves π untouched). The proposal at each step is the perturbed
kernel (`dpm_ppl.perturb`, Eq 22/61), the incremental weight is
γ_t / (γ_{t+1}·p̃), and particles are resampled (systematic) when the effective sample size drops
below ``resample_below × N``. The running product of the weights' means is an unbiased estimate of
Z = E_p[r(x⁰)], the evidence of the observation under the model.

An exact observation of coordinates S (`observe_exactly`) enters the intermediate targets as
r_t(xᵗ_S) = q(xᵗ_S | x⁰_S = y_S)/π(xᵗ_S), the forward chain's marginal over its limit (flat at t = T,
where xᵗ says nothing about y), and is clamped at x⁰. (The
reference code clamps xᵗ_S = y_S at every t, which conditions every intermediate state on y and is
not p(x⁰_{¬S} | x⁰_S = y_S).) Z then includes the density p(x⁰_S = y_S).

`run` with ``resample=False`` and the weights ignored is the paper's perturbed sampler; its
weights are still returned, which measures its bias (ESS, PSIS k̂).

Each of the B data is an independent problem (its own particles, weights, resampling) unless the
query's latent sites are shared by the data (`LogR.joint`), when all B form one problem.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, PRNGKeyArray

from .chains import apply_kernel
from .family import GaussianFamily
from .perturb import perturb_binomial, perturb_gaussian, twist_binomial, twist_gaussian
from .query import LogR
from .schedules import alpha_bar


__all__ = ["SMCOutput", "run"]

Intermediate = Literal["constant", "annealed", "signal"]


class SMCOutput(NamedTuple):
    """One SMC (or perturbed) run of N particles for B data.

    - `x0`: shape ``(N, B, *event)``, particles at the end (weighted by `log_weights`).
    - `latents`: the query's latent sites per particle.
    - `log_weights`: normalised final log weights, ``(N, B)``.
    - `log_Z`: log E_p[r(x⁰)] per datum, ``(B,)`` (in joint mode the total, repeated).
    - `ess`: effective sample size before each step's resampling, ``(T+1, B)``, steps x^T…x⁰.
    - `resampled`: whether each step resampled, ``(T+1, B)``.
    - `nan_count`: particles whose weight was NaN at each step, ``(T+1, B)`` (dropped; a query
      that returns NaN is reported by `dpm_ppl.posterior`).
    """

    x0: Array
    latents: dict[str, Array]
    log_weights: Array
    log_Z: Array
    ess: Array
    resampled: Array
    nan_count: Array


def _sum_event(x: Array, event_ndim: int) -> Array:
    return jnp.sum(x, axis=tuple(range(x.ndim - event_ndim, x.ndim)))


def resample_indices(key: PRNGKeyArray, log_w: Array, joint: bool) -> Array:
    """Indices ``(N, B)`` resampled along N, per datum (with one uniform for all data when joint)."""
    N, B = log_w.shape
    u = jax.random.uniform(key, (1, 1) if joint else (1, B))
    positions = (jnp.arange(N)[:, None] + u) / N
    cdf = jnp.cumsum(jax.nn.softmax(log_w, axis=0), axis=0)
    idx = jax.vmap(lambda c, p: jnp.searchsorted(c, p), in_axes=(1, 1), out_axes=1)(cdf, positions)
    return jnp.minimum(idx, N - 1)


def gather(tree, idx: Array, num_data: int):
    """Reorder particles (axis 0) by ``idx`` ``(N, B)``: per datum where axis 1 is the data axis."""

    def one(a):
        if a.ndim >= 2 and a.shape[1] == num_data:
            i = idx.reshape(idx.shape + (1,) * (a.ndim - 2))
            return jnp.take_along_axis(a, i, axis=0)
        return a[idx[:, 0]]

    return jax.tree.map(one, tree)


def run(
    log_r: LogR,
    key: PRNGKeyArray,
    num_particles: int,
    *,
    resample: bool = True,
    resample_below: float = 0.5,
    intermediate: Intermediate = "constant",
    curvature: bool = True,
) -> SMCOutput:
    """Run the particles through the reverse chain of ``log_r.diffusion`` (see the module docstring)."""
    diffusion = log_r.diffusion
    family, event_ndim = diffusion.family, diffusion.event_ndim
    gaussian = isinstance(family, GaussianFamily)
    betas = diffusion.betas()
    kernel = diffusion.reverse_kernel(betas)
    T, B, N = diffusion.num_steps, log_r.num_data, num_particles
    shape = (N, B) + tuple(diffusion.event_shape)
    dtype = jnp.result_type(float)
    clamp = log_r.clamp
    joint = log_r.joint

    abar = alpha_bar(betas)

    def lam(t):
        if intermediate == "constant":
            return jnp.ones(())
        return (T - t) / T if intermediate == "annealed" else abar[t]

    def target(x, latents, t):
        """log r_t(xᵗ) per particle and datum, ``(N, B)``."""
        lr = jax.vmap(log_r)(x, latents) * lam(t)
        if clamp is not None:
            tw = family.marginal_log_prob(x, clamp[1], jnp.maximum(t, 1), betas) - family.reverse_log_prob(
                x, _prior_params(family, shape, dtype)
            )
            lr = lr + jnp.where(t > 0, _sum_event(jnp.where(clamp[0], tw, 0.0), event_ndim), 0.0)
        return lr

    def perturbed(params, latents, t):
        def one(p, th):
            f = lambda x: log_r(x, th) * lam(t)  # noqa: E731
            return perturb_gaussian(p, f, curvature) if gaussian else perturb_binomial(p, f)

        params = jax.vmap(one)(params, latents)
        if clamp is not None:
            tt = jnp.maximum(t, 1)
            params = (
                twist_gaussian(params, clamp[0], clamp[1], tt, betas)
                if gaussian
                else twist_binomial(params, clamp[0], clamp[1], tt, betas, family.p)
            )
        return params

    def step(carry, inputs):
        x_prev, latents, log_w, log_Z, f_prev = carry
        params, t, k = inputs
        k_draw, k_res = jax.random.split(k)
        proposal = perturbed(params, latents, t)
        x = family.reverse_step(proposal, family.noise(k_draw, shape, dtype))
        fixed = jnp.zeros(shape, bool)
        if clamp is not None:
            fixed = jnp.broadcast_to((t == 0) & clamp[0], shape)
            x = jnp.where(fixed, clamp[1], x)
        log_q = _sum_event(jnp.where(fixed, 0.0, family.reverse_log_prob(x, proposal)), event_ndim)
        log_p = _sum_event(family.reverse_log_prob(x, params), event_ndim)
        f = target(x, latents, t)
        incr = log_p + f - log_q - f_prev
        if joint:
            incr = jnp.broadcast_to(jnp.sum(incr, axis=1, keepdims=True), (N, B))
        nan = jnp.sum(jnp.isnan(incr), axis=0)
        incr = jnp.where(jnp.isnan(incr), -jnp.inf, incr)
        unnorm = log_w + incr
        step_Z = jax.nn.logsumexp(unnorm, axis=0)
        log_w = unnorm - step_Z
        ess = 1.0 / jnp.sum(jnp.exp(2.0 * log_w), axis=0)
        do = resample & (ess < resample_below * N) & (t > 0)
        idx = jnp.where(do[None, :], resample_indices(k_res, log_w, joint), jnp.arange(N)[:, None])
        x, latents, f = gather((x, latents, f), idx, B)
        log_w = jnp.where(do[None, :], -jnp.log(N), log_w)
        return (x, latents, log_w, log_Z + step_Z, f), (ess, do, nan)

    k_init, k_lat, k_steps = jax.random.split(key, 3)
    x_dummy = jnp.zeros(shape, dtype)
    latents = jax.vmap(log_r.sample_latents)(jax.random.split(k_lat, N), x_dummy)
    prior_params = _prior_params(family, shape, dtype)
    carry = (x_dummy, latents, jnp.full((N, B), -jnp.log(N)), jnp.zeros((B,)), jnp.zeros((N, B)))
    keys = jax.random.split(k_steps, T + 1)
    carry, (ess_T, res_T, nan_T) = step(carry, (prior_params, jnp.asarray(T), keys[0]))

    def middle(carry, inputs):
        t, k = inputs
        params = apply_kernel(kernel, carry[0], t, event_ndim)
        return step(carry, (params, t - 1, k))

    ts = jnp.arange(T, 1, -1)
    carry, (ess_mid, res_mid, nan_mid) = jax.lax.scan(middle, carry, (ts, keys[1:T]))
    last = family.last_step(carry[0], betas[0])
    carry, (ess_0, res_0, nan_0) = step(carry, (last, jnp.asarray(0), keys[T]))
    x0, latents, log_w, log_Z, _ = carry
    ess = jnp.concatenate([ess_T[None], ess_mid, ess_0[None]])
    resampled = jnp.concatenate([res_T[None], res_mid, res_0[None]])
    nan = jnp.concatenate([nan_T[None], nan_mid, nan_0[None]])
    return SMCOutput(x0, latents, log_w, log_Z, ess, resampled, nan)


def _prior_params(family, shape, dtype):
    """π as a reverse kernel's parameters: N(0, 1) or B(p) (its logit)."""
    if isinstance(family, GaussianFamily):
        return jnp.zeros(shape, dtype), jnp.ones(shape, dtype)
    return jnp.full(shape, jnp.log(family.p) - jnp.log1p(-family.p), dtype)
