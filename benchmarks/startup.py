"""Seconds from a script's start to its first trained and evaluated step, cold and warm.

Each run is a fresh Python process that does what a training script does
first: ``zoo.runtime.tune_cpu()`` (unless ``--no-tune``), JAX's compilation
cache through ``zoo.runtime.enable_compilation_cache(folder)``, MNIST,
``zoo.create_model(name)`` and ``zoo.fit`` for one fused call of
``steps_per_call`` batches with the test set evaluated after it. The clock
runs from just before the process is spawned until ``fit`` returns.

* ``off``: no compilation cache;
* ``cold``: a new, empty cache folder, as on a script's first run;
* ``warm``: the folder an untimed run of the same preset filled.

Each round runs the three in a rotating order; figures are medians over
``--epochs`` rounds. Presets with MNIST-sized inputs only. Prints one JSON line.

Run:
    ZOO_DATA_DIR=/path/to/data python benchmarks/startup.py [--epochs 3]
"""

import json
import math
import os
import subprocess
import sys
import tempfile
import time

import _harness as h
import jax

import zoo

SMOKE_PRESETS = ("mlp",)
SCRIPT = r"""
import json, sys, time
import zoo

name, data_dir, folder, tune = sys.argv[1:5]
if tune == "tune":
    zoo.runtime.tune_cpu()
if folder:
    zoo.runtime.enable_compilation_cache(folder)

import jax, optax
from zoo.data import load_mnist

train = load_mnist("train", data_dir=data_dir or None)
test = load_mnist("test", data_dir=data_dir or None)
model, state = zoo.create_model(name, key=jax.random.key(0))
k = zoo.train.steps_per_call(  # what fit picks for the whole set
    model, state, train.inputs[0], batch_size=128, steps_per_epoch=len(train) // 128
)
result = zoo.fit(
    model, state, train.take(k * 128), optax.adam(1e-3), epochs=1, batch_size=128,
    steps_per_call=k, test_data=test, callbacks=[],
)
cache = zoo.runtime.compilation_cache_dir()
print(json.dumps({"end": time.time(), "fit_compile_seconds": result.compile_seconds,
                  "steps_per_call": result.steps_per_call, "cache": str(cache)}))
"""
# JAX's own cache settings, left out of the workers' environment: each worker
# uses only the folder it is given.
JAX_CACHE_VARIABLES = (
    "JAX_COMPILATION_CACHE_DIR",
    "JAX_ENABLE_COMPILATION_CACHE",
    "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS",
    "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES",
)


def run(name: str, data_dir: str | None, folder: str, tune: bool) -> dict[str, float]:
    """Seconds from spawn until ``fit`` returned, and fit's compile seconds.

    ``folder``: the compilation cache's folder, or ``""`` for none.
    """
    env = {k: v for k, v in os.environ.items() if k not in JAX_CACHE_VARIABLES}
    command = [sys.executable, "-c", SCRIPT, name, data_dir or "", folder]
    command.append("tune" if tune else "no")
    start = time.time()
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{done.stderr[-3000:]}")
    out = json.loads(done.stdout.strip().splitlines()[-1])
    if out["cache"] != (folder or "None"):
        raise RuntimeError(f"{name} did not use the cache folder {folder!r}: {out}")
    return {
        "seconds": out["end"] - start,
        "fit_compile_seconds": out["fit_compile_seconds"],
        "steps_per_call": out["steps_per_call"],
    }


def bench_preset(
    name: str, rounds: int, data_dir: str | None, tune: bool
) -> dict[str, object]:
    modes = ("off", "cold", "warm")
    with tempfile.TemporaryDirectory(prefix="zoo-xla-") as warm:
        run(name, data_dir, warm, tune)  # fills the warm folder, untimed
        runs: dict[str, list[dict[str, float]]] = {m: [] for m in modes}
        for r in range(rounds):
            for mode in modes[r % 3 :] + modes[: r % 3]:
                if mode == "cold":
                    with tempfile.TemporaryDirectory(prefix="zoo-xla-") as empty:
                        runs[mode].append(run(name, data_dir, empty, tune))
                else:
                    folder = warm if mode == "warm" else ""
                    runs[mode].append(run(name, data_dir, folder, tune))
    seconds = {m: h.median([x["seconds"] for x in rs]) for m, rs in runs.items()}
    return {
        "off_seconds": round(seconds["off"], 2),
        "cold_seconds": round(seconds["cold"], 2),
        "warm_seconds": round(seconds["warm"], 2),
        "cold_over_off": round(seconds["cold"] / seconds["off"], 3),
        "warm_over_cold": round(seconds["warm"] / seconds["cold"], 3),
        "fit_compile_seconds": {
            m: round(h.median([x["fit_compile_seconds"] for x in rs]), 2)
            for m, rs in runs.items()
        },
        "steps_per_call": runs["cold"][0]["steps_per_call"],
        "per_round": {
            m: h.rounded([x["seconds"] for x in rs], 2) for m, rs in runs.items()
        },
    }


def main() -> None:
    args = h.parser(
        "Seconds to the first trained and evaluated step, cold and warm.", epochs=3
    ).parse_args()
    # The parent only starts workers; each opts in as its flags say.
    h.opt_in(tune=False, cache=False)
    tune = not args.no_tune
    names = (
        SMOKE_PRESETS
        if args.smoke
        else [
            n
            for n in zoo.list_models()
            if math.prod(zoo.create_model(n, key=jax.random.key(0))[0].input_shape)
            == 28 * 28
        ]
    )
    h.emit(
        {
            "benchmark": "startup",
            "batch_size": 128,
            "rounds": args.epochs,
            "workers_tune_cpu": tune,
            "presets": {
                n: bench_preset(n, args.epochs, args.data_dir, tune) for n in names
            },
        }
    )


if __name__ == "__main__":
    main()
