"""The one check of a dataset's labels against a model, shared by fit and evaluate."""

import numpy as np

from ..data import ArrayDataset
from ..models import AbstractModel


def check_labels(model: AbstractModel, data: ArrayDataset, name: str) -> None:
    """Refuse labels outside ``[0, model.out_size)``.

    An out-of-range label gives a ``nan`` loss (too high) or a plausible loss
    and a wrong accuracy (negative), silently; so both are refused at once.

    Args:
        model: the model whose outputs the labels index.
        data: the dataset whose labels are checked.
        name: how to name ``data`` in the message (``"train_data"``, ...).

    Raises:
        ValueError: a label is out of range; the message gives the labels'
            range and the model's number of outputs.
    """
    labels = np.asarray(data.labels)
    if labels.size and (labels.min() < 0 or labels.max() >= model.out_size):
        raise ValueError(
            f"{name} has labels in [{labels.min()}, {labels.max()}] but the model "
            f"has {model.out_size} outputs: labels must be in [0, "
            f"{model.out_size})."
        )
