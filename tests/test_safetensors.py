"""safetensors interchange: bitwise round trips, readable names, clear refusals."""

import json
import pathlib

import equinox as eqx
import jax
import numpy as np
import pytest
from safetensors.numpy import load_file, safe_open

import zoo
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
