"""DotPrompts-style evaluation of the dereference monitor on real installed Python projects.

    python benchmarks/monitors.py                         # default model, 3 projects, 40 cuts each
    python benchmarks/monitors.py --model path/to/hf-model --cuts 20 --out monitors.json

Projects: the pure-Python packages ``parso``, ``jedi`` and ``lark`` as installed in this
environment (they are on every machine that runs guided's monitors: jedi-language-server needs
jedi and parso, guided's grammars need lark). Each is split across many modules whose types are
used across files (parso's parser builds ``parso.python.tree`` nodes; jedi's API wraps
``jedi.inference`` values; lark's parsers use ``lark.lexer``/``lark.tree`` classes), so a
dereference often targets a member defined in *another* module, which the model cannot see.

A *cut* is a position right after ``obj.`` in a file of the project, where ``obj`` is a name
and jedi resolves the member to a definition in another module of the same project. The model
gets the file up to the cut (nothing else) and completes the line, greedily, with and without
``DereferenceMonitor`` (same line-regex constraint in both runs, AWRS at temperature 0 = the
constrained argmax). Reported per project and overall:

- next-identifier exact match: the identifier generated right after the dot equals the original;
- non-existent attribute rate: the generated identifier is not a member jedi knows for the
  receiver at that position (the same engine the language server runs, queried independently
  here through jedi's library), and, as a check independent of jedi, it is not defined anywhere
  in the project's sources.

Writes a JSON report (``--out``); prints a table.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import json
import pathlib
import random
import re
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

PROJECTS = ("parso", "jedi", "lark")
_IDENT = re.compile(r"[A-Za-z_]\w*")


def package_dir(name: str) -> pathlib.Path:
    return pathlib.Path(importlib.import_module(name).__file__).resolve().parent


def defined_names(pkg: pathlib.Path) -> set[str]:
    """Every name a def/class/assignment/attribute-assignment in the project introduces."""
    names: set[str] = set()
    for path in pkg.rglob("*.py"):
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
            elif isinstance(node, ast.arg):
                names.add(node.arg)
            elif isinstance(node, ast.alias):
                names.add((node.asname or node.name).split(".")[0])
    return names


def find_cuts(name: str, per_project: int, rng: random.Random) -> list[dict]:
    """Cuts ``obj.|attr`` whose member jedi resolves to another module of the project."""
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
        nodes = [n for n in ast.walk(tree) if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name)]
        rng.shuffle(nodes)
        script = jedi.Script(source, path=str(path), project=project)
        for node in nodes[:6]:
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
            if module == path.resolve() or pkg not in module.parents:
                continue
            cut = offsets[line - 1] + col
            try:  # keep cuts where the member is in jedi's list there (the server can resolve it)
                lines_before = source[:cut].split("\n")
                listed = {c.name for c in jedi.Script(source[:cut], path=str(path), project=project).complete(
                    len(lines_before), len(lines_before[-1]))}
            except Exception:  # noqa: BLE001
                continue
            if node.attr not in listed:
                continue
            cuts.append(
                {"project": name, "root": str(root), "file": str(path.relative_to(root)),
                 "cut": cut, "target": node.attr, "line": lines[line - 1].rstrip("\n"),
                 "defined_in": str(module.relative_to(root))}
            )
            if len(cuts) >= per_project:
                return cuts
    return cuts


def jedi_members(cut: dict, prefix: str) -> set[str]:
    import jedi

    project = jedi.Project(cut["root"], added_sys_path=[cut["root"]])
    script = jedi.Script(prefix, path=str(pathlib.Path(cut["root"]) / cut["file"]), project=project)
    lines = prefix.split("\n")
    return {c.name for c in script.complete(len(lines), len(lines[-1]))}


def first_identifier(text: str) -> str:
    m = _IDENT.match(text)
    return m.group() if m else ""


def run(args) -> dict:
    import guided
    from guided.monitors import DereferenceMonitor, LanguageServerSession

    if args.model:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(args.model)
        model = AutoModelForCausalLM.from_pretrained(args.model).eval()
        model_name = args.model
    else:
        model, tokenizer = guided.load_default_model()
        model_name = "guided default model"
    rng = random.Random(args.seed)
    line = guided.Regex(r"[^\n]{0,200}\n")
    rows = []
    for name in args.projects:
        defined = defined_names(package_dir(name))
        cuts = find_cuts(name, args.cuts, rng)
        print(f"{name}: {len(cuts)} cuts", file=sys.stderr)
        for cut in cuts:
            source = (pathlib.Path(cut["root"]) / cut["file"]).read_text(encoding="utf-8")
            prefix = source[: cut["cut"]]
            prompt = prefix[-args.context_chars :]
            members = jedi_members(cut, prefix)
            row = dict(cut, members=len(members))
            for mode in ("plain", "monitor"):
                constraint = line
                session = None
                if mode == "monitor":
                    session = LanguageServerSession(cut["root"], cut["file"], prefix=prefix, wait_s=args.wait_s)
                    constraint = DereferenceMonitor(session) & line
                started = time.perf_counter()
                try:
                    text = guided.generate(
                        model, tokenizer, prompt, constraint, max_new_tokens=args.max_new_tokens,
                        temperature=0.0, add_special_tokens=True,
                    )
                finally:
                    if session is not None:
                        session.close()
                ident = first_identifier(text)
                row[mode] = {
                    "text": text, "identifier": ident, "match": ident == cut["target"],
                    "not_a_member": bool(members) and ident not in members,
                    "not_defined_in_project": ident not in defined and not hasattr(object, ident),
                    "seconds": time.perf_counter() - started,
                }
            rows.append(row)
            print(f"  {cut['file']}:{cut['target']:<20} plain={row['plain']['identifier']!r:<22} "
                  f"monitor={row['monitor']['identifier']!r}", file=sys.stderr)
    return {"model": model_name, "rows": rows, "summary": summarise(rows, args.projects)}


def summarise(rows: list[dict], projects) -> dict:
    out = {}
    for group in [*projects, "all"]:
        sel = [r for r in rows if group == "all" or r["project"] == group]
        if not sel:
            continue
        entry = {"cuts": len(sel)}
        for mode in ("plain", "monitor"):
            n = len(sel)
            entry[mode] = {
                "next_identifier_match": sum(r[mode]["match"] for r in sel) / n,
                "non_existent_member_rate": sum(r[mode]["not_a_member"] for r in sel) / n,
                "undefined_in_project_rate": sum(r[mode]["not_defined_in_project"] for r in sel) / n,
                "mean_seconds": sum(r[mode]["seconds"] for r in sel) / n,
            }
        out[group] = entry
    return out


def print_table(report: dict) -> None:
    print(f"model: {report['model']}")
    print(f"{'project':<8} {'cuts':>4} | {'match plain':>11} {'match mon':>9} | "
          f"{'non-member plain':>16} {'non-member mon':>14} | {'undefined plain':>15} {'undefined mon':>13}")
    for group, e in report["summary"].items():
        p, m = e["plain"], e["monitor"]
        print(f"{group:<8} {e['cuts']:>4} | {p['next_identifier_match']:>11.1%} {m['next_identifier_match']:>9.1%} | "
              f"{p['non_existent_member_rate']:>16.1%} {m['non_existent_member_rate']:>14.1%} | "
              f"{p['undefined_in_project_rate']:>15.1%} {m['undefined_in_project_rate']:>13.1%}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="a Hugging Face causal-LM folder (default: guided's default model)")
    parser.add_argument("--projects", nargs="+", default=list(PROJECTS))
    parser.add_argument("--cuts", type=int, default=40, help="cuts per project")
    parser.add_argument("--context-chars", type=int, default=1200, help="characters of the file before the cut given as prompt")
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--wait-s", type=float, default=20.0, help="longest wait for the server per step")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="monitors_benchmark.json")
    args = parser.parse_args(argv)
    report = run(args)
    pathlib.Path(args.out).write_text(json.dumps(report, indent=1))
    print_table(report)


if __name__ == "__main__":
    main()
