"""Shared plumbing of the benchmark scripts: flags, timing, machine facts, output.

Not a benchmark: it prints nothing when run. Every script in ``benchmarks/``
accepts the same flags (``--epochs``, ``--data-dir``, ``--limit-steps``), so
``nox -s bench -- --epochs 3`` passes one set of flags to all of them.

The machines these run on are small and shared, so every figure that matters is
a ratio of contenders measured in the same run, interleaved round by round, and
reported as the median over rounds; compilation is always done before timing.
"""

import argparse
import json
import math
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

# Benchmarks time compilation as a first run does: without zoo's cache of
# compiled programs, unless the caller sets ZOO_COMPILATION_CACHE. Before zoo.
os.environ.setdefault("ZOO_COMPILATION_CACHE", "0")

import equinox as eqx
import jax
import numpy as np
import optax

import zoo
from zoo.data import ArrayDataset, Chunk
from zoo.train import TrainState, _tuning, make_train_step

BATCH_SIZE = 128
MNIST_TRAIN = 60_000
STEPS_PER_MNIST_EPOCH = MNIST_TRAIN // BATCH_SIZE  # 468, remainder dropped


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
    return p


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
    """Print the one JSON line of a benchmark, machine facts appended."""
    print(json.dumps({**result, "machine": machine()}))


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
    return _tuning.steps_per_call(
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


def preset_step(
    name: str, train: ArrayDataset, steps: int
) -> tuple[Any, Callable[..., Any], Any]:
    """Preset ``name`` ready to train (Adam 1e-3): ``(train_state, step, chunk)``,
    with ``step = zoo.train.make_train_step`` and ``chunk`` ``steps`` batches of
    ``train`` already on the device. Built under the conv path set at the call."""
    model, state = zoo.create_model(name, key=jax.random.key(0))
    optimizer = optax.adam(1e-3)
    ts = TrainState.init(model, state, optimizer, key=jax.random.key(1))
    xs, ys = device_batches(train, steps, model.input_shape, 0)
    chunk = Chunk(xs, ys, np.ones((steps, BATCH_SIZE), bool))
    return ts, make_train_step(optimizer), chunk


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
      the previous round's model, ``progress=False``, ``log=None``; the seconds
      are ``history[0].train_seconds``. One ``make_train_step(optimizer)`` is
      passed to every call (``train_step=``), so only the first call compiles.
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
    ) -> None:
        self.model, self.state = model, state
        self.optimizer = optimizer
        self.data = data
        self.k = steps_per_call
        self.scale = scale
        self.step = zoo.train.make_train_step(optimizer)
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
            optimizer=self.optimizer,
            epochs=1,
            seed=seed,
            steps_per_call=self.k,
            progress=False,
            log=None,
            train_step=self.step,
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
