"""Atomic file writes: the one way zoo puts a file on disk.

A file is written under a hidden temporary name in its final folder, flushed and
fsynced, then renamed over the target, so a reader (or a crash at any moment)
sees either the old file or the complete new one, never half of it. On any
error the temporary file is removed and the target is left as it was.

One rule for permissions: a new file gets ``0o666`` less the process's umask,
as ``open(path, "w")`` would give it (``tempfile.mkstemp`` would give ``0o600``).
"""

import os
import pathlib
import secrets
from collections.abc import Callable
from typing import BinaryIO

FILE_MODE = 0o666
"""Mode requested for every file zoo writes; the umask applies."""


def user_path(path: str | os.PathLike[str]) -> pathlib.Path:
    """A path as the user gave it, ``~`` expanded as a shell would: every path
    argument of zoo's public functions goes through it."""
    return pathlib.Path(path).expanduser()


def temporary_path(target: pathlib.Path, suffix: str = ".tmp") -> pathlib.Path:
    """A fresh hidden name beside ``target`` for writing it before the rename."""
    return target.with_name(f".{target.name}.{secrets.token_hex(8)}{suffix}")


def fsync_dir(path: pathlib.Path) -> None:
    """Make a rename inside directory ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def create_file(path: pathlib.Path) -> BinaryIO:
    """Open a new file for binary writing with zoo's permissions; fails if it exists."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    return os.fdopen(os.open(path, flags, FILE_MODE), "wb")


def atomic_write(
    path: str | os.PathLike[str],
    content: bytes | Callable[[BinaryIO], object],
    *,
    suffix: str = ".tmp",
) -> pathlib.Path:
    """Write ``content`` to ``path`` atomically.

    Args:
        path: the file to create or replace; its folder must exist.
        content: the bytes, or a function that writes them to a binary file.
        suffix: suffix of the hidden temporary file (``.part`` for downloads).

    Returns:
        ``path`` as a ``pathlib.Path``.

    Raises:
        OSError: the folder is missing or not writable, or the disk is full;
            nothing is left behind.
    """
    target = pathlib.Path(path)
    temp = temporary_path(target, suffix)
    try:
        with create_file(temp) as file:
            if isinstance(content, bytes | bytearray | memoryview):
                file.write(content)
            else:
                content(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return target


def os_error_in(error: BaseException) -> OSError | None:
    """The ``OSError`` behind ``error``: itself, or one it was raised from.

    Equinox's ``tree_serialise_leaves`` wraps a failed write (a full disk) in
    its own error naming the leaf; the operating system's error is its
    ``__cause__`` (or ``__context__``). Found by walking that chain, never by
    reading messages.
    """
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, OSError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None
