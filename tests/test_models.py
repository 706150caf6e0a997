"""The shipped models load as plain Hugging Face models, and the training script is reproducible."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from guided.models import default_model_path, diffusion_model_path, load_default_model

REPO = Path(__file__).resolve().parent.parent
MAX_DEFAULT_FOLDER_BYTES = 40_000_000  # d=96 (heads of 32, for vLLM) with the 7.2 MB tokenizer: 33 MB
MAX_FOLDER_BYTES = 20_000_000
# Head sizes among those vLLM's CPU attention kernels accept (32 and 64 were run; the former
# d=48 model's head size 12 fails at the first step: "Unsupported CPU attention configuration").
VLLM_CPU_HEAD_SIZES = (32, 64, 128)


@pytest.fixture(scope="module")
def default_model():
    return load_default_model()


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.iterdir() if f.is_file())


def test_default_model_loads_with_auto_classes_and_generates():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = default_model_path()
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32).eval()
    assert model.config.model_type == "llama" and model.config.vocab_size == 128256
    ids = tokenizer("def add(a, b):", return_tensors="pt").input_ids
    assert ids[0, 0].item() == 128000  # <|begin_of_text|>, as Llama-3 adds it
    out = model.generate(ids, max_new_tokens=8, do_sample=False)
    assert out.shape == (1, ids.shape[1] + 8) or out[0, -1].item() == tokenizer.eos_token_id
    assert isinstance(tokenizer.decode(out[0]), str)


def test_default_model_is_stored_in_fp16_and_small():
    from safetensors import safe_open

    path = default_model_path()
    assert folder_bytes(path) <= MAX_DEFAULT_FOLDER_BYTES
    with safe_open(str(path / "model.safetensors"), "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float16}
        assert "lm_head.weight" not in set(f.keys())  # tied embeddings: stored once


def test_default_model_head_size_is_one_vllm_runs(default_model):
    config = default_model[0].config
    assert config.head_dim in VLLM_CPU_HEAD_SIZES
    assert config.head_dim * config.num_attention_heads == config.hidden_size


def test_inactive_ids_get_logit_exactly_zero(default_model):
    """The exported model is the trained one: ids never seen in training have a zero row."""
    model, tokenizer = default_model
    embedding = model.get_input_embeddings().weight
    inactive = torch.nonzero((embedding == 0).all(dim=1)).squeeze(1)
    assert 0 < len(inactive) < embedding.shape[0]
    logits = model(input_ids=torch.tensor([[128000, 755, 282]])).logits[0]
    assert torch.all(logits[:, inactive] == 0)
    assert torch.equal(model.lm_head.weight, embedding)


def test_default_tokenizer_equals_llama3(default_model, llama3_tokenizer):
    _, tokenizer = default_model
    assert len(tokenizer) == len(llama3_tokenizer) == 128256
    assert tokenizer.get_vocab() == llama3_tokenizer.get_vocab()
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id) == (128000, 128001)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=80) | st.from_regex(r'[ \n\t]*(def|class|"\w+":|\{|\[)[\w "{}:,\[\]\n]*', fullmatch=True))
def test_default_tokenizer_encodes_like_llama3(default_model, llama3_tokenizer, text):
    _, tokenizer = default_model
    assert tokenizer.encode(text) == llama3_tokenizer.encode(text)


def test_diffusion_model_loads_as_masked_lm():
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    try:
        path = diffusion_model_path()
    except FileNotFoundError:
        pytest.skip("no shipped diffusion model")
    assert folder_bytes(path) <= MAX_FOLDER_BYTES
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    model = AutoModelForMaskedLM.from_pretrained(str(path), dtype=torch.float32).eval()
    mask = model.config.mask_token_id
    assert mask == tokenizer.mask_token_id == 128002 and len(tokenizer) == 128256
    ids = torch.tensor([tokenizer("x = [1, 2, 3]").input_ids + [mask] * 4])
    logits = model(input_ids=ids).logits
    assert logits.shape == (1, ids.shape[1], 128256) and torch.isfinite(logits).all()


# --------------------------------------------------------------------------- training script


@pytest.fixture(scope="module")
def train_module():
    sys.path.insert(0, str(REPO / "scripts"))
    import train

    return train


@pytest.fixture(scope="module")
def corpus_slice(tmp_path_factory, train_module, llama3_tokenizer):
    out = tmp_path_factory.mktemp("corpus")
    manifest = train_module.build_corpus.build(out, limit=40, tokenizer=llama3_tokenizer)
    assert manifest["splits"]["train"]["tokens"] > 1000 and 100 < manifest["splits"]["valid"]["tokens"] < 2000
    return out


def run_config(train_module, corpus: Path, kind: str, seed: int = 0):
    return train_module.RunConfig(
        kind=kind, size="tiny", device="cpu", seed=seed, steps=3, minutes=None, batch_size=2, lr=3e-3,
        warmup=10, weight_decay=0.1, threads=1, corpus=str(corpus), eval_every=0, bf16=False,
        head_bf16=False, chunk=64,
    )


def load_state(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path / "model.safetensors"))


@pytest.mark.slow
def test_training_script_is_reproducible_and_exports_a_loadable_model(
    tmp_path, train_module, corpus_slice, llama3_tokenizer
):
    from transformers import AutoModelForCausalLM

    def run(name, seed=0):
        config = run_config(train_module, corpus_slice, "causal", seed)
        return train_module.train(config, tmp_path / name, log=lambda *a: None, tokenizer=llama3_tokenizer)

    first, _, other = run("a"), run("b"), run("c", seed=1)
    a, b, c = (load_state(tmp_path / name) for name in "abc")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)
    # the training-time loss estimate is what the exported full-vocabulary model computes
    check = first["export_check"]
    assert check["training_time_bpb"] == pytest.approx(check["exported_model_bpb"], rel=1e-4)
    assert other["valid_bpb"] > 0
    model = AutoModelForCausalLM.from_pretrained(str(tmp_path / "a"), dtype=torch.float32)
    assert model.config.vocab_size == 128256


@pytest.mark.slow
def test_diffusion_training_runs_end_to_end(tmp_path, train_module, corpus_slice, llama3_tokenizer):
    from transformers import AutoModelForMaskedLM

    config = run_config(train_module, corpus_slice, "diffusion")
    record = train_module.train(config, tmp_path / "d", log=lambda *a: None, tokenizer=llama3_tokenizer)
    check = record["export_check"]
    assert check["training_time_bpb"] == pytest.approx(check["exported_model_bpb"], rel=1e-4)
    model = AutoModelForMaskedLM.from_pretrained(str(tmp_path / "d"), dtype=torch.float32)
    assert model.config.mask_token_id == 128002


def test_active_vocabulary_loss_matches_full_softmax(train_module):
    """The cheap training loss equals cross-entropy over the full vocabulary with zero rows."""
    train = train_module
    rng = np.random.default_rng(0)
    active = np.sort(rng.choice(train.VOCAB_SIZE, size=300, replace=False))
    vocab = train.ActiveVocab(active)
    torch.manual_seed(0)
    compact_emb = torch.randn(vocab.size + 1, 8, dtype=torch.float64)
    compact_emb[vocab.inactive_index] = 0
    hidden = torch.randn(2, 5, 8, dtype=torch.float64)
    full_targets = np.concatenate([rng.choice(active, size=7), rng.integers(0, train.VOCAB_SIZE, size=3)]).reshape(2, 5)
    targets = torch.from_numpy(vocab.compact(full_targets))
    full_emb = torch.zeros(train.VOCAB_SIZE, 8, dtype=torch.float64)
    full_emb[torch.from_numpy(active)] = compact_emb[: vocab.size]
    reference = torch.nn.functional.cross_entropy(
        (hidden @ full_emb.T).flatten(0, 1), torch.from_numpy(full_targets).flatten(), reduction="none"
    )
    weights = torch.rand(2, 5, dtype=torch.float64)
    fused, nll = train.weighted_active_nll(hidden, compact_emb, None, targets, weights, vocab, chunk=3)
    assert torch.allclose(nll, reference, atol=1e-9)
    assert torch.allclose(fused, (reference * weights.flatten()).sum(), atol=1e-9)
    reference32 = train.active_nll(hidden.float(), compact_emb.float(), None, targets, vocab).flatten().double()
    assert torch.allclose(reference32, reference, atol=1e-4)
