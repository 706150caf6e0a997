"""Real Python files, Llama-3 tokens, the shipped Python grammar vs lark's own Python parser.

Every file lark parses is accepted at every token prefix; random single-token corruptions
are accepted exactly when lark accepts them.
"""

import random
import sysconfig
from pathlib import Path

import pytest
from lark import Lark
from lark.indenter import PythonIndenter

from guided.grammars import load_grammar

STDLIB = Path(sysconfig.get_paths()["stdlib"])
FILES = sorted((STDLIB / "json").glob("*.py")) + [STDLIB / "textwrap.py", STDLIB / "colorsys.py"]


@pytest.fixture(scope="module")
def oracle():
    return Lark.open_from_package(
        "lark", "python.lark", ["grammars"], parser="lalr", postlex=PythonIndenter(), start="file_input"
    )


def lark_accepts(oracle, text: str) -> bool:
    try:
        oracle.parse(text)
        return True
    except Exception:
        return False


def walk(state, ids):
    for k, t in enumerate(ids):
        state = state.advance(t)
        if state is None:
            return None, k
    return state, len(ids)


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_stdlib_file(path, oracle, vocab, llama3):
    text = path.read_text(encoding="utf-8")
    assert lark_accepts(oracle, text), "lark itself rejects this file; pick another"
    ids = llama3.encode(text, add_special_tokens=False)
    start = load_grammar("python").start(vocab)
    state, k = walk(start, ids)
    assert state is not None, (k, vocab.decode(ids[max(0, k - 20) : k + 1]))
    assert state.is_accepting()

    rng = random.Random(path.name)
    for _ in range(8):
        j = rng.randrange(len(ids))
        corrupted = list(ids)
        corrupted[j] = rng.randrange(128000)
        raw = vocab.decode(corrupted)
        try:
            expected = lark_accepts(oracle, raw.decode("utf-8"))
        except UnicodeDecodeError:
            expected = False
        state, _ = walk(start, corrupted)
        got = state is not None and state.is_accepting()
        assert got == expected, (j, vocab.token_bytes[corrupted[j]], vocab.decode(ids[max(0, j - 8) : j + 3]))


def test_masks_along_a_python_file(vocab, llama3):
    """The mask contains each real token (and EOS only at the end) on a short program."""
    text = (STDLIB / "colorsys.py").read_text(encoding="utf-8")[:1500]
    text = text[: text.rfind("\n\n") + 1]
    ids = llama3.encode(text, add_special_tokens=False)
    state = load_grammar("python").start(vocab)
    eos = min(vocab.eos_ids)
    for t in ids:
        mask = state.allowed_mask()
        assert mask[t], vocab.token_bytes[t]
        assert mask[eos] == state.is_accepting()
        state = state.advance(t)
    assert state.is_accepting()
