"""Grammar-forced drafting ("jump-forward"): text the constraint admits as the only continuation.

Where the constraint leaves exactly one way to go on (``{"name": `` after ``{`` in a schema
with one required key, ``):`` after a Python ``def f(x``), those bytes are proposed with no
model call. They are re-tokenised the way the model's tokenizer would cut them in context
(the last committed tokens plus the forced text go through the tokenizer together), so the
target is asked to verify the tokens it would itself most likely produce. Proposals are only
drafts: the target still verifies them, so the output never depends on how the text was cut.

    >>> forced_bytes(state)                                   # b'"name": '
    >>> ForcedDrafter(inner=PromptLookupDrafter())            # forced text, then lookup drafts

A byte is forced when it is the only byte whose single-byte token the constraint allows and
the output is not complete there (a complete output also allows EOS); found with single-token
checks, most frequent bytes first, stopping at the second allowed byte. Constraint states may
offer a faster ``forced_bytes(max_bytes)`` method of their own (a DFA knows its unique
transitions); it is used when present.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Sequence

import numpy as np

from guided.speculative.drafts import Draft, Drafter, DraftSession, RowContext

if TYPE_CHECKING:  # pragma: no cover
    from guided.constraint import ConstraintState
    from guided.vocab import Vocabulary

__all__ = ["forced_bytes", "retokenise", "ForcedDrafter"]

# Bytes probed first (frequent in JSON and code): two of them allowed proves nothing is forced.
_PROBE = b' e"ta0n1,:o}{\n]is[r-.'
_ORDER = list(_PROBE) + [b for b in range(256) if b not in _PROBE]


_BYTE_IDS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _byte_ids(vocab: "Vocabulary") -> np.ndarray:
    """The id of each single-byte token (-1 where the vocabulary has none), per vocabulary."""
    table = _BYTE_IDS.get(vocab)
    if table is None:
        table = np.asarray([vocab.bytes_to_id.get(bytes([b]), -1) for b in range(256)], dtype=np.int64)
        _BYTE_IDS[vocab] = table
    return table


def forced_bytes(state: "ConstraintState", max_bytes: int = 64) -> bytes:
    """The bytes every completion of ``state`` starts with (up to ``max_bytes``).

    >>> forced_bytes(JSONSchema(schema).start(vocab).advance(vocab.bytes_to_id[b"{"]))
    b'"name":'
    """
    own = getattr(state, "forced_bytes", None)
    if callable(own):
        return bytes(own(max_bytes))[:max_bytes]
    ids = _byte_ids(state.vocab)
    out = bytearray()
    while len(out) < max_bytes and state is not None:
        if state.is_finished() or state.is_accepting():
            break
        viable = _viable_bytes(state, ids, stop_at=2)
        if len(viable) != 1:
            break
        out.append(viable[0])
        state = state.advance_bytes(bytes(viable[:1]))
    return bytes(out)


def _viable_bytes(state, ids: np.ndarray, stop_at: int) -> list[int]:
    """Bytes that may come next (single-token checks, no full mask), stopping at ``stop_at``.

    Single checks beat a full mask here: a state's first mask can cost tens of milliseconds
    for a grammar, 256 checks well under one.
    """
    found: list[int] = []
    for b in _ORDER:
        t = int(ids[b])
        if t >= 0:
            ok = state.allows(t)
        else:  # no single-byte token for this byte: ask the bytes directly
            nxt = state.advance_bytes(bytes([b]))
            ok = nxt is not None and nxt.is_live()
        if ok:
            found.append(b)
            if len(found) >= stop_at:
                break
    return found


def _valid_utf8_prefix(data: bytes) -> bytes:
    for cut in range(len(data), max(len(data) - 4, -1), -1):
        try:
            data[:cut].decode("utf-8")
            return data[:cut]
        except UnicodeDecodeError:
            continue
    return b""


def retokenise(tokenizer, vocab: "Vocabulary", context_ids: Sequence[int], forced: bytes, context_tokens: int = 2) -> list[int]:
    """Token ids for ``forced`` as the tokenizer would cut it after ``context_ids``.

    The last ``context_tokens`` committed (non-special) tokens are tokenised together with the
    forced text. Tokens starting at or after the boundary are kept; if the tokenizer would
    merge across the boundary, the bytes of ``forced`` inside that merged token are tokenised
    on their own. Only a valid UTF-8 prefix of ``forced`` is used.
    """
    forced = _valid_utf8_prefix(forced)
    if not forced:
        return []
    tail_ids: list[int] = []
    for t in reversed(list(context_ids)):
        if len(tail_ids) >= context_tokens or t in vocab.special_ids:
            break
        tail_ids.insert(0, int(t))
    tail = vocab.decode(tail_ids)
    while tail_ids:
        try:
            tail.decode("utf-8")
            break
        except UnicodeDecodeError:
            tail_ids.pop(0)
            tail = vocab.decode(tail_ids)
    ids = tokenizer.encode((tail + forced).decode("utf-8"), add_special_tokens=False)
    starts = np.cumsum([0] + [len(vocab.token_bytes[i]) for i in ids])
    if vocab.decode(ids) != tail + forced:
        return _plain(tokenizer, vocab, forced)
    k = int(np.searchsorted(starts, len(tail), side="left"))  # first token starting at/after the boundary
    head = forced[: int(starts[k]) - len(tail)] if k < len(starts) else forced
    out = (_plain(tokenizer, vocab, head) if head else []) + [int(i) for i in ids[k:]]
    return out if vocab.decode(out) == forced else _plain(tokenizer, vocab, forced)


def _plain(tokenizer, vocab: "Vocabulary", data: bytes) -> list[int]:
    try:
        ids = tokenizer.encode(data.decode("utf-8"), add_special_tokens=False)
    except UnicodeDecodeError:
        return []
    return [int(i) for i in ids] if vocab.decode(ids) == data else []


class ForcedDrafter(Drafter):
    """Propose the grammar-forced continuation, then (optionally) what ``inner`` drafts after it.

    Args:
        inner: a drafter continuing after the forced text (``None``: forced text only).
        max_bytes: longest forced text looked for in one round.
    """

    def __init__(self, inner: Drafter | None = None, max_bytes: int = 64):
        self.inner = inner
        self.max_bytes = int(max_bytes)
        self.wants_target_topk = inner.wants_target_topk if inner is not None else 0

    def __repr__(self) -> str:
        return f"ForcedDrafter(inner={self.inner!r})"

    def begin(self, session: DraftSession) -> None:
        super().begin(session)
        if self.inner is not None:
            self.inner.begin(session)

    def propose(self, rows: Sequence[RowContext]) -> list[Draft]:
        s = self.session
        heads: list[Draft] = []
        inner_rows: list[RowContext] = []
        for row in rows:
            head = Draft()
            if row.budget > 0:
                # about 4 bytes a token: no need to look further than the budget can use
                text = forced_bytes(row.state, min(self.max_bytes, 4 * row.budget + 4))
                if text:
                    ids = retokenise(s.tokenizer, s.vocab, row.history(), text)[: row.budget]
                    head = _walk_chain(ids, row.state, s)
            heads.append(head)
            last_state = head.states[-1] if head.tokens else row.state
            inner_rows.append(
                RowContext(row.ids, row.prefix + head.tokens, last_state, row.budget - len(head.tokens))
            )
        if self.inner is None:
            return heads
        tails = self.inner.propose(inner_rows)
        return [h.append(t) for h, t in zip(heads, tails)]

    def observe(self, committed, target_topk=None) -> None:
        if self.inner is not None:
            self.inner.observe(committed, target_topk)

    def select(self, index) -> None:
        if self.inner is not None:
            self.inner.select(index)

    def close(self) -> None:
        if self.inner is not None:
            self.inner.close()


def _walk_chain(ids: Sequence[int], state, session: DraftSession) -> Draft:
    """The longest prefix of ``ids`` the constraint allows, with its states."""
    tokens: list[int] = []
    states: list = []
    for t in ids:
        nxt = session.ctx.advance(state, int(t))
        if nxt is None:
            break
        tokens.append(int(t))
        states.append(nxt)
        state = nxt
    return Draft(tokens, list(range(-1, len(tokens) - 1)), states=states)
