"""``import zoo`` keeps XLA's compiled programs on disk for the next run.

The whole-process checks run in fresh interpreters: JAX decides at its first
compilation whether it uses a cache, and the test session itself runs without
one (``conftest.py``).
"""

import os
import pathlib
import shutil
from typing import Any

import pytest

from tests.helpers import run_probe
from zoo import _compilation_cache
from zoo._compilation_cache import DiskCache

# Trains the `stax_cnn` preset for one fused call of 2 steps from a fixed start
# and prints, as JSON: zoo's cache folder, JAX's, how many programs were
# loaded from the cache and how many compiled, and a digest of the trained
# parameters.
_PROBE = r"""
import hashlib, json
import zoo
import jax, numpy as np, optax
from jax import monitoring
from zoo.data import Chunk
from zoo.train import TrainState, make_train_step

events = []
monitoring.register_event_listener(lambda name, **kw: events.append(name))
model, state = zoo.create_model("stax_cnn", key=jax.random.key(0))
optimizer = optax.adam(1e-3)
ts = TrainState.init(model, state, optimizer, key=jax.random.key(1))
rng = np.random.default_rng(0)
chunk = Chunk(
    rng.integers(0, 256, (2, 32, 28, 28), dtype=np.uint8),
    rng.integers(0, 10, (2, 32)).astype(np.int32),
    np.ones((2, 32), bool),
)
ts, _ = make_train_step(optimizer)(ts, chunk)
digest = hashlib.sha256()
for leaf in jax.tree.leaves(ts.model):
    if isinstance(leaf, jax.Array):
        digest.update(np.asarray(leaf).tobytes())
print(json.dumps({
    "zoo_dir": None if zoo.compilation_cache_dir() is None
               else str(zoo.compilation_cache_dir()),
    "jax_dir": jax.config.jax_compilation_cache_dir,
    "hits": events.count("/jax/compilation_cache/cache_hits"),
    "misses": events.count("/jax/compilation_cache/cache_misses"),
    "params": digest.hexdigest(),
}))
"""


def _probe(**env: str) -> dict[str, Any]:
    ours = ("ZOO_COMPILATION_CACHE", "XDG_CACHE_HOME")
    return run_probe(
        _PROBE, env, unset=lambda name: name in ours or name.startswith("JAX_")
    )


def test_a_second_run_loads_its_programs_and_trains_bitwise_alike(tmp_path):
    cold = _probe(ZOO_COMPILATION_CACHE=str(tmp_path))
    folder = pathlib.Path(str(cold["zoo_dir"]))
    assert folder.parent == tmp_path
    assert folder.name == _compilation_cache.cpu_fingerprint()
    assert cold["jax_dir"] == str(folder)
    assert cold["hits"] == 0
    kept = sorted(p.name for p in folder.glob("*.xla"))
    # the initialisers and the training step at least (each compiles >= 0.25 s)
    assert any("train_chunk" in name for name in kept), kept
    assert any("arrays" in name for name in kept), kept
    assert not list(folder.glob(".writing-*"))

    warm = _probe(ZOO_COMPILATION_CACHE=str(tmp_path))
    assert warm["hits"] >= len(kept)  # every kept program loaded, not compiled
    assert warm["params"] == cold["params"]  # the same programs, the same bits
    assert sorted(p.name for p in folder.glob("*.xla")) == kept


def test_the_default_folder_is_under_xdg_cache_home(tmp_path):
    probe = _probe(XDG_CACHE_HOME=str(tmp_path))
    folder = tmp_path / "zoo" / "xla" / _compilation_cache.cpu_fingerprint()
    assert probe["zoo_dir"] == str(folder)
    assert list(folder.glob("*train_chunk*.xla"))


@pytest.mark.parametrize("setting", ["0", "off", "False"])
def test_zoo_compilation_cache_0_leaves_the_cache_off(tmp_path, setting):
    probe = _probe(ZOO_COMPILATION_CACHE=setting, XDG_CACHE_HOME=str(tmp_path))
    assert probe["zoo_dir"] is None and probe["jax_dir"] is None
    assert probe["hits"] == 0
    assert not (tmp_path / "zoo").exists()


def test_a_minimum_compile_time_set_for_jax_is_kept(tmp_path):
    probe = _probe(
        ZOO_COMPILATION_CACHE=str(tmp_path),
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="1000",
    )
    assert probe["zoo_dir"] is not None
    assert not list(tmp_path.glob("*/*.xla"))  # nothing compiles for 1000 s


def test_a_cache_configured_in_jax_is_left_as_it_is(tmp_path):
    mine = tmp_path / "mine"
    probe = _probe(JAX_COMPILATION_CACHE_DIR=str(mine), XDG_CACHE_HOME=str(tmp_path))
    assert probe["zoo_dir"] is None
    assert probe["jax_dir"] == str(mine)
    assert not (tmp_path / "zoo").exists()


def test_an_unwritable_folder_leaves_the_cache_off_and_training_works(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    probe = _probe(ZOO_COMPILATION_CACHE=str(blocker / "cache"))
    assert probe["zoo_dir"] is None and probe["jax_dir"] is None
    assert probe["misses"] == 0 and probe["hits"] == 0
    assert blocker.read_text() == "not a folder"


# DiskCache, the store behind the folder.


def test_disk_cache_round_trip_and_misses(tmp_path):
    cache = DiskCache(tmp_path / "c")
    assert cache.get("jit_f-1") is None
    cache.put("jit_f-1", b"program")
    assert cache.get("jit_f-1") == b"program"
    cache.put("jit_f-1", b"another")  # a key is written once
    assert cache.get("jit_f-1") == b"program"
    with pytest.raises(ValueError, match="not a cache key"):
        cache.put("../escape", b"x")
    cache.clear()
    assert cache.get("jit_f-1") is None
    shutil.rmtree(tmp_path / "c")  # removed while a process runs
    cache.put("jit_f-2", b"program")
    assert cache.get("jit_f-2") == b"program"


def test_disk_cache_removes_the_least_recently_used_first(tmp_path):
    cache = DiskCache(tmp_path, max_bytes=30)
    for i, key in enumerate(["a", "b", "c"]):
        cache.put(key, bytes(10))
        os.utime(tmp_path / f"{key}.xla", ns=(i * 10**9, i * 10**9))
    assert cache.get("a") == bytes(10)  # now the most recently used
    cache.put("d", bytes(10))  # 40 bytes: "b", the least recently used, goes
    assert [cache.get(k) is not None for k in "abcd"] == [True, False, True, True]
    cache.put("huge", bytes(31))  # larger than the whole cache: not kept
    assert cache.get("huge") is None
    assert cache.get("a") is not None


def test_disk_cache_counts_what_other_processes_wrote(tmp_path):
    theirs = DiskCache(tmp_path, max_bytes=30)
    theirs.put("b", bytes(10))
    theirs.put("c", bytes(10))
    os.utime(tmp_path / "b.xla", ns=(0, 0))  # the least recently used
    ours = DiskCache(tmp_path, max_bytes=30)  # another process
    ours.put("d", bytes(10))  # counts the folder first: 30 bytes fit
    assert len(list(tmp_path.glob("*.xla"))) == 3
    ours.put("e", bytes(10))  # would make 40: the least recently used goes
    assert sorted(p.name for p in tmp_path.glob("*.xla")) == [
        "c.xla",
        "d.xla",
        "e.xla",
    ]


def test_disk_cache_leaves_no_partial_entry_when_a_write_is_interrupted(
    tmp_path, monkeypatch
):
    cache = DiskCache(tmp_path)

    def interrupted(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        cache.put("jit_f-1", b"program")
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    cache.put("jit_f-1", b"program")
    assert cache.get("jit_f-1") == b"program"


def test_disk_cache_removes_writes_left_by_killed_processes(tmp_path):
    cache = DiskCache(tmp_path)
    stale, fresh = tmp_path / ".writing-old", tmp_path / ".writing-new"
    stale.write_bytes(b"half")
    fresh.write_bytes(b"half")  # another process, writing now
    os.utime(stale, (0, 0))
    cache.put("jit_f-1", b"program")
    assert not stale.exists() and fresh.exists()
