"""Data augmentation as JAX functions of a key, to run inside a compiled step.

The twins of the host-side Grain transforms in ``_augment.py``: the same
parameters, fills and ranges, but each is an ``eqx.Module`` called on ONE
channels-first image with its own key, ``augment(key, image) -> image``, and
traced into the training step instead of run on the host. Every shape is
static (a crop is a ``dynamic_slice`` of the padded image, an erased rectangle
a mask). A call is two pure parts: ``draw(key, shape)``, the ``jax.random``
calls each class documents, and ``apply(draws, image)``, which uses no
randomness; [`augment_batch`][zoo.data.augment_batch] maps them over a batch.
"""

import abc
import math
from collections.abc import Sequence
from typing import Any, TypeVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, PRNGKeyArray, Shaped

from .._checks import checked
from ._augment import (
    RandomCrop,
    RandomErasing,
    RandomFlip,
    RandomShift,
    check_shift_fits,
)

Image = Shaped[Array, "channels height width"]
Shape = tuple[int, int, int]
_Host = TypeVar("_Host", RandomShift, RandomCrop, RandomFlip, RandomErasing)


def _host_twin(name: str, host_class: type[_Host], *args: Any, **kwargs: Any) -> _Host:
    """The host transform of these parameters, its checks speaking for ``name``."""
    try:
        return host_class(*args, **kwargs)
    except ValueError as error:
        raise ValueError(str(error).replace(host_class.__name__, name)) from None


def _fill(value: float, dtype: Any, what: str) -> Array:
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
    dtype and returns an image of the same dtype: it is
    ``apply(draw(key, image.shape), image)``. Hyperparameters are static
    fields, so an augmentation can be closed over by, or passed to, a jitted
    step. For an augmentation of your own, subclass it and write ``draw`` and
    ``apply`` (and ``output_shape`` if it changes the shape).
    """

    @abc.abstractmethod
    def draw(self, key: PRNGKeyArray, shape: Shape) -> Any:
        """The random parameters for an image of ``shape``, a pytree of arrays."""

    @abc.abstractmethod
    def apply(self, draws: Any, image: Image) -> Array:
        """Transform ``image`` with ``draws`` (from ``draw``); no randomness."""

    def output_shape(self, shape: Shape) -> Shape:
        """The shape ``apply`` returns for an image of ``shape``: the same."""
        return shape

    def __call__(
        self,
        key: PRNGKeyArray,
        image: Shaped[Array | np.ndarray, "channels height width"],
    ) -> Shaped[Array, "channels out_height out_width"]:
        """Transform ``image`` ``(C, H, W)`` with the draws of ``key``; same dtype."""
        image = jnp.asarray(image)
        if image.ndim != 3:
            raise ValueError(
                f"{type(self).__name__} takes ONE image (channels, height, width), "
                f"got shape {image.shape}; augment a batch with "
                "zoo.data.augment_batch(augment, key, images)."
            )
        return _checked_call(self, key, image)


@checked
def _checked_call(
    augment: AbstractDeviceAugment, key: PRNGKeyArray, image: Image
) -> Shaped[Array, "channels out_height out_width"]:
    channels, height, width = image.shape
    return augment.apply(augment.draw(key, (channels, height, width)), image)


def _crop_draw(
    name: str, key: PRNGKeyArray, shape: Shape, padding: int, size: Any
) -> Array:
    """``(top, left)`` of the window, after checking that it fits."""
    _, height, width = shape
    out_h, out_w = size or (height, width)
    if out_h > height + 2 * padding or out_w > width + 2 * padding:
        raise ValueError(
            f"{name} window {out_h}x{out_w} is larger than the {height}x{width} "
            f"images padded by {padding}; use a smaller size or more padding."
        )
    spans = jnp.array([height + 2 * padding - out_h, width + 2 * padding - out_w])
    return jax.random.randint(key, (2,), 0, spans + 1)


def _crop_apply(
    name: str, corner: Array, image: Array, padding: int, size: Any, fill: float,
    padding_mode: str,
) -> Array:  # fmt: skip
    """The window at ``corner`` of ``image`` padded by ``padding``."""
    channels, height, width = image.shape
    out_h, out_w = size or (height, width)
    if padding_mode == "reflect" and padding >= min(height, width):
        raise ValueError(
            f"{name} padding_mode='reflect' needs padding below the image size, "
            f"got padding {padding} for {height}x{width} images."
        )
    if padding == 0 and (out_h, out_w) == (height, width):
        return image
    widths = ((0, 0), (padding, padding), (padding, padding))
    if padding_mode == "constant":
        value = _fill(fill, image.dtype, f"{name} fill")
        padded = jnp.pad(image, widths, constant_values=value)
    else:
        padded = jnp.pad(image, widths, mode=padding_mode)
    start = (0, corner[0], corner[1])
    return jax.lax.dynamic_slice(padded, start, (channels, out_h, out_w))


class DeviceShift(AbstractDeviceAugment):
    """Shift an image by a random whole-pixel offset; the device twin of
    [`RandomShift`][zoo.data.RandomShift].

    The image moves by ``dy, dx`` uniform in ``[-max_shift, max_shift]``;
    pixels shifted in from outside are zero. It is
    ``DeviceCrop(padding=max_shift)``, with the same draw
    ``top, left = jax.random.randint(key, (2,), 0, 2 * max_shift + 1)``, and
    ``dy, dx = max_shift - top, max_shift - left``.

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

    def draw(self, key: PRNGKeyArray, shape: Shape) -> Array:
        """``(top, left)``, int32 ``(2,)``."""
        return _crop_draw("DeviceShift", key, shape, self.max_shift, None)

    def apply(self, draws: Array, image: Image) -> Image:
        """``image`` shifted by ``max_shift - draws``."""
        m = self.max_shift
        check_shift_fits("DeviceShift", m, image.shape[1], image.shape[2])
        return _crop_apply("DeviceShift", draws, image, m, None, 0, "constant")


class DeviceCrop(AbstractDeviceAugment):
    """Pad an image, then cut a window at a random position; the device twin
    of [`RandomCrop`][zoo.data.RandomCrop].

    The image ``(C, H, W)`` is padded by ``padding`` pixels on each side (with
    ``fill``, or by repeating or mirroring its edge) and the ``size`` window
    whose corner is drawn as ``top, left = jax.random.randint(key, (2,), 0,
    jnp.array([H + 2 * padding - size_h + 1, W + 2 * padding - size_w + 1]))``
    is kept. With ``padding=0`` and the input's size the image is returned as
    it is.

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
        self.padding, self.size = host.padding, host.size
        self.fill, self.padding_mode = host.fill, host.padding_mode

    def draw(self, key: PRNGKeyArray, shape: Shape) -> Array:
        """``(top, left)`` of the window in the padded image, int32 ``(2,)``."""
        return _crop_draw("DeviceCrop", key, shape, self.padding, self.size)

    def apply(self, draws: Array, image: Image) -> Array:
        """The ``size`` window at ``draws`` of the padded ``image``."""
        return _crop_apply(
            "DeviceCrop", draws, image, self.padding, self.size, self.fill,
            self.padding_mode,
        )  # fmt: skip

    def output_shape(self, shape: Shape) -> Shape:
        """``(C, *size)``."""
        return (shape[0], *(self.size or shape[1:]))


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

    def draw(self, key: PRNGKeyArray, shape: Shape) -> Array:
        """Whether to flip, a bool scalar."""
        del shape
        return jax.random.bernoulli(key, self.p)

    def apply(self, draws: Array, image: Image) -> Image:
        """``image`` mirrored where ``draws``."""
        return image if self.p == 0.0 else jnp.where(draws, image[..., ::-1], image)


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
    ``"random"`` the pixels of ``jax.random.randint(k_noise, (C, H, W), 0,
    256)`` (integer images) or ``jax.random.uniform(k_noise, (C, H, W),
    image.dtype)`` (float images).

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

    def draw(self, key: PRNGKeyArray, shape: Shape) -> dict[str, Array]:
        """``{"erase": bool, "box": (top, left, h, w) float32, "noise": key}``."""
        _, height, width = shape
        k_erase, k_area, k_ratio, k_top, k_left, k_noise = jax.random.split(key, 6)
        f32 = jnp.float32
        area = height * width * jax.random.uniform(k_area, (), f32, *self.scale)
        low, high = math.log(self.ratio[0]), math.log(self.ratio[1])
        aspect = jnp.exp(jax.random.uniform(k_ratio, (), f32, low, high))
        h = jnp.clip(jnp.rint(jnp.sqrt(area * aspect)), 1, height)
        w = jnp.clip(jnp.rint(jnp.sqrt(area / aspect)), 1, width)
        top = jnp.floor(jax.random.uniform(k_top, (), f32) * (height - h + 1))
        left = jnp.floor(jax.random.uniform(k_left, (), f32) * (width - w + 1))
        erase = jax.random.bernoulli(k_erase, self.p)
        return {"erase": erase, "box": jnp.stack([top, left, h, w]), "noise": k_noise}

    def apply(self, draws: dict[str, Array], image: Image) -> Image:
        """``image`` with the drawn rectangle filled, where ``draws["erase"]``."""
        if self.p == 0.0:
            return image
        channels, height, width = image.shape
        top, left, h, w = draws["box"]
        rows = jnp.arange(height, dtype=jnp.float32)
        cols = jnp.arange(width, dtype=jnp.float32)
        inside = ((rows >= top) & (rows < top + h))[:, None] & (
            (cols >= left) & (cols < left + w)
        )[None, :]
        mask = (inside & draws["erase"])[None, :, :]
        if self.value == "random":
            shape = (channels, height, width)
            if jnp.issubdtype(image.dtype, jnp.integer):
                noise = jax.random.randint(draws["noise"], shape, 0, 256)
                fill = noise.astype(image.dtype)
            else:
                fill = jax.random.uniform(draws["noise"], shape, image.dtype)
        else:
            fill = _fill(float(self.value), image.dtype, "DeviceErasing value")
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

    def draw(self, key: PRNGKeyArray, shape: Shape) -> tuple[Any, ...]:
        """Every part's draws, each for the shape the parts before it give."""
        if not self.augments:
            return ()
        draws = []
        for part, part_key in zip(
            self.augments, jax.random.split(key, len(self.augments)), strict=True
        ):
            draws.append(part.draw(part_key, shape))
            shape = part.output_shape(shape)
        return tuple(draws)

    def apply(self, draws: tuple[Any, ...], image: Image) -> Array:
        """Every part's ``apply``, in order."""
        for part, part_draws in zip(self.augments, draws, strict=True):
            image = part.apply(part_draws, image)
        return image

    def output_shape(self, shape: Shape) -> Shape:
        """The last part's output shape."""
        for part in self.augments:
            shape = part.output_shape(shape)
        return shape
