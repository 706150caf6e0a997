"""Schema positions that need a set remembered: the grammar engine's lazy nonterminals.

Two JSON Schema constraints are not context-free in any compact way: properties in any
order, each at most once (the parser must remember which were written), and
``uniqueItems`` (which items were written).  Here each is a family of nonterminals, one per
set, that the Earley parser asks for only when a parse reaches it
(:class:`guided.grammars.earley.LazyRules`), so an object with 30 properties costs the
states a generation visits, not 2^30.  Masks stay exact and equal configurations stay one
parser state (hence one ``cache_key``), because the sets live in the parser's own items.

    >>> props = PropertySet(keys=[(k_a, v_a, True, True), (k_b, v_b, False, True)], extras=[],
    ...                     min_p=0, max_p=None)
    >>> fams = SchemaFamilies([props], symbol=str)
    >>> fams.rules(props_entry)        # '"a"' ':' value @p0.1... | '"b"' ':' value @p0.2...

A family is plain data (what the grammar compiler writes); :class:`SchemaFamilies` names
its states ``@p<family>.<seen>.<count>.<flags>`` / ``@u<family>.<seen>`` and gives their
rules.  Every state it names can still be completed (the parser's contract).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from guided.grammars.earley import LazyRules

__all__ = ["PropertySet", "UniqueValues", "SchemaFamilies", "COMMA", "COLON"]

COMMA, COLON = '","', '":"'


@dataclass
class PropertySet:
    """An object's members in any order: each named key at most once, ``required`` ones
    before ``}``, unnamed members (``extras``) any number of times, the member count within
    ``[min_p, max_p]``, and (``need_witness``) some member whose witness flag is set.

    ``keys``: ``(key terminal, value symbol, required, witness)``; ``extras``: ``(member
    rule, witness)`` where the member rule is ``key ":" value``.
    """

    keys: list
    extras: list
    min_p: int
    max_p: int | None
    need_witness: bool = False

    def symbols(self) -> list[str]:
        """Grammar symbols the family's rules use (kept by pruning, renamed by aliasing)."""
        return [k for k, _, _, _ in self.keys] + [v for _, v, _, _ in self.keys] + [x for x, _ in self.extras]

    def punctuation(self) -> list[str]:
        """Literal terminals the family's rules use: the separators, and values that are
        literals (a ``"type": "null"`` property's value is the literal ``null`` itself)."""
        return [COMMA, COLON] + [s for s in self.symbols() if s.startswith('"')]

    def rename(self, resolve: Callable[[str], str]) -> None:
        self.keys = [(resolve(k), resolve(v), r, w) for k, v, r, w in self.keys]
        self.extras = [(resolve(x), w) for x, w in self.extras]

    def keep(self, productive: Callable[[str], bool]) -> bool:
        """Drop keys whose value derives nothing; False when the object cannot be written."""
        if any(r and not productive(v) for _, v, r, _ in self.keys):
            return False
        self.keys = [k for k in self.keys if productive(k[1])]
        self.extras = [x for x in self.extras if productive(x[0])]
        return self.productive(self.initial())

    def requirements(self) -> tuple:
        """Symbols every written object needs (for the grammar's productivity check)."""
        return tuple(v for _, v, r, _ in self.keys if r)

    # -- states: (seen named keys as a bit set, member count, witness written, first) --
    def initial(self) -> tuple:
        return (0, 0, not self.need_witness, True)

    def _count(self, c: int) -> int:
        # without a maximum, counts past the minimum behave alike: one state for them
        return min(c, self.min_p) if self.max_p is None else c

    def can_end(self, state: tuple) -> bool:
        seen, c, w, _ = state
        return c >= self.min_p and w and all(seen >> i & 1 for i, k in enumerate(self.keys) if k[2])

    def productive(self, state: tuple) -> bool:
        """Can ``}`` still be reached from ``state``?"""
        seen, c, w, _ = state
        return self._productive(c, w, *self._unseen(seen))

    def _unseen(self, seen: int) -> list[int]:
        """[required, required witnesses, optional, optional witnesses] among the unseen keys."""
        counts = [0, 0, 0, 0]
        for i, (_, _, req, wit) in enumerate(self.keys):
            if not seen >> i & 1:
                j = 0 if req else 2
                counts[j] += 1
                counts[j + 1] += wit
        return counts

    def _productive(self, c: int, w: bool, todo: int, todo_wit: int, free: int, free_wit: int) -> bool:
        need = todo
        if not (w or todo_wit):
            if not (free_wit or any(x[1] for x in self.extras)):
                return False
            need += 1
        need = max(need, self.min_p - c)
        if not self.extras and need > todo + free:
            return False
        return self.max_p is None or c + need <= self.max_p

    def step(self, state: tuple, i: int | None, witness: bool) -> tuple:
        """The state after named key ``i`` (None: an unnamed member)."""
        seen, c, w, _ = state
        return (seen if i is None else seen | 1 << i, self._count(c + 1), w or witness, False)

    def alternatives(self, state: tuple) -> list[tuple[list, tuple]]:
        """``(symbols, next state)`` for each way to write one more member."""
        seen, c, w, first = state
        if self.max_p is not None and c >= self.max_p:
            return []
        sep = [] if first else [COMMA]
        out = []
        unseen = self._unseen(seen)  # counted once: a key's step changes them by one
        for i, (key, val, req, wit) in enumerate(self.keys):
            if not seen >> i & 1:
                nxt = self.step(state, i, wit)
                after = list(unseen)
                j = 0 if req else 2
                after[j] -= 1
                after[j + 1] -= wit
                if self._productive(nxt[1], nxt[2], *after):
                    out.append((sep + [key, COLON, val], nxt))
        for member, wit in self.extras:
            nxt = self.step(state, None, wit)
            if self._productive(nxt[1], nxt[2], *unseen):
                out.append((sep + [member], nxt))
        return out

    def name(self, family: int, state: tuple) -> str:
        seen, c, w, first = state
        return f"@p{family}.{seen:x}.{c}.{int(w)}{int(first)}"


@dataclass
class UniqueValues:
    """An array of distinct items from finite sets: ``values`` holds each distinct value's
    spellings (lists of symbols); item ``i`` takes a value of ``positions[i]`` (indices into
    ``values``), later items one of ``rest``; the item count is within ``[min_items, max_items]``."""

    values: list
    positions: list
    rest: frozenset
    min_items: int
    max_items: int | None

    def __post_init__(self):
        longest = len(self.positions) + len(self.rest)
        self.max_items = longest if self.max_items is None else min(self.max_items, longest)
        self._productive: dict = {}

    def symbols(self) -> list[str]:
        return [s for spellings in self.values for sp in spellings for s in sp if not s.startswith('"')]

    def punctuation(self) -> list[str]:
        return [COMMA] + [s for spellings in self.values for sp in spellings for s in sp if s.startswith('"')]

    def rename(self, resolve: Callable[[str], str]) -> None:
        self.values = [[[s if s.startswith('"') else resolve(s) for s in sp] for sp in spellings]
                       for spellings in self.values]

    def keep(self, productive: Callable[[str], bool]) -> bool:
        return self.productive(self.initial())

    def requirements(self) -> tuple:
        return ()

    # -- states: the values written, as a bit set (their number is the next position) --
    def initial(self) -> int:
        return 0

    def can_end(self, seen: int) -> bool:
        return seen.bit_count() >= self.min_items

    def allowed(self, position: int) -> frozenset:
        return self.positions[position] if position < len(self.positions) else self.rest

    def productive(self, seen: int) -> bool:
        """Can the items still missing for ``min_items`` get distinct values not in ``seen``?
        (A matching of positions to values, by augmenting paths.)"""
        hit = self._productive.get(seen)
        if hit is None:
            n = seen.bit_count()
            hit = n <= self.max_items and self._matchable(seen, range(n, self.min_items))
            self._productive[seen] = hit
        return hit

    def _matchable(self, seen: int, positions: range) -> bool:
        owner: dict = {}  # value index -> position

        def place(p: int, visited: set) -> bool:
            for j in self.allowed(p):
                if seen >> j & 1 or j in visited:
                    continue
                visited.add(j)
                if j not in owner or place(owner[j], visited):
                    owner[j] = p
                    return True
            return False

        return all(place(p, set()) for p in positions)

    def alternatives(self, seen: int) -> list[tuple[list, int]]:
        n = seen.bit_count()
        if n >= self.max_items:
            return []
        sep = [COMMA] if n else []
        return [(sep + list(sp), seen | 1 << j) for j in sorted(self.allowed(n))
                if not seen >> j & 1 and self.productive(seen | 1 << j) for sp in self.values[j]]

    def name(self, family: int, seen: int) -> str:
        return f"@u{family}.{seen:x}"


def entry_name(family: int, kind: object) -> str:
    """The name the grammar's static rules use for a family's initial state."""
    return ("@p" if isinstance(kind, PropertySet) else "@u") + str(family)


class SchemaFamilies(LazyRules):
    """The parser's view of the families: state names, their nullability and rules.

    ``symbol`` maps the grammar compiler's symbols (quoted punctuation) to the engine's
    terminal names.
    """

    def __init__(self, families: list, symbol: Callable[[str], str]):
        self.families = families
        self.symbol = symbol
        self.states: dict[str, tuple] = {}  # name -> (family, state)
        for i, fam in enumerate(families):
            if fam is not None:  # (None: a family no rule uses)
                self.states[entry_name(i, fam)] = (i, fam.initial())

    def _name(self, i: int, state) -> str:
        name = self.families[i].name(i, state)
        self.states.setdefault(name, (i, state))
        return name

    def __contains__(self, name: str) -> bool:
        return name in self.states

    def uses(self) -> set:
        return {s for fam in self.families if fam is not None for s in fam.symbols()}

    def nullable(self, name: str) -> bool:
        i, state = self.states[name]
        return self.families[i].can_end(state)

    def rules(self, name: str) -> list:
        i, state = self.states[name]
        fam = self.families[i]
        sym = self.symbol
        return [tuple(sym(s) for s in syms) + (self._name(i, nxt),) for syms, nxt in fam.alternatives(state)]
