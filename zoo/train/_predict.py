"""Predicted classes of a batch, refused where the model's outputs are not finite.

``argmax`` of a row holding NaN is 0: a batch of NaN inputs, or a model whose
weights diverged, would be "predicted" as class 0 without a word. ``predict``
computes in the same program whether each example's inputs and outputs are
finite, and refuses the batch naming the examples and the cause.
"""

import equinox as eqx
import jax
import jax.core
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Int, Shaped

from .._compiler_options import compiler_options, jit_with_options
from ..models import AbstractModel, apply
from ._step import prepare_inputs


@jit_with_options(lambda: compiler_options(inference=True))
def predict_program(
    model: AbstractModel | eqx.Module,
    state: eqx.nn.State | None,
    inputs: Shaped[Array, "batch ..."],
) -> tuple[Int[Array, " batch"], Bool[Array, " batch"], Bool[Array, " batch"]]:
    """The program behind ``predict``: the classes, and whether each example's
    inputs and logits are all finite."""
    model = eqx.nn.inference_mode(model)
    x = prepare_inputs(model, inputs)
    logits, _ = apply(model, x, state)
    inputs_finite = jnp.all(jnp.isfinite(x), axis=tuple(range(1, x.ndim)))
    return (
        jnp.argmax(logits, axis=-1),
        inputs_finite,
        jnp.all(jnp.isfinite(logits), axis=-1),
    )


def predict(
    model: AbstractModel | eqx.Module,
    state: eqx.nn.State | None,
    inputs: Shaped[Array | np.ndarray, "batch ..."],
) -> Int[Array, " batch"]:
    """Predicted classes ``(batch,)`` of a batch ``(batch, *input_shape)``, in
    inference mode.

    Raises:
        ValueError: an example's logits are NaN or infinite, which no class
            describes (the message names the examples, and whether their
            inputs or the model's weights hold the NaN); also the input
            errors of [`apply`][zoo.apply].
    """
    classes, inputs_finite, outputs_finite = predict_program(model, state, inputs)
    if isinstance(outputs_finite, jax.core.Tracer):  # inside the user's jit
        return classes
    bad = np.flatnonzero(~np.asarray(outputs_finite))
    if bad.size:
        shown = ", ".join(map(str, bad[:8])) + (", ..." if bad.size > 8 else "")
        bad_inputs = np.flatnonzero(~np.asarray(inputs_finite))
        cause = (
            f"the inputs of {bad_inputs.size} of them hold NaN or infinity: "
            "clean or drop those examples"
            if bad_inputs.size
            else "their inputs are finite, so the model's weights or state hold "
            "NaN or infinity (it diverged), or its activations overflowed"
        )
        raise ValueError(
            f"predict: the model's outputs are NaN or infinite for "
            f"{bad.size} of {classes.shape[0]} examples ({shown}), which no "
            f"class describes; {cause}."
        )
    return classes
