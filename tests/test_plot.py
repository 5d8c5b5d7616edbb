"""Tests for zoo.plot: figures drawn on given or new axes, saved as PNG atomically."""

import dataclasses
import pathlib

import jax.numpy as jnp
import matplotlib.colors
import matplotlib.image
import numpy as np
import pytest
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter

from zoo.plot import (
    plot_confusion,
    plot_curves,
    plot_dataset,
    plot_decision_boundary,
    plot_samples,
    save_png,
)
from zoo.plot._samples import _caption
from zoo.train import confusion_matrix

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
RED = matplotlib.colors.to_rgba("tab:red")

HISTORY = [
    {
        "epoch": e + 1,
        "train_seconds": 1.5,
        "train_loss": 1.0 / (e + 1),
        "train_accuracy": 0.8 + 0.05 * e,
        "test_loss": 1.2 / (e + 1),
        "test_accuracy": 0.78 + 0.05 * e,
        "examples_per_second": 40_000.0,
    }
    for e in range(3)
]


def assert_png(path: pathlib.Path) -> None:
    """``path`` holds a PNG that Matplotlib reads back, with no temp file beside it."""
    assert path.is_file()
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    pixels = matplotlib.image.imread(path)
    assert pixels.ndim == 3 and pixels.shape[0] > 0 and pixels.shape[1] > 0
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(".")] == []


def blobs(n: int = 40) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    labels = np.arange(n) % 2
    points = rng.normal(size=(n, 2)) + 3.0 * labels[:, None]
    return points.astype(np.float32), labels


# --------------------------------------------------------------------------- #
# save_png and composition
# --------------------------------------------------------------------------- #


def test_save_png_writes_and_creates_parents(tmp_path):
    target = tmp_path / "runs" / "mlp" / "loss.png"
    path = save_png(plot_curves(HISTORY), str(target))
    assert isinstance(path, pathlib.Path) and path == target
    assert_png(path)


def test_save_png_replaces_the_file_and_leaves_no_temp_files(tmp_path):
    target = tmp_path / "curves.png"
    target.write_bytes(b"old")
    save_png(plot_curves(HISTORY), target)
    save_png(plot_curves(HISTORY[:1]), target)
    assert_png(target)
    assert [p.name for p in tmp_path.iterdir()] == ["curves.png"]


def test_failed_render_keeps_old_file_and_leaves_no_temp_files(tmp_path, monkeypatch):
    target = tmp_path / "curves.png"
    target.write_bytes(b"old")
    fig = plot_curves(HISTORY)

    def broken(self, *args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(Figure, "savefig", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        save_png(fig, target)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["curves.png"]


@pytest.mark.parametrize("name", ["curves.pdf", "curves", "curves.png.tmp"])
def test_save_png_refuses_other_formats(tmp_path, name):
    with pytest.raises(ValueError, match=r"must end in '\.png'.*" + name):
        save_png(plot_curves(HISTORY), tmp_path / name)
    assert list(tmp_path.iterdir()) == []


def test_plots_compose_on_the_axes_of_one_figure(tmp_path):
    points, labels = blobs()
    fig = Figure(figsize=(12, 4), layout="constrained")
    subfigures = fig.subfigures(1, 2)
    assert isinstance(subfigures, np.ndarray)
    left, right = subfigures
    loss_ax, accuracy_ax = left.subplots(1, 2)
    data_ax = right.subplots()
    assert plot_curves(HISTORY, "loss", ax=loss_ax) is fig
    assert plot_curves(HISTORY, "accuracy", ax=accuracy_ax) is fig
    assert plot_dataset(points, labels, ax=data_ax, title="blobs") is fig
    assert [ax.get_title() for ax in fig.axes] == ["loss", "accuracy", "blobs"]
    assert_png(save_png(fig, tmp_path / "all.png"))


# --------------------------------------------------------------------------- #
# plot_curves
# --------------------------------------------------------------------------- #


def test_curves_draw_train_and_test_against_one_based_epochs():
    loss = plot_curves(HISTORY).axes[0]
    assert loss.get_title() == "loss"
    assert [line.get_label() for line in loss.get_lines()] == ["train", "test"]
    np.testing.assert_array_equal(loss.get_lines()[0].get_xdata(), [1, 2, 3])
    accuracy = plot_curves(HISTORY, "accuracy", title="acc").axes[0]
    assert accuracy.get_title() == "acc"
    np.testing.assert_allclose(
        np.asarray(accuracy.get_lines()[1].get_ydata(), dtype=np.float64),
        [e["test_accuracy"] for e in HISTORY],
    )
    assert isinstance(accuracy.yaxis.get_major_formatter(), PercentFormatter)


def test_curves_skip_missing_keys():
    partial = [dict(HISTORY[0]), {"epoch": 2, "train_loss": 0.3}]
    train, test = plot_curves(partial).axes[0].get_lines()
    np.testing.assert_array_equal(train.get_xdata(), [1, 2])
    np.testing.assert_array_equal(test.get_xdata(), [1])


def test_curves_take_dataclass_records():
    @dataclasses.dataclass
    class Record:
        epoch: int
        train_loss: float
        test_loss: float | None = None

    fig = plot_curves([Record(1, 0.5), Record(2, 0.4, 0.45)])
    _, test = fig.axes[0].get_lines()
    np.testing.assert_array_equal(test.get_xdata(), [2])


def test_curves_number_epoch_records_from_one_as_the_files_do():
    from zoo.train import EpochRecord

    records = [EpochRecord(e, 1.0, 0.5, 0.8, 100.0) for e in range(2)]
    (train,) = plot_curves(records).axes[0].get_lines()
    np.testing.assert_array_equal(train.get_xdata(), [1, 2])


@pytest.mark.parametrize(
    ("history", "metric", "message"),
    [
        ([], "loss", "empty"),
        ([0.1, 0.2], "loss", "must be a dict or a dataclass"),
        ([{"epoch": 0, "train_seconds": 1.0}], "loss", r"no '\*loss' entries"),
        ([{"epoch": 0, "train_loss": 0.5}], "accuracy", r"no '\*accuracy'"),
        ([{"epoch": 0, "train_loss": "low"}], "loss", "must be a number"),
        ([{"epoch": "x", "train_loss": 0.1}], "loss", "'epoch'.*number"),
    ],
)
def test_plot_curves_rejects_bad_history(history, metric, message):
    with pytest.raises(ValueError, match=message):
        plot_curves(history, metric)


def test_plot_curves_type_checks_its_arguments():
    with pytest.raises(TypeError, match="history"):
        plot_curves({"train_loss": [0.1]})  # pyright: ignore[reportArgumentType]
    with pytest.raises(TypeError, match="metric"):
        plot_curves(HISTORY, 1)  # pyright: ignore[reportArgumentType]


# --------------------------------------------------------------------------- #
# 2-D datasets and decision boundaries
# --------------------------------------------------------------------------- #


def test_plot_dataset_colours_classes_and_names_them():
    points, labels = blobs()
    ax = plot_dataset(points, jnp.asarray(labels), class_names=["a", "b"]).axes[0]
    assert ax.get_title() == "40 points"
    legend = ax.get_legend()
    assert legend is not None
    assert [t.get_text() for t in legend.get_texts()] == ["a", "b"]
    assert len(ax.collections) == 2  # one scatter per class


@pytest.mark.parametrize(
    ("inputs", "labels", "error", "message"),
    [
        (np.zeros((4, 3)), np.zeros(4, np.int64), TypeError, "inputs"),
        (np.zeros((4, 2)), np.zeros(3, np.int64), TypeError, "labels"),
        (np.zeros((2, 2)), np.zeros((2, 1), np.int64), TypeError, "labels"),
        (np.zeros((2, 2)), np.zeros(2, np.float32), TypeError, "labels"),
        (np.zeros((0, 2)), np.zeros(0, np.int64), ValueError, "empty"),
        (np.full((2, 2), np.nan), np.zeros(2, np.int64), ValueError, "NaN"),
        (np.zeros((2, 2)), np.array([0, -1]), ValueError, ">= 0"),
    ],
)
def test_plot_dataset_rejects_bad_input(inputs, labels, error, message):
    with pytest.raises(error, match=message):
        plot_dataset(inputs, labels)


def test_plot_dataset_refuses_labels_without_names():
    points, labels = blobs()
    with pytest.raises(ValueError, match="class_names"):
        plot_dataset(points, labels, class_names=["only one"])


def test_plot_decision_boundary_calls_predict_once_on_grid_and_data():
    points, labels = blobs()
    seen: list[np.ndarray] = []

    def predict(x: np.ndarray) -> np.ndarray:
        seen.append(x)
        return (x.sum(axis=1) > 3.0).astype(np.int32)

    fig = plot_decision_boundary(predict, points, labels, resolution=16)
    assert fig.axes[0].get_title().startswith("accuracy ")
    assert len(seen) == 1
    assert seen[0].dtype == np.float32 and seen[0].shape == (16 * 16 + 40, 2)
    # The grid covers the data plus the margin on every side.
    assert np.all(seen[0].min(axis=0) < points.min(axis=0))
    assert np.all(seen[0].max(axis=0) > points.max(axis=0))


def test_plot_decision_boundary_accepts_jax_logits(tmp_path):
    points, labels = blobs()
    weights = jnp.array([[1.0, -1.0, 0.0], [1.0, -1.0, 0.5]], dtype=jnp.float32)

    def predict(x: np.ndarray) -> jnp.ndarray:
        return jnp.asarray(x) @ weights

    fig = plot_decision_boundary(predict, jnp.asarray(points), labels, resolution=12)
    assert_png(save_png(fig, tmp_path / "logits.png"))


@pytest.mark.parametrize(
    ("output", "kwargs", "error", "message"),
    [
        (lambda x: np.zeros((x.shape[0], 2, 2)), {}, ValueError, "predict returned"),
        (lambda x: np.zeros(x.shape[0] - 1, np.int64), {}, ValueError, "returned"),
        (lambda x: np.full(x.shape[0], 0.5), {}, ValueError, "integer class ids"),
        (
            lambda x: np.zeros(x.shape[0], np.int64),
            {"resolution": 1},
            ValueError,
            ">= 2",
        ),
        (
            lambda x: np.zeros(x.shape[0], np.int64),
            {"margin": -0.1},
            ValueError,
            "margin",
        ),
        (
            lambda x: np.zeros(x.shape[0], np.int64),
            {"resolution": 8.0},
            TypeError,
            "resolution",
        ),
    ],
)
def test_plot_decision_boundary_rejects_bad_input(output, kwargs, error, message):
    points, labels = blobs()
    kwargs = {"resolution": 8, **kwargs}
    with pytest.raises(error, match=message):
        plot_decision_boundary(output, points, labels, **kwargs)


# --------------------------------------------------------------------------- #
# Image grids
# --------------------------------------------------------------------------- #


def test_caption_marks_mistakes():
    right = _caption(label=3, prediction=3)
    assert right == ("3", "black", False)
    wrong = _caption(label=2, prediction=7)
    assert wrong.text == "7 (true 2)"
    assert wrong.mistake and matplotlib.colors.to_rgba(wrong.color) == RED
    named = _caption(label=0, prediction=1, class_names=["Ankle boot", "Sneaker"])
    assert named.mistake and named.text.split() == [
        "Sneaker",
        "(true",
        "Ankle",
        "boot)",
    ]
    assert _caption(label=4, prediction=None) == ("4", "black", False)


def test_samples_title_each_image_and_frame_mistakes_in_red():
    images = np.zeros((3, 1, 6, 6), np.uint8)
    fig = plot_samples(images, np.array([1, 2, 3]), np.array([1, 5, 3]), ncols=2)
    [ax] = fig.axes
    assert [t.get_text() for t in ax.texts] == ["1", "5 (true 2)", "3"]
    colors = [matplotlib.colors.to_rgba(t.get_color()) for t in ax.texts]
    assert [c == RED for c in colors] == [False, True, False]
    frames = [matplotlib.colors.to_rgba(p.get_edgecolor()) for p in ax.patches]
    assert [c == RED for c in frames] == [False, True, False]
    assert ax.get_title() == "1 of 3 wrong (red)"
    # a 2 x 2 grid: the image holds two rows and two columns of cells
    grid = ax.get_images()[0].get_array()
    assert grid is not None and grid.shape[1] == 2 * (6 + 1)


@pytest.mark.parametrize(
    "images",
    [
        np.arange(4 * 28 * 28, dtype=np.uint8).reshape(4, 1, 28, 28),
        np.linspace(-1.0, 1.0, 4 * 8 * 8, dtype=np.float32).reshape(4, 8, 8),
        np.random.default_rng(0).random((4, 3, 8, 8)),
        jnp.zeros((4, 1, 8, 8), jnp.float32),
    ],
    ids=["uint8-chw", "float-hw", "rgb-chw", "jax-constant"],
)
def test_plot_samples_writes_png(tmp_path, images):
    fig = plot_samples(
        images,
        np.array([0, 1, 2, 3]),
        jnp.array([0, 1, 3, 3]),
        class_names=["zero", "one", "two", "three"],
        ncols=3,
        title="test",
    )
    assert fig.axes[0].get_title() == "test: 1 of 4 wrong (red)"
    assert_png(save_png(fig, tmp_path / "samples.png"))


def test_plot_samples_without_predictions():
    fig = plot_samples(np.zeros((2, 5, 5), np.uint8), np.array([0, 1]))
    assert [t.get_text() for t in fig.axes[0].texts] == ["0", "1"]
    assert fig.axes[0].get_title() == ""


@pytest.mark.parametrize(
    ("images", "labels", "predictions", "kwargs", "error", "message"),
    [
        (np.zeros((2, 2, 5, 5)), [0, 1], [0, 1], {}, ValueError, "1 or 3 channels"),
        (np.zeros((5, 5)), [0], [0], {}, TypeError, "images"),
        (np.zeros((0, 5, 5)), [], [], {}, ValueError, "empty"),
        (np.zeros((2, 5, 5)), [0], [0, 1], {}, TypeError, "labels"),
        (np.zeros((2, 5, 5)), [0, 1], [0], {}, TypeError, "predictions"),
        (np.zeros((2, 5, 5)), [0, 1], [0, 1], {"ncols": 0}, ValueError, "ncols"),
        (
            np.zeros((2, 5, 5)),
            [0, 1],
            [0, 2],
            {"class_names": ["a", "b"]},
            ValueError,
            "range",
        ),
    ],
)
def test_plot_samples_rejects_bad_input(
    images, labels, predictions, kwargs, error, message
):
    labels, predictions = np.array(labels, np.int64), np.array(predictions, np.int64)
    with pytest.raises(error, match=message):
        plot_samples(images, labels, predictions, **kwargs)


# --------------------------------------------------------------------------- #
# Confusion matrix
# --------------------------------------------------------------------------- #


def test_plot_confusion_draws_the_counts():
    counts = confusion_matrix(
        jnp.array([0, 1, 2, 2, 1, 0]), jnp.array([0, 2, 2, 2, 1, 1]), num_classes=3
    )
    fig = plot_confusion(counts, class_names=["cat", "dog", "bird"], title="toy")
    ax = fig.axes[0]
    assert len(fig.axes) == 2  # and a colour bar
    assert ax.get_title() == "toy\naccuracy 66.7% of 6"
    cells = [t.get_text() for t in ax.texts]
    assert cells == [str(c) for c in np.asarray(counts).ravel()]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["cat", "dog", "bird"]


def test_plot_confusion_on_given_axes_adds_no_colour_bar():
    fig = Figure()
    ax = fig.subplots()
    assert plot_confusion(np.zeros((2, 2), np.int64), ax=ax) is fig
    assert fig.axes == [ax] and ax.get_title() == "no examples"


@pytest.mark.parametrize(
    ("counts", "kwargs", "error", "message"),
    [
        (np.zeros((2, 3), np.int64), {}, TypeError, "counts"),
        (np.zeros((2, 2)), {}, TypeError, "counts"),
        (np.zeros((0, 0), np.int64), {}, ValueError, "non-empty"),
        (-np.ones((2, 2), np.int64), {}, ValueError, ">= 0"),
        (
            np.zeros((3, 3), np.int64),
            {"class_names": ["a", "b"]},
            ValueError,
            "2 names",
        ),
    ],
)
def test_plot_confusion_rejects_bad_input(counts, kwargs, error, message):
    with pytest.raises(error, match=message):
        plot_confusion(counts, **kwargs)
