"""Load benchmark: N SSE listeners over M streams while R events/s are published in total.

Starts one daphne process (hub or pool delivery), connects N listeners (raw asyncio sockets,
spread evenly over M streams), publishes for D seconds at R events/s straight into Redis, and
reports: connect time, delivered / expected, delivery latency p50/p95/p99 (publish → client
receipt, same clock), server RSS (before, with idle listeners, at the end), and the Redis
connections the server holds (from CLIENT LIST). Prints one JSON line per run.

    .venv/bin/python bench/sse_load.py --listeners 1000 --streams 100 --rate 1000 --duration 20
    .venv/bin/python bench/sse_load.py --delivery pool --listeners 1000 --streams 100 --rate 1000
    .venv/bin/python bench/sse_load.py --listeners 1000 --rate 1000 --workout-mib 32   # + a big workout POST

Loopback only; every loop is bounded in time. Raises the fd soft limit (hard limit here: 20,000).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis
import redis.asyncio as aioredis

ROOT = Path(__file__).resolve().parent.parent


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Listener:
    __slots__ = ("stream", "received", "latencies", "connected", "ended", "writer")

    def __init__(self, stream: str) -> None:
        self.stream = stream
        self.received = 0
        self.latencies: list[float] = []
        self.connected = False
        self.ended = False
        self.writer = None


async def listen(listener: Listener, port: int, connected: asyncio.Event, all_in: list[int], n: int,
                 stop: asyncio.Event, handshakes: asyncio.Semaphore):
    await handshakes.acquire()  # bounded connects in flight: held until the headers arrive
    released = False
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
    except OSError:
        handshakes.release()
        listener.ended = True
        all_in[1] += 1
        if sum(all_in) >= n:
            connected.set()
        return
    listener.writer = writer
    writer.write(
        f"GET /api/streams/{listener.stream}/sse HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n".encode()
    )
    try:
        status = await reader.readline()
        while (await reader.readline()) not in (b"\r\n", b""):
            pass
        listener.connected = status.startswith(b"HTTP/1.1 200")
        handshakes.release()
        released = True
        all_in[0 if listener.connected else 1] += 1
        if sum(all_in) >= n:
            connected.set()
        marker = b'"ts": "'
        while not stop.is_set():
            line = await reader.readline()
            if not line:
                break
            i = line.find(marker)
            if i >= 0:
                j = line.index(b'"', i + len(marker))
                now = time.time() * 1000
                listener.latencies.append(now - float(line[i + len(marker) : j]))
                listener.received += 1
    except (OSError, ValueError):
        pass
    finally:
        if not released:
            handshakes.release()
        listener.ended = True
        writer.close()


async def publish(url: str, streams: list[str], rate: int, duration: float) -> dict[str, int]:
    r = aioredis.Redis.from_url(url)
    sent = dict.fromkeys(streams, 0)
    tick = 0.01
    per_tick = rate * tick
    owed = 0.0
    k = 0
    start = time.monotonic()
    try:
        while (elapsed := time.monotonic() - start) < duration:
            owed += per_tick
            n = int(owed)
            owed -= n
            if n:
                async with r.pipeline(transaction=False) as pipe:
                    ts = f"{time.time() * 1000:.3f}"
                    for _ in range(n):
                        name = streams[k % len(streams)]
                        k += 1
                        pipe.xadd(f"stream:{name}", {"ts": ts, "power": "200"})
                        sent[name] += 1
                    await pipe.execute()
            await asyncio.sleep(max(0.0, start + elapsed + tick - time.monotonic()))
    finally:
        await r.aclose()
    return sent


def workout_body(mib: float) -> bytes:
    """A workout of at most 200,000 samples whose JSON is about ``mib`` MiB (long floats)."""
    n = 200_000
    per_value = max(8, int(mib * 1024 * 1024 / (n * 7)) - 2)
    digits = "1234567890123456789012345678901234567890"[: max(1, per_value - 4)]
    value = float(f"100.{digits}")
    cols = {c: [value] * n for c in ("power", "heart_rate", "cadence", "speed", "distance", "altitude")}
    cols["t"] = list(range(n))
    return json.dumps({"title": "big", "started_at": "2026-11-03T07:00:00Z", "samples": cols}).encode()


async def post_workout(port: int, token: str, body: bytes, after: float) -> dict:
    """POST from a curl process: sending 24 MiB from this process would stall the listeners'
    clock here, not on the server."""
    with tempfile.NamedTemporaryFile(suffix=".json") as file:
        file.write(body)
        file.flush()
        await asyncio.sleep(after)
        started = time.monotonic()
        curl = await asyncio.create_subprocess_exec(
            "curl", "-s", "-o", os.devnull, "-w", "%{http_code}", "-H", f"Authorization: Bearer {token}",
            "-H", "Content-Type: application/json", "--data-binary", f"@{file.name}",
            f"http://127.0.0.1:{port}/api/workouts", stdout=asyncio.subprocess.PIPE,
        )
        status, _ = await curl.communicate()
    return {"workout_status": int(status or 0), "workout_mib": round(len(body) / 2**20, 1),
            "workout_seconds": round(time.monotonic() - started, 2)}


def bench_token(env: dict) -> str:
    python = str(ROOT / ".venv/bin/python")
    subprocess.run([python, "manage.py", "migrate", "--no-input", "-v0"], cwd=ROOT, env=env, check=True)
    subprocess.run([python, "manage.py", "shell", "-c",
                    "from django.contrib.auth import get_user_model as g; g().objects.get_or_create(username='bench')"],
                   cwd=ROOT, env=env, check=True)
    return subprocess.run([python, "manage.py", "create_api_token", "bench"], cwd=ROOT, env=env, check=True,
                          capture_output=True, text=True).stdout.strip().splitlines()[-1]


def pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return round(values[min(len(values) - 1, int(len(values) * p))], 2)


async def run(args) -> dict:
    port = free_port()
    env = {
        **os.environ, "DEBUG": "false", "SECRET_KEY": "bench", "ALLOWED_HOSTS": "127.0.0.1",
        "STREAMS_PUBLIC_READ": "true", "REDIS_URL": args.redis_url, "LOG_LEVEL": "warning",
        "SECURE_SSL_REDIRECT": "false", "LIVE_MAX_CONNECTIONS_PER_USER": "1000000",
        "SSE_DELIVERY": args.delivery, "SSE_HEARTBEAT_INTERVAL": "15000",
        "DATABASE_URL": "sqlite:////tmp/streamsite-bench.sqlite3",
    }
    sync_r = redis.Redis.from_url(args.redis_url, decode_responses=True)
    sync_r.flushdb()
    if args.server == "daphne":
        command = [str(ROOT / ".venv/bin/daphne"), "-e", f"tcp:port={port}:interface=127.0.0.1:backlog=4096",
                   "--access-log", os.devnull, "streamsite.asgi:application"]
    else:
        command = [str(ROOT / ".venv/bin/uvicorn"), "--host", "127.0.0.1", "--port", str(port), "--backlog", "4096",
                   "--no-access-log", "--log-level", "warning", "streamsite.asgi:application"]
        if args.server == "uvicorn-plain":  # no uvloop, no httptools: pure-Python asyncio and h11
            command[1:1] = ["--loop", "asyncio", "--http", "h11"]
    token = bench_token(env) if args.workout_mib else ""
    server = subprocess.Popen(command, cwd=ROOT, env=env, stderr=subprocess.DEVNULL)
    listeners: list[Listener] = []
    tasks: list[asyncio.Task] = []
    stop = asyncio.Event()
    try:
        deadline = time.monotonic() + 20
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if time.monotonic() > deadline:
                raise SystemExit("server did not start")
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)
        rss_before = rss_kb(server.pid)
        streams = [f"load-{i:05d}" for i in range(args.streams)]
        listeners = [Listener(streams[i % len(streams)]) for i in range(args.listeners)]
        connected = asyncio.Event()
        counts = [0, 0]  # connected, failed
        t0 = time.monotonic()
        handshakes = asyncio.Semaphore(args.concurrent_connects)
        for lst in listeners:
            tasks.append(asyncio.create_task(listen(lst, port, connected, counts, len(listeners), stop, handshakes)))
        try:
            await asyncio.wait_for(connected.wait(), args.connect_timeout)
        except TimeoutError:
            pass
        connect_s = time.monotonic() - t0
        # Wait until the server reads every stream (hub) or holds its connections (pool).
        await asyncio.sleep(1.0)
        rss_idle = rss_kb(server.pid)
        workout = None
        if args.workout_mib:
            workout = asyncio.create_task(post_workout(port, token, workout_body(args.workout_mib), args.duration / 3))
        sent = await publish(args.redis_url, streams, args.rate, args.duration)
        workout_result = await workout if workout is not None else {}
        await asyncio.sleep(args.drain)
        stop.set()
        rss_end = rss_kb(server.pid)
        clients = [c for c in sync_r.client_list() if c.get("name", "").endswith(f":{server.pid}")]
        expected = sum(sent[lst.stream] for lst in listeners)
        delivered = sum(lst.received for lst in listeners)
        latencies = [x for lst in listeners for x in lst.latencies]
        idle_listeners = max(1, counts[0])
        return {
            "server": args.server, "delivery": args.delivery, "listeners": args.listeners, "streams": args.streams,
            "rate_eps": args.rate, "duration_s": args.duration,
            "connected": counts[0], "failed": counts[1], "connect_s": round(connect_s, 2),
            "published": sum(sent.values()), "expected": expected, "delivered": delivered,
            "delivered_pct": round(100 * delivered / expected, 2) if expected else None,
            "p50_ms": pct(latencies, 0.50), "p95_ms": pct(latencies, 0.95), "p99_ms": pct(latencies, 0.99),
            "max_ms": round(max(latencies), 2) if latencies else None, **workout_result,
            "rss_mb_before": round(rss_before / 1024, 1), "rss_mb_idle": round(rss_idle / 1024, 1),
            "rss_mb_end": round(rss_end / 1024, 1),
            "rss_kb_per_idle_listener": round((rss_idle - rss_before) / idle_listeners, 1),
            "redis_conns_total": len(clients),
            "redis_conns_xread": sum(1 for c in clients if c.get("cmd") == "xread"),
        }
    finally:
        stop.set()
        for lst in listeners:
            if lst.writer is not None:
                lst.writer.close()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        server.terminate()
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()
        sync_r.flushdb()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--listeners", type=int, default=1000)
    p.add_argument("--streams", type=int, default=100)
    p.add_argument("--rate", type=int, default=1000, help="events/s published in total")
    p.add_argument("--duration", type=float, default=20)
    p.add_argument("--drain", type=float, default=3)
    p.add_argument("--connect-timeout", type=float, default=120)
    p.add_argument("--concurrent-connects", type=int, default=100)
    p.add_argument("--delivery", choices=["hub", "pool"], default="hub")
    p.add_argument("--server", choices=["daphne", "uvicorn", "uvicorn-plain"], default="daphne")
    p.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14"))
    p.add_argument("--workout-mib", type=float, default=0, help="POST a workout this big a third of the way in")
    args = p.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # children (daphne) inherit it
    print(json.dumps(asyncio.run(run(args))))


if __name__ == "__main__":
    sys.exit(main())
