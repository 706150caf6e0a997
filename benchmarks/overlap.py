"""Constrained vs unconstrained decoding speed on the embedded model, batch 1 and 16, one run.

    python benchmarks/overlap.py [--batches 1,16] [--tokens 48] [--runs 2] [--json OUT]

For each batch size: tokens per second of plain sampling (no constraint: the same KV-cached
batch, the same sampling step without a mask), and of ``guided.generate`` on JSON schemas
with ``Masking`` (every row's full mask every step) with the masks of step t+1 started on a
worker thread before step t's forward pass (the default), with that overlap switched off,
and with ``AWRS`` (the default sampler).  Constrained rows stop when their JSON is complete,
so tokens/s counts the tokens actually produced.  The ratio column is constrained over
unconstrained tokens/s (issue 15's target: >= 0.9 on JSON schemas at batch 16).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import guided  # noqa: E402
from guided.samplers import AWRS, Masking  # noqa: E402
from guided.samplers.base import Sampling, inverse_cdf_draws, next_token_logprobs  # noqa: E402
from guided.samplers.lm import start_batch  # noqa: E402

SCHEMAS = [
    {"type": "object", "properties": {"name": {"type": "string", "maxLength": 24}, "age": {"type": "integer"},
                                      "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 3}},
     "required": ["name", "age", "tags"]},
    {"type": "object", "properties": {"id": {"type": "integer"}, "ok": {"type": "boolean"},
                                      "kind": {"enum": ["alpha", "beta", "gamma"]},
                                      "note": {"type": "string", "maxLength": 40}},
     "required": ["id", "ok", "kind", "note"]},
]


def unconstrained(model, tokenizer, prompts, n_tokens: int, seed: int) -> tuple[int, float]:
    """Plain sampling for ``n_tokens`` steps, with the samplers' own draw (log-softmax, then
    inverse-CDF; ``torch.multinomial`` is far slower on CPU): (tokens produced, seconds)."""
    gen = torch.Generator().manual_seed(seed)
    ids = [tokenizer(p)["input_ids"] for p in prompts]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    t0 = time.perf_counter()
    with torch.inference_mode():
        lm = start_batch(model, ids, pad)
        for step in range(n_tokens):
            logprobs = next_token_logprobs(lm.logits, Sampling())
            tokens = inverse_cdf_draws(logprobs, 1, gen).view(-1).tolist()
            if step < n_tokens - 1:
                lm.append(tokens)
    return n_tokens * len(prompts), time.perf_counter() - t0


def constrained(model, tokenizer, prompts, schema, sampler, n_tokens: int, seed: int) -> tuple[int, float, dict]:
    t0 = time.perf_counter()
    out = guided.generate(model, tokenizer, prompts, guided.JSONSchema(schema), sampler=sampler,
                          max_new_tokens=n_tokens, seed=seed, return_details=True)
    seconds = time.perf_counter() - t0
    s = out.stats
    return s.tokens, seconds, {"forward_s": s.forward_seconds, "constraint_s": s.constraint_seconds,
                               "masks_prefetched": s.masks_prefetched}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", default="1,16")
    ap.add_argument("--tokens", type=int, default=48)
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--json", default=str(Path(__file__).parent / "results" / "overlap.json"))
    args = ap.parse_args(argv)
    model, tokenizer = guided.load_default_model()
    prompt = "Write one JSON record:\n"
    masking_plain = Masking()
    masking_plain.prefetch_masks = False
    variants = {"masking+overlap": Masking, "masking": lambda: masking_plain, "awrs": AWRS}
    results: dict = {"device": str(next(model.parameters()).device), "torch_threads": torch.get_num_threads()}
    # warm-up: compile the schemas, first masks, numba kernels
    for schema in SCHEMAS:
        constrained(model, tokenizer, [prompt], schema, Masking(), 8, 0)
    print(f"{'batch':>5}  {'mode':<16}{'tok/s':>9}{'ratio':>8}{'fwd s':>8}{'constraint s':>14}")
    for b in [int(x) for x in args.batches.split(",")]:
        prompts = [prompt] * b
        runs: dict = {name: [] for name in ["unconstrained", *variants]}
        for seed in range(args.runs):  # modes interleaved: load drift on a shared machine hits all alike
            n, t = unconstrained(model, tokenizer, prompts, args.tokens, seed)
            runs["unconstrained"].append((n, t, {}))
            for name, make in variants.items():
                for schema in SCHEMAS:
                    runs[name].append(constrained(model, tokenizer, prompts, schema, make(), args.tokens, seed))
        row: dict = {}
        for name, rs in runs.items():
            r = {"tok_s": sum(x[0] for x in rs) / sum(x[1] for x in rs)}
            if name != "unconstrained":
                r["ratio"] = r["tok_s"] / row["unconstrained"]["tok_s"]
                for key in ("forward_s", "constraint_s", "masks_prefetched"):
                    r[key] = sum(x[2][key] for x in rs)
            row[name] = r
        results[str(b)] = row
        for name, r in row.items():
            print(f"{b:>5}  {name:<16}{r['tok_s']:>9.1f}{r.get('ratio', 1.0):>8.2f}"
                  f"{r.get('forward_s', float('nan')):>8.2f}{r.get('constraint_s', float('nan')):>14.2f}", flush=True)
    Path(args.json).write_text(json.dumps(results, indent=2))
    print(f"\nwritten {args.json}")


if __name__ == "__main__":
    main()
