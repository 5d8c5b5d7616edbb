"""One rule for inputs at every entry point (``zoo._inputs``).

``model(x)``, ``zoo.apply``, ``zoo.features``, ``predict``, ``evaluate`` and
``fit`` take the same things (NumPy or JAX arrays; ``uint8`` scaled to
``[0, 1]``, floating point as it is) and refuse the same things with the same
message: integer dtypes with the conversion, channels-last images with the exact
transpose, other shapes with the expected one. Nothing is reshaped unless the
model declares it (the MLP's ``flattens_input``).
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import zoo
from zoo.data import ArrayDataset


def _entry_points(model, state):
    """Each public way in, as a function of a batch of 4 inputs."""
    frozen = eqx.nn.inference_mode(model)

    def one_by_one(xs):
        call = (lambda x: frozen(x, state)[0]) if model.stateful else frozen
        return jnp.stack([call(x) for x in xs])

    def dataset(xs):
        return ArrayDataset(
            np.asarray(xs), np.arange(4, dtype=np.int32), tuple("abcdefghij"), "t"
        )

    return {
        "model": one_by_one,
        "apply": lambda xs: zoo.apply(frozen, xs, state)[0],
        "features": lambda xs: zoo.features(model, xs, state),
        "predict": lambda xs: zoo.predict(model, state, xs),
        "evaluate": lambda xs: zoo.evaluate(model, state, dataset(xs), batch_size=4),
        "fit": lambda xs: zoo.fit(
            model,
            state,
            dataset(xs),
            optax.sgd(0.0),
            epochs=1,
            batch_size=4,
            steps_per_call=1,
            callbacks=[],
        ),
    }


@pytest.fixture(scope="module")
def cnn():
    return zoo.create_model("stax_cnn", key=jax.random.key(0))


def test_numpy_and_jax_uint8_and_float_are_taken_alike_everywhere(cnn):
    model, state = cnn
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (4, 1, 28, 28), dtype=np.uint8)
    scaled = pixels.astype(np.float32) / 255
    for name, entry in _entry_points(model, state).items():
        if name in ("evaluate", "fit"):
            entry(pixels)  # taken; their own tests check the values
            entry(scaled)
            continue
        reference = np.asarray(entry(jnp.asarray(scaled)))
        for xs in (pixels, jnp.asarray(pixels), scaled):
            np.testing.assert_allclose(
                np.asarray(entry(xs)), reference, rtol=1e-5, atol=1e-6
            )


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (lambda: np.zeros((4, 28, 28, 1), np.float32), ValueError,
         r"channels-last.*x\.transpose\((0, 3, 1, 2|2, 0, 1)\)"),
        (lambda: np.zeros((4, 1, 28, 28), np.int32), TypeError,
         r"dtype int32: convert with x\.astype"),
        (lambda: np.zeros((4, 784), np.float32), ValueError,
         r"shape \(784,\), but CNN takes \(1, 28, 28\)"),
    ],
    ids=["channels_last", "int32", "flat"],
)  # fmt: skip
def test_every_entry_point_refuses_the_same_with_the_fix(cnn, make, error, message):
    model, state = cnn
    for name, entry in _entry_points(model, state).items():
        with pytest.raises(error, match=message):
            entry(make())
        del name


def test_one_example_channels_last_gets_the_single_image_transpose(cnn):
    model, state = cnn
    frozen = eqx.nn.inference_mode(model)
    with pytest.raises(ValueError, match=r"x\.transpose\(2, 0, 1\)"):
        frozen(np.zeros((28, 28, 1), np.float32), state)  # pyright: ignore[reportCallIssue]


def test_one_example_where_a_batch_goes_is_told_to_add_the_batch_axis(cnn):
    model, state = cnn
    one = np.zeros((1, 28, 28), np.float32)  # the model's input_shape itself
    for entry in (
        lambda x: zoo.predict(model, state, x),
        lambda x: zoo.apply(eqx.nn.inference_mode(model), x, state),
        lambda x: zoo.features(model, x, state),
    ):
        with pytest.raises(ValueError, match=r"This is ONE example: add a batch "
                           r"axis, x\[None\]"):  # fmt: skip
            entry(one)
    assert zoo.predict(model, state, one[None]).shape == (1,)


def test_only_a_model_that_declares_it_flattens_its_input():
    mlp, _ = zoo.create_model("mlp", key=jax.random.key(0))
    assert mlp.flattens_input
    images = np.random.default_rng(1).random((3, 1, 28, 28), np.float32)
    flat = images.reshape(3, 784)
    np.testing.assert_array_equal(
        np.asarray(zoo.apply(mlp, images)[0]), np.asarray(zoo.apply(mlp, flat)[0])
    )
    cnn, state = zoo.create_model("stax_cnn", key=jax.random.key(0))
    assert not cnn.flattens_input
    with pytest.raises(ValueError, match="but CNN takes"):
        zoo.apply(cnn, flat.reshape(3, 28, 28), state)


def test_a_state_where_the_inputs_go_is_told_the_order(cnn):
    model, state = cnn
    order = r"got State: the state went where the inputs go: the order is predict"
    with pytest.raises(TypeError, match=order):
        zoo.predict(model, np.zeros((2, 1, 28, 28), np.uint8), state)  # pyright: ignore[reportArgumentType]


def test_predict_refuses_outputs_no_class_describes(cnn):
    # argmax of a NaN row is 0: these batches were once "predicted" as class 0.
    model, state = cnn
    xs = np.random.default_rng(0).random((6, 1, 28, 28), np.float32)
    xs[[1, 4], 0, 3, 5] = np.nan
    with pytest.raises(ValueError, match=r"NaN or infinite for 2 of 6 examples "
                       r"\(1, 4\).*the inputs of 2 of them hold NaN"):  # fmt: skip
        zoo.predict(model, state, xs)
    broken = eqx.tree_at(lambda m: m.output.bias, model, model.output.bias * jnp.nan)
    with pytest.raises(ValueError, match=r"for 6 of 6 examples .*inputs are finite"
                       r", so the model's weights or state hold NaN"):  # fmt: skip
        zoo.predict(broken, state, np.nan_to_num(xs))
    # Inside a user's jit the values are not known: predict gives the classes.
    inside = jax.jit(lambda x: zoo.predict(model, state, x))(np.nan_to_num(xs))
    np.testing.assert_array_equal(inside, zoo.predict(model, state, np.nan_to_num(xs)))
    assert zoo.predict(model, state, xs[:0]).shape == (0,)  # nothing to refuse
