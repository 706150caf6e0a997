"""The folder layout is the architecture: imports flow one way and form no circle.

Imports are read from the source with ``ast`` (function-level ones included, ``if TYPE_CHECKING``
blocks excluded), so a lazy import that closes a circle fails here too.
"""

from __future__ import annotations

import ast
import importlib
import warnings
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "guided"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imported_names(tree: ast.AST, module: str, is_package: bool) -> set[str]:
    """Dotted names of the guided modules this module's code imports."""
    names: set[str] = set()
    package = module if is_package else module.rpartition(".")[0]

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)  # kept if a module
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return {n for n in names if n == "guided" or n.startswith("guided.")}


def import_graph() -> dict[str, set[str]]:
    """module -> the guided modules importing it runs (parent packages included)."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets: set[str] = set()
        for imported in _imported_names(ast.parse(path.read_text()), name, path.name == "__init__.py"):
            if imported not in modules:
                continue
            # importing a.b.c runs a and a.b first, unless the importer is inside them already
            parts = imported.split(".")
            for i in range(2, len(parts) + 1):
                target = ".".join(parts[:i])
                if target != name and not (name + ".").startswith(target + "."):
                    targets.add(target)
        graph[name] = targets - {"guided"}  # the root package imports its exports lazily
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return cycles


def test_no_import_circles():
    assert import_cycles(import_graph()) == []


def test_cycle_finder_sees_a_lazy_circle():
    graph = {"guided.a": {"guided.b"}, "guided.b": {"guided.a"}, "guided.c": {"guided.a"}}
    assert import_cycles(graph) == [["guided.a", "guided.b"]]
    tree = ast.parse("def f():\n    from guided.constraint import Product\nif TYPE_CHECKING:\n    import guided.vocab\n")
    assert _imported_names(tree, "guided.x", False) == {"guided.constraint", "guided.constraint.Product"}


# Data flows one way: front ends -> grammar data -> engine -> constraint states -> samplers ->
# surfaces and integrations. Each package may not import the layers after it.
LATER_LAYERS = ("guided.samplers", "guided.speculative", "guided.generation", "guided.serve",
                "guided.integrations", "guided.cli", "guided.demo")
FORBIDDEN = {
    "guided.constraint": ("guided.grammars", "guided.json_schema", "guided.monitors", "guided.diffusion", *LATER_LAYERS),
    "guided.vocab": ("guided.grammars", "guided.json_schema", "guided.monitors", "guided.diffusion", *LATER_LAYERS),
    "guided.grammars": ("guided.json_schema", "guided.monitors", "guided.diffusion", "guided.models", *LATER_LAYERS),
    "guided.json_schema": ("guided.monitors", "guided.diffusion", "guided.models", *LATER_LAYERS),
    # samplers see only the constraint protocol, never a particular constraint
    "guided.samplers": ("guided.grammars", "guided.json_schema", "guided.monitors", "guided.diffusion",
                        *LATER_LAYERS[1:]),
    "guided.speculative": ("guided.generation", "guided.serve", "guided.integrations", "guided.cli"),
    "guided.generation": ("guided.serve", "guided.integrations", "guided.cli"),
}


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_imports_flow_one_way(layer):
    graph = import_graph()
    wrong = sorted(
        f"{module} -> {target}"
        for module, targets in graph.items()
        if module == layer or module.startswith(layer + ".")
        for target in targets
        if any(target == f or target.startswith(f + ".") for f in FORBIDDEN[layer])
    )
    assert wrong == []


def test_every_package_says_what_it_is_for():
    for init in PACKAGE.rglob("__init__.py"):
        doc = ast.get_docstring(ast.parse(init.read_text()))
        assert doc and len(doc) > 40, f"{init} has no docstring saying what the package is for"


def test_public_names_import_from_guided():
    import guided

    for name in guided.__all__:
        assert getattr(guided, name) is not None
    assert guided.JSONSchema.__module__ == "guided.json_schema.schema"
    assert guided.LogitsProcessor.__module__ == "guided.integrations.huggingface"
    assert (guided.Regex(r"a") & guided.Regex(r"[a-z]")).__class__ is guided.Product


@pytest.mark.parametrize("old, new", sorted(importlib.import_module("guided._moved").MOVED_MODULES.items()))
def test_old_module_paths_warn_and_are_the_same_module(old, new):
    import sys

    sys.modules.pop(old, None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module = importlib.import_module(old)
    assert module is importlib.import_module(new)
    messages = [str(w.message) for w in caught if issubclass(w.category, DeprecationWarning)]
    assert any(old in m and new in m for m in messages), messages
