"""Grain pipelines: batch format, shuffling, coverage, resumption, sharding."""

import itertools
import json

import grain
import numpy as np
import pytest
from hypothesis import given, strategies as st

from zoo.data import (
    ArrayDataset,
    Batch,
    Chunk,
    RandomShift,
    eval_pipeline,
    steps_per_epoch,
    train_pipeline,
)
from zoo.data._pipeline import epoch_of_step


def _indexed(n: int) -> ArrayDataset:
    """A dataset whose label is each example's index (and its input, too)."""
    index = np.arange(n, dtype=np.int32)
    inputs = np.stack([index, -index], axis=1).astype(np.float32)
    return ArrayDataset(inputs, index, ("x",), f"indexed/{n}")


def _take(pipeline: grain.IterDataset[Batch], count: int) -> list[Batch]:
    return list(itertools.islice(iter(pipeline), count))


def _real(batches: list[Batch]) -> np.ndarray:
    """The labels of the real (unmasked) rows, in order."""
    return np.concatenate([b.labels[b.mask] for b in batches])


def _assert_same(a: list[Batch], b: list[Batch]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        for field_x, field_y in zip(x, y, strict=True):
            np.testing.assert_array_equal(field_x, field_y)


def test_steps_per_epoch() -> None:
    assert steps_per_epoch(60_000, 128, drop_remainder=True) == 468
    assert steps_per_epoch(60_000, 128, drop_remainder=False) == 469
    assert steps_per_epoch(10_000, 128, drop_remainder=False) == 79
    assert steps_per_epoch(256, 128) == 2
    two = grain.sharding.ShardOptions(shard_index=1, shard_count=2)
    assert steps_per_epoch(101, 10, drop_remainder=False, shard=two) == 6  # 51 max
    assert steps_per_epoch(101, 10, drop_remainder=True, shard=two) == 5  # 50 min
    with pytest.raises(ValueError, match="batch_size"):
        steps_per_epoch(10, 0)


def test_epoch_of_step() -> None:
    assert [epoch_of_step(k, 3) for k in range(7)] == [0, 0, 0, 1, 1, 1, 2]


def test_train_batch_format(mnist_train: ArrayDataset) -> None:
    batch = next(iter(train_pipeline(mnist_train, batch_size=128, seed=0)))
    assert isinstance(batch, Batch)
    assert batch._fields == ("inputs", "labels", "mask", "targets")
    assert batch.targets is None  # the dataset has none
    assert batch.inputs.shape == (128, 1, 28, 28)
    assert batch.inputs.dtype == np.uint8
    assert batch.labels.shape == (128,)
    assert batch.labels.dtype == np.int32
    assert batch.mask.dtype == np.bool_
    assert batch.mask.all()


def test_scale(mnist_train: ArrayDataset) -> None:
    raw = _take(train_pipeline(mnist_train, batch_size=64, seed=3), 2)
    scaled = _take(train_pipeline(mnist_train, batch_size=64, seed=3, scale=True), 2)
    for r, s in zip(raw, scaled, strict=True):
        assert s.inputs.dtype == np.float32
        assert s.inputs.min() >= 0.0 and s.inputs.max() <= 1.0
        np.testing.assert_allclose(s.inputs, r.inputs / 255.0, rtol=1e-6)
        np.testing.assert_array_equal(s.labels, r.labels)
    with pytest.raises(ValueError, match="uint8"):
        train_pipeline(_indexed(10), batch_size=2, seed=0, scale=True)


def test_same_seed_same_batches() -> None:
    ds = _indexed(50)
    a = _take(train_pipeline(ds, batch_size=8, seed=7), 20)
    b = _take(train_pipeline(ds, batch_size=8, seed=7, prefetch=0), 20)
    _assert_same(a, b)


def test_different_seed_or_epoch_different_order() -> None:
    ds = _indexed(50)
    epoch0, epoch1 = (
        _real(_take(train_pipeline(ds, batch_size=10, seed=seed), 10))
        for seed in (1, 2)
    )
    assert not np.array_equal(epoch0, epoch1)
    both = _real(_take(train_pipeline(ds, batch_size=10, seed=1), 10))
    first, second = both[:50], both[50:]
    assert not np.array_equal(first, second)
    assert not np.array_equal(first, np.arange(50))
    np.testing.assert_array_equal(np.sort(first), np.sort(second))


def test_epochs_are_permutations_when_padding() -> None:
    ds = _indexed(103)
    pipeline = train_pipeline(
        ds, batch_size=16, seed=0, num_epochs=3, drop_remainder=False
    )
    batches = list(pipeline)
    steps = steps_per_epoch(103, 16, drop_remainder=False)
    assert steps == 7
    assert len(batches) == 3 * steps
    for epoch in range(3):
        chunk = batches[epoch * steps : (epoch + 1) * steps]
        assert all(b.labels.shape == (16,) for b in chunk)
        assert all(b.mask.all() for b in chunk[:-1])
        assert chunk[-1].mask.sum() == 103 - 6 * 16
        assert not chunk[-1].inputs[~chunk[-1].mask].any()  # zero padding
        np.testing.assert_array_equal(np.sort(_real(chunk)), np.arange(103))


def test_epochs_drop_remainder() -> None:
    ds = _indexed(103)
    batches = list(train_pipeline(ds, batch_size=16, seed=0, num_epochs=2))
    assert len(batches) == 2 * 6
    for epoch in range(2):
        labels = _real(batches[epoch * 6 : (epoch + 1) * 6])
        assert len(labels) == 96
        assert len(np.unique(labels)) == 96  # distinct: 7 < 16 dropped


def test_inputs_follow_labels() -> None:
    for batch in _take(train_pipeline(_indexed(40), batch_size=8, seed=5), 10):
        np.testing.assert_array_equal(batch.inputs[:, 0], batch.labels)
        np.testing.assert_array_equal(batch.inputs[:, 1], -batch.labels)


def test_eval_covers_mnist_test_once(mnist_test: ArrayDataset) -> None:
    batches = list(eval_pipeline(mnist_test, batch_size=128))
    assert len(batches) == 79
    assert all(b.inputs.shape == (128, 1, 28, 28) for b in batches)
    assert all(b.mask.all() for b in batches[:-1])
    assert batches[-1].mask.sum() == 16
    np.testing.assert_array_equal(_real(batches), mnist_test.labels)
    total = sum(int(b.inputs[b.mask].sum(dtype=np.int64)) for b in batches)
    assert total == int(mnist_test.inputs.sum(dtype=np.int64))
    assert batches[0].inputs.dtype == np.uint8


def test_eval_scale_and_repeatable(mnist_test: ArrayDataset) -> None:
    pipeline = eval_pipeline(mnist_test, batch_size=1000, scale=True)
    first, again = list(pipeline), list(pipeline)
    _assert_same(first, again)
    assert first[0].inputs.dtype == np.float32
    np.testing.assert_allclose(
        first[3].inputs, mnist_test.inputs[3000:4000] / 255.0, rtol=1e-6
    )


def test_state_is_json() -> None:
    it = iter(train_pipeline(_indexed(20), batch_size=4, seed=0))
    next(it)
    state = it.get_state()
    assert json.loads(json.dumps(state)) == state


@pytest.mark.parametrize("consumed", [0, 3, 7, 10])
@pytest.mark.parametrize("prefetch", [0, 2])
def test_resume(consumed: int, prefetch: int) -> None:
    """A fresh iterator restored from a saved state continues exactly."""
    ds = _indexed(100)

    def make() -> grain.IterDataset[Batch]:
        return train_pipeline(
            ds,
            batch_size=16,
            seed=11,
            num_epochs=3,
            drop_remainder=False,
            prefetch=prefetch,
        )

    reference = list(make())  # 3 epochs of 7 steps
    it = iter(make())
    seen = [next(it) for _ in range(consumed)]
    state = json.loads(json.dumps(it.get_state()))
    it.close()
    fresh = iter(make())
    fresh.set_state(state)
    _assert_same(seen + list(fresh), reference)


def test_resume_forever_pipeline_across_epochs(mnist_train: ArrayDataset) -> None:
    steps = steps_per_epoch(len(mnist_train), 512)
    pipeline = train_pipeline(mnist_train, batch_size=512, seed=0)
    it = iter(pipeline)
    for _ in range(steps - 2):
        next(it)
    state = it.get_state()
    expected = [next(it) for _ in range(5)]  # crosses into epoch 1
    fresh = iter(pipeline)
    fresh.set_state(state)
    _assert_same([next(fresh) for _ in range(5)], expected)


@given(
    n=st.integers(1, 60),
    batch_size=st.integers(1, 9),
    seed=st.integers(0, 2**16),
    drop_remainder=st.booleans(),
    scale=st.booleans(),
    shard=st.sampled_from([(0, 1), (0, 2), (1, 2), (2, 3)]),
    takes=st.lists(st.integers(0, 7), min_size=1, max_size=12),
)
def test_chunks_taken_at_once_equal_the_batches_stacked(
    n, batch_size, seed, drop_remainder, scale, shard, takes
):
    """``next_chunk(K)`` (one gather, what DeviceFeed takes) hands out exactly
    the ``K`` batches ``next`` would, in any mix with ``next``, across epochs,
    shards, padded batches and scaling; where it cannot it takes nothing."""
    index = np.arange(n)
    inputs = np.stack([index % 251, (7 * index) % 256], axis=1).astype(np.uint8)
    ds = ArrayDataset(inputs, index.astype(np.int32), ("x",), f"u8/{n}")
    options = grain.sharding.ShardOptions(*shard, drop_remainder=drop_remainder)
    if steps_per_epoch(n, batch_size, drop_remainder, shard=options) == 0:
        return

    def make() -> grain.IterDataset[Batch]:
        return train_pipeline(
            ds, batch_size=batch_size, seed=seed, num_epochs=3,
            drop_remainder=drop_remainder, scale=scale, shard=options, prefetch=0,
        )  # fmt: skip

    reference = list(make())
    it = iter(make())
    taken: list[Batch] = []
    for count in takes:
        before = it.get_state()
        chunk = it.next_chunk(count) if count else None  # pyright: ignore[reportAttributeAccessIssue]
        if chunk is None:
            assert it.get_state() == before  # took nothing
            taken.extend(itertools.islice(it, max(count, 1)))
        else:
            assert isinstance(chunk, Chunk) and chunk.steps == count
            taken.extend(chunk.batch(i) for i in range(count))
        assert it.get_state() == {"next_index": len(taken)}
    _assert_same(taken, reference[: len(taken)])


def test_whole_epochs_are_taken_as_chunks_unless_augmented_or_prefetched() -> None:
    ds = _indexed(100)
    it = iter(train_pipeline(ds, batch_size=10, seed=0, num_epochs=2, prefetch=0))
    chunks = [it.next_chunk(5) for _ in range(4)]  # pyright: ignore[reportAttributeAccessIssue]
    assert all(c is not None for c in chunks)
    assert it.next_chunk(1) is None  # pyright: ignore[reportAttributeAccessIssue]
    for per_batch in (
        train_pipeline(ds, batch_size=10, seed=0, prefetch=2),
        train_pipeline(ds, batch_size=10, seed=0, prefetch=0, augment=RandomShift(1)),
    ):
        assert not hasattr(iter(per_batch), "next_chunk")


def _two_shards() -> list[grain.sharding.ShardOptions]:
    return [grain.sharding.ShardOptions(shard_index=i, shard_count=2) for i in (0, 1)]


def test_train_shards_cover_each_epoch_once() -> None:
    ds = _indexed(101)
    per_shard = [
        list(
            train_pipeline(
                ds,
                batch_size=8,
                seed=4,
                num_epochs=2,
                drop_remainder=False,
                shard=shard,
            )
        )
        for shard in _two_shards()
    ]
    steps = steps_per_epoch(101, 8, drop_remainder=False, shard=_two_shards()[0])
    assert [len(b) for b in per_shard] == [2 * steps, 2 * steps]  # lockstep
    for epoch in range(2):
        parts = [_real(b[epoch * steps : (epoch + 1) * steps]) for b in per_shard]
        assert not set(parts[0]) & set(parts[1])
        np.testing.assert_array_equal(np.sort(np.concatenate(parts)), np.arange(101))


def test_train_shards_drop_remainder_are_disjoint() -> None:
    ds = _indexed(101)
    parts = [
        _real(list(train_pipeline(ds, batch_size=8, seed=4, num_epochs=1, shard=s)))
        for s in _two_shards()
    ]
    assert [len(p) for p in parts] == [48, 48]
    assert not set(parts[0]) & set(parts[1])


@pytest.mark.parametrize("count", [2, 3])
def test_sharded_batches_are_shares_of_the_unsharded_batches(count: int) -> None:
    # What makes data-parallel training independent of the number of processes.
    ds = _indexed(100)
    whole = list(train_pipeline(ds, batch_size=6 * count, seed=7, num_epochs=2))
    shards = [
        list(
            train_pipeline(
                ds,
                batch_size=6,
                seed=7,
                num_epochs=2,
                shard=grain.sharding.ShardOptions(i, count),
            )
        )
        for i in range(count)
    ]
    assert all(len(s) == len(whole) for s in shards)
    for k, batch in enumerate(whole):
        parts = np.concatenate([_real([s[k]]) for s in shards])
        np.testing.assert_array_equal(np.sort(parts), np.sort(_real([batch])))


def test_eval_shards_cover_once(mnist_test: ArrayDataset) -> None:
    per_shard = [
        list(eval_pipeline(mnist_test, batch_size=128, shard=s)) for s in _two_shards()
    ]
    assert len(per_shard[0]) == len(per_shard[1]) == 40
    np.testing.assert_array_equal(
        np.concatenate([_real(b) for b in per_shard]), mnist_test.labels
    )


def test_eval_shards_uneven() -> None:
    ds = _indexed(21)
    shards = [grain.sharding.ShardOptions(i, 4) for i in range(4)]
    per_shard = [list(eval_pipeline(ds, batch_size=2, shard=s)) for s in shards]
    assert {len(b) for b in per_shard} == {3}  # 6 examples max -> 3 steps each
    np.testing.assert_array_equal(
        np.concatenate([_real(b) for b in per_shard]), np.arange(21)
    )


def test_shard_by_jax_process_single_process() -> None:
    ds = _indexed(30)
    batches = list(
        eval_pipeline(ds, batch_size=8, shard=grain.sharding.ShardByJaxProcess())
    )
    np.testing.assert_array_equal(_real(batches), np.arange(30))


def test_rejects_bad_arguments() -> None:
    ds = _indexed(10)
    with pytest.raises(ValueError, match="batch_size"):
        train_pipeline(ds, batch_size=0, seed=0)
    with pytest.raises(ValueError, match="epoch is empty"):
        train_pipeline(ds, batch_size=11, seed=0)
    with pytest.raises(ValueError, match="seed"):
        train_pipeline(ds, batch_size=2, seed=-1)
    with pytest.raises(ValueError, match="num_epochs"):
        train_pipeline(ds, batch_size=2, seed=0, num_epochs=0)
    with pytest.raises(ValueError, match="prefetch"):
        eval_pipeline(ds, batch_size=2, prefetch=-1)
    with pytest.raises(ValueError, match="prefetch"):
        train_pipeline(ds, batch_size=2, seed=0, prefetch=-1)
    assert (
        len(
            list(
                train_pipeline(
                    ds, batch_size=11, seed=0, num_epochs=1, drop_remainder=False
                )
            )
        )
        == 1
    )


def _shifted(image: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """``image (C, H, W)`` moved down ``dy`` and right ``dx``, zeros shifted in."""
    out = np.zeros_like(image)
    _, h, w = image.shape
    out[:, max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = image[
        :, max(-dy, 0) : h - max(dy, 0), max(-dx, 0) : w - max(dx, 0)
    ]
    return out


@given(max_shift=st.integers(0, 3), seed=st.integers(0, 2**32 - 1))
def test_random_shift_moves_each_image_within_bounds(max_shift: int, seed: int):
    images = (np.arange(4 * 2 * 6 * 5) % 250 + 1).astype(np.uint8).reshape(4, 2, 6, 5)
    batch = {"inputs": images, "labels": np.arange(4), "mask": np.ones(4, bool)}
    out = RandomShift(max_shift).random_map(batch, np.random.default_rng(seed))
    assert out["labels"] is batch["labels"] and out["mask"] is batch["mask"]
    assert out["inputs"].dtype == np.uint8 and out["inputs"].shape == images.shape
    offsets = range(-max_shift, max_shift + 1)
    for image, moved in zip(images, out["inputs"], strict=True):
        assert any(
            np.array_equal(moved, _shifted(image, dy, dx))
            for dy in offsets
            for dx in offsets
        )


def test_augmented_pipeline_is_reproducible_and_resumes_exactly(
    mnist_test: ArrayDataset,
) -> None:
    data = mnist_test.take(300)

    def pipeline(seed: int):
        return train_pipeline(
            data, batch_size=64, seed=seed, num_epochs=3, augment=RandomShift(2)
        )

    plain = list(train_pipeline(data, batch_size=64, seed=0, num_epochs=3))
    first = list(pipeline(0))
    _assert_same(list(pipeline(0)), first)
    assert not np.array_equal(first[0].inputs, next(iter(pipeline(1))).inputs)
    assert not np.array_equal(first[0].inputs, plain[0].inputs)
    for a, b in zip(first, plain, strict=True):  # same examples, moved
        np.testing.assert_array_equal(a.labels, b.labels)
        assert a.inputs.sum(dtype=np.int64) <= b.inputs.sum(dtype=np.int64)
    it = iter(pipeline(0))
    for _ in range(5):
        next(it)
    fresh = iter(pipeline(0))
    fresh.set_state(it.get_state())
    _assert_same(list(fresh), first[5:])


@pytest.mark.parametrize("count", [2, 3])
def test_sharded_augmentation_moves_each_example_as_unsharded(count: int) -> None:
    # Multi-process training with augmentation matches one process only if every
    # example gets the same shift whichever process reads it.
    n = 60
    index = np.arange(n, dtype=np.int32)
    images = np.random.default_rng(0).integers(1, 256, (n, 1, 7, 7), dtype=np.uint8)
    ds = ArrayDataset(images, index, ("image",), "indexed-images")

    def moved(batch_size: int, shard: grain.sharding.ShardOptions | None = None):
        pipeline = train_pipeline(
            ds, batch_size=batch_size, seed=3, num_epochs=2, shard=shard,
            augment=RandomShift(2),
        )  # fmt: skip
        return [dict(zip(b.labels, b.inputs, strict=True)) for b in pipeline]

    whole = moved(4 * count)
    shards = [moved(4, grain.sharding.ShardOptions(i, count)) for i in range(count)]
    for k, batch in enumerate(whole):
        for shard in shards:
            for label, image in shard[k].items():
                np.testing.assert_array_equal(image, batch[label])


def test_random_shift_refuses_bad_arguments():
    with pytest.raises(ValueError, match="max_shift must be >= 0"):
        RandomShift(-1)
    with pytest.raises(ValueError, match=r"shifts images \(batch, channels"):
        RandomShift(1).random_map(
            {"inputs": np.zeros((4, 784), np.uint8)}, np.random.default_rng(0)
        )


def test_a_pipeline_refuses_arrays_and_a_batch_size_that_is_no_int():
    x, y = np.zeros((8, 2), np.float32), np.zeros(8, np.int32)
    with pytest.raises(TypeError, match=r"reads a zoo\.data\.ArrayDataset, got tuple"):
        train_pipeline((x, y), batch_size=4, seed=0)  # pyright: ignore[reportArgumentType]
    with pytest.raises(TypeError, match=r"batch_size must be an int >= 1, got '4'"):
        eval_pipeline(ArrayDataset(x, y), batch_size="4")  # pyright: ignore[reportArgumentType]
