"""The device mesh, the logical-axis rule table, and how arrays are laid out on them.

The mesh has axes (`data`, `fsdp`, `tensor`). Parameters and key activations
carry logical axis names (`batch`, `length`, `vocab`, `heads`, `kv`, `mlp`,
`embed`, `layers`; models/common.py); `config.sharding` maps each name to mesh
axes. One rule table serves every layout, because the mesh shape picks it:
with the default rules (batch over data+fsdp, embed over fsdp, heads/mlp/vocab
over tensor)

- `mesh.data=-1` (the default) is pure data parallelism: fsdp and tensor have
  size 1, so parameters and optimizer state are replicated;
- `mesh.fsdp=N` shards parameters and optimizer state over their `embed` axis
  (ZeRO-3 / FSDP: XLA gathers each weight where it is used);
- `mesh.tensor=N` splits attention heads, the FFN width and the vocabulary
  (Megatron-style tensor parallelism), and the mixes of the three.

A dimension a rule would shard but whose size the mesh axes do not divide
(BERT's 30522-word vocabulary over 4 devices) stays replicated, and the log
says which parameters. The same code runs on one CPU, on 8 fake CPU devices
and, under `jax.distributed`, on many hosts: each host hands over only its
rows of the global batch.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from bert_jax.errors import ConfigError
from bert_jax.models.common import activation_sharding

log = logging.getLogger(__name__)

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")
# Rule precedence: `batch` first, so that an activation [batch, length, embed] gives fsdp to its batch and
# leaves embed unsharded, while a parameter [embed, mlp] (no batch axis) gives fsdp to embed.
LOGICAL_AXES = ("batch", "length", "vocab", "heads", "kv", "mlp", "embed", "layers")
Rules = tuple[tuple[str, Any], ...]


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


def logical_rules(config: ml_collections.ConfigDict) -> Rules:
    """`config.sharding` as flax's rule list: (logical name, mesh axis | tuple of axes | None), by precedence.

    Each field is a comma-separated list of mesh axes ('data,fsdp'), or '' for replicated.
    """
    table = config.sharding
    unknown = sorted(set(table.keys()) - set(LOGICAL_AXES))
    if unknown:
        raise ConfigError(f"config.sharding has unknown logical axes {unknown}; the axes are {list(LOGICAL_AXES)}")
    rules = []
    for name in LOGICAL_AXES:
        axes = tuple(a.strip() for a in str(table.get(name, "")).split(",") if a.strip())
        bad = [a for a in axes if a not in MESH_AXES]
        if bad or len(set(axes)) != len(axes):
            raise ConfigError(
                f"config.sharding.{name}={table.get(name)!r}: use distinct mesh axes among {list(MESH_AXES)}, "
                "comma-separated, or '' for replicated"
            )
        rules.append((name, axes[0] if len(axes) == 1 else (axes or None)))
    return tuple(rules)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def _axis_size(mesh: Mesh, axes) -> int:
    if axes is None:
        return 1
    return int(np.prod([mesh.shape[a] for a in ((axes,) if isinstance(axes, str) else axes)]))


def param_shardings(boxed_params: Any, mesh: Mesh, rules: Rules) -> Any:
    """NamedShardings for a tree of (abstract) parameters boxed with logical names (`model.init` under eval_shape).

    Unnamed parameters are replicated; a dimension the mesh axes do not divide stays replicated (logged).
    """
    logical = nn.get_partition_spec(boxed_params)
    shapes = nn.meta.unbox(boxed_params)
    kept_whole = []

    def one(path, leaf, spec):
        mesh_axes = list(nn.logical_to_mesh_axes(tuple(spec), rules)) if spec else []
        for i, axes in enumerate(mesh_axes):
            if leaf.shape[i] % _axis_size(mesh, axes):
                kept_whole.append(f"{jax.tree_util.keystr(path)} dim {i} ({leaf.shape[i]} over {axes})")
                mesh_axes[i] = None
        return NamedSharding(mesh, PartitionSpec(*mesh_axes))

    out = jax.tree_util.tree_map_with_path(one, shapes, logical)
    if kept_whole:
        log.info("not divisible by their mesh axes, kept replicated: %s", "; ".join(kept_whole))
    return out


def _path_names(path) -> tuple[str, ...]:
    return tuple(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def like_params(tree: Any, params: Any, params_sharding: Any, mesh: Mesh) -> Any:
    """Shardings for a tree holding copies of the parameters (optimizer moments): each leaf whose path ends
    with a parameter's path and has its shape gets that parameter's sharding; the rest is replicated."""
    by_path = {}
    for (path, leaf), sharding in zip(
        jax.tree_util.tree_leaves_with_path(params), jax.tree_util.tree_leaves(params_sharding)
    ):
        by_path[_path_names(path)] = (tuple(leaf.shape), sharding)

    def one(path, leaf):
        names = _path_names(path)
        for start in range(len(names)):
            hit = by_path.get(names[start:])
            if hit and hit[0] == tuple(np.shape(leaf)):
                return hit[1]
        return replicated(mesh)

    return jax.tree_util.tree_map_with_path(one, tree)


def state_shardings(abstract_state: Any, boxed_params: Any, mesh: Mesh, rules: Rules) -> Any:
    """Shardings of a whole TrainState: parameters by their rules, optimizer moments like their parameters,
    step and RNG replicated."""
    params_sharding = param_shardings(boxed_params, mesh, rules)
    return abstract_state.replace(
        step=replicated(mesh),
        params=params_sharding,
        opt_state=like_params(abstract_state.opt_state, abstract_state.params, params_sharding, mesh),
        rng=replicated(mesh),
    )


@contextlib.contextmanager
def activation_rules(mesh: Mesh, rules: Rules):
    """While tracing: the mesh and rules that `nn.with_logical_constraint` in the model resolves against."""
    with activation_sharding(mesh, rules):
        yield


def traced_with_rules(fn: Callable, mesh: Mesh, rules: Rules) -> Callable:
    """`fn` traced under `activation_rules`, so its activations get the layout the rules give them."""

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        with activation_rules(mesh, rules):
            return fn(*args, **kwargs)

    return wrapped


def with_shardings(tree: Any, shardings: Any) -> Any:
    """ShapeDtypeStructs of `tree`'s leaves carrying `shardings`, a matching tree or one sharding for every leaf
    (for AOT compiles and orbax restores)."""
    if isinstance(shardings, jax.sharding.Sharding):
        shardings = jax.tree.map(lambda _: shardings, tree)
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=s), tree, shardings)


def per_device_bytes(tree: Any) -> int:
    """Bytes one device holds of a tree of arrays or sharded ShapeDtypeStructs."""
    total = 0
    for leaf in jax.tree.leaves(tree):
        shape = leaf.sharding.shard_shape(leaf.shape) if getattr(leaf, "sharding", None) else np.shape(leaf)
        total += int(np.prod(shape)) * np.dtype(leaf.dtype).itemsize
    return total


def global_batch(local: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """Assembles the global batch from this host's rows (each host passes only its own)."""
    sharding = batch_sharding(mesh)
    return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in local.items()}
