"""zoo: a typed, functional model zoo for JAX, built on Equinox."""

# First, before anything can run a JAX computation: importing _allocator tunes
# the C allocator, and XLA's threads keep the arena they first allocate from.
from ._allocator import allocator_tuned as allocator_tuned  # isort: skip

# Next, before the first compilation: JAX decides then whether it has a cache.
from ._compilation_cache import compilation_cache_dir as compilation_cache_dir  # isort: skip
from . import data as data, train as train
from ._checks import (
    set_shape_checks as set_shape_checks,
    shape_checks as shape_checks,
    shape_checks_enabled as shape_checks_enabled,
)
from ._compiler_options import (
    CpuConvKernels as CpuConvKernels,
    compiler_options as compiler_options,
    cpu_conv_kernels as cpu_conv_kernels,
)
from ._version import __version__ as __version__
from .models import (
    ACTIVATIONS as ACTIVATIONS,
    BATCH_AXIS as BATCH_AXIS,
    CNN as CNN,
    CONV_PATHS as CONV_PATHS,
    FAMILIES as FAMILIES,
    MLP as MLP,
    AbstractImageClassifier as AbstractImageClassifier,
    AbstractModel as AbstractModel,
    AvgPool as AvgPool,
    BasicBlock as BasicBlock,
    ConvBlock as ConvBlock,
    ConvPath as ConvPath,
    MaxPool as MaxPool,
    ModelCard as ModelCard,
    ModelSpec as ModelSpec,
    Projection as Projection,
    ResNet as ResNet,
    apply as apply,
    build_model as build_model,
    conv_path as conv_path,
    conv_path_setting as conv_path_setting,
    create_model as create_model,
    features as features,
    head_only as head_only,
    list_models as list_models,
    load_safetensors as load_safetensors,
    model_card as model_card,
    model_spec as model_spec,
    register_model as register_model,
    resolved_conv_path as resolved_conv_path,
    save_safetensors as save_safetensors,
    set_conv_path as set_conv_path,
)
from .train import (
    Checkpoint as Checkpoint,
    CheckpointError as CheckpointError,
    FitResult as FitResult,
    fit as fit,
    load_checkpoint as load_checkpoint,
    load_model as load_model,
    save_checkpoint as save_checkpoint,
)


def __getattr__(name: str):
    # ``zoo.plot`` imports matplotlib, so it is loaded on first use.
    if name == "plot":
        import importlib

        return importlib.import_module(".plot", __name__)
    raise AttributeError(f"module 'zoo' has no attribute {name!r}")
