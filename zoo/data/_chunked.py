"""Training batches that can also be taken ``K`` at a time, in one gather.

A training loop that fuses ``K`` steps per device call stacks ``K`` batches into
a [`Chunk`][zoo.data.Chunk]. Taken one by one from Grain, each batch costs a
gather of its rows and Grain's per-element work (about 20 µs for an MNIST batch
on 2 CPU cores), and the stack copies them once more: for an MLP epoch at batch
100, 2-3 % of the time the same steps take on chunks already on the device.
Consecutive batches of one epoch are consecutive rows of its permutation, so
the iterator here hands out ``K`` of them as one chunk, gathered with one NumPy
index, holding the same bytes as the ``K`` batches stacked.

It is what ``train_pipeline`` returns when nothing per batch stands in the way
(no augmentation, which Grain seeds per element; no prefetch thread). The
iterator's state is the wrapped Grain iterator's, ``{"next_index": k}``
counting batches, however they were taken.
"""

from collections.abc import Callable
from typing import Any

import grain
import numpy as np

from ._batch import Batch, Chunk

ChunkOfStep = Callable[[int, int], Chunk | None]
"""``(step, count) ->`` batches ``step .. step + count - 1`` as one chunk, or
``None`` where they cannot be gathered at once (an epoch boundary between them,
or a padded batch among them)."""

RowsOfStep = Callable[[int, int], np.ndarray | None]
"""``(step, count) ->`` the dataset rows of those batches ``(count, B)``, or
``None`` where ``ChunkOfStep`` gives ``None``."""


class ChunkedBatches(grain.IterDataset[Batch]):
    """A Grain dataset of batches whose iterators also have ``next_chunk``.

    Args:
        parent: the batches, one element each (a Grain ``IterDataset`` over a
            ``MapDataset`` of batches, without prefetching).
        chunk_of_step: builds the chunk of consecutive batches from a step.
        length: the number of batches ``parent`` yields; ``None`` if endless.
        rows_of_step: the rows of those batches in the dataset.
    """

    def __init__(
        self,
        parent: grain.IterDataset[Batch],
        chunk_of_step: ChunkOfStep,
        length: int | None,
        rows_of_step: RowsOfStep,
    ) -> None:
        super().__init__(parent)
        self.chunk_of_step = chunk_of_step
        self.length = length
        self.rows_of_step = rows_of_step

    def __iter__(self) -> "ChunkedBatchIterator":
        return ChunkedBatchIterator(self._parent.__iter__(), self)

    def __str__(self) -> str:
        return "ChunkedBatches"


class ChunkedBatchIterator(grain.DatasetIterator[Batch]):
    """Batches one at a time (``next``) or ``K`` at a time (``next_chunk``)."""

    def __init__(
        self, parent: grain.DatasetIterator[Batch], dataset: ChunkedBatches
    ) -> None:
        super().__init__(parent)
        self.dataset = dataset

    def __next__(self) -> Batch:
        return next(self._parent)

    def get_state(self) -> dict[str, Any]:
        return self._parent.get_state()

    def set_state(self, state: dict[str, Any]) -> None:
        self._parent.set_state(state)

    def _take(self, steps: int, of_step: Callable[[int, int], Any]) -> Any:
        start = self._parent.get_state()["next_index"]
        length = self.dataset.length
        if length is not None and start + steps > length:
            return None
        taken = of_step(start, steps)
        if taken is not None:
            self._parent.set_state({"next_index": start + steps})
        return taken

    def next_chunk(self, steps: int) -> Chunk | None:
        """The next ``steps`` batches as one chunk ``(steps, B, ...)``, equal to
        ``Chunk.stack`` of ``steps`` calls of ``next``; or ``None``, taking
        nothing, where they cannot be gathered at once (an epoch boundary or a
        padded batch among them, or fewer than ``steps`` left)."""
        return self._take(steps, self.dataset.chunk_of_step)

    def next_rows(self, steps: int) -> np.ndarray | None:
        """The dataset rows of the next ``steps`` batches, int ``(steps, B)``:
        what ``next_chunk`` would gather (``chunk.inputs[i, j]`` is row
        ``rows[i, j]``), taking as much; ``None`` where it gives ``None``."""
        return self._take(steps, self.dataset.rows_of_step)
