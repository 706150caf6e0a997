"""``Grammar``: a constraint from a Lark context-free grammar, exact at the token level.

    >>> g = Grammar('''
    ...     start: pair ("," pair)*
    ...     pair: NAME "=" NUMBER
    ...     NAME: /[a-z]+/
    ...     %import common.INT -> NUMBER
    ...     %ignore " "
    ... ''')
    >>> state = g.start(vocab).advance_bytes(b"x = 1, y")
    >>> state.allowed_mask()          # tokens that can follow "x = 1, y"

Lexing is contextual and greedy (see ARCHITECTURE.md): at a lexeme start only the
terminals the parser can take next (plus ``%ignore`` ones) are tried; the lexeme extends
while any of them can; it ends at the first byte none can take, and only if what was read
is a complete match.  The parser is an incremental Earley recogniser, so ambiguous
grammars work.  A Python-style indenter (``postlex=PythonIndenter()``) turns newline
lexemes into ``_NEWLINE``/``_INDENT``/``_DEDENT`` and ignores newlines inside brackets.

Masks: for each lexer state the walk of every token is computed once (tokens that stay in
the lexeme, and tokens that must end it, grouped by where); the parser only decides which
groups go on, and their remainders are walked (and cached) from the next lexeme's start.
A group is a set of byte-trie subtrees, so its remainder walk depends only on those
subtrees and the lexeme start: it is shared by every lexer state and parser state that
meets the same group at the same start.  So a parser state seen for the first time costs
only its parser steps (Earley scans, themselves cached per column) and cached walks.
"""

from __future__ import annotations

import gc
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from guided.constraint import Constraint, ConstraintState, FinishedState, pack_into, pack_mask
from guided.grammars import distinct
from guided.grammars.earley import Column, ParserTables
from guided.grammars.engine_lock import ENGINE_LOCK
from guided.grammars.lark_loader import GrammarError, GrammarSpec, load_lark
from guided.grammars.lexer import LexerAutomaton, TokenTrie, WalkResult, compiled_walks, trie_walk, walk_group, walk_tokens

__all__ = ["Grammar", "GrammarState", "GrammarError", "IndenterSpec", "PYTHON_INDENTER"]


@dataclass(frozen=True)
class IndenterSpec:
    """Python-style indentation post-lexer (same fields as :class:`lark.indenter.Indenter`)."""

    NL_type: str = "_NEWLINE"
    OPEN_PAREN_types: tuple = ("LPAR", "LSQB", "LBRACE")
    CLOSE_PAREN_types: tuple = ("RPAR", "RSQB", "RBRACE")
    INDENT_type: str = "_INDENT"
    DEDENT_type: str = "_DEDENT"
    tab_len: int = 8

    @staticmethod
    def of(obj) -> "IndenterSpec":
        if isinstance(obj, IndenterSpec):
            return obj
        return IndenterSpec(
            obj.NL_type,
            tuple(obj.OPEN_PAREN_types),
            tuple(obj.CLOSE_PAREN_types),
            obj.INDENT_type,
            obj.DEDENT_type,
            int(obj.tab_len),
        )


PYTHON_INDENTER = IndenterSpec()


class Grammar(Constraint):
    """Output must be a sentence of the Lark grammar ``text`` (rule ``start``).

    ``postlex``: an indenter (``IndenterSpec`` or a ``lark.indenter.Indenter``) for
    indentation-sensitive grammars.  Errors (syntax, undefined symbols, bad terminal
    regexes, empty language) raise :class:`GrammarError` with a line and column.  Terminals
    that collide or can never win warn ``guided.GrammarWarning``; ``strict=True`` raises
    :class:`GrammarError` for them instead (``guided/grammars/diagnostics.py``).
    """

    def __init__(self, text: str, start: str = "start", *, postlex=None, import_paths=None, source: str = "<grammar>",
                 strict: bool = False):
        super().__init__()
        self._text = text
        self.start_rule = start
        self.compiled = _CompiledGrammar(load_lark(text, start, import_paths, source, strict), postlex)

    @classmethod
    def from_spec(cls, spec: GrammarSpec, *, text: "str | Callable[[], str]" = "", postlex=None) -> "Grammar":
        """A grammar given as BNF rules and compiled terminals (what :func:`load_lark` returns),
        skipping Lark: for generators such as the JSON Schema compiler.  ``text`` (or a
        function writing it on first use) is only shown.

            >>> Grammar.from_spec(load_lark('start: "a"+'))
        """
        self = cls.__new__(cls)
        Constraint.__init__(self)
        self._text = text
        self.start_rule = spec.start
        self.compiled = _CompiledGrammar(spec, postlex)
        return self

    @property
    def text(self) -> str:
        """The Lark text of the grammar."""
        if callable(self._text):
            self._text = self._text()
        return self._text

    @classmethod
    def from_file(cls, path, start: str = "start", **kwargs) -> "Grammar":
        """Load a ``.lark`` file (its folder is searched for ``%import``)."""
        path = Path(path)
        kwargs.setdefault("import_paths", [str(path.parent)])
        return cls(path.read_text(encoding="utf-8"), start, source=str(path), **kwargs)

    def __repr__(self) -> str:
        return f"Grammar(<{len(self.text)} chars>, start={self.start_rule!r})"

    def compile(self, vocab) -> "_VocabTables":
        return _VocabTables(self.compiled, vocab)

    def initial_state(self, compiled: "_VocabTables", vocab) -> "GrammarState":
        p = self.compiled.initial_pstate()
        return GrammarState(compiled, ((p, p.lex_start, _fresh_tail(self.compiled)),))


class _CompiledGrammar:
    """Vocabulary-independent part: parser tables, lexer automaton, indenter."""

    def __init__(self, spec: GrammarSpec, postlex):
        start = spec.start
        self.spec = spec
        self.indenter = IndenterSpec.of(postlex) if postlex is not None else None
        names = [t.name for t in spec.terminals] + list(spec.declared)
        n_lexable = len(spec.terminals)
        available = set(range(n_lexable))
        if self.indenter is not None:
            for special in (self.indenter.INDENT_type, self.indenter.DEDENT_type):
                if special in names:
                    available.add(names.index(special))
        self.tables = ParserTables(spec.rules, names, start, available, lazy=spec.lazy)
        tid = self.tables.terminal_id
        self.n_lexable = n_lexable
        self.ignore = frozenset(tid[n] for n in spec.ignore if n in tid)
        self.lexable = frozenset(range(n_lexable))
        self.nl = self.indent = self.dedent = None
        self.open_parens = self.close_parens = frozenset()
        always: set = set()
        if self.indenter is not None:
            ind = self.indenter
            if ind.NL_type not in tid:
                raise GrammarError(f"the indenter's newline terminal {ind.NL_type} is not in the grammar")
            self.nl = tid[ind.NL_type]
            self.indent = tid.get(ind.INDENT_type)
            self.dedent = tid.get(ind.DEDENT_type)
            self.open_parens = frozenset(tid[n] for n in ind.OPEN_PAREN_types if n in tid)
            self.close_parens = frozenset(tid[n] for n in ind.CLOSE_PAREN_types if n in tid)
            self.tab_len = ind.tab_len
            always.add(self.nl)
        self.always = frozenset(always) | self.ignore
        priority_keys = [(t.priority, t.is_literal) for t in spec.terminals]
        self.lexer = LexerAutomaton([t.dfa for t in spec.terminals], priority_keys)
        self._lex_starts: dict = {}
        self._initial = None
        self._pstates: dict = {}
        # terminals whose lexemes may not repeat within a run (guided/grammars/distinct.py)
        self.distinct = frozenset(tid[n] for n in spec.distinct if n in tid)
        self.distinct_keep = frozenset(tid[n] for n in spec.distinct_keep if n in tid)

    def pstate(self, col: Column, paren: int, indents: tuple) -> "PState":
        """The (interned) parser state for a column: columns are hash-consed, so equal
        configurations reached at different positions share one PState and its caches."""
        key = (col, paren, indents)
        p = self._pstates.get(key)
        if p is None:
            p = self._pstates[key] = PState(self, col, paren, indents)
        return p

    def lex_start(self, allowed: frozenset) -> int:
        q = self._lex_starts.get(allowed)
        if q is None:
            q = self._lex_starts[allowed] = self.lexer.start_for((allowed & self.lexable) | self.always)
        return q

    def initial_pstate(self) -> "PState":
        if self._initial is None:
            self._initial = self.pstate(self.tables.initial(), 0, (0,))
        return self._initial


class PState:
    """Parser state after some lexemes: Earley column plus indenter state. Immutable."""

    __slots__ = ("g", "col", "paren", "indents", "lex_start", "_feeds", "_eof", "__weakref__")

    def __init__(self, g: _CompiledGrammar, col: Column, paren: int, indents: tuple):
        self.g = g
        self.col = col
        self.paren = paren
        self.indents = indents
        self.lex_start = g.lex_start(col.allowed)
        self._feeds: dict | None = None
        self._eof = None

    def indent_sensitive(self, terminals: tuple) -> bool:
        g = self.g
        return g.nl is not None and self.paren == 0 and g.nl in terminals

    def feed(self, terminals: tuple, indent: int = 0) -> tuple:
        """Parser states after a lexeme that is one of ``terminals`` (ties = ambiguity)."""
        key = (terminals, indent)
        feeds = self._feeds
        if feeds is None:  # made on first use: most parser states explored for masks are leaves
            feeds = self._feeds = {}
        else:
            hit = feeds.get(key)
            if hit is not None:
                return hit
        out = []
        for t in terminals:
            p = self._feed_one(t, indent)
            if p is not None and all(p is not o for o in out):
                out.append(p)
        result = tuple(out)
        feeds[key] = result
        return result

    def _feed_one(self, t: int, indent: int) -> "PState | None":
        g = self.g
        if t == g.nl:
            if self.paren > 0:
                return self
            col = self.col.scan(t)
            if col is None:
                return None
            indents = self.indents
            if indent > indents[-1]:
                if g.indent is None:
                    return None
                col = col.scan(g.indent)
                indents = indents + (indent,)
            else:
                while indent < indents[-1]:
                    if col is None or g.dedent is None:
                        return None
                    col = col.scan(g.dedent)
                    indents = indents[:-1]
                if indent != indents[-1]:
                    return None
            return None if col is None else g.pstate(col, self.paren, indents)
        if t in g.ignore:
            return self
        col = self.col.scan(t)
        if col is None:
            return None
        paren = self.paren
        if t in g.open_parens:
            paren += 1
        elif t in g.close_parens:
            if paren == 0:
                return None
            paren -= 1
        return g.pstate(col, paren, self.indents)

    def eof_ok(self) -> bool:
        """True if the input may end right here (after the indenter's closing dedents)."""
        if self._eof is None:
            col = self.col
            for _ in self.indents[1:]:
                col = col.scan(self.g.dedent) if col is not None else None
            self._eof = col is not None and col.accepting
        return self._eof

    def can_continue(self) -> bool:
        return bool(self.col.allowed) or self.eof_ok()


def _indent_of(tail: bytes, tab_len: int) -> int:
    return tail.count(b" ") + tail.count(b"\t") * tab_len


def _cut_tail(tail: bytes) -> bytes:
    k = tail.rfind(b"\n")
    return tail if k < 0 else tail[k + 1 :]


_TRIES: dict = {}


def _trie_of(vocab) -> TokenTrie:
    hit = _TRIES.get(id(vocab))
    if hit is None or hit[0] is not vocab:
        hit = _TRIES[id(vocab)] = (vocab, TokenTrie(vocab))
    return hit[1]


class _VocabTables:
    """Per-vocabulary caches: the walk of every token from each lexer state."""

    def __init__(self, g: _CompiledGrammar, vocab, max_masks: int = 512, max_walks: int = 1024, max_group_walks: int = 4096):
        self.g = g
        self.vocab = vocab
        # branch masks by (parser state, lexer state, tail), least recently used dropped
        # first: a long generation visits unboundedly many parser states (512 x 128 KB = 64 MB at most)
        self.masks: OrderedDict = OrderedDict()
        self.max_masks = max_masks
        # walks from lexer states (at most ~130 KB each with Llama-3: a walk keeping most tokens
        # keeps only its bool mask) and shared group walks, least recently used dropped first;
        # a dropped walk is redone (a large schema meets several hundred lexer states)
        self.top: OrderedDict = OrderedDict()
        self.max_walks = max_walks
        self.group_walks: OrderedDict = OrderedDict()  # (lexeme start, trie nodes) -> walk
        self.max_group_walks = max_group_walks
        self.all_ids = np.flatnonzero(vocab.usable)
        self.eos_list = np.asarray(sorted(vocab.eos_ids), dtype=np.int64)
        self.eos_ids = vocab.eos_ids
        self.special_ids = vocab.special_ids
        self.trie = _trie_of(vocab)

    def cached(self, key):
        """The mask cached under ``key`` (marked recently used), or None."""
        hit = self.masks.get(key)
        if hit is not None:
            self.masks.move_to_end(key)
        return hit

    def remember(self, key, mask: np.ndarray) -> None:
        """Cache ``mask`` under ``key``; the least recently used past ``max_masks`` goes."""
        self.masks[key] = mask
        if len(self.masks) > self.max_masks:
            self.masks.popitem(last=False)

    def top_walk(self, q: int) -> WalkResult:
        hit = self.top.get(q)
        if hit is None:
            hit = self.top[q] = trie_walk(self.g.lexer, self.trie, q, None, self.vocab.size)
            if len(self.top) > self.max_walks:
                self.top.popitem(last=False)
        else:
            self.top.move_to_end(q)
        return hit

    def child_walk(self, node: WalkResult, key, group, q0: int, roots=None) -> WalkResult:
        """Walk of ``group``'s remaining bytes (``group[1]`` tokens from offsets ``group[2]``)
        from lexeme start ``q0``, cached under ``key`` on the walk-tree ``node``."""
        hit = node.children.get(key)
        if hit is None:
            if roots is not None:  # whole trie subtrees: the walk depends on them and q0 only,
                # so it is shared by every walk tree where the same group meets the same lexeme start
                shared = (q0, roots.tobytes())
                hit = self.group_walks.get(shared)
                if hit is None:
                    hit = self.group_walks[shared] = walk_group(self.g.lexer, self.trie, self.vocab, q0, group, roots)
                    if len(self.group_walks) > self.max_group_walks:
                        self.group_walks.popitem(last=False)
            else:
                hit = walk_tokens(self.g.lexer, self.vocab, q0, group[1], group[2], full=False)
            node.children[key] = hit
        return hit

    def indents(self, ids, begin, end, tail_indent: int) -> np.ndarray:
        """Indentation after each token's lexeme part ``[begin, end)`` (vectorised)."""
        vocab = self.vocab
        length = end - begin
        width = int(length.max()) if len(length) else 0
        if width == 0:
            return np.full(len(ids), tail_indent, dtype=np.int64)
        cols = np.arange(width)
        valid = cols[None, :] < length[:, None]
        idx = vocab.offsets[ids][:, None] + begin[:, None] + cols[None, :]
        idx = np.where(valid, idx, 0)
        m = np.where(valid, vocab.flat_bytes[idx], 0)
        nl_pos = np.where(m == 10, cols[None, :], -1).max(axis=1)
        after = cols[None, :] > nl_pos[:, None]
        spaces = ((m == 32) & after).sum(axis=1) + self.g.tab_len * ((m == 9) & after).sum(axis=1)
        return np.where(nl_pos >= 0, spaces, tail_indent + spaces)


class GrammarState(ConstraintState):
    """Immutable: ``branches`` are ``(parser state, lexer state, lexeme tail)`` triples.

    More than one branch only when a lexeme ties between terminals (grammar ambiguity at
    the lexical level).  The tail (bytes of the lexeme after its last newline) is kept only
    for indentation-sensitive grammars; in grammars with distinct terminals it is
    ``(lexeme bytes, values of the run)`` (:mod:`guided.grammars.distinct`).
    """

    __slots__ = ("tables", "branches", "vocab", "_mask", "_accepting")

    def __init__(self, tables: _VocabTables, branches: tuple):
        self.tables = tables
        self.branches = branches
        self.vocab = tables.vocab
        self._mask = None
        self._accepting = None

    def __repr__(self) -> str:
        return f"GrammarState({len(self.branches)} branch(es))"

    # masks of grammar states may be filled from several threads (fill_bitmasks): every
    # entry point that grows the engine's caches holds ENGINE_LOCK
    parallel_masks = True

    # -- bytes ----------------------------------------------------------------------------------
    def advance_bytes(self, data: bytes) -> "GrammarState | None":
        out: list = []
        g = self.tables.g
        with ENGINE_LOCK:
            for p, q, tail in self.branches:
                _walk_bytes(g, p, q, tail, data, 0, out)
        if not out:
            return None
        if len(out) > 1:
            seen = set()
            uniq = []
            for p, q, tail in out:
                key = (id(p), q, tail)
                if key not in seen:
                    seen.add(key)
                    uniq.append((p, q, tail))
            out = uniq
        return GrammarState(self.tables, tuple(out))

    def advance(self, token_id: int) -> "ConstraintState | None":
        t = self.tables
        if token_id in t.eos_ids:
            return FinishedState(self.vocab) if self.is_accepting() else None
        if token_id in t.special_ids or not 0 <= token_id < self.vocab.size:
            return None
        data = self.vocab.token_bytes[token_id]
        if not data:
            return None
        with ENGINE_LOCK:
            nxt = self.advance_bytes(data)
            return nxt if nxt is not None and nxt.is_live() else None

    def allows(self, token_id: int) -> bool:
        if self._mask is not None:
            return bool(self._mask[token_id])
        return self.advance(token_id) is not None

    def is_accepting(self) -> bool:
        if self._accepting is None:
            g = self.tables.g
            with ENGINE_LOCK:
                self._accepting = any(_branch_accepting(g, p, q, tail) for p, q, tail in self.branches)
        return self._accepting

    def is_live(self) -> bool:
        with ENGINE_LOCK:
            return self._is_live()

    def _is_live(self) -> bool:
        g = self.tables.g
        for p, q, tail in self.branches:  # (a loop, not any(): this runs after every token)
            if _branch_live(g, p, q, tail):
                return True
        return False

    # -- masks -----------------------------------------------------------------------------------
    def allowed_mask(self) -> np.ndarray:
        """Read-only boolean mask over the vocabulary (shared with caches; copy to modify)."""
        if self._mask is not None:
            return self._mask
        # a cold mask builds thousands of small cache objects (parser columns, walk
        # results), and every few hundred of them would start a collection that may scan
        # the whole heap (torch, transformers...): the collector is held off until the mask
        # is done, and then the mask's own young objects are collected once, here
        with ENGINE_LOCK:
            gc_was_enabled = gc.isenabled()
            gc.disable()
            try:
                mask = None
                tables = self.tables
                for p, q, tail in self.branches:
                    if tables.g.distinct:  # the plain grammar's mask (shared), less repeated values
                        m = distinct.filter_mask(tables, p, q, tail, _branch_mask(tables, p, q, b""), _token_survives)
                    else:
                        m = _branch_mask(tables, p, q, tail)
                    mask = m if mask is None else (mask | m)
            finally:
                # another thread's mask may have switched the collector off meanwhile: only
                # the thread that found it on switches it back
                if gc_was_enabled:
                    gc.enable()
                    if gc.get_count()[0] > gc.get_threshold()[0]:
                        gc.collect(0)
            return self._keep_mask(mask)

    def cache_key(self):
        # parser states are interned per grammar tables: the branches identify the configuration
        return (self.tables, self.branches)

    def cached_mask(self) -> np.ndarray | None:
        """The mask when every branch's mask is cached already (no walk), else None."""
        if self._mask is not None or self.tables.g.distinct:
            return self._mask
        masks = self.tables.masks
        mask = None
        with ENGINE_LOCK:
            for key in self.branches:
                m = masks.get(key)
                if m is None:
                    return None
                mask = m if mask is None else (mask | m)
            return self._keep_mask(mask)

    def _keep_mask(self, mask: np.ndarray) -> np.ndarray:
        """EOS set iff accepting; read-only; remembered on this state."""
        tables = self.tables
        if self.is_accepting() and not mask[tables.eos_list].all():
            # the copy with EOS is cached beside the branch masks (under the same bound):
            # an accepting configuration met again costs no 128 KB copy
            key = ("eos", self.branches)
            with_eos = tables.cached(key)
            if with_eos is None:
                with_eos = mask.copy()
                with_eos[tables.eos_list] = True
                with_eos.flags.writeable = False
                tables.remember(key, with_eos)
            mask = with_eos
        mask.flags.writeable = False
        self._mask = mask
        return mask

    def allowed_bitmask(self) -> np.ndarray:
        return pack_mask(self.allowed_mask())

    def fill_bitmask(self, row: np.ndarray) -> None:
        pack_into(self.allowed_mask(), row)  # packing runs without the GIL or the engine lock


def _fresh_tail(g: _CompiledGrammar):
    """A branch's tail at a lexeme start."""
    return distinct.EMPTY_TAIL if g.distinct else b""


def _grown_tail(g: _CompiledGrammar, p: PState, tail, read: bytes):
    """A branch's tail after ``read`` more bytes of its lexeme: the lexeme after its last
    newline (indenter), ``(lexeme, run values)`` (distinct terminals), else nothing kept."""
    if g.distinct:
        return distinct.grown_tail(g, p, tail, read)
    return _cut_tail(tail + read) if g.indenter is not None else tail


def _lexeme_end(g: _CompiledGrammar, p: PState, best: tuple, tail) -> list:
    """``(parser state, fresh tail)`` for each way the lexeme that ``tail`` has read so far
    ends as one of ``best`` (empty: the parser takes none of them)."""
    if g.distinct:
        return distinct.lexeme_end(g, p, best, tail)
    indent = _indent_of(tail, g.tab_len) if p.indent_sensitive(best) else 0
    return [(p2, b"") for p2 in p.feed(best, indent)]


def _branch_accepting(g: _CompiledGrammar, p: PState, q: int, tail) -> bool:
    lex = g.lexer
    if lex.is_start(q):
        return p.eof_ok()
    best = lex.best[q]
    return bool(best) and any(p2.eof_ok() for p2, _ in _lexeme_end(g, p, best, tail))


def _branch_live(g: _CompiledGrammar, p: PState, q: int, tail) -> bool:
    lex = g.lexer
    if lex.is_start(q):
        return p.can_continue()
    lex.rows_of(q)
    # (lexer states are pruned to live ones; a distinct item's prefix may have only earlier
    # values left: see distinct.py)
    if lex.can_extend[q] and (not g.distinct or distinct.prefix_alive(g, q, tail)):
        return True
    best = lex.best[q]
    return bool(best) and any(p2.can_continue() for p2, _ in _lexeme_end(g, p, best, tail))


def _walk_bytes(g: _CompiledGrammar, p: PState, q: int, tail, data: bytes, i: int, out: list) -> None:
    """Read ``data[i:]`` from branch ``(p, q, tail)``; append the surviving branches to ``out``."""
    lex = g.lexer
    n = len(data)
    seg_start = i
    plain = not g.distinct and g.indenter is None  # (the common case keeps no tail: no calls for it)
    while True:
        q, i = lex.read(q, data, i)
        if i >= n:
            break
        best = lex.best[q]
        if not best:
            return
        # (parser state, tail) pairs, except in the common case: parser states, the tail kept
        nexts = p.feed(best, 0) if plain else _lexeme_end(g, p, best, _grown_tail(g, p, tail, data[seg_start:i]))
        if not nexts:
            return
        for nxt in nexts[1:]:
            p2, tail2 = (nxt, tail) if plain else nxt
            _walk_bytes(g, p2, p2.lex_start, tail2, data, i, out)
        p, tail = (nexts[0], tail) if plain else nexts[0]
        q = p.lex_start
        seg_start = i
    out.append((p, q, tail if plain else _grown_tail(g, p, tail, data[seg_start:])))


def _token_survives(g: _CompiledGrammar, p: PState, q: int, tail, data: bytes) -> bool:
    """Can the output go on after ``data`` from branch ``(p, q, tail)`` (an exact advance)?"""
    out: list = []
    _walk_bytes(g, p, q, tail, data, 0, out)
    return any(_branch_live(g, *b) for b in out)


def _branch_mask(tables: _VocabTables, p: PState, q: int, tail: bytes) -> np.ndarray:
    key = (p, q, tail)
    hit = tables.cached(key)
    if hit is not None:
        return hit
    g = tables.g
    top = tables.top_walk(q)
    if not top.groups:
        mask = top.inside
    else:
        mask = top.inside.copy()
        tail_indent = _indent_of(tail, g.tab_len) if g.indenter is not None else 0
        _apply_groups(tables, top, p, tail_indent, True, mask)
        mask.flags.writeable = False
    tables.remember(key, mask)
    return mask


# groups of at most this many tokens are walked token by token through the parser (numpy
# walks cost more than that); the compiled walks are cheap even for a few tokens, and their
# results are shared by every parser state, so then every group takes the cached walk
_SMALL_GROUP = 24


def _apply_groups(tables: _VocabTables, node: WalkResult, p: PState, tail_indent: int, top: bool, mask: np.ndarray) -> None:
    """Mark the tokens of ``node``'s lexeme-ending groups that the parser lets continue."""
    lex = tables.g.lexer
    small = 0 if compiled_walks() else _SMALL_GROUP
    for group in node.groups:
        q_k, roots = group[0], group[4]  # (the token arrays of a trie group are made on demand)
        best = lex.best[q_k]
        if p.indent_sensitive(best):
            _, ids, end, begin, _ = group
            indents = tables.indents(ids, begin, end, tail_indent)
            for indent in np.unique(indents).tolist():
                sel = indents == indent
                sub_ids, sub_end = ids[sel], end[sel]
                for p2 in p.feed(best, indent):
                    key = (q_k, p2.lex_start, indent, tail_indent if top else 0)
                    sub_roots = roots if roots is not None and bool(sel.all()) else None
                    child = tables.child_walk(node, key, (q_k, sub_ids, sub_end, None, None), p2.lex_start, sub_roots)
                    child.mark_inside(mask)
                    if child.groups:
                        _apply_groups(tables, child, p2, 0, False, mask)
            continue
        if small and len(group[1]) <= small:  # a few tokens: plain byte walks beat numpy's overhead
            ids, end = group[1], group[2]
            nexts = p.feed(best, 0)
            token_bytes = tables.vocab.token_bytes
            g = tables.g
            for t, k in zip(ids.tolist(), end.tolist()):
                if mask[t]:
                    continue
                data = token_bytes[t]
                for p2 in nexts:
                    out: list = []
                    _walk_bytes(g, p2, p2.lex_start, _fresh_tail(g), data, k, out)
                    if out:
                        mask[t] = True
                        break
            continue
        for p2 in p.feed(best, 0):
            key = (q_k, p2.lex_start)
            child = tables.child_walk(node, key, group, p2.lex_start, roots)
            child.mark_inside(mask)
            if child.groups:
                _apply_groups(tables, child, p2, 0, False, mask)
