"""Fixtures: a real Redis on the suite's own database index (flushed before and after)."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis
from asgiref.sync import sync_to_async
from django.db import connections
from django.conf import settings

from streams.clients import close_redis_context


def _assert_private_db(url: str) -> None:
    db = int((url.rsplit("/", 1)[-1] or "0").split("?")[0]) if url.count("/") >= 3 else 0
    assert db != 0, f"refusing to flush Redis database 0 ({url}): point REDIS_URL at a test index"


@pytest.fixture
async def r():
    """A raw client on the test database; the app's Redis context is closed after the test."""
    _assert_private_db(settings.REDIS.url)
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
