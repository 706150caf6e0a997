"""Lexer diagnostics (interegular): colliding and unreachable terminals warn, strict raises."""

from __future__ import annotations

import re
import warnings

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import guided
from guided.grammars import SHIPPED_GRAMMARS, GrammarError, load_grammar, shipped_grammar_path
from guided.grammars.diagnostics import TerminalPattern, lexer_findings
from guided.grammars.shipped import INTENDED_COLLISIONS


def grammar_warnings(text: str, **kwargs) -> list[guided.GrammarWarning]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        guided.Grammar(text, **kwargs)
    return [w.message for w in caught if issubclass(w.category, guided.GrammarWarning)]


def test_equal_priority_regexes_that_overlap_warn_with_both_names_and_an_example():
    (warning,) = grammar_warnings('start: WORD | HEX\nWORD: /[a-z]+/\nHEX: /[0-9a-f]+/\n')
    assert warning.kind == "collision"
    assert set(warning.terminals) == {"WORD", "HEX"}
    assert "WORD" in str(warning) and "HEX" in str(warning)
    assert re.fullmatch(r"[a-z]+", warning.example) and re.fullmatch(r"[0-9a-f]+", warning.example)


def test_strict_raises_grammar_error_at_the_terminal_definition():
    text = 'start: WORD | HEX\nWORD: /[a-z]+/\nHEX: /[0-9a-f]+/\n'
    with pytest.raises(GrammarError, match="WORD and HEX") as info:
        guided.Grammar(text, strict=True)
    assert (info.value.line, info.value.column) == (2, 1)


def test_literal_under_a_higher_priority_regex_is_unreachable():
    (warning,) = grammar_warnings('start: AS | TWO\nAS.2: /a+/\nTWO: "aa"\n')
    assert (warning.kind, warning.terminals, warning.example) == ("unreachable", ("TWO", "AS"), "aa")


def test_regex_inside_a_literal_is_unreachable():
    (warning,) = grammar_warnings('start: IFRE | "if"\nIFRE: /i[f]/\n')
    assert warning.kind == "unreachable" and warning.terminals[0] == "IFRE" and warning.example == "if"


def test_keywords_against_a_name_regex_are_resolved_by_priority_and_quiet():
    assert grammar_warnings('start: ("if" | "else"i | NAME)+\nNAME: /[a-z]+/\n%ignore " "\n') == []


def test_partial_overlap_at_different_priorities_is_quiet():
    assert grammar_warnings('start: WORD | HEX\nWORD: /[a-z]+/\nHEX.2: /[0-9a-f]+/\n') == []


def test_subset_at_a_lower_priority_is_unreachable():
    (warning,) = grammar_warnings('start: INT | NUM\nINT: /[0-9]+/\nNUM.2: /[0-9]+(\\.[0-9]+)?/\n')
    assert warning.terminals == ("INT", "NUM")


def test_case_insensitive_literals_that_spell_the_same_word_collide():
    (warning,) = grammar_warnings('start: A | B\nA: "select"i\nB: "SELECT"\n')
    # the plain literal is one of the other's spellings: a tie between literals, kept as ambiguity
    assert warning.kind == "collision" and warning.example == "SELECT"


def test_ignored_terminals_take_part():
    (warning,) = grammar_warnings('start: "a" SP "b"\nSP: /[ ]+/\n%ignore /\\s+/\n')
    assert "SP" in warning.terminals


@pytest.mark.parametrize("name", sorted(SHIPPED_GRAMMARS))
def test_shipped_grammars_have_no_unintended_collisions(name):
    file, start, postlex = SHIPPED_GRAMMARS[name]
    raw = grammar_warnings(shipped_grammar_path(name).read_text(), start=start, postlex=postlex,
                           import_paths=[str(shipped_grammar_path(name).parent)])
    assert sorted(w.terminals for w in raw) == sorted(INTENDED_COLLISIONS.get(name, ()))
    load_grammar.cache_clear()
    with warnings.catch_warnings():
        warnings.simplefilter("error", guided.GrammarWarning)
        load_grammar(name)  # the intended ones are not shown to users


PIECES = ["a", "b", "ab", "[ab]", "a+", "b*a", "(ab)+", "a?b", "[a-c]{2}", "c"]


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(PIECES), st.sampled_from(PIECES), st.text("abc", min_size=1, max_size=5))
def test_collision_reports_agree_with_re(left, right, text):
    """Sound (the example matches both) and complete (a common string is never missed)."""
    a = TerminalPattern("A", left, 0, False)
    b = TerminalPattern("B", right, 0, False)
    findings = lexer_findings([a, b])
    for finding in findings:
        assert re.fullmatch(left, finding.example) and re.fullmatch(right, finding.example)
    if re.fullmatch(left, text) and re.fullmatch(right, text):
        assert [f.kind for f in findings] == ["collision"]
