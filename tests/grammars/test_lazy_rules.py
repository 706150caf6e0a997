"""Lazy nonterminals (``LazyRules``): rules made when a parse first predicts them.

A family of nonterminals, one per set of letters written, gives the words of distinct
letters; the same language written out as a finite grammar must give the same masks.
"""

from __future__ import annotations

import itertools

import pytest

from guided.grammars.earley import LazyRules
from guided.grammars.grammar import Grammar
from guided.grammars.lark_loader import load_lark

LETTERS = "abcd"


class DistinctLetters(LazyRules):
    """``@<seen>``: the rest of a word of distinct letters after those in ``seen``."""

    def __init__(self):
        self.asked: list[str] = []

    def __contains__(self, name):
        return name.startswith("@") and set(name[1:]) <= set(LETTERS)

    def nullable(self, name):
        return True

    def rules(self, name):
        self.asked.append(name)
        seen = name[1:]
        return [(f"L{c.upper()}", "@" + "".join(sorted(seen + c))) for c in LETTERS if c not in seen]


def _lazy_grammar() -> tuple[Grammar, DistinctLetters]:
    spec = load_lark("start: \"<\" rest \">\"\nrest: LA | LB | LC | LD\n" + "".join(f'L{c.upper()}: "{c}"\n' for c in LETTERS))
    lazy = DistinctLetters()
    rules = tuple(r for r in spec.rules if r[0] != "rest") + (("rest", ("@",)),)
    return Grammar.from_spec(type(spec)(spec.terminals, rules, spec.ignore, spec.start, spec.declared, lazy)), lazy


def _explicit_grammar() -> Grammar:
    words = [" ".join(f'"{c}"' for c in p) for n in range(1, len(LETTERS) + 1) for p in itertools.permutations(LETTERS, n)]
    return Grammar('start: "<" (' + " | ".join(words) + ')? ">"\n')


def test_lazy_families_give_the_explicit_grammars_masks(vocab, assert_same_masks):
    lazy, provider = _lazy_grammar()
    assert_same_masks(lazy.start(vocab), _explicit_grammar().start(vocab), walks=6, steps=8)
    state = lazy.start(vocab)
    assert state.advance_bytes(b"<dcba>").is_accepting()
    assert state.advance_bytes(b"<aba>") is None
    # only the sets a parse reached are ever expanded
    fresh, provider = _lazy_grammar()
    fresh.start(vocab).advance_bytes(b"<ab")
    assert set(provider.asked) <= {"@", "@a", "@ab"}


def test_a_lazy_name_the_provider_does_not_know_is_a_grammar_error():
    from guided.grammars.lark_loader import GrammarError

    spec = load_lark('start: "x"')
    with pytest.raises(GrammarError):
        Grammar.from_spec(type(spec)(spec.terminals, spec.rules + (("start", ("@zz",)),), spec.ignore, spec.start,
                                     spec.declared, DistinctLetters()))


def test_the_same_set_written_in_another_order_is_one_parser_state(vocab):
    """Right-recursive tail items are kept as their completion's effect, not their path."""
    lazy, _ = _lazy_grammar()
    state = lazy.start(vocab)
    # (the last letter is a lexeme still open: the same one in each)
    abc, bac, adc = (state.advance_bytes(x) for x in (b"<abc", b"<bac", b"<adc"))
    assert abc.cache_key() == bac.cache_key() != adc.cache_key()
    explicit = _explicit_grammar().start(vocab)  # written out, the two orders are two rules
    assert explicit.advance_bytes(b"<abc").cache_key() != explicit.advance_bytes(b"<bac").cache_key()
