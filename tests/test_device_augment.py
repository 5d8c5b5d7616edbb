"""Device augmentations: each equals a NumPy replay of its documented draws.

Every test draws the random parameters from the key with the ``jax.random``
calls the class's docstring names, applies them in NumPy, and asks for the
same pixels, the same dtype and the same range; strength 0 is the identity;
``jit`` and ``vmap`` change nothing; and the outcomes are those of the
host-side transform each one mirrors.
"""

import math
from typing import Any

import equinox as eqx
import grain
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, strategies as st

from zoo.data import (
    AbstractDeviceAugment,
    Compose,
    DeviceCompose,
    DeviceCrop,
    DeviceErasing,
    DeviceFlip,
    DeviceShift,
    RandomCrop,
    RandomErasing,
    RandomFlip,
    RandomShift,
    augment_batch,
    draw_batch,
    to_device_augment,
)

seeds = st.integers(0, 2**32 - 1)
dtypes = st.sampled_from([np.uint8, np.float32])
shapes = st.sampled_from([(1, 7, 5), (3, 6, 6)])
F32 = jnp.float32
# Built once, so Hypothesis's examples reuse the compiled program (an
# augmentation has no array leaves: it is part of the cache key). It is jit of
# vmap over per-example keys.
jit_augment_batch = eqx.filter_jit(augment_batch)


def _image(shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """Distinct, non-zero pixels (so any move or fill shows), in the dtype's
    range: ``1..250`` for ``uint8``, ``(0, 1]`` for floats."""
    pixels = np.arange(math.prod(shape)).reshape(shape) % 250 + 1
    if np.issubdtype(dtype, np.integer):
        return pixels.astype(dtype)
    return (pixels / 250).astype(dtype)


def _np_crop(
    image: np.ndarray, key: jax.Array, padding: int, size: tuple[int, int],
    fill: float, mode: str,
) -> np.ndarray:  # fmt: skip
    """DeviceCrop's draws, replayed; the pad and the window in NumPy."""
    _, height, width = image.shape
    spans = [height + 2 * padding - size[0] + 1, width + 2 * padding - size[1] + 1]
    top, left = np.asarray(jax.random.randint(key, (2,), 0, jnp.array(spans)))
    widths = ((0, 0), (padding, padding), (padding, padding))
    if mode == "constant":
        padded = np.pad(image, widths, constant_values=np.asarray(fill, image.dtype))
    else:
        padded = np.pad(image, widths, mode=mode)  # pyright: ignore[reportArgumentType, reportCallIssue]
    return padded[:, top : top + size[0], left : left + size[1]]


def _np_erasing(
    image: np.ndarray, key: jax.Array, p: float, scale: tuple[float, float],
    ratio: tuple[float, float], value: float | str,
) -> np.ndarray:  # fmt: skip
    """DeviceErasing's draws, replayed; the rectangle in NumPy float32."""
    channels, height, width = image.shape
    k_erase, k_area, k_ratio, k_top, k_left, k_noise = jax.random.split(key, 6)
    erase = bool(jax.random.bernoulli(k_erase, p))
    fraction = np.float32(jax.random.uniform(k_area, (), F32, *scale))
    log_ratio = jax.random.uniform(k_ratio, (), F32, *np.log(ratio).tolist())
    area = np.float32(height * width) * fraction
    aspect = np.exp(np.float32(log_ratio))
    h = np.clip(np.rint(np.sqrt(area * aspect)), 1, height)
    w = np.clip(np.rint(np.sqrt(area / aspect)), 1, width)
    top = np.floor(np.float32(jax.random.uniform(k_top, (), F32)) * (height - h + 1))
    left = np.floor(np.float32(jax.random.uniform(k_left, (), F32)) * (width - w + 1))
    out = image.copy()
    if not erase:
        return out
    window = (
        slice(None),
        slice(int(top), int(top + h)),
        slice(int(left), int(left + w)),
    )
    if value == "random":
        shape = (channels, height, width)
        if np.issubdtype(image.dtype, np.integer):
            noise = np.asarray(jax.random.randint(k_noise, shape, 0, 256))
        else:
            noise = np.asarray(jax.random.uniform(k_noise, shape, image.dtype))
        out[window] = noise.astype(image.dtype)[window]
    else:
        out[window] = value
    return out


def _assert_same(out: jax.Array, expected: np.ndarray) -> None:
    assert out.dtype == expected.dtype, (out.dtype, expected.dtype)
    np.testing.assert_array_equal(np.asarray(out), expected)


def _in_range(out: np.ndarray, image: np.ndarray, *extra: float) -> None:
    """Every pixel of ``out`` is a pixel of ``image`` or one of ``extra``."""
    allowed = np.concatenate([image.ravel(), np.asarray(extra, image.dtype)])
    assert np.isin(out, allowed).all()


@given(seed=seeds, max_shift=st.integers(0, 3), shape=shapes, dtype=dtypes)
def test_shift_replays_in_numpy(seed, max_shift, shape, dtype):
    image, key = _image(shape, dtype), jax.random.key(seed)
    out = DeviceShift(max_shift)(key, image)
    expected = _np_crop(image, key, max_shift, shape[1:], 0, "constant")
    _assert_same(out, expected)
    _in_range(expected, image, 0)
    # It is DeviceCrop(padding=max_shift), draw for draw.
    _assert_same(DeviceCrop(max_shift)(key, image), expected)


@given(
    seed=seeds,
    padding=st.integers(0, 3),
    shrink=st.tuples(st.integers(0, 3), st.integers(0, 3)),
    mode=st.sampled_from(["constant", "edge", "reflect"]),
    fill=st.sampled_from([0, 9]),
    shape=shapes,
    dtype=dtypes,
)
def test_crop_replays_in_numpy(seed, padding, shrink, mode, fill, shape, dtype):
    image, key = _image(shape, dtype), jax.random.key(seed)
    size = (shape[1] - shrink[0], shape[2] - shrink[1])
    crop = DeviceCrop(padding, size=size, fill=fill, padding_mode=mode)
    out = crop(key, image)
    expected = _np_crop(image, key, padding, size, fill, mode)
    _assert_same(out, expected)
    _in_range(expected, image, fill)


@given(seed=seeds, p=st.sampled_from([0.0, 0.3, 0.5, 1.0]), shape=shapes, dtype=dtypes)
def test_flip_replays_in_numpy(seed, p, shape, dtype):
    image, key = _image(shape, dtype), jax.random.key(seed)
    flip = bool(jax.random.bernoulli(key, p))
    _assert_same(DeviceFlip(p)(key, image), image[..., ::-1] if flip else image)


@given(
    seed=seeds,
    p=st.sampled_from([0.0, 0.5, 1.0]),
    scale=st.sampled_from([(0.02, 0.33), (0.5, 1.0), (1.0, 1.0)]),
    ratio=st.sampled_from([(0.3, 3.3), (1.0, 1.0), (0.1, 10.0)]),
    value=st.sampled_from([0, 7, "random"]),
    shape=shapes,
    dtype=dtypes,
)
def test_erasing_replays_in_numpy(seed, p, scale, ratio, value, shape, dtype):
    image, key = _image(shape, dtype), jax.random.key(seed)
    erasing = DeviceErasing(p, scale=scale, ratio=ratio, value=value)
    out = erasing(key, image)
    expected = _np_erasing(image, key, p, scale, ratio, value)
    _assert_same(out, expected)
    if value == "random":
        high = 255 if dtype == np.uint8 else 1
        assert expected.min() >= 0 and expected.max() <= high
    else:
        _in_range(expected, image, value)


def test_erasing_value_is_converted_as_the_image_dtype():
    image, key = _image((1, 6, 6), np.float32), jax.random.key(0)
    out = DeviceErasing(1.0, scale=(1.0, 1.0), ratio=(1.0, 1.0), value=0.5)(key, image)
    _assert_same(out, np.full((1, 6, 6), 0.5, np.float32))


@given(seed=seeds, shape=shapes, dtype=dtypes)
def test_compose_gives_part_i_key_i(seed, shape, dtype):
    image, key = _image(shape, dtype), jax.random.key(seed)
    parts = (DeviceCrop(2, size=4), DeviceFlip(), DeviceErasing(0.7, value="random"))
    expected = image
    for part, part_key in zip(parts, jax.random.split(key, 3), strict=True):
        expected = np.asarray(part(part_key, expected))
    _assert_same(DeviceCompose(*parts)(key, image), expected)


strength_zero = [
    DeviceShift(0),
    DeviceCrop(0),
    DeviceCrop(0, padding_mode="reflect"),
    DeviceFlip(0.0),
    DeviceErasing(0.0, value="random"),
    DeviceCompose(),
    DeviceCompose(DeviceShift(0), DeviceFlip(0.0), DeviceErasing(0.0)),
]


@given(seed=seeds, shape=shapes, dtype=dtypes)
def test_strength_zero_is_the_identity(seed, shape, dtype):
    image, key = _image(shape, dtype), jax.random.key(seed)
    batch = np.stack([image, image[:, ::-1]])
    for augment in strength_zero:
        _assert_same(augment(key, image), image)
        _assert_same(jit_augment_batch(augment, key, batch), batch)


every_kind = [
    DeviceShift(2),
    DeviceCrop(3, size=(5, 4), padding_mode="edge"),
    DeviceFlip(),
    DeviceErasing(0.8, value="random"),
    DeviceErasing(0.8, value=3),
    DeviceCompose(DeviceCrop(1), DeviceFlip(), DeviceErasing()),
]


@pytest.mark.parametrize("augment", every_kind, ids=repr)
@given(seed=seeds, dtype=dtypes)
def test_jit_and_vmap_equal_a_loop_over_examples(augment, seed, dtype):
    images = np.stack([_image((3, 6, 6), dtype)[:, :, ::i] for i in (1, -1, 1)])
    images[2] //= 2
    key = jax.random.key(seed)
    keys = jax.random.split(key, 3)
    loop = np.stack([augment(k, x) for k, x in zip(keys, images, strict=True)])
    _assert_same(jit_augment_batch(augment, key, jnp.asarray(images)), loop)


def _outcomes(images: np.ndarray) -> set[bytes]:
    return {x.tobytes() for x in images}


@pytest.mark.parametrize(
    ("host", "device"),
    [
        (RandomShift(1), DeviceShift(1)),
        (RandomCrop(1, size=(4, 3), padding_mode="reflect"), None),
        (RandomFlip(0.5), DeviceFlip(0.5)),
    ],
    ids=repr,
)
def test_outcomes_are_those_of_the_host_transform(host, device):
    """Over many draws, host and device give exactly the same set of images."""
    image = _image((2, 4, 5), np.uint8)
    n = 400
    batch = {"inputs": np.stack([image] * n)}
    host_out = host.random_map(batch, np.random.default_rng(0))["inputs"]
    device = device or to_device_augment(host)
    device_out = np.asarray(augment_batch(device, jax.random.key(0), batch["inputs"]))
    assert _outcomes(host_out) == _outcomes(device_out)


def test_erasing_rectangles_follow_the_host_rule():
    """Area fraction within ``scale`` (up to rounding), one rectangle, all channels."""
    image = np.full((2, 20, 20), 200, np.uint8)
    erasing = DeviceErasing(1.0, scale=(0.1, 0.2), ratio=(0.5, 2.0))
    out = np.asarray(augment_batch(erasing, jax.random.key(0), np.stack([image] * 300)))
    erased = out == 0
    assert (erased[:, 0] == erased[:, 1]).all()
    rows, cols = erased[:, 0].any(axis=2).sum(1), erased[:, 0].any(axis=1).sum(1)
    assert (erased[:, 0].sum((1, 2)) == rows * cols).all()  # a rectangle
    fraction = rows * cols / 400
    assert fraction.min() > 0.07 and fraction.max() < 0.24
    assert fraction.min() < 0.12 and fraction.max() > 0.18  # the range is used


def test_flip_rate_is_p():
    images = np.stack([_image((1, 2, 2), np.uint8)] * 4000)
    out = np.asarray(augment_batch(DeviceFlip(0.3), jax.random.key(0), images))
    rate = np.mean(out[:, 0, 0, 0] != images[:, 0, 0, 0])
    assert 0.27 < rate < 0.33


def test_to_device_augment_keeps_the_parameters():
    host = Compose(
        RandomCrop(3, size=5, fill=7, padding_mode="edge"),
        RandomFlip(0.2),
        RandomErasing(0.4, scale=(0.1, 0.3), ratio=(0.5, 2.0), value="random"),
        RandomShift(2),
    )
    assert to_device_augment(host) == DeviceCompose(
        DeviceCrop(3, size=(5, 5), fill=7, padding_mode="edge"),
        DeviceFlip(0.2),
        DeviceErasing(0.4, scale=(0.1, 0.3), ratio=(0.5, 2.0), value="random"),
        DeviceShift(2),
    )

    class Identity(grain.transforms.Map):
        def map(self, element):  # pyright: ignore[reportIncompatibleMethodOverride]
            return element

    with pytest.raises(TypeError, match=r"Identity.*no device twin"):
        to_device_augment(Compose(RandomFlip(), Identity()))


def test_bad_arguments_say_what_to_do():
    key, image = jax.random.key(0), _image((1, 6, 6), np.uint8)
    with pytest.raises(ValueError, match="DeviceCrop padding must be >= 0"):
        DeviceCrop(-1)
    with pytest.raises(ValueError, match="DeviceFlip p must be in"):
        DeviceFlip(1.5)
    with pytest.raises(ValueError, match="DeviceErasing scale"):
        DeviceErasing(scale=(0.5, 0.1))
    with pytest.raises(ValueError, match="max_shift must be >= 0"):
        DeviceShift(-2)
    with pytest.raises(ValueError, match="max_shift must be a whole number"):
        DeviceShift(2.5)  # pyright: ignore[reportArgumentType]
    with pytest.raises(ValueError, match=r"DeviceErasing value must be finite"):
        DeviceErasing(value=float("inf"))
    with pytest.raises(ValueError, match=r"DeviceShift\(max_shift=\d+\) can move"):
        DeviceShift(max(image.shape[1:]))(key, image)
    with pytest.raises(ValueError, match=r"ONE image.*augment_batch"):
        DeviceShift(1)(key, image[None])
    with pytest.raises(ValueError, match=r"fill 300 does not fit uint8.*\[0, 255\]"):
        DeviceCrop(1, fill=300)(key, image)
    with pytest.raises(ValueError, match=r"value 0\.5 does not fit uint8"):
        DeviceErasing(1.0, value=0.5)(key, image)
    with pytest.raises(ValueError, match="window 9x9 is larger"):
        DeviceCrop(1, size=9)(key, image)
    with pytest.raises(ValueError, match="reflect' needs padding below"):
        DeviceCrop(6, padding_mode="reflect")(key, image)
    with pytest.raises(ValueError, match=r"\(batch, channels, height, width\)"):
        augment_batch(DeviceFlip(), key, image)
    with pytest.raises(TypeError, match="to_device_augment"):
        augment_batch(RandomShift(1), key, image[None])  # pyright: ignore[reportArgumentType]
    with pytest.raises(ValueError, match="draw_batch takes images"):
        draw_batch(DeviceFlip(), key, (6, 6))
    with pytest.raises(TypeError, match="to_device_augment"):
        DeviceCompose(RandomFlip())  # pyright: ignore[reportArgumentType]


def test_an_augmentation_of_your_own_composes():
    class Brighten(AbstractDeviceAugment):
        def draw(self, key, shape):
            del shape
            return jax.random.randint(key, (), 0, 5)

        def apply(self, draws, image):
            return image + draws.astype(image.dtype)

    image, key = _image((1, 3, 3), np.uint8), jax.random.key(0)
    k_brighten = jax.random.split(key)[0]
    expected = image + np.uint8(jax.random.randint(k_brighten, (), 0, 5))
    out = DeviceCompose(Brighten(), DeviceFlip(0.0))(key, image)
    _assert_same(out, expected)


@pytest.mark.parametrize("augment", every_kind, ids=repr)
def test_draws_made_before_a_scan_give_the_same_images(augment):
    """A step that scans K batches may draw all K first, then only apply."""
    images = np.stack([[_image((3, 6, 6), np.uint8) + i + k for i in range(4)]
                       for k in range(3)])  # fmt: skip
    keys = jax.random.split(jax.random.key(7), 3)

    @jax.jit
    def scanned(keys, images):
        draws = jax.vmap(lambda k: draw_batch(augment, k, images.shape[1:]))(keys)

        def body(_, xs):
            step_draws, x = xs
            return None, jax.vmap(augment.apply)(step_draws, x)

        return jax.lax.scan(body, None, (draws, images))[1]

    expected = np.stack(
        [augment_batch(augment, k, x) for k, x in zip(keys, images, strict=True)]
    )
    _assert_same(scanned(keys, jnp.asarray(images)), expected)
