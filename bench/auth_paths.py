"""Benchmark: the authenticated path against the public one, on one server in one run.

Creates a user and an API token in a scratch SQLite database (or BENCH_DATABASE_URL), seeds
N public streams owned by that user into its own Redis database, starts one server process
and drives it with wrk:

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


def seed(url: str, n: int, prefix: str, owner_id: int) -> None:
    from streams.registry import registry_keys

    keys = registry_keys(prefix)
    try:
        from streams.keys import stream_keys
    except ImportError:  # a tree from before stream ownership
        stream_keys = None
    r = redis.Redis.from_url(url)
    r.flushdb()
    pipe = r.pipeline(transaction=False)
    names = [f"bench-{i:06d}" for i in range(n)]
    for i, name in enumerate(names):
        pipe.xadd(prefix + name, {"power": "200"})
        if stream_keys is not None:
            pipe.hset(stream_keys(prefix, name).meta, mapping={"owner": owner_id, "owner_name": "bench", "visibility": "public"})
            pipe.hset(keys[2], name, f"public|{owner_id}")
        if i % 1000 == 999:
            pipe.execute()
    pipe.sadd(keys[0], *names)
    pipe.incr(keys[1])
    pipe.execute()
    r.close()


def wrk(url: str, duration: int, connections: int, *, token: str | None = None, post: bool = False) -> dict:
    lines = []
    if token:
        lines.append(f'wrk.headers["Authorization"] = "Bearer {token}"')
    if post:
        lines += ['wrk.method = "POST"', 'wrk.body = \'{"power": 250, "hr": 140}\'',
                  'wrk.headers["Content-Type"] = "application/json"']
    return run_wrk(url, duration, connections, prelude="\n".join(lines))


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
    args = p.parse_args()

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
    seed(args.redis_url, args.streams, "stream:", owner_id)
    server = subprocess.Popen(server_command(args.server, args.port, "streamsite.asgi:application"), cwd=ROOT, env=env)
    try:
        wait_port(args.port)
        base = f"http://127.0.0.1:{args.port}"
        lists = [("list-public", "/api/streams?limit=100", None, False),
                 ("list-token", "/api/streams?limit=100", token, False)]
        if args.order == "token-first":
            lists.reverse()
        runs = [*lists, ("publish-token", "/api/streams/bench-000000/events", token, True)]
        for label, path, tok, post in runs:
            wrk(base + path, 3, args.connections, token=tok, post=post)  # warm-up
            result = wrk(base + path, args.duration, args.connections, token=tok, post=post)
            print(json.dumps({"run": label, "server": args.server, "streams": args.streams,
                              "connections": args.connections, **result}), flush=True)
    finally:
        server.terminate()
        server.wait(10)
        redis.Redis.from_url(args.redis_url).flushdb()


if __name__ == "__main__":
    main()
