"""One data-parallel mesh over every device of every host.

The batch is sharded along the ``data`` axis and the parameters are replicated. Under ``jax.jit``
a BatchNorm's statistics are those of its group of ``config.bn_group_clips`` clips whatever the
devices (XLA inserts a cross-device mean only where a group spans devices), or of the global
batch with ``bn_group_clips=0``; the released PyTorch code used per-GPU statistics of 8 clips.
"""

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from tea_jax.errors import ConfigError

DATA_AXIS = "data"


def create_mesh(devices: Sequence[jax.Device] | None = None) -> jax.sharding.Mesh:
    """A 1-D mesh named ``data`` over ``devices``: by default all devices (all hosts)."""
    devices = jax.devices() if devices is None else devices
    return jax.make_mesh(
        (len(devices),), (DATA_AXIS,), axis_types=(jax.sharding.AxisType.Auto,), devices=devices
    )


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def data_sharded(mesh: jax.sharding.Mesh) -> NamedSharding:
    """Shards the leading (batch) dimension over the ``data`` axis."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def per_host_batch_size(
    global_batch_size: int,
    *,
    what: str = "batch_size",
    devices: int | None = None,
    hosts: int | None = None,
) -> int:
    """Splits a global batch size over the hosts, checking that it divides the devices.

    ``devices`` and ``hosts`` count those of the run: this process's by default.

    Raises:
      ConfigError: if ``global_batch_size`` is not a multiple of the number of devices.
    """
    devices = devices or jax.device_count()
    hosts = hosts or jax.process_count()
    if global_batch_size % devices:
        fitting = max(global_batch_size // devices, 1) * devices
        raise ConfigError(
            f"config.{what}={global_batch_size} must be a multiple of the number of devices "
            f"({devices}: {devices // hosts} on each of {hosts} process(es)); the batch is split "
            "evenly over them.",
            hint=f"pass --config.{what}={fitting}",
        )
    return global_batch_size // hosts


def shard_batch(batch: dict[str, np.ndarray], mesh: jax.sharding.Mesh) -> dict[str, jax.Array]:
    """Assembles the per-host numpy batches of all hosts into global arrays.

    Args:
      batch: this host's part of the batch, each array with a leading dimension of
        ``global_batch / process_count``.
      mesh: the data mesh.

    Returns:
      Global ``jax.Array``s of leading dimension ``global_batch`` sharded along ``data``.
    """
    sharding = data_sharded(mesh)
    return {
        k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in batch.items()
    }


def abstract(tree: Any, mesh: jax.sharding.Mesh) -> Any:
    """``tree``'s shapes and dtypes as ``jax.ShapeDtypeStruct``s replicated on the mesh: the
    target that a checkpoint restores onto, whatever the devices that wrote it."""
    target = replicated(mesh)
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=target), tree)


def replicate(tree: Any, mesh: jax.sharding.Mesh) -> Any:
    """Places a tree of arrays, replicated, on every device of the mesh."""
    return jax.device_put(tree, replicated(mesh))
