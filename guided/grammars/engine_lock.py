"""One lock over the grammar engine's shared caches, let go while compiled walks run.

Lexer automata, lazily built terminal automata (shared between schemas), parser columns and
mask caches all grow as masks are computed, so only one thread at a time may touch them.
The compiled trie walks read those tables without the GIL; while one runs, its thread lets
the lock go, so another thread's mask (a cache hit, a parser step, its own walk) proceeds.

    >>> with ENGINE_LOCK:                 # re-entrant in the same thread
    ...     mask = state.allowed_mask()
    >>> held = let_go()                   # around a nogil kernel call (None if not held)
    >>> try: kernel(...)
    ... finally: take_back(held)
"""

from __future__ import annotations

import threading

__all__ = ["ENGINE_LOCK", "let_go", "take_back"]

# a C-implemented re-entrant lock: taking it costs a fraction of a microsecond, which every
# advance and mask pays; letting it go at every depth is what threading.Condition does
# with the same two methods
ENGINE_LOCK = threading.RLock()


def let_go():
    """Release ``ENGINE_LOCK`` entirely if this thread holds it; what :func:`take_back` needs."""
    if not ENGINE_LOCK._is_owned():
        return None
    return ENGINE_LOCK._release_save()


def take_back(held) -> None:
    """Take ``ENGINE_LOCK`` back as :func:`let_go` found it."""
    if held is not None:
        ENGINE_LOCK._acquire_restore(held)
