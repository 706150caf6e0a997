"""Helpers for the drafting tests: tiny seeded Llama models and exact reference distributions."""

from __future__ import annotations

import numpy as np
import torch

from guided.speculative.drafts import Draft, Drafter

VOCAB_SIZE = 128256  # Llama-3


def make_llama(hidden: int, layers: int, seed: int, std: float = 0.2, dtype=torch.float32, device="cpu"):
    """A random-init ``LlamaForCausalLM`` over the Llama-3 ids (``std`` sets how peaked it is)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=2 * hidden,
        tie_word_embeddings=True,
        initializer_range=std,
        bos_token_id=128000,
        eos_token_id=128001,
        max_position_embeddings=512,
    )
    model = LlamaForCausalLM(config).eval()
    return model.to(device=device, dtype=dtype)


def _last_logprobs(model, ids, sampling):
    """(processed log-probs, untruncated log-probs) of the next token after ``ids``."""
    from guided.samplers.base import next_token_logprobs, untruncated_logprobs

    device = next(model.parameters()).device
    with torch.no_grad():
        logits = model(torch.tensor([ids], device=device)).logits[0, -1].float().cpu()
    return next_token_logprobs(logits[None], sampling)[0].double(), untruncated_logprobs(logits[None], sampling)[0].double()


def exact_sequences(model, prompt_ids, constraint, vocab, sampling, max_tokens: int = 8):
    """Every complete token sequence (EOS included) with its probability under two laws.

    Returns ``{tokens: (local, global_unnormalised)}``: ``local`` is the product of the locally
    constrained ``p c / Z`` (what per-token constrained sampling draws), ``global`` is
    ``p(x) c(x)`` (what SMC and importance weights target, before normalising by ``Z``).
    Where top-k/top-p leave no allowed token, the local law falls back to the untruncated
    distribution, as ``generate`` does.
    """
    out: dict[tuple, tuple[float, float]] = {}
    size = vocab.size

    def walk(seq, state, local, glob):
        lp, untruncated = _last_logprobs(model, list(prompt_ids) + list(seq), sampling)
        lp, untruncated = lp[:size], untruncated[:size]
        mask = torch.from_numpy(np.array(state.allowed_mask()))
        masked = lp.masked_fill(~mask, float("-inf"))
        log_z = torch.logsumexp(masked, dim=-1)
        if not torch.isfinite(log_z):
            masked = untruncated.masked_fill(~mask, float("-inf"))
            log_z = torch.logsumexp(masked, dim=-1)
        for t in torch.nonzero(torch.isfinite(masked)).flatten().tolist():
            nxt = state.advance(t)
            p_local = local * float(torch.exp(masked[t] - log_z))
            p_glob = glob * float(torch.exp(lp[t]))
            if nxt.is_finished():
                out[tuple(seq) + (t,)] = (p_local, p_glob)
            elif len(seq) + 1 < max_tokens:
                walk(seq + [t], nxt, p_local, p_glob)

    walk([], constraint.start(vocab), 1.0, 1.0)
    return out


def chi_square_pvalue(counts: dict, expected_probs: dict, n: int) -> float:
    """Pearson's test of ``counts`` against ``expected_probs``; bins with < 5 expected are pooled."""
    from scipy.stats import chisquare

    keys = sorted(expected_probs, key=lambda k: -expected_probs[k])
    obs, exp = [], []
    pool_o, pool_e = 0.0, 0.0
    for k in keys:
        e = expected_probs[k] * n
        if e >= 5:
            obs.append(counts.get(k, 0))
            exp.append(e)
        else:
            pool_o += counts.get(k, 0)
            pool_e += e
    unexpected = sum(v for k, v in counts.items() if k not in expected_probs)
    assert unexpected == 0, f"{unexpected} samples outside the support"
    if pool_e > 0:
        obs.append(pool_o)
        exp.append(pool_e)
    exp = np.asarray(exp) * (sum(obs) / sum(exp))
    return float(chisquare(obs, exp).pvalue)


class ScriptedDrafter(Drafter):
    """Test drafter: the same tree of tokens at every position (the constraint cuts the rest).

    ``tree`` is a list of ``(parent, token_id)``, parents first; nodes deeper than the row's
    budget are left out.
    """

    def __init__(self, tree):
        self.tree = list(tree)

    def propose(self, rows):
        out = []
        for row in rows:
            depth: list[int] = []
            keep: dict[int, int] = {}
            tokens, parents = [], []
            for j, (parent, token) in enumerate(self.tree):
                d = 1 if parent < 0 else depth[parent] + 1
                depth.append(d)
                if d > row.budget or (parent >= 0 and parent not in keep):
                    continue
                keep[j] = len(tokens)
                tokens.append(int(token))
                parents.append(keep[parent] if parent >= 0 else -1)
            out.append(Draft(tokens, parents))
        return out
