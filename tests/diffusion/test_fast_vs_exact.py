"""The checker's cheap steps and its exact chart give the same answers on every shipped grammar.

Canvases are real documents of each grammar in Llama-3 tokens with random positions masked
and random positions overwritten by other tokens of the document (the candidates a diffusion
sampler tries), checked the way the sampler checks them: one persistent checker (reuse, repair,
relaxed refutation, exact fallback) against a fresh exact-only chart.  No call may end
undecided; every yes carries a witness that parses.
"""

from __future__ import annotations

import functools
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from guided.diffusion import InfillingChecker, canvas_parts, parse_bytes
from guided.grammars import load_grammar
from guided.grammars.lark_loader import GrammarError

MASK = -1

DOCUMENTS = {
    "json": '{"a": [1, true]}',
    "arithmetic": "(1 + x) * 2",
    "sql": "SELECT a FROM t;",
    "schema": '{"name": "A", "age": 3}',
}

SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string", "maxLength": 12}, "age": {"type": "integer", "minimum": 0}},
    "required": ["name", "age"],
}


@functools.lru_cache(maxsize=None)
def grammar_of(name: str):
    if name == "schema":
        from guided.json_schema import JSONSchema

        return JSONSchema(SCHEMA).grammar
    return load_grammar(name)


@functools.lru_cache(maxsize=None)
def checker_of(name: str, tokenizer) -> InfillingChecker:
    return InfillingChecker(grammar_of(name), tokenizer)


def random_canvas(rng: random.Random, ids: list[int], eos: int, extra: int) -> list[int]:
    """The document plus ``extra`` EOS positions, some masked, some overwritten."""
    canvas = ids + [eos] * extra
    n = len(canvas)
    for i in rng.sample(range(n), rng.randint(1, min(n, 6))):
        canvas[i] = MASK
    for i in rng.sample(range(n), rng.randint(0, 2)):
        canvas[i] = rng.choice(ids)
    return canvas


@pytest.mark.parametrize("name", sorted(DOCUMENTS))
@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1))
def test_fast_path_agrees_with_exact_chart(name, seed, llama3_tokenizer):
    tok = llama3_tokenizer
    checker = checker_of(name, tok)
    vocab = checker.vocab
    ids = tok.encode(DOCUMENTS[name], add_special_tokens=False)
    assert parse_bytes(checker.lexer, vocab.decode(ids))
    rng = random.Random(seed)
    eos = min(vocab.eos_ids)
    for _ in range(2):  # a few canvases per example, through the same (incremental) checker
        parts = canvas_parts(random_canvas(rng, ids, eos, rng.randint(0, 2)), MASK, vocab.eos_ids)
        fast = checker.result(parts)
        exact = InfillingChecker(grammar_of(name), vocab).result(parts, exact_only=True)
        assert fast.ok in (True, False) and exact.ok in (True, False)
        assert fast.ok == exact.ok, (name, parts, fast.how)
        for r in (fast, exact):
            if r.ok:
                assert parse_bytes(checker.lexer, r.text(vocab)), (name, parts, r.how)


def test_python_grammar_is_refused_with_a_typed_error(llama3_tokenizer):
    """The shipped Python grammar needs its indenter (a post-lexer with a stack): not supported."""
    with pytest.raises(GrammarError, match="indentation"):
        InfillingChecker(load_grammar("python"), llama3_tokenizer)
