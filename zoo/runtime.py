"""Process-wide settings, each an explicit call: ``import zoo`` sets none of them.

Scripts that train on a CPU (``examples/``, ``benchmarks/``) opt in first thing::

    import zoo.runtime

    zoo.runtime.tune_cpu()  # before any JAX computation
    zoo.runtime.enable_compilation_cache()

Their measured effect is on the Performance page. zoo's per-program XLA compile
options are not here: they apply to zoo's own jitted programs only, always.
"""

import os
import pathlib
import platform

import jax

from ._allocator import tune_allocator as _tune_allocator
from ._checks import (
    set_shape_checks as set_shape_checks,
    shape_checks as shape_checks,
    shape_checks_enabled as shape_checks_enabled,
)

__all__ = [
    "compilation_cache_dir",
    "enable_compilation_cache",
    "set_shape_checks",
    "shape_checks",
    "shape_checks_enabled",
    "tune_cpu",
]

_MIN_COMPILE_SECONDS = 0.25
"""Programs that compile faster are not kept (loading one costs time too)."""


def tune_cpu() -> bool:
    """Let XLA:CPU reuse heap memory between steps (glibc's allocator settings).

    Keeps freed heap memory for reuse (at most two malloc arenas, no trimming
    below 512 MiB, no separate mappings under 1 GiB) so a training step does
    not map and fault its buffers afresh on every call. The process keeps its
    peak heap in exchange. Call it before the first JAX computation: the arena
    setting reaches only threads that have not allocated yet.

    Returns:
        Whether the settings are in effect: ``False`` off glibc, or when a
        ``MALLOC_*`` variable or a ``glibc.malloc`` tunable already configures
        the allocator (then it is left alone).
    """
    return _tune_allocator()


def _cpu_name() -> str:
    """The CPU's architecture and model, so a shared home folder never mixes
    programs compiled for different CPUs."""
    model = platform.processor()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            model = next(
                (line.split(":", 1)[1] for line in f if line.startswith("model name")),
                model,
            )
    except OSError:
        pass
    name = "".join(c if c.isalnum() else "-" for c in model.strip()).strip("-")
    return f"{platform.machine() or 'cpu'}-{name or 'unknown'}"[:80]


def compilation_cache_dir() -> pathlib.Path | None:
    """The folder JAX keeps compiled programs in, or ``None`` (JAX's setting)."""
    directory = jax.config.jax_compilation_cache_dir  # pyright: ignore[reportAttributeAccessIssue]
    return None if directory is None else pathlib.Path(directory)


def enable_compilation_cache(
    directory: str | os.PathLike[str] | None = None,
) -> pathlib.Path | None:
    """Keep compiled programs on disk, so a script's second run starts at once.

    Sets JAX's public options ``jax_compilation_cache_dir`` and
    ``jax_persistent_cache_min_compile_time_secs`` (0.25 s). Call it before the
    process's first compilation. Loaded programs are the ones compiled before,
    so results are bit for bit the same.

    Args:
        directory: the folder; by default ``$XDG_CACHE_HOME/zoo/xla/<cpu>``
            (else ``~/.cache/zoo/xla/<cpu>``).

    Returns:
        The folder in use, or ``None`` where JAX's cache is left as it was:
        already configured (``JAX_COMPILATION_CACHE_DIR``) or switched off
        (``JAX_ENABLE_COMPILATION_CACHE=false``).
    """
    enabled = jax.config.jax_enable_compilation_cache  # pyright: ignore[reportAttributeAccessIssue]
    if compilation_cache_dir() is not None or not enabled:
        return None
    if directory is None:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(
            os.path.expanduser("~"), ".cache"
        )
        directory = pathlib.Path(base) / "zoo" / "xla" / _cpu_name()
    path = pathlib.Path(directory).expanduser()
    jax.config.update("jax_compilation_cache_dir", str(path))
    if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
        jax.config.update(
            "jax_persistent_cache_min_compile_time_secs", _MIN_COMPILE_SECONDS
        )
    return path
