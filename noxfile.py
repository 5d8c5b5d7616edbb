"""Developer sessions: ``nox`` runs tests, lint and typecheck; the rest on demand."""

import os
import pathlib

import nox

nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.reuse_existing_virtualenvs = True

PYPROJECT = nox.project.load_toml("pyproject.toml")
ROOT = pathlib.Path(__file__).parent
SHARED_DATA = ROOT.parent / "shared" / "data"
ENV = {"ZOO_DATA_DIR": os.environ.get("ZOO_DATA_DIR", str(SHARED_DATA))}


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
