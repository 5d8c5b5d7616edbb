"""Chunks that the training step completes on the device.

[`IndexedChunk`][zoo.data.IndexedChunk] names its batches by their rows of a
training set already on the device; [`AugmentedChunk`][zoo.data.AugmentedChunk]
augments the batches of another chunk there. Inside a jitted step ``gather()``
turns either into a plain [`Chunk`][zoo.data.Chunk].
"""

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int, PRNGKeyArray, Shaped

from ._batch import Chunk
from ._device_augment import AbstractDeviceAugment
from ._device_batch import draw_batch


class IndexedChunk(eqx.Module):
    """``K`` batches given as rows of a training set held on the device.

    Batch ``i`` is ``inputs[rows[i]]`` and ``labels[rows[i]]`` (and
    ``targets[rows[i]]`` if given; every row real, no padding), gathered
    inside the compiled step, all ``K`` at once before the steps, so only
    the ``(K, B)`` row numbers cross from the host.
    """

    inputs: Shaped[Array, "examples ..."]
    """The whole training set's inputs as stored, e.g. ``uint8`` images."""
    labels: Int[Array, " examples"]
    """Its integer classes."""
    rows: Int[Array, "steps batch"]
    """The rows of each batch."""
    targets: Float[Array, "examples targets"] | None = None
    """Its float rows (e.g. a teacher's logits), if it has them."""

    @property
    def steps(self) -> int:
        """The number of batches (optimiser steps) in the chunk."""
        return self.rows.shape[0]

    def gather(self) -> Chunk:
        """The ``K`` batches as a [`Chunk`][zoo.data.Chunk] ``(K, B, ...)``."""
        inputs = jnp.take(self.inputs, self.rows, axis=0)
        labels = jnp.take(self.labels, self.rows, axis=0)
        targets = None
        if self.targets is not None:
            targets = jnp.take(self.targets, self.rows, axis=0)
        return Chunk(inputs, labels, jnp.ones(self.rows.shape, jnp.bool_), targets)


class AugmentedChunk(eqx.Module):
    """The batches of ``chunk``, augmented on the device inside the step.

    Batch ``i``'s images become
    ``augment_batch(augment, fold_in(key, first_step + i), images)``: the draws
    are a pure function of the key and the global step, so a resumed run
    draws what an uninterrupted one would, however the steps are cut into
    chunks.
    """

    chunk: Chunk | IndexedChunk
    """The batches to augment, images ``(K, B, C, H, W)`` once gathered."""
    first_step: Int[Array, ""]
    """The global step of batch 0."""
    key: PRNGKeyArray
    """The augmentation's key, into which each step is folded."""
    augment: AbstractDeviceAugment
    """A device augmentation, e.g. ``DeviceShift(2)``."""

    @property
    def steps(self) -> int:
        """The number of batches (optimiser steps) in the chunk."""
        return self.chunk.steps

    def gather(self) -> Chunk:
        """The augmented batches as a [`Chunk`][zoo.data.Chunk] ``(K, B, ...)``."""
        chunk = self.chunk
        chunk = chunk.gather() if isinstance(chunk, IndexedChunk) else chunk
        inputs = jnp.asarray(chunk.inputs)
        augment, key = self.augment, self.key
        steps = self.first_step + jnp.arange(self.steps, dtype=jnp.int32)
        # Every batch's draws first, then every image: XLA:CPU recomputes draws
        # that are fused into a gather for each pixel otherwise.
        shape = inputs.shape[1:]
        draws = jax.vmap(
            lambda step: draw_batch(augment, jax.random.fold_in(key, step), shape)
        )(steps)
        inputs = jax.vmap(jax.vmap(augment.apply))(draws, inputs)
        return chunk._replace(inputs=inputs)


AnyChunk = Chunk | IndexedChunk | AugmentedChunk
"""What a training step takes: a [`Chunk`][zoo.data.Chunk], or a chunk it
completes on the device."""
