"""Batch augmentations: values, dtypes, determinism, resumption and sharding."""

from typing import Any

import grain
import numpy as np
import pytest
from hypothesis import given, strategies as st

from zoo.data import (
    ArrayDataset,
    Compose,
    DeviceShift,
    RandomCrop,
    RandomErasing,
    RandomFlip,
    RandomShift,
    train_pipeline,
)

seeds = st.integers(0, 2**32 - 1)


def _batch(n: int = 6, c: int = 2, h: int = 7, w: int = 5, dtype: Any = np.uint8):
    """Distinct, non-zero pixels, so any move or fill shows."""
    images = (np.arange(n * c * h * w) % 250 + 1).reshape(n, c, h, w).astype(dtype)
    return {"inputs": images, "labels": np.arange(n), "mask": np.ones(n, bool)}


def _inputs(batch: Any) -> np.ndarray:
    """Inputs of a pipeline batch (a dict or a typed batch)."""
    return batch["inputs"] if isinstance(batch, dict) else batch.inputs


def _labels(batch: Any) -> np.ndarray:
    return batch["labels"] if isinstance(batch, dict) else batch.labels


@given(seed=seeds, p=st.sampled_from([0.0, 0.5, 1.0]))
def test_flip_mirrors_each_image_or_keeps_it(seed: int, p: float):
    batch = _batch()
    out = RandomFlip(p).random_map(batch, np.random.default_rng(seed))
    assert out["labels"] is batch["labels"] and out["mask"] is batch["mask"]
    assert out["inputs"].dtype == np.uint8
    flipped = [
        not np.array_equal(o, i)
        for o, i in zip(out["inputs"], batch["inputs"], strict=True)
    ]
    for image, moved, was_flipped in zip(
        batch["inputs"], out["inputs"], flipped, strict=True
    ):
        expected = image[:, :, ::-1] if was_flipped else image
        np.testing.assert_array_equal(moved, expected)
    if p == 0.0:
        assert not any(flipped)
    if p == 1.0:
        assert all(flipped)


def test_flip_rate_is_p():
    batch = _batch(n=4000, c=1, h=2, w=2)
    out = RandomFlip(0.3).random_map(batch, np.random.default_rng(0))
    rate = np.mean(out["inputs"][:, 0, 0, 0] != batch["inputs"][:, 0, 0, 0])
    assert 0.27 < rate < 0.33


@given(
    seed=seeds,
    padding=st.integers(0, 3),
    mode=st.sampled_from(["constant", "edge", "reflect"]),
    shrink=st.tuples(st.integers(0, 3), st.integers(0, 3)),
    dtype=st.sampled_from([np.uint8, np.float32]),
)
def test_crop_equals_padding_then_a_slice(seed, padding, mode, shrink, dtype):
    batch = _batch(dtype=dtype)
    _, _, h, w = batch["inputs"].shape
    size = (h - shrink[0], w - shrink[1])
    crop = RandomCrop(padding, size=size, fill=9, padding_mode=mode)
    out = crop.random_map(batch, np.random.default_rng(seed))
    assert out["inputs"].dtype == dtype and out["inputs"].shape[2:] == size
    widths = ((0, 0), (padding, padding), (padding, padding))
    for image, cropped in zip(batch["inputs"], out["inputs"], strict=True):
        if mode == "constant":
            padded = np.pad(image, widths, constant_values=9)
        else:
            padded = np.pad(image, widths, mode=mode)
        windows = [
            padded[:, t : t + size[0], left : left + size[1]]
            for t in range(h + 2 * padding - size[0] + 1)
            for left in range(w + 2 * padding - size[1] + 1)
        ]
        assert any(np.array_equal(cropped, window) for window in windows)


@given(seed=seeds, max_shift=st.integers(0, 3))
def test_random_shift_is_a_zero_padded_crop(seed: int, max_shift: int):
    batch = _batch()
    shifted = RandomShift(max_shift).random_map(batch, np.random.default_rng(seed))
    cropped = RandomCrop(max_shift).random_map(batch, np.random.default_rng(seed))
    np.testing.assert_array_equal(shifted["inputs"], cropped["inputs"])


@given(
    seed=seeds,
    low=st.floats(0.01, 0.5),
    extra=st.floats(0.0, 0.5),
    dtype=st.sampled_from([np.uint8, np.float32]),
)
def test_erasing_fills_one_rectangle_inside_the_image(seed, low, extra, dtype):
    batch = _batch(n=8, h=9, w=6, dtype=dtype)
    erasing = RandomErasing(0.7, scale=(low, low + extra), value=0)
    out = erasing.random_map(batch, np.random.default_rng(seed))
    assert out["inputs"].dtype == dtype
    assert out["labels"] is batch["labels"] and out["mask"] is batch["mask"]
    erase, top, left, h, w = erasing.rectangles(8, 9, 6, np.random.default_rng(seed))
    for k, (image, erased) in enumerate(
        zip(batch["inputs"], out["inputs"], strict=True)
    ):
        expected = image.copy()
        if erase[k]:
            assert top[k] >= 0 and top[k] + h[k] <= 9
            assert left[k] >= 0 and left[k] + w[k] <= 6
            assert h[k] >= 1 and w[k] >= 1
            expected[:, top[k] : top[k] + h[k], left[k] : left[k] + w[k]] = 0
        np.testing.assert_array_equal(erased, expected)


def test_erasing_area_and_aspect_follow_the_ranges():
    erasing = RandomErasing(1.0, scale=(0.1, 0.2), ratio=(0.5, 2.0))
    erase, _, _, h, w = erasing.rectangles(2000, 100, 100, np.random.default_rng(0))
    assert erase.all()
    area = h * w / 100**2
    assert area.min() >= 0.1 - 0.02 and area.max() <= 0.2 + 0.02
    aspect = h / w
    assert aspect.min() >= 0.5 * 0.9 and aspect.max() <= 2.0 * 1.1
    assert 0.14 < area.mean() < 0.16


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_erasing_with_random_noise_keeps_the_dtype_and_range(dtype):
    batch = _batch(n=16, dtype=dtype)
    if dtype == np.float32:
        batch["inputs"] = batch["inputs"] / np.float32(255.0) + np.float32(2.0)
    out = RandomErasing(1.0, value="random").random_map(batch, np.random.default_rng(0))
    assert out["inputs"].dtype == dtype
    changed = out["inputs"] != batch["inputs"]
    assert changed.any()
    if dtype == np.float32:
        noise = out["inputs"][changed]
        assert noise.min() >= 0.0 and noise.max() < 1.0


def test_compose_applies_each_transform_in_order_from_one_generator():
    batch = _batch()
    parts = [RandomCrop(2), RandomFlip(), RandomErasing(value="random")]
    composed = Compose(*parts).random_map(batch, np.random.default_rng(5))
    rng = np.random.default_rng(5)
    manual = batch
    for part in parts:
        manual = part.random_map(manual, rng)
    np.testing.assert_array_equal(composed["inputs"], manual["inputs"])
    assert composed["inputs"].dtype == np.uint8


class _Invert(grain.transforms.Map):
    def map(self, element):  # pyright: ignore[reportIncompatibleMethodOverride]
        return {**element, "inputs": 255 - element["inputs"]}


def test_compose_takes_plain_maps_and_refuses_other_things():
    batch = _batch()
    out = Compose(_Invert(), RandomFlip(0.0)).random_map(
        batch, np.random.default_rng(0)
    )
    np.testing.assert_array_equal(out["inputs"], 255 - batch["inputs"])
    with pytest.raises(TypeError, match=r"Compose takes grain\.transforms"):
        Compose(lambda x: x)  # pyright: ignore[reportArgumentType]


def _images_dataset(n: int = 60, channels: int = 1, size: int = 8) -> ArrayDataset:
    rng = np.random.default_rng(0)
    images = rng.integers(1, 256, (n, channels, size, size), dtype=np.uint8)
    return ArrayDataset(images, np.arange(n, dtype=np.int32), ("image",), "images")


def _chain() -> Compose:
    return Compose(
        RandomShift(1),
        RandomCrop(2, padding_mode="reflect"),
        RandomFlip(),
        RandomErasing(value="random"),
    )


def test_augmented_pipeline_is_reproducible_and_resumes_exactly():
    data = _images_dataset()

    def pipeline(seed: int):
        return train_pipeline(
            data, batch_size=16, seed=seed, num_epochs=3, augment=_chain()
        )

    plain = [
        _inputs(b) for b in train_pipeline(data, batch_size=16, seed=0, num_epochs=3)
    ]
    first = list(pipeline(0))
    again = list(pipeline(0))
    assert len(first) == len(again) == len(plain) == 9
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(_inputs(a), _inputs(b))
        assert _inputs(a).dtype == np.uint8
    assert not np.array_equal(_inputs(first[0]), _inputs(next(iter(pipeline(1)))))
    assert not np.array_equal(_inputs(first[0]), plain[0])
    it = iter(pipeline(0))
    for _ in range(4):
        next(it)
    fresh = iter(pipeline(0))
    fresh.set_state(it.get_state())
    rest = list(fresh)
    assert len(rest) == 5
    for a, b in zip(rest, first[4:], strict=True):
        np.testing.assert_array_equal(_inputs(a), _inputs(b))
        np.testing.assert_array_equal(_labels(a), _labels(b))


@pytest.mark.parametrize("count", [2, 3])
def test_sharded_augmentation_transforms_each_example_as_unsharded(count: int):
    # Multi-process training matches one process only if every example is
    # transformed the same way whichever process reads it.
    ds = _images_dataset(channels=3)

    def moved(batch_size: int, shard: grain.sharding.ShardOptions | None = None):
        pipeline = train_pipeline(
            ds, batch_size=batch_size, seed=3, num_epochs=2, shard=shard,
            augment=_chain(),
        )  # fmt: skip
        return [dict(zip(_labels(b), _inputs(b), strict=True)) for b in pipeline]

    whole = moved(4 * count)
    shards = [moved(4, grain.sharding.ShardOptions(i, count)) for i in range(count)]
    for k, batch in enumerate(whole):
        for shard in shards:
            assert shard[k]
            for label, image in shard[k].items():
                np.testing.assert_array_equal(image, batch[label])


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: RandomFlip(1.5), r"RandomFlip p must be in \[0, 1\]"),
        (lambda: RandomCrop(-1), "padding must be >= 0"),
        (lambda: RandomCrop(2, padding_mode="wrap"), "padding_mode must be one of"),
        (lambda: RandomCrop(2, size=(3, 0)), "size must be an int"),
        (lambda: RandomErasing(-0.1), r"RandomErasing p must be in \[0, 1\]"),
        (lambda: RandomErasing(scale=(0.5, 0.2)), "scale must satisfy"),
        (lambda: RandomErasing(ratio=(0.0, 1.0)), "ratio must satisfy"),
        (lambda: RandomErasing(value="noise"), "value must be a number or 'random'"),
        (lambda: RandomErasing(value=float("nan")), r"value must be finite"),
        (lambda: RandomShift(2.5), r"max_shift must be a whole number of pixels"),  # pyright: ignore[reportArgumentType]
        (lambda: RandomShift(True), r"max_shift must be a whole number of pixels"),
        (lambda: RandomCrop(1.5), r"padding must be a whole number of pixels"),  # pyright: ignore[reportArgumentType]
    ],
)
def test_bad_arguments_are_refused_with_the_reason(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_bad_inputs_are_refused_with_the_reason():
    rng = np.random.default_rng(0)
    flat = {"inputs": np.zeros((4, 784), np.uint8)}
    for augment in [RandomFlip(), RandomCrop(), RandomErasing(), RandomShift()]:
        with pytest.raises(ValueError, match=r"images \(batch, channels, height"):
            augment.random_map(flat, rng)
    with pytest.raises(ValueError, match="larger than the 7x5 images padded by 1"):
        RandomCrop(1, size=10).random_map(_batch(), rng)
    with pytest.raises(ValueError, match="reflect' needs padding below"):
        RandomCrop(5, padding_mode="reflect").random_map(_batch(), rng)
    with pytest.raises(ValueError, match=r"does not fit uint8 images"):
        RandomErasing(1.0, value=300).random_map(_batch(), rng)
    # A shift as large as the image could move it out of the frame entirely.
    with pytest.raises(ValueError, match=r"RandomShift\(max_shift=5\) can move 7x5"):
        RandomShift(5).random_map(_batch(), rng)
    RandomShift(4).random_map(_batch(), rng)


def test_a_pipeline_refuses_a_device_augmentation_naming_its_twin(small_train):
    with pytest.raises(TypeError, match=r"a device augmentation.*fit\(augment="):
        train_pipeline(small_train, batch_size=8, seed=0, augment=DeviceShift(2))  # pyright: ignore[reportArgumentType]
