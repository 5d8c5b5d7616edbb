"""``fit``: epochs over a Grain pipeline, with progress, history and checkpoints."""

import dataclasses
import json
import math
import os
import pathlib
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any, cast

import equinox as eqx
import grain
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh
from jaxtyping import PRNGKeyArray
from tqdm.auto import tqdm

from ..data import ArrayDataset, eval_pipeline, steps_per_epoch, train_pipeline
from ..models import AbstractModel
from ._checkpoint import (
    ensure_writable,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from ._metrics import Metrics
from ._parallel import (
    check_batch_size,
    local_copy,
    process_shard,
    replicate,
    shard_batch,
)
from ._step import TrainStep, eval_step, make_train_step, step_cost


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN or infinite loss; the message names the step."""


@dataclasses.dataclass
class FitResult:
    """What [`fit`][zoo.train.fit] returns."""

    model: AbstractModel
    state: eqx.nn.State
    opt_state: optax.OptState
    history: list[dict[str, Any]]
    """One dict per epoch: ``epoch``, ``train_seconds``, ``train_loss``,
    ``train_accuracy``, ``test_loss``, ``test_accuracy``, ``examples_per_second``."""
    compile_seconds: float
    step: int


def evaluate(
    model: AbstractModel,
    state: eqx.nn.State,
    dataset: ArrayDataset,
    *,
    batch_size: int = 1000,
    mesh: Mesh | None = None,
) -> dict[str, float]:
    """Exact loss and accuracy of ``model`` (inference mode) over all of ``dataset``.

    Every example counts once: the last batch is padded and the padding masked.

    Args:
        model: the model.
        state: its state.
        dataset: the examples.
        batch_size: examples per evaluation step (rounded up to a multiple of
            the mesh's devices).
        mesh: evaluate data-parallel on this mesh (see
            [`data_mesh`][zoo.train.data_mesh]); ``model`` and ``state`` must
            be replicated on it. Across processes each one reads its share
            of ``dataset`` and all get the same totals.

    Returns:
        ``{"loss": ..., "accuracy": ..., "count": len(dataset)}``.
    """
    total = Metrics.zero()
    if mesh is None:
        for batch in eval_pipeline(dataset, batch_size=batch_size):
            total = total + eval_step(model, state, batch)
        return total.summary()
    devices = mesh.devices.size
    global_batch = devices * math.ceil(batch_size / devices)
    local_batch = global_batch // jax.process_count()
    pipeline = eval_pipeline(dataset, batch_size=local_batch, shard=process_shard())
    for batch in pipeline:
        total = total + eval_step(model, state, shard_batch(batch, mesh))
    return total.summary()


FLOPS_PER_CALL = 4e9
"""Work per device call of unrolled steps: makes Python's per-call cost (~1 ms)
small while the compile time, which grows with every unrolled step, stays short."""
ROLLED_FLOPS_PER_CALL = 16e9
"""Work per device call of steps in a rolled loop, whose compile time does not
grow with the steps fused: enough to make the ~2.5 ms each call costs on 2 CPU
cores (dispatch, buffers, idle threads) about 2 % of it."""
MIN_STEPS_PER_CALL = 2
"""Fused even for big models: XLA:CPU runs a lone step of the ``cnn`` preset
15-20 % slower than the same step next to another in one program (144-150 ms
against 122-125 ms per step at batch 128, on 2 cores)."""
MAX_STEPS_PER_CALL = 16
"""Unrolled steps per call at most (compile time)."""
MAX_ROLLED_STEPS_PER_CALL = 64
"""Rolled steps per call at most (the chunk of batches waits on the host)."""
MAX_CHUNK_BYTES = 256 * 2**20
"""Input bytes of one chunk at most (two are alive: the one training and the
next); this bound wins over ``MIN_STEPS_PER_CALL``, never going below 1."""


def default_steps_per_call(
    step_flops: float, *, unrolled: bool = True, batch_bytes: int = 0
) -> int:
    """``fit``'s default ``steps_per_call`` for a step of ``step_flops`` FLOPs.

    Unrolled steps (convolutional models on CPU): about ``FLOPS_PER_CALL`` of
    work per call, within ``[MIN_STEPS_PER_CALL, MAX_STEPS_PER_CALL]``, because
    the compile time grows with the steps fused. Steps in a rolled loop
    (``unrolled=False``): about ``ROLLED_FLOPS_PER_CALL``, within
    ``[MIN_STEPS_PER_CALL, MAX_ROLLED_STEPS_PER_CALL]``. With ``batch_bytes``
    (the input bytes of one batch), a chunk also stays within
    ``MAX_CHUNK_BYTES`` (256 MiB).

    Example:
        >>> default_steps_per_call(4.1e8, unrolled=False)  # the MNIST MLP
        39
        >>> default_steps_per_call(4.1e8, unrolled=False, batch_bytes=2**24)
        16
    """
    per_call, most = (
        (FLOPS_PER_CALL, MAX_STEPS_PER_CALL)
        if unrolled
        else (ROLLED_FLOPS_PER_CALL, MAX_ROLLED_STEPS_PER_CALL)
    )
    steps = max(MIN_STEPS_PER_CALL, min(most, int(per_call // max(step_flops, 1.0))))
    if batch_bytes > 0:
        steps = min(steps, max(1, MAX_CHUNK_BYTES // batch_bytes))
    return steps


def fused_steps(
    model: AbstractModel,
    state: eqx.nn.State,
    example: Any,
    *,
    batch_size: int,
    steps_per_epoch: int,
    requested: int | None = None,
) -> int:
    """The optimiser steps ``fit`` runs per device call.

    ``requested`` (``fit``'s ``steps_per_call``), or by default
    [`default_steps_per_call`][zoo.train.default_steps_per_call] on the
    [`step_cost`][zoo.train.step_cost] of ``model``, rounded down to a divisor
    of ``steps_per_epoch`` ([`chunk_size`][zoo.train.chunk_size]).

    Args:
        model: the model.
        state: its state.
        example: one input example of the training set.
        batch_size: examples per step.
        steps_per_epoch: optimiser steps in one epoch.
        requested: steps per call asked for; ``None`` for the default.
    """
    if requested is None:
        cost = step_cost(model, state, example, batch_size)
        requested = default_steps_per_call(
            cost.flops,
            unrolled=cost.unrolled,
            batch_bytes=np.asarray(example).nbytes * batch_size,
        )
    return chunk_size(steps_per_epoch, requested)


def chunk_size(steps: int, requested: int) -> int:
    """The largest divisor of ``steps`` not above ``requested``.

    Chunks then tile every epoch exactly, so the fused step has one shape and
    compiles once.
    """
    return max(d for d in range(1, min(steps, max(requested, 1)) + 1) if steps % d == 0)


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
    steps_per_call: int | None = None,
    eval_batch_size: int = 1000,
    checkpoint_dir: str | os.PathLike[str] | None = None,
    checkpoint_every: int | None = None,
    resume: bool = False,
    history_path: str | os.PathLike[str] | None = None,
    run_config: dict[str, Any] | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = print,
    train_step: TrainStep | None = None,
    check_finite: bool = True,
    mesh: Mesh | None = None,
    augment: grain.transforms.RandomMap | None = None,
) -> FitResult:
    """Train ``model`` for ``epochs`` epochs over a shuffled Grain pipeline.

    Batches reach the device in chunks of up to ``steps_per_call`` (the next chunk
    is copied while the current one trains), and each chunk is one jitted call.
    Compilation happens before the first epoch and is reported apart
    (``compile_seconds``). After every epoch one line is logged, the history is
    written to ``history_path`` (JSON) and a checkpoint to ``checkpoint_dir``.

    Args:
        model: the model to train (from ``zoo.create_model`` or a constructor).
        state: its state (empty for stateless models).
        train_data: the training set; images may stay ``uint8``.
        optimizer: any optax transformation.
        epochs: number of passes over ``train_data`` (>= 1).
        batch_size: examples per optimiser step; the remainder of each epoch is
            dropped so every step sees a full batch.
        seed: seeds the data order and the dropout keys.
        test_data: evaluated exactly (every example once) after each epoch.
        steps_per_call: optimiser steps fused into one device call. By default
            enough steps for about 16 GFLOP of work per call (XLA's cost
            analysis of one step), up to 64, when they run in a rolled loop;
            and for about 4 GFLOP, from 2 to 16, when they are unrolled
            (convolutional models on CPU, whose compile time grows with the
            steps fused). See
            [`default_steps_per_call`][zoo.train.default_steps_per_call].
        eval_batch_size: batch size for evaluation.
        checkpoint_dir: where to write checkpoints (checked writable up front).
        checkpoint_every: also checkpoint every this many steps (rounded up to a
            whole chunk); by default only at the end of each epoch.
        resume: continue from the latest checkpoint in ``checkpoint_dir``.
        history_path: where to write ``{"epochs": [...], "compile_seconds": ...,
            "config": run_config}`` after every epoch.
        run_config: JSON facts about the run, stored with the history.
        progress: show a tqdm progress bar.
        log: called with one line per epoch (``None`` for silence).
        train_step: a step from ``make_train_step(optimizer)``, e.g. with
            ``max_traces=1`` to guard against recompilation.
        check_finite: stop when the loss becomes NaN or infinite. The epoch's
            running loss is read every half second (from chunks already done,
            so the device never waits), before each checkpoint and at the end
            of each epoch; the error names the range of steps.
        mesh: train data-parallel on this device mesh (from
            [`data_mesh`][zoo.train.data_mesh]): parameters and states are
            replicated, every batch of ``batch_size`` (the global batch, a
            multiple of the mesh's devices) is split over the devices, and XLA
            reduces the gradients; BatchNorm statistics span the global batch.
            After ``jax.distributed.initialize`` every process calls ``fit``
            with the same arguments, reads only its share of each batch, and
            only process 0 logs, writes the history and checkpoints. ``None``:
            one device.
        augment: a random transformation of each training batch, e.g.
            ``zoo.data.RandomShift(2)``; seeded from ``seed`` and the step, so
            runs stay reproducible and resume exactly.

    Returns:
        The trained model, state and optimiser state, the history, the compile
        time and the number of optimiser steps taken.

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
    progress = progress and main
    log = log if main else None
    ckpt_dir = None
    if checkpoint_dir is not None:
        path = pathlib.Path(checkpoint_dir)
        ckpt_dir = ensure_writable(path) if main else path
    history_file = None
    if history_path is not None and main:
        history_file = _writable_file(history_path)

    spe = steps_per_epoch(len(train_data), batch_size, drop_remainder=True)
    k = fused_steps(
        model,
        state,
        train_data[0]["inputs"],
        batch_size=batch_size,
        steps_per_epoch=spe,
        requested=steps_per_call,
    )
    every = None if checkpoint_every is None else k * math.ceil(checkpoint_every / k)
    step_fn = train_step if train_step is not None else make_train_step(optimizer)
    key: PRNGKeyArray = jax.random.key(seed)
    opt_state = optimizer.init(eqx.filter(model, eqx.is_inexact_array))
    step, history, partial = 0, [], Metrics.zero()
    pipeline = train_pipeline(
        train_data,
        batch_size=batch_size if mesh is None else batch_size // jax.process_count(),
        seed=seed,
        num_epochs=epochs,
        shard=None if mesh is None else process_shard(),
        augment=augment,
    )
    iterator = iter(pipeline)
    if resume and ckpt_dir is not None and latest_checkpoint(ckpt_dir) is not None:
        ckpt = load_checkpoint(ckpt_dir, optimizer=optimizer, like=(model, state))
        model, state, key = ckpt.model, ckpt.state, ckpt.key
        opt_state = ckpt.opt_state if ckpt.opt_state is not None else opt_state
        step, history = ckpt.step, list(ckpt.metadata.get("history", []))
        partial = Metrics(*(jnp.asarray(v) for v in ckpt.metadata["partial_epoch"]))
        if ckpt.data_state is not None:
            iterator.set_state(ckpt.data_state)  # pyright: ignore[reportAttributeAccessIssue]
        if log is not None:
            log(f"resumed from step {step} (epoch {step // spe + 1}) in {ckpt_dir}")

    if mesh is not None:
        model, state, opt_state, key, partial = replicate(
            (model, state, opt_state, key, partial), mesh
        )
        chunks = _device_chunks(
            iterator, k, lambda chunk: shard_batch(chunk, mesh, batch_axis=1)
        )
    else:
        chunks = _device_chunks(iterator, k, jax.device_put)
    total_steps = epochs * spe
    if step >= total_steps:
        return FitResult(model, state, opt_state, history, 0.0, step)

    start = time.perf_counter()
    first, first_data_state = next(chunks)
    compiled = (
        cast(Any, step_fn)
        .lower(model, state, opt_state, first, key, jnp.int32(step))
        .compile()
    )
    compile_seconds = time.perf_counter() - start
    pending: tuple[dict[str, jax.Array], dict[str, Any]] | None = (
        first,
        first_data_state,
    )
    data_state = first_data_state

    def save(data_state: dict[str, Any]) -> None:
        if ckpt_dir is None or not main:
            return
        save_checkpoint(
            ckpt_dir,
            model=local_copy(model),
            state=local_copy(state),
            opt_state=local_copy(opt_state),
            step=step,
            key=local_copy(key),
            data_state=data_state,
            metadata={
                "history": history,
                "partial_epoch": [_host(v).item() for v in partial],
                "config": run_config or {},
            },
        )

    while step < total_steps:
        epoch = step // spe
        epoch_start_step = step
        bar = tqdm(
            total=spe,
            initial=step - epoch * spe,
            desc=f"epoch {epoch + 1}/{epochs}",
            unit="step",
            leave=False,
            disable=not progress,
            dynamic_ncols=True,
        )
        epoch_metrics = partial
        checked_step = step  # steps up to here are known to have finite losses
        t0 = last_check = time.perf_counter()
        while step < (epoch + 1) * spe:
            assert pending is not None
            chunk, data_state = pending
            done_before = epoch_metrics  # sums of the chunks already queued
            model, state, opt_state, metrics = compiled(
                model, state, opt_state, chunk, key, jnp.int32(step)
            )
            step += k
            epoch_metrics = epoch_metrics + metrics
            # Copy the next chunk while this one trains.
            pending = next(chunks, None) if step < total_steps else None
            bar.update(k)
            now = time.perf_counter()
            if (check_finite or progress) and now - last_check > 0.5:
                # Every chunk before this one is done or nearly so, so reading
                # their running sum keeps the device busy. A NaN or inf in any
                # step stays in the sum.
                loss_sum = float(_host(done_before.loss_sum))
                if check_finite:
                    _check_finite(loss_sum, epoch, checked_step, step - k)
                checked_step = step - k
                seen = (step - k - epoch_start_step) * batch_size
                if progress and seen > 0:
                    rate = (step - epoch_start_step) * batch_size / (now - t0)
                    bar.set_postfix(
                        loss=f"{loss_sum / seen:.4f}", ex_per_s=f"{rate:,.0f}"
                    )
                last_check = now
            if every is not None and step % every == 0 and step % spe != 0:
                loss_sum = float(_host(epoch_metrics.loss_sum))
                _check_finite(loss_sum, epoch, checked_step, step)
                checked_step = step
                partial = epoch_metrics
                save(data_state)
        _check_finite(float(_host(epoch_metrics.loss_sum)), epoch, checked_step, step)
        train = epoch_metrics.summary()  # waits for the epoch's last step
        seconds = time.perf_counter() - t0
        bar.close()
        record: dict[str, Any] = {
            "epoch": epoch,
            "train_seconds": seconds,
            "train_loss": train["loss"],
            "train_accuracy": train["accuracy"],
            "examples_per_second": (step - epoch_start_step) * batch_size / seconds,
        }
        if test_data is not None:
            test = evaluate(
                model, state, test_data, batch_size=eval_batch_size, mesh=mesh
            )
            record["test_loss"] = test["loss"]
            record["test_accuracy"] = test["accuracy"]
        history.append(record)
        partial = Metrics.zero()
        if log is not None:
            log(format_epoch(record, epochs))
        if history_file is not None:
            write_json(
                history_file,
                {
                    "epochs": history,
                    "compile_seconds": compile_seconds,
                    "config": run_config or {},
                },
            )
        save(data_state)
    return FitResult(model, state, opt_state, history, compile_seconds, step)


def format_epoch(record: dict[str, Any], epochs: int) -> str:
    """One line per epoch, as the JAX MNIST tutorial prints it, plus throughput."""
    line = (
        f"epoch {record['epoch'] + 1}/{epochs} in {record['train_seconds']:.2f} s"
        f" | train loss {record['train_loss']:.4f}"
        f" | train acc {100 * record['train_accuracy']:.2f}%"
    )
    if "test_accuracy" in record:
        line += f" | test acc {100 * record['test_accuracy']:.2f}%"
    return line + f" | {record['examples_per_second']:,.0f} ex/s"


def write_json(path: pathlib.Path, payload: Any) -> None:
    """Write JSON atomically (temporary file in the same folder, then rename)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(payload, f, indent=2)
        os.replace(tmp, path)
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise


def _host(value: jax.Array) -> np.ndarray:
    """A (replicated) device value on the host, from any process."""
    return np.asarray(local_copy(value))


def _device_chunks(
    iterator: Iterator[dict[str, np.ndarray]],
    k: int,
    put: Callable[[dict[str, np.ndarray]], dict[str, jax.Array]],
) -> Iterator[tuple[dict[str, jax.Array], dict[str, Any]]]:
    """Stack ``k`` batches, start their copy to the device(s), note the data state."""
    while True:
        batches = []
        for _ in range(k):
            batch = next(iterator, None)
            if batch is None:
                return
            batches.append(batch)
        stacked = {name: np.stack([b[name] for b in batches]) for name in batches[0]}
        data_state = iterator.get_state()  # pyright: ignore[reportAttributeAccessIssue]
        yield put(stacked), data_state


def _check_finite(loss: float, epoch: int, first_step: int, last_step: int) -> None:
    """Raise if a summed loss is NaN or infinite, naming the epoch and steps.

    ``first_step`` is the last step known to be good; the bad one is in
    ``first_step + 1 .. last_step`` (counting steps from 1).
    """
    if not math.isfinite(loss):
        raise NonFiniteLossError(
            f"Loss became {loss} in epoch {epoch + 1} within steps {first_step + 1}-"
            f"{last_step}. Training stopped; the last checkpoint (if any) is "
            "from before. Lower the learning rate, check the inputs for NaN/inf, "
            "or clip gradients (optax.clip_by_global_norm)."
        )


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


def _writable_file(path: str | os.PathLike[str]) -> pathlib.Path:
    path = pathlib.Path(path)
    if path.is_dir():
        raise ValueError(f"history_path {path} is a directory; give a file name.")
    ensure_writable(path.parent)
    return path
