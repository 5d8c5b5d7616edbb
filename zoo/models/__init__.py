"""Model families, presets and the batched call."""

from ._abstract import (
    ACTIVATIONS as ACTIVATIONS,
    BATCH_AXIS as BATCH_AXIS,
    AbstractModel as AbstractModel,
)
from ._apply import apply as apply
from ._cnn import CNN as CNN, ConvBlock as ConvBlock
from ._mlp import MLP as MLP
from ._pool import MaxPool as MaxPool
from ._registry import (
    FAMILIES as FAMILIES,
    ModelSpec as ModelSpec,
    build_model as build_model,
    create_model as create_model,
    list_models as list_models,
    model_spec as model_spec,
    register_model as register_model,
)
from ._resnet import (
    BasicBlock as BasicBlock,
    Projection as Projection,
    ResNet as ResNet,
)
