"""What every drafter shares: the draft (a chain or a tree of tokens), the protocol, the constraint cut.

A drafter proposes, for each row, tokens that may follow the text so far; the verifier keeps
the longest prefix the target agrees with. Drafts are trees: ``parents[j]`` is the index of
node ``j``'s parent (``-1``: the current position), parents before children. A chain is the
tree ``parents = [-1, 0, 1, ...]``.

    >>> draft = Draft.chain([450, 836, 25])
    >>> draft = cut_to_constraint(draft, state, ctx)     # drop nodes the constraint forbids

A node is *deterministic* (a point mass: n-gram, recycling, grammar-forced, greedy model
drafts) unless the draft carries ``q``, the drafter's constrained distribution at that
node's position (a :class:`SparseDist` over the allowed ids), from which the token was
sampled; only then does verification use the ``min(1, p/q)`` rule (see
:mod:`guided.speculative.verify`).
"""

from __future__ import annotations

import abc
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch

if TYPE_CHECKING:  # pragma: no cover
    from guided.constraint import ConstraintState
    from guided.samplers.base import StepContext
    from guided.vocab import Vocabulary

__all__ = ["Draft", "Drafter", "RowContext", "DraftSession", "SparseDist", "cut_to_constraint", "allowed_support"]


@dataclass
class SparseDist:
    """A distribution over the tokens a constraint allows at one position.

    ``ids`` are *all* the allowed ids there (the support of any constrained distribution at
    that position), ``probs`` the drafter's probabilities on them (summing to 1).
    """

    ids: torch.Tensor  # [k] long
    probs: torch.Tensor  # [k] float


def allowed_support(states: Sequence, ctx, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Allowed ids of each state, padded: ``ids [rows, k]`` (0 in padding) and ``valid [rows, k]``.

    Constrained distributions are computed on these few columns instead of the vocabulary.
    """
    t0 = time.perf_counter()
    lists = [np.flatnonzero(s.allowed_mask()) for s in states]
    ctx.stats.constraint_seconds += time.perf_counter() - t0
    ctx.stats.masks += len(states)
    k = max(1, max((len(a) for a in lists), default=1))
    ids = np.zeros((len(lists), k), dtype=np.int64)
    valid = np.zeros((len(lists), k), dtype=bool)
    for i, a in enumerate(lists):
        ids[i, : len(a)] = a
        valid[i, : len(a)] = True
    return torch.from_numpy(ids).to(device), torch.from_numpy(valid).to(device)


@dataclass
class Draft:
    """Proposed tokens for one row, as a tree (a chain when every parent is the previous node)."""

    tokens: list[int] = field(default_factory=list)
    parents: list[int] = field(default_factory=list)
    # State after each node, where the drafter already walked the constraint (no re-check).
    states: list | None = None
    # Per node: the drafter's constrained distribution at its position, if the token was
    # *sampled* from it; None for a deterministic node.
    q: list["SparseDist | None"] | None = None

    @classmethod
    def chain(cls, tokens: Sequence[int]) -> "Draft":
        return cls(list(map(int, tokens)), list(range(-1, len(tokens) - 1)))

    def __len__(self) -> int:
        return len(self.tokens)

    def children(self) -> dict[int, dict[int, int]]:
        """``{parent: {token: node}}`` (parent ``-1`` is the current position)."""
        out: dict[int, dict[int, int]] = {}
        for j, (t, p) in enumerate(zip(self.tokens, self.parents)):
            out.setdefault(p, {})[t] = j
        return out

    def is_chain(self) -> bool:
        return all(p == j - 1 for j, p in enumerate(self.parents))

    def append(self, other: "Draft") -> "Draft":
        """This chain followed by ``other`` (a chain or tree rooted at this draft's last node)."""
        if not self.tokens:
            return other
        if not other.tokens:
            return self
        last = len(self.tokens) - 1
        shift = len(self.tokens)
        parents = self.parents + [last if p < 0 else p + shift for p in other.parents]

        def join(a, b, n_a, n_b):
            if a is None and b is None:
                return None
            return (a if a is not None else [None] * n_a) + (b if b is not None else [None] * n_b)

        n_a, n_b = len(self.tokens), len(other.tokens)
        return Draft(
            self.tokens + other.tokens,
            parents,
            states=join(self.states, other.states, n_a, n_b),
            q=join(self.q, other.q, n_a, n_b),
        )


@dataclass
class RowContext:
    """What a drafter sees of one row: committed ids, a forced prefix already proposed, the state after both."""

    ids: list[int]  # prompt + generated tokens (committed)
    prefix: list[int]  # tokens already drafted before this drafter (e.g. grammar-forced text)
    state: "ConstraintState"  # the constraint state after ids + prefix
    budget: int  # how many tokens this drafter may add after the prefix

    @property
    def last_token(self) -> int:
        return self.prefix[-1] if self.prefix else self.ids[-1]

    def history(self) -> list[int]:
        return self.ids + self.prefix


@dataclass
class DraftSession:
    """What a drafter is told once per generation."""

    target: object  # the target model
    tokenizer: object
    vocab: "Vocabulary"
    ctx: "StepContext"  # sampling settings, randomness, counters (shared with the verifier)
    prompt_ids: list[list[int]]
    device: torch.device
    sample_drafts: bool  # True: sample from the drafter's constrained distribution (min(1, p/q) rule)


class Drafter(abc.ABC):
    """Proposes draft tokens; told what was committed after every round.

    Rows of a drafter follow the rows of the generation: :meth:`select` reorders or drops
    them (finished rows, SMC resampling) exactly as the target's rows are.
    """

    #: top-k of the target's logits at every verified position that the drafter wants (0: none)
    wants_target_topk: int = 0

    def begin(self, session: DraftSession) -> None:
        """Called once before the first round."""
        self.session = session

    @abc.abstractmethod
    def propose(self, rows: Sequence[RowContext]) -> list[Draft]:
        """One draft per row (possibly empty), rooted after ``row.prefix``."""

    def observe(self, committed: Sequence[list[int]], target_topk=None) -> None:
        """The rows' committed ids after a round; ``target_topk`` is a list per row of
        ``(input_token, topk_ids)`` pairs when :attr:`wants_target_topk` is set."""

    def select(self, index: Sequence[int]) -> None:
        """Row ``i`` becomes old row ``index[i]``."""

    def close(self) -> None:
        """Release per-generation resources (draft KV caches)."""


def cut_to_constraint(draft: Draft, state: "ConstraintState", ctx: "StepContext") -> Draft:
    """The subtree of ``draft`` the constraint allows (nodes under a forbidden node go too).

    Siblings carrying the same token are merged into the first one. States after each kept
    node are filled in.
    """
    if draft.states is not None and all(s is not None for s in draft.states):
        return draft
    new_index: dict[int, int] = {}
    tokens: list[int] = []
    parents: list[int] = []
    states: list = []
    q: list = []
    seen: dict[tuple[int, int], int] = {}
    for j, (token, parent) in enumerate(zip(draft.tokens, draft.parents)):
        if parent >= 0 and parent not in new_index:
            continue  # an ancestor was cut
        new_parent = new_index[parent] if parent >= 0 else -1
        key = (new_parent, int(token))
        if key in seen:
            new_index[j] = seen[key]
            continue
        known = draft.states[j] if draft.states is not None else None
        if known is not None:
            nxt = known
        else:
            base = states[new_parent] if new_parent >= 0 else state
            nxt = ctx.advance(base, int(token))
        if nxt is None:
            continue
        new_index[j] = len(tokens)
        seen[key] = len(tokens)
        tokens.append(int(token))
        parents.append(new_parent)
        states.append(nxt)
        q.append(draft.q[j] if draft.q is not None else None)
    return Draft(
        tokens,
        parents,
        states=states,
        q=q if draft.q is not None else None,
    )
