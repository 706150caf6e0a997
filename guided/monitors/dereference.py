"""Dereference monitor: after ``expr.`` only the members the language server lists there.

    >>> monitor = DereferenceMonitor("/path/to/project", "pkg/main.py", prefix=source_up_to_cursor)
    >>> state = monitor.start(vocab)                 # composes: Grammar(python) & monitor

Rule (the monitor of Agrawal et al., NeurIPS 2023). In code (not in a string or comment), a
``.`` right after an identifier character is a *trigger*: the server is asked for completions
at that position. If it lists identifiers, the text after the dot must stay a prefix of one of
them (prefix-closed), and the monitor releases at the first non-identifier character, which is
allowed only once the identifier is complete; that character is then read as ordinary code, so
``a.b.c`` triggers again at the second dot. If the server lists nothing, times out, or the
receiver is a number (``1.5``), there is no constraint for that dereference.

Scope: receivers that end in a name (``obj.``, ``pkg.mod.``, ``self.items.``). Dereferences of
call results or subscripts (``f().x``, ``a[0].x``) are not triggers.
"""

from __future__ import annotations

import bisect
import os
import re
from typing import Any, Hashable

import numpy as np

from guided.monitors.base import Machine, Monitor, Need, TokenFamily, _Compiled

__all__ = ["DereferenceMonitor", "Candidates"]

_DOT = ord(".")
_IDENTIFIER = {
    "python": re.compile(r"[^\W\d]\w*"),
    "typescript": re.compile(r"#?(?:[^\W\d]|\$)(?:\w|\$)*"),
    "javascript": re.compile(r"#?(?:[^\W\d]|\$)(?:\w|\$)*"),
}


def scan_code(lexer, text: bytes) -> tuple[int, bool]:
    """(lexical state after ``text``, whether its last byte is an identifier byte in code)."""
    table, ident = lexer.table, lexer.ident
    state, after_ident = 0, False
    for b in text:
        nxt = table[state][b]
        after_ident = state == 0 and nxt == 0 and b in ident
        state = nxt
    return state, after_ident


class Candidates(tuple):
    """Sorted, distinct identifier bytes the server allows after one trigger (hashable by value)."""

    def __new__(cls, names):
        return super().__new__(cls, sorted(set(names)))

    def __init__(self, names):
        self._set = frozenset(self)

    def __contains__(self, item) -> bool:
        return item in self._set

    def with_prefix(self, prefix: bytes) -> "tuple[bytes, ...]":
        lo = bisect.bisect_left(self, prefix)
        hi = lo
        while hi < len(self) and self[hi].startswith(prefix):
            hi += 1
        return tuple(self[lo:hi])

    def has_prefix(self, prefix: bytes) -> bool:
        i = bisect.bisect_left(self, prefix)
        return i < len(self) and self[i].startswith(prefix)


class DereferenceMachine(Machine):
    """States: ``("w", lex, after_ident)`` waiting; ``("a", candidates, partial)`` inside a member name."""

    def __init__(self, session):
        super().__init__(session)
        self.ident = self.lexer.ident
        self.identifier_re = _IDENTIFIER[self.language]
        self._candidates: dict[tuple, Candidates] = {}
        self.import_check = False  # set by DereferenceMonitor(..., import_check=True)

    def initial(self):
        prefix = self._prefix_bytes
        if not prefix:
            return ("w", 0, False)
        lex, after_ident = scan_code(self.lexer, prefix[:-1])
        return self.step(("w", lex, after_ident), prefix[-1])

    def step(self, state, byte):
        if state[0] == "w":
            _, lex, after_ident = state
            if lex == 0 and byte == _DOT and after_ident:
                return Need("completion")
            nxt = self.lexer.table[lex][byte]
            return ("w", nxt, lex == 0 and nxt == 0 and byte in self.ident)
        _, candidates, partial = state
        if byte in self.ident:
            extended = partial + bytes([byte])
            return ("a", candidates, extended) if candidates.has_prefix(extended) else None
        if partial in candidates:  # the member name is complete: read the byte as code again
            return self.step(("w", 0, True), byte)
        return None

    def ask(self, need: Need, context: bytes):
        receiver = self.text_before(context, 66)[:-1]
        run = re.search(rb"[\w\x80-\xff$]+$", receiver)
        if run is None or run.group()[:1].isdigit():
            return None  # a number literal like 1.5, not a dereference
        labels = self.session.completions(context)
        if not labels:
            return None
        labels = [label for label in labels if self.identifier_re.fullmatch(label)]
        if labels and self.import_check and self.language == "python":
            labels = self._existing_on_class(context, labels)
        names = [label.encode("utf-8") for label in labels]
        if not names:
            return None
        key = tuple(sorted(set(names)))
        cached = self._candidates.get(key)
        if cached is None:
            cached = self._candidates[key] = Candidates(key)
        return cached

    def _existing_on_class(self, context: bytes, labels: list[str]) -> list[str]:
        """When the receiver is a class (its definition is a ``class`` statement in another file),
        only the labels the imported class has (jedi also lists names its body only annotates)."""
        from guided.monitors.runtime import class_members

        if context:  # the receiver name ends just before the dot
            places = self.session.definitions(context[:-1])
        else:  # the prefix ends with the dot
            places = self.session.definitions_in_prefix(len(self.session.prefix) - 1)
        if not places:
            return labels
        own = self.session.document_path
        keep: set[str] = set()
        for path, line in set(places):
            same_file = os.path.realpath(path) == os.path.realpath(own)  # the buffer may differ from disk
            found = None if same_file else class_members(path, line, self.session.project_root, labels)
            if found is None:
                return labels  # not a class, or not resolvable exactly: the server's list as is
            keep |= found
        return [label for label in labels if label in keep]

    def resume(self, need: Need, answer):
        if answer is None:
            return ("w", 0, False)  # no constraint: the text after the dot is ordinary code
        return ("a", answer, b"")

    def accepting(self, state) -> bool:
        return state[0] == "w" or state[2] in state[1]

    def risky(self, state, family: TokenFamily):
        return family.with_byte(_DOT) if state[0] == "w" else None

    def prefetch(self, state, text: bytes) -> None:
        # The next token may start with "." (".append"): ask for the members now, while the model
        # computes its logits, so the mask does not wait.
        if state[0] == "w":
            if state[1] == 0 and state[2]:
                self.session.prefetch("completion", text + b".")
        elif state[2] in state[1]:
            self.session.prefetch("completion", text + b".")

    def special_mask(self, compiled: _Compiled, state, text: bytes, family: TokenFamily):
        if state[0] != "a":
            return None
        _, candidates, partial = state
        out = np.zeros(len(family), dtype=bool)
        index = family.index
        strings = family.strings
        ident = self.ident
        if b"" in index:
            out[index[b""]] = True
        for name in candidates.with_prefix(partial):
            rest = name[len(partial) :]
            for k in range(1, len(rest) + 1):  # members that are a piece of the name
                i = index.get(rest[:k])
                if i is not None:
                    out[i] = True
            if not rest:
                continue
            # members that finish the name and go on with a non-identifier byte
            lo, hi = family.prefix_range(rest)
            after_text = text + rest
            for i in range(lo, hi):
                s = strings[i]
                if len(s) > len(rest) and s[len(rest)] not in ident:
                    out[i] = self.run(("w", 0, True), after_text, s[len(rest) :]) is not None
        if partial in candidates:
            # the name is complete: any member starting with a non-identifier byte, read as code
            first = family.first_bytes()
            nonident = ~np.isin(first, np.fromiter(ident, dtype=np.int16)) & (first >= 0)
            wait = self.family_mask(compiled, ("w", 0, True), text, family)
            out |= wait & nonident
        return out


class DereferenceMonitor(Monitor):
    """Only existing members after ``expr.`` (prefix-closed over the server's completions).

        >>> DereferenceMonitor(project_root, "pkg/main.py", prefix=code_before_cursor)
        >>> DereferenceMonitor(session)          # share one server with other monitors
        >>> DereferenceMonitor(session, import_check=True)   # class receivers: import and hasattr

    ``import_check``: when the receiver is a class defined in another file, keep only the names
    the imported class has (jedi also lists names a class body only annotates, which exist on
    instances only); importing runs that module's top-level code, hence opt-in.
    """

    machine_class = DereferenceMachine

    def __init__(self, session=None, file_path=None, *, import_check: bool = False, **session_kwargs):
        super().__init__(session, file_path, **session_kwargs)
        #: also check members of class receivers by importing the class (runs the module's code)
        self.machine.import_check = import_check
