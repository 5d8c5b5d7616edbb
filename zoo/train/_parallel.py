"""Data parallelism on JAX's own sharding: one mesh axis over the batch.

Parameters, model state and optimiser state are replicated on every device of a
1-D mesh; every batch is split along its batch axis with ``NamedSharding``. The
jitted training step is the one used on a single device: XLA's SPMD partitioner
inserts the gradient all-reduce, and BatchNorm's batch statistics (a collective
over the ``vmap`` axis) become a reduction over the sharded batch axis, so they
span the global batch.

Across processes (``jax.distributed.initialize``) the mesh holds every process's
devices, each process feeds only its own share of every batch
(:func:`process_shard`), and :func:`shard_batch` assembles the global batch
from the processes' local parts without moving any data between hosts.
"""

from collections.abc import Sequence
from typing import Any, TypeVar

import grain
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"
"""Name of the mesh axis that batches are split along."""

_T = TypeVar("_T")


def data_mesh(devices: Sequence[Any] | None = None) -> Mesh:
    """A 1-D device mesh for data-parallel training, axis ``"data"``.

    Example:
        >>> import zoo
        >>> mesh = zoo.train.data_mesh()
        >>> mesh.axis_names
        ('data',)

    Args:
        devices: the ``jax.Device``s to train on; by default every device of every
            process (``jax.devices()``).

    Raises:
        ValueError: an empty list of devices.
    """
    chosen = jax.devices() if devices is None else list(devices)
    if not chosen:
        raise ValueError("data_mesh needs at least one device.")
    return Mesh(np.asarray(chosen), (DATA_AXIS,))


def check_batch_size(mesh: Mesh, batch_size: int, what: str = "batch_size") -> None:
    """Refuse a global batch that cannot be split evenly over ``mesh``.

    Raises:
        ValueError: ``batch_size`` is not a multiple of the number of devices
            (which is itself a multiple of the number of processes).
    """
    devices = mesh.devices.size
    if batch_size % devices:
        raise ValueError(
            f"{what} {batch_size} cannot be split evenly over the mesh's {devices} "
            f"devices: use a multiple of {devices} (e.g. "
            f"{devices * max(1, round(batch_size / devices))})."
        )


def process_shard() -> grain.sharding.ShardOptions:
    """This process's share of the data: shard ``process_index`` of all processes."""
    return grain.sharding.ShardOptions(
        shard_index=jax.process_index(), shard_count=jax.process_count()
    )


def _batch_spec(ndim: int, batch_axis: int) -> PartitionSpec:
    axes: list[str | None] = [None] * ndim
    axes[batch_axis] = DATA_AXIS
    return PartitionSpec(*axes)


def shard_batch(batch: _T, mesh: Mesh, *, batch_axis: int = 0) -> _T:
    """Place this process's part of a batch on ``mesh``, split along ``batch_axis``.

    With one process ``batch`` is the whole batch; with several, each passes its
    own rows (from a pipeline built with :func:`process_shard`) and the result
    is the global batch, the processes' parts in process order.

    Args:
        batch: a pytree of arrays sharing the batch axis, e.g. a
            [`Batch`][zoo.data.Batch] ``(B, ...)`` or a stacked
            [`Chunk`][zoo.data.Chunk] ``(K, B, ...)`` with ``batch_axis=1``.
        mesh: from :func:`data_mesh`.
        batch_axis: the axis to split.

    Returns:
        The same pytree of global ``jax.Array``s, sharded over the mesh.
    """
    return jax.tree.map(
        lambda value: jax.make_array_from_process_local_data(
            NamedSharding(mesh, _batch_spec(np.ndim(value), batch_axis)),
            np.asarray(value),
        ),
        batch,
    )


def replicate(tree: _T, mesh: Mesh) -> _T:
    """Copy every array leaf of ``tree`` to every device of ``mesh``.

    Every process must pass the same values (e.g. a model built from the same
    key). Typed PRNG keys are replicated too; other leaves pass through.
    """
    sharding = NamedSharding(mesh, PartitionSpec())

    def put(leaf: Any) -> Any:
        if not isinstance(leaf, jax.Array | np.ndarray):
            return leaf
        if isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(
            leaf.dtype, jax.dtypes.prng_key
        ):
            impl = jax.random.key_impl(leaf)
            return jax.random.wrap_key_data(
                put(jax.random.key_data(local_copy(leaf))), impl=impl
            )
        if jax.process_count() == 1:
            return jax.device_put(leaf, sharding)
        host = np.asarray(local_copy(leaf))
        return jax.make_array_from_callback(host.shape, sharding, lambda i: host[i])

    return jax.tree.map(put, tree)


def local_copy(tree: _T) -> _T:
    """Replicated global arrays as ordinary arrays on this process's first device.

    Use it to save, print or evaluate on one process what was trained on a
    mesh spanning several processes; fully addressable arrays pass unchanged.

    Raises:
        ValueError: a leaf that is split across processes rather than replicated.
    """

    def get(leaf: Any) -> Any:
        if not isinstance(leaf, jax.Array) or leaf.is_fully_addressable:
            return leaf
        if not leaf.is_fully_replicated:
            raise ValueError(
                f"An array of shape {leaf.shape} is split across processes, so no "
                "process holds all of it; only replicated arrays have a local copy."
            )
        return leaf.addressable_data(0)

    return jax.tree.map(get, tree)
