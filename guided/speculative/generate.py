"""``generate_speculative`` and ``smc_speculative``: constrained generation with drafting.

Same signature and result as :func:`guided.generate` plus ``draft=``:

    >>> from guided.speculative import generate_speculative
    >>> generate_speculative(model, tok, prompt, schema, draft=draft_model, temperature=0)
    >>> generate_speculative(model, tok, prompt, schema, draft="prompt_lookup")
    >>> generate_speculative(model, tok, prompt, schema, draft="recycling")
    >>> generate_speculative(model, tok, prompt, schema, draft="forced")

``draft`` is a smaller causal LM sharing the tokenizer, ``"prompt_lookup"`` (n-gram),
``"recycling"`` (Token Recycling), ``"forced"`` (grammar-forced text only) or any
:class:`~guided.speculative.drafts.Drafter`. Unless ``jump_forward=False`` every drafter is
preceded by the grammar-forced text where the constraint admits a single continuation.

What is preserved (see :mod:`guided.speculative.verify` for the argument):

- greedy (``temperature=0``): the output is token for token the constrained greedy output
  without drafting (up to floating-point differences between scoring a position alone and
  inside a multi-token pass);
- ``Masking`` / ``AWRS`` sampling: every token is an exact draw from the locally constrained
  target ``p c / Z`` given the tokens before it, exactly as without drafting; the log weights
  (``return_weights``) are the sampler's own (exact ``log Z`` for ``Masking``, an unbiased
  estimate of ``Z`` for ``AWRS``, exact for positions verified by ``min(1, p/q)``);
- ``SMC``: particles advance by whole rounds; each round multiplies a particle's weight by
  the weights of the tokens it emitted. Between rounds, running particles of a prompt with the
  same number of tokens are resampled among themselves (see :func:`_resample_index`). The
  weighted particles target the global ``p(x) c(x) / Z`` and ``exp(log_z)`` is an unbiased
  estimate of ``Z``, as without drafting; what changes is when (and among whom) resampling
  happens, not the target.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from guided.constraint import Constraint
from guided.samplers.output import GenerationOutput, output_from_smc, shape_result
from guided.samplers.awrs import AWRS
from guided.samplers.base import Sampling, StepContext, TokenSampler
from guided.samplers.smc import SMC, Particle, SMCResult, multinomial_resample, systematic_resample
from guided.speculative.drafts import Drafter, DraftSession
from guided.speculative.forced import ForcedDrafter
from guided.speculative.lookup import PromptLookupDrafter
from guided.speculative.model_drafter import ModelDrafter
from guided.speculative.ragged import RaggedLM
from guided.speculative.recycling import TokenRecyclingDrafter
from guided.speculative.rounds import DraftStats, Rounds
from guided.vocab import Vocabulary

__all__ = ["generate_speculative", "smc_speculative", "make_drafter", "SpeculativeOutput"]

_DRAFTER_NAMES = {
    "prompt_lookup": PromptLookupDrafter,
    "ngram": PromptLookupDrafter,
    "recycling": TokenRecyclingDrafter,
    "token_recycling": TokenRecyclingDrafter,
}


@dataclass
class SpeculativeOutput(GenerationOutput):
    """:class:`guided.samplers.output.GenerationOutput` plus the drafting counters."""

    draft_stats: DraftStats = field(default_factory=DraftStats)


def make_drafter(
    draft,
    *,
    num_draft_tokens: int = 8,
    adaptive: bool = True,
    stop_threshold: float = 0.7,
    jump_forward: bool = True,
) -> Drafter:
    """A :class:`Drafter` from what ``draft=`` accepts (see the module docstring)."""
    if isinstance(draft, Drafter):
        drafter = draft
    elif isinstance(draft, str):
        name = draft.lower().replace("-", "_")
        if name in ("forced", "grammar", "jump_forward"):
            return ForcedDrafter(None)
        if name not in _DRAFTER_NAMES:
            raise ValueError(f"unknown drafter {draft!r}; use a model, a Drafter or one of {sorted(_DRAFTER_NAMES)} / 'forced'")
        cls = _DRAFTER_NAMES[name]
        drafter = cls(num_tokens=num_draft_tokens) if cls is PromptLookupDrafter else cls()
    elif isinstance(draft, torch.nn.Module) or callable(getattr(draft, "forward", None)):
        drafter = ModelDrafter(draft, num_tokens=num_draft_tokens, adaptive=adaptive, stop_threshold=stop_threshold)
    else:
        raise TypeError(f"draft must be a causal LM, a Drafter or a drafter name, not {type(draft).__name__}")
    if jump_forward and not isinstance(drafter, ForcedDrafter):
        drafter = ForcedDrafter(drafter)
    return drafter


def generate_speculative(
    model,
    tokenizer,
    prompt: str | Sequence[str],
    constraint: Constraint,
    *,
    draft,
    sampler: TokenSampler | SMC | None = None,
    max_new_tokens: int = 256,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    return_weights: bool = False,
    return_details: bool = False,
    add_special_tokens: bool = True,
    num_draft_tokens: int = 8,
    adaptive: bool = True,
    stop_threshold: float = 0.7,
    jump_forward: bool = True,
    first_draw: bool | None = None,
):
    """:func:`guided.generate` with drafting: same arguments and results, plus ``draft=``.

    Drafting options: ``num_draft_tokens`` (most tokens per round for model and lookup
    drafters), ``adaptive`` / ``stop_threshold`` (model drafter: stop when the estimated
    probability of a rejection exceeds the threshold; ``adaptive=False`` is fixed-k),
    ``jump_forward`` (grammar-forced text before every draft), ``first_draw`` (when sampling,
    decide positions by one unconstrained draw before calling the sampler; default: on CUDA
    only, see :func:`~guided.speculative.verify.verify_round`). With ``return_details`` the
    result is a :class:`SpeculativeOutput` whose ``draft_stats`` has the acceptance rate and
    the mean accepted length.
    """
    sampler = AWRS() if sampler is None else sampler
    drafter = make_drafter(
        draft, num_draft_tokens=num_draft_tokens, adaptive=adaptive, stop_threshold=stop_threshold, jump_forward=jump_forward
    )
    single = isinstance(prompt, str)
    prompts = [prompt] if single else list(prompt)
    if isinstance(sampler, SMC):
        results = smc_speculative(
            model, tokenizer, prompts, constraint, sampler.n_particles, draft=drafter, proposal=sampler.proposal,
            ess_threshold=sampler.ess_threshold, resampling=sampler.resampling, critic=sampler.critic,
            max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed,
            add_special_tokens=add_special_tokens, jump_forward=False, first_draw=first_draw, _return_stats=True,
        )
        results, ctx, dstats = results
        out = output_from_smc(results, ctx, SpeculativeOutput, draft_stats=dstats)
    else:
        out = _generate(model, tokenizer, prompts, constraint, drafter, sampler, max_new_tokens,
                        Sampling(temperature=temperature, top_k=top_k, top_p=top_p), seed,
                        return_weights or return_details, add_special_tokens, first_draw)
    return shape_result(out, single, return_weights, return_details)


def _prompt_ids(tokenizer, prompts, add_special_tokens) -> list[list[int]]:
    ids = [list(tokenizer(p, add_special_tokens=add_special_tokens)["input_ids"]) for p in prompts]
    if any(len(p) == 0 for p in ids):
        raise ValueError("every prompt must have at least one token (add a BOS token to empty prompts)")
    return ids


def _session(model, tokenizer, vocab, ctx, prompt_ids, target: RaggedLM) -> DraftSession:
    return DraftSession(
        target=model, tokenizer=tokenizer, vocab=vocab, ctx=ctx, prompt_ids=prompt_ids,
        device=target.device, sample_drafts=not ctx.sampling.greedy,
    )


def _generate(model, tokenizer, prompts, constraint, drafter, sampler, max_new_tokens, sampling, seed, need_weights, add_special_tokens, first_draw):
    vocab = Vocabulary.from_tokenizer(tokenizer)
    prompt_ids = _prompt_ids(tokenizer, prompts, add_special_tokens)
    start = constraint.start(vocab)
    t0 = time.perf_counter()
    with torch.inference_mode():
        target = RaggedLM(model, [p[:-1] for p in prompt_ids])
        ctx = StepContext.create(vocab, sampling, seed=seed, device=target.device)
        drafter.begin(_session(model, tokenizer, vocab, ctx, prompt_ids, target))
        try:
            rounds = Rounds(target, drafter, sampler, ctx, prompt_ids, [start] * len(prompts), max_new_tokens, need_weights, first_draw)
            rows = list(range(len(prompts)))  # original index of each live batch row
            ids_out: list[list[int]] = [[] for _ in prompts]
            log_w = np.zeros(len(prompts))
            finished = [False] * len(prompts)
            while True:
                running = rounds.running()
                if len(running) < rounds.rows:  # drop rows that are done: no compute on them
                    for j in range(rounds.rows):
                        if j not in running:
                            ids_out[rows[j]] = rounds.generated(j)
                            log_w[rows[j]] = rounds.log_w[j]
                            finished[rows[j]] = rounds.finished[j]
                    if not running:
                        break
                    rounds.select(running)
                    rows = [rows[j] for j in running]
                    running = list(range(len(running)))
                rounds.step(running)
        finally:
            drafter_seconds = getattr(_innermost(drafter), "forward_seconds", 0.0)
            drafter.close()
    texts = [vocab.decode(r).decode("utf-8", errors="replace") for r in ids_out]
    stats = ctx.stats
    stats.tokens = rounds.stats.emitted
    stats.forward_seconds = target.forward_seconds
    stats.total_seconds = time.perf_counter() - t0
    rounds.stats.draft_forward_seconds = drafter_seconds
    return SpeculativeOutput(texts, ids_out, log_w, finished, stats, draft_stats=rounds.stats)


def _innermost(drafter: Drafter) -> Drafter:
    while isinstance(drafter, ForcedDrafter) and drafter.inner is not None:
        drafter = drafter.inner
    return drafter


_RESAMPLERS = {"systematic": systematic_resample, "multinomial": multinomial_resample}


def smc_speculative(
    model,
    tokenizer,
    prompt: str | Sequence[str],
    constraint: Constraint,
    n_particles: int = 8,
    *,
    draft,
    proposal: TokenSampler | None = None,
    ess_threshold: float = 0.5,
    resampling: str = "systematic",
    critic=None,
    max_new_tokens: int = 256,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    add_special_tokens: bool = True,
    num_draft_tokens: int = 8,
    adaptive: bool = True,
    stop_threshold: float = 0.7,
    jump_forward: bool = True,
    first_draw: bool | None = None,
    _return_stats: bool = False,
):
    """:func:`guided.smc` with drafting: particles advance by draft-verify rounds.

    Each round a particle emits one or more tokens (each an exact draw from the constrained
    target given its prefix) and multiplies its weight by their weights. Between rounds,
    running particles with the same number of tokens are resampled among themselves when
    their ESS falls below ``ess_threshold`` times their number. The weighted particles target
    ``p(x) c(x) exp(critic(x)) / Z`` and ``exp(log_z)`` is unbiased for ``Z``.
    """
    sampling = Sampling(temperature=temperature, top_k=top_k, top_p=top_p)
    if sampling.greedy:
        raise ValueError("SMC samples: use temperature > 0")
    smc = SMC(n_particles, proposal=proposal, ess_threshold=ess_threshold, resampling=resampling, critic=critic)
    drafter = make_drafter(
        draft, num_draft_tokens=num_draft_tokens, adaptive=adaptive, stop_threshold=stop_threshold, jump_forward=jump_forward
    )
    single = isinstance(prompt, str)
    prompts = [prompt] if single else list(prompt)
    vocab = Vocabulary.from_tokenizer(tokenizer)
    prompt_ids = _prompt_ids(tokenizer, prompts, add_special_tokens)
    n = smc.n_particles
    groups = len(prompts)
    particle_ids = [prompt_ids[g] for g in range(groups) for _ in range(n)]
    start = constraint.start(vocab)
    t0 = time.perf_counter()
    with torch.inference_mode():
        target = RaggedLM(model, [p[:-1] for p in particle_ids])
        ctx = StepContext.create(vocab, sampling, seed=seed, device=target.device, truncation_fallback=False)
        drafter.begin(_session(model, tokenizer, vocab, ctx, particle_ids, target))
        try:
            rounds = Rounds(target, drafter, smc.proposal, ctx, particle_ids, [start] * len(particle_ids), max_new_tokens, True, first_draw)
            potential = np.zeros(rounds.rows)
            cache: dict[bytes, float] = {}

            def score(i: int) -> float:
                prefix = vocab.decode(rounds.generated(i))
                if prefix not in cache:
                    cache[prefix] = float(smc.critic(prefix))
                return cache[prefix]

            if smc.critic is not None:
                for i in range(rounds.rows):
                    potential[i] = score(i)
                    rounds.log_w[i] = potential[i]
                    if not np.isfinite(potential[i]):
                        rounds.dead[i] = True
            while True:
                running = rounds.running()
                if not running:
                    break
                rounds.step(running, raise_dead=False)
                if smc.critic is not None:
                    for i in running:
                        if rounds.dead[i]:
                            continue
                        value = score(i)
                        rounds.log_w[i] += value - potential[i]
                        potential[i] = value
                        if not np.isfinite(value):
                            rounds.dead[i] = True
                            rounds.log_w[i] = -np.inf
                index = _resample_index(smc, rounds, groups, ctx)
                if index is not None:
                    ctx.stats.resamples += 1
                    rounds.select(index)
                    potential = potential[index]
        finally:
            drafter_seconds = getattr(_innermost(drafter), "forward_seconds", 0.0)
            drafter.close()
    done = np.asarray([f and not d for f, d in zip(rounds.finished, rounds.dead)])
    log_w = np.where(done, rounds.log_w, -np.inf)
    ctx.stats.tokens = rounds.stats.emitted
    ctx.stats.forward_seconds = target.forward_seconds
    ctx.stats.total_seconds = time.perf_counter() - t0
    rounds.stats.draft_forward_seconds = drafter_seconds
    results = []
    for g in range(groups):
        sl = slice(g * n, (g + 1) * n)
        group_w = log_w[sl]
        top = np.max(group_w)
        if np.isfinite(top):
            log_z = float(top + np.log(np.mean(np.exp(group_w - top))))
            w = np.exp(group_w - top)
            norm = w / w.sum()
        else:
            log_z, norm = -np.inf, np.zeros(n)
        particles = [
            Particle(
                text=vocab.decode(rounds.generated(i)).decode("utf-8", errors="replace"),
                token_ids=rounds.generated(i),
                log_weight=float(log_w[i]),
                weight=float(norm[i - g * n]),
                finished=bool(rounds.finished[i]),
            )
            for i in range(g * n, (g + 1) * n)
        ]
        results.append(SMCResult(particles, log_z, ctx.stats))
    if _return_stats:
        return results, ctx, rounds.stats
    return results[0] if single else results


def _resample_index(smc: SMC, rounds: Rounds, groups: int, ctx: StepContext):
    """Ancestors for every row when some class of particles was resampled, else None.

    Particles of a prompt are resampled among those still running *with the same number of
    generated tokens*: their weights estimate the same intermediate target (the prefix law at
    that length), as in token-by-token SMC. Particles at different lengths, and finished ones,
    are not compared: a particle that drafted further carries more factors ``Z_t <= 1`` and
    would lose to shorter ones for no reason. Resampling any subset among itself, each
    resampled particle taking the subset's mean weight, keeps every weighted sum unbiased, so
    ``Z_hat`` stays unbiased. A class is resampled when its ESS falls below
    ``ess_threshold * (class size)``.
    """
    n = smc.n_particles
    log_w = rounds.log_w
    running = set(rounds.running())
    index = np.arange(rounds.rows)
    changed = False
    for g in range(groups):
        classes: dict[int, list[int]] = {}
        for i in range(g * n, (g + 1) * n):
            if i in running and np.isfinite(log_w[i]):
                classes.setdefault(len(rounds.ids[i]) - rounds.prompt_len[i], []).append(i)
        for members in classes.values():
            if len(members) < 2:
                continue
            sub = log_w[members]
            top = np.max(sub)
            w = np.exp(sub - top)
            w = w / w.sum()
            if 1.0 / float(np.sum(w**2)) >= smc.ess_threshold * len(members):
                continue
            ancestors = _RESAMPLERS[smc.resampling](w, ctx.rng)
            mean_log_w = top + np.log(np.mean(np.exp(sub - top)))
            index[members] = np.asarray(members)[ancestors]
            log_w[members] = mean_log_w
            changed = True
    return index if changed else None
