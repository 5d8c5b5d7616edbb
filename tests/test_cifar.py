"""CIFAR-10: the binary archive's reader and its download, on generated archives.

The real archive (170 MB) is never fetched: each test writes a small archive in
the official layout (``cifar-10-batches-bin/data_batch_1.bin`` ... ``test_batch.bin``
of 3,073-byte records, beside ``batches.meta.txt`` and ``readme.html``), serves
it from a real HTTP server on 127.0.0.1, and points the ``cifar10`` entry of
``REMOTE_DATASETS`` at that server and at the archive's SHA-256.
"""

import dataclasses
import gzip
import hashlib
import io
import os
import pathlib
import tarfile
from collections.abc import Iterator

import numpy as np
import pytest
from _file_server import FileServer, serve

from zoo.data import (
    CIFAR10_CLASS_NAMES,
    ArrayDataset,
    Compose,
    DataError,
    RandomCrop,
    RandomFlip,
    _cifar,
    load_cifar10,
    load_dataset,
    train_pipeline,
)
from zoo.data._cifar import (
    CIFAR10_ARCHIVE,
    CIFAR10_MEMBERS,
    RECORD_BYTES,
    parse_cifar_records,
    read_cifar10_archive,
)
from zoo.data._download import REMOTE_DATASETS

FOLDER = "cifar-10-batches-bin"


def _records(rng: np.random.Generator, n: int) -> tuple[bytes, np.ndarray, np.ndarray]:
    """``n`` records and the images ``(n, 3, 32, 32)`` and labels they hold."""
    images = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
    labels = rng.integers(0, 10, n, dtype=np.uint8)
    raw = np.concatenate([labels[:, None], images.reshape(n, -1)], axis=1).tobytes()
    return raw, images, labels


def _write_archive(path: pathlib.Path, members: dict[str, bytes]) -> str:
    """A gzip-compressed tar of ``members`` (name -> bytes); returns its SHA-256."""
    with tarfile.open(path, "w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclasses.dataclass
class _Cifar:
    """A generated archive and what each split must read from it."""

    path: pathlib.Path
    sha256: str
    splits: dict[str, tuple[np.ndarray, np.ndarray]]


def _official_layout(
    root: pathlib.Path, per_batch: int = 3, damage: dict[str, bytes] | None = None
) -> _Cifar:
    rng = np.random.default_rng(0)
    members: dict[str, bytes] = {f"{FOLDER}/batches.meta.txt": b"airplane\n"}
    splits = {}
    for split, names in CIFAR10_MEMBERS.items():
        parts = [_records(rng, per_batch + i) for i in range(len(names))]
        members.update({n: raw for n, (raw, _, _) in zip(names, parts, strict=True)})
        splits[split] = (
            np.concatenate([images for _, images, _ in parts]),
            np.concatenate([labels for _, _, labels in parts]),
        )
    members[f"{FOLDER}/readme.html"] = b"<html></html>"
    members.update(damage or {})
    root.mkdir(parents=True, exist_ok=True)
    path = root / CIFAR10_ARCHIVE
    return _Cifar(path, _write_archive(path, members), splits)


@pytest.fixture
def served(tmp_path: pathlib.Path) -> Iterator[tuple[FileServer, _Cifar]]:
    """An HTTP server on 127.0.0.1 over a folder holding a generated archive."""
    cifar = _official_layout(tmp_path / "served")
    with serve(tmp_path / "served") as httpd:
        yield httpd, cifar


def _point_at(
    monkeypatch: pytest.MonkeyPatch, httpd: FileServer, mode: str, sha256: str
) -> None:
    host, port = httpd.server_address[:2]
    remote = dataclasses.replace(
        REMOTE_DATASETS["cifar10"],
        mirrors=(f"http://{host!s}:{port}/{mode}/",),
        sha256={CIFAR10_ARCHIVE: sha256},
    )
    monkeypatch.setitem(REMOTE_DATASETS, "cifar10", remote)


def test_download_then_load_both_splits_from_the_cache(
    served: tuple[FileServer, _Cifar],
    tmp_path: pathlib.Path,
    monkeypatch: pytest.MonkeyPatch,
):
    httpd, cifar = served
    _point_at(monkeypatch, httpd, "good", cifar.sha256)
    cache = tmp_path / "cache"
    for split in ("train", "test"):
        data = load_cifar10(split, data_dir=cache)
        images, labels = cifar.splits[split]
        assert data.inputs.shape == (len(labels), 3, 32, 32)
        assert data.inputs.dtype == np.uint8 and not data.inputs.flags.writeable
        np.testing.assert_array_equal(data.inputs, images)
        np.testing.assert_array_equal(data.labels, labels.astype(np.int32))
        assert data.labels.dtype == np.int32
        assert data.class_names == CIFAR10_CLASS_NAMES
        assert data.name == f"cifar10/{split}"
    assert len(cifar.splits["train"][1]) == 3 + 4 + 5 + 6 + 7  # five batches
    assert httpd.requests == [f"/good/{CIFAR10_ARCHIVE}"]  # once, then cached
    assert sorted(os.listdir(cache / "cifar-10")) == [CIFAR10_ARCHIVE]
    cached = (cache / "cifar-10" / CIFAR10_ARCHIVE).read_bytes()
    assert cached == cifar.path.read_bytes()
    by_name = load_dataset("cifar10", "test", data_dir=cache)
    np.testing.assert_array_equal(by_name.inputs, cifar.splits["test"][0])
    assert len(httpd.requests) == 1


def test_wrong_checksum_is_refused_and_leaves_no_file(
    served: tuple[FileServer, _Cifar],
    tmp_path: pathlib.Path,
    monkeypatch: pytest.MonkeyPatch,
):
    httpd, cifar = served
    _point_at(monkeypatch, httpd, "corrupt", cifar.sha256)
    cache = tmp_path / "cache"
    with pytest.raises(DataError) as info:
        load_cifar10("test", data_dir=cache)
    message = str(info.value)
    assert "SHA-256 mismatch" in message and f"/corrupt/{CIFAR10_ARCHIVE}" in message
    assert "ZOO_DATA_DIR" in message
    # No partial or temporary file; the folder itself is gone when nothing
    # was written into it.
    assert not (cache / "cifar-10").exists() or os.listdir(cache / "cifar-10") == []


def test_a_cached_archive_with_the_wrong_hash_is_named_and_kept(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
):
    cifar = _official_layout(tmp_path / "cifar-10")
    monkeypatch.setitem(
        REMOTE_DATASETS,
        "cifar10",
        dataclasses.replace(
            REMOTE_DATASETS["cifar10"], sha256={CIFAR10_ARCHIVE: "0" * 64}
        ),
    )
    with pytest.raises(DataError, match="delete it and run again"):
        load_cifar10("train", data_dir=tmp_path)
    assert cifar.path.is_file()


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ({f"{FOLDER}/data_batch_3.bin": b"\x01" * (2 * RECORD_BYTES + 10)},
         r"data_batch_3.bin: 6156 bytes is not a whole number of 3073-byte records"),
        ({f"{FOLDER}/data_batch_2.bin": b"\x0a" + bytes(RECORD_BYTES - 1)},
         r"data_batch_2.bin: record 0 has label 10"),
        ({f"{FOLDER}/data_batch_5.bin": b""}, r"data_batch_5.bin: no records"),
    ],
)  # fmt: skip
def test_damaged_members_are_errors_naming_them(
    damage: dict[str, bytes], message: str, tmp_path: pathlib.Path
):
    cifar = _official_layout(tmp_path, damage=damage)
    with pytest.raises(DataError, match=message) as info:
        read_cifar10_archive(cifar.path, "train")
    assert "delete it and run again" in str(info.value)
    images, _ = read_cifar10_archive(cifar.path, "test")  # the other split reads
    np.testing.assert_array_equal(images, cifar.splits["test"][0])
    assert sorted(os.listdir(tmp_path)) == [CIFAR10_ARCHIVE]  # nothing written


def test_missing_members_and_other_files_are_errors(tmp_path: pathlib.Path):
    path = tmp_path / "partial.tar.gz"
    raw, _, _ = _records(np.random.default_rng(0), 2)
    _write_archive(path, {f"{FOLDER}/data_batch_1.bin": raw})
    with pytest.raises(DataError, match=r"no member .*data_batch_2\.bin"):
        read_cifar10_archive(path, "train")
    garbage = tmp_path / "garbage.tar.gz"
    garbage.write_bytes(b"not a tar archive at all")
    with pytest.raises(DataError, match="not a readable gzip-compressed tar"):
        read_cifar10_archive(garbage, "test")
    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(path.read_bytes()[:200])
    with pytest.raises(DataError, match="not a readable gzip-compressed tar"):
        read_cifar10_archive(truncated, "train")
    with pytest.raises(ValueError, match="Unknown split"):
        read_cifar10_archive(path, "valid")  # pyright: ignore[reportArgumentType]
    with pytest.raises(ValueError, match="Unknown split"):
        load_cifar10("valid", data_dir=tmp_path)  # pyright: ignore[reportArgumentType]


def test_records_are_label_then_red_green_blue_planes():
    red, green, blue = bytes([1] * 1024), bytes([2] * 1024), bytes([3] * 1024)
    images, labels = parse_cifar_records(bytes([7]) + red + green + blue)
    assert labels.tolist() == [7]
    assert [int(images[0, c].mean()) for c in range(3)] == [1, 2, 3]
    row = bytes(range(32)) * 32
    images, _ = parse_cifar_records(bytes([0]) + row * 3)
    assert images[0, 0, 5].tolist() == list(range(32))  # each row left to right


def test_cifar_batches_feed_the_augmented_pipeline(tmp_path: pathlib.Path):
    cifar = _official_layout(tmp_path, per_batch=8)
    images, labels = read_cifar10_archive(cifar.path, "train")
    data = ArrayDataset(images, labels.astype(np.int32), CIFAR10_CLASS_NAMES, "c")
    augment = Compose(RandomCrop(4), RandomFlip())
    batches = list(
        train_pipeline(data, batch_size=16, seed=0, num_epochs=1, augment=augment)
    )
    assert len(batches) == len(data) // 16
    assert batches[0].inputs.shape == (16, 3, 32, 32)
    assert batches[0].inputs.dtype == np.uint8


def _gzip_tar(path: pathlib.Path, *headers: tarfile.TarInfo, tail: bytes = b"") -> None:
    """A gzip-compressed tar of bare member headers (their data is never there)."""
    raw = b"".join(info.tobuf(format=tarfile.PAX_FORMAT) for info in headers) + tail
    path.write_bytes(gzip.compress(raw))


def test_a_member_larger_than_a_batch_file_is_refused_unread(tmp_path: pathlib.Path):
    # The header declares 10,001 records; the data is not even there: the
    # size is refused from the header, before anything is decompressed.
    info = tarfile.TarInfo(CIFAR10_MEMBERS["test"][0])
    info.size = 10_001 * RECORD_BYTES
    _gzip_tar(tmp_path / "big.tar.gz", info)
    with pytest.raises(DataError, match=r"30,733,073 bytes, more than a batch file's"):
        read_cifar10_archive(tmp_path / "big.tar.gz", "test")


def test_an_archive_larger_than_the_official_one_is_refused_unread(
    tmp_path: pathlib.Path,
):
    info = tarfile.TarInfo(f"{FOLDER}/padding.bin")  # a member no split reads
    info.size = 200_000_000
    _gzip_tar(tmp_path / "big.tar.gz", info)
    with pytest.raises(DataError, match=r"past the 185,428,576 bytes CIFAR-10.s"):
        read_cifar10_archive(tmp_path / "big.tar.gz", "train")


def test_decompression_stops_at_the_official_size(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
):
    # tar reads a pax header whole before zoo sees a member: the stream itself
    # is bounded (here at 20,000 bytes, for a small test).
    monkeypatch.setattr(_cifar, "_MAX_ARCHIVE_BYTES", 20_000)
    info = tarfile.TarInfo(CIFAR10_MEMBERS["test"][0])
    info.pax_headers = {"comment": "x" * 30_000}
    _gzip_tar(tmp_path / "pax.tar.gz", info)
    with pytest.raises(DataError, match="decompresses to more than the 20,000 bytes"):
        read_cifar10_archive(tmp_path / "pax.tar.gz", "test")
