#!/usr/bin/env bash
# convd against ONNX Runtime, OpenCV (and PaddlePaddle) on this machine:
#   1. builds the release convd (SKIP_BUILD=1 skips it; pass --convd PATH for another binary);
#   2. makes bench/.venv with the peers, pinned (WITH_PADDLE=1 adds paddlepaddle, ~1 GB);
#   3. runs bench/compare.py with this script's arguments, e.g.
#        bench/run_compare.sh --rounds 7 --reps 5 --only stem,dw3 --no-e2e
#      (Markdown table on stdout, raw figures in bench/results/compare-<UTC time>.json).
# Run it on a quiet machine: compare.py warns when the load average is above 0.5 or a
# cargo/rustc process is running.
set -euo pipefail
cd "$(dirname "$0")/.."

NUMPY=2.4.6
OPENCV=5.0.0.93          # opencv-python-headless
ONNX=1.23.2
ONNXRUNTIME=1.32.0
PADDLE=3.3.1             # paddlepaddle (CPU), only with WITH_PADDLE=1

if [ "${SKIP_BUILD:-0}" != 1 ]; then
  cargo build --release --bin convd
fi

[ -x bench/.venv/bin/python ] || python3 -m venv bench/.venv
pip=(bench/.venv/bin/python -m pip install -q --disable-pip-version-check)
"${pip[@]}" "numpy==$NUMPY" "opencv-python-headless==$OPENCV" "onnx==$ONNX" "onnxruntime==$ONNXRUNTIME"
if [ "${WITH_PADDLE:-0}" = 1 ]; then
  "${pip[@]}" "paddlepaddle==$PADDLE"
fi

mkdir -p bench/data bench/results
[ -f bench/data/astronaut_1080p.png ] || cp ../shared/fixtures/images/astronaut_1080p.png bench/data/ 2>/dev/null \
  || { echo "bench/data/astronaut_1080p.png missing (needed by the end-to-end section; --no-e2e skips it)" >&2; }

[ "${SKIP_BUILD:-0}" = 1 ] || sleep 5   # let the build's load settle
exec bench/.venv/bin/python bench/compare.py "$@"
