"""One way to run any zoo model on a batch."""

from typing import Any

import equinox as eqx
import jax
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray, Shaped

from .._checks import checked
from .._inputs import model_inputs
from ._abstract import BATCH_AXIS, AbstractModel
from ._foreign import example_call, is_zoo_model, takes_state


@checked
def apply(
    model: AbstractModel | eqx.Module,
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

    Any other ``eqx.Module`` runs too, called on one example as
    ``model(x, *, key=None) -> logits`` when ``state`` is ``None``, or as
    ``model(x, state, *, key=None) -> (logits, state)`` when ``state`` is an
    ``eqx.nn.State`` (its BatchNorm layers built with
    ``axis_name=zoo.models.BATCH_AXIS``); its examples keep the data's shape.

    Args:
        model: any zoo model, or an ``eqx.Module`` of one of those two forms.
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
        TypeError: inputs of a dtype other than ``uint8`` or floating point,
            or a model that takes or returns neither form above.
    """
    inputs = model_inputs(model, inputs, batched=True)
    stateful = takes_state(model, state)
    if stateful and state is None:
        raise ValueError(
            f"{type(model).__name__} is stateful (BatchNorm): pass the `state` "
            "returned by zoo.create_model or eqx.nn.make_with_state."
        )
    one = example_call(model, stateful)
    keys = None if key is None else jax.random.split(key, inputs.shape[0])
    if not stateful:
        if keys is None:
            return jax.vmap(lambda x: one(x, None, None)[0])(inputs), state
        return jax.vmap(lambda x, k: one(x, None, k)[0])(inputs, keys), state
    if keys is None:
        return jax.vmap(
            lambda x, s: one(x, s, None),
            axis_name=BATCH_AXIS,
            in_axes=(0, None),
            out_axes=(0, None),
        )(inputs, state)
    return jax.vmap(
        one, axis_name=BATCH_AXIS, in_axes=(0, None, 0), out_axes=(0, None)
    )(inputs, state, keys)


def output_size(model: Any, state: eqx.nn.State | None, inputs: Any) -> int:
    """How many logits ``model`` gives per example of ``inputs`` (a batch).

    A zoo model's ``out_size``; any other model is traced on one example in
    inference mode (nothing runs), which checks its call form too.
    """
    if is_zoo_model(model):
        return model.out_size
    takes_state(model, state)  # a clear message for a state of the wrong kind
    logits = eqx.filter_eval_shape(
        lambda m, s, x: apply(m, x, s)[0], eqx.nn.inference_mode(model), state,
        inputs[:1],
    )  # fmt: skip
    return int(logits.shape[-1])
