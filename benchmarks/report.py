"""Write the benchmark tables of the docs from benchmarks/results/*.jsonl.

The pages are docs/benchmarks.md and docs/performance.md. Each table on them
sits between two marker comments:

    <!-- table: NAME [RUN ...] -->
    ...generated...
    <!-- end -->

NAME picks one of the tables below; RUN names files of ``benchmarks/results/``
without ``.jsonl`` (several for ``runs``, at most one for the others). Without
a RUN a table reads the run of record, which its page names once in a
``<!-- run-of-record: RUN -->`` comment. Everything between the markers is
replaced; the prose around them is the page's own.

    python benchmarks/report.py          # rewrite the tables in place
    python benchmarks/report.py --check  # exit 1 if a table is out of date

This script reads JSON and writes Markdown only: it imports neither zoo nor JAX.
"""

import argparse
import difflib
import json
import pathlib
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
PAGES = [ROOT / "docs" / "benchmarks.md", ROOT / "docs" / "performance.md"]
MARKER = re.compile(
    r"^<!-- table: (?P<name>[\w-]+)(?P<runs>(?: [\w.-]+)*) -->\n"
    r"(?P<body>.*?)^<!-- end -->$",
    re.MULTILINE | re.DOTALL,
)
RUN_OF_RECORD = re.compile(r"^<!-- run-of-record: ([\w.-]+) -->$", re.MULTILINE)
COMPILE_TARGET_SECONDS = 10.0  # fit's fused step compiles in under this, any preset

Run = dict[str, dict[str, Any]]  # benchmark name -> its JSON line


def load_run(name: str) -> Run:
    """The JSON lines of ``benchmarks/results/<name>.jsonl``, by benchmark."""
    path = RESULTS / f"{name}.jsonl"
    if not path.is_file():
        raise SystemExit(f"report.py: no results file {path.relative_to(ROOT)}")
    lines = path.read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines if line.strip()]
    return {record["benchmark"]: record for record in records}


def number(value: Any) -> str:
    """A figure as the JSON has it: thousands separated, floats as rounded there."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return "-" if value != value else f"{value:,}"  # NaN: not measured
    return str(value)


def ratio(value: float) -> str:
    """A ratio of two timings, to 3 decimals."""
    return f"{value:.3f}"


def bold(value: float) -> str:
    return f"**{ratio(value)}**"


def over(name: str) -> str:
    """A ratio's JSON name as the page writes it: ``a_over_b`` -> ``a / b``."""
    return name.replace("_over_", " / ")


def code(name: str) -> str:
    return f"`{name}`"


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [cell if isinstance(cell, str) else number(cell) for cell in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def verdict(met: bool) -> str:
    return "met" if met else "**missed**"


def target(text: str) -> str:
    """The bound of a target as the JSON states it: ``x_over_y <= 1.1`` -> ``≤ 1.1``."""
    match = re.search(r"(<=|>=|<|>)\s*([\d.]+)", text)
    if match is None:
        raise SystemExit(f"report.py: no bound in the target {text!r}")
    sign = {"<=": "≤", ">=": "≥"}.get(match[1], match[1])
    return f"{sign} {match[2]}"


def need(run: Run, benchmark: str) -> dict[str, Any]:
    if benchmark not in run:
        raise SystemExit(f"report.py: the run has no {benchmark!r} line")
    return run[benchmark]


# The tables. Each takes the runs its marker names (or the run of record).


def targets_table(runs: list[Run]) -> str:
    (run,) = runs
    mlp, cnn = need(run, "mlp"), need(run, "cnn")
    sizes, tta = need(run, "batch_sizes"), need(run, "time_to_accuracy")
    compile_, checks = need(run, "compile"), need(run, "shape_checks")
    rows = []
    for key, what in [
        ("zoo_over_pytorch", "epoch through `fit` / PyTorch eager's"),
        ("zoo_over_floor", "epoch through `fit` / the floor's"),
        ("per_record_over_zoo", "per-record Grain loop / zoo"),
    ]:
        for preset in ["cnn", "stax_cnn"]:
            rows.append([
                f"{code(preset)}: {what} {target(cnn['targets'][key])}",
                "`cnn.py`",
                bold(cnn[preset]["ratios"][key]),
                verdict(cnn[preset]["met"][key]),
            ])  # fmt: skip
    for key, what in [
        ("zoo_over_floor", "zoo / floor"),
        ("zoo_over_seed003", "zoo / the JAX tutorial's loop"),
        ("per_record_over_zoo", "per-record Grain loop / zoo"),
    ]:
        rows.append([
            f"MLP, batch 128: {what} {target(mlp['targets'][key])}",
            "`mlp.py`",
            bold(mlp["ratios"][key]),
            verdict(mlp["met"][key]),
        ])  # fmt: skip
    by_size = sizes["by_batch_size"]
    worst = max(by_size, key=lambda size: by_size[size]["zoo_over_floor"])
    rows.append([
        "MLP, every batch size "
        f"{min(by_size, key=int)}-{max(by_size, key=int)}: zoo / floor "
        f"{target(sizes['target'])}",
        "`batch_sizes.py`",
        f"worst {bold(sizes['worst_zoo_over_floor'])} (batch {worst})",
        verdict(sizes["all_met"]),
    ])  # fmt: skip
    best = tta["best"]
    rows.append([
        f"time to {tta['target_accuracy']:.0%} on MNIST, each at its fastest "
        f"recipe: zoo / PyTorch {target(tta['target'])}",
        "`time_to_accuracy.py`",
        f"{bold(tta['zoo_over_pytorch'])} ({number(best['zoo']['seconds'])} s "
        f"against {number(best['pytorch']['seconds'])} s)",
        verdict(tta["met"]),
    ])  # fmt: skip
    presets = {
        k: v for k, v in compile_.items() if isinstance(v, dict) and k != "machine"
    }
    slowest = max(presets, key=lambda p: presets[p]["fit_compile_seconds"])
    seconds = presets[slowest]["fit_compile_seconds"]
    rows.append([
        f"compile of `fit`'s fused step, every preset < {COMPILE_TARGET_SECONDS:g} s",
        "`compile.py`",
        f"at most **{number(seconds)} s** ({code(slowest)})",
        verdict(seconds < COMPILE_TARGET_SECONDS),
    ])  # fmt: skip
    models = [k for k, v in checks.items() if isinstance(v, dict) and "met" in v]
    ratios = [checks[m]["ratio_on_over_off"] for m in models]
    rows.append([
        f"runtime shape checks: a step with / without {target(checks['target'])}",
        "`shape_checks.py`",
        f"at most {bold(max(ratios))}",
        verdict(all(checks[m]["met"] for m in models)),
    ])  # fmt: skip
    return table(["target", "script", "measured", ""], rows)


def runs_table(runs: list[Run], names: list[str]) -> str:
    rows = []
    for name, run in zip(names, runs, strict=True):
        cnn, sizes = need(run, "cnn"), need(run, "batch_sizes")["by_batch_size"]
        worst = max(sizes, key=lambda size: sizes[size]["zoo_over_floor"])
        compile_ = need(run, "compile")
        slowest = max(
            v["fit_compile_seconds"]
            for k, v in compile_.items()
            if isinstance(v, dict) and k != "machine"
        )
        rows.append([
            code(name),
            ratio(cnn["cnn"]["ratios"]["zoo_over_pytorch"]),
            ratio(cnn["stax_cnn"]["ratios"]["zoo_over_pytorch"]),
            f"{ratio(sizes[worst]['zoo_over_floor'])} ({worst})",
            ratio(need(run, "mlp")["ratios"]["zoo_over_floor"]),
            ratio(need(run, "time_to_accuracy")["zoo_over_pytorch"]),
            f"{number(slowest)} s",
        ])  # fmt: skip
    header = [
        "run", "`cnn` / PyTorch", "`stax_cnn` / PyTorch",
        "MLP / floor, worst batch size", "MLP / floor at 128", "time to 99 %",
        "slowest compile",
    ]  # fmt: skip
    return table(header, rows)


def mlp_table(runs: list[Run]) -> str:
    (run,) = runs
    mlp = need(run, "mlp")
    rows: list[list[Any]] = [
        [code(name) + (" (the floor)" if name == mlp["floor"] else ""), seconds]
        for name, seconds in mlp["seconds_per_epoch"].items()
    ]
    rows += [[over(name), bold(v)] for name, v in mlp["ratios"].items()]
    rows += [
        [f"diagnostic: {over(name)}", ratio(v)]
        for name, v in mlp["diagnostic_ratios"].items()
    ]
    return table(["contender or ratio", "s / epoch, or ratio (median)"], rows)


def batch_sizes_table(runs: list[Run]) -> str:
    (run,) = runs
    sizes = need(run, "batch_sizes")["by_batch_size"]
    rows = [
        [size, s["steps_per_epoch"], s["steps_per_call"],
         s["seconds_per_epoch"]["zoo_fit"], s["seconds_per_epoch"]["floor"],
         ratio(s["zoo_over_floor"])]
        for size, s in sorted(sizes.items(), key=lambda item: int(item[0]))
    ]  # fmt: skip
    header = [
        "batch size", "steps / epoch", "steps / call", "zoo `fit` s / epoch",
        "floor s / epoch", "zoo / floor",
    ]  # fmt: skip
    return table(header, rows)


def cnn_table(runs: list[Run]) -> str:
    (run,) = runs
    cnn = need(run, "cnn")
    presets = [p for p in ["stax_cnn", "cnn"] if p in cnn]
    contenders: list[str] = []
    for preset in presets:
        contenders += [
            c for c in cnn[preset]["seconds_per_epoch"] if c not in contenders
        ]
    rows: list[list[Any]] = [
        [code(c)] + [cnn[p]["seconds_per_epoch"].get(c) for p in presets]
        for c in contenders
    ]
    for group in ["ratios", "diagnostic_ratios"]:
        names: list[str] = []
        for preset in presets:
            names += [n for n in cnn[preset][group] if n not in names]
        for name in names:
            values = [cnn[p][group].get(name) for p in presets]
            cells = ["-" if v is None or v != v else ratio(v) for v in values]
            if group == "ratios":
                rows.append([over(name), *(f"**{c}**" for c in cells)])
            else:
                rows.append([f"diagnostic: {over(name)}", *cells])
    rows.append(
        ["steps per call of `fit`"] + [cnn[p]["zoo_steps_per_call"] for p in presets]
    )
    return table(["s / epoch (median), or ratio", *map(code, presets)], rows)


def time_to_accuracy_table(runs: list[Run]) -> str:
    (run,) = runs
    recipes = need(run, "time_to_accuracy")["recipes"]
    rows = []
    for name, r in recipes.items():
        pace = r["pace"]
        rows.append([
            code(name),
            r["seconds_to_target"]["zoo"], r["seconds_to_target"]["pytorch"],
            ratio(r["zoo_over_pytorch"]),
            ", ".join(str(x["steps"]) for x in r["runs"]["zoo"]),
            ", ".join(str(x["steps"]) for x in r["runs"]["pytorch"]),
            f"{number(pace['zoo']['interval_seconds'])} / "
            f"{number(pace['pytorch']['interval_seconds'])}",
        ])  # fmt: skip
    header = [
        "recipe", "zoo s (median)", "PyTorch s (median)", "zoo / PyTorch",
        "zoo: steps to 99 %, per seed", "PyTorch: steps per seed",
        "s per evaluation interval: zoo / PyTorch",
    ]  # fmt: skip
    return table(header, rows)


def compile_table(runs: list[Run]) -> str:
    (run,) = runs
    compile_ = need(run, "compile")
    rows = [
        [code(preset), p["parameters"], p["create_model_seconds"],
         p["train_step_lower_seconds"], p["train_step_compile_seconds"],
         p["fit_compile_seconds"], p["fit_steps_per_call"]]
        for preset, p in compile_.items()
        if isinstance(p, dict) and preset != "machine"
    ]  # fmt: skip
    header = [
        "preset", "parameters", "`create_model` s", "step: lower s",
        "step: compile s", "`fit` compile s", "steps / call",
    ]  # fmt: skip
    return table(header, rows)


def small_job_table(runs: list[Run]) -> str:
    (run,) = runs
    presets = need(run, "small_job")["presets"]
    rows = [
        [code(preset), p["zoo_seconds"], p["plain_seconds"],
         bold(p["zoo_over_plain"]), p["steps_per_call"], p["fit_compile_seconds"],
         " / ".join(number(p["compile_seconds"][k]) for k in ("zoo", "plain"))]
        for preset, p in presets.items()
    ]  # fmt: skip
    header = [
        "preset", "`fit` s", "plain loop s", "`fit` / plain", "steps / call",
        "`fit` compile s", "all compiles s: `fit` / plain",
    ]  # fmt: skip
    return table(header, rows)


def host_work_table(runs: list[Run]) -> str:
    (run,) = runs
    work = need(run, "host_work")
    met, targets = work["met"], work["targets"]
    rows = [
        [code(over(name)), bold(value) if name in targets else ratio(value),
         target(targets[name]) if name in targets else "diagnostic",
         verdict(met[name]) if name in met else "-"]
        for name, value in {**work["ratios"], **work["diagnostic_ratios"]}.items()
    ]  # fmt: skip
    return table(["ratio (fastest rounds)", "value", "target", ""], rows)


def fit_floor_table(runs: list[Run]) -> str:
    (run,) = runs
    results = need(run, "fit_floor")["runs"]
    rows = [
        [code(name.replace("_", " ")), r["seconds_per_epoch"]["zoo_fit"],
         r["seconds_per_epoch"]["floor"], bold(r["zoo_over_floor"]),
         ratio(r["zoo_step_on_device_over_floor"]), r["steps_per_call"]]
        for name, r in results.items()
    ]  # fmt: skip
    header = [
        "preset, precision", "`fit` s / epoch", "floor s / epoch", "`fit` / floor",
        "zoo step / floor", "steps / call",
    ]  # fmt: skip
    return table(header, rows)


CACHE_STATES = ["off", "cold", "warm"]


def startup_table(runs: list[Run]) -> str:
    (run,) = runs
    presets = need(run, "startup")["presets"]
    rows = [
        [code(preset), p["off_seconds"], p["cold_seconds"], p["warm_seconds"],
         ratio(p["warm_over_cold"]),
         " / ".join(number(p["fit_compile_seconds"][k]) for k in CACHE_STATES)]
        for preset, p in presets.items()
    ]  # fmt: skip
    header = [
        "preset", "no cache s", "first run (cold) s", "later run (warm) s",
        "warm / cold", "`fit` compile s: none / cold / warm",
    ]  # fmt: skip
    return table(header, rows)


def checks_table(runs: list[Run]) -> str:
    (run,) = runs
    checks, pipe = need(run, "shape_checks"), need(run, "pipeline")
    finite = need(run, "finite_check")
    rows = []
    for model in [k for k, v in checks.items() if isinstance(v, dict) and "met" in v]:
        c = checks[model]
        rows.append([
            f"shape checks, {code(model)}: ms / step on / off",
            f"{number(c['ms_per_step']['checks_on'])} / "
            f"{number(c['ms_per_step']['checks_off'])}",
            f"{bold(c['ratio_on_over_off'])} (same program: "
            f"{number(c['same_program'])})",
        ])  # fmt: skip
    rows.append([
        "batch pipeline: zoo / per-record Grain, examples / s",
        f"{number(pipe['zoo_examples_per_s'])} / "
        f"{number(pipe['per_record_examples_per_s'])}",
        f"**{number(pipe['ratio'])}**x",
    ])  # fmt: skip
    rows.append([
        f"`fit`'s NaN check, {finite['model']} epoch s: on / off",
        f"{number(finite['epoch_seconds_checked'])} / "
        f"{number(finite['epoch_seconds_unchecked'])}",
        bold(finite["ratio"]),
    ])  # fmt: skip
    return table(["measurement", "figures", "ratio"], rows)


def allocator_table(runs: list[Run]) -> str:
    (run,) = runs
    alloc = need(run, "allocator")
    settings = ["tuned", "one_arena", "glibc_defaults"]
    rows = []
    for preset, p in alloc.items():
        if not isinstance(p, dict) or "ms_per_step" not in p:
            continue
        rows.append([
            code(preset),
            *(p["ms_per_step"][s] for s in settings),
            " / ".join(number(p["faults_per_step"][s]) for s in settings),
            " / ".join(number(p["compile_s"][s]) for s in settings),
        ])  # fmt: skip
    header = [
        "preset", "ms / step: tuned", "one arena", "glibc defaults",
        "page faults / step", "compile s",
    ]  # fmt: skip
    return table(header, rows)


def steps_table(benchmark: str, variants: list[str], key: str) -> Callable:
    """A table of whole training steps, ms, for each variant, and their ratio."""

    def make(runs: list[Run]) -> str:
        (run,) = runs
        steps = need(run, benchmark)["steps"]
        rows = [
            [code(preset), *(s["ms_per_step"].get(v) for v in variants),
             bold(s[key])]
            for preset, s in steps.items()
        ]  # fmt: skip
        header = [
            "step, ms (median)",
            *map(code, variants),
            over(key),
        ]
        return table(header, rows)

    return make


def layers_table(benchmark: str, variants: list[str], key: str) -> Callable:
    """A table of single layers, forward plus both gradients ("train"), ms."""

    def make(runs: list[Run]) -> str:
        (run,) = runs
        layers = need(run, benchmark)["layers"]
        rows = []
        for layer, s in layers.items():
            value = s[key]["train"] if isinstance(s[key], dict) else s[key]
            rows.append([layer, *(s["ms"][v] for v in variants), bold(value)])
        header = ["layer", *(f"{v.replace('_', ' ')} ms" for v in variants)]
        return table([*header, over(key)], rows)

    return make


TABLES: dict[str, Callable] = {
    "targets": targets_table,
    "mlp": mlp_table,
    "batch-sizes": batch_sizes_table,
    "cnn": cnn_table,
    "time-to-accuracy": time_to_accuracy_table,
    "compile": compile_table,
    "startup": startup_table,
    "small-job": small_job_table,
    "host-work": host_work_table,
    "fit-floor": fit_floor_table,
    "checks": checks_table,
    "allocator": allocator_table,
    "conv-kernels": steps_table("conv_kernels", ["ynnpack", "xla"], "xla_over_ynnpack"),
    "winograd": steps_table("winograd", ["nhwc", "winograd"], "winograd_over_nhwc"),
    "winograd-layers": layers_table(
        "winograd", ["xla_train", "winograd_train"], "winograd_over_xla"
    ),
    "strided-conv": steps_table(
        "strided_conv", ["dilated", "phases"], "phases_over_dilated"
    ),
    "strided-conv-layers": layers_table(
        "strided_conv", ["dilated", "phases"], "phases_over_dilated"
    ),
}


def render(page: str) -> str:
    """The page with every marked table generated afresh."""
    record = RUN_OF_RECORD.search(page)

    def replace(match: re.Match) -> str:
        name, names = match["name"], match["runs"].split()
        if name == "runs":
            names = names or sorted(p.stem for p in RESULTS.glob("*.jsonl"))
            body = runs_table([load_run(n) for n in names], names)
        elif name in TABLES:
            if len(names) > 1:
                raise SystemExit(f"report.py: table {name!r} takes one run")
            if names:
                run = load_run(names[0])
            elif record is not None:
                run = load_run(record[1])
            else:
                raise SystemExit("report.py: the page names no run-of-record")
            body = TABLES[name]([run])
        else:
            raise SystemExit(
                f"report.py: unknown table {name!r}; know {sorted(TABLES)}"
            )
        header = match[0].split("\n", 1)[0]
        return f"{header}\n{body}\n<!-- end -->"

    return MARKER.sub(replace, page)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n", 1)[0])
    parser.add_argument(
        "--check", action="store_true",
        help="rewrite nothing; exit 1 if a page's tables are out of date",
    )  # fmt: skip
    parser.add_argument(
        "pages", nargs="*", type=pathlib.Path, default=PAGES,
        help="the Markdown pages (default: the benchmarks and performance pages)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    stale = []
    for path in args.pages:
        page = path.read_text(encoding="utf-8")
        new = render(page)
        if not args.check:
            if new != page:
                path.write_text(new, encoding="utf-8")
            print(f"{path}: {len(MARKER.findall(page))} tables written")
        elif new != page:
            diff = difflib.unified_diff(
                page.splitlines(), new.splitlines(), f"{path} (the page)",
                f"{path} (from the results)", lineterm="",
            )  # fmt: skip
            print("\n".join(diff))
            stale.append(str(path))
    if stale:
        print(
            f"out of date with benchmarks/results/: {', '.join(stale)}; "
            "run `python benchmarks/report.py`",
            file=sys.stderr,
        )
    return 1 if stale else 0


if __name__ == "__main__":
    raise SystemExit(main())
