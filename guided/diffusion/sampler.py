"""Constrained generation with masked-diffusion language models (LLaDA / Dream style).

    >>> from guided.models import load_diffusion_model
    >>> model, tokenizer = load_diffusion_model()
    >>> guided.diffusion.generate(model, tokenizer, "JSON: ", load_grammar("json"), length=32, steps=32)
    '{"name": "x"}'

The canvas is the prompt followed by ``length`` mask tokens.  Each step runs the model once on
the whole canvas (a bidirectional transformer: logits for every position), picks the masked
positions whose best token is most confident (within the current block when
``block_length`` is set: semi-autoregressive decoding as in LLaDA), and unmasks them.  With a
grammar, the token for a position is the first of its candidates, in order of (Gumbel-perturbed)
probability, for which the :class:`~guided.diffusion.InfillingChecker` says the partial output
can still be completed; if none of the first ``max_candidates`` is, the token of the checker's
current witness (a completion it has proved) is used, so decoding never gets stuck and the
final output always parses.  End of text: a position may become EOS (then the output ends
there and every later position is EOS too), but only where no known token follows.

Any Hugging Face masked-LM-style model works: ``model(input_ids=...).logits`` must give logits
for every position (``ModernBertForMaskedLM``, LLaDA with ``trust_remote_code``).  Dream-style
models, whose logits at ``i`` predict position ``i + 1``, need ``shift_logits=True``.  The mask
token id comes from ``mask_token_id`` (argument, ``model.config`` or the tokenizer).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import torch

from guided.diffusion.canvas import canvas_parts, slots_of
from guided.diffusion.checker import InfillingChecker

__all__ = ["generate", "DiffusionOutput"]


@dataclass
class DiffusionOutput:
    """What ``generate(..., return_details=True)`` returns."""

    text: str
    token_ids: list[int]  # the output tokens (up to the first EOS)
    canvas: list[int]  # the whole final canvas (EOS padding included)
    steps: int = 0
    checks: int = 0
    fallbacks: int = 0  # positions filled from the checker's witness
    forward_seconds: float = 0.0
    check_seconds: float = 0.0
    total_seconds: float = 0.0
    decided_by: Counter = field(default_factory=Counter)


def _mask_id(model, tokenizer, mask_token_id):
    if mask_token_id is not None:
        return int(mask_token_id)
    for src in (getattr(model, "config", None), tokenizer):
        mid = getattr(src, "mask_token_id", None)
        if mid is not None:
            return int(mid)
    raise ValueError("no mask token id: pass mask_token_id=... (model.config and tokenizer have none)")


def _transfer_schedule(n_masked: int, steps: int) -> list[int]:
    """How many positions to unmask at each step (LLaDA's even split, remainder first)."""
    steps = max(1, min(steps, n_masked)) if n_masked else 1
    base, extra = divmod(n_masked, steps)
    return [base + (1 if s < extra else 0) for s in range(steps)]


@torch.no_grad()
def generate(
    model,
    tokenizer,
    prompt: str,
    grammar=None,
    *,
    length: int = 64,
    steps: int | None = None,
    block_length: int | None = None,
    temperature: float = 0.0,
    max_candidates: int = 8,
    seed: int | None = None,
    mask_token_id: int | None = None,
    eos_token_id: int | None = None,
    shift_logits: bool = False,
    checker: InfillingChecker | None = None,
    return_details: bool = False,
):
    """Fill ``length`` masked positions after ``prompt``; with ``grammar``, the output is a word of it.

    ``steps``: model calls (default ``length``: one position per step); ``block_length``:
    unmask block by block, left to right (default: the whole canvas is one block);
    ``temperature``: 0 = greedy, otherwise Gumbel-perturbed sampling; ``max_candidates``: tokens
    tried per position before falling back to the checker's witness (every check is decided).
    Returns the text (``return_details``: a :class:`DiffusionOutput`).
    """
    t_start = time.perf_counter()
    mask_id = _mask_id(model, tokenizer, mask_token_id)
    if checker is None and grammar is not None:
        checker = InfillingChecker(grammar, tokenizer)
    from guided.vocab import Vocabulary

    vocab = checker.vocab if checker is not None else Vocabulary.from_tokenizer(tokenizer)
    eos = int(eos_token_id if eos_token_id is not None else (tokenizer.eos_token_id if tokenizer.eos_token_id is not None else min(vocab.eos_ids)))
    eos_set = set(vocab.eos_ids) | {eos}
    device = next(model.parameters()).device
    gen = torch.Generator(device="cpu")
    if seed is not None:
        gen.manual_seed(seed)
    prompt_ids = tokenizer(prompt).input_ids if prompt is not None else []
    n_prompt = len(prompt_ids)
    canvas = [mask_id] * length
    # never proposed: the mask itself and special tokens other than EOS
    banned = torch.zeros(max(model.config.vocab_size, vocab.size), dtype=torch.bool)
    banned[sorted(i for i in vocab.special_ids if i not in eos_set and i < len(banned))] = True
    banned[mask_id] = True
    banned[vocab.size :] = True
    block = block_length or length
    n_blocks = (length + block - 1) // block
    total_steps = steps or length
    per_block = max(1, total_steps // n_blocks)
    out = DiffusionOutput(text="", token_ids=[], canvas=[])
    checks_before = Counter(checker.stats) if checker is not None else Counter()
    check_time = 0.0
    if checker is not None:
        t1 = time.perf_counter()
        first = checker.result(canvas_parts(canvas, mask_id, eos_set))
        check_time += time.perf_counter() - t1
        if not first.ok:
            raise ValueError(f"no word of the grammar fits in {length} tokens (checker: {first.how})")
    for b in range(n_blocks):
        lo, hi = b * block, min(length, (b + 1) * block)
        n_masked = sum(1 for i in range(lo, hi) if canvas[i] == mask_id)
        for k in _transfer_schedule(n_masked, per_block):
            masked = [i for i in range(lo, hi) if canvas[i] == mask_id]
            if not masked:
                break
            t0 = time.perf_counter()
            x = torch.tensor([prompt_ids + canvas], device=device)
            logits = model(input_ids=x).logits[0]
            if shift_logits:
                logits = torch.cat([logits[:1], logits[:-1]], dim=0)
            logits = logits[n_prompt:].float().cpu()
            out.forward_seconds += time.perf_counter() - t0
            out.steps += 1
            logits[:, banned[: logits.shape[1]]] = -float("inf")
            if temperature > 0:
                u = torch.rand(logits.shape, generator=gen).clamp_(1e-10, 1.0)
                scores = logits / temperature - torch.log(-torch.log(u))
            else:
                scores = logits
            probs = torch.softmax(logits, dim=-1)
            top = scores.argmax(dim=-1)
            conf = probs.gather(1, top[:, None]).squeeze(1)
            order = sorted(masked, key=lambda i: -float(conf[i]))[:k]
            for i in order:
                if canvas[i] != mask_id:
                    continue  # became EOS padding earlier in this step
                cand = torch.topk(scores[i], max_candidates).indices.tolist()
                chosen = None
                if checker is None:
                    chosen = cand[0]
                else:
                    t1 = time.perf_counter()
                    for tok in cand:
                        if scores[i, tok] == -float("inf"):
                            break
                        if tok in eos_set and any(t != mask_id and t not in eos_set for t in canvas[i + 1 :]):
                            continue  # EOS would cut off known tokens
                        trial = canvas[:i] + [tok] + canvas[i + 1 :]
                        r = checker.result(canvas_parts(trial, mask_id, eos_set))
                        out.checks += 1
                        if r.ok:
                            chosen = tok
                            break
                    if chosen is None:
                        chosen = _from_witness(checker, canvas, i, mask_id, eos_set, eos)
                        out.fallbacks += 1
                    check_time += time.perf_counter() - t1
                canvas[i] = chosen
                if chosen in eos_set:
                    for j in range(i + 1, length):
                        canvas[j] = eos
    out.check_seconds = check_time
    end = next((i for i, t in enumerate(canvas) if t in eos_set), length)
    out.token_ids = canvas[:end]
    out.canvas = list(canvas)
    out.text = tokenizer.decode(out.token_ids)
    out.total_seconds = time.perf_counter() - t_start
    if checker is not None:
        out.decided_by = Counter(checker.stats) - checks_before
    return out if return_details else out.text


def _from_witness(checker: InfillingChecker, canvas: list, i: int, mask_id: int, eos_set, eos: int) -> int:
    """The token the checker's proved completion of the current canvas has at position ``i``."""
    parts = canvas_parts(canvas, mask_id, eos_set)
    r = checker.result(parts)
    if not r.ok:  # cannot happen: every accepted canvas was proved completable
        raise RuntimeError("the current canvas has no completion; the checker is inconsistent")
    t = r.filling.get(i)
    return eos if t is None else int(t)
