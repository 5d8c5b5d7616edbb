"""Run ``zoo.train.fit`` on a small MNIST subset in a process of its own.

Used by the kill-and-resume test: ``python tests/_fit_runner.py CKPT OUT
[--resume] [--device-shift]`` trains (with the data on the device, shifted
there with ``--device-shift``), checkpointing every few steps, and writes the
final parameters to ``OUT``.
"""

import sys

import equinox as eqx
import jax
import optax

import zoo
from zoo.data import load_mnist
from zoo.train import fit


def main() -> None:
    checkpoint_dir, out = sys.argv[1], sys.argv[2]
    train = load_mnist("train").take(2048)
    model, state = zoo.create_model("mlp", key=jax.random.key(0))
    result = fit(
        model,
        state,
        train,
        optimizer=optax.adam(1e-3),
        epochs=8,
        batch_size=128,
        seed=3,
        steps_per_call=2,
        checkpoint_dir=zoo.train.Checkpointer(checkpoint_dir, every=2),
        resume="--resume" in sys.argv,
        augment=zoo.data.DeviceShift(2) if "--device-shift" in sys.argv else None,
        callbacks=zoo.train.default_callbacks(progress=False, log=None),
    )
    eqx.tree_serialise_leaves(out, (result.model, result.state))


if __name__ == "__main__":
    main()
