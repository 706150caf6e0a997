"""``JSONSchema``: a constraint whose outputs are the JSON texts a JSON Schema accepts.

    >>> c = JSONSchema({"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]})
    >>> state = c.start(vocab)                      # a Grammar constraint underneath
    >>> print(c.grammar_text)                       # the generated Lark grammar

    >>> class Point(pydantic.BaseModel):
    ...     x: int
    ...     y: int = 0
    >>> JSONSchema.from_pydantic(Point)

The schema compiles to a grammar (:mod:`guided.json_schema.grammar`) whose string
and number terminals are built from their languages as the lexer reaches their states
(:mod:`guided.json_schema.engine_spec`), so a ``maxLength: 100000`` costs nothing up front;
:class:`guided.grammars.Grammar` turns it into token masks.  ``grammar_text`` is the same
grammar as Lark text.  Soundness comes first: a JSON
text the schema rejects is never accepted.  Some valid texts are not accepted either
(see *Completeness* below); every keyword that cannot be compiled exactly raises
:class:`UnsupportedSchemaError` naming the keyword and its JSON pointer.

Supported: ``type`` (and lists), ``enum``, ``const``, ``properties``, ``required``,
``additionalProperties`` (true/false/schema), ``patternProperties`` (up to 4 patterns per
object), ``propertyNames`` (string constraints), ``minProperties``/``maxProperties``,
``dependentRequired``/``dependentSchemas``/``dependencies``, ``items``/``prefixItems``/
``additionalItems``, ``minItems``/``maxItems``, ``minLength``/``maxLength`` (characters
after unescaping), ``pattern`` (ECMA-262; several patterns, formats and lengths are
intersected), ``format`` (date, time, date-time, email, hostname, ipv4, ipv6, uuid, uri,
uri-reference, iri, iri-reference, json-pointer, relative-json-pointer, duration),
``minimum``/``maximum``/``exclusiveMinimum``/``exclusiveMaximum`` (draft-4 boolean forms
too; numbers compare as exact decimals), ``multipleOf`` (any step ``a/10**k`` with a
small divisibility automaton; few multiples on a bounded range are listed), ``anyOf``,
``allOf`` (merged), ``oneOf`` (exact: disjoint branches are a union, otherwise each
branch is intersected with the complement of the others), ``not`` and
``if``/``then``/``else`` (exact complements of type, enum/const, lengths, pattern,
ranges, required, properties, ``additionalProperties: false``, item and property counts),
``$ref``/``$defs``/``definitions``/``$id``/``$anchor`` (recursive schemas included; no
network), boolean schemas, drafts 4, 6, 7, 2019-09 and 2020-12 (``$schema``; default
2020-12; an unknown ``$schema`` is refused).  A keyword the declared draft does not have is
an annotation there, as every validator of that draft treats it (draft-04 ``const`` and
``propertyNames``, draft-06 ``if``/``then``/``else``, 2019-09's keywords before 2019-09);
up to draft 7 a ``$ref`` hides its sibling keywords.  ``unevaluatedProperties``/
``unevaluatedItems`` only where they equal ``additionalProperties``/``items``.

``uniqueItems: true`` is exact where the items come from a finite set (``enum``, ``const``,
``boolean``, ``null`` and their combinations, enum values that are objects or arrays
included; equal numbers such as ``1`` and ``1.0`` are one value): the parser state
carries the set of values written, and an item equal to an earlier one is never allowed.
It is exact too where the items are strings (any ``maxLength``, ``format`` or
``pattern``) or integers: the grammar state carries the values of the array's items
(:mod:`guided.grammars.distinct`; ``"a"`` and ``"\\u0061"`` are one value, so are ``0``
and ``-0``), a token that would end an item equal to an earlier one is masked, and so is
one that stops at a prefix whose every completion was already written.  An item language of
at most 3,000 values also caps the array's length at its number of values; a larger finite
one (``maxLength: 2`` strings) could run out of new values only past 3,000 items, which is
not counted.

Refused (``UnsupportedSchemaError``, with keyword and JSON pointer): ``uniqueItems: true``
over other infinite item sets (non-integer numbers, whose equal values have spellings no
regular language pairs up, ``1`` = ``10e-1`` = ``100e-2``; objects, arrays, any value) or
with ``prefixItems`` over an infinite set, ``contains``, formats ``regex``/``uri-template``/``idn-email``/``idn-hostname``,
``$dynamicRef`` to dynamic anchors, remote ``$ref``, negations and overlapping ``oneOf``
branches whose complement is not expressible (``format``, ``multipleOf``,
``patternProperties``, ``items``...), patterns with back-references, lookaround, word
boundaries or ``\\p{...}``, ``multipleOf`` steps without a small regex, terminals too
large for the lexer.  A refused keyword that cannot matter (``uniqueItems`` where no
array is allowed) is not an error.  Unknown keywords (``title``, ``x-...``) and unknown
formats are annotations and are ignored, as the specification says.

``strict=False`` relaxes exactly these refusals: ``uniqueItems``, ``contains``,
``unevaluated*``, the unsupported formats and unsupported patterns are ignored, and
overlapping ``oneOf`` branches become ``anyOf``.  Soundness may then be lost *only* for
those keywords (an array with duplicates, a string matching no pattern, a value matching
two ``oneOf`` branches can be accepted).  ``assert_formats=False`` treats ``format`` as
an annotation (the 2020-12 default); by default known formats are enforced, which only
accepts less.

Completeness (valid texts that are *not* accepted, by design):

* with ``property_order="schema"`` (the default), named properties appear in the schema's
  ``properties`` order (``allOf`` parts in order, then ``required`` names); unnamed
  properties may come first or after any member.  With ``property_order="any"`` named
  properties come in any order, each at most once (the parser state carries the set
  written; sets are made as a generation reaches them, so 30 properties never mean 2^30
  states); an unnamed key may still repeat (its language is infinite; duplicate
  keys are a matter for the JSON parser, which keeps the last);
* strings constrained by a pattern, format or length accept printable ASCII raw, the
  short escapes, and ``\\uXXXX`` only for control characters (non-ASCII raw, as
  ``json.dumps(..., ensure_ascii=False)`` writes it); property names and enum strings
  only in ``json.dumps`` spelling; unconstrained strings accept every JSON spelling;
* ``"type": "integer"`` (and integer ``enum``/``const`` values under it) is written in
  integer syntax only, ``-?(0|[1-9][0-9]*)``: ``1.0`` and ``1e0`` are rejected although
  JSON Schema counts them as integers.  Deliberate: accepting ``1.0`` means accepting
  ``1.000...`` with any number of zeros, a loop a small model falls into.  ``number``
  keeps every spelling (an integral ``multipleOf`` on a number still takes ``2.0``);
  bounded numbers are plain decimals, plus exponent forms of magnitudes below 1 when the
  range holds them all;
* format subsets: no leap seconds, no IP-literal hosts or quoted email local parts,
  host names of at most 4 labels of at most 62 characters and no ``xn--`` labels.

Length limits are exact for every pattern: a limit too large to write into the regex
(``^(?:\\S+\\s+){0,29}\\S+$`` with ``maxLength: 300``) is kept as a limit, and the
terminal's automaton counts characters as it reads them.

Whitespace between tokens (``whitespace=``):

* ``"bounded"`` (default): at most one run after ``{`` ``[`` ``,`` ``:`` and before ``}`` ``]``,
  and a run is one space, or one line break followed by up to 20 spaces/tabs of
  indentation.  ``json.dumps(v)`` and ``json.dumps(v, indent=2)`` are accepted (up to 10
  levels of nesting at indent 2), but a model can never run on into whitespace.  No
  whitespace before ``,`` / ``:`` or around the whole value.
* ``"flexible"``: any JSON whitespace between any two tokens (RFC 8259).  Exact for every
  spelling, but unbounded: a weak model may emit newlines until its token budget is spent
  (the same runaway as XGrammar's ``any_whitespace`` in vLLM).
* ``"compact"``: no whitespace at all (``json.dumps(v, separators=(",", ":"))``).

Property order: ``property_order="schema"`` is the default because it serves generation:
the schema's author decides what the model writes first (a ``reasoning`` field before the
``answer`` it supports, an ``id`` before the details), every engine and API that
generates from a schema does the same, and each key position offers one key, not all the
remaining ones.  ``"any"`` is what JSON Schema means (objects are unordered): use it to
check or continue text written elsewhere, or when the model should choose the order.
``grammar_text`` then writes each order-free object as its (commented) order-free superset,
and such a kept length limit as its (commented) unlimited pattern.
"""

from __future__ import annotations

import json
from typing import Any

from guided.constraint import Constraint
from guided.grammars.grammar import Grammar
from guided.grammars.lark_loader import register_embedding
from guided.json_schema.engine_spec import engine_spec
from guided.json_schema.grammar import WHITESPACE_MODES, SchemaGrammar, build_grammar
from guided.json_schema.ir import (
    InvalidSchemaError,
    SchemaContext,
    import_jsonschema,
    UnsatisfiableSchemaError,
    UnsupportedSchemaError,
)

__all__ = ["JSONSchema", "UnsupportedSchemaError", "InvalidSchemaError", "UnsatisfiableSchemaError", "schema_to_lark"]


def _load(schema: Any) -> Any:
    if isinstance(schema, (bytes, bytearray)):
        schema = schema.decode("utf-8")
    if isinstance(schema, str):
        try:
            schema = json.loads(schema)
        except json.JSONDecodeError as exc:
            raise InvalidSchemaError(f"not valid JSON: {exc}") from None
    if isinstance(schema, type):
        try:
            from pydantic import BaseModel
        except ImportError:  # pragma: no cover
            BaseModel = None
        if BaseModel is not None and issubclass(schema, BaseModel):
            return schema.model_json_schema()
    if not isinstance(schema, (dict, bool)):
        raise InvalidSchemaError(f"a schema must be an object or a boolean, not {type(schema).__name__}")
    return schema


def _check_schema(schema: Any) -> None:
    """Validate against the metaschema of the schema's draft (InvalidSchemaError on failure)."""
    jsonschema = import_jsonschema()
    cls = jsonschema.validators.validator_for(schema if isinstance(schema, dict) else {},
                                              default=jsonschema.Draft202012Validator)
    # no format checker: "format": "regex" would be judged by Python's regex dialect
    validator = cls(cls.META_SCHEMA)
    error = jsonschema.exceptions.best_match(validator.iter_errors(schema))
    if error is not None:
        pointer = "#" + "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in error.absolute_path)
        raise InvalidSchemaError(error.message, pointer)


def schema_to_lark(
    schema: Any,
    *,
    strict: bool = True,
    whitespace: str = "bounded",
    validate: bool = True,
    assert_formats: bool = True,
    property_order: str = "schema",
) -> str:
    """The Lark grammar (start rule ``start``) for ``schema`` (a dict, bool, JSON text or pydantic model).

    With ``property_order="any"`` or ``uniqueItems`` the text's order-free objects and arrays
    are supersets (commented): the sets they remember are not context-free.
    """
    return _compile(schema, strict, whitespace, validate, assert_formats, property_order).text


def _compile(schema, strict, whitespace, validate, assert_formats, property_order="schema") -> SchemaGrammar:
    if whitespace not in WHITESPACE_MODES:
        raise ValueError(f"whitespace must be one of {', '.join(WHITESPACE_MODES)}, not {whitespace!r}")
    if property_order not in ("schema", "any"):
        raise ValueError("property_order must be 'schema' or 'any'")
    schema = _load(schema)
    if validate:
        _check_schema(schema)
    ctx = SchemaContext(schema, strict=strict, assert_formats=assert_formats)
    return build_grammar(ctx, whitespace=whitespace, property_order=property_order)


class JSONSchema(Constraint):
    """Output must be a JSON text valid under ``schema`` (see the module docstring for details).

    ``schema``: a dict, a bool, JSON text, or a pydantic model class.  ``strict``: refuse
    keywords that cannot be compiled exactly (default) or relax them as documented.
    ``whitespace``: ``"bounded"`` (default), ``"flexible"`` or ``"compact"`` (module docstring).
    ``validate``: check the schema against its draft's metaschema first (``InvalidSchemaError``).
    ``property_order``: ``"schema"`` (default: named properties in the schema's order, which
    keeps the author's order for generation) or ``"any"`` (any order, each at most once, as
    JSON Schema means).
    Compilation happens here, so schema errors raise at construction.
    """

    def __init__(
        self,
        schema: Any,
        *,
        strict: bool = True,
        whitespace: str = "bounded",
        validate: bool = True,
        assert_formats: bool = True,
        property_order: str = "schema",
    ):
        super().__init__()
        self.schema = _load(schema)
        self.strict = strict
        self.whitespace = whitespace
        self.property_order = property_order
        self._schema_grammar = _compile(self.schema, strict, whitespace, validate, assert_formats, property_order)
        # the engine's rules and automata straight from the compiler (no Lark text round trip)
        self._grammar = Grammar.from_spec(engine_spec(self._schema_grammar), text=lambda: self._schema_grammar.text)

    @property
    def grammar_text(self) -> str:
        """The Lark grammar this schema compiles to (``Grammar(c.grammar_text)`` is the same constraint)."""
        return self._schema_grammar.text

    @classmethod
    def from_pydantic(cls, model, **kwargs) -> "JSONSchema":
        """From a pydantic v2 model class (its ``model_json_schema()``)."""
        return cls(model.model_json_schema(), **kwargs)

    def __repr__(self) -> str:
        return (f"JSONSchema(<{len(json.dumps(self.schema))} chars>, strict={self.strict}, whitespace={self.whitespace!r}, "
                f"property_order={self.property_order!r})")

    @property
    def grammar(self):
        """The :class:`guided.grammars.Grammar` this schema compiles to."""
        return self._grammar

    def compile(self, vocab):
        return self.grammar.compiled_for(vocab)

    def initial_state(self, compiled, vocab):
        return self.grammar.initial_state(compiled, vocab)


def _embedded_json(schema: Any):
    """``%json {...}`` inside a Lark grammar: the schema's grammar data (bounded whitespace)."""
    return JSONSchema(schema).grammar.compiled.spec


register_embedding("json", _embedded_json)
