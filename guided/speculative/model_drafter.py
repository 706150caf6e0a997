"""Drafting with a smaller causal LM that shares the target's tokenizer.

The draft model keeps its own KV cache (:class:`~guided.speculative.ragged.RaggedLM`): each
round it is fed what was committed since it last saw the row (the corrected token, the
forced prefix), then drafts one token per forward pass, constrained: it proposes only tokens
the constraint allows, advancing the constraint state along its own draft. After
verification its cache is cut back to the longest prefix the target committed.

Two ways to draft:

- deterministic (greedy decoding, or ``sample=False``): the draft's constrained argmax;
  verified by the match rule (accepted iff the target's own draw at that position is it);
- sampled (``temperature > 0``, the default there): a draw from the draft's *constrained*
  distribution ``q~ = q c / Z_q``, kept with the draft so the verifier can apply the
  speculative-sampling rule ``min(1, p~/q~)`` to the constrained target ``p~``.

Adaptive length, in the spirit of SpecDec++: drafting stops when the estimated probability
that some drafted token is rejected, ``1 - prod(confidence)``, exceeds ``stop_threshold``;
the confidence of a token is the draft's probability of it (constrained when sampled, plain
softmax when greedy). ``adaptive=False`` always drafts ``num_tokens``.

    >>> ModelDrafter(draft_model, num_tokens=8, stop_threshold=0.7)
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from guided.samplers.base import next_token_logprobs, untruncated_logprobs
from guided.speculative.drafts import Draft, Drafter, DraftSession, RowContext, SparseDist, allowed_support
from guided.speculative.ragged import RaggedLM
from guided.speculative.verify import sample_rows

__all__ = ["ModelDrafter"]


class ModelDrafter(Drafter):
    """A smaller causal LM as drafter.

    Args:
        model: the draft model (same tokenizer as the target).
        num_tokens: most tokens drafted per round.
        adaptive: stop early when confidence drops (see the module docstring).
        stop_threshold: stop once ``1 - prod(confidence) > stop_threshold``.
        sample: ``None``: sample drafts when decoding samples; ``False``: always draft the
            constrained argmax (verified by the match rule).
    """

    def __init__(
        self,
        model,
        num_tokens: int = 8,
        adaptive: bool = True,
        stop_threshold: float = 0.7,
        sample: bool | None = None,
    ):
        if num_tokens < 1:
            raise ValueError("num_tokens must be >= 1")
        if not 0.0 < stop_threshold <= 1.0:
            raise ValueError("stop_threshold must be in (0, 1]")
        self.model = model
        self.num_tokens = int(num_tokens)
        self.adaptive = bool(adaptive)
        self.stop_threshold = float(stop_threshold)
        self.sample = sample
        self.lm: RaggedLM | None = None
        self.streams: list[list[int]] = []

    def __repr__(self) -> str:
        return f"ModelDrafter({type(self.model).__name__}, num_tokens={self.num_tokens}, adaptive={self.adaptive})"

    @property
    def forward_seconds(self) -> float:
        return self.lm.forward_seconds if self.lm is not None else 0.0

    def begin(self, session: DraftSession) -> None:
        super().begin(session)
        self.sampled = session.sample_drafts and self.sample is not False and not session.ctx.sampling.greedy
        contexts = [list(p[:-1]) for p in session.prompt_ids]
        self.lm = RaggedLM(self.model, contexts)
        self.streams = contexts

    def close(self) -> None:
        self.lm = None
        self.streams = []

    # -- drafting --------------------------------------------------------------------------
    def propose(self, rows: Sequence[RowContext]) -> list[Draft]:
        lm = self.lm
        ctx = self.session.ctx
        size = self.session.vocab.size
        n = len(rows)
        feeds: list[list[int]] = []
        for i, row in enumerate(rows):
            history = row.history()
            keep = _common_prefix(self.streams[i], history)
            if keep < len(self.streams[i]):
                self.streams[i] = self.streams[i][:keep]
            feeds.append(history[keep:] if row.budget > 0 else [])
        lm.truncate([len(s) for s in self.streams])
        drafts = [Draft(states=[], q=[] if self.sampled else None) for _ in rows]
        drafting = [row.budget > 0 and bool(feeds[i]) for i, row in enumerate(rows)]
        if not any(drafting):
            return drafts
        logits = lm.feed(feeds)
        last = torch.as_tensor([max(len(f), 1) - 1 for f in feeds], device=logits.device)
        current = logits[torch.arange(n, device=logits.device), last]  # [rows, columns]
        for i, f in enumerate(feeds):
            self.streams[i] = self.streams[i] + f
        states = [row.state for row in rows]
        confidence = np.ones(n)
        for step in range(self.num_tokens):
            active = [i for i in range(n) if drafting[i]]
            if not active:
                break
            picks = self._pick(current[active], [states[i] for i in active], ctx, size)
            feed: list[list[int]] = [[] for _ in range(n)]
            for (token, state, conf, q), i in zip(picks, active):
                if state is None:  # the constraint allows nothing the draft gives mass to
                    drafting[i] = False
                    continue
                d = drafts[i]
                d.parents.append(len(d.tokens) - 1)
                d.tokens.append(token)
                d.states.append(state)
                if self.sampled:
                    d.q.append(q)
                states[i] = state
                confidence[i] *= conf
                stop = (
                    len(d.tokens) >= min(self.num_tokens, rows[i].budget)
                    or state.is_finished()
                    or (self.adaptive and 1.0 - confidence[i] > self.stop_threshold)
                )
                if stop:
                    drafting[i] = False
                else:
                    feed[i] = [token]
            if not any(drafting):
                break
            logits = lm.feed(feed)
            current = logits[:, 0]
            for i in range(n):
                if feed[i]:
                    self.streams[i].append(feed[i][0])
        return drafts

    def _pick(self, logits: torch.Tensor, states: list, ctx, size: int):
        """Per row: (token, state, confidence, SparseDist or None)."""
        if self.sampled:
            return self._pick_sampled(logits, states, ctx, size)
        return self._pick_greedy(logits, states, ctx, size)

    def _pick_greedy(self, logits, states, ctx, size):
        probs = torch.softmax(logits.float(), dim=-1)
        k = min(8, logits.shape[-1])
        top_p, top_ids = torch.topk(probs, k, dim=-1)
        top_p, top_ids = top_p.cpu().numpy(), top_ids.cpu().numpy()
        out = []
        for r, state in enumerate(states):
            token, nxt = -1, None
            for t in top_ids[r].tolist():
                if t < size:
                    nxt = ctx.advance(state, int(t))
                    if nxt is not None:
                        token = int(t)
                        break
            if nxt is None:  # rare: the draft's top candidates are all forbidden
                mask = ctx.masks([state], logits.shape[-1], logits.device)[0]
                masked = logits[r].float().masked_fill(~mask, float("-inf"))
                if not bool(torch.isfinite(masked).any()):
                    out.append((-1, None, 0.0, None))
                    continue
                token = int(masked.argmax())
                nxt = ctx.advance(state, token)
            out.append((token, nxt, float(probs[r, token]), None))
        return out

    def _pick_sampled(self, logits, states, ctx, size):
        """Draws from the constrained draft distribution, computed on the allowed ids only."""
        lp = next_token_logprobs(logits, ctx.sampling)
        ids, valid = allowed_support(states, ctx, logits.device)
        masked = lp.gather(-1, ids).masked_fill(~valid, float("-inf"))
        log_z = torch.logsumexp(masked, dim=-1)
        empty = ~torch.isfinite(log_z)
        if bool(empty.any()):  # top-k/top-p cut every allowed token: draft from the untruncated law
            fallback = untruncated_logprobs(logits, ctx.sampling).gather(-1, ids).masked_fill(~valid, float("-inf"))
            masked = torch.where(empty[:, None], fallback, masked)
            log_z = torch.logsumexp(masked, dim=-1)
        alive = torch.isfinite(log_z)
        q = torch.exp(masked - torch.where(alive, log_z, 0.0)[:, None])
        q = torch.where(alive[:, None], q, valid.to(q.dtype))  # dead rows: a placeholder
        q = q / q.sum(-1, keepdim=True).clamp(min=1e-30)
        choice = sample_rows(q, ctx.generator)
        tokens = ids.gather(-1, choice[:, None]).squeeze(-1)
        conf = q.gather(-1, choice[:, None]).squeeze(-1)
        tokens_np, conf_np, alive_np = tokens.cpu().numpy(), conf.cpu().numpy(), alive.cpu().numpy()
        counts = valid.sum(-1).cpu().numpy()
        out = []
        for r, state in enumerate(states):
            if not alive_np[r]:  # the draft gives no mass to any allowed token: stop drafting
                out.append((-1, None, 0.0, None))
                continue
            token = int(tokens_np[r])
            k = int(counts[r])
            out.append((token, ctx.advance(state, token), float(conf_np[r]), SparseDist(ids[r, :k], q[r, :k])))
        return out

    # -- bookkeeping -----------------------------------------------------------------------
    def observe(self, committed, target_topk=None) -> None:
        for i, ids in enumerate(committed):
            keep = _common_prefix(self.streams[i], ids)
            self.streams[i] = self.streams[i][:keep]
        self.lm.truncate([len(s) for s in self.streams])

    def select(self, index) -> None:
        self.lm.select(index)
        self.streams = [list(self.streams[int(i)]) for i in index]


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i
