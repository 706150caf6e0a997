"""Regular expressions (Python ``re`` syntax) compiled to minimal DFAs over bytes.

    >>> dfa = ByteDFA.from_regex(r"[0-9]+(\\.[0-9]+)?")
    >>> dfa.matches(b"3.14")
    True
    >>> s = dfa.walk(dfa.start, b"3.")      # -1 once no word can start with the bytes
    >>> bool(dfa.accepting[s]), dfa.walk(s, b"x")
    (False, -1)

The pattern is parsed by Python's own regex parser (``re._parser``), so syntax, flags
(``i``, ``s``, ``x``, ``a``, scoped ``(?i:...)``) and character classes (``\\w``, ``\\d``,
``\\s``, case folding) mean exactly what they mean to :func:`re.fullmatch`; class
membership is computed by asking ``re`` itself.  Code points become their UTF-8 byte
sequences (surrogates excluded), so the DFA reads the same bytes a tokenizer emits, and a
walk may stop in the middle of a character.

Every state of the result can still reach an accepting state (dead states are pruned;
``-1`` is the only dead end), the DFA is minimal, and ``start == 0``.

Constructs a DFA cannot express raise :class:`RegexError` naming them: backreferences,
lookahead/lookbehind, conditionals, atomic groups, possessive repeats, word boundaries and
anchors other than a leading ``^``/``\\A`` or trailing ``$``/``\\Z``.
"""

from __future__ import annotations

import bisect
import re
import time
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from guided.constraint import ConstraintError

try:  # Python >= 3.11
    from re import _constants as _sre_c
    from re import _parser as _sre_parse
    from re import _compiler as _sre_compile
except ImportError:  # pragma: no cover
    import sre_compile as _sre_compile  # type: ignore[no-redef]
    import sre_constants as _sre_c  # type: ignore[no-redef]
    import sre_parse as _sre_parse  # type: ignore[no-redef]

__all__ = ["ByteDFA", "RegexError", "RegexTooLargeError", "EmptyLanguageError"]

MAX_UNICODE = 0x10FFFF
_SURROGATES = (0xD800, 0xDFFF)


class RegexError(ConstraintError):
    """A regular expression that cannot be compiled to a DFA (bad syntax or an unsupported construct).

    ``pattern`` is the regex, ``position`` the character offset of the problem (or ``None``).
    """

    def __init__(self, message: str, pattern: str = "", position: int | None = None):
        self.pattern = pattern
        self.position = position
        where = f" at position {position}" if position is not None else ""
        shown = f" in {pattern!r}" if pattern else ""
        super().__init__(f"{message}{where}{shown}")


class RegexTooLargeError(RegexError):
    """The DFA would exceed the state budget (e.g. ``(a|b)*a(a|b){30}``)."""


class EmptyLanguageError(RegexError):
    """The regex matches no string at all."""


# -- code point sets as sorted disjoint inclusive intervals ------------------------------
Intervals = tuple  # tuple[tuple[int, int], ...]


def _normalise(ranges) -> Intervals:
    out: list[list[int]] = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1] + 1:
            if hi > out[-1][1]:
                out[-1][1] = hi
        else:
            out.append([lo, hi])
    return tuple((a, b) for a, b in out)


def _complement(iv: Intervals) -> Intervals:
    out = []
    prev = 0
    for lo, hi in iv:
        if lo > prev:
            out.append((prev, lo - 1))
        prev = hi + 1
    if prev <= MAX_UNICODE:
        out.append((prev, MAX_UNICODE))
    return tuple(out)


_ALL_CHARS: str | None = None


def _all_chars() -> str:
    """Every Unicode scalar value in order (surrogates left out): the haystack for class queries."""
    global _ALL_CHARS
    if _ALL_CHARS is None:
        _ALL_CHARS = "".join(map(chr, range(0xD800))) + "".join(map(chr, range(0xE000, MAX_UNICODE + 1)))
    return _ALL_CHARS


def _index_to_cp(i: int) -> int:
    return i if i < 0xD800 else i + 0x800


_CLASS_CACHE: dict = {}


def _ask_re(node, flags: int) -> Intervals:
    """The exact set of code points a one-character node matches, asked of ``re`` itself.

    Runs ``(?:node)+`` over all code points: each match is one interval, so this costs a
    single C-level scan.  Used for categories (``\\w``) and case-insensitive classes, where
    Python's rules (Unicode tables, case-folding fix-ups) are not worth re-deriving.
    """
    key = (repr(node), flags)
    hit = _CLASS_CACHE.get(key)
    if hit is not None:
        return hit
    state = _sre_parse.State()
    state.flags = flags
    if not flags & _sre_c.SRE_FLAG_ASCII:
        flags |= _sre_c.SRE_FLAG_UNICODE
    state.flags = flags
    inner = _sre_parse.SubPattern(state, [node])
    sub = _sre_parse.SubPattern(state, [(_sre_c.MAX_REPEAT, (1, _sre_c.MAXREPEAT, inner))])
    compiled = _sre_compile.compile(sub, flags)
    ranges = []
    for m in compiled.finditer(_all_chars()):
        lo, hi = _index_to_cp(m.start()), _index_to_cp(m.end() - 1)
        if lo < 0xD800 <= hi:  # a run across the surrogate gap is two intervals
            ranges += [(lo, 0xD7FF), (0xE000, hi)]
        else:
            ranges.append((lo, hi))
    result = _normalise(ranges)
    _CLASS_CACHE[key] = result
    return result


try:  # the case-folding fix-ups sre_compile applies (Python >= 3.11)
    import _sre
    from re._casefix import _EXTRA_CASES
except ImportError:  # pragma: no cover
    _EXTRA_CASES = None

_LOWER_PREIMAGE: dict | None = None


def _ignorecase_literal(c: int) -> Intervals:
    """Code points ``(?i)`` + literal ``c`` matches: those whose ``tolower`` is in
    ``{tolower(c)} | fixes`` -- the rule ``re._compiler`` compiles it to."""
    global _LOWER_PREIMAGE
    if _LOWER_PREIMAGE is None:
        pre: dict = {}
        lower = _sre.unicode_tolower
        for x in range(MAX_UNICODE + 1):
            y = lower(x)
            if y != x:
                pre.setdefault(y, []).append(x)
        _LOWER_PREIMAGE = pre
    lo = _sre.unicode_tolower(c)
    targets = {lo, *_EXTRA_CASES.get(lo, ())}
    points = set()
    for y in targets:
        points.update(_LOWER_PREIMAGE.get(y, ()))
        if _sre.unicode_tolower(y) == y:
            points.add(y)
    return _normalise((x, x) for x in points)


_RELEVANT_CLASS_FLAGS = _sre_c.SRE_FLAG_IGNORECASE | _sre_c.SRE_FLAG_ASCII | _sre_c.SRE_FLAG_DOTALL


def _class_of(node, flags: int) -> Intervals:
    """Code points matched by a single-character node (LITERAL, NOT_LITERAL, ANY, IN)."""
    op, av = node
    flags &= _RELEVANT_CLASS_FLAGS
    if flags & _sre_c.SRE_FLAG_IGNORECASE:
        if op is _sre_c.LITERAL and not flags & _sre_c.SRE_FLAG_ASCII and _EXTRA_CASES is not None:
            return _ignorecase_literal(av)
        return _ask_re(node, flags)
    if op is _sre_c.LITERAL:
        return ((av, av),)
    if op is _sre_c.NOT_LITERAL:
        return _complement(((av, av),))
    if op is _sre_c.ANY:
        return ((0, MAX_UNICODE),) if flags & _sre_c.SRE_FLAG_DOTALL else _complement(((10, 10),))
    if op is _sre_c.IN:
        negate = False
        ranges: list = []
        for item_op, item_av in av:
            if item_op is _sre_c.NEGATE:
                negate = True
            elif item_op is _sre_c.LITERAL:
                ranges.append((item_av, item_av))
            elif item_op is _sre_c.RANGE:
                ranges.append(item_av)
            elif item_op is _sre_c.CATEGORY:
                ranges.extend(_ask_re((_sre_c.IN, [(item_op, item_av)]), flags & _sre_c.SRE_FLAG_ASCII))
            else:  # pragma: no cover - the parser produces nothing else inside a class
                raise RegexError(f"unsupported class item {item_op}")
        iv = _normalise(ranges)
        return _complement(iv) if negate else iv
    raise AssertionError(op)  # pragma: no cover


def _without_surrogates(iv: Intervals) -> Intervals:
    out = []
    for lo, hi in iv:
        if hi < 0xD800 or lo > 0xDFFF:
            out.append((lo, hi))
        else:
            if lo < 0xD800:
                out.append((lo, 0xD7FF))
            if hi > 0xDFFF:
                out.append((0xE000, hi))
    return tuple(out)


# -- regex AST -> NFA over code point sets ------------------------------------------------
_UNSUPPORTED = {
    "backreference": r"\\[1-9]|\(\?P=",
    "lookahead": r"\(\?[=!]",
    "lookbehind": r"\(\?<[=!]",
    "conditional group": r"\(\?\(",
    "atomic group": r"\(\?>",
    "possessive repeat": r"[*+?}]\+",
    "word boundary": r"\\[bB]",
    "anchor": r"[\^$]|\\[AZ]",
    "locale-dependent matching": r"\(\?[a-zA-Z]*L",
}


def _locate(pattern: str, construct: str) -> int | None:
    """Offset of the first ``construct`` in ``pattern`` outside character classes (best effort)."""
    syntax = re.compile(_UNSUPPORTED[construct])
    i, in_class = 0, False
    while i < len(pattern):
        c = pattern[i]
        if not in_class and syntax.match(pattern, i):
            return i
        if c == "\\":
            i += 2
            continue
        if c == "[" and not in_class:
            in_class = True
            i += 1
            if pattern[i : i + 1] == "^":
                i += 1
            if pattern[i : i + 1] == "]":
                i += 1
            continue
        if c == "]" and in_class:
            in_class = False
        i += 1
    return None


class _NFA:
    """Thompson NFA whose edges carry code point interval sets."""

    def __init__(self, pattern: str, max_states: int):
        self.pattern = pattern
        self.max_states = max_states
        self.eps: list[list[int]] = []
        self.edges: list[list[tuple[Intervals, int]]] = []

    def new(self) -> int:
        if len(self.eps) >= self.max_states:
            raise RegexTooLargeError(
                f"regex expands to more than {self.max_states} NFA states (large counted repeats?)",
                self.pattern,
            )
        self.eps.append([])
        self.edges.append([])
        return len(self.eps) - 1

    def unsupported(self, construct: str):
        raise RegexError(
            f"{construct} is not supported (a DFA cannot express it)",
            self.pattern,
            _locate(self.pattern, construct),
        )

    def build(self, items, flags: int, start: int, top: bool = False) -> int:
        """Add the sequence ``items`` after state ``start``; return its end state."""
        cur = start
        n = len(items)
        for i, (op, av) in enumerate(items):
            if op in (_sre_c.LITERAL, _sre_c.NOT_LITERAL, _sre_c.ANY, _sre_c.IN):
                iv = _without_surrogates(_class_of((op, av), flags))
                nxt = self.new()
                if iv:
                    self.edges[cur].append((iv, nxt))
                cur = nxt
            elif op is _sre_c.BRANCH:
                end = self.new()
                for alt in av[1]:
                    s = self.new()
                    self.eps[cur].append(s)
                    e = self.build(alt, flags, s, top and n == 1)
                    self.eps[e].append(end)
                cur = end
            elif op is _sre_c.SUBPATTERN:
                _group, add, delete, sub = av
                if (add | delete) & _sre_c.SRE_FLAG_LOCALE:
                    self.unsupported("locale-dependent matching")
                cur = self.build(sub, (flags | add) & ~delete, cur, top and n == 1)
            elif op in (_sre_c.MAX_REPEAT, _sre_c.MIN_REPEAT):
                lo, hi, sub = av
                for _ in range(lo):
                    cur = self.build(sub, flags, cur)
                if hi is _sre_c.MAXREPEAT:
                    loop = self.new()
                    self.eps[cur].append(loop)
                    body_end = self.build(sub, flags, loop)
                    self.eps[body_end].append(loop)
                    cur = loop
                else:
                    end = self.new()
                    for _ in range(hi - lo):
                        self.eps[cur].append(end)
                        cur = self.build(sub, flags, cur)
                    self.eps[cur].append(end)
                    cur = end
            elif op is _sre_c.AT:
                leading = top and i == 0 and av in (_sre_c.AT_BEGINNING, _sre_c.AT_BEGINNING_STRING)
                trailing = top and i == n - 1 and av in (_sre_c.AT_END, _sre_c.AT_END_STRING)
                if not (leading or trailing):
                    if av in (_sre_c.AT_BOUNDARY, _sre_c.AT_NON_BOUNDARY):
                        self.unsupported("word boundary")
                    raise RegexError(
                        "anchors are only supported at the start (^, \\A) or end ($, \\Z) of the pattern",
                        self.pattern,
                        _locate(self.pattern, "anchor"),
                    )
            elif op is _sre_c.GROUPREF:
                self.unsupported("backreference")
            elif op is _sre_c.GROUPREF_EXISTS:
                self.unsupported("conditional group")
            elif op in (_sre_c.ASSERT, _sre_c.ASSERT_NOT):
                self.unsupported("lookahead" if av[0] == 1 else "lookbehind")
            elif op is getattr(_sre_c, "ATOMIC_GROUP", object()):
                self.unsupported("atomic group")
            elif op is getattr(_sre_c, "POSSESSIVE_REPEAT", object()):
                self.unsupported("possessive repeat")
            else:  # pragma: no cover
                raise RegexError(f"unsupported regex construct {op}", self.pattern)
        return cur


def _expanded_size(items) -> int:
    """Number of NFA states the Thompson construction will create (to refuse blow-ups up front)."""
    total = 0
    for op, av in items:
        if op is _sre_c.BRANCH:
            total += 2 + sum(_expanded_size(alt) for alt in av[1])
        elif op is _sre_c.SUBPATTERN:
            total += _expanded_size(av[3])
        elif op in (_sre_c.MAX_REPEAT, _sre_c.MIN_REPEAT):
            lo, hi, sub = av
            copies = lo + 1 if hi is _sre_c.MAXREPEAT else hi
            total += 2 + copies * _expanded_size(sub)
        else:
            total += 1
    return total


# -- NFA -> DFA over code points -> DFA over UTF-8 bytes ----------------------------------
#: compile-time budget of one regex: past it, compilation stops with RegexTooLargeError
MAX_COMPILE_SECONDS = 20.0


class _Budget:
    """Raises RegexTooLargeError once the compile-time budget is spent (nothing hangs)."""

    __slots__ = ("deadline", "pattern")

    def __init__(self, pattern: str):
        self.deadline = time.monotonic() + MAX_COMPILE_SECONDS
        self.pattern = pattern

    def check(self) -> None:
        if time.monotonic() > self.deadline:
            raise RegexTooLargeError(
                f"regex takes more than {MAX_COMPILE_SECONDS:g} s to compile (a long counted repeat of a large class?)",
                self.pattern,
            )


def _closure(nfa: _NFA, states) -> frozenset:
    seen = set(states)
    stack = list(states)
    while stack:
        s = stack.pop()
        for t in nfa.eps[s]:
            if t not in seen:
                seen.add(t)
                stack.append(t)
    return frozenset(seen)


def _determinise(nfa: _NFA, start: int, final: int, max_states: int, pattern: str, budget: _Budget):
    """Subset construction; transitions are lists of ``(lo, hi, target)`` code point segments."""
    first = _closure(nfa, [start])
    index = {first: 0}
    order = [first]
    trans: list[list[tuple[int, int, int]]] = []
    accepting: list[bool] = []
    i = 0
    while i < len(order):
        S = order[i]
        i += 1
        budget.check()
        accepting.append(final in S)
        events: list[tuple[int, int, int]] = []  # (position, +1/-1, target)
        for s in S:
            for iv, t in nfa.edges[s]:
                for lo, hi in iv:
                    events.append((lo, 1, t))
                    events.append((hi + 1, -1, t))
        events.sort()
        active: dict[int, int] = {}
        segs: list[tuple[int, int, int]] = []
        prev = None
        j = 0
        while j < len(events):
            pos = events[j][0]
            if prev is not None and active and pos > prev:
                T = _closure(nfa, active.keys())
                k = index.get(T)
                if k is None:
                    if len(order) >= max_states:
                        raise RegexTooLargeError(
                            f"regex needs more than {max_states} DFA states", pattern
                        )
                    k = index[T] = len(order)
                    order.append(T)
                if segs and segs[-1][2] == k and segs[-1][1] == prev - 1:
                    segs[-1] = (segs[-1][0], pos - 1, k)
                else:
                    segs.append((prev, pos - 1, k))
            while j < len(events) and events[j][0] == pos:
                _, d, t = events[j]
                c = active.get(t, 0) + d
                if c:
                    active[t] = c
                else:
                    active.pop(t, None)
                j += 1
            prev = pos
        trans.append(segs)
    return trans, accepting


def _clip(segs: list, lo: int, hi: int, base: int) -> tuple:
    """Segments restricted to ``[lo, hi]`` and shifted by ``-base``."""
    starts = [s[0] for s in segs]
    j = max(bisect.bisect_right(starts, lo) - 1, 0)
    out = []
    while j < len(segs) and segs[j][0] <= hi:
        a, b, t = segs[j]
        a, b = max(a, lo), min(b, hi)
        if a <= b:
            out.append((a - base, b - base, t))
        j += 1
    return tuple(out)


def _blocks(segs, lo: int, hi: int, base: int, block: int) -> dict[int, list]:
    """Sorted segments within ``[lo, hi]``, cut into blocks of ``block`` code points from
    ``base``: ``{block index: segments relative to the block's start}`` (one pass)."""
    out: dict[int, list] = {}
    for a, b, t in segs:
        if b < lo:
            continue
        if a > hi:
            break
        a, b = max(a, lo), min(b, hi)
        c = (a - base) // block
        while a <= b:
            start = base + c * block
            end = min(b, start + block - 1)
            out.setdefault(c, []).append((a - start, end - start, t))
            a = end + 1
            c += 1
    return out


# (bytes of continuation, lead byte range, first code point of the first lead, valid cp range)
_UTF8_LEADS = (
    (1, 0xC2, 0xDF, 0x80, 0x7FF),
    (2, 0xE0, 0xEF, 0x800, 0xFFFF),
    (3, 0xF0, 0xF4, 0x10000, MAX_UNICODE),
)


def _to_bytes(char_trans: list, char_accepting: list, max_states: int, pattern: str, budget: _Budget):
    """Turn a DFA over code points into one over UTF-8 bytes.

    An intermediate state (inside a multi-byte character) is identified by what it still
    does: ``(continuation bytes left, segments of the remaining code point block)``, so
    identical sub-blocks share one state.
    """
    n_char = len(char_trans)
    rows: list[np.ndarray] = []
    accepting: list[bool] = []
    for s in range(n_char):
        rows.append(np.full(256, -1, dtype=np.int32))
        accepting.append(bool(char_accepting[s]))
    memo: dict = {}
    pending: list = []

    def intermediate(r: int, segs: tuple) -> int:
        key = (r, segs)
        k = memo.get(key)
        if k is None:
            k = memo[key] = len(rows)
            if k >= max_states:
                raise RegexTooLargeError(f"regex needs more than {max_states} byte-DFA states", pattern)
            rows.append(np.full(256, -1, dtype=np.int32))
            accepting.append(False)
            pending.append((k, r, segs))
        return k

    leads: dict = {}  # non-ASCII segments -> their lead bytes (states often share them)
    for s in range(n_char):
        segs = char_trans[s]
        row = rows[s]
        for lo, hi, t in _clip(segs, 0, 0x7F, 0):
            row[lo : hi + 1] = t
        if not segs or segs[-1][1] < 0x80:
            continue  # ASCII only: no multi-byte characters
        wide = _clip(segs, 0x80, MAX_UNICODE, 0)
        hit = leads.get(wide)
        if hit is None:
            hit = leads[wide] = utf8_lead_bytes(wide, intermediate)
        for byte, k in hit:
            row[byte] = k
    while pending:
        if len(pending) % 256 == 0:
            budget.check()
        k, r, segs = pending.pop()
        row = rows[k]
        for byte, target in utf8_continuation_bytes(r, segs, intermediate):
            row[byte] = target
    return np.stack(rows), np.asarray(accepting, dtype=bool)


def utf8_lead_bytes(wide: list, intermediate) -> list[tuple[int, int]]:
    """``(lead byte, state)`` for the non-ASCII segments ``wide`` of a code-point state; the
    state inside the character is ``intermediate(continuation bytes left, segments of the
    remaining block)``, which the caller interns (so equal sub-blocks share one state)."""
    out = []
    for r, lead_lo, _lead_hi, cp_lo, cp_hi in _UTF8_LEADS:
        block = 64**r
        for c, sub in _blocks(wide, cp_lo, cp_hi, (cp_lo // block) * block, block).items():
            out.append((lead_lo + c, intermediate(r, tuple(sub))))
    return out


def utf8_continuation_bytes(r: int, segs: tuple, intermediate) -> list[tuple[int, int]]:
    """``(continuation byte, state)`` of an intermediate state with ``r`` bytes left: the
    segments' target once the character is complete, else a smaller intermediate state."""
    block = 64 ** (r - 1)
    return [(0x80 + c, sub[0][2] if r == 1 else intermediate(r - 1, tuple(sub)))
            for c, sub in _blocks(segs, 0, 64 * block - 1, 0, block).items()]


def _prune_and_minimise(trans: np.ndarray, accepting: np.ndarray, start: int, budget: "_Budget | None" = None):
    """Drop states that cannot reach acceptance, merge equivalent ones, renumber from ``start = 0``."""
    n = len(trans)
    # co-reachability: iterate "has a live successor" to a fixpoint
    live = accepting.copy()
    while True:
        succ_live = np.where(trans >= 0, live[np.maximum(trans, 0)], False).any(axis=1)
        new = live | succ_live
        if (new == live).all():
            break
        live = new
    if not live[start]:
        return None
    trans = np.where((trans >= 0) & live[np.maximum(trans, 0)], trans, -1)
    # reachability from start
    reach = np.zeros(n, dtype=bool)
    reach[start] = True
    frontier = np.array([start])
    while len(frontier):
        nxt = np.unique(trans[frontier])
        nxt = nxt[nxt >= 0]
        nxt = nxt[~reach[nxt]]
        reach[nxt] = True
        frontier = nxt
    keep = np.flatnonzero(reach & live)
    remap = np.full(n, -1, dtype=np.int64)
    remap[keep] = np.arange(len(keep))
    trans = trans[keep]
    trans = np.where(trans >= 0, remap[np.maximum(trans, 0)], -1)
    accepting = accepting[keep]
    start = int(remap[start])
    # Moore partition refinement. Bytes whose columns are equal behave alike, so one column
    # per byte class is enough (a few dozen instead of 256), and rows are compared as opaque
    # byte strings: a bounded repeat such as [^\n]{0,100} needs one round per repetition.
    columns = np.unique(trans.T, axis=0)
    reduced = np.ascontiguousarray(columns.T)
    cls = accepting.astype(np.int64)
    n_cls = len(np.unique(cls))
    while True:
        if budget is not None:
            budget.check()
        succ = np.where(reduced >= 0, cls[np.maximum(reduced, 0)], -1)
        sig = np.ascontiguousarray(np.concatenate([cls[:, None], succ], axis=1), dtype=np.int64)
        rows_as_bytes = sig.view(np.dtype((np.void, sig.dtype.itemsize * sig.shape[1]))).reshape(-1)
        _, new_cls = np.unique(rows_as_bytes, return_inverse=True)
        new_cls = new_cls.reshape(-1).astype(np.int64)
        n_new = int(new_cls.max()) + 1
        cls = new_cls
        if n_new == n_cls:
            break
        n_cls = n_new
    # renumber classes in BFS order from start so start == 0 and numbering is canonical
    order = [int(cls[start])]
    seen = {order[0]}
    rep = {}
    for s in range(len(cls)):
        rep.setdefault(int(cls[s]), s)
    i = 0
    while i < len(order):
        row = trans[rep[order[i]]]
        for t in row[row >= 0]:
            c = int(cls[t])
            if c not in seen:
                seen.add(c)
                order.append(c)
        i += 1
    new_id = np.full(n_cls, -1, dtype=np.int64)
    new_id[order] = np.arange(len(order))
    reps = np.array([rep[c] for c in order], dtype=np.int64)
    rows = trans[reps]
    out = np.where(rows >= 0, new_id[cls[np.maximum(rows, 0)]], -1).astype(np.int32)
    acc = accepting[reps].copy()
    return out, acc


# -- the public object ---------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class ByteDFA:
    """A minimal DFA over bytes: ``trans[state, byte]`` is the next state or ``-1`` (dead).

    Every state can reach an accepting one.  Build with :meth:`from_regex` or :meth:`literal`.
    """

    trans: np.ndarray  # int32 [n_states, 256]
    accepting: np.ndarray  # bool [n_states]
    start: int = 0
    pattern: str = field(default="", compare=False)

    # -- construction --------------------------------------------------------------------
    @classmethod
    def from_regex(cls, pattern: str, flags: int = 0, *, max_states: int = 50_000) -> "ByteDFA":
        """Compile a Python regex (``re.fullmatch`` semantics) to a byte DFA.

        ``flags`` takes ``re.IGNORECASE``, ``re.DOTALL``, ``re.VERBOSE``, ``re.ASCII``,
        ``re.MULTILINE`` (harmless: inner anchors are rejected anyway).
        Raises :class:`RegexError` (syntax, unsupported construct), :class:`RegexTooLargeError`
        or :class:`EmptyLanguageError`.
        """
        return _compile_cached(pattern, int(flags), max_states)

    @classmethod
    def literal(cls, data: bytes) -> "ByteDFA":
        """The DFA matching exactly ``data``."""
        n = len(data) + 1
        trans = np.full((n, 256), -1, dtype=np.int32)
        for i, b in enumerate(data):
            trans[i, b] = i + 1
        accepting = np.zeros(n, dtype=bool)
        accepting[-1] = True
        return cls(trans, accepting, 0, re.escape(data.decode("utf-8", "surrogateescape")))

    # -- queries ----------------------------------------------------------------------------
    @property
    def n_states(self) -> int:
        return len(self.accepting)

    @cached_property
    def rows(self) -> list[list[int]]:
        """``trans`` as nested Python lists: the fast path for walking a few bytes."""
        return self.trans.tolist()

    @cached_property
    def accepting_list(self) -> list[bool]:
        return self.accepting.tolist()

    def walk(self, state: int, data: bytes) -> int:
        """State after reading ``data`` from ``state``; ``-1`` if no word continues that way."""
        rows = self.rows
        for b in data:
            if state < 0:
                return -1
            state = rows[state][b]
        return state

    def matches(self, data: bytes) -> bool:
        """True iff ``data`` is a word of the language (``re.fullmatch`` on its UTF-8 text)."""
        s = self.walk(self.start, data)
        return s >= 0 and self.accepting_list[s]

    def is_accepting(self, state: int) -> bool:
        return state >= 0 and self.accepting_list[state]

    def row(self, state: int) -> np.ndarray:
        """The 256 successors of ``state`` (``-1``: dead), as the lexer reads terminals."""
        return self.trans[state]

    @cached_property
    def matches_empty(self) -> bool:
        return bool(self.accepting[self.start])

    def walk_tokens(self, state: int, vocab) -> np.ndarray:
        """End state of every token of ``vocab`` read from ``state`` (``-1`` = dead), vectorised."""
        return walk_all(self.trans, state, vocab)


def walk_all(trans: np.ndarray, state: int, vocab) -> np.ndarray:
    """End state, for every token of ``vocab``, of reading its bytes from ``state`` in ``trans``.

    Level-by-level over the CSR bytes: only tokens still alive and not yet finished are
    gathered at each byte position, so dead prefixes cost nothing after the first byte.
    Special / empty tokens get ``-1``.
    """
    size = vocab.size
    out = np.full(size, -1, dtype=np.int32)
    active = _usable_ids(vocab)
    lengths = vocab.lengths[active]
    pos = vocab.offsets[active]
    flat = vocab.flat_bytes
    st = np.full(len(active), state, dtype=np.int32)
    j = 0
    while len(active):
        st = trans[st, flat[pos + j]]
        alive = st >= 0
        done = alive & (lengths == j + 1)
        out[active[done]] = st[done]
        keep = alive & (lengths > j + 1)
        active, lengths, pos, st = active[keep], lengths[keep], pos[keep], st[keep]
        j += 1
    return out


_USABLE: dict = {}


def _usable_ids(vocab) -> np.ndarray:
    hit = _USABLE.get(id(vocab))
    if hit is not None and hit[0] is vocab:
        return hit[1]
    ids = np.flatnonzero(vocab.usable)
    _USABLE[id(vocab)] = (vocab, ids)
    return ids


_DFA_CACHE: dict = {}


def _compile_cached(pattern: str, flags: int, max_states: int) -> ByteDFA:
    key = (pattern, flags, max_states)
    hit = _DFA_CACHE.get(key)
    if hit is None:
        hit = _DFA_CACHE[key] = _compile(pattern, flags, max_states)
    return hit


def _compile(pattern: str, flags: int, max_states: int) -> ByteDFA:
    if not isinstance(pattern, str):
        raise RegexError("the pattern must be a str", repr(pattern))
    if flags & re.LOCALE:
        raise RegexError("re.LOCALE is not supported", pattern)
    try:
        parsed = _sre_parse.parse(pattern, flags)
    except re.error as exc:
        raise RegexError(f"invalid regex: {exc.msg}", pattern, exc.pos) from None
    except (OverflowError, RecursionError) as exc:
        raise RegexError(f"invalid regex: {exc}", pattern) from None
    gflags = parsed.state.flags
    if gflags & _sre_c.SRE_FLAG_LOCALE:
        raise RegexError("locale-dependent matching is not supported", pattern, _locate(pattern, "locale-dependent matching"))
    if _expanded_size(list(parsed)) > max_states * 4:
        raise RegexTooLargeError(
            f"regex expands to more than {max_states * 4} NFA states (large counted repeats?)", pattern
        )
    nfa = _NFA(pattern, max_states * 4)
    start = nfa.new()
    try:
        final = nfa.build(list(parsed), gflags, start, top=True)
    except RecursionError:
        raise RegexTooLargeError("regex nests too deeply", pattern) from None
    budget = _Budget(pattern)
    char_trans, char_acc = _determinise(nfa, start, final, max_states, pattern, budget)
    trans, acc = _to_bytes(char_trans, char_acc, max_states * 4, pattern, budget)
    result = _prune_and_minimise(trans, acc, 0, budget)
    if result is None:
        raise EmptyLanguageError("regex matches no string", pattern)
    trans, acc = result
    if len(acc) > max_states:
        raise RegexTooLargeError(f"regex needs {len(acc)} DFA states (limit {max_states})", pattern)
    return ByteDFA(trans, acc, 0, pattern)
