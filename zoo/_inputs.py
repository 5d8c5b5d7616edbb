"""One rule for what a model takes, at every entry point.

``model(x)``, ``zoo.apply``, ``zoo.features``, ``predict``, ``evaluate`` and
``fit`` all pass their inputs through :func:`model_inputs`:

* NumPy and JAX arrays alike;
* ``uint8`` images are scaled to ``[0, 1]`` as ``float32``; other floating
  dtypes pass through; any other dtype is refused, saying how to convert it;
* an example must have the model's ``input_shape``, or, for a model that
  declares ``flattens_input`` (the MLP), the same number of values; a model
  that declares no ``input_shape`` (any ``eqx.Module`` zoo did not build)
  takes examples of the data's own shape;
* anything else is refused, naming the shapes; an image that is the model's
  input channels-last is refused with the exact transpose to apply.
"""

import math
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np


def model_inputs(model: Any, x: Any, *, batched: bool) -> jax.Array:
    """``x`` (one example, or a batch of them) as ``model`` takes it.

    Raises:
        TypeError: a dtype other than ``uint8`` or floating point.
        ValueError: examples whose shape the model does not take.
    """
    name = type(model).__name__
    if not isinstance(x, jax.Array | np.ndarray):
        fix = "wrap it with jnp.asarray(...)"
        if isinstance(x, eqx.nn.State):
            fix = (
                "the state went where the inputs go: the order is "
                "predict(model, state, inputs) and apply(model, inputs, state)"
            )
        raise TypeError(
            f"{name} takes a NumPy or JAX array, got {type(x).__name__}: {fix}."
        )
    if x.dtype == np.uint8:
        x = jnp.asarray(x).astype(jnp.float32) / 255.0
    elif not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(
            f"{name} takes uint8 images (scaled to [0, 1]) or floating-point "
            f"inputs, got dtype {x.dtype}: convert with x.astype(np.float32) "
            "(and scale to [0, 1] if these are 0-255 pixel values)."
        )
    x = jnp.asarray(x)
    lead = 1 if batched else 0
    declared = getattr(model, "input_shape", None)
    if declared is None:  # a model zoo did not build: it takes the data's shape
        if x.ndim < lead:
            raise ValueError(f"{name} takes a batch of examples, got a scalar.")
        return x
    expected = tuple(declared)
    if x.ndim < lead:
        raise ValueError(f"{name} takes a batch (batch, *{expected}), got a scalar.")
    example = tuple(x.shape[lead:])
    if example == expected:
        return x
    if getattr(model, "flattens_input", False) and math.prod(example) == math.prod(
        expected
    ):
        return x.reshape(*x.shape[:lead], *expected)
    what = "Examples of the batch have" if batched else "The input has"
    message = f"{what} shape {example}, but {name} takes {expected} (its input_shape)."
    if len(expected) == 3 and example == (expected[1], expected[2], expected[0]):
        order = "(0, 3, 1, 2)" if batched else "(2, 0, 1)"
        message += (
            f" These look like channels-last images (height, width, channels): "
            f"transpose them with x.transpose{order}."
        )
    elif batched and tuple(x.shape) == expected:
        message += " This is ONE example: add a batch axis, x[None]."
    elif not batched and example[1:] == expected:
        message += (
            " Models take ONE example: batch with jax.vmap(model)(xs) or "
            "zoo.apply(model, xs, state)."
        )
    else:
        message += " Build the model for this shape, or reshape the data yourself."
    raise ValueError(message)
