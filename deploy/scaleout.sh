#!/usr/bin/env bash
# Scale-out proof on one machine: three convd replicas on loopback behind Debian's nginx
# (deploy/nginx/convd.conf.template, as production would run it), wrk POSTing 1080p images
# to /v1/convolve through nginx, one replica killed with SIGKILL mid-run (and started again
# later). Reports throughput, latency, failed requests and how nginx spread and retried them.
#
#   deploy/scaleout.sh
#   DURATION=60 KILL_AT=20 RESTART_AT=40 CONC=6 deploy/scaleout.sh
#
# Installs nginx and wrk from Debian when missing; builds target/release/convd (cargo).
# Everything listens on 127.0.0.1 only. Files (config, logs) go to target/scaleout/.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-60}        # seconds of load
KILL_AT=${KILL_AT:-20}          # seconds into the load: kill -9 replica 2
RESTART_AT=${RESTART_AT:-40}    # seconds into the load: start replica 2 again (0 = never)
CONC=${CONC:-6}                 # concurrent connections of wrk
LB_PORT=${LB_PORT:-18280}
PORTS=(${PORTS:-18281 18282 18283})
THREADS=${THREADS:-1}           # compute threads per replica (this box may have few cores)
export CONVD_IMAGE=${CONVD_IMAGE:-bench/data/astronaut_1080p.png}
export CONVD_SPEC=${CONVD_SPEC:-'{"preset":"gaussian","size":5,"sigma":1.2,"channels":"each","padding":"same","output":{"normalize":"clamp"}}'}
TEMPLATE=${TEMPLATE:-deploy/nginx/convd.conf.template}
PREFIX=$PWD/target/scaleout
BIN=$PWD/target/release/convd

need=()
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx)
command -v wrk >/dev/null || need+=(wrk)
if [ ${#need[@]} -gt 0 ]; then
  echo "-- installing ${need[*]} from Debian"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
[ "${SKIP_BUILD:-0}" = 1 ] || cargo build --release --quiet --bin convd

rm -rf "$PREFIX"
mkdir -p "$PREFIX"/tmp/{body,proxy,fastcgi,uwsgi,scgi}
chmod -R 1777 "$PREFIX/tmp"   # nginx's workers may run as another user when started as root

declare -A PIDS=()
NGINX_PID=""
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -z "$NGINX_PID" ] || kill "$NGINX_PID" 2>/dev/null || true
  wait 2>/dev/null || true
}
trap cleanup EXIT

start_replica() { # $1 = index
  local port=${PORTS[$1]}
  CONVD_THREADS=$THREADS CONVD_LOG_FORMAT=json CONVD_LOG_LEVEL=warn \
    "$BIN" --bind "127.0.0.1:$port" >>"$PREFIX/replica$(( $1 + 1 )).log" 2>&1 &
  PIDS[$1]=$!
  for _ in $(seq 100); do
    curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && return 0
    sleep 0.05
  done
  echo "scaleout.sh: replica on $port did not become ready" >&2; exit 1
}

for i in "${!PORTS[@]}"; do start_replica "$i"; done

servers=""
for p in "${PORTS[@]}"; do
  servers+="        server 127.0.0.1:$p max_fails=2 fail_timeout=5s;"$'\n'
done
awk -v prefix="$PREFIX" -v listen="127.0.0.1:$LB_PORT" -v servers="${servers%$'\n'}" '
  { gsub("@PREFIX@", prefix); gsub("@LISTEN@", listen) }
  /@UPSTREAM_SERVERS@/ { print servers; next }
  { print }' "$TEMPLATE" >"$PREFIX/nginx.conf"
"$NGINX" -t -q -p "$PREFIX" -c "$PREFIX/nginx.conf"
"$NGINX" -p "$PREFIX" -c "$PREFIX/nginx.conf" -g 'daemon off;' &
NGINX_PID=$!
for _ in $(seq 100); do
  curl -fsS "http://127.0.0.1:$LB_PORT/readyz" >/dev/null 2>&1 && break
  sleep 0.05
done

echo "-- $(nproc) cores; ${#PORTS[@]} replicas (CONVD_THREADS=$THREADS) on ${PORTS[*]} behind nginx :$LB_PORT"
echo "-- wrk: $CONC connections, ${DURATION}s, POST /v1/convolve $(basename "$CONVD_IMAGE") (1 image, 5x5 gaussian per channel, PNG out)"
echo "-- kill -9 replica 2 (:${PORTS[1]}) at ${KILL_AT}s$([ "$RESTART_AT" -gt 0 ] && echo ", start it again at ${RESTART_AT}s")"
t0=$(date +%s.%N)
since() { awk -v a="$t0" -v b="$1" 'BEGIN { printf "%.1f", b - a }'; }
wrk -t2 -c"$CONC" -d"${DURATION}s" --timeout 40s -s deploy/loadgen/convolve.lua \
  "http://127.0.0.1:$LB_PORT" >"$PREFIX/wrk.txt" 2>&1 &
WRK=$!
sleep "$KILL_AT"
kill -9 "${PIDS[1]}"; wait "${PIDS[1]}" 2>/dev/null || true
t_kill=$(date +%s.%N)
echo "-- $(since "$t_kill")s: killed replica 2 (pid ${PIDS[1]})"
unset 'PIDS[1]'
if [ "$RESTART_AT" -gt 0 ]; then
  sleep $(( RESTART_AT - KILL_AT ))
  start_replica 1
  t_restart=$(date +%s.%N)
  echo "-- $(since "$t_restart")s: replica 2 started again (pid ${PIDS[1]})"
fi
wait "$WRK"

result=$(grep '^RESULT' "$PREFIX/wrk.txt" || { cat "$PREFIX/wrk.txt" >&2; exit 1; })
declare -A R=()
for kv in ${result#RESULT }; do R[${kv%%=*}]=${kv#*=}; done
failed=$(( R[non2xx] + R[connect_err] + R[read_err] + R[write_err] + R[timeout] ))

echo
echo "== through nginx: ${R[requests]} requests in ${R[secs]}s = ${R[rps]} req/s"
echo "   latency p50 ${R[p50_ms]} ms, p90 ${R[p90_ms]} ms, p99 ${R[p99_ms]} ms, max ${R[max_ms]} ms"
echo "   failed: $failed (non-2xx ${R[non2xx]}, connect ${R[connect_err]}, read ${R[read_err]}, write ${R[write_err]}, timeout ${R[timeout]})"
awk -F'"' '
  { split($1, f, " "); n++
    if (f[2] == 499) cut++; else if (f[2] != 200) bad++
    k = split($2, a, /, /); if (k > 1) retried++
    served[a[k]]++ }
  END {
    printf "   nginx log: %d requests: %d retried on another replica, %d answered non-200 (499 excluded), %d cut off by the end of the run (499)\n", n, retried, bad, cut
    for (s in served) printf "     answered by %s: %d\n", s, served[s]
  }' "$PREFIX/access.log"
grep -h 'upstream' "$PREFIX/error.log" | sed -E 's/^.*\] [0-9#]+: \*[0-9]+ //; s/, client:.*upstream: "([^"]*)".*/ (\1)/' \
  | sort | uniq -c | sed 's/^/     nginx: /' || true
[ "$failed" -eq 0 ] && echo "== OK: no request failed" || { echo "== FAIL: $failed requests failed"; exit 1; }
