"""Speculative drafting benchmark: constrained tokens per second with and without each drafter.

    python benchmarks/speculative.py [--target PATH] [--draft PATH|early-exit:N] [--device cuda]
        [--dtype bf16] [--json-tasks 6] [--max-new-tokens 96] [--large-target] [--json OUT]

Tasks: JSON Schema tasks from MaskBench (``/work/shared/bench/maskbench``; prompt: a valid
instance of the schema and a newline, generation constrained by the schema) and code tasks
under the shipped Python grammar. Greedy decoding throughout, so every drafter's output can be
checked against constrained decoding without drafting (``same`` column).

Rows, per drafter (``none`` is ``guided.generate``, the constrained baseline):

* ``tok/s``: generated tokens / wall time over all tasks; ``speedup``: against ``none``;
* ``accept``: accepted / drafted tokens; ``tok/pass``: tokens emitted per target pass per row
  (mean accepted length + 1);
* ``same``: outputs identical to ``none`` (tasks).

Anchors in the same run, unconstrained: Hugging Face ``generate`` (greedy), with
``assistant_model`` (assisted generation, same draft model) and with
``prompt_lookup_num_tokens``; and guided's own drafting under a constraint that allows
everything, which separates the constraint's cost from the decoding loop's. The two ratios
reported are constrained speculative / unconstrained speculative throughput (target >= 0.9)
and the speedup on the JSON tasks (target >= 2x).

Models: ``--target`` / ``--draft`` are model folders (default: ``runs/target`` and
``runs/draft`` when present, else the embedded default model as target and an early-exit
draft, ``early-exit:N``, made of the target's first N layers with its own head: a smaller LM
sharing the tokenizer without any training). ``--large-target`` adds a random-init target of
the same architecture at a realistic width (timing only: verify cost of k tokens against 1).
Writes a JSON file (``benchmarks/results/speculative-<device>.json`` unless ``--json``).
"""

from __future__ import annotations

import argparse
import copy
import gzip
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from guided.constraint import Constraint, ConstraintState, FinishedState  # noqa: E402

from provenance import write_results  # benchmarks/provenance.py: machine, versions, command, date

MASKBENCH = Path("/work/shared/bench/maskbench")
CODE_PROMPTS = [
    "import os\n\n\ndef read_lines(path):\n    with open(path) as f:\n        return f.read().splitlines()\n\n\n",
    "class Stack:\n    def __init__(self):\n        self.items = []\n\n    def push(self, item):\n"
    "        self.items.append(item)\n\n",
]


# -- models --------------------------------------------------------------------------------------
def load_model(spec: str | None, device, dtype):
    from transformers import AutoModelForCausalLM

    if spec in (None, "default"):
        from guided.models import default_model_path

        try:
            path = default_model_path()
        except FileNotFoundError:
            path = REPO / "runs" / "smoke-causal"
    else:
        path = Path(spec)
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype).to(device).eval()
    return model, str(path)


def early_exit_draft(target, layers: int):
    """The target's first ``layers`` decoder layers with its final norm and (tied) head."""
    model = copy.deepcopy(target)
    model.model.layers = model.model.layers[:layers]
    model.config.num_hidden_layers = layers
    return model


def large_target(device, dtype):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    big = device.type == "cuda"
    config = LlamaConfig(
        vocab_size=128256, hidden_size=2048 if big else 512, num_hidden_layers=16 if big else 4,
        num_attention_heads=16 if big else 8, num_key_value_heads=8 if big else 4,
        intermediate_size=5632 if big else 1536, tie_word_embeddings=True, max_position_embeddings=2048,
        bos_token_id=128000, eos_token_id=128001,
    )
    return LlamaForCausalLM(config).to(device=device, dtype=dtype).eval()


# -- tasks ---------------------------------------------------------------------------------------
class AnyText(Constraint):
    """Every token allowed, EOS always: drafting's overhead without a constraint's cost."""

    def compile(self, vocab):
        mask = vocab.usable | vocab.eos_mask
        mask.flags.writeable = False
        return mask

    def initial_state(self, compiled, vocab):
        return _AnyState(vocab, compiled)


class _AnyState(ConstraintState):
    def __init__(self, vocab, mask):
        self.vocab, self.mask = vocab, mask

    def advance_bytes(self, data):
        return self

    def advance(self, token_id):
        if token_id in self.vocab.eos_ids:
            return FinishedState(self.vocab)
        return self if 0 <= token_id < self.vocab.size and self.mask[token_id] else None

    def is_accepting(self):
        return True

    def allowed_mask(self):
        return self.mask


def json_tasks(n: int):
    from guided.json_schema import JSONSchema

    tasks = []
    for group in ("Github_easy", "Github_medium", "Kubernetes", "Snowplow"):
        path = MASKBENCH / f"{group}.jsonl.gz"
        if not path.exists():
            continue
        with gzip.open(path, "rt") as f:
            for line in f:
                if len(tasks) >= n:
                    return tasks
                row = json.loads(line)
                valid = [t["data"] for t in row["tests"] if t["valid"] and isinstance(t["data"], dict)]
                if not valid or len(json.dumps(row["schema"])) > 4000:
                    continue
                try:
                    constraint = JSONSchema(row["schema"])
                except Exception:
                    continue
                prompt = json.dumps(valid[0], ensure_ascii=False) + "\n"
                tasks.append({"name": row["id"], "kind": "json", "prompt": prompt, "constraint": constraint})
    return tasks


def code_tasks():
    from guided.grammars import load_grammar

    grammar = load_grammar("python")
    return [{"name": f"python-{i}", "kind": "code", "prompt": p, "constraint": grammar} for i, p in enumerate(CODE_PROMPTS)]


# -- measurement -----------------------------------------------------------------------------------
def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_guided(target, tok, task, draft, max_new_tokens, device, constraint=None):
    from guided.generation import generate
    from guided.speculative import generate_speculative

    c = constraint if constraint is not None else task["constraint"]
    _sync(device)
    t0 = time.perf_counter()
    if draft is None:
        out = generate(target, tok, task["prompt"], c, temperature=0, max_new_tokens=max_new_tokens, return_details=True)
    else:
        out = generate_speculative(
            target, tok, task["prompt"], c, draft=draft, temperature=0, max_new_tokens=max_new_tokens, return_details=True
        )
    _sync(device)
    return out, time.perf_counter() - t0


def run_hf(target, tok, prompt, max_new_tokens, device, **kw):
    ids = tok(prompt, return_tensors="pt").input_ids.to(device)
    _sync(device)
    t0 = time.perf_counter()
    with torch.inference_mode():
        out = target.generate(
            ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens,
            do_sample=False, pad_token_id=tok.eos_token_id, **kw,
        )
    _sync(device)
    return int(out.shape[1] - ids.shape[1]), time.perf_counter() - t0


def verify_cost(model, device, ks=(1, 4, 8, 16, 32), reps=5):
    """Seconds of one forward pass scoring k new tokens after a 256-token context."""
    from guided.speculative.ragged import RaggedLM

    out = {}
    for k in ks:
        times = []
        for _ in range(reps):
            lm = RaggedLM(model, [list(range(1000, 1256))])
            _sync(device)
            t0 = time.perf_counter()
            lm.feed([list(range(2000, 2000 + k))])
            _sync(device)
            times.append(time.perf_counter() - t0)
        out[k] = float(np.median(times))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--target", default=None)
    ap.add_argument("--draft", default=None, help="model folder or early-exit:N")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default=None, help="float32 | bfloat16 | float16 (default: bf16 on CUDA)")
    ap.add_argument("--json-tasks", type=int, default=6)
    ap.add_argument("--code-tasks", type=int, default=2)
    ap.add_argument("--max-new-tokens", type=int, default=96)
    ap.add_argument("--drafters", default="model,prompt_lookup,recycling,forced")
    ap.add_argument("--large-target", action="store_true")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float16": torch.float16,
             "fp16": torch.float16, None: torch.bfloat16 if device.type == "cuda" else torch.float32}[args.dtype]

    from guided.tokenizers import load_tokenizer
    from guided.speculative import ModelDrafter, TokenRecyclingDrafter

    tok = load_tokenizer("llama3")
    target_spec = args.target or (str(REPO / "runs" / "target") if (REPO / "runs" / "target").exists() else None)
    target, target_path = load_model(target_spec, device, dtype)
    draft_spec = args.draft or (str(REPO / "runs" / "draft") if (REPO / "runs" / "draft").exists() else "early-exit:2")
    if draft_spec.startswith("early-exit:"):
        draft_model = early_exit_draft(target, int(draft_spec.split(":")[1]))
        draft_path = f"{target_path} (first {draft_spec.split(':')[1]} layers)"
    else:
        draft_model, draft_path = load_model(draft_spec, device, dtype)

    tasks = json_tasks(args.json_tasks) + code_tasks()[: args.code_tasks]
    names = [d for d in args.drafters.split(",") if d]
    recycler = TokenRecyclingDrafter()  # one table for the whole run (Token Recycling's hot start)

    def make(name):
        if name == "model":
            return ModelDrafter(draft_model)
        if name == "recycling":
            return recycler
        return name

    rows: dict[str, dict] = {n: {"tokens": 0, "seconds": 0.0, "drafted": 0, "accepted": 0, "rounds": 0, "emitted": 0,
                                 "same": 0, "json_tokens": 0, "json_seconds": 0.0} for n in ["none", *names]}
    per_task = []
    for task in tasks:
        run_guided(target, tok, task, None, args.max_new_tokens, device)  # warm-up: compiles the masks
        ref, ref_t = run_guided(target, tok, task, None, args.max_new_tokens, device)
        n_tok = len(ref.token_ids[0])
        entry = {"task": task["name"], "kind": task["kind"], "tokens": n_tok, "none_s": ref_t, "drafters": {}}
        r = rows["none"]
        r["tokens"] += n_tok
        r["seconds"] += ref_t
        r["same"] += 1
        if task["kind"] == "json":
            r["json_tokens"] += n_tok
            r["json_seconds"] += ref_t
        for name in names:
            out, t = run_guided(target, tok, task, make(name), args.max_new_tokens, device)
            s = out.draft_stats
            r = rows[name]
            same = out.token_ids == ref.token_ids
            r["tokens"] += len(out.token_ids[0])
            r["seconds"] += t
            r["drafted"] += s.drafted
            r["accepted"] += s.accepted
            r["rounds"] += s.rounds
            r["emitted"] += s.emitted
            r["same"] += int(same)
            if task["kind"] == "json":
                r["json_tokens"] += len(out.token_ids[0])
                r["json_seconds"] += t
            entry["drafters"][name] = {"seconds": t, "same": same, "accept": s.acceptance_rate,
                                       "tok_per_pass": s.mean_accepted_length}
        per_task.append(entry)
        print(f"{task['name']:<28} {n_tok:>4} tok  none {n_tok / ref_t:7.1f} tok/s  " + "  ".join(
            f"{n} {len(ref.token_ids[0]) / entry['drafters'][n]['seconds']:7.1f}{'' if entry['drafters'][n]['same'] else '*'}"
            for n in names), flush=True)

    # -- anchors: unconstrained --------------------------------------------------------------------
    anchors = {}
    prompts = [t["prompt"] for t in tasks if t["kind"] == "json"] or [t["prompt"] for t in tasks]
    for label, kw in (("hf_greedy", {}), ("hf_assisted", {"assistant_model": draft_model}),
                      ("hf_prompt_lookup", {"prompt_lookup_num_tokens": 10})):
        run_hf(target, tok, prompts[0], 8, device, **kw)
        n, s = 0, 0.0
        for p in prompts:
            k, t = run_hf(target, tok, p, args.max_new_tokens, device, **kw)
            n, s = n + k, s + t
        anchors[label] = n / s
    anything = AnyText()
    for label, d in (("guided_any_model", "model"), ("guided_any_prompt_lookup", "prompt_lookup"), ("guided_any_none", None)):
        n, s = 0, 0.0
        for t in tasks:
            if t["kind"] != "json":
                continue
            out, sec = run_guided(target, tok, t, make(d) if d else None, args.max_new_tokens, device, constraint=anything)
            n, s = n + len(out.token_ids[0]), s + sec
        anchors[label] = n / s if s else float("nan")

    verify = {"target": verify_cost(target, device)}
    if args.large_target:
        verify["large_target"] = verify_cost(large_target(device, dtype), device)

    # -- report -------------------------------------------------------------------------------------
    base = rows["none"]["tokens"] / rows["none"]["seconds"]
    base_json = rows["none"]["json_tokens"] / max(rows["none"]["json_seconds"], 1e-9)
    print(f"\ndevice: {_device_name(device)}  dtype: {dtype}  target: {target_path}  draft: {draft_path}")
    print(f"{'drafter':<16}{'tok/s':>9}{'speedup':>9}{'JSON x':>8}{'accept':>8}{'tok/pass':>9}{'same':>7}")
    summary = {}
    for name, r in rows.items():
        tps = r["tokens"] / r["seconds"]
        jx = (r["json_tokens"] / max(r["json_seconds"], 1e-9)) / base_json if r["json_seconds"] else float("nan")
        acc = r["accepted"] / r["drafted"] if r["drafted"] else float("nan")
        tpp = r["emitted"] / r["rounds"] if r["rounds"] else 1.0
        summary[name] = {"tok_per_s": tps, "speedup": tps / base, "json_speedup": jx, "acceptance": acc,
                         "tokens_per_pass": tpp, "same": f"{r['same']}/{len(tasks)}"}
        print(f"{name:<16}{tps:9.1f}{tps / base:9.2f}{jx:8.2f}{acc:8.2f}{tpp:9.2f}{r['same']:>4}/{len(tasks)}")
    print("\nunconstrained anchors (tok/s): " + ", ".join(f"{k} {v:.1f}" for k, v in anchors.items()))
    ratios = {}
    if "model" in summary:
        ratios["constrained_model_vs_hf_assisted"] = summary["model"]["tok_per_s"] / anchors["hf_assisted"]
        ratios["constrained_model_vs_guided_any_model"] = summary["model"]["tok_per_s"] / anchors["guided_any_model"]
    if "prompt_lookup" in summary:
        ratios["constrained_lookup_vs_hf_prompt_lookup"] = summary["prompt_lookup"]["tok_per_s"] / anchors["hf_prompt_lookup"]
        ratios["constrained_lookup_vs_guided_any_lookup"] = summary["prompt_lookup"]["tok_per_s"] / anchors["guided_any_prompt_lookup"]
    print("ratios: " + ", ".join(f"{k} {v:.2f}" for k, v in ratios.items()))
    print("verify cost (ms for k tokens): " + "; ".join(
        f"{m}: " + ", ".join(f"k={k} {v * 1e3:.1f}" for k, v in c.items()) for m, c in verify.items()))

    result = {
        "device": _device_name(device), "dtype": str(dtype), "torch": torch.__version__, "python": platform.python_version(),
        "threads": torch.get_num_threads(), "target": target_path, "draft": draft_path,
        "target_parameters": sum(p.numel() for p in target.parameters()),
        "draft_parameters": sum(p.numel() for p in draft_model.parameters()),
        "max_new_tokens": args.max_new_tokens, "summary": summary, "anchors_tok_per_s": anchors, "ratios": ratios,
        "verify_seconds": verify, "tasks": per_task,
    }
    out = Path(args.json) if args.json else REPO / "benchmarks" / "results" / f"speculative-{device.type}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    write_results(out, result, default=str)
    print(f"wrote {out}")


def _device_name(device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.machine()}, {torch.get_num_threads()} threads)"


if __name__ == "__main__":
    main()
