"""``guided serve`` in a subprocess on loopback, shared by the server test modules.

    >>> with running_server(["--max-batch", "4"]) as srv:
    ...     client = openai.OpenAI(base_url=srv.url + "/v1", api_key="unused")
"""

from __future__ import annotations

import contextlib
import re
import subprocess
import sys
import threading

import pytest

from model_subprocess import MODEL_ARGS, REPO, subprocess_env

START_TIMEOUT_S = 300  # loading the model on a busy 2-core CI machine


class ServerProcess:
    def __init__(self, args: list[str]):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "guided.cli", "serve", "--port", "0", *MODEL_ARGS, *args],
            cwd=REPO, env=subprocess_env(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self.ready = threading.Event()
        self.url = ""
        self.model = ""
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:  # keep draining so the server never blocks on a full pipe
            self.lines.append(line)
            m = re.search(r"model '([^']+)' at (http://\S+)/v1", line)
            if m:
                self.model, self.url = m.group(1), m.group(2)
                self.ready.set()
        self.ready.set()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)


@contextlib.contextmanager
def running_server(args: list[str]):
    srv = ServerProcess(args)
    try:
        srv.ready.wait(START_TIMEOUT_S)
        if not srv.url:
            pytest.fail("guided serve did not start:\n" + "".join(srv.lines[-40:]))
        yield srv
    finally:
        srv.stop()


def health(server, headers: dict | None = None) -> dict:
    import httpx

    return httpx.get(server.url + "/health", timeout=30, headers=headers).json()
