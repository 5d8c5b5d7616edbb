"""The documentation covers the public API, and its navigation points at real pages."""

import importlib
import inspect
import json
import pathlib
import re
import subprocess
import sys
import types

import pytest

from tests import helpers

REPO = pathlib.Path(__file__).resolve().parent.parent
DOCS = REPO / "docs"
API_PAGES = sorted((DOCS / "api").glob("*.md"))
DIRECTIVE = re.compile(r"^:::\s+([\w.]+)\s*$", re.MULTILINE)


def public_names(module_name: str) -> set[str]:
    """Dotted names of a module's public API.

    Public means: in the module's namespace, not starting with ``_``, and not a
    module. For ``zoo.plot``, which imports Matplotlib and NumPy names, only the
    functions defined in the package itself (its private modules included).
    """
    module = importlib.import_module(module_name)
    names = set()
    for name, value in vars(module).items():
        if name.startswith("_") or isinstance(value, types.ModuleType):
            continue
        if module_name == "zoo.plot" and not (
            inspect.isfunction(value) and value.__module__.startswith("zoo.plot.")
        ):
            continue
        names.add(f"{module_name}.{name}")
    return names


def documented_names() -> set[str]:
    return {
        name
        for page in API_PAGES
        for name in DIRECTIVE.findall(page.read_text(encoding="utf-8"))
    }


@pytest.mark.parametrize("module_name", ["zoo", "zoo.data", "zoo.train", "zoo.plot"])
def test_every_public_name_is_in_the_api_reference(module_name: str):
    missing = public_names(module_name) - documented_names()
    assert not missing, (
        f"Public names missing from docs/api/*.md: {sorted(missing)}. Add a "
        "`::: name` line for each."
    )


def test_api_reference_names_exist():
    for name in sorted(documented_names()):
        module_name, _, attribute = name.rpartition(".")
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError:
            module = importlib.import_module(module_name)
            assert hasattr(module, attribute), f"{name} is documented but absent"


def nav_files() -> list[str]:
    """The pages named in mkdocs.yml's ``nav`` (read without a YAML parser)."""
    text = (REPO / "mkdocs.yml").read_text(encoding="utf-8")
    match = re.search(r"^nav:\n((?:[ \t]+.*\n?|\n)*)", text, re.MULTILINE)
    assert match is not None, "mkdocs.yml has no nav"
    return re.findall(
        r"^[ \t]*-(?:[^:\n]*:)?[ \t]*(\S+\.md)[ \t]*$", match.group(1), re.M
    )


def test_every_nav_entry_is_a_docs_file():
    files = nav_files()
    assert len(files) > 10, f"too few pages found in the nav: {files}"
    missing = [f for f in files if not (DOCS / f).is_file()]
    assert not missing, f"mkdocs.yml nav names missing files: {missing}"
    assert len(files) == len(set(files)), "a page appears twice in the nav"


def test_every_image_in_the_docs_exists():
    for page in DOCS.rglob("*.md"):
        for target in re.findall(r"!\[[^\]]*\]\(([^)\s]+)", page.read_text("utf-8")):
            if not target.startswith(("http://", "https://")):
                assert (page.parent / target).is_file(), f"{page.name}: {target}"


def test_nox_accuracy_session_checks_the_readme_commands_and_promises():
    # `nox -s accuracy` trains these runs and fails below the promised accuracy;
    # the README must show the same commands, with at least that accuracy.
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    for name, (flags, promised) in helpers.readme_runs().items():
        command = " ".join(["python examples/mnist.py", *flags])
        rows = [line for line in readme.splitlines() if f"`{command}`" in line]
        assert rows, f"{name}: the README has no row with `{command}`"
        shown = [float(p) for p in re.findall(r"\| (\d+\.\d+) %", rows[0])]
        assert shown and shown[0] >= 100 * promised, (name, rows[0])


CODE_LINE_LIMIT = 80  # columns a code block shows at 1280 px without a scrollbar
FENCE = re.compile(r"^[ \t]*(`{3,}|~{3,})")


def code_block_lines(text: str) -> list[tuple[int, str]]:
    """The lines inside fenced code blocks, with their 1-based line numbers."""
    found, fence = [], None
    for number, line in enumerate(text.splitlines(), start=1):
        match = FENCE.match(line)
        if fence is None:
            fence = match.group(1) if match else None
        elif (
            match
            and line.strip() == match.group(1)
            and (match.group(1)[0] == fence[0] and len(match.group(1)) >= len(fence))
        ):
            fence = None
        else:
            found.append((number, line))
    return found


def test_code_block_lines_are_found():
    # A fence closes on its own character, at least as long; nothing else does.
    text = "a\n````markdown\n```\nx = 1\n````\ny\n~~~\nz\n```\n~~~\n"
    assert code_block_lines(text) == [(3, "```"), (4, "x = 1"), (8, "z"), (9, "```")]


def test_code_blocks_fit_the_page():
    # Longer lines need a horizontal scrollbar on the built site (and on
    # GitHub); put a long line's comment on the line above it instead.
    too_long = [
        f"{page.relative_to(REPO)}:{number}: {len(line)} characters"
        for page in [*sorted(DOCS.glob("*.md")), REPO / "README.md"]
        for number, line in code_block_lines(page.read_text(encoding="utf-8"))
        if len(line) > CODE_LINE_LIMIT
    ]
    assert not too_long, (
        f"code-block lines over {CODE_LINE_LIMIT} characters:\n" + "\n".join(too_long)
    )


def test_pretrained_page_shows_every_card_command():
    # The weights table leaves the long commands to collapsible blocks below it,
    # each wrapped with backslashes; joined again, each must be its card's.
    page = (DOCS / "pretrained.md").read_text(encoding="utf-8")
    shown = " ".join(re.sub(r"\\\n\s*", "", page).split())
    cards = sorted((REPO / "zoo" / "weights").glob("*.json"))
    assert cards, "no cards in zoo/weights/"
    for card in cards:
        command = json.loads(card.read_text(encoding="utf-8"))["command"]
        assert " ".join(command.split()) in shown, f"pretrained.md lacks {card.name}"


def test_benchmark_tables_match_the_results():
    # The tables of docs/benchmarks.md and docs/performance.md are generated
    # from benchmarks/results/*.jsonl; `python benchmarks/report.py` rewrites them.
    check = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "report.py"), "--check"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr


FIRST_HOUR = re.compile(r"<!-- test: first-hour -->\n```python\n(.*?)```", re.S)


def first_hour_blocks(page: pathlib.Path) -> list[str]:
    """The Python blocks marked ``<!-- test: first-hour -->`` on ``page``."""
    return FIRST_HOUR.findall(page.read_text(encoding="utf-8"))


def test_readme_and_index_open_with_the_same_first_hour():
    # Pretrained predictions, fine-tuning, your own arrays: before anything
    # else, the same three blocks on both pages (so one run tests both).
    readme = first_hour_blocks(REPO / "README.md")
    assert len(readme) == 3, "README.md: expected 3 blocks marked first-hour"
    assert first_hour_blocks(DOCS / "index.md") == readme
    for page in [REPO / "README.md", DOCS / "index.md"]:
        text = page.read_text(encoding="utf-8")
        first = text.index("<!-- test: first-hour -->")
        assert "```" not in text[:first], f"{page.name}: a block before them"
        assert first < text.index("## Quick start") < text.index("## Install")
        for word in ["pretrained", "safetensors", "fine-tun"]:
            assert word in text.lower(), f"{page.name} never says {word}"


@pytest.mark.parametrize("number", [0, 1, 2])
def test_first_hour_blocks_run(number: int, capsys):
    # Each block stands alone (its own imports) and prints what it promises.
    code = first_hour_blocks(REPO / "README.md")[number]
    exec(compile(code, f"README.md first-hour block {number + 1}", "exec"), {})
    out = capsys.readouterr().out
    if number == 0:  # the pretrained cnn gets MNIST's first 8 digits right
        predicted, labels = re.findall(r"\[([\d ]+)\]", out)[:2]
        assert predicted.split() == labels.split(), out
    else:  # fine-tuned, and trained on arrays: a dict with the accuracy
        accuracy = float(re.findall(r"'accuracy': ([\d.]+)", out)[-1])
        assert accuracy > 0.9, out


def test_the_index_lists_every_preset_and_example():
    import zoo

    index = (DOCS / "index.md").read_text(encoding="utf-8")
    table = index[index.index("## Models") :]
    missing = [m for m in zoo.list_models() if f"| `{m}` |" not in table]
    assert not missing, f"docs/index.md's model table lacks {missing}"
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    examples = readme[readme.index("## Examples and documentation") :]
    for script in ["mnist.py", "finetune.py", "toy.py"]:
        assert f"python examples/{script}" in examples, script


def test_the_data_page_runs_top_to_bottom(capsys):
    # docs/data.md is one session: each block uses what the blocks above made.
    blocks = re.findall(
        r"```python\n(.*?)```", (DOCS / "data.md").read_text(encoding="utf-8"), re.S
    )
    scope: dict = {}
    for number, code in enumerate(blocks):
        exec(compile(code, f"docs/data.md block {number + 1}", "exec"), scope)
    out = capsys.readouterr().out
    assert "'inputs': (dtype('uint8'), (128, 1, 28, 28))" in out, out
    assert "'labels': (dtype('int32'), (128,))" in out, out
    assert "468" in out.split(), out


def test_the_shape_errors_the_docs_quote_are_the_real_ones():
    import jax
    import jax.numpy as jnp

    import zoo

    model = zoo.MLP(784, 10, width_size=[8], key=jax.random.key(0))

    def message(shape: tuple[int, ...]) -> str:
        with pytest.raises(ValueError) as error:
            model(jnp.zeros(shape))
        return " ".join(f"ValueError: {error.value}".split())

    def flat(page: pathlib.Path) -> str:
        return " ".join(page.read_text(encoding="utf-8").split())

    assert message((783,)) in flat(DOCS / "conventions.md")
    assert message((10, 784)) in flat(DOCS / "mlp-shapes.md")
    start = message((783,)).split(" (its input_shape)")[0]
    assert f"# {start} ..." in flat(REPO / "README.md")
