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
