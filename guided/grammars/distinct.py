"""Distinct lexemes: terminals whose values may not repeat within one run (JSON ``uniqueItems``).

A grammar spec may name ``distinct`` terminals and ``distinct_keep`` terminals.  A *run*
is a sequence of lexemes that are all distinct or keep terminals (an array's string items
with the commas and whitespace between them); any other lexeme ends it.  Within a run no
two distinct lexemes may have the same value (their JSON string value: ``"a"`` and
``"\\u0061"`` are equal).  A context-free parser cannot remember the values, so a grammar
state's branch carries them: its ``tail`` is ``(lexeme so far, values of the run)``.

    >>> spec = GrammarSpec(..., distinct=("ITEM",), distinct_keep=("COMMA",))
    >>> Grammar.from_spec(spec).start(vocab).advance_bytes(b'["a","a"')    # None

Values compare as JSON values: a string lexeme (``"..."``) by its decoded string, a plain
lexeme (an integer written as an integer) by its number, so ``0`` and ``-0`` are one value.

Exactness needs two checks.  A lexeme that *ends* with an earlier value is refused
(:func:`lexeme_end`).  A lexeme *prefix* all of whose completions are earlier values is
dead (:func:`prefix_alive`): with ``maxLength: 2`` over ``[ab]``, after ``["ab","a`` the
prefix ``"a`` still has ``"a"`` and ``"aa"``, and is dead once both were written.  Only a
prefix of an earlier value can be dead (any other prefix's completions are all new), so the
check walks the terminal's byte automaton along the trie of the run's values, decoding JSON
escapes as it goes, and stops at the first byte that leaves the trie.

Masks are the plain grammar's (shared, cached) minus the tokens that would repeat a value
or stop at a dead prefix.  Only a few tokens can: those that close the lexeme with the
bytes that complete an earlier value, those whose bytes (after the lexeme so far, or after
an opening quote) run along an earlier value, those with escapes and those holding several
lexemes.  They are found by look-ups on the earlier values and walked exactly; the rest of
the plain mask stands.  The grammar engine has one walk: it asks :func:`grown_tail`,
:func:`lexeme_end` and :func:`prefix_alive` here as a lexeme grows and ends.
"""

from __future__ import annotations

import json
import weakref

import numpy as np

from guided.grammars.distinct_values import (
    END, RAW, RUN, decoded_segments, kind_of, open_ended, read_lexeme, read_more, reaches_new, trie_paths, value_trie,
    walk,
)

__all__ = ["EMPTY_TAIL", "tracks", "grown_tail", "lexeme_end", "prefix_alive", "filter_mask"]

EMPTY_TAIL = (b"", None)  # (lexeme bytes, values of the run: None outside a run)


def _value(lexeme: bytes):
    return json.loads(lexeme)


def prefix_alive(g, q: int, tail: tuple) -> bool:
    """Can the lexeme read so far (lexer state ``q``) still end with a value the run has not
    written?  True as well when it may be another, not distinct, terminal."""
    lexeme, seen = tail
    if not seen or not lexeme:
        return True
    for t, s in g.lexer.pairs[q]:
        if t < 0:
            continue
        if t not in g.distinct or open_ended(g, t):
            return True
        kind = kind_of(g, t)
        r = read_lexeme(kind, lexeme, value_trie(seen, kind))
        if r is None or r == "end":
            continue  # (not this terminal's lexeme; a closed string ends through lexeme_end)
        dec, node = r
        if node is None or reaches_new(g.lexer.dfas[t], s, kind, dec, node):
            return True
    return False


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


class _StringIndex:
    """Per vocabulary, the tokens with a quote or a backslash by content: with one quote (by
    the bytes before it and after it), with several quotes, and with a backslash (by their
    decoded bytes up to the first unescaped quote and after the last one)."""

    def __init__(self, vocab):
        multi: list[int] = []
        before: dict[bytes, list[int]] = {}
        after: dict[bytes, list[int]] = {}
        esc_first: dict[bytes, list[int]] = {}
        esc_last: dict[bytes, list[int]] = {}
        for t, data in enumerate(vocab.token_bytes):
            if b'"' not in data and b"\\" not in data:
                continue
            c = data.count(b'"')
            if b"\\" in data:
                segments = decoded_segments(data)
                if segments is not None:
                    esc_first.setdefault(segments[0], []).append(t)
                    if len(segments) > 1:
                        esc_last.setdefault(segments[-1], []).append(t)
            elif c == 1:
                at = data.index(b'"')
                before.setdefault(data[:at], []).append(t)
                after.setdefault(data[at + 1:], []).append(t)
            if c > 1:
                multi.append(t)
        self.multi = np.asarray(multi, dtype=np.int64)
        self.before, self.after, self.esc_first, self.esc_last = (
            {k: np.asarray(v, dtype=np.int64) for k, v in d.items()} for d in (before, after, esc_first, esc_last))


class _PlainIndex:
    """Per vocabulary, the tokens that hold a plain (integer) lexeme's bytes, by their
    leading run (then a byte that ends it), trailing run, or whole content; those with a
    run between other bytes; and those that start with a byte that ends a run."""

    def __init__(self, vocab):
        lead: dict[bytes, list[int]] = {}
        trail: dict[bytes, list[int]] = {}
        run: dict[bytes, list[int]] = {}
        inner: list[int] = []
        trailing: list[int] = []  # another byte, then a run: ends a lexeme and starts the next
        for t, data in enumerate(vocab.token_bytes):
            if not data or RUN.isdisjoint(data):
                continue
            i = 0
            while i < len(data) and data[i] in RUN:
                i += 1
            if i == len(data):
                run.setdefault(data, []).append(t)
                continue
            if i:
                lead.setdefault(data[:i], []).append(t)
            j = len(data)
            while data[j - 1] in RUN:
                j -= 1
            if j < len(data):
                trail.setdefault(data[j:], []).append(t)
                trailing.append(t)
            if i and j < len(data) or any(b in RUN for b in data[i:j]):
                inner.append(t)  # two plain lexemes meet in it, or a whole one lies inside
        first = np.asarray([d[0] if d else 0x30 for d in vocab.token_bytes], dtype=np.uint8)
        lead[b""] = np.flatnonzero(~np.isin(first, np.frombuffer(bytes(sorted(RUN)), dtype=np.uint8)))
        self.inner = np.asarray(inner, dtype=np.int64)
        self.trailing = np.asarray(trailing, dtype=np.int64)
        self.lead, self.trail, self.run = (
            {k: np.asarray(v, dtype=np.int64) for k, v in d.items()} for d in (lead, trail, run))


_INDEXES: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _index(vocab, kind: str):
    per_vocab = _INDEXES.setdefault(vocab, {})
    hit = per_vocab.get(kind)
    if hit is None:
        hit = per_vocab[kind] = _StringIndex(vocab) if kind == "string" else _PlainIndex(vocab)
    return hit


def filter_mask(tables, p, q: int, tail: tuple, base: np.ndarray, survives) -> np.ndarray:
    """``base`` (the plain grammar's mask of this branch) without the tokens that repeat a
    value of the run or stop where only earlier values are left: the suspects (see the
    module's docstring) are walked exactly (``survives(g, p, q, tail, token_bytes)``: the
    grammar's own advance)."""
    lexeme, seen = tail
    if seen is None and not lexeme:  # outside a run: depends on (p, q) only, cached beside the masks
        key = ("distinct", p, q)
        hit = tables.cached(key)
        if hit is None:
            hit = _filter(tables, p, q, tail, base, survives)
            tables.remember(key, hit)
        return hit
    return _filter(tables, p, q, tail, base, survives)


def _suspects(tables, q: int, tail: tuple, base: np.ndarray) -> list:
    """Arrays of the tokens ``base`` allows that may repeat a value or stop at a dead
    prefix; every other allowed token keeps the plain grammar's answer."""
    g, vocab = tables.g, tables.vocab
    lexeme, seen = tail
    kinds = {kind_of(g, t) for t in g.distinct}
    inside = bool(lexeme) and not g.lexer.is_start(q)
    out: list = []
    for kind in kinds:  # several lexemes in one token: always walked
        ix = _index(vocab, kind)
        if kind == "string":
            out.append(ix.multi[base[ix.multi]])
        else:
            out.append(ix.inner[base[ix.inner]])
            if inside and lexeme[:1] != b'"':  # the lexeme ends in the token and another starts
                out.append(ix.trailing[base[ix.trailing]])
    if not seen:
        return out
    bounded = {kind_of(g, t) for t in g.distinct if not open_ended(g, t)}  # (prefixes that can die)

    def by(table: dict, key: bytes) -> None:
        hit = table.get(key)
        if hit is not None:
            out.append(hit[base[hit]])

    def raw(key: bytes) -> None:
        t = vocab.bytes_to_id.get(key)
        if t is not None and b'"' not in key and b"\\" not in key and base[t]:
            out.append([t])

    if "string" in kinds:
        ix = _index(vocab, "string")
        root = value_trie(seen, "string")
        if "string" in bounded:
            for path, _ in trie_paths(root):  # an opening quote, then bytes along an earlier value
                if path:  # (an empty prefix has new values: an array has no more items than values)
                    by(ix.after, path)
                by(ix.esc_last, path)  # (an unfinished escape may have none)
        r = read_lexeme("string", lexeme, root) if inside and lexeme[:1] == b'"' else None
        if r is not None and r != "end" and r[1] is not None:  # (off the trie nothing can repeat)
            dec, node = r
            if dec == RAW:
                for path, n in trie_paths(node):  # bytes along an earlier value, or closing on one
                    if END in n:
                        by(ix.before, path)
                    if END in n or "string" in bounded:
                        by(ix.esc_first, path)
                    if "string" in bounded:
                        raw(path)
            else:  # inside an escape: every token that finishes it on an earlier value
                for t in np.flatnonzero(base).tolist():
                    r2 = read_more(dec, node, vocab.token_bytes[t])
                    if r2 == "end" or (r2 is not None and r2[1] is not None and "string" in bounded):
                        out.append([t])
    if "plain" in kinds:
        ix = _index(vocab, "plain")
        root = value_trie(seen, "plain")
        for path, n in trie_paths(root):  # a plain lexeme that starts inside the token
            if path and END in n:
                by(ix.lead, path)
            if path and "plain" in bounded:
                by(ix.trail, path)
                by(ix.run, path)
        node = walk(root, lexeme) if inside and lexeme[:1] != b'"' else None
        if node is not None:
            for path, n in trie_paths(node):  # the lexeme so far, then a run along an earlier value
                if END in n:
                    by(ix.lead, path)
                if "plain" in bounded:
                    by(ix.run, path)
    return out


def _filter(tables, p, q: int, tail: tuple, base: np.ndarray, survives) -> np.ndarray:
    g = tables.g
    token_bytes = tables.vocab.token_bytes
    cleared: list = []
    done: set = set()
    for group in _suspects(tables, q, tail, base):
        for t in (group.tolist() if isinstance(group, np.ndarray) else group):
            if t in done or not base[t]:
                continue
            done.add(t)
            if not survives(g, p, q, tail, token_bytes[t]):
                cleared.append(t)
    if not cleared:
        return base
    mask = base.copy()
    mask[cleared] = False
    mask.flags.writeable = False
    return mask
