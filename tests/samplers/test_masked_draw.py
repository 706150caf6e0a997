"""``masked_draw``: exact draws from ``p * c / Z`` and ``log Z``, for every row at once.

Sparse masks go through compact rows (only the allowed columns); dense ones through the
whole row.  Both must give the same token for the same uniform (the compact CDF is the full
one without its zero steps) and the same ``log Z``, and the law must be ``p * c / Z``.
"""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import chisquare

from guided.samplers.base import Sampling, StepContext, inverse_cdf_draws, masked_draw


class _Ctx:
    """The two fields masked_draw reads (a full StepContext needs a vocabulary)."""

    def __init__(self, seed: int, greedy: bool = False):
        self.sampling = Sampling(temperature=0.0) if greedy else Sampling()
        self.generator = torch.Generator().manual_seed(seed)


def _whole_row_draw(logprobs, mask, seed, greedy=False):
    """The reference: mask the whole row, logsumexp, inverse CDF (the dense path by hand)."""
    masked = logprobs.masked_fill(~mask, float("-inf"))
    log_z = torch.logsumexp(masked, dim=-1)
    alive = torch.isfinite(log_z)
    if greedy:
        tokens = masked.argmax(dim=-1)
    else:
        shift = torch.where(alive, log_z, 0.0)[:, None]
        tokens = inverse_cdf_draws(masked - shift, 1, torch.Generator().manual_seed(seed)).squeeze(-1)
    return torch.where(alive, tokens, -1), log_z


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), density=st.sampled_from([0.0, 0.001, 0.05, 0.4, 0.9, 1.0]),
       rows=st.integers(1, 6), greedy=st.booleans())
def test_compact_and_whole_rows_draw_the_same_token(seed, density, rows, greedy):
    g = torch.Generator().manual_seed(seed)
    width = 3000
    logprobs = torch.log_softmax(3 * torch.randn(rows, width, generator=g), dim=-1)
    mask = torch.rand(rows, width, generator=g) < density
    mask[0] = False  # a row without any allowed token gives -1 and log Z = -inf
    tokens, log_z = masked_draw(logprobs, mask, _Ctx(seed, greedy))
    ref_tokens, ref_log_z = _whole_row_draw(logprobs, mask, seed, greedy)
    assert tokens.tolist() == ref_tokens.tolist()
    assert torch.allclose(log_z, ref_log_z)  # (-inf equals -inf)
    assert int(tokens[0]) == -1 and log_z[0] == float("-inf")
    for r in range(1, rows):
        if tokens[r] >= 0:
            assert mask[r, tokens[r]]


def test_compact_rows_follow_p_c_over_z():
    width = 5000
    g = torch.Generator().manual_seed(3)
    logprobs = torch.log_softmax(2 * torch.randn(1, width, generator=g), dim=-1)
    allowed = [7, 99, 1234, 4999]
    mask = torch.zeros(1, width, dtype=torch.bool)
    mask[0, allowed] = True
    p = logprobs[0, allowed].double().exp()
    ctx = _Ctx(11)
    n = 4000
    drawn = [int(masked_draw(logprobs, mask, ctx)[0][0]) for _ in range(n)]
    observed = [drawn.count(t) for t in allowed]
    expected = (p / p.sum() * n).tolist()
    assert chisquare(observed, expected).pvalue > 1e-3, (observed, expected)
    _, log_z = masked_draw(logprobs, mask, ctx)
    assert np.isclose(float(log_z[0]), float(p.sum().log()), rtol=1e-5)
