"""The preprocessing of ImageNet-style pretrained weights: resize, crop, normalise.

timm states how each of its weight files expects its inputs (its
``pretrained_cfg``): the shorter side resized to ``floor(crop / crop_pct)``
pixels, the centre ``crop x crop`` cut out, the pixels scaled to ``[0, 1]``,
then normalised by a mean and standard deviation per channel.
[`Preprocessing`][zoo.data.Preprocessing] holds those numbers and
[`preprocess`][zoo.data.preprocess] applies them to one image.
"""

import dataclasses
import math
from collections.abc import Mapping
from typing import Any, Literal, Self

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Float

INTERPOLATIONS: tuple[str, ...] = ("bilinear", "bicubic", "nearest")
"""The resampling methods a [`Preprocessing`][zoo.data.Preprocessing] may name."""

IMAGENET_MEAN = (0.485, 0.456, 0.406)
"""ImageNet's pixel mean per RGB channel (pixels in ``[0, 1]``)."""
IMAGENET_STD = (0.229, 0.224, 0.225)
"""ImageNet's pixel standard deviation per RGB channel."""


@dataclasses.dataclass(frozen=True)
class Preprocessing:
    """How to prepare an image for a pretrained model.

    Resize so that the shorter side is ``resize`` pixels (the longer in
    proportion, rounded down), cut out the centre ``crop x crop``, scale the
    pixels to ``[0, 1]``, subtract ``mean`` and divide by ``std`` per channel:
    timm's evaluation transform. Call it on an image, or pass it to
    [`zoo.data.preprocess`][].

    Example:
        >>> import numpy as np, zoo
        >>> prep = zoo.data.Preprocessing(resize=8, crop=6)
        >>> prep(np.zeros((10, 16, 3), np.uint8)).shape
        (3, 6, 6)

    Attributes:
        resize: the shorter side after resizing, in pixels (``>= crop``).
        crop: the side of the square centre crop: the model's input size.
        mean: the mean of each channel, of pixels in ``[0, 1]``.
        std: the standard deviation of each channel.
        interpolation: ``"bilinear"``, ``"bicubic"`` or ``"nearest"``; the
            resize antialiases when it shrinks (as PIL does).
    """

    resize: int
    crop: int
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    interpolation: str = "bilinear"

    def __post_init__(self) -> None:
        if not 1 <= self.crop <= self.resize:
            raise ValueError(
                f"Preprocessing needs 1 <= crop <= resize, got crop={self.crop}, "
                f"resize={self.resize}."
            )
        if len(self.mean) != len(self.std) or any(s <= 0 for s in self.std):
            raise ValueError(
                "Preprocessing needs one mean and one positive std per channel, "
                f"got mean={self.mean}, std={self.std}."
            )
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(
                f"Preprocessing `interpolation` must be one of {INTERPOLATIONS}, "
                f"got {self.interpolation!r}."
            )

    @classmethod
    def from_timm(cls, config: Mapping[str, Any]) -> Self:
        """The preprocessing a timm ``pretrained_cfg`` describes.

        Args:
            config: its ``input_size`` ``(channels, height, width)``,
                ``crop_pct``, ``interpolation``, ``mean`` and ``std`` (as in a
                hub repository's ``config.json`` under ``"pretrained_cfg"``).
        """
        crop = int(config["input_size"][-1])
        return cls(
            resize=math.floor(crop / float(config.get("crop_pct", 0.875))),
            crop=crop,
            mean=tuple(float(m) for m in config["mean"]),
            std=tuple(float(s) for s in config["std"]),
            interpolation=str(config.get("interpolation", "bilinear")),
        )

    def __call__(
        self, image: Any, *, layout: Literal["auto", "hwc", "chw"] = "auto"
    ) -> Float[np.ndarray, "channels crop crop"]:
        """[`preprocess`][zoo.data.preprocess]``(image, self, layout=layout)``."""
        return preprocess(image, self, layout=layout)


def _channels_first(image: np.ndarray, layout: str, channels: int) -> np.ndarray:
    """``image`` as ``(C, H, W)``; a grey image is repeated to ``channels``."""
    if image.ndim == 2:
        return np.broadcast_to(image, (channels, *image.shape))
    if image.ndim != 3:
        raise ValueError(
            f"preprocess takes ONE image, (height, width, channels), (channels, "
            f"height, width) or (height, width); got shape {image.shape}."
        )
    if layout == "auto":
        first, last = image.shape[0] in (1, 3, 4), image.shape[2] in (1, 3, 4)
        if first == last:
            raise ValueError(
                f"Cannot tell the channels of an image of shape {image.shape}: "
                "pass layout='hwc' or layout='chw'."
            )
        layout = "chw" if first else "hwc"
    if layout not in ("hwc", "chw"):
        raise ValueError(f"layout must be 'auto', 'hwc' or 'chw', got {layout!r}.")
    chw = image if layout == "chw" else np.moveaxis(image, 2, 0)
    if chw.shape[0] == 1:
        return np.broadcast_to(chw, (channels, *chw.shape[1:]))
    if chw.shape[0] != channels:
        raise ValueError(
            f"The image has {chw.shape[0]} channels ({layout}, shape "
            f"{image.shape}), the preprocessing {channels}; drop an alpha channel "
            "first."
        )
    return chw


def _scaled(image: np.ndarray) -> np.ndarray:
    """Pixels as float32 in ``[0, 1]``: uint8 divided by 255, floats as they are."""
    if image.dtype == np.uint8:
        return image.astype(np.float32) / np.float32(255.0)
    if not np.issubdtype(image.dtype, np.floating):
        raise ValueError(
            f"preprocess takes uint8 pixels (0-255) or floats in [0, 1], got "
            f"{image.dtype}."
        )
    if image.size and (float(image.min()) < -1e-3 or float(image.max()) > 1 + 1e-3):
        raise ValueError(
            f"Float pixels must be in [0, 1], these span [{float(image.min()):g}, "
            f"{float(image.max()):g}]: pass uint8 pixels, or divide by 255."
        )
    return image.astype(np.float32)


def _centre(length: int, crop: int) -> int:
    # torchvision's CenterCrop: int(round((length - crop) / 2)), half to even.
    return round((length - crop) / 2.0)


def preprocess(
    image: Any,
    preprocessing: Preprocessing,
    *,
    layout: Literal["auto", "hwc", "chw"] = "auto",
) -> Float[np.ndarray, "channels crop crop"]:
    """ONE image prepared as ``preprocessing`` says: resize, centre crop, normalise.

    The shorter side is resized to ``preprocessing.resize`` (the longer to
    ``int(resize * longer / shorter)``, as torchvision's ``Resize(int)``),
    the centre ``crop x crop`` is cut out, and each channel is normalised:
    ``(pixel / 255 - mean) / std``. Batch several images with a loop or
    ``np.stack``; the result is what the model's ``__call__`` takes.

    Example:
        >>> import numpy as np, zoo
        >>> prep = zoo.data.Preprocessing(resize=235, crop=224)
        >>> image = np.full((300, 400, 3), 255, np.uint8)   # white, HWC
        >>> x = zoo.data.preprocess(image, prep)
        >>> x.shape, x.dtype
        ((3, 224, 224), dtype('float32'))
        >>> [round(float(v), 3) for v in x[:, 0, 0]]   # (1 - mean) / std
        [2.249, 2.429, 2.64]

    Args:
        image: pixels as uint8 (0-255) or floats in ``[0, 1]``, shaped
            ``(height, width, channels)``, ``(channels, height, width)`` or
            ``(height, width)`` (grey, repeated to every channel).
        preprocessing: the numbers, e.g. ``zoo.models.timm_card(name).preprocessing``.
        layout: ``"hwc"`` or ``"chw"``; ``"auto"`` tells them apart by which
            axis has 1 or 3 entries.

    Returns:
        float32 of shape ``(channels, crop, crop)``.

    Raises:
        ValueError: not one image, an ambiguous layout (say which), another
            number of channels, or pixels neither uint8 nor floats in ``[0, 1]``.
    """
    array = np.asarray(image)
    chw = _channels_first(array, layout, len(preprocessing.mean))
    pixels = _scaled(np.ascontiguousarray(chw))
    height, width = pixels.shape[1:]
    size = preprocessing.resize
    if height <= width:
        new = (size, int(size * width / height))
    else:
        new = (int(size * height / width), size)
    if new != (height, width):
        method = "linear" if preprocessing.interpolation == "bilinear" else None
        resized = jax.image.resize(
            jnp.asarray(pixels),
            (pixels.shape[0], *new),
            method=method or preprocessing.interpolation,
            antialias=True,
        )
        # Clipped as PIL's uint8 result is (bicubic overshoots at edges).
        pixels = np.clip(np.asarray(resized, dtype=np.float32), 0.0, 1.0)
    crop = preprocessing.crop
    top, left = _centre(new[0], crop), _centre(new[1], crop)
    pixels = pixels[:, top : top + crop, left : left + crop]
    mean = np.asarray(preprocessing.mean, np.float32).reshape(-1, 1, 1)
    std = np.asarray(preprocessing.std, np.float32).reshape(-1, 1, 1)
    return ((pixels - mean) / std).astype(np.float32)
