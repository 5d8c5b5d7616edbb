"""zoo.train.confusion_matrix: exact counts, masks, jit, and batches that add up."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from zoo.train import confusion_matrix


def test_confusion_matrix_hand_computed():
    labels = jnp.array([0, 0, 1, 1, 1, 2, 2, 0])
    predictions = jnp.array([0, 1, 1, 1, 2, 2, 0, 0])
    expected = np.array(
        [
            [2, 1, 0],  # true 0: predicted 0, 1, 0
            [0, 2, 1],  # true 1: predicted 1, 1, 2
            [1, 0, 1],  # true 2: predicted 2, 0
        ]
    )
    got = confusion_matrix(labels, predictions, 3)
    assert got.dtype == jnp.int32
    np.testing.assert_array_equal(got, expected)


def test_confusion_matrix_masks_padding_and_drops_ids_out_of_range():
    labels = jnp.array([0, 1, 1, -1, 3, 0])
    predictions = jnp.array([0, 1, 0, 0, 0, 4])
    mask = jnp.array([True, True, False, True, True, True])
    got = confusion_matrix(labels, predictions, 3, mask)
    np.testing.assert_array_equal(got, [[1, 0, 0], [0, 1, 0], [0, 0, 0]])
    empty = confusion_matrix(jnp.zeros(0, jnp.int32), jnp.zeros(0, jnp.int32), 2)
    np.testing.assert_array_equal(empty, np.zeros((2, 2)))


def test_confusion_matrix_of_batches_adds_up_under_jit():
    rng = np.random.default_rng(0)
    labels = jnp.asarray(rng.integers(0, 5, 64), jnp.int32)
    predictions = jnp.asarray(rng.integers(0, 5, 64), jnp.int32)
    counts = jax.jit(functools.partial(confusion_matrix, num_classes=5))
    total = sum(
        counts(labels[i : i + 16], predictions[i : i + 16]) for i in range(0, 64, 16)
    )
    np.testing.assert_array_equal(total, confusion_matrix(labels, predictions, 5))
    np.testing.assert_array_equal(
        np.asarray(total).sum(axis=1), np.bincount(np.asarray(labels), minlength=5)
    )


def test_confusion_matrix_checks_its_arguments():
    ids = jnp.array([0, 1])
    with pytest.raises(ValueError, match="num_classes"):
        confusion_matrix(ids, ids, 0)
    with pytest.raises(TypeError, match="predictions"):
        confusion_matrix(ids, jnp.array([0, 1, 1]), 2)
    with pytest.raises(TypeError, match="labels"):
        confusion_matrix(jnp.array([0.0, 1.0]), ids, 2)
