#!/usr/bin/env bash
# Install typescript-language-server (and the TypeScript compiler it drives) from npm into
# guided's cache, where guided.monitors looks for it. Needs node and npm; no other downloads.
#
#   bash scripts/install_ts_server.sh            # -> ${GUIDED_CACHE:-~/.cache/guided}/ts-server
#   GUIDED_TS_SERVER_DIR=/opt/ts bash scripts/install_ts_server.sh
set -euo pipefail

prefix="${GUIDED_TS_SERVER_DIR:-${GUIDED_CACHE:-$HOME/.cache/guided}/ts-server}"
bin="$prefix/node_modules/.bin/typescript-language-server"

if ! command -v npm >/dev/null 2>&1 || ! command -v node >/dev/null 2>&1; then
  echo "install_ts_server: node/npm not found; TypeScript monitors will be unavailable" >&2
  exit 0
fi
if [ -x "$bin" ]; then
  echo "$bin"
  exit 0
fi
mkdir -p "$prefix"
npm install --prefix "$prefix" --no-audit --no-fund --loglevel=error \
  typescript@5.5.4 typescript-language-server@4.3.3 >&2
echo "$bin"
