"""Winograd F(2x2, 3x3): a 3x3 stride-1 convolution in 16 small matrix products.

Each 2x2 block of output pixels depends on a 4x4 tile of input. Winograd's
minimal filtering algorithm (Lavin & Gray, 2016) computes that block from a
linear transform of the tile (``B^T d B``) and of the kernel (``G g G^T``) with
16 products per channel pair instead of 36: the 16 tile positions become 16
independent ``(tiles, C) @ (C, K)`` matrix products, 2.25x fewer flops than the
direct convolution. Its gradients are matrix products of the same sizes, so
training saves as much as inference.

The convolution is a JAX primitive, ``winograd_conv``, on a batch of
channels-last maps. Its batching rule folds a ``jax.vmap`` axis into the batch,
so a model written for one example and mapped over a batch computes all
examples in the same 16 products, forward and backward; differentiation and
lowering go through the plain JAX function :func:`winograd_conv_batch`.
"""

import functools
import operator
from collections.abc import Sequence
from typing import cast

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend.core import Primitive
from jax.interpreters import ad, batching, mlir
from jaxtyping import Array, Float

Pads = tuple[tuple[int, int], tuple[int, int]]
"""``((top, bottom), (left, right))`` zero padding, each from 0 to 2."""

# Input, kernel and output transforms of F(2, 3): B^T (4x4), G (4x3), A^T (2x4).
_BT = ((1, 0, -1, 0), (0, 1, 1, 0), (0, -1, 1, 0), (0, 1, 0, -1))
_G = np.array(
    [[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], dtype=np.float32
)
_AT = ((1, 1, 1, 0), (0, 1, -1, -1))


def _combine(matrix: Sequence[Sequence[int]], parts: Sequence[Array]) -> list[Array]:
    """``matrix @ parts`` for a small integer matrix, as adds and subtracts."""
    rows = []
    for coefficients in matrix:
        total = None
        for c, part in zip(coefficients, parts, strict=True):
            if c == 0:
                continue
            term = part if c == 1 else -part
            total = term if total is None else total + term
        assert total is not None
        rows.append(total)
    return rows


def _tiles(length: int, before: int, after: int) -> tuple[int, int]:
    """Output size and number of 2-pixel tiles along one axis."""
    out = length + before + after - 2
    return out, -(-out // 2)


def _input_tiles(
    x: Float[Array, "n h w c"], pads: Pads
) -> tuple[Float[Array, "16 tiles c"], tuple[int, int, int, int]]:
    """``B^T d B`` of every 4x4 input tile, and ``(out_h, out_w, tiles_h, tiles_w)``."""
    n, height, width, channels = x.shape
    (top, bottom), (left, right) = pads
    out_h, tiles_h = _tiles(height, top, bottom)
    out_w, tiles_w = _tiles(width, left, right)
    # Pad so that every tile is whole; the extra outputs are cut off later.
    x = jnp.pad(
        x,
        (
            (0, 0),
            (top, 2 * tiles_h + 2 - height - top),
            (left, 2 * tiles_w + 2 - width - left),
            (0, 0),
        ),
    )
    # Row 2t + i of the padded map is row (t + i // 2, i % 2) of its pairs of
    # rows: every tile's 4x4 window is four plain slices, no strides.
    pairs = x.reshape(n, tiles_h + 1, 2, tiles_w + 1, 2, channels)
    rows = _combine(
        _BT, [pairs[:, i // 2 : i // 2 + tiles_h, i % 2] for i in range(4)]
    )  # 4 x (n, tiles_h, tiles_w + 1, 2, channels)
    v = jnp.stack(
        [
            jnp.stack(
                _combine(
                    _BT, [r[:, :, j // 2 : j // 2 + tiles_w, j % 2] for j in range(4)]
                )
            )
            for r in rows
        ]
    )  # (4, 4, n, tiles_h, tiles_w, channels)
    return v.reshape(16, n * tiles_h * tiles_w, channels), (
        out_h,
        out_w,
        tiles_h,
        tiles_w,
    )


def _output_tiles_transposed(
    ct: Float[Array, "n h2 w2 o"], tiles_h: int, tiles_w: int
) -> Float[Array, "16 tiles o"]:
    """``A g A^T`` of every 2x2 output block: the transpose of ``A^T m A``."""
    n, out_h, out_w, out_channels = ct.shape
    ct = jnp.pad(
        ct, ((0, 0), (0, 2 * tiles_h - out_h), (0, 2 * tiles_w - out_w), (0, 0))
    )
    blocks = ct.reshape(n, tiles_h, 2, tiles_w, 2, out_channels)
    a = list(zip(*_AT, strict=True))  # A = (A^T)^T, 4x2
    rows = _combine(a, [blocks[:, :, r] for r in range(2)])  # 4 x (n, th, tw, 2, o)
    m = jnp.stack(
        [jnp.stack(_combine(a, [r[:, :, :, s] for s in range(2)])) for r in rows]
    )
    return m.reshape(16, n * tiles_h * tiles_w, out_channels)


def _kernel_tiles(weight: Float[Array, "3 3 c o"]) -> Float[Array, "16 c o"]:
    """``G g G^T`` for every (input, output) channel pair."""
    g = jnp.asarray(_G, weight.dtype)
    u = jnp.einsum("ik,klco,jl->ijco", g, weight, g)
    return u.reshape(16, *weight.shape[2:])


def winograd_conv_batch(
    x: Float[Array, "batch height width channels"],
    weight: Float[Array, "3 3 channels out"],
    pads: Pads,
) -> Float[Array, "batch height2 width2 out"]:
    """3x3 stride-1 convolution of channels-last maps by Winograd F(2x2, 3x3).

    The same function as ``lax.conv_general_dilated`` in ``NHWC``/``HWIO``
    layout with ``padding=pads``, within float32 rounding.
    """
    n = x.shape[0]
    out_channels = weight.shape[-1]
    v, (out_h, out_w, tiles_h, tiles_w) = _input_tiles(x, pads)
    m = jnp.einsum("tpc,tco->tpo", v, _kernel_tiles(weight))
    m = m.reshape(4, 4, n, tiles_h, tiles_w, out_channels)
    out_rows = _combine(_AT, [m[i] for i in range(4)])  # 2 x (4, n, th, tw, o)
    y = jnp.stack(
        [jnp.stack(_combine(_AT, [r[j] for j in range(4)]), axis=3) for r in out_rows],
        axis=2,
    )  # (n, tiles_h, 2, tiles_w, 2, out)
    y = y.reshape(n, 2 * tiles_h, 2 * tiles_w, out_channels)
    return y[:, :out_h, :out_w]


def winograd_weight_grad(
    x: Float[Array, "batch height width channels"],
    ct: Float[Array, "batch height2 width2 out"],
    pads: Pads,
) -> Float[Array, "3 3 channels out"]:
    """The gradient of ``<ct, winograd_conv_batch(x, w, pads)>`` in ``w``."""
    v, (_, _, tiles_h, tiles_w) = _input_tiles(x, pads)
    m = _output_tiles_transposed(ct, tiles_h, tiles_w)
    u = jnp.einsum("tpc,tpo->tco", v, m).reshape(4, 4, *v.shape[2:], m.shape[2])
    g = jnp.asarray(_G, x.dtype)
    return jnp.einsum("ik,ijco,jl->klco", g, u, g)


winograd_conv_p = Primitive("winograd_conv")


def winograd_conv(
    x: Float[Array, "batch height width channels"],
    weight: Float[Array, "3 3 channels out"],
    pads: Pads,
) -> Float[Array, "batch height2 width2 out"]:
    """:func:`winograd_conv_batch` as one primitive that ``jax.vmap`` folds into.

    Under ``jax.vmap`` over ``x`` (the weight shared), the mapped axis joins
    the batch, so the products stay 16 large ones however the model is
    mapped. Differentiable in both arguments, to any order and under any
    transformation: the convolution is bilinear, its input gradient is again a
    Winograd convolution and its weight gradient is :func:`winograd_weight_grad`.

    Raises:
        ValueError: a padding outside ``0..2`` (the input gradient pads by
            ``2 - pad``) or a map with no output pixels.
    """
    pads = cast(Pads, tuple(tuple(int(p) for p in pair) for pair in pads))
    if not all(0 <= p <= 2 for pair in pads for p in pair):
        raise ValueError(
            f"winograd_conv takes paddings from 0 to 2 on each side, got {pads}; "
            "use lax.conv_general_dilated for others."
        )
    (top, bottom), (left, right) = pads
    height, width = x.shape[1:3]
    if _tiles(height, top, bottom)[0] < 1 or _tiles(width, left, right)[0] < 1:
        raise ValueError(
            f"a 3x3 convolution of a {height}x{width} map padded by {pads} "
            "has no output pixels; pad it more or give a larger map."
        )
    return winograd_conv_p.bind(x, weight, pads=pads)


def _abstract_eval(x, weight, *, pads: Pads):
    (top, bottom), (left, right) = pads
    out_h, _ = _tiles(x.shape[1], top, bottom)
    out_w, _ = _tiles(x.shape[2], left, right)
    return x.update(shape=(x.shape[0], out_h, out_w, weight.shape[-1]))


def _batch(args, dims, *, pads: Pads):
    x, weight = args
    x_dim, weight_dim = dims
    if weight_dim is not None:  # None: not mapped
        # A weight per mapped element (an ensemble of models): map the plain
        # function, whose products then carry the mapped axis as a batch axis.
        out = jax.vmap(
            functools.partial(winograd_conv_batch, pads=pads),
            in_axes=(x_dim, weight_dim),
        )(x, weight)
        return out, 0
    x = jnp.moveaxis(x, x_dim, 0)
    mapped, n = x.shape[:2]
    out = winograd_conv(x.reshape(mapped * n, *x.shape[2:]), weight, pads)
    return out.reshape(mapped, n, *out.shape[1:]), 0


def _jvp(primals, tangents, *, pads: Pads):
    x, weight = primals
    tx, tw = tangents
    terms = []
    if type(tx) is not ad.Zero:
        terms.append(winograd_conv(tx, weight, pads))
    if type(tw) is not ad.Zero:
        terms.append(winograd_conv(x, tw, pads))
    return winograd_conv(x, weight, pads), functools.reduce(operator.add, terms)


def _transpose(ct, x, weight, *, pads: Pads):
    if type(ct) is ad.Zero:
        return [None, None]
    if ad.is_undefined_primal(x):
        # The input gradient: ct convolved with the kernel turned by 180
        # degrees, its channel axes swapped, and padded by 2 - pads.
        flipped = jnp.swapaxes(weight[::-1, ::-1], 2, 3)
        turned = cast(Pads, tuple((2 - a, 2 - b) for a, b in pads))
        return [winograd_conv(ct, flipped, turned), None]
    return [None, winograd_weight_grad(x, ct, pads)]


winograd_conv_p.def_impl(winograd_conv_batch)
winograd_conv_p.def_abstract_eval(_abstract_eval)
batching.primitive_batchers[winograd_conv_p] = _batch
ad.primitive_jvps[winograd_conv_p] = _jvp
ad.primitive_transposes[winograd_conv_p] = _transpose
mlir.register_lowering(
    winograd_conv_p, mlir.lower_fun(winograd_conv_batch, multiple_results=False)
)
