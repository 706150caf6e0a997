"""Regular languages for JSON Schema ``format`` values and numeric ranges.

* :func:`format_language` -- the strings a known ``format`` accepts, as a regex AST over
  decoded characters (:mod:`guided.json_schema.regex`), or ``None`` for an
  unknown (annotation-only) format.
* :func:`integer_range` -- canonical JSON integers in ``[lo, hi]`` (either side open).
* :func:`decimal_range` -- JSON numbers in plain decimal notation with exact bounds.

    >>> plain_regex(integer_range(-5, 120))
    '-[1-5]|[0-9]|[1-9][0-9]|1[01][0-9]|120'

Numbers are compared as exact decimals (the value the JSON text denotes), which is the
JSON Schema semantics; bounds are the schema's numbers, a float bound read as its
shortest decimal (``0.1`` is 1/10).
"""

from __future__ import annotations

import functools
from decimal import Decimal

from guided.json_schema.regex import (
    EMPTY,
    NOTHING,
    CharSet,
    Chars,
    Node,
    alt,
    lit,
    pattern_language,
    rep,
    seq,
)

__all__ = [
    "KNOWN_FORMATS",
    "UNSUPPORTED_FORMATS",
    "format_language",
    "integer_range",
    "decimal_range",
    "to_decimal",
]

# -- formats ------------------------------------------------------------------------

_YEAR = r"(?:[1-9][0-9]{3}|0[1-9][0-9]{2}|00[1-9][0-9]|000[1-9])"  # 0001-9999 (Python's date range)
_LEAP_YEAR = r"(?:[0-9]{2}(?:0[48]|[2468][048]|[13579][26])|(?:0[48]|[2468][048]|[13579][26])00)"
_DATE = (
    rf"(?:{_YEAR}-(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)"
    rf"|02-(?:0[1-9]|1[0-9]|2[0-8]))|{_LEAP_YEAR}-02-29)"
)
# RFC 3339 full-time without leap seconds (their validity depends on the offset)
_TIME = r"(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]+)?(?:[Zz]|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])"
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
_IPV4 = rf"(?:{_OCTET}\.){{3}}{_OCTET}"
_H16 = r"[0-9a-fA-F]{1,4}"


def _ipv6() -> str:
    forms = [rf"(?:{_H16}:){{7}}{_H16}", rf"(?:{_H16}:){{6}}{_IPV4}"]
    # "::" stands for at least one group of zeros: left groups + right groups <= 7
    for left in range(0, 8):
        lpart = "" if left == 0 else rf"(?:{_H16}:){{{left - 1}}}{_H16}" if left > 1 else _H16
        right_max = 7 - left
        if right_max == 0:
            rpart = ""
        else:
            rpart = rf"(?:{_H16}(?::{_H16}){{0,{right_max - 1}}})?" if right_max > 1 else rf"(?:{_H16})?"
        forms.append(lpart + "::" + rpart)
        if 7 - left - 2 >= 0:  # with an IPv4 tail (two groups)
            k = 7 - left - 2
            forms.append(lpart + "::" + (rf"(?:{_H16}:){{0,{k}}}" if k else "") + _IPV4)
    return "(?:" + "|".join(forms) + ")"


# host name labels of at most 62 characters, never with "--" in 3rd-4th position (IDNA
# A-labels like "xn--..." need Punycode checks a regex cannot make)
_A = "[A-Za-z0-9]"
_AH = "[A-Za-z0-9-]"
_LABEL = rf"(?:{_A}(?:{_AH}?{_A})?|{_A}{_AH}(?:{_A}|-{_A}|{_A}{_A})|{_A}{_AH}(?:{_A}{_AH}|-{_A}){_AH}{{0,57}}{_A})"
_TLD = rf"(?:[A-Za-z](?:{_AH}?{_A})?|[A-Za-z]{_AH}(?:{_A}|-{_A}|{_A}{_A})|[A-Za-z]{_AH}(?:{_A}{_AH}|-{_A}){_AH}{{0,57}}{_A})"
# at most 4 labels of at most 62 characters: always within the 253-character limit
_HOSTNAME = rf"(?:{_LABEL}\.){{0,3}}{_TLD}"
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
# RFC 5321 Mailbox with a dot-atom local part and a domain of letter-digit-hyphen labels
_DOMAIN_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_EMAIL = rf"{_ATEXT}+(?:\.{_ATEXT}+)*@(?:{_DOMAIN_LABEL}\.)+[A-Za-z](?:[A-Za-z0-9-]*[A-Za-z0-9])?"

_UNRESERVED = r"A-Za-z0-9\-._~"
_SUBDELIMS = r"!$&'()*+,;="
_PCT = r"%[0-9A-Fa-f]{2}"


def _uri(iri: bool) -> tuple[str, str]:
    """(absolute URI, relative reference) after RFC 3986 (RFC 3987 when ``iri``)."""
    uc = r"\u00a0-\ud7ff\uf900-\ufdcf\ufdf0-\uffef" if iri else ""
    unres = _UNRESERVED + uc
    pchar = rf"(?:[{unres}{_SUBDELIMS}:@]|{_PCT})"
    seg_nc = rf"(?:[{unres}{_SUBDELIMS}@]|{_PCT})"
    userinfo = rf"(?:[{unres}{_SUBDELIMS}:]|{_PCT})*"
    host = rf"(?:[{unres}{_SUBDELIMS}]|{_PCT})*"  # reg-name (IP literals are not produced)
    authority = rf"(?:{userinfo}@)?{host}(?::[0-9]*)?"
    abempty = rf"(?:/{pchar}*)*"
    absolute = rf"/(?:{pchar}+(?:/{pchar}*)*)?"
    rootless = rf"{pchar}+(?:/{pchar}*)*"
    noscheme = rf"{seg_nc}+(?:/{pchar}*)*"
    query = rf"(?:\?(?:{pchar}|[/?])*)?"
    if iri:
        query = rf"(?:\?(?:{pchar}|[/?\ue000-\uf8ff])*)?"
    fragment = rf"(?:#(?:{pchar}|[/?])*)?"
    scheme = r"[A-Za-z][A-Za-z0-9+.\-]*"
    absolute_uri = rf"{scheme}:(?://{authority}{abempty}|{absolute}|{rootless}|){query}{fragment}"
    relative = rf"(?://{authority}{abempty}|{absolute}|{noscheme}|){query}{fragment}"
    return absolute_uri, relative


_URI, _RELATIVE_REF = _uri(False)
_IRI, _IRELATIVE_REF = _uri(True)
_JSON_POINTER = r"(?:/(?:[^~/]|~[01])*)*"
_DURATION_TIME = r"T(?:[0-9]+H(?:[0-9]+M(?:[0-9]+S)?)?|[0-9]+M(?:[0-9]+S)?|[0-9]+S)"
_DURATION = (
    rf"P(?:[0-9]+W|(?:[0-9]+D|[0-9]+M(?:[0-9]+D)?|[0-9]+Y(?:[0-9]+M(?:[0-9]+D)?)?)(?:{_DURATION_TIME})?"
    rf"|{_DURATION_TIME})"
)

_FORMAT_PATTERNS: dict[str, str] = {
    "date": _DATE,
    "time": _TIME,
    "date-time": rf"{_DATE}[Tt]{_TIME}",
    "email": _EMAIL,
    "hostname": _HOSTNAME,
    "ipv4": _IPV4,
    "ipv6": _ipv6(),
    "uuid": r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}",
    "uri": _URI,
    "uri-reference": f"(?:{_URI}|{_RELATIVE_REF})",
    "iri": _IRI,
    "iri-reference": f"(?:{_IRI}|{_IRELATIVE_REF})",
    "json-pointer": _JSON_POINTER,
    "relative-json-pointer": rf"(?:0|[1-9][0-9]*)(?:#|{_JSON_POINTER})",
    "duration": _DURATION,
}
KNOWN_FORMATS = frozenset(_FORMAT_PATTERNS)
# Standard formats whose languages are not regular (or not worth a regex): refused in
# strict mode rather than ignored.
UNSUPPORTED_FORMATS = frozenset({"regex", "uri-template", "idn-email", "idn-hostname"})


@functools.lru_cache(maxsize=None)
def format_language(name: str) -> Node | None:
    """Strings valid for ``format: name`` (a sound subset), or None if ``name`` is not known."""
    pattern = _FORMAT_PATTERNS.get(name)
    if pattern is None:
        return None
    return pattern_language("^(?:" + pattern + ")$")


# -- numbers -------------------------------------------------------------------------

_D = [Chars(CharSet.of(str(d))) for d in range(10)]


def _digits(lo: int, hi: int) -> Node:
    return Chars(CharSet.from_ranges([(48 + lo, 48 + hi)]))


def _fixed_width(a: str, b: str) -> Node:
    """Digit strings of len(a) == len(b) between a and b (leading zeros allowed)."""
    if not a:
        return EMPTY
    n = len(a) - 1
    if a[0] == b[0]:
        return seq(_D[int(a[0])], _fixed_width(a[1:], b[1:]))
    a_min = a[1:] == "0" * n
    b_max = b[1:] == "9" * n
    opts = []
    start = int(a[0]) if a_min else int(a[0]) + 1
    end = int(b[0]) if b_max else int(b[0]) - 1
    if not a_min:
        opts.append(seq(_D[int(a[0])], _fixed_width(a[1:], "9" * n)))
    if start <= end:
        opts.append(seq(_digits(start, end), rep(_digits(0, 9), n, n)))
    if not b_max:
        opts.append(seq(_D[int(b[0])], _fixed_width("0" * n, b[1:])))
    return alt(*opts)


def _natural_range(a: int, b: int | None) -> Node:
    """Canonical decimals (no leading zeros) of the integers in [a, b], a >= 0."""
    if b is not None and b < a:
        return NOTHING
    opts = []
    la = len(str(a))
    lb = len(str(b)) if b is not None else la
    for length in range(la, lb + 1):
        lo = max(a, 10 ** (length - 1) if length > 1 else 0)
        hi = 10**length - 1 if b is None else min(b, 10**length - 1)
        if lo <= hi:
            opts.append(_fixed_width(str(lo), str(hi)))
    if b is None:
        opts.append(seq(_digits(1, 9), rep(_digits(0, 9), la, None)))
    return alt(*opts)


def integer_range(lo: int | None, hi: int | None) -> Node:
    """Canonical JSON integers (``-?(0|[1-9][0-9]*)``, never ``-0``) in [lo, hi]."""
    opts = []
    if lo is None or lo < 0:
        neg_hi = -1 if hi is None else min(hi, -1)
        if lo is None or lo <= neg_hi:
            opts.append(seq(lit("-"), _natural_range(-neg_hi, None if lo is None else -lo)))
    if hi is None or hi >= 0:
        opts.append(_natural_range(max(lo, 0) if lo is not None else 0, hi))
    return alt(*opts)


def to_decimal(x) -> Decimal:
    """The exact decimal a schema number stands for (floats: their shortest repr)."""
    if isinstance(x, bool):
        raise TypeError("boolean is not a number")
    if isinstance(x, int):
        return Decimal(x)
    if isinstance(x, float):
        if abs(x) >= 2**53:
            return Decimal(x)  # exact: such floats are integers and repr may round
        return Decimal(repr(x))
    return Decimal(x)


def _split(x: Decimal) -> tuple[int, str]:
    """Integer part and fraction digits (no trailing zeros) of x >= 0."""
    i = int(x)
    frac = x - i
    if frac == 0:
        return i, ""
    text = format(frac, "f")  # '0.xxx'
    return i, text.split(".")[1].rstrip("0")


class _Frac:
    """Digit strings d after a decimal point with 0.d compared against bounds.

    ``lo``/``hi``: remaining bound digits (None: no constraint), ``*_strict``: strict
    comparison, ``budget``: digits still allowed before only zeros may follow (None: any).
    """

    @staticmethod
    @functools.lru_cache(maxsize=None)
    def lang(lo, lo_strict, hi, hi_strict, budget) -> Node:
        if lo == "" and not lo_strict:
            lo = None
        if hi == "" and hi_strict:
            return NOTHING
        ok_empty = (lo is None or (lo == "" and not lo_strict)) and (hi is None or not hi_strict or hi != "")
        if lo is None and hi is None:
            body = rep(_digits(0, 9), 0, None) if budget is None else seq(rep(_digits(0, 9), 0, budget), rep(_D[0], 0, None))
            return body
        if hi == "":  # only zeros may follow: the value stays 0
            return rep(_D[0], 0, None) if lo is None else NOTHING
        if lo == "" and hi is None and budget is None:  # some non-zero digit must come
            return seq(rep(_D[0], 0, None), _digits(1, 9), rep(_digits(0, 9), 0, None))
        if budget == 0:
            return rep(_D[0], 0, None) if ok_empty else NOTHING
        groups: dict = {}
        for c in range(10):
            nxt = _Frac.step(lo, lo_strict, hi, hi_strict, c)
            if nxt is None:
                continue
            groups.setdefault(nxt, []).append(c)
        opts = [EMPTY] if ok_empty else []
        for (nlo, nls, nhi, nhs), cs in groups.items():
            klass = Chars(CharSet.from_ranges([(48 + c, 48 + c) for c in cs]))
            nb = None if budget is None else budget - 1
            opts.append(seq(klass, _Frac.lang(nlo, nls, nhi, nhs, nb)))
        return alt(*opts)

    @staticmethod
    def step(lo, lo_strict, hi, hi_strict, c):
        if lo is not None:
            l0 = int(lo[0]) if lo else 0
            if c > l0:
                lo, lo_strict = None, False
            elif c == l0:
                lo = lo[1:]
            else:
                return None
        if hi is not None:
            if hi == "":
                if c != 0:
                    return None
            else:
                h0 = int(hi[0])
                if c < h0:
                    hi, hi_strict = None, False
                elif c == h0:
                    hi = hi[1:]
                else:
                    return None
        return (lo, lo_strict, hi, hi_strict)


def _frac_suffix(lo, lo_strict, hi, hi_strict, budget) -> Node:
    """``(\\.digits)?`` whose value satisfies the bounds (``lo``/``hi`` fraction digits or None)."""
    if lo == "" and not lo_strict:
        lo = None
    body = _Frac.lang(lo, lo_strict, hi, hi_strict, budget)
    empty_ok = (lo is None) and (hi is None or not hi_strict or hi != "")
    if hi == "" and hi_strict:
        empty_ok = False
    nonempty = _nonempty(body)
    return alt(EMPTY if empty_ok else NOTHING, seq(lit("."), nonempty))


def _nonempty(n: Node) -> Node:
    """Drop the empty word from a language built by :class:`_Frac`."""
    from guided.json_schema.regex import with_length

    return with_length(n, 1, None)


def _nonneg_decimal(a: Decimal, a_strict: bool, b: Decimal | None, b_strict: bool, budget) -> Node:
    """Decimals ``I(.F)?`` (no exponent) with a <=/< x <=/< b, a >= 0."""
    ai, af = _split(a)
    if b is not None:
        bi, bf = _split(b)
        if bi == ai:
            return seq(integer_range(ai, ai), _frac_suffix(af, a_strict, bf, b_strict, budget))
    opts = [seq(integer_range(ai, ai), _frac_suffix(af, a_strict, None, False, budget))]
    if b is None:
        opts.append(seq(integer_range(ai + 1, None), _frac_suffix(None, False, None, False, budget)))
    else:
        if bi - 1 >= ai + 1:
            opts.append(seq(integer_range(ai + 1, bi - 1), _frac_suffix(None, False, None, False, budget)))
        opts.append(seq(integer_range(bi, bi), _frac_suffix(None, False, bf, b_strict, budget)))
    return alt(*opts)


NEGATIVE_ZERO = seq(lit("-0"), rep(seq(lit("."), rep(_D[0], 1, None)), 0, 1))


def decimal_range(
    lo: Decimal | None,
    lo_strict: bool,
    hi: Decimal | None,
    hi_strict: bool,
    max_frac_digits: int | None = None,
) -> Node:
    """JSON numbers in plain decimal notation (``-?int(.frac)?``) in the given range.

    ``max_frac_digits`` limits the significant fraction digits (``multipleOf: 0.01`` is
    2); trailing zeros are always allowed.  ``-0`` forms are not produced.
    """
    if lo is not None and hi is not None and (lo > hi or lo == hi and (lo_strict or hi_strict)):
        return NOTHING
    opts = []
    zero = Decimal(0)
    # x >= 0 part
    if hi is None or hi > 0 or (hi == 0 and not hi_strict):
        if lo is None or lo < 0:
            a, a_strict = zero, False
        else:
            a, a_strict = lo, lo_strict
        opts.append(_nonneg_decimal(a, a_strict, hi, hi_strict, max_frac_digits))
        if a == 0 and not a_strict:
            opts.append(NEGATIVE_ZERO)  # -0.0 is the number 0
    # x < 0 part: y = -x > 0
    if lo is None or lo < 0:
        if hi is not None and hi < 0:
            y_lo, y_lo_strict = -hi, hi_strict
        else:
            y_lo, y_lo_strict = zero, True
        y_hi = None if lo is None else -lo
        y_hi_strict = lo_strict
        opts.append(seq(lit("-"), _nonneg_decimal(y_lo, y_lo_strict, y_hi, y_hi_strict, max_frac_digits)))
    return alt(*opts)


_EXP = r"(?:[eE][+\-]?[0-9]+)?"
_ANY_NUMBER = pattern_language(r"^-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?" + _EXP + "$")
_NONNEG_NUMBER = pattern_language(r"^(?:0|[1-9][0-9]*)(?:\.[0-9]+)?" + _EXP + "$")
_POS_NUMBER = pattern_language(r"^(?:0\.[0-9]*[1-9][0-9]*|[1-9][0-9]*(?:\.[0-9]+)?)" + _EXP + "$")


def any_number() -> Node:
    return _ANY_NUMBER


def number_with_exponent(lo: Decimal | None, lo_strict: bool, hi: Decimal | None, hi_strict: bool) -> Node | None:
    """Numbers with exponents allowed, for the ranges where the sign alone decides (else None)."""
    if lo is None and hi is None:
        return _ANY_NUMBER
    if hi is None and lo == 0:
        return _POS_NUMBER if lo_strict else _NONNEG_NUMBER
    if lo is None and hi == 0:
        neg = seq(lit("-"), _POS_NUMBER)
        return neg if hi_strict else alt(neg, pattern_language(r"^0(?:\.0+)?(?:[eE][+\-]?[0-9]+)?$"))
    return None


MAX_DIVISOR_STATES = 400


def multiple_language(a: int, k: int, integer_only: bool = False, plain: bool = False) -> Node | None:
    """Plain-decimal JSON numbers whose value is a multiple of ``a / 10**k``.

    Divisibility is regular: a DFA reads the digits keeping the residue modulo ``a``
    (fraction digits scale the value by 10 each, up to ``k`` of them; trailing zeros are
    free).  The DFA is written back as a regex; None if it would be too large.
    ``integer_only``: integral values only (``2`` or ``2.0``); ``plain``: integer syntax only (``2``).
    """
    from guided.json_schema.regex import DFA, RegexUnsupported, _Partition

    if a * (k + 2) > MAX_DIVISOR_STATES:
        return None
    sets = [CharSet.of("-"), CharSet.of(".")] + [CharSet.of(str(d)) for d in range(10)]
    part = _Partition(sets)
    atom = {}
    for ch in "-.0123456789":
        (atom[ch],) = part.atoms_of(CharSet.of(ch))
    n_atoms = len(part.atoms)
    states: dict = {}
    rows: list = []
    accept: list = []

    def sid(key) -> int:
        if key not in states:
            states[key] = len(rows)
            rows.append(None)
            accept.append(False)
        return states[key]

    dead = sid(("dead",))
    start = sid(("start", True))
    queue = [("start", True), ("dead",)]
    seen = set()
    while queue:
        key = queue.pop()
        if key in seen:
            continue
        seen.add(key)
        s = sid(key)
        row = [dead] * n_atoms
        moves: dict = {}
        kind = key[0]
        if kind == "start":
            if key[1]:
                moves["-"] = ("start", False)
            moves["0"] = ("zero",)
            for d in range(1, 10):
                moves[str(d)] = ("int", d % a)
        elif kind == "zero":
            accept[s] = True
            moves["."] = ("frac", 0, 0)
        elif kind == "int":
            r = key[1]
            accept[s] = (r * 10**k) % a == 0
            for d in range(10):
                moves[str(d)] = ("int", (10 * r + d) % a)
            moves["."] = ("frac", r, 0)
        elif kind == "frac":
            r, used = key[1], key[2]
            accept[s] = used > 0 and (r * 10 ** (k - used)) % a == 0
            for d in range(10):
                if used < k:
                    moves[str(d)] = ("frac", (10 * r + d) % a, used + 1)
                elif d == 0:
                    moves["0"] = ("frac", r, used + 1) if used + 1 <= k else ("zeros", r)
        elif kind == "zeros":
            accept[s] = key[1] % a == 0
            moves["0"] = key
        if kind == "frac" and key[2] >= k:
            moves = {"0": ("zeros", key[1])}
        for ch, nxt in moves.items():
            row[atom[ch]] = sid(nxt)
            queue.append(nxt)
        rows[s] = row
    rows[dead] = [dead] * n_atoms
    # start must be state 0 for DFA.to_node: swap ids 0 (dead) and 1 (start)
    perm = {dead: start, start: dead}
    fix = lambda x: perm.get(x, x)  # noqa: E731
    new_rows = [None] * len(rows)
    new_acc = [False] * len(rows)
    for s, row in enumerate(rows):
        new_rows[fix(s)] = [fix(t) for t in row]
        new_acc[fix(s)] = accept[s]
    try:
        node = DFA(part, new_rows, new_acc).to_node()
    except RegexUnsupported:
        return None
    if plain:
        node = _intersect_plain(node, r"^-?(?:0|[1-9][0-9]*)$")
    elif integer_only:
        node = _intersect_plain(node, r"^-?(?:0|[1-9][0-9]*)(?:\.0+)?$")
    return node


def _intersect_plain(node: Node, pattern: str) -> Node:
    from guided.json_schema.regex import intersect

    return intersect(node, pattern_language(pattern))
