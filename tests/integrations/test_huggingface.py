"""``guided.LogitsProcessor`` inside Hugging Face's ``model.generate``."""

import re
import sys
from pathlib import Path

import pytest
import torch

import guided
from guided import LogitsProcessor
from guided.grammars import Regex
from guided.samplers import Masking
from guided.vocab import Vocabulary

sys.path.insert(0, str(Path(__file__).parents[1] / "samplers"))
from sampler_toys import tiny_llama  # noqa: E402

PATTERN = r"(yes|no|maybe)( [0-9]{1,2})?"


@pytest.fixture(scope="module")
def llama3():
    from guided.tokenizers import load_tokenizer

    return load_tokenizer("llama3")


@pytest.fixture(scope="module")
def model(llama3):
    return tiny_llama(len(llama3), seed=0)


def left_padded(llama3, prompts):
    ids = [llama3(p)["input_ids"] for p in prompts]
    width = max(map(len, ids))
    pad = llama3.eos_token_id
    input_ids = torch.tensor([[pad] * (width - len(i)) + i for i in ids])
    mask = torch.tensor([[0] * (width - len(i)) + [1] * len(i) for i in ids])
    return input_ids, mask


def hf_generate(model, llama3, prompts, processor, **kw):
    input_ids, mask = left_padded(llama3, prompts)
    with torch.no_grad():
        out = model.generate(input_ids=input_ids, attention_mask=mask, logits_processor=[processor],
                             pad_token_id=llama3.eos_token_id, eos_token_id=sorted(processor.vocab.eos_ids), **kw)
    return [row[input_ids.shape[1]:].tolist() for row in out]


def until_eos(ids, vocab):
    for i, t in enumerate(ids):
        if t in vocab.eos_ids:
            return ids[: i + 1]
    return ids


def test_greedy_equals_generate_with_masking(model, llama3):
    prompts = ["Answer: ", "The answer to the question is"]
    processor = LogitsProcessor(Regex(PATTERN), llama3)
    hf = hf_generate(model, llama3, prompts, processor, do_sample=False, max_new_tokens=12)
    ours = guided.generate(model, llama3, prompts, Regex(PATTERN), sampler=Masking(), temperature=0,
                           max_new_tokens=12, return_details=True)
    assert [until_eos(h, processor.vocab) for h in hf] == ours.token_ids
    # The same processor serves a second generate call.
    again = hf_generate(model, llama3, prompts[:1], processor, do_sample=False, max_new_tokens=12)
    assert until_eos(again[0], processor.vocab) == ours.token_ids[0]


@pytest.mark.parametrize("kw", [dict(do_sample=True, top_k=50, temperature=1.5), dict(num_beams=3, do_sample=False)],
                         ids=["sampling", "beam-search"])
def test_outputs_satisfy_the_constraint(model, llama3, kw):
    torch.manual_seed(0)
    processor = LogitsProcessor(Regex(PATTERN), llama3)
    vocab = Vocabulary.from_tokenizer(llama3)
    for ids in hf_generate(model, llama3, ["Q: ", "Is it so? "], processor, max_new_tokens=12, **kw):
        ids = until_eos(ids, vocab)
        assert ids[-1] in vocab.eos_ids
        assert re.fullmatch(PATTERN, vocab.decode(ids).decode())


def test_padding_columns_are_never_allowed(llama3):
    processor = LogitsProcessor(Regex(PATTERN), llama3)
    vocab = processor.vocab
    scores = torch.zeros((1, vocab.size + 8))
    out = processor(torch.tensor([[1, 2, 3]]), scores)
    assert torch.isinf(out[0, vocab.size :]).all()
    assert torch.isfinite(out[0, vocab.bytes_to_id[b"yes"]])
