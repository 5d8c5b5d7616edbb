"""Train a zoo model on MNIST or Fashion-MNIST and report what it learned.

The JAX MNIST tutorial's loop, on zoo: a Grain pipeline, a fused jitted step,
a progress bar, one line per epoch (seconds, train loss, train and test accuracy,
examples/s) and the final accuracy over all 10,000 test images. With ``--out DIR``
it also writes ``metrics.json``, ``curves.png``, ``samples.png``,
``confusion.png`` and a checkpoint that ``zoo.load_model`` reads and
``--resume`` continues.

Run:
    python examples/mnist.py                      # the strongest preset, 6 epochs
    python examples/mnist.py --model mlp --optimizer sgd --lr 0.01 \\
        --schedule constant --epochs 10 --shift 0 # the tutorial's recipe
    python examples/mnist.py --devices all        # data parallel, every device
    python examples/mnist.py --coordinator HOST:PORT --num-processes 2 \\
        --process-id 0                            # one of two processes

MNIST is read from ``--data-dir``, else ``$ZOO_DATA_DIR``, else downloaded and
verified into ``~/.cache/zoo``.
"""

import argparse
import pathlib
import sys
from collections.abc import Sequence

import jax
import numpy as np
import optax
from jax.sharding import Mesh

import zoo
from zoo.data import ArrayDataset, RandomShift, load_dataset
from zoo.train import evaluate, fit, predict

DEFAULTS = {"model": "cnn", "epochs": 6, "batch_size": 128, "lr": 1e-3, "shift": 2}
SAMPLES = 32


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def non_negative_int(text: str) -> int:
    """An argparse type: an integer >= 0."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer, got {value}")
    return value


def positive_float(text: str) -> float:
    """An argparse type: a finite number > 0."""
    value = float(text)
    if not np.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def model_name(text: str) -> str:
    """An argparse type: a registered preset, with a suggestion when misspelt."""
    try:
        zoo.model_spec(text)
    except KeyError as error:
        raise argparse.ArgumentTypeError(str(error.args[0])) from None
    return text


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add = parser.add_argument
    add("--model", type=model_name, default=DEFAULTS["model"],
        help=f"registered preset, one of {zoo.list_models()}")  # fmt: skip
    add("--dataset", choices=["mnist", "fashion_mnist"], default="mnist",
        help="which data set to train on")  # fmt: skip
    add("--epochs", type=positive_int, default=DEFAULTS["epochs"],
        help="passes over the training set")  # fmt: skip
    add("--batch-size", type=positive_int, default=DEFAULTS["batch_size"],
        help="examples per optimiser step")  # fmt: skip
    add("--optimizer", choices=["sgd", "momentum", "adam"], default="adam",
        help="sgd, sgd with Nesterov momentum 0.9, or adam")  # fmt: skip
    add("--lr", type=positive_float, default=DEFAULTS["lr"],
        help="peak learning rate")  # fmt: skip
    add("--schedule", choices=["cosine", "constant"], default="cosine",
        help="learning-rate schedule over the whole run")  # fmt: skip
    add("--seed", type=int, default=0,
        help="seeds the initial parameters, data order and dropout")  # fmt: skip
    add("--data-dir", type=pathlib.Path, default=None,
        help="folder holding mnist/ and fashion-mnist/ (default: $ZOO_DATA_DIR, "
        "else ~/.cache/zoo, downloading if needed)")  # fmt: skip
    add("--out", type=pathlib.Path, default=None,
        help="write metrics.json, curves.png, samples.png, confusion.png and a "
        "checkpoint here")  # fmt: skip
    add("--resume", action="store_true",
        help="continue from the checkpoint in --out")  # fmt: skip
    add("--shift", type=non_negative_int, default=DEFAULTS["shift"],
        help="augment: move each training image by up to this many pixels "
        "along each axis (0: no augmentation)")  # fmt: skip
    add("--train-examples", type=positive_int, default=None,
        help="train on the first N examples only (quick trials)")  # fmt: skip
    add("--no-progress", action="store_true", help="hide the progress bar")
    add("--devices", type=device_count, default=None,
        help="train data-parallel on this many devices, or 'all' (default: one "
        "device, or all devices of all processes with --coordinator)")  # fmt: skip
    add("--coordinator", default=None, metavar="HOST:PORT",
        help="join a multi-process run: jax.distributed.initialize with this "
        "coordinator (process 0 listens there)")  # fmt: skip
    add("--num-processes", type=positive_int, default=None,
        help="processes in the multi-process run (with --coordinator)")  # fmt: skip
    add("--process-id", type=int, default=None,
        help="this process's index, 0 .. N-1 (with --coordinator)")  # fmt: skip
    args = parser.parse_args(argv)
    if args.resume and args.out is None:
        parser.error("--resume needs --out DIR (the run to continue)")
    distributed = (args.coordinator, args.num_processes, args.process_id)
    if any(v is not None for v in distributed) and None in distributed:
        parser.error("--coordinator, --num-processes and --process-id go together")
    if args.process_id is not None and not 0 <= args.process_id < args.num_processes:
        parser.error(f"--process-id must be in 0..{args.num_processes - 1}")
    return args


def device_count(text: str) -> int | str:
    """An argparse type: a positive number of devices, or 'all'."""
    return text if text == "all" else positive_int(text)


def make_mesh(args: argparse.Namespace) -> Mesh | None:
    """The data-parallel mesh the flags ask for (``None``: one device)."""
    devices = args.devices
    if args.coordinator is not None:
        jax.distributed.initialize(
            args.coordinator,
            num_processes=args.num_processes,
            process_id=args.process_id,
        )
        devices = devices or "all"
    if devices in (None, 1):
        return None
    available = jax.devices()
    if devices != "all" and devices > len(available):
        raise ValueError(f"--devices {devices}, but JAX sees {len(available)}")
    return zoo.train.data_mesh(available if devices == "all" else available[:devices])


def make_optimizer(
    args: argparse.Namespace, total_steps: int
) -> optax.GradientTransformation:
    """The optimiser the flags ask for, with its learning-rate schedule."""
    lr = (
        optax.cosine_decay_schedule(args.lr, total_steps)
        if args.schedule == "cosine"
        else args.lr
    )
    if args.optimizer == "adam":
        return optax.adam(lr)
    if args.optimizer == "momentum":
        return optax.sgd(lr, momentum=0.9, nesterov=True)
    return optax.sgd(lr)


def predictions(model, state, data: ArrayDataset) -> np.ndarray:
    """Predicted classes of every example, in order."""
    chunks = [
        np.asarray(predict(model, state, jax.numpy.asarray(data.inputs[i : i + 1000])))
        for i in range(0, len(data), 1000)
    ]
    return np.concatenate(chunks)


def write_figures(
    out: pathlib.Path, model, state, history: list[dict], test: ArrayDataset
) -> None:
    """Curves, a sample grid with mistakes marked, and the confusion matrix."""
    save_png = zoo.plot.save_png  # zoo.plot and Matplotlib: the plot extra
    from matplotlib.figure import Figure

    predicted = predictions(model, state, test)
    wrong = np.flatnonzero(predicted != test.labels)[: SAMPLES // 2]
    shown = np.concatenate([np.arange(SAMPLES - len(wrong)), wrong])
    names = test.class_names
    curves = Figure(figsize=(10, 4), layout="constrained")
    for ax, metric in zip(curves.subplots(1, 2), ["loss", "accuracy"], strict=True):
        zoo.plot.plot_curves(history, metric, ax=ax)
    save_png(curves, out / "curves.png")
    samples = zoo.plot.plot_samples(
        test.inputs[shown], test.labels[shown], predicted[shown], class_names=names
    )
    save_png(samples, out / "samples.png")
    counts = zoo.train.confusion_matrix(
        jax.numpy.asarray(test.labels), jax.numpy.asarray(predicted), len(names)
    )
    save_png(zoo.plot.plot_confusion(counts, class_names=names), out / "confusion.png")


def main(argv: Sequence[str] | None = None) -> float:
    """Train, evaluate on the whole test set, and return the test accuracy."""
    args = parse_args(argv)
    mesh = make_mesh(args)
    is_main = jax.process_index() == 0  # only process 0 prints and writes
    say = print if is_main else lambda *_: None
    train = load_dataset(args.dataset, "train", data_dir=args.data_dir)
    test = load_dataset(args.dataset, "test", data_dir=args.data_dir)
    if args.train_examples is not None:
        train = train.take(min(args.train_examples, len(train)))
    if args.batch_size > len(train):
        sys.exit(f"--batch-size {args.batch_size} exceeds {len(train)} examples")

    model, state = zoo.create_model(args.model, key=jax.random.key(args.seed))
    steps = args.epochs * (len(train) // args.batch_size)
    optimizer = make_optimizer(args, steps)
    config = {k: str(v) if isinstance(v, pathlib.Path) else v
              for k, v in vars(args).items()}  # fmt: skip
    config["model_config"] = model.config()
    config["devices"] = 1 if mesh is None else mesh.devices.size
    config["processes"] = jax.process_count()
    if args.out is not None and is_main:
        zoo.train.ensure_writable(args.out)  # fail now, not after an epoch

    say(f"{args.model} on {args.dataset}: {len(train)} train / {len(test)} test")
    if mesh is not None:
        say(f"data parallel over {mesh.devices.size} devices in "
            f"{jax.process_count()} process(es)")  # fmt: skip
    result = fit(
        model,
        state,
        train,
        optimizer=optimizer,
        epochs=args.epochs,
        batch_size=args.batch_size,
        seed=args.seed,
        test_data=test,
        checkpoint_dir=None if args.out is None else args.out / "checkpoint",
        resume=args.resume,
        history_path=None if args.out is None else args.out / "metrics.json",
        run_config=config,
        progress=not args.no_progress,
        mesh=mesh,
        augment=RandomShift(args.shift) if args.shift else None,
    )
    say(f"compile time {result.compile_seconds:.2f} s (not in the epoch times)")
    # Every process holds the whole trained model: evaluate it on one device.
    model, state = zoo.train.local_copy((result.model, result.state))
    final = evaluate(model, state, test)
    say(
        f"test accuracy {100 * final['accuracy']:.2f}% "
        f"({round(final['accuracy'] * final['count'])}/{final['count']} images)"
    )
    if args.out is not None and is_main:
        try:
            write_figures(args.out, model, state, result.history, test)
            figures = ", curves.png, samples.png, confusion.png"
        except ModuleNotFoundError as error:  # zoo.plot needs the plot extra
            if error.name != "matplotlib":
                raise
            say("no figures: they need Matplotlib (pip install 'typed-zoo[plot]')")
            figures = ""
        say(f"wrote {args.out}/metrics.json{figures} and checkpoint/")
    return final["accuracy"]


if __name__ == "__main__":
    try:
        main()
    except (zoo.CheckpointError, zoo.data.DataError, ValueError) as error:
        sys.exit(f"error: {error}")
