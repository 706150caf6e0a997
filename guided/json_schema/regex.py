"""Regular languages over *decoded* string characters, for the JSON Schema compiler.

JSON Schema constrains the value of a string (``pattern``, ``format``, ``minLength``,
``enum``, property names); the grammar needs a regex over the string's JSON *encoding*
(quotes, escapes).  This module keeps a small regex AST over Unicode code points
(:class:`Chars`, :class:`Seq`, :class:`Alt`, :class:`Rep`), and

* parses ECMA-262 patterns into it (:func:`parse_pattern`, :func:`pattern_language`),
* intersects a language with a length range, counting characters after unescaping
  (:func:`with_length`),
* does Boolean operations through a small DFA (:func:`intersect`, :func:`difference`,
  :func:`complement`, :func:`is_empty`) for property-name regions and ``not``,
* writes the result as one regex over the JSON encoding of the string
  (:func:`json_string_regex`), or as a plain regex (:func:`plain_regex`).

    >>> json_string_regex(with_length(pattern_language("^[a-z]+$"), 1, 8))
    '"[a-z]{1,8}"'

Regex text uses only the portable subset (classes, ``(?:)``, ``|``, ``*+?``, ``{m,n}``,
``\\xHH``), which Python's ``re`` and the byte-DFA builder both read.
"""

from __future__ import annotations

import functools
import heapq
import unicodedata
from collections import OrderedDict
from dataclasses import dataclass

MAX_CP = 0x10FFFF
SURROGATES = (0xD800, 0xDFFF)


class RegexUnsupported(Exception):
    """A pattern uses a feature that has no exact regular-language translation here."""


# ----------------------------------------------------------------------------------
# Character sets: sorted disjoint inclusive code-point intervals (never surrogates).
# ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CharSet:
    ranges: tuple[tuple[int, int], ...]

    @staticmethod
    def of(*items: "str | int | tuple[int, int]") -> "CharSet":
        rs = []
        for it in items:
            if isinstance(it, str):
                rs.extend((ord(c), ord(c)) for c in it)
            elif isinstance(it, int):
                rs.append((it, it))
            else:
                rs.append(it)
        return CharSet.from_ranges(rs)

    @staticmethod
    def from_ranges(rs) -> "CharSet":
        out: list[list[int]] = []
        for lo, hi in sorted(rs):
            # cut out the surrogate block: those code points never occur in UTF-8 text
            pieces = [(lo, hi)]
            if lo <= SURROGATES[1] and hi >= SURROGATES[0]:
                pieces = [(lo, SURROGATES[0] - 1), (SURROGATES[1] + 1, hi)]
            for a, b in pieces:
                if a > b:
                    continue
                if out and a <= out[-1][1] + 1:
                    out[-1][1] = max(out[-1][1], b)
                else:
                    out.append([a, b])
        return CharSet(tuple((a, b) for a, b in out))

    def __or__(self, other: "CharSet") -> "CharSet":
        return CharSet.from_ranges(self.ranges + other.ranges)

    def __and__(self, other: "CharSet") -> "CharSet":
        out = []
        i = j = 0
        a, b = self.ranges, other.ranges
        while i < len(a) and j < len(b):
            lo, hi = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
            if lo <= hi:
                out.append((lo, hi))
            if a[i][1] < b[j][1]:
                i += 1
            else:
                j += 1
        return CharSet(tuple(out))

    def __invert__(self) -> "CharSet":
        out, prev = [], 0
        for lo, hi in self.ranges:
            if lo > prev:
                out.append((prev, lo - 1))
            prev = hi + 1
        if prev <= MAX_CP:
            out.append((prev, MAX_CP))
        return CharSet.from_ranges(out)

    def __sub__(self, other: "CharSet") -> "CharSet":
        return self & ~other

    def __bool__(self) -> bool:
        return bool(self.ranges)

    def __contains__(self, ch: "str | int") -> bool:
        cp = ord(ch) if isinstance(ch, str) else ch
        return any(lo <= cp <= hi for lo, hi in self.ranges)

    def size(self) -> int:
        return sum(hi - lo + 1 for lo, hi in self.ranges)

    def single(self) -> int | None:
        if len(self.ranges) == 1 and self.ranges[0][0] == self.ranges[0][1]:
            return self.ranges[0][0]
        return None


ALL = CharSet.from_ranges([(0, MAX_CP)])
NONE = CharSet(())
DIGIT = CharSet.of((48, 57))
ASCII_WORD = CharSet.of((48, 57), (65, 90), (97, 122), "_")
# ECMA-262 WhiteSpace + LineTerminator
ECMA_SPACE = CharSet.of(
    "\t\n\x0b\x0c\r \xa0\u1680\u2028\u2029\u202f\u205f\u3000\ufeff", (0x2000, 0x200A)
)
ECMA_LINE_TERMINATORS = CharSet.of("\n\r\u2028\u2029")
CONTROL = CharSet.from_ranges([(0, 0x1F)])


@functools.lru_cache(maxsize=1)
def _every_code_point() -> str:
    """Every non-surrogate code point in order (built once: the three classes share it)."""
    return "".join(map(chr, range(SURROGATES[0]))) + "".join(map(chr, range(SURROGATES[1] + 1, MAX_CP + 1)))


@functools.lru_cache(maxsize=None)
def _python_unicode_class(kind: str) -> CharSet:
    """Python ``re``'s Unicode ``\\d``/``\\w``/``\\s`` sets (so ``\\D`` etc. are sound for both dialects).

    Asked of ``re`` itself with one C-level scan over every code point.
    """
    import re

    haystack = _every_code_point()

    def cp(i: int) -> int:
        return i if i < SURROGATES[0] else i + (SURROGATES[1] - SURROGATES[0] + 1)

    ranges = []
    for m in re.finditer("\\" + kind + "+", haystack):
        ranges.append((cp(m.start()), cp(m.end() - 1)))
    return CharSet.from_ranges(ranges)


# ----------------------------------------------------------------------------------
# Regex AST.  Nodes are immutable and hashable so length queries can be memoised.
# ----------------------------------------------------------------------------------


class Node:
    """Immutable regex AST node; the hash is computed once (trees are shared and memoised)."""

    __slots__ = ("_key", "_hash")

    def _init(self, key: tuple) -> None:
        object.__setattr__(self, "_key", key)
        object.__setattr__(self, "_hash", hash(key))

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other) -> bool:
        if self is other:
            return True
        return type(self) is type(other) and self._hash == other._hash and self._key == other._key

    def __setattr__(self, name, value):  # pragma: no cover - immutability guard
        raise AttributeError("regex nodes are immutable")

    def __repr__(self) -> str:
        return f"{type(self).__name__}{self._key!r}"


class Chars(Node):
    __slots__ = ()

    def __init__(self, cs: CharSet):
        self._init((cs,))

    @property
    def cs(self) -> CharSet:
        return self._key[0]


class Seq(Node):
    __slots__ = ()

    def __init__(self, parts: tuple):
        self._init(tuple(parts))

    @property
    def parts(self) -> tuple:
        return self._key


class Alt(Node):
    __slots__ = ()

    def __init__(self, options: tuple):
        self._init(tuple(options))

    @property
    def options(self) -> tuple:
        return self._key


class _Bounded(Node):
    """A node over one inner node with two bounds: ``(node, lo, hi)``."""

    __slots__ = ()

    def __init__(self, node: Node, lo: int, hi: int | None):
        self._init((node, lo, hi))

    @property
    def node(self) -> Node:
        return self._key[0]

    @property
    def lo(self) -> int:
        return self._key[1]

    @property
    def hi(self) -> int | None:  # None: unbounded (a Counted is always bounded)
        return self._key[2]


class Rep(_Bounded):
    """``node`` repeated ``lo`` to ``hi`` times."""

    __slots__ = ()


class Anchor(Node):
    """``^`` or ``$`` (only inside a freshly parsed pattern, see :func:`pattern_language`)."""

    __slots__ = ()

    def __init__(self, kind: str):
        self._init((kind,))

    @property
    def kind(self) -> str:
        return self._key[0]


class Counted(_Bounded):
    """The words of ``node`` whose length (in code points) lies in ``[lo, hi]``.

    :func:`with_length` keeps a length limit as this node when writing the limit into
    the regex would take too large a tree (``^(?:\\S+\\s+){0,29}\\S+$`` with ``maxLength:
    300``); automata then count characters as they read them (its derivative is the
    inner derivative with the bounds lowered by one, see ``engine_spec``).
    """

    __slots__ = ()


EMPTY = Seq(())  # the empty string
NOTHING = Alt(())  # the empty language
ANY_CHAR = Chars(ALL)
ANY_STRING = Rep(ANY_CHAR, 0, None)


def lit(text: str) -> Node:
    return seq(*(Chars(CharSet.of(c)) for c in text))


def seq(*parts: Node) -> Node:
    flat = []
    for p in parts:
        if p == NOTHING:
            return NOTHING
        if isinstance(p, Seq):
            flat.extend(p.parts)
        else:
            flat.append(p)
    if len(flat) == 1:
        return flat[0]
    return Seq(tuple(flat))


def alt(*options: Node) -> Node:
    flat: list[Node] = []
    seen = set()
    charset = NONE
    for o in options:
        for x in o.options if isinstance(o, Alt) else (o,):
            if isinstance(x, Chars):
                charset = charset | x.cs  # merge single characters into one class
            elif x not in seen:
                seen.add(x)
                flat.append(x)
    if charset:
        flat.insert(0, Chars(charset))
    if len(flat) == 1:
        return flat[0]
    return Alt(tuple(flat))


def rep(node: Node, lo: int, hi: int | None) -> Node:
    if hi is not None and hi < lo:
        return NOTHING
    if node == NOTHING:
        return EMPTY if lo == 0 else NOTHING
    if node == EMPTY or hi == 0:
        return EMPTY
    if lo == hi == 1:
        return node
    if isinstance(node, Rep) and node.hi is None and node.lo <= 1 and hi is None:
        # (x*)* = (x+)* = (x*)+ = x*, (x+){k,} = x{k,}
        return Rep(node.node, 0 if node.lo == 0 or lo == 0 else lo, None)
    return Rep(node, lo, hi)


def opt(node: Node) -> Node:
    return rep(node, 0, 1)


def counted(node: Node, lo: int, hi: int) -> Node:
    """The words of ``node`` with length in ``[lo, hi]``, as a :class:`Counted` node only
    when the limit cuts something off (else ``node`` itself, or ``NOTHING``)."""
    if isinstance(node, Counted):
        lo, hi, node = max(lo, node.lo), min(hi, node.hi), node.node
    lo = max(lo, 0)
    if hi < lo:
        return NOTHING
    mn, mx = min_len(node), max_len(node)
    if mn is None or mn > hi or mx < lo:
        return NOTHING
    if mn >= lo and mx <= hi:
        return node
    if not lengths(node, hi) >> lo:
        return NOTHING
    return Counted(node, lo, hi)


def _runs(bits: int):
    """The maximal runs of set bits of ``bits``, as ``(start, width)``."""
    shift = 0
    while bits:
        low = (bits & -bits).bit_length() - 1
        bits >>= low
        shift += low
        width = (bits ^ (bits + 1)).bit_length() - 1  # trailing ones
        yield shift, width
        bits >>= width
        shift += width


def _sumset(a: int, b: int, limit: int) -> int:
    """``{x + y : x in a, y in b}`` as a bit set, cut at ``limit``."""
    if not a or not b:
        return 0
    if (a & ~(a << 1)).bit_count() < (b & ~(b << 1)).bit_count():
        a, b = b, a  # spread the set with more runs over the runs of the other
    full = (1 << (limit + 1)) - 1
    out = 0
    for start, width in _runs(b):
        spread, covered = a << start, 1  # OR of (a << start + k) for k < covered, by doubling
        while covered < width:
            step = min(covered, width - covered)
            spread |= spread << step
            covered += step
        out |= spread & full
    return out


def _sum_power(x: int, k: int, limit: int) -> int:
    """The lengths of ``k`` words of lengths ``x`` (the ``k``-fold sumset), by squaring."""
    out = 1
    while k and out:
        if k & 1:
            out = _sumset(out, x, limit)
        k >>= 1
        if k:
            x = _sumset(x, x, limit)
    return out


@functools.lru_cache(maxsize=65536)
def lengths(n: Node, limit: int) -> int:
    """The lengths of the words of ``n`` up to ``limit``, as a bit set (bit k: a word of length k)."""
    if isinstance(n, Chars):
        return 2 if limit >= 1 and n.cs else 0
    if isinstance(n, Seq):
        acc = 1
        for p in n.parts:
            acc = _sumset(acc, lengths(p, limit), limit)
        return acc
    if isinstance(n, Alt):
        acc = 0
        for o in n.options:
            acc |= lengths(o, limit)
        return acc
    if isinstance(n, Rep):
        x = lengths(n.node, limit)
        first = _sum_power(x, n.lo, limit)  # exactly lo copies
        # up to ``extra`` more: (x plus the empty word) to the power ``extra``; past ``limit``
        # copies of non-empty words every length is beyond the limit
        extra = limit + 1 if n.hi is None else min(n.hi - n.lo, limit + 1)
        return _sumset(first, _sum_power(x | 1, extra, limit), limit)
    if isinstance(n, Counted):
        return lengths(n.node, min(limit, n.hi)) >> n.lo << n.lo
    if isinstance(n, Anchor):
        return 1
    raise TypeError(n)


@functools.lru_cache(maxsize=65536)
def min_len(n: Node) -> int | None:
    """Shortest word length; None for the empty language."""
    if isinstance(n, Chars):
        return 1
    if isinstance(n, Seq):
        total = 0
        for p in n.parts:
            m = min_len(p)
            if m is None:
                return None
            total += m
        return total
    if isinstance(n, Alt):
        ms = [m for m in map(min_len, n.options) if m is not None]
        return min(ms) if ms else None
    if isinstance(n, Rep):
        m = min_len(n.node)
        if m is None:
            return 0 if n.lo == 0 else None
        return m * n.lo
    if isinstance(n, Counted):
        bits = lengths(n, n.hi)
        return (bits & -bits).bit_length() - 1 if bits else None
    if isinstance(n, Anchor):
        return 0
    raise TypeError(n)


INF = float("inf")


@functools.lru_cache(maxsize=65536)
def max_len(n: Node) -> float:
    """Longest word length (``inf`` if unbounded); -1 for the empty language."""
    if isinstance(n, Chars):
        return 1
    if isinstance(n, Seq):
        total = 0
        for p in n.parts:
            m = max_len(p)
            if m < 0:
                return -1
            total += m
        return total
    if isinstance(n, Alt):
        return max((max_len(o) for o in n.options), default=-1)
    if isinstance(n, Rep):
        m = max_len(n.node)
        if m < 0:
            return 0 if n.lo == 0 else -1
        if m == 0:
            return 0
        return INF if n.hi is None else m * n.hi
    if isinstance(n, Counted):
        return lengths(n, n.hi).bit_length() - 1
    if isinstance(n, Anchor):
        return 0
    raise TypeError(n)


def is_empty_language(n: Node) -> bool:
    known = _KNOWN.get(n)  # a language made by a DFA operation: its DFA answers without walking the tree
    if known is not None:
        return known.is_empty()
    return min_len(n) is None


def node_size(n: Node) -> int:
    if isinstance(n, (Seq, Alt)):
        return 1 + sum(node_size(p) for p in (n.parts if isinstance(n, Seq) else n.options))
    if isinstance(n, (Rep, Counted)):
        return 1 + node_size(n.node)
    return 1


# ----------------------------------------------------------------------------------
# ECMA-262 pattern parser
# ----------------------------------------------------------------------------------


class _PatternParser:
    """Recursive-descent parser for ECMA-262 (Annex B, no flags) regular expressions."""

    SYNTAX = set("^$\\.*+?()[]{}|/")

    def __init__(self, text: str, dialect: str = "both"):
        self.text = text
        self.i = 0
        self.union = dialect == "union"

    def error(self, msg: str) -> RegexUnsupported:
        return RegexUnsupported(f"{msg} at offset {self.i} of pattern {self.text!r}")

    def peek(self, k: int = 0) -> str:
        j = self.i + k
        return self.text[j] if j < len(self.text) else ""

    def parse(self) -> Node:
        node = self.disjunction()
        if self.i != len(self.text):
            raise self.error("unbalanced ')'")
        return node

    def disjunction(self) -> Node:
        options = [self.alternative()]
        while self.peek() == "|":
            self.i += 1
            options.append(self.alternative())
        return alt(*options) if len(options) > 1 else options[0]

    def alternative(self) -> Node:
        parts = []
        while self.peek() not in ("", "|", ")"):
            parts.append(self.term())
        return seq(*parts) if parts else EMPTY

    def term(self) -> Node:
        c = self.peek()
        if c == "^":
            self.i += 1
            return Anchor("^")
        if c == "$":
            self.i += 1
            return Anchor("$")
        if c == "\\" and self.peek(1) in ("b", "B"):
            raise self.error("word-boundary assertion \\" + self.peek(1))
        if c == "(" and self.peek(1) == "?" and self.peek(2) in ("=", "!", "<") and not (
            self.peek(2) == "<" and self.peek(3) not in ("=", "!")
        ):
            raise self.error("lookaround assertion")
        atom = self.atom()
        return self.quantified(atom)

    def quantified(self, atom: Node) -> Node:
        c = self.peek()
        lo: int
        hi: int | None
        if c == "*":
            lo, hi = 0, None
            self.i += 1
        elif c == "+":
            lo, hi = 1, None
            self.i += 1
        elif c == "?":
            lo, hi = 0, 1
            self.i += 1
        elif c == "{":
            q = self.braces()
            if q is None:
                return atom
            lo, hi = q
        else:
            return atom
        if self.peek() == "?":  # lazy: same language
            self.i += 1
        if self.peek() in ("*", "+", "?") or (self.peek() == "{" and self._braces_ahead()):
            raise self.error("nothing to repeat")
        if isinstance(atom, Anchor):
            raise self.error("quantified assertion")
        if hi is not None and hi > 100000 or lo > 100000:
            raise self.error("repetition count too large")
        return rep(atom, lo, hi)

    def _braces_ahead(self) -> bool:
        save = self.i
        try:
            return self.braces() is not None
        finally:
            self.i = save

    def braces(self) -> tuple[int, int | None] | None:
        """``{n}``, ``{n,}``, ``{n,m}``; anything else is a literal ``{`` (Annex B)."""
        j = self.i + 1
        t = self.text
        k = j
        while k < len(t) and t[k].isdigit():
            k += 1
        if k == j:
            return None
        lo = int(t[j:k])
        hi: int | None = lo
        if k < len(t) and t[k] == ",":
            k += 1
            m = k
            while k < len(t) and t[k].isdigit():
                k += 1
            hi = int(t[m:k]) if k > m else None
        if k >= len(t) or t[k] != "}":
            return None
        if hi is not None and hi < lo:
            raise self.error("numbers out of order in {} quantifier")
        self.i = k + 1
        return lo, hi

    def atom(self) -> Node:
        c = self.peek()
        if c == "(":
            self.i += 1
            if self.peek() == "?":
                if self.peek(1) == ":":
                    self.i += 2
                elif self.peek(1) == "<":
                    end = self.text.find(">", self.i)
                    if end < 0:
                        raise self.error("bad group name")
                    self.i = end + 1
                elif self.peek(1) == "P" and self.peek(2) == "<":  # Python-style named group
                    end = self.text.find(">", self.i)
                    if end < 0:
                        raise self.error("bad group name")
                    self.i = end + 1
                else:
                    raise self.error("unsupported group syntax (?" + self.peek(1))
            node = self.disjunction()
            if self.peek() != ")":
                raise self.error("missing ')'")
            self.i += 1
            return node
        if c == ".":
            self.i += 1
            return Chars(~CharSet.of("\n") if self.union else ~ECMA_LINE_TERMINATORS)
        if c == "[":
            return Chars(self.char_class())
        if c == "\\":
            self.i += 1
            return Chars(self.escape(in_class=False))
        if c in ("*", "+", "?"):
            raise self.error("nothing to repeat")
        if c == "{" and self._braces_ahead():
            raise self.error("nothing to repeat")
        if c == ")":
            raise self.error("unbalanced ')'")
        self.i += 1
        cp = ord(c)
        if 0xD800 <= cp <= 0xDBFF and 0xDC00 <= ord(self.peek() or "\0") <= 0xDFFF:
            cp = 0x10000 + ((cp - 0xD800) << 10) + (ord(self.peek()) - 0xDC00)
            self.i += 1
        return Chars(CharSet.of(cp))

    def escape(self, in_class: bool) -> CharSet:
        c = self.peek()
        if c == "":
            raise self.error("pattern ends with a backslash")
        self.i += 1
        if c in "dwsDWS":
            ecma = {"d": DIGIT, "w": ASCII_WORD, "s": ECMA_SPACE}[c.lower()]
            py = _python_unicode_class(c.lower())
            if c.islower():
                return (ecma | py) if self.union else (ecma & py)
            return ~(ecma & py) if self.union else ~(ecma | py)
        simple = {"t": "\t", "n": "\n", "v": "\x0b", "f": "\x0c", "r": "\r"}
        if c in simple:
            return CharSet.of(simple[c])
        if c == "b" and in_class:
            return CharSet.of("\x08")
        if c == "0" and not self.peek().isdigit():
            return CharSet.of(0)
        if c.isdigit():
            raise self.error("back-reference")
        if c == "c" and self.peek().isalpha() and self.peek().isascii():
            ch = self.peek()
            self.i += 1
            return CharSet.of(ord(ch) % 32)
        if c == "x":
            h = self.text[self.i : self.i + 2]
            if len(h) == 2 and all(x in "0123456789abcdefABCDEF" for x in h):
                self.i += 2
                return CharSet.of(int(h, 16))
            return CharSet.of("x")
        if c == "u":
            if self.peek() == "{":
                end = self.text.find("}", self.i)
                h = self.text[self.i + 1 : end] if end > 0 else ""
                if h and all(x in "0123456789abcdefABCDEF" for x in h) and int(h, 16) <= MAX_CP:
                    self.i = end + 1
                    return CharSet.of(int(h, 16))
                raise self.error("bad \\u{...} escape")
            h = self.text[self.i : self.i + 4]
            if len(h) == 4 and all(x in "0123456789abcdefABCDEF" for x in h):
                self.i += 4
                cp = int(h, 16)
                if 0xD800 <= cp <= 0xDBFF and self.text[self.i : self.i + 2] == "\\u":
                    h2 = self.text[self.i + 2 : self.i + 6]
                    if len(h2) == 4 and all(x in "0123456789abcdefABCDEF" for x in h2) and 0xDC00 <= int(h2, 16) <= 0xDFFF:
                        self.i += 6
                        return CharSet.of(0x10000 + ((cp - 0xD800) << 10) + (int(h2, 16) - 0xDC00))
                if 0xD800 <= cp <= 0xDFFF:
                    raise self.error("lone surrogate escape")
                return CharSet.of(cp)
            return CharSet.of("u")
        if c in ("p", "P"):
            raise self.error("Unicode property escape \\" + c)
        if c == "k" and self.peek() == "<":
            raise self.error("named back-reference")
        if c.isascii() and c.isalnum():
            # Annex B identity escape of a letter: Python's re rejects most of them, so the
            # two dialects disagree; refuse rather than guess.
            raise self.error(f"unknown escape \\{c}")
        return CharSet.of(c)

    def char_class(self) -> CharSet:
        assert self.peek() == "["
        self.i += 1
        negate = False
        if self.peek() == "^":
            negate = True
            self.i += 1
        acc = NONE
        first = True
        while True:
            c = self.peek()
            if c == "":
                raise self.error("unterminated character class")
            if c == "]" and not (first and False):
                self.i += 1
                break
            first = False
            lo_set, lo_cp = self.class_atom()
            if self.peek() == "-" and self.peek(1) not in ("]", ""):
                save = self.i
                self.i += 1
                hi_set, hi_cp = self.class_atom()
                if lo_cp is None or hi_cp is None:
                    # Annex B: a class escape next to '-' makes the '-' literal
                    acc = acc | lo_set | CharSet.of("-") | hi_set
                    continue
                if lo_cp > hi_cp:
                    self.i = save
                    raise self.error("range out of order in character class")
                acc = acc | CharSet.from_ranges([(lo_cp, hi_cp)])
            else:
                acc = acc | lo_set
        return ~acc if negate else acc

    def class_atom(self) -> tuple[CharSet, int | None]:
        c = self.peek()
        if c == "\\":
            self.i += 1
            nxt = self.peek()
            s = self.escape(in_class=True)
            single = s.single()
            if nxt in "dDwWsS":
                return s, None
            return s, single
        self.i += 1
        cp = ord(c)
        if 0xD800 <= cp <= 0xDBFF and 0xDC00 <= ord(self.peek() or "\0") <= 0xDFFF:
            cp = 0x10000 + ((cp - 0xD800) << 10) + (ord(self.peek()) - 0xDC00)
            self.i += 1
        return CharSet.of(cp), cp


def parse_pattern(text: str, dialect: str = "both") -> Node:
    """Parse an ECMA-262 pattern; the result may contain :class:`Anchor` nodes."""
    return _PatternParser(text, dialect).parse()


def _strip_anchors(n: Node) -> list[tuple[bool, Node, bool]]:
    """Split into top-level alternatives ``(starts_anchored, body, ends_anchored)``."""
    options = n.options if isinstance(n, Alt) else (n,)
    out = []
    for o in options:
        parts = list(o.parts) if isinstance(o, Seq) else [o]
        start = end = False
        while parts and isinstance(parts[0], Anchor) and parts[0].kind == "^":
            parts.pop(0)
            start = True
        while parts and isinstance(parts[-1], Anchor) and parts[-1].kind == "$":
            parts.pop()
            end = True
        # '^' after parts that can only match the empty string (or '$' before such parts)
        # still anchors; after anything else it makes the alternative unsatisfiable
        dead = False
        while any(isinstance(x, Anchor) for x in parts):
            i = next(k for k, x in enumerate(parts) if isinstance(x, Anchor))
            if parts[i].kind == "^":
                if any(min_len(x) != 0 for x in parts[:i]):
                    dead = True
                    break
                parts = parts[i + 1 :]
                start = True
            else:
                if any(min_len(x) != 0 for x in parts[i + 1 :] if not isinstance(x, Anchor)):
                    dead = True
                    break
                parts = parts[:i]
                end = True
        if dead:
            continue
        body = seq(*parts) if parts else EMPTY
        if _has_anchor(body):
            if len(parts) == 1 and isinstance(parts[0], Alt):
                # a group spanning the whole alternative: (^a$|^b$) or ^(a|b$)
                for s2, b2, e2 in _strip_anchors(parts[0]):
                    out.append((start or s2, b2, end or e2))
                continue
            # '$' followed by something non-empty, or '^' preceded by something: only
            # satisfiable if the surrounding parts are empty; refuse instead of guessing.
            raise RegexUnsupported("anchor in the middle of a pattern")
        out.append((start, body, end))
    return out


def _has_anchor(n: Node) -> bool:
    if isinstance(n, Anchor):
        return True
    if isinstance(n, Seq):
        return any(_has_anchor(p) for p in n.parts)
    if isinstance(n, Alt):
        return any(_has_anchor(p) for p in n.options)
    if isinstance(n, Rep):
        return _has_anchor(n.node)
    return False


@functools.lru_cache(maxsize=4096)
def pattern_language(text: str, dialect: str = "both") -> Node:
    """The set of strings in which ``text`` (search semantics) finds a match.

    ECMA-262 (what JSON Schema specifies) and Python's ``re`` (what many validators use)
    differ on ``\\d \\w \\s``, ``.`` and ``$``.  ``dialect="both"`` gives the strings
    matched under *both* readings (sound as a constraint); ``"union"`` the strings
    matched under *either* (its complement is sound, for ``not``).
    """
    parser = _PatternParser(text, dialect)
    tree = parser.parse()
    options = []
    for start, body, end in _strip_anchors(tree):
        tail = EMPTY if end else ANY_STRING
        if end and dialect == "union":
            tail = rep(Chars(CharSet.of("\n")), 0, 1)  # Python's '$' also matches before a final newline
        if (not start or not end) and min_len(body) == 0:
            options.append(ANY_STRING)  # an empty match is found in every string
            continue
        if not start and not end and isinstance(body, Chars):
            # "contains a C": (not C)* C any*, unambiguous (small DFAs, cheap length limits)
            options.append(seq(rep(Chars(ALL - body.cs), 0, None), body, ANY_STRING))
            continue
        options.append(seq(EMPTY if start else ANY_STRING, body, tail))
    return alt(*options)


# ----------------------------------------------------------------------------------
# Length intersection (lengths in code points, as JSON Schema counts them)
# ----------------------------------------------------------------------------------

MAX_LENGTH_EXPANSION = 4000


def with_length(n: Node, lo: int, hi: int | None) -> Node:
    """Words of ``n`` whose length lies in ``[lo, hi]`` (``hi`` None: unbounded)."""
    lo = max(lo, 0)
    mn, mx = min_len(n), max_len(n)
    if mn is None:
        return NOTHING
    if mn >= lo and (hi is None or mx <= hi):
        return n
    if _has_ambiguous_split(n):
        # ".*x.*" of length 12 written out by cases is an alternation whose subset
        # construction blows up (a branch per position of x); the product automaton
        # is small, and its regex determinises without that blow-up
        try:
            return intersect(n, Rep(ANY_CHAR, lo, hi))
        except RegexUnsupported:
            pass
    try:
        return _len(n, lo, hi, [MAX_LENGTH_EXPANSION])
    except RegexUnsupported:
        if hi is None:
            raise
    # Written out, the limit takes too large a tree: keep it as a limit (automata count).
    return counted(n, lo, hi)


def uncounted(n: Node) -> Node:
    """``n`` without the length limits kept as :class:`Counted` nodes (a superset, for text)."""
    if isinstance(n, Counted):
        return uncounted(n.node)
    if isinstance(n, Seq):
        return seq(*map(uncounted, n.parts))
    if isinstance(n, Alt):
        return alt(*map(uncounted, n.options))
    if isinstance(n, Rep):
        return rep(uncounted(n.node), n.lo, n.hi)
    return n


def _has_ambiguous_split(n: Node) -> bool:
    """Whether some sequence has two parts of variable length (so a length splits ambiguously)."""
    if isinstance(n, Seq):
        if sum(1 for p in n.parts if _fixed(p) is None) >= 2:
            return True
        return any(_has_ambiguous_split(p) for p in n.parts)
    if isinstance(n, Alt):
        return any(_has_ambiguous_split(o) for o in n.options)
    if isinstance(n, Rep):
        return _has_ambiguous_split(n.node)
    return False


def _spend(budget: list[int], k: int = 1) -> None:
    budget[0] -= k
    if budget[0] < 0:
        raise RegexUnsupported("length limits on this pattern expand into too large a regex")


def _len(n: Node, lo: int, hi: int | None, budget: list[int]) -> Node:
    lo = max(lo, 0)
    if hi is not None and hi < lo:
        return NOTHING
    mn, mx = min_len(n), max_len(n)
    if mn is None or (hi is not None and mn > hi) or mx < lo:
        return NOTHING
    if mn >= lo and (hi is None or mx <= hi):
        return n
    _spend(budget)
    if isinstance(n, Alt):
        return alt(*(_len(o, lo, hi, budget) for o in n.options))
    if isinstance(n, Rep):
        return _len_rep(n, lo, hi, budget)
    if isinstance(n, Seq):
        return _len_seq(list(n.parts), lo, hi, budget)
    if isinstance(n, Counted):
        return counted(n, lo, n.hi if hi is None else hi)  # counted() meets the two ranges
    raise TypeError(n)  # Chars/EMPTY are always handled by the bounds test above


def _fixed(n: Node) -> int | None:
    mn = min_len(n)
    return mn if mn is not None and max_len(n) == mn else None


def _len_rep(n: Rep, lo: int, hi: int | None, budget: list[int]) -> Node:
    x = n.node
    w = _fixed(x)
    if w is not None and w > 0:
        k_lo = max(n.lo, -(-lo // w))
        k_hi = hi // w if hi is not None else None
        if n.hi is not None:
            k_hi = n.hi if k_hi is None else min(k_hi, n.hi)
        return rep(x, k_lo, k_hi)
    # variable-width body: drop the empty word, then unroll
    x1 = _len(x, 1, None, budget) if min_len(x) == 0 else x
    if is_empty_language(x1):
        return EMPTY if lo == 0 else NOTHING
    if n.hi is not None:
        count_hi = n.hi
    elif hi is not None:
        count_hi = hi // max(min_len(x1) or 1, 1)
    else:
        count_hi = None
    # with the empty word in x, x{lo,hi} is x1{0,hi}: empty copies pad any count up to lo
    min_count = 0 if min_len(x) == 0 else n.lo
    # words with at least `enough` copies are long enough automatically
    if count_hi is None:
        m1 = min_len(x1) or 1
        enough = max(min_count, -(-lo // m1))
        options = [_len_seq([x1] * k, lo, None, budget) for k in range(min_count, enough)]
        options.append(rep(x1, enough, None))
        return alt(*options)
    _spend(budget, count_hi)
    options = []
    for k in range(min_count, count_hi + 1):
        options.append(_len_seq([x1] * k, lo, hi, budget) if k else (EMPTY if lo == 0 else NOTHING))
    return alt(*options)


def _len_seq(parts: list[Node], lo: int, hi: int | None, budget: list[int]) -> Node:
    if not parts:
        return EMPTY if lo <= 0 and (hi is None or hi >= 0) else NOTHING
    if len(parts) == 1:
        return _len(parts[0], lo, hi, budget)
    # peel fixed-width parts off both ends
    w = _fixed(parts[0])
    if w is not None:
        return seq(parts[0], _len_seq(parts[1:], lo - w, None if hi is None else hi - w, budget))
    w = _fixed(parts[-1])
    if w is not None:
        return seq(_len_seq(parts[:-1], lo - w, None if hi is None else hi - w, budget), parts[-1])
    head, rest = parts[0], parts[1:]
    rest_node = seq(*rest)
    rmin, rmax = min_len(rest_node), max_len(rest_node)
    hmin, hmax = min_len(head), max_len(head)
    if rmin is None or hmin is None:
        return NOTHING
    options = []
    if hi is not None:
        # every split of the length between head and rest
        top = int(min(hmax, hi - rmin))
        for a in range(hmin, top + 1):
            _spend(budget)
            options.append(seq(_len(head, a, a, budget), _len_seq(rest, lo - a, hi - a, budget)))
    elif rmax != INF:
        for b in range(rmin, int(rmax) + 1):
            _spend(budget)
            options.append(seq(_len(head, lo - b, None, budget), _len_seq(rest, b, b, budget)))
    elif hmax != INF:
        for a in range(hmin, int(hmax) + 1):
            _spend(budget)
            options.append(seq(_len(head, a, a, budget), _len_seq(rest, lo - a, None, budget)))
    else:
        # both unbounded: short heads need a long enough rest; long heads take any rest
        enough = max(hmin, lo - rmin)
        for a in range(hmin, enough):
            _spend(budget)
            options.append(seq(_len(head, a, a, budget), _len_seq(rest, lo - a, None, budget)))
        options.append(seq(_len(head, enough, None, budget), rest_node))
    return alt(*options)


# ----------------------------------------------------------------------------------
# Writing regex text
# ----------------------------------------------------------------------------------

_CLASS_SPECIAL = set("\\]^-[")
_PLAIN_SPECIAL = set("\\^$.|?*+()[]{}/")


def _class_char(cp: int) -> str:
    ch = chr(cp)
    if cp < 0x20 or cp == 0x7F:
        return f"\\x{cp:02x}"
    if cp >= 0x80 and unicodedata.category(ch)[0] in "CZM":
        # controls, separators (U+2028 is a line break to many tools) and marks: escape
        return f"\\u{cp:04x}" if cp <= 0xFFFF else f"\\U{cp:08x}"
    if ch in _CLASS_SPECIAL or ch == "/":
        return "\\" + ch
    return ch


def class_text(cs: CharSet) -> str:
    """A character class (or single character) for ``cs``, in portable regex syntax."""
    single = cs.single()
    if single is not None:
        ch = chr(single)
        if ch in _PLAIN_SPECIAL:
            return "\\" + ch
        return _class_char(single) if ch not in _CLASS_SPECIAL else ch
    comp = ~cs
    negate = len(comp.ranges) < len(cs.ranges) and comp.ranges
    body_set = comp if negate else cs
    body = []
    for lo, hi in body_set.ranges:
        if lo == hi:
            body.append(_class_char(lo))
        elif hi == lo + 1:
            body.append(_class_char(lo) + _class_char(hi))
        else:
            body.append(_class_char(lo) + "-" + _class_char(hi))
    return "[" + ("^" if negate else "") + "".join(body) + "]"


def _quantifier(lo: int, hi: int | None) -> str:
    if (lo, hi) == (0, None):
        return "*"
    if (lo, hi) == (1, None):
        return "+"
    if (lo, hi) == (0, 1):
        return "?"
    if (lo, hi) == (1, 1):
        return ""
    if hi is None:
        return "{%d,}" % lo
    if lo == hi:
        return "{%d}" % lo
    return "{%d,%d}" % (lo, hi)


def _emit(n: Node, char: "callable", prec: int) -> str:
    """prec: 0 = alternation context, 1 = concatenation, 2 = quantifier operand."""
    if isinstance(n, Chars):
        text, kind = char(n.cs)
        if kind == "alt" and prec >= 1 or kind == "seq" and prec >= 2:
            return "(?:" + text + ")"
        return text
    if isinstance(n, Seq):
        if not n.parts:
            return "(?:)" if prec >= 2 else ""
        text = "".join(_emit(p, char, 1) for p in n.parts)
        return "(?:" + text + ")" if prec >= 2 and len(n.parts) > 1 else text
    if isinstance(n, Alt):
        if not n.options:
            return "(?!)"  # never used in grammars: empty languages are pruned first
        # x|'' is written x?
        non_empty = [o for o in n.options if o != EMPTY]
        if len(non_empty) < len(n.options):
            return _emit(rep(alt(*non_empty), 0, 1), char, prec)
        text = "|".join(_emit(o, char, 0) for o in n.options)
        return "(?:" + text + ")" if prec >= 1 else text
    if isinstance(n, Rep):
        text = _emit(n.node, char, 2) + _quantifier(n.lo, n.hi)
        return "(?:" + text + ")" if prec >= 2 else text
    if isinstance(n, Counted):  # the limit written out, if that is small enough (else RegexUnsupported)
        return _emit(_len(n.node, n.lo, n.hi, [MAX_LENGTH_EXPANSION]), char, prec)
    if isinstance(n, Anchor):
        raise RegexUnsupported("anchor left in a language")
    raise TypeError(n)


def _plain_char(cs: CharSet) -> tuple[str, str]:
    return class_text(cs), "atom"


def plain_regex(n: Node) -> str:
    """Regex text matching exactly the words of ``n`` (characters written as themselves)."""
    return _emit(n, _plain_char, 0)


# JSON string encodings of one decoded character --------------------------------------

_HEX = "0123456789abcdef"
_SHORT_ESCAPES = {0x22: '"', 0x5C: "\\\\", 0x2F: "\\/", 0x08: "b", 0x0C: "f", 0x0A: "n", 0x0D: "r", 0x09: "t"}
_RAW_FORBIDDEN = CharSet.of('"\\') | CONTROL
# Any one decoded character: raw, a short escape, a \u escape of a BMP non-surrogate, or a
# surrogate pair (one astral character).  Lone surrogates are not accepted.
GENERAL_CHAR = (
    r'(?:[^"\\\x00-\x1f]|\\(?:["\\\/bfnrt]|u(?:[0-9a-cA-Ce-fE-F][0-9a-fA-F]{3}|[dD][0-7][0-9a-fA-F]{2})'
    r"|u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}))"
)


# One character inside a length-limited string: raw, a short escape or a control escape.
COUNTED_CHAR = r'(?:[^"\\\x00-\x1f]|\\(?:["\\\/bfnrt]|u00[01][0-9a-fA-F]))'


def _hex_digit_class(lo: int, hi: int) -> str:
    parts = []
    if lo <= 9:
        a, b = lo, min(hi, 9)
        parts.append(str(a) if a == b else f"{a}-{b}")
    if hi >= 10:
        a, b = max(lo, 10), hi
        la, lb = _HEX[a], _HEX[b]
        parts.append(la if a == b else f"{la}-{lb}")
        parts.append(la.upper() if a == b else f"{la.upper()}-{lb.upper()}")
    if lo == hi and lo <= 9:
        return str(lo)
    return "[" + "".join(parts) + "]"


def fixed_width_range(lo: int, hi: int, base: int, width: int, digit_class) -> str:
    """Regex for the ``width``-digit base-``base`` numerals (leading zeros kept) in [lo, hi]."""

    def digits(v: int) -> list[int]:
        out = []
        for _ in range(width):
            out.append(v % base)
            v //= base
        return out[::-1]

    def rec(a: list[int], b: list[int]) -> str:
        if not a:
            return ""
        n = len(a) - 1
        if a[0] == b[0]:
            return digit_class(a[0], a[0]) + rec(a[1:], b[1:])
        a_min = all(d == 0 for d in a[1:])
        b_max = all(d == base - 1 for d in b[1:])
        opts = []
        start = a[0] if a_min else a[0] + 1
        end = b[0] if b_max else b[0] - 1
        if not a_min:
            opts.append(digit_class(a[0], a[0]) + rec(a[1:], [base - 1] * n))
        if start <= end:
            tail = digit_class(0, base - 1)
            opts.append(digit_class(start, end) + (tail + _quantifier(n, n) if n > 1 else tail if n == 1 else ""))
        if not b_max:
            opts.append(digit_class(b[0], b[0]) + rec([0] * n, b[1:]))
        return opts[0] if len(opts) == 1 else "(?:" + "|".join(opts) + ")"

    return rec(digits(lo), digits(hi))




def _u_escapes(cs: CharSet) -> str | None:
    """``u`` + 4 hex digits for the control characters of ``cs``.

    Constrained strings accept other characters only raw (printable ASCII, non-ASCII) or
    by short escape: a subset of the encodings, which keeps soundness and small regexes.
    """
    ctrl = cs & CONTROL
    if not ctrl:
        return None
    if ctrl == CONTROL:
        return "u00[01][0-9a-fA-F]"
    opts = [fixed_width_range(lo, hi, 16, 4, _hex_digit_class) for lo, hi in ctrl.ranges]
    return "u" + (opts[0] if len(opts) == 1 else "(?:" + "|".join(opts) + ")")


@functools.lru_cache(maxsize=8192)
def _json_char(cs: CharSet) -> tuple[str, str]:
    """Regex over the spellings of one character of ``cs`` in a *constrained* string: ``(text, kind)``.

    Printable ASCII and non-ASCII characters raw (``"`` and ``\\`` only by their short
    escapes, ``/`` both ways), control characters by short or ``\\u00XX`` escapes: what
    ``json.dumps(..., ensure_ascii=False)`` writes.  The spelling depends on the character
    only, so a language's encoding depends on the language, not on how it is written
    (:mod:`guided.json_schema.engine_spec` builds it from the DFA).  ``kind`` says how the
    text binds: "atom" (quantifiable), "seq" (a concatenation) or "alt" (an alternation).
    """
    if cs == ALL:
        return COUNTED_CHAR, "atom"
    raw = cs - _RAW_FORBIDDEN
    esc = [v for k, v in sorted(_SHORT_ESCAPES.items()) if k in cs]
    esc_opts = []
    if esc:
        esc_opts.append(esc[0] if len(esc) == 1 else "[" + "".join(esc) + "]")
    u = _u_escapes(cs)
    if u:
        esc_opts.append(u)
    escaped = None
    if esc_opts:
        escaped = "\\\\" + (esc_opts[0] if len(esc_opts) == 1 else "(?:" + "|".join(esc_opts) + ")")
    if raw and escaped:
        return class_text(raw) + "|" + escaped, "alt"
    if raw:
        return class_text(raw), "atom"
    if escaped:
        return escaped, "seq"
    return "(?!)", "atom"


def json_string_regex(n: Node) -> str:
    """Regex over JSON string literals (quotes included) whose decoded value is a word of ``n``.

    The unconstrained string takes every spelling (``\\uXXXX`` escapes, surrogate pairs);
    a constrained one only those of :func:`_json_char`, which keeps complements sound (an
    unnamed key cannot spell a named one with escapes) and the automata small.
    """
    if n == ANY_STRING:
        return '"' + GENERAL_CHAR + '*"'
    return '"' + _emit(n, _json_char, 1) + '"'


# ----------------------------------------------------------------------------------
# Finite sets of strings: their complement without building a DFA
# ----------------------------------------------------------------------------------


def words_language(words) -> Node:
    """The finite language ``words`` as a trie-shaped regex."""
    trie: dict = {}
    for w in words:
        t = trie
        for ch in w:
            t = t.setdefault(ch, {})
        t[None] = True

    def build(t: dict) -> Node:
        opts = []
        if None in t:
            opts.append(EMPTY)
        for ch, sub in sorted((k, v) for k, v in t.items() if k is not None):
            opts.append(seq(Chars(CharSet.of(ch)), build(sub)))
        return alt(*opts) if opts else NOTHING

    node = build(trie)
    if node not in _KNOWN:
        _remember(node, _trie_dfa(words, complement=False))
    return node


def not_words_language(words) -> Node:
    """All strings except ``words``: (proper prefixes that are not words) | (divergence) any*.

    The any-string tail is shared by every divergence point, which keeps the regex linear
    in the total length of the words.
    """
    words = tuple(sorted(set(words)))
    node = _not_words_node(words)
    if node not in _KNOWN:
        _remember(node, _trie_dfa(words, complement=True))
    return node


@functools.lru_cache(maxsize=1024)
def _not_words_node(words: tuple) -> Node:
    # large schemas repeat the same property-name sets (an inlined definition per use)
    trie: dict = {}
    for w in words:
        t = trie
        for ch in w:
            t = t.setdefault(ch, {})
        t[None] = True

    def build(t: dict) -> tuple[Node, Node]:
        kids = sorted(k for k in t if k is not None)
        nonfinal = [EMPTY] if None not in t else []
        other = ALL - CharSet.of(*kids) if kids else ALL
        diverge = [Chars(other)] if other else []
        for ch in kids:
            nf, dv = build(t[ch])
            c = Chars(CharSet.of(ch))
            nonfinal.append(seq(c, nf))
            diverge.append(seq(c, dv))
        return alt(*nonfinal) if nonfinal else NOTHING, alt(*diverge) if diverge else NOTHING

    nf, dv = build(trie)
    return alt(nf, seq(dv, ANY_STRING))


def _trie_dfa(words, complement: bool) -> "DFA":
    """Minimal DFA of the finite language ``words`` (or of its complement), from its trie."""
    chars = sorted({ord(c) for w in words for c in w})
    part = _Partition([CharSet.of(c) for c in chars])
    atom = {c: part.atoms_of(CharSet.of(c)) for c in chars}
    atom = {c: next(iter(a)) for c, a in atom.items()}
    k = len(part.atoms)
    children: list[dict] = [{}]
    ends = [False]
    for w in words:
        q = 0
        for ch in w:
            a = atom[ord(ch)]
            nxt = children[q].get(a)
            if nxt is None:
                nxt = children[q][a] = len(children)
                children.append({})
                ends.append(False)
            q = nxt
        ends[q] = True
    off = len(children)  # read something no word starts with
    trans = [[kids.get(a, off) for a in range(k)] for kids in children] + [[off] * k]
    accept = [e != complement for e in ends] + [complement]
    return DFA(part, trans, accept).minimize()


# ----------------------------------------------------------------------------------
# DFAs over a partition of the code points, for intersection / difference / emptiness
# ----------------------------------------------------------------------------------

MAX_DFA_STATES = 5000
MAX_COUNTED_NFA_STATES = 200_000
MAX_ELIMINATION_EDGES = 200_000
# nodes of a state-elimination regex written out as a tree (what the emitted pattern spells):
# edges share sub-nodes, so the tree can grow exponentially while the edge count stays small
MAX_ELIMINATION_TREE = 100_000


class _Partition:
    """Splits the code points into atoms so every CharSet in play is a union of atoms."""

    def __init__(self, sets: list[CharSet]):
        cuts = {0, MAX_CP + 1}
        for cs in sets:
            for lo, hi in cs.ranges:
                cuts.add(lo)
                cuts.add(hi + 1)
        points = sorted(cuts)
        self.atoms = [
            CharSet.from_ranges([(a, b - 1)]) for a, b in zip(points, points[1:]) if CharSet.from_ranges([(a, b - 1)])
        ]
        self.starts = [a.ranges[0][0] for a in self.atoms]

    def atoms_of(self, cs: CharSet) -> frozenset[int]:
        import bisect

        out = set()
        for lo, hi in cs.ranges:
            i = bisect.bisect_right(self.starts, lo) - 1
            while i < len(self.atoms) and self.starts[i] <= hi:
                out.add(i)
                i += 1
        return frozenset(out)

    def charset(self, atoms) -> CharSet:
        return CharSet.from_ranges([r for a in atoms for r in self.atoms[a].ranges])


def _charsets(n: Node, out: list[CharSet]) -> None:
    if isinstance(n, Chars):
        out.append(n.cs)
    elif isinstance(n, Seq):
        for p in n.parts:
            _charsets(p, out)
    elif isinstance(n, Alt):
        for p in n.options:
            _charsets(p, out)
    elif isinstance(n, (Rep, Counted)):
        _charsets(n.node, out)


class _NFA:
    def __init__(self, part: _Partition):
        self.part = part
        self.eps: list[list[int]] = []
        self.edges: list[list[tuple[frozenset[int], int]]] = []

    def state(self) -> int:
        self.eps.append([])
        self.edges.append([])
        return len(self.eps) - 1

    def build(self, n: Node, s: int, t: int) -> None:
        if isinstance(n, Chars):
            self.edges[s].append((self.part.atoms_of(n.cs), t))
        elif isinstance(n, Seq):
            cur = s
            for i, p in enumerate(n.parts):
                nxt = t if i == len(n.parts) - 1 else self.state()
                self.build(p, cur, nxt)
                cur = nxt
            if not n.parts:
                self.eps[s].append(t)
        elif isinstance(n, Alt):
            for o in n.options:
                self.build(o, s, t)
        elif isinstance(n, Rep):
            cur = s
            for _ in range(n.lo):
                nxt = self.state()
                self.build(n.node, cur, nxt)
                cur = nxt
            if n.hi is None:
                loop = self.state()
                self.eps[cur].append(loop)
                after = self.state()
                self.build(n.node, loop, after)
                self.eps[after].append(loop)
                self.eps[loop].append(t)
            else:
                for _ in range(n.hi - n.lo):
                    self.eps[cur].append(t)
                    nxt = self.state()
                    self.build(n.node, cur, nxt)
                    cur = nxt
                self.eps[cur].append(t)
        elif isinstance(n, Counted):
            self._build_counted(n, s, t)
        else:
            raise TypeError(n)

    def _build_counted(self, n: "Counted", s: int, t: int) -> None:
        """One copy of ``n.node``'s automaton per length read so far; characters step to the next copy."""
        inner = _NFA(self.part)
        a, b = inner.state(), inner.state()
        inner.build(n.node, a, b)
        size = len(inner.eps)
        if size * (n.hi + 1) > MAX_COUNTED_NFA_STATES:
            raise RegexUnsupported("a length limit on this language needs too many states")
        base = len(self.eps)
        for c in range(n.hi + 1):
            off, nxt = base + c * size, base + (c + 1) * size
            for q in range(size):
                self.eps.append([off + x for x in inner.eps[q]])
                self.edges.append([(atoms, nxt + x) for atoms, x in inner.edges[q]] if c < n.hi else [])
        self.eps[s].append(base + a)
        for c in range(n.lo, n.hi + 1):
            self.eps[base + c * size + b].append(t)

    def closure(self, states) -> frozenset[int]:
        stack, seen = list(states), set(states)
        while stack:
            s = stack.pop()
            for t in self.eps[s]:
                if t not in seen:
                    seen.add(t)
                    stack.append(t)
        return frozenset(seen)


class DFA:
    """Complete DFA over the atoms of a partition; state 0 is the start."""

    def __init__(self, part: _Partition, trans: list[list[int]], accept: list[bool]):
        self.part, self.trans, self.accept = part, trans, accept
        self.minimal = False

    def on(self, part: _Partition) -> "DFA":
        """The same DFA over a finer partition (every atom of ``part`` inside one of ours)."""
        if part is self.part:
            return self
        import bisect

        old = [bisect.bisect_right(self.part.starts, a.ranges[0][0]) - 1 for a in part.atoms]
        out = DFA(part, [[row[o] for o in old] for row in self.trans], self.accept)
        out.minimal = self.minimal
        return out

    @staticmethod
    def from_node(n: Node, part: _Partition) -> "DFA":
        nfa = _NFA(part)
        s, t = nfa.state(), nfa.state()
        nfa.build(n, s, t)
        start = nfa.closure([s])
        dead = frozenset()
        index = {start: 0}
        order = [start]
        closures: dict[frozenset, frozenset] = {dead: dead}
        trans: list[list[int]] = []
        accept: list[bool] = []
        k = len(part.atoms)
        i = 0
        while i < len(order):
            cur = order[i]
            i += 1
            accept.append(t in cur)
            moves: dict[int, set[int]] = {}
            for st in cur:
                for atoms, dst in nfa.edges[st]:
                    for a in atoms:
                        moves.setdefault(a, set()).add(dst)
            row = [-1] * k
            for a, dsts in moves.items():
                key = frozenset(dsts)
                nxt = closures.get(key)
                if nxt is None:
                    nxt = closures[key] = nfa.closure(key)
                q = index.get(nxt)
                if q is None:
                    q = index[nxt] = len(order)
                    order.append(nxt)
                    if len(order) > MAX_DFA_STATES:
                        raise RegexUnsupported("regular-language operation needs too many states")
                row[a] = q
            if len(moves) < k:  # atoms nothing moves on go to the dead state
                q = index.get(dead)
                if q is None:
                    q = index[dead] = len(order)
                    order.append(dead)
                row = [q if x < 0 else x for x in row]
            trans.append(row)
        return DFA(part, trans, accept)

    def product(self, other: "DFA", op) -> "DFA":
        index = {(0, 0): 0}
        order = [(0, 0)]
        trans, accept = [], []
        i = 0
        while i < len(order):
            a, b = order[i]
            i += 1
            accept.append(op(self.accept[a], other.accept[b]))
            row = []
            for x in range(len(self.part.atoms)):
                nxt = (self.trans[a][x], other.trans[b][x])
                if nxt not in index:
                    index[nxt] = len(order)
                    order.append(nxt)
                    if len(order) > MAX_DFA_STATES:
                        raise RegexUnsupported("regular-language operation needs too many states")
                row.append(index[nxt])
            trans.append(row)
        return DFA(self.part, trans, accept)

    def live(self) -> list[bool]:
        """States from which an accepting state is reachable."""
        n = len(self.trans)
        rev: list[list[int]] = [[] for _ in range(n)]
        for s, row in enumerate(self.trans):
            for t in set(row):
                rev[t].append(s)
        alive = [False] * n
        stack = [s for s in range(n) if self.accept[s]]
        for s in stack:
            alive[s] = True
        while stack:
            s = stack.pop()
            for p in rev[s]:
                if not alive[p]:
                    alive[p] = True
                    stack.append(p)
        return alive

    def is_empty(self) -> bool:
        return not self.live()[0]

    def minimize(self) -> "DFA":
        """Moore refinement (vectorised; the dead state is kept, dropped by its users)."""
        if self.minimal:
            return self
        import numpy as np

        trans = np.asarray(self.trans, dtype=np.int64).reshape(len(self.trans), -1)
        cls = np.asarray(self.accept, dtype=np.int64)
        n_cls = len(np.unique(cls))
        while True:
            sig = np.ascontiguousarray(np.concatenate([cls[:, None], cls[trans]], axis=1))
            rows = sig.view(np.dtype((np.void, sig.dtype.itemsize * sig.shape[1]))).reshape(-1)
            _, new = np.unique(rows, return_inverse=True)
            new = new.reshape(-1)
            n_new = int(new.max()) + 1
            cls = new
            if n_new == n_cls:
                break
            n_cls = n_new
        # renumber so the start state is 0, then classes in first-seen order
        order = {int(cls[0]): 0}
        for c in cls.tolist():
            order.setdefault(c, len(order))
        remap = np.empty(n_cls, dtype=np.int64)
        for c, o in order.items():
            remap[c] = o
        new_id = remap[cls]
        reps = np.empty(n_cls, dtype=np.int64)
        reps[new_id[::-1]] = np.arange(len(cls))[::-1]  # first state of each class
        out = DFA(self.part, new_id[trans[reps]].tolist(), [bool(self.accept[r]) for r in reps.tolist()])
        out.minimal = True
        return out

    def to_node(self) -> Node:
        """Regex for the language, by state elimination (fewest in x out edges first)."""
        d = self.minimize()
        alive = d.live()
        if not alive[0]:
            return NOTHING
        states = [s for s in range(len(d.trans)) if alive[s]]
        S, F = "S", "F"  # virtual start and final states
        succ: dict = {S: {}, F: {}}
        pred: dict = {S: {}, F: {}}
        for q in states:
            succ[q], pred[q] = {}, {}

        sizes: dict = {}  # (i, j) -> tree size of the edge's regex (an upper bound)

        def add(i, j, node, size=1):
            old = succ[i].get(j)
            if old is not None:
                node, size = alt(old, node), sizes[i, j] + size + 1
            if size > MAX_ELIMINATION_TREE:
                raise RegexUnsupported("regular-language operation gives too large a regex")
            succ[i][j] = node
            pred[j][i] = node
            sizes[i, j] = size

        add(S, 0, EMPTY)
        for q in states:
            groups: dict[int, list[int]] = {}
            for a_, t in enumerate(d.trans[q]):
                if alive[t]:
                    groups.setdefault(t, []).append(a_)
            for t, atoms in groups.items():
                add(q, t, Chars(d.part.charset(atoms)))
            if d.accept[q]:
                add(q, F, EMPTY)
        remaining = set(states)
        budget = MAX_ELIMINATION_EDGES

        def cost(x) -> int:  # in x out edges, self-loops aside
            return (len(pred[x]) - (x in pred[x])) * (len(succ[x]) - (x in succ[x]))

        # cheapest state first, ties to the lowest number: a heap of (cost, state) whose stale
        # entries are skipped (a state's cost changes only when a neighbour is eliminated), in
        # place of a scan of every remaining state per elimination (quadratic in the states)
        heap = [(cost(x), x) for x in states]
        heapq.heapify(heap)
        while remaining:
            c, q = heapq.heappop(heap)
            if q not in remaining or c != cost(q):
                continue
            remaining.discard(q)
            loop = succ[q].pop(q, None)
            pred[q].pop(q, None)
            mid = rep(loop, 0, None) if loop is not None else EMPTY
            mid_size = sizes[q, q] + 1 if loop is not None else 1
            ins = list(pred[q].items())
            outs = list(succ[q].items())
            for i, _ in ins:
                del succ[i][q]
            for j, _ in outs:
                del pred[j][q]
            budget -= len(ins) * len(outs)
            if budget < 0:
                raise RegexUnsupported("regular-language operation gives too large a regex")
            for i, ei in ins:
                for j, ej in outs:
                    add(i, j, seq(ei, mid, ej), sizes[i, q] + mid_size + sizes[q, j] + 1)
            del succ[q], pred[q]
            for x in {i for i, _ in ins} | {j for j, _ in outs}:
                if x in remaining:
                    heapq.heappush(heap, (cost(x), x))
        node = succ[S].get(F, NOTHING)
        _remember(node, d)
        return node


# The minimal DFA of recently made languages: a language built by a DFA operation (or from
# a word list) keeps the DFA it came from, so the next operation on it, and the terminal
# automaton built from it (guided.json_schema.engine_spec), need no subset construction.
_KNOWN: OrderedDict = OrderedDict()
_KNOWN_MAX = 4096


def _remember(n: Node, d: DFA) -> None:
    _KNOWN[n] = d
    _KNOWN.move_to_end(n)
    if len(_KNOWN) > _KNOWN_MAX:
        _KNOWN.popitem(last=False)


def dfa_of(n: Node) -> DFA:
    """The minimal DFA of ``n`` over its own partition (remembered)."""
    d = _KNOWN.get(n)
    if d is None:
        sets: list[CharSet] = []
        _charsets(n, sets)
        d = DFA.from_node(n, _Partition(sets)).minimize()
        _remember(n, d)
    return d


def count_words(n: Node, cap: int) -> int:
    """How many words ``n`` has, counted up to ``cap`` (``min(cap, |n|)``).

        >>> count_words(pattern_language("^[ab]{1,2}$"), 10)
        6
    """
    quick = _count_fixed(n, cap)
    if quick is not None:
        return quick
    inner, lo, hi = (n.node, n.lo, n.hi) if isinstance(n, Counted) else (n, 0, None)
    d = dfa_of(inner)
    alive = d.live()
    width = [sum(b - a + 1 for a, b in atom.ranges) for atom in d.part.atoms]
    if hi is None:  # a cycle through live states: infinitely many words
        order: list[int] = []
        mark = [0] * len(d.trans)  # 0 new, 1 on the path, 2 done
        stack = [(0, iter(set(d.trans[0])))] if alive[0] else []
        mark[0] = 1
        while stack:
            s, it = stack[-1]
            for t in it:
                if not alive[t]:
                    continue
                if mark[t] == 1:
                    return cap
                if mark[t] == 0:
                    mark[t] = 1
                    stack.append((t, iter(set(d.trans[t]))))
                    break
            else:
                stack.pop()
                mark[s] = 2
                order.append(s)
        count = [0] * len(d.trans)
        for s in order:  # successors first
            c = 1 if d.accept[s] else 0
            for a, t in enumerate(d.trans[s]):
                if alive[t]:
                    c = min(cap, c + width[a] * count[t])
            count[s] = c
        return count[0] if alive[0] else 0
    if len(d.trans) * (hi + 1) > 300_000:
        raise RegexUnsupported("counting the words of too large a length-limited language")
    nxt = [0] * len(d.trans)  # words from each state with c + 1 characters read
    for c in range(hi, -1, -1):
        cur = [0] * len(d.trans)
        for s in range(len(d.trans)):
            if not alive[s]:
                continue
            k = 1 if d.accept[s] and c >= lo else 0
            if c < hi:
                for a, t in enumerate(d.trans[s]):
                    if nxt[t]:
                        k = min(cap, k + width[a] * nxt[t])
            cur[s] = k
        nxt = cur
    return nxt[0]


def _count_fixed(n: Node, cap: int) -> int | None:
    """``count_words`` without an automaton where the structure makes it exact: character
    sets, sequences of fixed-length parts, repeats of one (``.{0,4096}``); else None."""
    if isinstance(n, Chars):
        return min(cap, sum(hi - lo + 1 for lo, hi in n.cs.ranges))
    if isinstance(n, Seq) and all(min_len(p) == max_len(p) for p in n.parts):
        total = 1
        for p in n.parts:
            c = _count_fixed(p, cap)
            if c is None:
                return None
            total = min(cap, total * c)
        return total
    if isinstance(n, Rep) and min_len(n.node) is not None and min_len(n.node) == max_len(n.node) > 0:
        c = _count_fixed(n.node, cap)
        if c is None:
            return None
        if c == 0:
            return 1 if n.lo == 0 else 0
        if n.hi is None:
            return cap
        total, power = 0, 1
        for k in range(n.hi + 1):  # words of k repeats (each length its own)
            if k >= n.lo:
                total = min(cap, total + power)
            if total >= cap:
                break
            power = min(cap, power * c)
        return total
    return None


def _dfas(*nodes: Node) -> list[DFA]:
    """The DFAs of ``nodes`` over one common partition."""
    dfas = [dfa_of(n) for n in nodes]
    if len(dfas) > 1 and any(d.part is not dfas[0].part for d in dfas):
        part = _Partition([a for d in dfas for a in d.part.atoms])
        dfas = [d.on(part) for d in dfas]
    return dfas


def intersect(a: Node, b: Node) -> Node:
    if a == ANY_STRING:
        return b
    if b == ANY_STRING:
        return a
    da, db = _dfas(a, b)
    return da.product(db, lambda x, y: x and y).to_node()


def difference(a: Node, b: Node) -> Node:
    da, db = _dfas(a, b)
    return da.product(db, lambda x, y: x and not y).to_node()


def complement(a: Node) -> Node:
    return difference(ANY_STRING, a)


def is_empty(a: Node) -> bool:
    if min_len(a) is None:
        return True
    if isinstance(a, Counted):  # min_len counted its words exactly
        return False
    return dfa_of(a).is_empty()


def matches(n: Node, s: str) -> bool:
    """Membership test (for enum filtering and tests)."""
    if isinstance(n, Counted):  # no product automaton for a length test
        return n.lo <= len(s) <= n.hi and matches(n.node, s)
    d = dfa_of(n)
    state = 0
    for ch in s:
        atoms = d.part.atoms_of(CharSet.of(ch))
        if not atoms:
            return False
        state = d.trans[state][next(iter(atoms))]
    return d.accept[state]
