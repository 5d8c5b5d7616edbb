"""Train a zoo model on MNIST or Fashion-MNIST and report what it learned.

The JAX MNIST tutorial's loop, on zoo: a Grain pipeline, a fused jitted step,
a progress bar, one line per epoch (seconds, train loss, train and test accuracy,
examples/s) and the final accuracy over all 10,000 test images. With ``--out DIR``
it also writes ``metrics.json``, ``curves.png``, ``samples.png``,
``confusion.png`` and a checkpoint that ``zoo.load_model`` reads and
``--resume`` continues.

Every option is a field of ``Config`` below, with its type, default and meaning;
``--help`` lists them. The resolved config is saved in ``metrics.json`` and in
the checkpoint, and ``--config`` runs it again (flags beside it win).

Run (``pip install -e ".[examples]"`` brings tyro, which reads the flags):
    python examples/mnist.py                      # the strongest preset, 6 epochs
    python examples/mnist.py --model mlp --optimizer sgd --lr 0.01 \\
        --schedule constant --epochs 10 --shift 0 # the tutorial's recipe
    python examples/mnist.py --dataset fashion_mnist --flip --erasing 0.25
    python examples/mnist.py --config runs/cnn/metrics.json --out runs/again
    python examples/mnist.py --devices all        # data parallel, every device
    python examples/mnist.py --coordinator HOST:PORT --num-processes 2 \\
        --process-id 0                            # one of two processes

MNIST is read from ``--data-dir``, else ``$ZOO_DATA_DIR``, else downloaded and
verified into ``~/.cache/zoo``.
"""

import argparse
import dataclasses
import json
import math
import pathlib
import shlex
import sys
from collections.abc import Callable, Sequence
from typing import Annotated, Any, Literal

import grain
import jax
import numpy as np
import optax
from jax.sharding import Mesh

import zoo
from zoo.data import (
    ArrayDataset,
    Compose,
    RandomCrop,
    RandomErasing,
    RandomFlip,
    RandomShift,
    load_dataset,
)
from zoo.train import evaluate, fit, predict

try:
    import tyro
except ModuleNotFoundError as missing:  # the examples extra
    if missing.name != "tyro":
        raise
    sys.exit(
        "examples/mnist.py reads its flags with tyro: pip install -e '.[examples]'"
    )

SAMPLES = 32

# ---------------------------------------------------------------- the config --
Dataset = Literal["mnist", "fashion_mnist"]
# Augmentation per data set, where a flag is not given. Digits are shifted by up
# to 2 pixels, and never mirrored: a mirrored digit is another symbol or none.
# Clothes are cropped from the image padded by 2 pixels (the same offsets).
# Mirroring clothes is --flip: in the default 6 epochs it cost cnn 0.46 points
# (91.35 % against 91.81 %, seed 0), so it is off. --erasing is there to try.
AUGMENT_DEFAULTS: dict[str, dict[str, Any]] = {
    "mnist": {"shift": 2, "flip": False, "crop_padding": 0, "erasing": 0.0},
    "fashion_mnist": {"shift": 0, "flip": False, "crop_padding": 2, "erasing": 0.0},
}
# Facts about a run saved beside the config in metrics.json; not options.
RUN_FACTS = ("model_config", "device_count", "process_count")


def _default(text: str) -> Any:
    """``--help``'s note on a default that its value alone does not say."""
    return tyro.conf.arg(help_behavior_hint=f"(default: {text})")


PerDataset = tyro.conf.arg(help_behavior_hint="")  # the docstrings give them
Models = tyro.conf.arg(metavar="{" + ",".join(zoo.list_models()) + "}")


def _flag(field: str) -> str:
    return "--" + field.replace("_", "-")


@dataclasses.dataclass(frozen=True)
class Config:
    """Train a zoo model on MNIST or Fashion-MNIST and report what it learned.

    Digits are shifted and clothes cropped at random; --flip mirrors. With
    --config FILE, its values replace the defaults and flags replace its values.
    """

    config: Annotated[pathlib.Path | None, _default("none")] = None
    """An earlier run's metrics.json (or --out folder), or a JSON of options."""
    model: Annotated[str, Models] = "cnn"
    """The registered preset to train; a misspelt name gets a suggestion."""
    dataset: Dataset = "mnist"
    """The data set to train and test on."""
    epochs: int = 6
    """Passes over the training set."""
    batch_size: int = 128
    """Examples per optimiser step: the global batch, over all devices."""
    optimizer: Literal["sgd", "momentum", "adam"] = "adam"
    """sgd, sgd with Nesterov momentum 0.9, or adam."""
    lr: float = 1e-3
    """The peak learning rate."""
    schedule: Literal["cosine", "constant"] = "cosine"
    """Cosine decay of the learning rate over the whole run, or constant."""
    warmup_epochs: float = 0.0
    """Raise the learning rate linearly from 0 to --lr over this many epochs first."""
    weight_decay: float = 0.0
    """Decay the weight matrices and kernels (not biases or BatchNorm) by this factor:
    decoupled (AdamW) with adam, added to the gradient with sgd and momentum."""
    label_smoothing: float = 0.0
    """Train against targets smoothed by this amount (0: one-hot)."""
    teacher: Annotated[str | None, _default("none")] = None
    """Distil from this preset's shipped weights for --dataset, e.g. resnet20."""
    distill_temperature: float = 4.0
    """With --teacher: the temperature that softens both models' outputs."""
    distill_weight: float = 0.9
    """With --teacher: the soft term's share of the loss (the rest: the labels)."""
    seed: int = 0
    """Seeds the initial parameters, the data order, the augmentation and dropout."""
    shift: Annotated[int | None, PerDataset] = None
    """Augment: shift by up to N pixels each way (default: mnist 2, fashion_mnist 0)."""
    flip: Annotated[bool | None, PerDataset] = None
    """Augment: mirror half the images left-right (default: off; not for digits)."""
    crop_padding: Annotated[int | None, PerDataset] = None
    """Augment: pad N zero pixels, crop at random (default: fashion_mnist 2, else 0)."""
    erasing: Annotated[float | None, PerDataset] = None
    """Augment: erase a random rectangle with this probability (default: 0 for both)."""
    precision: Literal["float32", "bfloat16"] = "float32"
    """Compute the forward and backward in bfloat16 (parameters, optimiser state,
    loss and BatchNorm statistics stay float32); evaluate in it too."""
    augment_on: Literal["host", "device"] = "host"
    """Augment in Grain on the host (the shipped cards' draws), or on the device
    inside the compiled step (other draws; keeps fused steps: faster on a GPU)."""
    train_examples: Annotated[int | None, _default("all")] = None
    """Train on the first N examples only, for quick trials."""
    data_dir: Annotated[pathlib.Path | None, _default("$ZOO_DATA_DIR")] = None
    """Holds mnist/ and fashion-mnist/ (else ~/.cache/zoo); missing files download."""
    out: Annotated[pathlib.Path | None, _default("none")] = None
    """Write metrics.json, the figures and a checkpoint to this folder."""
    resume: bool = False
    """Continue the run saved in --out."""
    progress: bool = True
    """Show a progress bar."""
    devices: Annotated[int | Literal["all"] | None, _default("one")] = None
    """Train data-parallel on N devices, or all (with --coordinator: all)."""
    coordinator: Annotated[
        str | None, tyro.conf.arg(metavar="HOST:PORT"), _default("none")
    ] = None
    """Join a multi-process run: jax.distributed.initialize with this coordinator."""
    num_processes: Annotated[int | None, _default("none")] = None
    """The processes in the multi-process run (with --coordinator)."""
    process_id: Annotated[int | None, _default("none")] = None
    """This process's index, 0 .. N-1 (with --coordinator)."""

    def __post_init__(self) -> None:
        """Refuse bad values before any work, naming the option."""
        try:
            zoo.models.model_spec(self.model)
        except KeyError as error:
            raise ValueError(f"--model: {error.args[0]}") from None
        for name in ("epochs", "batch_size", "train_examples", "num_processes"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(
                    f"{_flag(name)} must be a positive integer, got {value}"
                )
        for name in ("shift", "crop_padding"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(
                    f"{_flag(name)} must be a non-negative integer, got {value}"
                )
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"--lr must be a positive number, got {self.lr}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ValueError(
                f"--weight-decay must be a non-negative number, got {self.weight_decay}"
            )
        warmup = self.warmup_epochs
        if not (math.isfinite(warmup) and warmup >= 0):
            raise ValueError(
                f"--warmup-epochs must be a non-negative number, got {warmup}"
            )
        if self.warmup_epochs >= self.epochs:
            raise ValueError(
                f"--warmup-epochs {self.warmup_epochs} must be fewer than --epochs "
                f"{self.epochs}"
            )
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(
                f"--label-smoothing must be in [0, 1), got {self.label_smoothing}"
            )
        temperature = self.distill_temperature
        if not (math.isfinite(temperature) and temperature > 0):
            raise ValueError(
                f"--distill-temperature must be a positive number, got {temperature}"
            )
        if not 0.0 <= self.distill_weight <= 1.0:
            raise ValueError(
                f"--distill-weight must be in [0, 1], got {self.distill_weight}"
            )
        if self.teacher is not None:
            try:
                zoo.models.model_spec(self.teacher)
            except KeyError as error:
                raise ValueError(f"--teacher: {error.args[0]}") from None
        if self.erasing is not None and not 0.0 <= self.erasing <= 1.0:
            raise ValueError(
                f"--erasing must be a probability in [0, 1], got {self.erasing}"
            )
        if self.train_examples is not None and self.batch_size > self.train_examples:
            raise ValueError(
                f"--batch-size {self.batch_size} exceeds --train-examples "
                f"{self.train_examples}"
            )
        if self.devices != "all" and self.devices is not None and self.devices < 1:
            raise ValueError(
                f"--devices must be a positive integer or 'all', got {self.devices}"
            )
        if self.resume and self.out is None:
            raise ValueError("--resume needs --out DIR (the run to continue)")
        distributed = (self.coordinator, self.num_processes, self.process_id)
        if any(v is not None for v in distributed) and None in distributed:
            raise ValueError(
                "--coordinator, --num-processes and --process-id go together"
            )
        n, i = self.num_processes, self.process_id
        if n is not None and i is not None and not 0 <= i < n:
            raise ValueError(f"--process-id must be in 0..{n - 1}, got {i}")

    def resolved(self) -> "Config":
        """This config with the dataset's defaults where an option was left out."""
        defaults = AUGMENT_DEFAULTS[self.dataset]
        given = {k: getattr(self, k) for k in defaults if getattr(self, k) is not None}
        return dataclasses.replace(self, **{**defaults, **given})

    def to_json(self) -> dict[str, Any]:
        """Every field, paths as strings: what ``--config`` reads back."""
        return {
            name: str(value) if isinstance(value, pathlib.Path) else value
            for name, value in vars(self).items()
        }


def config_args(path: pathlib.Path) -> list[str]:
    """The flags that say what the config file ``path`` holds.

    ``path`` is a run's ``metrics.json`` (or its ``--out`` folder), whose
    ``config`` entry is used, or a JSON object of options. Options left out or
    ``null`` keep their defaults.
    """
    if path.is_dir():
        path = path / "metrics.json"
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ValueError(f"--config {path}: cannot read it as JSON ({error})") from None
    if isinstance(saved, dict) and isinstance(saved.get("config"), dict):
        saved = saved["config"]  # a run's metrics.json
    if not isinstance(saved, dict):
        raise ValueError(f"--config {path}: expected a JSON object of options")
    fields = {f.name for f in dataclasses.fields(Config)} - {"config"}
    unknown = sorted(set(saved) - fields - set(RUN_FACTS) - {"config"})
    if unknown:
        raise ValueError(f"--config {path}: unknown options {unknown}")
    args = ["--config", str(path)]
    for name in sorted(fields & set(saved)):
        value = saved[name]
        if isinstance(value, bool):
            args.append(_flag(name) if value else _flag("no_" + name))
        elif isinstance(value, str | int | float):
            args.append(f"{_flag(name)}={value}")
        elif value is not None:
            raise ValueError(
                f"--config {path}: {name} is {value!r}, not an option value"
            )
    return args


def _cli(args: Sequence[str], default: Config | None = None) -> Config:
    """Parse flags into a ``Config`` with tyro, on top of ``default``."""
    return tyro.cli(
        Config,
        prog="mnist.py",
        args=args,
        default=tyro.MISSING_NONPROP if default is None else default,
        config=(tyro.conf.DisallowNone,),  # None is a default, never a flag value
    )


def parse_args(argv: Sequence[str] | None = None) -> Config:
    """The command line as a resolved ``Config``; bad values exit with status 2.

    With ``--config FILE`` the file's values replace the defaults, and the
    flags given beside it replace the file's.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    pre.add_argument("--config", type=pathlib.Path)
    given, _ = pre.parse_known_args(argv)
    saved = None
    if given.config is not None:
        try:
            file_args = config_args(given.config)
        except ValueError as error:
            sys.stderr.write(f"error: {error}\n")
            sys.exit(2)
        try:
            saved = _cli(file_args)
        except SystemExit:
            sys.stderr.write(f"error: a value in --config {given.config} is bad\n")
            raise
    return _cli(argv, saved).resolved()


def make_augment(config: Config) -> grain.transforms.RandomMap | None:
    """The augmentation of training batches the config asks for, if any (in
    Grain, on the host; ``zoo.data.to_device_augment`` gives its device twin)."""
    parts: list[grain.transforms.RandomMap] = []
    if config.shift:
        parts.append(RandomShift(config.shift))
    if config.crop_padding:
        parts.append(RandomCrop(padding=config.crop_padding))
    if config.flip:
        parts.append(RandomFlip())
    if config.erasing:
        parts.append(RandomErasing(p=config.erasing))
    if len(parts) <= 1:
        return parts[0] if parts else None
    return Compose(*parts)


def make_mesh(config: Config) -> Mesh | None:
    """The data-parallel mesh the config asks for (``None``: one device)."""
    devices = config.devices
    if config.coordinator is not None:
        jax.distributed.initialize(
            config.coordinator,
            num_processes=config.num_processes,
            process_id=config.process_id,
        )
        devices = devices or "all"
    if devices in (None, 1):
        return None
    available = jax.devices()
    if devices != "all" and devices > len(available):
        raise ValueError(f"--devices {devices}, but JAX sees {len(available)}")
    return zoo.train.data_mesh(available if devices == "all" else available[:devices])


def _is_weight(leaf: jax.Array) -> bool:
    """Weight matrices and kernels decay; biases and BatchNorm scales do not."""
    return leaf.ndim >= 2


def make_optimizer(
    config: Config, total_steps: int, steps_per_epoch: int
) -> optax.GradientTransformation:
    """The optimiser the config asks for, with its learning-rate schedule."""
    warmup = round(config.warmup_epochs * steps_per_epoch)
    lr: optax.ScalarOrSchedule = (
        optax.cosine_decay_schedule(config.lr, total_steps - warmup)
        if config.schedule == "cosine"
        else config.lr
    )
    if warmup:  # a linear climb from 0, then the schedule from its start
        after = lr if callable(lr) else optax.constant_schedule(lr)
        climb = optax.linear_schedule(0.0, config.lr, warmup)
        lr = optax.join_schedules([climb, after], [warmup])
    decay_mask = lambda params: jax.tree.map(_is_weight, params)  # noqa: E731
    if config.optimizer == "adam":
        if config.weight_decay:
            return optax.adamw(lr, weight_decay=config.weight_decay, mask=decay_mask)
        return optax.adam(lr)
    sgd = (
        optax.sgd(lr, momentum=0.9, nesterov=True)
        if config.optimizer == "momentum"
        else optax.sgd(lr)
    )
    if not config.weight_decay:
        return sgd
    return optax.chain(optax.add_decayed_weights(config.weight_decay, decay_mask), sgd)


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


def distil(
    config: Config, train: ArrayDataset, say: Callable[..., None]
) -> tuple[ArrayDataset, zoo.train.Distillation]:
    """The training set with the teacher's logits as targets, and the loss."""
    name = str(config.teacher)
    teacher, state = zoo.create_model(
        name, pretrained=config.dataset, key=jax.random.key(0)
    )
    card = zoo.model_card(name, config.dataset)
    say(f"distilling from {name} ({100 * card.test_accuracy:.2f} % on "
        f"{config.dataset}), temperature {config.distill_temperature}, "
        f"weight {config.distill_weight}")  # fmt: skip
    logits = zoo.train.teacher_logits(teacher, state, train)
    loss = zoo.train.distillation(
        config.distill_temperature, config.distill_weight,
        smoothing=config.label_smoothing,
    )  # fmt: skip
    return train.with_targets(logits), loss


def resume_hint(argv: Sequence[str]) -> str:
    """How to go on after an interrupted run of ``argv``: its command again with
    ``--resume`` where it wrote checkpoints (``--out``), else that none were kept."""
    if not any(a == "--out" or a.startswith("--out=") for a in argv):
        return "no checkpoints were kept (no --out): run it again to start over"
    command = shlex.join(["python", "examples/mnist.py", *argv])
    if "--resume" not in argv:
        command += " --resume"
    return f"to go on from the last checkpoint, add --resume: {command}"


def main(argv: Sequence[str] | None = None) -> float:
    """Train, evaluate on the whole test set, and return the test accuracy."""
    config = parse_args(argv)
    mesh = make_mesh(config)
    is_main = jax.process_index() == 0  # only process 0 prints and writes
    say = print if is_main else lambda *_: None
    train = load_dataset(config.dataset, "train", data_dir=config.data_dir)
    test = load_dataset(config.dataset, "test", data_dir=config.data_dir)
    if config.train_examples is not None:
        train = train.take(min(config.train_examples, len(train)))
    if config.batch_size > len(train):
        sys.exit(f"--batch-size {config.batch_size} exceeds {len(train)} examples")

    model, state = zoo.create_model(config.model, key=jax.random.key(config.seed))
    steps_per_epoch = len(train) // config.batch_size
    optimizer = make_optimizer(config, config.epochs * steps_per_epoch, steps_per_epoch)
    augment = make_augment(config)
    if augment is not None and config.augment_on == "device":
        augment = zoo.data.to_device_augment(augment)
    run_config = {
        **config.to_json(),
        "model_config": model.config(),
        "device_count": 1 if mesh is None else mesh.devices.size,
        "process_count": jax.process_count(),
    }

    say(f"{config.model} on {config.dataset}: {len(train)} train / {len(test)} test")
    say(f"augmentation: {augment or 'none'}")
    say(zoo.summary(model, state))
    if mesh is not None:
        say(f"data parallel over {mesh.devices.size} devices in "
            f"{jax.process_count()} process(es)")  # fmt: skip
    out = config.out
    loss = (
        zoo.train.label_smoothing(config.label_smoothing)
        if config.label_smoothing
        else zoo.train.softmax_cross_entropy
    )
    if config.teacher is not None:
        train, loss = distil(config, train, say)
    # Files are checked writable here, before anything trains.
    callbacks = zoo.train.default_callbacks(progress=config.progress)
    checkpointer = None
    if out is not None and is_main:
        callbacks.append(zoo.train.HistoryWriter(out / "metrics.json", run_config))
        checkpointer = zoo.train.Checkpointer(out / "checkpoint", config=run_config)
    result = fit(
        model,
        state,
        train,
        zoo.train.make_train_step(optimizer, loss=loss, precision=config.precision),
        epochs=config.epochs,
        batch_size=config.batch_size,
        seed=config.seed,
        test_data=test,
        callbacks=callbacks,
        checkpoint_dir=checkpointer,
        resume=config.resume,
        mesh=mesh,
        augment=augment,
    )
    say(f"compile time {result.compile_seconds:.2f} s (not in the epoch times)")
    # Every process holds the whole trained model: evaluate it on one device.
    model, state = zoo.train.local_copy((result.model, result.state))
    final = evaluate(model, state, test, precision=config.precision)
    say(
        f"test accuracy {100 * final['accuracy']:.2f}% "
        f"({round(final['accuracy'] * final['count'])}/{final['count']} images)"
    )
    if out is not None and is_main:
        try:
            history = [record.to_json() for record in result.history]
            write_figures(out, model, state, history, test)
            figures = ", curves.png, samples.png, confusion.png"
        except ModuleNotFoundError as error:  # zoo.plot needs the plot extra
            if error.name != "matplotlib":
                raise
            say("no figures: they need Matplotlib (pip install 'typed-zoo[plot]')")
            figures = ""
        say(f"wrote {out}/metrics.json{figures} and checkpoint/")
    return final["accuracy"]


if __name__ == "__main__":
    # Process-wide CPU tuning, before any JAX computation (see zoo.runtime).
    zoo.runtime.tune_cpu()
    zoo.runtime.enable_compilation_cache()
    try:
        main()
    except (zoo.CheckpointError, zoo.data.DataError, ValueError) as error:
        sys.exit(f"error: {error}")
    except KeyboardInterrupt:  # Ctrl-C: one line, no traceback, the shell's 130
        print(f"\ninterrupted; {resume_hint(sys.argv[1:])}", file=sys.stderr)
        sys.exit(130)
