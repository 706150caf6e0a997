"""Partial outputs: known segments and holes, flattened into one slot per token position.

    >>> partial = [b'{"name": ', Hole(3), [1, 92], Hole.up_to(8)]
    >>> slots_of(partial, vocab)
    (('k', b'{"name": '), ('h', False), ('h', False), ('h', False), ('k', b'...'), ...)

A slot is ``("k", data)`` (known bytes: one token, or a bytes segment) or ``("h", optional)``
(one token position; an optional one may also stay empty).  ``Hole(n)`` is ``n`` required
slots; ``Hole.up_to(n)`` is ``n`` optional ones (any length from 0 to ``n`` tokens).

For a diffusion canvas, :func:`canvas_parts` turns token ids with mask positions into parts:
the output ends at the first end-of-sequence token; masked positions followed by a known
token are required (each holds exactly one token), the masked run at the end (before the
first EOS, or to the end of the canvas) is optional because any of it may become EOS.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Union

__all__ = ["Hole", "Part", "slots_of", "slots_and_spans", "canvas_parts"]


@dataclass(frozen=True)
class Hole:
    """A gap of ``tokens`` token positions; ``optional``: any number from 0 to ``tokens`` of them."""

    tokens: int
    optional: bool = False

    def __post_init__(self):
        if not isinstance(self.tokens, int) or self.tokens < 0:
            raise ValueError(f"a hole needs a non-negative token count, got {self.tokens!r}")

    @staticmethod
    def up_to(n: int) -> "Hole":
        """A gap of any length from 0 to ``n`` tokens."""
        return Hole(n, optional=True)


Part = Union[bytes, str, Hole, Sequence[int]]


def slots_of(parts: Sequence[Part], vocab) -> tuple:
    """One slot per token position (known token ids each get their own slot)."""
    return slots_and_spans(parts, vocab)[0]


def slots_and_spans(parts: Sequence[Part], vocab) -> tuple[tuple, list[tuple[int, int]]]:
    """The slots, and for each part the half-open range of slots it became."""
    slots: list = []
    spans: list[tuple[int, int]] = []
    for part in parts:
        start = len(slots)
        _add_part(slots, part, vocab)
        spans.append((start, len(slots)))
    return tuple(slots), spans


def _add_part(slots: list, part, vocab) -> None:
    if isinstance(part, Hole):
        slots.extend([("h", part.optional)] * part.tokens)
    elif isinstance(part, (bytes, bytearray)):
        if part:
            slots.append(("k", bytes(part)))
    elif isinstance(part, str):
        if part:
            slots.append(("k", part.encode("utf-8")))
    else:
        for t in part:
            t = int(t)
            if t in vocab.special_ids or not 0 <= t < vocab.size:
                raise ValueError(f"token id {t} is special or out of range: it stands for no bytes")
            data = vocab.token_bytes[t]
            if data:
                slots.append(("k", data))


def canvas_parts(canvas: Sequence[int], mask_id: int, eos_ids) -> list:
    """Parts of a diffusion canvas (``mask_id`` = unknown position, first EOS ends the output)."""
    eos = set(int(e) for e in eos_ids)
    ids = [int(t) for t in canvas]
    end = next((i for i, t in enumerate(ids) if t in eos), len(ids))
    body = ids[:end]
    last_known = max((i for i, t in enumerate(body) if t != mask_id), default=-1)
    parts: list = []
    run: list[int] = []
    holes = 0
    for t in body[: last_known + 1]:
        if t == mask_id:
            if run:
                parts.append(run)
                run = []
            holes += 1
        else:
            if holes:
                parts.append(Hole(holes))
                holes = 0
            run.append(t)
    if run:
        parts.append(run)
    tail = len(body) - (last_known + 1)
    if tail:
        parts.append(Hole.up_to(tail))
    return parts
