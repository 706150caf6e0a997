"""The product chart: Earley deduction over the lexeme automaton of a partial output.

Nodes of the automaton are the points where a lexeme can end (a terminal is emitted):

* ``("B", i)``: the start of slot ``i`` with nothing pending (``("B", 0)`` is the start);
* ``("K", i, j)``: inside known slot ``i``, before byte ``j``;
* ``("M", i, d, f)``: inside the token of hole slot ``i`` after it emitted ``d`` labels; ``f``
  names the token's *future*: the set of (labels still to come, end state) of the token
  classes that can be in progress there.  Tokens started in different lexer states with the
  same future are one node (their continuations are the same), which keeps the node count far
  below (lexer states x label prefixes);
* ``("G", i)``: anywhere inside gap slot ``i`` of a *relaxed* chart (a run of holes taken as
  any byte string: an over-approximation used to refute quickly);
* ``("F",)``: the end.

An edge ``u --label--> v`` is one lexeme (after any ignored ones) read from ``u`` that ends at
``v``; a hole slot's token is chosen among the vocabulary's token classes of the lexer state
it starts in.  The chart holds Earley items ``(dotted rule, origin node)`` per node, built in
topological order (a gap node, whose edges loop, is closed to a fixpoint); the partial output
is completable iff the end node holds the finished start item.  Items whose rule derives
nothing between two nodes are never created (prediction), and the run stops as soon as an
accepting item reaches the end.  Every item keeps the first way it was derived, so a witness
(one lexeme path, hence one token per hole slot) can be read back.

Incremental: the chart remembers its slots and nodes; a run on slots that differ from slot
``p`` on keeps every node before slot ``p`` and the edge memo of the unchanged suffix.
"""

from __future__ import annotations

import gc
import heapq

import numpy as np

from guided.diffusion.lexing import NOT_ACCEPTING, SKIP, GreedyLexer

__all__ = ["Chart", "ChartBudgetExceeded", "ENode"]


class ChartBudgetExceeded(RuntimeError):
    """The chart grew past its item budget before deciding."""


class ENode:
    """Items at one automaton node (immutable once built); origins are other ``ENode``s."""

    __slots__ = ("key", "explicit", "pred", "allowed", "accepting", "causes", "costs", "n_items", "own", "__weakref__")

    def __repr__(self) -> str:
        return f"ENode({self.key}, {self.n_items} items)"


def _sort_key(key: tuple, n_slots: int) -> tuple:
    kind = key[0]
    if kind == "B" or kind == "G":
        return (key[1], 0, 0)
    if kind == "K":
        return (key[1], key[2], 0)
    if kind == "M":
        return (key[1], 0, key[2])
    return (n_slots + 1, 0, 0)


class Chart:
    """Earley deduction over the lexeme automaton of a list of slots (see the module docstring).

    ``slots``: ``("k", bytes)``, ``("h", optional)`` or ``("g", m)`` (relaxed gap of ``m`` token
    positions, or None).
    ``run(slots)`` returns True/False; ``scans()`` after an accepting run gives the lexeme
    edges of one accepted path.  ``weighted``: keep for every item a derivation with the fewest
    lexemes inside gaps (used to pick short witnesses from a relaxed chart).
    """

    def __init__(self, lexer: GreedyLexer, vocab, budget: int | None = None, *, weighted: bool = False):
        self.lexer = lexer
        self.vocab = vocab
        self.tables = lexer.compiled.tables
        self.budget = budget
        self.slots: tuple = ()
        self.nodes: dict = {}
        self.frontier: tuple = (0, 0, 0)
        self._sids: dict = {}
        self._sstates: list = []
        self._emitters: dict = {}
        self._slot_bits: dict = {}  # slot -> bitset of its live silent states
        self._region = None  # (min slot, state count, mask) while re-scanning kept nodes
        self._starts: dict = {}
        self._cost_memo: dict = {}  # (id of a kids list in _starts, silent state) -> path cost
        self._filters: dict = {}
        self._silent: dict = {}
        self._futures: dict = {}
        self._gap_info: dict = {}
        self._twins: dict = {}  # seed items -> the node closed from them in this run
        self._future_ids: dict = {}
        self._future_sets: list = []
        self._future_of: dict = {}
        self._future_next: dict = {}
        self._gap_succ: dict = {}  # lexer state -> states one byte on inside a relaxed gap, no label emitted
        self._long_reach: dict = {}
        self.accept_via = None  # (node, path) of the accepting ε-edge, or the end node
        self.items_built = 0
        self._done = False
        self._result = False
        self._seq = 0
        self.weighted = weighted
        self._goal = (self.tables.final_dr, self.tables.root)

    # -- exploration: lexeme edges ---------------------------------------------------------------
    def _b(self, i: int) -> tuple:
        """The node at the start of slot ``i`` with nothing pending (a relaxed gap's own node)."""
        if i < len(self.slots) and self.slots[i][0] == "g":
            return ("G", i)
        return ("B", i)

    def _point(self, i: int, off: int) -> tuple:
        n = len(self.slots[i][1])
        if off >= n:
            return self._b(i + 1)
        if off == 0:
            return self._b(i)
        return ("K", i, off)

    def _summary(self, q: int, p: tuple) -> tuple:
        """Token classes from lexer state ``q`` after labels ``p``, grouped by what happens next:
        ``(silent, emits)``: ``silent[end] = class`` for tokens that end with no further label
        (the lexeme goes on in state ``end``); ``emits[(label, ends_token)] = class`` for the next
        label (``ends_token``: the token ends right there with nothing pending)."""
        key = (q, p)
        hit = self._futures.get(key)
        if hit is not None:
            return hit
        lexer = self.lexer
        q0 = lexer.q0
        classes = lexer.classes(q, self.vocab)
        n = len(p)
        silent: dict = {}
        emits: dict = {}
        members = range(len(classes)) if not p else self._class_index(q).get(p, ())
        for ci in members:
            c = classes[ci]
            if len(c.labels) == n:
                if c.end != q0 or not p:
                    silent.setdefault(c.end, ci)
            else:
                lab = c.labels[n]
                emits.setdefault((lab, len(c.labels) == n + 1 and c.end == q0), ci)
        hit = (silent, emits)
        self._futures[key] = hit
        return hit

    # -- exploration: lexeme edges ------------------------------------------------------------------
    # A *silent state* (i, q) is the start of slot i with the lexer in state q while the end of a
    # lexeme is searched for.  It has its first emissions inside slot i (``direct``: label ->
    # [(target, step)]) and the silent states of slot i + 1 (or of a gap's own node) it passes to
    # (``kids``: [(state id, step)]).  ``reach`` is the bitset of silent states reachable from it,
    # itself included, and ``_emitters[label]`` the bitset of states with a direct emission of that
    # label: the edges of a node whose items can scan terminals ``allowed`` are read off
    # ``reach & _emitters[label]`` for the few labels that meet ``allowed``.

    def _wanted(self, lab, allowed) -> bool:
        return lab is None or allowed is None or not self.lexer.labels[lab][0].isdisjoint(allowed)

    def _sid(self, i: int, q: int) -> int:
        key = (i, q)
        sid = self._sids.get(key)
        if sid is None:
            sid = self._sids[key] = len(self._sstates)
            self._sstates.append([i, q, None, None, None])  # slot, state, direct, kids, reach
            self._slot_bits[i] = self._slot_bits.get(i, 0) | (1 << sid)
        return sid

    def _expand(self, sid: int) -> list:
        rec = self._sstates[sid]
        if rec[2] is not None:
            return rec
        i, q = rec[0], rec[1]
        lexer = self.lexer
        slots = self.slots
        direct: dict = {}
        kids: list = []
        if i == len(slots):
            e = lexer.end(q)
            if e is not None:
                if not e:
                    direct[None] = [(("F",), None)]
                else:
                    direct[e[0]] = [(("F",), None)]
                    if lexer.labels[e[0]][1]:
                        direct[None] = [(("F",), None)]
        else:
            kind, arg = slots[i][:2]
            if kind == "k":
                ev = lexer.events(q, arg)
                if ev is not None:
                    evs, qe = ev
                    if evs:
                        off, lab = evs[0]
                        direct[lab] = [(self._point(i, off), None)]
                    else:
                        kids.append((self._sid(i + 1, qe), None))
            elif kind == "h":
                silent, emits = self._summary(q, ())
                for (lab, ends), ci in emits.items():
                    tgt = self._b(i + 1) if ends else ("M", i, 1, self._future(q, (lab,)))
                    direct.setdefault(lab, []).append((tgt, (i, q, ci)))
                for end, ci in silent.items():
                    kids.append((self._sid(i + 1, end), (i, q, ci)))
                if arg:  # optional: the slot may stay empty
                    kids.append((self._sid(i + 1, q), (i, q, -1)))
            else:  # relaxed gap: any bytes, greedy cuts ignored
                reach, labels = self._gap_facts(q)
                g = ("G", i)
                skip = SKIP in labels
                for lab in labels:
                    if lab >= 0:
                        direct[lab] = [(g, ("g", i, q, "emit", lab))]
                        skip = skip or lexer.labels[lab][1]
                if skip and q != lexer.q0:  # an ignored lexeme ends inside the gap: go on from its node
                    kids.append((self._sid(i, lexer.q0), ("g", i, q, "skip", None)))
                if q != lexer.q0 and len(slots[i]) > 2 and slots[i][2]:
                    # the whole gap inside the lexeme in progress: each required token is a byte at least
                    long = self._reach_after(q, slots[i][2])
                    reach = [r for r in reach if r in long]
                for r in reach:
                    kids.append((self._sid(i + 1, r), ("g", i, q, "through", r)))
        rec[2], rec[3] = direct, kids
        bit = 1 << sid
        em = self._emitters
        for lab in direct:
            em[lab] = em.get(lab, 0) | bit
        return rec

    def _reach(self, sid: int) -> int:
        rec = self._sstates[sid]
        if rec[4] is not None:
            return rec[4]
        stack = [sid]
        states = self._sstates
        while stack:
            top = stack[-1]
            r = self._expand(top)
            if r[4] is not None:
                stack.pop()
                continue
            pending = [k for k, _ in r[3] if states[k][4] is None]
            if pending:
                stack.extend(pending)
                continue
            acc = 1 << top
            for k, _ in r[3]:
                acc |= states[k][4]
            r[4] = acc
            stack.pop()
        return rec[4]

    def _node_start(self, key: tuple):
        """A node's own first emissions and the silent states its lexemes continue in."""
        hit = self._starts.get(key)
        if hit is not None:
            return hit
        kind = key[0]
        lexer = self.lexer
        own: dict = {}
        kids: list = []
        if kind == "B" or kind == "G":
            kids.append((self._sid(key[1], lexer.q0), None))
        elif kind == "K":
            _, i, j = key
            ev = lexer.events(lexer.q0, self.slots[i][1][j:])
            if ev is not None:
                evs, qe = ev
                if evs:
                    off, lab = evs[0]
                    own[lab] = [(self._point(i, j + off), None)]
                else:
                    kids.append((self._sid(i + 1, qe), None))
        elif kind == "M":
            _, i, depth, fid = key
            q0 = lexer.q0
            ends_seen: set = set()
            for rest, end in self._future_sets[fid]:
                if not rest:  # the token ends with no further label: the lexeme goes on in ``end``
                    if end not in ends_seen:
                        ends_seen.add(end)
                        kids.append((self._sid(i + 1, end), ("mf", i, None, end)))
                    continue
                lab = rest[0]
                ends = len(rest) == 1 and end == q0
                if ends:
                    tgt, step = self._b(i + 1), ("mf", i, lab, q0)
                else:
                    tgt, step = ("M", i, depth + 1, self._next_future(fid, lab)), ("mf", i, lab, None)
                lst = own.setdefault(lab, [])
                if all(t != tgt for t, _ in lst):
                    lst.append((tgt, step))
        hit = (own, kids)
        self._starts[key] = hit
        return hit

    def _label_filter(self, allowed):
        """Labels whose terminals meet ``allowed``, and labels that may stand for an ignored lexeme."""
        hit = self._filters.get(allowed)
        if hit is None or hit[0] != len(self.lexer.labels):
            labels = self.lexer.labels
            wanted = frozenset(
                lab for lab, (terms, _) in enumerate(labels) if allowed is None or not terms.isdisjoint(allowed)
            ) | {None}
            skippable = tuple(lab for lab, (_, skip) in enumerate(labels) if skip)
            hit = self._filters[allowed] = (len(labels), wanted, skippable)
        return hit[1], hit[2]

    def edges(self, key: tuple, allowed=None) -> dict:
        """Lexeme edges from node ``key`` whose label meets ``allowed`` (terminal ids, None: all):
        ``{(label or None, target): info}`` (label None: the output may end there); ``info``
        rebuilds the edge's steps with :meth:`path_steps`."""
        own, kids = self._node_start(key)
        out: dict = {}
        skips: list = []
        states = self._sstates
        reach = 0
        for kid, _ in kids:
            reach |= self._reach(kid)
        wanted, skippable = self._label_filter(allowed)
        for lab, lst in own.items():
            ok = lab in wanted
            for tgt, step in lst:
                info = ("own", key, step)
                if ok:
                    self._put(out, (lab, tgt), info)
                if lab in skippable:
                    skips.append((tgt, info))
        if reach and self._region is not None:
            reach &= self._region_mask()
        if reach:
            emitters = self._emitters
            for lab in set(emitters).intersection(wanted.union(skippable)):
                ok = lab in wanted
                bits = reach & emitters[lab]
                while bits:
                    low = bits & -bits
                    sid = low.bit_length() - 1
                    bits ^= low
                    for tgt, step in states[sid][2][lab]:
                        info = ("via", kids, sid, step)
                        if ok:
                            self._put(out, (lab, tgt), info)
                        if lab in skippable:
                            skips.append((tgt, info))
        for tgt, info in skips:  # the lexeme may be an ignored one: also go on from its end
            if tgt[0] == "G":
                continue  # inside a relaxed gap this is the gap's own "skip" kid
            for k2, info2 in self.edges(tgt, allowed).items():
                self._put(out, k2, ("skip", info, info2))
        return out

    def _put(self, out: dict, key: tuple, info) -> None:
        """Record an edge; a weighted chart keeps, per label and target, the cheapest way."""
        old = out.get(key)
        if old is None:
            out[key] = info
        elif self.weighted and self._path_cost(info) < self._path_cost(old):
            out[key] = info

    def _path_cost(self, info) -> float:
        """Weight of an edge in a weighted chart: about how many tokens its pieces inside gaps need
        (a lexeme ended or skipped: 1; a lexeme continued to state r: the fewest tokens to reach r),
        each scaled by its gap's :meth:`_gap_scale`.  The walk to a silent state is memoised per
        run (``kids`` lists live in ``_starts`` for the run, so their ids are stable keys)."""
        kind = info[0]
        if kind == "skip":
            return self._path_cost(info[1]) + self._path_cost(info[2])
        if kind == "own":
            return self._step_cost(info[2])
        _, kids, target, step = info
        key = (id(kids), target)
        cost = self._cost_memo.get(key)
        if cost is None:
            cost = sum(self._step_cost(st) for st in self.path_steps(("via", kids, target, None)))
            self._cost_memo[key] = cost
        return cost + self._step_cost(step)

    def _step_cost(self, st) -> float:
        if st is None or st[0] != "g":
            return 0
        if st[3] == "through":
            return self._silent_distance(st[2]).get(st[4], 8) * self._gap_scale(st[1])
        return self._gap_scale(st[1])

    def _gap_scale(self, i: int) -> float:
        """A gap ``("g", m)`` of ``m`` token positions weighs its pieces ``1/m`` each, so witnesses put
        their lexemes where there is room for them (``("g", None)``: weight 1)."""
        m = self.slots[i][1] if i < len(self.slots) else None
        return 1.0 / m if m else 1.0

    def _silent_distance(self, q: int) -> dict:
        """Fewest tokens from lexer state ``q`` to each state reachable without emitting a label."""
        hit = self._silent.get(q)
        if hit is None:
            hit = {q: 0}
            frontier = [q]
            d = 0
            while frontier and d < 6:
                d += 1
                nxt = []
                for r in frontier:
                    for end in self._summary(r, ())[0]:
                        if end not in hit:
                            hit[end] = d
                            nxt.append(end)
                frontier = nxt
            self._silent[q] = hit
        return hit

    def _region_mask(self) -> int:
        lo, count, mask = self._region
        if count != len(self._sstates):
            mask = 0
            for i, bits in self._slot_bits.items():
                if i >= lo:
                    mask |= bits
            self._region = (lo, len(self._sstates), mask)
        return mask

    def path_steps(self, info) -> list:
        """The steps (hole slot choices, gap pieces) of the edge described by ``info``."""
        if info is None:
            return []
        kind = info[0]
        if kind == "skip":
            return self.path_steps(info[1]) + self.path_steps(info[2])
        if kind == "own":
            return [info[2]] if info[2] is not None else []
        _, kids, target, step = info
        bit = 1 << target
        states = self._sstates
        steps: list = []
        cur = None
        for kid, kid_step in kids:
            if states[kid][4] is not None and states[kid][4] & bit:
                steps.append(kid_step)
                cur = kid
                break
        while cur != target:
            for sid, st in states[cur][3]:
                if states[sid][4] is not None and states[sid][4] & bit:
                    steps.append(st)
                    cur = sid
                    break
            else:  # pragma: no cover - reach guarantees a way
                raise AssertionError("broken reachability")
        steps.append(step)
        return [s for s in steps if s is not None]

    def _gap_facts(self, q: int):
        """States reachable from ``q`` without a labelled emission (any bytes), and the labels that
        can end the lexeme on the way (the greedy lookahead is dropped: an over-approximation)."""
        hit = self._gap_info.get(q)
        if hit is not None:
            return hit
        lexer = self.lexer
        q0 = lexer.q0
        labels_of, ext = lexer._arrays()
        row0 = np.asarray(lexer.row(q0))
        seen = {q}
        stack = [q]
        labels: set = set()
        while stack:
            r = stack.pop()
            lab = lexer.label_of(r)
            if r != q0 and lab != NOT_ACCEPTING:
                labels.add(lab)  # the lexeme may end after r
            row = np.asarray(lexer.row(r))
            nxt = np.unique(row[row >= 0])
            labels_of, ext = lexer._arrays()
            silent = set(nxt[ext[nxt]].tolist())
            for n in nxt[~ext[nxt]].tolist():  # eager: the byte completes a lexeme nothing extends
                lab2 = lexer.label_of(n)
                if lab2 >= 0:
                    labels.add(lab2)
                else:
                    silent.add(q0)
            if r != q0 and lab == SKIP and (row < 0).any():  # an ignored lexeme cut by a new one
                restart = row0[(row < 0) & (row0 >= 0)]
                for n in np.unique(restart).tolist():
                    if ext[n]:
                        silent.add(n)
                    elif lexer.label_of(n) >= 0:
                        labels.add(lexer.label_of(n))
                    else:
                        silent.add(q0)
            self._gap_succ[r] = frozenset(silent)
            for n in silent:
                if n not in seen:
                    seen.add(n)
                    stack.append(n)
        hit = (tuple(sorted(seen)), tuple(sorted(labels)))
        self._gap_info[q] = hit
        return hit

    def _reach_after(self, q: int, length: int) -> frozenset:
        """States reachable from ``q`` in a relaxed gap by ``length`` or more bytes that emit no label
        (the layers of the walk repeat with some period, so long lengths cost no more than short ones)."""
        key = (q, length)
        hit = self._long_reach.get(key)
        if hit is not None:
            return hit
        self._gap_facts(q)
        succ = self._gap_succ

        def step(layer: frozenset) -> frozenset:
            return frozenset(s for r in layer for s in succ[r])

        layer = frozenset((q,))
        first_seen: dict = {}
        k = 0
        while k < length and layer:
            if layer in first_seen:
                period = k - first_seen[layer]
                for _ in range((length - k) % period):
                    layer = step(layer)
                break
            first_seen[layer] = k
            layer = step(layer)
            k += 1
        out = set(layer)
        stack = list(layer)
        while stack:
            for s in succ[stack.pop()]:
                if s not in out:
                    out.add(s)
                    stack.append(s)
        hit = self._long_reach[key] = frozenset(out)
        return hit

    # -- inside a hole's token: nodes keyed by what the rest of the token can still do -------------
    # After a token of a hole slot emitted labels ``p`` (started in lexer state ``q``), all that
    # matters is the set of (labels still to come, end state) of the classes with that prefix: nodes
    # with equal sets have equal futures, so they are one node (many lexer states share them).

    def _intern_future(self, future: frozenset) -> int:
        fid = self._future_ids.get(future)
        if fid is None:
            fid = self._future_ids[future] = len(self._future_sets)
            self._future_sets.append(future)
        return fid

    def _future(self, q: int, p: tuple) -> int:
        key = (q, p)
        fid = self._future_of.get(key)
        if fid is None:
            classes = self.lexer.classes(q, self.vocab)
            q0 = self.lexer.q0
            n = len(p)
            future = frozenset(
                (c.labels[n:], c.end)
                for c in (classes[ci] for ci in self._class_index(q).get(p, ()))
                if len(c.labels) > n or c.end != q0
            )
            fid = self._future_of[key] = self._intern_future(future)
        return fid

    def _next_future(self, fid: int, lab: int) -> int:
        key = (fid, lab)
        nxt = self._future_next.get(key)
        if nxt is None:
            q0 = self.lexer.q0
            future = frozenset(
                (rest[1:], end)
                for rest, end in self._future_sets[fid]
                if rest and rest[0] == lab and (len(rest) > 1 or end != q0)
            )
            nxt = self._future_next[key] = self._intern_future(future)
        return nxt

    def hole_choices(self, steps: list) -> dict:
        """``{hole slot: token id or None}`` from the steps of a path (a token's pieces, in order)."""
        lexer = self.lexer
        started: dict = {}
        out: dict = {}
        for st in steps:
            if st[0] == "g":
                continue
            if st[0] == "mf":
                _, i, lab, end = st
                rec = started[i]
                if lab is not None:
                    rec[1].append(lab)
                rec[2] = end
                continue
            i, q, ci = st
            if ci < 0:
                out[i] = None
                continue
            out[i] = lexer.classes(q, self.vocab)[ci].witness
            started[i] = [q, list(lexer.classes(q, self.vocab)[ci].labels[:1]), None, ci]
        for i, (q, labels, end, ci) in started.items():
            if end is None:  # the token's class was complete at its first piece
                continue
            want = (tuple(labels), end)
            for c in lexer.classes(q, self.vocab):
                if (c.labels, c.end) == want:
                    out[i] = c.witness
                    break
            else:  # pragma: no cover - a future only holds what some class does
                raise AssertionError("no token class for a hole's path")
        return out

    def _class_index(self, q: int) -> dict:
        key = ("index", q)
        hit = self._futures.get(key)
        if hit is None:
            hit = {}
            for ci, c in enumerate(self.lexer.classes(q, self.vocab)):
                for k in range(1, len(c.labels) + 1):
                    hit.setdefault(c.labels[:k], []).append(ci)
            self._futures[key] = hit
        return hit

    # -- Earley item sets --------------------------------------------------------------------------
    def _build(self, key: tuple, seeds: dict) -> ENode:
        """Close the seeded items of node ``key`` (seeds: ``{item: (cost, cause)}``)."""
        node = ENode()
        node.key = key
        node.own = None
        shared_key = None
        if key[0] != "G" and not self.weighted:
            # nodes seeded with the same items (e.g. one label scanned into tokens with different
            # futures) close to the same items: share them; only the seeds' own causes differ
            shared_key = frozenset(seeds)
            twin = self._twins.get(shared_key)
            if twin is not None:
                for name in ("causes", "costs", "explicit", "pred", "allowed", "accepting", "n_items"):
                    setattr(node, name, getattr(twin, name))
                node.own = {it: cause for it, (_, cause) in seeds.items()}
                return node
        if key[0] == "G":
            self._close_loop(node, seeds)
        elif self.weighted:
            self._close_weighted(node, seeds)
        else:
            self._close(node, seeds)
        tables = self.tables
        nxt, n_t = tables.next_symbol, tables.n_terminals
        items = node.causes
        if key[0] != "G":
            explicit: dict = {}
            predicted: set = set()
            for it in items:
                s = nxt[it[0]]
                if s >= 0:
                    explicit.setdefault(s, []).append(it)
                    if s >= n_t:
                        predicted.add(s)
            closure: set = set()
            for a in predicted:
                closure |= tables.predicted_closure(a)
            node.explicit = explicit
            node.pred = tables.prediction(frozenset(closure))
            node.allowed = frozenset(s for s in explicit if s < n_t) | node.pred.terminals
        node.accepting = self._goal in items
        node.n_items = len(items)
        self._count(len(items))
        if shared_key is not None:
            self._twins[shared_key] = node
        return node

    def _close(self, node: ENode, seeds: dict) -> None:
        """Earley closure at a node of the DAG: completions only look at earlier nodes."""
        tables = self.tables
        nxt, lhs_of, nullable = tables.next_symbol, tables.lhs, tables.nullable
        items = {it: cause for it, (_, cause) in seeds.items()}
        work = list(items)
        while work:
            dr, o = work.pop()
            s = nxt[dr]
            if s < 0:
                a = lhs_of[dr]
                for it0 in o.explicit.get(a, ()):
                    it = (it0[0] + 1, it0[1])
                    if it not in items:
                        items[it] = ("c", it0, o, (dr, o))
                        work.append(it)
                for dr2 in o.pred.by_next.get(a, ()):
                    it = (dr2 + 1, o)
                    if it not in items:
                        items[it] = ("c", (dr2, o), o, (dr, o))
                        work.append(it)
            elif s in nullable:
                it = (dr + 1, o)
                if it not in items:
                    items[it] = ("n", (dr, o))
                    work.append(it)
        node.causes = items
        node.costs = None

    def _close_weighted(self, node: ENode, seeds: dict) -> None:
        """Like :meth:`_close`, each item kept with its cheapest derivation (Dijkstra; an item is
        pushed again only when its cost improves, ties keep the first way found)."""
        tables = self.tables
        nxt, lhs_of, nullable = tables.next_symbol, tables.lhs, tables.nullable
        items: dict = {}
        costs: dict = {}
        best: dict = {}
        heap = []
        for k, (it, (c, cause)) in enumerate(seeds.items()):
            heap.append((c, k, it, cause))
            best[it] = c
        heapq.heapify(heap)
        push, pop = heapq.heappush, heapq.heappop
        k = len(heap)
        while heap:
            c, _, it, cause = pop(heap)
            if it in items:
                continue
            items[it] = cause
            costs[it] = c
            dr, o = it
            s = nxt[dr]
            if s < 0:
                a = lhs_of[dr]
                oc = getattr(o, "costs", None)
                for it0 in o.explicit.get(a, ()):
                    new = (it0[0] + 1, it0[1])
                    cn = c + (oc[it0] if oc else 0)
                    b = best.get(new)
                    if b is None or cn < b:
                        best[new] = cn
                        k += 1
                        push(heap, (cn, k, new, ("c", it0, o, it)))
                for dr2 in o.pred.by_next.get(a, ()):
                    new = (dr2 + 1, o)
                    b = best.get(new)
                    if b is None or c < b:
                        best[new] = c
                        k += 1
                        push(heap, (c, k, new, ("c", (dr2, o), o, it)))
            elif s in nullable:
                new = (dr + 1, o)
                b = best.get(new)
                if b is None or c < b:
                    best[new] = c
                    k += 1
                    push(heap, (c, k, new, ("n", it)))
        node.causes = items
        node.costs = costs

    def _close_loop(self, node: ENode, seeds: dict) -> None:
        """A relaxed gap's node, whose edges loop on every terminal: Knuth's algorithm to a fixpoint
        (a loop scan costs 1, so each item keeps a derivation with the fewest lexemes in the gap)."""
        from guided.grammars.earley import _Prediction

        tables = self.tables
        nxt, lhs_of, nullable, n_t = tables.next_symbol, tables.lhs, tables.nullable, tables.n_terminals
        loop_terms = self._loop_terminals()
        loop_cost = self._gap_scale(node.key[1])
        node.pred = _Prediction.empty()
        waiting: dict = {}  # symbol -> final items of this node waiting on it
        done_self: dict = {}  # nonterminal -> final complete items with origin = this node
        predicted: set = set()
        items: dict = {}
        costs: dict = {}
        node.explicit = waiting
        best: dict = {}
        heap = []
        for k, (it, (c, cause)) in enumerate(seeds.items()):
            heap.append((c, k, it, cause))
            best[it] = c
        heapq.heapify(heap)
        pop = heapq.heappop
        seq = [len(heap)]

        def push(cost, item, cause):  # only improvements: a stale duplicate would be skipped anyway
            b = best.get(item)
            if b is None or cost < b:
                best[item] = cost
                seq[0] += 1
                heapq.heappush(heap, (cost, seq[0], item, cause))

        while heap:
            c, _, it, cause = pop(heap)
            if it in items:
                continue
            items[it] = cause
            costs[it] = c
            dr, o = it
            s = nxt[dr]
            if s < 0:
                a = lhs_of[dr]
                if o is node:
                    done_self.setdefault(a, []).append(it)
                    for w in waiting.get(a, ()):
                        push(costs[w] + c, (w[0] + 1, w[1]), ("c", w, node, it))
                else:
                    oc = getattr(o, "costs", None)
                    for it0 in o.explicit.get(a, ()):
                        push(c + (oc[it0] if oc else 0), (it0[0] + 1, it0[1]), ("c", it0, o, it))
                    for dr2 in o.pred.by_next.get(a, ()):
                        push(c, (dr2 + 1, o), ("c", (dr2, o), o, it))
                continue
            waiting.setdefault(s, []).append(it)
            if s < n_t:
                if s in loop_terms:
                    push(c + loop_cost, (dr + 1, o), ("l", it, s))
                continue
            if s in nullable:
                push(c, (dr + 1, o), ("n", it))
            for d in done_self.get(s, ()):
                push(c + costs[d], (dr + 1, o), ("c", it, node, d))
            if s not in predicted:
                predicted.add(s)
                for dr0 in tables.rules_of.get(s, ()):
                    push(0, (dr0, node), ("p",))
        node.allowed = frozenset(s for s in waiting if s < n_t)
        node.causes = items
        node.costs = costs

    def _loop_terminals(self) -> frozenset:
        hit = getattr(self, "_loop_terms", None)
        if hit is None:
            hit = self._loop_terms = frozenset(self.tables.used_terminals)
        return hit

    def _count(self, n: int) -> None:
        """Charge ``n`` units of work (items built, edges scanned) against the budget."""
        self.items_built += n
        if self.budget is not None and self.items_built > self.budget:
            raise ChartBudgetExceeded(f"chart passed {self.budget} units of work")

    # -- the run -------------------------------------------------------------------------------------
    def run(self, slots: tuple) -> bool:
        """True iff some filling of ``slots`` lexes and parses (relaxed gaps: any bytes)."""
        # The chart allocates many small objects but makes no reference cycles: pausing the
        # cyclic garbage collector (whose full passes scan every item) halves the time.
        enabled = gc.isenabled()
        gc.disable()
        try:
            return self._run(slots)
        finally:
            if enabled:
                gc.enable()

    def _run(self, slots: tuple) -> bool:
        slots = tuple(slots)
        old = self.slots
        n = len(slots)
        p = 0
        while p < min(n, len(old)) and old[p] == slots[p]:
            p += 1
        if p == n == len(old) and self.nodes and self._done:
            return self._result
        # silent states of the unchanged suffix survive (their facts only read those slots)
        keep_from = n
        if len(old) == n:
            s = 0
            while s < n - p and old[n - 1 - s] == slots[n - 1 - s]:
                s += 1
            keep_from = n - s
        full = self._reset_exploration(p, keep_from if len(old) == n else None)
        self.slots = slots
        limit = min((p, 0, 0), self.frontier)
        kept = {} if full else {k: v for k, v in self.nodes.items() if _sort_key(k, n) < limit and k != ("F",)}
        self.nodes = kept
        # the nodes before ``limit`` are complete and nothing later is built yet: a run stopped by the
        # budget, or accepting while the kept nodes are scanned, must not leave an older frontier
        # that would make the next run keep nodes this one never built
        self.frontier = (0, 0, 0) if full else limit
        self.items_built = 0
        self.accept_via = None
        self._done = False
        self._twins = {}
        heap: list = []
        seeds: dict = {}
        if not kept:
            start = ("B", 0) if n == 0 or slots[0][0] != "g" else ("G", 0)
            seeds[start] = {(self.tables.start_dr, self.tables.root): (0, ("0",))}
            heap.append((_sort_key(start, n), -1, start))
        else:
            # only lexemes that end at or after the changed slot need scanning again
            self._region = (max(0, limit[0] - 1), -1, 0)
            for key in sorted(kept, key=lambda k: _sort_key(k, n)):
                if self._emit(kept[key], seeds, heap, limit, n):
                    self._region = None
                    return self._finish(True)
            self._region = None
        while heap:
            sk, _, key = heapq.heappop(heap)
            if key in self.nodes:
                continue
            node = self._build(key, seeds.pop(key))
            self.nodes[key] = node
            self.frontier = sk
            if key == ("F",):
                if node.accepting:
                    self.accept_via = node
                    return self._finish(True)
                continue
            if self._emit(node, seeds, heap, None, n):
                return self._finish(True)
        self.frontier = (n + 2, 0, 0)
        return self._finish(False)

    def _reset_exploration(self, p: int, keep_from) -> bool:
        """Forget silent states whose facts read a changed slot (``p`` to ``keep_from - 1``): the
        states of those slots and of slot ``p - 1``, and earlier states that can reach them.
        Everything is forgotten if ``keep_from`` is None (the slot count changed) or the tables
        grew large; True then.
        Forgotten records stay in the table, so kept nodes can still rebuild their paths."""
        self._starts = {}
        self._cost_memo = {}
        self._region = None
        if keep_from is None or len(self._sstates) > 100_000:
            self._sids, self._sstates, self._emitters, self._slot_bits = {}, [], {}, {}
            return True
        changed = 0
        # slot p - 1 too: a lexeme ending with it targets the node of slot p, whose kind may have changed
        for i in range(max(0, p - 1), keep_from):
            changed |= self._slot_bits.pop(i, 0)
        dead = changed
        states = self._sstates
        for i in range(p):
            bits = self._slot_bits.get(i, 0)
            drop = 0
            b = bits
            while b:
                low = b & -b
                sid = low.bit_length() - 1
                b ^= low
                reach = states[sid][4]
                if reach is None or reach & changed:
                    drop |= low
            if drop:
                self._slot_bits[i] = bits & ~drop
                dead |= drop
        if dead:
            for key, sid in list(self._sids.items()):
                if dead >> sid & 1:
                    del self._sids[key]
            self._emitters = {lab: e & ~dead for lab, e in self._emitters.items()}
        return False

    def _finish(self, result: bool) -> bool:
        self._done = True
        self._result = result
        return result

    def _emit(self, node: ENode, seeds: dict, heap: list, limit, n: int) -> bool:
        """Scan the edges out of ``node`` into the seeds of their targets; True on an early accept
        (unweighted charts only: a weighted one must see every way into the end)."""
        if not node.n_items:
            return False
        allowed = node.allowed
        labels = self.lexer.labels
        key = node.key
        costs = node.costs
        weighted = self.weighted
        end = ("F",)
        edges = self.edges(key, allowed)
        self._count(len(edges))
        for (lab, tgt), path in edges.items():
            if tgt == key:
                continue  # a gap's loop: closed inside the node
            if limit is not None and _sort_key(tgt, n) < limit:
                continue  # kept from the previous run
            if lab is None:  # the output may end here (after ignored or empty slots)
                if not node.accepting:
                    continue
                hit = None
            else:
                hit = labels[lab][0] & allowed
                if not hit:
                    continue
            sd = seeds.get(tgt)
            if sd is None:
                sd = seeds[tgt] = {}
                self._seq += 1
                heapq.heappush(heap, (_sort_key(tgt, n), self._seq, tgt))
            step = self._path_cost(path) if weighted else 0
            if hit is None:
                goal = self._goal
                c = (costs[goal] if costs else 0) + step
                old = sd.get(goal)
                if old is None or c < old[0]:
                    sd[goal] = (c, ("e", node, goal, path))
            else:
                for t in hit:
                    for it in node.explicit.get(t, ()):
                        new = (it[0] + 1, it[1])
                        c = (costs[it] if costs else 0) + step
                        old = sd.get(new)
                        if old is None or c < old[0]:
                            sd[new] = (c, ("s", node, it, t, path))
                    for dr in node.pred.by_next.get(t, ()):
                        new = (dr + 1, node)
                        old = sd.get(new)
                        if old is None or step < old[0]:
                            sd[new] = (step, ("s", node, (dr, node), t, path))
            if tgt == end and not weighted and self._goal in sd:
                fnode = self._build(tgt, sd)
                if fnode.accepting:
                    self.nodes[tgt] = fnode
                    self.accept_via = fnode
                    return True
        return False

    # -- witnesses ------------------------------------------------------------------------------------------
    def scans(self) -> list:
        """After an accepting run: the lexeme edges of one accepted path, ``[(src, terminal, path, dst)]``
        (``terminal`` is None for the final edge that emits nothing)."""
        if self.accept_via is None:
            raise ValueError("no accepting run to read a witness from")
        stack: list = [("item", self.accept_via, self._goal)]
        result: list = []
        while stack:
            tag, a, b = stack.pop()
            if tag == "emit":
                result.append(a)
                continue
            node, item = a, b
            cause = node.own.get(item) if node.own else None
            if cause is None:
                cause = node.causes.get(item)
            if cause is None:
                continue  # a predicted item: derives nothing yet
            kind = cause[0]
            if kind == "s":
                _, src, sitem, t, p = cause
                stack.append(("emit", (src, t, p, node), None))
                stack.append(("item", src, sitem))
            elif kind == "c":
                _, witem, onode, citem = cause
                stack.append(("item", node, citem))
                stack.append(("item", onode, witem))
            elif kind == "n":
                stack.append(("item", node, cause[1]))
            elif kind == "l":
                stack.append(("emit", (node, cause[2], None, node), None))
                stack.append(("item", node, cause[1]))
            elif kind == "e":
                _, src, sitem, p = cause
                stack.append(("emit", (src, None, p, node), None))
                stack.append(("item", src, sitem))
        return result
