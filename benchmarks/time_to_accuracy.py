"""Wall-clock seconds from process start until 99.0 % on the MNIST test set.

Each contender runs in a fresh Python process, so imports, data loading and
compilation count; the clock starts just before the process is spawned and
stops when the worker reports that an evaluation on all 10,000 test images
reached the target. Contenders alternate, rounds rotating their order.

* ``zoo``: the ``cnn`` preset (3 conv3x3-BN-ReLU-maxpool blocks, dense 256,
  dropout 0.3) trained with zoo's public parts (``TrainState``,
  ``make_train_step``, ``DeviceFeed``, ``evaluate``): Adam 1e-3 at batch 128,
  no augmentation, the steps fused per call that ``fit`` would choose, and the
  test set evaluated at the first chunk end ``EVAL_EVERY`` steps or more after
  the last evaluation, the first at step ``FIRST_EVAL`` or after.
* ``pytorch``: the same architecture in PyTorch eager (``torch.set_num_threads``
  equal to JAX's threads), Adam 1e-3 at batch 128, tensors in memory, the same
  evaluation cadence, ``model.eval()`` under ``torch.no_grad()`` in batches of
  1,000.

Target: zoo's seconds <= 0.8x PyTorch's. Prints one JSON line. PyTorch comes
from the ``bench`` dependency group; without it only zoo is timed.

Run:
    ZOO_DATA_DIR=/path/to/data python benchmarks/time_to_accuracy.py [--epochs 1]
"""

import argparse
import json
import pathlib
import subprocess
import sys
import time

TARGET_ACCURACY = 0.99
TARGET_RATIO = ("<=", 0.8)
MODEL = "cnn"
BATCH_SIZE = 128
LEARNING_RATE = 1e-3  # both contenders, unless --zoo-lr says otherwise for zoo
FIRST_EVAL = 300
EVAL_EVERY = 117  # a quarter of an MNIST epoch at batch 128
MAX_EPOCHS = 6


def zoo_worker(data_dir: str | None, learning_rate: float) -> None:
    """Train until the target; print one JSON line per evaluation."""
    import jax
    import optax

    import zoo
    from zoo.data import load_mnist, train_pipeline
    from zoo.train import DeviceFeed, TrainState, _tuning, evaluate, make_train_step

    train = load_mnist("train", data_dir=data_dir)
    test = load_mnist("test", data_dir=data_dir)
    model, state = zoo.create_model(MODEL, key=jax.random.key(0))
    optimizer = optax.adam(learning_rate)
    ts = TrainState.init(model, state, optimizer, key=jax.random.key(1))
    step = make_train_step(optimizer)
    batches = iter(
        train_pipeline(train, batch_size=BATCH_SIZE, seed=0, num_epochs=MAX_EPOCHS)
    )
    k = _tuning.steps_per_call(  # what fit would fuse
        model, state, train.inputs[0], batch_size=BATCH_SIZE,
        steps_per_epoch=len(train) // BATCH_SIZE,
    )  # fmt: skip
    feed = DeviceFeed(batches, steps_per_call=k)
    last_eval = FIRST_EVAL - EVAL_EVERY
    for chunk in feed:
        ts, _ = step(ts, chunk)
        if feed.step - last_eval >= EVAL_EVERY:
            last_eval = feed.step
            accuracy = evaluate(ts.model, ts.model_state, test)["accuracy"]
            _report(feed.step, accuracy)
            if accuracy >= TARGET_ACCURACY:
                return


def pytorch_worker(data_dir: str | None) -> None:
    """The PyTorch reference: same network, optimiser, batch and cadence."""
    import _pytorch
    import torch  # pyright: ignore[reportMissingImports] (the bench group)

    import zoo
    from zoo.data import load_mnist

    train = load_mnist("train", data_dir=data_dir)
    test = load_mnist("test", data_dir=data_dir)
    config = dict(zoo.model_spec(MODEL).config)
    loop = _pytorch.TorchLoop(
        config, train.inputs, train.labels, learning_rate=LEARNING_RATE,
        batch_size=BATCH_SIZE, threads=_pytorch.jax_threads(),
    )  # fmt: skip
    images = torch.from_numpy(test.inputs.astype("float32") / 255.0)
    labels = torch.from_numpy(test.labels.astype("int64"))
    steps_per_epoch = len(train) // BATCH_SIZE
    done, last_eval = 0, FIRST_EVAL - EVAL_EVERY
    for epoch in range(MAX_EPOCHS):
        generator = torch.Generator().manual_seed(epoch)
        order = torch.randperm(len(train), generator=generator)
        for i in range(steps_per_epoch):
            loop.model.train()
            rows = order[i * BATCH_SIZE : (i + 1) * BATCH_SIZE]
            loop.optimizer.zero_grad(set_to_none=True)
            loss = loop.loss(loop.model(loop.images[rows]), loop.labels[rows])
            loss.backward()
            loop.optimizer.step()
            done += 1
            if done - last_eval >= EVAL_EVERY:
                last_eval = done
                loop.model.eval()
                with torch.no_grad():
                    correct = sum(
                        int((loop.model(images[j : j + 1000]).argmax(1) ==
                             labels[j : j + 1000]).sum())
                        for j in range(0, len(labels), 1000)
                    )  # fmt: skip
                _report(done, correct / len(labels))
                if correct / len(labels) >= TARGET_ACCURACY:
                    return


def _report(step: int, accuracy: float) -> None:
    print(json.dumps({"time": time.time(), "step": step, "accuracy": accuracy}))
    sys.stdout.flush()


def run_contender(name: str, data_dir: str | None, zoo_lr: float) -> dict[str, object]:
    """Spawn one worker; seconds from spawn until it first reports the target."""
    command = [sys.executable, __file__, "--worker", name, "--zoo-lr", str(zoo_lr)]
    if data_dir:
        command += ["--data-dir", data_dir]
    start = time.time()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{name} worker failed:\n{done.stderr[-3000:]}")
    evals = [json.loads(line) for line in done.stdout.splitlines() if line[:1] == "{"]
    reached = [e for e in evals if e["accuracy"] >= TARGET_ACCURACY]
    first = reached[0] if reached else None
    return {
        "seconds": None if first is None else round(first["time"] - start, 2),
        "steps": None if first is None else first["step"],
        "evaluations": [(e["step"], round(e["accuracy"], 4)) for e in evals],
    }


def main() -> None:
    p = argparse.ArgumentParser(description="Seconds until 99.0 % on MNIST.")
    p.add_argument("--epochs", type=int, default=1, help="rounds per contender")
    p.add_argument("--data-dir", default=None, help="defaults to $ZOO_DATA_DIR")
    p.add_argument("--worker", choices=["zoo", "pytorch"], help=argparse.SUPPRESS)
    p.add_argument(
        "--zoo-lr", type=float, default=LEARNING_RATE, help="zoo's Adam learning rate"
    )
    args = p.parse_args()
    if args.worker == "zoo":
        return zoo_worker(args.data_dir, args.zoo_lr)
    if args.worker == "pytorch":
        return pytorch_worker(args.data_dir)

    sys.path.insert(0, str(pathlib.Path(__file__).parent))
    import _harness as h
    import _pytorch

    names = ["zoo", "pytorch"] if _pytorch.available() else ["zoo"]
    runs: dict[str, list[dict[str, object]]] = {n: [] for n in names}
    for r in range(args.epochs):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            runs[name].append(run_contender(name, args.data_dir, args.zoo_lr))
    seconds = {
        n: h.median([float(x["seconds"]) for x in rs if x["seconds"] is not None])  # pyright: ignore[reportArgumentType]
        for n, rs in runs.items()
        if any(x["seconds"] is not None for x in rs)
    }
    result: dict[str, object] = {
        "benchmark": "time_to_accuracy",
        "target_accuracy": TARGET_ACCURACY,
        "recipe": {
            "model": MODEL,
            "optimizer": f"adam {args.zoo_lr} (pytorch: adam {LEARNING_RATE})",
            "batch_size": BATCH_SIZE,
            "augmentation": None,
            "evaluation": f"all 10,000 test images every {EVAL_EVERY} steps "
            f"from step {FIRST_EVAL}",
        },
        "seconds_to_target": seconds,
        "runs": runs,
        "pytorch": _pytorch.version(),
    }
    if "pytorch" in seconds and "zoo" in seconds:
        ratio = seconds["zoo"] / seconds["pytorch"]
        result["zoo_over_pytorch"] = round(ratio, 3)
        result["met"] = h.targets_met({"r": ratio}, {"r": TARGET_RATIO})["r"]
        result["target"] = f"zoo_over_pytorch {TARGET_RATIO[0]} {TARGET_RATIO[1]}"
    h.emit(result)


if __name__ == "__main__":
    main()
