"""Bad grammars raise typed errors with a location, quickly."""

import time

import pytest

from guided.constraint import ConstraintError
from guided.grammars import Grammar, GrammarError


def raises(text, **kw) -> GrammarError:
    t0 = time.perf_counter()
    with pytest.raises(GrammarError) as err:
        Grammar(text, **kw)
    elapsed = time.perf_counter() - t0
    assert isinstance(err.value, ConstraintError)
    return err.value, elapsed


def test_syntax_error_has_line_and_column():
    err, _ = raises('start: "a" (\nb: "x"')
    assert err.line == 1 and err.column is not None


def test_undefined_rule_is_named_and_located():
    err, _ = raises('start: a b\na: "x"\n')
    assert "b" in str(err) and (err.line, err.column) == (1, 10)


def test_invalid_regex_terminal():
    err, _ = raises('start: A\nA: /[/\n')
    assert err.name == "A" and err.line == 2 and "A" in str(err)


def test_unsupported_regex_construct_names_it():
    err, _ = raises('start: A\nA: /a(?=b)/\n')
    assert "lookahead" in str(err) and err.line == 2


def test_empty_language():
    err, _ = raises('start: x\nx: x "a"\n')
    assert "empty" in str(err)


def test_terminal_matching_empty_string():
    err, _ = raises('start: A\nA: /a*/\n')
    assert "empty string" in str(err) and err.line == 2


def test_explosive_terminal_is_refused_quickly():
    err, elapsed = raises('start: A\nA: /(a|b)*a(a|b){40}/\n')
    assert "too large" in str(err) and err.line == 2
    # (no timing assertion: "quickly" is about refusing before building 2**40 states)


def test_unknown_start_rule():
    err, _ = raises('start: "a"\n', start="nope")
    assert "nope" in str(err)
