"""The steady-state cost of zoo's runtime shape checks: it should be none.

zoo checks public model calls with jaxtyping + beartype while tracing, so a
compiled step should run as fast with them as without. For the ``mlp`` and
``stax_cnn`` presets this builds two ``zoo.train.make_train_step`` steps, one
traced with checks on and one after ``zoo.runtime.set_shape_checks(False)``,
checks that both lower to the same program, and times single calls of them in
strict alternation (batch 128, outputs fed back in). Reports the ratio of
medians (target <= 1.02), of 10th percentiles and the median of paired ratios,
and the seconds of tracing and lowering (fresh steps). Prints one JSON line.

Run:
    ZOO_DATA_DIR=/path/to/data python benchmarks/shape_checks.py [--epochs 100]
"""

import time
from typing import Any

import _harness as h
import jax
import numpy as np
import optax

import zoo
from zoo.data import ArrayDataset, Chunk, load_mnist

PRESETS = {"mlp": 10, "stax_cnn": 6}
"""Preset -> calls per variant per round (``--epochs`` rounds)."""
SMOKE_PRESETS = {"mlp": 2}
TARGET = ("<=", 1.02)
LOWER_REPEATS = 4


def bench_preset(
    name: str, train: ArrayDataset, calls: int, rounds: int, lower_repeats: int
) -> dict[str, Any]:
    """Checks on vs off for one preset's training step."""
    optimizer = optax.adam(1e-3)
    model, state = zoo.create_model(name, key=jax.random.key(0))
    ts = zoo.train.TrainState.init(model, state, optimizer, key=jax.random.key(0))
    chunk = h.block(
        jax.device_put(
            Chunk(
                train.inputs[None, : h.BATCH_SIZE],
                train.labels[None, : h.BATCH_SIZE],
                np.ones((1, h.BATCH_SIZE), np.bool_),
            )
        )
    )

    previous = zoo.runtime.shape_checks_enabled()
    modes = [("checks_on", True), ("checks_off", False)]
    # Tracing + lowering, where the checks run: fresh steps, alternating.
    lower: dict[str, list[float]] = {v: [] for v, _ in modes}
    programs: dict[str, str] = {}
    for i in range(lower_repeats):
        for variant, enabled in modes[i % 2 :] + modes[: i % 2]:
            zoo.runtime.set_shape_checks(enabled)
            fn = zoo.train.make_train_step(optimizer)
            start = time.perf_counter()
            lowered = fn.lower(ts, chunk)
            lower[variant].append(time.perf_counter() - start)
            programs[variant] = lowered.as_text()
    # The steps timed: the second built and traced after set_shape_checks(False).
    variants: dict[str, Any] = {}
    carries: dict[str, zoo.train.TrainState] = {}
    for variant, enabled in modes:
        zoo.runtime.set_shape_checks(enabled)
        fn = zoo.train.make_train_step(optimizer)
        carries[variant] = h.block(fn(ts, chunk))[0]  # trace + compile
        variants[variant] = fn
    zoo.runtime.set_shape_checks(previous)

    def one_call(variant: str) -> float:
        start = time.perf_counter()
        carries[variant] = h.block(variants[variant](carries[variant], chunk))[0]
        return time.perf_counter() - start

    # Single calls in strict alternation (on, off, on, off, ...; the order of
    # each pair flips every round), each waited for, so both variants see the
    # same load from other jobs, sampled finely.
    names = list(variants)
    samples: dict[str, list[float]] = {v: [] for v in names}
    for r in range(rounds):
        order = names if r % 2 == 0 else names[::-1]
        for _ in range(calls):
            for variant in order:
                samples[variant].append(one_call(variant))
    on, off = samples["checks_on"], samples["checks_off"]
    ratio = h.median(on) / h.median(off)
    return {
        "ms_per_step": {v: round(1e3 * h.median(t), 3) for v, t in samples.items()},
        "ratio_on_over_off": round(ratio, 4),
        "met": h.targets_met({"r": ratio}, {"r": TARGET})["r"],
        "same_program": programs["checks_on"] == programs["checks_off"],
        "ratio_of_10th_percentiles": round(
            float(np.percentile(on, 10) / np.percentile(off, 10)), 4
        ),
        "median_of_paired_ratios": round(h.ratio(on, off), 4),
        "trace_and_lower_seconds": {v: round(h.median(t), 3) for v, t in lower.items()},
        "calls_per_variant": len(on),
    }


def main() -> None:
    args = h.parse_args(
        h.parser("Steady-state cost of runtime shape checks (on vs off).", epochs=100)
    )
    train = load_mnist("train", data_dir=args.data_dir)
    presets = SMOKE_PRESETS if args.smoke else PRESETS
    lower_repeats = 2 if args.smoke else LOWER_REPEATS
    results = {
        name: bench_preset(name, train, calls, args.epochs, lower_repeats)
        for name, calls in presets.items()
    }
    h.emit(
        {
            "benchmark": "shape_checks",
            **results,
            "target": f"ratio_on_over_off {TARGET[0]} {TARGET[1]}",
            "rounds": args.epochs,
            "batch_size": h.BATCH_SIZE,
        }
    )


if __name__ == "__main__":
    main()
