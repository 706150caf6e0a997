"""Incremental, persistent Earley recogniser over terminal ids.

    >>> tables = ParserTables(rules, terminal_names, start="start")
    >>> col = tables.initial()
    >>> col = col.scan(tables.terminal_id["NAME"])     # None if NAME cannot come next
    >>> col.allowed, col.accepting

A :class:`Column` is one Earley chart column and is immutable once built: ``scan`` returns a
new column that points back at the columns its items started in, so every prefix's chart
is shared by all its continuations (copy/rollback is free) and ``scan`` results are cached.

Columns are hash-consed: two columns with the same waiting items (same dotted rules, same
origin objects) and the same acceptance are one object, so prefixes that leave the parser in the same configuration (a
left-recursive list one element longer, say) share every cache attached to the column.

The items predicted in a column (origin = that column) depend only on which nonterminals
are predicted, so they are kept implicitly as a shared, cached :class:`_Prediction`.
Nullable nonterminals are handled by the Aycock-Horspool trick (an item before a nullable
symbol is also added with the dot moved past it), so no completion ever has to look at
the column being built.  Rules that derive no terminal string or are unreachable are
pruned, so every column that exists can still be completed.
"""

from __future__ import annotations

from guided.grammars.lark_loader import GrammarError

__all__ = ["ParserTables", "Column"]

_START = "$start"


class ParserTables:
    """Dotted rules, nullability and prediction closures of a BNF grammar."""

    def __init__(self, rules, terminal_names: list[str], start: str, available_terminals=None):
        self.terminal_names = list(terminal_names)
        self.terminal_id = {n: i for i, n in enumerate(self.terminal_names)}
        n_terms = len(self.terminal_names)
        usable = set(range(n_terms)) if available_terminals is None else set(available_terminals)

        # prune rules: productive first, then reachable from start
        rules = [(lhs, tuple(rhs)) for lhs, rhs in rules]
        nonterminals = {lhs for lhs, _ in rules}
        for lhs, rhs in rules:
            for s in rhs:
                if s not in self.terminal_id and s not in nonterminals:
                    raise GrammarError(f"symbol {s!r} used in rule {lhs!r} is not defined", name=s)
        productive: set[str] = set()
        changed = True
        while changed:
            changed = False
            for lhs, rhs in rules:
                if lhs not in productive and all(
                    (s in productive) if s in nonterminals else (self.terminal_id[s] in usable) for s in rhs
                ):
                    productive.add(lhs)
                    changed = True
        if start not in productive:
            raise GrammarError(f"the grammar's language is empty: rule {start!r} derives no finite string", name=start)
        rules = [
            (lhs, rhs)
            for lhs, rhs in rules
            if lhs in productive
            and all((s in productive) if s in nonterminals else (self.terminal_id[s] in usable) for s in rhs)
        ]
        by_lhs: dict[str, list] = {}
        for lhs, rhs in rules:
            by_lhs.setdefault(lhs, []).append(rhs)
        reachable = {start}
        stack = [start]
        while stack:
            a = stack.pop()
            for rhs in by_lhs.get(a, ()):
                for s in rhs:
                    if s in nonterminals and s not in reachable:
                        reachable.add(s)
                        stack.append(s)
        rules = [(lhs, rhs) for lhs, rhs in rules if lhs in reachable]
        rules.insert(0, (_START, (start,)))

        names = [_START] + sorted({lhs for lhs, _ in rules} - {_START})
        self.nonterminal_names = names
        nt_id = {n: n_terms + i for i, n in enumerate(names)}
        self.n_terminals = n_terms
        self.symbol_name = self.terminal_names + names

        def sym(s: str) -> int:
            return self.terminal_id[s] if s in self.terminal_id else nt_id[s]

        # dotted rules laid out consecutively: dr + 1 moves the dot one symbol right
        self.next_symbol: list[int] = []  # -1 when the dot is at the end
        self.lhs: list[int] = []
        self.rules_of: dict[int, list[int]] = {}
        for lhs, rhs in rules:
            a = nt_id[lhs]
            self.rules_of.setdefault(a, []).append(len(self.next_symbol))
            for s in rhs:
                self.next_symbol.append(sym(s))
                self.lhs.append(a)
            self.next_symbol.append(-1)
            self.lhs.append(a)
        self.start_dr = 0
        self.final_dr = 1  # $start -> start .
        self.used_terminals = frozenset(s for s in self.next_symbol if 0 <= s < n_terms)

        # nullable nonterminals
        nullable: set[int] = set()
        changed = True
        while changed:
            changed = False
            for lhs, rhs in rules:
                a = nt_id[lhs]
                if a not in nullable and all(s in nt_id and nt_id[s] in nullable for s in rhs):
                    nullable.add(a)
                    changed = True
        self.nullable = frozenset(nullable)
        self._prediction_cache: dict[frozenset, _Prediction] = {}
        self._closure_cache: dict[int, frozenset] = {}
        # hash-consing: columns with the same items (origins compared by identity, and
        # origins are themselves interned) behave identically from here on, so they are
        # one object -- e.g. "1+2+" and "1+" under a left-recursive sum -- and everything
        # cached on them (scans, parser states, masks) is reused across positions.
        self._interned: dict[tuple, Column] = {}
        self.root = Column.__new__(Column)  # sentinel origin of the start item: predicts nothing
        self.root.explicit = {}
        self.root.pred = _Prediction.empty()

    # -- predictions -------------------------------------------------------------------------
    def predicted_closure(self, a: int) -> frozenset:
        """Nonterminals predicted (transitively) when ``a`` is predicted."""
        hit = self._closure_cache.get(a)
        if hit is not None:
            return hit
        seen = {a}
        stack = [a]
        nxt, n_t, nullable = self.next_symbol, self.n_terminals, self.nullable
        while stack:
            b = stack.pop()
            for dr in self.rules_of.get(b, ()):
                while True:
                    s = nxt[dr]
                    if s < n_t:
                        break
                    if s not in seen:
                        seen.add(s)
                        stack.append(s)
                    if s not in nullable:
                        break
                    dr += 1
        result = frozenset(seen)
        self._closure_cache[a] = result
        return result

    def prediction(self, nonterminals: frozenset) -> "_Prediction":
        hit = self._prediction_cache.get(nonterminals)
        if hit is not None:
            return hit
        by_next: dict[int, list[int]] = {}
        nxt, n_t, nullable = self.next_symbol, self.n_terminals, self.nullable
        for a in nonterminals:
            for dr in self.rules_of.get(a, ()):
                while True:
                    s = nxt[dr]
                    if s < 0:
                        break
                    by_next.setdefault(s, []).append(dr)
                    if s < n_t or s not in nullable:
                        break
                    dr += 1
        pred = _Prediction(
            {s: tuple(v) for s, v in by_next.items()},
            frozenset(s for s in by_next if s < n_t),
        )
        self._prediction_cache[nonterminals] = pred
        return pred

    def initial(self) -> "Column":
        return Column._build(self, [(self.start_dr, self.root)])


class _Prediction:
    """Items predicted in a column, by next symbol (their origin is the column itself)."""

    __slots__ = ("by_next", "terminals")

    def __init__(self, by_next: dict, terminals: frozenset):
        self.by_next = by_next
        self.terminals = terminals

    @staticmethod
    def empty() -> "_Prediction":
        return _Prediction({}, frozenset())


class Column:
    """One Earley column: immutable; ``scan(terminal)`` gives the next one (cached)."""

    __slots__ = ("tables", "explicit", "pred", "allowed", "accepting", "_scans", "__weakref__")

    def scan(self, terminal: int) -> "Column | None":
        """The column after ``terminal``; ``None`` if it cannot come next."""
        hit = self._scans.get(terminal, False)
        if hit is not False:
            return hit
        seeds = [(dr + 1, o) for dr, o in self.explicit.get(terminal, ())]
        seeds += [(dr + 1, self) for dr in self.pred.by_next.get(terminal, ())]
        result = Column._build(self.tables, seeds) if seeds else None
        self._scans[terminal] = result
        return result

    @staticmethod
    def _build(tables: ParserTables, seeds) -> "Column":
        col = Column.__new__(Column)
        col.tables = tables
        nxt, lhs_of, nullable, n_t = tables.next_symbol, tables.lhs, tables.nullable, tables.n_terminals
        items: dict = {}
        work: list = []
        for item in seeds:
            if item not in items:
                items[item] = None
                work.append(item)
        while work:
            dr, o = work.pop()
            s = nxt[dr]
            if s < 0:  # complete: advance the items of the origin column waiting for lhs
                a = lhs_of[dr]
                for dr2, o2 in o.explicit.get(a, ()):
                    it = (dr2 + 1, o2)
                    if it not in items:
                        items[it] = None
                        work.append(it)
                for dr2 in o.pred.by_next.get(a, ()):
                    it = (dr2 + 1, o)
                    if it not in items:
                        items[it] = None
                        work.append(it)
            elif s in nullable:  # Aycock-Horspool: also skip the nullable symbol
                it = (dr + 1, o)
                if it not in items:
                    items[it] = None
                    work.append(it)
        # completed items took part in the closure above but play no further part: the
        # column's future is fixed by its waiting items (and whether it accepts)
        accepting = (tables.final_dr, tables.root) in items
        key = (frozenset(item for item in items if nxt[item[0]] >= 0), accepting)
        hit = tables._interned.get(key)
        if hit is not None:
            return hit
        tables._interned[key] = col
        explicit: dict[int, list] = {}
        predicted: set = set()
        for item in items:
            s = nxt[item[0]]
            if s >= 0:
                explicit.setdefault(s, []).append(item)
                if s >= n_t:
                    predicted.add(s)
        closure: set = set()
        for a in predicted:
            closure |= tables.predicted_closure(a)
        col.explicit = explicit
        col.pred = tables.prediction(frozenset(closure))
        col.allowed = frozenset(s for s in explicit if s < n_t) | col.pred.terminals
        col.accepting = accepting
        col._scans = {}
        return col
