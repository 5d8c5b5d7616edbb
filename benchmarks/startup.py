"""Seconds from a script's start to its first trained and evaluated step, cold and warm.

Each run is a fresh Python process that does what a training script does
first: imports zoo, loads MNIST, ``zoo.create_model(name)``, and ``zoo.fit``
for one epoch of ``steps_per_call`` batches (one fused call: the step compiles
and runs once) with the test set evaluated after it (the evaluation compiles
and runs once). The clock runs from just before the process is spawned until
``fit`` returns.

* ``off``: ``ZOO_COMPILATION_CACHE=0``, no programs kept on disk;
* ``cold``: zoo's folder of compiled programs (``ZOO_COMPILATION_CACHE``) is
  new and empty, as on a script's first run (it compiles, and writes);
* ``warm``: the folder that an untimed run of the same preset filled, as on
  every later run.

Each round runs the three, in a rotating order; each figure is the median over
``--epochs`` rounds. Presets with MNIST-sized inputs (784 values) only. Prints
one JSON line.

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

SCRIPT = r"""
import json, sys, time
import jax, optax, zoo
from zoo.data import load_mnist

name, data_dir = sys.argv[1], sys.argv[2] or None
train = load_mnist("train", data_dir=data_dir)
test = load_mnist("test", data_dir=data_dir)
model, state = zoo.create_model(name, key=jax.random.key(0))
optimizer = optax.adam(1e-3)
k = zoo.train._tuning.steps_per_call(  # what fit picks for the whole set
    model, state, train.inputs[0], batch_size=128, steps_per_epoch=len(train) // 128
)
result = zoo.fit(
    model, state, train.take(k * 128), optimizer=optimizer, epochs=1,
    batch_size=128, steps_per_call=k, test_data=test, progress=False, log=None,
)
print(json.dumps({"end": time.time(), "fit_compile_seconds": result.compile_seconds,
                  "steps_per_call": k, "cache": str(zoo.compilation_cache_dir())}))
"""


def run(name: str, data_dir: str | None, folder: str) -> dict[str, float]:
    """Seconds from spawn until ``fit`` returned, and fit's compile seconds.

    ``folder``: zoo's cache of compiled programs, or ``"0"`` for none.
    """
    env = {**os.environ, "ZOO_COMPILATION_CACHE": folder}
    command = [sys.executable, "-c", SCRIPT, name, data_dir or ""]
    start = time.time()
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{done.stderr[-3000:]}")
    out = json.loads(done.stdout.strip().splitlines()[-1])
    if not out["cache"].startswith(folder if folder != "0" else "None"):
        raise RuntimeError(f"{name} did not use the cache folder {folder}: {out}")
    return {
        "seconds": out["end"] - start,
        "fit_compile_seconds": out["fit_compile_seconds"],
        "steps_per_call": out["steps_per_call"],
    }


def bench_preset(name: str, rounds: int, data_dir: str | None) -> dict[str, object]:
    modes = ("off", "cold", "warm")
    with tempfile.TemporaryDirectory(prefix="zoo-xla-") as warm:
        run(name, data_dir, warm)  # fills the warm folder, untimed
        runs: dict[str, list[dict[str, float]]] = {m: [] for m in modes}
        for r in range(rounds):
            for mode in modes[r % 3 :] + modes[: r % 3]:
                if mode == "cold":
                    with tempfile.TemporaryDirectory(prefix="zoo-xla-") as empty:
                        runs[mode].append(run(name, data_dir, empty))
                else:
                    runs[mode].append(
                        run(name, data_dir, warm if mode == "warm" else "0")
                    )
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
    names = [
        n
        for n in zoo.list_models()
        if math.prod(zoo.create_model(n, key=jax.random.key(0))[0].input_shape)
        == 28 * 28
    ]
    h.emit(
        {
            "benchmark": "startup",
            "batch_size": 128,
            "rounds": args.epochs,
            "presets": {n: bench_preset(n, args.epochs, args.data_dir) for n in names},
        }
    )


if __name__ == "__main__":
    main()
