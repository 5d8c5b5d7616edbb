"""evaluate refuses labels its model cannot score, as fit does."""

import dataclasses

import jax
import numpy as np
import pytest

import zoo
from zoo.data import load_toy
from zoo.train import evaluate
from zoo.train._labels import check_labels


@pytest.mark.parametrize(("bad", "low", "high"), [(2, 0, 2), (-1, -1, 1)])
def test_out_of_range_labels_are_refused(bad: int, low: int, high: int):
    model, state = zoo.create_model("toy_mlp", key=jax.random.key(0))
    data = load_toy("test")
    labels = data.labels.copy()
    labels[3] = bad
    wrong = dataclasses.replace(data, labels=labels)
    message = (
        rf"dataset has labels in \[{low}, {high}\] but the model has 2 outputs: "
        r"labels must be in \[0, 2\)\."
    )
    with pytest.raises(ValueError, match=message):
        evaluate(model, state, wrong)
    with pytest.raises(ValueError, match=message.replace("dataset", "test_data")):
        check_labels(model, wrong, "test_data")


def test_labels_in_range_evaluate():
    model, state = zoo.create_model("toy_mlp", key=jax.random.key(0))
    data = load_toy("test")
    result = evaluate(model, state, data)
    assert result["count"] == len(data)
    assert np.isfinite(result["loss"])
