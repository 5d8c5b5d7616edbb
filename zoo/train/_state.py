"""``TrainState``: everything a training run carries from one step to the next."""

from collections.abc import Callable
from typing import Any, Generic, TypeVar, cast

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, Int, PRNGKeyArray

from .._compiler_options import initialiser_options, jit_with_options
from .._keys import check_key

FilterSpec = bool | Callable[[Any], bool] | Any
"""An Equinox filter spec: a bool, a callable on leaves, or a pytree prefix of them."""

M = TypeVar("M", bound=eqx.Module)
"""The model's class: a zoo model, or any ``eqx.Module`` zoo trains."""


def partition_trainable(model: M, trainable: FilterSpec = True) -> tuple[M, M]:
    """Split ``model`` into the arrays to train and everything else.

    The trainable part holds the inexact arrays that ``trainable`` selects
    (``None`` elsewhere); the rest (frozen arrays, integers, static fields)
    is the other part. ``eqx.combine`` of the two gives ``model`` back.

    Example:
        >>> import jax, zoo
        >>> model, _ = zoo.create_model("mlp", key=jax.random.key(0))
        >>> params, rest = partition_trainable(model, zoo.head_only(model))
        >>> [x.shape for x in jax.tree.leaves(params)]
        [(10, 512), (10,)]

    Args:
        model: the model.
        trainable: an Equinox filter spec over ``model``: ``True`` for all its
            inexact arrays, a pytree prefix of bools (e.g. from
            [`zoo.head_only`][]), or a callable on each leaf.

    Raises:
        ValueError: ``trainable`` is not a prefix of the model's structure.
    """
    try:
        chosen, frozen = eqx.partition(model, trainable)
    except ValueError as error:
        raise ValueError(
            "`trainable` must be a filter spec over the model: a bool, a callable "
            "on each leaf, or a pytree of the model's structure (a prefix of it) "
            f"holding those, e.g. zoo.head_only(model). ({error})"
        ) from None
    params, other = eqx.partition(chosen, eqx.is_inexact_array)
    return params, eqx.combine(frozen, other)


class TrainState(eqx.Module, Generic[M]):
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
        model: the model being trained (a zoo model, or any ``eqx.Module``
            that [`fit`][zoo.train.fit] takes).
        model_state: its ``eqx.nn.State`` (BatchNorm statistics; empty if
            none), or ``None`` for a model zoo did not build that takes none.
        opt_state: the optax state of the trainable parameters, or ``None``
            for a model without an optimiser (saved for inference, or
            loaded from a checkpoint without its optimiser state).
        key: the run's PRNG key; step ``s`` draws from ``fold_in(key, s)``.
        step: optimiser steps taken so far (an ``int32`` scalar).
    """

    model: M
    model_state: eqx.nn.State | None
    opt_state: optax.OptState | None
    key: PRNGKeyArray
    step: Int[Array, ""]

    @classmethod
    def init(
        cls,
        model: M,
        model_state: eqx.nn.State | None,
        optimizer: optax.GradientTransformation | None,
        *,
        key: PRNGKeyArray,
        trainable: FilterSpec = True,
    ) -> "TrainState[M]":
        """A fresh state at step 0, the optimiser initialised on ``model``.

        Args:
            model: the model to train.
            model_state: its state (from ``zoo.create_model`` or
                ``eqx.nn.make_with_state``; ``None`` for a model zoo did not
                build that takes none).
            optimizer: any optax transformation; it sees the model's inexact
                arrays (``eqx.filter(model, eqx.is_inexact_array)``). ``None``
                gives a state without an optimiser (``opt_state`` is ``None``).
            key: the run's PRNG key (dropout, stochastic layers).
            trainable: which arrays the optimiser trains: an Equinox filter
                spec over ``model`` (a pytree prefix of bools, or a callable
                on each leaf), e.g. [`zoo.head_only(model)`][zoo.head_only].
                The optimiser state covers only these; pass the same spec to
                ``make_train_step``. ``True`` (default): every inexact array.
        """
        check_key(key, "TrainState.init")
        opt_state = None
        if optimizer is not None:
            check_optimizer(optimizer, "TrainState.init")
            params, _ = partition_trainable(model, trainable)
            with jax.numpy_dtype_promotion("standard"):  # optax mixes dtypes
                opt_state = _init_optimizer(optimizer, cast(optax.Params, params))
        return cls(model, model_state, opt_state, key, jnp.int32(0))


def check_optimizer(optimizer: object, caller: str) -> None:
    """Refuse (``TypeError``) what is not an optax transformation (an object
    with ``init`` and ``update``), saying what was likely meant."""
    if callable(getattr(optimizer, "init", None)) and callable(
        getattr(optimizer, "update", None)
    ):
        return
    if isinstance(optimizer, int | float) and not isinstance(optimizer, bool):
        got = f"the number {optimizer}: a learning rate goes into one"
        example = f"optax.adam({optimizer})"
    elif callable(optimizer):
        name = getattr(optimizer, "__name__", type(optimizer).__name__)
        got = f"the function {name}: call it to build one"
        example = f"optax.{name}(1e-3)"
    else:
        got, example = (
            f"{type(optimizer).__name__} {optimizer!r}"[:200],
            "optax.adam(1e-3)",
        )
    raise TypeError(
        f"{caller} takes an optax transformation, got {got}, e.g. {example}."
    )


def _init_optimizer(
    optimizer: optax.GradientTransformation, params: optax.Params
) -> optax.OptState:
    """``optimizer.init(params)`` in one compiled program, compiled as the
    initialisers are: run eagerly, each zero-filled array of a new shape is a
    compilation of its own (``cnn`` with Adam: 0.23 s, against 0.04 s). An
    ``init`` that needs concrete values (Python control flow on them, or NumPy
    copies of them) runs eagerly, as optax would run it."""
    init = jit_with_options(initialiser_options)(optimizer.init)
    try:
        return init(params)
    except _NEEDS_CONCRETE_VALUES:
        return optimizer.init(params)


_NEEDS_CONCRETE_VALUES = (
    jax.errors.ConcretizationTypeError,  # bool(), float() and the like
    jax.errors.TracerArrayConversionError,  # np.asarray()
    jax.errors.TracerIntegerConversionError,  # int(), indexing with an array
)
"""What JAX raises where a traced function needs an array's value."""
