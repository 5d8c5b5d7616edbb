"""One way to run any zoo model on a batch."""

from collections.abc import Callable
from typing import Any, cast

import equinox as eqx
import jax
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray, Shaped

from .._checks import checked
from .._inputs import model_inputs
from ._abstract import BATCH_AXIS, AbstractModel


@checked
def apply(
    model: AbstractModel,
    inputs: Shaped[Array, "batch ..."] | Shaped[np.ndarray, "batch ..."],
    state: eqx.nn.State | None = None,
    *,
    key: PRNGKeyArray | None = None,
) -> tuple[Float[Array, "batch classes"], eqx.nn.State | None]:
    """Run ``model`` on a batch with ``jax.vmap``, stateless or stateful alike.

    Stateful models (BatchNorm) are mapped with
    ``axis_name=zoo.models.BATCH_AXIS`` so that batch statistics span the batch;
    their state is threaded through and returned. For stateless models ``state``
    is returned unchanged.

    Args:
        model: any zoo model.
        inputs: a batch of examples, shape ``(batch, *model.input_shape)``,
            NumPy or JAX, floating point or ``uint8`` (scaled to ``[0, 1]``),
            as every zoo call takes them.
        state: the model's state (required for stateful models).
        key: PRNG key for dropout; split into one key per example.

    Returns:
        ``(logits, state)``, logits of shape ``(batch, classes)``.

    Raises:
        ValueError: a stateful model without ``state``, or examples of a shape
            the model does not take (the message says the fix).
        TypeError: inputs of a dtype other than ``uint8`` or floating point.
    """
    inputs = model_inputs(model, inputs, batched=True)
    keys = None if key is None else jax.random.split(key, inputs.shape[0])
    call = cast(Callable[..., Any], model)
    if not model.stateful:
        if keys is None:
            return jax.vmap(call)(inputs), state
        return jax.vmap(lambda x, k: call(x, key=k))(inputs, keys), state
    if state is None:
        raise ValueError(
            f"{type(model).__name__} is stateful (BatchNorm): pass the `state` "
            "returned by zoo.create_model or eqx.nn.make_with_state."
        )
    if keys is None:
        return jax.vmap(
            lambda x, s: call(x, s),
            axis_name=BATCH_AXIS,
            in_axes=(0, None),
            out_axes=(0, None),
        )(inputs, state)
    return jax.vmap(
        lambda x, s, k: call(x, s, key=k),
        axis_name=BATCH_AXIS,
        in_axes=(0, None, 0),
        out_axes=(0, None),
    )(inputs, state, keys)
