"""Tests for zoo.plot: every figure is a readable PNG, written atomically."""

import pathlib

import jax.numpy as jnp
import matplotlib.colors
import matplotlib.image
import numpy as np
import pytest
from matplotlib.figure import Figure

from zoo.plot import (
    _caption,
    _curves_figure,
    _samples_figure,
    confusion_matrix,
    plot_confusion,
    plot_curves,
    plot_dataset,
    plot_decision_boundary,
    plot_samples,
    plot_splits,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
RED = matplotlib.colors.to_rgba("tab:red")

HISTORY = [
    {
        "epoch": e,
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
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


def blobs(n: int = 40) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    labels = np.arange(n) % 2
    points = rng.normal(size=(n, 2)) + 3.0 * labels[:, None]
    return points.astype(np.float32), labels


# --------------------------------------------------------------------------- #
# confusion_matrix
# --------------------------------------------------------------------------- #


def test_confusion_matrix_hand_computed():
    labels = [0, 0, 1, 1, 1, 2, 2, 0]
    predictions = [0, 1, 1, 1, 2, 2, 0, 0]
    expected = np.array(
        [
            [2, 1, 0],  # true 0: predicted 0, 1, 0
            [0, 2, 1],  # true 1: predicted 1, 1, 2
            [1, 0, 1],  # true 2: predicted 2, 0
        ]
    )
    got = confusion_matrix(labels, predictions, num_classes=3)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, expected)


def test_confusion_matrix_infers_and_pads_classes():
    got = confusion_matrix(np.array([1, 1]), jnp.array([1, 3]))
    np.testing.assert_array_equal(got.shape, (4, 4))
    assert got[1, 1] == 1 and got[1, 3] == 1 and got.sum() == 2
    padded = confusion_matrix([0], [0], num_classes=5)
    assert padded.shape == (5, 5) and padded[0, 0] == 1 and padded.sum() == 1
    empty = confusion_matrix(np.zeros(0, np.int64), np.zeros(0, np.int64), 2)
    np.testing.assert_array_equal(empty, np.zeros((2, 2)))


@pytest.mark.parametrize(
    ("labels", "predictions", "num_classes", "message"),
    [
        ([0, 1, 2], [0, 1], None, "same length"),
        ([[0, 1]], [[0, 1]], None, "1-D"),
        ([0, 1], [0, 0.5], None, "integer"),
        ([0, -1], [0, 1], None, ">= 0"),
        ([0, 3], [0, 1], 3, "out of range"),
        ([], [], None, "num_classes"),
    ],
)
def test_confusion_matrix_rejects_bad_input(labels, predictions, num_classes, message):
    with pytest.raises(ValueError, match=message):
        confusion_matrix(labels, predictions, num_classes)


def test_plot_confusion_writes_png(tmp_path):
    labels = np.array([0, 1, 2, 2, 1, 0])
    path = plot_confusion(
        labels,
        np.array([0, 2, 2, 2, 1, 1]),
        tmp_path / "confusion.png",
        class_names=["cat", "dog", "bird"],
        title="toy",
    )
    assert path == tmp_path / "confusion.png"
    assert_png(path)
    with pytest.raises(ValueError, match="class_names"):
        plot_confusion(labels, labels, tmp_path / "bad.png", class_names=["a", "b"])


# --------------------------------------------------------------------------- #
# plot_curves
# --------------------------------------------------------------------------- #


def test_plot_curves_writes_png_and_creates_parents(tmp_path):
    target = tmp_path / "runs" / "mlp" / "curves.png"
    path = plot_curves(HISTORY, str(target), title="MLP")
    assert isinstance(path, pathlib.Path) and path == target
    assert_png(path)


def test_curves_draw_train_and_test_against_one_based_epochs():
    fig = _curves_figure(HISTORY)
    loss, accuracy = fig.axes
    assert loss.get_title() == "loss" and accuracy.get_title() == "accuracy"
    assert [line.get_label() for line in loss.get_lines()] == ["train", "test"]
    np.testing.assert_array_equal(loss.get_lines()[0].get_xdata(), [1, 2, 3])
    np.testing.assert_allclose(
        np.asarray(accuracy.get_lines()[1].get_ydata(), dtype=np.float64),
        [e["test_accuracy"] for e in HISTORY],
    )


def test_curves_skip_missing_keys():
    history = [{"epoch": 0, "train_loss": 0.5}, {"epoch": 1, "train_loss": 0.4}]
    fig = _curves_figure(history)
    assert len(fig.axes) == 1
    assert [line.get_label() for line in fig.axes[0].get_lines()] == ["train"]
    partial = [dict(HISTORY[0]), {"epoch": 1, "train_loss": 0.3}]
    test_line = _curves_figure(partial).axes[0].get_lines()[1]
    np.testing.assert_array_equal(test_line.get_xdata(), [1])


@pytest.mark.parametrize(
    ("history", "message"),
    [
        ([], "empty"),
        ({"train_loss": [0.1]}, "list of per-epoch dicts"),
        ([0.1, 0.2], "must be a dict"),
        ([{"epoch": 0, "train_seconds": 1.0}], "no '\\*loss' or '\\*accuracy'"),
        ([{"epoch": 0, "train_loss": "low"}], "must be a number"),
    ],
)
def test_plot_curves_rejects_bad_history(tmp_path, history, message):
    with pytest.raises(ValueError, match=message):
        plot_curves(history, tmp_path / "curves.png")
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- #
# 2-D datasets and decision boundaries
# --------------------------------------------------------------------------- #


def test_plot_dataset_and_splits_write_png(tmp_path):
    points, labels = blobs()
    assert_png(plot_dataset(points, labels, tmp_path / "data.png", title="blobs"))
    splits = {"train": (points[:30], labels[:30]), "test": (points[30:], labels[30:])}
    assert_png(plot_splits(splits, tmp_path / "splits.png", class_names=["a", "b"]))


@pytest.mark.parametrize(
    ("inputs", "labels", "message"),
    [
        (np.zeros((4, 3)), np.zeros(4, np.int64), "shape \\(n, 2\\)"),
        (np.zeros((0, 2)), np.zeros(0, np.int64), "empty"),
        (np.zeros((4, 2)), np.zeros(3, np.int64), "same length"),
        (np.full((2, 2), np.nan), np.zeros(2, np.int64), "NaN"),
        (np.zeros((2, 2)), np.zeros((2, 1), np.int64), "1-D"),
    ],
)
def test_plot_dataset_rejects_bad_input(tmp_path, inputs, labels, message):
    with pytest.raises(ValueError, match=message):
        plot_dataset(inputs, labels, tmp_path / "data.png")


def test_plot_splits_rejects_bad_splits(tmp_path):
    with pytest.raises(ValueError, match="non-empty"):
        plot_splits({}, tmp_path / "splits.png")
    with pytest.raises(ValueError, match="pair"):
        plot_splits({"train": np.zeros((3, 2))}, tmp_path / "splits.png")  # type: ignore[dict-item]


def test_plot_decision_boundary_calls_predict_once_on_grid_and_data(tmp_path):
    points, labels = blobs()
    seen: list[np.ndarray] = []

    def predict(x: np.ndarray) -> np.ndarray:
        seen.append(x)
        return (x.sum(axis=1) > 3.0).astype(np.int32)

    path = plot_decision_boundary(
        predict, points, labels, tmp_path / "ids.png", resolution=16
    )
    assert_png(path)
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

    path = plot_decision_boundary(
        predict, jnp.asarray(points), labels, tmp_path / "logits.png", resolution=12
    )
    assert_png(path)


@pytest.mark.parametrize(
    ("output", "kwargs", "message"),
    [
        (lambda x: np.zeros((x.shape[0], 2, 2)), {}, "predict returned shape"),
        (lambda x: np.zeros(x.shape[0] - 1, np.int64), {}, "predict returned shape"),
        (lambda x: np.full(x.shape[0], 0.5), {}, "integer"),
        (lambda x: np.zeros(x.shape[0], np.int64), {"resolution": 1}, "resolution"),
        (lambda x: np.zeros(x.shape[0], np.int64), {"margin": -0.1}, "margin"),
    ],
)
def test_plot_decision_boundary_rejects_bad_input(tmp_path, output, kwargs, message):
    points, labels = blobs()
    kwargs = {"resolution": 8, **kwargs}
    with pytest.raises(ValueError, match=message):
        plot_decision_boundary(output, points, labels, tmp_path / "b.png", **kwargs)


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


def test_samples_figure_frames_mistakes_in_red():
    images = np.zeros((3, 1, 6, 6), np.uint8)
    fig = _samples_figure(images, [1, 2, 3], [1, 5, 3], ncols=2)
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert len(axes) == 3 and len(fig.axes) == 4  # 2 x 2 grid, one cell hidden
    wrong = axes[1]
    assert wrong.get_title() == "5 (true 2)"
    assert matplotlib.colors.to_rgba(wrong.title.get_color()) == RED
    assert all(s.get_edgecolor() == RED for s in wrong.spines.values())
    assert matplotlib.colors.to_rgba(axes[0].title.get_color()) != RED
    assert all(s.get_edgecolor() != RED for s in axes[0].spines.values())
    assert isinstance(fig, Figure)
    assert fig.get_suptitle() == "1 of 3 wrong (red)"


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
    path = plot_samples(
        images,
        np.array([0, 1, 2, 3]),
        np.array([0, 1, 3, 3]),
        tmp_path / "samples.png",
        class_names=["zero", "one", "two", "three"],
        ncols=3,
    )
    assert_png(path)


def test_plot_samples_without_predictions(tmp_path):
    images = np.zeros((2, 5, 5), np.uint8)
    assert_png(plot_samples(images, [0, 1], None, tmp_path / "preview.png"))


@pytest.mark.parametrize(
    ("images", "labels", "predictions", "kwargs", "message"),
    [
        (np.zeros((2, 2, 5, 5)), [0, 1], [0, 1], {}, "1 or 3 channels"),
        (np.zeros((5, 5)), [0], [0], {}, "shape"),
        (np.zeros((0, 5, 5)), [], [], {}, "empty"),
        (np.zeros((2, 5, 5)), [0], [0, 1], {}, "same length"),
        (np.zeros((2, 5, 5)), [0, 1], [0], {}, "same length"),
        (np.zeros((2, 5, 5)), [0, 1], [0, 1], {"ncols": 0}, "ncols"),
        (np.zeros((2, 5, 5)), [0, 1], [0, 2], {"class_names": ["a", "b"]}, "range"),
    ],
)
def test_plot_samples_rejects_bad_input(
    tmp_path, images, labels, predictions, kwargs, message
):
    with pytest.raises(ValueError, match=message):
        plot_samples(images, labels, predictions, tmp_path / "s.png", **kwargs)


# --------------------------------------------------------------------------- #
# Writing
# --------------------------------------------------------------------------- #


def test_write_replaces_file_and_leaves_no_temp_files(tmp_path):
    target = tmp_path / "curves.png"
    target.write_bytes(b"old")
    plot_curves(HISTORY, target)
    plot_curves(HISTORY[:1], target)
    assert_png(target)
    assert [p.name for p in tmp_path.iterdir()] == ["curves.png"]


def test_failed_render_keeps_old_file_and_leaves_no_temp_files(tmp_path, monkeypatch):
    target = tmp_path / "curves.png"
    target.write_bytes(b"old")

    def broken(self, *args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(Figure, "savefig", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        plot_curves(HISTORY, target)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["curves.png"]


def test_path_must_end_in_png(tmp_path):
    with pytest.raises(ValueError, match=r"\.png"):
        plot_curves(HISTORY, tmp_path / "curves.pdf")
    assert list(tmp_path.iterdir()) == []
