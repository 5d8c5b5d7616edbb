"""Training curves: one metric per epoch, train and test on one Axes."""

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, PercentFormatter

from .._checks import checked
from ._figure import axes_or_new


@checked
def plot_curves(
    history: Sequence[Any],
    metric: str = "loss",
    *,
    ax: Axes | None = None,
    title: str | None = None,
) -> Figure:
    """Plot one metric per epoch, one line per split (train, test, ...).

    Takes the history that [`zoo.fit`][] returns (``EpochRecord``s) or its JSON
    form (one dict per epoch). Every key ending in ``metric`` (``train_loss``,
    ``test_loss``, ...) is drawn as a line labelled by its prefix; epochs where a
    key is missing or ``None`` are left out of that line. Epochs count from 1,
    as in ``metrics.json`` and the logs (an ``EpochRecord``, 0-based in Python,
    is read through its ``to_json``); an entry without ``"epoch"`` counts by
    its position. An ``accuracy`` within ``[0, 1]`` is shown in percent.

    Args:
        history: one record per epoch: a dict, e.g. ``{"epoch": 1,
            "train_loss": 0.31, "test_loss": 0.12, ...}``, or a dataclass such
            as ``zoo.train.EpochRecord``.
        metric: the suffix of the keys to draw, e.g. ``"loss"`` or ``"accuracy"``.
        ax: the Axes to draw on; ``None``: a new figure.
        title: the Axes' title; defaults to ``metric``.

    Returns:
        The figure drawn on.

    Raises:
        ValueError: ``history`` is empty or holds something other than dicts or
            dataclasses, a value is not a number, or no key ends in ``metric``.
    """
    records = _records(history)
    epochs = []
    for i, record in enumerate(records):
        epoch = record.get("epoch", i + 1)
        try:
            epochs.append(float(epoch))
        except (TypeError, ValueError):
            raise ValueError(
                f"history[{i}]['epoch'] must be a number, got {epoch!r}."
            ) from None
    keys = sorted({k for r in records for k in r if k.endswith(metric)}, key=_order)
    series = {key: _series(records, epochs, key) for key in keys}
    series = {key: xy for key, xy in series.items() if xy[0]}
    if not series:
        raise ValueError(
            f"history has no '*{metric}' entries to plot, e.g. 'train_{metric}'."
        )

    fig, ax = axes_or_new(ax, (5.0, 4.0))
    marker = "o" if len(records) <= 50 else None
    for key, (xs, ys) in series.items():
        label = key[: -len(metric)].rstrip("_") or key
        ax.plot(xs, ys, marker=marker, markersize=3, label=label)
    ax.set_title(metric if title is None else title)
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    ticks = sorted(set(epochs))
    if len(ticks) <= 20:
        ax.set_xticks(ticks)
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if len(ticks) == 1:
        ax.set_xlim(ticks[0] - 0.5, ticks[0] + 0.5)
    ax.grid(True, alpha=0.3)
    ax.legend()
    values = [y for _, ys in series.values() for y in ys]
    if metric.endswith("accuracy") and all(0.0 <= y <= 1.0 for y in values):
        ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0))
    return fig


def _records(history: Sequence[Any]) -> list[Mapping[str, Any]]:
    if isinstance(history, str | bytes) or len(history) == 0:
        raise ValueError("history is empty or not a list; need one record per epoch.")
    records = []
    for i, entry in enumerate(history):
        if callable(to_json := getattr(entry, "to_json", None)):
            entry = to_json()  # an EpochRecord: its JSON form counts from 1
        elif dataclasses.is_dataclass(entry) and not isinstance(entry, type):
            entry = dataclasses.asdict(entry)
        if not isinstance(entry, Mapping):
            raise ValueError(
                f"history[{i}] must be a dict or a dataclass (one epoch's record), "
                f"got {type(entry).__name__}."
            )
        records.append(entry)
    return records


def _series(
    records: list[Mapping[str, Any]], epochs: list[float], key: str
) -> tuple[list[float], list[float]]:
    xs: list[float] = []
    ys: list[float] = []
    for i, record in enumerate(records):
        value = record.get(key)
        if value is None:
            continue
        try:
            ys.append(float(value))
        except (TypeError, ValueError):
            raise ValueError(
                f"history[{i}][{key!r}] must be a number, got {value!r}."
            ) from None
        xs.append(epochs[i])
    return xs, ys


def _order(key: str) -> tuple[int, str]:
    for rank, prefix in enumerate(("train", "val", "test")):
        if key.startswith(prefix):
            return rank, key
    return 3, key
