"""``guided serve``: an OpenAI-compatible HTTP server with constrained decoding (FastAPI + uvicorn).

Endpoints: ``GET /v1/models``, ``POST /v1/completions``, ``POST /v1/chat/completions`` (tools,
logprobs), ``POST /v1/responses`` (the Responses API; all with ``stream: true`` as server-sent
events), ``GET /health``, ``GET /metrics`` (Prometheus text). The constraint comes from
``response_format`` or the vLLM-style ``guided_json`` / ``guided_regex`` / ``guided_grammar`` /
``guided_choice`` extras (see :mod:`guided.serve.protocol`).

    $ guided serve --port 8000
    >>> from openai import OpenAI
    >>> client = OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="unused")
    >>> client.completions.create(model="guided-default", prompt="n = ", max_tokens=8,
    ...                           extra_body={"guided_regex": "[0-9]+"}).choices[0].text

How requests flow: the handler validates the request, compiles its constraint (a content-hash
LRU cache; compilation runs in a thread, so bad constraints are 400s before anything is
queued), and puts one row per choice on the :class:`Batcher`'s queue. The decoding thread
batches continuously: a waiting row joins the running batch at the next step (up to
``max_batch`` rows), rows with different samplers and sampling parameters share the forward
pass, and a row that finishes, or whose client went away, leaves at once. Text reaches
streaming clients as it becomes final. One model per process; the queue is bounded (503 when
full) and request bodies are limited (413).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import AsyncIterator, Callable

from guided._extras import require_extra

require_extra("server", "guided serve (guided.serve.http)")  # one line naming the extra, not a deep ImportError

from fastapi import FastAPI, Request  # noqa: E402
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse  # noqa: E402
from starlette.exceptions import HTTPException as StarletteHTTPException  # noqa: E402
from pydantic import ValidationError

from guided.constraint import ConstraintError
from guided.samplers import Sampling
from guided.serve.engine import DecodeLoop, Engine, EngineRequest, EngineResult
from guided.serve.operations import ApiKeyAuth, RequestCounter, metrics_of
from guided.serve.responses import ResponseShaper, chat_request_of, responses_usage
from guided.serve.tools import ToolCallReader, ToolPlan, render_call, render_tools
from guided.serve.protocol import (
    APIError,
    _canonical,
    ChatCompletionRequest,
    CompletionRequest,
    ConstraintCache,
    ConstraintSpec,
    api_finish_reason,
    chat_prompt,
    error_body,
    new_id,
    now,
    usage,
)

__all__ = ["Batcher", "ServerConfig", "create_app", "serve"]

log = logging.getLogger("guided.serve.http")


@dataclass
class ServerConfig:
    """Limits and defaults of one server."""

    max_batch: int = 8  # rows decoded together
    max_queue: int = 256  # rows waiting; more gets 503
    max_body_bytes: int = 1 << 20  # request bodies larger than this get 413
    cache_size: int = 64  # compiled constraints kept (LRU by content)
    default_max_tokens: int = 16  # completions without max_tokens (OpenAI's default)
    default_chat_max_tokens: int = 256  # chat completions without max_tokens
    max_tokens_limit: int = 4096  # largest max_tokens accepted
    default_sampler: str = "awrs"
    model_aliases: tuple[str, ...] = ()  # other names the model answers to
    api_key: str | None = None  # requests must send "Authorization: Bearer <key>" (else 401)
    max_choices: int = 16  # n times the number of prompts, per request
    max_constraint_bytes: int = 256 << 10  # a schema / regex / grammar / tool list larger than this: 400
    max_compile_seconds: float = 30.0  # a constraint that takes longer to compile: 400 (it stays cached)


# ---------------------------------------------------------------------------------------------
# The queue and its worker
# ---------------------------------------------------------------------------------------------
class Batcher:
    """Continuous batching: rows wait in a FIFO and join the running batch at the next step of
    the decoding thread (a :class:`~guided.serve.engine.DecodeLoop`); a finished or cancelled
    row leaves at once.

        >>> batcher = Batcher(engine, max_batch=8); await batcher.start()
        >>> result = await batcher.submit([engine.request("x = ", constraint)])[0]
    """

    def __init__(self, engine: Engine, max_batch: int = 8, max_queue: int = 256):
        self.engine = engine
        self.max_batch = max_batch
        self.max_queue = max_queue
        self.loop = DecodeLoop(engine, max_batch=max_batch)
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._futures: set[asyncio.Future] = set()

    @property
    def queued(self) -> int:
        return self.loop.queued

    @property
    def running(self) -> int:
        return self.loop.running

    @property
    def stats(self) -> dict:
        s = self.loop.stats
        return {"batches": s["steps"], "rows": s["rows_started"], "largest_batch": s["largest_batch"],
                "errors": s["errors"], "running": self.running, **s}

    async def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="guided-decode", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stopping.is_set():
            self.loop.wait(timeout=0.5)
            if self._stopping.is_set():
                break
            try:
                self.loop.run_once()
            except Exception:  # noqa: BLE001 - one bad step must not stop the server
                log.exception("decoding failed")

    async def stop(self) -> None:
        self._stopping.set()
        with self.loop.wakeup:
            pending = list(self.loop.incoming)
            self.loop.incoming.clear()
            self.loop.wakeup.notify_all()
        for row in pending + [r.request for r in self.loop.rows]:
            row.cancelled.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 30)
        for future in self._futures:
            if not future.done():
                future.set_exception(APIError(503, "server is shutting down", type="server_error"))

    def submit(self, requests: list[EngineRequest]) -> list[asyncio.Future]:
        """Queue rows (all or none); their futures resolve to :class:`EngineResult`."""
        if self.loop.queued + len(requests) > self.max_queue:
            raise APIError(503, f"server is busy ({self.loop.queued} rows queued); retry later",
                           type="server_error", code="queue_full")
        aio = asyncio.get_running_loop()
        futures = []
        for r in requests:
            future = aio.create_future()
            self._futures.add(future)
            future.add_done_callback(self._futures.discard)
            r.on_done = _resolver(aio, future)
            futures.append(future)
        self.loop.submit(requests)
        return futures


def _resolver(aio: asyncio.AbstractEventLoop, future: asyncio.Future) -> Callable[[EngineResult], None]:
    def resolve(result: EngineResult) -> None:
        def settle() -> None:
            if not future.done():
                future.set_result(result)

        try:
            aio.call_soon_threadsafe(settle)
        except RuntimeError:  # the event loop closed (shutting down): nobody waits
            pass

    return resolve


# ---------------------------------------------------------------------------------------------
# Request size limit (pure ASGI, so it sees the body before any parsing)
# ---------------------------------------------------------------------------------------------
class _BodyTooLarge(Exception):
    pass


class BodyLimit:
    """Answers 413 to bodies over ``max_bytes`` (by Content-Length, or while reading a chunked body)."""

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            return await self._reject(send)
        seen = 0
        started = False

        async def limited_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _BodyTooLarge
            return message

        async def tracking_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _BodyTooLarge:
            if not started:
                await self._reject(send)

    async def _reject(self, send) -> None:
        body = json.dumps(error_body(f"request body is larger than {self.max_bytes} bytes",
                                     code="request_too_large")).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


# ---------------------------------------------------------------------------------------------
# The application
# ---------------------------------------------------------------------------------------------
def create_app(engine: Engine, config: ServerConfig | None = None):
    """The ASGI application serving ``engine`` (run it with uvicorn, or see :func:`serve`)."""
    from contextlib import asynccontextmanager

    config = config or ServerConfig()
    batcher = Batcher(engine, max_batch=config.max_batch, max_queue=config.max_queue)
    cache = ConstraintCache(config.cache_size)
    model_names = (engine.name, *config.model_aliases)
    created = now()

    @asynccontextmanager
    async def lifespan(app):
        await batcher.start()
        try:
            yield
        finally:
            await batcher.stop()

    app = FastAPI(title="guided", version=_version(), lifespan=lifespan,
                  description="OpenAI-compatible completions with constrained decoding.")
    app.add_middleware(BodyLimit, max_bytes=config.max_body_bytes)
    if config.api_key:
        app.add_middleware(ApiKeyAuth, key=config.api_key)
    request_counts: Counter = Counter()
    app.add_middleware(RequestCounter, counts=request_counts)  # outermost: counts 401s and 413s too
    compile_seconds = [0.0]
    app.state.engine = engine
    app.state.batcher = batcher
    app.state.cache = cache
    app.state.config = config

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError):
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):  # 404, 405: OpenAI's error shape too
        return JSONResponse(error_body(str(exc.detail), code="not_found" if exc.status_code == 404 else None),
                            status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": engine.name, "queued": batcher.queued, **batcher.stats,
                "cache": {"size": len(cache), "hits": cache.hits, "misses": cache.misses}}

    @app.get("/metrics")
    async def metrics():
        known = {route.path for route in app.routes}
        text = metrics_of(request_counts, batcher.loop.stats, batcher.queued, batcher.running, cache,
                          compile_seconds[0], lambda path: path in known)
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4; charset=utf-8")

    def model_card(name: str) -> dict:
        return {"id": name, "object": "model", "created": created, "owned_by": "guided"}

    @app.get("/v1/models")
    async def list_models():
        return {"object": "list", "data": [model_card(n) for n in model_names]}

    @app.get("/v1/models/{name:path}")
    async def get_model(name: str):
        if name not in model_names:
            raise _unknown_model(name, model_names)
        return model_card(name)

    async def read_json(request: Request) -> dict:
        raw = await request.body()
        try:
            data = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
            raise APIError(400, f"request body is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise APIError(400, "request body must be a JSON object")
        return data

    async def parse(request: Request, model_cls, data: dict | None = None):
        if data is None:
            data = await read_json(request)
        try:
            req = model_cls.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first.get("loc", ())) or None
            raise APIError(400, f"invalid request: {where}: {first.get('msg')}", param=where) from None
        req.unsupported()
        if req.model not in model_names:
            raise _unknown_model(req.model, model_names)
        return req

    async def constraint_for(req, plan: ToolPlan | None = None):
        spec = ConstraintSpec.from_request(req)
        if plan is not None and plan.calls_possible:
            content = spec
            spec = ConstraintSpec("tools", _canonical({"tools": plan.key(), "content": content and content.key}),
                                  factory=lambda: plan.constraint(content.build() if content else None))
        if spec is None:
            return None
        if len(spec.payload.encode()) > config.max_constraint_bytes:
            raise APIError(400, f"the constraint is larger than {config.max_constraint_bytes} bytes",
                           param=_constraint_param(req), code="constraint_too_large")
        t0 = time.perf_counter()
        try:
            return await asyncio.wait_for(asyncio.to_thread(cache.get, spec, engine.vocab), config.max_compile_seconds)
        except asyncio.TimeoutError:  # the compile thread runs on and caches its result for next time
            raise APIError(400, f"the constraint took longer than {config.max_compile_seconds:g} s to compile",
                           param=_constraint_param(req), code="compile_timeout") from None
        except RecursionError:
            raise APIError(400, "the constraint is nested too deeply to compile", param=_constraint_param(req),
                           code="constraint_too_deep") from None
        except ConstraintError as exc:
            raise APIError(400, f"invalid constraint: {exc}", param=_constraint_param(req),
                           code=type(exc).__name__) from None
        finally:
            compile_seconds[0] += time.perf_counter() - t0

    def rows_for(req, prompts: list[list[int]], constraint, max_tokens: int, group: object) -> list[EngineRequest]:
        sampler = req.sampler or config.default_sampler
        temperature = 1.0 if req.temperature is None else req.temperature
        if temperature < 1e-5:  # logits / 1e-290 overflow: a temperature this small is greedy (as in vLLM)
            temperature = 0.0
        if sampler == "smc" and temperature == 0:
            raise APIError(400, "sampler 'smc' draws samples: use temperature > 0", param="temperature")
        top_k = None if req.top_k in (None, -1) else min(req.top_k, engine.vocab.size)
        sampling = Sampling(temperature=temperature, top_k=top_k, top_p=req.top_p)
        stop = req.stop_strings()
        logprobs = req.logprob_request()
        bias = {int(k): float(v) for k, v in (req.logit_bias or {}).items()} or None
        if bias and any(not 0 <= t < engine.vocab.size for t in bias):
            raise APIError(400, f"logit_bias token ids must be in [0, {engine.vocab.size})", param="logit_bias")
        if sampler == "smc" and (logprobs is not None or bias or req.presence_penalty or req.frequency_penalty):
            raise APIError(400, "sampler 'smc' takes no logprobs, penalties or logit_bias (it weighs whole "
                           "sequences)", param="sampler")
        if req.n * len(prompts) > config.max_choices:
            raise APIError(400, f"at most {config.max_choices} choices per request (n times the prompts)", param="n")
        rows = []
        for ids in prompts:
            if engine.max_context and len(ids) + max_tokens > engine.max_context:
                raise APIError(400, f"prompt ({len(ids)} tokens) plus max_tokens ({max_tokens}) exceeds the "
                               f"model's context of {engine.max_context} tokens", param="max_tokens",
                               code="context_length_exceeded")
            for _ in range(req.n):
                state = engine.request(ids, constraint).state
                rows.append(EngineRequest(prompt_ids=ids, state=state, max_tokens=max_tokens, sampling=sampling,
                                          sampler=sampler, particles=req.particles, seed=req.seed, stop=stop,
                                          group=group, logprobs=logprobs, logprobs_mode=req.logprobs_mode,
                                          presence_penalty=req.presence_penalty,
                                          frequency_penalty=req.frequency_penalty, logit_bias=bias))
        return rows

    def check_max_tokens(value: int | None, default: int) -> int:
        value = default if value is None else value
        if value > config.max_tokens_limit:
            raise APIError(400, f"max_tokens must be <= {config.max_tokens_limit}", param="max_tokens")
        return value

    def encode_prompts(req: CompletionRequest) -> list[list[int]]:
        out = []
        for p in req.prompts():
            if isinstance(p, str):
                out.append(engine.encode(p))
            else:
                if not p or any(not 0 <= t < engine.vocab.size for t in p):
                    raise APIError(400, f"prompt token ids must be in [0, {engine.vocab.size})", param="prompt")
                out.append(list(p))
        return out

    @app.post("/v1/completions")
    async def completions(request: Request):
        req = await parse(request, CompletionRequest)
        for name in ("tools", "tool_choice", "parallel_tool_calls"):
            if (req.model_extra or {}).get(name) is not None:
                raise APIError(400, f"'{name}' belongs to /v1/chat/completions", param=name)
        max_tokens = check_max_tokens(req.max_tokens, config.default_max_tokens)
        prompts = encode_prompts(req)
        constraint = await constraint_for(req)
        rows = rows_for(req, prompts, constraint, max_tokens, group=object())
        return await respond(request, req, rows, chat=False)

    async def chat_rows(req: ChatCompletionRequest) -> tuple[list[EngineRequest], ToolPlan | None]:
        limit = req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
        max_tokens = check_max_tokens(limit, config.default_chat_max_tokens)
        plan = ToolPlan.from_request(req)
        text, templated = chat_prompt(engine.tokenizer, req.messages, tools=plan.prompt_tools() if plan else None,
                                      render_call=render_call, render_tools=render_tools)
        prompts = [engine.encode(text, add_special_tokens=not templated)]
        constraint = await constraint_for(req, plan)
        return rows_for(req, prompts, constraint, max_tokens, group=object()), plan

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        req = await parse(request, ChatCompletionRequest)
        rows, plan = await chat_rows(req)
        return await respond(request, req, rows, chat=True, plan=plan)

    @app.post("/v1/responses")
    async def responses(request: Request):
        body = await read_json(request)
        req = await parse(request, ChatCompletionRequest, chat_request_of(body))
        rows, plan = await chat_rows(req)
        shaper = ResponseShaper(body, req.model)
        reader = (plan.reader() if plan else ToolCallReader(False))
        [row] = rows
        if req.stream:
            loop = asyncio.get_running_loop()
            events: asyncio.Queue = asyncio.Queue()
            row.on_text = _threadsafe_put(loop, events, 0)
            [future] = batcher.submit(rows)
            future.add_done_callback(lambda f: events.put_nowait((0, None)))
            return StreamingResponse(response_stream(row, future, events, shaper, reader),
                                     media_type="text/event-stream",
                                     headers={"cache-control": "no-cache", "x-accel-buffering": "no"})
        [result] = await _until_done_or_gone(request, rows, batcher.submit(rows))
        if result.error:
            raise APIError(500, f"generation failed: {result.error}", type="server_error", code="dead_end")
        shaper.on(reader.feed(result.text) + reader.finish())
        final = shaper.finish(result.finish_reason, responses_usage(len(row.prompt_ids), result.completion_tokens))
        return final[-1]["response"]

    async def response_stream(row: EngineRequest, future: asyncio.Future, events: asyncio.Queue,
                              shaper: ResponseShaper, reader: ToolCallReader) -> AsyncIterator[str]:
        def sse(event: dict) -> str:
            return f"event: {event['type']}\ndata: {json.dumps(event, ensure_ascii=False)}\n\n"

        try:
            for event in shaper.start():
                yield sse(event)
            while True:
                _, text, *_ = await events.get()
                if text is not None:
                    for event in shaper.on(reader.feed(text)):
                        yield sse(event)
                    continue
                exc = future.exception()
                result = None if exc is not None else future.result()
                if exc is not None or result.error:
                    message = str(exc) if exc is not None else f"generation failed: {result.error}"
                    yield sse({"type": "error", "code": "server_error", "message": message, "param": None,
                               "sequence_number": shaper.sequence})
                    return
                for event in shaper.on(reader.finish()):
                    yield sse(event)
                usage_ = responses_usage(len(row.prompt_ids), result.completion_tokens)
                for event in shaper.finish(result.finish_reason, usage_):
                    yield sse(event)
                return
        finally:
            row.cancelled.set()

    def chat_choice(index: int, result: EngineResult, plan: ToolPlan | None) -> dict:
        reader = (plan.reader() if plan else ToolCallReader(False))
        reader.feed(result.text)
        reader.finish()
        message: dict = {"role": "assistant", "content": reader.content if (reader.content or not reader.calls) else None,
                         "refusal": None}
        if reader.calls:
            message["tool_calls"] = reader.calls
        finish = plan.finish_reason(bool(reader.calls), result.finish_reason) if plan else \
            api_finish_reason(result.finish_reason)
        return {"index": index, "message": message, "finish_reason": finish,
                "logprobs": chat_logprobs(result.logprobs)}

    def chat_logprobs(entries: list[dict] | None) -> dict | None:
        """OpenAI's chat shape: ``{"content": [{token, logprob, bytes, top_logprobs}], "refusal": None}``."""
        if entries is None:
            return None

        def one(token: int, logprob: float) -> dict:
            data = engine.vocab.token_bytes[token]
            return {"token": data.decode("utf-8", "replace"), "logprob": logprob, "bytes": list(data)}

        return {"content": [{**one(e["id"], e["logprob"]), "top_logprobs": [one(t, lp) for t, lp in e["top"]]}
                            for e in entries], "refusal": None}

    def completion_logprobs(entries: list[dict] | None, offset: int = 0) -> dict | None:
        """The legacy completions shape: tokens, token_logprobs, top_logprobs, text_offset."""
        if entries is None:
            return None
        out: dict = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
        for e in entries:
            text = engine.vocab.token_bytes[e["id"]].decode("utf-8", "replace")
            out["tokens"].append(text)
            out["token_logprobs"].append(e["logprob"])
            out["top_logprobs"].append({engine.vocab.token_bytes[t].decode("utf-8", "replace"): lp for t, lp in e["top"]})
            out["text_offset"].append(offset)
            offset += len(text)
        return out

    async def respond(request: Request, req, rows: list[EngineRequest], chat: bool, plan: ToolPlan | None = None):
        if req.stream:
            # Queue before answering, so a full queue is a real 503 and not an error inside a 200 stream.
            loop = asyncio.get_running_loop()
            events: asyncio.Queue = asyncio.Queue()
            for index, row in enumerate(rows):
                row.on_text = _threadsafe_put(loop, events, index)
                if row.logprobs is not None:
                    row.on_token = _threadsafe_put(loop, events, index, "logprobs")
            futures = batcher.submit(rows)
            for index, future in enumerate(futures):
                future.add_done_callback(lambda f, i=index: events.put_nowait((i, None)))
            return StreamingResponse(stream(req, rows, futures, events, chat, plan), media_type="text/event-stream",
                                     headers={"cache-control": "no-cache", "x-accel-buffering": "no"})
        results = await _until_done_or_gone(request, rows, batcher.submit(rows))
        for r in results:
            if r.error:
                raise APIError(500, f"generation failed: {r.error}", type="server_error", code="dead_end")
        prompt_tokens = sum(len(ids) for ids in {id(r.prompt_ids): r.prompt_ids for r in rows}.values())
        completion_tokens = sum(r.completion_tokens for r in results)
        if chat:
            choices = [chat_choice(i, r, plan) for i, r in enumerate(results)]
            body = {"id": new_id("chatcmpl"), "object": "chat.completion", "created": now(), "model": req.model,
                    "choices": choices, "usage": usage(prompt_tokens, completion_tokens)}
        else:
            choices = [{"index": i, "text": r.text, "finish_reason": api_finish_reason(r.finish_reason),
                        "logprobs": completion_logprobs(r.logprobs)} for i, r in enumerate(results)]
            body = {"id": new_id("cmpl"), "object": "text_completion", "created": now(), "model": req.model,
                    "choices": choices, "usage": usage(prompt_tokens, completion_tokens)}
        body["system_fingerprint"] = f"guided-{_version()}"
        # guided's extra: the log weight of each choice (an estimate of log Z for weighted samplers)
        body["guided"] = {"sampler": rows[0].sampler, "log_weights": [r.log_weight for r in results]}
        return body

    async def stream(req, rows: list[EngineRequest], futures: list[asyncio.Future], events: asyncio.Queue,
                     chat: bool, plan: ToolPlan | None = None) -> AsyncIterator[str]:
        ident = new_id("chatcmpl" if chat else "cmpl")
        created_at = now()
        kind = "chat.completion.chunk" if chat else "text_completion"
        include_usage = bool((req.stream_options or {}).get("include_usage"))
        readers = [(plan.reader() if plan else ToolCallReader(False)) for _ in rows]
        pending: list[list[dict]] = [[] for _ in rows]  # logprobs not sent yet, per row
        offsets = [0] * len(rows)

        def take_logprobs(index: int):
            if rows[index].logprobs is None:
                return None
            entries, pending[index] = pending[index], []
            if chat:
                return chat_logprobs(entries)
            shaped = completion_logprobs(entries, offsets[index])
            offsets[index] += sum(len(t) for t in shaped["tokens"])
            return shaped

        def chunk(index: int, delta: dict | str, finish: str | None) -> str:
            if chat:
                choice = {"index": index, "delta": delta, "finish_reason": finish, "logprobs": take_logprobs(index)}
            else:
                choice = {"index": index, "text": delta, "finish_reason": finish, "logprobs": take_logprobs(index)}
            body = {"id": ident, "object": kind, "created": created_at, "model": req.model, "choices": [choice]}
            if include_usage:
                body["usage"] = None
            return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

        def deltas(index: int, reader_events: list[tuple]) -> list[str]:
            out = []
            for event in reader_events:
                if event[0] == "content":
                    out.append(chunk(index, {"content": event[1]}, None))
                elif event[0] == "call":
                    _, k, call_id, name = event
                    out.append(chunk(index, {"tool_calls": [{"index": k, "id": call_id, "type": "function",
                                                             "function": {"name": name, "arguments": ""}}]}, None))
                else:
                    out.append(chunk(index, {"tool_calls": [{"index": event[1], "function": {"arguments": event[2]}}]},
                                     None))
            return out

        try:
            if chat:
                for index in range(len(rows)):
                    yield chunk(index, {"role": "assistant", "content": ""}, None)
            remaining = len(rows)
            results: dict[int, EngineResult] = {}
            while remaining:
                index, text, *what = await events.get()
                if what:  # a token's logprobs: sent with the row's next chunk
                    pending[index].append(text)
                    continue
                if text is not None:
                    if chat:
                        for line in deltas(index, readers[index].feed(text)):
                            yield line
                    else:
                        yield chunk(index, text, None)
                    continue
                remaining -= 1
                future = futures[index]
                if future.exception() is not None:
                    exc = future.exception()
                    body = exc.body() if isinstance(exc, APIError) else error_body(str(exc), "server_error")
                    yield f"data: {json.dumps(body)}\n\n"
                    continue
                result = future.result()
                results[index] = result
                if result.error:
                    yield f"data: {json.dumps(error_body(f'generation failed: {result.error}', 'server_error'))}\n\n"
                    continue
                if chat:
                    reader = readers[index]
                    for line in deltas(index, reader.finish()):
                        yield line
                    finish = plan.finish_reason(bool(reader.calls), result.finish_reason) if plan else \
                        api_finish_reason(result.finish_reason)
                    yield chunk(index, {}, finish)
                else:
                    yield chunk(index, "", api_finish_reason(result.finish_reason))
            if include_usage:
                prompt_tokens = sum(len(ids) for ids in {id(r.prompt_ids): r.prompt_ids for r in rows}.values())
                completion_tokens = sum(r.completion_tokens for r in results.values())
                body = {"id": ident, "object": kind, "created": created_at, "model": req.model, "choices": [],
                        "usage": usage(prompt_tokens, completion_tokens)}
                yield f"data: {json.dumps(body)}\n\n"
            yield "data: [DONE]\n\n"
        finally:
            # A client that went away stops its rows at the next token.
            for row in rows:
                row.cancelled.set()

    return app


async def _until_done_or_gone(request: Request, rows: list[EngineRequest], futures: list[asyncio.Future]) -> list:
    """The rows' results; if the client disconnects first, its rows are cancelled (they leave
    the batch at the next step) and the handler ends."""
    done = asyncio.ensure_future(asyncio.gather(*futures))
    while True:
        finished, _ = await asyncio.wait({done}, timeout=0.25)
        if finished:
            return done.result()
        if await request.is_disconnected():
            for row in rows:
                row.cancelled.set()
            return await done


def _threadsafe_put(loop: asyncio.AbstractEventLoop, queue: asyncio.Queue, index: int, *tag: str) -> Callable:
    def put(item) -> None:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, (index, item, *tag))
        except RuntimeError:  # the loop closed (server shutting down): nobody is listening
            pass

    return put


def _unknown_model(name: str, known) -> APIError:
    return APIError(404, f"The model '{name}' does not exist; this server serves: {', '.join(known)}",
                    param="model", code="model_not_found")


def _constraint_param(req) -> str:
    for name in ("guided_json", "guided_regex", "guided_grammar", "guided_choice"):
        if getattr(req, name) is not None:
            return name
    return "response_format"


def _version() -> str:
    from guided import __version__

    return __version__


# ---------------------------------------------------------------------------------------------
# Running it
# ---------------------------------------------------------------------------------------------
def serve(engine: Engine, host: str = "127.0.0.1", port: int = 8000, config: ServerConfig | None = None,
          log_level: str = "info", ready: Callable[[str], None] | None = None) -> None:
    """Serve ``engine`` until interrupted (uvicorn; one process, one model).

    ``ready(url)`` is called once the socket listens (the CLI prints it; tests wait for it).
    """
    import uvicorn

    app = create_app(engine, config)
    uv_config = uvicorn.Config(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=5)
    server = uvicorn.Server(uv_config)
    if ready is not None:
        original_startup = server.startup

        async def startup(sockets=None):
            await original_startup(sockets=sockets)
            if server.started:
                bound = server.servers[0].sockets[0].getsockname() if server.servers else (host, port)
                ready(f"http://{bound[0]}:{bound[1]}")

        server.startup = startup  # type: ignore[method-assign]
    server.run()
