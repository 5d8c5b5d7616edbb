"""Exact evaluation: every example counts once, whatever the batch size."""

import math

import equinox as eqx
import jax
from jax.sharding import Mesh
from jax.typing import ArrayLike

from ..data import ArrayDataset, eval_pipeline
from ..models import AbstractModel
from ._data_arg import as_dataset
from ._labels import check_labels
from ._metrics import AnyLoss, Metrics, softmax_cross_entropy
from ._parallel import process_shard, shard_batch
from ._precision import Precision, check_precision
from ._step import eval_step

EVAL_BATCH_SIZE = 500
"""Examples per evaluation call by default: large enough that a call's overhead
is small, small enough that a CNN's intermediates stay under the 64 MiB heaps
glibc gives XLA's threads."""


def evaluate(
    model: AbstractModel | eqx.Module,
    state: eqx.nn.State | None,
    dataset: ArrayDataset | tuple[ArrayLike, ArrayLike],
    *,
    batch_size: int = EVAL_BATCH_SIZE,
    mesh: Mesh | None = None,
    loss: AnyLoss = softmax_cross_entropy,
    precision: Precision = "float32",
) -> dict[str, float]:
    """Exact loss and accuracy of ``model`` (inference mode) over all of ``dataset``.

    Every example counts once: the last batch is padded and the padding masked.

    Args:
        model: the model (a zoo model, or any ``eqx.Module`` as
            [`fit`][zoo.train.fit] takes it).
        state: its state (``None`` for a model zoo did not build that takes
            none).
        dataset: the examples, an [`ArrayDataset`][zoo.data.ArrayDataset] or
            a tuple ``(x, y)`` of NumPy or JAX arrays (examples, integer labels).
        batch_size: examples per evaluation step, 500 by default
            (``EVAL_BATCH_SIZE``; rounded up to a multiple of the mesh's devices).
        mesh: evaluate data-parallel on this mesh (see
            [`data_mesh`][zoo.train.data_mesh]); ``model`` and ``state`` must
            be replicated on it. Across processes each one reads its share
            of ``dataset`` and all get the same totals.
        loss: the per-example loss to report (softmax cross-entropy by default).
        precision: the dtype the forward pass computes in (``"bfloat16"``:
            mixed precision, as [`make_train_step`][zoo.train.make_train_step]
            trains).

    Returns:
        ``{"loss": ..., "accuracy": ..., "count": len(dataset)}``.

    Raises:
        TypeError: ``dataset`` is neither a dataset nor ``(x, y)`` arrays.
        ValueError: a label of ``dataset`` is outside ``[0, model.out_size)``
            (refused as [`fit`][zoo.train.fit] refuses it), or an unknown
            ``precision``.
    """
    check_precision(precision)
    dataset = as_dataset(dataset, "dataset")
    check_labels(model, dataset, "dataset", state)
    total = Metrics.zero()
    if mesh is None:
        for batch in eval_pipeline(dataset, batch_size=batch_size):
            total = total + eval_step(model, state, batch, loss, precision)
        return total.summary()
    devices = mesh.devices.size
    global_batch = devices * math.ceil(batch_size / devices)
    local_batch = global_batch // jax.process_count()
    pipeline = eval_pipeline(dataset, batch_size=local_batch, shard=process_shard())
    for batch in pipeline:
        sharded = shard_batch(batch, mesh)
        total = total + eval_step(model, state, sharded, loss, precision)
    return total.summary()
