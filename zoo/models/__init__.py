"""Model families, presets, weights and the batched call."""

from ._abstract import (
    ACTIVATION_NAMES as ACTIVATION_NAMES,
    BATCH_AXIS as BATCH_AXIS,
    AbstractImageClassifier as AbstractImageClassifier,
    AbstractModel as AbstractModel,
)
from ._apply import apply as apply
from ._cnn import CNN as CNN, ConvBlock as ConvBlock
from ._conv import ConvPath as ConvPath, with_conv_path as with_conv_path
from ._factory import create_model as create_model
from ._mlp import MLP as MLP
from ._pool import AvgPool as AvgPool, MaxPool as MaxPool
from ._pretrained import ModelCard as ModelCard, model_card as model_card
from ._registry import (
    ModelSpec as ModelSpec,
    build_model as build_model,
    list_models as list_models,
    model_spec as model_spec,
    register_family as register_family,
    register_model as register_model,
)
from ._resnet import ResNet as ResNet
from ._resnet_blocks import (
    BasicBlock as BasicBlock,
    Bottleneck as Bottleneck,
    Projection as Projection,
)
from ._safetensors import (
    load_safetensors as load_safetensors,
    save_safetensors as save_safetensors,
)
from ._summary import (
    LayerSummary as LayerSummary,
    ModelSummary as ModelSummary,
    summary as summary,
)
from ._timm import (
    TimmCard as TimmCard,
    load_timm_weights as load_timm_weights,
    timm_card as timm_card,
)
from ._timm_layout import TimmTensor as TimmTensor
from ._transfer import (
    features as features,
    head_only as head_only,
    intermediates as intermediates,
)
from ._vit import (
    SelfAttention as SelfAttention,
    TransformerBlock as TransformerBlock,
    ViT as ViT,
)
from ._vit_stem import ConvStem as ConvStem
