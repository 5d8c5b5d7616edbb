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
bytes), and the file alone rebuilds the model (``zoo.build_model``).
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

from .._files import atomic_write
from ._abstract import AbstractModel

STATE_PREFIX = "state:"
"""Prefix of the names of state entries (BatchNorm statistics) in a file."""


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
    params = eqx.filter(model, eqx.is_array)
    named: dict[str, jax.Array] = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        named[_name(path)] = leaf
    for index_name, index in _state_indices(model):
        value = state.get(index)
        for path, leaf in jax.tree_util.tree_flatten_with_path(value)[0]:
            named[STATE_PREFIX + index_name + jax.tree_util.keystr(path)] = leaf
    return named


def save_safetensors(
    path: str | os.PathLike[str], model: AbstractModel, state: eqx.nn.State
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
        state: its state (empty for stateless models).

    Returns:
        ``path`` as a ``pathlib.Path``.
    """
    tensors = {
        name: np.asarray(jax.device_get(array))
        for name, array in named_arrays(model, state).items()
    }
    # One metadata entry: safetensors writes several in no fixed order, and
    # the same model must always give the same bytes (and SHA-256).
    metadata = {"config": json.dumps(model.config(), sort_keys=True)}
    return atomic_write(path, save_bytes(tensors, metadata=metadata))


def read_safetensors(
    path: str | os.PathLike[str],
) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """The arrays and the metadata of a safetensors file, as NumPy.

    Raises:
        ValueError: the file is not a readable safetensors file.
        FileNotFoundError: there is no such file.
    """
    data = pathlib.Path(path).read_bytes()
    try:
        # The format: an 8-byte little-endian header length, then a JSON header
        # whose "__metadata__" entry maps strings to strings.
        (size,) = struct.unpack("<Q", data[:8])
        header = json.loads(data[8 : 8 + size])
        metadata = dict(header.get("__metadata__") or {})
        tensors = load_bytes(data)
    except Exception as error:  # safetensors raises its own error types
        raise ValueError(
            f"{path} is not a readable safetensors file ({error}). Write it with "
            "zoo.save_safetensors."
        ) from None
    return tensors, metadata


def _restore(like: jax.Array, array: np.ndarray) -> jax.Array:
    # A weakly typed scalar (BatchNorm's counter) stays weakly typed.
    if getattr(like, "weak_type", False) and array.ndim == 0:
        value = jnp.asarray(array.item())
        if value.dtype == like.dtype:
            return value
    return jnp.asarray(array)


def load_safetensors(
    path: str | os.PathLike[str],
    *,
    like: tuple[AbstractModel, eqx.nn.State] | None = None,
) -> tuple[AbstractModel, eqx.nn.State]:
    """Read a model and its state written by [`zoo.save_safetensors`][].

    Args:
        path: the safetensors file.
        like: a ``(model, state)`` of the same structure to fill in; ``None``
            rebuilds the model from the config in the file's metadata with
            ``zoo.build_model``.

    Returns:
        ``(model, state)`` with bitwise the arrays that were saved.

    Raises:
        ValueError: the file holds another model: the message names the first
            tensor (in the model's order) that is missing, extra, or of another
            shape or dtype, with both shapes; or the file has no zoo config and
            no ``like`` was given.
    """
    tensors, metadata = read_safetensors(path)
    if like is None:
        from ._registry import build_model

        if "config" not in metadata:
            raise ValueError(
                f"{path} has no zoo model config in its metadata; pass "
                "like=(model, state) of the architecture it holds."
            )
        like = build_model(json.loads(metadata["config"]), key=jax.random.key(0))
    model, state = like
    expected = named_arrays(model, state)
    for name, array in expected.items():
        if name not in tensors:
            raise ValueError(
                f"{path} does not match the model: it has no tensor {name!r} "
                f"(the model's is {tuple(array.shape)} {array.dtype}). It was "
                "saved from another architecture or config."
            )
        found = tensors[name]
        if found.shape != array.shape or found.dtype != array.dtype:
            raise ValueError(
                f"{path} does not match the model at tensor {name!r}: the file "
                f"has shape {found.shape} {found.dtype}, the model "
                f"{tuple(array.shape)} {array.dtype}. It was saved from another "
                "config; build the model from the file's config "
                "(zoo.load_safetensors without like=) or from the same preset."
            )
    extra = sorted(set(tensors) - set(expected))
    if extra:
        raise ValueError(
            f"{path} does not match the model: it has tensor {extra[0]!r} of "
            f"shape {tensors[extra[0]].shape} that the model lacks "
            f"({len(extra)} extra in all). It was saved from another config."
        )
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

    params, static = eqx.partition(model, eqx.is_array)
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
