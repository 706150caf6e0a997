"""The batch bitmask path (``fill_bitmasks``: packed rows, worker threads, the engine lock let go
around compiled walks) gives, token for token, the masks ``allowed_mask()`` gives one state at
a time on separately compiled constraints.  States come from random walks over grammars and
schemas; batches mix constraint kinds; cold batches make threads walk fresh lexer states at once."""

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import guided
from guided.bitmask import allocate_bitmask, bitmask_words, fill_bitmasks, pack_mask, unpack_mask
from guided.grammars import Grammar

ARITH = r"""
start: sum
sum: product (("+" | "-") product)*
product: atom (("*" | "/") atom)*
atom: NUMBER | NAME | "(" sum ")"
NUMBER: /[0-9]+(\.[0-9]+)?/
NAME: /[a-z_][a-z_0-9]*/
%ignore " "
"""

_KEYS = st.sampled_from(["id", "name", "tags", "price", "note", "a", "ab", "kind", "ok"])


def _leaf() -> st.SearchStrategy:
    return st.one_of(
        st.just({"type": "string"}),
        st.just({"type": "integer"}),
        st.just({"type": "boolean"}),
        st.just({"type": "number"}),
        st.builds(lambda n: {"type": "string", "maxLength": n}, st.integers(1, 6)),
        st.builds(lambda vs: {"enum": vs}, st.lists(st.sampled_from(["x", "y z", "é", 1, None]), min_size=1, max_size=3, unique=True)),
    )


SCHEMAS = st.recursive(
    _leaf(),
    lambda inner: st.one_of(
        st.builds(lambda item: {"type": "array", "items": item}, inner),
        st.builds(
            lambda props, req: {"type": "object", "properties": props, "required": [k for k in props if req]},
            st.dictionaries(_KEYS, inner, min_size=1, max_size=3),
            st.booleans(),
        ),
    ),
    max_leaves=5,
)


def _walk(constraint, vocab, rng, steps: int) -> list[list[int]]:
    """Token-id prefixes of one random walk (each prefix a state), on its own compiled copy."""
    state = constraint.start(vocab)
    prefixes, ids = [[]], []
    for _ in range(steps):
        allowed = np.flatnonzero(state.allowed_mask())
        allowed = allowed[~np.isin(allowed, sorted(vocab.eos_ids))]
        if not len(allowed):
            break
        t = int(rng.choice(allowed))
        state = state.advance(t)
        ids.append(t)
        prefixes.append(list(ids))
    return prefixes


def _states(make, vocab, prefixes):
    """States after each prefix, on a freshly made constraint (nothing of it cached yet)."""
    start = make().start(vocab)
    return [start.advance_many(p) for p in prefixes]


def _reference_rows(make, vocab, prefixes):
    return [pack_mask(s.allowed_mask()) for s in _states(make, vocab, prefixes)]


def test_pack_mask_is_the_xgrammar_layout():
    rng = np.random.default_rng(0)
    for n in (1, 7, 8, 9, 31, 32, 33, 64, 65, 1000, 128_256):
        mask = rng.random(n) < 0.5
        padded = np.zeros(bitmask_words(n) * 32, dtype=bool)
        padded[:n] = mask
        expected = np.packbits(padded, bitorder="little").view(np.int32)
        np.testing.assert_array_equal(pack_mask(mask), expected)
        np.testing.assert_array_equal(unpack_mask(pack_mask(mask), n), mask)
        ids = np.flatnonzero(mask)[:5]  # bit t % 32 of word t // 32
        assert all((int(pack_mask(mask)[t // 32]) >> (t % 32)) & 1 for t in ids.tolist())


@settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck))
@given(schemas=st.lists(SCHEMAS, min_size=2, max_size=3), seed=st.integers(0, 2**16), threads=st.sampled_from([1, 2, 4]))
def test_cold_batches_mixing_schemas_equal_single_masks(vocab, schemas, seed, threads):
    rng = np.random.default_rng(seed)
    makes = [lambda s=s: guided.JSONSchema(s) for s in schemas]
    makes.append(lambda: Grammar(ARITH))
    makes.append(lambda: guided.Regex(r"(ab|c[0-9]{1,3})+ ?"))
    makes.append(lambda: guided.Regex(r"[a-z]+") & Grammar(ARITH))  # a kind without a fast path
    jobs = []  # (make, prefix)
    for make in makes:
        for prefix in _walk(make(), vocab, rng, steps=5):
            jobs.append((make, prefix))
    order = rng.permutation(len(jobs))
    jobs = [jobs[i] for i in order]
    expected = [_reference_rows(make, vocab, [prefix])[0] for make, prefix in jobs]
    # one fresh constraint per kind, all states cold: threads walk new lexer states at once
    fresh = {id(make): make().start(vocab) for make in makes}
    states = [fresh[id(make)].advance_many(prefix) for make, prefix in jobs]
    words = bitmask_words(vocab.size)
    out = np.full((len(states) + 2, words + 3), -1, dtype=np.int32)  # wider than the vocabulary
    fill_bitmasks(states, out, threads=threads)
    for i, row in enumerate(expected):
        np.testing.assert_array_equal(out[i, :words], row)
        assert not out[i, words:].any()
    assert (out[len(states):] == -1).all()  # rows past the batch are left alone
    # warm: the same states again (cached masks), and a batch of the same state many times
    fill_bitmasks(states[::-1], out, threads=threads)
    for i, row in enumerate(expected[::-1]):
        np.testing.assert_array_equal(out[i, :words], row)


def test_shipped_grammar_states_from_random_walks(vocab):
    rng = np.random.default_rng(7)
    json_grammar = lambda: guided.load_grammar("json")  # noqa: E731
    prefixes = _walk(json_grammar(), vocab, rng, steps=12)
    expected = _reference_rows(json_grammar, vocab, prefixes)
    states = _states(json_grammar, vocab, prefixes) * 3
    out = allocate_bitmask(len(states), vocab.size)
    fill_bitmasks(states, out, threads=3)
    for i, row in enumerate(expected * 3):
        np.testing.assert_array_equal(out[i], row)


def test_rows_put_each_state_in_its_slot(vocab):
    states = [guided.Regex(r"[0-9]+").start(vocab), guided.Regex(r"ab").start(vocab)]
    out = np.full((4, bitmask_words(vocab.size)), -1, dtype=np.int32)
    fill_bitmasks(states, out, rows=[3, 1], threads=2)
    np.testing.assert_array_equal(out[3], pack_mask(states[0].allowed_mask()))
    np.testing.assert_array_equal(out[1], pack_mask(states[1].allowed_mask()))
    assert (out[[0, 2]] == -1).all()


def test_finished_and_default_kinds_fill_their_rows(vocab):
    state = guided.Regex(r"ab").start(vocab).advance_bytes(b"ab")
    eos = min(vocab.eos_ids)
    done = state.advance(eos)
    out = allocate_bitmask(2, vocab.size)
    fill_bitmasks([state, done], out)
    assert unpack_mask(out[0], vocab.size)[eos]
    assert not out[1].any()
