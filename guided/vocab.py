"""The vocabulary layer: the exact bytes every token id stands for.

Every constraint works on bytes. :class:`Vocabulary` is built once per tokenizer (and cached
on disk, keyed by the tokenizer's content), from any Hugging Face tokenizer:

- byte-level BPE (GPT-2, Llama-3, Qwen): token strings map back through GPT-2's byte alphabet;
- SentencePiece (Llama-2, Mistral, Gemma): ``▁`` is a space and ``<0xNN>`` is a raw byte;
- added tokens: special ones (BOS/EOS/pad/reserved) stand for no bytes, others for their text.

    >>> vocab = Vocabulary.from_tokenizer(load_tokenizer("llama3"))
    >>> vocab.token_bytes[755]
    b'def'
    >>> vocab.trie.ids_with_prefix(b"de")[:3]
"""

from __future__ import annotations

import hashlib
import json
import os
import weakref
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

__all__ = ["Vocabulary", "ByteTrie", "VocabularyError"]

_FORMAT_VERSION = 2


class VocabularyError(ValueError):
    """The tokenizer's vocabulary cannot be mapped to bytes."""


def _gpt2_unicode_to_byte() -> dict[str, int]:
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    return {ch: b for b, ch in bytes_to_unicode().items()}


class ByteTrie:
    """All tokens sorted by their bytes: every byte prefix owns a contiguous range.

    >>> trie.ids_with_prefix(b'"')          # ids of every token starting with a quote
    >>> trie.next_bytes(b"de")              # the bytes that extend b"de" inside some token
    """

    def __init__(self, token_bytes: list[bytes], usable: np.ndarray):
        ids = np.flatnonzero(usable)
        order = sorted(ids.tolist(), key=token_bytes.__getitem__)
        self.sorted_ids = np.asarray(order, dtype=np.int64)
        self.sorted_bytes: list[bytes] = [token_bytes[i] for i in order]

    def prefix_range(self, prefix: bytes) -> tuple[int, int]:
        """The half-open range of ``sorted_ids`` whose tokens start with ``prefix``."""
        import bisect

        lo = bisect.bisect_left(self.sorted_bytes, prefix)
        if not prefix:
            return 0, len(self.sorted_bytes)
        # Smallest byte string greater than every string with this prefix.
        stripped = prefix.rstrip(b"\xff")
        if not stripped:
            return lo, len(self.sorted_bytes)
        upper = stripped[:-1] + bytes([stripped[-1] + 1])
        hi = bisect.bisect_left(self.sorted_bytes, upper, lo)
        return lo, hi

    def ids_with_prefix(self, prefix: bytes) -> np.ndarray:
        """Ids of every (non-special) token whose bytes start with ``prefix``."""
        lo, hi = self.prefix_range(prefix)
        return self.sorted_ids[lo:hi]

    def next_bytes(self, prefix: bytes) -> list[int]:
        """The distinct bytes that follow ``prefix`` in some token (the trie node's children)."""
        lo, hi = self.prefix_range(prefix)
        out: list[int] = []
        k = len(prefix)
        i = lo
        while i < hi:
            b = self.sorted_bytes[i]
            if len(b) == k:
                i += 1
                continue
            out.append(b[k])
            i = self.prefix_range(prefix + b[k : k + 1])[1]
        return out


@dataclass(eq=False)
class Vocabulary:
    """Exact byte strings of a tokenizer's ids, which ids are special, which end generation.

    Hashable by identity (constraints cache their compiled tables per vocabulary).
    """

    token_bytes: list[bytes]
    special_ids: frozenset[int]
    eos_ids: frozenset[int]
    bos_id: int | None = None
    pad_id: int | None = None
    name: str = ""

    def __post_init__(self) -> None:
        if not self.eos_ids:
            raise VocabularyError("tokenizer has no end-of-sequence token")
        self.special_ids = frozenset(self.special_ids) | frozenset(self.eos_ids)

    @property
    def size(self) -> int:
        """Length of every mask: one past the largest id."""
        return len(self.token_bytes)

    @cached_property
    def lengths(self) -> np.ndarray:
        return np.fromiter((len(b) for b in self.token_bytes), dtype=np.int64, count=self.size)

    @cached_property
    def offsets(self) -> np.ndarray:
        out = np.zeros(self.size + 1, dtype=np.int64)
        np.cumsum(self.lengths, out=out[1:])
        return out

    @cached_property
    def flat_bytes(self) -> np.ndarray:
        return np.frombuffer(b"".join(self.token_bytes), dtype=np.uint8)

    @cached_property
    def usable(self) -> np.ndarray:
        """Tokens that stand for at least one byte of output (not special, not empty)."""
        mask = self.lengths > 0
        mask[list(self.special_ids)] = False
        return mask

    @cached_property
    def eos_mask(self) -> np.ndarray:
        mask = np.zeros(self.size, dtype=bool)
        mask[list(self.eos_ids)] = True
        return mask

    @cached_property
    def trie(self) -> ByteTrie:
        return ByteTrie(self.token_bytes, self.usable)

    @cached_property
    def bytes_to_id(self) -> dict[bytes, int]:
        """The id of each byte string that is a whole (non-special) token."""
        return {self.token_bytes[i]: int(i) for i in np.flatnonzero(self.usable)}

    def decode(self, ids) -> bytes:
        """Concatenated bytes of ``ids`` (specials contribute nothing)."""
        tb = self.token_bytes
        return b"".join(tb[int(i)] for i in ids)

    # -- construction -----------------------------------------------------------------
    @classmethod
    def from_tokenizer(cls, tokenizer, eos_ids=None) -> "Vocabulary":
        """Build (or load from cache) the vocabulary of a Hugging Face tokenizer.

        ``eos_ids`` overrides which ids end generation (default: the tokenizer's EOS and
        the known end-of-turn tokens it has, e.g. Llama-3's ``<|eot_id|>``).
        """
        if isinstance(tokenizer, Vocabulary):
            return tokenizer
        key = id(tokenizer)
        hit = _MEMORY.get(key)
        if hit is not None and hit[0]() is tokenizer and eos_ids is None:
            return hit[1]
        vocab = _load_or_build(tokenizer, eos_ids)
        if eos_ids is None:
            try:
                _MEMORY[key] = (weakref.ref(tokenizer), vocab)
            except TypeError:
                pass
        return vocab


_MEMORY: dict[int, tuple] = {}


def _tokenizer_json(tokenizer) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise VocabularyError(
            f"{type(tokenizer).__name__} is not a fast tokenizer; load it with use_fast=True"
        )
    return backend.to_str()


def _is_byte_level(state: dict) -> bool:
    def has(node, kind):
        if not node:
            return False
        if node.get("type") == kind:
            return True
        return any(has(sub, kind) for key in ("pretokenizers", "decoders", "processors") for sub in node.get(key, []) or [])

    return has(state.get("decoder"), "ByteLevel") or has(state.get("pre_tokenizer"), "ByteLevel")


def _piece_bytes(piece: str, byte_level: bool, u2b: dict[str, int]) -> bytes:
    if byte_level:
        try:
            return bytes(u2b[ch] for ch in piece)
        except KeyError:
            return piece.encode("utf-8")  # a non-byte-level added token stored in the model vocab
    if len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):
        try:
            return bytes([int(piece[3:5], 16)])
        except ValueError:
            pass
    return piece.replace("\u2581", " ").encode("utf-8")


def _build(tokenizer, state: dict) -> tuple[list[bytes], set[int]]:
    model = state.get("model", {})
    byte_level = _is_byte_level(state)
    u2b = _gpt2_unicode_to_byte() if byte_level else {}
    vocab = model.get("vocab")
    if isinstance(vocab, list):  # Unigram: [[piece, score], ...]
        pieces = {p[0]: i for i, p in enumerate(vocab)}
    elif isinstance(vocab, dict):
        pieces = vocab
    else:
        raise VocabularyError(f"unsupported tokenizer model type {model.get('type')!r}")
    added = state.get("added_tokens", [])
    size = max([*pieces.values(), *(t["id"] for t in added), len(tokenizer) - 1]) + 1
    token_bytes: list[bytes] = [b""] * size
    special: set[int] = set(range(size)) - set(pieces.values()) - {t["id"] for t in added}  # holes
    for piece, i in pieces.items():
        token_bytes[i] = _piece_bytes(piece, byte_level, u2b)
    unk = model.get("unk_token")
    if unk is not None and unk in pieces:
        special.add(pieces[unk])
    for t in added:
        if t.get("special", False):
            token_bytes[t["id"]] = b""
            special.add(t["id"])
        else:
            token_bytes[t["id"]] = t["content"].encode("utf-8")
    for i in getattr(tokenizer, "all_special_ids", []) or []:
        special.add(int(i))
        token_bytes[int(i)] = b""
    return token_bytes, special


def _load_or_build(tokenizer, eos_ids) -> Vocabulary:
    from guided.tokenizers import cache_dir, end_token_ids

    text = _tokenizer_json(tokenizer)
    digest = hashlib.sha256(text.encode()).hexdigest()[:24]
    path = cache_dir() / "vocab" / f"{digest}-v{_FORMAT_VERSION}.npz"
    if path.exists():
        data = np.load(path)
        offsets = data["offsets"]
        flat = data["flat"].tobytes()
        token_bytes = [flat[offsets[i] : offsets[i + 1]] for i in range(len(offsets) - 1)]
        special = set(data["special"].tolist())
    else:
        token_bytes, special = _build(tokenizer, json.loads(text))
        path.parent.mkdir(parents=True, exist_ok=True)
        lengths = np.fromiter((len(b) for b in token_bytes), dtype=np.int64, count=len(token_bytes))
        offsets = np.zeros(len(token_bytes) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        tmp = Path(str(path) + f".tmp{os.getpid()}.npz")
        np.savez(
            tmp,
            offsets=offsets,
            flat=np.frombuffer(b"".join(token_bytes), dtype=np.uint8),
            special=np.asarray(sorted(special), dtype=np.int64),
        )
        os.replace(tmp, path)
    ends = set(eos_ids) if eos_ids is not None else end_token_ids(tokenizer)
    return Vocabulary(
        token_bytes=token_bytes,
        special_ids=frozenset(special),
        eos_ids=frozenset(int(i) for i in ends),
        bos_id=getattr(tokenizer, "bos_token_id", None),
        pad_id=getattr(tokenizer, "pad_token_id", None),
        name=getattr(tokenizer, "name_or_path", "") or "",
    )
