"""The typed values that flow from a pipeline to the training step."""

from collections.abc import Mapping
from typing import NamedTuple

import jax
import numpy as np
from jaxtyping import Bool, Float, Int, Shaped

from ._host_arrays import stack

ArrayOnHostOrDevice = np.ndarray | jax.Array


class Batch(NamedTuple):
    """One batch of examples, on the host (NumPy) or on a device.

    Padding rows (``mask`` False) hold zeros and count for nothing, so every
    batch of a pipeline has one shape and a jitted step compiles once.
    """

    inputs: Shaped[ArrayOnHostOrDevice, "batch ..."]
    """Inputs as stored, e.g. ``uint8`` images ``(B, C, H, W)``."""
    labels: Int[ArrayOnHostOrDevice, " batch"]
    """Integer classes ``(B,)``."""
    mask: Bool[ArrayOnHostOrDevice, " batch"]
    """``True`` for real examples ``(B,)``."""
    targets: Float[ArrayOnHostOrDevice, "batch targets"] | None = None
    """The dataset's float rows ``(B, T)`` (e.g. a teacher's logits), if any."""

    @classmethod
    def from_record(cls, record: Mapping[str, np.ndarray]) -> "Batch":
        """The batch of a pipeline record ``{"inputs", "labels", "mask"}`` (and
        ``"targets"`` where the dataset has them)."""
        targets = record.get("targets")
        return cls(record["inputs"], record["labels"], record["mask"], targets)


class Chunk(NamedTuple):
    """``K`` stacked batches: what one call of a training step consumes."""

    inputs: Shaped[ArrayOnHostOrDevice, "steps batch ..."]
    """Inputs as stored; ``uint8`` images are scaled to ``[0, 1]`` by the step."""
    labels: Int[ArrayOnHostOrDevice, "steps batch"]
    """Integer classes."""
    mask: Bool[ArrayOnHostOrDevice, "steps batch"]
    """``True`` for real examples."""
    targets: Float[ArrayOnHostOrDevice, "steps batch targets"] | None = None
    """The dataset's float rows (e.g. a teacher's logits), if any."""

    @classmethod
    def stack(cls, batches: list[Batch]) -> "Chunk":
        """Stack host batches into a host chunk of ``len(batches)`` steps."""
        inputs, labels, mask, targets = zip(*batches, strict=True)
        return cls(
            stack(list(inputs)),
            stack(list(labels)),
            stack(list(mask)),
            None if targets[0] is None else stack(list(targets)),
        )

    @property
    def steps(self) -> int:
        """The number of batches (optimiser steps) in the chunk."""
        return self.labels.shape[0]

    def batch(self, i: int) -> Batch:
        """Batch ``i`` of the chunk."""
        targets = None if self.targets is None else self.targets[i]
        return Batch(self.inputs[i], self.labels[i], self.mask[i], targets)
