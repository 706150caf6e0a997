"""Regular languages behind the JSON Schema compiler: numbers, patterns, lengths, encodings.

Property tests compare each construction with a direct definition (Python arithmetic,
``re.search``, ``len``, ``json.loads``) on generated inputs.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from guided.json_schema import regex as rx
from guided.json_schema.formats import (
    decimal_range,
    format_language,
    integer_range,
    multiple_language,
)

SETTINGS = settings(max_examples=150, deadline=None)


def full(regex: str, text: str) -> bool:
    return re.fullmatch(regex, text) is not None


# -- integer ranges ----------------------------------------------------------------------

bound = st.one_of(st.none(), st.integers(-10**6, 10**6), st.integers(-10**30, 10**30))


@SETTINGS
@given(lo=bound, hi=bound, xs=st.lists(st.integers(-10**7, 10**7) | st.integers(-10**31, 10**31), max_size=20))
def test_integer_range_matches_exactly_the_range(lo, hi, xs):
    regex = rx.plain_regex(integer_range(lo, hi))
    probes = list(xs) + [v for v in (lo, hi) if v is not None for v in (v - 1, v, v + 1)]
    for x in probes:
        inside = (lo is None or x >= lo) and (hi is None or x <= hi)
        assert full(regex, str(x)) == inside, (lo, hi, x, regex)


@SETTINGS
@given(lo=bound, hi=bound, text=st.from_regex(r"-?0[0-9]+|-0", fullmatch=True))
def test_integer_range_rejects_non_canonical_spellings(lo, hi, text):
    assert not full(rx.plain_regex(integer_range(lo, hi)), text)


# -- decimal ranges ----------------------------------------------------------------------

decimals = st.decimals(min_value=-1000, max_value=1000, places=3, allow_nan=False, allow_infinity=False)


def _spellings(d: Decimal) -> list[str]:
    """Plain decimal spellings of ``d`` (with and without trailing zeros)."""
    text = format(d, "f")
    if text.startswith("-") and Decimal(text) == 0:
        text = text[1:]
    out = [text]
    if "." in text:
        out.append(text + "00")
        stripped = text.rstrip("0").rstrip(".")
        out.append(stripped if stripped not in ("", "-") else "0")
    return [t for t in out if t != "-0"]


@SETTINGS
@given(lo=st.none() | decimals, hi=st.none() | decimals, lo_s=st.booleans(), hi_s=st.booleans(),
       xs=st.lists(decimals, max_size=15))
def test_decimal_range_compares_values_exactly(lo, hi, lo_s, hi_s, xs):
    regex = rx.plain_regex(decimal_range(lo, lo_s, hi, hi_s))
    probes = list(xs) + [v + e for v in (lo, hi) if v is not None for e in (Decimal("-0.001"), 0, Decimal("0.001"))]
    for x in probes:
        inside = (lo is None or x > lo or (x == lo and not lo_s)) and (hi is None or x < hi or (x == hi and not hi_s))
        for text in _spellings(x):
            assert full(regex, text) == inside, (lo, lo_s, hi, hi_s, text, regex)


@SETTINGS
@given(k=st.integers(0, 3), xs=st.lists(decimals, max_size=15))
def test_decimal_range_fraction_digit_limit(k, xs):
    regex = rx.plain_regex(decimal_range(Decimal(-5), False, Decimal(500), False, k))
    for x in xs:
        inside = Decimal(-5) <= x <= 500 and x == x.quantize(Decimal(1).scaleb(-k))
        for text in _spellings(x):
            assert full(regex, text) == inside, (k, text)


# -- multipleOf --------------------------------------------------------------------------


@pytest.mark.parametrize("a,k", [(2, 0), (3, 0), (5, 0), (30, 0), (15, 1), (25, 2), (8, 0)])
def test_multiple_language_is_divisibility(a, k):
    regex = rx.plain_regex(multiple_language(a, k))
    step = Fraction(a, 10**k)
    for n in range(-400, 400):
        for scale in (1, 10, 100):
            v = Fraction(n, scale)
            text = format(Decimal(n) / Decimal(scale), "f")
            if text in ("-0", "-0.0", "-0.00"):
                continue
            assert full(regex, text) == ((v / step).denominator == 1), (a, k, text)


# -- patterns ----------------------------------------------------------------------------

PATTERNS = [
    "^[a-z]+$", "abc", "^a(b|cd)*e?$", "^(?:x|yz){2,3}$", "[0-9]", "^$", "^.{2,4}$", "a|^b", "c$",
    "^[^a-c]*$", "^(ab)+|ba$", "^a{0}b$", "^[\\-a]+$", "^\\.$", "^(a|b)?c{1,}$",
    "^(?:a*){2,3}$",  # empty copies pad the count: with a length limit "" and "a" stay words
]
alphabet = st.text(alphabet="abcdexyz0-.", max_size=7)


@SETTINGS
@given(s=alphabet)
def test_pattern_language_agrees_with_search(s):
    for p in PATTERNS:
        lang = rx.pattern_language(p)
        assert rx.matches(lang, s) == (re.search(p, s) is not None), (p, s)


@pytest.mark.parametrize(
    "pattern", ["a\\1", "(?=a)b", "\\bfoo", "^\\p{L}+$", "(?<!a)b", "(a|^b)c"]
)
def test_patterns_without_regular_translation_are_refused(pattern):
    with pytest.raises(rx.RegexUnsupported):
        rx.pattern_language(pattern)


def test_misplaced_anchors_make_empty_alternatives():
    assert rx.is_empty(rx.pattern_language("a^b"))
    assert rx.is_empty(rx.pattern_language("/^[0-9]{4}$/"))  # JS literal syntax: matches nothing
    assert rx.matches(rx.pattern_language("x$y?|^z"), "zq")
    assert rx.pattern_language("(ab)?") == rx.ANY_STRING  # an empty match is found everywhere


def test_ecma_classes_are_sound_for_both_dialects():
    digits = rx.pattern_language("^\\d+$")
    assert rx.matches(digits, "0123")
    assert not rx.matches(digits, "\u0663")  # Arabic-Indic three: \d in Python, not in ECMA-262
    not_space = rx.pattern_language("^\\S$")
    assert not rx.matches(not_space, "\ufeff") and not rx.matches(not_space, "\x1c")
    assert not rx.matches(rx.pattern_language("^a$"), "a\n")  # Python's $ would accept this


@SETTINGS
@given(s=alphabet, lo=st.integers(0, 6), span=st.integers(0, 4))
def test_with_length_counts_characters(s, lo, span):
    hi = lo + span
    for p in PATTERNS:
        lang = rx.pattern_language(p)
        limited = rx.with_length(lang, lo, hi)
        assert rx.matches(limited, s) == (rx.matches(lang, s) and lo <= len(s) <= hi), (p, s, lo, hi)


@SETTINGS
@given(s=alphabet, lo=st.integers(0, 6), span=st.integers(0, 4))
def test_a_kept_length_limit_counts_characters_in_every_automaton(s, lo, span):
    """``rx.counted`` keeps the limit as a limit: membership, the subset construction (a
    DFA operation) and the regex text written out all mean the same language."""
    hi = lo + span
    for p in PATTERNS:
        lang = rx.pattern_language(p)
        limited = rx.counted(lang, lo, hi)
        want = rx.matches(lang, s) and lo <= len(s) <= hi
        assert rx.matches(limited, s) == want, (p, s, lo, hi)
        assert rx.matches(rx.difference(limited, rx.NOTHING), s) == want, (p, s, lo, hi)  # through the product NFA
        assert (re.fullmatch(rx.plain_regex(limited), s) is not None) == want, (p, s, lo, hi)


GAPPY = ["^(?:ab){2,}$|^c{3}$", "^(?:(?:aa|b){2,3})*$", "^(?:abc)+x?$", "^a{5}$|^b{9,}$", "^(?:a|bcd)*e$"]


@pytest.mark.parametrize("pattern", PATTERNS + GAPPY)
def test_word_lengths_are_exact(pattern):
    lang = rx.pattern_language(pattern)
    limit = 12
    bits = rx.lengths(lang, limit)
    for k in range(limit + 1):
        exists = not rx.is_empty(rx.intersect(lang, rx.Rep(rx.ANY_CHAR, k, k)))
        assert bool(bits >> k & 1) == exists, (pattern, k)
    for lo in range(0, 8):
        for hi in range(lo, 12):
            c = rx.counted(lang, lo, hi)
            in_range = [k for k in range(lo, hi + 1) if bits >> k & 1]
            assert rx.min_len(c) == (in_range[0] if in_range else None), (pattern, lo, hi)
            assert rx.max_len(c) == (in_range[-1] if in_range else -1), (pattern, lo, hi)


def test_a_second_length_limit_meets_a_kept_one():
    kept = rx.counted(rx.pattern_language("^a*$"), 3, 6)
    both = rx.with_length(kept, 0, 5)
    assert [k for k in range(9) if rx.matches(both, "a" * k)] == [3, 4, 5]


def test_a_limit_too_large_to_write_out_is_kept_exact():
    words = rx.pattern_language("^(?:\\S+\\s+){0,29}\\S+$")
    limited = rx.with_length(words, 0, 300)
    assert isinstance(limited, rx.Counted)
    assert rx.matches(limited, " ".join(["x" * 9] * 30))  # 30 words, 299 characters
    assert rx.matches(limited, " ".join(["y" * 149, "z" * 150]))  # two long words (capping lost these)
    assert not rx.matches(limited, "w" * 301)
    assert not rx.matches(limited, " ".join(["a"] * 31))  # 31 words


# -- JSON string encodings ---------------------------------------------------------------

texts = st.text(max_size=8)


@SETTINGS
@given(s=texts)
def test_any_string_accepts_both_json_dumps_spellings(s):
    regex = rx.json_string_regex(rx.ANY_STRING)
    assert full(regex, json.dumps(s, ensure_ascii=False))
    assert full(regex, json.dumps(s, ensure_ascii=True))


@SETTINGS
@given(s=texts, lo=st.integers(0, 5), span=st.integers(0, 4))
def test_length_limited_strings_count_decoded_characters(s, lo, span):
    regex = rx.json_string_regex(rx.with_length(rx.ANY_STRING, lo, lo + span))
    assert full(regex, json.dumps(s, ensure_ascii=False)) == (lo <= len(s) <= lo + span)


def _encodings(s: str, choices) -> str:
    """One JSON spelling of ``s``: each character raw, short-escaped or \\u-escaped."""
    out = ['"']
    short = {'"': '\\"', "\\": "\\\\", "/": "\\/", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
    for ch, how in zip(s, choices):
        cp = ord(ch)
        if how == 0 and ch not in '"\\' and cp >= 0x20:
            out.append(ch)
        elif how == 1 and ch in short:
            out.append(short[ch])
        elif cp <= 0xFFFF:
            out.append("\\u%04X" % cp if how == 2 else "\\u%04x" % cp)
        else:
            hi, lo = 0xD800 + ((cp - 0x10000) >> 10), 0xDC00 + ((cp - 0x10000) & 0x3FF)
            out.append("\\u%04x\\u%04x" % (hi, lo))
    return "".join(out) + '"'


@SETTINGS
@given(s=st.text(alphabet=st.characters(max_codepoint=0x2FFF) | st.sampled_from('"\\/\n\t\x01ab'), max_size=6),
       choices=st.lists(st.integers(0, 3), min_size=6, max_size=6))
def test_constrained_strings_are_sound_under_any_spelling(s, choices):
    """Whatever spelling a terminal accepts decodes to a word of the language."""
    text = _encodings(s, choices)
    for p in ["^[a-z]+$", "ab", "^.{0,3}$", "^[^\"\\\\]*$", "/"]:
        lang = rx.pattern_language(p)
        for node in (lang, rx.with_length(lang, 1, 4)):
            if full(rx.json_string_regex(node), text):
                assert rx.matches(node, json.loads(text)), (p, text)


@SETTINGS
@given(words=st.lists(st.text(alphabet="ab\"\n", max_size=4), max_size=5), s=st.text(alphabet="ab\"\n", max_size=5))
def test_not_words_language(words, s):
    assert rx.matches(rx.not_words_language(words), s) == (s not in words)
    assert full(rx.json_string_regex(rx.not_words_language(words)), json.dumps(s)) == (s not in words)


@SETTINGS
@given(s=alphabet)
def test_dfa_boolean_operations(s):
    a, b = rx.pattern_language("^[a-c]+$"), rx.pattern_language("b")
    assert rx.matches(rx.intersect(a, b), s) == (rx.matches(a, s) and rx.matches(b, s))
    assert rx.matches(rx.difference(a, b), s) == (rx.matches(a, s) and not rx.matches(b, s))
    assert rx.matches(rx.complement(a), s) == (not rx.matches(a, s))


# -- formats -----------------------------------------------------------------------------

FORMAT_CASES = {
    "date": (["2020-02-29", "1999-12-31", "0001-01-01"], ["2019-02-29", "2020-13-01", "2020-1-01", "0000-01-01"]),
    "time": (["12:00:00Z", "23:59:59.5+05:30", "00:00:00z"], ["24:00:00Z", "12:00:00", "12:60:00Z"]),
    "date-time": (["2020-01-01T00:00:00Z", "2020-01-01t10:20:30.123-02:00"], ["2020-01-01 00:00:00Z", "2020-01-01T00:00:00"]),
    "email": (["a@example.com", "first.last+tag@sub.example.org"], ["a@", "a..b@example.com", "@example.com", "a@b"]),
    "uuid": (["123e4567-e89b-12d3-a456-426614174000"], ["123e4567e89b12d3a456426614174000", "123e4567-e89b-12d3-a456-42661417400"]),
    "ipv4": (["192.168.0.1", "0.0.0.0"], ["256.1.1.1", "01.1.1.1", "1.1.1"]),
    "ipv6": (["::1", "2001:db8::ff00:42:8329", "::ffff:192.0.2.1", "1:2:3:4:5:6:7:8"], ["1:2:3:4:5:6:7:8:9", ":::", "1::2::3"]),
    "uri": (["https://example.com/a?b=c#d", "mailto:a@b.c", "urn:isbn:0451450523"], ["example.com", "/relative", "http://a b"]),
    "hostname": (["example.com", "a-b.c"], ["-a.com", "a..b", "xn--X", "a" * 63 + ".com"]),
    "json-pointer": (["", "/a/b~0~1"], ["a", "/a~2"]),
}


@pytest.mark.parametrize("name", sorted(FORMAT_CASES))
def test_formats(name):
    good, bad = FORMAT_CASES[name]
    lang = format_language(name)
    for s in good:
        assert rx.matches(lang, s), (name, s)
    for s in bad:
        assert not rx.matches(lang, s), (name, s)


def test_unknown_format_has_no_language():
    assert format_language("int32") is None


@pytest.mark.parametrize("pattern", [
    "^[ab]{1,2}$", "^(a|ab)(b|)$", "^a?b?a?$", "^(?:ab|ba)*$", "^[a-c]{2}x?$", "^(?:a|b){0,3}b$", "^$", "^[ab]+$",
])
def test_count_words_equals_enumeration(pattern):
    import itertools

    n = rx.pattern_language(pattern)
    words = {"".join(w) for k in range(7) for w in itertools.product("abcx", repeat=k) if rx.matches(n, "".join(w))}
    finite = rx.max_len(n) != rx.INF
    assert rx.count_words(n, 10_000) == (len(words) if finite else 10_000)
    assert rx.count_words(n, 2) == min(2, len(words))
    limited = rx.with_length(n, 1, 3)
    assert rx.count_words(limited, 10_000) == len({w for w in words if 1 <= len(w) <= 3})
