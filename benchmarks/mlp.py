"""MLP training speed on MNIST: zoo's ``fit`` against three references.

The 784-512-512-10 MLP, batch 128, SGD 0.01, seconds per epoch (468 steps,
compilation excluded) of:

* ``zoo_fit``: ``zoo.train.fit``, one ``fit(epochs=1)`` per round continuing
  from the last, fit's default ``steps_per_call``, one ``make_train_step``
  passed to every call; ``zoo_step_on_device`` (diagnostic): that compiled step
  over chunks already on the device;
* ``seed003``: the JAX MNIST tutorial's loop, one jitted ``update`` per batch;
* ``per_record``: Grain per record feeding an ``eqx.filter_jit`` step;
* ``floor_scan_rolled`` / ``floor_scan_unroll8``: one jitted ``lax.scan`` over
  the batches already on the device; the faster is ``floor``.

The references are in ``_references.py``. Prints one JSON line.

Run:
    ZOO_DATA_DIR=/path/to/data python benchmarks/mlp.py [--epochs 9] [--no-tune]
"""

import time
from typing import Any, cast

import _harness as h
import _references as ref
import jax
import numpy as np
import optax

import zoo
from zoo.data import load_mnist

LEARNING_RATE = 0.01
UNROLL = 8
TARGETS = {
    "zoo_over_floor": ("<=", 1.10),
    "zoo_over_seed003": ("<=", 0.95),
    "per_record_over_zoo": (">=", 3.0),
}


def main() -> None:
    args = h.parse_args(
        h.parser("MLP training speed: zoo's fit vs references.", epochs=9)
    )
    train = load_mnist("train", data_dir=args.data_dir)
    optimizer = optax.sgd(LEARNING_RATE)
    model, state = zoo.create_model("mlp", key=jax.random.key(0))
    k = h.fit_steps_per_call(model, state, train)
    data, steps = h.limited(train, args.limit_steps, k)
    scale = h.epoch_scale(steps)

    zoo_side = h.ZooContenders(
        model, state, optimizer, data, steps=steps, steps_per_call=k, scale=scale
    )

    # Reference (a): the seed-003 tutorial loop.
    flat = data.inputs.reshape(len(data), -1).astype(np.float32) / np.float32(255.0)
    labels = np.asarray(data.labels)
    params = ref.init_network_params(ref.layer_sizes, jax.random.key(0))
    for _ in range(2):  # compile update and the eager one_hot ops
        params = ref.update(
            params, flat[: h.BATCH_SIZE], ref.one_hot(labels[: h.BATCH_SIZE], 10)
        )
    seed_live = {"params": h.block(params)}

    def seed003(r: int) -> float:
        start = time.perf_counter()
        seed_live["params"] = ref.seed003_epoch(
            seed_live["params"],
            flat,
            labels,
            steps=steps,
            batch_size=h.BATCH_SIZE,
            rng=np.random.default_rng(r),
        )
        return (time.perf_counter() - start) * scale

    # Reference (b): per-record Grain + an eqx.filter_jit step on zoo.MLP.
    pr_model, pr_state = zoo.create_model("mlp", key=jax.random.key(0))
    pr = ref.PerRecordLoop(
        pr_model, pr_state, optimizer, flatten=True, batch_size=h.BATCH_SIZE
    )
    pr.epoch(data.take(2 * h.BATCH_SIZE), seed=0)  # compile; warm Grain up

    def per_record(r: int) -> float:
        return h.timed(lambda: pr.epoch(data, seed=r))[1] * scale

    # Reference (c): the compute-only floor, a jitted lax.scan over the epoch.
    xs, ys = h.device_batches(data, steps, model.input_shape, seed=0)
    carry, static = ref.floor_init(model, state, optimizer)
    key = jax.random.key(1)
    floors: dict[str, Any] = {}
    floor_compile: dict[str, float] = {}
    for name, unroll in [
        ("floor_scan_rolled", 1),
        (f"floor_scan_unroll{UNROLL}", UNROLL),
    ]:
        start = time.perf_counter()
        fn = cast(Any, ref.make_floor_scan(static, optimizer, unroll=unroll))
        floors[name] = fn.lower(carry, xs, ys, key).compile()
        floor_compile[name] = time.perf_counter() - start
    floor_live = {"carry": carry}

    def floor(name: str) -> Any:
        def run(r: int) -> float:
            del r
            floor_live["carry"], seconds = h.timed(
                lambda: floors[name](floor_live["carry"], xs, ys, key)
            )
            return seconds * scale

        return run

    times = h.run_rounds(
        {
            **zoo_side.contenders(),
            "seed003": seed003,
            "per_record": per_record,
            **{name: floor(name) for name in floors},
        },
        args.epochs,
    )
    floor_name = min(floors, key=lambda n: h.median(times[n]))
    ratios = {
        "zoo_over_floor": h.ratio(times["zoo_fit"], times[floor_name]),
        "zoo_over_seed003": h.ratio(times["zoo_fit"], times["seed003"]),
        "per_record_over_zoo": h.ratio(times["per_record"], times["zoo_fit"]),
    }
    diagnostics = h.step_diagnostics(times, floor_name)
    h.emit(
        {
            "benchmark": "mlp",
            "seconds_per_epoch": {n: round(h.median(t), 3) for n, t in times.items()},
            "floor": floor_name,
            "ratios": {n: round(v, 3) for n, v in ratios.items()},
            "targets": {n: f"{op} {v}" for n, (op, v) in TARGETS.items()},
            "met": h.targets_met(ratios, TARGETS),
            "diagnostic_ratios": {n: round(v, 3) for n, v in diagnostics.items()},
            "rounds": args.epochs,
            "steps_timed_per_round": steps,
            "scaled_to_epoch": steps != h.STEPS_PER_MNIST_EPOCH,
            "batch_size": h.BATCH_SIZE,
            "zoo_steps_per_call": k,
            "zoo_compile_seconds": round(zoo_side.compile_seconds, 2),
            "floor_compile_seconds": {n: round(v, 2) for n, v in floor_compile.items()},
            "per_round": {n: h.rounded(t) for n, t in times.items()},
        }
    )


if __name__ == "__main__":
    main()
