"""A tiny configuration of examples/toy.py runs end to end and writes its figures."""

import importlib.util
import pathlib
import re

import matplotlib.image
import pytest

EXAMPLE = pathlib.Path(__file__).resolve().parent.parent / "examples" / "toy.py"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _load_example():
    spec = importlib.util.spec_from_file_location("toy_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
