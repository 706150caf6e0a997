"""``JSONSchema(..., property_order="any")``: named properties in any order, each at most once.

Acceptance is compared with the ``jsonschema`` validator on generated instances whose keys
are shuffled, and masks are compared token by token (Llama-3) with the same grammar where
every allowed order is written out as its own alternative.
"""

from __future__ import annotations

import itertools
import json

import jsonschema
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from guided.grammars.grammar import Grammar
from guided.json_schema import JSONSchema
from guided.json_schema.families import PropertySet
from guided.json_schema.grammar import family_symbol


def accepts(constraint, vocab, text: str) -> bool:
    state = constraint.start(vocab).advance_bytes(text.encode("utf-8"))
    return state is not None and state.is_accepting()


OBJECT = {
    "type": "object",
    "properties": {
        "a": {"type": "integer", "minimum": -3, "maximum": 12},
        "b": {"type": "string", "maxLength": 2},
        "c": {"enum": [None, True, "z"]},
        "d": {"type": "object", "properties": {"x": {"type": "boolean"}, "y": {"type": "null"}}, "required": ["y"],
              "additionalProperties": False},
    },
    "required": ["a", "c"],
    "additionalProperties": {"type": "boolean"},
}

VALID = st.fixed_dictionaries(
    {"a": st.integers(-3, 12), "c": st.sampled_from([None, True, "z"])},
    optional={"b": st.text(max_size=2), "d": st.fixed_dictionaries({"y": st.none()}, optional={"x": st.booleans()})},
).flatmap(lambda d: st.dictionaries(st.text(alphabet="abcdxyz", min_size=1, max_size=2).filter(lambda k: k not in "abcd"),
                                    st.booleans(), max_size=2).map(lambda extra: {**d, **extra}))


def _shuffled(value, data):
    """``value`` with every object's keys in an order drawn by hypothesis."""
    if isinstance(value, dict):
        keys = data.draw(st.permutations(list(value)))
        return {k: _shuffled(value[k], data) for k in keys}
    if isinstance(value, list):
        return [_shuffled(x, data) for x in value]
    return value


@pytest.fixture(scope="module")
def any_order():
    return JSONSchema(OBJECT, property_order="any")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_valid_instances_in_any_order_are_accepted(vocab, any_order, data):
    value = _shuffled(data.draw(VALID), data)
    assert jsonschema.Draft202012Validator(OBJECT).is_valid(value)
    for text in (json.dumps(value, ensure_ascii=False), json.dumps(value, indent=1, ensure_ascii=False), json.dumps(value, separators=(",", ":"), ensure_ascii=False)):
        assert accepts(any_order, vocab, text), text


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 14) | st.sampled_from(["", "z", "ab", "abc"]),
    lambda kids: st.dictionaries(st.sampled_from(["a", "b", "c", "d", "x", "y", "q"]), kids, max_size=5),
    max_leaves=8,
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=json_values)
def test_acceptance_equals_validation(vocab, any_order, value):
    valid = jsonschema.Draft202012Validator(OBJECT).is_valid(value)
    assert accepts(any_order, vocab, json.dumps(value, ensure_ascii=False)) == valid, value


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_duplicated_keys_are_never_accepted(vocab, any_order, data):
    value = data.draw(VALID)
    named = [k for k in value if k in OBJECT["properties"]]
    dup = data.draw(st.sampled_from(named))
    members = [json.dumps(k) + ": " + json.dumps(v, ensure_ascii=False) for k, v in value.items()]
    members.insert(data.draw(st.integers(0, len(members))), json.dumps(dup) + ": " + json.dumps(value[dup], ensure_ascii=False))
    text = "{" + ", ".join(members) + "}"
    state = any_order.start(vocab).advance_bytes(text.encode())
    assert state is None or not state.is_accepting(), text


# -- masks against the orders written out --------------------------------------------------

SMALL = [
    {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "string"}, "c": {"type": "boolean"}},
     "required": ["a"], "additionalProperties": False},
    {"type": "object", "properties": {"name": {"type": "string"}, "nick": {"type": "string"}, "n": {"type": "number"}},
     "minProperties": 2, "maxProperties": 2, "additionalProperties": False},
    {"type": "array", "items": {"type": "object", "properties": {"k": {"enum": [1, 2]}, "kk": {"const": "v"}},
                                "required": ["kk"], "additionalProperties": False}},
]


def _written_out(c: JSONSchema) -> str:
    """``c``'s grammar with each order-free object replaced by its orders, one alternative each."""
    g = c._schema_grammar
    comma, colon = (family_symbol(p, g.whitespace) for p in ('","', '":"'))  # punctuation as the families write it
    lines = [ln for ln in g.text.splitlines() if not ln.startswith("fam_") and not ln.startswith("//")]
    for i, fam in enumerate(g.families):
        assert isinstance(fam, PropertySet) and not fam.extras
        required = {j for j, k in enumerate(fam.keys) if k[2]}
        alts = []
        for n in range(len(fam.keys) + 1):
            if n < fam.min_p or fam.max_p is not None and n > fam.max_p:
                continue
            for order in itertools.permutations(range(len(fam.keys)), n):
                if required <= set(order):
                    alts.append(f" {comma} ".join(f"{fam.keys[j][0]} {colon} {fam.keys[j][1]}" for j in order) or "")
        body = " | ".join(f"({a})" for a in alts if a)
        lines.append(f"fam_p{i}: " + (f"({body})?" if "" in alts else body))
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("schema", SMALL)
def test_masks_equal_the_written_out_orders(schema, vocab, assert_same_masks):
    c = JSONSchema(schema, property_order="any")
    assert_same_masks(c.start(vocab), Grammar(_written_out(c)).start(vocab), seed=1)


def test_equal_states_have_equal_cache_keys(vocab):
    c = JSONSchema(SMALL[0], property_order="any")
    s = c.start(vocab)
    x = s.advance_bytes(b'{"a": 1, "b": "q",')
    y = s.advance_bytes(b'{"b": "r", "a": 7,')
    z = s.advance_bytes(b'{"a": 1,')
    assert x.cache_key() == y.cache_key()  # same properties written: one parser state
    assert x.cache_key() != z.cache_key()
    assert np.array_equal(x.allowed_mask(), y.allowed_mask())


def test_required_properties_gate_the_closing_brace(vocab):
    c = JSONSchema({"type": "object", "properties": {"p": {}, "q": {}, "r": {}}, "required": ["q", "r"]},
                   property_order="any")
    s = c.start(vocab)
    assert accepts(c, vocab, '{"r": 1, "q": 2}') and accepts(c, vocab, '{"r": 1, "x": 0, "q": 2, "p": 3}')
    assert not accepts(c, vocab, '{"r": 1, "p": 2}')
    closing = [i for i, b in enumerate(vocab.token_bytes) if b == b"}"]
    half = s.advance_bytes(b'{"r": 1')
    assert not half.allowed_mask()[closing].any()
    assert s.advance_bytes(b'{"r": 1, "q": 2').allowed_mask()[closing].all()


def test_thirty_properties_build_only_the_sets_visited(vocab):
    props = {f"p{i}": {"type": "integer"} for i in range(30)}
    c = JSONSchema({"type": "object", "properties": props, "required": list(props)}, property_order="any")
    order = list(reversed(range(30)))
    value = "{" + ", ".join(f'"p{i}": {i}' for i in order) + "}"
    state = c.start(vocab)
    for part in value.encode().split(b","):
        state = state.advance_bytes(part + b",") if not part.endswith(b"}") else state.advance_bytes(part)
        assert state is not None
        state.allowed_mask()
    assert state.is_accepting()
    families = c.grammar.compiled.spec.lazy
    assert len(families.states) < 40 * 31  # the sets on one path and their successors, not 2^30


def test_schema_order_stays_the_default(vocab):
    schema = {"type": "object", "properties": {"a": {}, "b": {}}}
    assert accepts(JSONSchema(schema), vocab, '{"a": 1, "b": 2}')
    assert not accepts(JSONSchema(schema), vocab, '{"b": 2, "a": 1}')
    assert accepts(JSONSchema(schema, property_order="any"), vocab, '{"b": 2, "a": 1}')
    with pytest.raises(ValueError):
        JSONSchema(schema, property_order="sorted")


COUNTED = [
    {"type": "object", "oneOf": [
        {"properties": {"a": {"type": "integer"}}, "additionalProperties": False},
        {"properties": {"b": {"type": "integer"}}, "additionalProperties": False}]},
    {"type": "object", "properties": {"a": {}}, "not": {"properties": {"a": {}}, "additionalProperties": False}},
    {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}, "c": {"type": "integer"}},
     "minProperties": 2, "maxProperties": 3, "dependentRequired": {"c": ["a"]}},
    {"type": "object", "patternProperties": {"^x": {"type": "integer"}}, "properties": {"xa": {"minimum": 1}},
     "required": ["xa"], "additionalProperties": False, "maxProperties": 3},
]


@pytest.fixture(scope="module")
def counted():
    return [JSONSchema(s, property_order="any") for s in COUNTED]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=st.dictionaries(st.sampled_from(["a", "b", "c", "x", "xa", "xb"]),
                             st.integers(0, 2) | st.booleans(), max_size=5), data=st.data())
def test_counts_witnesses_and_patterns_in_any_order(vocab, counted, value, data):
    value = _shuffled(value, data)
    for schema, c in zip(COUNTED, counted):
        valid = jsonschema.Draft202012Validator(schema).is_valid(value)
        assert accepts(c, vocab, json.dumps(value)) == valid, (schema, value)


def test_grammar_text_writes_the_order_free_superset(vocab):
    for schema in COUNTED:
        Grammar(JSONSchema(schema, property_order="any").grammar_text)  # valid Lark
    text_grammar = Grammar(JSONSchema(SMALL[0], property_order="any").grammar_text)
    assert accepts(text_grammar, vocab, '{"a": 1, "a": 2}')  # the superset: the sets are not in the text


@pytest.mark.parametrize("whitespace", ["bounded", "flexible"])
def test_values_that_are_literals_have_their_terminals(vocab, whitespace):
    # a property whose value is only the literal null / true (its rule inlined into the family):
    # the literal's terminal must exist before the lexer is built, though no static rule uses it
    # (found by MaskBench on the whole dev split: "symbol 'NULL' is not defined" mid-instance)
    schema = {"type": "object", "properties": {"a": {"type": "null"}, "b": {"const": True}}, "additionalProperties": False}
    c = JSONSchema(schema, property_order="any", whitespace=whitespace)
    state = c.start(vocab)
    for ch in b'{"b":true,"a":null}':
        state = state.advance_bytes(bytes([ch]))
        assert state is not None
        state.allowed_mask()
    assert state.is_accepting()
    assert not accepts(c, vocab, '{"a":true}') and accepts(c, vocab, '{"a":null}')
