"""The device mesh and how arrays are laid out on it.

The mesh has axes (`data`, `fsdp`, `tensor`); the batch is split over `data`
and `fsdp`, parameters and optimizer state are replicated for now. The same
code runs on one CPU, on 8 fake CPU devices and, under `jax.distributed`, on
many hosts: each host hands over only its rows of the global batch.
"""

from __future__ import annotations

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from bert_jax.errors import ConfigError

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")


def make_mesh(config: ml_collections.ConfigDict, devices=None) -> Mesh:
    """A mesh of shape (data, fsdp, tensor) from `config.mesh`; -1 takes the remaining devices."""
    devices = list(devices if devices is not None else jax.devices())
    sizes = [config.mesh.data, config.mesh.fsdp, config.mesh.tensor]
    known = int(np.prod([s for s in sizes if s != -1]))
    if sizes.count(-1) > 1 or len(devices) % known:
        raise ConfigError(f"mesh {dict(zip(MESH_AXES, sizes))} does not fit {len(devices)} devices")
    sizes = [len(devices) // known if s == -1 else s for s in sizes]
    if int(np.prod(sizes)) != len(devices):
        raise ConfigError(f"mesh {dict(zip(MESH_AXES, sizes))} uses {int(np.prod(sizes))} of {len(devices)} devices")
    return Mesh(np.asarray(devices).reshape(sizes), MESH_AXES)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def global_batch(local: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """Assembles the global batch from this host's rows (each host passes only its own)."""
    sharding = batch_sharding(mesh)
    return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in local.items()}
