"""Monitors compose with grammars (product constraint) and run under Masking, AWRS and SMC."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monitor_helpers import HEADER

import guided
from guided.grammars import load_grammar
from guided.monitors import ArityMonitor, DereferenceMonitor
from guided.samplers import AWRS, SMC, Masking

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def tiny_model(llama3_tokenizer):
    """A real Llama architecture with random weights (no weights are downloaded)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(llama3_tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256,
        bos_token_id=llama3_tokenizer.bos_token_id, eos_token_id=llama3_tokenizer.eos_token_id,
    )
    return LlamaForCausalLM(config).eval()


@pytest.fixture(scope="module")
def deref_session(py_session_factory):
    return py_session_factory(HEADER + "value = origin.", wait_s=20.0)


@pytest.mark.parametrize("sampler", [Masking(), AWRS(), SMC(n_particles=2)], ids=["masking", "awrs", "smc"])
def test_samplers_generate_only_existing_members(tiny_model, llama3_tokenizer, deref_session, sampler):
    prompt = HEADER + "value = origin."
    constraint = DereferenceMonitor(deref_session) & guided.Regex(r"[A-Za-z_]{1,16}\n")
    text = guided.generate(tiny_model, llama3_tokenizer, prompt, constraint, sampler=sampler, max_new_tokens=6, seed=0)
    name = text.strip()  # complete, or cut by max_new_tokens: then a prefix of a member
    assert name and (any(m.startswith(name) for m in ("x", "y", "norm", "translate")) or name.startswith("_")), text


def test_python_grammar_and_monitors_intersect(py_session_factory, llama3_vocab):
    session = py_session_factory("", wait_s=20.0)  # generate a whole module: the grammar sees all of it
    grammar = load_grammar("python")
    product = grammar & DereferenceMonitor(session) & ArityMonitor(session)
    code = b"from geometry.shapes import Point\np = Point(1.0, 2.0)\nq = p."
    state = product.start(llama3_vocab).advance_bytes(code)
    assert state is not None
    parts = [part.allowed_mask() for part in state.parts]
    mask = state.allowed_mask()
    assert np.array_equal(mask, parts[0] & parts[1] & parts[2])
    allowed = {llama3_vocab.token_bytes[i] for i in np.flatnonzero(mask)}
    assert {b"norm", b"translate", b"x"} <= allowed and b"length" not in allowed
    assert state.advance_bytes(b"translate(1.0, 2.0, 3.0)") is None  # arity
    assert state.advance_bytes(b"nope") is None  # dereference
    assert state.advance_bytes(b"translate(1.0, scale=2.0)\n") is not None
