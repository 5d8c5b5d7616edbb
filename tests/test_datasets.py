"""Dataset loaders: MNIST, Fashion-MNIST and the toy set."""

import dataclasses
import pathlib
import shutil

import grain
import numpy as np
import pytest

from zoo.data import (
    DATASET_NAMES,
    FASHION_MNIST_CLASS_NAMES,
    ArrayDataset,
    DataError,
    load_dataset,
    load_fashion_mnist,
    load_mnist,
    load_toy,
)


def test_mnist_train(mnist_train: ArrayDataset) -> None:
    assert mnist_train.inputs.shape == (60_000, 1, 28, 28)
    assert mnist_train.inputs.dtype == np.uint8
    assert mnist_train.labels.shape == (60_000,)
    assert mnist_train.labels.dtype == np.int32
    assert mnist_train.class_names == tuple("0123456789")
    assert mnist_train.name == "mnist/train"
    assert len(mnist_train) == 60_000
    # The first training labels of MNIST, as published.
    np.testing.assert_array_equal(mnist_train.labels[:8], [5, 0, 4, 1, 9, 2, 1, 3])
    assert int(mnist_train.inputs.max()) == 255


def test_mnist_test(mnist_test: ArrayDataset) -> None:
    assert mnist_test.inputs.shape == (10_000, 1, 28, 28)
    np.testing.assert_array_equal(mnist_test.labels[:5], [7, 2, 1, 0, 4])
    counts = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert np.bincount(mnist_test.labels).tolist() == counts


def test_inputs_are_read_only(mnist_test: ArrayDataset) -> None:
    with pytest.raises(ValueError, match="read-only"):
        mnist_test.inputs[0, 0, 0, 0] = 1


def test_record_access_and_grain_source(mnist_test: ArrayDataset) -> None:
    record = mnist_test[3]
    assert record["inputs"].shape == (1, 28, 28)
    assert int(record["labels"]) == 0
    first = next(iter(grain.MapDataset.source(mnist_test)))
    np.testing.assert_array_equal(first["inputs"], mnist_test.inputs[0])


def test_frozen(mnist_test: ArrayDataset) -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        mnist_test.name = "other"  # type: ignore[misc]


def test_fashion_mnist(data_dir: pathlib.Path) -> None:
    test = load_fashion_mnist("test", data_dir=data_dir)
    assert test.inputs.shape == (10_000, 1, 28, 28)
    assert test.class_names == FASHION_MNIST_CLASS_NAMES
    assert test.class_names[0] == "T-shirt/top"
    assert test.class_names[9] == "Ankle boot"
    assert np.bincount(test.labels).tolist() == [1000] * 10
    assert test.name == "fashion_mnist/test"


def test_load_dataset_by_name(data_dir: pathlib.Path) -> None:
    assert DATASET_NAMES == ("mnist", "fashion_mnist", "toy", "cifar10")
    assert load_dataset("mnist", "test", data_dir=data_dir).name == "mnist/test"
    assert load_dataset("fashion-mnist", "test").name == "fashion_mnist/test"
    toy = load_dataset("toy", "test")
    np.testing.assert_array_equal(toy.inputs, load_toy("test").inputs)
    with pytest.raises(ValueError, match="Unknown dataset"):
        load_dataset("cifar100", "train")
    with pytest.raises(ValueError, match="Unknown split"):
        load_dataset("toy", "valid")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="Unknown split"):
        load_mnist("validation", data_dir=data_dir)  # type: ignore[arg-type]


def test_corrupt_cached_file_raises_data_error(
    data_dir: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    folder = tmp_path / "mnist"
    folder.mkdir()
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        shutil.copy(data_dir / "mnist" / name, folder / name)
    labels = folder / "t10k-labels-idx1-ubyte.gz"
    labels.write_bytes(labels.read_bytes()[:-10])
    with pytest.raises(DataError, match="SHA-256 mismatch") as info:
        load_mnist("test", data_dir=tmp_path)
    assert str(labels) in str(info.value)


def test_toy_shapes_and_balance() -> None:
    train, test = load_toy("train"), load_toy("test")
    assert train.inputs.shape == (800, 2)
    assert test.inputs.shape == (200, 2)
    assert train.inputs.dtype == np.float32
    assert train.labels.dtype == np.int32
    assert train.class_names == ("0", "1")
    labels = np.concatenate([train.labels, test.labels])
    assert np.bincount(labels).tolist() == [700, 300]  # blobs 100/100, rings 600/200


def test_toy_is_deterministic_and_disjoint() -> None:
    a, b = load_toy("train", seed=42), load_toy("train", seed=42)
    np.testing.assert_array_equal(a.inputs, b.inputs)
    np.testing.assert_array_equal(a.labels, b.labels)
    other = load_toy("train", seed=0)
    assert not np.array_equal(a.inputs, other.inputs)
    test = load_toy("test", seed=42)
    rows = {tuple(x) for x in a.inputs.tolist()}
    assert rows.isdisjoint(tuple(x) for x in test.inputs.tolist())


def test_toy_geometry() -> None:
    everything = [load_toy(split) for split in ("train", "test")]
    inputs = np.concatenate([d.inputs for d in everything])
    labels = np.concatenate([d.labels for d in everything])
    # Ring points sit at radius ~3 (outer, class 0) or ~0.3 (inner, class 1)
    # around (2.5, -7), with noise of standard deviation 0.15 after scaling.
    radius = np.linalg.norm(inputs - np.array([2.5, -7.0], np.float32), axis=1)
    outer = np.abs(radius - 3.0) < 0.75
    inner = radius < 1.0
    assert 595 <= outer.sum() <= 640  # 600, give or take a stray blob point
    assert 198 <= inner.sum() <= 210
    assert (labels[outer] == 0).mean() > 0.95
    assert (labels[inner] == 1).mean() > 0.95


def test_array_dataset_validates() -> None:
    with pytest.raises(ValueError, match="labels have shape"):
        ArrayDataset(np.zeros((3, 2)), np.zeros(4, np.int32), ("a",), "bad")
    with pytest.raises(TypeError, match="labels must be integer class indices"):
        ArrayDataset(np.zeros((3, 2)), np.zeros(3, np.float32), ("a",), "bad")
