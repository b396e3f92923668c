"""Data parallelism, written once: a one-axis device mesh ``"data"``, the two shardings every caller needs (split
along the leading axis, replicated), and a model's arrays put on every device."""

from __future__ import annotations

from typing import Any, NamedTuple

import equinox as eqx
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec


__all__ = ["DataMesh", "data_mesh", "replicate_arrays"]


class DataMesh(NamedTuple):
    mesh: Mesh
    split: NamedSharding
    """Along the leading axis (data, samples or a minibatch), one block per device."""
    replicated: NamedSharding
    """The whole value on every device."""

    @property
    def size(self) -> int:
        return self.mesh.size


# jax.Device is `xla_client.Device`, which type checkers cannot resolve (an Unknown variable to them)
def data_mesh(devices: list[jax.Device] | None = None) -> DataMesh:  # pyright: ignore[reportInvalidTypeForm]
    """The mesh over ``devices`` (default: every device of every process, ``jax.devices()``; pass
    ``jax.local_devices()`` for work that stays on this process)."""
    mesh = Mesh(np.asarray(jax.devices() if devices is None else devices), ("data",))
    return DataMesh(mesh, NamedSharding(mesh, PartitionSpec("data")), NamedSharding(mesh, PartitionSpec()))


def replicate_arrays(tree: Any, sharding: NamedSharding) -> Any:
    """``tree`` (a model, a kernel) with its array leaves placed by ``sharding`` and everything else kept;
    `eqx.filter_shard` refuses arrays already committed to one device."""
    dynamic, static = eqx.partition(tree, eqx.is_array)
    return eqx.combine(jax.device_put(dynamic, sharding), static)
