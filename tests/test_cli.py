"""The ``guided`` command, run in a subprocess as users run it; outputs are validated."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from model_subprocess import MODEL_ARGS, REPO, subprocess_env

TIMEOUT_S = 300

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "pattern": "^[A-Za-z ]{1,6}$"},  # ASCII: few tokens
        "age": {"type": "string", "pattern": "^[0-9]{1,2}$"},  # integers may legally be 48.000…; the tiny model loops there
    },
    "required": ["name", "age"],
    "additionalProperties": False,
}
SUM_GRAMMAR = 'expr: NUMBER ("+" NUMBER)*\nNUMBER: /[1-9][0-9]?/\n'


def _command() -> list[str]:
    """The installed ``guided`` script next to this Python when there is one, else ``-m guided.cli``."""
    script = Path(sys.executable).with_name("guided")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "guided.cli"]


def guided(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*_command(), *args], input=stdin, capture_output=True, text=True, cwd=REPO, env=subprocess_env(),
                          timeout=TIMEOUT_S)


def test_help_reads_well():
    top = guided("--help")
    assert top.returncode == 0
    for command in ("generate", "serve", "bench", "ide"):
        assert command in top.stdout
    gen = guided("generate", "--help")
    assert gen.returncode == 0
    for option in ("--schema", "--regex", "--grammar", "--sampler", "--particles", "--draft", "--model", "examples:"):
        assert option in gen.stdout
    assert "awrs" in gen.stdout and "smc" in gen.stdout
    assert guided("serve", "--help").returncode == 0
    assert guided("--version").stdout.startswith("guided ")


def test_generate_regex_with_smc_reads_the_prompt_from_stdin():
    out = guided("generate", *MODEL_ARGS, "--regex", "[0-9]{1,3}", "--sampler", "smc", "--particles", "3",
                 "--max-tokens", "6", "--seed", "0", "--output", "json", "-", stdin="x = ")
    assert out.returncode == 0, out.stderr
    record = json.loads(out.stdout)
    assert record["finished"] and re.fullmatch("[0-9]{1,3}", record["text"]), record
    assert record["sampler"] == "smc"


def test_generate_json_schema_output_validates(tmp_path):
    jsonschema = pytest.importorskip("jsonschema")
    schema_file = tmp_path / "person.json"
    schema_file.write_text(json.dumps(PERSON))
    out = guided("generate", *MODEL_ARGS, "--schema", str(schema_file), "--sampler", "masking", "--max-tokens", "200",
                 "--seed", "1", "A person: ")
    assert out.returncode == 0, out.stderr
    jsonschema.validate(json.loads(out.stdout), PERSON)


def test_generate_lark_grammar_output_parses(tmp_path):
    import lark

    grammar_file = tmp_path / "sum.lark"
    grammar_file.write_text(SUM_GRAMMAR)
    out = guided("generate", *MODEL_ARGS, "--grammar", str(grammar_file), "--start", "expr", "--max-tokens", "8",
                 "--seed", "2", "--output", "json", "1+2+")
    assert out.returncode == 0, out.stderr
    record = json.loads(out.stdout)
    if record["finished"]:
        lark.Lark(SUM_GRAMMAR, start="expr").parse(record["text"])
    else:  # the budget ran out first: a prefix of the language, and a note on stderr
        assert re.fullmatch(r"[1-9][0-9]?(\+[1-9][0-9]?)*\+?", record["text"]), record
        assert "--max-tokens" in out.stderr


def test_bad_constraints_exit_2_with_one_clear_line(tmp_path):
    out = guided("generate", *MODEL_ARGS, "--regex", "(unclosed", "x")
    assert out.returncode == 2
    assert "invalid regex" in out.stderr and "Traceback" not in out.stderr
    out = guided("generate", *MODEL_ARGS, "--schema", str(tmp_path / "missing.json"), "x")
    assert out.returncode == 2 and "missing.json" in out.stderr and "Traceback" not in out.stderr
    usage = guided("generate", "--regex", "a", "--json", "x")  # two constraints: argparse says so
    assert usage.returncode == 2 and "not allowed with" in usage.stderr


def test_bench_prints_a_table_and_writes_json(tmp_path):
    out_file = tmp_path / "bench.json"
    out = guided("bench", *MODEL_ARGS, "--regex", "[a-z]{1,4}", "--samplers", "none,awrs,masking", "--runs", "1",
                 "--max-tokens", "4", "--json-out", str(out_file))
    assert out.returncode == 0, out.stderr
    assert "tok/s" in out.stdout and "checks/tok" in out.stdout
    report = json.loads(out_file.read_text())
    assert [r["sampler"] for r in report["rows"]] == ["none", "awrs", "masking"]
    for row in report["rows"]:
        assert row["tokens"] >= 1 and row["tokens_per_s"] > 0
