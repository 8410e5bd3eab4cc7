"""The one place that maps models and batches onto device meshes.

A mesh comes from config (`mesh.shape`, e.g. {data: -1, fsdp: 1, tensor: 2}; one -1 takes the
remaining devices). Parameters carry *logical* axis names in their NNX metadata ("vocab",
"embed", "heads", "mlp", "labels"); `mesh.rules` maps each logical name to mesh axes, so no
model code names a mesh axis. A dimension whose size the mesh axes do not divide stays
replicated (logged once), which keeps odd vocabularies and 28-way heads valid on any mesh.
Multi-host start-up (`init_distributed`) also lives here.
"""
from __future__ import annotations

import logging
import math
import os
from typing import Any, Mapping, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from .errors import ConfigError, EmoPillarsError

log = logging.getLogger(__name__)

Rules = Mapping[str, "str | Sequence[str] | None"]
BATCH = "batch"


# ----------------------------------------------------------------------------- multi-host

def init_distributed(mode: str = "auto", coordinator_address: str | None = None,
                     num_processes: int | None = None, process_id: int | None = None) -> None:
    """Start jax.distributed when this is a multi-process run.

    explicit: the given coordinator / count / id (or JAX_COORDINATOR_ADDRESS,
    JAX_NUM_PROCESSES, JAX_PROCESS_ID). auto: the same env vars, else a SLURM job with more
    than one task; otherwise single-process. cluster: let JAX detect the cluster (Cloud TPU
    pod metadata, SLURM, ...).
    """
    if mode == "off" or _distributed_started():
        return
    env = os.environ
    coordinator_address = coordinator_address or env.get("JAX_COORDINATOR_ADDRESS")
    if num_processes is None and env.get("JAX_NUM_PROCESSES"):
        num_processes = int(env["JAX_NUM_PROCESSES"])
    if process_id is None and env.get("JAX_PROCESS_ID"):
        process_id = int(env["JAX_PROCESS_ID"])
    if coordinator_address or mode == "explicit":
        if not (coordinator_address and num_processes and process_id is not None):
            raise ConfigError("distributed.mode=explicit needs coordinator_address, "
                              "num_processes and process_id (or JAX_* env vars)")
        jax.distributed.initialize(coordinator_address, num_processes, process_id)
    elif mode == "cluster" or int(env.get("SLURM_NTASKS", "1")) > 1:
        jax.distributed.initialize()   # JAX reads SLURM / TPU metadata itself
    else:
        return
    log.info("jax.distributed: process %d of %d, %d local / %d global devices",
             jax.process_index(), jax.process_count(), jax.local_device_count(),
             jax.device_count())


def _distributed_started() -> bool:
    try:
        from jax._src import distributed
        return distributed.global_state.client is not None
    except Exception:   # private API moved: assume not started
        return False


# ----------------------------------------------------------------------------- meshes

def mesh_shape(shape: Mapping[str, int], num_devices: int) -> dict[str, int]:
    """Fill the one -1 axis so the axes multiply to num_devices."""
    shape = dict(shape)
    free = [k for k, v in shape.items() if v == -1]
    if len(free) > 1 or any(v == 0 or v < -1 for v in shape.values()):
        raise ConfigError(f"mesh.shape {shape}: sizes must be positive, with at most one -1")
    fixed = math.prod(v for v in shape.values() if v != -1)
    if free:
        if num_devices % fixed:
            raise ConfigError(f"mesh.shape {shape}: {num_devices} devices are not divisible "
                              f"by the fixed axes ({fixed})")
        shape[free[0]] = num_devices // fixed
    if math.prod(shape.values()) != num_devices:
        raise ConfigError(f"mesh.shape {shape} needs {math.prod(shape.values())} devices, "
                          f"there are {num_devices}")
    return shape


def make_mesh(shape: Mapping[str, int], devices: Sequence[Any] | None = None) -> Mesh:
    devices = list(jax.devices() if devices is None else devices)
    shape = mesh_shape(shape, len(devices))
    names, sizes = tuple(shape), tuple(shape.values())
    if len(devices) == jax.device_count():
        try:   # topology-aware order (TPU rings, GPU hosts); may refuse odd shapes
            from jax.experimental import mesh_utils
            grid = mesh_utils.create_device_mesh(sizes, devices=devices,
                                                 allow_split_physical_axes=True)
            return Mesh(grid, names)
        except Exception as exc:   # fall back to process-major order
            log.debug("create_device_mesh(%s) failed (%s); using plain order", sizes, exc)
    devices.sort(key=lambda d: (d.process_index, d.id))
    return Mesh(np.asarray(devices, dtype=object).reshape(sizes), names)


# ----------------------------------------------------------------------------- logical rules

def logical_to_spec(axes: Sequence[str | None] | None, shape: Sequence[int], rules: Rules,
                    mesh: Mesh) -> P:
    """Logical axis names of one array -> a PartitionSpec valid for its shape on `mesh`."""
    if not axes:
        return P()
    used: set[str] = set()
    spec = []
    for name, size in zip(axes, shape):
        target = rules.get(name) if name is not None else None
        targets = [target] if isinstance(target, str) else list(target or [])
        # an axis can shard one dimension only; size-1 mesh axes add nothing
        targets = [t for t in targets if t in mesh.shape and t not in used and mesh.shape[t] > 1]
        if targets and size % math.prod(mesh.shape[t] for t in targets):
            log.info("dimension %s of size %d is not divisible by mesh axes %s: replicated",
                     name, size, targets)
            targets = []
        used.update(targets)
        spec.append(None if not targets else targets[0] if len(targets) == 1 else tuple(targets))
    while spec and spec[-1] is None:
        spec.pop()
    return P(*spec)


def variable_axes(variable) -> tuple | None:
    """Logical axis names stored in an NNX variable's metadata (several flax spellings)."""
    meta = variable.get_metadata() if hasattr(variable, "get_metadata") else {}
    for key in ("out_sharding", "sharding_names", "sharding"):
        axes = meta.get(key)
        if axes is not None:
            return tuple(axes)
    return None


def state_shardings(state, rules: Rules, mesh: Mesh):
    """NNX State of Variables -> nested dict of NamedSharding (same layout as to_pure_dict)."""
    from flax import nnx

    def one(variable):
        spec = logical_to_spec(variable_axes(variable), np.shape(variable.get_value()
                               if hasattr(variable, "get_value") else variable.value),
                               rules, mesh)
        return NamedSharding(mesh, spec)

    return nnx.to_pure_dict(jax.tree.map(one, state,
                                         is_leaf=lambda x: isinstance(x, nnx.Variable)))


def like_params(tree, params, param_shardings, default: NamedSharding):
    """Shardings for a tree that embeds copies of the parameter tree (optimizer moments):
    a leaf whose key path ends with a parameter's path, with its shape, is laid out like that
    parameter; anything else (step counts, scalars) gets `default`. Works for any optax
    combination (chain, masks, multi_transform, MultiSteps)."""
    flat_p = jax.tree_util.tree_flatten_with_path(params)[0]
    flat_s = jax.tree.leaves(param_shardings)
    by_path = {tuple(path): (np.shape(leaf), sh) for (path, leaf), sh in zip(flat_p, flat_s)}

    def one(path, leaf):
        path = tuple(path)
        for i in range(len(path)):
            hit = by_path.get(path[i:])
            if hit is not None and hit[0] == np.shape(leaf):
                return hit[1]
        return default
    return jax.tree_util.tree_map_with_path(one, tree)


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh, rules: Rules) -> NamedSharding:
    """Leading (batch) dimension split over the rule's mesh axes, the rest replicated."""
    target = rules.get(BATCH)
    targets = [target] if isinstance(target, str) else list(target or [])
    targets = [t for t in targets if t in mesh.shape]
    return NamedSharding(mesh, P(tuple(targets) if len(targets) > 1 else
                                 (targets[0] if targets else None)))


def batch_divisor(mesh: Mesh, rules: Rules) -> int:
    spec = batch_sharding(mesh, rules).spec
    axes = spec[0] if spec else None
    axes = [axes] if isinstance(axes, str) else list(axes or [])
    return math.prod(mesh.shape[a] for a in axes)


def put_global(tree, shardings):
    """Host values identical on every process -> global arrays with the given shardings."""
    def one(x, sharding):
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])
    return jax.tree.map(one, tree, shardings)


def global_batch(local: Mapping[str, np.ndarray], sharding: NamedSharding) -> dict:
    """Process-local rows -> one global batch array per key (multi-host safe)."""
    return {key: jax.make_array_from_process_local_data(sharding, value)
            for key, value in local.items()}


def check_batch(global_batch_size: int, mesh: Mesh, rules: Rules) -> None:
    div = batch_divisor(mesh, rules)
    if global_batch_size % div or global_batch_size % jax.process_count():
        raise EmoPillarsError(f"batch_size {global_batch_size} must be divisible by the "
                              f"batch-sharded devices ({div}) and processes "
                              f"({jax.process_count()})")
