"""Lexer diagnostics for Lark grammars: terminals that collide, and terminals that can never win.

    >>> import warnings, guided
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     guided.Grammar('start: A | B\\nA: /[a-z]+/\\nB: /[a-c]+/')
    >>> caught[0].message.terminals, caught[0].message.example
    (('A', 'B'), 'a')
    >>> guided.Grammar('start: A | B\\nA: /[a-z]+/\\nB: /[a-c]+/', strict=True)   # GrammarError

What the lexer does with two terminals that match the same string (ARCHITECTURE.md, "Lexing
semantics"): the higher priority wins, a string literal beats a regex at equal priority, and
any other tie is kept as an ambiguity for the parser.  So, as with Lark's own check (which also
uses ``interegular``), these are reported:

* ``collision``: two regex terminals of equal priority can match the same string, so the
  lexer hands both to the parser (the grammar is ambiguous at the lexer);
* ``unreachable``: every string a terminal matches is also matched by a terminal that beats
  it, so wherever both are expected the first never wins (``"aa"`` under ``/a+/.2``).

An overlap that priority resolves is intended and not reported: a keyword literal ``"if"``
against ``NAME: /[a-z]+/`` is the usual way to write keywords.  Terminals ``interegular``
cannot read (lookarounds it does not support) are skipped, as Lark skips them.  Without
``interegular`` installed nothing is checked.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from itertools import combinations
from typing import Iterable, Sequence

__all__ = ["GrammarWarning", "LexerFinding", "TerminalPattern", "lexer_findings", "report"]

_EXAMPLE_SECONDS = 0.2  # interegular's search for a shortest overlap is bounded (as in Lark)


class GrammarWarning(UserWarning):
    """A lexer problem in a grammar; ``terminals`` names the pair, ``example`` a string both match."""

    def __init__(self, message: str, terminals: tuple[str, str] = ("", ""), example: str = "", kind: str = ""):
        super().__init__(message)
        self.terminals = terminals
        self.example = example
        self.kind = kind


@dataclass(frozen=True)
class TerminalPattern:
    """One terminal as the lexer ranks it; ``regex`` in Python syntax with its flags inline."""

    name: str
    regex: str
    priority: int
    is_literal: bool
    value: str | None = None  # a literal's text (its only string unless flags such as ``i``)
    first_bytes: frozenset[int] | None = None  # bytes a match can start with, where known

    @property
    def string(self) -> str | None:
        """The one string a literal without flags matches."""
        return self.value if self.is_literal and self.regex == re.escape(self.value or "") else None


@dataclass(frozen=True)
class LexerFinding:
    kind: str  # "collision" | "unreachable"
    terminals: tuple[str, str]  # (loser or first, winner or second)
    example: str

    @property
    def message(self) -> str:
        a, b = self.terminals
        if self.kind == "collision":
            return (f"terminals {a} and {b} both match {self.example!r} at equal priority: "
                    f"the lexer keeps both and the grammar is ambiguous there")
        return (f"terminal {a} is unreachable where {b} is also expected: every string it matches "
                f"(e.g. {self.example!r}) goes to {b}, which has precedence")


def _beats(a: TerminalPattern, b: TerminalPattern) -> bool:
    """Whether ``a`` wins over ``b`` on a string both match (the lexer's ranking)."""
    return a.priority > b.priority or (a.priority == b.priority and a.is_literal and not b.is_literal)


class _Languages:
    """interegular automata of the terminals, built on first use; ``None`` where unsupported."""

    def __init__(self, interegular, terminals: Sequence[TerminalPattern]):
        self._ireg = interegular
        regexes = {t.name: t.regex for t in terminals if t.string is None}
        with warnings.catch_warnings():  # interegular logs what it cannot read; skipping is documented
            self.comparator = interegular.Comparator.from_regexes(regexes) if regexes else None

    def _pair(self, a: TerminalPattern, b: TerminalPattern):
        """A comparator holding both (the shared one unless a literal is involved)."""
        if a.string is None and b.string is None:
            return self.comparator
        try:
            patterns = {t.name: self._ireg.parse_pattern(t.regex) for t in (a, b)}
        except Exception:  # noqa: BLE001 - interegular's Unsupported/InvalidSyntax: skipped, as Lark does
            return None
        return self._ireg.Comparator(patterns)

    def overlap(self, a: TerminalPattern, b: TerminalPattern) -> str | None:
        """A string both match, or ``None`` when they are disjoint (or unreadable)."""
        if a.first_bytes is not None and b.first_bytes is not None and a.first_bytes.isdisjoint(b.first_bytes):
            return None  # the cheap test first: most pairs start differently
        if a.value is not None and b.value is not None:  # literals: one's text fits the other's flags
            for x, y in ((a, b), (b, a)):
                if re.fullmatch(x.regex, y.value):
                    return y.value
            return None
        for lit, other in ((a, b), (b, a)):
            if lit.string is not None:
                return lit.string if re.fullmatch(other.regex, lit.string) else None
            if lit.value is not None:  # a literal with flags: its usual spellings first
                for text in (lit.value, lit.value.lower(), lit.value.upper()):
                    if re.fullmatch(lit.regex, text) and re.fullmatch(other.regex, text):
                        return text
        comparator = self._pair(a, b)
        if comparator is None:
            return None
        if comparator.get_fsm(a.name) is None or comparator.get_fsm(b.name) is None:
            return None
        if comparator.isdisjoint(a.name, b.name):
            return None
        try:
            return comparator.get_example_overlap(a.name, b.name, _EXAMPLE_SECONDS).full_text
        except ValueError:  # no example within the time bound; the overlap is certain
            return "(no short example found)"

    def is_subset(self, a: TerminalPattern, b: TerminalPattern) -> bool:
        """Every string ``a`` matches is matched by ``b``."""
        if a.string is not None:
            return True  # called only once they overlap: a's one string is in b
        if a.first_bytes is not None and b.first_bytes is not None and not a.first_bytes <= b.first_bytes:
            return False
        comparator = self._pair(a, b)
        if comparator is None:
            return False
        fa, fb = comparator.get_fsm(a.name), comparator.get_fsm(b.name)
        if fa is None or fb is None:
            return False
        return (fa & fb.everythingbut()).empty()


def lexer_findings(terminals: Iterable[TerminalPattern]) -> list[LexerFinding]:
    """Collisions and unreachable terminals among ``terminals`` (empty without interegular).

        >>> lexer_findings([TerminalPattern("A", "[a-z]+", 0, False), TerminalPattern("B", "x", 0, False)])
        [LexerFinding(kind='collision', terminals=('A', 'B'), example='x')]
    """
    try:
        import interegular
    except ImportError:
        return []
    terminals = list(terminals)
    languages = _Languages(interegular, terminals)
    findings = []
    for a, b in combinations(terminals, 2):
        example = languages.overlap(a, b)
        if example is None:
            continue
        if _beats(a, b):
            loser, winner = b, a
        elif _beats(b, a):
            loser, winner = a, b
        else:
            findings.append(LexerFinding("collision", (a.name, b.name), example))
            continue
        if languages.is_subset(loser, winner):
            findings.append(LexerFinding("unreachable", (loser.name, winner.name), loser.string or example))
    return findings


def report(findings: Sequence[LexerFinding], strict: bool, error) -> None:
    """Warn :class:`GrammarWarning` per finding, or raise ``error(finding)`` for the first if ``strict``."""
    for finding in findings:
        if strict:
            raise error(finding)
        warnings.warn(GrammarWarning(finding.message, finding.terminals, finding.example, finding.kind), stacklevel=4)  # the Grammar(...) call
