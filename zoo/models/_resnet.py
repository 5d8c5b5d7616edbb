"""Residual networks for small images (He et al. 2016, section 4.2)."""

import functools
import math
from collections.abc import Sequence
from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from .._checks import checked_model_call
from ._abstract import (
    BATCH_AXIS,
    DTYPES,
    AbstractImageClassifier,
    dropout_active,
    get_activation,
    parse_dtype,
)
from ._conv import (
    ConvPath,
    batch_norm_channels_last,
    conv_channels_last,
    resolve_conv_path,
    to_channels_last,
)

Path = ConvPath


def _conv(layer: eqx.nn.Conv2d, x: Array, path: Path) -> Array:
    """Apply one convolution: every conv of the family runs through here.

    On ``"xla"`` maps are channels-first ``(C, H, W)`` and the Equinox layer
    runs as written; on ``"nhwc"`` they are channels-last ``(H, W, C)``.
    """
    if path == "xla":
        return layer(x)
    return conv_channels_last(layer, x)


def _norm(
    layer: eqx.nn.BatchNorm, x: Array, state: eqx.nn.State, path: Path
) -> tuple[Array, eqx.nn.State]:
    """Apply one BatchNorm, in the layout ``path`` implies (see ``_conv``)."""
    if path != "xla":
        return batch_norm_channels_last(layer, x, state)
    # eqx.nn.BatchNorm(mode="batch") raises a Python float to an int32 counter
    # in inference mode, which strict dtype promotion refuses.
    with jax.numpy_dtype_promotion("standard"):
        return layer(x, state)


def _abstract_conv(
    in_channels: int, out_channels: int, kernel_size: int, stride: int, dtype: Any
) -> eqx.nn.Conv2d:
    """A bias-free conv whose weight is a ``jax.ShapeDtypeStruct``, drawn later."""
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


@functools.partial(jax.jit, static_argnums=(1, 2))
def _draw(
    key: PRNGKeyArray, shapes: tuple[tuple[int, ...], ...], dtype: Any
) -> list[Array]:
    """Kernels ``(out, in, ...)`` from ``N(0, gain / fan_in)``, biases zero.

    The gain is 2 for conv kernels (He et al. 2015) and 1 for the classifier.
    One normal vector is drawn and cut up: XLA compiles one random-number
    program, where a draw per layer (as Equinox's initialisers make) compiles
    one each, which took longer on CPU than compiling a ResNet's training step.
    """
    kernels = [shape for shape in shapes if len(shape) > 1]
    flat = jax.random.normal(key, (sum(math.prod(s) for s in kernels),), dtype)
    out, offset = [], 0
    for shape in shapes:
        if len(shape) == 1:
            out.append(jnp.zeros(shape, dtype))
            continue
        size = math.prod(shape)
        gain = 2.0 if len(shape) == 4 else 1.0
        std = math.sqrt(gain / math.prod(shape[1:]))
        out.append(std * flat[offset : offset + size].reshape(shape))
        offset += size
    return out


def _initialise(tree: Any, key: PRNGKeyArray) -> Any:
    """Replace every ``jax.ShapeDtypeStruct`` leaf of ``tree`` by its draw."""
    leaves, treedef = jax.tree.flatten(tree)
    abstract = [i for i, x in enumerate(leaves) if isinstance(x, jax.ShapeDtypeStruct)]
    if not abstract:
        return tree
    shapes = tuple(tuple(leaves[i].shape) for i in abstract)
    drawn = _draw(key, shapes, leaves[abstract[0]].dtype)
    for i, value in zip(abstract, drawn, strict=True):
        leaves[i] = value
    return jax.tree.unflatten(treedef, leaves)


def _batch_norm(channels: int, momentum: float, dtype: Any) -> eqx.nn.BatchNorm:
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
        return _norm(self.norm, _conv(self.conv, x, path), state, path)


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
        y, state = _norm(self.norm1, _conv(self.conv1, x, path), state, path)
        y, state = _norm(self.norm2, _conv(self.conv2, act(y), path), state, path)
        if self.shortcut is not None:
            x, state = self.shortcut(x, state, path)
        return act(y + x), state


def _abstract_block(
    in_channels: int,
    out_channels: int,
    stride: int,
    bn_momentum: float,
    activation: str,
    dtype: Any,
) -> BasicBlock:
    """A block with real BatchNorms and abstract conv weights."""
    return BasicBlock(
        conv1=_abstract_conv(in_channels, out_channels, 3, stride, dtype),
        norm1=_batch_norm(out_channels, bn_momentum, dtype),
        conv2=_abstract_conv(out_channels, out_channels, 3, 1, dtype),
        norm2=_batch_norm(out_channels, bn_momentum, dtype),
        shortcut=(
            Projection(
                _abstract_conv(in_channels, out_channels, 1, stride, dtype),
                _batch_norm(out_channels, bn_momentum, dtype),
            )
            if stride != 1 or in_channels != out_channels
            else None
        ),
        activation=activation,
    )


def _per_stage(name: str, value: int | Sequence[int], n: int) -> tuple[int, ...]:
    values = (value,) * n if isinstance(value, int) else tuple(value)
    if len(values) != n:
        raise ValueError(
            f"ResNet `{name}` has {len(values)} entries but there are {n} stages "
            f"(the length of `widths`); give one value or one per stage."
        )
    if any(int(v) < 1 for v in values):
        raise ValueError(f"ResNet `{name}` must all be >= 1, got {values}.")
    return tuple(int(v) for v in values)


class ResNet(AbstractImageClassifier):
    """A residual network for small images, on ONE channels-first image.

    The CIFAR ResNets of He et al. (2016, section 4.2): a 3x3 conv stem with
    BatchNorm and activation, then stages of [`BasicBlock`][zoo.models.BasicBlock]s
    (stage ``i`` has ``depths[i]`` blocks of ``widths[i]`` channels, its first
    block strided by ``strides[i]``), global average pooling, optional dropout
    and a linear layer to ``out_size`` logits. Shortcuts are identities, or
    1x1 conv + BatchNorm projections where a block changes shape. Convolutions
    have no bias (BatchNorm follows each); their weights start from He et
    al.'s ``N(0, 2 / fan_in)``, the classifier's from ``N(0, 1 / fan_in)`` with
    zero bias.

    With ``depths=(n, n, n)`` and widths 16/32/64 this is ResNet-``6n+2``
    (``zoo.create_model("resnet20")``). The model is stateful: build it with
    ``eqx.nn.make_with_state(ResNet)(...)`` or ``zoo.create_model``, and in
    training call it under ``jax.vmap(..., axis_name=zoo.models.BATCH_AXIS)``
    (``zoo.apply`` does), so BatchNorm statistics span the batch.

    Example:
        >>> import equinox as eqx, jax, jax.numpy as jnp, zoo
        >>> model, state = eqx.nn.make_with_state(zoo.ResNet)(
        ...     3, 32, 10, widths=(8, 16), depths=(1, 1), key=jax.random.key(0))
        >>> logits, state = zoo.apply(model, jnp.zeros((2, 3, 32, 32)), state)
        >>> logits.shape
        (2, 10)
    """

    stem: eqx.nn.Conv2d
    stem_norm: eqx.nn.BatchNorm
    blocks: tuple[BasicBlock, ...]
    dropout: eqx.nn.Dropout
    output: eqx.nn.Linear
    in_channels: int = eqx.field(static=True)
    image_size: tuple[int, int] = eqx.field(static=True)
    out_size: int = eqx.field(static=True)
    stem_width: int = eqx.field(static=True)
    widths: tuple[int, ...] = eqx.field(static=True)
    depths: tuple[int, ...] = eqx.field(static=True)
    strides: tuple[int, ...] = eqx.field(static=True)
    bn_momentum: float = eqx.field(static=True)
    activation: str = eqx.field(static=True)
    dtype: str | None = eqx.field(static=True)
    conv_path: ConvPath = eqx.field(static=True)

    stateful: ClassVar[bool] = True

    def __init__(
        self,
        in_channels: int,
        image_size: int | Sequence[int],
        out_size: int,
        *,
        stem_width: int = 16,
        widths: Sequence[int] = (16, 32, 64),
        depths: int | Sequence[int] = 3,
        strides: int | Sequence[int] | None = None,
        bn_momentum: float = 0.9,
        dropout: float = 0.0,
        activation: str = "relu",
        dtype: Any = None,
        conv_path: str = "auto",
        key: PRNGKeyArray,
    ):
        """Build the stem, the stages and the head.

        Args:
            in_channels: channels of the input image (1 for MNIST, 3 for CIFAR).
            image_size: input height and width (an int for square images); any
                size works, each stride-2 stage maps ``n`` pixels to
                ``ceil(n / 2)``.
            out_size: number of output logits (classes).
            stem_width: output channels of the 3x3 stem conv.
            widths: channels of each stage; its length is the number of stages.
            depths: residual blocks per stage, one for all or one per stage.
            strides: stride of each stage's first block, one for all or one per
                stage; ``None``: 1 for the first stage and 2 for the others.
            bn_momentum: BatchNorm running-statistics momentum, in ``[0, 1)``.
            dropout: dropout rate on the pooled features, in ``[0, 1)``.
            activation: name of the activation (see ``zoo.models.ACTIVATION_NAMES``).
            dtype: parameter dtype (``None``: JAX's default float).
            conv_path: ``"nhwc"``, ``"xla"`` or ``"auto"`` (by backend), as
                for [`CNN`][zoo.CNN].
            key: PRNG key for the initial parameters.

        Raises:
            ValueError: for a configuration that cannot run (no stage, a width,
                depth or stride below 1, per-stage lists of the wrong length,
                rates out of range); the message names the argument.
        """
        if isinstance(widths, int):
            raise ValueError(
                f"ResNet `widths` is one width per stage, e.g. (16, 32, 64); got "
                f"the int {widths}."
            )
        n = len(widths)
        if n < 1:
            raise ValueError("ResNet needs at least one stage in `widths`.")
        width_list = _per_stage("widths", widths, n)
        depth_list = _per_stage("depths", depths, n)
        if strides is None:
            strides = (1,) + (2,) * (n - 1)
        stride_list = _per_stage("strides", strides, n)
        if isinstance(image_size, int):
            height, width = image_size, image_size
        else:
            height, width = (int(s) for s in image_size)
        if min(in_channels, height, width, out_size, stem_width) < 1:
            raise ValueError(
                "ResNet `in_channels`, `image_size`, `out_size` and `stem_width` "
                f"must be >= 1, got {in_channels}, {(height, width)}, {out_size}, "
                f"{stem_width}."
            )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"ResNet `dropout` must be in [0, 1), got {dropout}.")
        if not 0.0 <= bn_momentum < 1.0:
            raise ValueError(
                f"ResNet `bn_momentum` must be in [0, 1), got {bn_momentum}."
            )
        get_activation(activation)
        self.dtype = parse_dtype(dtype)
        param_dtype = None if self.dtype is None else DTYPES[self.dtype]

        stem = _abstract_conv(in_channels, stem_width, 3, 1, param_dtype)
        blocks = []
        cin = stem_width
        for stage in range(n):
            for b in range(depth_list[stage]):
                stride = stride_list[stage] if b == 0 else 1
                blocks.append(
                    _abstract_block(
                        cin,
                        width_list[stage],
                        stride,
                        bn_momentum,
                        activation,
                        param_dtype,
                    )
                )
                cin = width_list[stage]
        head = eqx.filter_eval_shape(
            eqx.nn.Linear, cin, out_size, dtype=param_dtype, key=jax.random.key(0)
        )
        self.stem, self.blocks, self.output = _initialise(
            (stem, tuple(blocks), head), key
        )
        self.stem_norm = _batch_norm(stem_width, bn_momentum, param_dtype)
        self.dropout = eqx.nn.Dropout(dropout)
        self.in_channels = in_channels
        self.image_size = (height, width)
        self.out_size = out_size
        self.stem_width = stem_width
        self.widths = width_list
        self.depths = depth_list
        self.strides = stride_list
        self.bn_momentum = bn_momentum
        self.activation = activation
        self.conv_path = resolve_conv_path(conv_path)

    @checked_model_call
    def __call__(
        self,
        x: Float[Array, "channels height width"],
        state: eqx.nn.State,
        *,
        key: PRNGKeyArray | None = None,
    ) -> tuple[Float[Array, " out_size"], eqx.nn.State]:
        """Logits ``(out_size,)`` for one image and the new BatchNorm state.

        See [`AbstractImageClassifier`][zoo.models.AbstractImageClassifier] for the
        calling convention and errors.
        """
        stochastic = dropout_active("ResNet", self.dropout, key)
        act = get_activation(self.activation)
        path = self.conv_path
        try:
            if path != "xla":
                # Channels-last throughout: no transposes around each
                # convolution (XLA:CPU convolves channels-last).
                x = to_channels_last(x)
            x, state = _norm(self.stem_norm, _conv(self.stem, x, path), state, path)
            x = act(x)
            for block in self.blocks:
                x, state = block.apply(x, state, path)
        except NameError as error:
            raise NameError(
                "ResNet with BatchNorm in training mode computes batch statistics, "
                f"so call it under jax.vmap(model, axis_name={BATCH_AXIS!r}, "
                "in_axes=(0, None), out_axes=(0, None)) (zoo.apply does this), or "
                "use eqx.nn.inference_mode(model) to evaluate."
            ) from error
        features = jnp.mean(x, axis=(1, 2) if path == "xla" else (0, 1))
        features = self.dropout(features, key=key if stochastic else None)
        return self.output(features), state

    def config(self) -> dict[str, Any]:
        """The JSON constructor arguments, with ``"family": "ResNet"``."""
        return {
            "family": "ResNet",
            "in_channels": self.in_channels,
            "image_size": list(self.image_size),
            "out_size": self.out_size,
            "stem_width": self.stem_width,
            "widths": list(self.widths),
            "depths": list(self.depths),
            "strides": list(self.strides),
            "bn_momentum": self.bn_momentum,
            "dropout": self.dropout.p,
            "activation": self.activation,
            "dtype": self.dtype,
        }
