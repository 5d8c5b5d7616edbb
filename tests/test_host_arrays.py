"""Host chunks in memory a CPU device takes as it is (``zoo.data._host_arrays``)."""

import jax
import numpy as np
import pytest
from hypothesis import given, strategies as st

from zoo.data import ArrayDataset, Chunk, train_pipeline
from zoo.data._host_arrays import ALIGNMENT, aligned_empty, stack, take_rows


def _aligned(array: np.ndarray) -> bool:
    return array.ctypes.data % ALIGNMENT == 0 and array.flags.c_contiguous


@given(
    rows=st.lists(st.integers(0, 9), min_size=1, max_size=30),
    dtype=st.sampled_from([np.uint8, np.int32, np.float32, np.float64]),
    tail=st.sampled_from([(), (3,), (1, 2, 5)]),
)
def test_take_rows_and_stack_equal_numpy_in_aligned_memory(rows, dtype, tail):
    array = np.arange(10 * int(np.prod(tail)), dtype=dtype).reshape(10, *tail)
    index = np.array(rows)
    taken = take_rows(array, index)
    np.testing.assert_array_equal(taken, array[index])
    assert taken.dtype == array.dtype and _aligned(taken)
    stacked = stack([array[i] for i in rows])
    np.testing.assert_array_equal(stacked, np.stack([array[i] for i in rows]))
    assert _aligned(stacked)


def test_aligned_empty_of_no_elements() -> None:
    empty = aligned_empty((0, 3), np.float32)
    assert empty.shape == (0, 3) and empty.dtype == np.float32


@pytest.mark.skipif(
    jax.default_backend() != "cpu", reason="a CPU device shares host memory"
)
def test_a_chunk_goes_to_the_cpu_device_without_a_copy() -> None:
    """The chunks ``fit``'s host feed takes (one gather, or batches stacked)
    are put on a CPU device as views: copying an MNIST chunk took about as
    long as the steps of a small model on it."""
    inputs = np.arange(200 * 28, dtype=np.uint8).reshape(200, 1, 4, 7)
    data = ArrayDataset(inputs, np.arange(200, dtype=np.int32) % 10, ("x",), "t")
    it = iter(train_pipeline(data, batch_size=16, seed=0, prefetch=0))
    gathered = it.next_chunk(4)  # pyright: ignore[reportAttributeAccessIssue]
    stacked = Chunk.stack([next(it) for _ in range(3)])
    for chunk in (gathered, stacked):
        host = chunk.inputs
        assert isinstance(host, np.ndarray) and _aligned(host)
        on_device = jax.device_put(host)
        assert on_device.unsafe_buffer_pointer() == host.ctypes.data
        np.testing.assert_array_equal(on_device, host)
