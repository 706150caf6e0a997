"""Fixtures for the drafting tests: the real Llama-3 tokenizer and two tiny random Llama models."""

import pytest
import torch

from spec_helpers import make_llama


@pytest.fixture(scope="session")
def tok():
    from guided.tokenizers import load_tokenizer

    return load_tokenizer("llama3")


@pytest.fixture(scope="session")
def vocab(tok):
    from guided.vocab import Vocabulary

    return Vocabulary.from_tokenizer(tok)


@pytest.fixture(scope="session")
def target():
    """The 'target': 2 layers, hidden 64 (std 0.2: peaked enough that draft and target differ)."""
    return make_llama(64, 2, seed=0)


@pytest.fixture(scope="session")
def draft_model():
    """The 'draft': 1 layer, hidden 32, another seed (a different distribution, same tokenizer)."""
    return make_llama(32, 1, seed=1)


@pytest.fixture(autouse=True)
def _one_thread():
    """The CI machine has 2 cores shared by parallel work: one intra-op thread per test."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
