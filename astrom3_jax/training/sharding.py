"""The ('data',) mesh and the helpers that move batches onto it.

The trainer is a per-device program (`jax.shard_map`, the machinery under
`jax.pmap` since JAX 0.8): parameters are replicated, batches are split
along their first axis over the mesh axis `data`. The same code runs on one
CPU, eight TPU cores or many hosts; on many hosts each process feeds only
its own slice of the global batch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

AXIS = "data"


def maybe_initialize_distributed(enabled: bool, **kwargs) -> None:
    """Join a multi-host job (`jax.distributed.initialize`) when asked.

    On Cloud TPU and SLURM no arguments are needed; elsewhere pass
    coordinator_address, num_processes and process_id.
    """
    if enabled and not jax.distributed.is_initialized():
        jax.distributed.initialize(**kwargs)


def make_mesh(num_devices: int | None = None) -> jax.sharding.Mesh:
    """A 1-D mesh over all (or the first `num_devices`) devices."""
    n = num_devices or jax.device_count()
    return jax.make_mesh((n,), (AXIS,), axis_types=(AxisType.Explicit,))


def data_sharding(mesh) -> NamedSharding:
    return NamedSharding(mesh, P(AXIS))


def replicated(mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def check_batch_size(global_batch_size: int, mesh) -> int:
    """Per-process batch size; a clear error when it does not divide."""
    n_dev = mesh.size
    if global_batch_size % n_dev:
        hint = max(n_dev, global_batch_size // n_dev * n_dev)
        raise ValueError(
            f"batch_size={global_batch_size} does not divide across the "
            f"{n_dev} devices of the mesh; use a multiple of {n_dev} "
            f"(e.g. --config.batch_size={hint})."
        )
    return global_batch_size // jax.process_count()


def shard_batch(local_batch: Mapping[str, np.ndarray], mesh) -> dict[str, jax.Array]:
    """Global jax.Arrays from this process's rows of every field."""
    sharding = data_sharding(mesh)
    return {
        k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
        for k, v in local_batch.items()
    }


def replicate(tree, mesh):
    """Place a pytree (params, optimizer state) fully replicated on the mesh."""
    return jax.device_put(tree, replicated(mesh))


def data_parallel(fn: Callable, mesh, in_specs, out_specs) -> Callable:
    """`jax.shard_map` over the data axis: `fn` is a per-device program."""
    return jax.shard_map(fn, mesh=mesh, in_specs=in_specs, out_specs=out_specs)


def device_key(key: jax.Array) -> jax.Array:
    """A per-device key (inside shard_map), so devices draw different masks."""
    return jax.random.fold_in(key, jax.lax.axis_index(AXIS))


def to_host(x) -> np.ndarray:
    """A global (possibly multi-host) array as one numpy array everywhere."""
    if jax.process_count() > 1 and not getattr(x, "is_fully_addressable", True):
        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)
