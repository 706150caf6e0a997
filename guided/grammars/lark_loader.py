"""Read a Lark grammar (EBNF text) into plain BNF rules and byte-DFA terminals.

    >>> spec = load_lark('start: NAME ("," NAME)*\\nNAME: /[a-z]+/\\n%ignore " "', start="start")
    >>> [t.name for t in spec.terminals], spec.ignore
    (['NAME', 'COMMA', '__IGNORE_0'], ('__IGNORE_0',))

Lark does the front end (``%import``, templates, EBNF operators, terminal algebra); we take
its compiled rules and terminal regexes.  Every terminal is compiled to a
:class:`~guided.grammars.bytedfa.ByteDFA`; a few well-known Lark terminals written with
lookbehind and lazy quantifiers (``common.ESCAPED_STRING``, Python's string literals) are
swapped for DFA-friendly regexes with the same meaning under longest-match lexing.

Every failure is a :class:`GrammarError` carrying the line and column when one is known.

Embedded languages (llguidance's syntax): ``%json { ...JSON Schema... }`` stands for a JSON
value valid under that schema wherever a symbol may stand in a rule::

    start: "Result: " %json {"type": "object", "properties": {"ok": {"type": "boolean"}}}

The schema's grammar is spliced in under its own names (:func:`rename_spec`).  The grammar
engine does not know JSON Schema (imports flow one way): the JSON-Schema front end registers
``%json`` here (:func:`register_embedding`) when ``guided.json_schema`` is imported.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, NamedTuple

import numpy as np

from guided.constraint import ConstraintError
from guided.grammars.bytedfa import ByteDFA, EmptyLanguageError, RegexError, RegexTooLargeError
from guided.grammars.diagnostics import TerminalPattern, lexer_findings, report

__all__ = ["GrammarError", "TerminalSpec", "GrammarSpec", "load_lark", "register_embedding", "rename_spec",
           "RenamedSpec"]


class GrammarError(ConstraintError):
    """A grammar that cannot be used; ``line``/``column`` (1-based) locate it when known."""

    def __init__(self, message: str, line: int | None = None, column: int | None = None, name: str | None = None):
        self.line = line
        self.column = column
        self.name = name
        where = f" (line {line}, column {column})" if line is not None else ""
        super().__init__(f"{message}{where}")


@dataclass(frozen=True)
class TerminalSpec:
    name: str
    regex: str  # Python regex, flags folded in ("" where the automaton was built from a language)
    priority: int
    is_literal: bool  # a string literal (beats regexes at equal priority)
    dfa: ByteDFA = field(compare=False, repr=False)


@dataclass(frozen=True)
class GrammarSpec:
    terminals: tuple[TerminalSpec, ...]
    rules: tuple[tuple[str, tuple[str, ...]], ...]  # (lhs, rhs symbols); terminal names are upper-case
    ignore: tuple[str, ...]
    start: str
    declared: tuple[str, ...]  # %declare'd terminals (no pattern; produced by a post-lexer)
    lazy: object = field(default=None, compare=False)  # an earley.LazyRules: nonterminals made on demand
    # terminals whose lexemes may not repeat (as JSON string values) within one run of
    # lexemes that are them or ``distinct_keep`` terminals (JSON uniqueItems: guided/grammars/distinct.py)
    distinct: tuple[str, ...] = ()
    distinct_keep: tuple[str, ...] = ()


# Lark's own terminals that use lookbehind / lazy repeats, and DFA equivalents.  Under
# longest-match lexing a lazy "shortest closing quote" match equals a regex whose body
# cannot contain an unescaped closing quote.
_STR_BODY = r"(?:[^{q}\\\n]|\\[^\n])*"
_LONG_BODY = r"(?:[^{q}\\]|\\[\s\S]|{q}(?:[^{q}\\]|\\[\s\S])|{q}{q}(?:[^{q}\\]|\\[\s\S]))*"
_DFA_EQUIVALENTS = {
    # common.ESCAPED_STRING
    r'".*?(?<!\\)(\\\\)*?"': '"' + _STR_BODY.format(q='"') + '"',
    # python.lark STRING (flags i) and LONG_STRING (flags is)
    r'([ubf]?r?|r[ubf])("(?!"").*?(?<!\\)(\\\\)*?"|\'(?!\'\').*?(?<!\\)(\\\\)*?\')': (
        r"([ubf]?r?|r[ubf])(" + '"' + _STR_BODY.format(q='"') + '"|' + "'" + _STR_BODY.format(q="'") + "')"
    ),
    r'([ubf]?r?|r[ubf])(""".*?(?<!\\)(\\\\)*?"""|\'\'\'.*?(?<!\\)(\\\\)*?\'\'\')': (
        r"([ubf]?r?|r[ubf])("
        + '"""' + _LONG_BODY.format(q='"') + '"""|'
        + "'''" + _LONG_BODY.format(q="'") + "''')"
    ),
}


def _line_col(text: str, offset: int) -> tuple[int, int]:
    line = text.count("\n", 0, offset) + 1
    return line, offset - (text.rfind("\n", 0, offset) + 1) + 1


def _locate_use(text: str, name: str) -> tuple[int | None, int | None]:
    """Line/column of the first use of ``name`` that is not its definition."""
    for m in re.finditer(r"(?<![\w.])" + re.escape(name) + r"(?!\w)", text):
        rest = text[m.end() :].lstrip(" \t")
        line_start = text.rfind("\n", 0, m.start()) + 1
        if text[line_start : m.start()].strip(" \t?!_") == "" and (rest[:1] in (":", ".")):
            continue  # the definition itself
        return _line_col(text, m.start())
    return None, None


def _locate_definition(text: str, name: str) -> tuple[int | None, int | None]:
    m = re.search(r"^[ \t]*[?!]?" + re.escape(name) + r"\b", text, re.M)
    if m is None:
        return None, None
    return _line_col(text, m.start() + len(m.group(0)) - len(name))


_FLAG_BITS = {"i": re.IGNORECASE, "s": re.DOTALL, "x": re.VERBOSE, "m": re.MULTILINE, "u": 0, "l": re.LOCALE}


def _terminal_dfa(text: str, tdef) -> TerminalSpec:
    from lark.lexer import PatternStr

    pattern = tdef.pattern
    is_literal = isinstance(pattern, PatternStr)
    if is_literal:
        source = re.escape(pattern.value)
    else:
        source = _DFA_EQUIVALENTS.get(pattern.value, pattern.value)
    flags = 0
    for f in pattern.flags:
        flags |= _FLAG_BITS.get(f, 0)
    try:
        if is_literal and not flags:
            dfa = ByteDFA.literal(pattern.value.encode("utf-8"))
        else:
            dfa = ByteDFA.from_regex(source, flags)
    except EmptyLanguageError:
        line, col = _locate_definition(text, tdef.name)
        raise GrammarError(f"terminal {tdef.name} matches no string", line, col, tdef.name) from None
    except RegexTooLargeError as exc:
        line, col = _locate_definition(text, tdef.name)
        raise GrammarError(f"terminal {tdef.name} is too large to compile: {exc}", line, col, tdef.name) from None
    except RegexError as exc:
        line, col = _locate_definition(text, tdef.name)
        raise GrammarError(f"terminal {tdef.name}: {exc}", line, col, tdef.name) from None
    if dfa.matches_empty:
        line, col = _locate_definition(text, tdef.name)
        raise GrammarError(f"terminal {tdef.name} matches the empty string", line, col, tdef.name)
    return TerminalSpec(tdef.name, source if not is_literal else re.escape(pattern.value), tdef.priority, is_literal, dfa)


def _terminal_pattern(tdef, spec: TerminalSpec) -> TerminalPattern:
    """The terminal as the collision check reads it (flags inline, DFA-friendly regex)."""
    regex = spec.regex
    for flag in sorted(tdef.pattern.flags):
        regex = f"(?{flag}:{regex})"
    first_bytes = frozenset(np.flatnonzero(spec.dfa.row(spec.dfa.start) >= 0).tolist())
    value = tdef.pattern.value if spec.is_literal else None
    return TerminalPattern(tdef.name, regex, tdef.priority, spec.is_literal, value, first_bytes)


def load_lark(text: str, start: str = "start", import_paths: list | None = None, source: str = "<grammar>",
              strict: bool = False) -> GrammarSpec:
    """Parse Lark grammar ``text`` and return its BNF rules and compiled terminals.

    Terminals that collide or can never win warn :class:`~guided.grammars.diagnostics.GrammarWarning`
    (``strict=True``: raise :class:`GrammarError` instead); see ``diagnostics.py``.
    """
    from lark.exceptions import GrammarError as LarkGrammarError
    from lark.exceptions import LarkError, UnexpectedInput
    from lark.load_grammar import load_grammar

    if not isinstance(text, str):
        raise GrammarError("grammar text must be a str")
    original = text
    text, embedded = _cut_embeddings(text)
    try:
        grammar, _ = load_grammar(text, source, import_paths or [], False)
        terminals, rules, ignore = grammar.compile([start], set())
    except UnexpectedInput as exc:
        line, col = getattr(exc, "line", None), getattr(exc, "column", None)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "syntax error"
        raise GrammarError(f"invalid Lark grammar: {first}", line, col) from None
    except LarkGrammarError as exc:
        msg = str(exc)
        m = re.search(r"at line (\d+) column (\d+)", msg)
        if m:
            raise GrammarError(f"invalid Lark grammar: {msg.splitlines()[0]}", int(m.group(1)), int(m.group(2))) from None
        m = re.search(r"(?:Rule|Terminal|Symbol) '?([\w.]+)'? (?:used but not defined|is used but not defined)", msg)
        if m is None:
            m = re.search(r"'([\w.]+)'", msg)
        name = m.group(1) if m else None
        line, col = _locate_use(text, name) if name else (None, None)
        raise GrammarError(f"invalid Lark grammar: {msg.splitlines()[0]}", line, col, name) from None
    except (LarkError, KeyError, IOError) as exc:
        raise GrammarError(f"invalid Lark grammar: {type(exc).__name__}: {exc}") from None
    specs = tuple(_terminal_dfa(text, tdef) for tdef in terminals)
    report(lexer_findings(map(_terminal_pattern, terminals, specs)), strict,
           lambda finding: GrammarError(finding.message, *_locate_definition(text, finding.terminals[0]),
                                        finding.terminals[0]))
    bnf = tuple((r.origin.name, tuple(s.name for s in r.expansion)) for r in rules)
    known = {t.name for t in specs}
    term_uses = {s.name for r in rules for s in r.expansion if s.is_term}
    declared = tuple(sorted(term_uses - known - set(embedded)))
    spec = GrammarSpec(specs, bnf, tuple(ignore), start, declared)
    return _splice(spec, embedded, original) if embedded else spec


# ---------------------------------------------------------------------------------------------
# Embedded languages (%json)
# ---------------------------------------------------------------------------------------------
_EMBEDDINGS: dict[str, Callable[[Any], GrammarSpec]] = {}
_EMBED_RE = re.compile(r"%(json)\b")


def register_embedding(keyword: str, build: Callable[[Any], GrammarSpec]) -> None:
    """Let Lark grammars write ``%keyword <JSON value>``; ``build(value)`` returns its grammar
    (raising a :class:`~guided.constraint.ConstraintError` for a bad value)."""
    _EMBEDDINGS[keyword] = build


class RenamedSpec(NamedTuple):
    """A grammar's parts under new names, for a combined grammar (:func:`rename_spec`)."""

    start: str
    terminals: list
    rules: list
    ignore: list
    distinct: list  # the combined spec takes these too, so distinct items stay distinct
    distinct_keep: list


def rename_spec(spec: GrammarSpec, prefix: str) -> RenamedSpec:
    """``spec`` with every rule and terminal renamed under ``prefix`` (so several grammars share
    one rule set).

        >>> renamed = rename_spec(load_lark('start: "a"+'), "x0")
        >>> renamed.start
        'x0_start'
    """
    if spec.declared:
        raise GrammarError(f"an embedded grammar cannot declare terminals ({', '.join(spec.declared)})")
    if spec.lazy is not None:
        # lazy families (sets of properties or enum items written) name their states by the
        # grammar's own symbols: a renamed copy of the rules alone would lose them
        raise GrammarError("an embedded grammar cannot hold lazy families: JSON Schema uniqueItems over "
                           "enum values and order-free objects are not supported inside another grammar")
    terminal_names = {t.name for t in spec.terminals}

    def name(sym: str) -> str:
        return f"{prefix.upper()}_{sym}" if sym in terminal_names else f"{prefix.lower()}_{sym}"

    terminals = [replace(t, name=name(t.name)) for t in spec.terminals]
    rules = [(name(lhs), tuple(name(s) for s in rhs)) for lhs, rhs in spec.rules]
    return RenamedSpec(name(spec.start), terminals, rules, [name(n) for n in spec.ignore],
                       [name(n) for n in spec.distinct], [name(n) for n in spec.distinct_keep])


def _cut_embeddings(text: str) -> tuple[str, dict[str, tuple[str, Any, int]]]:
    """``text`` with each ``%json <value>`` replaced by a declared terminal, and what each stood
    for: placeholder -> (keyword, value, offset in the original text)."""
    if "%" not in text:
        return text, {}
    out, embedded, pos = [], {}, 0
    decoder = json.JSONDecoder()
    for m in _EMBED_RE.finditer(text):
        if m.start() < pos or _in_comment_or_string(text, m.start()):
            continue
        value_at = m.end()
        while value_at < len(text) and text[value_at] in " \t":
            value_at += 1
        try:
            value, end = decoder.raw_decode(text, value_at)
        except json.JSONDecodeError as exc:
            line, col = _line_col(text, value_at)
            raise GrammarError(f"%{m.group(1)} must be followed by a JSON value: {exc.msg}", line, col) from None
        placeholder = f"_GUIDED_EMBED_{len(embedded)}"
        embedded[placeholder] = (m.group(1), value, m.start())
        out.append(text[pos : m.start()] + placeholder)
        pos = end
    if not embedded:
        return text, {}
    out.append(text[pos:])
    declare = "".join(f"\n%declare {p}" for p in embedded)
    return "".join(out) + declare + "\n", embedded


def _in_comment_or_string(text: str, at: int) -> bool:
    line_start = text.rfind("\n", 0, at) + 1
    before = text[line_start:at]
    return "//" in before or before.count('"') % 2 == 1


def _line_col(text: str, at: int) -> tuple[int, int]:
    line = text.count("\n", 0, at) + 1
    return line, at - (text.rfind("\n", 0, at) + 1) + 1


def _splice(spec: GrammarSpec, embedded: dict, text: str) -> GrammarSpec:
    """Replace each embedding's placeholder terminal by the start rule of its grammar."""
    terminals, rules, ignore = list(spec.terminals), list(spec.rules), list(spec.ignore)
    distinct, keep = list(spec.distinct), list(spec.distinct_keep)
    starts = {}
    for i, (placeholder, (keyword, value, at)) in enumerate(embedded.items()):
        build = _EMBEDDINGS.get(keyword)
        if build is None:
            line, col = _line_col(text, at)
            raise GrammarError(f"%{keyword} needs its front end: import guided.json_schema first"
                               if keyword == "json" else f"unknown embedding %{keyword}", line, col)
        try:
            inner = rename_spec(build(value), f"embed{i}")
        except ConstraintError as exc:
            line, col = _line_col(text, at)
            raise GrammarError(f"%{keyword}: {exc}", line, col) from None
        starts[placeholder] = inner.start
        terminals += inner.terminals
        rules += inner.rules
        ignore += inner.ignore
        distinct += inner.distinct
        keep += inner.distinct_keep
    rules = [(lhs, tuple(starts.get(s, s) for s in rhs)) for lhs, rhs in rules]
    return GrammarSpec(tuple(terminals), tuple(rules), tuple(ignore), spec.start, spec.declared, None,
                       tuple(distinct), tuple(keep))


def read_lark_file(path) -> str:
    """Text of a ``.lark`` file (a helper for ``Grammar.from_file``)."""
    return Path(path).read_text(encoding="utf-8")
