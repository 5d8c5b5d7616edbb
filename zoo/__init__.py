"""zoo: a typed, functional model zoo for JAX, built on Equinox.

Importing zoo defines things and changes nothing else: process-wide tuning is
an explicit call (see :mod:`zoo.runtime`).
"""

from . import data as data, models as models, runtime as runtime, train as train
from ._export import export as export
from ._version import __version__ as __version__
from .models import (
    CNN as CNN,
    MLP as MLP,
    AbstractModel as AbstractModel,
    ResNet as ResNet,
    ViT as ViT,
    apply as apply,
    create_model as create_model,
    features as features,
    head_only as head_only,
    list_models as list_models,
    load_safetensors as load_safetensors,
    model_card as model_card,
    register_model as register_model,
    save_safetensors as save_safetensors,
    summary as summary,
)
from .train import (
    Checkpoint as Checkpoint,
    CheckpointError as CheckpointError,
    FitResult as FitResult,
    evaluate as evaluate,
    fit as fit,
    load_checkpoint as load_checkpoint,
    load_model as load_model,
    predict as predict,
    save_checkpoint as save_checkpoint,
)


def __getattr__(name: str):
    # ``zoo.plot`` imports matplotlib, so it is loaded on first use.
    if name == "plot":
        import importlib

        return importlib.import_module(".plot", __name__)
    raise AttributeError(f"module 'zoo' has no attribute {name!r}")
