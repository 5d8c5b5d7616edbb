"""Every benchmark script runs, so a refactor that breaks one fails here.

Each script in ``benchmarks/`` (not its ``_`` helpers, not ``report.py``) runs
in a subprocess with ``--smoke --epochs 1 --limit-steps 2``: its smallest
presets and sizes, a step or two, one round. It must exit 0 and print its one
JSON line, strict JSON with the benchmark's name and the runtime opt-ins it
used. The PyTorch contenders run where torch is installed (the ``bench``
group) and are left out by the scripts where it is not.
"""

import importlib.util
import json
import os
import pathlib
import subprocess
import sys
from typing import Any

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
BENCHMARKS = REPO / "benchmarks"
NOT_BENCHMARKS = {"report.py"}  # writes the docs' tables from results/
SCRIPTS = sorted(
    p.name for p in BENCHMARKS.glob("[!_]*.py") if p.name not in NOT_BENCHMARKS
)
SMOKE = ["--smoke", "--epochs", "1", "--limit-steps", "2"]
TIMEOUT_SECONDS = 300  # each script takes 5-30 s on 2 busy cores


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} in the JSON line: not JSON")


def run_benchmark(script: str, tmp_path: pathlib.Path, *flags: str) -> dict[str, Any]:
    """Run ``benchmarks/<script>``; return the JSON line it printed last."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("MALLOC_", "JAX_COMPILATION_CACHE", "JAX_PERSISTENT"))
    }
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")  # the compilation cache
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *flags],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_SECONDS,
        check=False,
    )
    assert done.returncode == 0, (
        f"{script} exited {done.returncode}:\n{done.stderr[-6000:]}"
    )
    lines = done.stdout.strip().splitlines()
    assert lines, f"{script} printed nothing:\n{done.stderr[-3000:]}"
    return json.loads(lines[-1], parse_constant=_reject_constant)


def test_every_script_is_covered():
    assert set(SCRIPTS) >= {"cnn.py", "mlp.py", "time_to_accuracy.py"}, SCRIPTS


@pytest.mark.parametrize("script", SCRIPTS)
def test_benchmark_runs(script: str, data_dir: pathlib.Path, tmp_path):
    result = run_benchmark(script, tmp_path, *SMOKE, "--data-dir", str(data_dir))
    assert result["benchmark"] == script.removesuffix(".py")
    assert set(result["runtime"]) >= {"tune_cpu", "compilation_cache"}
    assert result["machine"]["nproc"] >= 1


def test_no_tune_is_reported(data_dir: pathlib.Path, tmp_path):
    """``--no-tune --no-cache``: what a script that does not opt in gets, and
    the JSON line says so."""
    result = run_benchmark(
        "finite_check.py", tmp_path, *SMOKE, "--no-tune", "--no-cache",
        "--data-dir", str(data_dir),
    )  # fmt: skip
    assert result["runtime"] == {
        "tune_cpu": False,
        "allocator_tuned": False,
        "compilation_cache": None,
    }


def test_fit_floor_line_becomes_the_docs_table(data_dir: pathlib.Path, tmp_path):
    """The GPU's figures of record (``fit_floor.py``): one row per preset and
    precision, in the table ``report.py`` writes for them."""
    result = run_benchmark(
        "fit_floor.py", tmp_path, *SMOKE, "--data-dir", str(data_dir)
    )  # fmt: skip
    assert set(result["runs"]) == {"mlp_float32", "mlp_bfloat16"}
    spec = importlib.util.spec_from_file_location("report", BENCHMARKS / "report.py")
    assert spec is not None and spec.loader is not None
    report = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(report)
    lines = report.TABLES["fit-floor"]([{"fit_floor": result}]).splitlines()
    assert lines[0].startswith("| preset, precision | `fit` s / epoch |")
    assert [line.split(" | ")[0] for line in lines[2:]] == [
        "| `mlp float32`",
        "| `mlp bfloat16`",
    ]
