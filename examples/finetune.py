"""Transfer learning: a model pretrained on MNIST, fine-tuned on Fashion-MNIST.

Three runs of the same architecture and the same number of steps on the target
data set, each starting from:

- ``head``: the pretrained backbone, frozen, and a new head; only the head
  trains (``trainable=zoo.head_only(model)``);
- ``all``: the pretrained backbone and a new head; everything trains;
- ``scratch``: fresh parameters; everything trains.

It prints a table of test accuracy after each epoch and, with ``--out DIR``,
writes ``finetune.json`` and ``finetune.png`` (test accuracy against steps).

Run (``pip install -e ".[examples]"``):
    python examples/finetune.py                        # stax_cnn, 3 epochs
    python examples/finetune.py --model mlp --epochs 2 --out runs/finetune
"""

import dataclasses
import json
import pathlib
import sys
import time
from collections.abc import Sequence
from typing import Annotated, Any, Literal

import jax
import optax

import zoo
from zoo.data import ArrayDataset, load_dataset
from zoo.train import evaluate

try:
    import tyro
except ModuleNotFoundError as missing:  # the examples extra
    if missing.name != "tyro":
        raise
    sys.exit(
        "examples/finetune.py reads its flags with tyro: pip install -e '.[examples]'"
    )

Dataset = Literal["mnist", "fashion_mnist"]
MODES = ("head", "all", "scratch")


def _arg(metavar: str, default: str) -> Any:
    """A flag's metavar, and ``--help``'s note on a default its value does not say."""
    return tyro.conf.arg(metavar=metavar, help_behavior_hint=f"(default: {default})")


@dataclasses.dataclass(frozen=True)
class Config:
    """Fine-tune a pretrained preset on another data set, three ways."""

    model: str = "stax_cnn"
    """A preset with pretrained weights (zoo.list_models(pretrained=True))."""
    source: Dataset = "mnist"
    """The data set its weights were trained on."""
    target: Dataset = "fashion_mnist"
    """The data set to fine-tune on."""
    epochs: int = 3
    """Passes over the target's training set, the same for every run."""
    batch_size: int = 128
    """Examples per optimiser step."""
    lr: float = 2e-3
    """Adam's learning rate (cosine decay over the run), the same for every run."""
    seed: int = 0
    """Seeds the new heads, the fresh model, the data order and dropout."""
    train_examples: Annotated[int | None, _arg("N", "all")] = None
    """Train on the first N target examples only."""
    test_examples: Annotated[int | None, _arg("N", "all")] = None
    """Evaluate on the first N target test examples only."""
    data_dir: Annotated[pathlib.Path | None, _arg("PATH", "$ZOO_DATA_DIR")] = None
    """Holds mnist/ and fashion-mnist/ (else ~/.cache/zoo); missing files download."""
    out: Annotated[pathlib.Path | None, _arg("PATH", "none")] = None
    """Write finetune.json and finetune.png here."""


def start(config: Config, mode: str, classes: int) -> tuple[Any, Any, Any]:
    """The model, state and trainable filter a run in ``mode`` starts from."""
    key = jax.random.key(config.seed)
    if mode == "scratch":
        model, state = zoo.create_model(config.model, out_size=classes, key=key)
        return model, state, True
    model, state = zoo.create_model(
        config.model, pretrained=config.source, out_size=classes, key=key
    )
    return model, state, zoo.head_only(model) if mode == "head" else True


def run(
    config: Config, mode: str, train: ArrayDataset, test: ArrayDataset
) -> dict[str, Any]:
    """Train one way; return test accuracy before and after each epoch."""
    model, state, trainable = start(config, mode, len(test.class_names))
    steps = config.epochs * (len(train) // config.batch_size)
    t0 = time.perf_counter()
    optimizer = optax.adam(optax.cosine_decay_schedule(config.lr, steps))
    result = zoo.fit(
        model, state, train,
        zoo.train.make_train_step(optimizer, trainable=trainable),
        epochs=config.epochs, batch_size=config.batch_size, seed=config.seed,
        test_data=test, callbacks=[],
    )  # fmt: skip
    seconds = time.perf_counter() - t0
    before = evaluate(model, state, test)["accuracy"]
    params = jax.tree.leaves(zoo.train.partition_trainable(model, trainable)[0])
    return {
        "mode": mode,
        "trainable_parameters": sum(int(p.size) for p in params),
        "steps_per_epoch": len(train) // config.batch_size,
        "test_accuracy": [before] + [r.test_accuracy for r in result.history],
        "seconds": seconds,
    }


def table(results: list[dict[str, Any]]) -> str:
    """A Markdown table: one row per run, test accuracy after each epoch."""
    epochs = len(results[0]["test_accuracy"]) - 1
    head = (
        "| start | trainable parameters | before | "
        + " | ".join(f"epoch {e}" for e in range(1, epochs + 1))
        + " | seconds |"
    )
    lines = [head, "|---" * (epochs + 4) + "|"]
    for r in results:
        accs = " | ".join(f"{100 * a:.2f} %" for a in r["test_accuracy"])
        lines.append(
            f"| {r['mode']} | {r['trainable_parameters']:,} | {accs} | "
            f"{r['seconds']:.0f} |"
        )
    return "\n".join(lines)


def write_figure(out: pathlib.Path, results: list[dict[str, Any]]) -> None:
    """Test accuracy against optimiser steps, one line per run."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 4), layout="constrained")
    ax = figure.subplots()
    for r in results:
        steps = [e * r["steps_per_epoch"] for e in range(len(r["test_accuracy"]))]
        ax.plot(
            steps, [100 * a for a in r["test_accuracy"]], marker="o", label=r["mode"]
        )
    ax.set_xlabel("optimiser steps on the target")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend()
    zoo.plot.save_png(figure, out / "finetune.png")


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Run the three starts and print their table; return their results."""
    config = tyro.cli(Config, prog="finetune.py", args=argv)
    card = zoo.model_card(config.model, config.source)
    train = load_dataset(config.target, "train", data_dir=config.data_dir)
    test = load_dataset(config.target, "test", data_dir=config.data_dir)
    if config.train_examples is not None:
        train = train.take(min(config.train_examples, len(train)))
    if config.test_examples is not None:
        test = test.take(min(config.test_examples, len(test)))
    print(
        f"{config.model} pretrained on {config.source} "
        f"({100 * card.test_accuracy:.2f} % there), fine-tuned on {config.target}: "
        f"{len(train)} train / {len(test)} test, {config.epochs} epochs of "
        f"{len(train) // config.batch_size} steps"
    )
    results = [run(config, mode, train, test) for mode in MODES]
    print(table(results))
    if config.out is not None:
        config.out.mkdir(parents=True, exist_ok=True)
        payload = {"config": {k: str(v) for k, v in vars(config).items()},
                   "results": results}  # fmt: skip
        (config.out / "finetune.json").write_text(json.dumps(payload, indent=2))
        write_figure(config.out, results)
        print(f"wrote {config.out}/finetune.json and finetune.png")
    return results


if __name__ == "__main__":
    zoo.runtime.tune_cpu()  # process-wide; before any JAX computation
    zoo.runtime.enable_compilation_cache()
    try:
        main()
    except (zoo.data.DataError, ValueError, KeyError) as error:
        sys.exit(f"error: {error}")
