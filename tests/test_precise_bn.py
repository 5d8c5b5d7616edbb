"""Precise BatchNorm: statistics re-estimated with the current weights."""

from typing import Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import assert_close

import zoo
from zoo.models import BATCH_AXIS


class _Norm(eqx.Module):
    """One BatchNorm over 3 features, then a linear layer: statistics by hand."""

    norm: eqx.nn.BatchNorm
    linear: eqx.nn.Linear

    def __init__(self, mode: Literal["ema", "batch"], *, key: jax.Array):
        self.norm = eqx.nn.BatchNorm(3, axis_name=BATCH_AXIS, mode=mode)
        self.linear = eqx.nn.Linear(3, 2, key=key)

    def __call__(self, x, state, *, key=None):
        y, state = self.norm(x, state)
        return self.linear(y), state


@pytest.mark.parametrize("mode", ["batch", "ema"])
def test_statistics_are_the_mean_of_the_batches_statistics(mode):
    model, state = eqx.nn.make_with_state(_Norm)(mode, key=jax.random.key(0))
    x = np.random.default_rng(1).normal(3.0, 2.0, (64, 3)).astype(np.float32)
    new = zoo.train.recompute_batch_norm(
        model, state, x, batch_size=16, examples=64, seed=5
    )
    chosen = np.sort(np.random.default_rng(5).permutation(64))
    batches = x[chosen].reshape(4, 16, 3)
    expected_mean = batches.mean(axis=1).mean(axis=0)
    expected_var = batches.var(axis=1).mean(axis=0)
    inference = eqx.nn.inference_mode(model)
    # In inference mode the layer normalises with exactly those statistics.
    y, _ = jax.vmap(inference.norm, in_axes=(0, None), out_axes=(0, None))(
        jnp.asarray(x), new
    )
    expected = (x - expected_mean) / np.sqrt(expected_var + inference.norm.eps)
    assert_close(y, expected, rtol=1e-5)


def test_one_batch_makes_inference_the_same_function_as_training(mnist_train):
    # With the statistics of one batch, inference mode on that batch computes
    # what training mode computes, layer after layer.
    model, state = zoo.create_model("cnn", key=jax.random.key(0))
    images = mnist_train.inputs[:64]
    new = zoo.train.recompute_batch_norm(
        model, state, images, batch_size=64, examples=64
    )
    train_logits, _ = zoo.apply(_without_dropout(model), images, state)
    inference_logits, _ = zoo.apply(eqx.nn.inference_mode(model), images, new)
    assert_close(inference_logits, train_logits, rtol=1e-4)


def test_the_same_seed_gives_the_same_statistics_and_other_state_is_kept(
    mnist_train,
):
    model, state = zoo.create_model("resnet8", key=jax.random.key(0))
    images = mnist_train.inputs[:512]
    first = zoo.train.recompute_batch_norm(model, state, images, batch_size=128)
    again = zoo.train.recompute_batch_norm(model, state, images, batch_size=128)
    other = zoo.train.recompute_batch_norm(
        model, state, images, batch_size=128, seed=1, examples=256
    )
    for a, b in zip(jax.tree.leaves(first), jax.tree.leaves(again), strict=True):
        np.testing.assert_array_equal(a, b)
    differ = [
        not np.array_equal(a, b)
        for a, b in zip(jax.tree.leaves(first), jax.tree.leaves(other), strict=True)
        if jnp.issubdtype(a.dtype, jnp.floating)
    ]
    assert all(differ)


def test_a_model_without_batch_norm_keeps_its_state(mnist_train):
    model, state = zoo.create_model("mlp", key=jax.random.key(0))
    images = mnist_train.inputs[:8]
    assert zoo.train.recompute_batch_norm(model, state, images, batch_size=128) is state


def test_refusals(mnist_train):
    model, state = zoo.create_model("cnn", key=jax.random.key(0))
    images = mnist_train.inputs[:32]
    with pytest.raises(ValueError, match="one batch of 64 examples; got 32"):
        zoo.train.recompute_batch_norm(model, state, images, batch_size=64)
    with pytest.raises(ValueError, match="at least 1"):
        zoo.train.recompute_batch_norm(model, state, images, batch_size=0)
    with pytest.raises(ValueError, match="batch_norm_examples must be 0"):
        zoo.train.make_train_step(optax.adam(1e-3), batch_norm_examples=-1)


def _without_dropout(model):
    def is_dropout(m):
        return isinstance(m, eqx.nn.Dropout)

    def drops(m):
        return [d for d in jax.tree.leaves(m, is_leaf=is_dropout) if is_dropout(d)]

    return eqx.tree_at(
        drops, model, [eqx.nn.Dropout(d.p, inference=True) for d in drops(model)]
    )


def _batch_statistics_accuracy(model, state, data, batch_size=500):
    model = _without_dropout(model)
    correct = 0
    for start in range(0, len(data), batch_size):
        x = data.inputs[start : start + batch_size]
        logits, _ = zoo.apply(model, x, state)
        correct += int(
            (np.argmax(logits, -1) == data.labels[start : start + batch_size]).sum()
        )
    return correct / len(data)


def test_a_short_run_reports_what_its_weights_can_do(mnist_train, mnist_test):
    # The quick start's trap: one short epoch of a BatchNorm CNN, whose running
    # statistics lag its weights. fit's test accuracy must be within 2 points of
    # the same weights' accuracy with batch statistics.
    model, state = zoo.create_model("cnn", key=jax.random.key(0))
    train, test = mnist_train.take(2048), mnist_test.take(2000)
    result = zoo.fit(
        model, state, train, optax.adam(1e-3), epochs=1, batch_size=128, seed=0,
        test_data=test, callbacks=[],
    )  # fmt: skip
    ts = result.train_state
    batch_stats = _batch_statistics_accuracy(ts.model, ts.model_state, test)
    reported = result.history[-1].test_accuracy
    assert reported is not None
    assert abs(reported - batch_stats) < 0.02, (reported, batch_stats)
    # The returned state is the one evaluated.
    again = zoo.evaluate(ts.model, ts.model_state, test)
    assert again["accuracy"] == reported


def test_the_step_can_turn_it_off(mnist_train, mnist_test):
    model, state = zoo.create_model("cnn", key=jax.random.key(0))
    train, test = mnist_train.take(256), mnist_test.take(500)
    step = zoo.train.make_train_step(optax.adam(1e-3), batch_norm_examples=0)
    kept = zoo.fit(
        model, state, train, step, epochs=1, batch_size=128, seed=0,
        test_data=test, callbacks=[],
    )  # fmt: skip
    plain = zoo.fit(
        model, state, train, step, epochs=1, batch_size=128, seed=0, callbacks=[]
    )
    for a, b in zip(
        jax.tree.leaves(kept.train_state.model_state),
        jax.tree.leaves(plain.train_state.model_state),
        strict=True,
    ):
        np.testing.assert_array_equal(a, b)


def test_it_stops_after_the_first_steps(mnist_train, mnist_test):
    # Past batch_norm_steps the running averages are kept: bitwise the state
    # of a run with precise BN off.
    model, state = zoo.create_model("cnn", key=jax.random.key(0))
    train, test = mnist_train.take(256), mnist_test.take(500)

    def run(**kw):
        step = zoo.train.make_train_step(optax.adam(1e-3), **kw)
        return zoo.fit(
            model, state, train, step, epochs=1, batch_size=128, seed=0,
            test_data=test, callbacks=[],
        )  # fmt: skip

    runs = [run(batch_norm_steps=1), run(batch_norm_examples=0), run()]
    late, off, default = (r.train_state.model_state for r in runs)
    for a, b in zip(jax.tree.leaves(late), jax.tree.leaves(off), strict=True):
        np.testing.assert_array_equal(a, b)
    # Within them (2 steps <= 500 by default) the statistics are re-estimated.
    assert any(
        not np.array_equal(a, b)
        for a, b in zip(jax.tree.leaves(default), jax.tree.leaves(off), strict=True)
    )


def test_which_evaluations_re_estimate():
    step = zoo.train.make_train_step(optax.adam(1e-3))
    assert step.batch_norm_steps == 500
    assert step.recomputes_batch_norm(32) and step.recomputes_batch_norm(500)
    assert not step.recomputes_batch_norm(501)
    off = zoo.train.make_train_step(optax.adam(1e-3), batch_norm_examples=0)
    assert not off.recomputes_batch_norm(1)
    with pytest.raises(ValueError, match="batch_norm_steps must be 0"):
        zoo.train.make_train_step(optax.adam(1e-3), batch_norm_steps=-1)
