"""The one protocol every constraint implements and every sampler consumes.

A :class:`Constraint` is a tokenizer-independent description (a regex, a grammar,
a JSON schema, a monitor, a product of those).  ``constraint.start(vocab)`` binds
it to a :class:`~guided.vocab.Vocabulary` and returns the initial
:class:`ConstraintState`.

States are *immutable*: ``advance`` returns a new state and leaves the old one
untouched, so copying is free and rolling back (speculative decoding, SMC
resampling, beam search) is just keeping the old reference.

    >>> state = guided.Regex(r"[0-9]+").start(vocab)
    >>> mask = state.allowed_mask()          # bool[vocab.size]
    >>> state = state.advance(token_id)      # None if the token is not allowed
    >>> state.is_accepting()                 # may generation end here?

A batch of states fills one packed int32 bitmask (XGrammar/llguidance layout) at once:

    >>> out = guided.bitmask.allocate_bitmask(len(states), vocab.size)
    >>> fill_bitmasks(states, out)           # rows in worker threads

End of generation is a token like any other: ``allowed_mask()`` marks
``vocab.eos_ids`` exactly when ``is_accepting()``; advancing by an EOS id gives a
finished state that allows nothing further.  Special tokens other than EOS are
never allowed (they stand for no bytes of the output).
"""

from __future__ import annotations

import abc
import weakref
from functools import reduce
from typing import TYPE_CHECKING, Hashable

import numpy as np

from guided.bitmask import fill_bitmasks, pack_into, pack_mask, unpack_mask  # noqa: F401 - re-exported

if TYPE_CHECKING:  # pragma: no cover
    from guided.vocab import Vocabulary


class ConstraintError(ValueError):
    """Base class of every error raised for a bad constraint (grammar, regex, schema)."""


class ConstraintState(abc.ABC):
    """One point of a constrained generation: what has been produced so far."""

    vocab: "Vocabulary"

    # -- the core: subclasses implement these --------------------------------------
    @abc.abstractmethod
    def advance_bytes(self, data: bytes) -> "ConstraintState | None":
        """State after the output grows by ``data``; ``None`` if no valid output has that prefix."""

    @abc.abstractmethod
    def is_accepting(self) -> bool:
        """True when the output so far is a complete word (generation may end here)."""

    @abc.abstractmethod
    def allowed_mask(self) -> np.ndarray:
        """Boolean array of length ``vocab.size``: token ``i`` may come next.

        Exact: ``mask[i]`` is True iff some complete word starts with the output so far
        followed by token ``i``'s bytes (for EOS ids: iff ``is_accepting()``).
        """

    # -- derived operations: override when a faster path exists ---------------------
    def advance(self, token_id: int) -> "ConstraintState | None":
        """State after emitting ``token_id``; ``None`` if it is not allowed."""
        vocab = self.vocab
        if token_id in vocab.eos_ids:
            return FinishedState(self.vocab) if self.is_accepting() else None
        if token_id in vocab.special_ids or not 0 <= token_id < vocab.size:
            return None
        nxt = self.advance_bytes(vocab.token_bytes[token_id])
        return nxt if nxt is not None and nxt.is_live() else None

    def allows(self, token_id: int) -> bool:
        """Single-token check (what AWRS calls); cheaper than a full mask."""
        return self.advance(token_id) is not None

    def is_live(self) -> bool:
        """True when some continuation still reaches an accepting state."""
        return True

    def cache_key(self) -> Hashable | None:
        """A hashable value equal for states that behave the same (or ``None``: no such key).

        Samplers memoise transitions by it within one generation: a configuration seen
        again costs no constraint work.
        """
        return None

    def cached_mask(self) -> np.ndarray | None:
        """``allowed_mask()`` if this state already holds it (free), else ``None``.

        Samplers that check tokens one by one (AWRS) answer rejections from it by lookup.
        """
        return None

    def is_finished(self) -> bool:
        """True after an EOS token was emitted."""
        return False

    def allowed_bitmask(self) -> np.ndarray:
        """The allowed mask packed into int32 words (32 tokens per word, little-endian bits)."""
        return pack_mask(self.allowed_mask())

    #: True when ``fill_bitmask`` may run in several threads at once (``fill_bitmasks``
    #: then fills such rows in parallel); other kinds are filled in the calling thread.
    parallel_masks: bool = False

    def fill_bitmask(self, row: np.ndarray) -> None:
        """Write ``allowed_bitmask()`` into the int32 ``row`` (zeros past the vocabulary).

        The batch entry point is :func:`fill_bitmasks`; kinds override this when they can
        pack without building the bitmask first.
        """
        words = self.allowed_bitmask()
        row[: len(words)] = words
        row[len(words) :] = 0

    def allowed_ids(self) -> np.ndarray:
        """Ids of the allowed tokens."""
        return np.flatnonzero(self.allowed_mask())

    def advance_many(self, token_ids) -> "ConstraintState | None":
        state: ConstraintState | None = self
        for t in token_ids:
            if state is None:
                return None
            state = state.advance(int(t))
        return state


class FinishedState(ConstraintState):
    """The state after EOS: accepting, allows nothing more."""

    def __init__(self, vocab: "Vocabulary"):
        self.vocab = vocab

    def advance_bytes(self, data: bytes) -> "ConstraintState | None":
        return self if not data else None

    def advance(self, token_id: int) -> "ConstraintState | None":
        return None

    def is_accepting(self) -> bool:
        return True

    def is_finished(self) -> bool:
        return True

    def allowed_mask(self) -> np.ndarray:
        return np.zeros(self.vocab.size, dtype=bool)


class Constraint(abc.ABC):
    """A tokenizer-independent constraint; ``start(vocab)`` binds it to a vocabulary.

    Subclasses implement :meth:`compile`; its result is cached per vocabulary.
    """

    def __init__(self) -> None:
        self._compiled: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()

    @abc.abstractmethod
    def compile(self, vocab: "Vocabulary") -> object:
        """Build the vocabulary-specific tables; called once per vocabulary."""

    @abc.abstractmethod
    def initial_state(self, compiled: object, vocab: "Vocabulary") -> ConstraintState:
        """The start state, given what :meth:`compile` returned."""

    def compiled_for(self, vocab: "Vocabulary") -> object:
        try:
            compiled = self._compiled.get(vocab)
        except AttributeError:  # subclass forgot super().__init__()
            self._compiled = weakref.WeakKeyDictionary()
            compiled = None
        if compiled is None:
            compiled = self.compile(vocab)
            self._compiled[vocab] = compiled
        return compiled

    def start(self, vocab: "Vocabulary") -> ConstraintState:
        """The initial state over ``vocab`` (a :class:`~guided.vocab.Vocabulary` or a HF tokenizer)."""
        from guided.vocab import Vocabulary

        if not isinstance(vocab, Vocabulary):
            vocab = Vocabulary.from_tokenizer(vocab)
        return self.initial_state(self.compiled_for(vocab), vocab)

    def __and__(self, other: "Constraint") -> "Constraint":
        return Product(self, other)


# The product of constraints (``a & b``): output must satisfy every part.


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


