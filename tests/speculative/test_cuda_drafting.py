"""Drafting on CUDA in float32, bfloat16 and float16 (skipped without a GPU).

float32: greedy output identical to decoding without drafting, and the sampling law (with the
unconstrained first draw, on by default on CUDA) checked by chi-square. Half precision:
every output satisfies the constraint and every drafter runs, greedy and sampling. Token
identity with half-precision decoding without drafting is not promised: a position scored
alone and inside a multi-token pass rounds differently in 16-bit arithmetic, which can flip
a near-tie (the same holds for every speculative decoder).
"""

import pytest
import torch

from guided.generation import generate
from guided.grammars import Regex
from guided.json_schema import JSONSchema
from guided.samplers import Masking
from guided.samplers.base import Sampling
from guided.speculative import ModelDrafter, TokenRecyclingDrafter, generate_speculative
from spec_helpers import ScriptedDrafter, chi_square_pvalue, exact_sequences, make_llama

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

SCHEMA = {
    "type": "object",
    "properties": {"id": {"type": "integer", "minimum": 0, "maximum": 999}, "name": {"type": "string", "maxLength": 8}},
    "required": ["id", "name"],
    "additionalProperties": False,
}
PROMPTS = ['{"id": 12, "name": "ab"}\n{"id": 7, "name": "', "x"]


def _valid(constraint, vocab, ids):
    state = constraint.start(vocab)
    for t in ids:
        state = state.advance(t)
        if state is None:
            return False
    return True


@pytest.fixture(scope="module")
def cuda_models():
    return {
        dtype: (make_llama(64, 2, 0, dtype=dtype, device="cuda"), make_llama(32, 1, 1, dtype=dtype, device="cuda"))
        for dtype in (torch.float32, torch.bfloat16, torch.float16)
    }


def test_float32_greedy_identity(cuda_models, tok):
    target, draft = cuda_models[torch.float32]
    c = JSONSchema(SCHEMA, whitespace="compact")
    ref = generate(target, tok, PROMPTS, c, temperature=0, max_new_tokens=24, return_details=True)
    for d in (ModelDrafter(draft, 4), "prompt_lookup", TokenRecyclingDrafter(max_nodes=24), "forced"):
        out = generate_speculative(target, tok, PROMPTS, c, draft=d, temperature=0, max_new_tokens=24, return_details=True)
        assert out.token_ids == ref.token_ids, d


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_half_precision_runs_and_respects_the_constraint(dtype, cuda_models, tok, vocab):
    target, draft = cuda_models[dtype]
    c = JSONSchema(SCHEMA, whitespace="compact")
    for d in (ModelDrafter(draft, 4), "prompt_lookup", TokenRecyclingDrafter(max_nodes=24), "forced"):
        for temperature in (0.0, 1.0):
            out = generate_speculative(
                target, tok, PROMPTS, c, draft=d, temperature=temperature, seed=0, max_new_tokens=24, return_details=True
            )
            assert all(_valid(c, vocab, ids) for ids in out.token_ids)
            assert out.draft_stats.emitted == sum(len(t) for t in out.token_ids)


def test_float32_sampling_law_with_first_draw(cuda_models, tok, vocab):
    target, _ = cuda_models[torch.float32]
    c = Regex(r"[ab]{1,2}")
    prompt = "ab ba ab"
    exact = exact_sequences(target, tok(prompt)["input_ids"], c, vocab, Sampling())
    counts: dict = {}
    tree = [(-1, 64), (-1, 65), (-1, 370), (0, 64), (0, 65), (1, 64)]
    for seed in range(3):
        out = generate_speculative(
            target, tok, [prompt] * 100, c, draft=ScriptedDrafter(tree), sampler=Masking(), seed=seed,
            max_new_tokens=8, return_details=True,
        )
        for ids in out.token_ids:
            counts[tuple(ids)] = counts.get(tuple(ids), 0) + 1
    assert chi_square_pvalue(counts, {k: v[0] for k, v in exact.items()}, sum(counts.values())) > 1e-3
