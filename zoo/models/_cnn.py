"""Convolutional network: a stack of conv blocks and a dense head."""

import math
from collections.abc import Sequence
from typing import Any, ClassVar, TypeVar

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
from ._conv import (
    ConvPath,
    batch_norm_channels_first,
    batch_norm_channels_last,
    conv_channels_last,
    resolve_conv_path,
    to_channels_first,
    to_channels_last,
)
from ._pool import AvgPool, MaxPool

Padding = str | int
POOLINGS: dict[str, type[MaxPool] | type[AvgPool]] = {"max": MaxPool, "avg": AvgPool}
"""Pooling layers by the name a CNN config gives them."""
_T = TypeVar("_T")


def conv_output_size(size: int, kernel: int, stride: int, padding: Padding) -> int:
    """Spatial size after a convolution (XLA's rule for ``SAME``/``VALID``/int)."""
    if padding == "SAME":
        return math.ceil(size / stride)
    if padding == "VALID":
        return (size - kernel) // stride + 1
    if isinstance(padding, int):
        return (size + 2 * padding - kernel) // stride + 1
    raise ValueError(f"padding must be 'SAME', 'VALID' or an int, got {padding!r}.")


def _per_block(name: str, value: _T | Sequence[_T], n: int) -> tuple[_T, ...]:
    if isinstance(value, str | int | float):
        return (value,) * n  # pyright: ignore[reportReturnType]
    values = tuple(value)  # pyright: ignore[reportArgumentType]
    if len(values) != n:
        raise ValueError(
            f"CNN `{name}` has {len(values)} entries but there are {n} conv blocks; "
            f"give one value or one per block."
        )
    return values


class ConvBlock(eqx.Module):
    """Conv2d, then BatchNorm (optional), activation, pooling (optional).

    Called, it runs the Equinox layers channels-first; a [`CNN`][zoo.CNN] on
    the ``"nhwc"`` conv path calls :meth:`channels_last` instead (the same
    function and parameters).
    """

    conv: eqx.nn.Conv2d
    norm: eqx.nn.BatchNorm | None
    pool: MaxPool | AvgPool | None
    activation: str = eqx.field(static=True)

    def __call__(
        self, x: Float[Array, "c h w"], state: eqx.nn.State
    ) -> tuple[Float[Array, "c2 h2 w2"], eqx.nn.State]:
        """Apply the block to one feature map ``(channels, height, width)``."""
        x = self.conv(x)
        if self.norm is not None:
            x, state = batch_norm_channels_first(self.norm, x, state)
        x = get_activation(self.activation)(x)
        if self.pool is not None:
            x = self.pool(x)
        return x, state

    def channels_last(
        self, x: Float[Array, "h w c"], state: eqx.nn.State
    ) -> tuple[Float[Array, "h2 w2 c2"], eqx.nn.State]:
        """Apply the block to one channels-last map ``(height, width, channels)``."""
        x = conv_channels_last(self.conv, x)
        if self.norm is not None:
            x, state = batch_norm_channels_last(self.norm, x, state)
        x = get_activation(self.activation)(x)
        if isinstance(self.pool, MaxPool | AvgPool):
            x = self.pool.channels_last(x)
        elif self.pool is not None:  # another pooling layer put in its place
            x = to_channels_last(self.pool(to_channels_first(x)))
        return x, state


class CNN(AbstractImageClassifier):
    """A convolutional classifier on ONE channels-first image.

    Each conv block is ``Conv2d -> [BatchNorm] -> activation -> [pooling]``; the
    feature map is then flattened and passed through ``hidden_sizes`` dense layers
    (activation and dropout after each) and a final linear layer to ``out_size``
    logits (``out_size=0``: no final layer, the model returns its features).
    The model is stateful (BatchNorm running statistics live in an
    ``eqx.nn.State``): build it with ``eqx.nn.make_with_state(CNN)(...)`` or
    ``zoo.create_model``, and in training call it under
    ``jax.vmap(..., axis_name=zoo.models.BATCH_AXIS)`` so statistics span the batch.

    Example:
        >>> import equinox as eqx, jax, jax.numpy as jnp, zoo
        >>> model, state = eqx.nn.make_with_state(zoo.CNN)(
        ...     1, 28, 10, channels=(8, 16), strides=2, key=jax.random.key(0))
        >>> model = eqx.nn.inference_mode(model)
        >>> logits, state = model(jnp.zeros((1, 28, 28)), state)
        >>> logits.shape
        (10,)
    """

    blocks: tuple[ConvBlock, ...]
    hidden: tuple[eqx.nn.Linear, ...]
    output: eqx.nn.Linear | eqx.nn.Identity
    dropout: eqx.nn.Dropout
    in_channels: int = eqx.field(static=True)
    image_size: tuple[int, int] = eqx.field(static=True)
    out_size: int = eqx.field(static=True)
    channels: tuple[int, ...] = eqx.field(static=True)
    kernel_sizes: tuple[int, ...] = eqx.field(static=True)
    strides: tuple[int, ...] = eqx.field(static=True)
    paddings: tuple[Padding, ...] = eqx.field(static=True)
    pool_sizes: tuple[int, ...] = eqx.field(static=True)
    poolings: tuple[str, ...] = eqx.field(static=True)
    batch_norm: bool = eqx.field(static=True)
    bn_momentum: float = eqx.field(static=True)
    hidden_sizes: tuple[int, ...] = eqx.field(static=True)
    activation: str = eqx.field(static=True)
    use_bias: bool = eqx.field(static=True)
    dtype: str | None = eqx.field(static=True)
    conv_path: ConvPath = eqx.field(static=True)

    stateful: ClassVar[bool] = True

    def __init__(
        self,
        in_channels: int,
        image_size: int | Sequence[int],
        out_size: int,
        *,
        channels: Sequence[int],
        kernel_sizes: int | Sequence[int] = 3,
        strides: int | Sequence[int] = 1,
        paddings: Padding | Sequence[Padding] = "SAME",
        pool_sizes: int | Sequence[int] = 1,
        pooling: str | Sequence[str] = "max",
        batch_norm: bool = True,
        bn_momentum: float = 0.9,
        hidden_sizes: Sequence[int] = (),
        dropout: float = 0.0,
        activation: str = "relu",
        use_bias: bool = True,
        dtype: Any = None,
        conv_path: str = "auto",
        key: PRNGKeyArray,
    ):
        """Build the blocks and head, checking the image survives every block.

        Args:
            in_channels: channels of the input image (1 for MNIST).
            image_size: input height and width (an int for square images).
            out_size: number of output logits (classes); ``0`` for no head:
                ``output`` is ``eqx.nn.Identity()`` and the model returns
                its features (what ``features`` returns).
            channels: output channels of each conv block; its length is the
                number of blocks.
            kernel_sizes: square kernel size, one for all blocks or one per block.
            strides: conv stride, one for all or one per block.
            paddings: ``"SAME"``, ``"VALID"`` or an int, one for all or per block.
            pool_sizes: pooling window and stride after each block (1 = none).
            pooling: ``"max"`` or ``"avg"`` (average, LeNet's subsampling), one
                for all blocks or one per block.
            batch_norm: whether each block has BatchNorm (running statistics).
            bn_momentum: BatchNorm running-statistics momentum, in ``[0, 1)``.
            hidden_sizes: widths of the dense layers before the output layer.
            dropout: dropout rate after each hidden dense layer, in ``[0, 1)``.
            activation: name of the activation (see ``zoo.models.ACTIVATION_NAMES``).
            use_bias: whether dense layers and convolutions have biases (never
                a convolution followed by BatchNorm, where a bias is redundant).
            dtype: parameter dtype (``None``: JAX's default float).
            conv_path: ``"nhwc"`` (channels-last inside), ``"xla"``
                (channels-first Equinox layers) or ``"auto"``: ``"nhwc"`` on a
                CPU backend, else ``"xla"``. Switch later with
                ``zoo.models.with_conv_path``.
            key: PRNG key for the initial parameters.

        Raises:
            ValueError: for a configuration that cannot run, e.g. strides or
                pooling that shrink the image below one pixel (the message names
                the block and the sizes).
        """
        n = len(channels)
        if n < 1:
            raise ValueError("CNN needs at least one conv block in `channels`.")
        if isinstance(image_size, int):
            height, width = image_size, image_size
        else:
            height, width = (int(s) for s in image_size)
        kernels = tuple(int(k) for k in _per_block("kernel_sizes", kernel_sizes, n))
        stride_list = tuple(int(s) for s in _per_block("strides", strides, n))
        pads: tuple[Padding, ...] = tuple(
            p.upper() if isinstance(p, str) else int(p)
            for p in _per_block("paddings", paddings, n)
        )
        pools = tuple(int(p) for p in _per_block("pool_sizes", pool_sizes, n))
        pool_kinds = tuple(str(p).lower() for p in _per_block("pooling", pooling, n))
        if any(p not in POOLINGS for p in pool_kinds):
            raise ValueError(
                f"CNN `pooling` must be 'max' or 'avg' (one or per block), "
                f"got {pooling!r}."
            )
        for name, values in [
            ("channels", tuple(channels)),
            ("kernel_sizes", kernels),
            ("strides", stride_list),
            ("pool_sizes", pools),
            ("hidden_sizes", tuple(hidden_sizes)),
        ]:
            if any(v < 1 for v in values):
                raise ValueError(f"CNN `{name}` must all be >= 1, got {values}.")
        if min(in_channels, height, width) < 1 or out_size < 0:
            raise ValueError(
                "CNN `in_channels` and `image_size` must be >= 1 and `out_size` "
                f">= 0 (0: no head), got {in_channels}, {(height, width)}, "
                f"{out_size}."
            )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"CNN `dropout` must be in [0, 1), got {dropout}.")
        if not 0.0 <= bn_momentum < 1.0:
            raise ValueError(f"CNN `bn_momentum` must be in [0, 1), got {bn_momentum}.")
        get_activation(activation)
        self.dtype = parse_dtype(dtype)
        param_dtype = None if self.dtype is None else DTYPES[self.dtype]

        keys = list(jax.random.split(key, n + len(hidden_sizes) + 1))
        blocks = []
        size = (height, width)
        cin = in_channels
        for i in range(n):
            conv_size = tuple(
                conv_output_size(s, kernels[i], stride_list[i], pads[i]) for s in size
            )
            pooled = tuple(s // pools[i] for s in conv_size)
            if min(conv_size) < 1 or min(pooled) < 1:
                raise ValueError(
                    f"CNN block {i} (kernel {kernels[i]}, stride {stride_list[i]}, "
                    f"padding {pads[i]!r}, pool {pools[i]}) turns a {size[0]}x"
                    f"{size[1]} feature map into {pooled[0]}x{pooled[1]}: the image "
                    f"{height}x{width} is too small for this stack. Use fewer "
                    "blocks, smaller strides or pools, or 'SAME' padding."
                )
            blocks.append(
                ConvBlock(
                    conv=eqx.nn.Conv2d(
                        cin,
                        channels[i],
                        kernels[i],
                        stride=stride_list[i],
                        padding=pads[i],
                        # BatchNorm subtracts the mean, so a conv bias before it
                        # would be dead weight with an exactly zero gradient.
                        use_bias=use_bias and not batch_norm,
                        dtype=param_dtype,
                        key=keys[i],
                    ),
                    norm=(
                        eqx.nn.BatchNorm(
                            channels[i],
                            axis_name=BATCH_AXIS,
                            momentum=bn_momentum,
                            mode="batch",
                            dtype=param_dtype,
                        )
                        if batch_norm
                        else None
                    ),
                    pool=POOLINGS[pool_kinds[i]](pools[i]) if pools[i] > 1 else None,
                    activation=activation,
                )
            )
            size = pooled
            cin = channels[i]
        features = cin * size[0] * size[1]
        widths = (features, *hidden_sizes)
        self.blocks = tuple(blocks)
        self.hidden = tuple(
            eqx.nn.Linear(
                widths[j],
                widths[j + 1],
                use_bias=use_bias,
                dtype=param_dtype,
                key=keys[n + j],
            )
            for j in range(len(hidden_sizes))
        )
        self.output = (
            eqx.nn.Linear(
                widths[-1], out_size, use_bias=use_bias, dtype=param_dtype, key=keys[-1]
            )
            if out_size
            else eqx.nn.Identity()
        )
        self.dropout = eqx.nn.Dropout(dropout)
        self.in_channels = in_channels
        self.image_size = (height, width)
        self.out_size = out_size
        self.channels = tuple(int(c) for c in channels)
        self.kernel_sizes = kernels
        self.strides = stride_list
        self.paddings = pads
        self.pool_sizes = pools
        self.poolings = pool_kinds
        self.batch_norm = batch_norm
        self.bn_momentum = bn_momentum
        self.hidden_sizes = tuple(int(h) for h in hidden_sizes)
        self.activation = activation
        self.use_bias = use_bias
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

        With ``out_size=0`` it returns the features instead (see ``features``).
        See [`AbstractImageClassifier`][zoo.models.AbstractImageClassifier] for the
        calling convention and errors.
        """
        stochastic = dropout_active("CNN", self.dropout, key)
        maps, state = self._run_blocks(x, state)
        h = jnp.ravel(self._channels_first(maps[-1]))
        keys = (
            jax.random.split(key, len(self.hidden))
            if stochastic and key is not None
            else [None] * len(self.hidden)
        )
        act = get_activation(self.activation)
        for layer, k in zip(self.hidden, keys, strict=True):
            h = self.dropout(act(layer(h)), key=k)
        return self.output(h), state

    @checked_model_call
    def intermediates(
        self,
        x: Float[Array, "channels height width"],
        state: eqx.nn.State,
        *,
        indices: Sequence[int] | None = None,
        key: PRNGKeyArray | None = None,
    ) -> tuple[tuple[Float[Array, "_c _h _w"], ...], eqx.nn.State]:
        """The feature map after each conv block (stage) for one image.

        Stage ``i`` is the output of ``blocks[i]`` (after its pooling), shape
        ``(channels[i], height_i, width_i)``, channels-first on either conv
        path. The last stage, flattened, is what the dense layers see. Batch
        it with [`zoo.models.intermediates`][].

        Args:
            x: one image, shape ``(in_channels, height, width)``.
            state: the BatchNorm state.
            indices: the stages to return, in this order (negative: from the
                end); ``None`` for all of them.
            key: unused (the conv blocks have no dropout); accepted for a
                call like ``__call__``'s.

        Returns:
            ``(maps, state)``: a tuple with one map per index, and the state.

        Raises:
            ValueError: an index outside ``[-len(blocks), len(blocks))``.
        """
        del key
        wanted = stage_indices(indices, len(self.blocks), "CNN")
        maps, state = self._run_blocks(x, state)
        return tuple(self._channels_first(maps[i]) for i in wanted), state

    def _run_blocks(
        self, x: Float[Array, "channels height width"], state: eqx.nn.State
    ) -> tuple[list[Array], eqx.nn.State]:
        """Every block's output, in the conv path's layout."""
        maps = []
        try:
            if self.conv_path == "xla":
                for block in self.blocks:
                    x, state = block(x, state)
                    maps.append(x)
            else:
                # Channels-last between the blocks: no transposes around each
                # convolution (XLA:CPU convolves channels-last).
                x = to_channels_last(x)
                for block in self.blocks:
                    x, state = block.channels_last(x, state)
                    maps.append(x)
        except NameError as error:
            raise NameError(
                "CNN with BatchNorm in training mode computes batch statistics, so "
                f"call it under jax.vmap(model, axis_name={BATCH_AXIS!r}, "
                "in_axes=(0, None), out_axes=(0, None)) (zoo.apply does this), or "
                "use eqx.nn.inference_mode(model) to evaluate."
            ) from error
        return maps, state

    def _channels_first(self, x: Array) -> Array:
        return x if self.conv_path == "xla" else to_channels_first(x)

    def config(self) -> dict[str, Any]:
        """The JSON constructor arguments, with ``"family": "CNN"``."""
        return {
            "family": "CNN",
            "in_channels": self.in_channels,
            "image_size": list(self.image_size),
            "out_size": self.out_size,
            "channels": list(self.channels),
            "kernel_sizes": list(self.kernel_sizes),
            "strides": list(self.strides),
            "paddings": list(self.paddings),
            "pool_sizes": list(self.pool_sizes),
            "pooling": list(self.poolings),
            "batch_norm": self.batch_norm,
            "bn_momentum": self.bn_momentum,
            "hidden_sizes": list(self.hidden_sizes),
            "dropout": self.dropout.p,
            "activation": self.activation,
            "use_bias": self.use_bias,
            "dtype": self.dtype,
        }
