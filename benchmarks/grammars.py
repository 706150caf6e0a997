"""Grammar constraint speed: guided vs llguidance and XGrammar, same grammars, same tokens.

    /tmp/venv/bin/python benchmarks/grammars.py [--grammars json,sql] [--json out.json]

For each grammar: compile time, then for real inputs tokenised with the Llama-3 tokenizer,
the per-token time to compute the full mask (bitmask for the anchors) and to check one
token (the real next token).  Each engine first runs over a warm-up input of the same
grammar, then is timed on the measured inputs, token by token.  Our numbers are printed
as ratios to llguidance's and XGrammar's (>1 = we are slower).  Anchors are optional:
missing or failing ones are reported as n/a.  Nothing here is imported by the library.
With numba installed our token walks are compiled loops (``"walks": "compiled"`` in the
JSON); ``GUIDED_NO_NUMBA=1`` measures the numpy walks instead.
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


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--grammars", default="json,arithmetic,sql,python")
    ap.add_argument("--json", default=str(Path(__file__).parent / "results" / "grammars.json"))
    ap.add_argument("--no-anchors", action="store_true")
    args = ap.parse_args(argv)

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
