"""AWRS is exact: its tokens follow p*c/Z (chi-square) and its weights average to Z.

The next-token distribution is a fixed row over the real Llama-3 vocabulary (plus padding
columns, which are never allowed); the constraint is a real regex.
"""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import chisquare

from guided.grammars import Regex
from guided.samplers import AWRS, Masking, Sampling, StepContext
from sampler_toys import MaskHeld, standard_error

PADDING = 64  # the model has more columns than the tokenizer has ids


def digits(vocab, held: bool = False) -> MaskHeld:
    """``[0-9]+`` at its start; ``held``: the state already holds its mask (AWRS looks tokens up)."""
    return MaskHeld(Regex(r"[0-9]+").start(vocab), held)


def make_row(vocab, named: dict[bytes, float], padding_mass: float) -> torch.Tensor:
    """Probabilities: ``named`` tokens explicitly, ``padding_mass`` on one padding column,
    the rest spread uniformly over every other column."""
    width = vocab.size + PADDING
    ids = {vocab.bytes_to_id[b]: p for b, p in named.items()}
    rest = 1.0 - sum(ids.values()) - padding_mass
    others = width - len(ids) - 1
    probs = np.full(width, rest / others)
    for i, p in ids.items():
        probs[i] = p
    probs[vocab.size + 3] = padding_mass
    with np.errstate(divide="ignore"):
        return torch.from_numpy(np.log(probs)).float()


def exact_target(row: torch.Tensor, state, vocab) -> tuple[np.ndarray, float]:
    """p*c/Z over the columns, and Z (computed in float64 from the same float32 row)."""
    p = torch.softmax(row.double(), dim=-1).numpy()
    c = np.zeros(len(p), dtype=bool)
    c[: vocab.size] = state.allowed_mask()
    z = float(p[c].sum())
    return np.where(c, p, 0.0) / z, z


def draw_many(sampler, row, state, vocab, n, seed, batch=100, seeded=True):
    ctx = StepContext.create(vocab, Sampling(), seed=seed)
    ctx.seeded = seeded  # False: behave as an unseeded request's context (still reproducible here)
    tokens, weights = [], []
    for _ in range(n // batch):
        result = sampler.step(row.expand(batch, -1), [state] * batch, ctx)
        tokens += result.tokens
        weights += list(np.exp(result.log_weights))
        for token, nxt in zip(result.tokens, result.states):
            assert nxt is not None and state.advance(token) is not None
    return np.asarray(tokens), np.asarray(weights), ctx.stats


def check_exact(tokens, weights, target, z, named_ids):
    """Chi-square of the draws against p*c/Z (rare categories pooled), and mean weight vs Z."""
    observed = [int(np.sum(tokens == i)) for i in named_ids]
    expected = [target[i] * len(tokens) for i in named_ids]
    observed.append(len(tokens) - sum(observed))  # every other valid token
    expected.append(len(tokens) - sum(expected))
    cells = sorted(zip(expected, observed))
    while len(cells) > 2 and cells[0][0] < 5:  # pool the smallest cells until each expects >= 5
        (e0, o0), (e1, o1) = cells[0], cells[1]
        cells = sorted([(e0 + e1, o0 + o1)] + cells[2:])
    expected, observed = zip(*cells)
    assert chisquare(observed, expected).pvalue > 1e-3, (observed, np.round(expected, 1))
    se = standard_error(weights)
    assert abs(weights.mean() - z) < 4 * se + 1e-4 * z, (weights.mean(), z, se)  # float32 logits


FLAT = {b"1": 0.15, b"2": 0.05, b"42": 0.03, b"7": 0.02, b"a": 0.20, b" the": 0.10, b"x": 0.05}
PEAKED = {b"1": 0.80, b"2": 0.04, b"42": 0.02, b"a": 0.06, b" the": 0.02}


@pytest.mark.slow
@pytest.mark.parametrize(
    "sampler, named, padding, held",
    [
        (AWRS(estimator="recursive", max_rejects=10**6), FLAT, 0.2, False),
        (AWRS(estimator="recursive", max_rejects=10**6, chunk=2), FLAT, 0.2, False),  # walks into the tail
        (AWRS(estimator="recursive", max_rejects=3), FLAT, 0.2, False),  # mask fallback half the time
        (AWRS(estimator="geometric", max_rejects=10**6), FLAT, 0.2, False),
        (AWRS(estimator="geometric", max_rejects=2), FLAT, 0.2, False),  # stream finished from the mask
        (AWRS(estimator="auto"), PEAKED, 0.02, False),  # geometric (top token >= 2/3)
        (Masking(), FLAT, 0.2, False),
        (AWRS(estimator="recursive"), FLAT, 0.2, True),
        (AWRS(estimator="geometric"), FLAT, 0.2, True),
    ],
    ids=["recursive", "recursive-tail", "recursive-fallback", "geometric", "geometric-fallback",
         "auto-peaked", "masking", "recursive-held-mask", "geometric-held-mask"],
)
def test_tokens_follow_p_c_over_z_and_weights_average_to_z(vocab, sampler, named, padding, held):
    state = digits(vocab, held)
    row = make_row(vocab, named, padding)
    target, z = exact_target(row, state, vocab)
    named_valid = [vocab.bytes_to_id[b] for b in named if b.strip().isdigit()]
    tokens, weights, stats = draw_many(sampler, row, state, vocab, n=800, seed=7)
    check_exact(tokens, weights, target, z, named_valid)
    assert not np.any(tokens >= vocab.size)  # padding columns carry mass but are never drawn
    if isinstance(sampler, Masking):
        assert np.allclose(weights, z, rtol=1e-4)


def test_awrs_checks_few_tokens_when_the_model_agrees_with_the_constraint(vocab):
    state = digits(vocab)
    row = make_row(vocab, PEAKED, 0.02)
    _, _, stats = draw_many(AWRS(), row, state, vocab, n=1000, seed=1)
    assert stats.checks / stats.tokens < 2.0
    assert stats.masks == 0
    _, _, stats = draw_many(AWRS(estimator="recursive"), row, state, vocab, n=1000, seed=1)
    assert 2.0 <= stats.checks / stats.tokens < 3.0  # the accepted token and the tail check


def test_a_held_mask_leaves_only_the_accepted_tokens_advance(vocab):
    row = make_row(vocab, FLAT, 0.2)  # most mass on invalid tokens: many rejections
    plain = draw_many(AWRS(estimator="recursive", known_masks=False), row, digits(vocab), vocab, n=300, seed=4)
    held = draw_many(AWRS(estimator="recursive", known_masks=False), row, digits(vocab, held=True), vocab, n=300, seed=4)
    assert np.array_equal(plain[0], held[0]) and np.allclose(plain[1], held[1])  # same walk, same draws
    assert plain[2].checks / plain[2].tokens > 2.0
    assert held[2].checks == held[2].tokens and held[2].lookups > held[2].tokens


def test_a_known_mask_is_one_exact_draw_with_the_exact_weight(vocab):
    row = make_row(vocab, FLAT, 0.2)
    state = digits(vocab, held=True)
    target, z = exact_target(row, state, vocab)
    tokens, weights, stats = draw_many(AWRS(), row, state, vocab, n=800, seed=9, seeded=False)
    check_exact(tokens, weights, target, z, [vocab.bytes_to_id[str(d).encode()] for d in range(10)])
    assert np.allclose(weights, z, rtol=1e-4)  # no estimate: the mask's own Z
    assert stats.checks == stats.tokens  # only the drawn token's advance, no walk
    walked = draw_many(AWRS(), row, state, vocab, n=200, seed=9)  # a seeded context walks as before
    assert walked[2].lookups > walked[2].tokens and not np.allclose(walked[1], z, rtol=1e-4)


def test_transitions_of_equal_states_are_looked_up_not_recomputed(vocab):
    row = make_row(vocab, FLAT, 0.2)
    unkeyed = draw_many(AWRS(), row, digits(vocab), vocab, n=300, seed=5)  # MaskHeld has no cache_key
    keyed = draw_many(AWRS(), row, Regex(r"[0-9]+").start(vocab), vocab, n=300, seed=5)
    assert np.array_equal(unkeyed[0], keyed[0]) and np.allclose(unkeyed[1], keyed[1])
    # the row spreads mass over the whole vocabulary, so fresh tail tokens still need checks
    assert keyed[2].checks < unkeyed[2].checks / 2 and keyed[2].lookups > keyed[2].checks


def test_max_rejects_bounds_the_checks_of_a_step(vocab):
    state = digits(vocab)
    # Almost all mass on invalid tokens: the walk would need ~100 checks per step.
    row = make_row(vocab, {b"1": 0.005, b"a": 0.5, b" the": 0.3}, 0.0)
    ctx = StepContext.create(vocab, Sampling(), seed=3)
    for _ in range(20):
        before = ctx.stats.checks
        result = AWRS(max_rejects=5).step(row[None], [state], ctx)
        assert result.states[0] is not None
        assert ctx.stats.checks - before <= 5 + 2  # rejects, then the fallback's own advance
    assert ctx.stats.mask_fallbacks > 0


def test_greedy_is_the_constrained_argmax(vocab):
    state = digits(vocab)
    row = make_row(vocab, FLAT, 0.2)
    ctx = StepContext.create(vocab, Sampling(temperature=0), seed=0)
    for sampler in (AWRS(), AWRS(max_rejects=1), Masking()):
        result = sampler.step(row[None], [state], ctx)
        assert result.tokens == [vocab.bytes_to_id[b"1"]]
        assert result.log_weights[0] == 0.0


def test_nothing_valid_with_mass(vocab):
    """Z == 0: SMC sees a dead row; generate falls back to the untruncated distribution."""
    state = digits(vocab)
    row = make_row(vocab, {b"1": 0.01, b"a": 0.6, b" the": 0.3}, 0.05)
    sampling = Sampling(top_k=2)  # cuts every digit
    for sampler in (AWRS(), AWRS(estimator="geometric"), Masking()):
        smc_ctx = StepContext.create(vocab, sampling, seed=0, truncation_fallback=False)
        result = sampler.step(row[None], [state], smc_ctx)
        assert result.states == [None] and result.tokens == [-1]
        assert result.log_weights[0] == -math.inf
        ctx = StepContext.create(vocab, sampling, seed=0)
        result = sampler.step(row[None], [state], ctx)
        assert result.states[0] is not None and state.allows(result.tokens[0])
        assert ctx.stats.truncation_fallbacks == 1


def test_seeded_steps_are_reproducible(vocab):
    state = digits(vocab)
    row = make_row(vocab, FLAT, 0.2)
    runs = [draw_many(AWRS(), row, state, vocab, n=200, seed=11)[:2] for _ in range(2)]
    assert np.array_equal(runs[0][0], runs[1][0]) and np.array_equal(runs[0][1], runs[1][1])


@settings(max_examples=15, deadline=None)
@given(seeds=st.lists(st.integers(0, 2**32), min_size=1, max_size=5), temperature=st.sampled_from([0.0, 0.7, 1.0]),
       estimator=st.sampled_from(["auto", "recursive", "geometric"]), data=st.data())
def test_rows_with_their_own_contexts_draw_as_they_would_alone(vocab, seeds, temperature, estimator, data):
    """``step_each`` (one batched pass, a random stream per row) gives each row exactly what
    ``step`` gives it alone with the same seed: token, weight and state."""
    grammar = Regex(r"[0-9]{1,3}|[a-c]+")
    prefixes = [data.draw(st.sampled_from([b"", b"4", b"12", b"ab"])) for _ in seeds]
    states = [grammar.start(vocab).advance_bytes(p) for p in prefixes]
    named = {b"1": 0.2, b"a": 0.2, b"x": 0.3, b"42": 0.1}
    rows = torch.stack([make_row(vocab, named, 0.2) for _ in seeds])
    rows += torch.from_numpy(np.random.default_rng(seeds[0]).normal(0, 1, rows.shape)).float()
    sampling = Sampling(temperature=temperature)
    sampler = AWRS(estimator=estimator, max_rejects=20)
    together = sampler.step_each(rows, states, [StepContext.create(vocab, sampling, seed=s) for s in seeds])
    for r, seed in enumerate(seeds):
        alone = sampler.step(rows[r : r + 1], [states[r]], StepContext.create(vocab, sampling, seed=seed))
        assert together.tokens[r] == alone.tokens[0]
        assert together.log_weights[r] == pytest.approx(alone.log_weights[0], abs=1e-9)
        assert (together.states[r] is None) == (alone.states[0] is None)


def test_rows_of_one_step_must_share_a_sampling(vocab):
    state = digits(vocab)
    rows = torch.zeros(2, vocab.size)
    contexts = [StepContext.create(vocab, Sampling(temperature=t), seed=0) for t in (1.0, 0.5)]
    with pytest.raises(ValueError, match="share one Sampling"):
        AWRS().step_each(rows, [state, state], contexts)


def test_invalid_arguments():
    with pytest.raises(ValueError):
        AWRS(estimator="other")
    with pytest.raises(ValueError):
        AWRS(max_accepts=1)
    with pytest.raises(ValueError):
        AWRS(max_rejects=0)
