"""A tiny configuration of examples/toy.py runs end to end and writes its figures."""

import pathlib
import re

import matplotlib.image
import pytest

from tests import helpers

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"
EXAMPLE = EXAMPLES / "toy.py"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _load_example(path: pathlib.Path = EXAMPLE):
    return helpers.load_example(path.name)


def test_toy_example_runs(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]):
    toy = _load_example()
    accuracy = toy.main(["--epochs", "2", "--out", str(tmp_path), "--no-progress"])
    out = capsys.readouterr().out

    assert re.search(r"untrained, first batch of 32: loss \d+\.\d{4}", out)
    match = re.search(r"test accuracy: (\d\.\d{4}) \(200 points\)", out)
    assert match is not None, out
    assert float(match.group(1)) == pytest.approx(accuracy, abs=1e-4)
    assert 0.0 <= accuracy <= 1.0

    for name in ("toy_data.png", "toy_decision_boundary.png"):
        path = tmp_path / name
        assert path.read_bytes()[:8] == PNG_SIGNATURE
        image = matplotlib.image.imread(path)
        assert image.ndim == 3 and min(image.shape[:2]) > 100


def test_toy_options_are_a_typed_config(capsys: pytest.CaptureFixture[str]):
    toy = _load_example()
    config = toy.parse_args(["--epochs", "20", "--out", "/tmp/toy", "--no-progress"])
    assert config == toy.Config(epochs=20, out=pathlib.Path("/tmp/toy"), progress=False)
    assert toy.parse_args([]) == toy.Config(epochs=100, seed=1)
    with pytest.raises(SystemExit) as info:
        toy.parse_args(["--epochs", "0"])
    assert info.value.code == 2
    assert "--epochs must be a positive integer" in capsys.readouterr().err


@pytest.mark.parametrize("script", ["toy.py", "transforms.py"])
def test_help_lists_each_option_with_its_docstring(script, capsys):
    module = _load_example(EXAMPLES / script)
    with pytest.raises(SystemExit) as info:
        module.tyro.cli(module.Config, args=["--help"])
    assert info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--seed INT" in text and "Seeds the" in text
