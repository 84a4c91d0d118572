#!/usr/bin/env bash
# Runs every fuzz target for SECONDS (default 180) each, from its seed corpus, and prints
# the executions and any crash. Not part of CI.
#
#   fuzz/run.sh [SECONDS] [TARGET...]      # targets: spec npy multipart image
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`) and a nightly toolchain for the sanitizer
# flags; without nightly, RUSTC_BOOTSTRAP=1 lets the stable compiler accept them
# (FUZZ_TOOLCHAIN=stable). New corpus entries go to target/fuzz-corpus/<target>, not into
# the committed seeds; crashes to fuzz/artifacts/<target>/.
set -euo pipefail
cd "$(dirname "$0")"

SECS=${1:-180}
shift || true
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(spec npy multipart image)
TOOLCHAIN=${FUZZ_TOOLCHAIN:-nightly}
if [ "$TOOLCHAIN" = stable ]; then
  export RUSTC_BOOTSTRAP=1
  FUZZ=(cargo fuzz)
else
  FUZZ=(cargo "+$TOOLCHAIN" fuzz)
fi
command -v cargo-fuzz >/dev/null || { echo "run.sh: cargo install cargo-fuzz" >&2; exit 1; }

fail=0
for t in "${TARGETS[@]}"; do
  work="../target/fuzz-corpus/$t"
  mkdir -p "$work" "artifacts/$t"
  echo "== $t: ${SECS}s"
  log="../target/fuzz-$t.log"
  if "${FUZZ[@]}" run "$t" "$work" "corpus/$t" -- \
      -max_total_time="$SECS" -max_len=65536 -rss_limit_mb=2048 -timeout=10 \
      -print_final_stats=1 >"$log" 2>&1; then
    :
  else
    echo "   CRASH (see $log and fuzz/artifacts/$t/)"
    fail=1
  fi
  grep -E "^stat::number_of_executed_units|^stat::peak_rss_mb|^#[0-9]+.*DONE" "$log" | sed 's/^/   /' || true
done
exit $fail
