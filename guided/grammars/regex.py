"""``Regex``: a constraint from a Python regular expression (``re.fullmatch`` semantics).

    >>> state = Regex(r"-?[0-9]+").start(vocab)
    >>> state = state.advance(vocab.bytes_to_id[b"-"])
    >>> state.allowed_mask()[vocab.bytes_to_id[b"42"]]
    True

The regex is compiled once to a byte DFA (:mod:`guided.grammars.bytedfa`); per vocabulary,
the mask of each DFA state is computed on first use by one vectorised walk of every token
and kept (states are few, masks are reused at every step that revisits the state).
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from guided.constraint import Constraint, ConstraintState, FinishedState, pack_into, pack_mask
from guided.grammars.bytedfa import ByteDFA, walk_all
from guided.grammars.engine_lock import ENGINE_LOCK

__all__ = ["Regex", "RegexState"]


class Regex(Constraint):
    """Output must match ``pattern`` entirely (like ``re.fullmatch`` on the decoded text).

    Unsupported constructs (backreferences, lookaround, ...) raise
    :class:`~guided.grammars.bytedfa.RegexError` here, at construction.
    """

    def __init__(self, pattern: str, flags: int = 0):
        super().__init__()
        self.pattern = pattern
        self.flags = flags
        self.dfa = ByteDFA.from_regex(pattern, flags)

    def __repr__(self) -> str:
        return f"Regex({self.pattern!r})"

    def compile(self, vocab) -> "_RegexTables":
        return _RegexTables(self.dfa, vocab)

    def initial_state(self, compiled: "_RegexTables", vocab) -> "RegexState":
        return RegexState(compiled, self.dfa.start)


class _RegexTables:
    """Per-vocabulary masks of DFA states, computed lazily (bounded cache)."""

    def __init__(self, dfa: ByteDFA, vocab, max_cached: int = 1024):
        self.dfa = dfa
        self.vocab = vocab
        self.rows = dfa.rows
        self.accepting = dfa.accepting_list
        self.eos_ids = vocab.eos_ids
        self.special_ids = vocab.special_ids
        self.eos_list = np.asarray(sorted(vocab.eos_ids), dtype=np.int64)
        self._masks: OrderedDict[int, np.ndarray] = OrderedDict()
        self._max_cached = max_cached

    def cached(self, state: int) -> np.ndarray | None:
        """The mask of ``state`` if it is cached (no walk), else None."""
        return self._masks.get(state)

    def mask(self, state: int) -> np.ndarray:
        hit = self._masks.get(state)
        if hit is not None:
            self._masks.move_to_end(state)
            return hit
        mask = walk_all(self.dfa.trans, state, self.vocab) >= 0
        mask[self.eos_list] = self.accepting[state]
        mask.flags.writeable = False
        self._masks[state] = mask
        if len(self._masks) > self._max_cached:
            self._masks.popitem(last=False)
        return mask


class RegexState(ConstraintState):
    """A DFA state; immutable."""

    __slots__ = ("tables", "state", "vocab")

    def __init__(self, tables: _RegexTables, state: int):
        self.tables = tables
        self.state = state
        self.vocab = tables.vocab

    def __repr__(self) -> str:
        return f"RegexState({self.state})"

    def advance_bytes(self, data: bytes) -> "RegexState | None":
        rows = self.tables.rows
        s = self.state
        for b in data:
            s = rows[s][b]
            if s < 0:
                return None
        return RegexState(self.tables, s)

    def advance(self, token_id: int) -> "ConstraintState | None":
        t = self.tables
        if token_id in t.eos_ids:
            return FinishedState(self.vocab) if t.accepting[self.state] else None
        if token_id in t.special_ids or not 0 <= token_id < self.vocab.size:
            return None
        data = self.vocab.token_bytes[token_id]
        if not data:
            return None
        return self.advance_bytes(data)

    def allows(self, token_id: int) -> bool:
        t = self.tables
        if token_id in t.eos_ids:
            return t.accepting[self.state]
        if token_id in t.special_ids or not 0 <= token_id < self.vocab.size:
            return False
        data = self.vocab.token_bytes[token_id]
        if not data:
            return False
        rows = t.rows
        s = self.state
        for b in data:
            s = rows[s][b]
            if s < 0:
                return False
        return True

    def is_accepting(self) -> bool:
        return self.tables.accepting[self.state]

    def is_live(self) -> bool:
        return True  # pruned DFA: every state reaches acceptance

    def allowed_mask(self) -> np.ndarray:
        """Read-only boolean mask (shared with the cache; copy before writing)."""
        with ENGINE_LOCK:  # the mask cache may be shared by threads filling a batch
            return self.tables.mask(self.state)

    def cache_key(self):
        return (self.tables, self.state)

    def cached_mask(self) -> np.ndarray | None:
        with ENGINE_LOCK:
            return self.tables.cached(self.state)

    def allowed_bitmask(self) -> np.ndarray:
        return pack_mask(self.allowed_mask())

    parallel_masks = True

    def fill_bitmask(self, row: np.ndarray) -> None:
        pack_into(self.allowed_mask(), row)

    def __eq__(self, other) -> bool:
        return isinstance(other, RegexState) and other.tables is self.tables and other.state == self.state

    def __hash__(self) -> int:
        return hash((id(self.tables), self.state))
