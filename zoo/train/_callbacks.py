"""Callbacks: what a training loop does besides training, each in its own object.

A callback subclasses [`Callback`][zoo.train.Callback] and overrides the hooks it
needs. [`fit`][zoo.train.fit] calls them in order: when training starts, after
each chunk of steps is handed to the device, after each epoch (evaluated), and
at the end. None of them makes the device wait unless it must read a result:
the loss checks and the progress bar read the sums of chunks already done.
"""

import csv
import dataclasses
import io
import json
import math
import os
import pathlib
import time
import uuid
from collections.abc import Callable, Mapping
from typing import ClassVar

import numpy as np
from tqdm.auto import tqdm

from .._files import atomic_write, user_path
from ._checkpoint import save_checkpoint
from ._checkpoint_dir import os_reason
from ._events import (
    BATCH_ORDER_KEY,
    ChunkEnd,
    EpochEnd,
    EpochRecord,
    FitResult,
    RunInfo,
)
from ._metrics import Metrics
from ._parallel import local_copy
from ._state import TrainState


class StopTraining(Exception):
    """Raise it from a callback to end training cleanly after the current event.

    ``fit`` then calls every callback's ``on_train_end`` and returns the result
    so far, with the message as ``stop_reason``.
    """


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN or infinite loss; the message names the steps."""


class Callback:
    """Base class of training callbacks: override the hooks you need.

    Example (stop when the test accuracy has not improved for two epochs):
        >>> class EarlyStopping(Callback):
        ...     def __init__(self, patience: int = 2):
        ...         self.patience, self.best, self.bad = patience, -1.0, 0
        ...     def on_epoch_end(self, event: EpochEnd) -> None:
        ...         accuracy = event.record.test_accuracy or 0.0
        ...         if accuracy > self.best:
        ...             self.best, self.bad = accuracy, 0
        ...         else:
        ...             self.bad += 1
        ...         if self.bad >= self.patience:
        ...             raise StopTraining(f"no gain in {self.bad} epochs")

    ``main_process_only`` callbacks (those that write files or print) run on
    process 0 only when training spans several processes.
    """

    main_process_only: ClassVar[bool] = False

    def on_train_start(self, run: RunInfo, train_state: TrainState) -> None:
        """Before the first step (after compilation)."""

    def on_chunk_end(self, event: ChunkEnd) -> None:
        """After a chunk of steps is handed to the device."""

    def on_epoch_end(self, event: EpochEnd) -> None:
        """After an epoch is trained and evaluated."""

    def on_train_end(self, result: FitResult) -> None:
        """After the last epoch, or after a callback stopped training."""


def _host_float(value: np.ndarray | object) -> float:
    """A replicated device scalar read on this process (waits for it)."""
    return float(np.asarray(local_copy(value)))


def _crossed(event: ChunkEnd, every: int | None) -> bool:
    """Whether this chunk ended at or first after a multiple of ``every`` steps."""
    if every is None:
        return False
    return event.settled_step // every < event.step // every


class FiniteLossGuard(Callback):
    """Stop with [`NonFiniteLossError`][zoo.train.NonFiniteLossError] on a NaN/inf loss.

    Every ``every_seconds`` it reads the epoch's loss summed over the chunks
    already done (the device keeps working); a NaN or inf in any step stays in
    the sum, so no step escapes. It checks the whole epoch at its end. The
    error names the epoch and the range of steps since the last check. (A
    [`Checkpointer`][zoo.train.Checkpointer] checks the loss itself before it
    saves, so no checkpoint holds a diverged model.)

    Args:
        every_seconds: seconds between reads of the settled loss (0: every chunk).
    """

    def __init__(self, every_seconds: float = 0.5):
        self.every_seconds = every_seconds
        self.checked_step = 0
        self.last_check = 0.0

    def on_train_start(self, run: RunInfo, train_state: TrainState) -> None:
        self.checked_step = run.start_step
        self.last_check = time.perf_counter()

    def _check(self, metrics: Metrics, epoch: int, upto: int) -> None:
        self._check_value(_host_float(metrics.loss_sum), epoch, upto)

    def _check_value(self, loss: float, epoch: int, upto: int) -> None:
        check_finite_loss(loss, epoch, self.checked_step, upto)
        self.checked_step = upto

    def on_chunk_end(self, event: ChunkEnd) -> None:
        now = time.perf_counter()
        if now - self.last_check >= self.every_seconds:
            self._check(event.settled_metrics, event.epoch, event.settled_step)
            self.last_check = now

    def on_epoch_end(self, event: EpochEnd) -> None:
        self._check_value(event.record.train_loss, event.record.epoch, event.step)


def check_finite_loss(loss: float, epoch: int, after: int, upto: int) -> None:
    """Raise [`NonFiniteLossError`][zoo.train.NonFiniteLossError] for a NaN/inf
    ``loss`` seen in steps ``after + 1`` to ``upto`` of ``epoch`` (from 0)."""
    if not math.isfinite(loss):
        raise NonFiniteLossError(
            f"Loss became {loss} in epoch {epoch + 1} within steps "
            f"{after + 1}-{upto}. Training stopped; the last checkpoint (if any) "
            "is from before. Lower the learning rate, check the inputs for "
            "NaN/inf, or clip gradients (optax.clip_by_global_norm)."
        )


class ProgressBar(Callback):
    """A tqdm bar per epoch, with the running loss and examples per second.

    The loss shown is that of the chunks already done, read every
    ``every_seconds``, so the bar never makes the device wait.
    """

    main_process_only = True

    def __init__(self, every_seconds: float = 0.5):
        self.every_seconds = every_seconds
        self.bar: tqdm | None = None
        self.last_step = 0
        self.last_update = 0.0

    def on_train_start(self, run: RunInfo, train_state: TrainState) -> None:
        self.last_step = run.start_step

    def on_chunk_end(self, event: ChunkEnd) -> None:
        run = event.run
        if self.bar is None:
            self.bar = tqdm(
                total=run.steps_per_epoch,
                initial=self.last_step - event.epoch * run.steps_per_epoch,
                desc=f"epoch {event.epoch + 1}/{run.epochs}",
                unit="step",
                leave=False,
                dynamic_ncols=True,
            )
            self.last_update = time.perf_counter()
        self.bar.update(event.step - self.last_step)
        self.last_step = event.step
        now = time.perf_counter()
        seen = (event.settled_step - event.epoch_start_step) * run.batch_size
        if now - self.last_update >= self.every_seconds and seen > 0:
            loss = _host_float(event.settled_metrics.loss_sum) / seen
            rate = (event.step - event.epoch_start_step) * run.batch_size
            self.bar.set_postfix(
                loss=f"{loss:.4f}", ex_per_s=f"{rate / event.seconds:,.0f}"
            )
            self.last_update = now

    def on_epoch_end(self, event: EpochEnd) -> None:
        self.close()

    def on_train_end(self, result: FitResult) -> None:
        self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def format_epoch(record: EpochRecord, epochs: int) -> str:
    """One line per epoch, as the JAX MNIST tutorial prints it, plus throughput."""
    line = (
        f"epoch {record.epoch + 1}/{epochs} in {record.train_seconds:.2f} s"
        f" | train loss {record.train_loss:.4f}"
        f" | train acc {100 * record.train_accuracy:.2f}%"
    )
    if record.test_accuracy is not None:
        line += f" | test acc {100 * record.test_accuracy:.2f}%"
    return line + f" | {record.examples_per_second:,.0f} ex/s"


class EpochLogger(Callback):
    """Log where the data comes from, then one line per epoch: loss, accuracy
    and throughput, numbered from 1."""

    main_process_only = True

    def __init__(self, log: Callable[[str], object] = print):
        self.log = log

    def on_train_start(self, run: RunInfo, train_state: TrainState) -> None:
        if run.data_feed:
            self.log(f"data {run.data_feed}")

    def on_epoch_end(self, event: EpochEnd) -> None:
        self.log(format_epoch(event.record, event.run.epochs))


class Checkpointer(Callback):
    """Save the run with [`save_checkpoint`][zoo.train.save_checkpoint].

    At the end of every epoch, and also at the first chunk end at or after each
    multiple of ``every`` steps. A checkpoint holds the train state, the data
    pipeline's position, the history, the epoch's partial metrics and the
    run's batch order (``RunInfo.batch_order``), so ``fit(..., resume=True)``
    continues bitwise where it stopped, and refuses a run of another order.
    It reads the loss before each save and raises
    [`NonFiniteLossError`][zoo.train.NonFiniteLossError] instead of saving a
    diverged model. Give it to ``fit`` as ``checkpoint_dir=``.

    Args:
        directory: the run's checkpoint directory (``fit`` creates it and
            checks it writable before any work).
        every: also save every this many steps; ``None``: at epoch ends only.
        keep: versions to keep.
        config: JSON facts about the run, stored with each version.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        every: int | None = None,
        keep: int = 2,
        config: Mapping[str, object] | None = None,
    ):
        self.directory = user_path(directory)  # checked by fit, before any work
        self.every = every
        self.keep = keep
        self.config = dict(config or {})
        self.history: tuple[EpochRecord, ...] = ()
        self.batch_order: dict[str, object] = {}
        if every is not None and every < 1:
            raise ValueError(f"Checkpointer every must be >= 1 or None, got {every}.")
        if keep < 1:
            raise ValueError(f"Checkpointer keep must be >= 1, got {keep}.")

    main_process_only = True

    def on_train_start(self, run: RunInfo, train_state: TrainState) -> None:
        self.batch_order = dict(run.batch_order)

    def _save(
        self, ts: TrainState, data_state: object, partial: Metrics, step: int
    ) -> None:
        save_checkpoint(
            self.directory,
            local_copy(ts),
            data_state=data_state,  # pyright: ignore[reportArgumentType]
            metadata={
                "history": [r.to_json() for r in self.history],
                "partial_epoch": [np.asarray(local_copy(v)).item() for v in partial],
                "config": self.config,
                BATCH_ORDER_KEY: self.batch_order,
            },
            keep=self.keep,
        )

    def on_chunk_end(self, event: ChunkEnd) -> None:
        at_epoch_end = event.step % event.run.steps_per_epoch == 0
        if _crossed(event, self.every) and not at_epoch_end:
            loss = _host_float(event.epoch_metrics.loss_sum)
            check_finite_loss(loss, event.epoch, event.epoch_start_step, event.step)
            self._save(
                event.train_state, event.data_state, event.epoch_metrics, event.step
            )

    def on_epoch_end(self, event: EpochEnd) -> None:
        record = event.record
        start = event.step - event.run.steps_per_epoch
        check_finite_loss(record.train_loss, record.epoch, start, event.step)
        self.history = event.history
        self._save(event.train_state, event.data_state, Metrics.zero(), event.step)


class HistoryWriter(Callback):
    """Write ``{"epochs": [...], "compile_seconds": ..., "config": ...}`` as JSON.

    Rewritten atomically after every epoch, so it is whole at any moment.

    Args:
        path: the JSON file (its folder is created).
        config: JSON facts about the run, stored with the history.
    """

    def __init__(
        self, path: str | os.PathLike[str], config: Mapping[str, object] | None = None
    ):
        self.path = _writable_file(path)
        self.config = dict(config or {})
        self.compile_seconds = 0.0

    main_process_only = True

    def on_train_start(self, run: RunInfo, train_state: TrainState) -> None:
        self.compile_seconds = run.compile_seconds

    def on_epoch_end(self, event: EpochEnd) -> None:
        write_json(
            self.path,
            {
                "epochs": [r.to_json() for r in event.history],
                "compile_seconds": self.compile_seconds,
                "config": self.config,
            },
        )


class CSVLogger(Callback):
    """One CSV row per epoch: the [`EpochRecord`][zoo.train.EpochRecord] fields.

    The file is rewritten atomically after each epoch (a header, then every
    epoch so far); empty cells where a run has no test set.
    """

    main_process_only = True

    def __init__(self, path: str | os.PathLike[str]):
        self.path = _writable_file(path)

    def on_epoch_end(self, event: EpochEnd) -> None:
        names = [f.name for f in dataclasses.fields(EpochRecord)]
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=names, lineterminator="\n")
        writer.writeheader()
        for record in event.history:
            writer.writerow(record.to_json())
        atomic_write(self.path, text.getvalue().encode())


def default_callbacks(
    *, progress: bool = True, log: Callable[[str], object] | None = print
) -> list[Callback]:
    """What ``fit`` runs when given no ``callbacks``: the NaN guard, a progress
    bar (``progress``) and one line per epoch to ``log`` (``None``: none).

    Extend it to keep them: ``callbacks=[*default_callbacks(), CSVLogger(p)]``.
    """
    cbs: list[Callback] = [FiniteLossGuard()]
    cbs += [ProgressBar()] if progress else []
    cbs += [EpochLogger(log)] if log is not None else []
    return cbs


def write_json(path: pathlib.Path, payload: object) -> None:
    """Write JSON atomically (see ``zoo._files.atomic_write``)."""
    atomic_write(path, json.dumps(payload, indent=2).encode())


def _writable_file(path: str | os.PathLike[str]) -> pathlib.Path:
    """``path`` as a file this process can write, checked now (its folder is
    created), so a bad path fails before training, naming the file."""
    path = user_path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a directory; give a file name.")
    probe = path.parent / f".write-test-{uuid.uuid4().hex}.tmp"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise ValueError(
            f"Cannot write {path}: {os_reason(error)}. Choose a file in a folder "
            "you can write to."
        ) from None
    return path
