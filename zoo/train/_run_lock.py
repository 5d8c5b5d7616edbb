"""One writer per checkpoint directory: an advisory lock held for a whole run.

``fit`` holds the lock of its checkpoint directory from before compiling until
it returns, so a second run into the same directory fails at once with a clear
error instead of interleaving saves (each save also clears the leftovers of
interrupted ones, which would be the other run's files in progress). The lock
is ``fcntl.flock`` on ``.lock`` in the directory: the operating system drops it
when the process ends, however it ends. Where ``fcntl`` is missing (Windows)
there is no lock.
"""

import contextlib
import os
import pathlib
from collections.abc import Iterator

from ._checkpoint_dir import CheckpointError, ensure_writable

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None

LOCK_FILE = ".lock"


@contextlib.contextmanager
def run_lock(directory: str | os.PathLike[str]) -> Iterator[pathlib.Path]:
    """Hold ``directory``'s run lock inside the ``with`` block.

    Raises:
        CheckpointError: another process holds it (the message names its pid).
    """
    root = ensure_writable(directory)
    if fcntl is None:  # pragma: no cover
        yield root
        return
    fd = os.open(root / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            raise CheckpointError(
                f"{root} is in use by another run (process {holder or 'unknown'}) "
                "writing checkpoints there. Wait for it to finish, or give this "
                "run another checkpoint_dir."
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield root
    finally:
        os.close(fd)  # closing the descriptor releases the lock
