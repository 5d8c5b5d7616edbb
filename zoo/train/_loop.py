"""``fit``: epochs over a Grain pipeline, built from zoo's public training parts.

The parts are the same a user writes a loop with (see the training guide):
[`TrainState`][zoo.train.TrainState], [`make_train_step`][zoo.train.make_train_step],
[`DeviceFeed`][zoo.train.DeviceFeed], [`evaluate`][zoo.train.evaluate] and
checkpoints; everything else ``fit`` does is a [`Callback`][zoo.train.Callback].
"""

import concurrent.futures
import contextlib
import functools
import os
import time
from collections.abc import Callable, Sequence

import equinox as eqx
import grain
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh
from jax.typing import ArrayLike

from .._inputs import model_inputs
from ..data import (
    AbstractDeviceAugment,
    AnyChunk,
    ArrayDataset,
    Chunk,
    IndexedChunk,
    steps_per_epoch,
    train_pipeline,
)
from ..models import AbstractModel
from ._augment_arg import check_augment
from ._callbacks import (
    Callback,
    Checkpointer,
    EpochLogger,
    StopTraining,
    default_callbacks,
)
from ._checkpoint import CheckpointError, ensure_writable, latest_checkpoint
from ._data_arg import as_dataset
from ._evaluate import EVAL_BATCH_SIZE, evaluate
from ._events import ChunkEnd, EpochEnd, EpochRecord, FitResult, RunInfo
from ._feed import (
    DeviceFeed,
    ResidentFeed,
    augment_key,
    chunk_lengths,
    data_placement,
)
from ._labels import check_labels, check_targets
from ._metrics import Metrics
from ._parallel import (
    check_batch_size,
    local_copy,
    process_shard,
    replicate,
    shard_batch,
)
from ._precise_bn import recompute_batch_norm
from ._resume import batch_order, resume as resume_run
from ._run_lock import run_lock
from ._state import TrainState
from ._step import TrainStep, make_train_step
from ._tuning import steps_per_call as default_steps_per_call

Program = Callable[[TrainState, AnyChunk], tuple[TrainState, Metrics]]

FIT_PREFETCH = 0
"""Batches ``fit``'s pipeline prepares ahead in a background thread: none. The
device runs each chunk asynchronously while the loop gathers the next, so a
thread would add only hand-offs (see the Performance page)."""


def fit(
    model: AbstractModel | eqx.Module,
    state: eqx.nn.State | None,
    train_data: ArrayDataset | tuple[ArrayLike, ArrayLike],
    optimizer: optax.GradientTransformation | TrainStep,
    *,
    epochs: int,
    batch_size: int = 128,
    seed: int = 0,
    test_data: ArrayDataset | tuple[ArrayLike, ArrayLike] | None = None,
    callbacks: Sequence[Callback] | None = None,
    checkpoint_dir: str | os.PathLike[str] | Checkpointer | None = None,
    resume: bool = False,
    steps_per_call: int | None = None,
    eval_batch_size: int = EVAL_BATCH_SIZE,
    mesh: Mesh | None = None,
    augment: grain.transforms.RandomMap | AbstractDeviceAugment | None = None,
) -> FitResult:
    """Train ``model`` for ``epochs`` epochs over a shuffled Grain pipeline.

    Each chunk of ``steps_per_call`` batches is one compiled call (compiled
    before the first epoch: ``compile_seconds``). On a GPU or TPU a training
    set that fits on the device (a quarter of its memory) is copied there once
    and each call gathers its batches itself from the chunk's row numbers;
    otherwise (on a CPU, on a mesh, or with a Grain augmentation) the next
    chunk is gathered on the host while the current one trains. Either way the
    batches are the same, a pure function of ``seed`` and the step, and the
    run's first log line says which was chosen. After each epoch the model is
    evaluated exactly on ``test_data`` and the callbacks run.

    Args:
        model: the model to train: a zoo model (from ``zoo.create_model`` or a
            constructor), or any ``eqx.Module`` called on ONE example of the
            data's shape as ``model(x, *, key=None) -> logits`` or
            ``model(x, state, *, key=None) -> (logits, state)`` (see
            [`zoo.apply`][]).
        state: its state (empty for zoo's stateless models). For any other
            model it chooses the call form: ``None``, or the ``eqx.nn.State``
            of ``eqx.nn.make_with_state``.
        train_data: the training set, an
            [`ArrayDataset`][zoo.data.ArrayDataset] or a tuple ``(x, y)`` of
            NumPy or JAX arrays (examples, integer labels); images may stay
            ``uint8``.
        optimizer: an optax transformation, or a step from
            [`make_train_step`][zoo.train.make_train_step], which brings its
            own optimiser, loss and trainable arrays.
        epochs: passes over ``train_data`` (>= 1); each epoch's remainder is
            dropped so every step sees a full batch.
        batch_size: examples per optimiser step (the global batch on a mesh).
        seed: seeds the data order, the augmentation and the dropout keys.
        test_data: evaluated exactly (every example once) after each epoch;
            a dataset or ``(x, y)``, as ``train_data``.
        callbacks: run in order at each event; ``None`` for
            [`default_callbacks()`][zoo.train.default_callbacks] (NaN guard,
            progress bar, a line per epoch). ``[]`` runs none.
        checkpoint_dir: a folder, or a [`Checkpointer`][zoo.train.Checkpointer]
            (for ``every``, ``keep``, ``config``): saves after each epoch,
            after every other callback. A folder that holds checkpoints is
            refused unless ``resume``.
        resume: continue from the latest checkpoint in ``checkpoint_dir`` (if
            there is one), bitwise as if never stopped.
        steps_per_call: optimiser steps per device call; by default enough for
            the call's work to dwarf its fixed cost
            ([`steps_per_call`][zoo.train.steps_per_call]).
        eval_batch_size: examples per evaluation call (see ``evaluate``).
        mesh: train data-parallel on this mesh (from
            [`data_mesh`][zoo.train.data_mesh]); after
            ``jax.distributed.initialize`` every process calls ``fit`` alike,
            reads its share of each batch, and only process 0 runs the
            callbacks that write or print.
        augment: a random transformation of each training batch, seeded
            from ``seed`` and the step: a device augmentation
            (``zoo.data.DeviceShift(2)``, ...), run inside the compiled step,
            or a Grain transform (``zoo.data.RandomShift(2)``, ...), run on the
            host batch by batch (the data is then fed from the host). The two
            draw differently. Either must keep the examples' shape and dtype.

    Returns:
        The final train state, the history, the compile time, the steps per
        call, and why training stopped early (if a callback raised
        [`StopTraining`][zoo.train.StopTraining]).

    Raises:
        TypeError: data that is neither a dataset nor ``(x, y)`` arrays.
        ValueError: bad arguments (before any work is done), e.g. an
            augmentation that changes the examples' shape.
        zoo.train.CheckpointError: an unwritable ``checkpoint_dir``, one with
            checkpoints but no ``resume``, or on resume a checkpoint that does
            not match this model, was written with another batch size,
            training set or seed, or is past ``epochs``.
        NonFiniteLossError: a NaN or infinite loss; the message names the epoch
            and steps, and the last checkpoint is left as it was.
    """
    train_data = as_dataset(train_data, "train_data")
    test_data = None if test_data is None else as_dataset(test_data, "test_data")
    step_fn = (
        optimizer if isinstance(optimizer, TrainStep) else make_train_step(optimizer)
    )
    _check_arguments(
        model, state, train_data, test_data, epochs, batch_size, steps_per_call
    )
    check_augment(augment, train_data)
    if isinstance(callbacks, Callback):
        raise TypeError(
            "callbacks takes a list of callbacks: callbacks="
            f"[{type(callbacks).__name__}(...)], or zoo.train.default_callbacks() "
            "+ [...] to keep the defaults."
        )
    check_targets(step_fn.loss, train_data, model, state)
    if mesh is not None:
        check_batch_size(mesh, batch_size)
    on_device, data_feed = data_placement(
        train_data, augment, sharded=mesh is not None or jax.process_count() > 1,
        backend=jax.default_backend(),
    )  # fmt: skip
    checkpointer = _checkpointer(checkpoint_dir, callbacks, resume)
    main = jax.process_index() == 0  # the one process that logs and writes
    with contextlib.ExitStack() as held:
        if checkpointer is not None and main:  # one writer per folder, whole run
            held.enter_context(run_lock(checkpointer.directory))
        spe = steps_per_epoch(len(train_data), batch_size, drop_remainder=True)
        k = steps_per_call or default_steps_per_call(
            model, state, train_data.inputs[0], batch_size=batch_size,
            steps_per_epoch=spe, loss=step_fn.loss, trainable=step_fn.trainable,
            total_steps=epochs * spe,
        )  # fmt: skip
        cbs = list(default_callbacks() if callbacks is None else callbacks)
        cbs += [checkpointer] if checkpointer is not None else []
        cbs = [cb for cb in cbs if main or not cb.main_process_only]

        ts = step_fn.init(model, state, key=jax.random.key(seed))
        local_batch = batch_size // jax.process_count()  # this process's rows
        batches = iter(
            train_pipeline(
                train_data, batch_size=local_batch, seed=seed, num_epochs=epochs,
                shard=None if mesh is None else process_shard(),
                augment=None if isinstance(augment, AbstractDeviceAugment) else augment,
                prefetch=FIT_PREFETCH,
            )
        )  # fmt: skip
        history: list[EpochRecord] = []
        partial = Metrics.zero()
        order = batch_order(train_data, batch_size, seed)
        if resume and checkpointer is not None:
            log = next((cb.log for cb in cbs if isinstance(cb, EpochLogger)), None)
            ts, history, partial = resume_run(
                checkpointer.directory, ts, batches, order=order,
                steps_per_epoch=spe, epochs=epochs, log=log,
            )  # fmt: skip
        put = jax.device_put
        if mesh is not None:
            ts, partial = replicate((ts, partial), mesh)
            put = functools.partial(shard_batch, mesh=mesh, batch_axis=1)
        # The one host-side count of steps: the feed's (ts.step lives on the device).
        start_step = int(local_copy(ts.step))
        if start_step >= epochs * spe:
            return FitResult(ts, history, 0.0, k)
        device_augment = augment if isinstance(augment, AbstractDeviceAugment) else None
        key = None if device_augment is None else augment_key(seed)
        if on_device:
            feed = ResidentFeed(
                batches, train_data, steps_per_call=k, steps_per_epoch=spe,
                start_step=start_step, augment=device_augment, key=key,
            )  # fmt: skip
            example = functools.partial(_example_rows, feed, local_batch)
        else:
            feed = DeviceFeed(
                batches, steps_per_call=k, steps_per_epoch=spe,
                start_step=start_step, put=put, augment=device_augment, key=key,
            )  # fmt: skip
            example = functools.partial(_example_chunk, train_data, local_batch, feed)
        # The first chunk is gathered while the step compiles: nothing else
        # would hide its gather, and the feed hides every later one.
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            first_chunk = pool.submit(feed.prefetch)
            programs, compile_seconds = _compile(step_fn, ts, example, spe, k)
            first_chunk.result()
        run = RunInfo(
            epochs, spe, batch_size, k, feed.step, compile_seconds, main, data_feed,
            order,
        )  # fmt: skip
        for cb in cbs:
            cb.on_train_start(run, ts)
        stop_reason = None
        try:
            while feed.step < run.total_steps:
                epoch, epoch_start, settled = feed.step // spe, feed.step, partial
                partial, t0 = Metrics.zero(), time.perf_counter()
                last: Metrics | None = None  # the metrics of the chunk in flight
                while feed.step < (epoch + 1) * spe:
                    settled_step = feed.step
                    chunk = next(feed)
                    ts, chunk_metrics = programs[chunk.steps](ts, chunk)
                    # With this chunk queued, gather the next one and add the
                    # last one's metrics (which waits for its step only): on a
                    # CPU, where adding waits, the device never idles.
                    feed.prefetch()
                    settled = settled if last is None else settled + last
                    last = chunk_metrics
                    event = ChunkEnd(
                        run, epoch, epoch_start, feed.step, ts, chunk_metrics,
                        settled, settled_step, time.perf_counter() - t0,
                        feed.data_state,
                    )  # fmt: skip
                    for cb in cbs:
                        cb.on_chunk_end(event)
                metrics = settled if last is None else settled + last
                train = metrics.summary()  # waits for the epoch's last step
                seconds = time.perf_counter() - t0
                if test_data is not None and step_fn.recomputes_batch_norm(feed.step):
                    ts = _precise_batch_norm(ts, train_data, step_fn, batch_size, seed)
                    ts = ts if mesh is None else replicate(ts, mesh)
                test = {} if test_data is None else evaluate(
                    ts.model, ts.model_state, test_data, batch_size=eval_batch_size,
                    mesh=mesh, loss=step_fn.loss, precision=step_fn.precision,
                )  # fmt: skip
                record = EpochRecord(
                    epoch, seconds, train["loss"], train["accuracy"],
                    (feed.step - epoch_start) * batch_size / seconds,
                    test.get("loss"), test.get("accuracy"),
                )  # fmt: skip
                history.append(record)
                event = EpochEnd(
                    run, record, tuple(history), feed.step, ts, feed.data_state
                )
                for cb in cbs:
                    cb.on_epoch_end(event)
        except StopTraining as stop:
            stop_reason = str(stop) or "stopped by a callback"
        result = FitResult(ts, history, compile_seconds, k, stop_reason)
        for cb in cbs:
            cb.on_train_end(result)
        return result


def _precise_batch_norm(
    ts: TrainState, data: ArrayDataset, step: TrainStep, batch_size: int, seed: int
) -> TrainState:
    """``ts`` with BatchNorm statistics that match its weights (the same
    examples every epoch, drawn from ``seed``)."""
    state = recompute_batch_norm(
        ts.model, ts.model_state, data.inputs, batch_size=batch_size,
        examples=step.batch_norm_examples, seed=seed, precision=step.precision,
    )  # fmt: skip
    # (is_leaf: the state of a model zoo did not build may be None)
    return eqx.tree_at(lambda t: t.model_state, ts, state, is_leaf=lambda x: x is None)


def _checkpointer(
    checkpoint_dir: str | os.PathLike[str] | Checkpointer | None,
    callbacks: Sequence[Callback] | None,
    resume: bool,
) -> Checkpointer | None:
    """The run's one Checkpointer, its folder checked: writable, and holding no
    earlier run unless resuming (nothing of an earlier run is ever deleted)."""
    if any(isinstance(cb, Checkpointer) for cb in callbacks or ()):
        raise ValueError(
            "Pass the Checkpointer as fit(..., checkpoint_dir=Checkpointer(...)), "
            "not in callbacks: fit resumes from it and runs it last."
        )
    if checkpoint_dir is None:
        if resume:
            raise ValueError("resume=True needs a checkpoint_dir to resume from.")
        return None
    checkpointer = (
        checkpoint_dir
        if isinstance(checkpoint_dir, Checkpointer)
        else Checkpointer(checkpoint_dir)
    )
    ensure_writable(checkpointer.directory)
    if not resume and latest_checkpoint(checkpointer.directory) is not None:
        raise CheckpointError(
            f"{checkpointer.directory} already holds checkpoints of an earlier run. "
            "Continue that run with resume=True, or give another checkpoint_dir "
            "(nothing was changed)."
        )
    return checkpointer


def _example_chunk(
    data: ArrayDataset, batch: int, feed: DeviceFeed, steps: int
) -> AnyChunk:
    """A chunk of zeros as the host feed gives: ``steps`` batches of ``batch``."""
    targets = data.targets
    chunk = Chunk(
        np.zeros((steps, batch, *data.inputs.shape[1:]), data.inputs.dtype),
        np.zeros((steps, batch), np.int32),
        np.zeros((steps, batch), np.bool_),
        None
        if targets is None
        else np.zeros((steps, batch, targets.shape[1]), targets.dtype),
    )
    return feed.augmented(feed.put(chunk), 0)


def _example_rows(feed: ResidentFeed, batch: int, steps: int) -> AnyChunk:
    """A chunk as ``feed`` gives, naming row 0 ``steps x batch`` times."""
    rows = jnp.zeros((steps, batch), jnp.int32)
    chunk = IndexedChunk(feed.inputs, feed.labels, rows, feed.targets)
    return feed.augmented(chunk, 0)


def _compile(
    step_fn: TrainStep,
    ts: TrainState,
    example: Callable[[int], AnyChunk],
    spe: int,
    k: int,
) -> tuple[dict[int, Program], float]:
    """Compile ``step_fn`` ahead of time for every chunk length of an epoch, timed.

    Chunks have ``k`` steps, and the last chunk of an epoch ``spe % k`` if that
    is not zero (see [`DeviceFeed`][zoo.train.DeviceFeed]). ``example(steps)``
    is a chunk of ``steps`` batches as the feed gives them.
    """
    start = time.perf_counter()
    programs: dict[int, Program] = {}
    for length in sorted(chunk_lengths(k, spe)):
        programs[length] = step_fn.lower(ts, example(length)).compile()
    return programs, time.perf_counter() - start


def _check_arguments(
    model: AbstractModel | eqx.Module,
    state: eqx.nn.State | None,
    train_data: ArrayDataset,
    test_data: ArrayDataset | None,
    epochs: int,
    batch_size: int,
    steps_per_call: int | None,
) -> None:
    for name, value in [("epochs", epochs), ("batch_size", batch_size)] + (
        [("steps_per_call", steps_per_call)] if steps_per_call is not None else []
    ):
        if not isinstance(value, int | np.integer) or isinstance(value, bool):
            raise ValueError(f"{name} must be an int >= 1, got {value!r}.")
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}.")
    if batch_size > len(train_data):
        raise ValueError(
            f"batch_size {batch_size} exceeds the {len(train_data)} training examples."
        )
    for name, data in [("train_data", train_data), ("test_data", test_data)]:
        if data is not None:
            check_labels(model, data, name, state)
            # zoo's one rule, checked on shapes alone: nothing runs or compiles.
            jax.eval_shape(
                lambda x: model_inputs(model, x, batched=True), data.inputs[:1]
            )
