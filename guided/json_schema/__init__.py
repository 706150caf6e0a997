"""JSON Schema front end: a schema in, the grammar engine's data out, as a constraint.

    >>> from guided.json_schema import JSONSchema
    >>> JSONSchema({"type": "object", "properties": {"n": {"type": "integer"}}}).start(vocab)

The pipeline, one module per step: ``ir`` normalises the schema (drafts, ``$ref``, ``allOf``
merged, ``anyOf``/``oneOf``/``not``/``if`` as branches); ``regex`` and ``formats`` give the
languages of strings and numbers as code-point automata; ``grammar`` builds one rule per schema
position; ``engine_spec`` turns that into the engine's :class:`~guided.grammars.lark_loader.GrammarSpec`
with lazily built byte-DFA terminals; ``schema`` is the :class:`JSONSchema` constraint. This package
imports the grammar engine (``guided.grammars``) and nothing from samplers or surfaces.
"""

from guided.json_schema.schema import (
    InvalidSchemaError,
    JSONSchema,
    UnsatisfiableSchemaError,
    UnsupportedSchemaError,
    schema_to_lark,
)

__all__ = ["JSONSchema", "UnsupportedSchemaError", "InvalidSchemaError", "UnsatisfiableSchemaError", "schema_to_lark"]
