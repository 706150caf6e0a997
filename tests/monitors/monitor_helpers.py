"""Helpers shared by the monitor tests (paths of the test projects, mask checks)."""

from __future__ import annotations

import pathlib

import numpy as np

DATA = pathlib.Path(__file__).parent / "data"
PYPROJ = DATA / "pyproj"
TSPROJ = DATA / "tsproj"
DRAW = PYPROJ / "geometry" / "draw.py"
HEADER = DRAW.read_text().split("\n\ndef paint")[0] + "\n"  # imports + origin/edge, no paint()


def allowed_bytes(state, vocab) -> set[bytes]:
    return {vocab.token_bytes[i] for i in np.flatnonzero(state.allowed_mask()) if i not in vocab.eos_ids}


def assert_mask_exact(state, vocab, rng, n_random: int = 800) -> None:
    """mask[i] == (advance(i) is not None) on all allowed ids, a sample of rejected and random ids."""
    mask = state.allowed_mask()
    allowed = np.flatnonzero(mask)
    rejected = np.flatnonzero(~mask)
    ids = set(rng.choice(allowed, size=min(len(allowed), 400), replace=False).tolist())
    ids |= set(rng.choice(rejected, size=min(len(rejected), 400), replace=False).tolist())
    ids |= set(rng.integers(0, vocab.size, size=n_random).tolist())
    ids |= set(vocab.eos_ids)
    bad = [i for i in sorted(ids) if bool(mask[i]) != (state.advance(i) is not None)]
    assert not bad, [vocab.token_bytes[i] for i in bad[:10]]
