"""Benchmark: clients that stop reading while a busy stream flows — server memory.

Starts one server process, connects ``--stalled`` SSE clients that never read (4 KiB receive
buffer) and one healthy reader, publishes ``--entries`` entries of ~``--size`` bytes straight
into Redis, waits until the healthy reader has them all, and reports the server's RSS growth
(peak, sampled every 100 ms), how many listeners the hub still holds, and the healthy reader's
count. One JSON line.

    .venv/bin/python bench/stalled_readers.py --server daphne
    .venv/bin/python bench/stalled_readers.py --server uvicorn
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import redis.asyncio as aioredis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.list_streams import server_command, wait_port  # noqa: E402


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def listeners(port: int) -> int:
    async with httpx.AsyncClient(timeout=5) as c:
        r = await c.get(f"http://127.0.0.1:{port}/health/metrics", headers={"Authorization": "Bearer bench"})
        return r.json()["hub"]["listeners"]


async def run(args) -> dict:
    port = args.port
    env = {**os.environ, "DEBUG": "false", "SECRET_KEY": "bench-" + "x" * 50, "ALLOWED_HOSTS": "127.0.0.1",
           "STREAMS_PUBLIC_READ": "true", "REDIS_URL": args.redis_url, "LOG_LEVEL": "warning",
           "SECURE_SSL_REDIRECT": "false", "MONITORING_TOKEN": "bench", "STREAM_MAXLEN": "0",
           "DATABASE_URL": "sqlite:////tmp/streamsite-stalled.sqlite3"}
    r = aioredis.Redis.from_url(args.redis_url)
    await r.flushdb()
    proc = subprocess.Popen(server_command(args.server, port, "streamsite.asgi:application"), cwd=ROOT, env=env)
    stalled: list[socket.socket] = []
    try:
        wait_port(port)
        for _ in range(args.stalled):
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.connect(("127.0.0.1", port))
            s.sendall(b"GET /api/streams/busy/sse HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            stalled.append(s)
        async with httpx.AsyncClient(timeout=120) as client:
            # The healthy reader behaves like EventSource: on `overflow` (it read too slowly
            # for a burst) it reconnects with Last-Event-ID. It must end up with every entry.
            seen: set[int] = set()
            resumes = 0
            connected = asyncio.Event()

            async def read():
                nonlocal resumes
                last_id = None
                while len(seen) < args.entries:
                    headers = {"Last-Event-ID": last_id} if last_id else {}
                    async with client.stream("GET", f"http://127.0.0.1:{port}/api/streams/busy/sse",
                                             headers=headers) as resp:
                        connected.set()
                        async for line in resp.aiter_lines():
                            if line.startswith("id: "):
                                last_id = line[4:]
                            elif line.startswith("data: {\"i\""):
                                seen.add(int(json.loads(line[6:])["i"]))
                                if len(seen) == args.entries:
                                    return
                            elif line.startswith("event: overflow"):
                                resumes += 1
                                break

            reader = asyncio.create_task(read())
            await connected.wait()
            deadline = time.monotonic() + 20
            while await listeners(port) < args.stalled + 1 and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            before = rss_mb(proc.pid)
            peak = before
            pad = "x" * args.size
            started = time.monotonic()
            for start in range(0, args.entries, 500):
                async with r.pipeline(transaction=False) as pipe:
                    for i in range(start, min(start + 500, args.entries)):
                        pipe.xadd(b"stream:busy", {"i": str(i), "pad": pad})
                    await pipe.execute()
                peak = max(peak, rss_mb(proc.pid))
                await asyncio.sleep(0)
            while not reader.done() and time.monotonic() - started < 120:
                peak = max(peak, rss_mb(proc.pid))
                await asyncio.sleep(0.1)
            healthy_seconds = time.monotonic() - started
            reader.cancel()
            settle = time.monotonic() + 15
            while await listeners(port) > 0 and time.monotonic() < settle:
                peak = max(peak, rss_mb(proc.pid))
                await asyncio.sleep(0.1)
            return {
                "server": args.server, "stalled": args.stalled, "entries": args.entries, "entry_bytes": args.size,
                "healthy_received_distinct": len(seen), "healthy_resumes": resumes,
                "healthy_seconds": round(healthy_seconds, 1),
                "stalled_left_after_s": round(time.monotonic() - started, 1), "listeners_left": await listeners(port),
                "rss_mb_before": round(before, 1), "rss_mb_peak": round(peak, 1),
                "rss_growth_mb": round(peak - before, 1),
            }
    finally:
        for s in stalled:
            s.close()
        proc.terminate()
        proc.wait(15)
        await r.flushdb()
        await r.aclose()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--server", choices=["daphne", "uvicorn", "uvicorn-plain"], default="daphne")
    p.add_argument("--stalled", type=int, default=5)
    p.add_argument("--entries", type=int, default=60000)
    p.add_argument("--size", type=int, default=1000)
    p.add_argument("--port", type=int, default=8025)
    p.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14"))
    print(json.dumps(asyncio.run(run(p.parse_args()))))


if __name__ == "__main__":
    main()
