"""Verification of drafts against the *constrained* target distribution, exactly.

The target has scored every draft node in one forward pass. Walking down a row's draft tree,
each position draws the target's token from the constrained target ``p~ = p c / Z`` (after
temperature, top-k and top-p, as every sampler does); if that token is one of the drafted
children the walk descends into it (the logits for the next position are already there),
otherwise the drawn token ends the round. Every position emits one token, drawn from ``p~``
given everything before it, so the output has exactly the law of decoding without drafting.

**Match rule** (deterministic nodes). The position's token is drawn by the user's sampler
(``sampler.step``: ``Masking``, ``AWRS``, ...), exactly as without drafting; the drafted
child it matches, if any, is accepted. For a single drafted token ``d`` this accepts with
probability ``p~(d)``: the speculative-sampling rule ``min(1, p~(d)/q(d))`` for a point-mass
draft ``q = delta_d``, with the same residual (``p~`` restricted to ``t != d``). For several
children it accepts with probability ``sum p~(children)``, the best any rule can do with
deterministic candidates. Greedy decoding is the special case: the constrained argmax at
every position, token for token.

*First draw* (default on CUDA, ``first_draw``): one unconstrained draw ``u ~ p`` at the
position first (greedy: ``u = argmax p``, taken for every column of the pass at once). If
``u`` is a drafted child it is accepted (children are known to be allowed); else if the
constraint allows ``u`` the token is ``u``; else the sampler draws from ``p~``. Then
``P(token = t) = p(t) + (1 - Z) p(t) / Z = p~(t)`` for every allowed ``t`` (the first element
of AWRS's Gumbel order), and most positions cost one fused kernel and at most one check.

**Standard rule** (a node sampled from the drafter's constrained distribution ``q~``, carried
with the draft): accept ``d`` with probability ``min(1, p~(d)/q~(d))``; on rejection draw from
``norm(max(0, p~ - q~))`` (Leviathan et al. 2023; Chen et al. 2023), with both distributions
constrained by the same exact set of allowed ids at that position (computed on those ids only).

**Weights.** When weights are needed (``return_weights``, ``return_details``, SMC) every
visited position calls ``sampler.step`` and takes its log weight. Where the first draw decided
the token, the sampler's call is independent of it, so ``E[w f(token)] = Z E_p~[f]`` still
holds: the weight keeps the sampler's own guarantee (exact ``Z`` for ``Masking``, unbiased and
properly weighted for ``AWRS``). Standard-rule positions use the exact ``log Z``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch

from guided.samplers.base import next_token_logprobs, untruncated_logprobs
from guided.speculative.drafts import Draft

if TYPE_CHECKING:  # pragma: no cover
    from guided.samplers.base import StepContext, TokenSampler

__all__ = ["RowOutcome", "verify_round"]

_NEG_INF = float("-inf")


@dataclass
class RowOutcome:
    """What one row commits after a round."""

    path: list[int] = field(default_factory=lambda: [0])  # fed columns kept: 0 = the pending token, 1 + node
    tokens: list[int] = field(default_factory=list)  # emitted: accepted draft tokens, then the drawn one
    state: object = None  # constraint state after ``tokens``; None when the row hit a dead end
    log_weight: float = 0.0
    accepted: int = 0  # draft tokens accepted
    dead: bool = False


def verify_round(
    logits: torch.Tensor,
    drafts: Sequence[Draft],
    states: Sequence,
    pending: Sequence[int],
    sampler: "TokenSampler",
    ctx: "StepContext",
    *,
    need_weights: bool,
    topk: int = 0,
    first_draw: bool = True,
) -> tuple[list[RowOutcome], list[list[tuple[int, np.ndarray]]] | None]:
    """Walk every row's draft against ``logits`` (``[rows, 1 + nodes, columns]``; column 0 is
    the row's ``pending`` token, column ``1 + j`` draft node ``j``).

    Positions are decided level by level, all walking rows together. Greedy decoding takes
    the argmax of every column at once (cheap); sampling draws at the visited columns only.
    ``first_draw=False`` skips the unconstrained first draw when sampling and lets the sampler
    decide every position (the same law; cheaper where the draw costs as much as the
    sampler's step, as on a CPU).
    Returns the outcomes and, when ``topk``, the target's top-``topk`` ids at every fed
    column as ``(input token, ids)`` pairs per row (what Token Recycling learns from).
    """
    rows, n_cols, width = logits.shape
    greedy = ctx.sampling.greedy
    weighted = need_weights and not greedy
    walk = _Walk(drafts, states)
    first_all = logits.argmax(dim=-1).cpu().numpy() if greedy else None
    top_pairs = None
    if topk:
        top_ids = torch.topk(logits, min(topk, width), dim=-1).indices.cpu().numpy()
        top_pairs = [
            [(int(pending[i]), top_ids[i, 0])] + [(t, top_ids[i, 1 + j]) for j, t in enumerate(d.tokens)]
            for i, d in enumerate(drafts)
        ]

    while True:
        if greedy:  # follow the argmax through the drafted children: no device work
            for i in walk.open_rows():
                while not walk.done[i]:
                    kids = walk.kids(i)
                    u = int(first_all[i, walk.column(i)])
                    if u not in kids:
                        break
                    walk.descend(i, kids[u])
        level = walk.open_rows()
        if not level:
            break
        standard = [i for i in level if walk.stochastic_child(i) is not None]
        match = [i for i in level if walk.stochastic_child(i) is None]
        device = logits.device
        if match:
            idx = torch.as_tensor(match, device=device)
            cols = torch.as_tensor([walk.column(i) for i in match], device=device)
            rows_logits = logits[idx, cols]
            if greedy:
                first = [int(first_all[i, walk.column(i)]) for i in match]
            elif first_draw:
                lp = next_token_logprobs(rows_logits, ctx.sampling)
                first = (lp + gumbel_like(lp, ctx.generator)).argmax(dim=-1).cpu().tolist()
            else:
                first = [None] * len(match)
            _match_step(match, rows_logits, first, walk, sampler, ctx, weighted)
        if standard:
            idx = torch.as_tensor(standard, device=device)
            cols = torch.as_tensor([walk.column(i) for i in standard], device=device)
            _standard_step(standard, logits[idx, cols], walk, ctx)
    return walk.outcomes, top_pairs


class _Walk:
    """Where each row is in its draft tree, and what it has emitted."""

    def __init__(self, drafts: Sequence[Draft], states: Sequence):
        self.drafts = drafts
        self.children = [d.children() for d in drafts]
        self.outcomes = [RowOutcome(state=s) for s in states]
        self.node = [-1] * len(drafts)
        self.done = [False] * len(drafts)

    def open_rows(self) -> list[int]:
        return [i for i, d in enumerate(self.done) if not d]

    def column(self, i: int) -> int:
        return 1 + self.node[i]

    def kids(self, i: int) -> dict[int, int]:
        return self.children[i].get(self.node[i], {})

    def stochastic_child(self, i: int) -> int | None:
        """The drafted child at row ``i``'s position when it was sampled from ``q~`` (chains only)."""
        q = self.drafts[i].q
        if q is None:
            return None
        kids = self.kids(i)
        if len(kids) != 1:
            return None
        child = next(iter(kids.values()))
        return child if q[child] is not None else None

    def descend(self, i: int, child: int) -> None:
        d = self.drafts[i]
        out = self.outcomes[i]
        self.node[i] = child
        out.tokens.append(d.tokens[child])
        out.path.append(1 + child)
        out.state = d.states[child]
        out.accepted += 1
        if out.state.is_finished():
            self.done[i] = True

    def finish(self, i: int, token: int, state) -> None:
        self.done[i] = True
        out = self.outcomes[i]
        if state is None:
            out.dead = True
            out.state = None
            return
        out.tokens.append(int(token))
        out.state = state


def gumbel_like(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Standard Gumbel noise shaped like ``x``: ``-log E`` with ``E ~ Exp(1)``."""
    e = torch.empty(x.shape, dtype=torch.float32, device=x.device).exponential_(generator=generator)
    return -torch.log(e)


def sample_rows(probs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One draw per row of ``probs`` (``[rows, columns]``, rows summing to 1) by inverse CDF.

    One uniform per row and a cumulative sum in float64: cheaper than ``torch.multinomial``
    on a CPU, exact on any device.
    """
    p = probs.double()
    cdf = torch.cumsum(p, dim=-1)
    u = torch.rand((p.shape[0], 1), generator=generator, device=p.device, dtype=torch.float64)
    tokens = torch.searchsorted(cdf, u * cdf[:, -1:], right=True).squeeze(-1).clamp(max=p.shape[-1] - 1)
    # u * total can round up to total: step back to the last token with mass (rare).
    bad = p.gather(-1, tokens[:, None]).squeeze(-1) <= 0
    if bool(bad.any()):
        positions = torch.arange(p.shape[-1], device=p.device)
        last_positive = torch.where(p > 0, positions, -1).max(dim=-1).values
        tokens = torch.where(bad, last_positive, tokens)
    return tokens


def _match_step(rows_, rows_logits, first, walk: _Walk, sampler, ctx, weighted: bool) -> None:
    """One position for each row: the unconstrained draw ``first`` if it is a drafted child or
    allowed, else the sampler's draw from ``p~``; with ``weighted``, the sampler is called at
    every position for the weight (its token is used only where the first draw is not)."""
    size = ctx.vocab.size
    decided: dict[int, tuple[int, object]] = {}
    call: list[int] = []
    for j, i in enumerate(rows_):
        kids = walk.kids(i)
        u = first[j]
        if u is None:
            pass  # no first draw: the sampler decides
        elif u in kids:
            decided[i] = (u, None)
        else:
            nxt = ctx.advance(walk.outcomes[i].state, u) if u < size else None
            if nxt is not None:
                decided[i] = (u, nxt)
        if weighted or i not in decided:
            call.append(j)
    if call:
        sub = rows_logits if len(call) == len(rows_) else rows_logits[torch.as_tensor(call, device=rows_logits.device)]
        result = sampler.step(sub, [walk.outcomes[rows_[j]].state for j in call], ctx)
        for n, j in enumerate(call):
            i = rows_[j]
            if weighted:
                walk.outcomes[i].log_weight += float(result.log_weights[n])
            if i not in decided:
                decided[i] = (int(result.tokens[n]), result.states[n])
    for i in rows_:
        token, state = decided[i]
        kids = walk.kids(i)
        if token in kids:
            walk.descend(i, kids[token])
        else:
            walk.finish(i, token, state)


def _standard_step(rows_, rows_logits, walk: _Walk, ctx) -> None:
    """One position for rows whose drafted child was sampled from ``q~``: ``min(1, p~/q~)``.

    Both distributions live on the allowed ids at that position (carried by the draft).
    """
    device = rows_logits.device
    child_of = [walk.stochastic_child(i) for i in rows_]
    drafts = walk.drafts
    dists = [drafts[i].q[c] for i, c in zip(rows_, child_of)]
    k = max(len(d.ids) for d in dists)
    ids = torch.zeros((len(rows_), k), dtype=torch.long, device=device)
    q = torch.zeros((len(rows_), k), dtype=torch.float32, device=device)
    valid = torch.zeros((len(rows_), k), dtype=torch.bool, device=device)
    for j, d in enumerate(dists):
        n = len(d.ids)
        ids[j, :n] = d.ids
        q[j, :n] = d.probs.float()
        valid[j, :n] = True
    target_lp = next_token_logprobs(rows_logits, ctx.sampling)
    masked = target_lp.gather(-1, ids).masked_fill(~valid, _NEG_INF)
    log_z = torch.logsumexp(masked, dim=-1)
    empty = ~torch.isfinite(log_z)
    if bool(empty.any()) and ctx.truncation_fallback:
        # top-k/top-p left no allowed token: the untruncated distribution, as the samplers do
        fallback = untruncated_logprobs(rows_logits, ctx.sampling).gather(-1, ids)
        fallback = torch.where(torch.isfinite(fallback), fallback, -1e30).masked_fill(~valid, _NEG_INF)
        masked = torch.where(empty[:, None], fallback, masked)
        log_z = torch.logsumexp(masked, dim=-1)
        ctx.stats.truncation_fallbacks += int(empty.sum())
    alive = torch.isfinite(log_z)
    p = torch.exp(masked - torch.where(alive, log_z, 0.0)[:, None])
    d_tok = torch.as_tensor([drafts[i].tokens[c] for i, c in zip(rows_, child_of)], device=device)
    d_pos = (ids == d_tok[:, None]).float().argmax(dim=-1, keepdim=True)
    p_d = p.gather(-1, d_pos).squeeze(-1)
    q_d = q.gather(-1, d_pos).squeeze(-1)
    r = torch.rand(len(rows_), generator=ctx.generator, device=device)
    accept = (r * q_d < p_d) & alive
    residual = torch.clamp(p - q, min=0.0)
    mass = residual.sum(-1, keepdim=True)
    residual = torch.where(mass > 0, residual / torch.where(mass > 0, mass, 1.0), p)
    residual = torch.where(alive[:, None], residual, valid.float() / valid.sum(-1, keepdim=True))
    drawn = ids.gather(-1, sample_rows(residual, ctx.generator)[:, None]).squeeze(-1)
    accept_np, drawn_np, alive_np = accept.cpu().numpy(), drawn.cpu().numpy(), alive.cpu().numpy()
    log_z_np = log_z.double().cpu().numpy()
    for j, i in enumerate(rows_):
        if not alive_np[j]:
            walk.finish(i, -1, None)
            continue
        walk.outcomes[i].log_weight += float(log_z_np[j])
        if accept_np[j]:
            walk.descend(i, child_of[j])
        else:
            token = int(drawn_np[j])
            walk.finish(i, token, ctx.advance(walk.outcomes[i].state, token))
