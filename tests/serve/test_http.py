"""``guided serve`` driven the way its users drive it: the ``openai`` client against a server
process on loopback. Every constrained answer is validated (regex, JSON Schema, grammar, choice).

Also: the wire-format pieces (which constraint a request selects, the compiled-constraint
cache) and the decoding engine's per-row behaviour (budgets, stop strings, streaming,
cancellation), in-process.
"""

from __future__ import annotations

import json
import re
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

openai = pytest.importorskip("openai")
jsonschema = pytest.importorskip("jsonschema")

from model_subprocess import TEST_MODEL  # noqa: E402
from serve_process import health as _health  # noqa: E402
from serve_process import running_server  # noqa: E402

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "pattern": "^[A-Za-z ]{1,6}$"},  # ASCII: few tokens
        "age": {"type": "integer", "minimum": 0, "maximum": 99},
    },
    "required": ["name", "age"],
    "additionalProperties": False,
}
FLAG = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"], "additionalProperties": False}
ARITHMETIC = 'start: expr\nexpr: NUMBER | expr "+" NUMBER\nNUMBER: /[0-9]{1,3}/\n'


@pytest.fixture(scope="module")
def server():
    with running_server(["--max-batch", "4", "--max-body-kb", "64", "--cache-size", "8"]) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=240)




# ---------------------------------------------------------------------------------------------
# Constrained answers validate
# ---------------------------------------------------------------------------------------------
def test_models_lists_the_served_model(client, server):
    ids = [m.id for m in client.models.list().data]
    assert ids == [server.model]
    assert client.models.retrieve(server.model).id == server.model


def test_completion_with_guided_regex_matches(client, server):
    out = client.completions.create(model=server.model, prompt="The year was ", max_tokens=8, seed=1,
                                    extra_body={"guided_regex": "(19|20)[0-9]{2}"})
    choice = out.choices[0]
    assert re.fullmatch(r"(19|20)[0-9]{2}", choice.text), choice.text
    assert choice.finish_reason == "stop"
    assert out.usage.completion_tokens >= 1 and out.usage.prompt_tokens >= 1


def test_chat_with_json_schema_response_format_validates(client, server):
    out = client.chat.completions.create(
        model=server.model, max_tokens=40, seed=2,
        messages=[{"role": "user", "content": "Give me a person as JSON."}],
        response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON, "strict": True}},
    )
    choice = out.choices[0]
    assert choice.finish_reason == "stop", choice.message.content
    jsonschema.validate(json.loads(choice.message.content), PERSON)


def test_json_object_response_format_is_an_object(client, server):
    out = client.chat.completions.create(
        model=server.model, max_tokens=24, seed=3, temperature=0.7,
        messages=[{"role": "user", "content": "JSON please"}], response_format={"type": "json_object"},
    )
    choice = out.choices[0]
    if choice.finish_reason == "stop":
        assert isinstance(json.loads(choice.message.content), dict)
    else:  # the budget ran out inside the object (a model that rambles in a string): an object so far
        assert choice.finish_reason == "length" and choice.message.content.startswith("{")


def test_guided_choice_with_several_choices(client, server):
    options = ["yes", "no", "maybe (a.k.a)*"]
    out = client.completions.create(model=server.model, prompt="Answer: ", max_tokens=16, n=3,
                                    extra_body={"guided_choice": options})
    assert len(out.choices) == 3
    assert [c.index for c in out.choices] == [0, 1, 2]
    for c in out.choices:
        assert c.text in options and c.finish_reason == "stop"


def test_guided_grammar_output_parses(client, server):
    import lark

    out = client.completions.create(model=server.model, prompt="1 + 2 + ", max_tokens=12, seed=4,
                                    extra_body={"guided_grammar": ARITHMETIC, "sampler": "masking"})
    text = out.choices[0].text
    if out.choices[0].finish_reason == "stop":
        lark.Lark(ARITHMETIC).parse(text)
    else:  # the budget ran out: still a prefix of the language
        assert re.fullmatch(r"[0-9]{1,3}(\+[0-9]{1,3})*\+?", text), text


def test_smc_sampler_extra(client, server):
    out = client.completions.create(model=server.model, prompt="x = ", max_tokens=6, seed=5,
                                    extra_body={"guided_regex": "[a-z]{1,3}", "sampler": "smc", "particles": 3})
    assert re.fullmatch("[a-z]{1,3}", out.choices[0].text), out.choices[0].text


def test_streaming_completion_concatenates_to_a_match(client, server):
    stream = client.completions.create(model=server.model, prompt="id: ", max_tokens=12, stream=True, seed=6,
                                       extra_body={"guided_regex": "[a-f0-9]{4,8}"})
    chunks = list(stream)
    text = "".join(c.choices[0].text for c in chunks)
    assert re.fullmatch("[a-f0-9]{4,8}", text), text
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.choices[0].finish_reason is None for c in chunks[:-1])


def test_streaming_chat_json_schema_validates(client, server):
    stream = client.chat.completions.create(
        model=server.model, max_tokens=40, stream=True, seed=7, stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "a person"}],
        extra_body={"guided_json": PERSON},
    )
    chunks = list(stream)
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    jsonschema.validate(json.loads(content), PERSON)
    assert chunks[0].choices[0].delta.role == "assistant"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens >= 1


def test_concurrent_clients_all_validate_and_none_is_lost(client, server):
    jobs = []
    for i in range(8):
        if i % 4 == 0:
            jobs.append(("regex", dict(extra_body={"guided_regex": "[0-9]{2,4}"})))
        elif i % 4 == 1:
            jobs.append(("flag", dict(extra_body={"guided_json": FLAG})))
        elif i % 4 == 2:
            jobs.append(("choice", dict(extra_body={"guided_choice": ["red", "green", "blue"]})))
        else:
            jobs.append(("stream", dict(stream=True, extra_body={"guided_regex": "[A-Z]{3}"})))

    def run(job):
        kind, kwargs = job
        # room for the longest flag a bounded-whitespace schema allows (three runs of a line
        # break and 20 spaces, a token each at worst): 16 tokens truncated about 1 in 40 flags
        out = client.completions.create(model=server.model, prompt=f"{kind}: ", max_tokens=96, **kwargs)
        if kind == "stream":
            return kind, "".join(c.choices[0].text for c in out)
        return kind, out.choices[0].text

    with ThreadPoolExecutor(len(jobs)) as pool:
        results = list(pool.map(run, jobs))
    assert len(results) == len(jobs)
    for kind, text in results:
        if kind == "regex":
            assert re.fullmatch("[0-9]{2,4}", text), text
        elif kind == "flag":
            jsonschema.validate(json.loads(text), FLAG)
        elif kind == "choice":
            assert text in ("red", "green", "blue")
        else:
            assert re.fullmatch("[A-Z]{3}", text), text
    health = _health(server)
    assert health["errors"] == 0


# ---------------------------------------------------------------------------------------------
# Bad requests: clear 4xx, and the server keeps serving
# ---------------------------------------------------------------------------------------------
def _status_error(call) -> "openai.APIStatusError":
    with pytest.raises(openai.APIStatusError) as info:
        call()
    return info.value


def test_bad_requests_get_clear_4xx_and_the_server_keeps_serving(client, server):
    import httpx

    model = server.model

    def complete(**kwargs):
        args = {"model": model, "prompt": "x", "max_tokens": 4}
        args.update(kwargs)
        return lambda: client.completions.create(**args)

    err = _status_error(complete(extra_body={"guided_json": {"type": "nonsense"}}))
    assert err.status_code == 400 and "invalid JSON Schema" in err.message
    err = _status_error(complete(extra_body={"guided_json": {"type": "integer", "multipleOf": 7}}))
    assert err.status_code == 400 and "unsupported JSON Schema keyword 'multipleOf'" in err.message
    err = _status_error(complete(extra_body={"guided_regex": "(unclosed"}))
    assert err.status_code == 400 and "regex" in err.message
    err = _status_error(complete(extra_body={"guided_grammar": "start: undefined_rule"}))
    assert err.status_code == 400 and "undefined_rule" in err.message
    err = _status_error(complete(extra_body={"guided_regex": "a", "guided_choice": ["b"]}))
    assert err.status_code == 400 and "one constraint" in err.message
    err = _status_error(complete(model="no-such-model"))
    assert err.status_code == 404 and "no-such-model" in err.message
    err = _status_error(complete(prompt="x" * 70_000))
    assert err.status_code == 413 and "larger than" in err.message
    err = _status_error(complete(max_tokens=10_000_000))
    assert err.status_code == 400
    err = _status_error(complete(extra_body={"echo": True}))
    assert err.status_code == 400 and "echo" in err.message
    response = httpx.post(server.url + "/v1/completions", content=b"{not json", timeout=30,
                          headers={"content-type": "application/json"})
    assert response.status_code == 400 and "not valid JSON" in response.json()["error"]["message"]
    # still serving, and nothing failed inside
    out = client.completions.create(model=model, prompt="n = ", max_tokens=4, extra_body={"guided_regex": "[0-9]"})
    assert re.fullmatch("[0-9]", out.choices[0].text)
    assert server.proc.poll() is None
    assert _health(server)["errors"] == 0


def test_compiled_constraints_are_cached_by_content(client, server):
    schema = {"type": "object", "properties": {"k": {"enum": ["a", "b"]}}, "required": ["k"],
              "additionalProperties": False}
    before = _health(server)["cache"]
    for _ in range(2):
        # same content, different key order: one compilation
        reordered = dict(reversed(list(schema.items())))
        out = client.completions.create(model=server.model, prompt="k: ", max_tokens=12,
                                        extra_body={"guided_json": reordered, "guided_whitespace": "compact"})
        jsonschema.validate(json.loads(out.choices[0].text), schema)
    after = _health(server)["cache"]
    assert after["misses"] == before["misses"] + 1
    assert after["hits"] >= before["hits"] + 1


# ---------------------------------------------------------------------------------------------
# In-process: the wire format and the cache
# ---------------------------------------------------------------------------------------------
def test_constraint_spec_selection():
    from guided.serve.protocol import APIError, ChatCompletionRequest, CompletionRequest, ConstraintSpec

    def spec(**kw):
        return ConstraintSpec.from_request(CompletionRequest(model="m", prompt="p", **kw))

    assert spec() is None
    assert spec(response_format={"type": "text"}) is None
    assert spec(guided_regex="[0-9]+").kind == "regex"
    assert spec(guided_choice=["a"]).kind == "choice"
    assert spec(guided_grammar="start: \"x\"").kind == "grammar"
    assert spec(guided_json='{"type": "integer"}') == spec(guided_json={"type": "integer"})
    assert spec(guided_json={"a": 1, "b": 2}).key != spec(guided_json={"b": 2, "a": 1}).key  # order is output order
    obj = spec(response_format={"type": "json_object"})
    assert json.loads(obj.payload)["schema"] == {"type": "object"}
    chat = ChatCompletionRequest(model="m", messages=[{"role": "user", "content": "x"}],
                                 response_format={"type": "json_schema", "json_schema": {"name": "n", "schema": FLAG}})
    assert json.loads(ConstraintSpec.from_request(chat).payload)["schema"] == FLAG
    for bad in ({"guided_regex": "a", "guided_json": {}}, {"response_format": {"type": "xml"}},
                {"guided_choice": []}, {"guided_json": "{not json"},
                {"response_format": {"type": "json_schema", "json_schema": {"name": "n", "schema": [1, 2]}}}):
        with pytest.raises(APIError) as info:
            spec(**bad)
        assert info.value.status == 400


def test_schema_properties_are_written_in_the_request_order(llama3_vocab):
    from guided.serve.protocol import CompletionRequest, ConstraintSpec

    schema = {"type": "object", "properties": {"b": {"type": "integer"}, "a": {"type": "integer"}},
              "required": ["b", "a"], "additionalProperties": False}
    start = ConstraintSpec.from_request(CompletionRequest(model="m", prompt="p", guided_json=schema)).build().start(llama3_vocab)
    written = start.advance_bytes(b'{"b": 1, "a": 2}')
    assert written is not None and written.is_accepting()
    assert start.advance_bytes(b'{"a"') is None


def test_grammar_start_rule_defaults_to_the_first_rule():
    from guided.serve.protocol import _start_rule

    assert _start_rule("start: a\na: \"x\"") == "start"
    assert _start_rule("?value: a\na: \"x\"") == "value"
    assert _start_rule("// comment\nexpr: NUMBER\n%import common.NUMBER") == "expr"


def test_constraint_cache_is_lru_and_remembers_errors(llama3_vocab):
    from guided.constraint import ConstraintError
    from guided.serve.protocol import ConstraintCache, ConstraintSpec, _canonical

    cache = ConstraintCache(capacity=2)
    a, b, c = (ConstraintSpec("regex", _canonical(p)) for p in ("a+", "b+", "c+"))
    first = cache.get(a, llama3_vocab)
    assert cache.get(a, llama3_vocab) is first
    cache.get(b, llama3_vocab)
    cache.get(c, llama3_vocab)  # evicts a (least recently used)
    assert len(cache) == 2 and cache.get(a, llama3_vocab) is not first
    bad = ConstraintSpec("regex", _canonical("("))
    with pytest.raises(ConstraintError):
        cache.get(bad, llama3_vocab)
    misses = cache.misses
    with pytest.raises(ConstraintError):
        cache.get(bad, llama3_vocab)
    assert cache.misses == misses  # the error was cached


def test_guided_choice_regex_accepts_exactly_the_choices(llama3_vocab):
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from guided.grammars import Regex
    from guided.serve.protocol import _literal_regex

    texts = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=6)

    @settings(max_examples=25, deadline=None)
    @given(st.lists(texts, min_size=1, max_size=3, unique=True), texts)
    def check(choices, other):
        state = Regex("|".join(_literal_regex(c) for c in choices)).start(llama3_vocab)
        for c in choices:
            end = state.advance_bytes(c.encode())
            assert end is not None and end.is_accepting(), c
        end = state.advance_bytes(other.encode())
        assert (end is not None and end.is_accepting()) == (other in choices)

    check()


# ---------------------------------------------------------------------------------------------
# In-process: the engine's rows
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def engine():
    from guided.serve.engine import Engine, load_model

    model, tokenizer, name = load_model(TEST_MODEL, device="cpu")
    return Engine(model, tokenizer, name=name)


def test_engine_rows_keep_their_own_budget_stop_and_stream(engine):
    from guided.grammars import Regex

    streamed: list[str] = []
    rows = [
        engine.request("a: ", Regex("[a-z]{90}"), max_tokens=2),  # budget ends it
        engine.request("b: ", Regex("[0-9]{1,2}"), max_tokens=10, on_text=streamed.append),
        engine.request("c: ", Regex("(ab)+c"), max_tokens=30, stop=("b",)),  # stop string ends it
    ]
    results = engine.run_batch(rows)
    assert results[0].finish_reason == "length" and results[0].completion_tokens == 2
    assert re.fullmatch("[a-z]{1,89}", results[0].text)
    assert results[1].finish_reason == "stop" and re.fullmatch("[0-9]{1,2}", results[1].text)
    assert "".join(streamed) == results[1].text
    assert results[2].text == "a" and results[2].finish_reason == "stop"


def test_engine_cancellation_stops_a_row_at_its_next_token(engine):
    from guided.grammars import Regex

    row = engine.request("x: ", Regex("[a-z]{40}"), max_tokens=40)
    other = engine.request("y: ", Regex("[a-z]{5}"), max_tokens=5)

    def cancel_after_two(data: bytes, state) -> None:
        if len(data) >= 2:
            row.cancelled.set()

    row.on_step = cancel_after_two
    cancelled, done = engine.run_batch([row, other])
    assert cancelled.finish_reason == "cancelled" and 1 <= cancelled.completion_tokens < 40
    assert done.finish_reason == "stop" and re.fullmatch("[a-z]{5}", done.text)


def test_engine_unconstrained_rows_and_past_deadlines(engine):
    [plain] = engine.run_batch([engine.request("Hello", None, max_tokens=3)])
    assert plain.completion_tokens >= 1 and plain.finish_reason in ("stop", "length")
    [late] = engine.run_batch([engine.request("x", None, max_tokens=3, deadline=time.monotonic() - 1)])
    assert late.finish_reason == "deadline" and late.completion_tokens == 0


def test_batcher_queues_safely_and_refuses_past_its_bound(engine):
    import asyncio

    from guided.grammars import Regex
    from guided.serve.http import Batcher
    from guided.serve.protocol import APIError

    async def scenario():
        batcher = Batcher(engine, max_batch=2, max_queue=3)
        await batcher.start()
        try:
            constraint = Regex("[0-9]")
            with pytest.raises(APIError) as info:  # more rows than may wait: all refused, none queued
                batcher.submit([engine.request(f"n{i} = ", constraint, max_tokens=2) for i in range(4)])
            assert info.value.status == 503 and batcher.queued == 0
            futures = batcher.submit([engine.request(f"n{i} = ", constraint, max_tokens=2) for i in range(3)])
            results = await asyncio.gather(*futures)
        finally:
            await batcher.stop()
        return results, batcher.stats

    results, stats = asyncio.run(scenario())
    assert all(re.fullmatch("[0-9]", r.text) for r in results)
    assert stats["rows"] == 3 and 1 <= stats["largest_batch"] <= 2 and stats["errors"] == 0
