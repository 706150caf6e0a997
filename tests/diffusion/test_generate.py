"""End to end: constrained masked-diffusion generation always yields a word of the grammar.

The model is a tiny randomly initialised bidirectional transformer (``ModernBertForMaskedLM``,
the architecture of guided's own diffusion model) over the real Llama-3 tokenizer: its tokens
are noise, so unconstrained outputs essentially never parse, and every constrained output must.
When the shipped diffusion model is present it is exercised too.
"""

from __future__ import annotations

import json

import pytest
import torch

from guided.diffusion import Hole, InfillingChecker, canvas_parts, generate
from guided.grammars import Grammar, load_grammar
from guided.json_schema import JSONSchema

MASK_ID = 128002  # <|reserved_special_token_0|>, as in guided's diffusion model
EOS_ID = 128001

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 10},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 2},
    },
    "required": ["name", "age"],
    "additionalProperties": False,
}


def tiny_model(seed: int = 0, layers: int = 2):
    from transformers import AutoModelForMaskedLM, ModernBertConfig

    torch.manual_seed(seed)
    config = ModernBertConfig(
        vocab_size=128256,
        hidden_size=32,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=256,
        pad_token_id=EOS_ID,
        bos_token_id=128000,
        eos_token_id=EOS_ID,
        cls_token_id=128000,
        sep_token_id=EOS_ID,
        layer_types=["full_attention"] * layers,
    )
    config.mask_token_id = MASK_ID
    return AutoModelForMaskedLM.from_config(config).eval()


@pytest.fixture(scope="module")
def model():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield tiny_model()
    torch.set_num_threads(threads)


def parses(grammar, vocab, text: str) -> bool:
    state = grammar.start(vocab).advance_bytes(text.encode("utf-8"))
    return state is not None and state.is_accepting()


def test_canvas_parts():
    M, E = MASK_ID, EOS_ID
    assert canvas_parts([5, M, M, 6, M, M], M, {E}) == [[5], Hole(2), [6], Hole.up_to(2)]
    assert canvas_parts([M, 5, E, M, 7], M, {E}) == [Hole(1), [5]]  # the output ends at the first EOS
    assert canvas_parts([M, M, E, E], M, {E}) == [Hole.up_to(2)]  # masks before EOS may become EOS
    assert canvas_parts([E], M, {E}) == []


def test_json_schema_outputs_always_parse(model, llama3_tokenizer, llama3_vocab):
    import jsonschema

    constraint = JSONSchema(SCHEMA)
    checker = InfillingChecker(constraint, llama3_tokenizer)
    for seed in range(3):
        out = generate(
            model, llama3_tokenizer, "JSON:", constraint, length=28, steps=28, temperature=1.0,
            seed=seed, checker=checker, return_details=True,
        )
        value = json.loads(out.text)
        jsonschema.validate(value, SCHEMA)
        assert parses(constraint.grammar, llama3_vocab, out.text)
        assert out.checks > 0 and out.forward_seconds > 0


def test_arithmetic_outputs_always_parse(model, llama3_tokenizer, llama3_vocab):
    import lark

    grammar = load_grammar("arithmetic")
    reference = lark.Lark(grammar.text, start="start", parser="earley")
    checker = InfillingChecker(grammar, llama3_tokenizer)
    for seed in range(3):
        text = generate(model, llama3_tokenizer, "x =", grammar, length=20, steps=10, temperature=1.0, seed=seed, checker=checker)
        assert parses(grammar, llama3_vocab, text), text
        reference.parse(text)


def test_unconstrained_outputs_rarely_parse(model, llama3_tokenizer, llama3_vocab):
    grammar = load_grammar("json")
    checker = InfillingChecker(grammar, llama3_tokenizer)
    constrained = unconstrained = 0
    for seed in range(3):
        text = generate(model, llama3_tokenizer, "JSON:", None, length=16, steps=16, temperature=1.0, seed=seed)
        unconstrained += parses(grammar, llama3_vocab, text)
        text = generate(model, llama3_tokenizer, "JSON:", grammar, length=16, steps=16, temperature=1.0, seed=seed, checker=checker)
        constrained += parses(grammar, llama3_vocab, text)
    assert constrained == 3
    assert unconstrained < constrained


def test_greedy_block_decoding_and_eos(model, llama3_tokenizer, llama3_vocab):
    grammar = Grammar('start: "[" [NUM ("," NUM)*] "]"\nNUM: /[0-9]+/\n%ignore " "')
    out = generate(
        model, llama3_tokenizer, "list:", grammar, length=24, steps=12, block_length=8, return_details=True,
    )
    assert parses(grammar, llama3_vocab, out.text), out.text
    assert len(out.canvas) == 24 and out.steps <= 12
    # everything after the first EOS is EOS padding
    ends = [i for i, t in enumerate(out.canvas) if t in llama3_vocab.eos_ids]
    if ends:
        assert all(t in llama3_vocab.eos_ids for t in out.canvas[ends[0] :])


def test_too_short_canvas_is_an_error(model, llama3_tokenizer):
    grammar = Grammar('start: N N N N N N N N N N\nN: /[0-9]/\n%ignore " "')
    with pytest.raises(ValueError, match="fits"):
        generate(model, llama3_tokenizer, "", grammar, length=2, steps=2)


def test_shipped_diffusion_model():
    from guided.models import ModelFilesMissing, load_diffusion_model

    try:
        model, tokenizer = load_diffusion_model()
    except (ModelFilesMissing, ImportError, AttributeError) as exc:
        pytest.skip(f"no shipped diffusion model: {exc}")
    from guided.vocab import Vocabulary

    vocab = Vocabulary.from_tokenizer(tokenizer)
    grammar = load_grammar("json")
    for seed in range(2):
        text = generate(model, tokenizer, "", grammar, length=32, steps=32, temperature=0.8, seed=seed)
        json.loads(text)
        assert parses(grammar, vocab, text)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_generate_on_gpu(llama3_tokenizer, llama3_vocab):
    model = tiny_model().to("cuda")
    grammar = load_grammar("json")
    text = generate(model, llama3_tokenizer, "JSON:", grammar, length=24, steps=24, temperature=1.0, seed=0)
    json.loads(text)
