"""The event axes of a datum (the last ``event_ndim`` axes) and sums over them, written once."""

from __future__ import annotations

import jax.numpy as jnp
from jaxtyping import Array, ArrayLike


__all__ = ["event_axes", "sum_event"]


def event_axes(event_ndim: int) -> tuple[int, ...]:
    """The last ``event_ndim`` axes, as negative indices (``()`` for scalar events)."""
    return tuple(range(-event_ndim, 0)) if event_ndim else ()


def sum_event(x: ArrayLike, event_ndim: int) -> Array:
    """``x`` summed over its last ``event_ndim`` axes: elementwise terms to one number per example."""
    return jnp.sum(jnp.asarray(x), axis=event_axes(event_ndim))
