"""Figures for training runs, written as PNG files.

Each ``plot_*`` function takes NumPy arrays (or anything :func:`numpy.asarray`
accepts, JAX arrays included), draws one figure with Matplotlib's object API and
its Agg renderer, writes it to ``path`` and returns that path. Pyplot is never
imported, so these functions leave the caller's pyplot state and backend alone,
and they work on machines without a display.

Files are written atomically: the figure is rendered to a temporary file next to
``path``, which then replaces ``path`` in one step, so a reader never sees half
a PNG. Missing parent directories are created.

Example:
    >>> import tempfile, pathlib
    >>> history = [
    ...     {"epoch": 0, "train_loss": 0.9, "test_loss": 0.7,
    ...      "train_accuracy": 0.71, "test_accuracy": 0.80},
    ...     {"epoch": 1, "train_loss": 0.5, "test_loss": 0.4,
    ...      "train_accuracy": 0.86, "test_accuracy": 0.88},
    ... ]
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = plot_curves(history, pathlib.Path(tmp) / "runs" / "curves.png")
    ...     print(path.name, path.read_bytes()[:4])
    curves.png b'\\x89PNG'
"""

import math
import os
import pathlib
import secrets
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray

try:
    import matplotlib
    from matplotlib.axes import Axes
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator, PercentFormatter
except ModuleNotFoundError as error:  # Matplotlib is an optional dependency
    if error.name is None or error.name.partition(".")[0] != "matplotlib":
        raise
    raise ModuleNotFoundError(
        "zoo.plot draws its figures with Matplotlib, which is not installed. "
        "Install zoo with the plot extra: pip install 'typed-zoo[plot]' "
        "(from a clone: pip install -e '.[plot]'), or pip install matplotlib.",
        name="matplotlib",
    ) from error

__all__ = [
    "confusion_matrix",
    "plot_confusion",
    "plot_curves",
    "plot_dataset",
    "plot_decision_boundary",
    "plot_samples",
    "plot_splits",
]

PathLike = str | os.PathLike[str]
"""A file path: ``str`` or :class:`pathlib.Path`."""

_DPI = 100
_MISTAKE = "tab:red"
_CORRECT = "black"


# --------------------------------------------------------------------------- #
# Writing
# --------------------------------------------------------------------------- #


def _png_path(path: PathLike) -> pathlib.Path:
    out = pathlib.Path(path)
    if out.suffix.lower() != ".png":
        raise ValueError(f"path must end in '.png', got {str(out)!r}.")
    return out


def _save(fig: Figure, path: pathlib.Path) -> pathlib.Path:
    """Render ``fig`` with Agg and write it to ``path`` atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    # os.open with 0o666 honours the umask, unlike tempfile.mkstemp (0o600).
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    fd = os.open(tmp, flags, 0o666)
    try:
        with os.fdopen(fd, "wb") as fh:
            fig.savefig(fh, format="png", dpi=_DPI)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


# --------------------------------------------------------------------------- #
# Validation
# --------------------------------------------------------------------------- #


def _class_ids(name: str, value: ArrayLike) -> NDArray[np.int64]:
    """Return ``value`` as a 1-D ``int64`` array of class ids, or raise."""
    arr = np.asarray(value)
    if arr.ndim != 1:
        raise ValueError(
            f"{name} must be a 1-D array of class ids, got shape {arr.shape}."
        )
    if arr.dtype == np.bool_:
        arr = arr.astype(np.int64)
    elif np.issubdtype(arr.dtype, np.floating):
        if not (np.all(np.isfinite(arr)) and np.all(arr == np.round(arr))):
            raise ValueError(
                f"{name} must hold integer class ids, got non-integer "
                f"{arr.dtype} values."
            )
    elif not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must hold integer class ids, got dtype {arr.dtype}.")
    ids = arr.astype(np.int64)
    if ids.size and ids.min() < 0:
        raise ValueError(f"{name} must be >= 0, got {int(ids.min())}.")
    return ids


def _points(name: str, value: ArrayLike) -> NDArray[np.float64]:
    """Return ``value`` as a finite ``(n, 2)`` float array with ``n >= 1``."""
    arr = np.asarray(value)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"{name} must have shape (n, 2), got {arr.shape}.")
    if arr.shape[0] == 0:
        raise ValueError(f"{name} is empty; need at least one point.")
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise ValueError(f"{name} must be numeric, got dtype {arr.dtype}.")
    out = arr.astype(np.float64)
    if not np.all(np.isfinite(out)):
        raise ValueError(f"{name} holds NaN or infinite values.")
    return out


def _same_length(a_name: str, a: np.ndarray, b_name: str, b: np.ndarray) -> None:
    if a.shape[0] != b.shape[0]:
        raise ValueError(
            f"{a_name} and {b_name} must have the same length, got "
            f"{a.shape[0]} and {b.shape[0]}."
        )


def _num_classes(
    ids: Sequence[np.ndarray],
    num_classes: int | None,
    class_names: Sequence[str] | None,
) -> int:
    """The number of classes: given, or one more than the largest id seen."""
    largest = max((int(a.max()) for a in ids if a.size), default=-1)
    if class_names is not None:
        if num_classes is not None and num_classes != len(class_names):
            raise ValueError(
                f"num_classes={num_classes} but class_names has "
                f"{len(class_names)} names."
            )
        num_classes = len(class_names)
    if num_classes is None:
        if largest < 0:
            raise ValueError("cannot infer num_classes from empty labels; pass it.")
        return largest + 1
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}.")
    if largest >= num_classes:
        what = "class_names" if class_names is not None else "num_classes"
        raise ValueError(
            f"class id {largest} is out of range for {what} ({num_classes} classes)."
        )
    return num_classes


def _name(index: int, class_names: Sequence[str] | None) -> str:
    return str(index) if class_names is None else str(class_names[index])


def _class_colors(num_classes: int) -> list[tuple[float, float, float, float]]:
    """One distinct colour per class, the same for every figure in this module."""
    if num_classes <= 10:
        cmap = matplotlib.colormaps["tab10"]
    elif num_classes <= 20:
        cmap = matplotlib.colormaps["tab20"]
    else:
        cmap = matplotlib.colormaps["turbo"].resampled(num_classes)
    return [cmap(i) for i in range(num_classes)]


# --------------------------------------------------------------------------- #
# Training curves
# --------------------------------------------------------------------------- #


def _series_label(key: str, suffix: str) -> str:
    prefix = key[: -len(suffix)].rstrip("_")
    return prefix or key


def _series_order(key: str) -> tuple[int, str]:
    for rank, prefix in enumerate(("train", "val", "test")):
        if key.startswith(prefix):
            return rank, key
    return 3, key


def _curves_figure(
    history: Sequence[Mapping[str, Any]], title: str | None = None
) -> Figure:
    if isinstance(history, Mapping) or not isinstance(history, Sequence):
        raise ValueError(
            f"history must be a list of per-epoch dicts, got {type(history).__name__}."
        )
    if len(history) == 0:
        raise ValueError("history is empty; need at least one epoch.")
    epochs: list[float] = []
    for i, entry in enumerate(history):
        if not isinstance(entry, Mapping):
            raise ValueError(
                f"history[{i}] must be a dict, got {type(entry).__name__}."
            )
        epoch = entry.get("epoch", i)
        try:
            epochs.append(float(epoch) + 1.0)
        except (TypeError, ValueError):
            raise ValueError(
                f"history[{i}]['epoch'] must be a number, got {epoch!r}."
            ) from None

    drawn: list[tuple[str, dict[str, tuple[list[float], list[float]]]]] = []
    for suffix in ("loss", "accuracy"):
        keys = sorted(
            {k for e in history for k in e if k.endswith(suffix)}, key=_series_order
        )
        series: dict[str, tuple[list[float], list[float]]] = {}
        for key in keys:
            xs: list[float] = []
            ys: list[float] = []
            for i, entry in enumerate(history):
                value = entry.get(key)
                if value is None:
                    continue
                try:
                    ys.append(float(value))
                except (TypeError, ValueError):
                    raise ValueError(
                        f"history[{i}][{key!r}] must be a number, got {value!r}."
                    ) from None
                xs.append(epochs[i])
            if xs:
                series[key] = (xs, ys)
        if series:
            drawn.append((suffix, series))
    if not drawn:
        raise ValueError(
            "history has no '*loss' or '*accuracy' entries to plot, e.g. "
            "'train_loss' or 'test_accuracy'."
        )

    fig = Figure(figsize=(5.0 * len(drawn), 4.0), layout="constrained")
    axes = fig.subplots(1, len(drawn), squeeze=False)[0]
    marker = "o" if len(history) <= 50 else None
    ticks = sorted(set(epochs))
    for ax, (suffix, series) in zip(axes, drawn, strict=True):
        for key, (xs, ys) in series.items():
            ax.plot(
                xs, ys, marker=marker, markersize=3, label=_series_label(key, suffix)
            )
        ax.set_title(suffix)
        ax.set_xlabel("epoch")
        ax.set_ylabel(suffix)
        if len(ticks) <= 20:
            ax.set_xticks(ticks)
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if len(ticks) == 1:
            ax.set_xlim(ticks[0] - 0.5, ticks[0] + 0.5)
        ax.grid(True, alpha=0.3)
        ax.legend()
        if suffix == "accuracy" and all(
            0.0 <= y <= 1.0 for _, ys in series.values() for y in ys
        ):
            ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0))
    if title is not None:
        fig.suptitle(title)
    return fig


def plot_curves(
    history: Sequence[Mapping[str, Any]],
    path: PathLike,
    *,
    title: str | None = None,
) -> pathlib.Path:
    """Plot loss and accuracy per epoch, train and test, and write a PNG.

    Takes the list that ``zoo.train.fit`` returns. Every key ending in ``loss``
    (``train_loss``, ``test_loss``, ...) is drawn in the loss panel and every key
    ending in ``accuracy`` in the accuracy panel; keys that are missing, or
    ``None`` in some epochs, are simply not drawn there. A panel with nothing to
    draw is left out. Epochs are 0-based in the history and 1-based on the axis;
    an entry without ``"epoch"`` counts by its position.

    Args:
        history: one dict per epoch, e.g.
            ``{"epoch": 0, "train_loss": 0.31, "test_loss": 0.12,
            "train_accuracy": 0.91, "test_accuracy": 0.96, ...}``.
        path: where to write the PNG; must end in ``.png``.
        title: an optional title above both panels.

    Returns:
        The path written, as a :class:`pathlib.Path`.

    Raises:
        ValueError: if ``history`` is empty or not a list of dicts, a value is not
            a number, there is no loss or accuracy to plot, or ``path`` does not
            end in ``.png``.
    """
    out = _png_path(path)
    return _save(_curves_figure(history, title), out)


# --------------------------------------------------------------------------- #
# 2-D datasets and decision boundaries
# --------------------------------------------------------------------------- #


def _scatter_classes(
    ax: Axes,
    points: np.ndarray,
    labels: np.ndarray,
    colors: Sequence[tuple[float, float, float, float]],
    class_names: Sequence[str] | None,
) -> None:
    size = 24.0 if points.shape[0] <= 500 else 8.0
    for c, color in enumerate(colors):
        mask = labels == c
        if not np.any(mask):
            continue
        ax.scatter(
            points[mask, 0],
            points[mask, 1],
            s=size,
            color=color,
            edgecolors="black",
            linewidths=0.4,
        )


def _finish_scatter_axes(
    ax: Axes,
    colors: Sequence[tuple[float, float, float, float]] | None,
    class_names: Sequence[str] | None,
) -> None:
    """Label the axes and, given ``colors``, add a legend with every class."""
    ax.set_xlabel("$x_1$")
    ax.set_ylabel("$x_2$")
    ax.grid(True, alpha=0.3)
    if colors is not None and len(colors) <= 20:
        handles = [
            Line2D(
                [],
                [],
                marker="o",
                linestyle="",
                markerfacecolor=color,
                markeredgecolor="black",
                markeredgewidth=0.4,
                label=_name(c, class_names),
            )
            for c, color in enumerate(colors)
        ]
        ax.legend(handles=handles, title="class", fontsize="small", loc="best")


def _bounds(points: np.ndarray, margin: float) -> tuple[np.ndarray, np.ndarray]:
    lo = points.min(axis=0)
    hi = points.max(axis=0)
    span = hi - lo
    pad = np.where(span > 0, margin * span, 0.5)
    return lo - pad, hi + pad


def _splits_figure(
    splits: Mapping[str, tuple[ArrayLike, ArrayLike]],
    title: str | None = None,
    class_names: Sequence[str] | None = None,
    single: bool = False,
) -> Figure:
    if not isinstance(splits, Mapping) or len(splits) == 0:
        raise ValueError(
            "splits must be a non-empty dict like {'train': (x, y), 'test': (x, y)}."
        )
    checked: list[tuple[str, np.ndarray, np.ndarray]] = []
    for split, pair in splits.items():
        if not (isinstance(pair, Sequence) and len(pair) == 2):
            raise ValueError(f"splits[{split!r}] must be a pair (inputs, labels).")
        points = _points(f"splits[{split!r}] inputs", pair[0])
        labels = _class_ids(f"splits[{split!r}] labels", pair[1])
        _same_length(
            f"splits[{split!r}] inputs", points, f"splits[{split!r}] labels", labels
        )
        checked.append((str(split), points, labels))
    k = _num_classes([lab for _, _, lab in checked], None, class_names)
    colors = _class_colors(k)

    n = len(checked)
    fig = Figure(figsize=(4.5 * n, 4.2), layout="constrained")
    axes = fig.subplots(1, n, squeeze=False, sharex=True, sharey=True)[0]
    for i, (ax, (split, points, labels)) in enumerate(zip(axes, checked, strict=True)):
        _scatter_classes(ax, points, labels, colors, class_names)
        if single:
            ax.set_title(title if title is not None else f"{points.shape[0]} points")
        else:
            ax.set_title(f"{split} (n={points.shape[0]})")
        _finish_scatter_axes(ax, colors if i == n - 1 else None, class_names)
    if not single and title is not None:
        fig.suptitle(title)
    return fig


def plot_dataset(
    inputs: ArrayLike,
    labels: ArrayLike,
    path: PathLike,
    *,
    title: str | None = None,
    class_names: Sequence[str] | None = None,
) -> pathlib.Path:
    """Scatter a 2-D dataset, one colour per class, and write a PNG.

    Args:
        inputs: points, shape ``(n, 2)``.
        labels: integer class ids ``>= 0``, shape ``(n,)``.
        path: where to write the PNG; must end in ``.png``.
        title: an optional title; defaults to the number of points.
        class_names: optional names for the legend, indexed by class id.

    Returns:
        The path written, as a :class:`pathlib.Path`.

    Raises:
        ValueError: on a wrong shape, an empty or non-finite ``inputs``, labels
            that are not non-negative integers, mismatched lengths, too few
            ``class_names``, or a ``path`` not ending in ``.png``.
    """
    out = _png_path(path)
    fig = _splits_figure(
        {"data": (inputs, labels)}, title=title, class_names=class_names, single=True
    )
    return _save(fig, out)


def plot_splits(
    splits: Mapping[str, tuple[ArrayLike, ArrayLike]],
    path: PathLike,
    *,
    title: str | None = None,
    class_names: Sequence[str] | None = None,
) -> pathlib.Path:
    """Scatter several splits of a 2-D dataset side by side and write a PNG.

    The panels share their axes and class colours, so the splits compare at a
    glance.

    Args:
        splits: split name to ``(inputs, labels)``, e.g.
            ``{"train": (x_train, y_train), "test": (x_test, y_test)}``, with
            inputs of shape ``(n, 2)`` and labels of shape ``(n,)`` for each.
        path: where to write the PNG; must end in ``.png``.
        title: an optional title above all panels.
        class_names: optional names for the legend, indexed by class id.

    Returns:
        The path written, as a :class:`pathlib.Path`.

    Raises:
        ValueError: if ``splits`` is empty or a value is not a pair, or for any
            reason :func:`plot_dataset` gives.
    """
    out = _png_path(path)
    return _save(_splits_figure(splits, title=title, class_names=class_names), out)


def _predicted_classes(output: Any, n: int) -> NDArray[np.int64]:
    arr = np.asarray(output)
    if arr.ndim == 2:
        if arr.shape[0] != n or arr.shape[1] < 1:
            raise ValueError(
                f"predict returned logits of shape {arr.shape}; "
                f"expected ({n}, classes)."
            )
        return np.argmax(arr, axis=1).astype(np.int64)
    if arr.ndim == 1:
        if arr.shape[0] != n:
            raise ValueError(
                f"predict returned shape {arr.shape}; expected ({n},) class ids "
                f"or ({n}, classes) logits."
            )
        return _class_ids("predict output", arr)
    raise ValueError(
        f"predict returned shape {arr.shape}; expected ({n},) class ids or "
        f"({n}, classes) logits."
    )


def _decision_figure(
    predict: Callable[[NDArray[np.float32]], Any],
    inputs: ArrayLike,
    labels: ArrayLike,
    *,
    resolution: int = 200,
    margin: float = 0.1,
    title: str | None = None,
    class_names: Sequence[str] | None = None,
) -> Figure:
    points = _points("inputs", inputs)
    ids = _class_ids("labels", labels)
    _same_length("inputs", points, "labels", ids)
    if resolution < 2:
        raise ValueError(f"resolution must be >= 2, got {resolution}.")
    if not (math.isfinite(margin) and margin >= 0):
        raise ValueError(f"margin must be a finite number >= 0, got {margin}.")

    lo, hi = _bounds(points, margin)
    xs = np.linspace(lo[0], hi[0], resolution)
    ys = np.linspace(lo[1], hi[1], resolution)
    grid_x, grid_y = np.meshgrid(xs, ys)
    grid = np.stack([grid_x.ravel(), grid_y.ravel()], axis=1)
    # One call on grid and data together: a jitted predict compiles once.
    queries = np.concatenate([grid, points]).astype(np.float32)
    raw = np.asarray(predict(queries))
    predicted = _predicted_classes(raw, queries.shape[0])
    classes, on_data = predicted[: grid.shape[0]], predicted[grid.shape[0] :]
    k = _num_classes([ids, predicted], None, class_names)
    if raw.ndim == 2 and class_names is None:
        k = max(k, raw.shape[1])
    colors = _class_colors(k)

    fig = Figure(figsize=(5.5, 4.8), layout="constrained")
    ax = fig.subplots()
    ax.contourf(
        grid_x,
        grid_y,
        classes.reshape(grid_x.shape),
        levels=np.arange(k + 1) - 0.5,
        colors=colors,
        alpha=0.3,
    )
    _scatter_classes(ax, points, ids, colors, class_names)
    ax.set_xlim(lo[0], hi[0])
    ax.set_ylim(lo[1], hi[1])
    accuracy = float(np.mean(on_data == ids))
    summary = f"accuracy {accuracy:.1%} on the {points.shape[0]} points shown"
    ax.set_title(title if title is not None else summary)
    _finish_scatter_axes(ax, colors, class_names)
    return fig


def plot_decision_boundary(
    predict: Callable[[NDArray[np.float32]], Any],
    inputs: ArrayLike,
    labels: ArrayLike,
    path: PathLike,
    *,
    resolution: int = 200,
    margin: float = 0.1,
    title: str | None = None,
    class_names: Sequence[str] | None = None,
) -> pathlib.Path:
    """Shade the class a 2-D classifier predicts everywhere and write a PNG.

    ``predict`` is called once, on a ``resolution x resolution`` grid that covers
    the data plus ``margin`` followed by the data points themselves. The class it
    predicts on the grid is drawn as filled contours, and the points on top,
    coloured by their true label.

    Args:
        predict: maps float32 points of shape ``(m, 2)``, with
            ``m = resolution**2 + n``, to class ids of shape
            ``(m,)`` or to logits of shape ``(m, classes)`` (their argmax is
            taken). NumPy or JAX arrays both work, e.g.
            ``lambda x: jax.vmap(model)(jnp.asarray(x))``.
        inputs: the points, shape ``(n, 2)``.
        labels: their true class ids, shape ``(n,)``.
        path: where to write the PNG; must end in ``.png``.
        resolution: grid points per axis (``>= 2``).
        margin: padding around the data on each side, as a fraction of the
            data's extent along that axis.
        title: an optional title; defaults to the accuracy of ``predict`` on
            ``inputs``.
        class_names: optional names for the legend, indexed by class id.

    Returns:
        The path written, as a :class:`pathlib.Path`.

    Raises:
        ValueError: on a wrong shape, an empty or non-finite ``inputs``,
            mismatched lengths, a ``resolution < 2`` or negative ``margin``,
            ``predict`` output of the wrong shape, or a ``path`` not ending in
            ``.png``.
    """
    out = _png_path(path)
    fig = _decision_figure(
        predict,
        inputs,
        labels,
        resolution=resolution,
        margin=margin,
        title=title,
        class_names=class_names,
    )
    return _save(fig, out)


# --------------------------------------------------------------------------- #
# Image grids
# --------------------------------------------------------------------------- #


class _Caption(NamedTuple):
    """What one image in a sample grid is titled with, and in which colour."""

    text: str
    color: str
    mistake: bool


def _caption(
    label: int, prediction: int | None, class_names: Sequence[str] | None = None
) -> _Caption:
    """Title a sample: the prediction, and the true label in red if it is wrong."""
    true = _name(label, class_names)
    if prediction is None:
        return _Caption(true, _CORRECT, False)
    guess = _name(prediction, class_names)
    if prediction == label:
        return _Caption(guess, _CORRECT, False)
    sep = "\n" if len(guess) + len(true) > 10 else " "
    return _Caption(f"{guess}{sep}(true {true})", _MISTAKE, True)


def _display_images(images: ArrayLike) -> tuple[np.ndarray, float, float]:
    """Return images as ``(n, H, W)`` or ``(n, H, W, 3)`` plus the value range."""
    arr = np.asarray(images)
    if arr.ndim == 4:
        if arr.shape[1] == 1:
            arr = arr[:, 0]
        elif arr.shape[1] == 3:
            arr = np.moveaxis(arr, 1, -1)
        else:
            raise ValueError(
                "images must be channels-first with 1 or 3 channels, shape "
                f"(n, 1, H, W) or (n, 3, H, W), got {arr.shape}."
            )
    elif arr.ndim != 3:
        raise ValueError(
            "images must have shape (n, H, W), (n, 1, H, W) or (n, 3, H, W), "
            f"got {arr.shape}."
        )
    if arr.shape[0] == 0:
        raise ValueError("images is empty; need at least one image.")
    if arr.dtype == np.uint8:
        return arr, 0.0, 255.0
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise ValueError(f"images must be numeric, got dtype {arr.dtype}.")
    values = arr.astype(np.float32)
    finite = values[np.isfinite(values)]
    lo = float(finite.min()) if finite.size else 0.0
    hi = float(finite.max()) if finite.size else 1.0
    if hi <= lo:
        hi = lo + 1.0
    if values.ndim == 4:  # RGB floats must lie in [0, 1] for imshow
        values = np.clip((values - lo) / (hi - lo), 0.0, 1.0)
        lo, hi = 0.0, 1.0
    return values, lo, hi


def _samples_figure(
    images: ArrayLike,
    labels: ArrayLike,
    predictions: ArrayLike | None,
    *,
    class_names: Sequence[str] | None = None,
    ncols: int = 8,
    title: str | None = None,
) -> Figure:
    pixels, lo, hi = _display_images(images)
    true = _class_ids("labels", labels)
    _same_length("images", pixels, "labels", true)
    guess = None if predictions is None else _class_ids("predictions", predictions)
    if guess is not None:
        _same_length("labels", true, "predictions", guess)
    if ncols < 1:
        raise ValueError(f"ncols must be >= 1, got {ncols}.")
    seen = [true] if guess is None else [true, guess]
    if class_names is not None:
        _num_classes(seen, None, class_names)

    n = pixels.shape[0]
    cols = min(ncols, n)
    rows = math.ceil(n / cols)
    long_names = class_names is not None and max(map(len, class_names)) > 4
    cell_w = 1.5 if long_names else 1.2
    fig = Figure(figsize=(cols * cell_w, rows * 1.55 + 0.3), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    for i, ax in enumerate(axes.ravel()):
        if i >= n:
            ax.set_visible(False)
            continue
        ax.imshow(pixels[i], cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        cap = _caption(
            int(true[i]), None if guess is None else int(guess[i]), class_names
        )
        ax.set_title(cap.text, color=cap.color, fontsize=9)
        for spine in ax.spines.values():
            if cap.mistake:
                spine.set_edgecolor(_MISTAKE)
                spine.set_linewidth(2.5)
            else:
                spine.set_edgecolor("0.8")
                spine.set_linewidth(0.5)
    if guess is not None:
        wrong = int(np.sum(guess != true))
        summary = f"{wrong} of {n} wrong (red)" if wrong else f"all {n} right"
        fig.suptitle(summary if title is None else f"{title}: {summary}")
    elif title is not None:
        fig.suptitle(title)
    return fig


def plot_samples(
    images: ArrayLike,
    labels: ArrayLike,
    predictions: ArrayLike | None,
    path: PathLike,
    *,
    class_names: Sequence[str] | None = None,
    ncols: int = 8,
    title: str | None = None,
) -> pathlib.Path:
    """Draw a grid of images titled with their predicted class and write a PNG.

    A wrong prediction gets a red title that also gives the true class, e.g.
    ``"7 (true 2)"``, and a thick red frame. With ``predictions=None`` each image
    is titled with its label, which previews a dataset. Every image passed is
    drawn, so slice a batch first (e.g. ``images[:32]``).

    Args:
        images: shape ``(n, 1, H, W)`` or ``(n, 3, H, W)`` (channels-first, as
            zoo models take them) or ``(n, H, W)``; ``uint8`` in ``[0, 255]`` or
            floating point (shown from its minimum to its maximum).
        labels: true class ids, shape ``(n,)``.
        predictions: predicted class ids, shape ``(n,)``, or ``None``.
        path: where to write the PNG; must end in ``.png``.
        class_names: optional names indexed by class id, used in the titles.
        ncols: images per row.
        title: an optional title above the grid.

    Returns:
        The path written, as a :class:`pathlib.Path`.

    Raises:
        ValueError: on a wrong ``images`` shape or an empty batch, mismatched
            lengths, ids that are not non-negative integers or have no name in
            ``class_names``, ``ncols < 1``, or a ``path`` not ending in ``.png``.
    """
    out = _png_path(path)
    fig = _samples_figure(
        images, labels, predictions, class_names=class_names, ncols=ncols, title=title
    )
    return _save(fig, out)


# --------------------------------------------------------------------------- #
# Confusion matrix
# --------------------------------------------------------------------------- #


def confusion_matrix(
    labels: ArrayLike, predictions: ArrayLike, num_classes: int | None = None
) -> NDArray[np.int64]:
    """Count how often each true class is predicted as each class.

    Example:
        >>> confusion_matrix([0, 0, 1, 2], [0, 1, 1, 1], num_classes=3)
        array([[1, 1, 0],
               [0, 1, 0],
               [0, 1, 0]])

    Args:
        labels: true class ids ``>= 0``, shape ``(n,)``.
        predictions: predicted class ids ``>= 0``, shape ``(n,)``.
        num_classes: the number of classes ``k``; defaults to one more than the
            largest id in either array.

    Returns:
        ``int64`` counts of shape ``(k, k)``: entry ``[i, j]`` is the number of
        examples of true class ``i`` predicted as class ``j``, so rows sum to the
        class sizes and the diagonal holds the correct predictions.

    Raises:
        ValueError: if either array is not 1-D integer ids ``>= 0``, the lengths
            differ, an id is ``>= num_classes``, or ``num_classes`` is missing and
            the arrays are empty.
    """
    true = _class_ids("labels", labels)
    guess = _class_ids("predictions", predictions)
    _same_length("labels", true, "predictions", guess)
    k = _num_classes([true, guess], num_classes, None)
    counts = np.bincount(true * k + guess, minlength=k * k)
    return counts.reshape(k, k).astype(np.int64)


def _confusion_figure(
    labels: ArrayLike,
    predictions: ArrayLike,
    *,
    class_names: Sequence[str] | None = None,
    num_classes: int | None = None,
    title: str | None = None,
) -> Figure:
    if class_names is not None:
        true = _class_ids("labels", labels)
        guess = _class_ids("predictions", predictions)
        num_classes = _num_classes([true, guess], num_classes, class_names)
    counts = confusion_matrix(labels, predictions, num_classes)
    k = counts.shape[0]
    total = int(counts.sum())

    side = min(max(4.5, 0.45 * k + 2.5), 20.0)
    fig = Figure(figsize=(side + 0.8, side), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(counts, cmap="Blues", vmin=0, interpolation="nearest")
    fig.colorbar(image, ax=ax, shrink=0.8, label="count")
    names = [_name(i, class_names) for i in range(k)]
    ticks = np.arange(k)
    if class_names is None:
        ax.set_xticks(ticks, names)
    else:
        ax.set_xticks(ticks, names, rotation=45, ha="right", rotation_mode="anchor")
    ax.set_yticks(ticks, names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if k <= 30:
        top = counts.max()
        fontsize = 9 if k <= 12 else 7
        for i in range(k):
            for j in range(k):
                ax.text(
                    j,
                    i,
                    str(counts[i, j]),
                    ha="center",
                    va="center",
                    fontsize=fontsize,
                    color="white" if top and counts[i, j] > top / 2 else "black",
                )
    accuracy = float(np.trace(counts)) / total if total else float("nan")
    summary = f"accuracy {accuracy:.1%} of {total}" if total else "no examples"
    ax.set_title(summary if title is None else f"{title}\n{summary}")
    return fig


def plot_confusion(
    labels: ArrayLike,
    predictions: ArrayLike,
    path: PathLike,
    *,
    class_names: Sequence[str] | None = None,
    num_classes: int | None = None,
    title: str | None = None,
) -> pathlib.Path:
    """Draw a confusion matrix with the counts in its cells and write a PNG.

    Rows are true classes and columns predicted ones (see
    :func:`confusion_matrix`); the title gives the overall accuracy.

    Args:
        labels: true class ids ``>= 0``, shape ``(n,)``.
        predictions: predicted class ids ``>= 0``, shape ``(n,)``.
        path: where to write the PNG; must end in ``.png``.
        class_names: optional names for the axes, indexed by class id; sets the
            number of classes.
        num_classes: the number of classes; defaults to ``len(class_names)``, or
            one more than the largest id seen.
        title: an optional title above the accuracy.

    Returns:
        The path written, as a :class:`pathlib.Path`.

    Raises:
        ValueError: for any reason :func:`confusion_matrix` gives, if
            ``class_names`` and ``num_classes`` disagree, or if ``path`` does not
            end in ``.png``.
    """
    out = _png_path(path)
    fig = _confusion_figure(
        labels,
        predictions,
        class_names=class_names,
        num_classes=num_classes,
        title=title,
    )
    return _save(fig, out)
