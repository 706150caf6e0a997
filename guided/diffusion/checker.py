"""``InfillingChecker``: can a partial output (known segments and holes) still become a word of the grammar?

    >>> checker = InfillingChecker(load_grammar("json"), tokenizer)
    >>> checker.check([b'{"name": ', Hole(2), b', "age": 7}'])
    True
    >>> checker.check([b'{"name": ', Hole(1), b' 7}'])       # no single token turns it into JSON
    False
    >>> result = checker.result([b'[1, ', Hole.up_to(4)])
    >>> result.ok, result.holes, result.text
    (True, [[60]], b'[1, ]]')   # e.g.: one witness filling, token ids per hole

Semantics (exact, and what the brute-force tests check): a hole ``Hole(k)`` holds exactly
``k`` tokens of the vocabulary (any non-special token with at least one byte); ``Hole.up_to(n)``
holds from 0 to ``n`` of them.  The filled bytes must lex and parse: lexing is *greedy over
all of the grammar's terminals* (:mod:`guided.diffusion.lexing`: a lexeme extends while any
terminal can extend it, priorities break ties, ``%ignore`` terminals are dropped), then the
terminals must be a sentence of the grammar's rules.  Every accepted output is also accepted by
the causal :class:`~guided.grammars.Grammar` constraint, whose contextual lexer only ever
considers fewer terminals (so the outputs of :func:`guided.diffusion.generate` parse there).

The decision is the emptiness of the grammar intersected with the regular language of all
fillings, decided on a Bar-Hillel style product chart (:mod:`guided.diffusion.chart`: Earley
deduction over the lexeme automaton of the partial output, stopping at the first accepting
item).  Every call answers yes or no; there is no budget and no "undecided".  Cheaper steps
come first and are exact in the direction they decide:

1. *reuse*: a remembered witness (of the last four yes answers), with the newly known
   tokens put in, is parsed; if it is a word, the answer is yes (the common case when one
   hole position is filled);
2. *repair*: the remembered witness closest to the call, with only the runs of holes next to
   the changed slots filled anew (a small relaxed chart with a work cap, realized and parsed;
   reaching the cap only skips the step); a word means yes;
3. *relaxed* chart: every run of holes taken as *any* byte string
   (token counts dropped, except that a run read entirely inside one lexeme needs at least as
   many bytes as it has required tokens) -- an over-approximation; if it is empty the answer is
   no.  This is the decision problem of the published method (Mündler et al. 2025, where every
   masked run is any string);
4. *realized*: the relaxed chart's accepted path is turned into real tokens with the right
   counts (:mod:`guided.diffusion.realize`) and parsed; if it is a word, yes.  The path is the
   weighted chart's (fewest lexemes in the gaps); the unweighted chart's path is tried when the
   weighted one gets no tokens, and first when the weighted chart passes its work cap
   (``relaxed_budget``: then it only goes on if the unweighted path fails).  *refined*: the
   runs of at most 4 holes that got no tokens are kept exact and 3-4 run again (up to 3
   rounds; still an over-approximation, so an empty chart is a no);
5. *exact*: the exact chart (hole positions explicit, the vocabulary's token classes per lexer
   state as edges) decides.  A trailing run of optional holes is first tried shortened to 2 and
   6 slots (a completion leaving the rest empty is a completion), which finds short endings
   cheaply; only the full chart says no.

Size bound of the exact chart: with ``n`` slots, ``Q`` lexer states, ``F`` distinct token
futures (the (labels still to come, end state) sets of the token classes after a prefix of
their labels: at most ``Q`` times the classes per state times the labels per token), the
automaton has ``N <= n * (1 + F) + (bytes of known slots)`` nodes and ``n * Q`` silent lexer
states; Earley deduction over it holds at most ``N^2 * R`` items (``R`` dotted rules) and
runs in ``O(N^3 * R)`` -- polynomial in the canvas length and the grammar size, and each
check stops at the first accepting item.  Each chart is incremental: a call whose slots differ
from the previous call's from slot ``p`` on reuses the item sets of every node before ``p``.
"""

from __future__ import annotations

import gc
import time
import weakref
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Sequence

from guided.diffusion.canvas import Hole, Part, slots_and_spans
from guided.diffusion.chart import Chart, ChartBudgetExceeded
from guided.diffusion.lexing import GreedyLexer
from guided.diffusion.realize import Realizer, parse_bytes

__all__ = ["InfillingChecker", "CheckResult", "Hole"]

_LEXERS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _as_grammar(grammar):
    from guided.grammars.grammar import Grammar

    if isinstance(grammar, Grammar):
        return grammar
    if isinstance(grammar, str):
        return Grammar(grammar)
    inner = getattr(grammar, "grammar", None)  # e.g. JSONSchema
    if isinstance(inner, Grammar):
        return inner
    raise TypeError(f"expected a Grammar, Lark text or a constraint with a .grammar, got {type(grammar).__name__}")


def lexer_for(grammar) -> GreedyLexer:
    """The (shared) greedy lexer of a grammar: token-class tables are cached on it."""
    compiled = _as_grammar(grammar).compiled
    lexer = _LEXERS.get(compiled)
    if lexer is None:
        lexer = _LEXERS[compiled] = GreedyLexer(compiled)
    return lexer


@dataclass
class CheckResult:
    """``ok``: completable; ``filling``: one token id
    (or ``None`` for an empty optional slot) per hole slot of a witness; ``how``: which step decided."""

    ok: bool | None
    how: str
    slots: tuple = ()
    filling: dict = field(default_factory=dict)
    seconds: float = 0.0
    hole_spans: list = field(default_factory=list)  # slot range of each Hole part, in order

    @property
    def holes(self) -> list[list[int]]:
        """The witness: token ids for each ``Hole`` part, in order (empty optional slots left out)."""
        return [
            [self.filling[i] for i in range(a, b) if self.filling.get(i) is not None] for a, b in self.hole_spans
        ]

    def text(self, vocab) -> bytes:
        """The completed output's bytes."""
        return b"".join(
            arg if kind == "k" else (vocab.token_bytes[self.filling[i]] if self.filling.get(i) is not None else b"")
            for i, (kind, arg) in enumerate(self.slots)
        )


class InfillingChecker:
    """Decides whether partial outputs can be completed to words of ``grammar`` (see module doc).

    ``grammar``: a :class:`~guided.grammars.Grammar`, Lark text, or a constraint with a
    ``.grammar`` (``JSONSchema``).  ``vocab``: a :class:`~guided.vocab.Vocabulary` or a Hugging
    Face tokenizer.  Every call decides (yes or no); there is no work budget.  ``relaxed_budget``:
    units of work (items, edges) the weighted relaxed chart may spend before the unweighted one's
    witness is tried first (None: no cap); it moves cost, never the answer.
    """

    def __init__(self, grammar, vocab, *, short_holes: int = 2, realize: bool = True, relaxed_budget: int | None = 20_000):
        from guided.vocab import Vocabulary

        self.grammar = _as_grammar(grammar)
        self.vocab = vocab if isinstance(vocab, Vocabulary) else Vocabulary.from_tokenizer(vocab)
        self.lexer = lexer_for(self.grammar)
        self.exact_chart = Chart(self.lexer, self.vocab)
        self.short_tail_chart = Chart(self.lexer, self.vocab)
        self.tail_tries = (2, 6)  # trailing optional slots kept in the cheap exact tries
        # With ``realize`` the relaxed chart is weighted: it sees every way into the end, so its
        # accepted path is a short, easy one to realize (and later witnesses repair well).  On
        # canvases with many runs of holes in grammars like C that costs seconds (every gap node
        # closes the whole grammar), so it runs under a work cap; past the cap ``quick_chart``
        # (unweighted: it stops at the first accepting item) decides the same relaxed language
        # and its path is realized instead.  Either way the answer is the same.
        self.realize = realize
        self.relaxed_budget = relaxed_budget
        self.relaxed_chart = Chart(self.lexer, self.vocab, self.relaxed_budget if realize else None, weighted=realize)
        self.quick_chart = Chart(self.lexer, self.vocab)
        self.refine_chart = Chart(self.lexer, self.vocab)
        self.refine_rounds = 3
        self.refine_run_limit = 4  # longer runs kept exact cost about what the exact chart costs
        self._failed_runs: set = set()
        # repairs of the last witness: a small chart with a work cap (reaching it only skips the step).
        # Unweighted, so it stops at its first accepting item: on C at 128 positions that cut the
        # step's p90 several-fold, and its witnesses are reused by later checks at least as often.
        self.repair_chart = Chart(self.lexer, self.vocab, 50_000)
        self.repair_span = 8  # at most this many changed slots are repaired locally
        self.short_holes = short_holes
        self.token_search_limit = 12  # runs up to this many holes are realized by a token search
        self.realizer = Realizer(self.lexer, self.vocab)
        self.stats: Counter = Counter()
        self.seconds: Counter = Counter()
        # (slots, filling) of the last few witnesses, newest last: a sampler tries several tokens
        # at a position, so the witness of the canvas it keeps is often not the newest one
        self._witnesses: deque = deque(maxlen=4)

    # -- public ------------------------------------------------------------------------------
    def check(self, parts: Sequence[Part]) -> bool:
        """True iff some filling of the holes makes the whole a word of the grammar."""
        return self.result(parts).ok

    def witness(self, parts: Sequence[Part]) -> list[list[int]] | None:
        """Token ids for each hole (in order) of one completion, or ``None`` if there is none."""
        r = self.result(parts)
        return r.holes if r.ok else None

    def result(self, parts: Sequence[Part], *, exact_only: bool = False) -> CheckResult:
        """The decision with a witness and the step that made it.  ``exact_only``: skip the cheaper
        steps and run the exact chart (the same answer, usually slower; for tests and comparisons)."""
        t0 = time.perf_counter()
        slots, spans = slots_and_spans(parts, self.vocab)
        # charts allocate many small objects and no reference cycles: the cyclic collector's full
        # passes over them would cost more than the check itself
        enabled = gc.isenabled()
        gc.disable()
        try:
            r = self._exact(slots) if exact_only else self._decide(slots)
        finally:
            if enabled:
                gc.enable()
        r.slots = slots
        r.hole_spans = [span for part, span in zip(parts, spans) if isinstance(part, Hole)]
        r.seconds = time.perf_counter() - t0
        self.stats[r.how] += 1
        self.seconds[r.how] += r.seconds
        if r.ok:
            self._remember(slots, r.filling)
        return r

    def check_slots(self, slots: tuple) -> CheckResult:
        """Like :meth:`result` on slots already built with :func:`~guided.diffusion.canvas.slots_of`."""
        t0 = time.perf_counter()
        r = self._decide(tuple(slots))
        r.slots = tuple(slots)
        r.seconds = time.perf_counter() - t0
        self.stats[r.how] += 1
        self.seconds[r.how] += r.seconds
        if r.ok:
            self._remember(r.slots, r.filling)
        return r

    # -- the steps ------------------------------------------------------------------------------
    def _decide(self, slots: tuple) -> CheckResult:
        holes = [i for i, s in enumerate(slots) if s[0] == "h"]
        if not holes:
            ok = parse_bytes(self.lexer, b"".join(arg for _, arg in slots))
            return CheckResult(ok, "parse", filling={})
        reused = self._reuse(slots)
        if reused is not None:
            return CheckResult(True, "reuse", filling=reused)
        repaired = self._repair(slots)
        if repaired is not None:
            return CheckResult(True, "repair", filling=repaired)
        # relaxed, then refined: the runs whose witness tokens could not be found are kept exact
        # in the next round (still an over-approximation, so an empty chart still means no)
        keep: set = set()
        for round_ in range(self.refine_rounds + 1):
            how = "relaxed" if round_ == 0 else "refined"
            relaxed, runs, index = self._relaxed_slots(slots, keep=keep)
            if round_ == 0 and self.realize:
                ok, filling = self._relaxed_realized(slots, relaxed, runs, index)
            else:  # without ``realize`` only round 0 runs: its chart refutes, or the exact chart decides
                ok = (self.relaxed_chart if round_ == 0 else self.refine_chart).run(relaxed)
                if ok and not self.realize:
                    break
                filling = self._realize(slots, runs, self.refine_chart, index) if ok else None
            if not ok:
                return CheckResult(False, how)
            if filling is not None:
                return CheckResult(True, "realized" if round_ == 0 else how, filling=filling)
            failed = self._failed_runs - keep
            short = all(len(members) <= self.refine_run_limit for _, members in runs if members[0] in failed)
            if not failed or not short or len(keep | failed) >= len(runs) + len(keep):
                break  # nothing new to keep exact, a long run, or everything: the exact chart's turn
            keep |= failed
        return self._exact(slots)

    def _relaxed_realized(self, slots: tuple, relaxed: tuple, runs: list, index: dict) -> tuple[bool, dict | None]:
        """The first relaxed round: ``(completable in the relaxed language, filling or None)``.

        The weighted chart runs under ``relaxed_budget``; past it, the unweighted ``quick_chart``
        decides and its path is realized, and only if that gets no tokens does the weighted chart
        go on (from the node where it stopped) to the end.  When the weighted path gets no tokens,
        the quick chart's path is tried too.  ``_failed_runs`` is left as the weighted path's
        (it chooses the runs the next round keeps exact) whenever the weighted chart finished."""
        weighted, quick = self.relaxed_chart, self.quick_chart
        try:
            ok = weighted.run(relaxed)
        except ChartBudgetExceeded:
            if not quick.run(relaxed):
                return False, None
            filling = self._realize(slots, runs, quick, index)
            if filling is not None:
                return True, filling
            weighted.budget = None
            try:
                ok = weighted.run(relaxed)  # the same language: it accepts too
            finally:
                weighted.budget = self.relaxed_budget
            return ok, self._realize(slots, runs, weighted, index)
        if not ok:
            return False, None
        filling = self._realize(slots, runs, weighted, index)
        if filling is None:
            failed = self._failed_runs
            if quick.run(relaxed):
                filling = self._realize(slots, runs, quick, index)
            self._failed_runs = failed
        return True, filling

    def _exact(self, slots: tuple) -> CheckResult:
        """The exact chart: always decides (see the module docstring for its size bound).

        A trailing run of optional slots is first tried shortened (to ``tail_tries`` slots): a
        completion that leaves the other optional slots empty is a completion of the whole, and
        the chart's work grows with the square of the slots it spans, so short completions are
        found cheaply.  Only the full chart can say no."""
        if not any(s[0] == "h" for s in slots):
            return CheckResult(parse_bytes(self.lexer, b"".join(arg for _, arg in slots)), "parse", filling={})
        tail = len(slots)
        while tail and slots[tail - 1] == ("h", True):
            tail -= 1
        for keep in self.tail_tries:
            if tail + keep >= len(slots):
                break
            if self.short_tail_chart.run(slots[: tail + keep]):
                filling = self._exact_filling(slots[: tail + keep], self.short_tail_chart)
                filling.update((i, None) for i in range(tail + keep, len(slots)))
                return CheckResult(True, "exact", filling=filling)
        if not self.exact_chart.run(slots):
            return CheckResult(False, "exact")
        return CheckResult(True, "exact", filling=self._exact_filling(slots, self.exact_chart))

    def _remember(self, slots: tuple, filling: dict) -> None:
        w = self._witnesses
        if w and w[-1][0] == slots:
            w.pop()
        w.append((slots, filling))

    def _reuse(self, slots: tuple) -> dict | None:
        for last in reversed(self._witnesses):
            filling = self._reuse_one(slots, last)
            if filling is not None:
                return filling
        return None

    def _reuse_one(self, slots: tuple, last: tuple) -> dict | None:
        if len(last[0]) != len(slots):
            return None
        old_slots, old_fill = last
        tb = self.vocab.token_bytes
        parts = []
        filling = {}
        for i, (kind, arg) in enumerate(slots):
            if kind == "k":
                parts.append(arg)
                continue
            if old_slots[i][0] != "h":
                return None
            t = old_fill.get(i)
            if t is None:
                if not arg:  # a required slot the old witness left empty
                    return None
            else:
                parts.append(tb[t])
            filling[i] = t
        if parse_bytes(self.lexer, b"".join(parts)):
            return filling
        return None

    def _repair(self, slots: tuple) -> dict | None:
        """The previous witness with only the holes next to the changed slots filled anew.

        Every other hole keeps its witness token (it becomes known bytes), each run of holes
        touching a changed slot is relaxed (or kept exact if short), and the small relaxed chart
        of that is realized and parsed: a yes is always proved.  A no here decides nothing (the
        far holes might need other tokens), so the caller goes on.  The remembered witnesses
        closest to ``slots`` (fewest changed slots, newest first) are tried, at most two."""
        n = len(slots)
        options = []
        for age, (old_slots, old_fill) in enumerate(reversed(self._witnesses)):
            if len(old_slots) != n:
                continue
            changed = [i for i in range(n) if slots[i] != old_slots[i]]
            if changed and len(changed) <= self.repair_span:
                options.append((len(changed), age, changed, old_slots, old_fill))
        options.sort(key=lambda o: o[:2])
        for _, _, changed, old_slots, old_fill in options[:2]:
            filling = self._repair_one(slots, changed, old_slots, old_fill)
            if filling is not None:
                return filling
        return None

    def _repair_one(self, slots: tuple, changed: list, old_slots: tuple, old_fill: dict) -> dict | None:
        n = len(slots)
        tb = self.vocab.token_bytes
        reduced: list = []
        runs: list = []
        index: dict = {}
        base: dict = {}
        i = 0
        while i < n:
            if slots[i][0] != "h":
                index[len(reduced)] = i
                reduced.append(slots[i])
                i += 1
                continue
            j = i
            while j < n and slots[j][0] == "h":
                j += 1
            if any(i - 1 <= c <= j for c in changed):  # a run touching a change: filled anew
                if j - i <= self.short_holes:
                    for k in range(i, j):
                        index[len(reduced)] = k
                        reduced.append(slots[k])
                else:
                    runs.append((len(reduced), list(range(i, j))))
                    reduced.append(("g", j - i, sum(1 for k in range(i, j) if not slots[k][1])))
            else:  # far from the change: the witness's tokens stay
                for k in range(i, j):
                    if old_slots[k][0] != "h":
                        return None
                    t = old_fill.get(k)
                    base[k] = t
                    if t is None:
                        if not slots[k][1]:
                            return None
                    else:
                        index[len(reduced)] = k
                        reduced.append(("k", tb[t]))
            i = j
        try:
            if not self.repair_chart.run(tuple(reduced)):
                return None
        except ChartBudgetExceeded:
            return None
        return self._realize(slots, runs, self.repair_chart, index, base)

    @staticmethod
    def _relaxed_slots(slots: tuple, keep_short: int = 0, keep: set | frozenset = frozenset()):
        """Slots with every run of more than ``keep_short`` holes (and not starting at a slot in
        ``keep``) turned into one gap (any bytes).  Returns the slots, the gap runs ``(gap slot,
        [hole slots])`` and, per kept slot, its index."""
        relaxed: list = []
        runs: list = []
        index: dict = {}
        i, n = 0, len(slots)
        while i < n:
            if slots[i][0] != "h":
                index[len(relaxed)] = i
                relaxed.append(slots[i])
                i += 1
                continue
            j = i
            while j < n and slots[j][0] == "h":
                j += 1
            if j - i <= keep_short or i in keep:
                for k in range(i, j):
                    index[len(relaxed)] = k
                    relaxed.append(slots[k])
            else:
                runs.append((len(relaxed), list(range(i, j))))
                relaxed.append(("g", j - i, sum(1 for k in range(i, j) if not slots[k][1])))
            i = j
        return tuple(relaxed), runs, index

    def _realize(self, slots: tuple, runs: list, chart: Chart, index: dict, base: dict | None = None) -> dict | None:
        """Real tokens for a relaxed chart's accepted path, checked by a parse; None if that fails
        (``_failed_runs``: the first slots of the runs that got no tokens, or of every run when the
        filled output did not parse).  ``base``: tokens already chosen for the hole slots the
        chart saw as known bytes."""
        realizer = self.realizer
        pieces, choices = realizer.read(chart)
        failed: set = set()
        self._failed_runs = failed
        for spaced in (False, True):
            filling = dict(base) if base else {}
            filling.update((index[i], t) for i, t in choices.items())
            ok = True
            for gi, members in runs:
                required = sum(1 for i in members if not slots[i][1])
                ids = None
                if not spaced and len(members) <= self.token_search_limit:
                    # short runs: search tokens directly (exact for this path's lexemes)
                    ids = realizer.tokens_for(*realizer.plan(pieces.get(gi, [])), required, len(members))
                if ids is None:
                    parts = realizer.gap_bytes(pieces.get(gi, []), spaced)
                    if parts is not None:
                        ids = self._split_run(parts, required, len(members), pieces.get(gi, []))
                if ids is None:
                    ok = False
                    if spaced:
                        failed.add(members[0])
                    continue
                # tokens go to the required slots first, then to optional ones
                order = [i for i in members if not slots[i][1]] + [i for i in members if slots[i][1]]
                for k, i in enumerate(order):
                    filling[i] = ids[k] if k < len(ids) else None
            if not ok:
                continue
            tb = self.vocab.token_bytes
            data = b"".join(
                arg if kind == "k" else (tb[filling[i]] if filling.get(i) is not None else b"")
                for i, (kind, arg) in enumerate(slots)
            )
            if all(i in filling for i, s in enumerate(slots) if s[0] == "h") and parse_bytes(self.lexer, data):
                return filling
            if spaced:
                failed.update(members[0] for _, members in runs)
        return None

    def _split_run(self, parts: list, lo: int, hi: int, pieces: list) -> list[int] | None:
        realizer = self.realizer
        data = b"".join(parts)
        ids = realizer.split(data, lo, hi)
        if ids is not None or len(data) >= lo:
            return ids
        # too few bytes for the required tokens: pad with an ignored lexeme at a lexeme boundary
        need = lo - len(data)
        pad = realizer.pad(need)
        if pad is not None:
            q0 = self.lexer.q0
            boundaries = [0] if not pieces or pieces[0][1] == q0 else []
            boundaries += [k + 1 for k, piece in enumerate(pieces) if piece[0] in ("emit", "skip", "lex")]
            for k in boundaries:
                ids = realizer.split(b"".join(parts[:k] + [pad] + parts[k:]), lo, hi)
                if ids is not None:
                    return ids
        # lengthen a piece that stays inside one lexeme
        for k, (kind, q, x, _t) in enumerate(pieces):
            if kind != "through":
                continue
            longer = realizer.longer_path(q, x, len(parts[k]) + need)
            if longer is not None:
                cand = parts[:k] + [longer] + parts[k + 1 :]
                ids = realizer.split(b"".join(cand), lo, hi)
                if ids is not None:
                    return ids
        return None

    def _exact_filling(self, slots: tuple, chart: Chart) -> dict:
        filling: dict = {}
        lexer, vocab = self.lexer, self.vocab
        steps = [st for _, _, path, _ in chart.scans() for st in chart.path_steps(path)]
        filling.update(chart.hole_choices(steps))
        for i, s in enumerate(slots):
            if s[0] == "h" and i not in filling:
                filling[i] = None
        return filling
