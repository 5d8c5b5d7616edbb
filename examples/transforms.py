"""JAX's ``jit``, ``grad`` and ``vmap``, timed on plain functions and on a zoo model.

First on plain functions: ``jit`` on the SELU activation of a million numbers,
``grad`` of ``x**2`` taken once, twice and three times, and ``vmap`` against a
Python loop for a batch of matrix-vector products. Then the same three on the
``mlp`` preset (784-512-512-10): ``jax.vmap(model)`` against a loop over the
examples, ``eqx.filter_jit`` around the batched call, and ``eqx.filter_grad`` of
a loss with respect to the model. Every timing waits for the result with
``block_until_ready`` (JAX dispatches asynchronously) and is the best of several
runs, after a first call that compiles.

Run it from the repository root (about 15 s on 2 CPU cores; ``pip install -e
".[examples]"`` brings tyro, which reads the flags)::

    python examples/transforms.py
    python examples/transforms.py --seed 3
"""

import dataclasses
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, Float, Int

import zoo

try:
    import tyro
except ModuleNotFoundError as missing:  # the examples extra
    if missing.name != "tyro":
        raise
    sys.exit(
        "examples/transforms.py reads its flags with tyro: pip install -e '.[examples]'"
    )

# ---------------------------------------------------------------- constants --
SELU_SIZE = 1_000_000
MATRIX_SHAPE = (150, 100)
VECTORS = 10
MODEL_BATCH = 128
REPEATS = 10  # timings are the best of this many runs


def best_time(fn: Callable[..., Any], *args: Any, repeats: int = REPEATS) -> float:
    """Seconds per call of ``fn(*args)``: the fastest of ``repeats`` runs.

    One call first, untimed, so that compilation is never counted.
    """
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return min(times)


def print_table(title: str, rows: Sequence[tuple[str, float]]) -> None:
    """Print timings in microseconds, with each row's speed-up over the first."""
    print(f"\n{title}")
    width = max(len(name) for name, _ in rows)
    print(f"  {'':{width}}  {'time':>12}  {'speed-up':>8}")
    for name, seconds in rows:
        speedup = rows[0][1] / seconds
        print(f"  {name:{width}}  {seconds * 1e6:9,.0f} us  {speedup:7.1f}x")


# ------------------------------------------------------------ jit: SELU --
def selu(x: Float[Array, " n"], alpha: float = 1.67, scale: float = 1.05) -> jax.Array:
    """Scaled exponential linear unit, written with plain jax.numpy operations."""
    return scale * jnp.where(x > 0, x, alpha * jnp.exp(x) - alpha)


def demo_jit(key: jax.Array) -> None:
    x = jax.random.normal(key, (SELU_SIZE,))
    print_table(
        f"jit: selu on {SELU_SIZE:,} float32 numbers",
        [
            ("eager (one dispatch per operation)", best_time(selu, x)),
            ("jax.jit (one fused kernel)", best_time(jax.jit(selu), x)),
        ],
    )


# ------------------------------------------------------------ grad: x**2 --
def demo_grad() -> None:
    def square(x: Float[Array, ""]) -> Float[Array, ""]:
        return x**2

    x = jnp.float32(2.0)
    print("\ngrad: derivatives of x**2 at x = 2")
    derivative = square
    for order, expected in [(1, "2x = 4"), (2, "2"), (3, "0")]:
        derivative = jax.grad(derivative)
        print(f"  grad applied {order}x: {float(derivative(x)):4.1f}   ({expected})")


# -------------------------------------------------- vmap: matrix-vector --
def demo_vmap(key: jax.Array) -> None:
    mat_key, vec_key = jax.random.split(key)
    mat = jax.random.normal(mat_key, MATRIX_SHAPE)
    vectors = jax.random.normal(vec_key, (VECTORS, MATRIX_SHAPE[1]))

    def apply_matrix(v: Float[Array, " n"]) -> Float[Array, " m"]:
        return mat @ v

    def loop(vs: Float[Array, "b n"]) -> Float[Array, "b m"]:
        # Index row by row: `for v in vs` would first compile an unstack of vs.
        return jnp.stack([apply_matrix(vs[i]) for i in range(vs.shape[0])])

    print_table(
        f"vmap: {VECTORS} products of a {MATRIX_SHAPE[0]}x{MATRIX_SHAPE[1]} matrix "
        "with a vector",
        [
            ("Python loop", best_time(loop, vectors)),
            ("jax.vmap", best_time(jax.vmap(apply_matrix), vectors)),
            ("jax.jit(jax.vmap)", best_time(jax.jit(jax.vmap(apply_matrix)), vectors)),
        ],
    )


# ------------------------------------------------------ on a zoo model --
def demo_model(key: jax.Array) -> None:
    model_key, data_key, label_key = jax.random.split(key, 3)
    model, _ = zoo.create_model("mlp", key=model_key)
    images = jax.random.uniform(data_key, (MODEL_BATCH, *model.input_shape))
    labels = jax.random.randint(label_key, (MODEL_BATCH,), 0, model.out_size)
    print(
        f"\nzoo model: the 'mlp' preset, input_shape {model.input_shape}; one example "
        f"-> {model(images[0]).shape}, jax.vmap over {MODEL_BATCH} -> "
        f"{jax.vmap(model)(images).shape}"
    )

    def loop(model: zoo.AbstractModel, xs: Float[Array, "b d"]) -> Float[Array, "b c"]:
        return jnp.stack([model(xs[i]) for i in range(xs.shape[0])])

    def batched(
        model: zoo.AbstractModel, xs: Float[Array, "b d"]
    ) -> Float[Array, "b c"]:
        return jax.vmap(model)(xs)

    print_table(
        f"vmap and filter_jit: logits of {MODEL_BATCH} examples",
        [
            ("Python loop over examples", best_time(loop, model, images, repeats=3)),
            ("jax.vmap(model)", best_time(batched, model, images)),
            (
                "eqx.filter_jit(jax.vmap(model))",
                best_time(eqx.filter_jit(batched), model, images),
            ),
        ],
    )

    def loss(
        model: zoo.AbstractModel, xs: Float[Array, "b d"], ys: Int[Array, " b"]
    ) -> Float[Array, ""]:
        logits = jax.vmap(model)(xs)
        return optax.softmax_cross_entropy_with_integer_labels(logits, ys).mean()

    grad = eqx.filter_grad(loss)
    grads = grad(model, images, labels)
    print_table(
        f"filter_grad: gradient of the mean cross-entropy over {MODEL_BATCH} examples",
        [
            ("eqx.filter_grad", best_time(grad, model, images, labels)),
            (
                "eqx.filter_jit(eqx.filter_grad)",
                best_time(eqx.filter_jit(grad), model, images, labels),
            ),
        ],
    )
    # The gradient is a model-shaped pytree: same structure, one array per parameter.
    shapes = [g.shape for g in jax.tree.leaves(eqx.filter(grads, eqx.is_array))]
    print(f"  gradient leaves (weights, biases per layer): {shapes}")


@dataclasses.dataclass(frozen=True)
class Config:
    """Time JAX's jit, grad and vmap on plain functions and on a zoo model."""

    seed: int = 0
    """Seeds the random inputs and the model's parameters."""


def main(argv: Sequence[str] | None = None) -> None:
    config = tyro.cli(Config, prog="transforms.py", args=argv)

    print(f"JAX {jax.__version__} on {jax.devices()[0].device_kind}")
    jit_key, vmap_key, model_key = jax.random.split(jax.random.key(config.seed), 3)
    demo_jit(jit_key)
    demo_grad()
    demo_vmap(vmap_key)
    demo_model(model_key)


if __name__ == "__main__":
    main()
