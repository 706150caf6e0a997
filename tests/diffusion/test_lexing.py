"""The greedy lexer transducer: token classes, agreement with a direct lexer, and the promise
that every word it accepts is accepted by the causal (contextual) Grammar constraint too."""

from __future__ import annotations

import functools
import random

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from guided.diffusion import parse_bytes
from guided.diffusion.checker import lexer_for
from guided.grammars import Grammar, load_grammar

from .family import TEMPLATES, make_grammar_text, random_sentence
from .oracle import accepts, lex_all


def test_token_classes_match_single_walks(llama3_vocab):
    lexer = lexer_for(load_grammar("json"))
    vocab = llama3_vocab
    rng = random.Random(0)
    ids = np.flatnonzero(vocab.usable).tolist()
    states = {lexer.q0}
    for c in lexer.classes(lexer.q0, vocab):
        states.add(c.end)
    for q in sorted(states)[:12]:
        by_id = {}
        for c in lexer.classes(q, vocab):
            assert len(c.ids)
            for i in c.ids.tolist():
                by_id[i] = (c.labels, c.end)
        for i in rng.sample(ids, 2000):
            assert by_id.get(i) == lexer.walk(q, vocab.token_bytes[i]), (q, vocab.token_bytes[i])


def test_classes_cover_every_token_once(llama3_vocab):
    lexer = lexer_for(load_grammar("arithmetic"))
    seen = np.zeros(llama3_vocab.size, dtype=int)
    for c in lexer.classes(lexer.q0, llama3_vocab):
        seen[c.ids] += 1
    assert seen.max() == 1
    assert not seen[list(llama3_vocab.special_ids)].any()


@functools.lru_cache(maxsize=None)
def grammar_of(text: str) -> Grammar:
    return Grammar(text)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1))
def test_lexer_matches_direct_lexing(seed):
    rng = random.Random(seed)
    text, alphabet = make_grammar_text(rng)
    grammar = grammar_of(text)
    lexer = lexer_for(grammar)
    tables = grammar.compiled.tables
    letters = list(alphabet.encode("utf-8"))
    for _ in range(20):
        data = bytes(rng.choices(letters, k=rng.randint(0, 8)))
        want = lex_all(grammar.compiled.spec, tables, data)
        got = lexer.lex_bytes(data)
        if want is None:
            assert got is None, data
            continue
        assert got is not None, data
        # expand the labels (ties, ignorable ties) into terminal sequences
        seqs = [()]
        for lab in got:
            terms, skip = lexer.labels[lab]
            seqs = [s + (t,) for s in seqs for t in sorted(terms)] + (seqs if skip else [])
        assert set(seqs) == set(want), data
        assert parse_bytes(lexer, data) == accepts(grammar.compiled.spec, tables, data)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1))
def test_accepted_words_parse_with_the_grammar_constraint(seed, llama3_vocab):
    """Greedy lexing over all terminals accepts a subset of what the contextual lexer accepts."""
    rng = random.Random(seed)
    text, alphabet = make_grammar_text(rng)
    grammar = grammar_of(text)
    lexer = lexer_for(grammar)
    state0 = grammar.start(llama3_vocab)
    for _ in range(10):
        word = random_sentence(grammar, rng, alphabet)
        if word is None:
            continue
        # mutate a little: the property must hold for every accepted string
        if word and rng.random() < 0.5:
            k = rng.randrange(len(word))
            word = word[:k] + word[k + 1 :]
        if parse_bytes(lexer, word):
            end = state0.advance_bytes(word)
            assert end is not None and end.is_accepting(), (text, word)


def test_shipped_grammars_load():
    for name in ("json", "arithmetic", "sql"):
        lexer = lexer_for(load_grammar(name))
        assert lexer.lex_bytes(b"") in ((), None)
    assert set(TEMPLATES) >= {"expr", "list", "greedy", "pairs", "ties"}
