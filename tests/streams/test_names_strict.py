"""Names and ids are checked whole: a trailing newline is not a second stream (``$`` matched
before it), and an id nothing can come after (or before) is a 400 naming the problem, not
Redis' "invalid start ID for the interval" as a 500 or a dropped SSE. Through the real API:
REST writes and range reads, SSE resume (one stream and many), WebSocket resume."""

import json

import pytest
from channels.testing import WebsocketCommunicator
from django.test import AsyncClient

from streams.core.errors import InvalidInput
from streams.store.names import MAX_ID, validate_stream_name
from tests.helpers import bearer, publish, user_with_token
from tests.streams.sse_client import SSEClient

pytestmark = pytest.mark.django_db(transaction=True)

TOP = 2**64 - 1


@pytest.fixture(autouse=True)
def public_reads(settings):
    settings.STREAMS_PUBLIC_READ = True


@pytest.fixture
async def token(r):
    return (await user_with_token("writer"))[1]


@pytest.mark.parametrize("name", ["a-priv\n", "a-priv\r\n", "a\nb", "rïde", "\u0661\u0662"])
def test_a_name_is_matched_whole(name):
    with pytest.raises(InvalidInput, match="invalid stream name"):
        validate_stream_name(name)


@pytest.mark.parametrize("method", ["put", "post", "get"])
async def test_a_trailing_newline_is_not_a_second_stream(r, token, method):
    client = AsyncClient()
    resp = await client.put("/api/streams/a-priv", data="{}", content_type="application/json", **bearer(token))
    assert resp.status_code in (200, 201), resp.content
    path = {"put": "/api/streams/a-priv%0A", "post": "/api/streams/a-priv%0A/events",
            "get": "/api/streams/a-priv%0A/events"}[method]
    body = json.dumps({"power": 1}) if method == "post" else "{}"
    call = getattr(client, method)
    resp = await (call(path, **bearer(token)) if method == "get"
                  else call(path, data=body, content_type="application/json", **bearer(token)))
    assert resp.status_code in (400, 404, 422), resp.content
    assert resp.status_code != 404 or "a-priv\n" not in resp.content.decode()
    listed = await client.get("/api/streams", **bearer(token))
    assert [s["name"] for s in listed.json()["streams"] if s["name"].startswith("a-priv")] == ["a-priv"]


@pytest.mark.parametrize("query,detail", [
    (f"start=({TOP}-{TOP}", "maximum id"),
    ("end=(0-0", "minimum id"),
    ("end=(00-000", "minimum id"),
    ("start=1%0A", "invalid start id"),
    ("start=\u0661\u0662", "invalid start id"),
])
async def test_range_bounds_nothing_can_pass_are_400(r, query, detail):
    await publish("ride", 2)
    resp = await AsyncClient().get(f"/api/streams/ride/events?{query}")
    assert resp.status_code == 400, resp.content
    assert detail in resp.json()["detail"]


async def test_range_bounds_next_to_the_extremes_still_read(r):
    ids = await publish("ride", 2)
    client = AsyncClient()

    async def read(query):
        resp = await client.get(f"/api/streams/ride/events?{query}")
        assert resp.status_code == 200, resp.content
        return [e["id"] for e in resp.json()["events"]]

    assert await read(f"start=({TOP}") == []
    assert await read(f"start=({TOP}-{TOP - 1}") == []
    assert await read("end=(0-1") == []
    assert await read(f"start=({ids[0]}") == ids[1:]


@pytest.mark.parametrize("path,headers", [
    ("/api/streams/ride/sse", {"Last-Event-ID": MAX_ID}),
    (f"/api/streams/ride/sse?last_event_id={MAX_ID}", {}),
    ("/api/sse?streams=ride,other", {"Last-Event-ID": f"{MAX_ID},1-0"}),
])
async def test_an_sse_resume_at_the_maximum_id_is_400(r, path, headers):
    await publish("ride", 1)
    client = SSEClient(path, headers=headers)
    try:
        await client.connect()
        assert client.status == 400
        assert "maximum id" in (await client.json_body())["detail"]
    finally:
        await client.close()


async def test_an_sse_resume_just_below_the_maximum_id_streams(r, open_clients):
    await publish("ride", 1)
    client = await SSEClient("/api/streams/ride/sse", headers={"Last-Event-ID": f"{TOP}-{TOP - 1}"}).connect()
    open_clients.append(client)
    assert client.status == 200
    assert (await client.next_event()).retry is not None


@pytest.mark.parametrize("path", [
    f"/ws/streams/ride/?last_event_id={MAX_ID}",
    f"/ws/streams/ride/metrics/?last_event_id={MAX_ID}",
])
async def test_a_websocket_resume_at_the_maximum_id_is_refused_naming_it(r, path):
    from streamsite.asgi import application

    await publish("ride", 1)
    ws = WebsocketCommunicator(application, path)
    try:
        connected, _ = await ws.connect()
        assert connected
        assert "maximum id" in (await ws.receive_json_from(5))["error"]
        assert await ws.receive_output(5) == {"type": "websocket.close", "code": 4400}
    finally:
        await ws.disconnect()
