"""What ``zoo.runtime.tune_cpu()`` saves: compiling and training steps.

The allocator settings are process-wide and must come before the first JAX
computation, so every measurement is a fresh Python process:

* ``tuned``: the worker calls ``zoo.runtime.tune_cpu()`` first thing;
* ``one_arena``: similar thresholds in a single arena for every thread, set
  through glibc's ``MALLOC_*`` variables (``tune_cpu()`` then leaves them);
* ``glibc_defaults``: no tuning, as a plain script that does not opt in.

Each worker compiles ``make_train_step(adam)`` for fit's steps per call
(``compile_s``; JAX's compilation cache off), runs 3 calls to warm up, then
times ``--limit-steps`` steps (default 32) on MNIST chunks already on the
device (batch 128) and counts their page faults. Processes alternate, the
order rotating each round; ratios are medians over rounds of each contender's
over ``tuned``'s. Prints one JSON line.

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
SMOKE_PRESETS = ("mlp",)
TRIM_THRESHOLD = 512 * 2**20  # bytes, as tune_cpu() sets them
MMAP_THRESHOLD = 2**30
CONTENDERS: dict[str, dict[str, str]] = {
    "tuned": {},
    "one_arena": {
        "MALLOC_ARENA_MAX": "1",
        "MALLOC_TRIM_THRESHOLD_": str(TRIM_THRESHOLD),
        "MALLOC_MMAP_THRESHOLD_": str(MMAP_THRESHOLD),
    },
    "glibc_defaults": {},
}


def worker(name: str, steps: int, data_dir: str | None, tune: bool) -> None:
    """Time ``steps`` training steps of preset ``name``; print one JSON line."""
    import zoo

    tuned = zoo.runtime.tune_cpu() if tune else False  # before JAX computes

    import _harness as h
    import jax
    import optax

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
                "tuned": tuned,
                "compile_s": compile_s,
                "ms_per_step": 1e3 * seconds / (calls * k),
                "faults_per_step": faults / (calls * k),
            }
        )
    )


def run_worker(preset: str, contender: str, steps: int, data_dir: str | None) -> dict:
    """One fresh process for ``contender``; its JSON line."""
    command = [sys.executable, __file__, "--worker", preset, "--steps", str(steps)]
    if contender == "tuned":
        command.append("--tune")
    if data_dir:
        command += ["--data-dir", data_dir]
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"
    }
    env = {
        **base,
        **CONTENDERS[contender],
        "JAX_ENABLE_COMPILATION_CACHE": "false",  # every worker compiles
    }
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{contender} worker failed:\n{done.stderr[-3000:]}")
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
    p.add_argument("--tune", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args.worker, args.steps, args.data_dir, args.tune)
    # The parent only starts workers: it opts in to nothing.
    h.opt_in(tune=False, cache=False)
    steps = args.limit_steps or h.STEPS_PER_MNIST_EPOCH
    result: dict[str, object] = {"benchmark": "allocator", "steps_timed": steps}
    names = ["tuned", "glibc_defaults"] if args.smoke else list(CONTENDERS)
    for preset in SMOKE_PRESETS if args.smoke else PRESETS:
        runs: dict[str, list[dict]] = {n: [] for n in names}
        for r in range(args.epochs):
            shift = r % len(names)
            for n in names[shift:] + names[:shift]:
                runs[n].append(run_worker(preset, n, steps, args.data_dir))
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
            "tune_cpu_applied": runs["tuned"][0]["tuned"],
            "per_round_ms": {n: h.rounded(v, 2) for n, v in ms.items()},
        }
    h.emit(result)


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    main()
