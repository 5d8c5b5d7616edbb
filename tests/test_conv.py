"""The conv path: both ways of computing a CNN block are the same function.

``"nhwc"`` (channels-last) must equal ``"xla"`` (Equinox's channels-first
layers) in values and gradients, layer by layer and for every registered CNN,
and a model keeps its parameters whichever path trained it. The path is a
static field of the model, so a compiled program follows the model it gets.
"""

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

FAST_PATHS = ("nhwc",)
CNN_MODELS = [
    n for n in zoo.list_models() if zoo.models.model_spec(n).config["family"] == "CNN"
]
seeds = st.integers(min_value=0, max_value=2**31 - 1)


def test_the_conv_path_is_fixed_at_build_and_switched_like_inference_mode():
    model, state = zoo.create_model("stax_cnn", key=jax.random.key(0))
    assert isinstance(model, zoo.CNN)
    assert model.conv_path == ("nhwc" if jax.default_backend() == "cpu" else "xla")
    xla = zoo.models.with_conv_path(model, "XLA")
    assert xla.conv_path == "xla"
    assert zoo.models.with_conv_path(xla, "nhwc").conv_path == "nhwc"
    # Parameters are untouched: the same leaves, the same treedef of arrays.
    assert jax.tree.leaves(xla) == jax.tree.leaves(model)
    # Switched inside a container, as eqx.nn.inference_mode is.
    pair = zoo.models.with_conv_path({"a": model, "b": [model]}, "xla")
    assert pair["a"].conv_path == pair["b"][0].conv_path == "xla"
    with pytest.raises(ValueError, match="conv_path must be one of"):
        zoo.models.with_conv_path(model, "gemm")
    with pytest.raises(ValueError, match="conv_path must be one of"):
        zoo.create_model("cnn", key=jax.random.key(0), conv_path="winograd")
    built, _ = zoo.create_model("cnn", key=jax.random.key(0), conv_path="xla")
    assert isinstance(built, zoo.CNN) and built.conv_path == "xla"
    del state


def test_a_compiled_program_follows_the_model_not_a_global():
    # One jitted function, two models: each call traces for its own path, so a
    # program compiled for one path can never run the other's model.
    model, state = make_model("stax_cnn", 0)
    frozen = eqx.nn.inference_mode(model)
    traces = []

    @eqx.filter_jit
    def run(m, x, s):
        traces.append(m.conv_path)
        return zoo.apply(m, x, s)[0]

    xs = random_inputs(model, 2, 1)
    nhwc = run(zoo.models.with_conv_path(frozen, "nhwc"), xs, state)
    xla = run(zoo.models.with_conv_path(frozen, "xla"), xs, state)
    assert sorted(traces) == ["nhwc", "xla"]
    assert_close(nhwc, xla)


@given(
    kernel=st.sampled_from([1, 3, 5]),
    stride=st.sampled_from([1, 2]),
    padding=st.sampled_from(["SAME", "VALID", 0, 1, 2]),
    in_channels=st.sampled_from([1, 3, 8, 64]),
    out_channels=st.sampled_from([1, 6, 16]),
    size=st.integers(5, 12),
    use_bias=st.booleans(),
    seed=seeds,
)
def test_channels_last_conv_equals_lax_conv(
    kernel, stride, padding, in_channels, out_channels, size, use_bias, seed
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
            return to_channels_first(conv_channels_last(conv, to_channels_last(x)))

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
        axis_name=zoo.models.BATCH_AXIS,
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
                norm,
                axis_name=zoo.models.BATCH_AXIS,
                in_axes=(0, None),
                out_axes=(0, None),
            )(xs, state)

    def ours(norm, xs, state):
        def one(x, state):
            y, state = batch_norm_channels_last(norm, to_channels_last(x), state)
            return to_channels_first(y), state

        return jax.vmap(
            one, axis_name=zoo.models.BATCH_AXIS, in_axes=(0, None), out_axes=(0, None)
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
    kind=st.sampled_from([zoo.models.MaxPool, zoo.models.AvgPool]),
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

    ours = zoo.models.MaxPool(size).channels_last
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
    assert_close(
        zoo.models.AvgPool(size)(x), eqx.nn.AvgPool2d(size, size)(x), rtol=1e-6
    )
    with pytest.raises(ValueError, match="size must be >= 1"):
        zoo.models.AvgPool(0)


def _loss(model, state, xs, labels, key):
    logits, new_state = zoo.apply(model, xs, state, key=key)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    return loss, (logits, new_state)


# Made once so compilations are cached across Hypothesis draws; the path is
# part of the model's static structure, so each path compiles its own program.
_GRAD = eqx.filter_jit(eqx.filter_value_and_grad(_loss, has_aux=True))
_ONE = eqx.filter_jit(lambda m, x, s: m(x, s)[0])


def _on_path(path, model, state, xs, labels, key):
    return _GRAD(zoo.models.with_conv_path(model, path), state, xs, labels, key)


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
    # Gradients are compared on a smooth twin (softplus, average pooling):
    # where a ReLU's input or two values of a max-pooling window sit within
    # rounding of zero or of each other, each path's last bits decide where
    # the gradient goes (cnn, seeds 12463 and 342: 1.2x and 4 % on the first
    # conv's weights). Max pooling's own gradient is checked on ties above.
    smooth, _ = make_model(name, seed, pooling="avg", activation="softplus")
    gradients = {
        path: _on_path(path, smooth, state, xs, labels, key)[1]
        for path in ("xla", *FAST_PATHS)
    }
    (_, (logits, new_state)), _ = results["xla"]
    for path in FAST_PATHS:
        (_, (other_logits, other_state)), _ = results[path]
        assert_close(other_logits, logits)
        for a, b in zip(params(gradients[path]), params(gradients["xla"]), strict=True):
            assert_close(a, b, rtol=5e-4)
        for a, b in zip(
            jax.tree.leaves(other_state), jax.tree.leaves(new_state), strict=True
        ):
            assert_close(a, b)
    # Inference mode, one example without vmap.
    frozen = eqx.nn.inference_mode(model)
    outs = []
    for path in ("xla", *FAST_PATHS):
        outs.append(_ONE(zoo.models.with_conv_path(frozen, path), xs[0], state))
    for out in outs[1:]:
        assert_close(out, outs[0])


@pytest.mark.parametrize(("trained_on", "run_on"), [("nhwc", "xla"), ("xla", "nhwc")])
def test_a_model_trained_on_one_path_loads_and_runs_on_another(
    trained_on, run_on, tmp_path
):
    model, state = make_model("stax_cnn", 0)
    model = zoo.models.with_conv_path(model, trained_on)
    xs = random_inputs(model, 4, 1)
    labels = jnp.arange(4, dtype=jnp.int32)
    (_, (_, state)), grads = _on_path(
        trained_on, model, state, xs, labels, jax.random.key(2)
    )
    model = eqx.apply_updates(model, jax.tree.map(lambda g: -0.1 * g, grads))
    path = tmp_path / "model.eqx"
    eqx.tree_serialise_leaves(path, (model, state))
    skeleton = zoo.models.build_model(model.config(), key=jax.random.key(9))
    loaded, loaded_state = eqx.tree_deserialise_leaves(path, skeleton)
    # The path is not in the file: the loaded model has its process's default.
    switched = zoo.models.with_conv_path(loaded, trained_on)
    assert jax.tree.structure(switched) == jax.tree.structure(model)
    frozen, loaded_frozen = eqx.nn.inference_mode(model), eqx.nn.inference_mode(loaded)
    expected, _ = eqx.filter_jit(zoo.apply)(
        zoo.models.with_conv_path(frozen, trained_on), xs, state
    )
    actual, _ = eqx.filter_jit(zoo.apply)(
        zoo.models.with_conv_path(loaded_frozen, run_on), xs, loaded_state
    )
    assert_close(actual, expected)


def test_channels_last_batch_norm_gradient_where_the_mean_dwarfs_the_spread():
    # A one-pass E[x^2] - E[x]^2 would lose the variance to float32 rounding
    # when the mean is 300 times the spread (gradients up to 1 % off, as the
    # nhwc path once had); both paths subtract the mean first.
    norm = eqx.nn.BatchNorm(4, axis_name="batch", mode="batch")
    state = eqx.nn.State(norm)
    y = jax.random.normal(jax.random.key(3), (3, 4, 5, 5)) * 0.01 + 3.0
    weights = jnp.arange(y.size, dtype=jnp.float32).reshape(y.shape) / y.size

    def loss(y, channels_last):
        def one(a, s):
            if channels_last:
                out, s = batch_norm_channels_last(norm, to_channels_last(a), s)
                return to_channels_first(out), s
            return norm(a, s)

        with jax.numpy_dtype_promotion("standard"):
            out, _ = jax.vmap(
                one, axis_name="batch", in_axes=(0, None), out_axes=(0, None)
            )(y, state)
        return jnp.sum(out * weights)

    expected = jax.grad(loss)(y, False)
    assert_close(jax.grad(loss)(y, True), expected, rtol=1e-3)
