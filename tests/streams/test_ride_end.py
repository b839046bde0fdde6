"""Ending a ride (docs/rides.md): the end marker, the metadata every process reads, and what
becomes of publishing afterwards."""

import json

import pytest
from asgiref.sync import sync_to_async
from django.test import AsyncClient

from streams.models import ApiToken
from streams.store import services as store
from tests.helpers import actor, bearer, make_user

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
async def rider(r):
    def make():
        user = make_user("rider")
        return user, ApiToken.issue(user=user)[1]

    user, token = await sync_to_async(make)()
    await store.stream_publish(name="ride", entries=[{"power": "200"}, {"power": "210"}], actor=actor(user))
    return user, token


async def post(path, token, body=None):
    kwargs = bearer(token)
    if body is not None:
        kwargs.update(data=json.dumps(body), content_type="application/json")
    return await AsyncClient().post(path, **kwargs)


async def test_the_owner_ends_a_ride_with_an_end_marker_and_its_metadata(rider, r):
    _, token = rider
    resp = await post("/api/streams/ride/end", token)
    assert resp.status_code == 200
    body = resp.json()
    assert body["state"] == "ended" and body["ended_reason"] == "owner" and body["name"] == "ride"
    assert body["ended_ms"] == int(body["end_id"].split("-")[0])
    entries = await store.stream_range(name="ride")
    assert entries[-1].id == body["end_id"] and entries[-1].data == {"_end": "owner"}
    meta = (await store.stream_meta(names=["ride"]))["ride"]
    assert (meta.ended_ms, meta.ended_reason) == (body["ended_ms"], "owner")


async def test_ending_an_ended_ride_answers_the_same_end(rider):
    _, token = rider
    first = (await post("/api/streams/ride/end", token)).json()
    again = await post("/api/streams/ride/end", token)
    assert again.status_code == 200 and again.json() == first
    assert len(await store.stream_range(name="ride")) == 3  # one end marker


async def test_publishing_to_an_ended_ride_answers_409_naming_the_state(rider):
    _, token = rider
    await post("/api/streams/ride/end", token)
    resp = await post("/api/streams/ride/events", token, {"power": 1})
    assert resp.status_code == 409 and "ended" in resp.json()["detail"]
    assert len(await store.stream_range(name="ride")) == 3


async def test_a_field_starting_with_an_underscore_is_reserved(rider):
    _, token = rider
    resp = await post("/api/streams/ride/events", token, {"power": 1, "_end": "owner"})
    assert resp.status_code == 400 and "reserved" in resp.json()["detail"]
    resp = await post("/api/streams/ride/events", token, [{"power": 1}, {"_x": 2}])
    assert resp.status_code == 400


async def test_ending_a_missing_stream_is_404(rider):
    _, token = rider
    resp = await post("/api/streams/nothing/end", token)
    assert resp.status_code == 404 and "not found" in resp.json()["detail"]


async def test_a_deleted_ride_can_start_again_under_its_name(rider):
    user, token = rider
    await post("/api/streams/ride/end", token)
    await store.streams_delete(names=["ride"], actor=actor(user))
    assert (await post("/api/streams/ride/events", token, {"power": 1})).status_code == 201


async def test_the_idle_end_is_written_only_while_no_newer_entry_arrived(rider):
    last = (await store.stream_range(name="ride"))[-1].id
    await store.stream_publish(name="ride", entries=[{"power": "220"}], actor=actor(rider[0]))
    assert await store.stream_end(name="ride", reason="idle", if_last=last) is None
    newest = (await store.stream_range(name="ride"))[-1].id
    end = await store.stream_end(name="ride", reason="idle", if_last=newest)
    assert end is not None and end.now and end.reason == "idle"


async def test_the_entry_websocket_answers_a_publish_to_an_ended_ride_with_an_error_frame(rider):
    from channels.testing import WebsocketCommunicator

    from streamsite.asgi import application

    _, token = rider
    await post("/api/streams/ride/end", token)
    ws = WebsocketCommunicator(application, f"/ws/streams/ride/?token={token}")
    connected, _ = await ws.connect()
    try:
        assert connected
        await ws.send_json_to({"power": 5})
        while True:
            frame = await ws.receive_json_from(5)
            if "error" in frame:
                break
        assert frame["state"] == "ended" and "ended" in frame["error"] and frame["final"] is True
    finally:
        await ws.disconnect()


async def test_the_rides_list_shows_states_and_filters_them(rider):
    user, token = rider
    await store.stream_publish(name="other-ride", entries=[{"power": "1"}], actor=actor(user))
    await store.stream_settings_update(name="empty", actor=actor(user))
    await post("/api/streams/ride/end", token)
    client = AsyncClient()
    listed = (await client.get("/api/rides", **bearer(token))).json()
    states = {ride["name"]: ride["state"] for ride in listed["rides"]}
    assert states == {"ride": "ended", "other-ride": "live", "empty": "waiting"} and listed["count"] == 3
    assert [ride["name"] for ride in listed["rides"]][:1] == ["ride"]  # newest activity: its end marker
    ended = (await client.get("/api/rides?state=ended", **bearer(token))).json()
    assert [(r["name"], r["ended_reason"], r["owner"]) for r in ended["rides"]] == [("ride", "owner", "rider")]
    assert (await client.get("/api/rides?state=live,waiting&limit=1", **bearer(token))).json()["count"] == 2


@pytest.mark.parametrize("query", ["state=gone", "state=deleted", "limit=0", "limit=201", "limit=x"])
async def test_bad_rides_list_parameters_answer_400(rider, query):
    resp = await AsyncClient().get(f"/api/rides?{query}", **bearer(rider[1]))
    assert resp.status_code == 400 and "detail" in resp.json()
