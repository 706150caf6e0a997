"""The product of constraints: output must satisfy every part.

    >>> both = guided.Grammar(python_grammar) & DereferenceMonitor(project, "main.py")
    >>> state = both.start(vocab)
"""

from __future__ import annotations

from functools import reduce

import numpy as np

from guided.constraint import Constraint, ConstraintState, FinishedState


class ProductState(ConstraintState):
    """A tuple of states advanced together; a token is allowed iff every part allows it."""

    __slots__ = ("vocab", "parts")

    def __init__(self, vocab, parts: tuple[ConstraintState, ...]):
        self.vocab = vocab
        self.parts = parts

    def advance_bytes(self, data: bytes) -> "ConstraintState | None":
        parts = []
        for part in self.parts:
            nxt = part.advance_bytes(data)
            if nxt is None:
                return None
            parts.append(nxt)
        return ProductState(self.vocab, tuple(parts))

    def advance(self, token_id: int) -> "ConstraintState | None":
        parts = []
        for part in self.parts:
            nxt = part.advance(token_id)
            if nxt is None:
                return None
            parts.append(nxt)
        if all(p.is_finished() for p in parts):
            return FinishedState(self.vocab)
        return ProductState(self.vocab, tuple(parts))

    def allows(self, token_id: int) -> bool:
        # Cheap checks first would need a cost model; parts are usually few.
        return all(p.allows(token_id) for p in self.parts)

    def is_accepting(self) -> bool:
        return all(p.is_accepting() for p in self.parts)

    def is_live(self) -> bool:
        return all(p.is_live() for p in self.parts)

    def is_finished(self) -> bool:
        return all(p.is_finished() for p in self.parts)

    def allowed_mask(self) -> np.ndarray:
        return reduce(np.logical_and, (p.allowed_mask() for p in self.parts))

    def cache_key(self):
        keys = tuple(p.cache_key() for p in self.parts)
        return None if any(k is None for k in keys) else ("product", keys)

    def cached_mask(self) -> np.ndarray | None:
        masks = []
        for p in self.parts:
            m = p.cached_mask()
            if m is None:
                return None
            masks.append(m)
        return reduce(np.logical_and, masks)


class Product(Constraint):
    """``a & b & c``: the intersection of constraints."""

    def __init__(self, *parts: Constraint):
        super().__init__()
        flat: list[Constraint] = []
        for p in parts:
            flat.extend(p.parts if isinstance(p, Product) else (p,))
        self.parts = tuple(flat)

    def compile(self, vocab):
        return None

    def initial_state(self, compiled, vocab) -> ConstraintState:
        return ProductState(vocab, tuple(p.start(vocab) for p in self.parts))

    def __repr__(self) -> str:
        return " & ".join(repr(p) for p in self.parts)
