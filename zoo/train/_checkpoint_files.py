"""The files of a checkpoint version: how each is written, read and checked.

```
step_00000123/
  config.json       the model's config(): rebuilds its structure
  model.eqx         eqx.tree_serialise_leaves((model, model_state))
  opt_state.eqx     the optimiser state (only if the TrainState had one)
  trainer.json      step, PRNG key, data-iterator state, metadata, zoo version
  manifest.json     sha256 and size of every file above, and the keypath, shape
                    and dtype of every array leaf, by section ("leaves")
```

A ``.eqx`` file is a bare sequence of arrays, so the keypaths of the saved leaves
are checked against the structure they are loaded into from the manifest; each
leaf's shape and dtype is then checked by ``eqx.tree_deserialise_leaves`` as it
reads it. Every problem is a [`zoo.CheckpointError`][] that names the file or the
leaf and says what to do.
"""

import io
import json
import pathlib
from collections.abc import Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ..models._foreign import is_zoo_model, model_config, same_model_class
from ._checkpoint_dir import MANIFEST, CheckpointError, corrupt, is_count, parse_json

CONFIG = "config.json"
MODEL = "model.eqx"
OPT_STATE = "opt_state.eqx"
TRAINER = "trainer.json"
_REQUIRED_FILES = (CONFIG, MODEL, TRAINER)
_KNOWN_FILES = (*_REQUIRED_FILES, OPT_STATE)
_SECTIONS = ("model", "state", "opt_state")
MAX_STEP = 2**31 - 1
"""The largest step a checkpoint holds (``TrainState.step`` is an ``int32``)."""


def json_default(value: Any) -> Any:
    """``json.dumps`` fallback: NumPy and 0-d JAX scalars as Python numbers."""
    if isinstance(value, np.generic) or (
        isinstance(value, np.ndarray | jax.Array) and value.ndim == 0
    ):
        return value.item()
    raise TypeError(f"Object of type {type(value).__name__} is not JSON-serialisable")


def dumps(what: str, value: Any) -> bytes:
    """``value`` as indented JSON bytes; ``TypeError`` naming ``what`` if not JSON."""
    try:
        return json.dumps(value, indent=1, default=json_default).encode()
    except (TypeError, ValueError) as error:
        raise TypeError(
            f"Cannot save {what} in a checkpoint: it must be JSON (dicts, lists, "
            f"strings, numbers, booleans, None), but {error}."
        ) from None


def key_to_json(key: Any) -> dict[str, Any]:
    """A typed PRNG key as JSON: implementation, shape, dtype and raw data."""
    if not (
        isinstance(key, jax.Array) and jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
    ):
        raise TypeError(
            "The key must be a typed PRNG key from jax.random.key(...), got "
            f"{getattr(key, 'dtype', type(key))}; wrap a raw uint32 key with "
            "jax.random.wrap_key_data(key)."
        )
    data = np.asarray(jax.random.key_data(key))
    return {
        "impl": str(jax.random.key_impl(key)),
        "shape": list(data.shape),
        "dtype": str(data.dtype),
        "data": data.tolist(),
    }


def leaf_records(tree: Any) -> list[dict[str, Any]]:
    """Keypath, shape and dtype of every array leaf, in serialisation order."""
    return [
        {
            "path": jax.tree_util.keystr(path),
            "shape": [int(n) for n in leaf.shape],
            "dtype": str(leaf.dtype),
        }
        for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]
        if isinstance(leaf, jax.Array | np.ndarray | jax.ShapeDtypeStruct)
    ]


def parse_leaves(version: pathlib.Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest's leaf records by section, once its files are the right ones."""
    files = manifest["files"]
    if not all(f in files for f in _REQUIRED_FILES):
        raise corrupt(
            version, MANIFEST, f"it does not list the files {list(_REQUIRED_FILES)}"
        )
    for name in files:
        if name not in _KNOWN_FILES:
            raise corrupt(version, MANIFEST, f"it lists an unknown file {name!r}")
    leaves = manifest.get("leaves")
    if not isinstance(leaves, dict) or set(leaves) != set(_SECTIONS):
        raise corrupt(
            version, MANIFEST, f"its 'leaves' must have the sections {list(_SECTIONS)}"
        )
    for section in _SECTIONS:
        records = leaves[section]
        if section == "opt_state" and records is None:
            continue
        if not isinstance(records, list) or not all(map(_is_record, records)):
            raise corrupt(version, MANIFEST, f"its {section!r} leaves are malformed")
    if (leaves["opt_state"] is None) == (OPT_STATE in files):
        raise corrupt(
            version,
            MANIFEST,
            f"its 'opt_state' leaves and the file {OPT_STATE} disagree",
        )
    return leaves


def _is_record(record: Any) -> bool:
    return (
        isinstance(record, dict)
        and set(record) == {"path", "shape", "dtype"}
        and isinstance(record["path"], str)
        and isinstance(record["dtype"], str)
        and isinstance(record["shape"], list)
        and all(map(is_count, record["shape"]))
    )


def parse_trainer(version: pathlib.Path, data: bytes) -> dict[str, Any]:
    """``trainer.json``, checked, with its ``key`` restored as a typed PRNG key."""
    trainer = parse_json(version, TRAINER, data)

    def bad(reason: str) -> CheckpointError:
        return corrupt(version, TRAINER, reason)

    if not isinstance(trainer, dict):
        raise bad("it is not a JSON object")
    if not (is_count(trainer.get("step")) and trainer["step"] <= MAX_STEP):
        raise bad("its 'step' is not an int in [0, 2**31)")
    if not isinstance(trainer.get("data_state"), dict | None):
        raise bad("its 'data_state' is not an object or null")
    if not isinstance(trainer.get("metadata"), dict):
        raise bad("its 'metadata' is not an object")
    if not isinstance(trainer.get("zoo_version"), str):
        raise bad("its 'zoo_version' is not a string")
    spec = trainer.get("key")
    try:
        if not (
            isinstance(spec, dict)
            and isinstance(spec["impl"], str)
            and isinstance(spec["shape"], list)
            and all(map(is_count, spec["shape"]))
        ):
            raise TypeError("malformed")
        raw = np.asarray(spec["data"], dtype=np.dtype(spec["dtype"]))
        if raw.size == 0:  # an empty batch of keys loses its shape in JSON
            raw = raw.reshape(spec["shape"])
        if list(raw.shape) != spec["shape"]:
            raise ValueError(f"shape {raw.shape} is not {tuple(spec['shape'])}")
        key = jax.random.wrap_key_data(jnp.asarray(raw), impl=spec["impl"])
    except Exception as error:
        raise bad(f"its PRNG 'key' cannot be restored ({error})") from None
    return {**trainer, "key": key}


def check_x64(
    version: pathlib.Path, leaves: dict[str, Any], sections: Sequence[str]
) -> None:
    """Refuse 64-bit leaves while JAX would silently load them as 32-bit."""
    if jax.config.read("jax_enable_x64"):
        return
    for section in sections:
        for record in leaves[section]:
            if record["dtype"] in ("float64", "int64", "uint64", "complex128"):
                raise CheckpointError(
                    f"Checkpoint {section} leaf {record['path']} in {version} is "
                    f"{record['dtype']}, which JAX only loads with 64-bit types on: "
                    "call jax.config.update('jax_enable_x64', True) (or use "
                    "`with jax.enable_x64(True):`) before loading it."
                )


def check_paths(
    what: str, saved: list[dict[str, Any]], tree: Any, expects: str, advice: str
) -> None:
    """Check that the saved leaves are the leaves of ``tree``, by keypath.

    ``expects`` completes "... where {expects} .layers[0].weight"; shapes and
    dtypes are left to Equinox, which checks them as it reads each leaf.
    """

    def show(record: dict[str, Any]) -> str:
        return f"{record['path']} (shape {tuple(record['shape'])}, {record['dtype']})"

    expected = leaf_records(tree)
    for index in range(max(len(saved), len(expected))):
        old = saved[index] if index < len(saved) else None
        new = expected[index] if index < len(expected) else None
        if old is not None and new is not None and old["path"] == new["path"]:
            continue
        if old is None:
            assert new is not None
            problem = f"The checkpoint has no {what} leaf {show(new)}, but {expects} it"
        elif new is None:
            problem = f"Checkpoint {what} leaf {show(old)} is more than {expects}"
        else:
            problem = (
                f"Checkpoint {what} leaf {show(old)} is where {expects} {show(new)}"
            )
        raise CheckpointError(f"{problem}; {advice}")


def read_leaves(
    version: pathlib.Path,
    file: str,
    data: bytes,
    structures: Sequence[Any],
    advice: str,
) -> list[Any]:
    """Deserialise the trees of ``structures`` one after the other from ``data``.

    Equinox checks every leaf's shape and dtype against ``structures``; its error
    is passed on as a ``CheckpointError`` that names the leaf by its keypath.
    """
    buffer = io.BytesIO(data)
    trees = []
    for structure in structures:
        try:
            trees.append(eqx.tree_deserialise_leaves(buffer, structure))
        except Exception as error:
            raise CheckpointError(
                f"Cannot load {version / file}: {_equinox_message(error, structure)}; "
                f"{advice}"
            ) from error
    if buffer.tell() != len(data):
        raise corrupt(
            version, file, f"{len(data) - buffer.tell()} bytes follow its last leaf"
        )
    return trees


def _equinox_message(error: Exception, structure: Any) -> str:
    """Equinox's error, with leaf paths written as keypaths (``.layers[0].weight``)."""
    message = str(error).rstrip(".")
    if error.__cause__ is not None:  # a leaf that could not be read at all
        message = f"{message} ({error.__cause__})"
    paths = [path for path, _ in jax.tree_util.tree_flatten_with_path(structure)[0]]
    for path in sorted(paths, key=lambda p: len(str(p)), reverse=True):
        message = message.replace(str(path), jax.tree_util.keystr(path))
    return message[:1].lower() + message[1:]


def check_config(model: eqx.Module, config: dict[str, Any], advice: str) -> None:
    """Check that the checkpoint was written for ``model``'s config (for a
    model zoo did not build: for its class)."""
    if not is_zoo_model(model) or "family" not in config:
        if (
            "family" in config
            or is_zoo_model(model)
            or not same_model_class(config, model)
        ):
            raise CheckpointError(
                f"The checkpoint was written for {describe_config(config)}, not "
                f"for {describe_config(model_config(model))}; {advice}"
            )
        return
    expected = json.loads(json.dumps(model_config(model), default=json_default))
    differences = [
        f"{name}: {config.get(name, '<missing>')!r} in the checkpoint, "
        f"{expected.get(name, '<missing>')!r} in the model"
        for name in sorted(set(config) | set(expected))
        if config.get(name, "<missing>") != expected.get(name, "<missing>")
    ]
    if differences:
        raise CheckpointError(
            "The checkpoint's config differs from the model's ("
            + "; ".join(differences)
            + f"); {advice}"
        )


def describe_config(config: dict[str, Any]) -> str:
    """A checkpoint's model in words: its zoo family, or its class."""
    if "family" in config:
        return f"a zoo {config['family']} model"
    return (
        f"a model of class {config.get('class', '?')} (module "
        f"{config.get('module', '?')})"
    )
