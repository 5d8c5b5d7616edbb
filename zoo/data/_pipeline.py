"""Grain pipelines whose elements are whole batches.

Grain used record by record (``source -> shuffle -> map -> batch``) spends tens
of microseconds of Python per example: 11,000 to 25,000 examples/s on 2 CPU
cores, slower than the model it feeds. Here each Grain element IS a batch: the
dataset is ``grain.MapDataset.range(steps_per_epoch).repeat(num_epochs)``, and
each global step index is mapped to a batch gathered from the in-memory arrays
with one NumPy fancy index into that epoch's permutation. Grain still owns iteration,
prefetching, checkpointing and sharding; NumPy moves the bytes.

Batches are typed [`Batch`][zoo.data.Batch] tuples of NumPy arrays::

    Batch(inputs=(B, ...) uint8 or float32, labels=(B,) int32, mask=(B,) bool,
          targets=(B, T) float32 or None)

``targets`` are the dataset's float rows where it has them. ``mask`` is
``True`` for real examples and ``False`` for padding rows (which hold zeros),
so every batch has the same shape and a jitted step compiles once.

Epochs and steps: every epoch has exactly :func:`steps_per_epoch` batches
(dropping or padding the remainder inside the epoch, never spanning two), so
global step ``k`` is batch ``k % steps_per_epoch`` of epoch
``k // steps_per_epoch`` (see :func:`epoch_of_step`).

Checkpoints: ``it = iter(pipeline)``; ``it.get_state()`` is a small JSON-ready
dict (``{"next_index": k}``, ``k`` being the number of batches consumed);
``iter(pipeline).set_state(state)`` on a fresh iterator, built with the same
arguments, continues with exactly the batches the first would have produced.
"""

import threading
from typing import Protocol, TypeAlias, runtime_checkable

import grain
import numpy as np

from ._batch import Batch, Chunk
from ._chunked import ChunkedBatches
from ._datasets import ArrayDataset
from ._host_arrays import take_rows

Record: TypeAlias = dict[str, np.ndarray]
"""A batch inside a pipeline, as Grain transforms (augmentations) see it:
``{"inputs": (B, ...), "labels": (B,) int32, "mask": (B,) bool}``, and
``"targets": (B, T)`` where the dataset has them. Pipelines hand it out as a
typed [`Batch`][zoo.data.Batch]."""

_NO_SHARD = grain.sharding.ShardOptions(shard_index=0, shard_count=1)


@runtime_checkable
class _ShardAware(Protocol):
    """An augmentation that can draw, on one shard, what an unsharded run draws."""

    def for_shard(
        self, shard: grain.sharding.ShardOptions
    ) -> grain.transforms.RandomMap: ...


def _shard_bounds(n: int, shard: grain.sharding.ShardOptions) -> tuple[int, int]:
    """``[start, end)`` of a shard's share of ``n`` items (Grain's even split).

    The first ``n % shard_count`` shards get one extra item, unless
    ``shard.drop_remainder`` is set, in which case those items go unused.
    """
    per_shard, extra = divmod(n, shard.shard_count)
    start = per_shard * shard.shard_index
    end = start + per_shard
    if not shard.drop_remainder:
        start += min(shard.shard_index, extra)
        end += min(shard.shard_index + 1, extra)
    return start, end


def _shard_sizes(n: int, shard: grain.sharding.ShardOptions) -> list[int]:
    options = [
        grain.sharding.ShardOptions(i, shard.shard_count, shard.drop_remainder)
        for i in range(shard.shard_count)
    ]
    return [end - start for start, end in (_shard_bounds(n, o) for o in options)]


def steps_per_epoch(
    n: int,
    batch_size: int,
    drop_remainder: bool = True,
    *,
    shard: grain.sharding.ShardOptions | None = None,
) -> int:
    """The number of batches in one epoch.

    With sharding every shard takes the same number of steps (so processes stay
    in lockstep): enough for the largest shard when padding, what the smallest
    shard fills completely when dropping.

    Example:
        >>> steps_per_epoch(60_000, 128, drop_remainder=True)
        468
        >>> steps_per_epoch(10_000, 128, drop_remainder=False)
        79

    Args:
        n: the number of examples in the dataset.
        batch_size: examples per batch (per shard, when sharded).
        drop_remainder: drop the last partial batch (``True``) or pad it.
        shard: which share of the data this process reads; ``None`` for all.

    Returns:
        The number of batches per epoch, for this shard.

    Raises:
        ValueError: ``batch_size < 1`` or ``n < 0``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
    if n < 0:
        raise ValueError(f"n must be non-negative, got {n}.")
    sizes = _shard_sizes(n, shard or _NO_SHARD)
    if drop_remainder:
        return min(sizes) // batch_size
    return -(-max(sizes) // batch_size)


def epoch_of_step(step: int, steps_per_epoch: int) -> int:
    """The epoch (from 0) that global step ``step`` (from 0) belongs to.

    Step ``k`` is batch ``k % steps_per_epoch`` of epoch ``k // steps_per_epoch``;
    an epoch ends after step ``k`` when ``(k + 1) % steps_per_epoch == 0``.

    Example:
        >>> epoch_of_step(468, steps_per_epoch=468)
        1

    Args:
        step: the global step, counting batches from 0 across epochs.
        steps_per_epoch: as returned by :func:`steps_per_epoch`.

    Returns:
        The epoch number.
    """
    return step // steps_per_epoch


def _scale(inputs: np.ndarray) -> np.ndarray:
    return np.multiply(inputs, np.float32(1.0 / 255.0), dtype=np.float32)


def _check_common(dataset: ArrayDataset, batch_size: int, scale: bool) -> None:
    if not isinstance(dataset, ArrayDataset):
        raise TypeError(
            f"A pipeline reads a zoo.data.ArrayDataset, got {type(dataset).__name__}"
            ": wrap arrays as zoo.data.ArrayDataset(x, y)."
        )
    if isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer):
        raise TypeError(f"batch_size must be an int >= 1, got {batch_size!r}.")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
    if len(dataset) == 0:
        raise ValueError(f"Dataset {dataset.name!r} is empty.")
    if scale and dataset.inputs.dtype != np.uint8:
        raise ValueError(
            f"scale=True maps uint8 pixels to [0, 1], but {dataset.name!r} has "
            f"{dataset.inputs.dtype} inputs; use scale=False."
        )


class _Gather:
    """Build padded batches from the rows of an :class:`ArrayDataset`."""

    def __init__(self, dataset: ArrayDataset, batch_size: int, scale: bool) -> None:
        self.inputs = dataset.inputs
        self.labels = dataset.labels
        self.targets = dataset.targets
        self.batch_size = batch_size
        self.scale = scale

    def __call__(self, rows: np.ndarray | slice) -> Record:
        fields = {"inputs": self.inputs, "labels": self.labels}
        if self.targets is not None:
            fields["targets"] = self.targets
        if isinstance(rows, slice):
            record = {k: v[rows] for k, v in fields.items()}
        else:  # np.take: a third faster than fancy indexing for MNIST rows
            record = {k: np.take(v, rows, axis=0) for k, v in fields.items()}
        real = record["labels"].shape[0]
        mask = np.ones(self.batch_size, dtype=np.bool_)
        if real < self.batch_size:
            pad = self.batch_size - real
            record = {
                k: np.concatenate([v, np.zeros((pad, *v.shape[1:]), v.dtype)])
                for k, v in record.items()
            }
            mask[real:] = False
        elif isinstance(rows, slice):
            record = {k: v.copy() for k, v in record.items()}
        if self.scale:
            record["inputs"] = _scale(record["inputs"])
        return {**record, "mask": mask}

    def stacked(self, rows: np.ndarray, count: int) -> Chunk:
        """``count`` full batches of ``rows`` (``count * B`` of them, in order)
        stacked ``(count, B, ...)``: ``Chunk.stack`` of their batches."""
        size = self.batch_size
        inputs = take_rows(self.inputs, rows)
        inputs = inputs.reshape(count, size, *inputs.shape[1:])
        if self.scale:
            inputs = _scale(inputs)
        labels = np.take(self.labels, rows).reshape(count, size)
        targets = None
        if self.targets is not None:
            targets = take_rows(self.targets, rows).reshape(count, size, -1)
        mask = np.ones((count, size), dtype=np.bool_)
        return Chunk(inputs, labels, mask, targets)


class _TrainBatch:
    """Map a global step to its batch: a slice of that epoch's permutation.

    A shard takes every ``shard_count``-th row of the permutation (Grain's
    ``dataset[index::count]``), so shard ``i``'s batch ``k`` is its share of the
    unsharded batch ``k`` of ``shard_count`` times the size: data-parallel
    training sees the same global batches whatever the number of processes.
    """

    def __init__(
        self,
        gather: _Gather,
        n: int,
        seed: int,
        steps: int,
        shard: grain.sharding.ShardOptions,
    ) -> None:
        self.gather = gather
        self.n = n
        self.seed = seed
        self.steps = steps
        count = shard.shard_count
        usable = (n // count) * count if shard.drop_remainder else n
        self.rows = slice(shard.shard_index, usable, count)
        self._lock = threading.Lock()
        self._cache: dict[int, np.ndarray] = {}

    def rows_of_epoch(self, epoch: int) -> np.ndarray:
        """This shard's rows for ``epoch``, in the order they are served."""
        with self._lock:
            rows = self._cache.get(epoch)
            if rows is None:
                rng = np.random.default_rng([self.seed, epoch])
                rows = rng.permutation(self.n)[self.rows]
                if len(self._cache) >= 2:  # prefetch may straddle two epochs
                    del self._cache[min(self._cache)]
                self._cache[epoch] = rows
            return rows

    def __call__(self, step: int, _: int) -> Record:
        epoch, within = divmod(step, self.steps)
        rows = self.rows_of_epoch(epoch)
        size = self.gather.batch_size
        return self.gather(rows[within * size : (within + 1) * size])

    def rows_of_steps(self, step: int, count: int) -> np.ndarray | None:
        """The dataset rows of batches ``step .. step + count - 1``, shape
        ``(count, B)``; ``None`` if they span two epochs or one is padded."""
        epoch, within = divmod(step, self.steps)
        size = self.gather.batch_size
        rows = self.rows_of_epoch(epoch)
        if within + count > self.steps or (within + count) * size > len(rows):
            return None
        return rows[within * size : (within + count) * size].reshape(count, size)

    def chunk(self, step: int, count: int) -> Chunk | None:
        """Batches ``step .. step + count - 1`` as one chunk, gathered at once;
        ``None`` if they span two epochs or one of them is padded."""
        rows = self.rows_of_steps(step, count)
        return None if rows is None else self.gather.stacked(rows.ravel(), count)


class _EvalBatch:
    """Map a step to the next contiguous block of this shard's examples."""

    def __init__(self, gather: _Gather, bounds: tuple[int, int]) -> None:
        self.gather = gather
        self.start, self.end = bounds

    def __call__(self, step: int) -> Record:
        first = self.start + step * self.gather.batch_size
        return self.gather(slice(first, min(first + self.gather.batch_size, self.end)))


def _to_iter(
    batches: grain.MapDataset[Record], prefetch: int
) -> grain.IterDataset[Batch]:
    if prefetch < 0:
        raise ValueError(f"prefetch must be non-negative, got {prefetch}.")
    read = grain.ReadOptions(num_threads=0, prefetch_buffer_size=0)
    iterable = batches.map(Batch.from_record).to_iter_dataset(read)
    if prefetch == 0:
        return iterable
    return grain.experimental.ThreadPrefetchIterDataset(
        iterable, prefetch_buffer_size=prefetch
    )


def train_pipeline(
    dataset: ArrayDataset,
    *,
    batch_size: int,
    seed: int,
    num_epochs: int | None = None,
    drop_remainder: bool = True,
    scale: bool = False,
    shard: grain.sharding.ShardOptions | None = None,
    prefetch: int = 2,
    augment: grain.transforms.RandomMap | None = None,
) -> grain.IterDataset[Batch]:
    """Shuffled training batches, a new order each epoch, checkpointable.

    Epoch ``e`` visits the examples in the order
    ``np.random.default_rng([seed, e]).permutation(len(dataset))``. With
    ``shard``, every process computes the same permutation and takes every
    ``shard_count``-th example of it from ``shard_index`` on, so the shards
    together cover each epoch once, and batch ``k`` of all shards together is
    batch ``k`` of an unsharded pipeline with ``shard_count`` times the batch
    size (in another order).

    Example:
        >>> import numpy as np
        >>> ds = ArrayDataset(
        ...     np.zeros((10, 2), np.float32), np.arange(10, dtype=np.int32),
        ...     ("a",), "tiny")
        >>> it = iter(train_pipeline(ds, batch_size=4, seed=0, num_epochs=1))
        >>> [b.inputs.shape for b in it]
        [(4, 2), (4, 2)]

    Args:
        dataset: the examples, in memory.
        batch_size: examples per batch (per process, when sharded).
        seed: a non-negative integer fixing every epoch's order.
        num_epochs: how many epochs to produce; ``None`` repeats forever.
        drop_remainder: drop each epoch's last partial batch (``True``), or pad
            it to ``batch_size`` with rows whose ``mask`` is ``False``.
        scale: ``False`` keeps inputs as stored (``uint8`` images are scaled on
            device by the training step); ``True`` turns ``uint8`` inputs into
            ``float32`` in ``[0, 1]``.
        shard: this process's share, e.g. ``grain.sharding.ShardByJaxProcess()``;
            ``None`` reads everything.
        prefetch: batches prepared ahead in a background thread (Grain's
            ``ThreadPrefetchIterDataset``, which keeps ``get_state`` exact);
            ``0`` prepares each on demand (``fit``'s choice: the device
            overlaps each chunk of steps with the next anyway).
        augment: a random transformation of each whole batch, e.g.
            [`RandomShift`][zoo.data.RandomShift]; Grain seeds it from ``seed``
            and the step, so augmented epochs are reproducible and resume
            exactly. With ``shard``, an augmentation that has a
            ``for_shard(shard)`` method is replaced by what it returns, so
            that each example gets the draw of an unsharded run (others draw
            for this process's rows alone).

    Returns:
        A ``grain.IterDataset`` of [`Batch`][zoo.data.Batch]es ``(inputs (B, ...),
        labels (B,) int32, mask (B,) bool)``; images stay channels-first. Its iterators
        have ``get_state()`` / ``set_state()``. Without ``augment`` and with
        ``prefetch=0`` they also have ``next_chunk(K)``: the next ``K`` batches
        stacked into a [`Chunk`][zoo.data.Chunk], gathered at once (what
        [`DeviceFeed`][zoo.train.DeviceFeed] takes when it can), and
        ``next_rows(K)``: only their rows of ``dataset``, ``(K, B)``, for a
        copy of the dataset already on the device.

    Raises:
        ValueError: bad sizes or options, e.g. an epoch too small for one batch
            with ``drop_remainder=True``, or ``scale=True`` on non-``uint8``
            inputs.
        TypeError: ``augment`` is not a Grain ``RandomMap`` (e.g. a device
            augmentation).
    """
    _check_common(dataset, batch_size, scale)
    if seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed}.")
    if augment is not None and not isinstance(augment, grain.transforms.RandomMap):
        device = hasattr(augment, "draw") and hasattr(augment, "apply")
        raise TypeError(
            f"train_pipeline's augment takes a Grain RandomMap over whole batches "
            f"(zoo.data.RandomShift(2), ...), got {augment!r}"
            + (
                ": a device augmentation, which runs inside a step. Pass it to "
                "fit(augment=...) or use zoo.data.augment_batch in your step, or "
                "give the pipeline its host twin of the same parameters "
                "(RandomShift for DeviceShift, ...)."
                if device
                else "."
            )
        )
    if num_epochs is not None and num_epochs < 1:
        raise ValueError(f"num_epochs must be positive or None, got {num_epochs}.")
    shard = shard or _NO_SHARD
    n = len(dataset)
    steps = steps_per_epoch(n, batch_size, drop_remainder, shard=shard)
    if steps == 0:
        raise ValueError(
            f"Dataset {dataset.name!r} has {n} examples, fewer than batch_size="
            f"{batch_size} per shard: with drop_remainder=True an epoch is empty."
        )
    batch_of_step = _TrainBatch(
        _Gather(dataset, batch_size, scale), n, seed, steps, shard
    )
    steps_ds = grain.MapDataset.range(steps).repeat(num_epochs)
    batches = steps_ds.map_with_index(batch_of_step)
    if augment is not None:
        if shard.shard_count > 1 and isinstance(augment, _ShardAware):
            augment = augment.for_shard(shard)
        batches = batches.random_map(augment, seed=seed)
    if augment is not None or prefetch != 0:  # per batch: Grain's seeds, a thread
        return _to_iter(batches, prefetch)
    length = None if num_epochs is None else steps * num_epochs
    return ChunkedBatches(
        _to_iter(batches, 0), batch_of_step.chunk, length, batch_of_step.rows_of_steps
    )


def eval_pipeline(
    dataset: ArrayDataset,
    *,
    batch_size: int,
    scale: bool = False,
    shard: grain.sharding.ShardOptions | None = None,
    prefetch: int = 2,
) -> grain.IterDataset[Batch]:
    """Every example once, in order, in equal-shaped batches.

    The last batch is padded to ``batch_size`` with rows whose ``mask`` is
    ``False``, so a jitted step sees one shape: 10,000 examples at batch 128
    give 79 batches, the last with 16 real rows. With ``shard``, each process
    gets a contiguous share (Grain's even split) and all shards take the same
    number of steps, padding as needed.

    Args:
        dataset: the examples, in memory.
        batch_size: examples per batch (per process, when sharded).
        scale: as in :func:`train_pipeline`.
        shard: this process's share; ``None`` reads everything.
        prefetch: as in :func:`train_pipeline`.

    Returns:
        A ``grain.IterDataset`` of [`Batch`][zoo.data.Batch]es ``(inputs (B, ...),
        labels (B,) int32, mask (B,) bool)``, one pass over the data.

    Raises:
        ValueError: bad sizes or options.
    """
    _check_common(dataset, batch_size, scale)
    shard = shard or _NO_SHARD
    n = len(dataset)
    steps = steps_per_epoch(n, batch_size, drop_remainder=False, shard=shard)
    batch_of_step = _EvalBatch(
        _Gather(dataset, batch_size, scale), _shard_bounds(n, shard)
    )
    return _to_iter(grain.MapDataset.range(steps).map(batch_of_step), prefetch)
