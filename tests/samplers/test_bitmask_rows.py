"""Packed rows become the bool masks the samplers apply: columns past the vocabulary are never
allowed, and a narrower logits width cuts the row; a prefetch serves the rows it was made for."""

import numpy as np
import pytest
import torch

from guided.bitmask import pack_mask
from guided.samplers.base import bitmask_to_bool


@pytest.mark.parametrize("size,width", [(100, 100), (100, 128), (100, 64), (33, 40)])
def test_bitmask_to_bool_round_trips(size, width):
    rng = np.random.default_rng(size + width)
    masks = rng.random((3, size)) < 0.4
    bits = np.stack([pack_mask(m) for m in masks])
    got = bitmask_to_bool(bits, size, width, "cpu")
    expected = np.zeros((3, width), dtype=bool)
    n = min(size, width)
    expected[:, :n] = masks[:, :n]
    assert got.dtype == torch.bool and got.shape == (3, width)
    np.testing.assert_array_equal(got.numpy(), expected)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_bitmask_to_bool_on_cuda_equals_cpu():
    rng = np.random.default_rng(0)
    masks = rng.random((4, 1000)) < 0.3
    bits = np.stack([pack_mask(m) for m in masks])
    cpu = bitmask_to_bool(bits, 1000, 1024, "cpu")
    assert torch.equal(bitmask_to_bool(bits, 1000, 1024, "cuda").cpu(), cpu)


def test_prefetched_masks_are_used_for_a_prefix_and_rows_that_joined_are_added(vocab):
    from guided import Regex
    from guided.samplers.base import StepContext

    grammar = Regex(r"[0-9]{2}|[a-z]+ ?")
    states = [grammar.start(vocab), grammar.start(vocab).advance_bytes(b"4"), grammar.start(vocab).advance_bytes(b"ab")]
    exact = torch.from_numpy(np.stack([np.array(s.allowed_mask(), dtype=bool) for s in states]))
    width = vocab.size + 7
    expected = torch.zeros((3, width), dtype=torch.bool)
    expected[:, : vocab.size] = exact
    for prefetched, reused in [(states[:2], 2), (states, 3), (states[1:], 0), ([], 0)]:
        ctx = StepContext.create(vocab, seed=0)
        ctx.prefetch_masks(prefetched)
        assert torch.equal(ctx.masks(states, width, torch.device("cpu")), expected)
        assert ctx.stats.masks_prefetched == reused


def test_set_and_clear_tokens_edit_single_bits_of_a_packed_row():
    from guided.bitmask import clear_tokens, set_tokens, unpack_mask

    rng = np.random.default_rng(3)
    mask = rng.random(100) < 0.5
    row = pack_mask(mask)
    set_tokens(row, [0, 31, 32, 63, 99])
    clear_tokens(row, [1, 31, 64])
    expected = mask.copy()
    expected[[0, 31, 32, 63, 99]] = True
    expected[[1, 31, 64]] = False
    np.testing.assert_array_equal(unpack_mask(row, 100), expected)
