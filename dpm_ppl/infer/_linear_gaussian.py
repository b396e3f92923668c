"""Gaussian observations of linear functions of x⁰, recognised in a query, and their smoothed twist.

A query site ``numpyro.sample(name, dist.Normal(A x⁰ + b, σ), obs=y)`` (possibly masked, with
`.to_event`, or under `numpyro.handlers.scale`) makes r Gaussian in x⁰. If the model says
x⁰ | xᵗ ≈ N(x̂⁰, diag V) (`AbstractFamily.x0_estimate`), then

    p(y | xᵗ) = ∫ p(x⁰ | xᵗ)·r(x⁰) dx⁰ ≈ N(y; A x̂⁰ + b, diag σ² + A diag(V) Aᵀ),

the Gaussian-smoothed twist of twisted SMC (Wu et al. 2023, "Practical and asymptotically exact
conditional sampling in diffusion models", §3; the moment form is that of DPS/ΠGDM-style
likelihood approximations). It is exact when p(x⁰ | xᵗ) is Gaussian, e.g. for the linear-Gaussian
oracle (`kernels.GaussianOracle`), and the SMC weights correct it everywhere else.

`recognise` finds such sites by tracing the query: the site's distribution must be a Normal whose
scale does not depend on x⁰ and whose location is affine in x⁰ datum by datum (checked at random
points); A is then read off by forward-mode derivatives. Selections (each row of A one coordinate,
as in denoising and noisy inpainting) are kept as indices, so the twist costs O(m); other A are
dense, with an m × m Cholesky per particle.
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpyro.distributions as dist
from jaxtyping import Array, Float, Int

from ._query import LogR


__all__ = ["LinearGaussian", "recognise"]

_LOG_2PI = math.log(2.0 * math.pi)


class LinearGaussian(eqx.Module):
    """One recognised site: y ~ N(A x⁰ + b, diag s2) per datum, x⁰ flattened to d coordinates.

    Either `index`/`coef` (a selection: row i reads ``coef[i] * x⁰[index[i]]``, distinct indices) or
    `matrix` (dense A, shape ``(B, m, d)``) is set.
    """

    name: str = eqx.field(static=True)
    y: Float[Array, "B m"]
    offset: Float[Array, "B m"]
    s2: Float[Array, "B m"]
    index: Int[Array, "B m"] | None
    coef: Float[Array, "B m"] | None
    matrix: Float[Array, "B m d"] | None

    def rows(self, d: int) -> Float[Array, "B m d"]:
        """The rows of A as a dense ``(B, m, d)`` array (a selection's rows are scaled unit vectors)."""
        if self.index is not None:
            assert self.coef is not None  # a selection sets `index` and `coef` together
            return self.coef[..., None] * jax.nn.one_hot(self.index, d, dtype=self.coef.dtype)
        assert self.matrix is not None  # otherwise A is dense
        return self.matrix

    def log_twist(self, x0_hat: Array, v0: Array, cov: Array | None = None) -> Array:
        """log N(y; A x̂⁰ + b, diag s2 + C) per datum, shape ``(B,)``, for x̂⁰, V of shape ``(B, *event)``.

        C is ``cov`` (``(B, m, m)``: A Cov[x⁰|xᵗ] Aᵀ, e.g. from the denoiser's Jacobian) when given,
        else A diag(V) Aᵀ.
        """
        B = x0_hat.shape[0]
        x, v = x0_hat.reshape(B, -1), v0.reshape(B, -1)
        if self.index is not None:
            assert self.coef is not None  # a selection sets `index` and `coef` together
            mean = self.coef * jnp.take_along_axis(x, self.index, axis=1) + self.offset
            if cov is None:
                var = self.s2 + self.coef**2 * jnp.take_along_axis(v, self.index, axis=1)
                return -0.5 * jnp.sum(_LOG_2PI + jnp.log(var) + (self.y - mean) ** 2 / var, axis=1)
        else:
            mean = jnp.einsum("bmd,bd->bm", self.matrix, x) + self.offset
        if cov is None:
            cov = jnp.einsum("bmd,bd,bnd->bmn", self.matrix, v, self.matrix)
        chol = jnp.linalg.cholesky(cov + jax.vmap(jnp.diag)(self.s2))
        z = jax.scipy.linalg.solve_triangular(chol, (self.y - mean)[..., None], lower=True)[..., 0]
        log_det = 2.0 * jnp.sum(jnp.log(jnp.diagonal(chol, axis1=1, axis2=2)), axis=1)
        return -0.5 * (self.y.shape[1] * _LOG_2PI + log_det + jnp.sum(z**2, axis=1))


def _normal_of(fn: dist.Distribution) -> tuple[dist.Normal | None, Array | None]:
    """The Normal inside ``fn`` (through `.to_event` and `.mask`) and its mask over the Normal's shape."""
    mask = None
    while True:
        if isinstance(fn, dist.MaskedDistribution):
            m = jnp.asarray(fn._mask, bool)
            m = m.reshape(m.shape + (1,) * len(fn.event_shape))
            m = jnp.broadcast_to(m, tuple(fn.batch_shape) + tuple(fn.event_shape))
            mask = m if mask is None else mask & m
            fn = fn.base_dist
        elif isinstance(fn, dist.Independent):
            fn = fn.base_dist
        else:
            break
    return (fn, mask) if type(fn) is dist.Normal else (None, None)


def _site_parts(log_r: LogR, name: str, x0: Array):
    site = log_r._trace(x0, {})[name]
    normal, mask = _normal_of(site["fn"])
    assert normal is not None  # `recognise` only asks for sites that are Normal
    shape = jnp.shape(site["value"])
    # numpyro's promote_shapes is unannotated: Normal.loc/.scale are inferred to include shape tuples
    loc = jnp.broadcast_to(normal.loc, shape)  # pyright: ignore[reportArgumentType]
    scale = jnp.broadcast_to(normal.scale, shape)  # pyright: ignore[reportArgumentType]
    mask = jnp.ones(shape, bool) if mask is None else jnp.broadcast_to(mask, shape)
    return loc, scale, mask, site


def recognise(log_r: LogR, key: jax.Array) -> tuple[LinearGaussian, ...]:
    """The query's observed sites that are Gaussian in a linear function of x⁰ (module docstring).

    Queries with latent sites of their own are not smoothed (their r is not fixed given x⁰).
    """
    if log_r.latents:
        return ()
    diffusion, B = log_r.diffusion, log_r.num_data
    shape = (B,) + tuple(diffusion.event_shape)
    d = diffusion.dim
    ka, kb = jax.random.split(key)
    xa, xb = 3.0 * jax.random.normal(ka, shape), 3.0 * jax.random.normal(kb, shape)
    zero = jnp.zeros(shape)
    found = []
    for name in log_r.observed:
        site = log_r._trace(zero, {})[name]
        normal, _ = _normal_of(site["fn"])
        scale_factor = site["scale"]
        if normal is None or (scale_factor is not None and jnp.ndim(scale_factor) != 0):
            continue
        if jnp.shape(site["value"])[:1] != (B,):
            continue

        def loc(x, name=name):
            return _site_parts(log_r, name, x)[0].reshape(B, -1)

        def rest(x, name=name):
            _, scale, mask, _ = _site_parts(log_r, name, x)
            return scale.reshape(B, -1), mask.reshape(B, -1)

        l0, la, lb, lab = loc(zero), loc(xa), loc(xb), loc(xa + xb)
        tol = 1e-4 * (1.0 + jnp.max(jnp.abs(lab)))
        if not bool(jnp.all(jnp.abs(la + lb - lab - l0) < tol)):
            continue  # location not affine in x⁰
        (sa, ma), (sb, mb) = rest(xa), rest(xb)
        if not (bool(jnp.all(sa == sb)) and bool(jnp.all(ma == mb))):
            continue  # scale or mask depends on x⁰
        # A, datum by datum: derivative along coordinate j of every datum at once; a datum's loc must
        # not move with another datum's x⁰.
        probe = jnp.zeros(shape).at[0].set(jax.random.normal(ka, shape[1:]))
        cross = jax.jvp(loc, (zero,), (probe,))[1]
        if B > 1 and not bool(jnp.all(jnp.abs(cross[1:]) < tol)):
            continue
        basis = jnp.eye(d, dtype=zero.dtype).reshape((d, 1) + shape[1:])
        cols = jax.vmap(lambda e: jax.jvp(loc, (zero,), (jnp.broadcast_to(e, shape),))[1])(basis)  # (d, B, m)
        A = jnp.moveaxis(cols, 0, -1)  # (B, m, d)
        y = jnp.asarray(site["value"], zero.dtype).reshape(B, -1)
        s2 = sa**2 / (1.0 if scale_factor is None else scale_factor)
        A = jnp.where(ma[..., None], A, 0.0)  # masked rows observe nothing
        y, l0 = jnp.where(ma, y, 0.0), jnp.where(ma, l0, 0.0)
        s2 = jnp.where(ma, s2, 1.0)
        nonzero = jnp.sum(A != 0, axis=-1)
        index = jnp.argmax(jnp.abs(A), axis=-1)
        selection = bool(jnp.all(nonzero <= 1))
        if selection:
            sorted_index = jnp.sort(jnp.where(nonzero > 0, index, -1 - jnp.arange(index.shape[1])), axis=1)
            selection = bool(jnp.all(sorted_index[:, 1:] != sorted_index[:, :-1]))
        if selection:
            coef = jnp.take_along_axis(A, index[..., None], axis=-1)[..., 0]
            found.append(LinearGaussian(name, y, l0, s2, index, coef, None))
        else:
            found.append(LinearGaussian(name, y, l0, s2, None, None, A))
    return tuple(found)
