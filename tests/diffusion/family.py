"""A family of small grammars and vocabularies for brute-force comparisons.

Grammars are built from a few templates with random options (ignored spaces or not, a keyword
that is also a name, a two-byte character in names and strings, overlapping terminals that only
greedy lexing tells apart).  Vocabularies are small subsets of the real Llama-3 token strings
over the grammar's alphabet (plus the lone bytes of the two-byte character, which Llama-3 has
as byte tokens), so holes can hold half a character or part of a lexeme.
"""

from __future__ import annotations

import random

from guided.vocab import Vocabulary

E_ACUTE = "é"  # two bytes in UTF-8: holes may hold half of it

TEMPLATES = {
    "expr": (
        r"""
start: e
?e: t | e OP t
?t: NAME | NUM | "(" e ")" {kw}
OP: {op}
NAME: /[a-z{name_extra}]+/
NUM: /[0-9]+/
{ignore}
""",
        "ab(1)+*if " + E_ACUTE,
    ),
    "list": (
        r"""
start: "[" [v ("," v)*] "]"
?v: STR | NUM | start
STR: /"[^"\n]*"/
NUM: /-?[0-9]+/
{ignore}
""",
        '[],"a1- ' + E_ACUTE,
    ),
    "greedy": (
        r"""
start: x+
?x: A | B | C
A: /a+/
B: /ab/
C: /b{c_extra}/
{ignore}
""",
        "ab " + E_ACUTE,
    ),
    "ties": (
        r"""
start: w*
?w: WORD | "(" w* ")"
WORD: /[a-z]+/
IGN: /[x-z]+{ign_extra}/
%ignore IGN
{ignore}
""",
        "abxz() ",
    ),
    "pairs": (
        r"""
start: "{{" [p (";" p)*] "}}"
p: NAME "=" (NAME | NUM | start)
NAME: /[a-z{name_extra}][a-z0-9]*/
NUM: /[0-9]+/
{ignore}
""",
        "{}=;a1 " + E_ACUTE,
    ),
}


def make_grammar_text(rng: random.Random) -> tuple[str, str]:
    """A random member of the family: (Lark text, alphabet)."""
    name = rng.choice(sorted(TEMPLATES))
    text, alphabet = TEMPLATES[name]
    opts = {
        "kw": rng.choice(["", '| "if" NAME']),
        "op": rng.choice(['"+"', "/[+*]/", '"+" | "*"']),
        "name_extra": rng.choice(["", E_ACUTE]),
        "c_extra": rng.choice(["", "+", E_ACUTE + "?"]),
        "ignore": rng.choice(["", '%ignore " "']),
        "ign_extra": rng.choice(["", "b?"]),
    }
    return text.format(**opts), alphabet


def alphabet_tokens(token_bytes: list[bytes], alphabet: str) -> list[bytes]:
    """Real tokens whose bytes use only the alphabet (and the two halves of é)."""
    allowed = set(alphabet.encode("utf-8"))
    out = []
    for b in token_bytes:
        if b and len(b) <= 4 and all(x in allowed for x in b):
            out.append(b)
    return sorted(set(out))


def small_vocab(pool: list[bytes], rng: random.Random, size: int) -> Vocabulary:
    """A small vocabulary: ``size`` tokens of ``pool`` (always some one-byte ones), plus EOS."""
    singles = [b for b in pool if len(b) == 1]
    multi = [b for b in pool if len(b) > 1]
    k1 = min(len(singles), max(2, size // 2))
    chosen = rng.sample(singles, k1) + rng.sample(multi, min(len(multi), size - k1))
    toks = sorted(set(chosen))
    return Vocabulary(token_bytes=toks + [b""], special_ids=frozenset(), eos_ids=frozenset({len(toks)}))


def random_parts(rng: random.Random, vocab: Vocabulary, alphabet: str, max_hole_slots: int = 3):
    """Known segments (text, bytes or token ids) and holes, with at most ``max_hole_slots`` hole positions."""
    from guided.diffusion import Hole

    parts = []
    slots = 0
    letters = list(alphabet) + [E_ACUTE.encode()[:1], E_ACUTE.encode()[1:]]
    for _ in range(rng.randint(1, 5)):
        r = rng.random()
        if r < 0.45:
            seg = b"".join(x if isinstance(x, bytes) else x.encode() for x in rng.choices(letters, k=rng.randint(1, 3)))
            parts.append(seg)
        elif r < 0.55:
            ids = [i for i in range(vocab.size) if vocab.usable[i]]
            parts.append([rng.choice(ids)])
        else:
            k = rng.randint(1, 2)
            if slots + k > max_hole_slots:
                continue
            slots += k
            parts.append(Hole(k) if rng.random() < 0.7 else Hole.up_to(k))
    return parts


def random_lexeme(dfa, rng: random.Random, alphabet: bytes, max_len: int = 4) -> bytes | None:
    """A random string of a terminal's byte DFA, using alphabet bytes where possible."""
    for _ in range(20):
        s, out = dfa.start, bytearray()
        while True:
            if dfa.accepting[s] and (len(out) >= max_len or rng.random() < 0.4):
                return bytes(out)
            row = dfa.trans[s]
            choices = [b for b in alphabet if row[b] >= 0] or [b for b in range(256) if row[b] >= 0]
            if not choices or len(out) > 3 * max_len:
                break
            b = rng.choice(choices)
            out.append(b)
            s = int(row[b])
    return None


def random_sentence(grammar, rng: random.Random, alphabet: str, depth: int = 4) -> bytes | None:
    """A random word of the grammar (random derivation, random lexemes, spaces between if ignored)."""
    spec = grammar.compiled.spec
    tables = grammar.compiled.tables
    by_name = {t.name: t for t in spec.terminals}
    rules: dict = {}
    for lhs, rhs in spec.rules:
        rules.setdefault(lhs, []).append(rhs)
    alpha = sorted(set(alphabet.encode("utf-8")))
    sep = b" " if spec.ignore else b""
    out: list[bytes] = []

    def expand(sym: str, d: int) -> bool:
        if sym in by_name:
            lex = random_lexeme(by_name[sym].dfa, rng, bytes(alpha))
            if lex is None:
                return False
            out.append(lex)
            return True
        options = rules.get(sym, [])
        if not options:
            return False
        if d <= 0:
            options = sorted(options, key=len)[:1]
        rhs = rng.choice(options)
        return all(expand(s, d - 1) for s in rhs)

    if not expand(spec.start, depth) or len(out) > 12:
        return None
    data = sep.join(out)
    from .oracle import accepts

    return data if accepts(spec, tables, data) else None
