"""How many optimiser steps ``fit`` fuses into one device call.

Each device call has a fixed cost besides its compute, so ``fit`` fuses steps
until a call holds enough work, by XLA's cost analysis of one gradient step.
The measurements behind the constants are on the Benchmarks page.
"""

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.extend.core import ClosedJaxpr

from ..data import Batch
from ..models import AbstractModel
from ._metrics import AnyLoss, softmax_cross_entropy
from ._state import FilterSpec
from ._step import (
    abstract_values,
    count_convolutions,
    split_model,
    traced_gradient,
    unrolls_steps,
)

FLOPS_PER_CALL = 4e9
"""Work per call of unrolled steps (their compile time grows with each step)."""
ROLLED_FLOPS_PER_CALL = 64e9
"""Work per call of steps in a rolled loop (compile time independent of K)."""
MIN_STEPS_PER_CALL = 2
"""Fused even for big models: XLA:CPU runs a lone step slower than two together."""
MAX_STEPS_PER_CALL = 16
"""Unrolled steps per call at most (compile time)."""
MAX_CONVOLUTIONS_PER_CALL = 48
"""Convolutions (forward and gradient) in one call of unrolled steps at most:
XLA:CPU's compile time grows with each."""
MAX_ROLLED_STEPS_PER_CALL = 4096
"""Rolled steps per call at most: an MNIST epoch down to batches of 16, so a
model that costs almost nothing runs an epoch a call. Each call has a fixed
cost on the host (its dispatch, the chunk's hand-over, the callbacks), tens
of microseconds to a millisecond: at 256 steps a call, 13 % of a tiny MLP's
epoch at batch 32."""
CALLS_PER_RUN = 32
"""A run of ``S`` unrolled steps fuses at most ``S // CALLS_PER_RUN`` steps per
call (at least 1): unrolled steps compile about ``K`` times slower than one,
and only many calls pay that back. Recipes of a few epochs are long enough
never to meet this bound; a small job is not. A rolled loop compiles in about
the same time for any ``K``, so it has no such bound."""
MAX_CHUNK_BYTES = 256 * 2**20
"""Input bytes of one chunk at most (two are alive: the one training and the
next); this bound wins over ``MIN_STEPS_PER_CALL``, never going below 1."""


class StepCost(NamedTuple):
    """What ``fit`` needs to know about one training step to fuse steps well."""

    flops: float
    """XLA's estimate of the floating-point operations of one gradient step."""
    unrolled: bool
    """Whether fused steps are unrolled (see ``unrolls_steps``)."""
    convolutions: int = 0
    """Convolution primitives in one gradient step (forward and backward)."""


def _traced_step(
    model: AbstractModel | eqx.Module,
    state: eqx.nn.State | None,
    example: Any,
    batch_size: int,
    loss: AnyLoss,
    trainable: FilterSpec,
) -> tuple[ClosedJaxpr, Callable[..., Any], tuple[Any, ...]]:
    """One gradient step's trace (shared with the training step), its replay,
    and the abstract arguments it was traced at."""
    example = np.asarray(example)
    batch = Batch(  # a batch's inputs, labels and mask: nothing runs on the device
        jax.ShapeDtypeStruct((batch_size, *example.shape), example.dtype),  # pyright: ignore[reportArgumentType]
        jax.ShapeDtypeStruct((batch_size,), jnp.int32),  # pyright: ignore[reportArgumentType]
        jax.ShapeDtypeStruct((batch_size,), jnp.bool_),  # pyright: ignore[reportArgumentType]
    )
    params, frozen, static = split_model(model, trainable)
    weights: Any = jax.ShapeDtypeStruct((batch_size,), jnp.float32)
    args = (params, frozen, state, batch, weights, jax.random.key(0))
    jaxpr, gradient = traced_gradient(loss, static, *args)
    return jaxpr, gradient, abstract_values(args)


def step_cost(
    model: AbstractModel | eqx.Module,
    state: eqx.nn.State | None,
    example: Any,
    batch_size: int,
    loss: AnyLoss = softmax_cross_entropy,
    trainable: FilterSpec = True,
) -> StepCost:
    """The cost of one gradient step of ``model`` on batches of ``example``.

    Its trace is the one the training step replays (``traced_gradient``), so
    the model's Python runs once for the cost and every compiled chunk.
    """
    jaxpr, gradient, args = _traced_step(
        model, state, example, batch_size, loss, trainable
    )
    cost = jax.jit(gradient).trace(*args).lower().cost_analysis()
    if isinstance(cost, list | tuple):  # older JAX: one dict per device
        cost = cost[0] if cost else {}
    flops = float((cost or {}).get("flops", 0.0))
    return StepCost(flops, unrolls_steps(jaxpr), count_convolutions(jaxpr))


def default_steps_per_call(
    step_flops: float,
    *,
    unrolled: bool = True,
    batch_bytes: int = 0,
    convolutions: int = 0,
) -> int:
    """Steps per call for a step of ``step_flops`` FLOPs.

    Unrolled steps: about ``FLOPS_PER_CALL`` of work per call, within
    ``[MIN_STEPS_PER_CALL, MAX_STEPS_PER_CALL]`` and, for a step of
    ``convolutions`` convolutions, ``MAX_CONVOLUTIONS_PER_CALL`` in all; rolled
    ones about ``ROLLED_FLOPS_PER_CALL``, within ``[MIN_STEPS_PER_CALL,
    MAX_ROLLED_STEPS_PER_CALL]``. With ``batch_bytes`` (input bytes of one
    batch) a chunk also stays within ``MAX_CHUNK_BYTES``.
    """
    per_call, most = (
        (FLOPS_PER_CALL, MAX_STEPS_PER_CALL)
        if unrolled
        else (ROLLED_FLOPS_PER_CALL, MAX_ROLLED_STEPS_PER_CALL)
    )
    if unrolled and convolutions > 0:
        most = min(most, MAX_CONVOLUTIONS_PER_CALL // convolutions)
    steps = max(MIN_STEPS_PER_CALL, min(most, int(per_call // max(step_flops, 1.0))))
    if batch_bytes > 0:
        steps = min(steps, max(1, MAX_CHUNK_BYTES // batch_bytes))
    return steps


def fit_to_epoch(steps_per_epoch: int, wanted: int) -> int:
    """``wanted`` steps per call, adjusted to the epoch's length.

    A divisor of ``steps_per_epoch`` in ``[ceil(wanted / 2), wanted]`` if there
    is one (every chunk then has one shape); otherwise ``wanted`` itself, and
    each epoch ends with one shorter chunk (a second shape, compiled once).
    Awkward epoch lengths (a prime number of steps) never shrink the chunks.
    """
    wanted = max(1, min(wanted, steps_per_epoch))
    for k in range(wanted, math.ceil(wanted / 2) - 1, -1):
        if steps_per_epoch % k == 0:
            return k
    return wanted


def steps_per_call(
    model: AbstractModel | eqx.Module,
    state: eqx.nn.State | None,
    example: Any,
    *,
    batch_size: int,
    steps_per_epoch: int,
    loss: AnyLoss = softmax_cross_entropy,
    trainable: FilterSpec = True,
    total_steps: int | None = None,
) -> int:
    """The optimiser steps ``fit`` fuses into one device call by default.

    Enough for the call's work (XLA's FLOP estimate of one gradient step of
    ``model`` on batches of ``batch_size`` examples shaped like ``example``) to
    dwarf its fixed cost; few enough, for steps unrolled around convolutions,
    to compile quickly; a divisor of ``steps_per_epoch`` where one is near.
    Nothing runs on the device. ``loss`` and ``trainable`` are the training
    step's; its trace is the one the step replays, so asking first costs
    ``fit`` no second trace. ``fit`` reports its choice as
    ``FitResult.steps_per_call``. With ``total_steps`` (the run's), a short
    run of unrolled steps fuses fewer, at most ``total_steps // CALLS_PER_RUN``.
    """
    batch_bytes = np.asarray(example).nbytes * batch_size
    if total_steps is not None and total_steps // CALLS_PER_RUN <= 1:
        # Too short a run to fuse unrolled steps; rolled ones, as many as the
        # bytes allow. Either way the step's cost is not needed.
        jaxpr, _, _ = _traced_step(model, state, example, batch_size, loss, trainable)
        if unrolls_steps(jaxpr):
            return 1
        wanted = default_steps_per_call(0.0, unrolled=False, batch_bytes=batch_bytes)
        return fit_to_epoch(steps_per_epoch, wanted)
    cost = step_cost(model, state, example, batch_size, loss, trainable)
    wanted = default_steps_per_call(
        cost.flops,
        unrolled=cost.unrolled,
        batch_bytes=batch_bytes,
        convolutions=cost.convolutions,
    )
    if total_steps is not None and cost.unrolled:
        wanted = min(wanted, total_steps // CALLS_PER_RUN)
    return fit_to_epoch(steps_per_epoch, wanted)
