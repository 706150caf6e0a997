"""The main demo: JSON from a schema and a Python function from a grammar, on the embedded model.

    python -m guided.demo            (what ``./dev demo`` runs)
"""

from __future__ import annotations

import ast
import json
import time

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 20},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "email": {"type": "string", "format": "email", "maxLength": 30},
    },
    "required": ["name", "age"],
    "additionalProperties": False,
}

JSON_PROMPT = '{"name": "Ada Lovelace", "age": 36, "email": "ada@example.com"}\n'
PYTHON_PROMPT = "import os\n\n\ndef join_paths(root, name):\n    return os.path.join(root, name)\n\n\n"


def main() -> None:
    import guided
    from guided.grammars import load_grammar
    from guided.models import load_default_model

    model, tokenizer = load_default_model()
    print(f"embedded model: {model.config.model_type}, {model.num_parameters() / 1e6:.1f}M parameters, CPU")

    schema = guided.JSONSchema(SCHEMA, whitespace="compact")
    t = time.perf_counter()
    text = guided.generate(model, tokenizer, JSON_PROMPT, schema, max_new_tokens=80, temperature=0.7, seed=1)
    print(f"\n1. JSON constrained by a schema (AWRS, {time.perf_counter() - t:.1f} s):\n   {text}")
    valid = _validates(text)
    print(f"   parses as JSON and validates against the schema: {valid}")

    function = load_grammar("python", start="funcdef")
    t = time.perf_counter()
    out = guided.generate(
        model, tokenizer, PYTHON_PROMPT, function, max_new_tokens=64, temperature=0, return_details=True
    )
    text = out.text
    print(f"\n2. Python function constrained by the Python grammar (AWRS, {time.perf_counter() - t:.1f} s):")
    print("   " + text.replace("\n", "\n   "))
    if out.finished[0]:
        print(f"   complete; parses with Python's own ast.parse: {_parses(text)}")
    else:
        # The grammar guarantees a viable prefix: the state after the last token can still finish.
        state = function.start(tokenizer).advance_many(out.token_ids[0])
        print(f"   stopped at max_new_tokens; still a valid Python prefix: {state is not None and state.is_live()}")


def _validates(text: str) -> bool:
    import jsonschema

    try:
        jsonschema.validate(json.loads(text), SCHEMA, format_checker=jsonschema.FormatChecker())
        return True
    except (ValueError, jsonschema.ValidationError):
        return False


def _parses(text: str) -> bool:
    try:
        ast.parse(text)
        return True
    except SyntaxError:
        return False


if __name__ == "__main__":
    main()
