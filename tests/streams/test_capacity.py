"""Capacity limits answer at once and leave existing listeners alone."""

import asyncio

import pytest
from channels.testing import WebsocketCommunicator

from streams.engine.context import redis_context
from streams.live.capacity import connections
from streams.live.hub import StreamHub
from tests.helpers import eventually, publish
from tests.streams.sse_client import SSEClient

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def public(settings):
    settings.STREAMS_PUBLIC_READ = True


async def test_per_caller_connection_limit_is_429_and_spares_open_listeners(r, public, settings):
    settings.LIVE_MAX_CONNECTIONS_PER_USER = 2
    first = await SSEClient("/api/streams/a/sse").connect()
    second = await SSEClient("/api/streams/a/sse").connect()
    try:
        refused = await SSEClient("/api/streams/a/sse").connect()
        assert refused.status == 429
        assert "LIVE_MAX_CONNECTIONS_PER_USER=2" in (await refused.json_body())["detail"]
        async with asyncio.timeout(5):
            await StreamHub.of(await redis_context()).reading("a")
        ids = await publish("a", 3)
        for c in (first, second):
            assert [e.id for e in await c.events(3)] == ids  # still receiving everything
    finally:
        await first.close()
    await eventually(lambda: connections.stats()["connections"] == 1, what="the closed follow's place freed")
    third = await SSEClient("/api/streams/a/sse").connect()
    try:
        assert third.status == 200
    finally:
        await third.close()
        await second.close()
    await eventually(lambda: connections.stats()["connections"] == 0, what="every place freed")


async def test_followed_streams_limit_is_503_for_a_new_stream_only(r, public, settings):
    settings.LIVE_MAX_FOLLOWED_STREAMS = 2
    opened = [await SSEClient(f"/api/streams/{n}/sse").connect() for n in ("a", "b")]
    try:
        hub = StreamHub.of(await redis_context())
        async with asyncio.timeout(5):
            await hub.reading("a")
            await hub.reading("b")
        refused = await SSEClient("/api/streams/c/sse").connect()
        assert refused.status == 503 and "LIVE_MAX_FOLLOWED_STREAMS" in (await refused.json_body())["detail"]
        again = await SSEClient("/api/streams/a/sse").connect()  # an already-followed stream adds no key
        opened.append(again)
        assert again.status == 200
        ids = await publish("b", 1)
        assert [e.id for e in await opened[1].events(1)] == ids
    finally:
        for c in opened:
            await c.close()


async def test_websocket_over_the_limit_gets_4429(r, public, settings):
    from streamsite.asgi import application

    settings.LIVE_MAX_CONNECTIONS_PER_USER = 1
    ok = WebsocketCommunicator(application, "/ws/streams/a/")
    assert (await ok.connect())[0]
    over = WebsocketCommunicator(application, "/ws/streams/a/")
    try:
        assert (await over.connect())[0]
        assert "LIVE_MAX_CONNECTIONS_PER_USER" in (await over.receive_json_from(5))["error"]
        assert await over.receive_output(5) == {"type": "websocket.close", "code": 4429}
    finally:
        await over.disconnect()
        await ok.disconnect()
    assert connections.stats()["connections"] == 0


def test_a_followed_streams_limit_the_readers_cannot_serve_stops_start_up():
    from tests.test_settings import run_manage

    result = run_manage("check", LIVE_MAX_FOLLOWED_STREAMS="60000", REDIS_BLOCKING_POOL_MAX="50",
                        STREAM_HUB_KEYS_PER_READER="1000")
    assert result.returncode != 0 and "REDIS_BLOCKING_POOL_MAX=50 is too small for the hub's readers" in result.stderr
