"""``create_model``: a preset, fresh or with its pretrained weights.

The top of ``zoo.models`` (as timm's ``_factory``): it imports the registry and
the pretrained weights' loader, and nothing in ``zoo.models`` imports it.
"""

import os
from typing import Any

import equinox as eqx
from jaxtyping import PRNGKeyArray

from .._keys import check_key
from ._abstract import AbstractModel
from ._pretrained import load_pretrained
from ._registry import build_model, model_spec
from ._timm import is_timm_source, load_timm_pretrained


def create_model(
    name: str,
    *,
    key: PRNGKeyArray,
    pretrained: str | os.PathLike[str] | None = None,
    **overrides: Any,
) -> tuple[AbstractModel, eqx.nn.State]:
    """Build the preset ``name``, with any constructor argument overridden.

    Example:
        >>> import jax, zoo
        >>> model, state = zoo.create_model("mlp", key=jax.random.key(0))
        >>> model.config()["width_size"]
        [512, 512]
        >>> trained, _ = zoo.create_model("mlp", pretrained="mnist",
        ...                               key=jax.random.key(0))
        >>> new_head, _ = zoo.create_model("mlp", pretrained="mnist", out_size=3,
        ...                                key=jax.random.key(0))
        >>> new_head.layers[-1].weight.shape
        (3, 512)

    Args:
        name: a registered preset (see [`zoo.list_models`][]).
        key: PRNG key for the initial parameters (with ``pretrained``: for a
            new head only).
        pretrained: the dataset whose trained weights to load (e.g.
            ``"mnist"``; see [`zoo.model_card`][]), or ``None`` for a fresh
            model. For the ImageNet presets (``resnet18/34/50``): timm's
            weights, as the path of a timm ``model.safetensors`` or
            ``"hf-hub:timm/<name>.<tag>"`` (downloaded with
            ``huggingface_hub``, the ``hub`` extra; its SHA-256 recorded at
            the first download and checked at every later load); see the
            ImageNet page of the docs.
        **overrides: constructor arguments that replace the preset's. With
            ``pretrained``, only those that keep every backbone parameter's
            shape: ``out_size=K`` keeps the backbone and draws a new head.

    Returns:
        ``(model, state)``; ``state`` is empty for stateless models.

    Raises:
        KeyError: no such preset (the message suggests the nearest names).
        TypeError: ``key`` is not a JAX PRNG key.
        ValueError: bad overrides; with ``pretrained``, no weights for that
            dataset (the message lists those with weights), a weight file whose
            SHA-256 differs from its card (or, from the Hub, from the one
            recorded), a timm file that does not fit the preset (every
            mismatched key named), or overrides that change the backbone.
    """
    check_key(key, "create_model")
    if pretrained is not None and is_timm_source(pretrained):
        return load_timm_pretrained(name, pretrained, key=key, **overrides)
    if pretrained is not None:
        return load_pretrained(name, str(pretrained), key=key, **overrides)
    return build_model({**model_spec(name).config, **overrides}, key=key)
