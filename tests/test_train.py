"""Training steps, evaluation, fit, checkpoint resume and numerical faults."""

import json
import math
import os
import signal
import subprocess
import sys
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import zoo
from zoo.data import ArrayDataset, Chunk
from zoo.train import (
    Metrics,
    NonFiniteLossError,
    TrainState,
    _tuning as tuning,
    evaluate,
    fit,
    latest_checkpoint,
    load_checkpoint,
    make_train_step,
)
from zoo.train._metrics import cross_entropy
from zoo.train._step import prepare_inputs
from zoo.train._tuning import default_steps_per_call, fit_to_epoch, step_cost

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (preset, overrides): stateless, BatchNorm, and dropout models.
SMALL_MODELS = {
    "mlp": ("mlp", {"width_size": [64]}),
    "batchnorm_cnn": ("stax_cnn", {}),
    "dropout_mlp": ("mlp", {"width_size": [64], "dropout": 0.3}),
}


def build(kind: str, seed: int = 0):
    name, overrides = SMALL_MODELS[kind]
    return zoo.create_model(name, key=jax.random.key(seed), **overrides)


def params_of(model) -> list[np.ndarray]:
    return [np.asarray(p) for p in jax.tree.leaves(eqx.filter(model, eqx.is_array))]


def test_default_steps_per_call_fuses_more_steps_in_a_rolled_loop():
    # Unrolled (convolutions on CPU): about 4 GFLOP per call, 2 to 16 steps.
    assert default_steps_per_call(6e9) == 2  # the cnn preset: still fused
    assert default_steps_per_call(1e9) == 4
    assert default_steps_per_call(1e3) == 16
    # Rolled loop: about 64 GFLOP per call, 2 to 4096 steps.
    assert default_steps_per_call(40e9, unrolled=False) == 2
    assert default_steps_per_call(6e9, unrolled=False) == 10
    assert default_steps_per_call(1e9, unrolled=False) == 64
    assert default_steps_per_call(1e3, unrolled=False) == 4096
    # A chunk of inputs stays within 256 MiB, even below 2 steps.
    mib = 2**20
    assert default_steps_per_call(1e3, unrolled=False, batch_bytes=8 * mib) == 32
    assert default_steps_per_call(6e9, batch_bytes=200 * mib) == 1


def test_unrolled_steps_per_call_are_bounded_by_their_convolutions():
    # Compile time grows with every unrolled convolution: 48 per call at most.
    assert default_steps_per_call(2.7e8) == 14  # stax_cnn at batch 32, uncounted
    assert default_steps_per_call(2.7e8, convolutions=11) == 4
    assert default_steps_per_call(2.9e8, convolutions=5) == 9  # lenet5
    assert default_steps_per_call(1e3, convolutions=100) == 2  # never below 2
    # A rolled loop compiles once whatever its length: no bound.
    assert default_steps_per_call(1e9, unrolled=False, convolutions=11) == 64


@pytest.mark.skipif(
    jax.default_backend() != "cpu",
    reason="the presets' steps per call are tuned from XLA:CPU's cost analysis",
)
def test_presets_get_the_steps_per_call_tuned_for_the_cpu():
    presets = {
        "mlp": (117, False),  # 4 calls an epoch
        "stax_cnn": (3, True),  # XLA counts the zero taps of its phase kernels
        "cnn": (2, True),
        "lenet5": (9, True),  # 13 by FLOPs, 9 by its 5 convolutions a step
    }
    for name, (expected, unrolled) in presets.items():
        model, state = zoo.create_model(name, key=jax.random.key(0))
        example = np.zeros((1, 28, 28), np.uint8)
        cost = step_cost(model, state, example, 128)
        assert cost.unrolled is unrolled, name
        assert (cost.convolutions > 0) is unrolled, name
        assert cost.flops > 0, name
        k = tuning.steps_per_call(
            model, state, example, batch_size=128, steps_per_epoch=468
        )
        assert k == expected, name


def test_a_short_run_fuses_fewer_steps():
    # A small job (16 steps) pays a fused program's compile time and never
    # earns it back: one step per call. A recipe's run (10 epochs) keeps the
    # choice made for its epoch.
    model, state = zoo.create_model("lenet5", key=jax.random.key(0))
    example = np.zeros((1, 28, 28), np.uint8)

    def k(total):
        return tuning.steps_per_call(
            model, state, example, batch_size=128, steps_per_epoch=16,
            total_steps=total,
        )  # fmt: skip

    assert k(16) == 1
    assert k(63) == 1
    assert k(4 * 32) == 4
    assert k(10 * 468) == k(None) == 8
    # Steps in a rolled loop (the MLP) compile in the same time for any K: the
    # run's length never cuts them; a short run takes as many as its epoch
    # allows, with no need of the step's cost.
    mlp, mlp_state = zoo.create_model("mlp", key=jax.random.key(0))

    def rolled(total):
        return tuning.steps_per_call(
            mlp, mlp_state, example, batch_size=128, steps_per_epoch=468,
            total_steps=total,
        )  # fmt: skip

    assert rolled(16) == rolled(63) == 468  # the whole epoch a call
    assert rolled(64) == rolled(10 * 468) == rolled(None) == 117


def test_steps_per_call_never_collapse_on_awkward_epoch_lengths():
    assert fit_to_epoch(468, 40) == 39  # a divisor close below: one chunk shape
    assert fit_to_epoch(472, 64) == 59  # 472 = 8 * 59
    assert fit_to_epoch(467, 64) == 64  # a prime: 7 chunks of 64, then one of 19
    assert fit_to_epoch(10, 64) == 10
    for spe in range(1, 600):
        for wanted in (2, 9, 16, 36, 64):
            k = fit_to_epoch(spe, wanted)
            assert min(wanted, spe) / 2 <= k <= min(wanted, spe)


@pytest.mark.parametrize("steps", [1, 3])
@pytest.mark.parametrize("name", ["mlp", "stax_cnn"])
def test_fused_steps_run_rolled_unless_convolutions_on_cpu(name, steps):
    model, state = zoo.create_model(name, key=jax.random.key(0))
    optimizer = optax.adam(1e-3)
    ts = TrainState.init(model, state, optimizer, key=jax.random.key(0))
    chunk = Chunk(
        jnp.zeros((steps, 8, 1, 28, 28), jnp.uint8),
        jnp.zeros((steps, 8), jnp.int32),
        jnp.ones((steps, 8), jnp.bool_),
    )
    args = (ts, chunk)

    def has_loop(step) -> bool:
        return "stablehlo.while" in step.lower(*args).as_text()

    # Only XLA:CPU runs convolutions slower inside a loop (see unrolls_steps).
    unrolled = name != "mlp" and jax.default_backend() == "cpu"
    assert has_loop(make_train_step(optimizer)) is (steps > 1 and not unrolled)
    assert has_loop(make_train_step(optimizer, unroll=False)) is (steps > 1)
    assert not has_loop(make_train_step(optimizer, unroll=True))


@pytest.mark.parametrize("kind", ["mlp", "batchnorm_cnn", "dropout_mlp"])
def test_rolled_and_unrolled_steps_train_alike(kind, small_train):
    model, state = build(kind)
    optimizer = optax.adam(1e-3)
    ts = TrainState.init(model, state, optimizer, key=jax.random.key(1))
    ts = eqx.tree_at(lambda t: t.step, ts, jnp.int32(5))
    chunk = Chunk(
        jnp.asarray(small_train.inputs[:512].reshape(4, 128, 1, 28, 28)),
        jnp.asarray(small_train.labels[:512].reshape(4, 128)),
        jnp.ones((4, 128), jnp.bool_),
    )
    results = [
        make_train_step(optimizer, unroll=unroll)(ts, chunk) for unroll in (False, True)
    ]
    rolled, unrolled = (jax.tree.leaves(eqx.filter(r, eqx.is_array)) for r in results)
    assert len(rolled) == len(unrolled)
    for a, b in zip(rolled, unrolled, strict=True):
        if jnp.issubdtype(a.dtype, jax.dtypes.prng_key):
            continue
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-3, atol=5e-5)
    assert int(results[0][1].examples) == 512
    assert int(results[0][0].step) == 9


def test_cross_entropy_ignores_padding_and_sums_exactly():
    logits = jnp.array([[2.0, 0.0], [0.0, 3.0], [5.0, -5.0]])
    labels = jnp.array([0, 0, 1])
    mask = jnp.array([True, True, False])
    loss, metrics = cross_entropy(logits, labels, mask)
    expected = np.log1p(np.exp(-2.0)) + np.log1p(np.exp(3.0))
    np.testing.assert_allclose(float(metrics.loss_sum), expected, rtol=1e-6)
    np.testing.assert_allclose(float(loss), expected / 2, rtol=1e-6)
    assert int(metrics.correct) == 1
    assert int(metrics.examples) == 2
    total = metrics + metrics
    assert total.summary() == pytest.approx(
        {"loss": expected / 2, "accuracy": 0.5, "count": 4}
    )


def test_prepare_inputs_scales_uint8_flattens_and_refuses_integers(getkey):
    model, _ = zoo.create_model("mlp", key=getkey())
    images = jnp.full((2, 1, 28, 28), 255, dtype=jnp.uint8)
    out = prepare_inputs(model, images)
    assert out.shape == (2, 784)
    assert out.dtype == jnp.float32
    assert float(out.max()) == pytest.approx(1.0, abs=1e-7)  # x / 255, rounded
    with pytest.raises(TypeError, match="int32"):
        prepare_inputs(model, images.astype(jnp.int32))  # pyright: ignore[reportArgumentType]
    with pytest.raises(ValueError, match=r"but MLP takes \(784,\)"):
        prepare_inputs(model, jnp.zeros((2, 1, 27, 27)))


@pytest.mark.parametrize("kind", sorted(SMALL_MODELS))
def test_fit_learns_for_every_kind_of_model(kind, small_train, small_test):
    model, state = build(kind)
    before = evaluate(model, state, small_test)
    result = fit(
        model,
        state,
        small_train,
        optimizer=optax.adam(1e-3),
        epochs=2,
        batch_size=64,
        test_data=small_test,
        callbacks=zoo.train.default_callbacks(progress=False, log=None),
    )
    assert len(result.history) == 2
    assert result.step == 2 * (1024 // 64)
    last = result.history[-1]
    assert last.test_accuracy is not None
    assert last.test_accuracy > before["accuracy"] + 0.3
    assert last.train_loss < result.history[0].train_loss
    if model.stateful:  # BatchNorm running statistics moved
        assert not bool(eqx.tree_equal(state, result.state))


def test_dropout_uses_a_fresh_key_per_step_and_one_seed_reproduces(small_train):
    model, state = build("dropout_mlp")
    runs = [
        fit(
            model,
            state,
            small_train,
            optimizer=optax.sgd(0.1),
            epochs=1,
            batch_size=128,
            seed=seed,
            callbacks=zoo.train.default_callbacks(progress=False, log=None),
        )
        for seed in (0, 0, 1)
    ]
    same = [
        np.array_equal(a, b) for a, b in zip(*map(params_of, runs[:2]), strict=True)
    ]
    assert all(same)
    assert not all(
        np.array_equal(a, b)
        for a, b in zip(params_of(runs[0].model), params_of(runs[2].model), strict=True)
    )
    # Different keys per step: the masks of two steps differ.
    frozen_key = jax.random.key(0)
    x = jnp.ones(784)
    a = model(x, key=jax.random.fold_in(frozen_key, 0))  # pyright: ignore[reportCallIssue]
    b = model(x, key=jax.random.fold_in(frozen_key, 1))  # pyright: ignore[reportCallIssue]
    assert not jnp.allclose(a, b)


@pytest.mark.parametrize("kind", ["mlp", "batchnorm_cnn"])
def test_step_is_traced_once_across_epochs(kind, small_train):
    model, state = build(kind)
    optimizer = optax.sgd(0.05)
    step = make_train_step(optimizer, max_traces=1)
    fit(model, state, small_train, step, epochs=3, batch_size=128, callbacks=[])
    assert eqx.debug.get_num_traces(step) == 1  # pyright: ignore[reportArgumentType]


@pytest.mark.parametrize("kind", ["mlp", "batchnorm_cnn"])
def test_the_model_is_traced_once_for_cost_and_every_chunk_length(kind, mnist_train):
    # 11 steps an epoch: chunks of two lengths (two compiled programs), and
    # the cost that picks their length. The loss runs once per trace of the
    # model's gradient, so it counts them.
    traces: list[int] = []

    def counting_loss(logits, labels):
        traces.append(1)
        return zoo.train.softmax_cross_entropy(logits, labels)

    model, state = build(kind)
    step = make_train_step(optax.sgd(0.05), loss=counting_loss)
    result = fit(
        model, state, mnist_train.take(11 * 32), step, epochs=1, batch_size=32,
        steps_per_call=4, callbacks=[],
    )  # fmt: skip
    assert result.steps_per_call == 4  # chunks of 4, 4 and 3 steps
    assert len(traces) == 1
    # The default steps per call asks for the cost first: the same one trace,
    # for new shapes; and none at all for shapes traced before.
    del traces[:]
    for _ in range(2):
        fit(
            model, state, mnist_train.take(11 * 16), step, epochs=1, batch_size=16,
            callbacks=[],
        )  # fmt: skip
    assert len(traces) == 1


def test_evaluate_is_exact_over_every_example(small_test):
    model, state = build("batchnorm_cnn")
    model_inf = eqx.nn.inference_mode(model)
    images = jnp.asarray(small_test.inputs, jnp.float32) / 255.0
    logits, _ = zoo.apply(model_inf, images, state)
    labels = jnp.asarray(small_test.labels)
    expected_acc = int(jnp.sum(jnp.argmax(logits, -1) == labels)) / 1000
    logp = jax.nn.log_softmax(logits)
    expected_loss = float(-jnp.mean(jnp.take_along_axis(logp, labels[:, None], 1)))
    for batch_size in (128, 333, 1000):  # 1000 = 7*128 + 104: a padded batch
        got = evaluate(model, state, small_test, batch_size=batch_size)
        assert got["count"] == 1000
        assert got["accuracy"] == pytest.approx(expected_acc, abs=1e-12)
        assert got["loss"] == pytest.approx(expected_loss, rel=1e-5)


def test_fit_reports_compile_time_apart_and_writes_history(small_train, tmp_path):
    lines: list[str] = []
    model, state = build("mlp")
    result = fit(
        model,
        state,
        small_train,
        optimizer=optax.sgd(0.05),
        epochs=2,
        batch_size=128,
        test_data=small_train,
        callbacks=[
            *zoo.train.default_callbacks(log=lines.append),
            zoo.train.HistoryWriter(tmp_path / "metrics.json", {"model": "mlp"}),
        ],
    )
    assert result.compile_seconds > 0
    assert len(lines) == 3
    assert (
        lines[0] == "data from the host (0.8 MB): on a CPU, gathering overlaps the step"
    )
    assert lines[1].startswith("epoch 1/2 in ")
    assert "train acc" in lines[1] and "test acc" in lines[1] and "ex/s" in lines[1]
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["compile_seconds"] == pytest.approx(result.compile_seconds)
    assert saved["config"] == {"model": "mlp"}
    # The file counts epochs from 1, as the log lines do; Python from 0.
    assert [e["epoch"] for e in saved["epochs"]] == [1, 2]
    assert [r.epoch for r in result.history] == [0, 1]
    keys = {
        "epoch",
        "train_seconds",
        "train_loss",
        "train_accuracy",
        "test_loss",
        "test_accuracy",
        "examples_per_second",
    }
    assert set(saved["epochs"][0]) == keys


@pytest.mark.parametrize("kind", ["mlp", "batchnorm_cnn", "dropout_mlp"])
def test_resume_from_checkpoint_is_bitwise_identical(kind, small_train, tmp_path):
    model, state = build(kind)
    common = dict(
        optimizer=optax.adam(1e-3),
        batch_size=128,
        seed=5,
        steps_per_call=2,
        callbacks=zoo.train.default_callbacks(progress=False, log=None),
    )
    full = fit(model, state, small_train, epochs=2, **common)  # pyright: ignore[reportArgumentType]
    ckpt = tmp_path / "ckpt"
    first = fit(
        model,
        state,
        small_train,
        epochs=1,
        checkpoint_dir=zoo.train.Checkpointer(ckpt, every=2),
        **common,  # pyright: ignore[reportArgumentType]
    )
    assert first.step == 8
    resumed = fit(
        model,
        state,
        small_train,
        epochs=2,
        checkpoint_dir=ckpt,
        resume=True,
        **common,  # pyright: ignore[reportArgumentType]
    )
    assert resumed.step == 16
    for a, b in zip(params_of(full.model), params_of(resumed.model), strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(params_of(full.state), params_of(resumed.state), strict=True):
        np.testing.assert_array_equal(a, b)
    assert [h.train_loss for h in full.history] == pytest.approx(
        [h.train_loss for h in resumed.history], rel=1e-6
    )
    reloaded, _ = zoo.load_model(ckpt)
    for a, b in zip(params_of(resumed.model), params_of(reloaded), strict=True):
        np.testing.assert_array_equal(a, b)


def test_resume_refuses_a_run_of_other_batches_and_changes_nothing(
    small_train, tmp_path
):
    # The saved step means other batches under another batch size, training
    # set or seed: resuming would train on batches the run never had.
    model, state = build("mlp")
    ckpt = tmp_path / "ckpt"
    common = dict(
        optimizer=optax.sgd(0.01),
        callbacks=[],
        checkpoint_dir=ckpt,
    )
    fit(model, state, small_train, epochs=2, batch_size=128, seed=5, **common)  # pyright: ignore[reportArgumentType]
    before = {p.name: p.read_bytes() for p in ckpt.rglob("*") if p.is_file()}
    relabelled = ArrayDataset(
        small_train.inputs, np.roll(small_train.labels, 1), small_train.class_names
    )
    refused = {
        "differ in batch_size,": (small_train, 64, 5, 3),
        "differ in seed,": (small_train, 128, 6, 3),
        "differ in train_examples and the training labels,": (
            small_train.take(896),
            128,
            5,
            3,
        ),
        "differ in the training labels,": (relabelled, 128, 5, 3),
        "past the 1 epoch": (small_train, 128, 5, 1),
    }
    for message, (data, batch_size, seed, epochs) in refused.items():
        with pytest.raises(zoo.CheckpointError, match=message) as error:
            fit(
                model, state, data, epochs=epochs, batch_size=batch_size,
                seed=seed, resume=True, **common,  # pyright: ignore[reportArgumentType]
            )  # fmt: skip
        assert "batch_size 128 over 1024 training examples with seed 5" in str(
            error.value
        ) or "ask for epochs=2 or more" in str(error.value)
    after = {p.name: p.read_bytes() for p in ckpt.rglob("*") if p.is_file()}
    assert after == before
    # The same order resumes (here: a finished run, returned as it is).
    done = fit(
        model, state, small_train, epochs=2, batch_size=128, seed=5, resume=True,
        **common,  # pyright: ignore[reportArgumentType]
    )  # fmt: skip
    assert done.step == 16


def _run(args: list[str]) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=REPO)
    return subprocess.Popen(
        [sys.executable, os.path.join(REPO, "tests", "_fit_runner.py"), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


@pytest.mark.parametrize("augment", [[], ["--device-shift"]], ids=["plain", "shift"])
def test_sigkill_then_resume_gives_bitwise_identical_parameters(tmp_path, augment):
    # Plain, or shifted on the device: the resumed run draws what the
    # uninterrupted run draws.
    reference = _run([str(tmp_path / "ref_ckpt"), str(tmp_path / "ref.eqx"), *augment])
    ckpt = tmp_path / "ckpt"
    victim = _run([str(ckpt), str(tmp_path / "victim.eqx"), *augment])
    deadline = time.monotonic() + 120
    # Wait until training is under way (a checkpoint exists), then kill it hard.
    while latest_checkpoint(ckpt) is None and time.monotonic() < deadline:
        if victim.poll() is not None:
            break
        time.sleep(0.005)
    victim.send_signal(signal.SIGKILL)
    victim.communicate()
    assert victim.returncode == -signal.SIGKILL, "the run ended before the kill"
    assert not (tmp_path / "victim.eqx").exists()
    killed_at = int(load_checkpoint(ckpt).train_state.step)
    assert 0 < killed_at < 128
    resumed = _run([str(ckpt), str(tmp_path / "victim.eqx"), "--resume", *augment])
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err.decode()
    _, err = reference.communicate(timeout=300)
    assert reference.returncode == 0, err.decode()
    assert (tmp_path / "ref.eqx").read_bytes() == (tmp_path / "victim.eqx").read_bytes()


def test_non_finite_loss_stops_with_step_and_epoch_and_keeps_checkpoint(
    small_train, tmp_path
):
    inputs = small_train.inputs.astype(np.float32) / 255.0
    inputs[700:] = 3e38  # finite, but the forward pass of those batches overflows
    poisoned = ArrayDataset(inputs, small_train.labels, small_train.class_names, "x")
    model, state = build("mlp")
    ckpt = tmp_path / "ckpt"
    fit(
        model,
        state,
        small_train,
        optimizer=optax.sgd(0.01),
        epochs=1,
        batch_size=128,
        checkpoint_dir=ckpt,
        callbacks=zoo.train.default_callbacks(progress=False, log=None),
    )
    before = latest_checkpoint(ckpt)
    with pytest.raises(NonFiniteLossError, match=r"epoch 2 within steps \d+-\d+"):
        fit(
            model,
            state,
            poisoned,
            optimizer=optax.sgd(0.01),
            epochs=2,
            batch_size=128,
            checkpoint_dir=ckpt,
            resume=True,
            callbacks=zoo.train.default_callbacks(progress=False, log=None),
        )
    assert latest_checkpoint(ckpt) == before
    restored = load_checkpoint(ckpt).train_state
    assert int(restored.step) == 8
    assert all(np.all(np.isfinite(p)) for p in params_of(restored.model))


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"epochs": 0}, ValueError, "epochs must be >= 1"),
        ({"batch_size": 0}, ValueError, "batch_size must be >= 1"),
        ({"batch_size": 5000}, ValueError, "exceeds the 1024"),
        ({"steps_per_call": 0}, ValueError, "steps_per_call"),
        ({"resume": True}, ValueError, "needs a checkpoint_dir"),
        ({"batch_size": True}, ValueError, "batch_size must be an int"),
        ({"epochs": None}, ValueError, "epochs must be an int"),
        ({"epochs": 2.0}, ValueError, "epochs must be an int"),
        (
            {"callbacks": zoo.train.ProgressBar()},
            TypeError,
            r"callbacks takes a list of callbacks: callbacks=\[ProgressBar\(\.\.\.\)\]",
        ),
    ],
)
def test_fit_refuses_bad_arguments_up_front(kwargs, error, message, small_train):
    model, state = build("mlp")
    args = dict(optimizer=optax.sgd(0.1), epochs=1, callbacks=[])
    with pytest.raises(error, match=message):
        fit(model, state, small_train, **{**args, **kwargs})  # pyright: ignore[reportArgumentType]


@pytest.mark.parametrize(
    "augment, error, message",
    [
        (
            zoo.data.RandomCrop(0, size=20), ValueError,
            r"augment=RandomCrop turns training examples of shape \(1, 28, 28\) "
            r"and dtype uint8 into \(1, 20, 20\) and uint8",
        ),
        (zoo.data.DeviceCrop(0, size=20), ValueError, r"into \(1, 20, 20\)"),
        (zoo.data.RandomShift, TypeError, r"the class itself: build one"),
        (lambda batch: batch, TypeError, r"augment takes a device augmentation"),
    ],
)  # fmt: skip
def test_fit_refuses_an_augment_it_cannot_train_with_before_writing(
    augment, error, message, small_train, tmp_path
):
    # Once a compiler error after the checkpoint folder was made.
    model, state = build("batchnorm_cnn")
    with pytest.raises(error, match=message):
        fit(
            model, state, small_train, optax.sgd(0.1), epochs=1, callbacks=[],
            augment=augment, checkpoint_dir=tmp_path / "run",
        )  # fmt: skip
    assert not (tmp_path / "run").exists()


def test_fit_refuses_out_of_range_labels_and_unwritable_dirs(small_train, tmp_path):
    model, state = zoo.create_model("mlp", out_size=5, key=jax.random.key(0))
    args = dict(optimizer=optax.sgd(0.1), epochs=1, callbacks=[])
    with pytest.raises(ValueError, match=r"labels must be in \[0, 5\)"):
        fit(model, state, small_train, **args)  # pyright: ignore[reportArgumentType]
    model, state = build("mlp")
    blocker = tmp_path / "file"
    blocker.write_text("in the way")
    with pytest.raises(zoo.CheckpointError, match="file"):
        fit(model, state, small_train, checkpoint_dir=blocker, **args)  # pyright: ignore[reportArgumentType]


def test_fit_never_deletes_an_earlier_run(small_train, tmp_path):
    """A checkpoint folder of a finished run is refused unless resuming, and
    nothing in it changes."""
    model, state = build("mlp")
    args = dict(optimizer=optax.sgd(0.1), batch_size=128, callbacks=[])
    ckpt = tmp_path / "ckpt"
    fit(model, state, small_train, epochs=2, checkpoint_dir=ckpt, **args)  # pyright: ignore[reportArgumentType]
    before = sorted((p.name, p.stat().st_mtime_ns) for p in ckpt.rglob("*"))
    with pytest.raises(zoo.CheckpointError, match="resume=True, or give another"):
        fit(model, state, small_train, epochs=1, checkpoint_dir=ckpt, **args)  # pyright: ignore[reportArgumentType]
    assert sorted((p.name, p.stat().st_mtime_ns) for p in ckpt.rglob("*")) == before
    with pytest.raises(ValueError, match="checkpoint_dir=Checkpointer"):
        fit(
            model, state, small_train, epochs=1, optimizer=optax.sgd(0.1),
            callbacks=[zoo.train.Checkpointer(tmp_path / "other")],
        )  # fmt: skip


def test_fit_takes_the_loss_and_trainable_arrays_from_its_step(small_train):
    model, state = build("mlp")
    head = zoo.head_only(model)
    step = make_train_step(optax.sgd(0.1), trainable=head)
    result = fit(model, state, small_train, step, epochs=1, callbacks=[])
    assert result.steps_per_call >= 1
    body = eqx.filter(model, lambda x: eqx.is_array(x))
    trained = eqx.filter(result.model, lambda x: eqx.is_array(x))
    frozen = [
        np.array_equal(a, b)
        for a, b in zip(jax.tree.leaves(body), jax.tree.leaves(trained), strict=True)
    ]
    assert any(frozen) and not all(frozen)  # the body stayed, the head moved


def test_metrics_zero_summary_is_nan():
    summary = Metrics.zero().summary()
    assert summary["count"] == 0
    assert math.isnan(summary["loss"]) and math.isnan(summary["accuracy"])


def test_a_second_writer_into_a_run_folder_fails_at_once(small_train, tmp_path):
    """Another process holding the folder's run lock stops fit before any work."""
    ckpt = tmp_path / "ckpt"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from zoo.train._run_lock import run_lock\n"
            "with run_lock(sys.argv[1]):\n"
            "    print('held', flush=True)\n"
            "    time.sleep(120)\n",
            str(ckpt),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        model, state = build("mlp")
        with pytest.raises(zoo.CheckpointError, match=f"process {holder.pid}"):
            fit(
                model, state, small_train, optax.sgd(0.1), epochs=1,
                checkpoint_dir=ckpt, callbacks=[],
            )  # fmt: skip
        assert latest_checkpoint(ckpt) is None
    finally:
        holder.kill()
        holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()
    # The lock dies with its process: the folder is free again.
    model, state = build("mlp")
    fit(model, state, small_train, optax.sgd(0.1), epochs=1, checkpoint_dir=ckpt,
        callbacks=[])  # fmt: skip
    assert latest_checkpoint(ckpt) is not None


def test_an_unwritable_history_file_is_named_as_a_file(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("in the way")
    with pytest.raises(ValueError, match=r"Cannot write .*history\.json") as error:
        zoo.train.HistoryWriter(blocker / "history.json")
    assert "checkpoint" not in str(error.value)


def test_epoch_record_history_json_counts_from_one_and_reads_back():
    record = zoo.train.EpochRecord(0, 1.5, 0.3, 0.9, 100.0, test_accuracy=0.8)
    data = record.to_json()
    assert data["epoch"] == 1 and "test_loss" not in data
    assert zoo.train.EpochRecord.from_json(json.loads(json.dumps(data))) == record


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: zoo.train.make_train_step(optax.adam), r"got the function adam: "  # pyright: ignore[reportArgumentType]
         r"call it to build one, e\.g\. optax\.adam\(1e-3\)"),
        (lambda: zoo.train.make_train_step(0.01), r"got the number 0\.01: a "  # pyright: ignore[reportArgumentType]
         r"learning rate goes into one, e\.g\. optax\.adam\(0\.01\)"),
        (lambda: zoo.train.make_train_step(optax.sgd(0.1), loss="cross_entropy"),  # pyright: ignore[reportArgumentType]
         r"loss must be a function"),
        (lambda: zoo.train.TrainState.init(*build("mlp"), optax.sgd,  # pyright: ignore[reportArgumentType]
                                           key=jax.random.key(0)),
         r"TrainState\.init takes an optax transformation, got the function sgd"),
        (lambda: zoo.train.TrainState.init(*build("mlp"), optax.sgd(0.1), key=0),  # pyright: ignore[reportArgumentType]
         r"TrainState\.init: key must be a JAX PRNG key, e\.g\. "
         r"key=jax\.random\.key\(0\)"),
        (lambda: zoo.create_model("mlp", key=0),  # pyright: ignore[reportArgumentType]
         r"create_model: key must be a JAX PRNG key"),
    ],
)  # fmt: skip
def test_a_mistaken_optimizer_loss_or_key_is_named_where_it_is_given(call, message):
    # Each used to pass here and fail later, deep in optax or JAX, or blame
    # the model's config.
    with pytest.raises(TypeError, match=message):
        call()
    # Raw keys of jax.random.PRNGKey still build models and train states.
    model, state = zoo.create_model("mlp", key=jax.random.PRNGKey(0))
    zoo.train.TrainState.init(model, state, optax.sgd(0.1), key=jax.random.PRNGKey(1))


def test_a_batch_order_is_compared_on_what_this_version_records(tmp_path):
    from zoo.train._resume import check_batch_order

    order = {"batch_size": 128, "train_examples": 1024, "seed": 5}
    check_batch_order(tmp_path, None, order)  # a custom loop's checkpoint
    check_batch_order(tmp_path, {**order, "a later entry": 1}, order)
    with pytest.raises(zoo.CheckpointError, match=r"differ in batch_size and seed,"):
        check_batch_order(tmp_path, {**order, "batch_size": 64, "seed": 1}, order)
    with pytest.raises(zoo.CheckpointError, match=r"differ in train_examples,"):
        check_batch_order(
            tmp_path, {k: order[k] for k in ("batch_size", "seed")}, order
        )
