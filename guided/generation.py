"""``generate`` and ``smc``: constrained generation with any Hugging Face causal LM.

    >>> import guided
    >>> model, tokenizer = guided.load_default_model()
    >>> guided.generate(model, tokenizer, "x = ", guided.Regex(r"[0-9]{1,4}"), seed=0)   # a str
    >>> text, log_w = guided.generate(model, tokenizer, "x = ", guided.Regex(r"[0-9]+"),
    ...                               sampler=guided.AWRS(), return_weights=True)
    >>> result = guided.smc(model, tokenizer, "x = ", guided.Regex(r"[0-9]+"), n_particles=16)
    >>> result.posterior()
    >>> guided.generate(model, tokenizer, "x = ", grammar=guided.load_grammar("arithmetic"))
    >>> guided.generate(model, tokenizer, "x = ", guided.Regex(r"[0-9]+"), draft="prompt_lookup")

Order of processing at each step (see :mod:`guided.samplers.base`): logits -> temperature ->
top-k -> top-p (on the unconstrained distribution) -> constraint (mask, or AWRS's rejection
walk) -> sample. ``temperature=0`` is greedy: the constrained argmax.

The KV cache is reused across steps; a list of prompts is decoded as one left-padded batch.
"""

from __future__ import annotations

import time
from typing import Sequence

import numpy as np
import torch

from guided.constraint import Constraint
from guided.samplers.awrs import AWRS
from guided.samplers.base import DeadEndError, Sampling, StepContext, TokenSampler
from guided.samplers.lm import LMBatch, start_batch
from guided.samplers.output import GenerationOutput, output_from_smc, shape_result
from guided.samplers.smc import SMC, SMCResult
from guided.vocab import Vocabulary

__all__ = ["generate", "smc", "GenerationOutput", "decode"]


def generate(
    model,
    tokenizer,
    prompt: str | Sequence[str],
    constraint: Constraint | None = None,
    *,
    grammar: Constraint | str | None = None,
    sampler: TokenSampler | SMC | None = None,
    max_new_tokens: int = 256,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    return_weights: bool = False,
    return_details: bool = False,
    add_special_tokens: bool = True,
    draft=None,
    num_draft_tokens: int = 8,
):
    """Generate text satisfying ``constraint`` after ``prompt`` (a string or a list of strings).

    ``sampler``: ``AWRS()`` (default; same distribution as ``Masking()``, far fewer checks),
    ``Masking()``, or ``SMC(n_particles=...)`` (one particle per prompt is returned, drawn by
    weight, with ``log Z_hat`` as its weight).

    Returns the text (a list for a list of prompts); ``(text, log_weight)`` with
    ``return_weights``; a :class:`GenerationOutput` with ``return_details``. A row that hits
    ``max_new_tokens`` before the constraint is complete is returned as it stands
    (``finished`` is False in the details).

    ``grammar=`` names the constraint by keyword instead: a constraint, or Lark EBNF text.
    ``draft=`` turns on speculative drafting, which leaves the output distribution unchanged
    (same tokens under greedy decoding): a smaller causal LM sharing the tokenizer,
    ``"prompt_lookup"``, ``"recycling"`` or a :class:`~guided.speculative.Drafter`; see
    :func:`guided.speculative.generate_speculative` for the finer drafting options.
    """
    constraint = resolve_constraint(constraint, grammar)
    if draft is not None:
        from guided.speculative import generate_speculative  # drafting is an optional layer

        return generate_speculative(
            model, tokenizer, prompt, constraint, draft=draft, sampler=sampler, max_new_tokens=max_new_tokens,
            temperature=temperature, top_k=top_k, top_p=top_p, seed=seed, return_weights=return_weights,
            return_details=return_details, add_special_tokens=add_special_tokens, num_draft_tokens=num_draft_tokens,
        )
    sampler = AWRS() if sampler is None else sampler
    single, vocab, prompt_ids, pad_id, start = _prepare(tokenizer, prompt, constraint, add_special_tokens)
    sampling = Sampling(temperature=temperature, top_k=top_k, top_p=top_p)
    t0 = time.perf_counter()
    with torch.inference_mode():
        lm = start_batch(model, prompt_ids, pad_id)
        ctx = StepContext.create(vocab, sampling, seed=seed, device=lm.device)
        if isinstance(sampler, SMC):
            results = sampler.run(lm, [start] * len(prompt_ids), ctx, max_new_tokens, pad_id)
            out = output_from_smc(results, ctx)
        else:
            ids, log_w, finished = decode(lm, [start] * len(prompt_ids), sampler, ctx, max_new_tokens, pad_id)
            texts = [vocab.decode(row).decode("utf-8", errors="replace") for row in ids]
            out = GenerationOutput(texts, ids, log_w, finished, ctx.stats)
    ctx.stats.forward_seconds = getattr(lm, "forward_seconds", 0.0)
    ctx.stats.total_seconds = time.perf_counter() - t0
    return shape_result(out, single, return_weights, return_details)


def decode(
    lm: LMBatch,
    states: list,
    sampler: TokenSampler,
    ctx: StepContext,
    max_new_tokens: int,
    pad_id: int,
) -> tuple[list[list[int]], np.ndarray, list[bool]]:
    """The per-token loop: one sampler step and one batched forward pass per token.

    Finished rows are fed ``pad_id`` (their logits are ignored). Returns the generated ids,
    the summed log weights and which rows finished.
    """
    rows = lm.rows
    states = list(states)
    ids: list[list[int]] = [[] for _ in range(rows)]
    log_w = np.zeros(rows)
    finished = [s.is_finished() for s in states]
    for t in range(max_new_tokens):
        active = [i for i in range(rows) if not finished[i]]
        if not active:
            break
        logits = lm.logits if len(active) == rows else lm.logits[active]
        result = sampler.step(logits, [states[i] for i in active], ctx)
        feed = [int(pad_id)] * rows
        for j, i in enumerate(active):
            state = result.states[j]
            if state is None:
                text = ctx.vocab.decode(ids[i]).decode("utf-8", errors="replace")
                raise DeadEndError(f"row {i}: the constraint allows no token after {text!r} (step {t})")
            ids[i].append(result.tokens[j])
            states[i] = state
            log_w[i] += result.log_weights[j]
            feed[i] = result.tokens[j]
            finished[i] = state.is_finished()
        if all(finished) or t == max_new_tokens - 1:
            break
        if sampler.prefetch_masks:  # the next masks are made while the forward pass runs
            ctx.prefetch_masks([states[i] for i in range(rows) if not finished[i]])
        lm.append(feed)
    return ids, log_w, finished


def smc(
    model,
    tokenizer,
    prompt: str | Sequence[str],
    constraint: Constraint | None = None,
    n_particles: int = 8,
    *,
    grammar: Constraint | str | None = None,
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
) -> SMCResult | list[SMCResult]:
    """Sequential Monte Carlo: weighted samples from the *global* ``p(x) c(x) / Z``.

    >>> result = guided.smc(model, tokenizer, "n = ", guided.Regex(r"[0-9]{2}"), n_particles=16, seed=0)
    >>> result.posterior()                      # {text: probability}, most likely first
    >>> result.log_z                            # estimate of log Z
    >>> [(p.text, p.weight) for p in result.particles]

    ``proposal`` defaults to ``AWRS()``; ``critic(output_bytes) -> log-potential`` is an
    optional twist scored on whole prefixes (see :class:`~guided.samplers.SMC`). Returns one
    :class:`~guided.samplers.SMCResult` per prompt (a list for a list of prompts).
    """
    constraint = resolve_constraint(constraint, grammar)
    sampler = SMC(n_particles, proposal=proposal, ess_threshold=ess_threshold, resampling=resampling, critic=critic)
    single, vocab, prompt_ids, pad_id, start = _prepare(tokenizer, prompt, constraint, add_special_tokens)
    sampling = Sampling(temperature=temperature, top_k=top_k, top_p=top_p)
    with torch.inference_mode():
        lm = start_batch(model, prompt_ids, pad_id)
        ctx = StepContext.create(vocab, sampling, seed=seed, device=lm.device, truncation_fallback=False)
        results = sampler.run(lm, [start] * len(prompt_ids), ctx, max_new_tokens, pad_id)
    return results[0] if single else results


def _prepare(tokenizer, prompt, constraint: Constraint, add_special_tokens: bool):
    """``(single, vocab, prompt ids, pad id, start state)`` for one prompt or a list of them."""
    single = isinstance(prompt, str)
    prompts = [prompt] if single else list(prompt)
    vocab = Vocabulary.from_tokenizer(tokenizer)
    prompt_ids = [tokenizer(p, add_special_tokens=add_special_tokens)["input_ids"] for p in prompts]
    return single, vocab, prompt_ids, _pad_id(tokenizer, vocab), constraint.start(vocab)


def resolve_constraint(constraint: Constraint | None, grammar: Constraint | str | None) -> Constraint:
    """The one constraint named positionally or by ``grammar=`` (Lark text is compiled)."""
    if (constraint is None) == (grammar is None):
        raise TypeError("give exactly one constraint: positionally or as grammar=")
    chosen = constraint if constraint is not None else grammar
    if isinstance(chosen, str):
        from guided.grammars import Grammar

        chosen = Grammar(chosen)
    if not isinstance(chosen, Constraint):
        raise TypeError(f"expected a guided constraint or Lark grammar text, got {type(chosen).__name__}")
    return chosen


def _pad_id(tokenizer, vocab: Vocabulary) -> int:
    pad = getattr(tokenizer, "pad_token_id", None)
    return int(pad) if pad is not None else int(min(vocab.eos_ids))
