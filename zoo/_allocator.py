"""The C allocator's settings for training on a CPU: heap memory is kept and reused.

XLA:CPU allocates every intermediate of a compiled step afresh on each call
(activations, gradients, convolution scratch: tens of MiB a step for a CNN at
batch 128) and frees it at the end. With glibc's defaults those blocks come from
per-thread arenas whose heaps are unmapped when they empty and mapped again on
the next call, so every step touches tens of MiB of new pages: about 8,000 page
faults, and 1.14x the step's time, for the ``cnn`` preset on a 2-core CPU (see
the Performance page).

:func:`tune_allocator` (run when this module is imported, first thing in
``import zoo``) tells glibc to keep freed memory for reuse: at most
:data:`ARENAS` (2) arenas, the main thread's and one that all other threads
share, no trimming of the heap below :data:`TRIM_THRESHOLD` (512 MiB), no
separate mapping for blocks under :data:`MMAP_THRESHOLD` (1 GiB), and a
:data:`TOP_PAD` (64 MiB) that keeps the shared arena's heaps (64 MiB each) from
being unmapped when they empty: without it, a step whose blocks filled one more
heap mapped and faulted it afresh on every call. With one
arena for every thread, compiling (many threads, many small blocks) took
1.2-1.5x as long, and the Python thread's blocks and XLA's shared one heap,
where ``malloc`` sometimes spent 6 % of a training step searching. A thread's
arena other than the main one grows in heaps of 64 MiB, so a single block
larger than that (an evaluation's intermediates at a large batch) is still
mapped afresh on each call. The cost is that the process keeps its peak heap
(up to the trim threshold more than it uses) instead of giving it back between
steps. It changes nothing else, and nothing at all off glibc (macOS, Windows,
musl).

The arena setting only reaches threads that have not allocated yet, so it must
run before the first JAX computation: ``import zoo`` before running any JAX
code. Set ``ZOO_TUNE_ALLOCATOR=0`` to leave the allocator as it is; it is left
alone too when a ``MALLOC_*`` variable (``MALLOC_ARENA_MAX``, ...) or a
``glibc.malloc`` tunable in ``GLIBC_TUNABLES`` says how you want it.
"""

import ctypes
import ctypes.util
import os
import sys

M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8

ARENAS = 2
"""Malloc arenas at most: the main thread's, and one that all other threads share."""
TRIM_THRESHOLD = 512 * 2**20
"""Free memory at the top of the heap kept for reuse before any is returned (bytes)."""
MMAP_THRESHOLD = 2**30
"""Blocks this large or larger get their own mapping (bytes)."""
TOP_PAD = 64 * 2**20
"""Free memory an arena keeps past its top (bytes). At glibc's heap size (64 MiB)
no heap of a thread's arena is ever empty enough to unmap; the main arena's
heap grows by this much more address space (not memory) at a time."""
MMAP_THRESHOLD_FALLBACK = 32 * 2**20
"""Used where glibc refuses :data:`MMAP_THRESHOLD` (its limit in some versions)."""

_applied: bool | None = None


def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.gnu_get_libc_version  # noqa: B018 (only glibc has it)
    except (OSError, AttributeError):
        return None
    return libc


def _user_configured() -> bool:
    """Whether the environment already says how the allocator should behave."""
    setting = os.environ.get("ZOO_TUNE_ALLOCATOR", "1").strip().lower()
    if setting in ("0", "false", "no"):
        return True
    if any(k.startswith("MALLOC_") for k in os.environ):
        return True  # glibc's MALLOC_ARENA_MAX, MALLOC_TRIM_THRESHOLD_, ...
    return "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", "")


def tune_allocator() -> bool:
    """Apply the settings above once; return whether they are in effect.

    ``False`` off glibc, when the environment configures the allocator itself
    or sets ``ZOO_TUNE_ALLOCATOR=0``, or when glibc refused a setting.
    """
    global _applied
    if _applied is not None:
        return _applied
    libc = None if _user_configured() else _glibc()
    if libc is None:
        _applied = False
        return False
    mallopt = libc.mallopt
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    arenas = mallopt(M_ARENA_MAX, ARENAS) == 1
    trim = mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    pad = mallopt(M_TOP_PAD, TOP_PAD) == 1
    mmap = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 or (
        mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_FALLBACK) == 1
    )
    applied = arenas and trim and pad and mmap
    _applied = applied
    return applied


def allocator_tuned() -> bool:
    """Whether ``import zoo`` tuned the C allocator (see :func:`tune_allocator`)."""
    return bool(_applied)


tune_allocator()
