#!/usr/bin/env bash
# Allocator comparison: RSS of convd over a long load run and an idle period after it.
#
#   bench/alloc.sh [BINARY...]        # default: target/release/convd
#
# For each binary: start it on loopback, POST 1080p images to /v1/convolve with wrk for
# LOAD_SECS at CONC connections, then leave it idle for IDLE_SECS, sampling VmRSS every
# second. Prints one line per binary: idle RSS before, peak, at the end of the load, after
# the idle period, plus throughput and CPU used. Samples go to $OUT/<name>.csv.
# Build the variants to compare yourself (e.g. with and without the #[global_allocator] in
# src/main.rs) and copy each binary aside first.
# Needs wrk (apt-get install wrk). Loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."

LOAD_SECS=${LOAD_SECS:-90}
IDLE_SECS=${IDLE_SECS:-20}
CONC=${CONC:-6}
PORT=${PORT:-18180}
OUT=${OUT:-target/alloc}
export CONVD_IMAGE=${CONVD_IMAGE:-bench/data/astronaut_1080p.png}
[ $# -gt 0 ] || set -- target/release/convd
command -v wrk >/dev/null || { echo "alloc.sh: needs wrk (apt-get install wrk)" >&2; exit 1; }
mkdir -p "$OUT"

rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
cpu_secs() { awk -v hz="$(getconf CLK_TCK)" '{printf "%.1f", ($14 + $15) / hz}' "/proc/$1/stat"; }

for bin in "$@"; do
  name=$(basename "$bin")
  csv="$OUT/$name.csv"
  CONVD_LOG_LEVEL=warn "$bin" --bind "127.0.0.1:$PORT" >"$OUT/$name.log" 2>&1 &
  pid=$!
  trap 'kill $pid 2>/dev/null || true' EXIT
  for _ in $(seq 50); do
    curl -fsS "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break
    sleep 0.1
  done
  start_rss=$(rss_kib $pid)
  echo "t_s,phase,rss_kib" >"$csv"
  (
    t=0
    while kill -0 $pid 2>/dev/null; do
      phase=load; [ $t -ge "$LOAD_SECS" ] && phase=idle
      echo "$t,$phase,$(rss_kib $pid)" >>"$csv"
      sleep 1; t=$((t + 1))
    done
  ) &
  sampler=$!
  result=$(wrk -t2 -c"$CONC" -d"${LOAD_SECS}s" --timeout 30s -s deploy/loadgen/convolve.lua \
    "http://127.0.0.1:$PORT" | grep '^RESULT')
  end_rss=$(rss_kib $pid)
  sleep "$IDLE_SECS"
  idle_rss=$(rss_kib $pid)
  cpu=$(cpu_secs $pid)
  peak=$(awk -F, 'NR > 1 && $3 > m {m = $3} END {print m}' "$csv")
  kill $pid; wait $pid 2>/dev/null || true
  kill $sampler 2>/dev/null || true; wait $sampler 2>/dev/null || true
  trap - EXIT
  printf '%-16s start %4d MiB  peak %4d MiB  end-of-load %4d MiB  after %ss idle %4d MiB  cpu %ss  %s\n' \
    "$name" $((start_rss / 1024)) $((peak / 1024)) $((end_rss / 1024)) "$IDLE_SECS" \
    $((idle_rss / 1024)) "$cpu" "${result#RESULT }"
done
