#!/usr/bin/env bash
# Issue #13: convd's float TIFF and WebP read by the tools users open them with — tifffile
# and Pillow (pinned, in the gitignored venv tests/python/.venv, created on first use) —
# against the debug binary (CONVD_BIN overrides). Run by .ci/run after `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/../.."

VENV=tests/python/.venv
BIN=${CONVD_BIN:-target/debug/convd}
PINS="pillow==11.3.0 tifffile==2025.5.10 numpy==2.2.6"

[ -x "$BIN" ] || { echo "python check: $BIN not found; run \`cargo build\` first" >&2; exit 2; }
if ! "$VENV/bin/python" -c 'import PIL, tifffile, numpy' 2>/dev/null; then
  echo "-- installing $PINS into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check $PINS
fi

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
CONVD_LOG_LEVEL=warn CONVD_THREADS=2 "$BIN" --bind "127.0.0.1:$PORT" >/dev/null 2>&1 &
SERVER=$!
trap 'kill "$SERVER" 2>/dev/null || true; wait "$SERVER" 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  curl -fsS "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done
"$VENV/bin/python" tests/python/check_formats.py "http://127.0.0.1:$PORT"
