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

**Data units.** A trained run learns z = (x − shift)/scale (`dpm_ppl.datasets.Standardiser`), but its user
observes x. `in_data_units(query, standardiser)` runs a query on a view of the model (`DataUnits`)
whose `prior` returns x⁰ = z·scale + shift, so the query states its observation model in the units of
the data, e.g. ``Normal(x0, 0.1)`` for a noise of 0.1 in those units. The samplers still move z; log r
is the same function evaluated at x⁰(z), so log Z = log ∫ p(z)·r(x⁰(z)) dz needs no Jacobian (an exact
observation's delta is the exception: δ(x⁰_S − y_S) = δ(z_S − y'_S)/scale_S, see `dpm_ppl.posterior`).
The map is affine, so Gaussian observations of x⁰ stay linear-Gaussian in z (`linear_gaussian`), and
`observe_exactly` on the x⁰ of the view clamps z at y' = (y − shift)/scale. `check_observations`
runs a query once on given observations and names the argument whose shape or type is wrong.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import jax
import jax.core  # `jax.core.Tracer`: imported by `import jax`, named here for type checkers
import jax.numpy as jnp
import numpy as np
import numpyro
from jax.extend import core as jex_core
from jaxtyping import Array, ArrayLike, PRNGKeyArray
from numpyro import handlers
from numpyro.distributions import Distribution, constraints
from numpyro.primitives import Messenger

from .._model import TRAJECTORY, X0, AbstractDiffusion
from ._sample import sample


__all__ = ["Clamp", "DataUnits", "LogR", "QueryError", "check_observations", "in_data_units", "observe_exactly"]

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
    # numpyro declares `support` a property but lets subclasses override it with a class attribute
    support = constraints.real_vector  # pyright: ignore[reportIncompatibleMethodOverride, reportAssignmentType]
    mask: Array  # the observed coordinates; shadows `Distribution.mask()` (a public name, kept)

    def __init__(self, x0: Array, mask: Array, event_ndim: int):
        # the attribute shadows `Distribution.mask()` on purpose (see above)
        self.x0, self.mask = x0, jnp.broadcast_to(jnp.asarray(mask, bool), x0.shape)  # pyright: ignore[reportIncompatibleMethodOverride]
        ax = x0.ndim - event_ndim
        super().__init__(x0.shape[:ax], x0.shape[ax:])

    # `log_prob(value)` as in numpyro's own distributions, without the base's optional `intermediates`
    def log_prob(self, value):  # pyright: ignore[reportIncompatibleMethodOverride]
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
        raise QueryError(
            f"observe_exactly({name!r}): `y` has shape {tuple(y.shape)} but x⁰ has shape {tuple(x0.shape)} "
            f"({_per_datum(tuple(x0.shape[1:]))} per datum); give one value per coordinate of x⁰ (any value "
            "where `mask` is False)."
        )
    mask = jnp.asarray(mask, bool)
    try:
        fits = jnp.broadcast_shapes(mask.shape, x0.shape) == tuple(x0.shape)
    except ValueError:
        fits = False
    if not fits:
        raise QueryError(
            f"observe_exactly({name!r}): `mask` has shape {tuple(mask.shape)}; give x⁰'s shape {tuple(x0.shape)} or "
            f"its event shape {tuple(x0.shape[1:])}."
        )
    event_ndim = mask.ndim if mask.shape != x0.shape else x0.ndim - 1
    known = jnp.broadcast_to(mask, x0.shape)
    if not isinstance(y, jax.core.Tracer) and not isinstance(known, jax.core.Tracer):
        bad = np.argwhere(np.asarray(known) & ~np.isfinite(np.asarray(y)))
        if bad.size:
            raise QueryError(
                f"observe_exactly({name!r}): `y` is not finite at index {tuple(int(i) for i in bad[0])}, where "
                f"`mask` says it is observed ({len(bad)} such entries); mark missing values False in `mask`."
            )
    y = jnp.where(known, y, 0.0)  # the values that are not observed never reach the samplers (NaN placeholders)
    numpyro.sample(name, Clamp(x0, mask, event_ndim), obs=y)


def _per_datum(event_shape: tuple[int, ...]) -> str:
    if len(event_shape) == 1:
        return f"rows of {event_shape[0]} columns"
    return f"examples of shape {event_shape}"


# -- data units -----------------------------------------------------------------------------------


def affine_map(standardiser, event_shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """(shift, scale) of ``standardiser`` (``z = (x − shift)/scale``) as float32 arrays of ``event_shape``."""
    try:
        shift = np.broadcast_to(np.asarray(standardiser.shift, np.float64), event_shape)
        scale = np.broadcast_to(np.asarray(standardiser.scale, np.float64), event_shape)
    except AttributeError as err:
        raise TypeError(
            f"`standardiser` must have `shift` and `scale` (z = (x − shift)/scale, e.g. "
            f"`dpm_ppl.load_run(dir).split.standardiser`), got {type(standardiser).__name__}."
        ) from err
    except ValueError as err:
        raise ValueError(
            f"The standardiser's shift {np.shape(standardiser.shift)} and scale {np.shape(standardiser.scale)} do not "
            f"fit the model's event shape {tuple(event_shape)}: {err}"
        ) from err
    if not (np.all(np.isfinite(scale)) and np.all(scale > 0) and np.all(np.isfinite(shift))):
        raise ValueError("The standardiser's scale must be finite and > 0 and its shift finite.")
    return shift.astype(np.float32), scale.astype(np.float32)


def log_scale_sum(standardiser, event_shape: tuple[int, ...], mask: Array) -> np.ndarray:
    """Σ log scale over the coordinates of ``mask`` (shape ``(B, *event)``), per datum: what an exact observation
    in data units subtracts from log Z (δ(x_S − y_S) = δ(z_S − y'_S)/Π_S scale)."""
    _, scale = affine_map(standardiser, event_shape)
    logs = np.log(scale.astype(np.float64))
    axes = tuple(range(1, 1 + len(event_shape)))
    return np.sum(np.where(np.asarray(mask), logs, 0.0), axis=axes)


class _ClampInModelUnits(Messenger):
    """Turns `observe_exactly` on a `DataUnits` x⁰ into the clamp of the model's z (y' = (y − shift)/scale)."""

    def __init__(self, shift: np.ndarray, scale: np.ndarray):
        super().__init__(None)
        self.shift, self.scale = shift, scale
        self.pairs: list[tuple[Array, Array]] = []  # (x⁰ in data units, the z it was made from)

    def process_message(self, msg):
        fn = msg.get("fn")
        if msg["type"] != "sample" or not isinstance(fn, Clamp):
            return
        for x, z in self.pairs:
            if fn.x0 is x:
                value = (jnp.asarray(msg["value"], z.dtype) - self.shift) / self.scale
                msg["fn"] = Clamp(z, fn.mask, len(fn.event_shape))
                msg["value"] = jnp.where(fn.mask, value, 0.0)
                return


class DataUnits:
    """The trained model as a query sees it in data units: `prior` returns x⁰ = z·scale + shift.

    Every other attribute (``event_shape``, ``num_steps``, ``dim``, …) is the model's own. Made by
    `in_data_units`; a query never builds one itself.
    """

    def __init__(self, diffusion: AbstractDiffusion, clamps: _ClampInModelUnits):
        self._diffusion, self._clamps = diffusion, clamps

    @property
    def model_units(self) -> AbstractDiffusion:
        """The model itself, whose `prior` returns z in its own (standardised) units."""
        return self._diffusion

    def prior(self, batch_shape: tuple[int, ...] = ()) -> Array:
        """x⁰ ~ p(x⁰) in data units: the model's z ~ p(z) (sites "trajectory" and "x0"), then z·scale + shift."""
        z = self._diffusion.prior(batch_shape)
        x = z * jnp.asarray(self._clamps.scale, z.dtype) + jnp.asarray(self._clamps.shift, z.dtype)
        self._clamps.pairs.append((x, z))
        return x

    def __getattr__(self, name):
        return getattr(self._diffusion, name)

    def __repr__(self) -> str:
        return f"DataUnits({type(self._diffusion).__name__}, event_shape={self._diffusion.event_shape})"


def in_data_units(query: QueryModel, standardiser) -> QueryModel:
    """The query ``query(diffusion, **observations)`` run with x⁰ in data units (module docstring).

    ``standardiser`` has ``shift`` and ``scale`` (a number or one per coordinate) with z = (x − shift)/scale,
    e.g. ``dpm_ppl.load_run(dir).split.standardiser``. The returned model takes the model itself.
    """
    if not callable(query):
        raise QueryError(f"`query` must be a NumPyro model (a callable), got {type(query).__name__}.")
    return _DataUnitsQuery(query, standardiser)


class _DataUnitsQuery:
    """`in_data_units`' query: equal (and hashed) by the query and the standardiser's values, so repeated
    `dpm_ppl.posterior` calls of one run's query share their compiled sampler."""

    def __init__(self, query: QueryModel, standardiser):
        self.__wrapped__, self.standardiser = query, standardiser
        self.__name__ = getattr(query, "__name__", "query")
        shift, scale = (np.asarray(getattr(standardiser, a, np.nan), np.float64) for a in ("shift", "scale"))
        self._key = (query, shift.shape, shift.tobytes(), scale.shape, scale.tobytes())

    def __call__(self, diffusion, **observations):
        shift, scale = affine_map(self.standardiser, tuple(diffusion.event_shape))
        clamps = _ClampInModelUnits(shift, scale)
        with clamps:
            return self.__wrapped__(DataUnits(diffusion, clamps), **observations)

    def __eq__(self, other) -> bool:
        return isinstance(other, _DataUnitsQuery) and self._key == other._key

    def __hash__(self) -> int:
        return hash(self._key)


# -- checking observations before sampling --------------------------------------------------------


def _describe(observations: dict) -> str:
    parts = []
    for name, v in observations.items():
        shape, dtype = np.shape(v), getattr(v, "dtype", type(v).__name__)
        parts.append(f"`{name}` {tuple(shape)} {dtype}")
    return ", ".join(parts) or "none"


def _row_hints(observations: dict, event_shape: tuple[int, ...]) -> list[str]:
    """Observations shaped like data (B, *event) but with another event shape, in words."""
    hints = []
    for name, v in observations.items():
        shape = tuple(np.shape(v))
        if len(shape) == len(event_shape) + 1 and shape[1:] != tuple(event_shape):
            if len(event_shape) == 1:
                hints.append(
                    f"observation `{name}` has rows of {shape[-1]} values but the run models rows of "
                    f"{event_shape[0]} columns"
                )
            else:
                hints.append(
                    f"observation `{name}` has examples of shape {shape[1:]} but the run models examples of shape "
                    f"{tuple(event_shape)}"
                )
    return hints


def check_observations(query: QueryModel, diffusion: AbstractDiffusion, observations: dict) -> None:
    """Run ``query(diffusion, **observations)`` once, cheaply, and raise a `QueryError` naming the observation
    whose type or shape does not fit, before any sampling.

    The chain is not run: its sites get zeros of their shapes (`handlers.substitute`), the query's own latents
    are drawn from their priors. Checked: every observation is numeric (or boolean); the query accepts these
    keyword arguments and runs on them; each observed site named like an observation gets a value of its
    distribution's shape (or one that shape ends with, shared by the data); and NaN in such a value is
    refused where the site's log-density is not finite there (NaN has no meaning in that query).
    """
    event_shape = tuple(diffusion.event_shape)
    for name, v in observations.items():
        dtype = getattr(v, "dtype", None)
        if dtype is None:
            try:
                dtype = np.asarray(v).dtype
            except Exception:  # noqa: BLE001 - anything that is not an array
                dtype = np.dtype(object)
        if np.dtype(dtype).kind not in "biuf":
            raise QueryError(f"observation `{name}` has dtype {dtype}; observations must be numbers (or booleans).")

    def zeros(msg):
        if msg["type"] == "sample" and msg["name"] in (X0, TRAJECTORY):
            return jnp.zeros(msg["fn"].shape(), jnp.result_type(float))
        return None

    hints = _row_hints(observations, event_shape)
    expect = f"the run models x⁰ of shape {event_shape} per datum ({_per_datum(event_shape)})"
    try:
        tr = handlers.trace(handlers.seed(handlers.substitute(query, substitute_fn=zeros), 0)).get_trace(
            diffusion, **observations
        )
    except TypeError as err:
        if "argument" in str(err):
            raise QueryError(
                f"The query does not take the observations given ({_describe(observations)}): {err}"
            ) from err
        raise QueryError(_failure(err, observations, hints, expect)) from err
    except (ValueError, IndexError, QueryError) as err:
        raise QueryError(_failure(err, observations, hints, expect)) from err
    for name, site in tr.items():
        if site["type"] != "sample" or not site["is_observed"] or name not in observations:
            continue
        if isinstance(site["fn"], Clamp):
            continue
        value_shape, fn_shape = tuple(jnp.shape(site["value"])), tuple(site["fn"].shape())
        n = min(len(value_shape), len(fn_shape))  # one shape must end the other (a value shared by the data)
        if value_shape[len(value_shape) - n :] != fn_shape[len(fn_shape) - n :]:
            lead = hints[0] + ": " if any(h.startswith(f"observation `{name}`") for h in hints) else ""
            raise QueryError(
                f"{lead}observation `{name}` has shape {value_shape}, but the query's site `{name}` expects shape "
                f"{fn_shape} ({expect})."
            )
        value = np.asarray(site["value"])
        if value.dtype.kind == "f" and np.isnan(value).any():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # NumPyro's out-of-support warning: the error below says it
                lp = site["fn"].log_prob(value)
            if not bool(jnp.all(jnp.isfinite(lp))):
                where = tuple(int(i) for i in np.argwhere(np.isnan(value))[0])
                raise QueryError(
                    f"observation `{name}` holds NaN (first at index {where}, {int(np.isnan(value).sum())} in all), "
                    "which this query gives no meaning (its log-density there is not finite). Drop those rows, or "
                    "use a query that reads NaN as missing (inference/impute.py)."
                )


def _failure(err: Exception, observations: dict, hints: list[str], expect: str) -> str:
    head = "; ".join(hints) + ". " if hints else ""
    return (
        f"{head}The query failed on the observations given ({_describe(observations)}); {expect}. "
        f"{type(err).__name__}: {err}"
    )


def _depends_on_input(jaxpr: jex_core.ClosedJaxpr) -> bool:
    """Whether any output of ``jaxpr`` depends on its first input (conservative through sub-jaxprs)."""
    tainted = {jaxpr.jaxpr.invars[0]}
    for eqn in jaxpr.jaxpr.eqns:
        if any(isinstance(v, jex_core.Var) and v in tainted for v in eqn.invars):
            tainted.update(eqn.outvars)
    return any(isinstance(v, jex_core.Var) and v in tainted for v in jaxpr.jaxpr.outvars)


@jax.tree_util.register_pytree_node_class
class LogR:
    """log r(x⁰) of a query model, per datum, with the query's latent sites and exact observations.

    A pytree: the model, the observations and the exact observation's mask and values are its leaves, so a
    sampler compiled for one query runs again on new observations of the same shapes (and a retrained
    model of the same architecture) without compiling; the query function itself is static (pass the same
    function, not a new closure per call). A query that needs its observations concrete (numpy on them) still
    runs, compiled with them as constants on every call; compute masks with ``jnp`` to share the program.

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
        k_query, k_draw = jax.random.split(key)
        # the chain's sites as zeros first (no chain is run) to learn the data's shape, then x⁰ from a real prior
        # draw by the compiled sampler: tracing the chain here would compile its scan anew on every call
        chain_as = {}

        def substitute(msg):
            if msg["type"] == "sample" and msg["name"] in (X0, TRAJECTORY):
                return chain_as.get(msg["name"], jnp.zeros(msg["fn"].shape(), jnp.result_type(float)))
            return None

        def trace():
            model = handlers.seed(handlers.substitute(query, substitute_fn=substitute), k_query)
            return handlers.trace(model).get_trace(diffusion, **self.observations)

        tr = trace()
        if X0 not in tr or TRAJECTORY not in tr:
            raise QueryError(
                "The query never calls `diffusion.prior(...)`: a query must draw x⁰ from the trained model "
                "(`x0 = diffusion.prior((B,))`) and then observe it."
            )
        if tr[X0]["value"].ndim != diffusion.event_ndim + 1:
            raise QueryError(
                f"Call `diffusion.prior((B,))` with one batch dimension (B independent data); x⁰ has shape "
                f"{tuple(tr[X0]['value'].shape)} for event shape {diffusion.event_shape}."
            )
        chain_as[X0] = sample(diffusion, k_draw, tr[X0]["value"].shape[0]).x0
        tr = trace()
        x0 = tr[X0]["value"]
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
        self.observed, self.clamp = tuple(observed), None
        if clamps:
            fn = tr[clamps[0]]["fn"]
            if fn.x0 is not x0:
                raise QueryError(f"observe_exactly({clamps[0]!r}) must be given the x0 returned by `diffusion.prior`.")
            self.clamp = (fn.mask, jnp.broadcast_to(tr[clamps[0]]["value"], x0.shape))
        latents = {k: tr[k]["value"] for k in self.latents}
        self._check(x0, latents, clamps)

    def tree_flatten(self):
        children = (self.query, self.diffusion, self.observations, self.clamp)
        return children, (self.num_data, tuple(self.latents.items()), self.observed)

    @classmethod
    def tree_unflatten(cls, aux, children):
        self = object.__new__(cls)
        self.query, self.diffusion, self.observations, self.clamp = children
        self.num_data, latents, self.observed = aux
        self.latents = dict(latents)
        return self

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
