"""Model families, presets and the batched call."""

from ._abstract import (
    ACTIVATIONS as ACTIVATIONS,
    BATCH_AXIS as BATCH_AXIS,
    AbstractImageClassifier as AbstractImageClassifier,
    AbstractModel as AbstractModel,
)
from ._apply import apply as apply
from ._cnn import CNN as CNN, ConvBlock as ConvBlock
from ._conv import (
    CONV_PATHS as CONV_PATHS,
    ConvPath as ConvPath,
    conv_path as conv_path,
    conv_path_setting as conv_path_setting,
    resolved_conv_path as resolved_conv_path,
    set_conv_path as set_conv_path,
)
from ._mlp import MLP as MLP
from ._pool import AvgPool as AvgPool, MaxPool as MaxPool
from ._pretrained import ModelCard as ModelCard, model_card as model_card
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
from ._safetensors import (
    load_safetensors as load_safetensors,
    save_safetensors as save_safetensors,
)
from ._transfer import features as features, head_only as head_only
