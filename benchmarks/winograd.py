"""Winograd F(2x2, 3x3) against XLA's convolution, per layer and per training step.

Two parts, each contender compiled first and then timed in interleaved rounds
(the order rotating), medians and per-round ratios reported:

* ``layers``: every 3x3 stride-1 convolution shape of the registered presets
  (``cnn``, ``resnet8``/``resnet20``), batch 128, as a model calls it: one map
  per example under ``jax.vmap``, ``SAME`` padding, then ReLU. ``forward``
  times the layer; ``train`` times ``value_and_grad`` of a loss on it in both
  the input and the weight. Contenders: ``xla`` (``lax.conv_general_dilated``,
  ``NHWC``/``HWIO``) and ``winograd`` (``zoo.models._winograd.winograd_conv``).
* ``steps``: zoo's training step (``make_train_step``, Adam, batch 128, MNIST
  chunks already on the device) of ``cnn`` and ``resnet8`` on the conv path
  ``"nhwc"`` (XLA's convolutions only) and ``"winograd"`` (Winograd for the 3x3
  stride-1 convolutions of at least ``WINOGRAD_MIN_CHANNELS`` input channels),
  compiled as zoo compiles them (``zoo.compiler_options()``: on CPU, XLA's own
  convolution kernels).

The ``layers`` part's ``xla`` contender is ``jax.jit`` as it comes, i.e.
XLA:CPU's default convolution kernels (YNNPACK's); ``benchmarks/conv_kernels.py``
compares those with XLA's own.

``winograd_over_xla`` below 1 means Winograd is faster. Prints one JSON line.

Run:
    ZOO_DATA_DIR=/path/to/data python benchmarks/winograd.py [--epochs 5]
"""

from collections.abc import Callable
from typing import Any

import _harness as h
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

import zoo
from zoo.data import load_mnist
from zoo.models._conv import WINOGRAD_MIN_CHANNELS
from zoo.models._winograd import winograd_conv

LAYERS = (  # (size, in, out): cnn's, then resnet8/resnet20's
    (28, 1, 32),
    (14, 32, 64),
    (7, 64, 128),
    (28, 16, 16),
    (14, 32, 32),
    (7, 64, 64),
)
STEP_PRESETS = ("cnn", "resnet8")
STEPS_PER_CALL = 4
SAME = ((1, 1), (1, 1))


def _xla(x: jax.Array, w: jax.Array) -> jax.Array:
    return lax.conv_general_dilated(
        x[None], w, (1, 1), list(SAME), dimension_numbers=("NHWC", "HWIO", "NHWC")
    )[0]


def _winograd(x: jax.Array, w: jax.Array) -> jax.Array:
    return winograd_conv(x[None], w, SAME)[0]


def layer_contenders(size: int, cin: int, cout: int) -> dict[str, Callable]:
    keys = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(keys[0], (h.BATCH_SIZE, size, size, cin))
    w = jax.random.normal(keys[1], (3, 3, cin, cout)) / np.sqrt(9 * cin)
    target = jax.random.normal(keys[2], (h.BATCH_SIZE, size, size, cout))
    contenders = {}
    for name, one in (("xla", _xla), ("winograd", _winograd)):
        layer = jax.vmap(one, (0, None))

        def loss(x, w, layer=layer):
            return jnp.sum(jax.nn.relu(layer(x, w)) * target)

        contenders[f"{name}_forward"] = h.round_timer(jax.jit(layer), x, w)
        train = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
        contenders[f"{name}_train"] = h.round_timer(train, x, w)
    return contenders


def step_contenders(name: str, train: Any) -> dict[str, Callable]:
    contenders = {}
    for path in ("nhwc", "winograd"):
        with zoo.conv_path(path):
            ts, step, chunk = h.preset_step(name, train, STEPS_PER_CALL)
            per_call = h.round_timer(lambda ts, c, step=step: step(ts, c)[0], ts, chunk)
        contenders[path] = lambda r, f=per_call: f(r) / STEPS_PER_CALL
    return contenders


def main() -> None:
    args = h.parser(
        "Winograd F(2x2, 3x3) against XLA's convolution", epochs=5
    ).parse_args()
    layers: dict[str, Any] = {}
    for size, cin, cout in LAYERS:
        times = h.run_rounds(layer_contenders(size, cin, cout), args.epochs)
        med = {k: round(h.median(v), 2) for k, v in times.items()}
        layers[f"{size}x{size} {cin}->{cout}"] = {
            "ms": med,
            "winograd_over_xla": {
                part: round(h.ratio(times[f"winograd_{part}"], times[f"xla_{part}"]), 3)
                for part in ("forward", "train")
            },
            "winograd_by_default": cin >= WINOGRAD_MIN_CHANNELS,
        }
    train = load_mnist("train", data_dir=args.data_dir)
    steps: dict[str, Any] = {}
    for name in STEP_PRESETS:
        times = h.run_rounds(step_contenders(name, train), args.epochs)
        steps[name] = h.step_summary(times, "winograd_over_nhwc", "winograd", "nhwc")
    h.emit(
        {
            "benchmark": "winograd",
            "batch_size": h.BATCH_SIZE,
            "rounds": args.epochs,
            "winograd_min_channels": WINOGRAD_MIN_CHANNELS,
            "layers": layers,
            "steps": steps,
        }
    )


if __name__ == "__main__":
    main()
