"""Enum-coverage monitor: a ``match`` over an enum may not end before every member has a case.

    >>> monitor = EnumCoverageMonitor("/path/to/project", "pkg/paint.py", prefix=code_before_cursor)

This is the paper's "switch over all enum members" monitor, for Python's ``match`` statement.

Rule. A line ``match <subject>:`` opens a block (its indentation is the block's column). Each
``case`` line is read when it ends: ``case Color.RED | Color.GREEN:`` covers ``RED`` and
``GREEN``; ``case _:`` or a bare capture name (``case other:``) covers everything; a guarded
case (``case Color.RED if x:``) covers nothing. At the first dotted pattern the language server
is asked for the completions at its dot (``Color.``): if the receiver is an ``enum.Enum`` class
(the list has Enum's ``_generate_next_value_``), its members are the listed variables that are
not private and not Enum's own ``name``/``value``. The block ends at the first code line
indented at or left of the ``match``; that line may not start while a member is uncovered.
Blank and comment lines never end a block. Without a dotted pattern, or when the receiver is
not an enum or the server does not answer, there is no constraint. Nested ``match`` blocks
inside a monitored one are not tracked. Indentation counts bytes (a tab is one column).
"""

from __future__ import annotations

import re

import numpy as np

from guided.monitors.base import Machine, Monitor, Need, TokenFamily, _Compiled
from guided.monitors.dereference import Candidates
from guided.monitors.session import MonitorError

__all__ = ["EnumCoverageMonitor"]

_NL = ord("\n")
_LINE_LIMIT = 400  # a longer line is kept as "too long" (it is not a match or case header)
_MATCH = re.compile(rb"^([ \t]*)match[ \t(\[].*:[ \t]*(#.*)?$")
_CASE = re.compile(rb"^([ \t]*)case[ \t(\[](.*):[ \t]*(#.*)?$")
_DOTTED = re.compile(rb"^[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+$")
_NAME = re.compile(rb"^[A-Za-z_]\w*$")
_PENDING = "pending"  # members not known yet (no dotted case so far)
_WS = frozenset(b" \t\r")
_ENUM_MARKERS = {"_generate_next_value_", "_missing_", "_member_names_", "_member_map_"}
_VARIABLE_KINDS = {5, 6, 20, 21}  # Field, Variable, EnumMember, Constant


def _case_patterns(pattern: bytes) -> tuple[list[tuple[bytes, int]], bool] | None:
    """(dotted names with the offset of their last dot, covers-everything) of a case pattern.

    ``None`` for patterns this monitor does not read (guards, class patterns...): they cover nothing.
    """
    if re.search(rb"\bif\b", pattern):
        return None
    dotted: list[tuple[bytes, int]] = []
    wildcard = False
    offset = 0
    for part in pattern.split(b"|"):
        name = part.strip()
        start = offset + len(part) - len(part.lstrip())
        offset += len(part) + 1
        if _DOTTED.match(name):
            dotted.append((name, start + name.rfind(b".")))
        elif _NAME.match(name):
            wildcard = True  # `_` or a capture pattern: irrefutable
        else:
            return None
    return dotted, wildcard


class EnumCoverageMachine(Machine):
    """State ``(lex, line, block)``: ``line`` is the current line (``None`` once too long);
    ``block`` is ``None`` or ``(match_col, members, covered, wildcard)``."""

    def __init__(self, session):
        if session.language != "python":
            raise MonitorError("EnumCoverageMonitor reads Python `match` statements (the file must be Python)")
        super().__init__(session)
        self.table = self.lexer.table
        self._members: dict[tuple, Candidates] = {}

    # -- the prefix ---------------------------------------------------------------------------
    def initial(self):
        """Scan the prefix line by line (answers for cases in the prefix are asked at their dot)."""
        state = (0, b"", None)
        prefix = self._prefix_bytes
        line_start = 0
        for i, byte in enumerate(prefix):
            nxt = self._step(state, byte, allow_reject=False)
            if type(nxt) is Need:
                dot = line_start + nxt.data[1]
                offset = len(prefix[: dot + 1].decode("utf-8", errors="ignore"))
                answer = self._members_from(self.session.completion_items_in_prefix(offset))
                nxt = self.resume(nxt, answer)
            state = nxt
            if byte == _NL:
                line_start = i + 1
        return state

    # -- stepping -----------------------------------------------------------------------------
    def step(self, state, byte):
        return self._step(state, byte, allow_reject=True)

    def _step(self, state, byte, allow_reject: bool):
        lex, line, block = state
        nlex = self.table[lex][byte]
        if byte == _NL and lex in (0, 1):  # a line of code ends (comments end with it)
            return self._end_line(line, block, nlex)
        if line is not None and block is not None and lex == 0 and byte not in _WS and not line.strip(b" \t"):
            # first byte of a code line: does it end the block?
            indent = len(line)
            if indent <= block[0] and byte != ord("#"):
                if allow_reject and not self._covered(block):
                    return None
                block = None
        if line is not None:
            line = line + bytes([byte]) if len(line) < _LINE_LIMIT else None
        return (nlex, line, block)

    def _end_line(self, line, block, nlex):
        if line is None:
            return (nlex, b"", block)
        if block is None:
            m = _MATCH.match(line)
            if m:
                return (nlex, b"", (len(m.group(1)), _PENDING, frozenset(), False))
            return (nlex, b"", None)
        m = _CASE.match(line)
        if m is None or len(m.group(1)) <= block[0]:
            return (nlex, b"", block)
        parsed = _case_patterns(m.group(2))
        if parsed is None:
            return (nlex, b"", block)
        dotted, wildcard = parsed
        match_col, members, covered, any_wild = block
        covered = covered | {name.rsplit(b".", 1)[1] for name, _ in dotted}
        block = (match_col, members, covered, any_wild or wildcard)
        if members == _PENDING and dotted:
            dot_in_line = m.start(2) + dotted[0][1]
            return Need("enum", ((nlex, b"", block), dot_in_line, len(line)))
        return (nlex, b"", block)

    @staticmethod
    def _covered(block) -> bool:
        match_col, members, covered, wildcard = block
        return wildcard or not isinstance(members, Candidates) or set(members) <= covered

    # -- the server ---------------------------------------------------------------------------
    def ask(self, need: Need, context: bytes):
        _, dot_in_line, line_length = need.data
        dot = len(context) - 1 - line_length + dot_in_line  # context ends with the line's "\n"
        if dot >= 0:
            return self._members_from(self.session.completion_items(context[: dot + 1]))
        # the case line began in the prefix and its dot is there
        prefix = self._prefix_bytes
        offset = len(prefix[: len(prefix) + dot + 1].decode("utf-8", errors="ignore"))
        return self._members_from(self.session.completion_items_in_prefix(offset))

    def _members_from(self, items):
        if not items:
            return None
        labels = {label for label, _ in items}
        if not labels & _ENUM_MARKERS:
            return None  # not an enum class: nothing to cover
        names = sorted(
            label.encode() for label, kind in items
            if kind in _VARIABLE_KINDS and not label.startswith("_") and label not in ("name", "value")
        )
        if not names:
            return None
        key = tuple(names)
        if key not in self._members:
            self._members[key] = Candidates(key)
        return self._members[key]

    def resume(self, need: Need, answer):
        (lex, line, block), _, _ = need.data
        match_col, _, covered, wildcard = block
        return (lex, line, (match_col, answer, covered, wildcard))

    # -- masks --------------------------------------------------------------------------------
    def _may_end_block(self, state) -> bool:
        lex, line, block = state
        return (
            block is not None
            and lex == 0
            and line is not None
            and not line.strip(b" \t")
            and len(line) <= block[0]
            and not self._covered(block)
        )

    def special_mask(self, compiled: _Compiled, state, text: bytes, family: TokenFamily):
        if not self._may_end_block(state):
            return None
        # At the start of a line that would end an uncovered block: a member is rejected when its
        # first non-blank byte is code at a column <= the match's (vectorised); members with a
        # newline are walked exactly.
        lex, line, block = state
        lead, after = family.leading_blanks()
        ends_block = (len(line) + lead <= block[0]) & (after >= 0) & ~np.isin(after, (ord("#"), _NL, ord("\r")))
        out = ~ends_block
        risky = family.with_byte(_NL)
        ok, needs = self.walk(compiled, state, family, risky)
        out[risky] = ok
        for j, pos, need in needs:
            member = int(risky[j])
            context = text + family.strings[member][: pos + 1]
            after_state = self.resume(need, self.ask(need, context))
            out[member] = self.run(after_state, context, family.strings[member][pos + 1 :]) is not None
        return out

    def risky(self, state, family: TokenFamily):
        return family.with_byte(_NL)

class EnumCoverageMonitor(Monitor):
    """A ``match`` over an enum covers every member before the block ends.

        >>> EnumCoverageMonitor(project_root, "pkg/paint.py", prefix=code_before_cursor)
    """

    machine_class = EnumCoverageMachine
