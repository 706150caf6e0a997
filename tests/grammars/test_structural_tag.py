"""``StructuralTag`` (free text with tagged constrained regions) and ``%json`` in Lark grammars:
the language is checked against a reference reader, and masks against single-token advances
(exact at the token level) with the real Llama-3 vocabulary."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import guided.json_schema  # noqa: F401 - registers %json
from guided.grammars import Grammar, GrammarError, Regex, StructuralTag, Tag
from guided.json_schema import JSONSchema

CITY = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 8}}, "required": ["city"],
        "additionalProperties": False}
COUNT = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"], "additionalProperties": False}
TRIGGER = "<tool_call>"
TAGS = {
    "weather": (CITY, '<tool_call>{"name": "weather", "arguments": ', "}</tool_call>"),
    "count": (COUNT, '<tool_call>{"name": "count", "arguments": ', "}</tool_call>"),
}


@pytest.fixture(scope="module")
def tool_tags():
    return StructuralTag([Tag(begin, JSONSchema(schema, whitespace="compact"), end) for schema, begin, end in TAGS.values()],
                         triggers=[TRIGGER])


def accepts(constraint, vocab, text: str) -> bool:
    state = constraint.start(vocab).advance_bytes(text.encode("utf-8"))
    return state is not None and state.is_accepting()


def reference(text: str) -> bool:
    """The language written directly: text without the trigger, tags, compact JSON regions."""
    import jsonschema

    pos = 0
    while True:
        at = text.find(TRIGGER, pos)
        if at < 0:
            return True
        for schema, begin, end in TAGS.values():
            if text.startswith(begin, at):
                try:
                    value, stop = json.JSONDecoder().raw_decode(text, at + len(begin))
                except json.JSONDecodeError:
                    return False
                spelled = text[at + len(begin):stop]
                if spelled != json.dumps(value, separators=(",", ":"), ensure_ascii=False):
                    return False
                try:
                    jsonschema.validate(value, schema)
                except jsonschema.ValidationError:
                    return False
                if not text.startswith(end, stop):
                    return False
                pos = stop + len(end)
                break
        else:
            return False


_PIECES = st.sampled_from([
    "hi ", "<tool", "_call>", TRIGGER, '{"name": "weather", "arguments": ', '{"name": "count", "arguments": ',
    '{"city":"Paris"}', '{"city":"<tool_call>"}', '{"n":3}', '{"n":"3"}', '{"n": 3}', "}</tool_call>", "}", "</tool_call>",
    "\n", "é",
])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(_PIECES, max_size=8))
def test_structural_tag_language_is_the_reference(vocab, tool_tags, pieces):
    text = "".join(pieces)
    assert accepts(tool_tags, vocab, text) == reference(text), text


def test_well_formed_calls_and_their_neighbours(vocab, tool_tags):
    call = '<tool_call>{"name": "weather", "arguments": {"city":"Oslo"}}</tool_call>'
    assert accepts(tool_tags, vocab, "Let me check. " + call + " Done.")
    assert accepts(tool_tags, vocab, call + call)
    assert accepts(tool_tags, vocab, "") and accepts(tool_tags, vocab, "just text <tool")
    assert not accepts(tool_tags, vocab, "a <tool_call> not a call")
    assert not accepts(tool_tags, vocab, call.replace("Oslo", "Oslo-Gardermoen"))  # maxLength 8


def test_tags_only_with_counts(vocab):
    tags = [Tag(begin, JSONSchema(schema, whitespace="compact"), end) for schema, begin, end in TAGS.values()]
    one = '<tool_call>{"name": "count", "arguments": {"n":1}}</tool_call>'
    exactly_one = StructuralTag(tags, text=False, min_tags=1, max_tags=1)
    assert accepts(exactly_one, vocab, one) and not accepts(exactly_one, vocab, one + one)
    assert not accepts(exactly_one, vocab, "") and not accepts(exactly_one, vocab, "x" + one)
    some = StructuralTag(tags, text=False, min_tags=1)
    assert accepts(some, vocab, one + one + one) and not accepts(some, vocab, "")
    state = some.start(vocab)
    assert not state.is_accepting() and not state.allowed_mask()[sorted(vocab.eos_ids)].any()


def _mask_matches_advances(state, vocab, sample: np.ndarray) -> None:
    mask = state.allowed_mask()
    for token in sample:
        assert bool(mask[token]) == (state.advance(int(token)) is not None), (token, vocab.token_bytes[token])


def test_masks_are_exact_at_the_token_level(vocab, tool_tags):
    rng = np.random.default_rng(0)
    start = tool_tags.start(vocab)
    # tokens that touch the trigger or the region's edges, plus a random sample
    near = [i for i, b in enumerate(vocab.token_bytes) if b and any(x in b for x in (b"<", b">", b"{", b"}", b"_call"))]
    for prefix in (b"", b"Hello <", b"Hello <tool_c", b'ok <tool_call>{"name": "count", "arguments": {"n":12',
                   b'ok <tool_call>{"name": "count", "arguments": {"n":12}', b'ok <tool_call>{"name": "count", "arguments": {"n":1}}</tool_call>'):
        state = start.advance_bytes(prefix)
        assert state is not None, prefix
        sample = np.concatenate([rng.choice(near, 400, replace=False), rng.choice(vocab.size, 400, replace=False)])
        _mask_matches_advances(state, vocab, sample)


def test_a_token_may_finish_the_text_and_open_the_tag(vocab, llama3, tool_tags):
    """Tokenizer-chosen splits that cross region boundaries are accepted token by token."""
    text = 'Sure!<tool_call>{"name": "count", "arguments": {"n":42}}</tool_call>'
    state = tool_tags.start(vocab)
    for token in llama3.encode(text, add_special_tokens=False):
        state = state.advance(token)
        assert state is not None
    assert state.is_accepting()


def test_regions_may_be_grammars_and_regexes(vocab):
    c = StructuralTag([Tag("<n>", Regex("[0-9]{1,3}"), "</n>"), Tag("<sum>", Grammar('start: "1" ("+" "1")*'), "</sum>")],
                      triggers=["<"])
    assert accepts(c, vocab, "a<n>12</n>b<sum>1+1</sum>")
    assert not accepts(c, vocab, "a < b")  # the trigger "<" always opens a tag
    assert not accepts(c, vocab, "<n>1234</n>")


def test_bad_structural_tags_are_grammar_errors():
    with pytest.raises(GrammarError, match="starts with none of the triggers"):
        StructuralTag([Tag("<a>", Regex("x"), "</a>")], triggers=["<b"])
    with pytest.raises(GrammarError, match="empty"):
        StructuralTag([Tag("<a>", Regex("x*"), "</a>")])
    with pytest.raises(GrammarError):
        StructuralTag([])
    with pytest.raises(GrammarError, match="cannot embed"):
        StructuralTag([Tag("<a>", object(), "</a>")])


def test_lark_grammar_embeds_a_json_schema(vocab):
    g = Grammar('start: "Result: " %json {"type": "object", "properties": {"ok": {"type": "boolean"}}, '
                '"required": ["ok"], "additionalProperties": false} (";" %json {"type": "integer"})*')
    assert accepts(g, vocab, 'Result: {"ok": true}') and accepts(g, vocab, 'Result: {"ok":false};12;3')
    assert not accepts(g, vocab, 'Result: {"ok": 1}') and not accepts(g, vocab, 'Result: {"ok": true};1.5')
    state = g.start(vocab).advance_bytes(b'Result: {"ok": true}')
    _mask_matches_advances(state, vocab, np.arange(0, vocab.size, 97))


def test_bad_embedded_schemas_are_located():
    with pytest.raises(GrammarError) as info:
        Grammar('start: "a"\n  | %json {"type": "nonsense"}')
    assert info.value.line == 2 and "invalid JSON Schema" in str(info.value)
    with pytest.raises(GrammarError, match="JSON value") as info:
        Grammar('start: "a" %json {"type": ')
    assert info.value.line == 1


def test_generate_takes_a_structural_tag(llama3, vocab):
    """Any user passes it to ``guided.generate``; every sample is in the language."""
    import sys
    from pathlib import Path

    import guided

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "samplers"))
    from sampler_toys import tiny_llama

    tags = StructuralTag([Tag(begin, JSONSchema(schema, whitespace="compact"), end) for schema, begin, end in TAGS.values()],
                         triggers=[TRIGGER], text=False, min_tags=1, max_tags=1)
    model = tiny_llama(len(llama3), seed=0)
    outs = guided.generate(model, llama3, ["call: "] * 2, tags, max_new_tokens=60, seed=3, temperature=0.5)
    for text in outs:
        state = tags.start(vocab).advance_bytes(text.encode())
        assert state is not None  # a prefix of the language (a random tiny model may not finish)
        assert text.startswith('<tool_call>{"name": "')
