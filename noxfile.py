"""Developer sessions: ``nox`` runs tests (on one and on two devices), lint,
typecheck, wheel and docs; the rest on demand."""

import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile

import nox
import nox.command

nox.options.sessions = [
    "tests",
    "tests_two_devices",
    "lint",
    "typecheck",
    "wheel",
    "docs",
    "reproduce",
    "interop",
]
nox.options.reuse_existing_virtualenvs = True

PYPROJECT = nox.project.load_toml("pyproject.toml")
ROOT = pathlib.Path(__file__).parent
SHARED_DATA = ROOT.parent / "shared" / "data"
ENV = {"ZOO_DATA_DIR": os.environ.get("ZOO_DATA_DIR", str(SHARED_DATA))}

# The README's accuracy table: a name, the flags of examples/mnist.py, and the
# test accuracy the README promises for that run.
# The ResNet recipes' optimiser: SGD with Nesterov momentum, warm-up, smoothing.
_RESNET_SGD = [
    "--optimizer", "momentum", "--lr", "0.1", "--warmup-epochs", "1",
    "--label-smoothing", "0.1", "--weight-decay",
]  # fmt: skip
# The small ViT's recipe: AdamW, warm-up, smoothing, the shift on the device.
_VIT = [
    "--model", "vit_patch4_28", "--epochs", "36", "--optimizer", "adam",
    "--lr", "0.001", "--warmup-epochs", "2", "--weight-decay", "0.05",
    "--label-smoothing", "0.1", "--augment-on", "device",
]  # fmt: skip
# Distilled from the shipped resnet20 Fashion-MNIST weights.
_VIT_FASHION = [
    "--model", "vit_patch4_28", "--dataset", "fashion_mnist", "--epochs", "44",
    "--optimizer", "adam", "--lr", "0.002", "--warmup-epochs", "2",
    "--weight-decay", "0.05", "--label-smoothing", "0.1", "--flip",
    "--crop-padding", "0", "--erasing", "0.25", "--augment-on", "device",
    "--teacher", "resnet20", "--distill-temperature", "1",
]  # fmt: skip
README_RUNS = {
    "cnn": ([], 0.994),
    "cnn_fashion": (["--dataset", "fashion_mnist"], 0.915),
    "mlp": (["--model", "mlp", "--epochs", "10", "--shift", "0"], 0.982),
    "lenet5": (
        ["--model", "lenet5", "--epochs", "10", "--batch-size", "64", "--lr", "3e-3"],
        0.990,
    ),
    "stax_cnn": (
        ["--model", "stax_cnn", "--lr", "2e-3", "--epochs", "10", "--shift", "0"],
        0.990,
    ),
    # The ResNet recipes: about 8 minutes each for resnet8, 42-55 for resnet20.
    "resnet8": (
        [
            "--model",
            "resnet8",
            "--epochs",
            "8",
            *_RESNET_SGD,
            "5e-4",
        ],
        0.993,
    ),
    "resnet8_fashion": (
        [
            "--model",
            "resnet8",
            "--dataset",
            "fashion_mnist",
            "--flip",
            "--epochs",
            "8",
            *_RESNET_SGD,
            "5e-4",
        ],
        0.915,
    ),
    "resnet20": (
        [
            "--model",
            "resnet20",
            "--epochs",
            "16",
            *_RESNET_SGD,
            "1e-3",
        ],
        0.996,
    ),
    "resnet20_fashion": (
        [
            "--model",
            "resnet20",
            "--dataset",
            "fashion_mnist",
            "--flip",
            "--epochs",
            "22",
            *_RESNET_SGD,
            "1e-3",
        ],
        0.944,
    ),
    # About 45 minutes.
    "vit_patch4_28": (_VIT, 0.994),
    # About 55 minutes.
    "vit_patch4_28_fashion": (_VIT_FASHION, 0.915),
    # Mixed precision: the mlp and cnn recipes with a bfloat16 forward and backward.
    "mlp_bfloat16": (
        ["--model", "mlp", "--epochs", "10", "--shift", "0", "--precision", "bfloat16"],
        0.982,
    ),
    "cnn_bfloat16": (["--precision", "bfloat16"], 0.994),
}


def _install(session: nox.Session, *groups: str, extras: str = "") -> None:
    session.install("--upgrade", "pip")
    deps = [d for g in groups for d in nox.project.dependency_groups(PYPROJECT, g)]
    session.install("-e", f".[{extras}]" if extras else ".", *deps)


# Tests that a nox session of their own already covers, left out of ``tests``
# when it runs with no arguments: ``reproduce`` re-makes the mlp-mnist card
# with the same script (and two more cards).
COVERED_BY_SESSIONS = [
    "tests/test_reproduce.py::test_the_mlp_mnist_card_reproduces_bit_for_bit",
]


@nox.session
def tests(session: nox.Session) -> None:
    """The test suite (pass extra pytest arguments after ``--``)."""
    _install(session, "dev")
    covered = [f"--deselect={test}" for test in COVERED_BY_SESSIONS]
    arguments = session.posargs or covered
    session.run(
        "pytest", "-n", "2", "--dist", "worksteal", "-m", "not interop", *arguments,
        env=ENV,
    )  # fmt: skip


# The tests of code that meets every device or places data on one: meshes
# and sharded batches, fit's choice of feed, evaluation, checkpoints of
# sharded states, the training script's --devices. The models' own maths does
# not depend on the device count, so their tests run once, in ``tests``.
TWO_DEVICE_TESTS = [
    "tests/test_parallel.py",
    "tests/test_train.py",
    "tests/test_data_on_device.py",
    "tests/test_evaluate.py",
    "tests/test_checkpoint.py",
    "tests/test_precise_bn.py",
    "tests/test_pipeline.py",
    "tests/test_loop_parts.py",
    "tests/test_foreign_models.py",
    "tests/test_own_data.py",
    "tests/test_examples_mnist.py",
    "tests/test_export.py",
]
# Their tests of every preset's maths (a checkpoint's round trip, an export
# run without zoo) place nothing on a second device: they run once, in ``tests``.
PER_PRESET_TESTS = [
    "tests/test_checkpoint.py::test_round_trip_every_model_is_bitwise",
    "tests/test_export.py::test_every_preset_exports_and_runs_without_zoo_at_any_batch",
]


@nox.session
def tests_two_devices(session: nox.Session) -> None:
    """The device-facing tests again with two CPU devices (XLA's forced host
    devices).

    Code that meets every device (``data_mesh()``, sharded batches, ``fit``'s
    choice of feed) then sees two, as on a multi-GPU host; these tests must
    pass either way (``TWO_DEVICE_TESTS``; other paths as arguments).
    """
    _install(session, "dev")
    flags = "--xla_force_host_platform_device_count=2"
    paths = session.posargs or [
        *TWO_DEVICE_TESTS,
        *(f"--deselect={t}" for t in PER_PRESET_TESTS),
    ]
    session.run(
        "pytest", "-n", "2", "--dist", "worksteal", "-m", "not interop", *paths,
        env={**ENV, "XLA_FLAGS": flags},
    )  # fmt: skip


@nox.session
def interop(session: nox.Session) -> None:
    """The tests against other libraries: timm parity, the Hub, ONNX.

    Installs the ``hub`` and ``onnx`` extras and the ``interop`` group (timm
    with a CUDA build of torch, which runs on the CPU: about 6.5 GB). Here a
    missing library fails its test instead of skipping it.
    """
    _install(session, "dev", "interop", extras="hub,onnx")
    env = {**ENV, "ZOO_REQUIRE_INTEROP": "1"}
    session.run("pytest", "-n", "2", "-m", "interop", *session.posargs, env=env)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff lint and format check."""
    session.install("ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """pyright over the package, tests, examples and benchmarks.

    The ``hub`` and ``onnx`` extras are installed so that the modules that
    import them are checked against the real libraries (small: no torch).
    """
    _install(session, "dev", extras="hub,onnx")
    python = pathlib.Path(session.virtualenv.location) / "bin" / "python"
    session.run("pyright", "--pythonpath", str(python))


@nox.session
def docs(session: nox.Session) -> None:
    """Build the documentation site with warnings as errors; fast, no JAX.

    Installs the docs group only: mkdocstrings reads zoo's source from this
    checkout without importing it (``paths`` in mkdocs.yml), so neither zoo nor
    JAX is installed. The benchmark tables are checked against
    benchmarks/results/ first (``benchmarks/report.py --check``).
    """
    # mkdocstrings formats the signatures with Ruff when it is there
    session.install(*nox.project.dependency_groups(PYPROJECT, "docs"), "ruff")
    session.run("python", "benchmarks/report.py", "--check")
    session.run("mkdocs", "build", "--strict", env={**ENV, "NO_MKDOCS_2_WARNING": "1"})


# Benchmarks run again without zoo.runtime's opt-ins, as a plain script that
# calls neither tune_cpu() nor enable_compilation_cache() gets them.
BENCH_PLAIN = ("cnn.py", "mlp.py")


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks: each prints one JSON line of figures (with PyTorch for the CNNs).

    Every script opts in to ``zoo.runtime.tune_cpu()`` and the compilation
    cache; ``cnn.py`` and ``mlp.py`` then run again with ``--no-tune
    --no-cache``, as a plain user's script (their JSON's ``runtime`` says which).
    """
    _install(session, "dev", "bench")
    for script in sorted((ROOT / "benchmarks").glob("[!_]*.py")):
        if script.name == "report.py":  # writes the docs' tables; not a benchmark
            continue
        session.run("python", str(script), *session.posargs, env=ENV)
    for name in BENCH_PLAIN:
        script = ROOT / "benchmarks" / name
        session.run(
            "python", str(script), "--no-tune", "--no-cache", *session.posargs, env=ENV
        )


@nox.session
def accuracy(session: nox.Session) -> None:
    """Train the README's runs; fail where one misses the accuracy promised.

    About 4.5 hours on 2 CPU cores for all of them (each ``resnet20`` and
    ``vit_patch4_28`` run 42-71 minutes); name some after ``--`` to run those
    alone (``nox -s accuracy -- mlp stax_cnn``). Outputs: runs/accuracy/.
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


@nox.session
def reproduce(session: nox.Session) -> None:
    """Re-make shipped weights from their cards' commands; fail where one differs.

    ``examples/reproduce.py`` re-runs each card's own command into a temporary
    folder, publishes it and compares: on a CPU of the card's kind (its
    provenance's CPU model and instruction-set flags) the SHA-256 must be the
    card's; on another CPU the test count must be within the card's tolerance,
    and the line says so. One line per card: equal, within tolerance or FAILED
    with both figures. By default the quick cards (``mlp``, ``stax_cnn`` and
    ``lenet5`` on MNIST, about 3 minutes in all on 2 cores), which CI runs;
    name cards after ``--`` (``nox -s reproduce -- cnn-mnist``), or ``-- --all``
    for every card (hours: the ResNets).
    """
    _install(session, "dev")
    session.run("python", "examples/reproduce.py", *session.posargs, env=ENV)


# `nox -s wheel` requires every file git tracks under zoo/ (modules, py.typed and
# any data shipped with them, such as weights) in both archives, and rejects
# these anywhere in them: the rest of the repository, caches and bytecode.
UNWANTED = re.compile(
    r"(^|/)(tests|examples|benchmarks|docs|runs|dist|build|site|__pycache__"
    r"|\.nox|\.venv|\.git|\.pytest_cache|\.hypothesis|\.ruff_cache)(/|$)"
    r"|\.py[cod]$|\.egg-info(/|$)|~$|\.DS_Store$"
)
SDIST_FILES = ["PKG-INFO", "pyproject.toml", "README.md", "CHANGELOG.md", "LICENSE"]
SDIST_MAY_HOLD = (".gitignore",)  # hatchling adds it to every sdist


def _package_files() -> set[str]:
    """The files under zoo/ that must ship: tracked by git, else all on disk."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z", "zoo"],
            cwd=ROOT, capture_output=True, text=True, check=True,
        ).stdout.split("\0")  # fmt: skip
    except (OSError, subprocess.CalledProcessError):  # not a git checkout
        listed = [p.relative_to(ROOT).as_posix() for p in (ROOT / "zoo").rglob("*")]
    return {
        name for name in listed
        if (ROOT / name).is_file() and not UNWANTED.search(name)
    }  # fmt: skip


def _archive_problems(names: list[str], required: set[str], allowed: tuple) -> list:
    """What is missing from, or should not be in, an archive's file list."""
    present = set(names)
    return (
        [f"missing {name}" for name in sorted(required - present)]
        + [f"unwanted {name}" for name in names if UNWANTED.search(name)]
        + [f"unexpected {name}" for name in names if not name.startswith(allowed)]
    )


def _check_wheel(wheel: pathlib.Path, version: str) -> tuple[list[str], str]:
    """Problems with the wheel's files and metadata, and a one-line summary."""
    dist_info = f"typed_zoo-{version}.dist-info"
    with zipfile.ZipFile(wheel) as archive:
        names = [n for n in archive.namelist() if not n.endswith("/")]
        metadata = archive.read(f"{dist_info}/METADATA").decode()
    required = _package_files() | {f"{dist_info}/licenses/LICENSE"}
    problems = _archive_problems(names, required, ("zoo/", f"{dist_info}/"))
    fields = metadata.split("\n\n", 1)[0].splitlines()
    for line in [f"Version: {version}", "License-Expression: Apache-2.0",
                 "Provides-Extra: cuda12", "Provides-Extra: plot"]:  # fmt: skip
        if line not in fields:
            problems.append(f"METADATA lacks {line!r}")
    if any(f.startswith("Requires-Dist: matplotlib") and "extra ==" not in f
           for f in fields):  # fmt: skip
        problems.append("METADATA requires matplotlib outside the plot extra")
    modules = sum(n.startswith("zoo/") and n.endswith(".py") for n in names)
    data = sorted(n for n in names if n.startswith("zoo/") and not n.endswith(".py"))
    summary = (
        f"{wheel.name}: {len(names)} files, {modules} modules under zoo/, "
        f"data {data}, {wheel.stat().st_size / 1024:.0f} KiB"
    )
    return problems, summary


def _check_sdist(sdist: pathlib.Path, version: str) -> tuple[list[str], str]:
    """Problems with the sdist's files, and a one-line summary."""
    top = f"typed_zoo-{version}/"
    with tarfile.open(sdist) as archive:
        members = [m for m in archive.getmembers() if not m.isdir()]
    names = [m.name.removeprefix(top) for m in members]
    problems = [
        f"outside {top}: {m.name}" for m in members if not m.name.startswith(top)
    ]
    problems += _archive_problems(
        names,
        _package_files() | set(SDIST_FILES),
        ("zoo/", *SDIST_FILES, *SDIST_MAY_HOLD),
    )
    summary = f"{sdist.name}: {len(names)} files, {sdist.stat().st_size / 1024:.0f} KiB"
    return problems, summary


@nox.session
def wheel(session: nox.Session) -> None:
    """Build the sdist and wheel, check them, and smoke-test the wheel on its own.

    ``python -m build`` writes both to dist/ (the wheel built from the sdist);
    their file lists and metadata are checked, then the wheel alone is installed
    with pip into a fresh virtual environment in a temporary folder, where
    tests/wheel_smoke.py runs from outside the repository: every preset, one
    epoch on 2,048 MNIST images (``$ZOO_DATA_DIR``), a checkpoint reloaded, and
    zoo.plot's message without Matplotlib. About 1-2 minutes on 2 cores.
    ``nox -s wheel -- python3.13`` makes that environment with another Python.
    """
    session.install("build", "twine")
    version = PYPROJECT["project"]["version"]
    dist = ROOT / "dist"
    shutil.rmtree(dist, ignore_errors=True)
    session.run("python", "-m", "build", "--outdir", str(dist), str(ROOT))
    session.run("python", "-m", "twine", "check", "--strict", *map(str, dist.iterdir()))
    problems = []
    for check, pattern in [(_check_wheel, "*.whl"), (_check_sdist, "*.tar.gz")]:
        (archive,) = dist.glob(pattern)
        found, summary = check(archive, version)
        session.log(summary)
        problems += [f"{archive.name}: {problem}" for problem in found]
    if problems:
        session.error("the built archives are wrong:\n  " + "\n  ".join(problems))

    (built,) = dist.glob("*.whl")
    with tempfile.TemporaryDirectory(prefix="zoo-wheel-") as tmp:
        venv = pathlib.Path(tmp) / "venv"
        interpreter = session.posargs[0] if session.posargs else "python"
        session.run(interpreter, "-m", "venv", str(venv), external=True)
        python = str(venv / ("Scripts" if os.name == "nt" else "bin") / "python")
        pip = [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        session.run(*pip, "--upgrade", "pip", external=True, silent=True)
        session.run(*pip, str(built), external=True, silent=True)
        smoke = shutil.copy(ROOT / "tests" / "wheel_smoke.py", tmp)
        with session.chdir(tmp):  # -I: no PYTHONPATH, no script folder on sys.path
            session.run(python, "-I", smoke, version, env=ENV, external=True)


# Prints JAX's version and devices; exits 1 with a message unless one is a GPU.
GPU_CHECK = (
    'import jax; print("jax", jax.__version__, jax.devices()); '
    'raise SystemExit(jax.default_backend() != "gpu" and "nox -t gpu: JAX sees no '
    'GPU; check nvidia-smi, and that JAX has its CUDA plugin (the cuda12 extra)")'
)

# The GPU's figures of record, each script with the arguments that keep the
# whole session near 8 minutes on one GPU: fit against its floor (the MLP in
# host_work.py; cnn and stax_cnn, with PyTorch on CUDA, in cnn.py), and the
# seconds to 99 % on MNIST in fresh processes.
GPU_BENCHMARKS = (
    ("host_work.py", ()),
    ("fit_floor.py", ()),
    ("cnn.py", ()),
    ("time_to_accuracy.py", ("--epochs", "2", "--batch-sizes", "128")),
)


def _gpu_python(session: nox.Session) -> tuple[str, dict[str, str]]:
    """The Python to run on the GPU and its environment, after checking that
    JAX sees a GPU. Installs zoo with JAX for CUDA 12 (the ``cuda12`` extra;
    ``ZOO_CUDA=cuda13`` picks CUDA 13) and the dev group, unless nox runs with
    ``--no-venv``: then the packages are there already and zoo is imported
    from this checkout. GPU memory is allocated as needed
    (``XLA_PYTHON_CLIENT_PREALLOCATE=false``) so that test workers share it."""
    env = {**ENV, "XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
    if session.venv_backend == "none":
        python = sys.executable
        paths = [str(ROOT), os.environ.get("PYTHONPATH", "")]  # zoo from this tree
        env["PYTHONPATH"] = os.pathsep.join(path for path in paths if path)
    else:
        extra = os.environ.get("ZOO_CUDA", "cuda12")
        session.install("--upgrade", "pip")
        deps = nox.project.dependency_groups(PYPROJECT, "dev")
        session.install("-e", f".[{extra}]", *deps)
        python = "python"
    session.run(python, "-c", GPU_CHECK, env=env, external=True)
    return python, env


@nox.session(tags=["gpu"])
def gpu_tests(session: nox.Session) -> None:
    """The test suite on an NVIDIA GPU, in 8 workers; fails at once if JAX sees
    no GPU.

    Pytest arguments go after ``--`` (e.g. ``-- -n 4 -x``). On one H100 with 16
    cores the suite took about 4 minutes. ``nox -t gpu`` runs this session,
    then ``gpu_bench``. Offline, where JAX for CUDA and zoo's other
    dependencies are installed already, install nothing:

        nox -t gpu --no-venv    # in the Python that runs nox (pip install nox there);
                                # zoo is imported from this checkout
        nox -t gpu -R           # reuse the environments of an earlier online run
    """
    python, env = _gpu_python(session)
    # pytest-benchmark, common on GPU images, warns under xdist: an error here.
    pytest = [python, "-m", "pytest", "-p", "no:benchmark", "-n", "8"]
    session.run(*pytest, "-m", "not interop", *session.posargs, env=env, external=True)


@nox.session(tags=["gpu"])
def gpu_bench(session: nox.Session) -> None:
    """The GPU's figures of record (``GPU_BENCHMARKS``), one JSON line each;
    fails at once if JAX sees no GPU. PyTorch's contenders run where torch
    for CUDA is installed (an image that has it, with ``--no-venv``). Save the
    lines under ``benchmarks/results/`` and regenerate the docs' tables with
    ``benchmarks/report.py``."""
    python, env = _gpu_python(session)
    for name, arguments in GPU_BENCHMARKS:
        script = ROOT / "benchmarks" / name
        session.run(python, str(script), *arguments, *session.posargs, env=env,
                    external=True)  # fmt: skip
