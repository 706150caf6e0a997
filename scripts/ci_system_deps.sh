#!/usr/bin/env bash
# System packages the test suite needs beyond Python (called by .ci/run before the tests).
#   neovim: the editor that drives the IDE backend in tests/serve/test_ide.py (Debian's `nvim`)
# Idempotent and instant when everything is already installed.
set -euo pipefail

missing=()
command -v nvim >/dev/null 2>&1 || missing+=(neovim)
if [ "${#missing[@]}" -eq 0 ]; then
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "ci_system_deps: need ${missing[*]} but apt-get is not available; install them with your package manager" >&2
    exit 1
fi
sudo=()
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        sudo=(sudo -n)
    else
        echo "ci_system_deps: need ${missing[*]}; run as root or install sudo" >&2
        exit 1
    fi
fi
echo "ci_system_deps: installing ${missing[*]} ..." >&2
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq >/dev/null
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
command -v nvim >/dev/null 2>&1 || { echo "ci_system_deps: neovim did not install" >&2; exit 1; }
echo "ci_system_deps: $(nvim --version | head -1)" >&2
