"""XLA's own convolution kernels against YNNPACK's, per layer and per training step.

XLA:CPU gives convolutions to YNNPACK by default; zoo compiles its programs on
CPU with them left to XLA's own kernels (``zoo.compiler_options``). Two parts,
each contender compiled first and then timed in interleaved rounds (the order
rotating), medians and per-round ratios reported:

* ``layers``: every convolution shape of the ``stax_cnn``, ``cnn`` and ResNet
  presets, batch 128, as a model calls it (one map per example under
  ``jax.vmap``, ``SAME`` padding, then ReLU). ``forward`` times the layer;
  ``train`` times ``value_and_grad`` of a loss on it in both the input and the
  weight. Contenders: ``ynnpack`` (``jax.jit`` as it comes) and ``xla``
  (``jax.jit`` with ``compiler_options=zoo.compiler_options()``).
* ``steps``: zoo's training step (``make_train_step``, Adam, batch 128, two
  steps per call, MNIST chunks already on the device) of every CNN preset,
  compiled with each kernel library (``ynnpack``: the same step function under
  plain ``eqx.filter_jit``); for ``cnn`` and ``resnet8`` also on the conv path
  ``"winograd"`` with XLA's kernels.

``xla_over_ynnpack`` below 1 means XLA's kernels are faster. Prints one JSON
line.

Run:
    ZOO_DATA_DIR=/path/to/data python benchmarks/conv_kernels.py [--epochs 5]
"""

from collections.abc import Callable
from typing import Any, cast

import _harness as h
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

import zoo
from zoo.data import load_mnist

LAYERS = (  # (size, in, out, kernel, stride)
    (28, 1, 32, 5, 2),  # stax_cnn
    (14, 32, 32, 5, 2),
    (28, 1, 32, 3, 1),  # cnn
    (14, 32, 64, 3, 1),
    (7, 64, 128, 3, 1),
    (28, 16, 16, 3, 1),  # resnet8 / resnet20
    (14, 32, 32, 3, 1),
    (7, 64, 64, 3, 1),
)
STEP_PRESETS = ("stax_cnn", "cnn", "lenet5", "resnet8")
WINOGRAD_PRESETS = ("cnn", "resnet8")
STEPS_PER_CALL = 2


def layer_contenders(
    size: int, cin: int, cout: int, kernel: int, stride: int
) -> dict[str, Callable]:
    keys = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(keys[0], (h.BATCH_SIZE, size, size, cin))
    w = jax.random.normal(keys[1], (kernel, kernel, cin, cout)) / np.sqrt(
        kernel * kernel * cin
    )
    out = -(-size // stride)
    target = jax.random.normal(keys[2], (h.BATCH_SIZE, out, out, cout))

    def one(x: jax.Array, w: jax.Array) -> jax.Array:
        return lax.conv_general_dilated(
            x[None],
            w,
            (stride, stride),
            "SAME",
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
        )[0]

    layer = jax.vmap(one, (0, None))

    def loss(x: jax.Array, w: jax.Array) -> jax.Array:
        return jnp.sum(jax.nn.relu(layer(x, w)) * target)

    train = jax.value_and_grad(loss, argnums=(0, 1))
    contenders = {}
    for kernels, options in (("ynnpack", None), ("xla", zoo.compiler_options())):
        forward = jax.jit(layer, compiler_options=options)
        contenders[f"{kernels}_forward"] = h.round_timer(forward, x, w)
        contenders[f"{kernels}_train"] = h.round_timer(
            jax.jit(train, compiler_options=options), x, w
        )
    return contenders


def step_contenders(name: str, train: Any) -> dict[str, Callable]:
    paths = ("nhwc", "winograd") if name in WINOGRAD_PRESETS else ("nhwc",)
    contenders = {}
    for path in paths:
        with zoo.conv_path(path):
            ts, step, chunk = h.preset_step(name, train, STEPS_PER_CALL)
            kinds: dict[str, Any] = {"xla": step}
            if path == "nhwc":  # the same step function, without zoo's options
                kinds["ynnpack"] = eqx.filter_jit(cast(Any, step).__wrapped__)
            for kernels, fn in kinds.items():
                per_call = h.round_timer(lambda ts, c, fn=fn: fn(ts, c)[0], ts, chunk)
                label = kernels if path == "nhwc" else f"{path}_{kernels}"
                contenders[label] = lambda r, f=per_call: f(r) / STEPS_PER_CALL
    return contenders


def main() -> None:
    args = h.parser(
        "XLA's convolution kernels against YNNPACK's on CPU", epochs=5
    ).parse_args()
    layers: dict[str, Any] = {}
    for size, cin, cout, kernel, stride in LAYERS:
        times = h.run_rounds(
            layer_contenders(size, cin, cout, kernel, stride), args.epochs
        )
        layers[f"{size}x{size} {cin}->{cout} {kernel}x{kernel}/{stride}"] = {
            "ms": {k: round(h.median(v), 2) for k, v in times.items()},
            "xla_over_ynnpack": {
                part: round(h.ratio(times[f"xla_{part}"], times[f"ynnpack_{part}"]), 3)
                for part in ("forward", "train")
            },
        }
    train = load_mnist("train", data_dir=args.data_dir)
    steps: dict[str, Any] = {}
    for name in STEP_PRESETS:
        times = h.run_rounds(step_contenders(name, train), args.epochs)
        steps[name] = h.step_summary(times, "xla_over_ynnpack", "xla", "ynnpack")
        if "winograd_xla" in times:
            steps[name]["winograd_over_nhwc"] = round(
                h.ratio(times["winograd_xla"], times["xla"]), 3
            )
    h.emit(
        {
            "benchmark": "conv_kernels",
            "batch_size": h.BATCH_SIZE,
            "steps_per_call": STEPS_PER_CALL,
            "rounds": args.epochs,
            "compiler_options": zoo.compiler_options(),
            "layers": layers,
            "steps": steps,
        }
    )


if __name__ == "__main__":
    main()
