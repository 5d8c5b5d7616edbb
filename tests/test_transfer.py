"""Transfer learning: features, head-only filters, training only what is trainable."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import zoo
from zoo.data import ArrayDataset, Chunk
from zoo.train import TrainState, make_train_step, partition_trainable


def _bits(tree) -> list[bytes]:
    return [
        np.asarray(x).tobytes() for x in jax.tree.leaves(eqx.filter(tree, eqx.is_array))
    ]


@pytest.mark.parametrize("name", ["mlp", "toy_mlp", "stax_cnn", "lenet5", "resnet8"])
def test_features_feed_the_head(name: str):
    model, state = zoo.create_model(name, key=jax.random.key(0))
    x = jax.random.uniform(jax.random.key(1), (3, *model.input_shape))
    feats = zoo.features(model, x, state)
    head = zoo.models._transfer.head(model)
    assert feats.shape == (3, head.in_features)
    logits, _ = zoo.apply(eqx.nn.inference_mode(model), x, state)
    if name == "toy_mlp":  # its final activation, log_softmax, follows the head
        logits = jnp.exp(logits)
        np.testing.assert_allclose(
            logits, jax.nn.softmax(jax.vmap(head)(feats)), rtol=1e-5, atol=1e-6
        )
    else:
        np.testing.assert_allclose(logits, jax.vmap(head)(feats), rtol=1e-5, atol=1e-5)


def test_features_need_the_state_of_a_stateful_model():
    model, _ = zoo.create_model("stax_cnn", key=jax.random.key(0))
    with pytest.raises(ValueError, match="stateful"):
        zoo.features(model, jnp.zeros((2, 1, 28, 28)))


def test_head_only_selects_the_classifier():
    for name, head in [("mlp", "layers[2]"), ("cnn", "output"), ("resnet8", "output")]:
        model, _ = zoo.create_model(name, key=jax.random.key(0))
        params, _ = partition_trainable(model, zoo.head_only(model))
        paths = [
            jax.tree_util.keystr(p)
            for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]
        ]
        assert paths == [f".{head}.weight", f".{head}.bias"]


def _chunk(model: zoo.AbstractModel, steps: int = 2, batch: int = 16) -> Chunk:
    rng = np.random.default_rng(0)
    shape = (steps, batch, *model.input_shape)
    inputs = rng.integers(0, 256, shape, dtype=np.uint8)
    labels = rng.integers(0, model.out_size, (steps, batch)).astype(np.int32)
    return Chunk(inputs, labels, np.ones((steps, batch), np.bool_))


@pytest.mark.parametrize("name", ["mlp", "stax_cnn"])
def test_head_only_step_freezes_the_backbone_bitwise(name: str):
    model, state = zoo.create_model(name, key=jax.random.key(0))
    spec = zoo.head_only(model)
    optimizer = optax.adam(1e-2)
    ts = TrainState.init(model, state, optimizer, key=jax.random.key(1), trainable=spec)
    # The optimiser state covers the head only: adam's two moments of it.
    head = zoo.models._transfer.head(model)
    assert head.bias is not None
    moments = [x.shape for x in jax.tree.leaves(ts.opt_state) if x.ndim > 0]
    assert sorted(moments) == sorted([head.weight.shape, head.bias.shape] * 2)
    step = make_train_step(optimizer, trainable=spec)
    new, _ = step(ts, _chunk(model))
    backbone = eqx.tree_at(lambda m: zoo.models._transfer.head(m), model, None)
    new_backbone = eqx.tree_at(lambda m: zoo.models._transfer.head(m), new.model, None)
    assert _bits(backbone) == _bits(new_backbone)
    new_head = zoo.models._transfer.head(new.model)
    assert new_head.bias is not None
    assert not np.array_equal(head.weight, new_head.weight)
    assert not np.array_equal(head.bias, new_head.bias)


def test_training_everything_is_the_default():
    model, state = zoo.create_model("mlp", key=jax.random.key(0))
    assert isinstance(model, zoo.MLP)
    optimizer = optax.sgd(0.1)
    ts = TrainState.init(model, state, optimizer, key=jax.random.key(1))
    everything = TrainState.init(
        model, state, optimizer, key=jax.random.key(1), trainable=True
    )
    chunk = _chunk(model)
    a, _ = make_train_step(optimizer)(ts, chunk)
    b, _ = make_train_step(optimizer, trainable=True)(everything, chunk)
    assert _bits(a.model) == _bits(b.model)
    assert isinstance(a.model, zoo.MLP)
    assert not np.array_equal(a.model.layers[0].weight, model.layers[0].weight)


def _biases_as_prefix(model: zoo.MLP):
    """Only the biases, as a spec that is a prefix of the model's structure."""
    spec = jax.tree.map(lambda _: False, model)
    return eqx.tree_at(
        lambda m: [layer.bias for layer in m.layers],
        spec,
        replace=[True] * len(model.layers),
    )


def _biases_as_callable(model: zoo.MLP):
    """Only the biases, as a predicate on each leaf."""
    del model
    return lambda leaf: eqx.is_array(leaf) and leaf.ndim == 1


@pytest.mark.parametrize("make_spec", [_biases_as_prefix, _biases_as_callable])
def test_a_filter_trains_only_what_it_selects(make_spec):
    model, state = zoo.create_model("mlp", key=jax.random.key(0))
    assert isinstance(model, zoo.MLP)
    spec = make_spec(model)
    optimizer = optax.sgd(0.1)
    ts = TrainState.init(model, state, optimizer, key=jax.random.key(1), trainable=spec)
    new, _ = make_train_step(optimizer, trainable=spec)(ts, _chunk(model))
    assert isinstance(new.model, zoo.MLP)
    for before, after in zip(model.layers, new.model.layers, strict=True):
        assert np.array_equal(before.weight, after.weight)
        assert not np.array_equal(np.asarray(before.bias), np.asarray(after.bias))


def test_a_bad_filter_spec_is_refused_clearly():
    model, _ = zoo.create_model("mlp", key=jax.random.key(0))
    with pytest.raises(ValueError, match="filter spec over the model"):
        partition_trainable(model, [True, False])


def test_fit_head_only_with_a_new_head(small_train: ArrayDataset):
    model, state = zoo.create_model(
        "mlp", pretrained="mnist", out_size=10, key=jax.random.key(5)
    )
    result = zoo.fit(
        model, state, small_train,
        zoo.train.make_train_step(optax.adam(1e-3), trainable=zoo.head_only(model)),
        epochs=1, batch_size=128, callbacks=[],
    )  # fmt: skip
    trained = result.model
    assert isinstance(trained, zoo.MLP)
    assert isinstance(model, zoo.MLP)
    for before, after in zip(model.layers[:-1], trained.layers[:-1], strict=True):
        assert np.asarray(before.weight).tobytes() == np.asarray(after.weight).tobytes()
    assert not np.array_equal(model.layers[-1].weight, trained.layers[-1].weight)
