"""The typed values that flow from a pipeline to the training step."""

from collections.abc import Mapping
from typing import NamedTuple

import jax
import numpy as np
from jaxtyping import Bool, Int, Shaped

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

    @classmethod
    def from_record(cls, record: Mapping[str, np.ndarray]) -> "Batch":
        """The batch of a pipeline record ``{"inputs", "labels", "mask"}``."""
        return cls(record["inputs"], record["labels"], record["mask"])


class Chunk(NamedTuple):
    """``K`` stacked batches: what one call of a training step consumes."""

    inputs: Shaped[ArrayOnHostOrDevice, "steps batch ..."]
    """Inputs as stored; ``uint8`` images are scaled to ``[0, 1]`` by the step."""
    labels: Int[ArrayOnHostOrDevice, "steps batch"]
    """Integer classes."""
    mask: Bool[ArrayOnHostOrDevice, "steps batch"]
    """``True`` for real examples."""

    @classmethod
    def stack(cls, batches: list[Batch]) -> "Chunk":
        """Stack host batches into a host chunk of ``len(batches)`` steps."""
        return cls(*(stack(list(field)) for field in zip(*batches, strict=True)))

    @property
    def steps(self) -> int:
        """The number of batches (optimiser steps) in the chunk."""
        return self.labels.shape[0]

    def batch(self, i: int) -> Batch:
        """Batch ``i`` of the chunk."""
        return Batch(self.inputs[i], self.labels[i], self.mask[i])
