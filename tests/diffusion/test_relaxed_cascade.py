"""The first relaxed round's two charts: the weighted one under a work cap, the unweighted one
(``quick_chart``) whose witness is tried when the cap is reached or the weighted witness fails.

The cap only moves cost: with a cap of 0 (every weighted run stops at once and the quick chart's
path comes first) the checker must still agree with brute force and with the exact chart, give
witnesses with the right token counts, and a weighted chart stopped by its cap must finish
correctly when run again without it (the checker resumes it that way).
"""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from guided.diffusion import InfillingChecker, canvas_parts, slots_of
from guided.diffusion.chart import Chart, ChartBudgetExceeded

from .test_checker_bruteforce import assert_agrees_with_brute_force, case, check_witness, expected, grammar_text, llama_token_bytes
from .test_fast_vs_exact import DOCUMENTS, MASK, grammar_of, random_canvas


class CountingChart(Chart):
    """A chart that counts its runs (to see which path a check took)."""

    runs = 0

    def run(self, slots: tuple) -> bool:
        self.runs += 1
        return super().run(slots)


def capped_checker(grammar, vocab, budget: int | None = 0) -> InfillingChecker:
    checker = InfillingChecker(grammar, vocab, relaxed_budget=budget)
    checker.quick_chart = CountingChart(checker.lexer, checker.vocab)
    return checker


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1))
def test_capped_relaxed_chart_matches_brute_force(seed):
    assert_agrees_with_brute_force(seed, capped_checker)


def test_the_capped_path_is_exercised():
    """Over a fixed batch the quick chart decides or realizes some checks, with both answers."""
    quick_runs = 0
    hows: dict = {}
    for seed in range(120):
        grammar, vocab, parts = case(20_000 + seed, llama_token_bytes())
        checker = capped_checker(grammar, vocab)
        result = checker.result(parts)
        assert result.ok == expected(grammar, vocab, parts), (grammar_text(grammar), parts)
        quick_runs += checker.quick_chart.runs
        hows[(result.how, result.ok)] = hows.get((result.how, result.ok), 0) + 1
    assert quick_runs >= 20, quick_runs
    assert hows.get(("realized", True), 0) and hows.get(("relaxed", False), 0), hows


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), budget=st.integers(0, 60))
def test_weighted_chart_resumes_after_its_cap(seed, budget):
    """A weighted chart stopped by its cap, run again uncapped on the same slots, answers like a
    fresh chart; its accepted path is a real path (its scans can be read back)."""
    grammar, vocab, parts = case(seed, llama_token_bytes())
    checker = InfillingChecker(grammar, vocab)
    relaxed, _, _ = checker._relaxed_slots(slots_of(parts, vocab))
    fresh = Chart(checker.lexer, vocab, weighted=True).run(relaxed)
    chart = Chart(checker.lexer, vocab, budget, weighted=True)
    try:
        first = chart.run(relaxed)
    except ChartBudgetExceeded:
        chart.budget = None
        first = chart.run(relaxed)
    assert first == fresh
    if first:
        assert chart.scans()


@pytest.mark.parametrize("name", ["json", "arithmetic"])
@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1), budget=st.sampled_from([0, 50, 400]))
def test_capped_checker_agrees_with_exact_chart(name, seed, budget, llama3_tokenizer):
    """Real canvases through one persistent capped checker (charts stopped by the cap are reused
    by later calls) agree with a fresh exact chart."""
    checker = capped_checker(grammar_of(name), llama3_tokenizer, budget)
    vocab = checker.vocab
    ids = llama3_tokenizer.encode(DOCUMENTS[name], add_special_tokens=False)
    rng = random.Random(seed)
    eos = min(vocab.eos_ids)
    for _ in range(3):
        parts = canvas_parts(random_canvas(rng, ids, eos, rng.randint(0, 2)), MASK, vocab.eos_ids)
        fast = checker.result(parts)
        exact = InfillingChecker(grammar_of(name), vocab).result(parts, exact_only=True)
        assert fast.ok == exact.ok, (name, parts, fast.how)


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("name", ["json", "arithmetic"])
def test_chart_stopped_while_rescanning_kept_nodes_resumes_exactly(name, weighted, llama3_tokenizer):
    """A finished run, then a run on slots changed near the end stopped by the budget while it
    rescans the nodes it keeps, then the same slots without the cap: the answer (and, if yes, a
    readable path) is a fresh chart's.  The stopped run must not leave the finished run's frontier
    behind, or the third run keeps nodes nobody built."""
    checker = InfillingChecker(grammar_of(name), llama3_tokenizer)
    vocab = checker.vocab
    ids = llama3_tokenizer.encode(DOCUMENTS[name], add_special_tokens=False)
    rng = random.Random(7)
    eos = min(vocab.eos_ids)
    tried = 0
    for _ in range(12):
        canvas = random_canvas(rng, ids, eos, 1)
        first = slots_of(canvas_parts(canvas, MASK, vocab.eos_ids), vocab)
        canvas[len(ids) - 1] = MASK if canvas[len(ids) - 1] != MASK else ids[-1]
        second = slots_of(canvas_parts(canvas, MASK, vocab.eos_ids), vocab)
        chart = Chart(checker.lexer, vocab, weighted=weighted)
        chart.run(first)
        chart.budget = 0
        try:
            chart.run(second)
        except ChartBudgetExceeded:
            tried += 1
        chart.budget = None
        got = chart.run(second)
        assert got == Chart(checker.lexer, vocab, weighted=weighted).run(second), (name, second)
        if got:
            assert chart.scans()
    assert tried
