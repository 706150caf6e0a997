"""Train guided's own small language models (causal or masked-diffusion) with the Llama-3 tokenizer.

    # the embedded default model (CPU, one thread, about 40 CPU-minutes)
    python scripts/train.py --kind causal --size small --steps 1500 --out guided/models/default
    # the small masked-diffusion LM (LLaDA-style objective, ModernBERT encoder), warm-started from
    # the embeddings of the d=48 causal model (the embedded default before it became "small")
    python scripts/train.py --kind causal --size tiny --steps 1662 --out runs/causal-tiny
    python scripts/train.py --kind diffusion --size tiny --steps 1500 --eval-every 500 \
        --init-embeddings runs/causal-tiny --out guided/models/diffusion
    # the draft / target pair for speculative decoding, on a GPU
    python scripts/train.py --kind causal --size draft  --device cuda --bf16 --batch-size 64 --minutes 5 --out runs/draft
    python scripts/train.py --kind causal --size target --device cuda --bf16 --batch-size 64 --minutes 8 --out runs/target

The output folder is a standard Hugging Face model (``config.json``, ``model.safetensors`` in
float16, tokenizer files), loaded with ``AutoModelForCausalLM.from_pretrained(out)`` (causal,
``LlamaForCausalLM``) or ``AutoModelForMaskedLM.from_pretrained(out)`` (diffusion,
``ModernBertForMaskedLM``; the mask token is ``config.mask_token_id`` = ``tokenizer.mask_token_id``).

Why training is cheap although the vocabulary has 128,256 ids: embeddings are tied, and the
softmax is computed only over the *active* ids (those occurring in the training split) plus one
extra logit ``log(#inactive)`` standing for all inactive ids at logit 0. The export writes the
inactive rows of the tied embedding as exact zeros (no output bias), so the exported
full-vocabulary model gives every inactive id logit 0: exactly the distribution that was trained.
After export the script reloads the saved folder with ``from_pretrained`` and checks that its
held-out loss equals the training-time estimate.

Reproducibility: fixed seeds, a fixed data order, and a step-based schedule. ``--minutes`` times
the first steps and fixes the step count from that (printed, and written to ``training.json``);
rerunning with ``--steps N`` and the same seed, device and thread count gives identical weights.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))
sys.path.insert(0, str(REPO))

import build_corpus  # noqa: E402

SEQ_LEN = 256
VOCAB_SIZE = 128256
BOS_ID, EOS_ID = 128000, 128001
MASK_TOKEN = "<|reserved_special_token_0|>"  # id 128002: Llama-3 reserves it, the corpus never has it
MASK_ID = 128002
DIFFUSION_EPS = 1e-3  # t ~ U(eps, 1]: the 1/t weight stays bounded

# Body shapes. The 128K-row tied embedding dominates parameters and disk size
# (128,256 x d x 2 bytes in fp16, next to the 7.2 MB tokenizer). "small" is the embedded default
# model: attention heads of 32 (vLLM's CPU attention rejects head sizes such as tiny's 12).
ARCHS: dict[str, dict[str, dict]] = {
    "causal": {
        "tiny": dict(hidden_size=48, num_hidden_layers=6, num_attention_heads=4, intermediate_size=192),
        "small": dict(hidden_size=96, num_hidden_layers=4, num_attention_heads=3, intermediate_size=384),
        "draft": dict(hidden_size=80, num_hidden_layers=6, num_attention_heads=5, intermediate_size=320),
        "target": dict(hidden_size=320, num_hidden_layers=8, num_attention_heads=5, intermediate_size=1024),
    },
    "diffusion": {
        "tiny": dict(hidden_size=48, num_hidden_layers=6, num_attention_heads=4, intermediate_size=128),
        "draft": dict(hidden_size=80, num_hidden_layers=6, num_attention_heads=5, intermediate_size=224),
        "target": dict(hidden_size=320, num_hidden_layers=8, num_attention_heads=5, intermediate_size=704),
    },
}
# Optimiser defaults per size (batch in sequences of SEQ_LEN tokens).
HPARAMS = {
    "tiny": dict(batch_size=16, lr=3e-3),
    "small": dict(batch_size=16, lr=3e-3),
    "draft": dict(batch_size=32, lr=3e-3),
    "target": dict(batch_size=64, lr=1.5e-3),
}


# --------------------------------------------------------------------------- vocabulary


@dataclass
class ActiveVocab:
    """Ids that get a trained embedding row; every other id keeps an all-zero row (logit 0)."""

    active_ids: np.ndarray  # sorted full ids, int64

    @classmethod
    def from_tokens(cls, tokens: np.ndarray, always: tuple[int, ...]) -> "ActiveVocab":
        present = np.flatnonzero(np.bincount(tokens.astype(np.int64), minlength=VOCAB_SIZE))
        return cls(np.union1d(present, np.asarray(always, dtype=np.int64)))

    @property
    def size(self) -> int:
        return len(self.active_ids)

    @property
    def inactive_index(self) -> int:
        """Compact index shared by all inactive ids (a fixed zero embedding row)."""
        return self.size

    @property
    def log_inactive(self) -> float:
        return math.log(VOCAB_SIZE - self.size)

    def compact(self, full_ids: np.ndarray) -> np.ndarray:
        table = np.full(VOCAB_SIZE, self.inactive_index, dtype=np.int64)
        table[self.active_ids] = np.arange(self.size)
        return table[full_ids.astype(np.int64)]


def active_nll(
    hidden: torch.Tensor,
    embedding: torch.Tensor,
    bias: torch.Tensor | None,
    targets: torch.Tensor,
    vocab: ActiveVocab,
) -> torch.Tensor:
    """Per-position NLL (nats) of the full-vocabulary model whose inactive rows are zero.

    Logits over the active ids, plus one logit ``log(#inactive)`` = the total mass of the
    inactive ids at logit 0; a target that is inactive itself has logit 0, so its NLL is log Z.
    (Reference implementation; training uses the fused, chunked `weighted_active_nll`.)
    """
    logits = hidden @ embedding[: vocab.size].T
    if bias is not None:
        logits = logits + bias[: vocab.size]
    lse = torch.logaddexp(torch.logsumexp(logits.float(), dim=-1), torch.tensor(vocab.log_inactive))
    active = targets < vocab.size
    target_logit = logits.gather(-1, targets.clamp(max=vocab.size - 1).unsqueeze(-1)).squeeze(-1).float()
    return lse - torch.where(active, target_logit, torch.zeros_like(target_logit))


class _WeightedActiveNLL(torch.autograd.Function):
    """``sum(weights * nll)`` with the gradient computed chunk by chunk during the forward pass,
    so the (rows x active-vocabulary) logits never exist in full (the memory traffic of the
    128K-id softmax is what makes CPU training slow). Same numbers as `active_nll`; with
    ``matmul_dtype=torch.bfloat16`` the three vocabulary matmuls run in bf16 (fp32 accumulation),
    the usual mixed precision, ~3x faster on CPUs with AVX512-BF16."""

    @staticmethod
    def forward(ctx, hidden, embedding, bias, targets, weights, n_active, log_inactive, chunk, matmul_dtype):
        grad_hidden = torch.empty_like(hidden)
        grad_embedding = torch.zeros_like(embedding)
        grad_bias = torch.zeros_like(bias) if bias is not None else None
        nll = torch.empty(len(hidden), dtype=hidden.dtype, device=hidden.device)
        emb_mm = embedding.to(matmul_dtype)
        log_inactive = torch.tensor(log_inactive, dtype=hidden.dtype, device=hidden.device)
        for start in range(0, len(hidden), chunk):
            h = hidden[start : start + chunk]
            h_mm = h.to(matmul_dtype)
            logits = (h_mm @ emb_mm.T).to(hidden.dtype)
            if bias is not None:
                logits += bias
            tgt = targets[start : start + chunk]
            active = tgt < n_active
            safe = tgt.clamp(max=n_active - 1)
            target_logit = torch.where(active, logits.gather(1, safe[:, None]).squeeze(1), torch.zeros_like(tgt, dtype=h.dtype))
            # Z = sum_active exp(logit) + #inactive * exp(0); one exp pass over the chunk.
            top = logits.amax(dim=1)
            probs = logits.sub_(top[:, None]).exp_()
            z_scaled = probs.sum(dim=1) + torch.exp(log_inactive - top)  # Z * exp(-top)
            nll[start : start + chunk] = top + torch.log(z_scaled) - target_logit
            w = weights[start : start + chunk]
            probs.mul_((w / z_scaled)[:, None])  # now w * softmax
            rows = torch.arange(len(h), device=h.device)
            probs[rows, safe] -= torch.where(active, w, torch.zeros_like(w))
            probs_mm = probs.to(matmul_dtype)
            grad_hidden[start : start + chunk] = probs_mm @ emb_mm
            grad_embedding += (probs_mm.T @ h_mm).to(hidden.dtype)
            if grad_bias is not None:
                grad_bias += probs.sum(0)
        ctx.save_for_backward(grad_hidden, grad_embedding, *([grad_bias] if grad_bias is not None else []))
        ctx.has_bias = bias is not None
        return (nll * weights).sum(), nll

    @staticmethod
    def backward(ctx, grad_loss, grad_nll_unused):
        saved = ctx.saved_tensors
        grad_bias = saved[2] * grad_loss if ctx.has_bias else None
        return saved[0] * grad_loss, saved[1] * grad_loss, grad_bias, None, None, None, None, None, None


def weighted_active_nll(hidden, embedding, bias, targets, weights, vocab: ActiveVocab, chunk: int = 64, matmul_dtype=None):
    """(sum of weights * NLL, per-row NLL) over flattened rows; rows with weight 0 are skipped."""
    hidden = hidden.reshape(-1, hidden.shape[-1])
    targets, weights = targets.reshape(-1), weights.reshape(-1).to(hidden.dtype)
    keep = weights != 0
    if not bool(keep.all()):
        hidden, targets, weights = hidden[keep], targets[keep], weights[keep]
    emb = embedding[: vocab.size]
    b = bias[: vocab.size] if bias is not None else None
    return _WeightedActiveNLL.apply(
        hidden, emb, b, targets, weights, vocab.size, vocab.log_inactive, chunk, matmul_dtype or hidden.dtype
    )


# --------------------------------------------------------------------------- models


def causal_config(size: str, vocab_size: int, pad_token_id: int | None):
    from transformers import LlamaConfig

    arch = ARCHS["causal"][size]
    full = vocab_size >= VOCAB_SIZE  # the compact training model has no room for the special ids
    return LlamaConfig(
        vocab_size=vocab_size,
        num_key_value_heads=arch["num_attention_heads"],
        max_position_embeddings=2048,
        rope_theta=10000.0,
        tie_word_embeddings=True,
        bos_token_id=BOS_ID if full else None,
        eos_token_id=EOS_ID if full else None,
        pad_token_id=pad_token_id,
        attention_dropout=0.0,
        **arch,
    )


def diffusion_config(size: str, vocab_size: int, pad_token_id: int | None):
    from transformers import ModernBertConfig

    arch = ARCHS["diffusion"][size]
    full = vocab_size >= VOCAB_SIZE
    config = ModernBertConfig(
        vocab_size=vocab_size,
        layer_types=["full_attention"] * arch["num_hidden_layers"],  # every layer sees the whole sequence
        max_position_embeddings=2048,
        pad_token_id=pad_token_id,
        bos_token_id=BOS_ID if full else None,
        eos_token_id=EOS_ID if full else None,
        cls_token_id=BOS_ID if full else None,
        sep_token_id=EOS_ID if full else None,
        tie_word_embeddings=True,
        decoder_bias=False,  # inactive ids then get logit 0 from their zero row alone (and 256 KB less)
        **arch,
    )
    config.mask_token_id = MASK_ID  # read by diffusion samplers (as in LLaDA / Dream configs)
    return config


def make_model(kind: str, size: str, vocab_size: int, pad_token_id: int | None):
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM

    if kind == "causal":
        return AutoModelForCausalLM.from_config(causal_config(size, vocab_size, pad_token_id))
    return AutoModelForMaskedLM.from_config(diffusion_config(size, vocab_size, pad_token_id))


def hidden_and_output(model, kind: str, input_ids: torch.Tensor):
    """Final hidden states and the (tied) output embedding + bias, for `active_nll`."""
    if kind == "causal":
        hidden = model.model(input_ids=input_ids).last_hidden_state
        return hidden, model.model.embed_tokens.weight, None
    hidden = model.head(model.model(input_ids=input_ids).last_hidden_state)
    return hidden, model.model.embeddings.tok_embeddings.weight, model.decoder.bias


# --------------------------------------------------------------------------- data


def windows(tokens: np.ndarray, seq_len: int = SEQ_LEN) -> np.ndarray:
    n = len(tokens) // seq_len
    return tokens[: n * seq_len].reshape(n, seq_len)


def batch_order(n_windows: int, batch_size: int, step: int, seed: int) -> np.ndarray:
    """Window indices of ``step``: a seeded permutation per epoch, taken in consecutive slices."""
    per_epoch = max(1, n_windows // batch_size)
    epoch, k = divmod(step, per_epoch)
    perm = np.random.default_rng([seed, epoch]).permutation(n_windows)
    if n_windows < batch_size:  # a tiny corpus slice: repeat the permutation
        perm = np.resize(perm, batch_size)
    return perm[k * batch_size : (k + 1) * batch_size]


def diffusion_noise(x0: torch.Tensor, generator: torch.Generator, mask_index: int):
    """Masked-diffusion forward process: per sequence t ~ U(eps, 1], mask each token with prob t."""
    b, n = x0.shape
    t = torch.rand(b, generator=generator) * (1 - DIFFUSION_EPS) + DIFFUSION_EPS
    masked = torch.rand(b, n, generator=generator) < t[:, None]
    xt = torch.where(masked, torch.full_like(x0, mask_index), x0)
    return xt, masked, t


def eval_masks(first_window: int, n_windows: int, level: int, t_levels: int, seq_len: int = SEQ_LEN):
    """Fixed held-out masks: stratified t = (level + 1/2) / t_levels, one seed per (window, level),
    so the compact and the exported evaluations see the same masks whatever their batch size."""
    t = (level + 0.5) / t_levels
    rows = [
        torch.rand(seq_len, generator=torch.Generator().manual_seed(1_000_003 * (first_window + i) + level)) < t
        for i in range(n_windows)
    ]
    return torch.stack(rows), torch.full((n_windows,), t)


# --------------------------------------------------------------------------- evaluation


@torch.no_grad()
def evaluate(model, kind, vocab: ActiveVocab, valid_full: np.ndarray, byte_lengths, device, batch_size=4, t_levels=4, max_windows=None):
    """Held-out nats and bytes. Causal: exact NLL. Diffusion: the ELBO (an upper bound on NLL),
    estimated with ``t_levels`` stratified noise levels per window and fixed masks."""
    model.eval()
    full = eval_windows(valid_full, max_windows)
    compact = vocab.compact(full)
    nats = 0.0
    nbytes = 0
    mask_index = int(vocab.compact(np.array([MASK_ID]))[0])
    for start in range(0, len(full), batch_size):
        x = torch.from_numpy(compact[start : start + batch_size])
        fb = byte_lengths[full[start : start + batch_size]]
        if kind == "causal":
            hidden, emb, bias = hidden_and_output(model, kind, x.to(device))
            nll = active_nll(hidden[:, :-1].float(), emb.float(), bias, x[:, 1:].to(device), vocab)
            nats += float(nll.double().sum())
            nbytes += int(fb[:, 1:].sum())
        else:
            for level in range(t_levels):
                masked, t = eval_masks(start, len(x), level, t_levels, x.shape[1])
                xt = torch.where(masked, torch.full_like(x, mask_index), x)
                hidden, emb, bias = hidden_and_output(model, kind, xt.to(device))
                weight = (masked / t[:, None])[masked].to(device)
                m = masked.to(device)
                nll = active_nll(hidden[m].float(), emb.float(), bias, x.to(device)[m], vocab)
                nats += float((nll * weight).double().sum()) / t_levels
            nbytes += int(fb.sum())
    model.train()
    return nats, nbytes


def eval_windows(tokens: np.ndarray, max_windows: int | None = None) -> np.ndarray:
    """Held-out windows of SEQ_LEN tokens (a shorter single window for a tiny corpus slice)."""
    full = windows(tokens) if len(tokens) >= SEQ_LEN else tokens[None, :]
    return full[:max_windows] if max_windows is not None else full


def bits_per_byte(nats: float, nbytes: int) -> float:
    return nats / math.log(2) / max(nbytes, 1)


@torch.no_grad()
def evaluate_exported(path: Path, kind: str, valid_full: np.ndarray, byte_lengths, device=torch.device("cpu"), batch_size=2, t_levels=4, max_windows=None):
    """The same held-out measure, computed by the plain full-vocabulary HF model loaded from disk."""
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM

    loader = AutoModelForCausalLM if kind == "causal" else AutoModelForMaskedLM
    model = loader.from_pretrained(str(path), dtype=torch.float32).to(device).eval()
    full = eval_windows(valid_full, max_windows)
    nats, nbytes = 0.0, 0
    for start in range(0, len(full), batch_size):
        x = torch.from_numpy(full[start : start + batch_size].astype(np.int64)).to(device)
        fb = byte_lengths[full[start : start + batch_size]]
        if kind == "causal":
            logits = model(input_ids=x).logits
            nll = F.cross_entropy(logits[:, :-1].flatten(0, 1), x[:, 1:].flatten(), reduction="none")
            nats += float(nll.double().sum())
            nbytes += int(fb[:, 1:].sum())
        else:
            for level in range(t_levels):
                masked, t = eval_masks(start, len(x), level, t_levels, x.shape[1])
                masked, t = masked.to(device), t.to(device)
                xt = torch.where(masked, torch.full_like(x, MASK_ID), x)
                logits = model(input_ids=xt).logits
                nll = F.cross_entropy(logits.flatten(0, 1), x.flatten(), reduction="none").view(x.shape)
                nats += float(((nll * masked).sum(1) / t).double().sum()) / t_levels
            nbytes += int(fb.sum())
    return nats, nbytes


# --------------------------------------------------------------------------- export


def export(model, kind: str, size: str, vocab: ActiveVocab, out: Path, tokenizer) -> None:
    """Write the full-vocabulary HF model (fp16 safetensors, inactive rows exactly zero) + tokenizer."""
    full = make_model(kind, size, VOCAB_SIZE, None)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    emb_key = "model.embed_tokens.weight" if kind == "causal" else "model.embeddings.tok_embeddings.weight"
    full_state = full.state_dict()
    compact_emb = state[emb_key]
    assert torch.count_nonzero(compact_emb[vocab.inactive_index]) == 0
    emb = torch.zeros(VOCAB_SIZE, compact_emb.shape[1], dtype=compact_emb.dtype)
    emb[torch.from_numpy(vocab.active_ids)] = compact_emb[: vocab.size]
    for key, value in state.items():
        if key == emb_key or key in ("lm_head.weight", "decoder.weight"):
            continue
        if key == "decoder.bias":
            bias = torch.zeros(VOCAB_SIZE, dtype=value.dtype)
            bias[torch.from_numpy(vocab.active_ids)] = value[: vocab.size]
            value = bias
        assert full_state[key].shape == value.shape, key
        full_state[key] = value
    full_state[emb_key] = emb
    missing, unexpected = full.load_state_dict(full_state, strict=False)
    assert not unexpected, unexpected
    full.tie_weights()
    full = full.to(torch.float16)
    if getattr(full, "generation_config", None) is not None:
        full.generation_config.bos_token_id = BOS_ID
        full.generation_config.eos_token_id = EOS_ID
        full.generation_config.pad_token_id = EOS_ID
    out.mkdir(parents=True, exist_ok=True)
    full.save_pretrained(str(out))
    save_tokenizer(tokenizer, out, kind)


def save_tokenizer(tokenizer, out: Path, kind: str) -> None:
    """``save_pretrained`` files; tokenizer.json re-written compactly (17 MB pretty -> 7 MB), same content."""
    if kind == "diffusion":
        tokenizer = copy.deepcopy(tokenizer)  # the caller's tokenizer stays untouched
        tokenizer.add_special_tokens({"mask_token": MASK_TOKEN})
        assert tokenizer.mask_token_id == MASK_ID and len(tokenizer) == VOCAB_SIZE
    tokenizer.save_pretrained(str(out))
    tokenizer.backend_tokenizer.save(str(out / "tokenizer.json"), pretty=False)
    # transformers 5 writes its new class name and loader state; the classic name loads in 4.x too.
    config_path = out / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    for key in ("is_local", "local_files_only"):
        config.pop(key, None)
    config_path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")


def round_to_fp16(model) -> None:
    """Round weights to fp16 values so the training-time estimate describes the exported model."""
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.half().float())


# --------------------------------------------------------------------------- sampling (for the report)


@torch.no_grad()
def causal_samples(path: Path, n: int = 4, max_new_tokens: int = 96, seed: int = 0, prompts=None) -> list[str]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path))
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32).eval()
    torch.manual_seed(seed)
    texts = []
    for prompt in prompts or [""] * n:
        ids = tok(prompt, return_tensors="pt").input_ids  # <|begin_of_text|> + prompt
        out = model.generate(ids, do_sample=True, temperature=0.8, top_k=0, max_new_tokens=max_new_tokens)
        texts.append(tok.decode(out[0], skip_special_tokens=False))
    return texts


@torch.no_grad()
def diffusion_samples(path: Path, n: int = 4, length: int = 64, steps: int = 64, seed: int = 0, prompts=None) -> list[str]:
    """LLaDA-style sampling: all masks, then unmask the most confident positions step by step."""
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path))
    model = AutoModelForMaskedLM.from_pretrained(str(path), dtype=torch.float32).eval()
    mask_id = model.config.mask_token_id
    g = torch.Generator().manual_seed(seed)
    texts = []
    for prompt in prompts or [""] * n:
        prefix = tok(prompt).input_ids
        x = torch.tensor([prefix + [mask_id] * length])
        per_step = max(1, length // steps)
        while (x == mask_id).any():
            logits = model(input_ids=x).logits[0].float()
            logits[:, mask_id] = -float("inf")
            probs = torch.softmax(logits / 0.8, dim=-1)
            draws = torch.multinomial(probs, 1, generator=g).squeeze(1)
            conf = probs.gather(1, draws[:, None]).squeeze(1)
            masked = x[0] == mask_id
            conf[~masked] = -1
            k = min(per_step, int(masked.sum()))
            pick = conf.topk(k).indices
            x[0, pick] = draws[pick]
        texts.append(tok.decode(x[0], skip_special_tokens=False))
    return texts


# --------------------------------------------------------------------------- training


@dataclass
class RunConfig:
    kind: str
    size: str
    device: str
    seed: int
    steps: int | None
    minutes: float | None
    batch_size: int
    lr: float
    warmup: int
    weight_decay: float
    threads: int
    corpus: str
    eval_every: int
    bf16: bool
    head_bf16: bool
    chunk: int
    check_windows: int = 96
    init_embeddings: str | None = None


def lr_at(step: int, total: int, warmup: int, peak: float) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def train(run: RunConfig, out: Path, log=print, tokenizer=None) -> dict:
    """Train, export to ``out`` and check the export; returns the record written to training.json."""
    torch.set_num_threads(run.threads)
    device = torch.device(run.device)
    corpus = Path(run.corpus)
    if not (corpus / "train.npy").exists():
        log(f"building corpus at {corpus}")
        build_corpus.build(corpus)
    train_full = np.load(corpus / "train.npy")
    valid_full = np.load(corpus / "valid.npy")
    tokenizer = tokenizer or build_corpus.load_llama3_tokenizer()
    byte_lengths = build_corpus.token_byte_lengths(tokenizer)

    always = (BOS_ID, EOS_ID) + ((MASK_ID,) if run.kind == "diffusion" else ())
    vocab = ActiveVocab.from_tokens(train_full, always)
    train_windows = torch.from_numpy(windows(vocab.compact(train_full)))
    log(f"corpus: {len(train_full):,} train tokens, {len(valid_full):,} held-out; active vocabulary {vocab.size:,}")

    torch.manual_seed(run.seed)
    model = make_model(run.kind, run.size, vocab.size + 1, vocab.inactive_index)
    with torch.no_grad():
        if run.init_embeddings:
            # Warm start (as Dream starts from an autoregressive model): the token embeddings of a
            # trained model with the same width, e.g. the embedded causal model for the diffusion LM.
            from safetensors import safe_open

            with safe_open(str(Path(run.init_embeddings) / "model.safetensors"), "pt") as f:
                key = next(k for k in f.keys() if "embed" in k)
                source = f.get_tensor(key).float()
            width = model.get_input_embeddings().weight.shape[1]
            if source.shape[1] != width:
                raise ValueError(f"{run.init_embeddings} has {source.shape[1]}-wide embeddings, {run.size} needs {width}")
            model.get_input_embeddings().weight[: vocab.size] = source[torch.from_numpy(vocab.active_ids)]
            log(f"embeddings initialised from {run.init_embeddings} ({key})")
        # the shared row of inactive ids is zero and (padding_idx) never trained
        model.get_input_embeddings().weight[vocab.inactive_index].zero_()
    model = model.to(device)
    model.train()
    n_params_full = sum(p.numel() for p in model.parameters()) + (VOCAB_SIZE - vocab.size - 1) * model.config.hidden_size
    log(f"{run.kind}/{run.size}: {n_params_full:,} parameters at full vocabulary")

    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (decay if p.ndim == 2 and "embed" not in name else no_decay).append(p)
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": run.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=run.lr, betas=(0.9, 0.95), eps=1e-8,
    )
    mask_index = int(vocab.compact(np.array([MASK_ID]))[0])
    noise_gen = torch.Generator().manual_seed(run.seed + 1)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=run.bf16)
    head_dtype = torch.bfloat16 if run.head_bf16 else torch.float32

    total = run.steps
    timing_steps = 10
    assert run.warmup >= timing_steps, "the timed steps must lie inside the warm-up (schedule independent of total)"
    t_start, cpu_start = time.time(), time.process_time()
    history = []
    step = 0
    while total is None or step < total:
        lr = lr_at(step, total or 10**9, run.warmup, run.lr)
        for group in optimizer.param_groups:
            group["lr"] = lr
        idx = batch_order(len(train_windows), run.batch_size, step, run.seed)
        x0 = train_windows[idx]
        with autocast:
            if run.kind == "causal":
                hidden, emb, bias = hidden_and_output(model, "causal", x0.to(device))
                targets = x0[:, 1:]
                weights = torch.full(targets.shape, 1.0 / targets.numel())
                hidden = hidden[:, :-1]
            else:
                xt, masked, t = diffusion_noise(x0, noise_gen, mask_index)
                hidden, emb, bias = hidden_and_output(model, "diffusion", xt.to(device))
                targets = x0
                # LLaDA's objective: masked positions only, weighted 1/t, averaged over all positions
                weights = masked / t[:, None] / x0.numel()
            loss, _ = weighted_active_nll(
                hidden.float(), emb.float(), None if bias is None else bias.float(),
                targets.to(device), weights.to(device), vocab, chunk=run.chunk, matmul_dtype=head_dtype,
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        step += 1
        if total is None and step == timing_steps:
            if device.type == "cuda":
                torch.cuda.synchronize()
            per_step = (time.time() - t_start) / timing_steps
            total = max(run.warmup + 1, int(run.minutes * 60 / per_step))
            log(f"{per_step:.3f} s/step -> {total} steps for {run.minutes} min (reproduce with --steps {total})")
        if step % 50 == 0 or step == total:
            log(f"step {step}/{total} loss {loss.item():.4f} lr {lr:.2e} {time.time() - t_start:.0f}s")
        if run.eval_every and step % run.eval_every == 0 and step != total:
            nats, nbytes = evaluate(model, run.kind, vocab, valid_full, byte_lengths, device, max_windows=64)
            history.append({"step": step, "valid_bpb_subset": bits_per_byte(nats, nbytes)})
            log(f"  held-out subset bpb {history[-1]['valid_bpb_subset']:.3f}")
    train_seconds, train_cpu_seconds = time.time() - t_start, time.process_time() - cpu_start

    model = model.float()
    round_to_fp16(model)
    nats, nbytes = evaluate(model, run.kind, vocab, valid_full, byte_lengths, device)
    bpb = bits_per_byte(nats, nbytes)
    log(f"held-out bpb (training-time estimate, fp16 weights): {bpb:.4f}")

    export(model, run.kind, run.size, vocab, out, tokenizer)
    # The plain HF model must give the same held-out loss (all windows for causal; the diffusion
    # ELBO runs 4 full-vocabulary passes per window, so it is checked on the first windows).
    check_windows = None if run.kind == "causal" else run.check_windows
    nats_c, nbytes_c = evaluate(model, run.kind, vocab, valid_full, byte_lengths, device, max_windows=check_windows)
    nats_x, nbytes_x = evaluate_exported(out, run.kind, valid_full, byte_lengths, device, max_windows=check_windows)
    bpb_c, bpb_x = bits_per_byte(nats_c, nbytes_c), bits_per_byte(nats_x, nbytes_x)
    log(f"export check on {'all' if check_windows is None else check_windows} held-out windows: "
        f"training-time {bpb_c:.5f} vs exported HF model {bpb_x:.5f} bpb")
    assert nbytes_x == nbytes_c and abs(bpb_x - bpb_c) < 1e-3 * max(1.0, bpb_c), (bpb_c, bpb_x)

    manifest = json.loads((corpus / "manifest.json").read_text())
    record = {
        "run": asdict(run) | {"steps": total},
        "parameters": n_params_full,
        "active_vocabulary": vocab.size,
        "train_tokens": int(len(train_full)),
        "tokens_seen": int(total * run.batch_size * SEQ_LEN),
        "train_seconds": round(train_seconds, 1),
        "train_cpu_seconds": round(train_cpu_seconds, 1),  # differs from wall time on a shared machine
        "device": device.type if device.type == "cuda" else f"cpu ({platform.processor() or platform.machine()}), {run.threads} thread(s)",
        "torch": torch.__version__,
        "python": platform.python_version(),
        "corpus_sha256": {k: v["sha256"] for k, v in manifest["splits"].items()},
        "valid_bytes": nbytes,
        "valid_bpb": round(bpb, 4),
        "export_check": {"windows": check_windows or "all", "training_time_bpb": round(bpb_c, 5), "exported_model_bpb": round(bpb_x, 5)},
        "valid_bpb_is": "exact NLL" if run.kind == "causal" else "masked-diffusion ELBO (upper bound on NLL), 4 stratified t levels",
        "history": history,
    }
    (out / "training.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def parse_args(argv=None) -> tuple[RunConfig, Path, argparse.Namespace]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kind", choices=["causal", "diffusion"], default="causal")
    parser.add_argument("--size", choices=list(HPARAMS), help="default: small (causal), tiny (diffusion)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    budget = parser.add_mutually_exclusive_group(required=True)
    budget.add_argument("--steps", type=int, help="exact number of optimiser steps (reproducible)")
    budget.add_argument("--minutes", type=float, help="wall-clock budget; the step count is fixed after 10 timed steps")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--corpus", type=Path, default=REPO / "runs" / "corpus")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--lr", type=float)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--weight-decay", type=float, default=0.1)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (the shared dev machine has 2 cores)")
    parser.add_argument("--eval-every", type=int, default=500)
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast of the transformer body (use on GPU)")
    parser.add_argument(
        "--head-fp32", action="store_true",
        help="run the vocabulary matmuls in fp32 (default bf16 with fp32 accumulation, fast on AVX512-BF16 CPUs and GPUs)",
    )
    parser.add_argument("--chunk", type=int, help="rows per chunk of the fused softmax (default 64 on CPU, 8192 on GPU)")
    parser.add_argument("--init-embeddings", type=Path, help="HF model folder whose token embeddings start training")
    parser.add_argument("--samples", type=int, default=4, help="print this many samples after training")
    args = parser.parse_args(argv)
    args.size = args.size or ("small" if args.kind == "causal" else "tiny")
    if args.size not in ARCHS[args.kind]:
        parser.error(f"no {args.kind} model of size {args.size!r} (sizes: {', '.join(ARCHS[args.kind])})")
    hp = HPARAMS[args.size]
    run = RunConfig(
        kind=args.kind, size=args.size, device=args.device, seed=args.seed, steps=args.steps,
        minutes=args.minutes, batch_size=args.batch_size or hp["batch_size"], lr=args.lr or hp["lr"],
        warmup=args.warmup, weight_decay=args.weight_decay, threads=args.threads,
        corpus=str(args.corpus), eval_every=args.eval_every, bf16=args.bf16, head_bf16=not args.head_fp32,
        chunk=args.chunk or (8192 if args.device.startswith("cuda") else 64),
        init_embeddings=str(args.init_embeddings) if args.init_embeddings else None,
    )
    return run, args.out, args


def main(argv=None) -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    run, out, args = parse_args(argv)
    record = train(run, out)
    print(json.dumps({k: v for k, v in record.items() if k != "history"}, indent=2))
    if args.samples:
        sample = causal_samples if run.kind == "causal" else diffusion_samples
        for text in sample(out, n=args.samples):
            print("-" * 60)
            print(text)


if __name__ == "__main__":
    main()
