"""Server lifecycle: answers, cache, crash -> restart, hang -> bounded wait, degrade, shutdown."""

from __future__ import annotations

import os
import signal
import time

import pytest
from monitor_helpers import HEADER, PYPROJ

from guided.monitors import LanguageServerSession, MonitorError

pytestmark = pytest.mark.timeout(150)


def test_answers_are_cached_per_context(py_session_factory):
    session = py_session_factory(HEADER, wait_s=20.0)
    names = session.completions("edge.")
    assert {"start", "end", "length"} <= set(names)
    requests = session.stats["requests"]
    assert session.completions("edge.") == names
    assert session.stats["requests"] == requests  # served from the cache
    help_ = session.signatures("edge.start.translate(")
    assert "dx" in help_["signatures"][0]["label"]


def test_a_crashed_server_is_restarted(py_session_factory):
    session = py_session_factory(HEADER, wait_s=20.0, max_restarts=1)
    assert session.completions("origin.")
    os.kill(session.server_pid(), signal.SIGKILL)
    assert "length" in session.completions("edge.")  # asked again after a restart
    assert session.stats["restarts"] == 1


def test_a_dead_server_degrades_to_no_constraint_with_a_warning(py_session_factory):
    session = py_session_factory(HEADER, wait_s=20.0, max_restarts=0)
    assert session.completions("origin.")
    os.kill(session.server_pid(), signal.SIGKILL)
    with pytest.warns(RuntimeWarning, match="no constraint"):
        assert session.completions("edge.") is None
    assert session.degraded and session.completions("edge.start.") is None


def test_a_hung_server_costs_one_bounded_wait(py_session_factory):
    session = py_session_factory(HEADER, wait_s=0.5, request_timeout_s=2.0, max_restarts=1)
    assert session.completions("origin.", wait_s=20.0)
    pid = session.server_pid()
    os.kill(pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        assert session.completions("edge.") is None  # no answer in time: no constraint
        assert time.monotonic() - started < 10
        assert session.completions("edge.") is None  # the decision is final for this context
    finally:
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:  # the monitor already replaced the hung server
            pass


def test_retarget_reuses_the_server_for_a_new_cursor(py_session_factory, llama3_vocab):
    from guided.monitors import DereferenceMonitor

    session = py_session_factory(HEADER + "a = origin.", wait_s=20.0)
    monitor = DereferenceMonitor(session)
    assert {b"x", b"norm"} <= set(monitor.start(llama3_vocab).state[1])  # a Point's members
    pid = session.server_pid()
    session.retarget(HEADER + "b = edge.", "\nprint(b)\n")
    state = monitor.start(llama3_vocab)  # the same monitor reads the new prefix
    assert session.server_pid() == pid  # same warm server, no restart
    assert {b"start", b"end", b"length"} <= set(state.state[1]) and b"norm" not in state.state[1]
    assert state.advance_bytes(b"start.") is not None  # generated text relative to the new prefix
    assert "norm" in session.completions("start.")
    # another file of the project (closed and opened on the same server)
    session.retarget("from geometry.shapes import Segment\ns = Segment(None, None)\ns", file_path="geometry/notes.py")
    assert session.relative_path == "geometry/notes.py"
    assert {"start", "end", "length"} <= set(session.completions("."))
    assert session.server_pid() == pid and session.stats["restarts"] == 0
    with pytest.raises(MonitorError, match="not inside the project"):
        session.retarget("", file_path="/etc/passwd.py")


def test_close_stops_the_server():
    session = LanguageServerSession(PYPROJ, "geometry/draw.py", prefix=HEADER)
    session.start()
    pid = session.server_pid()
    assert pid is not None
    session.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        pytest.fail("server process still running after close()")


def test_typed_errors_for_bad_setups(tmp_path):
    with pytest.raises(MonitorError, match="not a directory"):
        LanguageServerSession(tmp_path / "nope", "a.py")
    with pytest.raises(MonitorError, match="not inside the project"):
        LanguageServerSession(PYPROJ, "/etc/hostname.py", prefix="")
    with pytest.raises(MonitorError, match="no language server for files"):
        LanguageServerSession(PYPROJ, "notes.txt", prefix="")
