"""Knowledge distillation: a student trained towards a teacher's soft outputs.

The teacher runs once, before training: [`teacher_logits`][zoo.train.teacher_logits]
gives its logits for every training example, which travel with the examples as
the dataset's ``targets`` (``train.with_targets(logits)``), and
[`distillation`][zoo.train.distillation] is the loss that reads them (Hinton,
Vinyals and Dean, 2015). The steps stay as cheap as without a teacher, and the
batches, their order and the augmentation are exactly those of a run without.
"""

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from ..data import ArrayDataset
from ..models import AbstractModel, apply
from ._metrics import TargetLoss, label_smoothing

TEACHER_BATCH = 1000
"""Examples per call of the teacher in ``teacher_logits``."""


@dataclasses.dataclass(frozen=True)
class Distillation(TargetLoss):
    """``(1 - weight) * CE(student, label) + weight * T² * KL(teacher_T ‖ student_T)``.

    ``teacher_T`` and ``student_T`` are the softmaxes of the teacher's and the
    student's logits divided by the temperature ``T``; ``T²`` keeps the soft
    term's gradients on the scale of the hard term's (Hinton et al.). The hard
    term is cross-entropy against the labels smoothed by ``smoothing``; it is
    also the loss of data without targets (evaluation). Build it with
    [`distillation`][zoo.train.distillation].
    """

    temperature: float
    weight: float
    smoothing: float

    def __call__(
        self,
        logits: Float[Array, "batch classes"],
        labels: Int[Array, " batch"],
        targets: Float[Array, "batch classes"],
    ) -> Float[Array, " batch"]:
        """Each example's loss; ``targets`` are the teacher's logits."""
        if targets.shape != logits.shape:
            raise ValueError(
                f"distillation reads the teacher's logits as targets, shape "
                f"{logits.shape} like the student's; got {targets.shape}."
            )
        t = self.temperature
        student = jax.nn.log_softmax(logits.astype(jnp.float32) / t, axis=-1)
        teacher = jax.nn.log_softmax(targets.astype(jnp.float32) / t, axis=-1)
        kl = jnp.sum(jnp.exp(teacher) * (teacher - student), axis=-1)
        hard = self.on_labels(logits, labels)
        return (1.0 - self.weight) * hard + self.weight * (t * t) * kl

    def check_targets(self, width: int, classes: int) -> None:
        """Refuse targets that are not one teacher logit per class."""
        if width != classes:
            raise ValueError(
                f"distillation reads the teacher's logits as targets, one per "
                f"class, but train_data's targets have {width} columns and the "
                f"model {classes} outputs: the teacher must classify the same "
                "classes."
            )

    def on_labels(
        self, logits: Float[Array, "batch classes"], labels: Int[Array, " batch"]
    ) -> Float[Array, " batch"]:
        """The hard term alone: (smoothed) cross-entropy against the labels."""
        return label_smoothing(self.smoothing)(logits, labels)


def distillation(
    temperature: float = 4.0, weight: float = 0.9, *, smoothing: float = 0.0
) -> Distillation:
    """The distillation loss, for a dataset whose ``targets`` are a teacher's logits.

    Example:
        >>> import jax.numpy as jnp
        >>> loss = distillation(temperature=4.0, weight=0.9)
        >>> student, teacher = jnp.array([[2.0, 0.0]]), jnp.array([[2.0, 0.0]])
        >>> loss(student, jnp.array([0]), teacher).round(4)  # the KL term is 0
        Array([0.0127], dtype=float32)

    Args:
        temperature: ``T > 0``; above 1 softens both distributions, so the
            teacher's ranking of the wrong classes counts.
        weight: the soft term's share, in ``[0, 1]`` (0: labels only).
        smoothing: label smoothing of the hard term, in ``[0, 1)``.

    Raises:
        ValueError: an argument outside its range.
    """
    if not (np.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a positive number, got {temperature}.")
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"weight must be in [0, 1], got {weight}.")
    if not 0.0 <= smoothing < 1.0:
        raise ValueError(f"smoothing must be in [0, 1), got {smoothing}.")
    return Distillation(float(temperature), float(weight), float(smoothing))


@eqx.filter_jit
def _logits(
    model: AbstractModel | eqx.Module, state: eqx.nn.State | None, x: Array
) -> Array:
    return apply(model, x, state)[0].astype(jnp.float32)


def teacher_logits(
    teacher: AbstractModel | eqx.Module,
    state: eqx.nn.State | None,
    data: ArrayDataset,
    *,
    batch_size: int = TEACHER_BATCH,
) -> Float[np.ndarray, "examples classes"]:
    """The teacher's logits for every example of ``data``, in inference mode.

    ``data.with_targets(teacher_logits(teacher, state, data))`` is a training
    set for [`distillation`][zoo.train.distillation]. Batches of ``batch_size``
    (the last padded with zeros, so one program runs them all), float32.

    Raises:
        ValueError: ``batch_size`` below 1.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
    model = eqx.nn.inference_mode(teacher)
    inputs = data.inputs
    size = min(batch_size, len(data))
    out = []
    for start in range(0, len(data), size):
        x = inputs[start : start + size]
        real = x.shape[0]
        if real < size:
            x = np.concatenate([x, np.zeros((size - real, *x.shape[1:]), x.dtype)])
        out.append(np.asarray(_logits(model, state, jnp.asarray(x)))[:real])
    return np.concatenate(out)
