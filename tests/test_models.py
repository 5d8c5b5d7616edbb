"""Unit tests for the model constructors, the registry and shape checks."""

import json
import logging
from collections.abc import Callable
from typing import cast

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import assume, given, strategies as st

import zoo
from tests.helpers import make_model


def test_mlp_widths_and_depth(getkey):
    model = zoo.MLP(784, 10, width_size=512, depth=2, key=getkey())
    assert [layer.weight.shape for layer in model.layers] == [
        (512, 784),
        (512, 512),
        (10, 512),
    ]
    per_layer = zoo.MLP(3, 2, width_size=[5, 7], key=getkey())
    assert per_layer.width_sizes == (5, 7)
    assert per_layer(jnp.ones(3)).shape == (2,)


def test_mlp_options(getkey):
    model = zoo.MLP(
        4,
        3,
        width_size=8,
        depth=1,
        activation="tanh",
        final_activation="log_softmax",
        use_bias=False,
        use_final_bias=False,
        key=getkey(),
    )
    assert all(layer.bias is None for layer in model.layers)
    out = model(jnp.ones(4))
    assert jnp.allclose(jax.nn.logsumexp(out), 0.0, atol=1e-6)


def test_mlp_dtype(getkey):
    with jax.enable_x64(True):
        model = zoo.MLP(4, 3, width_size=8, depth=1, dtype="float64", key=getkey())
        assert model.layers[0].weight.dtype == jnp.float64
        assert model.config()["dtype"] == "float64"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"width_size": 8}, "needs `depth`"),
        ({"width_size": [8, 8], "depth": 3}, "depth=3 but 2 widths"),
        ({"width_size": 0, "depth": 1}, "widths must be >= 1"),
        ({"width_size": 8, "depth": 1, "dropout": 1.0}, "dropout"),
        ({"width_size": 8, "depth": 1, "activation": "relux"}, "Unknown activation"),
        ({"width_size": 8, "depth": 1, "dtype": "int32"}, "Unsupported parameter"),
    ],
)
def test_mlp_rejects_bad_arguments(kwargs, message, getkey):
    with pytest.raises(ValueError, match=message):
        zoo.MLP(4, 3, **kwargs, key=getkey())


def test_dropout_needs_a_key_in_training_and_not_in_inference(getkey):
    model = zoo.MLP(4, 3, width_size=64, depth=1, dropout=0.5, key=getkey())
    with pytest.raises(ValueError, match="needs `key=`"):
        model(jnp.ones(4))
    a = model(jnp.ones(4), key=jax.random.key(1))
    b = model(jnp.ones(4), key=jax.random.key(2))
    assert not jnp.allclose(a, b)
    frozen = eqx.nn.inference_mode(model)
    assert jnp.array_equal(frozen(jnp.ones(4)), frozen(jnp.ones(4)))


def test_cnn_stax_architecture(getkey):
    model, _state = zoo.create_model("stax_cnn", key=getkey())
    assert isinstance(model, zoo.CNN)
    convs = [block.conv for block in model.blocks]
    assert [c.out_channels for c in convs] == [32, 32, 10, 10]
    assert [c.kernel_size for c in convs] == [(5, 5), (5, 5), (3, 3), (3, 3)]
    assert all(c.stride == (2, 2) for c in convs)
    assert all(block.norm is not None for block in model.blocks)
    # 28 -> 14 -> 7 -> 4 -> 2 with SAME padding: 10 * 2 * 2 features.
    assert isinstance(model.output, eqx.nn.Linear)
    assert model.output.in_features == 40
    assert model.output.out_features == 10


def test_lenet5_is_lecun_1998(getkey):
    model, state = zoo.create_model("lenet5", key=getkey())
    assert isinstance(model, zoo.CNN)
    convs = [block.conv for block in model.blocks]
    assert [c.out_channels for c in convs] == [6, 16]
    assert all(c.kernel_size == (5, 5) and c.stride == (1, 1) for c in convs)
    assert all(c.use_bias for c in convs)
    assert all(isinstance(block.pool, zoo.models.AvgPool) for block in model.blocks)
    assert all(
        block.pool is not None and block.pool.size == 2 for block in model.blocks
    )
    assert all(block.norm is None for block in model.blocks)
    assert model.activation == "tanh"
    # C1 sees 28x28 padded to 32x32: 32 -> 28 (C1) -> 14 (S2) -> 10 (C3) -> 5 (S4).
    assert [layer.out_features for layer in model.hidden] == [120, 84]
    assert model.hidden[0].in_features == 16 * 5 * 5
    assert isinstance(model.output, eqx.nn.Linear)
    assert model.output.out_features == 10
    n_params = sum(
        x.size for x in jax.tree.leaves(eqx.filter(model, eqx.is_inexact_array))
    )
    assert n_params == 156 + 2_416 + 48_120 + 10_164 + 850
    logits, _ = zoo.apply(
        eqx.nn.inference_mode(model), jnp.zeros((2, 1, 28, 28)), state
    )
    assert logits.shape == (2, 10)


def test_cnn_pooling_is_max_or_avg_per_block(getkey):
    model, _ = zoo.create_model(
        "cnn", key=getkey(), channels=[4, 4], pooling=["avg", "max"]
    )
    assert isinstance(model, zoo.CNN)
    assert [type(b.pool) for b in model.blocks] == [
        zoo.models.AvgPool,
        zoo.models.MaxPool,
    ]
    assert model.config()["pooling"] == ["avg", "max"]
    with pytest.raises(ValueError, match="`pooling` must be 'max' or 'avg'"):
        zoo.create_model("cnn", key=getkey(), pooling="min")


def test_cnn_running_statistics_move_in_training_only(getkey):
    model, state = zoo.create_model("stax_cnn", key=getkey())
    xs = jax.random.uniform(getkey(), (8, 1, 28, 28))
    _, trained = zoo.apply(model, xs, state)
    assert not bool(eqx.tree_equal(state, trained))
    _, unchanged = zoo.apply(eqx.nn.inference_mode(model), xs, trained)
    assert bool(eqx.tree_equal(trained, unchanged))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"channels": [4] * 6, "strides": 2, "pool_sizes": 2}, "too small"),
        ({"channels": [4], "kernel_sizes": 9, "paddings": "VALID"}, "too small"),
        ({"channels": [4, 4], "strides": [1, 2, 2]}, "3 entries but there are 2"),
        ({"channels": []}, "at least one conv block"),
        ({"channels": [4], "paddings": "FULL"}, "padding"),
        ({"channels": [0]}, "must all be >= 1"),
    ],
)
def test_cnn_impossible_configurations_fail_at_construction(kwargs, message, getkey):
    with pytest.raises(ValueError, match=message):
        zoo.CNN(1, 8, 10, **kwargs, key=getkey())


def test_cnn_needs_the_batch_axis_in_training(getkey):
    model, state = zoo.create_model("stax_cnn", key=getkey())
    with pytest.raises(NameError, match="axis_name"):
        model(jnp.zeros((1, 28, 28)), state)


def test_registry_lists_every_preset():
    names = zoo.list_models()
    assert names[:4] == ["mlp", "toy_mlp", "stax_cnn", "cnn"]
    assert {"resnet8", "resnet20"} <= set(names)
    assert len(set(names)) == len(names)
    for name in zoo.list_models():
        spec = zoo.models.model_spec(name)
        assert json.loads(json.dumps(spec.config)) == spec.config
        assert spec.description


@pytest.mark.parametrize("name", zoo.list_models())
def test_model_rebuilds_from_its_config_alone(name):
    model, state = make_model(name, 3)
    config = json.loads(json.dumps(model.config()))
    rebuilt, rebuilt_state = zoo.models.build_model(config, key=jax.random.key(3))
    assert bool(eqx.tree_equal(model, rebuilt))
    assert bool(eqx.tree_equal(state, rebuilt_state))


@pytest.mark.parametrize("name", zoo.list_models())
def test_built_models_equal_the_eager_construction_bit_for_bit(name):
    """build_model compiles the initialisers at once (and at XLA:CPU's -O1)."""
    config = dict(zoo.models.model_spec(name).config)
    family = cast(
        Callable[..., zoo.AbstractModel],
        zoo.models._registry.FAMILIES[config.pop("family")],
    )
    for seed in (0, 11):
        built = zoo.models.build_model(
            zoo.models.model_spec(name).config, key=jax.random.key(seed)
        )
        eager = eqx.nn.make_with_state(family)(**config, key=jax.random.key(seed))
        built_arrays, built_static = eqx.partition(built, eqx.is_array)
        eager_arrays, eager_static = eqx.partition(eager, eqx.is_array)
        assert bool(eqx.tree_equal(built_static, eager_static))
        assert jax.tree.structure(built_arrays) == jax.tree.structure(eager_arrays)
        pairs = zip(
            jax.tree.leaves(built_arrays), jax.tree.leaves(eager_arrays), strict=True
        )
        for a, b in pairs:
            assert a.dtype == b.dtype and a.shape == b.shape
            assert bool(jnp.all(a == b)), f"{name}: initial values differ"


def test_initialisation_compiles_once_per_config(getkey, caplog):
    def compilations() -> list[str]:
        return [r.getMessage() for r in caplog.records if "Compiling" in r.getMessage()]

    with jax.log_compiles(), caplog.at_level(logging.WARNING):
        zoo.create_model("stax_cnn", channels=[5, 6, 7, 8], key=getkey())
        assert len(compilations()) == 1, compilations()
        caplog.clear()
        zoo.create_model("stax_cnn", channels=[5, 6, 7, 8], key=getkey())
        assert compilations() == []


def test_create_model_under_vmap_and_inside_jit():
    """Ensembles (vmap over keys) and tracing callers get the same models."""
    keys = jax.random.split(jax.random.key(5), 3)
    ensemble, _ = eqx.filter_vmap(lambda k: zoo.create_model("stax_cnn", key=k))(keys)
    for i in range(3):
        single, _ = zoo.create_model("stax_cnn", key=keys[i])
        member = jax.tree.map(
            lambda leaf, i=i: leaf[i], eqx.filter(ensemble, eqx.is_array)
        )
        assert bool(eqx.tree_equal(member, eqx.filter(single, eqx.is_array)))
    inside = eqx.filter_jit(lambda k: zoo.create_model("mlp", key=k))(keys[0])
    assert bool(eqx.tree_equal(inside, zoo.create_model("mlp", key=keys[0])))


def test_unhashable_arguments_build_eagerly_to_the_same_model():
    """A config value jit cannot key on (an array) takes the eager constructor."""
    key = jax.random.key(2)
    from_array, _ = zoo.create_model("mlp", width_size=np.array([8, 4]), key=key)
    from_list, _ = zoo.create_model("mlp", width_size=[8, 4], key=key)
    assert bool(eqx.tree_equal(from_array, from_list))


def test_create_model_overrides_and_suggestions(getkey):
    model, _ = zoo.create_model("mlp", width_size=[32], key=getkey())
    assert isinstance(model, zoo.MLP)
    assert model.width_sizes == (32,)
    with pytest.raises(KeyError, match="Did you mean 'cnn'"):
        zoo.create_model("cnm", key=getkey())
    with pytest.raises(ValueError, match="Invalid MLP config"):
        zoo.create_model("mlp", widht_size=3, key=getkey())
    with pytest.raises(ValueError, match="family"):
        zoo.models.build_model({"family": "RNN"}, key=getkey())


def test_shape_checks_name_the_argument_and_expected_shape(getkey):
    model, _ = zoo.create_model("mlp", key=getkey())
    with pytest.raises(ValueError, match=r"shape \(783,\), but MLP takes \(784,\)"):
        model(jnp.zeros(783))
    with pytest.raises(ValueError, match=r"\(32, 784\), but MLP takes .*jax.vmap"):
        model(jnp.zeros((32, 784)))


def test_integer_inputs_are_refused_with_the_fix_checks_on_or_off(getkey):
    model, _ = zoo.create_model("mlp", key=getkey())
    with pytest.raises(TypeError, match=r"dtype int32: convert with x.astype"):
        model(jnp.zeros(784, dtype=jnp.int32))
    with zoo.runtime.shape_checks(False):
        assert not zoo.runtime.shape_checks_enabled()
        # The input rule is not a check that can be switched off.
        with pytest.raises(TypeError, match="dtype int32"):
            model(jnp.zeros(784, dtype=jnp.int32))
    assert zoo.runtime.shape_checks_enabled()


def test_checks_run_at_trace_time_only(getkey):
    model, _ = zoo.create_model("mlp", key=getkey())
    calls = []

    @eqx.filter_jit
    def forward(m, x):
        calls.append(None)
        return jax.vmap(m)(x)

    for _ in range(3):
        forward(model, jnp.zeros((4, 784)))
    assert len(calls) == 1


@given(
    size=st.integers(1, 3),
    height=st.integers(1, 9),
    width=st.integers(1, 9),
    seed=st.integers(0, 2**31 - 1),
)
def test_max_pool_matches_equinox_values_and_gradients(size, height, width, seed):
    # zoo.models.MaxPool exists for speed; it must be eqx.nn.MaxPool2d(size, size).
    assume(height >= size and width >= size)
    x = jax.random.normal(jax.random.key(seed), (2, height, width))
    ours, theirs = zoo.models.MaxPool(size), eqx.nn.MaxPool2d(size, size)
    assert jnp.array_equal(ours(x), theirs(x))
    cotangent = jax.random.normal(jax.random.key(seed + 1), ours(x).shape)
    grads = [
        jax.grad(lambda x, f=f: jnp.vdot(f(x), cotangent))(x) for f in (ours, theirs)
    ]
    assert jnp.array_equal(grads[0], grads[1])


def test_max_pool_refuses_a_zero_window():
    with pytest.raises(ValueError, match="size must be >= 1"):
        zoo.models.MaxPool(0)
