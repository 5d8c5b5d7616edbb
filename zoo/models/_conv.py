"""How convolutional models compute: the conv path, a static field of the model.

zoo's CNNs keep Equinox's layers (``eqx.nn.Conv2d``, ``eqx.nn.BatchNorm``), so
parameters, state and checkpoints are the same on either path:

* ``"xla"``: the layers as Equinox writes them, channels-first. The default off
  the CPU.
* ``"nhwc"``: channels-last inside the network (XLA:CPU convolves
  channels-last, so this saves a transpose around every convolution), with
  one-pass BatchNorm statistics and a strided convolution's input gradient by
  phases (``_strided_conv``). The default on the CPU.

A model's path is fixed when it is built (``conv_path="auto"`` picks by JAX's
default backend) and changed only by :func:`with_conv_path`, which returns a new
model, as ``eqx.nn.inference_mode`` does: a compiled program never disagrees
with the model it was traced from.
"""

import dataclasses
from typing import Any, Literal, TypeVar, cast

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import lax
from jaxtyping import Array, Float

from ._strided_conv import strided_conv

ConvPath = Literal["xla", "nhwc"]
"""A concrete conv path."""
CONV_PATHS: tuple[str, ...] = ("auto", "xla", "nhwc")
_T = TypeVar("_T")


def resolve_conv_path(path: str, backend: str | None = None) -> ConvPath:
    """``path`` made concrete: ``"auto"`` is ``"nhwc"`` on the CPU, else ``"xla"``.

    Raises:
        ValueError: a path other than ``"auto"``, ``"xla"`` or ``"nhwc"``.
    """
    value = str(path).strip().lower()
    if value not in CONV_PATHS:
        raise ValueError(
            f"conv_path must be one of {', '.join(map(repr, CONV_PATHS))}, "
            f"got {path!r}."
        )
    if value == "auto":
        backend = jax.default_backend() if backend is None else backend
        return "nhwc" if backend == "cpu" else "xla"
    return cast(ConvPath, value)


def _has_conv_path(node: Any) -> bool:
    return isinstance(node, eqx.Module) and any(
        f.name == "conv_path" for f in dataclasses.fields(node)
    )


def with_conv_path(tree: _T, path: str) -> _T:
    """``tree`` with every zoo model in it switched to conv ``path``.

    The same parameters and state, computing the same function; only the
    layout inside the network changes. Like ``eqx.nn.inference_mode``, it
    returns a new tree and changes nothing in place.

    Example:
        >>> import jax, zoo
        >>> model, state = zoo.create_model("cnn", key=jax.random.key(0))
        >>> zoo.models.with_conv_path(model, "xla").conv_path
        'xla'

    Raises:
        ValueError: an unknown path.
    """
    concrete = resolve_conv_path(path)

    def switch(node: Any) -> Any:
        if not _has_conv_path(node):
            return node
        # A field-for-field copy, as Equinox rebuilds a module when unflattening.
        new = object.__new__(type(node))
        for field in dataclasses.fields(node):
            object.__setattr__(new, field.name, getattr(node, field.name))
        object.__setattr__(new, "conv_path", concrete)
        return new

    return jax.tree.map(switch, tree, is_leaf=_has_conv_path)


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


def conv_channels_last(
    conv: eqx.nn.Conv2d, x: Float[Array, "height width channels"]
) -> Float[Array, "height2 width2 channels2"]:
    """``conv`` applied to ONE channels-last map ``(H, W, C)`` -> ``(H', W', C')``.

    The same function as ``conv`` on the channels-first map, in ``NHWC``/``HWIO``
    layout. Grouped convolutions and non-zero padding modes go through ``conv``
    itself, transposed on either side.
    """
    if not _plain(conv):
        return to_channels_last(conv(to_channels_first(x)))
    pads = _pads(conv, (x.shape[0], x.shape[1]))
    stride = cast(tuple[int, int], tuple(conv.stride))
    dilation = cast(tuple[int, int], tuple(conv.dilation))
    if max(stride) > 1 and dilation == (1, 1):
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


def at_least_float32(dtype: Any) -> Any:
    """``dtype`` if it has 32 bits or more, else ``float32`` (for bfloat16)."""
    return dtype if jnp.finfo(dtype).bits >= 32 else jnp.dtype(jnp.float32)


def batch_norm_channels_last(
    norm: eqx.nn.BatchNorm,
    x: Float[Array, "height width channels"],
    state: eqx.nn.State,
) -> tuple[Float[Array, "height width channels"], eqx.nn.State]:
    """``norm`` (``mode="batch"``) on ONE channels-last map, and the new state.

    The same function and state update as ``norm`` on the channels-first map:
    the batch mean ``m`` per channel (over the named vmap axis), then the
    variance as the mean of ``(x - m)**2`` (two passes, as ``norm`` does: the
    one-pass ``E[x**2] - m**2`` loses the variance where the mean dwarfs the
    spread), then ``x * a + c`` with per-channel ``a = weight / sqrt(var +
    eps)`` and ``c = bias - m * a``, all in at least float32 (a bfloat16 map
    is returned in bfloat16). Other modes go through ``norm`` itself.

    Raises:
        NameError: in training mode outside a vmap with ``norm.axis_name``.
    """
    if norm.mode != "batch" or norm.batch_counter is None:
        y, state = batch_norm_channels_first(norm, to_channels_first(x), state)
        return to_channels_last(y), state
    assert norm.batch_state_index is not None
    out_dtype, x = x.dtype, x.astype(at_least_float32(x.dtype))
    counter = state.get(norm.batch_counter)
    hidden_mean, hidden_var = state.get(norm.batch_state_index)
    # Python floats meet the int32 counter as eqx.nn.BatchNorm writes it.
    with jax.numpy_dtype_promotion("standard"):
        if norm.inference:
            scale = jnp.where(counter == 0, 1, 1 - norm.momentum**counter)
            mean, var = hidden_mean / scale, hidden_var / scale
        else:
            mean = lax.pmean(jnp.mean(x, axis=(0, 1)), norm.axis_name)
            centred = x - mean.reshape(1, 1, -1)
            var = lax.pmean(jnp.mean(centred * centred, axis=(0, 1)), norm.axis_name)
            var = jnp.maximum(var, 0.0)
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
        return y.astype(out_dtype), state


def batch_norm_channels_first(
    norm: eqx.nn.BatchNorm,
    x: Float[Array, "channels height width"],
    state: eqx.nn.State,
) -> tuple[Float[Array, "channels height width"], eqx.nn.State]:
    """``norm`` on ONE channels-first map, in at least float32 (statistics and
    state too, under a bfloat16 forward), returned in ``x``'s dtype."""
    # eqx.nn.BatchNorm(mode="batch") raises a Python float to an int32 counter
    # in inference mode, which strict dtype promotion refuses.
    with jax.numpy_dtype_promotion("standard"):
        y, state = norm(x.astype(at_least_float32(x.dtype)), state)
    return y.astype(x.dtype), state
