"""A real ``vllm serve`` on loopback with guided's processor, driven by the ``openai`` client; and
vLLM's offline ``LLM`` through the example script.

One server for the module (vLLM takes tens of seconds to start), started with the plugin loaded
the standard way (``--logits-processors module:Class``). Outputs are parsed and validated.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from vllm_support import vllm_import_error, vllm_test_model

_why = vllm_import_error()
if _why:
    pytest.skip(_why, allow_module_level=True)

import jsonschema  # noqa: E402
import lark  # noqa: E402
import openai  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
PLUGIN = "guided.integrations.vllm:GuidedLogitsProcessor"
SERVED = "guided-test"
STARTUP_SECONDS = 900  # vLLM imports slowly on a busy 2-core machine

SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string", "maxLength": 8}, "age": {"type": "integer", "minimum": 0, "maximum": 120}},
    "required": ["name", "age"],
    "additionalProperties": False,
}
DATE = r"20[0-9]{2}-[01][0-9]-[0-3][0-9]"
PAIR_GRAMMAR = 'start: "(" NUM "," NUM ")"\nNUM: /[0-9]{1,3}/\n'
CHOICES = ["yes", "no", "maybe"]
# The test model's tokenizer has no chat template; chat requests need one.
CHAT_TEMPLATE = "{% for m in messages %}{{ m['content'] }}\n{% endfor %}"


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               VLLM_NO_USAGE_STATS="1", VLLM_DO_NOT_TRACK="1")
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def model_path() -> str:
    return vllm_test_model()


@pytest.fixture(scope="module")
def client(model_path, tmp_path_factory):
    port = _free_port()
    log_path = tmp_path_factory.mktemp("vllm") / "serve.log"
    command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model_path,
               "--served-model-name", SERVED, "--logits-processors", PLUGIN, "--host", "127.0.0.1",
               "--port", str(port), "--dtype", "float32", "--max-model-len", "512",
               "--kv-cache-memory-bytes", str(1 << 28), "--enforce-eager",
               "--distributed-executor-backend", "uni", "--max-num-seqs", "32", "--chat-template", CHAT_TEMPLATE]
    with open(log_path, "wb") as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=_env(), cwd=REPO)
    api = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0, timeout=300)
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            if server.poll() is not None:
                pytest.fail(f"vllm serve exited ({server.returncode}):\n{log_path.read_text()[-4000:]}")
            try:
                api.models.list()
                break
            except openai.APIConnectionError:
                if time.monotonic() > deadline:
                    pytest.fail(f"vllm serve did not start in {STARTUP_SECONDS} s:\n{log_path.read_text()[-4000:]}")
                time.sleep(2)
        yield api
    finally:
        server.terminate()
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def _complete(api, prompt: str, xargs: dict, **kw):
    kw.setdefault("max_tokens", 48)
    return api.completions.create(model=SERVED, prompt=prompt, extra_body={"vllm_xargs": xargs, **kw.pop("extra", {})},
                                  **kw).choices[0]


def _check(kind: str, text: str) -> None:
    """Parse ``text`` as the constraint ``kind`` promises (raises when it is not valid)."""
    if kind == "json":
        jsonschema.validate(json.loads(text), SCHEMA)
    elif kind == "regex":
        assert re.fullmatch(DATE, text), text
    elif kind == "grammar":
        lark.Lark(PAIR_GRAMMAR).parse(text)
    elif kind == "choice":
        assert text in CHOICES, text
    else:
        raise AssertionError(kind)


XARGS = {
    "json": {"guided_json": json.dumps(SCHEMA)},
    "regex": {"guided_regex": DATE},
    "grammar": {"guided_grammar": PAIR_GRAMMAR},
    "choice": {"guided_choice": CHOICES},
}


@pytest.mark.slow
@pytest.mark.parametrize("sampler", ["masking", "awrs"])
@pytest.mark.parametrize("kind", sorted(XARGS))
def test_outputs_are_valid(client, kind, sampler):
    choice = _complete(client, "Answer: ", {**XARGS[kind], "guided_sampler": sampler}, temperature=1.0, seed=3)
    assert choice.finish_reason == "stop", choice
    _check(kind, choice.text)


@pytest.mark.slow
def test_chat_completion_with_a_schema_is_valid(client):
    reply = client.chat.completions.create(
        model=SERVED, messages=[{"role": "user", "content": "A person, as JSON."}], max_tokens=48, seed=5,
        extra_body={"vllm_xargs": XARGS["json"]})
    _check("json", reply.choices[0].message.content)


@pytest.mark.slow
@pytest.mark.parametrize("sampler", ["masking", "awrs"])
def test_greedy_output_equals_guided_generate_token_for_token(client, model_path, sampler):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import guided
    from guided.samplers import Masking

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    vocab = guided.Vocabulary.from_tokenizer(tokenizer)
    cases = [("A person as JSON: ", guided.JSONSchema(SCHEMA), XARGS["json"]),
             ("A date: ", guided.Regex(DATE), XARGS["regex"])]
    for prompt, constraint, xargs in cases:
        ours = guided.generate(model, tokenizer, prompt, constraint, sampler=Masking(), temperature=0,
                               max_new_tokens=40, return_details=True)
        theirs = _complete(client, prompt, {**xargs, "guided_sampler": sampler}, temperature=0, max_tokens=40,
                           extra={"return_token_ids": True, "stop_token_ids": sorted(vocab.eos_ids)})
        assert list(theirs.token_ids) == ours.token_ids[0], (prompt, theirs.text, ours.texts[0])
        assert theirs.text == ours.texts[0]


@pytest.mark.slow
@pytest.mark.parametrize("xargs, place", [
    ({"guided_json": json.dumps({"type": "object", "properties": {"a": {"type": "strin"}}})}, "#/properties/a/type"),
    ({"guided_grammar": 'start: item\nitem: "x" other\n'}, "line 2, column"),
    ({"guided_regex": "[0-9]+("}, "position 6"),
])
def test_malformed_constraints_get_400_naming_the_place_and_the_server_goes_on(client, xargs, place):
    with pytest.raises(openai.BadRequestError) as caught:
        _complete(client, "x", xargs)
    assert caught.value.status_code == 400
    assert place in caught.value.message
    choice = _complete(client, "Answer: ", XARGS["choice"], temperature=1.0)
    _check("choice", choice.text)


@pytest.mark.slow
def test_sixteen_concurrent_requests_with_different_constraints_are_all_valid(client):
    requests = []
    for i in range(16):
        kind = sorted(XARGS)[i % 4]
        sampler = "awrs" if i % 8 >= 4 else "masking"
        requests.append((kind, {**XARGS[kind], "guided_sampler": sampler}, i))
    # distinct constraints too: regexes of their own
    requests += [("digits", {"guided_regex": f"[0-9]{{{k}}}"}, 100 + k) for k in range(1, 5)]

    def run(request):
        kind, xargs, seed = request
        return _complete(client, f"Item {seed}: ", xargs, temperature=1.0, seed=seed)

    with ThreadPoolExecutor(len(requests)) as pool:
        answers = list(pool.map(run, requests))
    for (kind, _, seed), choice in zip(requests, answers):
        assert choice.finish_reason == "stop", (kind, choice)
        if kind == "digits":
            assert re.fullmatch(f"[0-9]{{{seed - 100}}}", choice.text), choice.text
        else:
            _check(kind, choice.text)


@pytest.mark.slow
def test_offline_llm_with_the_processor_class(model_path):
    script = REPO / "examples" / "vllm_offline.py"
    run = subprocess.run([sys.executable, str(script), model_path], capture_output=True, text=True, env=_env(),
                         cwd=REPO, timeout=STARTUP_SECONDS)
    assert run.returncode == 0, run.stderr[-4000:]
    lines = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    smc = lines.pop()
    assert [line["constraint"] for line in lines] == ["json", "regex", "choice", "grammar"]
    by_name = {line["constraint"]: line for line in lines}
    for name in ("json", "regex", "choice"):
        assert by_name[name]["finished"], by_name[name]
    jsonschema.validate(json.loads(by_name["json"]["text"]), SCHEMA)
    assert re.fullmatch(DATE, by_name["regex"]["text"])
    assert by_name["choice"]["text"] in CHOICES
    if by_name["grammar"]["finished"]:  # the shipped JSON grammar is unbounded: 48 tokens may not close it
        json.loads(by_name["grammar"]["text"])

    # SMC with vLLM as the language model against the Hugging Face path on the same model, same
    # seed: the logits agree to ~1e-5, so the particles agree up to Monte Carlo noise
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import guided

    sys.path.insert(0, str(REPO / "examples"))
    from vllm_offline import SMC_PARTICLES, SMC_PROMPT, SMC_REGEX

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    hf = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    ours = guided.smc(hf, tokenizer, SMC_PROMPT, guided.Regex(SMC_REGEX), n_particles=SMC_PARTICLES, seed=0,
                      max_new_tokens=8)
    theirs = smc["smc"]
    assert all(re.fullmatch(SMC_REGEX, text) for text in theirs) and abs(sum(theirs.values()) - 1) < 1e-6
    texts = set(theirs) | set(ours.posterior())
    distance = 0.5 * sum(abs(theirs.get(t, 0.0) - ours.posterior().get(t, 0.0)) for t in texts)
    assert distance < 0.15, (theirs, ours.posterior())
    assert abs(smc["log_z"] - ours.log_z) < 0.1, (smc["log_z"], ours.log_z)
