"""Where a figure comes from (the caller's axes, or a new one) and how it is saved."""

import os
import pathlib

import jax
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from .._files import atomic_write, user_path

Arr = np.ndarray | jax.Array
"""The arrays the plots take: NumPy or JAX."""


def axes_or_new(ax: Axes | None, figsize: tuple[float, float]) -> tuple[Figure, Axes]:
    """``ax`` and its root figure, or a new ``figsize``-inch figure and its Axes."""
    if ax is None:
        fig = Figure(figsize=figsize, layout="constrained")
        return fig, fig.add_subplot()
    fig = ax.figure
    while not isinstance(fig, Figure):  # an Axes in a SubFigure
        fig = fig.figure
    return fig, ax


def save_png(
    fig: Figure, path: str | os.PathLike[str], *, dpi: float = 100
) -> pathlib.Path:
    """Write ``fig`` to ``path`` as a PNG, atomically.

    The figure is rendered into a hidden temporary file beside ``path`` that then
    replaces ``path`` in one step, so a reader never sees half a PNG, and a failed
    render leaves an existing file as it was. Missing parent directories are
    created.

    Args:
        fig: the figure, e.g. as a ``plot_*`` function returns it.
        path: where to write; must end in ``.png``.
        dpi: resolution in dots per inch.

    Returns:
        ``path`` as a ``pathlib.Path``.

    Raises:
        ValueError: ``path`` does not end in ``.png``.
        OSError: the folder cannot be created or written.
    """
    out = user_path(path)
    if out.suffix.lower() != ".png":
        raise ValueError(
            f"save_png writes PNG files: the path must end in '.png', got {str(out)!r}."
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(out, lambda file: fig.savefig(file, format="png", dpi=dpi))
