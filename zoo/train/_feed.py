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

from collections.abc import Callable, Iterator
from typing import Any, Protocol

import jax

from ..data import Batch, Chunk


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
    save with a checkpoint taken after that chunk.

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

    Raises:
        ValueError: ``steps_per_call < 1`` or ``steps_per_epoch < 1``.
    """

    def __init__(
        self,
        batches: BatchIterator | Iterator[Batch],
        *,
        steps_per_call: int,
        steps_per_epoch: int | None = None,
        start_step: int = 0,
        put: Callable[[Chunk], Chunk] = jax.device_put,
    ) -> None:
        if steps_per_call < 1:
            raise ValueError(f"steps_per_call must be >= 1, got {steps_per_call}.")
        if steps_per_epoch is not None and steps_per_epoch < 1:
            raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}.")
        self.batches = batches
        self.steps_per_call = steps_per_call
        self.steps_per_epoch = steps_per_epoch
        self.step = start_step
        self.put = put
        self._data_state: dict[str, Any] | None = None

    @property
    def data_state(self) -> dict[str, Any] | None:
        """The pipeline iterator's state after the last chunk taken (JSON)."""
        return self._data_state

    def chunk_steps(self, step: int) -> int:
        """The number of steps in the chunk that starts at global ``step``."""
        return chunk_steps(step, self.steps_per_call, self.steps_per_epoch)

    def __iter__(self) -> "DeviceFeed":
        return self

    def __next__(self) -> Chunk:
        steps = self.chunk_steps(self.step)
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
        get_state = getattr(self.batches, "get_state", None)
        self._data_state = get_state() if get_state is not None else None
        self.step += chunk.steps
        return self.put(chunk)
