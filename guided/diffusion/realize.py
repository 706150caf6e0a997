"""Turn a relaxed chart's accepted path into real tokens for every hole (a witness), or give up.

The relaxed chart reads each run of holes as *any* byte string.  Its accepted path says, per
run, which lexemes the run holds: the end of the lexeme that was in progress when the run
began, whole lexemes inside it, and the start of the lexeme that continues after it.  Each
becomes the shortest bytes with that behaviour (breadth-first in the lexer automaton); the
run's bytes are then split into a number of vocabulary tokens the run allows (dynamic
programming over token boundaries), padding with ignored whitespace or lengthening a lexeme
when the run needs more tokens than its bytes give.  The whole filled output is finally
lexed and parsed exactly, so a returned witness is always a real word of the grammar; when
any step fails the caller falls back to the exact chart.

    >>> realizer = Realizer(lexer, vocab)
    >>> realizer.fill(relaxed_chart, runs)     # {slot: token id or None} or None
"""

from __future__ import annotations

from collections import deque

from guided.diffusion.lexing import NOT_ACCEPTING, SKIP, GreedyLexer

__all__ = ["Realizer", "parse_bytes"]

_MAX_TOKEN_BYTES = 48  # longest token tried when splitting a run's bytes (an under-approximation is fine)


def parse_bytes(lexer: GreedyLexer, data: bytes) -> bool:
    """True iff ``data`` is a word of the grammar under greedy non-contextual lexing."""
    labels = lexer.lex_bytes(data)
    if labels is None:
        return False
    tables = lexer.compiled.tables
    cols = [tables.initial()]
    for lab in labels:
        terms, may_skip = lexer.labels[lab]
        nxt = []
        for col in cols:
            for t in terms:
                c = col.scan(t)
                if c is not None and all(c is not o for o in nxt):
                    nxt.append(c)
            if may_skip and all(col is not o for o in nxt):
                nxt.append(col)
        if not nxt:
            return False
        cols = nxt
    return any(c.accepting for c in cols)


class Realizer:
    """Bytes for the lexeme pieces of relaxed gaps, and token splits with a given count."""

    def __init__(self, lexer: GreedyLexer, vocab):
        self.lexer = lexer
        self.vocab = vocab
        self._bfs: dict = {}
        self._separators = None
        self._pad = None
        self._first: dict = {}
        self._term_labels: dict = {}
        self._moves: dict = {}
        self._memo: dict = {}
        self._skip_labels = None

    # -- lexer searches ------------------------------------------------------------------------
    def _tree(self, q: int):
        """Shortest byte paths from ``q`` that emit no label: ``{state: (parent, byte)}`` and the
        shortest clean emissions ``{label: (state before, byte)}`` (lexeme ended by an eager cut)."""
        hit = self._bfs.get(q)
        if hit is not None:
            return hit
        lexer = self.lexer
        parent = {q: None}
        eager: dict = {}
        order = deque([q])
        while order:
            r = order.popleft()
            for b in range(256):
                st = lexer.step(r, b)
                if st is None:
                    continue
                em, n = st
                if not em:
                    if n not in parent:
                        parent[n] = (r, b)
                        order.append(n)
                elif len(em) == 1 and n == lexer.q0 and lexer.row(r)[b] >= 0:
                    # the byte completed a lexeme that nothing can extend: a clean end
                    if em[0] not in eager:
                        eager[em[0]] = (r, b)
        hit = (parent, eager)
        self._bfs[q] = hit
        return hit

    def _path(self, q: int, r: int) -> bytes | None:
        parent, _ = self._tree(q)
        if r not in parent:
            return None
        out = bytearray()
        while parent[r] is not None:
            r, b = parent[r]
            out.append(b)
        return bytes(reversed(out))

    def emit_bytes(self, q: int, labels) -> tuple[bytes, bool] | None:
        """Shortest bytes from ``q`` ending the lexeme as one of ``labels``; ``clean``: nothing can extend it."""
        parent, eager = self._tree(q)
        best = None
        for lab in labels:
            e = eager.get(lab)
            if e is not None:
                r, b = e
                cand = self._path(q, r) + bytes([b])
                if best is None or len(cand) < len(best[0]):
                    best = (cand, True)
        if best is not None:
            return best
        lexer = self.lexer
        for r in parent:  # BFS order: shortest first
            if r != lexer.q0 and lexer.label_of(r) in labels:
                return self._path(q, r), False
        return None

    def separators(self) -> list[bytes]:
        """Shortest strings of the ignored terminals (inserted between lexemes)."""
        if self._separators is None:
            lexer = self.lexer
            seps = []
            parent, _ = self._tree(lexer.q0)
            for r in parent:
                if r != lexer.q0 and lexer.label_of(r) == SKIP:
                    p = self._path(lexer.q0, r)
                    if p and p not in seps:
                        seps.append(p)
            seps.sort(key=len)
            self._separators = seps[:3]
        return self._separators

    def pad(self, m: int) -> bytes | None:
        """An ignored lexeme of exactly ``m`` bytes (a run of one repeated byte), if the grammar has one."""
        if m <= 0:
            return b""
        lexer = self.lexer
        for sep in self.separators():
            if len(sep) != 1:
                continue
            data = sep * m
            if lexer.lex_bytes(data) == ():
                return data
        return None

    def longer_path(self, q: int, r: int, length: int) -> bytes | None:
        """Bytes of exactly ``length`` from ``q`` to ``r`` emitting no label (layered search)."""
        layers = [{q: None}]
        for _ in range(length):
            nxt: dict = {}
            for s in layers[-1]:
                for n, b in self._silent_moves(s).items():
                    if n not in nxt:
                        nxt[n] = (s, b)
            if not nxt:
                return None
            layers.append(nxt)
        if r not in layers[-1]:
            return None
        out = bytearray()
        for k in range(length, 0, -1):
            s, b = layers[k][r]
            out.append(b)
            r = s
        return bytes(reversed(out))

    def _silent_moves(self, s: int) -> dict:
        """``{next state: smallest byte}`` over the bytes read from ``s`` that emit no label (cached:
        the layered search above would otherwise step through all 256 bytes per state and layer)."""
        hit = self._moves.get(s)
        if hit is None:
            hit = {}
            step = self.lexer.step
            for b in range(256):
                st = step(s, b)
                if st is not None and not st[0] and st[1] not in hit:
                    hit[st[1]] = b
            self._moves[s] = hit
        return hit

    # -- tokens ------------------------------------------------------------------------------------
    def split(self, data: bytes, lo: int, hi: int) -> list[int] | None:
        """Token ids spelling ``data`` with a count in ``[lo, hi]`` (fewest tokens that reach ``lo``)."""
        key = ("split", data, lo, hi)
        hit = self._memo.get(key, False)
        if hit is False:
            hit = self._memo[key] = self._split(data, lo, hi)
            self._trim_memo()
        return None if hit is None else list(hit)

    def _split(self, data: bytes, lo: int, hi: int) -> list[int] | None:
        n = len(data)
        if n == 0:
            return [] if lo == 0 else None
        to_id = self.vocab.bytes_to_id
        # reach[i]: bitset of token counts that spell data[:i]; back[(i, k)] = previous position
        reach = [0] * (n + 1)
        reach[0] = 1
        cap = (1 << (hi + 1)) - 1
        back: dict = {}
        for i in range(n):
            if not reach[i]:
                continue
            counts = reach[i]
            for ln in range(1, min(_MAX_TOKEN_BYTES, n - i) + 1):
                piece = data[i : i + ln]
                if piece not in to_id:
                    continue
                j = i + ln
                new = (counts << 1) & cap & ~reach[j]
                if new:
                    reach[j] |= new
                    k = 0
                    while new:
                        if new & 1:
                            back[(j, k)] = i
                        new >>= 1
                        k += 1
        ok = reach[n] >> lo
        if not ok:
            return None
        k = lo + ((ok & -ok).bit_length() - 1)
        ids = []
        j = n
        while j > 0:
            i = back[(j, k)]
            ids.append(to_id[data[i:j]])
            j, k = i, k - 1
        ids.reverse()
        return ids

    # -- from a relaxed chart -------------------------------------------------------------------------
    def read(self, chart) -> tuple[dict, dict]:
        """From a relaxed chart's accepted path: per gap slot, its lexeme pieces in order
        ``(kind, lexer state, arg, terminal)``; per kept hole slot, the token chosen (a witness of
        its class, or None for an empty optional slot)."""
        pieces: dict = {}
        choices: dict = {}
        steps = []
        for src, t, path, dst in chart.scans():
            if t is not None and path is None and src is dst and src.key[0] == "G":
                pieces.setdefault(src.key[1], []).append(("lex", self.lexer.q0, t, t))
                continue
            for st in chart.path_steps(path):
                if st[0] == "g":
                    _, i, q, kind, x = st
                    pieces.setdefault(i, []).append((kind, q, x, t if kind == "emit" else None))
                else:
                    steps.append(st)
        choices.update(chart.hole_choices(steps))
        return pieces, choices

    def plan(self, pieces: list):
        """A gap's plan: the lexer state it starts in, the terminals it must emit, the state it ends in."""
        lexer = self.lexer
        if not pieces:
            return lexer.q0, (), lexer.q0
        start = pieces[0][1]
        terminals = tuple(t for kind, _, _, t in pieces if kind in ("emit", "lex"))
        end = pieces[-1][2] if pieces[-1][0] == "through" else lexer.q0
        return start, terminals, end

    def tokens_for(self, start: int, terminals: tuple, end: int, lo: int, hi: int) -> list[int] | None:
        """Between ``lo`` and ``hi`` tokens that, read from lexer state ``start``, emit exactly
        ``terminals`` (each label holding its terminal, or an ignorable label skipped) and end in
        state ``end``: a layered search over (terminals done, lexer state), fewest tokens first.
        Memoised: most runs of holes keep their plan from one check to the next."""
        key = ("tokens", start, terminals, end, lo, hi, len(self.lexer.labels))
        hit = self._memo.get(key, False)
        if hit is False:
            hit = self._memo[key] = self._tokens_for(start, terminals, end, lo, hi)
            self._trim_memo()
        return None if hit is None else list(hit)

    def _trim_memo(self) -> None:
        if len(self._memo) > 50_000:
            self._memo.clear()

    def _tokens_for(self, start: int, terminals: tuple, end: int, lo: int, hi: int) -> list[int] | None:
        lexer = self.lexer
        labels = lexer.labels
        n = len(terminals)
        if lo == 0 and n == 0 and start == end:
            return []
        # an ignored lexeme left open at the end is as good as none: what follows cuts it
        ends = {end} | (self._open_ignored() if end == lexer.q0 else set())
        layers: list[dict] = [{(0, start): None}]
        advanced: dict = {}  # (terminals done, a class's labels) -> terminals done after it
        for k in range(1, hi + 1):
            nxt: dict = {}
            for j, q in layers[-1]:
                by_first = self._by_first(q)
                options = list(by_first.get(None, ()))
                if j < n:
                    for lab in self._labels_of_terminal(terminals[j]):
                        options.extend(by_first.get(lab, ()))
                for lab in self._skippable():
                    options.extend(by_first.get(lab, ()))
                classes = lexer.classes(q, self.vocab)
                for ci in options:
                    c = classes[ci]
                    after = advanced.get((j, c.labels))
                    if after is None:
                        after = advanced[(j, c.labels)] = self._advance(j, c.labels, terminals, labels)
                    for j2 in after:
                        key = (j2, c.end)
                        if key not in nxt:
                            nxt[key] = ((j, q), ci)
            if not nxt:
                return None
            layers.append(nxt)
            done = [e for e in ends if (n, e) in nxt] if k >= lo else []
            if done:
                out = []
                key = (n, done[0])
                for layer in range(k, 0, -1):
                    prev, ci = layers[layer][key]
                    out.append(lexer.classes(prev[1], self.vocab)[ci].witness)
                    key = prev
                out.reverse()
                return out
        return None

    def _open_ignored(self) -> set:
        """Lexer states inside an ignored lexeme (whitespace, comments) that ends where it stands."""
        lexer = self.lexer
        return {q for q in self._tree(lexer.q0)[0] if q != lexer.q0 and lexer.label_of(q) == SKIP}

    @staticmethod
    def _advance(j: int, seq: tuple, terminals: tuple, labels) -> set:
        ends = {j}
        for lab in seq:
            terms, may_skip = labels[lab]
            nxt = set()
            for x in ends:
                if x < len(terminals) and terminals[x] in terms:
                    nxt.add(x + 1)
                if may_skip:
                    nxt.add(x)
            ends = nxt
            if not ends:
                break
        return ends

    def _by_first(self, q: int) -> dict:
        """Classes of lexer state ``q`` by their first label (None: no label)."""
        hit = self._first.get(q)
        if hit is None:
            hit = {}
            for ci, c in enumerate(self.lexer.classes(q, self.vocab)):
                hit.setdefault(c.labels[0] if c.labels else None, []).append(ci)
            self._first[q] = hit
        return hit

    def _labels_of_terminal(self, t: int) -> list[int]:
        hit = self._term_labels.get(t)
        if hit is None or hit[0] != len(self.lexer.labels):
            hit = self._term_labels[t] = (
                len(self.lexer.labels),
                [lab for lab, (terms, _) in enumerate(self.lexer.labels) if t in terms],
            )
        return hit[1]

    def _skippable(self) -> list[int]:
        hit = self._skip_labels
        if hit is None or hit[0] != len(self.lexer.labels):
            hit = self._skip_labels = (len(self.lexer.labels), [lab for lab, (_, skip) in enumerate(self.lexer.labels) if skip])
        return hit[1]

    def gap_bytes(self, pieces: list, spaced: bool) -> list[bytes] | None:
        """Bytes of each piece (``spaced``: an ignored separator after every lexeme that may be extended)."""
        lexer = self.lexer
        seps = self.separators() if spaced else []
        parts: list[bytes] = []
        for kind, q, x, _t in pieces:
            if kind == "through":
                b = self._path(q, x)
                if b is None:
                    return None
                parts.append(b)
            elif kind == "skip":
                found = None
                parent, _ = self._tree(q)
                for r in parent:
                    if r != lexer.q0 and lexer.label_of(r) == SKIP:
                        found = self._path(q, r)
                        break
                if found is None:
                    return None
                parts.append(found)
            else:
                labels = [x] if kind == "emit" else self._labels_with(x)
                e = self.emit_bytes(q, labels)
                if e is None:
                    return None
                data, clean = e
                if spaced and seps and (not clean):
                    data = data + seps[0]
                parts.append(data)
        return parts

    def _labels_with(self, t: int) -> list[int]:
        """Labels containing terminal ``t`` (every state reachable from q0 has its label interned)."""
        for q in self._tree(self.lexer.q0)[0]:
            self.lexer.label_of(q)
        return [lab for lab, (terms, _) in enumerate(self.lexer.labels) if t in terms]
