"""The SSE follows at the ASGI edge (streamsite/server/direct.py) answer what Django's lean handler
answers — the same start (status, headers), the same events, the same refusals — and their
handed-off bodies end as there: on a disconnect (the admission place given back) and on
shutdown."""

import asyncio
import json

import pytest
from django.core.handlers.asgi import ASGIHandler

from streams.engine.context import redis_context
from streams.live import capacity
from streams.live.hub import StreamHub
from streams.store import services as store
from streamsite.server.direct import is_direct
from tests.helpers import actor, http_scope, publish, user_with_token
from tests.streams.sse_client import SSEClient

pytestmark = pytest.mark.django_db(transaction=True)

ONE = "/api/streams/ride/sse"
MANY = "/api/sse?streams=ride,climb"


def lean_app():
    """The lean handler alone: the follow routes as they were served before the edge."""
    from streamsite.asgi import lean_handler

    return lean_handler


async def both(path: str, headers: dict[str, str] | None = None) -> tuple[SSEClient, SSEClient]:
    """(edge client, lean handler client) of one follow, both connected (their starts read)."""
    edge = await SSEClient(path, headers=dict(headers or {})).connect()
    lean = await SSEClient(path, headers=dict(headers or {}), app=lean_app()).connect()
    return edge, lean


async def close(*clients: SSEClient) -> None:
    for c in clients:
        await c.close()


async def events_of(client: SSEClient, n: int) -> list[tuple[str | None, str, str]]:
    return [(e.id, e.event, e.data) for e in await client.events(n)]


async def hub_listening(name: str) -> None:
    async with asyncio.timeout(5):
        await StreamHub.of(await redis_context()).reading(name)


@pytest.fixture
def public_reads(settings):
    settings.STREAMS_PUBLIC_READ = True


@pytest.fixture
async def tokens(r):
    owner, token = await user_with_token("owner")
    _, other = await user_with_token("other")
    _, publish_only = await user_with_token("device", scopes=["publish"])
    return {"owner": token, "other": other, "publish_only": publish_only, "owner_user": owner}


def test_both_follow_routes_are_served_at_the_edge():
    assert is_direct(http_scope(ONE))
    assert is_direct(http_scope("/api/sse", query="streams=a,b"))
    assert not is_direct(http_scope(ONE, method="HEAD"))  # Django answers it, as before
    assert not is_direct(http_scope("/api/streams/ride/sse/"))
    assert not is_direct({**http_scope(ONE), "root_path": "/site"})


async def test_a_follow_streams_without_djangos_request_handler(r, public_reads, monkeypatch):
    async def not_here(*args, **kwargs):
        raise AssertionError("served through Django's ASGIHandler")

    monkeypatch.setattr(ASGIHandler, "handle", not_here)
    ids = await publish("ride", 2)
    c = await SSEClient(ONE + "?from=start").connect()
    try:
        assert c.status == 200
        assert [e.id for e in await c.events(2)] == ids
    finally:
        await c.close()


async def test_an_event_stream_is_the_lean_handlers(r, public_reads):
    ids = await publish("ride", 3)
    edge, lean = await both(ONE + "?from=start")
    try:
        assert edge.status == lean.status == 200
        assert edge.response_headers == lean.response_headers
        assert edge.response_headers["content-type"] == "text/event-stream"
        assert edge.response_headers["cache-control"] == "no-cache"
        first = await edge.next_event()
        assert first.retry is not None and first.retry == (await lean.next_event()).retry
        got = await events_of(edge, 3)
        assert got == await events_of(lean, 3)
        assert [i for i, _, _ in got] == ids
        (live,) = await publish("ride", 1, start=3)  # then live, to both
        assert await events_of(edge, 1) == await events_of(lean, 1) == [(live, "message", '{"i": "3"}')]
    finally:
        await close(edge, lean)


async def test_a_several_streams_follow_is_the_lean_handlers(r, public_reads):
    await publish("ride", 2)
    await publish("climb", 1)
    edge, lean = await both(MANY + "&from=start")
    try:
        assert edge.status == lean.status == 200 and edge.response_headers == lean.response_headers
        got = await events_of(edge, 3)
        assert sorted(got) == sorted(await events_of(lean, 3))
        assert {json.loads(d)["stream"] for _, _, d in got} == {"ride", "climb"}
    finally:
        await close(edge, lean)


@pytest.mark.parametrize("path,headers,token,status", [
    (ONE, {}, "nonsense", 401),
    (ONE, {}, "publish_only", 403),
    (ONE, {}, "other", 404),
    ("/api/streams/-bad/sse", {}, "owner", 400),
    (ONE + "?rate=0", {}, "owner", 400),
    (ONE + "?from=yesterday", {}, "owner", 400),
    (ONE, {"Last-Event-ID": "not-an-id"}, "owner", 400),
    ("/api/sse", {}, "owner", 400),
    (MANY, {"Last-Event-ID": "1-0"}, "owner", 400),
])
async def test_a_refused_follow_gets_the_lean_handlers_answer(tokens, path, headers, token, status):
    # A private ride of "owner": another user's token is told it does not exist.
    await store.stream_publish(name="ride", entries=[{"power": "1"}], actor=actor(tokens["owner_user"]))
    raw = tokens.get(token, token)
    edge, lean = await both(path, {**headers, "Authorization": f"Bearer {raw}"})
    try:
        assert edge.status == lean.status == status, (edge.body, lean.body)
        assert edge.response_headers == lean.response_headers
        edge_body, lean_body = await edge.json_body(), await lean.json_body()
        assert edge_body == lean_body and edge_body["detail"]
    finally:
        await close(edge, lean)
    assert capacity.connections.stats()["connections"] == 0  # a refusal holds no place


async def test_a_follow_over_the_callers_limit_is_429_like_the_lean_handlers(r, public_reads, settings):
    settings.LIVE_MAX_CONNECTIONS_PER_USER = 1
    held = await SSEClient(ONE).connect()
    try:
        edge, lean = await both(ONE)
        assert edge.status == lean.status == 429
        assert edge.response_headers == lean.response_headers
        assert await edge.json_body() == await lean.json_body()
        await close(edge, lean)
    finally:
        await held.close()


@pytest.mark.parametrize("how", ["header", "query"])
async def test_a_resume_is_the_lean_handlers(r, public_reads, how):
    ids = await publish("ride", 4)
    path, headers = (ONE, {"Last-Event-ID": ids[1]}) if how == "header" else (f"{ONE}?last_event_id={ids[1]}", {})
    edge, lean = await both(path, headers)
    try:
        got = await events_of(edge, 2)
        assert got == await events_of(lean, 2)
        assert [i for i, _, _ in got] == ids[2:]
    finally:
        await close(edge, lean)


async def test_a_composite_resume_is_the_lean_handlers(r, public_reads):
    await publish("ride", 2)
    await publish("climb", 2)
    first = await SSEClient(MANY + "&from=start").connect()
    try:
        resume_at = (await first.events(2))[-1].id
        expected = [(e.id, e.event, e.data) for e in await first.events(2)]
    finally:
        await first.close()
    edge, lean = await both(MANY, {"Last-Event-ID": resume_at})
    try:
        got = await events_of(edge, 2)
        assert got == await events_of(lean, 2) == expected
    finally:
        await close(edge, lean)


async def test_a_disconnect_gives_back_the_admission_place(r, public_reads, settings):
    settings.LIVE_MAX_CONNECTIONS_PER_USER = 1
    hub = StreamHub.of(await redis_context())
    c = await SSEClient(ONE).connect()
    await hub_listening("ride")
    assert capacity.connections.stats()["connections"] == 1 and hub.stats().listeners == 1
    await c._comm.send_input({"type": "http.disconnect"})
    await asyncio.wait([c._comm.future], timeout=5)
    assert c._comm.future.done() and c._comm.future.exception() is None  # a normal end
    assert capacity.connections.stats()["connections"] == 0
    assert hub.stats().listeners == 0
    again = await SSEClient(ONE).connect()  # the caller's one place is free again
    try:
        assert again.status == 200
    finally:
        await again.close()


async def test_shutdown_ends_an_edge_follow_with_its_event(r, public_reads):
    (last,) = await publish("ride", 1)
    c = await SSEClient(ONE, headers={"Last-Event-ID": "0-0"}).connect()
    try:
        assert [e.id for e in await c.events(1)] == [last]
        await hub_listening("ride")
        StreamHub.of(await redis_context()).begin_shutdown()
        (end,) = await c.events(1)
        assert end.event == "shutdown" and end.json()["last_event_id"] == last
        with pytest.raises(EOFError):
            await c.next_event()  # the body ended
        await asyncio.wait([c._comm.future], timeout=5)
        assert c._comm.future.done() and c._comm.future.exception() is None
        assert capacity.connections.stats()["connections"] == 0
    finally:
        await c.close()
