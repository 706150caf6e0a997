"""The vocabulary layer maps every id to exactly the bytes the tokenizer produces."""

import random

import numpy as np
import pytest
import quicktok
from hypothesis import given, settings
from hypothesis import strategies as st

from guided.tokenizers import ENCODINGS, load_tokenizer
from guided.vocab import Vocabulary


@pytest.fixture(scope="module", params=["llama3", "qwen3"])
def tok_vocab_enc(request):
    tok = load_tokenizer(request.param)
    return tok, Vocabulary.from_tokenizer(tok), quicktok.get_encoding(ENCODINGS[request.param].quicktok_name)


def test_every_id_has_the_original_bytes(tok_vocab_enc):
    tok, vocab, enc = tok_vocab_enc
    assert vocab.size == enc.max_token_value + 1
    for i in range(vocab.size):
        if i in vocab.special_ids:
            assert enc.is_special_token(i) and vocab.token_bytes[i] == b""
        else:
            assert vocab.token_bytes[i] == enc.decode_single_token_bytes(i)


def test_decoding_a_sequence_equals_concatenating_its_parts(tok_vocab_enc):
    tok, vocab, enc = tok_vocab_enc
    ids = [i for i in range(vocab.size) if i not in vocab.special_ids]
    # Each id alone, as the HF decoder renders it (lossy only where the bytes are not UTF-8).
    singles = tok.batch_decode([[i] for i in ids])
    for i, text in zip(ids, singles):
        assert text == vocab.token_bytes[i].decode("utf-8", errors="replace")
    rng = random.Random(0)
    seqs = [[rng.choice(ids) for _ in range(rng.randint(2, 6))] for _ in range(3000)]
    for seq, text in zip(seqs, tok.batch_decode(seqs)):
        assert text == vocab.decode(seq).decode("utf-8", errors="replace")
        assert vocab.decode(seq) == enc.decode_bytes(seq)


def test_tokens_holding_half_a_utf8_character_reassemble(tok_vocab_enc):
    tok, vocab, enc = tok_vocab_enc
    partial = [i for i in range(vocab.size) if vocab.token_bytes[i] and not _is_utf8(vocab.token_bytes[i])]
    assert len(partial) > 100  # byte-level BPE vocabularies have many such tokens
    text = "日本語のテキスト 🎉 Ελληνικά ∀x∈ℝ"
    ids = tok.encode(text, add_special_tokens=False)
    assert any(i in set(partial) for i in ids)  # the text really splits characters across tokens
    assert vocab.decode(ids) == text.encode()
    assert tok.decode(ids) == text


def test_special_and_end_ids_are_recognised(llama3_vocab):
    v = llama3_vocab
    assert {128000, 128001, 128009} <= v.special_ids
    assert all(i in v.special_ids for i in range(128000, 128256))
    assert v.eos_ids == {128001, 128009}
    assert v.bos_id == 128000
    assert not v.usable[128000] and v.usable[755]


def test_cache_gives_the_same_vocabulary(llama3_vocab):
    import copy

    fresh = Vocabulary.from_tokenizer(copy.deepcopy(load_tokenizer("llama3")))
    assert fresh is not llama3_vocab
    assert fresh.token_bytes == llama3_vocab.token_bytes
    assert fresh.special_ids == llama3_vocab.special_ids


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_trie_prefix_walk_is_exact(llama3_vocab, data):
    v = llama3_vocab
    token = v.token_bytes[data.draw(st.integers(0, 127999))]
    prefix = token[: data.draw(st.integers(0, min(3, len(token))))]
    got = set(v.trie.ids_with_prefix(prefix).tolist())
    want = {i for i in np.flatnonzero(v.usable) if v.token_bytes[i].startswith(prefix)}
    assert got == want
    nxt = v.trie.next_bytes(prefix)
    assert nxt == sorted({v.token_bytes[i][len(prefix)] for i in want if len(v.token_bytes[i]) > len(prefix)})


def test_trie_edge_prefixes(llama3_vocab):
    v = llama3_vocab
    assert len(v.trie.ids_with_prefix(b"")) == int(v.usable.sum())
    high = v.trie.ids_with_prefix(b"\xff")
    assert {v.token_bytes[i] for i in high} == {b for b in v.token_bytes if b.startswith(b"\xff")}


def _is_utf8(b: bytes) -> bool:
    try:
        b.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False
