"""In-memory datasets: MNIST, Fashion-MNIST, a 2-D toy set (CIFAR-10: load_cifar10).

Every loader returns an :class:`ArrayDataset`: NumPy arrays of inputs and
labels held in memory. MNIST-style images are ``uint8``, channels-first
``(N, 1, 28, 28)``; they are scaled to ``[0, 1]`` later, on device or by the
pipeline.
"""

import os
from typing import Literal

import numpy as np

from ._array_dataset import ArrayDataset as ArrayDataset
from ._cifar import load_cifar10
from ._download import fetch
from ._idx import DataError, read_idx

Split = Literal["train", "test"]

DIGIT_CLASS_NAMES: tuple[str, ...] = tuple(str(d) for d in range(10))
"""MNIST's class names: the digits ``"0"`` to ``"9"``."""

FASHION_MNIST_CLASS_NAMES: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
"""Fashion-MNIST's class names, indexed by label."""

_IDX_PREFIX = {"train": "train", "test": "t10k"}


def _check_split(split: str) -> None:
    if split not in _IDX_PREFIX:
        raise ValueError(f"Unknown split {split!r}; expected 'train' or 'test'.")


def _load_idx_pair(
    name: str,
    split: str,
    class_names: tuple[str, ...],
    data_dir: str | os.PathLike[str] | None,
) -> ArrayDataset:
    _check_split(split)
    folder = fetch(name, split=split, data_dir=data_dir)
    prefix = _IDX_PREFIX[split]
    images_path = folder / f"{prefix}-images-idx3-ubyte.gz"
    labels_path = folder / f"{prefix}-labels-idx1-ubyte.gz"
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.dtype != np.uint8 or images.ndim != 3:
        raise DataError(
            f"{images_path}: expected uint8 images of shape (N, H, W), got "
            f"{images.dtype}{list(images.shape)}. Delete it and run again to "
            "re-download, or set ZOO_DATA_DIR."
        )
    if labels.dtype != np.uint8 or labels.shape != images.shape[:1]:
        raise DataError(
            f"{labels_path}: expected {images.shape[0]} uint8 labels, got "
            f"{labels.dtype}{list(labels.shape)}. Delete it and run again to "
            "re-download, or set ZOO_DATA_DIR."
        )
    return ArrayDataset(
        inputs=images[:, None, :, :],
        labels=labels.astype(np.int32),
        class_names=class_names,
        name=f"{name}/{split}",
    )


def load_mnist(
    split: Split = "train", *, data_dir: str | os.PathLike[str] | None = None
) -> ArrayDataset:
    """Load MNIST, downloading and verifying it on first use.

    Args:
        split: ``"train"`` (60,000 images) or ``"test"`` (10,000).
        data_dir: the cache folder; defaults to ``$ZOO_DATA_DIR``, then
            ``$XDG_CACHE_HOME/zoo``, then ``~/.cache/zoo``.

    Returns:
        An :class:`ArrayDataset` with read-only ``uint8`` inputs of shape
        ``(N, 1, 28, 28)`` (0 = background, 255 = ink) and ``int32`` labels of
        shape ``(N,)`` in ``0..9``.

    Raises:
        ValueError: unknown split.
        DataError: the files cannot be downloaded, or are corrupt.
    """
    return _load_idx_pair("mnist", split, DIGIT_CLASS_NAMES, data_dir)


def load_fashion_mnist(
    split: Split = "train", *, data_dir: str | os.PathLike[str] | None = None
) -> ArrayDataset:
    """Load Fashion-MNIST, downloading and verifying it on first use.

    Args:
        split: ``"train"`` (60,000 images) or ``"test"`` (10,000).
        data_dir: the cache folder; defaults as for :func:`load_mnist`.

    Returns:
        An :class:`ArrayDataset` like MNIST's, ``(N, 1, 28, 28)`` ``uint8``
        images and ``int32`` labels, with :data:`FASHION_MNIST_CLASS_NAMES`.

    Raises:
        ValueError: unknown split.
        DataError: the files cannot be downloaded, or are corrupt.
    """
    return _load_idx_pair("fashion_mnist", split, FASHION_MNIST_CLASS_NAMES, data_dir)


def _blobs(
    rng: np.random.RandomState, n_per_blob: int, std: float
) -> tuple[np.ndarray, np.ndarray]:
    """Two Gaussian blobs, centres uniform in ``[-10, 10]^2``.

    The draws follow scikit-learn's ``make_blobs`` (centres first, then each
    blob's points from one legacy ``RandomState``), so a seed gives the centres
    the tutorial's ``random_state`` gives.
    """
    centres = rng.uniform(-10.0, 10.0, size=(2, 2))
    points = [rng.normal(loc=c, scale=std, size=(n_per_blob, 2)) for c in centres]
    labels = np.repeat(np.arange(2), n_per_blob)
    return np.concatenate(points), labels


def _circles(
    rng: np.random.RandomState, n_outer: int, n_inner: int, factor: float, noise: float
) -> tuple[np.ndarray, np.ndarray]:
    """Two concentric circles with Gaussian noise (as make_circles)."""

    def ring(n: int, radius: float) -> np.ndarray:
        angle = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
        return radius * np.stack([np.cos(angle), np.sin(angle)], axis=1)

    points = np.concatenate([ring(n_outer, 1.0), ring(n_inner, factor)])
    points = points + rng.normal(scale=noise, size=points.shape)
    labels = np.concatenate([np.zeros(n_outer, int), np.ones(n_inner, int)])
    return points, labels


def load_toy(split: Split = "train", *, seed: int = 42) -> ArrayDataset:
    """A 2-D, two-class toy set: two Gaussian blobs beside two nested circles.

    1,000 points: 200 from two blobs (centres uniform in ``[-10, 10]^2``,
    standard deviation 1.9, 100 per class) and 800 on two noisy concentric
    circles (600 on the outer circle, radius 1, class 0; 200 on the inner,
    radius 0.1, class 1; noise 0.05), the circles scaled by 3 and moved by
    ``(+2.5, -7)``. The points are shuffled and split 800/200 into train/test;
    one ``seed`` fixes everything, so both splits of a seed are disjoint.

    Args:
        split: ``"train"`` (800 points) or ``"test"`` (200).
        seed: the seed for the centres, the noise and the shuffle.

    Returns:
        An :class:`ArrayDataset` with ``float32`` inputs of shape ``(N, 2)``,
        ``int32`` labels of shape ``(N,)`` and class names ``("0", "1")``.

    Raises:
        ValueError: unknown split.
    """
    _check_split(split)
    blob_x, blob_y = _blobs(np.random.RandomState(seed), n_per_blob=100, std=1.9)
    ring_x, ring_y = _circles(
        np.random.RandomState(seed), n_outer=600, n_inner=200, factor=0.1, noise=0.05
    )
    rng = np.random.default_rng(seed)
    ring_x = ring_x * 3.0 + np.array([2.5, -7.0])
    inputs = np.concatenate([blob_x, ring_x]).astype(np.float32)
    labels = np.concatenate([blob_y, ring_y]).astype(np.int32)
    order = rng.permutation(len(labels))
    cut = len(labels) * 4 // 5
    chosen = order[:cut] if split == "train" else order[cut:]
    return ArrayDataset(
        inputs=inputs[chosen],
        labels=labels[chosen],
        class_names=("0", "1"),
        name=f"toy/{split}",
    )


DATASET_NAMES: tuple[str, ...] = ("mnist", "fashion_mnist", "toy", "cifar10")
"""The names :func:`load_dataset` accepts."""


def load_dataset(
    name: str, split: Split = "train", *, data_dir: str | os.PathLike[str] | None = None
) -> ArrayDataset:
    """Load a dataset by name.

    Args:
        name: one of :data:`DATASET_NAMES` (``"fashion-mnist"`` also works).
        split: ``"train"`` or ``"test"``.
        data_dir: the cache folder for downloaded datasets (the toy set ignores
            it).

    Returns:
        The :class:`ArrayDataset`, as the matching ``load_*`` function returns it.

    Raises:
        ValueError: unknown name or split.
        DataError: the files cannot be downloaded, or are corrupt.
    """
    key = name.replace("-", "_")
    if key == "mnist":
        return load_mnist(split, data_dir=data_dir)
    if key == "fashion_mnist":
        return load_fashion_mnist(split, data_dir=data_dir)
    if key == "toy":
        _check_split(split)
        return load_toy(split)
    if key == "cifar10":
        return load_cifar10(split, data_dir=data_dir)
    known = ", ".join(repr(n) for n in DATASET_NAMES)
    raise ValueError(f"Unknown dataset {name!r}; known datasets: {known}.")
