"""The OpenAI API surface of ``guided serve`` beyond plain completions, driven by the real
``openai`` client: tool calling (``tools``/``tool_choice``/``parallel_tool_calls``/``strict``,
streamed tool-call deltas, ``chat.completions.parse`` with ``pydantic_function_tool`` and
``response_format=Model``), logprobs, the other request fields, the Responses API, and
operations (API key, limits, ``/metrics``, a client that goes away). One server process for the
module (started with an API key); answers are checked for validity (the embedded model is
retrained elsewhere: never exact texts). Continuous batching is checked in-process."""

from __future__ import annotations

import json
import math
import re
import time
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


KEY = "sk-test-key"


@pytest.fixture(scope="module")
def server():
    with running_server(["--max-batch", "8", "--cache-size", "16", "--api-key", KEY, "--max-choices", "4",
                         "--max-constraint-kb", "8"]) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0, timeout=240)


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


# ---------------------------------------------------------------------------------------------
# Logprobs and the other request fields
# ---------------------------------------------------------------------------------------------
def test_logprobs_raw_and_constrained(client, server):
    def chat(mode):
        return lambda: client.chat.completions.create(
            model=server.model, messages=[{"role": "user", "content": "a word"}], max_tokens=6, temperature=0,
            logprobs=True, top_logprobs=3, extra_body={"guided_regex": "[a-z]{1,5}", "logprobs_mode": mode})

    raw, constrained = _together(chat("raw"), chat("constrained"))
    raw_lp, con_lp = raw.choices[0].logprobs.content, constrained.choices[0].logprobs.content
    assert raw.choices[0].message.content == constrained.choices[0].message.content  # greedy: the same tokens
    assert "".join(e.token for e in con_lp) == constrained.choices[0].message.content
    for r, c in zip(raw_lp, con_lp, strict=True):
        assert r.token == c.token and r.bytes == list(r.token.encode())
        assert c.logprob >= r.logprob - 1e-4  # renormalised on fewer tokens
        assert len(c.top_logprobs) <= 3 and len(r.top_logprobs) == 3
        assert all(re.fullmatch("[a-z]{0,5}", t.token) for t in c.top_logprobs)  # only allowed tokens (or EOS)
        assert sum(math.exp(t.logprob) for t in c.top_logprobs) <= 1 + 1e-5
        assert c.top_logprobs[0].logprob >= c.logprob - 1e-6  # greedy took the most likely allowed token


def test_completion_logprobs_streamed_and_whole(client, server):
    whole, streamed = _together(
        lambda: client.completions.create(model=server.model, prompt="n = ", max_tokens=4, logprobs=2,
                                          extra_body={"guided_regex": "[0-9]{1,4}"}),
        lambda: list(client.completions.create(model=server.model, prompt="n = ", max_tokens=4, logprobs=2,
                                               stream=True, extra_body={"guided_regex": "[0-9]{1,4}"})),
    )
    lp = whole.choices[0].logprobs
    assert "".join(lp.tokens) == whole.choices[0].text
    assert lp.text_offset == [sum(len(t) for t in lp.tokens[:i]) for i in range(len(lp.tokens))]
    assert all(len(top) <= 2 for top in lp.top_logprobs) and all(x <= 0 for x in lp.token_logprobs)
    tokens = [t for chunk in streamed for t in (chunk.choices[0].logprobs.tokens if chunk.choices[0].logprobs else [])]
    assert "".join(tokens) == "".join(chunk.choices[0].text for chunk in streamed)


def _token_id(text: str) -> int:
    from model_subprocess import TEST_MODEL
    from transformers import AutoTokenizer

    from guided.models import default_model_path

    tok = AutoTokenizer.from_pretrained(TEST_MODEL or str(default_model_path()))
    [token] = tok.encode(text, add_special_tokens=False)
    return token


def test_logit_bias_and_penalties(client, server):
    a = _token_id("a")
    biased, penalised = _together(
        lambda: client.completions.create(model=server.model, prompt="x: ", max_tokens=5, logit_bias={str(a): 100},
                                          extra_body={"guided_regex": "[ab]{3}"}),
        lambda: client.completions.create(model=server.model, prompt="x: ", max_tokens=5, presence_penalty=2.0,
                                          frequency_penalty=1.5, extra_body={"guided_regex": "[ab]{3}"}),
    )
    assert biased.choices[0].text == "aaa"  # +100 on the token "a": nothing else has mass
    assert re.fullmatch("[ab]{3}", penalised.choices[0].text)


def test_request_fields_openai_refuses_or_bounds_are_400(client, server):
    def status(**kwargs):
        args = {"model": server.model, "prompt": "x", "max_tokens": 2}
        args.update(kwargs)
        with pytest.raises(openai.BadRequestError) as info:
            client.completions.create(**args)
        return info.value.message

    assert "presence_penalty" in status(presence_penalty=3)
    assert "stream_options" in status(stream_options={"include_usage": True})
    assert "choices" in status(n=5)  # --max-choices 4
    assert "larger than" in status(extra_body={"guided_regex": "a" * 9000})  # --max-constraint-kb 8
    assert "logit_bias" in status(logit_bias={"x": 1})
    assert "echo" in status(echo=True)
    assert "best_of" in status(best_of=2)
    assert "tools" in status(extra_body={"tools": []})
    with pytest.raises(openai.BadRequestError, match="top_logprobs"):
        client.chat.completions.create(model=server.model, messages=ASK, max_tokens=2, top_logprobs=2)
    with pytest.raises(openai.BadRequestError, match="reasoning_effort"):
        client.chat.completions.create(model=server.model, messages=ASK, max_tokens=2, reasoning_effort="low")


# ---------------------------------------------------------------------------------------------
# The Responses API
# ---------------------------------------------------------------------------------------------
def test_responses_parse_stream_and_tools(client, server):
    def streamed():
        with client.responses.stream(model=server.model, input="ok?", text_format=Verdict, max_output_tokens=60) as s:
            kinds = [event.type for event in s]
            return kinds, s.get_final_response()

    parsed, (kinds, final), called = _together(
        lambda: client.responses.parse(model=server.model, input="ok?", text_format=Verdict, max_output_tokens=60,
                                       instructions="Answer in JSON."),
        streamed,
        lambda: client.responses.create(model=server.model, max_output_tokens=90, tool_choice="required",
                                        parallel_tool_calls=False, input=[{"role": "user", "content": "weather?"}],
                                        tools=[{"type": "function", "name": "get_weather", "parameters": WEATHER}]),
    )
    assert parsed.status == "completed" and isinstance(parsed.output_parsed, Verdict)
    assert final.status == "completed" and isinstance(final.output_parsed, Verdict)
    assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] == "response.completed"
    assert "response.output_text.delta" in kinds and "response.output_item.done" in kinds
    [call] = [item for item in called.output if item.type == "function_call"]
    assert called.status == "completed" and call.name == "get_weather" and call.call_id.startswith("call_")
    jsonschema.validate(json.loads(call.arguments), WEATHER)
    with pytest.raises(openai.BadRequestError, match="previous_response_id"):
        client.responses.create(model=server.model, input="x", previous_response_id="resp_1")


# ---------------------------------------------------------------------------------------------
# Operations
# ---------------------------------------------------------------------------------------------
def _metrics(server) -> dict[str, float]:
    import httpx

    text = httpx.get(server.url + "/metrics", timeout=30).text
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values


def test_api_key_and_metrics(server):
    import httpx

    r = httpx.post(server.url + "/v1/completions", json={"model": server.model, "prompt": "x"}, timeout=30)
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    r = httpx.get(server.url + "/v1/models", headers={"authorization": "Bearer wrong"}, timeout=30)
    assert r.status_code == 401 and set(r.json()["error"]) == {"message", "type", "param", "code"}
    assert httpx.get(server.url + "/health", timeout=30).status_code == 200  # probes need no key
    r = httpx.get(server.url + "/metrics", timeout=30)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    metrics = _metrics(server)
    for name in ("guided_generated_tokens_total", "guided_queue_depth", "guided_running_rows",
                 "guided_constraint_cache_hits_total", "guided_mask_seconds_total", "guided_forward_seconds_total"):
        assert name in metrics and metrics[name] >= 0
    assert metrics['guided_requests_total{endpoint="/v1/completions",status="401"}'] >= 1


def test_a_client_that_goes_away_frees_its_row(client, server):
    """A streamed request is dropped after its first chunk: its row leaves the batch (counted as
    cancelled) long before its budget of 400 tokens."""
    before = _metrics(server)
    stream = client.completions.create(model=server.model, prompt="x", max_tokens=400, stream=True,
                                       extra_body={"guided_regex": "[a-z]{400}"})
    next(iter(stream))
    stream.close()
    deadline = time.monotonic() + 120  # a bound on waiting, not a timing assertion
    while time.monotonic() < deadline:
        now = _metrics(server)
        if now["guided_rows_cancelled_total"] > before["guided_rows_cancelled_total"]:
            break
        time.sleep(0.2)
    assert now["guided_rows_cancelled_total"] == before["guided_rows_cancelled_total"] + 1
    assert now["guided_generated_tokens_total"] - before["guided_generated_tokens_total"] < 400
    # and the server goes on answering
    out = client.completions.create(model=server.model, prompt="n = ", max_tokens=3, extra_body={"guided_regex": "[0-9]"})
    assert re.fullmatch("[0-9]", out.choices[0].text)


# ---------------------------------------------------------------------------------------------
# Continuous batching, in-process
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def engine():
    from model_subprocess import TEST_MODEL

    from guided.serve.engine import Engine, load_model

    model, tokenizer, name = load_model(TEST_MODEL, device="cpu")
    return Engine(model, tokenizer, name=name)


def test_rows_join_the_running_batch_and_leave_when_done(engine):
    from guided.grammars import Regex
    from guided.samplers import Sampling
    from guided.serve.engine import DecodeLoop

    done: dict[str, object] = {}
    loop = DecodeLoop(engine, max_batch=8)

    def row(name, pattern, max_tokens, **kw):
        return engine.request(f"{name}: ", Regex(pattern), max_tokens=max_tokens,
                              on_done=lambda result: done.__setitem__(name, (result, loop.stats["steps"])), **kw)

    loop.submit([row("long", "[a-z]{40}", 40)])
    for _ in range(3):
        loop.run_once()
    assert loop.running == 1 and loop.stats["steps"] == 3
    # three more arrive while "long" decodes: different samplers, temperatures, top-p, a seed
    loop.submit([row("greedy", "[0-9]{2}", 4, sampling=Sampling(temperature=0.0), sampler="masking"),
                 row("hot", "(yes|no)", 4, sampling=Sampling(temperature=1.5, top_p=0.9)),
                 row("seeded", "[A-Z]{3}", 5, seed=7)])
    loop.run_once()  # they join at the next step
    assert loop.running == 4 and loop.stats["largest_batch"] == 4
    while len(done) < 3:
        loop.run_once()
        assert loop.running == 4 - len(done)  # a finished row leaves at once
    assert "long" not in done and loop.running == 1
    while loop.busy:
        loop.run_once()
    assert re.fullmatch("[0-9]{2}", done["greedy"][0].text) and done["hot"][0].text in ("yes", "no")
    assert re.fullmatch("[A-Z]{3}", done["seeded"][0].text)
    assert done["long"][0].finish_reason in ("stop", "length") and re.fullmatch("[a-z]{1,40}", done["long"][0].text)
    assert max(done[k][1] for k in ("greedy", "hot", "seeded")) < done["long"][1]


def test_compile_time_limit_is_a_400_before_queueing(engine):
    from fastapi.testclient import TestClient

    from guided.serve.http import ServerConfig, create_app

    app = create_app(engine, ServerConfig(max_compile_seconds=1e-9))
    with TestClient(app) as http:
        r = http.post("/v1/completions", json={"model": engine.name, "prompt": "x", "max_tokens": 2,
                                               "guided_json": {"type": "object", "properties": {"q": {"type": "integer"}}}})
        assert r.status_code == 400 and r.json()["error"]["code"] == "compile_timeout"
        assert app.state.batcher.stats["rows"] == 0  # nothing was queued


# ---------------------------------------------------------------------------------------------
# Reading calls out of the output, whole or in pieces
# ---------------------------------------------------------------------------------------------
def test_tool_call_reader_is_the_same_whole_or_streamed():
    from hypothesis import assume, given, settings
    from hypothesis import strategies as st

    from guided.serve.tools import TRIGGER, ToolCallReader, call_begin

    pieces = st.sampled_from(["Hi ", "<to", "ol_call", ">", "x", "\n", "}</tool_call>"])
    calls = st.builds(lambda name, value: call_begin(name) + json.dumps(value) + "}</tool_call>",
                      st.sampled_from(["f", "get_weather"]),
                      st.dictionaries(st.text(max_size=3), st.text(max_size=12) | st.integers(), max_size=2))

    def read(text: str, cuts: list[int]) -> tuple:
        reader = ToolCallReader()
        events, last = [], 0
        for cut in sorted(set(cuts)) + [len(text)]:
            events += reader.feed(text[last:cut])
            last = cut
        events += reader.finish()
        content = "".join(e[1] for e in events if e[0] == "content")
        arguments = ["".join(e[2] for e in events if e[0] == "arguments" and e[1] == k) for k in range(len(reader.calls))]
        return content, [(c["function"]["name"], c["function"]["arguments"]) for c in reader.calls], arguments

    @settings(max_examples=150, deadline=None)
    @given(st.lists(pieces | calls, max_size=6), st.lists(st.integers(0, 400), max_size=8))
    def check(parts, cuts):
        # what the constraint allows: free text never contains the trigger; calls are whole
        runs = "".join(p if not p.startswith(TRIGGER) else "\0" for p in parts).split("\0")
        assume(all(TRIGGER not in run for run in runs))
        text = "".join(parts)
        whole = read(text, [])
        assert read(text, [c for c in cuts if c <= len(text)]) == whole
        content, found, arguments = whole
        assert [a for _, a in found] == arguments
        for _, a in found:
            json.loads(a)

    check()
