"""zoo.summary: layers, output shapes, parameter counts, FLOPs and memory."""

import json
import pathlib

import equinox as eqx
import jax
import jax.numpy as jnp
import pytest

import zoo
from zoo.models import ModelSummary, build_model

WEIGHTS = pathlib.Path(zoo.__file__).parent / "weights"
CARDS = sorted(WEIGHTS.glob("*.json"))


def test_there_are_cards_to_check():
    assert len(CARDS) >= 7


@pytest.mark.parametrize("card", CARDS, ids=[c.stem for c in CARDS])
def test_parameter_counts_agree_with_the_model_cards(card):
    meta = json.loads(card.read_text(encoding="utf-8"))
    model, state = build_model(meta["config"], key=jax.random.key(0))
    s = zoo.summary(model, state)
    assert s.parameters == meta["parameter_count"]
    # Every parameter is in exactly one row.
    assert sum(layer.parameters for layer in s.layers) == s.parameters
    assert all(layer.name != "(other)" for layer in s.layers)
    assert s.parameter_bytes == 4 * s.parameters  # float32
    assert s.flops is not None and s.flops > s.parameters
    assert s.layers[-1].output_shape == (meta["config"]["out_size"],)


def test_the_readme_table_counts_agree():
    readme = (pathlib.Path(__file__).parent.parent / "README.md").read_text(
        encoding="utf-8"
    )
    checked = 0
    for line in readme.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not cells[0].startswith("`"):
            continue
        name, count = cells[0].strip("`"), cells[2].replace(",", "")
        if name not in zoo.list_models() or not count.isdigit():
            continue
        model, state = zoo.create_model(name, key=jax.random.key(0))
        assert zoo.summary(model, state).parameters == int(count), name
        checked += 1
    assert checked >= 5


def test_mlp_rows_shapes_and_flops():
    model, state = zoo.create_model("mlp", key=jax.random.key(0))
    s = zoo.summary(model, state)
    assert isinstance(s, ModelSummary)
    assert [(r.name, r.output_shape, r.parameters) for r in s.layers] == [
        ("layers[0]", (512,), 784 * 512 + 512),
        ("layers[1]", (512,), 512 * 512 + 512),
        ("layers[2]", (10,), 512 * 10 + 10),
    ]
    assert s.state == 0 and s.state_bytes == 0
    # A dense layer costs about two FLOPs (multiply, add) per weight.
    assert s.flops is not None
    assert 2 * 669_706 * 0.9 < s.flops < 2 * 669_706 * 1.2
    text = str(s)
    assert text.startswith("MLP on input (784,)")
    for part in ["layers[0]", "(512,)", "401,920", "669,706", "FLOPs per example"]:
        assert part in text


def test_state_is_counted_apart_and_built_when_left_out():
    model, state = zoo.create_model("cnn", key=jax.random.key(0))
    given = zoo.summary(model, state)
    built = zoo.summary(model)
    assert given == built
    running = sum(int(x.size) for x in jax.tree.leaves(state))
    assert given.state == running > 0
    assert given.parameters == 390_634
    assert [r.output_shape for r in given.layers[:3]] == [
        (32, 14, 14),
        (64, 7, 7),
        (128, 3, 3),
    ]


def test_resnet_rows_include_the_pooling():
    model, state = zoo.create_model("resnet8", key=jax.random.key(0))
    rows = {r.name: r for r in zoo.summary(model, state).layers}
    assert rows["global average pool"].output_shape == (64,)
    assert rows["global average pool"].parameters == 0
    assert rows["stem"].output_shape == (16, 28, 28)


def test_any_equinox_module_with_an_input_shape():
    mlp = eqx.nn.MLP(4, 3, width_size=8, depth=1, key=jax.random.key(0))
    with pytest.raises(ValueError, match="input_shape"):
        zoo.summary(mlp)
    s = zoo.summary(mlp, input_shape=(4,))
    assert s.parameters == 4 * 8 + 8 + 8 * 3 + 3
    assert [r.name for r in s.layers] == ["layers[0]", "layers[1]"]
    assert all(r.output_shape is None for r in s.layers)
    assert s.flops is not None and s.flops > 0
    assert "-" in str(s)


def test_bfloat16_parameters_take_half_the_memory():
    model, state = zoo.create_model("mlp", dtype="bfloat16", key=jax.random.key(0))
    s = zoo.summary(model, state)
    assert s.parameter_bytes == 2 * s.parameters
    assert jnp.dtype(jax.tree.leaves(model)[0].dtype) == jnp.bfloat16
