#!/usr/bin/env bash
# Builds convd (release), makes bench/.venv with the peers from PyPI, runs bench/compare.py.
# PaddlePaddle and JAX are large; set WITH_PADDLE=1 / WITH_JAX=1 to include them.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bin convd
python3 -m venv bench/.venv
bench/.venv/bin/pip install -q numpy opencv-python-headless
if [ "${WITH_PADDLE:-0}" = 1 ]; then bench/.venv/bin/pip install -q paddlepaddle; fi
if [ "${WITH_JAX:-0}" = 1 ]; then bench/.venv/bin/pip install -q "jax[cpu]"; fi
mkdir -p bench/data
[ -f bench/data/astronaut_1080p.png ] || cp ../shared/fixtures/images/astronaut_1080p.png bench/data/ 2>/dev/null \
  || { echo "bench/data/astronaut_1080p.png missing" >&2; exit 1; }
exec bench/.venv/bin/python bench/compare.py "$@"
