"""What ``import zoo``'s allocator tuning saves: compiling and training steps.

The tuning (``zoo/_allocator.py``) is process-wide and must come before the
first JAX computation, so each contender is a fresh Python process:

* ``tuned``: the default, ``import zoo`` sets glibc's allocator to keep and
  reuse freed heap memory, in two arenas (the main thread's and one that the
  other threads share);
* ``one_arena``: the same thresholds in a single arena for every thread (zoo's
  earlier setting), through glibc's ``MALLOC_*`` variables;
* ``glibc_defaults``: the same with ``ZOO_TUNE_ALLOCATOR=0``.

Each process compiles ``make_train_step(adam)`` for fit's steps per call (the
seconds of ``.compile()`` are its ``compile_s``), runs 3 calls to warm up, then
times ``--limit-steps`` steps (default 32) on chunks already on the device
(MNIST images, batch 128) and counts the page faults they take. Processes
alternate, the order rotating each round; each ratio is the median over rounds
of another contender's over ``tuned``'s, per step and per compile. Off glibc
``tuned`` and ``glibc_defaults`` are the same program. Prints one JSON line.

Run:
    ZOO_DATA_DIR=/path/to/data python benchmarks/allocator.py [--epochs 3]
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

from zoo._allocator import MMAP_THRESHOLD, TRIM_THRESHOLD

PRESETS = ("cnn", "stax_cnn", "resnet8")
CONTENDERS: dict[str, dict[str, str]] = {
    "tuned": {"ZOO_TUNE_ALLOCATOR": "1"},
    "one_arena": {
        "ZOO_TUNE_ALLOCATOR": "0",
        "MALLOC_ARENA_MAX": "1",
        "MALLOC_TRIM_THRESHOLD_": str(TRIM_THRESHOLD),
        "MALLOC_MMAP_THRESHOLD_": str(MMAP_THRESHOLD),
    },
    "glibc_defaults": {"ZOO_TUNE_ALLOCATOR": "0"},
}


def worker(name: str, steps: int, data_dir: str | None) -> None:
    """Time ``steps`` training steps of preset ``name``; print one JSON line."""
    import _harness as h
    import jax
    import optax

    import zoo
    from zoo.data import Chunk, load_mnist
    from zoo.train import TrainState, make_train_step

    train = load_mnist("train", data_dir=data_dir)
    model, state = zoo.create_model(name, key=jax.random.key(0))
    optimizer = optax.adam(1e-3)
    ts = TrainState.init(model, state, optimizer, key=jax.random.key(1))
    step = make_train_step(optimizer)
    k = h.fit_steps_per_call(model, state, train)
    calls = max(steps // k, 1)
    xs, ys = h.device_batches(train, calls * k, model.input_shape, seed=0)
    mask = jax.numpy.ones((k, h.BATCH_SIZE), bool)
    chunks = [Chunk(xs[i : i + k], ys[i : i + k], mask) for i in range(0, calls * k, k)]
    lowered = step.lower(ts, chunks[0])
    start = time.perf_counter()
    lowered.compile()  # the call below then finds the program compiled
    compile_s = time.perf_counter() - start
    for chunk in chunks[:3]:
        ts, _ = step(ts, chunk)
    jax.block_until_ready(ts)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    start = time.perf_counter()
    for chunk in chunks:
        ts, _ = step(ts, chunk)
    jax.block_until_ready(ts)
    seconds = time.perf_counter() - start
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    print(
        json.dumps(
            {
                "tuned": zoo.allocator_tuned(),
                "compile_s": compile_s,
                "ms_per_step": 1e3 * seconds / (calls * k),
                "faults_per_step": faults / (calls * k),
            }
        )
    )


def run_worker(
    name: str, env: dict[str, str], steps: int, data_dir: str | None
) -> dict:
    command = [sys.executable, __file__, "--worker", name, "--steps", str(steps)]
    if data_dir:
        command += ["--data-dir", data_dir]
    base = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    done = subprocess.run(
        command, capture_output=True, text=True, env={**base, **env}, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"{name} worker failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    import _harness as h

    p = h.parser(
        "Training steps with and without the allocator tuning.",
        epochs=3,
        limit_steps=32,
    )
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--steps", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args.worker, args.steps, args.data_dir)
    steps = args.limit_steps or h.STEPS_PER_MNIST_EPOCH
    result: dict[str, object] = {"benchmark": "allocator", "steps_timed": steps}
    names = list(CONTENDERS)
    for preset in PRESETS:
        runs: dict[str, list[dict]] = {n: [] for n in names}
        for r in range(args.epochs):
            shift = r % len(names)
            for n in names[shift:] + names[:shift]:
                runs[n].append(run_worker(preset, CONTENDERS[n], steps, args.data_dir))
        ms = {n: [x["ms_per_step"] for x in rs] for n, rs in runs.items()}
        compile_s = {n: [x["compile_s"] for x in rs] for n, rs in runs.items()}
        others = [n for n in names if n != "tuned"]
        result[preset] = {
            "ms_per_step": {n: round(h.median(v), 2) for n, v in ms.items()},
            "compile_s": {n: round(h.median(v), 2) for n, v in compile_s.items()},
            "faults_per_step": {
                n: round(h.median([x["faults_per_step"] for x in rs]), 1)
                for n, rs in runs.items()
            },
            "step_over_tuned": {
                n: round(h.ratio(ms[n], ms["tuned"]), 3) for n in others
            },
            "compile_over_tuned": {
                n: round(h.ratio(compile_s[n], compile_s["tuned"]), 3) for n in others
            },
            "tuned": runs["tuned"][0]["tuned"],
            "per_round_ms": {n: h.rounded(v, 2) for n, v in ms.items()},
        }
    h.emit(result)


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    main()
