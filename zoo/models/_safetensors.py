"""A model's parameters and state as a safetensors file, for interchange.

Each array is stored under the readable name of where it lives in the model,
from its Equinox key path (``jax.tree_util.keystr`` without the leading dot)::

    blocks[0].conv.weight                        a parameter
    output.bias
    state:blocks[0].norm.batch_state_index[0]    a state entry (running mean)
    state:blocks[0].norm.batch_counter

State entries are named after the ``eqx.nn.StateIndex`` in the model that owns
them, prefixed by ``state:``. The model's ``config()`` is stored as JSON in the
file's metadata (its only entry, so the same model always gives the same
bytes), and the file alone rebuilds the model (``zoo.models.build_model``).
Arrays keep their dtype (``float32`` for every preset; BatchNorm's counter is
``int32``); loading gives back bitwise the arrays that were saved.
"""

import json
import os
import pathlib
import struct
from collections.abc import Iterator, Mapping
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from safetensors.numpy import load as load_bytes, save as save_bytes

from .._files import atomic_write, user_path
from ._abstract import AbstractModel
from ._model_args import (
    abstract_model,
    check_finite_weights,
    check_zoo_model,
    checked_state,
    file_target,
)

STATE_PREFIX = "state:"
"""Prefix of the names of state entries (BatchNorm statistics) in a file."""


def is_array_like(x: Any) -> bool:
    """An array, or the shape and dtype of one (of a model built abstractly)."""
    return eqx.is_array(x) or isinstance(x, jax.ShapeDtypeStruct)


def _name(path: tuple[Any, ...]) -> str:
    return jax.tree_util.keystr(path).removeprefix(".")


def _is_index(x: Any) -> bool:
    return isinstance(x, eqx.nn.StateIndex)


def _state_indices(model: eqx.Module) -> Iterator[tuple[str, eqx.nn.StateIndex]]:
    leaves = jax.tree_util.tree_flatten_with_path(model, is_leaf=_is_index)[0]
    for path, leaf in leaves:
        if _is_index(leaf):
            yield _name(path), leaf


def named_arrays(model: AbstractModel, state: eqx.nn.State) -> dict[str, jax.Array]:
    """Every array of ``model`` and ``state`` by its name in a safetensors file.

    Parameters come first, in the model's pytree order, then state entries.

    Args:
        model: any zoo model.
        state: its state (empty for stateless models).

    Returns:
        ``{name: array}``, e.g. ``{"layers[0].weight": (512, 784) array, ...}``.
    """
    params = eqx.filter(model, is_array_like)
    named: dict[str, jax.Array] = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        named[_name(path)] = leaf
    for index_name, index in _state_indices(model):
        value = state.get(index)
        for path, leaf in jax.tree_util.tree_flatten_with_path(value)[0]:
            named[STATE_PREFIX + index_name + jax.tree_util.keystr(path)] = leaf
    return named


def save_safetensors(
    path: str | os.PathLike[str], model: AbstractModel, state: eqx.nn.State | None
) -> pathlib.Path:
    """Write ``model``'s parameters and ``state`` to a safetensors file, atomically.

    Example:
        >>> import jax, tempfile, zoo
        >>> model, state = zoo.create_model("mlp", key=jax.random.key(0))
        >>> path = tempfile.mkdtemp() + "/mlp.safetensors"
        >>> _ = zoo.save_safetensors(path, model, state)
        >>> again, _ = zoo.load_safetensors(path)
        >>> bool((again.layers[0].weight == model.layers[0].weight).all())
        True

    Args:
        path: the file to write (its folder must exist); an existing file is
            replaced only once the new one is complete.
        model: any zoo model.
        state: its state (empty, or ``None``, for stateless models).

    Returns:
        ``path`` as a ``pathlib.Path``.

    Raises:
        TypeError: ``model`` is not a zoo model.
        ValueError: ``state`` is not the model's, or either holds NaN or
            infinity (nothing is written).
        FileNotFoundError: the folder of ``path`` does not exist.
        IsADirectoryError: ``path`` is a folder.
    """
    model = check_zoo_model(model, "save_safetensors")
    target = file_target(path)
    state = checked_state(model, state) or eqx.nn.State(model)
    check_finite_weights(model, state, "save_safetensors")
    tensors = {
        name: np.asarray(jax.device_get(array))
        for name, array in named_arrays(model, state).items()
    }
    # One metadata entry: safetensors writes several in no fixed order, and
    # the same model must always give the same bytes (and SHA-256).
    metadata = {"config": json.dumps(model.config(), sort_keys=True)}
    return atomic_write(target, save_bytes(tensors, metadata=metadata))


_DTYPES = {
    "F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
    "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8",
    "U64": "uint64", "U32": "uint32", "U16": "uint16", "U8": "uint8",
    "BOOL": "bool",
}  # fmt: skip
"""safetensors' dtype codes and the NumPy names of their dtypes."""

TensorHeader = dict[str, tuple[tuple[int, ...], str]]
"""Each tensor's shape and dtype name by its name, from a file's header."""


def read_safetensors_header(
    path: str | os.PathLike[str],
) -> tuple[TensorHeader, dict[str, str]]:
    """The shape and dtype of every tensor, and the metadata, of a safetensors file.

    Reads only the header (its first ``8 + header length`` bytes), so a file's
    claims can be checked before anything it describes is built or read.

    Raises:
        ValueError: the file is not a readable safetensors file.
        FileNotFoundError: there is no such file.
    """
    path = user_path(path)

    def bad(reason: str) -> ValueError:
        return ValueError(
            f"{path} is not a readable safetensors file ({reason}). Write it with "
            "zoo.save_safetensors."
        )

    with path.open("rb") as file:
        size_bytes = file.read(8)
        if len(size_bytes) < 8:
            raise bad(f"{len(size_bytes)} bytes, too short for a header length")
        # The format: an 8-byte little-endian header length, then a JSON header
        # whose "__metadata__" entry maps strings to strings.
        (size,) = struct.unpack("<Q", size_bytes)
        total = os.fstat(file.fileno()).st_size
        if size > total - 8:
            raise bad(f"its header length {size} is past the end of its {total} bytes")
        raw = file.read(size)
    try:
        header = json.loads(raw)
    except ValueError as error:
        raise bad(f"its header is not JSON: {error}") from None
    if not isinstance(header, dict):
        raise bad("its header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise bad("its __metadata__ is not an object of strings")
    tensors: TensorHeader = {}
    for name, entry in header.items():
        if not (
            isinstance(entry, dict)
            and entry.get("dtype") in _DTYPES
            and isinstance(entry.get("shape"), list)
            and all(isinstance(n, int) and n >= 0 for n in entry["shape"])
        ):
            raise bad(f"tensor {name!r} has no valid dtype and shape")
        tensors[name] = (tuple(entry["shape"]), _DTYPES[entry["dtype"]])
    return tensors, metadata


def read_safetensors(
    path: str | os.PathLike[str],
) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """The arrays and the metadata of a safetensors file, as NumPy.

    Raises:
        ValueError: the file is not a readable safetensors file.
        FileNotFoundError: there is no such file.
    """
    _, metadata = read_safetensors_header(path)
    data = user_path(path).read_bytes()
    try:
        tensors = load_bytes(data)
    except Exception as error:  # safetensors raises its own error types
        raise ValueError(
            f"{path} is not a readable safetensors file ({error}). Write it with "
            "zoo.save_safetensors."
        ) from None
    return tensors, metadata


def _restore(like: Any, array: np.ndarray) -> jax.Array:
    # A weakly typed scalar (BatchNorm's counter) stays weakly typed.
    if getattr(like, "weak_type", False) and array.ndim == 0:
        value = jnp.asarray(array.item())
        if value.dtype == like.dtype:
            return value
    return jnp.asarray(array)


def file_config(path: str | os.PathLike[str], metadata: Mapping[str, str]) -> Any:
    """The zoo model config stored in a file's metadata.

    Raises:
        ValueError: there is none, or it is not a JSON object.
    """
    if "config" not in metadata:
        raise ValueError(
            f"{path} has no zoo model config in its metadata; pass "
            "like=(model, state) of the architecture it holds."
        )
    try:
        config = json.loads(metadata["config"])
    except ValueError as error:
        raise ValueError(f"{path}: its model config is not JSON ({error}).") from None
    if not isinstance(config, dict):
        raise ValueError(f"{path}: its model config is not a JSON object.")
    return config


def check_tensors(
    path: str | os.PathLike[str],
    expected: Mapping[str, Any],
    found: TensorHeader,
    *,
    advice: str,
) -> None:
    """Check that ``found`` (a file's header) holds exactly the ``expected`` arrays.

    Args:
        path: the file, for messages.
        expected: the model's arrays by name (concrete or ``ShapeDtypeStruct``).
        found: the file's tensors' shapes and dtypes by name.
        advice: what to do, appended to the message.

    Raises:
        ValueError: the first tensor (in the model's order) that is missing or
            of another shape or dtype, with both, or the first extra tensor.
    """
    for name, array in expected.items():
        need = f"{tuple(array.shape)} {np.dtype(array.dtype).name}"
        if name not in found:
            raise ValueError(
                f"{path} does not match the model: it has no tensor {name!r} (the "
                f"model's is {need}). {advice}"
            )
        shape, dtype = found[name]
        if shape != tuple(array.shape) or dtype != np.dtype(array.dtype).name:
            raise ValueError(
                f"{path} does not match the model at tensor {name!r}: the file "
                f"has shape {shape} {dtype}, the model {need}. {advice}"
            )
    extra = [name for name in found if name not in expected]
    if extra:
        raise ValueError(
            f"{path} does not match the model: it has tensor {extra[0]!r} of shape "
            f"{found[extra[0]][0]} that the model lacks ({len(extra)} extra in "
            f"all). {advice}"
        )


def load_safetensors(
    path: str | os.PathLike[str],
    *,
    like: tuple[AbstractModel, eqx.nn.State] | None = None,
) -> tuple[AbstractModel, eqx.nn.State]:
    """Read a model and its state written by [`zoo.save_safetensors`][].

    The file's header is checked first, before anything is built or read:
    without ``like``, the config in the file's metadata is built as shapes only
    (``eqx.filter_eval_shape``) and every tensor's shape and dtype compared with
    the model's, so a small file whose config describes a huge model is refused
    at once. The model is then made from the file's own arrays.

    Args:
        path: the safetensors file.
        like: a ``(model, state)`` of the same structure to fill in; ``None``
            rebuilds the model from the config in the file's metadata with
            ``zoo.models.build_model``.

    Returns:
        ``(model, state)`` with bitwise the arrays that were saved.

    Raises:
        ValueError: the file holds another model: the message names the first
            tensor (in the model's order) that is missing, extra, or of another
            shape or dtype, with both shapes; or the file has no zoo config and
            no ``like`` was given, or its config builds no model.
    """
    found, metadata = read_safetensors_header(path)
    if like is None:
        like = abstract_model(
            file_config(path, metadata), source=f"The config in {path}"
        )
        advice = "Its config does not describe the tensors it holds: it is damaged."
    else:
        advice = (
            "It was saved from another architecture or config; build the model "
            "from the file's config (zoo.load_safetensors without like=) or from "
            "the same preset."
        )
    model, state = like
    check_tensors(path, named_arrays(model, state), found, advice=advice)
    tensors, _ = read_safetensors(path)
    return fill_arrays(model, state, tensors)


def fill_arrays(
    model: AbstractModel, state: eqx.nn.State, arrays: Mapping[str, Any]
) -> tuple[AbstractModel, eqx.nn.State]:
    """``model`` and ``state`` with the arrays named in ``arrays`` replaced.

    Names are those of [`named_arrays`][zoo.models._safetensors.named_arrays];
    arrays not named keep their values. Shapes are not checked here.
    """

    def take(name: str, leaf: Any) -> Any:
        return _restore(leaf, np.asarray(arrays[name])) if name in arrays else leaf

    params, static = eqx.partition(model, is_array_like)
    flat, treedef = jax.tree_util.tree_flatten_with_path(params)
    restored = [take(_name(p), leaf) for p, leaf in flat]
    model = eqx.combine(jax.tree.unflatten(treedef, restored), static)
    for index_name, index in _state_indices(model):
        value = state.get(index)
        flat, treedef = jax.tree_util.tree_flatten_with_path(value)
        prefix = STATE_PREFIX + index_name
        new = [take(prefix + jax.tree_util.keystr(p), leaf) for p, leaf in flat]
        state = state.set(index, jax.tree.unflatten(treedef, new))
    return model, state
