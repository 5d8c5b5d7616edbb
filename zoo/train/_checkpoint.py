"""Crash-safe, verified checkpoints of a training run.

One run writes into one checkpoint directory. Each save is a complete, versioned
subdirectory, committed atomically:

```
run/
  LATEST              "step_00000123": the current version
  step_00000100/      an older version, kept while `keep` allows
  step_00000123/
    config.json       the model's config(): rebuilds its structure
    model.eqx         eqx.tree_serialise_leaves((model, state))
    opt_state.eqx     the optimiser state (only if one was saved)
    trainer.json      step, PRNG key, data-iterator state, metadata, zoo version
    manifest.json     sha256 and size of every file above, and the
                      keypath, shape and dtype of every array leaf
```

A save writes the new version into a hidden temporary directory, fsyncs it, renames
it into place and only then points ``LATEST`` at it (itself replaced atomically),
so a crash at any moment leaves the previous version loadable. Loading verifies
every file against the manifest and every array leaf against the model it is
loaded into, and raises [`zoo.CheckpointError`][] rather than load anything
silently wrong.
"""

import contextlib
import dataclasses
import hashlib
import io
import json
import operator
import os
import pathlib
import re
import shutil
import uuid
from collections.abc import Callable, Mapping
from typing import Any, cast

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import PRNGKeyArray

from ..models._abstract import AbstractModel
from ..models._registry import build_model

__all__ = [
    "Checkpoint",
    "CheckpointError",
    "ensure_writable",
    "latest_checkpoint",
    "load_checkpoint",
    "load_model",
    "save_checkpoint",
]

_FORMAT = "zoo-checkpoint"
_FORMAT_VERSION = 1
_LATEST = "LATEST"
_MANIFEST = "manifest.json"
_CONFIG = "config.json"
_MODEL = "model.eqx"
_OPT_STATE = "opt_state.eqx"
_TRAINER = "trainer.json"
_REQUIRED_FILES = (_CONFIG, _MODEL, _TRAINER)
_KNOWN_FILES = (*_REQUIRED_FILES, _OPT_STATE)
_SECTIONS = ("model", "state", "opt_state")

_HEX = "[0-9a-f]{32}"
_VERSION_RE = re.compile(r"step_(\d{8,})")
_TEMP_RE = re.compile(rf"\.tmp-step_\d{{8,}}-{_HEX}")
_REPLACED_RE = re.compile(rf"\.replaced-(step_\d{{8,}})-{_HEX}")
_DELETING_RE = re.compile(rf"\.deleting-step_\d{{8,}}-{_HEX}")
_SCRATCH_FILE_RE = re.compile(rf"\.(LATEST|write-test)-{_HEX}\.tmp")
_SHA256_RE = re.compile(r"[0-9a-f]{64}")


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt, or does not fit what it is loaded into.

    Also raised when a checkpoint directory cannot be created or written. The
    message names the file, leaf or path at fault and says what to do about it.
    """


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """Everything needed to continue a training run exactly where it stopped.

    Attributes:
        model: the model, its arrays bitwise identical to those saved.
        state: the model's ``eqx.nn.State`` (empty for stateless models).
        opt_state: the optimiser state, or ``None`` if none was saved or no
            ``optimizer`` was given to [`zoo.load_checkpoint`][].
        step: the number of optimiser steps taken so far.
        key: the training PRNG key to continue from (a typed ``jax.random.key``).
        data_state: the data iterator's ``get_state()`` (JSON), or ``None``.
        metadata: any other JSON data saved with the run (history, config, ...).
    """

    model: AbstractModel
    state: eqx.nn.State
    opt_state: optax.OptState | None
    step: int
    key: PRNGKeyArray
    data_state: dict[str, Any] | None
    metadata: dict[str, Any]


# --------------------------------------------------------------------------- save


def ensure_writable(directory: str | os.PathLike[str]) -> pathlib.Path:
    """Create ``directory`` if needed and check that files can be written in it.

    Training loops call this before the first step, so that a bad checkpoint
    path fails at once rather than after an epoch of work.

    Args:
        directory: the checkpoint directory of a run.

    Returns:
        ``directory`` as a ``pathlib.Path``.

    Raises:
        CheckpointError: the directory cannot be created (for instance a file
            is in the way) or written to (for instance permission denied); the
            message names the path and the operating system's error.
    """
    path = pathlib.Path(directory)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocker = _first_non_directory(path)
        raise CheckpointError(
            f"Cannot use {path} as a checkpoint directory: {blocker} is a file, "
            "not a directory (a file is in the way). Move or delete it, or choose "
            "another checkpoint directory."
        ) from None
    except OSError as error:
        raise CheckpointError(
            f"Cannot create the checkpoint directory {path}: {_os_reason(error)}. "
            "Choose a directory you can write to."
        ) from error
    probe = path / f".write-test-{uuid.uuid4().hex}.tmp"
    try:
        with open(probe, "xb") as file:
            file.write(b"zoo")
        probe.unlink()
    except OSError as error:
        raise CheckpointError(
            f"Cannot write checkpoints to {path}: {_os_reason(error)}. Check the "
            "directory's permissions and free space, or choose another directory."
        ) from error
    return path


def save_checkpoint(
    directory: str | os.PathLike[str],
    *,
    model: AbstractModel,
    state: eqx.nn.State,
    opt_state: optax.OptState | None = None,
    step: int,
    key: PRNGKeyArray,
    data_state: Mapping[str, Any] | None = None,
    metadata: Mapping[str, Any] | None = None,
    keep: int = 2,
) -> pathlib.Path:
    """Save a new version of a run's checkpoint, atomically.

    The version is written to a hidden temporary directory inside ``directory``,
    fsynced, renamed to ``step_<step>`` (8 or more digits) and then named in
    ``LATEST``, which is replaced atomically. A crash (even ``SIGKILL`` or power
    loss) at any point leaves the previous version loadable. After the commit,
    leftovers of interrupted saves are removed, and so are old versions: the one
    just written and the ``keep - 1`` versions with the highest steps below it
    stay, and versions with a higher step (an abandoned later run) go. Saving the
    same step again replaces that version, also atomically. Files in
    ``directory`` that are not checkpoint versions are left alone. One process at
    a time may save into a directory.

    Args:
        directory: the run's checkpoint directory (created if needed).
        model: the model; its ``config()`` is saved to rebuild it.
        state: the model's ``eqx.nn.State`` (empty for stateless models).
        opt_state: the optimiser state, e.g. from ``optax.adam(...).init``.
        step: the number of optimiser steps taken so far (>= 0).
        key: the training PRNG key to continue from, a typed key from
            ``jax.random.key`` (wrap raw ``uint32`` keys with
            ``jax.random.wrap_key_data``).
        data_state: the data iterator's ``get_state()``; must be JSON.
        metadata: anything else to keep with the run (history, run config,
            epoch, ...); must be JSON. Tuples come back as lists.
        keep: how many versions to keep (>= 1).

    Returns:
        The path of the version directory just written.

    Raises:
        CheckpointError: the directory cannot be created or written (the message
            names the path and the operating system's error).
        TypeError: ``model`` is not a zoo model, ``key`` is not a typed PRNG
            key, or ``data_state``/``metadata`` is not JSON.
        ValueError: a negative ``step`` or ``keep < 1``.
    """
    step = _check_step(step)
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
        raise ValueError(f"`keep` must be an int >= 1, got {keep!r}.")
    if not isinstance(model, AbstractModel):
        raise TypeError(
            f"`model` must be a zoo model (zoo.AbstractModel), got {type(model)}."
        )
    config_json = _dumps("the model's config()", model.config())
    trainer_json = _dumps(
        "data_state/metadata",
        {
            "step": step,
            "key": _key_to_json(key),
            "data_state": None if data_state is None else dict(data_state),
            "metadata": {} if metadata is None else dict(metadata),
            "zoo_version": _zoo_version(),
        },
    )
    root = ensure_writable(directory)
    _recover_replaced(root)
    name = f"step_{step:08d}"
    final = root / name
    temp = root / f".tmp-{name}-{uuid.uuid4().hex}"
    aside: pathlib.Path | None = None
    committed = False
    try:
        temp.mkdir()
        files = {
            _CONFIG: _write_file(temp / _CONFIG, lambda f: f.write(config_json)),
            _MODEL: _write_file(
                temp / _MODEL, lambda f: eqx.tree_serialise_leaves(f, (model, state))
            ),
        }
        if opt_state is not None:
            files[_OPT_STATE] = _write_file(
                temp / _OPT_STATE, lambda f: eqx.tree_serialise_leaves(f, opt_state)
            )
        files[_TRAINER] = _write_file(temp / _TRAINER, lambda f: f.write(trainer_json))
        manifest = {
            "format": _FORMAT,
            "format_version": _FORMAT_VERSION,
            "files": files,
            "leaves": {
                "model": _leaf_records(model),
                "state": _leaf_records(state),
                "opt_state": None if opt_state is None else _leaf_records(opt_state),
            },
        }
        manifest_json = json.dumps(manifest, indent=1).encode()
        _write_file(temp / _MANIFEST, lambda f: f.write(manifest_json))
        _fsync_dir(temp)
        if final.exists():
            # Saving a step again: move the old version aside (where the loader
            # still finds it) so that the new one can take its name.
            aside = root / f".replaced-{name}-{uuid.uuid4().hex}"
            os.replace(final, aside)
        os.replace(temp, final)
        _fsync_dir(root)
        committed = True
        _write_latest(root, name)
    except Exception as error:
        if not committed:
            shutil.rmtree(temp, ignore_errors=True)
            if aside is not None and not final.exists():
                # If this fails too, the loader and the next save find it aside.
                with contextlib.suppress(OSError):
                    os.replace(aside, final)
        if isinstance(error, OSError):
            raise CheckpointError(
                f"Could not save the checkpoint for step {step} in {root}: "
                f"{_os_reason(error)}."
            ) from error
        raise
    _clean_up(root, keep_name=name, keep=keep)
    return final


def _check_step(step: int) -> int:
    try:
        if isinstance(step, bool):
            raise TypeError
        value = operator.index(step)
    except TypeError:
        raise TypeError(f"`step` must be an int, got {step!r}.") from None
    if value < 0:
        raise ValueError(f"`step` must be >= 0, got {value}.")
    return value


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic) or (
        isinstance(value, np.ndarray | jax.Array) and value.ndim == 0
    ):
        return value.item()
    raise TypeError(f"Object of type {type(value).__name__} is not JSON-serialisable")


def _dumps(what: str, value: Any) -> bytes:
    try:
        return json.dumps(value, indent=1, default=_json_default).encode()
    except (TypeError, ValueError) as error:
        raise TypeError(
            f"Cannot save {what} in a checkpoint: it must be JSON (dicts, lists, "
            f"strings, numbers, booleans, None), but {error}."
        ) from None


def _key_to_json(key: Any) -> dict[str, Any]:
    if not (
        isinstance(key, jax.Array) and jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
    ):
        raise TypeError(
            "`key` must be a typed PRNG key from jax.random.key(...), got "
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


def _zoo_version() -> str:
    # imported late: zoo/__init__ imports this module before defining it
    from .. import __version__

    return __version__


class _HashingWriter:
    """A binary file wrapper that hashes and counts what is written through it."""

    def __init__(self, file: io.BufferedWriter):
        self.file = file
        self.sha256 = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes, /) -> int:
        self.sha256.update(data)
        self.size += memoryview(data).nbytes
        return self.file.write(data)


def _write_file(
    path: pathlib.Path, write: Callable[[_HashingWriter], object]
) -> dict[str, Any]:
    with open(path, "xb") as file:
        writer = _HashingWriter(file)
        write(writer)
        file.flush()
        os.fsync(file.fileno())
    return {"sha256": writer.sha256.hexdigest(), "size": writer.size}


def _fsync_dir(path: pathlib.Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_latest(root: pathlib.Path, name: str) -> None:
    temp = root / f".LATEST-{uuid.uuid4().hex}.tmp"
    try:
        with open(temp, "xb") as file:
            file.write(f"{name}\n".encode())
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, root / _LATEST)
    except Exception:
        temp.unlink(missing_ok=True)
        raise
    _fsync_dir(root)


def _recover_replaced(root: pathlib.Path) -> None:
    """Move back a version left aside by a save that crashed while replacing it."""
    moved = False
    for entry in _entries(root):
        match = _REPLACED_RE.fullmatch(entry.name)
        if match and entry.is_dir() and not (root / match.group(1)).exists():
            try:
                os.replace(entry, root / match.group(1))
                moved = True
            except OSError:
                continue
    if moved:
        _fsync_dir(root)


def _clean_up(root: pathlib.Path, *, keep_name: str, keep: int) -> None:
    """Delete interrupted saves' leftovers and versions beyond ``keep``."""
    kept_step = int(keep_name.removeprefix("step_"))
    older = sorted(
        (step, entry)
        for entry in _entries(root)
        if (step := _version_step(entry.name)) is not None
        and entry.name != keep_name
        and step < kept_step
    )
    kept_older = older[max(0, len(older) - (keep - 1)) :] if keep > 1 else []
    survivors = {keep_name, *(entry.name for _, entry in kept_older)}
    for entry in _entries(root):
        name = entry.name
        try:
            if _version_step(name) is not None and name not in survivors:
                # Rename first, so that a crash mid-delete leaves no half version.
                trash = root / f".deleting-{name}-{uuid.uuid4().hex}"
                os.replace(entry, trash)
                shutil.rmtree(trash, ignore_errors=True)
            elif any(
                regex.fullmatch(name)
                for regex in (_TEMP_RE, _REPLACED_RE, _DELETING_RE)
            ):
                shutil.rmtree(entry, ignore_errors=True)
            elif _SCRATCH_FILE_RE.fullmatch(name):
                entry.unlink(missing_ok=True)
        except OSError:
            continue  # best effort: the next save tries again


def _entries(root: pathlib.Path) -> list[pathlib.Path]:
    try:
        return list(root.iterdir())
    except OSError:
        return []


def _version_step(name: str) -> int | None:
    match = _VERSION_RE.fullmatch(name)
    return None if match is None else int(match.group(1))


def _leaf_records(tree: Any) -> list[dict[str, Any]]:
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


def _first_non_directory(path: pathlib.Path) -> pathlib.Path:
    for candidate in [*reversed(path.parents), path]:
        if candidate.exists() and not candidate.is_dir():
            return candidate
    return path


def _os_reason(error: OSError) -> str:
    reason = error.strerror or str(error) or type(error).__name__
    if error.filename is not None:
        reason = f"{reason} ({error.filename})"
    return reason


# --------------------------------------------------------------------------- load


def latest_checkpoint(directory: str | os.PathLike[str]) -> pathlib.Path | None:
    """The version directory a load would read, or ``None`` if there is none yet.

    That is the version ``LATEST`` names; if ``LATEST`` is missing, unreadable or
    names no existing version, the newest version whose files all match its
    manifest. Temporary directories of interrupted saves are ignored.

    Args:
        directory: a run's checkpoint directory (it need not exist).

    Returns:
        The path of the current version, or ``None``.
    """
    root = pathlib.Path(directory)
    if not root.is_dir():
        return None
    return _resolve(root)[0]


def load_checkpoint(
    directory: str | os.PathLike[str],
    *,
    optimizer: optax.GradientTransformation | None = None,
    like: tuple[AbstractModel, eqx.nn.State] | None = None,
) -> Checkpoint:
    """Load the current version of a run's checkpoint, verified.

    Every file is checked against the manifest's sha256 and size, and every array
    leaf's keypath, shape and dtype against the structure it is loaded into. The
    arrays come back bitwise identical to those saved, the PRNG key included.

    Args:
        directory: a run's checkpoint directory (see [`zoo.train.latest_checkpoint`][]
            for which version is read), or one version directory inside it.
        optimizer: the run's optimiser. Its ``init`` on the model's inexact
            arrays gives the structure the saved optimiser state is loaded into;
            without it ``opt_state`` is ``None``.
        like: ``(model, state)`` to load into, e.g. the freshly built model of the
            run being resumed; its ``config()`` and array leaves must match the
            checkpoint's. Without it the model is rebuilt from ``config.json``.

    Returns:
        The [`zoo.Checkpoint`][].

    Raises:
        CheckpointError: no checkpoint in ``directory``; a missing, truncated or
            corrupt file (named, with what to do); a checkpoint written for
            another model config or optimiser (naming the first leaf that
            differs, with both shapes).
    """
    root = pathlib.Path(directory)
    version, contents, manifest = _open_version(root)
    trainer = _parse_trainer(version, contents[_TRAINER])
    config = _parse_json(version / _CONFIG, contents[_CONFIG])
    if not isinstance(config, dict):
        raise _corrupt(version, _CONFIG, "it is not a JSON object")
    written_by = (
        f"the checkpoint {version} was written for config "
        f"{json.dumps(config)} (zoo {trainer['zoo_version']})"
    )
    leaves = manifest["leaves"]

    if like is None:
        _check_x64(version, leaves)
        try:
            structure = eqx.filter_eval_shape(
                build_model, config, key=jax.random.key(0)
            )
        except Exception as error:
            raise CheckpointError(
                f"{version / _CONFIG} describes no model this zoo can build "
                f"({error}); {written_by}."
            ) from error
        problem = _compare_model(leaves, structure, "its config.json builds")
        if problem is not None:
            raise CheckpointError(
                f"{_sentence(problem)}; {written_by}. This zoo builds that config "
                "differently: load it with the zoo version that wrote it."
            )
    else:
        structure = _check_like(like, config, leaves, written_by)
    model, state = cast(
        tuple[AbstractModel, eqx.nn.State],
        _deserialise(version, _MODEL, contents[_MODEL], structure),
    )

    opt_state = None
    if optimizer is not None:
        if leaves["opt_state"] is None:
            raise CheckpointError(
                f"The checkpoint {version} has no optimiser state, but an "
                "`optimizer` was given. Load it with optimizer=None and initialise "
                "the optimiser afresh."
            )
        try:
            # optax is written for JAX's standard dtype promotion
            with jax.numpy_dtype_promotion("standard"):
                opt_structure = eqx.filter_eval_shape(
                    lambda m: optimizer.init(eqx.filter(m, eqx.is_inexact_array)),
                    model,
                )
        except Exception as error:
            raise CheckpointError(
                f"Cannot initialise the optimiser for the checkpoint's model "
                f"({error}); {written_by}."
            ) from error
        problem = _compare(
            "optimiser state",
            leaves["opt_state"],
            _leaf_records(opt_structure),
            "the optimiser expects",
        )
        if problem is not None:
            raise CheckpointError(
                f"{_sentence(problem)}: the checkpoint {version} was written with "
                "a different optimiser. Resume with the optimiser of the run that "
                "wrote it, or load with optimizer=None to take the model only."
            )
        opt_state = _deserialise(
            version, _OPT_STATE, contents[_OPT_STATE], opt_structure
        )
    return Checkpoint(
        model=model,
        state=state,
        opt_state=opt_state,
        step=trainer["step"],
        key=trainer["key"],
        data_state=trainer["data_state"],
        metadata=trainer["metadata"],
    )


def load_model(
    directory: str | os.PathLike[str],
) -> tuple[AbstractModel, eqx.nn.State]:
    """Rebuild a trained model from its checkpoint directory alone.

    Example:
        >>> import jax, tempfile, zoo
        >>> model, state = zoo.create_model("toy_mlp", key=jax.random.key(0))
        >>> with tempfile.TemporaryDirectory() as run:
        ...     _ = zoo.save_checkpoint(
        ...         run, model=model, state=state, step=0, key=jax.random.key(1))
        ...     loaded, _ = zoo.load_model(run)
        >>> loaded.config() == model.config()
        True

    Args:
        directory: a run's checkpoint directory, or one version directory in it.

    Returns:
        ``(model, state)``, as saved.

    Raises:
        CheckpointError: as for [`zoo.load_checkpoint`][].
    """
    checkpoint = load_checkpoint(directory)
    return checkpoint.model, checkpoint.state


def _open_version(
    root: pathlib.Path,
) -> tuple[pathlib.Path, dict[str, bytes], dict[str, Any]]:
    """Find the version to load and read its verified files."""
    if (root / _MANIFEST).is_file():
        version: pathlib.Path | None = root  # a version directory itself
        verified = None
    elif not root.exists():
        raise CheckpointError(
            f"No checkpoint at {root}: the directory does not exist. Check the "
            "path, or start a new run there."
        )
    elif not root.is_dir():
        raise CheckpointError(
            f"No checkpoint at {root}: it is a file, not a checkpoint directory."
        )
    else:
        version, verified, failure = _resolve(root)
        if version is None:
            detail = f" The newest version failed: {failure}" if failure else ""
            raise CheckpointError(
                f"No complete checkpoint in {root}: no valid {_LATEST} file and no "
                f"step_* version whose files match its manifest.{detail}"
            )
    if verified is not None:
        return version, *verified
    return version, *_verify(version)


def _resolve(
    root: pathlib.Path,
) -> tuple[
    pathlib.Path | None,
    tuple[dict[str, bytes], dict[str, Any]] | None,
    CheckpointError | None,
]:
    """The current version, its verified files if already read, and why not.

    ``LATEST`` wins when it names an existing version directory (which is then
    verified when loaded, so that corruption is reported, not skipped). Otherwise
    the newest complete version is taken: committed versions, then versions that a
    crashed save of the same step had moved aside.
    """
    try:
        with open(root / _LATEST, "rb") as file:
            name = file.read(64).decode("ascii").strip()
    except (OSError, UnicodeDecodeError):
        name = ""
    if _VERSION_RE.fullmatch(name) and (root / name).is_dir():
        return root / name, None, None
    candidates: list[tuple[int, int, pathlib.Path]] = []
    for entry in _entries(root):
        if (step := _version_step(entry.name)) is not None:
            candidates.append((step, 1, entry))
        elif match := _REPLACED_RE.fullmatch(entry.name):
            candidates.append((int(match.group(1).removeprefix("step_")), 0, entry))
    first_failure = None
    for _, _, entry in sorted(candidates, reverse=True):
        if not entry.is_dir():
            continue
        try:
            return entry, _verify(entry), None
        except CheckpointError as error:
            first_failure = first_failure or error
    return None, None, first_failure


def _corrupt(version: pathlib.Path, file: str, reason: str) -> CheckpointError:
    root = version.parent
    return CheckpointError(
        f"Checkpoint file {version / file} is corrupt: {reason}. Delete {version} "
        f"to fall back to an older version, or delete {root} to start over, or "
        "point --resume elsewhere."
    )


def _read(version: pathlib.Path, file: str) -> bytes:
    try:
        return (version / file).read_bytes()
    except FileNotFoundError:
        raise _corrupt(version, file, "the file is missing") from None
    except OSError as error:
        raise _corrupt(
            version, file, f"it cannot be read ({_os_reason(error)})"
        ) from error


def _parse_json(path: pathlib.Path, data: bytes) -> Any:
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as error:
        raise _corrupt(
            path.parent, path.name, f"it is not valid JSON ({error})"
        ) from None


def _verify(version: pathlib.Path) -> tuple[dict[str, bytes], dict[str, Any]]:
    """Read every file of a version, checking each against the manifest."""
    manifest = _parse_manifest(version, _read(version, _MANIFEST))
    contents = {}
    for name, entry in manifest["files"].items():
        data = _read(version, name)
        if len(data) != entry["size"]:
            raise _corrupt(
                version,
                name,
                f"it has {len(data)} bytes but the manifest says {entry['size']} "
                "(truncated or overwritten)",
            )
        if hashlib.sha256(data).hexdigest() != entry["sha256"]:
            raise _corrupt(version, name, "its sha256 does not match the manifest")
        contents[name] = data
    return contents, manifest


def _parse_manifest(version: pathlib.Path, data: bytes) -> dict[str, Any]:
    manifest = _parse_json(version / _MANIFEST, data)

    def bad(reason: str) -> CheckpointError:
        return _corrupt(version, _MANIFEST, reason)

    if not isinstance(manifest, dict) or manifest.get("format") != _FORMAT:
        raise bad("it is not a zoo checkpoint manifest")
    if manifest.get("format_version") != _FORMAT_VERSION:
        raise CheckpointError(
            f"{version / _MANIFEST} has format version "
            f"{manifest.get('format_version')!r}; this zoo reads version "
            f"{_FORMAT_VERSION}. Load it with the zoo version that wrote it."
        )
    files = manifest.get("files")
    if not isinstance(files, dict) or not all(f in files for f in _REQUIRED_FILES):
        raise bad(f"it does not list the files {list(_REQUIRED_FILES)}")
    for name, entry in files.items():
        if name not in _KNOWN_FILES:
            raise bad(f"it lists an unknown file {name!r}")
        if not (
            isinstance(entry, dict)
            and isinstance(entry.get("sha256"), str)
            and _SHA256_RE.fullmatch(entry["sha256"])
            and _is_count(entry.get("size"))
        ):
            raise bad(f"its entry for {name} is malformed")
    leaves = manifest.get("leaves")
    if not isinstance(leaves, dict) or set(leaves) != set(_SECTIONS):
        raise bad(f"its 'leaves' must have the sections {list(_SECTIONS)}")
    for section in _SECTIONS:
        records = leaves[section]
        if section == "opt_state" and records is None:
            continue
        if not isinstance(records, list) or not all(map(_is_record, records)):
            raise bad(f"its {section!r} leaves are malformed")
    if (leaves["opt_state"] is None) == (_OPT_STATE in files):
        raise bad(f"its 'opt_state' leaves and the file {_OPT_STATE} disagree")
    return manifest


def _is_count(value: Any) -> bool:
    return type(value) is int and value >= 0


def _is_record(record: Any) -> bool:
    return (
        isinstance(record, dict)
        and set(record) == {"path", "shape", "dtype"}
        and isinstance(record["path"], str)
        and isinstance(record["dtype"], str)
        and isinstance(record["shape"], list)
        and all(map(_is_count, record["shape"]))
    )


def _parse_trainer(version: pathlib.Path, data: bytes) -> dict[str, Any]:
    trainer = _parse_json(version / _TRAINER, data)

    def bad(reason: str) -> CheckpointError:
        return _corrupt(version, _TRAINER, reason)

    if not isinstance(trainer, dict):
        raise bad("it is not a JSON object")
    if not _is_count(trainer.get("step")):
        raise bad("its 'step' is not an int >= 0")
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
            and all(map(_is_count, spec["shape"]))
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


def _check_x64(version: pathlib.Path, leaves: dict[str, Any]) -> None:
    if jax.config.read("jax_enable_x64"):
        return
    for section in ("model", "state"):
        for record in leaves[section]:
            if record["dtype"] in ("float64", "int64", "uint64", "complex128"):
                raise CheckpointError(
                    f"Checkpoint {section} leaf {record['path']} in {version} is "
                    f"{record['dtype']}, which JAX only loads with 64-bit types on: "
                    "call jax.config.update('jax_enable_x64', True) (or use "
                    "`with jax.enable_x64(True):`) before loading it."
                )


def _check_like(
    like: tuple[AbstractModel, eqx.nn.State],
    config: dict[str, Any],
    leaves: dict[str, Any],
    written_by: str,
) -> tuple[AbstractModel, eqx.nn.State]:
    """Check that ``like`` is the model the checkpoint was written for."""
    if not (isinstance(like, tuple) and len(like) == 2):
        raise TypeError(f"`like` must be a (model, state) tuple, got {type(like)}.")
    model, state = like
    if not isinstance(model, AbstractModel):
        raise TypeError(f"`like` must hold a zoo model, got {type(model)}.")
    problem = _compare_model(leaves, (model, state), "the model expects")
    if problem is None:
        expected = json.loads(json.dumps(model.config(), default=_json_default))
        differences = [
            f"{name}: {config.get(name, '<missing>')!r} in the checkpoint, "
            f"{expected.get(name, '<missing>')!r} in the model"
            for name in sorted(set(config) | set(expected))
            if config.get(name, "<missing>") != expected.get(name, "<missing>")
        ]
        if differences:
            problem = "the checkpoint's config differs from the model's (" + (
                "; ".join(differences) + ")"
            )
    if problem is not None:
        raise CheckpointError(
            f"{_sentence(problem)}; {written_by}. Build the model from that config "
            "(zoo.build_model) to resume it, or point --resume at a checkpoint "
            "of this model."
        )
    return model, state


def _compare_model(leaves: dict[str, Any], structure: Any, expects: str) -> str | None:
    model, state = structure
    return _compare(
        "model", leaves["model"], _leaf_records(model), expects
    ) or _compare("state", leaves["state"], _leaf_records(state), expects)


def _compare(
    what: str,
    saved: list[dict[str, Any]],
    expected: list[dict[str, Any]],
    expects: str,
) -> str | None:
    """Describe the first leaf where ``saved`` and ``expected`` differ, if any.

    ``expects`` completes "... but {expects} shape (256, 784)".
    """

    def show(record: dict[str, Any]) -> str:
        return f"{record['path']} (shape {_shape(record)}, {record['dtype']})"

    for index in range(max(len(saved), len(expected))):
        old = saved[index] if index < len(saved) else None
        new = expected[index] if index < len(expected) else None
        if old == new:
            continue
        if old is None:
            assert new is not None
            return f"the checkpoint has no {what} leaf {show(new)}, but {expects} it"
        if new is None:
            return f"checkpoint {what} leaf {show(old)} is more than {expects}"
        if old["path"] != new["path"]:
            return f"checkpoint {what} leaf {show(old)} is where {expects} {show(new)}"
        if old["shape"] != new["shape"]:
            return (
                f"checkpoint {what} leaf {old['path']} has shape {_shape(old)} but "
                f"{expects} {_shape(new)}"
            )
        hint = ""
        if old["dtype"] == "float64" and not jax.config.read("jax_enable_x64"):
            hint = " (float64 needs jax.config.update('jax_enable_x64', True))"
        return (
            f"checkpoint {what} leaf {old['path']} has dtype {old['dtype']} but "
            f"{expects} {new['dtype']}{hint}"
        )
    return None


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


def _shape(record: dict[str, Any]) -> str:
    return str(tuple(record["shape"]))


def _deserialise(version: pathlib.Path, file: str, data: bytes, structure: Any) -> Any:
    try:
        return eqx.tree_deserialise_leaves(io.BytesIO(data), structure)
    except Exception as error:
        raise _corrupt(version, file, f"its arrays cannot be read ({error})") from error
