"""Distillation: a teacher's logits as the targets, and the loss that reads them."""

from typing import Any

import equinox as eqx
import hypothesis.extra.numpy as hnp
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings, strategies as st

import zoo
from tests import helpers
from zoo.data import ArrayDataset, DeviceShift, RandomShift
from zoo.train import DeviceFeed, ResidentFeed
from zoo.train._feed import augment_key

logit_rows = hnp.arrays(
    np.float32, (3, 5), elements=st.floats(-20, 20, width=32, allow_nan=False)
)


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


@settings(max_examples=40, deadline=None)
@given(
    student=logit_rows,
    teacher=logit_rows,
    temperature=st.floats(0.5, 8.0),
    weight=st.floats(0.0, 1.0),
    smoothing=st.sampled_from([0.0, 0.1]),
)
def test_distillation_is_hintons_loss(student, teacher, temperature, weight, smoothing):
    labels = np.array([0, 3, 4])
    loss = zoo.train.distillation(temperature, weight, smoothing=smoothing)
    got = np.asarray(
        loss(jnp.asarray(student), jnp.asarray(labels), jnp.asarray(teacher))
    )
    s, t = student.astype(np.float64), teacher.astype(np.float64)
    p, q = _softmax(t / temperature), _softmax(s / temperature)
    kl = np.sum(p * (np.log(p + 1e-300) - np.log(q + 1e-300)), axis=-1)
    hard_target = np.full((3, 5), smoothing / 5) + (1 - smoothing) * np.eye(5)[labels]
    hard = -np.sum(hard_target * np.log(_softmax(s) + 1e-300), axis=-1)
    expected = (1 - weight) * hard + weight * temperature**2 * kl
    np.testing.assert_allclose(got, expected, rtol=2e-4, atol=2e-4)


@settings(max_examples=25, deadline=None)
@given(student=logit_rows, teacher=logit_rows, temperature=st.floats(0.5, 8.0))
def test_the_soft_terms_gradient_is_t_times_the_softmaxes_gap(
    student, teacher, temperature
):
    # d/ds [T^2 KL(softmax(t/T) || softmax(s/T))] = T (softmax(s/T) - softmax(t/T))
    loss = zoo.train.distillation(temperature, weight=1.0)
    labels = jnp.zeros(3, jnp.int32)
    grad = jax.grad(lambda s: loss(s, labels, jnp.asarray(teacher)).sum())(
        jnp.asarray(student)
    )
    expected = temperature * (
        _softmax(student.astype(np.float64) / temperature)
        - _softmax(teacher.astype(np.float64) / temperature)
    )
    np.testing.assert_allclose(np.asarray(grad), expected, atol=2e-5)


def test_without_its_soft_term_it_is_label_smoothing_and_a_twin_teacher_adds_nothing():
    logits = jnp.asarray(np.random.default_rng(0).normal(size=(4, 10)), jnp.float32)
    labels = jnp.array([1, 2, 3, 9])
    smooth = zoo.train.label_smoothing(0.1)(logits, labels)
    hard_only = zoo.train.distillation(weight=0.0, smoothing=0.1)
    np.testing.assert_array_equal(hard_only(logits, labels, logits * 7), smooth)
    np.testing.assert_array_equal(hard_only.on_labels(logits, labels), smooth)
    soft = zoo.train.distillation(weight=1.0)(logits, labels, logits)
    np.testing.assert_allclose(soft, 0.0, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"temperature": 0.0}, "temperature"),
        ({"temperature": float("nan")}, "temperature"),
        ({"weight": 1.5}, "weight"),
        ({"smoothing": 1.0}, "smoothing"),
    ],
)
def test_distillation_refuses_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        zoo.train.distillation(**kwargs)


def test_the_loss_refuses_targets_that_are_not_one_logit_per_class():
    loss = zoo.train.distillation()
    with pytest.raises(ValueError, match=r"teacher's logits as targets"):
        loss(jnp.zeros((2, 10)), jnp.zeros(2, jnp.int32), jnp.zeros((2, 3)))


# ------------------------------------------------------------ the data path --


def test_dataset_targets_are_checked_and_kept():
    x, y = np.zeros((4, 2), np.float32), np.array([0, 1, 2, 1])
    ds = ArrayDataset(x, y, targets=np.arange(12, dtype=np.float64).reshape(4, 3))
    assert ds.targets is not None and ds.targets.dtype == np.float32
    np.testing.assert_array_equal(ds[2]["targets"], [6.0, 7.0, 8.0])
    assert ds.take(2).targets.shape == (2, 3)  # pyright: ignore[reportOptionalMemberAccess]
    assert "targets=[4, 3]" in repr(ds)
    assert "targets" not in ArrayDataset(x, y)[0]
    assert ArrayDataset(x, y).with_targets(np.ones((4, 3))).targets is not None
    with pytest.raises(ValueError, match=r"expected \(4, T\)"):
        ArrayDataset(x, y, targets=np.ones((3, 3)))
    with pytest.raises(ValueError, match=r"expected \(4, T\)"):
        ArrayDataset(x, y, targets=np.ones(4))
    with pytest.raises(TypeError, match="floating point"):
        ArrayDataset(x, y, targets=np.ones((4, 3), np.int32))
    bad = np.ones((4, 3))
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match="first: example 2"):
        ArrayDataset(x, y, targets=bad)


def _indexed(data: ArrayDataset) -> ArrayDataset:
    """``data`` whose target row ``i`` is ``(i, label_i)``: a chunk's targets
    name the examples it holds."""
    n = len(data)
    targets = np.stack([np.arange(n), data.labels], axis=1).astype(np.float32)
    return data.with_targets(targets)


def _check_rows(inputs: Any, labels: Any, targets: Any, data: ArrayDataset) -> None:
    rows = np.asarray(targets)[..., 0].astype(np.int64)
    np.testing.assert_array_equal(np.asarray(targets)[..., 1], np.asarray(labels))
    np.testing.assert_array_equal(np.asarray(labels), data.labels[rows])
    if inputs is not None:
        np.testing.assert_array_equal(np.asarray(inputs), data.inputs[rows])


@pytest.mark.parametrize("feed", ["host", "host-augmented", "resident"])
def test_every_feed_carries_each_examples_targets_with_it(small_train, feed):
    data = _indexed(small_train.take(640))
    augment = RandomShift(2) if feed == "host-augmented" else None
    batches: Any = iter(
        zoo.data.train_pipeline(
            data, batch_size=64, seed=3, num_epochs=2, prefetch=0, augment=augment
        )
    )
    if feed == "resident":
        chunks = ResidentFeed(batches, data, steps_per_call=4, steps_per_epoch=10)
    else:
        chunks = DeviceFeed(batches, steps_per_call=4, steps_per_epoch=10)
    seen = 0
    for each in chunks:
        chunk = each if isinstance(each, zoo.data.Chunk) else each.gather()
        inputs = None if augment else chunk.inputs
        _check_rows(inputs, chunk.labels, chunk.targets, data)
        seen += chunk.labels.size
    assert seen == 2 * 640


def test_device_augmentation_keeps_the_targets(small_train):
    data = _indexed(small_train.take(256))
    batches: Any = iter(
        zoo.data.train_pipeline(data, batch_size=64, seed=0, num_epochs=1, prefetch=0)
    )
    feed = ResidentFeed(
        batches, data, steps_per_call=4, augment=DeviceShift(2), key=augment_key(0)
    )
    chunk = jax.jit(lambda c: c.gather())(next(iter(feed)))
    _check_rows(None, chunk.labels, chunk.targets, data)


# -------------------------------------------------------------------- fit --


def _fit(data: ArrayDataset, loss: Any, **kwargs: Any) -> zoo.FitResult:
    model, state = zoo.create_model("mlp", key=jax.random.key(0))
    step = zoo.train.make_train_step(optax.adam(1e-3), loss=loss)
    return zoo.fit(
        model, state, data, step, epochs=2, batch_size=64, seed=1,
        steps_per_call=3, callbacks=[], **kwargs,
    )  # fmt: skip


def _leaves(result: zoo.FitResult) -> list[np.ndarray]:
    return [
        np.asarray(x) for x in jax.tree.leaves(eqx.filter(result.model, eqx.is_array))
    ]


def test_teacher_logits_are_the_teachers_outputs_for_every_example(small_train):
    teacher, state = zoo.create_model("mlp", key=jax.random.key(7))
    data = small_train.take(250)
    logits = zoo.train.teacher_logits(teacher, state, data, batch_size=64)
    assert logits.shape == (250, 10) and logits.dtype == np.float32
    expected, _ = zoo.apply(eqx.nn.inference_mode(teacher), data.inputs, state)
    np.testing.assert_allclose(logits, np.asarray(expected), rtol=1e-5, atol=1e-5)


def test_fit_distils_a_teacher_and_its_hard_term_alone_trains_as_label_smoothing(
    small_train, small_test
):
    teacher, state = zoo.create_model("mlp", key=jax.random.key(7))
    data = small_train.take(640)
    taught = data.with_targets(zoo.train.teacher_logits(teacher, state, data))
    smooth = _fit(data, zoo.train.label_smoothing(0.1), test_data=small_test)
    hard = _fit(taught, zoo.train.distillation(weight=0.0, smoothing=0.1))
    # The same batches and steps; XLA fuses the two losses apart, so the
    # last bits may differ.
    for a, b in zip(_leaves(smooth), _leaves(hard), strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=2e-6)
    distilled = _fit(
        taught, zoo.train.distillation(weight=0.9, smoothing=0.1), test_data=small_test
    )
    gap = max(
        float(np.abs(a - b).max())
        for a, b in zip(_leaves(smooth), _leaves(distilled), strict=True)
    )
    assert gap > 1e-3
    # Evaluation reads labels alone: the hard term stands in for the loss.
    last = distilled.history[-1]
    assert last.test_loss is not None and np.isfinite(last.test_loss)
    assert last.test_accuracy is not None and 0.0 <= last.test_accuracy <= 1.0


def test_fit_refuses_targets_and_losses_that_disagree(small_train):
    data = small_train.take(256)
    with pytest.raises(ValueError, match="takes \\(logits, labels\\) only"):
        _fit(data.with_targets(np.zeros((256, 10))), zoo.train.softmax_cross_entropy)
    with pytest.raises(ValueError, match="teacher_logits"):
        _fit(data, zoo.train.distillation())
    with pytest.raises(ValueError, match="3 columns and the model 10 outputs"):
        _fit(data.with_targets(np.zeros((256, 3))), zoo.train.distillation())


def test_the_docs_distillation_block_runs():
    scope: dict[str, Any] = {}
    code = helpers.docs_block("training.md", "distillation")
    exec(compile(code, "docs/training.md", "exec"), scope)
    result = scope["result"]
    assert scope["train"].targets.shape == (1024, 10)
    assert np.isfinite(result.history[-1].train_loss)
