"""A convolutional stem for a ViT (Xiao et al. 2021, "Early convolutions help
transformers see better"): strided 3x3 convolutions in place of the patch
embedding."""

from typing import Any

import equinox as eqx
import jax
from jaxtyping import Array, Float, PRNGKeyArray

from ._abstract import get_activation


def conv_stem_widths(dim: int, patch_size: int) -> tuple[int, ...]:
    """The output channels of a ``ConvStem``'s convolutions: ``log2(patch_size)``
    of them, doubling up to ``dim``.

    Raises:
        ValueError: ``patch_size`` is not a power of two from 2, or ``dim`` does
            not halve evenly as often as the stem needs.
    """
    if patch_size < 2 or patch_size & (patch_size - 1):
        raise ValueError(
            f"A ViT with stem='conv' needs a patch_size that is a power of two "
            f"(each 3x3 convolution halves the image), got {patch_size}; use "
            "stem='patch' for other patch sizes."
        )
    steps = patch_size.bit_length() - 1
    if dim % (1 << (steps - 1)):
        raise ValueError(
            f"A ViT with stem='conv' and patch_size={patch_size} starts at "
            f"dim / {1 << (steps - 1)} channels, which needs dim divisible by "
            f"{1 << (steps - 1)}; got dim={dim}."
        )
    return tuple(dim >> (steps - 1 - i) for i in range(steps))


class ConvStem(eqx.Module):
    """``log2(patch_size)`` 3x3 convolutions of stride 2 and padding 1, with the
    activation between them (none after the last), as the patch embedding of a
    [`ViT`][zoo.ViT] built with ``stem="conv"``.

    Each convolution halves the height and width; the channels start at
    ``dim / (patch_size / 2)`` and double up to ``dim``. An image
    ``(channels, height, width)`` becomes the same ``(height / patch_size) *
    (width / patch_size)`` tokens of ``dim`` values, in row-major order, as
    the patch embedding gives, but each token sees an overlapping window of
    the image and not one patch alone.
    """

    convs: tuple[eqx.nn.Conv2d, ...]
    activation: str = eqx.field(static=True)

    def __init__(
        self,
        in_channels: int,
        dim: int,
        patch_size: int,
        *,
        activation: str = "gelu_exact",
        dtype: Any = None,
        key: PRNGKeyArray,
    ):
        """Equinox's default initialisation for every convolution (weights and
        biases uniform in ``±1 / sqrt(fan_in)``).

        Raises:
            ValueError: ``patch_size`` is not a power of two from 2, or ``dim``
                does not halve evenly as often as the stem needs.
        """
        widths = conv_stem_widths(dim, patch_size)
        get_activation(activation)
        ins = (in_channels, *widths[:-1])
        self.convs = tuple(
            eqx.nn.Conv2d(n_in, n_out, 3, stride=2, padding=1, dtype=dtype, key=k)
            for n_in, n_out, k in zip(
                ins, widths, jax.random.split(key, len(widths)), strict=True
            )
        )
        self.activation = activation

    def __call__(
        self, x: Float[Array, "channels height width"]
    ) -> Float[Array, "tokens dim"]:
        """The tokens of one image, one row per position of the downsampled
        grid."""
        act = get_activation(self.activation)
        for i, conv in enumerate(self.convs):
            x = _strided_conv(conv, act(x) if i else x)
        return x.reshape(x.shape[0], -1).T


def _strided_conv(
    conv: eqx.nn.Conv2d, x: Float[Array, "channels height width"]
) -> Float[Array, "out half_height half_width"]:
    """``conv`` (3x3, stride 2, padding 1) on one image, written with
    ``lax.conv_general_dilated``: the same function as calling the layer, and
    a plain convolution to exporters (jax2onnx maps Equinox's ``Conv2d`` call
    as a batched layer)."""
    y = jax.lax.conv_general_dilated(x[None], conv.weight, (2, 2), ((1, 1), (1, 1)))
    return y[0] if conv.bias is None else y[0] + conv.bias
