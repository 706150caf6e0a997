"""Constrained decoding for diffusion LMs: infilling checks, multi-region infilling, generation.

    /tmp/venv/bin/python examples/diffusion.py

1. Ask whether partial outputs (known pieces and holes of so many tokens) can still become
   JSON, and get a completion that proves it.
2. Multi-region infilling, as in code editing: a C-like function with holes in three places.
3. Generate JSON for a schema with a masked-diffusion model: guided's own diffusion model when it
   is present, else a tiny randomly initialised one (whose tokens are noise, which shows that
   the output parses anyway).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from guided.diffusion import Hole, InfillingChecker, generate  # noqa: E402
from guided.grammars import Grammar, load_grammar  # noqa: E402
from guided.json_schema import JSONSchema  # noqa: E402
from guided.tokenizers import load_tokenizer  # noqa: E402

C_LIKE = r"""
start: function+
function: type NAME "(" [params] ")" block
params: param ("," param)*
param: type NAME
type: "int" | "float" | "void"
block: "{" statement* "}"
?statement: type NAME ["=" expr] ";" | expr ";" | "return" [expr] ";"
    | "if" "(" expr ")" statement ["else" statement] | block
?expr: NAME "=" expr | sum | sum CMP sum
?sum: atom | sum OP atom
?atom: NUMBER | NAME | NAME "(" [expr ("," expr)*] ")" | "(" expr ")"
CMP: "==" | "<" | ">"
OP: "+" | "-" | "*" | "/"
NAME: /[a-zA-Z_][a-zA-Z_0-9]*/
NUMBER: /[0-9]+/
%ignore /[ \t\n]+/
"""


def main() -> None:
    tok = load_tokenizer("llama3")

    print("1. Can it still be JSON?")
    checker = InfillingChecker(load_grammar("json"), tok)
    cases = [
        [b'{"name": ', Hole(2), b', "age": 7}'],
        [b'{"name": ', Hole(1), b' "age": 7}'],  # one token must end the value and add the comma
        [b'[1, 2', Hole.up_to(3)],
        [b'[[[[[[[[', Hole(1)],  # no token closes eight brackets
        [Hole(3), b'"x": [1, 2', Hole.up_to(4)],
    ]
    for parts in cases:
        r = checker.result(parts)
        shown = " ".join(repr(p) if isinstance(p, Hole) else p.decode() for p in parts)
        filled = r.text(checker.vocab).decode() if r.ok else "-"
        print(f"   {shown:45s} -> {r.ok!s:5s} ({r.how:8s}) e.g. {filled!r}")

    print("\n2. Multi-region infilling of a function (holes of 3, 2 and up to 6 tokens)")
    code = InfillingChecker(Grammar(C_LIKE), tok)
    parts = [b"int add(int a, int b) {\n  int s = ", Hole(3), b";\n  if (s > ", Hole(2), b") return s;\n", Hole.up_to(6), b"}\n"]
    r = code.result(parts)
    print("  ", r.ok, r.how)
    print("   " + r.text(code.vocab).decode().replace("\n", "\n   "))

    print("3. Generation with a masked-diffusion model")
    try:
        from guided.models import load_diffusion_model

        model, mtok = load_diffusion_model()
        label = "guided's diffusion model"
    except Exception:  # noqa: BLE001 - the shipped model may be absent in a source checkout
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        from diffusion.test_generate import tiny_model

        model, mtok, label = tiny_model(), tok, "a tiny random model (noise)"
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string", "maxLength": 12}, "age": {"type": "integer", "minimum": 0}},
        "required": ["name", "age"],
    }
    constraint = JSONSchema(schema)
    for seed in range(2):
        out = generate(
            model, mtok, '{"name": "Ann", "age": 31}<|end_of_text|>', constraint,
            length=32, steps=32, block_length=8, temperature=0.8, seed=seed, return_details=True,
        )
        print(f"   {label}: {out.text!r} -> json.loads: {json.loads(out.text)}")
        print(f"      {out.steps} model calls ({out.forward_seconds:.2f}s), {out.checks} checks ({out.check_seconds:.2f}s)")
        unconstrained = generate(model, mtok, '{"name": "Ann", "age": 31}<|end_of_text|>', None, length=32, steps=32, block_length=8, temperature=0.8, seed=seed)
        print(f"      unconstrained: {unconstrained[:60]!r}")


if __name__ == "__main__":
    main()
