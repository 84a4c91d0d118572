#!/usr/bin/env bash
# Builds convd (release), makes bench/.venv with the peers from PyPI (pinned), then runs
# bench/zoo_compare.py (the layer zoo and W1-W6 against ONNX Runtime and OpenCV, each in
# its own process, alternating rounds; arguments are passed to it) and the end-to-end image
# pipeline of bench/compare.py. WITH_PADDLE=1 adds paddlepaddle to compare.py's E2E venv.
# Run it on a quiet machine: zoo_compare.py warns when the load average is above 0.5.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bin convd
python3 -m venv bench/.venv
bench/.venv/bin/pip install -q numpy==2.4.6 opencv-python-headless==5.0.0.93 onnx==1.23.2 onnxruntime==1.32.0
if [ "${WITH_PADDLE:-0}" = 1 ]; then bench/.venv/bin/pip install -q paddlepaddle; fi
mkdir -p bench/data
[ -f bench/data/astronaut_1080p.png ] || cp ../shared/fixtures/images/astronaut_1080p.png bench/data/ 2>/dev/null \
  || { echo "bench/data/astronaut_1080p.png missing" >&2; exit 1; }
sleep 5   # let the build's load settle
bench/.venv/bin/python bench/zoo_compare.py "$@"
exec bench/.venv/bin/python bench/compare.py --e2e-only
