"""The call-arity monitor with the real jedi-language-server."""

from __future__ import annotations

import numpy as np
import pytest
from monitor_helpers import HEADER, assert_mask_exact

from guided.monitors import ArityMonitor
from guided.monitors.arity import parse_parameters

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def in_translate(py_session_factory, llama3_vocab):
    """Prefix ends inside `origin.translate(` (dx, dy=0.0, *, scale=1.0)."""
    session = py_session_factory(HEADER + "moved = origin.translate(", wait_s=20.0)
    return ArityMonitor(session).start(llama3_vocab)


def test_signature_comes_from_the_server(in_translate):
    sig = in_translate.state[2][-1][0]
    assert sig.max_positional == 2
    assert sig.keyword_names == {b"dx", b"dy", b"scale"}
    assert [name for _, name, _ in sig.required_positional] == [b"dx"]


@pytest.mark.parametrize(
    "args, ok",
    [
        (b"1.0)", True),
        (b"1.0, 2.0)", True),
        (b"dx=1.0)", True),
        (b"1.0, scale=2.0)", True),
        (b"1.0, 2.0, scale=3.0)", True),
        (b"(1.0), [2.0, 3.0][0])", True),
        (b"'a, b', 2.0)", True),
        (b"*args)", True),
        (b"1.0, 2.0, 3.0", False),  # a third positional argument
        (b"1.0, 2.0, sc4", False),  # past the bound only a keyword may start
        (b"1.0, 2.0, zz=", False),  # ...and only a parameter's name
        (b")", False),  # dx is required
        (b"dy=1.0)", False),  # still no dx
        (b"1.0,, 2.0", False),
        (b"1.0]", False),
    ],
)
def test_arity_rule(in_translate, args, ok):
    assert (in_translate.advance_bytes(args) is not None) is ok


def test_nested_calls_have_their_own_signature(in_translate):
    assert in_translate.advance_bytes(b"edge.length(), 1.0)") is not None
    assert in_translate.advance_bytes(b"edge.length(1.0), 1.0)") is None  # length() takes none
    assert in_translate.advance_bytes(b"max(1.0, 2.0, 3.0), 1.0)") is not None  # *args: unbounded


def test_masks_are_exact(in_translate, llama3_vocab):
    rng = np.random.default_rng(1)
    for text in [b"", b"1.0", b"1.0, 2.0, ", b"1.0, 2.0, sc", b"1.0, 2.0, scale", b"1.0, 2.0, scale=", b"edge.length("]:
        state = in_translate.advance_bytes(text)
        assert state is not None, text
        assert_mask_exact(state, llama3_vocab, rng, n_random=400)


def test_definitions_are_not_calls(py_session_factory, llama3_vocab):
    state = ArityMonitor(py_session_factory(HEADER, wait_s=20.0)).start(llama3_vocab)
    assert state.advance_bytes(b"def total(a, b, c, d, e):\n    return a\n") is not None
    assert state.advance_bytes(b"x = total(1, 2, 3, 4, 5)\n") is not None  # *points
    assert state.advance_bytes(b"p = Point(1.0, 2.0, 3.0)\n") is None  # __init__(x, y)


def test_parse_parameters_of_labels():
    sig = parse_parameters("def f(a, b: int = 1, /, c=2, *args, d, e=3, **kw) -> None", "python")
    assert sig.max_positional is None and sig.any_keyword
    assert sig.required_keyword == {b"d"}
    assert [(i, n, po) for i, n, po in sig.required_positional] == [(0, b"a", True)]
    ts = parse_parameters("scale(factor: number, label?: string, cb: (a: number, b: string) => void): Circle", "typescript")
    assert ts.max_positional == 3 and ts.keyword_names == frozenset()
    assert [n for _, n, _ in ts.required_positional] == [b"factor", b"cb"]
