"""Resuming a run: the checkpoint's state, history and data position, once it
is known to continue this run.

A run's batches are a pure function of the step, given its batch order: the
global batch size, the training set and the seed. ``fit``'s checkpoints store
that order, and a resumed run with another one is refused: it would read the
saved step against other epochs and train on other batches than the run it
continues.
"""

import hashlib
import math
import os
from collections.abc import Callable, Mapping

import jax.numpy as jnp
import numpy as np

from ..data import ArrayDataset
from ._checkpoint import CheckpointError, latest_checkpoint, load_checkpoint
from ._events import BATCH_ORDER_KEY, EpochRecord
from ._feed import BatchIterator
from ._metrics import Metrics
from ._state import TrainState


def batch_order(
    train_data: ArrayDataset, batch_size: int, seed: int
) -> dict[str, object]:
    """What fixes a run's batches step by step, as JSON: the global batch
    size, the training set (its size and its labels' SHA-256) and the seed."""
    labels = np.ascontiguousarray(train_data.labels, dtype=np.int32)
    return {
        "batch_size": int(batch_size),
        "train_examples": len(train_data),
        "train_labels_sha256": hashlib.sha256(labels.tobytes()).hexdigest(),
        "seed": int(seed),
    }


def _describe(order: Mapping[str, object]) -> str:
    return (
        f"batch_size {order.get('batch_size')} over {order.get('train_examples')} "
        f"training examples with seed {order.get('seed')}"
    )


def check_batch_order(
    directory: str | os.PathLike[str],
    saved: Mapping[str, object] | None,
    current: Mapping[str, object],
) -> None:
    """Refuse (``CheckpointError``) a checkpoint written by a run whose batches
    came in another order; ``saved`` is ``None`` for a checkpoint that does not
    say (written by a custom loop), which is taken as it is. Only the entries
    of ``current`` are compared."""
    if saved is None:
        return
    differ = [
        "the training labels" if key == "train_labels_sha256" else key
        for key in current
        if saved.get(key) != current[key]
    ]
    if not differ:
        return
    what = " and ".join(filter(None, [", ".join(differ[:-1]), differ[-1]]))
    raise CheckpointError(
        f"The checkpoint in {directory} continues a run of {_describe(saved)}, "
        f"but this call trains with {_describe(current)}: they differ in {what}, "
        "so this call's steps would not be that run's batches. Resume with the "
        "same batch_size, training data and seed, or start a new run in "
        "another checkpoint_dir."
    )


def resume(
    directory: str | os.PathLike[str],
    ts: TrainState,
    batches: BatchIterator,
    *,
    order: Mapping[str, object],
    steps_per_epoch: int,
    epochs: int,
    log: Callable[[str], object] | None,
) -> tuple[TrainState, list[EpochRecord], Metrics]:
    """The state, history and partial-epoch metrics to continue a run from.

    A checkpoint that ``fit`` did not write (one saved by a custom loop) has
    no history, partial metrics or batch order: training continues from its
    step and data position (or the data position of its step), and the
    current epoch's training metrics cover only the steps after it.

    Raises:
        CheckpointError: the checkpoint does not fit ``ts``, was written by a
            run of another batch order, or is past the ``epochs`` asked for.
    """
    if latest_checkpoint(directory) is None:
        return ts, [], Metrics.zero()
    ckpt = load_checkpoint(directory, like=ts)
    meta = ckpt.metadata
    check_batch_order(directory, meta.get(BATCH_ORDER_KEY), order)
    loaded = ckpt.train_state
    if loaded.opt_state is None:  # saved without optimiser state
        loaded = TrainState(
            loaded.model, loaded.model_state, ts.opt_state, loaded.key, loaded.step
        )
    step = int(loaded.step)
    if step > epochs * steps_per_epoch:
        raise CheckpointError(
            f"The checkpoint in {directory} is at step {step}, past the {epochs} "
            f"epoch(s) of {steps_per_epoch} steps this call asks for; ask for "
            f"epochs={math.ceil(step / steps_per_epoch)} or more to continue it."
        )
    history = [EpochRecord.from_json(r) for r in meta.get("history", [])]
    partial = Metrics.zero()
    if "partial_epoch" in meta:
        loss_sum, correct, examples = meta["partial_epoch"]
        partial = Metrics(
            jnp.float32(loss_sum), jnp.int32(correct), jnp.int32(examples)
        )
    batches.set_state(ckpt.data_state or {"next_index": step})
    if log is not None:
        epoch = step // steps_per_epoch + 1
        log(f"resumed from step {step} (epoch {epoch}) in {directory}")
    return loaded, history, partial
