"""A callback that writes TensorBoard event files (needs the ``tensorboard`` extra)."""

import os
from typing import Any

from .._files import user_path
from ._callbacks import Callback, _host_float
from ._events import ChunkEnd, EpochEnd, FitResult, RunInfo
from ._state import TrainState


class TensorBoardWriter(Callback):
    """Scalars for TensorBoard: ``train/loss`` as training goes, and per epoch
    ``epoch/train_loss``, ``epoch/train_accuracy``, ``epoch/test_loss``,
    ``epoch/test_accuracy`` and ``epoch/examples_per_second``, against the step.

    The running loss is that of the chunks already done, read at most every
    ``every_seconds``, so writing it never makes the device wait. Install the
    writer with ``pip install "typed-zoo[tensorboard]"`` (tensorboardX), and
    look at the run with ``tensorboard --logdir LOGDIR``.

    Args:
        logdir: the folder for the event files (created if needed).
        every_seconds: seconds between points of the running training loss.

    Raises:
        ModuleNotFoundError: tensorboardX is not installed (the message says
            what to install).
    """

    main_process_only = True

    def __init__(self, logdir: str | os.PathLike[str], every_seconds: float = 1.0):
        try:
            from tensorboardX import SummaryWriter
        except ModuleNotFoundError as error:
            raise ModuleNotFoundError(
                "TensorBoardWriter needs tensorboardX: pip install "
                '"typed-zoo[tensorboard]" (or pip install tensorboardX).',
                name=error.name,
            ) from error
        self.logdir = os.fspath(user_path(logdir))
        self.every_seconds = every_seconds
        self._writer_class = SummaryWriter
        self.writer: Any = None
        self.last_point = -float("inf")

    def on_train_start(self, run: RunInfo, train_state: TrainState) -> None:
        if run.main_process:
            self.writer = self._writer_class(self.logdir)

    def on_chunk_end(self, event: ChunkEnd) -> None:
        seen = (event.settled_step - event.epoch_start_step) * event.run.batch_size
        if self.writer is None or seen == 0:
            return
        if event.seconds - self.last_point < self.every_seconds:
            return
        self.last_point = event.seconds
        loss = _host_float(event.settled_metrics.loss_sum) / seen
        self.writer.add_scalar("train/loss", loss, event.settled_step)

    def on_epoch_end(self, event: EpochEnd) -> None:
        self.last_point = -float("inf")
        if self.writer is None:
            return
        for name, value in event.record.to_json().items():
            if name != "epoch":
                self.writer.add_scalar(f"epoch/{name}", value, event.step)
        self.writer.flush()

    def on_train_end(self, result: FitResult) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
