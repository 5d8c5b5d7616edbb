"""The training set kept on the device: same batches, device augmentation, choice."""

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import zoo
from zoo.data import (
    ArrayDataset,
    AugmentedChunk,
    Chunk,
    DeviceShift,
    IndexedChunk,
    RandomShift,
)
from zoo.train import DeviceFeed, ResidentFeed
from zoo.train._feed import augment_key, data_placement, fits_on_device


def _fit(data: ArrayDataset, name: str = "mlp", **kwargs: object) -> zoo.FitResult:
    model, state = zoo.create_model(name, key=jax.random.key(0))
    return zoo.fit(
        model, state, data, optax.adam(1e-3), epochs=2, batch_size=64, seed=5,
        steps_per_call=3, callbacks=[], **kwargs,  # pyright: ignore[reportArgumentType]
    )  # fmt: skip


def _arrays(result: zoo.FitResult) -> list[np.ndarray]:
    return [
        np.asarray(x) for x in jax.tree.leaves(eqx.filter(result.model, eqx.is_array))
    ]


def _assert_bitwise(a: zoo.FitResult, b: zoo.FitResult) -> None:
    for x, y in zip(_arrays(a), _arrays(b), strict=True):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("augment", [None, DeviceShift(2)], ids=["plain", "shift"])
@pytest.mark.parametrize("name", ["mlp", "lenet5"])  # a rolled and an unrolled loop
def test_a_loop_over_either_feed_trains_bitwise_alike(small_train, name, augment):
    # 16 steps an epoch in chunks of 5: a chunk of 1 ends each epoch.
    model, state = zoo.create_model(name, key=jax.random.key(0))
    key = augment_key(0)
    step = zoo.train.make_train_step(optax.sgd(0.05))
    results = []
    for resident in (False, True):
        batches: Any = iter(
            zoo.data.train_pipeline(
                small_train, batch_size=64, seed=2, num_epochs=2, prefetch=0
            )
        )
        feed = (
            ResidentFeed(
                batches,
                small_train,
                steps_per_call=5,
                steps_per_epoch=16,
                augment=augment,
                key=key,
            )
            if resident
            else DeviceFeed(
                batches, steps_per_call=5, steps_per_epoch=16, augment=augment, key=key
            )
        )
        ts = step.init(model, state, key=jax.random.key(0))
        for chunk in feed:
            ts, _ = step(ts, chunk)
        assert int(ts.step) == 32
        results.append(jax.tree.leaves(eqx.filter(ts.model, eqx.is_array)))
    for a, b in zip(*results, strict=True):
        np.testing.assert_array_equal(a, b)


def test_resident_feed_names_the_rows_the_host_feed_gathers(small_train):
    def pipeline() -> Any:
        return iter(
            zoo.data.train_pipeline(
                small_train, batch_size=64, seed=1, num_epochs=2, prefetch=0
            )
        )

    host = DeviceFeed(pipeline(), steps_per_call=5, steps_per_epoch=16)  # pyright: ignore[reportArgumentType]
    resident = ResidentFeed(
        pipeline(), small_train, steps_per_call=5, steps_per_epoch=16
    )  # pyright: ignore[reportArgumentType]
    lengths = []
    for chunk, rows in zip(host, resident, strict=True):
        assert isinstance(chunk, Chunk) and isinstance(rows, IndexedChunk)
        np.testing.assert_array_equal(chunk.inputs, small_train.inputs[rows.rows])
        np.testing.assert_array_equal(chunk.labels, small_train.labels[rows.rows])
        assert host.data_state == resident.data_state
        lengths.append(rows.steps)
    assert lengths == [5, 5, 5, 1] * 2


def test_resident_feed_refuses_a_pipeline_that_cannot_name_rows(small_train):
    augmented = zoo.data.train_pipeline(
        small_train, batch_size=64, seed=0, prefetch=0, augment=RandomShift(2)
    )
    with pytest.raises(TypeError, match="augment on the device"):
        ResidentFeed(iter(augmented), small_train, steps_per_call=2)  # pyright: ignore[reportArgumentType]


def test_device_augmentation_is_a_function_of_the_key_and_the_global_step(small_train):
    augment, key = DeviceShift(2), augment_key(7)
    inputs = jnp.asarray(small_train.inputs)
    labels = jnp.asarray(small_train.labels)
    rows = jnp.asarray(np.random.default_rng(0).permutation(1024)[:256].reshape(4, 64))

    def batches(first: int, rows: jax.Array) -> np.ndarray:
        indexed = IndexedChunk(inputs, labels, rows)
        chunk = AugmentedChunk(indexed, jnp.int32(first), key, augment)
        gathered = jax.jit(lambda c: c.gather())(chunk)
        np.testing.assert_array_equal(gathered.labels, labels[rows])
        return np.asarray(gathered.inputs)

    whole = batches(10, rows)
    for i, got in enumerate(whole):  # batch i is augment_batch at step 10 + i
        step_key = jax.random.fold_in(key, 10 + i)
        want = zoo.data.augment_batch(augment, step_key, inputs[rows[i]])
        np.testing.assert_array_equal(got, want)
    # A chunk cut elsewhere (a resumed run) draws the same for the same step.
    np.testing.assert_array_equal(batches(12, rows[2:])[0], whole[2])
    assert not np.array_equal(whole[0], np.asarray(inputs[rows[0]]))


def test_fit_with_device_augmentation(small_train, capsys):
    plain = _fit(small_train)
    identity = _fit(small_train, augment=DeviceShift(0))
    _assert_bitwise(plain, identity)  # strength 0 changes nothing
    shifted = _fit(small_train, augment=DeviceShift(2))
    again = _fit(small_train, augment=DeviceShift(2))
    _assert_bitwise(shifted, again)
    assert not all(
        np.array_equal(a, b)
        for a, b in zip(_arrays(plain), _arrays(shifted), strict=True)
    )
    model, state = zoo.create_model("mlp", key=jax.random.key(0))
    zoo.fit(
        model, state, small_train, optax.sgd(0.1), epochs=1, batch_size=64,
        augment=DeviceShift(2), callbacks=[zoo.train.EpochLogger()],
    )  # fmt: skip
    first = capsys.readouterr().out.splitlines()[0]
    assert first == (
        "data from the host (0.8 MB, augmented on the device): on a CPU, "
        "gathering overlaps the step"
    )


def test_where_fit_keeps_the_data(small_train):
    def place(augment: object = None, sharded=False, backend="gpu") -> tuple:
        return data_placement(small_train, augment, sharded=sharded, backend=backend)

    assert place() == (
        True,
        "on the device (0.8 MB): batches gathered in the compiled step",
    )
    assert place(DeviceShift(2)) == (
        True,
        "on the device (0.8 MB): batches gathered in the compiled step, "
        "augmented on the device",
    )
    assert place(backend="cpu") == (
        False,
        "from the host (0.8 MB): on a CPU, gathering overlaps the step",
    )
    on_device, why = place(RandomShift(2))
    assert not on_device and "to_device_augment" in why
    on_device, why = place(sharded=True)
    assert not on_device and "mesh" in why
    on_device, why = place(DeviceShift(2), sharded=True)
    assert not on_device and "augmented on the device" in why
    assert fits_on_device(small_train.inputs.nbytes)
    assert not fits_on_device(1 << 40)  # a terabyte: fed from the host
