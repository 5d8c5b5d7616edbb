"""Vision Transformers (Dosovitskiy et al. 2021), laid out as timm's ``vit_*``."""

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from .._checks import checked_model_call
from ._abstract import (
    DTYPES,
    AbstractImageClassifier,
    dropout_active,
    get_activation,
    parse_dtype,
    stage_indices,
)
from ._vit_stem import ConvStem

LAYER_NORM_EPS = 1e-6
"""The LayerNorm epsilon of timm's ``vit_*`` models."""
POS_EMBED_STD = 0.02
"""Standard deviation of the initial position embedding (as timm)."""
POOLS = ("token", "avg")
"""How a [`ViT`][zoo.ViT] pools its tokens for the head, as timm's ``global_pool``."""
STEMS = ("patch", "conv")
"""How a [`ViT`][zoo.ViT] embeds the image: one patch convolution (timm's) or a
[`ConvStem`][zoo.models.ConvStem]."""
_lecun_normal = jax.nn.initializers.lecun_normal(in_axis=-1, out_axis=-2)


def _per_token(layer: eqx.nn.Linear, x: Array) -> Array:
    """Apply a linear layer to every token (the rows of ``x``) in one product."""
    y = x @ layer.weight.T
    return y if layer.bias is None else y + layer.bias[None]


class SelfAttention(eqx.Module):
    """Multi-head self-attention: one ``qkv`` linear layer and a projection.

    ``qkv`` maps each token to its queries, keys and values, in that order, each
    ``num_heads`` heads of ``dim // num_heads`` values (timm's layout); the
    heads' outputs are concatenated and projected by ``proj``.
    """

    qkv: eqx.nn.Linear
    proj: eqx.nn.Linear
    num_heads: int = eqx.field(static=True)

    def __call__(self, x: Float[Array, "tokens dim"]) -> Float[Array, "tokens dim"]:
        """Attend every token to every token.

        The heads are computed head-first, ``(heads, tokens, head_dim)``,
        straight from the weights (the same function as splitting ``qkv``'s
        output per token, without moving it around in memory).
        """
        dim = x.shape[1]
        heads, width = self.num_heads, dim // self.num_heads
        weight = self.qkv.weight.reshape(3, heads, width, dim)
        qkv = jnp.einsum("td,shed->shte", x, weight)
        if self.qkv.bias is not None:
            qkv = qkv + self.qkv.bias.reshape(3, heads, 1, width)
        q, k, v = qkv[0] * (1.0 / math.sqrt(width)), qkv[1], qkv[2]
        weights = jax.nn.softmax(jnp.einsum("hqe,hke->hqk", q, k), axis=-1)
        out = jnp.einsum("hqk,hke->hqe", weights, v)
        proj = self.proj.weight.reshape(dim, heads, width)
        y = jnp.einsum("hqe,ohe->qo", out, proj)
        return y if self.proj.bias is None else y + self.proj.bias[None]


class TransformerBlock(eqx.Module):
    """A pre-norm transformer block: ``x + attn(norm1(x))``, then
    ``x + fc2(act(fc1(norm2(x))))``, with dropout after the attention
    projection, the activation and ``fc2``. Built by [`ViT`][zoo.ViT]."""

    norm1: eqx.nn.LayerNorm
    attn: SelfAttention
    norm2: eqx.nn.LayerNorm
    fc1: eqx.nn.Linear
    fc2: eqx.nn.Linear
    dropout: eqx.nn.Dropout
    activation: str = eqx.field(static=True)

    def __call__(
        self, x: Float[Array, "tokens dim"], *, key: PRNGKeyArray | None = None
    ) -> Float[Array, "tokens dim"]:
        """The block on one sequence of tokens; ``key`` only for active dropout."""
        keys = [None] * 3 if key is None else list(jax.random.split(key, 3))
        x = x + self.dropout(self.attn(jax.vmap(self.norm1)(x)), key=keys[0])
        h = get_activation(self.activation)(
            _per_token(self.fc1, jax.vmap(self.norm2)(x))
        )
        h = _per_token(self.fc2, self.dropout(h, key=keys[1]))
        return x + self.dropout(h, key=keys[2])


def _linear(n_in: int, n_out: int, dtype: Any, key: PRNGKeyArray) -> eqx.nn.Linear:
    """A linear layer with LeCun-normal weights (a normal truncated at two
    standard deviations, of variance ``1 / n_in``) and zero bias.

    timm draws ViT weights with a standard deviation of 0.02 whatever the
    width, which at small widths trains far slower from scratch.
    """
    layer = eqx.nn.Linear(n_in, n_out, dtype=dtype, key=key)
    weight = _lecun_normal(key, layer.weight.shape, layer.weight.dtype)
    assert layer.bias is not None
    return eqx.tree_at(
        lambda m: (m.weight, m.bias), layer, (weight, jnp.zeros_like(layer.bias))
    )


def _block(
    dim: int,
    num_heads: int,
    hidden: int,
    dropout: float,
    activation: str,
    dtype: Any,
    key: PRNGKeyArray,
) -> TransformerBlock:
    kqkv, kproj, kfc1, kfc2 = jax.random.split(key, 4)
    return TransformerBlock(
        norm1=eqx.nn.LayerNorm(dim, eps=LAYER_NORM_EPS, dtype=dtype),
        attn=SelfAttention(
            _linear(dim, 3 * dim, dtype, kqkv),
            _linear(dim, dim, dtype, kproj),
            num_heads,
        ),
        norm2=eqx.nn.LayerNorm(dim, eps=LAYER_NORM_EPS, dtype=dtype),
        fc1=_linear(dim, hidden, dtype, kfc1),
        fc2=_linear(hidden, dim, dtype, kfc2),
        dropout=eqx.nn.Dropout(dropout),
        activation=activation,
    )


class ViT(AbstractImageClassifier):
    """A Vision Transformer on ONE channels-first image, as timm's ``vit_*``.

    The image is cut into ``patch_size`` x ``patch_size`` patches, each
    embedded linearly by ``patch_embed`` (a convolution whose kernel and
    stride are the patch); a learned class token goes first, a learned
    position embedding is added to all ``1 + patches`` tokens, then ``depth``
    pre-norm [`TransformerBlock`][zoo.models.TransformerBlock]s (multi-head
    self-attention and an MLP of ``mlp_ratio * dim`` units, each with a
    residual), a final LayerNorm, and the class token's ``dim`` values go to
    the linear ``output`` layer. With ``pool="avg"`` there is no class token:
    the mean of the patch tokens goes through the final LayerNorm to the head
    (timm's ``global_pool="avg", class_token=False`` with its ``fc_norm``).
    With ``stem="conv"`` the patch embedding is a
    [`ConvStem`][zoo.models.ConvStem] of strided 3x3 convolutions, which gives
    as many tokens but lets neighbouring patches overlap (no timm
    counterpart).
    LayerNorms use ``eps=1e-6``; the MLP's activation is by default the exact
    (erf) GELU. ``out_size=0`` leaves the head out: the call returns the
    ``dim`` pooled features.

    There is no BatchNorm: the state is empty and passed through unchanged,
    so the model is called like every image classifier of zoo,
    ``model(x, state) -> (logits, state)`` (see
    [`AbstractImageClassifier`][zoo.models.AbstractImageClassifier]).

    Example:
        >>> import equinox as eqx, jax, jax.numpy as jnp, zoo
        >>> model, state = eqx.nn.make_with_state(zoo.ViT)(
        ...     1, 28, 10, patch_size=7, dim=32, depth=2, num_heads=2,
        ...     key=jax.random.key(0))
        >>> logits, state = model(jnp.zeros((1, 28, 28)), state)
        >>> logits.shape
        (10,)
    """

    patch_embed: eqx.nn.Conv2d | ConvStem
    cls_token: Float[Array, " dim"] | None
    pos_embed: Float[Array, "tokens dim"]
    blocks: tuple[TransformerBlock, ...]
    norm: eqx.nn.LayerNorm
    dropout: eqx.nn.Dropout
    output: eqx.nn.Linear | eqx.nn.Identity
    in_channels: int = eqx.field(static=True)
    image_size: tuple[int, int] = eqx.field(static=True)
    out_size: int = eqx.field(static=True)
    patch_size: int = eqx.field(static=True)
    dim: int = eqx.field(static=True)
    depth: int = eqx.field(static=True)
    num_heads: int = eqx.field(static=True)
    mlp_ratio: float = eqx.field(static=True)
    activation: str = eqx.field(static=True)
    pool: str = eqx.field(static=True)
    stem: str = eqx.field(static=True)
    dtype: str | None = eqx.field(static=True)

    stateful: ClassVar[bool] = True

    def __init__(
        self,
        in_channels: int,
        image_size: int | Sequence[int],
        out_size: int,
        *,
        patch_size: int = 16,
        dim: int = 192,
        depth: int = 12,
        num_heads: int = 3,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        activation: str = "gelu_exact",
        pool: str = "token",
        stem: str = "patch",
        dtype: Any = None,
        key: PRNGKeyArray,
    ):
        """Build the patch embedding, the blocks and the head.

        Args:
            in_channels: channels of the input image (1 for MNIST, 3 for RGB).
            image_size: input height and width (an int for square images), each
                a multiple of ``patch_size``.
            out_size: number of output logits (classes); 0 for no head.
            patch_size: side of the square patches, in pixels.
            dim: width of every token.
            depth: number of transformer blocks.
            num_heads: attention heads; must divide ``dim``.
            mlp_ratio: hidden units of each block's MLP per token value
                (``int(mlp_ratio * dim)`` units).
            dropout: dropout rate after the position embedding and in every
                block (see [`TransformerBlock`][zoo.models.TransformerBlock]),
                in ``[0, 1)``.
            activation: the MLP's activation (see ``zoo.models.ACTIVATION_NAMES``).
            pool: what the head sees: ``"token"``, a class token's final
                values (timm's default); ``"avg"``, no class token and the
                mean of the patch tokens.
            stem: how patches become tokens: ``"patch"``, one convolution
                whose kernel and stride are the patch (timm's); ``"conv"``,
                a [`ConvStem`][zoo.models.ConvStem] of ``log2(patch_size)``
                strided 3x3 convolutions (``patch_size`` a power of two).
            dtype: parameter dtype (``None``: JAX's default float).
            key: PRNG key for the initial parameters: linear weights
                LeCun-normal (truncated at two standard deviations, variance
                ``1 / fan_in``), the position embedding from a normal of
                standard deviation 0.02 truncated at two, biases and the
                class token zero, the patch embedding as Equinox's
                convolutions.

        Raises:
            ValueError: for a configuration that cannot run (sizes below 1,
                an image that is not a whole number of patches, heads that do
                not divide ``dim``, rates out of range); the message names
                the argument.
        """
        if isinstance(image_size, int):
            height, width = image_size, image_size
        else:
            height, width = (int(s) for s in image_size)
        sizes = {
            "in_channels": in_channels,
            "height": height,
            "width": width,
            "patch_size": patch_size,
            "dim": dim,
            "depth": depth,
            "num_heads": num_heads,
        }
        small = {name: value for name, value in sizes.items() if value < 1}
        if small or out_size < 0:
            raise ValueError(
                f"ViT sizes must be >= 1 (out_size >= 0), got {small or out_size}."
            )
        if height % patch_size or width % patch_size:
            raise ValueError(
                f"ViT image_size {(height, width)} is not a whole number of "
                f"{patch_size}x{patch_size} patches: resize or crop the images, or "
                "choose a patch_size that divides both sides."
            )
        if dim % num_heads:
            raise ValueError(
                f"ViT num_heads={num_heads} does not divide dim={dim}: each head "
                "takes dim // num_heads values."
            )
        hidden = int(mlp_ratio * dim)
        if hidden < 1:
            raise ValueError(f"ViT mlp_ratio={mlp_ratio} leaves no MLP units.")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"ViT `dropout` must be in [0, 1), got {dropout}.")
        get_activation(activation)
        if pool not in POOLS:
            raise ValueError(f"ViT `pool` must be one of {POOLS}, got {pool!r}.")
        if stem not in STEMS:
            raise ValueError(f"ViT `stem` must be one of {STEMS}, got {stem!r}.")
        self.dtype = parse_dtype(dtype)
        param_dtype = None if self.dtype is None else DTYPES[self.dtype]

        kpatch, kpos, kblocks, khead = jax.random.split(key, 4)
        if stem == "conv":
            self.patch_embed = ConvStem(
                in_channels,
                dim,
                patch_size,
                activation=activation,
                dtype=param_dtype,
                key=kpatch,
            )
            float_dtype = self.patch_embed.convs[0].weight.dtype
        else:
            self.patch_embed = eqx.nn.Conv2d(
                in_channels,
                dim,
                patch_size,
                stride=patch_size,
                dtype=param_dtype,
                key=kpatch,
            )
            float_dtype = self.patch_embed.weight.dtype
        class_tokens = 1 if pool == "token" else 0
        tokens = class_tokens + (height // patch_size) * (width // patch_size)
        self.cls_token = jnp.zeros((dim,), float_dtype) if class_tokens else None
        self.pos_embed = POS_EMBED_STD * jax.random.truncated_normal(
            kpos, -2.0, 2.0, (tokens, dim), float_dtype
        )
        self.blocks = tuple(
            _block(dim, num_heads, hidden, dropout, activation, param_dtype, k)
            for k in jax.random.split(kblocks, depth)
        )
        self.norm = eqx.nn.LayerNorm(dim, eps=LAYER_NORM_EPS, dtype=param_dtype)
        self.dropout = eqx.nn.Dropout(dropout)
        self.output = (
            _linear(dim, out_size, param_dtype, khead)
            if out_size
            else eqx.nn.Identity()
        )
        self.in_channels = in_channels
        self.image_size = (height, width)
        self.out_size = out_size
        self.patch_size = patch_size
        self.dim = dim
        self.depth = depth
        self.num_heads = num_heads
        self.mlp_ratio = mlp_ratio
        self.activation = activation
        self.pool = pool
        self.stem = stem

    @property
    def num_tokens(self) -> int:
        """Tokens of a sequence: the class token (``pool="token"``) and one per
        patch."""
        height, width = self.image_size
        patches = (height // self.patch_size) * (width // self.patch_size)
        return patches + (self.cls_token is not None)

    def embed(
        self, x: Float[Array, "channels height width"]
    ) -> Float[Array, "tokens dim"]:
        """The class token (if any) and the patch embeddings, plus the position
        embedding.

        The convolution ``patch_embed`` over non-overlapping patches is
        computed as the equivalent matrix product of each flattened patch; a
        [`ConvStem`][zoo.models.ConvStem] is called as it is.
        """
        if isinstance(self.patch_embed, ConvStem):
            embedded = self.patch_embed(x)
        else:
            p = self.patch_size
            c, h, w = x.shape
            patches = x.reshape(c, h // p, p, w // p, p)
            weight = self.patch_embed.weight
            embedded = jnp.einsum("cipjq,dcpq->ijd", patches, weight)
            embedded = embedded.reshape(-1, self.dim)
            bias = self.patch_embed.bias
            if bias is not None:
                embedded = embedded + bias.reshape(1, self.dim)
        if self.cls_token is not None:
            embedded = jnp.concatenate([self.cls_token[None], embedded])
        return embedded + self.pos_embed

    def _tokens(
        self, x: Array, key: PRNGKeyArray | None, stop: int
    ) -> tuple[Array, list[Array]]:
        """Tokens after blocks ``0 .. stop - 1``, and after each of them."""
        stochastic = dropout_active("ViT", self.dropout, key)
        keys = (
            list(jax.random.split(key, 1 + self.depth))
            if stochastic and key is not None
            else [None] * (1 + self.depth)
        )
        x = self.dropout(self.embed(x), key=keys[0])
        after = []
        for block, k in zip(self.blocks[:stop], keys[1:], strict=False):
            x = block(x, key=k)
            after.append(x)
        return x, after

    @checked_model_call
    def __call__(
        self,
        x: Float[Array, "channels height width"],
        state: eqx.nn.State,
        *,
        key: PRNGKeyArray | None = None,
    ) -> tuple[Float[Array, " out_size"], eqx.nn.State]:
        """Logits ``(out_size,)`` for one image (with ``out_size=0``: the
        ``(dim,)`` features), and the state, unchanged.

        See [`AbstractImageClassifier`][zoo.models.AbstractImageClassifier] for the
        calling convention and errors.
        """
        tokens, _ = self._tokens(x, key, self.depth)
        return self.output(self.pool_tokens(tokens)), state

    def pool_tokens(self, tokens: Float[Array, "tokens dim"]) -> Float[Array, " dim"]:
        """What the head sees: the final LayerNorm of the class token
        (``pool="token"``) or of the tokens' mean (``pool="avg"``)."""
        return self.norm(tokens[0] if self.pool == "token" else tokens.mean(0))

    @checked_model_call
    def intermediates(
        self,
        x: Float[Array, "channels height width"],
        state: eqx.nn.State,
        *,
        indices: Sequence[int] | None = None,
        key: PRNGKeyArray | None = None,
    ) -> tuple[tuple[Float[Array, "tokens dim"], ...], eqx.nn.State]:
        """The tokens after the chosen blocks, before the final LayerNorm.

        Args:
            x: one image, shape ``(in_channels, height, width)``.
            state: the (empty) state, returned unchanged.
            indices: 0-based block numbers, negative ones counting from the
                end; ``None``: every block.
            key: PRNG key for dropout; required only when dropout is active.

        Returns:
            ``(tokens, state)``: one ``(num_tokens, dim)`` array per index, in
            the order given, the class token (if any) in row 0.

        Raises:
            ValueError: an index outside ``-depth .. depth - 1``, or not an int.
        """
        wanted = stage_indices(indices, self.depth, "ViT")
        stop = 1 + max(wanted, default=-1)
        _, after = self._tokens(x, key, stop)
        return tuple(after[i] for i in wanted), state

    def config(self) -> dict[str, Any]:
        """The JSON constructor arguments, with ``"family": "ViT"``.

        ``pool`` and ``stem`` are there only when they are not the defaults
        (``"token"``, ``"patch"``): a config written before the arguments
        existed (a shipped card, the metadata of a weight file, a checkpoint)
        is the same config, byte for byte.
        """
        pooling = {} if self.pool == "token" else {"pool": self.pool}
        stem = {} if self.stem == "patch" else {"stem": self.stem}
        return {
            "family": "ViT",
            "in_channels": self.in_channels,
            "image_size": list(self.image_size),
            "out_size": self.out_size,
            "patch_size": self.patch_size,
            "dim": self.dim,
            "depth": self.depth,
            "num_heads": self.num_heads,
            "mlp_ratio": self.mlp_ratio,
            "dropout": self.dropout.p,
            "activation": self.activation,
            **pooling,
            **stem,
            "dtype": self.dtype,
        }
