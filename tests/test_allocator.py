"""``zoo.runtime.tune_cpu()`` tunes glibc's allocator so steps reuse heap memory;
``import zoo`` alone changes nothing in the process.

Each check runs in a fresh interpreter: the setting is process-wide and must
come before the first JAX computation.
"""

import os
from typing import Any

import pytest

import zoo
from tests.helpers import run_probe
from zoo import _allocator

pytestmark = pytest.mark.skipif(
    _allocator.glibc() is None, reason="the allocator tuning is for glibc only"
)

# Prints, as JSON: whether zoo tuned the allocator, how many malloc arenas the
# process has after training, and the page faults of a `cnn` training step (at
# batch 64, so that its buffers are a few MiB each) in the median of 9 calls.
_PROBE = r"""
import ctypes, ctypes.util, json, os, resource, sys, tempfile
import zoo
tuned = zoo.runtime.tune_cpu() if sys.argv[1:] == ["tune"] else False
import jax, numpy as np, optax
from zoo.data import Chunk
from zoo.train import TrainState, make_train_step

model, state = zoo.create_model("cnn", key=jax.random.key(0))
optimizer = optax.adam(1e-3)
ts = TrainState.init(model, state, optimizer, key=jax.random.key(1))
step = make_train_step(optimizer)
rng = np.random.default_rng(0)
chunk = jax.device_put(Chunk(
    rng.integers(0, 256, (2, 64, 1, 28, 28), dtype=np.uint8),
    rng.integers(0, 10, (2, 64)).astype(np.int32),
    np.ones((2, 64), bool),
))
per_call = []
for _ in range(12):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    ts, _ = jax.block_until_ready(step(ts, chunk))
    per_call.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
# The median call of the last 9: the heap still grows now and then (a new peak
# when XLA's threads happen to overlap more buffers), but not on most calls.
faults = sorted(per_call[3:])[4] / 2

libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.fopen.restype = ctypes.c_void_p
libc.fopen.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
libc.fclose.argtypes = [ctypes.c_void_p]
with tempfile.TemporaryDirectory() as d:
    path = os.path.join(d, "malloc.xml")
    f = libc.fopen(path.encode(), b"w")
    libc.malloc_info(0, f)
    libc.fclose(f)
    arenas = open(path).read().count("<heap nr=")
print(json.dumps({"tuned": tuned, "arenas": arenas,
                  "faults_per_step": faults}))
"""


# Prints, as JSON, the page faults of each round in which a thread other than
# the main one (as XLA's are) allocates three 40 MiB blocks, writes them and
# frees them: more than one 64 MiB heap of its arena, emptied every round.
_HEAP_PROBE = r"""
import ctypes, ctypes.util, json, resource, threading
import zoo
tuned = zoo.runtime.tune_cpu()
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
size = 40 * 2**20
faults = []

def rounds():
    for _ in range(6):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        blocks = [libc.malloc(size) for _ in range(3)]
        for block in blocks:
            libc.memset(block, 1, size)
        for block in reversed(blocks):
            libc.free(block)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)

thread = threading.Thread(target=rounds)
thread.start()
thread.join()
print(json.dumps({"tuned": tuned, "faults": faults}))
"""


def _probe(script: str = _PROBE, *args: str, **env: str) -> dict[str, Any]:
    return run_probe(
        script,
        env,
        unset=lambda name: name.startswith("MALLOC_") or name == "GLIBC_TUNABLES",
        args=args,
    )


def test_tune_cpu_tunes_the_allocator_so_steps_reuse_memory() -> None:
    """Two arenas, and a training step touches (almost) no fresh pages.

    With glibc's defaults the same step takes thousands of page faults (about
    4,500 at batch 64 here, 7,800 at batch 128): XLA's threads get arenas of
    their own whose heaps are unmapped and mapped again every call.
    """
    tuned = _probe(_PROBE, "tune")
    assert tuned["tuned"] is True
    assert tuned["arenas"] == _allocator.ARENAS
    # A tenth of the untuned count: a median step of a tuned run has taken up
    # to 339 faults on a loaded machine (a step's blocks landing on new pages).
    assert float(tuned["faults_per_step"]) < 1000  # type: ignore[arg-type]


def test_a_threads_emptied_heaps_stay_mapped() -> None:
    """Blocks a thread frees are reused by its next round, not mapped afresh.

    The first round faults in its 120 MiB (30,720 pages). Without ``TOP_PAD``
    glibc unmapped the thread's emptied 64 MiB heaps, and each later round
    faulted 40 MiB again (10,243 pages); with glibc's defaults every block is
    a mapping of its own.
    """
    probe = _probe(_HEAP_PROBE)
    assert probe["tuned"] is True
    first, *later = probe["faults"]
    assert first > 3 * 40 * 2**20 // 4096 // 2  # the probe does touch its blocks
    assert max(later) < 100, probe["faults"]


def test_import_alone_leaves_the_allocator_as_it_was() -> None:
    untuned = _probe(_PROBE)
    assert untuned["tuned"] is False
    assert int(untuned["arenas"]) > 1  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "env",
    [
        {"MALLOC_ARENA_MAX": "4"},
        {"MALLOC_TRIM_THRESHOLD_": "1000000"},
        {"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"},
    ],
)
def test_an_allocator_set_up_by_the_user_is_left_alone(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert _allocator.user_configured()
    assert zoo.runtime.tune_cpu() is False


def test_unrelated_tunables_do_not_stop_the_tuning(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in [k for k in os.environ if k.startswith("MALLOC_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.cpu.hwcaps=-AVX512F")
    assert not _allocator.user_configured()
