"""Packaging: zoo works without its optional dependencies, and declares the rest.

Matplotlib is the ``plot`` extra: ``import zoo``, building, applying and training
models must not need it, and ``zoo.plot`` must say what to install. The installed
wheel is checked on its own by ``nox -s wheel`` (tests/wheel_smoke.py).
"""

import ast
import importlib.metadata
import json
import pathlib
import re
import subprocess
import sys
import tomllib

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))

# Runs in a fresh interpreter in which Matplotlib cannot be imported, as when it
# is not installed; prints one JSON line of what it saw.
WITHOUT_MATPLOTLIB = """
import json, sys


class NoMatplotlib:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] == "matplotlib":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, NoMatplotlib())

import jax
import zoo

model, state = zoo.create_model("mlp", key=jax.random.key(0))
logits, _ = zoo.apply(model, jax.numpy.zeros((3, *model.input_shape)), state)
seen = {"shape": list(logits.shape), "finite": bool(jax.numpy.isfinite(logits).all())}
seen["loaded"] = sorted(m for m in sys.modules if m.partition(".")[0] == "matplotlib")
try:
    zoo.plot
except ImportError as error:
    seen["error"] = [type(error).__name__, error.name, str(error)]
print(json.dumps(seen))
"""


@pytest.fixture(scope="module")
def without_matplotlib() -> dict:
    done = subprocess.run(
        [sys.executable, "-c", WITHOUT_MATPLOTLIB],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_zoo_builds_and_applies_a_model_without_matplotlib(without_matplotlib: dict):
    assert without_matplotlib["shape"] == [3, 10]
    assert without_matplotlib["finite"]
    assert without_matplotlib["loaded"] == []


def test_zoo_plot_without_matplotlib_names_the_extra(without_matplotlib: dict):
    kind, name, message = without_matplotlib["error"]
    assert kind == "ModuleNotFoundError"
    assert name == "matplotlib"
    assert "pip install 'typed-zoo[plot]'" in message


def _requirement_name(requirement: str) -> str:
    match = re.match(r"[A-Za-z0-9._-]+", requirement)
    assert match is not None, requirement
    return re.sub(r"[-_.]+", "-", match.group(0)).lower()


def _imported_top_modules(path: pathlib.Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name.partition(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.partition(".")[0])
    return names - set(sys.stdlib_module_names) - {"zoo"}


def test_every_third_party_import_is_a_declared_dependency():
    project = PYPROJECT["project"]
    required = {_requirement_name(r) for r in project["dependencies"]}
    extras = {
        name: required | {_requirement_name(r) for r in requirements}
        for name, requirements in project["optional-dependencies"].items()
    }
    providers = importlib.metadata.packages_distributions()
    undeclared = []
    for path in sorted((REPO / "zoo").rglob("*.py")):
        declared = required
        if path.name == "plot.py" or "plot" in path.parts:
            declared = extras["plot"]
        elif path.name == "_tensorboard.py":  # imports tensorboardX when used
            declared = extras["tensorboard"]
        elif path.name == "_export.py":  # imports jax2onnx for format="onnx"
            declared = extras["onnx"]
        elif path.name == "_hub.py":  # imports huggingface_hub for "hf-hub:"
            declared = extras["hub"]
        for module in sorted(_imported_top_modules(path)):
            # (an extra's library, not installed here, goes by its own name)
            dists = {_requirement_name(d) for d in providers.get(module, [])} or {
                _requirement_name(module)
            }
            if not dists & declared:
                where = path.relative_to(REPO)
                undeclared.append(f"{where}: {module} (from {sorted(dists)})")
    assert not undeclared, (
        "imports not covered by pyproject's dependencies (or, for zoo.plot and "
        f"the TensorBoard writer, their extras): {undeclared}"
    )


def test_matplotlib_is_only_the_plot_extra():
    project = PYPROJECT["project"]
    assert "matplotlib" not in {_requirement_name(r) for r in project["dependencies"]}
    assert "matplotlib" in {
        _requirement_name(r) for r in project["optional-dependencies"]["plot"]
    }
