"""The device feed: chunks of batches on their way from a Grain pipeline to the step.

A chunk stacks ``K`` consecutive batches of a pipeline, shape ``(K, B, ...)``, so
one jitted call runs ``K`` optimiser steps. Where the iterator has
``next_chunk(K)`` (an unaugmented [`train_pipeline`][zoo.data.train_pipeline])
the feed takes the ``K`` batches from it at once, in one gather; otherwise it
stacks them one by one. The feed starts each chunk's copy to
the device as soon as it is asked for it; with JAX's asynchronous dispatch a
loop that calls the step and then takes the next chunk copies chunk ``k + 1``
while chunk ``k`` trains::

    for chunk in DeviceFeed(iter(pipeline), steps_per_call=8):
        train_state, metrics = step(train_state, chunk)
"""

import contextlib
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import PRNGKeyArray

from ..data import (
    AbstractDeviceAugment,
    AnyChunk,
    ArrayDataset,
    AugmentedChunk,
    Batch,
    Chunk,
    IndexedChunk,
)


class BatchIterator(Protocol):
    """A Grain iterator of batches: ``next``, ``get_state`` and ``set_state``."""

    def __next__(self) -> Batch: ...

    def get_state(self) -> dict[str, Any]: ...

    def set_state(self, state: dict[str, Any]) -> None: ...


def chunk_steps(step: int, steps_per_call: int, steps_per_epoch: int | None) -> int:
    """Steps in the chunk that starts at global ``step``: ``steps_per_call``,
    cut short where an epoch of ``steps_per_epoch`` ends (``None``: never)."""
    if steps_per_epoch is None:
        return steps_per_call
    return min(steps_per_call, steps_per_epoch - step % steps_per_epoch)


def chunk_lengths(steps_per_call: int, steps_per_epoch: int) -> set[int]:
    """Every chunk length an epoch holds (one or two: each compiles once)."""
    return {
        chunk_steps(s, steps_per_call, steps_per_epoch)
        for s in range(0, steps_per_epoch, steps_per_call)
    }


class DeviceFeed:
    """Chunks of ``steps_per_call`` batches from ``batches``, put on the device.

    With ``steps_per_epoch``, chunks never span two epochs: an epoch of ``S``
    steps is ``S // K`` chunks of ``K`` steps, then one of ``S % K`` if that is
    not zero (a second shape, compiled once). After each chunk,
    [`data_state`][zoo.train.DeviceFeed.data_state] is the pipeline position to
    save with a checkpoint taken after that chunk. With ``augment``, each chunk
    comes as an [`AugmentedChunk`][zoo.data.AugmentedChunk]: the step augments
    it on the device, keyed by ``fold_in(key, step)``.

    Example:
        >>> import numpy as np, zoo
        >>> data = zoo.data.ArrayDataset(
        ...     np.zeros((10, 2), np.float32), np.zeros(10, np.int32), ("a",), "tiny")
        >>> batches = iter(zoo.data.train_pipeline(data, batch_size=2, seed=0))
        >>> feed = DeviceFeed(batches, steps_per_call=2, steps_per_epoch=5)
        >>> [next(feed).steps for _ in range(4)]
        [2, 2, 1, 2]

    Args:
        batches: an iterator over a pipeline (``iter(train_pipeline(...))``).
        steps_per_call: ``K``, the batches per chunk (>= 1).
        steps_per_epoch: the pipeline's batches per epoch, to end chunks at
            epoch ends; ``None`` to cut chunks anywhere.
        start_step: the global step of the first batch ``batches`` yields (a
            resumed run), so that epochs end where they should.
        put: moves a host chunk to the device(s); ``jax.device_put`` by
            default, or a sharding function for a mesh.
        augment: a device augmentation (``zoo.data.DeviceShift(2)``, ...).
        key: the augmentation's key (needed with ``augment``).

    Raises:
        ValueError: ``steps_per_call < 1``, ``steps_per_epoch < 1``, or
            ``augment`` without ``key``.
    """

    def __init__(
        self,
        batches: BatchIterator | Iterator[Batch],
        *,
        steps_per_call: int,
        steps_per_epoch: int | None = None,
        start_step: int = 0,
        put: Callable[[Chunk], Chunk] = jax.device_put,
        augment: AbstractDeviceAugment | None = None,
        key: PRNGKeyArray | None = None,
    ) -> None:
        if steps_per_call < 1:
            raise ValueError(f"steps_per_call must be >= 1, got {steps_per_call}.")
        if steps_per_epoch is not None and steps_per_epoch < 1:
            raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}.")
        if augment is not None and key is None:
            raise ValueError(f"{type(self).__name__}(augment=...) needs a key.")
        self.batches = batches
        self.steps_per_call = steps_per_call
        self.steps_per_epoch = steps_per_epoch
        self.step = start_step
        self.put = put
        self.augment = augment
        self.key = key if augment is not None else None
        self._data_state: dict[str, Any] | None = None
        self._pending: tuple[AnyChunk, dict[str, Any] | None] | None = None

    @property
    def data_state(self) -> dict[str, Any] | None:
        """The pipeline iterator's state after the last chunk taken (JSON)."""
        return self._data_state

    def chunk_steps(self, step: int) -> int:
        """The number of steps in the chunk that starts at global ``step``."""
        return chunk_steps(step, self.steps_per_call, self.steps_per_epoch)

    def __iter__(self) -> "DeviceFeed":
        return self

    def __next__(self) -> AnyChunk:
        chunk, self._data_state = self._pending or self._next_chunk()
        self._pending = None
        self.step += chunk.steps
        return chunk

    def prefetch(self) -> None:
        """Take the next chunk now and hold it for ``next``; nothing at the end.

        A loop about to wait for the device (an epoch's metrics) calls this
        first, so the next chunk is gathered while the last one trains.
        ``step`` and ``data_state`` still describe the chunks ``next`` gave.
        """
        if self._pending is None:
            with contextlib.suppress(StopIteration):
                self._pending = self._next_chunk()

    def _next_chunk(self) -> tuple[AnyChunk, dict[str, Any] | None]:
        """The chunk that starts at ``step``, and the pipeline's state after it."""
        chunk = self._take(self.chunk_steps(self.step))
        get_state = getattr(self.batches, "get_state", None)
        state = get_state() if get_state is not None else None
        return self.augmented(chunk, self.step), state

    def augmented(self, chunk: Chunk | IndexedChunk, first_step: int) -> AnyChunk:
        """``chunk``, wrapped to be augmented on the device if ``augment``."""
        if self.augment is None or self.key is None:
            return chunk
        return AugmentedChunk(chunk, jnp.int32(first_step), self.key, self.augment)

    def _take(self, steps: int) -> Chunk | IndexedChunk:
        """The next chunk of at most ``steps`` batches, on the device."""
        next_chunk = getattr(self.batches, "next_chunk", None)
        chunk = next_chunk(steps) if next_chunk is not None else None
        if chunk is None:  # batch by batch: augmented, prefetched, or at an end
            batches = []
            for _ in range(steps):
                batch = next(self.batches, None)
                if batch is None:
                    break
                batches.append(batch)
            if not batches:
                raise StopIteration
            chunk = Chunk.stack(batches)
        return self.put(chunk)


DEVICE_DATA_SHARE = 0.25
"""The share of a device's memory a training set may take to be kept there."""

DEVICE_DATA_BYTES = 1 << 30
"""The bound where the device does not report its memory: 1 GiB."""


def fits_on_device(nbytes: int, device: Any = None) -> bool:
    """Whether a training set of ``nbytes`` may live on ``device`` (default:
    the first): at most ``DEVICE_DATA_SHARE`` of its memory, or
    ``DEVICE_DATA_BYTES`` where it does not say how much it has."""
    device = device or jax.devices()[0]
    stats = device.memory_stats() or {}
    limit = stats.get("bytes_limit")
    bound = DEVICE_DATA_SHARE * limit if limit else DEVICE_DATA_BYTES
    return nbytes <= bound


class ResidentFeed(DeviceFeed):
    """Chunks as rows of a training set that is copied to the device once.

    The same batches as a [`DeviceFeed`][zoo.train.DeviceFeed] over the same
    unaugmented pipeline (its ``next_rows``), as
    [`IndexedChunk`][zoo.data.IndexedChunk]s: the step gathers them, so each
    chunk moves ``K x B`` row numbers instead of ``K x B`` examples. That
    wins where copies to the device are dear (a GPU); on a CPU, where the
    host gathers the next chunk while the step runs, the host feed is faster.

    Args:
        batches: an iterator over ``train_pipeline(dataset, ...)`` without
            ``augment`` and with ``prefetch=0`` (it has ``next_rows``).
        dataset: the pipeline's dataset: its inputs, labels (and targets) are put on
            the device here.
        steps_per_call: as for ``DeviceFeed``.
        steps_per_epoch: as for ``DeviceFeed``.
        start_step: as for ``DeviceFeed``.
        augment: as for ``DeviceFeed``.
        key: as for ``DeviceFeed``.

    Raises:
        TypeError: ``batches`` cannot name its rows (an augmented or
            prefetching pipeline).
        ValueError: ``augment`` without ``key``.
    """

    def __init__(
        self,
        batches: BatchIterator,
        dataset: ArrayDataset,
        *,
        steps_per_call: int,
        steps_per_epoch: int | None = None,
        start_step: int = 0,
        augment: AbstractDeviceAugment | None = None,
        key: PRNGKeyArray | None = None,
    ) -> None:
        super().__init__(
            batches, steps_per_call=steps_per_call, steps_per_epoch=steps_per_epoch,
            start_step=start_step, augment=augment, key=key,
        )  # fmt: skip
        next_rows = getattr(batches, "next_rows", None)
        if next_rows is None:
            raise TypeError(
                "ResidentFeed needs an unaugmented train_pipeline with prefetch=0 "
                "(its iterators name their rows); augment on the device instead."
            )
        self._next_rows: Callable[[int], np.ndarray | None] = next_rows
        self.inputs, self.labels, self.targets = jax.device_put(
            (dataset.inputs, dataset.labels.astype(np.int32), dataset.targets)
        )

    def __iter__(self) -> "ResidentFeed":
        return self

    def _take(self, steps: int) -> IndexedChunk:
        rows = self._next_rows(steps)
        if rows is None:
            raise StopIteration
        rows = jax.device_put(rows.astype(np.int32))
        return IndexedChunk(self.inputs, self.labels, rows, self.targets)


AUGMENT_STREAM = 2**31 - 1
"""Folded into ``jax.random.key(seed)`` for ``fit``'s device augmentation key,
which folds in each global step in turn (dropout folds the steps into the
seed's key itself: no step reaches this number)."""


def augment_key(seed: int) -> PRNGKeyArray:
    """The key ``fit`` augments with on the device, from its ``seed``."""
    return jax.random.fold_in(jax.random.key(seed), AUGMENT_STREAM)


def data_placement(
    dataset: ArrayDataset, augment: object, *, sharded: bool, backend: str
) -> tuple[bool, str]:
    """Whether ``fit`` keeps ``dataset`` on the device, and a phrase saying
    where the batches come from.

    On the device where copies are dear (an accelerator backend) when nothing
    stands in the way (no mesh, no host-side augmentation) and the set fits
    (:func:`fits_on_device`). On a CPU the host feed is faster: the host
    gathers the next chunk while the step runs. A device augmentation runs in
    the step either way (on a mesh, over the global batch, so every example
    gets the draw of a run on one device).
    """
    nbytes = dataset.inputs.nbytes + dataset.labels.nbytes
    if dataset.targets is not None:
        nbytes += dataset.targets.nbytes
    size = f"{nbytes / 1e6:.1f} MB"
    on_device_augment = isinstance(augment, AbstractDeviceAugment)
    blockers = []
    if sharded:
        blockers.append("training on a mesh feeds each device its share")
    if augment is not None and not on_device_augment:
        blockers.append(
            f"{type(augment).__name__} augments on the host "
            "(zoo.data.to_device_augment(augment) is its device twin)"
        )
    if backend == "cpu":
        blockers.append("on a CPU, gathering overlaps the step")
    if not blockers and not fits_on_device(nbytes):
        blockers.append(f"the training set ({size}) is too large to keep there")
    augmented = ", augmented on the device" if on_device_augment else ""
    if not blockers:
        return True, (
            f"on the device ({size}): batches gathered in the compiled step{augmented}"
        )
    return False, f"from the host ({size}{augmented}): {'; '.join(blockers)}"
