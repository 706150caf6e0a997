"""The infilling checker agrees with brute-force enumeration of every filling.

Random grammars from a small family, random small vocabularies of real Llama-3 token strings,
random partial outputs with at most three hole positions.  Each decision step is checked on its
own too: the exact chart must agree, the relaxed chart may only err towards "completable", and
every witness must be a real word with the right number of tokens per hole.
"""

from __future__ import annotations

import functools
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from guided.diffusion import Hole, InfillingChecker, slots_of
from guided.diffusion.chart import Chart
from guided.grammars import Grammar

from .family import alphabet_tokens, make_grammar_text, random_parts, random_sentence, small_vocab
from .oracle import accepts, brute_force


@functools.lru_cache(maxsize=None)
def grammar_of(text: str) -> Grammar:
    return Grammar(text)


def case(seed: int, token_bytes):
    """A random grammar, vocabulary and partial output: either random parts, or a random word of
    the grammar spelled in tokens with a run of tokens turned into a hole (of the right size, or
    one off, or optional)."""
    rng = random.Random(seed)
    text, alphabet = make_grammar_text(rng)
    grammar = grammar_of(text)
    pool = alphabet_tokens(token_bytes, alphabet)
    if rng.random() < 0.5:
        vocab = small_vocab(pool, rng, rng.randint(4, 8))
        return grammar, vocab, random_parts(rng, vocab, alphabet)
    word = random_sentence(grammar, rng, alphabet)
    if word is None:
        vocab = small_vocab(pool, rng, rng.randint(4, 8))
        return grammar, vocab, random_parts(rng, vocab, alphabet)
    # the vocabulary: some pool tokens that occur in the word, its single bytes, a few others
    inside = [t for t in pool if t in word and len(t) > 1]
    singles = sorted({word[i : i + 1] for i in range(len(word))})
    others = [t for t in pool if t not in inside and t not in singles]
    toks = sorted(set(rng.sample(inside, min(3, len(inside))) + singles + rng.sample(others, min(2, len(others)))))
    from guided.vocab import Vocabulary

    vocab = Vocabulary(token_bytes=toks + [b""], special_ids=frozenset(), eos_ids=frozenset({len(toks)}))
    ids = split_greedy(word, toks, rng)
    if not ids:  # the empty word
        return grammar, vocab, [rng.choice([Hole(0), Hole(1), Hole.up_to(1)])]
    a = rng.randrange(len(ids))
    b = min(len(ids), a + rng.randint(1, 2))
    k = (b - a) + rng.choice([0, 0, 1, -1])
    hole = Hole(max(0, k)) if rng.random() < 0.75 else Hole.up_to(max(0, k))
    parts = []
    if a:
        parts.append(ids[:a])
    parts.append(hole)
    if b < len(ids):
        parts.append(ids[b:])
    return grammar, vocab, parts


def split_greedy(word: bytes, toks: list[bytes], rng: random.Random) -> list[int]:
    """Token ids spelling ``word`` (random choice among the tokens that match at each point)."""
    index = {t: i for i, t in enumerate(toks)}
    ids, i = [], 0
    while i < len(word):
        options = [t for t in toks if word.startswith(t, i)]
        t = rng.choice(options)
        ids.append(index[t])
        i += len(t)
    return ids


def expected(grammar, vocab, parts) -> bool:
    spec, tables = grammar.compiled.spec, grammar.compiled.tables
    return brute_force(spec, tables, slots_of(parts, vocab), vocab)


def check_witness(grammar, vocab, parts, result):
    spec, tables = grammar.compiled.spec, grammar.compiled.tables
    assert accepts(spec, tables, result.text(vocab)), (parts, result.text(vocab))
    holes = [p for p in parts if isinstance(p, Hole)]
    assert len(result.holes) == len(holes)
    for hole, ids in zip(holes, result.holes):
        if hole.optional:
            assert len(ids) <= hole.tokens
        else:
            assert len(ids) == hole.tokens


@functools.lru_cache(maxsize=None)
def llama_token_bytes() -> list[bytes]:
    from guided.tokenizers import load_tokenizer
    from guided.vocab import Vocabulary

    return Vocabulary.from_tokenizer(load_tokenizer("llama3")).token_bytes


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1))
def test_checker_matches_brute_force(seed):
    assert_agrees_with_brute_force(seed, InfillingChecker)


def assert_agrees_with_brute_force(seed: int, make_checker) -> None:
    """The checker ``make_checker(grammar, vocab)`` answers case ``seed`` as brute force does,
    with a witness of the right token counts when the answer is yes."""
    grammar, vocab, parts = case(seed, llama_token_bytes())
    want = expected(grammar, vocab, parts)
    result = make_checker(grammar, vocab).result(parts)
    assert result.ok == want, (grammar_text(grammar), parts, result.how)
    if want:
        check_witness(grammar, vocab, parts, result)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1))
def test_each_step_is_sound(seed):
    """The exact chart is exact; the relaxed chart never refutes a completable output."""
    grammar, vocab, parts = case(seed, llama_token_bytes())
    want = expected(grammar, vocab, parts)
    checker = InfillingChecker(grammar, vocab)
    slots = slots_of(parts, vocab)
    assert Chart(checker.lexer, vocab).run(slots) == want
    relaxed, _, _ = checker._relaxed_slots(slots)
    if want:
        assert Chart(checker.lexer, vocab, weighted=True).run(relaxed)


def test_both_answers_are_exercised():
    """Over a fixed batch of random cases both answers occur often, and all agree."""
    counts = {True: 0, False: 0}
    how: dict = {}
    for seed in range(120):
        grammar, vocab, parts = case(10_000 + seed, llama_token_bytes())
        want = expected(grammar, vocab, parts)
        result = InfillingChecker(grammar, vocab).result(parts)
        assert result.ok == want, (grammar_text(grammar), parts)
        counts[want] += 1
        how[result.how] = how.get(result.how, 0) + 1
    assert counts[True] >= 20 and counts[False] >= 20, counts
    assert how.get("exact", 0) and how.get("relaxed", 0), how


def grammar_text(grammar) -> str:
    return grammar.text.strip()


# -- hand-picked cases: parts of lexemes and of characters ---------------------------------------


def test_hole_inside_a_lexeme():
    grammar = Grammar('start: STR\nSTR: /"[a-z]*"/')
    toks = [b'"', b"ab", b"c", b'c"', b'd"']
    vocab = small_from(toks)
    checker = InfillingChecker(grammar, vocab)
    assert checker.check([b'"ab', Hole(1), b'"'])  # the hole holds the middle of the string
    assert checker.check([b'"ab', Hole(1)])  # ... or its end: c" / d"
    assert not checker.check([b'"ab', Hole(2), b"x"])  # x is no lexeme
    assert checker.check([b'"', Hole(2), b'd"'])
    assert not checker.check([Hole(1), b"ab"])  # no single token opens the string
    assert checker.check([Hole(2), b"ab", Hole.up_to(1)])


def test_hole_holds_half_a_character():
    grammar = Grammar('start: "[" W "]"\nW: /\\w+/')
    e = "é".encode()
    vocab = small_from([b"[", b"]", e[:1], e[1:], b"a"])
    checker = InfillingChecker(grammar, vocab)
    assert checker.check([b"[" + e[:1], Hole(1), b"]"])  # the hole must be the second byte
    assert checker.check([b"[" + e[:1], Hole(1), b"a]"])  # "[éa]"
    assert not checker.check([b"[" + e[:1], Hole(1), e[1:] + b"]"])  # a stray continuation byte never lexes
    assert checker.check([b"[", Hole(2), b"]"])  # é as two byte tokens (or "aa")
    r = checker.result([b"[" + e[:1], Hole(1), b"]"])
    assert r.text(vocab) == b"[" + e + b"]"


def test_greedy_lexing_is_what_counts():
    # "aab": greedy lexing cuts "aa" (A) then "b" (C); "a" "ab" (A B) is never produced
    grammar = Grammar("start: A B\nA: /a+/\nB: /ab/\nC: /b/")
    vocab = small_from([b"a", b"b", b"ab"])
    checker = InfillingChecker(grammar, vocab)
    assert not checker.check([b"aa", Hole(1)])  # "aab" lexes as A C, "aaa" as A
    assert checker.check([Hole(1), b"ab"]) is False  # "aab" / "bab" / "abab": never A then B
    grammar2 = Grammar("start: A C\nA: /a+/\nB: /ab/\nC: /b/")
    assert InfillingChecker(grammar2, vocab).check([b"aa", Hole(1)])


def test_empty_and_optional_holes():
    grammar = Grammar('start: "(" ")"')
    vocab = small_from([b"(", b")", b"()"])
    checker = InfillingChecker(grammar, vocab)
    assert checker.check([Hole(1)])  # "()"
    assert checker.check([Hole(2)])  # "(" ")"
    assert not checker.check([Hole(3)])
    assert checker.check([Hole.up_to(3)])
    assert not checker.check([Hole(0)])
    assert checker.witness([b"(", Hole.up_to(2)]) == [[1]]


def small_from(toks: list[bytes]):
    from guided.vocab import Vocabulary

    return Vocabulary(token_bytes=list(toks) + [b""], special_ids=frozenset(), eos_ids=frozenset({len(toks)}))
