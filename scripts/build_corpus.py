"""Build the training corpus for guided's own small models, from text present on every machine.

Documents (deterministic, in a fixed order):
  * the Python standard library's sources (``*.py`` under ``sysconfig``'s stdlib, tests and
    site-packages excluded);
  * every valid test instance of ``bench/maskbench/*.jsonl.gz``, printed compactly
    (``json.dumps(data, ensure_ascii=False)``, the benchmark's own form) and pretty-printed
    (``indent=2``);
  * the JSON Schema test suite (``bench/json-schema-test-suite``): each schema and each valid
    instance, printed both ways.

Each document is tokenised with the Llama-3 tokenizer as ``<|begin_of_text|> text <|end_of_text|>``.
A document goes to the held-out split when a hash of its *name* says so (about 2%), so both
printings of one JSON instance land in the same split.

    python scripts/build_corpus.py --out runs/corpus          # writes train.npy, valid.npy, manifest.json
    python scripts/build_corpus.py --out runs/corpus --limit 50   # a tiny slice (tests)

Output: ``train.npy`` / ``valid.npy`` (uint32 token ids, documents concatenated in a seeded
shuffled order) and ``manifest.json`` (counts, bytes, Python version, token-array hashes).
The standard library differs between Python versions, so the corpus is reproducible per
Python version; the manifest records which one built it.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import platform
import random
import sys
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
DEFAULT_BENCH = Path(os.environ.get("GUIDED_BENCH", "/work/shared/bench"))
HELD_OUT_PERCENT = 2
SHUFFLE_SEED = 1234

_TEST_DIRS = {"test", "tests", "idle_test"}


@dataclass(frozen=True)
class Document:
    name: str  # stable identifier, also decides the split
    source: str  # "stdlib" | "maskbench" | "jsonschema-suite"
    text: str

    @property
    def held_out(self) -> bool:
        return is_held_out(self.name)


def is_held_out(name: str) -> bool:
    """Deterministic ~2% split by a hash of the document's name (not of its text)."""
    digest = hashlib.sha256(name.encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "little") % 100 < HELD_OUT_PERCENT


def stdlib_documents(root: Path | None = None) -> list[Document]:
    """The standard library's ``.py`` sources, tests excluded, sorted by relative path."""
    root = Path(root or sysconfig.get_paths()["stdlib"])
    docs = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        parts = set(rel.parts[:-1])
        if "site-packages" in parts or "__pycache__" in parts or parts & _TEST_DIRS:
            continue
        if rel.name.startswith("test_"):
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue  # a handful of files are deliberately not UTF-8
        if text.strip():
            docs.append(Document(f"stdlib/{rel.as_posix()}", "stdlib", text))
    return docs


def _json_printings(name: str, source: str, data) -> list[Document]:
    # The compact form is exactly what MaskBench's accept rule tokenises.
    compact = json.dumps(data, ensure_ascii=False)
    pretty = json.dumps(data, ensure_ascii=False, indent=2)
    docs = [Document(name, source, compact)]
    if pretty != compact:
        docs.append(Document(name, source, pretty))
    return docs


def maskbench_documents(bench: Path = DEFAULT_BENCH) -> list[Document]:
    """Valid MaskBench instances, compact and pretty-printed."""
    docs = []
    for path in sorted((bench / "maskbench").glob("*.jsonl.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            for line_no, line in enumerate(f):
                record = json.loads(line)
                for i, test in enumerate(record.get("tests", [])):
                    if test.get("valid"):
                        name = f"maskbench/{path.name}/{line_no}/{i}"
                        docs.extend(_json_printings(name, "maskbench", test["data"]))
    return docs


def schema_suite_documents(bench: Path = DEFAULT_BENCH) -> list[Document]:
    """JSON Schema test suite: each group's schema and its valid instances, both printings."""
    docs = []
    root = bench / "json-schema-test-suite"
    for path in sorted(root.rglob("*.json")):
        rel = path.relative_to(root).as_posix()
        for g, group in enumerate(json.loads(path.read_text(encoding="utf-8"))):
            docs.extend(_json_printings(f"suite/{rel}/{g}/schema", "jsonschema-suite", group["schema"]))
            for i, test in enumerate(group.get("tests", [])):
                if test.get("valid"):
                    docs.extend(_json_printings(f"suite/{rel}/{g}/{i}", "jsonschema-suite", test["data"]))
    return docs


def all_documents(bench: Path = DEFAULT_BENCH, stdlib_root: Path | None = None) -> list[Document]:
    return stdlib_documents(stdlib_root) + maskbench_documents(bench) + schema_suite_documents(bench)


def load_llama3_tokenizer():
    """The project's Llama-3 tokenizer (built offline from quicktok's vocabulary)."""
    sys.path.insert(0, str(REPO))
    from guided.tokenizers import load_tokenizer

    return load_tokenizer("llama3")


def token_byte_lengths(tokenizer) -> np.ndarray:
    """Bytes each id stands for (byte-level BPE: one character per byte; specials count 0)."""
    lengths = np.zeros(len(tokenizer), dtype=np.int64)
    special = set(tokenizer.all_special_ids) | set(tokenizer.added_tokens_decoder)
    for token, i in tokenizer.get_vocab().items():
        if i not in special:
            lengths[i] = len(token)
    return lengths


def tokenize_documents(docs: list[Document], tokenizer, seed: int = SHUFFLE_SEED) -> np.ndarray:
    """``<bos> text <eos>`` per document, documents in a seeded shuffled order, as uint32."""
    order = list(range(len(docs)))
    random.Random(seed).shuffle(order)
    texts = [docs[i].text for i in order]
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    pieces: list[np.ndarray] = []
    for start in range(0, len(texts), 256):
        encoded = tokenizer(texts[start : start + 256], add_special_tokens=False, verbose=False)["input_ids"]
        for ids in encoded:
            pieces.append(np.asarray([bos, *ids, eos], dtype=np.uint32))
    return np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.uint32)


def build(out: Path, bench: Path = DEFAULT_BENCH, limit: int | None = None, tokenizer=None) -> dict:
    """Write ``train.npy``, ``valid.npy`` and ``manifest.json`` under ``out``; return the manifest.

    ``limit`` keeps only the ``limit`` shortest documents of each source for training and the
    ``limit // 10`` (at least 1) shortest for held-out (a tiny, fast slice for tests).
    """
    t0 = time.time()
    tokenizer = tokenizer or load_llama3_tokenizer()
    sources = [stdlib_documents(), maskbench_documents(bench), schema_suite_documents(bench)]
    splits: dict[str, list[Document]] = {"train": [], "valid": []}
    for source_docs in sources:
        for split, held_out in (("train", False), ("valid", True)):
            chosen = [d for d in source_docs if d.held_out == held_out]
            if limit is not None:
                keep = max(1, limit // 10) if held_out else limit
                chosen = sorted(chosen, key=lambda d: (len(d.text), d.name))[:keep]
            splits[split] += chosen
    out.mkdir(parents=True, exist_ok=True)
    lengths = token_byte_lengths(tokenizer)
    manifest: dict = {
        "python": platform.python_version(),
        "tokenizer": "llama3 (guided.tokenizers, quicktok-v1 vocabulary)",
        "vocab_size": len(tokenizer),
        "held_out_percent": HELD_OUT_PERCENT,
        "shuffle_seed": SHUFFLE_SEED,
        "limit": limit,
        "splits": {},
    }
    for split, split_docs in splits.items():
        ids = tokenize_documents(split_docs, tokenizer)
        text_bytes = sum(len(d.text.encode("utf-8")) for d in split_docs)
        token_bytes = int(lengths[ids.astype(np.int64)].sum()) if len(ids) else 0
        # Byte-level BPE round-trips, so the ids carry exactly the documents' bytes.
        assert token_bytes == text_bytes, (split, token_bytes, text_bytes)
        np.save(out / f"{split}.npy", ids)
        by_source: dict[str, dict[str, int]] = {}
        for d in split_docs:
            entry = by_source.setdefault(d.source, {"documents": 0, "bytes": 0})
            entry["documents"] += 1
            entry["bytes"] += len(d.text.encode("utf-8"))
        manifest["splits"][split] = {
            "documents": len(split_docs),
            "tokens": int(len(ids)),
            "bytes": text_bytes,
            "sha256": hashlib.sha256(ids.tobytes()).hexdigest(),
            "by_source": by_source,
        }
    manifest["build_seconds"] = round(time.time() - t0, 1)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "corpus")
    parser.add_argument("--bench", type=Path, default=DEFAULT_BENCH)
    parser.add_argument("--limit", type=int, default=None, help="shortest documents per source and split (tiny slice)")
    args = parser.parse_args(argv)
    manifest = build(args.out, args.bench, args.limit)
    print(json.dumps(manifest, indent=2))


if __name__ == "__main__":
    main()
