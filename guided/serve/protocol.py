"""The OpenAI-compatible wire format of ``guided serve``: request models, which constraint a request
selects, response bodies, errors, and the content-addressed cache of compiled constraints.

A request selects at most one constraint, with the OpenAI field or a vLLM-style extra:

=====================================================  ===============================================
``response_format: {"type": "json_schema", ...}``      :class:`~guided.json_schema.JSONSchema`
``response_format: {"type": "json_object"}``           any JSON object
``guided_json: {...schema...}`` (or its JSON text)     JSON Schema
``guided_regex: "..."``                                :class:`~guided.grammars.Regex`
``guided_grammar: "...lark..."``                       :class:`~guided.grammars.Grammar`
``guided_choice: ["a", "b"]``                          one of the strings, exactly
=====================================================  ===============================================

plus the extras ``sampler`` (``awrs``/``masking``/``smc``), ``particles`` (SMC) and
``guided_whitespace`` (JSON whitespace: ``bounded``, the default, ``compact`` or ``flexible``;
see :class:`~guided.json_schema.JSONSchema`).

    >>> spec = ConstraintSpec.from_request(CompletionRequest(model="m", prompt="x", guided_regex="[0-9]+"))
    >>> spec.kind, spec.key[:8]          # ('regex', '1c0a5f3e')
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Literal

from pydantic import BaseModel, ConfigDict, Field

from guided.constraint import Constraint, ConstraintError

__all__ = [
    "APIError",
    "ChatCompletionRequest",
    "CompletionRequest",
    "ConstraintCache",
    "ConstraintSpec",
    "chat_prompt",
    "error_body",
]


class APIError(Exception):
    """An error with an HTTP status and an OpenAI-style body (``{"error": {...}}``)."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code

    def body(self) -> dict:
        return error_body(self.message, self.type, self.param, self.code)


def error_body(message: str, type: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


# ---------------------------------------------------------------------------------------------
# Requests
# ---------------------------------------------------------------------------------------------
class _Common(BaseModel):
    """Fields shared by ``/v1/completions`` and ``/v1/chat/completions``."""

    # Unknown fields are accepted and ignored, as OpenAI-compatible servers do; the ones whose
    # meaning we cannot honour are rejected in ``unsupported()``.
    model_config = ConfigDict(extra="allow")

    model: str
    max_tokens: int | None = Field(default=None, ge=0)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    top_k: int | None = Field(default=None)
    n: int = Field(default=1, ge=1, le=128)  # the server's own limit (--max-choices) is checked later
    stream: bool = False
    stream_options: dict | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    user: str | None = None  # an end-user id: recorded by nobody, changes nothing (as at OpenAI)
    response_format: dict | None = None
    presence_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)
    frequency_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)
    logit_bias: dict[str, float] | None = None
    # guided's: which distribution logprobs report ("raw": the model's; "constrained": renormalised
    # on the tokens the constraint allows, at temperature 1)
    logprobs_mode: Literal["raw", "constrained"] = "raw"
    # vLLM-style constraint extras
    guided_json: dict | str | None = None
    guided_regex: str | None = None
    guided_grammar: str | None = None
    guided_choice: list[str] | None = None
    guided_decoding_backend: str | None = None
    guided_whitespace_pattern: str | None = None  # vLLM's: any value selects "flexible" whitespace
    guided_whitespace: Literal["bounded", "flexible", "compact"] | None = None  # JSON whitespace (default bounded)
    # guided's own extras
    sampler: Literal["awrs", "masking", "smc"] | None = None
    particles: int = Field(default=8, ge=1, le=64)

    def stop_strings(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        stops = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)
        if len(stops) > 4:
            raise APIError(400, "at most 4 stop sequences are supported", param="stop")
        return tuple(s for s in stops if s)

    def unsupported(self) -> None:
        """Reject the OpenAI options whose meaning this server cannot honour (400), and check the
        ones it honours beyond their types."""
        extra = self.model_extra or {}
        for name in ("echo", "suffix", "audio", "prediction", "web_search_options", "reasoning_effort",
                     "function_call", "functions"):
            value = extra.get(name)
            if value not in (None, False, [], {}):
                raise APIError(400, f"'{name}' is not supported by this server", param=name)
        modalities = extra.get("modalities")
        if modalities not in (None, ["text"]):
            raise APIError(400, "only the 'text' modality is supported", param="modalities")
        best_of = extra.get("best_of")
        if best_of not in (None, 1):
            raise APIError(400, "'best_of' other than 1 is not supported", param="best_of")
        if self.top_k is not None and self.top_k < 1 and self.top_k != -1:
            raise APIError(400, "'top_k' must be >= 1 (or -1 for no limit)", param="top_k")
        if self.stream_options is not None:
            if not self.stream:
                raise APIError(400, "'stream_options' is only allowed when 'stream' is true", param="stream_options")
            if not isinstance(self.stream_options.get("include_usage", False), bool):
                raise APIError(400, "'stream_options.include_usage' must be a boolean", param="stream_options")
        for key, bias in (self.logit_bias or {}).items():
            if not key.isdigit() or not -100 <= bias <= 100:
                raise APIError(400, "'logit_bias' maps token ids to biases in [-100, 100]", param="logit_bias")

    def logprob_request(self) -> int | None:
        """How many top alternatives per token (``None``: no logprobs)."""
        return None


class CompletionRequest(_Common):
    prompt: str | list[str] | list[int] | list[list[int]]
    logprobs: int | None = Field(default=None, ge=0, le=5)

    def logprob_request(self) -> int | None:
        return self.logprobs

    def prompts(self) -> list[str | list[int]]:
        p = self.prompt
        if isinstance(p, str):
            return [p]
        if not p:
            raise APIError(400, "'prompt' must not be empty", param="prompt")
        if all(isinstance(x, int) for x in p):
            return [list(p)]
        return list(p)


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict] | None = None
    tool_calls: list[dict] | None = None
    tool_call_id: str | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        parts = []
        for part in self.content:
            if part.get("type") not in ("text", "input_text", "output_text"):
                raise APIError(400, f"message content of type {part.get('type')!r} is not supported (text only)",
                               param="messages")
            parts.append(str(part.get("text", "")))
        return "".join(parts)


class ChatCompletionRequest(_Common):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=0)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)

    def logprob_request(self) -> int | None:
        if self.top_logprobs is not None and not self.logprobs:
            raise APIError(400, "'top_logprobs' requires 'logprobs' to be true", param="top_logprobs")
        return (self.top_logprobs or 0) if self.logprobs else None


def chat_prompt(tokenizer, messages: list[ChatMessage], tools: list[dict] | None = None,
                render_call=None, render_tools=None) -> tuple[str, bool]:
    """The prompt text of a chat, and whether it already holds the special tokens.

    The tokenizer's chat template when it has one (given ``tools`` and the messages' tool
    calls); otherwise a plain transcript ending in ``assistant:`` (small base models have no
    template), where ``render_tools(tools)`` opens the chat and ``render_call(call)`` writes
    an assistant's earlier calls.
    """
    for i, m in enumerate(messages):
        if m.role == "tool" and not m.tool_call_id:
            raise APIError(400, f"messages[{i}]: a 'tool' message needs 'tool_call_id'", param=f"messages[{i}]")
    template = getattr(tokenizer, "chat_template", None)
    if template:
        turns = []
        for m in messages:
            turn: dict = {"role": m.role, "content": m.text()}
            if m.tool_calls:
                turn["tool_calls"] = m.tool_calls
            if m.tool_call_id:
                turn["tool_call_id"] = m.tool_call_id
            turns.append(turn)
        text = tokenizer.apply_chat_template(turns, tools=tools or None, tokenize=False, add_generation_prompt=True)
        return text, True
    lines = [f"system: {render_tools(tools)}"] if tools and render_tools else []
    for m in messages:
        text = m.text()
        if m.tool_calls and render_call is not None:
            text += "".join(render_call(c) for c in m.tool_calls)
        lines.append(f"{m.role}: {text}")
    return "\n".join(lines) + "\nassistant:", False


# ---------------------------------------------------------------------------------------------
# Which constraint a request selects
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ConstraintSpec:
    """A constraint described by content: ``kind`` and a canonical JSON ``payload``."""

    kind: str  # "json_schema" | "regex" | "grammar" | "choice" | "tools" (built by ``factory``)
    payload: str
    factory: Callable[[], Constraint] | None = field(default=None, compare=False, hash=False, repr=False)

    @property
    def key(self) -> str:
        return hashlib.sha256(f"{self.kind}\0{self.payload}".encode()).hexdigest()

    @staticmethod
    def from_request(req: _Common) -> "ConstraintSpec | None":
        """The constraint ``req`` selects (``None``: plain text); 400 when ambiguous or malformed."""
        found: list[tuple[str, ConstraintSpec]] = []
        # JSON whitespace: bounded by default (a model can pretty-print but not run on into
        # newlines); "compact" or "flexible" on request (vLLM's guided_whitespace_pattern: flexible).
        ws = req.guided_whitespace or ("bounded" if req.guided_whitespace_pattern is None else "flexible")
        rf = req.response_format
        if rf is not None:
            kind = rf.get("type")
            if kind == "json_schema":
                js = rf.get("json_schema")
                if not isinstance(js, dict):
                    raise APIError(400, "response_format.json_schema must be an object with a 'schema'",
                                   param="response_format")
                schema = js.get("schema", js.get("schema_", {}))
                found.append(("response_format", _schema_spec(schema, "response_format.json_schema.schema", ws)))
            elif kind == "json_object":
                found.append(("response_format", _schema_spec({"type": "object"}, "response_format", ws)))
            elif kind not in (None, "text"):
                raise APIError(400, f"response_format type {kind!r} is not supported "
                               "(use 'text', 'json_object' or 'json_schema')", param="response_format")
        if req.guided_json is not None:
            schema = req.guided_json
            if isinstance(schema, str):
                try:
                    schema = json.loads(schema)
                except json.JSONDecodeError as exc:
                    raise APIError(400, f"guided_json is not valid JSON: {exc}", param="guided_json") from None
            found.append(("guided_json", _schema_spec(schema, "guided_json", ws)))
        if req.guided_regex is not None:
            found.append(("guided_regex", ConstraintSpec("regex", _canonical(req.guided_regex))))
        if req.guided_grammar is not None:
            found.append(("guided_grammar", ConstraintSpec("grammar", _canonical(req.guided_grammar))))
        if req.guided_choice is not None:
            if not req.guided_choice:
                raise APIError(400, "guided_choice must list at least one string", param="guided_choice")
            found.append(("guided_choice", ConstraintSpec("choice", _canonical(list(req.guided_choice)))))
        if len(found) > 1:
            names = ", ".join(name for name, _ in found)
            raise APIError(400, f"choose one constraint per request, got: {names}", param=found[1][0])
        return found[0][1] if found else None

    def build(self) -> Constraint:
        """The :class:`~guided.constraint.Constraint` (may raise ``ConstraintError``)."""
        if self.factory is not None:
            return self.factory()
        value = json.loads(self.payload)
        if self.kind == "json_schema":
            from guided.json_schema import JSONSchema

            return JSONSchema(value["schema"], whitespace=value["whitespace"])
        if self.kind == "regex":
            from guided.grammars import Regex

            return Regex(value)
        if self.kind == "grammar":
            import guided.json_schema  # noqa: F401 - lets grammars embed schemas with %json
            from guided.grammars import Grammar

            return Grammar(value, start=_start_rule(value), source="guided_grammar")
        if self.kind == "choice":
            from guided.grammars import Regex

            return Regex("|".join(_literal_regex(c) for c in value))
        raise ValueError(f"unknown constraint kind {self.kind!r}")


def _schema_spec(schema: Any, param: str, whitespace: str) -> ConstraintSpec:
    if not isinstance(schema, (dict, bool)):
        raise APIError(400, f"{param} must be a JSON Schema object, not {type(schema).__name__}", param=param)
    return ConstraintSpec("json_schema", _canonical({"schema": schema, "whitespace": whitespace}))


def _canonical(value: Any) -> str:
    # Keys keep their order: a schema's ``properties`` order is the order the output writes them.
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _start_rule(lark_text: str) -> str:
    """``start`` if the grammar defines it, else its first rule (as vLLM and llguidance accept)."""
    if re.search(r"(?m)^\s*[?!]?start\s*(\.\s*-?\d+\s*)?:", lark_text):
        return "start"
    first = re.search(r"(?m)^\s*[?!]?([a-z_][a-z_0-9]*)\s*(\.\s*-?\d+\s*)?:", lark_text)
    return first.group(1) if first else "start"


def _literal_regex(text: str) -> str:
    """A regex matching exactly ``text``: every character outside ``[A-Za-z0-9 _]`` escaped."""
    out = []
    for ch in text:
        if ch.isascii() and (ch.isalnum() or ch in " _"):
            out.append(ch)
        elif ord(ch) < 0x80:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    return "(?:" + "".join(out) + ")" if out else "(?:)"


# ---------------------------------------------------------------------------------------------
# The cache of compiled constraints
# ---------------------------------------------------------------------------------------------
class ConstraintCache:
    """LRU of built constraints keyed by content hash; compiled tables live in the constraint.

    Errors are cached too (the same bad schema is rejected at once the second time).

        >>> cache = ConstraintCache(capacity=64)
        >>> state = cache.start(spec, vocab)     # compiles once per distinct spec
    """

    def __init__(self, capacity: int = 64):
        self.capacity = capacity
        self._items: OrderedDict[str, Constraint | ConstraintError] = OrderedDict()
        self._building: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._items)

    def get(self, spec: ConstraintSpec, vocab) -> Constraint:
        """The constraint for ``spec``, compiled for ``vocab``; raises its ``ConstraintError``."""
        key = spec.key
        with self._lock:
            item = self._items.get(key)
            if item is not None:
                self._items.move_to_end(key)
                self.hits += 1
            else:
                gate = self._building.setdefault(key, threading.Lock())
        if item is None:
            with gate:  # two requests with one new schema compile it once
                with self._lock:
                    item = self._items.get(key)
                if item is None:
                    self.misses += 1
                    try:
                        item = spec.build()
                        item.start(vocab)  # compile now, not in the decoding loop
                    except ConstraintError as exc:
                        item = exc
                    finally:
                        with self._lock:
                            self._building.pop(key, None)
                    with self._lock:
                        self._items[key] = item
                        self._items.move_to_end(key)
                        while len(self._items) > self.capacity:
                            self._items.popitem(last=False)
        if isinstance(item, ConstraintError):
            raise item
        return item


# ---------------------------------------------------------------------------------------------
# Responses
# ---------------------------------------------------------------------------------------------
def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def now() -> int:
    return int(time.time())


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def api_finish_reason(reason: str) -> str:
    """Engine reasons to OpenAI's: ``stop`` / ``length`` (cancelled and deadline read as length)."""
    return "stop" if reason == "stop" else "length"
