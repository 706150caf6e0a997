"""Sampling with drafting draws from the same distribution as constrained sampling without it.

Small exact cases: the constraint ``[ab]{1,2}`` has a handful of complete token sequences, whose
exact probabilities under the tiny target are enumerated (``spec_helpers.exact_sequences``).
Samples are drawn in batches (batch size > 1 is part of what is tested) and compared by a
chi-square test; every test is seeded, so it is deterministic.

- per-token samplers (Masking, AWRS): the law of the sequence is the product of the locally
  constrained ``p c / Z`` (the "local" law), with the standard rule (sampled model drafts),
  the match rule on chains and trees, and the first-draw shortcut;
- weights: ``E[w 1(x = s)] = p(s) c(s)`` (proper weighting), for Masking and AWRS;
- SMC with drafting: ``E[Z_hat] = Z`` and the weighted particles target ``p(x) c(x) / Z``.
"""

import numpy as np
import pytest

from guided.grammars import Regex
from guided.samplers import AWRS, SMC, Masking
from guided.samplers.base import Sampling
from guided.speculative import ModelDrafter, generate_speculative, smc_speculative
from spec_helpers import ScriptedDrafter, chi_square_pvalue, exact_sequences

PROMPT = "ab ba ab"
A, B, AB, BA, AA = 64, 65, 370, 4749, 5418
CHAIN = [(-1, A), (0, B), (1, A)]
TREE = [(-1, A), (-1, B), (-1, AB), (0, A), (0, B), (1, A), (3, 128001)]


@pytest.fixture(scope="module")
def constraint():
    return Regex(r"[ab]{1,2}")


def _exact(target, tok, vocab, constraint, sampling):
    ids = tok(PROMPT)["input_ids"]
    return exact_sequences(target, ids, constraint, vocab, sampling)


def _sample(target, tok, constraint, draft, n_batches, rows, **kw):
    counts: dict[tuple, int] = {}
    weights: list[tuple[tuple, float]] = []
    last = None
    for seed in range(n_batches):
        last = generate_speculative(
            target, tok, [PROMPT] * rows, constraint, draft=draft, seed=1000 + seed, max_new_tokens=8, return_details=True, **kw
        )
        for ids, w in zip(last.token_ids, last.log_weights):
            counts[tuple(ids)] = counts.get(tuple(ids), 0) + 1
            weights.append((tuple(ids), float(w)))
    return counts, weights, last


@pytest.mark.parametrize(
    "case",
    ["model-standard-rule", "model-top-k", "scripted-tree", "scripted-tree-first-draw"],
)
def test_local_law_is_preserved(case, target, draft_model, tok, vocab, constraint):
    kw: dict = {"sampler": Masking()}
    sampling = Sampling(temperature=1.0)
    if case == "model-standard-rule":
        draft = ModelDrafter(draft_model, num_tokens=3, adaptive=False)
    elif case == "model-top-k":
        draft = ModelDrafter(draft_model, num_tokens=2, adaptive=False)
        kw.update(temperature=0.8, top_k=2000)
        sampling = Sampling(temperature=0.8, top_k=2000)
    else:
        draft = ScriptedDrafter(TREE)
        kw["first_draw"] = case.endswith("first-draw")
    exact = _exact(target, tok, vocab, constraint, sampling)
    counts, _, last = _sample(target, tok, constraint, draft, n_batches=3, rows=80, **kw)
    stats = last.draft_stats
    assert stats.drafted > 0 and 0 < stats.accepted < stats.drafted  # both paths exercised
    n = sum(counts.values())
    p = chi_square_pvalue(counts, {k: v[0] for k, v in exact.items()}, n)
    assert p > 1e-3, (case, p, counts)


def test_awrs_law_is_preserved_on_chains(target, tok, vocab, constraint):
    exact = _exact(target, tok, vocab, constraint, Sampling())
    counts, _, _ = _sample(target, tok, constraint, ScriptedDrafter(CHAIN), n_batches=3, rows=80, sampler=AWRS())
    p = chi_square_pvalue(counts, {k: v[0] for k, v in exact.items()}, sum(counts.values()))
    assert p > 1e-3, (p, counts)


@pytest.mark.parametrize("sampler", [Masking(), AWRS()], ids=["masking", "awrs"])
def test_weights_are_properly_weighted(sampler, target, tok, vocab, constraint):
    """``mean(w * 1[x = s]) -> p(s) c(s)``: the weights make the samples target the global law."""
    exact = _exact(target, tok, vocab, constraint, Sampling())
    _, weights, _ = _sample(target, tok, constraint, ScriptedDrafter(CHAIN), n_batches=3, rows=80, sampler=sampler)
    n = len(weights)
    z = sum(v[1] for v in exact.values())
    w = np.exp(np.asarray([lw for _, lw in weights]))
    # the total: E[w] = Z
    se = w.std() / np.sqrt(n)
    assert abs(w.mean() - z) < 5 * se + 1e-3 * z, (w.mean(), z, se)
    # the most probable sequences one by one
    for seq, (_, glob) in sorted(exact.items(), key=lambda kv: -kv[1][1])[:4]:
        f = np.asarray([wi if s == seq else 0.0 for wi, (s, _) in zip(w, weights)])
        se = f.std() / np.sqrt(n)
        assert abs(f.mean() - glob) < 5 * se + 1e-3 * z, (seq, f.mean(), glob, se)


@pytest.mark.parametrize("proposal", [Masking(), AWRS()], ids=["masking", "awrs"])
def test_smc_with_drafting_is_unbiased(proposal, target, tok, vocab, constraint):
    """``E[Z_hat] = Z`` and the weighted particles estimate ``p(x) c(x) / Z``."""
    exact = _exact(target, tok, vocab, constraint, Sampling())
    z = sum(v[1] for v in exact.values())
    runs = 20
    results = smc_speculative(
        target, tok, [PROMPT] * runs, constraint, n_particles=6, draft=ScriptedDrafter(TREE),
        proposal=proposal, ess_threshold=1.0, max_new_tokens=8, seed=7,
    )
    z_hat = np.exp([r.log_z for r in results])
    se = z_hat.std() / np.sqrt(runs)
    assert abs(z_hat.mean() - z) < 5 * se + 1e-3 * z, (z_hat.mean(), z, se)
    # The posterior, weighted by Z_hat across runs (an unbiased estimator of p(s) c(s)).
    top = max(exact, key=lambda k: exact[k][1])
    est = np.asarray(
        [r_z * sum(p.weight for p in r.particles if tuple(p.token_ids) == top) for r, r_z in zip(results, z_hat)]
    )
    se = est.std() / np.sqrt(runs)
    assert abs(est.mean() - exact[top][1]) < 5 * se + 1e-3 * z


def test_generate_with_smc_sampler_returns_particles(target, draft_model, tok, constraint):
    out = generate_speculative(
        target, tok, PROMPT, constraint, draft=draft_model, sampler=SMC(4), seed=3, max_new_tokens=8, return_details=True
    )
    assert out.finished[0]
    assert np.isfinite(out.log_weights[0])
    assert out.text in {"a", "b", "aa", "ab", "ba", "bb"}


def test_resampling_is_within_equal_lengths_and_keeps_weighted_sums(vocab):
    """Running particles of the same length are resampled among themselves (subset mean
    weight, ancestors by weight); finished ones and other lengths are untouched; every
    weighted sum keeps its expectation."""
    from types import SimpleNamespace

    from guided.samplers.base import StepContext
    from guided.speculative.generate import _resample_index

    rng = np.random.default_rng(0)
    lengths = [1, 1, 1, 2, 2, 3]
    finished = [False, False, False, False, False, True]
    log_w = np.log([0.5, 2.0, 0.1, 1.0, 3.0, 7.0])
    f = np.asarray([1.0, 5.0, -2.0, 4.0, 0.5, 9.0])
    target = float(np.sum(np.exp(log_w) * f))
    ctx = StepContext.create(vocab, seed=0)
    sums = []
    for _ in range(4000):
        rounds = SimpleNamespace(
            log_w=log_w.copy(), ids=[[0] * (1 + n) for n in lengths], prompt_len=[1] * 6, rows=6,
            running=lambda: [i for i in range(6) if not finished[i]],
        )
        smc = SimpleNamespace(n_particles=6, ess_threshold=1.0, resampling="multinomial")
        index = _resample_index(smc, rounds, 1, ctx)
        assert index is not None
        assert set(index[:3]) <= {0, 1, 2} and set(index[3:5]) <= {3, 4} and index[5] == 5
        assert np.allclose(np.exp(rounds.log_w[:3]), np.mean(np.exp(log_w[:3])))
        assert rounds.log_w[5] == log_w[5]
        sums.append(float(np.sum(np.exp(rounds.log_w) * f[index])))
    sums = np.asarray(sums)
    assert abs(sums.mean() - target) < 5 * sums.std() / np.sqrt(len(sums))


def test_smc_critic_kills_particles(target, tok, constraint):
    results = smc_speculative(
        target, tok, PROMPT, constraint, n_particles=6, draft=ScriptedDrafter(CHAIN), seed=1, max_new_tokens=8,
        critic=lambda prefix: float("-inf") if b"b" in prefix else 0.0,
    )
    alive = [p for p in results.particles if p.weight > 0]
    assert alive and all("b" not in p.text for p in alive)
    assert all(p.weight == 0 for p in results.particles if "b" in p.text)
