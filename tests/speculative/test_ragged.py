"""``RaggedLM`` gives the logits of a plain full-sequence forward pass after any history of
ragged feeds, truncations (rollback), tree feeds resolved by ``keep``, row selection and
compaction: holes in the KV cache never change a logit."""

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from guided.speculative.ragged import RaggedLM

VOCAB = 97


@pytest.fixture(scope="module")
def small_model():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=64, max_position_embeddings=256,
    )
    return LlamaForCausalLM(config).eval()


def _reference(model, ids):
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0]


token = st.integers(0, VOCAB - 1)
op = st.one_of(
    st.tuples(st.just("feed"), st.lists(st.lists(token, max_size=4), min_size=3, max_size=3)),
    st.tuples(st.just("truncate"), st.lists(st.integers(0, 3), min_size=3, max_size=3)),
    st.tuples(st.just("tree"), st.lists(st.tuples(st.lists(token, min_size=1, max_size=5), st.randoms()), min_size=3, max_size=3)),
    st.tuples(st.just("select"), st.lists(st.integers(0, 2), min_size=3, max_size=3)),
    st.tuples(st.just("compact"), st.none()),
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(prompts=st.lists(st.lists(token, min_size=0, max_size=5), min_size=3, max_size=3), ops=st.lists(op, max_size=6))
def test_logits_match_full_forward(small_model, prompts, ops):
    lm = RaggedLM(small_model, prompts)
    seqs = [list(p) for p in prompts]
    for kind, arg in ops:
        if kind == "feed":
            if not any(arg):
                continue
            logits = lm.feed(arg)
            for i, toks in enumerate(arg):
                seqs[i] += toks
                if toks:
                    ref = _reference(small_model, seqs[i])[-len(toks):]
                    torch.testing.assert_close(logits[i, : len(toks)], ref, atol=2e-5, rtol=1e-4)
        elif kind == "truncate":
            new = [max(0, len(s) - k) for s, k in zip(seqs, arg)]
            lm.truncate(new)
            seqs = [s[:n] for s, n in zip(seqs, new)]
        elif kind == "tree":
            tokens, parents, paths = [], [], []
            for toks, rnd in arg:
                par = [-1] + [rnd.randrange(j) for j in range(1, len(toks))]
                tokens.append(toks)
                parents.append(par)
                leaf = rnd.randrange(len(toks))
                path = [leaf]
                while par[path[0]] >= 0:
                    path.insert(0, par[path[0]])
                paths.append(path if path[0] == 0 else [0])
            logits = lm.feed(tokens, parents)
            for i, (toks, par) in enumerate(zip(tokens, parents)):
                for j in range(len(toks)):
                    chain = [j]
                    while par[chain[0]] >= 0:
                        chain.insert(0, par[chain[0]])
                    ref = _reference(small_model, seqs[i] + [toks[c] for c in chain])[-1]
                    torch.testing.assert_close(logits[i, j], ref, atol=2e-5, rtol=1e-4)
            lm.keep(paths)
            for i, path in enumerate(paths):
                seqs[i] += [tokens[i][c] for c in path]
        elif kind == "select":
            lm.select(arg)
            seqs = [list(seqs[j]) for j in arg]
        else:
            lm._compact()
        assert lm.lengths == [len(s) for s in seqs]
    # a final feed checks the whole cache once more
    logits = lm.feed([[1], [2], [3]])
    for i, t in enumerate([1, 2, 3]):
        torch.testing.assert_close(logits[i, 0], _reference(small_model, seqs[i] + [t])[-1], atol=2e-5, rtol=1e-4)


def test_holes_are_cropped_and_compacted(small_model):
    lm = RaggedLM(small_model, [[1, 2, 3], [4]], compact_ratio=0.3)
    for _ in range(20):
        lm.feed([[5, 6, 7, 8], [9, 10, 11, 12]])
        lm.truncate([lm.lengths[0] - 3, lm.lengths[1] - 4])
    assert lm.lengths == [23, 1]
    live = int((lm.col_pos >= 0).sum())
    assert lm.columns <= max(33, 2 * live)  # rejected columns do not pile up


def test_tree_feed_must_be_resolved(small_model):
    lm = RaggedLM(small_model, [[1, 2]])
    lm.feed([[3, 4, 5]], parents=[[-1, 0, 0]])
    with pytest.raises(RuntimeError):
        lm.feed([[6]])
    lm.keep([[0, 2]])
    assert lm.lengths == [4]
