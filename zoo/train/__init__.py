"""Training: the parts of a training loop, and ``fit`` built from them.

A loop of your own needs four of them: a [`TrainState`][zoo.train.TrainState],
a step from [`make_train_step`][zoo.train.make_train_step], a
[`DeviceFeed`][zoo.train.DeviceFeed] of chunks from a Grain pipeline, and
[`evaluate`][zoo.train.evaluate]; [`save_checkpoint`][zoo.train.save_checkpoint]
and [`load_checkpoint`][zoo.train.load_checkpoint] save and resume it.
[`fit`][zoo.train.fit] is that loop with [`Callback`][zoo.train.Callback]s.
"""

from .._compiler_options import compiler_options as compiler_options
from ._callbacks import (
    Callback as Callback,
    Checkpointer as Checkpointer,
    CSVLogger as CSVLogger,
    EpochLogger as EpochLogger,
    FiniteLossGuard as FiniteLossGuard,
    HistoryWriter as HistoryWriter,
    NonFiniteLossError as NonFiniteLossError,
    ProgressBar as ProgressBar,
    StopTraining as StopTraining,
    default_callbacks as default_callbacks,
)
from ._checkpoint import (
    Checkpoint as Checkpoint,
    CheckpointError as CheckpointError,
    latest_checkpoint as latest_checkpoint,
    load_checkpoint as load_checkpoint,
    load_model as load_model,
    save_checkpoint as save_checkpoint,
)
from ._distill import (
    Distillation as Distillation,
    distillation as distillation,
    teacher_logits as teacher_logits,
)
from ._evaluate import evaluate as evaluate
from ._events import (
    ChunkEnd as ChunkEnd,
    EpochEnd as EpochEnd,
    EpochRecord as EpochRecord,
    FitResult as FitResult,
    RunInfo as RunInfo,
)
from ._feed import DeviceFeed as DeviceFeed, ResidentFeed as ResidentFeed
from ._loop import fit as fit
from ._metrics import (
    AnyLoss as AnyLoss,
    LossFn as LossFn,
    Metrics as Metrics,
    TargetLoss as TargetLoss,
    confusion_matrix as confusion_matrix,
    label_smoothing as label_smoothing,
    softmax_cross_entropy as softmax_cross_entropy,
)
from ._parallel import (
    data_mesh as data_mesh,
    local_copy as local_copy,
    replicate as replicate,
    shard_batch as shard_batch,
)
from ._precise_bn import recompute_batch_norm as recompute_batch_norm
from ._predict import predict as predict
from ._state import (
    FilterSpec as FilterSpec,
    TrainState as TrainState,
    partition_trainable as partition_trainable,
)
from ._step import (
    TrainStep as TrainStep,
    eval_step as eval_step,
    make_train_step as make_train_step,
)
from ._tensorboard import TensorBoardWriter as TensorBoardWriter
from ._tuning import steps_per_call as steps_per_call
