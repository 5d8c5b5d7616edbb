"""Pure, jitted training and evaluation steps for any zoo model.

One training call runs ``K`` optimiser steps over a chunk of ``K`` batches already
on the device, so Python dispatches once per chunk. The steps run in a rolled
``lax.scan`` (compile time independent of ``K``), except for convolutional
models on CPU, where they are unrolled (see :func:`unrolls_steps`). Each
step's dropout key is ``fold_in(key, step)``: a run is reproducible from one key
and resumes exactly from a step number. Everything travels in one
[`TrainState`][zoo.train.TrainState].

``jax.extend.core`` is used in one place, here, for what JAX's core API has no
call for: listing the operations of a traced step (its convolutions decide
whether fused steps unroll) and replaying a traced jaxpr.
"""

import collections
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jax import lax
from jax.extend.core import ClosedJaxpr, Jaxpr, Primitive, jaxpr_as_fun, subjaxprs
from jaxtyping import Array, Bool, Float, PRNGKeyArray, Shaped

from .._compiler_options import compiler_options, jit_with_options
from .._inputs import model_inputs
from ..data import AnyChunk, Batch, Chunk
from ..models import AbstractModel, apply
from ._metrics import (
    AnyLoss,
    ExampleTotals,
    Metrics,
    masked_loss,
    softmax_cross_entropy,
    weighted_loss,
)
from ._precise_bn import PRECISE_BN_EXAMPLES, PRECISE_BN_STEPS
from ._precision import (
    Precision,
    at_least_float32,
    cast_inputs,
    cast_model,
    check_precision,
)
from ._state import FilterSpec, TrainState, check_optimizer, partition_trainable


def prepare_inputs(
    model: AbstractModel | eqx.Module, inputs: Shaped[Array, "batch ..."]
) -> jax.Array:
    """A batch of raw inputs as ``model`` takes it, by the rule every zoo call
    follows (``zoo._inputs``: ``uint8`` scaled to ``[0, 1]``, shapes checked).

    Raises:
        TypeError: inputs of a dtype other than ``uint8`` or floating point.
        ValueError: examples whose shape the model does not take.
    """
    return model_inputs(model, inputs, batched=True)


def weighted_loss_and_totals(
    model: AbstractModel | eqx.Module,
    state: eqx.nn.State | None,
    batch: Batch,
    weights: Float[Array, " batch"],
    key: PRNGKeyArray | None,
    loss_fn: AnyLoss = softmax_cross_entropy,
    precision: Precision = "float32",
) -> tuple[Float[Array, ""], tuple[eqx.nn.State | None, ExampleTotals]]:
    """What the training step differentiates: the masked mean loss of one
    batch, its weights ``mask / count`` given (``weighted_loss``), and
    ``(new_state, totals)``, each example's terms of the metrics.

    Under ``precision="bfloat16"`` the model and inputs are cast for the
    forward pass and the logits cast back to float32 for the loss.
    """
    inputs = cast_inputs(prepare_inputs(model, jnp.asarray(batch.inputs)), precision)
    logits, new_state = apply(cast_model(model, precision), inputs, state, key=key)
    logits = logits.astype(at_least_float32(logits.dtype))
    labels, mask = jnp.asarray(batch.labels), jnp.asarray(batch.mask)
    targets = None if batch.targets is None else jnp.asarray(batch.targets)
    loss, totals = weighted_loss(loss_fn, logits, labels, mask, weights, targets)
    return loss, (new_state if new_state is not None else state, totals)


def mean_weights(mask: Bool[Array, "*steps batch"]) -> Float[Array, "*steps batch"]:
    """``mask / max(count, 1)`` per batch: the weights of a masked mean."""
    count = jnp.sum(mask, axis=-1, dtype=jnp.int32, keepdims=True)
    return mask.astype(jnp.float32) / jnp.maximum(count, 1).astype(jnp.float32)


class LoweredStep(Protocol):
    """A training step lowered for fixed shapes, to compile ahead of time."""

    def compile(
        self,
    ) -> Callable[[TrainState, AnyChunk], tuple[TrainState, Metrics]]:
        """The compiled program, called like the step itself."""
        ...

    def as_text(self) -> str:
        """The lowered program (StableHLO) as text."""
        ...


class TrainStep:
    """A jitted training step that owns its optimiser, loss and trainable filter.

    Built by [`make_train_step`][zoo.train.make_train_step]; called as
    ``step(train_state, chunk) -> (train_state, metrics)``. ``fit`` takes it in
    place of an optimiser and reads ``optimizer``, ``loss`` and ``trainable``
    from it, so the three are given once, ``batch_norm_examples`` and
    ``batch_norm_steps``: how many training examples ``fit`` re-estimates
    BatchNorm statistics over before an evaluation (0: never), and until which
    step of the run, and ``precision``, which ``fit`` evaluates in.
    """

    def __init__(
        self,
        jitted: Any,
        optimizer: optax.GradientTransformation,
        loss: AnyLoss,
        trainable: FilterSpec,
        batch_norm_examples: int = PRECISE_BN_EXAMPLES,
        precision: Precision = "float32",
        batch_norm_steps: int = PRECISE_BN_STEPS,
    ) -> None:
        self._jitted = jitted
        self.__wrapped__ = jitted  # as functools.wraps: eqx.debug sees through it
        self.optimizer = optimizer
        self.loss = loss
        self.trainable = trainable
        self.batch_norm_examples = batch_norm_examples
        self.precision: Precision = precision
        self.batch_norm_steps = batch_norm_steps

    def recomputes_batch_norm(self, step: int) -> bool:
        """Whether ``fit`` re-estimates BatchNorm statistics before an
        evaluation after ``step`` steps of the run."""
        return self.batch_norm_examples > 0 and step <= self.batch_norm_steps

    def __call__(
        self, train_state: TrainState, chunk: AnyChunk, /
    ) -> tuple[TrainState, Metrics]:
        """Run the chunk's steps: ``(train_state, chunk) -> (train_state, metrics)``."""
        return self._jitted(train_state, chunk)

    def lower(self, train_state: TrainState, chunk: AnyChunk, /) -> LoweredStep:
        """Lower for these argument shapes (``.compile()`` compiles ahead of time)."""
        return self._jitted.lower(train_state, chunk)

    def init(
        self,
        model: AbstractModel | eqx.Module,
        state: eqx.nn.State | None,
        *,
        key: PRNGKeyArray,
    ) -> TrainState:
        """A [`TrainState`][zoo.train.TrainState] for this step's optimiser and
        trainable arrays."""
        return TrainState.init(
            model, state, self.optimizer, key=key, trainable=self.trainable
        )


CONVOLUTION: Primitive = lax.conv_general_dilated_p


def _primitives(jaxpr: Jaxpr) -> Iterator[Primitive]:
    for eqn in jaxpr.eqns:
        yield eqn.primitive
    for sub in subjaxprs(jaxpr):
        yield from _primitives(sub)


def unrolls_steps(jaxpr: Jaxpr | ClosedJaxpr) -> bool:
    """Whether fused steps of this one-step program run unrolled, not in a loop.

    On CPU a step with a convolution is unrolled, because XLA:CPU runs
    convolutions inside a while loop many times slower than in straight-line
    code (figures in the benchmarks page); everything else runs in a rolled
    loop, whose compile time does not grow with the number of steps fused.
    """
    open_jaxpr = jaxpr.jaxpr if isinstance(jaxpr, ClosedJaxpr) else jaxpr
    return jax.default_backend() == "cpu" and count_convolutions(open_jaxpr) > 0


def count_convolutions(jaxpr: Jaxpr | ClosedJaxpr) -> int:
    """How many convolutions ``jaxpr`` holds."""
    open_jaxpr = jaxpr.jaxpr if isinstance(jaxpr, ClosedJaxpr) else jaxpr
    return sum(p is CONVOLUTION for p in _primitives(open_jaxpr))


def _trace_once(fn: Callable[..., Any], *args: Any) -> tuple[ClosedJaxpr, Callable]:
    """``fn`` traced at ``args`` into a jaxpr, and a function replaying that jaxpr
    on arguments of the same structure (cheaper than running ``fn``'s Python again)."""
    closed, out_shape = jax.make_jaxpr(fn, return_shape=True)(*args)
    out_tree = jax.tree.structure(out_shape)
    replay = jaxpr_as_fun(closed)

    def replayed(*args: Any) -> Any:
        outs = replay(*jax.tree.leaves(args))
        # An output the step sets to a constant (eqx.nn.BatchNorm(mode="ema")'s
        # first-time flag) replays as a Python scalar: make it an array again.
        outs = [
            out if isinstance(out, jax.Array) else jnp.asarray(out, var.aval.dtype)
            for out, var in zip(outs, closed.jaxpr.outvars, strict=True)
        ]
        return jax.tree.unflatten(out_tree, outs)

    return closed, replayed


_GRADIENT_TRACES: "collections.OrderedDict[Any, tuple[ClosedJaxpr, Callable]]" = (
    collections.OrderedDict()
)
_KEPT_TRACES = 8  # the latest few models' traces (a fit needs one)


def weak_type(x: Any) -> bool:
    """Whether ``x`` (an array, tracer or ``ShapeDtypeStruct``) is weakly typed."""
    if isinstance(x, jax.ShapeDtypeStruct):
        return bool(x.weak_type)
    return jax.typeof(x).weak_type


def _signature(tree: Any) -> tuple[Any, ...]:
    """The structure and abstract values of ``tree``'s leaves: what a jaxpr
    traced at ``tree`` is specific to."""
    leaves, treedef = jax.tree.flatten(tree)
    return (treedef, *((x.shape, x.dtype, weak_type(x)) for x in leaves))


def abstract_values(tree: Any) -> Any:
    """``tree`` with each array replaced by its ``jax.ShapeDtypeStruct``."""
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, weak_type=weak_type(x)), tree
    )


def traced_gradient(
    loss: AnyLoss,
    static: Any,
    params: Any,
    frozen: Any,
    state: eqx.nn.State | None,
    batch: Batch,
    weights: Float[Array, " batch"],
    key: PRNGKeyArray,
    precision: Precision = "float32",
) -> tuple[ClosedJaxpr, Callable]:
    """One gradient step's jaxpr, traced once per model and shapes, and a
    function replaying it on ``(params, frozen, state, batch, weights, key)``.

    The replay returns ``(grads, (new_state, totals))`` (``ExampleTotals``);
    ``weights`` are the batch's ``mean_weights``. ``static`` is the
    model's non-array part, ``params`` its trainable arrays and ``frozen`` the
    others. ``steps_per_call`` (the cost) and every chunk length of the
    training step share the one trace: the model's Python runs once per fit.
    """
    args = (params, frozen, state, batch, weights, key)
    static_leaves, static_def = jax.tree.flatten(static)
    cache_key: Any = (loss, precision, static_def, *static_leaves, _signature(args))
    try:
        hash(cache_key)
    except TypeError:  # a model with unhashable static parts: trace each time
        cache_key = None
    if cache_key in _GRADIENT_TRACES:
        _GRADIENT_TRACES.move_to_end(cache_key)
        return _GRADIENT_TRACES[cache_key]

    def trainable_loss(
        params: Any,
        frozen: Any,
        state: Any,
        batch: Batch,
        weights: Array,
        key: PRNGKeyArray,
    ) -> Any:
        model = eqx.combine(params, frozen, static)
        return weighted_loss_and_totals(
            model, state, batch, weights, key, loss, precision
        )

    grad = eqx.filter_grad(trainable_loss, has_aux=True)
    traced = _trace_once(grad, *abstract_values(args))
    if cache_key is None:
        return traced
    _GRADIENT_TRACES[cache_key] = traced
    while len(_GRADIENT_TRACES) > _KEPT_TRACES:
        _GRADIENT_TRACES.popitem(last=False)
    return traced


def split_model(model: Any, trainable: FilterSpec) -> tuple[Any, Any, Any]:
    """``(params, frozen, static)``: the trainable arrays, the other arrays and
    the rest of ``model``; ``eqx.combine`` of the three is ``model``."""
    params, rest = partition_trainable(model, trainable)
    frozen, static = eqx.partition(rest, eqx.is_array)
    return params, frozen, static


def make_train_step(
    optimizer: optax.GradientTransformation,
    *,
    loss: AnyLoss = softmax_cross_entropy,
    max_traces: int | None = None,
    unroll: bool | None = None,
    trainable: FilterSpec = True,
    batch_norm_examples: int = PRECISE_BN_EXAMPLES,
    precision: Precision = "float32",
    batch_norm_steps: int = PRECISE_BN_STEPS,
) -> TrainStep:
    """Build the jitted training call: ``step(train_state, chunk)``.

    ``step(train_state, chunk) -> (train_state, metrics)`` runs one optimiser
    step per batch of ``chunk`` (a [`Chunk`][zoo.data.Chunk] of shape
    ``(K, B, ...)``; or an [`IndexedChunk`][zoo.data.IndexedChunk], rows of a
    training set on the device, or an [`AugmentedChunk`][zoo.data.AugmentedChunk],
    both completed in the program) in one compiled program and returns the new
    [`TrainState`][zoo.train.TrainState] and the summed training
    [`Metrics`][zoo.train.Metrics] of the chunk. It works for stateless models,
    BatchNorm models (the model state threads through) and dropout (step ``s``
    draws from ``fold_in(key, s)``, so a run resumes exactly from a step).

    Example:
        >>> import jax, optax, zoo
        >>> smooth = zoo.train.label_smoothing(0.1)
        >>> step = make_train_step(optax.adam(1e-3), loss=smooth)

    Args:
        optimizer: any optax transformation; the train state's ``opt_state``
            comes from it (``TrainState.init``).
        loss: the per-example loss ``(logits, labels) -> (B,)``: softmax
            cross-entropy by default, or e.g.
            [`label_smoothing`][zoo.train.label_smoothing].
        max_traces: if set, tracing more often than this raises (a guard
            against silent recompilation; see ``eqx.debug.assert_max_traces``).
        unroll: run the ``K`` steps as straight-line code (``True``) or in a
            rolled ``lax.scan`` (``False``). ``None`` decides per model:
            unrolled for convolutional models on CPU (XLA:CPU runs convolutions
            many times slower inside a loop), rolled otherwise. Both compute
            the same steps.
        trainable: the arrays to train, as given to ``TrainState.init`` (an
            Equinox filter spec: e.g. [`zoo.head_only(model)`][zoo.head_only]
            to train the classifier on a frozen backbone). Gradients are taken
            only for these; the others pass through unchanged, bitwise.
        batch_norm_examples: before an evaluation early in the run (see
            ``batch_norm_steps``), ``fit`` re-estimates the BatchNorm
            statistics over this many training examples with the current
            weights ("precise BN", see
            [`recompute_batch_norm`][zoo.train.recompute_batch_norm]), so that
            a short run's accuracy is what its weights can do; 0 keeps the
            running averages. Models without BatchNorm ignore it.
        precision: ``"float32"``, or ``"bfloat16"``: mixed precision, the
            forward and backward in bfloat16 while parameters, gradients,
            optimiser state, the loss and BatchNorm statistics stay float32
            (``fit`` evaluates in it too). Fast where bfloat16 is (GPUs, TPUs);
            on most CPUs slower than float32.
        batch_norm_steps: re-estimate only at evaluations after at most this
            many steps of the run (counted from its start, a resumed run
            included). Later, the running averages have settled on the
            weights and are kept: re-estimated over fewer batches, they read
            a few test images lower at the end of a recipe.

    Raises:
        TypeError: ``optimizer`` is not an optax transformation (e.g. the
            function ``optax.adam`` itself), or ``loss`` is not a function.
        ValueError: ``batch_norm_examples`` or ``batch_norm_steps`` below 0,
            or another ``precision``.
    """
    check_optimizer(optimizer, "make_train_step")
    if not callable(loss):
        raise TypeError(
            f"make_train_step's loss must be a function (logits, labels) -> "
            f"losses, e.g. zoo.train.label_smoothing(0.1), got {loss!r}."
        )
    check_precision(precision)
    if batch_norm_examples < 0:
        raise ValueError(
            f"batch_norm_examples must be 0 (off) or more, got {batch_norm_examples}."
        )
    if batch_norm_steps < 0:
        raise ValueError(f"batch_norm_steps must be 0 or more, got {batch_norm_steps}.")

    @jit_with_options(compiler_options)
    @eqx.debug.assert_max_traces(max_traces=max_traces)
    def train_chunk(ts: TrainState, chunk: AnyChunk) -> tuple[TrainState, Metrics]:
        # Gradients are taken with respect to the trainable arrays only.
        params, frozen, static = split_model(ts.model, trainable)
        if not isinstance(chunk, Chunk):  # completed here: gathered, augmented
            chunk = chunk.gather()

        def one_step(carry: Any, xs: tuple[Batch, Array, Array]) -> tuple[Any, None]:
            params, state, opt_state, total = carry
            batch, weights, i = xs
            key = jax.random.fold_in(ts.key, ts.step + i)
            args = (params, frozen, state, batch, weights, key)
            _, gradient = traced_gradient(loss, static, *args, precision)
            grads, (state, totals) = gradient(*args)
            # optax mixes Python floats with int32 counters (adam's bias
            # correction), which strict dtype promotion would refuse.
            with jax.numpy_dtype_promotion("standard"):
                updates, opt_state = optimizer.update(grads, opt_state, params)
            params = eqx.apply_updates(params, updates)
            return (params, state, opt_state, total + totals), None

        steps, batch_size = chunk.labels.shape
        # Sums over the batch wait until after the steps: a step only adds
        # elementwise, and the weights of its masked mean come precomputed.
        zero = ExampleTotals.zero(batch_size)
        carry = (params, ts.model_state, ts.opt_state, zero)
        indices = jnp.arange(steps, dtype=jnp.int32)
        xs = (Batch(*chunk), mean_weights(jnp.asarray(chunk.mask)), indices)
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
        new = TrainState(
            eqx.combine(params, frozen, static),
            state,
            opt_state,
            ts.key,
            ts.step + steps,
        )
        return new, total.metrics(jnp.sum(chunk.mask, dtype=jnp.int32))

    return TrainStep(
        train_chunk, optimizer, loss, trainable, batch_norm_examples, precision,
        batch_norm_steps,
    )  # fmt: skip


@jit_with_options(lambda: compiler_options(inference=True))
def eval_step(
    model: AbstractModel | eqx.Module,
    state: eqx.nn.State | None,
    batch: Batch,
    loss: AnyLoss = softmax_cross_entropy,
    precision: Precision = "float32",
) -> Metrics:
    """Summed loss and accuracy of ``model`` in inference mode on one batch.

    Padding rows (``mask`` False) are ignored, so summing the results over an
    evaluation pipeline gives exact totals over the data set. ``precision``
    as in [`make_train_step`][zoo.train.make_train_step].
    """
    model = eqx.nn.inference_mode(model)
    inputs = cast_inputs(prepare_inputs(model, jnp.asarray(batch.inputs)), precision)
    logits, _ = apply(cast_model(model, precision), inputs, state)
    logits = logits.astype(at_least_float32(logits.dtype))
    labels, mask = jnp.asarray(batch.labels), jnp.asarray(batch.mask)
    _, metrics = masked_loss(loss, logits, labels, mask)
    return metrics
