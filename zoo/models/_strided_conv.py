"""Strided convolutions whose input gradient skips the zeros (private).

The input gradient of a stride-``s`` convolution is a convolution of the
output gradient dilated by ``s`` (``s - 1`` zeros between its values), and
XLA:CPU computes it so: ``s**2 - 1`` of every ``s**2`` multiply-adds meet a
zero (3 of 4 at stride 2). Each input position ``i`` meets only the kernel taps
``k`` with ``k = i + pad mod s``: split by phase (``i mod s`` on each axis), the
same sums are one stride-1 convolution of the undilated gradient into
``s**2`` times the channels, one group per phase, each with its phase's taps
(zeros pad the phases with fewer taps to one window), then depth to space.

:func:`strided_conv` is ``lax.conv_general_dilated`` (``NHWC``/``HWIO``, no
dilation) whose JVP writes its term in ``dx`` by phases (:func:`by_phases`):
reverse mode transposes that into the convolution above. Its value and weight
gradient are XLA's own, and it stays one convolution per gradient, so
``zoo.train``'s count of a step's convolutions does not change. A 5x5 kernel at
stride 2 takes 36 multiply-adds per input value and channel pair this way
(a 3x3 window for each of 4 phases) against XLA's 100 (timings: the
Performance page).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.custom_derivatives import SymbolicZero
from jaxtyping import Array, Float

Pads = tuple[tuple[int, int], tuple[int, int]]
_LAYOUT = ("NHWC", "HWIO", "NHWC")


def _conv(
    x: Float[Array, "n h w c"],
    w: Float[Array, "kh kw c o"],
    stride: tuple[int, int],
    pads: Pads,
) -> Float[Array, "n h2 w2 o"]:
    return lax.conv_general_dilated(x, w, stride, pads, dimension_numbers=_LAYOUT)


@functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3))
def strided_conv(
    x: Float[Array, "n h w c"],
    w: Float[Array, "kh kw c o"],
    stride: tuple[int, int],
    pads: Pads,
) -> Float[Array, "n h2 w2 o"]:
    """``lax.conv_general_dilated(x, w, stride, pads)`` in ``NHWC``/``HWIO``,
    undilated; the input gradient by phases (see the module docstring)."""
    return _conv(x, w, stride, pads)


@functools.partial(strided_conv.defjvp, symbolic_zeros=True)
def _jvp(
    stride: tuple[int, int],
    pads: Pads,
    primals: tuple[Array, Array],
    tangents: tuple[Array, Array],
) -> tuple[Array, Array]:
    # Linear in the tangents: reverse mode transposes the term in dx into a
    # stride-1 convolution of the output gradient, one channel group per phase.
    x, w = primals
    dx, dw = tangents
    y = _conv(x, w, stride, pads)
    terms = []
    if not isinstance(dx, SymbolicZero):
        terms.append(by_phases(dx, w, stride, pads))
    if not isinstance(dw, SymbolicZero):
        terms.append(_conv(x, dw, stride, pads))
    if not terms:
        return y, jnp.zeros_like(y)
    return y, functools.reduce(jnp.add, terms)


def _taps(
    stride: int, size: int, pad_low: int, length: int, length_out: int
) -> tuple[np.ndarray, tuple[int, int]]:
    """Along one axis: which kernel tap each phase meets at each window position,
    and the padding, for a stride-1 convolution over the phases.

    Phase ``a`` holds the inputs ``x_a[m] = x[stride m + a]`` (``length`` of
    them, zeros past the end), and ``y[o] = sum_j x_a[o + j - d_a] w[stride j +
    b_a]`` with ``b_a = (a + pad_low) mod stride`` and ``d_a = (a + pad_low -
    b_a) / stride``. Shifted to a common window of ``T`` positions ``t``, each
    phase reads ``x_a[o + t - P]``, ``P = max d_a``. Returns ``taps`` of shape
    ``(T, stride)``: the tap of ``w`` at ``(t, a)``, or ``size`` where none
    (a zero), and the padding ``(P, high)`` giving ``length_out`` outputs.
    """
    phases = []
    for a in range(stride):
        b = (a + pad_low) % stride
        phases.append((b, len(range(b, size, stride)), (a + pad_low - b) // stride))
    low = max(d for _, count, d in phases if count)
    window = max(count + low - d for _, count, d in phases if count)
    taps = np.full((window, stride), size)
    for a, (b, count, d) in enumerate(phases):
        for j in range(count):
            taps[j + low - d, a] = stride * j + b
    return taps, (low, length_out - length - low + window - 1)


def by_phases(
    x: Float[Array, "n h w c"],
    w: Float[Array, "kh kw c o"],
    stride: tuple[int, int],
    pads: Pads,
) -> Float[Array, "n h2 w2 o"]:
    """``_conv(x, w, stride, pads)`` as one stride-1 convolution of the phases
    of ``x`` stacked as channels (``x[a::sh, b::sw]``: space to depth), with the
    kernel taps that meet each phase (zeros where none do).

    Slower forward than one strided convolution, but linear in ``x`` with an
    undilated transpose: the JVP of :func:`strided_conv` uses it for its term in
    ``dx`` only.
    """
    n, height, width, channels = x.shape
    size_h, size_w, _, out_channels = w.shape
    out_h = (height + sum(pads[0]) - size_h) // stride[0] + 1
    out_w = (width + sum(pads[1]) - size_w) // stride[1] + 1
    length_h, length_w = -(-height // stride[0]), -(-width // stride[1])
    x = jnp.pad(
        x,
        (
            (0, 0),
            (0, length_h * stride[0] - height),
            (0, length_w * stride[1] - width),
            (0, 0),
        ),
    )
    x = x.reshape(n, length_h, stride[0], length_w, stride[1], channels)
    x = jnp.transpose(x, (0, 1, 3, 2, 4, 5)).reshape(
        n, length_h, length_w, stride[0] * stride[1] * channels
    )
    taps_h, pad_h = _taps(stride[0], size_h, pads[0][0], length_h, out_h)
    taps_w, pad_w = _taps(stride[1], size_w, pads[1][0], length_w, out_w)
    w = jnp.pad(w, ((0, 1), (0, 1), (0, 0), (0, 0)))  # the zero tap
    kernel = w[taps_h[:, None, :, None], taps_w[None, :, None, :]]
    kernel = kernel.reshape(
        taps_h.shape[0], taps_w.shape[0], stride[0] * stride[1] * channels, out_channels
    )
    # A convolution padded by p transposes into one padded by window - 1 - p,
    # and XLA:CPU's kernels read out of bounds where that is negative. So the
    # convolution keeps the padding within [0, window - 1]; any rest (rare: no
    # preset has one) is a pad of its own, whose transpose is a slice. Padding
    # as its own op always would cost ``stax_cnn`` 13 % a step.
    conv_h, rest_h = _split_padding(pad_h, kernel.shape[0])
    conv_w, rest_w = _split_padding(pad_w, kernel.shape[1])
    if any(rest_h + rest_w):
        zero = jnp.zeros((), x.dtype)
        x = lax.pad(x, zero, [(0, 0, 0), (*rest_h, 0), (*rest_w, 0), (0, 0, 0)])
    return _conv(x, kernel, (1, 1), (conv_h, conv_w))


def _split_padding(
    pad: tuple[int, int], window: int
) -> tuple[tuple[int, int], tuple[int, int]]:
    """``pad`` as ``(inside, rest)``, summing to it: ``inside`` clipped to
    ``[0, window - 1]``, the padding a convolution transposes safely."""
    low, high = (min(max(p, 0), window - 1) for p in pad)
    return (low, high), (pad[0] - low, pad[1] - high)
