"""Benchmark (a): GET /api/streams with N streams in Redis — cached registry vs SCAN per request.

Seeds N streams into its own Redis database, starts daphne on a loopback port with the
product plus a SCAN-per-request baseline endpoint (bench/scan_baseline_asgi.py), and drives
both with wrk. Prints one JSON line per run. Needs wrk (apt-get install wrk).

    .venv/bin/python bench/list_streams.py --streams 10000 --duration 15 --connections 32
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from streams.store.keys import KeyLayout  # noqa: E402


def seed(url: str, n: int, prefix: str) -> None:
    """``n`` streams in the bucketed layout (streams/store/keys.py), registered in their buckets."""
    layout = KeyLayout(prefix, int(os.environ.get("REDIS_BUCKETS", "16")))
    r = redis.Redis.from_url(url)
    r.flushdb()
    pipe = r.pipeline(transaction=False)
    for i in range(n):
        name = f"bench-{i:06d}"
        keys = layout.stream_keys(name)
        pipe.xadd(keys.stream, {"power": "200"})
        pipe.sadd(layout.registry(keys.bucket).names, name)
        pipe.incr(layout.registry(keys.bucket).version)
        if i % 1000 == 999:
            pipe.execute()
    pipe.execute()
    r.close()


def wait_port(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise SystemExit(f"daphne did not listen on {port}")


def bench_env(redis_url: str, scratch: str, **settings: str) -> dict:
    """A production-like server environment on a scratch SQLite database (or
    BENCH_DATABASE_URL) and the bench's own Redis database; ``settings`` override."""
    return {
        **os.environ, "DEBUG": "false", "SECRET_KEY": "bench-" + "x" * 50, "ALLOWED_HOSTS": "127.0.0.1",
        "REDIS_URL": redis_url, "LOG_LEVEL": "warning", "SECURE_SSL_REDIRECT": "false",
        "DATABASE_URL": os.environ.get("BENCH_DATABASE_URL", f"sqlite:///{scratch}/bench.sqlite3"),
        **settings,
    }


SERVERS = ("daphne", "uvicorn", "uvicorn-plain")


def server_command(server: str, port: int, app: str) -> list[str]:
    """daphne; uvicorn (with uvloop and httptools, as uvicorn[standard] installs them); or
    uvicorn-plain (pure-Python asyncio loop and h11)."""
    if server == "daphne":
        return [str(ROOT / ".venv/bin/daphne"), "-b", "127.0.0.1", "-p", str(port), "--access-log", os.devnull, app]
    plain = ["--loop", "asyncio", "--http", "h11"] if server == "uvicorn-plain" else []
    return [str(ROOT / ".venv/bin/uvicorn"), *plain, "--host", "127.0.0.1", "--port", str(port), "--no-access-log",
            "--log-level", "warning", app]


def wrk(url: str, duration: int, connections: int, threads: int = 1, prelude: str = "", cpu: str | None = None) -> dict:
    """One wrk run: throughput and latency percentiles. ``prelude`` is Lua run before
    bench/latency.lua (a method, a body, headers); ``cpu``: pinned there (``taskset -c``)."""
    script = Path(tempfile.mkstemp(suffix=".lua")[1])
    script.write_text(prelude + "\n" + (ROOT / "bench" / "latency.lua").read_text())
    try:
        pin = ["taskset", "-c", cpu] if cpu else []
        out = subprocess.run([*pin, "wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "-s", str(script), url],
                             capture_output=True, text=True, check=True).stdout
    finally:
        script.unlink()
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--streams", type=int, default=10000)
    p.add_argument("--duration", type=int, default=15)
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--port", type=int, default=8021)
    p.add_argument("--server", choices=SERVERS, default="daphne")
    p.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14"))
    args = p.parse_args()

    prefix = "stream:"
    seed(args.redis_url, args.streams, prefix)
    env = {
        **os.environ, "DEBUG": "false", "SECRET_KEY": "bench", "ALLOWED_HOSTS": "127.0.0.1",
        "STREAMS_PUBLIC_READ": "true", "REDIS_URL": args.redis_url, "LOG_LEVEL": "warning",
        "SECURE_SSL_REDIRECT": "false", "LIVE_MAX_CONNECTIONS_PER_USER": "1000000",
        # One load client is one caller: lift the per-caller fair shares (docs/security.md) so
        # the benchmarks measure the server, not the quotas.
        "LIVE_MAX_FOLLOWED_STREAMS_PER_USER": "1000000", "PUBLISH_RATE_PER_TOKEN": "100000000",
        "STREAMS_MAX_PER_USER": "100000000",
        "STREAM_KEY_PREFIX": prefix,
    }
    server = subprocess.Popen(server_command(args.server, args.port, "bench.scan_baseline_asgi:application"),
                              cwd=ROOT, env=env)
    try:
        wait_port(args.port)
        base = f"http://127.0.0.1:{args.port}"
        for label, path in [("registry", "/api/streams?limit=100"), ("scan-baseline", "/bench/streams-scan?limit=100")]:
            wrk(base + path, 3, args.connections, args.threads)  # warm-up
            result = wrk(base + path, args.duration, args.connections, args.threads)
            print(json.dumps({"run": label, "server": args.server, "streams": args.streams, "connections": args.connections, **result}))
    finally:
        server.terminate()
        server.wait(10)
        redis.Redis.from_url(args.redis_url).flushdb()


if __name__ == "__main__":
    main()
