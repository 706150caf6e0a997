"""ByteDFA agrees with ``re.fullmatch``, byte for byte."""

import re

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from guided.constraint import ConstraintError
from guided.grammars.bytedfa import ByteDFA, EmptyLanguageError, RegexError, RegexTooLargeError

# characters that stress UTF-8 lengths and case folding: K/k/KELVIN SIGN, s/LONG S, é/É, €, 𝄞
ALPHABET = "abkKsS\u212a\u017f\u00e9\u00c9\u20ac\U0001d11e0 9_\n-."

ATOMS = [
    "a", "b", "k", "s", "\u00e9", "\u20ac", "\U0001d11e", ".", r"\d", r"\w", r"\s", r"\W", r"\S",
    "[a-c]", "[^a]", "[^\\W\\d]", "[\u00e0-\u00ff]", "[\u20ac\U0001d11e]", r"\.", "-", "[K-k]",
]


@st.composite
def regexes(draw, depth=3):
    if depth == 0 or draw(st.integers(0, 3)) == 0:
        return draw(st.sampled_from(ATOMS))
    kind = draw(st.sampled_from(["cat", "alt", "star", "plus", "opt", "rep", "group", "flag"]))
    sub = lambda: draw(regexes(depth - 1))  # noqa: E731
    if kind == "cat":
        return sub() + sub()
    if kind == "alt":
        return f"(?:{sub()}|{sub()})"
    if kind == "star":
        return f"(?:{sub()})*"
    if kind == "plus":
        return f"(?:{sub()})+?"
    if kind == "opt":
        return f"(?:{sub()})?"
    if kind == "rep":
        lo = draw(st.integers(0, 2))
        return f"(?:{sub()}){{{lo},{lo + draw(st.integers(0, 2))}}}"
    if kind == "group":
        return f"({sub()})"
    return f"(?{draw(st.sampled_from(['i', 's', 'a', 'is']))}:{sub()})"


def check(pattern: str, text: str, dfa: ByteDFA):
    expected = re.fullmatch(pattern, text) is not None
    assert dfa.matches(text.encode()) == expected, (pattern, text)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(regexes(), st.lists(st.text(ALPHABET, max_size=6), min_size=1, max_size=10))
def test_agrees_with_fullmatch_on_random_text(pattern, texts):
    try:
        dfa = ByteDFA.from_regex(pattern)
    except EmptyLanguageError:
        assert all(re.fullmatch(pattern, t) is None for t in texts)
        return
    for t in texts:
        check(pattern, t, dfa)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(st.data())
def test_every_prefix_of_a_match_is_live(data):
    pattern = data.draw(regexes())
    try:
        dfa = ByteDFA.from_regex(pattern)
    except EmptyLanguageError:
        return
    text = data.draw(st.from_regex(re.compile(pattern), fullmatch=True).filter(lambda s: len(s) < 30))
    raw = text.encode()
    assert dfa.matches(raw), (pattern, text)
    s = dfa.start
    for b in raw:
        s = dfa.walk(s, bytes([b]))
        assert s >= 0
    # invalid UTF-8 and lone continuation bytes never match
    assert not dfa.matches(raw + b"\xff")
    assert dfa.walk(dfa.start, b"\xc0\x80") == -1


@pytest.mark.parametrize(
    "pattern, flags",
    [
        (r"\w+", 0), (r"\d+", 0), (r"\s", 0), (r"[^\W\d]\w*", 0), (r"\w", re.ASCII),
        (r"k", re.IGNORECASE), (r"[a-z]+", re.IGNORECASE), (r"\u00df", re.IGNORECASE),
        (r".", 0), (r".", re.DOTALL), (r"[^a-z]", re.IGNORECASE), (r"a b # comment", re.VERBOSE),
    ],
)
def test_unicode_classes_are_exactly_pythons(pattern, flags):
    """Check every code point of the classes Python defines by Unicode tables."""
    dfa = ByteDFA.from_regex(pattern, flags)
    compiled = re.compile(pattern, flags)
    for cp in list(range(0, 0x3000)) + list(range(0xFF00, 0x10000, 7)) + list(range(0x10000, 0x110000, 97)):
        if 0xD800 <= cp <= 0xDFFF:
            continue
        ch = chr(cp)
        assert dfa.matches(ch.encode()) == (compiled.fullmatch(ch) is not None), (pattern, hex(cp))


def test_surrogates_and_overlongs_rejected():
    dfa = ByteDFA.from_regex(r"(?s).")
    assert dfa.walk(dfa.start, b"\xed\xa0") == -1  # UTF-8 of a surrogate
    assert dfa.walk(dfa.start, b"\xe0\x80") == -1  # overlong
    assert dfa.walk(dfa.start, b"\xf4\x90") == -1  # beyond U+10FFFF
    assert dfa.matches("\U0010ffff".encode())
    assert dfa.walk(dfa.start, "€".encode()[:2]) >= 0  # mid-character is a live state


def test_minimal_and_start_is_zero():
    dfa = ByteDFA.from_regex(r"(a|b)*abb")
    assert dfa.start == 0 and dfa.n_states == 4
    assert ByteDFA.from_regex("(?:ab|ab)+").n_states == 3


def test_anchors_at_the_ends_are_fine():
    assert ByteDFA.from_regex(r"^ab$").matches(b"ab")
    assert ByteDFA.from_regex(r"\Aab\Z").matches(b"ab")


@pytest.mark.parametrize(
    "pattern, construct, position",
    [
        (r"(a)\1", "backreference", 3),
        (r"(?P<x>a)(?P=x)", "backreference", 8),
        (r"ab(?=c)", "lookahead", 2),
        (r"ab(?!c)", "lookahead", 2),
        (r"(?<=a)b", "lookbehind", 0),
        (r"x(?<!a)b", "lookbehind", 1),
        (r"(a)?(?(1)b|c)", "conditional", 4),
        (r"a(?>bc)", "atomic group", 1),
        (r"a*+", "possessive", 1),
        (r"a\bb", "word boundary", 1),
    ],
)
def test_unsupported_constructs_are_named(pattern, construct, position):
    with pytest.raises(RegexError) as err:
        ByteDFA.from_regex(pattern)
    assert construct in str(err.value)
    assert err.value.position == position
    assert isinstance(err.value, ConstraintError)


def test_syntax_error_has_position():
    with pytest.raises(RegexError) as err:
        ByteDFA.from_regex(r"ab(c")
    assert err.value.position == 2


def test_empty_language_and_explosion_are_typed():
    with pytest.raises(EmptyLanguageError):
        ByteDFA.from_regex(r"[^\s\S]")
    with pytest.raises(RegexTooLargeError):
        ByteDFA.from_regex(r"(a|b)*a(a|b){30}")
    with pytest.raises(RegexTooLargeError):
        ByteDFA.from_regex(r"(?:a{1000}){1000}")


def test_literal():
    dfa = ByteDFA.literal(b"ab")
    assert dfa.matches(b"ab") and not dfa.matches(b"a")
    assert np.array_equal(dfa.trans, ByteDFA.from_regex("ab").trans)
