"""The IDX file format (MNIST's), plain or gzip-compressed.

An IDX file is a big-endian header followed by raw array data::

    magic   4 bytes: 0x00 0x00 <dtype code> <number of dimensions>
    dims    one big-endian uint32 per dimension
    data    prod(dims) items of the dtype, big-endian, C order

MNIST uses ``0x00000801`` (uint8, 1-D: labels) and ``0x00000803`` (uint8, 3-D:
images). Every problem with a file's contents raises :class:`DataError`.
"""

import gzip
import math
import os
import zlib
from pathlib import Path

import numpy as np

_GZIP_MAGIC = b"\x1f\x8b"

IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
"""IDX dtype codes (third byte of the magic number) and their big-endian dtypes."""

_REMEDY = (
    "The file is corrupt or incomplete: delete it and run again to re-download, "
    "or set ZOO_DATA_DIR to a folder holding good copies."
)


class DataError(ValueError):
    """A data file is missing, corrupt, truncated or failed verification.

    The message names the file and says what to do: usually delete the file and
    run again so it is downloaded afresh, or point ``ZOO_DATA_DIR`` at a folder
    with good copies.
    """


def _fail(name: str, problem: str) -> DataError:
    return DataError(f"{name}: {problem}. {_REMEDY}")


def _decompress(raw: bytes, name: str) -> bytes:
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as error:
        raise _fail(name, f"bad gzip data ({error})") from None


def parse_idx(raw: bytes, *, name: str = "<bytes>") -> np.ndarray:
    """Parse the bytes of an IDX file (gzip-compressed or not) into an array.

    Compression is detected from the gzip magic bytes, so ``.gz`` and plain
    files are both accepted.

    Args:
        raw: the whole file's bytes.
        name: how to name the data in error messages (a path, usually).

    Returns:
        An array of shape ``dims`` read from the header, in native byte order.
        ``uint8`` data is a read-only view of the (decompressed) bytes.

    Raises:
        DataError: bad gzip data, a bad magic number, an unknown dtype code, or
            a data size that does not match the header (truncated file or
            trailing bytes).
    """
    if raw[:2] == _GZIP_MAGIC:
        raw = _decompress(raw, name)
    if len(raw) < 4:
        raise _fail(name, f"only {len(raw)} bytes, too short for an IDX header")
    zero0, zero1, code, ndim = raw[:4]
    if zero0 != 0 or zero1 != 0:
        raise _fail(
            name, f"bad magic number 0x{raw[:4].hex()} (an IDX file starts 0x0000)"
        )
    if code not in IDX_DTYPES:
        known = ", ".join(f"0x{c:02x}" for c in IDX_DTYPES)
        raise _fail(name, f"unknown IDX dtype code 0x{code:02x} (known: {known})")
    if ndim == 0:
        raise _fail(name, "IDX header declares zero dimensions")
    header_size = 4 + 4 * ndim
    if len(raw) < header_size:
        raise _fail(
            name,
            f"truncated header: {ndim} dimensions need {header_size} bytes, "
            f"got {len(raw)}",
        )
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = IDX_DTYPES[code]
    expected = math.prod(dims) * dtype.itemsize
    actual = len(raw) - header_size
    if actual < expected:
        raise _fail(
            name,
            f"truncated data: header says shape {dims} ({expected} bytes), "
            f"only {actual} bytes follow",
        )
    if actual > expected:
        raise _fail(
            name,
            f"{actual - expected} trailing bytes after the data of shape {dims}",
        )
    array = np.frombuffer(raw, dtype=dtype, count=math.prod(dims), offset=header_size)
    array = array.reshape(dims)
    if not dtype.isnative and dtype.itemsize > 1:
        array = array.astype(dtype.newbyteorder("="))
    return array


def read_idx(
    source: bytes | bytearray | memoryview | str | os.PathLike[str],
) -> np.ndarray:
    """Read an IDX file, gzip-compressed or not, from bytes or a path.

    Example:
        >>> raw = bytes([0, 0, 0x08, 1, 0, 0, 0, 3, 7, 8, 9])
        >>> read_idx(raw)
        array([7, 8, 9], dtype=uint8)

    Args:
        source: the file's bytes (any bytes-like object), or the path to it.

    Returns:
        The array stored in the file, with the shape its header declares, in
        native byte order (``uint8`` data is read-only).

    Raises:
        DataError: the contents are not a valid IDX file (see :func:`parse_idx`).
        OSError: the path cannot be read (for example, it does not exist).
    """
    if isinstance(source, bytes | bytearray | memoryview):
        return parse_idx(bytes(source))
    path = Path(source)
    return parse_idx(path.read_bytes(), name=str(path))
