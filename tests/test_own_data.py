"""Your own data in one line: arrays as they come, or a refusal that shows how."""

import pathlib
import re
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import zoo
from zoo.data import ArrayDataset
from zoo.train._data_arg import as_dataset

REPO = pathlib.Path(__file__).resolve().parent.parent
THE_LINE = r"Build one with: \w+ = zoo\.data\.ArrayDataset\(x, y\)"


def two_blobs(n: int = 200, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Separable 2-D points and their labels as sklearn gives them (int64)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, size=n)  # int64, like sklearn's targets
    x = rng.normal(size=(n, 2)).astype(np.float32) + 3.0 * y[:, None]
    return x.astype(np.float32), y


def test_int64_labels_are_held_as_int32():
    x, y = two_blobs()
    assert y.dtype == np.int64
    data = ArrayDataset(x, y)
    assert data.labels.dtype == np.int32
    np.testing.assert_array_equal(data.labels, y)


@pytest.mark.parametrize("dtype", [np.int8, np.uint8, np.int16, np.uint16, np.uint64])
def test_any_integer_dtype_that_fits_is_accepted(dtype):
    data = ArrayDataset(np.zeros((3, 2), np.float32), np.array([0, 2, 1], dtype))
    assert data.labels.dtype == np.int32
    assert data.labels.tolist() == [0, 2, 1]


def test_jax_arrays_are_accepted():
    data = ArrayDataset(jnp.zeros((3, 2)), jnp.array([0, 1, 1]))
    assert isinstance(data.inputs, np.ndarray) and isinstance(data.labels, np.ndarray)
    assert data.labels.dtype == np.int32


def test_class_names_and_name_default():
    x, _ = two_blobs(4)
    data = ArrayDataset(x, np.array([0, 3, 1, 3]))
    assert data.class_names == ("0", "1", "2", "3")
    assert data.name == "arrays"
    named = ArrayDataset(x, np.array([0, 1, 1, 0]), ["cat", "dog"], name="pets")
    assert named.class_names == ("cat", "dog") and named.name == "pets"
    # take() keeps the names (it rebuilds the dataset through __init__).
    assert named.take(2).class_names == ("cat", "dog")
    assert named.take(2).name == "pets[:2]"


def test_labels_that_do_not_fit_in_int32_are_refused():
    x = np.zeros((2, 2), np.float32)
    with pytest.raises(ValueError, match=r"do not fit in int32: number the classes"):
        ArrayDataset(x, np.array([0, 2**31], np.int64))
    with pytest.raises(ValueError, match=r"do not fit in int32"):
        ArrayDataset(x, np.array([-(2**31) - 1, 0], np.int64))


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.bool_])
def test_non_integer_labels_are_refused_saying_what_to_do(dtype):
    with pytest.raises(TypeError, match=r"labels must be integer class indices.*"
                       r"y\.astype\(np\.int32\)"):  # fmt: skip
        ArrayDataset(np.zeros((2, 2), np.float32), np.array([0, 1], dtype))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_inputs_are_refused_naming_the_examples(bad, tmp_path):
    # Trained on, one NaN pixel makes every weight NaN; evaluated, it makes
    # a wrong count that looks like a result.
    x = np.zeros((6, 1, 2, 2), np.float32)
    x[2, 0, 1, 0] = x[4, 0, 0, 0] = bad
    y = np.zeros(6, np.int32)
    message = r"inputs of 2 example\(s\) hold a NaN or an infinity \(first: example 2\)"
    with pytest.raises(ValueError, match=message + r".*np\.isfinite\(x\)\.all\("):
        ArrayDataset(x, y)
    model, state = zoo.create_model("mlp", in_size=4, out_size=2, key=jax.random.key(0))
    for call in (
        lambda: zoo.evaluate(model, state, (x, y)),
        lambda: zoo.fit(model, state, (x, y), optax.sgd(0.1), epochs=1,
                        batch_size=2, checkpoint_dir=tmp_path / "run"),
    ):  # fmt: skip
        with pytest.raises(ValueError, match=message):
            call()
    assert not (tmp_path / "run").exists()  # refused before anything is written
    ArrayDataset(np.where(np.isfinite(x), x, 0), y)  # repaired, taken


def test_bad_shapes_and_kinds_are_refused_clearly():
    x = np.zeros((3, 2), np.float32)
    with pytest.raises(ValueError, match=r"labels have shape \(4,\), expected \(3,\)"):
        ArrayDataset(x, np.zeros(4, np.int32))
    with pytest.raises(ValueError, match=r"One-hot labels\? Pass y\.argmax\(axis=1\)"):
        ArrayDataset(x, np.eye(3, dtype=np.int32))
    with pytest.raises(
        TypeError, match=r"inputs must be a NumPy or JAX array, got list"
    ):
        ArrayDataset([[0.0, 1.0]], np.zeros(1, np.int32))
    with pytest.raises(TypeError, match=r"class_names must be a sequence of str"):
        ArrayDataset(x, np.zeros(3, np.int32), "abc")


def test_fit_and_evaluate_take_x_y_tuples():
    x, y = two_blobs()
    model, state = zoo.create_model("toy_mlp", key=jax.random.key(0))
    result = zoo.fit(
        model, state, (x, y), optax.adam(1e-2), epochs=10, batch_size=50,
        test_data=(x[:100], y[:100]), callbacks=[],
    )  # fmt: skip
    assert len(result.history) == 10
    assert result.history[-1].test_accuracy is not None
    scores = zoo.evaluate(result.model, result.state, (x, y))
    assert scores["count"] == len(x) and scores["accuracy"] > 0.9
    # The same as the dataset built by hand.
    by_hand = zoo.evaluate(result.model, result.state, ArrayDataset(x, y))
    assert by_hand == scores


def test_a_tuple_is_never_taken_for_a_dataset_of_two():
    # It used to say "batch_size 128 exceeds the 2 training examples".
    x, y = two_blobs()
    model, state = zoo.create_model("toy_mlp", key=jax.random.key(0))
    result = zoo.fit(model, state, (x, y), optax.sgd(0.0), epochs=1, callbacks=[])
    assert result.step == len(x) // 128


@pytest.mark.parametrize(
    ("value", "got"),
    [
        ((np.zeros((4, 2)),), "a tuple of 1 item"),
        ((np.zeros((4, 2)), np.zeros(4), np.zeros(4)), "a tuple of 3 items"),
        ([np.zeros((4, 2)), np.zeros(4, np.int32)], "a list of 2"),
        (np.zeros((4, 2)), "an array alone"),
        ((np.zeros((4, 2)), [0, 1, 0, 1]), r"a tuple of \(ndarray, list\)"),
        ({"x": 1}, "dict"),
    ],
)
def test_anything_else_is_refused_with_the_line_that_works(value, got):
    with pytest.raises(TypeError, match=rf"got {got}.*{THE_LINE}"):
        as_dataset(value, "train_data")


def test_fit_and_evaluate_refuse_other_data_before_any_work():
    model, state = zoo.create_model("toy_mlp", key=jax.random.key(0))
    x = np.zeros((4, 2), np.float32)
    alone: Any = x  # what a type checker would refuse, passed anyway
    pair: Any = [x, x]
    with pytest.raises(TypeError, match=r"train_data must be .*" + THE_LINE):
        zoo.fit(model, state, pair, optax.sgd(0.1), epochs=1, callbacks=[])
    with pytest.raises(TypeError, match=r"test_data must be .*" + THE_LINE):
        zoo.fit(
            model, state, (x, np.zeros(4, np.int64)), optax.sgd(0.1), epochs=1,
            batch_size=2, test_data=alone, callbacks=[],
        )  # fmt: skip
    with pytest.raises(TypeError, match=r"dataset must be .*" + THE_LINE):
        zoo.evaluate(model, state, alone)


def own_data_block(marker: str) -> str:
    """The Python block after ``<!-- test: marker -->`` in docs/own-data.md."""
    text = (REPO / "docs" / "own-data.md").read_text(encoding="utf-8")
    match = re.search(rf"<!-- test: {marker} -->\n```python\n(.*?)```", text, re.S)
    assert match is not None, f"docs/own-data.md has no block marked {marker}"
    return match.group(1)


def test_the_documented_arrays_train(capsys):
    exec(compile(own_data_block("own-arrays"), "docs/own-data.md", "exec"), {})
    out = capsys.readouterr().out
    assert float(re.findall(r"'accuracy': ([\d.]+)", out)[-1]) > 0.9, out


def test_the_documented_own_model_trains(capsys):
    exec(compile(own_data_block("own-model"), "docs/own-data.md", "exec"), {})
    assert capsys.readouterr().out.strip().splitlines()[-1] == "512"


def test_the_documented_folder_reader_reads_a_folder(tmp_path):
    image = pytest.importorskip("PIL.Image")
    colours = {"blue": (0, 0, 255), "red": (255, 0, 0)}
    for name, colour in colours.items():
        (tmp_path / name).mkdir()
        for i in range(4):
            image.new("RGB", (40, 30), colour).save(tmp_path / name / f"{i}.png")
    namespace: dict[str, Any] = {}
    exec(compile(own_data_block("read-folder"), "docs/own-data.md", "exec"), namespace)
    data = namespace["load_folder"](tmp_path)
    assert data.inputs.shape == (8, 3, 32, 32) and data.inputs.dtype == np.uint8
    assert data.labels.tolist() == [0] * 4 + [1] * 4
    assert data.class_names == ("blue", "red")
    assert data.inputs[0, :, 0, 0].tolist() == [0, 0, 255]
    model, state = zoo.create_model(
        "cnn", in_channels=3, image_size=32, out_size=2, key=jax.random.key(0)
    )
    result = zoo.fit(model, state, data, optax.adam(1e-3), epochs=1, batch_size=8,
                     callbacks=[])  # fmt: skip
    assert result.step == 1
