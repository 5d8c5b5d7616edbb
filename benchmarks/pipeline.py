"""Input pipeline throughput: zoo's batch-level Grain pipeline vs per-record Grain.

Iterates one MNIST epoch at batch 128 through ``zoo.data.train_pipeline``
(``uint8`` batches; also without prefetch, and with ``scale=True``), median of
``--epochs`` epochs, and once through the per-record pipeline
``MapDataset.source(ds).shuffle().map(to_float).batch(128)``. Prints one JSON
line.

Run:
    ZOO_DATA_DIR=/path/to/data python benchmarks/pipeline.py [--epochs 5]
"""

import statistics
import time
from collections.abc import Iterable

import _harness as h
import grain
import numpy as np

from zoo.data import ArrayDataset, Batch, load_mnist, train_pipeline

BATCH_SIZE = 128
SEED = 0


def to_float_record(record: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Scale one image to ``float32`` in ``[0, 1]``, per record."""
    return {
        "inputs": record["inputs"].astype(np.float32) / np.float32(255.0),
        "labels": record["labels"],
    }


def time_epoch(batches: Iterable[Batch | dict[str, np.ndarray]]) -> tuple[int, float]:
    """Iterate every batch, materialising it as NumPy; return (examples, seconds).

    zoo's pipelines yield typed batches, per-record Grain pipelines dicts."""
    start = time.perf_counter()
    examples = 0
    for batch in batches:
        fields = batch._asdict() if isinstance(batch, Batch) else batch
        inputs = np.asarray(fields["inputs"])
        labels = np.asarray(fields["labels"])
        mask = fields.get("mask")
        examples += int(mask.sum()) if mask is not None else labels.shape[0]
        del inputs
    return examples, time.perf_counter() - start


def zoo_rate(
    dataset: ArrayDataset, repeats: int, *, prefetch: int = 2, scale: bool = False
) -> list[float]:
    """Examples per second over ``repeats`` epochs, each from a fresh pipeline."""
    rates = []
    for repeat in range(repeats):
        pipeline = train_pipeline(
            dataset,
            batch_size=BATCH_SIZE,
            seed=SEED + repeat,
            num_epochs=1,
            scale=scale,
            prefetch=prefetch,
        )
        examples, seconds = time_epoch(pipeline)
        rates.append(examples / seconds)
    return rates


def per_record_rate(dataset: ArrayDataset) -> float:
    """Examples per second for one epoch of per-record Grain."""
    pipeline = (
        grain.MapDataset.source(dataset)
        .shuffle(seed=SEED)
        .map(to_float_record)
        .batch(BATCH_SIZE)
    )
    batches: Iterable[Batch] = pipeline
    examples, seconds = time_epoch(batches)
    return examples / seconds


def main() -> None:
    args = h.parse_args(h.parser("Input pipeline throughput.", epochs=5))
    dataset = load_mnist("train", data_dir=args.data_dir)
    if args.limit_steps:  # epochs of this many batches
        dataset = dataset.take(args.limit_steps * BATCH_SIZE)
    zoo = zoo_rate(dataset, args.epochs)
    no_prefetch = zoo_rate(dataset, args.epochs, prefetch=0)
    scaled = zoo_rate(dataset, args.epochs, scale=True)
    per_record = per_record_rate(dataset)
    median = statistics.median(zoo)
    result = {
        "benchmark": "pipeline",
        "zoo_examples_per_s": round(median),
        "per_record_examples_per_s": round(per_record),
        "ratio": round(median / per_record, 1),
        "batch_size": BATCH_SIZE,
        "examples_per_epoch": len(dataset),
        "zoo_first_epoch_examples_per_s": round(zoo[0]),
        "zoo_no_prefetch_examples_per_s": round(statistics.median(no_prefetch)),
        "zoo_scaled_examples_per_s": round(statistics.median(scaled)),
        "repeats": args.epochs,
    }
    h.emit(result)


if __name__ == "__main__":
    main()
