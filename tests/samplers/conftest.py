"""Shared fixtures for the sampler tests: the real Llama-3 tokenizer and its vocabulary."""

import pytest


@pytest.fixture(scope="session")
def llama3():
    from guided.tokenizers import load_tokenizer

    return load_tokenizer("llama3")


@pytest.fixture(scope="session")
def vocab(llama3):
    from guided.vocab import Vocabulary

    return Vocabulary.from_tokenizer(llama3)
