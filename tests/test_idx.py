"""The IDX reader: valid files parse, every kind of damage raises DataError."""

import contextlib
import gzip
import pathlib
import struct
import tracemalloc
import zlib

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from zoo.data import DataError, read_idx
from zoo.data._idx import parse_idx


def _idx(array: np.ndarray, code: int) -> bytes:
    """Encode ``array`` as an IDX file with dtype ``code``."""
    header = bytes([0, 0, code, array.ndim])
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


LABELS = np.array([5, 0, 4, 1, 9], np.uint8)
IMAGES = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)


def test_labels_round_trip() -> None:
    raw = _idx(LABELS, 0x08)
    assert raw[:4] == b"\x00\x00\x08\x01"
    out = read_idx(raw)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, LABELS)
    np.testing.assert_array_equal(read_idx(bytearray(raw)), LABELS)
    np.testing.assert_array_equal(read_idx(memoryview(raw)), LABELS)


def test_images_round_trip_gzip() -> None:
    raw = gzip.compress(_idx(IMAGES, 0x08))
    out = read_idx(raw)
    assert out.shape == (2, 3, 4)
    np.testing.assert_array_equal(out, IMAGES)
    assert not out.flags.writeable


@pytest.mark.parametrize(
    ("code", "dtype"),
    [
        (0x09, np.int8),
        (0x0B, np.int16),
        (0x0C, np.int32),
        (0x0D, np.float32),
        (0x0E, np.float64),
    ],
)
def test_general_dtype_codes(code: int, dtype: type) -> None:
    array = (np.arange(12) - 6).astype(dtype).reshape(3, 4)
    out = read_idx(_idx(array, code))
    assert out.dtype == np.dtype(dtype)
    assert out.dtype.isnative
    np.testing.assert_array_equal(out, array)


def test_reads_paths(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "labels-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(_idx(LABELS, 0x08)))
    np.testing.assert_array_equal(read_idx(path), LABELS)
    np.testing.assert_array_equal(read_idx(str(path)), LABELS)


def test_mnist_files(data_dir: pathlib.Path) -> None:
    labels = read_idx(data_dir / "mnist" / "t10k-labels-idx1-ubyte.gz")
    assert labels.shape == (10_000,)
    assert labels.dtype == np.uint8
    assert set(np.unique(labels)) == set(range(10))


def _assert_data_error(raw: bytes, match: str) -> None:
    with pytest.raises(DataError, match=match) as info:
        parse_idx(raw, name="some/file.gz")
    message = str(info.value)
    assert "some/file.gz" in message
    assert "delete it" in message
    assert "ZOO_DATA_DIR" in message


def test_bad_magic() -> None:
    _assert_data_error(b"\x12\x34" + _idx(LABELS, 0x08)[2:], "bad magic")


def test_unknown_dtype_code() -> None:
    _assert_data_error(b"\x00\x00\x07\x01" + _idx(LABELS, 0x08)[4:], "dtype code")


def test_zero_dimensions() -> None:
    _assert_data_error(b"\x00\x00\x08\x00", "zero dimensions")


def test_too_short_for_header() -> None:
    _assert_data_error(b"\x00\x00", "too short")
    _assert_data_error(b"", "too short")


def test_truncated_header() -> None:
    _assert_data_error(_idx(IMAGES, 0x08)[:10], "truncated header")


def test_truncated_data() -> None:
    _assert_data_error(_idx(IMAGES, 0x08)[:-1], "truncated data")


def test_trailing_bytes() -> None:
    _assert_data_error(_idx(IMAGES, 0x08) + b"\x00\x00", "2 trailing bytes")


def test_wrong_dims() -> None:
    raw = bytearray(_idx(IMAGES, 0x08))
    raw[8:12] = struct.pack(">I", 30)  # claims (2, 30, 4): more data than present
    _assert_data_error(bytes(raw), "truncated data")


def test_huge_dims_do_not_allocate() -> None:
    raw = b"\x00\x00\x0e\x03" + struct.pack(">3I", 2**32 - 1, 2**32 - 1, 2**32 - 1)
    _assert_data_error(raw, "truncated data")


def test_bad_gzip() -> None:
    compressed = gzip.compress(_idx(IMAGES, 0x08))
    _assert_data_error(compressed[:-6], "bad gzip")  # truncated stream
    corrupt = bytearray(compressed)
    corrupt[len(corrupt) // 2] ^= 0xFF
    _assert_data_error(bytes(corrupt), "bad gzip")
    _assert_data_error(b"\x1f\x8b", "bad gzip")


def test_data_error_is_value_error() -> None:
    assert issubclass(DataError, ValueError)


def test_missing_path_is_os_error(tmp_path: pathlib.Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_idx(tmp_path / "nope.gz")


def _parse_or_data_error(raw: bytes) -> None:
    with contextlib.suppress(DataError):
        parse_idx(raw)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_fuzz_random_bytes(raw: bytes) -> None:
    _parse_or_data_error(raw)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=48), st.integers(0, 3))
def test_fuzz_random_gzip_like_bytes(tail: bytes, cut: int) -> None:
    _parse_or_data_error((b"\x1f\x8b\x08\x00" + tail)[: len(tail) + 4 - cut])


VALID = _idx(IMAGES, 0x08)
VALID_GZ = gzip.compress(VALID)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from([VALID, VALID_GZ]),
    st.integers(0, len(VALID_GZ) + 8),
    st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), max_size=4),
)
def test_fuzz_damaged_valid_files(
    base: bytes, cut: int, flips: list[tuple[int, int]]
) -> None:
    """Truncated or byte-flipped valid files parse or raise DataError, nothing else."""
    raw = bytearray(base[:cut])
    for position, value in flips:
        if position < len(raw):
            raw[position] = value
    _parse_or_data_error(bytes(raw))


def _gzip_of_zeros(prefix: bytes, zeros: int) -> bytes:
    """``prefix`` then ``zeros`` zero bytes, gzip-compressed in 1 MiB pieces."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    parts = [compressor.compress(prefix)]
    chunk = bytes(1 << 20)
    for start in range(0, zeros, len(chunk)):
        parts.append(compressor.compress(chunk[: zeros - start]))
    return b"".join([*parts, compressor.flush()])


def test_a_stream_longer_than_its_header_is_refused_unread() -> None:
    # 5 labels declared, then 64 MiB of zeros compressed to about 64 KB: the
    # reader stops one byte past the declared data, long before the end.
    bomb = _gzip_of_zeros(_idx(LABELS, 0x08), 64 << 20)
    assert len(bomb) < 100_000
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match="decompresses to more than the 13 bytes"):
            parse_idx(bomb, name="some/file.gz")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20, f"{peak} bytes allocated to refuse it"


def test_a_header_declaring_more_than_gzip_can_hold_is_refused() -> None:
    # A gzip stream expands at most 1032 times: these few hundred bytes cannot
    # hold the 1 GiB the header declares, so nothing is decompressed.
    header = b"\x00\x00\x08\x01" + struct.pack(">I", 1 << 30)
    raw = gzip.compress(header + bytes(1000))
    _assert_data_error(raw, r"\(1073741824 bytes\), more than \d+ gzip-compressed")
