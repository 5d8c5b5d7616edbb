"""Smoke test of an installed zoo wheel, run by ``nox -s wheel`` (not by pytest).

``nox -s wheel`` installs the wheel alone into a fresh virtual environment in a
temporary folder and runs this file there, from outside the repository, with
``python -I`` so that nothing of the source tree can be imported. It checks that
the installed package is complete and works with only its required
dependencies: it imports, builds and applies every preset, trains one for an
epoch on a slice of MNIST read from ``$ZOO_DATA_DIR``, and reloads the
checkpoint it wrote. Without Matplotlib (the ``plot`` extra), ``zoo.plot`` must
say what to install.

Run:
    python -I wheel_smoke.py [EXPECTED_VERSION]

Prints one JSON line of what it measured; exits non-zero on any failure.
"""

import importlib.util
import json
import math
import pathlib
import sys
import tempfile
import time

TRAIN_EXAMPLES = 2048
TEST_EXAMPLES = 2000
CHANCE = 0.1  # ten classes


def check(condition: bool, message: str) -> None:
    """Fail with ``message`` unless ``condition``."""
    if not condition:
        sys.exit(f"wheel smoke test failed: {message}")


def check_installed(expected_version: str | None) -> dict:
    """zoo comes from this environment's site-packages, whole and typed."""
    import jax

    import zoo

    package = pathlib.Path(zoo.__file__).resolve().parent
    check(
        package.is_relative_to(pathlib.Path(sys.prefix).resolve()),
        f"zoo was imported from {package}, not from the environment {sys.prefix}",
    )
    check((package / "py.typed").is_file(), "zoo/py.typed is missing")
    if expected_version is not None:
        check(
            zoo.__version__ == expected_version,
            f"zoo.__version__ is {zoo.__version__}, expected {expected_version}",
        )
    return {
        "version": zoo.__version__,
        "jax": jax.__version__,
        "location": str(package),
    }


def check_plot_extra() -> str:
    """Without Matplotlib, ``zoo.plot`` names the extra that brings it."""
    import zoo

    if importlib.util.find_spec("matplotlib") is not None:
        import zoo.plot

        return "matplotlib installed: zoo.plot imported"
    try:
        zoo.plot  # noqa: B018
    except ModuleNotFoundError as error:
        check(
            "typed-zoo[plot]" in str(error),
            f"zoo.plot's error does not name the plot extra: {error}",
        )
        return "matplotlib absent: zoo.plot names typed-zoo[plot]"
    check(False, "zoo.plot imported although Matplotlib is not installed")
    return ""


def check_presets() -> dict[str, int]:
    """Every preset builds, rebuilds from its config, and maps a batch to logits."""
    import equinox as eqx
    import jax
    import jax.numpy as jnp

    import zoo

    names = zoo.list_models()
    check(len(names) > 0, "zoo.list_models() is empty")
    parameters = {}
    for i, name in enumerate(names):
        key = jax.random.key(i)
        model, state = zoo.create_model(name, key=key)
        again, _ = zoo.models.build_model(
            json.loads(json.dumps(model.config())), key=key
        )
        check(
            bool(eqx.tree_equal(model, again)),
            f"{name}: build_model(config) differs from create_model",
        )
        batch = jnp.zeros((2, *model.input_shape), jnp.float32)
        logits, _ = zoo.apply(eqx.nn.inference_mode(model), batch, state)
        check(
            logits.shape == (2, model.out_size),
            f"{name}: logits of shape {logits.shape}, expected (2, {model.out_size})",
        )
        check(bool(jnp.isfinite(logits).all()), f"{name}: non-finite logits")
        leaves = jax.tree_util.tree_leaves(eqx.filter(model, eqx.is_inexact_array))
        parameters[name] = sum(leaf.size for leaf in leaves)
    return parameters


def check_training() -> dict:
    """One epoch on a slice of MNIST lowers the loss, and the checkpoint reloads."""
    import jax
    import optax

    import zoo
    from zoo.data import load_mnist
    from zoo.train import evaluate

    train = load_mnist("train").take(TRAIN_EXAMPLES)
    test = load_mnist("test").take(TEST_EXAMPLES)
    model, state = zoo.create_model("mlp", key=jax.random.key(0))
    before = evaluate(model, state, test)
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = pathlib.Path(tmp) / "checkpoint"
        start = time.perf_counter()
        result = zoo.fit(
            model,
            state,
            train,
            optimizer=optax.adam(1e-3),
            epochs=1,
            batch_size=128,
            test_data=test,
            checkpoint_dir=checkpoint,
            callbacks=zoo.train.default_callbacks(progress=False, log=None),
        )
        seconds = time.perf_counter() - start
        after = evaluate(result.model, result.state, test)
        loaded, loaded_state = zoo.load_model(checkpoint)
        reloaded = evaluate(loaded, loaded_state, test)
    check(math.isfinite(after["loss"]), f"loss after training is {after['loss']}")
    check(
        after["loss"] < before["loss"],
        f"test loss went from {before['loss']:.4f} to {after['loss']:.4f}",
    )
    check(
        after["accuracy"] > 5 * CHANCE,
        f"test accuracy {after['accuracy']:.2%} after one epoch on "
        f"{TRAIN_EXAMPLES} images (chance is {CHANCE:.0%})",
    )
    check(
        reloaded == after,
        f"the reloaded checkpoint evaluates to {reloaded}, not {after}",
    )
    return {
        "train_examples": len(train),
        "test_examples": len(test),
        "loss": [round(before["loss"], 4), round(after["loss"], 4)],
        "accuracy": [round(before["accuracy"], 4), round(after["accuracy"], 4)],
        "fit_seconds": round(seconds, 1),
    }


def main() -> None:
    """Run every check and print one JSON line."""
    expected_version = sys.argv[1] if len(sys.argv) > 1 else None
    summary = check_installed(expected_version)
    summary["plot"] = check_plot_extra()
    summary["presets"] = check_presets()
    summary["fit"] = check_training()
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
