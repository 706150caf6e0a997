"""TypeScript through typescript-language-server (installed from npm by scripts/install_ts_server.sh)."""

from __future__ import annotations

import numpy as np
import pytest
from monitor_helpers import TSPROJ, assert_mask_exact

from guided.monitors import ArityMonitor, DereferenceMonitor, LanguageServerSession
from guided.monitors.lexer import lexer_for

pytestmark = pytest.mark.timeout(150)

MAIN = (TSPROJ / "src" / "main.ts").read_text()


@pytest.fixture(scope="module")
def ts_session(ts_server):
    session = LanguageServerSession(TSPROJ, "src/main.ts", prefix=MAIN + "const a = c.", wait_s=30.0)
    yield session
    session.close()


def test_dereference_in_typescript(ts_session, llama3_vocab):
    state = DereferenceMonitor(ts_session).start(llama3_vocab)
    assert {b"area", b"radius", b"scale"} <= set(state.state[1])
    assert b"label" not in state.state[1]  # private
    assert state.advance_bytes(b"area();\n") is not None
    assert state.advance_bytes(b"perimeter") is None
    assert_mask_exact(state.advance_bytes(b"sc"), llama3_vocab, np.random.default_rng(3), n_random=300)


def test_arity_in_typescript(ts_server, llama3_vocab):
    session = LanguageServerSession(TSPROJ, "src/main.ts", prefix=MAIN, wait_s=30.0)
    try:
        state = ArityMonitor(session).start(llama3_vocab)
        assert state.advance_bytes(b"const d = c.scale(2);\n") is not None
        assert state.advance_bytes(b"const d = c.scale(2, 3);\n") is None
        assert state.advance_bytes(b"const d = c.scale();\n") is None
        assert state.advance_bytes(b"const e = makeCircle(1, 'a', 'b', 'c');\n") is not None  # ...tags
        assert state.advance_bytes(b"function f(a: number, b: number, c: number) {}\n") is not None
    finally:
        session.close()


def test_typescript_lexer():
    lexer = lexer_for("typescript")
    assert lexer.scan(b"x = 'a.b'; // c.d\n") == 0
    assert lexer.scan(b"/* a.b */ x") == 0
    assert lexer.scan(b"`a.${b}") != 0
    assert lexer.scan(b"x = a / b") == 0
