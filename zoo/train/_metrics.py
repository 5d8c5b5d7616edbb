"""Loss and metrics, summed on the device so they are exact over any batching."""

import abc
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, Bool, Float, Int

from .._checks import checked
from .._compiler_options import initialiser_options, jit_with_options
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
        return Metrics(*_add_totals(tuple(self), tuple(other)))

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


@jit_with_options(initialiser_options)
def _add_totals(a: tuple[Array, ...], b: tuple[Array, ...]) -> tuple[Array, ...]:
    """Sums of totals, field by field: one program for all three, quick to
    compile (adding them one by one compiles one program per dtype)."""
    return tuple(x + y for x, y in zip(a, b, strict=True))


LossFn = Callable[[Float[Array, "batch classes"], Int[Array, " batch"]], Array]
"""A per-example loss: ``(logits (B, C), labels (B,)) -> losses (B,)``.

The training step masks out padding rows and averages over the real ones, so a
loss function never sees the mask. Write your own as any JAX function of this
shape, e.g. with optax: ``lambda logits, labels: optax.sigmoid_focal_loss(...)``.
"""


class TargetLoss(abc.ABC):
    """A per-example loss that also reads each example's row of the dataset's
    ``targets`` (see [`ArrayDataset`][zoo.data.ArrayDataset]), e.g.
    [`distillation`][zoo.train.distillation]'s teacher logits.

    ``loss(logits (B, C), labels (B,), targets (B, T)) -> losses (B,)``; where
    the data have no targets (evaluation), ``on_labels(logits, labels)``
    stands in. A subclass must be hashable (the step caches its traces by it).
    """

    @abc.abstractmethod
    def __call__(
        self,
        logits: Float[Array, "batch classes"],
        labels: Int[Array, " batch"],
        targets: Float[Array, "batch targets"],
    ) -> Float[Array, " batch"]:
        """The loss of each example, given its target row."""

    @abc.abstractmethod
    def on_labels(
        self, logits: Float[Array, "batch classes"], labels: Int[Array, " batch"]
    ) -> Float[Array, " batch"]:
        """The loss of each example from its label alone: data without targets."""

    def check_targets(self, width: int, classes: int) -> None:
        """Refuse, before training, targets of ``width`` columns for a model of
        ``classes`` outputs that this loss cannot read (``ValueError``, saying
        why). Any width by default."""
        del width, classes


AnyLoss = LossFn | TargetLoss
"""A step's loss: of ``(logits, labels)``, or a [`TargetLoss`][zoo.train.TargetLoss]."""


def softmax_cross_entropy(
    logits: Float[Array, "batch classes"], labels: Int[Array, " batch"]
) -> Float[Array, " batch"]:
    """Softmax cross-entropy of each example: the default [`LossFn`][zoo.train.LossFn].

    Example:
        >>> import jax.numpy as jnp
        >>> softmax_cross_entropy(jnp.zeros((1, 4)), jnp.array([2])).round(4)
        Array([1.3863], dtype=float32)
    """
    return optax.softmax_cross_entropy_with_integer_labels(
        logits.astype(jnp.float32), labels
    )


def label_smoothing(smoothing: float) -> LossFn:
    """Cross-entropy against labels smoothed towards the uniform distribution.

    The target of each example puts ``1 - smoothing`` on its class plus
    ``smoothing / classes`` on every class (``optax.smooth_labels``).

    Example:
        >>> import jax.numpy as jnp
        >>> loss = label_smoothing(0.1)
        >>> loss(jnp.array([[4.0, 0.0]]), jnp.array([0])).round(4)
        Array([0.2181], dtype=float32)

    Args:
        smoothing: the probability mass spread over all classes, in ``[0, 1)``.

    Raises:
        ValueError: ``smoothing`` outside ``[0, 1)``.
    """
    if not 0.0 <= smoothing < 1.0:
        raise ValueError(f"smoothing must be in [0, 1), got {smoothing}.")

    def smoothed_cross_entropy(
        logits: Float[Array, "batch classes"], labels: Int[Array, " batch"]
    ) -> Float[Array, " batch"]:
        one_hot = jax.nn.one_hot(labels, logits.shape[-1], dtype=jnp.float32)
        targets = optax.smooth_labels(one_hot, smoothing)
        return optax.softmax_cross_entropy(logits.astype(jnp.float32), targets)

    return smoothed_cross_entropy


@checked
def masked_loss(
    loss_fn: AnyLoss,
    logits: Float[Array, "batch classes"],
    labels: Int[Array, " batch"],
    mask: Bool[Array, " batch"],
    targets: Float[Array, "batch targets"] | None = None,
) -> tuple[Float[Array, ""], Metrics]:
    """Mean of ``loss_fn`` over the real examples, and their summed metrics.

    Args:
        loss_fn: per-example loss, ``(logits, labels) -> (batch,)``, or a
            ``TargetLoss``.
        logits: unnormalised scores ``(batch, classes)``.
        labels: integer classes ``(batch,)`` in ``[0, classes)``.
        mask: ``True`` for real examples, ``False`` for padding rows.
        targets: the batch's target rows, for a ``TargetLoss``.

    Returns:
        ``(loss, metrics)``: the mean loss over real examples (0 if there are
        none) and the summed [`Metrics`][zoo.train.Metrics].

    Raises:
        ValueError: ``loss_fn`` does not return one loss per example.
    """
    per_example = _per_example(loss_fn, logits, labels, targets)
    losses, correct = _example_terms(per_example, logits, labels, mask)
    count = jnp.sum(mask, dtype=jnp.int32)
    loss_sum = jnp.sum(losses)
    loss = loss_sum / jnp.maximum(count, 1).astype(jnp.float32)
    return loss, Metrics(loss_sum, jnp.sum(correct), count)


def _per_example(
    loss_fn: AnyLoss,
    logits: Float[Array, "batch classes"],
    labels: Int[Array, " batch"],
    targets: Float[Array, "batch targets"] | None,
) -> Float[Array, " batch"]:
    """``loss_fn``'s losses as float32, checked to be one per example. A
    ``TargetLoss`` gets the targets, or stands in with ``on_labels``."""
    if isinstance(loss_fn, TargetLoss):
        per_example = (
            loss_fn.on_labels(logits, labels)
            if targets is None
            else loss_fn(logits, labels, targets)
        )
    elif targets is not None:
        raise ValueError(
            "The data have targets but the loss takes (logits, labels) only: use "
            "a zoo.train.TargetLoss such as zoo.train.distillation(...), or data "
            "without targets."
        )
    else:
        per_example = loss_fn(logits, labels)
    if per_example.shape != labels.shape:
        raise ValueError(
            f"The loss function returned shape {per_example.shape}; a LossFn "
            f"returns one loss per example, shape {labels.shape}."
        )
    return per_example.astype(jnp.float32)


def _example_terms(
    per_example: Float[Array, " batch"],
    logits: Float[Array, "batch classes"],
    labels: Int[Array, " batch"],
    mask: Bool[Array, " batch"],
) -> tuple[Float[Array, " batch"], Int[Array, " batch"]]:
    """Each example's loss and whether it is right, 0 for padding rows."""
    losses = per_example * mask.astype(jnp.float32)
    right = (jnp.argmax(logits, axis=-1) == labels) & mask
    return losses, right.astype(jnp.int32)


class ExampleTotals(NamedTuple):
    """Per-example sums over the steps of a chunk, shape ``(B,)``: the training
    step adds each batch's terms elementwise and reduces once, after its steps."""

    loss_sum: Float[Array, " batch"]
    correct: Int[Array, " batch"]

    @staticmethod
    def zero(batch_size: int) -> "ExampleTotals":
        """Empty totals for batches of ``batch_size``."""
        return ExampleTotals(
            jnp.zeros(batch_size, jnp.float32), jnp.zeros(batch_size, jnp.int32)
        )

    def __add__(self, other: object) -> "ExampleTotals":  # pyright: ignore[reportIncompatibleMethodOverride]
        if not isinstance(other, ExampleTotals):
            return NotImplemented
        return ExampleTotals(*(a + b for a, b in zip(self, other, strict=True)))

    def metrics(self, examples: Int[Array, ""]) -> Metrics:
        """The chunk's [`Metrics`][zoo.train.Metrics], over ``examples`` real ones."""
        return Metrics(jnp.sum(self.loss_sum), jnp.sum(self.correct), examples)


def weighted_loss(
    loss_fn: AnyLoss,
    logits: Float[Array, "batch classes"],
    labels: Int[Array, " batch"],
    mask: Bool[Array, " batch"],
    weights: Float[Array, " batch"],
    targets: Float[Array, "batch targets"] | None = None,
) -> tuple[Float[Array, ""], ExampleTotals]:
    """``sum(loss_fn(logits, labels) * weights)`` and each example's terms.

    With ``weights = mask / max(count, 1)``, computed once per chunk, this is
    ``masked_loss``'s mean with the same gradient, bit
    for bit (each weight is ``1 / count`` or 0 either way), and no reduction
    over the batch in the step.
    """
    per_example = _per_example(loss_fn, logits, labels, targets)
    loss = jnp.sum(per_example * weights)
    return loss, ExampleTotals(*_example_terms(per_example, logits, labels, mask))


def cross_entropy(
    logits: Float[Array, "batch classes"],
    labels: Int[Array, " batch"],
    mask: Bool[Array, " batch"],
) -> tuple[Float[Array, ""], Metrics]:
    """Mean softmax cross-entropy over the real examples, and their metrics.

    [`masked_loss`][zoo.train.masked_loss] with the default loss.

    Args:
        logits: unnormalised scores ``(batch, classes)``; log-probabilities work too.
        labels: integer classes ``(batch,)`` in ``[0, classes)``.
        mask: ``True`` for real examples, ``False`` for padding rows.
    """
    return masked_loss(softmax_cross_entropy, logits, labels, mask)


@checked
def confusion_matrix(
    labels: Int[Array, " n"],
    predictions: Int[Array, " n"],
    num_classes: int,
    mask: Bool[Array, " n"] | None = None,
) -> Int[Array, "classes classes"]:
    """Count how often each true class is predicted as each class.

    A metric like [`Metrics`][zoo.train.Metrics]: it runs on the device (under
    ``jax.jit`` with ``num_classes`` static) and the counts of several batches
    add up exactly. Draw it with [`zoo.plot.plot_confusion`][].

    Example:
        >>> import jax.numpy as jnp
        >>> confusion_matrix(jnp.array([0, 0, 1, 2]), jnp.array([0, 1, 1, 1]), 3)
        Array([[1, 1, 0],
               [0, 1, 0],
               [0, 1, 0]], dtype=int32)

    Args:
        labels: true classes ``(n,)``.
        predictions: predicted classes ``(n,)``.
        num_classes: the number of classes ``k``.
        mask: ``True`` for the examples to count, ``False`` for padding rows;
            ``None`` counts them all.

    Returns:
        ``int32`` counts ``(k, k)``: entry ``[i, j]`` is the number of examples of
        true class ``i`` predicted as class ``j``, so rows sum to the class sizes
        and the diagonal holds the correct predictions. Examples whose label or
        prediction lies outside ``[0, k)`` are not counted.

    Raises:
        ValueError: ``num_classes < 1``.
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}.")
    labels, predictions = labels.astype(jnp.int32), predictions.astype(jnp.int32)
    valid = (labels >= 0) & (labels < num_classes)
    valid &= (predictions >= 0) & (predictions < num_classes)
    if mask is not None:
        valid &= mask
    cells = num_classes * num_classes
    index = jnp.where(valid, labels * num_classes + predictions, cells)
    counts = jnp.zeros(cells, jnp.int32).at[index].add(1, mode="drop")
    return counts.reshape(num_classes, num_classes)
