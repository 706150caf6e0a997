"""Token Recycling (Luo et al. 2024): draft trees from the target's own earlier top-k predictions.

Every verification pass computes the target's logits at many positions, most of which are
thrown away. Token Recycling keeps, for every token ``t``, the top-k tokens the target last
predicted right after ``t`` (an adjacency table, ``vocab x k`` ids: 4 MB for Llama-3 with
k = 8), and builds the next draft by breadth-first expansion of that table from the last
token, along a fixed tree shape. The tree is verified in one forward pass with tree
attention (:class:`~guided.speculative.ragged.RaggedLM`); the table is updated from every
position of that pass.

Under a constraint, the children of a node are the first table candidates the constraint
allows at that node (forbidden candidates are skipped before verification), so the tree
keeps its shape where the unconstrained table would have wasted branches.

    >>> drafter = TokenRecyclingDrafter(top_k=8, max_nodes=32)
    >>> generate_speculative(model, tok, prompt, schema, draft=drafter)   # the table persists
    >>> generate_speculative(model, tok, prompt2, schema, draft=drafter)  # across calls (hot start)

``tree=False`` drafts a single chain (the rank-0 path), for devices where verifying many
positions costs more than it saves (small CPUs).
"""

from __future__ import annotations

import heapq
from typing import Sequence

import numpy as np

from guided.speculative.drafts import Draft, Drafter, DraftSession, RowContext

__all__ = ["TokenRecyclingDrafter", "tree_template"]


def tree_template(max_nodes: int, max_depth: int, top_k: int) -> list[tuple[int, int]]:
    """A prefix-closed tree shape as ``(parent, rank)`` pairs in breadth-first order.

    The ``max_nodes`` paths most likely to be accepted are kept, scoring a path of candidate
    ranks ``r_1..r_d`` by ``prod w(r_i)`` with ``w(0) = 0.6`` and ``w(r) = 0.15 / r`` (a typical
    acceptance profile of top-k candidates): shallow, top-ranked branches get the most
    children, as in Token Recycling's static tree.
    """

    def w(r: int) -> float:
        return 0.6 if r == 0 else 0.15 / r

    heap: list[tuple[float, tuple[int, ...]]] = [(-w(r), (r,)) for r in range(top_k)]
    heapq.heapify(heap)
    chosen: list[tuple[int, ...]] = []
    while heap and len(chosen) < max_nodes:
        neg, path = heapq.heappop(heap)
        chosen.append(path)
        if len(path) < max_depth:
            for r in range(top_k):
                heapq.heappush(heap, (neg * w(r), path + (r,)))
    chosen.sort(key=lambda p: (len(p), p))
    index = {p: i for i, p in enumerate(chosen)}
    return [(index[p[:-1]] if len(p) > 1 else -1, p[-1]) for p in chosen]


class TokenRecyclingDrafter(Drafter):
    """Adjacency table of the target's top-k next tokens, expanded into a draft tree.

    Args:
        top_k: candidates kept per token.
        max_nodes: nodes of the draft tree (``None``: 48 on CUDA, 12 on CPU).
        max_depth: depth of the tree.
        tree: ``False`` for a chain (the rank-0 path).
    """

    def __init__(self, top_k: int = 8, max_nodes: int | None = None, max_depth: int = 6, tree: bool = True):
        self.top_k = int(top_k)
        self.max_nodes = max_nodes
        self.max_depth = int(max_depth)
        self.tree = bool(tree)
        self.wants_target_topk = self.top_k
        self.table: np.ndarray | None = None
        self.template: list[tuple[int, int]] = []

    def __repr__(self) -> str:
        return f"TokenRecyclingDrafter(top_k={self.top_k}, max_nodes={self.max_nodes}, tree={self.tree})"

    def begin(self, session: DraftSession) -> None:
        super().begin(session)
        size = session.vocab.size
        if self.table is None or self.table.shape[0] != size:
            self.table = np.full((size, self.top_k), -1, dtype=np.int32)
        nodes = self.max_nodes
        if nodes is None:
            nodes = 48 if session.device.type == "cuda" else 12
        if self.tree:
            self.template = tree_template(nodes, self.max_depth, self.top_k)
        else:
            self.template = [(j - 1, 0) for j in range(min(nodes, self.max_depth))]

    def propose(self, rows: Sequence[RowContext]) -> list[Draft]:
        ctx = self.session.ctx
        table = self.table
        out = []
        for row in rows:
            tokens: list[int] = []
            parents: list[int] = []
            states: list = []
            # template node -> draft node (or None when the table or the constraint ran dry)
            placed: list[int | None] = []
            # per parent draft node: candidates walked so far and the valid ones found
            walked: dict[int, tuple[int, list[tuple[int, object]]]] = {}
            for parent, rank in self.template:
                if len(tokens) >= row.budget:
                    break
                if parent >= 0 and placed[parent] is None:
                    placed.append(None)
                    continue
                p_node = placed[parent] if parent >= 0 else -1
                p_token = tokens[p_node] if p_node >= 0 else row.last_token
                p_state = states[p_node] if p_node >= 0 else row.state
                if not 0 <= p_token < len(table):
                    placed.append(None)
                    continue
                cursor, valid = walked.get(p_node, (0, []))
                cands = table[p_token]
                while len(valid) <= rank and cursor < len(cands):
                    c = int(cands[cursor])
                    cursor += 1
                    if c < 0:
                        cursor = len(cands)
                        break
                    nxt = ctx.advance(p_state, c)
                    if nxt is not None:
                        valid.append((c, nxt))
                walked[p_node] = (cursor, valid)
                if rank >= len(valid):
                    placed.append(None)
                    continue
                c, nxt = valid[rank]
                placed.append(len(tokens))
                tokens.append(c)
                parents.append(p_node)
                states.append(nxt)
            out.append(Draft(tokens, parents, states=states))
        return out

    def observe(self, committed, target_topk=None) -> None:
        if target_topk is None:
            return
        for pairs in target_topk:
            for token, top in pairs:
                if 0 <= token < len(self.table):
                    self.table[token] = top[: self.top_k]
