"""A tiny configuration of examples/finetune.py, run end to end."""

import json
import pathlib

import pytest

from tests import helpers


def load_example():
    return helpers.load_example("finetune.py")


def test_tiny_finetune_runs_three_ways(
    data_dir: pathlib.Path, tmp_path: pathlib.Path, capsys
):
    example = load_example()
    argv = ["--model", "mlp", "--epochs", "1", "--train-examples", "512",
            "--test-examples", "500", "--batch-size", "64",
            "--data-dir", str(data_dir), "--out", str(tmp_path)]  # fmt: skip
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


def test_help_reads_cleanly_and_offers_data_dir(capsys):
    with pytest.raises(SystemExit) as exit_:
        load_example().main(["--help"])
    assert exit_.value.code == 0
    text = " ".join(capsys.readouterr().out.replace("│", " ").split())
    assert "(default: None)" not in text and "{None}" not in text
    assert "--out PATH" in text and "--data-dir PATH" in text
    assert "only. (default: all)" in text
    assert "(default: all). (default" not in text
