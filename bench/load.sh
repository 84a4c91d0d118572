#!/usr/bin/env bash
# Load test of the release binary with wrk (apt-get install wrk), on loopback.
#
#   bench/load.sh                 # builds target/release/convd, runs the three phases
#   LOAD_NO_BUILD=1 LOAD_SECS=20 bench/load.sh    # shorter, reuse the binary as built
#
# Phases (the server runs with its defaults: one compute thread per core, running jobs =
# threads, queue_depth 32, so admission holds threads + 32 jobs):
#   1. mixed    LOAD_SECS (60) s, 32 connections: 24 send small tensors (JSON, input
#               [1,3,32,32], 8 3×3 kernels) to /v1/conv2d, 8 send the 1080p photo
#               (1.8 MB PNG) to /v1/convolve (gray Sobel → PNG). Only 200 allowed.
#   2. overload OVERLOAD_SECS (20) s, 64 + 64 connections, more than admission holds:
#               200 or the designed 503 `overloaded`, nothing else.
#   3. recovery RECOVERY_SECS (20) s, as phase 1: only 200 again.
# VmRSS is sampled every 0.5 s; the run fails if RSS grows across phases (recovery peak >
# 1.25 × mixed peak + 64 MiB) or VmHWM exceeds LOAD_MAX_RSS_MB (1024).
# Figures: throughput, p50/p99 latency, statuses and wrk errors per phase and kind.
set -euo pipefail
cd "$(dirname "$0")/.."

LOAD_SECS=${LOAD_SECS:-60}
OVERLOAD_SECS=${OVERLOAD_SECS:-20}
RECOVERY_SECS=${RECOVERY_SECS:-20}
LOAD_MAX_RSS_MB=${LOAD_MAX_RSS_MB:-1024}
BIN=${CONVD_BIN:-target/release/convd}
IMAGE=${LOAD_IMAGE:-bench/data/astronaut_1080p.png}
OUT=${OUT:-target/load}

command -v wrk >/dev/null || { echo "load.sh: needs wrk (apt-get install wrk)" >&2; exit 1; }
[ -f "$IMAGE" ] || { echo "load.sh: $IMAGE missing" >&2; exit 1; }
[ -n "${LOAD_NO_BUILD:-}" ] || cargo build --release
mkdir -p "$OUT"

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
URL="http://127.0.0.1:$PORT"
CONVD_LOG_LEVEL=warn "$BIN" --bind "127.0.0.1:$PORT" >"$OUT/server.log" 2>&1 &
PID=$!
SAMPLER=""
cleanup() {
  [ -z "$SAMPLER" ] || kill "$SAMPLER" 2>/dev/null || true
  kill "$PID" 2>/dev/null || true
  wait "$PID" 2>/dev/null || true
}
trap cleanup EXIT
for _ in $(seq 100); do
  curl -fsS "$URL/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -fsS "$URL/readyz"; echo

status_kib() { awk -v k="$1:" '$1 == k {print $2}' "/proc/$PID/status"; }
PHASE_FILE="$OUT/phase"
echo idle >"$PHASE_FILE"
echo "t_s,phase,rss_kib" >"$OUT/rss.csv"
(
  start=$(date +%s.%N)
  while kill -0 "$PID" 2>/dev/null; do
    now=$(date +%s.%N)
    echo "$(echo "$now - $start" | bc),$(cat "$PHASE_FILE"),$(status_kib VmRSS)" >>"$OUT/rss.csv"
    sleep 0.5
  done
) &
SAMPLER=$!
idle_rss=$(status_kib VmRSS)

# run PHASE SECS TENSOR_CONNS IMAGE_CONNS: both generators at once; RESULT lines to OUT.
run() {
  local phase=$1 secs=$2 tc=$3 ic=$4
  echo "$phase" >"$PHASE_FILE"
  echo "== $phase: ${secs}s, $tc tensor + $ic image connections"
  LOAD_KIND=tensor wrk -t2 -c"$tc" -d"${secs}s" --timeout 30s -s bench/load.lua "$URL" \
    >"$OUT/$phase.tensor.txt" &
  local w1=$!
  LOAD_KIND=image LOAD_IMAGE="$IMAGE" wrk -t2 -c"$ic" -d"${secs}s" --timeout 30s \
    -s bench/load.lua "$URL" >"$OUT/$phase.image.txt"
  wait $w1
  grep -h '^RESULT' "$OUT/$phase.tensor.txt" "$OUT/$phase.image.txt" | sed "s/^RESULT /  /"
  echo "$phase-end" >"$PHASE_FILE"
  sleep 1
  echo "  VmRSS at end $(( $(status_kib VmRSS) / 1024 )) MiB"
}

run mixed "$LOAD_SECS" 24 8
run overload "$OVERLOAD_SECS" 64 64
run recovery "$RECOVERY_SECS" 24 8
hwm=$(status_kib VmHWM)
end_rss=$(status_kib VmRSS)
kill "$SAMPLER" 2>/dev/null || true; wait "$SAMPLER" 2>/dev/null || true; SAMPLER=""

peak() { awk -F, -v p="$1" '$2 == p && $3 > m {m = $3} END {print m + 0}' "$OUT/rss.csv"; }
p_mixed=$(peak mixed); p_over=$(peak overload); p_rec=$(peak recovery)
echo "== memory: idle $((idle_rss / 1024)) MiB; peak VmRSS mixed $((p_mixed / 1024)) MiB," \
  "overload $((p_over / 1024)) MiB, recovery $((p_rec / 1024)) MiB; end $((end_rss / 1024)) MiB;" \
  "VmHWM $((hwm / 1024)) MiB (samples: $OUT/rss.csv)"
grep -q -i panic "$OUT/server.log" && { echo "FAIL: panic in the server log"; exit 1; }

fail=0
check() { # check PHASE KIND ALLOWED_STATUS_REGEX
  local line
  line=$(grep -h '^RESULT' "$OUT/$1.$2.txt")
  for kv in $line; do
    case $kv in
      err_*=0) ;;
      err_*) echo "FAIL: $1/$2: wrk error $kv"; fail=1 ;;
      s[0-9]*=*) [[ ${kv%%=*} =~ ^s($3)$ ]] || { echo "FAIL: $1/$2: unexpected status $kv"; fail=1; } ;;
    esac
  done
}
for kind in tensor image; do
  check mixed $kind 200
  check overload $kind '200|503'
  check recovery $kind 200
done
grep -qh 's503=' "$OUT"/overload.*.txt || echo "NOTE: no 503 during overload (admission never full)"
if [ "$p_rec" -gt $((p_mixed * 5 / 4 + 65536)) ]; then
  echo "FAIL: RSS grew: recovery peak $((p_rec / 1024)) MiB vs mixed $((p_mixed / 1024)) MiB"; fail=1
fi
if [ "$hwm" -gt $((LOAD_MAX_RSS_MB * 1024)) ]; then
  echo "FAIL: VmHWM $((hwm / 1024)) MiB > $LOAD_MAX_RSS_MB MiB"; fail=1
fi
[ $fail -eq 0 ] && echo "== load test passed"
exit $fail
