"""Cost of fit's per-chunk NaN/inf check on the MLP, whose steps are the shortest.

Runs ``zoo.train.fit`` on MNIST with ``check_finite=True`` and ``False``,
interleaved, ``--epochs`` rounds each (the common flag of every benchmark:
timed rounds per contender). Each round is one ``fit`` of
:data:`EPOCHS_PER_FIT` epochs whose first epoch (warm-up) is dropped. Prints
one JSON line with the median seconds per epoch of each (compilation
excluded) and their ratio.

Run: ``python benchmarks/finite_check.py [--epochs 3] [--data-dir D]``
"""

import json
import statistics

import _harness as h
import jax
import optax

import zoo
from zoo.data import load_mnist
from zoo.train import fit

EPOCHS_PER_FIT = 3
"""Epochs of each ``fit``; the first of each is not timed."""


def main() -> None:
    args = h.parser("Cost of fit's NaN/inf check (MLP).", epochs=3).parse_args()
    train = load_mnist("train", data_dir=args.data_dir)
    model, state = zoo.create_model("mlp", key=jax.random.key(0))
    seconds: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(args.epochs):
        for check in (True, False):
            result = fit(
                model,
                state,
                train,
                optimizer=optax.sgd(0.01),
                epochs=EPOCHS_PER_FIT,
                progress=False,
                log=None,
                check_finite=check,
            )
            seconds[check] += [e.train_seconds for e in result.history[1:]]
    on, off = statistics.median(seconds[True]), statistics.median(seconds[False])
    print(
        json.dumps(
            {
                "benchmark": "finite_check",
                "model": "mlp",
                "batch_size": 128,
                "epoch_seconds_checked": round(on, 4),
                "epoch_seconds_unchecked": round(off, 4),
                "ratio": round(on / off, 4),
                "epochs_measured": len(seconds[True]),
            }
        )
    )


if __name__ == "__main__":
    main()
