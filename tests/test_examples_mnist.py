"""A tiny configuration of examples/mnist.py, run end to end."""

import importlib.util
import json
import pathlib
import sys

import pytest

import zoo

EXAMPLE = pathlib.Path(__file__).resolve().parent.parent / "examples" / "mnist.py"


def load_example():
    spec = importlib.util.spec_from_file_location("mnist_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["mnist_example"] = module
    spec.loader.exec_module(module)
    return module


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
    assert [e["epoch"] for e in metrics["epochs"]] == [0]
    assert metrics["compile_seconds"] > 0
    assert metrics["config"]["model"] == "mlp"
    assert metrics["epochs"][0]["test_accuracy"] == pytest.approx(accuracy)
    model, _ = zoo.load_model(out / "checkpoint")
    assert isinstance(model, zoo.MLP)

    example.main([*TINY, "--epochs", "2", "--out", str(out), "--resume"])
    printed = capsys.readouterr().out
    assert "resumed from step 8" in printed
    assert "epoch 1/2" not in printed and "epoch 2/2" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert [e["epoch"] for e in metrics["epochs"]] == [0, 1]
    assert int(zoo.load_checkpoint(out / "checkpoint").train_state.step) == 16


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--epochs", "-1"], "must be a positive integer"),
        (["--batch-size", "0"], "must be a positive integer"),
        (["--lr", "nan"], "must be a positive number"),
        (["--model", "cnm"], "Did you mean 'cnn'"),
        (["--dataset", "cifar"], "invalid choice"),
        (["--resume"], "--resume needs --out"),
    ],
)
def test_bad_command_line_values_are_refused(example, argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        example.parse_args(argv)
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_output_dir_blocked_by_a_file_fails_before_training(example, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("in the way")
    with pytest.raises(zoo.CheckpointError, match="file"):
        example.main([*TINY, "--epochs", "1", "--out", str(blocker)])
