"""Byte-level lexical trackers: is the next byte code, or inside a string or a comment?

Monitors fire only in code (a ``.`` in a comment or a string is not a dereference). The tracker
is a small DFA over bytes, given as a transition table ``NEXT[state][byte]``, so a monitor's
abstract state stays a tuple of small ints and its steps stay cheap.

    >>> lexer = lexer_for("python")
    >>> state = lexer.scan(b"x = 'a.b'  # c.")       # the state after a text
    >>> state == lexer.CODE
    False

Approximations (documented, deliberately simple): f-string / template-literal interpolations
(``{...}``, ``${...}``) count as string; JavaScript regex literals count as code.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Lexer", "lexer_for", "IDENT_BYTES"]


def _ident_bytes(extra: bytes = b"") -> frozenset[int]:
    chars = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_" + extra
    return frozenset(chars) | frozenset(range(0x80, 0x100))  # non-ASCII: parts of Unicode identifiers


IDENT_BYTES = _ident_bytes()


@dataclass(frozen=True)
class Lexer:
    """Transition table over lexical states; state ``CODE`` (0) is ordinary code."""

    language: str
    names: tuple[str, ...]
    table: tuple[tuple[int, ...], ...]  # table[state][byte] -> state
    ident: frozenset[int]
    ident_start: frozenset[int]
    line_comment: bytes

    CODE = 0

    def step(self, state: int, byte: int) -> int:
        return self.table[state][byte]

    def scan(self, data: bytes, state: int = 0) -> int:
        table = self.table
        for b in data:
            state = table[state][b]
        return state

    def is_comment(self, state: int) -> bool:
        return "COMMENT" in self.names[state]


def _build(names: list[str], rules) -> tuple[tuple[int, ...], ...]:
    index = {n: i for i, n in enumerate(names)}
    table = []
    for name in names:
        row = []
        for b in range(256):
            row.append(index[rules(name, b, index)])
        table.append(tuple(row))
    # "X+b" entries mean: leave state X, then take byte b in CODE (empty string closed, etc.)
    return tuple(table)


def _python() -> Lexer:
    names = ["CODE", "COMMENT"]
    for q in ("S", "D"):  # single / double quote
        names += [f"{q}1", f"{q}2", f"STR{q}", f"STR{q}_ESC", f"TRI{q}", f"TRI{q}_ESC", f"TRI{q}_C1", f"TRI{q}_C2"]

    def code(b: int) -> str:
        if b == ord("#"):
            return "COMMENT"
        if b == ord("'"):
            return "S1"
        if b == ord('"'):
            return "D1"
        return "CODE"

    def rules(name: str, b: int, index) -> str:
        if name == "CODE":
            return code(b)
        if name == "COMMENT":
            return "CODE" if b == ord("\n") else "COMMENT"
        q = name[3] if name.startswith(("STR", "TRI")) else name[0]
        quote = ord("'") if q == "S" else ord('"')
        bs, nl = ord("\\"), ord("\n")
        if name == f"{q}1":  # one quote seen in code: a string has started
            if b == quote:
                return f"{q}2"
            if b == bs:
                return f"STR{q}_ESC"
            return "CODE" if b == nl else f"STR{q}"
        if name == f"{q}2":  # two quotes: empty string, unless a third opens a triple-quoted one
            return f"TRI{q}" if b == quote else code(b)
        if name == f"STR{q}":
            if b == bs:
                return f"STR{q}_ESC"
            return "CODE" if b in (quote, nl) else f"STR{q}"
        if name == f"STR{q}_ESC":
            return f"STR{q}"
        if name in (f"TRI{q}", f"TRI{q}_C1", f"TRI{q}_C2"):
            if b == bs:
                return f"TRI{q}_ESC"
            if b == quote:
                return {f"TRI{q}": f"TRI{q}_C1", f"TRI{q}_C1": f"TRI{q}_C2", f"TRI{q}_C2": "CODE"}[name]
            return f"TRI{q}"
        if name == f"TRI{q}_ESC":
            return f"TRI{q}"
        raise AssertionError(name)

    ident = IDENT_BYTES
    return Lexer("python", tuple(names), _build(names, rules), ident, ident - frozenset(b"0123456789"), b"#")


def _typescript(language: str) -> Lexer:
    names = ["CODE", "SLASH", "LINE_COMMENT", "BLOCK_COMMENT", "BLOCK_COMMENT_STAR",
             "STRS", "STRS_ESC", "STRD", "STRD_ESC", "TPL", "TPL_ESC"]

    def code(b: int) -> str:
        return {ord("/"): "SLASH", ord("'"): "STRS", ord('"'): "STRD", ord("`"): "TPL"}.get(b, "CODE")

    def rules(name: str, b: int, index) -> str:
        bs, nl = ord("\\"), ord("\n")
        if name == "CODE":
            return code(b)
        if name == "SLASH":
            if b == ord("/"):
                return "LINE_COMMENT"
            if b == ord("*"):
                return "BLOCK_COMMENT"
            return code(b)
        if name == "LINE_COMMENT":
            return "CODE" if b == nl else "LINE_COMMENT"
        if name == "BLOCK_COMMENT":
            return "BLOCK_COMMENT_STAR" if b == ord("*") else "BLOCK_COMMENT"
        if name == "BLOCK_COMMENT_STAR":
            if b == ord("/"):
                return "CODE"
            return "BLOCK_COMMENT_STAR" if b == ord("*") else "BLOCK_COMMENT"
        for q, quote in (("STRS", ord("'")), ("STRD", ord('"')), ("TPL", ord("`"))):
            if name == q:
                if b == bs:
                    return f"{q}_ESC"
                if b == quote or (b == nl and q != "TPL"):
                    return "CODE"
                return q
            if name == f"{q}_ESC":
                return q
        raise AssertionError(name)

    ident = _ident_bytes(b"$#")
    return Lexer(language, tuple(names), _build(names, rules), ident, ident - frozenset(b"0123456789"), b"//")


_LEXERS: dict[str, Lexer] = {}


def lexer_for(language: str) -> Lexer:
    """The lexical tracker of ``language`` ("python", "typescript", "javascript")."""
    lexer = _LEXERS.get(language)
    if lexer is None:
        if language == "python":
            lexer = _python()
        elif language in ("typescript", "javascript"):
            lexer = _typescript(language)
        else:
            raise ValueError(f"no lexer for {language!r}")
        _LEXERS[language] = lexer
    return lexer
