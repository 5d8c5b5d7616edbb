"""Strided convolutions: the input gradient by phases against XLA's dilated one.

XLA computes the input gradient of a stride-``s`` convolution as a convolution
of the output gradient dilated by ``s``, multiplying ``s**2 - 1`` of every
``s**2`` kernel taps by zeros. On the ``"nhwc"`` conv path zoo computes it as
``s**2`` stride-1 convolutions, one per phase of the input
(``zoo.models._strided_conv``). Two parts, each contender compiled first and
then timed in interleaved rounds (the order rotating), medians and per-round
ratios reported; every program compiled with ``zoo.compiler_options()``:

* ``layers``: the stride-2 convolution shapes of the ``stax_cnn`` and ResNet
  presets, batch 128, as a model calls them (one map per example under
  ``jax.vmap``, ``SAME`` padding, then ReLU): ``value_and_grad`` of a loss on
  the layer in both its input and its weight, through ``lax.conv_general_dilated``
  (``dilated``) or ``strided_conv`` (``phases``).
* ``steps``: zoo's training step (``make_train_step``, Adam, batch 128, the
  steps per call ``fit`` chooses, MNIST chunks already on the device) of every
  preset with a strided convolution, traced with and without the phases
  (``zoo.models._conv.PHASE_INPUT_GRADIENT``).

``phases_over_dilated`` below 1 means the phases are faster. Prints one JSON
line.

Run:
    ZOO_DATA_DIR=/path/to/data python benchmarks/strided_conv.py [--epochs 5]
"""

from collections.abc import Callable
from typing import Any

import _harness as h
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

import zoo
import zoo.models._conv as conv_module
from zoo.data import load_mnist
from zoo.models._strided_conv import strided_conv

LAYERS = (  # (size, in, out, kernel, stride): the input gradients zoo takes
    (14, 32, 32, 5, 2),  # stax_cnn
    (7, 32, 10, 3, 2),
    (28, 16, 32, 3, 2),  # resnet8 / resnet20
    (14, 32, 64, 3, 2),
    (28, 16, 32, 1, 2),  # their projection shortcuts
)
STEP_PRESETS = ("stax_cnn", "resnet8", "resnet20")


def layer_contenders(
    size: int, cin: int, cout: int, kernel: int, stride: int
) -> dict[str, Callable]:
    keys = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(keys[0], (h.BATCH_SIZE, size, size, cin))
    w = jax.random.normal(keys[1], (kernel, kernel, cin, cout)) / np.sqrt(
        kernel * kernel * cin
    )
    strides = (stride, stride)
    (top, bottom), (left, right) = lax.padtype_to_pads(
        (size, size), (kernel, kernel), strides, "SAME"
    )
    pads = ((top, bottom), (left, right))
    out = -(-size // stride)
    target = jax.random.normal(keys[2], (h.BATCH_SIZE, out, out, cout))

    def dilated(x: jax.Array, w: jax.Array) -> jax.Array:
        return lax.conv_general_dilated(
            x[None], w, strides, pads, dimension_numbers=("NHWC", "HWIO", "NHWC")
        )[0]

    def phases(x: jax.Array, w: jax.Array) -> jax.Array:
        return strided_conv(x[None], w, strides, pads)[0]

    contenders = {}
    for name, one in (("dilated", dilated), ("phases", phases)):
        layer = jax.vmap(one, (0, None))

        def loss(x: jax.Array, w: jax.Array, layer: Callable = layer) -> jax.Array:
            return jnp.sum(jax.nn.relu(layer(x, w)) * target)

        train = jax.jit(
            jax.value_and_grad(loss, argnums=(0, 1)),
            compiler_options=zoo.compiler_options(),
        )
        contenders[name] = h.round_timer(train, x, w)
    return contenders


def step_contenders(name: str, train: Any) -> dict[str, Callable]:
    contenders = {}
    k = None
    for label, phases in (("dilated", False), ("phases", True)):
        conv_module.PHASE_INPUT_GRADIENT = phases  # read while the step traces
        try:
            ts, _, _ = h.preset_step(name, train, 1)
            k = k or h.fit_steps_per_call(ts.model, ts.model_state, train)
            ts, step, chunk = h.preset_step(name, train, k)
            per_call = h.round_timer(lambda ts, c, f=step: f(ts, c)[0], ts, chunk)
        finally:
            conv_module.PHASE_INPUT_GRADIENT = True
        contenders[label] = lambda r, f=per_call, k=k: f(r) / k
    return contenders


def main() -> None:
    args = h.parser(
        "strided convolutions' input gradient by phases against XLA's", epochs=5
    ).parse_args()
    layers: dict[str, Any] = {}
    for size, cin, cout, kernel, stride in LAYERS:
        times = h.run_rounds(
            layer_contenders(size, cin, cout, kernel, stride), args.epochs
        )
        layers[f"{size}x{size} {cin}->{cout} {kernel}x{kernel}/{stride}"] = {
            "ms": {k: round(h.median(v), 2) for k, v in times.items()},
            "phases_over_dilated": round(h.ratio(times["phases"], times["dilated"]), 3),
        }
    train = load_mnist("train", data_dir=args.data_dir)
    steps: dict[str, Any] = {}
    for name in STEP_PRESETS:
        times = h.run_rounds(step_contenders(name, train), args.epochs)
        steps[name] = h.step_summary(times, "phases_over_dilated", "phases", "dilated")
    h.emit(
        {
            "benchmark": "strided_conv",
            "batch_size": h.BATCH_SIZE,
            "rounds": args.epochs,
            "compiler_options": zoo.compiler_options(),
            "layers": layers,
            "steps": steps,
        }
    )


if __name__ == "__main__":
    main()
