"""Pure, jitted training and evaluation steps for any zoo model.

One training call runs ``K`` optimiser steps over a chunk of ``K`` batches already
on the device, so Python dispatches once per chunk. The steps run in a rolled
``lax.scan`` (compile time independent of ``K``), except for convolutional
models on CPU, where they are unrolled (see :func:`unrolls_steps`). Each
step's dropout key is ``fold_in(key, step)``: a run is reproducible from one key
and resumes exactly from a step number.
"""

import math
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jax.extend.core import ClosedJaxpr, Jaxpr, jaxpr_as_fun, subjaxprs
from jaxtyping import Array, Int, PRNGKeyArray, Shaped

from ..models import AbstractModel, apply
from ._metrics import Metrics, cross_entropy

Chunk = dict[str, Any]
"""``K`` stacked batches: ``inputs (K, B, ...)``, ``labels (K, B)``, ``mask (K, B)``."""


def prepare_inputs(
    model: AbstractModel, inputs: Shaped[Array, "batch ..."]
) -> jax.Array:
    """Turn a batch of raw inputs into what ``model`` takes.

    ``uint8`` images are scaled to ``[0, 1]`` as ``float32`` (on the device, so
    the host moves 4x fewer bytes); floating inputs pass through; any other dtype
    is refused. Each example is reshaped to ``model.input_shape`` when its size
    matches (images into an MLP are flattened).

    Raises:
        TypeError: inputs of an integer dtype other than ``uint8``.
        ValueError: examples whose size does not match the model's input.
    """
    if inputs.dtype == jnp.uint8:
        inputs = inputs.astype(jnp.float32) / 255.0
    elif not jnp.issubdtype(inputs.dtype, jnp.floating):
        raise TypeError(
            f"Inputs of dtype {inputs.dtype} are not supported: pass uint8 images "
            "(scaled to [0, 1] here) or floating-point arrays."
        )
    batch, example = inputs.shape[0], tuple(inputs.shape[1:])
    if example != model.input_shape:
        if math.prod(example) != math.prod(model.input_shape):
            raise ValueError(
                f"Examples of shape {example} do not fit {type(model).__name__} "
                f"with input_shape {model.input_shape}."
            )
        inputs = inputs.reshape(batch, *model.input_shape)
    return inputs


def _loss(
    model: AbstractModel,
    state: eqx.nn.State,
    batch: Chunk,
    key: PRNGKeyArray,
) -> tuple[jax.Array, tuple[eqx.nn.State, Metrics]]:
    inputs = prepare_inputs(model, batch["inputs"])
    logits, new_state = apply(model, inputs, state, key=key)
    loss, metrics = cross_entropy(logits, batch["labels"], batch["mask"])
    return loss, (new_state if new_state is not None else state, metrics)


TrainStep = Callable[..., Any]


CONVOLUTION = "conv_general_dilated"


def _primitive_names(jaxpr: Jaxpr) -> Iterator[str]:
    for eqn in jaxpr.eqns:
        yield eqn.primitive.name
    for sub in subjaxprs(jaxpr):
        yield from _primitive_names(sub)


def unrolls_steps(jaxpr: Jaxpr | ClosedJaxpr) -> bool:
    """Whether fused steps of this one-step program run unrolled, not in a loop.

    XLA:CPU runs convolutions inside a while loop (a rolled ``lax.scan``) about
    9x slower than in straight-line code (the ``stax_cnn`` step on 2 cores: 78
    against 8.8 s per epoch), so on CPU a step with a convolution is unrolled;
    everything else runs in a rolled loop, whose compile time does not grow
    with the number of steps fused.
    """
    open_jaxpr = jaxpr.jaxpr if isinstance(jaxpr, ClosedJaxpr) else jaxpr
    return jax.default_backend() == "cpu" and CONVOLUTION in set(
        _primitive_names(open_jaxpr)
    )


def _trace_once(fn: Callable[..., Any], *args: Any) -> tuple[ClosedJaxpr, Callable]:
    """``fn`` traced at ``args`` into a jaxpr, and a function replaying that jaxpr
    on arguments of the same structure (cheaper than running ``fn``'s Python again)."""
    closed, out_shape = jax.make_jaxpr(fn, return_shape=True)(*args)
    out_tree = jax.tree.structure(out_shape)
    replay = jaxpr_as_fun(closed)

    def replayed(*args: Any) -> Any:
        return jax.tree.unflatten(out_tree, replay(*jax.tree.leaves(args)))

    return closed, replayed


class StepCost(NamedTuple):
    """What ``fit`` needs to know about one training step to fuse steps well."""

    flops: float
    """XLA's estimate of the floating-point operations of one gradient step."""
    unrolled: bool
    """Whether fused steps are unrolled (see :func:`unrolls_steps`)."""


def step_cost(
    model: AbstractModel, state: eqx.nn.State, example: Any, batch_size: int
) -> StepCost:
    """The cost of one gradient step of ``model`` on batches of ``example``.

    Args:
        model: the model.
        state: its state.
        example: one input example (any array with the dataset's shape/dtype).
        batch_size: examples per step.
    """
    example = jnp.asarray(example)
    batch = {
        "inputs": jnp.zeros((batch_size, *example.shape), example.dtype),
        "labels": jnp.zeros((batch_size,), jnp.int32),
        "mask": jnp.ones((batch_size,), jnp.bool_),
    }
    args = (model, state, batch, jax.random.key(0))
    dynamic, static = eqx.partition(args, eqx.is_array)
    grad = eqx.filter_grad(_loss, has_aux=True)
    traced = jax.jit(lambda dynamic: grad(*eqx.combine(dynamic, static))).trace(dynamic)
    cost = traced.lower().cost_analysis()
    if isinstance(cost, list | tuple):  # older JAX: one dict per device
        cost = cost[0] if cost else {}
    flops = float((cost or {}).get("flops", 0.0))
    return StepCost(flops, unrolls_steps(traced.jaxpr))


def make_train_step(
    optimizer: optax.GradientTransformation,
    *,
    max_traces: int | None = None,
    unroll: bool | None = None,
) -> TrainStep:
    """Build the jitted training call for ``optimizer``.

    The returned function is
    ``step(model, state, opt_state, chunk, key, step) -> (model, state, opt_state,
    metrics)``: it runs one optimiser step per batch of ``chunk`` (shape
    ``(K, B, ...)``) in one compiled program and returns the updated pytrees and the
    summed training [`Metrics`][zoo.train.Metrics] of the chunk. It works for
    stateless models, BatchNorm models (``state`` threads through) and dropout
    (the key of step ``s`` is ``fold_in(key, s)``).

    Args:
        optimizer: any optax transformation; its state comes from
            ``optimizer.init(eqx.filter(model, eqx.is_inexact_array))``.
        max_traces: if set, tracing more often than this raises (a guard
            against silent recompilation; see ``eqx.debug.assert_max_traces``).
        unroll: run the ``K`` steps as straight-line code (``True``) or in a
            rolled ``lax.scan`` (``False``). ``None`` decides per model:
            unrolled for convolutional models on CPU, where XLA runs
            convolutions in a loop about 9x slower, rolled otherwise (see
            [`unrolls_steps`][zoo.train.unrolls_steps]). Both compute the same
            steps.
    """

    @eqx.filter_jit
    @eqx.debug.assert_max_traces(max_traces=max_traces)
    def train_chunk(
        model: AbstractModel,
        state: eqx.nn.State,
        opt_state: optax.OptState,
        chunk: Chunk,
        key: PRNGKeyArray,
        step: Int[Array, ""],
    ) -> tuple[AbstractModel, eqx.nn.State, optax.OptState, Metrics]:
        params, static = eqx.partition(model, eqx.is_inexact_array)

        def one_step(carry: Any, xs: tuple[Chunk, jax.Array]) -> tuple[Any, None]:
            params, state, opt_state, total = carry
            batch, i = xs
            grads, (state, metrics) = eqx.filter_grad(_loss, has_aux=True)(
                eqx.combine(params, static),
                state,
                batch,
                jax.random.fold_in(key, step + i),
            )
            # optax mixes Python floats with int32 counters (adam's bias
            # correction), which strict dtype promotion would refuse.
            with jax.numpy_dtype_promotion("standard"):
                updates, opt_state = optimizer.update(grads, opt_state, params)
            params = eqx.apply_updates(params, updates)
            return (params, state, opt_state, total + metrics), None

        carry = (params, state, opt_state, Metrics.zero())
        steps = chunk["labels"].shape[0]
        xs = (chunk, jnp.arange(steps, dtype=jnp.int32))
        # Trace the step's Python once; the loop replays its jaxpr.
        jaxpr, body = _trace_once(one_step, carry, jax.tree.map(lambda x: x[0], xs))
        unrolled = unrolls_steps(jaxpr) if unroll is None else unroll
        # (Not lax.scan(unroll=True): it keeps a while loop for a single step.)
        if unrolled or steps == 1:
            for i in range(steps):
                carry, _ = body(carry, jax.tree.map(lambda x, i=i: x[i], xs))
        else:
            carry, _ = jax.lax.scan(body, carry, xs)
        params, state, opt_state, total = carry
        return eqx.combine(params, static), state, opt_state, total

    return train_chunk


@eqx.filter_jit
def eval_step(model: AbstractModel, state: eqx.nn.State, batch: Chunk) -> Metrics:
    """Summed loss and accuracy of ``model`` in inference mode on one batch.

    Padding rows (``batch["mask"]`` False) are ignored, so summing the results
    over an evaluation pipeline gives exact totals over the data set.
    """
    model = eqx.nn.inference_mode(model)
    inputs = prepare_inputs(model, batch["inputs"])
    logits, _ = apply(model, inputs, state)
    _, metrics = cross_entropy(logits, batch["labels"], batch["mask"])
    return metrics


@eqx.filter_jit
def predict(
    model: AbstractModel, state: eqx.nn.State, inputs: Shaped[Array, "batch ..."]
) -> Int[Array, " batch"]:
    """Predicted classes of a batch, in inference mode."""
    model = eqx.nn.inference_mode(model)
    logits, _ = apply(model, prepare_inputs(model, inputs), state)
    return jnp.argmax(logits, axis=-1)
