"""Optional parts of guided and the extra that installs each (``pip install 'guided[server]'``).

    >>> from guided._extras import require_extra
    >>> require_extra("server", "guided serve")     # raises MissingExtraError if fastapi is absent

The core (constraints, samplers, ``generate``, ``LogitsProcessor``, JSON Schema, the diffusion
checker) needs none of these; each surface checks its extra before importing it, so a missing
one fails with a single line naming what to install rather than a deep ``ImportError``.
"""

from __future__ import annotations

import importlib.util

__all__ = ["EXTRAS", "MissingExtraError", "require_extra"]

# extra -> the modules it provides (import names), as in pyproject.toml
EXTRAS = {
    "server": ("fastapi", "uvicorn"),
    "ide": ("pygls", "lsprotocol", "starlette", "uvicorn"),
    "monitors": ("multilspy",),
    "numba": ("numba",),
}


class MissingExtraError(ModuleNotFoundError):
    """A part of guided whose optional dependencies are not installed; the message says which extra."""


def require_extra(extra: str, feature: str) -> None:
    """Raise :class:`MissingExtraError` unless every module of ``extra`` is importable."""
    missing = [name for name in EXTRAS[extra] if importlib.util.find_spec(name) is None]
    if missing:
        raise MissingExtraError(
            f"{feature} needs the '{extra}' extra ({', '.join(missing)} missing): pip install 'guided[{extra}]'",
            name=missing[0],
        )
