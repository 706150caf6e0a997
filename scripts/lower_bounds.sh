#!/usr/bin/env bash
# The core dependencies at their lower bounds (pyproject.toml's ">=" versions, exactly), in
# .venv-lower, then the core's tests there. torch stays the pinned CPU build (scripts/constraints.txt):
# a second torch is never downloaded, so torch's own lower bound is not tested here.
#   ./dev lower-bounds [PYTEST ARGS]      (a few minutes the first time; needs the package index)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv-lower
PY="$VENV/bin/python"
quiet() { "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2); }
pins="$VENV/lower-bounds.txt"
stamp="$VENV/.installed-$(cat pyproject.toml scripts/constraints.txt | sha256sum | cut -c1-16)"
[ -x "$PY" ] || python3 -m venv "$VENV"
if [ ! -f "$stamp" ]; then
    echo "setting up $VENV (core dependencies at their lower bounds) ..." >&2
    quiet "$PY" -m pip install -q --upgrade pip >/dev/null
    # "name>=X" -> "name==X" for every core dependency but torch; the constraints file keeps torch
    "$PY" - > "$pins" <<'EOF'
import re, tomllib
for dep in tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]:
    m = re.fullmatch(r"([A-Za-z0-9_.\-]+)\s*>=\s*([0-9][^,;\s]*)", dep.split("#")[0].strip())
    if m and m.group(1) != "torch":
        print(f"{m.group(1)}=={m.group(2)}")
EOF
    cat scripts/constraints.txt >> "$pins"
    quiet "$PY" -m pip install -q -c "$pins" "torch==2.13.0"
    quiet "$PY" -m pip install -q -c "$pins" -e . "pytest>=8" "pytest-timeout>=2.3" "hypothesis>=6.100"
    rm -f "$VENV"/.installed-*
    touch "$stamp"
fi
echo "core dependencies in $VENV:" >&2
"$PY" -m pip list 2>/dev/null | grep -iE "^(torch|numpy|transformers|tokenizers|safetensors|quicktok-v1|lark|interegular|pydantic|jsonschema|rich|tqdm) " >&2
# the core's tests: generate with every constraint kind, the HF LogitsProcessor, JSON Schema,
# grammars and their diagnostics, vocabularies, the embedded models, the diffusion checker
exec "$PY" -m pytest -p no:cacheprovider tests/test_generate.py tests/test_models.py tests/test_tokenizers.py tests/test_vocab.py tests/integrations/test_huggingface.py \
    tests/grammars/test_grammar.py tests/grammars/test_diagnostics.py tests/json_schema/test_schema.py \
    tests/diffusion/test_incremental.py "$@"
