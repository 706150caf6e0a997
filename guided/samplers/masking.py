"""``Masking``: locally constrained decoding, the baseline.

Every step computes the full allowed mask, renormalises ``p`` over the allowed tokens and
samples. The token is an exact draw from ``p * c / Z`` and the weight is the exact ``Z``,
so ``Masking`` is also a valid (if slow) SMC proposal.

    >>> guided.generate(model, tokenizer, "x = ", guided.Regex(r"[0-9]+"), sampler=Masking())

Note that *sampling a whole sequence this way* draws from the product of the locally
renormalised distributions, not from the global ``p(x) c(x) / Z``: use ``guided.smc`` for
that.
"""

from __future__ import annotations

import time
from typing import Sequence

import numpy as np
import torch

from guided.samplers.base import (
    StepContext,
    StepResult,
    TokenSampler,
    masked_draw,
    next_token_logprobs,
    untruncated_logprobs,
)

__all__ = ["Masking"]


class Masking(TokenSampler):
    """Full mask, renormalise, sample (or argmax when greedy)."""

    prefetch_masks = True  # every row's full mask, every step

    def step(self, logits: torch.Tensor, states: Sequence, ctx: StepContext) -> StepResult:
        t0 = time.perf_counter()
        logprobs = next_token_logprobs(logits, ctx.sampling)
        mask = ctx.masks(states, logits.shape[-1], logits.device)
        tokens, log_z = masked_draw(logprobs, mask, ctx)
        tokens_np = tokens.cpu().numpy()
        log_z_np = log_z.double().cpu().numpy()
        dead_rows = np.flatnonzero(tokens_np < 0)
        if len(dead_rows) and ctx.truncation_fallback:
            rows = torch.as_tensor(dead_rows, device=logits.device)
            sub_mask = mask[rows]
            fallback = untruncated_logprobs(logits[rows], ctx.sampling)
            # A model may give -inf to every valid token: then any valid token will do.
            fallback = fallback.clamp(min=-1e30)
            sub_tokens, sub_log_z = masked_draw(fallback, sub_mask, ctx)
            sub_tokens = sub_tokens.cpu().numpy()
            for j, row in enumerate(dead_rows):
                if sub_tokens[j] >= 0:
                    ctx.stats.truncation_fallbacks += 1
                    tokens_np[row] = sub_tokens[j]
                    log_z_np[row] = float(sub_log_z[j])
        new_states = []
        for row, state in enumerate(states):
            token = int(tokens_np[row])
            nxt = None if token < 0 else ctx.advance(state, token)
            if nxt is None:
                ctx.stats.dead += 1
                tokens_np[row] = -1
                log_z_np[row] = -np.inf
            new_states.append(nxt)
        if ctx.sampling.greedy:
            log_z_np = np.where(np.isfinite(log_z_np), 0.0, log_z_np)
        ctx.stats.tokens += len(states)
        ctx.stats.sampler_seconds += time.perf_counter() - t0
        return StepResult([int(t) for t in tokens_np], new_states, log_z_np)
