"""Constrained answers from ``guided serve`` with the standard ``openai`` client.

    guided serve --port 8000 &                       # in another terminal (or let this script start one)
    python examples/server_client.py                  # uses http://127.0.0.1:8000 if it answers
    python examples/server_client.py path/to/hf-model # starts a server with that model

Shows the OpenAI field (``response_format`` with a JSON Schema), the vLLM-style extras
(``guided_regex``, ``guided_choice``, ``guided_grammar``), streaming, tool calling with
``chat.completions.parse`` and a pydantic tool, logprobs, and the Responses API.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

from typing import Literal

import openai
import pydantic
from openai import OpenAI

SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "pattern": "^[A-Z][a-z]{1,15}$"},
        "population": {"type": "integer", "minimum": 0, "maximum": 40000000},
        "capital": {"type": "boolean"},
    },
    "required": ["city", "population", "capital"],
    "additionalProperties": False,
}
ARITHMETIC = 'start: expr\nexpr: NUMBER | expr ("+" | "*") NUMBER\nNUMBER: /[0-9]{1,3}/\n'


class GetWeather(pydantic.BaseModel):
    """The weather in a city."""

    city: Literal["Paris", "Oslo", "Lima"]


class Verdict(pydantic.BaseModel):
    ok: bool


def server_url(model: str | None) -> tuple[str, subprocess.Popen | None]:
    """http://127.0.0.1:8000 if a server answers there, else a fresh ``guided serve`` on a free port."""
    import httpx

    if model is None:
        try:
            httpx.get("http://127.0.0.1:8000/health", timeout=2).raise_for_status()
            return "http://127.0.0.1:8000", None
        except httpx.HTTPError:
            pass
    repo = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=str(repo))
    model_args = ["--model", model] if model else []
    proc = subprocess.Popen([sys.executable, "-m", "guided.cli", "serve", "--port", "0", *model_args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url: list[str] = []
    ready = threading.Event()

    def watch() -> None:
        for line in proc.stderr:
            m = re.search(r"at (http://\S+)/v1", line)
            if m:
                url.append(m.group(1))
                ready.set()
        ready.set()

    threading.Thread(target=watch, daemon=True).start()
    ready.wait(300)
    if not url:
        proc.kill()
        raise SystemExit("could not start guided serve")
    return url[0], proc


def main() -> None:
    url, proc = server_url(sys.argv[1] if len(sys.argv) > 1 else None)
    try:
        client = OpenAI(base_url=url + "/v1", api_key="unused")
        model = client.models.list().data[0].id
        print(f"server {url}, model {model}\n")

        chat = client.chat.completions.create(
            model=model, max_tokens=60, seed=0,
            messages=[{"role": "user", "content": "Describe a city as JSON."}],
            response_format={"type": "json_schema", "json_schema": {"name": "city", "schema": SCHEMA}},
        )
        print("JSON Schema (response_format):", json.loads(chat.choices[0].message.content))

        date = client.completions.create(model=model, prompt="Today is ", max_tokens=12, seed=0,
                                         extra_body={"guided_regex": r"20[0-9]{2}-(0[1-9]|1[0-2])-[0-2][0-9]"})
        print("regex (guided_regex):          ", date.choices[0].text)

        answer = client.completions.create(model=model, prompt="Is Python fun? ", max_tokens=4, n=3,
                                           extra_body={"guided_choice": ["yes", "no", "it depends"]})
        print("choice (guided_choice, n=3):   ", [c.text for c in answer.choices])

        expr = client.completions.create(model=model, prompt="2 * ", max_tokens=12, seed=0,
                                         extra_body={"guided_grammar": ARITHMETIC, "sampler": "smc", "particles": 4})
        print("grammar (guided_grammar, SMC): ", expr.choices[0].text)

        print("streamed:                       ", end="", flush=True)
        for chunk in client.completions.create(model=model, prompt="word: ", max_tokens=12, stream=True,
                                               extra_body={"guided_regex": "[a-z]{3,10}"}):
            print(chunk.choices[0].text, end="", flush=True)
        print()

        called = client.chat.completions.parse(
            model=model, max_tokens=90, tools=[openai.pydantic_function_tool(GetWeather)], tool_choice="required",
            parallel_tool_calls=False, messages=[{"role": "user", "content": "What is the weather in Lima?"}])
        call = called.choices[0].message.tool_calls[0]
        print("tool call (tool_choice=required):", call.function.name, call.function.parsed_arguments)

        scored = client.chat.completions.create(
            model=model, max_tokens=4, logprobs=True, top_logprobs=2, messages=[{"role": "user", "content": "Hi"}],
            extra_body={"guided_regex": "[a-z]{1,8}", "logprobs_mode": "constrained"})
        print("logprobs (constrained):        ",
              [(t.token, round(t.logprob, 2)) for t in scored.choices[0].logprobs.content])

        response = client.responses.parse(model=model, input="Is this fine?", text_format=Verdict, max_output_tokens=60)
        print("Responses API (text_format):   ", response.output_parsed)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)


if __name__ == "__main__":
    main()
