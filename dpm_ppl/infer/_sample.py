"""Exact ancestral sampling of p(x⁰…ᵀ) (paper Eq 5), the fixed last step included.

The reference code stops at x¹ ("Sampling loop"); here the fixed last step
p(x⁰|x¹) (App. B.2) is always applied. One code path for every kernel family; batches are split
over the local devices.
"""

from __future__ import annotations

from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jaxtyping import Array, PRNGKeyArray

from .._chains import ReverseChain
from .._model import AbstractDiffusion
from ._sharding import data_mesh, replicate_arrays


__all__ = ["Samples", "sample"]


class Samples(NamedTuple):
    """``x0``: shape ``(num_samples, *event)``; ``trajectory``: x¹…x^T, ``(num_samples, T, *event)``, or None."""

    x0: Array
    trajectory: Array | None


@eqx.filter_jit
def _batch(
    diffusion: AbstractDiffusion, key: PRNGKeyArray, n: int, trajectory: bool, sharding: NamedSharding | None
) -> tuple[Array, Array | None]:
    """One batch of ``n`` samples, compiled once per model structure and batch size (not per call).

    With a ``sharding`` over the sample axis, XLA propagates it back through the chain's `lax.scan`:
    each device runs the reverse chain of its share of the samples (the same draws as on one device:
    JAX's random bits do not depend on the partitioning)."""
    betas = diffusion.betas()
    family = diffusion.family
    chain = ReverseChain(diffusion.reverse_kernel(betas), betas, (n,), diffusion.event_shape, family=family)
    k_chain, k_last = jax.random.split(key)
    traj = chain.sample(k_chain) if trajectory else None
    x1 = traj[:, 0] if traj is not None else chain.sample_x1(k_chain)  # without the T × n × d trajectory
    x0 = family.reverse_step(family.last_step(x1, betas[0]), family.noise(k_last, x1.shape, x1.dtype))
    if sharding is not None:
        x0, traj = jax.lax.with_sharding_constraint((x0, traj), sharding)
    return x0, traj


def sample(
    diffusion: AbstractDiffusion,
    key: PRNGKeyArray,
    num_samples: int,
    *,
    trajectory: bool = False,
    batch_size: int = 4_096,
) -> Samples:
    """Draw ``num_samples`` examples from a trained (`bind`) or fixed-kernel model of either family.

    Runs in jitted batches of ``batch_size``, each split over this process's devices when their
    count divides it; with ``trajectory=True`` the whole reverse trajectories are returned too
    (memory T × num_samples × d).
    """
    if num_samples < 1:
        raise ValueError(f"`num_samples` must be ≥ 1, got {num_samples!r}.")
    if diffusion.trainable and diffusion.kernel is None:
        raise ValueError("Sample from a trained model: call `diffusion.bind(params)` first.")

    mesh = data_mesh(jax.local_devices())
    by_sample = mesh.split
    replicated = replicate_arrays(diffusion, mesh.replicated) if mesh.size > 1 else diffusion
    xs, trajs = [], []
    for i, start in enumerate(range(0, num_samples, batch_size)):
        n = min(batch_size, num_samples - start)
        split = mesh.size > 1 and n % mesh.size == 0
        model, sharding = (replicated, by_sample) if split else (diffusion, None)
        x0, traj = _batch(model, jax.random.fold_in(key, i), n, trajectory, sharding)
        xs.append(x0)
        trajs.append(traj)
    return Samples(jnp.concatenate(xs), jnp.concatenate(trajs) if trajectory else None)
