"""Running ``guided serve`` in production: API keys, request counters and ``/metrics`` in the
Prometheus text format (version 0.0.4).

    $ guided serve --api-key "$KEY"             # requests without "Authorization: Bearer $KEY": 401
    $ curl http://127.0.0.1:8000/metrics        # guided_requests_total{endpoint=...,status=...} ...

Both are pure ASGI middleware, so they see every request (and its status) before FastAPI does.
"""

from __future__ import annotations

import hmac
import json
import threading
from collections import Counter
from typing import Callable

from guided.serve.protocol import error_body

__all__ = ["ApiKeyAuth", "RequestCounter", "prometheus_text"]

OPEN_PATHS = ("/health", "/metrics")  # probes and scrapers need no key


class ApiKeyAuth:
    """401 (OpenAI's ``invalid_api_key`` error) unless ``Authorization: Bearer <key>`` matches."""

    def __init__(self, app, key: str):
        self.app = app
        self.key = key.encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("path", "") in OPEN_PATHS:
            return await self.app(scope, receive, send)
        header = dict(scope.get("headers") or []).get(b"authorization", b"")
        scheme, _, given = header.partition(b" ")
        if scheme.lower() == b"bearer" and hmac.compare_digest(given.strip(), self.key):
            return await self.app(scope, receive, send)
        message = ("You didn't provide an API key (Authorization: Bearer <key>)" if not header
                   else "Incorrect API key provided")
        body = json.dumps(error_body(message, code="invalid_api_key")).encode()
        await send({"type": "http.response.start", "status": 401,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"www-authenticate", b"Bearer")]})
        await send({"type": "http.response.body", "body": body})


class RequestCounter:
    """Counts requests by endpoint and status code (``counts[(path, status)]``)."""

    def __init__(self, app, counts: Counter):
        self.app = app
        self.counts = counts
        self.lock = threading.Lock()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope.get("path", "")

        async def counting_send(message):
            if message["type"] == "http.response.start":
                with self.lock:
                    self.counts[(path, int(message["status"]))] += 1
            await send(message)

        await self.app(scope, receive, counting_send)


def prometheus_text(metrics: list[tuple[str, str, str, list[tuple[dict, float]]]]) -> str:
    """``[(name, type, help, [(labels, value), ...]), ...]`` in the Prometheus text format."""
    lines = []
    for name, kind, help_text, samples in metrics:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            label_text = ",".join(f'{k}="{_escape(str(v))}"' for k, v in labels.items())
            lines.append(f"{name}{{{label_text}}} {value}" if label_text else f"{name} {value}")
    return "\n".join(lines) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def metrics_of(counts: Counter, loop_stats: dict, queued: int, running: int, cache, compile_seconds: float,
               known_paths: Callable[[str], bool]) -> str:
    """The server's metrics: requests, tokens, queue depth, running rows, cache, time spent."""
    requests = [({"endpoint": path if known_paths(path) else "other", "status": str(status)}, n)
                for (path, status), n in sorted(counts.items())]
    merged: Counter = Counter()
    for labels, n in requests:
        merged[(labels["endpoint"], labels["status"])] += n
    return prometheus_text([
        ("guided_requests_total", "counter", "HTTP requests answered, by endpoint and status code",
         [({"endpoint": e, "status": s}, n) for (e, s), n in sorted(merged.items())]),
        ("guided_generated_tokens_total", "counter", "tokens generated (all rows)", [({}, loop_stats["tokens"])]),
        ("guided_rows_started_total", "counter", "rows (choices) that started decoding", [({}, loop_stats["rows_started"])]),
        ("guided_rows_cancelled_total", "counter", "rows stopped because their client went away",
         [({}, loop_stats["cancelled"])]),
        ("guided_decode_steps_total", "counter", "batched decoding steps", [({}, loop_stats["steps"])]),
        ("guided_queue_depth", "gauge", "rows waiting to join the batch", [({}, queued)]),
        ("guided_running_rows", "gauge", "rows in the running batch", [({}, running)]),
        ("guided_constraint_cache_hits_total", "counter", "compiled-constraint cache hits", [({}, cache.hits)]),
        ("guided_constraint_cache_misses_total", "counter", "compiled-constraint cache misses (compilations)",
         [({}, cache.misses)]),
        ("guided_constraint_cache_size", "gauge", "compiled constraints kept", [({}, len(cache))]),
        ("guided_compile_seconds_total", "counter", "time spent compiling constraints", [({}, compile_seconds)]),
        ("guided_mask_seconds_total", "counter", "time spent in constraint checks and token masks while decoding",
         [({}, loop_stats["constraint_seconds"])]),
        ("guided_forward_seconds_total", "counter", "time spent in the model's forward passes",
         [({}, loop_stats["forward_seconds"])]),
        ("guided_errors_total", "counter", "decoding steps that failed", [({}, loop_stats["errors"])]),
    ])
