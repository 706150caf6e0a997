"""The dereference monitor on a real project with the real jedi-language-server."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from guided.monitors import DereferenceMonitor
from guided.monitors.lexer import lexer_for

from monitor_helpers import HEADER, allowed_bytes, assert_mask_exact

pytestmark = pytest.mark.timeout(120)

POINT_MEMBERS = {b"x", b"y", b"norm", b"translate"}


@pytest.fixture(scope="module")
def at_origin(py_session_factory, llama3_vocab):
    """A monitor whose prefix ends right after `origin.` (a Point from another module)."""
    session = py_session_factory(HEADER + "value = origin.", wait_s=20.0)
    return DereferenceMonitor(session).start(llama3_vocab)


def test_starts_active_when_the_prefix_ends_in_a_dereference(at_origin):
    phase, candidates, partial = at_origin.state
    assert phase == "a" and partial == b""
    assert POINT_MEMBERS <= set(candidates)
    assert b"length" not in candidates  # a Segment method, not a Point one


def test_allowed_tokens_are_exactly_prefixes_of_members(at_origin, llama3_vocab):
    allowed = allowed_bytes(at_origin, llama3_vocab)
    names = set(at_origin.state[1])
    assert allowed, "some member must be reachable"
    for token in allowed:
        assert any(name.startswith(token) for name in names), token
    assert {b"norm", b"translate", b"x", b"y"} <= allowed
    assert not at_origin.is_accepting()  # `origin.` alone is not a member access


def test_prefix_closed_and_release_at_non_identifier(at_origin):
    assert at_origin.advance_bytes(b"nrm") is None
    assert at_origin.advance_bytes(b"length") is None
    state = at_origin.advance_bytes(b"no")
    assert state is not None and not state.is_accepting()
    assert state.advance_bytes(b"(") is None  # "no" is not a complete member
    done = state.advance_bytes(b"rm")
    assert done.is_accepting()
    after = done.advance_bytes(b"() + 1\n")
    assert after is not None and after.state[0] == "w"  # released: ordinary code again
    assert after.advance_bytes(b"zzz = 3\n") is not None


def test_chained_dereference_triggers_again(at_origin):
    state = at_origin.advance_bytes(b"translate(1.0).x")  # call result: not a trigger
    assert state is not None
    chained = at_origin.advance_bytes(b"x.")
    assert chained is not None and chained.state[0] == "a"  # float members
    assert b"is_integer" in chained.state[1]
    assert chained.advance_bytes(b"real") is not None
    assert chained.advance_bytes(b"norm") is None


def test_masks_are_exact(at_origin, llama3_vocab):
    rng = np.random.default_rng(0)
    for text in [b"", b"tr", b"norm", b"norm() + origin", b"x * 2  # origin.zz", b"norm() + 1.5"]:
        state = at_origin.advance_bytes(text)
        assert state is not None, text
        assert_mask_exact(state, llama3_vocab, rng)


def test_strings_comments_and_numbers_do_not_trigger(py_session_factory, llama3_vocab):
    monitor = DereferenceMonitor(py_session_factory(HEADER, wait_s=20.0))
    state = monitor.start(llama3_vocab)
    for text in [b"s = 'origin.zzz'\n", b"# origin.zzz\n", b"f = 1.5\n", b'"""origin.zzz\n"""\n']:
        assert state.advance_bytes(text) is not None, text
    assert state.advance_bytes(b"origin.zzz") is None
    assert state.advance_bytes(b"edge.start.norm()\n") is not None
    assert state.advance_bytes(b"edge.start.length()\n") is None


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mask_agrees_with_advance_along_random_paths(at_origin, llama3_vocab, data):
    """Walk a few allowed tokens at random; at every state the mask agrees with advance."""
    state = at_origin
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))
    for _ in range(3):
        mask = state.allowed_mask()
        choices = np.flatnonzero(mask & ~np.isin(np.arange(mask.size), list(llama3_vocab.eos_ids)))
        if not len(choices):
            break
        probe = rng.choice(choices, size=min(40, len(choices)), replace=False).tolist()
        probe += rng.integers(0, llama3_vocab.size, size=40).tolist()
        for token in probe:
            assert bool(mask[token]) == (state.advance(int(token)) is not None)
        state = state.advance(int(data.draw(st.sampled_from(probe[: min(40, len(choices))]))))
        assert state is not None


def test_python_lexer_tracks_strings_and_comments():
    lexer = lexer_for("python")
    assert lexer.scan(b"x = 'a.b'") == 0
    assert lexer.scan(b"x = '''a\n.b") != 0
    assert lexer.scan(b"x = '''a\n.b'''") == 0
    assert lexer.scan(b"x = 1  # c.") != 0
    assert lexer.scan(b"x = 1  # c.\n") == 0
    assert lexer.scan(b"x = '' ") == 0  # two quotes: code once a third one does not follow
    assert lexer.scan(b"x = 'it\\'s'") == 0


def test_import_check_drops_names_a_class_only_annotates(py_session_factory, llama3_vocab):
    prefix = HEADER + "from geometry.config import Settings\nvalue = Settings."
    listed = set(DereferenceMonitor(py_session_factory(prefix, wait_s=20.0)).start(llama3_vocab).state[1])
    assert {b"name", b"scale", b"describe"} <= listed  # jedi lists the annotated-only `name` too
    checked = DereferenceMonitor(py_session_factory(prefix, wait_s=20.0), import_check=True).start(llama3_vocab)
    names = set(checked.state[1])
    assert {b"scale", b"describe"} <= names and b"name" not in names  # Settings.name: AttributeError
    assert checked.advance_bytes(b"name") is None and checked.advance_bytes(b"scale\n") is not None
    # an instance receiver is left alone: `name` exists on instances
    inst = DereferenceMonitor(py_session_factory(prefix[: -len("Settings.")] + "Settings('a').name.", wait_s=20.0),
                              import_check=True)
    assert inst.start(llama3_vocab).state[0] == "a"


def test_import_check_asks_an_enum_class_for_its_members(py_session_factory, llama3_vocab):
    session = py_session_factory(HEADER + "value = Color.", wait_s=20.0)
    listed = set(DereferenceMonitor(session).start(llama3_vocab).state[1])
    assert {b"RED", b"_name_", b"value"} <= listed  # jedi lists members' attributes on the class
    names = set(DereferenceMonitor(session, import_check=True).start(llama3_vocab).state[1])
    assert {b"RED", b"GREEN", b"BLUE", b"describe"} <= names  # found through EnumType.__getattr__
    assert not {b"_name_", b"value", b"name"} & names  # Color.value: AttributeError
