"""``Grammar`` accepts exactly what lark's own parser accepts, and its masks are exact."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lark import Lark

from guided.grammars import Grammar, load_grammar

LIST = r"""
start: value
?value: "[" [value ("," value)*] "]" | NUMBER | NAME | "true" | STRING
NUMBER: /-?[0-9]+(\.[0-9]+)?/
NAME: /[a-z]+/
STRING: /"[^"\n]*"/
%ignore /[ \n]+/
"""
LIST_PIECES = ["[", "]", ",", " ", "\n", "1", "-", ".", "5", "ab", "true", "tru", '"', "x", "\u00e9", "\u20ac"]

# ambiguous: Earley, not LALR
AMBIGUOUS = r"""
start: e
e: e "+" e | e "*" e | "(" e ")" | NUMBER | e e
NUMBER: /[0-9]+/
%ignore " "
"""
AMBIGUOUS_PIECES = ["1", "23", "+", "*", "(", ")", " "]

# keywords vs names (string literals beat regexes), terminal priorities, comments ignored.
# (Lark's lexer tries terminals by priority before length, ours takes the longest match and
# then the priority: with FLOAT below INT, lark would never lex "2." as a FLOAT.)
KEYWORDS = r"""
start: stmt*
stmt: "let" NAME "=" expr ";" | NAME "=" expr ";" | "print" expr ";"
?expr: atom ("+" atom)*
?atom: NAME | INT | FLOAT
NAME: /[a-z_]+/
INT.2: /[0-9]+/
FLOAT.3: /[0-9]+\.[0-9]*/
COMMENT: /#[^\n]*/
%ignore /\s+/
%ignore COMMENT
"""
KEYWORDS_PIECES = ["let", "print", "x", "lety", " ", "=", "1", "2.", "5", ";", "+", "\n", "#", "printx"]

CASES = {
    "list": (LIST, LIST_PIECES, dict(parser="lalr")),
    "ambiguous": (AMBIGUOUS, AMBIGUOUS_PIECES, dict(parser="earley", lexer="dynamic")),
    "keywords": (KEYWORDS, KEYWORDS_PIECES, dict(parser="lalr")),
}
_GRAMMARS: dict = {}


def grammar_and_oracle(name):
    if name not in _GRAMMARS:
        text, _, options = CASES[name]
        _GRAMMARS[name] = (Grammar(text), Lark(text, **options))
    return _GRAMMARS[name]


def lark_accepts(oracle, text):
    try:
        oracle.parse(text)
        return True
    except Exception:
        return False


def accepts(state, data: bytes) -> bool:
    state = state.advance_bytes(data)
    return state is not None and state.is_live() and state.is_accepting()


@pytest.mark.parametrize("name", sorted(CASES))
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_accepts_exactly_what_lark_accepts(name, vocab, data):
    grammar, oracle = grammar_and_oracle(name)
    pieces = data.draw(st.lists(st.sampled_from(CASES[name][1]), max_size=12))
    text = "".join(pieces)
    start = grammar.start(vocab)
    expected = lark_accepts(oracle, text)
    assert accepts(start, text.encode()) == expected, text
    if expected:  # every prefix of a sentence is live
        raw = text.encode()
        for k in range(len(raw)):
            s = start.advance_bytes(raw[:k])
            assert s is not None and s.is_live(), (text, k)


@pytest.mark.parametrize("name", sorted(CASES))
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_sentences_tokenised_are_allowed_token_by_token(name, vocab, llama3, data):
    """Each real token of an accepted sentence is in the mask; EOS exactly at the end."""
    grammar, oracle = grammar_and_oracle(name)
    text = "".join(data.draw(st.lists(st.sampled_from(CASES[name][1]), max_size=12)))
    if not lark_accepts(oracle, text):
        return
    state = grammar.start(vocab)
    eos = min(vocab.eos_ids)
    for t in llama3.encode(text, add_special_tokens=False):
        mask = state.allowed_mask()
        assert mask[t], (text, vocab.token_bytes[t])
        assert mask[eos] == state.is_accepting()
        state = state.advance(t)
        assert state is not None
    assert state.is_accepting() and state.allowed_mask()[eos]


def sample_ids(mask, vocab, rng, n=3000):
    allowed = np.flatnonzero(mask)
    if len(allowed) > n:
        allowed = rng.choice(allowed, n, replace=False)
    others = rng.choice(vocab.size, n, replace=False)
    return np.unique(np.concatenate([allowed, others, sorted(vocab.eos_ids)]))


@pytest.mark.parametrize("name", sorted(CASES))
@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mask_agrees_with_single_checks_on_random_walks(name, vocab, data):
    """Follow random allowed tokens; the mask equals one-by-one checks; never a dead end."""
    grammar, _ = grammar_and_oracle(name)
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    state = grammar.start(vocab)
    for _ in range(5):
        mask = state.allowed_mask()
        ids = sample_ids(mask, vocab, rng)
        single = np.array([state.allows(int(i)) for i in ids])
        fresh = type(state)(state.tables, state.branches)  # no cached mask: the real walk
        assert np.array_equal(np.array([fresh.advance(int(i)) is not None for i in ids]), mask[ids])
        assert np.array_equal(single, mask[ids])
        allowed = np.flatnonzero(mask)
        assert len(allowed), "dead end"
        t = int(rng.choice(allowed))
        if t in vocab.eos_ids:
            assert state.is_accepting()
            return
        state = state.advance(t)
        assert state is not None and state.is_live()


def test_full_mask_equals_single_checks_everywhere(vocab):
    """All 128k tokens, at states inside a string, between lexemes and mid-UTF-8."""
    g = load_grammar("json")
    s0 = g.start(vocab)
    for prefix in [b"", b'{"a', b'{"a":', b'[1, "\xc3', b"[1", b"[tr"]:
        state = s0.advance_bytes(prefix)
        mask = state.allowed_mask()
        fresh = type(state)(state.tables, state.branches)
        single = np.array([fresh.advance(i) is not None for i in range(vocab.size)])
        assert np.array_equal(mask, single), prefix


@pytest.mark.parametrize(
    "name,prefixes",
    [
        # after an operator, mid-name, mid-number with exponent, three brackets deep
        ("arithmetic", [b"f(x, 2) * -(", b"((a + b_1", b"1.5e", b"((((a + b) * c)"]),
        # keyword contexts (cold lexeme starts with different allowed keywords), inside a string
        ("sql", [b"SELECT u.name, COUNT(*) AS n FROM users u LEFT JOIN orders o ON o.id = u.id WHERE u.x > 1 GR",
                 b"SELECT a FROM t WHERE b IN ('x', 'y''", b"select distinct p.title from posts p where"]),
    ],
)
def test_cold_masks_equal_single_checks_everywhere(vocab, name, prefixes):
    """All 128k tokens at cold parser and lexer states (the first mask of each configuration)."""
    from guided.grammars.shipped import shipped_grammar_path

    s0 = Grammar(shipped_grammar_path(name).read_text()).start(vocab)  # fresh: nothing cached
    for prefix in prefixes:
        state = s0.advance_bytes(prefix)
        assert state is not None, prefix
        mask = state.allowed_mask()
        fresh = type(state)(state.tables, state.branches)
        single = np.array([fresh.advance(i) is not None for i in range(vocab.size)])
        assert np.array_equal(mask, single), (prefix, np.flatnonzero(mask != single)[:10])


def test_tokens_crossing_lexemes(vocab):
    g = load_grammar("json")
    state = g.start(vocab).advance_bytes(b'{"key')
    tid = vocab.bytes_to_id
    mask = state.allowed_mask()
    assert mask[tid[b'":']] and mask[tid[b"_"]] and not mask[tid[b'"}']]
    state = state.advance(tid[b'":'])
    mask = state.allowed_mask()
    assert mask[tid[b' "']] and mask[tid[b" ["]] and mask[tid[b" true"]] and not mask[tid[b" }"]]
    assert not mask[min(vocab.eos_ids)]
    after = state.advance_bytes(b' "x"}')
    assert after.is_accepting() and after.allowed_mask()[min(vocab.eos_ids)]


def test_states_are_immutable_and_shareable(vocab):
    g = load_grammar("json")
    s = g.start(vocab).advance_bytes(b"[1")
    a = s.advance_bytes(b"2]")
    b = s.advance_bytes(b", 3]")
    assert a.is_accepting() and b.is_accepting()
    assert not s.is_accepting() and s.advance_bytes(b"]").is_accepting()


def test_cached_mask_is_the_mask_once_walked_and_none_before(vocab):
    g = Grammar(LIST)  # a fresh grammar: nothing cached yet
    start = g.start(vocab)
    s = start.advance_bytes(b"[1, ")
    assert s.cached_mask() is None
    mask = s.allowed_mask()
    again = start.advance_bytes(b"[1, ")  # a new state object at the same configuration
    assert again.cached_mask() is not None and np.array_equal(again.cached_mask(), mask)
    done = start.advance_bytes(b"[1]")
    assert np.array_equal(done.allowed_mask(), done.cached_mask())
    assert done.cached_mask()[sorted(vocab.eos_ids)].all()  # EOS where accepting


@pytest.mark.parametrize(
    "name, text, ok",
    [
        ("json", '{"a": [1, -2.5e+3, true, null, "\\u00e9\\n"], "b": {}}', True),
        ("json", '{"a": 01}', False),
        ("json", '["\x01"]', False),
        ("arithmetic", "f(x, 2) * -(3 + 4.5e2) ** 2 % y", True),
        ("arithmetic", "1 +", False),
        ("sql", "SELECT a, COUNT(*) AS n FROM t JOIN u ON t.id = u.id WHERE x > 1 GROUP BY a ORDER BY n DESC LIMIT 5;", True),
        ("sql", "select distinct name from users where name like 'a%' and age between 1 and 9", True),
        ("sql", "SELECT a FROM", False),
        ("sql", "SELECT a FROM t WHERE", False),
        ("python", "def f(x):\n    return [i for i in x if i]\n", True),
        ("python", "def f(x):\n  return 1\n   y = 2\n", False),
    ],
)
def test_shipped_grammars(vocab, name, text, ok):
    state = load_grammar(name).start(vocab)
    assert accepts(state, text.encode()) == ok


def test_load_lark_file(tmp_path, vocab):
    path = tmp_path / "pairs.lark"
    path.write_text('start: pair+\npair: KEY "=" VALUE ";"\nKEY: /[a-z]+/\nVALUE: /[0-9]+/\n%import common.WS\n%ignore WS\n')
    state = Grammar.from_file(path).start(vocab)
    assert accepts(state, b"a = 1; bc=22;")
    assert not accepts(state, b"a = 1")
