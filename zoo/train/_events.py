"""What a training loop tells its callbacks: typed records and events."""

import dataclasses
from collections.abc import Mapping
from typing import Any

import equinox as eqx

from ._metrics import Metrics
from ._parallel import local_copy
from ._state import TrainState


@dataclasses.dataclass(frozen=True)
class EpochRecord:
    """What one epoch did; written to JSON as a flat object.

    In Python ``epoch`` counts from 0 (an index); in JSON and CSV (``to_json``:
    ``metrics.json``, ``CSVLogger``, the checkpoint's history) it counts from 1,
    as the logs do ("epoch 1/10").

    Attributes:
        epoch: the epoch, counting from 0.
        train_seconds: wall-clock seconds of its training steps.
        train_loss: mean training loss over its steps.
        train_accuracy: training accuracy over its steps.
        examples_per_second: training examples per second.
        test_loss: loss on the test set after the epoch (``None``: no test set).
        test_accuracy: accuracy on the test set after the epoch.
    """

    epoch: int
    train_seconds: float
    train_loss: float
    train_accuracy: float
    examples_per_second: float
    test_loss: float | None = None
    test_accuracy: float | None = None

    def to_json(self) -> dict[str, int | float]:
        """The record as a JSON object, without the fields that are ``None``;
        its ``"epoch"`` counts from 1, as the logs do."""
        data = {k: v for k, v in dataclasses.asdict(self).items() if v is not None}
        return {**data, "epoch": self.epoch + 1}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "EpochRecord":
        """The record that :meth:`to_json` wrote (unknown keys are ignored);
        ``"epoch"`` counts from 1 there, from 0 in the record."""
        names = {field.name for field in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in names}
        return cls(**{**values, "epoch": int(data["epoch"]) - 1})


BATCH_ORDER_KEY = "batch_order"
"""The metadata entry of ``fit``'s checkpoints that holds ``RunInfo.batch_order``."""


@dataclasses.dataclass(frozen=True)
class RunInfo:
    """Facts of a training run that do not change while it runs.

    Attributes:
        epochs: epochs to train in all.
        steps_per_epoch: optimiser steps per epoch.
        batch_size: examples per step (the global batch on a mesh).
        steps_per_call: optimiser steps fused into one device call.
        start_step: the step the run starts (or resumes) from.
        compile_seconds: time spent compiling the training step.
        main_process: whether this process logs and writes files (process 0).
        data_feed: where the training batches come from, as a phrase ("on the
            device (...)" or "from the host (...)").
        batch_order: what fixes the batches step by step, as JSON: the global
            batch size, the training set's size and labels' SHA-256, and the
            seed (``fit``'s checkpoints store it; a resumed run must match).
    """

    epochs: int
    steps_per_epoch: int
    batch_size: int
    steps_per_call: int
    start_step: int
    compile_seconds: float
    main_process: bool = True
    data_feed: str = ""
    batch_order: Mapping[str, object] = dataclasses.field(
        default_factory=dict, hash=False
    )

    @property
    def total_steps(self) -> int:
        """Optimiser steps of the whole run."""
        return self.epochs * self.steps_per_epoch


@dataclasses.dataclass(frozen=True)
class ChunkEnd:
    """A chunk of steps has been handed to the device (it may still be running).

    Reading ``settled_metrics`` costs no waiting: it sums the chunks before this
    one, which are done or nearly. Reading ``epoch_metrics``,
    ``chunk_metrics`` or the train state waits for this chunk to finish.

    Attributes:
        run: the run's fixed facts.
        epoch: the current epoch, from 0.
        epoch_start_step: the step this epoch started at.
        step: steps taken once this chunk is done.
        train_state: the state after this chunk.
        chunk_metrics: this chunk's summed metrics.
        settled_metrics: the epoch's summed metrics before this chunk.
        settled_step: the step that ``settled_metrics`` reach.
        seconds: wall-clock seconds since the epoch started.
        data_state: the data pipeline's position after this chunk (JSON).
    """

    run: RunInfo
    epoch: int
    epoch_start_step: int
    step: int
    train_state: TrainState
    chunk_metrics: Metrics
    settled_metrics: Metrics
    settled_step: int
    seconds: float
    data_state: dict[str, Any] | None

    @property
    def epoch_metrics(self) -> Metrics:
        """The epoch's summed metrics, this chunk included (waits for it)."""
        return self.settled_metrics + self.chunk_metrics


@dataclasses.dataclass(frozen=True)
class EpochEnd:
    """An epoch has finished and been evaluated.

    Attributes:
        run: the run's fixed facts.
        record: this epoch's record.
        history: every epoch's record so far, this one last.
        step: steps taken.
        train_state: the state after the epoch.
        data_state: the data pipeline's position (JSON).
    """

    run: RunInfo
    record: EpochRecord
    history: tuple[EpochRecord, ...]
    step: int
    train_state: TrainState
    data_state: dict[str, Any] | None


@dataclasses.dataclass(frozen=True)
class FitResult:
    """What [`fit`][zoo.train.fit] returns.

    Attributes:
        train_state: the final [`TrainState`][zoo.train.TrainState].
        history: one [`EpochRecord`][zoo.train.EpochRecord] per epoch trained,
            those before a resume included.
        compile_seconds: time spent compiling the training step.
        steps_per_call: optimiser steps fused into one device call.
        stop_reason: why a callback stopped training early
            ([`StopTraining`][zoo.train.StopTraining]), or ``None``.
    """

    train_state: TrainState
    history: list[EpochRecord]
    compile_seconds: float
    steps_per_call: int
    stop_reason: str | None = None

    @property
    def model(self) -> Any:
        """The trained model (``train_state.model``), of the class ``fit`` got."""
        return self.train_state.model

    @property
    def state(self) -> eqx.nn.State | None:
        """The model's state (``train_state.model_state``)."""
        return self.train_state.model_state

    @property
    def step(self) -> int:
        """Optimiser steps taken."""
        return int(local_copy(self.train_state.step))
