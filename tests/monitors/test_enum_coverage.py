"""The match/enum coverage monitor with the real jedi-language-server."""

from __future__ import annotations

import numpy as np
import pytest
from monitor_helpers import HEADER, assert_mask_exact

from guided.monitors import EnumCoverageMonitor

pytestmark = pytest.mark.timeout(120)

OPEN = HEADER + "\n\ndef paint(color: Color) -> str:\n    match color:\n"


@pytest.fixture(scope="module")
def in_match(py_session_factory, llama3_vocab):
    return EnumCoverageMonitor(py_session_factory(OPEN, wait_s=20.0)).start(llama3_vocab)


RED = b"        case Color.RED:\n            return 'r'\n"


def test_block_cannot_end_before_every_member_is_covered(in_match):
    state = in_match.advance_bytes(RED)
    assert set(state.state[2][1]) == {b"RED", b"GREEN", b"BLUE"}
    assert state.advance_bytes(b"    return 'x'\n") is None  # dedent: GREEN and BLUE missing
    assert state.advance_bytes(b"\n    # comment lines do not end it\n") is not None
    more = b"        case Color.GREEN | Color.BLUE:\n            return 'gb'\n"
    assert state.advance_bytes(more + b"    return 'x'\n") is not None


def test_wildcards_cover_and_guards_do_not(in_match):
    state = in_match.advance_bytes(RED)
    assert state.advance_bytes(b"        case _:\n            pass\n    return 'x'\n") is not None
    assert state.advance_bytes(b"        case other:\n            pass\nx = 1\n") is not None
    guarded = b"        case Color.GREEN | Color.BLUE if True:\n            pass\n    return 'x'\n"
    assert state.advance_bytes(guarded) is None


def test_masks_are_exact_at_a_line_start(in_match, llama3_vocab):
    rng = np.random.default_rng(2)
    state = in_match.advance_bytes(RED)
    for text in [b"", b"  ", b"    ", b"        case Color.GR", b"        case Color.GREEN:"]:
        assert_mask_exact(state.advance_bytes(text), llama3_vocab, rng, n_random=400)
    mask = state.allowed_mask()
    assert not mask[llama3_vocab.bytes_to_id[b"return"]]
    assert mask[llama3_vocab.bytes_to_id[b"       "]]


def test_a_match_over_a_non_enum_is_free(py_session_factory, llama3_vocab):
    prefix = HEADER + "\n\ndef f(p: Point):\n    match p:\n"
    state = EnumCoverageMonitor(py_session_factory(prefix, wait_s=20.0)).start(llama3_vocab)
    assert state.advance_bytes(b"        case origin.x:\n            pass\n    return 1\n") is not None
