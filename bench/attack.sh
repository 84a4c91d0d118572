#!/usr/bin/env bash
# The hostile-traffic attack of issue #11 against the release binary at default settings:
# 120 × 60 MB bodies at once, then 3,000 idle connections and 50 trickled uploads for 60 s,
# then 30 s idle; /healthz polled throughout. Prints bench/attack.py's JSON report.
#
#   bench/attack.sh                 # builds target/release/convd first (SKIP_BUILD=1 skips)
#   FLOOD=40 bench/attack.sh        # fewer bodies
#
# Loopback only. Needs python3 (standard library) and a file limit above IDLE + 200.
set -euo pipefail
cd "$(dirname "$0")/.."
PORT=${PORT:-18280}
[ "${SKIP_BUILD:-0}" = 1 ] || cargo build --release --bin convd
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
CONVD_BIND=127.0.0.1:$PORT CONVD_LOG_LEVEL=warn target/release/convd &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && break
  sleep 0.1
done
python3 bench/attack.py --pid "$pid" --port "$PORT" \
  --flood "${FLOOD:-120}" --body-mb "${BODY_MB:-60}" --idle "${IDLE:-3000}" \
  --trickle "${TRICKLE:-50}" --window "${WINDOW:-60}" --rest "${REST:-30}"
kill -0 $pid && echo "server still running after the attack"
