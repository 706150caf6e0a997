"""One lock over the grammar engine's shared caches, let go while compiled walks run.

Lexer automata, lazily built terminal automata (shared between schemas), parser columns and
mask caches all grow as masks are computed, so only one thread at a time may touch them.
The compiled trie walks read those tables without the GIL; while one runs, its thread lets
the lock go, so another thread's mask (a cache hit, a parser step, its own walk) proceeds.

    >>> with ENGINE_LOCK:                 # re-entrant in the same thread
    ...     mask = state.allowed_mask()
    >>> with ENGINE_LOCK.released():      # around a nogil kernel call (a no-op if not held)
    ...     kernel(...)
"""

from __future__ import annotations

import threading
from contextlib import contextmanager

__all__ = ["ENGINE_LOCK", "EngineLock"]


class EngineLock:
    """A re-entrant lock that its holder can let go of entirely for a while (``released``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._owner: int | None = None
        self._depth = 0

    def __enter__(self) -> "EngineLock":
        me = threading.get_ident()
        if self._owner == me:
            self._depth += 1
            return self
        self._lock.acquire()
        self._owner = me
        self._depth = 1
        return self

    def __exit__(self, *exc) -> None:
        self._depth -= 1
        if self._depth == 0:
            self._owner = None
            self._lock.release()

    @contextmanager
    def released(self):
        """Let go of the lock (at every depth) for the body, if this thread holds it."""
        me = threading.get_ident()
        if self._owner != me:
            yield
            return
        depth = self._depth
        self._owner, self._depth = None, 0
        self._lock.release()
        try:
            yield
        finally:
            self._lock.acquire()
            self._owner, self._depth = me, depth


ENGINE_LOCK = EngineLock()
