"""The one check of a dataset's labels against a model, shared by fit and evaluate."""

from typing import Any

import numpy as np

from ..data import ArrayDataset
from ..models._apply import output_size
from ._metrics import AnyLoss, TargetLoss


def check_labels(model: Any, data: ArrayDataset, name: str, state: Any = None) -> None:
    """Refuse labels outside ``[0, classes)``, ``classes`` the model's outputs.

    An out-of-range label gives a ``nan`` loss (too high) or a plausible loss
    and a wrong accuracy (negative), silently; so both are refused at once.
    A zoo model's outputs are its ``out_size``; any other model is traced on
    one example of ``data`` with ``state`` (which checks its call form too).

    Args:
        model: the model whose outputs the labels index.
        data: the dataset whose labels are checked.
        name: how to name ``data`` in the message (``"train_data"``, ...).
        state: the model's state (for a model zoo did not build: ``None`` or
            an ``eqx.nn.State`` chooses its call form).

    Raises:
        ValueError: a label is out of range; the message gives the labels'
            range and the model's number of outputs.
        TypeError: a model zoo did not build that takes or returns neither
            call form (see ``zoo.apply``).
    """
    labels = np.asarray(data.labels)
    if not labels.size:
        return
    classes = output_size(model, state, data.inputs[:1])
    if labels.min() < 0 or labels.max() >= classes:
        raise ValueError(
            f"{name} has labels in [{labels.min()}, {labels.max()}] but the model "
            f"has {classes} outputs: labels must be in [0, {classes})."
        )


def check_targets(loss: AnyLoss, data: ArrayDataset, model: Any, state: Any) -> None:
    """Refuse training data whose ``targets`` the step's loss would not read, a
    ``TargetLoss`` with no targets, or targets its ``check_targets`` refuses
    (for ``distillation``: not one logit per class).

    Raises:
        ValueError: the data and the loss disagree; the message says how to
            make them agree.
    """
    targets = data.targets
    if targets is not None and not isinstance(loss, TargetLoss):
        raise ValueError(
            f"train_data has targets {targets.shape} but the step's loss takes "
            "(logits, labels) only: train with a zoo.train.TargetLoss (e.g. "
            "make_train_step(optimizer, loss=zoo.train.distillation())), or "
            "without targets."
        )
    if targets is None and isinstance(loss, TargetLoss):
        raise ValueError(
            f"the step's loss {type(loss).__name__} reads each example's targets "
            "but train_data has none: give them with train_data.with_targets(...) "
            "(for distillation, zoo.train.teacher_logits(teacher, state, "
            "train_data))."
        )
    if targets is not None and isinstance(loss, TargetLoss):
        classes = output_size(model, state, data.inputs[:1])
        loss.check_targets(targets.shape[1], classes)
