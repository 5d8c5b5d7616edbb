"""Mixed precision: float32 parameters, the forward and backward in bfloat16.

A precision policy names the dtype a model computes in. Under
``"bfloat16"`` the training step casts a float32 copy of the model's floating
arrays (BatchNorm layers excepted) and the inputs to bfloat16 inside the
differentiated function, so the parameters, their gradients and the optimiser
state stay float32; the logits are cast back to float32 before the loss, and
BatchNorm computes its statistics (and keeps its state) in float32 whatever
the dtype of its input. Evaluation runs in the same policy.
"""

from typing import Literal, TypeAlias, get_args

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array

from ..models._conv import at_least_float32 as at_least_float32

Precision: TypeAlias = Literal["float32", "bfloat16"]
"""The dtype a model computes in; parameters are float32 under both."""

PRECISIONS: tuple[str, ...] = get_args(Precision)


def check_precision(precision: object) -> None:
    """Raise ``ValueError`` unless ``precision`` is one of ``PRECISIONS``."""
    if precision not in PRECISIONS:
        raise ValueError(
            f"precision must be one of {', '.join(map(repr, PRECISIONS))}, got "
            f"{precision!r}. (float16 would need loss scaling; bfloat16 does not.)"
        )


def compute_dtype(precision: Precision) -> jnp.dtype | None:
    """The dtype of the forward pass under ``precision``; ``None``: as stored."""
    return None if precision == "float32" else jnp.dtype(jnp.bfloat16)


def cast_model(model: eqx.Module, precision: Precision) -> eqx.Module:
    """``model`` with its floating arrays in the compute dtype of
    ``precision``; BatchNorm layers keep theirs (float32), and so do models
    under ``"float32"``. Differentiate through it: gradients arrive in the
    stored dtype."""
    dtype = compute_dtype(precision)
    if dtype is None:
        return model

    def cast(x: object) -> object:
        if isinstance(x, jax.Array) and jnp.issubdtype(x.dtype, jnp.floating):
            return x.astype(dtype)
        return x

    return jax.tree.map(cast, model, is_leaf=lambda x: isinstance(x, eqx.nn.BatchNorm))


def cast_inputs(inputs: Array, precision: Precision) -> Array:
    """Floating ``inputs`` in the compute dtype of ``precision``."""
    dtype = compute_dtype(precision)
    return inputs if dtype is None else inputs.astype(dtype)
