"""examples/transforms.py runs end to end and prints each of its tables."""

import pytest

from tests import helpers


def test_transforms_example_runs(capsys: pytest.CaptureFixture[str]):
    transforms = helpers.load_example("transforms.py")
    transforms.main(["--seed", "1"])
    out = capsys.readouterr().out
    for table in ["jit:", "grad:", "vmap:", "vmap and filter_jit:", "filter_grad:"]:
        assert any(line.startswith(table) for line in out.splitlines()), out
    assert "eqx.filter_jit(eqx.filter_grad)" in out
    # d/dx x**2 at 2, then its second and third derivatives
    for times, value in [(1, "4.0"), (2, "2.0"), (3, "0.0")]:
        assert f"grad applied {times}x:  {value}" in out, out
    assert "[(512, 784), (512,), (512, 512), (512,), (10, 512), (10,)]" in out


def test_transforms_example_refuses_an_unknown_flag(capsys: pytest.CaptureFixture[str]):
    transforms = helpers.load_example("transforms.py")
    with pytest.raises(SystemExit) as exit_:
        transforms.main(["--seeds", "1"])
    assert exit_.value.code == 2
