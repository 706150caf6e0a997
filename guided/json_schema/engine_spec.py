"""Automata for the JSON Schema compiler's terminals, built from their languages directly.

The compiler describes every string and number value as a language over code points
(:mod:`guided.json_schema.regex`).  Writing that language out as regex text and
compiling the text again (parse, Thompson NFA, subset construction, UTF-8 expansion,
minimisation) cost most of a schema's compile time: a property-name complement or a
``maxLength: 500`` string took 0.1-3 s, ``maxLength: 4096`` minutes.  Here a terminal is
a :class:`~guided.grammars.lazy_bytedfa.LazyByteDFA` over the language's code-point
automaton, spelled in JSON and UTF-8 state by state as the lexer reaches it:

    >>> dfa = json_string_dfa(rx.with_length(rx.ANY_STRING, 0, 20))
    >>> dfa.matches('"héllo\\n"'.encode())
    True

The code-point automaton is the language's minimal DFA when one is at hand (languages made
by DFA operations or from word lists keep theirs, see ``rx.dfa_of``), else its regex
derivatives, made one state at a time (a counted repeat is never expanded).  The result accepts exactly what
``ByteDFA.from_regex`` of ``rx.json_string_regex(n)`` (or ``rx.plain_regex(n)``) accepts;
the tests compare the two.
"""

from __future__ import annotations

import functools
import re
from typing import TYPE_CHECKING, Hashable

from guided.json_schema import regex as rx
from guided.grammars.bytedfa import ByteDFA, RegexError, _clip
from guided.json_schema.families import COMMA, SchemaFamilies
from guided.json_schema.grammar import WHITESPACE, family_symbol, terminal_regex
from guided.json_schema.ir import UnsupportedSchemaError
from guided.grammars.lark_loader import GrammarError, GrammarSpec, TerminalSpec
from guided.grammars.lazy_bytedfa import LazyByteDFA

if TYPE_CHECKING:
    from guided.json_schema.grammar import SchemaGrammar

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
        return _dfa_segments(self.d, s, self.live)


def _dfa_segments(d: "rx.DFA", s: int, keep) -> list:
    """State ``s``'s transitions as merged code-point segments, to the targets ``t`` with ``keep[t]`` true."""
    atoms = d.part.atoms
    return _merged([(lo, hi, t) for a, t in enumerate(d.trans[s]) if keep[t] for lo, hi in atoms[a].ranges])


class _CountedDFA:
    """Code-point source of a kept length limit (``rx.Counted``) over the inner language's
    minimal DFA: a state is ``(q, c)``, DFA state and characters read.

    ``(q, c)`` is live when some completion of ``q`` has a length in ``[lo - c, hi - c]``;
    the completion lengths of every ``q`` are bit sets computed once.  Table look-ups per
    state, where regex derivatives of the limited pattern cost a tree walk per character.
    """

    MAX_WORK = 300_000  # DFA states x limit: past this the bit sets cost more than derivatives save

    def __init__(self, n: "rx.Counted"):
        d = rx.dfa_of(n.node)
        if len(d.trans) * (n.hi + 1) > self.MAX_WORK:
            raise rx.RegexUnsupported("a length limit on too large an automaton")
        self.d, self.lo, self.hi = d, n.lo, n.hi
        self.comp = _completion_lengths(d, n.hi)
        self._segs: dict = {}  # q -> [(lo, hi, target)] over targets that can still accept
        self.start = (0, 0)
        if not self._live(0, 0):
            raise rx.RegexUnsupported("the language is empty")

    def _live(self, q: int, c: int) -> bool:
        window = self.comp[q] & ((1 << (self.hi - c + 1)) - 1)  # lengths <= hi - c
        return bool(window >> max(self.lo - c, 0))

    def accepting(self, key: tuple) -> bool:
        q, c = key
        return self.d.accept[q] and self.lo <= c <= self.hi

    def segments(self, key: tuple) -> list:
        q, c = key
        if c >= self.hi:
            return []
        segs = self._segs.get(q)
        if segs is None:
            segs = self._segs[q] = _dfa_segments(self.d, q, self.comp)  # targets with any completion
        return [(lo, hi, (t, c + 1)) for lo, hi, t in segs if self._live(t, c + 1)]


def _completion_lengths(d: "rx.DFA", limit: int) -> list:
    """Per DFA state, the lengths (up to ``limit``) of the words that lead it to acceptance."""
    full = (1 << (limit + 1)) - 1
    succ = [sorted(set(row)) for row in d.trans]
    comp = [1 if acc else 0 for acc in d.accept]
    for _ in range(limit):  # round r settles every length <= r
        new = [(comp[q] | ((_or_of(comp, succ[q]) << 1) & full)) for q in range(len(comp))]
        if new == comp:
            break
        comp = new
    return comp


def _or_of(bits: list, idx: list) -> int:
    out = 0
    for i in idx:
        out |= bits[i]
    return out


class _Derivatives:
    """Code-point source whose states are regex derivatives (Brzozowski), made on demand.

    A state is the language left after the characters read, as a node; alternatives are
    flattened, deduplicated and sorted so equal residuals are one state.  Nothing is
    expanded up front: ``.{0,65535}`` costs one state per character actually read (an NFA
    would hold 65,535 copies before the first one).  Regexes here have no intersection or
    complement, so a residual's emptiness is syntactic and every state given out is live.
    """

    def __init__(self, n: rx.Node):
        if not _nonempty(n):
            raise rx.RegexUnsupported("the language is empty")
        sets: list = []
        rx._charsets(n, sets)
        self.part = rx._Partition(sets)
        self._atoms: dict = {}  # char set -> its atoms
        self._memo: dict = {}  # (node, atom) -> derivative
        self.start = n

    def accepting(self, n: rx.Node) -> bool:
        return _nullable(n)

    def segments(self, n: rx.Node) -> list:
        atoms = self.part.atoms
        segs = []
        for a in range(len(atoms)):
            d = self._derive(n, a)
            if d != rx.NOTHING and _nonempty(d):
                segs.extend((lo, hi, d) for lo, hi in atoms[a].ranges)
        return _merged(segs)

    def _derive(self, n: rx.Node, a: int) -> rx.Node:
        key = (n, a)
        d = self._memo.get(key)
        if d is None:
            d = self._memo[key] = self._derivative(n, a)
        return d

    def _derivative(self, n: rx.Node, a: int) -> rx.Node:
        if isinstance(n, rx.Chars):
            atoms = self._atoms.get(n.cs)
            if atoms is None:
                atoms = self._atoms[n.cs] = self.part.atoms_of(n.cs)
            return rx.EMPTY if a in atoms else rx.NOTHING
        if isinstance(n, rx.Seq):
            if not n.parts:
                return rx.NOTHING
            first, rest = n.parts[0], rx.seq(*n.parts[1:])
            d = rx.seq(self._derive(first, a), rest)
            if _nullable(first):
                d = _union(d, self._derive(rest, a))
            return d
        if isinstance(n, rx.Alt):
            return _union(*(self._derive(o, a) for o in n.options))
        if isinstance(n, rx.Rep):
            if n.hi == 0:
                return rx.NOTHING
            d = self._derive(n.node, a)
            if d == rx.NOTHING:
                return rx.NOTHING
            lo = 0 if _nullable(n.node) else max(n.lo - 1, 0)  # x{2,} with '' in x is x*
            return rx.seq(d, rx.rep(n.node, lo, None if n.hi is None else n.hi - 1))
        if isinstance(n, rx.Counted):  # one character read: one fewer to come
            return rx.counted(self._derive(n.node, a), n.lo - 1, n.hi - 1)
        raise rx.RegexUnsupported(f"{type(n).__name__} in a string language")


def _union(*options: rx.Node) -> rx.Node:
    """Alternation in a canonical order (so equal residuals are equal nodes)."""
    u = rx.alt(*options)
    if isinstance(u, rx.Alt) and len(u.options) > 1:
        u = rx.Alt(tuple(sorted(u.options, key=hash)))
    return u


def _nullable(n: rx.Node) -> bool:
    return rx.min_len(n) == 0


@functools.lru_cache(maxsize=65536)
def _nonempty(n: rx.Node) -> bool:
    """Does ``n`` match any string?  (Exact: no intersection or complement in these trees.)"""
    if isinstance(n, rx.Chars):
        return bool(n.cs)
    if isinstance(n, rx.Seq):
        return all(_nonempty(p) for p in n.parts)
    if isinstance(n, rx.Alt):
        return any(_nonempty(o) for o in n.options)
    if isinstance(n, rx.Rep):
        return n.lo == 0 or _nonempty(n.node)
    if isinstance(n, rx.Counted):
        return rx.min_len(n) is not None  # exact: min_len counts the lengths of the words
    return True


def _source(n: rx.Node):
    """The language's minimal DFA when one is at hand (or, for a kept length limit, its
    inner language's with a counter), else its derivatives."""
    known = rx._KNOWN.get(n)
    if known is not None:
        return _ExplicitDFA(known)
    if isinstance(n, rx.Counted):
        try:
            return _CountedDFA(n)
        except rx.RegexUnsupported:
            pass
    return _Derivatives(n)


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
            out = [(lo, hi, ("s", t)) for a, b in _RAW for lo, hi, t in _clip(segs, a, b, 0)]
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


@functools.lru_cache(maxsize=64)
def _regex_dfa(regex: str) -> ByteDFA:
    return ByteDFA.from_regex(regex)


def terminal_dfa(source: tuple) -> ByteDFA:
    """The automaton of one schema terminal (``source`` as recorded by the schema compiler's
    ``terminal``), from its language.  A language the automata here refuse (an empty one,
    or one with an anchor left in it; the compiler prevents both) goes through its regex
    text and the regex compiler, whose errors name the terminal's keyword."""
    kind, value = source
    try:
        if kind in ("json", "distinct"):
            return json_string_dfa(value)
        if kind in ("plain", "distinct-plain"):
            return plain_dfa(value)
        if kind == "regex":
            return _regex_dfa(value)
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
    if grammar.whitespace == "flexible":
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
    lazy = None
    if any(grammar.families):
        def family_symbol_of(sym: str) -> str:
            return symbol(family_symbol(sym, grammar.whitespace))

        for fam in filter(None, grammar.families):  # their punctuation terminals exist before the lexer is built
            for sym in fam.punctuation():
                family_symbol_of(sym)
        lazy = SchemaFamilies(grammar.families, family_symbol_of)
    distinct: tuple = ()
    keep: tuple = ()
    if grammar.distinct:
        # an array's items are one run of lexemes: items, separators and whitespace between them
        distinct = tuple(sorted(grammar.distinct))
        names = {t.name for t in terminals}
        commas = (_PUNCTUATION[","], family_symbol(COMMA, "bounded"))  # the comma's names in every whitespace mode
        keep = tuple(n for n in (*commas, *ignore) if n in names)
    return GrammarSpec(tuple(terminals), tuple(dict.fromkeys(rules)), ignore, "start", (), lazy, distinct, keep)
