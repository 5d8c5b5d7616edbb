"""Stage features (``intermediates``) and headless models (``out_size=0``)."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import zoo
from tests import helpers
from zoo.models._cnn import conv_output_size

SMALL_IMAGE = 32
"""The side a 224x224 preset is built at here (its family's maths is the same)."""


def _build(name: str) -> tuple[zoo.AbstractModel, eqx.nn.State]:
    """Preset ``name``, at a small image size where its default is 224x224."""
    config = zoo.models.model_spec(name).config
    overrides = {}
    if list(config.get("image_size", [])) == [224, 224]:
        overrides["image_size"] = [SMALL_IMAGE, SMALL_IMAGE]
    try:
        return helpers.make_model(name, 0, **overrides)
    except ValueError as error:
        pytest.skip(f"{name} cannot be built at {SMALL_IMAGE}x{SMALL_IMAGE}: {error}")


def _staged(name: str) -> tuple[zoo.AbstractModel, eqx.nn.State]:
    """A preset with stages; only an MLP may lack them."""
    model, state = _build(name)
    if not hasattr(model, "intermediates"):
        assert isinstance(model, zoo.MLP), f"{name} has no `intermediates` method"
        pytest.skip(f"{name} is an MLP: no stages (zoo.features covers it)")
    return model, state


def _expected_shapes(model: zoo.AbstractModel) -> list[tuple[int, ...] | None]:
    """Each stage's shape from the config alone (``None``: checked by relation)."""
    config = model.config()
    family = config["family"]
    if family == "CNN":
        assert isinstance(model, zoo.CNN)
        size = tuple(model.image_size)
        shapes: list[tuple[int, ...] | None] = []
        for i, channels in enumerate(model.channels):
            size = tuple(
                conv_output_size(
                    s, model.kernel_sizes[i], model.strides[i], model.paddings[i]
                )
                // model.pool_sizes[i]
                for s in size
            )
            shapes.append((channels, *size))
        return shapes
    if family == "ResNet":
        return [None] * len(config["depths"])
    if family == "ViT":
        return [None] * int(config["depth"])
    raise AssertionError(f"no expected stage shapes for family {family!r}")


def _rest_of_network(model: zoo.AbstractModel, last: jax.Array) -> jax.Array:
    """The features the head sees, computed from the last stage (one example)."""
    family = model.config()["family"]
    if family == "CNN":
        assert isinstance(model, zoo.CNN)
        act = zoo.models._abstract.get_activation(model.activation)
        h = jnp.ravel(last)
        for layer in model.hidden:
            h = act(layer(h))
        return h
    if family == "ResNet":
        return jnp.mean(last, axis=(1, 2))
    if family == "ViT":  # the final LayerNorm of the class token or the mean
        assert isinstance(model, zoo.ViT)
        return model.pool_tokens(last)
    raise AssertionError(f"no rest-of-network for family {family!r}")


@pytest.mark.parametrize("name", zoo.list_models())
def test_stages_of_every_preset_have_their_shapes_and_give_the_logits(name: str):
    model, state = _staged(name)
    x = helpers.random_inputs(model, 2, seed=1)
    maps = zoo.models.intermediates(model, x, state)
    expected = _expected_shapes(model)
    assert len(maps) == len(expected)
    for stage, (got, want) in enumerate(zip(maps, expected, strict=True)):
        assert got.dtype == jnp.float32
        assert got.shape[0] == 2
        if want is not None:
            assert got.shape[1:] == want, (name, stage)
    features = zoo.features(model, x, state)
    config = model.config()
    if config["family"] == "ResNet":
        # The map shrinks by each stage's stride; the last stage's channels
        # are the pooled features.
        for i in range(1, len(maps)):
            h, w = maps[i - 1].shape[2:]
            stride = config["strides"][i]
            assert maps[i].shape[2:] == (math.ceil(h / stride), math.ceil(w / stride))
        assert maps[-1].shape[1] == features.shape[1]
    if config["family"] == "ViT":  # (tokens, dim): any class token, then patches
        patch = config["patch_size"]
        height, width = config["image_size"]
        class_tokens = 1 if config.get("pool", "token") == "token" else 0
        tokens = class_tokens + (height // patch) * (width // patch)
        assert {m.shape[1:] for m in maps} == {(tokens, features.shape[1])}
    # The last stage, through the rest of the network: the features, then
    # through the head: the logits of the full forward.
    rest = jax.vmap(lambda m: _rest_of_network(model, m))(maps[-1])
    helpers.assert_close(rest, features, rtol=1e-5)
    logits, _ = zoo.apply(eqx.nn.inference_mode(model), x, state)
    head = zoo.models._transfer.head(model)
    helpers.assert_close(jax.vmap(head)(rest), logits, rtol=1e-5)


@pytest.mark.parametrize("name", ["stax_cnn", "lenet5"])
def test_each_cnn_stage_feeds_the_next_block(name: str):
    model, state = zoo.create_model(name, key=jax.random.key(0))
    assert isinstance(model, zoo.CNN)
    x = helpers.random_inputs(model, 2, seed=3)
    maps = zoo.models.intermediates(model, x, state)
    plain = eqx.nn.inference_mode(zoo.models.with_conv_path(model, "xla"))
    # The other conv path gives the same maps, channels-first too.
    for a, b in zip(maps, zoo.models.intermediates(plain, x, state), strict=True):
        helpers.assert_close(a, b, rtol=1e-5)
    inputs = [x, *maps[:-1]]
    for block, before, after in zip(plain.blocks, inputs, maps, strict=True):
        out = jax.vmap(lambda m, block=block: block(m, state)[0])(before)
        helpers.assert_close(out, after, rtol=1e-5)


def test_indices_choose_and_order_the_stages():
    model, state = zoo.create_model("stax_cnn", key=jax.random.key(0))
    x = helpers.random_inputs(model, 2, seed=4)
    every = zoo.models.intermediates(model, x, state)
    chosen = zoo.models.intermediates(model, x, state, indices=[-1, 0, 2])
    for got, want in zip(chosen, [every[3], every[0], every[2]], strict=True):
        np.testing.assert_array_equal(got, want)
    assert zoo.models.intermediates(model, x, state, indices=[]) == []
    for bad in ([4], [-5]):
        with pytest.raises(ValueError, match=r"4 stages .* out of range"):
            zoo.models.intermediates(model, x, state, indices=bad)
    # Refused by the annotation (shape checks on) or by the model (off).
    with pytest.raises((TypeError, ValueError), match="int"):
        zoo.models.intermediates(model, x, state, indices=[1.0])  # pyright: ignore[reportArgumentType]
    with zoo.runtime.shape_checks(False), pytest.raises(ValueError, match="ints"):
        zoo.models.intermediates(model, x, state, indices=[True])


def test_one_example_intermediates_match_the_batched_call():
    model, state = zoo.create_model("lenet5", key=jax.random.key(0))
    model = eqx.nn.inference_mode(model)
    x = helpers.random_inputs(model, 1, seed=5)
    maps, new_state = model.intermediates(x[0], state, indices=[1])
    assert new_state is not None
    (batched,) = zoo.models.intermediates(model, x, state, indices=[1])
    helpers.assert_close(maps[0], batched[0], rtol=1e-6)
    with pytest.raises(ValueError, match="input_shape"):
        model.intermediates(x, state)


def test_intermediates_refuse_models_without_stages_or_state():
    mlp, _ = zoo.create_model("mlp", key=jax.random.key(0))
    with pytest.raises(TypeError, match=r"MLP has no stages.*zoo.features"):
        zoo.models.intermediates(mlp, jnp.zeros((2, 784)))
    cnn, _ = zoo.create_model("cnn", key=jax.random.key(0))
    with pytest.raises(ValueError, match="stateful"):
        zoo.models.intermediates(cnn, jnp.zeros((2, 1, 28, 28)))
    with pytest.raises(ValueError, match="channels-last"):
        zoo.models.intermediates(cnn, jnp.zeros((2, 28, 28, 1)), _)


def test_intermediates_follow_the_input_rule():
    model, state = zoo.create_model("lenet5", key=jax.random.key(0))
    pixels = np.random.default_rng(0).integers(0, 256, (2, 1, 28, 28), np.uint8)
    scaled = jnp.asarray(pixels, jnp.float32) / 255.0
    for a, b in zip(
        zoo.models.intermediates(model, pixels, state),
        zoo.models.intermediates(model, scaled, state),
        strict=True,
    ):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", ["mlp", "toy_mlp", "stax_cnn", "cnn", "lenet5"])
def test_out_size_zero_returns_the_features(name: str):
    model, state = zoo.create_model(name, key=jax.random.key(0))
    headless, headless_state = zoo.create_model(name, key=jax.random.key(0), out_size=0)
    config = headless.config()
    assert config["out_size"] == 0
    rebuilt, _ = zoo.models.build_model(config, key=jax.random.key(7))
    assert rebuilt.config() == config
    x = helpers.random_inputs(model, 3, seed=6)
    out, _ = zoo.apply(eqx.nn.inference_mode(headless), x, headless_state)
    # The same key draws the same backbone: the features of the model with a head.
    np.testing.assert_array_equal(out, zoo.features(model, x, state))
    np.testing.assert_array_equal(out, zoo.features(headless, x, headless_state))


def test_a_headless_model_has_no_head_to_train():
    for name in ["mlp", "cnn"]:
        model, _ = zoo.create_model(name, key=jax.random.key(0), out_size=0)
        with pytest.raises(ValueError, match=r"out_size=0: it has no classifier"):
            zoo.head_only(model)
        with pytest.raises(ValueError, match=r"out_size=K"):
            zoo.models._transfer.head(model)


def test_out_size_must_not_be_negative_and_a_headless_mlp_needs_a_layer():
    with pytest.raises(ValueError, match=r"out_size.*>= 0"):
        zoo.create_model("cnn", key=jax.random.key(0), out_size=-1)
    with pytest.raises(ValueError, match=r"out_size.*>= 0"):
        zoo.create_model("mlp", key=jax.random.key(0), out_size=-1)
    with pytest.raises(ValueError, match="at least one hidden width"):
        zoo.MLP(4, 0, width_size=(), key=jax.random.key(0))


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_a_pretrained_backbone_without_its_head(name: str):
    model, state = zoo.create_model(name, pretrained="mnist", key=jax.random.key(0))
    body, body_state = zoo.create_model(
        name, pretrained="mnist", out_size=0, key=jax.random.key(0)
    )
    assert body.out_size == 0
    x = helpers.random_inputs(model, 2, seed=8)
    out, _ = zoo.apply(eqx.nn.inference_mode(body), x, body_state)
    np.testing.assert_array_equal(out, zoo.features(model, x, state))
