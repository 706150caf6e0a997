"""Old module paths that still import, with a ``DeprecationWarning``, for one release.

    >>> import guided.server_engine      # DeprecationWarning: use guided.serve.engine
    >>> guided.server_engine is guided.serve.engine
    True

A finder on ``sys.meta_path`` answers only for the names below and hands back the module at its
new path, so old and new names are one module object (same classes, same caches).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings

# old dotted path -> new dotted path (moved in 0.2.0; the old names go in 0.3.0)
MOVED_MODULES: dict[str, str] = {
    "guided.product": "guided.constraint",
    "guided.server": "guided.serve.http",
    "guided.server_protocol": "guided.serve.protocol",
    "guided.server_engine": "guided.serve.engine",
    "guided.ide": "guided.serve.ide",
    "guided.logits_processor": "guided.integrations.huggingface",
    "guided.grammars.json_schema": "guided.json_schema",
    "guided.grammars.json_schema_ir": "guided.json_schema.ir",
    "guided.grammars.json_schema_regex": "guided.json_schema.regex",
    "guided.grammars.json_schema_formats": "guided.json_schema.formats",
    "guided.grammars.json_schema_grammar": "guided.json_schema.grammar",
    "guided.grammars.json_schema_dfa": "guided.json_schema.engine_spec",
}


class _MovedModuleLoader(importlib.abc.Loader):
    def __init__(self, new_name: str):
        self.new_name = new_name

    def create_module(self, spec):
        return importlib.import_module(self.new_name)

    def exec_module(self, module) -> None:
        pass  # the module at its new path is already executed


class _MovedModuleFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        new_name = MOVED_MODULES.get(fullname)
        if new_name is None:
            return None
        # importlib's own frames are skipped, so stacklevel 2 names the importing line
        warnings.warn(f"{fullname} is deprecated; import {new_name} instead", DeprecationWarning, stacklevel=2)
        return importlib.machinery.ModuleSpec(fullname, _MovedModuleLoader(new_name))


def install() -> None:
    """Put the finder on ``sys.meta_path`` once (``import guided`` does this)."""
    if not any(isinstance(f, _MovedModuleFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _MovedModuleFinder())
