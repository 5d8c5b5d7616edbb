"""Compile time of the first training step, for every preset in ``zoo.list_models()``.

For each preset (Adam, batch 128), with JAX's compilation cache off so that
every program compiles as on a first run:

* ``create_model``: the first ``zoo.create_model(name)`` in a fresh process
  (which compiles the initialisers);
* ``train_step``: ``zoo.train.make_train_step`` lowered and compiled for one
  chunk of one batch, split into ``lower`` (tracing, shape checks, StableHLO)
  and ``compile`` (XLA), a fresh step per repeat;
* ``fit``: ``compile_seconds`` of ``zoo.train.fit``'s default fused step, on
  the first ``steps_per_call`` batches (the program fit compiles on the whole
  set).

MNIST presets train on MNIST, 2-D presets on the toy set, others on random
data. The median of ``--epochs`` repeats is reported. Prints one JSON line.

Run:
    ZOO_DATA_DIR=/path/to/data python benchmarks/compile.py [--epochs 3]
"""

import math
import os
import subprocess
import sys
import time
from typing import Any

import _harness as h
import jax
import numpy as np
import optax

import zoo
from zoo.data import ArrayDataset, Chunk, load_mnist, load_toy

LEARNING_RATE = 1e-3
SMOKE_PRESETS = ("toy_mlp",)
COLD_CREATE = """
import sys, time, jax, zoo
if sys.argv[2] == "tune":
    zoo.runtime.tune_cpu()
key = jax.random.key(0)  # starts the backend
start = time.perf_counter()
jax.block_until_ready(zoo.create_model(sys.argv[1], key=key))
print(time.perf_counter() - start)
"""


def cold_create_seconds(name: str, tune: bool) -> float:
    """Seconds of the first ``zoo.create_model(name)`` in a fresh process."""
    command = [sys.executable, "-c", COLD_CREATE, name, "tune" if tune else "no"]
    env = {**os.environ, "JAX_ENABLE_COMPILATION_CACHE": "false"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=True)
    return float(done.stdout.split()[-1])


def dataset_for(model: Any, data_dir: str | None) -> ArrayDataset:
    """The training set a preset is meant for, by its input shape."""
    shape = tuple(model.input_shape)
    if math.prod(shape) == 28 * 28:
        return load_mnist("train", data_dir=data_dir)
    if shape == (2,):
        return load_toy("train")
    rng = np.random.default_rng(0)
    n = 16 * h.BATCH_SIZE
    return ArrayDataset(
        inputs=rng.standard_normal((n, *shape)).astype(np.float32),
        labels=rng.integers(0, model.out_size, n).astype(np.int32),
        class_names=tuple(str(c) for c in range(model.out_size)),
        name=f"random{list(shape)}",
    )


def bench_preset(
    name: str, repeats: int, data_dir: str | None, tune: bool
) -> dict[str, Any]:
    """Compile times of ``name``'s training step and of fit's fused step."""
    optimizer = optax.adam(LEARNING_RATE)
    model, state = zoo.create_model(name, key=jax.random.key(0))
    data = dataset_for(model, data_dir)
    ts = zoo.train.TrainState.init(model, state, optimizer, key=jax.random.key(0))
    batch = min(h.BATCH_SIZE, len(data))
    chunk = jax.device_put(
        Chunk(
            data.inputs[None, :batch],
            data.labels[None, :batch],
            np.ones((1, batch), np.bool_),
        )
    )

    lower, compile_ = [], []
    for _ in range(repeats):
        step = zoo.train.make_train_step(optimizer)
        start = time.perf_counter()
        lowered = step.lower(ts, chunk)
        middle = time.perf_counter()
        lowered.compile()
        lower.append(middle - start)
        compile_.append(time.perf_counter() - middle)

    create = [cold_create_seconds(name, tune) for _ in range(repeats)]
    spe = len(data) // batch
    k = h.fit_steps_per_call(model, state, data, spe)
    fit_data = data.take(k * batch) if k * batch < len(data) else data
    fit_seconds = []
    for _ in range(repeats):
        result = zoo.train.fit(
            model,
            state,
            fit_data,
            optimizer,
            epochs=1,
            batch_size=batch,
            callbacks=h.quiet_callbacks(),
        )
        fit_seconds.append(result.compile_seconds)
    return {
        "create_model_seconds": round(h.median(create), 2),
        "train_step_lower_seconds": round(h.median(lower), 2),
        "train_step_compile_seconds": round(h.median(compile_), 2),
        "train_step_total_seconds": round(h.median(lower) + h.median(compile_), 2),
        "fit_compile_seconds": round(h.median(fit_seconds), 2),
        "fit_steps_per_call": k,
        "data": data.name,
        "parameters": h.param_count(model),
        "per_repeat": {
            "create_model": h.rounded(create, 2),
            "lower": h.rounded(lower, 2),
            "compile": h.rounded(compile_, 2),
            "fit": h.rounded(fit_seconds, 2),
        },
    }


def main() -> None:
    args = h.parse_args(
        h.parser("Compile time of the first training step of every preset.", epochs=3),
        measures_compilation=True,
    )
    names = SMOKE_PRESETS if args.smoke else zoo.list_models()
    results = {
        name: bench_preset(name, args.epochs, args.data_dir, not args.no_tune)
        for name in names
    }
    h.emit(
        {
            "benchmark": "compile",
            **results,
            "repeats": args.epochs,
            "batch_size": h.BATCH_SIZE,
            "optimizer": f"adam({LEARNING_RATE})",
        }
    )


if __name__ == "__main__":
    main()
