"""What values a distinct lexeme can still reach (:mod:`guided.grammars.distinct`).

A run's values are kept as a trie of bytes: a string's UTF-8 bytes, an integer's spellings
(``0`` and ``-0`` for zero).  A lexeme prefix can still end with a new value iff some
completion leaves the trie, so the check walks the terminal's byte automaton along the trie,
decoding JSON escapes (``\\n``, ``\\u00e9``, surrogate pairs) as it goes:

    >>> trie = value_trie(frozenset({"ab"}), "string")
    >>> reaches_new(dfa, state, "string", *read_lexeme("string", b'"a', trie))
"""

from __future__ import annotations

import functools

import numpy as np

__all__ = ["QUOTE", "BACKSLASH", "END", "RAW", "RUN", "kind_of", "spellings", "value_trie", "walk", "read_lexeme",
           "read_more", "reaches_new", "open_ended", "decoded_segments", "trie_paths"]

QUOTE, BACKSLASH, _U = 0x22, 0x5C, 0x75
_SHORT = {ord('"'): 0x22, ord("\\"): 0x5C, ord("/"): 0x2F, ord("b"): 0x08, ord("f"): 0x0C,
          ord("n"): 0x0A, ord("r"): 0x0D, ord("t"): 0x09}
_HEX = {c: int(chr(c), 16) for c in b"0123456789abcdefABCDEF"}
RUN = frozenset(b"0123456789-")  # the bytes of a plain (integer) lexeme
END, _UNITS = -1, -2  # trie keys: "a value ends here", the node's UTF-16 units (cached)
RAW = 0  # decoder: between characters; 1 after a backslash; ("u", k, acc) in \u; ("s", H, k, acc) in a low surrogate


def kind_of(g, t: int) -> str:
    """"string" for a terminal whose lexemes open with a quote, else "plain"."""
    kinds = g.__dict__.setdefault("_distinct_kinds", {})
    k = kinds.get(t)
    if k is None:
        dfa = g.lexer.dfas[t]
        first = np.flatnonzero(np.asarray(dfa.row(dfa.start)) >= 0)
        k = kinds[t] = "string" if first.tolist() == [QUOTE] else "plain"
    return k


def spellings(v, kind: str) -> list[bytes]:
    """The trie words of a value: a string's UTF-8 bytes; an integer's spellings."""
    if kind == "string":
        return [v.encode("utf-8", "surrogatepass")] if isinstance(v, str) else []
    if isinstance(v, bool) or not isinstance(v, int):
        return []
    return [str(v).encode()] + ([b"-0"] if v == 0 else [])


@functools.lru_cache(maxsize=256)
def value_trie(seen: frozenset, kind: str) -> dict:
    root: dict = {}
    for v in seen:
        for word in spellings(v, kind):
            node = root
            for b in word:
                node = node.setdefault(b, {})
            node[END] = True
    return root


def walk(node: dict | None, data: bytes) -> dict | None:
    for b in data:
        if node is None:
            return None
        node = node.get(b)
    return node


def _units(node: dict) -> tuple[frozenset, dict]:
    """The first UTF-16 units of the characters below ``node``, and for each high surrogate
    the low ones that follow it (astral characters)."""
    hit = node.get(_UNITS)
    if hit is None:
        first, lows = set(), {}
        stack = [(node, b"")]
        while stack:
            n, acc = stack.pop()
            for b, child in n.items():
                if b < 0:
                    continue
                data = acc + bytes([b])
                try:
                    ch = data.decode("utf-8", "surrogatepass")
                except UnicodeDecodeError:
                    stack.append((child, data))  # inside a multi-byte character
                    continue
                cp = ord(ch)
                if cp < 0x10000:
                    first.add(cp)
                else:
                    hi, lo = 0xD800 + ((cp - 0x10000) >> 10), 0xDC00 + ((cp - 0x10000) & 0x3FF)
                    first.add(hi)
                    lows.setdefault(hi, set()).add(lo)
        hit = node[_UNITS] = (frozenset(first), lows)
    return hit


def _char_bytes(cp: int) -> bytes:
    return chr(cp).encode("utf-8", "surrogatepass")


def _step(dec, node: dict, b: int):
    """One byte of a string lexeme's body: ``(decoder, trie node)``, node None off the trie;
    "end" at the closing quote; None for a byte no JSON string has there."""
    if dec == RAW:
        if b == QUOTE:
            return "end"
        if b == BACKSLASH:
            return 1, node
        return RAW, node.get(b)
    if dec == 1:
        if b == _U:
            return ("u", 0, 0), node
        c = _SHORT.get(b)
        return None if c is None else (RAW, node.get(c))
    v = _HEX.get(b)
    if dec[0] == "u":
        if v is None:
            return None
        _, k, acc = dec
        acc = acc * 16 + v
        if k < 3:
            return ("u", k + 1, acc), node
        if 0xD800 <= acc <= 0xDBFF:
            return ("h", acc), node  # a low surrogate must follow
        return RAW, walk(node, _char_bytes(acc))
    if dec[0] == "h":  # after a high surrogate: "\\", "u", then four hex digits
        return (("h\\", dec[1]), node) if b == BACKSLASH else None
    if dec[0] == "h\\":
        return (("s", dec[1], 0, 0), node) if b == _U else None
    if v is None:
        return None
    _, hi, k, acc = dec
    acc = acc * 16 + v
    if k < 3:
        return ("s", hi, k + 1, acc), node
    return RAW, walk(node, _char_bytes(0x10000 + ((hi - 0xD800) << 10) + (acc - 0xDC00)))


def _escape_leaves(dec, node: dict) -> bool:
    """Inside a \\u escape: does no character still possible there lie on the trie?"""
    if dec[0] == "u":
        _, k, acc = dec
        units = _units(node)[0]
    elif dec[0] == "s":
        _, hi, k, acc = dec
        units = _units(node)[1].get(hi, ())
    else:
        return False
    shift = 4 * (4 - k)
    lo, top = acc << shift, ((acc + 1) << shift) - 1
    return not any(lo <= u <= top for u in units)


def reaches_new(dfa, s: int, kind: str, dec, node: dict) -> bool:
    """From terminal state ``s`` (decoder ``dec``, trie ``node``): does some completion end
    with a value off the trie, i.e. not written yet?  Every state is live, so leaving the
    trie on the way is enough."""
    stack = [(s, dec, node)]
    seen: set = set()
    while stack:
        s, dec, node = stack.pop()
        key = (s, dec, id(node))
        if key in seen:
            continue
        seen.add(key)
        row = np.asarray(dfa.row(s))
        if kind == "plain":
            if dfa.is_accepting(s) and END not in node:
                return True
            for b in np.flatnonzero(row >= 0).tolist():
                child = node.get(b)
                if child is None:
                    return True
                stack.append((int(row[b]), RAW, child))
            continue
        for b in np.flatnonzero(row >= 0).tolist():
            r = _step(dec, node, b)
            if r is None:
                continue
            if r == "end":
                if END not in node:
                    return True
                continue
            dec2, node2 = r
            if node2 is None or (dec2 != RAW and not isinstance(dec2, int) and _escape_leaves(dec2, node2)):
                return True
            stack.append((int(row[b]), dec2, node2))
    return False


def read_lexeme(kind: str, lexeme: bytes, node: dict):
    """``(decoder, trie node)`` after a lexeme prefix; node None once it left the trie,
    "end" when the string is closed."""
    if kind == "plain":
        return RAW, walk(node, lexeme)
    return read_more(RAW, node, lexeme[1:])  # (after the opening quote)


def read_more(dec, node: dict, data: bytes):
    """:func:`read_lexeme` of a string lexeme that goes on with ``data`` from ``(dec, node)``."""
    for b in data:
        r = _step(dec, node, b)
        if r is None or r == "end":
            return r
        dec, node = r
        if node is None:
            return dec, None
    return dec, node


def decoded_segments(data: bytes) -> list[bytes] | None:
    """A token's bytes read as string content from between characters: the decoded bytes
    of each part between unescaped quotes (an unfinished escape at the end ends the last
    part); None where no JSON string could hold them."""
    parts, cur, i = [], bytearray(), 0
    while i < len(data):
        b = data[i]
        if b == QUOTE:
            parts.append(bytes(cur))
            cur = bytearray()
        elif b == BACKSLASH:
            if i + 1 >= len(data):
                break
            c = _SHORT.get(data[i + 1])
            if c is not None:
                cur.append(c)
                i += 1
            elif data[i + 1] == _U:
                digits = data[i + 2 : i + 6]
                if len(digits) < 4:
                    break
                try:
                    cp = int(digits, 16)
                except ValueError:
                    return None
                if 0xD800 <= cp <= 0xDFFF:
                    break  # (half of a pair: its character is not known here)
                cur += _char_bytes(cp)
                i += 5
            else:
                return None
        else:
            cur.append(b)
        i += 1
    parts.append(bytes(cur))
    return parts


def trie_paths(node: dict):
    """``(bytes, node)`` for ``node`` and every node below it in the trie."""
    stack = [(b"", node)]
    while stack:
        path, n = stack.pop()
        yield path, n
        stack.extend((path + bytes([b]), c) for b, c in n.items() if b >= 0)


def open_ended(g, t: int, limit: int = 4096) -> bool:
    """Does every prefix of terminal ``t``'s lexemes have infinitely many completions (so
    none can be dead for want of new values)?  Its byte automaton is explored up to
    ``limit`` states; a larger one answers False (checked prefix by prefix instead)."""
    cache = g.__dict__.setdefault("_distinct_open", {})
    hit = cache.get(t)
    if hit is None:
        hit = cache[t] = _every_state_reaches_a_cycle(g.lexer.dfas[t], limit, kind_of(g, t) == "string")
    return hit


def _every_state_reaches_a_cycle(dfa, limit: int, closed_accepts: bool) -> bool:
    """``closed_accepts``: accepting states are closed lexemes (a string after its quote),
    not prefixes, and need no new values beyond them."""
    succ: dict[int, list[int]] = {}
    stack = [dfa.start]
    while stack:
        s = stack.pop()
        if s in succ:
            continue
        if len(succ) >= limit:
            return False
        row = np.asarray(dfa.row(s))
        succ[s] = sorted(set(row[row >= 0].tolist()))
        if not succ[s] and not (closed_accepts and dfa.is_accepting(s)):
            return False  # a prefix with one completion (a plain lexeme that cannot go on)
        if closed_accepts and not dfa.is_accepting(s) and all(
                dfa.is_accepting(x) and not (np.asarray(dfa.row(x)) >= 0).any() for x in succ[s]):
            return False  # a prefix that can only close (a string at its maxLength)
        stack.extend(succ[s])
    # states with finitely many completions: those all of whose successors have finitely
    # many, found from the dead ends backwards (each state once)
    preds: dict[int, list[int]] = {s: [] for s in succ}
    for s, nxt in succ.items():
        for x in nxt:
            preds[x].append(s)
    left = {s: len(nxt) for s, nxt in succ.items()}  # successors not yet known finite
    finite = [s for s, k in left.items() if k == 0]
    for x in finite:  # (grows as it is read)
        for s in preds[x]:
            left[s] -= 1
            if left[s] == 0:
                finite.append(s)
    return not any(not (closed_accepts and dfa.is_accepting(s)) for s in finite)
