"""A tiny configuration of examples/finetune.py, run end to end."""

import json
import pathlib

from tests import helpers


def load_example():
    return helpers.load_example("finetune.py")


def test_tiny_finetune_runs_three_ways(tmp_path: pathlib.Path, capsys):
    example = load_example()
    argv = ["--model", "mlp", "--epochs", "1", "--train-examples", "512",
            "--test-examples", "500", "--batch-size", "64",
            "--out", str(tmp_path)]  # fmt: skip
    results = example.main(argv)
    assert [r["mode"] for r in results] == ["head", "all", "scratch"]
    head, everything, scratch = results
    assert head["trainable_parameters"] == 512 * 10 + 10
    assert everything["trainable_parameters"] == scratch["trainable_parameters"]
    for r in results:
        assert len(r["test_accuracy"]) == 2
        assert r["steps_per_epoch"] == 8
    for r in results:  # eight steps are enough to learn something
        assert r["test_accuracy"][-1] > r["test_accuracy"][0]
    out = capsys.readouterr().out
    assert "| head | 5,130 |" in out
    saved = json.loads((tmp_path / "finetune.json").read_text())
    assert saved["results"] == results
    assert (tmp_path / "finetune.png").stat().st_size > 0
