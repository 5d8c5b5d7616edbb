"""REFERENCE training loops, written for the benchmarks; not part of zoo.

zoo's training speed is measured against these. They share nothing with zoo's
training path (no ``zoo.train`` step or loop, no ``zoo.data`` pipelines, no
``zoo.apply``) but its compile options.
Their input is the same in-memory NumPy arrays (from ``zoo.data.load_mnist``).
The per-record and floor references train zoo's model classes (``zoo.MLP``,
``zoo.CNN``), called with ``jax.vmap`` by hand, so the arithmetic compared is
the same model's.

* :func:`seed003_epoch`: the JAX MNIST tutorial (seed 003) as written there: raw JAX,
  params a list of ``(W, b)``, a ``vmap``'d per-example ``predict``, a
  ``jax.jit``'d SGD ``update``, one dispatch per batch, batches sliced from
  NumPy.
* :func:`make_eqx_step` + :func:`per_record_pipeline`: what a user following the
  Grain and Equinox docs writes: ``MapDataset.source(ds).shuffle().map().batch()``
  feeding an ``eqx.filter_jit`` step, once per batch.
* :func:`make_floor_scan`, :func:`make_floor_step`, :func:`make_floor_chunk`: the
  compute-only floor: the same model, loss and optax optimiser on batches that
  are already on the device, with no pipeline and as little Python as possible.

The per-record step and the floors compile with ``zoo.train.compiler_options()``
(the options of zoo's own training programs) unless given others, so that
against zoo they differ in the loop and the pipeline, not in the kernels.

Not a benchmark: it prints nothing when run.
"""

import functools
from collections.abc import Callable, Iterable
from typing import Any, cast

import equinox as eqx
import grain
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.scipy.special import logsumexp

import zoo

BATCH_AXIS = zoo.models.BATCH_AXIS  # the vmap axis the models' BatchNorm reduces over

# --------------------------------------------------------------------------
# Seed 003: the JAX MNIST tutorial loop, as the tutorial writes it.
# --------------------------------------------------------------------------

Seed003Params = list[tuple[jax.Array, jax.Array]]

layer_sizes = [784, 512, 512, 10]
step_size = 0.01
n_targets = 10


def random_layer_params(
    m: int, n: int, key: jax.Array, scale: float = 1e-2
) -> tuple[jax.Array, jax.Array]:
    """Seed 003: initialise one dense layer's ``(W, b)``."""
    w_key, b_key = jax.random.split(key)
    return (
        scale * jax.random.normal(w_key, (n, m)),
        scale * jax.random.normal(b_key, (n,)),
    )


def init_network_params(sizes: list[int], key: jax.Array) -> Seed003Params:
    """Seed 003: every layer's ``(W, b)`` of a dense network."""
    keys = jax.random.split(key, len(sizes))
    return [
        random_layer_params(m, n, k)
        for m, n, k in zip(sizes[:-1], sizes[1:], keys, strict=False)
    ]


def predict(params: Seed003Params, image: jax.Array) -> jax.Array:
    """Seed 003: log-probabilities of ONE flat image."""
    activations = image
    for w, b in params[:-1]:
        outputs = jnp.dot(w, activations) + b
        activations = jnp.maximum(0, outputs)
    final_w, final_b = params[-1]
    logits = jnp.dot(final_w, activations) + final_b
    return logits - logsumexp(logits)


batched_predict = jax.vmap(predict, in_axes=(None, 0))


def one_hot(x: Any, k: int, dtype: Any = jnp.float32) -> jax.Array:
    """Seed 003: one-hot labels, computed eagerly per batch as the tutorial does."""
    return jnp.array(x[:, None] == jnp.arange(k), dtype)


def loss(params: Seed003Params, images: Any, targets: Any) -> jax.Array:
    """Seed 003: ``-mean(log_probs * one_hot)``."""
    preds = batched_predict(params, images)
    return -jnp.mean(preds * targets)


@jax.jit
def update(params: Seed003Params, x: Any, y: Any) -> Seed003Params:
    """Seed 003: one SGD step, compiled."""
    grads = jax.grad(loss)(params, x, y)
    return [
        (w - step_size * dw, b - step_size * db)
        for (w, b), (dw, db) in zip(params, grads, strict=True)
    ]


def seed003_epoch(
    params: Seed003Params,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    steps: int,
    batch_size: int,
    rng: np.random.Generator,
) -> Seed003Params:
    """One epoch of the seed-003 loop: one ``update`` dispatch per batch.

    As the tutorial, except that the data is NumPy arrays rather than tf.data:
    ``images`` are ``(N, 784)`` float32 already scaled to [0, 1], each epoch is
    shuffled with a NumPy permutation and each batch gathered from it, and only
    full batches are used (``steps`` of them), so ``update`` compiles once.
    """
    perm = rng.permutation(len(labels))
    for i in range(steps):
        idx = perm[i * batch_size : (i + 1) * batch_size]
        x = images[idx]
        y = one_hot(labels[idx], n_targets)
        params = update(params, x, y)
    return jax.block_until_ready(params)


# --------------------------------------------------------------------------
# Shared by the per-record and floor references: the model on a batch, by hand.
# --------------------------------------------------------------------------


def _needs_key(model: Any) -> bool:
    dropout = getattr(model, "dropout", None)
    return dropout is not None and dropout.p > 0 and not dropout.inference


def batched_logits(
    model: Any, state: eqx.nn.State, x: jax.Array, key: jax.Array | None
) -> tuple[jax.Array, eqx.nn.State]:
    """``jax.vmap`` the one-example model over a batch, as Equinox's docs do.

    BatchNorm models map with ``axis_name`` so statistics span the batch; dropout
    models get one key per example.
    """
    keys = (
        jax.random.split(key, x.shape[0])
        if key is not None and _needs_key(model)
        else None
    )
    if model.stateful:
        if keys is None:
            return jax.vmap(
                lambda xi, s: model(xi, s),
                axis_name=BATCH_AXIS,
                in_axes=(0, None),
                out_axes=(0, None),
            )(x, state)
        return jax.vmap(
            lambda xi, s, k: model(xi, s, key=k),
            axis_name=BATCH_AXIS,
            in_axes=(0, None, 0),
            out_axes=(0, None),
        )(x, state, keys)
    if keys is None:
        return jax.vmap(model)(x), state
    return jax.vmap(lambda xi, k: model(xi, key=k))(x, keys), state


def _mean_cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


# --------------------------------------------------------------------------
# Per-record Grain + Equinox, as the Grain and Equinox docs teach.
# --------------------------------------------------------------------------


def to_float_record(record: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Scale one image to ``float32`` in [0, 1]."""
    return {
        "inputs": record["inputs"].astype(np.float32) / np.float32(255.0),
        "labels": record["labels"],
    }


def to_flat_float_record(record: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Scale one image to ``float32`` in [0, 1] and flatten it (for an MLP)."""
    return {
        "inputs": (record["inputs"].astype(np.float32) / np.float32(255.0)).ravel(),
        "labels": record["labels"],
    }


def per_record_pipeline(
    dataset: Any, *, seed: int, batch_size: int, flatten: bool
) -> grain.MapDataset:
    """``MapDataset.source(ds).shuffle(seed).map(to_float_record).batch(B)``."""
    record_fn = to_flat_float_record if flatten else to_float_record
    return (
        grain.MapDataset.source(dataset)
        .shuffle(seed=seed)
        .map(record_fn)
        .batch(batch_size, drop_remainder=True)
    )


def make_eqx_step(optimizer: optax.GradientTransformation) -> Callable[..., Any]:
    """An ``eqx.filter_jit`` training step, as in Equinox's examples.

    ``step(model, state, opt_state, x, y, key) -> (model, state, opt_state, loss)``
    """

    @cast(Any, eqx.filter_jit)(compiler_options=zoo.train.compiler_options() or None)
    def make_step(
        model: Any,
        state: eqx.nn.State,
        opt_state: optax.OptState,
        x: jax.Array,
        y: jax.Array,
        key: jax.Array | None,
    ) -> tuple[Any, eqx.nn.State, optax.OptState, jax.Array]:
        def compute_loss(
            model: Any, state: eqx.nn.State
        ) -> tuple[jax.Array, eqx.nn.State]:
            logits, state = batched_logits(model, state, x, key)
            return _mean_cross_entropy(logits, y), state

        (loss, state), grads = eqx.filter_value_and_grad(compute_loss, has_aux=True)(
            model, state
        )
        updates, opt_state = optimizer.update(
            grads, opt_state, eqx.filter(model, eqx.is_inexact_array)
        )
        model = eqx.apply_updates(model, updates)
        return model, state, opt_state, loss

    return make_step


def with_equinox_pooling(model: Any) -> Any | None:
    """The same CNN with Equinox's ``eqx.nn.MaxPool2d`` in every pooling slot.

    A user building the model from Equinox's layers pools with ``MaxPool2d``;
    it computes the same function as ``zoo.models.MaxPool`` (same values and
    gradients), only through ``reduce_window``. ``None`` for a model that does
    not pool.
    """
    blocks = [b for b in getattr(model, "blocks", ()) if b.pool is not None]
    if not blocks:
        return None
    return eqx.tree_at(
        lambda m: [b.pool for b in m.blocks if b.pool is not None],
        model,
        [eqx.nn.MaxPool2d(b.pool.size, stride=b.pool.size) for b in blocks],
    )


class PerRecordLoop:
    """Per-record Grain feeding an ``eqx.filter_jit`` step, one call per batch."""

    def __init__(
        self,
        model: Any,
        state: eqx.nn.State,
        optimizer: optax.GradientTransformation,
        *,
        flatten: bool,
        batch_size: int,
    ) -> None:
        self.model, self.state = model, state
        self.opt_state = optimizer.init(eqx.filter(model, eqx.is_inexact_array))
        self.step = make_eqx_step(optimizer)
        self.flatten = flatten
        self.batch_size = batch_size

    def epoch(self, dataset: Any, seed: int) -> None:
        """Train one epoch of ``dataset`` shuffled with ``seed``; wait for it."""
        batches = per_record_pipeline(
            dataset, seed=seed, batch_size=self.batch_size, flatten=self.flatten
        )
        model, state, opt_state = self.model, self.state, self.opt_state
        needs_key = _needs_key(model)
        key = jax.random.key(seed)
        loss = None
        for batch in batches:
            subkey = None
            if needs_key:
                key, subkey = jax.random.split(key)
            model, state, opt_state, loss = self.step(
                model, state, opt_state, batch["inputs"], batch["labels"], subkey
            )
        jax.block_until_ready((model, state, opt_state, loss))
        self.model, self.state, self.opt_state = model, state, opt_state


# --------------------------------------------------------------------------
# The compute-only floor: batches already on the device, minimal Python.
# --------------------------------------------------------------------------

Carry = tuple[Any, optax.OptState, eqx.nn.State]


def _floor_update(
    static: Any,
    optimizer: optax.GradientTransformation,
    carry: Carry,
    x: jax.Array,
    y: jax.Array,
    key: jax.Array,
) -> Carry:
    params, opt_state, state = carry

    def compute_loss(params: Any, state: eqx.nn.State) -> tuple[Any, eqx.nn.State]:
        model = eqx.combine(params, static)
        logits, state = batched_logits(model, state, x, key)
        return _mean_cross_entropy(logits, y), state

    grads, state = jax.grad(compute_loss, has_aux=True)(params, state)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, state


def _options(compiler_options: dict[str, Any] | None) -> dict[str, Any] | None:
    """JIT options: zoo's training options for ``None``; ``{}`` for XLA's defaults."""
    if compiler_options is None:
        compiler_options = zoo.train.compiler_options()
    return compiler_options or None


def floor_init(
    model: Any, state: eqx.nn.State, optimizer: optax.GradientTransformation
) -> tuple[Carry, Any]:
    """Split the model into ``(params, opt_state, state)`` and its static part."""
    params, static = eqx.partition(model, eqx.is_inexact_array)
    return (params, optimizer.init(params), state), static


def make_floor_scan(
    static: Any,
    optimizer: optax.GradientTransformation,
    *,
    unroll: int,
    compiler_options: dict[str, Any] | None = None,
) -> Callable[..., Carry]:
    """One ``jax.jit``'d ``lax.scan`` over a whole epoch of batches on device.

    ``epoch(carry, xs (S, B, ...), ys (S, B), key) -> carry``; ``unroll`` steps
    per loop iteration (1: a rolled while loop).
    """

    @functools.partial(jax.jit, compiler_options=_options(compiler_options))
    def epoch(carry: Carry, xs: jax.Array, ys: jax.Array, key: jax.Array) -> Carry:
        def body(carry: Carry, batch: tuple[jax.Array, ...]) -> tuple[Carry, None]:
            x, y, i = batch
            key_i = jax.random.fold_in(key, i)
            return _floor_update(static, optimizer, carry, x, y, key_i), None

        steps = jnp.arange(xs.shape[0])
        carry, _ = jax.lax.scan(body, carry, (xs, ys, steps), unroll=unroll)
        return carry

    return epoch


def make_floor_step(
    static: Any,
    optimizer: optax.GradientTransformation,
    *,
    compiler_options: dict[str, Any] | None = None,
) -> Callable[..., Carry]:
    """One ``jax.jit``'d optimiser step: ``step(carry, x, y, key) -> carry``."""

    @functools.partial(jax.jit, compiler_options=_options(compiler_options))
    def step(carry: Carry, x: jax.Array, y: jax.Array, key: jax.Array) -> Carry:
        return _floor_update(static, optimizer, carry, x, y, key)

    return step


def make_floor_chunk(
    static: Any,
    optimizer: optax.GradientTransformation,
    *,
    compiler_options: dict[str, Any] | None = None,
) -> Callable[..., Carry]:
    """``K`` optimiser steps unrolled in Python inside one ``jax.jit``.

    ``chunk(carry, xs (K, B, ...), ys (K, B), keys (K,)) -> carry``. Straight-line
    code, no while loop (XLA:CPU runs convolutions in loops far slower).
    ``compiler_options``: ``None`` for zoo's, ``{}`` for XLA's defaults.
    """

    @functools.partial(jax.jit, compiler_options=_options(compiler_options))
    def chunk(carry: Carry, xs: jax.Array, ys: jax.Array, keys: jax.Array) -> Carry:
        for i in range(xs.shape[0]):
            carry = _floor_update(static, optimizer, carry, xs[i], ys[i], keys[i])
        return carry

    return chunk


def run_steps(
    fn: Callable[..., Carry], carry: Carry, args: Iterable[tuple[Any, ...]]
) -> Carry:
    """Call ``fn(carry, *a)`` for each ``a`` in ``args``; wait for the result."""
    for a in args:
        carry = fn(carry, *a)
    return jax.block_until_ready(carry)
