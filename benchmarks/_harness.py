"""Shared plumbing of the benchmark scripts: flags, runtime opt-ins, timing, output.

Not a benchmark: it prints nothing when run. Every script in ``benchmarks/``
accepts the same flags (``--epochs``, ``--data-dir``, ``--limit-steps``,
``--no-tune``, ``--no-cache``, ``--smoke``), so ``nox -s bench -- --epochs 3``
passes one set of flags to all of them.

Every figure that matters is a ratio of contenders measured in the same run,
interleaved round by round, and reported as the median over rounds;
compilation is always done before timing. Scripts opt in to ``zoo.runtime``'s
tuning first thing (:func:`parse_args`), and the JSON line's ``runtime`` says
how: with the compilation cache on, a compile figure of a program an earlier
run compiled is the time to load it.
"""

import argparse
import json
import math
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any, Literal

import equinox as eqx
import jax
import numpy as np

import zoo
from zoo.data import ArrayDataset, Chunk

BATCH_SIZE = 128
MNIST_TRAIN = 60_000
STEPS_PER_MNIST_EPOCH = MNIST_TRAIN // BATCH_SIZE  # 468, remainder dropped

RUNTIME: dict[str, Any] = {}
"""The runtime opt-ins of this process (:func:`parse_args`), for the JSON line."""


def parser(
    description: str, *, epochs: int, limit_steps: int | None = None
) -> argparse.ArgumentParser:
    """The common command line of every benchmark script."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument(
        "--epochs",
        type=int,
        default=epochs,
        help=f"timed rounds per contender; the median is reported (default {epochs})",
    )
    p.add_argument("--data-dir", default=None, help="defaults to $ZOO_DATA_DIR")
    p.add_argument(
        "--limit-steps",
        type=int,
        default=limit_steps,
        help="time this many training steps per round and scale to a full MNIST "
        "epoch (468 steps); 0 means whole epochs"
        + (f" (default {limit_steps})" if limit_steps else " (default: whole epochs)"),
    )
    p.add_argument(
        "--no-tune",
        action="store_true",
        help="skip zoo.runtime.tune_cpu(): glibc's allocator defaults, as a plain "
        "script that does not opt in gets",
    )
    p.add_argument(
        "--no-cache",
        action="store_true",
        help="skip zoo.runtime.enable_compilation_cache()",
    )
    p.add_argument(
        "--smoke",
        action="store_true",
        help="the smallest run through every code path (fewest presets and "
        "sizes): a test that the script works, not a measurement",
    )
    return p


def parse_args(
    p: argparse.ArgumentParser, *, measures_compilation: bool = False
) -> argparse.Namespace:
    """Parse the command line, then opt in to zoo's runtime tuning.

    Call it first thing, before any JAX computation (as ``examples/mnist.py``
    calls ``zoo.runtime.tune_cpu()``): ``tune_cpu()`` unless ``--no-tune``, and
    the compilation cache unless ``--no-cache``. A script that times
    compilation as a first run does (``measures_compilation``) switches JAX's
    cache off instead, so every program compiles.
    """
    args = p.parse_args()
    opt_in(
        tune=not args.no_tune,
        cache=not (args.no_cache or measures_compilation),
        disable_cache=measures_compilation,
    )
    return args


def opt_in(*, tune: bool, cache: bool, disable_cache: bool = False) -> None:
    """Apply the runtime opt-ins and record them in :data:`RUNTIME`."""
    tuned = zoo.runtime.tune_cpu() if tune else False
    if disable_cache:
        jax.config.update("jax_enable_compilation_cache", False)
    elif cache:
        zoo.runtime.enable_compilation_cache()
    folder = zoo.runtime.compilation_cache_dir()
    enabled = jax.config.jax_enable_compilation_cache  # pyright: ignore[reportAttributeAccessIssue]
    RUNTIME.update(
        tune_cpu=tune,
        allocator_tuned=tuned,
        compilation_cache=str(folder) if folder is not None and enabled else None,
    )


def quiet_callbacks() -> list[zoo.train.Callback]:
    """fit's default callbacks less the progress bar and the log (the NaN guard)."""
    return zoo.train.default_callbacks(progress=False, log=None)


def median(values: Sequence[float]) -> float:
    """The median of a non-empty sequence."""
    return statistics.median(values)


def ratio(numerator: Sequence[float], denominator: Sequence[float]) -> float:
    """Median over rounds of the per-round ratio ``numerator[i] / denominator[i]``.

    Contenders of one round ran seconds apart, so a per-round ratio cancels most
    of the slow drift caused by other jobs on the machine.
    """
    return median([a / b for a, b in zip(numerator, denominator, strict=True)])


def block(tree: Any) -> Any:
    """Wait for every array in ``tree``; return it."""
    return jax.block_until_ready(tree)


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    """Run ``fn``, wait for its arrays, return ``(result, seconds)``."""
    start = time.perf_counter()
    result = block(fn())
    return result, time.perf_counter() - start


def round_timer(
    fn: Callable[..., Any], *args: Any, calls: int = 10
) -> Callable[[int], float]:
    """Compile ``fn`` on ``args``; return a round for :func:`run_rounds`: the
    milliseconds per call over ``calls`` calls."""
    block(fn(*args))

    def round_(_: int) -> float:
        start = time.perf_counter()
        for _ in range(calls):
            block(fn(*args))
        return (time.perf_counter() - start) / calls * 1e3

    return round_


def machine() -> dict[str, Any]:
    """Facts about the machine and the software, for the JSON line."""
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "load_1min_at_end": round(load, 2),
    }


def emit(result: dict[str, Any]) -> None:
    """Print the one JSON line of a benchmark, the runtime opt-ins and machine
    facts appended."""
    print(json.dumps({**result, "runtime": dict(RUNTIME), "machine": machine()}))


def rounded(values: Sequence[float], digits: int = 3) -> list[float]:
    """Round a list of seconds for the JSON line."""
    return [round(v, digits) for v in values]


def step_summary(
    times: dict[str, list[float]], ratio_name: str, numerator: str, denominator: str
) -> dict[str, Any]:
    """Per-step milliseconds of interleaved contenders for the JSON line: the
    medians, ``ratio_name`` (:func:`ratio` of two of them) and every round."""
    return {
        "ms_per_step": {k: round(median(v), 2) for k, v in times.items()},
        ratio_name: round(ratio(times[numerator], times[denominator]), 3),
        "per_round": {k: rounded(v, 2) for k, v in times.items()},
    }


def fit_steps_per_call(
    model: Any,
    state: Any,
    data: ArrayDataset,
    steps_per_epoch: int = STEPS_PER_MNIST_EPOCH,
) -> int:
    """The steps per call ``zoo.train.fit`` runs by default on ``data`` at batch
    ``BATCH_SIZE``. Passing it to ``fit`` explicitly trains exactly as the
    default does, without counting FLOPs every round."""
    return zoo.train.steps_per_call(
        model,
        state,
        data.inputs[0],
        batch_size=BATCH_SIZE,
        steps_per_epoch=steps_per_epoch,
    )


def limited(
    dataset: ArrayDataset, limit_steps: int | None, multiple: int
) -> tuple[ArrayDataset, int]:
    """The training set cut to ``limit_steps`` batches (rounded up to ``multiple``).

    Returns the dataset and its number of steps per epoch; without a limit, the
    whole set (468 steps for MNIST at batch 128).
    """
    full = len(dataset) // BATCH_SIZE
    if not limit_steps:
        return dataset, full
    steps = min(full, multiple * math.ceil(limit_steps / multiple))
    return dataset.take(steps * BATCH_SIZE), steps


def epoch_scale(steps: int) -> float:
    """Factor turning seconds for ``steps`` steps into seconds per MNIST epoch."""
    return STEPS_PER_MNIST_EPOCH / steps


def device_batches(
    dataset: ArrayDataset, steps: int, input_shape: tuple[int, ...], seed: int
) -> tuple[jax.Array, jax.Array]:
    """One shuffled epoch on the device: ``(steps, B, *input_shape)`` float32
    inputs scaled to [0, 1], and ``(steps, B)`` int32 labels."""
    rng = np.random.default_rng(seed)
    rows = rng.permutation(len(dataset))[: steps * BATCH_SIZE]
    inputs = dataset.inputs[rows].astype(np.float32) / np.float32(255.0)
    inputs = inputs.reshape(steps, BATCH_SIZE, *input_shape)
    labels = dataset.labels[rows].reshape(steps, BATCH_SIZE)
    return block(jax.device_put((inputs, labels)))


def param_count(model: Any) -> int:
    """Number of trainable scalars."""
    leaves = jax.tree.leaves(eqx.filter(model, eqx.is_inexact_array))
    return sum(int(np.prod(x.shape)) for x in leaves)


def run_rounds(
    contenders: dict[str, Callable[[int], float]], rounds: int
) -> dict[str, list[float]]:
    """Time every contender once per round, interleaved, the order rotating.

    Each contender is called as ``fn(round_index)`` and returns its seconds for
    that round (compilation already done). Rotating the order each round keeps
    any one contender from always following the same neighbour.
    """
    names = list(contenders)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            times[name].append(contenders[name](r))
    return times


def targets_met(
    ratios: dict[str, float], targets: dict[str, tuple[str, float]]
) -> dict[str, bool]:
    """Whether each ratio meets its target (``("<=", 1.1)`` or ``(">=", 3.0)``)."""
    return {
        name: ratios[name] <= bound if op == "<=" else ratios[name] >= bound
        for name, (op, bound) in targets.items()
    }


class ZooContenders:
    """zoo's side of a training benchmark, as two round-timed contenders.

    * ``zoo_fit``: ``zoo.train.fit(..., epochs=1)`` per round, continuing from
      the previous round's model, with fit's default callbacks less the
      progress bar and the log (the NaN guard stays); the seconds are
      ``history[0].train_seconds``. One ``make_train_step(optimizer)`` is
      passed to every call, so only the first call compiles; its
      ``precision`` is ``float32`` unless given.
    * ``zoo_step_on_device``: the same compiled step called on chunks already on
      the device, with no pipeline and no ``fit`` loop: it splits the gap to the
      floor into "the step's program" and "everything around it".

    Seconds are scaled by ``scale`` (to a full MNIST epoch).
    """

    def __init__(
        self,
        model: Any,
        state: Any,
        optimizer: Any,
        data: ArrayDataset,
        *,
        steps: int,
        steps_per_call: int,
        scale: float,
        precision: Literal["float32", "bfloat16"] = "float32",
    ) -> None:
        self.model, self.state = model, state
        self.optimizer = optimizer
        self.data = data
        self.k = steps_per_call
        self.scale = scale
        self.step = zoo.train.make_train_step(optimizer, precision=precision)
        # Warm up on one chunk: compiles the fused step and fit's small eager ops.
        warm = self._fit(data.take(self.k * BATCH_SIZE), seed=0)
        self.compile_seconds = warm.compile_seconds
        self.model, self.state = warm.model, warm.state

        rng = np.random.default_rng(0)
        rows = rng.permutation(len(data))[: steps * BATCH_SIZE]
        n = steps // self.k
        self.chunks = [
            jax.device_put(
                Chunk(data.inputs[r], data.labels[r], np.ones(r.shape, np.bool_))
            )
            for r in rows.reshape(n, self.k, BATCH_SIZE)
        ]
        self.device_live = zoo.train.TrainState.init(
            self.model, self.state, optimizer, key=jax.random.key(0)
        )
        self._on_device(self.chunks[:1])  # compile the call path (filter_jit)

    def _fit(self, data: ArrayDataset, seed: int) -> Any:
        return zoo.train.fit(
            self.model,
            self.state,
            data,
            self.step,
            epochs=1,
            seed=seed,
            steps_per_call=self.k,
            callbacks=quiet_callbacks(),
        )

    def fit(self, r: int) -> float:
        """One epoch of ``fit``; seconds per MNIST epoch."""
        result = self._fit(self.data, seed=r)
        self.model, self.state = result.model, result.state
        return result.history[0].train_seconds * self.scale

    def _on_device(self, chunks: list[Chunk]) -> None:
        ts, metrics = self.device_live, None
        for chunk in chunks:
            ts, metrics = self.step(ts, chunk)
        self.device_live = block((ts, metrics))[0]

    def step_on_device(self, r: int) -> float:
        """The compiled step over chunks on device; seconds per MNIST epoch."""
        del r
        start = time.perf_counter()
        self._on_device(self.chunks)
        return (time.perf_counter() - start) * self.scale

    def contenders(self) -> dict[str, Callable[[int], float]]:
        """``{"zoo_fit": ..., "zoo_step_on_device": ...}`` for :func:`run_rounds`."""
        return {"zoo_fit": self.fit, "zoo_step_on_device": self.step_on_device}


def step_diagnostics(times: dict[str, list[float]], floor: str) -> dict[str, float]:
    """Where a gap to the floor lies: in zoo's step itself, or in the loop."""
    return {
        "zoo_step_on_device_over_floor": ratio(
            times["zoo_step_on_device"], times[floor]
        ),
        "zoo_fit_over_zoo_step_on_device": ratio(
            times["zoo_fit"], times["zoo_step_on_device"]
        ),
    }
