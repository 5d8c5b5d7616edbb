"""How convolutional blocks compute: the conv path, chosen per backend at trace time.

zoo's CNNs keep Equinox's layers (``eqx.nn.Conv2d``, ``eqx.nn.BatchNorm``), so
parameters, state and checkpoints are the same whichever path computes them:

* ``"xla"``: the layers as Equinox writes them, channels-first
  ``lax.conv_general_dilated``. Used on GPU and TPU.
* ``"nhwc"``: channels-last inside the network. Each block runs on a
  ``(height, width, channels)`` map: the convolution is
  ``lax.conv_general_dilated`` in ``NHWC``/``HWIO`` layout, BatchNorm takes its
  batch statistics in one pass, pooling is a reshape and a reduction. XLA:CPU
  runs its convolutions channels-last, so the channels-first path pays a
  transpose of every activation and gradient around every convolution. A
  strided convolution's input gradient skips the zeros of its dilated
  gradient (``zoo.models._strided_conv``). Used on CPU, where zoo's programs
  compile the convolutions with XLA's own kernels (``zoo._compiler_options``).
* ``"winograd"``: ``"nhwc"``, with the 3x3 stride-1 convolutions of 64 or
  more input channels computed by Winograd F(2x2, 3x3) (``zoo.models._winograd``):
  2.25x fewer multiplies, as 16 matrix products, forward and backward. It beat
  YNNPACK's convolutions on those layers, but not XLA's own kernels, which
  zoo now compiles with on CPU (measured in ``docs/benchmarks.md``).
* ``"gemm"``: channels-last too, with each convolution as im2col (patches from
  ``k * k`` strided slices) times one matrix. No convolution primitive at all;
  slower than ``"nhwc"`` where XLA:CPU's convolutions are fast.

``"auto"`` (the default) picks ``"nhwc"`` when JAX's default backend is the
CPU and ``"xla"`` otherwise. Force a path with the environment variable
``ZOO_CONV`` (read at import), :func:`set_conv_path`, or for a block of code
with :func:`conv_path`. The path is read while a model is traced: a function
already compiled keeps the path it was traced with.
"""

import contextlib
import os
from collections.abc import Iterator
from typing import Literal, cast

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import lax
from jaxtyping import Array, Float

from ._strided_conv import strided_conv
from ._winograd import winograd_conv

ConvPath = Literal["auto", "xla", "nhwc", "winograd", "gemm"]
"""A conv path setting: ``"auto"`` or one of the concrete paths."""
CONV_PATHS: tuple[str, ...] = ("auto", "xla", "nhwc", "winograd", "gemm")


def _parse(path: str, source: str) -> ConvPath:
    value = path.strip().lower()
    if value not in CONV_PATHS:
        raise ValueError(
            f"{source} must be one of {', '.join(map(repr, CONV_PATHS))}, got {path!r}."
        )
    return cast(ConvPath, value)


_path: ConvPath = _parse(os.environ.get("ZOO_CONV", "auto"), "ZOO_CONV")


def conv_path_setting() -> ConvPath:
    """The conv path setting (``"auto"`` unless set): see :func:`set_conv_path`."""
    return _path


def set_conv_path(path: ConvPath) -> None:
    """Choose how CNN blocks compute, for the whole process.

    Args:
        path: ``"auto"`` (``"nhwc"`` on CPU, ``"xla"`` elsewhere),
            ``"xla"``, ``"nhwc"``, ``"winograd"`` or ``"gemm"``. All compute
            the same function with the same parameters (within float32
            rounding); only speed differs.

    Raises:
        ValueError: an unknown path.
    """
    global _path
    _path = _parse(path, "conv path")


@contextlib.contextmanager
def conv_path(path: ConvPath) -> Iterator[None]:
    """Context manager that sets the conv path for models traced inside it.

    Example:
        >>> import zoo
        >>> with zoo.conv_path("gemm"):
        ...     zoo.resolved_conv_path()
        'gemm'
        >>> zoo.conv_path_setting()
        'auto'
    """
    global _path
    previous = _path
    _path = _parse(path, "conv path")
    try:
        yield
    finally:
        _path = previous


def resolved_conv_path(
    backend: str | None = None,
) -> Literal["xla", "nhwc", "winograd", "gemm"]:
    """The concrete path the current setting means on ``backend``.

    Args:
        backend: a JAX backend name; ``None`` for ``jax.default_backend()``.
    """
    if _path != "auto":
        return _path
    backend = jax.default_backend() if backend is None else backend
    return "nhwc" if backend == "cpu" else "xla"


def to_channels_last(x: Float[Array, "c h w"]) -> Float[Array, "h w c"]:
    """``(C, H, W) -> (H, W, C)``."""
    return jnp.transpose(x, (1, 2, 0))


def to_channels_first(x: Float[Array, "h w c"]) -> Float[Array, "c h w"]:
    """``(H, W, C) -> (C, H, W)``."""
    return jnp.transpose(x, (2, 0, 1))


def _pads(conv: eqx.nn.Conv2d, size: tuple[int, int]) -> list[tuple[int, int]]:
    if isinstance(conv.padding, str):
        window = tuple(
            d * (k - 1) + 1
            for k, d in zip(conv.kernel_size, conv.dilation, strict=True)
        )
        return list(lax.padtype_to_pads(size, window, conv.stride, conv.padding))
    return [tuple(p) for p in conv.padding]  # pyright: ignore[reportReturnType]


def _plain(conv: eqx.nn.Conv2d) -> bool:
    """Whether the channels-last paths compute ``conv`` themselves."""
    return conv.groups == 1 and conv.padding_mode == "ZEROS"


PHASE_INPUT_GRADIENT = True
"""Whether the channels-last paths take a strided convolution's input gradient
by phases (:func:`zoo.models._strided_conv.strided_conv`); read at trace time.
``False`` keeps XLA's dilated one (``benchmarks/strided_conv.py`` compares)."""

WINOGRAD_MIN_CHANNELS = 64
"""Fewest input channels for which ``"winograd"`` uses Winograd (see below)."""


def _winograd_applies(
    conv: eqx.nn.Conv2d, x: Array, pads: list[tuple[int, int]]
) -> bool:
    """Whether ``"winograd"`` computes ``conv`` by Winograd F(2x2, 3x3).

    Only 3x3, stride-1, undilated convolutions padded by 0 to 2 on each side,
    in float32 or float64 (bfloat16 keeps XLA's convolution: the transforms
    would round), with at least ``WINOGRAD_MIN_CHANNELS`` input channels: with
    fewer, the products are too thin to win over XLA's convolution.
    """
    return (
        tuple(conv.kernel_size) == (3, 3)
        and tuple(conv.stride) == (1, 1)
        and tuple(conv.dilation) == (1, 1)
        and all(0 <= p <= 2 for pair in pads for p in pair)
        and conv.in_channels >= WINOGRAD_MIN_CHANNELS
        and x.dtype in (jnp.float32, jnp.float64)
    )


def _im2col_matmul(
    x: Float[Array, "h w c"],
    weight: Float[Array, "o c kh kw"],
    stride: tuple[int, int],
    pads: list[tuple[int, int]],
    dilation: tuple[int, int],
) -> Float[Array, "h2 w2 o"]:
    out_channels, channels, kh, kw = weight.shape
    x = jnp.pad(x, (*pads, (0, 0)))
    height = (x.shape[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    width = (x.shape[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    patches = jnp.concatenate(
        [
            x[
                i * dilation[0] : i * dilation[0]
                + (height - 1) * stride[0]
                + 1 : stride[0],
                j * dilation[1] : j * dilation[1]
                + (width - 1) * stride[1]
                + 1 : stride[1],
            ]
            for i in range(kh)
            for j in range(kw)
        ],
        axis=-1,
    ).reshape(height * width, kh * kw * channels)
    matrix = jnp.transpose(weight, (2, 3, 1, 0)).reshape(
        kh * kw * channels, out_channels
    )
    return (patches @ matrix).reshape(height, width, out_channels)


def conv_channels_last(
    conv: eqx.nn.Conv2d,
    x: Float[Array, "height width channels"],
    path: Literal["nhwc", "winograd", "gemm"] = "nhwc",
) -> Float[Array, "height2 width2 channels2"]:
    """``conv`` applied to ONE channels-last map ``(H, W, C)`` -> ``(H', W', C')``.

    The same function as ``conv`` on the channels-first map, with its weight
    ``(C', C, kh, kw)`` and bias. ``"nhwc"`` convolves in ``NHWC``/``HWIO``
    layout; ``"winograd"`` does too, except for the convolutions Winograd
    F(2x2, 3x3) computes (see ``WINOGRAD_MIN_CHANNELS``); ``"gemm"`` multiplies
    im2col patches ``(H' W', kh kw C)`` by the weight as a ``(kh kw C, C')``
    matrix. Grouped convolutions and non-zero padding modes go through
    ``conv`` itself, transposed on either side.
    """
    if not _plain(conv):
        return to_channels_last(conv(to_channels_first(x)))
    pads = _pads(conv, (x.shape[0], x.shape[1]))
    stride = cast(tuple[int, int], tuple(conv.stride))
    dilation = cast(tuple[int, int], tuple(conv.dilation))
    if path == "gemm":
        y = _im2col_matmul(x, conv.weight, stride, pads, dilation)
    elif path == "winograd" and _winograd_applies(conv, x, pads):
        weight = jnp.transpose(conv.weight, (2, 3, 1, 0))
        y = winograd_conv(x[None], weight, (pads[0], pads[1]))[0]
    elif PHASE_INPUT_GRADIENT and max(stride) > 1 and dilation == (1, 1):
        weight = jnp.transpose(conv.weight, (2, 3, 1, 0))
        y = strided_conv(x[None], weight, stride, (pads[0], pads[1]))[0]
    else:
        y = lax.conv_general_dilated(
            x[None],
            jnp.transpose(conv.weight, (2, 3, 1, 0)),
            window_strides=stride,
            padding=pads,
            rhs_dilation=dilation,
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
        )[0]
    if conv.bias is not None:
        y = y + conv.bias.reshape(1, 1, -1)
    return y


def batch_norm_channels_last(
    norm: eqx.nn.BatchNorm,
    x: Float[Array, "height width channels"],
    state: eqx.nn.State,
) -> tuple[Float[Array, "height width channels"], eqx.nn.State]:
    """``norm`` (``mode="batch"``) on ONE channels-last map, and the new state.

    The same function and state update as ``norm`` on the channels-first map,
    computed as one pass over the map: the batch mean ``m`` and mean square
    ``q`` per channel (over the named vmap axis), variance ``q - m**2``, then
    ``x * a + c`` with per-channel ``a = weight / sqrt(var + eps)`` and
    ``c = bias - m * a``. Other modes go through ``norm`` itself.

    Raises:
        NameError: in training mode outside a vmap with ``norm.axis_name``.
    """
    if norm.mode != "batch" or norm.batch_counter is None:
        y, state = norm(to_channels_first(x), state)
        return to_channels_last(y), state
    assert norm.batch_state_index is not None
    counter = state.get(norm.batch_counter)
    hidden_mean, hidden_var = state.get(norm.batch_state_index)
    # Python floats meet the int32 counter as eqx.nn.BatchNorm writes it.
    with jax.numpy_dtype_promotion("standard"):
        if norm.inference:
            scale = jnp.where(counter == 0, 1, 1 - norm.momentum**counter)
            mean, var = hidden_mean / scale, hidden_var / scale
        else:
            mean = lax.pmean(jnp.mean(x, axis=(0, 1)), norm.axis_name)
            square = lax.pmean(jnp.mean(x * x, axis=(0, 1)), norm.axis_name)
            var = jnp.maximum(square - mean * mean, 0.0)
            state = state.set(norm.batch_counter, counter + 1)
            state = state.set(
                norm.batch_state_index,
                (
                    hidden_mean * norm.momentum + mean * (1 - norm.momentum),
                    hidden_var * norm.momentum + var * (1 - norm.momentum),
                ),
            )
        a = lax.rsqrt(var + norm.eps)
        if norm.channelwise_affine:
            assert norm.weight is not None and norm.bias is not None
            a = a * norm.weight
            c = norm.bias - mean * a
        else:
            c = -mean * a
        y = x * a.reshape(1, 1, -1) + c.reshape(1, 1, -1)
        return y.astype(x.dtype), state
