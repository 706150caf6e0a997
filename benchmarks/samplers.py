"""Samplers benchmark: what each sampler costs per generated token, and genlm-control beside it.

    python benchmarks/samplers.py [--model PATH] [--device cuda] [--max-tokens 48] [--runs 2]
                                  [--samplers masking,awrs,smc4,smc16,genlm] [--json OUT]

For every task (JSON Schema and grammar constraints over the project's trained model,
``guided.models.load_default_model()`` unless ``--model`` names another folder) and every
sampler -- ``Masking``, ``AWRS``, ``SMC(N=4)``, ``SMC(N=16)`` -- it reports, per generated
token (for SMC: per particle-token):

* ``checks/tok``: constraint evaluations; a full mask counts as ``vocab.size`` of them (the
  ``masks/tok`` column shows how many full masks were computed); ``lookups/tok``: checks AWRS
  answered from a mask the state already held (``cached_mask``: no constraint work). Every
  cell starts from cold caches, so earlier cells never help later ones;
* ``ms/tok``: wall time; ``fwd ms/tok``: time inside the model's forward passes (timed by
  hooks on the model, with a device synchronisation on CUDA, for every sampler alike);
* ``outside fwd``: the share of wall time spent outside the forward pass;
* ``constraint``: time inside constraint calls, as a share of forward time.

``genlm-control`` (PyPI; used only here) runs its own ``AWRS`` sampler on the same model
through its Hugging Face backend (``AsyncTransformer``), with the same constraint wrapped as
a genlm ``Potential`` (so the constraint's cost is the same), as plain AWRS sampling
(``smc`` with one particle and no resampling). Its checks are the calls of the condition.
If genlm-control is not installed the row says so.

Targets (issue 5): AWRS < 5 checks per token on the JSON tasks; AWRS constraint overhead
< 10% of forward time on GPU; AWRS per-token time at or below genlm-control's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import guided  # noqa: E402
from guided.grammars import Regex, load_grammar  # noqa: E402
from guided.json_schema import JSONSchema  # noqa: E402
from guided.samplers import AWRS, SMC, Masking  # noqa: E402
from guided.vocab import Vocabulary  # noqa: E402

from provenance import write_results  # benchmarks/provenance.py: machine, versions, command, date

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 24},
        "age": {"type": "integer", "minimum": 0, "maximum": 150},
        "email": {"type": "string", "format": "email"},
    },
    "required": ["name", "age"],
    "additionalProperties": False,
}
PRODUCT = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "title": {"type": "string", "maxLength": 40},
        "price": {"type": "number", "minimum": 0},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 12}, "maxItems": 4},
        "in_stock": {"type": "boolean"},
    },
    "required": ["id", "title", "price"],
    "additionalProperties": False,
}
EVENT = {
    "type": "object",
    "properties": {
        "event": {"enum": ["click", "view", "purchase"]},
        "date": {"type": "string", "format": "date"},
        "user": {"type": "object", "properties": {"id": {"type": "string", "maxLength": 16}}, "required": ["id"],
                 "additionalProperties": False},
    },
    "required": ["event", "date", "user"],
    "additionalProperties": False,
}

# One example instance in the prompt, as a user would write it: the model sees the format.
TASKS = {
    # name: (kind, prompt, constraint factory)
    "json:person": ("json", '{"name": "Ada Lovelace", "age": 36, "email": "ada@example.com"}\n',
                    lambda: JSONSchema(PERSON)),
    "json:product": ("json", '{"id": 7, "title": "Desk lamp", "price": 19.5, "tags": ["home"], "in_stock": true}\n',
                     lambda: JSONSchema(PRODUCT)),
    "json:event": ("json", '{"event": "view", "date": "2024-05-01", "user": {"id": "u-17"}}\n',
                   lambda: JSONSchema(EVENT)),
    "grammar:json": ("grammar", '{"name": "config", "values": [1, 2, 3]}\n', lambda: load_grammar("json")),
    "grammar:arithmetic": ("grammar", "x = ", lambda: load_grammar("arithmetic")),
    "regex:date": ("grammar", 'date: "', lambda: Regex(r"(19|20)[0-9]{2}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])")),
}

SAMPLERS = {
    "masking": lambda: Masking(),
    "awrs": lambda: AWRS(),
    "smc4": lambda: SMC(4),
    "smc16": lambda: SMC(16),
}


class ForwardTimer:
    """Accumulates the time spent inside ``model.forward`` (hooks; syncs on CUDA)."""

    def __init__(self, model):
        self.seconds = 0.0
        self._t0 = 0.0
        self._cuda = next(model.parameters()).device.type == "cuda"
        model.register_forward_pre_hook(self._pre)
        model.register_forward_hook(self._post)

    def _sync(self):
        if self._cuda:
            torch.cuda.synchronize()

    def _pre(self, module, args):
        self._sync()
        self._t0 = time.perf_counter()

    def _post(self, module, args, out):
        self._sync()
        self.seconds += time.perf_counter() - self._t0


def run_guided(model, tokenizer, timer, task, sampler_name, max_tokens, runs, vocab):
    kind, prompt, factory = TASKS[task]
    load_grammar.cache_clear()  # every cell starts from cold mask caches (no help from earlier cells)
    constraint = factory()
    constraint.start(vocab)  # compile outside the timed region
    row = dict(tokens=0, checks=0, lookups=0, masks=0, seconds=0.0, forward=0.0, constraint=0.0, finished=0, outputs=0)
    for seed in range(runs):
        sampler = SAMPLERS[sampler_name]()
        before = timer.seconds
        t0 = time.perf_counter()
        out = guided.generate(model, tokenizer, prompt, constraint, sampler=sampler, max_new_tokens=max_tokens,
                              seed=seed, return_details=True)
        row["seconds"] += time.perf_counter() - t0
        row["forward"] += timer.seconds - before
        s = out.stats
        row["tokens"] += s.tokens
        row["checks"] += s.checks
        row["lookups"] += s.lookups
        row["masks"] += s.masks
        row["constraint"] += s.constraint_seconds
        row["finished"] += sum(out.finished)
        row["outputs"] += len(out.finished)
        row.setdefault("sample", out.texts[0][:60])
    return row


# -- genlm-control ------------------------------------------------------------------------------


def genlm_available() -> str | None:
    """None when genlm-control can run here, else why not."""
    try:
        import genlm.control  # noqa: F401
        from genlm.backend.llm import AsyncTransformer  # noqa: F401
    except Exception as exc:  # pragma: no cover - depends on the environment
        return f"genlm-control not importable ({type(exc).__name__}: {exc}); pip install genlm-control"
    return None


class _GenlmRunner:
    """genlm-control's AWRS on the same model, with our constraint as its boolean condition."""

    def __init__(self, model, tokenizer, vocab):
        from genlm.backend.llm import AsyncTransformer
        from genlm.control import PromptedLLM

        self.vocab = vocab
        self.llm = AsyncTransformer(model, tokenizer)
        # genlm spells special tokens by their text; the same ids end generation as in guided.
        eos = [tokenizer.convert_ids_to_tokens(i).encode() for i in sorted(vocab.eos_ids)]
        self.lm = PromptedLLM(self.llm, eos_byte_strings=eos)

    def condition(self, constraint):
        from genlm.control import Potential

        lm, vocab = self.lm, self.vocab

        class GuidedCondition(Potential):
            """A guided constraint as a genlm boolean potential (0 or -inf), states cached by prefix."""

            def __init__(self):
                super().__init__(lm.vocab, tables=lm.token_maps.tables)
                self.states = {(): constraint.start(vocab)}
                self.checks = 0
                self.seconds = 0.0

            def _state(self, context):
                key = tuple(t.token_id for t in context)
                if key not in self.states:
                    parent = self._state(context[:-1])
                    self.states[key] = None if parent is None else parent.advance(key[-1])
                return self.states[key]

            async def prefix(self, context):
                t0 = time.perf_counter()
                self.checks += 1
                ok = self._state(context) is not None
                self.seconds += time.perf_counter() - t0
                return 0.0 if ok else -math.inf

            async def complete(self, context):
                t0 = time.perf_counter()
                self.checks += 1
                state = self._state(context)
                ok = state is not None and state.is_accepting()
                self.seconds += time.perf_counter() - t0
                return 0.0 if ok else -math.inf

        return GuidedCondition()

    def run(self, timer, task, max_tokens, runs, tokenizer):
        from genlm.control import AWRS as GenlmAWRS

        kind, prompt, factory = TASKS[task]
        constraint = factory()
        constraint.start(self.vocab)
        self.lm.prompt_ids = tokenizer(prompt)["input_ids"]
        row = dict(tokens=0, checks=0, masks=0, seconds=0.0, forward=0.0, constraint=0.0, finished=0, outputs=0)
        for seed in range(runs):
            condition = self.condition(constraint)
            sampler = GenlmAWRS(self.lm, condition, seed=seed)
            self.llm.clear_cache()
            before = timer.seconds
            t0 = time.perf_counter()
            sequences = asyncio.run(sampler.smc(n_particles=1, ess_threshold=0.0, max_tokens=max_tokens))
            row["seconds"] += time.perf_counter() - t0
            row["forward"] += timer.seconds - before
            context = sequences.contexts[0]
            row["tokens"] += len(context)
            row["checks"] += condition.checks
            row["constraint"] += condition.seconds
            # genlm ends a particle with its EOS also at max_tokens: finished = EOS after a complete word.
            ends = bool(context) and not hasattr(context[-1], "token_id")
            state = condition._state(context[:-1]) if ends else None
            row["finished"] += int(state is not None and state.is_accepting())
            row["outputs"] += 1
            text = b"".join(t.byte_string for t in context if hasattr(t, "byte_string"))
            row.setdefault("sample", text.decode("utf-8", errors="replace")[:60])
        return row


# -- report -------------------------------------------------------------------------------------


def summarise(row, vocab_size):
    tok = max(row["tokens"], 1)
    return {
        "tokens": row["tokens"],
        "checks_per_token": (row["checks"] + row["masks"] * vocab_size) / tok,
        "single_checks_per_token": row["checks"] / tok,
        "lookups_per_token": row.get("lookups", 0) / tok,
        "masks_per_token": row["masks"] / tok,
        "ms_per_token": 1e3 * row["seconds"] / tok,
        "forward_ms_per_token": 1e3 * row["forward"] / tok,
        "outside_forward_share": 1.0 - row["forward"] / row["seconds"] if row["seconds"] else float("nan"),
        "constraint_over_forward": row["constraint"] / row["forward"] if row["forward"] else float("nan"),
        "finished": f'{row["finished"]}/{row["outputs"]}',
        "sample": row.get("sample", ""),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help="model folder (default: guided.models.load_default_model())")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--runs", type=int, default=2, help="seeds per task and sampler")
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument("--samplers", default="masking,awrs,smc4,smc16,genlm")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave as is)")
    ap.add_argument("--json", default="bench-results/samplers.json")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    if args.model:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(args.model)
        model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).to(args.device).eval()
        model_name = args.model
    else:
        from guided.models import default_model_path, load_default_model

        model, tokenizer = load_default_model(device=args.device)
        model_name = str(default_model_path())
    vocab = Vocabulary.from_tokenizer(tokenizer)
    timer = ForwardTimer(model)
    tasks = [t for t in args.tasks.split(",") if t]
    samplers = [s for s in args.samplers.split(",") if s]

    genlm_note = genlm_available() if "genlm" in samplers else "not requested"
    genlm = None
    if "genlm" in samplers and genlm_note is None:
        genlm = _GenlmRunner(model, tokenizer, vocab)

    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor() or "cpu"
    print(f"model {model_name} on {args.device} ({device}); torch threads {torch.get_num_threads()}; "
          f"max {args.max_tokens} tokens, {args.runs} run(s) per cell")
    header = (f"{'task':<20} {'sampler':<8} {'tokens':>6} {'checks/tok':>10} {'lookups/tok':>11} {'masks/tok':>9} {'ms/tok':>8} "
              f"{'fwd ms/tok':>10} {'outside fwd':>11} {'constraint':>10} {'done':>6}")
    print(header)
    print("-" * len(header))
    results: dict = {"model": model_name, "device": args.device, "device_name": device, "max_tokens": args.max_tokens,
                     "runs": args.runs, "genlm": genlm_note or "ok", "rows": []}
    for task in tasks:
        for name in samplers:
            if name == "genlm":
                if genlm is None:
                    print(f"{task:<20} {'genlm':<8} unavailable: {genlm_note}")
                    continue
                row = genlm.run(timer, task, args.max_tokens, args.runs, tokenizer)
            else:
                row = run_guided(model, tokenizer, timer, task, name, args.max_tokens, args.runs, vocab)
            s = summarise(row, vocab.size)
            results["rows"].append({"task": task, "sampler": name, **s})
            print(f"{task:<20} {name:<8} {s['tokens']:>6} {s['checks_per_token']:>10.1f} {s['lookups_per_token']:>11.1f} {s['masks_per_token']:>9.2f} "
                  f"{s['ms_per_token']:>8.2f} {s['forward_ms_per_token']:>10.2f} {s['outside_forward_share']:>10.0%} "
                  f"{s['constraint_over_forward']:>10.0%} {s['finished']:>6}")
            sys.stdout.flush()

    rows = results["rows"]

    def cell(task_prefix, sampler, key):
        vals = [r[key] for r in rows if r["task"].startswith(task_prefix) and r["sampler"] == sampler]
        return float(np.mean(vals)) if vals else float("nan")

    checks_json = cell("json:", "awrs", "checks_per_token")
    overhead = cell("", "awrs", "constraint_over_forward")
    outside = cell("", "awrs", "outside_forward_share")
    ratios = [
        a["ms_per_token"] / g["ms_per_token"]
        for a in rows if a["sampler"] == "awrs"
        for g in rows if g["sampler"] == "genlm" and g["task"] == a["task"] and g["ms_per_token"] > 0
    ]
    results["targets"] = {
        "awrs_checks_per_token_json": checks_json,
        "awrs_constraint_over_forward": overhead,
        "awrs_outside_forward_share": outside,
        "awrs_over_genlm_time_ratio_geomean": float(np.exp(np.mean(np.log(ratios)))) if ratios else None,
    }
    print()
    print(f"AWRS checks/token on JSON tasks: {checks_json:.2f} (target < 5)")
    print(f"AWRS constraint time / forward time: {overhead:.1%}; time outside forward: {outside:.1%} "
          f"(target < 10% on GPU; this run: {args.device})")
    if ratios:
        print(f"AWRS time per token / genlm-control's: geometric mean {results['targets']['awrs_over_genlm_time_ratio_geomean']:.2f} "
              f"over {len(ratios)} task(s) (target <= 1)")
    else:
        print(f"genlm-control: {genlm_note or 'no comparable rows'}")
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_results(path, results)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
