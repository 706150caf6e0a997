"""Diffusion-LM constraint speed and effect: infilling-check latency, checking's share of generation
time, and how often outputs parse with and without the constraint.

    python benchmarks/diffusion.py [--sizes 64,128,256] [--grammars json,schema,c,python] \
        [--row-seconds 20] [--model runs/diffusion-tiny] [--samples 6] [--device cpu] [--json out.json]

1. Check latency.  For each grammar and canvas size a valid document of about that many
   Llama-3 tokens is "decoded" the way a masked-diffusion sampler does it: positions are
   unmasked one at a time (random order, and left to right in blocks of 32 as in LLaDA's
   semi-autoregressive mode), and before each one the true token and three wrong candidates
   (tokens of the same document, so plausible ones) are checked.  Each check is timed with the
   persistent, incremental checker, and (for about 48 checks per row, evenly spread) from
   scratch: a new checker with empty charts and no previous witness (the token-class tables,
   built once per grammar, are shared).  Every check decides (no budget).  Reported:
   p50/p90/p99 per check, split by answer, which step decided and each step's percentiles, and
   the published method's decision problem (Mündler et al. 2025: every masked run is any
   string) on the same canvases: its time and how often it says yes where the answer is no.
   Grammars: JSON, a JSON-Schema-derived grammar (``DOC_SCHEMA``), the C-like grammar below,
   and the shipped Python grammar (reported as unsupported: its indenter is a post-lexer).
2. Generation.  A masked-diffusion model fills canvases with and without the grammar: the share
   of time spent checking, and the rate of outputs that parse.  The model is ``--model`` (a
   Hugging Face masked LM folder, e.g. guided's own), else guided's shipped diffusion model if
   present, else a tiny randomly initialised ModernBERT (noise: it shows the worst case).

Nothing here is imported by the library.  Results go to ``benchmarks/results/diffusion.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import signal
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from guided.diffusion import InfillingChecker, canvas_parts, generate, parse_bytes, slots_of  # noqa: E402
from guided.diffusion.chart import Chart  # noqa: E402
from guided.grammars import Grammar, load_grammar  # noqa: E402
from guided.grammars.lark_loader import GrammarError  # noqa: E402
from guided.tokenizers import load_tokenizer  # noqa: E402
from guided.vocab import Vocabulary  # noqa: E402

from provenance import write_results  # benchmarks/provenance.py: machine, versions, command, date

C_LIKE = r"""
start: function+
function: type NAME "(" [params] ")" block
params: param ("," param)*
param: type NAME
type: "int" | "float" | "char" | "void"
block: "{" statement* "}"
?statement: decl ";"
    | expr ";"
    | "return" [expr] ";"
    | "if" "(" expr ")" statement ["else" statement]
    | "while" "(" expr ")" statement
    | "for" "(" [expr] ";" [expr] ";" [expr] ")" statement
    | block
decl: type NAME ["=" expr]
?expr: assign
?assign: NAME "=" assign | cmp
?cmp: sum | sum CMP sum
?sum: term | sum ADDOP term
?term: unary | term MULOP unary
?unary: atom | "-" unary | "!" unary
?atom: NUMBER | STRING | NAME | NAME "(" [args] ")" | "(" expr ")"
args: expr ("," expr)*
CMP: "==" | "!=" | "<" | ">" | "<=" | ">="
ADDOP: "+" | "-"
MULOP: "*" | "/" | "%"
NAME: /[a-zA-Z_][a-zA-Z_0-9]*/
NUMBER: /[0-9]+(\.[0-9]+)?/
STRING: /"([^"\\\n]|\\.)*"/
%ignore /[ \t\n]+/
%ignore /\/\/[^\n]*/
"""

MASK = -1  # canvas placeholder for a masked position (any id outside the vocabulary's used range works)


def json_document(rng: random.Random, target_tokens: int, tok) -> str:
    """A JSON object of at most ``target_tokens - 4`` tokens, as long as that allows."""
    doc: dict = {"id": rng.randint(1, 9999), "name": "Zoë Müller", "tags": ["admin", "dev"], "items": []}
    while True:
        i = len(doc["items"])
        item = {"sku": f"X-{i}", "qty": rng.randint(1, 99), "price": round(rng.random() * 100, 2), "ok": i % 2 == 0}
        bigger = dict(doc, items=doc["items"] + [item])
        if len(tok.encode(json.dumps(bigger), add_special_tokens=False)) > target_tokens - 4:
            return json.dumps(doc)
        doc = bigger


def c_document(rng: random.Random, target_tokens: int, tok) -> str:
    """C-like functions of at most ``target_tokens - 4`` tokens, grown a statement at a time."""
    statements = [
        lambda k: "int s = 0;",
        lambda k: f"for (s = 0; s < a; s = s + 1) {{ if (s % {rng.randint(2, 9)} == 0) b = b * 2; }}",
        lambda k: f"while (a > {rng.randint(0, 9)}) a = a / 2;",  # no '-': greedy lexing makes it MINUS, not ADDOP
        lambda k: f'return s + g(a, "x{k}");',
    ]
    funcs: list[list[str]] = []
    k = 0

    def render(fs):
        return "".join(f"int f{i}(int a, float b) {{\n  " + "\n  ".join(body) + "\n}\n" for i, body in enumerate(fs))

    while True:
        if not funcs or len(funcs[-1]) == len(statements):
            bigger = funcs + [[statements[0](k)]]
        else:
            bigger = funcs[:-1] + [funcs[-1] + [statements[len(funcs[-1])](k)]]
        if funcs and len(tok.encode(render(bigger), add_special_tokens=False)) > target_tokens - 4:
            return render(funcs)
        funcs = bigger
        k += 1


def percentiles(xs: list[float]) -> dict:
    if not xs:
        return {}
    xs = sorted(xs)
    pick = lambda q: xs[min(len(xs) - 1, int(q * len(xs)))] * 1000  # noqa: E731
    return {"n": len(xs), "p50_ms": round(pick(0.5), 2), "p90_ms": round(pick(0.9), 2), "p99_ms": round(pick(0.99), 2), "mean_ms": round(statistics.mean(xs) * 1000, 2)}


def schema_document(rng: random.Random, target_tokens: int, tok) -> str:
    """A document of :data:`DOC_SCHEMA` (``json_document`` writes exactly that shape), non-ASCII
    characters written as UTF-8 rather than ``\\u`` escapes (the schema grammar's length-capped
    string terminal does not take ``\\u`` escapes)."""
    return json.dumps(json.loads(json_document(rng, target_tokens, tok)), ensure_ascii=False)


#: the JSON-Schema-derived grammar of the latency rows: the shape ``json_document`` writes
DOC_SCHEMA = {
    "type": "object",
    "properties": {
        "id": {"type": "integer", "minimum": 1},
        "name": {"type": "string", "maxLength": 40},
        "tags": {"type": "array", "items": {"type": "string"}},
        "items": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "sku": {"type": "string"},
                    "qty": {"type": "integer"},
                    "price": {"type": "number"},
                    "ok": {"type": "boolean"},
                },
                "required": ["sku", "qty", "price", "ok"],
                "additionalProperties": False,
            },
        },
    },
    "required": ["id", "name", "tags", "items"],
    "additionalProperties": False,
}

DOCUMENTS = {"json": json_document, "schema": schema_document, "c": c_document}


class CheckTooLong(Exception):
    """A check ran past the benchmark's ``--check-limit`` (a measurement cap, not an answer)."""


def timed_result(checker, parts, limit: float | None, **kw):
    """``(result or None, seconds)``; None when the check passed ``limit`` seconds (SIGALRM)."""
    if limit is None:
        t0 = time.perf_counter()
        r = checker.result(parts, **kw)
        return r, time.perf_counter() - t0

    def stop(signum, frame):
        raise CheckTooLong

    old = signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, limit)
    t0 = time.perf_counter()
    try:
        r = checker.result(parts, **kw)
    except CheckTooLong:
        r = None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    return r, time.perf_counter() - t0


def latency(
    grammar, name: str, size: int, tok, vocab, order: str, seed: int = 0, row_seconds: float | None = None, check_limit: float | None = None,
    positions_cap: int | None = None, incremental_only: bool = False,
) -> dict:
    """Decode one document of about ``size`` tokens in ``order``, checking four candidates per position.

    Besides guided's checker, each canvas is also decided the way the published method frames it
    (Mündler et al. 2025: every run of masked positions is *any* string, token counts dropped):
    a relaxed chart, timed, and compared with the exact answer.  ``check_limit``: a check that runs
    longer is stopped and counted in ``over_limit`` (its time enters the percentiles as the limit,
    so they are lower bounds); the checker is then replaced by a fresh one.  ``positions_cap``: decode
    only that many positions (fixed work: runs of two versions compare check for check, since the
    canvases do not depend on the answers); ``incremental_only``: skip the from-scratch and
    relaxed-chart timings."""
    rng = random.Random(seed)
    text = DOCUMENTS[name](rng, size, tok)
    ids = tok.encode(text, add_special_tokens=False)[:size]
    assert parse_bytes(InfillingChecker(grammar, vocab).lexer, vocab.decode(ids)), "benchmark document must parse"
    n = size  # canvas: the document, then EOS padding positions (masked: an optional tail)
    eos = min(vocab.eos_ids)
    truth = ids + [eos] * (n - len(ids))
    checker = InfillingChecker(grammar, vocab)
    paper = Chart(checker.lexer, vocab)  # the published method's decision problem (gaps: any string)
    if order == "random":
        positions = rng.sample(range(n), n)
    else:  # left to right, blocks of 32, random inside a block
        positions = []
        for b in range(0, n, 32):
            block = list(range(b, min(n, b + 32)))
            rng.shuffle(block)
            positions += block
    canvas = [MASK] * n
    times = {True: [], False: []}
    by_how: dict = {}
    scratch: list[float] = []
    paper_times: list[float] = []
    paper_wrong_yes = 0  # the relaxed problem says completable, the exact answer is no
    over_limit = 0
    over: list[float] = []
    scratch_stride = max(4, 4 * n // 48)  # about 48 from-scratch checks per row
    k = 0
    done = 0
    start = time.perf_counter()
    for pos in positions[:positions_cap]:
        if row_seconds is not None and time.perf_counter() - start > row_seconds:
            break  # a time cap per row: the positions decoded so far are reported
        done += 1
        if canvas[pos] != MASK:
            continue
        wrong = [t for t in rng.sample(ids, min(len(ids), 6)) if t != truth[pos]][:3]
        cands = wrong + [truth[pos]]
        rng.shuffle(cands)
        for cand in cands:
            trial = canvas[:pos] + [cand] + canvas[pos + 1 :]
            if cand == eos:
                trial[pos:] = [eos] * (n - pos)
            parts = canvas_parts(trial, MASK, vocab.eos_ids)
            r, dt = timed_result(checker, parts, check_limit)
            paper_ok = True
            if not incremental_only:
                relaxed = paper_slots(slots_of(parts, vocab))
                t0 = time.perf_counter()
                paper_ok = paper.run(relaxed)
                paper_times.append(time.perf_counter() - t0)
            if r is None:
                over_limit += 1
                over.append(dt)
                checker = InfillingChecker(grammar, vocab)  # its charts stopped half-built
            else:
                times[r.ok].append(dt)
                by_how.setdefault(r.how, []).append(dt)
                paper_wrong_yes += bool(paper_ok and not r.ok) and not incremental_only
                assert paper_ok or not r.ok, "the relaxed problem refuted a completable canvas"
            if k % scratch_stride == 0 and not incremental_only:
                r2, dt2 = timed_result(InfillingChecker(grammar, vocab), parts, check_limit)
                scratch.append(dt2)
                assert r2 is None or r is None or r2.ok == r.ok, (r.how, r2.how)
            k += 1
        canvas[pos] = truth[pos]
        if truth[pos] == eos:
            canvas[pos:] = [eos] * (n - pos)
    all_times = times[True] + times[False] + over
    return {
        "grammar": name,
        "canvas": size,
        "order": order,
        "checks": len(all_times),
        "positions_done": done,
        "positions": n,
        "incremental": percentiles(all_times),
        "incremental_yes": percentiles(times[True]),
        "incremental_no": percentiles(times[False]),
        "from_scratch": percentiles(scratch),
        "decided_by": {how: len(ts) for how, ts in by_how.items()},
        "seconds_by_step": {how: percentiles(ts) for how, ts in by_how.items()},
        "paper_relaxed": {**percentiles(paper_times), "wrong_yes": paper_wrong_yes},
        "check_limit_s": check_limit,
        "over_limit": over_limit,
    }


def paper_slots(slots: tuple) -> tuple:
    """Every run of hole slots as one gap of any bytes (no token count)."""
    out: list = []
    i = 0
    while i < len(slots):
        if slots[i][0] != "h":
            out.append(slots[i])
            i += 1
            continue
        j = i
        while j < len(slots) and slots[j][0] == "h":
            j += 1
        out.append(("g", None))
        i = j
    return tuple(out)


def load_model(path: str | None, device: str):
    import torch

    if path:
        from transformers import AutoModelForMaskedLM, AutoTokenizer

        model = AutoModelForMaskedLM.from_pretrained(path, dtype=torch.float32).eval().to(device)
        return model, AutoTokenizer.from_pretrained(path), path
    try:
        from guided.models import load_diffusion_model

        model, tok = load_diffusion_model()
        return model.to(device), tok, "guided shipped diffusion model"
    except Exception:  # noqa: BLE001 - fall back to a random model
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        from diffusion.test_generate import tiny_model

        return tiny_model().to(device), load_tokenizer("llama3"), "tiny random ModernBERT (2 layers, d=32)"


def generation(model, tok, label: str, grammars: dict, samples: int, length: int) -> list[dict]:
    out = []
    for name, (grammar, prompt) in grammars.items():
        vocab = Vocabulary.from_tokenizer(tok)
        checker = InfillingChecker(grammar, tok)
        row = {"model": label, "grammar": name, "length": length, "samples": samples}
        ok_u = ok_c = 0
        fwd = chk = total = 0.0
        checks = fallbacks = 0
        for seed in range(samples):
            u = generate(model, tok, prompt, None, length=length, steps=length, block_length=16, temperature=0.8, seed=seed)
            ok_u += parse_bytes(checker.lexer, u.encode("utf-8"))
            r = generate(
                model, tok, prompt, grammar, length=length, steps=length, block_length=16, temperature=0.8,
                seed=seed, checker=checker, return_details=True,
            )
            ok_c += parse_bytes(checker.lexer, r.text.encode("utf-8"))
            fwd += r.forward_seconds
            chk += r.check_seconds
            total += r.total_seconds
            checks += r.checks
            fallbacks += r.fallbacks
        row.update(
            unconstrained_parse_rate=ok_u / samples,
            constrained_parse_rate=ok_c / samples,
            forward_seconds=round(fwd, 2),
            check_seconds=round(chk, 2),
            total_seconds=round(total, 2),
            check_share_of_total=round(chk / total, 3) if total else None,
            check_over_forward=round(chk / fwd, 2) if fwd else None,
            checks=checks,
            witness_fallbacks=fallbacks,
            example=r.text[:120],
        )
        out.append(row)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="64,128,256")
    ap.add_argument("--grammars", default="json,schema,c,python")
    ap.add_argument("--orders", default="random,blocks")
    ap.add_argument("--model", default=None, help="masked-LM folder for the generation part")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--samples", type=int, default=6)
    ap.add_argument("--length", type=int, default=48)
    ap.add_argument("--skip-generation", action="store_true")
    ap.add_argument("--skip-latency", action="store_true")
    ap.add_argument("--gen-grammars", default="json-schema,arithmetic,c")
    ap.add_argument("--row-seconds", type=float, default=None, help="stop a latency row after this long (reports positions done)")
    ap.add_argument("--check-limit", type=float, default=None, help="stop a check after this many seconds (counted as over_limit)")
    ap.add_argument("--positions", type=int, default=None, help="decode only this many positions per latency row (fixed work, for before/after runs)")
    ap.add_argument("--incremental-only", action="store_true", help="time only the persistent checker (no from-scratch or relaxed-chart timings)")
    ap.add_argument("--json", default=str(Path(__file__).parent / "results" / "diffusion.json"))
    args = ap.parse_args()

    import torch

    torch.set_num_threads(1)
    tok = load_tokenizer("llama3")
    vocab = Vocabulary.from_tokenizer(tok)
    from guided.json_schema import JSONSchema

    grammars = {"json": load_grammar("json"), "c": Grammar(C_LIKE), "schema": JSONSchema(DOC_SCHEMA).grammar}
    results: dict = {
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "python": platform.python_version(),
        "latency": [],
        "generation": [],
    }
    for name in [] if args.skip_latency else args.grammars.split(","):
        if name == "python":
            try:
                InfillingChecker(load_grammar("python"), vocab)
            except GrammarError as e:  # the indenter is a post-lexer with a stack: not handled
                results["latency"].append({"grammar": "python", "unsupported": str(e)})
                print("python:", e, flush=True)
                continue
        t0 = time.perf_counter()
        InfillingChecker(grammars[name], vocab).check([])  # warm the token-class tables
        lx = InfillingChecker(grammars[name], vocab).lexer
        seen = {lx.q0}
        todo = [lx.q0]
        while todo:  # every lexer state a token can end in
            for c in lx.classes(todo.pop(), vocab):
                if c.end not in seen:
                    seen.add(c.end)
                    todo.append(c.end)
        results.setdefault("class_tables_seconds", {})[name] = round(time.perf_counter() - t0, 2)
        for size in (int(s) for s in args.sizes.split(",")):
            for order in args.orders.split(","):
                row = latency(grammars[name], name, size, tok, vocab, order, row_seconds=args.row_seconds, check_limit=args.check_limit,
                              positions_cap=args.positions, incremental_only=args.incremental_only)
                results["latency"].append(row)
                Path(args.json).parent.mkdir(parents=True, exist_ok=True)
                write_results(args.json, results)  # partial results survive a kill
                nan = float("nan")  # --incremental-only: no from-scratch or relaxed timings
                inc = row["incremental"]
                scr = {"p50_ms": nan, "p99_ms": nan, **row["from_scratch"]}
                pp = {"p99_ms": nan, **row["paper_relaxed"]}
                print(
                    f"{name:6s} canvas {size:4d} {order:6s} checks {row['checks']:5d} pos {row['positions_done']}/{size} | incremental p50 {inc['p50_ms']:7.2f} "
                    f"p90 {inc['p90_ms']:7.2f} p99 {inc['p99_ms']:8.2f} ms | from scratch p50 {scr['p50_ms']:7.2f} "
                    f"p99 {scr['p99_ms']:8.2f} ms | relaxed (paper) p99 {pp['p99_ms']:7.2f} ms, wrong yes {pp['wrong_yes']} | over limit {row['over_limit']} | {row['decided_by']}",
                    flush=True,
                )
    if not args.skip_generation:
        model, mtok, label = load_model(args.model, args.device)
        from guided.json_schema import JSONSchema

        schema = {
            "type": "object",
            "properties": {"name": {"type": "string", "maxLength": 12}, "age": {"type": "integer", "minimum": 0, "maximum": 120}},
            "required": ["name", "age"],
        }
        gens = {
            "json-schema": (JSONSchema(schema), '{"name": "Ann", "age": 31}<|end_of_text|>'),
            "arithmetic": (load_grammar("arithmetic"), "1 + 2 * x<|end_of_text|>"),
            "c": (grammars["c"], "int f(int a) { return a; }<|end_of_text|>"),
        }
        gens = {k: v for k, v in gens.items() if k in args.gen_grammars.split(",")}
        results["generation"] = generation(model, mtok, label, gens, args.samples, args.length)
        for row in results["generation"]:
            print(
                f"{row['grammar']:12s} {row['model'][:40]:40s} parse rate: unconstrained {row['unconstrained_parse_rate']:.2f} "
                f"constrained {row['constrained_parse_rate']:.2f} | checking {row['check_seconds']}s of {row['total_seconds']}s "
                f"({row['check_share_of_total']}), forward {row['forward_seconds']}s",
                flush=True,
            )
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    write_results(args.json, results)
    print(table(results))
    print("wrote", args.json)


def table(results: dict) -> str:
    """The summary as a Markdown table (latency rows, then generation rows)."""
    lines = [
        "| grammar | canvas | order | positions | checks | incr. p50 ms | incr. p90 ms | incr. p99 ms | scratch p50 ms | scratch p99 ms "
        "| exact-chart checks | over limit | relaxed (paper) p99 ms | relaxed wrong yes |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results["latency"]:
        if "unsupported" in r:
            lines.append(f"| {r['grammar']} | unsupported: {r['unsupported']} |")
            continue
        inc, scr, pp = r["incremental"], r["from_scratch"], r["paper_relaxed"]
        lines.append(
            f"| {r['grammar']} | {r['canvas']} | {r['order']} | {r['positions_done']}/{r['positions']} | {r['checks']} "
            f"| {inc['p50_ms']} | {inc['p90_ms']} | {inc['p99_ms']} "
            f"| {scr.get('p50_ms')} | {scr.get('p99_ms')} | {r['decided_by'].get('exact', 0)} | {r.get('over_limit', 0)} | {pp.get('p99_ms')} | {pp['wrong_yes']} |"
        )
    if results["generation"]:
        lines += [
            "",
            "| grammar | model | parse rate unconstr. | parse rate constr. | check s | forward s | total s | check / forward |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for g in results["generation"]:
            lines.append(
                f"| {g['grammar']} | {g['model']} | {g['unconstrained_parse_rate']:.2f} | {g['constrained_parse_rate']:.2f} "
                f"| {g['check_seconds']} | {g['forward_seconds']} | {g['total_seconds']} | {g['check_over_forward']} |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
