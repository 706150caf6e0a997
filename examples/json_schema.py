"""JSON Schema and pydantic models as constraints.

    python examples/json_schema.py

A pydantic model (or a JSON Schema dict) becomes a ``guided.JSONSchema`` constraint: only
JSON texts the schema accepts can be generated.  The script shows the compiled grammar's
size, a refused keyword with its location, the token-level accept rule, and generation
with the embedded default model.
"""

from __future__ import annotations

import json
from typing import Literal, Optional

import pydantic

import guided
from guided.json_schema import JSONSchema, UnsupportedSchemaError


class Address(pydantic.BaseModel):
    city: str = pydantic.Field(max_length=20)
    zip: str = pydantic.Field(pattern=r"^[0-9]{5}$")


class Person(pydantic.BaseModel):
    name: str = pydantic.Field(min_length=1, max_length=12)
    age: int = pydantic.Field(ge=0, le=130)
    role: Literal["admin", "user"] = "user"
    address: Optional[Address] = None


def main() -> None:
    constraint = JSONSchema.from_pydantic(Person)
    print(f"Person -> {constraint.grammar_text.count(chr(10))} grammar lines")

    # Keywords that cannot be compiled exactly are refused, with their JSON pointer.
    try:
        JSONSchema({"type": "array", "items": {"type": "string"}, "uniqueItems": True})
    except UnsupportedSchemaError as exc:
        print("refused:", exc)

    # Token by token with the real Llama-3 tokenizer: every token allowed, then EOS.
    tokenizer = guided.load_tokenizer("llama3")
    vocab = guided.Vocabulary.from_tokenizer(tokenizer)
    for value in ({"name": "Ada", "age": 36, "role": "admin"}, {"name": "Ada", "age": 200}):
        state = constraint.start(vocab)
        ok = True
        for token in tokenizer.encode(json.dumps(value), add_special_tokens=False):
            if not state.allowed_mask()[token]:
                ok = False
                break
            state = state.advance(token)
        ok = ok and bool(state.allowed_mask()[tokenizer.eos_token_id])
        print(f"{json.dumps(value):45} accepted={ok}")

    # Generation with the embedded default model (the output always parses and validates).
    model, model_tokenizer = guided.load_default_model()
    text = guided.generate(model, model_tokenizer, "A person as JSON: ", constraint, seed=0, max_new_tokens=80)
    print("generated:", text)
    if text.strip().endswith("}"):
        print("validated:", Person.model_validate_json(text))


if __name__ == "__main__":
    main()
