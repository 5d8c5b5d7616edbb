"""What a model-file function is given, checked before it reads or writes.

``abstract_model`` builds a config's model as shapes only, to check a file or
a state against it; ``check_zoo_model``, ``checked_state``,
``check_finite_weights`` and ``file_target`` check a zoo model, its own state,
that neither holds NaN or infinity, and a writable file path, each refused
with what to do instead (``save_safetensors`` and ``export`` share them)."""

import os
import pathlib
from collections.abc import Mapping
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp

from .._files import user_path
from ._abstract import AbstractModel
from ._registry import build_model


def abstract_model(
    config: Mapping[str, Any], *, source: str = "The config"
) -> tuple[AbstractModel, eqx.nn.State]:
    """The model and state ``config`` builds, as shapes only: nothing is allocated.

    Every array is a ``jax.ShapeDtypeStruct`` (``eqx.filter_eval_shape``), so a
    config can be checked against the tensors a file holds before the model is
    built.

    Raises:
        ValueError: the config builds no model (``source`` names where it is).
    """
    try:
        return eqx.filter_eval_shape(build_model, config, key=jax.random.key(0))
    except (ValueError, TypeError, KeyError) as error:
        raise ValueError(
            f"{source} describes no model zoo can build: {error}"
        ) from None


def check_zoo_model(model: object, caller: str) -> AbstractModel:
    """``model``, refused (``TypeError``) unless it is a zoo model."""
    if isinstance(model, AbstractModel):
        return model
    swapped = " (the arguments are (path, model, state)?)"
    raise TypeError(
        f"{caller} takes a zoo model (zoo.AbstractModel, which knows its config "
        f"and input_shape), got {type(model).__name__}"
        f"{swapped if isinstance(model, eqx.nn.State) else ''}."
    )


def file_target(path: str | os.PathLike[str]) -> pathlib.Path:
    """``path`` (``~`` expanded) as a file to write: its folder must exist and
    it must not be a folder itself."""
    target = user_path(path)
    if target.is_dir():
        raise IsADirectoryError(f"{target} is a folder: give the path of a file.")
    if not target.parent.is_dir():
        raise FileNotFoundError(
            f"The folder {target.parent} does not exist: create it first "
            f"(mkdir -p {target.parent}), then write {target}."
        )
    return target


def checked_state(
    model: AbstractModel, state: eqx.nn.State | None
) -> eqx.nn.State | None:
    """``state``, checked to be the one ``model`` takes (entries and shapes);
    ``None`` for a stateless model.

    Raises:
        ValueError: a stateful model without state, or a state whose entries
            or shapes are not the model's.
    """
    name = type(model).__name__
    if state is not None and not isinstance(state, eqx.nn.State):
        raise ValueError(
            f"state must be the eqx.nn.State of the model (or None for a "
            f"stateless one), got {type(state).__name__}."
        )
    if not model.stateful:
        if state is not None and jax.tree.leaves(state):
            raise ValueError(
                f"{name} is stateless, but the state passed has entries "
                f"{sorted(_entries(state))}: it belongs to another model."
            )
        return None
    if state is None:
        raise ValueError(
            f"{name} is stateful (BatchNorm): pass the `state` returned by "
            "zoo.create_model or eqx.nn.make_with_state."
        )
    try:
        _, expected = abstract_model(model.config())
    except ValueError:  # a model zoo cannot rebuild: tracing checks the state
        return state
    want, got = _entries(expected), _entries(state)
    wrong = sorted(
        (set(want) ^ set(got)) | {k for k in set(want) & set(got) if want[k] != got[k]}
    )
    if wrong:
        shown = ", ".join(
            f"{k}: model {want.get(k, 'absent')}, state {got.get(k, 'absent')}"
            for k in wrong[:4]
        )
        raise ValueError(
            f"The state passed is not {name}'s ({len(wrong)} entries differ: "
            f"{shown}). Pass the state that was created or loaded with this model."
        )
    return state


def check_finite_weights(
    model: AbstractModel, state: eqx.nn.State | None, caller: str
) -> None:
    """Refuse (``ValueError``) a model or state holding NaN or infinity: a file
    of such weights predicts nothing, and would be shared as if it did.

    The message names up to four arrays (their paths in the pytree) and how
    many values of each are not finite.
    """
    leaves = [
        (owner + jax.tree_util.keystr(path), leaf)
        for owner, tree in (("model", model), ("state", state))
        for path, leaf in jax.tree_util.tree_flatten_with_path(
            eqx.filter(tree, eqx.is_inexact_array)
        )[0]
    ]
    counts = jax.device_get([jnp.sum(~jnp.isfinite(leaf)) for _, leaf in leaves])
    bad = [
        (name, int(count), leaf.size)
        for (name, leaf), count in zip(leaves, counts, strict=True)
        if count
    ]
    if not bad:
        return
    shown = ", ".join(f"{name} ({count} of {size})" for name, count, size in bad[:4])
    more = f" and {len(bad) - 4} more arrays" if len(bad) > 4 else ""
    raise ValueError(
        f"{caller}: the weights hold NaN or infinite values, in {shown}{more}; "
        "nothing was written. The model diverged (or was loaded from a broken "
        "file): train it again, e.g. with a lower learning rate, or from the "
        "last good checkpoint."
    )


def _entries(state: Any) -> dict[str, str]:
    """``{entry: "shapes dtypes"}`` of an ``eqx.nn.State``, one per layer's
    entry (named as Equinox names them, e.g. ``CNN.blocks[0].norm.batch_counter``)."""
    entries = jax.tree_util.tree_flatten(state, is_leaf=lambda n: n is not state)[0]
    node = jax.tree.structure(state).node_data()
    keys = node[1] if node is not None else None
    if not (isinstance(keys, tuple) and len(keys) == len(entries)):
        keys = [f"entry {i}" for i in range(len(entries))]
    return {
        str(key): " ".join(
            f"{leaf.dtype}{list(leaf.shape)}" for leaf in jax.tree.leaves(entry)
        )
        for key, entry in zip(keys, entries, strict=True)
    }
