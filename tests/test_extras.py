"""Optional parts name the extra that installs them, in one line (guided/_extras.py)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from guided import _extras


def test_installed_extras_pass():
    for extra in ("server", "ide", "monitors"):
        _extras.require_extra(extra, "x")  # the dev environment has every extra


def test_missing_module_names_the_extra_in_one_line(monkeypatch):
    monkeypatch.setitem(_extras.EXTRAS, "server", ("fastapi", "guided_no_such_module"))
    with pytest.raises(ImportError) as info:
        _extras.require_extra("server", "guided serve")
    message = str(info.value)
    assert "\n" not in message
    assert message.endswith("pip install 'guided[server]'") and "guided_no_such_module" in message
    assert isinstance(info.value, ModuleNotFoundError) and info.value.name == "guided_no_such_module"


def test_every_extra_checked_is_declared_in_pyproject():
    extras = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    assert set(_extras.EXTRAS) <= set(extras)
    assert {"server", "ide", "monitors", "vllm", "bench", "all", "dev"} <= set(extras)
