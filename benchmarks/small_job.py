"""A small job, cold: ``zoo.fit`` against a plain Equinox loop, compilation included.

For every preset that takes 28x28 images (``mlp``, ``stax_cnn``, ``cnn``,
``lenet5``, ``resnet8``, ``resnet20``; presets of larger images are left out
by their input shape), one epoch on the first 2,048 MNIST training images at
batch 128 (16 Adam steps), each run in a fresh Python process with no
compilation cache, as a newcomer's first run is:

* ``zoo``: ``zoo.fit(model, state, data, optax.adam(1e-3), epochs=1,
  callbacks=[])``, no test data;
* ``plain``: the 20-line loop of the Equinox examples on the same model and
  the same 16 batches: ``optim.init``, an ``eqx.filter_jit`` step of
  ``eqx.filter_value_and_grad`` and ``optim.update``, a batch sliced from the
  NumPy arrays per step.

The clock runs from just before training (data loaded, model built) until the
trained model is ready; ``process_seconds`` runs from spawning the process to
that point (Python, JAX and zoo's imports, MNIST, the model included). Each
round runs every preset's two contenders in a rotating order; the figure per
contender is the fastest of ``--epochs`` rounds (default 3), and
``zoo_over_plain`` is the ratio of the two. Each process also counts its XLA
compilations and their seconds (``jax.monitoring``), so where the extra time
goes can be read from the JSON line: ``compiles`` per contender, and the
slowest programs of zoo's run. Prints one JSON line.

Run:
    ZOO_DATA_DIR=/path/to/data python benchmarks/small_job.py [--epochs 3]
"""

import json
import os
import subprocess
import sys
import time
from typing import Any

import _harness as h

import zoo

SMOKE_PRESETS = ("mlp",)
IMAGES = 2048
TARGET = 1.2
"""Issue 38: a small job with zoo within 1.2x the plain loop's time, cold."""

SCRIPT = r"""
import json, sys, time
from collections import defaultdict

contender, name, images, data_dir, tune = sys.argv[1:6]
images = int(images)
import zoo

if tune == "tune":
    zoo.runtime.tune_cpu()

import equinox as eqx, jax, numpy as np, optax

compiles = defaultdict(float)
counts = defaultdict(int)
programs = []
EVENTS = {"/jax/core/compile/backend_compile_duration": "backend",
          "/jax/core/compile/jaxpr_trace_duration": "trace",
          "/jax/core/compile/jaxpr_to_mlir_module_duration": "lower"}

def listen(event, seconds, **kwargs):
    if event in EVENTS:
        compiles[EVENTS[event]] += seconds
        counts[EVENTS[event]] += 1
        if EVENTS[event] == "backend":
            programs.append((seconds, str(kwargs.get("fun_name", "?"))))

jax.monitoring.register_event_duration_secs_listener(listen)
data = zoo.data.load_mnist("train", data_dir=data_dir or None).take(images)
model, state = zoo.create_model(name, key=jax.random.key(0))
jax.block_until_ready((model, state))
before = dict(compiles), dict(counts)
compiles.clear(); counts.clear(); programs.clear()
B, LR, SEED = 128, 1e-3, 0

def forward(model, state, x, key):
    keys = jax.random.split(key, x.shape[0])
    if model.stateful:
        call = jax.vmap(lambda x, s, k: model(x, s, key=k), in_axes=(0, None, 0),
                        out_axes=(0, None), axis_name=zoo.models.BATCH_AXIS)
        return call(x, state, keys)
    return jax.vmap(lambda x, k: model(x, key=k))(x, keys), state

def plain(model, state):
    optim = optax.adam(LR)
    opt_state = optim.init(eqx.filter(model, eqx.is_inexact_array))

    @eqx.filter_jit
    def step(model, state, opt_state, x, y, key):
        def loss_fn(model):
            logits, new_state = forward(model, state, x, key)
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
            return loss, new_state
        (loss, state), grads = eqx.filter_value_and_grad(loss_fn, has_aux=True)(model)
        params = eqx.filter(model, eqx.is_inexact_array)
        updates, opt_state = optim.update(grads, opt_state, params)
        return eqx.apply_updates(model, updates), state, opt_state, loss

    order = np.random.default_rng(SEED).permutation(len(data))
    key = jax.random.key(SEED)
    for i in range(len(data) // B):
        rows = order[i * B:(i + 1) * B]
        x = data.inputs[rows].astype(np.float32) / 255
        model, state, opt_state, loss = step(
            model, state, opt_state, x, data.labels[rows], jax.random.fold_in(key, i))
    return jax.block_until_ready((model, state))

start = time.perf_counter()
extra = {}
if contender == "zoo":
    result = zoo.fit(model, state, data, optax.adam(LR), epochs=1, batch_size=B,
                     seed=SEED, callbacks=[])
    jax.block_until_ready((result.model, result.state))
    extra = {"fit_compile_seconds": result.compile_seconds,
             "steps_per_call": result.steps_per_call}
else:
    plain(model, state)
seconds = time.perf_counter() - start
programs.sort(reverse=True)
print(json.dumps({"end": time.time(), "seconds": seconds, **extra,
                  "compiles": counts.get("backend", 0),
                  "compile_seconds": compiles.get("backend", 0.0),
                  "trace_seconds": compiles.get("trace", 0.0),
                  "lower_seconds": compiles.get("lower", 0.0),
                  "slowest_programs": [[round(s, 2), n] for s, n in programs[:4]],
                  "setup_compiles": before[1].get("backend", 0)}))
"""
# JAX's own cache settings, left out of the workers' environment: no worker
# reads or fills a compilation cache.
JAX_CACHE_VARIABLES = (
    "JAX_COMPILATION_CACHE_DIR",
    "JAX_ENABLE_COMPILATION_CACHE",
    "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS",
    "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES",
)


def run(
    contender: str, name: str, images: int, data_dir: str | None, tune: bool
) -> dict[str, Any]:
    """One cold run of ``contender`` on preset ``name`` in a fresh process."""
    env = {k: v for k, v in os.environ.items() if k not in JAX_CACHE_VARIABLES}
    env["JAX_ENABLE_COMPILATION_CACHE"] = "false"
    command = [sys.executable, "-c", SCRIPT, contender, name, str(images)]
    command += [data_dir or "", "tune" if tune else "no"]
    start = time.time()
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{contender} {name} failed:\n{done.stderr[-3000:]}")
    out = json.loads(done.stdout.strip().splitlines()[-1])
    out["process_seconds"] = out.pop("end") - start
    return out


def _fastest(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return min(runs, key=lambda r: r["seconds"])


def summary(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """The figures of one preset from its cold runs."""
    zoo_best, plain_best = _fastest(runs["zoo"]), _fastest(runs["plain"])
    return {
        "zoo_seconds": round(zoo_best["seconds"], 2),
        "plain_seconds": round(plain_best["seconds"], 2),
        "zoo_over_plain": round(zoo_best["seconds"] / plain_best["seconds"], 3),
        "zoo_process_seconds": round(zoo_best["process_seconds"], 2),
        "plain_process_seconds": round(plain_best["process_seconds"], 2),
        "steps_per_call": zoo_best["steps_per_call"],
        "fit_compile_seconds": round(zoo_best["fit_compile_seconds"], 2),
        "compiles": {"zoo": zoo_best["compiles"], "plain": plain_best["compiles"]},
        "compile_seconds": {
            "zoo": round(zoo_best["compile_seconds"], 2),
            "plain": round(plain_best["compile_seconds"], 2),
        },
        "trace_seconds": {
            "zoo": round(zoo_best["trace_seconds"], 2),
            "plain": round(plain_best["trace_seconds"], 2),
        },
        "zoo_slowest_programs": zoo_best["slowest_programs"],
        "per_round": {
            k: h.rounded([r["seconds"] for r in v], 2) for k, v in runs.items()
        },
    }


def presets() -> list[str]:
    """The presets of 28x28 images, by their config's input shape (none is built)."""
    names = []
    for name in zoo.list_models():
        config = zoo.models.model_spec(name).config
        if config.get("image_size") == [28, 28] or config.get("in_size") == 28 * 28:
            names.append(name)
    return names


def main() -> None:
    args = h.parser(
        "A small job, cold: zoo.fit against a plain Equinox loop.", epochs=3
    ).parse_args()
    # The parent only starts workers; each opts in as its flags say.
    h.opt_in(tune=False, cache=False)
    tune = not args.no_tune
    names = list(SMOKE_PRESETS) if args.smoke else presets()
    images = h.BATCH_SIZE * args.limit_steps if args.limit_steps else IMAGES
    contenders = ("zoo", "plain")
    runs = {n: {c: [] for c in contenders} for n in names}
    for r in range(args.epochs):
        for name in names:
            order = contenders[r % 2 :] + contenders[: r % 2]
            for contender in order:
                runs[name][contender].append(
                    run(contender, name, images, args.data_dir, tune)
                )
    figures = {n: summary(runs[n]) for n in names}
    h.emit(
        {
            "benchmark": "small_job",
            "images": images,
            "batch_size": h.BATCH_SIZE,
            "rounds": args.epochs,
            "workers_tune_cpu": tune,
            "presets": figures,
            "target_zoo_over_plain": TARGET,
            "targets_met": {
                n: f["zoo_over_plain"] <= TARGET for n, f in figures.items()
            },
        }
    )


if __name__ == "__main__":
    main()
