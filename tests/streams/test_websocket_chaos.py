"""WebSocket listeners under the chaos the SSE tests survive (issue 21): a Redis primary
killed, the server process killed or stopped, Redis restarted. Each listener is a real client
(tests/streams/ws_client.py) on a real server process (the Dockerfile's uvicorn command) that
resumes by id whenever its socket closes; every acknowledged publish must reach every
listener exactly once."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
from channels.testing import WebsocketCommunicator
from django.conf import settings
from redis.exceptions import RedisError

from streams.engine.context import close_redis_context
from streams.live import consumers
from streams.store import services as store
from streams.store.keys import key_layout
from tests.helpers import eventually, key
from tests.streams.ws_client import ResumingListener
from tests.test_shutdown import ROOT, free_port, production_command

pytestmark = pytest.mark.django_db(transaction=True)


# --- the pieces: a server process, a Redis process, a publisher -------------------------

@dataclass
class ServerProcess:
    """The production command on a fixed port, which a test may kill and start again."""

    redis_url: str
    workdir: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    async def start(self) -> "ServerProcess":
        env = {
            **os.environ, "DJANGO_SETTINGS_MODULE": "streamsite.settings", "DEBUG": "false", "SECRET_KEY": "test",
            "ALLOWED_HOSTS": "127.0.0.1", "STREAMS_PUBLIC_READ": "true", "REDIS_URL": self.redis_url,
            "DATABASE_URL": f"sqlite:///{self.workdir / 'db.sqlite3'}", "LOG_LEVEL": "warning",
        }
        program, *args = production_command(self.port)
        log = open(self.workdir / "server.log", "a")  # noqa: SIM115 - the process writes it
        self.proc = subprocess.Popen([str(Path(sys.executable).parent / program), *args],
                                     cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        async with asyncio.timeout(20):
            while True:
                try:
                    _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                    writer.close()
                    return self
                except OSError:
                    assert self.proc.poll() is None, (self.workdir / "server.log").read_text()[-3000:]
                    await asyncio.sleep(0.05)

    async def stop(self, sig: int = signal.SIGKILL) -> int:
        self.proc.send_signal(sig)
        return await asyncio.to_thread(self.proc.wait, 20)


@dataclass
class RedisProcess:
    """A redis-server of the test's own on a fixed port and directory, so that it can be
    killed and started again on the same data (``aof``: every write fsynced before its reply)."""

    aof: bool
    port: int = field(default_factory=free_port)
    workdir: str = field(default_factory=lambda: tempfile.mkdtemp(prefix="test-redis-chaos-"))
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/1"

    def start(self) -> None:
        sys.path.insert(0, str(ROOT / "scripts"))
        from local_redis import answers, find_server

        persistence = ["--appendonly", "yes", "--appendfsync", "always"] if self.aof else ["--appendonly", "no"]
        self.proc = subprocess.Popen(
            [find_server(), "--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.workdir, "--save", "",
             *persistence], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not answers(self.url):
            assert time.monotonic() < deadline and self.proc.poll() is None, "redis-server did not start"
            time.sleep(0.05)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.kill()
        shutil.rmtree(self.workdir, ignore_errors=True)


@dataclass
class Publisher:
    """Publishes one entry to each stream every ``interval`` s from this test process and
    keeps the ids Redis acknowledged; a publish that fails (Redis down, a failover under
    way) is not acknowledged and is simply tried again next round. ``held`` streams wait."""

    names: list[str]
    interval: float = 0.02
    fields: Callable[[int], dict] = lambda i: {"i": str(i)}  # noqa: E731 - the i-th entry
    acked: dict[str, list[str]] = field(default_factory=dict)
    held: set[str] = field(default_factory=set)
    failures: int = 0
    _task: asyncio.Task | None = None

    def start(self) -> "Publisher":
        self.acked = {n: [] for n in self.names}
        self._task = asyncio.create_task(self._run())
        return self

    async def _run(self) -> None:
        i = 0
        while True:
            for name in self.names:
                if name in self.held:
                    continue
                try:
                    self.acked[name] += await store.stream_publish(name=name, entries=[self.fields(i)])
                except RedisError:
                    self.failures += 1
            i += 1
            await asyncio.sleep(self.interval)

    async def more(self, names: list[str], n: int = 5, timeout: float = 30) -> None:
        """Wait until each of ``names`` has ``n`` more acknowledged entries."""
        target = {name: len(self.acked[name]) + n for name in names}
        await eventually(lambda: all(len(self.acked[m]) >= target[m] for m in names), timeout=timeout,
                         interval=0.05, what=f"{n} more acked entries on {names}")

    async def stop(self) -> None:
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass


async def listen(server: ServerProcess, names: list[str]) -> list[ResumingListener]:
    return [await ResumingListener(server.ws, name).start() for name in names]


async def assert_exactly_once(listeners: list[ResumingListener], publisher: Publisher) -> None:
    """Every acked id reached every listener, none twice (extra, unacknowledged ids — a
    publish that failed after Redis wrote it — may arrive too)."""
    for listener in listeners:
        await listener.received(publisher.acked[listener.name])
        assert listener.duplicates == 0, listener


@pytest.fixture
async def on_redis(settings):
    """Points this test process (the publisher) at ``url``; restores it at the end."""

    async def point(url: str) -> None:
        await close_redis_context()
        settings.REDIS = replace(settings.REDIS, url=url)

    yield point
    await close_redis_context()


@pytest.fixture
async def chaos(tmp_path):
    """What a test starts, stopped at its end whatever happened: servers, listeners, the
    publisher, Redis processes."""
    started: list = []
    yield started
    for thing in reversed(started):
        if isinstance(thing, (ResumingListener, Publisher)):
            await thing.stop()
        elif isinstance(thing, ServerProcess) and thing.proc is not None and thing.proc.poll() is None:
            await thing.stop()
        elif isinstance(thing, RedisProcess):
            thing.stop()
        elif hasattr(thing, "stop"):
            await asyncio.to_thread(thing.stop)


# --- the server process dies or stops ----------------------------------------------------

async def test_a_killed_server_process_is_resumed_after_with_nothing_lost_or_repeated(r, tmp_path, chaos, settings):
    """SIGKILL: the sockets drop with no close frame (1006); each listener reconnects with
    its last id to the server started again, and catches up from Redis."""
    names = ["kill-a", "kill-b"]
    server = await ServerProcess(settings.REDIS.url, tmp_path).start()
    chaos.append(server)
    listeners = await listen(server, names)
    publisher = Publisher(names).start()
    chaos.extend([*listeners, publisher])
    await publisher.more(names, 10)
    await server.stop(signal.SIGKILL)
    await publisher.more(names, 10)  # published while no server runs
    await server.start()
    await publisher.more(names, 10)
    await publisher.stop()
    await assert_exactly_once(listeners, publisher)
    assert all(listener.connections >= 2 and listener.closes[0] in (None, 1006) for listener in listeners)


async def test_sigterm_sends_shutdown_then_1012_and_listeners_resume(r, tmp_path, chaos, settings):
    """A graceful stop: each socket gets ``{"event": "shutdown", "last_event_id": ...}`` then
    close code 1012 (service restart), which a client resumes after."""
    names = ["term-a", "term-b"]
    server = await ServerProcess(settings.REDIS.url, tmp_path).start()
    chaos.append(server)
    listeners = await listen(server, names)
    publisher = Publisher(names).start()
    chaos.extend([*listeners, publisher])
    await publisher.more(names, 10)
    assert await server.stop(signal.SIGTERM) == -signal.SIGTERM  # uvicorn re-raises it after a clean stop
    for listener in listeners:
        assert listener.closes[0] == consumers.CLOSE_SERVICE_RESTART, listener
        assert listener.events[0]["event"] == "shutdown" and listener.events[0]["last_event_id"] == listener.ids[-1]
    await publisher.more(names, 10)
    await server.start()
    await publisher.more(names, 10)
    await publisher.stop()
    await assert_exactly_once(listeners, publisher)


async def test_the_metrics_socket_resumes_after_a_killed_server(r, tmp_path, chaos, settings):
    """``ws/streams/{name}/metrics/`` resumes by the id of its last snapshot: the restarted
    process recomputes the ride from the stream and the client's last snapshot counts every
    sample in the stream, with no snapshot repeated."""
    server = await ServerProcess(settings.REDIS.url, tmp_path).start()
    chaos.append(server)
    listener = await ResumingListener(server.ws, "metrics-ride", socket="metrics/").start()
    publisher = Publisher(["metrics-ride"], fields=lambda i: {"t": str(i), "power": "200", "hr": "140"}).start()
    chaos.extend([listener, publisher])
    await publisher.more(["metrics-ride"], 10)
    await server.stop(signal.SIGKILL)
    await publisher.more(["metrics-ride"], 10)
    await server.start()
    await publisher.more(["metrics-ride"], 10)
    await publisher.stop()
    # Compared with what the stream holds: stop() may cancel a publish whose write still goes
    # out (the batcher sends it all the same), so the stream's last entry can be one the
    # publisher never saw acknowledged (CI saw it once)

    async def caught_up():
        last = await r.xrevrange(key("metrics-ride"), count=1)
        return bool(listener.ids) and listener.ids[-1] == last[0][0]

    await eventually(caught_up, timeout=10, what="the snapshot of the stream's last entry")
    stored = [entry_id for entry_id, _ in await r.xrange(key("metrics-ride"))]
    assert set(publisher.acked["metrics-ride"]) <= set(stored)
    assert listener.last_data["samples"] == len(stored) and listener.duplicates == 0 and listener.connections >= 2


# --- Redis restarts ------------------------------------------------------------------------

async def test_redis_restarted_with_aof_loses_nothing(tmp_path, on_redis, chaos):
    """Redis SIGKILLed and started again on its append-only file (fsync always): the
    server's readers reconnect and go on from their last ids; every acked entry arrives once."""
    redis_server = RedisProcess(aof=True)
    chaos.append(redis_server)
    redis_server.start()
    await on_redis(redis_server.url)
    names = ["aof-a", "aof-b"]
    server = await ServerProcess(redis_server.url, tmp_path).start()
    chaos.append(server)
    listeners = await listen(server, names)
    publisher = Publisher(names).start()
    chaos.extend([*listeners, publisher])
    await publisher.more(names, 10)
    await asyncio.to_thread(redis_server.kill)
    await asyncio.sleep(0.3)  # publishes fail meanwhile: not acknowledged
    await asyncio.to_thread(redis_server.start)
    await publisher.more(names, 20)
    await publisher.stop()
    await assert_exactly_once(listeners, publisher)
    assert publisher.failures > 0  # Redis really was away
    assert all(listener.connections == 1 for listener in listeners)  # the server waited for it: no socket closed
    await close_redis_context()  # this test's own pooled connections died with that Redis: read afresh
    for name in names:  # and kept everything it acknowledged
        kept = [e.id for e in await store.stream_range(name=name, count=None)]
        assert set(publisher.acked[name]) <= set(kept)


async def test_redis_restarted_empty_ends_the_listener_as_deleted(tmp_path, on_redis, chaos):
    """Redis SIGKILLed and started again without persistence: the stream is gone, with the
    history the listener had. The listener must not wait for good on a stream that no longer
    exists (its id can never be caught up with): once the server reconnects it is told
    ``{"event": "deleted"}`` and closed with 1000, the end, and so is a later resume with that
    id. It had received every entry acked before the crash. A stream published again after the restart is a new stream: a new
    follow gets it."""
    redis_server = RedisProcess(aof=False)
    chaos.append(redis_server)
    redis_server.start()
    await on_redis(redis_server.url)
    server = await ServerProcess(redis_server.url, tmp_path).start()
    chaos.append(server)
    (listener,) = await listen(server, ["empty-a"])
    publisher = Publisher(["empty-a"]).start()
    chaos.extend([listener, publisher])
    await publisher.more(["empty-a"], 10)
    await publisher.stop()
    await listener.received(publisher.acked["empty-a"])
    await asyncio.to_thread(redis_server.kill)
    await asyncio.to_thread(redis_server.start)
    await eventually(lambda: listener.ended, timeout=10, what="the listener ended")
    assert listener.events[-1]["event"] == "deleted" and listener.closes == [1000], listener
    assert listener.duplicates == 0 and listener.connections == 1
    await on_redis(redis_server.url)  # this process's connections died with Redis too
    await close_redis_context()  # this test's own pooled connections died with that Redis: read afresh
    assert await store.streams_exist(names=["empty-a"]) == {"empty-a": False}
    # A client that comes back later with its position (its server restarted too) is told the same.
    late = ResumingListener(server.ws, "empty-a", first_query=f"last_event_id={listener.ids[-1]}")
    chaos.append(late)
    await late.start()
    await eventually(lambda: late.ended, timeout=10, what="the late resume ended")
    assert late.events[-1]["event"] == "deleted" and late.closes == [1000] and late.ids == []


# --- a Redis Cluster primary dies ----------------------------------------------------------

async def test_a_killed_primary_the_dead_shard_resumes_after_promotion_and_the_others_never_stop(tmp_path, on_redis, chaos):
    """A 3-primary cluster; the victim has a replica. The victim is SIGKILLed (after its
    replica has caught up, so no acked entry is lost in the asynchronous replication window:
    that loss is issue 21 part 4's PUBLISH_DURABILITY). Listeners on the other primaries'
    streams keep their one connection and receive throughout; the dead shard's listeners get
    everything acked, once, after the replica is promoted."""
    from tests.cluster import add_replica, owner_of, start_cluster, wait_replicated

    cluster = await asyncio.to_thread(start_cluster, full_coverage=False)
    chaos.append(cluster)
    keys = key_layout(settings.REDIS)

    def on(port: int, prefix: str) -> str:
        return next(n for n in (f"{prefix}-{i}" for i in range(500)) if owner_of(cluster, keys.slot(keys.bucket(n))) == port)

    victim, *healthy = cluster.ports
    replica = await asyncio.to_thread(add_replica, cluster, victim, full_coverage=False)
    doomed, alive = [on(victim, "doomed")], [on(port, "alive") for port in healthy]
    survivor = f"redis://127.0.0.1:{healthy[0]}"
    await on_redis(survivor)
    server = await ServerProcess(survivor, tmp_path).start()
    chaos.append(server)
    listeners = await listen(server, doomed + alive)
    publisher = Publisher(doomed + alive).start()
    chaos.extend([*listeners, publisher])
    await publisher.more(doomed + alive, 10)

    publisher.held.update(doomed)
    await asyncio.sleep(0.05)  # a publish under way finishes
    await asyncio.to_thread(wait_replicated, victim, replica)
    next(p for p in cluster.procs if p.args[2] == str(victim)).kill()
    publisher.held.clear()
    await publisher.more(alive, 20)  # while the victim is down and not yet replaced (2 s node timeout)
    for listener in listeners[1:]:  # delivered meanwhile, not after the promotion
        await listener.received(publisher.acked[listener.name], timeout=1)
    await publisher.more(doomed, 10, timeout=30)  # the replica was promoted
    await publisher.more(alive, 5)
    await publisher.stop()
    await assert_exactly_once(listeners, publisher)
    for listener in listeners[1:]:
        assert listener.connections == 1 and listener.closes == [], listener  # never stopped


# --- the close codes that tell a client to resume (in-process) -------------------------------

@pytest.fixture
async def app(r, settings):
    from streamsite.asgi import application

    settings.STREAMS_PUBLIC_READ = True
    return application


@pytest.mark.parametrize("failure,code", [
    (RedisError("CLUSTERDOWN The cluster is down"), consumers.CLOSE_UNAVAILABLE),
    (RuntimeError("a bug"), consumers.CLOSE_INTERNAL_ERROR),
])
async def test_a_failed_feed_closes_with_a_code_that_says_resume(app, monkeypatch, failure, code):
    """Any Redis error under the feed (not only a lost connection: a cluster mid-failover
    answers CLUSTERDOWN) closes with 1013, anything else with 1011. (Before, any failure but a
    lost connection or a timeout killed the feed's task and left the socket open and silent.)"""

    async def raising(*args, **kwargs):
        raise failure
        yield  # an async generator

    monkeypatch.setattr(consumers, "live_batches", raising)
    ws = WebsocketCommunicator(app, "/ws/streams/failing/")
    connected, _ = await ws.connect()
    assert connected
    assert await ws.receive_output(5) == {"type": "websocket.close", "code": code}
    await ws.disconnect()


async def test_a_connect_without_redis_is_accepted_then_closed_with_1013(app, settings):
    """The client sees the code (a refused handshake shows a browser nothing)."""
    await close_redis_context()
    settings.REDIS = replace(settings.REDIS, url=f"redis://127.0.0.1:{free_port()}/1")
    ws = WebsocketCommunicator(app, "/ws/streams/nowhere/")
    connected, _ = await ws.connect(10)
    assert connected
    assert "redis unavailable" in (await ws.receive_json_from(10))["error"]
    assert await ws.receive_output(10) == {"type": "websocket.close", "code": consumers.CLOSE_UNAVAILABLE}
    await ws.disconnect()
    await close_redis_context()
