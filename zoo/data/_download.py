"""Fetch dataset files into a local cache, verified by SHA-256.

The cache holds one folder per dataset, with the files exactly as distributed::

    <cache>/mnist/train-images-idx3-ubyte.gz
    <cache>/mnist/t10k-labels-idx1-ubyte.gz
    <cache>/fashion-mnist/...
    <cache>/cifar-10/cifar-10-binary.tar.gz

The cache is ``data_dir`` when given, else ``$ZOO_DATA_DIR``, else
``$XDG_CACHE_HOME/zoo``, else ``~/.cache/zoo``.

A file already in the cache is hashed on every call (about 10 ms for MNIST's
largest file) and used without touching the network if its hash matches. A file
with the wrong hash is never deleted or overwritten: :class:`DataError` says so
and asks you to delete it (the cache may be shared or read-only, and a file we
wrote ourselves was verified before it was put in place, so a mismatch means
something outside zoo changed it).

A missing file is downloaded from each mirror in turn into a hidden ``.part``
file in the same folder, hashed while it streams, and renamed into place only
once its size and hash match (``zoo._files.atomic_write``, which also gives it
the usual ``0o666``-less-umask permissions). On any failure, ``KeyboardInterrupt``
included, the ``.part`` file is removed: the cache never holds a partial file.
A process killed outright (``SIGKILL``, power loss) cannot remove its own: every
later fetch of the dataset removes ``.part`` files of its files that no download
has touched for ten minutes (:func:`remove_stale_parts`).
"""

import contextlib
import dataclasses
import hashlib
import http.client
import logging
import os
import re
import stat
import time
import urllib.error
import urllib.request
import urllib.response
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import BinaryIO

from .._files import atomic_write
from ._idx import DataError

_log = logging.getLogger(__name__)

_CHUNK = 1 << 20
_USER_AGENT = "zoo-data (python urllib)"
DEFAULT_TIMEOUT = 30.0
"""Seconds to wait on each blocking network operation (connect, each read)."""

_SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


@dataclasses.dataclass(frozen=True)
class RemoteDataset:
    """Where a dataset's files live and what they must hash to.

    Attributes:
        folder: the dataset's folder name inside the cache.
        mirrors: base URLs tried in order; a file's URL is ``mirror + name``.
        sha256: the expected SHA-256 (hex) of each file, by file name.
        split_files: the files each split needs, by split; ``None`` for
            MNIST's four IDX files.
    """

    folder: str
    mirrors: tuple[str, ...]
    sha256: dict[str, str]
    split_files: dict[str, tuple[str, ...]] | None = None


REMOTE_DATASETS: dict[str, RemoteDataset] = {
    "mnist": RemoteDataset(
        folder="mnist",
        mirrors=(
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
        ),
        sha256={
            "train-images-idx3-ubyte.gz": (
                "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"
            ),
            "train-labels-idx1-ubyte.gz": (
                "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"
            ),
            "t10k-images-idx3-ubyte.gz": (
                "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"
            ),
            "t10k-labels-idx1-ubyte.gz": (
                "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"
            ),
        },
    ),
    "fashion_mnist": RemoteDataset(
        folder="fashion-mnist",
        mirrors=(
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
            "https://github.com/zalandoresearch/fashion-mnist/raw/master/data/fashion/",
        ),
        sha256={
            "train-images-idx3-ubyte.gz": (
                "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84"
            ),
            "train-labels-idx1-ubyte.gz": (
                "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845"
            ),
            "t10k-images-idx3-ubyte.gz": (
                "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073"
            ),
            "t10k-labels-idx1-ubyte.gz": (
                "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5"
            ),
        },
    ),
    # The binary version of the official archive (records of 1 label byte and
    # 3072 pixel bytes). The page publishes its MD5,
    # c32a1d4ab5d03f1284b67883e8d87530; this is the SHA-256 of the same
    # 170,052,171 bytes.
    "cifar10": RemoteDataset(
        folder="cifar-10",
        mirrors=("https://www.cs.toronto.edu/~kriz/",),
        sha256={
            "cifar-10-binary.tar.gz": (
                "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd"
            ),
        },
        split_files={
            "train": ("cifar-10-binary.tar.gz",),
            "test": ("cifar-10-binary.tar.gz",),
        },
    ),
}
"""The downloadable datasets, by name."""


def default_data_dir() -> Path:
    """The cache directory used when no ``data_dir`` is given.

    Returns:
        ``$ZOO_DATA_DIR`` if set and non-empty, else ``$XDG_CACHE_HOME/zoo``,
        else ``~/.cache/zoo``.
    """
    if env := os.environ.get("ZOO_DATA_DIR"):
        return Path(env).expanduser()
    if xdg := os.environ.get("XDG_CACHE_HOME"):
        return Path(xdg).expanduser() / "zoo"
    return Path.home() / ".cache" / "zoo"


def _remote(name: str) -> RemoteDataset:
    key = name.replace("-", "_")
    if key not in REMOTE_DATASETS:
        known = ", ".join(repr(k) for k in REMOTE_DATASETS)
        raise ValueError(f"Unknown dataset {name!r}; downloadable datasets: {known}.")
    return REMOTE_DATASETS[key]


def sha256_file(path: Path) -> str:
    """The SHA-256 of a file's contents, as hex.

    Args:
        path: the file to hash.

    Returns:
        The 64-character hex digest.
    """
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _open(
    url: str, timeout: float
) -> http.client.HTTPResponse | urllib.response.addinfourl:
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    return urllib.request.urlopen(request, timeout=timeout)


def _describe(error: BaseException) -> str:
    if isinstance(error, urllib.error.HTTPError):
        return f"HTTP {error.code} {error.reason}"
    if isinstance(error, urllib.error.URLError):
        return f"{type(error.reason).__name__}: {error.reason}"
    return f"{type(error).__name__}: {error}"


Opener = Callable[[str, float], "http.client.HTTPResponse | urllib.response.addinfourl"]
"""Opens a URL with a timeout; ``_open`` by default."""


def _download(
    url: str,
    target: Path,
    sha256: str,
    timeout: float,
    *,
    max_bytes: int | None = None,
    opener: Opener | None = None,
) -> None:
    """Download ``url`` to ``target`` atomically, or raise and leave no file.

    The response is opened before any file is created: a ``Content-Length``
    above ``max_bytes`` is refused with nothing written, and a body that goes
    past ``max_bytes`` is cut off there and its ``.part`` file removed.

    Raises:
        DataError: the body's size or hash is wrong, or it is over ``max_bytes``.
        OSError: the request or a write failed (``URLError`` is an ``OSError``).
    """
    with (opener or _open)(url, timeout) as response:
        declared = response.headers.get("Content-Length")
        if declared is not None and not declared.isdigit():
            declared = None
        if max_bytes is not None and declared is not None and int(declared) > max_bytes:
            raise DataError(
                f"the server declares {int(declared):,} bytes, more than the "
                f"{max_bytes:,} expected"
            )

        def stream(out: BinaryIO) -> None:
            # Raising here, before atomic_write renames, leaves no file behind.
            digest = hashlib.sha256()
            received = 0
            while chunk := response.read(_CHUNK):
                received += len(chunk)
                if max_bytes is not None and received > max_bytes:
                    raise DataError(
                        f"the body is larger than the {max_bytes:,} bytes expected; "
                        "the download was stopped and its partial file removed"
                    )
                digest.update(chunk)
                out.write(chunk)
            if declared is not None and received != int(declared):
                raise DataError(
                    f"incomplete body: received {received} of {declared} bytes"
                )
            actual = digest.hexdigest()
            if actual != sha256:
                raise DataError(f"SHA-256 mismatch: expected {sha256}, got {actual}")

        remove_stale_parts(target, timeout)
        atomic_write(target, stream, suffix=".part")


STALE_PART_SECONDS = 600.0
"""A ``.part`` file untouched this long (or twice the timeout, if longer) is an
orphan: a download writing it would have timed out. A process killed while
downloading (``SIGKILL``, power loss) leaves one; the next fetch removes it."""


def remove_stale_parts(target: Path, timeout: float = DEFAULT_TIMEOUT) -> None:
    """Remove the orphaned ``.part`` files of downloads of ``target``.

    Only files named as zoo names a download's partial file
    (``.<name>.<16 hex digits>.part``) and untouched for
    :data:`STALE_PART_SECONDS` (or ``2 * timeout``) are removed: a download
    still running in another process rewrites its file at least once a
    ``timeout``. Errors (a read-only cache) are ignored.
    """
    pattern = re.compile(rf"\.{re.escape(target.name)}\.[0-9a-f]{{16}}\.part")
    limit = time.time() - max(STALE_PART_SECONDS, 2 * timeout)
    try:
        entries = list(target.parent.iterdir())
    except OSError:
        return
    for entry in entries:
        if not pattern.fullmatch(entry.name):
            continue
        with contextlib.suppress(OSError):
            info = entry.lstat()
            if stat.S_ISREG(info.st_mode) and info.st_mtime < limit:
                entry.unlink()
                _log.info("Removed the orphaned partial download %s", entry)


def _verify_present(path: Path, sha256: str) -> None:
    actual = sha256_file(path)
    if actual != sha256:
        raise DataError(
            f"{path}: SHA-256 mismatch: expected {sha256}, got {actual}. "
            "The file is corrupt or not the original: delete it and run again to "
            "re-download, or set ZOO_DATA_DIR to a folder holding good copies."
        )


def _fetch_file(
    path: Path, sha256: str, mirrors: Sequence[str], timeout: float
) -> list[str]:
    """Download one file, trying each mirror; return the failures on error."""
    failures: list[str] = []
    for mirror in mirrors:
        url = mirror.rstrip("/") + "/" + path.name
        _log.info("Downloading %s to %s", url, path)
        try:
            _download(url, path, sha256, timeout)
        except (OSError, ValueError, http.client.HTTPException) as error:
            failures.append(f"{url}: {_describe(error)}")
            continue
        return []
    return failures


def fetch(
    name: str,
    *,
    split: str | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    mirrors: Sequence[str] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> Path:
    """Make sure a dataset's files are in the cache, downloading what is missing.

    Files present and matching their SHA-256 are used without any network
    access. Missing files are downloaded from the mirrors in order and verified
    before they are put in place.

    Args:
        name: ``"mnist"``, ``"fashion_mnist"`` (``"fashion-mnist"`` also works)
            or ``"cifar10"`` (one archive holds both splits).
        split: ``"train"`` or ``"test"`` to fetch only that split's two files;
            ``None`` fetches all four.
        data_dir: the cache directory; defaults to :func:`default_data_dir`.
        mirrors: base URLs to try instead of the dataset's canonical mirrors.
            Any URL scheme urllib opens works, ``file://`` included.
        timeout: seconds to wait on each connect or read.

    Returns:
        The dataset's folder in the cache, e.g. ``~/.cache/zoo/mnist``.

    Raises:
        ValueError: unknown dataset name or split.
        DataError: a cached file has the wrong hash, or a missing file could not
            be downloaded from any mirror (the message lists the missing files,
            every URL tried with its failure, and ``ZOO_DATA_DIR``).
    """
    remote = _remote(name)
    if split is None:
        names = tuple(remote.sha256)
    elif split in (remote.split_files or _SPLIT_FILES):
        names = (remote.split_files or _SPLIT_FILES)[split]
    else:
        raise ValueError(f"Unknown split {split!r}; expected 'train' or 'test'.")
    root = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    folder = root / remote.folder
    urls = tuple(mirrors) if mirrors is not None else remote.mirrors

    missing: list[Path] = []
    for n in names:
        remove_stale_parts(folder / n, timeout)
        if (folder / n).is_file():
            _verify_present(folder / n, remote.sha256[n])
        else:
            missing.append(folder / n)
    if not missing:
        return folder

    # The folders made here are removed again if no download writes into them:
    # a mistyped data_dir must not leave empty dataset folders behind.
    created = [p for p in (folder, *folder.parents) if not p.exists()]
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DataError(
            f"Cannot create the data folder {folder} ({_describe(error)}). "
            "Set ZOO_DATA_DIR, or pass data_dir=, to a writable folder."
        ) from None
    if not os.access(folder, os.W_OK):
        raise DataError(
            f"Cannot download into {folder}: the folder is not writable. Set "
            "ZOO_DATA_DIR, or pass data_dir=, to a writable folder."
        )

    failed: dict[Path, list[str]] = {}
    for path in missing:
        if failures := _fetch_file(path, remote.sha256[path.name], urls, timeout):
            failed[path] = failures
    if failed:
        for path in created:  # deepest first; only the empty ones go
            with contextlib.suppress(OSError):
                path.rmdir()
        lines = [f"Could not download {len(failed)} file(s) of {name!r}:"]
        for path, failures in failed.items():
            lines.append(f"  {path} (missing), tried:")
            lines.extend(f"    {failure}" for failure in failures)
        lines.append(
            f"Check the network, or put the original files in {folder} (from "
            "another machine, with the names above), or set ZOO_DATA_DIR to a "
            "folder that holds them."
        )
        if root in created:
            lines.append(f"({root} did not exist: is the data folder spelt right?)")
        raise DataError("\n".join(lines))
    return folder
