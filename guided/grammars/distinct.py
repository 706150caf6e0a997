"""Distinct lexemes: terminals whose values may not repeat within one run (JSON ``uniqueItems``).

A grammar spec may name ``distinct`` terminals and ``distinct_keep`` terminals.  A *run*
is a sequence of lexemes that are all distinct or keep terminals (an array's string items
with the commas and whitespace between them); any other lexeme ends it.  Within a run no
two distinct lexemes may have the same value (their JSON string value: ``"a"`` and
``"\\u0061"`` are equal).  A context-free parser cannot remember the values, so a grammar
state's branch carries them: its ``tail`` is ``(lexeme so far, values of the run)``.

    >>> spec = GrammarSpec(..., distinct=("ITEM",), distinct_keep=("COMMA",))
    >>> Grammar.from_spec(spec).start(vocab).advance_bytes(b'["a","a"')    # None

Exactness rests on the compiler's promise (``regex.co_infinite``): every prefix of a
distinct lexeme has infinitely many completions.  Then no prefix is dead for having only
earlier values as completions, liveness is the plain grammar's, and only a lexeme's end
can repeat a value.  Masks are the plain grammar's (shared, cached) minus the tokens that
end a repeated lexeme: a token closing the current lexeme is checked by its value, and a
token holding two quotes (``"a","a"``) is walked exactly.
"""

from __future__ import annotations

import json

import numpy as np

__all__ = ["walk_bytes", "accepting", "live", "filter_mask", "EMPTY_TAIL"]

EMPTY_TAIL = (b"", None)  # (lexeme bytes, values of the run: None outside a run)


def _value(lexeme: bytes):
    return json.loads(lexeme)


def _tracks(g, p) -> bool:
    """May the lexeme starting at parser state ``p`` be a distinct one (its bytes are kept)?"""
    hit = p.g.distinct_starts.get(p)
    if hit is None:
        hit = p.g.distinct_starts[p] = bool(p.col.allowed & g.distinct)
    return hit


def feed(g, p, best: tuple, lexeme: bytes, seen) -> list:
    """``(parser state, run values)`` after a lexeme that is one of ``best``; a distinct
    terminal whose value is already in the run gives nothing."""
    out: list = []
    for t in best:
        for p2 in p.feed((t,), 0):
            if t in g.distinct:
                v = _value(lexeme)
                if seen is not None and v in seen:
                    continue
                s2 = (seen or frozenset()) | {v}
            elif t in g.distinct_keep:
                s2 = seen
            else:
                s2 = None
            if not any(p2 is a and s2 == b for a, b in out):
                out.append((p2, s2))
    return out


def walk_bytes(g, p, q: int, tail: tuple, data: bytes, i: int, out: list) -> None:
    """Read ``data[i:]`` from branch ``(p, q, tail)``; append the surviving branches to ``out``."""
    lexeme, seen = tail
    lex = g.lexer
    n = len(data)
    seg = i
    track = _tracks(g, p)
    while True:
        q, i = lex.read(q, data, i)
        if i >= n:
            break
        best = lex.best[q]
        if not best:
            return
        nexts = feed(g, p, best, lexeme + data[seg:i] if track else b"", seen)
        if not nexts:
            return
        for p2, s2 in nexts[1:]:
            walk_bytes(g, p2, p2.lex_start, (b"", s2), data, i, out)
        p, seen = nexts[0]
        q = p.lex_start
        lexeme = b""
        seg = i
        track = _tracks(g, p)
    out.append((p, q, (lexeme + data[seg:] if track else b"", seen)))


def accepting(g, p, q: int, tail: tuple) -> bool:
    lex = g.lexer
    if lex.is_start(q):
        return p.eof_ok()
    best = lex.best[q]
    return bool(best) and any(p2.eof_ok() for p2, _ in feed(g, p, best, tail[0], tail[1]))


def live(g, p, q: int, tail: tuple) -> bool:
    lex = g.lexer
    if lex.is_start(q):
        return p.can_continue()
    lex.rows_of(q)
    if lex.can_extend[q]:  # (co-infinite: an extension can always differ from the run's values)
        return True
    best = lex.best[q]
    return bool(best) and any(p2.can_continue() for p2, _ in feed(g, p, best, tail[0], tail[1]))


class _Quotes:
    """Per vocabulary: tokens holding one ``"`` (where), those of them without a backslash
    by the bytes before the quote, those with one, and tokens holding several quotes."""

    def __init__(self, vocab):
        one, pos, multi, slash = [], [], [], []
        self.by_content: dict[bytes, list[int]] = {}
        for t, data in enumerate(vocab.token_bytes):
            c = data.count(b'"')
            if c == 1:
                k = data.index(b'"')
                one.append(t)
                pos.append(k)
                if b"\\" in data:
                    slash.append(t)
                else:
                    self.by_content.setdefault(data[:k], []).append(t)
            elif c > 1:
                multi.append(t)
        self.one = np.asarray(one, dtype=np.int64)
        self.pos = dict(zip(one, pos))
        self.slash = np.asarray(slash, dtype=np.int64)
        self.multi = np.asarray(multi, dtype=np.int64)


def _quotes(tables) -> _Quotes:
    hit = getattr(tables, "_distinct_quotes", None)
    if hit is None:
        hit = tables._distinct_quotes = _Quotes(tables.vocab)
    return hit


def _token_survives(g, p, q: int, tail: tuple, data: bytes) -> bool:
    out: list = []
    walk_bytes(g, p, q, tail, data, 0, out)
    return any(live(g, *b) for b in out)


def filter_mask(tables, p, q: int, tail: tuple, base: np.ndarray) -> np.ndarray:
    """``base`` (the plain grammar's mask of this branch) without the tokens that repeat a
    value of the run.  Those end a distinct lexeme, so they hold a ``"``: a token that closes
    the current lexeme is judged by its value, one with several quotes by an exact walk."""
    g = tables.g
    lexeme, seen = tail
    if seen is None and not lexeme:  # outside a run: depends on (p, q) only, cached beside the masks
        key = ("distinct", p, q)
        hit = tables.masks.get(key)
        if hit is None:
            hit = tables.masks[key] = _filter(tables, p, q, tail, base)
            if len(tables.masks) > tables.max_masks:
                tables.masks.popitem(last=False)
        return hit
    return _filter(tables, p, q, tail, base)


def _filter(tables, p, q: int, tail: tuple, base: np.ndarray) -> np.ndarray:
    g = tables.g
    lexeme, seen = tail
    quotes = _quotes(tables)
    token_bytes = tables.vocab.token_bytes
    cleared: list = []
    multi = quotes.multi[base[quotes.multi]]
    for t in multi.tolist():
        if not _token_survives(g, p, q, tail, token_bytes[t]):
            cleared.append(t)
    if lexeme and seen and not g.lexer.is_start(q):
        try:
            so_far = _value(lexeme + b'"')  # the value read so far (fails mid-escape or mid-character)
        except ValueError:
            so_far = None
        if so_far is None:  # every token that may close the lexeme, walked
            suspects = quotes.one[base[quotes.one]].tolist()
        else:
            # a quote after plain bytes closes the lexeme with the value so far plus those
            # bytes: only the bytes that complete a value of the run repeat one
            suspects = quotes.slash[base[quotes.slash]].tolist()
            for v in seen:
                if v.startswith(so_far):
                    cleared.extend(t for t in quotes.by_content.get(v[len(so_far):].encode("utf-8"), ()) if base[t])
        for t in suspects:
            if not _token_survives(g, p, q, tail, token_bytes[t]):
                cleared.append(t)
    if not cleared:
        return base
    mask = base.copy()
    mask[cleared] = False
    mask.flags.writeable = False
    return mask
