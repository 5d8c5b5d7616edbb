"""Turn a finished training run into a pretrained weight file and its model card.

Reads a run written by ``examples/mnist.py --out RUN_DIR`` (its ``checkpoint/``
and ``metrics.json`` with the resolved config), evaluates the model itself on
every test image, and writes ``<preset>-<dataset>.safetensors`` and its card
``<preset>-<dataset>.json`` (see ``zoo.models.ModelCard``) into the weights folder:
the package's ``zoo/weights/`` by default, where ``zoo.create_model(preset,
pretrained=dataset, key=key)`` finds them.

Run:
    python examples/mnist.py --model mlp --epochs 10 --shift 0 --seed 0 \\
        --out runs/mlp-mnist
    python examples/publish_weights.py runs/mlp-mnist
    python examples/publish_weights.py runs/mlp-mnist --weights-dir my-weights
"""

import argparse
import hashlib
import importlib.metadata
import json
import os
import pathlib
import platform
import re
import shlex
import statistics
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import zoo
from zoo.data import ArrayDataset, load_dataset
from zoo.train import evaluate

WEIGHTS = pathlib.Path(zoo.__file__).resolve().parent / "weights"
ROOT = pathlib.Path(__file__).resolve().parent.parent
"""The checkout the examples belong to (its git commit goes on the card)."""
EVAL_BATCH_SIZE = 1000
"""The batch the shipped cards' test figures were evaluated in (any batch gives
the same count of correct answers)."""
# What examples/mnist.py does to every image before the model sees it.
PREPROCESSING = (
    "uint8 pixels scaled to [0, 1] as float32 (x / 255), no normalisation; "
    "channels-first (1, 28, 28) images, flattened to 784 for MLPs"
)
# Near ties: a test image whose two largest logits are closer than this
# (relative to the largest) could be classified otherwise on another CPU,
# whose float32 sums may round differently.
NEAR_TIE = 1e-4
# The options of examples/mnist.py that make a run what it is, in order.
RECIPE = (
    "model", "dataset", "epochs", "batch_size", "optimizer", "lr", "schedule",
    "warmup_epochs", "weight_decay", "label_smoothing", "seed", "shift", "flip",
    "crop_padding", "erasing", "augment_on", "precision", "train_examples",
    "teacher", "distill_temperature", "distill_weight",
)  # fmt: skip
DISTILLATION = ("distill_temperature", "distill_weight")
"""Options that mean something only with a teacher: left out without one."""


def command_of(config: dict[str, Any], run_dir: pathlib.Path) -> str:
    """The examples/mnist.py command line that trains this run's config.

    Every option of the recipe is spelt out, defaults included, so that the
    command stays exact when the example's defaults change.
    """
    words = ["python", "examples/mnist.py"]
    for name in RECIPE:
        if name in DISTILLATION and config.get("teacher") is None:
            continue
        value = config.get(name)
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            words.append(flag if value else "--no-" + name.replace("_", "-"))
        elif value is not None:
            words += [flag, f"{value:g}" if isinstance(value, float) else str(value)]
    return shlex.join([*words, "--out", str(run_dir)])


# The /proc/cpuinfo flags that name instruction sets, which decide the code XLA
# generates (and so how float32 sums round); the rest (hypervisor, tsc_*, bugs'
# mitigations...) differ between hosts of one kind and are left out.
ISA_FLAG = re.compile(
    r"(mmx|sse|ssse|avx|fma|f16c|bmi|adx|amx|abm|lzcnt|popcnt|movbe|aes|vaes"
    r"|pclmul|vpclmul|sha|gfni|xsave|cx8|cx16|rdrand|rdseed|3dnow|xop|tbm|fp16"
    r"|bf16|vnni|asimd|sve|neon|fp|crc32|atomics|dotprod|i8mm)"
)


def _cpuinfo() -> dict[str, str]:
    """The first processor's entries in /proc/cpuinfo (empty where there is none)."""
    try:
        text = pathlib.Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    entries: dict[str, str] = {}
    for line in text.splitlines():
        key, colon, value = line.partition(":")
        if colon and key.strip() not in entries:
            entries[key.strip()] = value.strip()
    return entries


def cpu_model() -> str:
    """The CPU's model name (``platform``'s guess where /proc/cpuinfo has none)."""
    return _cpuinfo().get("model name") or platform.processor() or platform.machine()


def cpu_flags_hash() -> str:
    """A short SHA-256 of the CPU's instruction-set flags: equal on CPUs of one kind.

    The flags are /proc/cpuinfo's ``flags`` (x86) or ``Features`` (Arm) that
    match ``ISA_FLAG``, sorted; without /proc/cpuinfo, the machine's name.
    """
    info = _cpuinfo()
    words = (info.get("flags") or info.get("Features") or "").split()
    isa = sorted({w for w in words if ISA_FLAG.match(w)}) or [platform.machine()]
    return hashlib.sha256(" ".join(isa).encode()).hexdigest()[:12]


def zoo_commit() -> str:
    """The checkout's git commit, ``+dirty`` if zoo/ or examples/ has changes."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        changed = git("status", "--porcelain", "--", "zoo", "examples")
    except (OSError, subprocess.CalledProcessError):  # no git, or not a checkout
        return "unknown"
    return commit + ("+dirty" if changed else "")


def provenance() -> dict[str, str]:
    """What made a run here, beyond its command: the card's ``provenance``.

    Two runs of one command agree bit for bit where these agree (and
    ``XLA_FLAGS``, recorded when set, is the same).
    """
    found = {
        "zoo_commit": zoo_commit(),
        "jax": importlib.metadata.version("jax"),
        "jaxlib": importlib.metadata.version("jaxlib"),
        "cpu": cpu_model(),
        "cpu_flags": cpu_flags_hash(),
    }
    if xla_flags := os.environ.get("XLA_FLAGS"):
        found["xla_flags"] = xla_flags
    return found


def machine() -> str:
    """The CPU model and core count of this machine."""
    return f"{cpu_model()}, {os.cpu_count()} cores"


def sha256_file(path: pathlib.Path) -> str:
    """The file's SHA-256, as hex."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def atomic_write(path: pathlib.Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, then rename it there."""
    temporary = path.with_name(f".{path.name}.writing")
    temporary.write_bytes(data)
    os.replace(temporary, path)


def parameter_count(model) -> int:
    """Trained parameters: the model's floating-point arrays (state excluded)."""
    leaves = jax.tree.leaves(eqx.filter(model, eqx.is_inexact_array))
    return sum(int(leaf.size) for leaf in leaves)


def near_ties(model, state, test: ArrayDataset) -> int:
    """Test images whose two largest logits are within ``NEAR_TIE`` of each other."""

    def infer(m, s, x):  # uint8 images scaled to [0, 1], in the model's shape
        x = (x.astype(jnp.float32) / 255).reshape(len(x), *m.input_shape)
        return zoo.apply(m, x, s)[0]

    infer = eqx.filter_jit(infer)
    model = eqx.nn.inference_mode(model)
    count = 0
    for i in range(0, len(test), 1000):
        logits = np.asarray(infer(model, state, jnp.asarray(test.inputs[i : i + 1000])))
        top2 = np.sort(logits, axis=1)[:, -2:]
        gap = top2[:, 1] - top2[:, 0]
        count += int((gap <= NEAR_TIE * np.maximum(1.0, np.abs(top2[:, 1]))).sum())
    return count


def teacher_note(config: dict[str, Any]) -> str:
    """What the card says of the teacher a run was distilled from, if any."""
    teacher = config.get("teacher")
    if teacher is None:
        return ""
    card = zoo.model_card(teacher, config["dataset"])
    return (
        f" Distilled from the shipped {teacher} {config['dataset']} weights "
        f"({100 * card.test_accuracy:.2f} %, sha256 {card.sha256[:16]}...), "
        f"temperature {config['distill_temperature']:g}, weight "
        f"{config['distill_weight']:g}: their logits for the training images, "
        "computed once before training, are the soft targets."
    )


def publish(run_dir: pathlib.Path, weights_dir: pathlib.Path) -> zoo.models.ModelCard:
    """Write the weight file and card of the run in ``run_dir``; return the card."""
    metrics = json.loads((run_dir / "metrics.json").read_text())
    config = metrics["config"]
    preset, dataset = config["model"], config["dataset"]
    model, state = zoo.load_model(run_dir / "checkpoint")
    if state is None:  # only a model zoo did not build comes back without one
        raise ValueError(f"{run_dir}: not a zoo preset's checkpoint")
    if model.config() != config["model_config"]:
        raise ValueError(f"{run_dir}: the checkpoint is not the model of metrics.json")
    test = load_dataset(dataset, "test", data_dir=config.get("data_dir"))
    result = evaluate(model, state, test, batch_size=EVAL_BATCH_SIZE)
    correct = round(result["accuracy"] * result["count"])
    stem = f"{preset}-{dataset}"
    weights_dir.mkdir(parents=True, exist_ok=True)
    path = zoo.save_safetensors(weights_dir / f"{stem}.safetensors", model, state)
    ties = near_ties(model, state, test)
    seconds = [epoch["train_seconds"] for epoch in metrics["epochs"]]
    card = zoo.models.ModelCard(
        preset=preset,
        dataset=dataset,
        file=path.name,
        sha256=sha256_file(path),
        config=model.config(),
        parameter_count=parameter_count(model),
        input_shape=model.input_shape,
        preprocessing=PREPROCESSING,
        classes=tuple(test.class_names),
        command=command_of(config, run_dir),
        seed=config["seed"],
        epochs=len(seconds),
        test_correct=correct,
        test_count=int(result["count"]),
        test_accuracy=correct / int(result["count"]),
        correct_tolerance=ties,
        seconds_per_epoch=round(statistics.median(seconds), 2),
        machine=machine(),
        zoo_version=zoo.__version__,
        notes=(
            f"Evaluated with zoo.train.evaluate (batches of {EVAL_BATCH_SIZE}, "
            f"float32, XLA:CPU, JAX {jax.__version__}). {ties} test image(s) have "
            f"their two largest logits within {NEAR_TIE:g} (relative) of each other, "
            "so another CPU may count that many more or fewer correct."
            + teacher_note(config)
        ),
        provenance=provenance(),
    )
    text = json.dumps(card.to_json(), indent=2) + "\n"
    atomic_write(weights_dir / f"{stem}.json", text.encode())
    return card


def main(argv: Sequence[str] | None = None) -> zoo.models.ModelCard:
    """Parse the command line, publish the run, print the card's summary."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").partition("\n")[0])
    parser.add_argument("run_dir", type=pathlib.Path, help="an --out folder")
    parser.add_argument("--weights-dir", type=pathlib.Path, default=WEIGHTS)
    args = parser.parse_args(argv)
    card = publish(args.run_dir, args.weights_dir)
    print(
        f"{card.file}: {card.preset} on {card.dataset}, "
        f"{card.test_correct}/{card.test_count} test images "
        f"({100 * card.test_accuracy:.2f}%), ±{card.correct_tolerance}, "
        f"{card.parameter_count:,} parameters, sha256 {card.sha256[:12]}…"
    )
    return card


if __name__ == "__main__":
    try:
        main()
    except (OSError, ValueError, KeyError, zoo.CheckpointError) as error:
        sys.exit(f"error: {error}")
