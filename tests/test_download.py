"""The downloader, against a real HTTP server on 127.0.0.1.

The server serves the original files from the shared data folder under a path
prefix that picks its behaviour: ``/good/``, ``/corrupt/`` (one byte flipped),
``/truncated/`` (Content-Length promises the whole file, half is sent, the
connection closes), ``/404/``, ``/500/`` and ``/slow/`` (answers after a
second). A closed port stands in for a server that is down.
"""

import hashlib
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from _file_server import FileServer, serve

from zoo.data import DataError, _download, default_data_dir, fetch
from zoo.data._download import REMOTE_DATASETS

TEST_FILES = ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


@pytest.fixture
def server(data_dir: pathlib.Path) -> Iterator[FileServer]:
    """A local HTTP server over the shared data folder, counting requests."""
    with serve(data_dir) as httpd:
        yield httpd


def _url(httpd: FileServer, mode: str, dataset: str = "mnist") -> str:
    host, port = httpd.server_address[:2]
    return f"http://{host!s}:{port}/{mode}/{dataset}/"


@pytest.fixture
def down_url() -> str:
    """A URL on a port where nothing listens."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/mnist/"


def _listing(folder: pathlib.Path) -> list[str]:
    return sorted(os.listdir(folder)) if folder.exists() else []


def test_good_download_then_no_requests(server: FileServer, tmp_path: pathlib.Path):
    cache = tmp_path / "cache"
    folder = fetch(
        "mnist", split="test", data_dir=cache, mirrors=[_url(server, "good")]
    )
    assert folder == cache / "mnist"
    assert _listing(folder) == sorted(TEST_FILES)
    for name in TEST_FILES:
        digest = hashlib.sha256((folder / name).read_bytes()).hexdigest()
        assert digest == REMOTE_DATASETS["mnist"].sha256[name]
    assert len(server.requests) == 2
    umask = os.umask(0)
    os.umask(umask)
    for name in TEST_FILES:  # zoo's one permission rule, as open(path, "w") gives
        assert (folder / name).stat().st_mode & 0o777 == 0o666 & ~umask

    fetch("mnist", split="test", data_dir=cache, mirrors=[_url(server, "good")])
    assert len(server.requests) == 2  # verified files: no network at all


def test_only_missing_files_are_downloaded(server: FileServer, tmp_path: pathlib.Path):
    mirrors = [_url(server, "good")]
    fetch("mnist", split="test", data_dir=tmp_path, mirrors=mirrors)
    (tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz").unlink()
    server.requests.clear()
    fetch("mnist", split="test", data_dir=tmp_path, mirrors=mirrors)
    assert server.requests == ["/good/mnist/t10k-labels-idx1-ubyte.gz"]


@pytest.mark.parametrize("mode", ["corrupt", "truncated"])
def test_bad_body_leaves_no_file(server: FileServer, tmp_path: pathlib.Path, mode: str):
    cache = tmp_path / "cache"
    with pytest.raises(DataError) as info:
        fetch("mnist", split="test", data_dir=cache, mirrors=[_url(server, mode)])
    message = str(info.value)
    assert f"/{mode}/mnist/t10k-images-idx3-ubyte.gz" in message
    assert "ZOO_DATA_DIR" in message
    expected = "SHA-256 mismatch" if mode == "corrupt" else "incomplete body"
    assert expected in message
    assert _listing(cache / "mnist") == []  # no partial or temporary files


@pytest.mark.parametrize("code", ["404", "500"])
def test_http_errors(server: FileServer, tmp_path: pathlib.Path, code: str):
    with pytest.raises(DataError, match=f"HTTP {code}"):
        fetch("mnist", split="test", data_dir=tmp_path, mirrors=[_url(server, code)])
    assert _listing(tmp_path / "mnist") == []


def test_server_down_names_urls_and_env(tmp_path: pathlib.Path, down_url: str):
    with pytest.raises(DataError) as info:
        fetch("mnist", split="test", data_dir=tmp_path, mirrors=[down_url])
    message = str(info.value)
    for name in TEST_FILES:
        assert f"{tmp_path / 'mnist' / name} (missing)" in message
        assert down_url + name in message
    assert "ConnectionRefusedError" in message
    assert "ZOO_DATA_DIR" in message
    assert _listing(tmp_path / "mnist") == []


def test_a_mistyped_data_dir_is_left_as_it_was(tmp_path: pathlib.Path, down_url: str):
    """No download wrote, so no ``mistyped/mnist/`` or ``mistyped/`` is left."""
    for name in ("mnist", "cifar10"):
        with pytest.raises(DataError, match="did not exist") as info:
            fetch(name, data_dir=tmp_path / "mistyped", mirrors=[down_url])
        assert str(tmp_path / "mistyped") in str(info.value)
        assert list(tmp_path.iterdir()) == []
    # A data folder that exists keeps existing; its empty dataset folder goes.
    (tmp_path / "data").mkdir()
    with pytest.raises(DataError) as info:
        fetch("mnist", split="test", data_dir=tmp_path / "data", mirrors=[down_url])
    assert "did not exist" not in str(info.value)
    assert list((tmp_path / "data").iterdir()) == []


def test_fallback_to_second_mirror(
    server: FileServer, tmp_path: pathlib.Path, down_url: str
):
    mirrors = [down_url, _url(server, "500"), _url(server, "good")]
    folder = fetch("mnist", split="test", data_dir=tmp_path, mirrors=mirrors)
    assert _listing(folder) == sorted(TEST_FILES)
    assert sorted(server.requests) == sorted(
        f"/{mode}/mnist/{name}" for mode in ("500", "good") for name in TEST_FILES
    )


def test_timeout(server: FileServer, tmp_path: pathlib.Path):
    start = time.perf_counter()
    with pytest.raises(DataError, match="timed out"):
        fetch(
            "mnist",
            split="test",
            data_dir=tmp_path,
            mirrors=[_url(server, "slow")],
            timeout=0.1,
        )
    assert time.perf_counter() - start < 1.0
    assert _listing(tmp_path / "mnist") == []


def test_present_file_with_wrong_hash(server: FileServer, tmp_path: pathlib.Path):
    folder = tmp_path / "mnist"
    folder.mkdir()
    bad = folder / "t10k-labels-idx1-ubyte.gz"
    bad.write_bytes(b"not mnist")
    with pytest.raises(DataError) as info:
        fetch("mnist", split="test", data_dir=tmp_path, mirrors=[_url(server, "good")])
    message = str(info.value)
    assert str(bad) in message
    assert REMOTE_DATASETS["mnist"].sha256[bad.name] in message
    assert hashlib.sha256(b"not mnist").hexdigest() in message
    assert "delete it" in message
    assert server.requests == []
    assert bad.read_bytes() == b"not mnist"  # never deleted behind the user's back


def test_keyboard_interrupt_leaves_no_file(
    server: FileServer, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
):
    real_open = _download._open
    during: list[list[str]] = []

    class _Interrupting:
        def __init__(self, response) -> None:
            self.response = response
            self.headers = response.headers
            self.reads = 0

        def __enter__(self):
            return self

        def __exit__(self, *exc: object) -> None:
            self.response.close()

        def read(self, amt: int) -> bytes:
            self.reads += 1
            if self.reads == 2:
                during.append(_listing(tmp_path / "mnist"))
                raise KeyboardInterrupt
            return self.response.read(amt)

    monkeypatch.setattr(_download, "_CHUNK", 4096)
    monkeypatch.setattr(
        _download, "_open", lambda url, timeout: _Interrupting(real_open(url, timeout))
    )
    with pytest.raises(KeyboardInterrupt):
        fetch("mnist", split="test", data_dir=tmp_path, mirrors=[_url(server, "good")])
    # the body streamed into a hidden .part file beside the target, now removed
    [partial] = during[0]
    assert partial.startswith(f".{TEST_FILES[0]}.") and partial.endswith(".part")
    assert _listing(tmp_path / "mnist") == []


def test_file_urls_and_all_files(data_dir: pathlib.Path, tmp_path: pathlib.Path):
    mirror = (data_dir / "mnist").as_uri() + "/"
    folder = fetch("mnist", data_dir=tmp_path, mirrors=[mirror])
    assert _listing(folder) == sorted(REMOTE_DATASETS["mnist"].sha256)


def test_present_files_need_no_network(data_dir: pathlib.Path, down_url: str):
    """The shared (read-only) folder verifies and is used as is."""
    for name in ("mnist", "fashion_mnist"):
        folder = fetch(name, data_dir=data_dir, mirrors=[down_url])
        assert folder.parent == data_dir


def test_hashes_match_shared_sha256sums(data_dir: pathlib.Path):
    for remote in (REMOTE_DATASETS["mnist"], REMOTE_DATASETS["fashion_mnist"]):
        sums = (data_dir / remote.folder / "SHA256SUMS").read_text().split()
        assert dict(zip(sums[1::2], sums[0::2], strict=True)) == remote.sha256


def test_canonical_mirrors():
    assert REMOTE_DATASETS["mnist"].mirrors[0] == (
        "https://storage.googleapis.com/cvdf-datasets/mnist/"
    )
    assert len(REMOTE_DATASETS["fashion_mnist"].mirrors) == 2


def test_unknown_name_or_split(tmp_path: pathlib.Path):
    with pytest.raises(ValueError, match="Unknown dataset"):
        fetch("cifar", data_dir=tmp_path)
    with pytest.raises(ValueError, match="Unknown split"):
        fetch("mnist", split="valid", data_dir=tmp_path)


def test_default_data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path):
    monkeypatch.setenv("ZOO_DATA_DIR", str(tmp_path / "explicit"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_data_dir() == tmp_path / "explicit"
    monkeypatch.setenv("ZOO_DATA_DIR", "")
    assert default_data_dir() == tmp_path / "xdg" / "zoo"
    monkeypatch.delenv("ZOO_DATA_DIR")
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_data_dir() == tmp_path / "home" / ".cache" / "zoo"


def test_env_var_used_when_no_data_dir(
    server: FileServer, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("ZOO_DATA_DIR", str(tmp_path))
    folder = fetch("mnist", split="test", mirrors=[_url(server, "good")])
    assert folder == tmp_path / "mnist"


def _parts(folder: pathlib.Path) -> list[pathlib.Path]:
    return sorted(folder.glob(".*.part")) if folder.exists() else []


def test_a_killed_download_leaves_a_part_file_the_next_fetch_removes(
    server: FileServer, tmp_path: pathlib.Path
):
    # A real SIGKILL mid-download: the server sends half the body, then stalls.
    script = (
        "import sys; from zoo.data import fetch; "
        "fetch('mnist', split='test', data_dir=sys.argv[1], mirrors=[sys.argv[2]])"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path), _url(server, "stall")]
    )
    folder = tmp_path / "mnist"
    try:
        deadline = time.monotonic() + 120
        while not _parts(folder) and child.poll() is None:
            assert time.monotonic() < deadline, "no download started"
            time.sleep(0.05)
    finally:
        child.kill()
        child.wait()
    assert child.returncode == -signal.SIGKILL
    [orphan] = _parts(folder)
    assert orphan.name.startswith(f".{TEST_FILES[0]}.")
    # A fresh .part may belong to a download still running elsewhere: kept.
    fetch("mnist", split="test", data_dir=tmp_path, mirrors=[_url(server, "good")])
    assert _parts(folder) == [orphan]
    # Untouched for longer than any download may pause, it is an orphan: the
    # next fetch removes it, even with every file already present.
    old = time.time() - _download.STALE_PART_SECONDS - 60
    os.utime(orphan, (old, old))
    fetch("mnist", split="test", data_dir=tmp_path, mirrors=[_url(server, "good")])
    assert _parts(folder) == []
    assert _listing(folder) == sorted(TEST_FILES)


def test_only_zoo_part_files_of_the_dataset_are_removed(tmp_path: pathlib.Path):
    folder = tmp_path / "mnist"
    folder.mkdir()
    names = [
        f".{TEST_FILES[1]}.0123456789abcdef.part",  # an orphan of zoo's
        f".{TEST_FILES[1]}.notzoos.part",  # not zoo's name for a partial file
        ".other-file.gz.0123456789abcdef.part",  # not a file of this dataset
    ]
    old = time.time() - _download.STALE_PART_SECONDS - 60
    for name in names:
        (folder / name).write_bytes(b"partial")
        os.utime(folder / name, (old, old))
    _download.remove_stale_parts(folder / TEST_FILES[1])
    assert _listing(folder) == sorted(names[1:])


@pytest.mark.parametrize("mode", ["good", "nolength"])
def test_a_body_over_its_bound_is_refused_and_leaves_nothing(
    server: FileServer, tmp_path: pathlib.Path, mode: str
):
    # "good" declares its length (refused before any file is created);
    # "nolength" does not (cut off as soon as the bound is passed).
    name = TEST_FILES[1]  # 4,542 bytes
    target = tmp_path / name
    sha256 = REMOTE_DATASETS["mnist"].sha256[name]
    expected = "declares 4,542 bytes" if mode == "good" else "larger than the 1,000"
    with pytest.raises(DataError, match=expected):
        _download._download(
            _url(server, mode) + name, target, sha256, 5.0, max_bytes=1000
        )
    assert _listing(tmp_path) == []
    _download._download(_url(server, mode) + name, target, sha256, 5.0, max_bytes=4542)
    assert _listing(tmp_path) == [name]
