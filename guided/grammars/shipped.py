"""The grammars shipped with guided (``guided/grammars/*.lark``).

    >>> load_grammar("json")                 # Grammar for any JSON value
    >>> load_grammar("python")               # Python 3 files (indentation-aware)
    >>> load_grammar("sql")                  # SQL SELECT statements
    >>> load_grammar("arithmetic")           # integer / float arithmetic expressions
"""

from __future__ import annotations

import re
import warnings
from functools import lru_cache
from pathlib import Path

from guided.grammars.diagnostics import GrammarWarning
from guided.grammars.grammar import PYTHON_INDENTER, Grammar

__all__ = ["SHIPPED_GRAMMARS", "load_grammar", "shipped_grammar_path"]

_HERE = Path(__file__).parent

# name -> (file, start rule, post-lexer)
SHIPPED_GRAMMARS = {
    "json": ("json.lark", "start", None),
    "arithmetic": ("arithmetic.lark", "start", None),
    "sql": ("sql.lark", "start", None),
    "python": ("python.lark", "file_input", PYTHON_INDENTER),
}


# Lexer collisions kept on purpose (guided/grammars/diagnostics.py), not shown to users.  Python:
# a comment that ends a line belongs to _NEWLINE (so indentation stays right), elsewhere the
# %ignore'd COMMENT takes it; Lark's own Python grammar has the same pair.
INTENDED_COLLISIONS = {"python": (("_NEWLINE", "COMMENT"),)}


def shipped_grammar_path(name: str) -> Path:
    return _HERE / SHIPPED_GRAMMARS[name][0]


@lru_cache(maxsize=None)
def load_grammar(name: str, start: str | None = None) -> Grammar:
    """A shipped grammar by name (cached: compiled tables are shared)."""
    if name not in SHIPPED_GRAMMARS:
        raise KeyError(f"no shipped grammar {name!r}; choose from {sorted(SHIPPED_GRAMMARS)}")
    file, default_start, postlex = SHIPPED_GRAMMARS[name]
    with warnings.catch_warnings():
        for a, b in INTENDED_COLLISIONS.get(name, ()):
            warnings.filterwarnings("ignore", re.escape(f"terminals {a} and {b} "), GrammarWarning)
        return Grammar.from_file(_HERE / file, start or default_start, postlex=postlex)
