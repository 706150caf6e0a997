"""Real Hugging Face tokenizers built offline from `quicktok-v1`'s vocabularies.

quicktok ships the byte-identical Llama-3, Qwen3, cl100k and o200k vocabularies. We turn
each into a `PreTrainedTokenizerFast` (byte-level BPE with the encoding's own
pre-tokenisation pattern and special tokens), so users and tests get exactly what
``AutoTokenizer.from_pretrained("meta-llama/Meta-Llama-3-8B")`` would give, with no network.

    >>> tok = load_tokenizer("llama3")
    >>> tok.encode("def f(x):", add_special_tokens=False)
    [755, 282, 2120, 1680]

Built tokenizers are cached under ``$GUIDED_CACHE`` (default ``~/.cache/guided``).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["ENCODINGS", "load_tokenizer", "cache_dir"]


@dataclass(frozen=True)
class EncodingSpec:
    quicktok_name: str
    pattern: str
    bos: str | None
    eos: str
    pad: str | None = None
    nfc: bool = False  # Qwen normalises text to NFC before tokenising
    end_tokens: tuple[str, ...] = field(default_factory=tuple)  # extra ids that end a chat turn


_LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_CL100K_PATTERN = (
    r"'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]++[\r\n]*"
    r"|\s*[\r\n]|\s+(?!\S)|\s+"
)
_O200K_PATTERN = "|".join(
    [
        r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
        r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
        r"\p{N}{1,3}",
        r" ?[^\s\p{L}\p{N}]+[\r\n/]*",
        r"\s*[\r\n]+",
        r"\s+(?!\S)",
        r"\s+",
    ]
)

ENCODINGS: dict[str, EncodingSpec] = {
    "llama3": EncodingSpec(
        "llama3", _LLAMA3_PATTERN, "<|begin_of_text|>", "<|end_of_text|>",
        end_tokens=("<|eot_id|>", "<|eom_id|>"),
    ),
    "qwen3": EncodingSpec(
        "qwen3", _QWEN_PATTERN, None, "<|endoftext|>", pad="<|endoftext|>", nfc=True,
        end_tokens=("<|im_end|>",),
    ),
    "cl100k": EncodingSpec("cl100k_base", _CL100K_PATTERN, None, "<|endoftext|>"),
    "o200k": EncodingSpec("o200k_base", _O200K_PATTERN, None, "<|endoftext|>"),
}


def cache_dir() -> Path:
    """Where guided caches built tokenizers and vocabulary tables."""
    root = os.environ.get("GUIDED_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "guided")
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _special_tokens(enc) -> dict[str, int]:
    return {name: enc.encode_single_token(name) for name in enc.special_tokens_set}


def _build_backend(spec: EncodingSpec):
    """A `tokenizers.Tokenizer` equal to the original (byte-level BPE, no unknown token)."""
    import quicktok
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import BPE
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    enc = quicktok.get_encoding(spec.quicktok_name)
    specials = sorted(_special_tokens(enc).items(), key=lambda kv: kv[1])
    special_ids = {i for _, i in specials}
    ranks: dict[bytes, int] = {}
    for i in range(enc.max_token_value + 1):
        if i in special_ids:
            continue
        try:
            ranks[enc.decode_single_token_bytes(i)] = i
        except KeyError:  # cl100k has unused ids (e.g. 100256): they stay holes, as in the original
            pass
    byte_to_char = bytes_to_unicode()

    def as_str(b: bytes) -> str:
        return "".join(byte_to_char[x] for x in b)

    # Merges in rank order: a BPE merge (l, r) exists for every split of a token whose halves
    # are both tokens; with ignore_merges the result is the same as tiktoken's rank-based BPE.
    merges = []
    for token, rank in ranks.items():
        if len(token) < 2:
            continue
        local = [
            (ranks[token[:i]], ranks[token[i:]], token[:i], token[i:])
            for i in range(1, len(token))
            if token[:i] in ranks and token[i:] in ranks
        ]
        local.sort()
        merges.extend((rank, l, r) for _, _, l, r in local)
    merges.sort(key=lambda m: m[0])
    vocab = {as_str(b): r for b, r in ranks.items()}
    # Specials sit in the model vocabulary at their own ids, so registering them below as added
    # tokens keeps those ids (even where the id space has holes).
    vocab.update(specials)
    backend = Tokenizer(BPE(vocab, [(as_str(l), as_str(r)) for _, l, r in merges], fuse_unk=False))
    backend.model.ignore_merges = True
    if spec.nfc:
        backend.normalizer = normalizers.NFC()
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(spec.pattern), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    backend.decoder = decoders.ByteLevel()
    post = [processors.ByteLevel(trim_offsets=False)]
    if spec.bos is not None:  # like the original Llama-3 tokenizer: prepend BOS
        bos_id = dict(specials)[spec.bos]
        post.append(
            processors.TemplateProcessing(
                single=f"{spec.bos} $A", pair=f"{spec.bos} $A {spec.bos} $B", special_tokens=[(spec.bos, bos_id)]
            )
        )
    backend.post_processor = processors.Sequence(post)
    backend.add_special_tokens([AddedToken(name, normalized=False, special=True) for name, _ in specials])
    return backend


@functools.lru_cache(maxsize=None)
def _tokenizer_dir(name: str) -> Path:
    import quicktok

    spec = ENCODINGS[name]
    path = cache_dir() / "tokenizers" / f"{name}-quicktok-{quicktok.__version__}"
    if not (path / "tokenizer.json").exists():
        from transformers import PreTrainedTokenizerFast

        tok = PreTrainedTokenizerFast(
            tokenizer_object=_build_backend(spec),
            bos_token=spec.bos,
            eos_token=spec.eos,
            pad_token=spec.pad,
            clean_up_tokenization_spaces=False,
            model_max_length=131072,
        )
        tmp = path.with_name(path.name + f".tmp{os.getpid()}")
        tok.save_pretrained(tmp)
        os.replace(tmp, path) if not path.exists() else None
    return path


@functools.lru_cache(maxsize=None)
def load_tokenizer(name: str = "llama3"):
    """A real Hugging Face fast tokenizer for ``name`` in ``ENCODINGS`` (llama3, qwen3, cl100k, o200k).

    Loaded once per process and shared (do not mutate it; ``copy.deepcopy`` it first).

    >>> load_tokenizer("qwen3").eos_token
    '<|endoftext|>'
    """
    if name not in ENCODINGS:
        raise ValueError(f"unknown encoding {name!r}; choose one of {sorted(ENCODINGS)}")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(_tokenizer_dir(name)))


def end_token_ids(tokenizer) -> set[int]:
    """Ids that end generation for this tokenizer: its EOS plus known end-of-turn tokens."""
    ids = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    specials = {t.content: i for i, t in tokenizer.added_tokens_decoder.items() if t.special}
    for spec in ENCODINGS.values():
        for name in (spec.eos, *spec.end_tokens):
            if name in specials:
                ids.add(int(specials[name]))
    return ids
