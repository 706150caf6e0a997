"""Brute force for the infilling checker: enumerate every filling, lex it greedily, parse it.

Independent of the checker's transducer and chart: lexing walks each terminal's byte DFA
directly (extend while any terminal is alive, cut where none is, take the top priority), and
parsing uses the causal Earley recogniser over terminal ids.
"""

from __future__ import annotations

import itertools

from guided.grammars.earley import Column


def lex_all(spec, tables, data: bytes):
    """Every terminal sequence ``data`` lexes to (ties and ignore-ties branch); None if it does not lex."""
    ignore = set(spec.ignore)
    terms = spec.terminals
    seqs = [()]
    i = 0
    n = len(data)
    while i < n:
        states = [t.dfa.start for t in terms]
        j = i
        while j < n:
            nxt = [t.dfa.walk(s, data[j : j + 1]) if s >= 0 else -1 for t, s in zip(terms, states)]
            if all(s < 0 for s in nxt):
                break
            states = nxt
            j += 1
        if j == i:
            return None
        matching = [k for k, (t, s) in enumerate(zip(terms, states)) if s >= 0 and t.dfa.accepting[s]]
        if not matching:
            return None
        top = max((terms[k].priority, terms[k].is_literal) for k in matching)
        best = [k for k in matching if (terms[k].priority, terms[k].is_literal) == top]
        options = []
        kept = [tables.terminal_id[terms[k].name] for k in best if terms[k].name not in ignore]
        for t in kept:
            options.append((t,))
        if len(kept) < len(best):
            options.append(())
        seqs = [s + o for s in seqs for o in options]
        i = j
    return seqs


def accepts(spec, tables, data: bytes) -> bool:
    seqs = lex_all(spec, tables, data)
    if not seqs:
        return False
    for seq in set(seqs):
        col = tables.initial()
        for t in seq:
            col = col.scan(t)
            if col is None:
                break
        if col is not None and col.accepting:
            return True
    return False


def fillings(slots, vocab_ids, token_bytes):
    """Every byte string the slots can become."""
    choices = []
    for kind, arg in slots:
        if kind == "k":
            choices.append([arg])
        else:
            opts = [token_bytes[t] for t in vocab_ids]
            if arg:
                opts = opts + [b""]
            choices.append(opts)
    for combo in itertools.product(*choices):
        yield b"".join(combo)


def brute_force(spec, tables, slots, vocab) -> bool:
    ids = [i for i in range(vocab.size) if vocab.usable[i]]
    return any(accepts(spec, tables, w) for w in set(fillings(slots, ids, vocab.token_bytes)))
