"""``zoo.export``: files that run without zoo and give zoo's logits."""

import json
import os
import pathlib
import re
import subprocess
import sys

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import zoo
from tests import helpers

REPO = pathlib.Path(__file__).resolve().parent.parent
BATCHES = (3, 5)
JAX_RTOL = 1e-6
"""Largest error allowed on a ``"jax"`` file's logits, relative to the
largest logit: the same program compiled by the same XLA."""
ONNX_RTOL = 1e-5
"""The same for ONNX Runtime, whose kernels sum in other orders."""
SLOW_224 = {"resnet18", "resnet34", "vit_small_patch16_224"}
"""224x224 presets the default tests leave out: each export and load costs
tens of seconds on a 2-core CPU, and one preset of each family runs at 224x224
(resnet50, vit_tiny_patch16_224), the small ResNets run the basic blocks."""

LOAD_WITHOUT_ZOO = r"""
import json, sys
import jax, numpy as np
folder, names = sys.argv[1], json.loads(sys.argv[2])
results = {}
for name in names:
    with open(f"{folder}/{name}.jax", "rb") as f:
        exported = jax.export.deserialize(bytearray(f.read()))
    for batch in json.loads(sys.argv[3]):
        x = np.load(f"{folder}/{name}-x{batch}.npy")
        results[f"{name}-{batch}"] = np.asarray(exported.call(x))
np.savez(f"{folder}/results.npz", **results)
assert "zoo" not in sys.modules, "the loader imported zoo"
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] == "zoo")))
"""


def _reference(model: zoo.AbstractModel, state: eqx.nn.State, x: np.ndarray):
    """zoo's logits for ``x`` in inference mode, compiled as the file is: the
    parameters closed over (XLA folds constants, so a program that takes them
    as arguments rounds differently, by up to 2e-6 on resnet50)."""
    inference = eqx.nn.inference_mode(model)
    logits = jax.jit(lambda x: zoo.apply(inference, x, state)[0])(x)
    return np.asarray(logits)


def _relative_error(got: np.ndarray, want: np.ndarray) -> float:
    assert got.shape == want.shape and got.dtype == want.dtype
    return float(np.max(np.abs(got - want)) / np.max(np.abs(want)))


def _inputs(model: zoo.AbstractModel, batch: int) -> np.ndarray:
    return np.asarray(helpers.random_inputs(model, batch, seed=batch))


def test_every_preset_exports_and_runs_without_zoo_at_any_batch(tmp_path):
    # Every preset but SLOW_224, exported with a symbolic batch, then loaded
    # by one Python process that never imports zoo and run on 3 and 5 images.
    names = [n for n in zoo.list_models() if n not in SLOW_224]
    want, eager = {}, {}
    for name in names:
        model, state = helpers.make_model(name, 0)
        path = zoo.export(model, state, tmp_path / f"{name}.jax")
        (spec,) = jax.export.deserialize(bytearray(path.read_bytes())).in_avals
        assert str(spec.shape[0]) == "b" and spec.dtype == jnp.float32, name
        assert spec.shape[1:] == model.input_shape, name
        for batch in BATCHES:
            x = _inputs(model, batch)
            np.save(tmp_path / f"{name}-x{batch}.npy", x)
            want[f"{name}-{batch}"] = _reference(model, state, x)
            eager[f"{name}-{batch}"] = np.asarray(
                zoo.apply(eqx.nn.inference_mode(model), x, state)[0]
            )
    done = subprocess.run(
        [sys.executable, "-c", LOAD_WITHOUT_ZOO, str(tmp_path), json.dumps(names),
         json.dumps(BATCHES)],
        cwd=tmp_path, env={**os.environ, "JAX_PLATFORMS": "cpu"},
        capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.splitlines()[-1]) == []
    with np.load(tmp_path / "results.npz") as got:
        errors = {k: _relative_error(got[k], w) for k, w in want.items()}
        for key, logits in eager.items():  # the same model as zoo's eager call
            helpers.assert_close(got[key], logits, rtol=1e-5)
    print(json.dumps(errors))
    assert max(errors.values()) <= JAX_RTOL, errors
    assert not list(tmp_path.glob(".*")), "a temporary file was left"


def test_a_fixed_batch_size_is_the_only_one_taken(tmp_path):
    model, state = zoo.create_model("lenet5", key=jax.random.key(0))
    path = zoo.export(model, state, tmp_path / "lenet5.jax", batch_size=4)
    exported = jax.export.deserialize(bytearray(path.read_bytes()))
    assert exported.in_avals[0].shape == (4, 1, 28, 28)
    x = _inputs(model, 4)
    assert (
        _relative_error(np.asarray(exported.call(x)), _reference(model, state, x))
        <= JAX_RTOL
    )
    with pytest.raises(ValueError, match="shape"):
        exported.call(_inputs(model, 5))


def test_a_headless_model_exports_its_features(tmp_path):
    model, state = zoo.create_model("cnn", key=jax.random.key(0), out_size=0)
    path = zoo.export(model, state, tmp_path / "features.jax")
    exported = jax.export.deserialize(bytearray(path.read_bytes()))
    x = _inputs(model, 3)
    got = np.asarray(exported.call(x))
    assert got.shape == (3, 256)
    want = np.asarray(eqx.filter_jit(zoo.features)(model, x, state))
    assert _relative_error(got, want) <= JAX_RTOL


def test_the_xla_conv_path_exports_the_same_logits(tmp_path):
    model, state = zoo.create_model("cnn", key=jax.random.key(0))
    plain = zoo.models.with_conv_path(model, "xla")
    path = zoo.export(plain, state, tmp_path / "xla.jax")
    x = _inputs(model, 3)
    got = np.asarray(jax.export.deserialize(bytearray(path.read_bytes())).call(x))
    helpers.assert_close(got, _reference(model, state, x), rtol=1e-5)


def _nan_mean(state: eqx.nn.State) -> eqx.nn.State:
    """``state`` with its first floating-point entry (a running mean) NaN."""
    leaves, treedef = jax.tree.flatten(state)
    first = next(i for i, x in enumerate(leaves) if x.dtype == jnp.float32)
    leaves[first] = leaves[first] * jnp.nan
    return jax.tree.unflatten(treedef, leaves)


def _bad_exports(tmp_path: pathlib.Path) -> list:
    cnn, cnn_state = zoo.create_model("cnn", key=jax.random.key(0))
    _, stax_state = zoo.create_model("stax_cnn", key=jax.random.key(0))
    mlp, _ = zoo.create_model("mlp", key=jax.random.key(0))
    file = tmp_path / "model.jax"
    return [
        ((cnn, cnn_state, file), {"format": "tflite"}, ValueError,
         r"Unknown export format 'tflite': choose one of 'jax', 'onnx'"),
        ((cnn, cnn_state, file), {"batch_size": 0}, ValueError, "batch_size must be"),
        ((cnn, cnn_state, file), {"batch_size": True}, ValueError, "batch_size must"),
        ((cnn, cnn_state, tmp_path / "missing" / "model.jax"), {}, FileNotFoundError,
         r"folder .*missing does not exist: create it first"),
        ((cnn, cnn_state, tmp_path), {}, IsADirectoryError, "is a folder"),
        ((cnn, stax_state, file), {}, ValueError,
         r"state passed is not CNN's .*CNN.blocks\[1\].norm"),
        ((cnn, None, file), {}, ValueError, "stateful"),
        ((cnn, {"mean": 0}, file), {}, ValueError, "eqx.nn.State"),
        ((mlp, stax_state, file), {}, ValueError, "MLP is stateless"),
        ((eqx.nn.Linear(2, 2, key=jax.random.key(0)), None, file), {}, TypeError,
         "takes a zoo model"),
        ((cnn, _nan_mean(cnn_state), file), {}, ValueError,
         r"zoo.export: the weights hold NaN .* in state"),
    ]  # fmt: skip


def test_bad_exports_say_what_is_wrong_and_write_nothing(tmp_path):
    cases = _bad_exports(tmp_path)
    old = tmp_path / "model.jax"
    old.write_bytes(b"an earlier export")
    for args, kwargs, error, message in cases:
        with pytest.raises(error, match=message):
            zoo.export(*args, **kwargs)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.jax"]
    assert old.read_bytes() == b"an earlier export"


def test_onnx_without_jax2onnx_names_the_extra(tmp_path, monkeypatch):
    # ``None`` in sys.modules makes ``import jax2onnx`` fail as if absent.
    monkeypatch.setitem(sys.modules, "jax2onnx", None)
    model, state = zoo.create_model("toy_mlp", key=jax.random.key(0))
    with pytest.raises(ImportError, match=re.escape("pip install 'typed-zoo[onnx]'")):
        zoo.export(model, state, tmp_path / "toy.onnx", format="onnx")
    assert list(tmp_path.iterdir()) == []


def docs_block(marker: str) -> str:
    """The Python block after ``<!-- test: marker -->`` in docs/export.md."""
    text = (REPO / "docs" / "export.md").read_text(encoding="utf-8")
    match = re.search(rf"<!-- test: {marker} -->\n```python\n(.*?)```", text, re.S)
    assert match is not None, f"docs/export.md has no block marked {marker}"
    return match.group(1)


def test_the_docs_jax_export_block_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    exec(compile(docs_block("export-jax"), "docs/export.md", "exec"), {})
    out = capsys.readouterr().out
    assert "(3, 10) (5, 10)" in out and "same logits: True" in out, out


# ONNX: jax2onnx converts, ONNX Runtime runs (nox -s interop).

ONNX_FIXED_BATCH = {
    "resnet18": "a fixed batch only: jax2onnx cannot lower the stem's max-pool "
    "padding (lax.pad) with a symbolic batch dimension",
}
ONNX_FIXED_BATCH["resnet34"] = ONNX_FIXED_BATCH["resnet50"] = ONNX_FIXED_BATCH[
    "resnet18"
]
"""Presets ONNX export takes with ``batch_size=N`` only, and why (docs/export.md
shows the same table)."""


def _onnx_run(path: pathlib.Path, x: np.ndarray) -> np.ndarray:
    ort = helpers.require("onnxruntime")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (logits,) = session.run(["logits"], {"x": x})
    return logits


@pytest.mark.interop
@pytest.mark.parametrize("name", zoo.list_models())
def test_onnx_export_gives_zoo_logits_in_onnx_runtime(name: str, tmp_path):
    helpers.require("jax2onnx")
    model, state = helpers.make_model(name, 0)
    path = tmp_path / f"{name}.onnx"
    if name in ONNX_FIXED_BATCH:
        with pytest.raises(ValueError, match="pass a fixed batch_size=N"):
            zoo.export(model, state, path, format="onnx")
        assert not path.exists()
        batches = {b: zoo.export(model, state, tmp_path / f"{b}.onnx", format="onnx",
                                 batch_size=b) for b in BATCHES}  # fmt: skip
    else:
        batches = dict.fromkeys(BATCHES, zoo.export(model, state, path, format="onnx"))
    for batch, file in batches.items():
        x = _inputs(model, batch)
        error = _relative_error(_onnx_run(file, x), _reference(model, state, x))
        assert error <= ONNX_RTOL, (name, batch, error)


@pytest.mark.interop
def test_onnx_export_of_a_vit_with_a_conv_stem_gives_zoo_logits(tmp_path):
    helpers.require("jax2onnx")
    model, state = zoo.create_model(
        "vit_patch4_28", stem="conv", depth=2, key=jax.random.key(0)
    )
    path = zoo.export(model, state, tmp_path / "stem.onnx", format="onnx")
    for batch in BATCHES:
        x = _inputs(model, batch)
        error = _relative_error(_onnx_run(path, x), _reference(model, state, x))
        assert error <= ONNX_RTOL, (batch, error)


@pytest.mark.interop
def test_the_docs_onnx_block_runs(tmp_path, monkeypatch, capsys):
    helpers.require("jax2onnx")
    helpers.require("onnxruntime")
    monkeypatch.chdir(tmp_path)
    exec(compile(docs_block("export-onnx"), "docs/export.md", "exec"), {})
    assert "same logits: True" in capsys.readouterr().out
