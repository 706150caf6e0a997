"""Engine speed-ups keep masks exact: hash-consed Earley columns, interned parser states,
the bounded mask cache, the plain-Python tails of the vectorised token walks, and the
compiled (numba) walks, which must give what the numpy walks give."""

import contextlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from guided.grammars import Grammar, load_grammar
from guided.grammars import lexer as lexer_mod
from guided.grammars.grammar import _trie_of

LIST = r"""
start: "[" [item ("," item)*] "]"
item: NUMBER | "[" [item ("," item)*] "]"
NUMBER: /[0-9]+/
%ignore " "
"""


def _normalised(walk):
    groups: dict = {}
    for q, ids, end, begin, *_ in walk.groups:
        groups.setdefault(q, set()).update(zip(ids.tolist(), end.tolist(), begin.tolist()))
    return set(walk.inside_ids.tolist()), groups


def test_equal_configurations_share_one_parser_state(vocab):
    grammar = Grammar(LIST)
    start = grammar.start(vocab)
    two = start.advance_bytes(b"[1,2,")
    four = start.advance_bytes(b"[1,2,3,4,")
    nested = start.advance_bytes(b"[[1,2,")  # one more list to close
    assert two.branches[0][0] is four.branches[0][0]  # left-recursive repetition: same items, same origins
    assert two.branches[0][0] is not nested.branches[0][0]
    assert two.allowed_mask() is four.allowed_mask()  # one cached mask serves both positions


def test_masks_match_a_fresh_grammar_and_a_tiny_cache(vocab):
    shared = Grammar(LIST)
    prefixes = [b"[", b"[1", b"[1,", b"[1, [2", b"[1, [2]", b"[1, [2],", b"[[[", b"[[[1]]", b"[[[1]],3"]
    shared_state = shared.start(vocab)
    tables = shared_state.tables
    tables.max_masks = 2  # evict constantly: recomputed masks must not change
    tables.max_walks = tables.max_group_walks = 1  # and the walks they are made of
    for prefix in prefixes * 2:
        fresh = Grammar(LIST).start(vocab).advance_bytes(prefix)
        got = shared_state.advance_bytes(prefix)
        assert len(tables.masks) <= 2 and len(tables.top) <= 1 and len(tables.group_walks) <= 1
        np.testing.assert_array_equal(got.allowed_mask(), fresh.allowed_mask())


@pytest.mark.parametrize("name,text", [("json", '{"a": [1, 2.5e3, "x\\u00e9 \u20ac"], "b": null}'), ("sql", "SELECT a FROM t WHERE x = 'q'")])
def test_python_tails_equal_the_vectorised_walks(vocab, monkeypatch, name, text):
    monkeypatch.setattr(lexer_mod, "_KERNELS", None)  # the numpy walks (and their Python tails)
    grammar = load_grammar(name)
    lex = grammar.compiled.lexer
    grammar.start(vocab).advance_bytes(text.encode())
    trie = _trie_of(vocab)
    states = list(range(len(lex.pairs)))[:24]
    for q in states:
        monkeypatch.setattr(lexer_mod, "_PY_TAIL", 48)
        fast = lexer_mod.trie_walk(lex, trie, q, None, vocab.size)
        monkeypatch.setattr(lexer_mod, "_PY_TAIL", 0)
        slow = lexer_mod.trie_walk(lex, trie, q, None, vocab.size)
        assert _normalised(fast) == _normalised(slow)
        for _, ids, end, _, _ in fast.groups[:2]:
            for q2 in states[:4]:
                monkeypatch.setattr(lexer_mod, "_PY_TAIL", 48)
                a = lexer_mod.walk_tokens(lex, vocab, q2, ids, end, False)
                monkeypatch.setattr(lexer_mod, "_PY_TAIL", 0)
                b = lexer_mod.walk_tokens(lex, vocab, q2, ids, end, False)
                assert _normalised(a) == _normalised(b)


def _kernels_or_skip():
    kernels = lexer_mod._kernels()
    if kernels is None:
        pytest.skip("numba is not installed: only the numpy walks exist")
    return kernels


@contextlib.contextmanager
def _engine(kernels):
    """Walk with the compiled kernels, or (``None``) with numpy; restored afterwards."""
    saved = lexer_mod._KERNELS
    lexer_mod._KERNELS = kernels
    try:
        yield
    finally:
        lexer_mod._KERNELS = saved


def _subtree_ids(trie, nodes):
    byte, lo, hi, *_ = lexer_mod._flat_trie(trie)
    return set(trie.sorted_ids[lexer_mod._ranges(lo[nodes], hi[nodes])].tolist())


@pytest.mark.parametrize(
    "name,text",
    [
        ("json", '{"a": [1, 2.5e3, "x\\u00e9 \u20ac\\n"], "b": null, "c": tru'),
        ("sql", "SELECT u.name, COUNT(*) AS n FROM users u WHERE x = 'q''s' AND y IN (1, 2) ORDER BY n"),
        ("arithmetic", "f(x, 2) * -(3 + 4.5e2) ** 2 % y_1"),
        ("python", "def f(x):\n    return [i for i in x if i]  # done\n"),
    ],
)
def test_compiled_walks_equal_numpy_walks(vocab, name, text):
    """Top walks, group walks down the trie from nodes of any level, and token walks."""
    kernels = _kernels_or_skip()
    grammar = load_grammar(name)
    lex = grammar.compiled.lexer
    grammar.start(vocab).advance_bytes(text.encode())
    trie = _trie_of(vocab)
    starts = sorted(set(lex._starts.values()))[:2]
    rng = np.random.default_rng(0)
    others = rng.choice(len(lex.pairs), size=min(8, len(lex.pairs)), replace=False).tolist()
    for q in sorted(set(others) | set(starts)):
        with _engine(kernels):
            fast = lexer_mod.trie_walk(lex, trie, q, None, vocab.size)
        with _engine(None):
            slow = lexer_mod.trie_walk(lex, trie, q, None, vocab.size)
        assert _normalised(fast) == _normalised(slow), q
        np.testing.assert_array_equal(fast.inside, slow.inside)
        for group in fast.groups[:2]:
            _, ids, end, begin, nodes = group
            assert nodes is not None and _subtree_ids(trie, nodes) == set(ids.tolist())
            for q2 in starts:
                with _engine(kernels):
                    down_trie = lexer_mod.walk_group(lex, trie, vocab, q2, group, nodes)
                    by_token = lexer_mod.walk_tokens(lex, vocab, q2, ids, end, False)
                with _engine(None):
                    reference = lexer_mod.walk_tokens(lex, vocab, q2, ids, end, False)
                assert _normalised(down_trie) == _normalised(reference)
                assert _normalised(by_token) == _normalised(reference)


SMALL = {
    "arithmetic": ["1", "+", "(", ")", "x", " ", "**", "f(", ".5", "e3", ",", "-"],
    "sql": ["SELECT ", "a", ", ", "b", " FROM ", "t", " WHERE ", "x", " = ", "'q'", " AND ", "(", ")", "1"],
}


@pytest.mark.parametrize("name", sorted(SMALL))
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_masks_without_kernels_equal_masks_with_them(name, vocab, data):
    """Fresh grammars, one per walk engine: same masks at every prefix of a random text."""
    kernels = _kernels_or_skip()
    text = "".join(data.draw(st.lists(st.sampled_from(SMALL[name]), min_size=1, max_size=6))).encode()
    from guided.grammars.shipped import shipped_grammar_path

    source = shipped_grammar_path(name).read_text()
    masks = []
    for engine in (kernels, None):
        with _engine(engine):
            state = Grammar(source).start(vocab)
            got = []
            for k in range(0, len(text) + 1, 3):
                s = state.advance_bytes(text[:k])
                if s is None:
                    break
                got.append(s.allowed_mask().copy())
        masks.append(got)
    assert len(masks[0]) == len(masks[1])
    for a, b in zip(*masks):
        np.testing.assert_array_equal(a, b)
