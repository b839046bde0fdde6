"""Churn soak: listeners connect, read a little and disconnect, continuously, for D seconds;
server RSS is sampled every 10 s and the hub must be back to 0 listeners at the end.

    .venv/bin/python bench/sse_churn.py --concurrency 200 --duration 600
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import subprocess
import time
from pathlib import Path

import httpx
import redis.asyncio as aioredis

ROOT = Path(__file__).resolve().parent.parent


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def gc_collections(prometheus_text: str) -> dict:
    """Python's collections and collected objects per generation, from prometheus_client's
    default GC collector: shows whether full (generation 2) collections ran at all."""
    from prometheus_client.parser import text_string_to_metric_families

    out = {}
    for family in text_string_to_metric_families(prometheus_text):
        if family.name in ("python_gc_collections", "python_gc_objects_collected"):
            for sample in family.samples:
                out[f"{family.name}_gen{sample.labels['generation']}"] = sample.value
    return out


async def churner(port: int, streams: list[str], stop: asyncio.Event, counts: dict) -> None:
    while not stop.is_set():
        name = random.choice(streams)
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(f"GET /api/streams/{name}/sse HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
            deadline = time.monotonic() + random.uniform(0.2, 3.0)
            while time.monotonic() < deadline and not stop.is_set():
                try:
                    line = await asyncio.wait_for(reader.readline(), max(0.01, deadline - time.monotonic()))
                except TimeoutError:
                    break
                if not line:
                    break
                if line.startswith(b"data:"):
                    counts["events"] += 1
            writer.close()
            counts["sessions"] += 1
        except OSError:
            counts["errors"] += 1
            await asyncio.sleep(0.1)


async def publisher(url: str, streams: list[str], stop: asyncio.Event) -> None:
    r = aioredis.Redis.from_url(url)
    try:
        while not stop.is_set():
            async with r.pipeline(transaction=False) as pipe:
                for name in streams:
                    pipe.xadd(f"stream:{name}", {"power": "200"}, maxlen=1000, approximate=True)
                await pipe.execute()
            await asyncio.sleep(0.1)
    finally:
        await r.aclose()


async def main(args) -> dict:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "DEBUG": "false", "SECRET_KEY": "bench", "ALLOWED_HOSTS": "127.0.0.1",
           "STREAMS_PUBLIC_READ": "true", "REDIS_URL": args.redis_url, "LOG_LEVEL": "warning",
        "SECURE_SSL_REDIRECT": "false", "LIVE_MAX_CONNECTIONS_PER_USER": "1000000",
        # One load client is one caller: lift the per-caller fair shares (docs/security.md) so
        # the benchmarks measure the server, not the quotas.
        "LIVE_MAX_FOLLOWED_STREAMS_PER_USER": "1000000", "PUBLISH_RATE_PER_TOKEN": "100000000",
        "STREAMS_MAX_PER_USER": "100000000",
           "MONITORING_TOKEN": "bench", "DATABASE_URL": "sqlite:////tmp/streamsite-churn.sqlite3"}
    server = subprocess.Popen([str(ROOT / ".venv/bin/daphne"), "-e", f"tcp:port={port}:interface=127.0.0.1:backlog=1024",
                               "--access-log", os.devnull, "streamsite.asgi:application"],
                              cwd=ROOT, env=env, stderr=subprocess.DEVNULL)
    stop = asyncio.Event()
    counts = {"sessions": 0, "events": 0, "errors": 0}
    streams = [f"churn-{i}" for i in range(args.streams)]
    samples = []
    try:
        await asyncio.sleep(2)
        tasks = [asyncio.create_task(publisher(args.redis_url, streams, stop))]
        tasks += [asyncio.create_task(churner(port, streams, stop, counts)) for _ in range(args.concurrency)]
        start = time.monotonic()
        while (elapsed := time.monotonic() - start) < args.duration:
            await asyncio.sleep(10)
            samples.append({"t_s": round(elapsed), "rss_mb": rss_mb(server.pid), "threads": threads(server.pid),
                            "sessions": counts["sessions"]})
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.sleep(3)
        async with httpx.AsyncClient() as client:
            m = (await client.get(f"http://127.0.0.1:{port}/health/metrics",
                                  headers={"Authorization": "Bearer bench"})).json()
            prom = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
        first, last = samples[0]["rss_mb"], samples[-1]["rss_mb"]
        mid = samples[len(samples) // 2]["rss_mb"]
        return {"concurrency": args.concurrency, "duration_s": args.duration, **counts,
                "rss_mb_first": first, "rss_mb_mid": mid, "rss_mb_last": last,
                "rss_mb_max": max(s["rss_mb"] for s in samples), "threads_last": samples[-1]["threads"],
                "hub_after": m["hub"], "gc": gc_collections(prom), "samples": samples}
    finally:
        server.terminate()
        server.wait(20)


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--concurrency", type=int, default=200)
    p.add_argument("--duration", type=float, default=600)
    p.add_argument("--streams", type=int, default=20)
    p.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14"))
    print(json.dumps(asyncio.run(main(p.parse_args()))))
