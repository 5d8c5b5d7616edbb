"""The one check of a dataset's labels against a model, shared by fit and evaluate."""

from typing import Any

import numpy as np

from ..data import ArrayDataset
from ..models._apply import output_size


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
