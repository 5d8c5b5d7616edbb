"""A grid of images titled with their class; wrong predictions in red."""

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from jaxtyping import Int, Real
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from numpy.typing import NDArray

from .._checks import checked
from ._classes import class_ids, class_name, num_classes
from ._figure import Arr, axes_or_new

_MISTAKE = "tab:red"
_CORRECT = "black"


class _Caption(NamedTuple):
    """What one image in a sample grid is titled with, and in which colour."""

    text: str
    color: str
    mistake: bool


@checked
def plot_samples(
    images: Real[Arr, "n h w"] | Real[Arr, "n c h w"],
    labels: Int[Arr, " n"],
    predictions: Int[Arr, " n"] | None = None,
    *,
    ax: Axes | None = None,
    class_names: Sequence[str] | None = None,
    ncols: int = 8,
    title: str | None = None,
) -> Figure:
    """Draw a grid of images titled with their predicted class.

    A wrong prediction gets a red title that also gives the true class, e.g.
    ``"7 (true 2)"``, and a thick red frame. Without ``predictions`` each image
    is titled with its label, which previews a dataset. Every image passed is
    drawn, so slice a batch first (e.g. ``images[:32]``). The grid is one image
    on one Axes; the new figure gives each image about 1.2 inches, which its
    9-point titles need.

    Args:
        images: shape ``(n, 1, H, W)`` or ``(n, 3, H, W)`` (channels-first, as
            zoo models take them) or ``(n, H, W)``; ``uint8`` in ``[0, 255]`` or
            any real dtype (shown from its minimum to its maximum).
        labels: true class ids ``>= 0``, shape ``(n,)``.
        predictions: predicted class ids ``>= 0``, shape ``(n,)``, or ``None``.
        ax: the Axes to draw on; ``None``: a new figure.
        class_names: names indexed by class id, used in the titles.
        ncols: images per row.
        title: the Axes' title; with ``predictions`` the number wrong is added.

    Returns:
        The figure drawn on.

    Raises:
        TypeError: (from the shape checks) an array of the wrong shape or dtype,
            or arrays of different lengths ``n``.
        ValueError: no images, a channel count other than 1 or 3, negative ids
            or ids with no name in ``class_names``, or ``ncols < 1``.
    """
    pixels = _display_images(images)
    true = class_ids("labels", labels)
    guess = None if predictions is None else class_ids("predictions", predictions)
    if ncols < 1:
        raise ValueError(f"ncols must be >= 1, got {ncols}.")
    if class_names is not None:
        num_classes([true] if guess is None else [true, guess], class_names)

    n, height, width = pixels.shape[:3]
    cols = min(ncols, n)
    rows = math.ceil(n / cols)
    pad = max(1, round(0.1 * width))
    band = max(2, math.ceil(0.35 * height))  # room for two lines of title
    cell_w, cell_h = width + pad, band + height + pad
    canvas = np.zeros((rows * cell_h, cols * cell_w, 4))  # transparent gaps
    inches = 1.5 if class_names and max(map(len, class_names)) > 4 else 1.2
    size = (cols * inches, rows * inches * cell_h / cell_w + 0.4)
    fig, ax = axes_or_new(ax, size)
    mistakes = 0
    for i in range(n):
        top, left = (i // cols) * cell_h + band, (i % cols) * cell_w + pad // 2
        canvas[top : top + height, left : left + width] = pixels[i]
        caption = _caption(
            int(true[i]), None if guess is None else int(guess[i]), class_names
        )
        mistakes += caption.mistake
        ax.text(
            left + width / 2,
            top - 0.5 - 0.05 * height,
            caption.text,
            ha="center",
            va="bottom",
            color=caption.color,
            fontsize=9,
        )
        ax.add_patch(
            Rectangle(
                (left - 0.5, top - 0.5),
                width,
                height,
                fill=False,
                edgecolor=_MISTAKE if caption.mistake else "0.8",
                linewidth=2.5 if caption.mistake else 0.5,
            )
        )
    ax.imshow(canvas, interpolation="nearest")
    ax.set_axis_off()
    if guess is not None:
        summary = f"{mistakes} of {n} wrong (red)" if mistakes else f"all {n} right"
        ax.set_title(summary if title is None else f"{title}: {summary}")
    elif title is not None:
        ax.set_title(title)
    return fig


def _caption(
    label: int, prediction: int | None, class_names: Sequence[str] | None = None
) -> _Caption:
    """Title a sample: the prediction, and the true label in red if it is wrong."""
    true = class_name(label, class_names)
    if prediction is None:
        return _Caption(true, _CORRECT, False)
    guess = class_name(prediction, class_names)
    if prediction == label:
        return _Caption(guess, _CORRECT, False)
    sep = "\n" if len(guess) + len(true) > 10 else " "
    return _Caption(f"{guess}{sep}(true {true})", _MISTAKE, True)


def _display_images(images: Arr) -> NDArray[np.float64]:
    """Images as opaque RGBA in ``[0, 1]``, shape ``(n, H, W, 4)``.

    ``uint8`` is shown on ``[0, 255]``; other dtypes from their finite minimum to
    their maximum over the whole batch, so the images compare.
    """
    arr = np.asarray(images)
    if arr.ndim == 4:
        if arr.shape[1] not in (1, 3):
            raise ValueError(
                "images must be channels-first with 1 or 3 channels, shape "
                f"(n, 1, H, W) or (n, 3, H, W), got {arr.shape}."
            )
        arr = np.moveaxis(arr, 1, -1)
    else:
        arr = arr[..., None]
    if arr.shape[0] == 0:
        raise ValueError("images is empty; need at least one image.")
    values = arr.astype(np.float64)
    if arr.dtype == np.uint8:
        lo, hi = 0.0, 255.0
    else:
        finite = values[np.isfinite(values)]
        lo = float(finite.min()) if finite.size else 0.0
        hi = float(finite.max()) if finite.size else 1.0
        hi = hi if hi > lo else lo + 1.0
    scaled = np.clip(np.nan_to_num((values - lo) / (hi - lo)), 0.0, 1.0)
    rgb = np.broadcast_to(scaled, (*scaled.shape[:3], 3))
    return np.concatenate([rgb, np.ones((*scaled.shape[:3], 1))], axis=-1)
