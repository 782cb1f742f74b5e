"""The package layout: no import cycles between modules or between subpackages.

Data flows one way: core/structure (the method) -> data/models/tasks -> run
(config, experiments, records); analysis and plots read records and tables and
import no run code; the book's own code (``prunedyn.book``) may import all of
them, and nothing in the library imports it. Every import of a ``prunedyn``
module at module level or inside a function counts.
"""
import ast
from pathlib import Path

import prunedyn

PKG = Path(prunedyn.__file__).parent

# Which subpackage may import which (besides itself). The top-level
# ``prunedyn/__init__`` re-exports the public API and is not a layer.
ALLOWED = {
    "structure": set(),
    "core": {"structure"},
    "data": set(),
    "models": {"core", "structure"},
    "tasks": {"data"},
    "run": {"core", "structure", "data", "models", "tasks"},
    "analysis": {"core", "structure", "data", "models", "tasks"},  # not run: tables in, tables out
    "plots": {"core", "structure", "data", "models", "tasks", "analysis"},  # not run: figures need no experiment
    "book": {"core", "structure", "data", "models", "tasks", "run", "analysis", "plots"},
}


def _imports(path: Path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("prunedyn"):
            # ``from pkg import module`` imports the module; ``from module import name`` the module
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                yield sub if (PKG.parent / sub.replace(".", "/")).with_suffix(".py").exists() else node.module
        elif isinstance(node, ast.Import):
            yield from (a.name for a in node.names if a.name.startswith("prunedyn"))


def _module_name(path: Path) -> str:
    parts = path.relative_to(PKG.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _graph():
    graph = {}
    for path in PKG.rglob("*.py"):
        graph[_module_name(path)] = set(_imports(path)) - {"prunedyn.__version__"}
    return graph


def test_no_relative_imports_left_unresolved():
    graph = _graph()
    for mod, deps in graph.items():
        for dep in deps:
            assert dep in graph or dep.rsplit(".", 1)[0] in graph, f"{mod} imports unknown {dep}"


def test_subpackages_import_only_lower_layers():
    bad = []
    for mod, deps in _graph().items():
        parts = mod.split(".")
        if len(parts) < 3:
            continue
        layer = parts[1]
        for dep in deps:
            target = dep.split(".")[1] if dep.count(".") >= 1 else None
            if target is None or target == layer or target == "__version__":
                continue
            if target not in ALLOWED:
                continue
            if target not in ALLOWED[layer]:
                bad.append(f"{mod} -> {dep}")
    assert not bad, "imports against the layering:\n" + "\n".join(bad)


def test_no_module_import_cycles():
    graph = {m: {d for d in deps if d in _graph_keys} for m, deps in _graph().items()}
    state = {}

    def visit(node, stack):
        state[node] = 1
        for dep in graph.get(node, ()):
            if state.get(dep) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack + [node, dep]))
            if dep not in state:
                visit(dep, stack + [node])
        state[node] = 2

    for node in graph:
        if node not in state:
            visit(node, [])


_graph_keys = set(_graph())


def test_the_library_is_small_and_its_modules_fit_in_a_head():
    """The library (all of prunedyn but the book's own code) is at most 10,000 lines, and no module
    anywhere in the package is over 600."""
    sizes = {p.relative_to(PKG).as_posix(): len(p.read_text().splitlines()) for p in PKG.rglob("*.py")}
    library = sum(n for name, n in sizes.items() if not name.startswith("book/"))
    assert library <= 10_000, library
    assert not {name: n for name, n in sizes.items() if n > 600}
