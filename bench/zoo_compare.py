#!/usr/bin/env python3
"""convd against ONNX Runtime and OpenCV on a zoo of CNN layers and image filters.

Method (the rules of the performance issue):
- each side runs in its own process: convd is the release server (its `conv` stage from
  `Server-Timing`, which also names the algorithm that ran); ONNX Runtime (one `Conv`
  node, `intra_op_num_threads=2`) and OpenCV (`filter2D`, image filters only, best of 1
  and 2 threads) each run in a worker process (`--worker SIDE`) driven over stdin/stdout;
- the sides alternate in rounds, in an order that rotates every round, with a pause
  between sides (ONNX Runtime's and OpenMP's threads spin after a call and slow whoever
  runs next);
- in every round each side runs each layer `reps` times after a warm-up and keeps its
  minimum; a figure is the median over rounds of those minima; the spread is the min-max
  of the per-round ratios convd / best peer;
- before timing, convd's output of every layer is checked against ONNX Runtime's
  (relative max error <= 1e-4), so no wrong answer is timed;
- the load average is read before and after; a busy machine is reported loudly.

Usage (bench/run_compare.sh makes the venv and builds convd):
    python bench/zoo_compare.py [--rounds 5] [--reps 5] [--only stem,dw] [--convd PATH]
"""

import argparse
import io
import json
import math
import os
import platform
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# id, source, class, input NCHW, weight, stride, padding, dilation, groups, bias
ZOO = [
    ("stem-r18", "ResNet-18 conv1", "stem", (1, 3, 224, 224), (64, 3, 7, 7), 2, 3, 1, 1, True),
    ("stem-alex", "AlexNet conv1", "stem", (1, 3, 224, 224), (64, 3, 11, 11), 4, 2, 1, 1, True),
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
    ("c3s2-128", "3x3 s2 128", "3x3 s2", (1, 128, 56, 56), (128, 128, 3, 3), 2, 1, 1, 1, True),
    ("c3s2-yolo", "YOLO-tiny", "3x3 s2", (1, 32, 208, 208), (64, 32, 3, 3), 2, 1, 1, 1, True),
    ("dw3-mbv2", "MobileNetV2", "depthwise", (1, 144, 56, 56), (144, 1, 3, 3), 1, 1, 1, 144, True),
    ("dw3s2-mbv2", "MobileNetV2", "depthwise s2", (1, 96, 112, 112), (96, 1, 3, 3), 2, 1, 1, 96, True),
    ("dw5-effnet", "EfficientNet-B0", "depthwise", (1, 240, 28, 28), (240, 1, 5, 5), 1, 2, 1, 240, True),
    ("dw5s2-effnet", "EfficientNet-B0", "depthwise s2", (1, 144, 56, 56), (144, 1, 5, 5), 2, 2, 1, 144, True),
    ("grp-resnext", "ResNeXt-50 32x4d", "grouped", (1, 128, 56, 56), (128, 4, 3, 3), 1, 1, 1, 32, True),
    ("dil2", "DeepLab", "dilated", (1, 256, 28, 28), (256, 256, 3, 3), 1, 2, 2, 1, True),
    ("dil4", "DeepLab", "dilated", (1, 128, 32, 32), (128, 128, 3, 3), 1, 4, 4, 1, True),
    ("b8-c3", "W4: ResNet layer1, batch 8", "3x3 batch 8", (8, 64, 56, 56), (64, 64, 3, 3), 1, 1, 1, 1, True),
    ("b8-pw", "pointwise, batch 8", "pointwise batch 8", (8, 128, 28, 28), (128, 128, 1, 1), 1, 0, 1, 1, True),
    ("W1", "3x3 on 1080p", "image filter", (1, 1, 1080, 1920), (1, 1, 3, 3), 1, 1, 1, 1, False),
    ("W2", "5x5 box on 4K", "image filter", (1, 1, 2160, 3840), (1, 1, 5, 5), 1, 2, 1, 1, False),
    ("W3", "3ch -> 1, 3x3", "image filter", (1, 3, 1080, 1920), (1, 3, 3, 3), 1, 0, 1, 1, False),
    ("W5", "15x15 dense", "image filter", (1, 1, 1080, 1920), (1, 1, 15, 15), 1, 7, 1, 1, False),
    ("W6", "depthwise 5x5 RGB", "image filter", (1, 3, 1080, 1920), (3, 1, 5, 5), 1, 2, 1, 3, False),
]
TARGETS = {"W1": 0.5, "W2": 0.4, "W3": 0.5, "W5": 0.5, "W6": 0.4}
OPENCV_LAYERS = {"W1", "W2", "W3", "W5", "W6"}


def layer_data(layer):
    """Deterministic input, weight and bias of a layer (same on every side)."""
    lid, _, _, xs, ws, _, _, _, _, has_bias = layer
    rng = np.random.default_rng(sum(map(ord, lid)))
    x = rng.random(xs, dtype=np.float32)
    w = np.full(ws, 1 / 25, np.float32) if lid == "W2" else rng.random(ws, dtype=np.float32) - 0.5
    b = (rng.random(ws[0], dtype=np.float32) - 0.5) if has_bias else None
    return x, w, b


def macs(layer):
    _, _, _, xs, ws, s, p, d, g, _ = layer
    oh = (xs[2] + 2 * p - d * (ws[2] - 1) - 1) // s + 1
    ow = (xs[3] + 2 * p - d * (ws[3] - 1) - 1) // s + 1
    return xs[0] * ws[0] * oh * ow * ws[1] * ws[2] * ws[3]


# ----------------------------------------------------------------------------- workers

def ort_session(layer):
    import onnxruntime as ort
    from onnx import TensorProto, helper
    _, _, _, xs, ws, s, p, d, g, _ = layer
    _, w, b = layer_data(layer)
    inits = [helper.make_tensor("w", TensorProto.FLOAT, ws, w.flatten())]
    inputs = ["x", "w"]
    if b is not None:
        inits.append(helper.make_tensor("b", TensorProto.FLOAT, [ws[0]], b))
        inputs.append("b")
    node = helper.make_node("Conv", inputs, ["y"], strides=[s, s], pads=[p] * 4, dilations=[d, d], group=g)
    graph = helper.make_graph([node], "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, xs)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def opencv_fn(layer):
    import cv2
    lid = layer[0]
    x, w, _ = layer_data(layer)
    border = cv2.BORDER_CONSTANT
    if lid in ("W1", "W2", "W5"):
        k = np.ascontiguousarray(w[0, 0])
        return lambda: cv2.filter2D(x[0, 0], -1, k, borderType=border)
    if lid == "W3":  # a different 3x3 per channel, summed: three filters and two adds
        ks = [np.ascontiguousarray(w[0, c]) for c in range(3)]
        return lambda: sum(cv2.filter2D(x[0, c], -1, ks[c], borderType=border) for c in range(3))
    if lid == "W6":
        ks = [np.ascontiguousarray(w[c, 0]) for c in range(3)]
        return lambda: [cv2.filter2D(x[0, c], -1, ks[c], borderType=border) for c in range(3)]
    return None


def best_of(fn, reps):
    fn()
    best = math.inf
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best * 1e3


def worker(side):
    """Serves {"layer": id, "reps": n} -> {"ms": best} and {"check": id, "npy": path}."""
    by_id = {l[0]: l for l in ZOO}
    sessions = {}
    if side == "opencv":
        import cv2
    for line in sys.stdin:
        cmd = json.loads(line)
        layer = by_id[cmd.get("layer") or cmd.get("check")]
        if side == "onnxruntime":
            if layer[0] not in sessions:
                sessions[layer[0]] = ort_session(layer)
            sess = sessions[layer[0]]
            x = layer_data(layer)[0]
            if "check" in cmd:
                want = sess.run(None, {"x": x})[0]
                got = np.load(cmd["npy"])
                err = float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-30)) if got.shape == want.shape else math.inf
                print(json.dumps({"rel_err": err}), flush=True)
                continue
            ms = best_of(lambda: sess.run(None, {"x": x}), cmd["reps"])
        else:
            fn = opencv_fn(layer)
            best = math.inf
            for threads in (1, 2):
                cv2.setNumThreads(threads)
                best = min(best, best_of(fn, cmd["reps"]))
            ms = best
        print(json.dumps({"ms": ms}), flush=True)


class Worker:
    def __init__(self, side):
        self.proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--worker", side],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def ask(self, cmd):
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


# ----------------------------------------------------------------------------- convd side

def npy_bytes(a):
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(a, dtype=np.float32))
    return buf.getvalue()


def multipart(parts):
    boundary = "convdzoo%d" % time.time_ns()
    out = io.BytesIO()
    for name, data, ctype in parts:
        out.write(f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{name}\"\r\n"
                  f"Content-Type: {ctype}\r\n\r\n".encode())
        out.write(data)
        out.write(b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue(), f"multipart/form-data; boundary={boundary}"


class Convd:
    def __init__(self, binary):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.proc = subprocess.Popen([binary, "--bind", f"127.0.0.1:{self.port}", "--log-level", "warn"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(100):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=1).read()
                break
            except OSError:
                time.sleep(0.1)
        else:
            self.proc.kill()
            sys.exit("convd did not start")
        self.bodies = {}

    def body(self, layer):
        if layer[0] not in self.bodies:
            _, _, _, _, _, s, p, d, g, _ = layer
            x, w, b = layer_data(layer)
            parts = [("input", npy_bytes(x), "application/x-npy"), ("weight", npy_bytes(w), "application/x-npy")]
            if b is not None:
                parts.append(("bias", npy_bytes(b), "application/x-npy"))
            spec = {"stride": s, "padding": p, "dilation": d, "groups": g}
            parts.append(("spec", json.dumps(spec).encode(), "application/json"))
            self.bodies[layer[0]] = multipart(parts)
        return self.bodies[layer[0]]

    def post(self, layer):
        body, ctype = self.body(layer)
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}/v1/conv2d", data=body,
                                     headers={"Content-Type": ctype, "Accept": "application/x-npy"})
        with urllib.request.urlopen(req, timeout=300) as res:
            data = res.read()
            timing = res.headers.get("Server-Timing", "")
        m = re.search(r"conv;(?:desc=\"([^\"]*)\";)?dur=([0-9.]+)", timing)
        return data, float(m.group(2)), (m.group(1) or "?")

    def best(self, layer, reps):
        self.post(layer)
        best, algo = math.inf, "?"
        for _ in range(reps):
            _, ms, algo = self.post(layer)
            best = min(best, ms)
        return best, algo

    def close(self):
        self.proc.kill()


# ----------------------------------------------------------------------------- driver

def busy_processes():
    out = subprocess.run(["ps", "-eo", "comm"], capture_output=True, text=True).stdout.split()
    return sorted({p for p in out if p in ("cargo", "rustc", "cc1", "ld", "cc1plus")})


def machine():
    cpu = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = line.split(":", 1)[1].split()
                break
    mem = open("/proc/meminfo").readline().split()[1]
    return {"uname": " ".join(platform.uname()), "cpu": cpu, "cores": os.cpu_count(), "mem_kib": int(mem),
            "flags": {f: f in flags for f in ("avx2", "fma", "avx512f", "avx512vl")}}


def versions():
    v = {"numpy": np.__version__, "python": platform.python_version()}
    for mod in ("onnxruntime", "onnx", "cv2"):
        try:
            v[mod] = __import__(mod).__version__
        except ImportError:
            v[mod] = None
    return v


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--worker")
    ap.add_argument("--convd", default=os.path.join(ROOT, "target", "release", "convd"))
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--pause", type=float, default=0.5)
    ap.add_argument("--only", default="")
    args = ap.parse_args()
    if args.worker:
        return worker(args.worker)
    layers = [l for l in ZOO if not args.only or any(s in l[0] for s in args.only.split(","))]
    load_before = os.getloadavg()
    busy = busy_processes()
    if load_before[0] > 0.5 or busy:
        print(f"WARNING: machine not quiet: load {load_before}, running {busy}", file=sys.stderr)
    convd = Convd(args.convd)
    sides = {"onnxruntime": Worker("onnxruntime"), "opencv": Worker("opencv")}
    raw = {l[0]: {"convd": [], "onnxruntime": [], "opencv": []} for l in layers}
    algos = {}
    try:
        # Correctness first: convd's answer against ONNX Runtime's, every layer.
        for layer in layers:
            data, _, algo = convd.post(layer)
            algos[layer[0]] = algo
            with tempfile.NamedTemporaryFile(suffix=".npy", delete=False) as f:
                f.write(data)
            err = sides["onnxruntime"].ask({"check": layer[0], "npy": f.name})["rel_err"]
            os.unlink(f.name)
            if not err <= 1e-4:
                sys.exit(f"{layer[0]}: convd differs from ONNX Runtime (relative error {err})")
        time.sleep(args.pause)
        order = ["convd", "onnxruntime", "opencv"]
        for r in range(args.rounds):
            for side in order[r % 3:] + order[:r % 3]:
                for layer in layers:
                    if side == "convd":
                        ms, algos[layer[0]] = convd.best(layer, args.reps)
                    elif side == "opencv" and layer[0] not in OPENCV_LAYERS:
                        continue
                    else:
                        ms = sides[side].ask({"layer": layer[0], "reps": args.reps})["ms"]
                    raw[layer[0]][side].append(ms)
                time.sleep(args.pause)
            print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
    finally:
        convd.close()
        for w in sides.values():
            w.close()
    load_after = os.getloadavg()
    rows, ratios = [], []
    for layer in layers:
        lid = layer[0]
        med = {s: statistics.median(v) for s, v in raw[lid].items() if v}
        peers = {s: m for s, m in med.items() if s != "convd"}
        best_peer = min(peers, key=peers.get)
        ratio = med["convd"] / peers[best_peer]
        per_round = [c / min(raw[lid][s][i] for s in peers) for i, c in enumerate(raw[lid]["convd"])]
        rows.append((layer, med, best_peer, ratio, min(per_round), max(per_round)))
        if layer[2] != "image filter":
            ratios.append(ratio)
    date = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    m = machine()
    print(f"\nconvd vs peers, {date}, {m['cpu']}, {m['cores']} cores; {args.rounds} rounds x {args.reps} reps; "
          f"median of per-round minima; load {load_before[0]:.2f} -> {load_after[0]:.2f}\n")
    print("| id | layer | class | convd ms | algorithm | ORT ms | OpenCV ms | ratio (spread) | convd GFLOP/s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for layer, med, best_peer, ratio, lo, hi in rows:
        ocv = f"{med['opencv']:.3f}" if "opencv" in med else ""
        target = f" (target {TARGETS[layer[0]]})" if layer[0] in TARGETS else ""
        print(f"| {layer[0]} | {layer[1]} | {layer[2]} | {med['convd']:.3f} | {algos[layer[0]]} | "
              f"{med['onnxruntime']:.3f} | {ocv} | {ratio:.2f} ({lo:.2f}-{hi:.2f}){target} | "
              f"{2 * macs(layer) / med['convd'] / 1e6:.0f} |")
    if ratios:
        gm = math.exp(sum(map(math.log, ratios)) / len(ratios))
        print(f"\ngeometric mean of the CNN-layer ratios: {gm:.2f}; layers at ratio <= 1: "
              f"{sum(r <= 1 for r in ratios)}/{len(ratios)}")
    os.makedirs(os.path.join(ROOT, "bench", "results"), exist_ok=True)
    path = os.path.join(ROOT, "bench", "results", time.strftime("zoo-%Y%m%dT%H%M%SZ.json", time.gmtime()))
    with open(path, "w") as f:
        json.dump({"date": date, "machine": m, "versions": versions(), "load_before": load_before,
                   "load_after": load_after, "busy_before": busy, "rounds": args.rounds, "reps": args.reps,
                   "algorithms": algos, "raw_ms": raw}, f, indent=1)
    print(f"\nraw figures: {os.path.relpath(path, ROOT)}")


if __name__ == "__main__":
    main()
