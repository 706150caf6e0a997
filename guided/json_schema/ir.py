"""JSON Schema normalisation: references, applicators and keyword merging.

A schema position is a :class:`Sub` (the raw schema, its ``$ref`` resolver, its JSON
pointer).  :meth:`SchemaContext.expand` rewrites it into disjunctive normal form: a list
of *branches*, each a tuple of parts whose local keywords all apply (``$ref``, ``allOf``
merge into a branch; ``anyOf``, ``oneOf``, ``if``/``then``/``else``, ``not`` and the
``dependent*`` keywords split into branches).  :meth:`SchemaContext.merge` folds one
branch's local keywords into a :class:`Shape`: per JSON type, the constraints the grammar
builder (:mod:`guided.json_schema.grammar`) turns into rules and terminals.
Sub-schemas (property values, items) stay lazy, as tuples of :class:`Sub`, so recursive
schemas need no unrolling.

Exactness: every rewrite here is an equivalence.  Where one is not available (overlapping
``oneOf`` branches whose complement cannot be expressed, ``uniqueItems``, ``contains``,
negated ``format``...) :class:`UnsupportedSchemaError` names the keyword and its JSON
pointer; with ``strict=False`` those keywords are relaxed as documented on
:class:`guided.json_schema.JSONSchema`.
"""

from __future__ import annotations

import json
import math
import threading
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from guided.constraint import ConstraintError
from guided.json_schema import regex as rx
from guided.json_schema.formats import KNOWN_FORMATS, UNSUPPORTED_FORMATS, format_language, to_decimal

__all__ = [
    "UnsupportedSchemaError",
    "InvalidSchemaError",
    "UnsatisfiableSchemaError",
    "Sub",
    "Shape",
    "SchemaContext",
    "TYPES",
    "json_type",
    "json_equal",
]


class UnsupportedSchemaError(ConstraintError):
    """A schema keyword that cannot be compiled exactly; ``keyword`` and ``pointer`` locate it."""

    def __init__(self, keyword: str, pointer: str, reason: str = ""):
        self.keyword = keyword
        self.pointer = pointer or "#"
        self.reason = reason
        msg = f"unsupported JSON Schema keyword {keyword!r} at {self.pointer}"
        super().__init__(msg + (f": {reason}" if reason else ""))


class InvalidSchemaError(ConstraintError):
    """The schema is not a valid JSON Schema (or not valid JSON); ``pointer`` locates the problem."""

    def __init__(self, message: str, pointer: str = "#"):
        self.pointer = pointer or "#"
        super().__init__(f"invalid JSON Schema at {self.pointer}: {message}")


class UnsatisfiableSchemaError(ConstraintError):
    """No JSON value satisfies the schema, so no output can be generated."""


TYPES = ("null", "boolean", "integer", "number", "string", "array", "object")
ALL_TYPES = frozenset(TYPES)
MAX_BRANCHES = 256
MAX_NAMED_PATTERN_REGIONS = 16

# Keywords that only annotate (or that this module reads elsewhere): never constraints.
ANNOTATIONS = frozenset(
    {
        "$schema", "$id", "id", "$anchor", "$dynamicAnchor", "$recursiveAnchor", "$vocabulary", "$comment",
        "$defs", "definitions", "title", "description", "default", "examples", "example", "deprecated",
        "readOnly", "writeOnly", "contentMediaType", "contentEncoding", "contentSchema",
    }
)
APPLICATORS = frozenset(
    {"$ref", "allOf", "anyOf", "oneOf", "not", "if", "then", "else", "dependentSchemas", "dependencies",
     "dependentRequired", "$dynamicRef", "$recursiveRef"}
)
_GUIDED = "$guided:"  # synthetic keywords produced by negation


def json_type(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int):
        return "integer"
    if isinstance(v, float):
        return "integer" if v.is_integer() else "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    if isinstance(v, dict):
        return "object"
    raise TypeError(f"not a JSON value: {v!r}")


def json_equal(a: Any, b: Any) -> bool:
    """JSON Schema equality: numbers by value, booleans distinct from numbers."""
    ta, tb = json_type(a), json_type(b)
    num = ("integer", "number")
    if ta in num and tb in num:
        return to_decimal(a) == to_decimal(b)
    if ta != tb:
        return False
    if ta == "array":
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b))
    if ta == "object":
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    return a == b


def _types_of(value, pointer: str) -> frozenset:
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not all(isinstance(t, str) for t in names):
        raise InvalidSchemaError("'type' must be a string or a list of strings", pointer)
    out = set()
    for t in names:
        if t not in ALL_TYPES:
            if t == "any":  # draft 3
                out |= ALL_TYPES
                continue
            raise InvalidSchemaError(f"unknown type {t!r}", pointer)
        out.add(t)
    return _norm_types(out)


def _norm_types(ts) -> frozenset:
    ts = set(ts)
    if "number" in ts:
        ts.discard("integer")
    return frozenset(ts)


def _intersect_types(a: frozenset, b: frozenset) -> frozenset:
    ea = set(a) | ({"integer"} if "number" in a else set())
    eb = set(b) | ({"integer"} if "number" in b else set())
    return _norm_types(ea & eb)


def _escape_pointer(token) -> str:
    return str(token).replace("~", "~0").replace("/", "~1")


@dataclass(eq=False)
class Sub:
    """A schema at a position: the raw value, its reference resolver and its JSON pointer."""

    schema: Any
    resolver: Any
    pointer: str

    def __repr__(self) -> str:
        return f"Sub({self.pointer})"


@dataclass
class ObjPart:
    props: dict  # name -> Sub
    patterns: list  # [(pattern text, Sub, pointer)]
    additional: Sub | None  # None: anything


@dataclass
class ArrPart:
    prefix: list  # [Sub]
    rest: Sub | None  # None: anything


@dataclass
class Shape:
    """One branch's constraints, by JSON type (the types allowed are ``types``)."""

    types: frozenset = ALL_TYPES
    enum: list | None = None
    not_in: list = field(default_factory=list)
    # numbers
    lo: Decimal | None = None
    lo_strict: bool = False
    hi: Decimal | None = None
    hi_strict: bool = False
    multiple_of: list = field(default_factory=list)  # [(Decimal, pointer)]
    non_integer: bool = False
    # strings
    min_len: int = 0
    max_len: int | None = None
    langs: list = field(default_factory=list)  # [(kind, value, pointer)] kind in pattern/format/lang
    # arrays
    arr_parts: list = field(default_factory=list)
    min_items: int = 0
    max_items: int | None = None
    unique: str | None = None  # the pointer of a "uniqueItems": true
    # objects
    obj_parts: list = field(default_factory=list)
    required: list = field(default_factory=list)
    prop_names: list = field(default_factory=list)  # [Sub]
    min_props: int = 0
    max_props: int | None = None
    # complemented "additionalProperties: false": some key outside (names, patterns) exists
    outside: list = field(default_factory=list)
    # refused keywords, raised only if their type survives: [(keyword, pointer, reason, type)]
    pending: list = field(default_factory=list)
    # parts the branch was built from (for messages and value checks)
    pointer: str = "#"
    plain: bool = True  # only type/enum constraints (enum values need no validator)

    def has(self, t: str) -> bool:
        return t in self.types or (t == "integer" and "number" in self.types)


def _lower(a, a_strict, b, b_strict):
    if a is None:
        return b, b_strict
    if b is None or a > b:
        return a, a_strict
    if b > a:
        return b, b_strict
    return a, a_strict or b_strict


def _upper(a, a_strict, b, b_strict):
    if a is None:
        return b, b_strict
    if b is None or a < b:
        return a, a_strict
    if b < a:
        return b, b_strict
    return a, a_strict or b_strict


class SchemaContext:
    """Reference resolution, DNF expansion, merging and negation for one root schema."""

    def __init__(self, schema: Any, *, strict: bool = True, assert_formats: bool = True):
        import referencing.jsonschema as rj
        from referencing import Registry

        self.strict = strict
        self.assert_formats = assert_formats
        self.synthetic: dict = {}  # cache key -> synthetic dict (kept alive, stable ids)
        self._expanded: dict[int, list] = {}
        self._negated: dict[int, list] = {}
        self._shape_cache: dict = {}
        uri = schema.get("$schema", "") if isinstance(schema, dict) else ""
        if not isinstance(uri, str):
            raise InvalidSchemaError("$schema must be a string", "#/$schema")
        if uri:
            try:
                self.spec = rj.specification_with(uri)
            except Exception:  # noqa: BLE001 - referencing.UnknownDialect
                raise UnsupportedSchemaError(
                    "$schema", "#/$schema", f"unknown dialect {uri!r} (its vocabularies cannot be known offline)"
                ) from None
        else:
            self.spec = rj.DRAFT202012
        self.draft = {"draft2019-09": 2019, "draft-07": 7, "draft-06": 6, "draft-04": 4, "draft-03": 3}.get(self.spec.name, 2020)
        if self.draft == 3:
            raise UnsupportedSchemaError("$schema", "#", "draft 3 schemas are not supported")
        # keywords the declared draft does not have are annotations there (as every
        # validator of that draft treats them): a draft-4 "const" or "if" constrains nothing
        self.foreign = frozenset(k for k, (first, last) in _KEYWORD_DRAFTS.items() if not first <= self.draft <= last)
        self._in_draft_copies: dict[int, tuple] = {}
        resource = self.spec.create_resource(schema)
        try:
            from jsonschema_specifications import REGISTRY as _SPECS

            registry = _SPECS
        except ImportError:  # pragma: no cover
            registry = Registry()
        self.base_uri = resource.id() or ""
        registry = registry.with_resource(self.base_uri, resource)
        try:
            # crawling finds embedded $id/$anchor targets; a value where its draft expects a
            # schema can trip the crawler, and then only pointer references resolve
            registry = registry.crawl()
        except Exception:  # noqa: BLE001 - referencing raises plain AttributeError/TypeError here
            pass
        self.registry = registry
        self.root = Sub(self.in_draft(schema), self.registry.resolver(base_uri=self.base_uri), "#")
        self._validator = None

    # -- positions -------------------------------------------------------------------
    def child(self, sub: Sub, value: Any, *path) -> Sub:
        pointer = sub.pointer + "".join("/" + _escape_pointer(p) for p in path)
        resolver = sub.resolver
        if isinstance(value, dict) and ("$id" in value or (self.draft == 4 and isinstance(value.get("id"), str))):
            try:
                resolver = resolver.in_subresource(self.spec.create_resource(value))
            except Exception:  # noqa: BLE001 - a malformed $id: keep the outer base
                pass
        return Sub(self.in_draft(value), resolver, pointer)

    def in_draft(self, value: Any) -> Any:
        """``value`` without the keywords its draft does not have (one stable copy per object)."""
        if not self.foreign or not isinstance(value, dict) or self.foreign.isdisjoint(value):
            return value
        hit = self._in_draft_copies.get(id(value))
        if hit is None:
            copy = {k: v for k, v in value.items() if k not in self.foreign}
            hit = self._in_draft_copies[id(value)] = (value, copy)  # the original is kept alive: ids stay unique
        return hit[1]

    def lookup(self, sub: Sub, ref: Any, keyword: str = "$ref") -> Sub:
        from referencing.exceptions import Unresolvable

        if not isinstance(ref, str):
            raise InvalidSchemaError(f"{keyword} must be a string", sub.pointer)
        try:
            resolved = sub.resolver.lookup(ref)
        except Unresolvable as exc:
            raise UnsupportedSchemaError(
                keyword, sub.pointer + "/" + keyword, f"cannot resolve {ref!r} (remote references are not fetched): {exc}"
            ) from None
        pointer = ref if ref.startswith("#") else ref
        return Sub(self.in_draft(resolved.contents), resolved.resolver, pointer)

    def synth(self, key, factory, resolver, pointer: str) -> Sub:
        """A synthetic schema (from a rewrite), cached so equal rewrites share one identity."""
        value = self.synthetic.get(key)
        if value is None:
            value = factory()
            self.synthetic[key] = value
        return Sub(value, resolver, pointer)

    # -- DNF -------------------------------------------------------------------------
    def product(self, factors: list, keyword: str, pointer: str) -> list:
        """Conjunction of disjunctions, distributed; contradictory partial branches are dropped."""
        out = [()]
        for f in factors:
            nxt = []
            seen = set()
            for a in out:
                for b in f:
                    branch = a + tuple(x for x in b if all(x.schema is not y.schema for y in a))
                    key = frozenset(id(x.schema) for x in branch)
                    if key in seen:
                        continue
                    seen.add(key)
                    if len(factors) > 1 and self.merge(branch, check=False) is None:
                        continue  # already empty: no extension can be satisfied
                    nxt.append(branch)
            out = nxt
            if len(out) > MAX_BRANCHES:
                raise UnsupportedSchemaError(keyword, pointer, f"more than {MAX_BRANCHES} alternatives after expansion")
        return out

    def expand(self, sub: Sub, stack: frozenset = frozenset()) -> list:
        """The schema at ``sub`` as a list of branches (tuples of parts whose keywords all apply)."""
        s = sub.schema
        if s is True:
            return [()]
        if s is False:
            return []
        if not isinstance(s, dict):
            raise InvalidSchemaError("a schema must be an object or a boolean", sub.pointer)
        key = id(s)
        cached = self._expanded.get(key)
        if cached is not None:
            return cached
        if key in stack:
            raise UnsupportedSchemaError(
                "$ref", sub.pointer, "the schema refers to itself without nesting (infinite recursion)"
            )
        stack = stack | {key}
        p = sub.pointer
        if "$ref" in s and self.draft <= 7:
            # up to draft 7 a $ref replaces its sibling keywords
            result = self.expand(self.lookup(sub, s["$ref"]), stack)
            self._expanded[key] = result
            return result
        factors: list = [[(sub,)]]
        if "$ref" in s:
            factors.append(self.expand(self.lookup(sub, s["$ref"]), stack))
        for kw in ("$dynamicRef", "$recursiveRef"):
            if kw in s:
                target = self.lookup(sub, s[kw], kw)
                # without dynamic scopes in play the reference is static; that is only
                # known when the target declares no dynamic anchor
                if isinstance(target.schema, dict) and (
                    target.schema.get("$dynamicAnchor") or target.schema.get("$recursiveAnchor")
                ):
                    raise UnsupportedSchemaError(kw, p, "dynamic references are not supported")
                factors.append(self.expand(target, stack))
        if "allOf" in s:
            items = s["allOf"]
            if not isinstance(items, list):
                raise InvalidSchemaError("allOf must be an array", p)
            for i, c in enumerate(items):
                factors.append(self.expand(self.child(sub, c, "allOf", i), stack))
        if "anyOf" in s:
            items = s["anyOf"]
            if not isinstance(items, list) or not items:
                raise InvalidSchemaError("anyOf must be a non-empty array", p)
            union = []
            for i, c in enumerate(items):
                union.extend(self.expand(self.child(sub, c, "anyOf", i), stack))
            factors.append(union)
        if "oneOf" in s:
            factors.append(self.one_of(sub, stack))
        if "not" in s:
            factors.append(self.negate(self.child(sub, s["not"], "not"), stack))
        if "if" in s and ("then" in s or "else" in s):
            c_if = self.child(sub, s["if"], "if")
            then = self.expand(self.child(sub, s.get("then", True), "then"), stack)
            other = self.expand(self.child(sub, s.get("else", True), "else"), stack)
            yes = self.product([self.expand(c_if, stack), then], "if", p + "/if")
            no = self.product([self.negate(c_if, stack), other], "if", p + "/if")
            factors.append(yes + no)
        deps = []
        if isinstance(s.get("dependencies"), dict):
            deps.extend(("dependencies", k, v) for k, v in s["dependencies"].items())
        for kw in ("dependentRequired", "dependentSchemas"):
            if kw in s:
                if not isinstance(s[kw], dict):
                    raise InvalidSchemaError(f"{kw} must be an object", p)
                deps.extend((kw, k, v) for k, v in s[kw].items())
        for kw, name, dep in deps:
            absent = self.synth(("absent", name), lambda: {"properties": {name: False}}, sub.resolver, f"{p}/{kw}")
            if isinstance(dep, list):
                if not all(isinstance(x, str) for x in dep):
                    raise InvalidSchemaError(f"{kw} lists must hold property names", f"{p}/{kw}")
                if not dep:
                    continue
                present = self.synth(("required", tuple(dep)), lambda: {"required": list(dep)}, sub.resolver, f"{p}/{kw}")
                factors.append([(absent,), (present,)])
            else:
                factors.append([(absent,)] + self.expand(self.child(sub, dep, kw, name), stack))
        result = self.product(factors, "anyOf" if "anyOf" in s else "oneOf", p)
        self._expanded[key] = result
        return result

    def one_of(self, sub: Sub, stack: frozenset) -> list:
        s = sub.schema
        p = sub.pointer + "/oneOf"
        items = s["oneOf"]
        if not isinstance(items, list) or not items:
            raise InvalidSchemaError("oneOf must be a non-empty array", sub.pointer)
        children = [self.child(sub, c, "oneOf", i) for i, c in enumerate(items)]
        alts = [self.expand(c, stack) for c in children]
        # disjointness matters only where the parent's own keywords hold (e.g. its "type")
        shapes = [[self.merge((sub,) + b, check=False) for b in a] for a in alts]
        overlapping = False
        for i in range(len(alts)):
            for j in range(i + 1, len(alts)):
                for sa in shapes[i]:
                    for sb in shapes[j]:
                        if sa is not None and sb is not None and not self.disjoint(sa, sb):
                            overlapping = True
        if not overlapping:
            return [b for a in alts for b in a]
        # exactly one: A_i and not A_j for every other j
        try:
            out = []
            negs = [self.negate(c, stack) for c in children]
            for i, a in enumerate(alts):
                factors = [[(sub,)], a] + [negs[j] for j in range(len(alts)) if j != i]
                out.extend(self.product(factors, "oneOf", p))
            return out
        except UnsupportedSchemaError as exc:
            if self.strict:
                raise UnsupportedSchemaError(
                    "oneOf", p, f"branches may overlap and their complement is not expressible ({exc})"
                ) from None
            return [b for a in alts for b in a]

    # -- negation --------------------------------------------------------------------
    def negate(self, sub: Sub, stack: frozenset = frozenset()) -> list:
        """Branches for the complement of ``sub`` (exact, or UnsupportedSchemaError)."""
        key = id(sub.schema) if isinstance(sub.schema, dict) else None
        if key is not None and key in self._negated:
            return self._negated[key]
        factors = []
        for branch in self.expand(sub, stack):
            alts = []
            for part in branch:
                alts.extend(self.negate_local(part))
            factors.append(alts)
        out = self.product(factors, "not", sub.pointer)
        if key is not None:
            self._negated[key] = out
        return out

    def _other_types(self, part: Sub, keep: str, tag: str) -> list:
        """One branch: every value whose JSON type is not ``keep``."""
        others = [t for t in ("null", "boolean", "number", "string", "array", "object") if t != keep]
        return [(self.synth(("types", tuple(others)), lambda: {"type": others}, part.resolver, part.pointer),)]

    def negate_local(self, part: Sub) -> list:
        """Complement of one part's local keywords: the union of each keyword's complement."""
        d = part.schema
        p = part.pointer
        out: list = []

        def syn(key, make):
            return self.synth(key, make, part.resolver, p)

        def typed(t: str, extra: dict, key) -> tuple:
            return (syn(("typed", t, key), lambda: {"type": t, **extra}),)

        for kw, v in d.items():
            if kw in ANNOTATIONS or kw in APPLICATORS:
                continue
            if kw == "type":
                ts = _types_of(v, p + "/type")
                others = [t for t in ("null", "boolean", "number", "string", "array", "object")
                          if t not in ts and not (t == "number" and "integer" in ts)]
                if others:
                    out.append((syn(("types", tuple(others)), lambda: {"type": list(others)}),))
                if "integer" in ts and "number" not in ts:
                    out.append((syn(("nonint",), lambda: {"type": "number", _GUIDED + "nonInteger": True}),))
            elif kw in ("enum", "const"):
                values = v if kw == "enum" else [v]
                if not isinstance(values, list):
                    raise InvalidSchemaError("enum must be an array", p)
                out.append((syn(("notin", json.dumps(values, sort_keys=True)), lambda: {_GUIDED + "notIn": values}),))
            elif kw == "minLength":
                if v > 0:
                    out += self._other_types(part, "string", kw)
                    out.append(typed("string", {"maxLength": v - 1}, ("maxLength", v - 1)))
            elif kw == "maxLength":
                out += self._other_types(part, "string", kw)
                out.append(typed("string", {"minLength": v + 1}, ("minLength", v + 1)))
            elif kw == "pattern":
                try:
                    lang = rx.complement(rx.pattern_language(v, "union"))
                except rx.RegexUnsupported as exc:
                    raise UnsupportedSchemaError("not", p + "/pattern", f"cannot negate pattern: {exc}") from None
                out += self._other_types(part, "string", kw)
                out.append((syn(("notpattern", v), lambda: {"type": "string", _GUIDED + "lang": lang}),))
            elif kw == _GUIDED + "lang":
                lang = rx.complement(v)
                out += self._other_types(part, "string", kw)
                out.append((syn(("notlang", id(v)), lambda: {"type": "string", _GUIDED + "lang": lang}),))
            elif kw == "format":
                if self.assert_formats and isinstance(v, str) and (v in KNOWN_FORMATS or v in UNSUPPORTED_FORMATS):
                    raise UnsupportedSchemaError("not", p + "/format", f"a negated format ({v!r}) is not expressible")
            elif kw in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", _GUIDED + "range"):
                continue  # handled together below
            elif kw == _GUIDED + "nonInteger":
                out += self._other_types(part, "number", kw)
                out.append(typed("integer", {}, ("int",)))
            elif kw == _GUIDED + "notIn":
                out.append((syn(("in", json.dumps(v, sort_keys=True)), lambda: {"enum": v}),))
            elif kw == "required":
                if v:
                    out += self._other_types(part, "object", kw)
                    for name in v:
                        out.append((syn(("absent", name), lambda: {"properties": {name: False}}),))
                        # (non-objects are already in the list above)
            elif kw == "properties":
                if not isinstance(v, dict):
                    raise InvalidSchemaError("properties must be an object", p)
                for name, sch in v.items():
                    if sch is True:
                        continue
                    inner = self.synth(("not", id(sch)), lambda: {"not": sch}, part.resolver, p)
                    out.append(
                        (syn(("badprop", name, id(sch)), lambda: {
                            "type": "object", "required": [name], "properties": {name: inner.schema}}),)
                    )
            elif kw in ("minProperties", "minItems"):
                if v > 0:
                    t = "object" if kw == "minProperties" else "array"
                    other = "maxProperties" if t == "object" else "maxItems"
                    out += self._other_types(part, t, kw)
                    out.append(typed(t, {other: v - 1}, (other, v - 1)))
            elif kw in ("maxProperties", "maxItems"):
                t = "object" if kw == "maxProperties" else "array"
                other = "minProperties" if t == "object" else "minItems"
                out += self._other_types(part, t, kw)
                out.append(typed(t, {other: v + 1}, (other, v + 1)))
            elif kw == "uniqueItems" and v is False:
                continue
            elif kw == "additionalProperties" and v is True or kw in ("patternProperties",) and not v:
                continue
            elif kw == "additionalProperties" and v is False:
                # some key is neither named in "properties" nor matched by "patternProperties"
                names = sorted(d.get("properties", {}) or {})
                pats = sorted(d.get("patternProperties", {}) or {})
                out.append((syn(("outside", tuple(names), tuple(pats)), lambda: {
                    "type": "object", _GUIDED + "keyOutside": {"names": names, "patterns": pats}}),))
            elif kw == "patternProperties" and d.get("additionalProperties") is False:
                # with additionalProperties: false, a key matching a pattern with a failing value
                # is also a violation; only the plain "no such key" case is expressed here
                raise UnsupportedSchemaError("not", f"{p}/{kw}", "the complement of 'patternProperties'")
            elif kw == "items" and v is True:
                continue
            elif kw.startswith(_GUIDED) or kw in _ASSERTIONS:
                raise UnsupportedSchemaError("not", f"{p}/{kw}", f"the complement of {kw!r} is not expressible")
            # other keywords are unknown: annotations, no constraint
        lo, lo_s, hi, hi_s = self._bounds(d, p)
        if lo is not None or hi is not None:
            out += self._other_types(part, "number", "range")
            if lo is not None:
                out.append((syn(("range", None, False, str(lo), not lo_s), lambda: {
                    "type": "number", _GUIDED + "range": [None, False, lo, not lo_s]}),))
            if hi is not None:
                out.append((syn(("range", str(hi), not hi_s, None, False), lambda: {
                    "type": "number", _GUIDED + "range": [hi, not hi_s, None, False]}),))
        return out

    def _bounds(self, d: dict, p: str):
        lo = hi = None
        lo_s = hi_s = False
        if "minimum" in d:
            excl = d.get("exclusiveMinimum") is True
            lo, lo_s = _lower(lo, lo_s, _num(d["minimum"], p + "/minimum"), excl)
        if "maximum" in d:
            excl = d.get("exclusiveMaximum") is True
            hi, hi_s = _upper(hi, hi_s, _num(d["maximum"], p + "/maximum"), excl)
        em, eM = d.get("exclusiveMinimum"), d.get("exclusiveMaximum")
        if em is not None and not isinstance(em, bool):
            lo, lo_s = _lower(lo, lo_s, _num(em, p + "/exclusiveMinimum"), True)
        if eM is not None and not isinstance(eM, bool):
            hi, hi_s = _upper(hi, hi_s, _num(eM, p + "/exclusiveMaximum"), True)
        r = d.get(_GUIDED + "range")
        if r is not None:
            lo, lo_s = _lower(lo, lo_s, r[0], r[1])
            hi, hi_s = _upper(hi, hi_s, r[2], r[3])
        return lo, lo_s, hi, hi_s

    # -- merging ---------------------------------------------------------------------
    def merge(self, branch: tuple, check: bool = True) -> Shape | None:
        """Fold the local keywords of a branch into a Shape (None if contradictory).

        ``check``: raise for refused keywords that matter; off when pruning partial
        branches, which later parts may still restrict.
        """
        key = tuple(id(s.schema) for s in branch)
        if key in self._shape_cache:
            sh = self._shape_cache[key]
            return self._checked(sh) if check else sh
        sh = Shape()
        if branch:
            sh.pointer = branch[0].pointer
        ok = all(self._merge_part(sh, part) for part in branch)
        result = sh if ok and sh.types else None
        if result is not None:
            if result.lo is not None and result.hi is not None and (
                result.lo > result.hi or result.lo == result.hi and (result.lo_strict or result.hi_strict)
            ):
                result.types = result.types - {"number", "integer"}
            if result.max_len is not None and result.min_len > result.max_len:
                result.types = result.types - {"string"}
            if result.max_items is not None and result.min_items > result.max_items:
                result.types = result.types - {"array"}
            if result.max_props is not None and result.min_props > result.max_props:
                result.types = result.types - {"object"}
            if not result.types:
                result = None
        self._shape_cache[key] = result
        return self._checked(result) if check else result

    def _checked(self, sh: Shape | None) -> Shape | None:
        """Raise for refused keywords that still matter (their JSON type is allowed)."""
        if sh is not None and self.strict:
            for kw, ptr, reason, t in sh.pending:
                if not t or sh.has(t):
                    raise UnsupportedSchemaError(kw, ptr, reason)
        return sh

    def _merge_part(self, sh: Shape, part: Sub) -> bool:
        d = part.schema
        p = part.pointer
        draft = self.draft
        if "$ref" in d and draft <= 7:
            return True  # siblings of $ref are ignored (the reference was expanded)
        for kw, v in d.items():
            if kw in ANNOTATIONS or kw in APPLICATORS:
                continue
            kp = f"{p}/{kw}"
            if kw == "type":
                sh.types = _intersect_types(sh.types, _types_of(v, kp))
            elif kw in ("enum", "const"):
                values = [v] if kw == "const" else v
                if not isinstance(values, list):
                    raise InvalidSchemaError("enum must be an array", kp)
                if sh.enum is None:
                    sh.enum = list(values)
                else:
                    sh.enum = [x for x in sh.enum if any(json_equal(x, y) for y in values)]
            elif kw == _GUIDED + "notIn":
                sh.not_in.extend(v)
                sh.plain = False
            elif kw in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", _GUIDED + "range"):
                sh.plain = False
            elif kw == "multipleOf":
                m = _num(v, kp)
                if m <= 0:
                    raise InvalidSchemaError("multipleOf must be positive", kp)
                sh.multiple_of.append((m, kp))
                sh.plain = False
            elif kw == _GUIDED + "nonInteger":
                sh.non_integer = True
                sh.plain = False
            elif kw == "minLength":
                sh.min_len = max(sh.min_len, _count(v, kp))
                sh.plain = False
            elif kw == "maxLength":
                n = _count(v, kp)
                sh.max_len = n if sh.max_len is None else min(sh.max_len, n)
                sh.plain = False
            elif kw == "pattern":
                if not isinstance(v, str):
                    raise InvalidSchemaError("pattern must be a string", kp)
                sh.langs.append(("pattern", v, kp))
                sh.plain = False
            elif kw == _GUIDED + "lang":
                sh.langs.append(("lang", v, kp))
                sh.plain = False
            elif kw == "format":
                if not isinstance(v, str) or not self.assert_formats:
                    continue
                if v in KNOWN_FORMATS:
                    sh.langs.append(("format", v, kp))
                    sh.plain = False
                elif v in UNSUPPORTED_FORMATS:
                    sh.pending.append(("format", kp, f"format {v!r} has no regular-language translation", "string"))
                # other formats are annotations (JSON Schema 2020-12 default)
            elif kw in ("items", "prefixItems", "additionalItems"):
                continue  # read together below
            elif kw == "minItems":
                sh.min_items = max(sh.min_items, _count(v, kp))
                sh.plain = False
            elif kw == "maxItems":
                n = _count(v, kp)
                sh.max_items = n if sh.max_items is None else min(sh.max_items, n)
                sh.plain = False
            elif kw == "uniqueItems":
                if v is True:  # exact for finite item sets; others are refused where arrays are built
                    sh.unique = sh.unique or kp
                    sh.plain = False
            elif kw == "contains":
                sh.pending.append((kw, kp, "'contains' constraints are not supported", "array"))
            elif kw in ("minContains", "maxContains"):
                continue  # reported with 'contains'; without it they have no effect
            elif kw in ("properties", "patternProperties", "additionalProperties", "unevaluatedProperties"):
                continue  # read together below
            elif kw == "required":
                if isinstance(v, bool):  # draft 3 style, only reachable without metaschema check
                    raise InvalidSchemaError("required must be an array", kp)
                if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
                    raise InvalidSchemaError("required must be an array of strings", kp)
                for name in v:
                    if name not in sh.required:
                        sh.required.append(name)
                sh.plain = False
            elif kw == "propertyNames":
                sh.prop_names.append(self.child(part, v, "propertyNames"))
                sh.plain = False
            elif kw == "minProperties":
                sh.min_props = max(sh.min_props, _count(v, kp))
                sh.plain = False
            elif kw == "maxProperties":
                n = _count(v, kp)
                sh.max_props = n if sh.max_props is None else min(sh.max_props, n)
                sh.plain = False
            elif kw == "unevaluatedItems":
                continue
            elif kw == _GUIDED + "keyOutside":
                sh.outside.append((frozenset(v["names"]), tuple(v["patterns"])))
                sh.plain = False
            elif kw in _ASSERTIONS:
                sh.pending.append((kw, kp, "", ""))
        lo, lo_s, hi, hi_s = self._bounds(d, p)
        sh.lo, sh.lo_strict = _lower(sh.lo, sh.lo_strict, lo, lo_s)
        sh.hi, sh.hi_strict = _upper(sh.hi, sh.hi_strict, hi, hi_s)
        self._merge_array(sh, part)
        self._merge_object(sh, part)
        return True

    def _has_inplace_applicators(self, d: dict) -> bool:
        return any(k in d for k in ("$ref", "allOf", "anyOf", "oneOf", "if", "dependentSchemas", "dependencies",
                                    "$dynamicRef", "$recursiveRef"))

    def _merge_array(self, sh: Shape, part: Sub) -> None:
        d = part.schema
        p = part.pointer
        items = d.get("items")
        prefix: list = []
        rest: Sub | None = None
        touched = False
        if "prefixItems" in d:
            v = d["prefixItems"]
            if not isinstance(v, list):
                raise InvalidSchemaError("prefixItems must be an array", p + "/prefixItems")
            prefix = [self.child(part, c, "prefixItems", i) for i, c in enumerate(v)]
            touched = True
        if isinstance(items, list):
            # tuple form (up to draft 2019-09); additionalItems applies after it
            prefix = [self.child(part, c, "items", i) for i, c in enumerate(items)]
            if "additionalItems" in d:
                rest = self.child(part, d["additionalItems"], "additionalItems")
            touched = True
        elif items is not None:
            rest = self.child(part, items, "items")
            touched = True
        if "unevaluatedItems" in d and d["unevaluatedItems"] is not True:
            if self._has_inplace_applicators(d) or (items is not None and not isinstance(items, list)):
                if not (items is not None and not isinstance(items, list)):
                    sh.pending.append(("unevaluatedItems", p + "/unevaluatedItems",
                                       "only supported where it equals 'items' (no in-place applicators)", "array"))
            elif rest is None:
                rest = self.child(part, d["unevaluatedItems"], "unevaluatedItems")
                touched = True
        if touched:
            sh.arr_parts.append(ArrPart(prefix, rest))
            sh.plain = False

    def _merge_object(self, sh: Shape, part: Sub) -> None:
        d = part.schema
        p = part.pointer
        props = d.get("properties")
        pats = d.get("patternProperties")
        addl = d.get("additionalProperties")
        if props is None and pats is None and addl is None and "unevaluatedProperties" not in d:
            return
        if props is not None and not isinstance(props, dict):
            raise InvalidSchemaError("properties must be an object", p + "/properties")
        if pats is not None and not isinstance(pats, dict):
            raise InvalidSchemaError("patternProperties must be an object", p + "/patternProperties")
        named = {k: self.child(part, v, "properties", k) for k, v in (props or {}).items()}
        patterns = [(k, self.child(part, v, "patternProperties", k), f"{p}/patternProperties/{_escape_pointer(k)}")
                    for k, v in (pats or {}).items()]
        additional = None
        if addl is not None:
            additional = self.child(part, addl, "additionalProperties")
        if "unevaluatedProperties" in d and d["unevaluatedProperties"] is not True:
            if self._has_inplace_applicators(d):
                sh.pending.append(("unevaluatedProperties", p + "/unevaluatedProperties",
                                   "only supported where it equals 'additionalProperties' (no in-place applicators)",
                                   "object"))
            elif additional is None:
                additional = self.child(part, d["unevaluatedProperties"], "unevaluatedProperties")
        if additional is not None and additional.schema is True:
            additional = None
        sh.obj_parts.append(ObjPart(named, patterns, additional))
        sh.plain = False

    # -- disjointness (for oneOf) ------------------------------------------------------
    def disjoint(self, a: Shape, b: Shape, depth: int = 0) -> bool:
        """True only if no value satisfies both shapes (False when unsure)."""
        common = _intersect_types(a.types, b.types)
        if not common:
            return True
        if a.enum is not None and b.enum is not None:
            return not any(json_equal(x, y) for x in a.enum for y in b.enum)
        for e, other in ((a.enum, b), (b.enum, a)):
            if e is not None:
                return all(self._excluded(v, other, depth) for v in e)
        for t in common:
            if not self._disjoint_in(t, a, b, depth):
                return False
        return True

    def _excluded(self, v: Any, sh: Shape, depth: int) -> bool:
        """Cheap check that value ``v`` fails shape ``sh``."""
        t = json_type(v)
        if not (sh.has(t) or t == "integer" and sh.has("number")):
            return True
        if any(json_equal(v, x) for x in sh.not_in):
            return True
        if t == "object" and depth < 3:
            if any(k not in v for k in sh.required):
                return True
            for k, x in v.items():
                schemas = self.key_schemas(sh, k)
                if schemas is None or any(self._excluded_sub(x, s, depth + 1) for s in schemas):
                    return True
        if t == "string":
            if len(v) < sh.min_len or (sh.max_len is not None and len(v) > sh.max_len):
                return True
        return False

    def _excluded_sub(self, v: Any, sub: Sub, depth: int) -> bool:
        try:
            branches = self.expand(sub)
        except ConstraintError:
            return False
        for b in branches:
            sh = self.merge(b)
            if sh is not None and not self._excluded(v, sh, depth):
                return False
        return True

    def _disjoint_in(self, t: str, a: Shape, b: Shape, depth: int) -> bool:
        if t in ("number", "integer"):
            lo, _ = _lower(a.lo, a.lo_strict, b.lo, b.lo_strict)
            hi, _ = _upper(a.hi, a.hi_strict, b.hi, b.hi_strict)
            if lo is not None and hi is not None:
                lo_s = (a.lo == lo and a.lo_strict) or (b.lo == lo and b.lo_strict)
                hi_s = (a.hi == hi and a.hi_strict) or (b.hi == hi and b.hi_strict)
                if lo > hi or lo == hi and (lo_s or hi_s):
                    return True
            if (a.non_integer and "integer" in b.types and "number" not in b.types) or (
                b.non_integer and "integer" in a.types and "number" not in a.types
            ):
                return True
            return False
        if t == "string":
            if a.max_len is not None and b.min_len > a.max_len or b.max_len is not None and a.min_len > b.max_len:
                return True
            if a.langs and b.langs:
                try:
                    la, lb = self.string_language(a), self.string_language(b)
                    return rx.is_empty(rx.intersect(la, lb))
                except (rx.RegexUnsupported, ConstraintError):
                    return False
            return False
        if t == "array":
            if a.max_items is not None and b.min_items > a.max_items or b.max_items is not None and a.min_items > b.max_items:
                return True
            return False
        if t == "object":
            if depth >= 3:
                return False
            for x, y in ((a, b), (b, a)):
                for k in x.required:
                    ys = self.key_schemas(y, k)
                    if ys is None:
                        return True  # required by one, forbidden by the other
                    if k in y.required:
                        xs = self.key_schemas(x, k)
                        if xs is not None and self._subs_disjoint(xs, ys, depth + 1):
                            return True
            return False
        return False  # null, boolean (without enum) overlap

    def _subs_disjoint(self, xs: list, ys: list, depth: int) -> bool:
        try:
            bx = self.product([self.expand(s) for s in xs], "oneOf", "#")
            by = self.product([self.expand(s) for s in ys], "oneOf", "#")
        except ConstraintError:
            return False
        for u in bx:
            su = self.merge(u)
            if su is None:
                continue
            for v in by:
                sv = self.merge(v)
                if sv is not None and not self.disjoint(su, sv, depth):
                    return False
        return True

    # -- per-key schemas -------------------------------------------------------------
    def key_schemas(self, sh: Shape, key: str) -> list | None:
        """Schemas a property named ``key`` must satisfy (None: the key is forbidden)."""
        out = []
        for op in sh.obj_parts:
            matched = False
            if key in op.props:
                out.append(op.props[key])
                matched = True
            for pat, sub, ptr in op.patterns:
                try:
                    lang = rx.pattern_language(pat)
                except rx.RegexUnsupported as exc:
                    raise UnsupportedSchemaError("patternProperties", ptr, str(exc)) from None
                if rx.matches(lang, key):
                    out.append(sub)
                    matched = True
            if not matched and op.additional is not None:
                out.append(op.additional)
        if any(s.schema is False for s in out):
            return None
        return [s for s in out if s.schema is not True]

    def string_language(self, sh: Shape) -> rx.Node:
        """Decoded-string language of a shape's string constraints (patterns, formats, lengths)."""
        lang = rx.ANY_STRING
        for kind, value, ptr in sh.langs:
            if kind == "pattern":
                try:
                    other = rx.pattern_language(value)
                except rx.RegexUnsupported as exc:
                    if self.strict:
                        raise UnsupportedSchemaError("pattern", ptr, str(exc)) from None
                    continue
            elif kind == "format":
                other = format_language(value)
            else:
                other = value
            try:
                lang = rx.intersect(lang, other)
            except rx.RegexUnsupported as exc:
                if kind == "lang":  # a complemented pattern, made where a not/oneOf negated it
                    raise UnsupportedSchemaError("not", ptr.rsplit("/", 1)[0], f"negated pattern: {exc}") from None
                raise UnsupportedSchemaError(ptr.rsplit("/", 1)[-1], ptr, str(exc)) from None
        if sh.not_in:
            words = [v for v in sh.not_in if isinstance(v, str)]
            if words:
                try:
                    lang = rx.intersect(lang, rx.not_words_language(words))
                except rx.RegexUnsupported as exc:
                    raise UnsupportedSchemaError("not", sh.pointer, str(exc)) from None
        if sh.min_len or sh.max_len is not None:
            try:
                lang = rx.with_length(lang, sh.min_len, sh.max_len)
            except rx.RegexUnsupported as exc:
                raise UnsupportedSchemaError("maxLength" if sh.max_len is not None else "minLength", sh.pointer, str(exc)) from None
        return lang

    # -- value checks (enum filtering) -----------------------------------------------
    def value_valid(self, value: Any, subs: tuple) -> bool:
        """Does ``value`` satisfy every schema in ``subs`` (checked by the jsonschema validator)?"""
        if self._validator is None:
            jsonschema = import_jsonschema()
            cls = jsonschema.validators.validator_for(self.root.schema if isinstance(self.root.schema, dict) else {},
                                                      default=jsonschema.Draft202012Validator)
            self._validator = cls({}, registry=self.registry, format_checker=cls.FORMAT_CHECKER)
        for sub in subs:
            v = self._validator.evolve(schema=sub.schema, _resolver=sub.resolver)
            try:
                if not v.is_valid(value):
                    return False
            except Exception:  # noqa: BLE001 - e.g. a pattern Python cannot compile: keep it out
                return False
        return True


# keyword -> (first draft, last draft) it exists in, where that is not every supported draft
_KEYWORD_DRAFTS = {
    "const": (6, 2020), "contains": (6, 2020), "propertyNames": (6, 2020),
    "if": (7, 2020), "then": (7, 2020), "else": (7, 2020),
    "dependentRequired": (2019, 2020), "dependentSchemas": (2019, 2020), "unevaluatedProperties": (2019, 2020),
    "unevaluatedItems": (2019, 2020), "minContains": (2019, 2020), "maxContains": (2019, 2020),
    "$recursiveRef": (2019, 2019), "prefixItems": (2020, 2020), "$dynamicRef": (2020, 2020),
}

_ASSERTIONS = frozenset(
    {
        "type", "enum", "const", "multipleOf", "maximum", "exclusiveMaximum", "minimum", "exclusiveMinimum",
        "maxLength", "minLength", "pattern", "items", "prefixItems", "additionalItems", "unevaluatedItems",
        "maxItems", "minItems", "uniqueItems", "contains", "maxContains", "minContains", "maxProperties",
        "minProperties", "required", "properties", "patternProperties", "additionalProperties",
        "unevaluatedProperties", "propertyNames", "dependentRequired", "dependentSchemas", "dependencies",
        "format",
    }
)


def import_jsonschema():
    """``import jsonschema``, without its optional ``rfc3987_syntax`` dependency.

    That package builds dozens of Lark parsers at import time (seconds); it only serves
    jsonschema's own ``iri`` format check, which this compiler does not rely on.
    """
    import sys

    # one import at a time: a second thread (the server compiles schemas in threads) would
    # otherwise find the module in sys.modules half initialised
    with _IMPORT_LOCK:
        if "jsonschema" in sys.modules:
            return sys.modules["jsonschema"]
        block = "rfc3987_syntax" not in sys.modules
        if block:
            sys.modules["rfc3987_syntax"] = None  # makes "import rfc3987_syntax" raise ImportError
        try:
            import jsonschema
        finally:
            if block and sys.modules.get("rfc3987_syntax", 0) is None:
                del sys.modules["rfc3987_syntax"]
        return jsonschema


_IMPORT_LOCK = threading.Lock()


def _num(v: Any, pointer: str) -> Decimal:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise InvalidSchemaError("expected a number", pointer)
    if isinstance(v, float) and not math.isfinite(v):
        raise InvalidSchemaError("expected a finite number", pointer)
    return to_decimal(v)


def _count(v: Any, pointer: str) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0 or (isinstance(v, float) and not v.is_integer()):
        raise InvalidSchemaError("expected a non-negative integer", pointer)
    return int(v)
