"""Train a small MLP classifier on the 2-D toy set and draw its decision boundary.

The toy set is 1,000 points in the plane: two Gaussian blobs beside two nested
circles, split 800/200 into train and test. The model is the ``toy_mlp`` preset
(one hidden layer of 10 ReLU units, log-probabilities out), trained with Adam at
learning rate 0.01, batch 32, for 100 epochs. The script prints the loss and
accuracy of the untrained model on the first batch, a line every 10 epochs and the
test accuracy, and writes two figures: the data (``toy_data.png``) and the decision
boundary over the test points (``toy_decision_boundary.png``).

Run it from the repository root (about 10 s on 2 CPU cores; ``pip install -e
".[examples]"`` brings tyro and Matplotlib)::

    python examples/toy.py                    # figures go to runs/toy/
    python examples/toy.py --epochs 20 --out /tmp/toy --no-progress
    python examples/toy.py --help             # the options: the fields of Config
"""

import dataclasses
import pathlib
import sys
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from matplotlib.figure import Figure

import zoo
import zoo.plot
from zoo.data import load_toy
from zoo.train import evaluate, fit, predict

try:
    import tyro
except ModuleNotFoundError as missing:  # the examples extra
    if missing.name != "tyro":
        raise
    sys.exit("examples/toy.py reads its flags with tyro: pip install -e '.[examples]'")

# ---------------------------------------------------------------- constants --
LEARNING_RATE = 0.01
BATCH_SIZE = 32  # 800 training points -> 25 optimiser steps per epoch
EPOCHS = 100
DATA_SEED = 42  # fixes the blob centres, the noise and the 800/200 split
LOG_EVERY = 10  # print one line every this many epochs


@dataclasses.dataclass(frozen=True)
class Config:
    """Train a 2-10-2 classifier on the 2-D toy set and draw its decision boundary."""

    epochs: int = EPOCHS
    """Passes over the 800 training points (25 steps each)."""
    seed: int = 1
    """Seeds the initial parameters and the batch order."""
    out: pathlib.Path = pathlib.Path("runs/toy")
    """Write the figures toy_data.png and toy_decision_boundary.png here."""
    progress: bool = True
    """Show a progress bar."""

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"--epochs must be a positive integer, got {self.epochs}")


def parse_args(argv: Sequence[str] | None = None) -> Config:
    """The command line as a ``Config``; bad values exit with status 2."""
    return tyro.cli(Config, prog="toy.py", args=argv)


def main(argv: Sequence[str] | None = None) -> float:
    """Run the example; return the test accuracy (a fraction)."""
    config = parse_args(argv)

    # -------------------------------------------------------------------- data --
    train = load_toy("train", seed=DATA_SEED)
    test = load_toy("test", seed=DATA_SEED)
    print(f"{train}\n{test}")
    data = Figure(figsize=(9.0, 4.2), layout="constrained")
    data.suptitle("Toy set: two blobs and two nested circles")
    panels = data.subplots(1, 2, sharex=True, sharey=True)
    for ax, split, name in zip(panels, (train, test), ("train", "test"), strict=True):
        title = f"{name} (n={len(split)})"
        zoo.plot.plot_dataset(split.inputs, split.labels, ax=ax, title=title)
    data_png = zoo.plot.save_png(data, config.out / "toy_data.png")

    # ------------------------------------------------------------------- model --
    # MLPClassifier(hidden_layers=1, hidden_dim=10, n_classes=2): 2-10-2, ReLU,
    # log_softmax on the output. Each call takes ONE point of shape (2,).
    model, state = zoo.create_model("toy_mlp", key=jax.random.key(config.seed))

    # The untrained model on the first batch of the training set.
    first = evaluate(model, state, train.take(BATCH_SIZE))
    print(
        f"untrained, first batch of {first['count']}: loss {first['loss']:.4f}, "
        f"accuracy {first['accuracy']:.4f}"
    )

    # -------------------------------------------------- loss, optimiser, loop --
    # fit() minimises the mean cross-entropy of the model's outputs (for
    # log-probabilities, softmax changes nothing). By default it fuses the 25
    # steps of an epoch into one device call, a rolled loop that compiles once.
    start = time.perf_counter()
    result = fit(
        model,
        state,
        train,
        optax.adam(LEARNING_RATE),
        epochs=config.epochs,
        batch_size=BATCH_SIZE,
        seed=config.seed,
        callbacks=zoo.train.default_callbacks(progress=config.progress, log=None),
    )
    seconds = time.perf_counter() - start
    for record in result.history:
        if (record.epoch + 1) % LOG_EVERY == 0 or record is result.history[-1]:
            print(
                f"epoch {record.epoch + 1}/{config.epochs}"
                f" | train loss {record.train_loss:.4f}"
                f" | train acc {100 * record.train_accuracy:.2f}%"
            )
    print(
        f"trained {result.step} steps in {seconds:.1f} s "
        f"(compile {result.compile_seconds:.1f} s)"
    )

    # ---------------------------------------------------------------- results --
    scores = evaluate(result.model, result.state, test)
    print(f"test accuracy: {scores['accuracy']:.4f} ({scores['count']} points)")

    def classify(points: np.ndarray) -> jax.Array:
        return predict(result.model, result.state, jnp.asarray(points))

    boundary = zoo.plot.plot_decision_boundary(
        classify,
        test.inputs,
        test.labels,
        title=f"Decision boundary, test accuracy {scores['accuracy']:.1%}",
    )
    boundary_png = zoo.plot.save_png(boundary, config.out / "toy_decision_boundary.png")
    print(f"wrote {data_png} and {boundary_png}")
    return scores["accuracy"]


if __name__ == "__main__":
    zoo.runtime.tune_cpu()  # process-wide; before any JAX computation
    zoo.runtime.enable_compilation_cache()
    main()
