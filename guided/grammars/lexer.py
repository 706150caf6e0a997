"""The contextual greedy lexer as one lazily built DFA over bytes, and vectorised token walks.

    >>> lex = LexerAutomaton(terminal_dfas, priorities)
    >>> q = lex.start_for(frozenset({NUMBER, WS}))    # a lexeme start, these terminals allowed
    >>> q = lex.rows_of(q)[ord("4")]                  # -1: no allowed terminal continues
    >>> lex.best[q]                                   # terminals this lexeme would be, if it ended here

A lexer state is the set of ``(terminal, terminal-DFA state)`` pairs still alive in the
current lexeme.  It does not depend on where the lexeme started, so every state (and every
table computed for it) is shared by all parser states and positions.  A lexeme-start state
carries a marker so that "nothing read yet" is never confused with a state reached by
reading bytes.

``best[q]`` resolves priorities: the terminals whose DFA accepts, restricted to the highest
``(priority, is_literal)``; remaining ties are parser ambiguity.

Token walks (which tokens stay inside the lexeme from a state, and where the others end
it) go down the vocabulary's byte trie, pruning dead subtrees.  With numba installed they
run as compiled loops (:func:`compiled_walks`); otherwise as numpy steps per trie level.
"""

from __future__ import annotations

import numpy as np

from guided._compiled import compiled_kernels
from guided.grammars.engine_lock import let_go, take_back
from guided.grammars.lark_loader import GrammarError

__all__ = ["LexerAutomaton", "WalkResult", "walk_tokens", "trie_walk", "walk_group", "TokenTrie", "compiled_walks"]

_UNEXPANDED = -2
_START_MARK = (-1, 0)


class LexerAutomaton:
    """Union of terminal DFAs, determinised on demand; states are interned pair-sets."""

    def __init__(self, dfas: list, priority_keys: list, max_states: int = 200_000):
        self.dfas = dfas
        # terminal automata are read a row at a time (``row(s)``: 256 successors, -1 dead),
        # so a terminal may build its states only when the lexer reaches them
        self.row_of = [d.row for d in dfas]
        self.accepts_of = [d.is_accepting for d in dfas]
        self.start_of = [d.start for d in dfas]
        self.priority_keys = priority_keys
        self.max_states = max_states
        self.pairs: list[tuple] = []
        self.index: dict[tuple, int] = {}
        self.best: list[tuple] = []
        self.rows: list = []  # Python rows (list of 256 ints) once expanded, else None
        self.can_extend: list = []
        self.trans = np.full((64, 256), _UNEXPANDED, dtype=np.int32)
        self.has_best = np.zeros(64, dtype=np.bool_)  # best[q] non-empty, as an array for the kernels
        self._starts: dict[frozenset, int] = {}

    def start_for(self, terminals: frozenset) -> int:
        """The lexeme-start state where ``terminals`` are allowed."""
        q = self._starts.get(terminals)
        if q is None:
            pairs = (_START_MARK,) + tuple((t, self.start_of[t]) for t in sorted(terminals))
            q = self._starts[terminals] = self._intern(pairs)
        return q

    def is_start(self, q: int) -> bool:
        return self.pairs[q][:1] == (_START_MARK,)

    def _intern(self, pairs: tuple) -> int:
        q = self.index.get(pairs)
        if q is not None:
            return q
        q = len(self.pairs)
        if q >= self.max_states:
            raise GrammarError(f"lexer needs more than {self.max_states} states (terminals too large)")
        self.index[pairs] = q
        self.pairs.append(pairs)
        acc = [t for t, s in pairs if t >= 0 and self.accepts_of[t](s)]
        if acc:
            top = max(self.priority_keys[t] for t in acc)
            acc = [t for t in acc if self.priority_keys[t] == top]
        self.best.append(tuple(acc))
        self.rows.append(None)
        self.can_extend.append(None)
        if q >= len(self.trans):
            grown = np.full((2 * len(self.trans), 256), _UNEXPANDED, dtype=np.int32)
            grown[: len(self.trans)] = self.trans
            self.trans = grown
            has_best = np.zeros(len(grown), dtype=np.bool_)
            has_best[: len(self.has_best)] = self.has_best
            self.has_best = has_best
        self.has_best[q] = bool(acc)
        return q

    def expand(self, q: int) -> list:
        """Compute (once) the 256 successors of ``q``; return them as a Python list."""
        row = self.rows[q]
        if row is not None:
            return row
        live = [(t, s) for t, s in self.pairs[q] if t >= 0]
        out = np.full(256, -1, dtype=np.int32)
        if len(live) == 1:
            t, s = live[0]
            succ = self.row_of[t](s)
            # one lexer state per distinct successor, spread by one gather (not a compare per successor)
            uniq, inverse = np.unique(succ, return_inverse=True)
            ids = np.asarray([self._intern(((t, s2),)) if s2 >= 0 else -1 for s2 in uniq.tolist()], dtype=np.int32)
            out = ids[inverse.reshape(-1)]
        elif live:
            m = np.stack([self.row_of[t](s) for t, s in live])  # [k, 256]
            alive = (m >= 0).any(axis=0)
            cols = np.flatnonzero(alive)
            if len(cols):
                uniq, inverse = np.unique(m[:, cols].T, axis=0, return_inverse=True)
                ids = []
                for u in uniq.tolist():
                    ids.append(self._intern(tuple((live[j][0], s2) for j, s2 in enumerate(u) if s2 >= 0)))
                out[cols] = np.asarray(ids, dtype=np.int32)[inverse.reshape(-1)]
        # column 0 last: a compiled walk running meanwhile (without the engine lock) takes the
        # row for unexpanded until then, and each entry is either -2 or final
        self.trans[q, 1:] = out[1:]
        self.trans[q, 0] = out[0]
        row = out.tolist()
        self.rows[q] = row
        self.can_extend[q] = bool((out >= 0).any())
        return row

    def rows_of(self, q: int) -> list:
        return self.rows[q] or self.expand(q)

    def read(self, q: int, data: bytes, i: int) -> tuple[int, int]:
        """Read ``data[i:]`` from ``q`` while the lexeme can extend: ``(state, position)`` where
        it stopped (``position == len(data)``: all read, the lexeme may go on)."""
        rows = self.rows
        n = len(data)
        while i < n:
            nq = (rows[q] or self.expand(q))[data[i]]
            if nq < 0:
                break
            q = nq
            i += 1
        return q, i


class WalkResult:
    """Where tokens go when read from one lexer state (a node of the walk tree).

    ``inside_ids``: the tokens that end inside the lexeme (``inside``: the same as a bool
    mask, made at the top and on demand elsewhere); ``groups``: for each accepting state
    ``q_k`` where tokens had to end the lexeme, ``(q_k, ids, end_offsets, begin_offsets,
    trie nodes or None)``; ``children`` caches the walks of a group's remaining bytes from
    the next lexeme's start state.
    """

    __slots__ = ("inside", "_inside_ids", "groups", "children")

    def __init__(self, inside, inside_ids, groups):
        self.inside = inside
        # a walk that keeps most of the vocabulary (a string's body) is kept as its bool mask
        # only: the ids would take 4-8x its memory, and are made again on demand
        many = inside is not None and len(inside_ids) * 16 >= len(inside)
        self._inside_ids = None if many else inside_ids
        self.groups = groups
        self.children: dict = {}

    @property
    def inside_ids(self) -> np.ndarray:
        ids = self._inside_ids
        return np.flatnonzero(self.inside) if ids is None else ids

    def mark_inside(self, mask: np.ndarray) -> None:
        """Set ``mask`` at the inside tokens: by index when they are few, else by OR-ing a
        cached boolean mask (one pass over the vocabulary instead of a scatter per parser state)."""
        ids = self._inside_ids
        if ids is not None and len(ids) * 16 < len(mask):
            mask[ids] = True
            return
        if self.inside is None:
            inside = np.zeros(len(mask), dtype=bool)
            inside[ids] = True
            inside.flags.writeable = False
            self.inside = inside
        np.logical_or(mask, self.inside, out=mask)


def walk_tokens(lex: LexerAutomaton, vocab, q0: int, ids: np.ndarray, offs: np.ndarray | int, full: bool) -> WalkResult:
    """Read tokens ``ids`` from byte ``offs`` on, starting in lexer state ``q0``.

    A token that reaches its end alive is *inside*; one that meets a byte no allowed
    terminal takes is recorded with the state before that byte (only if that state
    completes a lexeme: otherwise the token is impossible).
    """
    kernels = _kernels()
    if kernels is not None:
        return _walk_tokens_compiled(kernels, lex, vocab, q0, ids, offs, full)
    flat = vocab.flat_bytes
    lengths = vocab.lengths
    if isinstance(offs, (int, np.integer)):
        offs = np.full(len(ids), int(offs), dtype=np.int64)
    pos = vocab.offsets[ids] + offs
    remaining = lengths[ids] - offs
    active_ids, active_begin = ids, offs
    inside_ids: list = []
    deaths: dict = {}  # pre-death state -> list of (ids, end offsets, begin offsets)
    best = lex.best
    # level 0: every token starts in q0, so one row lookup serves all of them
    lex.rows_of(q0)
    row = lex.trans[q0]
    st = row[flat[pos]]
    dead = st < 0
    if dead.any():
        if best[q0]:
            deaths[q0] = [(active_ids[dead], active_begin[dead], active_begin[dead])]
        alive = ~dead
    else:
        alive = None
    j = 1
    while True:
        finished = remaining == j if alive is None else alive & (remaining == j)
        if finished.any():
            inside_ids.append(active_ids[finished])
        keep = remaining > j if alive is None else alive & (remaining > j)
        active_ids, active_begin = active_ids[keep], active_begin[keep]
        pos, remaining, st = pos[keep], remaining[keep], st[keep]
        if not len(active_ids):
            break
        if len(active_ids) <= _PY_TAIL:  # a few long tokens left: numpy's per-level cost dominates
            _tokens_tail(lex, vocab.token_bytes, active_ids, active_begin, remaining, st, j, inside_ids, deaths)
            break
        b = flat[pos + j]
        trans = lex.trans
        nst = trans[st, b]
        unexpanded = nst == _UNEXPANDED
        if unexpanded.any():
            for q in np.unique(st[unexpanded]).tolist():
                lex.expand(q)
            nst = lex.trans[st, b]
        dead = nst < 0
        if dead.any():
            d_ids, d_begin, d_state = active_ids[dead], active_begin[dead], st[dead]
            first = int(d_state[0])
            if (d_state == first).all():
                if best[first]:
                    deaths.setdefault(first, []).append((d_ids, d_begin + j, d_begin))
            else:
                for q in np.unique(d_state).tolist():
                    if best[q]:
                        sel = d_state == q
                        deaths.setdefault(q, []).append((d_ids[sel], d_begin[sel] + j, d_begin[sel]))
            alive = ~dead
        else:
            alive = None
        st = nst
        j += 1
    inside = np.concatenate(inside_ids) if inside_ids else np.zeros(0, dtype=np.int64)
    groups = []
    for q, parts in deaths.items():
        if len(parts) == 1:
            groups.append((q, *parts[0], None))
        else:
            groups.append((q, *(np.concatenate([p[k] for p in parts]) for k in range(3)), None))
    if full:
        mask = np.zeros(vocab.size, dtype=bool)
        mask[inside] = True
        mask.flags.writeable = False
        return WalkResult(mask, inside, groups)
    return WalkResult(None, inside, groups)


# below this many live tokens (or trie nodes) a walk finishes in plain Python: the deep
# levels of a byte-level vocabulary hold a handful of very long tokens each, and a
# numpy step per level costs more than walking them byte by byte
_PY_TAIL = 48


def _tokens_tail(lex, token_bytes, ids, begin, remaining, st, j, inside_ids, deaths) -> None:
    """Finish :func:`walk_tokens` for the tokens still alive after ``j`` bytes."""
    rows, best, expand = lex.rows, lex.best, lex.expand
    done: list = []
    dead: dict = {}
    for t, b0, rem, s in zip(ids.tolist(), begin.tolist(), remaining.tolist(), st.tolist()):
        data = token_bytes[t]
        k = j
        while k < rem:
            ns = (rows[s] or expand(s))[data[b0 + k]]
            if ns < 0:
                if best[s]:
                    dead.setdefault(s, []).append((t, b0 + k, b0))
                break
            s = ns
            k += 1
        else:
            done.append(t)
    if done:
        inside_ids.append(np.asarray(done, dtype=np.int64))
    for q, rows_q in dead.items():
        arr = np.asarray(rows_q, dtype=np.int64)
        deaths.setdefault(q, []).append((arr[:, 0], arr[:, 1], arr[:, 2]))


class TokenTrie:
    """The vocabulary's tokens as a byte trie laid out level by level (for pruned walks).

    Level ``j`` holds one node per distinct ``(j+1)``-byte prefix; a node's tokens (all
    tokens with that prefix) are the contiguous range ``[lo, hi)`` of ``sorted_ids``, its
    children a contiguous range of level ``j+1``, and the ``n_end`` tokens that are exactly
    that prefix come first in its range.
    """

    def __init__(self, vocab):
        ids = np.flatnonzero(vocab.usable)
        order = sorted(ids.tolist(), key=vocab.token_bytes.__getitem__)
        self.sorted_ids = np.asarray(order, dtype=np.int64)
        lengths = vocab.lengths[self.sorted_ids]
        starts = vocab.offsets[self.sorted_ids]
        flat = vocab.flat_bytes
        n = len(order)
        self.byte: list = []
        self.lo: list = []
        self.hi: list = []
        self.n_end: list = []
        self.child_lo: list = []
        self.child_n: list = []
        node_of = np.zeros(n, dtype=np.int64)  # level-(j-1) node of each token (valid where length > j-1)
        members = np.arange(n)
        j = 0
        while len(members):
            b = flat[starts[members] + j].astype(np.int64)
            parent = node_of[members]
            new = np.ones(len(members), dtype=bool)
            new[1:] = (b[1:] != b[:-1]) | (parent[1:] != parent[:-1])
            node = np.cumsum(new) - 1
            first = np.flatnonzero(new)
            self.byte.append(b[first])
            self.lo.append(members[first])
            counts = np.diff(np.append(first, len(members)))
            last = members[first + counts - 1]
            # a node's token range runs to the last token sharing its prefix (all deeper tokens included)
            self.hi.append(last + 1)
            ends = lengths[members] == j + 1
            self.n_end.append(np.bincount(node[ends], minlength=len(first)))
            if j > 0:
                par = parent[first]
                self.child_lo[j - 1] = np.searchsorted(par, np.arange(len(self.lo[j - 1])))
                self.child_n[j - 1] = np.bincount(par, minlength=len(self.lo[j - 1]))
            self.child_lo.append(np.zeros(len(first), dtype=np.int64))
            self.child_n.append(np.zeros(len(first), dtype=np.int64))
            node_of[members] = node
            members = members[lengths[members] > j + 1]
            j += 1
        self._py_levels: dict = {}
        self.widest = max((len(b) for b in self.byte), default=0)

    def py_level(self, level: int) -> tuple:
        """``(byte, lo, n_end, child_lo, child_n)`` of one level as Python lists (cached)."""
        hit = self._py_levels.get(level)
        if hit is None:
            hit = self._py_levels[level] = (
                self.byte[level].tolist(),
                self.lo[level].tolist(),
                self.n_end[level].tolist(),
                self.child_lo[level].tolist(),
                self.child_n[level].tolist(),
            )
        return hit

    def ids_of(self, level: int, nodes: np.ndarray) -> np.ndarray:
        """Token ids of the subtrees of ``nodes`` at ``level``."""
        lo, hi = self.lo[level][nodes], self.hi[level][nodes]
        return self.sorted_ids[_ranges(lo, hi)]


def _ranges(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(lo[i], hi[i])``."""
    sizes = hi - lo
    total = int(sizes.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    offsets = np.repeat(lo - np.concatenate([[0], np.cumsum(sizes)[:-1]]), sizes)
    return np.arange(total) + offsets


def _trie_tail(lex, trie, level: int, nodes, st, inside_parts: list, deaths: dict) -> None:
    """Finish :func:`trie_walk` below a few live ``nodes`` of ``level`` (states ``st``), depth first."""
    rows, best, expand = lex.rows, lex.best, lex.expand
    n_levels = len(trie.byte)
    ends: list = []  # positions in sorted_ids of tokens ending inside
    dead: dict = {}  # pre-death state -> [(level, node)]
    stack = [(n, s, level) for n, s in zip(nodes.tolist(), st.tolist())]
    while stack:
        node, s, lv = stack.pop()
        _, lo, n_end, child_lo, child_n = trie.py_level(lv)
        ne = n_end[node]
        if ne:
            ends.extend(range(lo[node], lo[node] + ne))
        cn = child_n[node]
        if not cn or lv + 1 >= n_levels:
            continue
        row = rows[s] or expand(s)
        byte_next = trie.py_level(lv + 1)[0]
        c0 = child_lo[node]
        for c in range(c0, c0 + cn):
            ns = row[byte_next[c]]
            if ns >= 0:
                stack.append((c, ns, lv + 1))
            elif best[s]:
                dead.setdefault(s, []).append((lv + 1, c))
    if ends:
        inside_parts.append(trie.sorted_ids[np.asarray(ends, dtype=np.int64)])
    for q, where in dead.items():
        id_parts, end_parts = [], []
        for lv, c in where:
            lo_c, hi_c = int(trie.lo[lv][c]), int(trie.hi[lv][c])
            id_parts.append(trie.sorted_ids[lo_c:hi_c])
            end_parts.append(np.full(hi_c - lo_c, lv, dtype=np.int64))
        ids = np.concatenate(id_parts)
        deaths.setdefault(q, []).append((ids, np.concatenate(end_parts), np.zeros(len(ids), dtype=np.int64), None))


def walk_group(lex: LexerAutomaton, trie: TokenTrie, vocab, q0: int, group, nodes) -> WalkResult:
    """Walk a group's remaining bytes (tokens ``group[1]`` from offsets ``group[2]``) from
    lexeme start ``q0``.

    ``nodes``: the trie nodes whose subtrees make up the group (or ``None``); with them
    the walk goes down the trie, sharing prefixes and pruning dead subtrees (the numpy
    walk can only start from first-level nodes).
    """
    if nodes is not None and (_kernels() is not None or bool((nodes < len(trie.byte[0])).all())):
        return trie_walk(lex, trie, q0, nodes, vocab.size, full=False)
    return walk_tokens(lex, vocab, q0, group[1], group[2], full=False)


def trie_walk(lex: LexerAutomaton, trie: TokenTrie, q0: int, roots: np.ndarray | None, size: int, full: bool = True) -> WalkResult:
    """Walk every token (or those under level-0 ``roots``) from ``q0`` down the trie.

    Dead subtrees are pruned at once; groups are as in :func:`walk_tokens`, and a group of
    tokens that die on their first byte also keeps its level-0 nodes (``roots``) so that
    its remainder can be walked down the trie again.
    """
    kernels = _kernels()
    if kernels is not None:
        return _trie_walk_compiled(kernels, lex, trie, q0, roots, size, full)
    best = lex.best
    lex.rows_of(q0)
    nodes = np.arange(len(trie.byte[0])) if roots is None else roots
    st = lex.trans[q0][trie.byte[0][nodes]]
    inside_parts: list = []
    deaths: dict = {}
    level = 0
    while True:
        dead = st < 0
        if dead.any():
            d_nodes = nodes[dead]
            if level == 0:
                if best[q0]:
                    ids = trie.ids_of(0, d_nodes)
                    zeros = np.zeros(len(ids), dtype=np.int64)
                    deaths.setdefault(q0, []).append((ids, zeros, zeros, d_nodes))
            else:
                d_prev = prev_state[dead]
                for q in np.unique(d_prev).tolist():
                    if best[q]:
                        sel = d_prev == q
                        ids = trie.ids_of(level, d_nodes[sel])
                        deaths.setdefault(q, []).append(
                            (ids, np.full(len(ids), level, dtype=np.int64), np.zeros(len(ids), dtype=np.int64), None)
                        )
            nodes, st = nodes[~dead], st[~dead]
        if not len(nodes):
            break
        if len(nodes) <= _PY_TAIL:
            _trie_tail(lex, trie, level, nodes, st, inside_parts, deaths)
            break
        n_end = trie.n_end[level][nodes]
        has_end = n_end > 0
        if has_end.any():
            lo = trie.lo[level][nodes[has_end]]
            inside_parts.append(trie.sorted_ids[_ranges(lo, lo + n_end[has_end])])
        c_lo, c_n = trie.child_lo[level][nodes], trie.child_n[level][nodes]
        has_child = c_n > 0
        if not has_child.any() or level + 1 >= len(trie.byte):
            break
        children = _ranges(c_lo[has_child], c_lo[has_child] + c_n[has_child])
        prev_state = np.repeat(st[has_child], c_n[has_child])
        level += 1
        b = trie.byte[level][children]
        nst = lex.trans[prev_state, b]
        unexpanded = nst == _UNEXPANDED
        if unexpanded.any():
            for q in np.unique(prev_state[unexpanded]).tolist():
                lex.expand(q)
            nst = lex.trans[prev_state, b]
        nodes, st = children, nst
    inside = np.concatenate(inside_parts) if inside_parts else np.zeros(0, dtype=np.int64)
    groups = []
    for q, parts in deaths.items():
        if len(parts) == 1:
            groups.append((q, *parts[0]))
        else:
            roots_part = next((p[3] for p in parts if p[3] is not None), None)
            cat = [np.concatenate([p[k] for p in parts]) for k in range(3)]
            # roots only describe the whole group when every part is a level-0 death
            groups.append((q, *cat, roots_part if all(p[3] is not None for p in parts) else None))
    if not full:
        return WalkResult(None, inside, groups)
    mask = np.zeros(size, dtype=bool)
    mask[inside] = True
    mask.flags.writeable = False
    return WalkResult(mask, inside, groups)


# -- compiled walks ------------------------------------------------------------------------------
# With numba installed, the two walks above run as compiled loops: a level-by-level walk of
# the trie (or a byte loop per token) costs nanoseconds per node instead of numpy steps and
# Python tails, which is most of what a cold lexer state cost.  Without numba the numpy walks
# are used; both give the same tokens, groups and offsets (tests compare them), except that
# compiled groups always carry their trie nodes (numpy ones only for first-byte groups), so
# that their remainders can be walked down the trie too.  Lexer rows are still built lazily
# in Python: a kernel that meets an unexpanded state returns it, and is resumed after expansion.

_UNSET = object()
_KERNELS = _UNSET  # None when numba is missing (or GUIDED_NO_NUMBA is set)


def compiled_walks() -> bool:
    """True when the token walks run as compiled (numba) loops rather than numpy steps."""
    return _kernels() is not None


def _kernels():
    global _KERNELS
    if _KERNELS is _UNSET:
        _KERNELS = compiled_kernels(_trie_dfs_kernel, _token_walk_kernel)
    return _KERNELS


def _trie_dfs_kernel(trans, has_best, byte, depth, size, flat_of, lo, n_end, sorted_ids, roots, root_begin, q0, stack, counters, inside_out, dead_state, dead_node, dead_begin):
    """Depth-first walk of the subtrees of ``roots`` (positions in the trie's preorder, see
    :func:`_dfs_trie`), every root's byte read from lexer state ``q0``.

    The preorder arrays are read as one forward stream: a node whose byte no allowed
    terminal takes is recorded (if its parent's state completes a lexeme) and its subtree
    skipped by its size.  ``stack[d]``: lexer state before a node ``d`` levels below the
    current root.  ``counters`` = [root index, position, inside count, dead count], read and
    updated so that the walk can be resumed.  Returns -1 when done, or a lexer state whose
    row must be expanded first (the walk resumes at the node that needed it).
    """
    r, i, n_in, n_dead = counters[0], counters[1], counters[2], counters[3]
    result = -1
    while r < roots.shape[0]:
        p = roots[r]
        if i < 0:  # a new root
            i = p
            stack[0] = q0
        base = depth[p]
        end = p + size[p]
        begin = root_begin[r]
        while i < end:
            d = depth[i] - base
            ps = stack[d]
            ns = trans[ps, byte[i]]
            if ns == -2:  # unexpanded (or being written by another thread): expand, resume here
                result = ps
                break
            if ns < 0:
                if has_best[ps]:
                    dead_state[n_dead] = ps
                    dead_node[n_dead] = flat_of[i]
                    dead_begin[n_dead] = begin
                    n_dead += 1
                i += size[i]
                continue
            stack[d + 1] = ns
            first = lo[i]
            for k in range(first, first + n_end[i]):
                inside_out[n_in] = sorted_ids[k]
                n_in += 1
            i += 1
        if result >= 0:
            break
        r += 1
        i = -1
    counters[0], counters[1], counters[2], counters[3] = r, i, n_in, n_dead
    return result


def _token_walk_kernel(trans, has_best, flat, starts, lengths, ids, offs, q0, first, kind, dead_state, dead_end):
    """Read each token ``ids[i]`` from byte ``offs[i]`` on, from ``q0``, starting at token ``first``.

    ``kind[i]``: 0 inside, 1 died after a complete lexeme (state before the byte in
    ``dead_state``, byte offset in ``dead_end``), 2 impossible.  Returns -1 when done, or
    ``i * 2**32 + state`` when token ``i`` needs an unexpanded state's row.
    """
    for i in range(first, ids.shape[0]):
        t = ids[i]
        base = starts[t]
        s = q0
        k = offs[i]
        n = lengths[t]
        kind[i] = 0
        while k < n:
            ns = trans[s, flat[base + k]]
            if ns == -2:
                return i * 4294967296 + s
            if ns < 0:
                if has_best[s]:
                    kind[i] = 1
                    dead_state[i] = s
                    dead_end[i] = k
                else:
                    kind[i] = 2
                break
            s = ns
            k += 1
    return -1


def _group_by_state(states: np.ndarray) -> list:
    """``[(state, indices into states)]`` for each distinct state."""
    if not len(states):
        return []
    first = states[0]
    if (states == first).all():  # the common case: one pre-death state
        return [(int(first), np.arange(len(states)))]
    present = np.flatnonzero(np.bincount(states))
    if len(present) <= 8:  # a few states: one comparison pass each beats a sort
        return [(int(q), np.flatnonzero(states == q)) for q in present.tolist()]
    order = np.argsort(states, kind="stable")
    sorted_states = states[order]
    cuts = np.flatnonzero(sorted_states[1:] != sorted_states[:-1]) + 1
    bounds = np.concatenate([[0], cuts, [len(order)]])
    return [(int(sorted_states[a]), order[a:b]) for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist())]


def _flat_trie(trie: "TokenTrie") -> tuple:
    """The trie's levels as global node arrays (level 0 first, so root indices are kept)."""
    flat = getattr(trie, "_flat", None)
    if flat is None:
        sizes = [len(b) for b in trie.byte]
        first = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        cat = lambda parts: np.concatenate(parts).astype(np.int64)  # noqa: E731
        level = np.repeat(np.arange(len(sizes), dtype=np.int64), sizes)
        child_lo = cat([trie.child_lo[j] + (first[j + 1] if j + 1 < len(sizes) else 0) for j in range(len(sizes))])
        flat = trie._flat = (
            cat(trie.byte), cat(trie.lo), cat(trie.hi), cat(trie.n_end), child_lo, cat(trie.child_n), level,
        )
    return flat


def _dfs_trie(trie: "TokenTrie") -> tuple:
    """The trie in depth-first preorder: ``(position of each flat node, flat node of each
    position, byte, depth, subtree size, lo, n_end)`` (int32; positions index the last six).

    Tokens are sorted by their bytes, so preorder is the order of the nodes' first tokens
    (``lo``), a parent before its first child; a subtree ends where the next node's first
    token is past the subtree's tokens (``hi``).
    """
    dfs = getattr(trie, "_dfs", None)
    if dfs is None:
        byte, lo, hi, n_end, _, _, level = _flat_trie(trie)
        order = np.lexsort((level, lo))
        lo_sorted = lo[order]
        size = np.searchsorted(lo_sorted, hi[order], side="left") - np.arange(len(order))
        pos_of = np.empty(len(order), dtype=np.int64)
        pos_of[order] = np.arange(len(order))
        i32 = lambda a: np.ascontiguousarray(a, dtype=np.int32)  # noqa: E731
        dfs = trie._dfs = (pos_of, i32(order), np.ascontiguousarray(byte[order], dtype=np.uint8),
                           i32(level[order]), i32(size), i32(lo_sorted), i32(n_end[order]), int(level.max(initial=0)))
    return dfs


def _trie_walk_compiled(kernels, lex: LexerAutomaton, trie: "TokenTrie", q0: int, roots, size: int, full: bool = True) -> WalkResult:
    """:func:`trie_walk` by the compiled kernel; ``roots`` may be nodes of any level (global
    indices), each standing for its subtree read from the node's own byte on."""
    _, flat_lo, flat_hi, _, _, _, level = _flat_trie(trie)
    pos_of, flat_of, byte, depth, sub_size, lo, n_end, max_depth = _dfs_trie(trie)
    lex.rows_of(q0)
    if roots is None:
        nodes = np.arange(len(trie.byte[0]), dtype=np.int64)
        n_nodes, n_tokens = len(flat_of), len(trie.sorted_ids)
    else:
        nodes = np.asarray(roots, dtype=np.int64)
        # a group's subtrees are usually small: buffers sized to them, not to the whole trie
        n_nodes = int(sub_size[pos_of[nodes]].sum())
        n_tokens = int((flat_hi[nodes] - flat_lo[nodes]).sum())
    positions = pos_of[nodes]
    order = np.argsort(positions, kind="stable")  # forward through the preorder stream
    positions = positions[order].astype(np.int64)
    begins = level[nodes[order]].astype(np.int64)
    stack = np.empty(max_depth + 2, dtype=np.int32)
    counters = np.array([0, -1, 0, 0], dtype=np.int64)
    inside_out = np.empty(n_tokens, dtype=np.int64)
    dead_state = np.empty(n_nodes, dtype=np.int64)
    dead_node = np.empty(n_nodes, dtype=np.int64)
    dead_begin = np.empty(n_nodes, dtype=np.int64)
    dfs = kernels[0]
    while True:
        trans, has_best = lex.trans, lex.has_best
        held = let_go()  # the kernel holds no GIL: other threads' masks go on meanwhile
        try:
            need = dfs(trans, has_best, byte, depth, sub_size, flat_of, lo, n_end, trie.sorted_ids,
                       positions, begins, q0, stack, counters, inside_out, dead_state, dead_node, dead_begin)
        finally:
            take_back(held)
        if need < 0:
            break
        lex.expand(int(need))
    inside = inside_out[: counters[2]].copy()
    n_dead = int(counters[3])
    groups = []
    for q, idx in _group_by_state(dead_state[:n_dead]):
        groups.append(TrieGroup(q, dead_node[idx], dead_begin[idx], trie))
    if not full:
        return WalkResult(None, inside, groups)
    mask = np.zeros(size, dtype=bool)
    mask[inside] = True
    mask.flags.writeable = False
    return WalkResult(mask, inside, groups)


class TrieGroup:
    """A group of a compiled trie walk: the subtrees of ``nodes`` end the lexeme in state ``q``.

    Indexes and unpacks like the numpy walks' tuples, ``(q, ids, end, begin, nodes)``; the
    per-token arrays are made on first use, since a group walked on down the trie needs
    only its nodes.
    """

    __slots__ = ("q", "nodes", "_begins", "_trie", "_arrays")

    def __init__(self, q: int, nodes: np.ndarray, begins: np.ndarray, trie: "TokenTrie"):
        self.q = q
        self.nodes = nodes
        self._begins = begins
        self._trie = trie
        self._arrays = None

    def arrays(self) -> tuple:
        """``(ids, end, begin)``: every token of the subtrees, the offset of the byte that
        ended the lexeme (its node's level) and where the lexeme began."""
        if self._arrays is None:
            _, lo, hi, _, _, _, level = _flat_trie(self._trie)
            d_lo, d_hi = lo[self.nodes], hi[self.nodes]
            sizes = d_hi - d_lo
            ids = self._trie.sorted_ids[_ranges(d_lo, d_hi)]
            self._arrays = (ids, np.repeat(level[self.nodes], sizes), np.repeat(self._begins, sizes))
        return self._arrays

    def __getitem__(self, i: int):
        if i == 0:
            return self.q
        if i == 4 or i == -1:
            return self.nodes
        return (self.q, *self.arrays(), self.nodes)[i]

    def __iter__(self):
        return iter((self.q, *self.arrays(), self.nodes))


def _walk_tokens_compiled(kernels, lex: LexerAutomaton, vocab, q0: int, ids, offs, full: bool) -> WalkResult:
    ids = np.asarray(ids, dtype=np.int64)
    if isinstance(offs, (int, np.integer)):
        offs = np.full(len(ids), int(offs), dtype=np.int64)
    offs = np.asarray(offs, dtype=np.int64)
    lex.rows_of(q0)
    n = len(ids)
    kind = np.empty(n, dtype=np.int8)
    dead_state = np.empty(n, dtype=np.int64)
    dead_end = np.empty(n, dtype=np.int64)
    walk = kernels[1]
    first = 0
    while True:
        trans, has_best = lex.trans, lex.has_best
        held = let_go()
        try:
            need = walk(trans, has_best, vocab.flat_bytes, vocab.offsets, vocab.lengths, ids, offs, q0, first, kind, dead_state, dead_end)
        finally:
            take_back(held)
        if need < 0:
            break
        first, q = divmod(int(need), 4294967296)
        lex.expand(q)
    inside = ids[kind == 0]
    died = np.flatnonzero(kind == 1)
    groups = []
    for q, idx in _group_by_state(dead_state[died]):
        sel = died[idx]
        groups.append((q, ids[sel], dead_end[sel], offs[sel], None))
    if full:
        mask = np.zeros(vocab.size, dtype=bool)
        mask[inside] = True
        mask.flags.writeable = False
        return WalkResult(mask, inside, groups)
    return WalkResult(None, inside, groups)
