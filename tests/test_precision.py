"""Mixed precision: float32 parameters and state, a bfloat16 forward and backward."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import zoo
from zoo.data import Chunk
from zoo.models._conv import batch_norm_channels_last
from zoo.train._precision import cast_model

SMALL_PRESETS = [
    "mlp",
    "lenet5",
    "stax_cnn",
    "cnn",
    "resnet8",
    "resnet20",
    "vit_patch4_28",
]
# The 224x224 presets' families, small: the same layers in the same layout.
IMAGENET_FAMILIES = {
    "resnet18_34_family": {"block_kind": "basic"},
    "resnet50_family": {"block_kind": "bottleneck"},
    "vit_224_family": {"family": "ViT"},
}


def _build(name: str) -> tuple[zoo.AbstractModel, eqx.nn.State]:
    if name in SMALL_PRESETS:
        return zoo.create_model(name, key=jax.random.key(0))
    overrides = IMAGENET_FAMILIES[name]
    if overrides.get("family") == "ViT":
        return eqx.nn.make_with_state(zoo.ViT)(
            3, 16, 5, patch_size=4, dim=16, depth=2, num_heads=2, key=jax.random.key(0)
        )
    config = {
        "family": "ResNet", "in_channels": 3, "image_size": 20, "out_size": 5,
        "stem_width": 8, "widths": [16, 32], "depths": [1, 1],
        "stem_kind": "imagenet", **overrides,
    }  # fmt: skip
    return zoo.models.build_model(config, key=jax.random.key(0))


def _chunk(model: zoo.AbstractModel, steps: int = 2, batch: int = 16) -> Chunk:
    rng = np.random.default_rng(0)
    shape = (steps, batch, *model.input_shape)
    return Chunk(
        rng.integers(0, 256, shape, dtype=np.uint8),
        rng.integers(0, model.out_size, (steps, batch), dtype=np.int32),
        np.ones((steps, batch), np.bool_),
    )


def _dtypes(tree: object) -> set[str]:
    return {str(x.dtype) for x in jax.tree.leaves(tree) if eqx.is_inexact_array(x)}


@pytest.mark.parametrize("name", SMALL_PRESETS + list(IMAGENET_FAMILIES))
def test_a_bfloat16_step_keeps_float32_state_and_a_close_loss(name):
    model, state = _build(name)
    chunk = _chunk(model)
    losses = {}
    for precision in ("float32", "bfloat16"):
        step = zoo.train.make_train_step(optax.adam(1e-3), precision=precision)
        assert step.precision == precision
        ts, metrics = step(step.init(model, state, key=jax.random.key(1)), chunk)
        loss = float(metrics.loss_sum)
        assert np.isfinite(loss)
        # Parameters, optimiser state and BatchNorm statistics stay float32.
        assert _dtypes((ts.model, ts.opt_state, ts.model_state)) == {"float32"}
        losses[precision] = loss
    assert losses["bfloat16"] == pytest.approx(losses["float32"], rel=2e-2)
    assert losses["bfloat16"] != losses["float32"]  # it did compute in bfloat16


def test_the_cast_keeps_batch_norm_in_float32():
    model, _ = zoo.create_model("cnn", key=jax.random.key(0))
    cast = cast_model(model, "bfloat16")
    norm = cast.blocks[0].norm  # pyright: ignore[reportAttributeAccessIssue]
    assert norm is not None and norm.weight is not None
    assert norm.weight.dtype == jnp.float32
    assert cast.blocks[0].conv.weight.dtype == jnp.bfloat16  # pyright: ignore[reportAttributeAccessIssue]
    assert cast_model(model, "float32") is model


def test_batch_norm_statistics_of_a_bfloat16_map_are_float32():
    norm, state = eqx.nn.make_with_state(eqx.nn.BatchNorm)(
        3, axis_name="batch", mode="batch"
    )
    x = jax.random.normal(jax.random.key(0), (4, 5, 5, 3)) * 3 + 100
    xb = x.astype(jnp.bfloat16)

    def run(maps: jax.Array) -> tuple[jax.Array, eqx.nn.State]:
        leaves, treedef = jax.tree.flatten(state)
        fresh = jax.tree.unflatten(treedef, leaves)  # a State is used once
        return jax.vmap(
            lambda m: batch_norm_channels_last(norm, m, fresh),
            axis_name="batch",
            out_axes=(0, None),
        )(maps)

    y, new_state = run(xb)
    want, want_state = run(xb.astype(jnp.float32))  # the same values, upcast
    assert y.dtype == jnp.bfloat16
    np.testing.assert_array_equal(y, want.astype(jnp.bfloat16))
    for got, expected in zip(
        jax.tree.leaves(new_state), jax.tree.leaves(want_state), strict=True
    ):
        assert got.dtype == expected.dtype
        np.testing.assert_array_equal(got, expected)


def test_fit_evaluates_in_its_step_precision(small_train, small_test):
    model, state = zoo.create_model("cnn", key=jax.random.key(0))
    step = zoo.train.make_train_step(optax.adam(1e-3), precision="bfloat16")
    result = zoo.fit(
        model, state, small_train, step, epochs=1, batch_size=64,
        test_data=small_test, callbacks=[],
    )  # fmt: skip
    record = result.history[-1]
    assert np.isfinite(record.train_loss)
    again = zoo.evaluate(result.model, result.state, small_test, precision="bfloat16")
    assert record.test_accuracy == again["accuracy"]
    in_float32 = zoo.evaluate(result.model, result.state, small_test)
    assert abs(in_float32["accuracy"] - again["accuracy"]) < 0.02


def test_an_unknown_precision_is_refused(small_test):
    with pytest.raises(ValueError, match="precision must be one of 'float32'"):
        zoo.train.make_train_step(optax.sgd(0.1), precision="float16")  # pyright: ignore[reportArgumentType]
    model, state = zoo.create_model("mlp", key=jax.random.key(0))
    with pytest.raises(ValueError, match="got 'half'"):
        zoo.evaluate(model, state, small_test, precision="half")  # pyright: ignore[reportArgumentType]
