"""Packed rows become the bool masks the samplers apply: columns past the vocabulary are never
allowed, and a narrower logits width cuts the row."""

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
