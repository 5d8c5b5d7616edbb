"""A tiny configuration of examples/mnist.py, run end to end."""

import dataclasses
import inspect
import json
import os
import pathlib
import re
import shlex
import signal
import subprocess
import sys
import typing

import jax
import numpy as np
import pytest

import zoo
from tests import helpers

REPO = pathlib.Path(__file__).resolve().parent.parent


def load_example():
    return helpers.load_example("mnist.py")


@pytest.fixture(scope="module")
def example():
    return load_example()


TINY = ["--model", "mlp", "--train-examples", "512", "--batch-size", "64"]


def test_tiny_run_writes_every_output_and_resumes(example, tmp_path, capsys):
    out = tmp_path / "run"
    accuracy = example.main([*TINY, "--epochs", "1", "--out", str(out)])
    printed = capsys.readouterr().out
    assert "epoch 1/1 in" in printed and "ex/s" in printed
    assert "test accuracy" in printed and "/10000 images" in printed
    assert 0.5 < accuracy <= 1.0
    for name in ("curves.png", "samples.png", "confusion.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    metrics = json.loads((out / "metrics.json").read_text())
    assert [e["epoch"] for e in metrics["epochs"]] == [1]  # as "epoch 1/1"
    assert metrics["compile_seconds"] > 0
    config = metrics["config"]
    fields = {f.name for f in dataclasses.fields(example.Config)}
    assert set(config) == fields | {"model_config", "device_count", "process_count"}
    assert config["model"] == "mlp" and config["epochs"] == 1
    assert (config["shift"], config["flip"], config["out"]) == (2, False, str(out))
    assert config["model_config"]["family"] == "MLP"
    assert metrics["epochs"][0]["test_accuracy"] == pytest.approx(accuracy)
    model, _ = zoo.load_model(out / "checkpoint")
    assert isinstance(model, zoo.MLP)

    example.main([*TINY, "--epochs", "2", "--out", str(out), "--resume"])
    printed = capsys.readouterr().out
    assert "resumed from step 8" in printed
    assert "epoch 1/2" not in printed and "epoch 2/2" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    # The history read back from the checkpoint keeps its numbers.
    assert [e["epoch"] for e in metrics["epochs"]] == [1, 2]
    assert int(zoo.load_checkpoint(out / "checkpoint").train_state.step) == 16


def _error_text(capsys: pytest.CaptureFixture[str]) -> str:
    """stderr with tyro's box drawing and line wrapping undone."""
    return " ".join(re.sub("[\u2500-\u257f]", " ", capsys.readouterr().err).split())


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--epochs", "0"], "--epochs must be a positive integer, got 0"),
        (["--epochs", "-1"], "--epochs must be a positive integer, got -1"),
        (["--epochs", "two"], "Error parsing --epochs"),
        (["--batch-size", "0"], "--batch-size must be a positive integer"),
        (["--lr", "nan"], "--lr must be a positive number, got nan"),
        (["--lr", "-1e-3"], "--lr must be a positive number"),
        (["--model", "cnm"], "--model: Unknown model 'cnm'. Did you mean 'cnn'?"),
        (["--dataset", "cifar"], "invalid choice 'cifar' for argument '--dataset'"),
        (["--dataset", "toy"], "invalid choice 'toy' for argument '--dataset'"),
        (["--optimizer", "adamw"], "invalid choice 'adamw' for argument '--optimizer'"),
        (
            ["--train-examples", "100", "--batch-size", "128"],
            "--batch-size 128 exceeds --train-examples 100",
        ),
        (["--train-examples", "0"], "--train-examples must be a positive integer"),
        (["--shift", "-1"], "--shift must be a non-negative integer, got -1"),
        (["--crop-padding", "-2"], "--crop-padding must be a non-negative integer"),
        (["--erasing", "1.5"], "--erasing must be a probability in [0, 1], got 1.5"),
        (["--weight-decay", "-1e-4"], "--weight-decay must be a non-negative number"),
        (["--weight-decay", "inf"], "--weight-decay must be a non-negative number"),
        (["--warmup-epochs", "-1"], "--warmup-epochs must be a non-negative number"),
        (
            ["--epochs", "2", "--warmup-epochs", "2"],
            "--warmup-epochs 2.0 must be fewer than --epochs 2",
        ),
        (["--label-smoothing", "1"], "--label-smoothing must be in [0, 1), got 1.0"),
        (["--devices", "0"], "--devices must be a positive integer or 'all'"),
        (["--devices", "some"], "Error parsing --devices"),
        (["--resume"], "--resume needs --out"),
        (["--coordinator", "127.0.0.1:1234"], "--num-processes and --process-id go"),
        (
            ["--coordinator", "h:1", "--num-processes", "2", "--process-id", "2"],
            "--process-id must be in 0..1, got 2",
        ),
        (["--shfit", "1"], "Unrecognized options: --shfit"),
        (["--teacher", "resnet21"], "--teacher: "),
        (["--distill-temperature", "0"], "--distill-temperature must be a positive"),
        (["--distill-weight", "1.5"], "--distill-weight must be in [0, 1], got 1.5"),
    ],
)
def test_bad_command_line_values_are_refused_naming_the_option(
    example, argv, message, capsys
):
    with pytest.raises(SystemExit) as info:
        example.parse_args(argv)
    assert info.value.code == 2
    assert message in _error_text(capsys)


def test_bad_values_fail_before_any_data_is_loaded(example, monkeypatch, capsys):
    def no_loading(*args, **kwargs):
        raise AssertionError("loaded data before checking the command line")

    monkeypatch.setattr(example, "load_dataset", no_loading)
    with pytest.raises(SystemExit) as info:
        example.main(["--epochs", "0"])
    assert info.value.code == 2
    assert "--epochs must be a positive integer" in _error_text(capsys)


def test_help_is_made_from_the_config_types_and_docstrings(example, capsys):
    with pytest.raises(SystemExit) as info:
        example.parse_args(["--help"])
    assert info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for field in dataclasses.fields(example.Config):
        flag = "--" + field.name.replace("_", "-")
        assert flag in text, flag
        docstring = inspect.getsource(example.Config).split(f"    {field.name}:")[1]
        first_words = " ".join(docstring.split('"""')[1].split()[:4])
        assert first_words in text, (field.name, first_words)
    assert "--flip, --no-flip" in text and "--progress, --no-progress" in text
    assert "--batch-size INT" in text and "--lr FLOAT" in text
    assert "{mnist,fashion_mnist}" in text and "{sgd,momentum,adam}" in text
    # the list of presets wraps after a comma where it is wider than the page
    assert "{" + ",".join(zoo.list_models()) + "}" in text.replace(", ", ",")


def test_datasets_offered_are_zoo_datasets_with_augmentation_defaults(example):
    offered = typing.get_args(example.Dataset)
    assert set(offered) <= set(zoo.data.DATASET_NAMES)
    assert set(example.AUGMENT_DEFAULTS) == set(offered)
    fields = {f.name for f in dataclasses.fields(example.Config)}
    for defaults in example.AUGMENT_DEFAULTS.values():
        assert set(defaults) <= fields
        assert all(getattr(example.Config(), name) is None for name in defaults)


def test_digits_are_shifted_and_never_flipped_by_default(example):
    config = example.parse_args([])
    assert (config.shift, config.flip, config.crop_padding, config.erasing) == (
        2,
        False,
        0,
        0.0,
    )
    augment = example.make_augment(config)
    assert isinstance(augment, zoo.data.RandomShift) and augment.max_shift == 2
    assert example.make_augment(example.parse_args(["--shift", "0"])) is None


def test_fashion_is_cropped_by_default_and_flipped_on_request(example):
    config = example.parse_args(["--dataset", "fashion_mnist"])
    assert (config.shift, config.flip, config.crop_padding, config.erasing) == (
        0,
        False,
        2,
        0.0,
    )
    augment = example.make_augment(config)
    assert isinstance(augment, zoo.data.RandomCrop) and augment.padding == 2
    flipped = example.parse_args(["--dataset", "fashion_mnist", "--flip"])
    augment = example.make_augment(flipped)
    assert isinstance(augment, zoo.data.Compose)
    crop, flip = augment.transforms
    assert isinstance(crop, zoo.data.RandomCrop) and crop.padding == 2
    assert isinstance(flip, zoo.data.RandomFlip) and flip.p == 0.5


def test_fashion_crops_move_images_as_the_digit_shift_does():
    # RandomCrop(padding=2) draws the offsets RandomShift(2) draws, so Fashion-MNIST's
    # crops keep the shifts it was trained with before they had a flag of their own.
    images = np.random.default_rng(0).integers(0, 256, (64, 1, 28, 28), np.uint8)
    batch = {"inputs": images}
    crop = zoo.data.RandomCrop(padding=2).random_map(batch, np.random.default_rng(1))
    shift = zoo.data.RandomShift(2).random_map(batch, np.random.default_rng(1))
    np.testing.assert_array_equal(crop["inputs"], shift["inputs"])


def test_flags_override_the_dataset_defaults(example):
    flipped = example.parse_args(["--flip"])  # allowed on digits, never the default
    assert flipped.dataset == "mnist" and flipped.flip and flipped.shift == 2
    augment = example.make_augment(flipped)
    assert [type(t).__name__ for t in augment.transforms] == [
        "RandomShift",
        "RandomFlip",
    ]
    plain = example.parse_args(["--dataset", "fashion_mnist", "--crop-padding", "0"])
    assert not plain.flip and example.make_augment(plain) is None
    erased = example.make_augment(
        example.parse_args(["--dataset", "fashion_mnist", "--erasing", "0.25"])
    )
    assert isinstance(erased.transforms[-1], zoo.data.RandomErasing)
    assert erased.transforms[-1].p == 0.25


def _one_update(example, argv: list[str], step: int = 0):
    """The update the example's optimiser makes at ``step`` for gradients of 1."""
    import jax.numpy as jnp

    config = example.parse_args(argv)
    optimizer = example.make_optimizer(config, total_steps=100, steps_per_epoch=10)
    params = {"kernel": jnp.ones((2, 3)), "bias": jnp.ones(3)}
    grads = jax.tree.map(jnp.ones_like, params)
    opt_state = optimizer.init(params)
    with jax.numpy_dtype_promotion("standard"):  # as the training step runs optax
        for _ in range(step):
            _, opt_state = optimizer.update(grads, opt_state, params)
        updates, _ = optimizer.update(grads, opt_state, params)
    return {name: float(update.ravel()[0]) for name, update in updates.items()}


def test_weight_decay_reaches_kernels_but_not_biases(example):
    sgd = ["--optimizer", "sgd", "--schedule", "constant", "--lr", "0.1"]
    plain = _one_update(example, sgd)
    decayed = _one_update(example, [*sgd, "--weight-decay", "0.5"])
    assert plain == pytest.approx({"kernel": -0.1, "bias": -0.1})
    # sgd: the decay joins the gradient, 1 + 0.5 * 1, for kernels alone
    assert decayed == pytest.approx({"kernel": -0.15, "bias": -0.1})
    adamw = _one_update(
        example, ["--schedule", "constant", "--lr", "0.1", "--weight-decay", "0.5"]
    )
    # adam's first step is -lr * sign; AdamW subtracts lr * decay * weight beside it
    expected = {"kernel": -0.1 - 0.05, "bias": -0.1}
    assert adamw == pytest.approx(expected, rel=1e-4)  # Adam's eps: within 1e-5


def test_warmup_climbs_to_the_peak_learning_rate(example):
    argv = ["--optimizer", "sgd", "--lr", "0.1", "--epochs", "10"]
    for schedule in ("cosine", "constant"):
        warm = [*argv, "--schedule", schedule, "--warmup-epochs", "1"]
        first = _one_update(example, warm, step=0)
        middle = _one_update(example, warm, step=5)
        peak = _one_update(example, warm, step=10)
        assert first["kernel"] == 0.0
        assert middle["kernel"] == pytest.approx(-0.05)
        assert peak["kernel"] == pytest.approx(-0.1)
    cold = _one_update(example, [*argv, "--schedule", "cosine"], step=0)
    assert cold["kernel"] == pytest.approx(-0.1)


def test_label_smoothing_picks_the_smoothed_loss(example, monkeypatch):
    seen = {}

    def record_fit(*args, **kwargs):
        seen["loss"] = args[3].loss  # the step owns its loss
        raise SystemExit(0)

    monkeypatch.setattr(example, "fit", record_fit)
    argv = [*TINY, "--epochs", "1", "--no-progress"]
    with pytest.raises(SystemExit):
        example.main([*argv, "--label-smoothing", "0.2"])
    logits, label = jax.numpy.array([[2.0, 0.0, 0.0]]), jax.numpy.array([0])
    smoothed = zoo.train.label_smoothing(0.2)(logits, label)
    assert float(seen["loss"](logits, label)[0]) == pytest.approx(float(smoothed[0]))
    with pytest.raises(SystemExit):
        example.main(argv)
    assert seen["loss"] is zoo.train.softmax_cross_entropy


def test_a_teacher_trains_the_student_on_its_logits(example, monkeypatch, capsys):
    seen = {}

    def record_fit(*args, **kwargs):
        seen["train"], seen["loss"] = args[2], args[3].loss
        raise SystemExit(0)

    monkeypatch.setattr(example, "fit", record_fit)
    argv = [*TINY, "--epochs", "1", "--no-progress", "--label-smoothing", "0.1"]
    with pytest.raises(SystemExit):
        example.main([*argv, "--teacher", "mlp", "--distill-temperature", "2"])
    assert "distilling from mlp (" in capsys.readouterr().out
    assert seen["loss"] == zoo.train.distillation(2.0, 0.9, smoothing=0.1)
    teacher, state = zoo.create_model("mlp", pretrained="mnist", key=jax.random.key(0))
    train = seen["train"]
    expected = zoo.train.teacher_logits(teacher, state, train.take(len(train)))
    np.testing.assert_array_equal(train.targets, expected)


def _documented_commands() -> list[tuple[str, list[str]]]:
    """Every ``python examples/mnist.py ...`` of the README and docs, as argv."""
    found = []
    for page in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        text = page.read_text(encoding="utf-8").replace("\\\n", " ")
        for line in text.splitlines():
            for match in re.finditer(r"python examples/mnist\.py([^`#|]*)", line):
                found.append((page.name, shlex.split(match.group(1))))
    return found


def test_every_documented_command_line_parses(example):
    commands = _documented_commands()
    commands += [("noxfile.py", flags) for flags, _ in helpers.readme_runs().values()]
    parallel = REPO / "tests" / "test_parallel.py"
    commands += [(parallel.name, ["--train-examples", "1024", "--epochs", "1",
                                  "--no-progress", "--out", "runs/x"])]  # fmt: skip
    assert len(commands) > 10
    for where, argv in commands:
        if "--config" in argv:
            continue  # reads a file: tests/test_run_config.py runs it
        try:
            example.parse_args(argv)
        except SystemExit as error:  # --help exits with 0
            assert error.code == 0, f"{where}: {argv} is refused"


def test_output_dir_blocked_by_a_file_fails_before_training(example, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("in the way")
    # The first file the run would write names the blocker, before any work.
    with pytest.raises(ValueError, match=r"Cannot write .*file/metrics\.json"):
        example.main([*TINY, "--epochs", "1", "--out", str(blocker)])


def test_ctrl_c_stops_with_one_line_saying_how_to_resume(data_dir, tmp_path):
    """A real SIGINT once training has started: exit code 130, no traceback."""
    out = tmp_path / "run"
    argv = [*TINY, "--epochs", "500", "--out", str(out), "--no-progress"]
    # As from a terminal: a shell's background job inherits SIGINT ignored, so
    # the child resets it to the default before it execs the script (no
    # preexec_fn: forking this multithreaded process would warn).
    launcher = (
        "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
        "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])"
    )
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            launcher,
            "-u",
            str(REPO / "examples" / "mnist.py"),
            *argv,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "ZOO_DATA_DIR": str(data_dir)},
    )
    try:
        assert process.stdout is not None
        printed = []
        for line in process.stdout:
            printed.append(line)
            if line.startswith("epoch 1/500"):
                break
        assert printed and printed[-1].startswith("epoch 1/500"), "".join(printed)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "--resume" in lines[0] and str(out) in lines[0]
    # The hint without --out: nothing to resume from.
    hint = load_example().resume_hint(TINY)
    assert "--resume" not in hint and "no --out" in hint
