"""Benchmark: the authenticated path against the public one, on one server in one run.

Creates a user and an API token in a scratch SQLite database (or BENCH_DATABASE_URL), seeds
N public streams owned by that user into its own Redis database, starts one server process
and drives it with wrk:

- ``bare``: ``GET /health/``, an async Django view answering a constant JSON through the same
  lean stack: the floor a list is compared with (only when asked: ``--runs bare,...``);
- ``list-public``: ``GET /api/streams?limit=100`` without credentials;
- ``list-token``: the same with ``Authorization: Bearer <token>`` (a caller who may read all N);
- ``publish-token``: ``POST /api/streams/bench-000000/events`` with a one-entry body and the token.

Works against older trees too (it writes stream metadata only where the tree has it), so the
same command gives before/after figures. Needs wrk (apt-get install wrk).

    .venv/bin/python bench/auth_paths.py --streams 10000 --duration 15 --connections 4
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.list_streams import SERVERS, bench_env, server_command, wait_port  # noqa: E402
from bench.list_streams import wrk as run_wrk  # noqa: E402


def seed(r, n: int, layout, owner_id: int) -> None:
    """``n`` public streams owned by the bench user, in the bucketed layout (streams/store/keys.py).
    ``r`` is a plain or a cluster client (a cluster pipeline is split per node)."""
    pipe = r.pipeline(transaction=False)
    names = [f"bench-{i:06d}" for i in range(n)]
    for i, name in enumerate(names):
        keys = layout.stream_keys(name)
        registry = layout.registry(keys.bucket)
        pipe.xadd(keys.stream, {"power": "200"})
        pipe.hset(keys.meta, mapping={"owner": owner_id, "owner_name": "bench", "visibility": "public"})
        pipe.hset(registry.access, name, f"public|{owner_id}")
        pipe.sadd(registry.names, name)
        pipe.incr(registry.version)
        if i % 1000 == 999:
            pipe.execute()
    pipe.execute()


def wrk(url: str, duration: int, connections: int, *, token: str | None = None, post: bool = False,
        cpu: str | None = None) -> dict:
    lines = []
    if token:
        lines.append(f'wrk.headers["Authorization"] = "Bearer {token}"')
    if post:
        lines += ['wrk.method = "POST"', 'wrk.body = \'{"power": 250, "hr": 140}\'',
                  'wrk.headers["Content-Type"] = "application/json"']
    return run_wrk(url, duration, connections, prelude="\n".join(lines), cpu=cpu)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--streams", type=int, default=10000)
    p.add_argument("--duration", type=int, default=15)
    p.add_argument("--connections", type=int, default=4)
    p.add_argument("--port", type=int, default=8023)
    p.add_argument("--server", choices=SERVERS, default="daphne")
    p.add_argument("--order", choices=["public-first", "token-first"], default="public-first",
                   help="which list run comes first (the VM drifts; alternate to see it)")
    p.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14"))
    p.add_argument("--cluster", action="store_true", help="start a local 3-primary Redis Cluster and serve from it")
    p.add_argument("--runs", default="list-public,list-token,publish-token", help="which runs, comma-separated")
    p.add_argument("--pin", action="store_true", help="the server on CPU 0, wrk on CPU 1 (taskset)")
    args = p.parse_args()

    cluster = None
    if args.cluster:
        from tests.cluster import start_cluster

        cluster = start_cluster()
        args.redis_url = cluster.urls[0]
        r = redis.RedisCluster.from_url(args.redis_url)
    else:
        r = redis.Redis.from_url(args.redis_url)
        r.flushdb()
    scratch = tempfile.mkdtemp(prefix="bench-auth-")
    env = bench_env(args.redis_url, scratch, STREAMS_PUBLIC_READ="false", STREAM_MAXLEN="1000")
    python = str(ROOT / ".venv/bin/python")
    subprocess.run([python, "manage.py", "migrate", "--no-input", "-v0"], cwd=ROOT, env=env, check=True)
    owner_id = int(subprocess.run(
        [python, "manage.py", "shell", "-c",
         "from django.contrib.auth import get_user_model as g; u, _ = g().objects.get_or_create(username='bench'); print(u.pk)"],
        cwd=ROOT, env=env, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])
    token = subprocess.run([python, "manage.py", "create_api_token", "bench"], cwd=ROOT, env=env, check=True,
                           capture_output=True, text=True).stdout.strip().splitlines()[-1]
    from streams.store.keys import KeyLayout

    seed(r, args.streams, KeyLayout("stream:", int(env.get("REDIS_BUCKETS", "16"))), owner_id)
    pin_server = ["taskset", "-c", "0"] if args.pin else []
    server = subprocess.Popen([*pin_server, *server_command(args.server, args.port, "streamsite.asgi:application")],
                              cwd=ROOT, env=env)
    try:
        wait_port(args.port)
        base = f"http://127.0.0.1:{args.port}"
        lists = [("list-public", "/api/streams?limit=100", None, False),
                 ("list-token", "/api/streams?limit=100", token, False)]
        if args.order == "token-first":
            lists.reverse()
        runs = [("bare", "/health/", None, False), *lists,
                ("publish-token", "/api/streams/bench-000000/events", token, True)]
        wanted = args.runs.split(",")
        cpu = "1" if args.pin else None
        for label, path, tok, post in [run for run in runs if run[0] in wanted]:
            wrk(base + path, 3, args.connections, token=tok, post=post, cpu=cpu)  # warm-up
            cpu_before = cpu_seconds(server.pid)
            result = wrk(base + path, args.duration, args.connections, token=tok, post=post, cpu=cpu)
            # Server CPU per request: what one dedicated core would give, whatever else ran.
            result["server_cpu_us_per_request"] = round(
                1e6 * (cpu_seconds(server.pid) - cpu_before) / max(result["requests"], 1), 1)
            print(json.dumps({"run": label, "server": args.server, "streams": args.streams, "pinned": args.pin,
                              "redis": "cluster" if cluster else "standalone",
                              "connections": args.connections, **result}), flush=True)
    finally:
        server.terminate()
        server.wait(10)
        if cluster is not None:
            cluster.stop()
        else:
            r.flushdb()
        r.close()


if __name__ == "__main__":
    main()
