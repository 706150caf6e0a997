"""guided inside vLLM against vLLM's own structured-output backends (xgrammar, guidance) and
unconstrained decoding: one ``vllm serve`` process per backend, same model, same prompts.

    ./dev vllm-python benchmarks/vllm.py [--schemas 20] [--max-tokens 48] [--concurrency 1,8,32]

The workload: a stride sample of MaskBench schemas (one prompt each) and the Lark JSON and SQL
grammars shipped with guided. Every backend gets every item at each concurrency (streamed
through the ``openai`` client). Per backend and concurrency: output tokens/s (all completion
tokens over the wall time of the level), TTFT and TPOT p50/p99, the fraction of answered
requests that finished and are valid (JSON parsed and validated with ``jsonschema``; SQL checked
by guided's grammar), and the fraction of items the backend refused (HTTP 400). guided runs
both its samplers (``masking`` and ``awrs``) in its one process. JSON is compact for every
backend (the built-ins get ``disable_any_whitespace``). Writes ``benchmarks/results/vllm.json``.
"""

from __future__ import annotations

import argparse
import glob
import gzip
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from provenance import write_results  # noqa: E402  (benchmarks/provenance.py: machine, versions, command, date)

SHARED = Path(os.environ.get("GUIDED_SHARED", REPO.parent / "shared"))

PLUGIN = "guided.integrations.vllm:GuidedLogitsProcessor"
SERVED = "bench"


def load_schemas(pattern: str, n: int) -> list[tuple[str, dict]]:
    rows = []
    for path in sorted(glob.glob(pattern)):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            rows.extend(json.loads(line) for line in f)
    stride = max(1, len(rows) // n)
    return [(str(r["id"]), r["schema"]) for r in rows[::stride][:n]]


def workload(schemas) -> list[dict]:
    from guided.grammars.shipped import shipped_grammar_path

    items = [{"id": sid, "kind": "json", "schema": schema, "prompt": "A JSON object: "} for sid, schema in schemas]
    for name in ("json", "sql"):
        items.append({"id": f"lark-{name}", "kind": f"grammar-{name}", "grammar": shipped_grammar_path(name).read_text(),
                      "prompt": "A JSON value: " if name == "json" else "An SQL query: "})
    return items


def request_body(item: dict, backend: str, sampler: str | None) -> dict:
    """Extra body fields selecting ``item``'s constraint on ``backend``."""
    if backend == "unconstrained":
        return {}
    if backend == "guided":
        if item["kind"] == "json":
            xargs = {"guided_json": json.dumps(item["schema"]), "guided_whitespace": "compact"}
        else:
            xargs = {"guided_grammar_name": item["kind"].split("-")[1]}
        return {"vllm_xargs": {**xargs, "guided_sampler": sampler}}
    if item["kind"] == "json":
        return {"structured_outputs": {"json": item["schema"], "disable_any_whitespace": True}}
    return {"structured_outputs": {"grammar": item["grammar"]}}


def is_valid(item: dict, text: str) -> bool:
    import jsonschema

    try:
        if item["kind"] == "json":
            jsonschema.validate(json.loads(text), item["schema"])
            return True
        if item["kind"] == "grammar-json":
            json.loads(text)
            return True
    except Exception:  # noqa: BLE001 - any parse or validation failure: invalid
        return False
    return _sql_accepts(text)


_SQL = {}


def _sql_accepts(text: str) -> bool:
    from guided.grammars import load_grammar
    from guided.tokenizers import load_tokenizer
    from guided.vocab import Vocabulary

    if "start" not in _SQL:
        vocab = Vocabulary.from_tokenizer(load_tokenizer("llama3"))
        _SQL["start"] = load_grammar("sql").start(vocab)
    state = _SQL["start"].advance_bytes(text.encode())
    return state is not None and state.is_accepting()


def start_server(model: str, backend: str, log_path: Path) -> tuple[subprocess.Popen, "object"]:
    import openai

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model, "--served-model-name",
               SERVED, "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32", "--max-model-len", "1024",
               "--kv-cache-memory-bytes", str(1 << 29), "--enforce-eager", "--distributed-executor-backend", "uni",
               "--max-num-seqs", "32"]
    if backend == "guided":
        command += ["--logits-processors", PLUGIN]
    elif backend != "unconstrained":
        command += ["--structured-outputs-config", json.dumps({"backend": backend})]
    env = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               VLLM_NO_USAGE_STATS="1", TOKENIZERS_PARALLELISM="false")
    with open(log_path, "wb") as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    api = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0, timeout=600)
    deadline = time.monotonic() + 900
    while True:
        if server.poll() is not None:
            raise RuntimeError(f"vllm serve ({backend}) exited:\n{log_path.read_text()[-3000:]}")
        try:
            api.models.list()
            return server, api
        except openai.APIConnectionError:
            if time.monotonic() > deadline:
                server.kill()
                raise RuntimeError(f"vllm serve ({backend}) did not start")
            time.sleep(2)


def one_request(api, item: dict, backend: str, sampler: str | None, max_tokens: int, seed: int) -> dict:
    import openai

    t0 = time.perf_counter()
    first = None
    text, finish, tokens = [], None, 0
    try:
        stream = api.completions.create(model=SERVED, prompt=item["prompt"], max_tokens=max_tokens, temperature=1.0,
                                        seed=seed, stream=True, stream_options={"include_usage": True},
                                        extra_body=request_body(item, backend, sampler))
        for chunk in stream:
            if chunk.usage is not None:
                tokens = chunk.usage.completion_tokens
            for choice in chunk.choices:
                if first is None and choice.text:
                    first = time.perf_counter()
                text.append(choice.text)
                finish = choice.finish_reason or finish
    except openai.APIError as exc:  # a 400, or (streaming) the backend's error inside the stream
        return {"refused": True, "error": str(exc)[:200]}
    end = time.perf_counter()
    out = "".join(text)
    first = first if first is not None else end
    return {"refused": False, "ttft": first - t0, "tpot": (end - first) / max(tokens - 1, 1), "tokens": tokens,
            "finished": finish == "stop", "text": out}


def run_level(api, items, backend, sampler, concurrency: int, max_tokens: int) -> dict:
    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(lambda a: one_request(api, a[1], backend, sampler, max_tokens, a[0]),
                                enumerate(items)))
    wall = time.perf_counter() - t0
    for item, r in zip(items, results):  # validated after the clock stops: not the backend's time
        if not r["refused"]:
            r["valid"] = is_valid(item, r.pop("text"))
    answered = [r for r in results if not r["refused"]]
    pct = lambda xs, q: float(np.percentile(xs, q)) if xs else float("nan")  # noqa: E731
    ttft = [r["ttft"] for r in answered]
    tpot = [r["tpot"] for r in answered if r["tokens"] > 1]
    finished = [r for r in answered if r["finished"]]
    return {
        "requests": len(items), "wall_s": wall,
        "output_tok_s": sum(r["tokens"] for r in answered) / wall,
        "ttft_p50_ms": 1000 * pct(ttft, 50), "ttft_p99_ms": 1000 * pct(ttft, 99),
        "tpot_p50_ms": 1000 * pct(tpot, 50), "tpot_p99_ms": 1000 * pct(tpot, 99),
        "finished": len(finished) / max(len(answered), 1),
        "valid_and_finished": sum(r["valid"] for r in finished) / max(len(answered), 1),
        "finished_but_invalid": sum(not r["valid"] for r in finished),
        "refused": sum(r["refused"] for r in results) / len(items),
        "refused_ids": [items[i]["id"] for i, r in enumerate(results) if r["refused"]],
    }


def print_table(results: dict) -> None:
    head = (f"{'backend':<16}{'conc':>5}{'tok/s':>9}{'TTFT p50':>10}{'p99':>9}{'TPOT p50':>10}{'p99':>9}"
            f"{'finished':>10}{'valid+fin':>10}{'fin-invalid':>12}{'refused':>9}")
    print(head)
    print("-" * len(head))
    for name, levels in results.items():
        for conc, r in levels.items():
            print(f"{name:<16}{conc:>5}{r['output_tok_s']:>9.1f}{r['ttft_p50_ms']:>10.0f}{r['ttft_p99_ms']:>9.0f}"
                  f"{r['tpot_p50_ms']:>10.1f}{r['tpot_p99_ms']:>9.1f}{r['finished']:>10.0%}"
                  f"{r['valid_and_finished']:>10.0%}{r['finished_but_invalid']:>12}{r['refused']:>9.0%}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(SHARED / "bench" / "maskbench" / "*.jsonl.gz"), help="MaskBench .jsonl.gz files (glob)")
    ap.add_argument("--schemas", type=int, default=20)
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--concurrency", default="1,8,32")
    ap.add_argument("--backends", default="unconstrained,guided,xgrammar,guidance")
    ap.add_argument("--model", default=None, help="model folder (default: guided's embedded default model)")
    ap.add_argument("--keep", action="store_true", help="keep the other backends' results already in the JSON file")
    ap.add_argument("--json", dest="json_out", default=str(REPO / "benchmarks" / "results" / "vllm.json"))
    args = ap.parse_args(argv)

    from guided.models import default_model_path

    model = args.model or str(default_model_path())  # the model the vLLM tests serve
    items = workload(load_schemas(args.data, args.schemas))
    levels = [int(c) for c in args.concurrency.split(",")]
    out_path = Path(args.json_out)
    results: dict[str, dict] = {}
    if args.keep and out_path.exists():  # backends measured by an earlier run stay in the file
        results = json.loads(out_path.read_text())["backends"]
    logs = Path(tempfile.mkdtemp(prefix="vllm-bench-"))
    for backend in args.backends.split(","):
        server, api = start_server(model, backend, logs / f"{backend}.log")
        try:
            for sampler in (("masking", "awrs") if backend == "guided" else (None,)):
                name = f"guided-{sampler}" if sampler else backend
                one_request(api, items[0], backend, sampler, 4, 0)  # warm-up
                results[name] = {}
                for c in levels:
                    results[name][c] = run_level(api, items, backend, sampler, c, args.max_tokens)
                    r = results[name][c]
                    print(f"{name} c={c}: {r['output_tok_s']:.1f} tok/s, valid+finished {r['valid_and_finished']:.0%}, "
                          f"refused {r['refused']:.0%}", flush=True)
        finally:
            server.terminate()
            server.wait(timeout=60)
        write_json(out_path, model, items, args, levels, results)  # after each backend: a crash keeps the rest
    print(f"\nmodel: {model}; {len(items) - 2} MaskBench schemas + Lark JSON and SQL grammars; "
          f"max_tokens {args.max_tokens}; temperature 1; vLLM CPU, one process per backend\n")
    print_table(results)
    return 0


def write_json(path: Path, model: str, items, args, levels, results: dict) -> None:
    write_results(path, {
        "model": model, "schemas": len(items) - 2, "grammars": ["lark-json", "lark-sql"], "max_tokens": args.max_tokens,
        "concurrency": levels, "machine": f"{os.cpu_count()} CPU cores, vLLM CPU backend", "backends": results,
    })


if __name__ == "__main__":
    sys.exit(main())
