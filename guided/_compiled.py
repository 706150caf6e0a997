"""Optional numba compilation of the engine's kernels (one place decides whether they run compiled).

    >>> walk, pack = compiled_kernels(_walk, _pack)    # None without numba or with GUIDED_NO_NUMBA=1

Kernels are compiled ``nogil`` (threads run them in parallel) and cached on disk.
"""

from __future__ import annotations

import os

__all__ = ["compiled_kernels"]


def compiled_kernels(*functions) -> "tuple | None":
    """The functions compiled by numba, or ``None`` when numba is missing or switched off."""
    if os.environ.get("GUIDED_NO_NUMBA"):
        return None
    try:
        import numba
    except ImportError:  # pragma: no cover - optional speed-up
        return None
    jit = numba.njit(cache=True, nogil=True)
    return tuple(jit(f) for f in functions)
