"""CIFAR-10, read from the binary version of the official archive.

``cifar-10-binary.tar.gz`` holds ``cifar-10-batches-bin/data_batch_1.bin`` to
``data_batch_5.bin`` (10,000 training images each) and ``test_batch.bin``
(10,000 test images). Each file is a run of 3,073-byte records::

    label   1 byte, 0..9
    red     1024 bytes, 32 rows of 32 pixels
    green   1024 bytes
    blue    1024 bytes

so a record's 3,072 pixel bytes are already a channels-first ``(3, 32, 32)``
image. The archive is fetched once into the cache by :func:`fetch` (verified
by SHA-256) and read from there on every load, member by member in one pass
and without extracting anything to disk. Every problem with its contents
raises :class:`DataError`.
"""

import gzip
import io
import os
import tarfile
import zlib
from pathlib import Path
from typing import Literal

import numpy as np

from ._array_dataset import ArrayDataset
from ._download import fetch
from ._idx import DataError

CIFAR10_CLASS_NAMES: tuple[str, ...] = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
"""CIFAR-10's class names, indexed by label."""

CIFAR10_ARCHIVE = "cifar-10-binary.tar.gz"
"""The file name of the binary version of the official archive."""

RECORD_BYTES = 1 + 3 * 32 * 32
"""Bytes per record: one label byte, then the red, green and blue planes."""

BATCH_RECORDS = 10_000
"""Records in each batch file of the official archive."""

_MAX_MEMBER_BYTES = BATCH_RECORDS * RECORD_BYTES
# The official tar holds six batch files and two small text files; 1 MiB more
# covers those, the tar headers and the padding. Reading stops here.
_MAX_ARCHIVE_BYTES = 6 * _MAX_MEMBER_BYTES + (1 << 20)

_FOLDER = "cifar-10-batches-bin"
CIFAR10_MEMBERS: dict[str, tuple[str, ...]] = {
    "train": tuple(f"{_FOLDER}/data_batch_{i}.bin" for i in range(1, 6)),
    "test": (f"{_FOLDER}/test_batch.bin",),
}
"""The archive members each split reads, in order."""

_REMEDY = (
    "The archive is corrupt or not the original: delete it and run again to "
    "re-download, or set ZOO_DATA_DIR to a folder holding a good copy."
)


def parse_cifar_records(
    raw: bytes | bytearray | memoryview, *, name: str = "<bytes>"
) -> tuple[np.ndarray, np.ndarray]:
    """Parse the bytes of one CIFAR-10 batch file.

    Example:
        >>> record = bytes([3]) + bytes(range(256)) * 12
        >>> images, labels = parse_cifar_records(record)
        >>> images.shape, images.dtype, labels
        ((1, 3, 32, 32), dtype('uint8'), array([3], dtype=uint8))

    Args:
        raw: the file's bytes: whole 3,073-byte records.
        name: how to name the data in error messages (an archive member).

    Returns:
        ``(images, labels)``: ``uint8`` images ``(N, 3, 32, 32)``, channels
        first, and ``uint8`` labels ``(N,)``.

    Raises:
        DataError: no records, a truncated last record, or a label above 9.
    """
    count, extra = divmod(len(raw), RECORD_BYTES)
    if extra:
        raise DataError(
            f"{name}: {len(raw)} bytes is not a whole number of {RECORD_BYTES}-byte "
            f"records ({count} records and {extra} bytes of a truncated one). "
            f"{_REMEDY}"
        )
    if count == 0:
        raise DataError(f"{name}: no records. {_REMEDY}")
    records = np.frombuffer(raw, dtype=np.uint8).reshape(count, RECORD_BYTES)
    labels = records[:, 0]
    if labels.max() >= len(CIFAR10_CLASS_NAMES):
        bad = int(np.argmax(labels >= len(CIFAR10_CLASS_NAMES)))
        raise DataError(
            f"{name}: record {bad} has label {labels[bad]}; CIFAR-10 labels are "
            f"0..9. {_REMEDY}"
        )
    return records[:, 1:].reshape(count, 3, 32, 32), labels


def read_cifar10_archive(
    path: str | os.PathLike[str], split: Literal["train", "test"]
) -> tuple[np.ndarray, np.ndarray]:
    """Read one split from ``cifar-10-binary.tar.gz``, without extracting it.

    Args:
        path: the archive.
        split: ``"train"`` (the five data batches, in order) or ``"test"``.

    Returns:
        ``(images, labels)``: ``uint8`` images ``(N, 3, 32, 32)`` and ``uint8``
        labels ``(N,)``, the batches concatenated in order.

    Raises:
        ValueError: unknown split.
        DataError: not a gzip-compressed tar, a member missing, a member
            larger than a batch file of 10,000 records or an archive larger
            than the official one (refused before they are decompressed), or
            a member that does not parse (the message names it).
    """
    if split not in CIFAR10_MEMBERS:
        raise ValueError(f"Unknown split {split!r}; expected 'train' or 'test'.")
    wanted = CIFAR10_MEMBERS[split]
    found: dict[str, bytes] = {}
    try:
        with (
            gzip.GzipFile(path) as stream,
            tarfile.open(fileobj=_Bounded(stream, path), mode="r:") as archive,
        ):
            # One pass in archive order: each lookup by name would decompress
            # the archive again from the start. Decompression is bounded by
            # the official archive's sizes: each member's declared size is
            # checked before a byte of it is decompressed, and the stream as
            # a whole stops at the official archive's size (tar's own long
            # name and pax headers included).
            for member in archive:
                _check_size(path, member)
                if member.name in wanted and member.isfile():
                    file = archive.extractfile(member)
                    assert file is not None  # a regular file always has data
                    found[member.name] = file.read(member.size)
                    if len(found) == len(wanted):
                        break
    except (tarfile.TarError, OSError, EOFError, zlib.error) as error:
        raise DataError(
            f"{path}: not a readable gzip-compressed tar archive ({error}). {_REMEDY}"
        ) from None
    missing = [m for m in wanted if m not in found]
    if missing:
        raise DataError(f"{path}: no member {', '.join(missing)}. {_REMEDY}")
    parts = [parse_cifar_records(found[m], name=f"{path}:{m}") for m in wanted]
    images = np.concatenate([images for images, _ in parts])
    labels = np.concatenate([labels for _, labels in parts])
    return images, labels


class _Bounded(io.RawIOBase):
    """The decompressed archive, refusing to read or skip past its known size."""

    def __init__(self, file: gzip.GzipFile, path: str | os.PathLike[str]) -> None:
        super().__init__()
        self.file = file
        self.path = path

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def _refuse(self) -> DataError:
        return DataError(
            f"{self.path}: decompresses to more than the {_MAX_ARCHIVE_BYTES:,} "
            f"bytes CIFAR-10's archive holds; reading stopped there. {_REMEDY}"
        )

    def read(self, size: int | None = -1, /) -> bytes:
        room = _MAX_ARCHIVE_BYTES + 1 - self.file.tell()
        data = self.file.read(room if size is None or size < 0 else min(size, room))
        if len(data) == room:
            raise self._refuse()
        return data

    def seek(self, offset: int, whence: int = io.SEEK_SET, /) -> int:
        target = offset if whence == io.SEEK_SET else self.file.tell() + offset
        if whence not in (io.SEEK_SET, io.SEEK_CUR) or target > _MAX_ARCHIVE_BYTES:
            raise self._refuse()
        return self.file.seek(target)

    def tell(self) -> int:
        return self.file.tell()


def _check_size(path: str | os.PathLike[str], member: tarfile.TarInfo) -> None:
    """Refuse a member larger than any of the official archive, before reading it."""
    end = member.offset_data + member.size
    if end > _MAX_ARCHIVE_BYTES:
        raise DataError(
            f"{path}: member {member.name} ends {end:,} bytes into the archive, "
            f"past the {_MAX_ARCHIVE_BYTES:,} bytes CIFAR-10's archive holds; it "
            f"was not decompressed. {_REMEDY}"
        )
    if member.isfile() and member.size > _MAX_MEMBER_BYTES:
        raise DataError(
            f"{path}:{member.name}: {member.size:,} bytes, more than a batch file's "
            f"{BATCH_RECORDS:,} records ({_MAX_MEMBER_BYTES:,} bytes); it was not "
            f"decompressed. {_REMEDY}"
        )


def load_cifar10(
    split: Literal["train", "test"] = "train",
    *,
    data_dir: str | os.PathLike[str] | None = None,
) -> ArrayDataset:
    """Load CIFAR-10, downloading and verifying the archive on first use.

    The archive (170 MB) stays in the cache, compressed; each load hashes it
    and decompresses the split's members (a second or two).

    Args:
        split: ``"train"`` (50,000 images) or ``"test"`` (10,000).
        data_dir: the cache folder; defaults to ``$ZOO_DATA_DIR``, then
            ``$XDG_CACHE_HOME/zoo``, then ``~/.cache/zoo``.

    Returns:
        An :class:`ArrayDataset` with read-only ``uint8`` inputs of shape
        ``(N, 3, 32, 32)`` (RGB, channels first), ``int32`` labels in ``0..9``
        and :data:`CIFAR10_CLASS_NAMES`.

    Raises:
        ValueError: unknown split.
        DataError: the archive cannot be downloaded, has the wrong hash, or
            its contents are damaged.
    """
    if split not in CIFAR10_MEMBERS:
        raise ValueError(f"Unknown split {split!r}; expected 'train' or 'test'.")
    folder = fetch("cifar10", split=split, data_dir=data_dir)
    archive = Path(folder) / CIFAR10_ARCHIVE
    images, labels = read_cifar10_archive(archive, split)
    images.flags.writeable = False
    return ArrayDataset(
        inputs=images,
        labels=labels.astype(np.int32),
        class_names=CIFAR10_CLASS_NAMES,
        name=f"cifar10/{split}",
    )
