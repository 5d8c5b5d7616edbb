"""Data augmentation as JAX functions of a key, to run inside a compiled step.

The twins of the host-side Grain transforms in ``_augment.py``: the same
parameters, fills and ranges, but each is an ``eqx.Module`` called on ONE
channels-first image with its own key, ``augment(key, image) -> image``, and
traced into the training step instead of run on the host. Every shape is
static (a crop is a ``dynamic_slice`` of the padded image, an erased rectangle
a mask), so a batch is ``jax.vmap`` over per-example keys:
[`augment_batch`][zoo.data.augment_batch]. Each class documents the
``jax.random`` calls it makes, so a draw can be replayed outside JAX.
"""

import abc
import functools
import math
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, PRNGKeyArray, Shaped

from .._checks import checked
from ._augment import (
    Compose,
    RandomCrop,
    RandomErasing,
    RandomFlip,
    RandomShift,
)

Image = Shaped[Array, "channels height width"]
_Self = TypeVar("_Self")
_Host = TypeVar("_Host", RandomShift, RandomCrop, RandomFlip, RandomErasing)
Images = Shaped[Array, "batch channels height width"]


def _one_image(augment: object, image: Array) -> None:
    if image.ndim != 3:
        raise ValueError(
            f"{type(augment).__name__} takes ONE image (channels, height, width), "
            f"got shape {image.shape}; augment a batch with "
            "zoo.data.augment_batch(augment, key, images)."
        )


def _image_call(fn: Callable[[_Self, Any, Any], Array]) -> Callable[..., Array]:
    """Decorate ``__call__(self, key, image)``: a NumPy image becomes an array and
    a batch is refused with the fix, then the annotations are checked."""
    inner = checked(fn)

    @functools.wraps(fn)
    def wrapper(self: _Self, key: Any, image: Any) -> Array:
        image = jnp.asarray(image)
        _one_image(self, image)
        return inner(self, key, image)

    return wrapper


def _host_twin(name: str, host_class: type[_Host], *args: Any, **kwargs: Any) -> _Host:
    """The host transform of these parameters, its checks speaking for ``name``."""
    try:
        return host_class(*args, **kwargs)
    except ValueError as error:
        raise ValueError(str(error).replace(host_class.__name__, name)) from None


def _fill(value: float, dtype: jnp.dtype, what: str) -> Array:
    """``value`` as a scalar of ``dtype``; refused where an integer image cannot
    hold it."""
    if jnp.issubdtype(dtype, jnp.integer):
        info = jnp.iinfo(dtype)
        if not (float(value).is_integer() and info.min <= value <= info.max):
            raise ValueError(
                f"{what} {value!r} does not fit {dtype} images; use an integer "
                f"in [{info.min}, {info.max}]."
            )
    return jnp.asarray(value).astype(dtype)


class AbstractDeviceAugment(eqx.Module):
    """A random transformation of ONE image, a pure function of its key.

    ``augment(key, image)`` takes a channels-first image ``(C, H, W)`` of any
    dtype and returns an image of the same dtype. Hyperparameters are static
    fields, so an augmentation can be closed over by, or passed to, a jitted
    step. Subclass it for an augmentation of your own.
    """

    @abc.abstractmethod
    def __call__(
        self, key: PRNGKeyArray, image: Image
    ) -> Shaped[Array, "channels out_height out_width"]:
        """Transform ``image`` with the draws of ``key``."""


def _crop(
    augment: AbstractDeviceAugment,
    key: PRNGKeyArray,
    image: Array,
    padding: int,
    size: tuple[int, int] | None,
    fill: float,
    padding_mode: str,
) -> Array:
    """Pad, then take the window at ``top, left`` drawn from ``key`` (DeviceCrop)."""
    channels, height, width = image.shape
    out_h, out_w = size or (height, width)
    name, p = type(augment).__name__, padding
    if out_h > height + 2 * p or out_w > width + 2 * p:
        raise ValueError(
            f"{name} window {out_h}x{out_w} is larger than the {height}x{width} "
            f"images padded by {p}; use a smaller size or more padding."
        )
    if padding_mode == "reflect" and p >= min(height, width):
        raise ValueError(
            f"{name} padding_mode='reflect' needs padding below the image size, "
            f"got padding {p} for {height}x{width} images."
        )
    if p == 0 and (out_h, out_w) == (height, width):
        return image
    widths = ((0, 0), (p, p), (p, p))
    if padding_mode == "constant":
        value = _fill(fill, image.dtype, f"{name} fill")
        padded = jnp.pad(image, widths, constant_values=value)
    else:
        padded = jnp.pad(image, widths, mode=padding_mode)
    k_top, k_left = jax.random.split(key)
    top = jax.random.randint(k_top, (), 0, height + 2 * p - out_h + 1)
    left = jax.random.randint(k_left, (), 0, width + 2 * p - out_w + 1)
    return jax.lax.dynamic_slice(padded, (0, top, left), (channels, out_h, out_w))


class DeviceShift(AbstractDeviceAugment):
    """Shift an image by a random whole-pixel offset; the device twin of
    [`RandomShift`][zoo.data.RandomShift].

    The image moves by ``dy, dx`` uniform in ``[-max_shift, max_shift]``;
    pixels shifted in from outside are zero. It is
    ``DeviceCrop(padding=max_shift)``, with the same draws:
    ``k_top, k_left = jax.random.split(key)``, then
    ``top = jax.random.randint(k_top, (), 0, 2 * max_shift + 1)`` and ``left``
    likewise, and ``dy, dx = max_shift - top, max_shift - left``.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> image = jnp.arange(9, dtype=jnp.uint8).reshape(1, 3, 3)
        >>> DeviceShift(1)(jax.random.key(0), image).shape
        (1, 3, 3)
    """

    max_shift: int = eqx.field(static=True)

    def __init__(self, max_shift: int = 2):
        """Args:
        max_shift: the largest shift in pixels, along each axis (>= 0).
        """
        self.max_shift = _host_twin("DeviceShift", RandomShift, max_shift).max_shift

    @_image_call
    def __call__(self, key: PRNGKeyArray, image: Image) -> Image:
        """Shift ``image`` ``(C, H, W)``; same shape and dtype."""
        return _crop(self, key, image, self.max_shift, None, 0, "constant")


class DeviceCrop(AbstractDeviceAugment):
    """Pad an image, then cut a window at a random position; the device twin
    of [`RandomCrop`][zoo.data.RandomCrop].

    The image ``(C, H, W)`` is padded by ``padding`` pixels on each side (with
    ``fill``, or by repeating or mirroring its edge) and the ``size`` window
    whose corner is ``top, left`` is kept, drawn as
    ``k_top, k_left = jax.random.split(key)``,
    ``top = jax.random.randint(k_top, (), 0, H + 2 * padding - size_h + 1)``
    and ``left`` likewise over the width. With ``padding=0`` and the input's
    size the image is returned as it is.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> image = jnp.ones((3, 32, 32), jnp.float32)
        >>> DeviceCrop(padding=4)(jax.random.key(0), image).shape
        (3, 32, 32)
    """

    padding: int = eqx.field(static=True)
    size: tuple[int, int] | None = eqx.field(static=True)
    fill: int | float = eqx.field(static=True)
    padding_mode: str = eqx.field(static=True)

    def __init__(
        self,
        padding: int = 4,
        *,
        size: int | Sequence[int] | None = None,
        fill: int | float = 0,
        padding_mode: str = "constant",
    ):
        """Args:
        padding: pixels added on each side before cropping (>= 0).
        size: the window's height and width (an int for a square); ``None``
            keeps the input's size.
        fill: the value of padded pixels when ``padding_mode="constant"``;
            it must fit the image's dtype (checked when traced).
        padding_mode: ``"constant"`` (``fill``), ``"edge"`` (repeat the border
            pixel) or ``"reflect"`` (mirror without repeating the border).
        """
        host = _host_twin(
            "DeviceCrop", RandomCrop, padding, size=size, fill=fill,
            padding_mode=padding_mode,
        )  # fmt: skip
        self.padding = host.padding
        self.size = host.size
        self.fill = host.fill
        self.padding_mode = host.padding_mode

    @_image_call
    def __call__(
        self, key: PRNGKeyArray, image: Image
    ) -> Shaped[Array, "channels out_height out_width"]:
        """Crop ``image`` ``(C, H, W)`` to ``size``; same dtype."""
        return _crop(
            self, key, image, self.padding, self.size, self.fill, self.padding_mode
        )


class DeviceFlip(AbstractDeviceAugment):
    """Mirror an image left-right with probability ``p``; the device twin of
    [`RandomFlip`][zoo.data.RandomFlip].

    The image is flipped where ``jax.random.bernoulli(key, p)`` is true. For
    clothes, objects and scenes, never digits or text.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> image = jnp.arange(3, dtype=jnp.uint8).reshape(1, 1, 3)
        >>> DeviceFlip(p=1.0)(jax.random.key(0), image)
        Array([[[2, 1, 0]]], dtype=uint8)
    """

    p: float = eqx.field(static=True)

    def __init__(self, p: float = 0.5):
        """Args:
        p: the probability that the image is flipped, in ``[0, 1]``.
        """
        self.p = _host_twin("DeviceFlip", RandomFlip, p).p

    @_image_call
    def __call__(self, key: PRNGKeyArray, image: Image) -> Image:
        """Flip ``image`` ``(C, H, W)`` or keep it; same shape and dtype."""
        if self.p == 0.0:
            return image
        return jnp.where(jax.random.bernoulli(key, self.p), image[..., ::-1], image)


class DeviceErasing(AbstractDeviceAugment):
    """Fill a random rectangle of an image with probability ``p``; the device
    twin of [`RandomErasing`][zoo.data.RandomErasing].

    For an image ``(C, H, W)``, with
    ``k_erase, k_area, k_ratio, k_top, k_left, k_noise = jax.random.split(key, 6)``:
    ``erase = jax.random.bernoulli(k_erase, p)``; an area
    ``a = H * W * jax.random.uniform(k_area, (), float32, *scale)`` and an
    aspect ratio ``r = exp(jax.random.uniform(k_ratio, (), float32,
    log(ratio[0]), log(ratio[1])))`` give the sides
    ``h = clip(rint(sqrt(a * r)), 1, H)`` and ``w = clip(rint(sqrt(a / r)), 1, W)``;
    the corner is ``top = floor(jax.random.uniform(k_top, (), float32) *
    (H - h + 1))`` and ``left`` likewise (float32 arithmetic throughout). The
    rectangle's pixels, in every channel, become ``value``, or for
    ``"random"`` the pixels of ``jax.random.randint(k_noise, (C, H, W), 0, 256)`` (integer images) or
    ``jax.random.uniform(k_noise, (C, H, W), image.dtype)`` (float images).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> image = jnp.full((1, 8, 8), 255, jnp.uint8)
        >>> out = DeviceErasing(p=1.0)(jax.random.key(0), image)
        >>> bool((out == 0).any()), out.dtype
        (True, dtype('uint8'))
    """

    p: float = eqx.field(static=True)
    scale: tuple[float, float] = eqx.field(static=True)
    ratio: tuple[float, float] = eqx.field(static=True)
    value: int | float | str = eqx.field(static=True)

    def __init__(
        self,
        p: float = 0.5,
        *,
        scale: tuple[float, float] = (0.02, 0.33),
        ratio: tuple[float, float] = (0.3, 3.3),
        value: int | float | str = 0,
    ):
        """Args:
        p: the probability that the image gets a rectangle, in ``[0, 1]``.
        scale: the range of the rectangle's area, as fractions of the image's,
            ``0 < low <= high <= 1``.
        ratio: the range of its height / width, ``0 < low <= high``.
        value: the fill (it must fit the image's dtype, checked when traced),
            or ``"random"`` for uniform noise per pixel (over ``0..255`` for
            integer images, ``[0, 1)`` for float images).
        """
        host = _host_twin(
            "DeviceErasing", RandomErasing, p, scale=scale, ratio=ratio, value=value
        )
        self.p, self.scale, self.ratio = host.p, host.scale, host.ratio
        self.value = host.value

    @_image_call
    def __call__(self, key: PRNGKeyArray, image: Image) -> Image:
        """Erase a rectangle of ``image`` ``(C, H, W)`` or keep it; same shape
        and dtype."""
        if self.p == 0.0:
            return image
        channels, height, width = image.shape
        k_erase, k_area, k_ratio, k_top, k_left, k_noise = jax.random.split(key, 6)
        f32 = jnp.float32
        erase = jax.random.bernoulli(k_erase, self.p)
        area = height * width * jax.random.uniform(k_area, (), f32, *self.scale)
        low, high = math.log(self.ratio[0]), math.log(self.ratio[1])
        aspect = jnp.exp(jax.random.uniform(k_ratio, (), f32, low, high))
        h = jnp.clip(jnp.rint(jnp.sqrt(area * aspect)), 1, height)
        w = jnp.clip(jnp.rint(jnp.sqrt(area / aspect)), 1, width)
        top = jnp.floor(jax.random.uniform(k_top, (), f32) * (height - h + 1))
        left = jnp.floor(jax.random.uniform(k_left, (), f32) * (width - w + 1))
        rows = jnp.arange(height, dtype=jnp.float32)
        cols = jnp.arange(width, dtype=jnp.float32)
        inside = ((rows >= top) & (rows < top + h))[:, None] & (
            (cols >= left) & (cols < left + w)
        )[None, :]
        mask = (inside & erase)[None, :, :]
        if self.value == "random":
            shape = (channels, height, width)
            if jnp.issubdtype(image.dtype, jnp.integer):
                noise = jax.random.randint(k_noise, shape, 0, 256)
                fill = noise.astype(image.dtype)
            else:
                fill = jax.random.uniform(k_noise, shape, image.dtype)
        else:
            fill = _fill(float(self.value), image.dtype, f"{type(self).__name__} value")
        return jnp.where(mask, fill, image)


class DeviceCompose(AbstractDeviceAugment):
    """Apply several device augmentations in order; the device twin of
    [`Compose`][zoo.data.Compose].

    Part ``i`` of ``n`` draws from ``jax.random.split(key, n)[i]``.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> augment = DeviceCompose(DeviceCrop(2), DeviceFlip(), DeviceErasing())
        >>> augment(jax.random.key(0), jnp.zeros((1, 28, 28), jnp.uint8)).shape
        (1, 28, 28)
    """

    augments: tuple[AbstractDeviceAugment, ...]

    def __init__(self, *augments: AbstractDeviceAugment):
        """Args:
        *augments: the augmentations, applied first to last.
        """
        for a in augments:
            if not isinstance(a, AbstractDeviceAugment):
                raise TypeError(
                    f"DeviceCompose takes device augmentations (DeviceShift, "
                    f"DeviceCrop, DeviceFlip, DeviceErasing, ...), got {a!r}; "
                    "zoo.data.to_device_augment(...) makes one from a host-side "
                    "transform."
                )
        self.augments = tuple(augments)

    @_image_call
    def __call__(
        self, key: PRNGKeyArray, image: Image
    ) -> Shaped[Array, "channels out_height out_width"]:
        """Apply every part to ``image`` ``(C, H, W)``, in order."""
        if not self.augments:
            return image
        keys = jax.random.split(key, len(self.augments))
        for part, part_key in zip(self.augments, keys, strict=True):
            image = part(part_key, image)
        return image


def augment_batch(
    augment: AbstractDeviceAugment,
    key: PRNGKeyArray,
    images: Shaped[Array | np.ndarray, "batch channels height width"],
) -> Shaped[Array, "batch channels out_height out_width"]:
    """Augment a batch, each image with its own key: for use inside a step.

    Image ``i`` of the batch gets ``jax.random.split(key, B)[i]``, so the
    result is a pure function of ``key`` and the images; under ``jit`` the
    batch is one fused program with no host work.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> images = jnp.zeros((8, 1, 28, 28), jnp.uint8)
        >>> augment_batch(DeviceShift(2), jax.random.key(0), images).shape
        (8, 1, 28, 28)

    Args:
        augment: a device augmentation, e.g. ``DeviceShift(2)``.
        key: one key for the whole batch (e.g. the step's, folded in).
        images: ``(B, C, H, W)`` channels-first images, any dtype.

    Returns:
        The augmented images, of the same dtype.

    Raises:
        TypeError: ``augment`` is not a device augmentation.
        ValueError: ``images`` is not a batch of channels-first images.
    """
    if not isinstance(augment, AbstractDeviceAugment):
        raise TypeError(
            f"augment_batch takes a device augmentation (DeviceShift, ...), got "
            f"{augment!r}; zoo.data.to_device_augment(...) makes one from a "
            "host-side transform."
        )
    images = jnp.asarray(images)
    if images.ndim != 4:
        raise ValueError(
            f"augment_batch takes images (batch, channels, height, width), got "
            f"shape {images.shape}."
        )
    return _augment_batch(augment, key, images)


@checked
def _augment_batch(
    augment: AbstractDeviceAugment, key: PRNGKeyArray, images: Images
) -> Shaped[Array, "batch channels out_height out_width"]:
    keys = jax.random.split(key, images.shape[0])
    return jax.vmap(augment)(keys, images)


def to_device_augment(transform: object) -> AbstractDeviceAugment:
    """The device twin of a host-side transform: same parameters, other draws.

    Takes [`RandomShift`][zoo.data.RandomShift], [`RandomCrop`][zoo.data.RandomCrop],
    [`RandomFlip`][zoo.data.RandomFlip], [`RandomErasing`][zoo.data.RandomErasing]
    or a [`Compose`][zoo.data.Compose] of them.

    Example:
        >>> import zoo
        >>> to_device_augment(zoo.data.RandomShift(2))
        DeviceShift(max_shift=2)

    Raises:
        TypeError: a transform with no device twin (e.g. a Grain map of your
            own); write it as an ``AbstractDeviceAugment`` subclass.
    """
    t = transform
    if isinstance(t, RandomShift):
        return DeviceShift(t.max_shift)
    if isinstance(t, RandomCrop):
        mode = t.padding_mode
        return DeviceCrop(t.padding, size=t.size, fill=t.fill, padding_mode=mode)
    if isinstance(t, RandomFlip):
        return DeviceFlip(t.p)
    if isinstance(t, RandomErasing):
        return DeviceErasing(t.p, scale=t.scale, ratio=t.ratio, value=t.value)
    if isinstance(t, Compose):
        return DeviceCompose(*(to_device_augment(part) for part in t.transforms))
    raise TypeError(
        f"{t!r} has no device twin; write it as a zoo.data.AbstractDeviceAugment "
        "subclass."
    )
