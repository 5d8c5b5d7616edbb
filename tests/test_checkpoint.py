"""Checkpoints: bitwise round trips, atomic versions, crash safety, clear errors."""

import ast
import errno
import importlib.metadata
import inspect
import json
import os
import pathlib
import random
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import types
from collections.abc import Callable, Iterator
from typing import Any

import equinox as eqx
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given

import zoo
from tests import _checkpoint_writer as writer
from zoo.train import TrainState, _checkpoint, _checkpoint_dir, _checkpoint_files
from zoo.train._checkpoint import (
    Checkpoint,
    CheckpointError,
    ensure_writable,
    latest_checkpoint,
    load_checkpoint,
    load_model,
    save_checkpoint,
)

WRITER = pathlib.Path(writer.__file__)
ADAM = optax.adam(1e-3)


def _hidden(directory: pathlib.Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


def _versions(directory: pathlib.Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("step_"))


def _filled(tree: Any, value: float) -> Any:
    """``tree`` with every array replaced by a NumPy array full of ``value``."""
    return jax.tree.map(
        lambda x: np.full(x.shape, value, x.dtype) if eqx.is_array(x) else x, tree
    )


def _assert_bitwise_equal(loaded: Any, saved: Any) -> None:
    """Same tree structure and static fields, and every array bit for bit."""
    assert bool(eqx.tree_equal(loaded, saved))
    loaded_leaves, loaded_def = jax.tree.flatten(loaded)
    saved_leaves, saved_def = jax.tree.flatten(saved)
    assert loaded_def == saved_def
    for new, old in zip(loaded_leaves, saved_leaves, strict=True):
        if eqx.is_array(old):
            new, old = np.asarray(new), np.asarray(old)
            assert (new.dtype, new.shape) == (old.dtype, old.shape)
            assert np.array_equal(new, old)
            assert new.tobytes() == old.tobytes()
        else:
            assert new == old


def _assert_same_key(loaded: jax.Array, saved: jax.Array) -> None:
    assert jnp.issubdtype(loaded.dtype, jax.dtypes.prng_key)
    assert jax.random.key_impl(loaded) == jax.random.key_impl(saved)
    assert np.array_equal(jax.random.key_data(loaded), jax.random.key_data(saved))


def _random_model(
    name: str, seed: int, **overrides: Any
) -> tuple[zoo.AbstractModel, eqx.nn.State]:
    """Preset ``name`` with random arrays, built without compiling initialisers.

    Checkpoints care about structure and bits, not about how the values came
    about, and eager initialisation of the CNN presets compiles for seconds.
    """
    shapes = eqx.filter_eval_shape(
        zoo.create_model, name, key=jax.random.key(0), **overrides
    )
    rng = np.random.default_rng(seed)

    def fill(x: Any) -> Any:
        if not isinstance(x, jax.ShapeDtypeStruct):
            return x
        if jnp.issubdtype(x.dtype, jnp.floating):
            values = rng.uniform(0.0, 0.1, x.shape)  # > 0: BatchNorm variances
        else:
            values = rng.integers(0, 100, x.shape)
        return jnp.asarray(values.astype(x.dtype))

    return jax.tree.map(fill, shapes)


def _inputs(model: zoo.AbstractModel, batch: int, seed: int) -> jax.Array:
    rng = np.random.default_rng(seed)
    return jnp.asarray(rng.uniform(size=(batch, *model.input_shape)), jnp.float32)


def _toy(seed: int = 0, value: float | None = None, **overrides: Any) -> Any:
    model, state = _random_model("toy_mlp", seed, **overrides)
    return (model, state) if value is None else _filled((model, state), value)


def _train_state(
    model: zoo.AbstractModel,
    state: eqx.nn.State,
    opt_state: optax.OptState | None = None,
    *,
    step: Any = 0,
    key: Any = None,
) -> TrainState:
    key = jax.random.key(0) if key is None else key
    return TrainState(model, state, opt_state, key, step)


def _adam_state(model: zoo.AbstractModel) -> optax.OptState:
    return ADAM.init(eqx.filter(model, eqx.is_inexact_array))


def _save_toy(directory: pathlib.Path, step: int, value: float, **kwargs: Any) -> Any:
    model, state = _toy(value=value)
    opt_state = _filled(_adam_state(model), value)
    return save_checkpoint(
        directory,
        _train_state(
            model, state, opt_state, step=jnp.int32(step), key=jax.random.key(step)
        ),
        metadata={"value": value},
        **kwargs,
    )


def _value(checkpoint: Checkpoint) -> float:
    """The value a ``_save_toy`` checkpoint was filled with, checking every leaf."""
    value = checkpoint.metadata["value"]
    ts = checkpoint.train_state
    trees = (ts.model, ts.model_state, ts.opt_state)
    for leaf in jax.tree.leaves(trees):
        if eqx.is_array(leaf):
            assert np.all(np.asarray(leaf) == value)
    return value


@eqx.filter_jit
def _adam_step(
    model: zoo.AbstractModel,
    state: eqx.nn.State,
    opt_state: optax.OptState,
    inputs: jax.Array,
    labels: jax.Array,
    key: jax.Array,
) -> tuple[zoo.AbstractModel, eqx.nn.State, optax.OptState]:
    def loss(m: zoo.AbstractModel) -> tuple[jax.Array, eqx.nn.State]:
        logits, new_state = zoo.apply(m, inputs, state, key=key)
        log_probs = jax.nn.log_softmax(logits)
        picked = jnp.take_along_axis(log_probs, labels[:, None], axis=1)
        assert new_state is not None
        return -jnp.mean(picked), new_state

    (_, state), grads = eqx.filter_value_and_grad(loss, has_aux=True)(model)
    params = eqx.filter(model, eqx.is_inexact_array)
    # optax's bias correction mixes a Python float with an int32 count
    with jax.numpy_dtype_promotion("standard"):
        updates, opt_state = ADAM.update(grads, opt_state, params)
    return eqx.apply_updates(model, updates), state, opt_state


_evaluate = eqx.filter_jit(zoo.apply)


@pytest.mark.parametrize("name", zoo.list_models())
def test_round_trip_every_model_is_bitwise(name: str, tmp_path: pathlib.Path):
    # A 224x224 preset's step at 32x32: the same arrays, a fraction of the work.
    small = (
        {"image_size": 32}
        if zoo.models.model_spec(name).config.get("image_size") == [224, 224]
        else {}
    )
    model, state = _random_model(name, 0, **small)
    opt_state = _adam_state(model)
    inputs = _inputs(model, 4, 1)
    labels = jnp.arange(4, dtype=jnp.int32) % model.out_size
    model, state, opt_state = _adam_step(
        model, state, opt_state, inputs, labels, jax.random.key(2)
    )
    key = jax.random.split(jax.random.key(3))[1]
    data_state = {"next_index": 128, "epoch": 1}
    metadata = {"history": [{"loss": 2.25, "accuracy": 0.5}], "run": {"lr": 1e-3}}

    version = save_checkpoint(
        tmp_path,
        _train_state(model, state, opt_state, step=jnp.int32(1), key=key),
        data_state=data_state,
        metadata=metadata,
    )

    assert version == tmp_path / "step_00000001"
    assert latest_checkpoint(tmp_path) == version
    assert (tmp_path / "LATEST").read_text().strip() == "step_00000001"
    files = {"config.json", "model.eqx", "opt_state.eqx", "trainer.json"}
    assert {p.name for p in version.iterdir()} == files | {"manifest.json"}
    checkpoint = load_checkpoint(tmp_path, optimizer=ADAM)
    ts = checkpoint.train_state
    _assert_bitwise_equal(
        (ts.model, ts.model_state, ts.opt_state), (model, state, opt_state)
    )
    _assert_same_key(ts.key, key)
    assert ts.step.dtype == jnp.int32 and int(ts.step) == 1
    assert checkpoint.data_state == data_state
    assert checkpoint.metadata == metadata
    assert ts.model.config() == model.config()

    # into the fresh state of a run of the same config, as when resuming it
    fresh, fresh_state = _random_model(name, 9, **small)
    like = _train_state(fresh, fresh_state, _adam_state(fresh))
    resumed = load_checkpoint(tmp_path, like=like).train_state
    _assert_bitwise_equal(
        (resumed.model, resumed.model_state, resumed.opt_state),
        (model, state, opt_state),
    )
    _assert_same_key(resumed.key, key)
    assert int(resumed.step) == 1
    # like's opt_state None: the model and state alone
    model_only = load_checkpoint(tmp_path, like=_train_state(fresh, fresh_state))
    assert model_only.train_state.opt_state is None

    # the trained model alone, from the directory alone
    loaded, loaded_state = load_model(tmp_path)
    _assert_bitwise_equal((loaded, loaded_state), (model, state))
    evaluate = eqx.nn.inference_mode(model)
    expected, _ = _evaluate(evaluate, inputs, state)
    got, _ = _evaluate(eqx.nn.inference_mode(loaded), inputs, loaded_state)
    assert np.asarray(got).tobytes() == np.asarray(expected).tobytes()


@pytest.mark.parametrize("dtype", ["bfloat16", "float64"])
def test_round_trip_other_dtypes(dtype: str, tmp_path: pathlib.Path):
    with jax.enable_x64(dtype == "float64"):
        model, state = _toy(4, dtype=dtype)
        assert model.layers[0].weight.dtype == jnp.dtype(dtype)
        save_checkpoint(tmp_path, _train_state(model, state))
        loaded, loaded_state = load_model(tmp_path)
        _assert_bitwise_equal((loaded, loaded_state), (model, state))
    if dtype == "float64":
        with pytest.raises(CheckpointError, match="jax_enable_x64"):
            load_model(tmp_path)


def test_batchnorm_counters_round_trip_as_int32(tmp_path: pathlib.Path):
    model, state = _random_model("stax_cnn", 0)
    state = _filled(state, 7)
    save_checkpoint(tmp_path, _train_state(model, state, step=3))
    _, loaded = load_model(tmp_path)
    dtypes = {np.asarray(x).dtype for x in jax.tree.leaves(loaded)}
    assert dtypes == {np.dtype("int32"), np.dtype("float32")}
    _assert_bitwise_equal(loaded, state)


def test_keep_bounds_versions_and_a_lower_step_is_refused(tmp_path: pathlib.Path):
    for step in range(1, 6):
        _save_toy(tmp_path, step, step, keep=2)
    assert _versions(tmp_path) == ["step_00000004", "step_00000005"]
    assert _value(load_checkpoint(tmp_path, optimizer=ADAM)) == 5

    _save_toy(tmp_path, 6, 6, keep=1)
    assert _versions(tmp_path) == ["step_00000006"]

    for step in (7, 8):
        _save_toy(tmp_path, step, step, keep=5)
    assert _versions(tmp_path) == ["step_00000006", "step_00000007", "step_00000008"]

    # A lower step than one in the folder is another run's: refused, and
    # nothing of what is there is deleted or changed.
    with pytest.raises(CheckpointError, match="holds step 8, later than this one"):
        _save_toy(tmp_path, 7, 70, keep=5)
    assert _versions(tmp_path) == ["step_00000006", "step_00000007", "step_00000008"]
    assert _value(load_checkpoint(tmp_path, optimizer=ADAM)) == 8
    assert _hidden(tmp_path) == []


def test_saving_the_same_step_again_replaces_it(tmp_path: pathlib.Path):
    _save_toy(tmp_path, 2, 1.0)
    _save_toy(tmp_path, 2, 2.0)
    assert _versions(tmp_path) == ["step_00000002"]
    assert _value(load_checkpoint(tmp_path, optimizer=ADAM)) == 2.0
    assert _hidden(tmp_path) == []


@pytest.mark.parametrize(
    "latest", [None, b"", b"step_0000000", b"step_00000009\n", b"\xff\xfe garbage"]
)
def test_bad_latest_falls_back_to_newest_complete_version(
    latest: bytes | None, tmp_path: pathlib.Path
):
    for step in (1, 2, 3):
        _save_toy(tmp_path, step, step, keep=3)
    # an incomplete newer version (no manifest) is skipped, not loaded
    shutil.copytree(tmp_path / "step_00000003", tmp_path / "step_00000004")
    (tmp_path / "step_00000004" / "manifest.json").unlink()
    if latest is None:
        (tmp_path / "LATEST").unlink()
    else:
        (tmp_path / "LATEST").write_bytes(latest)

    assert latest_checkpoint(tmp_path) == tmp_path / "step_00000003"
    assert _value(load_checkpoint(tmp_path, optimizer=ADAM)) == 3

    # a corrupt newest version is skipped too
    (tmp_path / "step_00000003" / "model.eqx").write_bytes(b"junk")
    assert latest_checkpoint(tmp_path) == tmp_path / "step_00000002"
    assert _value(load_checkpoint(tmp_path, optimizer=ADAM)) == 2


def test_corrupt_version_named_by_latest_is_an_error_not_a_fallback(
    tmp_path: pathlib.Path,
):
    _save_toy(tmp_path, 1, 1)
    version = _save_toy(tmp_path, 2, 2)
    (version / "model.eqx").write_bytes(b"junk")
    with pytest.raises(CheckpointError, match=r"model\.eqx"):
        load_checkpoint(tmp_path)
    # deleting the corrupt version, as the message suggests, falls back
    shutil.rmtree(version)
    assert _value(load_checkpoint(tmp_path, optimizer=ADAM)) == 1


def test_temporary_directories_are_ignored_then_cleaned(tmp_path: pathlib.Path):
    first = _save_toy(tmp_path, 1, 1)
    # a crashed save of step 2 left a complete-looking temporary directory
    temp = tmp_path / f".tmp-step_00000002-{'a' * 32}"
    shutil.copytree(first, temp)
    (tmp_path / f".LATEST-{'b' * 32}.tmp").write_text("step_00000002")
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "logs").mkdir()
    (tmp_path / "LATEST").unlink()

    assert latest_checkpoint(tmp_path) == first
    assert _value(load_checkpoint(tmp_path, optimizer=ADAM)) == 1

    _save_toy(tmp_path, 3, 3)
    assert _hidden(tmp_path) == []
    assert {"notes.txt", "logs"} <= {p.name for p in tmp_path.iterdir()}
    assert _versions(tmp_path) == ["step_00000001", "step_00000003"]


def test_load_a_version_directory_directly(tmp_path: pathlib.Path):
    older = _save_toy(tmp_path, 1, 1)
    _save_toy(tmp_path, 2, 2)
    assert _value(load_checkpoint(older, optimizer=ADAM)) == 1
    assert load_model(older)[0].config() == _toy()[0].config()


class _Crash(BaseException):
    """Stands in for SIGKILL: nothing after it runs, no ``except Exception``."""


def _crash_at(count: int, monkeypatch: pytest.MonkeyPatch) -> Callable[[], int]:
    """Make the ``count``-th filesystem change (0-based) raise :class:`_Crash`."""
    calls = 0

    def wrap(module: Any, name: str) -> None:
        original = getattr(module, name)

        def crashing(*args: Any, **kwargs: Any) -> Any:
            nonlocal calls
            calls += 1
            if calls > count:
                raise _Crash(f"crash before {name}{args}")
            return original(*args, **kwargs)

        monkeypatch.setattr(module, name, crashing)

    for module, name in [
        (os, "mkdir"),
        (os, "replace"),
        (os, "fsync"),
        (os, "unlink"),
        (shutil, "rmtree"),
    ]:
        wrap(module, name)
    return lambda: calls


@pytest.mark.parametrize("new_step", [2, 1], ids=["next-step", "same-step"])
def test_a_crash_at_any_point_of_a_save_leaves_a_checkpoint(
    new_step: int, tmp_path: pathlib.Path
):
    crash_point = made = 0
    windows = 0  # crashes between moving the old step_1 aside and replacing it
    while True:
        directory = tmp_path / str(crash_point)
        _save_toy(directory, 1, 1.0, keep=1)
        with pytest.MonkeyPatch.context() as monkeypatch:
            calls = _crash_at(crash_point, monkeypatch)
            try:
                _save_toy(directory, new_step, 2.0, keep=1)
                finished = True
            except _Crash:
                finished = False
            made = calls()
        aside = [name for name in _hidden(directory) if name.startswith(".replaced")]
        if aside and not (directory / "step_00000001").exists():
            windows += 1
        value = _value(load_checkpoint(directory, optimizer=ADAM))
        assert value in ((2.0,) if finished else (1.0, 2.0))
        # the next save cleans up whatever the crash left behind
        _save_toy(directory, 3, 3.0, keep=1)
        assert _hidden(directory) == []
        assert _versions(directory) == ["step_00000003"]
        if finished:
            break
        crash_point += 1
    assert crash_point == made > 10
    assert windows == (1 if new_step == 1 else 0)


def test_sigkill_during_saves_always_leaves_a_complete_checkpoint(
    tmp_path: pathlib.Path,
):
    directory = tmp_path / "run"
    train_state, kwargs = writer.save_arguments(0)
    save_checkpoint(directory, train_state, **kwargs)
    rng = random.Random(0)
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    last = 0
    for _ in range(10):
        with (
            open(tmp_path / "stderr.txt", "w+") as stderr,
            subprocess.Popen(
                [sys.executable, str(WRITER), str(directory)],
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
                env=env,
            ) as process,
        ):
            assert process.stdout is not None
            ready, _, _ = select.select([process.stdout], [], [], 60)
            line = process.stdout.readline() if ready else ""
            if not line.startswith("saving"):
                process.kill()
                stderr.seek(0)
                pytest.fail(f"writer did not start: {line!r}\n{stderr.read()}")
            time.sleep(rng.uniform(0.0, 0.3))
            process.send_signal(signal.SIGKILL)
        assert process.returncode == -signal.SIGKILL
        counter = writer.check(load_checkpoint(directory, optimizer=writer.optimizer()))
        assert counter >= last
        last = counter
    assert last > 0
    assert len(_versions(directory)) <= writer.KEEP + 1


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """One valid checkpoint (a single version) and the values saved in it."""
    directory = tmp_path_factory.mktemp("pristine")
    model, state = _toy(5)
    opt_state = _filled(_adam_state(model), 0.25)
    train_state = _train_state(
        model, state, opt_state, step=jnp.int32(12), key=jax.random.key(6)
    )
    saved = {"data_state": {"next_index": 3}, "metadata": {"history": [1.5, 0.5]}}
    version = save_checkpoint(directory, train_state, **saved)
    yield {
        "directory": directory,
        "version": version.name,
        "train_state": train_state,
        **saved,
    }


def _assert_is_saved(checkpoint: Checkpoint, saved: dict[str, Any]) -> None:
    loaded, expected = checkpoint.train_state, saved["train_state"]
    _assert_bitwise_equal(
        (loaded.model, loaded.model_state, loaded.opt_state),
        (expected.model, expected.model_state, expected.opt_state),
    )
    _assert_same_key(loaded.key, expected.key)
    assert int(loaded.step) == int(expected.step)
    assert checkpoint.data_state == saved["data_state"]
    assert checkpoint.metadata == saved["metadata"]


VERSION_FILES = [
    "manifest.json",
    "trainer.json",
    "config.json",
    "model.eqx",
    "opt_state.eqx",
]


@pytest.mark.parametrize("file", VERSION_FILES)
@pytest.mark.parametrize("damage", ["truncate", "flip", "delete"])
def test_damaged_file_is_an_error_naming_it(
    file: str, damage: str, pristine: dict[str, Any], tmp_path: pathlib.Path
):
    directory = tmp_path / "run"
    shutil.copytree(pristine["directory"], directory)
    path = directory / pristine["version"] / file
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "flip":
        position = 0 if file == "manifest.json" else len(data) // 2
        path.write_bytes(
            data[:position] + bytes([data[position] ^ 0xFF]) + data[position + 1 :]
        )
    else:
        path.unlink()
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(directory, optimizer=ADAM)
    message = str(error.value)
    assert str(path) in message
    assert "delete" in message.lower()


@st.composite
def _damage(draw: st.DrawFn, data: bytes) -> bytes | None:
    """Random bytes, a truncation, an overwritten span or deletion (``None``)."""
    kind = draw(st.sampled_from(["random", "truncate", "overwrite", "delete"]))
    if kind == "random":
        return draw(st.binary(max_size=2 * len(data) + 8))
    if kind == "truncate":
        return data[: draw(st.integers(0, len(data)))]
    if kind == "overwrite":
        start = draw(st.integers(0, len(data)))
        patch = draw(st.binary(min_size=1, max_size=16))
        return data[:start] + patch + data[start + len(patch) :]
    return None


@pytest.mark.parametrize("file", [*VERSION_FILES, "LATEST"])
@given(data=st.data())
def test_fuzzed_files_load_exactly_or_raise_checkpoint_error(
    file: str, pristine: dict[str, Any], data: st.DataObject
):
    with tempfile.TemporaryDirectory() as scratch:
        directory = pathlib.Path(scratch) / "run"
        shutil.copytree(pristine["directory"], directory)
        version = directory if file == "LATEST" else directory / pristine["version"]
        path = version / file
        damaged = data.draw(_damage(path.read_bytes()), label="damaged")
        if damaged is None:
            path.unlink()
        else:
            path.write_bytes(damaged)
        try:
            checkpoint = load_checkpoint(directory, optimizer=ADAM)
        except CheckpointError:
            return
        _assert_is_saved(checkpoint, pristine)
        model, state = _toy(1)
        like = _train_state(model, state, _adam_state(model))
        _assert_is_saved(load_checkpoint(directory, like=like), pristine)


def test_mismatched_config_names_the_leaf_and_both_shapes(tmp_path: pathlib.Path):
    model, state = _random_model("mlp", 0)
    save_checkpoint(tmp_path, _train_state(model, state))
    smaller = _train_state(*_random_model("mlp", 0, width_size=[256, 256]))
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(tmp_path, like=smaller)
    message = str(error.value)
    assert ".layers[0].weight" in message
    assert "(512, 784)" in message
    assert "(256, 784)" in message
    assert '"width_size": [512, 512]' in message  # the config it was written for


def test_mismatched_config_with_the_same_shapes_is_an_error(tmp_path: pathlib.Path):
    model, state = _toy()
    save_checkpoint(tmp_path, _train_state(model, state))
    with pytest.raises(CheckpointError, match="activation"):
        load_checkpoint(tmp_path, like=_train_state(*_toy(activation="gelu")))
    with pytest.raises(CheckpointError, match=r"\.layers\[0\]\.weight"):
        load_checkpoint(tmp_path, like=_train_state(*_random_model("stax_cnn", 0)))


def test_a_different_optimizer_is_an_error_naming_the_leaf(tmp_path: pathlib.Path):
    _save_toy(tmp_path, 1, 1.0)
    with pytest.raises(CheckpointError, match=r"\[0\]\.count.*different optimiser"):
        load_checkpoint(tmp_path, optimizer=optax.sgd(0.1))
    with pytest.raises(CheckpointError, match="optimiser state leaf"):
        load_checkpoint(tmp_path, optimizer=optax.sgd(0.1, momentum=0.9))
    model, state = _toy()
    momentum = optax.sgd(0.1, momentum=0.9)
    like = TrainState.init(model, state, momentum, key=jax.random.key(0))
    with pytest.raises(CheckpointError, match="different optimiser"):
        load_checkpoint(tmp_path, like=like)
    assert load_checkpoint(tmp_path).train_state.opt_state is None


def test_an_optimizer_for_a_checkpoint_without_opt_state_is_an_error(
    tmp_path: pathlib.Path,
):
    model, state = _toy()
    save_checkpoint(
        tmp_path, TrainState.init(model, state, None, key=jax.random.key(0))
    )
    with pytest.raises(CheckpointError, match="no optimiser state"):
        load_checkpoint(tmp_path, optimizer=ADAM)
    # a fresh run's state as `like`: the model loads, the optimiser starts afresh
    like = TrainState.init(model, state, ADAM, key=jax.random.key(1))
    assert load_checkpoint(tmp_path, like=like).train_state.opt_state is None
    with pytest.raises(TypeError, match="not both"):
        load_checkpoint(tmp_path, like=like, optimizer=ADAM)


def test_no_checkpoint_is_an_error_naming_the_path(tmp_path: pathlib.Path):
    missing = tmp_path / "missing"
    assert latest_checkpoint(missing) is None
    with pytest.raises(CheckpointError, match="does not exist") as error:
        load_checkpoint(missing)
    assert str(missing) in str(error.value)

    empty = tmp_path / "empty"
    (empty / f".tmp-step_00000001-{'c' * 32}").mkdir(parents=True)
    assert latest_checkpoint(empty) is None
    with pytest.raises(CheckpointError, match="No complete checkpoint") as error:
        load_model(empty)
    assert str(empty) in str(error.value)
    assert "Did you mean" not in str(error.value)


def test_a_run_folder_points_at_its_checkpoint_subfolder(tmp_path: pathlib.Path):
    """``load_model("runs/cnn")``, the example's --out folder: say where they are."""
    model, state = zoo.create_model("toy_mlp", key=jax.random.key(0))
    ts = TrainState.init(model, state, optax.sgd(0.1), key=jax.random.key(1))
    run = tmp_path / "runs" / "cnn"
    zoo.save_checkpoint(run / "checkpoint", ts)
    (run / "metrics.json").write_text("{}")
    with pytest.raises(CheckpointError, match="No complete checkpoint") as error:
        load_model(run)
    assert f"Did you mean {run / 'checkpoint'}?" in str(error.value)
    loaded, _ = load_model(run / "checkpoint")
    assert isinstance(loaded, zoo.MLP)


def test_ensure_writable_creates_the_directory(tmp_path: pathlib.Path):
    directory = tmp_path / "a" / "b"
    assert ensure_writable(directory) == directory
    assert directory.is_dir()
    assert list(directory.iterdir()) == []


def test_ensure_writable_reports_a_read_only_directory(tmp_path: pathlib.Path):
    if os.geteuid() == 0:
        pytest.skip("root writes to read-only directories anyway")
    directory = tmp_path / "read-only"
    directory.mkdir()
    directory.chmod(0o500)
    try:
        with pytest.raises(CheckpointError, match=r"(?i)permission denied") as error:
            ensure_writable(directory)
        assert str(directory) in str(error.value)
        with pytest.raises(CheckpointError, match=r"(?i)permission denied"):
            _save_toy(directory, 1, 1.0)
    finally:
        directory.chmod(0o700)


def test_ensure_writable_reports_a_file_in_the_way(tmp_path: pathlib.Path):
    blocker = tmp_path / "run"
    blocker.write_text("not a directory")
    for directory in (blocker, blocker / "nested"):
        with pytest.raises(CheckpointError, match="a file is in the way") as error:
            ensure_writable(directory)
        assert str(blocker) in str(error.value)
    with pytest.raises(CheckpointError, match="a file is in the way"):
        _save_toy(blocker, 1, 1.0)
    with pytest.raises(CheckpointError, match="is a file"):
        load_checkpoint(blocker)


def test_save_rejects_bad_arguments(tmp_path: pathlib.Path):
    model, state = _toy()
    good = _train_state(model, state)
    raw_key = jax.random.key_data(good.key)
    with pytest.raises(TypeError, match="wrap_key_data"):
        save_checkpoint(tmp_path, eqx.tree_at(lambda t: t.key, good, raw_key))
    with pytest.raises(TypeError, match="metadata"):
        save_checkpoint(tmp_path, good, metadata={"f": object()})
    with pytest.raises(ValueError, match="keep"):
        save_checkpoint(tmp_path, good, keep=0)
    for step in (-1, jnp.int32(-1)):
        with pytest.raises(ValueError, match="step"):
            save_checkpoint(tmp_path, _train_state(model, state, step=step))
    with pytest.raises(TypeError, match="step"):
        save_checkpoint(tmp_path, _train_state(model, state, step=jnp.float32(1)))
    not_a_module = {"weight": jnp.ones(2)}  # any eqx.Module saves; a dict does not
    with pytest.raises(TypeError, match="Equinox module"):
        save_checkpoint(tmp_path, eqx.tree_at(lambda t: t.model, good, not_a_module))
    with pytest.raises(TypeError, match="TrainState"):
        save_checkpoint(tmp_path, (model, state))  # pyright: ignore[reportArgumentType]
    assert list(tmp_path.iterdir()) == []


def test_numpy_scalars_in_metadata_are_saved_as_json(tmp_path: pathlib.Path):
    model, state = _toy()
    save_checkpoint(
        tmp_path,
        _train_state(model, state, step=np.int64(4)),
        metadata={"loss": np.float32(0.5), "epoch": jnp.asarray(2)},
    )
    checkpoint = load_checkpoint(tmp_path)
    assert int(checkpoint.train_state.step) == 4
    assert checkpoint.metadata == {"loss": 0.5, "epoch": 2}


def test_the_saved_zoo_version_is_the_installed_one(tmp_path: pathlib.Path):
    version = save_checkpoint(tmp_path, _train_state(*_toy()))
    trainer = json.loads((version / "trainer.json").read_text())
    assert trainer["zoo_version"] == zoo.__version__
    try:
        installed = importlib.metadata.version("typed-zoo")
    except importlib.metadata.PackageNotFoundError:  # nox -t gpu --no-venv
        pytest.skip("zoo is imported from a source tree that was never installed")
    assert zoo.__version__ == installed


@pytest.mark.parametrize("module", [_checkpoint, _checkpoint_dir, _checkpoint_files])
def test_checkpoint_modules_do_not_import_the_zoo_package(module: types.ModuleType):
    """They sit below ``zoo/__init__``, which imports them: no import runs back up."""
    package = module.__name__.split(".")
    for node in ast.walk(ast.parse(inspect.getsource(module))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: -node.level] if node.level else []
            names = [".".join([*base, *([node.module] if node.module else [])])]
        else:
            continue
        assert "zoo" not in names, f"{module.__name__} imports zoo: {ast.unparse(node)}"


class _FullDisk:
    """A real file whose writes fail as on a full disk (``ENOSPC``)."""

    def __init__(self, file: Any) -> None:
        self.file = file

    def write(self, data: bytes) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.file, name)

    def __enter__(self) -> "_FullDisk":
        return self

    def __exit__(self, *exc: object) -> None:
        self.file.close()


@pytest.mark.parametrize("full", [_checkpoint_files.MODEL, _checkpoint_files.TRAINER])
def test_a_full_disk_is_a_checkpoint_error_and_keeps_the_previous_version(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, full: str
):
    # model.eqx is written by equinox, which wraps the OSError in an error of
    # its own (naming the leaf); trainer.json is written by zoo directly.
    _save_toy(tmp_path, 1, 1.0)
    real = _checkpoint_dir.create_file

    def create_file(path: pathlib.Path) -> Any:
        file = real(path)
        return _FullDisk(file) if path.name == full else file

    monkeypatch.setattr(_checkpoint_dir, "create_file", create_file)
    with pytest.raises(CheckpointError) as error:
        _save_toy(tmp_path, 2, 2.0)
    message = str(error.value)
    assert "No space left on device" in message
    assert str(tmp_path) in message
    assert f"step_00000002/{full}" in message
    assert "previous checkpoint is intact" in message
    assert isinstance(_checkpoint_dir.os_error_in(error.value), OSError)
    monkeypatch.undo()
    assert _versions(tmp_path) == ["step_00000001"]
    assert _hidden(tmp_path) == []  # nothing of the failed save is left
    assert _value(load_checkpoint(tmp_path, optimizer=ADAM)) == 1.0
