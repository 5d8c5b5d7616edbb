"""The MLP through ``fit`` against the compute-only floor, at every batch size.

For each batch size, zoo's ``fit`` (one epoch per round, its default steps per
call) and the floor (one jitted rolled ``lax.scan`` over the same steps,
batches already on the device) are timed in alternation; the median of the
per-round ratios is reported against the target zoo/floor <= 1.10. Awkward
sizes are included (60,000 / 127 = 472 = 8 x 59 steps). Prints one JSON line.

Run:
    ZOO_DATA_DIR=/path/to/data python benchmarks/batch_sizes.py [--epochs 9]
"""

import time
from typing import Any, cast

import _harness as h
import _references as ref
import jax
import numpy as np
import optax

import zoo
from zoo.data import ArrayDataset, load_mnist

BATCH_SIZES = (16, 32, 64, 100, 127, 128, 256, 333, 512, 1000, 1024)
SMOKE_BATCH_SIZES = (127,)
TARGET = ("<=", 1.10)
LEARNING_RATE = 0.01


def device_epoch(
    data: ArrayDataset, batch: int, steps: int, shape: tuple[int, ...]
) -> tuple[jax.Array, jax.Array]:
    """``steps`` shuffled batches of ``batch`` on the device, scaled to [0, 1]."""
    rows = np.random.default_rng(0).permutation(len(data))[: steps * batch]
    inputs = data.inputs[rows].astype(np.float32) / np.float32(255.0)
    labels = data.labels[rows].reshape(steps, batch)
    return h.block(jax.device_put((inputs.reshape(steps, batch, *shape), labels)))


def bench_batch_size(
    train: ArrayDataset, batch: int, rounds: int, limit_steps: int | None
) -> dict[str, Any]:
    """zoo's fit and the floor at one batch size, interleaved."""
    optimizer = optax.sgd(LEARNING_RATE)
    model, state = zoo.create_model("mlp", key=jax.random.key(0))
    data = train.take(limit_steps * batch) if limit_steps else train
    steps = len(data) // batch
    step = zoo.train.make_train_step(optimizer)
    live = {"model": model, "state": state}

    def fit(r: int) -> float:
        result = zoo.train.fit(
            live["model"], live["state"], data, step, epochs=1, batch_size=batch,
            seed=r, callbacks=h.quiet_callbacks(),
        )  # fmt: skip
        live["model"], live["state"] = result.model, result.state
        live["steps_per_call"] = result.steps_per_call
        return result.history[0].train_seconds

    fit(0)  # warm up: compile, Grain threads, fit's small eager ops
    xs, ys = device_epoch(data, batch, steps, model.input_shape)
    carry, static = ref.floor_init(model, state, optimizer)
    key = jax.random.key(1)
    floor_scan = cast(Any, ref.make_floor_scan(static, optimizer, unroll=1))
    floor_program = floor_scan.lower(carry, xs, ys, key).compile()
    floor_live = {"carry": carry}

    def floor(r: int) -> float:
        del r
        start = time.perf_counter()
        floor_live["carry"] = h.block(floor_program(floor_live["carry"], xs, ys, key))
        return time.perf_counter() - start

    times = h.run_rounds({"zoo_fit": fit, "floor": floor}, rounds)
    ratio = h.ratio(times["zoo_fit"], times["floor"])
    return {
        "steps_per_epoch": steps,
        "steps_per_call": live["steps_per_call"],
        "seconds_per_epoch": {n: round(h.median(t), 3) for n, t in times.items()},
        "zoo_over_floor": round(ratio, 3),
        "met": h.targets_met({"r": ratio}, {"r": TARGET})["r"],
    }


def main() -> None:
    args = h.parse_args(
        h.parser("MLP epoch through fit vs the floor, per batch size.", epochs=9)
    )
    train = load_mnist("train", data_dir=args.data_dir)
    sizes = SMOKE_BATCH_SIZES if args.smoke else BATCH_SIZES
    results = {
        str(b): bench_batch_size(train, b, args.epochs, args.limit_steps) for b in sizes
    }
    h.emit(
        {
            "benchmark": "batch_sizes",
            "model": "mlp",
            "by_batch_size": results,
            "worst_zoo_over_floor": max(r["zoo_over_floor"] for r in results.values()),
            "all_met": all(r["met"] for r in results.values()),
            "target": f"zoo_over_floor {TARGET[0]} {TARGET[1]}",
            "rounds": args.epochs,
            "steps_per_epoch_limit": args.limit_steps,
        }
    )


if __name__ == "__main__":
    main()
