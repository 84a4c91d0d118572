"""convd's float32 TIFF read with tifffile and Pillow equals its .npy bit for bit; its WebP
read with Pillow equals its PNG pixels (issue #13). Usage: check_formats.py BASE_URL."""

import io
import json
import sys
import urllib.request
import uuid

import numpy as np
import tifffile
from PIL import Image

BASE = sys.argv[1]
IMAGE = open("tests/fixtures/images/astronaut.png", "rb").read()


def convolve(spec, images=(IMAGE,)):
    boundary = uuid.uuid4().hex
    body = b""
    for img in images:
        body += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; "
                 f"filename=\"a.png\"\r\n\r\n").encode() + img + b"\r\n"
    body += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"spec\"\r\n\r\n"
             f"{json.dumps(spec)}\r\n--{boundary}--\r\n").encode()
    req = urllib.request.Request(f"{BASE}/v1/convolve", data=body, headers={
        "content-type": f"multipart/form-data; boundary={boundary}"})
    with urllib.request.urlopen(req) as res:
        return res.headers.get("content-type"), res.read()


def spec(fmt):
    return {"preset": "sobel_x", "channels": "each", "output": {"format": fmt}}


_, npy = convolve(spec("npy"), (IMAGE, IMAGE))
want = np.load(io.BytesIO(npy))
ct, tif = convolve(spec("tiff"), (IMAGE, IMAGE))
assert ct == "image/tiff", ct

# tifffile: the first page's JSON description gives the [N, C, H, W] shape.
got = tifffile.imread(io.BytesIO(tif))
assert got.dtype == np.float32, got.dtype
assert got.shape == want.shape, (got.shape, want.shape)
assert np.array_equal(got.view(np.uint32), want.view(np.uint32)), "tifffile values differ"
with tifffile.TiffFile(io.BytesIO(tif)) as t:
    manifest = json.loads(t.pages[0].description)
    assert manifest["shape"] == list(want.shape) and len(t.pages) == want.shape[0] * want.shape[1]

# Pillow: every page is a mode "F" image.
pages = Image.open(io.BytesIO(tif))
flat = want.reshape(-1, want.shape[2], want.shape[3])
for k in range(flat.shape[0]):
    pages.seek(k)
    assert pages.mode == "F", pages.mode
    page = np.asarray(pages, dtype=np.float32)
    assert np.array_equal(page.view(np.uint32), flat[k].view(np.uint32)), f"Pillow page {k}"

# WebP (a colour montage of a batch) read by Pillow: the PNG's pixels exactly.
for images in ((IMAGE,), (IMAGE, IMAGE)):
    s = {"preset": "gaussian", "size": 5, "channels": "each"}
    _, png = convolve({**s, "output": {"format": "png"}}, images)
    ct, webp = convolve({**s, "output": {"format": "webp"}}, images)
    assert ct == "image/webp", ct
    a = np.asarray(Image.open(io.BytesIO(png)).convert("RGBA"))
    b = Image.open(io.BytesIO(webp))
    assert b.format == "WEBP"
    assert np.array_equal(a, np.asarray(b.convert("RGBA"))), "WebP pixels differ from the PNG"

print("python check: tifffile and Pillow read convd's TIFF exactly; Pillow's WebP equals the PNG")
