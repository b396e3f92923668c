"""Twisted sequential Monte Carlo through the reverse chain for p̃(x⁰) ∝ p(x⁰)·r(x⁰) (paper §2.5).

Particles run x^T → x⁰ through the model's reverse kernels. The intermediate targets are

    γ_t(xᵗ…x^T) = π(x^T)·∏_{s>t} p(xˢ⁻¹|xˢ)·ψ_t(xᵗ),   ψ_0 = r,

and the incremental weight of a move xᵗ → xᵗ⁻¹ drawn from a proposal q is

    w_t = p(xᵗ⁻¹|xᵗ)·ψ_{t−1}(xᵗ⁻¹) / (q(xᵗ⁻¹|xᵗ)·ψ_t(xᵗ)).

Whatever the twists ψ_t, the running product of the weights' means is an unbiased estimate of
Z = E_p[r(x⁰)] and the final weighted particles target p(x⁰)·r(x⁰) exactly as N → ∞ (Del Moral
2004); the twists only decide the variance. The best twist is p(y | xᵗ) = ∫ p(x⁰|xᵗ) r(x⁰) dx⁰
(then every weight is constant), and the twists here approximate it from what the model itself
predicts about x⁰ from xᵗ, (x̂⁰, V) = `AbstractFamily.x0_estimate` of the reverse kernel at xᵗ:

- ``"smoothed"``: for each observation recognised as y ~ N(A x⁰ + b, σ²) (`linear_gaussian`), the
  Gaussian-smoothed N(y; A x̂⁰ + b, σ²I + A C Aᵀ); every other factor of r at x̂⁰ (as ``"tds"``).
  C is Cov[x⁰ | xᵗ]: with ``covariance="jacobian"`` the full covariance c_t·∂x̂⁰/∂xᵗ of Tweedie's
  second-order formula (`AbstractFamily.tweedie_scale`; Boys et al. 2023, TMPD), A C Aᵀ from m
  Jacobian-vector products of the denoiser (m rows of A), symmetrised and clipped to be positive
  semi-definite; with ``"diagonal"`` the kernel's own diag V. The Jacobian form sees how the
  coordinates of x⁰ move together (the modes of a mixture lie along a few directions), which diag V
  cannot; it is held fixed under the gradient that tilts the proposal.
- ``"tds"``: r(x̂⁰(xᵗ)) (Wu et al. 2023, TDS).
- ``"noisy"``: r(xᵗ)^{(T−t)/T}, r evaluated at the noisy state (paper Eq 16 with the annealing of
  Eq 23). Kept for comparison only: its incremental weights can have infinite variance, and log Z
  comes out biased low by several nats at T ≥ 50 with error bars that do not cover.

The proposal of a twisted step is the reverse kernel tilted by the twist's gradient at xᵗ (TDS):
mean f_μ + g/(f_Σ⁻¹ + h) with g = ∇ log ψ_t(xᵗ) and, with ``curvature``, h = max(0, −∂²log ψ_t)
along the coordinates (one Hessian-vector product), which keeps sharp observations from
overshooting; binomial kernels shift each bit's logit by g. ``"noisy"`` uses the paper's perturbed
kernel (Eq 22, App. C) of ψ_{t−1} at f_μ.

An exact observation of coordinates S (`query.observe_exactly`) is clamped at x⁰, and enters every
intermediate target as the forward chain's marginal q(xᵗ_S | x⁰_S = y_S)/π(xᵗ_S), multiplied into the
proposal exactly (`AbstractFamily.twist_exact`); x̂⁰_S = y_S, V_S = 0 in the other twists. Z then
includes the density p(x⁰_S = y_S).

Particles are resampled (systematic, BlackJAX) when the effective sample size drops below
``resample_below × N``. With ``rejuvenate = k``, each step ends with k Metropolis-adjusted Langevin
moves of every particle's xᵗ⁻¹ under its current target p(xᵗ⁻¹|xᵗ)·ψ_{t−1}(xᵗ⁻¹) (resample-move,
Gilks & Berzuini 2001), preconditioned by the kernel's variance, accepted per particle and datum,
with the step size adapted between steps towards an acceptance rate of 0.57.

Each of the B data is an independent problem (its own particles, weights, resampling) unless the
query's latent sites are shared by the data (`LogR.joint`), when all B form one problem.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, PRNGKeyArray

from ..._chains import apply_kernel
from .._linear_gaussian import LinearGaussian
from .._query import LogR


__all__ = ["COVARIANCES", "Covariance", "SMCOutput", "TWISTS", "Twist", "gather", "resample_indices", "run"]

Twist = Literal["smoothed", "tds", "noisy"]
TWISTS: tuple[str, ...] = ("smoothed", "tds", "noisy")
Covariance = Literal["jacobian", "diagonal"]
COVARIANCES: tuple[str, ...] = ("jacobian", "diagonal")
_TARGET_ACCEPT = 0.574  # MALA's optimal acceptance rate (Roberts & Rosenthal 1998)


class SMCOutput(NamedTuple):
    """One SMC run of N particles for B data.

    - `x0`: shape ``(N, B, *event)``, particles at the end (weighted by `log_weights`).
    - `latents`: the query's latent sites per particle.
    - `log_weights`: normalised final log weights, ``(N, B)``.
    - `log_Z`: log Ẑ per datum, ``(B,)`` (in joint mode the total, repeated).
    - `ess`: effective sample size before each step's resampling, ``(T+1, B)``, steps x^T…x⁰.
    - `resampled`: whether each step resampled, ``(T+1, B)``.
    - `nan_count`: particles whose weight was NaN at each step, ``(T+1, B)`` (dropped).
    - `accept`: the rejuvenation moves' mean acceptance rate at each step, ``(T+1, B)`` (NaN without).
    """

    x0: Array
    latents: dict[str, Array]
    log_weights: Array
    log_Z: Array
    ess: Array
    resampled: Array
    nan_count: Array
    accept: Array


def _sum_event(x: Array, event_ndim: int) -> Array:
    return jnp.sum(x, axis=tuple(range(x.ndim - event_ndim, x.ndim)))


def _finite(x: Array) -> Array:
    return jnp.where(jnp.isfinite(x), x, 0.0)


def resample_indices(key: PRNGKeyArray, log_w: Array, joint: bool) -> Array:
    """Systematic resampling (BlackJAX) along N, per datum (one uniform for all data when joint): ``(N, B)``."""
    from blackjax.smc import resampling  # here, not at import: importing blackjax compiles, which would fix
    # JAX's persistent-cache folder before `dpm_ppl.cli._compile_cache.enable` could choose it

    N, B = log_w.shape
    keys = jnp.broadcast_to(key, (B,)) if joint else jax.random.split(key, B)
    weights = jax.nn.softmax(log_w, axis=0)
    return jax.vmap(lambda k, w: resampling.systematic(k, w, N), in_axes=(0, 1), out_axes=1)(keys, weights)


def gather(tree, idx: Array, num_data: int):
    """Reorder particles (axis 0) by ``idx`` ``(N, B)``: per datum where axis 1 is the data axis."""

    def one(a):
        if a.ndim >= 2 and a.shape[1] == num_data:
            i = idx.reshape(idx.shape + (1,) * (a.ndim - 2))
            return jnp.take_along_axis(a, i, axis=0)
        return a[idx[:, 0]]

    return jax.tree.map(one, tree)


class _Eval(NamedTuple):
    """The twist at a state xᵗ: log ψ_t (``(N, B)``), the kernel p(xᵗ⁻¹|xᵗ) there, and ψ's tilt."""

    log_psi: Array
    params: object
    grad: Array
    curvature: Array


def run(
    log_r: LogR,
    key: PRNGKeyArray,
    num_particles: int,
    *,
    twist: Twist | Literal["perturbed"] = "smoothed",
    smoothed: tuple[LinearGaussian, ...] = (),
    covariance: Covariance = "jacobian",
    resample: bool = True,
    resample_below: float = 0.5,
    curvature: bool = True,
    rejuvenate: int = 0,
    step_size: float = 0.5,
) -> SMCOutput:
    """Run the particles through the reverse chain of ``log_r.diffusion`` (module docstring).

    ``twist="perturbed"`` is the paper's perturbed sampler: r(xᵗ) = r(x⁰) at every step (Eq 16)
    with the perturbed kernel (Eq 22), and ``resample=False``; its weights measure its bias.
    ``smoothed`` are the query's recognised linear-Gaussian sites (`linear_gaussian.recognise`), and
    ``covariance`` how their twist gets Cov[x⁰ | xᵗ] (module docstring; "jacobian" needs a family with
    `AbstractFamily.tweedie_scale`, else the diagonal is used).
    """
    diffusion = log_r.diffusion
    family, event_ndim = diffusion.family, diffusion.event_ndim
    betas = diffusion.betas()
    kernel = diffusion.reverse_kernel(betas)
    T, B, N = diffusion.num_steps, log_r.num_data, num_particles
    shape = (N, B) + tuple(diffusion.event_shape)
    dtype = jnp.result_type(float)
    clamp, joint = log_r.clamp, log_r.joint
    differentiable = family.differentiable
    prior_params = family.prior_params(shape, dtype)
    at_noisy_state = twist in ("noisy", "perturbed")
    smoothed_names = {s.name for s in smoothed} if twist == "smoothed" else set()
    rest = [name for name in log_r.observed if name not in smoothed_names]
    jacobian = bool(smoothed_names) and covariance == "jacobian" and family.tweedie_scale(1, betas) is not None
    rows = [site.rows(diffusion.dim) for site in smoothed] if jacobian else []

    def lam(t):
        return jnp.ones(()) if twist == "perturbed" else (T - t) / T

    def log_r_at(x, latents):
        return jax.vmap(log_r)(x, latents)  # (N, B)

    def clamp_term(x, t):
        """log q(xᵗ_S | y_S) − log π(xᵗ_S) summed over S, ``(N, B)`` (0 at t = 0, where x⁰_S is clamped)."""
        if clamp is None:
            return jnp.zeros((N, B), dtype)
        tt = jnp.maximum(t, 1)
        tw = family.marginal_log_prob(x, clamp[1], tt, betas) - family.reverse_log_prob(x, prior_params)
        return jnp.where(t > 0, _sum_event(jnp.where(clamp[0], tw, 0.0), event_ndim), 0.0)

    def x0_of(params, x, t):
        x0, v0 = family.x0_estimate(params, x, t, betas)
        if clamp is not None:
            x0, v0 = jnp.where(clamp[0], clamp[1], x0), jnp.where(clamp[0], 0.0, v0)
        return x0, v0

    def jacobian_covariances(x, t):
        """A·Cov[x⁰|xᵗ]·Aᵀ = c_t·A (∂x̂⁰/∂xᵗ) Aᵀ per smoothed site, ``(N, B, m, m)``, held fixed (t ≥ 2)."""
        _, jvp = jax.linearize(lambda z: x0_of(apply_kernel(kernel, z, t, event_ndim), z, t)[0], x)
        scale = family.tweedie_scale(t, betas)
        assert scale is not None  # `jacobian` holds only for a family with a Tweedie scale
        covs = []
        for A in rows:  # (B, m, d)
            m = A.shape[1]
            tangents = jnp.broadcast_to(jnp.moveaxis(A, 1, 0)[:, None], (m, N) + A.shape[:1] + A.shape[2:])
            ja = jax.vmap(jvp)(tangents.reshape((m,) + shape)).reshape(m, N, B, -1)  # row i: J·aᵢ
            c = scale * jnp.einsum("bjd,inbd->nbij", A, ja)
            w, u = jnp.linalg.eigh(0.5 * (c + jnp.swapaxes(c, -1, -2)))
            covs.append(jax.lax.stop_gradient(jnp.einsum("nbij,nbj,nbkj->nbik", u, jnp.maximum(w, 0.0), u)))
        return covs

    def log_psi_r(x, params, latents, t, covs=None):
        """log ψ_t(xᵗ) without the clamp term, ``(N, B)``; ``covs``: `jacobian_covariances` at xᵗ, or None."""
        if at_noisy_state:
            return log_r_at(x, latents) * lam(t)
        x0, v0 = x0_of(params, x, t)
        total = jnp.zeros((N, B), dtype)
        for i, site in enumerate(smoothed if twist == "smoothed" else ()):
            total = total + jax.vmap(site.log_twist)(x0, v0, None if covs is None else covs[i])
        if rest:
            parts = jax.vmap(log_r.site_log_probs)(x0, latents)
            for name in rest:
                total = total + jnp.broadcast_to(parts[name], (N, B))
        return total

    def kernel_at(x, t, last):
        return family.last_step(x, betas[0]) if last else apply_kernel(kernel, x, t, event_ndim)

    def evaluate(x, latents, t, last, with_curvature=True) -> _Eval:
        """ψ_t at xᵗ (t ≥ 1) and the kernel there; ``last``: t = 1, whose kernel is the fixed last step."""

        covs = jacobian_covariances(x, t) if jacobian and not last and not at_noisy_state else None

        def value(z):
            params = kernel_at(z, t, last)
            lp = log_psi_r(z, params, latents, t, covs)
            return jnp.sum(jnp.where(jnp.isfinite(lp), lp, 0.0)), (lp, params)

        zeros = jnp.zeros(shape, dtype)
        if at_noisy_state:
            _, (lp, params) = value(x)
            g, h = zeros, zeros
        elif curvature and differentiable and with_curvature:
            (g, (lp, params)), (hv, _) = jax.jvp(jax.grad(value, has_aux=True), (x,), (jnp.ones_like(x),))
            h = jnp.maximum(-_finite(hv), 0.0)
        else:
            g, (lp, params) = jax.grad(value, has_aux=True)(x)
            h = zeros
        return _Eval(lp + clamp_term(x, t), params, _finite(g), h)

    def evaluate_x0(x, latents) -> _Eval:
        zeros = jnp.zeros(shape, dtype)
        return _Eval(log_r_at(x, latents), prior_params, zeros, zeros)

    def proposal(ev: _Eval, latents, t_new):
        if at_noisy_state:

            def one(p, th):
                return family.perturb(p, lambda z: log_r(z, th) * lam(t_new), curvature)

            prop = jax.vmap(one)(ev.params, latents)
        else:
            prop = family.tilt(ev.params, ev.grad, ev.curvature)
        if clamp is not None:
            prop = family.twist_exact(prop, clamp[0], clamp[1], jnp.maximum(t_new, 1), betas)
        return prop

    def mala(key, x, parent, latents, t_new, last, eps):
        """``rejuvenate`` MALA moves of x ~ p(x | parent)·ψ(x), per particle and datum; returns x, acceptance."""
        mean_p, var_p = parent

        def log_target(z):
            ev = evaluate(z, latents, t_new, last, with_curvature=False)
            lp = _sum_event(family.reverse_log_prob(z, parent), event_ndim) + ev.log_psi
            grad_c = jax.grad(lambda u: jnp.sum(clamp_term(u, t_new)))(z) if clamp is not None else 0.0
            return lp, ev.grad + grad_c - (z - mean_p) / var_p

        e = eps.reshape((1, B) + (1,) * event_ndim)

        def sweep(carry, k):
            z, lp, g, acc = carry
            drift = 0.5 * e**2 * var_p * g
            z_new = z + drift + e * jnp.sqrt(var_p) * jax.random.normal(k, shape, dtype)
            lp_new, g_new = log_target(z_new)
            back = z_new + 0.5 * e**2 * var_p * g_new

            def log_q(to, frm):
                return _sum_event(-0.5 * (to - frm) ** 2 / (e**2 * var_p), event_ndim)

            log_a = lp_new - lp + log_q(z, back) - log_q(z_new, z + drift)
            log_a = jnp.where(jnp.isnan(log_a), -jnp.inf, log_a)
            u = jax.random.uniform(jax.random.fold_in(k, 1), (N, B))
            take = jnp.log(u) < log_a
            sel = take.reshape((N, B) + (1,) * event_ndim)
            z = jnp.where(sel, z_new, z)
            return (
                z,
                jnp.where(take, lp_new, lp),
                jnp.where(sel, g_new, g),
                acc + jnp.minimum(1.0, jnp.exp(log_a)),
            ), None

        lp0, g0 = log_target(x)
        carry = (x, lp0, g0, jnp.zeros((N, B), dtype))
        (x, _, _, acc), _ = jax.lax.scan(sweep, carry, jax.random.split(key, rejuvenate))
        return x, jnp.mean(acc, axis=0) / rejuvenate  # (B,)

    def step(carry, t, k, last_new):
        """Move every particle xᵗ → xᵗ⁻¹ and weigh it; ``last_new``: t − 1 = 1 (evaluated with the last step)."""
        x, latents, log_w, log_Z, ev, eps = carry
        t_new = t - 1
        k_draw, k_res, k_move = jax.random.split(k, 3)
        prop = proposal(ev, latents, t_new)
        x_new = family.reverse_step(prop, family.noise(k_draw, shape, dtype))
        fixed = jnp.zeros(shape, bool)
        final = isinstance(t_new, int) and t_new == 0
        if clamp is not None and final:
            fixed = jnp.broadcast_to(clamp[0], shape)
            x_new = jnp.where(fixed, clamp[1], x_new)
        log_q = _sum_event(jnp.where(fixed, 0.0, family.reverse_log_prob(x_new, prop)), event_ndim)
        log_p = _sum_event(family.reverse_log_prob(x_new, ev.params), event_ndim)
        ev_new = evaluate_x0(x_new, latents) if final else evaluate(x_new, latents, t_new, last_new)
        incr = log_p + ev_new.log_psi - log_q - ev.log_psi
        if joint:
            incr = jnp.broadcast_to(jnp.sum(incr, axis=1, keepdims=True), (N, B))
        nan = jnp.sum(jnp.isnan(incr), axis=0)
        incr = jnp.where(jnp.isnan(incr), -jnp.inf, incr)
        unnorm = log_w + incr
        step_Z = jax.nn.logsumexp(unnorm, axis=0)
        log_w = unnorm - step_Z
        ess = 1.0 / jnp.sum(jnp.exp(2.0 * log_w), axis=0)
        accept = jnp.full((B,), jnp.nan, dtype)
        if final:
            return (x_new, latents, log_w, log_Z + step_Z, ev_new, eps), (ess, jnp.zeros((B,), bool), nan, accept)
        do = resample & (ess < resample_below * N)
        idx = jnp.where(do[None, :], resample_indices(k_res, log_w, joint), jnp.arange(N)[:, None])
        x_new, latents, ev_new, parent = gather((x_new, latents, ev_new, ev.params), idx, B)
        log_w = jnp.where(do[None, :], -jnp.log(N), log_w)
        if rejuvenate:
            x_new, accept = mala(k_move, x_new, parent, latents, t_new, last_new, eps)
            eps = jnp.clip(eps * jnp.exp(accept - _TARGET_ACCEPT), 1e-3, 2.0)
            ev_new = evaluate(x_new, latents, t_new, last_new)
        return (x_new, latents, log_w, log_Z + step_Z, ev_new, eps), (ess, do, nan, accept)

    k_lat, k_init, k_steps = jax.random.split(key, 3)
    latents = jax.vmap(log_r.sample_latents)(jax.random.split(k_lat, N), jnp.zeros(shape, dtype))
    # `_Eval(None, ...)`: a placeholder, as at the noisy state `proposal` reads only the kernel's params
    prop_T = proposal(_Eval(None, prior_params, None, None), latents, T) if at_noisy_state else prior_params  # pyright: ignore[reportArgumentType]
    x_T = family.reverse_step(prop_T, family.noise(k_init, shape, dtype))
    ev_T = evaluate(x_T, latents, jnp.asarray(T), T == 1)
    log_prior = family.reverse_log_prob(x_T, prior_params) - family.reverse_log_prob(x_T, prop_T)
    log_w = ev_T.log_psi + _sum_event(log_prior, event_ndim)
    if joint:
        log_w = jnp.broadcast_to(jnp.sum(log_w, axis=1, keepdims=True), (N, B))
    log_Z = jax.nn.logsumexp(log_w, axis=0) - jnp.log(N)
    log_w = jax.nn.log_softmax(log_w, axis=0)
    ess_T = 1.0 / jnp.sum(jnp.exp(2.0 * log_w), axis=0)
    keys = jax.random.split(k_steps, T)
    eps0 = jnp.full((B,), step_size, dtype)
    carry = (x_T, latents, log_w, log_Z, ev_T, eps0)
    stats = [(ess_T, jnp.zeros((B,), bool), jnp.zeros((B,), jnp.int32), jnp.full((B,), jnp.nan, dtype))]
    if T > 2:

        def middle(carry, inputs):
            t, k = inputs
            return step(carry, t, k, last_new=False)

        carry, mid = jax.lax.scan(middle, carry, (jnp.arange(T, 2, -1), keys[: T - 2]))
        stats.append(mid)
    if T > 1:
        carry, s = step(carry, jnp.asarray(2), keys[T - 2], last_new=True)
        stats.append(jax.tree.map(lambda a: a[None], s))
    carry, s = step(carry, 1, keys[T - 1], last_new=False)
    stats.append(jax.tree.map(lambda a: a[None], s))
    stats[0] = jax.tree.map(lambda a: a[None], stats[0])
    ess, resampled, nan, accept = (jnp.concatenate(parts) for parts in zip(*stats))
    x0, latents, log_w, log_Z, _, _ = carry
    return SMCOutput(x0, latents, log_w, log_Z, ess, resampled, nan.astype(jnp.int32), accept)
