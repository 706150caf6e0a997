"""Packed token bitmasks, filled for a batch of constraint states at once.

The layout is the one XGrammar and llguidance use, so an engine applies a whole batch with
one kernel: row ``i`` is ``ceil(width / 32)`` int32 words, bit ``t % 32`` of word ``t // 32``
set iff token ``t`` is allowed in ``states[i]``.

    >>> out = allocate_bitmask(len(states), vocab.size)     # int32 [rows, words], reused each step
    >>> fill_bitmasks(states, out)                          # rows in parallel threads
    >>> torch.from_numpy(out)                               # e.g. for xgrammar.apply_token_bitmask_inplace

Rows run in worker threads; what each row costs beyond a cached mask (the packing itself,
and the compiled trie walks of a cold mask) runs with the GIL released, so rows overlap.
A state kind computes its row with ``fill_bitmask(row)``; kinds whose masks are not safe to
compute from several threads (``parallel_masks = False``, the default) are filled in the
calling thread, one after another.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Sequence

import numpy as np

from guided._compiled import compiled_kernels

__all__ = ["bitmask_words", "allocate_bitmask", "pack_into", "pack_mask", "unpack_mask", "set_tokens", "clear_tokens",
           "fill_bitmasks"]


def bitmask_words(size: int) -> int:
    """Words of one row for a vocabulary (or logits width) of ``size``."""
    return (size + 31) // 32


def allocate_bitmask(rows: int, size: int) -> np.ndarray:
    """A zeroed int32 bitmask ``[rows, bitmask_words(size)]``."""
    return np.zeros((rows, bitmask_words(size)), dtype=np.int32)


def pack_mask(mask: np.ndarray) -> np.ndarray:
    """Pack a bool mask into int32 words, bit ``i % 32`` of word ``i // 32`` is token ``i``."""
    out = np.empty(bitmask_words(len(mask)), dtype=np.int32)
    pack_into(mask, out)
    return out


def unpack_mask(bitmask: np.ndarray, size: int) -> np.ndarray:
    """Inverse of :func:`pack_mask`."""
    return np.unpackbits(bitmask.view(np.uint8), bitorder="little")[:size].astype(bool)


def set_tokens(row: np.ndarray, tokens: Sequence[int]) -> None:
    """Allow ``tokens`` in the packed int32 ``row`` (bit ``t % 32`` of word ``t // 32``).

        >>> set_tokens(out[i], vocab.eos_ids)
    """
    words = row.view(np.uint32)
    for t in tokens:
        words[t >> 5] |= np.uint32(1 << (t & 31))


def clear_tokens(row: np.ndarray, tokens: Sequence[int]) -> None:
    """Forbid ``tokens`` in the packed int32 ``row``."""
    words = row.view(np.uint32)
    for t in tokens:
        words[t >> 5] &= np.uint32(~(1 << (t & 31)) & 0xFFFFFFFF)


def pack_into(mask: np.ndarray, row: np.ndarray) -> None:
    """Write bool ``mask`` packed into the int32 ``row`` (words past the mask are zeroed).

    Compiled (GIL released) when numba is installed, else ``np.packbits``.
    """
    n_words = bitmask_words(len(mask))
    if n_words > len(row):
        raise ValueError(f"a row of {len(row)} words cannot hold a mask of {len(mask)} tokens")
    kernel = _pack_kernel()
    if kernel is None:
        padded = np.zeros(n_words * 32, dtype=bool)
        padded[: len(mask)] = mask
        row[:n_words] = np.packbits(padded, bitorder="little").view(np.int32)
        row[n_words:] = 0
        return
    if mask.dtype != np.bool_ or not mask.flags.c_contiguous or mask.ctypes.data % 8:
        mask = np.ascontiguousarray(mask, dtype=np.bool_).copy()
    n8 = len(mask) // 8
    kernel(mask[: n8 * 8].view(np.uint64), mask[n8 * 8 :], row.view(np.uint32))


# 8 bool bytes read as one little-endian uint64 (byte i is 0 or 1): multiplying by this
# moves byte i's bit to bit 56 + i with no carries, so ``>> 56`` leaves the 8 bits in order
_GATHER = 0x0102040810204080


def _pack_words(m64, tail, out):
    n_full = m64.shape[0] // 4
    gather = np.uint64(_GATHER)
    shift = np.uint64(56)
    for w in range(n_full):
        v = np.uint64(0)
        for k in range(4):
            v |= ((m64[4 * w + k] * gather) >> shift) << np.uint64(8 * k)
        out[w] = np.uint32(v)
    # the last, partial word: leftover 8-byte groups, then single bytes
    rest = m64.shape[0] - 4 * n_full
    if rest or tail.shape[0]:
        v = np.uint64(0)
        for k in range(rest):
            v |= ((m64[4 * n_full + k] * gather) >> shift) << np.uint64(8 * k)
        for j in range(tail.shape[0]):
            if tail[j]:
                v |= np.uint64(1) << np.uint64(8 * rest + j)
        out[n_full] = np.uint32(v)
        n_full += 1
    for w in range(n_full, out.shape[0]):
        out[w] = np.uint32(0)


_UNSET = object()
_KERNEL = _UNSET


def _pack_kernel():
    global _KERNEL
    if _KERNEL is _UNSET:
        kernels = compiled_kernels(_pack_words)
        _KERNEL = None if kernels is None else kernels[0]
    return _KERNEL


_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def _pool() -> ThreadPoolExecutor:
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max_workers=max(1, os.cpu_count() or 1), thread_name_prefix="guided-masks")
        return _POOL


def default_threads() -> int:
    """Worker threads a batch uses by default: the usable cores."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not on Linux
        return max(1, os.cpu_count() or 1)


def fill_bitmasks(states: Sequence, out: np.ndarray, *, rows: Sequence[int] | None = None, threads: int | None = None) -> np.ndarray:
    """Fill row ``i`` of the int32 bitmask ``out`` with ``states[i]``'s allowed tokens.

    ``out`` is ``[rows, >= bitmask_words(vocab.size)]`` (wider rows, e.g. for a padded logits
    width, get zeros past the vocabulary); ``rows``: the row of each state (default
    ``0 .. len(states) - 1``, as a serving engine's request slots may be); other rows are left
    alone.  ``threads``: worker threads (default: the usable cores; 1 runs inline).

        >>> out = allocate_bitmask(3, vocab.size)
        >>> fill_bitmasks([s1, s2, s3], out)
    """
    if out.dtype != np.int32 or out.ndim != 2:
        raise ValueError(f"out must be a 2-D int32 array, got {out.dtype} with {out.ndim} dims")
    rows = list(range(len(states))) if rows is None else [int(r) for r in rows]
    if len(rows) != len(states):
        raise ValueError(f"{len(states)} states but {len(rows)} rows")
    if rows and not 0 <= min(rows) <= max(rows) < out.shape[0]:
        raise ValueError(f"rows must lie in [0, {out.shape[0]})")
    threads = default_threads() if threads is None else max(1, int(threads))
    parallel = [i for i, s in enumerate(states) if getattr(s, "parallel_masks", False)]
    serial = [i for i, s in enumerate(states) if not getattr(s, "parallel_masks", False)]
    for i in serial:
        states[i].fill_bitmask(out[rows[i]])
    # a row whose mask is cached costs a pack (~15 us, GIL released): the calling thread
    # does those; only rows with work to do (walks, parser steps) go to threads, where the
    # compiled walks of several rows overlap.  Handing cheap rows to threads as well would
    # make them fight over the GIL for nothing.
    cached, cold = [], []
    for i in parallel:
        mask = states[i].cached_mask()
        if mask is None:
            cold.append(i)
        else:
            cached.append((i, mask))
    futures = []
    if threads > 1 and len(cold) > 1:
        chunks = [cold[k::threads] for k in range(min(threads, len(cold)))]  # interleaved: neighbours often share a schema

        def run(chunk: list) -> None:
            for i in chunk:
                states[i].fill_bitmask(out[rows[i]])

        futures = [_pool().submit(run, chunk) for chunk in chunks]
    else:
        for i in cold:
            states[i].fill_bitmask(out[rows[i]])
    for i, mask in cached:
        pack_into(mask, out[rows[i]])
    wait(futures)  # every row is done (or failed) before an error is raised
    for future in futures:
        future.result()
    return out
