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
left-recursive list one element longer, say) share every cache attached to the column.  A
waiting item whose rule ends with the awaited nonterminal is kept as what its completion
does, not as the path that led to it, so right-recursive lists reached along different
paths (a set of object properties written in another order) are one column too.

The items predicted in a column (origin = that column) depend only on which nonterminals
are predicted, so they are kept implicitly as a shared, cached :class:`_Prediction`.
Some nonterminals may be *lazy* (``lazy``, a :class:`LazyRules`): their rules are asked for
when they are first predicted, so a grammar may have more nonterminals than could be listed
(one per set of object properties already written, say); only those a parse reaches exist.

Nullable nonterminals are handled by the Aycock-Horspool trick (an item before a nullable
symbol is also added with the dot moved past it), so no completion ever has to look at
the column being built.  Rules that derive no terminal string or are unreachable are
pruned, so every column that exists can still be completed.
"""

from __future__ import annotations

from guided.grammars.lark_loader import GrammarError

__all__ = ["ParserTables", "Column", "LazyRules"]

_START = "$start"


def derivable(rules, is_nonterminal, terminal_ok) -> set:
    """Left-hand sides that derive something, where a rule fires once every terminal of it
    is ``terminal_ok`` and every nonterminal derives: a worklist, linear in the grammar
    (a fixpoint over all rules per round is quadratic on the long rule chains of large schemas).

        >>> derivable([("a", ("b",)), ("b", ())], {"a", "b"}.__contains__, lambda t: True)
        {'a', 'b'}
    """
    waiting: dict = {}  # nonterminal -> rules with an occurrence of it left to derive
    missing: list[int] = []
    ready = []
    for i, (lhs, rhs) in enumerate(rules):
        need = 0
        for sym in rhs:
            if is_nonterminal(sym):
                need += 1
                waiting.setdefault(sym, []).append(i)
            elif not terminal_ok(sym):
                need = -1  # never fires
                break
        missing.append(need)
        if need == 0:
            ready.append(lhs)
    done: set = set()
    while ready:
        a = ready.pop()
        if a in done:
            continue
        done.add(a)
        for i in waiting.get(a, ()):
            if missing[i] > 0:
                missing[i] -= 1
                if missing[i] == 0:
                    ready.append(rules[i][0])
    return done


class LazyRules:
    """Nonterminals whose rules are made on first prediction (a base class to fill in).

    Contract: every lazy nonterminal derives some terminal string (the parser relies on every
    item it makes being completable), its rules use only terminals, the grammar's own
    nonterminals (those listed by :meth:`uses`, each deriving something) and lazy
    nonterminals, and a parse position predicts finitely many of them.

        >>> class Counter(LazyRules):            # a^n b^n for n >= 1, one nonterminal per n
        ...     def __contains__(self, name): return name.startswith("@")
        ...     def nullable(self, name): return False
        ...     def rules(self, name): return [("A", "B")]  # (any symbols, lazy ones included)
    """

    def __contains__(self, name: str) -> bool:
        raise NotImplementedError

    def nullable(self, name: str) -> bool:
        """Does ``name`` derive the empty string?"""
        raise NotImplementedError

    def rules(self, name: str) -> list:
        """The right-hand sides (tuples of symbol names) of ``name``'s rules."""
        raise NotImplementedError

    def uses(self) -> set:
        """The grammar's own nonterminals that lazy rules may use (kept by pruning)."""
        return set()


class _RulesOf(dict):
    """Dotted-rule starts by nonterminal id; a lazy nonterminal's are laid out on first look-up."""

    __slots__ = ("tables",)

    def get(self, a, default=None):
        hit = dict.get(self, a)
        if hit is None and a in self.tables.lazy_names:
            hit = self.tables._lay_out_lazy(a)
        return default if hit is None else hit


class ParserTables:
    """Dotted rules, nullability and prediction closures of a BNF grammar (with ``lazy``
    nonterminals, see :class:`LazyRules`)."""

    def __init__(self, rules, terminal_names: list[str], start: str, available_terminals=None,
                 lazy: LazyRules | None = None):
        self.terminal_names = list(terminal_names)
        self.terminal_id = {n: i for i, n in enumerate(self.terminal_names)}
        n_terms = len(self.terminal_names)
        usable = set(range(n_terms)) if available_terminals is None else set(available_terminals)

        # prune rules: productive first, then reachable from start
        rules = [(lhs, tuple(rhs)) for lhs, rhs in rules]
        nonterminals = {lhs for lhs, _ in rules}
        self.lazy = lazy
        is_lazy = (lambda s: False) if lazy is None else (lambda s: s not in nonterminals and s in lazy)
        for lhs, rhs in rules:
            for s in rhs:
                if s not in self.terminal_id and s not in nonterminals and not is_lazy(s):
                    raise GrammarError(f"symbol {s!r} used in rule {lhs!r} is not defined", name=s)
        # lazy nonterminals are productive by their contract
        productive = derivable(rules, nonterminals.__contains__, lambda s: is_lazy(s) or self.terminal_id[s] in usable)
        if start not in productive:
            raise GrammarError(f"the grammar's language is empty: rule {start!r} derives no finite string", name=start)
        rules = [
            (lhs, rhs)
            for lhs, rhs in rules
            if lhs in productive
            and all((s in productive) if s in nonterminals else (is_lazy(s) or self.terminal_id[s] in usable) for s in rhs)
        ]
        by_lhs: dict[str, list] = {}
        for lhs, rhs in rules:
            by_lhs.setdefault(lhs, []).append(rhs)
        reachable = {start} | ({s for s in lazy.uses() if s in nonterminals} if lazy is not None else set())
        stack = list(reachable)
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
        self._nt_id = nt_id
        self.n_terminals = n_terms
        self.symbol_name = self.terminal_names + names
        self.lazy_names: dict[int, str] = {}  # id -> name of the lazy nonterminals met so far

        # nullable nonterminals (a set: lazy ones join as they are met)
        nullable = derivable(rules, nt_id.__contains__, lambda s: is_lazy(s) and lazy.nullable(s))
        self.nullable = {nt_id[a] for a in nullable}

        # dotted rules laid out consecutively: dr + 1 moves the dot one symbol right
        self.next_symbol: list[int] = []  # -1 when the dot is at the end
        self.lhs: list[int] = []
        self.rules_of: dict[int, list[int]] = _RulesOf()
        self.rules_of.tables = self
        tid, nxt, lhs_of, rules_of = self.terminal_id, self.next_symbol, self.lhs, self.rules_of
        for lhs, rhs in rules:  # (inline: large schemas have tens of thousands of rules)
            a = nt_id[lhs]
            rules_of.setdefault(a, []).append(len(nxt))
            for s in rhs:
                i = tid.get(s)
                nxt.append(i if i is not None else nt_id[s] if s in nt_id else self._symbol_id(s))
                lhs_of.append(a)
            nxt.append(-1)
            lhs_of.append(a)
        self.start_dr = 0
        self.final_dr = 1  # $start -> start .
        self.used_terminals = frozenset(s for s in self.next_symbol if 0 <= s < n_terms)
        self._prediction_cache: dict[frozenset, _Prediction] = {}
        self._closure_cache: dict[int, frozenset] = {}
        self._expectations: dict[frozenset, tuple] = {}
        # hash-consing: columns with the same items (origins compared by identity, and
        # origins are themselves interned) behave identically from here on, so they are
        # one object -- e.g. "1+2+" and "1+" under a left-recursive sum -- and everything
        # cached on them (scans, parser states, masks) is reused across positions.
        self._interned: tuple = ({}, {})  # by acceptance: waiting items -> column
        self.root = Column.__new__(Column)  # sentinel origin of the start item: predicts nothing
        self.root.explicit = {}
        self.root.pred = _Prediction.empty()
        self.root._completions = {}
        self.root.tables = self

    def _symbol_id(self, s: str) -> int:
        hit = self.terminal_id.get(s)
        if hit is None:
            hit = self._nt_id.get(s)
        if hit is None:  # a lazy nonterminal met for the first time
            if self.lazy is None or s not in self.lazy:
                raise GrammarError(f"symbol {s!r} is not defined", name=s)
            hit = self._nt_id[s] = len(self.symbol_name)
            self.symbol_name.append(s)
            self.lazy_names[hit] = s
            if self.lazy.nullable(s):
                self.nullable.add(hit)
        return hit

    def _lay_out(self, a: int, rhs) -> None:
        self.rules_of.setdefault(a, []).append(len(self.next_symbol))
        for s in rhs:
            self.next_symbol.append(self._symbol_id(s))
            self.lhs.append(a)
        self.next_symbol.append(-1)
        self.lhs.append(a)

    def _lay_out_lazy(self, a: int) -> list:
        dict.__setitem__(self.rules_of, a, [])
        for rhs in self.lazy.rules(self.lazy_names[a]):
            self._lay_out(a, rhs)
        return dict.__getitem__(self.rules_of, a)

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

    def expectations(self, awaited: frozenset) -> tuple:
        """``(prediction, allowed terminals)`` of a column whose items await ``awaited``."""
        hit = self._expectations.get(awaited)
        if hit is None:
            n_t = self.n_terminals
            closure: set = set()
            for a in awaited:
                if a >= n_t:
                    closure |= self.predicted_closure(a)
            pred = self.prediction(frozenset(closure))
            allowed = frozenset(s for s in awaited if s < n_t) | pred.terminals
            hit = self._expectations[awaited] = (pred, allowed)
        return hit

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

    __slots__ = ("tables", "explicit", "pred", "allowed", "accepting", "_scans", "_completions", "__weakref__")

    def scan(self, terminal: int) -> "Column | None":
        """The column after ``terminal``; ``None`` if it cannot come next."""
        scans = self._scans
        if scans is None:  # made on first use: most columns explored for masks are never scanned
            scans = self._scans = {}
        else:
            hit = scans.get(terminal, False)
            if hit is not False:
                return hit
        seeds = [(dr + 1, o) for dr, o in self.explicit.get(terminal, ())]
        seeds += [(dr + 1, self) for dr in self.pred.by_next.get(terminal, ())]
        result = Column._build(self.tables, seeds) if seeds else None
        scans[terminal] = result
        return result

    def completed(self, a: int) -> tuple:
        """Items that completing nonterminal ``a`` (started in this column) adds, closed
        under further completion and nullable skips (cached: a column never changes).

        Many columns complete the same symbols in the same older columns (every token
        that closes a bracket, say), so the cascade up the origins is computed once.  The
        set holds the waiting items (and the final item): completed ones have had their effect.
        """
        done = self._completions
        if done is None:
            done = self._completions = {}
        else:
            hit = done.get(a)
            if hit is not None:
                return hit
        tables = self.tables
        nxt, lhs_of, nullable = tables.next_symbol, tables.lhs, tables.nullable
        items: dict = {}
        work: list = []
        for dr2, o2 in self.explicit.get(a, ()):
            if dr2 < 0:  # a tail item: its completion's effect, already closed
                for it in o2:
                    if it not in items:
                        items[it] = None
                continue
            it = (dr2 + 1, o2)
            if it not in items:
                items[it] = None
                work.append(it)
        for dr2 in self.pred.by_next.get(a, ()):
            it = (dr2 + 1, self)
            if it not in items:
                items[it] = None
                work.append(it)
        while work:
            dr, o = work.pop()
            s = nxt[dr]
            if s < 0:
                b = lhs_of[dr]
                closed = o._completions.get(b) if o._completions is not None else None
                if closed is not None:  # already closed: nothing to follow
                    for it in closed:
                        if it not in items:
                            items[it] = None
                    continue
                for dr2, o2 in o.explicit.get(b, ()):
                    if dr2 < 0:
                        for it in o2:
                            if it not in items:
                                items[it] = None
                        continue
                    it = (dr2 + 1, o2)
                    if it not in items:
                        items[it] = None
                        work.append(it)
                for dr2 in o.pred.by_next.get(b, ()):
                    it = (dr2 + 1, o)
                    if it not in items:
                        items[it] = None
                        work.append(it)
            elif s in nullable:
                it = (dr + 1, o)
                if it not in items:
                    items[it] = None
                    work.append(it)
        # completed items have had their effect (it is in the set); only the waiting ones
        # (and the final item, which tells acceptance) matter to whoever uses the set
        final = (tables.final_dr, tables.root)
        result = tuple(it for it in items if nxt[it[0]] >= 0 or it == final)
        done[a] = result
        return result

    @staticmethod
    def _build(tables: ParserTables, seeds) -> "Column":
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
                for it in o.completed(lhs_of[dr]):  # closed: no need to follow them
                    if it not in items:
                        items[it] = None
            elif s in nullable:  # Aycock-Horspool: also skip the nullable symbol
                it = (dr + 1, o)
                if it not in items:
                    items[it] = None
                    work.append(it)
        # completed items took part in the closure above but play no further part: the
        # column's future is fixed by its waiting items (and whether it accepts)
        accepting = (tables.final_dr, tables.root) in items
        # a waiting item whose rule ends with the awaited nonterminal (A -> x . B) is kept as
        # what completing it does, (-2 - B, the items completing A in its origin gives): the
        # path that led to it is forgotten (Leo's right-recursion idea), so right-recursive
        # lists reached along different paths (object members in any order) are one column
        root = tables.root
        waiting = []
        for item in items:
            dr, o = item
            s = nxt[dr]
            if s < 0:
                continue
            if s >= n_t and nxt[dr + 1] < 0 and o is not root:
                item = (-2 - s, frozenset(o.completed(lhs_of[dr])))
            waiting.append(item)
        key = frozenset(waiting)
        interned = tables._interned[accepting]
        hit = interned.get(key)
        if hit is not None:
            return hit
        col = Column.__new__(Column)
        col.tables = tables
        interned[key] = col
        explicit: dict[int, list] = {}
        for item in waiting:
            s = nxt[item[0]] if item[0] >= 0 else -2 - item[0]
            lst = explicit.get(s)
            if lst is None:
                explicit[s] = [item]
            else:
                lst.append(item)
        col.explicit = explicit
        # the predictions and the allowed set depend only on which symbols are awaited:
        # one shared (hash-cached) object per distinct set keeps this and later lookups cheap
        col.pred, col.allowed = tables.expectations(frozenset(explicit))
        col.accepting = accepting
        col._scans = None
        col._completions = None
        return col
