"""Training: pure jitted steps, the ``fit`` loop, metrics and checkpoints."""

from ._checkpoint import (
    Checkpoint as Checkpoint,
    CheckpointError as CheckpointError,
    ensure_writable as ensure_writable,
    latest_checkpoint as latest_checkpoint,
    load_checkpoint as load_checkpoint,
    load_model as load_model,
    save_checkpoint as save_checkpoint,
)
from ._loop import (
    FitResult as FitResult,
    NonFiniteLossError as NonFiniteLossError,
    chunk_size as chunk_size,
    default_steps_per_call as default_steps_per_call,
    evaluate as evaluate,
    fit as fit,
    format_epoch as format_epoch,
    fused_steps as fused_steps,
)
from ._metrics import Metrics as Metrics, cross_entropy as cross_entropy
from ._parallel import (
    DATA_AXIS as DATA_AXIS,
    check_batch_size as check_batch_size,
    data_mesh as data_mesh,
    local_copy as local_copy,
    process_shard as process_shard,
    replicate as replicate,
    shard_batch as shard_batch,
)
from ._state import TrainState as TrainState
from ._step import (
    StepCost as StepCost,
    eval_step as eval_step,
    make_train_step as make_train_step,
    predict as predict,
    prepare_inputs as prepare_inputs,
    step_cost as step_cost,
    unrolls_steps as unrolls_steps,
)
