"""The draft-verify round over a batch of rows: what ``generate_speculative`` and SMC both drive.

One round, for every active row: the drafter proposes (chain or tree), the constraint cuts what
it forbids, the target scores the row's pending token and every draft node in one batched
forward pass (tree attention), :func:`~guided.speculative.verify.verify_round` keeps the
accepted path and draws one more token, and the target's and drafter's KV caches drop the
rest. The constraint state advances along the draft and is simply not kept past the
accepted prefix (states are immutable: rolling back is keeping the old reference).

    >>> rounds = Rounds(target_lm, drafter, sampler, ctx, prompt_ids, start_states, max_new_tokens)
    >>> while rounds.step(rounds.running()): ...
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from guided.samplers.base import DeadEndError, StepContext, TokenSampler
from guided.speculative.drafts import Draft, Drafter, RowContext, cut_to_constraint
from guided.speculative.ragged import RaggedLM
from guided.speculative.verify import verify_round

__all__ = ["DraftStats", "Rounds"]


@dataclass
class DraftStats:
    """Counters of drafting in one generation (all rows together)."""

    rounds: int = 0  # row-rounds: one target verification of one row
    target_passes: int = 0  # batched target forward passes
    drafted: int = 0  # draft tokens verified (after the constraint cut)
    cut: int = 0  # draft tokens the constraint removed before verification
    accepted: int = 0  # draft tokens accepted
    emitted: int = 0  # tokens produced (accepted + one drawn per row-round)
    draft_seconds: float = 0.0  # inside drafter.propose (draft model passes included)
    verify_seconds: float = 0.0  # inside the target pass and the verification walk
    draft_forward_seconds: float = 0.0  # the draft model's forward passes

    @property
    def acceptance_rate(self) -> float:
        """Accepted / drafted draft tokens."""
        return self.accepted / self.drafted if self.drafted else 0.0

    @property
    def mean_accepted_length(self) -> float:
        """Tokens emitted per row-round (1 = no gain; k + 1 = every draft token accepted)."""
        return self.emitted / self.rounds if self.rounds else 0.0


class Rounds:
    """Per-row bookkeeping (ids, states, pending token, weights) and the round itself."""

    def __init__(
        self,
        target: RaggedLM,
        drafter: Drafter,
        sampler: TokenSampler,
        ctx: StepContext,
        prompt_ids: Sequence[Sequence[int]],
        states: Sequence,
        max_new_tokens: int,
        need_weights: bool,
        first_draw: bool | None = None,
    ):
        self.target = target
        self.drafter = drafter
        self.sampler = sampler
        self.ctx = ctx
        self.max_new_tokens = int(max_new_tokens)
        self.need_weights = need_weights
        # The unconstrained first draw pays off where it is one fused kernel (CUDA).
        self.first_draw = target.device.type == "cuda" if first_draw is None else bool(first_draw)
        self.ids = [list(p) for p in prompt_ids]  # prompt + generated
        self.prompt_len = [len(p) for p in prompt_ids]
        self.states = list(states)
        self.log_w = np.zeros(len(self.ids))
        self.finished = [s.is_finished() for s in self.states]
        self.dead = [False] * len(self.ids)
        self.stats = DraftStats()

    @property
    def rows(self) -> int:
        return len(self.ids)

    def generated(self, i: int) -> list[int]:
        return self.ids[i][self.prompt_len[i] :]

    def running(self) -> list[int]:
        """Rows that still generate: not finished, not dead, budget left."""
        return [
            i
            for i in range(self.rows)
            if not self.finished[i] and not self.dead[i] and len(self.ids[i]) - self.prompt_len[i] < self.max_new_tokens
        ]

    def step(self, active: Sequence[int], *, raise_dead: bool = True) -> bool:
        """One round for the rows ``active``; False when there was nothing to do."""
        if not active:
            return False
        ctx, stats = self.ctx, self.stats
        active_set = set(active)
        t0 = time.perf_counter()
        contexts = []
        for i in range(self.rows):
            budget = self.max_new_tokens - (len(self.ids[i]) - self.prompt_len[i]) - 1
            contexts.append(RowContext(self.ids[i], [], self.states[i], budget if i in active_set else 0))
        proposed = self.drafter.propose(contexts)
        drafts: list[Draft] = []
        for i in active:
            before = len(proposed[i])
            d = cut_to_constraint(proposed[i], self.states[i], ctx)
            stats.cut += before - len(d)
            stats.drafted += len(d)
            drafts.append(d)
        t1 = time.perf_counter()
        stats.draft_seconds += t1 - t0

        feeds: list[list[int]] = [[] for _ in range(self.rows)]
        parents: list[list[int]] = [[] for _ in range(self.rows)]
        for i, d in zip(active, drafts):
            feeds[i] = [self.ids[i][-1]] + d.tokens
            parents[i] = [-1] + [0 if p < 0 else p + 1 for p in d.parents]
        logits = self.target.feed(feeds, parents)
        stats.target_passes += 1
        if len(active) < self.rows:
            logits = logits[torch.as_tensor(list(active), device=logits.device)]
        outcomes, top_pairs = verify_round(
            logits,
            drafts,
            [self.states[i] for i in active],
            [self.ids[i][-1] for i in active],
            self.sampler,
            ctx,
            need_weights=self.need_weights,
            topk=self.drafter.wants_target_topk,
            first_draw=self.first_draw,
        )
        paths: list[list[int]] = [[] for _ in range(self.rows)]
        for i, out in zip(active, outcomes):
            paths[i] = out.path
        self.target.keep(paths)

        observed_topk = [[] for _ in range(self.rows)] if top_pairs is not None else None
        for j, (i, out) in enumerate(zip(active, outcomes)):
            stats.rounds += 1
            stats.accepted += out.accepted
            stats.emitted += len(out.tokens)
            self.ids[i].extend(out.tokens)
            self.log_w[i] += out.log_weight
            if out.dead:
                self.dead[i] = True
                self.log_w[i] = -np.inf
                if raise_dead:
                    text = ctx.vocab.decode(self.generated(i)).decode("utf-8", errors="replace")
                    raise DeadEndError(f"row {i}: the constraint allows no token after {text!r}")
                continue
            self.states[i] = out.state
            self.finished[i] = out.state.is_finished()
            if observed_topk is not None:
                observed_topk[i] = top_pairs[j]
        self.drafter.observe(self.ids, observed_topk)
        stats.verify_seconds += time.perf_counter() - t1
        return True

    def select(self, index: Sequence[int]) -> None:
        """Row ``i`` becomes old row ``index[i]`` (target, drafter and bookkeeping together)."""
        index = [int(i) for i in index]
        self.target.select(index)
        self.drafter.select(index)
        self.ids = [list(self.ids[i]) for i in index]
        self.prompt_len = [self.prompt_len[i] for i in index]
        self.states = [self.states[i] for i in index]
        self.log_w = self.log_w[index]
        self.finished = [self.finished[i] for i in index]
        self.dead = [self.dead[i] for i in index]
