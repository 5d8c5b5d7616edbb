"""``zoo.export``: a model's inference function as a file other programs run.

Two formats, each one file written atomically (nothing half-written):

* ``"jax"``: a serialized ``jax.export.Exported`` (StableHLO with the
  parameters inside), loaded by any JAX program without zoo:
  ``jax.export.deserialize(data).call(x)``;
* ``"onnx"``: an ONNX model converted by ``jax2onnx`` (the optional extra
  ``typed-zoo[onnx]``), for ONNX Runtime and other ONNX tools.

Either way the function is the model in inference mode (dropout off, BatchNorm
from its running statistics, the state closed over): a float32 batch
``(batch, *model.input_shape)`` in, the logits ``(batch, out_size)`` out (the
features, for a model built with ``out_size=0``). The batch dimension is
symbolic unless ``batch_size`` fixes it.
"""

import contextlib
import logging
import os
import pathlib
import warnings
from collections.abc import Callable, Iterator

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from ._files import atomic_write
from .models._abstract import AbstractModel
from .models._apply import apply
from .models._model_args import (
    check_finite_weights,
    check_zoo_model,
    checked_state,
    file_target,
)

EXPORT_FORMATS: tuple[str, ...] = ("jax", "onnx")
"""The formats ``zoo.export`` writes."""
ONNX_INSTALL = "pip install 'typed-zoo[onnx]'"


def export(
    model: AbstractModel,
    state: eqx.nn.State | None,
    path: str | os.PathLike[str],
    *,
    format: str = "jax",
    batch_size: int | None = None,
) -> pathlib.Path:
    """Write ``model``'s inference function to ``path``, to run without zoo.

    The function takes a float32 batch ``(batch, *model.input_shape)`` and
    returns the logits ``(batch, out_size)`` of ``model`` in inference mode,
    ``state`` (its BatchNorm statistics) and the parameters inside the file.
    ``batch`` is symbolic (any batch size runs) unless ``batch_size`` fixes
    it. The file is written under a temporary name and renamed: it is either
    complete or absent.

    A ``"jax"`` file runs with JAX alone (no zoo, no Equinox), on the backend
    it was written on (the CPU here): ``jax.export.deserialize`` and ``call``.
    An ``"onnx"`` file names its input ``x`` and its output ``logits``; run
    it with ONNX Runtime: ``session.run(["logits"], {"x": x})``. See the
    [Export](../export.md) page.

    Example:
        >>> import jax, pathlib, tempfile, zoo
        >>> model, state = zoo.create_model("lenet5", key=jax.random.key(0))
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "lenet5.jax"
        >>> path = zoo.export(model, state, path)
        >>> exported = jax.export.deserialize(bytearray(path.read_bytes()))
        >>> exported.in_avals, exported.out_avals
        ((ShapedArray(float32[b,1,28,28]),), (ShapedArray(float32[b,10]),))

    Args:
        model: a zoo model (its ``input_shape`` gives the input).
        state: its state (``None`` or empty for a stateless model).
        path: the file to write; its folder must exist.
        format: ``"jax"`` (``jax.export``) or ``"onnx"`` (needs the extra
            ``onnx``: ``pip install 'typed-zoo[onnx]'``).
        batch_size: a fixed batch size, or ``None`` for a symbolic one.

    Returns:
        ``path`` as a ``pathlib.Path``.

    Raises:
        ValueError: an unknown format, a ``batch_size`` below 1, a state that
            is not the model's, weights or state holding NaN or infinity
            (nothing is written), or a model ``jax2onnx`` cannot convert with
            a symbolic batch (the message says to pass ``batch_size``).
        TypeError: ``model`` is not a zoo model.
        FileNotFoundError: the folder of ``path`` does not exist.
        IsADirectoryError: ``path`` is a folder.
        ImportError: ``format="onnx"`` without ``jax2onnx`` installed.
    """
    if format not in EXPORT_FORMATS:
        raise ValueError(
            f"Unknown export format {format!r}: choose one of "
            f"{', '.join(map(repr, EXPORT_FORMATS))}."
        )
    if batch_size is not None and (
        isinstance(batch_size, bool)
        or not isinstance(batch_size, int)
        or batch_size < 1
    ):
        raise ValueError(
            f"batch_size must be an int >= 1, or None for a symbolic batch; got "
            f"{batch_size!r}."
        )
    model = check_zoo_model(model, "zoo.export")
    target = file_target(path)
    state = checked_state(model, state)
    check_finite_weights(model, state, "zoo.export")
    fn = _inference_function(model, state)
    if format == "jax":
        data = _to_jax(fn, model, batch_size)
    else:
        data = _to_onnx(fn, model, batch_size)
    return atomic_write(target, data)


def _inference_function(
    model: AbstractModel, state: eqx.nn.State | None
) -> Callable[[Array], Array]:
    """The batch -> logits function, in inference mode, ``state`` closed over."""
    inference = eqx.nn.inference_mode(model)

    def logits(x: Float[Array, "batch ..."]) -> Array:
        return apply(inference, x, state)[0]

    return logits


def _to_jax(
    fn: Callable[[Array], Array], model: AbstractModel, batch_size: int | None
) -> bytes:
    if batch_size is None:
        shape = jax.export.symbolic_shape("b, ...", like=(None, *model.input_shape))
    else:
        shape = (batch_size, *model.input_shape)
    spec = jax.ShapeDtypeStruct(shape, jnp.float32)
    exported = jax.export.export(jax.jit(fn))(spec)
    return bytes(exported.serialize())


def _to_onnx(
    fn: Callable[[Array], Array], model: AbstractModel, batch_size: int | None
) -> bytes:
    try:
        import jax2onnx
    except ImportError as error:
        raise ImportError(
            "format='onnx' converts through jax2onnx, which is not installed: "
            f"{ONNX_INSTALL}"
        ) from error
    batch: int | str = "batch" if batch_size is None else batch_size
    try:
        with _quiet_conversion():
            proto = jax2onnx.to_onnx(
                fn,
                [(batch, *model.input_shape)],
                model_name=type(model).__name__,
                input_names=["x"],
                output_names=["logits"],
            )
    except jax.errors.InconclusiveDimensionOperation as error:
        raise ValueError(
            f"jax2onnx cannot convert this {type(model).__name__} with a "
            "symbolic batch (an operation of the model needs its batch size "
            "known): pass a fixed batch_size=N."
        ) from error
    return proto.SerializeToString()


@contextlib.contextmanager
def _quiet_conversion() -> Iterator[None]:
    """Silence what jax2onnx reports that is not for zoo's users: its IR's
    logged warnings about unnamed shape values, and JAX's warning when it asks
    for float64 with x64 off. Both are restored after."""
    logger = logging.getLogger("onnx_ir")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings(
                "ignore",
                message="Explicitly requested dtype float64",
                category=UserWarning,
            )
            yield
    finally:
        logger.setLevel(level)
