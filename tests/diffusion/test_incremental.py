"""Incremental charts give the answers of fresh ones, and reuse the work before the changed slot."""

from __future__ import annotations

import random

from guided.diffusion import Hole, InfillingChecker, canvas_parts, slots_of
from guided.diffusion.chart import Chart
from guided.grammars import Grammar, load_grammar
from guided.vocab import Vocabulary

from .oracle import brute_force

GRAMMAR = r"""
start: "[" [v ("," v)*] "]"
?v: NUM | start
NUM: /[0-9]+/
%ignore " "
"""


def small_vocab():
    toks = [b"[", b"]", b",", b"1", b" ", b"[[", b"]]", b"1,"]
    return Vocabulary(token_bytes=toks + [b""], special_ids=frozenset(), eos_ids=frozenset({len(toks)}))


def test_filling_one_position_at_a_time_matches_fresh_charts():
    grammar = Grammar(GRAMMAR)
    vocab = small_vocab()
    spec, tables = grammar.compiled.spec, grammar.compiled.tables
    rng = random.Random(0)
    mask = 99
    for trial in range(10):
        n = rng.randint(3, 4)
        canvas = [mask] * n
        exact = Chart(InfillingChecker(grammar, vocab).lexer, vocab)  # one chart, reused across steps
        relaxed = Chart(exact.lexer, vocab, weighted=True)
        order = rng.sample(range(n), n)
        for pos in order:
            for cand in rng.sample(range(vocab.size - 1), 3):
                trial_canvas = canvas[:pos] + [cand] + canvas[pos + 1 :]
                parts = canvas_parts(trial_canvas, mask, vocab.eos_ids)
                slots = slots_of(parts, vocab)
                want = brute_force(spec, tables, slots, vocab)
                assert exact.run(slots) == want
                assert Chart(exact.lexer, vocab).run(slots) == want
                rslots, _, _ = InfillingChecker._relaxed_slots(slots)
                assert relaxed.run(rslots) or not want
                if want:
                    canvas = trial_canvas
                    break


def test_reuse_keeps_the_prefix(llama3_tokenizer):
    grammar = load_grammar("json")
    checker = InfillingChecker(grammar, llama3_tokenizer)
    tok = llama3_tokenizer
    prefix = tok.encode('{"a": [1, 2, 3], "b": {"c": "d"}, "e": ', add_special_tokens=False)
    chart = checker.exact_chart
    slots = slots_of([prefix, Hole(2), tok.encode("}", add_special_tokens=False)], checker.vocab)
    assert chart.run(slots)
    fresh_work = chart.items_built
    # fill the first hole position: the nodes before it are kept, far less work is redone
    filled = slots_of([prefix, tok.encode("1", add_special_tokens=False), Hole(1), tok.encode("}", add_special_tokens=False)], checker.vocab)
    kept_before = sum(1 for k in chart.nodes if k[0] != "F" and k[1] < len(prefix))
    assert chart.run(filled)
    assert chart.items_built < fresh_work
    assert kept_before > 0
    assert Chart(checker.lexer, checker.vocab).run(filled)


def test_checker_reuses_its_witness(llama3_tokenizer):
    checker = InfillingChecker(load_grammar("json"), llama3_tokenizer)
    tok = llama3_tokenizer
    parts = [tok.encode('{"name": ', add_special_tokens=False), Hole(4), Hole.up_to(6)]
    first = checker.result(parts)
    assert first.ok
    # put the witness's own first token in: the old witness still proves the new canvas
    t = first.filling[len(parts[0])]
    second = checker.result([parts[0] + [t], Hole(3), Hole.up_to(6)])
    assert second.ok and second.how == "reuse"


def test_persistent_checker_matches_brute_force_step_by_step():
    """One checker across a decoding (reuse, repair, relaxed, realized, exact steps and their
    remembered witnesses) gives the brute-force answer at every step, and witnesses are words."""
    grammar = Grammar(GRAMMAR)
    vocab = small_vocab()
    spec, tables = grammar.compiled.spec, grammar.compiled.tables
    rng = random.Random(1)
    mask = 99
    steps = set()
    for trial in range(12):
        n = rng.randint(3, 5)
        canvas = [mask] * n
        checker = InfillingChecker(grammar, vocab)
        for pos in rng.sample(range(n), n):
            for cand in rng.sample(range(vocab.size - 1), 4):
                trial_canvas = canvas[:pos] + [cand] + canvas[pos + 1 :]
                parts = canvas_parts(trial_canvas, mask, vocab.eos_ids)
                slots = slots_of(parts, vocab)
                want = brute_force(spec, tables, slots, vocab)
                r = checker.result(parts)
                steps.add(r.how)
                assert r.ok == want, (trial_canvas, r.how)
                if r.ok:
                    data = r.text(vocab)  # the witness, filled in: a word of the grammar
                    assert brute_force(spec, tables, (("k", data),) if data else (), vocab)
                    canvas = trial_canvas
                    break
    assert {"reuse", "repair"} <= steps, steps
