"""Greedy decoding with drafting is token for token constrained greedy decoding without it.

Across constraints (regex, Lark grammar, JSON Schema), drafters (draft model adaptive and
fixed-k, prompt lookup, Token Recycling trees and chains, grammar-forced text alone, with and
without jump-forward), samplers and a batch of prompts of different lengths.
"""

import pytest

from guided.generation import generate
from guided.grammars import Grammar, Regex
from guided.json_schema import JSONSchema
from guided.samplers import Masking
from guided.speculative import ModelDrafter, PromptLookupDrafter, TokenRecyclingDrafter, generate_speculative

PROMPTS = ['{"id": 12, "name": "ab", "tags": ["x", "y"]}\n{"id": 7, "name": "', "x"]
SCHEMA = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "name": {"type": "string", "maxLength": 12},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 4}, "maxItems": 3},
    },
    "required": ["id", "name", "tags"],
    "additionalProperties": False,
}
ARITHMETIC = r"""
start: expr
expr: term (("+" | "-") term)*
term: atom (("*" | "/") atom)*
atom: NUMBER | NAME | "(" expr ")"
NUMBER: /[0-9]{1,3}/
NAME: /[a-z]{1,6}/
"""

CONSTRAINTS = {
    "regex": lambda: Regex(r'\{"id": [0-9]{1,3}, "name": "[a-z]{1,8}", "tags": \["[a-z]{1,3}"(, "[a-z]{1,3}")?\]\}'),
    "grammar": lambda: Grammar(ARITHMETIC),
    "json-schema": lambda: JSONSchema(SCHEMA, whitespace="compact"),
}


def _drafters(draft_model):
    return {
        "model-adaptive": lambda: ModelDrafter(draft_model, num_tokens=5),
        "model-fixed-k": lambda: ModelDrafter(draft_model, num_tokens=3, adaptive=False),
        "prompt-lookup": lambda: PromptLookupDrafter(num_tokens=6),
        "recycling-tree": lambda: TokenRecyclingDrafter(max_nodes=10),
        "recycling-chain": lambda: TokenRecyclingDrafter(tree=False, max_depth=4),
        "forced": lambda: "forced",
    }


@pytest.fixture(scope="module")
def references(target, tok):
    out = {}
    for name, make in CONSTRAINTS.items():
        out[name] = generate(target, tok, PROMPTS, make(), temperature=0, max_new_tokens=24, return_details=True)
    return out


@pytest.mark.parametrize("constraint", sorted(CONSTRAINTS))
@pytest.mark.parametrize(
    "drafter", ["model-adaptive", "model-fixed-k", "prompt-lookup", "recycling-tree", "recycling-chain", "forced"]
)
def test_greedy_output_is_unchanged(constraint, drafter, target, draft_model, tok, references):
    draft = _drafters(draft_model)[drafter]()
    out = generate_speculative(
        target, tok, PROMPTS, CONSTRAINTS[constraint](), draft=draft, temperature=0, max_new_tokens=24, return_details=True
    )
    ref = references[constraint]
    assert out.token_ids == ref.token_ids
    assert out.texts == ref.texts and out.finished == ref.finished
    assert out.draft_stats.emitted == sum(len(t) for t in ref.token_ids)
    assert out.draft_stats.target_passes <= max(len(t) for t in ref.token_ids)


def test_without_jump_forward_and_with_masking(target, draft_model, tok, references):
    out = generate_speculative(
        target, tok, PROMPTS, CONSTRAINTS["json-schema"](), draft=ModelDrafter(draft_model), sampler=Masking(),
        jump_forward=False, temperature=0, max_new_tokens=24, return_details=True,
    )
    assert out.token_ids == references["json-schema"].token_ids


def test_drafting_saves_target_passes(target, tok, references):
    """Grammar-forced text alone already needs fewer target passes on a JSON schema."""
    out = generate_speculative(
        target, tok, PROMPTS, CONSTRAINTS["json-schema"](), draft="forced", temperature=0, max_new_tokens=24,
        return_details=True,
    )
    assert out.token_ids == references["json-schema"].token_ids
    assert out.draft_stats.accepted > 0
    assert out.draft_stats.target_passes < max(len(t) for t in out.token_ids)


def test_single_prompt_and_return_forms(target, tok):
    c = Regex(r"[0-9]{2,4}")
    text = generate_speculative(target, tok, "n = ", c, draft="prompt_lookup", temperature=0, max_new_tokens=6)
    assert text == generate(target, tok, "n = ", c, temperature=0, max_new_tokens=6)
    text2, log_w = generate_speculative(
        target, tok, "n = ", c, draft="recycling", temperature=0, max_new_tokens=6, return_weights=True
    )
    assert text2 == text and log_w == 0.0
