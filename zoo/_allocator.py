"""glibc's allocator settings that let XLA:CPU reuse heap memory between steps.

Applied only by :func:`zoo.runtime.tune_cpu`; never at import.
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
"""Free memory an arena keeps past its top (bytes)."""
MMAP_THRESHOLD_FALLBACK = 32 * 2**20
"""Used where glibc refuses :data:`MMAP_THRESHOLD` (its limit in some versions)."""

_applied = False


def glibc() -> ctypes.CDLL | None:
    """The C library when it is glibc, else ``None``."""
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


def user_configured() -> bool:
    """Whether the environment already says how the allocator should behave."""
    if any(k.startswith("MALLOC_") for k in os.environ):
        return True  # glibc's MALLOC_ARENA_MAX, MALLOC_TRIM_THRESHOLD_, ...
    return "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", "")


def tune_allocator() -> bool:
    """Apply the settings above once; return whether they are in effect."""
    global _applied
    if _applied:
        return True
    libc = None if user_configured() else glibc()
    if libc is None:
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
    _applied = arenas and trim and pad and mmap
    return _applied
