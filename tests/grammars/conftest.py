"""Shared fixtures: the real Llama-3 vocabulary (built offline from quicktok)."""

import pytest


@pytest.fixture(scope="session")
def llama3():
    from guided.tokenizers import load_tokenizer

    return load_tokenizer("llama3")


@pytest.fixture(scope="session")
def vocab(llama3):
    from guided.vocab import Vocabulary

    return Vocabulary.from_tokenizer(llama3)
