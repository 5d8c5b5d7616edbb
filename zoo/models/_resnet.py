"""Residual networks (He et al. 2016): for small images, and ImageNet's layout.

The family's blocks, shortcuts and stem pooling live in ``_resnet_blocks``.
"""

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
    stage_indices,
)
from ._conv import ConvPath, resolve_conv_path, to_channels_first, to_channels_last
from ._resnet_blocks import (
    BLOCK_KINDS,
    BOTTLENECK_EXPANSION,
    BasicBlock,
    Bottleneck,
    abstract_block,
    abstract_conv,
    apply_conv,
    apply_norm,
    batch_norm,
    max_pool_3x3_s2,
)

STEM_KINDS: tuple[str, ...] = ("cifar", "imagenet")
"""The stems a ResNet may start with: a 3x3 conv, or ImageNet's 7x7 stride-2
conv and 3x3 stride-2 max pooling."""


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
    """A residual network on ONE channels-first image.

    A stem, then stages of residual blocks (stage ``i`` has ``depths[i]``
    blocks of ``widths[i]`` output channels, its first block strided by
    ``strides[i]``), global average pooling, optional dropout and a linear
    layer to ``out_size`` logits. Shortcuts are identities, or 1x1 conv +
    BatchNorm projections where a block changes shape. Convolutions have no
    bias (BatchNorm follows each); their weights start from He et al.'s
    ``N(0, 2 / fan_in)``, the classifier's from ``N(0, 1 / fan_in)`` with zero
    bias.

    Two layouts (He et al. 2016):

    * ``stem_kind="cifar"``, ``block_kind="basic"`` (the defaults): the CIFAR
      ResNets of section 4.2, a 3x3 conv stem and
      [`BasicBlock`][zoo.models.BasicBlock]s. With ``depths=(n, n, n)`` and
      widths 16/32/64 this is ResNet-``6n+2`` (``zoo.create_model("resnet20")``).
    * ``stem_kind="imagenet"``: a 7x7 stride-2 conv stem with BatchNorm and
      activation, then 3x3 stride-2 max pooling (224 -> 112 -> 56 pixels),
      with basic blocks (``resnet18``, ``resnet34``) or
      [`Bottleneck`][zoo.models.Bottleneck]s (``block_kind="bottleneck"``,
      ``resnet50``): the layout of timm's and torchvision's ResNets, whose
      weights load into it (``zoo.create_model("resnet50", pretrained=...)``).

    ``out_size=0`` builds no classifier: ``output`` is ``eqx.nn.Identity()``
    and the model returns the pooled features. The model is stateful: build it
    with ``eqx.nn.make_with_state(ResNet)(...)`` or ``zoo.create_model``, and
    in training call it under ``jax.vmap(..., axis_name=zoo.models.BATCH_AXIS)``
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
    blocks: tuple[BasicBlock | Bottleneck, ...]
    dropout: eqx.nn.Dropout
    output: eqx.nn.Linear | eqx.nn.Identity
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
    stem_kind: str = eqx.field(static=True)
    block_kind: str = eqx.field(static=True)

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
        stem_kind: str = "cifar",
        block_kind: str = "basic",
        key: PRNGKeyArray,
    ):
        """Build the stem, the stages and the head.

        Args:
            in_channels: channels of the input image (1 for MNIST, 3 for CIFAR).
            image_size: input height and width (an int for square images); any
                size works: each stride-2 conv maps ``n`` pixels to
                ``ceil(n / 2)``, the ImageNet stem's pooling to
                ``(n - 1) // 2 + 1``.
            out_size: number of output logits (classes); ``0`` for no head:
                ``output`` is ``eqx.nn.Identity()`` and the model returns its
                pooled features (what ``features`` returns).
            stem_width: output channels of the stem conv.
            widths: output channels of each stage; its length is the number of
                stages. With bottlenecks each must be a multiple of 4 (the
                blocks' inner width is a quarter of it).
            depths: residual blocks per stage, one for all or one per stage.
            strides: stride of each stage's first block, one for all or one per
                stage; ``None``: 1 for the first stage and 2 for the others.
            bn_momentum: BatchNorm running-statistics momentum, in ``[0, 1)``
                (PyTorch's ``momentum=0.1`` is ``0.9`` here).
            dropout: dropout rate on the pooled features, in ``[0, 1)``.
            activation: name of the activation (see ``zoo.models.ACTIVATION_NAMES``).
            dtype: parameter dtype (``None``: JAX's default float).
            conv_path: ``"nhwc"``, ``"xla"`` or ``"auto"`` (by backend), as
                for [`CNN`][zoo.CNN].
            stem_kind: ``"cifar"`` (a 3x3 stride-1 conv) or ``"imagenet"`` (a
                7x7 stride-2 conv, then 3x3 stride-2 max pooling).
            block_kind: ``"basic"`` (two 3x3 convs) or ``"bottleneck"``
                (1x1, 3x3, 1x1).
            key: PRNG key for the initial parameters.

        Raises:
            ValueError: for a configuration that cannot run (no stage, a width,
                depth or stride below 1, per-stage lists of the wrong length,
                rates out of range, an unknown stem or block kind, a bottleneck
                width not a multiple of 4); the message names the argument.
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
        if min(in_channels, height, width, stem_width) < 1 or out_size < 0:
            raise ValueError(
                "ResNet `in_channels`, `image_size` and `stem_width` must be >= 1 "
                f"and `out_size` >= 0 (0: no head), got {in_channels}, "
                f"{(height, width)}, {stem_width}, {out_size}."
            )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"ResNet `dropout` must be in [0, 1), got {dropout}.")
        if not 0.0 <= bn_momentum < 1.0:
            raise ValueError(
                f"ResNet `bn_momentum` must be in [0, 1), got {bn_momentum}."
            )
        if stem_kind not in STEM_KINDS:
            raise ValueError(
                f"ResNet `stem_kind` must be one of {STEM_KINDS}, got {stem_kind!r}."
            )
        if block_kind not in BLOCK_KINDS:
            raise ValueError(
                f"ResNet `block_kind` must be one of {BLOCK_KINDS}, got {block_kind!r}."
            )
        if block_kind == "bottleneck" and any(
            w % BOTTLENECK_EXPANSION for w in width_list
        ):
            raise ValueError(
                "ResNet with bottleneck blocks needs `widths` that are multiples "
                f"of {BOTTLENECK_EXPANSION} (each block's 3x3 conv has a quarter "
                f"of them), got {width_list}."
            )
        get_activation(activation)
        self.dtype = parse_dtype(dtype)
        param_dtype = None if self.dtype is None else DTYPES[self.dtype]

        kernel, stride = (7, 2) if stem_kind == "imagenet" else (3, 1)
        stem = abstract_conv(in_channels, stem_width, kernel, stride, param_dtype)
        blocks = []
        cin = stem_width
        for stage in range(n):
            for b in range(depth_list[stage]):
                stride = stride_list[stage] if b == 0 else 1
                blocks.append(
                    abstract_block(
                        block_kind,
                        cin,
                        width_list[stage],
                        stride,
                        bn_momentum,
                        activation,
                        param_dtype,
                    )
                )
                cin = width_list[stage]
        head = (
            eqx.filter_eval_shape(
                eqx.nn.Linear, cin, out_size, dtype=param_dtype, key=jax.random.key(0)
            )
            if out_size
            else eqx.nn.Identity()
        )
        self.stem, self.blocks, self.output = _initialise(
            (stem, tuple(blocks), head), key
        )
        self.stem_norm = batch_norm(stem_width, bn_momentum, param_dtype)
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
        self.stem_kind = stem_kind
        self.block_kind = block_kind

    @checked_model_call
    def __call__(
        self,
        x: Float[Array, "channels height width"],
        state: eqx.nn.State,
        *,
        key: PRNGKeyArray | None = None,
    ) -> tuple[Float[Array, " out_size"], eqx.nn.State]:
        """Logits ``(out_size,)`` for one image and the new BatchNorm state.

        With ``out_size=0`` it returns the pooled features ``(widths[-1],)``
        instead. See
        [`AbstractImageClassifier`][zoo.models.AbstractImageClassifier] for the
        calling convention and errors.
        """
        stochastic = dropout_active("ResNet", self.dropout, key)
        maps, state = self._stages(x, state, len(self.widths))
        x = maps[-1]
        features = jnp.mean(x, axis=(1, 2) if self.conv_path == "xla" else (0, 1))
        features = self.dropout(features, key=key if stochastic else None)
        return self.output(features), state

    @checked_model_call
    def intermediates(
        self,
        x: Float[Array, "channels height width"],
        state: eqx.nn.State,
        *,
        indices: Sequence[int] | None = None,
        key: PRNGKeyArray | None = None,
    ) -> tuple[tuple[Float[Array, "_c _h _w"], ...], eqx.nn.State]:
        """The feature map after each stage of residual blocks, for one image.

        Stage ``i`` (after the stem) is the output of its last block, shape
        ``(widths[i], height_i, width_i)``, channels-first on either conv
        path; the mean of the last over its pixels is what the classifier
        sees. Only the stages up to the last one asked for are computed.
        Batch it with [`zoo.models.intermediates`][].

        Args:
            x: one image, shape ``(in_channels, height, width)``.
            state: the BatchNorm state.
            indices: the stages to return, in this order (negative: from the
                end); ``None`` for all of them.
            key: unused (the stages have no dropout); accepted for a call like
                ``__call__``'s.

        Returns:
            ``(maps, state)``: a tuple with one map per index, and the state.

        Raises:
            ValueError: an index outside ``[-len(widths), len(widths))``.
        """
        del key
        wanted = stage_indices(indices, len(self.widths), "ResNet")
        if not wanted:
            return (), state
        maps, state = self._stages(x, state, max(wanted) + 1)
        if self.conv_path != "xla":
            maps = [to_channels_first(m) for m in maps]
        return tuple(maps[i] for i in wanted), state

    def _stages(
        self, x: Array, state: eqx.nn.State, count: int
    ) -> tuple[list[Array], eqx.nn.State]:
        """The outputs of the first ``count`` stages, in the conv path's layout."""
        act = get_activation(self.activation)
        path = self.conv_path
        maps = []
        try:
            if path != "xla":
                # Channels-last throughout: no transposes around each
                # convolution (XLA:CPU convolves channels-last).
                x = to_channels_last(x)
            x, state = apply_norm(
                self.stem_norm, apply_conv(self.stem, x, path), state, path
            )
            x = act(x)
            if self.stem_kind == "imagenet":
                x = max_pool_3x3_s2(x, path)
            first = 0
            for depth in self.depths[:count]:
                for block in self.blocks[first : first + depth]:
                    x, state = block.apply(x, state, path)
                first += depth
                maps.append(x)
        except NameError as error:
            raise NameError(
                "ResNet with BatchNorm in training mode computes batch statistics, "
                f"so call it under jax.vmap(model, axis_name={BATCH_AXIS!r}, "
                "in_axes=(0, None), out_axes=(0, None)) (zoo.apply does this), or "
                "use eqx.nn.inference_mode(model) to evaluate."
            ) from error
        return maps, state

    def config(self) -> dict[str, Any]:
        """The JSON constructor arguments, with ``"family": "ResNet"``.

        ``stem_kind`` and ``block_kind`` appear only when not the defaults, so
        the configs (and weight files) of the small-image presets are as they
        were before the ImageNet layout existed.
        """
        kinds = {
            name: value
            for name, value, default in [
                ("stem_kind", self.stem_kind, "cifar"),
                ("block_kind", self.block_kind, "basic"),
            ]
            if value != default
        }
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
            **kinds,
        }
