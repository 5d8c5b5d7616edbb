"""safetensors interchange: bitwise round trips, readable names, clear refusals."""

import json
import pathlib
import struct

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.core import Tracer
from safetensors.numpy import load_file, safe_open, save as save_bytes

import zoo
from zoo.models import _registry
from zoo.models._initialise import initialise
from zoo.models._safetensors import STATE_PREFIX, named_arrays


def _arrays(model: zoo.AbstractModel, state: eqx.nn.State) -> dict[str, np.ndarray]:
    return {k: np.asarray(v) for k, v in named_arrays(model, state).items()}


def _assert_bitwise(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert list(a) == list(b)
    for name in a:
        assert a[name].dtype == b[name].dtype, name
        assert a[name].tobytes() == b[name].tobytes(), name


@pytest.mark.parametrize("name", zoo.list_models())
def test_round_trip_is_bitwise_for_every_preset(name: str, tmp_path: pathlib.Path):
    model, state = zoo.create_model(name, key=jax.random.key(3))
    path = zoo.save_safetensors(tmp_path / f"{name}.safetensors", model, state)
    for like in (None, zoo.create_model(name, key=jax.random.key(4))):
        again, again_state = zoo.load_safetensors(path, like=like)
        assert again.config() == model.config()
        _assert_bitwise(_arrays(model, state), _arrays(again, again_state))
        assert eqx.tree_equal(jax.tree.structure(model), jax.tree.structure(again)), (
            "same pytree structure"
        )
    # The file itself: float32 parameters, config in the metadata.
    with safe_open(str(path), framework="numpy") as file:
        metadata = file.metadata()
    assert json.loads(metadata["config"]) == model.config()
    for tensor_name, array in load_file(path).items():
        if not tensor_name.endswith("batch_counter"):
            assert array.dtype == np.float32, tensor_name


def test_names_are_key_paths():
    model, state = zoo.create_model("stax_cnn", key=jax.random.key(0))
    names = list(named_arrays(model, state))
    assert names[0] == "blocks[0].conv.weight"
    assert "output.bias" in names
    assert f"{STATE_PREFIX}blocks[0].norm.batch_state_index[0]" in names
    assert f"{STATE_PREFIX}blocks[3].norm.batch_counter" in names
    mlp, empty = zoo.create_model("mlp", key=jax.random.key(0))
    assert list(named_arrays(mlp, empty)) == [
        f"layers[{i}].{p}" for i in range(3) for p in ("weight", "bias")
    ]


def test_trained_state_round_trips(tmp_path: pathlib.Path):
    model, state = zoo.create_model("stax_cnn", key=jax.random.key(0))
    x = jax.random.uniform(jax.random.key(1), (8, 1, 28, 28))
    _, moved = zoo.apply(model, x, state)  # running statistics move
    assert moved is not None
    state = moved
    path = zoo.save_safetensors(tmp_path / "m.safetensors", model, state)
    again, again_state = zoo.load_safetensors(path)
    _assert_bitwise(_arrays(model, state), _arrays(again, again_state))
    infer = eqx.nn.inference_mode(model)
    logits, _ = zoo.apply(infer, x, state)
    logits_again, _ = zoo.apply(eqx.nn.inference_mode(again), x, again_state)
    assert np.asarray(logits).tobytes() == np.asarray(logits_again).tobytes()


def test_another_config_is_refused_naming_the_tensor(tmp_path: pathlib.Path):
    model, state = zoo.create_model("mlp", key=jax.random.key(0))
    path = zoo.save_safetensors(tmp_path / "mlp.safetensors", model, state)
    narrow = zoo.create_model("mlp", key=jax.random.key(0), width_size=[256, 512])
    with pytest.raises(ValueError, match=r"layers\[0\]\.weight") as error:
        zoo.load_safetensors(path, like=narrow)
    assert "(512, 784)" in str(error.value)
    assert "(256, 784)" in str(error.value)
    cnn = zoo.create_model("stax_cnn", key=jax.random.key(0))
    with pytest.raises(ValueError, match=r"no tensor 'blocks\[0\]\.conv\.weight'"):
        zoo.load_safetensors(path, like=cnn)


def test_extra_tensors_are_refused(tmp_path: pathlib.Path):
    model, state = zoo.create_model("mlp", key=jax.random.key(0))
    path = zoo.save_safetensors(tmp_path / "mlp.safetensors", model, state)
    shallow = zoo.create_model("mlp", key=jax.random.key(0), width_size=[512])
    with pytest.raises(ValueError, match=r"layers\[1\]\.weight"):
        zoo.load_safetensors(path, like=shallow)


def test_not_a_safetensors_file_is_refused(tmp_path: pathlib.Path):
    path = tmp_path / "junk.safetensors"
    path.write_bytes(b"not a safetensors file at all")
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        zoo.load_safetensors(path)


def test_save_replaces_atomically(tmp_path: pathlib.Path):
    model, state = zoo.create_model("toy_mlp", key=jax.random.key(0))
    path = tmp_path / "toy.safetensors"
    zoo.save_safetensors(path, model, state)
    zoo.save_safetensors(path, model, state)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["toy.safetensors"]


def test_a_config_is_checked_against_the_tensors_before_anything_is_built(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
):
    # 120-odd bytes whose config asks for 40,000 hidden units (125 MB of
    # float32): refused from the header, the model built as shapes only.
    config = {"family": "MLP", "in_size": 784, "out_size": 10, "width_size": [40000]}
    path = tmp_path / "small.safetensors"
    path.write_bytes(save_bytes({}, metadata={"config": json.dumps(config)}))
    assert path.stat().st_size < 130
    built: list[bool] = []  # per build: was the model's key a concrete array?

    def spy(constructor, kwargs, key):
        built.append(not isinstance(key, Tracer))
        return initialise(constructor, kwargs, key)

    monkeypatch.setattr(_registry, "initialise", spy)
    with pytest.raises(ValueError, match=r"no tensor 'layers\[0\]\.weight'") as error:
        zoo.load_safetensors(path)
    assert "(40000, 784) float32" in str(error.value)
    assert built == [False]  # traced for its shapes, never run


def test_loading_without_like_builds_nothing_concretely(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
):
    model, state = zoo.create_model("stax_cnn", key=jax.random.key(0))
    path = zoo.save_safetensors(tmp_path / "cnn.safetensors", model, state)
    built: list[bool] = []

    def spy(constructor, kwargs, key):
        built.append(not isinstance(key, Tracer))
        return initialise(constructor, kwargs, key)

    monkeypatch.setattr(_registry, "initialise", spy)
    again, again_state = zoo.load_safetensors(path)
    assert built == [False]  # the arrays are the file's own
    _assert_bitwise(_arrays(model, state), _arrays(again, again_state))


def test_a_header_that_lies_about_its_length_is_refused(tmp_path: pathlib.Path):
    path = tmp_path / "liar.safetensors"
    path.write_bytes(struct.pack("<Q", 1 << 40) + b"{}")
    with pytest.raises(ValueError, match="past the end of its 10 bytes"):
        zoo.load_safetensors(path)


def test_save_refuses_what_it_cannot_write_and_writes_nothing(tmp_path: pathlib.Path):
    # Each once failed deep inside with a KeyError or an AttributeError, or
    # named a hidden temporary file.
    cnn, _ = zoo.create_model("stax_cnn", key=jax.random.key(0))
    mlp, mlp_state = zoo.create_model("mlp", key=jax.random.key(0))
    file = tmp_path / "m.safetensors"
    refused = [
        ((file, cnn, mlp_state), ValueError, r"The state passed is not CNN's"),
        ((file, cnn, None), ValueError, r"CNN is stateful \(BatchNorm\): pass"),
        ((mlp, mlp_state, file), TypeError, r"got State \(the arguments are \(path"),
        ((file, eqx.nn.Linear(2, 2, key=jax.random.key(0)), None), TypeError,
         r"save_safetensors takes a zoo model"),
        ((tmp_path / "no" / "m.safetensors", mlp, mlp_state), FileNotFoundError,
         r"The folder .*no does not exist: create it first"),
        ((tmp_path, mlp, mlp_state), IsADirectoryError, r"is a folder"),
    ]  # fmt: skip
    for args, error, message in refused:
        with pytest.raises(error, match=message):
            zoo.save_safetensors(*args)  # pyright: ignore[reportArgumentType]
    assert list(tmp_path.iterdir()) == []
    zoo.save_safetensors(file, mlp, None)  # a stateless model needs no state
    again, _ = zoo.load_safetensors(file)
    assert again.config() == mlp.config()


def test_weights_holding_nan_are_refused_and_nothing_is_written(tmp_path):
    model, state = zoo.create_model("stax_cnn", key=jax.random.key(0))
    assert isinstance(model, zoo.CNN)
    weight = model.blocks[1].conv.weight
    broken = eqx.tree_at(lambda m: m.blocks[1].conv.weight, model,
                         weight.at[0, 0, 0, :2].set(jnp.inf))  # fmt: skip
    file = tmp_path / "m.safetensors"
    file.write_bytes(b"an earlier file")
    message = (r"save_safetensors: the weights hold NaN or infinite values, in "
               r"model\.blocks\[1\]\.conv\.weight \(2 of \d+\); nothing was "
               r"written")  # fmt: skip
    with pytest.raises(ValueError, match=message):
        zoo.save_safetensors(file, broken, state)
    assert file.read_bytes() == b"an earlier file"
    assert list(tmp_path.iterdir()) == [file]
