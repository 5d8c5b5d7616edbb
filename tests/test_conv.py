"""The conv path: every way of computing a CNN block is the same function.

``"nhwc"``, ``"winograd"`` and ``"gemm"`` (channels-last) must equal ``"xla"``
(Equinox's channels-first layers, ``lax.conv_general_dilated``) in values and
gradients, layer by layer and for every registered CNN, and a model keeps its
parameters whichever path trained it. The Winograd primitive itself is tested in
``tests/test_winograd.py``.
"""

import os
import subprocess
import sys

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
import pytest
from hypothesis import assume, given, strategies as st

import zoo
from tests.helpers import assert_close, make_model, params, random_inputs
from zoo.models._conv import (
    batch_norm_channels_last,
    conv_channels_last,
    to_channels_first,
    to_channels_last,
)

FAST_PATHS = ("nhwc", "winograd", "gemm")
CNN_MODELS = [
    n for n in zoo.list_models() if zoo.model_spec(n).config["family"] == "CNN"
]
seeds = st.integers(min_value=0, max_value=2**31 - 1)


def test_conv_path_setting_and_context_manager():
    assert zoo.conv_path_setting() == "auto"
    assert zoo.resolved_conv_path("cpu") == "nhwc"
    assert zoo.resolved_conv_path("gpu") == "xla"
    assert zoo.resolved_conv_path("tpu") == "xla"
    with zoo.conv_path("gemm"):
        assert zoo.resolved_conv_path("gpu") == "gemm"
        with zoo.conv_path("xla"):
            assert zoo.resolved_conv_path("cpu") == "xla"
        assert zoo.conv_path_setting() == "gemm"
    assert zoo.conv_path_setting() == "auto"
    zoo.set_conv_path("XLA")  # pyright: ignore[reportArgumentType]
    try:
        assert zoo.conv_path_setting() == "xla"
    finally:
        zoo.set_conv_path("auto")
    with pytest.raises(ValueError, match="conv path must be one of"):
        zoo.set_conv_path("fast")  # pyright: ignore[reportArgumentType]
    with pytest.raises(ValueError, match="conv path"), zoo.conv_path("im2col"):  # pyright: ignore[reportArgumentType]
        pass
    assert zoo.conv_path_setting() == "auto"


def test_conv_path_environment_variable():
    code = "import zoo; print(zoo.conv_path_setting(), zoo.resolved_conv_path('gpu'))"
    env = {**os.environ, "ZOO_CONV": "gemm"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["gemm", "gemm"]
    env["ZOO_CONV"] = "nope"
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True
    )
    assert out.returncode != 0
    assert "ZOO_CONV must be one of" in out.stderr


@given(
    kernel=st.sampled_from([1, 3, 5]),
    stride=st.sampled_from([1, 2]),
    padding=st.sampled_from(["SAME", "VALID", 0, 1, 2]),
    in_channels=st.sampled_from([1, 3, 8, 64]),  # 64: Winograd on "winograd"
    out_channels=st.sampled_from([1, 6, 16]),
    size=st.integers(5, 12),
    use_bias=st.booleans(),
    path=st.sampled_from(FAST_PATHS),
    seed=seeds,
)
def test_channels_last_conv_equals_lax_conv(
    kernel, stride, padding, in_channels, out_channels, size, use_bias, path, seed
):
    keys = jax.random.split(jax.random.key(seed), 3)
    conv = eqx.nn.Conv2d(
        in_channels,
        out_channels,
        kernel,
        stride=stride,
        padding=padding,
        use_bias=use_bias,
        key=keys[0],
    )
    xs = jax.random.normal(keys[1], (2, in_channels, size, size + 1))

    def reference(conv, xs):
        return jax.vmap(conv)(xs)

    def ours(conv, xs):
        def one(x):
            return to_channels_first(
                conv_channels_last(conv, to_channels_last(x), path)
            )

        return jax.vmap(one)(xs)

    expected = reference(conv, xs)
    actual = ours(conv, xs)
    assert actual.shape == expected.shape
    assert_close(actual, expected)
    cotangent = jax.random.normal(keys[2], expected.shape)
    grads = [
        eqx.filter_grad(lambda c, x, f=f: jnp.vdot(f(c, x), cotangent))(conv, xs)
        for f in (ours, reference)
    ]
    for a, b in zip(params(grads[0]), params(grads[1]), strict=True):
        assert_close(a, b)
    x_grads = [
        jax.grad(lambda x, f=f: jnp.vdot(f(conv, x), cotangent))(xs)
        for f in (ours, reference)
    ]
    assert_close(x_grads[0], x_grads[1])


@given(
    channels=st.sampled_from([1, 4, 32]),
    size=st.integers(1, 9),
    affine=st.booleans(),
    seed=seeds,
)
def test_channels_last_batch_norm_equals_equinox(channels, size, affine, seed):
    keys = jax.random.split(jax.random.key(seed), 4)
    norm, state = eqx.nn.make_with_state(eqx.nn.BatchNorm)(
        channels,
        axis_name=zoo.BATCH_AXIS,
        mode="batch",
        channelwise_affine=affine,
    )
    if affine:
        norm = eqx.tree_at(
            lambda n: (n.weight, n.bias),
            norm,
            (
                jax.random.normal(keys[0], (channels,)),
                jax.random.normal(keys[1], (channels,)),
            ),
        )
    xs = 3.0 + jax.random.normal(keys[2], (4, channels, size, size + 1))

    def reference(norm, xs, state):
        with jax.numpy_dtype_promotion("standard"):
            return jax.vmap(
                norm, axis_name=zoo.BATCH_AXIS, in_axes=(0, None), out_axes=(0, None)
            )(xs, state)

    def ours(norm, xs, state):
        def one(x, state):
            y, state = batch_norm_channels_last(norm, to_channels_last(x), state)
            return to_channels_first(y), state

        return jax.vmap(
            one, axis_name=zoo.BATCH_AXIS, in_axes=(0, None), out_axes=(0, None)
        )(xs, state)

    for _ in range(2):  # the second call sees non-zero running statistics
        expected, expected_state = reference(norm, xs, state)
        actual, actual_state = ours(norm, xs, state)
        assert_close(actual, expected, rtol=1e-4)
        for a, b in zip(
            jax.tree.leaves(actual_state), jax.tree.leaves(expected_state), strict=True
        ):
            assert_close(a, b)
        state = expected_state
    cotangent = jax.random.normal(keys[3], xs.shape)
    grads = [
        eqx.filter_grad(lambda nx, f=f: jnp.vdot(f(nx[0], nx[1], state)[0], cotangent))(
            (norm, xs)
        )
        for f in (ours, reference)
    ]
    for a, b in zip(params(grads[0]), params(grads[1]), strict=True):
        assert_close(a, b, rtol=2e-4)
    frozen = eqx.nn.inference_mode(norm)
    assert_close(ours(frozen, xs, state)[0], reference(frozen, xs, state)[0])


@given(
    size=st.integers(1, 3),
    height=st.integers(1, 9),
    width=st.integers(1, 9),
    kind=st.sampled_from([zoo.MaxPool, zoo.AvgPool]),
    seed=seeds,
)
def test_channels_last_pooling_equals_channels_first(size, height, width, kind, seed):
    assume(height >= size and width >= size)
    pool = kind(size)
    x = jax.random.normal(jax.random.key(seed), (3, height, width))

    def ours(x):
        return to_channels_first(pool.channels_last(to_channels_last(x)))

    assert_close(ours(x), pool(x), rtol=1e-6)
    cotangent = jax.random.normal(jax.random.key(seed + 1), pool(x).shape)
    grads = [
        jax.grad(lambda x, f=f: jnp.vdot(f(x), cotangent))(x) for f in (ours, pool)
    ]
    assert_close(grads[0], grads[1], rtol=1e-6)


@given(
    size=st.integers(1, 4),
    height=st.integers(1, 9),
    width=st.integers(1, 9),
    levels=st.integers(1, 3),
    seed=seeds,
)
def test_channels_last_max_pool_gradient_goes_to_the_first_maximum(
    size, height, width, levels, seed
):
    # Few distinct values, so windows tie: the whole gradient goes to the
    # first maximum of each window (row by row), as eqx.nn.MaxPool2d's does,
    # and each window's gradient sums to its output's.
    assume(height >= size and width >= size)
    keys = jax.random.split(jax.random.key(seed), 2)
    x = jax.random.randint(keys[0], (height, width, 3), 0, levels).astype(jnp.float32)
    pool = eqx.nn.MaxPool2d(size, size)

    def equinox(x):
        return to_channels_last(pool(to_channels_first(x)))

    ours = zoo.MaxPool(size).channels_last
    assert jnp.array_equal(ours(x), equinox(x))
    cotangent = jax.random.normal(keys[1], ours(x).shape)
    grads = [
        jax.grad(lambda x, f=f: jnp.vdot(f(x), cotangent))(x) for f in (ours, equinox)
    ]
    assert jnp.array_equal(grads[0], grads[1])
    h, w = height // size, width // size
    per_window = grads[0][: h * size, : w * size].reshape(h, size, w, size, 3)
    assert_close(per_window.sum(axis=(1, 3)), cotangent, rtol=1e-6)
    tangent = jax.random.normal(keys[1], x.shape)  # forward mode too
    assert_close(
        jax.jvp(ours, (x,), (tangent,))[1], jax.jvp(equinox, (x,), (tangent,))[1]
    )


@given(size=st.integers(1, 3), height=st.integers(1, 9), seed=seeds)
def test_avg_pool_matches_equinox(size, height, seed):
    assume(height >= size)
    x = jax.random.normal(jax.random.key(seed), (2, height, height + 2))
    assert_close(zoo.AvgPool(size)(x), eqx.nn.AvgPool2d(size, size)(x), rtol=1e-6)
    with pytest.raises(ValueError, match="size must be >= 1"):
        zoo.AvgPool(0)


def _loss(model, state, xs, labels, key):
    logits, new_state = zoo.apply(model, xs, state, key=key)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    return loss, (logits, new_state)


# One jitted function per path, made once so compilations are cached across
# Hypothesis draws: the path is read while tracing, so a function traced on one
# path must not be reused on another.
_GRADS = {
    path: eqx.filter_jit(eqx.filter_value_and_grad(_loss, has_aux=True))
    for path in ("xla", *FAST_PATHS)
}
_ONE = {
    path: eqx.filter_jit(lambda m, x, s: m(x, s)[0]) for path in ("xla", *FAST_PATHS)
}


def _on_path(path, model, state, xs, labels, key):
    with zoo.conv_path(path):
        return _GRADS[path](model, state, xs, labels, key)


@pytest.mark.parametrize("name", CNN_MODELS)
@given(seed=seeds)
def test_every_cnn_is_the_same_function_on_every_path(name, seed):
    model, state = make_model(name, seed)
    xs = random_inputs(model, 3, seed + 1)
    labels = jnp.arange(3, dtype=jnp.int32) % model.out_size
    key = jax.random.key(seed + 2)
    results = {
        path: _on_path(path, model, state, xs, labels, key)
        for path in ("xla", *FAST_PATHS)
    }
    (_, (logits, new_state)), grads = results["xla"]
    for path in FAST_PATHS:
        (_, (other_logits, other_state)), other_grads = results[path]
        assert_close(other_logits, logits)
        for a, b in zip(params(other_grads), params(grads), strict=True):
            assert_close(a, b, rtol=5e-4)
        for a, b in zip(
            jax.tree.leaves(other_state), jax.tree.leaves(new_state), strict=True
        ):
            assert_close(a, b)
    # Inference mode, one example without vmap.
    frozen = eqx.nn.inference_mode(model)
    outs = []
    for path in ("xla", *FAST_PATHS):
        with zoo.conv_path(path):
            outs.append(
                eqx.filter_jit(lambda m, x, s: m(x, s)[0])(frozen, xs[0], state)
            )
    for out in outs[1:]:
        assert_close(out, outs[0])


@pytest.mark.parametrize(("trained_on", "run_on"), [("nhwc", "xla"), ("xla", "gemm")])
def test_a_model_trained_on_one_path_loads_and_runs_on_another(
    trained_on, run_on, tmp_path
):
    model, state = make_model("stax_cnn", 0)
    xs = random_inputs(model, 4, 1)
    labels = jnp.arange(4, dtype=jnp.int32)
    (_, (_, state)), grads = _on_path(
        trained_on, model, state, xs, labels, jax.random.key(2)
    )
    model = eqx.apply_updates(model, jax.tree.map(lambda g: -0.1 * g, grads))
    path = tmp_path / "model.eqx"
    eqx.tree_serialise_leaves(path, (model, state))
    skeleton = zoo.build_model(model.config(), key=jax.random.key(9))
    loaded, loaded_state = eqx.tree_deserialise_leaves(path, skeleton)
    assert jax.tree.structure(loaded) == jax.tree.structure(model)
    frozen, loaded_frozen = eqx.nn.inference_mode(model), eqx.nn.inference_mode(loaded)
    with zoo.conv_path(trained_on):
        expected, _ = eqx.filter_jit(zoo.apply)(frozen, xs, state)
    with zoo.conv_path(run_on):
        actual, _ = eqx.filter_jit(zoo.apply)(loaded_frozen, xs, loaded_state)
    assert_close(actual, expected)


def _jaxpr_of_grad(name, path):
    model, state = make_model(name, 0)
    xs = random_inputs(model, 2, 1)
    labels = jnp.zeros((2,), jnp.int32)
    with zoo.conv_path(path):
        key = jax.random.key(2)  # cnn has dropout
        grad = eqx.filter_grad(lambda m: _loss(m, state, xs, labels, key)[0])
        return str(eqx.filter_make_jaxpr(grad)(model)[0])


def test_gemm_path_has_no_convolution_primitive_and_nhwc_keeps_one():
    assert "conv_general_dilated" in _jaxpr_of_grad("stax_cnn", "nhwc")
    assert "conv_general_dilated" not in _jaxpr_of_grad("stax_cnn", "gemm")


def test_winograd_path_takes_the_wide_3x3_convolutions_only():
    # cnn: 1 -> 32 and 32 -> 64 stay XLA's, 64 -> 128 is Winograd's, forward
    # and input gradient (the weight gradient is plain matrix products);
    # stax_cnn's stride-2 convolutions all stay XLA's.
    text = _jaxpr_of_grad("cnn", "winograd")
    assert text.count("winograd_conv[") == 2
    assert "conv_general_dilated" in text
    assert "winograd_conv" not in _jaxpr_of_grad("cnn", "nhwc")
    assert "winograd_conv" not in _jaxpr_of_grad("stax_cnn", "winograd")
