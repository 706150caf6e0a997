"""``guided.generate`` with a real Hugging Face model (a tiny random Llama, real Llama-3 tokenizer).

The KV-cached, left-padded batch must agree with plain full-sequence forward passes; every
sampler's output must satisfy its constraint; seeds must reproduce.
"""

import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import guided
from guided.grammars import Regex
from guided.samplers import AWRS, SMC, DeadEndError, Masking
from guided.samplers.lm import HFBatch
from guided.vocab import Vocabulary

sys.path.insert(0, str(Path(__file__).parent / "samplers"))
from sampler_toys import tiny_llama  # noqa: E402


@pytest.fixture(scope="module")
def llama3():
    from guided.tokenizers import load_tokenizer

    return load_tokenizer("llama3")


@pytest.fixture(scope="module")
def vocab(llama3):
    return Vocabulary.from_tokenizer(llama3)


@pytest.fixture(scope="module")
def model(llama3):
    return tiny_llama(len(llama3), seed=0)


def full_forward_logits(model, ids):
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids])).logits[0, -1]


def test_cached_batch_matches_full_forward_passes(model, llama3):
    prompts = [llama3("def f(x):")["input_ids"], llama3("1")["input_ids"]]
    batch = HFBatch(model, prompts, pad_id=0)
    seqs = [list(p) for p in prompts]
    for step_tokens in ([10, 20], [30, 40]):
        batch.append(step_tokens)
        for s, t in zip(seqs, step_tokens):
            s.append(t)
    batch.select([1, 0, 1])  # reorder and duplicate rows, as SMC resampling does
    seqs = [seqs[1], seqs[0], list(seqs[1])]
    batch.append([50, 60, 70])
    for s, t in zip(seqs, [50, 60, 70]):
        s.append(t)
    for i, s in enumerate(seqs):
        torch.testing.assert_close(batch.logits[i], full_forward_logits(model, s), atol=1e-4, rtol=1e-4)
    # Roll back two positions and go another way (speculative decoding's rejection).
    batch.extend(torch.tensor([[1, 2], [3, 4], [5, 6]]))
    batch.rollback(2)
    batch.append([7, 8, 9])
    for i, (s, t) in enumerate(zip(seqs, [7, 8, 9])):
        torch.testing.assert_close(batch.logits[i], full_forward_logits(model, s + [t]), atol=1e-4, rtol=1e-4)


def reference_greedy(model, llama3, vocab, prompt, constraint, max_new_tokens):
    """Constrained greedy decoding with a full forward pass per step and a full mask."""
    ids = llama3(prompt)["input_ids"]
    state = constraint.start(vocab)
    out = []
    for _ in range(max_new_tokens):
        logits = full_forward_logits(model, ids + out)[: vocab.size]
        logits[~torch.from_numpy(np.array(state.allowed_mask()))] = -float("inf")
        token = int(logits.argmax())
        out.append(token)
        state = state.advance(token)
        if state.is_finished():
            break
    return out


@pytest.mark.parametrize("sampler", [Masking(), AWRS()])
def test_greedy_batch_equals_reference(model, llama3, vocab, sampler):
    constraint = Regex(r"(yes|no|maybe)( [0-9]{1,2})?")
    prompts = ["Answer: ", "The answer to the question is"]
    out = guided.generate(model, llama3, prompts, constraint, sampler=sampler, temperature=0, max_new_tokens=12,
                          return_details=True)
    for prompt, ids in zip(prompts, out.token_ids):
        assert ids == reference_greedy(model, llama3, vocab, prompt, constraint, 12)
    assert all(out.finished)
    assert all(re.fullmatch(constraint.pattern, t) for t in out.texts)


def test_seeds_reproduce(model, llama3):
    constraint = Regex(r"[a-z]{2,5}")
    for sampler in (Masking(), AWRS(), SMC(3)):
        runs = [guided.generate(model, llama3, ["x", "y"], constraint, sampler=sampler, seed=5, max_new_tokens=8,
                                return_weights=True) for _ in range(2)]
        assert runs[0][0] == runs[1][0]
        assert np.array_equal(runs[0][1], runs[1][1])


def test_return_types(model, llama3):
    constraint = Regex(r"[0-9]{3}")
    text = guided.generate(model, llama3, "n = ", constraint, seed=0)
    assert isinstance(text, str) and re.fullmatch(r"[0-9]{3}", text)
    text, log_w = guided.generate(model, llama3, "n = ", constraint, seed=0, return_weights=True)
    assert isinstance(log_w, float) and log_w <= 0
    details = guided.generate(model, llama3, ["a", "b"], constraint, seed=0, return_details=True)
    assert details.stats.tokens >= 4 and details.stats.checks > 0
    assert details.stats.forward_seconds > 0 and details.stats.total_seconds >= details.stats.forward_seconds


def test_top_k_top_p_temperature(model, llama3):
    constraint = Regex(r"(cat|dog)s?")
    for kw in (dict(top_k=5), dict(top_p=0.3), dict(temperature=0.5, top_k=40, top_p=0.9), dict(temperature=2.0)):
        for sampler in (Masking(), AWRS()):
            text = guided.generate(model, llama3, "pet: ", constraint, sampler=sampler, seed=1, **kw)
            assert re.fullmatch(constraint.pattern, text)


def test_unfinished_rows_are_reported(model, llama3):
    out = guided.generate(model, llama3, "x", Regex(r"[a-z]{20}"), max_new_tokens=2, seed=0, return_details=True)
    assert out.finished == [False] and len(out.token_ids[0]) == 2


def test_dead_end_raises(model, llama3):
    class Stuck(guided.Constraint):
        """A (broken) constraint that allows nothing but claims to be live."""

        def compile(self, vocab):
            return None

        def initial_state(self, compiled, vocab):
            return _StuckState(vocab)

    with pytest.raises(DeadEndError):
        guided.generate(model, llama3, "x", Stuck(), seed=0)


class _StuckState(guided.ConstraintState):
    def __init__(self, vocab):
        self.vocab = vocab

    def advance_bytes(self, data):
        return None

    def is_accepting(self):
        return False

    def allowed_mask(self):
        return np.zeros(self.vocab.size, dtype=bool)


ATOMS = ["a", "b", "xy", "[0-9]", "[a-c]", " ", "(foo|ba)", r"\.", "é", '"', "\\{"]
piece = st.tuples(st.sampled_from(ATOMS), st.sampled_from(["", "?", "{1,3}", "{2}"])).map("".join)
regexes = st.lists(st.lists(piece, min_size=1, max_size=4).map("".join), min_size=1, max_size=3).map("|".join)


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pattern=regexes, seed=st.integers(0, 2**16))
def test_every_sampler_output_satisfies_its_constraint(model, llama3, pattern, seed):
    constraint = Regex(pattern)  # finite languages: generation must end with EOS
    for sampler in (Masking(), AWRS(), AWRS(estimator="geometric", max_rejects=20), SMC(3)):
        out = guided.generate(model, llama3, ["x = ", "y"], constraint, sampler=sampler, seed=seed,
                              max_new_tokens=48, return_details=True)
        for text, finished in zip(out.texts, out.finished):
            assert finished, (pattern, sampler, text)
            assert re.fullmatch(pattern, text), (pattern, sampler, text)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_generate_on_cuda(llama3):
    model = tiny_llama(len(llama3), seed=0).cuda()
    constraint = Regex(r"(yes|no)( [0-9]{1,2})?")
    for sampler in (Masking(), AWRS(), SMC(4)):
        texts = guided.generate(model, llama3, ["a", "bb"], constraint, sampler=sampler, seed=0)
        assert all(re.fullmatch(constraint.pattern, t) for t in texts)
    greedy = guided.generate(model, llama3, ["q", "rr"], constraint, temperature=0, sampler=AWRS())
    assert greedy == guided.generate(model, llama3, ["q", "rr"], constraint, temperature=0, sampler=Masking())


SCHEMA = {
    "type": "object",
    "properties": {
        "id": {"type": "integer", "minimum": 0, "maximum": 999},
        "ok": {"type": "boolean"},
        "kind": {"enum": ["a", "bc"]},
        "tag": {"type": "string", "maxLength": 3, "pattern": "^[a-z]*$"},
    },
    "required": ["id", "ok", "kind", "tag"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def schema_constraint(vocab):
    constraint = guided.JSONSchema(SCHEMA, whitespace="compact")  # a finite language
    constraint.start(vocab)
    return constraint


@settings(max_examples=2, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**16))
def test_every_sampler_output_satisfies_a_json_schema(model, llama3, schema_constraint, seed):
    import json

    import jsonschema

    for sampler in (Masking(), AWRS(), SMC(2)):
        out = guided.generate(model, llama3, "{", schema_constraint, sampler=sampler, seed=seed,
                              max_new_tokens=80, return_details=True)
        assert out.finished == [True], (sampler, out.texts)
        jsonschema.validate(json.loads(out.texts[0]), SCHEMA)


def test_grammar_keyword_takes_a_constraint_or_lark_text(model, llama3):
    lark_text = 'start: DIGIT DIGIT "+" DIGIT\n%import common.DIGIT'
    text = guided.generate(model, llama3, "sum: ", grammar=lark_text, seed=0, max_new_tokens=8)
    assert re.fullmatch(r"[0-9]{2}\+[0-9]", text)
    assert guided.generate(model, llama3, "x", grammar=Regex(r"ab"), seed=0) == "ab"
    for bad in (dict(), dict(constraint=Regex("a"), grammar=Regex("b")), dict(grammar=3)):
        with pytest.raises(TypeError):
            guided.generate(model, llama3, "x", **bad)


def test_draft_keyword_gives_the_same_greedy_output(model, llama3):
    constraint = Regex(r"([a-z]+ ){2,4}[a-z]+")
    prompt = "red green blue red green blue red"
    plain = guided.generate(model, llama3, prompt, constraint, temperature=0, max_new_tokens=12, return_details=True)
    drafted = guided.generate(model, llama3, prompt, constraint, temperature=0, max_new_tokens=12,
                              draft="prompt_lookup", return_details=True)
    assert drafted.token_ids == plain.token_ids
    assert drafted.draft_stats.rounds > 0


def test_prefetched_masks_change_nothing(model, llama3):
    """Masking's next masks are made on a worker thread while the forward pass runs: the
    tokens (seeded sampling, a batch whose rows finish at different steps) are the same as
    with masks made in the step."""
    constraint = guided.JSONSchema({"type": "object", "properties": {"n": {"type": "integer"}, "s": {"enum": ["a", "bc"]}},
                                    "required": ["n", "s"]})
    prompts = ["{", "x", "data: "]
    kwargs = dict(sampler=Masking(), max_new_tokens=24, seed=3, return_details=True)
    overlapped = guided.generate(model, llama3, prompts, constraint, **kwargs)
    plain_sampler = Masking()
    plain_sampler.prefetch_masks = False
    plain = guided.generate(model, llama3, prompts, constraint, **{**kwargs, "sampler": plain_sampler})
    assert overlapped.token_ids == plain.token_ids
    assert overlapped.stats.masks_prefetched > 0 and plain.stats.masks_prefetched == 0
    assert overlapped.stats.masks == plain.stats.masks
