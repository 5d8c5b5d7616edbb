"""A confusion matrix, with the counts in its cells."""

from collections.abc import Sequence

import numpy as np
from jaxtyping import Int
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from .._checks import checked
from ._classes import class_name
from ._figure import Arr, axes_or_new


@checked
def plot_confusion(
    counts: Int[Arr, "classes classes"],
    *,
    ax: Axes | None = None,
    class_names: Sequence[str] | None = None,
    title: str | None = None,
) -> Figure:
    """Draw a confusion matrix with the counts in its cells and the accuracy.

    Rows are true classes and columns predicted ones, as
    [`zoo.train.confusion_matrix`][] counts them (summed over any number of
    batches); the title gives the overall accuracy.

    Example:
        >>> import jax.numpy as jnp, zoo
        >>> counts = zoo.train.confusion_matrix(
        ...     jnp.array([0, 1, 1, 2]), jnp.array([0, 1, 2, 2]), num_classes=3)
        >>> fig = plot_confusion(counts, class_names=["cat", "dog", "bird"])
        >>> fig.axes[0].get_title()
        'accuracy 75.0% of 4'

    Args:
        counts: ``(k, k)`` counts, ``k >= 1``: entry ``[i, j]`` is the number of
            examples of true class ``i`` predicted as class ``j``.
        ax: the Axes to draw on; ``None``: a new figure (with a colour bar).
        class_names: names for the axes, indexed by class id (``k`` of them).
        title: a title above the accuracy.

    Returns:
        The figure drawn on.

    Raises:
        TypeError: (from the shape checks) ``counts`` is not a square integer
            array.
        ValueError: ``counts`` is empty or negative, or ``class_names`` does not
            have ``k`` names.
    """
    matrix = np.asarray(counts).astype(np.int64)
    k = matrix.shape[0]
    if k == 0 or matrix.min() < 0:
        raise ValueError(
            f"counts must be a non-empty matrix of counts >= 0, got shape "
            f"{matrix.shape}" + (f" and {matrix.min()}." if k else ".")
        )
    if class_names is not None and len(class_names) != k:
        raise ValueError(
            f"class_names has {len(class_names)} names but counts has {k} classes."
        )
    side = min(max(4.5, 0.45 * k + 2.5), 20.0)
    new = ax is None
    fig, ax = axes_or_new(ax, (side + 0.8, side))
    image = ax.imshow(matrix, cmap="Blues", vmin=0, interpolation="nearest")
    if new:
        fig.colorbar(image, ax=ax, shrink=0.8, label="count")
    names = [class_name(i, class_names) for i in range(k)]
    ticks = np.arange(k)
    if class_names is None:
        ax.set_xticks(ticks, names)
    else:
        ax.set_xticks(ticks, names, rotation=45, ha="right", rotation_mode="anchor")
    ax.set_yticks(ticks, names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if k <= 30:
        top = matrix.max()
        for (i, j), count in np.ndenumerate(matrix):
            ax.text(
                j,
                i,
                str(count),
                ha="center",
                va="center",
                fontsize=9 if k <= 12 else 7,
                color="white" if top and count > top / 2 else "black",
            )
    total = int(matrix.sum())
    summary = "no examples"
    if total:
        summary = f"accuracy {np.trace(matrix) / total:.1%} of {total}"
    ax.set_title(summary if title is None else f"{title}\n{summary}")
    return fig
