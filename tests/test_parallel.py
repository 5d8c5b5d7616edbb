"""Data-parallel and multi-process training agree with training on one device.

The multi-device runs are the commands of ``docs/parallel.md``, run in fresh
processes: JAX fixes its CPU device count at start-up, so two CPU devices are
forced with ``XLA_FLAGS``, and two processes meet through ``jax.distributed``
on 127.0.0.1 (gloo collectives on the CPU).
"""

import json
import os
import pathlib
import re
import socket
import subprocess
import sys

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import NamedSharding

import zoo
from zoo.data import ArrayDataset
from zoo.train import data_mesh, fit, local_copy, replicate, shard_batch

REPO = pathlib.Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "parallel.md"
TWO_DEVICES = "XLA_FLAGS=--xla_force_host_platform_device_count=2"
ONE_HOST = "python examples/mnist.py --model {model} --devices {devices}"
TWO_PROCESSES = (
    "python examples/mnist.py --model {model} --coordinator 127.0.0.1:{port} "
    "--num-processes 2 --process-id {process}"
)
# A small run: 8 steps of 128 examples, then the full test set.
SMALL = ["--train-examples", "1024", "--epochs", "1", "--no-progress"]
MODELS = ["mlp", "stax_cnn"]  # stateless, and BatchNorm over the global batch
TIMEOUT = 300


def _env(devices: int = 1) -> dict[str, str]:
    # The runs are CPU runs (forced devices, processes over 127.0.0.1), also
    # on a machine with GPUs.
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["JAX_PLATFORMS"] = "cpu"
    if devices > 1:
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    return env


def _command(template: str, out: pathlib.Path, **fields: object) -> list[str]:
    words = template.format(**fields).split()
    return [sys.executable, *words[1:], *SMALL, "--out", str(out)]


def _run(command: list[str], env: dict[str, str]) -> str:
    done = subprocess.run(
        command, cwd=REPO, env=env, capture_output=True, text=True, timeout=TIMEOUT
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _assert_same_training(one: pathlib.Path, other: pathlib.Path) -> None:
    """Same step, loss and parameters (model, BatchNorm state, Adam state).

    Adam divides by the root of tiny second moments, so the last bits of a
    sum taken in another order grow to ~2e-5 in 8 steps; BatchNorm statistics
    taken per device instead of over the global batch differ by ~1e-2.
    """
    a = zoo.load_checkpoint(one / "checkpoint").train_state
    b = zoo.load_checkpoint(other / "checkpoint").train_state
    assert int(a.step) == int(b.step) == 8
    leaves = [
        jax.tree.leaves(
            eqx.filter((c.model, c.model_state, c.opt_state), eqx.is_inexact_array)
        )
        for c in (a, b)
    ]
    assert len(leaves[0]) == len(leaves[1])
    for x, y in zip(*leaves, strict=True):
        np.testing.assert_allclose(np.asarray(y), np.asarray(x), rtol=1e-3, atol=5e-5)
    history = [
        json.loads((d / "metrics.json").read_text())["epochs"] for d in (one, other)
    ]
    assert history[1][0]["train_loss"] == pytest.approx(
        history[0][0]["train_loss"], rel=1e-5
    )
    assert history[1][0]["test_accuracy"] == pytest.approx(
        history[0][0]["test_accuracy"], abs=2e-4
    )


@pytest.fixture(scope="module")
def one_device(tmp_path_factory: pytest.TempPathFactory) -> dict[str, pathlib.Path]:
    """The reference: each model trained on one device."""
    root = tmp_path_factory.mktemp("one_device")
    for model in MODELS:
        _run(_command(ONE_HOST, root / model, model=model, devices=1), _env())
    return {model: root / model for model in MODELS}


@pytest.mark.parametrize("model", MODELS)
def test_two_devices_train_as_one(model, one_device, tmp_path):
    out = _run(_command(ONE_HOST, tmp_path, model=model, devices=2), _env(devices=2))
    assert "data parallel over 2 devices in 1 process(es)" in out
    _assert_same_training(one_device[model], tmp_path)


def test_two_devices_augment_on_the_device_as_one(tmp_path):
    # The shift is drawn for the global batch: each device's share of it gets
    # the draws of a run on one device.
    command = [*ONE_HOST.split(), "--augment-on", "device"]
    runs = {}
    for devices in (1, 2):
        out = tmp_path / f"devices-{devices}"
        template = " ".join(command)
        said = _run(
            _command(template, out, model="mlp", devices=devices), _env(devices)
        )
        assert "augmented on the device" in said
        runs[devices] = out
    assert "data parallel over 2 devices" in said
    _assert_same_training(runs[1], runs[2])


@pytest.mark.parametrize("model", MODELS)
def test_two_processes_train_as_one(model, one_device, tmp_path):
    port = _free_port()
    processes = [
        subprocess.Popen(
            _command(TWO_PROCESSES, tmp_path, model=model, port=port, process=i),
            cwd=REPO,
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in (0, 1)
    ]
    try:
        outputs = [p.communicate(timeout=TIMEOUT)[0] for p in processes]
    finally:
        for p in processes:
            p.kill()
    assert [p.returncode for p in processes] == [0, 0], "\n".join(outputs)
    assert "data parallel over 2 devices in 2 process(es)" in outputs[0]
    assert "test accuracy" not in outputs[1]  # only process 0 reports
    _assert_same_training(one_device[model], tmp_path)


def test_batch_that_does_not_split_is_refused(tmp_path):
    command = _command(ONE_HOST, tmp_path, model="mlp", devices=2)
    done = subprocess.run(
        [*command, "--batch-size", "127"],
        cwd=REPO,
        env=_env(devices=2),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert done.returncode != 0
    assert "cannot be split evenly over the mesh's 2 devices" in done.stderr
    assert not (tmp_path / "checkpoint").exists()


def test_docs_show_the_commands_the_tests_run():
    # Commands may continue over lines (a backslash, then an indent).
    text = re.sub(r" ?\\\n\s*", " ", DOC.read_text())
    assert TWO_DEVICES + " " + ONE_HOST.format(model="mlp", devices=2) in text
    for process in (0, 1):
        command = TWO_PROCESSES.format(model="mlp", port=1234, process=process)
        assert command in text


def test_fit_on_a_one_device_mesh_matches_plain_fit(mnist_train: ArrayDataset):
    train = mnist_train.take(512)
    results = []
    # One device even on a host with several: this compares the mesh code path,
    # not a split of the batch (that is what the two-device tests compare).
    for mesh in (None, data_mesh(jax.devices()[:1])):
        model, state = zoo.create_model("mlp", key=jax.random.key(0), width_size=[32])
        result = fit(
            model,
            state,
            train,
            optimizer=optax.adam(1e-3),
            epochs=2,
            batch_size=64,
            callbacks=zoo.train.default_callbacks(progress=False, log=None),
            mesh=mesh,
        )
        results.append(result)
    for x, y in zip(
        *(jax.tree.leaves(eqx.filter(r.model, eqx.is_array)) for r in results),
        strict=True,
    ):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-6)
    assert results[0].history[1].train_loss == pytest.approx(
        results[1].history[1].train_loss, rel=1e-6
    )


def test_replicate_shard_and_local_copy():
    mesh = data_mesh()
    tree = {"w": jnp.arange(6.0).reshape(2, 3), "key": jax.random.key(3), "n": 7}
    placed = replicate(tree, mesh)
    assert placed["w"].sharding.is_fully_replicated and placed["n"] == 7
    back = local_copy(placed)
    np.testing.assert_array_equal(np.asarray(back["w"]), np.asarray(tree["w"]))
    assert jnp.array_equal(
        jax.random.key_data(back["key"]), jax.random.key_data(tree["key"])
    )
    batch = shard_batch({"x": np.ones((4, 2), np.float32)}, mesh)
    placed_x = batch["x"]
    assert isinstance(placed_x, jax.Array) and placed_x.shape == (4, 2)
    sharding = placed_x.sharding
    assert isinstance(sharding, NamedSharding)
    assert sharding.spec[0] == zoo.train._parallel.DATA_AXIS


def test_data_mesh_refuses_no_devices():
    with pytest.raises(ValueError, match="at least one device"):
        data_mesh([])
