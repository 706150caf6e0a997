"""Schema terminals built from their languages equal the ones compiled from regex text.

The JSON Schema compiler hands the grammar engine automata built straight from code-point
DFAs (:mod:`guided.json_schema.engine_spec`); the Lark text it also writes must mean the
same.  Minimal DFAs are unique (up to the canonical numbering ``_prune_and_minimise``
gives), so equal languages show as equal tables.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from guided.json_schema import regex as rx
from guided.grammars.bytedfa import ByteDFA, RegexTooLargeError, _prune_and_minimise
from guided.grammars.grammar import Grammar
from guided.json_schema import JSONSchema, schema_to_lark
from guided.json_schema.engine_spec import _CountedDFA, _Derivatives, _JSONSpelling, engine_spec, json_string_dfa, plain_dfa
from guided.grammars.lazy_bytedfa import LazyByteDFA
from guided.json_schema.formats import decimal_range, format_language, integer_range
from guided.grammars.lark_loader import load_lark

SETTINGS = settings(max_examples=120, deadline=None)


def same_language(a: ByteDFA, b: ByteDFA) -> bool:
    ta, aa = _prune_and_minimise(a.trans, a.accepting, a.start)
    tb, ab = _prune_and_minimise(b.trans, b.accepting, b.start)
    return ta.shape == tb.shape and bool((ta == tb).all()) and bool((aa == ab).all())


def materialised(d) -> ByteDFA:
    return d.materialise() if hasattr(d, "materialise") else d


def every_state_live(d: ByteDFA) -> bool:
    live = d.accepting.copy()
    while True:
        new = live | np.where(d.trans >= 0, live[np.maximum(d.trans, 0)], False).any(axis=1)
        if (new == live).all():
            return bool(live.all())
        live = new


# characters that stress the encoding: escapes, controls, '/', multi-byte UTF-8
CHARS = ["a", "b", '"', "\\", "/", "\n", "\x01", "\x1f", "é", "€", "😀", " "]
char_sets = st.sets(st.sampled_from(CHARS), min_size=1, max_size=4).map(lambda cs: rx.Chars(rx.CharSet.of(*cs)))
wide_sets = st.sampled_from([rx.ANY_CHAR, rx.Chars(rx.ALL - rx.CharSet.of("a")), rx.Chars(rx.CharSet.of((0x80, 0x10FFFF)))])


def _combine(children):
    return st.one_of(
        st.lists(children, min_size=1, max_size=3).map(lambda ps: rx.seq(*ps)),
        st.lists(children, min_size=1, max_size=3).map(lambda ps: rx.alt(*ps)),
        st.tuples(children, st.integers(0, 2), st.one_of(st.none(), st.integers(0, 3))).map(
            lambda t: rx.rep(t[0], t[1], None if t[2] is None else t[1] + t[2])
        ),
    )


nodes = st.recursive(st.one_of(char_sets, wide_sets), _combine, max_leaves=6)
words = st.lists(st.text(alphabet="ab\"\\é\n", max_size=4), max_size=5)


@st.composite
def languages(draw):
    n = draw(nodes)
    how = draw(st.sampled_from(["plain", "length", "counted", "not_words", "intersect"]))
    if how == "length":
        lo = draw(st.integers(0, 3))
        n = rx.with_length(n, lo, lo + draw(st.integers(0, 3)))
    elif how == "counted":  # the limit kept as a limit (what with_length does when writing it out is too large)
        lo = draw(st.integers(0, 3))
        n = rx.counted(n, lo, lo + draw(st.integers(0, 3)))
    elif how == "not_words":
        n = rx.not_words_language(draw(words))
    elif how == "intersect":
        n = rx.intersect(rx.not_words_language(draw(words)), rx.rep(n, 0, None))
    return n


def _reference(regex: str) -> ByteDFA:
    """The old path's DFA, the oracle; an example whose regex text is too large for it (the
    intersections' text grows as a product) is not an example of anything."""
    assume(len(regex) <= 20_000)  # past this the oracle takes minutes, then refuses
    try:
        return ByteDFA.from_regex(regex)
    except RegexTooLargeError:
        assume(False)


@SETTINGS
@given(n=languages())
def test_json_string_dfa_equals_the_compiled_regex(n):
    if rx.is_empty_language(n):
        return
    regex = rx.json_string_regex(n)
    direct = materialised(json_string_dfa(n))
    assert every_state_live(direct)
    assert same_language(direct, _reference(regex)), regex


@SETTINGS
@given(n=nodes)
def test_plain_dfa_equals_the_compiled_regex(n):
    if rx.is_empty_language(n):
        return
    regex = rx.plain_regex(n)
    direct = plain_dfa(n).materialise()
    assert every_state_live(direct)
    assert same_language(direct, _reference(regex)), regex


@SETTINGS
@given(n=nodes, lo=st.integers(0, 3), span=st.integers(0, 4))
def test_a_kept_length_limit_reads_the_same_by_counter_and_by_derivatives(n, lo, span):
    """A kept limit (``rx.Counted``) is read over the inner DFA with a counter, or, when
    that DFA times the limit is too large, by regex derivatives: both equal the regex text."""
    limited = rx.counted(n, lo, lo + span)
    assume(isinstance(limited, rx.Counted))
    by_counter = LazyByteDFA(_JSONSpelling(_CountedDFA(limited)), "counter").materialise()
    by_derivatives = LazyByteDFA(_JSONSpelling(_Derivatives(limited)), "derivatives").materialise()
    assert every_state_live(by_counter) and every_state_live(by_derivatives)
    reference = _reference(rx.json_string_regex(limited))
    assert same_language(by_counter, reference) and same_language(by_derivatives, reference)


@pytest.mark.parametrize("node", [
    rx.with_length(rx.ANY_STRING, 0, 60),
    rx.with_length(rx.pattern_language("^[a-z0-9_]+$"), 3, 12),
    rx.not_words_language(["name", "age", "address", "created_at", "id", "ütf", "a\"b"]),
    format_language("date-time"),
    format_language("uuid"),
    format_language("ipv4"),
    rx.ANY_STRING,
])
def test_real_terminals(node):
    regex = rx.json_string_regex(node)
    assert same_language(materialised(json_string_dfa(node)), ByteDFA.from_regex(regex))


@pytest.mark.parametrize("node", [integer_range(-40, 12345), integer_range(7, None),
                                  decimal_range(-1.5, True, 2.25, False)])
def test_number_terminals(node):
    assert same_language(plain_dfa(node).materialise(), ByteDFA.from_regex(rx.plain_regex(node)))


def test_constrained_strings_take_json_dumps_spellings_only():
    d = json_string_dfa(rx.with_length(rx.ANY_STRING, 0, 10))
    for s in ["é/€", 'a"b\\', "\n\x01\t", "😀"]:
        assert d.matches(json.dumps(s, ensure_ascii=False).encode())
    assert d.matches(b'"\\u0001\\/"')
    assert not d.matches(b'"\\u00e9"')  # a non-control character escaped: not a json.dumps spelling
    names = json_string_dfa(rx.not_words_language(["name"]))
    assert not names.matches(b'"name"') and not names.matches(b'"n\\u0061me"')
    assert names.matches(b'"names"') and names.matches(b'"nam"')


SCHEMAS = [
    {"type": "object", "properties": {"name": {"type": "string", "maxLength": 20}, "age": {"type": "integer", "minimum": 0},
                                      "tags": {"type": "array", "items": {"enum": ["a", "b", 3, None]}}},
     "required": ["name"]},
    {"type": "object", "patternProperties": {"^x-": {"type": "number"}}, "additionalProperties": {"type": "boolean"},
     "properties": {"x-id": {"const": "k"}}},
    {"anyOf": [{"type": "string", "format": "date"}, {"type": "number", "multipleOf": 0.5, "maximum": 10}]},
    {"$defs": {"node": {"type": "object", "properties": {"next": {"$ref": "#/$defs/node"}, "v": {"type": "string"}}}},
     "$ref": "#/$defs/node"},
    {"type": "array", "prefixItems": [{"const": {"a": [1, "x"]}}], "items": {"type": "string", "pattern": "^[A-Z]{2}$"},
     "maxItems": 3},
    True,
]


@pytest.mark.parametrize("whitespace", ["bounded", "flexible", "compact"])
@pytest.mark.parametrize("schema", SCHEMAS, ids=range(len(SCHEMAS)))
def test_engine_spec_equals_the_lark_text(schema, whitespace):
    """The spec handed to the engine and the Lark text shown to users are one grammar."""
    c = JSONSchema(schema, whitespace=whitespace)
    direct = c.grammar.compiled.spec
    via_lark = load_lark(schema_to_lark(schema, whitespace=whitespace))
    assert {t.name for t in direct.terminals} == {t.name for t in via_lark.terminals}
    by_name = {t.name: t for t in via_lark.terminals}
    for t in direct.terminals:
        other = by_name[t.name]
        assert (t.priority, t.is_literal) == (other.priority, other.is_literal), t.name
        assert same_language(materialised(t.dfa), other.dfa), t.name
    assert set(direct.rules) == {(str(lhs), rhs) for lhs, rhs in via_lark.rules}
    assert set(direct.ignore) == set(via_lark.ignore)
    assert c.grammar_text == schema_to_lark(schema, whitespace=whitespace) == c.grammar.text


def test_engine_spec_grammar_accepts_like_the_text_grammar(vocab, llama3):
    schema = SCHEMAS[0]
    direct = JSONSchema(schema).start(vocab)
    via_text = Grammar(schema_to_lark(schema)).start(vocab)
    for text in ['{"name": "bob", "age": 3}', '{"age": 3}', '{"name":"x","zz":[1,2]}', '{"name": "x", "tags": ["a", 3, null]}',
                 '{"name": "' + "x" * 21 + '"}']:
        a, b = direct, via_text
        for t in llama3.encode(text, add_special_tokens=False):
            assert (a.allowed_mask() == b.allowed_mask()).all()
            a, b = a.advance(t), b.advance(t)
            assert (a is None) == (b is None), text
            if a is None:
                break
        else:
            assert a.is_accepting() == b.is_accepting()
