"""Device augmentations over a batch, and the device twin of a host transform."""

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, PRNGKeyArray, Shaped

from .._checks import checked
from ._augment import Compose, RandomCrop, RandomErasing, RandomFlip, RandomShift
from ._device_augment import (
    AbstractDeviceAugment,
    DeviceCompose,
    DeviceCrop,
    DeviceErasing,
    DeviceFlip,
    DeviceShift,
)


def _check_augment(augment: object, caller: str) -> None:
    if not isinstance(augment, AbstractDeviceAugment):
        raise TypeError(
            f"{caller} takes a device augmentation (DeviceShift, ...), got "
            f"{augment!r}; zoo.data.to_device_augment(...) makes one from a "
            "host-side transform."
        )


def _check_shape(shape: Sequence[int], caller: str) -> tuple[int, int, int, int]:
    if len(shape) != 4:
        raise ValueError(
            f"{caller} takes images (batch, channels, height, width), got shape "
            f"{tuple(shape)}."
        )
    return tuple(int(n) for n in shape)  # pyright: ignore[reportReturnType]


def draw_batch(
    augment: AbstractDeviceAugment, key: PRNGKeyArray, shape: Sequence[int]
) -> Any:
    """The draws [`augment_batch`][zoo.data.augment_batch] makes for a batch.

    Image ``i`` of ``B`` gets ``augment.draw(jax.random.split(key, B)[i],
    (C, H, W))``; the result stacks them (a pytree of arrays with a leading
    ``B`` axis), to be used with ``jax.vmap(augment.apply)(draws, images)``.
    Inside a ``lax.scan`` over steps, draw every step's batch before the scan
    and only apply inside it: XLA:CPU fuses the draws into the crop's gather
    and recomputes them for every pixel otherwise.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> draw_batch(DeviceShift(2), jax.random.key(0), (8, 1, 28, 28)).shape
        (8, 2)

    Args:
        augment: a device augmentation.
        key: one key for the whole batch.
        shape: the batch's shape ``(B, C, H, W)``.
    """
    _check_augment(augment, "draw_batch")
    batch, *image = _check_shape(shape, "draw_batch")
    image_shape = (image[0], image[1], image[2])
    keys = jax.random.split(key, batch)
    return jax.vmap(lambda k: augment.draw(k, image_shape))(keys)


def augment_batch(
    augment: AbstractDeviceAugment,
    key: PRNGKeyArray,
    images: Shaped[Array | np.ndarray, "batch channels height width"],
) -> Shaped[Array, "batch channels out_height out_width"]:
    """Augment a batch, each image with its own key: for use inside a step.

    Image ``i`` of ``B`` is ``augment(jax.random.split(key, B)[i], images[i])``,
    so the result is a pure function of ``key`` and the images; under ``jit``
    the batch is one program with no host work. It is
    ``jax.vmap(augment.apply)(draw_batch(augment, key, images.shape), images)``
    (see [`draw_batch`][zoo.data.draw_batch] to draw a whole chunk at once).

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
    _check_augment(augment, "augment_batch")
    images = jnp.asarray(images)
    _check_shape(images.shape, "augment_batch")
    return _augment_batch(augment, key, images)


@checked
def _augment_batch(
    augment: AbstractDeviceAugment,
    key: PRNGKeyArray,
    images: Shaped[Array, "batch channels height width"],
) -> Shaped[Array, "batch channels out_height out_width"]:
    draws = draw_batch(augment, key, images.shape)
    return jax.vmap(augment.apply)(draws, images)


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
