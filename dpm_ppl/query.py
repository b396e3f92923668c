"""Posterior queries as ordinary NumPyro models: p̃(x⁰) ∝ p(x⁰)·r(x⁰) (paper §2.5, Eq 16).

A query is a NumPyro model ``query(diffusion, **observations)`` that calls the trained model's
`prior` and then says anything it likes about the x⁰ it returns, e.g.::

    def denoise(diffusion, y):
        x0 = diffusion.prior(y.shape[:1])                        # B independent data
        numpyro.sample("y", dist.Normal(x0, 0.5).to_event(1), obs=y)

Everything in it that is not the diffusion chain (the sites ``"trajectory"`` and ``"x0"``) is
log r(x⁰): observed sample sites (any observation model: masks, Gaussian noise, Poisson counts),
``numpyro.factor`` terms (a classifier's log-probability), and the latent sites they need (e.g. an
unknown noise scale, sampled from its prior). `observe_exactly` declares a delta on coordinates
(inpainting), which the samplers handle exactly by clamping. `LogR` extracts all this with
handlers (`substitute`, `trace`) and checks it: one number per datum, finite, depending on x⁰.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpyro
from jax.extend import core as jex_core
from jaxtyping import Array, ArrayLike, PRNGKeyArray
from numpyro import handlers
from numpyro.distributions import Distribution, constraints

from .model import TRAJECTORY, X0, AbstractDiffusion


__all__ = ["Clamp", "LogR", "QueryError", "observe_exactly"]

QueryModel = Callable[..., Any]


class QueryError(ValueError):
    """A query that cannot define p(x⁰)·r(x⁰): its message names the site and the fix."""


class Clamp(Distribution):
    """r(x⁰) = δ(x⁰[mask] − y[mask]): the exact observation of some coordinates (paper §2.5.3).

    Its log density is 0 where the masked coordinates equal the observation and −∞ elsewhere; the
    samplers never evaluate it but clamp those coordinates (`observe_exactly`).
    """

    arg_constraints = {}
    pytree_data_fields = ("x0", "mask")
    support = constraints.real_vector

    def __init__(self, x0: Array, mask: Array, event_ndim: int):
        self.x0, self.mask = x0, jnp.broadcast_to(jnp.asarray(mask, bool), x0.shape)
        ax = x0.ndim - event_ndim
        super().__init__(x0.shape[:ax], x0.shape[ax:])

    def log_prob(self, value):
        hit = jnp.where(self.mask, value == self.x0, True)
        axes = tuple(range(len(self.batch_shape), value.ndim))
        return jnp.where(jnp.all(hit, axis=axes), 0.0, -jnp.inf)

    def sample(self, key, sample_shape=()):
        raise NotImplementedError("A Clamp site is an observation; give it `obs=`.")


def observe_exactly(name: str, x0: Array, y: ArrayLike, mask: ArrayLike) -> None:
    """Observe ``x0`` exactly on the coordinates where ``mask`` is True (inpainting, paper Fig. 5).

    ``x0`` must be what `AbstractDiffusion.prior` returned, ``y`` an array of its shape (values
    where ``mask`` is False are ignored), ``mask`` a boolean array of the event shape or of
    ``x0``'s shape.
    """
    y = jnp.asarray(y, x0.dtype)
    if y.shape != x0.shape:
        raise QueryError(f"observe_exactly({name!r}): `y` must have x0's shape {tuple(x0.shape)}, got {y.shape}.")
    mask = jnp.asarray(mask, bool)
    event_ndim = mask.ndim if mask.shape != x0.shape else x0.ndim - 1
    numpyro.sample(name, Clamp(x0, mask, event_ndim), obs=y)


def _depends_on_input(jaxpr: jex_core.ClosedJaxpr) -> bool:
    """Whether any output of ``jaxpr`` depends on its first input (conservative through sub-jaxprs)."""
    tainted = {jaxpr.jaxpr.invars[0]}
    for eqn in jaxpr.jaxpr.eqns:
        if any(isinstance(v, jex_core.Var) and v in tainted for v in eqn.invars):
            tainted.update(eqn.outvars)
    return any(isinstance(v, jex_core.Var) and v in tainted for v in jaxpr.jaxpr.outvars)


class LogR:
    """log r(x⁰) of a query model, per datum, with the query's latent sites and exact observations.

    **Arguments:**

    - `query`: the NumPyro query model ``query(diffusion, **observations)``.
    - `diffusion`: the trained (`bind`) or fixed-kernel model it calls `prior` on.
    - `observations`: the keyword arguments of ``query`` (the observed data).
    - `key`: draws a prior x⁰ on which the query is checked (shapes, finiteness, dependence on x⁰).

    After construction: `num_data` (B), `latents` (name → shape of the query's own latent
    sites), `clamp` (None or ``(mask, values)``, both of x⁰'s shape, from `observe_exactly`).
    """

    def __init__(self, query: QueryModel, diffusion: AbstractDiffusion, observations: dict, key: PRNGKeyArray):
        if not callable(query):
            raise QueryError(f"`query` must be a NumPyro model (a callable), got {type(query).__name__}.")
        self.query, self.diffusion, self.observations = query, diffusion, dict(observations)
        tr = handlers.trace(handlers.seed(query, key)).get_trace(diffusion, **self.observations)
        if X0 not in tr or TRAJECTORY not in tr:
            raise QueryError(
                "The query never calls `diffusion.prior(...)`: a query must draw x⁰ from the trained model "
                "(`x0 = diffusion.prior((B,))`) and then observe it."
            )
        x0 = tr[X0]["value"]
        if x0.ndim != diffusion.event_ndim + 1:
            raise QueryError(
                f"Call `diffusion.prior((B,))` with one batch dimension (B independent data); x⁰ has shape "
                f"{tuple(x0.shape)} for event shape {diffusion.event_shape}."
            )
        self.num_data = x0.shape[0]
        self.latents: dict[str, tuple[int, ...]] = {}
        observed, clamps = [], []
        for name, site in tr.items():
            if site["type"] == "param":
                raise QueryError(f"The query declares a param {name!r}: a query has no trainable parameters.")
            if site["type"] != "sample" or name in (X0, TRAJECTORY):
                continue
            if isinstance(site["fn"], Clamp):
                clamps.append(name)
            elif site["is_observed"]:
                observed.append(name)
            else:
                self.latents[name] = tuple(site["value"].shape)
        if not observed and not clamps:
            raise QueryError(
                "The query adds no observation to the prior: give it `numpyro.sample(..., obs=y)`, "
                "`numpyro.factor(...)` or `observe_exactly(...)` on x⁰."
            )
        if len(clamps) > 1:
            raise QueryError(f"Give one `observe_exactly` site (one mask), got {clamps}.")
        self.observed, self.clamp = observed, None
        if clamps:
            fn = tr[clamps[0]]["fn"]
            if fn.x0 is not x0:
                raise QueryError(f"observe_exactly({clamps[0]!r}) must be given the x0 returned by `diffusion.prior`.")
            self.clamp = (fn.mask, jnp.broadcast_to(tr[clamps[0]]["value"], x0.shape))
        latents = {k: tr[k]["value"] for k in self.latents}
        self._check(x0, latents, clamps)

    # -- evaluation -------------------------------------------------------------------------------

    def _trace(self, x0: Array, latents: dict[str, Array]) -> dict:
        T = self.diffusion.num_steps
        dummy = jnp.zeros((x0.shape[0], T) + tuple(self.diffusion.event_shape), x0.dtype)
        data = {X0: x0, TRAJECTORY: dummy, **latents}
        return handlers.trace(handlers.substitute(self.query, data=data)).get_trace(self.diffusion, **self.observations)

    def site_log_probs(self, x0: Array, latents: dict[str, Array]) -> dict[str, Array]:
        """Each observed site's (scaled) log density, as the query declares it."""
        tr = self._trace(x0, latents)
        out = {}
        for name in self.observed:
            site = tr[name]
            lp = site["fn"].log_prob(site["value"])
            out[name] = lp if site["scale"] is None else site["scale"] * lp
        return out

    def __call__(self, x0: Array, latents: dict[str, Array] | None = None) -> Array:
        """log r(x⁰) per datum, shape ``(B,)`` (the exact observation excluded: samplers clamp it)."""
        parts = self.site_log_probs(x0, latents or {})
        total = jnp.zeros((self.num_data,), x0.dtype)
        for lp in parts.values():
            total = total + jnp.broadcast_to(lp, (self.num_data,))
        return total

    def sample_latents(self, key: PRNGKeyArray, x0: Array) -> dict[str, Array]:
        """The query's latent sites drawn from their prior (given x⁰)."""
        if not self.latents:
            return {}
        dummy = jnp.zeros((x0.shape[0], self.diffusion.num_steps) + tuple(self.diffusion.event_shape), x0.dtype)
        tr = handlers.trace(
            handlers.seed(handlers.substitute(self.query, data={X0: x0, TRAJECTORY: dummy}), key)
        ).get_trace(self.diffusion, **self.observations)
        return {k: tr[k]["value"] for k in self.latents}

    # -- checks at construction -----------------------------------------------------------------

    def _check(self, x0: Array, latents: dict[str, Array], clamps: list[str]) -> None:
        B = self.num_data
        parts = self.site_log_probs(x0, latents)
        for name, lp in parts.items():
            if lp.shape not in ((B,), ()) or (lp.shape == () and B != 1):
                raise QueryError(
                    f"Site {name!r} has a log-density of shape {tuple(lp.shape)}; a query needs one number per datum, "
                    f"shape ({B},). Declare the event dimensions of its distribution (e.g. `.to_event(1)`) or sum "
                    "a factor over them."
                )
            if not bool(jnp.all(jnp.isfinite(lp) | (lp == -jnp.inf))):
                raise QueryError(
                    f"Site {name!r} returned a non-finite log-density (NaN or +inf) at a prior draw of x⁰: "
                    "log r must be finite or −inf."
                )
        if self.observed:
            jaxpr = jax.make_jaxpr(lambda x: self(x, latents))(x0)
            if not _depends_on_input(jaxpr) and not clamps:
                raise QueryError(
                    f"The query's observations {self.observed} never touch x⁰: r(x⁰) is constant, so the posterior "
                    "is the prior. Observe the x0 returned by `diffusion.prior`."
                )
        if self.clamp is not None and not bool(jnp.any(self.clamp[0])):
            raise QueryError(f"observe_exactly({clamps[0]!r}): the mask selects no coordinate.")

    @property
    def joint(self) -> bool:
        """Whether the B data share latent sites (then the samplers treat them as one problem)."""
        return any(not shape or shape[0] != self.num_data for shape in self.latents.values())
