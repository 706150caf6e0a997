"""Members a class object really has, by importing it: the check the language server cannot make.

    >>> class_members("/site-packages/lark/common.py", 71, "/my/project", ["rules", "deserialize"])
    frozenset({'deserialize'})                  # line 71 (0-based) is `class ParserConf`

jedi lists, after ``SomeClass.``, the names the class body only *annotates* (``rules: list`` with
no value): they are instance attributes, and ``SomeClass.rules`` raises AttributeError. When the
receiver of a dereference is a class (the server's definition of it is a ``class`` statement),
the dereference monitor can keep only the names the imported class has (``hasattr``). Importing
runs the module's top-level code, so this is opt-in (``DereferenceMonitor(..., import_check=True)``).
Anything that cannot be resolved exactly (not importable, a class inside a function, another copy
of the module than the server's) gives ``None``: no refinement. Lookups go through the class's
metaclass, so ``Enum`` classes answer for their members.
"""

from __future__ import annotations

import ast
import functools
import importlib
import os
import pathlib
import sys

__all__ = ["class_members", "module_name_of"]


def module_name_of(path: str, roots: tuple[str, ...]) -> str | None:
    """Dotted module name of ``path`` under the longest of ``roots`` (a sys.path entry) holding it."""
    file = pathlib.Path(path).resolve()
    best = None
    for root in roots:
        try:
            rel = file.relative_to(pathlib.Path(root).resolve())
        except (ValueError, OSError):
            continue
        if best is None or len(rel.parts) < len(best.parts):
            best = rel
    if best is None or best.suffix != ".py":
        return None
    parts = list(best.with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    if not parts or not all(p.isidentifier() for p in parts):
        return None
    return ".".join(parts)


def _qualname_at(source: str, line: int) -> str | None:
    """Qualified name of the class whose ``class`` statement is on 0-based ``line`` (module or class nesting only)."""

    def visit(body, outer: str):
        for node in body:
            if isinstance(node, ast.ClassDef):
                name = f"{outer}{node.name}"
                if node.lineno - 1 == line:
                    return name
                found = visit(node.body, name + ".")
                if found:
                    return found
        return None

    try:
        return visit(ast.parse(source).body, "")
    except (SyntaxError, ValueError):
        return None


@functools.lru_cache(maxsize=256)
def _class_at(path: str, line: int, mtime: float, roots: tuple[str, ...]) -> type | None:
    try:
        source = pathlib.Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    qualname = _qualname_at(source, line)
    module = module_name_of(path, roots)
    if qualname is None or module is None:
        return None
    added = [r for r in roots if r not in sys.path]
    sys.path[:0] = added  # the project root, for a project that is not installed
    try:
        obj = importlib.import_module(module)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except Exception:  # noqa: BLE001 - not importable here: no refinement
        return None
    finally:
        for r in added:
            try:
                sys.path.remove(r)
            except ValueError:
                pass
    if not isinstance(obj, type):
        return None
    if pathlib.Path(getattr(sys.modules.get(obj.__module__), "__file__", "") or "").resolve() != pathlib.Path(path).resolve():
        return None  # the import found another copy of the module than the one the server read
    return obj


def class_members(path: str, line: int, project_root: str, names) -> frozenset[str] | None:
    """Those of ``names`` that the class defined at ``path``:``line`` (0-based) has; ``None``: unknown.

    The class is imported (module name from ``path`` under ``project_root`` or a ``sys.path``
    entry) and each name looked up with ``hasattr``.
    """
    try:
        mtime = os.path.getmtime(path)
    except OSError:
        return None
    roots = tuple(dict.fromkeys([project_root, *[p for p in sys.path if p and os.path.isdir(p)]]))
    cls = _class_at(path, line, mtime, roots)
    if cls is None:
        return None
    return frozenset(name for name in names if _has(cls, name))


def _has(cls: type, name: str) -> bool:
    """``hasattr``, where only AttributeError means "no" (a metaclass ``__getattr__``, like Enum's,
    answers for itself; any other error leaves the name allowed)."""
    try:
        getattr(cls, name)
    except AttributeError:
        return False
    except Exception:  # noqa: BLE001
        return True
    return True
