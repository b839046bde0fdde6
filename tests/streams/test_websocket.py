import asyncio
import json

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator

from streams.access.identity import Actor
from streams.engine.context import redis_context
from streams.live.hub import StreamHub
from streams.store import services as store
from tests.helpers import actor, browser_ws_headers, make_user, user_with_token

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
async def device_and_token(r):
    return await user_with_token("device")


@pytest.fixture
def device(device_and_token):
    return device_and_token[0]


@pytest.fixture
def token(device_and_token):
    return device_and_token[1]


async def open_ws(app, sockets, path, headers=None):
    ws = WebsocketCommunicator(app, path, headers=headers or [])
    connected, code = await ws.connect()
    sockets.append(ws)
    return ws, connected, code


async def listening(name):
    async with asyncio.timeout(5):
        await StreamHub.of(await redis_context()).reading(name)


async def test_follow_then_publish_and_bad_frame(app, sockets, token, device, settings):
    settings.STREAMS_PUBLIC_READ = False
    owner = actor(device)
    await store.stream_settings_update(name="ride", actor=owner)  # a private stream of the device's
    ws, connected, _ = await open_ws(app, sockets, f"/ws/streams/ride/?token={token}")
    assert connected
    await listening("ride")
    ids = await store.stream_publish(name="ride", entries=[{"power": "200"}], actor=owner)
    assert await ws.receive_json_from(5) == {"id": ids[0], "data": {"power": "200"}}

    await ws.send_to(text_data=json.dumps([{"power": 210}, {"power": 220, "hr": 150}]))
    replies = [await ws.receive_json_from(5) for _ in range(3)]
    ack = next(m for m in replies if "ids" in m)
    pushed = [m for m in replies if "id" in m]
    assert [m["id"] for m in pushed] == ack["ids"]
    assert pushed[1]["data"] == {"power": "220", "hr": "150"}

    await ws.send_to(text_data="{not json")
    refused = await ws.receive_json_from(5)
    assert "bad frame" in refused["error"] and refused["final"] is True  # the same frame again: the same refusal
    await ws.send_to(text_data=json.dumps({"p": [1]}))
    assert "field 'p'" in (await ws.receive_json_from(5))["error"]
    # still open and working after bad frames
    await ws.send_to(text_data=json.dumps({"power": 230}))
    got = [await ws.receive_json_from(5) for _ in range(2)]
    assert any("ids" in m for m in got)


async def test_resume_with_last_event_id(app, sockets, r, settings):
    settings.STREAMS_PUBLIC_READ = True
    ids = await store.stream_publish(name="ride", entries=[{"i": str(i)} for i in range(5)])
    ws, connected, _ = await open_ws(app, sockets, f"/ws/streams/ride/?last_event_id={ids[1]}")
    assert connected
    got = [await ws.receive_json_from(5) for _ in range(3)]
    assert [m["id"] for m in got] == ids[2:]
    assert await ws.receive_nothing(0.2)  # no duplicate of what the resume already sent


async def test_publish_without_token_gets_error_frame(app, sockets, r, settings):
    settings.STREAMS_PUBLIC_READ = True
    ws, connected, _ = await open_ws(app, sockets, "/ws/streams/ride/")
    assert connected
    await ws.send_to(text_data=json.dumps({"power": 1}))
    assert "token" in (await ws.receive_json_from(5))["error"]


async def test_private_reads_refuse_without_token(app, sockets, r, settings):
    settings.STREAMS_PUBLIC_READ = False
    ws, connected, _ = await open_ws(app, sockets, "/ws/streams/ride/")
    assert connected
    refused = await ws.receive_json_from(5)
    assert "not found" in refused["error"] and refused["final"] is True  # a reconnect cannot mend it
    assert await ws.receive_output(5) == {"type": "websocket.close", "code": 4404}


async def test_bad_start_id_sends_error_and_closes(app, sockets, r, settings):
    settings.STREAMS_PUBLIC_READ = True
    ws, connected, _ = await open_ws(app, sockets, "/ws/streams/ride/?last_event_id=nope")
    assert connected
    assert "Last-Event-ID" in (await ws.receive_json_from(5))["error"]
    assert (await ws.receive_output(5))["type"] == "websocket.close"


async def test_foreign_browser_origin_is_refused(app, sockets, r, settings):
    settings.STREAMS_PUBLIC_READ = True
    _, connected, _ = await open_ws(app, sockets, "/ws/streams/ride/", headers=[(b"origin", b"https://evil.example")])
    assert not connected


async def test_deleted_stream_sends_event_and_closes(app, sockets, r, settings):
    settings.STREAMS_PUBLIC_READ = True
    await store.stream_publish(name="gone", entries=[{"x": "1"}])
    ws, _, _ = await open_ws(app, sockets, "/ws/streams/gone/")
    await listening("gone")
    await store.streams_delete(names=["gone"])
    message = await ws.receive_json_from(5)
    assert message["event"] == "deleted"
    assert await ws.receive_output(5) == {"type": "websocket.close", "code": 1000}  # the end: no resume
    await store.stream_publish(name="gone", entries=[{"x": "2"}])  # re-created: not for this socket
    assert await ws.receive_nothing(0.2)


async def test_live_metrics_over_websocket(app, sockets, r, settings):
    """ws/streams/{name}/metrics/: what the metrics SSE sends, as JSON frames: the snapshot
    with the chart, only newer points after, a resume by id, then the end and the close."""
    settings.STREAMS_PUBLIC_READ = True
    await store.stream_publish(name="ride", entries=[{"t": str(i), "power": "200", "hr": "140"} for i in range(30)])
    ws, connected, _ = await open_ws(app, sockets, "/ws/streams/ride/metrics/")
    assert connected
    first = await ws.receive_json_from(5)
    last_id = await store.stream_last_id(name="ride")
    assert first["event"] == "metrics" and first["id"] == last_id
    assert first["data"]["samples"] == 30 and first["data"]["avg_power"] == 200
    assert [p[0] for p in first["data"]["chart"]] == list(range(30))
    await ws.send_to(text_data=json.dumps({"power": 1}))
    assert "only sends" in (await ws.receive_json_from(5))["error"]
    await store.stream_publish(name="ride", entries=[{"t": "30", "power": "300", "hr": "150"}])
    second = await ws.receive_json_from(5)
    assert second["data"]["samples"] == 31 and second["data"]["chart"] == [[30, 300, 150]]
    resumed, _, _ = await open_ws(app, sockets, f"/ws/streams/ride/metrics/?last_event_id={last_id}")
    again = await resumed.receive_json_from(5)  # only the snapshot after that id
    assert again["id"] == second["id"] and again["data"]["samples"] == 31
    await store.streams_delete(names=["ride"])
    assert (await ws.receive_json_from(5))["event"] == "deleted"
    assert await ws.receive_output(5) == {"type": "websocket.close", "code": 1000}


@pytest.mark.parametrize("path,code,detail", [
    ("/ws/streams/bad%20name/metrics/", 4400, "name"),
    ("/ws/streams/ride/metrics/?last_event_id=nope", 4400, "Last-Event-ID"),
    ("/ws/streams/private-ride/metrics/", 4404, "not found"),
])
async def test_live_metrics_socket_refusals(app, sockets, r, settings, path, code, detail):
    settings.STREAMS_PUBLIC_READ = False
    await store.stream_publish(name="private-ride", entries=[{"t": "0", "power": "1"}], actor=Actor(user_id=999_999, username="someone"))
    ws, connected, _ = await open_ws(app, sockets, path)
    assert connected
    assert detail in (await ws.receive_json_from(5))["error"]
    assert await ws.receive_output(5) == {"type": "websocket.close", "code": code}


async def test_frames_do_not_hop_to_a_thread_to_close_database_connections(app, sockets, token, monkeypatch):
    """Channels closes stale DB connections before every message (a thread hop per frame);
    this consumer skips that (streams.core.compat.dispatch_without_db_close)."""
    import channels.consumer

    closes = []

    async def counting():
        closes.append(1)

    monkeypatch.setattr(channels.consumer, "aclose_old_connections", counting)
    ws, connected, _ = await open_ws(app, sockets, f"/ws/streams/frames/?token={token}")
    assert connected
    for power in (200, 210, 220):
        await ws.send_to(text_data=json.dumps({"power": power}))
        while "ids" not in (reply := await ws.receive_json_from(5)):
            assert "error" not in reply, reply
    assert closes == []


async def test_sockets_take_no_channel_layer_channel(app, sockets, token):
    """Entries and deletions come through the process hub; no Channels layer is configured
    (channels-redis cannot talk to a Redis Cluster, and nothing sends through one)."""
    from channels.layers import get_channel_layer

    assert get_channel_layer() is None
    ws, connected, _ = await open_ws(app, sockets, f"/ws/streams/nolayer/?token={token}")
    assert connected
    await ws.send_to(text_data=json.dumps({"power": 1}))
    while "ids" not in await ws.receive_json_from(5):
        pass


async def test_a_browser_session_follows_its_private_stream_and_a_bad_cookie_is_anonymous(app, sockets, settings):
    """The session cookie is read once at the handshake (streamsite.routing.SessionUser)."""
    settings.STREAMS_PUBLIC_READ = False
    rider = await sync_to_async(make_user)("cookie-rider")
    await store.stream_settings_update(name="mine", actor=actor(rider))
    headers = await browser_ws_headers(rider)
    ws, connected, _ = await open_ws(app, sockets, "/ws/streams/mine/", headers=headers)
    assert connected
    await listening("mine")
    ids = await store.stream_publish(name="mine", entries=[{"power": "1"}], actor=actor(rider))
    assert (await ws.receive_json_from(5))["id"] == ids[0]

    bad = await browser_ws_headers(None, cookie_value="not-a-session")
    ws2, _, _ = await open_ws(app, sockets, "/ws/streams/mine/", headers=bad)
    assert "error" in await ws2.receive_json_from(5)
    assert (await ws2.receive_output(5))["code"] == 4404  # anonymous: a private stream is not found
