"""Load benchmark: N SSE (or WebSocket) listeners over M streams while R events/s are published in total.

Starts the server (``--workers`` processes; on a local 3-primary Redis Cluster with
``--cluster``), connects N listeners (raw asyncio sockets,
spread evenly over M streams), publishes for D seconds at R events/s straight into Redis, and
reports: connect time, delivered / expected, entries skipped or repeated per listener (each
entry carries its stream's sequence number), delivery latency p50/p95/p99 (publish → client
receipt, same clock), server RSS (before, with idle listeners, at the end), and the Redis
connections the server holds (from CLIENT LIST); on a cluster, the HMGETs its nodes served per
second while publishing (``hmget_per_s``: the access re-check's metadata reads), and with
``--kill-primary-at`` the latencies of the healthy and the dead shard's streams from the kill
on. Prints one JSON line per run.

    .venv/bin/python bench/sse_load.py --listeners 1000 --streams 100 --rate 1000 --duration 20
    .venv/bin/python bench/sse_load.py --server uvicorn --cluster --workers 2 --listeners 10000 --streams 1000
    .venv/bin/python bench/sse_load.py --server uvicorn --cluster --reshard-at 5 --listeners 2000 --streams 100
    .venv/bin/python bench/sse_load.py --server uvicorn --cluster --replicas --kill-primary-at 8 --listeners 500 --rate 200 --duration 25
    .venv/bin/python bench/sse_load.py --listeners 1000 --rate 1000 --workout-mib 32   # + a big workout POST
    .venv/bin/python bench/sse_load.py --server uvicorn --transport ws --clients 4 --listeners 19000 --streams 1000
    .venv/bin/python bench/sse_load.py --server uvicorn --transport ws-batch --listeners 1000 --streams 100

The listeners live in ``--clients`` load-client processes (this file in child mode), each
connecting from its own loopback address; the publisher and the big POST run in the parent.

Loopback only; every loop is bounded in time. Raises the fd soft limit (hard limit here: 20,000).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from array import array
from pathlib import Path

import redis
import redis.asyncio as aioredis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from streams.store.keys import KeyLayout  # noqa: E402


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (uvicorn's worker processes under ``--workers``)."""
    pids, i = [pid], 0
    while i < len(pids):
        for task in Path(f"/proc/{pids[i]}/task").glob("*"):
            try:
                pids += [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                pass
        i += 1
    return pids


def tree_rss_kb(pid: int) -> int:
    return sum(rss_kb(p) for p in process_tree(pid) if Path(f"/proc/{p}").exists())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Listener:
    __slots__ = ("stream", "received", "latencies", "published", "connected", "ended", "writer", "expect", "gaps",
                 "repeats")

    def __init__(self, stream: str) -> None:
        self.stream = stream
        self.expect = 0  # the stream's next sequence number ("n", counted by the publisher)
        self.gaps = 0  # entries skipped (an "n" past the expected one)
        self.repeats = 0  # entries seen twice or out of order
        self.received = 0
        self.latencies: list[float] = []
        self.published: list[float] = []  # each delivery's publish time (epoch ms), for --kill-primary-at
        self.connected = False
        self.ended = False
        self.writer = None


WS_KEY = "dGhlIHNhbXBsZSBub25jZQ=="
MARKER = b'"ts": "'
SEQ = b'"n": "'


def ws_upgrade(stream: str, extra_headers: str = "", query: str = "") -> bytes:
    """A WebSocket handshake for ``/ws/streams/{stream}/`` (``extra_headers``: CRLF-terminated lines)."""
    return (f"GET /ws/streams/{stream}/{query} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {WS_KEY}\r\nSec-WebSocket-Version: 13\r\n"
            f"{extra_headers}\r\n").encode()


async def read_frame(reader) -> tuple[int, bytes]:
    """One server frame (unmasked): (opcode, payload)."""
    head = await reader.readexactly(2)
    opcode, size = head[0] & 0x0F, head[1] & 0x7F
    if size == 126:
        size = int.from_bytes(await reader.readexactly(2), "big")
    elif size == 127:
        size = int.from_bytes(await reader.readexactly(8), "big")
    return opcode, await reader.readexactly(size)


def pong(payload: bytes) -> bytes:
    """The answer to a ping (a client frame, zero mask key); without it the server closes us."""
    return bytes([0x8A, 0x80 | len(payload)]) + b"\0\0\0\0" + payload


def request_line(listener: Listener, transport: str) -> bytes:
    if transport in ("ws", "ws-batch"):
        return ws_upgrade(listener.stream, query="?batch=1" if transport == "ws-batch" else "")
    return f"GET /api/streams/{listener.stream}/sse HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n".encode()


def record(listener: Listener, payload: bytes) -> None:
    i = payload.find(MARKER)
    if i >= 0:
        j = payload.index(b'"', i + len(MARKER))
        published = float(payload[i + len(MARKER) : j])
        listener.latencies.append(time.time() * 1000 - published)
        listener.published.append(published)
        listener.received += 1
        k = payload.find(SEQ)
        if k >= 0:
            n = int(payload[k + len(SEQ) : payload.index(b'"', k + len(SEQ))])
            if n > listener.expect:
                listener.gaps += n - listener.expect
            elif n < listener.expect:
                listener.repeats += 1
            listener.expect = max(listener.expect, n + 1)


async def read_sse(listener: Listener, reader, writer, stop: asyncio.Event) -> None:
    while not stop.is_set():
        line = await reader.readline()
        if not line:
            return
        record(listener, line)


async def read_ws(listener: Listener, reader, writer, stop: asyncio.Event) -> None:
    while not stop.is_set():
        opcode, payload = await read_frame(reader)
        if opcode == 0x8:
            return
        if opcode == 0x9:
            writer.write(pong(payload))
        elif opcode == 0x1 and payload[:1] == b"[":  # ?batch=1: the entries of one wake-up
            starts = [i for i in iter_markers(payload)]
            for start, end in zip(starts, [*starts[1:], len(payload)]):
                record(listener, payload[start:end])
        elif opcode == 0x1:
            record(listener, payload)


def iter_markers(payload: bytes):
    i = payload.find(MARKER)
    while i >= 0:
        yield i
        i = payload.find(MARKER, i + 1)


async def listen(listener: Listener, port: int, connected: asyncio.Event, all_in: list[int], n: int,
                 stop: asyncio.Event, handshakes: asyncio.Semaphore, transport: str = "sse", source: str | None = None):
    await handshakes.acquire()  # bounded connects in flight: held until the headers arrive
    released = False
    try:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, limit=1 << 20, local_addr=(source, 0) if source else None
        )
    except OSError:
        handshakes.release()
        listener.ended = True
        all_in[1] += 1
        if sum(all_in) >= n:
            connected.set()
        return
    listener.writer = writer
    writer.write(request_line(listener, transport))
    try:
        status = await reader.readline()
        while (await reader.readline()) not in (b"\r\n", b""):
            pass
        listener.connected = status.startswith(b"HTTP/1.1 101" if transport.startswith("ws") else b"HTTP/1.1 200")
        handshakes.release()
        released = True
        all_in[0 if listener.connected else 1] += 1
        if sum(all_in) >= n:
            connected.set()
        if listener.connected:
            await (read_ws if transport.startswith("ws") else read_sse)(listener, reader, writer, stop)
    except (OSError, ValueError, asyncio.IncompleteReadError):
        pass
    finally:
        if not released:
            handshakes.release()
        listener.ended = True
        writer.close()


LAYOUT = KeyLayout("stream:", int(os.environ.get("REDIS_BUCKETS", "16")))


def redis_client(url: str, cluster: bool, *, sync: bool = False):
    if cluster:
        return (redis.RedisCluster if sync else aioredis.RedisCluster).from_url(url, decode_responses=True)
    return (redis.Redis if sync else aioredis.Redis).from_url(url, decode_responses=True)


async def publish(url: str, streams: list[str], rate: int, duration: float, cluster: bool,
                  failed: list[int] | None = None) -> dict[str, int]:
    """``rate`` entries/s for ``duration`` s, paced by the clock: a late tick publishes what is
    due so far (a fixed amount per tick under-published whenever the process was busy). On a
    cluster redis-py splits each pipeline per node. ``failed`` ([count, first ack after a
    failure (epoch ms)]): an entry Redis does not acknowledge (a dead primary) is counted there
    and its stream's number is used again, instead of raising. (A stream appears at most once
    per tick at these rates.)"""
    r = redis_client(url, cluster)
    sent = dict.fromkeys(streams, 0)
    tick = 0.01
    total = 0
    start = time.monotonic()
    try:
        while (elapsed := time.monotonic() - start) < duration:
            n = int(rate * elapsed) - total
            if n > 0:
                async with r.pipeline(transaction=False) as pipe:
                    ts = f"{time.time() * 1000:.3f}"
                    names = []
                    for _ in range(n):
                        name = streams[total % len(streams)]
                        total += 1
                        pipe.xadd(LAYOUT.stream(name), {"ts": ts, "n": str(sent[name]), "power": "200"})
                        sent[name] += 1
                        names.append(name)
                    if failed is None:
                        await pipe.execute()
                    else:
                        try:
                            results = await pipe.execute(raise_on_error=False)
                        except (redis.RedisError, OSError) as exc:
                            results = [exc] * len(names)
                        for name, result in zip(names, results):
                            if isinstance(result, Exception):
                                sent[name] -= 1
                                failed[0] += 1
                        if failed[0] and failed[1] is None and not any(isinstance(x, Exception) for x in results):
                            failed[1] = time.time() * 1000
            await asyncio.sleep(tick)
    finally:
        await r.aclose()
    return sent


async def reshard_later(cluster, delay: float) -> dict:
    """After ``delay`` s, move the slot of every bucket to the next primary, live (what
    ``redis-cli --cluster reshard`` does: tests/cluster.py ``move_slot``)."""
    from tests.cluster import move_slot, owner_of

    await asyncio.sleep(delay)

    def move_all() -> list[float]:
        took = []
        for bucket in range(LAYOUT.buckets):
            slot = LAYOUT.slot(bucket)
            owner = owner_of(cluster, slot)
            target = cluster.ports[(cluster.ports.index(owner) + 1) % len(cluster.ports)]
            started = time.monotonic()
            move_slot(cluster, slot, target, batch=10)
            took.append(time.monotonic() - started)
        return took

    started = time.monotonic()
    took = await asyncio.to_thread(move_all)
    return {"reshard_slots": len(took), "reshard_s": round(time.monotonic() - started, 2),
            "reshard_slot_max_s": round(max(took), 3)}


def node_port(proc: subprocess.Popen) -> int:
    return int(proc.args[proc.args.index("--port") + 1])


def live_nodes(cluster) -> list[int]:
    """Every cluster node still running: primaries, replicas (one promoted after a kill)."""
    return [node_port(p) for p in cluster.procs if p.poll() is None]


def hmget_calls(ports: list[int]) -> int:
    """HMGETs served by these nodes (INFO commandstats): the access re-check's metadata reads
    (the publisher sends only XADD)."""
    total = 0
    for port in ports:
        with redis.Redis(port=port, decode_responses=True) as r:
            total += r.info("commandstats").get("cmdstat_hmget", {}).get("calls", 0)
    return total


async def kill_primary_later(cluster, victim: int, replica: int | None, delay: float, hmget: dict) -> dict:
    """After ``delay`` s, SIGKILL the primary ``victim`` (the steady window of ``hmget`` ends
    just before), then wait until its replica is promoted by the cluster itself."""
    await asyncio.sleep(delay)
    hmget["calls_end"] = await asyncio.to_thread(hmget_calls, live_nodes(cluster))
    hmget["end"] = time.monotonic()
    killed_at = time.time() * 1000
    next(p for p in cluster.procs if node_port(p) == victim).kill()
    promoted = None
    while replica is not None and promoted is None and time.time() * 1000 - killed_at < 30_000:
        await asyncio.sleep(0.05)
        with redis.Redis(port=replica, decode_responses=True) as r:
            if (await asyncio.to_thread(r.info, "replication"))["role"] == "master":
                promoted = round(time.time() - killed_at / 1000, 2)
    return {"killed_at_ms": killed_at, "killed_port": victim, "promoted_after_s": promoted}


def latency_summary(values) -> dict:
    values = sorted(values)
    return {"n": len(values), "p50_ms": pct(values, 0.50), "p95_ms": pct(values, 0.95), "p99_ms": pct(values, 0.99),
            "max_ms": round(values[-1], 2) if values else None}


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


def bench_token(env: dict, scopes: str = "read,publish,manage") -> str:
    python = str(ROOT / ".venv/bin/python")
    subprocess.run([python, "manage.py", "migrate", "--no-input", "-v0"], cwd=ROOT, env=env, check=True)
    subprocess.run([python, "manage.py", "shell", "-c",
                    "from django.contrib.auth import get_user_model as g; g().objects.get_or_create(username='bench')"],
                   cwd=ROOT, env=env, check=True)
    return subprocess.run([python, "manage.py", "create_api_token", "bench", "--scopes", scopes], cwd=ROOT, env=env, check=True,
                          capture_output=True, text=True).stdout.strip().splitlines()[-1]


def pct(values: list[float], p: float) -> float | None:
    """``values`` sorted."""
    if not values:
        return None
    return round(values[min(len(values) - 1, int(len(values) * p))], 2)


async def run(args) -> dict:
    port = free_port()
    env = {
        **os.environ, "DEBUG": "false", "SECRET_KEY": "bench", "ALLOWED_HOSTS": "127.0.0.1",
        "STREAMS_PUBLIC_READ": "true", "REDIS_URL": args.redis_url, "LOG_LEVEL": "warning",
        "SECURE_SSL_REDIRECT": "false", "LIVE_MAX_CONNECTIONS_PER_USER": "1000000",
        # One load client is one caller: lift the per-caller fair shares (docs/security.md) so
        # the benchmarks measure the server, not the quotas.
        "LIVE_MAX_FOLLOWED_STREAMS_PER_USER": "1000000", "PUBLISH_RATE_PER_TOKEN": "100000000",
        "STREAMS_MAX_PER_USER": "100000000",
        "SSE_HEARTBEAT_INTERVAL": "15000",
        "DATABASE_URL": "sqlite:////tmp/streamsite-bench.sqlite3",
        **dict(item.split("=", 1) for item in args.env),
    }
    if args.workers > 1:  # what docker-entrypoint.sh does (scripts/processes.sh)
        env["WEB_CONCURRENCY"] = str(args.workers)
        env["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="bench-prometheus-")
    cluster = None
    if args.cluster:
        sys.path.insert(0, str(ROOT))
        from tests.cluster import add_replica, start_cluster

        # With a kill, the surviving primaries go on serving while the dead one's slots wait
        # for its replica (cluster-require-full-coverage no), as in tests/streams/test_failover.py.
        cluster = start_cluster(full_coverage=args.kill_primary_at is None)
        replicas = {port: add_replica(cluster, port) for port in list(cluster.ports)} if args.replicas else {}
        args.redis_url = env["REDIS_URL"] = cluster.urls[0]
    sync_r = redis_client(args.redis_url, bool(cluster), sync=True)
    if cluster:
        sync_r.flushdb(target_nodes=sync_r.PRIMARIES)
    else:
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
    server_log = open(args.server_log, "w") if args.server_log else subprocess.DEVNULL
    server = subprocess.Popen(command, cwd=ROOT, env=env, stderr=server_log, stdout=server_log)
    clients: list[asyncio.subprocess.Process] = []
    latency_dir = tempfile.TemporaryDirectory()
    try:
        deadline = time.monotonic() + 20
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if time.monotonic() > deadline:
                raise SystemExit("server did not start")
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5 if args.workers == 1 else 3)  # every worker up
        rss_before = tree_rss_kb(server.pid)
        streams = stream_names(args.streams)
        t0 = time.monotonic()
        per = -(-args.listeners // args.clients)
        for j in range(args.clients):
            first, count = j * per, max(0, min(per, args.listeners - j * per))
            clients.append(await asyncio.create_subprocess_exec(
                sys.executable, __file__, "--client", "--port", str(port), "--streams", str(args.streams),
                "--first", str(first), "--count", str(count), "--transport", args.transport,
                "--source", f"127.0.0.{j + 2}", "--latency-file", f"{latency_dir.name}/{j}",
                "--connect-timeout", str(args.connect_timeout),
                "--concurrent-connects", str(max(1, args.concurrent_connects // args.clients)),
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            ))
        counts = [0, 0]  # connected, failed
        for client in clients:
            line = await asyncio.wait_for(client.stdout.readline(), args.connect_timeout + 30)
            report = json.loads(line)
            counts[0] += report["connected"]
            counts[1] += report["failed"]
        connect_s = time.monotonic() - t0
        # Wait until the server reads every stream (hub) or holds its connections (pool).
        await asyncio.sleep(1.0)
        rss_idle = tree_rss_kb(server.pid)
        workout = None
        if args.workout_mib:
            workout = asyncio.create_task(post_workout(port, token, workout_body(args.workout_mib), args.duration / 3))
        resharding = None
        if args.reshard_at is not None:
            resharding = asyncio.create_task(reshard_later(cluster, args.reshard_at))
        hmget = {"calls_start": await asyncio.to_thread(hmget_calls, live_nodes(cluster)) if cluster else 0,
                 "start": time.monotonic()}
        killing, dead, failed = None, set(), [[0, None], [0, None]]  # per publisher: the dead shard's, the others'
        if args.kill_primary_at is not None:
            from tests.cluster import owner_of

            owners = [owner_of(cluster, LAYOUT.slot(b)) for b in range(LAYOUT.buckets)]
            victim = next(o for o in owners if o != cluster.ports[0])  # not the server's seed node
            dead = {i for i, s in enumerate(streams) if owners[LAYOUT.bucket(s)] == victim}
            killing = asyncio.create_task(kill_primary_later(
                cluster, victim, replicas.get(victim), args.kill_primary_at, hmget))
            # Two publishers, so the dead node's failures and retries never delay the healthy ones.
            groups = [[s for i, s in enumerate(streams) if (i in dead) == d] for d in (True, False)]
            sent = {}
            for part in await asyncio.gather(*(publish(args.redis_url, g, args.rate * len(g) / len(streams),
                                                       args.duration, True, f) for g, f in zip(groups, failed))):
                sent.update(part)
        else:
            sent = await publish(args.redis_url, streams, args.rate, args.duration, bool(cluster))
        killed = await killing if killing is not None else {}
        if cluster and "end" not in hmget:
            hmget["calls_end"] = await asyncio.to_thread(hmget_calls, live_nodes(cluster))
            hmget["end"] = time.monotonic()
        resharded = await resharding if resharding is not None else {}
        workout_result = await workout if workout is not None else {}
        await asyncio.sleep(args.drain)
        rss_end = tree_rss_kb(server.pid)
        pids = {f":{p}" for p in process_tree(server.pid)}
        listed = []
        for node in live_nodes(cluster) if cluster else []:
            with redis.Redis(port=node, decode_responses=True) as r:
                listed += r.client_list()
        if not cluster:
            listed = sync_r.client_list()
        redis_clients = [c for c in listed if any(c.get("name", "").endswith(p) for p in pids)]
        per_process: dict[str, int] = {}
        for c in redis_clients:
            pid = c["name"].rsplit(":", 1)[-1]
            per_process[pid] = per_process.get(pid, 0) + 1
        delivered = gaps = repeats = 0
        for client in clients:
            client.stdin.write(b"stop\n")
            await client.stdin.drain()
            report = json.loads(await client.stdout.readline())
            delivered += report["received"]
            gaps += report["gaps"]
            repeats += report["repeats"]
            await client.wait()
        triples = array("d")  # (stream index, published at (epoch ms), latency ms) per delivery
        for j in range(args.clients):
            with open(f"{latency_dir.name}/{j}", "rb") as file:
                triples.frombytes(file.read())
        latencies = sorted(triples[2::3])
        split = {}
        if killed:  # from the kill to the end, by where the stream lives
            # (A dead shard's entry counts from the publisher's first attempt, which waits in
            # redis-py's retries until the promotion; "after promotion": attempted after it.)
            promoted_at = killed["killed_at_ms"] + 1000 * (killed["promoted_after_s"] or float("inf"))
            windows = {"healthy_before_kill": [], "healthy_after_kill": [], "dead_after_kill": [],
                       "dead_after_promotion": []}
            for index, published, latency in zip(triples[0::3], triples[1::3], triples[2::3]):
                if published < killed["killed_at_ms"]:
                    if index not in dead:
                        windows["healthy_before_kill"].append(latency)
                elif index not in dead:
                    windows["healthy_after_kill"].append(latency)
                else:
                    windows["dead_after_kill"].append(latency)
                    if published >= promoted_at:
                        windows["dead_after_promotion"].append(latency)
            split = {k: latency_summary(v) for k, v in windows.items()}
            # When the dead shard's publisher had an ack again, and its listeners an entry again.
            resumed = min((p + lat for i, p, lat in zip(triples[0::3], triples[1::3], triples[2::3])
                           if i in dead and p >= killed["killed_at_ms"]), default=None)
            since_kill = {k: round((at - killed["killed_at_ms"]) / 1000, 2) if at else None
                          for k, at in (("dead_first_ack_after_s", failed[0][1]), ("dead_resumed_after_s", resumed))}
            split.update(killed, **since_kill, dead_streams=len(dead), unacked=failed[0][0] + failed[1][0])
        if cluster:
            window = hmget["end"] - hmget["start"]
            split.update(hmget_per_s=round((hmget["calls_end"] - hmget["calls_start"]) / window, 1),
                         hmget_window_s=round(window, 1))
        expected = sum(sent[streams[i % len(streams)]] for i in range(args.listeners))
        idle_listeners = max(1, counts[0])
        return {
            "server": args.server, "transport": args.transport, "redis": "cluster" if cluster else "standalone",
            "listeners": args.listeners, "streams": args.streams, "clients": args.clients,
            "rate_eps": args.rate, "duration_s": args.duration,
            "connected": counts[0], "failed": counts[1], "connect_s": round(connect_s, 2),
            "published": sum(sent.values()), "expected": expected, "delivered": delivered,
            "delivered_pct": round(100 * delivered / expected, 2) if expected else None,
            "gaps": gaps, "repeats": repeats, **resharded, **split,
            "deliveries_per_s": round(delivered / args.duration),
            "p50_ms": pct(latencies, 0.50), "p95_ms": pct(latencies, 0.95), "p99_ms": pct(latencies, 0.99),
            "max_ms": round(latencies[-1], 2) if latencies else None, **workout_result,
            "rss_mb_before": round(rss_before / 1024, 1), "rss_mb_idle": round(rss_idle / 1024, 1),
            "rss_mb_end": round(rss_end / 1024, 1),
            "rss_kb_per_idle_listener": round((rss_idle - rss_before) / idle_listeners, 1),
            "workers": args.workers, "redis_conns_total": len(redis_clients),
            "redis_conns_xread": sum(1 for c in redis_clients if c.get("cmd") == "xread"),
            "redis_conns_per_process": sorted(per_process.values()),
        }
    finally:
        for client in clients:
            if client.returncode is None:
                client.kill()
                await client.wait()
        latency_dir.cleanup()
        server.terminate()
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()
        if cluster is not None:
            cluster.stop()
        else:
            sync_r.flushdb()
        if "PROMETHEUS_MULTIPROC_DIR" in env and args.workers > 1:
            shutil.rmtree(env["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)


def stream_names(n: int) -> list[str]:
    return [f"load-{i:05d}" for i in range(n)]


async def client(args) -> None:
    """One load-client process: listeners first..first+count, from its own loopback address
    (so 19,000 connections neither share one process's fd limit nor one source address)."""
    streams = stream_names(args.streams)
    listeners = [Listener(streams[i % len(streams)]) for i in range(args.first, args.first + args.count)]
    connected, stop = asyncio.Event(), asyncio.Event()
    counts = [0, 0]
    handshakes = asyncio.Semaphore(args.concurrent_connects)
    tasks = [asyncio.create_task(listen(lst, args.port, connected, counts, len(listeners), stop, handshakes,
                                        args.transport, args.source)) for lst in listeners]
    if listeners:
        try:
            await asyncio.wait_for(connected.wait(), args.connect_timeout)
        except TimeoutError:
            pass
    print(json.dumps({"connected": counts[0], "failed": len(listeners) - counts[0]}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)  # the parent says stop
    stop.set()
    for lst in listeners:
        if lst.writer is not None:
            lst.writer.close()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    with open(args.latency_file, "wb") as file:
        array("d", (x for lst in listeners for published, latency in zip(lst.published, lst.latencies)
                    for x in (int(lst.stream[5:]), published, latency))).tofile(file)
    print(json.dumps({"received": sum(lst.received for lst in listeners), "gaps": sum(lst.gaps for lst in listeners),
                      "repeats": sum(lst.repeats for lst in listeners)}), flush=True)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--listeners", type=int, default=1000)
    p.add_argument("--streams", type=int, default=100)
    p.add_argument("--rate", type=int, default=1000, help="events/s published in total")
    p.add_argument("--duration", type=float, default=20)
    p.add_argument("--drain", type=float, default=3)
    p.add_argument("--connect-timeout", type=float, default=120)
    p.add_argument("--concurrent-connects", type=int, default=100)
    p.add_argument("--cluster", action="store_true", help="start a local 3-primary Redis Cluster and serve from it")
    p.add_argument("--reshard-at", type=float, help="with --cluster: after this many seconds of publishing, move "
                   "every bucket's slot to another primary (live)")
    p.add_argument("--replicas", action="store_true", help="with --cluster: one replica per primary")
    p.add_argument("--kill-primary-at", type=float, help="with --cluster: after this many seconds of publishing, "
                   "SIGKILL the primary of some buckets (its replica, with --replicas, is promoted by the cluster) "
                   "and report latencies of the healthy and the dead shard's streams from the kill on")
    p.add_argument("--server", choices=["daphne", "uvicorn", "uvicorn-plain"], default="daphne")
    p.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14"))
    p.add_argument("--workout-mib", type=float, default=0, help="POST a workout this big a third of the way in")
    p.add_argument("--transport", choices=["sse", "ws", "ws-batch"], default="sse",
                   help="listeners follow over SSE or WebSocket (ws-batch: ?batch=1, one frame per wake-up)")
    p.add_argument("--clients", type=int, default=1, help="load-client processes (each from its own 127.0.0.x)")
    p.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                   help="a setting for the server, e.g. --env GC_FULL_COLLECT_INTERVAL=10000 --env LOG_LEVEL=info")
    p.add_argument("--workers", type=int, default=1, help="uvicorn worker processes (WEB_CONCURRENCY)")
    p.add_argument("--server-log", help="write the server's output here (e.g. the full-collection pauses)")
    p.add_argument("--client", action="store_true", help=argparse.SUPPRESS)  # child mode
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    p.add_argument("--first", type=int, help=argparse.SUPPRESS)
    p.add_argument("--count", type=int, help=argparse.SUPPRESS)
    p.add_argument("--source", help=argparse.SUPPRESS)
    p.add_argument("--latency-file", help=argparse.SUPPRESS)
    args = p.parse_args()
    if not args.cluster and (args.reshard_at is not None or args.kill_primary_at is not None or args.replicas):
        p.error("--reshard-at, --replicas and --kill-primary-at need --cluster")
    if args.client:
        asyncio.run(client(args))
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # children (daphne) inherit it
    print(json.dumps(asyncio.run(run(args))))


if __name__ == "__main__":
    sys.exit(main())
