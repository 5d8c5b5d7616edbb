"""2-D datasets: points coloured by class, and a classifier's decision regions."""

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from jaxtyping import Int, Real
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from numpy.typing import NDArray

from .._checks import checked
from ._classes import class_colors, class_ids, class_name, num_classes
from ._figure import Arr, axes_or_new

Color = tuple[float, float, float, float]


@checked
def plot_dataset(
    inputs: Real[Arr, "n 2"],
    labels: Int[Arr, " n"],
    *,
    ax: Axes | None = None,
    title: str | None = None,
    class_names: Sequence[str] | None = None,
) -> Figure:
    """Scatter a 2-D dataset, one colour per class, with a legend of the classes.

    Class ``i`` has the same colour in every figure (for up to 10 classes), so
    the splits of a dataset drawn on axes side by side compare at a glance.

    Args:
        inputs: points, shape ``(n, 2)``, ``n >= 1``.
        labels: their class ids ``>= 0``, shape ``(n,)``.
        ax: the Axes to draw on; ``None``: a new figure.
        title: the Axes' title; defaults to the number of points.
        class_names: names for the legend, indexed by class id.

    Returns:
        The figure drawn on.

    Raises:
        TypeError: (from the shape checks) an array of the wrong shape or dtype,
            or ``inputs`` and ``labels`` of different lengths.
        ValueError: no points, NaN or infinite ``inputs``, negative labels, or a
            label with no name in ``class_names``.
    """
    points = _finite_points(inputs)
    ids = class_ids("labels", labels)
    colors = class_colors(num_classes([ids], class_names))
    fig, ax = axes_or_new(ax, (4.8, 4.2))
    _scatter(ax, points, ids, colors)
    ax.set_title(f"{len(points)} points" if title is None else title)
    _finish(ax, colors, class_names)
    return fig


@checked
def plot_decision_boundary(
    predict: Callable[[NDArray[np.float32]], Any],
    inputs: Real[Arr, "n 2"],
    labels: Int[Arr, " n"],
    *,
    ax: Axes | None = None,
    resolution: int = 200,
    margin: float = 0.1,
    title: str | None = None,
    class_names: Sequence[str] | None = None,
) -> Figure:
    """Shade the class a 2-D classifier predicts everywhere, with the points on top.

    ``predict`` is called once, on a ``resolution x resolution`` grid that covers
    the data plus ``margin`` followed by the data points themselves. The class it
    predicts on the grid is drawn as filled contours, and the points on top,
    coloured by their true label.

    Args:
        predict: maps float32 points of shape ``(m, 2)``, with
            ``m = resolution**2 + n``, to class ids of shape ``(m,)`` or to
            logits of shape ``(m, classes)`` (their argmax is taken). NumPy or
            JAX arrays both work, e.g. ``lambda x: jax.vmap(model)(jnp.asarray(x))``.
        inputs: the points, shape ``(n, 2)``, ``n >= 1``.
        labels: their true class ids ``>= 0``, shape ``(n,)``.
        ax: the Axes to draw on; ``None``: a new figure.
        resolution: grid points per axis (``>= 2``).
        margin: padding around the data on each side, as a fraction of the
            data's extent along that axis.
        title: the Axes' title; defaults to the accuracy of ``predict`` on
            ``inputs``.
        class_names: names for the legend, indexed by class id.

    Returns:
        The figure drawn on.

    Raises:
        TypeError: (from the shape checks) an array of the wrong shape or dtype,
            or ``inputs`` and ``labels`` of different lengths.
        ValueError: no points, NaN or infinite ``inputs``, negative labels, a
            ``resolution < 2`` or negative ``margin``, or ``predict`` output of
            the wrong shape.
    """
    points = _finite_points(inputs)
    ids = class_ids("labels", labels)
    if resolution < 2:
        raise ValueError(f"resolution must be >= 2, got {resolution}.")
    if not (math.isfinite(margin) and margin >= 0):
        raise ValueError(f"margin must be a finite number >= 0, got {margin}.")

    span = points.max(axis=0) - points.min(axis=0)
    pad = np.where(span > 0, margin * span, 0.5)
    lo, hi = points.min(axis=0) - pad, points.max(axis=0) + pad
    grid_x, grid_y = np.meshgrid(
        np.linspace(lo[0], hi[0], resolution), np.linspace(lo[1], hi[1], resolution)
    )
    grid = np.stack([grid_x.ravel(), grid_y.ravel()], axis=1)
    # One call on grid and data together: a jitted predict compiles once.
    queries = np.concatenate([grid, points]).astype(np.float32)
    raw = np.asarray(predict(queries))
    predicted = _predicted_classes(raw, queries.shape[0])
    classes, on_data = predicted[: len(grid)], predicted[len(grid) :]
    count = num_classes([ids, predicted], class_names)
    if raw.ndim == 2 and class_names is None:
        count = max(count, raw.shape[1])
    colors = class_colors(count)

    fig, ax = axes_or_new(ax, (5.5, 4.8))
    ax.contourf(
        grid_x,
        grid_y,
        classes.reshape(grid_x.shape),
        levels=np.arange(count + 1) - 0.5,
        colors=colors,
        alpha=0.3,
    )
    _scatter(ax, points, ids, colors)
    ax.set_xlim(lo[0], hi[0])
    ax.set_ylim(lo[1], hi[1])
    accuracy = float(np.mean(on_data == ids))
    summary = f"accuracy {accuracy:.1%} on the {len(points)} points shown"
    ax.set_title(summary if title is None else title)
    _finish(ax, colors, class_names)
    return fig


def _finite_points(inputs: Arr) -> NDArray[np.float64]:
    points = np.asarray(inputs, dtype=np.float64)
    if len(points) == 0:
        raise ValueError("inputs is empty; need at least one point.")
    if not np.all(np.isfinite(points)):
        raise ValueError("inputs holds NaN or infinite values.")
    return points


def _predicted_classes(output: np.ndarray, n: int) -> NDArray[np.int64]:
    expected = f"expected ({n},) class ids or ({n}, classes) logits"
    if output.ndim == 2 and output.shape[0] == n and output.shape[1] >= 1:
        return np.argmax(output, axis=1).astype(np.int64)
    if output.ndim != 1 or output.shape[0] != n:
        raise ValueError(f"predict returned shape {output.shape}; {expected}.")
    if not np.issubdtype(output.dtype, np.integer):
        raise ValueError(
            f"predict returned {output.dtype} of shape {output.shape}: 1-D output "
            f"must be integer class ids; {expected}."
        )
    return class_ids("predict's output", output)


def _scatter(
    ax: Axes, points: np.ndarray, ids: np.ndarray, colors: list[Color]
) -> None:
    size = 24.0 if len(points) <= 500 else 8.0
    for c, color in enumerate(colors):
        mask = ids == c
        if np.any(mask):
            ax.scatter(
                points[mask, 0],
                points[mask, 1],
                s=size,
                color=color,
                edgecolors="black",
                linewidths=0.4,
            )


def _finish(ax: Axes, colors: list[Color], class_names: Sequence[str] | None) -> None:
    """Label the axes and add a legend with every class (up to 20)."""
    ax.set_xlabel("$x_1$")
    ax.set_ylabel("$x_2$")
    ax.grid(True, alpha=0.3)
    if len(colors) <= 20:
        handles = [
            Line2D(
                [],
                [],
                marker="o",
                linestyle="",
                markerfacecolor=color,
                markeredgecolor="black",
                markeredgewidth=0.4,
                label=class_name(c, class_names),
            )
            for c, color in enumerate(colors)
        ]
        ax.legend(handles=handles, title="class", fontsize="small", loc="best")
