"""Load on ``guided serve``: N concurrent clients for a bounded time, every answer validated.

    python benchmarks/server_load.py                            # starts a server on loopback
    python benchmarks/server_load.py --clients 16 --seconds 60 --max-batch 8
    python benchmarks/server_load.py --url http://127.0.0.1:8000  # an already running server
    python benchmarks/server_load.py --clients 8 32 --baseline /tmp/guided-main   # before/after, one run

``--baseline DIR`` (a checkout of another revision, e.g. ``git archive main | tar -x -C DIR``)
runs the same load against a server started from that checkout first, then against this one,
at every ``--clients`` count, and prints both with the ratios (before / after).

Each client (the real ``openai`` async client) loops until the time is up, cycling through a
mix of constrained requests: JSON Schema (chat, ``response_format``), regex, choice, a Lark
grammar, and a streamed regex completion. Every answer is checked (``jsonschema``, ``re``,
``lark``); requests that end at ``max_tokens`` before the constraint completed are counted
separately (a valid prefix, not a violation). Reported: requests/s, tokens/s, p50/p90/p99
latency, validated / invalid / truncated / errors, and *lost* (sent minus answered, which must
be 0). There is no anchor server in this environment to compare with, so no ratio is printed.
Writes JSON (``--out``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from provenance import write_results  # benchmarks/provenance.py: machine, versions, command, date

REPO = Path(__file__).resolve().parents[1]

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "pattern": "^[A-Za-z ]{1,8}$"},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
    },
    "required": ["name", "age"],
    "additionalProperties": False,
}
SUM = 'start: NUMBER ("+" NUMBER)*\nNUMBER: /[1-9][0-9]?/\n'
COLOURS = ["red", "green", "blue", "cyan"]


@dataclass
class Tally:
    sent: int = 0
    answered: int = 0
    validated: int = 0
    truncated: int = 0  # hit max_tokens before the constraint completed (a valid prefix)
    invalid: int = 0
    errors: int = 0
    completion_tokens: int = 0
    latencies: list[float] = field(default_factory=list)
    error_messages: list[str] = field(default_factory=list)


def _check(kind: str, text: str, finished: bool) -> str:
    """'validated', 'truncated' or 'invalid'."""
    import jsonschema
    import lark

    try:
        if kind == "json":
            if not finished:
                return "truncated"
            jsonschema.validate(json.loads(text), PERSON)
        elif kind == "regex" or kind == "stream":
            ok = re.fullmatch(r"[0-9]{1,4}", text) if kind == "regex" else re.fullmatch(r"[a-z]{2,12}", text)
            if not ok:
                return "truncated" if not finished else "invalid"
        elif kind == "choice":
            if text not in COLOURS:
                return "invalid"
        elif kind == "grammar":
            if not finished:
                return "truncated" if re.fullmatch(r"[1-9][0-9]?(\+[1-9][0-9]?)*\+?", text) else "invalid"
            lark.Lark(SUM).parse(text)
    except Exception:  # noqa: BLE001 - any validation failure
        return "invalid"
    return "validated"


async def _one(client, model: str, kind: str, max_tokens: int) -> tuple[str, bool, int]:
    if kind == "json":
        r = await client.chat.completions.create(
            model=model, max_tokens=max_tokens, messages=[{"role": "user", "content": "A person as JSON:"}],
            response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON}},
            extra_body={"guided_whitespace": "compact"})  # the same language on servers before bounded whitespace
        return r.choices[0].message.content, r.choices[0].finish_reason == "stop", r.usage.completion_tokens
    if kind == "stream":
        stream = await client.completions.create(model=model, prompt="word: ", max_tokens=max_tokens, stream=True,
                                                 extra_body={"guided_regex": "[a-z]{2,12}"})
        text, finish = "", None
        async for chunk in stream:
            text += chunk.choices[0].text
            finish = chunk.choices[0].finish_reason or finish
        return text, finish == "stop", 0
    extra = {"regex": {"guided_regex": "[0-9]{1,4}"}, "choice": {"guided_choice": COLOURS},
             "grammar": {"guided_grammar": SUM}}[kind]
    r = await client.completions.create(model=model, prompt=f"{kind}: ", max_tokens=max_tokens, extra_body=extra)
    return r.choices[0].text, r.choices[0].finish_reason == "stop", r.usage.completion_tokens


async def _client_loop(index: int, client, model: str, stop_at: float, tally: Tally, max_tokens: int) -> None:
    kinds = ("json", "regex", "choice", "grammar", "stream")
    i = index
    while time.monotonic() < stop_at:
        kind = kinds[i % len(kinds)]
        i += 1
        tally.sent += 1
        t0 = time.perf_counter()
        try:
            text, finished, tokens = await _one(client, model, kind, max_tokens)
        except Exception as exc:  # noqa: BLE001 - counted, the load goes on
            tally.errors += 1
            tally.answered += 1
            if len(tally.error_messages) < 5:
                tally.error_messages.append(f"{kind}: {type(exc).__name__}: {exc}")
            continue
        tally.latencies.append(time.perf_counter() - t0)
        tally.answered += 1
        tally.completion_tokens += tokens
        outcome = _check(kind, text, finished)
        setattr(tally, outcome, getattr(tally, outcome) + 1)


async def run_load(url: str, model: str, clients: int, seconds: float, max_tokens: int) -> tuple[Tally, float]:
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=max(120.0, 4 * seconds))
    tally = Tally()
    t0 = time.perf_counter()
    stop_at = time.monotonic() + seconds
    await asyncio.gather(*(_client_loop(i, client, model, stop_at, tally, max_tokens) for i in range(clients)))
    elapsed = time.perf_counter() - t0
    await client.close()
    return tally, elapsed


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[k]


def _start_server(args, repo: Path = REPO) -> tuple[subprocess.Popen, str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(repo) + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, "-m", "guided.cli", "serve", "--port", "0", "--max-batch", str(args.max_batch),
           "--log-level", "warning"]
    if args.model:
        cmd += ["--model", args.model]
    proc = subprocess.Popen(cmd, cwd=repo, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    found: dict[str, str] = {}
    ready = threading.Event()

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            m = re.search(r"model '([^']+)' at (http://\S+)/v1", line)
            if m:
                found.update(model=m.group(1), url=m.group(2))
                ready.set()
        ready.set()

    threading.Thread(target=read, daemon=True).start()
    ready.wait(600)
    if "url" not in found:
        proc.kill()
        raise SystemExit("guided serve did not start")
    return proc, found["url"], found["model"]


def _measure(url: str, model: str, clients: int, args) -> dict:
    import httpx

    tally, elapsed = asyncio.run(run_load(url, model, clients, args.seconds, args.max_tokens))
    health = httpx.get(url + "/health", timeout=30).json()
    lat = tally.latencies
    return {
        "url": url, "model": model, "clients": clients, "seconds": round(elapsed, 2),
        "max_tokens": args.max_tokens, "max_batch": args.max_batch,
        "requests_per_s": tally.answered / elapsed, "completion_tokens_per_s": tally.completion_tokens / elapsed,
        "latency_p50_s": _percentile(lat, 0.5), "latency_p90_s": _percentile(lat, 0.9),
        "latency_p99_s": _percentile(lat, 0.99), "lost": tally.sent - tally.answered,
        "server": {k: health.get(k) for k in ("batches", "rows", "largest_batch", "errors", "cache")},
        **{k: v for k, v in asdict(tally).items() if k != "latencies"},
    }


def _print(label: str, report: dict) -> None:
    rows = [("clients", f"{report['clients']}"), ("duration", f"{report['seconds']:.1f} s"),
            ("requests", f"{report['answered']} answered / {report['sent']} sent (lost {report['lost']})"),
            ("requests/s", f"{report['requests_per_s']:.2f}"),
            ("completion tokens/s", f"{report['completion_tokens_per_s']:.1f} (non-streamed requests)"),
            ("latency p50 / p90 / p99", f"{report['latency_p50_s']:.2f} / {report['latency_p90_s']:.2f} / "
                                        f"{report['latency_p99_s']:.2f} s"),
            ("validated", f"{report['validated']}"), ("truncated at max_tokens", f"{report['truncated']}"),
            ("invalid", f"{report['invalid']}"), ("errors", f"{report['errors']}"),
            ("server steps/batches, rows", f"{report['server'].get('batches')}, {report['server'].get('rows')} "
                                           f"(largest batch {report['server'].get('largest_batch')})")]
    width = max(len(k) for k, _ in rows)
    print(f"guided serve under load ({label}): {report['model']} at {report['url']}")
    for k, v in rows:
        print(f"  {k:<{width}}  {v}")
    for message in report["error_messages"]:
        print("  error:", message)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="a running server (default: start one on loopback)")
    parser.add_argument("--model", help="model folder for the started server (default: the embedded model)")
    parser.add_argument("--clients", type=int, nargs="+", default=[8])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--baseline", help="a checkout of another revision: measure it first (before), then this one")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "server-load.json"))
    args = parser.parse_args()

    import httpx

    sides = [("before", Path(args.baseline)), ("after", REPO)] if args.baseline else [("this checkout", REPO)]
    results: dict[str, list[dict]] = {label: [] for label, _ in sides}
    servers: dict[str, tuple] = {}
    try:
        for label, repo in sides:  # every server up first, so both sides run under the same load, back to back
            if args.url and not args.baseline:
                url = args.url.rstrip("/")
                servers[label] = (None, url, httpx.get(url + "/v1/models", timeout=30).json()["data"][0]["id"])
            else:
                servers[label] = _start_server(args, repo)
            _, url, model = servers[label]
            httpx.post(url + "/v1/completions", json={"model": model, "prompt": "warm", "max_tokens": 2}, timeout=300)
        for round_, clients in enumerate(args.clients):
            order = sides if round_ % 2 == 0 else sides[::-1]  # alternate who goes first
            for label, _ in order:
                _, url, model = servers[label]
                report = _measure(url, model, clients, args)
                results[label].append(report)
                _print(label, report)
    finally:
        for proc, _, _ in servers.values():
            if proc is not None:
                proc.terminate()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
    if args.baseline:
        print("before / after (same machine, one run):")
        print(f"  {'clients':>7}  {'p50 before':>10}  {'p50 after':>9}  {'p99 before':>10}  {'p99 after':>9}  "
              f"{'p99 ratio':>9}  {'req/s before':>12}  {'req/s after':>11}")
        for b, a in zip(results["before"], results["after"]):
            print(f"  {b['clients']:>7}  {b['latency_p50_s']:>10.2f}  {a['latency_p50_s']:>9.2f}  "
                  f"{b['latency_p99_s']:>10.2f}  {a['latency_p99_s']:>9.2f}  "
                  f"{b['latency_p99_s'] / a['latency_p99_s']:>8.2f}x  {b['requests_per_s']:>12.2f}  "
                  f"{a['requests_per_s']:>11.2f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write_results(args.out, results)
    print(f"wrote {args.out}")
    if any(r["lost"] or r["invalid"] or r["errors"] for reports in results.values() for r in reports):
        sys.exit(1)


if __name__ == "__main__":
    main()
