"""Save checkpoints in a loop until killed; the subprocess of the SIGKILL test.

Run as ``python tests/_checkpoint_writer.py DIRECTORY [MODEL]``. It resumes from the
counter of the checkpoint already in ``DIRECTORY`` (if any), prints ``saving
<counter>`` once it is about to write, and then saves counter + 1, + 2, ... for
ever. Save number ``c`` fills every array of the model, its state and its adam
state with ``c`` and records ``c`` as the step, the key seed, the data state and
the metadata, so [`check`][] can tell whether a loaded checkpoint is one complete
save rather than a mixture of two.
"""

import sys
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

import zoo
from zoo.train import TrainState
from zoo.train._checkpoint import (
    Checkpoint,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)

MODEL = "mlp"  # 2.7 MB of parameters, 8 MB with the adam moments
KEEP = 2


def optimizer() -> optax.GradientTransformation:
    """The optimiser whose state is saved."""
    return optax.adam(1e-3)


def _fill(tree: Any, counter: int) -> Any:
    return jax.tree.map(
        lambda x: (
            np.full(x.shape, counter, x.dtype)
            if isinstance(x, jax.ShapeDtypeStruct | jax.Array | np.ndarray)
            else x
        ),
        tree,
    )


def save_arguments(
    counter: int, model: str = MODEL
) -> tuple[TrainState, dict[str, Any]]:
    """The train state and keyword arguments of save number ``counter``."""
    shapes = eqx.filter_eval_shape(zoo.create_model, model, key=jax.random.key(0))
    network, state = _fill(shapes, counter)
    opt_shapes = eqx.filter_eval_shape(
        lambda m: optimizer().init(eqx.filter(m, eqx.is_inexact_array)), network
    )
    train_state = TrainState(
        network,
        state,
        _fill(opt_shapes, counter),
        jax.random.key(counter),
        jnp.int32(counter),
    )
    kwargs = {
        "data_state": {"counter": counter},
        "metadata": {"counter": counter},
        "keep": KEEP,
    }
    return train_state, kwargs


def check(checkpoint: Checkpoint) -> int:
    """Assert that ``checkpoint`` is one complete save, and return its counter."""
    counter = checkpoint.metadata["counter"]
    ts = checkpoint.train_state
    assert int(ts.step) == counter
    assert checkpoint.data_state == {"counter": counter}
    assert np.array_equal(
        jax.random.key_data(ts.key), jax.random.key_data(jax.random.key(counter))
    )
    trees = (ts.model, ts.model_state, ts.opt_state)
    arrays = [x for x in jax.tree.leaves(trees) if eqx.is_array(x)]
    assert arrays
    for array in arrays:
        assert np.all(np.asarray(array) == counter), (counter, array)
    return counter


def main(directory: str, model: str = MODEL) -> None:
    """Resume from the checkpoint in ``directory`` and save until killed."""
    counter = 0
    if latest_checkpoint(directory) is not None:
        counter = check(load_checkpoint(directory, optimizer=optimizer()))
    train_state, kwargs = save_arguments(counter + 1, model)
    print(f"saving {counter + 1}", flush=True)
    while True:
        counter += 1
        save_checkpoint(directory, train_state, **kwargs)
        train_state, kwargs = save_arguments(counter + 1, model)


if __name__ == "__main__":
    main(*sys.argv[1:])
