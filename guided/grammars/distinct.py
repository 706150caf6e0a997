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
token holding two quotes (``"a","a"``) is walked exactly.  The grammar engine has one walk:
it asks :func:`grown_tail` and :func:`lexeme_end` here as a lexeme grows and ends.
"""

from __future__ import annotations

import json

import numpy as np

__all__ = ["EMPTY_TAIL", "tracks", "grown_tail", "lexeme_end", "filter_mask"]

EMPTY_TAIL = (b"", None)  # (lexeme bytes, values of the run: None outside a run)


def _value(lexeme: bytes):
    return json.loads(lexeme)


def tracks(g, p) -> bool:
    """May the lexeme starting at parser state ``p`` be a distinct one (its bytes are kept)?"""
    return not g.distinct.isdisjoint(p.col.allowed)


def grown_tail(g, p, tail: tuple, read: bytes) -> tuple:
    """``tail`` after ``read`` more bytes of the lexeme that started at ``p``."""
    lexeme, seen = tail
    return (lexeme + read, seen) if read and tracks(g, p) else tail


def lexeme_end(g, p, best: tuple, tail: tuple) -> list:
    """``(parser state, fresh tail)`` after the lexeme of ``tail`` ending as one of ``best``;
    a distinct terminal whose value is already in the run gives nothing.  Feeding one
    terminal at a time tells which one the parser took (a tie gives separate branches)."""
    lexeme, seen = tail
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
            if not any(p2 is a and s2 == b for a, (_, b) in out):
                out.append((p2, (b"", s2)))
    return out


class _Quotes:
    """Per vocabulary: tokens holding one ``"`` (where), those of them without a backslash
    by the bytes before the quote, those with one, and tokens holding several quotes."""

    def __init__(self, vocab):
        one, multi, slash = [], [], []
        self.by_content: dict[bytes, list[int]] = {}
        for t, data in enumerate(vocab.token_bytes):
            c = data.count(b'"')
            if c == 1:
                one.append(t)
                if b"\\" in data:
                    slash.append(t)
                else:
                    self.by_content.setdefault(data[: data.index(b'"')], []).append(t)
            elif c > 1:
                multi.append(t)
        self.one = np.asarray(one, dtype=np.int64)
        self.slash = np.asarray(slash, dtype=np.int64)
        self.multi = np.asarray(multi, dtype=np.int64)


def _quotes(tables) -> _Quotes:
    hit = getattr(tables, "_distinct_quotes", None)
    if hit is None:
        hit = tables._distinct_quotes = _Quotes(tables.vocab)
    return hit


def filter_mask(tables, p, q: int, tail: tuple, base: np.ndarray, survives) -> np.ndarray:
    """``base`` (the plain grammar's mask of this branch) without the tokens that repeat a
    value of the run.  Those end a distinct lexeme, so they hold a ``"``: a token that closes
    the current lexeme is judged by its value, one with several quotes by an exact walk
    (``survives(g, p, q, tail, token_bytes)``: the grammar's own advance)."""
    lexeme, seen = tail
    if seen is None and not lexeme:  # outside a run: depends on (p, q) only, cached beside the masks
        key = ("distinct", p, q)
        hit = tables.cached(key)
        if hit is None:
            hit = _filter(tables, p, q, tail, base, survives)
            tables.remember(key, hit)
        return hit
    return _filter(tables, p, q, tail, base, survives)


def _filter(tables, p, q: int, tail: tuple, base: np.ndarray, survives) -> np.ndarray:
    g = tables.g
    lexeme, seen = tail
    quotes = _quotes(tables)
    token_bytes = tables.vocab.token_bytes
    cleared: list = []
    multi = quotes.multi[base[quotes.multi]]
    for t in multi.tolist():
        if not survives(g, p, q, tail, token_bytes[t]):
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
            if not survives(g, p, q, tail, token_bytes[t]):
                cleared.append(t)
    if not cleared:
        return base
    mask = base.copy()
    mask[cleared] = False
    mask.flags.writeable = False
    return mask
