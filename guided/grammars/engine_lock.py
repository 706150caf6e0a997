"""One lock over the grammar engine's shared caches, let go while compiled walks run.

Lexer automata, lazily built terminal automata (shared between schemas), parser columns and
mask caches all grow as masks are computed, so only one thread at a time may touch them.
The compiled trie walks read those tables without the GIL; while one runs, its thread lets
the lock go, so another thread's mask (a cache hit, a parser step, its own walk) proceeds.

    >>> with ENGINE_LOCK:                 # re-entrant in the same thread
    ...     mask = state.allowed_mask()
    >>> held = ENGINE_LOCK.let_go()       # around a nogil kernel call (0 if not held)
    >>> try: kernel(...)
    ... finally: ENGINE_LOCK.take_back(held)
"""

from __future__ import annotations

import threading

__all__ = ["ENGINE_LOCK", "EngineLock"]


class EngineLock:
    """A re-entrant lock that its holder can let go of entirely for a while (``let_go``)."""

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

    def let_go(self) -> int:
        """Release the lock entirely if this thread holds it; returns what :meth:`take_back` needs
        (0: it was not held).  For a nogil kernel call, cheaper than a context manager:

            >>> held = ENGINE_LOCK.let_go()
            >>> try: kernel(...)
            ... finally: ENGINE_LOCK.take_back(held)
        """
        if self._owner != threading.get_ident():
            return 0
        depth = self._depth
        self._owner, self._depth = None, 0
        self._lock.release()
        return depth

    def take_back(self, depth: int) -> None:
        if depth:
            self._lock.acquire()
            self._owner, self._depth = threading.get_ident(), depth


ENGINE_LOCK = EngineLock()
