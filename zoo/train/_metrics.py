"""Loss and metrics, summed on the device so they are exact over any batching."""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, Bool, Float, Int

from .._checks import checked
from ._parallel import local_copy


class Metrics(NamedTuple):
    """Sums over the real (unmasked) examples seen so far; add them with ``+``.

    Keeping sums rather than means makes the totals exact whatever the batch
    sizes and however much padding the last batch carries.
    """

    loss_sum: Float[Array, ""]
    correct: Int[Array, ""]
    examples: Int[Array, ""]

    @staticmethod
    def zero() -> "Metrics":
        """Empty totals."""
        return Metrics(jnp.float32(0), jnp.int32(0), jnp.int32(0))

    def __add__(self, other: object) -> "Metrics":  # pyright: ignore[reportIncompatibleMethodOverride]
        if not isinstance(other, Metrics):
            return NotImplemented
        return Metrics(*(a + b for a, b in zip(self, other, strict=True)))

    def summary(self) -> dict[str, float]:
        """Host-side ``{"loss", "accuracy", "count"}`` (one device sync)."""
        # local_copy: totals replicated over several processes are read locally.
        loss_sum, correct, examples = jax.device_get(local_copy(tuple(self)))
        count = int(examples)
        if count == 0:
            return {"loss": float("nan"), "accuracy": float("nan"), "count": 0}
        return {
            "loss": float(loss_sum) / count,
            "accuracy": float(correct) / count,
            "count": count,
        }


@checked
def cross_entropy(
    logits: Float[Array, "batch classes"],
    labels: Int[Array, " batch"],
    mask: Bool[Array, " batch"],
) -> tuple[Float[Array, ""], Metrics]:
    """Mean softmax cross-entropy over the real examples, and their metrics.

    Args:
        logits: unnormalised scores ``(batch, classes)``; log-probabilities work too.
        labels: integer classes ``(batch,)`` in ``[0, classes)``.
        mask: ``True`` for real examples, ``False`` for padding rows.

    Returns:
        ``(loss, metrics)``: the mean loss over real examples (0 if there are
        none) and the summed [`Metrics`][zoo.train.Metrics].
    """
    per_example = optax.softmax_cross_entropy_with_integer_labels(
        logits.astype(jnp.float32), labels
    )
    weights = mask.astype(jnp.float32)
    count = jnp.sum(mask, dtype=jnp.int32)
    loss_sum = jnp.sum(per_example * weights)
    correct = jnp.sum((jnp.argmax(logits, axis=-1) == labels) & mask, dtype=jnp.int32)
    loss = loss_sum / jnp.maximum(count, 1).astype(jnp.float32)
    return loss, Metrics(loss_sum, correct, count)
