"""ResNet-50 inference on the CPU: zoo (jitted) against timm (PyTorch eager).

One forward pass of ``resnet50`` on a batch of 32 RGB 224x224 images,
BatchNorm in inference mode, seconds per batch of:

* ``zoo``: ``zoo.apply`` on ``eqx.nn.inference_mode(model)`` under
  ``eqx.filter_jit``, compiled before timing, on the model's default conv path
  (``nhwc`` on the CPU);
* ``timm``: ``timm.create_model("resnet50")`` in ``eval()`` mode under
  ``torch.inference_mode()``, ``torch.set_num_threads(2)``, warmed up once.

Both hold the same weights (timm's random ones, loaded into zoo with
``zoo.models.load_timm_weights``), so they compute the same function. The
contenders alternate over ``--epochs`` rounds of ``CALLS`` calls each; each
one's fastest round is reported, and the ratio of the two fastest. Prints one
JSON line. ``--smoke`` runs a batch of 2 at 64x64 for one call, and without
timm installed times zoo alone (a full run needs timm: the ``interop`` group).

Run:
    python benchmarks/resnet50_forward.py [--epochs 5]
"""

import importlib.util
import time
from collections.abc import Callable
from typing import Any

import _harness as h
import equinox as eqx
import jax
import numpy as np

import zoo

BATCH = 32
IMAGE = 224
CALLS = 2
SMOKE_BATCH, SMOKE_IMAGE, SMOKE_CALLS = 2, 64, 1
TORCH_THREADS = 2
TARGETS = {"zoo_over_timm": ("<=", 1.0)}


def timm_contender(
    batch: np.ndarray, calls: int
) -> tuple[Callable[[int], float], dict[str, np.ndarray], dict[str, str]]:
    """timm's resnet50 as a round (seconds per call), its weights, its versions."""
    import timm  # pyright: ignore[reportMissingImports] (the optional interop group)
    import torch  # pyright: ignore[reportMissingImports]

    torch.set_num_threads(TORCH_THREADS)
    torch.manual_seed(0)
    model = timm.create_model("resnet50", pretrained=False).eval()
    weights = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    x = torch.from_numpy(batch)

    def forward() -> Any:
        with torch.inference_mode():
            return model(x)

    forward()  # warm up (oneDNN picks its kernels)

    def round_(_: int) -> float:
        start = time.perf_counter()
        for _ in range(calls):
            forward()
        return (time.perf_counter() - start) / calls

    versions = {"torch": str(torch.__version__), "timm": str(timm.__version__)}
    return round_, weights, versions


def zoo_contender(
    batch: np.ndarray, weights: dict[str, np.ndarray] | None, calls: int
) -> tuple[Callable[[int], float], float]:
    """zoo's resnet50 as a round (seconds per call), and its compile seconds."""
    size = batch.shape[-1]
    model, state = zoo.create_model("resnet50", image_size=size, key=jax.random.key(0))
    if weights is not None:
        model, state = zoo.models.load_timm_weights(model, state, weights)
    model = eqx.nn.inference_mode(model)
    forward = eqx.filter_jit(lambda m, x, s: zoo.apply(m, x, s)[0])
    x = jax.device_put(batch)
    start = time.perf_counter()
    h.block(forward(model, x, state))
    compile_seconds = time.perf_counter() - start

    def round_(_: int) -> float:
        start = time.perf_counter()
        for _ in range(calls):
            h.block(forward(model, x, state))
        return (time.perf_counter() - start) / calls

    return round_, compile_seconds


def main() -> None:
    args = h.parse_args(
        h.parser("ResNet-50 forward: zoo (jitted) vs timm (eager).", epochs=5)
    )
    have_timm = importlib.util.find_spec("timm") is not None
    if not have_timm and not args.smoke:
        raise SystemExit(
            "benchmarks/resnet50_forward.py compares with timm: install the "
            "interop group (pip install --group interop), or pass --smoke."
        )
    batch_size, image, calls = (
        (SMOKE_BATCH, SMOKE_IMAGE, SMOKE_CALLS) if args.smoke else (BATCH, IMAGE, CALLS)
    )
    rng = np.random.default_rng(0)
    batch = rng.standard_normal((batch_size, 3, image, image)).astype(np.float32)
    contenders: dict[str, Callable[[int], float]] = {}
    weights, versions = None, {}
    if have_timm:
        contenders["timm"], weights, versions = timm_contender(batch, calls)
    contenders["zoo"], compile_seconds = zoo_contender(batch, weights, calls)
    times = h.run_rounds(contenders, max(1, args.epochs))
    fastest = {name: min(t) for name, t in times.items()}
    ratios = {}
    if "timm" in fastest:
        ratios["zoo_over_timm"] = fastest["zoo"] / fastest["timm"]
    h.emit(
        {
            "benchmark": "resnet50_forward",
            "batch": batch_size,
            "image_size": image,
            "calls_per_round": calls,
            "seconds_per_batch": {n: round(v, 4) for n, v in fastest.items()},
            "ratios": {n: round(v, 3) for n, v in ratios.items()},
            "met": h.targets_met(ratios, {n: TARGETS[n] for n in ratios}),
            "per_round": {n: h.rounded(t, 4) for n, t in times.items()},
            "zoo_compile_seconds": round(compile_seconds, 2),
            "torch_threads": TORCH_THREADS if have_timm else None,
            "versions": versions or None,
            "smoke": bool(args.smoke),
        }
    )


if __name__ == "__main__":
    main()
