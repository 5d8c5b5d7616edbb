"""Developer sessions: ``nox`` runs tests, lint and typecheck; the rest on demand."""

import json
import os
import pathlib
import shutil

import nox

nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.reuse_existing_virtualenvs = True

PYPROJECT = nox.project.load_toml("pyproject.toml")
ROOT = pathlib.Path(__file__).parent
SHARED_DATA = ROOT.parent / "shared" / "data"
ENV = {"ZOO_DATA_DIR": os.environ.get("ZOO_DATA_DIR", str(SHARED_DATA))}

# The README's accuracy table: a name, the flags of examples/mnist.py, and the
# test accuracy the README promises for that run.
README_RUNS = {
    "cnn": ([], 0.994),
    "cnn_fashion": (["--dataset", "fashion_mnist"], 0.915),
    "mlp": (["--model", "mlp", "--epochs", "10", "--shift", "0"], 0.982),
    "stax_cnn": (
        ["--model", "stax_cnn", "--lr", "2e-3", "--epochs", "10", "--shift", "0"],
        0.990,
    ),
}


def _install(session: nox.Session, *groups: str) -> None:
    session.install("--upgrade", "pip")
    deps = [d for g in groups for d in nox.project.dependency_groups(PYPROJECT, g)]
    session.install("-e", ".", *deps)


@nox.session
def tests(session: nox.Session) -> None:
    """The test suite (pass extra pytest arguments after ``--``)."""
    _install(session, "dev")
    session.run("pytest", "-n", "2", *session.posargs, env=ENV)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff lint and format check."""
    session.install("ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """pyright over the package, tests, examples and benchmarks."""
    _install(session, "dev")
    python = pathlib.Path(session.virtualenv.location) / "bin" / "python"
    session.run("pyright", "--pythonpath", str(python))


@nox.session
def docs(session: nox.Session) -> None:
    """Build the documentation site with warnings as errors."""
    _install(session, "docs")
    session.run("mkdocs", "build", "--strict", env=ENV)


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks: each prints one JSON line of figures."""
    _install(session, "dev")
    for script in sorted((ROOT / "benchmarks").glob("[!_]*.py")):
        session.run("python", str(script), *session.posargs, env=ENV)


@nox.session
def accuracy(session: nox.Session) -> None:
    """Train the README's MNIST runs; fail where one misses the accuracy promised.

    About 20 minutes on 2 CPU cores for all four; name some after ``--`` to run
    those alone (``nox -s accuracy -- mlp stax_cnn``). Outputs: runs/accuracy/.
    """
    _install(session, "dev")
    unknown = set(session.posargs) - set(README_RUNS)
    if unknown:
        choices = ", ".join(README_RUNS)
        session.error(f"unknown runs {sorted(unknown)}; choose from {choices}")
    for name in session.posargs or list(README_RUNS):
        flags, promised = README_RUNS[name]
        out = ROOT / "runs" / "accuracy" / name
        shutil.rmtree(out, ignore_errors=True)
        session.run(
            "python", "examples/mnist.py", *flags, "--no-progress", "--out", str(out),
            env=ENV,
        )  # fmt: skip
        last_epoch = json.loads((out / "metrics.json").read_text())["epochs"][-1]
        accuracy = last_epoch["test_accuracy"]
        if accuracy < promised:
            session.error(
                f"{name}: test accuracy {accuracy:.2%}, below the {promised:.1%} "
                "that the README promises"
            )
        session.log(f"{name}: test accuracy {accuracy:.2%} (promised {promised:.1%})")
