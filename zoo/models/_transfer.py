"""Transfer learning: the classifier of each family, features, stage maps,
head-only filters."""

from collections.abc import Callable, Sequence
from typing import Any, cast

import equinox as eqx
import jax
import numpy as np
from jaxtyping import Array, Float, Shaped

from .._checks import checked
from .._inputs import model_inputs
from ._abstract import BATCH_AXIS, AbstractImageClassifier, AbstractModel
from ._cnn import CNN
from ._mlp import MLP
from ._resnet import ResNet

HEADS: dict[type[AbstractModel], Callable[[Any], eqx.nn.Linear]] = {
    MLP: lambda m: m.layers[-1],
    CNN: lambda m: m.output,
    ResNet: lambda m: m.output,
}
"""Where each family keeps its classifier (the last linear layer), by class.
Any other ``AbstractImageClassifier`` keeps it in ``output``."""


def head(model: AbstractModel) -> eqx.nn.Linear:
    """The classifier of ``model``: the linear layer that maps features to logits.

    Raises:
        TypeError: a model class zoo does not know the head of (add it to
            ``zoo.models._transfer.HEADS``).
        ValueError: a model built with ``out_size=0``, which has no head.
    """
    where = next((w for cls, w in HEADS.items() if isinstance(model, cls)), None)
    if where is None and isinstance(model, AbstractImageClassifier):
        where = _output
    if where is None:
        raise TypeError(
            f"zoo does not know where {type(model).__name__} keeps its "
            "classifier; families with a known head: "
            f"{sorted(c.__name__ for c in HEADS)} and every "
            "AbstractImageClassifier (its `output`)."
        )
    if model.out_size == 0:
        raise ValueError(
            f"This {type(model).__name__} was built with out_size=0: it has no "
            "classifier and returns its features. Build it with out_size=K "
            "(e.g. zoo.create_model(name, out_size=K, ...)) for a head of K "
            "classes."
        )
    return where(model)


def _output(model: Any) -> eqx.nn.Linear:
    return model.output


def head_only(model: AbstractModel) -> AbstractModel:
    """A filter spec over ``model`` that selects its classifier (the head).

    A pytree of the model's structure with ``True`` at every leaf of the last
    linear layer and ``False`` everywhere else: pass it as ``trainable=`` to
    ``TrainState.init``, ``make_train_step`` and ``fit`` to train only the head
    on a frozen backbone.

    Raises:
        ValueError: a model built with ``out_size=0`` (it has no head).

    Example:
        >>> import equinox as eqx, jax, zoo
        >>> model, _ = zoo.create_model("mlp", key=jax.random.key(0))
        >>> spec = zoo.head_only(model)
        >>> [x.shape for x in jax.tree.leaves(eqx.filter(model, spec))]
        [(10, 512), (10,)]
    """
    spec = jax.tree.map(lambda _: False, model)
    return eqx.tree_at(
        lambda m: head(m), spec, replace=jax.tree.map(lambda _: True, head(model))
    )


@checked
def features(
    model: AbstractModel,
    inputs: Shaped[Array, "batch ..."] | Shaped[np.ndarray, "batch ..."],
    state: eqx.nn.State | None = None,
) -> Float[Array, "batch features"]:
    """The features of a batch: what the classifier sees, in inference mode.

    Calls ``model.features`` on every example with ``jax.vmap``, the model in
    inference mode (dropout off, BatchNorm from its running statistics, which
    are left as they are).

    Example:
        >>> import jax, jax.numpy as jnp, zoo
        >>> model, state = zoo.create_model("stax_cnn", key=jax.random.key(0))
        >>> zoo.features(model, jnp.zeros((4, 1, 28, 28)), state).shape
        (4, 40)

    Args:
        model: any zoo model.
        inputs: a batch, shape ``(batch, *model.input_shape)``, taken as
            [`zoo.apply`][zoo.apply] takes it.
        state: the model's state (required for stateful models).

    Returns:
        Features of shape ``(batch, features)``: the classifier's input size.

    Raises:
        ValueError: a stateful model without ``state``.
    """
    inputs = model_inputs(model, inputs, batched=True)
    model = eqx.nn.inference_mode(model)
    call = cast(Callable[..., Any], cast(Any, model).features)
    if not model.stateful:
        return jax.vmap(call)(inputs)
    if state is None:
        raise ValueError(
            f"{type(model).__name__} is stateful (BatchNorm): pass the `state` "
            "returned by zoo.create_model or eqx.nn.make_with_state."
        )
    out, _ = jax.vmap(
        lambda x, s: call(x, s),
        axis_name=BATCH_AXIS,
        in_axes=(0, None),
        out_axes=(0, None),
    )(inputs, state)
    return out


@checked
def intermediates(
    model: AbstractModel,
    inputs: Shaped[Array, "batch ..."] | Shaped[np.ndarray, "batch ..."],
    state: eqx.nn.State | None = None,
    *,
    indices: Sequence[int] | None = None,
) -> list[Float[Array, "batch ..."]]:
    """The feature maps of a batch after chosen stages, in inference mode.

    Calls ``model.intermediates`` on every example with ``jax.vmap``, the
    model in inference mode (BatchNorm from its running statistics, left as
    they are). A CNN's stages are its conv blocks and a ResNet's its stages
    of residual blocks, each map channels-first ``(channels, height, width)``;
    a ViT's are its transformer blocks, each ``(tokens, dim)``, class token
    first.

    Example:
        >>> import jax, jax.numpy as jnp, zoo
        >>> model, state = zoo.create_model("cnn", key=jax.random.key(0))
        >>> maps = zoo.models.intermediates(model, jnp.zeros((2, 1, 28, 28)), state)
        >>> [m.shape for m in maps]
        [(2, 32, 14, 14), (2, 64, 7, 7), (2, 128, 3, 3)]

    Args:
        model: a zoo model with stages (an ``intermediates`` method).
        inputs: a batch, shape ``(batch, *model.input_shape)``, taken as
            [`zoo.apply`][zoo.apply] takes it.
        state: the model's state (required for stateful models).
        indices: the stages to return, in this order (negative: from the
            end); ``None`` for all of them.

    Returns:
        One array per stage asked for, shape ``(batch, *stage_shape)``.

    Raises:
        TypeError: a model without stages (an MLP: use
            [`zoo.features`][zoo.features]).
        ValueError: a stateful model without ``state``, a stage index out of
            range, or inputs of a shape the model does not take.
    """
    if not callable(getattr(model, "intermediates", None)):
        raise TypeError(
            f"{type(model).__name__} has no stages (no `intermediates` method); "
            "zoo.features gives the features its classifier sees."
        )
    inputs = model_inputs(model, inputs, batched=True)
    model = eqx.nn.inference_mode(model)
    method = cast(Callable[..., Any], cast(Any, model).intermediates)
    if model.stateful and state is None:
        raise ValueError(
            f"{type(model).__name__} is stateful (BatchNorm): pass the `state` "
            "returned by zoo.create_model or eqx.nn.make_with_state."
        )
    maps, _ = jax.vmap(
        lambda x, s: method(x, s, indices=indices),
        axis_name=BATCH_AXIS,
        in_axes=(0, None),
        out_axes=(0, None),
    )(inputs, state)
    return list(maps)
