"""The host's work in ``fit``, where the model costs almost nothing.

A 784-8-10 MLP (``zoo.MLP``, SGD) costs so little per step that, as any model
on a GPU, it leaves the host's work in plain view: each round times 3 epochs of
MNIST through ``zoo.fit`` against a floor, one jitted ``lax.scan`` of a plain
Equinox step over the same number of batches already on the device (``uint8``,
scaled in the step as ``fit`` does). Contenders, interleaved:

* ``fit_b128`` / ``floor_b128`` and ``fit_b32`` / ``floor_b32`` (on a CPU
  ``fit`` gathers each chunk on the host while the previous one trains; on
  an accelerator it keeps MNIST on the device and gathers in the step);
* ``fit_b128_device_shift``: ``fit(..., augment=zoo.data.DeviceShift(2))``,
  shifted inside the compiled step, against the unaugmented ``floor_b128``;
* ``fit_b128_host_shift`` (diagnostic): ``fit`` with ``RandomShift(2)`` in
  Grain, which feeds from the host batch by batch;
* ``floor_b128_device_shift``: the floor with ``zoo.data.DeviceShift(2)``
  applied inside its scan, every batch's draws made before the scan
  (``zoo.data.draw_batch``): what moving the shift onto the device gives;
  ``floor_b128_device_shift_drawn_in_step`` (diagnostic) draws inside each
  step instead, as ``augment_batch`` in the step would, and
  ``floor_b128_device_shift_draws_given`` (diagnostic) takes the draws as an
  input, made before it is timed: the copy alone;
* ``zoo_step_b128`` / ``zoo_step_b32`` (diagnostic): ``fit``'s own compiled
  step called on its chunks already on the device, which splits a gap to the
  floor into the step's program and the host's work around it.

The figure of each contender is the fastest of the rounds, and each ratio is a
quotient of two fastest rounds. Prints one JSON line.

Run:
    ZOO_DATA_DIR=/path/to/data python benchmarks/host_work.py [--epochs 15]
"""

import functools
import time
from collections.abc import Callable
from typing import Any

import _harness as h
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

import zoo
from zoo.data import ArrayDataset, Chunk, load_mnist

EPOCHS_PER_ROUND = 3
LEARNING_RATE = 0.05
MAX_SHIFT = 2
TARGETS = {
    "fit_over_floor_b128": ("<=", 1.10),
    "fit_over_floor_b32": ("<=", 1.10),
    "fit_device_shift_over_floor_b128": ("<=", 1.25),
}

Carry = tuple[Any, optax.OptState]


def make_floor(
    static: Any,
    optimizer: optax.GradientTransformation,
    augment: zoo.data.AbstractDeviceAugment | None,
    *,
    draw_first: bool = True,
) -> Callable[..., Carry]:
    """``floor(carry, xs (S, B, C, H, W) uint8, ys (S, B), key, draws=None)
    -> carry``: one SGD step per batch in a rolled ``lax.scan``. With
    ``augment``, batch ``i`` is augmented on the device as
    ``augment_batch(augment, fold_in(key, i), x)`` would: its draws given,
    made for every batch before the scan (``draw_first``), or inside the
    step."""

    def loss(params: Any, x: jax.Array, y: jax.Array) -> jax.Array:
        logits = jax.vmap(eqx.combine(params, static))(x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    def body(carry: Carry, batch: tuple[Any, ...]) -> tuple[Carry, None]:
        params, opt_state = carry
        x, y, key, draws = batch
        if augment is not None:
            if not draw_first:
                draws = zoo.data.draw_batch(augment, key, x.shape)
            x = jax.vmap(augment.apply)(draws, x)
        x = x.astype(jnp.float32) / 255.0
        grads = jax.grad(loss)(params, x, y)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), None

    options = zoo.train.compiler_options() or None

    @functools.partial(jax.jit, compiler_options=options)
    def floor(
        carry: Carry, xs: jax.Array, ys: jax.Array, key: jax.Array, draws: Any = None
    ) -> Carry:
        keys = step_keys(key, xs.shape[0])
        if augment is not None and draw_first and draws is None:
            draws = all_draws(augment, keys, xs.shape[1:])
        return jax.lax.scan(body, carry, (xs, ys, keys, draws))[0]

    return floor


def step_keys(key: jax.Array, steps: int) -> jax.Array:
    """Batch ``i``'s key, ``fold_in(key, i)``, for ``i < steps``."""
    return jax.vmap(functools.partial(jax.random.fold_in, key))(jnp.arange(steps))


def all_draws(
    augment: zoo.data.AbstractDeviceAugment, keys: jax.Array, shape: tuple[int, ...]
) -> Any:
    """Every batch's draws, batch ``i`` from ``keys[i]``."""
    draw = functools.partial(zoo.data.draw_batch, augment, shape=shape)
    return jax.vmap(draw)(keys)


class Setup:
    """One batch size: the data, ``fit``, its step on the device, and the floors."""

    def __init__(
        self, train: ArrayDataset, batch: int, limit_steps: int | None
    ) -> None:
        self.batch = batch
        self.data = train.take(limit_steps * batch) if limit_steps else train
        self.spe = len(self.data) // batch
        self.optimizer = optax.sgd(LEARNING_RATE)
        self.model = zoo.MLP(784, 10, width_size=[8], key=jax.random.key(0))
        self.state = eqx.nn.State(self.model)
        self.step = zoo.train.make_train_step(self.optimizer)
        warm = self._fit(seed=0, augment=None)  # compile; warm up
        self.k = warm.steps_per_call
        rng = np.random.default_rng(0)
        rows = np.concatenate(
            [rng.permutation(len(self.data))[: self.spe * batch]] * EPOCHS_PER_ROUND
        ).reshape(-1, batch)
        inputs = self.data.inputs[rows]
        labels = self.data.labels[rows].astype(np.int32)
        self.xs, self.ys = h.block(jax.device_put((inputs, labels)))
        self.chunks = self._chunks(inputs, labels)
        self.floors: dict[str, Any] = {}

    def _fit(self, seed: int, augment: Any) -> zoo.FitResult:
        return zoo.fit(
            self.model, self.state, self.data, self.step, epochs=EPOCHS_PER_ROUND,
            batch_size=self.batch, seed=seed, callbacks=h.quiet_callbacks(),
            augment=augment,
        )  # fmt: skip

    def _chunks(self, inputs: np.ndarray, labels: np.ndarray) -> list[Chunk]:
        """The epochs cut as ``fit`` cuts them: ``k`` steps, the rest of an epoch."""
        chunks = []
        for epoch in range(EPOCHS_PER_ROUND):
            for start in range(0, self.spe, self.k):
                rows = slice(epoch * self.spe + start, epoch * self.spe
                             + min(start + self.k, self.spe))  # fmt: skip
                mask = np.ones(labels[rows].shape, np.bool_)
                chunks.append(jax.device_put(Chunk(inputs[rows], labels[rows], mask)))
        return h.block(chunks)

    def fit(self, augment: Any = None) -> Callable[[int], float]:
        """``fit`` for the round's epochs; the seconds of its training steps."""
        if augment is not None:
            self._fit(seed=0, augment=augment)  # warm the augmented run up

        def run(r: int) -> float:
            result = self._fit(seed=r, augment=augment)
            return sum(record.train_seconds for record in result.history)

        return run

    def zoo_step(self) -> Callable[[int], float]:
        """``fit``'s compiled step over its chunks, already on the device."""
        ts0 = self.step.init(self.model, self.state, key=jax.random.key(0))

        def run_chunks() -> Any:
            ts = ts0
            for chunk in self.chunks:
                ts, _ = self.step(ts, chunk)
            return ts

        h.block(run_chunks())  # compile every chunk length

        def run(r: int) -> float:
            del r
            return h.timed(run_chunks)[1]

        return run

    def floor(
        self, augment: Any = None, *, draw_first: bool = True, given: bool = False
    ) -> Callable[[int], float]:
        """The floor over the same batches; compiled before it is timed. With
        ``given``, the augmentation's draws are made first and passed in."""
        params, static = eqx.partition(self.model, eqx.is_inexact_array)
        carry = (params, self.optimizer.init(params))
        key = jax.random.key(1)
        draws = None
        if given:
            keys = step_keys(key, self.xs.shape[0])
            draw = jax.jit(all_draws, static_argnums=(0, 2))
            draws = h.block(draw(augment, keys, self.xs.shape[1:]))
        fn: Any = make_floor(static, self.optimizer, augment, draw_first=draw_first)
        program = fn.lower(carry, self.xs, self.ys, key, draws).compile()

        def run(r: int) -> float:
            del r
            return h.timed(lambda: program(carry, self.xs, self.ys, key, draws))[1]

        return run


def fastest(times: dict[str, list[float]]) -> dict[str, float]:
    """Each contender's fastest round."""
    return {name: min(t) for name, t in times.items()}


def main() -> None:
    args = h.parse_args(
        h.parser("fit's host work on a model that costs almost nothing.", epochs=15)
    )
    train = load_mnist("train", data_dir=args.data_dir)
    b128 = Setup(train, 128, args.limit_steps)
    b32 = Setup(train, 32, args.limit_steps)
    shift = zoo.data.DeviceShift(MAX_SHIFT)
    contenders = {
        "fit_b128": b128.fit(),
        "floor_b128": b128.floor(),
        "zoo_step_b128": b128.zoo_step(),
        "fit_b32": b32.fit(),
        "floor_b32": b32.floor(),
        "zoo_step_b32": b32.zoo_step(),
        "fit_b128_device_shift": b128.fit(shift),
        "fit_b128_host_shift": b128.fit(zoo.data.RandomShift(MAX_SHIFT)),
        "floor_b128_device_shift": b128.floor(shift),
        "floor_b128_device_shift_drawn_in_step": b128.floor(shift, draw_first=False),
        "floor_b128_device_shift_draws_given": b128.floor(shift, given=True),
    }
    start = time.perf_counter()
    times = h.run_rounds(contenders, args.epochs)
    best = fastest(times)
    ratios = {
        "fit_over_floor_b128": best["fit_b128"] / best["floor_b128"],
        "fit_over_floor_b32": best["fit_b32"] / best["floor_b32"],
        "fit_device_shift_over_floor_b128": best["fit_b128_device_shift"]
        / best["floor_b128"],
        "floor_device_shift_over_floor_b128": best["floor_b128_device_shift"]
        / best["floor_b128"],
    }
    diagnostics = {
        f"{a}_over_{b}": best[a] / best[b]
        for a, b in [
            ("fit_b128", "zoo_step_b128"),
            ("zoo_step_b128", "floor_b128"),
            ("fit_b32", "zoo_step_b32"),
            ("zoo_step_b32", "floor_b32"),
            ("fit_b128_host_shift", "floor_b128"),
            ("fit_b128_device_shift", "floor_b128_device_shift"),
            ("floor_b128_device_shift_drawn_in_step", "floor_b128"),
            ("floor_b128_device_shift_draws_given", "floor_b128"),
        ]
    }
    h.emit(
        {
            "benchmark": "host_work",
            "model": "784-8-10 MLP, SGD",
            "seconds_per_round_fastest": {n: round(v, 4) for n, v in best.items()},
            "ratios": {n: round(v, 3) for n, v in ratios.items()},
            "targets": {n: f"{op} {v}" for n, (op, v) in TARGETS.items()},
            "met": h.targets_met(ratios, TARGETS),
            "diagnostic_ratios": {n: round(v, 3) for n, v in diagnostics.items()},
            "rounds": args.epochs,
            "statistic": "fastest round",
            "epochs_per_round": EPOCHS_PER_ROUND,
            "steps_per_epoch": {"b128": b128.spe, "b32": b32.spe},
            "fit_steps_per_call": {"b128": b128.k, "b32": b32.k},
            "timed_seconds": round(time.perf_counter() - start, 1),
            "per_round": {n: h.rounded(t, 4) for n, t in times.items()},
        }
    )


if __name__ == "__main__":
    main()
