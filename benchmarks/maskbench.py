"""MaskBench-style JSON Schema benchmark: correctness and mask speed, engine by engine.

    python benchmarks/maskbench.py --data /work/shared/bench/maskbench/*.jsonl.gz \\
        --tokenizer llama3 --engines guided,llguidance,xgrammar [--stride N] [--timeout S] [--json OUT] [--parallel]

For every schema each engine compiles it (time to first mask, TTFM, includes building the
first mask); then for every test instance the text ``json.dumps(data, ensure_ascii=False)``
is tokenised with the chosen tokenizer and fed token by token: the full mask is computed
and the token is committed (time between masks, TBM, is commit + next mask).  An instance
is accepted iff every token is allowed and EOS is allowed after the last one; the same
rule applies to every engine.  Per engine, a schema counts as

* ``compile_error`` -- the engine refused the schema (unsupported or invalid),
* ``timeout`` -- compile plus instances took longer than ``--timeout`` seconds,
* ``validation_error`` -- some valid instance was rejected,
* ``invalidation_error`` -- some invalid instance was accepted (an unsoundness),
* ``crash`` -- the engine raised an unexpected error on an instance (a bug; the run goes on),
* ``pass`` -- every instance was judged right.

``llguidance`` and ``xgrammar`` are the anchors (PyPI packages used only here); an engine
whose package is missing is skipped with a note.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import signal
import sys
import time
import traceback
from pathlib import Path

import numpy as np

from provenance import write_results  # benchmarks/provenance.py: machine, versions, command, date

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


class Timeout(BaseException):
    """Raised by the per-schema alarm (a BaseException, so engines' error handling cannot swallow it)."""


def _alarm(_signum, _frame):
    raise Timeout()


# -- engines ---------------------------------------------------------------------------


class _RejectAll:
    """Stands for a schema that no JSON value satisfies."""


class GuidedEngine:
    name = "guided"

    def __init__(self, tokenizer):
        from guided.vocab import Vocabulary

        self.vocab = Vocabulary.from_tokenizer(tokenizer)
        self.eos = tokenizer.eos_token_id

    def compile(self, schema):
        """Returns (state factory, first mask, compile error message or None)."""
        from guided.json_schema import JSONSchema

        from guided.json_schema import UnsatisfiableSchemaError

        try:
            c = JSONSchema(schema, property_order="any", whitespace="flexible")  # objects are unordered; the anchors run with flexible whitespace too
            state = c.start(self.vocab)
        except UnsatisfiableSchemaError:
            # compiled, and known to accept nothing: every instance is rejected
            return _RejectAll(), None, None
        except ValueError as exc:  # ConstraintError and friends
            return None, None, f"{type(exc).__name__}: {exc}"
        except Exception as exc:  # noqa: BLE001 - a bug, but one schema must not stop the run
            return None, None, f"CRASH {type(exc).__name__}: {exc}"
        return state, state.allowed_mask(), None

    def run(self, state, first_mask, tokens, tbm: list) -> bool:
        if isinstance(state, _RejectAll):
            return False
        mask = first_mask
        for t in tokens:
            if not mask[t]:
                return False
            t0 = time.perf_counter()
            state = state.advance(t)
            if state is None:
                return False
            mask = state.allowed_mask()
            tbm.append(time.perf_counter() - t0)
        return bool(mask[self.eos])


class LLGuidanceEngine:
    name = "llguidance"

    def __init__(self, tokenizer):
        import llguidance
        import llguidance.hf
        import llguidance.numpy

        self.llg = llguidance
        self.np = llguidance.numpy
        self.tok = llguidance.hf.from_tokenizer(tokenizer)
        self.n_vocab = self.tok.vocab_size
        self.eos = tokenizer.eos_token_id

    def compile(self, schema):
        LLMatcher = self.llg.LLMatcher
        try:
            grammar = LLMatcher.grammar_from_json_schema(schema, defaults={"whitespace_flexible": True})
        except ValueError as exc:
            return None, None, str(exc)
        m = LLMatcher(self.tok, grammar, log_level=0)
        if m.is_error():
            return None, None, m.get_error()
        bitmask = self.np.allocate_token_bitmask(1, self.n_vocab)
        self.np.fill_next_token_bitmask(m, bitmask)
        if m.is_error():
            return None, None, m.get_error()
        return m, bitmask, None

    def run(self, matcher, first_mask, tokens, tbm: list) -> bool:
        m = matcher.deep_copy()
        bitmask = first_mask.copy()
        for t in tokens:
            if not (bitmask[0, t >> 5] >> (t & 31)) & 1:
                return False
            t0 = time.perf_counter()
            if not m.consume_token(t):
                return False
            self.np.fill_next_token_bitmask(m, bitmask)
            tbm.append(time.perf_counter() - t0)
            if m.is_error():
                return False
        return bool((bitmask[0, self.eos >> 5] >> (self.eos & 31)) & 1)


class XGrammarEngine:
    name = "xgrammar"

    def __init__(self, tokenizer):
        import xgrammar as xgr

        self.xgr = xgr
        self.vocab_size = len(tokenizer)
        info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=self.vocab_size)
        self.compiler = xgr.GrammarCompiler(info, cache_enabled=False)
        self.eos = tokenizer.eos_token_id

    def compile(self, schema):
        xgr = self.xgr
        try:
            compiled = self.compiler.compile_json_schema(json.dumps(schema), any_whitespace=True, strict_mode=False)
            matcher = xgr.GrammarMatcher(compiled)
            bitmask = xgr.allocate_token_bitmask(1, self.vocab_size)
            matcher.fill_next_token_bitmask(bitmask)
        except Exception as exc:  # noqa: BLE001 - xgrammar raises RuntimeError/ValueError variously
            return None, None, f"{type(exc).__name__}: {exc}"
        return compiled, bitmask, None

    def run(self, compiled, first_mask, tokens, tbm: list) -> bool:
        xgr = self.xgr
        m = xgr.GrammarMatcher(compiled)
        bitmask = first_mask.clone()
        words = bitmask.numpy()
        for t in tokens:
            if not (int(words[0, t >> 5]) >> (t & 31)) & 1:
                return False
            t0 = time.perf_counter()
            if not m.accept_token(t):
                return False
            m.fill_next_token_bitmask(bitmask)
            tbm.append(time.perf_counter() - t0)
        return bool((int(words[0, self.eos >> 5]) >> (self.eos & 31)) & 1)


ENGINES = {"guided": GuidedEngine, "llguidance": LLGuidanceEngine, "xgrammar": XGrammarEngine}


# -- benchmark ---------------------------------------------------------------------------


def load_rows(paths, stride: int):
    rows = []
    for path in paths:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            rows.extend(json.loads(line) for line in f)
    return rows[::stride]


def rss_mb() -> float:
    """This process's resident memory now (MB; Linux /proc, else the peak so far)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return peak_rss_mb()


def peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KB on Linux


def bench_engine(engine, rows, tokenized, timeout: float, verbose: bool, failures: list) -> dict:
    """Counts, TTFM/TBM percentiles and memory: RSS growth per compiled schema (compile and
    first mask) and per 1,000 steps (masks of the instances), over the schemas that compiled,
    plus the process's RSS at the start and end and its peak (each engine runs in its own
    process under ``--parallel``, so these are the engine's alone)."""
    counts = dict(schemas=0, **{"pass": 0}, compile_error=0, validation_error=0, invalidation_error=0, timeout=0,
                  crash=0)
    ttfm, tbm = [], []
    compile_mb, steps_mb = [], []
    rss_start = rss_mb()
    for row, toks in zip(rows, tokenized):
        counts["schemas"] += 1
        rss0 = rss_mb()
        signal.signal(signal.SIGALRM, _alarm)
        signal.setitimer(signal.ITIMER_REAL, timeout)
        start = time.perf_counter()
        try:
            handle, first, err = engine.compile(row["schema"])
            elapsed = time.perf_counter() - start
            if err is not None:
                signal.setitimer(signal.ITIMER_REAL, 0)
                counts["compile_error"] += 1
                failures.append((engine.name, row["id"], "compile_error", err[:300]))
                continue
            ttfm.append(elapsed)
            rss1 = rss_mb()
            compile_mb.append(rss1 - rss0)
            steps_before = len(tbm)
            bad_valid = bad_invalid = False
            for test, tokens in zip(row["tests"], toks):
                local: list = []
                accepted = engine.run(handle, first, tokens, local)
                tbm.extend(local)
                if accepted and not test["valid"]:
                    bad_invalid = True
                    failures.append((engine.name, row["id"], "invalidation_error", json.dumps(test["data"])[:300]))
                elif not accepted and test["valid"]:
                    bad_valid = True
                    failures.append((engine.name, row["id"], "validation_error", json.dumps(test["data"])[:300]))
            signal.setitimer(signal.ITIMER_REAL, 0)
            steps = len(tbm) - steps_before
            if steps:
                steps_mb.append((rss_mb() - rss1) * 1000 / steps)
        except Timeout:
            counts["timeout"] += 1
            failures.append((engine.name, row["id"], "timeout", ""))
            continue
        except Exception as exc:  # noqa: BLE001 - an engine's bug fails its schema, not the run
            counts["crash"] += 1
            where = " <- ".join(f"{Path(f.filename).name}:{f.lineno}" for f in traceback.extract_tb(exc.__traceback__)[::-1][:4])
            failures.append((engine.name, row["id"], "crash", f"{type(exc).__name__}: {exc}"[:240] + f" at {where}"))
            continue
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        counts["validation_error"] += bad_valid
        counts["invalidation_error"] += bad_invalid
        counts["pass"] += not (bad_valid or bad_invalid)
        if verbose and counts["schemas"] % 100 == 0:
            print(f"  [{engine.name}] {counts['schemas']}/{len(rows)} {counts}", file=sys.stderr, flush=True)

    def pct(xs):
        if not xs:
            return {"p50": None, "p90": None, "p99": None}
        a = np.asarray(xs) * 1e6
        return {"p50": float(np.percentile(a, 50)), "p90": float(np.percentile(a, 90)), "p99": float(np.percentile(a, 99))}

    def mb(xs):
        if not xs:
            return {"mean": None, "p50": None, "p99": None}
        a = np.asarray(xs)
        return {"mean": float(a.mean()), "p50": float(np.percentile(a, 50)), "p99": float(np.percentile(a, 99))}

    memory = {"rss_start_mb": rss_start, "rss_end_mb": rss_mb(), "peak_rss_mb": peak_rss_mb(),
              "per_compiled_schema_mb": mb(compile_mb), "per_1000_steps_mb": mb(steps_mb)}
    return {**counts, "ttfm_us": pct(ttfm), "tbm_us": pct(tbm), "memory": memory}


def print_table(results: dict) -> None:
    names = list(results)
    rows = [("schemas", "schemas"), ("pass", "pass"), ("compile error", "compile_error"),
            ("validation error", "validation_error"), ("invalidation error", "invalidation_error"),
            ("timeout", "timeout"), ("crash", "crash")]
    width = max([14, *(len(n) + 2 for n in names)])  # "5279 (93.4%)" and a gap
    print(f"{'':22}" + "".join(f"{n:>{width}}" for n in names))
    for label, key in rows:
        line = f"{label:22}"
        for n in names:
            r = results[n]
            v = r.get(key, 0)
            if key != "schemas" and r["schemas"]:
                cell = f"{v} ({100 * v / r['schemas']:.1f}%)"
                line += f"{cell:>{width}}"
            else:
                line += f"{v:>{width}}"
        print(line)
    for metric in ("ttfm_us", "tbm_us"):
        for p in ("p50", "p90", "p99"):
            line = f"{metric[:-3].upper() + ' ' + p + ' (ms)':22}"
            for n in names:
                v = results[n][metric][p]
                line += f"{'-' if v is None else f'{v / 1000:.3f}':>{width}}"
            print(line)
    memory_rows = [("RSS start (MB)", "rss_start_mb", None), ("RSS end (MB)", "rss_end_mb", None),
                   ("RSS peak (MB)", "peak_rss_mb", None),
                   ("MB/schema mean", "per_compiled_schema_mb", "mean"), ("MB/schema p99", "per_compiled_schema_mb", "p99"),
                   ("MB/1000 steps mean", "per_1000_steps_mb", "mean"), ("MB/1000 steps p99", "per_1000_steps_mb", "p99")]
    for label, key, stat in memory_rows:
        line = f"{label:22}"
        for n in names:
            m = results[n].get("memory", {}).get(key)
            v = m if stat is None else (m or {}).get(stat)
            line += f"{'-' if v is None else f'{v:.2f}':>{width}}"
        print(line)
    if "llguidance" in results and len(results) > 1:
        base = results["llguidance"]
        for n in names:
            if n == "llguidance":
                continue
            r = results[n]
            if base["tbm_us"]["p50"] and r["tbm_us"]["p50"]:
                print(f"{n}: TBM p50 = {r['tbm_us']['p50'] / base['tbm_us']['p50']:.2f}x llguidance, "
                      f"pass = {r['pass'] - base['pass']:+d} schemas vs llguidance")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", nargs="+", required=True, help="MaskBench .jsonl.gz files")
    ap.add_argument("--tokenizer", default="llama3", help="guided.tokenizers name (default llama3)")
    ap.add_argument("--engines", default="guided,llguidance,xgrammar")
    ap.add_argument("--stride", type=int, default=1, help="use every N-th schema")
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds per schema and engine")
    ap.add_argument("--json", dest="json_out", help="write results here")
    ap.add_argument("--failures", help="write one line per failed schema/instance here (TSV)")
    ap.add_argument("--parallel", action="store_true",
                    help="run each engine in its own process at the same time (same data, same rule; "
                         "the whole split in the time of the slowest engine)")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    names = [e.strip() for e in args.engines.split(",") if e.strip()]
    for name in names:
        if name not in ENGINES:
            ap.error(f"unknown engine {name!r}; choose from {sorted(ENGINES)}")
    if args.parallel and len(names) > 1:
        return _run_parallel(args, names)

    from guided.tokenizers import load_tokenizer

    tokenizer = load_tokenizer(args.tokenizer)
    rows = load_rows(args.data, max(1, args.stride))
    tokenized = [
        [tokenizer.encode(json.dumps(t["data"], ensure_ascii=False), add_special_tokens=False) for t in row["tests"]]
        for row in rows
    ]
    print(f"{len(rows)} schemas, {sum(len(r['tests']) for r in rows)} instances, "
          f"{sum(len(t) for ts in tokenized for t in ts)} tokens ({args.tokenizer})", flush=True)
    results = {}
    failures: list = []
    for name in names:
        try:
            engine = ENGINES[name](tokenizer)
        except ImportError as exc:
            print(f"skipping {name}: {exc}", file=sys.stderr)
            continue
        t0 = time.perf_counter()
        results[name] = bench_engine(engine, rows, tokenized, args.timeout, args.verbose, failures)
        print(f"{name}: {time.perf_counter() - t0:.1f}s", file=sys.stderr, flush=True)
    print_table(results)
    if args.json_out:
        write_results(args.json_out, {"engines": results})
    if args.failures:
        with open(args.failures, "w") as f:
            for eng, sid, kind, detail in failures:
                f.write(f"{eng}\t{sid}\t{kind}\t{detail}\n")
    return 0


def _run_parallel(args, names: list) -> int:
    """One child process per engine (this script, one engine each), results merged in order."""
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        children = []
        for name in names:
            cmd = [sys.executable, __file__, "--data", *args.data, "--tokenizer", args.tokenizer, "--engines", name,
                   "--stride", str(args.stride), "--timeout", str(args.timeout),
                   "--json", f"{tmp}/{name}.json", "--failures", f"{tmp}/{name}.tsv"]
            if args.verbose:
                cmd.append("-v")
            children.append((name, subprocess.Popen(cmd, stdout=subprocess.DEVNULL)))
        results = {}
        failures = []
        for name, child in children:
            if child.wait() != 0:
                print(f"{name}: the engine's process failed (exit {child.returncode})", file=sys.stderr)
                continue
            part = json.loads(Path(f"{tmp}/{name}.json").read_text())["engines"]
            results.update(part)
            failures.extend(Path(f"{tmp}/{name}.tsv").read_text().splitlines(keepends=True))
    print_table(results)
    if args.json_out:
        write_results(args.json_out, {"engines": results})
    if args.failures:
        Path(args.failures).write_text("".join(failures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
