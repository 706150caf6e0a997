"""What every monitor shares: a byte machine over small abstract states, and exact masks from it.

A monitor is described by a *machine*: ``step(state, byte)`` returns the next abstract state,
``None`` (the byte breaks the monitor's rule) or a :class:`Need` (a trigger fired: the machine
needs the language server's answer for the text so far, then :meth:`Machine.resume` goes on).
Abstract states are hashable tuples without the text, so whatever a machine decides without the
server is cached per abstract state; the text only matters at triggers, where it becomes the
*context* of a question to the :class:`~guided.monitors.session.LanguageServerSession`.

Masks are exact: ``allowed_mask()[i]`` is True iff ``advance(i)`` succeeds. They are computed
over :class:`TokenFamily` objects (the vocabulary's tokens sorted by bytes, or the tails of the
tokens that start with a given byte), simulating only the tokens a machine says are *risky* from
the current abstract state, walking them in sorted order so shared prefixes are stepped once.
"""

from __future__ import annotations

import abc
import bisect
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, Hashable, NamedTuple

import numpy as np

from guided.constraint import Constraint, ConstraintState
from guided.monitors.lexer import Lexer, lexer_for
from guided.monitors.session import LanguageServerSession

if TYPE_CHECKING:  # pragma: no cover
    from guided.vocab import Vocabulary

__all__ = ["Need", "Machine", "Monitor", "MonitorState", "TokenFamily"]


class Need(NamedTuple):
    """A trigger fired: ``resume(need, answer)`` continues once the server answered ``kind``."""

    kind: str
    data: Any = None


class TokenFamily:
    """Byte strings (token bytes or token tails) sorted, with the vocabulary ids they stand for.

    ``family.rest(b)`` is the family of the members that start with byte ``b``, with that byte
    removed (tails of tokens that start with a trigger byte, e.g. ``.append`` -> ``append``).
    """

    def __init__(self, strings: list[bytes], ids: np.ndarray, name: str):
        self.strings = strings
        self.ids = ids
        self.name = name
        self.index = {s: i for i, s in enumerate(strings)}
        self._with_byte: dict[int, np.ndarray] = {}
        self._rest: dict[int, tuple["TokenFamily", np.ndarray]] = {}
        self._first: np.ndarray | None = None
        self._blanks: tuple[np.ndarray, np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.strings)

    @classmethod
    def of_vocab(cls, vocab: "Vocabulary") -> "TokenFamily":
        trie = vocab.trie
        return cls(list(trie.sorted_bytes), np.asarray(trie.sorted_ids), "vocab")

    def first_bytes(self) -> np.ndarray:
        """First byte of each member (-1 for the empty string)."""
        if self._first is None:
            self._first = np.fromiter((s[0] if s else -1 for s in self.strings), dtype=np.int16, count=len(self))
        return self._first

    def leading_blanks(self) -> tuple[np.ndarray, np.ndarray]:
        """(number of leading spaces/tabs, the byte after them or -1) of each member."""
        if self._blanks is None:
            lead = np.fromiter((len(s) - len(s.lstrip(b" \t")) for s in self.strings), dtype=np.int64, count=len(self))
            after = np.fromiter(
                (s[n] if n < len(s) else -1 for s, n in zip(self.strings, lead.tolist())), dtype=np.int16, count=len(self)
            )
            self._blanks = (lead, after)
        return self._blanks

    def with_byte(self, byte: int) -> np.ndarray:
        """Indices (sorted) of the members containing ``byte``."""
        hit = self._with_byte.get(byte)
        if hit is None:
            needle = bytes([byte])
            hit = np.fromiter((i for i, s in enumerate(self.strings) if needle in s), dtype=np.int64)
            self._with_byte[byte] = hit
        return hit

    def with_any(self, data: bytes) -> np.ndarray:
        parts = [self.with_byte(b) for b in data]
        return np.unique(np.concatenate(parts)) if parts else np.zeros(0, dtype=np.int64)

    def prefix_range(self, prefix: bytes) -> tuple[int, int]:
        lo = bisect.bisect_left(self.strings, prefix)
        if not prefix:
            return 0, len(self.strings)
        stripped = prefix.rstrip(b"\xff")
        if not stripped:
            return lo, len(self.strings)
        upper = stripped[:-1] + bytes([stripped[-1] + 1])
        return lo, bisect.bisect_left(self.strings, upper, lo)

    def starting_with_any(self, first: frozenset[int] | set[int]) -> np.ndarray:
        """Indices of members whose first byte is in ``first``."""
        return np.flatnonzero(np.isin(self.first_bytes(), np.fromiter(first, dtype=np.int16)))

    def rest(self, byte: int) -> tuple["TokenFamily", np.ndarray]:
        """(family of tails after ``byte``, indices in ``self`` of its members)."""
        hit = self._rest.get(byte)
        if hit is None:
            lo, hi = self.prefix_range(bytes([byte]))
            fam = TokenFamily([s[1:] for s in self.strings[lo:hi]], self.ids[lo:hi], f"{self.name}/{byte}")
            hit = (fam, np.arange(lo, hi))
            self._rest[byte] = hit
        return hit


class _Compiled:
    """Per-vocabulary tables of one monitor: the token family and the walk cache."""

    def __init__(self, vocab: "Vocabulary"):
        self.vocab = vocab
        self.family = TokenFamily.of_vocab(vocab)
        self.walks: OrderedDict = OrderedDict()


class Machine(abc.ABC):
    """The rule of one monitor, as a byte machine; subclasses say how to step and what to ask."""

    language: str
    lexer: Lexer
    #: how many walk results to keep (per vocabulary)
    walk_cache_size = 512

    def __init__(self, session: LanguageServerSession):
        self.session = session
        self.language = session.language
        self.lexer = lexer_for(self.language)

    @property
    def _prefix_bytes(self) -> bytes:
        # read from the session each time: a retargeted session has a new prefix
        return self.session.prefix_bytes

    # -- the rule ---------------------------------------------------------------------------
    @abc.abstractmethod
    def initial(self) -> Hashable:
        """Abstract state at the generation point, before resolving a trigger at the prefix's end."""

    @abc.abstractmethod
    def step(self, state: Hashable, byte: int) -> "Hashable | Need | None":
        """Next abstract state after ``byte``; ``None`` breaks the rule; a :class:`Need` asks the server."""

    @abc.abstractmethod
    def ask(self, need: Need, context: bytes) -> Any:
        """The server's answer for a trigger, ``context`` being the generated text through it."""

    @abc.abstractmethod
    def resume(self, need: Need, answer: Any) -> Hashable:
        """Abstract state after a trigger, given the answer (``None`` = no constraint)."""

    def accepting(self, state: Hashable) -> bool:
        return True

    def risky(self, state: Hashable, family: TokenFamily) -> np.ndarray | None:
        """Indices of the members that ``state`` might reject or trigger on (``None`` = all)."""
        return None

    def risky_default(self, state: Hashable) -> bool:
        """Whether the members outside :meth:`risky` are allowed (True) or rejected (False)."""
        return True

    def prefetch(self, state: Hashable, text: bytes) -> None:
        """Start questions the next step may need (runs while the model computes logits)."""

    def special_mask(self, compiled: _Compiled, state: Hashable, text: bytes, family: TokenFamily) -> np.ndarray | None:
        """A faster exact mask for some states (``None``: use the generic walk)."""
        return None

    # -- helpers for subclasses ----------------------------------------------------------------
    def text_before(self, context: bytes, n: int) -> bytes:
        """The last ``n`` bytes of prefix + ``context``."""
        return context[-n:] if len(context) >= n else (self._prefix_bytes[-n:] + context)[-n:]

    # -- running ------------------------------------------------------------------------------
    def start_state(self) -> Hashable:
        """The initial abstract state, asking the server if the prefix itself ends in a trigger."""
        state = self.initial()
        if isinstance(state, Need):
            state = self.resume(state, self.ask(state, b""))
        return state

    def run(self, state: Hashable, text: bytes, data: bytes) -> Hashable | None:
        """Concrete run of ``data`` from ``state`` after ``text`` (asks the server at triggers)."""
        step = self.step
        for i, byte in enumerate(data):
            nxt = step(state, byte)
            if nxt is None:
                return None
            if type(nxt) is Need:
                nxt = self.resume(nxt, self.ask(nxt, text + data[: i + 1]))
            state = nxt
        return state

    def walk(self, compiled: _Compiled, state: Hashable, family: TokenFamily, indices: np.ndarray | None):
        """Outcome of each member in ``indices`` from ``state`` without asking the server.

        Returns ``(ok, needs)``: ``ok[j]`` for member ``indices[j]`` (False also for members that
        hit a trigger with bytes left), and ``needs`` = [(j, position of the trigger byte, Need)].
        Cached per (state, family, indices).
        """
        key = (state, family.name, None if indices is None else indices.tobytes())
        cache = compiled.walks
        hit = cache.get(key)
        if hit is not None:
            cache.move_to_end(key)
            return hit
        strings = family.strings
        order = range(len(strings)) if indices is None else indices.tolist()
        ok = np.zeros(len(order), dtype=bool)
        needs: list[tuple[int, int, Need]] = []
        step = self.step
        stack: list = [state]  # stack[d]: state after the first d bytes of the previous member
        prev = b""
        for j, idx in enumerate(order):
            s = strings[idx]
            limit = min(len(prev), len(s), len(stack) - 1)
            lcp = 0
            while lcp < limit and prev[lcp] == s[lcp]:
                lcp += 1
            del stack[lcp + 1 :]
            cur = stack[lcp]
            d = lcp
            while d < len(s) and cur is not None and type(cur) is not Need:
                cur = step(cur, s[d])
                stack.append(cur)
                d += 1
            prev = s
            if cur is None:
                continue
            if type(cur) is Need:
                pos = len(stack) - 2  # the machine stops at a Need, so it is the top of the stack
                if pos == len(s) - 1:
                    ok[j] = True  # the trigger is the member's last byte: any answer lets it through
                else:
                    needs.append((j, pos, cur))
                continue
            ok[j] = True
        result = (ok, needs)
        cache[key] = result
        if len(cache) > self.walk_cache_size:
            cache.popitem(last=False)
        return result

    def family_mask(self, compiled: _Compiled, state: Hashable, text: bytes, family: TokenFamily) -> np.ndarray:
        """Exact: which members of ``family`` may follow ``text`` in abstract ``state``."""
        special = self.special_mask(compiled, state, text, family)
        if special is not None:
            return special
        risky = self.risky(state, family)
        if risky is None:
            out = np.zeros(len(family), dtype=bool)
            positions = np.arange(len(family))
        else:
            out = np.full(len(family), self.risky_default(state), dtype=bool)
            positions = risky
        ok, needs = self.walk(compiled, state, family, risky)
        out[positions] = ok
        if not needs:
            return out
        groups: dict[tuple[int, bytes], list[tuple[int, Need]]] = {}
        for j, pos, need in needs:
            member = int(positions[j])
            groups.setdefault((pos, family.strings[member][: pos + 1]), []).append((member, need))
        for (pos, head), members in groups.items():
            need = members[0][1]
            context = text + head
            after = self.resume(need, self.ask(need, context))
            if pos == 0 and len(members) > 8:
                sub_family, sub_index = family.rest(head[0])
                sub = self.family_mask(compiled, after, context, sub_family)
                wanted = np.fromiter((m for m, _ in members), dtype=np.int64)
                out[wanted] = sub[wanted - sub_index[0]]
            else:
                for member, _ in members:
                    out[member] = self.run(after, context, family.strings[member][pos + 1 :]) is not None
        return out


class MonitorState(ConstraintState):
    """Generated text so far and the monitor's abstract state; immutable."""

    __slots__ = ("vocab", "monitor", "compiled", "text", "state")

    def __init__(self, vocab, monitor: "Monitor", compiled: _Compiled, text: bytes, state: Hashable):
        self.vocab = vocab
        self.monitor = monitor
        self.compiled = compiled
        self.text = text
        self.state = state

    @property
    def machine(self) -> Machine:
        return self.monitor.machine

    def advance_bytes(self, data: bytes) -> "MonitorState | None":
        if not data:
            return self
        nxt = self.machine.run(self.state, self.text, data)
        if nxt is None:
            return None
        text = self.text + data
        self.machine.prefetch(nxt, text)
        return MonitorState(self.vocab, self.monitor, self.compiled, text, nxt)

    def is_accepting(self) -> bool:
        return self.machine.accepting(self.state)

    def allowed_mask(self) -> np.ndarray:
        compiled = self.compiled
        family = compiled.family
        sub = self.machine.family_mask(compiled, self.state, self.text, family)
        mask = np.zeros(self.vocab.size, dtype=bool)
        mask[family.ids[sub]] = True
        if self.is_accepting():
            mask[list(self.vocab.eos_ids)] = True
        return mask

    def __repr__(self) -> str:
        return f"{type(self.monitor).__name__}State({self.state!r}, text={self.text[-40:]!r})"


class Monitor(Constraint):
    """A constraint driven by a language server; subclasses build their :class:`Machine`.

    Give either a :class:`LanguageServerSession` or ``project_root`` and ``file_path`` (plus any
    session keyword: ``prefix``, ``suffix``, ``wait_s``, ...). Monitors built on one session
    share its server and its answers.
    """

    machine_class: type[Machine]

    def __init__(self, session: LanguageServerSession | str | None = None, file_path: str | None = None, **session_kwargs):
        super().__init__()
        if isinstance(session, LanguageServerSession):
            if file_path is not None or session_kwargs:
                raise TypeError("give either a session or project_root/file_path/session options, not both")
            self.session = session
        else:
            if session is None or file_path is None:
                raise TypeError(f"{type(self).__name__}(session) or {type(self).__name__}(project_root, file_path)")
            self.session = LanguageServerSession(session, file_path, **session_kwargs)
        self.machine = self.machine_class(self.session)

    def compile(self, vocab):
        return _Compiled(vocab)

    def initial_state(self, compiled, vocab) -> ConstraintState:
        self.session.start()
        state = self.machine.start_state()
        self.machine.prefetch(state, b"")
        return MonitorState(vocab, self, compiled, b"", state)

    def close(self) -> None:
        """Shut down the language server (also done at interpreter exit)."""
        self.session.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.session.project_root!r}, {self.session.relative_path!r})"
