"""examples/mnist.py's run config: saved with each run, and run again by --config."""

import ast
import dataclasses
import importlib.metadata
import importlib.util
import json
import pathlib
import re
import sys
import tomllib

import equinox as eqx
import jax
import numpy as np
import pytest

import zoo
from tests import helpers

REPO = pathlib.Path(__file__).resolve().parent.parent
TINY = ["--model", "mlp", "--train-examples", "512", "--epochs", "1"]
TINY += ["--batch-size", "64", "--no-progress"]


@pytest.fixture(scope="module")
def example():
    return helpers.load_example("mnist.py", "mnist_config_example")


def _error_text(capsys: pytest.CaptureFixture[str]) -> str:
    """stderr with tyro's box drawing and line wrapping undone."""
    return " ".join(re.sub("[\u2500-\u257f]", " ", capsys.readouterr().err).split())


def _parameters(run: pathlib.Path) -> list[np.ndarray]:
    model, state = zoo.load_model(run / "checkpoint")
    return [
        np.asarray(leaf)
        for leaf in jax.tree.leaves(eqx.filter((model, state), eqx.is_array))
    ]


def test_a_saved_config_reproduces_the_run_bitwise(example, tmp_path):
    first, again = tmp_path / "first", tmp_path / "again"
    example.main([*TINY, "--out", str(first)])
    saved = json.loads((first / "metrics.json").read_text())["config"]
    example.main(["--config", str(first / "metrics.json"), "--out", str(again)])

    replayed = json.loads((again / "metrics.json").read_text())["config"]
    assert replayed["config"] == str(first / "metrics.json")
    assert replayed["out"] == str(again)
    ignored = ("config", "out")
    assert {k: v for k, v in replayed.items() if k not in ignored} == {
        k: v for k, v in saved.items() if k not in ignored
    }
    checkpoint = zoo.load_checkpoint(first / "checkpoint").metadata["config"]
    assert checkpoint == saved  # the checkpoint keeps the same config
    one, other = _parameters(first), _parameters(again)
    assert len(one) == len(other) > 0
    for x, y in zip(one, other, strict=True):
        assert x.dtype == y.dtype and np.array_equal(x, y)  # bitwise


def test_the_saved_config_holds_every_field_resolved(example):
    config = example.parse_args(["--dataset", "fashion_mnist", "--lr", "2e-3"])
    saved = config.to_json()
    assert set(saved) == {f.name for f in dataclasses.fields(example.Config)}
    assert None not in (saved["shift"], saved["flip"], saved["crop_padding"])
    assert (saved["flip"], saved["crop_padding"], saved["lr"]) == (False, 2, 2e-3)
    json.dumps(saved)  # plain JSON: paths are strings


def test_flags_beside_config_override_the_file(example, tmp_path):
    file = tmp_path / "options.json"
    file.write_text(json.dumps({"model": "mlp", "epochs": 3, "lr": 0.002, "seed": 7}))
    config = example.parse_args(["--config", str(file), "--epochs", "5"])
    assert (config.model, config.epochs, config.lr, config.seed) == (
        "mlp",
        5,
        0.002,
        7,
    )
    assert config.config == file
    assert config.batch_size == 128  # left out of the file: the default


def test_config_reads_a_run_folder_and_keeps_its_values(example, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    saved = example.parse_args(
        ["--dataset", "fashion_mnist", "--flip", "--erasing", "0.25",
         "--train-examples", "256", "--devices", "all", "--out", str(run)]
    ).to_json()  # fmt: skip
    metrics = {"epochs": [], "config": {**saved, "model_config": {}}}
    (run / "metrics.json").write_text(json.dumps(metrics))
    config = example.parse_args(["--config", str(run), "--no-flip"])
    assert not config.flip  # the flag wins
    assert (config.erasing, config.crop_padding) == (0.25, 2)
    assert (config.train_examples, config.devices) == (256, "all")
    assert config.out == run and config.dataset == "fashion_mnist"


def test_null_values_in_a_config_file_keep_the_defaults(example, tmp_path):
    file = tmp_path / "options.json"
    file.write_text(json.dumps({"dataset": "fashion_mnist", "crop_padding": None}))
    config = example.parse_args(["--config", str(file)])
    assert config.crop_padding == 2  # the data set's default


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"epohcs": 3}, "unknown options ['epohcs']"),
        ({"epochs": 0}, "--epochs must be a positive integer, got 0"),
        ({"epochs": "many"}, "Error parsing --epochs"),
        ({"model": "cnm"}, "Did you mean 'cnn'"),
        ({"dataset": "cifar"}, "invalid choice 'cifar' for argument '--dataset'"),
        ({"shift": [1, 2]}, "shift is [1, 2], not an option value"),
        ([1, 2], "expected a JSON object of options"),
    ],
)
def test_bad_config_files_are_refused_naming_the_option(
    example, tmp_path, capsys, content, message
):
    file = tmp_path / "options.json"
    file.write_text(json.dumps(content))
    with pytest.raises(SystemExit) as info:
        example.parse_args(["--config", str(file)])
    assert info.value.code == 2
    text = _error_text(capsys)
    assert message in text and "--config" in text


def test_a_missing_config_file_is_refused(example, tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        example.parse_args(["--config", str(tmp_path / "nowhere.json")])
    assert info.value.code == 2
    assert "cannot read it as JSON" in _error_text(capsys)


def _requirement_name(requirement: str) -> str:
    match = re.match(r"[A-Za-z0-9._-]+", requirement)
    assert match is not None, requirement
    return re.sub(r"[-_.]+", "-", match.group(0)).lower()


def test_the_examples_extra_covers_what_the_examples_import():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared = {
        _requirement_name(r)
        for r in [
            *project["dependencies"],
            *project["optional-dependencies"]["examples"],
        ]
    }
    providers = importlib.metadata.packages_distributions()
    missing = []
    for script in sorted((REPO / "examples").glob("*.py")):
        for node in ast.walk(ast.parse(script.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                modules = [alias.name.partition(".")[0] for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module.partition(".")[0]]
            else:
                continue
            for module in modules:
                sibling = (REPO / "examples" / f"{module}.py").is_file()
                if module in sys.stdlib_module_names or module == "zoo" or sibling:
                    continue  # the standard library, zoo, or another example
                dists = {_requirement_name(d) for d in providers.get(module, [])}
                if not dists & declared:
                    missing.append(f"{script.name}: {module}")
    assert not missing, f"not in the dependencies or the examples extra: {missing}"
