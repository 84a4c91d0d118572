#!/usr/bin/env python3
"""convd against its peers on the same machine: a zoo of CNN layers, the image filters
W1-W6, and the end-to-end image pipeline.

Sides
    ``convd`` (a release server started here on a free port; its figure is the ``conv``
    stage of ``Server-Timing``, whose ``desc`` names the algorithm that ran), ONNX Runtime
    (a one-node ``Conv`` model per layer, 2 intra-op threads), OpenCV (``filter2D``, for
    single-channel and depthwise filters only, best of 1 and 2 threads) and PaddlePaddle
    (``paddle.nn.functional.conv2d``, when it is installed). Each side runs in its own
    process (bench/peer_worker.py, JSON lines over stdin/stdout), so that no library's
    thread pool or allocator shares a process with another's. Every process generates
    the layer tensors itself from a seed (numpy ``default_rng``), the same numbers on
    every side.

Correctness first
    Before any timing, every layer's output from convd and from each peer is compared
    with ONNX Runtime's: the maximum absolute difference relative to max |output| must be
    at most 1e-4, else the run stops (a wrong answer is never timed). A layer convd
    refuses (HTTP 4xx) is reported and left out.

Rounds
    For R rounds (``--rounds``, default 7), each side in turn, in an order that rotates
    every round, runs every layer once to warm up and then ``--reps`` times (default 5),
    and reports its minimum: the per-round minimum. Between sides the harness sleeps
    ``--pause`` (0.5 s), because ONNX Runtime's and OpenMP's threads keep spinning after a
    call and slow whoever runs next. A figure is the median over rounds of the per-round
    minima. Per layer, ratio = convd / best peer (the peer with the lowest figure); the
    spread is the min-max over rounds of convd / fastest peer of that round.

Machine
    The 1-minute load average and running cargo/rustc processes are checked before and
    after; a busy machine is reported loudly on stderr, in the table's header and in the
    JSON.

End-to-end pipeline (``--no-e2e`` skips it)
    1080p PNG -> gray -> 3x3 Laplacian (valid) -> min-max 8-bit -> PNG, through
    ``POST /v1/convolve`` (client-side latency at concurrency 1; throughput at 4) against
    the same pipeline written with OpenCV (best of 1 and 2 threads), in its own rounds.
    convd's PNG is first checked against an exact reference of the pipeline (gray as
    Pillow's ``convert('L')``, which convd documents): at most 1 level apart.

Outside the zoo (``--outside``)
    15 more layers of classes the zoo does not list (patchify stems, deep layers on tiny
    planes, dilated depthwise, dilation 3, 7x7, grouped 3x3 with 4 and 8 groups, batch 4
    and 16, ...), timed the same way, reported in the table and with their own geometric
    mean, never counted in the zoo's.

Output
    A Markdown table on stdout (with the geometric mean of the ratios), progress on
    stderr, and every raw per-round figure in bench/results/compare-<UTC time>.json.

Usage (bench/run_compare.sh builds convd and makes the venv):
    python bench/compare.py [--convd target/release/convd] [--rounds 7] [--reps 5]
        [--only stem,dw3] [--sides convd,onnxruntime,opencv,paddle] [--no-e2e] [--outside]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(ROOT, "bench", "peer_worker.py")
PHOTO = os.path.join(ROOT, "bench", "data", "astronaut_1080p.png")
RESULTS = os.path.join(ROOT, "bench", "results")

SIDES = ("convd", "onnxruntime", "opencv", "paddle")
PEERS = SIDES[1:]
LABEL = {"convd": "convd", "onnxruntime": "ORT", "opencv": "OpenCV", "paddle": "Paddle"}
TOLERANCE = 1e-4  # max |convd - ORT| / max |ORT|
IMAGE_FILTER = "image filter"

# The layer zoo. Weight is [c_out, c_in/groups, k_h, k_w]; stride, padding (each side)
# and dilation are symmetric. Weights are uniform [-0.5, 0.5) except W2 (the 5x5 box).
# id, network, class, input NCHW, weight, stride, padding, dilation, groups, bias
ZOO = [
    ("stem-r18", "ResNet-18 conv1", "stem", (1, 3, 224, 224), (64, 3, 7, 7), 2, 3, 1, 1, True),
    ("stem-alex", "AlexNet conv1", "stem", (1, 3, 224, 224), (64, 3, 11, 11), 4, 2, 1, 1, True),
    ("stem-mbv2", "MobileNetV2 stem", "stem", (1, 3, 224, 224), (32, 3, 3, 3), 2, 1, 1, 1, True),
    ("stem-vgg", "VGG-16 conv1_1", "stem", (1, 3, 224, 224), (64, 3, 3, 3), 1, 1, 1, 1, True),
    ("stem-yolo", "YOLOv3-tiny conv1", "stem", (1, 3, 416, 416), (16, 3, 3, 3), 1, 1, 1, 1, True),
    ("c1-mnist", "LeNet-style conv1", "stem", (1, 1, 28, 28), (32, 1, 3, 3), 1, 1, 1, 1, True),
    ("pw-r50", "ResNet-50 bottleneck", "pointwise", (1, 64, 56, 56), (256, 64, 1, 1), 1, 0, 1, 1, True),
    ("pw-mbv2", "MobileNetV2 project", "pointwise", (1, 144, 56, 56), (24, 144, 1, 1), 1, 0, 1, 1, True),
    ("pw-s2", "ResNet downsample", "pointwise s2", (1, 256, 56, 56), (512, 256, 1, 1), 2, 0, 1, 1, True),
    ("sq-fire", "SqueezeNet expand1x1", "pointwise", (1, 16, 55, 55), (64, 16, 1, 1), 1, 0, 1, 1, True),
    ("c3-r18-64", "ResNet-18 layer1", "3x3", (1, 64, 56, 56), (64, 64, 3, 3), 1, 1, 1, 1, True),
    ("c3-r18-256", "ResNet-18 layer3", "3x3", (1, 256, 14, 14), (256, 256, 3, 3), 1, 1, 1, 1, True),
    ("c3-r18-512", "ResNet-18 layer4", "3x3", (1, 512, 7, 7), (512, 512, 3, 3), 1, 1, 1, 1, True),
    ("c3-unet", "U-Net level 1", "3x3", (1, 32, 224, 224), (32, 32, 3, 3), 1, 1, 1, 1, True),
    ("c3-cifar", "ResNet-20 (CIFAR)", "3x3", (1, 16, 32, 32), (16, 16, 3, 3), 1, 1, 1, 1, True),
    ("c3s2-r18", "ResNet-18 layer2", "3x3 s2", (1, 64, 56, 56), (128, 64, 3, 3), 2, 1, 1, 1, True),
    ("c3s2-128", "3x3 s2, 128 channels", "3x3 s2", (1, 128, 56, 56), (128, 128, 3, 3), 2, 1, 1, 1, True),
    ("c3s2-yolo", "YOLO-tiny", "3x3 s2", (1, 32, 208, 208), (64, 32, 3, 3), 2, 1, 1, 1, True),
    ("dw3-mbv2", "MobileNetV2", "depthwise", (1, 144, 56, 56), (144, 1, 3, 3), 1, 1, 1, 144, True),
    ("dw3s2-mbv2", "MobileNetV2", "depthwise s2", (1, 96, 112, 112), (96, 1, 3, 3), 2, 1, 1, 96, True),
    ("dw5-effnet", "EfficientNet-B0", "depthwise", (1, 240, 28, 28), (240, 1, 5, 5), 1, 2, 1, 240, True),
    ("dw5s2-effnet", "EfficientNet-B0", "depthwise s2", (1, 144, 56, 56), (144, 1, 5, 5), 2, 2, 1, 144, True),
    ("dw7-convnext", "ConvNeXt-T block", "depthwise", (1, 96, 56, 56), (96, 1, 7, 7), 1, 3, 1, 96, True),
    ("grp-resnext", "ResNeXt-50 32x4d", "grouped", (1, 128, 56, 56), (128, 4, 3, 3), 1, 1, 1, 32, True),
    ("grp2-alex", "AlexNet conv2, 2 groups", "grouped", (1, 96, 27, 27), (256, 48, 5, 5), 1, 2, 1, 2, True),
    ("c5-inc", "5x5 branch (Inception)", "5x5", (1, 48, 35, 35), (64, 48, 5, 5), 1, 2, 1, 1, True),
    ("dil2", "DeepLab", "dilated", (1, 256, 28, 28), (256, 256, 3, 3), 1, 2, 2, 1, True),
    ("dil4", "DeepLab", "dilated", (1, 128, 32, 32), (128, 128, 3, 3), 1, 4, 4, 1, True),
    ("b8-c3", "W4: ResNet layer1, batch 8", "3x3 batch 8", (8, 64, 56, 56), (64, 64, 3, 3), 1, 1, 1, 1, True),
    ("b8-pw", "pointwise, batch 8", "pointwise batch 8", (8, 128, 28, 28), (128, 128, 1, 1), 1, 0, 1, 1, True),
    ("W1", "gray 1080p", IMAGE_FILTER, (1, 1, 1080, 1920), (1, 1, 3, 3), 1, 1, 1, 1, False),
    ("W2", "box blur, gray 4K", IMAGE_FILTER, (1, 1, 2160, 3840), (1, 1, 5, 5), 1, 2, 1, 1, False),
    ("W3", "RGB 1080p to one map", IMAGE_FILTER, (1, 3, 1080, 1920), (1, 3, 3, 3), 1, 0, 1, 1, False),
    ("W5", "gray 1080p, dense", IMAGE_FILTER, (1, 1, 1080, 1920), (1, 1, 15, 15), 1, 7, 1, 1, False),
    ("W6", "RGB 1080p, per channel", IMAGE_FILTER, (1, 3, 1080, 1920), (3, 1, 5, 5), 1, 2, 1, 3, False),
]
BOX = {"W2"}

# Layers outside the zoo (`--outside`), to keep the engine honest on classes that the zoo
# and the issue do not list; reported in the table and with their own geometric mean,
# never in the zoo's. Same columns as ZOO.
OUTSIDE = [
    ("x-patch4", "ConvNeXt stem (patchify)", "outside: patchify", (1, 3, 224, 224), (96, 3, 4, 4), 4, 0, 1, 1, True),
    ("x-patch16", "ViT-B/16 patch embedding", "outside: patchify", (1, 3, 224, 224), (768, 3, 16, 16), 16, 0, 1, 1, True),
    ("x-c5s2", "5x5 stride 2, 32 -> 64", "outside: 5x5 s2", (1, 32, 112, 112), (64, 32, 5, 5), 2, 2, 1, 1, True),
    ("x-g4", "3x3, 4 groups", "outside: grouped", (1, 128, 28, 28), (128, 32, 3, 3), 1, 1, 1, 4, True),
    ("x-g8", "3x3, 8 groups", "outside: grouped", (1, 256, 14, 14), (256, 32, 3, 3), 1, 1, 1, 8, True),
    ("x-dwdil2", "depthwise 3x3, dilation 2", "outside: depthwise dilated", (1, 256, 28, 28), (256, 1, 3, 3), 1, 2, 2, 256, True),
    ("x-pw-small", "1x1, 32 -> 16", "outside: pointwise", (1, 32, 112, 112), (16, 32, 1, 1), 1, 0, 1, 1, True),
    ("x-pw-deep7", "1x1, 1024 -> 1024 on 7x7", "outside: deep pointwise", (1, 1024, 7, 7), (1024, 1024, 1, 1), 1, 0, 1, 1, True),
    ("x-c3-deep4", "3x3, 512 on 4x4", "outside: deep 3x3", (1, 512, 4, 4), (512, 512, 3, 3), 1, 1, 1, 1, True),
    ("x-c3s2-512", "3x3 stride 2, 256 -> 512", "outside: deep 3x3 s2", (1, 256, 14, 14), (512, 256, 3, 3), 2, 1, 1, 1, True),
    ("x-c7", "7x7, 64 channels", "outside: 7x7", (1, 64, 56, 56), (64, 64, 7, 7), 1, 3, 1, 1, True),
    ("x-c3-d3", "3x3, dilation 3", "outside: dilated", (1, 64, 56, 56), (64, 64, 3, 3), 1, 3, 3, 1, True),
    ("x-b4-stem", "7x7/2 stem, batch 4", "outside: stem batch 4", (4, 3, 224, 224), (64, 3, 7, 7), 2, 3, 1, 1, True),
    ("x-1ch", "3x3, 1 -> 16 on 256x256", "outside: first layer", (1, 1, 256, 256), (16, 1, 3, 3), 1, 1, 1, 1, True),
    ("x-b16", "3x3, 64 channels, batch 16", "outside: 3x3 batch 16", (16, 64, 32, 32), (64, 64, 3, 3), 1, 1, 1, 1, True),
]


def as_layer(row) -> dict:
    """A zoo row as the dict the workers get (explicit pairs; padding [t, b, l, r])."""
    lid, net, cls, xs, ws, s, p, d, g, bias = row
    return {"id": lid, "net": net, "class": cls, "input": list(xs), "weight": list(ws),
            "stride": [s, s], "padding": [p] * 4, "dilation": [d, d], "groups": g,
            "bias": bias, "box": lid in BOX}


def out_hw(layer) -> tuple[int, int]:
    (_, _, h, w), (_, _, kh, kw) = layer["input"], layer["weight"]
    t, b, l, r = layer["padding"]
    (sh, sw), (dh, dw) = layer["stride"], layer["dilation"]
    return (h + t + b - dh * (kh - 1) - 1) // sh + 1, (w + l + r - dw * (kw - 1) - 1) // sw + 1


def macs(layer) -> int:
    n, cout, (oh, ow) = layer["input"][0], layer["weight"][0], out_hw(layer)
    return n * cout * oh * ow * math.prod(layer["weight"][1:])


def geometry(layer) -> str:
    """E.g. `1×3×224×224 → 64, 7×7 s2 p3`."""
    cout, _, kh, kw = layer["weight"]
    s, d, g, p = layer["stride"][0], layer["dilation"][0], layer["groups"], layer["padding"][0]
    extra = "".join(f" {k}{v}" for k, v in (("s", s), ("d", d), ("g", g)) if v != 1)
    return f"{'×'.join(map(str, layer['input']))} → {cout}, {kh}×{kw}{extra} p{p}"


# ----------------------------------------------------------------------------- processes

class Worker:
    """A peer in a process of its own: one JSON command per line in, one JSON reply out.
    `cmd` is the process's command line (compare.py runs peer_worker.py; photo.py runs
    itself with --worker)."""

    def __init__(self, side: str, cmd: list[str], env: dict | None = None):
        self.side = side
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     env=env)

    def ask(self, op: str, **kw) -> dict:
        self.proc.stdin.write(json.dumps({"op": op, **kw}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the {self.side} worker died (exit code {self.proc.wait()})")
        return json.loads(line)

    def close(self):
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class ConvdServer:
    """A convd on a free local port, `--log-level warn`, with `env` added to ours; ready
    when `/readyz` answers."""

    def __init__(self, binary: str, env: dict | None = None):
        if not os.access(binary, os.X_OK):
            sys.exit(f"{binary} not found: build it with `cargo build --release --bin convd` (or pass --convd)")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen([binary, "--bind", f"127.0.0.1:{self.port}", "--log-level", "warn"],
                                     stdout=self.log, stderr=subprocess.STDOUT,
                                     env={**os.environ, **(env or {})})
        self.pid = self.proc.pid
        for _ in range(400):
            try:
                urllib.request.urlopen(f"{self.url}/readyz", timeout=1).read()
                return
            except OSError:
                if self.proc.poll() is not None:
                    break
                time.sleep(0.05)
        self.close()
        self.log.seek(0)
        sys.exit(f"convd did not start:\n{self.log.read().decode(errors='replace')}")

    def get_json(self, path: str):
        with urllib.request.urlopen(f"{self.url}{path}", timeout=10) as r:
            return json.loads(r.read())

    def close(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# ----------------------------------------------------------------------------- machine

def busy_processes() -> list[str]:
    """Running cargo/rustc processes, as `pid name` (stopped ones, state T, use no CPU)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/comm") as f:
                comm = f.read().strip()
            with open(f"/proc/{pid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if comm in ("cargo", "rustc") and state != "T":
            found.append(f"{pid} {comm}")
    return found


def quiet_check(when: str) -> dict:
    """Load average and builds running; warns loudly on stderr when the machine is busy."""
    with open("/proc/loadavg") as f:
        load = [float(v) for v in f.read().split()[:3]]
    busy = busy_processes()
    warnings = []
    if load[0] > 0.5:
        warnings.append(f"1-minute load average {load[0]:.2f} > 0.5")
    if busy:
        warnings.append(f"cargo/rustc running: {', '.join(busy)}")
    if warnings:
        bar = "!" * 78
        print(f"\n{bar}\nWARNING ({when}): the machine is not quiet, figures are unreliable:\n  "
              + "\n  ".join(warnings) + f"\n{bar}\n", file=sys.stderr)
    return {"loadavg": load, "cargo_rustc": busy, "warnings": warnings}


def machine() -> dict:
    info = {"uname": " ".join(platform.uname()), "model_name": None, "nproc": os.cpu_count()}
    flags: list[str] = []
    with open("/proc/cpuinfo") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key.strip() == "model name" and info["model_name"] is None:
                info["model_name"] = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = value.split()
    with open("/proc/meminfo") as f:
        kib = int(next(line for line in f if line.startswith("MemTotal")).split()[1])
    info["memory_gib"] = round(kib / 2**20, 1)
    info["cpu_flags"] = {fl: fl in flags for fl in ("avx2", "avx512f", "fma")}
    return info


def convd_build(binary: str) -> dict:
    """The binary's version and age, and the commit of the work tree it sits in (which
    may be another git worktree than this one)."""
    def run(*cmd, cwd=None):
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, timeout=10)
            return p.stdout.strip() if p.returncode == 0 else None
        except (OSError, subprocess.TimeoutExpired):
            return None
    top = run("git", "rev-parse", "--show-toplevel", cwd=os.path.dirname(binary))
    info = {"binary": binary, "version": run(binary, "--version"),
            "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(os.path.getmtime(binary))),
            "work_tree": top, "git_head": None, "src_modified": None}
    if top:
        info["git_head"] = run("git", "rev-parse", "--short", "HEAD", cwd=top)
        info["src_modified"] = bool(run("git", "status", "--porcelain", "--", "src", "Cargo.toml", "Cargo.lock",
                                        cwd=top))
    return info


def check_layers(layers, workers, tmp) -> tuple[dict, list[str], dict]:
    """Compares every side's output with ONNX Runtime's.

    Returns (results by layer, fatal failures, peers unsupported by layer). A layer convd
    refuses gets `refused`; a layer ORT cannot compute is left out as unverified."""
    results, failures, unsupported = {}, [], {}
    for layer in layers:
        lid = layer["id"]
        ref_path = os.path.join(tmp, f"{lid}.onnxruntime.npy")
        res = workers["onnxruntime"].ask("output", layer=layer, path=ref_path)
        entry = results[lid] = {}
        unsupported[lid] = set()
        if "error" in res:
            entry["unverified"] = res["error"]
            print(f"  {lid}: ONNX Runtime failed ({res['error']}); layer left out", file=sys.stderr)
            continue
        ref = np.load(ref_path)
        scale = max(float(np.abs(ref).max()), 1e-30)
        for side, w in workers.items():
            if side == "onnxruntime":
                continue
            path = os.path.join(tmp, f"{lid}.{side}.npy")
            res = w.ask("output", layer=layer, path=path)
            if "skip" in res:
                unsupported[lid].add(side)
                continue
            if "error" in res:
                if side == "convd":
                    entry["refused"] = res["error"]
                    print(f"  {lid}: convd refused it: {res['error']}", file=sys.stderr)
                else:
                    unsupported[lid].add(side)
                    entry[f"{side}_error"] = res["error"]
                    print(f"  {lid}: {side} failed ({res['error']}); not timed there", file=sys.stderr)
                continue
            got = np.load(path)
            if got.shape != ref.shape:
                err = math.inf
                entry[f"{side}_shape"] = list(got.shape)
            else:
                err = float(np.abs(got.astype(np.float64) - ref).max()) / scale
            entry[side] = err
            if side == "convd":
                entry["convd_algorithm"] = res.get("algorithm", "?")
            status = "ok" if err <= TOLERANCE else "FAIL"
            print(f"  {lid}: {side} vs ORT: relative error {err:.2e} {status}", file=sys.stderr)
            if not err <= TOLERANCE:
                failures.append(f"{lid}: {side} differs from ONNX Runtime: max |diff| / max |y| = {err:.3g}"
                                + (f" (shape {list(got.shape)} vs {list(ref.shape)})" if got.shape != ref.shape else ""))
            os.unlink(path)
        os.unlink(ref_path)
    return results, failures, unsupported


def run_rounds(layers, sides, workers, unsupported, args) -> tuple[dict, dict]:
    """The timed rounds: raw[id][side] = per-round minima (None for a failed round)."""
    raw = {l["id"]: {s: [] for s in sides if s not in unsupported[l["id"]]} for l in layers}
    algos = {l["id"]: [] for l in layers}
    for r in range(args.rounds):
        k = r % len(sides)
        order = sides[k:] + sides[:k]
        t0 = time.perf_counter()
        for side in order:
            for layer in layers:
                lid = layer["id"]
                if side not in raw[lid]:
                    continue
                res = workers[side].ask("time", layer=layer, reps=args.reps)
                if "skip" in res:
                    del raw[lid][side]
                    continue
                if "error" in res:
                    print(f"  round {r + 1}: {lid} on {side} failed: {res['error']}", file=sys.stderr)
                raw[lid][side].append(res.get("ms"))
                if side == "convd":
                    algos[lid].append(res.get("algorithm", "?"))
            time.sleep(args.pause)
        print(f"round {r + 1}/{args.rounds} ({' → '.join(order)}): {time.perf_counter() - t0:.0f} s",
              file=sys.stderr)
    return raw, algos


def run_e2e(workers, args, tmp) -> dict:
    """The end-to-end pipeline through convd against OpenCV, in rounds of its own."""
    png = os.path.join(tmp, "e2e.png")
    res = workers["convd"].ask("e2e_output", path=png)
    if "error" in res:
        print(f"E2E: convd failed: {res['error']}", file=sys.stderr)
        return {"error": res["error"]}
    check = workers["opencv"].ask("e2e_compare", path=png)
    print(f"E2E check (convd PNG vs exact reference): {check}", file=sys.stderr)
    if not check.get("ok"):
        print("WARNING: convd's E2E image differs from the reference pipeline by more than 1 level",
              file=sys.stderr)
    out = {"check": check, "algorithm": res.get("algorithm"), "convd_ms": [], "convd_rps": [], "opencv_ms": []}
    sides = ["convd", "opencv"]
    for r in range(args.rounds):
        for side in sides[r % 2:] + sides[:r % 2]:
            res = workers[side].ask("e2e", reps=args.reps)
            if "error" in res:
                print(f"  E2E round {r + 1}: {side} failed: {res['error']}", file=sys.stderr)
            out[f"{side}_ms"].append(res.get("ms"))
            if side == "convd":
                out["convd_rps"].append(res.get("throughput_rps"))
            time.sleep(args.pause)
        print(f"E2E round {r + 1}/{args.rounds}", file=sys.stderr)
    return out


# ----------------------------------------------------------------------------- report

def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def summarise(layer, raw, algos) -> dict:
    """Medians of the per-round minima, best peer, ratio and per-round ratio spread."""
    lid = layer["id"]
    med = {s: median(v) for s, v in raw.get(lid, {}).items()}
    peers = {s: m for s, m in med.items() if s != "convd" and m is not None}
    row = {"medians_ms": med, "best_peer": None, "ratio": None, "spread": None}
    seen = [a for a in algos.get(lid, []) if a]
    row["algorithm"] = "/".join(dict.fromkeys(seen)) if seen else "?"
    if med.get("convd") is not None and peers:
        best = min(peers, key=peers.get)
        row["best_peer"], row["ratio"] = best, med["convd"] / peers[best]
        per_round = []
        for i, c in enumerate(raw[lid]["convd"]):
            pr = [raw[lid][s][i] for s in peers if i < len(raw[lid][s]) and raw[lid][s][i] is not None]
            if c is not None and pr:
                per_round.append(c / min(pr))
        row["per_round_ratio"] = per_round
        row["spread"] = [min(per_round), max(per_round)] if per_round else None
    if med.get("convd"):
        row["convd_gflops"] = 2 * macs(layer) / med["convd"] / 1e6
    return row


def fmt_ms(v) -> str:
    if v is None:
        return "–"
    return f"{v:.3f}" if v < 10 else f"{v:.2f}" if v < 100 else f"{v:.1f}"


def geomean(values):
    values = [v for v in values if v]
    return math.exp(sum(map(math.log, values)) / len(values)) if values else None


def print_report(layers, rows, checks, e2e, meta):
    m = meta["machine"]
    print(f"\n## convd vs peers, {meta['date']}\n")
    print(f"{m['model_name']}, {m['nproc']} CPUs, {m['memory_gib']} GiB; {meta['convd']['version']} "
          f"(HEAD {meta['convd']['git_head']}{', src modified' if meta['convd']['src_modified'] else ''}); "
          f"{meta['rounds']} rounds × {meta['reps']} reps, median of per-round minima; "
          f"load {meta['quiet_before']['loadavg'][0]:.2f} → {meta['quiet_after']['loadavg'][0]:.2f}\n")
    for when in ("before", "after"):
        if warnings := meta[f"quiet_{when}"]["warnings"]:
            print(f"**WARNING: the machine was not quiet {when} the run: {'; '.join(warnings)}**\n")
    for note in meta["notes"]:
        print(f"Note: {note}\n")
    if layers:
        print("| id | layer | class | convd ms | algorithm | ORT ms | OpenCV ms | Paddle ms | best peer | ratio "
              "| spread (min–max) | convd GFLOP/s |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for layer in layers:
        lid, row, chk = layer["id"], rows.get(layer["id"]), checks.get(layer["id"], {})
        name = f"{layer['net']}: {geometry(layer)}"
        if row is None:
            why = "refused by convd" if "refused" in chk else "unverified"
            print(f"| {lid} | {name} | {layer['class']} | {why} | | | | | | | | |")
            continue
        med = row["medians_ms"]
        ratio = f"{row['ratio']:.2f}" if row["ratio"] is not None else "–"
        spread = f"{row['spread'][0]:.2f}–{row['spread'][1]:.2f}" if row["spread"] else "–"
        gflops = f"{row['convd_gflops']:.1f}" if row.get("convd_gflops") else "–"
        print(f"| {lid} | {name} | {layer['class']} | {fmt_ms(med.get('convd'))} | {row['algorithm']} | "
              f"{fmt_ms(med.get('onnxruntime'))} | {fmt_ms(med.get('opencv'))} | {fmt_ms(med.get('paddle'))} | "
              f"{LABEL.get(row['best_peer'], '–')} | {ratio} | {spread} | {gflops} |")
    outside = {r[0] for r in OUTSIDE}
    zoo = [rows[l["id"]]["ratio"] for l in layers
           if l["id"] in rows and l["class"] != IMAGE_FILTER and l["id"] not in outside]
    filters = [rows[l["id"]]["ratio"] for l in layers if l["id"] in rows and l["class"] == IMAGE_FILTER]
    beyond = [rows[l["id"]]["ratio"] for l in layers if l["id"] in rows and l["id"] in outside]
    print()
    for label, ratios in (("CNN-layer zoo", zoo), ("image filters W1–W6", filters), ("all layers", zoo + filters),
                          ("layers outside the zoo", beyond)):
        ratios = [r for r in ratios if r]
        if ratios:
            print(f"- geometric mean of the ratios, {label}: **{geomean(ratios):.2f}** "
                  f"({len(ratios)} layer{'s' * (len(ratios) != 1)}, {sum(r <= 1 for r in ratios)} at ratio ≤ 1)")
    refused = {lid: c["refused"] for lid, c in checks.items() if "refused" in c}
    for lid, err in refused.items():
        print(f"- {lid}: convd refused the layer: {err}")
    if e2e and "error" not in e2e:
        lat, ocv, rps = median(e2e["convd_ms"]), median(e2e["opencv_ms"]), median(e2e["convd_rps"])
        ratios = [c / o for c, o in zip(e2e["convd_ms"], e2e["opencv_ms"]) if c and o]
        print("\n### End-to-end: 1080p PNG → gray → 3×3 Laplacian → min-max → PNG\n")
        print("| | convd ms (c=1, client) | OpenCV ms | ratio | spread (min–max) | convd req/s at c=4 |")
        print("|---|---|---|---|---|---|")
        ratio = f"{lat / ocv:.2f}" if lat and ocv else "–"
        spread = f"{min(ratios):.2f}–{max(ratios):.2f}" if ratios else "–"
        print(f"| E2E | {fmt_ms(lat)} | {fmt_ms(ocv)} | {ratio} | {spread} | {rps:.1f} |" if rps else
              f"| E2E | {fmt_ms(lat)} | {fmt_ms(ocv)} | {ratio} | {spread} | – |")
        c = e2e["check"]
        print(f"\nconvd's PNG against an exact reference (Pillow luma, min-max rounded): "
              f"{'ok' if c.get('ok') else '**DIFFERENT**'} (max {c.get('max_diff')} levels, "
              f"{c.get('pixels_differing')} pixels differ); the OpenCV pipeline's cvtColor rounding puts it "
              f"{c.get('opencv_pipeline_max_diff')} levels from the reference")
    elif e2e:
        print(f"\nE2E failed: {e2e['error']}")


def compact_json(obj, indent: int = 0) -> str:
    """Indented JSON, but lists of scalars on one line (small files, readable diffs)."""
    pad, inner = " " * indent, " " * (indent + 1)
    if isinstance(obj, dict) and obj:
        items = (f"{inner}{json.dumps(k)}: {compact_json(v, indent + 1)}" for k, v in obj.items())
        return "{\n" + ",\n".join(items) + f"\n{pad}}}"
    if isinstance(obj, list) and any(isinstance(v, (dict, list)) for v in obj):
        return "[\n" + ",\n".join(inner + compact_json(v, indent + 1) for v in obj) + f"\n{pad}]"
    return json.dumps(obj, ensure_ascii=False)


def rounded(v):
    """Floats to 5 significant digits (0.1 µs below 10 ms; keeps the JSON small)."""
    if isinstance(v, float):
        return float(f"{v:.5g}") if math.isfinite(v) else str(v)
    if isinstance(v, list):
        return [rounded(x) for x in v]
    if isinstance(v, dict):
        return {k: rounded(x) for k, x in v.items()}
    return v


# ----------------------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--convd", default=os.path.join(ROOT, "target", "release", "convd"),
                    help="the release binary (default target/release/convd)")
    ap.add_argument("--rounds", type=int, default=7, help="rounds (default 7)")
    ap.add_argument("--reps", type=int, default=5, help="timed calls per layer, side and round, after a warm-up (5)")
    ap.add_argument("--pause", type=float, default=0.5, help="seconds between sides (0.5)")
    ap.add_argument("--only", default="", metavar="ID[,ID]",
                    help="only the layers whose id contains one of these substrings (case-sensitive); "
                         "the end-to-end pipeline (id E2E) then runs only when named too")
    ap.add_argument("--sides", default=",".join(SIDES), help=f"comma-separated, from {','.join(SIDES)}")
    ap.add_argument("--no-e2e", action="store_true", help="skip the end-to-end image pipeline")
    ap.add_argument("--outside", action="store_true",
                    help="also time the layers outside the zoo (OUTSIDE; their own geometric mean)")
    args = ap.parse_args()
    if args.rounds < 1 or args.reps < 1:
        ap.error("--rounds and --reps must be ≥ 1")

    sides = [s.strip() for s in args.sides.split(",") if s.strip()]
    if unknown := set(sides) - set(SIDES):
        ap.error(f"unknown sides {sorted(unknown)}; choose from {','.join(SIDES)}")
    if "convd" not in sides:
        ap.error("--sides must include convd (the ratios are convd / best peer)")
    wanted = [s.strip() for s in args.only.split(",") if s.strip()]
    rows_wanted = ZOO + (OUTSIDE if args.outside else [])
    layers = [as_layer(r) for r in rows_wanted if not wanted or any(w in r[0] for w in wanted)]
    e2e_wanted = not args.no_e2e and (not wanted or any(w in "E2E" for w in wanted))
    if not layers and not e2e_wanted:
        ap.error(f"--only {args.only!r} matches no layer")
    if e2e_wanted and not os.path.exists(PHOTO):
        sys.exit(f"{PHOTO} missing (bench/run_compare.sh fetches it), or pass --no-e2e")

    quiet_before = quiet_check("before the run")
    server = ConvdServer(os.path.abspath(args.convd))
    needed = sorted(set(sides) | {"onnxruntime"} | ({"opencv"} if e2e_wanted else set()), key=SIDES.index)
    workers: dict[str, Worker] = {}
    try:
        for side in needed:
            workers[side] = Worker(side, [sys.executable, WORKER, side, "--url", server.url, "--photo", PHOTO])
        versions, notes = {}, []
        for side, w in list(workers.items()):
            hello = w.ask("hello")
            versions.update(hello["versions"])
            if not hello["available"]:
                w.close()
                del workers[side]
                note = f"{side} unavailable ({hello['reason']})"
                if side == "paddle":
                    note += "; WITH_PADDLE=1 bench/run_compare.sh installs it"
                notes.append(note)
                print(note, file=sys.stderr)
                if side in ("convd", "onnxruntime") or (side == "opencv" and e2e_wanted):
                    sys.exit(f"{side} is required")
        sides = [s for s in sides if s in workers]
        versions["python"] = platform.python_version()

        with tempfile.TemporaryDirectory(prefix="convd-compare-") as tmp:
            if layers:
                print(f"checking {len(layers)} layers against ONNX Runtime (relative tolerance {TOLERANCE})",
                      file=sys.stderr)
            check_workers = {s: workers[s] for s in needed if s in workers and (s in sides or s == "onnxruntime")}
            checks, failures, unsupported = check_layers(layers, check_workers, tmp)
            if failures:
                print("\n" + "X" * 78 + "\nCORRECTNESS CHECK FAILED — nothing timed:\n  " + "\n  ".join(failures)
                      + "\n" + "X" * 78, file=sys.stderr)
                sys.exit(1)
            timed = [l for l in layers if "refused" not in checks[l["id"]] and "unverified" not in checks[l["id"]]]
            raw, algos = {}, {}
            if timed:
                time.sleep(args.pause)
                raw, algos = run_rounds(timed, sides, workers, unsupported, args)
            e2e = run_e2e(workers, args, tmp) if e2e_wanted else None
    finally:
        for w in workers.values():
            w.close()
        server.close()
    quiet_after = quiet_check("after the run")

    rows = {l["id"]: summarise(l, raw, algos) for l in timed}
    stamp = time.gmtime()
    meta = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", stamp),
        "machine": machine(),
        "quiet_before": quiet_before,
        "quiet_after": quiet_after,
        "convd": convd_build(os.path.abspath(args.convd)),
        "versions": versions,
        "notes": notes,
        "rounds": args.rounds,
        "reps": args.reps,
        "pause_s": args.pause,
        "sides": sides,
        "tolerance": TOLERANCE,
    }
    print_report(layers, rows, checks, e2e, meta)

    doc = {**meta, "method": "per-round minimum of `reps` calls after a warm-up; figure = median over rounds; "
                             "ratio = convd / best peer; convd figure = Server-Timing conv stage",
           "layers": {}}
    for layer in layers:
        lid = layer["id"]
        doc["layers"][lid] = {
            "spec": {k: layer[k] for k in ("net", "class", "input", "weight", "stride", "padding", "dilation",
                                           "groups", "bias")},
            "macs": macs(layer),
            "check": checks.get(lid, {}),
            "algorithm_per_round": algos.get(lid, []),
            "per_round_min_ms": raw.get(lid, {}),
            **{k: v for k, v in rows.get(lid, {}).items() if k != "algorithm"},
        }
    if e2e is not None:
        doc["e2e"] = e2e
    os.makedirs(RESULTS, exist_ok=True)
    path = os.path.join(RESULTS, time.strftime("compare-%Y%m%dT%H%M%SZ.json", stamp))
    with open(path, "w") as f:
        f.write(compact_json(rounded(doc)) + "\n")
    print(f"\nraw figures: {os.path.relpath(path, ROOT)}")


if __name__ == "__main__":
    main()
