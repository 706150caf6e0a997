"""The wheel, installed with the core dependencies only, works as the README says.

One fresh venv (``python -m venv``) gets the wheel built by ``python -m build`` (installed by pip,
no source tree on the path) and the core dependencies only: the distributions that guided's
``Requires-Dist`` needs (extras excluded), taken from this environment through a ``.pth`` folder of
links, so nothing is downloaded and a second torch is never installed.  In it:

* ``pip check`` passes (the core closure satisfies the wheel's metadata) and no extra leaks in;
* ``import guided`` and the README's first example run, and ``generate`` with a JSON Schema;
* a surface whose extra is missing fails with one line naming the extra to install.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

pytest.importorskip("build", reason="python -m build is in guided[dev]")
from packaging.requirements import Requirement  # noqa: E402  (packaging comes with build)

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow

EXTRA_MODULES = ("fastapi", "uvicorn", "pygls", "lsprotocol", "multilspy", "numba", "llguidance", "xgrammar")


def _core_closure(requirements: list[str]) -> set[str]:
    """Installed distributions needed by ``requirements`` (markers evaluated, extras left out)."""
    seen: set[str] = set()
    todo = [Requirement(r) for r in requirements]
    while todo:
        req = todo.pop()
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        name = re.sub(r"[-_.]+", "-", req.name).lower()
        if name in seen:
            continue
        dist = importlib.metadata.distribution(req.name)
        assert dist.version in req.specifier or not req.specifier, f"{req} but {dist.version} is installed"
        seen.add(name)
        todo.extend(Requirement(r) for r in dist.requires or ())
    return seen


def _clean_env() -> dict[str, str]:
    """This environment without PYTHONPATH & co., so the source tree is never on the path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["HF_HUB_OFFLINE"] = "1"
    return env


def _link_distributions(names: set[str], into: Path) -> None:
    """Symlink each distribution's top-level files and folders (not its scripts) into ``into``."""
    into.mkdir()
    for name in names:
        dist = importlib.metadata.distribution(name)
        root = Path(dist.locate_file(""))
        for top in {Path(f).parts[0] for f in dist.files or ()}:
            if top == ".." or (into / top).exists():
                continue
            if (root / top).exists():
                (into / top).symlink_to(root / top)


@pytest.fixture(scope="module")
def core_venv(tmp_path_factory) -> tuple[Path, Path]:
    """(python of a fresh venv holding the wheel and the core closure, the wheel)."""
    tmp = tmp_path_factory.mktemp("packaging")
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp / "dist"), str(REPO)],
                   check=True, capture_output=True, text=True)
    (wheel,) = (tmp / "dist").glob("guided-*.whl")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp / "venv")], check=True)
    python = tmp / "venv" / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", "--no-index",
                    str(wheel)], check=True, capture_output=True, text=True, env=_clean_env(), cwd=tmp)
    metadata = zipfile.ZipFile(wheel).read(f"{wheel.name.split('-')[0]}-{wheel.name.split('-')[1]}.dist-info/METADATA")
    core = [line.split(":", 1)[1].strip() for line in metadata.decode().splitlines() if line.startswith("Requires-Dist:")]
    core_site = tmp / "core-site"
    _link_distributions(_core_closure(core), core_site)
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    (Path(purelib) / "core-deps.pth").write_text(str(core_site) + "\n")
    return python, wheel


def _run(python: Path, code: str, *argv: str) -> subprocess.CompletedProcess:
    """``python -c code argv...`` outside the source tree, without PYTHONPATH."""
    return subprocess.run([str(python), "-c", code, *argv], cwd=python.parents[2], env=_clean_env(),
                          capture_output=True, text=True, timeout=600)


def test_wheel_holds_the_models_and_grammars(core_venv):
    _, wheel = core_venv
    names = set(zipfile.ZipFile(wheel).namelist())
    for model in ("default", "diffusion"):
        for file in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
            assert f"guided/models/{model}/{file}" in names
    for grammar in ("json", "python", "sql", "arithmetic"):
        assert f"guided/grammars/{grammar}.lark" in names
    assert "guided/py.typed" in names


def test_core_venv_is_consistent_and_has_no_extras(core_venv):
    python, _ = core_venv
    check = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "check"], capture_output=True,
                           text=True, env=_clean_env(), cwd=python.parents[2])
    assert check.returncode == 0, check.stdout + check.stderr
    probe = _run(python, "import importlib.util, json, sys; print(json.dumps("
                 "[m for m in sys.argv[1:] if importlib.util.find_spec(m)]))", *EXTRA_MODULES)
    assert probe.returncode == 0, probe.stderr
    assert json.loads(probe.stdout) == []


def test_readme_first_example_and_a_json_schema_run_from_the_wheel(core_venv):
    python, _ = core_venv
    readme = (REPO / "README.md").read_text()
    example = re.search(r"```python\n(.*?)```", readme, re.S).group(1)
    code = (
        "import functools, guided, json, jsonschema\n"
        "assert '/site-packages/guided/' in guided.__file__, guided.__file__\n"
        # the README's text as written; only its outputs are kept short (the default is 256 tokens)
        "guided.generate = functools.partial(guided.generate, max_new_tokens=32)\n"
        + example
        + "schema = {'type': 'object', 'properties': {'n': {'type': 'integer', 'minimum': 0, 'maximum': 9}},\n"
        "          'required': ['n'], 'additionalProperties': False}\n"
        "constraint = guided.JSONSchema(schema, whitespace='compact')\n"
        "text = guided.generate(model, tokenizer, 'JSON: ', constraint, max_new_tokens=16, seed=0)\n"
        "jsonschema.validate(json.loads(text), schema)\n"
        "print('ok', repr(text))\n"
    )
    result = _run(python, code)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("ok")


@pytest.mark.parametrize("command, extra", [
    ("import guided.serve.http", "server"),
    ("from guided.cli import main; raise SystemExit(main(['serve', '--port', '0']))", "server"),
    ("from guided.cli import main; raise SystemExit(main(['ide']))", "ide"),
    ("from guided.monitors import LanguageServerSession; LanguageServerSession('.', 'x.py')", "monitors"),
])
def test_a_surface_without_its_extra_names_the_extra_in_one_line(core_venv, command, extra):
    python, _ = core_venv
    result = _run(python, command)
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert f"pip install 'guided[{extra}]'" in last, result.stderr[-2000:]
    if "cli" in command:  # the command prints that one line and no traceback
        assert result.stderr.strip() == last
