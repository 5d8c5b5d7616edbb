"""Shared test configuration: strict JAX numerics, keys, and the data directory."""

import os
import pathlib

import jax
import pytest

from zoo.data import ArrayDataset, load_mnist

jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_numpy_dtype_promotion", "strict")
# GPUs multiply float32 matrices in TF32 by default; the tests compare to 1e-5.
jax.config.update("jax_default_matmul_precision", "highest")

REPO = pathlib.Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"

# Tests never touch the network for MNIST: they read the original files from
# ../shared/data unless the caller already chose a directory.
if "ZOO_DATA_DIR" not in os.environ and SHARED_DATA.is_dir():
    os.environ["ZOO_DATA_DIR"] = str(SHARED_DATA)


@pytest.fixture
def getkey():
    """Return a function that hands out a fresh PRNG key on each call."""
    key = jax.random.key(0)

    def _getkey() -> jax.Array:
        nonlocal key
        key, sub = jax.random.split(key)
        return sub

    return _getkey


@pytest.fixture(scope="session")
def data_dir() -> pathlib.Path:
    """The directory holding ``mnist/`` and ``fashion-mnist/`` IDX files."""
    path = pathlib.Path(os.environ["ZOO_DATA_DIR"])
    if not (path / "mnist").is_dir():
        pytest.fail(
            f"ZOO_DATA_DIR={path} has no mnist/ folder; point it at shared/data"
        )
    return path


from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile(
    "default",
    max_examples=8,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.register_profile("thorough", max_examples=100, deadline=None, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture(scope="session")
def mnist_train(data_dir: pathlib.Path) -> ArrayDataset:
    """MNIST's 60,000 training examples, parsed once per test session (~0.3 s)."""
    return load_mnist("train", data_dir=data_dir)


@pytest.fixture(scope="session")
def mnist_test(data_dir: pathlib.Path) -> ArrayDataset:
    """MNIST's 10,000 test examples, parsed once per test session."""
    return load_mnist("test", data_dir=data_dir)


@pytest.fixture(scope="module")
def small_train(mnist_train: ArrayDataset) -> ArrayDataset:
    """The first 1,024 MNIST training images: 16 steps of 64, 8 of 128."""
    return mnist_train.take(1024)


@pytest.fixture(scope="module")
def small_test(mnist_test: ArrayDataset) -> ArrayDataset:
    """The first 1,000 MNIST test images."""
    return mnist_test.take(1000)


MAPS = pathlib.Path("/proc/self/maps")
MAX_MAP_COUNT = pathlib.Path("/proc/sys/vm/max_map_count")


def _map_limit() -> int | None:
    """Half of Linux's limit on a process's memory maps; None off Linux."""
    try:
        return int(MAX_MAP_COUNT.read_text()) // 2
    except (OSError, ValueError):
        return None


_MAP_LIMIT = _map_limit()


@pytest.fixture(autouse=True)
def _release_compiled_programs():
    """Free JAX's compiled programs once a worker holds too many memory maps.

    XLA:CPU maps about six regions per compiled program, and JAX keeps every
    program it compiled. A test worker that runs a few thousand tests reaches
    Linux's ``vm.max_map_count`` (65,530 by default), and the next compile
    dies with a segmentation fault in XLA. Past half the limit this clears
    JAX's caches (``jax.clear_caches``), which unmaps them; tests compile
    again what they need.
    """
    yield
    if _MAP_LIMIT is not None and MAPS.read_bytes().count(b"\n") > _MAP_LIMIT:
        jax.clear_caches()
