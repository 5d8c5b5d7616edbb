"""The IDX file format (MNIST's), plain or gzip-compressed.

An IDX file is a big-endian header followed by raw array data::

    magic   4 bytes: 0x00 0x00 <dtype code> <number of dimensions>
    dims    one big-endian uint32 per dimension
    data    prod(dims) items of the dtype, big-endian, C order

MNIST uses ``0x00000801`` (uint8, 1-D: labels) and ``0x00000803`` (uint8, 3-D:
images). Every problem with a file's contents raises :class:`DataError`.
"""

import gzip
import io
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


# A deflate stream expands at most 1032 times (258 bytes from each 2-bit
# code, RFC 1951); a header declaring more than that is refused unread.
_MAX_GZIP_RATIO = 1032


class _Plain:
    """Reads ``raw`` as it is, without copying (``uint8`` data stays a view)."""

    def __init__(self, raw: bytes) -> None:
        self.view = memoryview(raw)
        self.position = 0

    def read(self, size: int) -> bytes | memoryview:
        chunk = self.view[self.position : self.position + size]
        self.position += len(chunk)
        return chunk


def parse_idx(raw: bytes, *, name: str = "<bytes>") -> np.ndarray:
    """Parse the bytes of an IDX file (gzip-compressed or not) into an array.

    Compression is detected from the gzip magic bytes, so ``.gz`` and plain
    files are both accepted. A compressed file is decompressed only as far as
    its header declares: a stream that goes on past the data is refused
    without being decompressed further, and a header that declares more data
    than its compressed bytes could hold is refused before anything is read.

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
    compressed = raw[:2] == _GZIP_MAGIC
    try:
        if compressed:
            with gzip.GzipFile(fileobj=io.BytesIO(raw)) as file:
                return _parse(file, name, len(raw))
        return _parse(_Plain(raw), name, None)
    except (OSError, EOFError, zlib.error) as error:
        raise _fail(name, f"bad gzip data ({error})") from None


def _parse(
    file: gzip.GzipFile | _Plain, name: str, compressed_size: int | None
) -> np.ndarray:
    """Read one IDX file from ``file``, never more than its header declares."""
    head = file.read(4)
    if len(head) < 4:
        raise _fail(name, f"only {len(head)} bytes, too short for an IDX header")
    zero0, zero1, code, ndim = bytes(head)
    if zero0 != 0 or zero1 != 0:
        raise _fail(
            name, f"bad magic number 0x{bytes(head).hex()} (an IDX file starts 0x0000)"
        )
    if code not in IDX_DTYPES:
        known = ", ".join(f"0x{c:02x}" for c in IDX_DTYPES)
        raise _fail(name, f"unknown IDX dtype code 0x{code:02x} (known: {known})")
    if ndim == 0:
        raise _fail(name, "IDX header declares zero dimensions")
    header_size = 4 + 4 * ndim
    raw_dims = bytes(file.read(4 * ndim))
    if len(raw_dims) < 4 * ndim:
        raise _fail(
            name,
            f"truncated header: {ndim} dimensions need {header_size} bytes, "
            f"got {4 + len(raw_dims)}",
        )
    dims = tuple(
        int.from_bytes(raw_dims[4 * i : 4 * i + 4], "big") for i in range(ndim)
    )
    dtype = IDX_DTYPES[code]
    count = math.prod(dims)
    expected = count * dtype.itemsize
    if compressed_size is not None and (
        header_size + expected > _MAX_GZIP_RATIO * compressed_size + 1024
    ):
        raise _fail(
            name,
            f"truncated data: header says shape {dims} ({expected} bytes), more "
            f"than {compressed_size} gzip-compressed bytes can hold",
        )
    if compressed_size is None and isinstance(file, _Plain):
        actual = len(file.view) - header_size
        if actual > expected:
            raise _fail(
                name,
                f"{actual - expected} trailing bytes after the data of shape {dims}",
            )
    data = file.read(expected) if expected else b""
    if len(data) < expected:
        raise _fail(
            name,
            f"truncated data: header says shape {dims} ({expected} bytes), "
            f"only {len(data)} bytes follow",
        )
    if file.read(1):
        raise _fail(
            name,
            f"trailing bytes after the data of shape {dims}: the file decompresses "
            f"to more than the {header_size + expected} bytes its header declares",
        )
    array = np.frombuffer(data, dtype=dtype, count=count).reshape(dims)
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
