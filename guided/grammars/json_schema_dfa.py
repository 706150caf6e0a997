"""Automata for the JSON Schema compiler's terminals, built from their languages directly.

The compiler describes every string and number value as a language over code points
(:mod:`guided.grammars.json_schema_regex`).  Writing that language out as regex text and
compiling the text again (parse, Thompson NFA, subset construction, UTF-8 expansion,
minimisation) cost most of a schema's compile time: a property-name complement or a
``maxLength: 500`` string took 0.1-3 s, ``maxLength: 4096`` minutes.  Here a terminal is
a :class:`~guided.grammars.lazy_bytedfa.LazyByteDFA` over the language's code-point
automaton, spelled in JSON and UTF-8 state by state as the lexer reaches it:

    >>> dfa = json_string_dfa(rx.with_length(rx.ANY_STRING, 0, 20))
    >>> dfa.matches('"héllo\\n"'.encode())
    True

The code-point automaton is the language's minimal DFA when one is at hand (languages made
by DFA operations or from word lists keep theirs, see ``rx.dfa_of``), else the subset
construction of its NFA, made one state at a time.  The result accepts exactly what
``ByteDFA.from_regex`` of ``rx.json_string_regex(n)`` (or ``rx.plain_regex(n)``) accepts;
the tests compare the two.
"""

from __future__ import annotations

import functools
import re
from typing import TYPE_CHECKING, Hashable

from guided.grammars import json_schema_regex as rx
from guided.grammars.bytedfa import ByteDFA, RegexError
from guided.grammars.json_schema_grammar import WHITESPACE, terminal_regex
from guided.grammars.json_schema_ir import UnsupportedSchemaError
from guided.grammars.lark_loader import GrammarError, GrammarSpec, TerminalSpec
from guided.grammars.lazy_bytedfa import LazyByteDFA

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
_SHORT_SLOT = {letter: _ESCAPABLE.index(cp) for letter, cp in _SHORT.items()}  # letter -> slot in _ESCAPABLE
_ZERO, _ONE, _U = ord("0"), ord("1"), ord("u")


def _merged(segs: list) -> list:
    """Sorted segments with neighbours that share a target joined."""
    segs.sort()
    out: list = []
    for lo, hi, k in segs:
        if out and out[-1][2] == k and out[-1][1] + 1 == lo:
            out[-1] = (out[-1][0], hi, k)
        else:
            out.append((lo, hi, k))
    return out


class _ExplicitDFA:
    """Code-point source over a complete DFA of ``rx`` (its live states only)."""

    def __init__(self, d: "rx.DFA"):
        self.d = d
        self.live = d.live()
        if not self.live[0]:
            raise rx.RegexUnsupported("the language is empty")
        self.start = 0

    def accepting(self, s: int) -> bool:
        return self.d.accept[s]

    def segments(self, s: int) -> list:
        atoms, live = self.d.part.atoms, self.live
        return _merged([(lo, hi, t) for a, t in enumerate(self.d.trans[s]) if live[t] for lo, hi in atoms[a].ranges])


class _Subsets:
    """Code-point source: the subset construction of a language's NFA, a state at a time.

    States are sets of NFA states that can still reach the final one, so every state is
    live; nothing is minimised (a counted repeat is a chain either way).
    """

    def __init__(self, n: rx.Node):
        sets: list = []
        rx._charsets(n, sets)
        self.part = rx._Partition(sets)
        nfa = self.nfa = rx._NFA(self.part)
        s0, self.final = nfa.state(), nfa.state()
        nfa.build(n, s0, self.final)
        back: list[list[int]] = [[] for _ in nfa.eps]
        for a, outs in enumerate(nfa.eps):
            for b in outs:
                back[b].append(a)
        for a, edges in enumerate(nfa.edges):
            for atoms, b in edges:
                if atoms:
                    back[b].append(a)
        live = [False] * len(back)
        live[self.final] = True
        stack = [self.final]
        while stack:
            for a in back[stack.pop()]:
                if not live[a]:
                    live[a] = True
                    stack.append(a)
        self.live = live
        self._closures: dict[frozenset, frozenset] = {}
        self.start = self._closure(frozenset([s0]))
        if not self.start:
            raise rx.RegexUnsupported("the language is empty")

    def _closure(self, states: frozenset) -> frozenset:
        hit = self._closures.get(states)
        if hit is None:
            live = self.live
            hit = self._closures[states] = frozenset(x for x in self.nfa.closure(states) if live[x])
        return hit

    def accepting(self, key: frozenset) -> bool:
        return self.final in key

    def segments(self, key: frozenset) -> list:
        moves: dict[int, set] = {}
        live, edges = self.live, self.nfa.edges
        for st in key:
            for atoms, dst in edges[st]:
                if live[dst]:
                    for a in atoms:
                        moves.setdefault(a, set()).add(dst)
        atoms = self.part.atoms
        segs = []
        for a, dsts in moves.items():
            t = self._closure(frozenset(dsts))
            segs.extend((lo, hi, t) for lo, hi in atoms[a].ranges)
        return _merged(segs)


def _source(n: rx.Node):
    """The language's minimal DFA when one is at hand, else its lazy subset construction."""
    known = rx._KNOWN.get(n)
    return _ExplicitDFA(known) if known is not None else _Subsets(n)


def _clip(segs: list, ranges) -> list:
    """``segs`` restricted to the union of sorted ``ranges``."""
    out = []
    for lo, hi, t in segs:
        for a, b in ranges:
            a, b = max(a, lo), min(b, hi)
            if a <= b:
                out.append((a, b, t))
    return out


class _JSONSpelling:
    """Code-point source of the JSON string literals of a decoded language ``inner``.

    Keys: ``("q",)`` before the opening quote, ``("f",)`` after the closing one,
    ``("s", k)`` inside the string in ``inner``'s state ``k``; escape states carry the
    targets of every escapable character (so equal escape states are one state):
    ``("e", t)`` after a backslash, ``("u", t)``/``("u0", t)``/``("u00", t)`` inside
    ``\\u00``, ``("x", t, base)`` before the last hex digit of a control character.
    """

    def __init__(self, inner):
        self.inner = inner
        self.start = ("q",)

    def accepting(self, key: tuple) -> bool:
        return key[0] == "f"

    def segments(self, key: tuple) -> list:
        kind = key[0]
        if kind == "q":
            return [(_QUOTE, _QUOTE, ("s", self.inner.start))]
        if kind == "s":
            segs = self.inner.segments(key[1])
            targets: list = [None] * (_BACKSLASH + 1)  # where each escapable code point leads
            for lo, hi, t in segs:
                if lo > _BACKSLASH:
                    break
                for cp in range(lo, min(hi, _BACKSLASH) + 1):
                    targets[cp] = t
            out = [(lo, hi, ("s", t)) for lo, hi, t in _clip(segs, _RAW)]
            if self.inner.accepting(key[1]):
                out.append((_QUOTE, _QUOTE, ("f",)))
            escaped = tuple(targets[cp] for cp in _ESCAPABLE)
            if any(t is not None for t in escaped):
                out.append((_BACKSLASH, _BACKSLASH, ("e", escaped)))
            out.sort()
            return out
        if kind == "f":
            return []
        t = key[1]  # targets of the _ESCAPABLE characters, in that order
        if kind == "e":
            out = [(letter, letter, ("s", t[i])) for letter, i in _SHORT_SLOT.items() if t[i] is not None]
            if any(x is not None for x in t[:32]):
                out.append((_U, _U, ("u", t)))
            out.sort()
            return out
        if kind == "u":
            return [(_ZERO, _ZERO, ("u0", t))]
        if kind == "u0":
            return [(_ZERO, _ZERO, ("u00", t))]
        if kind == "u00":
            return [(d, d, ("x", t, base)) for d, base in ((_ZERO, 0), (_ONE, 16))
                    if any(x is not None for x in t[base : base + 16])]
        base = key[2]  # "x"
        return sorted((byte, byte, ("s", t[base + v])) for byte, v in _HEX if t[base + v] is not None)


@functools.lru_cache(maxsize=1024)
def plain_dfa(n: rx.Node) -> LazyByteDFA:
    """The UTF-8 words of ``n`` (what ``rx.plain_regex(n)`` matches), built as read."""
    return LazyByteDFA(_source(n), "<language>")


@functools.lru_cache(maxsize=1024)
def json_string_dfa(n: rx.Node) -> "LazyByteDFA | ByteDFA":
    """JSON string literals (quotes included) whose decoded value is a word of ``n``, in
    the spellings ``rx.json_string_regex(n)`` accepts, built as read."""
    if n == rx.ANY_STRING:  # every spelling: one shared regex, compiled once per process
        return ByteDFA.from_regex(rx.json_string_regex(n))
    return LazyByteDFA(_JSONSpelling(_source(n)), "<JSON string language>")


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
