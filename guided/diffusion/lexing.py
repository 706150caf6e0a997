"""Non-contextual greedy lexing as a deterministic byte transducer, and token classes.

The infilling checker lexes with *all* of the grammar's terminals at every lexeme start
(not only those the parser expects, as the causal :class:`~guided.grammars.Grammar` does):
a lexeme extends while any terminal can still extend it, ends at the first byte none can
take (or at the end of the input), and is then the highest-priority terminals matching it
(ties stay ambiguous).  Lexing no longer depends on the parser, so the set of byte strings a
grammar accepts this way is the CFG over terminals composed with a finite transducer, and
intersecting it with a regular language is a Bar-Hillel product.  Every word accepted this
way is also accepted by the contextual lexer (a lexeme the full lexer cuts is cut the same
way when fewer terminals are allowed, and its terminal is among the allowed ones).

    >>> lexer = GreedyLexer(grammar.compiled)
    >>> lexer.walk(lexer.q0, b'{"a": 1')        # (labels emitted, end state) or None
    >>> lexer.classes(lexer.q0)                  # every token of the vocabulary, grouped

Emission is *eager*: a lexeme that no byte can extend is emitted as soon as it is read, so
the state is then ``q0`` again.  A *label* is the set of parser terminals a lexeme stands
for (a priority tie); lexemes of ``%ignore`` terminals emit nothing.  A lexeme that ties
between an ignored and a kept terminal emits a label with ``may_skip`` set.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from guided.grammars.lark_loader import GrammarError

__all__ = ["GreedyLexer", "TokenClass", "NOT_ACCEPTING", "SKIP"]

NOT_ACCEPTING = -2  # the lexeme read so far is no complete terminal
SKIP = -1  # the lexeme is an ignored terminal: nothing is emitted
_UNEXPANDED = -2  # LexerAutomaton.trans marker for a row not computed yet
_KEY = 1 << 21  # packs (trie node, label) into one int64 key


@dataclass(frozen=True)
class TokenClass:
    """Tokens that behave alike when read from one lexer state: same labels, same end state."""

    labels: tuple[int, ...]  # labels emitted while reading the token, in order
    end: int  # lexer state after the token (``q0``: nothing pending)
    ids: np.ndarray  # token ids of the class (first = the witness)

    @property
    def witness(self) -> int:
        return int(self.ids[0])


class GreedyLexer:
    """The grammar's lexer over all terminals, as a byte transducer with eager emission."""

    def __init__(self, compiled):
        spec = compiled.spec
        if compiled.indenter is not None:
            raise GrammarError("the infilling checker does not support indentation post-lexers")
        if spec.declared:
            raise GrammarError(f"the infilling checker needs a pattern for every terminal; declared: {spec.declared}")
        if spec.distinct:
            raise GrammarError("the infilling checker does not support distinct items (JSON Schema uniqueItems "
                               "over strings): its charts see the context-free rules only")
        self.compiled = compiled
        self.lex = compiled.lexer
        self.ignore = compiled.ignore
        self.terminal_names = list(compiled.tables.terminal_names)
        self.q0 = self.lex.start_for(frozenset(compiled.lexable))
        self.lex.expand(self.q0)
        self.labels: list[tuple[frozenset, bool]] = []  # label id -> (parser terminals, may_skip)
        self._label_index: dict = {}
        self._state_label: list[int] = []  # per lexer state: label id, SKIP or NOT_ACCEPTING
        self._label_arr = np.zeros(0, dtype=np.int32)
        self._ext_arr = np.zeros(0, dtype=bool)
        self._classes: dict[int, list[TokenClass]] = {}
        self._walks: dict = {}
        self._tuples: list[tuple] = [()]  # interned label sequences (id 0: nothing emitted)
        self._tuple_index: dict = {(): 0}
        self._ext_cache: dict = {}

    # -- per-state facts ---------------------------------------------------------------------
    def label_of(self, q: int) -> int:
        """Label emitted if the lexeme ends in state ``q`` (or ``SKIP`` / ``NOT_ACCEPTING``)."""
        sl = self._state_label
        while len(sl) <= q:
            sl.append(self._compute_label(len(sl)))
        return sl[q]

    def _compute_label(self, q: int) -> int:
        best = self.lex.best[q]
        if not best or self.lex.is_start(q):
            return NOT_ACCEPTING
        kept = frozenset(t for t in best if t not in self.ignore)
        if not kept:
            return SKIP
        key = (kept, len(kept) < len(best))
        lab = self._label_index.get(key)
        if lab is None:
            lab = self._label_index[key] = len(self.labels)
            self.labels.append(key)
        return lab

    def can_extend(self, q: int) -> bool:
        self.lex.rows_of(q)
        return bool(self.lex.can_extend[q])

    def row(self, q: int) -> list:
        return self.lex.rows_of(q)

    def describe(self, label: int) -> str:
        terms, skip = self.labels[label]
        names = "|".join(sorted(self.terminal_names[t] for t in terms))
        return names + ("?" if skip else "")

    def _arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """``label_of`` and ``can_extend`` for every lexer state known so far, as arrays."""
        lex = self.lex
        if len(self._label_arr) < len(lex.pairs):
            q = 0
            while q < len(lex.pairs):  # expanding a state may intern new ones: loop to a fixpoint
                if lex.can_extend[q] is None:
                    lex.expand(q)
                q += 1
            n = len(lex.pairs)
            self._label_arr = np.array([self.label_of(q) for q in range(n)], dtype=np.int32)
            self._ext_arr = np.array([bool(lex.can_extend[q]) for q in range(n)], dtype=bool)
        return self._label_arr, self._ext_arr

    # -- bytes ---------------------------------------------------------------------------------
    def step(self, q: int, b: int):
        """Read byte ``b`` in state ``q``: ``(emitted labels, next state)`` or ``None`` (no lexing)."""
        q0 = self.q0
        n = self.lex.rows_of(q)[b]
        emitted: tuple = ()
        if n < 0:
            if q == q0:
                return None
            lab = self.label_of(q)
            if lab == NOT_ACCEPTING:
                return None
            if lab >= 0:
                emitted = (lab,)
            n = self.lex.rows_of(q0)[b]
            if n < 0:
                return None
        if not self.can_extend(n):
            lab = self.label_of(n)
            if lab >= 0:
                emitted = emitted + (lab,)
            n = q0
        return emitted, n

    def events(self, q: int, data: bytes):
        """Emissions while reading ``data`` from ``q``: ``([(offset, label)], end state)`` or ``None``.

        ``offset`` is where the emitted lexeme ends: a lexeme cut because byte ``j`` cannot
        extend it ends at ``j``; one emitted eagerly after byte ``j`` ends at ``j + 1``.
        """
        key = (q, data)
        hit = self._walks.get(key, False)
        if hit is not False:
            return hit
        out = []
        q0 = self.q0
        rows = self.lex.rows
        result = None
        for j, b in enumerate(data):
            row = rows[q] or self.lex.expand(q)
            n = row[b]
            if n < 0:
                if q == q0:
                    break
                lab = self.label_of(q)
                if lab == NOT_ACCEPTING:
                    break
                if lab >= 0:
                    out.append((j, lab))
                n = (rows[q0] or self.lex.expand(q0))[b]
                if n < 0:
                    break
            if not self.can_extend(n):
                lab = self.label_of(n)
                if lab >= 0:
                    out.append((j + 1, lab))
                n = q0
            q = n
        else:
            result = (tuple(out), q)
        if len(self._walks) > 200_000:
            self._walks.clear()
        self._walks[key] = result
        return result

    def walk(self, q: int, data: bytes):
        """``(labels emitted, end state)`` after ``data`` from ``q``, or ``None``."""
        ev = self.events(q, data)
        if ev is None:
            return None
        return tuple(lab for _, lab in ev[0]), ev[1]

    def end(self, q: int):
        """Labels emitted when the input ends in state ``q``: ``()``, ``(label,)`` or ``None`` (not a lexeme)."""
        if q == self.q0:
            return ()
        lab = self.label_of(q)
        if lab == NOT_ACCEPTING:
            return None
        return () if lab == SKIP else (lab,)

    def lex_bytes(self, data: bytes):
        """Labels of ``data`` lexed from the start to the end, or ``None`` if it does not lex."""
        w = self.walk(self.q0, data)
        if w is None:
            return None
        tail = self.end(w[1])
        if tail is None:
            return None
        return w[0] + tail

    # -- the whole vocabulary from one state ---------------------------------------------------------
    def classes(self, q: int, vocab) -> list[TokenClass]:
        """Every usable token of ``vocab`` read from ``q``, grouped by (labels, end state). Cached."""
        hit = self._classes.get(q)
        if hit is not None and hit[0] is vocab:
            return hit[1]
        result = self._walk_vocab(q, vocab)
        self._classes[q] = (vocab, result)
        return result

    def _walk_vocab(self, q: int, vocab) -> list[TokenClass]:
        ids = self._usable(vocab)
        q0 = self.q0
        if q == q0:
            node, end, alive = self._walk_ids(q, vocab, ids)
            self._q0_walk = (vocab, node, end, alive)
        else:
            q0_walk = getattr(self, "_q0_walk", None)
            if q0_walk is None or q0_walk[0] is not vocab:
                self.classes(q0, vocab)
                q0_walk = self._q0_walk
            _, node0, end0, alive0 = q0_walk
            # a token whose first byte cannot extend the lexeme ends it there and then reads as from q0
            first = vocab.flat_bytes[vocab.offsets[ids]]
            self.lex.rows_of(q)
            extends = self.lex.trans[q, first] >= 0
            node = np.zeros(len(ids), dtype=np.int64)
            end = np.full(len(ids), -1, dtype=np.int64)
            alive = np.zeros(len(ids), dtype=bool)
            cut = ~extends
            lab = self.label_of(q)
            if lab != NOT_ACCEPTING and cut.any():
                sel = cut & alive0
                alive[sel] = True
                end[sel] = end0[sel]
                if lab >= 0:
                    uniq0, inv0 = self._q0_groups()
                    tuples = self._tuples
                    pre = np.array([self._tuple_id((lab,) + tuples[u]) for u in uniq0.tolist()], dtype=np.int64)
                    node[sel] = pre[inv0[sel]]
                else:
                    node[sel] = node0[sel]
            if extends.any():
                sub = np.flatnonzero(extends)
                n2, e2, a2 = self._walk_ids(q, vocab, ids[sub])
                node[sub], end[sub], alive[sub] = n2, e2, a2
        keep = np.flatnonzero(alive)
        if not len(keep):
            return []
        key = node[keep] * (1 << 32) + end[keep]
        order = np.argsort(key, kind="stable")  # stable: members stay in id order
        sk = key[order]
        bounds = np.concatenate(([0], np.flatnonzero(sk[1:] != sk[:-1]) + 1, [len(sk)]))
        members_all = ids[keep[order]]
        tuples = self._tuples
        out = []
        for k in range(len(bounds) - 1):
            u = int(sk[bounds[k]])
            out.append(TokenClass(tuples[u >> 32], u & 0xFFFFFFFF, members_all[bounds[k] : bounds[k + 1]]))
        return out

    def _q0_groups(self):
        """Distinct label-tuple ids of the tokens read from q0, and each token's index among them."""
        hit = getattr(self, "_q0_uniq", None)
        if hit is None or hit[0] is not self._q0_walk:
            uniq, inv = np.unique(self._q0_walk[1], return_inverse=True)
            hit = self._q0_uniq = (self._q0_walk, uniq, inv.reshape(-1))
        return hit[1], hit[2]

    def _usable(self, vocab) -> np.ndarray:
        hit = getattr(self, "_usable_ids", None)
        if hit is None or hit[0] is not vocab:
            hit = self._usable_ids = (vocab, np.flatnonzero(vocab.usable))
        return hit[1]

    def _walk_ids(self, q: int, vocab, ids: np.ndarray):
        """Per token of ``ids`` read from ``q``: (emitted-labels tuple id, end state, lexes at all)."""
        lex = self.lex
        q0 = self.q0
        lex.rows_of(q)
        m = len(ids)
        node_out = np.zeros(m, dtype=np.int64)
        end_out = np.full(m, -1, dtype=np.int64)
        alive_out = np.zeros(m, dtype=bool)
        # compacted arrays of the tokens still being read
        rows = np.arange(m)
        lengths = vocab.lengths[ids]
        pos = vocab.offsets[ids]
        flat = vocab.flat_bytes
        st = np.full(m, q, dtype=np.int64)
        node = np.zeros(m, dtype=np.int64)
        j = 0
        while len(rows):
            b = flat[pos + j]
            n = lex.trans[st, b]
            if (n == _UNEXPANDED).any():
                for qq in np.unique(st[n == _UNEXPANDED]).tolist():
                    lex.expand(qq)
                n = lex.trans[st, b]
            n = n.astype(np.int64)
            labels, ext = self._arrays()
            cut = n < 0
            ok = np.ones(len(rows), dtype=bool)
            if cut.any():
                sc = st[cut]
                lab = labels[sc]
                restart = lex.trans[q0, b[cut]].astype(np.int64)
                good = (lab != NOT_ACCEPTING) & (sc != q0) & (restart >= 0)
                ok[np.flatnonzero(cut)[~good]] = False
                emit = good & (lab >= 0)
                if emit.any():
                    where = np.flatnonzero(cut)[emit]
                    node[where] = self._extend(node[where], lab[emit])
                n[cut] = np.where(good, restart, -1)
            live = ok
            if live.any():
                labels, ext = self._arrays()
                nl = n[live]
                stop = ~ext[nl]
                if stop.any():
                    where = np.flatnonzero(live)[stop]
                    lab2 = labels[nl[stop]]
                    emit2 = lab2 >= 0
                    if emit2.any():
                        node[where[emit2]] = self._extend(node[where[emit2]], lab2[emit2])
                    n[where] = q0
            j += 1
            done = ok & (lengths == j)
            if done.any():
                r = rows[done]
                node_out[r] = node[done]
                end_out[r] = n[done]
                alive_out[r] = True
            more = ok & (lengths > j)
            rows, lengths, pos, st, node = rows[more], lengths[more], pos[more], n[more], node[more]
        return node_out, end_out, alive_out

    def _tuple_id(self, t: tuple) -> int:
        k = self._tuple_index.get(t)
        if k is None:
            k = self._tuple_index[t] = len(self._tuples)
            self._tuples.append(t)
        return k

    def _extend(self, nodes: np.ndarray, labs: np.ndarray) -> np.ndarray:
        """Tuple ids of ``tuples[node] + (lab,)``, vectorised over rows."""
        keys = nodes * _KEY + labs
        uniq, inverse = np.unique(keys, return_inverse=True)
        child = np.empty(len(uniq), dtype=np.int64)
        cache = self._ext_cache
        tuples = self._tuples
        for k, key in enumerate(uniq.tolist()):
            c = cache.get(key)
            if c is None:
                c = cache[key] = self._tuple_id(tuples[key // _KEY] + (key % _KEY,))
            child[k] = c
        return child[inverse.reshape(-1)]
