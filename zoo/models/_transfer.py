"""Transfer learning: the classifier of each family, features, head-only filters."""

from collections.abc import Callable
from typing import Any, cast

import equinox as eqx
import jax
import numpy as np
from jaxtyping import Array, Float, Shaped

from .._checks import checked
from .._inputs import model_inputs
from ._abstract import BATCH_AXIS, AbstractModel
from ._cnn import CNN
from ._mlp import MLP
from ._resnet import ResNet

HEADS: dict[type[AbstractModel], Callable[[Any], eqx.nn.Linear]] = {
    MLP: lambda m: m.layers[-1],
    CNN: lambda m: m.output,
    ResNet: lambda m: m.output,
}
"""Where each family keeps its classifier (the last linear layer), by class."""


def head(model: AbstractModel) -> eqx.nn.Linear:
    """The classifier of ``model``: the linear layer that maps features to logits.

    Raises:
        TypeError: a model class zoo does not know the head of (add it to
            ``zoo.models._transfer.HEADS``).
    """
    for cls, where in HEADS.items():
        if isinstance(model, cls):
            return where(model)
    raise TypeError(
        f"zoo does not know where {type(model).__name__} keeps its classifier; "
        f"families with a known head: {sorted(c.__name__ for c in HEADS)}."
    )


def head_only(model: AbstractModel) -> AbstractModel:
    """A filter spec over ``model`` that selects its classifier (the head).

    A pytree of the model's structure with ``True`` at every leaf of the last
    linear layer and ``False`` everywhere else: pass it as ``trainable=`` to
    ``TrainState.init``, ``make_train_step`` and ``fit`` to train only the head
    on a frozen backbone.

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
