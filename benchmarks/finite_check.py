"""Cost of fit's NaN/inf guard (``FiniteLossGuard``) on the MLP, whose steps are
the shortest.

Runs ``zoo.train.fit`` on MNIST with ``callbacks=[FiniteLossGuard()]`` and with
``callbacks=[]``, interleaved, ``--epochs`` rounds each. Each round is one
``fit`` of :data:`EPOCHS_PER_FIT` epochs whose first (warm-up) is dropped.
Prints one JSON line: the median seconds per epoch of each (compilation
excluded) and their ratio.

Run:
    ZOO_DATA_DIR=/path/to/data python benchmarks/finite_check.py [--epochs 3]
"""

import _harness as h
import jax
import optax

import zoo
from zoo.data import load_mnist
from zoo.train import FiniteLossGuard, fit, make_train_step

EPOCHS_PER_FIT = 3
"""Epochs of each ``fit``; the first of each is not timed."""


def main() -> None:
    args = h.parse_args(h.parser("Cost of fit's NaN/inf guard (MLP).", epochs=3))
    train = load_mnist("train", data_dir=args.data_dir)
    if args.limit_steps:
        train = train.take(args.limit_steps * h.BATCH_SIZE)
    model, state = zoo.create_model("mlp", key=jax.random.key(0))
    step = make_train_step(optax.sgd(0.01))  # compiled once, for both
    seconds: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(args.epochs):
        for check in (True, False):
            result = fit(
                model,
                state,
                train,
                step,
                epochs=EPOCHS_PER_FIT,
                batch_size=h.BATCH_SIZE,
                callbacks=[FiniteLossGuard()] if check else [],
            )
            seconds[check] += [e.train_seconds for e in result.history[1:]]
    on, off = h.median(seconds[True]), h.median(seconds[False])
    h.emit(
        {
            "benchmark": "finite_check",
            "model": "mlp",
            "batch_size": h.BATCH_SIZE,
            "steps_per_epoch": len(train) // h.BATCH_SIZE,
            "epoch_seconds_checked": round(on, 4),
            "epoch_seconds_unchecked": round(off, 4),
            "ratio": round(on / off, 4),
            "epochs_measured": len(seconds[True]),
        }
    )


if __name__ == "__main__":
    main()
