"""SMC targets the *global* constrained distribution p(x)c(x)/Z; per-token masking does not.

The model is a fixed next-token table over real Llama-3 ids, so the exact distribution over
whole strings can be enumerated; the constraint is a real regex. The table is built so that
the model's favourite first token ("a") leads mostly to completions the constraint rejects:
masking keeps choosing it, SMC reweights it away.
"""

import math

import numpy as np
import pytest

import guided
from guided.grammars import Regex
from guided.samplers import AWRS, SMC, Masking
from guided.samplers.smc import multinomial_resample, systematic_resample
from sampler_toys import TableModel, empirical, standard_error, total_variation

PATTERN = r"a(x|yz)|b(y|zx)"
CONSTRAINT = Regex(PATTERN)  # compiled once per vocabulary, shared by every run
WORDS = [b"ax", b"ayz", b"by", b"bzx"]


@pytest.fixture(scope="module")
def toy(vocab):
    t = {c: vocab.bytes_to_id[c.encode()] for c in "abxyz"}
    eos = min(vocab.eos_ids)
    rows = {
        b"": {t["a"]: 0.8, t["b"]: 0.2},
        b"a": {t["x"]: 0.1, t["y"]: 0.45, t["z"]: 0.45},
        b"ay": {t["z"]: 0.1, t["x"]: 0.9},
        b"b": {t["y"]: 0.5, t["z"]: 0.3, t["x"]: 0.2},
        b"bz": {t["x"]: 0.6, t["y"]: 0.4},
    }

    def table(prefix):
        text = vocab.decode(prefix)
        if text in rows:
            return rows[text]
        return {eos: 0.7, t["x"]: 0.3}  # after a complete word: end (or an invalid "x")

    model = TableModel(table, vocab.size)
    probs = {w.decode(): model.sequence_probability([vocab.bytes_to_id[bytes([c])] for c in w] + [eos]) for w in WORDS}
    z = sum(probs.values())
    return model, {k: v / z for k, v in probs.items()}, z


def test_the_exact_distribution_is_far_from_what_masking_samples(toy):
    _, exact, _ = toy
    assert exact == pytest.approx({"ax": 0.317, "ayz": 0.143, "by": 0.397, "bzx": 0.143}, abs=1e-3)


def test_masking_is_biased(toy, llama3):
    model, exact, _ = toy
    texts = guided.generate(model, llama3, [""] * 150, CONSTRAINT, sampler=Masking(), seed=0)
    freq = empirical(texts)
    # Locally renormalised: P(ayz) = 0.8 * 0.45/0.55 = 0.65, though globally it is 0.14.
    assert freq.get("ayz", 0) > 0.55
    assert total_variation(freq, exact) > 0.35


def smc_posterior(model, llama3, n, seed, **kw):
    return guided.smc(model, llama3, "", CONSTRAINT, n_particles=n, seed=seed, max_new_tokens=6, **kw)


def test_smc_converges_to_the_global_distribution_as_n_grows(toy, llama3):
    model, exact, _ = toy
    tv = {}
    for n, runs in ((4, 16), (256, 1)):
        tv[n] = np.mean([total_variation(smc_posterior(model, llama3, n, seed).posterior(), exact) for seed in range(runs)])
    # Measured: mean TV 0.59 (N=4), 0.23 (32), 0.11 (128), 0.03 (256): about 1/sqrt(N).
    assert tv[256] < 0.1
    assert tv[4] > 3 * tv[256]


@pytest.mark.slow
@pytest.mark.parametrize("resampling, threshold", [("systematic", 0.0), ("systematic", 0.9), ("multinomial", 0.9)])
def test_log_z_estimate_is_unbiased(toy, llama3, resampling, threshold):
    model, _, z = toy
    estimates = np.exp(
        [smc_posterior(model, llama3, 4, seed, resampling=resampling, ess_threshold=threshold).log_z for seed in range(40)]
    )
    assert abs(estimates.mean() - z) < 4 * standard_error(estimates), (estimates.mean(), z)


def test_every_particle_satisfies_the_constraint(toy, llama3):
    model, _, _ = toy
    result = smc_posterior(model, llama3, 16, 0)
    assert len(result.particles) == 16
    for p in result.particles:
        assert p.finished and p.text.encode() in WORDS
    assert sum(p.weight for p in result.particles) == pytest.approx(1.0)
    assert 1.0 <= result.ess <= 16.0
    assert result.sample(np.random.default_rng(0)).text in {w.decode() for w in WORDS}


def test_critic_twists_the_target(toy, llama3):
    model, exact, _ = toy
    critic = lambda prefix: -math.inf if prefix.startswith(b"by") else 0.0  # noqa: E731
    posterior = smc_posterior(model, llama3, 128, 1, critic=critic).posterior()
    assert "by" not in posterior
    rest = {k: v / (1 - exact["by"]) for k, v in exact.items() if k != "by"}
    assert total_variation(posterior, rest) < 0.15


def test_unfinished_particles_get_weight_zero(toy, llama3):
    model, _, _ = toy
    result = guided.smc(model, llama3, "", CONSTRAINT, n_particles=8, seed=0, max_new_tokens=2)
    assert result.log_z == -math.inf
    assert all(not p.finished and p.weight == 0.0 for p in result.particles)


def test_generate_with_smc_returns_one_weighted_text_per_prompt(toy, llama3):
    model, _, z = toy
    texts, log_w = guided.generate(
        model, llama3, ["", ""], CONSTRAINT, sampler=SMC(8, proposal=AWRS()), seed=3, return_weights=True
    )
    assert all(t.encode() in WORDS for t in texts)
    assert np.all(np.isfinite(log_w))


def test_smc_needs_sampling():
    with pytest.raises(ValueError):
        SMC(proposal=type("Unweighted", (Masking,), {"weighted": False})())
    with pytest.raises(ValueError):
        SMC(resampling="other")


@pytest.mark.parametrize("resample", [systematic_resample, multinomial_resample])
def test_resampling_keeps_ancestors_in_proportion(resample):
    rng = np.random.default_rng(0)
    w = np.array([0.5, 0.25, 0.125, 0.125])
    counts = np.zeros(4)
    for _ in range(2000):
        counts += np.bincount(resample(w, rng), minlength=4)
    assert np.allclose(counts / counts.sum(), w, atol=0.01)
    if resample is systematic_resample:  # each count is floor or ceil of n * w
        for _ in range(50):
            c = np.bincount(resample(np.array([0.3, 0.3, 0.4]), rng), minlength=3)
            assert np.all(np.abs(c - 3 * np.array([0.3, 0.3, 0.4])) < 1)
