"""Fixtures: a small real Python project (and a TypeScript one) under data/, real servers."""

from __future__ import annotations

import pathlib
import shutil
import subprocess

import pytest
from monitor_helpers import PYPROJ

pytest.importorskip("multilspy")


def jedi_available() -> bool:
    from guided.monitors import ServerUnavailable, find_server_binary

    try:
        find_server_binary("python")
    except ServerUnavailable:
        return False
    return True


requires_jedi = pytest.mark.skipif(not jedi_available(), reason="jedi-language-server is not installed")


@pytest.fixture(scope="session")
def py_session_factory():
    """Sessions on the Python project, closed at the end (one server each)."""
    from guided.monitors import LanguageServerSession

    if not jedi_available():
        pytest.skip("jedi-language-server is not installed")
    made = []

    def make(prefix: str, **kwargs):
        session = LanguageServerSession(PYPROJ, "geometry/draw.py", prefix=prefix, **kwargs)
        made.append(session)
        return session

    yield make
    for session in made:
        session.close()


@pytest.fixture(scope="session")
def ts_server():
    """Path of typescript-language-server, installed by scripts/install_ts_server.sh if needed."""
    from guided.monitors import ServerUnavailable, find_server_binary

    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node/npm not installed")
    try:
        return find_server_binary("typescript")
    except ServerUnavailable:
        script = pathlib.Path(__file__).resolve().parents[2] / "scripts" / "install_ts_server.sh"
        result = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=240)
        if result.returncode != 0:
            pytest.skip(f"could not install typescript-language-server: {result.stderr[-300:]}")
        try:
            return find_server_binary("typescript")
        except ServerUnavailable:
            pytest.skip("typescript-language-server unavailable")
