"""Wall-clock seconds from process start until 99.0 % on the MNIST test set.

Each run is a fresh Python process, so imports, data loading and compilation
count; the clock starts just before the process is spawned and stops when the
worker reports that an evaluation on all 10,000 test images reached the target.

Both contenders train a preset's architecture (``--models``: by default the
``cnn`` preset, 3 conv3x3-BN-ReLU-maxpool blocks, dense 256, dropout 0.3) with
Adam and no augmentation, for each model and each batch size of
``--batch-sizes`` (a recipe each), on the same learning rate at every step:

* ``--schedule onecycle`` (the default): ``optax.cosine_onecycle_schedule``
  over one epoch to a peak of ``--lr`` (default 8e-3), then its final value.
  The test set is evaluated from 70 % of the cycle on, every 10 % of it, up to
  the first evaluation past its end (:func:`give_up_after`).
* ``--schedule constant``: ``--lr`` (default 1e-3) throughout, evaluated first
  after ``FIRST_EVAL_EXAMPLES`` examples, then every ``EVAL_EVERY_EXAMPLES``
  (a quarter epoch), for at most ``MAX_EPOCHS``.

Evaluations fall at the first step boundary (zoo: chunk boundary) on or after
each point.

* ``zoo``: zoo's public parts (``TrainState``, ``make_train_step``,
  ``DeviceFeed``, ``evaluate``) with the steps fused per call that ``fit``
  would choose.
* ``pytorch``: the same architecture in PyTorch eager (``torch.set_num_threads``
  equal to JAX's threads; on the GPU when JAX runs on one), tensors in memory,
  ``model.eval()`` under ``torch.no_grad()``.

Both evaluate in batches of ``EVAL_BATCH_SIZE`` (zoo's default; PyTorch's
evaluation took as long at 256 to 1,000).

zoo keeps its compiled programs on disk (``ZOO_COMPILATION_CACHE``), so a
script's second run skips most of its compilation. ``--compilation-cache
cold`` (the default) times first runs: every zoo worker starts from an empty
cache folder of its own. ``warm`` times later runs: one untimed zoo run per
recipe fills a folder that its rounds then share.

Round ``r`` of each recipe seeds both contenders with ``r`` (initial values,
data order, dropout), so rounds differ in where 99 % is first crossed as well
as in time; a recipe's seconds are the median over rounds. Each contender's
result is its fastest recipe, and the target compares those: zoo's seconds <=
0.8x PyTorch's. The same-recipe ratios are printed too, and each contender's
``pace`` (see :func:`pace`), which moves little with the seed. Contenders alternate
within a recipe, rounds rotating their order. Prints one JSON line. PyTorch
comes from the ``bench`` dependency group; without it only zoo is timed.

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


def cadence(batch_size: int, schedule: str) -> tuple[int, int]:
    """``(first, every)``: the evaluation points in steps at ``batch_size``."""
    if schedule == "onecycle":
        cycle = TRAIN_EXAMPLES // batch_size
        return math.ceil(0.7 * cycle), math.ceil(0.1 * cycle)
    return FIRST_EVAL_EXAMPLES // batch_size, EVAL_EVERY_EXAMPLES // batch_size


def give_up_after(batch_size: int, schedule: str) -> int:
    """The step after which a run that has not reached the target stops.

    A one-cycle run stops at the first evaluation past the cycle's end, where
    the learning rate has fallen to nothing; a constant one after
    ``MAX_EPOCHS``.
    """
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
    batch_size: int, seed: int,
) -> None:  # fmt: skip
    """Train until the target; print one JSON line per evaluation."""
    import jax
    import optax

    import zoo
    from zoo.data import load_mnist, train_pipeline
    from zoo.train import DeviceFeed, TrainState, _tuning, evaluate, make_train_step

    train = load_mnist("train", data_dir=data_dir)
    test = load_mnist("test", data_dir=data_dir)
    model, state = zoo.create_model(model_name, key=jax.random.key(2 * seed))
    optimizer = optax.adam(learning_rate(schedule, lr, batch_size))
    ts = TrainState.init(model, state, optimizer, key=jax.random.key(2 * seed + 1))
    step = make_train_step(optimizer)
    batches = iter(
        train_pipeline(train, batch_size=batch_size, seed=seed, num_epochs=MAX_EPOCHS)
    )
    k = _tuning.steps_per_call(  # what fit would fuse
        model, state, train.inputs[0], batch_size=batch_size,
        steps_per_epoch=len(train) // batch_size,
    )  # fmt: skip
    feed = DeviceFeed(batches, steps_per_call=k)
    first, every = cadence(batch_size, schedule)
    last_eval, last = first - every, give_up_after(batch_size, schedule)
    for chunk in feed:
        ts, _ = step(ts, chunk)
        if feed.step - last_eval >= every:
            last_eval = feed.step
            accuracy = evaluate(
                ts.model, ts.model_state, test, batch_size=EVAL_BATCH_SIZE
            )["accuracy"]
            _report(feed.step, accuracy)
            if accuracy >= TARGET_ACCURACY or feed.step >= last:
                return


def pytorch_worker(
    data_dir: str | None, model_name: str, schedule: str, lr: float,
    batch_size: int, seed: int, device: str,
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
    config = dict(zoo.model_spec(model_name).config)
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
    first, every = cadence(batch_size, schedule)
    done, last_eval = 0, first - every
    last = give_up_after(batch_size, schedule)
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
) -> dict[str, object]:
    """Spawn one worker; seconds from spawn until it first reports the target.

    ``compilation_cache``: the folder of zoo's compiled programs for a zoo
    worker (``None``: a new empty one, removed afterwards).
    """
    command = [sys.executable, __file__, "--worker", name, "--models", model]
    command += ["--schedule", schedule, "--lr", str(lr)]
    command += ["--batch-sizes", str(batch_size), "--seed", str(seed)]
    command += ["--torch-device", torch_device]
    if data_dir:
        command += ["--data-dir", data_dir]
    with tempfile.TemporaryDirectory(prefix="zoo-xla-") as empty:
        env = {**os.environ, "ZOO_COMPILATION_CACHE": compilation_cache or empty}
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


def pace(runs: list[dict[str, Any]]) -> dict[str, float]:
    """Seed-free speed: seconds to the first evaluation, and per interval after.

    Where 99 % is first crossed moves with the seed, but every run passes the
    same evaluation points (:func:`cadence`): ``first_evaluation_seconds``
    (start-up, compilation, the steps to the first point and one evaluation)
    and ``interval_seconds`` (the steps to the next point and one evaluation),
    medians over the rounds' evaluations.
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
        else float("nan"),
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
        choices=("cold", "warm"),
        default="cold",
        help="zoo's compiled programs: none on disk (a first run), or kept from "
        "an untimed run of the same recipe (default %(default)s)",
    )
    p.add_argument(
        "--contenders",
        default="zoo,pytorch",
        help="comma-separated, from zoo and pytorch (default %(default)s)",
    )
    args = p.parse_args()
    lr = LEARNING_RATES[args.schedule] if args.lr is None else args.lr
    models = args.models.split(",")
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    if args.worker == "zoo":
        return zoo_worker(
            args.data_dir, models[0], args.schedule, lr, batch_sizes[0], args.seed
        )
    if args.worker == "pytorch":
        return pytorch_worker(
            args.data_dir, models[0], args.schedule, lr, batch_sizes[0], args.seed,
            args.torch_device,
        )  # fmt: skip

    sys.path.insert(0, str(pathlib.Path(__file__).parent))
    import _harness as h
    import _pytorch
    import jax

    torch_device = _pytorch.device_for(jax.default_backend())

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
        warm = None
        if args.compilation_cache == "warm" and "zoo" in names:
            warm = tempfile.mkdtemp(prefix="zoo-xla-")  # this recipe's programs
            atexit.register(shutil.rmtree, warm, ignore_errors=True)
            run_contender(
                "zoo", args.data_dir, model, args.schedule, lr, batch_size, 0,
                torch_device, warm,
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
        first, every = cadence(batch_size, args.schedule)
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
