import os

import pytest

# Tests never touch the network; Hugging Face libraries must not try.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def llama3_tokenizer():
    from guided.tokenizers import load_tokenizer

    return load_tokenizer("llama3")


@pytest.fixture(scope="session")
def llama3_vocab(llama3_tokenizer):
    from guided.vocab import Vocabulary

    return Vocabulary.from_tokenizer(llama3_tokenizer)


@pytest.fixture(scope="session")
def llama3(llama3_tokenizer):
    """The Llama-3 tokenizer (short name used by the grammar and JSON-Schema tests)."""
    return llama3_tokenizer


@pytest.fixture(scope="session")
def vocab(llama3_vocab):
    """The Llama-3 vocabulary (tests that need another define their own ``vocab``)."""
    return llama3_vocab


@pytest.fixture(scope="session")
def assert_same_masks(vocab):
    """``check(a, b, seed)``: two constraint states give equal masks along random walks.

    Each walk draws allowed tokens (every other walk prefers tokens of at most two bytes,
    which reach deeper into a structure) and compares the masks and acceptance at each step.
    """
    import numpy as np

    eos = np.zeros(vocab.size, dtype=bool)
    eos[list(vocab.eos_ids)] = True

    def check(start_a, start_b, seed: int = 0, walks: int = 4, steps: int = 40) -> None:
        rng = np.random.default_rng(seed)
        for walk in range(walks):
            a, b = start_a, start_b
            for _ in range(steps):
                ma, mb = a.allowed_mask(), b.allowed_mask()
                assert np.array_equal(ma, mb), [vocab.token_bytes[i] for i in np.flatnonzero(ma != mb)][:10]
                assert a.is_accepting() == b.is_accepting()
                ids = np.flatnonzero(ma & ~eos)
                if not len(ids):
                    break
                if walk % 2:
                    ids = [i for i in ids if len(vocab.token_bytes[i]) <= 2] or ids
                t = int(rng.choice(ids))
                a, b = a.advance(t), b.advance(t)

    return check
