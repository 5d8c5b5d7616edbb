"""Class ids, their names and their colours, the same in every figure."""

from collections.abc import Sequence

import jax
import matplotlib
import numpy as np
from numpy.typing import NDArray


def class_ids(name: str, ids: np.ndarray | jax.Array) -> NDArray[np.int64]:
    """``ids`` (integer, checked by the annotations) as ``int64``, refusing ids < 0."""
    out = np.asarray(ids).astype(np.int64)
    if out.size and out.min() < 0:
        raise ValueError(f"{name} must be class ids >= 0, got {int(out.min())}.")
    return out


def num_classes(ids: Sequence[np.ndarray], class_names: Sequence[str] | None) -> int:
    """``len(class_names)``, or one more than the largest id seen.

    Raises:
        ValueError: an id has no name in ``class_names``.
    """
    largest = max((int(a.max()) for a in ids if a.size), default=-1)
    if class_names is None:
        return largest + 1
    if largest >= len(class_names):
        raise ValueError(
            f"class id {largest} is out of range for class_names "
            f"({len(class_names)} classes)."
        )
    return len(class_names)


def class_name(index: int, class_names: Sequence[str] | None) -> str:
    """The name of class ``index``: its entry in ``class_names``, or the id."""
    return str(index) if class_names is None else str(class_names[index])


def class_colors(count: int) -> list[tuple[float, float, float, float]]:
    """One distinct colour per class: class ``i`` looks the same in every figure."""
    if count <= 10:
        cmap = matplotlib.colormaps["tab10"]
    elif count <= 20:
        cmap = matplotlib.colormaps["tab20"]
    else:
        cmap = matplotlib.colormaps["turbo"].resampled(count)
    return [cmap(i) for i in range(count)]
