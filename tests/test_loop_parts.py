"""The public parts of a training loop: callbacks, losses, the feed, the docs' loop."""

import csv
import os
import pathlib
import re
import struct
import threading

import equinox as eqx
import jax
import numpy as np
import optax
import pytest
from hypothesis import given, settings, strategies as st

import zoo
import zoo.train._loop as loop
from tests import helpers
from zoo.data import ArrayDataset, Chunk, train_pipeline
from zoo.train import (
    Callback,
    Checkpointer,
    CSVLogger,
    DeviceFeed,
    EpochEnd,
    FiniteLossGuard,
    NonFiniteLossError,
    ProgressBar,
    TensorBoardWriter,
    TrainState,
    default_callbacks,
    fit,
    label_smoothing,
    latest_checkpoint,
    load_checkpoint,
    make_train_step,
    save_checkpoint,
)
from zoo.train._metrics import masked_loss, weighted_loss
from zoo.train._step import mean_weights

REPO = pathlib.Path(__file__).resolve().parent.parent
QUIET = {"callbacks": [FiniteLossGuard()]}  # no bar, no lines


def small_mlp(seed: int = 0):
    return zoo.create_model("mlp", key=jax.random.key(seed), width_size=[32])


def params_of(tree) -> list[np.ndarray]:
    return [np.asarray(p) for p in jax.tree.leaves(eqx.filter(tree, eqx.is_array))]


def docs_block(marker: str) -> str:
    """The Python block after ``<!-- test: marker -->`` in docs/training.md."""
    return helpers.docs_block("training.md", marker)


def poisoned(data: ArrayDataset, rows: list[int]) -> ArrayDataset:
    inputs = data.inputs.astype(np.float32) / 255.0
    inputs[rows] = 3e38  # finite, but the forward pass overflows
    return ArrayDataset(inputs, data.labels, data.class_names, "poisoned")


def test_without_the_guard_training_goes_on_but_no_checkpoint_is_diverged(
    small_train, tmp_path
):
    model, state = small_mlp()
    data = poisoned(small_train, [5])
    result = fit(
        model, state, data, optimizer=optax.sgd(0.01), epochs=2, batch_size=64,
        callbacks=[],
    )  # fmt: skip
    assert len(result.history) == 2
    assert not np.isfinite(result.history[-1].train_loss)
    # The Checkpointer reads the loss before it saves, guard or not.
    with pytest.raises(NonFiniteLossError, match="epoch 1"):
        fit(
            model, state, data, optimizer=optax.sgd(0.01), epochs=2,
            batch_size=64, steps_per_call=2, callbacks=[],
            checkpoint_dir=Checkpointer(tmp_path / "ckpt", every=2),
        )  # fmt: skip
    last = latest_checkpoint(tmp_path / "ckpt")
    if last is not None:  # saved before the poisoned row's step
        loaded = load_checkpoint(tmp_path / "ckpt", optimizer=optax.sgd(0.01))
        leaves = jax.tree.leaves(eqx.filter(loaded.train_state.model, eqx.is_array))
        assert all(bool(np.isfinite(leaf).all()) for leaf in leaves)


def test_nan_error_names_the_chunk_that_holds_the_bad_step(small_train):
    """Polls of the running loss (progress bar, guard) never claim unchecked steps."""
    seed, batch = 3, 64
    row = int(np.random.default_rng([seed, 0]).permutation(1024)[300])
    bad_step = 300 // batch + 1  # counting from 1: the step that sees `row`
    model, state = small_mlp()
    with pytest.raises(NonFiniteLossError) as error:
        fit(
            model, state, poisoned(small_train, [row]), optimizer=optax.sgd(0.01),
            epochs=1, batch_size=batch, seed=seed, steps_per_call=2,
            callbacks=[ProgressBar(every_seconds=0), FiniteLossGuard(every_seconds=0)],
        )  # fmt: skip
    found = re.search(r"within steps (\d+)-(\d+)", str(error.value))
    assert found is not None, str(error.value)
    first, last = int(found.group(1)), int(found.group(2))
    assert first <= bad_step <= last and last - first == 1, (first, last, bad_step)


@pytest.mark.parametrize("with_data_state", [True, False])
def test_fit_resumes_from_a_checkpoint_it_did_not_write(
    small_train, tmp_path, with_data_state
):
    model, state = small_mlp()
    optimizer = optax.adam(1e-3)
    common = dict(optimizer=optimizer, batch_size=64, seed=1, steps_per_call=2)
    straight = fit(model, state, small_train, epochs=2, **common, **QUIET)  # pyright: ignore[reportArgumentType]
    # A custom loop trains 8 steps and saves with no fit metadata.
    ts = TrainState.init(model, state, optimizer, key=jax.random.key(1))
    batches = iter(train_pipeline(small_train, batch_size=64, seed=1, num_epochs=2))
    feed = DeviceFeed(batches, steps_per_call=2, steps_per_epoch=16)
    step = make_train_step(optimizer)
    for _ in range(4):
        ts, _ = step(ts, next(feed))
    data_state = feed.data_state if with_data_state else None
    save_checkpoint(tmp_path / "run", ts, data_state=data_state)
    lines: list[str] = []
    resumed = fit(
        model, state, small_train, epochs=2, checkpoint_dir=tmp_path / "run",
        resume=True, callbacks=default_callbacks(progress=False, log=lines.append),
        **common,  # pyright: ignore[reportArgumentType]
    )  # fmt: skip
    assert lines[0].startswith("resumed from step 8 (epoch 1)")
    assert resumed.step == straight.step == 32
    for a, b in zip(params_of(straight.model), params_of(resumed.model), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    assert resumed.history[-1].train_loss == pytest.approx(
        straight.history[-1].train_loss, rel=1e-5
    )


def test_library_errors_never_name_the_example_scripts_flags():
    for path in (REPO / "zoo").rglob("*.py"):
        assert "--resume" not in path.read_text(encoding="utf-8"), path


def test_a_custom_loss_trains_and_changes_the_objective(small_train, small_test):
    model, state = small_mlp()
    args = dict(epochs=4, batch_size=64, **QUIET)
    adam = optax.adam(3e-3)
    plain = fit(model, state, small_train, adam, test_data=small_test, **args)  # pyright: ignore[reportArgumentType]
    smooth = fit(
        model, state, small_train, make_train_step(adam, loss=label_smoothing(0.2)),
        test_data=small_test, **args,  # pyright: ignore[reportArgumentType]
    )  # fmt: skip
    assert (smooth.history[-1].test_accuracy or 0) > 0.8
    # Smoothed targets keep the loss away from zero: a higher training loss.
    assert smooth.history[-1].train_loss > plain.history[-1].train_loss + 0.1
    logits, labels = jax.numpy.zeros((3, 4)), jax.numpy.array([0, 1, 2])
    mask = jax.numpy.ones(3, bool)
    with pytest.raises(ValueError, match="one loss per example"):
        masked_loss(lambda lg, lb: lg.sum(), logits, labels, mask)


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    batch=st.integers(1, 9),
    real=st.integers(0, 9),
    smoothing=st.sampled_from([0.0, 0.2]),
)
def test_weighted_loss_has_the_masked_means_gradient_bit_for_bit(
    seed, batch, real, smoothing
):
    """The training step's loss (weights ``mask / count`` given, reduced after
    the steps) trains exactly as the masked mean: the same gradient, bitwise,
    and its per-example terms sum to the same metrics."""
    rng = np.random.default_rng(seed)
    logits = jax.numpy.asarray(rng.normal(size=(batch, 5)) * 3, np.float32)
    labels = jax.numpy.asarray(rng.integers(0, 5, batch), np.int32)
    mask = jax.numpy.asarray(np.arange(batch) < min(real, batch))
    loss_fn = label_smoothing(smoothing)

    def mean(lg):
        return masked_loss(loss_fn, lg, labels, mask)

    def weighted(lg):
        return weighted_loss(loss_fn, lg, labels, mask, mean_weights(mask))

    (mean_value, metrics), mean_grad = jax.value_and_grad(mean, has_aux=True)(logits)
    (value, totals), grad = jax.value_and_grad(weighted, has_aux=True)(logits)
    np.testing.assert_array_equal(np.asarray(grad), np.asarray(mean_grad))
    np.testing.assert_allclose(value, mean_value, rtol=1e-6, atol=1e-7)
    got = totals.metrics(jax.numpy.sum(mask, dtype=jax.numpy.int32))
    np.testing.assert_allclose(got.loss_sum, metrics.loss_sum, rtol=1e-6)
    assert int(got.correct) == int(metrics.correct)
    assert int(got.examples) == int(metrics.examples)


def test_feed_keeps_chunks_long_and_ends_them_at_epoch_ends(small_train):
    batches = iter(train_pipeline(small_train, batch_size=64, seed=0, num_epochs=2))
    feed = DeviceFeed(batches, steps_per_call=6, steps_per_epoch=16)
    lengths = [chunk.steps for chunk in feed]
    assert lengths == [6, 6, 4, 6, 6, 4]
    assert feed.data_state == {"next_index": 32}


def test_feed_prefetch_holds_the_next_chunk_and_keeps_the_position(small_train):
    def feed():
        pipeline = train_pipeline(
            small_train, batch_size=64, seed=0, num_epochs=2, prefetch=0
        )
        return DeviceFeed(iter(pipeline), steps_per_call=6, steps_per_epoch=16)

    def inputs(chunk):
        assert isinstance(chunk, Chunk)  # not augmented
        return np.asarray(chunk.inputs)

    plain = feed()
    expected = [(inputs(c), plain.step, plain.data_state) for c in plain]
    ahead, got = feed(), []
    while True:
        position = (ahead.step, ahead.data_state)
        ahead.prefetch()
        ahead.prefetch()  # holds one chunk, however often asked
        assert (ahead.step, ahead.data_state) == position
        chunk = next(ahead, None)
        if chunk is None:
            break
        got.append((inputs(chunk), ahead.step, ahead.data_state))
    assert len(got) == len(expected) == 6
    for (x, step, state), (want, want_step, want_state) in zip(
        got, expected, strict=True
    ):
        np.testing.assert_array_equal(x, want)
        assert (step, state) == (want_step, want_state)


def test_fit_gathers_its_first_chunk_while_the_step_compiles(small_train, monkeypatch):
    """Nothing else would hide the first chunk's gather (for an MNIST epoch
    of an MLP, 5-7 % of its time): ``fit`` takes it on another thread while
    the step compiles, and trains on exactly the batches it would otherwise."""
    events = []
    prefetch, compile_step = DeviceFeed.prefetch, loop._compile

    def recorded_prefetch(self):
        events.append(
            ("prefetch", threading.current_thread() is threading.main_thread())
        )
        prefetch(self)

    def recorded_compile(*args):
        events.append(("compile starts", None))
        out = compile_step(*args)
        events.append(("compile ends", None))
        return out

    model, state = small_mlp()
    args = dict(epochs=2, batch_size=64, seed=3, steps_per_call=5, **QUIET)
    before = fit(model, state, small_train, optax.sgd(0.1), **args)  # pyright: ignore[reportArgumentType]
    monkeypatch.setattr(DeviceFeed, "prefetch", recorded_prefetch)
    monkeypatch.setattr(loop, "_compile", recorded_compile)
    after = fit(model, state, small_train, optax.sgd(0.1), **args)  # pyright: ignore[reportArgumentType]
    first = events.index(("prefetch", False))  # on a thread of its own
    assert first < events.index(("compile ends", None))
    assert events.index(("compile starts", None)) < events.index(("compile ends", None))
    for a, b in zip(
        params_of(after.train_state.model),
        params_of(before.train_state.model),
        strict=True,
    ):
        np.testing.assert_array_equal(a, b)


def test_feed_takes_chunks_from_the_pipeline_at_once(small_train):
    def pipeline():
        return train_pipeline(
            small_train, batch_size=64, seed=0, num_epochs=2, prefetch=0
        )

    class Spy:
        """The pipeline's iterator, counting the batches taken one by one."""

        def __init__(self, it):
            self.it, self.singles = it, 0

        def __next__(self):
            self.singles += 1
            return next(self.it)

        def next_chunk(self, steps):
            return self.it.next_chunk(steps)

        def get_state(self):
            return self.it.get_state()

        def set_state(self, state):
            self.it.set_state(state)

    spy = Spy(iter(pipeline()))
    at_once = list(DeviceFeed(spy, steps_per_call=6, steps_per_epoch=16))
    stacked = list(
        DeviceFeed((b for b in pipeline()), steps_per_call=6, steps_per_epoch=16)
    )
    assert spy.singles == 1  # only the probe that finds the data's end
    assert [c.steps for c in at_once] == [c.steps for c in stacked]
    for a, b in zip(at_once, stacked, strict=True):
        assert isinstance(a, Chunk) and isinstance(b, Chunk)  # not augmented
        for field_a, field_b in zip(a, b, strict=True):
            np.testing.assert_array_equal(field_a, field_b)


def test_the_documented_loop_trains_and_resumes(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = docs_block("custom-loop")
    assert len(code.strip().splitlines()) <= 32
    exec(compile(code, "docs/training.md", "exec"), {})
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == ["step 468", "step 936"]
    assert float(lines[-1].split()[-1].rstrip("%")) > 95.0
    # Run again: it resumes after the last epoch and has nothing left to do.
    exec(compile(code, "docs/training.md", "exec"), {})
    assert capsys.readouterr().out == ""
    assert (tmp_path / "runs" / "custom-loop" / "LATEST").exists()


def test_a_custom_callback_stops_training_early(small_train, small_test):
    namespace: dict[str, object] = {}
    exec(compile(docs_block("early-stopping"), "docs/training.md", "exec"), namespace)
    early_stopping = namespace["EarlyStopping"]
    assert isinstance(early_stopping, type) and issubclass(early_stopping, Callback)

    class Recorder(Callback):
        def __init__(self):
            self.events: list[str] = []

        def on_epoch_end(self, event: EpochEnd) -> None:
            self.events.append(f"epoch {event.record.epoch}")

        def on_train_end(self, result) -> None:
            self.events.append("end")

    recorder = Recorder()
    model, state = small_mlp()
    result = fit(
        model, state, small_train, optimizer=optax.sgd(0.0), epochs=10,
        batch_size=256, test_data=small_test,
        callbacks=[early_stopping(patience=2), recorder],  # pyright: ignore[reportCallIssue]
    )  # fmt: skip
    # A learning rate of 0 never improves: epochs 0 (best), 1 and 2, then stop.
    assert len(result.history) == 3
    assert result.stop_reason is not None and "for 2 epochs" in result.stop_reason
    assert recorder.events == ["epoch 0", "epoch 1", "end"]  # stopped at epoch 2


def test_chunk_events_sum_to_the_epochs_metrics(small_train):
    # settled_metrics sums the chunks before this one, epoch_metrics adds this
    # one's; the last chunk's epoch_metrics is the epoch's record.
    class Sums(Callback):
        def __init__(self):
            self.seen: list[tuple[int, int, int, int]] = []

        def on_chunk_end(self, event) -> None:
            settled = int(event.settled_metrics.examples)
            chunk = int(event.chunk_metrics.examples)
            total = int(event.epoch_metrics.examples)
            self.seen.append((event.settled_step, event.step, settled, total))
            assert total == settled + chunk
            loss = float(event.epoch_metrics.loss_sum)
            assert loss == float(
                event.settled_metrics.loss_sum + event.chunk_metrics.loss_sum
            )

    sums = Sums()
    model, state = small_mlp()
    result = fit(
        model, state, small_train, optax.sgd(0.1), epochs=2, batch_size=64,
        steps_per_call=3, callbacks=[sums],
    )  # fmt: skip
    spe = len(small_train) // 64
    for settled_step, step, settled, total in sums.seen:
        start = settled_step - settled_step % spe
        assert settled == (settled_step - start) * 64
        assert total == (step - start) * 64
    last_of_epoch = [s for s in sums.seen if s[1] % spe == 0]
    assert [s[3] for s in last_of_epoch] == [spe * 64] * 2
    assert len(result.history) == 2


def _tensorboard_scalars(logdir: pathlib.Path) -> dict[str, list[tuple[int, float]]]:
    """Scalars of every event file in ``logdir``, read from the TFRecord framing."""
    from tensorboardX.proto import event_pb2

    scalars: dict[str, list[tuple[int, float]]] = {}
    for path in sorted(logdir.iterdir()):
        data = path.read_bytes()
        offset = 0
        while offset < len(data):
            (length,) = struct.unpack("<Q", data[offset : offset + 8])
            record = data[offset + 12 : offset + 12 + length]
            offset += 12 + length + 4
            event = event_pb2.Event.FromString(record)  # pyright: ignore[reportAttributeAccessIssue]
            for value in event.summary.value:
                scalars.setdefault(value.tag, []).append(
                    (event.step, value.simple_value)
                )
    return scalars


def test_csv_logger_and_tensorboard_writer_record_every_epoch(
    small_train, small_test, tmp_path
):
    pytest.importorskip("tensorboardX")
    model, state = small_mlp()
    result = fit(
        model, state, small_train, optimizer=optax.adam(1e-3), epochs=2,
        batch_size=64, test_data=small_test, steps_per_call=2,
        callbacks=[
            CSVLogger(tmp_path / "log.csv"),
            TensorBoardWriter(tmp_path / "tb", every_seconds=0),
        ],
    )  # fmt: skip
    with open(tmp_path / "log.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert [int(r["epoch"]) for r in rows] == [1, 2]  # from 1, as the logs count
    for row, record in zip(rows, result.history, strict=True):
        assert float(row["test_accuracy"]) == pytest.approx(record.test_accuracy)
        assert float(row["train_loss"]) == pytest.approx(record.train_loss)
    scalars = _tensorboard_scalars(tmp_path / "tb")
    accuracy = scalars["epoch/test_accuracy"]
    assert [step for step, _ in accuracy] == [16, 32]
    assert accuracy[-1][1] == pytest.approx(result.history[-1].test_accuracy)
    assert scalars["train/loss"], "no running loss was written"
    assert os.listdir(tmp_path)  # nothing else to check: files are whole


def test_tensorboard_writer_names_the_extra_when_missing(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "tensorboardX", None)
    with pytest.raises(ModuleNotFoundError, match=r"typed-zoo\[tensorboard\]"):
        TensorBoardWriter("unused")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"every": 0}, "every must be >= 1 or None, got 0"),
        ({"every": -3}, "every must be >= 1 or None, got -3"),
        ({"keep": 0}, "keep must be >= 1, got 0"),
    ],
)
def test_a_checkpointer_refuses_bad_counts_before_any_work(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        Checkpointer(tmp_path / "ckpt", **kwargs)
    assert not (tmp_path / "ckpt").exists()
