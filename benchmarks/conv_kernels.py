"""XLA's own convolution kernels against YNNPACK's, per layer and per training step.

XLA:CPU gives convolutions to YNNPACK by default; zoo compiles its own training
programs with ``zoo.train.compiler_options()``, which leave them to XLA's
kernels. Each program here is jitted twice, as it comes (``ynnpack``) and with
those options (``xla``), compiled, then timed in interleaved rounds:

* ``layers``: every convolution shape of the CNN and ResNet presets, batch 128,
  as a model calls it (``jax.vmap`` per example, ``SAME``, ReLU): ``forward``
  and ``train`` (``value_and_grad`` in input and weight);
* ``steps``: two Adam steps (batch 128, MNIST batches on the device) of every
  CNN preset, unrolled in one ``jax.jit`` (``_references.make_floor_chunk``),
  on the model's default conv path (``nhwc`` on CPU) and on ``"xla"``
  (``zoo.models.with_conv_path``).

``xla_over_ynnpack`` below 1 means XLA's kernels are faster. Prints one JSON
line.

Run:
    ZOO_DATA_DIR=/path/to/data python benchmarks/conv_kernels.py [--epochs 5]
"""

from collections.abc import Callable
from typing import Any

import _harness as h
import _references as ref
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

import zoo
from zoo.data import ArrayDataset, load_mnist

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
SMOKE_LAYERS = ((7, 8, 8, 3, 1),)
SMOKE_STEP_PRESETS = ("lenet5",)
STEPS_PER_CALL = 2
KERNELS = ("ynnpack", "xla")


def kernel_options(kernels: str) -> dict[str, Any]:
    """JIT options for a kernel library: XLA's defaults, or zoo's options."""
    return zoo.train.compiler_options() if kernels == "xla" else {}


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
    for kernels in KERNELS:
        options = kernel_options(kernels) or None
        forward = jax.jit(layer, compiler_options=options)
        contenders[f"{kernels}_forward"] = h.round_timer(forward, x, w)
        contenders[f"{kernels}_train"] = h.round_timer(
            jax.jit(train, compiler_options=options), x, w
        )
    return contenders


def step_contenders(name: str, train: ArrayDataset) -> dict[str, Callable]:
    """Milliseconds per step of preset ``name``: each conv path and kernel library."""
    optimizer = optax.adam(1e-3)
    model, state = zoo.create_model(name, key=jax.random.key(0))
    xs, ys = h.device_batches(train, STEPS_PER_CALL, model.input_shape, seed=0)
    keys = jax.random.split(jax.random.key(1), STEPS_PER_CALL)
    contenders = {}
    default_path = getattr(model, "conv_path", "nhwc")
    for path in dict.fromkeys((default_path, "xla")):
        carry, static = ref.floor_init(
            zoo.models.with_conv_path(model, path), state, optimizer
        )
        for kernels in KERNELS:
            chunk = ref.make_floor_chunk(
                static, optimizer, compiler_options=kernel_options(kernels)
            )
            per_call = h.round_timer(chunk, carry, xs, ys, keys)
            label = kernels if path == default_path else f"{path}_path_{kernels}"
            contenders[label] = lambda r, f=per_call: f(r) / STEPS_PER_CALL
    return contenders


def main() -> None:
    args = h.parse_args(
        h.parser("XLA's convolution kernels against YNNPACK's on CPU", epochs=5)
    )
    layers: dict[str, Any] = {}
    for size, cin, cout, kernel, stride in SMOKE_LAYERS if args.smoke else LAYERS:
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
    for name in SMOKE_STEP_PRESETS if args.smoke else STEP_PRESETS:
        times = h.run_rounds(step_contenders(name, train), args.epochs)
        steps[name] = h.step_summary(times, "xla_over_ynnpack", "xla", "ynnpack")
        if "xla_path_xla" in times:
            steps[name]["xla_path_over_default_path"] = round(
                h.ratio(times["xla_path_xla"], times["xla"]), 3
            )
    h.emit(
        {
            "benchmark": "conv_kernels",
            "batch_size": h.BATCH_SIZE,
            "steps_per_call": STEPS_PER_CALL,
            "rounds": args.epochs,
            "compiler_options": zoo.train.compiler_options(),
            "layers": layers,
            "steps": steps,
        }
    )


if __name__ == "__main__":
    main()
