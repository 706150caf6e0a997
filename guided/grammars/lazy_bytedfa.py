"""Byte DFAs whose states are built when the lexer first reads them.

A terminal such as a JSON string with ``maxLength: 4096`` has tens of thousands of byte
states, of which a generation (or the first mask) visits a few hundred.  A
:class:`LazyByteDFA` takes an automaton over *code points* that can list the transitions
of one state on demand, and spells each state out in UTF-8 bytes only when its row is
asked for:

    >>> dfa = LazyByteDFA(source)          # source.start, .accepting(key), .segments(key)
    >>> dfa.row(dfa.start)                 # 256 successors (-1: dead), built now
    >>> dfa.materialise()                  # every reachable state, as a ByteDFA (tests)

A source's ``segments(key)`` are sorted, disjoint ``(lo, hi, target key)`` code-point
ranges (no surrogates), and every target must still reach an accepting state: the lexer
relies on every state being live, so a source gives only live states.  States are not
merged with equivalent ones (the result may be larger than minimal); that costs lexer
states, never a wrong answer.  Reads the lexer makes: ``start``, ``row(s)``,
``is_accepting(s)``, ``matches_empty``.
"""

from __future__ import annotations

from typing import Hashable, Protocol

import numpy as np

from guided.grammars.bytedfa import (
    MAX_UNICODE,
    ByteDFA,
    RegexTooLargeError,
    _clip,
    utf8_continuation_bytes,
    utf8_lead_bytes,
)

__all__ = ["LazyByteDFA", "CodePointSource"]


class CodePointSource(Protocol):
    """An automaton over code points that lists one state's transitions at a time."""

    start: Hashable

    def accepting(self, key: Hashable) -> bool: ...

    def segments(self, key: Hashable) -> list[tuple[int, int, Hashable]]: ...


class LazyByteDFA:
    """The UTF-8 byte automaton of a :class:`CodePointSource`, built state by state."""

    def __init__(self, source: CodePointSource, pattern: str = "", max_states: int = 1_000_000):
        self.source = source
        self.pattern = pattern
        self.max_states = max_states
        self._keys: list = []  # byte state -> ("c", source key) or ("m", bytes left, segments)
        self._index: dict = {}
        self._rows: list = []
        self._accepting: list[bool] = []
        self.start = self._intern(("c", source.start))

    def _intern(self, key: tuple) -> int:
        q = self._index.get(key)
        if q is None:
            q = self._index[key] = len(self._keys)
            if q >= self.max_states:
                raise RegexTooLargeError(f"automaton needs more than {self.max_states} byte states", self.pattern)
            self._keys.append(key)
            self._rows.append(None)
            self._accepting.append(key[0] == "c" and bool(self.source.accepting(key[1])))
        return q

    def _intermediate(self, r: int, segs: tuple) -> int:
        return self._intern(("m", r, segs))

    @property
    def n_states(self) -> int:
        """States built so far."""
        return len(self._keys)

    def is_accepting(self, state: int) -> bool:
        return state >= 0 and self._accepting[state]

    @property
    def matches_empty(self) -> bool:
        return self._accepting[self.start]

    def row(self, state: int) -> np.ndarray:
        """The 256 successors of ``state`` (``-1``: dead), built on first use (read-only)."""
        row = self._rows[state]
        if row is None:
            row = self._rows[state] = self._build(self._keys[state])
        return row

    def _build(self, key: tuple) -> np.ndarray:
        row = np.full(256, -1, dtype=np.int32)
        if key[0] == "c":
            segs = [(lo, hi, self._intern(("c", t))) for lo, hi, t in self.source.segments(key[1])]
            for lo, hi, q in _clip(segs, 0, 0x7F, 0):
                row[lo : hi + 1] = q
            if segs and segs[-1][1] >= 0x80:
                for byte, q in utf8_lead_bytes(_clip(segs, 0x80, MAX_UNICODE, 0), self._intermediate):
                    row[byte] = q
        else:  # inside a multi-byte character: continuation bytes pick the sub-block
            _, r, segs = key
            for byte, q in utf8_continuation_bytes(r, segs, self._intermediate):
                row[byte] = q
        row.flags.writeable = False
        return row

    def walk(self, state: int, data: bytes) -> int:
        """State after reading ``data`` from ``state``; ``-1`` once no word continues that way."""
        for b in data:
            if state < 0:
                return -1
            state = int(self.row(state)[b])
        return state

    def matches(self, data: bytes) -> bool:
        return self.is_accepting(self.walk(self.start, data))

    def materialise(self, max_states: int = 200_000) -> ByteDFA:
        """Every state reachable from the start, as an eager :class:`ByteDFA` (start 0)."""
        i = 0
        seen = [self.start]
        order = {self.start: 0}
        while i < len(seen):
            for q in np.unique(self.row(seen[i])).tolist():
                if q >= 0 and q not in order:
                    if len(seen) >= max_states:
                        raise RegexTooLargeError(f"automaton has more than {max_states} states", self.pattern)
                    order[q] = len(seen)
                    seen.append(q)
            i += 1
        remap = np.full(self.n_states + 1, -1, dtype=np.int32)
        for q, k in order.items():
            remap[q] = k
        trans = np.stack([remap[self.row(q)] for q in seen]).astype(np.int32)
        accepting = np.asarray([self._accepting[q] for q in seen], dtype=bool)
        return ByteDFA(trans, accepting, 0, self.pattern)
