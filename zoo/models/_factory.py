"""``create_model``: a preset, fresh or with its pretrained weights.

The top of ``zoo.models`` (as timm's ``_factory``): it imports the registry and
the pretrained weights' loader, and nothing in ``zoo.models`` imports it.
"""

from typing import Any

import equinox as eqx
from jaxtyping import PRNGKeyArray

from ._abstract import AbstractModel
from ._pretrained import load_pretrained
from ._registry import build_model, model_spec


def create_model(
    name: str,
    *,
    key: PRNGKeyArray,
    pretrained: str | None = None,
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
            model.
        **overrides: constructor arguments that replace the preset's. With
            ``pretrained``, only those that keep every backbone parameter's
            shape: ``out_size=K`` keeps the backbone and draws a new head.

    Returns:
        ``(model, state)``; ``state`` is empty for stateless models.

    Raises:
        KeyError: no such preset (the message suggests the nearest names).
        ValueError: bad overrides; with ``pretrained``, no weights for that
            dataset (the message lists those with weights), a weight file whose
            SHA-256 differs from its card, or overrides that change the backbone.
    """
    if pretrained is not None:
        return load_pretrained(name, pretrained, key=key, **overrides)
    return build_model({**model_spec(name).config, **overrides}, key=key)
