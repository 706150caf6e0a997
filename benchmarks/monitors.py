"""DotPrompts-style evaluation of the dereference monitor on real installed Python projects.

    python benchmarks/monitors.py                # default model, 3 projects, -> benchmarks/results/monitors.json
    python benchmarks/monitors.py --cuts 10 --out /tmp/monitors.json                # a quick run
    python benchmarks/monitors.py --model path/to/hf-model --projects parso lark

Projects: the pure-Python packages ``parso``, ``jedi`` and ``lark`` as installed in this
environment. They are on every machine that runs guided's monitors (jedi-language-server needs
jedi and parso; guided's grammars need lark), none of them is in the default model's training
corpus (stdlib and JSON only), and each is split across many modules whose types are used across
files (parso's parser builds ``parso.python.tree`` nodes; jedi's API wraps ``jedi.inference``
values; lark's parsers use ``lark.lexer``/``lark.tree`` classes), so a dereference often
targets a member defined in *another* module, which the model cannot see.

A *cut* is a dereference ``name.attr`` in a file of the project where jedi resolves ``attr`` to
a definition in another module of the same project (dunder names, which ``object`` defines, are
left out). The model gets the file up to the cut (its last ``--context-chars`` characters, from a
line start) and completes the line, greedily (AWRS at temperature 0: the constrained argmax), in
three modes: ``plain`` (the line constraint alone), ``monitor`` (``& DereferenceMonitor``: the
server's completion list) and ``monitor_import`` (``& DereferenceMonitor(import_check=True)``:
for a receiver that is a class, only the names the imported class has; jedi also lists names a
class body only annotates, e.g. ``ParserConf.parser_type``, which raise AttributeError):

- the prompt stops *before* the dot and the line constraint (``\\.[A-Za-z_]\\w*[^\\n]*\\n``, in
  every mode) makes the generation start with it, so the model may pick a ``.attr`` token as
  it saw them in training (a prompt that ends in a lone ``.`` token is out of distribution);
- one jedi-language-server per project serves every cut (``LanguageServerSession.retarget``),
  as in an editor; its start is not timed, every question it answers during a run is.

Reported per project and overall, for each mode:

- ``next_identifier_match``: the identifier generated after the dot equals the original;
- ``non_existent_by_server``: the identifier is not among the completions jedi-language-server
  lists at the cut (asked again after the runs, with a long wait, as the checker);
- ``non_existent_by_import``: independent of the server's list: jedi infers the receiver's type,
  the type's module is *imported*, and the member is looked up on the live object (``hasattr``,
  plus ``self.<name> = ...`` assignments in the classes of its MRO for instance attributes);
  rate over the cuts where the receiver's type could be imported (``import_checked``);
- ``seconds_per_token``; a monitor's overhead per token is its difference to ``plain``.

Writes a JSON report (``--out``); prints a table.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import importlib.util
import inspect
import json
import os
import pathlib
import platform
import random
import re
import signal
import statistics
import sys
import time

from provenance import write_results  # benchmarks/provenance.py: machine, versions, command, date

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

PROJECTS = ("parso", "jedi", "lark")
#: plain: the line constraint alone; monitor: & DereferenceMonitor (the server's list);
#: monitor_import: & DereferenceMonitor(import_check=True) (class receivers checked by importing)
MODES = ("plain", "monitor", "monitor_import")
MONITORED = MODES[1:]
_IDENT = re.compile(r"[A-Za-z_]\w*")
LINE = r"\.[A-Za-z_][A-Za-z0-9_]*[^\n]*\n"


def package_dir(name: str) -> pathlib.Path:
    return pathlib.Path(importlib.import_module(name).__file__).resolve().parent


def find_cuts(name: str, per_project: int, rng: random.Random, per_file: int = 5,
              tries_per_file: int = 60) -> list[dict]:
    """Cuts ``obj|.attr`` whose member jedi resolves to another module of the project."""
    import jedi

    pkg = package_dir(name)
    root = pkg.parent
    project = jedi.Project(str(root), added_sys_path=[str(root)])
    files = sorted(pkg.rglob("*.py"))
    rng.shuffle(files)
    cuts: list[dict] = []
    for path in files:
        source = path.read_text(encoding="utf-8")
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue
        lines = source.splitlines(keepends=True)
        offsets = [0]
        for line in lines:
            offsets.append(offsets[-1] + len(line))
        nodes = [n for n in ast.walk(tree) if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name)
                 and not n.attr.startswith("__")]
        rng.shuffle(nodes)
        script = jedi.Script(source, path=str(path), project=project)
        in_file = 0
        for node in nodes[:tries_per_file]:
            line = node.end_lineno
            col = node.end_col_offset - len(node.attr)  # start of the member name
            if lines[line - 1][col - 1 : col] != ".":
                continue
            try:
                targets = script.goto(line, col)
            except Exception:  # noqa: BLE001 - jedi cannot resolve some code
                continue
            target = next((t for t in targets if t.module_path), None)
            if target is None:
                continue
            module = pathlib.Path(target.module_path).resolve()
            if module == path.resolve() or pkg not in module.parents or module.suffix != ".py" \
                    or "third_party" in module.relative_to(pkg).parts:  # jedi's vendored typeshed stubs
                continue
            dot = offsets[line - 1] + col - 1
            try:  # keep cuts where the member is in jedi's list there (the server can resolve it)
                lines_before = source[: dot + 1].split("\n")
                listed = {c.name for c in jedi.Script(source[: dot + 1], path=str(path), project=project).complete(
                    len(lines_before), len(lines_before[-1]))}
            except Exception:  # noqa: BLE001
                continue
            if node.attr not in listed:
                continue
            cuts.append(
                {"project": name, "root": str(root), "file": str(path.relative_to(root)),
                 "dot": dot, "receiver": node.value.id, "target": node.attr,
                 "line": lines[line - 1].rstrip("\n"), "defined_in": str(module.relative_to(root))}
            )
            in_file += 1
            if len(cuts) >= per_project:
                return cuts
            if in_file >= per_file:
                break
    return cuts


# -- the independent check: import the receiver's type and look the member up -------------------
def _instance_attributes(cls: type) -> set[str]:
    """Names assigned as ``self.<name> = ...`` in the classes of ``cls``'s MRO (their sources)."""
    names: set[str] = set()
    for klass in cls.__mro__:
        try:
            tree = ast.parse(inspect.getsource(klass).strip() if klass.__module__ != "builtins" else "")
        except (OSError, TypeError, SyntaxError, IndentationError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store) and \
                    isinstance(node.value, ast.Name) and node.value.id == "self":
                names.add(node.attr)
    return names


def _live_object(module_name: str, full_name: str):
    module = importlib.import_module(module_name)
    if full_name == module_name:
        return module
    obj = module
    for part in full_name[len(module_name) + 1 :].split("."):
        obj = getattr(obj, part)
    return obj


def exists_by_import(cut: dict, prefix: str, ident: str) -> bool | None:
    """Whether ``receiver.ident`` exists on the imported type jedi infers for the receiver (None: unknown)."""
    import jedi

    project = jedi.Project(cut["root"], added_sys_path=[cut["root"]])
    script = jedi.Script(prefix, path=str(pathlib.Path(cut["root"]) / cut["file"]), project=project)
    lines = prefix.split("\n")
    try:
        inferred = script.infer(len(lines), max(0, len(lines[-1]) - 1))
    except Exception:  # noqa: BLE001
        return None
    verdicts = []
    for name in inferred:
        if not name.module_name or not name.full_name or not name.full_name.startswith(name.module_name):
            continue
        try:
            obj = _live_object(name.module_name, name.full_name)
        except Exception:  # noqa: BLE001 - not importable / not a module-level name
            continue
        if name.type == "module":
            found = hasattr(obj, ident)
            if not found:
                try:
                    found = importlib.util.find_spec(f"{obj.__name__}.{ident}") is not None
                except (ImportError, ValueError, AttributeError):
                    found = False
            verdicts.append(found)
        elif name.type == "instance" and isinstance(obj, type):
            dynamic = any(k is not object and ("__getattr__" in vars(k) or "__getattribute__" in vars(k))
                          for k in obj.__mro__)
            if hasattr(obj, ident) or ident in _instance_attributes(obj):
                verdicts.append(True)
            elif not dynamic:
                verdicts.append(False)
        elif name.type in ("class", "function"):
            verdicts.append(hasattr(obj, ident))
    if any(verdicts):
        return True
    return False if verdicts else None


# -- the runs -------------------------------------------------------------------------------------
def first_identifier(text: str) -> str:
    m = _IDENT.match(text[1:] if text.startswith(".") else text)
    return m.group() if m else ""


def prompt_of(prefix: str, chars: int) -> str:
    """The last ``chars`` characters of ``prefix``, starting at a line start."""
    if len(prefix) <= chars:
        return prefix
    window = prefix[-chars:]
    newline = window.find("\n")
    return window[newline + 1 :] if newline >= 0 else window


def run(args) -> dict:
    import torch

    import guided
    from guided.monitors import DereferenceMonitor, LanguageServerSession

    torch.set_num_threads(args.threads)
    if args.model:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(args.model)
        model = AutoModelForCausalLM.from_pretrained(args.model).eval()
        model_name = args.model
    else:
        model, tokenizer = guided.load_default_model()
        model_name = "guided default model (guided/models/default)"
    rng = random.Random(args.seed)
    line = guided.Regex(LINE)
    rows = []
    started_all = time.perf_counter()
    for name in args.projects:
        t0 = time.perf_counter()
        cuts = find_cuts(name, args.cuts, rng)
        print(f"{name}: {len(cuts)} cuts ({time.perf_counter() - t0:.0f}s to find)", file=sys.stderr)
        session = None
        try:
            for cut in cuts:
                source = (pathlib.Path(cut["root"]) / cut["file"]).read_text(encoding="utf-8")
                prefix = source[: cut["dot"]]  # up to the receiver; the dot is generated
                prompt = prompt_of(prefix, args.context_chars)
                if session is None:
                    session = LanguageServerSession(cut["root"], cut["file"], prefix=prefix, wait_s=args.wait_s,
                                                    request_timeout_s=max(10.0, args.wait_s))
                    session.start()
                    # one monitor per server: it reads each cut's prefix from the retargeted session
                    monitored = {"monitor": DereferenceMonitor(session) & line,
                                 "monitor_import": DereferenceMonitor(session, import_check=True) & line}
                row = dict(cut)
                for mode in MODES:
                    constraint = line
                    if mode in MONITORED:
                        session.retarget(prefix, file_path=cut["file"])  # forget the answers: all asked anew
                        stats_before = dict(session.stats)
                        constraint = monitored[mode]
                    started = time.perf_counter()
                    out = guided.generate(
                        model, tokenizer, prompt, constraint, max_new_tokens=args.max_new_tokens,
                        temperature=0.0, add_special_tokens=True, return_details=True,
                    )
                    seconds = time.perf_counter() - started
                    ident = first_identifier(out.texts[0])
                    row[mode] = {"text": out.texts[0], "identifier": ident, "match": ident == cut["target"],
                                 "tokens": len(out.token_ids[0]), "seconds": seconds}
                    if mode in MONITORED:
                        row[mode]["server"] = {k: session.stats[k] - stats_before[k] for k in session.stats}
                # the checker: the server's list at the cut, asked afresh with a long wait
                session.retarget(prefix, file_path=cut["file"])
                members = session.completions(".", wait_s=60.0)
                row["server_members"] = None if members is None else len(members)
                for mode in MODES:
                    ident = row[mode]["identifier"]
                    row[mode]["in_server_list"] = None if members is None else ident in members
                    row[mode]["exists_by_import"] = exists_by_import(cut, prefix, ident)
                rows.append(row)
                print(f"  {cut['file']}:{cut['receiver']}.{cut['target']:<18} plain={row['plain']['identifier']!r:<20} "
                      f"monitor={row['monitor']['identifier']!r:<20} +import={row['monitor_import']['identifier']!r:<20} "
                      f"members={row['server_members']}", file=sys.stderr)
        finally:
            if session is not None:
                session.close()
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "model": model_name,
        "config": {k: v for k, v in vars(args).items() if k != "out"} | {"line_regex": LINE, "sampler": "AWRS, temperature 0"},
        "machine": {"cpus": os.cpu_count(), "torch_threads": args.threads, "loadavg_at_end": load,
                    "python": platform.python_version()},
        "wall_seconds": time.perf_counter() - started_all,
        "summary": summarise(rows, args.projects),
        "rows": rows,
    }


def _rate(values) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def summarise(rows: list[dict], projects) -> dict:
    out = {}
    for group in [*projects, "all"]:
        sel = [r for r in rows if group == "all" or r["project"] == group]
        if not sel:
            continue
        entry: dict = {"cuts": len(sel)}
        for mode in MODES:
            tokens = sum(r[mode]["tokens"] for r in sel)
            entry[mode] = {
                "next_identifier_match": _rate(r[mode]["match"] for r in sel),
                "non_existent_by_server": _rate(None if r[mode]["in_server_list"] is None
                                                else not r[mode]["in_server_list"] for r in sel),
                "non_existent_by_import": _rate(None if r[mode]["exists_by_import"] is None
                                                else not r[mode]["exists_by_import"] for r in sel),
                "import_checked": sum(r[mode]["exists_by_import"] is not None for r in sel),
                "non_existent_names": sorted({f"{r['receiver']}.{r[mode]['identifier']}" for r in sel
                                              if r[mode]["in_server_list"] is False or r[mode]["exists_by_import"] is False}),
                "tokens": tokens,
                "seconds_per_token": sum(r[mode]["seconds"] for r in sel) / max(1, tokens),
            }
        for mode in MONITORED:
            entry[mode]["overhead_seconds_per_token"] = (
                entry[mode]["seconds_per_token"] - entry["plain"]["seconds_per_token"])
            entry[mode]["overhead_seconds_per_token_median_cut"] = statistics.median(
                r[mode]["seconds"] / max(1, r[mode]["tokens"]) - r["plain"]["seconds"] / max(1, r["plain"]["tokens"])
                for r in sel)
        out[group] = entry
    return out


def _pct(x) -> str:
    return "   n/a" if x is None else f"{x:6.1%}"


def print_table(report: dict) -> None:
    print(f"model: {report['model']}")
    print(f"{'project':<8} {'cuts':>4} {'mode':<15} | {'match':>6} | {'non-existent':>12} {'non-existent':>12} | "
          f"{'s/token':>7} {'overhead':>8}")
    print(f"{'':<8} {'':>4} {'':<15} | {'':>6} | {'(server)':>12} {'(import)':>12} | {'':>7} {'s/token':>8}")
    for group, e in report["summary"].items():
        for mode in MODES:
            m = e[mode]
            overhead = f"{m['overhead_seconds_per_token']:+8.3f}" if mode in MONITORED else f"{'':>8}"
            print(f"{group if mode == 'plain' else '':<8} {e['cuts'] if mode == 'plain' else '':>4} {mode:<15} | "
                  f"{_pct(m['next_identifier_match']):>6} | {_pct(m['non_existent_by_server']):>12} "
                  f"{_pct(m['non_existent_by_import']):>12} | {m['seconds_per_token']:7.3f} {overhead}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="a Hugging Face causal-LM folder (default: guided's default model)")
    parser.add_argument("--projects", nargs="+", default=list(PROJECTS))
    parser.add_argument("--cuts", type=int, default=60, help="cuts per project")
    parser.add_argument("--context-chars", type=int, default=2000, help="characters of the file before the cut in the prompt")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--wait-s", type=float, default=20.0, help="longest wait for the server per step")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="benchmarks/results/monitors.json")
    args = parser.parse_args(argv)
    # a terminated run still closes its language servers (the finally blocks and atexit run)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    report = run(args)
    pathlib.Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write_results(args.out, report, indent=1)
    print_table(report)


if __name__ == "__main__":
    main()
