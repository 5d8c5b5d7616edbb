"""``fit`` against the floor, per preset and precision: the GPU's figures of record.

For each preset (default ``mlp``, ``cnn`` and ``resnet20``) and each precision
(default ``float32`` and ``bfloat16``), Adam 1e-3 at batch 128 on MNIST,
seconds per epoch (468 steps, or ``--limit-steps`` scaled to it) of:

* ``zoo_fit`` and ``zoo_step_on_device`` (diagnostic): ``fit`` with
  ``make_train_step(adam, precision=...)``, and that compiled step over chunks
  already on the device (``_harness.ZooContenders``);
* ``floor``: one jitted ``lax.scan`` of a plain step (``zoo.apply``, optax)
  over the epoch's batches already on the device; for ``bfloat16`` the
  floating arrays of the model and the inputs are cast inside the
  differentiated function, as zoo's policy casts them.

``fit / floor`` is what the loop and the host add to the model's own cost.
On a CPU a convolutional floor runs its steps in a loop, which XLA:CPU runs
slowly: there the ratio reads low. Prints one JSON line.

Run:
    ZOO_DATA_DIR=/path/to/data python benchmarks/fit_floor.py \\
        [--presets mlp,cnn,resnet20] [--precisions float32,bfloat16] [--epochs 3]
"""

import time
from collections.abc import Callable
from typing import Any

import _harness as h
import equinox as eqx
import jax
import jax.numpy as jnp
import optax

import zoo
from zoo.data import ArrayDataset, load_mnist

PRESETS = ("mlp", "cnn", "resnet20")
PRECISIONS = ("float32", "bfloat16")
LEARNING_RATE = 1e-3
Carry = tuple[Any, Any, Any]


def cast(tree: Any, dtype: Any) -> Any:
    """``tree`` with its floating arrays in ``dtype``."""
    return jax.tree.map(
        lambda x: x.astype(dtype) if eqx.is_inexact_array(x) else x, tree
    )


def make_floor(static: Any, optimizer: Any, precision: str) -> Callable[..., Carry]:
    """``floor((params, opt_state, state), xs, ys, key) -> carry``: one step per
    batch of ``xs (S, B, ...)`` in a rolled ``lax.scan``."""
    dtype = jnp.bfloat16 if precision == "bfloat16" else jnp.float32

    def loss(params: Any, state: Any, x: Any, y: Any, key: Any) -> Any:
        model = cast(eqx.combine(params, static), dtype)
        logits, state = zoo.apply(model, x.astype(dtype), state, key=key)
        logits = logits.astype(jnp.float32)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), state

    def body(carry: Carry, batch: tuple[Any, ...]) -> tuple[Carry, None]:
        params, opt_state, state = carry
        x, y, key = batch
        grads, state = jax.grad(loss, has_aux=True)(params, state, x, y, key)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state, state), None

    @jax.jit
    def floor(carry: Carry, xs: jax.Array, ys: jax.Array, key: jax.Array) -> Carry:
        keys = jax.random.split(key, xs.shape[0])
        return jax.lax.scan(body, carry, (xs, ys, keys))[0]

    return floor


def contenders(
    name: str, precision: Any, data: ArrayDataset, steps: int, scale: float
) -> tuple[dict[str, Callable[[int], float]], int]:
    """The three contenders of one preset and precision, compiled; and ``fit``'s
    steps per call."""
    model, state = zoo.create_model(name, key=jax.random.key(0))
    optimizer = optax.adam(LEARNING_RATE)
    k = h.fit_steps_per_call(model, state, data, steps)
    zoo_side = h.ZooContenders(
        model, state, optimizer, data, steps=steps, steps_per_call=k, scale=scale,
        precision=precision,
    )  # fmt: skip
    params, static = eqx.partition(model, eqx.is_inexact_array)
    carry = (params, optimizer.init(params), state)
    xs, ys = h.device_batches(data, steps, model.input_shape, seed=1)
    key = jax.random.key(1)
    program: Any = make_floor(static, optimizer, precision)
    compiled = program.lower(carry, xs, ys, key).compile()

    def floor(r: int) -> float:
        del r
        start = time.perf_counter()
        h.block(compiled(carry, xs, ys, key))
        return (time.perf_counter() - start) * scale

    return {**zoo_side.contenders(), "floor": floor}, k


def main() -> None:
    p = h.parser("fit against the floor per preset and precision.", epochs=3)
    p.add_argument("--presets", default=",".join(PRESETS))
    p.add_argument(
        "--precisions", default=",".join(PRECISIONS), help="float32,bfloat16"
    )
    args = h.parse_args(p)
    presets = ["mlp"] if args.smoke else args.presets.split(",")
    precisions = args.precisions.split(",")
    train = load_mnist("train", data_dir=args.data_dir)
    limit = 8 if args.smoke and not args.limit_steps else args.limit_steps
    data, steps = h.limited(train, limit, multiple=8)
    scale = h.epoch_scale(steps)
    results: dict[str, Any] = {}
    for name in presets:
        for precision in precisions:
            fns, k = contenders(name, precision, data, steps, scale)
            times = h.run_rounds(fns, args.epochs)
            diagnostics = h.step_diagnostics(times, "floor")
            results[f"{name}_{precision}"] = {
                "seconds_per_epoch": {
                    n: round(h.median(t), 3) for n, t in times.items()
                },
                "zoo_over_floor": round(h.ratio(times["zoo_fit"], times["floor"]), 3),
                **{n: round(v, 3) for n, v in diagnostics.items()},
                "steps_per_call": k,
                "per_round": {n: h.rounded(t) for n, t in times.items()},
            }
    h.emit(
        {
            "benchmark": "fit_floor",
            "batch_size": h.BATCH_SIZE,
            "steps_timed": steps,
            "rounds": args.epochs,
            "statistic": "median of rounds",
            "runs": results,
        }
    )


if __name__ == "__main__":
    main()
