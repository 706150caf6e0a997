"""``guided serve``: an OpenAI-compatible HTTP server with constrained decoding (FastAPI + uvicorn).

Endpoints: ``GET /v1/models``, ``POST /v1/completions``, ``POST /v1/chat/completions`` (both
with ``stream: true`` as server-sent events), ``GET /health``. The constraint comes from
``response_format`` or the vLLM-style ``guided_json`` / ``guided_regex`` / ``guided_grammar`` /
``guided_choice`` extras (see :mod:`guided.serve.protocol`).

    $ guided serve --port 8000
    >>> from openai import OpenAI
    >>> client = OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="unused")
    >>> client.completions.create(model="guided-default", prompt="n = ", max_tokens=8,
    ...                           extra_body={"guided_regex": "[0-9]+"}).choices[0].text

How requests flow: the handler validates the request, compiles its constraint (a content-hash
LRU cache; compilation runs in a thread, so bad constraints are 400s before anything is
queued), and puts one row per choice on the :class:`Batcher`'s queue. A single worker takes the
oldest row plus every waiting row with the same sampler and sampling parameters (up to
``max_batch``) and decodes them together in the decoding thread; text reaches streaming
clients as it becomes final. One model per process; the queue is bounded (503 when full) and
request bodies are limited (413).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
from collections import deque
from dataclasses import dataclass, field
from typing import AsyncIterator, Callable

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import ValidationError

from guided.constraint import ConstraintError
from guided.samplers import Sampling
from guided.serve.engine import Engine, EngineRequest, EngineResult
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


# ---------------------------------------------------------------------------------------------
# The queue and its worker
# ---------------------------------------------------------------------------------------------
@dataclass
class _Job:
    request: EngineRequest
    future: asyncio.Future = field(repr=False)


class Batcher:
    """Rows wait in a FIFO; one worker decodes compatible rows as a batch in a single thread.

        >>> batcher = Batcher(engine, max_batch=8); await batcher.start()
        >>> result = await batcher.submit([engine.request("x = ", constraint)])[0]
    """

    def __init__(self, engine: Engine, max_batch: int = 8, max_queue: int = 256):
        self.engine = engine
        self.max_batch = max_batch
        self.max_queue = max_queue
        self._pending: deque[_Job] = deque()
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="guided-decode")
        self.stats = {"batches": 0, "rows": 0, "largest_batch": 0, "errors": 0}

    @property
    def queued(self) -> int:
        return len(self._pending)

    async def start(self) -> None:
        self._wakeup = asyncio.Event()
        self._task = asyncio.create_task(self._worker(), name="guided-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        for job in self._pending:
            job.request.cancelled.set()
            if not job.future.done():
                job.future.set_exception(APIError(503, "server is shutting down", type="server_error"))
        self._pending.clear()
        self._executor.shutdown(wait=True, cancel_futures=True)

    def submit(self, requests: list[EngineRequest]) -> list[asyncio.Future]:
        """Queue rows (all or none); their futures resolve to :class:`EngineResult`."""
        if len(self._pending) + len(requests) > self.max_queue:
            raise APIError(503, f"server is busy ({len(self._pending)} rows queued); retry later",
                           type="server_error", code="queue_full")
        loop = asyncio.get_running_loop()
        futures = []
        for r in requests:
            job = _Job(r, loop.create_future())
            self._pending.append(job)
            futures.append(job.future)
        assert self._wakeup is not None, "Batcher.start() was not called"
        self._wakeup.set()
        return futures

    def _take_batch(self) -> list[_Job]:
        first = self._pending.popleft()
        key = first.request.batch_key()
        seeded = key[-1] is not None  # rows of one seeded request stay together (one random stream)
        batch, skipped = [first], []
        while self._pending and (seeded or len(batch) < self.max_batch):
            job = self._pending.popleft()
            (batch if job.request.batch_key() == key else skipped).append(job)
        self._pending.extendleft(reversed(skipped))
        return batch

    async def _worker(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._wakeup is not None
        while True:
            if not self._pending:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            batch = self._take_batch()
            live = []
            for job in batch:
                if job.request.cancelled.is_set() or job.future.done():
                    if not job.future.done():
                        job.future.set_result(EngineResult("", [], "cancelled", len(job.request.prompt_ids)))
                else:
                    live.append(job)
            if not live:
                continue
            self.stats["batches"] += 1
            self.stats["rows"] += len(live)
            self.stats["largest_batch"] = max(self.stats["largest_batch"], len(live))
            try:
                results = await loop.run_in_executor(self._executor, self.engine.run_batch, [j.request for j in live])
            except Exception as exc:  # noqa: BLE001 - one bad batch must not stop the server
                log.exception("decoding failed")
                self.stats["errors"] += 1
                for job in live:
                    if not job.future.done():
                        job.future.set_exception(
                            APIError(500, f"generation failed: {type(exc).__name__}: {exc}", type="server_error"))
                continue
            for job, result in zip(live, results):
                if not job.future.done():
                    job.future.set_result(result)


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
    app.state.engine = engine
    app.state.batcher = batcher
    app.state.cache = cache
    app.state.config = config

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError):
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": engine.name, "queued": batcher.queued, **batcher.stats,
                "cache": {"size": len(cache), "hits": cache.hits, "misses": cache.misses}}

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

    async def parse(request: Request, model_cls):
        raw = await request.body()
        try:
            data = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise APIError(400, f"request body is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise APIError(400, "request body must be a JSON object")
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
        try:
            return await asyncio.to_thread(cache.get, spec, engine.vocab)
        except ConstraintError as exc:
            raise APIError(400, f"invalid constraint: {exc}", param=_constraint_param(req),
                           code=type(exc).__name__) from None

    def rows_for(req, prompts: list[list[int]], constraint, max_tokens: int, group: object) -> list[EngineRequest]:
        sampler = req.sampler or config.default_sampler
        temperature = 1.0 if req.temperature is None else req.temperature
        if sampler == "smc" and temperature == 0:
            raise APIError(400, "sampler 'smc' draws samples: use temperature > 0", param="temperature")
        top_k = None if req.top_k in (None, -1) else req.top_k
        sampling = Sampling(temperature=temperature, top_k=top_k, top_p=req.top_p)
        stop = req.stop_strings()
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
                                          group=group))
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
        max_tokens = check_max_tokens(req.max_tokens, config.default_max_tokens)
        prompts = encode_prompts(req)
        constraint = await constraint_for(req)
        rows = rows_for(req, prompts, constraint, max_tokens, group=object())
        return await respond(req, rows, chat=False)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        req = await parse(request, ChatCompletionRequest)
        limit = req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
        max_tokens = check_max_tokens(limit, config.default_chat_max_tokens)
        plan = ToolPlan.from_request(req)
        text, templated = chat_prompt(engine.tokenizer, req.messages, tools=plan.prompt_tools() if plan else None,
                                      render_call=render_call, render_tools=render_tools)
        prompts = [engine.encode(text, add_special_tokens=not templated)]
        constraint = await constraint_for(req, plan)
        rows = rows_for(req, prompts, constraint, max_tokens, group=object())
        return await respond(req, rows, chat=True, plan=plan)

    def chat_choice(index: int, result: EngineResult, plan: ToolPlan | None) -> dict:
        reader = ToolCallReader(bool(plan and plan.calls_possible))
        reader.feed(result.text)
        reader.finish()
        message: dict = {"role": "assistant", "content": reader.content if (reader.content or not reader.calls) else None,
                         "refusal": None}
        if reader.calls:
            message["tool_calls"] = reader.calls
        finish = plan.finish_reason(bool(reader.calls), result.finish_reason) if plan else \
            api_finish_reason(result.finish_reason)
        return {"index": index, "message": message, "finish_reason": finish, "logprobs": None}

    async def respond(req, rows: list[EngineRequest], chat: bool, plan: ToolPlan | None = None):
        if req.stream:
            # Queue before answering, so a full queue is a real 503 and not an error inside a 200 stream.
            loop = asyncio.get_running_loop()
            events: asyncio.Queue = asyncio.Queue()
            for index, row in enumerate(rows):
                row.on_text = _threadsafe_put(loop, events, index)
            futures = batcher.submit(rows)
            for index, future in enumerate(futures):
                future.add_done_callback(lambda f, i=index: events.put_nowait((i, None)))
            return StreamingResponse(stream(req, rows, futures, events, chat, plan), media_type="text/event-stream",
                                     headers={"cache-control": "no-cache", "x-accel-buffering": "no"})
        results = await asyncio.gather(*batcher.submit(rows))
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
                        "logprobs": None} for i, r in enumerate(results)]
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
        readers = [ToolCallReader(bool(plan and plan.calls_possible)) for _ in rows]

        def chunk(index: int, delta: dict | str, finish: str | None) -> str:
            if chat:
                choice = {"index": index, "delta": delta, "finish_reason": finish, "logprobs": None}
            else:
                choice = {"index": index, "text": delta, "finish_reason": finish, "logprobs": None}
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
                index, text = await events.get()
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


def _threadsafe_put(loop: asyncio.AbstractEventLoop, queue: asyncio.Queue, index: int) -> Callable[[str], None]:
    def put(text: str) -> None:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, (index, text))
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
