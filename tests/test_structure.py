"""The package's shape: no import cycles between its modules, no huge modules.

Every module of ``zoo/`` is parsed with ``ast`` (nothing is imported), and
every import in it counts, those inside functions included: a cycle hidden in
a function is still a cycle (it only fails later, and in an order that depends
on which module was imported first). Relative imports are resolved against the
importing module's package; ``from package import name`` counts as importing
``package.name`` when that is a module, else ``package``.
"""

import ast
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent / "zoo"
MAX_LINES = 500


def _module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, pathlib.Path]:
    return {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _imports(name: str, path: pathlib.Path, known: set[str]) -> set[str]:
    """The zoo modules that module ``name`` (at ``path``) imports anywhere."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                source = ".".join([*base, *([node.module] if node.module else [])])
            else:
                source = node.module or ""
            targets = [
                f"{source}.{alias.name}"
                if f"{source}.{alias.name}" in known
                else source
                for alias in node.names
            ]
        else:
            continue
        for target in targets:
            # ``import zoo.data._idx`` names the module itself.
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: _imports(name, path, known) for name, path in modules.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` as a list of modules, or ``None``."""
    edges = {n: sorted(targets) for n, targets in graph.items()}
    colour: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        colour[node] = 1
        stack.append(node)
        for nxt in edges.get(node, ()):
            if colour.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in colour and (found := visit(nxt)):
                return found
        stack.pop()
        colour[node] = 2
        return None

    for node in sorted(edges):
        if node not in colour and (found := visit(node)):
            return found
    return None


def test_the_import_graph_is_resolved():
    graph = _graph()
    assert "zoo.data._idx" in graph["zoo.data._datasets"]
    assert "zoo.models._abstract" in graph["zoo.models._mlp"]
    # An import inside a function counts.
    assert "zoo.models._cnn" in graph["zoo.models._registry"]


def test_the_top_level_is_lean():
    import zoo

    # ``zoo.plot`` is loaded on first use, so it is in ``dir(zoo)`` only after
    # some test imported it: count it either way.
    names = {n for n in dir(zoo) if not n.startswith("_")} | {"plot"}
    assert len(names) <= 30, sorted(names)
    for internal in ("allocator_tuned", "compilation_cache_dir", "conv_path"):
        assert not hasattr(zoo, internal)


def test_no_module_imports_itself_back():
    cycle = _cycle(_graph())
    assert cycle is None, (
        "Import cycle: "
        + " -> ".join(cycle or [])
        + ". Move what both need into a module below both (and re-export it "
        "from where it was, if it is public)."
    )


def test_no_module_is_over_500_lines():
    long = {
        str(path.relative_to(ROOT.parent)): n
        for path in _modules().values()
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert not long, f"Modules over {MAX_LINES} lines (split them): {long}"


# -- public names only (issue 36): no JAX internals, no private zoo modules --

_REPO = ROOT.parent
_JAX_INTERNALS = re.compile(r"\bjax\._src\b|\bfrom\s+jax\s+import\s+[^\n]*\b_src\b")
# ``zoo._x``, ``zoo.train._x`` anywhere in the text (code in strings included);
# dunders such as ``zoo.__version__`` are public.
_PRIVATE_ZOO_ATTRIBUTE = re.compile(r"\bzoo(?:\.[A-Za-z]\w*)*\._[A-Za-z]")


def _python_files(*folders: str) -> list[pathlib.Path]:
    return sorted(p for f in folders for p in (_REPO / f).rglob("*.py"))


def _private_zoo_imports(path: pathlib.Path) -> list[str]:
    """``import zoo._x``, ``from zoo.y._x import ...``, ``from zoo.y import _x``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
            names: list[str] = []
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            modules = [node.module]
            names = [alias.name for alias in node.names]
        else:
            continue
        for module in modules:
            parts = module.split(".")
            if parts[0] != "zoo":
                continue
            private = [p for p in parts if p.startswith("_") and not p.startswith("__")]
            private += [
                n for n in names if n.startswith("_") and not n.startswith("__")
            ]
            if private:
                found.append(f"line {node.lineno}: {module} {names or ''}".strip())
    return found


def test_no_jax_internals_in_zoo_examples_or_benchmarks():
    used = {
        str(path.relative_to(_REPO)): sorted(set(_JAX_INTERNALS.findall(text)))
        for path in _python_files("zoo", "examples", "benchmarks")
        if _JAX_INTERNALS.search(text := path.read_text(encoding="utf-8"))
    }
    assert not used, f"jax._src (JAX's internals) used in: {used}"


def test_examples_and_benchmarks_use_public_zoo_names_only():
    private = {}
    for path in _python_files("examples", "benchmarks"):
        text = path.read_text(encoding="utf-8")
        uses = _private_zoo_imports(path)
        uses += sorted(set(_PRIVATE_ZOO_ATTRIBUTE.findall(text)))
        if uses:
            private[str(path.relative_to(_REPO))] = uses
    assert not private, (
        f"examples/ and benchmarks/ must use zoo's public names only: {private}"
    )


def test_the_private_name_checks_catch_what_they_should(tmp_path):
    assert _JAX_INTERNALS.search("from jax._src import core")
    assert _JAX_INTERNALS.search("from jax import _src")
    assert not _JAX_INTERNALS.search("import jax.numpy as jnp")
    for text in ["zoo._allocator.X", "zoo.train._tuning.f()", "zoo.models._conv"]:
        assert _PRIVATE_ZOO_ATTRIBUTE.search(text), text
    for text in ["zoo.__version__", "zoo.train.fit", "zoo.models.with_conv_path"]:
        assert not _PRIVATE_ZOO_ATTRIBUTE.search(text), text
    script = tmp_path / "script.py"
    script.write_text(
        "import zoo._allocator\n"
        "from zoo.train._tuning import steps_per_call\n"
        "from zoo.train import _tuning\n"
        "from zoo.train import fit\n"
        "import zoo.runtime\n"
    )
    assert len(_private_zoo_imports(script)) == 3
