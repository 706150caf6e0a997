"""Grammar constraint speed: guided vs llguidance and XGrammar, same grammars, same tokens.

    /tmp/venv/bin/python benchmarks/grammars.py [--grammars json,sql] [--json out.json]
    /tmp/venv/bin/python benchmarks/grammars.py --batch [--batch-sizes 1,8,32,128] [--batch-schemas 24]

For each grammar: compile time, then for real inputs tokenised with the Llama-3 tokenizer,
the per-token time to compute the full mask (bitmask for the anchors) and to check one
token (the real next token).  Each engine first runs over a warm-up input of the same
grammar, then is timed on the measured inputs, token by token.  Our numbers are printed
as ratios to llguidance's and XGrammar's (>1 = we are slower).  Anchors are optional:
missing or failing ones are reported as n/a.  Nothing here is imported by the library.
With numba installed our token walks are compiled loops (``"walks": "compiled"`` in the
JSON); ``GUIDED_NO_NUMBA=1`` measures the numpy walks instead.

``--batch``: the batch column.  States are MaskBench positions (schemas from a stride
sample that every engine compiles, each cut at a random token of a valid instance), N of
them per batch, mixing schemas; each engine fills one preallocated int32 bitmask for the
batch (guided ``fill_bitmasks``, llguidance ``fill_next_token_bitmask_par``, XGrammar's
``BatchGrammarMatcher``), with one thread and with every core.  Every engine first fills a
quarter of the positions (schemas compiled, common states seen, as when serving); timed
batches take positions never filled before (each row's mask is new, as after a decoding
step).  Speedup is one thread's time over all cores', per core divided by the cores.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import sysconfig
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from guided.grammars import Grammar, shipped_grammar_path  # noqa: E402
from guided.grammars.shipped import SHIPPED_GRAMMARS  # noqa: E402
from guided.tokenizers import load_tokenizer  # noqa: E402
from guided.vocab import Vocabulary  # noqa: E402

from provenance import write_results  # benchmarks/provenance.py: machine, versions, command, date

STDLIB = Path(sysconfig.get_paths()["stdlib"])


def _json_docs():
    warm = json.dumps({"name": "warm", "values": [1, 2.5, -3e4, True, None], "nested": {"a": "b\n", "ok": False}}, indent=2)
    docs = [
        json.dumps(
            {
                "id": 12345,
                "user": {"name": "Zoë Müller", "email": "zoe@example.com", "tags": ["admin", "dev", "ops"]},
                "items": [{"sku": f"X-{i}", "qty": i, "price": 9.99 * i, "active": i % 2 == 0} for i in range(6)],
                "note": "multi-line\ntext with \"quotes\" and unicode: \u20ac \U0001f600",
                "empty": {},
                "nothing": None,
            },
            indent=2,
            ensure_ascii=False,
        ),
        json.dumps([{"k": i, "v": [i, str(i), {"deep": [True, False, None]}]} for i in range(8)]),
    ]
    return warm, docs


INPUTS = {
    "json": _json_docs,
    "arithmetic": lambda: (
        "1 + 2 * (3 - x)",
        ["f(x, 2) * -(3 + 4.5e2) ** 2 % y - sqrt(a*a + b*b) / (1.5 + .25)", "((((a + b) * c) / d) - e) ** -2 + g(h(i(j)))"],
    ),
    "sql": lambda: (
        "SELECT a FROM t WHERE b = 1",
        [
            "SELECT u.name, COUNT(*) AS n, SUM(o.total) FROM users u LEFT JOIN orders o ON o.user_id = u.id "
            "WHERE u.created > '2024-01-01' AND o.status IN ('paid', 'shipped') GROUP BY u.name "
            "HAVING COUNT(*) > 3 ORDER BY n DESC LIMIT 10;",
            "select distinct p.title from posts p where exists (select 1 from comments c where c.post_id = p.id "
            "and c.body like '%great%') and p.score between 10 and 100 order by p.title asc",
        ],
    ),
    "python": lambda: (
        (STDLIB / "colorsys.py").read_text()[:1200].rsplit("\n\n", 1)[0] + "\n",
        [(STDLIB / "textwrap.py").read_text()[:4000].rsplit("\n\n", 1)[0] + "\n"],
    ),
}


def pct(xs, q):
    return float(np.percentile(np.asarray(xs), q)) if xs else float("nan")


# -- engines -------------------------------------------------------------------------------
class Ours:
    name = "guided"

    def __init__(self, grammar_name, text, vocab):
        from guided.grammars import bytedfa, grammar

        grammar._trie_of(vocab)  # the vocabulary's byte trie: built once per process, not per grammar
        bytedfa._DFA_CACHE.clear()  # compile every terminal from scratch (Unicode class tables stay)
        t0 = time.perf_counter()
        _, start, postlex = SHIPPED_GRAMMARS[grammar_name]
        self.grammar = Grammar(text, start, postlex=postlex)
        self.state0 = self.grammar.start(vocab)
        self.compile_s = time.perf_counter() - t0

    def run(self, ids, times_mask, times_check):
        state = self.state0
        for t in ids:
            t0 = time.perf_counter()
            ok = state.allows(t)
            t1 = time.perf_counter()
            mask = state.allowed_mask()
            t2 = time.perf_counter()
            assert ok and mask[t]
            times_check.append(t1 - t0)
            times_mask.append(t2 - t1)
            state = state.advance(t)


class LLGuidance:
    name = "llguidance"

    def __init__(self, grammar_name, text, hf_tok, cache={}):
        import llguidance
        import llguidance.hf
        import llguidance.numpy

        self.llg = llguidance
        if "tok" not in cache:
            cache["tok"] = llguidance.hf.from_tokenizer(hf_tok)
        self.tok = cache["tok"]
        t0 = time.perf_counter()
        self.grm = llguidance.LLMatcher.grammar_from_lark(text)
        matcher = llguidance.LLMatcher(self.tok, self.grm)
        self.compile_s = time.perf_counter() - t0
        if matcher.is_error():
            raise RuntimeError(matcher.get_error().splitlines()[0])
        self.bitmask = llguidance.numpy.allocate_token_bitmask(1, self.tok.vocab_size)

    def run(self, ids, times_mask, times_check):
        m = self.llg.LLMatcher(self.tok, self.grm)
        fill = self.llg.numpy.fill_next_token_bitmask
        for t in ids:
            t0 = time.perf_counter()
            n = m.validate_tokens([t])
            t1 = time.perf_counter()
            fill(m, self.bitmask, 0)
            t2 = time.perf_counter()
            if n != 1 or not m.consume_token(t):
                raise RuntimeError(f"llguidance rejected token {t}: {m.get_error()}")
            times_check.append(t1 - t0)
            times_mask.append(t2 - t1)


class XGrammar:
    name = "xgrammar"

    def __init__(self, grammar_name, text, hf_tok, cache={}):
        import xgrammar as xgr

        self.xgr = xgr
        if "info" not in cache:
            cache["info"] = xgr.TokenizerInfo.from_huggingface(hf_tok, vocab_size=len(hf_tok))
            cache["compiler"] = xgr.GrammarCompiler(cache["info"], cache_enabled=False)
        info, compiler = cache["info"], cache["compiler"]
        grammar = xgr.Grammar.builtin_json_grammar() if grammar_name == "json" else xgr.Grammar.from_lark(text)
        t0 = time.perf_counter()
        self.compiled = compiler.compile_grammar(grammar)
        self.compile_s = time.perf_counter() - t0
        self.bitmask = xgr.allocate_token_bitmask(1, info.vocab_size)

    def run(self, ids, times_mask, times_check):
        m = self.xgr.GrammarMatcher(self.compiled)
        for t in ids:
            t1 = time.perf_counter()
            m.fill_next_token_bitmask(self.bitmask)
            t2 = time.perf_counter()
            if not m.accept_token(t):
                raise RuntimeError(f"xgrammar rejected token {t}")
            times_mask.append(t2 - t1)


# -- driver --------------------------------------------------------------------------------
def measure(engine_cls, grammar_name, text, warm_ids, inputs_ids, tok, vocab):
    try:
        engine = engine_cls(grammar_name, text, vocab if engine_cls is Ours else tok)
        engine.run(warm_ids, [], [])
        masks: list = []
        checks: list = []
        for ids in inputs_ids:
            engine.run(ids, masks, checks)
    except Exception as exc:  # an anchor that cannot run this grammar
        return {"error": f"{type(exc).__name__}: {str(exc)[:120]}"}
    extra = {}
    if engine_cls is Ours:  # which token-walk engine the masks used (numba kernels or numpy)
        from guided.grammars.lexer import compiled_walks

        extra["walks"] = "compiled" if compiled_walks() else "numpy"
    return {
        **extra,
        "compile_ms": engine.compile_s * 1e3,
        "mask_p50_us": pct(masks, 50) * 1e6,
        "mask_p99_us": pct(masks, 99) * 1e6,
        "mask_mean_us": statistics.fmean(masks) * 1e6 if masks else float("nan"),
        "check_p50_us": pct(checks, 50) * 1e6 if checks else None,
        "check_p99_us": pct(checks, 99) * 1e6 if checks else None,
        "tokens": len(masks),
    }


# -- the batch column -------------------------------------------------------------------------
def _batch_positions(tok, data: str, stride: int, n_schemas: int, rng) -> tuple[list, list]:
    """(schemas, positions): MaskBench schemas every engine compiles, and
    ``(schema index, token prefix)`` cut at random tokens of their valid instances."""
    import glob
    import gzip

    import llguidance

    rows = []
    for path in sorted(glob.glob(data)):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            rows.extend(json.loads(line) for line in f)
    rows = rows[::stride]
    order = rng.permutation(len(rows))
    schemas, positions = [], []
    for i in order.tolist():
        if len(schemas) >= n_schemas:
            break
        schema = rows[i]["schema"]
        try:
            guided_c = __import__("guided").JSONSchema(schema)
            llguidance.LLMatcher.grammar_from_json_schema(schema, defaults={"whitespace_flexible": True})
        except Exception:  # noqa: BLE001 - only schemas every engine takes
            continue
        k = len(schemas)
        for test in rows[i]["tests"]:
            if not test["valid"]:
                continue
            ids = tok.encode(json.dumps(test["data"], ensure_ascii=False), add_special_tokens=False)
            for cut in sorted(set(rng.integers(0, len(ids) + 1, size=12).tolist())):
                positions.append((k, ids[:cut]))
        schemas.append((schema, guided_c))
    return schemas, positions


class _GuidedBatch:
    name = "guided"

    def __init__(self, schemas, tok, vocab):
        from guided.bitmask import allocate_bitmask, fill_bitmasks

        self.fill_bitmasks = fill_bitmasks
        self.allocate = lambda n: allocate_bitmask(n, vocab.size)
        self.starts = [c.start(vocab) for _, c in schemas]

    def prepare(self, batch):
        return [self.starts[k].advance_many(ids) for k, ids in batch]

    def fill(self, states, out, threads: int):
        self.fill_bitmasks(states, out, threads=threads)


class _LLGuidanceBatch:
    name = "llguidance"

    def __init__(self, schemas, tok, vocab):
        import llguidance
        import llguidance.hf
        import llguidance.numpy

        self.llg = llguidance
        self.tok = llguidance.hf.from_tokenizer(tok)
        self.grammars = [llguidance.LLMatcher.grammar_from_json_schema(s, defaults={"whitespace_flexible": True})
                         for s, _ in schemas]
        self.allocate = lambda n: llguidance.numpy.allocate_token_bitmask(n, self.tok.vocab_size)
        self.executors: dict = {}

    def prepare(self, batch):
        out = []
        for k, ids in batch:
            m = self.llg.LLMatcher(self.tok, self.grammars[k], log_level=0)
            m.consume_tokens(ids)
            out.append(m)
        return out

    def fill(self, matchers, out, threads: int):
        ex = self.executors.get(threads)
        if ex is None:
            ex = self.executors[threads] = self.llg.LLExecutor(num_threads=threads)
        self.llg.numpy.fill_next_token_bitmask_par(ex, [(m, i) for i, m in enumerate(matchers)], out)


class _XGrammarBatch:
    name = "xgrammar"

    def __init__(self, schemas, tok, vocab):
        import xgrammar as xgr

        self.xgr = xgr
        info = xgr.TokenizerInfo.from_huggingface(tok, vocab_size=len(tok))
        compiler = xgr.GrammarCompiler(info, cache_enabled=False)
        self.compiled = [compiler.compile_json_schema(json.dumps(s), any_whitespace=True, strict_mode=False)
                         for s, _ in schemas]
        self.allocate = lambda n: xgr.allocate_token_bitmask(n, info.vocab_size)
        self.batchers: dict = {}

    def prepare(self, batch):
        out = []
        for k, ids in batch:
            m = self.xgr.GrammarMatcher(self.compiled[k])
            for t in ids:
                if not m.accept_token(t):
                    break
            out.append(m)
        return out

    def fill(self, matchers, out, threads: int):
        b = self.batchers.get(threads)
        if b is None:
            b = self.batchers[threads] = self.xgr.BatchGrammarMatcher(max_threads=threads)
        b.batch_fill_next_token_bitmask(matchers, out)


def run_batch(args) -> dict:
    """The batch column: time per batch of N MaskBench states, one thread vs every core."""
    import os

    tok = load_tokenizer("llama3")
    vocab = Vocabulary.from_tokenizer(tok)
    rng = np.random.default_rng(0)
    schemas, positions = _batch_positions(tok, args.batch_data, args.batch_stride, args.batch_schemas, rng)
    cores = len(os.sched_getaffinity(0))
    sizes = [int(n) for n in args.batch_sizes.split(",")]
    print(f"batch: {len(schemas)} schemas, {len(positions)} positions, {cores} cores", flush=True)
    kinds = [_GuidedBatch] + ([] if args.no_anchors else [_LLGuidanceBatch, _XGrammarBatch])
    results: dict = {"schemas": len(schemas), "positions": len(positions), "cores": cores, "engines": {}}
    order = rng.permutation(len(positions)).tolist()  # the same warm and timed positions for every engine
    n_warm = len(order) // 4
    for kind in kinds:
        t0 = time.perf_counter()
        engine = kind(schemas, tok, vocab)
        compile_s = time.perf_counter() - t0
        # a quarter of the positions warm the engine (its schemas compiled, their common states
        # seen, as when serving); timed batches take positions never filled before, so every
        # row's mask is new, as after a decoding step
        warm = engine.prepare([positions[i] for i in order[:n_warm]])
        engine.fill(warm, engine.allocate(len(warm)), cores)
        fresh = order[n_warm:]
        taken = 0
        per: dict = {"compile_s": compile_s}
        for n in sizes:
            reps = max(2, min(10, 64 // n))
            times = {1: [], cores: []}
            for _ in range(reps):
                for threads in times:
                    picks = [fresh[(taken + k) % len(fresh)] for k in range(n)]
                    taken += n
                    states = engine.prepare([positions[i] for i in picks])
                    out = engine.allocate(n)
                    t1 = time.perf_counter()
                    engine.fill(states, out, threads)
                    times[threads].append(time.perf_counter() - t1)
            per.setdefault("reused_positions", False)
            per["reused_positions"] |= taken > len(fresh)
            one, all_ = statistics.median(times[1]), statistics.median(times[cores])
            per[n] = {"batch_ms_1_thread": one * 1e3, f"batch_ms_{cores}_threads": all_ * 1e3,
                      "speedup": one / all_, "speedup_per_core": one / all_ / cores, "reps": reps}
        results["engines"][engine.name] = per
    print(f"{'engine':<12}{'N':>5}{'ms/batch 1 thr':>16}{f'ms/batch {cores} thr':>16}{'speedup':>9}{'per core':>10}")
    for name, per in results["engines"].items():
        for n in sizes:
            r = per[n]
            print(f"{name:<12}{n:>5}{r['batch_ms_1_thread']:>16.3f}{r[f'batch_ms_{cores}_threads']:>16.3f}"
                  f"{r['speedup']:>9.2f}{r['speedup_per_core']:>10.2f}")
    return results


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--grammars", default="json,arithmetic,sql,python")
    ap.add_argument("--json", default=str(Path(__file__).parent / "results" / "grammars.json"))
    ap.add_argument("--no-anchors", action="store_true")
    ap.add_argument("--batch", action="store_true", help="the batch column instead (MaskBench states)")
    ap.add_argument("--batch-sizes", default="1,8,32,128")
    ap.add_argument("--batch-schemas", type=int, default=24, help="MaskBench schemas in the position pool")
    ap.add_argument("--batch-stride", type=int, default=20, help="stride sample the schemas are drawn from")
    ap.add_argument("--batch-data", default="/work/shared/bench/maskbench/*.jsonl.gz")
    args = ap.parse_args(argv)
    if args.batch:
        results = run_batch(args)
        out = Path(args.json) if args.json != ap.get_default("json") else Path(__file__).parent / "results" / "grammars-batch.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2))
        print(f"\nwritten {out}")
        return

    tok = load_tokenizer("llama3")
    vocab = Vocabulary.from_tokenizer(tok)
    from lark.load_grammar import load_grammar as lark_load

    lark_load('start: "a"', "<warm-up>", [], False)  # lark's one-off bootstrap, not a grammar's cost
    engines = [Ours] if args.no_anchors else [Ours, LLGuidance, XGrammar]
    results: dict = {}
    for name in args.grammars.split(","):
        text = shipped_grammar_path(name).read_text()
        warm, inputs = INPUTS[name]()
        warm_ids = tok.encode(warm, add_special_tokens=False)
        inputs_ids = [tok.encode(x, add_special_tokens=False) for x in inputs]
        results[name] = {e.name: measure(e, name, text, warm_ids, inputs_ids, tok, vocab) for e in engines}

    cols = ["compile_ms", "mask_p50_us", "mask_p99_us", "check_p50_us", "check_p99_us"]
    print(f"{'grammar':<11}{'engine':<12}" + "".join(f"{c:>14}" for c in cols) + f"{'tokens':>8}")
    for name, per in results.items():
        for engine, r in per.items():
            if "error" in r:
                print(f"{name:<11}{engine:<12}  n/a ({r['error']})")
                continue
            cells = "".join(f"{r[c]:>14.1f}" if r.get(c) is not None else f"{'n/a':>14}" for c in cols)
            print(f"{name:<11}{engine:<12}{cells}{r['tokens']:>8}")
        ours = per.get("guided", {})
        for anchor in ("llguidance", "xgrammar"):
            r = per.get(anchor)
            if not r or "error" in r or "error" in ours:
                continue
            ratios = "".join(
                f"{ours[c] / r[c]:>13.2f}x" if r.get(c) and ours.get(c) else f"{'':>14}" for c in cols
            )
            print(f"{name:<11}{'/' + anchor:<12}{ratios}")
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_results(out, results)
    print(f"\nwritten {out}")


if __name__ == "__main__":
    main()
