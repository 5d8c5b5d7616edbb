"""Max- and average pooling over non-overlapping windows, fast to differentiate."""

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float


class MaxPool(eqx.Module):
    """Max over non-overlapping ``size x size`` windows of ONE ``(C, H, W)`` map.

    The same function as ``eqx.nn.MaxPool2d(size, size)`` (windows that do not
    fit are dropped), computed as the elementwise maximum of the window's
    ``size**2`` strided slices. ``MaxPool2d`` lowers to ``reduce_window``, whose
    gradient (``select_and_scatter``) is slow on XLA:CPU; the gradient of
    ``maximum`` is a few elementwise selects (see the Performance page).

    Example:
        >>> import jax.numpy as jnp
        >>> MaxPool(2)(jnp.arange(16.0).reshape(1, 4, 4))
        Array([[[ 5.,  7.],
                [13., 15.]]], dtype=float32)
    """

    size: int = eqx.field(static=True)

    def __init__(self, size: int):
        """Args:
        size: the window's height and width, and its stride (>= 1).
        """
        if size < 1:
            raise ValueError(f"MaxPool size must be >= 1, got {size}.")
        self.size = size

    def __call__(
        self, x: Float[Array, "channels height width"]
    ) -> Float[Array, "channels pooled_height pooled_width"]:
        """Pool one feature map; ``H`` and ``W`` shrink to ``H // size, W // size``."""
        s = self.size
        height, width = (x.shape[1] // s) * s, (x.shape[2] // s) * s
        slices = [x[:, i:height:s, j:width:s] for i in range(s) for j in range(s)]
        out = slices[0]
        for other in slices[1:]:
            out = jnp.maximum(out, other)
        return out

    def channels_last(
        self, x: Float[Array, "height width channels"]
    ) -> Float[Array, "pooled_height pooled_width channels"]:
        """The same pooling of ONE channels-last map ``(H, W, C)``.

        A reshape to ``(H // s, s, W // s, s, C)`` and a max over the two
        window axes (:func:`window_max`); its gradient goes to the first
        maximum of each window, row by row, as ``eqx.nn.MaxPool2d``'s and
        PyTorch's do (the slices of ``__call__`` split ties).
        """
        return window_max(_windows(x, self.size))


@jax.custom_jvp
def window_max(
    windows: Float[Array, "height s1 width s2 channels"],
) -> Float[Array, "height width channels"]:
    """The maximum of each window of ``(H', s, W', s, C)`` over its two ``s`` axes.

    Its derivative takes the tangent of the first maximum (row by row), whose
    index in the window the forward pass keeps (one byte an output where the
    window has at most 127 values). JAX's own derivative of ``max`` splits ties
    evenly, which needs a count of the maxima per window: in reverse mode a
    reduction that XLA:CPU fuses into the convolution before it, slowing it.
    """
    return windows.max(axis=(1, 3))


def _first_max(windows: Array, maxima: Array) -> Array:
    """The index (row by row) of the first maximum in each window."""
    rows, cols = windows.shape[1], windows.shape[3]
    dtype = jnp.int8 if rows * cols <= 127 else jnp.int32
    index = jnp.full(maxima.shape, rows * cols - 1, dtype)
    for position in range(rows * cols - 2, -1, -1):
        row, col = divmod(position, cols)
        hit = windows[:, row, :, col, :] == maxima
        index = jnp.where(hit, jnp.asarray(position, dtype), index)
    return index


@window_max.defjvp
def _window_max_jvp(
    primals: tuple[Array], tangents: tuple[Array]
) -> tuple[Array, Array]:
    (windows,), (dwindows,) = primals, tangents
    maxima = windows.max(axis=(1, 3))
    index = _first_max(windows, maxima)
    rows, cols = windows.shape[1], windows.shape[3]
    positions = jnp.arange(rows * cols, dtype=index.dtype).reshape(1, rows, 1, cols, 1)
    first = positions == index[:, None, :, None, :]
    return maxima, jnp.sum(jnp.where(first, dwindows, 0), axis=(1, 3))


def _windows(x: Array, s: int) -> Array:
    """``(H, W, C) -> (H // s, s, W // s, s, C)``, dropping what does not fit."""
    height, width = x.shape[0] // s, x.shape[1] // s
    return x[: height * s, : width * s].reshape(height, s, width, s, x.shape[2])


class AvgPool(eqx.Module):
    """Mean over non-overlapping ``size x size`` windows of ONE ``(C, H, W)`` map.

    The subsampling of LeNet-5 (without its trainable scale and bias): the same
    function as ``eqx.nn.AvgPool2d(size, size)`` (windows that do not fit are
    dropped), computed as a reshape and a mean.

    Example:
        >>> import jax.numpy as jnp
        >>> AvgPool(2)(jnp.arange(16.0).reshape(1, 4, 4))
        Array([[[ 2.5,  4.5],
                [10.5, 12.5]]], dtype=float32)
    """

    size: int = eqx.field(static=True)

    def __init__(self, size: int):
        """Args:
        size: the window's height and width, and its stride (>= 1).
        """
        if size < 1:
            raise ValueError(f"AvgPool size must be >= 1, got {size}.")
        self.size = size

    def __call__(
        self, x: Float[Array, "channels height width"]
    ) -> Float[Array, "channels pooled_height pooled_width"]:
        """Pool one feature map; ``H`` and ``W`` shrink to ``H // size, W // size``."""
        s = self.size
        channels, height, width = x.shape[0], x.shape[1] // s, x.shape[2] // s
        windows = x[:, : height * s, : width * s].reshape(channels, height, s, width, s)
        return windows.mean(axis=(2, 4))

    def channels_last(
        self, x: Float[Array, "height width channels"]
    ) -> Float[Array, "pooled_height pooled_width channels"]:
        """The same pooling of ONE channels-last map ``(H, W, C)``."""
        return _windows(x, self.size).mean(axis=(1, 3))
