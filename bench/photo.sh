#!/usr/bin/env bash
# Every photo a user has (issue #14): convd's image pipeline against libvips and OpenCV on
# 12-50 MP photos, and the peak memory of one job.
#   1. builds the release convd (SKIP_BUILD=1 skips it; pass --convd PATH for another binary);
#   2. makes bench/.venv-photo with pyvips, pyvips-binary, OpenCV, numpy and Pillow, pinned;
#   3. makes the test photos in bench/data/photos/ when missing (deterministic, ~30 s);
#   4. runs bench/photo.py with this script's arguments; it starts convd itself on a free
#      127.0.0.1 port (with raised limits unless --limits default), e.g.
#        bench/photo.sh --rounds 5 --sizes p12,p24,p50
#        bench/photo.sh --limits default --no-memory
#        bench/photo.sh --convd-env CONVD_THREADS=2 --sides convd,vips
#        SKIP_BUILD=1 bench/photo.sh --check-identical /path/to/old/convd
#      (Markdown on stdout, raw figures in bench/results/photo-<UTC time>.json).
# Run it on a quiet machine: photo.py warns when the load average is above 0.5 or a
# cargo/rustc process is running.
set -euo pipefail
cd "$(dirname "$0")/.."

NUMPY=2.4.6
OPENCV=5.0.0.93          # opencv-python-headless
PYVIPS=3.2.0
PYVIPS_BINARY=8.18.7     # libvips itself, with its codecs
PILLOW=13.0.0            # makes the photos and decodes the reference

if [ "${SKIP_BUILD:-0}" != 1 ]; then
  cargo build --release --bin convd
fi

VENV=bench/.venv-photo
[ -x $VENV/bin/python ] || python3 -m venv $VENV
$VENV/bin/python -m pip install -q --disable-pip-version-check \
  "numpy==$NUMPY" "opencv-python-headless==$OPENCV" "pyvips==$PYVIPS" "pyvips-binary==$PYVIPS_BINARY" \
  "pillow==$PILLOW"

mkdir -p bench/data bench/results
[ -f bench/data/astronaut_1080p.png ] || cp ../shared/fixtures/images/astronaut_1080p.png bench/data/ \
  || { echo "bench/data/astronaut_1080p.png missing (the photos are made from it)" >&2; exit 1; }
export VIPS_CONCURRENCY="${VIPS_CONCURRENCY:-2}"
$VENV/bin/python bench/photo.py --make-photos --sizes p12,p12png,p24,p50

[ "${SKIP_BUILD:-0}" = 1 ] || sleep 5   # let the build's load settle
exec $VENV/bin/python bench/photo.py "$@"
