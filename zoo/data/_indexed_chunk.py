"""Chunks named by rows of a training set that is already on the device."""

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Int, PRNGKeyArray, Shaped

from ._batch import Batch
from ._device_augment import AbstractDeviceAugment
from ._device_batch import draw_batch


class IndexedChunk(eqx.Module):
    """``K`` batches given as rows of a training set held on the device.

    What a training step consumes when the whole training set is on the
    device: batch ``i`` is ``inputs[rows[i]]`` and ``labels[rows[i]]`` (every
    row real, no padding), gathered inside the compiled step, so only the
    ``(K, B)`` row numbers cross from the host. With ``augment``, batch ``i``'s
    images are then augmented as
    ``augment_batch(augment, fold_in(key, first_step + i), images)``: the draws
    are a pure function of the key and the global step, so a resumed run
    draws what an uninterrupted one would.
    """

    inputs: Shaped[Array, "examples ..."]
    """The whole training set's inputs as stored, e.g. ``uint8`` images."""
    labels: Int[Array, " examples"]
    """Its integer classes."""
    rows: Int[Array, "steps batch"]
    """The rows of each batch."""
    first_step: Int[Array, ""]
    """The global step of batch 0 (augmentation keys fold it in)."""
    key: PRNGKeyArray | None = None
    """The augmentation's key; ``None`` without ``augment``."""
    augment: AbstractDeviceAugment | None = None
    """A device augmentation applied to every batch, or ``None``."""

    @property
    def steps(self) -> int:
        """The number of batches (optimiser steps) in the chunk."""
        return self.rows.shape[0]

    def draws(self) -> object:
        """Every batch's augmentation draws, stacked ``(K, B, ...)``; ``None``
        without ``augment``. Drawn for the whole chunk at once, outside the
        steps' loop (XLA:CPU recomputes draws fused into a gather otherwise)."""
        if self.augment is None or self.key is None:
            return None
        augment, key = self.augment, self.key
        shape = (self.rows.shape[1], *self.inputs.shape[1:])
        steps = self.first_step + jnp.arange(self.steps, dtype=jnp.int32)
        return jax.vmap(
            lambda step: draw_batch(augment, jax.random.fold_in(key, step), shape)
        )(steps)

    def batch(self, rows: Int[Array, " batch"], draws: object) -> Batch:
        """The batch of ``rows`` (one row of ``self.rows``), augmented with
        ``draws`` (that batch's slice of :meth:`draws`)."""
        inputs = self.inputs.at[rows].get(mode="promise_in_bounds")
        if self.augment is not None:
            inputs = jax.vmap(self.augment.apply)(draws, inputs)
        labels = self.labels.at[rows].get(mode="promise_in_bounds")
        return Batch(inputs, labels, jnp.ones(rows.shape, jnp.bool_))
