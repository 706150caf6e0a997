"""The OpenAI API surface of ``guided serve`` beyond plain completions, driven by the real
``openai`` client: tool calling (``tools``/``tool_choice``/``parallel_tool_calls``/``strict``,
streamed tool-call deltas, ``chat.completions.parse`` with ``pydantic_function_tool`` and
``response_format=Model``). One server process for the module; answers are checked for validity
(the embedded model is retrained elsewhere: never exact texts)."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from typing import Literal

import pytest

openai = pytest.importorskip("openai")
jsonschema = pytest.importorskip("jsonschema")
pydantic = pytest.importorskip("pydantic")

from serve_process import running_server  # noqa: E402

WEATHER = {"type": "object", "properties": {"city": {"enum": ["Paris", "Oslo"]}}, "required": ["city"],
           "additionalProperties": False}
COUNT = {"type": "object", "properties": {"n": {"type": "integer", "minimum": 0, "maximum": 9}}, "required": ["n"],
         "additionalProperties": False}
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
                                      "parameters": WEATHER, "strict": True}},
    {"type": "function", "function": {"name": "count", "parameters": COUNT}},
]
SCHEMAS = {"get_weather": WEATHER, "count": COUNT}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


class Weather(pydantic.BaseModel):
    city: Literal["Paris", "Oslo"]


class Verdict(pydantic.BaseModel):
    ok: bool


@pytest.fixture(scope="module")
def server():
    with running_server(["--max-batch", "8", "--cache-size", "16"]) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=240)


def _check_calls(calls, allowed=SCHEMAS):
    assert calls, "no tool calls"
    ids = set()
    for call in calls:
        assert call.type == "function" and call.id.startswith("call_")
        ids.add(call.id)
        jsonschema.validate(json.loads(call.function.arguments), allowed[call.function.name])
    assert len(ids) == len(calls)


def _together(*calls):
    """Run requests at once (the server decodes them in one batch: fewer forward passes)."""
    with ThreadPoolExecutor(len(calls)) as pool:
        return [f.result() for f in [pool.submit(c) for c in calls]]


# ---------------------------------------------------------------------------------------------
# tool_choice
# ---------------------------------------------------------------------------------------------
def test_tool_choice_modes(client, server):
    def chat(**kwargs):
        return lambda: client.chat.completions.create(model=server.model, messages=ASK, tools=TOOLS, **kwargs)

    history = ASK + [
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    ]
    required, named, auto, none, parallel = _together(
        chat(tool_choice="required", parallel_tool_calls=False, n=2, max_tokens=90),
        chat(tool_choice={"type": "function", "function": {"name": "count"}}, max_tokens=90),
        chat(max_tokens=12, n=2),
        chat(tool_choice="none", max_tokens=4),
        lambda: client.chat.completions.create(model=server.model, messages=history, tools=TOOLS,
                                               tool_choice="required", max_tokens=90),
    )
    for choice in required.choices:  # one call (parallel_tool_calls=false), nothing else
        assert choice.finish_reason == "tool_calls" and choice.message.content is None
        assert len(choice.message.tool_calls) == 1
        _check_calls(choice.message.tool_calls)
    choice = named.choices[0]
    assert choice.finish_reason == "stop"  # OpenAI's answer when the call was forced by name
    [call] = choice.message.tool_calls
    assert call.function.name == "count"
    _check_calls([call])
    for choice in auto.choices:  # text, or text and calls
        if choice.finish_reason == "tool_calls":
            _check_calls(choice.message.tool_calls)
        elif not choice.message.tool_calls:
            assert "<tool_call>" not in (choice.message.content or "")
    assert not none.choices[0].message.tool_calls
    # parallel calls after a history with a call and its result: as many as fit in the budget
    choice = parallel.choices[0]
    calls = choice.message.tool_calls
    assert calls and choice.finish_reason in ("tool_calls", "length")
    for call in calls if choice.finish_reason == "tool_calls" else calls[:-1]:  # the budget may cut the last
        jsonschema.validate(json.loads(call.function.arguments), SCHEMAS[call.function.name])


# ---------------------------------------------------------------------------------------------
# Streaming tool calls; the openai client's parsing helpers
# ---------------------------------------------------------------------------------------------
def _raw_stream(client, server) -> tuple[dict, list]:
    """Tool-call deltas as OpenAI streams them: the first names the call (id, type, name), the
    rest grow its arguments; no content."""
    stream = client.chat.completions.create(model=server.model, messages=ASK, tools=TOOLS, tool_choice="required",
                                            parallel_tool_calls=False, max_tokens=90, stream=True)
    calls: dict[int, dict] = {}
    finishes = []
    for chunk in stream:
        choice = chunk.choices[0]
        if choice.finish_reason:
            finishes.append(choice.finish_reason)
        for delta in choice.delta.tool_calls or ():
            if delta.id is not None:
                assert delta.index not in calls and delta.type == "function" and delta.function.name
                calls[delta.index] = {"name": delta.function.name, "arguments": delta.function.arguments or ""}
            else:
                assert delta.function.name is None
                calls[delta.index]["arguments"] += delta.function.arguments
        assert not choice.delta.content
    return calls, finishes


def test_streamed_tool_calls_and_the_parse_helpers(client, server):
    weather_tool = openai.pydantic_function_tool(Weather)

    def streamed():
        with client.chat.completions.stream(model=server.model, messages=ASK, max_tokens=90, tools=[weather_tool],
                                            tool_choice={"type": "function", "function": {"name": "Weather"}}) as stream:
            for _ in stream:
                pass
            return stream.get_final_completion()

    (calls, finishes), tool, fmt, either, final = _together(
        lambda: _raw_stream(client, server),
        lambda: client.chat.completions.parse(model=server.model, messages=ASK, max_tokens=90,
                                              tools=[weather_tool], tool_choice="required", parallel_tool_calls=False),
        lambda: client.chat.completions.parse(model=server.model, messages=[{"role": "user", "content": "ok?"}],
                                              response_format=Verdict, max_tokens=30),
        # tool_choice "auto" with a response format: that JSON, or calls
        lambda: client.chat.completions.parse(model=server.model, messages=ASK, response_format=Verdict, max_tokens=90,
                                              tools=[weather_tool], parallel_tool_calls=False),
        streamed,
    )
    assert finishes == ["tool_calls"] and list(calls) == [0]
    jsonschema.validate(json.loads(calls[0]["arguments"]), SCHEMAS[calls[0]["name"]])
    assert isinstance(tool.choices[0].message.tool_calls[0].function.parsed_arguments, Weather)
    assert isinstance(fmt.choices[0].message.parsed, Verdict)
    message = either.choices[0].message
    if message.tool_calls:
        assert isinstance(message.tool_calls[0].function.parsed_arguments, Weather)
    else:
        assert isinstance(message.parsed, Verdict)
    assert isinstance(final.choices[0].message.tool_calls[0].function.parsed_arguments, Weather)


# ---------------------------------------------------------------------------------------------
# Refusals, as OpenAI refuses
# ---------------------------------------------------------------------------------------------
def test_tool_requests_openai_refuses_are_400(client, server):
    def status(**kwargs):
        args = {"model": server.model, "messages": ASK, "max_tokens": 4}
        args.update(kwargs)
        with pytest.raises(openai.BadRequestError) as info:
            client.chat.completions.create(**args)
        return info.value

    assert "tool_choice" in status(tool_choice="required").message  # no tools
    assert "not in 'tools'" in status(tools=TOOLS, tool_choice={"type": "function", "function": {"name": "nope"}}).message
    assert "additionalProperties" in status(tools=[{"type": "function", "function": {
        "name": "loose", "strict": True, "parameters": {"type": "object", "properties": {"a": {"type": "string"}}}}}]).message
    assert "name" in status(tools=[{"type": "function", "function": {"name": "bad name!"}}]).message
    assert "unique" in status(tools=TOOLS + TOOLS[:1]).message
    assert "tool_call_id" in status(messages=ASK + [{"role": "tool", "content": "x"}]).message
    assert "tool_choice" in status(tools=TOOLS, tool_choice="sometimes").message
    assert "functions" in status(functions=[{"name": "f"}]).message
