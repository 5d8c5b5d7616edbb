"""Data augmentation on whole batches, as Grain random maps.

Each augmentation is a ``grain.transforms.RandomMap`` over a batch
``{"inputs": (B, C, H, W), ...}``: one vectorised NumPy operation does the whole
batch, labels and the mask pass through, and the dtype is kept (``uint8`` in,
``uint8`` out). In [`train_pipeline`][zoo.data.train_pipeline] Grain seeds each
batch's generator from the pipeline's seed and the step, so an augmented run is
reproducible and resumes exactly. Every random draw is made for the whole global
batch and each shard keeps its own rows (see ``for_shard``), so an example is
transformed the same way whichever process of a sharded run reads it.
[`Compose`][zoo.data.Compose] chains several.
"""

import copy
from collections.abc import Callable, Sequence
from typing import Any, Self, cast

import grain
import numpy as np

from ._pipeline import _NO_SHARD, Record, _ShardAware


def _whole_pixels(value: object, what: str) -> int:
    """``value`` as a count of pixels >= 0; refused (``ValueError``) otherwise."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ValueError(
            f"{what} must be a whole number of pixels >= 0, got {value!r}."
        )
    if value < 0:
        raise ValueError(f"{what} must be >= 0, got {value}.")
    return int(value)


def check_shift_fits(name: str, max_shift: int, height: int, width: int) -> None:
    """Refuse a shift that can move an image out of its frame entirely."""
    if max_shift >= min(height, width):
        raise ValueError(
            f"{name}(max_shift={max_shift}) can move {height}x{width} images out "
            f"of the frame entirely; use a max_shift below {min(height, width)} "
            "(2 for 28x28 digits)."
        )


class _BatchAugment(grain.transforms.RandomMap):
    """Shared parts: the shard whose rows are kept, and the input check."""

    shard: grain.sharding.ShardOptions = _NO_SHARD
    _verb: str = "transforms"

    def for_shard(self, shard: grain.sharding.ShardOptions) -> Self:
        """The same augmentation for one process's rows of a sharded pipeline.

        Batch ``k`` of shard ``i`` of ``n`` holds rows ``i, i + n, i + 2n, ...``
        of global batch ``k`` (see [`train_pipeline`][zoo.data.train_pipeline]),
        and the returned copy gives each of them the draw that row gets in the
        unsharded batch.
        """
        shard_copy = copy.copy(self)
        shard_copy.shard = shard
        return shard_copy

    def _draw(self, batch: int, draw: Callable[[int], np.ndarray]) -> np.ndarray:
        """Draw for the global batch (``draw(n)`` has ``n`` rows); keep ours."""
        count, index = self.shard.shard_count, self.shard.shard_index
        return draw(batch * count)[index::count]

    def _images(self, element: Record) -> np.ndarray:
        images = element["inputs"]
        if images.ndim != 4:
            raise ValueError(
                f"{type(self).__name__} {self._verb} images (batch, channels, height, "
                f"width), got inputs of shape {images.shape}."
            )
        return images


def _gather_windows(
    padded: np.ndarray, top: np.ndarray, left: np.ndarray, height: int, width: int
) -> np.ndarray:
    """Window ``[top, top + height) x [left, left + width)`` of each image."""
    batch, channels = padded.shape[:2]
    rows = (top[:, None] + np.arange(height))[:, None, :, None]
    cols = (left[:, None] + np.arange(width))[:, None, None, :]
    examples = np.arange(batch)[:, None, None, None]
    channel = np.arange(channels)[None, :, None, None]
    return padded[examples, channel, rows, cols]


class RandomShift(_BatchAugment):
    """Shift every image of a batch by its own random whole-pixel offset.

    Each image ``(C, H, W)`` moves by ``dy, dx`` drawn uniformly from
    ``[-max_shift, max_shift]``; pixels shifted in from outside are zero. Labels
    and the mask are untouched, and padding rows stay zero. One NumPy gather
    does the batch (about 3 ms for 128 MNIST images). It is
    ``RandomCrop(padding=max_shift)`` with zero fill; the suitable default for
    digits, which must not be flipped.

    Example:
        >>> import numpy as np
        >>> batch = {"inputs": np.arange(9, dtype=np.uint8).reshape(1, 1, 3, 3)}
        >>> out = RandomShift(1).random_map(batch, np.random.default_rng(0))
        >>> out["inputs"].shape
        (1, 1, 3, 3)
    """

    _verb = "shifts"

    def __init__(self, max_shift: int = 2):
        """Args:
        max_shift: the largest shift in pixels, along each axis (>= 0).
        """
        self.max_shift = _whole_pixels(max_shift, "max_shift")

    def __repr__(self) -> str:
        return f"RandomShift(max_shift={self.max_shift})"

    # Grain's abstract method has no return annotation, so pyright infers None.
    def random_map(  # pyright: ignore[reportIncompatibleMethodOverride]
        self, element: Record, rng: np.random.Generator
    ) -> Record:
        """Shift the images of one batch ``{"inputs": (B, C, H, W), ...}``."""
        images = self._images(element)
        m = self.max_shift
        if m == 0:
            return element
        batch, _, height, width = images.shape
        check_shift_fits("RandomShift", m, height, width)
        padded = np.pad(images, ((0, 0), (0, 0), (m, m), (m, m)))
        top = self._draw(batch, lambda n: rng.integers(0, 2 * m + 1, size=n))
        left = self._draw(batch, lambda n: rng.integers(0, 2 * m + 1, size=n))
        return {**element, "inputs": _gather_windows(padded, top, left, height, width)}


class RandomFlip(_BatchAugment):
    """Mirror each image left-right with probability ``p``.

    For clothes, objects and scenes (Fashion-MNIST, CIFAR), never digits or
    text, whose mirror images are other symbols or none.

    Example:
        >>> import numpy as np
        >>> batch = {"inputs": np.arange(3, dtype=np.uint8).reshape(1, 1, 1, 3)}
        >>> RandomFlip(p=1.0).random_map(batch, np.random.default_rng(0))["inputs"]
        array([[[[2, 1, 0]]]], dtype=uint8)
    """

    _verb = "flips"

    def __init__(self, p: float = 0.5):
        """Args:
        p: the probability that an image is flipped, in ``[0, 1]``.
        """
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"RandomFlip p must be in [0, 1], got {p}.")
        self.p = p

    def __repr__(self) -> str:
        return f"RandomFlip(p={self.p})"

    def random_map(  # pyright: ignore[reportIncompatibleMethodOverride]
        self, element: Record, rng: np.random.Generator
    ) -> Record:
        """Flip the chosen images of one batch ``{"inputs": (B, C, H, W), ...}``."""
        images = self._images(element)
        flip = self._draw(images.shape[0], rng.random) < self.p
        flipped = np.where(flip[:, None, None, None], images[..., ::-1], images)
        return {**element, "inputs": flipped}


_PAD_MODES = ("constant", "edge", "reflect")


class RandomCrop(_BatchAugment):
    """Pad each image, then cut a window at a random position from it.

    Every image ``(C, H, W)`` is padded by ``padding`` pixels on each side (with
    ``fill``, or by repeating or mirroring its edge) and a ``size`` window is
    taken at an offset drawn uniformly for each image: the standard CIFAR
    augmentation is ``RandomCrop(padding=4)`` with ``RandomFlip()``.

    Example:
        >>> import numpy as np
        >>> batch = {"inputs": np.ones((2, 3, 32, 32), np.uint8)}
        >>> RandomCrop(padding=4).random_map(batch, np.random.default_rng(0))[
        ...     "inputs"].shape
        (2, 3, 32, 32)
    """

    _verb = "crops"

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
        fill: the value of padded pixels when ``padding_mode="constant"``.
        padding_mode: ``"constant"`` (``fill``), ``"edge"`` (repeat the border
            pixel) or ``"reflect"`` (mirror without repeating the border).
        """
        padding = _whole_pixels(padding, "RandomCrop padding")
        if padding_mode not in _PAD_MODES:
            raise ValueError(
                f"RandomCrop padding_mode must be one of {_PAD_MODES}, got "
                f"{padding_mode!r}."
            )
        if size is None:
            self.size = None
        else:
            sizes = (size, size) if isinstance(size, int) else tuple(size)
            if len(sizes) != 2 or min(sizes) < 1:
                raise ValueError(
                    f"RandomCrop size must be an int or (height, width) >= 1, got "
                    f"{size!r}."
                )
            self.size = (int(sizes[0]), int(sizes[1]))
        self.padding = padding
        self.fill = fill
        self.padding_mode = padding_mode

    def __repr__(self) -> str:
        return (
            f"RandomCrop(padding={self.padding}, size={self.size}, fill={self.fill}, "
            f"padding_mode={self.padding_mode!r})"
        )

    def random_map(  # pyright: ignore[reportIncompatibleMethodOverride]
        self, element: Record, rng: np.random.Generator
    ) -> Record:
        """Crop the images of one batch ``{"inputs": (B, C, H, W), ...}``."""
        images = self._images(element)
        batch, _, height, width = images.shape
        out_h, out_w = self.size or (height, width)
        p = self.padding
        if out_h > height + 2 * p or out_w > width + 2 * p:
            raise ValueError(
                f"RandomCrop window {out_h}x{out_w} is larger than the {height}x"
                f"{width} images padded by {p}; use a smaller size or more padding."
            )
        if self.padding_mode == "reflect" and p >= min(height, width):
            raise ValueError(
                f"RandomCrop padding_mode='reflect' needs padding below the image "
                f"size, got padding {p} for {height}x{width} images."
            )
        widths = ((0, 0), (0, 0), (p, p), (p, p))
        if self.padding_mode == "constant":
            fill = np.asarray(self.fill).astype(images.dtype)
            padded = np.pad(images, widths, constant_values=fill)
        else:
            padded = np.pad(images, widths, mode=self.padding_mode)  # pyright: ignore[reportArgumentType, reportCallIssue]
        span_h, span_w = height + 2 * p - out_h + 1, width + 2 * p - out_w + 1
        top = self._draw(batch, lambda n: rng.integers(0, span_h, size=n))
        left = self._draw(batch, lambda n: rng.integers(0, span_w, size=n))
        return {**element, "inputs": _gather_windows(padded, top, left, out_h, out_w)}


class RandomErasing(_BatchAugment):
    """Fill a random rectangle of each image, with probability ``p``.

    Random Erasing (Zhong et al. 2020): the rectangle covers a fraction of the
    image drawn uniformly from ``scale``, with an aspect ratio (height / width)
    drawn log-uniformly from ``ratio``, at a uniformly drawn position where it
    fits; its pixels, in every channel, become ``value``. Where the paper
    redraws a rectangle that does not fit, its sides are clipped to the image
    here, so every batch takes the same number of draws (needed for sharding).

    Example:
        >>> import numpy as np
        >>> batch = {"inputs": np.full((1, 1, 8, 8), 255, np.uint8)}
        >>> out = RandomErasing(p=1.0).random_map(batch, np.random.default_rng(0))
        >>> bool((out["inputs"] == 0).any()), out["inputs"].dtype
        (True, dtype('uint8'))
    """

    _verb = "erases rectangles of"

    def __init__(
        self,
        p: float = 0.5,
        *,
        scale: tuple[float, float] = (0.02, 0.33),
        ratio: tuple[float, float] = (0.3, 3.3),
        value: int | float | str = 0,
    ):
        """Args:
        p: the probability that an image gets a rectangle, in ``[0, 1]``.
        scale: the range of the rectangle's area, as fractions of the image's,
            ``0 < low <= high <= 1``.
        ratio: the range of its height / width, ``0 < low <= high``.
        value: the fill, or ``"random"`` for uniform noise per pixel (over
            ``0..255`` for integer images, ``[0, 1)`` for float images).
        """
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"RandomErasing p must be in [0, 1], got {p}.")
        if not 0.0 < scale[0] <= scale[1] <= 1.0:
            raise ValueError(
                f"RandomErasing scale must satisfy 0 < low <= high <= 1, got {scale}."
            )
        if not 0.0 < ratio[0] <= ratio[1]:
            raise ValueError(
                f"RandomErasing ratio must satisfy 0 < low <= high, got {ratio}."
            )
        if isinstance(value, str) and value != "random":
            raise ValueError(
                f"RandomErasing value must be a number or 'random', got {value!r}."
            )
        if not isinstance(value, str) and not np.isfinite(value):
            raise ValueError(
                f"RandomErasing value must be finite (or 'random'), got {value!r}: "
                "it would put a NaN or an infinity into the images."
            )
        self.p = p
        self.scale = (float(scale[0]), float(scale[1]))
        self.ratio = (float(ratio[0]), float(ratio[1]))
        self.value = value

    def __repr__(self) -> str:
        return (
            f"RandomErasing(p={self.p}, scale={self.scale}, ratio={self.ratio}, "
            f"value={self.value!r})"
        )

    def rectangles(
        self, batch: int, height: int, width: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Draw ``(erase, top, left, h, w)``, one entry per image of the batch."""
        erase = self._draw(batch, rng.random) < self.p
        area = self._draw(batch, lambda n: rng.uniform(*self.scale, size=n))
        log_ratio = np.log(self.ratio)
        aspect = np.exp(self._draw(batch, lambda n: rng.uniform(*log_ratio, size=n)))
        area = area * height * width
        h = np.clip(np.rint(np.sqrt(area * aspect)), 1, height).astype(np.int64)
        w = np.clip(np.rint(np.sqrt(area / aspect)), 1, width).astype(np.int64)
        top = (self._draw(batch, rng.random) * (height - h + 1)).astype(np.int64)
        left = (self._draw(batch, rng.random) * (width - w + 1)).astype(np.int64)
        return erase, top, left, h, w

    def random_map(  # pyright: ignore[reportIncompatibleMethodOverride]
        self, element: Record, rng: np.random.Generator
    ) -> Record:
        """Erase a rectangle in the chosen images of one batch ``(B, C, H, W)``."""
        images = self._images(element)
        batch, channels, height, width = images.shape
        erase, top, left, h, w = self.rectangles(batch, height, width, rng)
        rows = np.arange(height)[None, :]
        cols = np.arange(width)[None, :]
        inside_rows = (rows >= top[:, None]) & (rows < (top + h)[:, None])
        inside_cols = (cols >= left[:, None]) & (cols < (left + w)[:, None])
        mask = (inside_rows[:, :, None] & inside_cols[:, None, :]) & erase[
            :, None, None
        ]
        if self.value == "random":
            shape = (channels, height, width)
            if np.issubdtype(images.dtype, np.integer):
                noise = self._draw(
                    batch, lambda n: rng.integers(0, 256, size=(n, *shape))
                )
            else:
                noise = self._draw(batch, lambda n: rng.random(size=(n, *shape)))
            fill = noise.astype(images.dtype)
        else:
            fill = self._fill(images.dtype)
        erased = np.where(mask[:, None, :, :], fill, images)
        return {**element, "inputs": erased}

    def _fill(self, dtype: np.dtype) -> np.ndarray:
        value = float(self.value)
        if np.issubdtype(dtype, np.integer):
            info = np.iinfo(dtype)
            if not (value.is_integer() and info.min <= value <= info.max):
                raise ValueError(
                    f"RandomErasing value {value!r} does not fit {dtype} images; "
                    f"use an integer in [{info.min}, {info.max}]."
                )
        return np.asarray(self.value).astype(dtype)


class Compose(grain.transforms.RandomMap):
    """Apply several batch transforms in order, as one random map.

    Takes [`RandomShift`][zoo.data.RandomShift], [`RandomFlip`][zoo.data.RandomFlip],
    [`RandomCrop`][zoo.data.RandomCrop], [`RandomErasing`][zoo.data.RandomErasing]
    or any Grain ``RandomMap`` or ``Map``. Each random one draws from the
    batch's generator in turn, so the chain is as reproducible as its parts;
    on a sharded pipeline, parts with a ``for_shard`` method are given the shard.

    Example:
        >>> import numpy as np
        >>> augment = Compose(RandomCrop(padding=2), RandomFlip(), RandomErasing())
        >>> batch = {"inputs": np.zeros((4, 1, 28, 28), np.uint8)}
        >>> augment.random_map(batch, np.random.default_rng(0))["inputs"].shape
        (4, 1, 28, 28)
    """

    def __init__(self, *transforms: grain.transforms.RandomMap | grain.transforms.Map):
        """Args:
        *transforms: the transforms, applied first to last.
        """
        for t in transforms:
            if not isinstance(t, grain.transforms.RandomMap | grain.transforms.Map):
                raise TypeError(
                    f"Compose takes grain.transforms.RandomMap or Map objects, got "
                    f"{t!r}; wrap a function in a RandomMap subclass."
                )
        self.transforms = tuple(transforms)

    def __repr__(self) -> str:
        return f"Compose({', '.join(map(repr, self.transforms))})"

    def for_shard(self, shard: grain.sharding.ShardOptions) -> "Compose":
        """The chain with every shard-aware part replaced by its ``for_shard``."""
        return Compose(
            *(
                t.for_shard(shard) if isinstance(t, _ShardAware) else t
                for t in self.transforms
            )
        )

    def random_map(  # pyright: ignore[reportIncompatibleMethodOverride]
        self, element: Record, rng: np.random.Generator
    ) -> Record:
        """Apply each transform to the batch, in order."""
        out: Any = element
        for t in self.transforms:
            if isinstance(t, grain.transforms.RandomMap):
                out = t.random_map(out, rng)
            else:
                out = t.map(out)
        return cast(Record, out)
