"""``fit``: epochs over a Grain pipeline, built from zoo's public training parts.

The parts are the same a user writes a loop with (see the training guide):
[`TrainState`][zoo.train.TrainState], [`make_train_step`][zoo.train.make_train_step],
[`DeviceFeed`][zoo.train.DeviceFeed], [`evaluate`][zoo.train.evaluate] and
checkpoints; everything else ``fit`` does is a [`Callback`][zoo.train.Callback].
"""

import functools
import os
import time
from collections.abc import Callable, Mapping, Sequence

import equinox as eqx
import grain
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from ..data import ArrayDataset, Batch, Chunk, steps_per_epoch, train_pipeline
from ..models import AbstractModel
from . import _tuning
from ._callbacks import (
    Callback,
    Checkpointer,
    EpochLogger,
    FiniteLossGuard,
    HistoryWriter,
    ProgressBar,
    StopTraining,
)
from ._checkpoint import latest_checkpoint, load_checkpoint
from ._evaluate import EVAL_BATCH_SIZE, evaluate
from ._events import ChunkEnd, EpochEnd, EpochRecord, FitResult, RunInfo
from ._feed import BatchIterator, DeviceFeed
from ._metrics import LossFn, Metrics, softmax_cross_entropy
from ._parallel import check_batch_size, process_shard, replicate, shard_batch
from ._state import FilterSpec, TrainState
from ._step import TrainStep, make_train_step

Program = Callable[[TrainState, Chunk], tuple[TrainState, Metrics]]

FIT_PREFETCH = 0
"""Batches ``fit``'s pipeline prepares ahead in a background thread: none. The
device runs each chunk asynchronously while the loop gathers the next, so a
thread adds only hand-offs (the MLP's epoch through ``fit``: 1.005-1.028 of the
same steps on the device without it, 1.051-1.064 with 2 ahead; 2-core CPU)."""


def fit(
    model: AbstractModel,
    state: eqx.nn.State,
    train_data: ArrayDataset,
    *,
    optimizer: optax.GradientTransformation,
    epochs: int,
    batch_size: int = 128,
    seed: int = 0,
    test_data: ArrayDataset | None = None,
    loss: LossFn = softmax_cross_entropy,
    callbacks: Sequence[Callback] = (),
    steps_per_call: int | None = None,
    eval_batch_size: int = EVAL_BATCH_SIZE,
    checkpoint_dir: str | os.PathLike[str] | None = None,
    checkpoint_every: int | None = None,
    resume: bool = False,
    history_path: str | os.PathLike[str] | None = None,
    run_config: Mapping[str, object] | None = None,
    progress: bool = True,
    log: Callable[[str], object] | None = print,
    check_finite: bool = True,
    mesh: Mesh | None = None,
    augment: grain.transforms.RandomMap | None = None,
    train_step: TrainStep | None = None,
    trainable: FilterSpec = True,
) -> FitResult:
    """Train ``model`` for ``epochs`` epochs over a shuffled Grain pipeline.

    Batches reach the device in chunks of ``steps_per_call`` (the next chunk is
    copied while the current one trains); each chunk is one compiled call,
    compiled before the first epoch (``compile_seconds``). After each epoch
    the model is evaluated exactly on ``test_data`` and the callbacks run.

    Args:
        model: the model to train (from ``zoo.create_model`` or a constructor).
        state: its state (empty for stateless models).
        train_data: the training set; images may stay ``uint8``.
        optimizer: any optax transformation.
        epochs: passes over ``train_data`` (>= 1); the remainder of each epoch
            is dropped so every step sees a full batch.
        batch_size: examples per optimiser step (the global batch on a mesh).
        seed: seeds the data order, the augmentation and the dropout keys.
        test_data: evaluated exactly (every example once) after each epoch.
        loss: per-example loss ``(logits, labels) -> (B,)``; softmax
            cross-entropy by default.
        callbacks: your own [`Callback`][zoo.train.Callback]s, run after the
            built-in ones that the arguments below switch on.
        steps_per_call: optimiser steps per device call; by default enough for
            the call's work to dwarf its fixed cost, and for steps unrolled
            around convolutions few enough to compile quickly (see the
            benchmarks page).
        eval_batch_size: examples per evaluation call (see ``evaluate``).
        checkpoint_dir: save a checkpoint here after each epoch
            ([`Checkpointer`][zoo.train.Checkpointer]); checked writable at once.
        checkpoint_every: also save every this many steps.
        resume: continue from the latest checkpoint in ``checkpoint_dir`` (if
            there is one), bitwise as if never stopped.
        history_path: write the history as JSON here after each epoch
            ([`HistoryWriter`][zoo.train.HistoryWriter]).
        run_config: JSON facts about the run, kept with the history and checkpoints.
        progress: show a progress bar ([`ProgressBar`][zoo.train.ProgressBar]).
        log: called with one line per epoch ([`EpochLogger`][zoo.train.EpochLogger]);
            ``None`` for silence.
        check_finite: stop on a NaN or infinite loss
            ([`FiniteLossGuard`][zoo.train.FiniteLossGuard]).
        mesh: train data-parallel on this mesh (from
            [`data_mesh`][zoo.train.data_mesh]); after
            ``jax.distributed.initialize`` every process calls ``fit`` alike,
            reads its share of each batch, and only process 0 logs and writes.
        augment: a random transformation of each training batch, e.g.
            ``zoo.data.RandomShift(2)``, seeded from ``seed`` and the step.
        train_step: a step from [`make_train_step`][zoo.train.make_train_step]
            to use instead of ``make_train_step(optimizer, loss=loss)``.
        trainable: the arrays to train (an Equinox filter spec over ``model``,
            e.g. [`zoo.head_only(model)`][zoo.head_only]); the others stay as
            they are. ``True`` (default): all. A ``train_step`` passed in must
            have been made with the same ``trainable``.

    Returns:
        The final train state, the history, the compile time and why training
        stopped early (if a callback raised [`StopTraining`][zoo.train.StopTraining]).

    Raises:
        ValueError: bad arguments (before any work is done).
        zoo.train.CheckpointError: an unwritable ``checkpoint_dir``, or a
            checkpoint that does not match this model on resume.
        NonFiniteLossError: a NaN or infinite loss; the message names the epoch
            and steps, and the last checkpoint is left as it was.
    """
    _check_arguments(model, train_data, test_data, epochs, batch_size, steps_per_call)
    if resume and checkpoint_dir is None:
        raise ValueError("resume=True needs a checkpoint_dir to resume from.")
    if mesh is not None:
        check_batch_size(mesh, batch_size)
    main = jax.process_index() == 0  # the one process that logs and writes
    log = log if main else None
    spe = steps_per_epoch(len(train_data), batch_size, drop_remainder=True)
    k = steps_per_call or _tuning.steps_per_call(
        model, state, train_data.inputs[0], batch_size=batch_size,
        steps_per_epoch=spe, loss=loss,
    )  # fmt: skip
    cbs = _builtin_callbacks(
        main, check_finite, progress, log, checkpoint_dir, checkpoint_every,
        history_path, run_config,
    ) + list(callbacks)  # fmt: skip

    ts = TrainState.init(
        model, state, optimizer, key=jax.random.key(seed), trainable=trainable
    )
    local_batch = batch_size // jax.process_count()  # this process's rows
    batches = iter(
        train_pipeline(
            train_data, batch_size=local_batch, seed=seed, num_epochs=epochs,
            shard=None if mesh is None else process_shard(), augment=augment,
            prefetch=FIT_PREFETCH,
        )
    )  # fmt: skip
    history: list[EpochRecord] = []
    partial = Metrics.zero()
    if resume and checkpoint_dir is not None:
        ts, history, partial = _resume(checkpoint_dir, ts, batches, spe, log)
    step = int(ts.step)
    put = jax.device_put
    if mesh is not None:
        ts, partial = replicate((ts, partial), mesh)
        put = functools.partial(shard_batch, mesh=mesh, batch_axis=1)
    feed = DeviceFeed(
        batches, steps_per_call=k, steps_per_epoch=spe, start_step=step, put=put
    )
    if step >= epochs * spe:
        return FitResult(ts, history, 0.0)
    step_fn = train_step or make_train_step(optimizer, loss=loss, trainable=trainable)
    example = Batch(
        np.zeros((local_batch, *train_data.inputs.shape[1:]), train_data.inputs.dtype),
        np.zeros(local_batch, np.int32),
        np.zeros(local_batch, np.bool_),
    )
    programs, compile_seconds = _compile(step_fn, ts, example, spe, k, put)
    run = RunInfo(epochs, spe, batch_size, k, step, compile_seconds, main)
    for cb in cbs:
        cb.on_train_start(run, ts)
    stop_reason = None
    try:
        while step < run.total_steps:
            epoch, epoch_start, metrics = step // spe, step, partial
            partial, t0 = Metrics.zero(), time.perf_counter()
            while step < (epoch + 1) * spe:
                chunk = next(feed)
                settled, settled_step = metrics, step
                ts, chunk_metrics = programs[chunk.steps](ts, chunk)
                step, metrics = step + chunk.steps, metrics + chunk_metrics
                event = ChunkEnd(
                    run, epoch, epoch_start, step, ts, metrics, settled,
                    settled_step, time.perf_counter() - t0, feed.data_state,
                )  # fmt: skip
                for cb in cbs:
                    cb.on_chunk_end(event)
            train = metrics.summary()  # waits for the epoch's last step
            seconds = time.perf_counter() - t0
            test = {} if test_data is None else evaluate(
                ts.model, ts.model_state, test_data, batch_size=eval_batch_size,
                mesh=mesh, loss=loss,
            )  # fmt: skip
            record = EpochRecord(
                epoch, seconds, train["loss"], train["accuracy"],
                (step - epoch_start) * batch_size / seconds,
                test.get("loss"), test.get("accuracy"),
            )  # fmt: skip
            history.append(record)
            event = EpochEnd(run, record, tuple(history), step, ts, feed.data_state)
            for cb in cbs:
                cb.on_epoch_end(event)
    except StopTraining as stop:
        stop_reason = str(stop) or "stopped by a callback"
    result = FitResult(ts, history, compile_seconds, stop_reason)
    for cb in cbs:
        cb.on_train_end(result)
    return result


def _builtin_callbacks(
    main: bool,
    check_finite: bool,
    progress: bool,
    log: Callable[[str], object] | None,
    checkpoint_dir: str | os.PathLike[str] | None,
    checkpoint_every: int | None,
    history_path: str | os.PathLike[str] | None,
    run_config: Mapping[str, object] | None,
) -> list[Callback]:
    """The callbacks ``fit``'s arguments switch on, in the order they run.

    The NaN guard runs on every process and first, so no checkpoint is written
    after a non-finite loss; the rest run on the main process only.
    """
    every = checkpoint_every
    cbs: list[Callback] = [FiniteLossGuard(check_every=every)] if check_finite else []
    if not main:
        return cbs
    cbs += [ProgressBar()] if progress else []
    cbs += [EpochLogger(log)] if log is not None else []
    if checkpoint_dir is not None:
        cbs.append(Checkpointer(checkpoint_dir, every=every, config=run_config))
    if history_path is not None:
        cbs.append(HistoryWriter(history_path, config=run_config))
    return cbs


def _compile(
    step_fn: TrainStep,
    ts: TrainState,
    example: Batch,
    spe: int,
    k: int,
    put: Callable[[Chunk], Chunk],
) -> tuple[dict[int, Program], float]:
    """Compile ``step_fn`` ahead of time for every chunk length of an epoch, timed.

    Chunks have ``k`` steps, and the last chunk of an epoch ``spe % k`` if that
    is not zero (see [`DeviceFeed`][zoo.train.DeviceFeed]). ``example`` is a
    host batch of this process's shape and dtypes.
    """
    start = time.perf_counter()
    lengths = {min(k, spe)} | ({spe % k} if spe % k else set())
    programs: dict[int, Program] = {}
    for length in sorted(lengths):
        chunk = Chunk(*(np.zeros((length, *x.shape), x.dtype) for x in example))
        programs[length] = step_fn.lower(ts, put(chunk)).compile()
    return programs, time.perf_counter() - start


def _resume(
    directory: str | os.PathLike[str],
    ts: TrainState,
    batches: BatchIterator,
    steps_per_epoch: int,
    log: Callable[[str], object] | None,
) -> tuple[TrainState, list[EpochRecord], Metrics]:
    """The state, history and partial-epoch metrics to continue a run from.

    A checkpoint that ``fit`` did not write (one saved by a custom loop) has
    no history or partial metrics: training continues from its step and data
    position (or the data position of its step), and the current epoch's
    training metrics cover only the steps after it.
    """
    if latest_checkpoint(directory) is None:
        return ts, [], Metrics.zero()
    ckpt = load_checkpoint(directory, like=ts)
    loaded = ckpt.train_state
    if loaded.opt_state is None:  # saved without optimiser state
        loaded = TrainState(
            loaded.model, loaded.model_state, ts.opt_state, loaded.key, loaded.step
        )
    step = int(loaded.step)
    meta = ckpt.metadata
    history = [EpochRecord.from_json(r) for r in meta.get("history", [])]
    partial = Metrics.zero()
    if "partial_epoch" in meta:
        loss_sum, correct, examples = meta["partial_epoch"]
        partial = Metrics(
            jnp.float32(loss_sum), jnp.int32(correct), jnp.int32(examples)
        )
    batches.set_state(ckpt.data_state or {"next_index": step})
    if log is not None:
        epoch = step // steps_per_epoch + 1
        log(f"resumed from step {step} (epoch {epoch}) in {directory}")
    return loaded, history, partial


def _check_arguments(
    model: AbstractModel,
    train_data: ArrayDataset,
    test_data: ArrayDataset | None,
    epochs: int,
    batch_size: int,
    steps_per_call: int | None,
) -> None:
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}.")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    if batch_size > len(train_data):
        raise ValueError(
            f"batch_size {batch_size} exceeds the {len(train_data)} training examples."
        )
    if steps_per_call is not None and steps_per_call < 1:
        raise ValueError(f"steps_per_call must be >= 1, got {steps_per_call}.")
    for name, data in [("train_data", train_data), ("test_data", test_data)]:
        if data is None:
            continue
        labels = np.asarray(data.labels)
        if labels.size and (labels.min() < 0 or labels.max() >= model.out_size):
            raise ValueError(
                f"{name} has labels in [{labels.min()}, {labels.max()}] but the model "
                f"has {model.out_size} outputs: labels must be in [0, "
                f"{model.out_size})."
            )
