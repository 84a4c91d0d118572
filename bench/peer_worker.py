#!/usr/bin/env python3
"""One side of the peer comparison, in a process of its own; driven by bench/compare.py.

    python bench/peer_worker.py SIDE [--url http://127.0.0.1:PORT] [--photo PNG]

SIDE is one of:

- ``convd``: posts each layer to a running convd (``POST /v1/conv2d``, multipart ``.npy``
  parts plus a ``spec`` JSON part, ``Accept: application/x-npy``) and reports the ``conv``
  stage of the ``Server-Timing`` header and the algorithm named in its ``desc``;
- ``onnxruntime``: a one-node ONNX ``Conv`` model per layer (weights and bias as
  initialisers), ``InferenceSession`` with ``intra_op_num_threads=2``, default graph
  optimisations, ``CPUExecutionProvider``;
- ``opencv``: ``cv2.filter2D`` (one call per map, bias as ``delta``, zero border), for the
  layers it can express: stride 1, dilation 1, odd kernels, padding at most ``k // 2``, and
  either one input and one output channel per group (single-channel and depthwise
  filters) or ``c_out = 1`` with ``groups = 1`` (W3: one filter per channel, summed). The
  figure is the best of ``cv2.setNumThreads(1)`` and ``(2)``;
- ``paddle``: ``paddle.nn.functional.conv2d`` on CPU tensors made once per layer (the
  call is synchronous on the CPU; no conversion back to numpy is timed).

Protocol: one JSON object per line on stdin, one JSON reply per line on stdout. The
process's own stdout is moved to stderr at start, so that whatever a library prints
cannot corrupt the protocol. Commands (``layer`` is the dict built by compare.py):

- ``{"op": "hello"}`` -> ``{"side", "available", "reason", "versions"}``;
- ``{"op": "time", "layer": L, "reps": n}`` -> ``{"ms": best}`` (+ ``algorithm`` for
  convd, ``threads`` for OpenCV): one warm-up call, then the minimum of ``reps`` calls;
- ``{"op": "output", "layer": L, "path": P}`` -> writes the layer's output as ``.npy``;
- ``{"op": "e2e", "reps": n}`` (convd, opencv) -> the end-to-end image pipeline;
- ``{"op": "e2e_output", "path": P}`` (convd) writes its PNG answer;
  ``{"op": "e2e_compare", "path": P}`` (opencv) checks that PNG against an exact
  reference of the pipeline (at most 1 level apart).

A command that the side cannot run answers ``{"skip": reason}``; a failure answers
``{"error": message}``; the worker keeps serving either way.

Every side generates a layer's tensors itself with :func:`layer_tensors` (numpy
``default_rng`` seeded from the layer id), so all sides convolve the same numbers.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import http.client
import io
import json
import math
import os
import re
import sys
import threading
import time
import urllib.parse
import zlib

import numpy as np

# The end-to-end pipeline: the `laplacian` preset of convd (8 at the centre, -1 around,
# divided by 8) on the gray image, valid padding, min-max to 8 bits, PNG.
E2E_SPEC = b'{"preset": "laplacian", "color": "gray"}'
LAPLACIAN = np.array([[-1, -1, -1], [-1, 8, -1], [-1, -1, -1]], np.float32) / 8


# ----------------------------------------------------------------------------- layers

def layer_seed(layer_id: str) -> int:
    """The seed of a layer's tensors: stable across processes and runs."""
    return zlib.crc32(layer_id.encode())


def layer_tensors(layer: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Input (uniform [0, 1)), weight (uniform [-0.5, 0.5), or the 5x5 box 1/25 for a
    layer marked ``box``) and bias (uniform [-0.5, 0.5), when the layer has one)."""
    rng = np.random.default_rng(layer_seed(layer["id"]))
    x = rng.random(layer["input"], dtype=np.float32)
    if layer.get("box"):
        w = np.full(layer["weight"], 1 / (layer["weight"][2] * layer["weight"][3]), np.float32)
    else:
        w = rng.random(layer["weight"], dtype=np.float32) - np.float32(0.5)
    b = rng.random(layer["weight"][0], dtype=np.float32) - np.float32(0.5) if layer["bias"] else None
    return x, w, b


def best_of(fn, reps: int) -> float:
    """One warm-up call, then the fastest of `reps` calls, in milliseconds."""
    fn()
    best = math.inf
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best * 1e3


# ----------------------------------------------------------------------------- Server-Timing

def _split_unquoted(s: str, sep: str) -> list[str]:
    """Splits `s` on `sep` outside double-quoted strings (backslash escapes honoured)."""
    parts, cur, quoted, escaped = [], [], False, False
    for ch in s:
        if escaped:
            escaped = False
        elif quoted and ch == "\\":
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif ch == sep and not quoted:
            parts.append("".join(cur))
            cur = []
            continue
        cur.append(ch)
    parts.append("".join(cur))
    return parts


def parse_server_timing(value: str | None) -> dict[str, dict]:
    """Parses a ``Server-Timing`` value into ``{name: {"dur": ms or None, "desc": str or None}}``.

    Parameters may come in any order, values quoted or not; the first entry of a name wins.

    >>> t = parse_server_timing('parse;dur=0.1, conv;desc="gemm_im2col";dur=1.234, encode;dur=0.2')
    >>> t["conv"], t["parse"]["dur"]
    ({'dur': 1.234, 'desc': 'gemm_im2col'}, 0.1)
    >>> parse_server_timing('conv ; dur="2.5" ; desc=direct,x')["conv"]
    {'dur': 2.5, 'desc': 'direct'}
    >>> parse_server_timing('conv;desc="a, \\\\"b\\\\";";dur=3')["conv"]
    {'dur': 3.0, 'desc': 'a, "b";'}
    >>> parse_server_timing('conv;dur=oops')["conv"], parse_server_timing(None)
    ({'dur': None, 'desc': None}, {})
    """
    out: dict[str, dict] = {}
    for entry in _split_unquoted(value or "", ","):
        name, *params = _split_unquoted(entry, ";")
        name = name.strip()
        if not name or name in out:
            continue
        kv: dict[str, str] = {}
        for p in params:
            k, _, v = p.partition("=")
            v = v.strip()
            if len(v) >= 2 and v[0] == v[-1] == '"':
                v = re.sub(r"\\(.)", r"\1", v[1:-1])
            kv.setdefault(k.strip().lower(), v)
        try:
            dur = float(kv["dur"])
        except (KeyError, ValueError):
            dur = None
        out[name] = {"dur": dur, "desc": kv.get("desc") or None}
    return out


# ----------------------------------------------------------------------------- sides

class Side:
    """What every side answers; the base refuses everything."""

    name = "?"

    def versions(self) -> dict:
        return {"numpy": np.__version__}

    def time(self, layer: dict, reps: int) -> dict:
        return {"skip": f"{self.name} does not time layers"}

    def output(self, layer: dict, path: str) -> dict:
        return {"skip": f"{self.name} does not compute layers"}


class OnnxRuntime(Side):
    name = "onnxruntime"

    def __init__(self, _args):
        import onnx  # noqa: F401  (fail early when missing)
        import onnxruntime  # noqa: F401
        self.cache: dict[str, tuple] = {}

    def versions(self) -> dict:
        import onnx
        import onnxruntime
        return {**super().versions(), "onnxruntime": onnxruntime.__version__, "onnx": onnx.__version__}

    def session(self, layer: dict):
        if layer["id"] not in self.cache:
            import onnxruntime as ort
            from onnx import TensorProto, helper
            x, w, b = layer_tensors(layer)
            t, bo, l, r = layer["padding"]
            inits = [helper.make_tensor("w", TensorProto.FLOAT, w.shape, w.ravel())]
            if b is not None:
                inits.append(helper.make_tensor("b", TensorProto.FLOAT, b.shape, b))
            node = helper.make_node("Conv", ["x", "w"] + (["b"] if b is not None else []), ["y"],
                                    kernel_shape=list(w.shape[2:]), strides=layer["stride"],
                                    pads=[t, l, bo, r],  # ONNX: [top, left, bottom, right]
                                    dilations=layer["dilation"], group=layer["groups"])
            graph = helper.make_graph([node], layer["id"],
                                      [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape)],
                                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
            model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
            model.ir_version = 8
            so = ort.SessionOptions()
            so.intra_op_num_threads = 2
            sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
            self.cache[layer["id"]] = (sess, {"x": x})
        return self.cache[layer["id"]]

    def time(self, layer, reps):
        sess, feed = self.session(layer)
        return {"ms": best_of(lambda: sess.run(["y"], feed), reps)}

    def output(self, layer, path):
        sess, feed = self.session(layer)
        y = sess.run(["y"], feed)[0]
        np.save(path, y)
        return {"shape": list(y.shape)}


class OpenCV(Side):
    name = "opencv"

    def __init__(self, args):
        import cv2
        self.cv2 = cv2
        self.photo = args.photo
        self.cache: dict[str, object] = {}

    def versions(self):
        return {**super().versions(), "opencv": self.cv2.__version__}

    @staticmethod
    def unsupported(layer: dict) -> str | None:
        """Why filter2D cannot express the layer, or None."""
        cout, cin_g, kh, kw = layer["weight"]
        g = layer["groups"]
        if layer["stride"] != [1, 1] or layer["dilation"] != [1, 1]:
            return "filter2D has no stride or dilation"
        if kh % 2 == 0 or kw % 2 == 0:
            return "even kernel"
        t, b, l, r = layer["padding"]
        if max(t, b) > kh // 2 or max(l, r) > kw // 2:
            return "padding wider than the kernel's half"
        if not ((cin_g == 1 and cout == g) or (g == 1 and cout == 1)):
            return "not a per-channel filter"
        return None

    def prepare(self, layer: dict):
        """The timed function and the output array it fills (cached per layer)."""
        if layer["id"] in self.cache:
            return self.cache[layer["id"]]
        cv2 = self.cv2
        x, w, b = layer_tensors(layer)
        n, cin, h, wd = x.shape
        cout, cin_g, kh, kw = w.shape
        t, _, l, _ = layer["padding"]
        oh = h + sum(layer["padding"][:2]) - kh + 1
        ow = wd + sum(layer["padding"][2:]) - kw + 1
        rows = slice(kh // 2 - t, kh // 2 - t + oh)
        cols = slice(kw // 2 - l, kw // 2 - l + ow)
        same = (oh, ow) == (h, wd)
        out = np.empty((n, cout, oh, ow), np.float32)
        border = cv2.BORDER_CONSTANT
        if cin_g == 1:  # output map c filters input map c
            kernels = [np.ascontiguousarray(w[c, 0]) for c in range(cout)]
        else:  # c_out = 1: input map c through w[0, c]
            kernels = [np.ascontiguousarray(w[0, c]) for c in range(cin)]
        deltas = [float(b[c]) if b is not None else 0.0 for c in range(cout)]

        if cin_g == 1:  # one map per channel (single-channel or depthwise)
            def run():
                for i in range(n):
                    for c in range(cout):
                        if same:
                            cv2.filter2D(x[i, c], -1, kernels[c], dst=out[i, c], delta=deltas[c], borderType=border)
                        else:
                            out[i, c] = cv2.filter2D(x[i, c], -1, kernels[c], delta=deltas[c], borderType=border)[rows, cols]
        else:  # c_out = 1: one filter per input channel, summed (W3)
            def run():
                for i in range(n):
                    acc = cv2.filter2D(x[i, 0], -1, kernels[0], delta=deltas[0], borderType=border)
                    for c in range(1, cin):
                        np.add(acc, cv2.filter2D(x[i, c], -1, kernels[c], borderType=border), out=acc)
                    out[i, 0] = acc[rows, cols]
        self.cache[layer["id"]] = (run, out)
        return run, out

    def time(self, layer, reps):
        if why := self.unsupported(layer):
            return {"skip": why}
        run, _ = self.prepare(layer)
        best, threads = math.inf, None
        for n in (1, 2):
            self.cv2.setNumThreads(n)
            ms = best_of(run, reps)
            if ms < best:
                best, threads = ms, n
        return {"ms": best, "threads": threads}

    def output(self, layer, path):
        if why := self.unsupported(layer):
            return {"skip": why}
        run, out = self.prepare(layer)
        run()
        np.save(path, out)
        return {"shape": list(out.shape)}

    # The end-to-end pipeline, as one would write it with OpenCV.
    def pipeline(self, png: np.ndarray) -> bytes:
        cv2 = self.cv2
        img = cv2.imdecode(png, cv2.IMREAD_COLOR)
        gray = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY).astype(np.float32)
        y = cv2.filter2D(gray, -1, LAPLACIAN, borderType=cv2.BORDER_CONSTANT)[1:-1, 1:-1]
        u8 = cv2.normalize(y, None, 0, 255, cv2.NORM_MINMAX, dtype=cv2.CV_8U)
        return cv2.imencode(".png", u8)[1]

    def e2e(self, reps):
        png = np.fromfile(self.photo, np.uint8)
        best, threads = math.inf, None
        for n in (1, 2):
            self.cv2.setNumThreads(n)
            ms = best_of(lambda: self.pipeline(png), reps)
            if ms < best:
                best, threads = ms, n
        return {"ms": best, "threads": threads}

    def e2e_compare(self, path):
        """Checks convd's PNG (at `path`) against an exact reference of the pipeline.

        The reference takes gray as Pillow's ``convert('L')`` does (ITU-R 601-2 luma,
        ``(19595 R + 38470 G + 7471 B + 2**15) >> 16``), which is what convd documents;
        OpenCV's ``cvtColor`` rounds differently on a few pixels, and min-max stretching
        of a narrow Laplacian range magnifies that, so the timed OpenCV pipeline's own
        distance from the reference is reported for information only."""
        cv2 = self.cv2
        png = np.fromfile(self.photo, np.uint8)
        bgr = cv2.imdecode(png, cv2.IMREAD_COLOR).astype(np.uint32)
        gray = ((bgr[..., 2] * 19595 + bgr[..., 1] * 38470 + bgr[..., 0] * 7471 + 0x8000) >> 16).astype(np.float32)
        y = cv2.filter2D(gray, -1, LAPLACIAN, borderType=cv2.BORDER_CONSTANT)[1:-1, 1:-1].astype(np.float64)
        lo, hi = y.min(), y.max()
        ref = np.rint((y - lo) / (hi - lo) * 255).astype(np.int32) if hi > lo else np.zeros(y.shape, np.int32)
        ocv = cv2.imdecode(self.pipeline(png), cv2.IMREAD_UNCHANGED).astype(np.int32)
        theirs = cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_UNCHANGED)
        if theirs is None or theirs.shape != ref.shape:
            return {"ok": False, "reference_shape": list(ref.shape),
                    "convd_shape": None if theirs is None else list(theirs.shape)}
        diff = np.abs(theirs.astype(np.int32) - ref)
        return {"ok": int(diff.max()) <= 1, "shape": list(ref.shape), "max_diff": int(diff.max()),
                "pixels_differing": int((diff > 0).sum()),
                "opencv_pipeline_max_diff": int(np.abs(ocv - ref).max())}


class Paddle(Side):
    name = "paddle"

    def __init__(self, _args):
        import paddle
        import paddle.nn.functional as F
        paddle.set_device("cpu")
        self.paddle, self.F = paddle, F
        self.cache: dict[str, object] = {}

    def versions(self):
        return {**super().versions(), "paddle": self.paddle.__version__}

    def fn(self, layer):
        if layer["id"] not in self.cache:
            x, w, b = (None if a is None else self.paddle.to_tensor(a) for a in layer_tensors(layer))
            kw = dict(stride=layer["stride"], padding=layer["padding"],  # [top, bottom, left, right]
                      dilation=layer["dilation"], groups=layer["groups"])
            self.cache[layer["id"]] = lambda: self.F.conv2d(x, w, b, **kw)
        return self.cache[layer["id"]]

    def time(self, layer, reps):
        return {"ms": best_of(self.fn(layer), reps)}

    def output(self, layer, path):
        y = self.fn(layer)().numpy()
        np.save(path, y)
        return {"shape": list(y.shape)}


class HttpError(Exception):
    pass


class Convd(Side):
    name = "convd"

    def __init__(self, args):
        if not args.url:
            raise ValueError("the convd side needs --url")
        u = urllib.parse.urlsplit(args.url)
        self.host, self.port = u.hostname, u.port
        self.photo = args.photo
        self.local = threading.local()
        self.bodies: dict[str, tuple[bytes, str]] = {}

    def request(self, method, path, body, headers):
        """One request on this thread's keep-alive connection (reconnects once if dropped)."""
        for attempt in (0, 1):
            conn = getattr(self.local, "conn", None)
            if conn is None:
                conn = self.local.conn = http.client.HTTPConnection(self.host, self.port, timeout=300)
            try:
                conn.request(method, path, body=body, headers=headers)
                res = conn.getresponse()
                return res.status, res, res.read()
            except (http.client.HTTPException, ConnectionError):
                conn.close()
                self.local.conn = None
                if attempt:
                    raise

    def post(self, path, body, ctype, accept):
        status, res, data = self.request("POST", path, body, {"Content-Type": ctype, "Accept": accept})
        if status != 200:
            try:
                problem = json.loads(data)
                msg = problem.get("detail") or problem.get("title") or data[:300].decode(errors="replace")
            except ValueError:
                msg = data[:300].decode(errors="replace")
            raise HttpError(f"HTTP {status}: {msg}")
        return data, parse_server_timing(res.getheader("Server-Timing"))

    def body(self, layer):
        if layer["id"] not in self.bodies:
            x, w, b = layer_tensors(layer)
            parts = [("input", npy_bytes(x)), ("weight", npy_bytes(w))]
            if b is not None:
                parts.append(("bias", npy_bytes(b)))
            spec = {k: layer[k] for k in ("stride", "padding", "dilation", "groups")}
            self.bodies[layer["id"]] = multipart(parts, json.dumps(spec).encode())
        return self.bodies[layer["id"]]

    def conv(self, layer):
        """(output .npy bytes, conv stage ms, algorithm or "?")."""
        body, ctype = self.body(layer)
        data, timing = self.post("/v1/conv2d", body, ctype, "application/x-npy")
        conv = timing.get("conv", {})
        if conv.get("dur") is None:
            raise HttpError("no conv stage in Server-Timing")
        return data, conv["dur"], conv.get("desc") or "?"

    def time(self, layer, reps):
        self.conv(layer)
        best, algos = math.inf, []
        for _ in range(reps):
            _, ms, algo = self.conv(layer)
            best = min(best, ms)
            if algo not in algos:
                algos.append(algo)
        return {"ms": best, "algorithm": "/".join(algos)}

    def output(self, layer, path):
        data, _, algo = self.conv(layer)
        with open(path, "wb") as f:
            f.write(data)
        return {"algorithm": algo}

    def e2e_post(self):
        with open(self.photo, "rb") as f:
            png = f.read()
        body, ctype = multipart([("image", png)], E2E_SPEC, image=True)
        return lambda: self.post("/v1/convolve", body, ctype, "image/png")

    def e2e(self, reps):
        """Client-side latency at concurrency 1, and throughput at concurrency 4."""
        post = self.e2e_post()
        latency = best_of(post, reps)
        n = 4 * reps
        with concurrent.futures.ThreadPoolExecutor(4) as ex:
            list(ex.map(lambda _: post(), range(4)))  # one connection per thread, warm
            t = time.perf_counter()
            list(ex.map(lambda _: post(), range(n)))
            rps = n / (time.perf_counter() - t)
        return {"ms": latency, "throughput_rps": rps}

    def e2e_output(self, path):
        data, timing = self.e2e_post()()
        with open(path, "wb") as f:
            f.write(data)
        return {"algorithm": timing.get("conv", {}).get("desc") or "?"}


def npy_bytes(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(a, dtype=np.float32))
    return buf.getvalue()


def multipart(files: list[tuple[str, bytes]], spec: bytes, image: bool = False) -> tuple[bytes, str]:
    """A multipart/form-data body: file parts (.npy, or PNG when `image`) plus `spec`."""
    boundary = f"convdpeer{time.time_ns()}"
    out = io.BytesIO()
    ftype = "image/png" if image else "application/x-npy"
    for name, data in files:
        out.write(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{name}"\r\n'
                  f"Content-Type: {ftype}\r\n\r\n".encode())
        out.write(data)
        out.write(b"\r\n")
    out.write(f'--{boundary}\r\nContent-Disposition: form-data; name="spec"\r\n'
              f"Content-Type: application/json\r\n\r\n".encode())
    out.write(spec)
    out.write(f"\r\n--{boundary}--\r\n".encode())
    return out.getvalue(), f"multipart/form-data; boundary={boundary}"


SIDES = {s.name: s for s in (Convd, OnnxRuntime, OpenCV, Paddle)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("side", choices=sorted(SIDES))
    ap.add_argument("--url", help="convd's base URL (side convd)")
    ap.add_argument("--photo", help="the PNG of the end-to-end pipeline (sides convd, opencv)")
    args = ap.parse_args()
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # library chatter on stdout goes to stderr
    sys.stdout = sys.stderr
    try:
        side, reason = SIDES[args.side](args), None
    except Exception as e:  # e.g. paddle not installed
        side, reason = None, f"{type(e).__name__}: {e}"
    for line in sys.stdin:
        cmd = json.loads(line)
        op = cmd.pop("op")
        try:
            if op == "hello":
                reply = {"side": args.side, "available": side is not None, "reason": reason,
                         "versions": side.versions() if side else {"numpy": np.__version__}}
            elif side is None:
                reply = {"error": f"{args.side} unavailable: {reason}"}
            elif hasattr(side, op) and op in ("time", "output", "e2e", "e2e_output", "e2e_compare"):
                reply = getattr(side, op)(**cmd)
            else:
                reply = {"skip": f"{args.side} has no {op}"}
        except HttpError as e:
            reply = {"error": str(e)}
        except Exception as e:
            reply = {"error": f"{type(e).__name__}: {e}"}
        proto.write(json.dumps(reply) + "\n")


if __name__ == "__main__":
    main()
