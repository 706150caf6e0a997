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
