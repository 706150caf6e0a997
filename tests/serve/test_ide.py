"""The IDE backend: a real editor (headless Neovim) asks ``guided ide`` for a completion; the
fill-in-the-middle endpoint answers over HTTP; the backend's cache, cancellation, deadline and
monitor behave. Suggestions are checked to parse (``ast``) and, after ``math.``, to name a real
member of ``math`` (the jedi-language-server monitor).
"""

from __future__ import annotations

import ast
import json
import math
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from model_subprocess import MODEL_ARGS, TEST_MODEL, subprocess_env

DATA = Path(__file__).resolve().parents[1] / "data" / "ide"
EDITOR_TIMEOUT_S = 300


def _project(tmp_path: Path) -> Path:
    """A copy of the test project (the editor saves into it)."""
    project = tmp_path / "project"
    shutil.copytree(DATA / "project", project)
    return project


def _cursor_at_end_of(path: Path, marker: str) -> tuple[str, str, int, int]:
    """(prefix, suffix, line, column) for a cursor right after ``marker``."""
    text = path.read_text()
    offset = text.index(marker) + len(marker)
    prefix, suffix = text[:offset], text[offset:]
    line = prefix.count("\n")
    column = len(prefix) - (prefix.rfind("\n") + 1)
    return prefix, suffix, line, column


def _member_after_dot(completed_line: str) -> str:
    return completed_line.split("math.", 1)[1].split("(")[0].split(")")[0].strip().split()[0]


# ---------------------------------------------------------------------------------------------
# A real editor
# ---------------------------------------------------------------------------------------------
@pytest.mark.skipif(shutil.which("nvim") is None,
                    reason="Neovim is not installed (scripts/ci_system_deps.sh installs it: apt-get install neovim)")
def test_neovim_gets_a_completion_that_parses(tmp_path):
    project = _project(tmp_path)
    source = project / "geometry.py"
    _, _, line, column = _cursor_at_end_of(source, "return math.")
    out = tmp_path / "out"
    out.mkdir()
    server = [sys.executable, "-m", "guided.cli", "ide", *MODEL_ARGS, "--max-tokens", "8",
              "--deadline-ms", str(EDITOR_TIMEOUT_S * 1000), "--monitor-start-wait-ms", str(EDITOR_TIMEOUT_S * 1000)]
    env = subprocess_env()
    env.update(GUIDED_IDE_CMD=json.dumps(server), GUIDED_IDE_OUT=str(out), GUIDED_IDE_LINE=str(line),
               GUIDED_IDE_COL=str(column), GUIDED_IDE_TIMEOUT_MS=str(EDITOR_TIMEOUT_S * 1000))
    # --clean: no user configuration or plugins; -n: no swap file; -u: the test's configuration
    subprocess.run(["nvim", "--headless", "--clean", "-n", "-u", str(DATA / "init.lua"), str(source)],
                   cwd=project, env=env, timeout=EDITOR_TIMEOUT_S + 60, stdin=subprocess.DEVNULL,
                   capture_output=True)
    status = (out / "status").read_text()
    assert status == "ok", status
    capabilities = json.loads((out / "capabilities.json").read_text())
    assert capabilities.get("completionProvider") is not None

    # the suggestion appeared in the completion menu, and the accepted edit gives a file that parses
    [response] = json.loads((out / "completion.json").read_text())
    [item] = response["result"]["items"]
    assert item["textEdit"]["newText"]
    completed = (out / "completed.py").read_text()
    ast.parse(completed)
    line_text = completed.splitlines()[line]
    assert line_text.startswith("    return math." + item["textEdit"]["newText"])
    assert hasattr(math, _member_after_dot(line_text))  # the monitor: only real members of math

    # the inline completion (LSP 3.18) answers too
    [inline] = json.loads((out / "inline.json").read_text())
    assert isinstance(inline["result"]["items"], list)


# ---------------------------------------------------------------------------------------------
# The backend, in-process
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def backend():
    from guided.serve.ide import CompletionBackend, IDEConfig
    from guided.serve.engine import Engine, load_model

    model, tokenizer, name = load_model(TEST_MODEL, device="cpu")
    config = IDEConfig(max_tokens=8, deadline_s=EDITOR_TIMEOUT_S, monitor_start_wait_s=EDITOR_TIMEOUT_S)
    backend = CompletionBackend(Engine(model, tokenizer, name=name), config)
    yield backend
    backend.close()


def test_backend_suggestion_parses_and_the_monitor_names_a_real_member(backend, tmp_path):
    project = _project(tmp_path)
    source = project / "geometry.py"
    prefix, suffix, _, _ = _cursor_at_end_of(source, "return math.")
    s = backend.suggest(prefix, suffix, path=str(source), root=str(project))
    assert s is not None and s.text
    assert s.constrained_by == ("python-grammar", "dereference-monitor")
    assert s.complete
    ast.parse(prefix + s.text + suffix)
    assert hasattr(math, _member_after_dot("math." + s.text))

    # the cache: the same cursor again, then the user typing the suggestion's first character
    again = backend.suggest(prefix, suffix, path=str(source), root=str(project))
    assert again.cached and again.text == s.text
    if len(s.text) > 1:
        typed = backend.suggest(prefix + s.text[0], suffix, path=str(source), root=str(project))
        assert typed.cached and typed.text == s.text[1:]


def test_backend_without_a_file_uses_the_grammar_and_respects_the_suffix(backend):
    prefix, suffix = "values = [1, 2", "]\nprint(values)\n"
    s = backend.suggest(prefix, suffix)
    if s is not None:
        assert s.constrained_by == ("python-grammar",)
        if s.complete:
            ast.parse(prefix + s.text + suffix)


def test_stale_requests_are_cancelled_and_deadlines_hold(backend):
    first = backend.begin("doc.py")
    second = backend.begin("doc.py")  # a newer request on the same document
    assert first.is_set() and not second.is_set()
    cancelled_before = backend.stats["cancelled"]
    assert backend.suggest("x = ", "\n", cancel=first) is None
    assert backend.stats["cancelled"] == cancelled_before + 1

    deadline_before = backend.stats["deadline"]
    late = backend.suggest("y = 1 + ", "\n", deadline=time.monotonic() - 1)  # already past
    assert late is None and backend.stats["deadline"] == deadline_before + 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_fill_in_the_middle_endpoint(backend):
    import httpx

    from guided.serve.ide import BackendHolder, _run_fim

    holder = BackendHolder(lambda: backend)
    server = _run_fim(holder, _free_port())
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        holder.wait(EDITOR_TIMEOUT_S)
        while not server.started:
            if not thread.is_alive():
                pytest.fail("the FIM endpoint did not start")
            time.sleep(0.05)
        port = server.servers[0].sockets[0].getsockname()[1]
        base = f"http://127.0.0.1:{port}"
        body = {"input_prefix": "def double(n):\n", "prompt": "    return ", "input_suffix": "\n", "n_predict": 8}
        reply = httpx.post(base + "/infill", json=body, timeout=EDITOR_TIMEOUT_S).json()
        assert reply["guided"]["constrained_by"] == ["python-grammar"] or reply["content"] == ""
        if reply["guided"]["complete"]:
            ast.parse(body["input_prefix"] + body["prompt"] + reply["content"] + body["input_suffix"])
        openai_style = httpx.post(base + "/v1/completions", json={"prompt": "x = (1", "suffix": ")\n"},
                                  timeout=EDITOR_TIMEOUT_S).json()
        assert openai_style["object"] == "text_completion" and len(openai_style["choices"]) == 1
        bad = httpx.post(base + "/infill", content=b"{oops", timeout=30)
        assert bad.status_code == 400
    finally:
        server.should_exit = True
        thread.join(timeout=30)
