"""The ResNet family: architecture, parameter counts, BatchNorm state, training."""

import json
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import zoo
from tests import helpers
from tests.helpers import params

_apply = eqx.filter_jit(zoo.apply)


def _count(model: zoo.AbstractModel) -> int:
    return sum(p.size for p in params(model))


def _tiny(
    in_channels: int = 1, image_size: int | list[int] = 12, **overrides
) -> tuple[zoo.ResNet, eqx.nn.State]:
    """A two-stage ResNet small enough to compile in about a second."""
    config = {
        "family": "ResNet",
        "in_channels": in_channels,
        "image_size": image_size,
        "out_size": 10,
        "stem_width": 4,
        "widths": [4, 8],
        "depths": [1, 1],
        "strides": [1, 2],
        **overrides,
    }
    model, state = zoo.models.build_model(config, key=jax.random.key(0))
    assert isinstance(model, zoo.ResNet)
    return model, state


def test_resnet20_is_he_et_al_cifar_resnet_with_projections(getkey):
    model, _ = zoo.create_model("resnet20", in_channels=3, image_size=32, key=getkey())
    assert isinstance(model, zoo.ResNet)
    # He et al. 2016, table 6: ResNet-20 has 0.27M parameters. Theirs has
    # parameter-free (zero-padding) shortcuts, 269,722 parameters; the two 1x1
    # projections (16*32 + 32*64 weights) and their BatchNorms (2 * (32 + 64))
    # add 2,752.
    assert _count(model) == 269_722 + 2_752
    assert round(_count(model) / 1e6, 2) == 0.27
    convs = [model.stem] + [c for b in model.blocks for c in (b.conv1, b.conv2)]
    assert len(convs) + 1 == 20  # 19 convs and the classifier
    assert [b.conv1.out_channels for b in model.blocks] == [16] * 3 + [32] * 3 + [
        64
    ] * 3
    assert [b.conv1.stride for b in model.blocks] == [(1, 1)] * 3 + [
        (2, 2),
        (1, 1),
        (1, 1),
    ] * 2
    projected = [i for i, b in enumerate(model.blocks) if b.shortcut is not None]
    assert projected == [3, 6]  # only where the shape changes
    assert all(c.kernel_size == (3, 3) and not c.use_bias for c in convs)
    assert isinstance(model.output, eqx.nn.Linear)
    assert model.output.in_features == 64


def test_preset_sizes(getkey):
    counts = {
        name: _count(zoo.create_model(name, key=getkey())[0])
        for name in ("resnet8", "resnet20")
    }
    # 1-channel 28x28 presets: the stem has 144 weights, not CIFAR's 432.
    assert counts == {"resnet8": 77_754, "resnet20": 272_186}


@pytest.mark.parametrize(
    ("shape", "features"),
    [((1, 28, 28), (14, 7)), ((3, 32, 32), (16, 8)), ((2, 17, 9), (9, 5))],
)
def test_any_channels_and_image_size(shape, features, getkey):
    channels, height, width = shape
    model, state = zoo.models.build_model(
        {
            "family": "ResNet",
            "in_channels": channels,
            "image_size": [height, width],
            "out_size": 7,
            "widths": [4, 8, 8],
            "depths": 1,
            "stem_width": 4,
        },
        key=getkey(),
    )
    assert model.input_shape == shape
    xs = jax.random.uniform(getkey(), (3, *shape))
    logits, _ = _apply(model, xs, state)
    assert logits.shape == (3, 7)
    # each stride-2 stage maps n pixels to ceil(n / 2)
    assert math.ceil(height / 2) == features[0] and math.ceil(height / 4) == features[1]


def test_shortcut_is_added_before_the_last_activation(getkey):
    # With the second BatchNorm's scale at zero, the residual branch is zero
    # and a block returns relu(shortcut(x)): the identity for same-shape blocks.
    model, state = _tiny()
    zero = lambda m: [b.norm2.weight for b in m.blocks]  # noqa: E731
    model = eqx.tree_at(zero, model, [jnp.zeros_like(w) for w in zero(model)])
    x = jax.random.normal(getkey(), (4, 12, 12))
    identity, projection = model.blocks
    assert identity.shortcut is None and projection.shortcut is not None
    inference = eqx.nn.inference_mode(model)
    out, _ = inference.blocks[0](x, state)
    np.testing.assert_allclose(out, jax.nn.relu(x), atol=1e-6)
    out, _ = inference.blocks[1](x, state)
    projected, _ = inference.blocks[1].shortcut(x, state)  # pyright: ignore[reportOptionalCall]
    assert out.shape == (8, 6, 6)
    np.testing.assert_allclose(out, jax.nn.relu(projected), atol=1e-6)


def test_weights_start_from_he_normal(getkey):
    model, _ = zoo.create_model("resnet20", key=getkey())
    assert isinstance(model, zoo.ResNet)
    weight = model.blocks[-1].conv2.weight  # 64 x 64 x 3 x 3
    assert abs(float(jnp.std(weight)) / math.sqrt(2 / (64 * 9)) - 1) < 0.02
    assert abs(float(jnp.mean(weight))) < 1e-3


def test_running_statistics_move_in_training_only(getkey):
    model, state = _tiny()
    xs = jax.random.uniform(getkey(), (8, 1, 12, 12))
    _, trained = _apply(model, xs, state)
    assert not bool(eqx.tree_equal(state, trained))
    _, unchanged = _apply(eqx.nn.inference_mode(model), xs, trained)
    assert bool(eqx.tree_equal(trained, unchanged))
    # one BatchNorm for the stem, two per block, one per projection
    assert len(jax.tree.leaves(state)) == 2 * (1 + 2 * 2 + 1) + (1 + 2 * 2 + 1)


def test_training_needs_the_batch_axis_and_dropout_a_key(getkey):
    model, state = _tiny(dropout=0.5)
    with pytest.raises(NameError, match="axis_name"):
        model(jnp.zeros((1, 12, 12)), state, key=getkey())
    with pytest.raises(ValueError, match="needs `key=`"):
        _apply(model, jnp.zeros((2, 1, 12, 12)), state)
    logits, _ = _apply(model, jnp.ones((2, 1, 12, 12)), state, key=getkey())
    assert logits.shape == (2, 10)
    inference = eqx.nn.inference_mode(model)
    logits, _ = inference(jnp.zeros((1, 12, 12)), state)
    assert logits.shape == (10,)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"widths": []}, "at least one stage"),
        ({"widths": 16}, "one width per stage"),
        ({"depths": [1, 1, 1]}, "3 entries but there are 2 stages"),
        ({"strides": [1, 0]}, "strides` must all be >= 1"),
        ({"widths": [4, 0]}, "widths` must all be >= 1"),
        ({"stem_width": 0}, "must be >= 1"),
        ({"dropout": 1.0}, r"dropout` must be in \[0, 1\)"),
        ({"bn_momentum": -0.1}, r"bn_momentum` must be in \[0, 1\)"),
        ({"activation": "swish"}, "Unknown activation"),
        ({"depth": 3}, "Invalid ResNet config"),
    ],
)
def test_bad_configurations_fail_at_construction(overrides, message):
    with pytest.raises(ValueError, match=message):
        _tiny(**overrides)


def test_config_is_json_and_rebuilds_the_model():
    model, state = _tiny(in_channels=3, image_size=[16, 12], dropout=0.1)
    config = json.loads(json.dumps(model.config()))
    assert config["family"] == "ResNet" and config["image_size"] == [16, 12]
    rebuilt, rebuilt_state = zoo.models.build_model(config, key=jax.random.key(0))
    assert bool(eqx.tree_equal((model, state), (rebuilt, rebuilt_state)))


def test_a_few_adam_steps_fit_a_small_batch():
    model, state = _tiny()
    optimizer = optax.adam(1e-2)
    opt_state = optimizer.init(eqx.filter(model, eqx.is_inexact_array))
    xs = jax.random.uniform(jax.random.key(1), (16, 1, 12, 12))
    labels = jnp.arange(16) % 10

    @eqx.filter_jit
    def step(model, state, opt_state):
        def loss(model, state):
            logits, state = zoo.apply(model, xs, state)
            return optax.softmax_cross_entropy_with_integer_labels(
                logits, labels
            ).mean(), state

        (value, state), grads = eqx.filter_value_and_grad(loss, has_aux=True)(
            model, state
        )
        with jax.numpy_dtype_promotion("standard"):  # optax mixes dtypes
            updates, opt_state = optimizer.update(grads, opt_state, model)
        return eqx.apply_updates(model, updates), state, opt_state, value

    losses = []
    for _ in range(30):
        model, state, opt_state, value = step(model, state, opt_state)
        losses.append(float(value))
    assert losses[-1] < 0.5 * losses[0]


@pytest.mark.parametrize("path", ["nhwc"])
def test_conv_paths_compute_the_same_function_and_state(path):
    model, state = _tiny(in_channels=3, image_size=[10, 9])
    xs = jax.random.uniform(jax.random.key(1), (4, 3, 10, 9))
    labels = jnp.arange(4)

    traced = []

    def gradient(path):
        # The path is a static field: each model traces its own program.
        def run(model, state):
            traced.append(path)

            def loss(model):
                logits, new_state = zoo.apply(model, xs, state)
                loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
                return loss.mean(), (logits, new_state)

            return eqx.filter_value_and_grad(loss, has_aux=True)(model)

        return eqx.filter_jit(run)(zoo.models.with_conv_path(model, path), state)

    (_, (expected, expected_state)), expected_grads = gradient("xla")
    (_, (logits, new_state)), grads = gradient(path)
    assert traced == ["xla", path]
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-5)
    for a, b in zip(
        jax.tree.leaves((new_state, grads)),
        jax.tree.leaves((expected_state, expected_grads)),
        strict=True,
    ):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)


def test_the_docs_recipe_trains():
    # docs/resnet.md's recipe as written, on a slice of Fashion-MNIST for 2
    # epochs (the page trains on all of it for 22).
    code = helpers.docs_block("resnet.md", "resnet-recipe")
    data = 'load_fashion_mnist("train"), load_fashion_mnist("test")'
    short = {
        data: 'load_fashion_mnist("train").take(256), '
        'load_fashion_mnist("test").take(200)',
        "epochs, steps = 22,": "epochs, steps = 2,",
    }
    for old, new in short.items():
        assert old in code, f"docs/resnet.md's recipe no longer has {old!r}"
        code = code.replace(old, new)
    scope: dict = {}
    exec(compile(code, "docs/resnet.md", "exec"), scope)
    history = scope["result"].history
    assert len(history) == 2
    assert all(math.isfinite(record.train_loss) for record in history)
    assert history[-1].test_accuracy is not None
