"""The drafters and the constraint cut, one by one."""

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from guided.grammars import Grammar, Regex
from guided.json_schema import JSONSchema
from guided.samplers.base import StepContext
from guided.speculative import (
    Draft,
    RowContext,
    TokenRecyclingDrafter,
    cut_to_constraint,
    forced_bytes,
    lookup_continuation,
    retokenise,
    tree_template,
)
from guided.speculative.drafts import DraftSession


# -- prompt lookup -------------------------------------------------------------------------------
def test_lookup_copies_after_the_latest_longest_match():
    assert lookup_continuation([1, 2, 3, 9, 1, 2], max_ngram=2) == [3, 9, 1, 2]
    assert lookup_continuation([5, 1, 7, 1, 2, 8, 1], max_ngram=3, num_tokens=2) == [2, 8]
    assert lookup_continuation([1, 2, 3], max_ngram=3) == []
    assert lookup_continuation([4, 4], num_tokens=0) == []


@given(st.lists(st.integers(0, 4), min_size=1, max_size=40), st.integers(1, 3), st.integers(1, 6))
def test_lookup_proposes_a_real_continuation(ids, max_ngram, k):
    out = lookup_continuation(ids, max_ngram=max_ngram, num_tokens=k)
    assert len(out) <= k
    if out:  # some suffix occurred earlier and was followed by exactly these tokens
        assert any(
            ids[e : e + len(out)] == out and ids[e - n : e] == ids[len(ids) - n :]
            for n in range(1, max_ngram + 1)
            for e in range(n, len(ids))
        )


# -- Token Recycling -----------------------------------------------------------------------------
def test_tree_template_is_prefix_closed_and_breadth_first():
    template = tree_template(30, 5, 8)
    assert len(template) == 30
    depth = []
    for j, (parent, rank) in enumerate(template):
        assert parent < j
        depth.append(0 if parent < 0 else depth[parent] + 1)
        assert 0 <= rank < 8
    assert depth == sorted(depth) and max(depth) < 5
    assert sum(1 for p, _ in template if p < 0) >= 3  # the root gets most branches


def test_recycling_drafts_valid_children_from_the_table(tok, vocab):
    ctx = StepContext.create(vocab, seed=0)
    drafter = TokenRecyclingDrafter(top_k=4, max_nodes=8, max_depth=3)
    drafter.begin(DraftSession(None, tok, vocab, ctx, [[1]], torch.device("cpu"), False))
    a, b, ab, x = vocab.bytes_to_id[b"a"], vocab.bytes_to_id[b"b"], vocab.bytes_to_id[b"ab"], vocab.bytes_to_id[b"x"]
    # the target predicted: after `a` come x, b, ab; after `b` comes a
    drafter.observe([[a]], [[(a, np.asarray([x, b, ab, a])), (b, np.asarray([a, b, x, ab]))]])
    state = Regex(r"[ab]{1,4}").start(vocab).advance(a)
    (draft,) = drafter.propose([RowContext([1, a], [], state, budget=3)])
    kids = draft.children()[-1]
    assert x not in kids and {b, ab} <= set(kids)  # x is cut, the next candidates take its place
    cut = cut_to_constraint(draft, state, ctx)
    assert cut.tokens == draft.tokens  # nothing forbidden was proposed


# -- grammar-forced text ---------------------------------------------------------------------------
def test_forced_bytes_of_a_regex_and_a_schema(vocab):
    state = Regex(r'\{"name": "[a-z]+", "age": [0-9]+\}').start(vocab)
    assert forced_bytes(state) == b'{"name": "'
    state = state.advance_bytes(b'{"name": "bob')
    assert forced_bytes(state) == b""  # more letters or the closing quote
    state = state.advance_bytes(b'"')
    assert forced_bytes(state) == b', "age": '
    schema = JSONSchema(
        {"type": "object", "properties": {"id": {"type": "integer"}}, "required": ["id"], "additionalProperties": False},
        whitespace="compact",
    )
    assert forced_bytes(schema.start(vocab)) == b'{"id":'


def test_forced_bytes_stop_where_output_may_end(vocab):
    state = Regex(r"ab(cd)?").start(vocab)
    assert forced_bytes(state) == b"ab"
    assert forced_bytes(state.advance_bytes(b"ab")) == b""  # accepting: EOS is a choice


def test_forced_bytes_of_a_grammar(vocab):
    g = Grammar('start: "let " NAME " = " NAME ";"\nNAME: /[a-z]+/')
    state = g.start(vocab)
    assert forced_bytes(state) == b"let "
    assert forced_bytes(state.advance_bytes(b"let x")) == b""
    assert forced_bytes(state.advance_bytes(b"let x ")) == b"= "


@pytest.mark.parametrize(
    "context, forced",
    [("x", ' = {"name": "'), ('{"a', '": 1, "b'), ("def f(", "self):\n    return"), ("", "héllo wörld")],
)
def test_retokenise_cuts_like_the_tokenizer(tok, vocab, context, forced):
    ctx_ids = tok.encode(context, add_special_tokens=False) if context else []
    ids = retokenise(tok, vocab, ctx_ids, forced.encode())
    assert vocab.decode(ids) == forced.encode()
    whole = tok.encode(context + forced, add_special_tokens=False)
    if whole[: len(ctx_ids)] == ctx_ids:  # no merge across the boundary: the tokenizer's own cut
        assert ids == whole[len(ctx_ids) :]


def test_retokenise_handles_a_cut_utf8_character(tok, vocab):
    data = "é".encode() + "à".encode()[:1]
    assert vocab.decode(retokenise(tok, vocab, [], data)) == "é".encode()


# -- the constraint cut ---------------------------------------------------------------------------
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(-1, 10), st.sampled_from([b"a", b"b", b"ab", b"c", b"ba", b"1"])), max_size=12))
def test_cut_keeps_exactly_the_allowed_subtree(vocab, nodes):
    ctx = StepContext.create(vocab, seed=0)
    tokens, parents = [], []
    for parent, text in nodes:
        parents.append(parent if parent < len(tokens) else -1)
        tokens.append(vocab.bytes_to_id[text])
    draft = Draft(tokens, parents)
    start = Regex(r"[ab]{0,4}c?").start(vocab)
    cut = cut_to_constraint(draft, start, ctx)

    def path_text(d, j):
        out = b""
        while j >= 0:
            out = vocab.token_bytes[d.tokens[j]] + out
            j = d.parents[j]
        return out

    def path_ids(d, j):
        out = ()
        while j >= 0:
            out = (d.tokens[j],) + out
            j = d.parents[j]
        return out

    kept = {path_ids(cut, j) for j in range(len(cut))}
    assert len(kept) == len(cut)  # duplicate siblings merged
    for j in range(len(cut)):
        assert start.advance_bytes(path_text(cut, j)) is not None
        assert cut.states[j] is not None and cut.parents[j] < j
    for j in range(len(draft)):  # every allowed path of the original survives
        ok, k = True, j
        while k >= 0:
            ok &= start.advance_bytes(path_text(draft, k)) is not None
            k = draft.parents[k]
        if ok:
            assert path_ids(draft, j) in kept
