"""OpenAI's Responses API (``POST /v1/responses``) on top of the chat pipeline: the request
becomes a chat request, the output becomes ``output`` items (a message with ``output_text``,
and ``function_call`` items), streamed as the Responses API's semantic events.

    >>> client.responses.parse(model=m, input="A person", text_format=Person).output_parsed
    >>> with client.responses.stream(model=m, input="A person", text_format=Person) as s: ...

Mapping: ``input`` (a string, or message / ``function_call`` / ``function_call_output`` items)
and ``instructions`` become messages; ``text.format`` (``text``, ``json_object``,
``json_schema``) becomes ``response_format``; flat function ``tools`` (``strict`` defaults to
true here, as in the Responses API) and ``tool_choice`` become chat tools;
``max_output_tokens``, ``temperature``, ``top_p``, ``parallel_tool_calls``, ``user``,
``metadata`` carry over.  Refused with 400: ``previous_response_id`` and ``store: true`` (this
server keeps no responses), ``background``, ``include``, reasoning, ``conversation``, and
non-function tools.
"""

from __future__ import annotations

import copy
import json
import uuid
from typing import Any

from guided.serve.protocol import APIError, now

__all__ = ["chat_request_of", "ResponseShaper"]

_REFUSED = ("previous_response_id", "background", "include", "conversation", "prompt", "stream_options",
            "top_logprobs", "max_tool_calls")


def _ident(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def chat_request_of(body: dict) -> dict:
    """The chat-completions request equivalent to a Responses API request (400s on what this
    server cannot honour)."""
    if not isinstance(body, dict):
        raise APIError(400, "request body must be a JSON object")
    for name in _REFUSED:
        if body.get(name) not in (None, [], {}):
            raise APIError(400, f"'{name}' is not supported by this server", param=name)
    if body.get("store"):
        raise APIError(400, "'store': true is not supported (this server keeps no responses); send store=false",
                       param="store")
    reasoning = body.get("reasoning")
    if reasoning is not None and not (isinstance(reasoning, dict) and all(v is None for v in reasoning.values())):
        raise APIError(400, "'reasoning' is not supported by this model", param="reasoning")
    chat: dict[str, Any] = {"model": body.get("model"), "messages": _messages(body)}
    for ours, theirs in (("max_tokens", "max_output_tokens"), ("temperature", "temperature"), ("top_p", "top_p"),
                         ("stream", "stream"), ("user", "user"), ("parallel_tool_calls", "parallel_tool_calls")):
        if body.get(theirs) is not None:
            chat[ours] = body[theirs]
    text = body.get("text")
    if text is not None:
        if not isinstance(text, dict):
            raise APIError(400, "'text' must be an object", param="text")
        fmt = text.get("format")
        if fmt is not None:
            chat["response_format"] = _response_format(fmt)
        if text.get("verbosity") not in (None, "medium"):
            raise APIError(400, "'text.verbosity' is not supported by this model", param="text.verbosity")
    tools = body.get("tools")
    if tools is not None:
        chat["tools"] = [_tool(t, i) for i, t in enumerate(tools)] if isinstance(tools, list) else tools
    choice = body.get("tool_choice")
    if choice is not None:
        if isinstance(choice, dict) and choice.get("type") == "function":
            chat["tool_choice"] = {"type": "function", "function": {"name": choice.get("name")}}
        else:
            chat["tool_choice"] = choice
    # guided's extras pass through (sampler, guided_whitespace, seed, ...)
    for key in ("sampler", "particles", "guided_whitespace", "seed", "top_k", "logprobs_mode"):
        if key in body:
            chat[key] = body[key]
    return chat


def _messages(body: dict) -> list[dict]:
    messages: list[dict] = []
    if body.get("instructions") is not None:
        messages.append({"role": "system", "content": body["instructions"]})
    items = body.get("input")
    if isinstance(items, str):
        return messages + [{"role": "user", "content": items}]
    if not isinstance(items, list) or not items:
        raise APIError(400, "'input' must be a string or a non-empty array of items", param="input")
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise APIError(400, f"input[{i}] must be an object", param=f"input[{i}]")
        kind = item.get("type", "message")
        if kind == "message":
            content = item.get("content")
            if isinstance(content, list):
                content = [{"type": "text", "text": p.get("text", "")} if isinstance(p, dict)
                           and p.get("type") in ("input_text", "output_text", "text") else p for p in content]
            messages.append({"role": item.get("role"), "content": content})
        elif kind == "function_call":
            call = {"id": item.get("call_id"), "type": "function",
                    "function": {"name": item.get("name"), "arguments": item.get("arguments", "{}")}}
            if messages and messages[-1]["role"] == "assistant" and messages[-1].get("tool_calls") is not None:
                messages[-1]["tool_calls"].append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            output = item.get("output")
            messages.append({"role": "tool", "tool_call_id": item.get("call_id"),
                             "content": output if isinstance(output, str) else json.dumps(output)})
        else:
            raise APIError(400, f"input item type {kind!r} is not supported (message, function_call, "
                           "function_call_output)", param=f"input[{i}]")
    return messages


def _response_format(fmt: Any) -> dict:
    if not isinstance(fmt, dict):
        raise APIError(400, "'text.format' must be an object", param="text.format")
    kind = fmt.get("type")
    if kind in ("text", "json_object"):
        return {"type": kind}
    if kind == "json_schema":
        if not isinstance(fmt.get("schema"), dict):
            raise APIError(400, "'text.format.schema' must be a JSON Schema object", param="text.format.schema")
        return {"type": "json_schema", "json_schema": {"name": fmt.get("name", "output"), "schema": fmt["schema"],
                                                       "strict": fmt.get("strict")}}
    raise APIError(400, f"text.format type {kind!r} is not supported (text, json_object, json_schema)",
                   param="text.format")


def _tool(tool: Any, i: int) -> dict:
    if not isinstance(tool, dict) or tool.get("type") != "function":
        kind = tool.get("type") if isinstance(tool, dict) else type(tool).__name__
        raise APIError(400, f"tools[{i}]: only function tools are supported, not {kind!r}", param=f"tools[{i}]")
    function = {k: tool[k] for k in ("name", "description", "parameters") if k in tool}
    function["strict"] = tool.get("strict", True)  # the Responses API's default
    return {"type": "function", "function": function}


# ---------------------------------------------------------------------------------------------
# The response object and its stream of events
# ---------------------------------------------------------------------------------------------
class ResponseShaper:
    """Builds one response's ``output`` items from :class:`~guided.serve.tools.ToolCallReader`
    events, and the stream events for them.

        >>> shaper = ResponseShaper(body, model)
        >>> events = shaper.start() + shaper.on(reader.feed(text)) + shaper.finish(result, usage)
    """

    def __init__(self, body: dict, model: str):
        self.body = body
        self.model = model
        self.id = _ident("resp")
        self.created = now()
        self.output: list[dict] = []
        self.open: int | None = None  # index of the item being written
        self.sequence = 0
        self.calls: dict[int, int] = {}  # reader call index -> output index

    def response(self, status: str, usage: dict | None = None, incomplete: str | None = None) -> dict:
        body = self.body
        tools = body.get("tools") or []
        return {
            "id": self.id, "object": "response", "created_at": self.created, "status": status,
            "error": None, "incomplete_details": {"reason": incomplete} if incomplete else None,
            "instructions": body.get("instructions"), "max_output_tokens": body.get("max_output_tokens"),
            "model": self.model, "output": copy.deepcopy(self.output),
            "parallel_tool_calls": body.get("parallel_tool_calls", True), "previous_response_id": None,
            "reasoning": None, "store": False, "temperature": body.get("temperature", 1.0),
            "text": body.get("text") or {"format": {"type": "text"}},
            "tool_choice": body.get("tool_choice", "auto"), "tools": tools, "top_p": body.get("top_p", 1.0),
            "truncation": body.get("truncation") or "disabled", "usage": usage, "user": body.get("user"),
            "metadata": body.get("metadata") or {},
        }

    def _event(self, kind: str, **fields) -> dict:
        """An event; its items are copies (the items here keep growing)."""
        self.sequence += 1
        return {"type": kind, "sequence_number": self.sequence - 1, **copy.deepcopy(fields)}

    def start(self) -> list[dict]:
        return [self._event("response.created", response=self.response("in_progress")),
                self._event("response.in_progress", response=self.response("in_progress"))]

    def on(self, reader_events: list[tuple]) -> list[dict]:
        out: list[dict] = []
        for event in reader_events:
            if event[0] == "content":
                if self.open is None or self.output[self.open]["type"] != "message":
                    out += self._close()
                    item = {"type": "message", "id": _ident("msg"), "status": "in_progress", "role": "assistant",
                            "content": []}
                    self.output.append(item)
                    self.open = len(self.output) - 1
                    out.append(self._event("response.output_item.added", output_index=self.open, item=item))
                    part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
                    item["content"].append(part)
                    out.append(self._event("response.content_part.added", item_id=item["id"], output_index=self.open,
                                           content_index=0, part=part))
                item = self.output[self.open]
                item["content"][0]["text"] += event[1]
                out.append(self._event("response.output_text.delta", item_id=item["id"], output_index=self.open,
                                       content_index=0, delta=event[1], logprobs=[]))
            elif event[0] == "call":
                out += self._close()
                _, k, call_id, name = event
                item = {"type": "function_call", "id": _ident("fc"), "call_id": call_id, "name": name,
                        "arguments": "", "status": "in_progress"}
                self.output.append(item)
                self.open = self.calls[k] = len(self.output) - 1
                out.append(self._event("response.output_item.added", output_index=self.open, item=item))
            else:
                index = self.calls[event[1]]
                item = self.output[index]
                item["arguments"] += event[2]
                out.append(self._event("response.function_call_arguments.delta", item_id=item["id"],
                                       output_index=index, delta=event[2]))
        return out

    def _close(self) -> list[dict]:
        if self.open is None:
            return []
        index, self.open = self.open, None
        item = self.output[index]
        item["status"] = "completed"
        out = []
        if item["type"] == "message":
            part = item["content"][0]
            out.append(self._event("response.output_text.done", item_id=item["id"], output_index=index,
                                   content_index=0, text=part["text"], logprobs=[]))
            out.append(self._event("response.content_part.done", item_id=item["id"], output_index=index,
                                   content_index=0, part=part))
        else:
            out.append(self._event("response.function_call_arguments.done", item_id=item["id"], output_index=index,
                                   arguments=item["arguments"]))
        out.append(self._event("response.output_item.done", output_index=index, item=item))
        return out

    def finish(self, engine_reason: str, usage: dict) -> list[dict]:
        out = self._close()
        if engine_reason == "stop":
            out.append(self._event("response.completed", response=self.response("completed", usage)))
        else:
            out.append(self._event("response.incomplete",
                                   response=self.response("incomplete", usage, incomplete="max_output_tokens")))
        return out


def responses_usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"input_tokens": prompt_tokens, "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": completion_tokens, "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": prompt_tokens + completion_tokens}
