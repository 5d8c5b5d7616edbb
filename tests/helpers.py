"""Helpers shared by the test modules."""

import ast
import importlib.util
import json
import os
import pathlib
import re
import subprocess
import sys
import types
from collections.abc import Callable, Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import zoo

REPO = pathlib.Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"


SMALL_IMAGE = 32
"""The image side at which :func:`make_model` builds the presets of 224x224
images, so that the property tests stay quick."""
SMALL_VIT_DEPTH = 2
"""The blocks of a 224x224 ViT preset built by :func:`make_model` (its blocks
are alike: two test how they compose)."""


def make_model(
    name: str, seed: int, **overrides: Any
) -> tuple[zoo.AbstractModel, eqx.nn.State]:
    """Build preset ``name`` from an integer seed.

    A preset of 224x224 images is built small unless ``overrides`` say
    otherwise: ``SMALL_IMAGE`` pixels a side, and a ViT of ``SMALL_VIT_DEPTH``
    blocks (the layers are the preset's; the 224x224 presets' own tests run
    them at full size).
    """
    config = zoo.models.model_spec(name).config
    if config.get("image_size") == [224, 224]:
        small: dict[str, Any] = {"image_size": SMALL_IMAGE}
        if config["family"] == "ViT":
            small["depth"] = SMALL_VIT_DEPTH
        overrides = {**small, **overrides}
    return zoo.create_model(name, key=jax.random.key(seed), **overrides)


def random_inputs(
    model: zoo.AbstractModel, batch: int, seed: int, dtype: Any = jnp.float32
) -> jax.Array:
    """A batch of inputs in ``[0, 1)`` shaped for ``model``."""
    shape = (batch, *model.input_shape)
    return jax.random.uniform(jax.random.key(seed), shape, dtype=dtype)


def params(tree: Any) -> list[jax.Array]:
    """The floating-point arrays (the trainable parameters) of a pytree."""
    return jax.tree.leaves(eqx.filter(tree, eqx.is_inexact_array))


def weights(model: Any) -> list[jax.Array]:
    """The weight matrices/kernels of every Linear and Conv layer."""
    layers = jax.tree.leaves(
        model, is_leaf=lambda m: isinstance(m, eqx.nn.Linear | eqx.nn.Conv)
    )
    return [m.weight for m in layers if isinstance(m, eqx.nn.Linear | eqx.nn.Conv)]


_jit_apply = eqx.filter_jit(zoo.apply)


@eqx.filter_jit
def call_one(model: zoo.AbstractModel, state: eqx.nn.State, x: jax.Array) -> jax.Array:
    """Call the model on ONE example (no vmap), in inference or stateless mode."""
    if model.stateful:
        out, _ = model(x, state)  # pyright: ignore[reportCallIssue]
        return out
    return model(x)  # pyright: ignore[reportCallIssue]


def assert_vmap_matches_loop(
    model: zoo.AbstractModel, state: eqx.nn.State, xs: jax.Array
) -> None:
    """``zoo.apply`` (vmap) on a batch equals calling the model per example."""
    batched, _ = _jit_apply(model, xs, state)
    looped = jnp.stack([call_one(model, state, x) for x in xs])
    np.testing.assert_allclose(batched, looped, rtol=1e-5, atol=1e-5)


def load_example(script: str, module_name: str | None = None) -> types.ModuleType:
    """Import ``examples/<script>`` as a module (registered in ``sys.modules``:
    tyro reads the docstrings of its config from the source)."""
    name = module_name or f"{pathlib.Path(script).stem}_example"
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def readme_runs() -> dict[str, tuple[list[str], float]]:
    """``README_RUNS`` from noxfile.py, read without importing nox.

    Runs only the assignments of ``README_RUNS`` and of the private flag lists
    it is built from (``_NAME = [...]``), none of the file's sessions.
    """
    tree = ast.parse((EXAMPLES.parent / "noxfile.py").read_text(encoding="utf-8"))
    wanted: list[ast.stmt] = [
        node
        for node in tree.body
        if isinstance(node, ast.Assign)
        and len(node.targets) == 1
        and isinstance(name := node.targets[0], ast.Name)
        and (name.id == "README_RUNS" or name.id.startswith("_"))
    ]
    namespace: dict[str, Any] = {}
    exec(compile(ast.Module(wanted, []), "noxfile.py", "exec"), namespace)
    if "README_RUNS" not in namespace:
        raise AssertionError("noxfile.py defines no README_RUNS")
    return namespace["README_RUNS"]


def assert_close(actual: Any, expected: Any, rtol: float = 1e-4) -> None:
    """Equal within float32 rounding, relative to the largest entry."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    scale = float(np.max(np.abs(expected), initial=0.0))
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale + 1e-6)


def run_probe(
    script: str,
    env: dict[str, str],
    *,
    unset: Callable[[str], bool],
    args: Sequence[str] = (),
) -> dict[str, Any]:
    """Run ``script`` in a fresh CPU-only interpreter; its last line, as JSON.

    The interpreter gets this process's environment without the variables for
    which ``unset(name)`` is true, then ``env`` on top.
    """
    clean = {k: v for k, v in os.environ.items() if not unset(k)}
    done = subprocess.run(
        [sys.executable, "-c", script, *args],
        env={**clean, "JAX_PLATFORMS": "cpu", **env},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def require(module: str) -> types.ModuleType:
    """Import an optional library for an ``interop`` test.

    Skips the test where the library is missing, except under
    ``ZOO_REQUIRE_INTEROP=1`` (``nox -s interop``), where a missing library is
    a failure: the session that installs it must never skip.
    """
    import pytest

    if os.environ.get("ZOO_REQUIRE_INTEROP") == "1":
        return importlib.import_module(module)
    return pytest.importorskip(module)


def docs_block(page: str, marker: str) -> str:
    """The Python block after ``<!-- test: marker -->`` in ``docs/<page>``."""
    text = (REPO / "docs" / page).read_text(encoding="utf-8")
    match = re.search(rf"<!-- test: {marker} -->\n```python\n(.*?)```", text, re.S)
    assert match is not None, f"docs/{page} has no block marked {marker}"
    return match.group(1)
