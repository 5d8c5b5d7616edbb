"""The parts of a [`ResNet`][zoo.ResNet]: residual blocks, shortcuts, stem pooling.

Every block computes in its model's conv path's layout (``_conv``): channels-first
``(C, H, W)`` on ``"xla"``, channels-last ``(H, W, C)`` on ``"nhwc"``. Blocks
are built with abstract conv weights (``jax.ShapeDtypeStruct``), drawn at once
by the model (``_resnet._initialise``).
"""

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from ._abstract import BATCH_AXIS, get_activation
from ._conv import (
    ConvPath,
    batch_norm_channels_first,
    batch_norm_channels_last,
    conv_channels_last,
)

Path = ConvPath


def apply_conv(layer: eqx.nn.Conv2d, x: Array, path: Path) -> Array:
    """Apply one convolution: every conv of the family runs through here.

    On ``"xla"`` maps are channels-first ``(C, H, W)`` and the Equinox layer
    runs as written; on ``"nhwc"`` they are channels-last ``(H, W, C)``.
    """
    if path == "xla":
        return layer(x)
    return conv_channels_last(layer, x)


def apply_norm(
    layer: eqx.nn.BatchNorm, x: Array, state: eqx.nn.State, path: Path
) -> tuple[Array, eqx.nn.State]:
    """Apply one BatchNorm, in the layout ``path`` implies (see ``apply_conv``)."""
    if path != "xla":
        return batch_norm_channels_last(layer, x, state)
    return batch_norm_channels_first(layer, x, state)


def max_pool_3x3_s2(x: Array, path: Path) -> Array:
    """3x3 max pooling at stride 2, padded by 1 (with ``-inf``): the ImageNet stem's.

    ``n`` pixels become ``(n - 1) // 2 + 1``, as ``torch.nn.MaxPool2d(3, 2, 1)``.
    Computed as the elementwise maximum of the window's 9 strided slices, whose
    gradient is a few selects (``reduce_window``'s is slow on XLA:CPU).
    """
    h_axis = 1 if path == "xla" else 0
    pads = [(0, 0)] * 3
    pads[h_axis] = pads[h_axis + 1] = (1, 1)
    padded = jnp.pad(x, pads, constant_values=-jnp.inf)
    height, width = x.shape[h_axis], x.shape[h_axis + 1]
    out_h, out_w = (height - 1) // 2 + 1, (width - 1) // 2 + 1
    out = None
    for i in range(3):
        for j in range(3):
            rows = slice(i, i + 2 * out_h - 1, 2)
            cols = slice(j, j + 2 * out_w - 1, 2)
            window = padded[:, rows, cols] if path == "xla" else padded[rows, cols]
            out = window if out is None else jnp.maximum(out, window)
    assert out is not None
    return out


def abstract_conv(
    in_channels: int, out_channels: int, kernel_size: int, stride: int, dtype: Any
) -> eqx.nn.Conv2d:
    """A bias-free conv padded by ``kernel_size // 2`` whose weight is a
    ``jax.ShapeDtypeStruct``, drawn later."""
    return eqx.filter_eval_shape(
        eqx.nn.Conv2d,
        in_channels,
        out_channels,
        kernel_size,
        stride=stride,
        padding=kernel_size // 2,
        use_bias=False,
        dtype=dtype,
        key=jax.random.key(0),
    )


def batch_norm(channels: int, momentum: float, dtype: Any) -> eqx.nn.BatchNorm:
    """A BatchNorm over the batch axis (``mode="batch"``), PyTorch's epsilon."""
    return eqx.nn.BatchNorm(
        channels, axis_name=BATCH_AXIS, momentum=momentum, mode="batch", dtype=dtype
    )


class Projection(eqx.Module):
    """The shortcut where a block changes shape: a strided 1x1 conv and BatchNorm."""

    conv: eqx.nn.Conv2d
    norm: eqx.nn.BatchNorm

    def __call__(
        self, x: Float[Array, "c h w"], state: eqx.nn.State, path: Path = "xla"
    ) -> tuple[Float[Array, "c2 h2 w2"], eqx.nn.State]:
        """Project one feature map (channels-last unless ``path="xla"``)."""
        return apply_norm(self.norm, apply_conv(self.conv, x, path), state, path)


def _projection(
    in_channels: int, out_channels: int, stride: int, momentum: float, dtype: Any
) -> Projection | None:
    """A projection where the shape changes, else ``None`` (the identity)."""
    if stride == 1 and in_channels == out_channels:
        return None
    return Projection(
        abstract_conv(in_channels, out_channels, 1, stride, dtype),
        batch_norm(out_channels, momentum, dtype),
    )


class BasicBlock(eqx.Module):
    """conv3x3-BN-act-conv3x3-BN, plus the shortcut, then the activation.

    The shortcut is the identity when the block keeps its input's shape, and a
    [`Projection`][zoo.models.Projection] (1x1 conv + BatchNorm) when it changes the
    channels or the stride (``conv1`` carries the stride). Built by
    [`ResNet`][zoo.ResNet].
    """

    conv1: eqx.nn.Conv2d
    norm1: eqx.nn.BatchNorm
    conv2: eqx.nn.Conv2d
    norm2: eqx.nn.BatchNorm
    shortcut: Projection | None
    activation: str = eqx.field(static=True)

    def __call__(
        self, x: Float[Array, "c h w"], state: eqx.nn.State
    ) -> tuple[Float[Array, "c2 h2 w2"], eqx.nn.State]:
        """Apply the block to one channels-first map ``(channels, height, width)``
        with the Equinox layers (a [`ResNet`][zoo.ResNet] calls :meth:`apply`
        in its own conv path's layout)."""
        return self.apply(x, state, "xla")

    def apply(
        self, x: Array, state: eqx.nn.State, path: Path
    ) -> tuple[Array, eqx.nn.State]:
        """The block on a map in ``path``'s layout: ``(C, H, W)`` on ``"xla"``,
        ``(H, W, C)`` on ``"nhwc"``."""
        act = get_activation(self.activation)
        y, state = apply_norm(self.norm1, apply_conv(self.conv1, x, path), state, path)
        y = act(y)
        y, state = apply_norm(self.norm2, apply_conv(self.conv2, y, path), state, path)
        if self.shortcut is not None:
            x, state = self.shortcut(x, state, path)
        return act(y + x), state


class Bottleneck(eqx.Module):
    """conv1x1-BN-act-conv3x3-BN-act-conv1x1-BN, plus the shortcut, then the
    activation (He et al. 2016, figure 5).

    The 1x1 ``conv1`` narrows the block's input to ``out_channels // 4``
    channels, the 3x3 ``conv2`` carries the stride (as timm's and
    torchvision's ResNet-50, "ResNet v1.5"), and the 1x1 ``conv3`` widens it
    to ``out_channels``. The shortcut is as a
    [`BasicBlock`][zoo.models.BasicBlock]'s. Built by [`ResNet`][zoo.ResNet]
    with ``block_kind="bottleneck"``.
    """

    conv1: eqx.nn.Conv2d
    norm1: eqx.nn.BatchNorm
    conv2: eqx.nn.Conv2d
    norm2: eqx.nn.BatchNorm
    conv3: eqx.nn.Conv2d
    norm3: eqx.nn.BatchNorm
    shortcut: Projection | None
    activation: str = eqx.field(static=True)

    def __call__(
        self, x: Float[Array, "c h w"], state: eqx.nn.State
    ) -> tuple[Float[Array, "c2 h2 w2"], eqx.nn.State]:
        """Apply the block to one channels-first map ``(channels, height, width)``
        with the Equinox layers (a [`ResNet`][zoo.ResNet] calls :meth:`apply`
        in its own conv path's layout)."""
        return self.apply(x, state, "xla")

    def apply(
        self, x: Array, state: eqx.nn.State, path: Path
    ) -> tuple[Array, eqx.nn.State]:
        """The block on a map in ``path``'s layout: ``(C, H, W)`` on ``"xla"``,
        ``(H, W, C)`` on ``"nhwc"``."""
        act = get_activation(self.activation)
        y, state = apply_norm(self.norm1, apply_conv(self.conv1, x, path), state, path)
        y = act(y)
        y, state = apply_norm(self.norm2, apply_conv(self.conv2, y, path), state, path)
        y = act(y)
        y, state = apply_norm(self.norm3, apply_conv(self.conv3, y, path), state, path)
        if self.shortcut is not None:
            x, state = self.shortcut(x, state, path)
        return act(y + x), state


BLOCK_KINDS: tuple[str, ...] = ("basic", "bottleneck")
"""The residual blocks a ResNet may be built of."""
BOTTLENECK_EXPANSION = 4
"""A bottleneck's output channels over its inner (3x3) channels."""


def abstract_block(
    kind: str,
    in_channels: int,
    out_channels: int,
    stride: int,
    momentum: float,
    activation: str,
    dtype: Any,
) -> BasicBlock | Bottleneck:
    """A block of ``kind`` with real BatchNorms and abstract conv weights."""
    shortcut = _projection(in_channels, out_channels, stride, momentum, dtype)
    if kind == "basic":
        return BasicBlock(
            conv1=abstract_conv(in_channels, out_channels, 3, stride, dtype),
            norm1=batch_norm(out_channels, momentum, dtype),
            conv2=abstract_conv(out_channels, out_channels, 3, 1, dtype),
            norm2=batch_norm(out_channels, momentum, dtype),
            shortcut=shortcut,
            activation=activation,
        )
    inner = out_channels // BOTTLENECK_EXPANSION
    return Bottleneck(
        conv1=abstract_conv(in_channels, inner, 1, 1, dtype),
        norm1=batch_norm(inner, momentum, dtype),
        conv2=abstract_conv(inner, inner, 3, stride, dtype),
        norm2=batch_norm(inner, momentum, dtype),
        conv3=abstract_conv(inner, out_channels, 1, 1, dtype),
        norm3=batch_norm(out_channels, momentum, dtype),
        shortcut=shortcut,
        activation=activation,
    )
