"""A fixed sample of MaskBench's real-world schemas, judged by the benchmark's own rule.

Each instance is written ``json.dumps(data, ensure_ascii=False)`` (no reordering) and fed
to the constraint.  Soundness is absolute: no instance marked invalid may be accepted.
Completeness is measured: most sampled schemas must pass outright (the rest fail only
by refusing a keyword or by a documented completeness gap).  Objects take their properties
in any order (``property_order="any"``), as the benchmark does.

The data is read from ``shared/bench/maskbench`` next to the repository (or under
``$GUIDED_SHARED``).
"""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import pytest

from guided.json_schema import JSONSchema, UnsatisfiableSchemaError, UnsupportedSchemaError

# $GUIDED_SHARED names the shared folder where a checkout (a git worktree) has none beside it
SHARED = Path(os.environ.get("GUIDED_SHARED") or Path(__file__).resolve().parents[2] / ".." / "shared")
MASKBENCH = SHARED / "bench" / "maskbench"
PER_GROUP = 4  # schemas per group file
MAX_SCHEMA_CHARS = 3000  # keeps the sample quick to compile

pytestmark = pytest.mark.skipif(not MASKBENCH.is_dir(), reason=f"MaskBench data not found at {MASKBENCH}")


def _quick(schema) -> bool:
    """Skip schemas with host-name formats (their automaton takes a second or two to build)."""
    return '"hostname"' not in json.dumps(schema)


def _sample() -> list[dict]:
    rows = []
    for path in sorted(MASKBENCH.glob("*.jsonl.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            group = [json.loads(line) for line in f]
        small = [r for r in group if len(json.dumps(r["schema"])) <= MAX_SCHEMA_CHARS and r["tests"] and _quick(r["schema"])]
        step = max(1, len(small) // PER_GROUP)
        rows.extend(small[::step][:PER_GROUP])
    return rows


SAMPLE = _sample() if MASKBENCH.is_dir() else []


def _judge(row, vocab) -> str:
    try:
        state = JSONSchema(row["schema"], property_order="any").start(vocab)  # as benchmarks/maskbench.py
    except (UnsupportedSchemaError, UnsatisfiableSchemaError):
        return "compile_error"
    outcome = "pass"
    for test in row["tests"]:
        text = json.dumps(test["data"], ensure_ascii=False)
        after = state.advance_bytes(text.encode("utf-8"))
        accepted = after is not None and after.is_accepting()
        if accepted and not test["valid"]:
            return "invalidation_error"
        if not accepted and test["valid"]:
            outcome = "validation_error"
    return outcome


@pytest.fixture(scope="module")
def outcomes(vocab):
    return {row["id"]: _judge(row, vocab) for row in SAMPLE}


def test_no_invalid_instance_is_accepted(outcomes):
    unsound = [sid for sid, o in outcomes.items() if o == "invalidation_error"]
    assert not unsound, f"invalid instances accepted for {unsound}"


def test_most_sampled_schemas_pass(outcomes):
    passed = sum(o == "pass" for o in outcomes.values())
    assert len(outcomes) >= 30
    assert passed >= 0.9 * len(outcomes), {sid: o for sid, o in outcomes.items() if o != "pass"}
