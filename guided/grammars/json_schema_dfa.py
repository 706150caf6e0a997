"""Byte DFAs for the JSON Schema compiler's terminals, built from their languages directly.

The compiler describes every string and number value as a language over code points
(:mod:`guided.grammars.json_schema_regex`).  Writing that language out as regex text and
compiling the text again (parse, Thompson NFA, subset construction, UTF-8 expansion,
minimisation) cost most of a schema's compile time: a property-name complement or a
``maxLength: 500`` string took 0.1-3 s.  Here the language's minimal code-point DFA is
spelled out in bytes in one pass instead:

    >>> dfa = json_string_dfa(rx.with_length(rx.ANY_STRING, 0, 20))
    >>> dfa.matches('"héllo\\\\n"'.encode())
    True

The result accepts exactly what ``ByteDFA.from_regex`` of ``rx.json_string_regex(n)`` (or
``rx.plain_regex(n)``) accepts; the tests compare the two.  It is trimmed (every state can
still accept) but not always minimal: a few escape states may be equivalent, which costs
a lexer state, never a wrong answer.  A language whose code-point DFA is too large
raises :class:`~guided.grammars.json_schema_regex.RegexUnsupported`; the caller then
compiles the regex text.
"""

from __future__ import annotations

import functools
import re
from typing import TYPE_CHECKING

from guided.grammars import json_schema_regex as rx
from guided.grammars.bytedfa import ByteDFA, RegexError
from guided.grammars.json_schema_grammar import WHITESPACE, terminal_regex
from guided.grammars.json_schema_ir import UnsupportedSchemaError
from guided.grammars.lark_loader import GrammarError, GrammarSpec, TerminalSpec

if TYPE_CHECKING:
    from guided.grammars.json_schema_grammar import SchemaGrammar

__all__ = ["json_string_dfa", "plain_dfa", "terminal_dfa", "engine_spec"]

_QUOTE, _BACKSLASH = 0x22, 0x5C
# raw characters allowed inside a JSON string: everything but controls, '"' and '\'
_RAW = ((0x20, 0x21), (0x23, 0x5B), (0x5D, rx.MAX_CP))
# short escape letter -> the character it stands for (the spellings rx._json_char writes)
_SHORT = {ord('"'): 0x22, ord("\\"): 0x5C, ord("/"): 0x2F, ord("b"): 0x08, ord("f"): 0x0C,
          ord("n"): 0x0A, ord("r"): 0x0D, ord("t"): 0x09}
_HEX = [(ord(c), int(c, 16)) for c in "0123456789abcdefABCDEF"]
_ESCAPABLE = tuple(range(0x20)) + (0x22, 0x2F, 0x5C)


def _segments(d: "rx.DFA", live: list[bool], index: dict[int, int]) -> list[list[tuple[int, int, int]]]:
    """Code-point segments ``(lo, hi, new target id)`` of every live state, sorted and merged."""
    atoms = d.part.atoms
    out = []
    for s in index:
        segs = []
        for a, t in enumerate(d.trans[s]):
            if live[t]:
                k = index[t]
                segs.extend((lo, hi, k) for lo, hi in atoms[a].ranges)
        segs.sort()
        merged: list = []
        for lo, hi, k in segs:
            if merged and merged[-1][2] == k and merged[-1][1] + 1 == lo:
                merged[-1] = (merged[-1][0], hi, k)
            else:
                merged.append((lo, hi, k))
        out.append(merged)
    return out


def _minimal_dfa(n: rx.Node) -> tuple[list, list[bool]]:
    """``(segments, accepting)`` of the live states of ``n``'s minimal DFA, start first."""
    d = rx.dfa_of(n)
    live = d.live()
    if not live[0]:
        return [], []
    index: dict[int, int] = {}
    order = [0]
    index[0] = 0
    i = 0
    while i < len(order):  # breadth first from the start, live states only
        for t in d.trans[order[i]]:
            if live[t] and t not in index:
                index[t] = len(order)
                order.append(t)
        i += 1
    return _segments(d, live, index), [d.accept[s] for s in index]


def _clip(segs: list, ranges) -> list:
    """``segs`` restricted to the union of sorted ``ranges``."""
    out = []
    for lo, hi, t in segs:
        for a, b in ranges:
            a, b = max(a, lo), min(b, hi)
            if a <= b:
                out.append((a, b, t))
    return out


@functools.lru_cache(maxsize=512)
def plain_dfa(n: rx.Node) -> ByteDFA:
    """The UTF-8 words of ``n`` (what ``rx.plain_regex(n)`` matches) as a byte DFA."""
    segs, acc = _minimal_dfa(n)
    if not segs:
        raise rx.RegexUnsupported("the language is empty")
    return ByteDFA.from_code_points(segs, acc, "<number language>")


@functools.lru_cache(maxsize=512)
def json_string_dfa(n: rx.Node) -> ByteDFA:
    """JSON string literals (quotes included) whose decoded value is a word of ``n``, in
    the spellings ``rx.json_string_regex(n)`` accepts."""
    if n == rx.ANY_STRING:  # every spelling: one shared regex, compiled once per process
        return ByteDFA.from_regex(rx.json_string_regex(n))
    segs, acc = _minimal_dfa(n)
    if not segs:
        raise rx.RegexUnsupported("the language is empty")
    # states: 0 before the opening quote, 1 after the closing one, then the language's
    # states (2 + s), then escape states made on demand
    m = len(segs)
    rows: list[list] = [[(_QUOTE, _QUOTE, 2)], []]
    accepting = [False, True]
    rows.extend([] for _ in range(m))
    accepting.extend(False for _ in range(m))

    shared: dict[tuple, int] = {}

    def new_state(row: list) -> int:
        """An escape state with this row; states with equal rows are one (they are equivalent)."""
        key = tuple(row)
        q = shared.get(key)
        if q is None:
            q = shared[key] = len(rows)
            rows.append(row)
            accepting.append(False)
        return q

    def hex_digit(targets: list, lo: int) -> int | None:
        """State after ``\\u00`` + the digit choosing controls ``lo..lo+15``: one hex digit left."""
        row = sorted((byte, byte, 2 + targets[lo + v]) for byte, v in _HEX if targets[lo + v] is not None)
        return new_state(row) if row else None

    def escapes(targets: tuple) -> int | None:
        """The state after a backslash, given where each escapable character leads."""
        esc = [(letter, letter, 2 + targets[cp]) for letter, cp in _SHORT.items() if targets[cp] is not None]
        low, high = hex_digit(targets, 0x00), hex_digit(targets, 0x10)
        if low is not None or high is not None:
            digits = [(ord(d), ord(d), q) for d, q in (("0", low), ("1", high)) if q is not None]
            u00 = new_state(digits)
            u0 = new_state([(ord("0"), ord("0"), u00)])
            esc.append((ord("u"), ord("u"), new_state([(ord("0"), ord("0"), u0)])))
        return new_state(sorted(esc)) if esc else None

    escape_of: dict[tuple, int | None] = {}
    for s in range(m):
        s_segs = segs[s]
        targets: list = [None] * (_BACKSLASH + 1)  # where each escapable code point leads
        for lo, hi, t in s_segs:
            if lo > _BACKSLASH:
                break
            for cp in range(lo, min(hi, _BACKSLASH) + 1):
                targets[cp] = t
        key = tuple(targets[cp] for cp in _ESCAPABLE)
        if key not in escape_of:
            escape_of[key] = escapes(targets)
        row = [(lo, hi, 2 + t) for lo, hi, t in _clip(s_segs, _RAW)]
        if acc[s]:
            row.append((_QUOTE, _QUOTE, 1))
        if escape_of[key] is not None:
            row.append((_BACKSLASH, _BACKSLASH, escape_of[key]))
        row.sort()
        rows[2 + s] = row
    return ByteDFA.from_code_points(rows, accepting, "<JSON string language>")


# -- the engine's grammar for a compiled schema ------------------------------------------------

# names Lark gives these literals (shown in parser errors and the diffusion checker)
_PUNCTUATION = {"{": "LBRACE", "}": "RBRACE", "[": "LSQB", "]": "RSQB", ",": "COMMA", ":": "COLON",
                "true": "TRUE", "false": "FALSE", "null": "NULL"}


@functools.lru_cache(maxsize=4096)
def _literal_dfa(data: bytes) -> ByteDFA:
    return ByteDFA.literal(data)


def terminal_dfa(source: tuple) -> ByteDFA:
    """The automaton of one schema terminal (``source`` as recorded by the schema compiler's
    ``terminal``): from its language, or from its regex text when the language's code-point
    DFA is too large for :mod:`json_schema_regex` (the regex compiler's limits are larger)."""
    kind, value = source
    try:
        if kind == "json":
            return json_string_dfa(value)
        if kind == "plain":
            return plain_dfa(value)
        return _literal_dfa(value)
    except rx.RegexUnsupported:
        return ByteDFA.from_regex(terminal_regex(source))


def engine_spec(grammar: "SchemaGrammar") -> GrammarSpec:
    """The grammar engine's input (BNF rules, terminal automata) for a compiled schema,
    without writing and re-reading Lark text.  Matches ``load_lark(grammar.text)``: same
    rules (optional symbols expanded into alternatives), same terminal languages,
    priorities and ignored whitespace.

    A terminal that cannot be compiled raises :class:`UnsupportedSchemaError` naming the
    schema keyword it comes from.
    """
    terminals: list[TerminalSpec] = []
    for name, source in grammar.terminals.items():
        try:
            dfa = terminal_dfa(source)
        except RegexError as exc:
            origin = grammar.origins.get(name)
            if origin is None:
                raise GrammarError(f"terminal {name}: {exc}", name=name) from None
            raise UnsupportedSchemaError(origin[0], origin[1], f"its regex cannot be compiled: {exc}") from None
        if dfa.matches_empty:  # never made by the compiler; the lexer needs every lexeme non-empty
            raise GrammarError(f"terminal {name} matches the empty string", name=name)
        terminals.append(TerminalSpec(name, "", 0, False, dfa))  # the regex text: grammar.text
    ignore: tuple = ()
    if not grammar.compact:
        terminals.append(TerminalSpec("__IGNORE_0", WHITESPACE, 0, False, ByteDFA.from_regex(WHITESPACE)))
        ignore = ("__IGNORE_0",)
    literals: dict[str, str] = {}

    def symbol(sym: str) -> str:
        if not sym.startswith('"'):
            return sym
        name = literals.get(sym)
        if name is None:
            value = sym[1:-1]
            name = literals[sym] = _PUNCTUATION.get(value, f"__LITERAL_{len(literals)}")
            terminals.append(TerminalSpec(name, re.escape(value), 0, True, _literal_dfa(value.encode("utf-8"))))
        return name

    rules = [("start", (grammar.root,))]
    for lhs, alts in grammar.rules.items():
        for alt in alts:
            variants: list[tuple] = [()]
            for sym in alt:
                if sym.endswith("?"):
                    s = symbol(sym[:-1])
                    variants = [v + (s,) for v in variants] + variants
                else:
                    s = symbol(sym)
                    variants = [v + (s,) for v in variants]
            rules.extend((lhs, v) for v in variants)
    return GrammarSpec(tuple(terminals), tuple(dict.fromkeys(rules)), ignore, "start", ())
