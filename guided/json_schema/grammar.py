"""Normalised JSON Schema (:mod:`guided.json_schema.ir`) to a grammar.

The result (:class:`SchemaGrammar`) is plain data: rules, and terminals described by their
languages.  :func:`guided.json_schema.engine_spec.engine_spec` hands it to the grammar
engine directly (no Lark text is parsed); ``SchemaGrammar.text`` writes the same grammar as
Lark text for people and for :func:`~guided.json_schema.schema_to_lark`.

One rule per schema position (a conjunction of :class:`~guided.json_schema.ir.Sub`),
built lazily from a work queue so recursive schemas become recursive rules.  Values that
are strings or numbers are *single terminals* (a whole quoted string with its escapes,
a whole number), which keeps greedy contextual lexing exact: JSON strings are prefix-free
and no value terminal can continue past the punctuation that follows it.

Objects list their properties in the schema's ``properties`` order; each optional
property may be absent.  The chain of rules ``members(i, state)`` has one rule per
property and count state (not one alternative per subset), and commas are placed by
whether anything was written before.  Properties not named by the schema follow the named
ones; their keys are terminals that exclude the named keys, split into regions by the
``patternProperties`` they match.  With ``property_order="any"`` an object's members, and
with ``uniqueItems`` an array's items from a finite set, are a *family* of nonterminals,
one per set written, that the parser makes as it reaches them
(:mod:`guided.json_schema.families`).

    >>> build_grammar(SchemaContext({"type": "integer", "minimum": 1}), whitespace="compact").text
    'start: J0\\nJ0: /[1-9]|[1-9][0-9]+/\\n'     # (shape of the output)
"""

from __future__ import annotations

import json
import math
import re
from collections import deque
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from typing import Iterator

from guided.json_schema import regex as rx
from guided.grammars.earley import derivable
from guided.json_schema.families import PropertySet, UniqueValues, entry_name
from guided.json_schema.formats import (
    NEGATIVE_ZERO,
    any_number,
    decimal_range,
    integer_range,
    multiple_language,
    number_with_exponent,
    to_decimal,
)
from guided.json_schema.ir import (
    SchemaContext,
    Shape,
    UnsatisfiableSchemaError,
    UnsupportedSchemaError,
    json_equal,
    json_type,
)

__all__ = ["build_grammar", "SchemaGrammar", "MAX_RULES", "WHITESPACE", "BOUNDED_WHITESPACE", "WHITESPACE_MODES"]

MAX_RULES = 50_000
MAX_CHAIN = 3_000
MAX_ENUMERATED_NUMBERS = 2_000
MAX_DIVISIBILITY_REGEX = 6_000
WHITESPACE = r"[ \t\n\r]+"  # "flexible": any run between any two tokens (%ignore)
# "bounded": one optional run after "{", "[", ",", ":" and before "}", "]": one space, or one line
# break followed by at most MAX_INDENT spaces/tabs of indentation.  A model can write
# json.dumps's spacing or pretty-print, but cannot run on into whitespace (the runaway of
# unbounded JSON whitespace).
MAX_INDENT = 20
BOUNDED_WHITESPACE = rf"(?: |\r?\n[ \t]{{0,{MAX_INDENT}}})"
WHITESPACE_MODES = ("bounded", "flexible", "compact")

_LBRACE, _RBRACE, _LSQB, _RSQB, _COMMA, _COLON = '"{"', '"}"', '"["', '"]"', '","', '":"'


def _lark_regex(text: str) -> str:
    """Regex text safe inside Lark's ``/.../`` literal.

    ``/`` would end the literal; Lark's unescaping also drops the backslash of ``\\"``
    (turning an escaped backslash + quote into a bare quote), so quotes are written
    ``\\x22``.
    """
    out = []
    i = 0
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            pair = text[i : i + 2]
            out.append("\\x22" if pair == '\\"' else pair)
            i += 2
            continue
        out.append("\\/" if c == "/" else "\\n" if c == "\n" else "\\x22" if c == '"' else c)
        i += 1
    return "".join(out)


def _opt(sym: str) -> str:
    return sym + "?"


class _Builder:
    def __init__(self, ctx: SchemaContext, property_order: str = "schema"):
        self.ctx = ctx
        self.property_order = property_order
        self.families: list = []  # PropertySet / UniqueValues, named by index (families.entry_name)
        self.rules: dict[str, list[list[str]]] = {}
        self.terminals: dict[tuple, str] = {}  # source (see terminal) -> name
        self.origins: dict[str, tuple[str, str]] = {}  # terminal name -> (keyword, JSON pointer)
        self.memo: dict = {}
        self.queue: deque = deque()
        self.n = 0
        self.any_value: str | None = None

    # -- names -------------------------------------------------------------------------
    def fresh(self, hint: str = "r") -> str:
        self.n += 1
        if self.n > MAX_RULES:
            raise UnsupportedSchemaError("$ref", "#", f"the grammar would need more than {MAX_RULES} rules")
        return f"{hint}{self.n}"

    def terminal(self, source: tuple, origin: tuple[str, str] | None = None) -> str:
        """Terminal name for ``source``; ``origin`` is the (keyword, pointer) it comes from.

        ``source`` is ``("json", node)`` (a JSON string whose value is a word of ``node``),
        ``("plain", node)`` (the words as written: numbers) or ``("bytes", literal)``; its
        regex text (:func:`terminal_regex`) is only written when the Lark text is asked for.
        """
        name = self.terminals.get(source)
        if name is None:
            name = f"J{len(self.terminals)}"
            self.terminals[source] = name
        if origin is not None:
            self.origins.setdefault(name, origin)
        return name

    def string_terminal(self, lang: rx.Node, origin: tuple[str, str] | None = None) -> str:
        """A JSON string whose decoded value is a word of ``lang``."""
        return self.terminal(("json", lang), origin)

    def plain_terminal(self, node: rx.Node, origin: tuple[str, str] | None = None) -> str:
        """The words of ``node`` as written (numbers)."""
        return self.terminal(("plain", node), origin)

    def literal_terminal(self, value: str) -> str:
        """Exactly ``json.dumps(value, ensure_ascii=False)`` (a property name or enum string).

        A regex terminal rather than a Lark string literal: literals beat regexes on equal
        lexemes, which would drop a parse when another branch lexes the same key through an
        additional-properties regex.  Only the canonical spelling is accepted.
        """
        return self.terminal(("bytes", json.dumps(value, ensure_ascii=False).encode("utf-8")))

    # -- rules for schema positions ------------------------------------------------------
    def rule_for(self, subs: tuple) -> str | None:
        """Rule name for the values satisfying every schema in ``subs`` (None: none do)."""
        uniq = {}
        for s in subs:
            if s.schema is False:
                return None
            if s.schema is True:
                continue
            uniq.setdefault(id(s.schema), s)
        if not uniq:
            return self.any_value_rule()
        key = frozenset(uniq)
        name = self.memo.get(key)
        if name is None:
            name = self.fresh("s")
            self.memo[key] = name
            self.queue.append((name, tuple(uniq.values())))
        return name

    def run(self) -> None:
        while self.queue:
            name, subs = self.queue.popleft()
            try:
                self.rules[name] = self.alternatives(name, subs)
            except RecursionError:
                # regular languages (word tries of very long names, negations) nest as deep as
                # their words are long; past Python's recursion limit the schema is refused
                s = subs[0].schema
                kw = next((k for k in ("properties", "enum", "pattern", "patternProperties") if isinstance(s, dict) and k in s), "$ref")
                raise UnsupportedSchemaError(kw, subs[0].pointer, "its languages nest too deeply to compile") from None

    def alternatives(self, name: str, subs: tuple) -> list[list[str]]:
        ctx = self.ctx
        branches = ctx.product([ctx.expand(s) for s in subs], "allOf", subs[0].pointer)
        alts: list[list[str]] = []
        seen = set()
        for i, b in enumerate(branches):
            sh = ctx.merge(b)
            if sh is None:
                continue
            for a in self.shape_alts(sh, subs, f"{name}_{i}_"):
                t = tuple(a)
                if t not in seen:
                    seen.add(t)
                    alts.append(a)
        return alts

    def shape_alts(self, sh: Shape, subs: tuple, base: str) -> list[list[str]]:
        if sh.enum is not None:
            out = []
            for v in sh.enum:
                t = json_type(v)
                if not (sh.has(t) or t == "integer" and sh.has("number")):
                    continue
                if any(json_equal(v, x) for x in sh.not_in):
                    continue
                if not sh.plain and not self.ctx.value_valid(v, subs):
                    continue
                out.append(self.literal(v, plain_integers=sh.has("integer") and not sh.has("number")))
            return out
        out = []
        if sh.has("null") and not any(x is None for x in sh.not_in):
            out.append(['"null"'])
        if sh.has("boolean"):
            for v, word in ((True, '"true"'), (False, '"false"')):
                if not any(x is v for x in sh.not_in):
                    out.append([word])
        if sh.has("integer") or sh.has("number"):
            node = self.number_node(sh)
            if node is not None and not rx.is_empty_language(node):
                kw = "multipleOf" if sh.multiple_of else "minimum" if sh.lo is not None else "maximum"
                out.append([self.plain_terminal(node, (kw, sh.pointer))])
        if sh.has("string"):
            lang = self.ctx.string_language(sh)
            if not rx.is_empty_language(lang):
                if sh.langs:
                    origin = (sh.langs[-1][2].rsplit("/", 1)[-1], sh.langs[-1][2])
                else:
                    origin = ("maxLength" if sh.max_len is not None else "minLength", sh.pointer)
                out.append([self.string_terminal(lang, origin)])
        if sh.has("array"):
            if any(isinstance(x, list) for x in sh.not_in):
                raise UnsupportedSchemaError("not", sh.pointer, "excluding array values is not supported")
            out.extend(self.array_alts(sh, base))
        if sh.has("object"):
            if any(isinstance(x, dict) for x in sh.not_in):
                raise UnsupportedSchemaError("not", sh.pointer, "excluding object values is not supported")
            out.extend(self.object_alts(sh, base))
        return out

    # -- literals ----------------------------------------------------------------------
    def literal(self, v, plain_integers: bool = False) -> list[str]:
        t = json_type(v)
        if v is None:
            return ['"null"']
        if v is True:
            return ['"true"']
        if v is False:
            return ['"false"']
        if t in ("integer", "number"):
            return [self.plain_terminal(_number_literal(v, plain_integers))]
        if t == "string":
            return [self.literal_terminal(v)]
        if t == "array":
            out = [_LSQB]
            for i, x in enumerate(v):
                if i:
                    out.append(_COMMA)
                out.extend(self.literal(x))
            return out + [_RSQB]
        out = [_LBRACE]
        for i, (k, x) in enumerate(v.items()):
            if i:
                out.append(_COMMA)
            out += [self.literal_terminal(k), _COLON] + self.literal(x)
        return out + [_RBRACE]

    def any_value_rule(self) -> str:
        if self.any_value is None:
            self.any_value = "json_value"
            string = self.string_terminal(rx.ANY_STRING)
            number = self.plain_terminal(any_number())
            self.rules["json_value"] = [
                ["json_object"], ["json_array"], [string], [number], ['"true"'], ['"false"'], ['"null"']
            ]
            self.rules["json_object"] = [[_LBRACE, _RBRACE], [_LBRACE, "json_members", _RBRACE]]
            self.rules["json_members"] = [[string, _COLON, "json_value"], ["json_members", _COMMA, string, _COLON, "json_value"]]
            self.rules["json_array"] = [[_LSQB, _RSQB], [_LSQB, "json_items", _RSQB]]
            self.rules["json_items"] = [["json_value"], ["json_items", _COMMA, "json_value"]]
        return self.any_value

    # -- numbers -----------------------------------------------------------------------
    def number_node(self, sh: Shape) -> rx.Node | None:
        integer_only = sh.has("integer") and not sh.has("number")
        # an "integer" type is written in integer syntax only (2, never 2.0 or 2.000...):
        # a trailing-zero run is a trap a small model can loop in.  A "number" whose
        # multipleOf is integral keeps the zero fraction (numbers take any spelling).
        plain = integer_only
        ptr = sh.multiple_of[0][1] if sh.multiple_of else sh.pointer
        step: Fraction | None = None
        for m, _ in sh.multiple_of:
            f = Fraction(m)
            step = f if step is None else _lcm(step, f)
        if step is not None and step.denominator == 1:
            integer_only = True  # multiples of an integer are integers
        if integer_only and step is not None:
            step = _lcm(step, Fraction(1))  # the integers among multiples of p/q: multiples of p
        if integer_only and sh.non_integer:
            return None
        a = k = None
        if step is not None:
            # finite decimals that are multiples of p/q: multiples of p/(2**x 5**y)
            q = step.denominator
            while q % 2 == 0:
                q //= 2
            while q % 5 == 0:
                q //= 5
            step = step * q
            k = 0
            while (step * 10**k).denominator != 1:
                k += 1
            a = int(step * 10**k)
        parts = []
        for lo, lo_s, hi, hi_s in _split_intervals((sh.lo, sh.lo_strict, sh.hi, sh.hi_strict), sh.not_in):
            if integer_only:
                ilo = None if lo is None else _ceil_int(lo, lo_s)
                ihi = None if hi is None else _floor_int(hi, hi_s)
                if ilo is not None and ihi is not None and ilo > ihi:
                    continue
                if a is None or a == 1:
                    node = integer_range(ilo, ihi) if plain else rx.seq(integer_range(ilo, ihi), _ZERO_FRACTION)
                    if (ilo is None or ilo <= 0) and (ihi is None or ihi >= 0):
                        node = rx.alt(node, rx.lit("-0") if plain else NEGATIVE_ZERO)
                else:
                    node = self.multiples(ilo, ihi, Fraction(a), 0, True, ptr, plain=plain)
            elif a is None:
                node = None
                if not sh.not_in:
                    node = number_with_exponent(lo, lo_s, hi, hi_s)
                if node is None:
                    node = rx.alt(decimal_range(lo, lo_s, hi, hi_s), _tiny_exponent_forms(lo, hi))
            elif a == 1:
                node = decimal_range(lo, lo_s, hi, hi_s, k)
            else:
                node = self.multiples(lo, hi, Fraction(a, 10**k), k, False, ptr, lo_s, hi_s)
            if sh.non_integer:
                node = rx.intersect(node, rx.pattern_language(r"^-?(?:0|[1-9][0-9]*)\.[0-9]*[1-9][0-9]*$"))
            parts.append(node)
        return rx.alt(*parts) if parts else None

    def multiples(self, lo, hi, step: Fraction, k: int, integer_only: bool, ptr: str, lo_s=False, hi_s=False,
                  plain: bool = False) -> rx.Node:
        """Numbers in [lo, hi] that are multiples of ``step`` (= a / 10**k); ``plain``:
        integer syntax only (no ``.0`` fraction)."""
        if lo is not None and hi is not None:
            first = math.ceil(Fraction(lo) / step)
            last = math.floor(Fraction(hi) / step)
            if last - first + 1 <= MAX_ENUMERATED_NUMBERS:
                opts = []
                for i in range(first, last + 1):
                    v = i * step
                    if (lo_s and v == Fraction(lo)) or (hi_s and v == Fraction(hi)):
                        continue
                    opts.append(_number_literal(v, plain))
                return rx.alt(*opts)
        a = int(step * 10**k)
        div = multiple_language(a, k, integer_only, plain)
        if div is None or len(rx.plain_regex(div)) > MAX_DIVISIBILITY_REGEX:
            raise UnsupportedSchemaError("multipleOf", ptr, f"multiples of {step} are not expressible as a small regex")
        if lo is None and hi is None:
            return div
        if integer_only:
            rng = integer_range(lo, hi) if plain else rx.seq(integer_range(lo, hi), _ZERO_FRACTION)
        else:
            rng = decimal_range(lo, lo_s, hi, hi_s, k)
        try:
            return rx.intersect(div, rng)
        except rx.RegexUnsupported:
            raise UnsupportedSchemaError("multipleOf", ptr, f"multiples of {step} in this range are not expressible") from None


    # -- arrays ------------------------------------------------------------------------
    def array_alts(self, sh: Shape, base: str) -> list[list[str]]:
        parts = sh.arr_parts
        P = max((len(ap.prefix) for ap in parts), default=0)
        m, M = sh.min_items, sh.max_items
        distinct_item = None
        if sh.unique:
            unique = self.unique_alts(sh, P)
            if isinstance(unique, tuple):  # items are distinct strings or integers: the engine compares them
                distinct_item, most = unique
                if most is not None:  # a finite item language: no more items than values
                    M = most if M is None else min(M, most)
            elif unique is not None:
                return unique
        values = []
        for i in range(P):
            subs = []
            for ap in parts:
                s = ap.prefix[i] if i < len(ap.prefix) else ap.rest
                if s is not None:
                    subs.append(s)
            v = self.rule_for(tuple(subs))
            if v is None:
                M = i if M is None else min(M, i)
                break
            values.append(v)
        rest = distinct_item or self.rule_for(tuple(ap.rest for ap in parts if ap.rest is not None))
        if rest is None:
            M = P if M is None else min(M, P)
        if M is not None and m > M:
            return []
        alts = [[_LSQB, _RSQB]] if m == 0 else []
        if M == 0:
            return alts

        def value(i: int) -> str:
            return values[i] if i < len(values) else rest

        def chain(count: int, tail: str | None) -> list[list[str]]:
            """Elements ``0 .. count-1`` as a chain of rules (the first ``m`` required), then ``tail``."""
            nxt = tail
            for i in range(count - 1, -1, -1):
                name = f"{base}e{i}"
                body = ([] if i == 0 else [_COMMA]) + [value(i)]
                if nxt is not None:
                    body.append(nxt)
                self.rules[name] = [body]
                nxt = name if i < m else _opt(name)
            return alts + [[_LSQB, f"{base}e0", _RSQB]]

        if M is None:
            T = max(len(values), m)
            more = None
            if rest is not None:
                more = base + "more"
                self.rules[more] = [[_COMMA, rest], [more, _COMMA, rest]]
            if T > MAX_CHAIN:
                raise UnsupportedSchemaError("minItems", sh.pointer, "array length bounds too large")
            if T == 0:
                return alts + [[_LSQB, rest] + ([_opt(more)] if more else []) + [_RSQB]]
            return chain(T, _opt(more) if more else None)
        if M > MAX_CHAIN:
            raise UnsupportedSchemaError("maxItems", sh.pointer, "array length bounds too large")
        return chain(M, None)

    def unique_alts(self, sh: Shape, n_prefix: int) -> list[list[str]] | None:
        """``uniqueItems: true`` over items from finite sets (enum, const, boolean, null), per
        position (``prefixItems``) and after: a family of item sets.  Other items raise
        (``strict``) or are not kept distinct (None)."""
        found: list = []  # [(value, spellings)], the distinct values of every position
        positions = []
        for i in range(n_prefix + 1):
            subs = tuple(s for ap in sh.arr_parts
                         for s in [ap.prefix[i] if i < len(ap.prefix) else ap.rest] if s is not None)
            values = self.finite_values(subs)
            if values is None:
                if i < n_prefix or sh.max_items is None or sh.max_items > n_prefix:
                    distinct = self.distinct_items(subs, sh) if n_prefix == 0 else None
                    if distinct is not None:
                        return distinct
                    if not self.ctx.strict:
                        return None
                    raise UnsupportedSchemaError(
                        "uniqueItems", sh.unique, "distinct items are supported from finite sets (enum, const, "
                        "boolean, null), as strings and as integers, without prefixItems; not other numbers, "
                        "objects or arrays")
                values = []  # no item can be there (maxItems)
            indices = set()
            for v, spellings in values:
                for j, (w, known) in enumerate(found):
                    if json_equal(v, w):
                        known.extend(sp for sp in spellings if sp not in known)
                        break
                else:
                    j = len(found)
                    found.append((v, list(spellings)))
                indices.add(j)
            positions.append(frozenset(indices))
        family = UniqueValues([sp for _, sp in found], positions[:-1], positions[-1], sh.min_items, sh.max_items)
        return self.family_alts(family, _LSQB, _RSQB)

    def distinct_items(self, subs: tuple, sh: Shape) -> tuple | list | None:
        """``(terminal, most items)`` for items that the engine keeps distinct (the terminal
        joins ``distinct``): strings, or integers written as integers (one spelling per
        value but ``-0``).  ``[]`` when fewer values exist than ``minItems`` asks for; None
        when the items are not plainly one of those.

        The engine checks each item as it ends, and each prefix for a value not written
        yet (:mod:`guided.grammars.distinct`), so bounded languages (``maxLength``, finite
        patterns, integer ranges) are exact too.  An item language of at most
        ``MAX_CHAIN`` values also bounds the array's length by its number of values, so the
        array cannot run out of new items; a larger finite one could only past
        ``MAX_CHAIN`` items, which is not counted.
        """
        item = self.item_shapes(subs)
        shapes = [] if item is None else list(item[1])
        if len(shapes) != 1 or shapes[0].enum is not None:
            return None
        s = shapes[0]
        if s.types == {"string"}:
            lang, source = self.ctx.string_language(s), "distinct"
        elif s.types <= {"integer", "number"} and "integer" in s.types:
            lang, source = self.number_node(s), "distinct-plain"
            if lang is None or not rx.is_empty(rx.difference(lang, _PLAIN_INTEGERS)):
                return None  # other spellings of one value (2.0, 2e0): not kept distinct
        else:
            return None
        try:
            count = rx.count_words(lang, MAX_CHAIN + 2)
        except rx.RegexUnsupported:
            return None
        if count == 0:
            return None
        if source == "distinct-plain" and rx.matches(lang, "-0") and rx.matches(lang, "0"):
            count -= 1  # one value
        if count < sh.min_items:
            return []
        return self.terminal((source, lang), ("uniqueItems", s.pointer)), (count if count <= MAX_CHAIN else None)

    def item_shapes(self, subs: tuple) -> tuple[tuple, Iterator] | None:
        """``(the distinct schemas of subs, the merged shapes of their branches)`` for an item
        satisfying every schema in ``subs`` (shapes merged as they are iterated; none when
        no value can), or None when nothing constrains the item."""
        ctx = self.ctx
        uniq = tuple({id(s.schema): s for s in subs if s.schema is not True}.values())
        if any(s.schema is False for s in uniq):
            return uniq, iter(())
        if not uniq:
            return None
        return uniq, (sh for b in ctx.product([ctx.expand(s) for s in uniq], "allOf", uniq[0].pointer)
                      for sh in [ctx.merge(b)] if sh is not None)

    def finite_values(self, subs: tuple) -> list | None:
        """``(value, spellings)`` for each distinct value satisfying every schema in ``subs``,
        when those values are finitely many; else None."""
        ctx = self.ctx
        item = self.item_shapes(subs)
        if item is None:
            return None
        uniq, shapes = item
        found: list = []  # [(value, [spellings])]
        for sh in shapes:
            if sh.enum is None:
                if not sh.types <= {"null", "boolean"}:
                    return None
                candidates = [None] * sh.has("null") + [True, False] * sh.has("boolean")
                candidates = [v for v in candidates if not any(x is v for x in sh.not_in)]
            else:
                candidates = [v for v in sh.enum
                              if (sh.has(json_type(v)) or json_type(v) == "integer" and sh.has("number"))
                              and not any(json_equal(v, x) for x in sh.not_in)
                              and (sh.plain or ctx.value_valid(v, uniq))]
            plain = sh.has("integer") and not sh.has("number")
            for v in candidates:
                spelling = self.literal(v, plain_integers=plain)
                for value, spellings in found:
                    if json_equal(value, v):
                        if spelling not in spellings:
                            spellings.append(spelling)
                        break
                else:
                    found.append((v, [spelling]))
        return found

    # -- objects -----------------------------------------------------------------------
    def object_alts(self, sh: Shape, base: str) -> list[list[str]]:
        ctx = self.ctx
        if len(sh.outside) > 1:
            raise UnsupportedSchemaError("not", sh.pointer, "more than one complemented additionalProperties: false")
        out_names, out_patterns = sh.outside[0] if sh.outside else (frozenset(), ())
        out_langs = []
        for pat in out_patterns:
            try:
                out_langs.append(rx.pattern_language(pat))
            except rx.RegexUnsupported as exc:
                raise UnsupportedSchemaError("not", sh.pointer, str(exc)) from None

        def witness(k: str) -> bool:
            """Does key ``k`` satisfy a complemented ``additionalProperties: false``?"""
            return bool(sh.outside) and k not in out_names and not any(rx.matches(x, k) for x in out_langs)

        names_lang = self.property_names_language(sh)
        order: list[str] = []
        for op in sh.obj_parts:
            for k in op.props:
                if k not in order:
                    order.append(k)
        for k in list(sh.required) + sorted(out_names):
            if k not in order:
                order.append(k)
        required = set(sh.required)
        keys = []  # (key terminal, value rule, required, witness)
        for k in order:
            schemas = ctx.key_schemas(sh, k)
            allowed = schemas is not None and (names_lang is None or rx.matches(names_lang, k))
            v = self.rule_for(tuple(schemas)) if allowed else None
            if v is None:
                if k in required:
                    return []
                continue
            keys.append((self.literal_terminal(k), v, k in required, witness(k)))
        extras = []  # (rule, witness)
        regions = self.extra_regions(sh, order, names_lang, out_langs)
        for tag, want in (("w", True), ("n", False)):
            alts = [[key, _COLON, val] for key, val, wit in regions if wit == want]
            if alts:
                name = f"{base}x{tag}"
                self.rules[name] = alts
                extras.append((name, want))
        if self.property_order == "any":
            return self.family_alts(PropertySet(keys, extras, sh.min_props, sh.max_props, bool(sh.outside)),
                                    _LBRACE, _RBRACE)
        return self.members(keys, extras, sh.min_props, sh.max_props, bool(sh.outside), base, sh.pointer)

    def family_alts(self, family, open_: str, close: str) -> list[list[str]]:
        """``open_ <family's initial state> close``, the state's rules made by the parser on demand."""
        if not family.productive(family.initial()):
            return []
        self.families.append(family)
        return [[open_, entry_name(len(self.families) - 1, family), close]]

    def members(self, keys, extras, min_p, max_p, need_witness, base, ptr) -> list[list[str]]:
        """``{`` members ``}``: named keys in order (optional ones skippable), others anywhere.

        An automaton over members, one rule per state: ``K(i, c, w, f)`` is at named key
        ``i`` (emit or skip it), ``E(i, c, w)`` just after a member (more unnamed members
        may follow).  ``c`` counts members for min/maxProperties, ``w`` records whether a
        key witnessing a complemented ``additionalProperties: false`` was written, ``f``
        whether nothing was written yet (no comma).  Unnamed members come only right
        after another member or first, so every text has one parse.  Rules are non-empty;
        a state that may also end is referenced with ``?``.
        """
        n = len(keys)
        if max_p is not None and min_p > max_p:
            return []
        cap = max_p if max_p is not None else min_p
        ws = (False, True) if need_witness else (True,)
        if (n + 1) * (cap + 1) * len(ws) > MAX_CHAIN * 4:
            raise UnsupportedSchemaError("maxProperties" if max_p is not None else "minProperties", ptr,
                                         "too many property/count combinations")
        req_after = [False] * (n + 1)
        for i in range(n - 1, -1, -1):
            req_after[i] = req_after[i + 1] or keys[i][2]

        def clamp(c: int) -> int:
            return min(c, cap) if max_p is None else c

        def can_end(i: int, c: int, w: bool) -> bool:
            return not req_after[i] and c >= min_p and w

        def k_name(i, c, w, f):
            return f"{base}k{i}_{c}{'w' if w else ''}{'f' if f else ''}"

        def e_name(i, c, w):
            if not extras:
                return k_name(i, c, w, False)  # nothing can come between members: E is K
            return f"{base}e{i}_{c}{'w' if w else ''}"

        def ref(name: str, nullable: bool) -> list[str]:
            return [_opt(name)] if nullable else [name]

        w0 = not need_witness
        for i in range(n, -1, -1):
            for c in range(cap, -1, -1):
                for w in ws:
                    for f in ((False, True) if c == 0 else (False,)):
                        alts = []
                        sep = [] if f else [_COMMA]
                        if i < n:
                            key, val, req, wit = keys[i]
                            if max_p is None or c + 1 <= max_p:
                                c2, w2 = clamp(c + 1), w or wit
                                alts.append(sep + [key, _COLON, val] + ref(e_name(i + 1, c2, w2), can_end(i + 1, c2, w2)))
                            if not req:
                                alts.append([k_name(i + 1, c, w, f)])
                        if alts:
                            self.rules[k_name(i, c, w, f)] = alts
                    if not extras:
                        continue
                    alts = []
                    if max_p is None or c + 1 <= max_p:
                        for x, wit in extras:
                            c2, w2 = clamp(c + 1), w or wit
                            alts.append([_COMMA, x] + ref(e_name(i, c2, w2), can_end(i, c2, w2)))
                    alts.append([k_name(i, c, w, False)])
                    self.rules[e_name(i, c, w)] = alts
        start = f"{base}s"
        alts = []
        if max_p is None or max_p >= 1:
            for x, wit in extras:
                c2, w2 = clamp(1), w0 or wit
                alts.append([x] + ref(e_name(0, c2, w2), can_end(0, c2, w2)))
        alts.append([k_name(0, 0, w0, True)])
        self.rules[start] = alts
        out = [[_LBRACE, _RBRACE]] if can_end(0, 0, w0) else []
        return out + [[_LBRACE, start, _RBRACE]]

    def property_names_language(self, sh: Shape) -> rx.Node | None:
        if not sh.prop_names:
            return None
        ctx = self.ctx
        lang = rx.ANY_STRING
        for sub in sh.prop_names:
            union = []
            for b in ctx.expand(sub):
                s = ctx.merge(b)
                if s is None or not s.has("string"):
                    continue
                if s.enum is not None:
                    union.append(rx.words_language([v for v in s.enum if isinstance(v, str)]))
                    continue
                union.append(ctx.string_language(s))
            lang = rx.intersect(lang, rx.alt(*union)) if union else rx.NOTHING
        return lang

    def extra_regions(self, sh: Shape, named: list[str], names_lang, marks=()) -> list[tuple[str, str, bool]]:
        """(key terminal, value rule, witness) for keys not named by the schema.

        Keys are split into regions by the patternProperties they match (each region's
        value schema is fixed); ``marks`` are further patterns that only split regions:
        ``witness`` is True where a region's keys match none of them.
        """
        patterns = [(pat, sub, ptr, i) for i, op in enumerate(sh.obj_parts) for pat, sub, ptr in op.patterns]
        if len(patterns) + len(marks) > 4:
            raise UnsupportedSchemaError("patternProperties", patterns[0][2] if patterns else sh.pointer,
                                         "more than 4 property-name patterns")
        langs = []
        for pat, _, ptr, _ in patterns:
            try:
                langs.append(rx.pattern_language(pat))
            except rx.RegexUnsupported as exc:
                raise UnsupportedSchemaError("patternProperties", ptr, str(exc)) from None
        n_real = len(patterns)
        langs = langs + list(marks)
        out = []
        for mask in range(1 << len(langs)):
            subs = [patterns[j][1] for j in range(n_real) if mask >> j & 1]
            hit_parts = {patterns[j][3] for j in range(n_real) if mask >> j & 1}
            for i, op in enumerate(sh.obj_parts):
                if i not in hit_parts and op.additional is not None:
                    subs.append(op.additional)
            if any(s.schema is False for s in subs):
                continue
            # the region from the (small) pattern languages first; named keys are then
            # excluded only where they fall in it (the usual case: none or all of them)
            lang = rx.ANY_STRING
            try:
                for j, lj in enumerate(langs):
                    lang = rx.intersect(lang, lj) if mask >> j & 1 else rx.difference(lang, lj)
                if rx.is_empty_language(lang):
                    continue
                inside = [k for k in named if lang == rx.ANY_STRING or rx.matches(lang, k)]
                if inside:
                    lang = rx.intersect(lang, rx.not_words_language(inside))
                if names_lang is not None:
                    lang = rx.intersect(lang, names_lang)
            except rx.RegexUnsupported as exc:
                raise UnsupportedSchemaError("patternProperties", sh.pointer, str(exc)) from None
            if rx.is_empty_language(lang):
                continue
            v = self.rule_for(tuple(subs))
            if v is None:
                continue
            origin = ("patternProperties" if patterns else "additionalProperties", sh.pointer)
            out.append((self.string_terminal(lang, origin), v, not (mask >> n_real)))
        return out

    # -- output ------------------------------------------------------------------------
    def output(self, start: str, whitespace: str) -> "SchemaGrammar":
        rules = _prune(self.rules, start, set(self.terminals.values()), self.families)
        used = {s.rstrip("?") for alts in rules.values() for a in alts for s in a} | {start}
        # families no kept rule uses are gone (None keeps the others' numbers, their names)
        self.families = [f if entry_name(i, f) in used else None for i, f in enumerate(self.families)]
        used |= {s for f in self.families if f is not None for s in f.symbols()}
        terminals = {name: source for source, name in self.terminals.items() if name in used}
        if whitespace == "bounded":
            rules = _bounded_punctuation(rules, terminals)
            for fam in filter(None, self.families):  # their lazily made rules write the same punctuation
                for sym in fam.punctuation():
                    if sym in _BOUNDED:
                        term, regex = _BOUNDED[sym]
                        terminals[term] = ("regex", regex)
        distinct = frozenset(n for n, source in terminals.items() if source[0] in ("distinct", "distinct-plain"))
        return SchemaGrammar(start, rules, terminals, whitespace, dict(self.origins), self.families, distinct)


# Punctuation that carries its bounded whitespace: after openers and separators, before closers;
# an empty object or array is one terminal, so "{" "}" cannot hold two runs.
_WS = BOUNDED_WHITESPACE
_BOUNDED = {
    _LBRACE: ("WS_LBRACE", r"\{" + _WS + "?"),
    _LSQB: ("WS_LSQB", r"\[" + _WS + "?"),
    _COMMA: ("WS_COMMA", "," + _WS + "?"),
    _COLON: ("WS_COLON", ":" + _WS + "?"),
    _RBRACE: ("WS_RBRACE", _WS + r"?\}"),
    _RSQB: ("WS_RSQB", _WS + r"?\]"),
}
_BOUNDED_EMPTY = {
    (_LBRACE, _RBRACE): ("WS_EMPTY_OBJECT", r"\{" + _WS + r"?\}"),
    (_LSQB, _RSQB): ("WS_EMPTY_ARRAY", r"\[" + _WS + r"?\]"),
}


def family_symbol(sym: str, whitespace: str) -> str:
    """The symbol a family's lazily made rule uses for ``sym``: under bounded whitespace, JSON
    punctuation is the terminal that carries its whitespace, as in the written-out rules."""
    if whitespace == "bounded" and sym in _BOUNDED:
        return _BOUNDED[sym][0]
    return sym


def _bounded_punctuation(rules: dict, terminals: dict) -> dict:
    """``rules`` with JSON punctuation replaced by terminals that carry bounded whitespace
    (added to ``terminals`` as ``("regex", text)`` sources)."""
    out: dict = {}
    for name, alts in rules.items():
        new_alts = []
        for alt in alts:
            new: list = []
            i = 0
            while i < len(alt):
                pair = tuple(alt[i : i + 2])
                if pair in _BOUNDED_EMPTY:
                    term, regex = _BOUNDED_EMPTY[pair]
                    i += 2
                elif alt[i] in _BOUNDED:
                    term, regex = _BOUNDED[alt[i]]
                    i += 1
                else:
                    new.append(alt[i])
                    i += 1
                    continue
                terminals[term] = ("regex", regex)
                new.append(term)
            new_alts.append(new)
        out[name] = new_alts
    return out


def terminal_regex(source: tuple) -> str:
    """Python regex text of a terminal ``source`` (see :meth:`_Builder.terminal`)."""
    kind, value = source
    if kind in ("json", "distinct"):
        return rx.json_string_regex(value)
    if kind in ("plain", "distinct-plain"):
        return rx.plain_regex(value)
    if kind == "regex":
        return value
    return re.escape(value.decode("utf-8"))


@dataclass
class SchemaGrammar:
    """A compiled schema as plain data for the grammar engine, and as Lark text (``text``).

    ``rules``: rule name -> alternatives (symbols: rule names, ``name?`` for an optional
    rule, terminal names, quoted punctuation such as ``'"{"'``); ``terminals``: name ->
    source (see :meth:`_Builder.terminal`, or ``("regex", text)`` for punctuation with bounded
    whitespace); ``whitespace``: one of :data:`WHITESPACE_MODES`;
    ``origins``: terminal name -> (keyword, JSON pointer); ``families``: the sets a parse
    remembers (:mod:`guided.json_schema.families`), used as symbols ``@p<i>``/``@u<i>``.
    """

    root: str  # the rule of the whole value (the text's ``start: root``)
    rules: dict
    terminals: dict
    whitespace: str
    origins: dict
    families: list = field(default_factory=list)
    # terminals (uniqueItems' string items) whose lexemes must differ within one array: the
    # engine compares them (GrammarSpec.distinct); the Lark text writes them as plain strings
    distinct: frozenset = frozenset()
    _text: str | None = None

    @property
    def text(self) -> str:
        """The Lark grammar (written on first use: regex text of large languages is long)."""
        if self._text is None:
            lines = [f"start: {self.root}"]
            for name, alts in self.rules.items():
                lines.append(f"{name}: " + " | ".join(" ".join(_lark_name(s) for s in a) for a in alts))
            lines += family_text(self.families, self.whitespace)
            lines += [f"// {name}: items pairwise distinct within one array (uniqueItems), kept by the grammar "
                      f"state, not by this text" for name in sorted(self.distinct)]
            for name, source in self.terminals.items():
                try:
                    regex = terminal_regex(source)
                except rx.RegexUnsupported:  # a length limit too large to write out (rx.Counted)
                    lines.append(f"// {name}: its length limit is kept by the compiled automaton, not by this text")
                    regex = terminal_regex((source[0], rx.uncounted(source[1])))
                lines.append(f"{name}: /{_lark_regex(regex)}/")
            if self.whitespace == "flexible":
                lines.append(f"%ignore /{WHITESPACE}/")
            self._text = "\n".join(lines) + "\n"
        return self._text


def _lark_name(sym: str) -> str:
    return "fam_" + sym[1:] if sym.startswith("@") else sym


def family_text(families: list, whitespace: str = "flexible") -> list[str]:
    """Lark lines for the families: the order-free (or repetition-free) superset, with a
    comment saying what the parser's state adds."""
    lines = []
    comma, colon = (_lark_name(family_symbol(p, whitespace)) for p in (_COMMA, _COLON))
    for i, fam in enumerate(families):
        if fam is None:
            continue
        name = _lark_name(entry_name(i, fam))
        if isinstance(fam, PropertySet):
            members = [f"{k} {colon} {v}" for k, v, _, _ in fam.keys] + [x for x, _ in fam.extras]
            what = "each named property at most once, in any order; required ones and counts checked by the parser state"
        else:
            members = [" ".join(_lark_name(family_symbol(x, whitespace)) for x in sp) for spellings in fam.values for sp in spellings]
            what = "items pairwise distinct (uniqueItems), kept by the parser state"
        if not members:
            lines.append(f"{name}: ")
            continue
        one = f"{name}_m"
        lines.append(f"// {name}: {what}")
        lines.append(f"{name}: ({one} ({comma} {one})*)?")
        lines.append(f"{one}: " + " | ".join(members))
    return lines



def _prune(rules: dict, start: str, terminals: set, families: list = ()) -> dict:
    """Drop rules that derive no string and those the start rule cannot reach.

    A family (``families``, named by :func:`entry_name`) derives something when its required
    symbols do and its sets allow ``}``; its keys whose values derive nothing are dropped.
    """

    def is_rule(sym: str) -> bool:
        return not sym.startswith('"') and sym.rstrip("?") not in terminals

    entries = {entry_name(i, f): f for i, f in enumerate(families)}
    static = [(name, a) for name, alts in rules.items() for a in alts]
    dead: set = set()
    while True:
        pseudo = [(e, f.requirements()) for e, f in entries.items() if e not in dead]
        productive = derivable(static + pseudo, lambda s: is_rule(s) and not s.endswith("?"), lambda s: True)
        newly = {e for e, f in entries.items() if e not in dead
                 and (e not in productive or not f.keep(lambda s: not is_rule(s) or s in productive))}
        if not newly:
            break
        dead |= newly
    cleaned: dict = {}
    for name, alts in rules.items():
        if name not in productive:
            continue
        new = []
        for a in alts:
            if any(is_rule(s) and not s.endswith("?") and s not in productive for s in a):
                continue
            b = [s for s in a if not (is_rule(s) and s.endswith("?") and s[:-1] not in productive)]
            if b:
                new.append(b)
        cleaned[name] = new
    if start not in cleaned:
        raise UnsatisfiableSchemaError("no JSON value satisfies this schema")
    # inline rules that are a single symbol (r: X), which Lark would otherwise compile as rules
    alias: dict = {}
    for name, alts in cleaned.items():
        if len(alts) == 1 and len(alts[0]) == 1 and not alts[0][0].endswith("?") and name != start:
            alias[name] = alts[0][0]

    def resolve(sym: str) -> str:
        opt = sym.endswith("?")
        base = sym[:-1] if opt else sym
        seen = set()
        while base in alias and base not in seen:
            seen.add(base)
            base = alias[base]
        return base + "?" if opt else base

    if alias:
        cleaned = {k: [[resolve(x) for x in a] for a in v] for k, v in cleaned.items() if k not in alias}
        for f in families:
            f.rename(resolve)
    if start not in cleaned:
        raise UnsatisfiableSchemaError("no JSON value satisfies this schema")
    reach = {start}
    stack = [start]
    while stack:
        for a in cleaned[stack.pop()]:
            for s in a:
                s = s.rstrip("?")
                for t in entries[s].symbols() if s in entries else (s,):
                    if is_rule(t) and t in cleaned and t not in reach:
                        reach.add(t)
                        stack.append(t)
    return {k: v for k, v in cleaned.items() if k in reach}


_PLAIN_INTEGERS = rx.pattern_language(r"^-?(?:0|[1-9][0-9]*)$")  # integers as integers (and -0)
_ZERO_FRACTION = rx.opt(rx.seq(rx.lit("."), rx.rep(rx.lit("0"), 1, None)))  # 2.0 is the integer 2


_TINY = rx.pattern_language(r"^[1-9](?:\.[0-9]+)?[eE]-0*[1-9][0-9]*$")  # 0 < x < 1, as json.dumps writes 1e-05


def _tiny_exponent_forms(lo, hi) -> rx.Node:
    """Exponent spellings of numbers strictly between -1 and 1, where the range holds them all."""
    opts = []
    if (lo is None or lo <= 0) and (hi is None or hi >= 1):
        opts.append(_TINY)
    if (lo is None or lo <= -1) and (hi is None or hi >= 0):
        opts.append(rx.seq(rx.lit("-"), _TINY))
    return rx.alt(*opts)


def _lcm(a: Fraction, b: Fraction) -> Fraction:
    """Least common multiple of two positive rationals."""
    return Fraction(a.numerator * b.numerator // math.gcd(a.numerator, b.numerator),
                    math.gcd(a.denominator, b.denominator))


def _ceil_int(x: Decimal, strict: bool) -> int:
    c = math.ceil(x)
    return c + 1 if strict and c == x else c


def _floor_int(x: Decimal, strict: bool) -> int:
    f = math.floor(x)
    return f - 1 if strict and f == x else f


def _split_intervals(interval, not_in) -> list:
    """Remove excluded numbers (``not``/``oneOf`` complements) from a range."""
    intervals = [interval]
    for v in not_in:
        if json_type(v) not in ("integer", "number"):
            continue
        x = to_decimal(v)
        nxt = []
        for lo, lo_s, hi, hi_s in intervals:
            inside = (lo is None or lo < x or lo == x and not lo_s) and (hi is None or x < hi or x == hi and not hi_s)
            if not inside:
                nxt.append((lo, lo_s, hi, hi_s))
                continue
            if lo is None or lo < x:
                nxt.append((lo, lo_s, x, True))
            if hi is None or x < hi:
                nxt.append((x, True, hi, hi_s))
        intervals = nxt
    return intervals


def _number_literal(v, plain: bool = False) -> rx.Node:
    """The JSON text of number ``v``, with equal spellings (``2``, ``2.0``, ``2.50``) accepted;
    ``plain``: an integral ``v`` only as an integer (``2``)."""
    if isinstance(v, float) and not v.is_integer():
        text = json.dumps(v)
        if "e" in text or "E" in text:
            return rx.lit(text)
        return rx.seq(rx.lit(text), rx.rep(rx.lit("0"), 0, None))
    f = Fraction(v) if not isinstance(v, Fraction) else v
    if f.denominator == 1:
        if plain:
            return rx.lit(str(f.numerator))
        return rx.seq(rx.lit(str(f.numerator)), rx.opt(rx.seq(rx.lit("."), rx.rep(rx.lit("0"), 1, None))))
    d = Decimal(f.numerator) / Decimal(f.denominator)
    text = format(d.normalize(), "f")
    return rx.seq(rx.lit(text), rx.rep(rx.lit("0"), 0, None))


def build_grammar(ctx: SchemaContext, *, whitespace: str = "bounded", property_order: str = "schema") -> SchemaGrammar:
    """The grammar (rule ``start``) whose sentences are the JSON texts ``ctx`` accepts,
    with the (keyword, JSON pointer) each schema-specific terminal comes from.
    ``whitespace``: ``"bounded"`` (see :data:`BOUNDED_WHITESPACE`), ``"flexible"`` (any run
    between tokens) or ``"compact"`` (none); ``property_order="any"``: object members in any
    order (see :class:`PropertySet`)."""
    b = _Builder(ctx, property_order)
    root = b.rule_for((ctx.root,))
    if root is None:
        raise UnsatisfiableSchemaError("no JSON value satisfies this schema (it is false)")
    b.run()
    return b.output(root, whitespace)
