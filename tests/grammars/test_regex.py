"""``Regex`` over the real Llama-3 vocabulary: masks are exact and agree with single checks."""

import re

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from guided.constraint import unpack_mask
from guided.grammars import Regex
from guided.grammars.bytedfa import RegexError

PATTERNS = [
    r"-?(0|[1-9][0-9]*)(\.[0-9]+)?",
    r"[a-z]+(_[a-z]+)*",
    r'"(?:[^"\\]|\\.)*"',
    r"(?i)select|insert",
    r"\w+ \w+",
    r"[\u00e9\u20ac\U0001d11e]+",  # multi-byte only: tokens end mid-character
]


def one_by_one(state, vocab):
    return np.array([state.allows(i) for i in range(vocab.size)])


@pytest.mark.parametrize("pattern", PATTERNS)
def test_mask_matches_single_checks_along_a_match(pattern, vocab, llama3):
    constraint = Regex(pattern)
    text = {
        PATTERNS[0]: "-120.5",
        PATTERNS[1]: "foo_bar",
        PATTERNS[2]: '"a\\"b"',
        PATTERNS[3]: "SeLect",
        PATTERNS[4]: "hello world",
        PATTERNS[5]: "\u00e9\u20ac\U0001d11e",
    }[pattern]
    ids = llama3.encode(text, add_special_tokens=False)
    state = constraint.start(vocab)
    for k, t in enumerate(ids):
        mask = state.allowed_mask()
        if k < 2:  # the full one-by-one comparison is slow in Python; do it at two states
            assert np.array_equal(mask, one_by_one(state, vocab))
        assert mask[t]
        assert np.array_equal(unpack_mask(state.allowed_bitmask(), vocab.size), mask)
        state = state.advance(t)
        assert state is not None
    assert state.is_accepting()
    mask = state.allowed_mask()
    assert all(mask[e] for e in vocab.eos_ids)
    assert not any(mask[i] for i in vocab.special_ids - vocab.eos_ids)
    assert state.advance(min(vocab.eos_ids)).is_finished()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.data())
def test_allowed_tokens_always_lead_to_a_match(vocab, data):
    """Never a dead end: follow random allowed tokens, the state stays live and can finish."""
    pattern = data.draw(st.sampled_from(PATTERNS))
    state = Regex(pattern).start(vocab)
    for _ in range(6):
        allowed = np.flatnonzero(state.allowed_mask())
        assert len(allowed)
        t = int(data.draw(st.sampled_from(allowed.tolist())))
        if t in vocab.eos_ids:
            assert state.is_accepting()
            return
        state = state.advance(t)
        assert state is not None
    # the bytes so far extend to a full match: brute-force a completion with the DFA
    dfa = state.tables.dfa
    s = state.state
    seen = {s}
    frontier = [s]
    while not any(dfa.accepting[x] for x in frontier):
        frontier = [int(n) for x in frontier for n in dfa.trans[x] if n >= 0 and n not in seen]
        seen.update(frontier)
        assert frontier


def test_eos_only_when_accepting(vocab):
    state = Regex(r"ab").start(vocab)
    eos = min(vocab.eos_ids)
    assert not state.allowed_mask()[eos] and state.advance(eos) is None
    state = state.advance_bytes(b"ab")
    assert state.allowed_mask()[eos] and state.is_accepting()
    assert state.allowed_mask().sum() == len(vocab.eos_ids)


def test_states_are_immutable_values(vocab):
    s0 = Regex(r"[0-9]+").start(vocab)
    s1 = s0.advance_bytes(b"12")
    assert s0.advance_bytes(b"3") is not None and s0.state == 0
    assert s1 == s0.advance_bytes(b"1").advance_bytes(b"2")


def test_bad_regex_raises_at_construction():
    with pytest.raises(RegexError, match="lookahead"):
        Regex(r"a(?=b)")
    with pytest.raises(RegexError):
        Regex(r"(")


def test_cached_mask_is_the_mask_once_walked_and_none_before(vocab):
    state = Regex(r"[a-f]{3}[0-9]+").start(vocab).advance_bytes(b"ab")
    assert state.cached_mask() is None
    mask = state.allowed_mask()
    assert np.array_equal(state.cached_mask(), mask)


def test_long_bounded_repeats_compile_and_match_exactly(vocab):
    r = Regex(r"[^\n]{0,100}\n")
    state = r.start(vocab)
    assert state.advance_bytes(("é" * 100 + "\n").encode()).is_accepting()
    assert state.advance_bytes(("x" * 101).encode()) is None
    assert state.advance_bytes(b"ab\n").is_accepting()


def test_compilation_has_a_time_budget(monkeypatch):
    from guided.grammars import bytedfa
    from guided.grammars.bytedfa import RegexTooLargeError

    monkeypatch.setattr(bytedfa, "MAX_COMPILE_SECONDS", 0.2)
    with pytest.raises(RegexTooLargeError, match="to compile"):
        bytedfa._compile(r"\w{3,300}", 0, 50_000)  # uncached: a Unicode class repeated 300 times
