"""``AWRS``: adaptive weighted rejection sampling (Lipkin et al. 2025, arXiv 2504.05410).

Instead of masking the whole vocabulary, walk the tokens in the order of a sample *without
replacement* from ``p`` (the Gumbel-top-k order, ``argsort(log p + Gumbel)``) and check only
the tokens reached. The first accepted token is an exact draw from ``p * c / Z``. Each step
also returns an unbiased estimate of the valid mass ``Z = sum_t p(t) c(t)``, which makes
AWRS a proper SMC proposal.

    >>> sampler = AWRS(max_rejects=100)
    >>> guided.generate(model, tokenizer, prompt, constraint, sampler=sampler)

The order is revealed lazily and top-down: only the ``chunk`` most likely tokens get Gumbel
keys (one ``topk`` on the device), the rest of the vocabulary is one "tail" item whose key is
``log(tail mass) + Gumbel`` (the max of the tail's keys has exactly that law). If the walk
reaches the tail, the next chunk is fetched and its keys are drawn conditioned on their max
being the tail's key (truncated Gumbels, as in A* sampling and stochastic beam search). So no
step draws noise for 100K+ tokens.

Estimators of ``Z`` (``estimator=``):

- ``"recursive"``: after rejecting tokens of total mass ``m`` and accepting token ``a``,
  check one more token (the next in the order): the estimate is ``1 - m`` if it is
  accepted, else ``p(a)``. (This is the paper's product ``prod (1 - q_i)`` times the tail
  factor, with the product telescoped to ``1 - m``.) At least two checks per step.
- ``"geometric"``: simulate sampling *with* replacement until ``max_accepts`` accepts;
  draws of already rejected tokens are skipped and counted as geometric "phantom"
  rejections, repeats of accepted tokens cost nothing. The estimate is
  ``(k - 1) / (n - 1)`` after ``n`` draws with ``k`` accepts. Fewer checks when the
  distribution is peaked.
- ``"auto"`` (default): geometric when the top token has probability >= 2/3, else
  recursive (the choice depends on ``p`` only, so both stay unbiased).

``max_rejects`` bounds the failed constraint checks of one step. When it is reached the
step computes the full mask. Recursive: the token is a fresh draw from ``p * c / Z`` (the
first valid token of a Gumbel order is independent of how many invalid tokens precede it)
and the weight is the exact ``Z`` (the recursion's value at that node replaced by its
expectation; the product of ``1 - q_i`` telescopes away). Geometric: the rest of the
with-replacement stream is simulated exactly from the known ``Z``. Either way the token's
law and the weight's expectation are unchanged.

Known masks (``known_masks=True``, the default): a row whose state already holds its full
mask (``cached_mask()``, e.g. a configuration met before in a serving process) is not
walked: all such rows of a step are drawn in one batched masked draw, exactly from
``p * c / Z``, with the exact ``Z`` as weight (the zero-variance unbiased estimate). The law
is the walk's; only the work and the weight's variance go down. Seeded contexts always
walk, because which masks are cached depends on what ran before and a seed must give the
same draws again.

A step in which every token with mass is rejected returns a dead row (weight ``-inf``,
``Z == 0``); ``generate`` then falls back to the untruncated distribution (see
:mod:`guided.samplers.base`), SMC lets the particle die.
"""

from __future__ import annotations

import heapq
import math
import time
from typing import Sequence

import numpy as np
import torch

from guided.samplers.base import (
    StepContext,
    StepResult,
    TokenSampler,
    inverse_cdf_draws,
    masked_draw,
    next_token_logprobs,
    untruncated_logprobs,
)

__all__ = ["AWRS"]

_LOG_TWO_THIRDS = math.log(2 / 3)
_NEG_INF = float("-inf")
_TAIL = -1  # the heap item standing for every token not fetched yet
_TAIL_BUFFER = 64


class AWRS(TokenSampler):
    """Adaptive weighted rejection sampling over any ``ConstraintState``.

    Args:
        max_rejects: failed checks after which the step uses a full mask (exact either way).
        estimator: ``"auto"``, ``"recursive"`` or ``"geometric"`` (see the module docstring).
        max_accepts: accepts the geometric estimator waits for (>= 2; more: lower variance).
        chunk: most likely tokens fetched from the device at once.
        known_masks: in unseeded contexts, rows whose state already holds its mask
            (``cached_mask``) are drawn exactly from it, with the exact ``Z`` as weight (see
            :meth:`_known_masks`); False walks them too (same law, a noisier weight, checks
            answered by look-up).  Seeded contexts always walk: which masks are cached
            depends on what ran before, and a seed must give the same draws again.
    """

    def __init__(
        self,
        max_rejects: int = 100,
        estimator: str = "auto",
        max_accepts: int = 2,
        chunk: int = 32,
        known_masks: bool = True,
    ):
        if estimator not in ("auto", "recursive", "geometric"):
            raise ValueError(f"estimator must be 'auto', 'recursive' or 'geometric', not {estimator!r}")
        if max_rejects < 1:
            raise ValueError("max_rejects must be >= 1")
        if max_accepts < 2:
            raise ValueError("max_accepts must be >= 2")
        if chunk < 1:
            raise ValueError("chunk must be >= 1")
        self.max_rejects = int(max_rejects)
        self.estimator = estimator
        self.max_accepts = int(max_accepts)
        self.chunk = int(chunk)
        self.known_masks = bool(known_masks)

    def __repr__(self) -> str:
        return f"AWRS(max_rejects={self.max_rejects}, estimator={self.estimator!r})"

    # -- the batched step ---------------------------------------------------------------
    def step(self, logits: torch.Tensor, states: Sequence, ctx: StepContext) -> StepResult:
        return self.step_each(logits, states, [ctx] * logits.shape[0])

    def step_each(self, logits: torch.Tensor, states: Sequence, contexts: Sequence[StepContext]) -> StepResult:
        """:meth:`step` where row ``r`` draws with ``contexts[r]`` (its own random stream, memo
        and stats), e.g. requests with their own seeds; the whole-vocabulary work (temperature,
        top-k/top-p, the top of the order) is done once for all rows, which must share one
        ``Sampling``.

            >>> AWRS().step_each(logits, [s1, s2], [StepContext.create(vocab, seed=1), StepContext.create(vocab, seed=2)])
        """
        t0 = time.perf_counter()
        rows, width = logits.shape
        if len(contexts) != rows:
            raise ValueError(f"{rows} rows but {len(contexts)} contexts")
        sampling = contexts[0].sampling
        if any(c.sampling != sampling for c in contexts):
            raise ValueError("the rows of one AWRS step must share one Sampling")
        greedy = sampling.greedy
        # Whole-vocabulary work stays on the device in float32; the host walk works in float64.
        logprobs = next_token_logprobs(logits, sampling)
        tokens: list[int] = [-1] * rows
        new_states: list = [None] * rows
        log_weights = np.zeros(rows, dtype=np.float64)
        done = self._known_masks(logprobs, states, contexts, tokens, new_states, log_weights) if self.known_masks else ()
        walked = [r for r in range(rows) if r not in done]
        if walked:  # the top of the order, for the rows that walk only
            k = min(self.chunk, width)
            lps = logprobs if len(walked) == rows else logprobs[torch.as_tensor(walked, device=logprobs.device)]
            top_lps, top_ids = torch.topk(lps, k, dim=-1)
            if bool((lps.amin(dim=-1) > _NEG_INF).all()):  # tokens with mass: usually every one
                n_finite = torch.full((len(walked), 1), width, dtype=lps.dtype, device=lps.device)
            else:
                n_finite = (lps > _NEG_INF).sum(dim=-1, keepdim=True, dtype=torch.int32)
            packed = torch.cat([top_lps.double(), top_ids.double(), n_finite.double()], dim=-1).cpu().numpy()
        for j, r in enumerate(walked):
            state = states[r]
            ctx = contexts[r]
            row = packed[j]
            chunk = _Chunk(logprobs[r], row[k : 2 * k].astype(np.int64), row[:k], int(row[2 * k]), ctx.generator)
            checks = _RowChecks(state, ctx)
            if greedy:
                token, nxt, logw = self._greedy(r, checks, chunk, logprobs, ctx)
            elif self.estimator == "geometric" or (self.estimator == "auto" and row[0] >= _LOG_TWO_THIRDS):
                token, nxt, logw = self._geometric(r, checks, _Urn(chunk, ctx), logprobs, ctx)
            else:
                token, nxt, logw = self._recursive(r, checks, _GumbelWalk(chunk, ctx.rng), logprobs, ctx)
            if nxt is None and ctx.truncation_fallback:
                token, nxt, logw = self._truncation_fallback(logits[r : r + 1], state, ctx)
            if nxt is None:
                ctx.stats.dead += 1
                token, logw = -1, _NEG_INF
            tokens[r] = int(token)
            new_states[r] = nxt
            log_weights[r] = logw
        elapsed = time.perf_counter() - t0
        for ctx in {id(c): c for c in contexts}.values():
            mine = sum(c is ctx for c in contexts)
            ctx.stats.tokens += mine
            ctx.stats.sampler_seconds += elapsed * mine / rows
        return StepResult(tokens, new_states, log_weights)

    def _known_masks(self, logprobs, states, contexts, tokens, new_states, log_weights) -> set:
        """Rows whose state already holds its mask (``cached_mask``: free) are drawn exactly
        from ``p * c / Z`` in one batched masked draw per context, with the exact ``Z`` as
        weight (the zero-variance unbiased estimate): the walk would only repeat, check by
        look-up, what the mask says.  Rows with ``Z == 0`` are left to the walk (and its
        truncation fallback).  Returns the rows done."""
        known: dict[int, tuple] = {}  # id(ctx) -> (ctx, rows, masks)
        for r, state in enumerate(states):
            mask = state.cached_mask()
            if mask is not None and not contexts[r].seeded:
                ctx = contexts[r]
                entry = known.setdefault(id(ctx), (ctx, [], []))
                entry[1].append(r)
                entry[2].append(mask)
        done: set = set()
        width = logprobs.shape[-1]
        for ctx, rows, masks in known.values():
            n = min(width, len(masks[0]))
            mask = torch.zeros((len(rows), width), dtype=torch.bool)
            mask[:, :n] = torch.from_numpy(np.stack([m[:n] for m in masks]))
            ctx.stats.lookups += len(rows)
            index = torch.as_tensor(rows, device=logprobs.device)
            drawn, log_z = masked_draw(logprobs.index_select(0, index), mask.to(logprobs.device), ctx)
            drawn, log_z = drawn.tolist(), log_z.double().cpu().numpy()
            for j, r in enumerate(rows):
                if drawn[j] < 0:
                    continue
                nxt = ctx.advance(states[r], drawn[j])
                if nxt is None:  # (a mask never allows a dead token: kept for safety)
                    continue
                tokens[r], new_states[r] = drawn[j], nxt
                log_weights[r] = 0.0 if ctx.sampling.greedy else float(log_z[j])
                done.add(r)
        return done

    # -- walks ----------------------------------------------------------------------------
    def _greedy(self, r, checks, chunk: "_Chunk", logprobs, ctx):
        """Descending-probability walk: the first accepted token is the constrained argmax."""
        rejects = 0
        i = 0
        while True:
            while i >= len(chunk.ids):
                if not chunk.fetch_more():
                    return -1, None, _NEG_INF
            token, lp = chunk.ids[i], chunk.lps[i]
            if lp == _NEG_INF:
                return -1, None, _NEG_INF
            nxt = checks.advance(token)
            if nxt is not None:
                return token, nxt, 0.0
            if token < ctx.vocab.size:
                rejects += 1
                if rejects >= self.max_rejects:
                    token, nxt, _ = self._mask_step(r, checks.state, logprobs, ctx)
                    return token, nxt, (0.0 if nxt is not None else _NEG_INF)
            i += 1

    def _recursive(self, r, checks, walk: "_GumbelWalk", logprobs, ctx):
        rejected_mass = 0.0
        rejects = 0
        while True:
            item = walk.next()
            if item is None:  # every token with mass was checked and rejected: Z == 0
                return -1, None, _NEG_INF
            token, lp = item
            if 1.0 - rejected_mass <= 1e-6:
                # What is left is too small to walk in floating point: finish exactly.
                return self._mask_step(r, checks.state, logprobs, ctx)
            nxt = checks.advance(token)
            if nxt is not None:
                following = walk.next()
                if following is None or checks.allows(following[0]):
                    return token, nxt, math.log1p(-min(rejected_mass, 1.0))
                return token, nxt, lp
            rejected_mass += math.exp(lp)
            if token < ctx.vocab.size:
                rejects += 1
                if rejects >= self.max_rejects:
                    return self._mask_step(r, checks.state, logprobs, ctx)

    def _geometric(self, r, checks, urn: "_Urn", logprobs, ctx):
        k = self.max_accepts
        accepts = 0
        draws_rejected = 0.0  # with-replacement draws of rejected tokens, phantoms included
        distinct_rejects = 0
        rejected_mass = 0.0
        accepted: dict[int, object] = {}
        first: int | None = None
        while accepts < k:
            if rejected_mass > 0:
                remaining = 1.0 - rejected_mass
                if remaining <= 1e-6:
                    return self._geometric_finish(r, checks.state, logprobs, ctx, accepts, draws_rejected, first, accepted)
                draws_rejected += float(ctx.rng.geometric(remaining) - 1)
            drawn = urn.draw()
            if drawn is None:  # no mass left outside the rejected tokens: Z == 0
                return -1, None, _NEG_INF
            token, lp = drawn
            if token in accepted:
                accepts += 1
                continue
            nxt = checks.advance(token)
            if nxt is not None:
                accepted[token] = nxt
                accepts += 1
                if first is None:
                    first = token
                continue
            urn.reject(token)
            draws_rejected += 1
            rejected_mass += math.exp(lp)
            if token < ctx.vocab.size:
                distinct_rejects += 1
                if distinct_rejects >= self.max_rejects:
                    return self._geometric_finish(r, checks.state, logprobs, ctx, accepts, draws_rejected, first, accepted)
        return first, accepted[first], math.log((k - 1) / (accepts + draws_rejected - 1))

    # -- exact fallbacks -----------------------------------------------------------------
    def _mask_step(self, r, state, logprobs, ctx):
        """Full mask: a draw from ``p * c / Z`` (argmax when greedy) and the exact log Z."""
        ctx.stats.mask_fallbacks += 1
        mask = ctx.masks([state], logprobs.shape[-1], logprobs.device)
        drawn, log_z = masked_draw(logprobs[r : r + 1], mask, ctx)
        token = int(drawn[0])
        if token < 0:
            return -1, None, _NEG_INF
        return token, ctx.advance(state, token), float(log_z[0])

    def _geometric_finish(self, r, state, logprobs, ctx, accepts, draws_rejected, first, accepted):
        """Finish the with-replacement stream exactly from the mask's ``Z``: no more checks."""
        ctx.stats.mask_fallbacks += 1
        k = self.max_accepts
        mask = ctx.masks([state], logprobs.shape[-1], logprobs.device)
        drawn, log_z_t = masked_draw(logprobs[r : r + 1], mask, ctx)
        log_z = float(log_z_t[0])
        if not math.isfinite(log_z):
            return -1, None, _NEG_INF
        z = math.exp(log_z)
        if first is None:
            first = int(drawn[0])
            accepted[first] = ctx.advance(state, first)
        need = k - accepts
        # Failures before `need` successes of probability z (negative binomial); for a tiny z
        # the count overflows integers and its gamma limit is exact to double precision.
        if z > 1e-12:
            extra = float(ctx.rng.negative_binomial(need, min(z, 1.0)))
            draws = k + draws_rejected + extra
            return first, accepted[first], math.log((k - 1) / (draws - 1))
        # Gamma(need, (1 - z) / z) = Gamma(need, 1) * (1 - z) / z, in log space: z itself may
        # underflow to 0 (a low temperature), where (1 - z) / z divided by zero
        log_extra = math.log(max(float(ctx.rng.gamma(need, 1.0)), 1e-300)) + math.log1p(-z) - log_z
        log_draws_less_one = float(np.logaddexp(math.log(k - 1 + draws_rejected), log_extra))
        return first, accepted[first], math.log(k - 1) - log_draws_less_one

    def _truncation_fallback(self, logits_row, state, ctx):
        """Z == 0 under top-k/top-p: sample from the untruncated distribution (generate only)."""
        mask = ctx.masks([state], logits_row.shape[-1], logits_row.device)
        lp = untruncated_logprobs(logits_row, ctx.sampling)
        lp = lp.clamp(min=-1e30)  # a model may give -inf to every valid token
        drawn, log_z = masked_draw(lp, mask, ctx)
        token = int(drawn[0])
        if token < 0:
            return -1, None, _NEG_INF
        ctx.stats.truncation_fallbacks += 1
        weight = 0.0 if ctx.sampling.greedy else float(log_z[0])
        return token, ctx.advance(state, token), weight


_MAX_MEMO_STATES = 4096  # configurations whose transitions one generation remembers


class _RowChecks:
    """The checks of one row's step, answered by lookup where the answer is already known: from
    a mask the state holds (``cached_mask``), or from this generation's memo of transitions of
    equal states (``cache_key``). The walk and its randomness are the same either way, so the
    token's law and the weight are unchanged; only constraint work is saved."""

    __slots__ = ("state", "ctx", "mask", "memo")

    def __init__(self, state, ctx: StepContext):
        self.state = state
        self.ctx = ctx
        self.mask = state.cached_mask()
        key = state.cache_key()
        if key is None:
            self.memo = None
        else:
            transitions = ctx.transitions
            self.memo = transitions.get(key)
            if self.memo is None:
                if len(transitions) >= _MAX_MEMO_STATES:
                    transitions.clear()
                self.memo = transitions[key] = {}

    def advance(self, token: int):
        """The state after ``token``, or None; padding columns are rejected unchecked."""
        ctx = self.ctx
        if token >= ctx.vocab.size:
            return None
        if self.mask is not None and not self.mask[token]:
            ctx.stats.lookups += 1
            return None
        memo = self.memo
        if memo is not None and token in memo:
            ctx.stats.lookups += 1
            return memo[token]
        nxt = ctx.advance(self.state, token)
        if memo is not None:
            memo[token] = nxt
        return nxt

    def allows(self, token: int) -> bool:
        ctx = self.ctx
        if token >= ctx.vocab.size:
            return False
        if self.mask is not None:
            ctx.stats.lookups += 1
            return bool(self.mask[token])
        if self.memo is not None:
            return self.advance(token) is not None  # remembered for later steps
        return ctx.allows(self.state, token)


class _Chunk:
    """The most likely tokens of one row (by decreasing log-probability), fetched on demand,
    and a sampler for the rest (the "tail", every token not fetched or drawn yet)."""

    __slots__ = ("lp_row", "ids", "lps", "known", "fetched", "finite", "finite_known", "tail_mass", "generator", "_buffer")

    def __init__(self, lp_row: torch.Tensor, ids: np.ndarray, lps: np.ndarray, n_finite: int, generator):
        self.lp_row = lp_row
        self.generator = generator
        self.ids: list[int] = ids.tolist()
        self.lps: list[float] = lps.tolist()
        self.known = set(self.ids)
        self.fetched = len(self.ids)
        self.finite = n_finite
        self.finite_known = sum(1 for lp in self.lps if lp > _NEG_INF)
        self.tail_mass = self._initial_tail()
        self._buffer: list[int] = []

    def _initial_tail(self) -> float:
        if self.finite_known >= self.finite:
            return 0.0
        # The row is normalised in float32: this is exact to ~1e-6, far below sampling noise.
        return max(0.0, 1.0 - math.fsum(math.exp(lp) for lp in self.lps))

    def fetch_more(self) -> bool:
        """Append the next most likely tokens (doubling the fetched count); False when none is left."""
        width = self.lp_row.shape[-1]
        if self.fetched >= min(width, self.finite):
            return False
        k = min(2 * self.fetched, width)
        top_lps, top_ids = torch.topk(self.lp_row, k)
        packed = torch.stack([top_lps, top_ids.double()]).cpu().numpy()
        self.fetched = k
        before = len(self.ids)
        for lp, token in zip(packed[0].tolist(), packed[1].astype(np.int64).tolist()):
            if token not in self.known and lp > _NEG_INF:
                self.known.add(token)
                self.ids.append(token)
                self.lps.append(lp)
                self.finite_known += 1
        return len(self.ids) > before

    def draw_tail(self) -> tuple[int, float] | None:
        """A token drawn from ``p`` restricted to the tail; it joins the known tokens.

        Draws come from a buffer of i.i.d. draws made when it was filled; a buffered token
        that has become known since is skipped, which leaves an exact draw from the
        current (smaller) tail. ``None`` when the tail holds no mass.
        """
        while True:
            if self.tail_mass <= 0.0 or self.finite_known >= self.finite:
                self.tail_mass = 0.0
                return None
            while self._buffer:
                token = self._buffer.pop()
                if token not in self.known:
                    lp = float(self.lp_row[token])
                    self.known.add(token)
                    self.finite_known += 1
                    self.tail_mass = max(self.tail_mass - math.exp(lp), 0.0)
                    if self.finite_known >= self.finite:
                        self.tail_mass = 0.0
                    return token, lp
            known = torch.as_tensor(sorted(self.known), device=self.lp_row.device)
            row = self.lp_row.index_fill(0, known, _NEG_INF)
            drawn = inverse_cdf_draws(row[None], _TAIL_BUFFER, self.generator)[0].tolist()
            if all(t in self.known for t in drawn):  # what is left underflows: no mass after all
                self.tail_mass = 0.0
                return None
            self._buffer = drawn[::-1]


class _GumbelWalk:
    """One row's tokens in the order of ``log p + Gumbel``, revealed lazily (top-down).

    Fetched tokens carry their own keys; the tail is one item with key
    ``log(tail mass) + Gumbel``. When the tail's key is the largest, its argmax is drawn from
    ``p`` restricted to the tail (the argmax of Gumbels is independent of their max) and gets
    that key; the rest of the tail gets a new key, a Gumbel truncated below it.
    """

    def __init__(self, chunk: _Chunk, rng: np.random.Generator):
        self.chunk = chunk
        self.rng = rng
        self.heap: list[tuple[float, int, int, float]] = []
        self.seq = 0
        lps = np.asarray(chunk.lps, dtype=np.float64)
        keys = lps + rng.gumbel(size=len(lps))
        for token, lp, key in zip(chunk.ids, lps.tolist(), keys.tolist()):
            if key > _NEG_INF:
                self._push(key, token, lp)
        if chunk.tail_mass > 0:
            self._push(math.log(chunk.tail_mass) + rng.gumbel(), _TAIL, 0.0)

    def _push(self, key: float, token: int, lp: float) -> None:
        heapq.heappush(self.heap, (-key, self.seq, token, lp))
        self.seq += 1

    def next(self) -> tuple[int, float] | None:
        """The next token of the order and its log-probability; ``None`` when none has mass left."""
        while self.heap:
            neg_key, _, token, lp = heapq.heappop(self.heap)
            if token != _TAIL:
                return token, lp
            drawn = self.chunk.draw_tail()
            if drawn is None:
                continue
            if self.chunk.tail_mass > 0:
                top = -neg_key
                rest = math.log(self.chunk.tail_mass) + self.rng.gumbel()
                self._push(-np.logaddexp(-top, -rest), _TAIL, 0.0)  # Gumbel truncated below `top`
            return drawn
        return None


class _Urn:
    """Draws with replacement from ``p`` restricted to the tokens not rejected so far.

    Known tokens are drawn on the host; the others form one "tail" outcome of known mass,
    resolved on the device when it comes up.
    """

    def __init__(self, chunk: _Chunk, ctx: StepContext):
        self.chunk = chunk
        self.ctx = ctx
        self.ids: list[int] = list(chunk.ids)
        self.lps: list[float] = list(chunk.lps)
        self.weights = np.exp(np.asarray(self.lps, dtype=np.float64))
        self.index = {t: j for j, t in enumerate(self.ids)}

    def draw(self) -> tuple[int, float] | None:
        known = float(self.weights.sum())
        total = known + self.chunk.tail_mass
        if total <= 0.0:
            return None
        u = self.ctx.rng.random() * total
        if u < known:
            j = int(np.searchsorted(np.cumsum(self.weights), u, side="right"))
            j = min(j, len(self.ids) - 1)
            while j > 0 and self.weights[j] == 0.0:  # rounding at a boundary: step back
                j -= 1
            return self.ids[j], self.lps[j]
        drawn = self.chunk.draw_tail()
        if drawn is None:
            return self.draw() if known > 0 else None
        token, lp = drawn
        self.index[token] = len(self.ids)
        self.ids.append(token)
        self.lps.append(lp)
        self.weights = np.append(self.weights, math.exp(lp))
        return drawn

    def reject(self, token: int) -> None:
        self.weights[self.index[token]] = 0.0
