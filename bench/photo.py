#!/usr/bin/env python3
"""Every photo a user has (issue #14): convd's end-to-end image pipeline against libvips and
OpenCV on large photos, and the peak memory of one job.

The pipeline
    decode → Gaussian 5×5 (sigma 0 = OpenCV's rule, i.e. sigma 1.1) on every colour channel,
    output the size of the input → 8-bit RGB PNG, fast compression.

    convd   ``POST /v1/convolve``, parts ``image`` (the file as it is) and ``spec``
            ``{"preset": "gaussian", "size": 5, "channels": "each", "padding": "same",
            "output": {"normalize": "clamp"}}``. The preset's padding mode is convd's default,
            ``zeros`` (openapi.yaml ``PaddingMode``); ``clamp`` makes 8-bit output
            ``round(clamp(x, 0, 255))``; PNG ``compression`` is the default ``fast``.
            Figures: client wall time (the request body is in memory, one keep-alive
            connection) and every ``Server-Timing`` stage (``decode``, ``conv``,
            ``encode``, and ``total`` when the server sends one; else their sum, marked Σ).
    libvips ``pyvips.Image.new_from_file(path, access="sequential")`` → ``embed`` 2 px of
            black → ``convsep`` (default; ``--vips-op conv`` for the 5×5 mask) with convd's
            kernel as a ``new_from_array`` mask, ``precision="float"`` → ``crop`` back →
            ``rint`` → ``cast("uchar")`` → ``write_to_buffer(".png", compression=1)``
            (libvips' default row filter ``none``: a file ~2.4× convd's, cheaper to write;
            ``--vips-png-filter all`` filters adaptively, as convd's encoder does).
            libvips' own convolution border repeats the edge pixel; the embed/crop makes
            it zeros, as convd's. ``precision="integer"`` is 2-3× faster but its fixed-point
            coefficients put pixels up to 5 levels off (``--vips-precision integer`` times
            it anyway; the check below then reports the difference). ``cast`` truncates,
            hence the ``rint``. The operation cache is off, so every call decodes. Threads:
            libvips' default pool with ``VIPS_CONCURRENCY=2``.
    OpenCV  the file read with ``np.fromfile`` → ``cv2.imdecode(IMREAD_COLOR)`` →
            ``cv2.sepFilter2D`` (default; ``--opencv-op filter2D`` or ``GaussianBlur``)
            with convd's 1-D factor, ``BORDER_CONSTANT`` (zeros) → ``cv2.imencode('.png',
            [IMWRITE_PNG_COMPRESSION, 1])``; ``cv2.setNumThreads(2)`` (imdecode and imencode
            run on one thread whatever it says). Stages decode, filter, encode are timed.

    The kernel is convd's ``gaussian`` preset: ``exp(-x²/2σ²)`` normalised, σ = 1.1, as an
    outer product; when convd runs, ``GET /v1/kernels`` is checked against it. (OpenCV's
    own ``GaussianBlur(ksize=5, sigma=0)`` would use the binomial 1-4-6-4-1 table instead.)

Photos (bench/data/photos/, made here when missing, deterministically)
    bench/data/astronaut_1080p.png, centre-cropped to the aspect ratio, upscaled with
    Pillow's bicubic (Keys a = -0.5, i.e. Catmull-Rom) filter, plus a luma grain of seeded
    uniform integers in [-3, 3] (the same offset on R, G, B): p12 = 4032×3024 JPEG q90
    (4:2:0, Pillow's libjpeg-turbo), p12png = the same pixels as PNG, p24 = 6000×4000 JPEG
    q90, p50 = 8660×5773 PNG.

Correctness first
    Before timing, every side's PNG is decoded and compared with an exact reference (the
    input as Pillow decodes it, the separable kernel in float64 with zero padding, rounded
    and clamped): max difference and share of pixels that differ. From a PNG input every
    side must be within 1 level (a rounding tie in float32); from a JPEG the decoders
    differ (IDCT, chroma upsampling), so convd's decode alone is also compared with
    Pillow's (an ``identity`` request). A side that refuses a photo (e.g. convd's 413 at
    its default limits) is reported in the tables and left out of the rounds.

Rounds
    ``--rounds`` R (default 5): each side in turn, in an order that rotates every round,
    runs every photo ``--reps`` times (default 2) and keeps its minimum; ``--pause``
    seconds (1) between sides. The first (correctness) pass is every side's warm-up. A
    figure is the median over rounds of the per-round minima; spread = min-max over
    rounds; ratio = convd / peer on the medians (its spread is per round). The load
    average and running cargo/rustc processes are checked before and after the rounds.

Memory (``--no-memory`` skips it)
    convd: a fresh server per measurement (same limits), ``VmHWM`` of
    /proc/PID/status once ready (idle) and after one job: the absolute peak and peak − idle,
    for every photo and for two concurrent p12 jobs. libvips and OpenCV: a fresh Python
    process per photo (``--mem-child``): VmHWM after importing the library (idle) and
    after one pipeline run.

convd's limits
    ``--limits raised`` (default) starts convd with the environment in RAISED_LIMITS;
    ``--limits default`` leaves the binary's own (today 12 MP colour is 413,
    ``max_tensor_elements``). CONVD_* variables already in the environment are passed
    through either way, and ``--convd-env KEY=VALUE`` (repeatable) is applied last.

``--check-identical OTHER``
    Starts ``--convd`` and OTHER (both with raised limits, plus ``--convd-env``), sends
    every photo of ``--sizes`` with every spec of CHECK_SPECS to both, and reports whether
    status and pictures are identical: PNGs by their decoded samples at full depth (the
    encoder may write other bytes for the same pixels), ZIPs member by member, anything else
    by bytes (exit status 1 when any differ). Nothing is timed.

Output: Markdown on stdout, progress on stderr, the raw figures in
bench/results/photo-<UTC time>.json. bench/photo.sh makes the venv and runs this.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import http.client
import io
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
SOURCE = os.path.join(BENCH, "data", "astronaut_1080p.png")
SHARED_SOURCE = os.path.join(ROOT, "..", "shared", "fixtures", "images", "astronaut_1080p.png")
PHOTOS_DIR = os.path.join(BENCH, "data", "photos")
RESULTS = os.path.join(BENCH, "results")

sys.path.insert(0, BENCH)
from compare import (  # noqa: E402
    ConvdServer, Worker, compact_json, convd_build, machine, quiet_check, rounded)
from peer_worker import parse_server_timing  # noqa: E402

# name -> (file, width, height, grain seed). p12png has p12's pixels (same seed).
PHOTOS = {
    "p12": ("p12.jpg", 4032, 3024, 12),
    "p12png": ("p12.png", 4032, 3024, 12),
    "p24": ("p24.jpg", 6000, 4000, 24),
    "p50": ("p50.png", 8660, 5773, 50),
}
JPEG_QUALITY = 90
GRAIN = 3  # luma grain: uniform integers in [-GRAIN, GRAIN]

SIDES = ("convd", "vips", "opencv")
LABEL = {"convd": "convd", "vips": "libvips", "opencv": "OpenCV"}

KSIZE = 5
SIGMA = 0.3 * ((KSIZE - 1) * 0.5 - 1) + 0.8  # OpenCV's rule for sigma 0: 1.1 for size 5
PIPELINE_SPEC = {"preset": "gaussian", "size": KSIZE, "channels": "each", "padding": "same",
                 "output": {"normalize": "clamp"}}
BORDERS = {
    "convd": 'padding "same", padding_mode zeros (the default)',
    "vips": "embed 2 px extend=black, conv, crop (libvips' own conv border would repeat the edge)",
    "opencv": "BORDER_CONSTANT, value 0",
}

# Environment for convd with limits that admit a 50 MP colour photo and its 16-bit or
# batched variants (--check-identical).
RAISED_LIMITS = {
    "CONVD_MAX_TENSOR_ELEMENTS": "200000000",
    "CONVD_MAX_OUTPUT_ELEMENTS": "400000000",
    "CONVD_MAX_BODY_BYTES": str(512 << 20),
    "CONVD_MAX_INFLIGHT_BODY_BYTES": str(1 << 30),
    "CONVD_MAX_IMAGE_PIXELS": "60000000",
    "CONVD_DEADLINE_MS": "120000",
}

# --check-identical: every spec is sent with every photo of --sizes to both binaries.
# images: 1, or 2 = a batch (the photo and its twin of the same size: p12 with p12png,
# p12png with p12, the other sizes with themselves).
CLAMP = {"normalize": "clamp"}
CHECK_SPECS = [
    # id              images  what it exercises                                  spec
    ("blur-clamp",    1, "the timed pipeline: Gaussian 5×5 per channel, clamp",
     {"preset": "gaussian", "size": 5, "channels": "each", "padding": "same", "output": CLAMP}),
    ("sum-minmax",    1, "channels sum (one gray map), valid padding, minmax",
     {"preset": "laplacian", "output": {"normalize": "minmax"}}),
    ("gray-minmax",   1, "color gray (Pillow luma), 3×3 Laplacian, minmax",
     {"preset": "laplacian", "color": "gray"}),
    ("each-abs",      1, "channels each, Sobel x, abs",
     {"preset": "sobel_x", "channels": "each", "padding": "same", "output": {"normalize": "abs"}}),
    ("each-minmax",   1, "channels each, minmax per map (RGB PNG)",
     {"preset": "emboss", "channels": "each", "padding": "same", "output": {"normalize": "minmax"}}),
    ("clamp-16bit",   1, "bit_depth 16, clamp",
     {"preset": "gaussian", "size": 5, "channels": "each", "padding": "same",
      "output": {"normalize": "clamp", "bit_depth": 16}}),
    ("sum-minmax-16", 1, "bit_depth 16, channels sum, minmax",
     {"preset": "laplacian", "padding": 1, "output": {"normalize": "minmax", "bit_depth": 16}}),
    ("stack2",        1, "2-layer stack: box 3 then unsharp, per channel",
     {"color": "rgb", "channels": "each", "output": CLAMP,
      "layers": [{"preset": "box", "size": 3}, {"preset": "unsharp", "amount": 1.5, "padding": "same"}]}),
    ("stride2",       1, "stride 2, same padding (output ceil(H/2)×ceil(W/2))",
     {"preset": "gaussian", "size": 5, "stride": 2, "padding": "same", "channels": "each", "output": CLAMP}),
    ("batch2",        2, "a batch of two images: montage PNG, 2 rows × 3 maps",
     {"preset": "gaussian", "size": 5, "channels": "each", "padding": "same", "output": CLAMP}),
    ("reflect",       1, "padding_mode reflect",
     {"preset": "gaussian", "size": 5, "channels": "each", "padding": "same", "padding_mode": "reflect",
      "output": CLAMP}),
    ("circular",      1, "padding_mode circular, 5×5 box",
     {"preset": "box", "size": 5, "channels": "each", "padding": "same", "padding_mode": "circular",
      "output": CLAMP}),
    ("zip-minmax",    1, "ZIP of per-map PNGs with the manifest, minmax",
     {"preset": "sobel_y", "channels": "each", "padding": "same", "output": {"format": "zip"}}),
    ("dilated-circ2", 1, "dilation 2, then a circular second layer (its top rows wrap to the bottom)",
     {"color": "rgb", "channels": "each", "output": {"normalize": "minmax"},
      "layers": [{"preset": "laplacian", "dilation": 2, "padding": "same"},
                 {"preset": "box", "size": 5, "padding": "same", "padding_mode": "circular"}]}),
    ("cnn16",         1, "a 4-D kernel, 16 outputs from RGB (a CNN stem at stride 2, ReLU)",
     {"kernel": [[[[((o * 7 + i * 3 + u * 5 + v) % 11 - 5) / 10 for v in range(3)] for u in range(3)]
                  for i in range(3)] for o in range(16)],
      "stride": 2, "padding": 1, "activation": "relu", "output": {"normalize": "minmax"}}),
    ("small-png",     1, "output compression small",
     {"preset": "gaussian", "size": 5, "channels": "each", "padding": "same",
      "output": {"normalize": "clamp", "compression": "small"}}),
]
TWIN = {"p12": "p12png", "p12png": "p12"}


def gaussian_1d() -> np.ndarray:
    x = np.arange(KSIZE, dtype=np.float64) - KSIZE // 2
    g = np.exp(-x * x / (2 * SIGMA * SIGMA))
    return g / g.sum()


def photo_path(name: str) -> str:
    return os.path.join(PHOTOS_DIR, PHOTOS[name][0])


def log(*a):
    print(*a, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- photos

def make_photos(names) -> None:
    """Writes the missing photos of `names` (deterministic: pinned Pillow and numpy)."""
    from PIL import Image
    missing = [n for n in names if not os.path.exists(photo_path(n))]
    if not missing:
        return
    if not os.path.exists(SOURCE):
        if not os.path.exists(SHARED_SOURCE):
            sys.exit(f"{SOURCE} missing (and no {SHARED_SOURCE} to copy it from)")
        os.makedirs(os.path.dirname(SOURCE), exist_ok=True)
        with open(SHARED_SOURCE, "rb") as f, open(SOURCE, "wb") as g:
            g.write(f.read())
    os.makedirs(PHOTOS_DIR, exist_ok=True)
    src = Image.open(SOURCE).convert("RGB")
    for name in missing:
        fname, w, h, seed = PHOTOS[name]
        t = time.perf_counter()
        sw, sh = src.size
        if sw * h > sh * w:  # wider than the target: crop the width
            cw = sh * w / h
            box = ((sw - cw) / 2, 0, (sw + cw) / 2, sh)
        else:
            ch = sw * h / w
            box = (0, (sh - ch) / 2, sw, (sh + ch) / 2)
        a = np.asarray(src.resize((w, h), Image.Resampling.BICUBIC, box=box), dtype=np.int16)
        rng = np.random.default_rng(seed)
        a = a + rng.integers(-GRAIN, GRAIN + 1, size=(h, w, 1), dtype=np.int16)
        im = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8), "RGB")
        del a
        tmp = photo_path(name) + ".tmp"
        if fname.endswith(".jpg"):
            im.save(tmp, "JPEG", quality=JPEG_QUALITY)
        else:
            im.save(tmp, "PNG")
        os.replace(tmp, photo_path(name))
        log(f"made {fname}: {w}×{h}, {os.path.getsize(photo_path(name)) / 2**20:.1f} MiB "
            f"({time.perf_counter() - t:.0f} s)")


def sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


# ----------------------------------------------------------------------------- peers

class Vips:
    name = "vips"

    def __init__(self, op: str = "convsep", precision: str = "float", png_filter: str = "none"):
        os.environ.setdefault("VIPS_CONCURRENCY", "2")
        import pyvips
        pyvips.cache_set_max(0)  # every call opens and decodes the file again
        self.pyvips, self.op, self.precision, self.png_filter = pyvips, op, precision, png_filter
        g = gaussian_1d()
        self.mask = (pyvips.Image.new_from_array([g.tolist()]) if op == "convsep"
                     else pyvips.Image.new_from_array(np.outer(g, g).tolist()))

    def versions(self):
        p = self.pyvips
        return {"pyvips": p.__version__, "libvips": f"{p.version(0)}.{p.version(1)}.{p.version(2)}",
                "vips_concurrency": os.environ.get("VIPS_CONCURRENCY"), "vips_op": self.op,
                "vips_precision": self.precision, "vips_png_filter": self.png_filter}

    def pipeline(self, path: str) -> tuple[bytes, dict]:
        im = self.pyvips.Image.new_from_file(path, access="sequential")
        if im.hasalpha():
            im = im.flatten()
        w, h, r = im.width, im.height, KSIZE // 2
        x = im.embed(r, r, w + 2 * r, h + 2 * r, extend="black")
        y = getattr(x, self.op)(self.mask, precision=self.precision).crop(r, r, w, h)
        if y.format != "uchar":
            y = y.rint().cast("uchar")
        return y.write_to_buffer(".png", compression=1, filter=self.png_filter), {}


class OpenCV:
    name = "opencv"

    def __init__(self, op: str = "sepFilter2D"):
        import cv2
        cv2.setNumThreads(2)
        self.cv2, self.op = cv2, op
        g = gaussian_1d()
        self.k1 = g.astype(np.float32)
        self.k2 = np.outer(g, g).astype(np.float32)

    def versions(self):
        return {"opencv": self.cv2.__version__, "opencv_threads": self.cv2.getNumThreads(), "opencv_op": self.op}

    def pipeline(self, path: str) -> tuple[bytes, dict]:
        cv2 = self.cv2
        t0 = time.perf_counter()
        img = cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_COLOR)
        t1 = time.perf_counter()
        if self.op == "sepFilter2D":
            y = cv2.sepFilter2D(img, -1, self.k1, self.k1, borderType=cv2.BORDER_CONSTANT)
        elif self.op == "filter2D":
            y = cv2.filter2D(img, -1, self.k2, borderType=cv2.BORDER_CONSTANT)
        else:  # GaussianBlur: OpenCV's own (fixed-point for 8 bits) kernel of sigma 1.1
            y = cv2.GaussianBlur(img, (KSIZE, KSIZE), SIGMA, borderType=cv2.BORDER_CONSTANT)
        t2 = time.perf_counter()
        ok, png = cv2.imencode(".png", y, [cv2.IMWRITE_PNG_COMPRESSION, 1])
        t3 = time.perf_counter()
        if not ok:
            raise RuntimeError("imencode failed")
        return png.tobytes(), {"decode": (t1 - t0) * 1e3, "filter": (t2 - t1) * 1e3, "encode": (t3 - t2) * 1e3}


def make_peer(side: str, args):
    if side == "vips":
        return Vips(args.vips_op, args.vips_precision, args.vips_png_filter)
    return OpenCV(args.opencv_op)


def timed_runs(pipeline, path: str, reps: int, out: str | None = None) -> dict:
    """`reps` calls: the fastest total, the fastest of each stage, the output size."""
    best, stages, nbytes = math.inf, {}, None
    for i in range(reps):
        t = time.perf_counter()
        data, st = pipeline(path)
        ms = (time.perf_counter() - t) * 1e3
        best = min(best, ms)
        for k, v in st.items():
            stages[k] = min(stages.get(k, math.inf), v)
        nbytes = len(data)
        if out and i == 0:
            with open(out, "wb") as f:
                f.write(data)
        del data
    return {"ms": best, "stages": stages, "bytes": nbytes}


def worker_main(side: str, args) -> None:
    """A long-lived peer process: one JSON command per line in, one reply per line out."""
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # library chatter on stdout goes to stderr
    sys.stdout = sys.stderr
    try:
        peer, reason = make_peer(side, args), None
    except Exception as e:
        peer, reason = None, f"{type(e).__name__}: {e}"
    for line in sys.stdin:
        cmd = json.loads(line)
        op = cmd.pop("op")
        try:
            if op == "hello":
                reply = {"available": peer is not None, "reason": reason,
                         "versions": {"numpy": np.__version__, **(peer.versions() if peer else {})}}
            elif peer is None:
                reply = {"error": f"{side} unavailable: {reason}"}
            elif op == "run":
                reply = timed_runs(peer.pipeline, cmd["path"], cmd.get("reps", 1), cmd.get("out"))
            else:
                reply = {"error": f"unknown op {op}"}
        except Exception as e:
            reply = {"error": f"{type(e).__name__}: {e}"}
        proto.write(json.dumps(reply) + "\n")


def vm_status(pid="self") -> dict:
    """VmHWM and VmRSS of a process, KiB."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmHWM", "VmRSS"):
                out[key] = int(value.split()[0])
    return out


def mem_child_main(side: str, path: str, args) -> None:
    """One pipeline run in this fresh process; prints its memory figures as JSON."""
    peer = make_peer(side, args)
    idle = vm_status()
    data, _ = peer.pipeline(path)
    after = vm_status()
    # (not getrusage's ru_maxrss: Linux carries the parent's high-water mark across fork + exec)
    print(json.dumps({"idle_hwm_kib": idle["VmHWM"], "hwm_kib": after["VmHWM"], "bytes": len(data)}))


def peer_flags(args) -> list[str]:
    return ["--vips-op", args.vips_op, "--vips-precision", args.vips_precision, "--vips-png-filter",
            args.vips_png_filter, "--opencv-op", args.opencv_op]


def peer_env() -> dict:
    env = dict(os.environ)
    env.setdefault("VIPS_CONCURRENCY", "2")
    return env


# ----------------------------------------------------------------------------- convd

def multipart(images: list[tuple[str, bytes]], spec: dict) -> tuple[bytes, str]:
    boundary = f"convdphoto{time.time_ns()}"
    out = io.BytesIO()
    for fname, data in images:
        ctype = "image/jpeg" if fname.endswith(".jpg") else "image/png"
        out.write(f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{fname}"\r\n'
                  f"Content-Type: {ctype}\r\n\r\n".encode())
        out.write(data)
        out.write(b"\r\n")
    out.write(f'--{boundary}\r\nContent-Disposition: form-data; name="spec"\r\n'
              f"Content-Type: application/json\r\n\r\n".encode())
    out.write(json.dumps(spec).encode())
    out.write(f"\r\n--{boundary}--\r\n".encode())
    return out.getvalue(), f"multipart/form-data; boundary={boundary}"


class ConvdClient:
    """POST /v1/convolve on a keep-alive connection per thread."""

    def __init__(self, server: ConvdServer):
        self.port = server.port
        self.local = threading.local()

    def post(self, body: bytes, ctype: str) -> tuple[int, dict, bytes, float]:
        """(status, headers lower-cased, body, client wall ms)."""
        for attempt in (0, 1):
            conn = getattr(self.local, "conn", None)
            if conn is None:
                conn = self.local.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=900)
            try:
                t = time.perf_counter()
                conn.request("POST", "/v1/convolve", body=body, headers={"Content-Type": ctype, "Accept": "image/png"})
                res = conn.getresponse()
                data = res.read()
                ms = (time.perf_counter() - t) * 1e3
                headers = {k.lower(): v for k, v in res.getheaders()}
                if res.status != 200:  # an error may close the connection: start afresh
                    conn.close()
                    self.local.conn = None
                return res.status, headers, data, ms
            except (http.client.HTTPException, ConnectionError):
                conn.close()
                self.local.conn = None
                if attempt:
                    raise


def problem_text(status: int, data: bytes) -> str:
    """`413 max_tensor_elements: 36578304 > 16777216` from a problem+json body."""
    try:
        p = json.loads(data)
    except ValueError:
        return f"{status}: {data[:200].decode(errors='replace')}"
    msg = p.get("detail") or p.get("title") or ""
    if "limit" in p and "actual" in p and str(p["actual"]) not in msg:
        msg = f"{msg} (limit {p['limit']}, actual {p['actual']})"
    return f"{status}: {msg}"


def stages_of(headers: dict) -> dict:
    st = {name: v["dur"] for name, v in parse_server_timing(headers.get("server-timing")).items()
          if v["dur"] is not None}
    if "total" not in st and st:
        st["total_sum"] = sum(st.values())
    return st


class ConvdSide:
    """convd as a side: the pipeline request per photo, bodies built once."""

    def __init__(self, server: ConvdServer):
        self.client = ConvdClient(server)
        self.bodies: dict[str, tuple[bytes, str]] = {}

    def body(self, name: str, spec=PIPELINE_SPEC):
        key = f"{name}:{json.dumps(spec, sort_keys=True)}"
        if key not in self.bodies:
            with open(photo_path(name), "rb") as f:
                self.bodies[key] = multipart([(PHOTOS[name][0], f.read())], spec)
        return self.bodies[key]

    def run(self, name: str, reps: int, out: str | None = None, spec=PIPELINE_SPEC) -> dict:
        best, stages, nbytes, algo = math.inf, {}, None, None
        body, ctype = self.body(name, spec)
        for i in range(reps):
            status, headers, data, ms = self.client.post(body, ctype)
            if status != 200:
                return {"error": problem_text(status, data), "status": status}
            best = min(best, ms)
            for k, v in stages_of(headers).items():
                stages[k] = min(stages.get(k, math.inf), v)
            algo = parse_server_timing(headers.get("server-timing")).get("conv", {}).get("desc")
            nbytes = len(data)
            if out and i == 0:
                with open(out, "wb") as f:
                    f.write(data)
        return {"ms": best, "stages": stages, "bytes": nbytes, "algorithm": algo}


def convd_environment(args) -> dict:
    """What convd is started with on top of our environment: the limits, then --convd-env."""
    env = dict(RAISED_LIMITS) if args.limits == "raised" else {}
    for kv in args.convd_env:
        k, sep, v = kv.partition("=")
        if not sep or not k:
            sys.exit(f"--convd-env {kv!r}: expected KEY=VALUE")
        env[k] = v
    return env


def effective_convd_env(env: dict) -> dict:
    """Every CONVD_* variable convd sees (passed through or set here)."""
    return {k: v for k, v in sorted({**os.environ, **env}.items()) if k.startswith("CONVD_")}


# ----------------------------------------------------------------------------- correctness

def reference(name: str) -> np.ndarray:
    """The exact pipeline output (H, W, 3) RGB uint8 from Pillow's decode of the photo."""
    import cv2
    from PIL import Image
    with Image.open(photo_path(name)) as im:
        rgb = np.asarray(im.convert("RGB"))
    g = gaussian_1d()
    out = np.empty_like(rgb)
    for c in range(3):  # separable, float64, zero border
        y = cv2.sepFilter2D(rgb[..., c].astype(np.float64), cv2.CV_64F, g, g, borderType=cv2.BORDER_CONSTANT)
        out[..., c] = np.clip(np.rint(y), 0, 255).astype(np.uint8)
    return out


def decode_rgb(path: str) -> np.ndarray | None:
    import cv2
    img = cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_UNCHANGED)
    if img is None:
        return None
    if img.ndim == 3:
        img = img[..., ::-1]
    return img


def compare_pixels(got: np.ndarray | None, ref: np.ndarray) -> dict:
    if got is None or got.shape != ref.shape or got.dtype != ref.dtype:
        return {"ok": False, "shape": None if got is None else list(got.shape), "expected_shape": list(ref.shape)}
    d = np.abs(got.astype(np.int16) - ref.astype(np.int16))
    return {"max_diff": int(d.max()), "differing_pct": float((d > 0).mean() * 100), "mean_abs_diff": float(d.mean())}


def check_outputs(sizes, sides, convd: ConvdSide | None, workers, tmp) -> dict:
    """Runs every side once per photo (the warm-up), compares its PNG with the reference."""
    checks = {}
    for name in sizes:
        ref = reference(name)
        entry = checks[name] = {}
        is_png = PHOTOS[name][0].endswith(".png")
        for side in sides:
            out = os.path.join(tmp, f"{name}.{side}.png")
            res = convd.run(name, 1, out) if side == "convd" else workers[side].ask("run", path=photo_path(name),
                                                                                 reps=1, out=out)
            if "error" in res:
                entry[side] = {"refused" if side == "convd" else "error": res["error"]}
                log(f"  {name}: {side} failed: {res['error']}")
                continue
            c = compare_pixels(decode_rgb(out), ref)
            c["ok"] = c.get("max_diff", 99) <= 1 if is_png else c.get("max_diff") is not None
            c["output_bytes"] = res["bytes"]
            entry[side] = c
            os.unlink(out)
            log(f"  {name}: {side} vs reference: {c}")
            if is_png and not c["ok"]:
                log(f"WARNING: {side}'s output of {name} differs from the exact reference by more than 1 level")
        if convd is not None and not is_png and "refused" not in entry.get("convd", {}):
            # the decoders alone: convd's identity output against Pillow's decode
            out = os.path.join(tmp, f"{name}.decode.png")
            spec = {"preset": "identity", "channels": "each", "padding": "same", "output": {"normalize": "clamp"}}
            res = convd.run(name, 1, out, spec=spec)
            if "error" not in res:
                from PIL import Image
                with Image.open(photo_path(name)) as im:
                    pil = np.asarray(im.convert("RGB"))
                entry["convd_decode_vs_pillow"] = compare_pixels(decode_rgb(out), pil)
                os.unlink(out)
                log(f"  {name}: convd's decode vs Pillow's: {entry['convd_decode_vs_pillow']}")
            convd.bodies.clear()  # keep only the pipeline bodies
        del ref
    return checks


# ----------------------------------------------------------------------------- rounds

def run_rounds(sizes, sides, convd, workers, refused, args) -> dict:
    raw = {name: {s: [] for s in sides if name not in refused.get(s, ())} for name in sizes}
    for r in range(args.rounds):
        k = r % len(sides)
        order = sides[k:] + sides[:k]
        t0 = time.perf_counter()
        for side in order:
            for name in sizes:
                if side not in raw[name]:
                    continue
                if side == "convd":
                    res = convd.run(name, args.reps)
                else:
                    res = workers[side].ask("run", path=photo_path(name), reps=args.reps)
                if "error" in res:
                    log(f"  round {r + 1}: {name} on {side} failed: {res['error']}")
                    res = {"ms": None}
                raw[name][side].append(res)
            time.sleep(args.pause)
        log(f"round {r + 1}/{args.rounds} ({' → '.join(order)}): {time.perf_counter() - t0:.0f} s")
    return raw


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def summarise(raw) -> dict:
    rows = {}
    for name, per_side in raw.items():
        row = rows[name] = {}
        for side, rounds in per_side.items():
            ms = [r.get("ms") for r in rounds]
            ok = [v for v in ms if v is not None]
            stage_names = sorted({k for r in rounds for k in r.get("stages", {})})
            row[side] = {
                "per_round_min_ms": ms,
                "median_ms": median(ms),
                "spread_ms": [min(ok), max(ok)] if ok else None,
                "stages_median_ms": {k: median([r.get("stages", {}).get(k) for r in rounds]) for k in stage_names},
                "output_bytes": next((r["bytes"] for r in rounds if r.get("bytes")), None),
            }
            if side == "convd":
                row[side]["algorithm"] = next((r.get("algorithm") for r in rounds if r.get("algorithm")), None)
        for peer in ("vips", "opencv"):
            c, p = row.get("convd"), row.get(peer)
            if c and p and c["median_ms"] and p["median_ms"]:
                per_round = [a / b for a, b in zip(c["per_round_min_ms"], p["per_round_min_ms"]) if a and b]
                row[f"convd/{peer}"] = {"ratio": c["median_ms"] / p["median_ms"],
                                        "spread": [min(per_round), max(per_round)] if per_round else None}
    return rows


# ----------------------------------------------------------------------------- memory

def convd_memory(binary, env, jobs: list[list[str]]) -> dict:
    """Per job (a list of photos posted at once): a fresh server, VmHWM idle and after."""
    out = {}
    for photos in jobs:
        label = "+".join(photos)
        server = ConvdServer(binary, env)
        try:
            time.sleep(0.2)
            idle = vm_status(server.pid)
            side = ConvdSide(server)
            for p in photos:
                side.body(p)  # built before the clock and the memory matter
            with concurrent.futures.ThreadPoolExecutor(len(photos)) as ex:
                results = list(ex.map(lambda p: side.run(p, 1), photos))
            after = vm_status(server.pid)
        finally:
            server.close()
        errors = [r["error"] for r in results if "error" in r]
        out[label] = {"idle_hwm_kib": idle["VmHWM"], "hwm_kib": after["VmHWM"], "rss_after_kib": after["VmRSS"],
                      "errors": errors}
        log(f"memory convd {label}: idle {idle['VmHWM'] / 1024:.0f} MiB, peak {after['VmHWM'] / 1024:.0f} MiB"
            + (f" ({'; '.join(errors)})" if errors else ""))
    return out


def peer_memory(side, sizes, args) -> dict:
    out = {}
    for name in sizes:
        cmd = [sys.executable, os.path.abspath(__file__), "--mem-child", side, photo_path(name), *peer_flags(args)]
        p = subprocess.run(cmd, capture_output=True, text=True, env=peer_env())
        try:
            out[name] = json.loads(p.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            out[name] = {"error": (p.stderr or p.stdout)[-300:]}
        log(f"memory {side} {name}: {out[name]}")
    return out


# ----------------------------------------------------------------------------- report

def fmt_ms(v) -> str:
    if v is None:
        return "–"
    return f"{v:.1f}" if v < 100 else f"{v:.0f}"


def mib(kib) -> str:
    return f"{kib / 1024:.0f}" if kib is not None else "–"


def print_report(sizes, sides, rows, checks, memory, meta):
    m = meta["machine"]
    print(f"\n## Photos: convd vs libvips vs OpenCV, {meta['date']}\n")
    print(f"{m['model_name']}, {m['nproc']} CPUs, {m['memory_gib']} GiB, flags "
          f"{' '.join(k for k, v in m['cpu_flags'].items() if v)}; {meta['convd'].get('version')} "
          f"(built {meta['convd'].get('built')} in {meta['convd'].get('work_tree')} at "
          f"{meta['convd'].get('git_head')}{', src modified' if meta['convd'].get('src_modified') else ''}); "
          f"limits `{meta['limits']}`; {meta['rounds']} rounds × {meta['reps']} reps, median of per-round minima; "
          f"load {meta['quiet_before']['loadavg'][0]:.2f} → {meta['quiet_after']['loadavg'][0]:.2f}\n")
    for when in ("before", "after"):
        if w := meta[f"quiet_{when}"]["warnings"]:
            print(f"**WARNING: the machine was not quiet {when} the rounds: {'; '.join(w)}**\n")
    v = meta["versions"]
    print(f"Pipeline: decode → Gaussian 5×5 σ=1.1 per channel, same size → 8-bit RGB PNG. "
          f"libvips {v.get('libvips', '–')} (pyvips {v.get('pyvips', '–')}, `{v.get('vips_op', '–')}`, "
          f"precision {v.get('vips_precision', '–')}, PNG filter {v.get('vips_png_filter', '–')}, VIPS_CONCURRENCY={v.get('vips_concurrency', '–')}); "
          f"OpenCV {v.get('opencv', '–')} (`{v.get('opencv_op', '–')}`, {v.get('opencv_threads', '–')} threads). "
          f"Borders: " + "; ".join(f"{LABEL[s]} {BORDERS[s]}" for s in sides) + ".\n")
    print("| photo | size | file MiB | convd ms (client) | spread | libvips ms | spread | OpenCV ms | spread "
          "| convd/libvips | spread | convd/OpenCV | spread |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")

    def cell(name, side):
        if side not in sides:
            return "", ""
        refused = checks.get(name, {}).get(side, {})
        if "refused" in refused or "error" in refused:
            return f"**{refused.get('refused') or refused.get('error')}**", ""
        r = rows.get(name, {}).get(side)
        if not r or r["median_ms"] is None:
            return "–", ""
        return fmt_ms(r["median_ms"]), f"{fmt_ms(r['spread_ms'][0])}–{fmt_ms(r['spread_ms'][1])}"

    def ratio(name, peer):
        r = rows.get(name, {}).get(f"convd/{peer}")
        if not r:
            return "–", ""
        s = f"{r['spread'][0]:.2f}–{r['spread'][1]:.2f}" if r["spread"] else ""
        return f"**{r['ratio']:.2f}**", s

    for name in sizes:
        fname, w, h, _ = PHOTOS[name]
        cells = [x for side in SIDES for x in cell(name, side)]
        rat = [x for peer in ("vips", "opencv") for x in ratio(name, peer)]
        print(f"| {fname} | {w}×{h} ({w * h / 1e6:.1f} MP) | {meta['photos'][name]['bytes'] / 2**20:.1f} | "
              + " | ".join(cells + rat) + " |")

    print("\nStages (medians, ms) and output PNG size (MiB):\n")
    print("| photo | convd decode | convd conv | convd encode | convd total (Server-Timing) | convd algorithm "
          "| OpenCV decode | OpenCV filter | OpenCV encode | PNG convd | PNG libvips | PNG OpenCV |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name in sizes:
        c = rows.get(name, {}).get("convd") or {}
        cs = c.get("stages_median_ms", {})
        total = fmt_ms(cs["total"]) if "total" in cs else (f"Σ {fmt_ms(cs['total_sum'])}" if "total_sum" in cs else "–")
        o = (rows.get(name, {}).get("opencv") or {}).get("stages_median_ms", {})
        sz = [(rows.get(name, {}).get(s) or {}).get("output_bytes") for s in SIDES]
        print(f"| {PHOTOS[name][0]} | {fmt_ms(cs.get('decode'))} | {fmt_ms(cs.get('conv'))} | "
              f"{fmt_ms(cs.get('encode'))} | {total} | {c.get('algorithm') or '–'} | {fmt_ms(o.get('decode'))} | "
              f"{fmt_ms(o.get('filter'))} | {fmt_ms(o.get('encode'))} | "
              + " | ".join(f"{b / 2**20:.1f}" if b else "–" for b in sz) + " |")

    print("\nOutput against the exact reference (Pillow's decode, float64, zero border, rounded): "
          "max difference in levels / % of samples that differ:\n")
    print("| photo | convd | libvips | OpenCV | convd's decode vs Pillow's |")
    print("|---|---|---|---|---|")
    for name in sizes:
        ch = checks.get(name, {})

        def cc(side):
            c = ch.get(side)
            if c is None:
                return "–"
            if "refused" in c or "error" in c:
                return "refused" if "refused" in c else "error"
            if "max_diff" not in c:
                return f"**shape {c.get('shape')} ≠ {c.get('expected_shape')}**"
            bad = PHOTOS[name][0].endswith(".png") and c["max_diff"] > 1
            s = f"{c['max_diff']} / {c['differing_pct']:.3f} %"
            return f"**{s}**" if bad else s
        dec = ch.get("convd_decode_vs_pillow")
        dec = f"{dec['max_diff']} / {dec['differing_pct']:.2f} %" if dec and "max_diff" in dec else "– (PNG: exact)" \
            if PHOTOS[name][0].endswith(".png") else "–"
        print(f"| {PHOTOS[name][0]} | {cc('convd')} | {cc('vips')} | {cc('opencv')} | {dec} |")

    if memory:
        print("\nPeak memory of one job, MiB: VmHWM of a fresh process (absolute) and minus its idle VmHWM (Δ):\n")
        print("| job | convd peak | convd Δ | libvips peak | libvips Δ | OpenCV peak | OpenCV Δ |")
        print("|---|---|---|---|---|---|---|")
        conv_mem = memory.get("convd", {})
        labels = list(dict.fromkeys([*sizes, *conv_mem.keys()]))
        for label in labels:
            cells = []
            c = conv_mem.get(label)
            if c is None:
                cells += ["–", "–"]
            elif c["errors"]:
                cells += [f"**{'; '.join(dict.fromkeys(c['errors']))}**", f"(idle {mib(c['idle_hwm_kib'])})"]
            else:
                cells += [mib(c["hwm_kib"]), mib(c["hwm_kib"] - c["idle_hwm_kib"])]
            for side in ("vips", "opencv"):
                p = memory.get(side, {}).get(label)
                if p is None or "error" in p:
                    cells += ["–" if p is None else "error", "–"]
                else:
                    cells += [mib(p["hwm_kib"]), mib(p["hwm_kib"] - p["idle_hwm_kib"])]
            jobname = " + ".join(PHOTOS[x][0] for x in label.split("+")) + (" (concurrent)" if "+" in label else "")
            print(f"| {jobname} | " + " | ".join(cells) + " |")
        print("\n(convd's idle figure includes its runtime; buffer_cache_bytes keeps up to 256 MiB of buffers "
              "between jobs by default, which a fresh process has not filled yet. The peers' idle figure is Python "
              "with the library imported.)")
    for note in meta["notes"]:
        print(f"\nNote: {note}")


# ----------------------------------------------------------------------------- check-identical

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_samples(data: bytes):
    """A PNG's samples at full depth (OpenCV keeps 16-bit RGB, Pillow would not)."""
    import cv2
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)


def same_pictures(a: bytes, b: bytes) -> tuple[bool, str]:
    """Whether two responses hold the same pictures, and how they differ if not.

    PNGs compare by their decoded samples (the encoder may write other bytes for the same
    pixels); a ZIP compares member by member, PNG members by samples, others by bytes."""
    if a == b:
        return True, "bytes"
    if a.startswith(PNG_SIGNATURE) and b.startswith(PNG_SIGNATURE):
        pa, pb = png_samples(a), png_samples(b)
        same = pa is not None and pb is not None and pa.dtype == pb.dtype and np.array_equal(pa, pb)
        return same, "pixels" if same else "pixels differ"
    if a.startswith(b"PK\x03\x04") and b.startswith(b"PK\x03\x04"):
        import zipfile
        za, zb = zipfile.ZipFile(io.BytesIO(a)), zipfile.ZipFile(io.BytesIO(b))
        if za.namelist() != zb.namelist():
            return False, "members differ"
        differ = [n for n in za.namelist() if not same_pictures(za.read(n), zb.read(n))[0]]
        return not differ, "members " + ("same" if not differ else "differ: " + ", ".join(differ))
    return False, "bytes differ"


def check_identical(args, sizes) -> int:
    env = dict(RAISED_LIMITS)
    env.update(convd_environment(argparse.Namespace(limits="default", convd_env=args.convd_env)))
    bins = [os.path.abspath(args.convd), os.path.abspath(args.check_identical)]
    servers = [ConvdServer(b, env) for b in bins]
    rows, differ = [], 0
    try:
        clients = [ConvdClient(s) for s in servers]
        files = {}
        for name in sizes:
            with open(photo_path(name), "rb") as f:
                files[name] = f.read()
        for sid, n_images, what, spec in CHECK_SPECS:
            for name in sizes:
                imgs = [name] if n_images == 1 else [name, TWIN.get(name, name)]
                for x in imgs:
                    if x not in files:
                        with open(photo_path(x), "rb") as f:
                            files[x] = f.read()
                body, ctype = multipart([(PHOTOS[x][0], files[x]) for x in imgs], spec)
                got = [c.post(body, ctype) for c in clients]
                del body
                (sa, ha, ba, ma), (sb, hb, bb, mb) = got
                same_pixels, how = same_pictures(ba, bb)
                same = sa == sb and same_pixels
                differ += not same
                row = {"spec": sid, "photo": "+".join(PHOTOS[x][0] for x in imgs), "status": [sa, sb],
                       "identical": same, "how": how, "bytes": [len(ba), len(bb)],
                       "sha256": [hashlib.sha256(ba).hexdigest()[:16], hashlib.sha256(bb).hexdigest()[:16]],
                       "x_conv_range_same": ha.get("x-conv-range") == hb.get("x-conv-range"),
                       "ms": [ma, mb], "stages": [stages_of(ha), stages_of(hb)]}
                if sa != 200:
                    row["problem"] = [problem_text(sa, ba), problem_text(sb, bb)]
                rows.append(row)
                log(f"  {sid} {row['photo']}: {sa}/{sb} {'identical (' + how + ')' if same else 'DIFFERENT: ' + how} "
                    f"({len(ba)} / {len(bb)} B, {ma:.0f} / {mb:.0f} ms)")
                del got, ba, bb
    finally:
        for s in servers:
            s.close()
    print(f"\n## Identical-output check: `{os.path.relpath(bins[0], ROOT)}` (A) vs `{bins[1]}` (B)\n")
    print("PNGs compare by decoded samples at full depth; ZIPs member by member.\n")
    print(f"Both with {' '.join(f'{k}={v}' for k, v in effective_convd_env(env).items())}.\n")
    print("| spec | what | photo | status A/B | identical | bytes A | bytes B | sha256 A | ms A | ms B |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    what = {s[0]: s[2] for s in CHECK_SPECS}
    for r in rows:
        ident = f"yes ({r['how']})" if r["identical"] else f"**NO** ({r['how']})"
        if r["identical"] and not r["x_conv_range_same"]:
            ident += " (X-Conv-Range differs)"
        print(f"| {r['spec']} | {what[r['spec']]} | {r['photo']} | {r['status'][0]}/{r['status'][1]} | {ident} | "
              f"{r['bytes'][0]} | {r['bytes'][1]} | {r['sha256'][0]} | {fmt_ms(r['ms'][0])} | {fmt_ms(r['ms'][1])} |")
    print(f"\n{len(rows) - differ} identical, {differ} different (of {len(rows)} requests)")
    stamp = time.gmtime()
    doc = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", stamp), "mode": "check-identical",
           "a": convd_build(bins[0]), "b": {"binary": bins[1]}, "convd_env": effective_convd_env(env),
           "specs": {s[0]: {"images": s[1], "what": s[2], "spec": s[3]} for s in CHECK_SPECS}, "rows": rows}
    os.makedirs(RESULTS, exist_ok=True)
    path = os.path.join(RESULTS, time.strftime("photo-identical-%Y%m%dT%H%M%SZ.json", stamp))
    with open(path, "w") as f:
        f.write(compact_json(rounded(doc)) + "\n")
    print(f"\nraw: {os.path.relpath(path, ROOT)}")
    return 1 if differ else 0


# ----------------------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--convd", default=os.path.join(ROOT, "target", "release", "convd"),
                    help="the release binary (default target/release/convd)")
    ap.add_argument("--rounds", type=int, default=5, help="rounds (default 5)")
    ap.add_argument("--reps", type=int, default=2, help="timed runs per photo, side and round (default 2)")
    ap.add_argument("--pause", type=float, default=1.0, help="seconds between sides (default 1)")
    ap.add_argument("--sizes", default=",".join(PHOTOS), help=f"comma-separated, from {','.join(PHOTOS)}")
    ap.add_argument("--sides", default=",".join(SIDES), help=f"comma-separated, from {','.join(SIDES)}")
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurements")
    ap.add_argument("--limits", choices=("raised", "default"), default="raised",
                    help="convd's limits: RAISED_LIMITS (default) or the binary's own")
    ap.add_argument("--convd-env", action="append", default=[], metavar="KEY=VALUE",
                    help="extra environment for convd, applied last (repeatable)")
    ap.add_argument("--vips-op", choices=("convsep", "conv"), default="convsep")
    ap.add_argument("--vips-precision", choices=("float", "integer", "approximate"), default="float")
    ap.add_argument("--vips-png-filter", choices=("none", "sub", "paeth", "all"), default="none",
                    help="pngsave's row filter: none (libvips' default; bigger files, cheaper encode) or "
                         "all (adaptive, as convd and OpenCV filter)")
    ap.add_argument("--opencv-op", choices=("sepFilter2D", "filter2D", "GaussianBlur"), default="sepFilter2D")
    ap.add_argument("--check-identical", metavar="OTHER_CONVD",
                    help="compare --convd's and OTHER_CONVD's response bodies byte for byte; no timing")
    ap.add_argument("--make-photos", action="store_true", help="only make the missing photos of --sizes")
    ap.add_argument("--worker", choices=("vips", "opencv"), help=argparse.SUPPRESS)
    ap.add_argument("--mem-child", nargs=2, metavar=("SIDE", "PATH"), help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.worker:
        return worker_main(args.worker, args)
    if args.mem_child:
        return mem_child_main(args.mem_child[0], args.mem_child[1], args)
    if args.rounds < 1 or args.reps < 1:
        ap.error("--rounds and --reps must be ≥ 1")
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    if unknown := set(sizes) - set(PHOTOS):
        ap.error(f"unknown sizes {sorted(unknown)}; choose from {','.join(PHOTOS)}")
    sides = [s.strip() for s in args.sides.split(",") if s.strip()]
    if unknown := set(sides) - set(SIDES):
        ap.error(f"unknown sides {sorted(unknown)}; choose from {','.join(SIDES)}")
    sides = [s for s in SIDES if s in sides]

    make_photos(sizes + ([TWIN[s] for s in sizes if s in TWIN] if args.check_identical else []))
    if args.make_photos:
        return 0
    if args.check_identical:
        return check_identical(args, sizes)

    binary = os.path.abspath(args.convd)
    env = convd_environment(args)
    notes = []
    workers: dict[str, Worker] = {}
    server = ConvdServer(binary, env) if "convd" in sides else None
    versions = {"python": platform.python_version(), "numpy": np.__version__}
    limits_in_force = None
    try:
        convd = ConvdSide(server) if server else None
        if server:
            limits_in_force = server.get_json("/v1/limits")
            kernels = server.get_json("/v1/kernels")
            kernels = kernels if isinstance(kernels, list) else kernels.get("kernels", [])
            gk = next((k for k in kernels if k.get("name") == "gaussian"), None)
            ours = np.outer(gaussian_1d(), gaussian_1d()).ravel()
            if gk is None or np.abs(np.array(gk["kernel"]["weights"]) - ours).max() > 1e-6:
                note = "convd's gaussian preset (GET /v1/kernels) is not the kernel the peers use"
                notes.append(note)
                log(f"WARNING: {note}")
        for side in sides:
            if side != "convd":
                workers[side] = Worker(
                    side, [sys.executable, os.path.abspath(__file__), "--worker", side, *peer_flags(args)],
                    env=peer_env())
                hello = workers[side].ask("hello")
                if not hello["available"]:
                    sys.exit(f"{side} unavailable: {hello['reason']} (bench/photo.sh makes the venv)")
                versions.update(hello["versions"])
        with tempfile.TemporaryDirectory(prefix="convd-photo-") as tmp:
            log("checking every side's output against the exact reference (also the warm-up)")
            checks = check_outputs(sizes, sides, convd, workers, tmp)
        refused = {s: {n for n in sizes if "refused" in checks[n].get(s, {}) or "error" in checks[n].get(s, {})}
                   for s in sides}
        time.sleep(args.pause)
        quiet_before = quiet_check("before the rounds")
        raw = run_rounds(sizes, sides, convd, workers, refused, args)
        quiet_after = quiet_check("after the rounds")
    finally:
        for w in workers.values():
            w.close()
        if server:
            server.close()

    memory = {}
    if not args.no_memory:
        if "convd" in sides:
            jobs = [[n] for n in sizes] + ([["p12", "p12"]] if "p12" in sizes else [])
            memory["convd"] = convd_memory(binary, env, jobs)
        for side in sides:
            if side != "convd":
                memory[side] = peer_memory(side, sizes, args)

    rows = summarise(raw)
    stamp = time.gmtime()
    meta = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", stamp),
        "machine": machine(),
        "quiet_before": quiet_before,
        "quiet_after": quiet_after,
        "convd": convd_build(binary) if "convd" in sides else {},
        "limits": args.limits + (" + " + " ".join(args.convd_env) if args.convd_env else ""),
        "convd_env": effective_convd_env(env),
        "limits_in_force": limits_in_force,
        "versions": versions,
        "notes": notes,
        "rounds": args.rounds,
        "reps": args.reps,
        "pause_s": args.pause,
        "sides": sides,
        "borders": {s: BORDERS[s] for s in sides},
        "pipeline_spec": PIPELINE_SPEC,
        "kernel_1d": gaussian_1d().tolist(),
        "photos": {n: {"file": PHOTOS[n][0], "width": PHOTOS[n][1], "height": PHOTOS[n][2],
                       "bytes": os.path.getsize(photo_path(n)), "sha256": sha256(photo_path(n))} for n in sizes},
    }
    print_report(sizes, sides, rows, checks, memory, meta)
    doc = {**meta, "method": "per-round minimum of `reps` runs; figure = median over rounds; convd figure = client "
                             "wall time of POST /v1/convolve; ratio = convd / peer",
           "check": checks, "results": rows, "raw": raw, "memory": memory}
    os.makedirs(RESULTS, exist_ok=True)
    path = os.path.join(RESULTS, time.strftime("photo-%Y%m%dT%H%M%SZ.json", stamp))
    with open(path, "w") as f:
        f.write(compact_json(rounded(doc)) + "\n")
    print(f"\nraw figures: {os.path.relpath(path, ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
