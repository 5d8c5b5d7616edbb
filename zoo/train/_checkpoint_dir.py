"""Atomic, versioned checkpoint directories: what a save commits and a load finds.

One run writes into one checkpoint directory. Each save is a complete version
directory, committed atomically:

```
run/
  LATEST              "step_00000123": the current version
  step_00000100/      an older version, kept while `keep` allows
  step_00000123/
    manifest.json     sha256 and size of every other file in the version
    ...               the files themselves (see zoo.train._checkpoint)
```

A save writes the new version into a hidden temporary directory, fsyncs it,
renames it into place and only then points ``LATEST`` at it (itself replaced
atomically), so a crash at any moment leaves the previous version loadable. A
version is *complete* when its manifest is readable and every file it lists has
the listed size and sha256. This module knows nothing of what the files hold.
"""

import contextlib
import dataclasses
import hashlib
import json
import os
import pathlib
import re
import shutil
import uuid
from collections.abc import Callable, Mapping
from typing import Any, BinaryIO

from .._files import atomic_write, create_file, fsync_dir, os_error_in, user_path

FORMAT = "zoo-checkpoint"
FORMAT_VERSION = 1
LATEST = "LATEST"
MANIFEST = "manifest.json"

_HEX = "[0-9a-f]{32}"
_VERSION_RE = re.compile(r"step_(\d{8,})")
_TEMP_RE = re.compile(rf"\.tmp-step_\d{{8,}}-{_HEX}")
_REPLACED_RE = re.compile(rf"\.replaced-(step_\d{{8,}})-{_HEX}")
_DELETING_RE = re.compile(rf"\.deleting-step_\d{{8,}}-{_HEX}")
# ".LATEST.<hex>.tmp" from zoo._files, ".LATEST-<hex>.tmp" from older zoos
_SCRATCH_FILE_RE = re.compile(rf"\.LATEST[.-][0-9a-f]+\.tmp|\.write-test-{_HEX}\.tmp")
_SHA256_RE = re.compile(r"[0-9a-f]{64}")

FileContent = bytes | Callable[[BinaryIO], object]
"""A file of a version: its bytes, or a function that writes them to a file."""


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt, or does not fit what it is loaded into.

    Also raised when a checkpoint directory cannot be created or written. The
    message names the file, leaf or path at fault and says what to do about it.
    """


@dataclasses.dataclass(frozen=True)
class Version:
    """A complete version, read and verified against its manifest.

    Attributes:
        path: the version directory, e.g. ``run/step_00000123``.
        files: the contents of every file the manifest lists, by name.
        manifest: the parsed ``manifest.json``.
    """

    path: pathlib.Path
    files: dict[str, bytes]
    manifest: dict[str, Any]


# --------------------------------------------------------------------------- write


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
    path = user_path(directory)
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
            f"Cannot create the checkpoint directory {path}: {os_reason(error)}. "
            "Choose a directory you can write to."
        ) from error
    probe = path / f".write-test-{uuid.uuid4().hex}.tmp"
    try:
        with create_file(probe) as file:
            file.write(b"zoo")
        probe.unlink()
    except OSError as error:
        raise CheckpointError(
            f"Cannot write checkpoints to {path}: {os_reason(error)}. Check the "
            "directory's permissions and free space, or choose another directory."
        ) from error
    return path


def write_version(
    directory: str | os.PathLike[str],
    step: int,
    files: Mapping[str, FileContent],
    *,
    manifest: Mapping[str, Any],
    keep: int,
) -> pathlib.Path:
    """Commit ``files`` as version ``step_<step>`` of ``directory``, atomically.

    After the commit, leftovers of interrupted saves are removed, and so are old
    versions: the one just written and the ``keep - 1`` versions with the highest
    steps below it stay. A directory holding a later step than ``step`` (another
    run's) is refused before anything is written: nothing is deleted that was
    not asked for. Writing the same step again replaces that version, also
    atomically. Entries that are not checkpoint versions are left alone.

    Args:
        directory: the run's checkpoint directory (created if needed).
        step: the version's step (>= 0).
        files: file name to content; ``manifest.json`` is written beside them.
        manifest: more JSON entries for the manifest (beside the format and the
            files' sizes and hashes).
        keep: how many versions to keep (>= 1).

    Returns:
        The path of the version directory just written.

    Raises:
        CheckpointError: the directory cannot be created or written (the message
            names the path and the operating system's error), or it holds a
            later step.
    """
    root = ensure_writable(directory)
    _recover_replaced(root)
    later = sorted(
        found
        for entry in _entries(root)
        if (found := _version_step(entry.name)) is not None and found > step
    )
    if later:
        raise CheckpointError(
            f"Not saving step {step} in {root}: it holds step {later[-1]}, later "
            "than this one (another run's checkpoints?). Save into another "
            "directory, or delete those versions yourself; nothing was changed."
        )
    name = f"step_{step:08d}"
    final = root / name
    temp = root / f".tmp-{name}-{uuid.uuid4().hex}"
    aside: pathlib.Path | None = None
    committed = False
    writing = final
    try:
        temp.mkdir()
        records = {}
        for file, data in files.items():
            writing = final / file
            records[file] = _write_file(temp / file, data)
        writing = final / MANIFEST
        content = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "files": records,
            **manifest,
        }
        _write_file(temp / MANIFEST, json.dumps(content, indent=1).encode())
        fsync_dir(temp)
        if final.exists():
            # Saving a step again: move the old version aside (where the loader
            # still finds it) so that the new one can take its name.
            aside = root / f".replaced-{name}-{uuid.uuid4().hex}"
            os.replace(final, aside)
        os.replace(temp, final)
        fsync_dir(root)
        committed = True
        atomic_write(root / LATEST, f"{name}\n".encode())
        fsync_dir(root)
    except Exception as error:
        if not committed:
            shutil.rmtree(temp, ignore_errors=True)
            if aside is not None and not final.exists():
                # If this fails too, the loader and the next save find it aside.
                with contextlib.suppress(OSError):
                    os.replace(aside, final)
        cause = os_error_in(error)
        if cause is not None:
            where = "" if cause.filename is not None else f" (writing {writing})"
            raise CheckpointError(
                f"Could not save the checkpoint for step {step} in {root}: "
                f"{os_reason(cause)}{where}. The previous checkpoint is intact"
                f"{'' if committed else '; nothing of this one was kept'}."
            ) from error
        raise
    _clean_up(root, keep_name=name, keep=keep)
    return final


class _HashingWriter:
    """A binary file wrapper that hashes and counts what is written through it."""

    def __init__(self, file: BinaryIO):
        self.file = file
        self.sha256 = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes, /) -> int:
        self.sha256.update(data)
        self.size += memoryview(data).nbytes
        return self.file.write(data)


def _write_file(path: pathlib.Path, content: FileContent) -> dict[str, Any]:
    """Write a new file durably; return its manifest entry (sha256 and size)."""
    with create_file(path) as file:
        writer = _HashingWriter(file)
        if isinstance(content, bytes):
            writer.write(content)
        else:
            content(writer)  # pyright: ignore[reportArgumentType]
        file.flush()
        os.fsync(file.fileno())
    return {"sha256": writer.sha256.hexdigest(), "size": writer.size}


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
        fsync_dir(root)


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


def _first_non_directory(path: pathlib.Path) -> pathlib.Path:
    for candidate in [*reversed(path.parents), path]:
        if candidate.exists() and not candidate.is_dir():
            return candidate
    return path


def os_reason(error: OSError) -> str:
    """The operating system's reason for ``error``, with the file it concerns."""
    reason = error.strerror or str(error) or type(error).__name__
    if error.filename is not None:
        reason = f"{reason} ({error.filename})"
    return reason


# --------------------------------------------------------------------------- read


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
    root = user_path(directory)
    if not root.is_dir():
        return None
    return _resolve(root)[0]


def read_version(directory: str | os.PathLike[str]) -> Version:
    """Read and verify the current version of ``directory``.

    Args:
        directory: a run's checkpoint directory (see [`latest_checkpoint`][]
            for which version is read), or one version directory inside it.

    Returns:
        The [`Version`][], every file checked against the manifest.

    Raises:
        CheckpointError: no checkpoint in ``directory``, or a file of the version
            ``LATEST`` names is missing, truncated or corrupt (named, with what
            to do).
    """
    root = user_path(directory)
    if (root / MANIFEST).is_file():
        return _verify(root)  # a version directory itself
    if not root.exists():
        raise CheckpointError(
            f"No checkpoint at {root}: the directory does not exist. Check the "
            "path, or start a new run there."
        )
    if not root.is_dir():
        raise CheckpointError(
            f"No checkpoint at {root}: it is a file, not a checkpoint directory."
        )
    path, version, failure = _resolve(root)
    if path is None:
        detail = f" The newest version failed: {failure}" if failure else ""
        nested = [d for d in _entries(root) if d.is_dir() and latest_checkpoint(d)]
        detail += f" Did you mean {sorted(nested)[0]}?" if nested else ""
        raise CheckpointError(
            f"No complete checkpoint in {root}: no valid {LATEST} file and no "
            f"step_* version whose files match its manifest.{detail}"
        )
    return version if version is not None else _verify(path)


def _resolve(
    root: pathlib.Path,
) -> tuple[pathlib.Path | None, Version | None, CheckpointError | None]:
    """The current version's path, the version if already read, and why not.

    ``LATEST`` wins when it names an existing version directory (which is then
    verified when loaded, so that corruption is reported, not skipped). Otherwise
    the newest complete version is taken: committed versions, then versions that a
    crashed save of the same step had moved aside.
    """
    try:
        with open(root / LATEST, "rb") as file:
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


def corrupt(version: pathlib.Path, file: str, reason: str) -> CheckpointError:
    """The error for a damaged file of a version, saying what to do."""
    root = version.parent
    return CheckpointError(
        f"Checkpoint file {version / file} is corrupt: {reason}. Delete {version} "
        f"to fall back to an older version, or delete {root} to start over, or "
        "resume from another checkpoint directory."
    )


def _read(version: pathlib.Path, file: str) -> bytes:
    try:
        return (version / file).read_bytes()
    except FileNotFoundError:
        raise corrupt(version, file, "the file is missing") from None
    except OSError as error:
        raise corrupt(
            version, file, f"it cannot be read ({os_reason(error)})"
        ) from error


def parse_json(version: pathlib.Path, file: str, data: bytes) -> Any:
    """``data``, the content of ``version / file``, parsed as JSON.

    Raises:
        CheckpointError: it is not valid JSON.
    """
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as error:
        raise corrupt(version, file, f"it is not valid JSON ({error})") from None


def _verify(version: pathlib.Path) -> Version:
    """Read every file of a version, checking each against the manifest."""
    manifest = _parse_manifest(version, _read(version, MANIFEST))
    contents = {}
    for name, entry in manifest["files"].items():
        data = _read(version, name)
        if len(data) != entry["size"]:
            raise corrupt(
                version,
                name,
                f"it has {len(data)} bytes but the manifest says {entry['size']} "
                "(truncated or overwritten)",
            )
        if hashlib.sha256(data).hexdigest() != entry["sha256"]:
            raise corrupt(version, name, "its sha256 does not match the manifest")
        contents[name] = data
    return Version(version, contents, manifest)


def _parse_manifest(version: pathlib.Path, data: bytes) -> dict[str, Any]:
    manifest = parse_json(version, MANIFEST, data)
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise corrupt(version, MANIFEST, "it is not a zoo checkpoint manifest")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{version / MANIFEST} has format version "
            f"{manifest.get('format_version')!r}; this zoo reads version "
            f"{FORMAT_VERSION}. Load it with the zoo version that wrote it."
        )
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise corrupt(version, MANIFEST, "it has no 'files' object")
    for name, entry in files.items():
        if not (
            isinstance(entry, dict)
            and isinstance(entry.get("sha256"), str)
            and _SHA256_RE.fullmatch(entry["sha256"])
            and is_count(entry.get("size"))
        ):
            raise corrupt(version, MANIFEST, f"its entry for {name} is malformed")
        if name == MANIFEST or pathlib.PurePath(name).name != name:
            raise corrupt(version, MANIFEST, f"it lists a bad file name {name!r}")
    return manifest


def is_count(value: Any) -> bool:
    """Whether ``value`` is an ``int >= 0`` (and not a ``bool``)."""
    return type(value) is int and value >= 0
