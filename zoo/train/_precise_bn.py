"""BatchNorm statistics that match the weights ("precise BN").

A BatchNorm layer's running statistics average the batch statistics of earlier
steps, computed with earlier weights: after a short run they lag the weights,
and a model evaluated with them can score far below what its weights can do.
``recompute_batch_norm`` re-estimates them with the current weights: the mean
of the batch statistics of a few training batches, each taken as in training
(dropout off).
"""

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Shaped

from .._compiler_options import compiler_options, jit_with_options
from .._inputs import model_inputs
from ..models import apply
from ._precision import Precision, cast_inputs, cast_model

PRECISE_BN_EXAMPLES = 1024
"""Training examples over which ``fit`` re-estimates BatchNorm statistics."""
PRECISE_BN_STEPS = 500
"""``fit`` re-estimates BatchNorm statistics only at evaluations within this
many steps of the run's start, where the weights move fast and the running
averages (the last ~20 batches at momentum 0.9) lag them; later evaluations
keep the running averages (measured on the Benchmarks page)."""


def _norms(model: Any) -> list[eqx.nn.BatchNorm]:
    leaves = jax.tree.leaves(model, is_leaf=lambda m: isinstance(m, eqx.nn.BatchNorm))
    return [m for m in leaves if isinstance(m, eqx.nn.BatchNorm)]


def _indices(norm: eqx.nn.BatchNorm) -> tuple[Any, Any]:
    """(statistics index, flag index) of one layer: the flag is the step
    counter (``mode="batch"``) or the first-time flag (``mode="ema"``)."""
    if norm.mode == "batch":
        return norm.batch_state_index, norm.batch_counter
    return norm.ema_state_index, norm.ema_first_time_index


def _copy(state: eqx.nn.State) -> eqx.nn.State:
    """A copy to ``set`` on: ``State.set`` retires the state it is called on,
    and the caller's must stay usable."""
    leaves, treedef = jax.tree.flatten(state)
    return jax.tree.unflatten(treedef, leaves)


def _reset(norms: list[eqx.nn.BatchNorm], state: eqx.nn.State) -> eqx.nn.State:
    state = _copy(state)
    for norm in norms:
        stats, flag = _indices(norm)
        mean, var = state.get(stats)
        state = state.set(stats, (jnp.zeros_like(mean), jnp.zeros_like(var)))
        old = state.get(flag)  # (its weak type kept, as State.set asks)
        fresh = jnp.ones_like(old) if old.dtype == bool else jnp.zeros_like(old)
        state = state.set(flag, fresh)
    return state


def _dropout_off(model: Any) -> Any:
    def is_dropout(m: Any) -> bool:
        return isinstance(m, eqx.nn.Dropout)

    drops = [m for m in jax.tree.leaves(model, is_leaf=is_dropout) if is_dropout(m)]
    if not drops:
        return model
    return eqx.tree_at(
        lambda m: [d for d in jax.tree.leaves(m, is_leaf=is_dropout) if is_dropout(d)],
        model,
        [eqx.nn.Dropout(d.p, inference=True) for d in drops],
    )


@jit_with_options(compiler_options)
def _batch_statistics(
    model: Any, fresh: eqx.nn.State, inputs: Array, precision: Precision
) -> Any:
    """The BatchNorm entries of the state after one training-mode batch."""
    x = cast_inputs(model_inputs(model, inputs, batched=True), precision)
    _, state = apply(cast_model(model, precision), x, fresh)
    assert state is not None
    return [(state.get(s), state.get(f)) for s, f in map(_indices, _norms(model))]


def recompute_batch_norm(
    model: Any,
    state: eqx.nn.State | None,
    inputs: Shaped[Array, "examples ..."] | Shaped[np.ndarray, "examples ..."],
    *,
    batch_size: int,
    examples: int = PRECISE_BN_EXAMPLES,
    seed: int = 0,
    precision: Precision = "float32",
) -> eqx.nn.State | None:
    """``state`` with every BatchNorm layer's statistics re-estimated.

    Each layer's running mean and variance become the mean, over the batches,
    of its batch statistics with the current weights (``model`` in training
    mode, dropout off), as if the running average had started from that
    estimate; everything else in ``state`` is kept. ``examples`` examples
    (at most ``len(inputs)``, in whole batches) are drawn without replacement,
    the same ones for the same ``seed``. A model without BatchNorm gets
    ``state`` back unchanged.

    Example:
        >>> import jax, numpy as np, zoo
        >>> model, state = zoo.create_model("cnn", key=jax.random.key(0))
        >>> x = np.zeros((256, 1, 28, 28), np.uint8)
        >>> state = zoo.train.recompute_batch_norm(model, state, x, batch_size=128)

    Args:
        model: the model, in training mode (as ``fit`` trains it).
        state: its state.
        inputs: training examples, shape ``(examples, *input_shape)``, taken
            as every zoo call takes them (``uint8`` scaled to ``[0, 1]``).
        batch_size: examples per batch: the training batch size, since batch
            statistics depend on it.
        examples: how many examples to use.
        seed: which examples.
        precision: the dtype the forward pass computes in, as the model is
            trained and evaluated (BatchNorm's statistics are float32 anyway).

    Raises:
        ValueError: ``batch_size`` or ``examples`` below 1, or fewer inputs
            than one batch.
    """
    norms = _norms(model)
    if not norms or state is None:  # (None: a model zoo did not build, no state)
        return state
    if batch_size < 1 or examples < 1:
        raise ValueError(
            f"batch_size and examples must be at least 1, got {batch_size} and "
            f"{examples}."
        )
    if len(inputs) < batch_size:
        raise ValueError(
            f"BatchNorm statistics need one batch of {batch_size} examples; got "
            f"{len(inputs)}. Pass a smaller batch_size or more inputs."
        )
    batches = max(1, min(examples, len(inputs)) // batch_size)
    chosen = np.random.default_rng(seed).permutation(len(inputs))
    chosen = np.sort(chosen[: batches * batch_size])
    train_mode = _dropout_off(eqx.nn.inference_mode(model, False))
    fresh = _reset(norms, state)
    total: Any = None
    flags: Any = None
    for b in range(batches):
        part = np.asarray(inputs[chosen[b * batch_size : (b + 1) * batch_size]])
        moments, flags = zip(
            *_batch_statistics(train_mode, fresh, part, precision), strict=True
        )
        total = moments if total is None else jax.tree.map(jnp.add, total, moments)
    # Every batch started fresh, so every flag says the same: one step taken.
    state = _copy(state)
    for norm, moments, flag in zip(norms, total, flags, strict=True):
        stats_index, flag_index = _indices(norm)
        state = state.set(stats_index, tuple(m / batches for m in moments))
        state = state.set(flag_index, flag)
    return state
