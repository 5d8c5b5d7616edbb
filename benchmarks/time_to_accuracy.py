"""Wall-clock seconds from process start until 99.0 % on the MNIST test set.

Each run is a fresh Python process (imports, data loading and compilation
count): the clock starts just before it is spawned and stops when it reports
an evaluation on all 10,000 test images at the target. Both contenders train
a preset's architecture (``--models``, default ``cnn``) with Adam, no
augmentation, at each of ``--batch-sizes`` (a recipe each), on the same
learning rate: ``--schedule onecycle`` (one epoch to a peak of ``--lr``,
evaluated every 10 % of it from 70 % on) or ``constant`` (evaluated every
quarter epoch after 38,400 examples, at most ``MAX_EPOCHS``).

* ``zoo``: zoo's public parts (``TrainState``, ``make_train_step``,
  ``DeviceFeed``, ``evaluate``), the steps per call ``fit`` would choose,
  after ``zoo.runtime.tune_cpu()`` (unless ``--no-tune``) and with JAX's
  compilation cache in a folder of its own
  (``zoo.runtime.enable_compilation_cache``): empty for every worker
  (``--compilation-cache cold``, a first run) or filled by an untimed run of
  the recipe (``warm``, a later run);
* ``pytorch``: the same network in PyTorch eager (``_pytorch.py``); left out
  when torch is not installed.

Round ``r`` seeds both with ``r``; a recipe's seconds are the median over
rounds, and each contender's result its fastest recipe (target: zoo <= 0.8x
PyTorch). Prints one JSON line.

Run:
    ZOO_DATA_DIR=/path/to/data python benchmarks/time_to_accuracy.py \
        [--epochs 5] [--models cnn] [--batch-sizes 64,128] \
        [--schedule onecycle] [--lr 8e-3] [--compilation-cache cold]
"""

import argparse
import atexit
import itertools
import json
import math
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

TARGET_ACCURACY = 0.99
TARGET_RATIO = ("<=", 0.8)
MODELS = ("cnn",)
BATCH_SIZES = (64, 128)
"""Batch 256 was never either contender's fastest (zoo 19.6 s, PyTorch 28.0 s
against 16.3 s and 20.1 s at 128); ``--batch-sizes 64,128,256`` still runs it."""
ROUNDS = 5
"""Seeds per recipe: where 99 % is first crossed moves with the seed by one
evaluation (2-3 s of 16-21), so one round decides the ratio by luck."""
SCHEDULES = ("onecycle", "constant")
LEARNING_RATES = {"onecycle": 8e-3, "constant": 1e-3}  # peak / constant
TRAIN_EXAMPLES = 60_000
FIRST_EVAL_EXAMPLES = 38_400  # constant: 300 steps at batch 128
EVAL_EVERY_EXAMPLES = 14_976  # constant: 117 steps at batch 128, a quarter epoch
MAX_EPOCHS = 6
EVAL_BATCH_SIZE = 500
SMOKE_RECIPE = {"models": "stax_cnn", "batch_sizes": "128"}
"""--smoke: one small recipe, and only ``--limit-steps`` steps (default 2)."""
JAX_CACHE_VARIABLES = (
    "JAX_COMPILATION_CACHE_DIR",
    "JAX_ENABLE_COMPILATION_CACHE",
    "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS",
    "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES",
)


def cadence(
    batch_size: int, schedule: str, limit_steps: int | None = None
) -> tuple[int, int]:
    """``(first, every)``: the evaluation points in steps at ``batch_size``;
    with ``limit_steps``, one evaluation at that step."""
    if limit_steps:
        return limit_steps, limit_steps
    if schedule == "onecycle":
        cycle = TRAIN_EXAMPLES // batch_size
        return math.ceil(0.7 * cycle), math.ceil(0.1 * cycle)
    return FIRST_EVAL_EXAMPLES // batch_size, EVAL_EVERY_EXAMPLES // batch_size


def give_up_after(
    batch_size: int, schedule: str, limit_steps: int | None = None
) -> int:
    """The step after which a run that has not reached the target stops.

    A one-cycle run stops at the first evaluation past the cycle's end, where
    the learning rate has fallen to nothing; a constant one after
    ``MAX_EPOCHS``; any run after ``limit_steps`` where given.
    """
    if limit_steps:
        return limit_steps
    steps_per_epoch = TRAIN_EXAMPLES // batch_size  # a one-cycle run's cycle
    return steps_per_epoch if schedule == "onecycle" else MAX_EPOCHS * steps_per_epoch


def learning_rate(schedule: str, peak: float, batch_size: int) -> Any:
    """The learning rate, a number or an optax schedule (of the step count)."""
    import optax

    if schedule == "onecycle":
        return optax.cosine_onecycle_schedule(TRAIN_EXAMPLES // batch_size, peak)
    return peak


def zoo_worker(
    data_dir: str | None, model_name: str, schedule: str, lr: float,
    batch_size: int, seed: int, *, tune: bool, cache_dir: str,
    limit_steps: int | None,
) -> None:  # fmt: skip
    """Train until the target; print one JSON line per evaluation."""
    import zoo

    if tune:  # first thing, as a training script does
        zoo.runtime.tune_cpu()
    if cache_dir:
        zoo.runtime.enable_compilation_cache(cache_dir)

    import jax
    import optax

    from zoo.data import load_mnist, train_pipeline
    from zoo.train import DeviceFeed, TrainState, evaluate, make_train_step

    train = load_mnist("train", data_dir=data_dir)
    test = load_mnist("test", data_dir=data_dir)
    model, state = zoo.create_model(model_name, key=jax.random.key(2 * seed))
    optimizer = optax.adam(learning_rate(schedule, lr, batch_size))
    ts = TrainState.init(model, state, optimizer, key=jax.random.key(2 * seed + 1))
    step = make_train_step(optimizer)
    batches = iter(
        train_pipeline(train, batch_size=batch_size, seed=seed, num_epochs=MAX_EPOCHS)
    )
    k = zoo.train.steps_per_call(  # what fit would fuse
        model, state, train.inputs[0], batch_size=batch_size,
        steps_per_epoch=len(train) // batch_size,
    )  # fmt: skip
    feed = DeviceFeed(batches, steps_per_call=k)
    first, every = cadence(batch_size, schedule, limit_steps)
    last_eval = first - every
    last = give_up_after(batch_size, schedule, limit_steps)
    done = 0
    for chunk in feed:
        ts, _ = step(ts, chunk)
        done += chunk.steps
        if done - last_eval >= every:
            last_eval = done
            accuracy = evaluate(
                ts.model, ts.model_state, test, batch_size=EVAL_BATCH_SIZE
            )["accuracy"]
            _report(done, accuracy)
            if accuracy >= TARGET_ACCURACY or done >= last:
                return


def pytorch_worker(
    data_dir: str | None, model_name: str, schedule: str, lr: float,
    batch_size: int, seed: int, device: str, limit_steps: int | None,
) -> None:  # fmt: skip
    """The PyTorch reference: same network, optimiser, batch and cadence."""
    import _pytorch
    import jax
    import numpy as np
    import torch  # pyright: ignore[reportMissingImports] (the bench group)

    import zoo
    from zoo.data import load_mnist

    train = load_mnist("train", data_dir=data_dir)
    test = load_mnist("test", data_dir=data_dir)
    config = dict(zoo.models.model_spec(model_name).config)
    loop = _pytorch.TorchLoop(
        config, train.inputs, train.labels, learning_rate=lr,
        batch_size=batch_size, threads=_pytorch.jax_threads(), device=device,
    )  # fmt: skip
    torch.manual_seed(seed)  # this round's initial values and dropout draws
    for module in loop.model.modules():
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
    images = torch.from_numpy(test.inputs.astype("float32") / 255.0).to(device)
    labels = torch.from_numpy(test.labels.astype("int64")).to(device)
    steps_per_epoch = len(train) // batch_size
    rate = learning_rate(schedule, lr, batch_size)
    if callable(rate):  # optax's values, step by step, computed once
        rate = np.asarray(jax.vmap(rate)(np.arange(MAX_EPOCHS * steps_per_epoch)))
    first, every = cadence(batch_size, schedule, limit_steps)
    done, last_eval = 0, first - every
    last = give_up_after(batch_size, schedule, limit_steps)
    for epoch in range(MAX_EPOCHS):
        order = loop.order(1000 * seed + epoch)
        for i in range(steps_per_epoch):
            loop.model.train()
            rows = order[i * batch_size : (i + 1) * batch_size]
            loop.optimizer.zero_grad(set_to_none=True)
            loss = loop.loss(loop.model(loop.images[rows]), loop.labels[rows])
            loss.backward()
            if isinstance(rate, np.ndarray):
                for group in loop.optimizer.param_groups:
                    group["lr"] = float(rate[done])
            loop.optimizer.step()
            done += 1
            if done - last_eval >= every:
                last_eval = done
                loop.model.eval()
                b = EVAL_BATCH_SIZE
                with torch.no_grad():
                    correct = sum(
                        int((loop.model(images[j : j + b]).argmax(1) ==
                             labels[j : j + b]).sum())
                        for j in range(0, len(labels), b)
                    )  # fmt: skip
                _report(done, correct / len(labels))
                if correct / len(labels) >= TARGET_ACCURACY or done >= last:
                    return


def _report(step: int, accuracy: float) -> None:
    print(json.dumps({"time": time.time(), "step": step, "accuracy": accuracy}))
    sys.stdout.flush()


def run_contender(
    name: str,
    data_dir: str | None,
    model: str,
    schedule: str,
    lr: float,
    batch_size: int,
    seed: int,
    torch_device: str,
    compilation_cache: str | None = None,
    flags: Sequence[str] = (),
) -> dict[str, object]:
    """Spawn one worker; seconds from spawn until it first reports the target.

    ``compilation_cache``: the folder of JAX's compilation cache for a zoo
    worker (``None``: a new empty one, removed afterwards; ``""``: none).
    ``flags``: more flags for the worker (``--no-tune``, ``--limit-steps N``).
    """
    command = [sys.executable, __file__, "--worker", name, "--models", model]
    command += ["--schedule", schedule, "--lr", str(lr)]
    command += ["--batch-sizes", str(batch_size), "--seed", str(seed)]
    command += ["--torch-device", torch_device, *flags]
    if data_dir:
        command += ["--data-dir", data_dir]
    # The worker's cache is the folder it is given, whatever JAX_* says here.
    env = {k: v for k, v in os.environ.items() if k not in JAX_CACHE_VARIABLES}
    with tempfile.TemporaryDirectory(prefix="zoo-xla-") as empty:
        folder = empty if compilation_cache is None else compilation_cache
        command += ["--cache-dir", folder]
        start = time.time()
        done = subprocess.run(
            command, capture_output=True, text=True, env=env, check=False
        )
    if done.returncode != 0:
        raise RuntimeError(f"{name} worker failed:\n{done.stderr[-3000:]}")
    evals = [json.loads(line) for line in done.stdout.splitlines() if line[:1] == "{"]
    reached = [e for e in evals if e["accuracy"] >= TARGET_ACCURACY]
    first = reached[0] if reached else None
    return {
        "seconds": None if first is None else round(first["time"] - start, 2),
        "steps": None if first is None else first["step"],
        "evaluations": [
            (e["step"], round(e["accuracy"], 4), round(e["time"] - start, 2))
            for e in evals
        ],
    }


def pace(runs: list[dict[str, Any]]) -> dict[str, float | None]:
    """Seed-free speed: seconds to the first evaluation, and per interval after.

    Where 99 % is first crossed moves with the seed, but every run passes the
    same evaluation points (:func:`cadence`): ``first_evaluation_seconds``
    (start-up, compilation, the steps to the first point and one evaluation)
    and ``interval_seconds`` (the steps to the next point and one evaluation;
    ``None`` after a single evaluation), medians over the rounds' evaluations.
    """
    firsts = [r["evaluations"][0][2] for r in runs if r["evaluations"]]
    intervals = [
        later[2] - earlier[2]
        for r in runs
        for earlier, later in itertools.pairwise(r["evaluations"])
    ]
    return {
        "first_evaluation_seconds": round(statistics.median(firsts), 2),
        "interval_seconds": round(statistics.median(intervals), 2)
        if intervals
        else None,
    }


def main() -> None:
    p = argparse.ArgumentParser(description="Seconds until 99.0 % on MNIST.")
    p.add_argument(
        "--epochs", type=int, default=ROUNDS, help="rounds per contender and recipe"
    )
    p.add_argument("--data-dir", default=None, help="defaults to $ZOO_DATA_DIR")
    p.add_argument("--worker", choices=["zoo", "pytorch"], help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--torch-device", default="cpu", help=argparse.SUPPRESS)
    p.add_argument(
        "--schedule",
        choices=SCHEDULES,
        default=SCHEDULES[0],
        help="the learning rate over the steps (default %(default)s)",
    )
    p.add_argument(
        "--lr",
        type=float,
        default=None,
        help="peak (onecycle) or constant learning rate; default "
        + ", ".join(f"{k} {v}" for k, v in LEARNING_RATES.items()),
    )
    p.add_argument(
        "--models",
        default=",".join(MODELS),
        help="the recipes' architectures: comma-separated presets (default "
        "%(default)s)",
    )
    p.add_argument(
        "--batch-sizes",
        default=",".join(map(str, BATCH_SIZES)),
        help="the recipes' batch sizes, comma-separated (default %(default)s)",
    )
    p.add_argument(
        "--compilation-cache",
        choices=("cold", "warm", "off"),
        default="cold",
        help="zoo workers' compilation cache: a new empty folder (a first run), "
        "one an untimed run of the same recipe filled, or none (default "
        "%(default)s)",
    )
    p.add_argument("--no-cache", action="store_true", help="--compilation-cache off")
    p.add_argument(
        "--no-tune",
        action="store_true",
        help="zoo workers skip zoo.runtime.tune_cpu()",
    )
    p.add_argument(
        "--limit-steps",
        type=int,
        default=None,
        help="stop every run after this many steps, evaluated once there (a "
        "test that the script works, not a measurement)",
    )
    p.add_argument(
        "--smoke",
        action="store_true",
        help=f"one small recipe ({SMOKE_RECIPE}), --limit-steps 2 unless given",
    )
    p.add_argument("--cache-dir", default="", help=argparse.SUPPRESS)
    p.add_argument(
        "--contenders",
        default="zoo,pytorch",
        help="comma-separated, from zoo and pytorch (default %(default)s)",
    )
    args = p.parse_args()
    if args.smoke:
        args.models, args.batch_sizes = (
            SMOKE_RECIPE["models"],
            SMOKE_RECIPE["batch_sizes"],
        )
        args.limit_steps = args.limit_steps or 2
    if args.no_cache:
        args.compilation_cache = "off"
    lr = LEARNING_RATES[args.schedule] if args.lr is None else args.lr
    models = args.models.split(",")
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    if args.worker == "zoo":
        return zoo_worker(
            args.data_dir, models[0], args.schedule, lr, batch_sizes[0], args.seed,
            tune=not args.no_tune, cache_dir=args.cache_dir,
            limit_steps=args.limit_steps,
        )  # fmt: skip
    if args.worker == "pytorch":
        return pytorch_worker(
            args.data_dir, models[0], args.schedule, lr, batch_sizes[0], args.seed,
            args.torch_device, args.limit_steps,
        )  # fmt: skip

    sys.path.insert(0, str(pathlib.Path(__file__).parent))
    import _harness as h
    import _pytorch
    import jax

    # The parent only starts workers: it opts in to nothing.
    h.opt_in(tune=False, cache=False)
    torch_device = _pytorch.device_for(jax.default_backend())
    flags = ["--no-tune"] if args.no_tune else []
    if args.limit_steps:
        flags += ["--limit-steps", str(args.limit_steps)]

    names = args.contenders.split(",")
    unknown = sorted(set(names) - {"zoo", "pytorch"})
    if unknown or not names:
        p.error(f"--contenders takes zoo and/or pytorch, got {args.contenders!r}")
    if not _pytorch.available():
        if names == ["pytorch"]:
            p.error("PyTorch is not installed: pip install --group bench")
        names = [n for n in names if n != "pytorch"]  # zoo alone
    recipes: dict[str, dict[str, object]] = {}
    best: dict[str, tuple[float, str]] = {}  # contender: (seconds, recipe)
    for model, batch_size in itertools.product(models, batch_sizes):
        runs: dict[str, list[dict[str, object]]] = {n: [] for n in names}
        warm = "" if args.compilation_cache == "off" else None
        if args.compilation_cache == "warm" and "zoo" in names:
            warm = tempfile.mkdtemp(prefix="zoo-xla-")  # this recipe's programs
            atexit.register(shutil.rmtree, warm, ignore_errors=True)
            run_contender(
                "zoo", args.data_dir, model, args.schedule, lr, batch_size, 0,
                torch_device, warm, flags,
            )  # fmt: skip
        for r in range(args.epochs):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                runs[name].append(
                    run_contender(
                        name,
                        args.data_dir,
                        model,
                        args.schedule,
                        lr,
                        batch_size,
                        r,
                        torch_device,
                        warm,
                        flags,
                    )
                )
        # A round that never reached the target counts as infinitely slow.
        seconds = {
            n: statistics.median(
                math.inf if x["seconds"] is None else float(x["seconds"])  # pyright: ignore[reportArgumentType]
                for x in rs
            )
            for n, rs in runs.items()
        }
        seconds = {n: sec for n, sec in seconds.items() if math.isfinite(sec)}
        name_of_recipe = f"{model}_batch_{batch_size}"
        for n, sec in seconds.items():
            if n not in best or sec < best[n][0]:
                best[n] = (sec, name_of_recipe)
        first, every = cadence(batch_size, args.schedule, args.limit_steps)
        recipe: dict[str, object] = {
            "model": model,
            "batch_size": batch_size,
            "evaluation": f"all 10,000 test images every {every} steps from step "
            f"{first}",
            "seconds_to_target": seconds,
            "pace": {n: pace(rs) for n, rs in runs.items()},
            "runs": runs,
        }
        if "pytorch" in seconds and "zoo" in seconds:
            recipe["zoo_over_pytorch"] = round(seconds["zoo"] / seconds["pytorch"], 3)
        recipes[name_of_recipe] = recipe
    result: dict[str, object] = {
        "benchmark": "time_to_accuracy",
        "target_accuracy": TARGET_ACCURACY,
        "optimizer": "adam",
        "schedule": args.schedule,
        "learning_rate": lr,
        "augmentation": None,
        "compilation_cache": args.compilation_cache,
        "recipes": recipes,
        "best": {n: {"seconds": s, "recipe": r} for n, (s, r) in best.items()},
        "pytorch": _pytorch.version(),
        "pytorch_device": torch_device,
        "backend": jax.default_backend(),
    }
    if "pytorch" in best and "zoo" in best:
        ratio = best["zoo"][0] / best["pytorch"][0]
        result["zoo_over_pytorch"] = round(ratio, 3)
        result["met"] = h.targets_met({"r": ratio}, {"r": TARGET_RATIO})["r"]
        result["target"] = (
            f"zoo_over_pytorch (each at its fastest recipe) {TARGET_RATIO[0]} "
            f"{TARGET_RATIO[1]}"
        )
    h.emit(result)


if __name__ == "__main__":
    main()
