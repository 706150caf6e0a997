"""Engine speed-ups keep masks exact: hash-consed Earley columns, interned parser states,
the bounded mask cache, and the plain-Python tails of the vectorised token walks."""

import numpy as np
import pytest

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
    for prefix in prefixes * 2:
        fresh = Grammar(LIST).start(vocab).advance_bytes(prefix)
        got = shared_state.advance_bytes(prefix)
        assert len(tables.masks) <= 2
        np.testing.assert_array_equal(got.allowed_mask(), fresh.allowed_mask())


@pytest.mark.parametrize("name,text", [("json", '{"a": [1, 2.5e3, "x\\u00e9 \u20ac"], "b": null}'), ("sql", "SELECT a FROM t WHERE x = 'q'")])
def test_python_tails_equal_the_vectorised_walks(vocab, monkeypatch, name, text):
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
