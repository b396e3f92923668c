"""Memory bounded in T: per-step work mapped over time in chunks, rematerialised under gradients.

The bound's ``"all"`` and ``"trajectory"`` estimators, ``Trace_ELBO`` and the likelihood evaluate
the reverse kernel at every t = 2…T. Vectorised over t, their activations (and, under ``jax.grad``,
everything kept for the backward pass) grow like T × batch × network; at T = 1000 that is 10× the
T = 100 footprint. `map_over_time` evaluates ``chunk`` steps at a time with `jax.lax.map` and wraps
each step in `jax.checkpoint`, so the backward pass keeps only each chunk's inputs and recomputes its
activations: memory O(chunk) instead of O(T), for about one extra forward pass of compute.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax


__all__ = ["TIME_CHUNK", "map_over_time"]

TIME_CHUNK = 25


def map_over_time(fn: Callable[[Any], Any], xs: Any, chunk: int = TIME_CHUNK) -> Any:
    """``jax.vmap(fn)(xs)`` over the leading (time) axis of ``xs``, ``chunk`` steps at a time, rematerialised."""
    return jax.lax.map(jax.checkpoint(fn), xs, batch_size=chunk)
