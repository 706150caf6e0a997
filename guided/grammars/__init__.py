"""The grammar engine and its text front ends: regular expressions and Lark context-free grammars.

Front ends (``regex.py``, ``lark_loader.py``) turn text into grammar data (rules and byte-DFA
terminals); the engine (``lexer.py``, ``earley.py``, ``grammar.py``) turns grammar data into
constraint states and token masks.  The JSON-Schema front end (:mod:`guided.json_schema`) feeds
the same engine.

    >>> from guided.grammars import Regex, Grammar, load_grammar
    >>> Regex(r"[0-9]+").start(vocab)
    >>> Grammar(open("my.lark").read(), start="start").start(vocab)
    >>> load_grammar("json").start(vocab)            # a grammar shipped in this folder
    >>> StructuralTag([Tag("<call>", JSONSchema(schema), "</call>")])   # text with tagged JSON regions

A Lark grammar may embed a JSON Schema with ``%json {...}`` (once :mod:`guided.json_schema` is imported).
"""

from guided.grammars.bytedfa import ByteDFA, EmptyLanguageError, RegexError, RegexTooLargeError
from guided.grammars.diagnostics import GrammarWarning
from guided.grammars.grammar import PYTHON_INDENTER, Grammar, GrammarState, IndenterSpec
from guided.grammars.lark_loader import GrammarError
from guided.grammars.regex import Regex, RegexState
from guided.grammars.shipped import SHIPPED_GRAMMARS, load_grammar, shipped_grammar_path
from guided.grammars.structural_tag import StructuralTag, Tag

__all__ = [
    "ByteDFA",
    "RegexError",
    "RegexTooLargeError",
    "EmptyLanguageError",
    "Regex",
    "RegexState",
    "Grammar",
    "GrammarState",
    "GrammarError",
    "GrammarWarning",
    "IndenterSpec",
    "PYTHON_INDENTER",
    "load_grammar",
    "shipped_grammar_path",
    "SHIPPED_GRAMMARS",
    "StructuralTag",
    "Tag",
]
