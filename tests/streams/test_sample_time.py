"""A sample's own time ``t`` (seconds) decides the ride time of the live metrics and the archive
(docs/api.md), so a publish whose ``t`` cannot be a ride time is a 400 naming it, and nothing of
it is stored — through Django's view, at the ASGI edge and over the WebSocket alike."""

import json

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import AsyncClient

from streams.models import ApiToken
from streams.store import services as store
from tests.helpers import asgi_response, bearer, http_scope, make_user

pytestmark = pytest.mark.django_db(transaction=True)

BAD = [("abc", "not 'abc'"), (-1, "0 to 10000000000 seconds"), ("-0.5", "0 to"), (1e11, "0 to"),
       ("nan", "0 to"), ("", "not ''"), (True, "not a boolean")]
GOOD = [0, 12, 12.25, "12.250", 1_764_950_400.5]


@pytest.fixture
async def token(r):
    def make():
        return ApiToken.issue(user=make_user("rider"))[1]

    return await sync_to_async(make)()


async def view_publish(token, body) -> tuple[int, dict]:
    resp = await AsyncClient().post("/api/streams/ride/events", data=json.dumps(body), content_type="application/json",
                                    **bearer(token))
    return resp.status_code, resp.json()


async def edge_publish(token, body) -> tuple[int, dict]:
    scope = http_scope("/api/streams/ride/events", method="POST", headers=[
        (b"content-type", b"application/json"), (b"authorization", f"Bearer {token}".encode())])
    status, _, content = await asgi_response(scope, json.dumps(body).encode())
    return status, json.loads(content)


@pytest.mark.parametrize("publish", [view_publish, edge_publish], ids=["view", "edge"])
@pytest.mark.parametrize("value,detail", BAD, ids=[repr(v) for v, _ in BAD])
async def test_a_time_that_cannot_be_a_ride_time_is_a_400_naming_it(token, publish, value, detail):
    status, body = await publish(token, [{"t": 0, "power": 200}, {"t": value, "power": 210}])
    assert status == 400, body
    assert body["detail"].startswith("entry 1: field 't': the sample's time must be") and detail in body["detail"]
    assert await store.stream_range(name="ride") is None  # nothing of the publish stored


@pytest.mark.parametrize("publish", [view_publish, edge_publish], ids=["view", "edge"])
async def test_ride_seconds_and_unix_seconds_are_times(token, publish):
    status, body = await publish(token, [{"t": value, "power": 200} for value in GOOD])
    assert status == 201, body
    assert [e.data["t"] for e in await store.stream_range(name="ride")] == ["0", "12", "12.25", "12.250", "1764950400.5"]


async def test_a_websocket_frame_with_a_bad_time_gets_an_error_frame_and_stores_nothing(token, app, sockets):
    ws = WebsocketCommunicator(app, "/ws/streams/ride/", headers=[(b"authorization", f"Bearer {token}".encode())])
    connected, _ = await ws.connect()
    assert connected
    sockets.append(ws)
    await ws.send_to(text_data=json.dumps({"t": "soon", "power": 200}))
    frame = json.loads(await ws.receive_from(10))
    assert "the sample's time must be a number of seconds" in frame["error"]
    await ws.send_to(text_data=json.dumps({"t": 3, "power": 200}))
    assert "ids" in json.loads(await ws.receive_from(10))
    assert [e.data["t"] for e in await store.stream_range(name="ride")] == ["3"]
