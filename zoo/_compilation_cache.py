"""XLA's compiled programs kept on disk, so a script's second run starts at once.

A CNN's first training step on a CPU waits seconds for XLA: the ``cnn`` preset
at batch 128 spends about 0.5 s compiling its initialisers, 2 s its training
step and 0.2 s its evaluation on a 2-core CPU, on every run, although the
programs are the same each time. JAX can keep compiled programs in a folder and
load them instead (its persistent compilation cache), but only when asked;
``import zoo`` asks (:func:`enable_compilation_cache`), in

* ``$ZOO_COMPILATION_CACHE`` if it names a folder; ``0`` (or ``false``, ``no``,
  ``off``) leaves the cache off;
* else ``$XDG_CACHE_HOME/zoo/xla``, else ``~/.cache/zoo/xla``;

under a subfolder per CPU (its architecture, model and instruction set), since
XLA compiles for the CPU it runs on and a home folder can be shared between
machines. Programs that compiled in under :data:`MIN_COMPILE_SECONDS` are not
kept, and the least recently used go once a subfolder holds :data:`MAX_BYTES`.
Each entry is written to a temporary file and renamed into place, so a process
killed mid-write leaves no partial entry (zoo's :class:`DiskCache` serves its
folder through JAX's own hook for a cache's store,
``jax._src.compilation_cache.get_file_cache``; a JAX without that hook gets no
cache from zoo). JAX's key for a program covers the
program, the JAX and XLA versions, ``XLA_FLAGS`` and the compile options: a
changed model, batch size or setting compiles afresh, and a loaded program is
the one compiled before, so results are bit for bit the same.

zoo leaves JAX's cache alone when you configured it yourself
(``JAX_COMPILATION_CACHE_DIR``, ``jax_compilation_cache_dir`` or
``JAX_ENABLE_COMPILATION_CACHE=false``) and when the folder cannot be written.
Import zoo before the process's first JAX compilation: JAX decides then whether
it uses a cache.
"""

import contextlib
import hashlib
import os
import pathlib
import platform
import tempfile
import time
from typing import Any

import jax

ENVIRONMENT_VARIABLE = "ZOO_COMPILATION_CACHE"
MIN_COMPILE_SECONDS = 0.25
"""Programs that compiled faster are not written (loading one costs time too)."""
MAX_BYTES = 2**30
"""A cache folder's size bound; the least recently used programs go first."""
STALE_WRITE_SECONDS = 3600
"""A temporary file this old is a write that a killed process left behind."""
_OFF = ("0", "false", "no", "off")
_SUFFIX = ".xla"

_directory: pathlib.Path | None = None


class DiskCache:
    """Compiled programs as files in ``path``, written atomically, bounded in size.

    JAX's cache interface: ``get(key) -> bytes | None`` and ``put(key, value)``.
    A read marks the file used (its modification time); a write that would
    take the folder past ``max_bytes`` first removes the least recently used
    files. The folder is counted on a process's first write and again when its
    own writes since would pass ``max_bytes``, so other processes' writes in
    between may take it over for a while. Files removed or replaced by another
    process read as a miss.
    """

    def __init__(self, path: str | os.PathLike[str], max_bytes: int = MAX_BYTES):
        self._path = pathlib.Path(path)
        self._path.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self._bytes: int | None = None  # as last counted, plus writes since

    def _file(self, key: str) -> pathlib.Path:
        if not key or "/" in key or key.startswith("."):
            raise ValueError(f"not a cache key: {key!r}")
        return self._path / f"{key}{_SUFFIX}"

    def get(self, key: str) -> bytes | None:
        file = self._file(key)
        try:
            value = file.read_bytes()
        except OSError:  # absent, or removed by another process meanwhile
            return None
        with contextlib.suppress(OSError):  # a read-only folder still serves
            os.utime(file)  # recently used
        return value

    def put(self, key: str, value: bytes) -> None:
        file = self._file(key)
        if file.exists() or len(value) > self.max_bytes:
            return
        self._path.mkdir(parents=True, exist_ok=True)  # if removed meanwhile
        if self._bytes is None or self._bytes + len(value) > self.max_bytes:
            self._bytes = self._make_room(len(value))
        handle, temporary = tempfile.mkstemp(dir=self._path, prefix=".writing-")
        try:
            with os.fdopen(handle, "wb") as f:
                f.write(value)
            os.replace(temporary, file)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
        self._bytes += len(value)

    def _make_room(self, incoming: int) -> int:
        """Remove least recently used entries until ``incoming`` bytes fit.

        Returns the bytes of the entries left.
        """
        entries = []
        for file in self._path.glob(f"*{_SUFFIX}"):
            with contextlib.suppress(OSError):
                stat = file.stat()
                entries.append((stat.st_mtime_ns, stat.st_size, file))
        for stale in self._path.glob(".writing-*"):  # left by a killed process
            with contextlib.suppress(OSError):
                if stale.stat().st_mtime < time.time() - STALE_WRITE_SECONDS:
                    stale.unlink()
        total = sum(size for _, size, _ in entries)
        for _, size, file in sorted(entries):
            if total + incoming <= self.max_bytes:
                break
            with contextlib.suppress(OSError):
                file.unlink()
            total -= size
        return total

    def clear(self) -> None:
        for file in self._path.glob(f"*{_SUFFIX}"):
            with contextlib.suppress(OSError):
                file.unlink()


def default_directory() -> pathlib.Path:
    """``$XDG_CACHE_HOME/zoo/xla``, else ``~/.cache/zoo/xla``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(
        os.path.expanduser("~"), ".cache"
    )
    return pathlib.Path(base) / "zoo" / "xla"


def cpu_fingerprint() -> str:
    """A short name for this host's CPU: its architecture, model and features."""
    facts = [platform.machine(), platform.processor()]
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith(("model name", "flags", "Features")):
                    facts.append(line.strip())
                if not line.strip():  # the first processor tells enough
                    break
    except OSError:
        pass  # not Linux: the architecture and platform.processor() stand
    digest = hashlib.sha256("\n".join(facts).encode()).hexdigest()[:12]
    return f"{platform.machine() or 'cpu'}-{digest}"


def _jax_cache_module() -> Any:
    """JAX's cache internals, or ``None`` if they are not as zoo expects."""
    try:
        from jax._src import compilation_cache
    except ImportError:
        return None
    if not callable(getattr(compilation_cache, "get_file_cache", None)):
        return None
    return compilation_cache


def _user_configured() -> bool:
    """Whether JAX's cache was set up (or switched off) outside zoo."""
    return (
        jax.config.jax_compilation_cache_dir is not None  # pyright: ignore[reportAttributeAccessIssue]
        or not jax.config.jax_enable_compilation_cache  # pyright: ignore[reportAttributeAccessIssue]
    )


def enable_compilation_cache() -> pathlib.Path | None:
    """Keep compiled programs in zoo's folder for this CPU (see the module doc).

    Returns the folder, or ``None`` where JAX's cache stays as it was: switched
    off with ``ZOO_COMPILATION_CACHE=0``, configured in JAX already, the folder
    cannot be written, or this JAX's cache internals are not the ones zoo
    knows. Nothing is raised: programs then compile as usual.
    """
    global _directory
    setting = os.environ.get(ENVIRONMENT_VARIABLE, "").strip()
    module = _jax_cache_module()
    if setting.lower() in _OFF or module is None or _user_configured():
        return None
    base = pathlib.Path(setting).expanduser() if setting else default_directory()
    directory = base / cpu_fingerprint()
    try:
        cache = DiskCache(directory)
        with tempfile.TemporaryFile(dir=directory):
            pass  # writable
    except OSError:
        return None
    jax_get_file_cache = module.get_file_cache

    def get_file_cache(path: str) -> tuple[Any, str] | None:
        if pathlib.Path(path) == directory:
            return cache, path
        return jax_get_file_cache(path)  # a folder set later, by hand

    module.get_file_cache = get_file_cache
    jax.config.update("jax_compilation_cache_dir", str(directory))
    if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
        jax.config.update(
            "jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECONDS
        )
    _directory = directory
    return directory


def compilation_cache_dir() -> pathlib.Path | None:
    """The folder where ``import zoo`` keeps compiled programs, or ``None``.

    ``None`` when zoo left JAX's persistent compilation cache alone (see
    ``zoo._compilation_cache``): ``ZOO_COMPILATION_CACHE=0``, a cache you
    configured in JAX yourself, or a folder that cannot be written.
    """
    return _directory


enable_compilation_cache()
