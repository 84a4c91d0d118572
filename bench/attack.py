#!/usr/bin/env python3
"""A scripted attack on convd, against a running server (see bench/attack.sh).

Three phases, with /healthz polled every 0.5 s throughout:
  1. flood: N concurrent POST /v1/conv2d, each a valid-looking 60 MB JSON tensor body;
  2. idle: M connections opened and left silent for 60 s;
  3. trickle: K uploads announcing 1000 bytes and sending one byte every 2 s for 60 s.
Then the server is left idle for 30 s. Samples the server's VmRSS every 0.2 s.

Prints a JSON report: peak RSS (VmHWM), RSS after the idle period, the statuses the flood
got (or how its connections ended), the share of idle and trickled connections the server
closed within 60 s, and the /healthz failures. Standard library only.
"""
import argparse
import asyncio
import json
import os
import time


def rss_kib(pid, key="VmRSS"):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def flood_body(size):
    """A JSON tensor of about `size` bytes: [1, 1, rows, cols] of 0.5, no weight (so the
    server parses it whole, then answers 422)."""
    cols = 1000
    row = "[" + ",".join(["0.5"] * cols) + "]"
    rows = max(1, size // (len(row) + 1))
    return ('{"input": [[[' + ",".join([row] * rows) + "]]]}").encode()


async def read_status(reader, wait):
    try:
        line = await asyncio.wait_for(reader.readline(), wait)
    except asyncio.TimeoutError:
        return "hang"
    except (ConnectionError, OSError):
        return "reset"
    if not line:
        return "closed"
    parts = line.split()
    return parts[1].decode() if len(parts) > 1 else "garbled"


async def one_flood(host, port, body):
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError as e:
        return f"connect-error:{e.errno}"
    head = (f"POST /v1/conv2d HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n").encode()
    status_task = asyncio.ensure_future(read_status(reader, 120))
    try:
        writer.write(head)
        for i in range(0, len(body), 1 << 20):
            if status_task.done():
                break
            writer.write(body[i:i + (1 << 20)])
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    status = await status_task
    writer.close()
    return status


async def hold_idle(host, port, seconds, t0):
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError as e:
        return f"connect-error:{e.errno}"
    try:
        left = seconds - (time.monotonic() - t0)
        data = await asyncio.wait_for(reader.read(1), max(0.1, left))
        return time.monotonic() - t0 if not data else None
    except asyncio.TimeoutError:
        return None
    except (ConnectionError, OSError):
        return time.monotonic() - t0
    finally:
        writer.close()


async def trickle(host, port, seconds, t0):
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError:
        return None, "connect-error"
    writer.write((f"POST /v1/conv2d HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\n"
                  "content-length: 1000\r\n\r\n").encode())
    status = asyncio.ensure_future(read_status(reader, seconds))
    while not status.done() and time.monotonic() - t0 < seconds:
        try:
            writer.write(b" ")
            await writer.drain()
        except (ConnectionError, OSError):
            break
        await asyncio.sleep(2)
    s = await status
    closed_at = time.monotonic() - t0
    if s not in ("hang",):
        # Drain to EOF to see the close.
        try:
            await asyncio.wait_for(reader.read(), max(0.1, seconds - closed_at))
            closed_at = time.monotonic() - t0
        except (asyncio.TimeoutError, ConnectionError, OSError):
            pass
    writer.close()
    return (closed_at if s != "hang" else None), s


async def health(host, port, stop, failures, answered):
    while not stop.is_set():
        try:
            r, w = await asyncio.wait_for(asyncio.open_connection(host, port), 2)
            w.write(f"GET /healthz HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n".encode())
            s = await read_status(r, 2)
            w.close()
            if s == "200":
                answered.append(1)
            else:
                failures.append((time.monotonic(), s))
        except (asyncio.TimeoutError, OSError) as e:
            failures.append((time.monotonic(), type(e).__name__))
        await asyncio.sleep(0.5)


async def sampler(pid, stop, samples):
    while not stop.is_set():
        samples.append((time.monotonic(), rss_kib(pid)))
        await asyncio.sleep(0.2)


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--flood", type=int, default=120)
    ap.add_argument("--body-mb", type=int, default=60)
    ap.add_argument("--idle", type=int, default=3000)
    ap.add_argument("--trickle", type=int, default=50)
    ap.add_argument("--window", type=int, default=60)
    ap.add_argument("--rest", type=int, default=30)
    a = ap.parse_args()
    stop = asyncio.Event()
    failures, answered, samples = [], [], []
    hp = asyncio.ensure_future(health(a.host, a.port, stop, failures, answered))
    sp = asyncio.ensure_future(sampler(a.pid, stop, samples))
    report = {"rss_start_mib": rss_kib(a.pid) / 1024}

    body = flood_body(a.body_mb << 20)
    t = time.monotonic()
    statuses = await asyncio.gather(*[one_flood(a.host, a.port, body) for _ in range(a.flood)])
    del body
    counts = {}
    for s in statuses:
        counts[s] = counts.get(s, 0) + 1
    report["flood"] = {"requests": a.flood, "body_mb": a.body_mb, "statuses": counts,
                       "seconds": round(time.monotonic() - t, 1)}

    t0 = time.monotonic()
    idle = [hold_idle(a.host, a.port, a.window, t0) for _ in range(a.idle)]
    tr = [trickle(a.host, a.port, a.window, t0) for _ in range(a.trickle)]
    results = await asyncio.gather(*idle, *tr)
    idle_res, tr_res = results[:a.idle], results[a.idle:]
    closed = [x for x in idle_res if isinstance(x, float)]
    errors = [x for x in idle_res if isinstance(x, str)]
    report["idle"] = {"connections": a.idle, "closed_within_window": len(closed),
                      "connect_errors": len(errors), "first_errors": errors[:3],
                      "share_closed": round(len(closed) / max(1, a.idle), 3),
                      "median_close_s": round(sorted(closed)[len(closed) // 2], 1) if closed else None}
    tclosed = [x for x, _ in tr_res if x is not None]
    tstat = {}
    for _, s in tr_res:
        tstat[s] = tstat.get(s, 0) + 1
    report["trickle"] = {"uploads": a.trickle, "closed_within_window": len(tclosed),
                         "share_closed": round(len(tclosed) / max(1, a.trickle), 3), "statuses": tstat}

    await asyncio.sleep(a.rest)
    stop.set()
    await asyncio.gather(hp, sp)
    report["rss_peak_mib"] = round(rss_kib(a.pid, "VmHWM") / 1024, 1)
    report["rss_after_rest_mib"] = round(rss_kib(a.pid) / 1024, 1)
    report["rest_seconds"] = a.rest
    report["healthz"] = {"answered": len(answered), "failures": len(failures),
                         "first_failures": [f[1] for f in failures[:5]]}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
