"""``uniqueItems: true`` over items from a finite set (enum, const, boolean, null), over
strings and over integers: exact.

Acceptance is compared with the ``jsonschema`` validator on generated arrays (duplicates
included), and masks token by token (Llama-3) with the same grammar where every sequence
of distinct items is written out.
"""

from __future__ import annotations

import itertools
import json

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from guided.grammars.grammar import Grammar
from guided.json_schema import JSONSchema, UnsatisfiableSchemaError, UnsupportedSchemaError
from guided.json_schema.families import COMMA, UniqueValues
from guided.json_schema.grammar import family_symbol

VALUES = ["x", "y", 1, 2.5, True, None, {"k": [1]}, [0, "z"]]
SCHEMAS = [
    {"type": "array", "items": {"enum": VALUES}, "uniqueItems": True},
    {"type": "array", "items": {"type": "boolean"}, "uniqueItems": True, "minItems": 1},
    {"type": "array", "items": {"enum": ["a", "b", "c", 1, 1.0]}, "uniqueItems": True, "maxItems": 2},
    {"type": "object", "properties": {"tags": {"type": "array", "uniqueItems": True,
                                               "items": {"anyOf": [{"const": "red"}, {"enum": ["red", "blue"]},
                                                                   {"type": "null"}]}}}},
]


def accepts(constraint, vocab, text: str) -> bool:
    state = constraint.start(vocab).advance_bytes(text.encode("utf-8"))
    return state is not None and state.is_accepting()


@pytest.fixture(scope="module")
def compiled():
    return [JSONSchema(s) for s in SCHEMAS]


arrays = st.lists(st.sampled_from(VALUES + ["a", "b", "c", 1.0, False, "red", "blue", 3]), max_size=6)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(items=arrays, dup=st.booleans(), data=st.data())
def test_acceptance_equals_validation_duplicates_never_accepted(vocab, compiled, items, dup, data):
    if dup and items:
        items = items + [data.draw(st.sampled_from(items))]
        items = data.draw(st.permutations(items))
    for schema, c in zip(SCHEMAS, compiled):
        value = {"tags": items} if schema["type"] == "object" else items
        valid = jsonschema.Draft202012Validator(schema).is_valid(value)
        text = json.dumps(value)
        assert accepts(c, vocab, text) == valid, (schema, text)
        if dup and items:
            assert not valid and not accepts(c, vocab, text)


def test_equal_numbers_are_one_value(vocab):
    c = JSONSchema(SCHEMAS[0])
    assert accepts(c, vocab, "[1, 2.5]") and accepts(c, vocab, "[1.0, 2.50]")
    assert not accepts(c, vocab, "[1, 1.0]") and not accepts(c, vocab, "[2.5, 2.500]")
    assert not accepts(c, vocab, '[{"k": [1]}, {"k": [1.0]}]')


def _written_out(c: JSONSchema) -> str:
    g = c._schema_grammar
    def symbol(sym: str) -> str:  # punctuation as the families write it
        return family_symbol(sym, g.whitespace)

    lines = [ln for ln in g.text.splitlines() if not ln.startswith("fam_") and not ln.startswith("//")]
    for i, fam in enumerate(g.families):
        assert isinstance(fam, UniqueValues)
        alts = []
        top = len(fam.values) if fam.max_items is None else fam.max_items
        for n in range(fam.min_items, top + 1):
            for order in itertools.permutations(range(len(fam.values)), n):
                for spellings in itertools.product(*(fam.values[j] for j in order)):
                    alts.append(f" {symbol(COMMA)} ".join(" ".join(map(symbol, sp)) for sp in spellings))
        body = " | ".join(f"({a})" for a in alts if a)
        lines.append(f"fam_u{i}: " + (f"({body})?" if "" in alts else body))
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("schema", [
    {"type": "array", "items": {"enum": ["x", "y", 1, True]}, "uniqueItems": True, "minItems": 1},
    {"type": "array", "items": {"enum": ["ab", "a", "abc", 10, 1]}, "uniqueItems": True, "maxItems": 3},
])
def test_masks_equal_the_written_out_sequences(schema, vocab, assert_same_masks):
    c = JSONSchema(schema)
    assert_same_masks(c.start(vocab), Grammar(_written_out(c)).start(vocab), seed=2, steps=30)


def test_too_few_distinct_values_for_min_items():
    with pytest.raises(UnsatisfiableSchemaError):
        JSONSchema({"type": "array", "items": {"type": "boolean"}, "uniqueItems": True, "minItems": 3})


def test_other_infinite_item_sets_are_refused_with_keyword_and_pointer(vocab):
    refused = ({"type": "number"}, {"type": "number", "multipleOf": 1}, {"type": "object"}, True,
               {"type": ["string", "null"]}, {"type": ["string", "integer"]})
    for items in refused:
        with pytest.raises(UnsupportedSchemaError) as e:
            JSONSchema({"type": "object", "properties": {"a": {"type": "array", "items": items, "uniqueItems": True}}})
        assert e.value.keyword == "uniqueItems" and e.value.pointer == "#/properties/a/uniqueItems", items
    relaxed = JSONSchema({"type": "array", "items": {"type": "object"}, "uniqueItems": True}, strict=False)
    assert accepts(relaxed, vocab, '[{}, {}]')  # documented: not kept distinct when relaxed


# -- strings: the engine compares each item with the array's earlier ones (grammars/distinct.py) --
STRINGS = [
    {"type": "array", "items": {"type": "string"}, "uniqueItems": True},
    {"type": "array", "items": {"type": "string", "minLength": 1, "pattern": "^[a-c]+$"}, "uniqueItems": True,
     "maxItems": 4},
    {"type": "object", "properties": {"tags": {"type": "array", "items": {"type": "string"}, "uniqueItems": True},
                                      "more": {"type": "array", "items": {"type": "array", "uniqueItems": True,
                                                                          "items": {"type": "string"}}}}},
    # a repeated item is still valid through the other branch
    {"anyOf": [{"type": "array", "items": {"type": "string"}, "uniqueItems": True},
               {"type": "array", "items": {"enum": ["a", "b"]}, "maxItems": 3}]},
]
WORDS = st.sampled_from(["a", "b", "ab", "c", "", "\n", "é"])


def _spell(value, data, escapes: bool) -> str:
    """JSON text of ``value`` with each string's characters in a spelling drawn by hypothesis
    (as written, or \\uXXXX where ``escapes``: patterned strings take \\u only for control
    characters, a documented gap)."""
    if isinstance(value, str):
        return '"' + "".join(f"\\u{ord(ch):04x}" if escapes and data.draw(st.booleans()) else json.dumps(ch)[1:-1]
                             for ch in value) + '"'
    if isinstance(value, list):
        return "[" + ",".join(_spell(x, data, escapes) for x in value) + "]"
    return "{" + ",".join(f"{json.dumps(k)}:{_spell(v, data, escapes)}" for k, v in value.items()) + "}"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), items=st.lists(WORDS, max_size=5), inner=st.lists(st.lists(WORDS, max_size=3), max_size=2),
       whitespace=st.sampled_from(["bounded", "flexible", "compact"]))
def test_string_items_are_accepted_iff_distinct(vocab, data, items, inner, whitespace):
    values = [items, items, {"tags": items, "more": inner}, items]
    for schema, value in zip(STRINGS, values):
        valid = jsonschema.Draft202012Validator(schema).is_valid(value)
        # "a" and "\u0061" are one value (patterned and enum strings take only plain spellings, a documented gap)
        text = _spell(value, data, schema is STRINGS[0] or schema is STRINGS[2])
        c = _compiled(json.dumps(schema), whitespace)
        assert accepts(c, vocab, text) == valid, (schema, text)


@pytest.mark.parametrize("whitespace", ["compact", "bounded"])
def test_masks_forbid_exactly_the_tokens_that_repeat_an_item(vocab, whitespace):
    # the mask equals token-by-token advances on every token that can end an item (a quote
    # in it) and on a sample of the rest, at item starts, inside items and between them
    c = JSONSchema(STRINGS[0], whitespace=whitespace)
    quoted = [t for t, b in enumerate(vocab.token_bytes) if b'"' in b or b"\\" in b]
    sample = quoted + list(range(0, vocab.size, 97))
    for prefix in ['["x.","x', '["x!","x', '[" ","a","', '["a","b",', '["ab"', '["x\\n","x\\', '["é","\\u00']:
        state = c.start(vocab).advance_bytes(prefix.encode("utf-8"))
        mask = state.allowed_mask()
        wrong = [vocab.token_bytes[t] for t in sample if bool(mask[t]) != (state.advance(t) is not None)]
        assert not wrong, (prefix, wrong[:5])
    closing = vocab.bytes_to_id[b'."']
    assert not c.start(vocab).advance_bytes(b'["x.","x').allowed_mask()[closing]  # would repeat "x."
    assert c.start(vocab).advance_bytes(b'["x!","x').allowed_mask()[closing]


def test_equal_runs_have_equal_cache_keys(vocab):
    c = JSONSchema(STRINGS[0], whitespace="compact")
    s = c.start(vocab)
    assert s.advance_bytes(b'["a","b",').cache_key() == s.advance_bytes(b'["b","a",').cache_key()
    assert s.advance_bytes(b'["a","b",').cache_key() != s.advance_bytes(b'["a","c",').cache_key()


PREFIXED = [
    {"type": "array", "prefixItems": [{"type": "boolean"}, {"enum": [True, 1, "a"]}], "items": False,
     "uniqueItems": True},
    {"type": "array", "prefixItems": [{"const": "a"}], "items": {"enum": ["a", "b", "c"]}, "uniqueItems": True,
     "minItems": 3},
    {"type": "array", "prefixItems": [{"enum": ["a", "b"]}, {"enum": ["a", "b"]}], "items": {"type": "string"},
     "maxItems": 2, "uniqueItems": True},
]


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(items=st.lists(st.sampled_from([True, False, 1, 1.0, "a", "b", "c"]), max_size=5))
def test_prefix_items_take_distinct_values(vocab, items):
    for schema in PREFIXED:
        valid = jsonschema.Draft202012Validator(schema).is_valid(items)
        assert accepts(_compiled(json.dumps(schema)), vocab, json.dumps(items)) == valid, (schema, items)


_CACHE: dict = {}


def _compiled(text: str, whitespace: str = "bounded") -> JSONSchema:
    if (text, whitespace) not in _CACHE:
        _CACHE[text, whitespace] = JSONSchema(json.loads(text), whitespace=whitespace)
    return _CACHE[text, whitespace]


def test_grammar_text_writes_the_repetition_free_superset(vocab):
    c = JSONSchema(PREFIXED[0])
    text_grammar = Grammar(c.grammar_text)
    assert accepts(text_grammar, vocab, "[true, true]") and not accepts(c, vocab, "[true, true]")
    assert accepts(text_grammar, vocab, "[true, 1]") and accepts(c, vocab, "[true, 1]")


def test_distinct_strings_stay_distinct_when_embedded(vocab):
    from guided import StructuralTag, Tag
    from guided.grammars.grammar import Grammar

    unique = {"type": "array", "items": {"type": "string"}, "uniqueItems": True}
    lark = Grammar('start: "x" %json ' + json.dumps(unique))
    tags = StructuralTag([Tag("<a>", JSONSchema(unique), "</a>")], triggers=["<a>"])
    assert accepts(lark, vocab, 'x["a", "b"]') and not accepts(lark, vocab, 'x["a", "a"]')
    assert accepts(tags, vocab, 'hi <a>["a", "b"]</a>') and not accepts(tags, vocab, 'hi <a>["a", "a"]</a>')
    ints = Grammar('start: "x" %json ' + json.dumps({"type": "array", "items": {"type": "integer", "maximum": 2,
                                                                               "minimum": 1}, "uniqueItems": True}))
    assert accepts(ints, vocab, "x[2, 1]") and not accepts(ints, vocab, "x[1, 1]") and not accepts(ints, vocab, "x[1, 2, ")
    assert ints.start(vocab).advance_bytes(b"x[1, 2").is_live() and not ints.start(vocab).advance_bytes(b"x[2, 2").is_live()
    with pytest.raises(ValueError, match="lazy families"):  # enum items are a parser family: not embeddable
        Grammar('start: "x" %json {"type": "array", "items": {"enum": ["a", "b"]}, "uniqueItems": true}')


# -- bounded items: a prefix whose completions are all earlier items is dead --------------------
BOUNDED = [
    {"type": "array", "items": {"type": "string", "pattern": "^[ab]{1,2}$"}, "uniqueItems": True},
    {"type": "array", "items": {"type": "string", "maxLength": 1, "pattern": "^[a-c\\n\"]*$"}, "uniqueItems": True,
     "minItems": 2},
    {"type": "array", "items": {"type": "integer", "minimum": -3, "maximum": 12}, "uniqueItems": True},
    {"type": "array", "items": {"type": "integer"}, "uniqueItems": True, "maxItems": 4},
    {"type": "object", "properties": {"ids": {"type": "array", "items": {"type": "string", "maxLength": 2},
                                              "uniqueItems": True, "minItems": 1}}},
]
SMALL = st.one_of(st.sampled_from(["a", "b", "aa", "ab", "ba", "bb", "", "c", "\n", '"', "abc", "é"]),
                  st.integers(-4, 13), st.sampled_from([0, -0, 100, -100]))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), items=st.lists(SMALL, max_size=6), whitespace=st.sampled_from(["bounded", "compact"]))
def test_bounded_items_are_accepted_iff_valid(vocab, data, items, whitespace):
    # 0 is sometimes written -0 (one value)
    spelled = [("-0" if x == 0 and data.draw(st.booleans()) else str(x)) if isinstance(x, int)
               else json.dumps(x, ensure_ascii=False) for x in items]
    for schema in BOUNDED:
        value = {"ids": items} if schema["type"] == "object" else items
        valid = jsonschema.Draft202012Validator(schema).is_valid(value)
        sep = "," if whitespace == "compact" else ", "
        text = "[" + sep.join(spelled) + "]"
        text = '{"ids":' + text + "}" if schema["type"] == "object" else text
        c = _compiled(json.dumps(schema), whitespace)
        assert accepts(c, vocab, text) == valid, (schema, text)


def _no_dead_ends(c: JSONSchema, vocab, seed: int, steps: int = 60) -> None:
    """A random walk over allowed tokens (whitespace rarely) never reaches a state with an
    empty mask that does not accept, and every token the mask allows advances."""
    import random

    import numpy as np

    rng = random.Random(seed)
    state = c.start(vocab)
    out = b""
    for _ in range(steps):
        ids = np.flatnonzero(state.allowed_mask())
        if state.is_accepting() and (not len(ids) or rng.random() < 0.05):
            break
        assert len(ids), out
        t = int(ids[rng.randrange(len(ids))])
        for _ in range(20):  # whitespace rarely
            if vocab.token_bytes[t].strip() or rng.random() < 0.05:
                break
            t = int(ids[rng.randrange(len(ids))])
        out += vocab.token_bytes[t]
        state = state.advance(t)
        assert state is not None, out
    return out


@pytest.mark.parametrize("schema", BOUNDED)
def test_bounded_items_never_dead_end(vocab, schema):
    c = _compiled(json.dumps(schema), "bounded")
    finished = 0
    for seed in range(25):
        out = _no_dead_ends(c, vocab, seed)
        try:
            value = json.loads(out)
        except ValueError:
            continue
        finished += 1
        assert jsonschema.Draft202012Validator(schema).is_valid(value), out
    assert finished


@pytest.mark.parametrize("prefix, schema", [
    ('["a","aa","ab",', BOUNDED[0]), ('["b","a","ab",', BOUNDED[0]), ('["a","\\n",', BOUNDED[1]),
    ('["', BOUNDED[1]), ('[1,10,11,12,', BOUNDED[2]), ('[0,', BOUNDED[2]), ('[-1,-2,', BOUNDED[2]),
    ('[-0', BOUNDED[2]), ('[2', BOUNDED[2]), ('[1,-1', BOUNDED[2]), ('[5,50,', BOUNDED[3]), ('{"ids":["x","x\\', BOUNDED[4]), ('{"ids":["é","', BOUNDED[4]),
])
def test_bounded_masks_equal_token_advances(vocab, prefix, schema):
    # every token that can stop on or close an item, and a sample of the rest
    c = _compiled(json.dumps(schema), "compact")
    state = c.start(vocab).advance_bytes(prefix.encode("utf-8"))
    mask = state.allowed_mask()
    suspects = [t for t, b in enumerate(vocab.token_bytes)
                if b'"' in b or b"\\" in b or any(ch in b for ch in b"-0123456789") or len(b) <= 2]
    sample = suspects + list(range(0, vocab.size, 61))
    wrong = [vocab.token_bytes[t] for t in sample if bool(mask[t]) != (state.advance(t) is not None)]
    assert not wrong, (prefix, wrong[:5])


def test_a_token_that_ends_an_item_and_starts_the_next_is_judged_by_both(vocab):
    # ",-" after the first item "-0" writes 0 and starts "-", whose only completion is "-0"
    schema = {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 3}, "uniqueItems": True}
    c = _compiled(json.dumps(schema), "flexible")
    comma_minus = vocab.bytes_to_id[b",-"]
    assert not c.start(vocab).advance_bytes(b"[ -0").allowed_mask()[comma_minus]
    assert c.start(vocab).advance_bytes(b"[ 1").allowed_mask()[comma_minus]  # -0 is new there


def test_bounded_prefixes_with_only_earlier_completions_are_masked(vocab):
    c = _compiled(json.dumps(BOUNDED[0]), "compact")
    state = c.start(vocab).advance_bytes(b'["a","aa","ab",')
    assert not state.allowed_mask()[vocab.bytes_to_id[b'"a']]  # "a, "aa, "ab were all written
    assert state.advance(vocab.bytes_to_id[b'"']) is not None
    ints = _compiled(json.dumps(BOUNDED[2]), "compact")
    state = ints.start(vocab).advance_bytes(b"[1,10,11,12,")
    assert not state.allowed_mask()[vocab.bytes_to_id[b"1"]] and state.allowed_mask()[vocab.bytes_to_id[b"2"]]
    assert ints.start(vocab).advance_bytes(b"[0,-0]") is None  # one value
    # no more items than values: [ab]{1,2} has six
    assert not accepts(c, vocab, '["a","b","aa","ab","ba","bb","a"]') and accepts(c, vocab, '["a","b","aa","ab","ba","bb"]')
    assert c.start(vocab).advance_bytes(b'["a","b","aa","ab","ba","bb",') is None


def _spellings_of(value: str) -> list[str]:
    """Every JSON spelling a constrained string takes: raw, or by short or \\u00XX escape."""
    ways = {"a": ["a"], "\n": ["\\n", "\\u000a", "\\u000A"], "/": ["/", "\\/"], '"': ['\\"']}
    out = [""]
    for ch in value:
        out = [o + w for o in out for w in ways[ch]]
    return ['"' + o + '"' for o in out]


ESCAPED = {"type": "array", "items": {"type": "string", "pattern": '^[a\\n/"]{0,2}$'}, "uniqueItems": True}
ESCAPED_VALUES = [""] + list('a\n/"') + [x + y for x in 'a\n/"' for y in 'a\n/"']
RANGE = {"type": "array", "items": {"type": "integer", "minimum": -12, "maximum": 12}, "uniqueItems": True}


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_prefix_liveness_equals_brute_force(vocab, data):
    # a prefix of an item is live iff some spelling it starts has a value not written yet
    for schema, values, spell in ((ESCAPED, ESCAPED_VALUES, _spellings_of),
                                  (RANGE, list(range(-12, 13)), lambda v: [str(v)] + (["-0"] if v == 0 else []))):
        c = _compiled(json.dumps(schema), "compact")
        seen = data.draw(st.lists(st.sampled_from(values), unique=True, max_size=len(values) - 1))
        written = "[" + "".join(data.draw(st.sampled_from(spell(v))) + "," for v in seen)
        every = [(w, v) for v in values for w in spell(v)]
        word, _ = data.draw(st.sampled_from(every))
        prefix = word[: data.draw(st.integers(1, len(word) - (1 if schema is ESCAPED else 0)))]
        expected = any(w.startswith(prefix) and v not in seen for w, v in every)
        state = c.start(vocab).advance_bytes((written + prefix).encode())
        assert (state is not None and state.is_live()) == expected, (written, prefix)


SMALL_SETS = [
    {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 3}, "uniqueItems": True},
    {"type": "array", "items": {"type": "string", "pattern": "^[ab]{1,2}$"}, "uniqueItems": True},
]
_NEAR: dict = {}


def _near_tokens(vocab) -> list:
    """Every token with a digit, a minus, a quote, a backslash or an a/b, and a sample of the rest."""
    if "ids" not in _NEAR:
        _NEAR["ids"] = [t for t, b in enumerate(vocab.token_bytes)
                        if any(ch in b for ch in b'-0123456789"\\\\') or (len(b) <= 3 and (b"a" in b or b"b" in b))
                        ] + list(range(0, vocab.size, 211))
    return _NEAR["ids"]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), which=st.integers(0, 1), whitespace=st.sampled_from(["flexible", "bounded", "compact"]))
def test_masks_equal_token_advances_at_random_prefixes(vocab, data, which, whitespace):
    schema = SMALL_SETS[which]
    values = data.draw(st.lists(st.sampled_from([0, 1, 2, 3] if which == 0 else ["a", "b", "aa", "ab", "ba", "bb"]),
                                unique=True, max_size=4))
    sep = data.draw(st.sampled_from({"compact": [","], "bounded": [",", ", "], "flexible": [",", ", ", " ,"]}[whitespace]))
    items = [("-0" if v == 0 and data.draw(st.booleans()) else str(v)) if which == 0 else json.dumps(v) for v in values]
    text = "[" + sep.join(items)
    state = _compiled(json.dumps(schema), whitespace).start(vocab).advance_bytes(
        text[: data.draw(st.integers(1, len(text)))].encode())
    mask = state.allowed_mask()
    wrong = [vocab.token_bytes[t] for t in _near_tokens(vocab) if bool(mask[t]) != (state.advance(t) is not None)]
    assert not wrong, wrong[:5]
