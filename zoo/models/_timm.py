"""timm's weights in zoo's models: explicit key maps, checked to the last tensor.

``load_timm_weights`` fills a zoo model from a timm ``state_dict`` (a dict of
NumPy arrays) by its family's layout (``_LAYOUTS``, lists of
``_timm_layout.TimmTensor``). Every timm tensor is used exactly once and every
zoo array is filled, with its shape checked, or nothing is loaded and the
error names the leftovers, the missing keys and the mismatched shapes.

BatchNorm's running mean and variance go into the ``eqx.nn.State``. Its counter
(``batch_counter``) is set to :data:`SETTLED_COUNT`: Equinox divides the
running statistics by ``1 - momentum ** counter`` (a correction for
statistics that start at zero), which at that count is exactly 1, so the
model uses timm's statistics as they are, and keeps doing so as fine-tuning
updates them.

``load_timm_pretrained`` is what ``create_model(name, pretrained=...)`` calls
for a timm weight file: a local ``model.safetensors``, or
``"hf-hub:<repo>"`` downloaded by ``_hub``. :class:`TimmCard` records how
the inputs of known timm weights are prepared.
"""

import dataclasses
import os
import pathlib
from collections.abc import Callable, Mapping
from typing import Any

import equinox as eqx
import jax
import numpy as np
from jaxtyping import PRNGKeyArray

from ..data._preprocess import IMAGENET_MEAN, IMAGENET_STD, Preprocessing
from ._abstract import AbstractModel
from ._hub import HF_HUB_PREFIX, hub_file
from ._model_args import abstract_model
from ._registry import build_model, model_spec
from ._resnet import ResNet
from ._safetensors import (
    fill_arrays,
    is_array_like,
    named_arrays,
    read_safetensors,
)
from ._timm_layout import TimmTensor, resnet_layout
from ._transfer import head_only
from ._vit import ViT
from ._vit_timm import vit_layout

_LAYOUTS: dict[type, Callable[[Any], list[TimmTensor]]] = {
    ResNet: resnet_layout,
    ViT: vit_layout,
}
"""Each family's timm layout, by model class."""

SETTLED_COUNT = 1 << 30
"""The BatchNorm counter of loaded weights: ``momentum ** SETTLED_COUNT`` is 0
in float32 for any momentum below 1, so the running statistics are used as
they are (see the module docstring)."""

_SHOWN = 8
"""Names listed per kind of problem in an error message."""


@dataclasses.dataclass(frozen=True)
class TimmCard:
    """A timm weight file zoo knows: its preset, source and preprocessing.

    Attributes:
        name: timm's name, ``"<architecture>.<tag>"``, e.g. ``"resnet50.a1_in1k"``.
        preset: the zoo preset it loads into.
        source: what to pass as ``pretrained=``: ``"hf-hub:timm/<name>"``.
        preprocessing: how inputs are prepared (timm's ``pretrained_cfg``:
            resize, crop, mean, std, interpolation); apply it with
            [`zoo.data.preprocess`][].
        classes: the number of classes (1000: ImageNet-1k).
        license: the weights' licence, as timm states it.
    """

    name: str
    preset: str
    source: str
    preprocessing: Preprocessing
    classes: int
    license: str


def _card(
    name: str,
    crop_pct: float,
    interpolation: str,
    license: str,
    mean: tuple[float, ...] = IMAGENET_MEAN,
    std: tuple[float, ...] = IMAGENET_STD,
) -> TimmCard:
    return TimmCard(
        name=name,
        preset=name.partition(".")[0],
        source=f"{HF_HUB_PREFIX}timm/{name}",
        preprocessing=Preprocessing.from_timm(
            {
                "input_size": (3, 224, 224),
                "crop_pct": crop_pct,
                "interpolation": interpolation,
                "mean": mean,
                "std": std,
            }
        ),
        classes=1000,
        license=license,
    )


TIMM_CARDS: dict[str, TimmCard] = {
    card.name: card
    for card in [
        # timm's "ResNet strikes back" recipe A1 (Wightman et al. 2021).
        *(
            _card(f"resnet{d}.a1_in1k", 0.95, "bicubic", "apache-2.0")
            for d in (18, 34, 50)
        ),
        # torchvision's original weights.
        *(
            _card(f"resnet{d}.tv_in1k", 0.875, "bilinear", "bsd-3-clause")
            for d in (18, 34, 50)
        ),
        # AugReg ViTs (Steiner et al. 2021): ImageNet-21k, then fine-tuned on
        # ImageNet-1k, or ImageNet-1k alone; inputs scaled to [-1, 1].
        *(
            _card(name, 0.9, "bicubic", "apache-2.0", (0.5,) * 3, (0.5,) * 3)
            for name in (
                "vit_tiny_patch16_224.augreg_in21k_ft_in1k",
                "vit_small_patch16_224.augreg_in21k_ft_in1k",
                "vit_small_patch16_224.augreg_in1k",
            )
        ),
    ]
}
"""The timm weights zoo knows the preprocessing of, by timm name."""


def timm_card(name: str) -> TimmCard:
    """The card of timm weights ``name`` (``"resnet50.a1_in1k"``, or its source
    ``"hf-hub:timm/resnet50.a1_in1k"``).

    Example:
        >>> import zoo
        >>> card = zoo.models.timm_card("resnet50.a1_in1k")
        >>> card.preset, card.preprocessing.resize, card.preprocessing.crop
        ('resnet50', 235, 224)

    Raises:
        KeyError: weights zoo has no card for (the message lists those it has);
            read the preprocessing from the repository's ``config.json``.
    """
    key = name.removeprefix(f"{HF_HUB_PREFIX}timm/")
    if key not in TIMM_CARDS:
        raise KeyError(
            f"No timm card for {name!r}; zoo has cards for {sorted(TIMM_CARDS)}. "
            "Other timm weights load too: build their Preprocessing with "
            "zoo.data.Preprocessing.from_timm(config['pretrained_cfg']) from the "
            "repository's config.json."
        )
    return TIMM_CARDS[key]


def timm_layout(model: AbstractModel) -> list[TimmTensor]:
    """The timm layout of ``model``'s family.

    Raises:
        ValueError: a family without one.
    """
    for cls, layout in _LAYOUTS.items():
        if isinstance(model, cls):
            return layout(model)
    raise ValueError(
        f"zoo maps no timm weights to {type(model).__name__}; families with "
        f"timm layouts: {sorted(c.__name__ for c in _LAYOUTS)}."
    )


def _listed(title: str, items: list[str]) -> str:
    more = f" and {len(items) - _SHOWN} more" if len(items) > _SHOWN else ""
    return f"{len(items)} {title}: {', '.join(items[:_SHOWN])}{more}"


def _head_names(model: AbstractModel) -> set[str]:
    """The names of the arrays of ``model``'s classifier (none with ``out_size=0``)."""
    if not model.out_size:
        return set()
    head = eqx.filter(model, head_only(model))
    return {
        jax.tree_util.keystr(path).removeprefix(".")
        for path, leaf in jax.tree_util.tree_flatten_with_path(head)[0]
        if is_array_like(leaf)
    }


def _load(
    model: AbstractModel,
    state: eqx.nn.State,
    tensors: Mapping[str, Any],
    *,
    keep_head: bool,
    advice: str,
) -> tuple[AbstractModel, eqx.nn.State]:
    """``load_timm_weights``; with ``keep_head``, the head is left as it is and
    the timm head's keys must already be out of ``tensors``."""
    zoo = named_arrays(model, state)
    exempt = _head_names(model) if keep_head else set()
    arrays: dict[str, np.ndarray] = {}
    used, missing, mismatched = set(), [], []
    for entry in timm_layout(model):
        if exempt and set(entry.targets) <= exempt and entry.targets:
            continue
        used.add(entry.key)
        if entry.key not in tensors:
            if entry.targets:  # a tensor zoo leaves out may be absent too
                missing.append(entry.key)
            continue
        value = np.asarray(tensors[entry.key])
        for target, part in zip(entry.targets, entry.arrays(value), strict=True):
            like = zoo[target]
            if tuple(part.shape) != tuple(like.shape):
                mismatched.append(
                    f"{entry.key} {tuple(value.shape)} for {target} {tuple(like.shape)}"
                )
            else:
                arrays[target] = np.asarray(part).astype(like.dtype)
    leftovers = [k for k in tensors if k not in used]
    counters = [n for n in zoo if n.endswith(".batch_counter")]
    unfilled = [n for n in zoo if n not in arrays and n not in counters]
    unfilled = [n for n in unfilled if n not in exempt]
    if missing or leftovers or mismatched:
        problems = [
            _listed(title, items)
            for title, items in [
                ("missing", missing),
                ("left over", leftovers),
                ("of another shape (timm for zoo)", mismatched),
            ]
            if items
        ]
        raise ValueError(
            f"The timm weights do not fit this {type(model).__name__}: "
            f"{'; '.join(problems)}. Nothing was loaded. {advice}"
        )
    if unfilled:
        raise ValueError(
            f"The timm layout of {type(model).__name__} leaves "
            f"{_listed('zoo arrays unfilled', unfilled)}: a bug in zoo's layout."
        )
    for name in counters:
        arrays[name] = np.asarray(SETTLED_COUNT, dtype=np.dtype(zoo[name].dtype))
    return fill_arrays(model, state, arrays)


def load_timm_weights(
    model: AbstractModel, state: eqx.nn.State, tensors: Mapping[str, Any]
) -> tuple[AbstractModel, eqx.nn.State]:
    """``model`` and ``state`` with the arrays of a timm ``state_dict``.

    Keys are mapped explicitly by the model's family (timm's ``conv1``,
    ``layer1.0.bn2.running_var``, ``fc``, ...); each array is cast to the dtype
    of the zoo array it fills. BatchNorm running statistics go into ``state``.

    Example:
        >>> import jax, zoo
        >>> from zoo.models import load_timm_weights
        >>> model, state = zoo.create_model("resnet18", key=jax.random.key(0))
        >>> load_timm_weights(model, state, {"conv1.weight": 0})  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: The timm weights do not fit this ResNet: 101 missing: ...

    Args:
        model: a zoo model of a family with a timm layout (``ResNet``, ``ViT``).
        state: its state.
        tensors: timm's ``state_dict``, names to arrays (NumPy or anything
            ``np.asarray`` takes), e.g. read from a ``model.safetensors``.

    Returns:
        The filled ``(model, state)``; the arguments are left as they were.

    Raises:
        ValueError: a timm key missing, left over (a key the layout does not
            know; ``num_batches_tracked`` is known, and may be absent), or of
            another shape: all of them named, and nothing loaded.
    """
    return _load(
        model,
        state,
        tensors,
        keep_head=False,
        advice=(
            "Is it a state_dict of the same architecture, with as many classes "
            f"(out_size={model.out_size})?"
        ),
    )


def is_timm_source(pretrained: Any) -> bool:
    """Whether ``pretrained=`` names a timm weight file rather than a dataset:
    ``"hf-hub:..."``, a path object, or a string ending in ``.safetensors`` or
    holding a path separator."""
    if isinstance(pretrained, os.PathLike):
        return True
    text = str(pretrained)
    return (
        text.startswith(HF_HUB_PREFIX)
        or text.endswith(".safetensors")
        or os.sep in text
        or "/" in text
    )


def load_timm_pretrained(
    name: str,
    source: str | os.PathLike[str],
    *,
    key: PRNGKeyArray,
    **overrides: Any,
) -> tuple[AbstractModel, eqx.nn.State]:
    """The preset ``name`` with timm's weights from ``source``.

    ``zoo.create_model(name, pretrained=source, key=key, **overrides)`` calls
    this for a timm source. Overrides that keep every array's shape
    (``dropout=``, ``conv_path=``, ``dtype=``) keep every weight; ``out_size=K``
    keeps the backbone and draws a new head from ``key`` (``K=0``: none).

    Args:
        name: a preset of a family with a timm layout (``resnet50``).
        source: a timm ``model.safetensors`` file, or ``"hf-hub:<repo>"``
            (``"hf-hub:timm/resnet50.a1_in1k"``) downloaded with
            ``huggingface_hub`` and checked against the SHA-256 recorded at its
            first download.

    Raises:
        ValueError: no such file, a file that does not fit the preset (every
            mismatch named), a refused or failed download.
        ImportError: ``"hf-hub:"`` without ``huggingface_hub`` installed.
    """
    spec = model_spec(name)
    text = os.fspath(source)
    if text.startswith(HF_HUB_PREFIX):
        path = hub_file(text, preset=name)
    else:
        path = pathlib.Path(text).expanduser()
        if not path.is_file():
            raise ValueError(
                f"pretrained={text!r}: no such file. Give the path of a timm "
                "model.safetensors, 'hf-hub:timm/<name>.<tag>', or a dataset "
                "with zoo weights (see zoo.model_card)."
            )
    config = {**spec.config, **overrides}
    shape_check, _ = abstract_model(config, source=f"Overrides {overrides}")
    timm_layout(shape_check)  # refuse a family without a layout before reading
    tensors, _ = read_safetensors(path)
    model, state = build_model(config, key=key)
    advice = (
        f"Is {path} a timm {name} with {spec.config.get('out_size')} classes? "
        "With timm weights only out_size= (a new head) and options that keep "
        "every shape may be overridden."
    )
    if "out_size" not in overrides:
        return _load(model, state, tensors, keep_head=False, advice=advice)
    # A new head: the file's head (of the preset's classes) is left out.
    source_config = {**config, "out_size": spec.config["out_size"]}
    source_model, _ = abstract_model(source_config, source=f"Preset {name!r}")
    heads = _head_names(source_model)
    head_keys = {
        e.key
        for e in timm_layout(source_model)
        if e.targets and set(e.targets) <= heads
    }
    body = {k: v for k, v in tensors.items() if k not in head_keys}
    return _load(model, state, body, keep_head=True, advice=advice)
