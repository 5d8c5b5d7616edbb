"""Figures for training runs, drawn with Matplotlib.

Each ``plot_*`` function draws on a Matplotlib ``Axes`` given as ``ax=``, or on a
new figure of a suitable size when there is none, and returns the ``Figure``.
[`save_png`][zoo.plot.save_png] writes a figure as a PNG, atomically. Pyplot is
never imported: figures are made with Matplotlib's object API, so these
functions leave the caller's pyplot state and backend alone and work on machines
without a display. Array arguments are NumPy or JAX arrays; their shapes and
dtypes are checked like a model's inputs (see [`zoo.runtime.shape_checks`][]).

Compose figures by passing axes: draw several panels on one figure, then save it
once.

Example:
    >>> import pathlib, tempfile
    >>> from matplotlib.figure import Figure
    >>> history = [
    ...     {"epoch": 1, "train_loss": 0.9, "test_loss": 0.7,
    ...      "train_accuracy": 0.71, "test_accuracy": 0.80},
    ...     {"epoch": 2, "train_loss": 0.5, "test_loss": 0.4,
    ...      "train_accuracy": 0.86, "test_accuracy": 0.88},
    ... ]
    >>> fig = Figure(figsize=(10, 4), layout="constrained")
    >>> for ax, metric in zip(fig.subplots(1, 2), ["loss", "accuracy"]):
    ...     _ = plot_curves(history, metric, ax=ax)
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = save_png(fig, pathlib.Path(tmp) / "runs" / "curves.png")
    ...     print(path.name, path.read_bytes()[:4])
    curves.png b'\\x89PNG'
"""

try:
    import matplotlib as _matplotlib  # noqa: F401
except ModuleNotFoundError as error:  # Matplotlib is an optional dependency
    if error.name is None or error.name.partition(".")[0] != "matplotlib":
        raise
    raise ModuleNotFoundError(
        "zoo.plot draws its figures with Matplotlib, which is not installed. "
        "Install zoo with the plot extra: pip install 'typed-zoo[plot]' "
        "(from a clone: pip install -e '.[plot]'), or pip install matplotlib.",
        name="matplotlib",
    ) from error

from ._confusion import plot_confusion as plot_confusion
from ._curves import plot_curves as plot_curves
from ._figure import save_png as save_png
from ._samples import plot_samples as plot_samples
from ._scatter import (
    plot_dataset as plot_dataset,
    plot_decision_boundary as plot_decision_boundary,
)
