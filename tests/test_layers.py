"""The package's modules import each other without a cycle (lazy imports inside functions count)."""

from __future__ import annotations

import ast
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import threadensemble

PACKAGE = Path(threadensemble.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Return the package modules that ``path`` imports, anywhere in the file."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
            target = f"{base}.{node.module}" if node.module else base
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("threadensemble"):
            found.add(node.module or "")
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("threadensemble"))
    return found


def import_graph() -> dict[str, set[str]]:
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {_module_name(p) for p in paths}
    graph = {}
    for path in paths:
        name = _module_name(path)
        # A package's __init__ may import its own submodules; a submodule importing its package
        # would be a cycle through __init__ only when __init__ imports that submodule.
        graph[name] = {m for m in _imports(path) if m in modules and m != name}
    return graph


def test_the_import_graph_has_no_cycle() -> None:
    graph = import_graph()
    # Submodules that import the package itself ("from threadensemble import x") depend on
    # __init__, which depends on them: that is how examples use the public API, and it is fine
    # because __init__ does not import the examples.
    assert "threadensemble.examples" not in graph["threadensemble"]
    private = {
        name: {d for d in deps if d != "threadensemble"}
        for name, deps in graph.items()
        if name.startswith("threadensemble._")
    }
    try:
        tuple(TopologicalSorter(private).static_order())
    except CycleError as exc:
        raise AssertionError(
            f"import cycle among threadensemble's modules: {exc.args[1]}"
        ) from None


def test_a_cycle_is_found() -> None:
    """The check itself: a graph with a cycle fails the sort."""
    try:
        tuple(TopologicalSorter({"a": {"b"}, "b": {"a"}}).static_order())
    except CycleError:
        return
    raise AssertionError("no cycle found in a -> b -> a")


# The layers of the package docstring, lowest first: a module imports only from lower layers.
LAYERS = [
    {
        "_errors",
        "_runtime",
        "_rng",
        "_context",
        "_interrupt",
        "_progress",
        "_shared",
        "_stacking",
        "_compare",
        "_sharedbuffers",
    },
    {"_identity", "_state", "_picklable", "_results", "_encoding", "_report", "_lock", "_routing"},
    {"_model"},
    {"_config", "_netcdf"},
    {"_realize", "_store"},
    {"_threads", "_processes", "_distributed", "_check", "_verify"},
    {"_engine"},
    {"_spec"},
    {"_cli"},
    {"__main__"},
]


def test_every_module_imports_only_from_lower_layers() -> None:
    layer_of = {name: i for i, layer in enumerate(LAYERS) for name in layer}
    graph = {
        name.removeprefix("threadensemble."): {d.removeprefix("threadensemble.") for d in deps}
        for name, deps in import_graph().items()
        if name.startswith("threadensemble._") or name == "threadensemble.__main__"
    }
    assert set(graph) == set(layer_of), "every private module belongs to one layer"
    upward = [
        f"{name} (layer {layer_of[name] + 1}) imports {dep} (layer {layer_of[dep] + 1})"
        for name, deps in graph.items()
        for dep in deps
        if dep in layer_of and layer_of[dep] >= layer_of[name]
    ]
    assert not upward, upward
