"""Call-arity monitor: the arguments of a call stay within the callee's signature.

    >>> monitor = ArityMonitor("/path/to/project", "pkg/main.py", prefix=code_before_cursor)

Rule. In code, ``(`` right after an identifier opens a *call*; the server's signature help at
that position gives the callee's parameters. Inside the call (tracked through nested brackets,
strings and comments; nested calls are monitored too, each with its own signature):

- at most ``max_positional`` positional arguments (unbounded with ``*args`` / ``...rest``);
  past that, an argument must be a keyword argument ``name=`` whose name is prefix-closed over
  the parameters that accept keywords (any name with ``**kwargs``) — Python only; in
  TypeScript/JavaScript no further argument may start;
- the ``)`` closing the call needs every required parameter bound, by position or keyword;
- ``*x`` / ``**x`` / ``...x`` unpacking or a ``lambda`` argument releases the call (the count is
  no longer known), and so does a callee without a signature (the monitor then only matches brackets).

Overloads (several signatures) are combined: the largest positional bound and the union of
keyword names; required parameters are then not checked. A ``def name(`` / ``class Name(`` /
``function name(`` header is a definition, not a call.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from guided.monitors.base import Machine, Monitor, Need, TokenFamily
from guided.monitors.dereference import scan_code

__all__ = ["ArityMonitor", "CallSignature", "parse_signature_help", "parse_parameters"]

_WS = frozenset(b" \t\r\n\\")
_OPEN, _CLOSE = frozenset(b"([{"), frozenset(b")]}")
_LPAREN, _RPAREN, _COMMA, _EQ, _STAR, _DOT = (ord(c) for c in "(),=*.")

# argument states (top level of the call's parentheses)
START, RUN, RUN_WS, EQ, POS, KWV = range(6)


@dataclass(frozen=True)
class CallSignature:
    """What the monitor needs from a callee's parameter list."""

    max_positional: int | None  # None: unbounded (*args / ...rest)
    keyword_names: frozenset[bytes]
    any_keyword: bool  # **kwargs
    required_positional: tuple[tuple[int, bytes, bool], ...]  # (index, name, positional-only)
    required_keyword: frozenset[bytes]
    check_required: bool = True


def _split_top(text: str) -> list[str]:
    """Split at commas outside brackets and strings."""
    parts, depth, quote, start, i = [], 0, "", 0, 0
    while i < len(text):
        c = text[i]
        if quote:
            if c == "\\":
                i += 1
            elif c == quote:
                quote = ""
        elif c in "'\"`":
            quote = c
        elif c in "([{<":
            depth += 1
        elif c in ")]}>" and not (c == ">" and i > 0 and text[i - 1] == "="):  # => is not a bracket
            depth -= 1
        elif c == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
        i += 1
    parts.append(text[start:])
    return [p.strip() for p in parts]


def _parameter_list(label: str) -> str | None:
    """The text between the first ``(`` of a signature label and its matching ``)``."""
    start = label.find("(")
    if start < 0:
        return None
    depth, quote = 0, ""
    for i in range(start, len(label)):
        c = label[i]
        if quote:
            if c == quote:
                quote = ""
            continue
        if c in "'\"":
            quote = c
        elif c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
            if depth == 0:
                return label[start + 1 : i]
    return None


def parse_parameters(label: str, language: str) -> CallSignature | None:
    """A :class:`CallSignature` from a signature label such as ``def f(a, b=1, *, c)``.

    >>> parse_parameters("def translate(dx, dy=0.0, *, scale=1.0)", "python").max_positional
    2
    """
    inner = _parameter_list(label)
    if inner is None:
        return None
    python = language == "python"
    params: list[tuple[str, str, bool]] = []  # (name, kind, required)
    keyword_only = False
    for part in _split_top(inner) if inner.strip() else []:
        if not part:
            continue
        if part == "/":
            params = [(n, "posonly" if k == "pos" else k, r) for n, k, r in params]
            continue
        if part == "*":
            keyword_only = True
            continue
        if part.startswith("**"):
            params.append((part[2:], "varkw", False))
            continue
        if part.startswith("*") or part.startswith("..."):
            params.append((part.lstrip("*."), "varpos", False))
            keyword_only = True
            continue
        match = re.match(r"[^\W\d]\w*|\$[\w$]*", part)
        if match is None:
            return None
        name = match.group()
        rest = part[match.end() :].strip()
        if not python and name == "this" and rest.startswith(":"):
            continue  # TypeScript's `this` parameter is not an argument
        optional = rest.startswith("?") or "=" in _strip_annotation_generics(rest)
        params.append((name, "kwonly" if keyword_only else "pos", not optional))
    max_positional: int | None = sum(1 for _, k, _ in params if k in ("pos", "posonly"))
    if any(k == "varpos" for _, k, _ in params):
        max_positional = None
    keyword_names = frozenset(n.encode() for n, k, _ in params if k in ("pos", "kwonly")) if python else frozenset()
    required_positional = tuple(
        (i, n.encode(), k == "posonly")
        for i, (n, k, r) in enumerate(p for p in params if p[1] in ("pos", "posonly"))
        if r
    )
    required_keyword = frozenset(n.encode() for n, k, r in params if k == "kwonly" and r)
    return CallSignature(
        max_positional=max_positional,
        keyword_names=keyword_names,
        any_keyword=python and any(k == "varkw" for _, k, _ in params),
        required_positional=required_positional,
        required_keyword=required_keyword,
    )


def _strip_annotation_generics(text: str) -> str:
    # "x: Dict[str, int] = 3" -> the "=" of a default; "=>" in a TypeScript arrow type is not one
    return re.sub(r"=>", "", text)


def parse_signature_help(answer: Any, language: str) -> CallSignature | None:
    """Combine the signatures of a ``textDocument/signatureHelp`` answer (``None``: no constraint)."""
    if not isinstance(answer, dict):
        return None
    labels = [s.get("label") for s in answer.get("signatures") or [] if isinstance(s, dict)]
    parsed = [parse_parameters(label, language) for label in labels if isinstance(label, str)]
    if not parsed or any(p is None for p in parsed):
        return None
    if len(parsed) == 1:
        return parsed[0]
    bounds = [p.max_positional for p in parsed]
    return CallSignature(
        max_positional=None if None in bounds else max(bounds),
        keyword_names=frozenset().union(*(p.keyword_names for p in parsed)),
        any_keyword=any(p.any_keyword for p in parsed),
        required_positional=(),
        required_keyword=frozenset(),
        check_required=False,
    )


_DEFINITION = {
    "python": re.compile(rb"(?:^|\n)[ \t]*(?:async[ \t]+)?(?:def|class)[ \t]+\w+\($"),
    "typescript": re.compile(rb"\bfunction\*?[ \t]*[\w$]*\($"),
    "javascript": re.compile(rb"\bfunction\*?[ \t]*[\w$]*\($"),
}


class ArityMachine(Machine):
    """State ``(lex, after_ident, frames)``; a frame is ``(sig, depth, npos, kwgiven, arg, run)``."""

    def __init__(self, session):
        super().__init__(session)
        self.ident = self.lexer.ident
        self.ident_start = self.lexer.ident_start
        self.keyword_args = self.language == "python"
        self.table = self.lexer.table

    def initial(self):
        prefix = self._prefix_bytes
        if not prefix:
            return (0, False, ())
        lex, after_ident = scan_code(self.lexer, prefix[:-1])
        return self.step((lex, after_ident, ()), prefix[-1])

    # -- stepping ---------------------------------------------------------------------------
    def step(self, state, byte):
        lex, after_ident, frames = state
        nlex = self.table[lex][byte]
        if lex != 0:  # inside a string or comment: structure is unchanged
            return (nlex, False, frames)
        if not frames:
            if byte == _LPAREN and after_ident:
                return Need("call", (0, False, ()))
            return (nlex, nlex == 0 and byte in self.ident, frames)
        return self._step_call(state, nlex, byte)

    def _step_call(self, state, nlex, byte):
        lex, after_ident, frames = state
        sig, depth, npos, kwgiven, arg, run = frames[-1]
        parent = frames[:-1]
        is_ident = byte in self.ident
        if depth == 0 and arg in (START, RUN, RUN_WS, EQ) and sig is not None:
            over = sig.max_positional is not None and npos >= sig.max_positional
            if arg == START:
                if byte in _WS or (nlex != 0 and byte in b"#/"):
                    return (nlex, False, frames)
                if byte == _RPAREN:
                    return self._close(frames, sig, npos, kwgiven)
                if byte == _COMMA:
                    return None  # empty argument
                if byte == _STAR or (byte == _DOT and not self.keyword_args):
                    return (nlex, False, parent + ((None, 0, npos, kwgiven, POS, None),))  # unpacking
                if self.keyword_args and byte in self.ident_start:
                    name = bytes([byte])
                    if over and not self._kw_prefix(sig, name):
                        return None
                    return (nlex, True, parent + ((sig, 0, npos, kwgiven, RUN, name),))
                if over:
                    return None
                frames = parent + ((sig, 0, npos + 1, kwgiven, POS, None),)
                return self._step_value((lex, after_ident, frames), nlex, byte)
            if arg == RUN:
                if is_ident:
                    name = run + bytes([byte])
                    if over and not self._kw_prefix(sig, name):
                        return None
                    return (nlex, nlex == 0, parent + ((sig, 0, npos, kwgiven, RUN, name),))
                if run == b"lambda":  # a lambda's own commas are not argument separators
                    frames = parent + ((None, 0, npos, kwgiven, POS, None),)
                    return self._step_value((lex, after_ident, frames), nlex, byte)
                if byte in _WS:
                    return (nlex, False, parent + ((sig, 0, npos, kwgiven, RUN_WS, run),))
                if byte == _EQ:
                    if over and not self._kw_name(sig, run):
                        return None
                    return (nlex, False, parent + ((sig, 0, npos, kwgiven, EQ, run),))
            elif arg == RUN_WS:
                if byte in _WS:
                    return (nlex, False, frames)
                if byte == _EQ:
                    if over and not self._kw_name(sig, run):
                        return None
                    return (nlex, False, parent + ((sig, 0, npos, kwgiven, EQ, run),))
            else:  # EQ
                if byte != _EQ:  # "name=" : a keyword argument
                    frames = parent + ((sig, 0, npos, kwgiven | {run}, KWV, None),)
                    return self._step_value((lex, after_ident, frames), nlex, byte)
            # the argument turned out positional ("x + 1", "x == 1", "f(x)")
            if over:
                return None
            frames = parent + ((sig, 0, npos + 1, kwgiven, POS, None),)
            return self._step_value((lex, after_ident, frames), nlex, byte)
        if sig is None and depth == 0 and arg == START and byte not in _WS:
            frames = parent + ((None, 0, npos, kwgiven, POS, None),)
        return self._step_value((lex, after_ident, frames), nlex, byte)

    def _step_value(self, state, nlex, byte):
        """A byte of an argument's value (or inside brackets within the call)."""
        lex, after_ident, frames = state
        sig, depth, npos, kwgiven, arg, run = frames[-1]
        parent = frames[:-1]
        if byte == _LPAREN and after_ident:  # a nested call: monitored with its own signature
            return Need("call", (0, False, frames))
        if byte in _OPEN:
            return (nlex, False, parent + ((sig, depth + 1, npos, kwgiven, arg, run),))
        if byte in _CLOSE:
            if depth > 0:
                return (nlex, False, parent + ((sig, depth - 1, npos, kwgiven, arg, run),))
            if byte != _RPAREN:
                return None  # a bracket that closes nothing open in this call
            return self._close(frames, sig, npos, kwgiven)
        if byte == _COMMA and depth == 0:
            return (nlex, False, parent + ((sig, 0, npos, kwgiven, START, None),))
        return (nlex, nlex == 0 and byte in self.ident, frames)

    def _close(self, frames, sig, npos, kwgiven):
        if sig is not None and sig.check_required:
            for index, name, positional_only in sig.required_positional:
                if index >= npos and (positional_only or name not in kwgiven):
                    return None
            if not sig.required_keyword <= kwgiven:
                return None
        return (0, False, frames[:-1])

    @staticmethod
    def _kw_prefix(sig: CallSignature, name: bytes) -> bool:
        return sig.any_keyword or any(k.startswith(name) for k in sig.keyword_names)

    @staticmethod
    def _kw_name(sig: CallSignature, name: bytes) -> bool:
        return sig.any_keyword or name in sig.keyword_names

    # -- the server ---------------------------------------------------------------------------
    def ask(self, need: Need, context: bytes):
        line = self.text_before(context, 240)
        definition = _DEFINITION[self.language]
        if definition.search(line):
            return None
        return parse_signature_help(self.session.signatures(context), self.language)

    def resume(self, need: Need, answer):
        lex, after_ident, frames = need.data
        return (0, False, frames + ((answer, 0, 0, frozenset(), START, None),))

    # -- masks ----------------------------------------------------------------------------------
    def risky(self, state, family: TokenFamily):
        lex, after_ident, frames = state
        if not frames:
            return family.with_byte(_LPAREN)
        sig, depth, npos, kwgiven, arg, run = frames[-1]
        if self._needs_keyword(frames[-1]) and arg != EQ:
            # only a keyword argument may come: members must start with one of these bytes
            return family.starting_with_any(self._keyword_first_bytes(sig, arg, run))
        return family.with_any(b",()]}=" if arg == EQ else b",()]}")

    def risky_default(self, state) -> bool:
        frames = state[2]
        return not (frames and self._needs_keyword(frames[-1]) and frames[-1][4] != EQ)

    @staticmethod
    def _needs_keyword(frame) -> bool:
        sig, depth, npos, kwgiven, arg, run = frame
        return (
            sig is not None
            and depth == 0
            and arg in (START, RUN, RUN_WS, EQ)
            and sig.max_positional is not None
            and npos >= sig.max_positional
        )

    def _keyword_first_bytes(self, sig: CallSignature, arg: int, run) -> frozenset[int]:
        if arg == RUN_WS:
            return _WS | {_EQ}
        if arg == RUN:
            if sig.any_keyword:
                return self.ident | _WS | {_EQ}
            cont = {k[len(run)] for k in sig.keyword_names if k.startswith(run) and len(k) > len(run)}
            return frozenset(cont) | _WS | {_EQ}
        first = _WS | {_RPAREN, _STAR, ord("#"), ord("/"), _DOT}
        if sig.any_keyword:
            return first | self.ident_start
        return first | {k[0] for k in sig.keyword_names}

    def prefetch(self, state, text: bytes) -> None:
        lex, after_ident, frames = state
        if lex == 0 and after_ident:
            self.session.prefetch("signature", text + b"(")


class ArityMonitor(Monitor):
    """Calls get no more positional arguments than the callee takes, and all required ones.

        >>> ArityMonitor(project_root, "pkg/main.py", prefix=code_before_cursor)
    """

    machine_class = ArityMachine
