"""What ``import zoo``'s allocator tuning saves: training steps with and without it.

The tuning (``zoo/_allocator.py``) is process-wide and must come before the
first JAX computation, so each contender is a fresh Python process:

* ``tuned``: the default, ``import zoo`` sets glibc's allocator to keep and
  reuse freed heap memory;
* ``glibc_defaults``: the same with ``ZOO_TUNE_ALLOCATOR=0``.

Each process compiles ``make_train_step(adam)`` for fit's steps per call, runs
3 calls to warm up, then times ``--limit-steps`` steps (default 32) on chunks
already on the device (MNIST images, batch 128) and counts the page faults they
take. Processes alternate, the order rotating each round; the ratio is the
median over rounds of glibc_defaults / tuned seconds per step. Off glibc the
two contenders are the same program. Prints one JSON line.

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

PRESETS = ("cnn", "stax_cnn", "resnet8")
CONTENDERS = {"tuned": "1", "glibc_defaults": "0"}


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
                "ms_per_step": 1e3 * seconds / (calls * k),
                "faults_per_step": faults / (calls * k),
            }
        )
    )


def run_worker(name: str, tune: str, steps: int, data_dir: str | None) -> dict:
    command = [sys.executable, __file__, "--worker", name, "--steps", str(steps)]
    if data_dir:
        command += ["--data-dir", data_dir]
    env = {**os.environ, "ZOO_TUNE_ALLOCATOR": tune}
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
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
            for n in names[r % 2 :] + names[: r % 2]:
                runs[n].append(run_worker(preset, CONTENDERS[n], steps, args.data_dir))
        ms = {n: [x["ms_per_step"] for x in rs] for n, rs in runs.items()}
        result[preset] = {
            "ms_per_step": {n: round(h.median(v), 2) for n, v in ms.items()},
            "faults_per_step": {
                n: round(h.median([x["faults_per_step"] for x in rs]), 1)
                for n, rs in runs.items()
            },
            "glibc_defaults_over_tuned": round(
                h.ratio(ms["glibc_defaults"], ms["tuned"]), 3
            ),
            "tuned": runs["tuned"][0]["tuned"],
            "per_round_ms": {n: h.rounded(v, 2) for n, v in ms.items()},
        }
    h.emit(result)


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    main()
