"""Named model presets, each rebuilt from a JSON config alone.

The layers of ``zoo.models``, as in timm: ``_factory`` (``create_model``) on
top; below it ``_pretrained`` (weights), then ``_safetensors`` (file I/O), this
registry (presets and ``build_model``), and ``_cards`` (model cards) at the
bottom. No module imports one above it.
"""

import copy
import dataclasses
import difflib
import fnmatch
import json
from collections.abc import Callable, Mapping
from typing import Any, cast

import equinox as eqx
from jaxtyping import PRNGKeyArray

from .._keys import check_key
from ._abstract import AbstractModel
from ._cards import available_weights
from ._cnn import CNN
from ._initialise import initialise
from ._mlp import MLP
from ._resnet import ResNet
from ._vit import ViT

FAMILIES: dict[str, type[AbstractModel]] = {
    "MLP": MLP,
    "CNN": CNN,
    "ResNet": ResNet,
    "ViT": ViT,
}
"""Model classes by the ``"family"`` name stored in their configs."""


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A registered preset: its name, JSON config and a line about it."""

    name: str
    config: Mapping[str, Any]
    description: str


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(name: str, config: Mapping[str, Any], description: str) -> None:
    """Add a preset. ``config`` must be JSON with a ``"family"`` key (zoo's
    families, or one added with [`register_family`][zoo.models.register_family]).

    Raises:
        ValueError: the name is taken, the config is not JSON, or its family
            is unknown.
    """
    if name in _REGISTRY:
        raise ValueError(f"A model named {name!r} is already registered.")
    try:
        frozen = json.loads(json.dumps(dict(config)))
    except TypeError as error:
        raise ValueError(
            f"Config of {name!r} is not JSON-serialisable: {error}"
        ) from None
    _family(frozen)
    _REGISTRY[name] = ModelSpec(name, frozen, description)


def register_family(family: type[AbstractModel], name: str | None = None) -> str:
    """Make a model class of your own a family, as ``MLP`` and ``CNN`` are.

    Its presets can then be registered (``register_model`` with
    ``{"family": name, ...}``), built with ``zoo.create_model``, and a
    checkpoint of one rebuilt from its config alone by ``zoo.load_model``.
    The class subclasses [`zoo.AbstractModel`][zoo.AbstractModel]: its
    constructor takes the config's arguments and ``key=``, its ``config()``
    returns them (JSON) with ``"family": name``, and it declares
    ``input_shape``, ``out_size`` and ``stateful``. Registering the same class
    under the same name again does nothing.

    Args:
        family: the model class.
        name: the ``"family"`` name in its configs; default the class's name.

    Returns:
        The family name.

    Raises:
        TypeError: ``family`` is not a subclass of ``zoo.AbstractModel``.
        ValueError: ``name`` is already the name of another class.
    """
    if not (isinstance(family, type) and issubclass(family, AbstractModel)):
        raise TypeError(
            f"A family must be a subclass of zoo.AbstractModel (with config(), "
            f"input_shape, out_size and stateful), got {family!r}. Any other "
            "eqx.Module trains with zoo.fit as it is, without registering."
        )
    name = family.__name__ if name is None else name
    if FAMILIES.get(name, family) is not family:
        raise ValueError(
            f"The family name {name!r} is taken by {FAMILIES[name].__module__}."
            f"{FAMILIES[name].__qualname__}: register_family(cls, name=...) "
            "with another name."
        )
    FAMILIES[name] = family
    return name


def list_models(pattern: str | None = None, *, pretrained: bool = False) -> list[str]:
    """Names of the registered presets, in registration order.

    Example:
        >>> import zoo
        >>> zoo.list_models("resnet*")
        ['resnet8', 'resnet20', 'resnet18', 'resnet34', 'resnet50']
        >>> "mlp" in zoo.list_models(pretrained=True)
        True

    Args:
        pattern: keep only names matching this wildcard (``fnmatch``: ``*``,
            ``?``, ``[seq]``), e.g. ``"resnet*"``.
        pretrained: keep only presets with pretrained weights on some dataset
            (see [`zoo.model_card`][]).
    """
    names = list(_REGISTRY)
    if pattern is not None:
        names = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
    if pretrained:
        have = {preset for preset, _ in available_weights()}
        names = [n for n in names if n in have]
    return names


def model_spec(name: str) -> ModelSpec:
    """The preset called ``name``.

    Raises:
        KeyError: no such preset; the message suggests the nearest names.
    """
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, _REGISTRY, n=3, cutoff=0.4)
        hint = f" Did you mean {' or '.join(map(repr, close))}?" if close else ""
        raise KeyError(
            f"Unknown model {name!r}.{hint} Registered models: {list_models()}."
        ) from None


def build_model(
    config: Mapping[str, Any], *, key: PRNGKeyArray
) -> tuple[AbstractModel, eqx.nn.State]:
    """Build a model and its initial state from a config (``model.config()``).

    Stateless models come back with an empty ``eqx.nn.State``.

    Raises:
        ValueError: unknown family or invalid arguments for it.
        TypeError: ``key`` is not a JAX PRNG key.
    """
    check_key(key, "build_model")
    kwargs = copy.deepcopy(dict(config))
    family = _family(kwargs)
    del kwargs["family"]
    try:
        constructor = cast(Callable[..., AbstractModel], family)
        return initialise(constructor, kwargs, key)
    except TypeError as error:
        raise ValueError(
            f"Invalid {family.__name__} config {config}: {error}"
        ) from None


def _family(config: Mapping[str, Any]) -> type[AbstractModel]:
    family = config.get("family")
    if family not in FAMILIES:
        raise ValueError(
            f"Model config needs 'family' set to one of {sorted(FAMILIES)}, "
            f"got {family!r}."
        )
    return FAMILIES[family]


register_model(
    "mlp",
    {"family": "MLP", "in_size": 784, "out_size": 10, "width_size": [512, 512]},
    "784-512-512-10 ReLU MLP of the JAX MNIST tutorials.",
)
register_model(
    "toy_mlp",
    {
        "family": "MLP",
        "in_size": 2,
        "out_size": 2,
        "width_size": [10],
        "final_activation": "log_softmax",
    },
    "One hidden layer of 10 ReLU units for the 2-D toy set (the Flax "
    "MLPClassifier(hidden_layers=1, hidden_dim=10, n_classes=2)); returns "
    "log-probabilities.",
)
register_model(
    "stax_cnn",
    {
        "family": "CNN",
        "in_channels": 1,
        "image_size": [28, 28],
        "out_size": 10,
        "channels": [32, 32, 10, 10],
        "kernel_sizes": [5, 5, 3, 3],
        "strides": 2,
        "paddings": "SAME",
        "batch_norm": True,
    },
    "Four stride-2 conv-BatchNorm-ReLU blocks (32/32/10/10 channels, 5x5/5x5/3x3/"
    "3x3) and a dense 10: the stax CNN of the JAX basics tutorial, with real "
    "BatchNorm.",
)
register_model(
    "cnn",
    {
        "family": "CNN",
        "in_channels": 1,
        "image_size": [28, 28],
        "out_size": 10,
        "channels": [32, 64, 128],
        "kernel_sizes": 3,
        "paddings": "SAME",
        "pool_sizes": 2,
        "batch_norm": True,
        "hidden_sizes": [256],
        "dropout": 0.3,
    },
    "Strongest preset: three conv3x3-BN-ReLU-maxpool blocks (32/64/128 "
    "channels, 28 -> 14 -> 7 -> 3 pixels), dense 256 with dropout, dense 10.",
)
register_model(
    "lenet5",
    {
        "family": "CNN",
        "in_channels": 1,
        "image_size": [28, 28],
        "out_size": 10,
        "channels": [6, 16],
        "kernel_sizes": 5,
        "paddings": [2, "VALID"],
        "pool_sizes": 2,
        "pooling": "avg",
        "batch_norm": False,
        "hidden_sizes": [120, 84],
        "activation": "tanh",
    },
    "LeNet-5 (LeCun et al. 1998): 5x5 convolutions to 6 and 16 maps, each "
    "subsampled by 2x2 average pooling, then 120-84-10 with tanh; the first "
    "convolution pads by 2 so C1 sees 32x32 as in the paper "
    "(32 -> 28 -> 14 -> 10 -> 5 pixels). C3 sees all 6 maps and the output "
    "layer is linear (the paper: a connection table and RBF units).",
)


def _mnist_resnet(width: int, depth: int, **extra: Any) -> dict[str, Any]:
    """A ResNet config for 1x28x28 images: three stages, stride 2 between them."""
    return {
        "family": "ResNet",
        "in_channels": 1,
        "image_size": [28, 28],
        "out_size": 10,
        "stem_width": width,
        "widths": [width, 2 * width, 4 * width],
        "depths": [depth] * 3,
        "strides": [1, 2, 2],
        **extra,
    }


register_model(
    "resnet8",
    _mnist_resnet(16, 1),
    "ResNet-8 of He et al. 2016 for small images: 3x3 stem, one basic block "
    "per stage (16/32/64 channels, 28 -> 14 -> 7 pixels), global average "
    "pooling, dense 10; about 78k parameters.",
)
register_model(
    "resnet20",
    _mnist_resnet(16, 3),
    "ResNet-20 of He et al. 2016 (CIFAR, 6n+2 with n=3): three basic blocks per "
    "stage, 16/32/64 channels, projection shortcuts; about 0.27M parameters.",
)


def _imagenet_resnet(block_kind: str, depths: list[int]) -> dict[str, Any]:
    """A ResNet config of timm's ``resnet18/34/50``: 224x224 RGB, 7x7 stem and
    max pooling, four stages (56 -> 28 -> 14 -> 7 pixels), 1000 classes."""
    expansion = 4 if block_kind == "bottleneck" else 1
    return {
        "family": "ResNet",
        "in_channels": 3,
        "image_size": [224, 224],
        "out_size": 1000,
        "stem_width": 64,
        "widths": [expansion * w for w in (64, 128, 256, 512)],
        "depths": depths,
        "strides": [1, 2, 2, 2],
        "stem_kind": "imagenet",
        "block_kind": block_kind,
    }


register_model(
    "resnet18",
    _imagenet_resnet("basic", [2, 2, 2, 2]),
    "ResNet-18 for ImageNet (timm's and torchvision's resnet18): 7x7 stem and "
    "max pooling, two basic blocks per stage (64/128/256/512 channels), 1000 "
    "classes; 11.7M parameters; loads timm's weights.",
)
register_model(
    "resnet34",
    _imagenet_resnet("basic", [3, 4, 6, 3]),
    "ResNet-34 for ImageNet (timm's resnet34): 3/4/6/3 basic blocks per stage; "
    "21.8M parameters; loads timm's weights.",
)
register_model(
    "resnet50",
    _imagenet_resnet("bottleneck", [3, 4, 6, 3]),
    "ResNet-50 for ImageNet (timm's resnet50): 3/4/6/3 bottleneck blocks "
    "(1x1, 3x3 strided, 1x1 to 256/512/1024/2048 channels); 25.6M parameters; "
    "loads timm's weights.",
)


def _imagenet_vit(dim: int, num_heads: int) -> dict[str, Any]:
    """A ViT config of timm's ``vit_*_patch16_224``: 224x224 RGB, 16x16 patches
    (196 and a class token), 12 blocks, 1000 classes."""
    return {
        "family": "ViT",
        "in_channels": 3,
        "image_size": [224, 224],
        "out_size": 1000,
        "patch_size": 16,
        "dim": dim,
        "depth": 12,
        "num_heads": num_heads,
    }


register_model(
    "vit_tiny_patch16_224",
    _imagenet_vit(192, 3),
    "ViT-Ti/16 at 224x224 (timm's vit_tiny_patch16_224): 12 blocks of width 192 "
    "with 3 heads; about 5.7M parameters; loads timm's weights.",
)
register_model(
    "vit_small_patch16_224",
    _imagenet_vit(384, 6),
    "ViT-S/16 at 224x224 (timm's vit_small_patch16_224): 12 blocks of width 384 "
    "with 6 heads; about 22M parameters; loads timm's weights.",
)
register_model(
    "vit_patch4_28",
    {
        "family": "ViT",
        "in_channels": 1,
        "image_size": [28, 28],
        "out_size": 10,
        "patch_size": 4,
        "dim": 64,
        "depth": 6,
        "num_heads": 4,
        "mlp_ratio": 2.0,
    },
    "A small ViT for 28x28 images: 49 patches of 4x4 and a class token, 6 "
    "pre-norm blocks of width 64 with 4 heads and MLPs of 128; about 0.2M "
    "parameters.",
)
