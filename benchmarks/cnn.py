"""CNN training speed on MNIST: zoo's ``fit`` against PyTorch, Grain, the floor.

For the ``stax_cnn`` and ``cnn`` presets (Adam 1e-3, batch 128, BatchNorm in
training mode), seconds per MNIST epoch, compilation excluded, of:

* ``zoo_fit``: ``zoo.train.fit``, one ``fit(epochs=1)`` per round continuing
  from the last, fit's default ``steps_per_call``, one ``make_train_step``
  passed to every call; ``zoo_step_on_device`` (diagnostic): that compiled step
  over chunks already on the device;
* ``zoo_fit_channels_first`` (diagnostic): ``zoo_fit`` on the model switched to
  the ``"xla"`` conv path (``zoo.models.with_conv_path``);
* ``pytorch``: PyTorch eager on the same architecture (``_pytorch.py``), left
  out when torch is not installed (``pip install --group bench``);
* ``per_record`` (and ``per_record_eqx_pool`` where the preset pools): Grain
  per record feeding an ``eqx.filter_jit`` step (``_references.py``);
* ``floor_step`` / ``floor_chunk4``: a ``jax.jit``'d step per batch, or 4 steps
  unrolled in one ``jax.jit``, batches on the device; the faster is ``floor``.

Each round trains ``--limit-steps`` steps (default 64, rounded up to whole
fused chunks) scaled to a 468-step epoch; ``--limit-steps 0`` times whole
epochs. Prints one JSON line.

Run:
    ZOO_DATA_DIR=/path/to/data python benchmarks/cnn.py [--epochs 3] [--no-tune]
"""

import math
import time
from typing import Any, cast

import _harness as h
import _pytorch as pt
import _references as ref
import jax
import optax

import zoo
from zoo.data import ArrayDataset, load_mnist

PRESETS = ("stax_cnn", "cnn")
SMOKE_OVERRIDES: dict[str, Any] = {"channels": [8], "hidden_sizes": [16]}
"""--smoke: ``cnn`` cut to one narrow block (it pools: every contender runs),
2 steps per call and per floor chunk."""
SMOKE_CHUNK = 2
LEARNING_RATE = 1e-3
FLOOR_CHUNK = 4
TARGETS = {
    "zoo_over_pytorch": ("<=", 1.0),
    "zoo_over_floor": ("<=", 1.15),
    "per_record_over_zoo": (">=", 2.0),
}


def bench_preset(
    name: str,
    train: ArrayDataset,
    rounds: int,
    limit_steps: int | None,
    *,
    smoke: bool = False,
) -> dict[str, Any]:
    """Time every contender on preset ``name``; return its figures."""
    optimizer = optax.adam(LEARNING_RATE)
    overrides: dict[str, Any] = SMOKE_OVERRIDES if smoke else {}
    model, state = zoo.create_model(name, key=jax.random.key(0), **overrides)
    k = h.fit_steps_per_call(model, state, train)
    floor_chunk = FLOOR_CHUNK
    if smoke:
        k = floor_chunk = SMOKE_CHUNK
    data, steps = h.limited(train, limit_steps, math.lcm(k, floor_chunk))
    scale = h.epoch_scale(steps)

    zoo_side = h.ZooContenders(
        model, state, optimizer, data, steps=steps, steps_per_call=k, scale=scale
    )
    # Diagnostic: zoo's fit on Equinox's channels-first layers ("xla" path).
    cf_model = zoo.models.with_conv_path(model, "xla")
    cf_side = h.ZooContenders(
        cf_model,
        state,
        optimizer,
        data,
        steps=steps,
        steps_per_call=k,
        scale=scale,
    )

    # Reference: PyTorch eager on the same architecture, tensors in memory.
    references: dict[str, Any] = {}
    if pt.available():
        torch_loop = pt.TorchLoop(
            model.config(),
            data.inputs,
            data.labels,
            learning_rate=LEARNING_RATE,
            batch_size=h.BATCH_SIZE,
            threads=pt.jax_threads(),
            device=pt.device_for(jax.default_backend()),
        )
        torch_loop.epoch(min(steps, 4), seed=0)  # warm up (oneDNN/cuDNN choices)
        references["pytorch"] = lambda r: (
            h.timed(lambda: torch_loop.epoch(steps, seed=r))[1] * scale
        )

    # Reference: per-record Grain + an eqx.filter_jit step on the same model.
    pr_model, pr_state = zoo.create_model(name, key=jax.random.key(0), **overrides)
    pr = ref.PerRecordLoop(
        pr_model, pr_state, optimizer, flatten=False, batch_size=h.BATCH_SIZE
    )
    start = time.perf_counter()
    pr.epoch(data.take(2 * h.BATCH_SIZE), seed=0)  # compile; warm Grain up
    pr_compile = time.perf_counter() - start

    def per_record(r: int) -> float:
        return h.timed(lambda: pr.epoch(data, seed=r))[1] * scale

    # Reference: the same loop on the model as built from Equinox's own layers
    # (eqx.nn.MaxPool2d in place of zoo.MaxPool), for presets that pool.
    eqx_pool_model = ref.with_equinox_pooling(pr_model)
    references["per_record"] = per_record
    if eqx_pool_model is not None:
        pr_eqx = ref.PerRecordLoop(
            eqx_pool_model, pr_state, optimizer, flatten=False, batch_size=h.BATCH_SIZE
        )
        pr_eqx.epoch(data.take(2 * h.BATCH_SIZE), seed=0)
        references["per_record_eqx_pool"] = lambda r: (
            h.timed(lambda: pr_eqx.epoch(data, seed=r))[1] * scale
        )

    # Reference: the compute-only floor, batches on device, no while loop.
    xs, ys = h.device_batches(data, steps, model.input_shape, seed=0)
    keys = jax.random.split(jax.random.key(1), steps)
    carry, static = ref.floor_init(model, state, optimizer)
    per_step = [(xs[i], ys[i], keys[i]) for i in range(steps)]
    n_chunks = steps // floor_chunk
    chunk_shape = (n_chunks, floor_chunk)
    cx = xs.reshape(*chunk_shape, *xs.shape[1:])
    cy = ys.reshape(*chunk_shape, *ys.shape[1:])
    ck = keys.reshape(*chunk_shape)
    per_chunk = [(cx[i], cy[i], ck[i]) for i in range(n_chunks)]
    h.block((per_step, per_chunk))
    floor_compile: dict[str, float] = {}
    floors: dict[str, tuple[Any, list[tuple[jax.Array, ...]]]] = {}
    for floor_name, make, args in [
        ("floor_step", ref.make_floor_step, per_step),
        (f"floor_chunk{floor_chunk}", ref.make_floor_chunk, per_chunk),
    ]:
        start = time.perf_counter()
        fn = cast(Any, make(static, optimizer))
        floors[floor_name] = (fn.lower(carry, *args[0]).compile(), args)
        floor_compile[floor_name] = time.perf_counter() - start
    floor_live = {"carry": carry}

    def floor(floor_name: str) -> Any:
        compiled, args = floors[floor_name]

        def run(r: int) -> float:
            del r
            start = time.perf_counter()
            floor_live["carry"] = ref.run_steps(compiled, floor_live["carry"], args)
            return (time.perf_counter() - start) * scale

        return run

    times = h.run_rounds(
        {
            **zoo_side.contenders(),
            "zoo_fit_channels_first": cf_side.fit,
            **references,
            **{n: floor(n) for n in floors},
        },
        rounds,
    )
    floor_name = min(floors, key=lambda n: h.median(times[n]))
    ratios = {
        "zoo_over_floor": h.ratio(times["zoo_fit"], times[floor_name]),
        "per_record_over_zoo": h.ratio(times["per_record"], times["zoo_fit"]),
    }
    if "pytorch" in times:
        ratios["zoo_over_pytorch"] = h.ratio(times["zoo_fit"], times["pytorch"])
    diagnostics = h.step_diagnostics(times, floor_name)
    diagnostics["zoo_channels_first_over_zoo"] = h.ratio(
        times["zoo_fit_channels_first"], times["zoo_fit"]
    )
    if "pytorch" in times:
        diagnostics["zoo_channels_first_over_pytorch"] = h.ratio(
            times["zoo_fit_channels_first"], times["pytorch"]
        )
    if "per_record_eqx_pool" in times:
        diagnostics["per_record_eqx_pool_over_zoo"] = h.ratio(
            times["per_record_eqx_pool"], times["zoo_fit"]
        )
    return {
        "seconds_per_epoch": {n: round(h.median(t), 3) for n, t in times.items()},
        "floor": floor_name,
        "ratios": {n: round(v, 3) for n, v in ratios.items()},
        "met": h.targets_met(ratios, {n: t for n, t in TARGETS.items() if n in ratios}),
        "diagnostic_ratios": {n: round(v, 3) for n, v in diagnostics.items()},
        "steps_timed_per_round": steps,
        "scaled_to_epoch": steps != h.STEPS_PER_MNIST_EPOCH,
        "zoo_steps_per_call": k,
        "conv_path": getattr(model, "conv_path", None),
        "overrides": overrides,
        "pytorch_threads": pt.jax_threads() if pt.available() else None,
        "pytorch_device": pt.device_for(jax.default_backend()),
        "parameters": h.param_count(model),
        "compile_seconds": {
            "zoo_fit": round(zoo_side.compile_seconds, 2),
            "per_record_first_two_steps": round(pr_compile, 2),
            **{n: round(v, 2) for n, v in floor_compile.items()},
        },
        "per_round": {n: h.rounded(t) for n, t in times.items()},
    }


def main() -> None:
    args = h.parse_args(
        h.parser(
            "CNN training speed: zoo's fit vs references.", epochs=3, limit_steps=64
        )
    )
    train = load_mnist("train", data_dir=args.data_dir)
    results = {
        name: bench_preset(name, train, args.epochs, args.limit_steps, smoke=args.smoke)
        for name in (("cnn",) if args.smoke else PRESETS)
    }
    h.emit(
        {
            "benchmark": "cnn",
            **results,
            "targets": {n: f"{op} {v}" for n, (op, v) in TARGETS.items()},
            "rounds": args.epochs,
            "batch_size": h.BATCH_SIZE,
            "optimizer": f"adam({LEARNING_RATE})",
            "pytorch": pt.version(),
        }
    )


if __name__ == "__main__":
    main()
