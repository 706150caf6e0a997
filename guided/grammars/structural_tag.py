"""``StructuralTag``: free text, then constrained regions announced by tags, then text again.

    >>> weather = JSONSchema({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]})
    >>> c = StructuralTag([Tag('<tool_call>{"name": "weather", "arguments": ', weather, "}</tool_call>")],
    ...                   triggers=["<tool_call>"])
    >>> guided.generate(model, tokenizer, prompt, c)

The output is free text in which no trigger occurs, except where a *tag* begins: the text up
to and including the first occurrence of a trigger must continue with the rest of one tag's
``begin`` whose begin starts with that trigger, then a word of that tag's constraint (a
``JSONSchema``, a ``Grammar`` or a ``Regex``), then the tag's ``end``; then free text again
(or the end of output).  This is XGrammar's structural tag, and what OpenAI-style tool
calling needs for ``tool_choice="auto"``: text, or text with tool calls in it.

``text=False`` allows no free text at all (only tags, back to back, each starting with its
``begin``); ``min_tags`` / ``max_tags`` bound how many tags the output holds (``None``: any
number).  ``tool_choice="required"`` is ``text=False, min_tags=1``.

It is one grammar (:class:`~guided.grammars.Grammar`), so masks are exact at the token level
like every other grammar's: a token may finish the text, write the trigger and begin the
region in one go.  Free text before a trigger is *one* terminal that ends with the trigger
(the language of byte strings whose first trigger occurrence is at their end, an Aho-Corasick
automaton), so greedy lexing cannot run past a trigger; text after the last tag is another
terminal that contains no trigger.  Limits: the inner grammars' ``%ignore`` terminals apply
everywhere (use bounded or compact JSON whitespace, the default); lexing inside a region is
the engine's contextual greedy lexing, so an ``end`` whose first byte could extend the
region's last terminal (a regex region ``[0-9]+`` ending with ``"1"``) cuts that terminal.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from guided.constraint import Constraint
from guided.grammars.bytedfa import ByteDFA
from guided.grammars.grammar import Grammar
from guided.grammars.lark_loader import GrammarError, GrammarSpec, TerminalSpec, rename_spec
from guided.grammars.regex import Regex

__all__ = ["StructuralTag", "Tag"]


@dataclass(frozen=True)
class Tag:
    """One kind of constrained region: ``begin`` text, a constraint on what follows, ``end`` text."""

    begin: str
    constraint: Any  # JSONSchema, Grammar, Regex (anything with a .grammar Grammar)
    end: str = ""


class StructuralTag(Constraint):
    """Text with tagged, constrained regions (see the module docstring).

    ``tags``: the region kinds; ``triggers``: strings that announce a region in free text
    (every tag's ``begin`` must start with one; default: each tag's whole ``begin``).
    """

    def __init__(self, tags: Sequence[Tag], triggers: Sequence[str] | None = None, *, text: bool = True,
                 min_tags: int = 0, max_tags: int | None = None):
        super().__init__()
        if not tags:
            raise GrammarError("a structural tag needs at least one tag")
        if min_tags < 0 or (max_tags is not None and max_tags < max(min_tags, 1)):
            raise GrammarError(f"bad tag counts: min_tags={min_tags}, max_tags={max_tags}")
        self.tags = tuple(tags)
        self.triggers = tuple(dict.fromkeys(triggers if triggers is not None else (t.begin for t in tags)))
        self.text = text
        self.min_tags = min_tags
        self.max_tags = max_tags
        if any(not t for t in self.triggers):
            raise GrammarError("a trigger must not be empty")
        for tag in self.tags:
            if not tag.begin:
                raise GrammarError("a tag's begin must not be empty")
            if text and self._trigger_of(tag) is None:
                raise GrammarError(f"tag begin {tag.begin!r} starts with none of the triggers {list(self.triggers)}")
        self.grammar = Grammar.from_spec(self._spec(), text=lambda: repr(self))

    def __repr__(self) -> str:
        return (f"StructuralTag({len(self.tags)} tags, triggers={list(self.triggers)}, text={self.text}, "
                f"min_tags={self.min_tags}, max_tags={self.max_tags})")

    def _trigger_of(self, tag: Tag) -> str | None:
        """The longest trigger the tag's begin starts with."""
        found = [t for t in self.triggers if tag.begin.startswith(t)]
        return max(found, key=len) if found else None

    # -- the grammar ------------------------------------------------------------------------
    def _spec(self) -> GrammarSpec:
        terminals: list[TerminalSpec] = []
        rules: list[tuple] = []
        ignore: list[str] = []
        distinct: list[str] = []  # distinct items of the tags' grammars (uniqueItems over strings), renamed
        keep: list[str] = []
        literals: dict[str, str] = {}

        def literal(value: str) -> str:
            name = literals.get(value)
            if name is None:
                name = literals[value] = f"TAG_LITERAL_{len(literals)}"
                terminals.append(TerminalSpec(name, "", 0, True, ByteDFA.literal(value.encode("utf-8"))))
            return name

        trigger_names = {}
        if self.text:
            machine = _TriggerAutomaton([t.encode("utf-8") for t in self.triggers])
            for k, trig in enumerate(self.triggers):
                trigger_names[trig] = f"TEXT_THEN_TRIGGER_{k}"
                terminals.append(TerminalSpec(trigger_names[trig], "", 0, False, machine.ending_with(k)))
            terminals.append(TerminalSpec("TEXT", "", 0, False, machine.free_text()))
        for j, tag in enumerate(self.tags):
            try:
                inner = spec_of(tag.constraint)
            except TypeError as exc:
                raise GrammarError(str(exc)) from None
            renamed = rename_spec(inner, f"tag{j}")
            terminals += renamed.terminals
            rules += renamed.rules
            ignore += renamed.ignore
            distinct += renamed.distinct
            keep += renamed.distinct_keep
            if self.text:
                trig = self._trigger_of(tag)
                body = [trigger_names[trig]] + ([literal(tag.begin[len(trig):])] if len(tag.begin) > len(trig) else [])
            else:
                body = [literal(tag.begin)]
            body.append(renamed.start)
            if tag.end:
                body.append(literal(tag.end))
            rules.append(("tag", tuple(body)))
        # tags: min_tags required ones, then up to max_tags - min_tags optional ones (or any number)
        rules.append(("tags_0", ()))
        for i in range(self.min_tags):
            rules.append((f"tags_{i + 1}", (f"tags_{i}", "tag")))
        last = f"tags_{self.min_tags}"
        if self.max_tags is None:
            rules.append(("tags_more", (last,)))
            rules.append(("tags_more", ("tags_more", "tag")))
            last = "tags_more"
        else:
            for i in range(self.min_tags, self.max_tags):
                rules.append((f"tags_{i + 1}", (f"tags_{i}",)))
                rules.append((f"tags_{i + 1}", (f"tags_{i}", "tag")))
            last = f"tags_{self.max_tags}"
        rules.append(("start", (last,)))
        if self.text:
            rules.append(("start", (last, "TEXT")))
        names = [t.name for t in terminals]
        if len(set(names)) != len(names):  # pragma: no cover - the prefixes keep names apart
            raise GrammarError("terminal names collide")
        return GrammarSpec(tuple(terminals), tuple(dict.fromkeys(rules)), tuple(ignore), "start", (), None,
                           tuple(distinct), tuple(keep))

    # -- the constraint ------------------------------------------------------------------------
    def compile(self, vocab):
        return self.grammar.compiled_for(vocab)

    def initial_state(self, compiled, vocab):
        return self.grammar.initial_state(compiled, vocab)


def spec_of(constraint) -> GrammarSpec:
    """The grammar data of a constraint that has one: a ``Grammar`` (without a post-lexer), a
    ``Regex`` (one terminal), or anything with a ``.grammar`` that is a ``Grammar`` (``JSONSchema``)."""
    inner = getattr(constraint, "grammar", None)
    if isinstance(inner, Grammar):
        constraint = inner
    if isinstance(constraint, Grammar):
        if constraint.compiled.indenter is not None:
            raise GrammarError("a grammar with a post-lexer (indenter) cannot be embedded")
        return constraint.compiled.spec
    if isinstance(constraint, Regex):
        if constraint.dfa.matches_empty:
            raise GrammarError(f"an embedded regex must not match the empty string: {constraint.pattern!r}")
        term = TerminalSpec("REGEX", constraint.pattern, 0, False, constraint.dfa)
        return GrammarSpec((term,), (("start", ("REGEX",)),), (), "start", ())
    raise TypeError(f"cannot embed {type(constraint).__name__}: use a Grammar, a Regex or a JSONSchema")


class _TriggerAutomaton:
    """Aho-Corasick automaton of the triggers, as complete byte DFAs."""

    def __init__(self, triggers: list[bytes]):
        # the trie of trigger prefixes; state 0 is the empty prefix
        goto: list[dict[int, int]] = [{}]
        prefix: list[bytes] = [b""]
        for t in triggers:
            s = 0
            for b in t:
                nxt = goto[s].get(b)
                if nxt is None:
                    nxt = len(goto)
                    goto.append({})
                    prefix.append(prefix[s] + bytes([b]))
                    goto[s][b] = nxt
                s = nxt
        n = len(goto)
        # complete transitions by breadth-first failure links
        delta = np.zeros((n, 256), dtype=np.int32)
        fail = [0] * n
        order = [0]
        for s in order:
            for b in range(256):
                nxt = goto[s].get(b)
                if nxt is not None:
                    delta[s, b] = nxt
                    fail[nxt] = 0 if s == 0 else int(delta[fail[s], b])
                    order.append(nxt)
                else:
                    delta[s, b] = 0 if s == 0 else delta[fail[s], b]
        # the trigger a state completes: the longest trigger that is a suffix of its prefix
        self.match = [-1] * n
        for s in range(n):
            ends = [k for k, t in enumerate(triggers) if prefix[s].endswith(t)]
            if ends:
                self.match[s] = max(ends, key=lambda k: len(triggers[k]))
        self.delta = delta
        self.n = n

    def free_text(self) -> ByteDFA:
        """Non-empty byte strings in which no trigger occurs."""
        keep = np.flatnonzero(np.array([m < 0 for m in self.match]))  # state 0 is keep[0]
        index = np.full(self.n, -1, dtype=np.int32)
        index[keep] = np.arange(1, len(keep) + 1)
        body = index[self.delta[keep]]
        # row 0: a fresh start with state 0's moves, not accepting (the text is not empty)
        trans = np.vstack([body[:1], body]).astype(np.int32)
        accepting = np.ones(len(keep) + 1, dtype=bool)
        accepting[0] = False
        return ByteDFA(trans, accepting, 0, "<text without triggers>")

    def ending_with(self, k: int) -> ByteDFA:
        """Byte strings whose first trigger occurrence ends at their last byte and is trigger ``k``."""
        live = np.array([m < 0 for m in self.match])
        keep = np.flatnonzero(live)
        index = np.full(self.n, -1, dtype=np.int32)
        index[keep] = np.arange(len(keep))
        final = len(keep)
        trans = np.full((len(keep) + 1, 256), -1, dtype=np.int32)
        for row, s in enumerate(keep):
            targets = self.delta[s]
            mapped = index[targets]
            hits = np.array([self.match[t] == k for t in targets])
            mapped[hits] = final
            trans[row] = mapped
        accepting = np.zeros(len(keep) + 1, dtype=bool)
        accepting[final] = True
        return ByteDFA(trans, accepting, int(index[0]), f"<text, then trigger {k}>")
