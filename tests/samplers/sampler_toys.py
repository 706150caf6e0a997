"""Test models for the samplers: a fixed next-token table, and a tiny random Llama.

``TableModel`` is a language model given by a table ``prefix -> {token: probability}`` over
the real Llama-3 ids (everything else has probability 0). Its exact distribution over whole
strings can be enumerated, which the statistical tests need. It plugs into ``generate`` and
``smc`` through ``start_batch`` (see ``guided.samplers.lm``).
"""

from __future__ import annotations

import math
from typing import Callable, Mapping, Sequence

import numpy as np
import torch

from guided.constraint import ConstraintState
from guided.samplers.lm import LMBatch

Table = Callable[[tuple[int, ...]], Mapping[int, float]]


class TableModel:
    """``table(generated_ids) -> {token_id: probability}``; logits have ``width`` columns."""

    def __init__(self, table: Table, width: int):
        self.table = table
        self.width = width
        self.forward_calls = 0

    def logits_for(self, prefixes: Sequence[tuple[int, ...]]) -> torch.Tensor:
        out = torch.full((len(prefixes), self.width), float("-inf"))
        for i, prefix in enumerate(prefixes):
            for token, prob in self.table(prefix).items():
                if prob > 0:
                    out[i, token] = math.log(prob)
        return out

    def start_batch(self, prompt_ids, pad_id) -> "TableBatch":
        return TableBatch(self, len(prompt_ids))

    def sequence_probability(self, ids: Sequence[int]) -> float:
        p = 1.0
        for t in range(len(ids)):
            p *= self.table(tuple(ids[:t])).get(ids[t], 0.0)
        return p


class TableBatch(LMBatch):
    def __init__(self, model: TableModel, rows: int):
        self.model = model
        self.prefixes: list[tuple[int, ...]] = [()] * rows
        self.logits = model.logits_for(self.prefixes)

    def append(self, tokens):
        self.model.forward_calls += 1
        self.prefixes = [p + (int(t),) for p, t in zip(self.prefixes, tokens)]
        self.logits = self.model.logits_for(self.prefixes)
        return self.logits

    def select(self, index):
        index = list(index)
        self.prefixes = [self.prefixes[i] for i in index]
        self.logits = self.logits[torch.as_tensor(index)]


def tiny_llama(vocab_size: int, seed: int = 0, hidden: int = 32, layers: int = 2):
    """A small random-weight ``LlamaForCausalLM`` (seeded) for the real tokenizer's ids."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    model.eval()
    return model


def total_variation(p: Mapping, q: Mapping) -> float:
    keys = set(p) | set(q)
    return 0.5 * sum(abs(p.get(k, 0.0) - q.get(k, 0.0)) for k in keys)


def ids_of(vocab, *pieces: bytes) -> list[int]:
    return [vocab.bytes_to_id[p] for p in pieces]


def empirical(values) -> dict:
    out: dict = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    n = sum(out.values())
    return {k: c / n for k, c in out.items()}


def standard_error(x: np.ndarray) -> float:
    return float(np.std(x, ddof=1) / math.sqrt(len(x)))


class MaskHeld(ConstraintState):
    """A state whose ``cached_mask`` is fixed by the test: the mask (``held=True``) or ``None``.

    Real states answer ``cached_mask`` from caches that earlier tests may have filled; this
    makes each sampler path (lookups vs real checks) explicit and independent of test order.
    """

    def __init__(self, inner: ConstraintState, held: bool):
        self.inner = inner
        self.vocab = inner.vocab
        self.held = held

    def advance_bytes(self, data: bytes):
        return self.inner.advance_bytes(data)

    def advance(self, token_id: int):
        return self.inner.advance(token_id)

    def allows(self, token_id: int) -> bool:
        return self.inner.allows(token_id)

    def is_accepting(self) -> bool:
        return self.inner.is_accepting()

    def allowed_mask(self) -> np.ndarray:
        return self.inner.allowed_mask()

    def cached_mask(self):
        return self.inner.allowed_mask() if self.held else None
