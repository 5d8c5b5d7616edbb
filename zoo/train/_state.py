"""``TrainState``: everything a training run carries from one step to the next."""

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, Int, PRNGKeyArray

from ..models import AbstractModel


class TrainState(eqx.Module):
    """The model, its state, the optimiser state, the PRNG key and the step count.

    It is the one value that the training step, the loop, checkpoints and
    [`FitResult`][zoo.train.FitResult] pass around. It is a pytree, so it goes
    through ``jax.jit``, ``replicate`` and ``local_copy`` whole.

    Example:
        >>> import jax, optax, zoo
        >>> model, state = zoo.create_model("toy_mlp", key=jax.random.key(0))
        >>> ts = zoo.train.TrainState.init(
        ...     model, state, optax.adam(1e-3), key=jax.random.key(1))
        >>> int(ts.step)
        0

    Attributes:
        model: the model being trained.
        model_state: its ``eqx.nn.State`` (BatchNorm statistics; empty if none).
        opt_state: the optax state of the trainable parameters, or ``None``
            for a model without an optimiser (saved for inference, or
            loaded from a checkpoint without its optimiser state).
        key: the run's PRNG key; step ``s`` draws from ``fold_in(key, s)``.
        step: optimiser steps taken so far (an ``int32`` scalar).
    """

    model: AbstractModel
    model_state: eqx.nn.State
    opt_state: optax.OptState | None
    key: PRNGKeyArray
    step: Int[Array, ""]

    @classmethod
    def init(
        cls,
        model: AbstractModel,
        model_state: eqx.nn.State,
        optimizer: optax.GradientTransformation | None,
        *,
        key: PRNGKeyArray,
    ) -> "TrainState":
        """A fresh state at step 0, the optimiser initialised on ``model``.

        Args:
            model: the model to train.
            model_state: its state (from ``zoo.create_model`` or
                ``eqx.nn.make_with_state``).
            optimizer: any optax transformation; it sees the model's inexact
                arrays (``eqx.filter(model, eqx.is_inexact_array)``). ``None``
                gives a state without an optimiser (``opt_state`` is ``None``).
            key: the run's PRNG key (dropout, stochastic layers).
        """
        opt_state = None
        if optimizer is not None:
            with jax.numpy_dtype_promotion("standard"):  # optax mixes dtypes
                opt_state = optimizer.init(eqx.filter(model, eqx.is_inexact_array))
        return cls(model, model_state, opt_state, key, jnp.int32(0))
