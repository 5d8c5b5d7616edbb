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

ROOT = pathlib.Path(__file__).resolve().parent.parent / "zoo"
MAX_LINES = 500

# A temporary re-export that keeps ``from ._registry import create_model`` in
# zoo/models/__init__.py working while that file moves to ``._factory``: it is
# allowed only while __init__ still imports create_model from ._registry.
_SHIM = ("zoo.models._registry", "zoo.models._factory")


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


def _init_still_imports_create_model_from_registry() -> bool:
    tree = ast.parse((ROOT / "models" / "__init__.py").read_text(encoding="utf-8"))
    return any(
        isinstance(node, ast.ImportFrom)
        and node.module == "_registry"
        and any(alias.name == "create_model" for alias in node.names)
        for node in ast.walk(tree)
    )


def test_the_import_graph_is_resolved():
    graph = _graph()
    assert "zoo.data._idx" in graph["zoo.data._datasets"]
    assert "zoo.models._abstract" in graph["zoo.models._mlp"]
    # An import inside a function counts.
    assert "zoo.models._cnn" in graph["zoo.models._registry"]


def test_no_module_imports_itself_back():
    graph = _graph()
    if _init_still_imports_create_model_from_registry():
        graph[_SHIM[0]].discard(_SHIM[1])
    cycle = _cycle(graph)
    assert cycle is None, (
        "Import cycle: "
        + " -> ".join(cycle or [])
        + ". Move what both need into a module below both (and re-export it "
        "from where it was, if it is public)."
        + (
            " The create_model shim in zoo/models/_registry.py is no longer "
            "needed (zoo/models/__init__.py imports it from ._factory): delete it."
            if cycle and _SHIM[0] in cycle and _SHIM[1] in cycle
            else ""
        )
    )


def test_no_module_is_over_500_lines():
    long = {
        str(path.relative_to(ROOT.parent)): n
        for path in _modules().values()
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert not long, f"Modules over {MAX_LINES} lines (split them): {long}"
